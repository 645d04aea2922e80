#!/usr/bin/env bash
# engine.sh [BUILD] - docker/ with a real Docker engine: the image built and
# the compose stack run, each step's outcome and figures printed (and kept
# in BUILD/docker-engine.txt). As root, after tests/docker/check.sh:
#  1. a Docker daemon: the one that answers, else dockerd started here (and
#     stopped at the end, only then);
#  2. the images compose pulls, made by docker/offline-images.sh when absent;
#  3. docker build of docker/Dockerfile: time, size, a non-root user,
#     `ingest-bridge -t` inside;
#  4. the stack up (project COMPOSE_PROJECT_NAME, default ingest-bridge, with
#     the profile monitoring), the bridge's HEALTHCHECK healthy, then /pong,
#     a publish read back inside the RabbitMQ container, an rpc through the
#     echo worker, Prometheus's scrape of the bridge, the read-only root and
#     dropped capabilities, RabbitMQ killed (503 with Retry-After) and back
#     (202), `docker stop` of the bridge (graceful, exit 0);
#  5. `down -v`, also when a step fails.
# Host ports: 8080, 15672 and 9090 when free, else free ones (BRIDGE_PORT,
# RABBITMQ_MANAGEMENT_PORT, PROMETHEUS_PORT). DOCKER names the client
# (default Debian's /usr/bin/docker); Compose is docker-compose (1.29) or
# `docker compose` (v2).
set -euo pipefail

build=${1:-build}
here=$(cd "$(dirname "$0")/../.." && pwd)
cd "$here"
CHECK_NAME=docker/engine
# shellcheck source=tests/lib/check.sh
. tests/lib/check.sh
compose_file=docker/docker-compose.yml
project=${COMPOSE_PROJECT_NAME:-ingest-bridge}
docker=${DOCKER:-$(command -v /usr/bin/docker || command -v docker || true)}
[ -n "$docker" ] || fail "no docker client: make test-docker installs docker.io"
export DOCKER=$docker
if command -v docker-compose >/dev/null; then
    compose=(docker-compose)
elif "$docker" compose version >/dev/null 2>&1; then
    compose=("$docker" compose)
else
    fail "neither docker-compose nor docker compose: make test-docker installs docker-compose"
fi
for tool in curl python3; do
    command -v "$tool" >/dev/null || fail "$tool missing: make test-docker installs it"
done
export COMPOSE_PROFILES=monitoring
dc() { "${compose[@]}" -p "$project" -f "$compose_file" "$@"; }

results=$here/$build/docker-engine.txt
mkdir -p "$(dirname "$results")"
: >"$results"
measured() { # a figure for the closing note: printed and kept
    ok "$*"
    printf '%s\n' "$*" >>"$results"
}
now_ms() { date +%s%3N; }
since() { # since START_MS: seconds elapsed, 1 decimal
    awk -v a="$1" -v b="$(now_ms)" 'BEGIN { printf "%.1f", (b - a) / 1000 }'
}

# compose_value SERVICE KEY: one value of the compose file ("" when absent).
compose_value() {
    python3 - "$compose_file" "$1" "$2" <<'EOF'
import sys, yaml
v = yaml.safe_load(open(sys.argv[1]))["services"][sys.argv[2]].get(sys.argv[3])
print("" if v is None else v)
EOF
}

tmp=$(mktemp -d)
dockerd_pid=
stack_up=
# shellcheck disable=SC2317 # reached through the trap below
cleanup() {
    local rc=$?
    if [ -n "$stack_up" ]; then
        if [ "$rc" != 0 ]; then
            say "the stack's last log lines:"
            dc logs --no-color --tail=30 >&2 || true
        fi
        dc down -v --remove-orphans >"$tmp/down.log" 2>&1 || { cat "$tmp/down.log"; rc=1; }
    fi
    if [ -n "$dockerd_pid" ]; then
        kill -TERM "$dockerd_pid" 2>/dev/null
        wait "$dockerd_pid" 2>/dev/null || true
        say "stopped the dockerd started here"
    fi
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_for SECONDS WHAT COMMAND...: until COMMAND succeeds, polled twice a
# second; fails naming WHAT after SECONDS.
wait_for() {
    local limit=$1 what=$2 deadline
    shift 2
    deadline=$((SECONDS + limit))
    until "$@"; do
        [ $SECONDS -lt $deadline ] || fail "$what: not within $limit s"
        sleep 0.5
    done
}

# ---- 1. the daemon -----------------------------------------------------------

if "$docker" info >/dev/null 2>&1; then
    say "a Docker daemon answers: using it"
else
    [ "$(id -u)" = 0 ] || fail "no Docker daemon answers, and starting one needs root"
    command -v dockerd >/dev/null || fail "dockerd missing: make test-docker installs docker.io"
    dockerd >"$tmp/dockerd.log" 2>&1 &
    dockerd_pid=$!
    daemon_up() {
        kill -0 "$dockerd_pid" 2>/dev/null || { cat "$tmp/dockerd.log"; fail "dockerd exited"; }
        "$docker" info >/dev/null 2>&1
    }
    wait_for 60 "dockerd answering" daemon_up
    say "started dockerd (pid $dockerd_pid)"
fi
ok "daemon: $("$docker" info -f '{{.ServerVersion}}, storage {{.Driver}}, cgroup v{{.CgroupVersion}}')"
if [ -n "$(dc ps -q 2>/dev/null)" ]; then
    fail "containers of the compose project $project exist already: stop them" \
        "(${compose[*]} -p $project -f $compose_file down -v) or set COMPOSE_PROJECT_NAME"
fi

# ---- 2. the images compose would pull ----------------------------------------

docker/offline-images.sh "$compose_file" | tee -a "$results"

# ---- 3. the image --------------------------------------------------------------

image=$(compose_value bridge image)
t0=$(now_ms)
"$docker" build -f docker/Dockerfile -t "$image" . >"$tmp/build.log" 2>&1 ||
    { tail -n 40 "$tmp/build.log"; fail "docker build -f docker/Dockerfile"; }
cached=$(grep -c 'Using cache' "$tmp/build.log" || true)
measured "image build: $(since "$t0") s (docker build -f docker/Dockerfile; $cached steps from the cache)"
size=$("$docker" image inspect -f '{{.Size}}' "$image")
measured "image size: $((size / 1000000)) MB ($size bytes, $image)"
user=$("$docker" run --rm --entrypoint id "$image")
case $user in uid=0*) fail "the image runs as root: $user" ;; esac
measured "image user: $user"
out=$("$docker" run --rm "$image" -t 2>&1) || fail "ingest-bridge -t in the image: $out"
[ "$out" = "config ok" ] || fail "ingest-bridge -t in the image said: $out"
measured "ingest-bridge -t in the image: $out"

# ---- 4. the stack --------------------------------------------------------------

free_port() { # free_port PORT: PORT when nothing listens there, else a free one
    python3 - "$1" <<'EOF'
import socket, sys
for port in (int(sys.argv[1]), 0):
    s = socket.socket()
    try:
        s.bind(("0.0.0.0", port))
        print(s.getsockname()[1])
        break
    except OSError:
        pass
    finally:
        s.close()
EOF
}
BRIDGE_PORT=$(free_port "${BRIDGE_PORT:-8080}")
RABBITMQ_MANAGEMENT_PORT=$(free_port "${RABBITMQ_MANAGEMENT_PORT:-15672}")
PROMETHEUS_PORT=$(free_port "${PROMETHEUS_PORT:-9090}")
export BRIDGE_PORT RABBITMQ_MANAGEMENT_PORT PROMETHEUS_PORT
say "host ports: bridge $BRIDGE_PORT, management $RABBITMQ_MANAGEMENT_PORT, prometheus $PROMETHEUS_PORT"

stack_up=1
t0=$(now_ms)
dc up -d --no-build >"$tmp/up.log" 2>&1 || { cat "$tmp/up.log"; fail "${compose[*]} up -d"; }
up_took=$(since "$t0")
cid() { dc ps -q "$1"; }
bridge=$(cid bridge)
rabbitmq=$(cid rabbitmq)
health() { "$docker" inspect -f '{{.State.Health.Status}}' "$1"; }
healthy() { [ "$(health "$1")" = healthy ]; }
wait_for 180 "the bridge's HEALTHCHECK healthy" healthy "$bridge"
measured "compose up until the bridge's HEALTHCHECK is healthy: $(since "$t0") s" \
    "(up -d returned after $up_took s: it starts the bridge once rabbitmq is healthy)"

# http METHOD PATH [BODY]: sets code; the headers and the body in $tmp.
code=
http() {
    local data=()
    [ $# -gt 2 ] && data=(-H 'Content-Type: application/xml' --data-binary "$3")
    code=$(curl -s --max-time 30 -X "$1" "${data[@]}" -D "$tmp/headers" -o "$tmp/body" \
        -w '%{http_code}' "http://127.0.0.1:$BRIDGE_PORT$2") || code=000
}
header() { sed -n "s/^$1: *\([^\r]*\).*/\1/Ip" "$tmp/headers"; }

http GET /pong
[ "$code" = 200 ] || fail "GET /pong: $code"
measured "GET /pong: $code $(cat "$tmp/body")"

id="engine-$$-$RANDOM"
doc="<order id=\"$id\"><item>compose</item></order>"
http POST /ingest "$doc"
[ "$code" = 202 ] || fail "POST /ingest: $code $(cat "$tmp/body")"
message_id=$(header X-Message-Id)
# Read back inside the RabbitMQ container, taken off the queue.
got=$("$docker" exec "$rabbitmq" rabbitmqadmin -f raw_json get queue=ingest \
    ackmode=ack_requeue_false count=100) || fail "rabbitmqadmin get queue=ingest: $got"
IFS=$'\t' read -r payload msg_id mode < <(python3 -c '
import json, sys
for m in json.loads(sys.argv[1]):
    if sys.argv[2] in m["payload"]:
        p = m["properties"]
        print(m["payload"], p.get("message_id"), p.get("delivery_mode"), sep="\t")
        break' "$got" "$id") || fail "the message $id is not in queue ingest: $got"
[ "$payload" = "$doc" ] || fail "queue ingest holds $payload, not $doc"
[ "$msg_id" = "$message_id" ] || fail "message_id $msg_id, the 202 said X-Message-Id $message_id"
measured "POST /ingest: 202, read inside the rabbitmq container (rabbitmqadmin get):" \
    "the document, message_id $msg_id as X-Message-Id, delivery_mode $mode"

# Logs through a file: `grep -q` quitting early would fail the pipe (pipefail).
logged() { # logged SERVICE TEXT: the service's log has TEXT
    dc logs --no-color "$1" >"$tmp/$1.log" 2>&1 && grep -qF "$2" "$tmp/$1.log"
}
echo_ready() { logged echo-worker 'echo-worker: ready'; }
wait_for 60 "the echo worker ready" echo_ready
http POST /rpc "$doc"
[ "$code" = 200 ] || fail "POST /rpc: $code $(cat "$tmp/body")"
[ "$(cat "$tmp/body")" = "$doc" ] || fail "POST /rpc: the reply is not the document: $(cat "$tmp/body")"
measured "POST /rpc: 200, the echo worker's reply (the document)"

# Prometheus (profile monitoring) scrapes the bridge and loaded the rules.
prom() { # prom PATH [curl args]: the JSON answer of Prometheus's API
    curl -s --max-time 10 "http://127.0.0.1:$PROMETHEUS_PORT$1" "${@:2}"
}
series() { # series QUERY: how many series the query returns
    prom /api/v1/query --data-urlencode "query=$1" |
        python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"]["result"]))' 2>/dev/null
}
scraped() { [ "$(series 'bridge_http_requests_total{job="ingest-bridge",route="ingest",code="202"}')" = 1 ]; }
t0=$(now_ms)
wait_for 120 "Prometheus holding the bridge's 202 of route ingest" scraped
n=$(series '{job="ingest-bridge",__name__=~"bridge_.*"}')
rules=$(prom /api/v1/rules | python3 -c '
import json, sys
print(sum(len(g["rules"]) for g in json.load(sys.stdin)["data"]["groups"]))')
[ "$rules" -ge 6 ] || fail "Prometheus loaded $rules rules, not docker/alerts.yml's"
measured "Prometheus: scraped the bridge ($n bridge_* series, the 202 of route ingest" \
    "among them, $(since "$t0") s after asking), $rules alerting rules loaded"

# Read-only root, no capability: set, and the bridge served all of the above so.
hc=$("$docker" inspect -f '{{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}}' "$bridge")
[ "$hc" = "true [ALL]" ] || fail "the bridge's container: ReadonlyRootfs CapDrop = $hc"
caps=$("$docker" exec "$bridge" sed -n 's/^CapEff:\s*//p' /proc/1/status)
[ "$caps" = 0000000000000000 ] || fail "the bridge has capabilities $caps"
if out=$("$docker" exec -u 0 "$bridge" bash -c ': >/probe' 2>&1); then
    fail "root wrote /probe in the bridge's container"
fi
grep -q 'Read-only file system' <<<"$out" || fail "writing / failed for another reason: $out"
measured "read_only + cap_drop [ALL]: the bridge's CapEff $caps, root's write to / refused ($out)"

# RabbitMQ killed: 503 with Retry-After at once; 202 again once it is back.
"$docker" kill "$rabbitmq" >/dev/null
# From the moment its process is gone (kill returns once the signal is sent).
stopped() { [ "$("$docker" inspect -f '{{.State.Running}}' "$1")" = false ]; }
wait_for 30 "the killed RabbitMQ container stopped" stopped "$rabbitmq"
t0=$(now_ms)
http POST /ingest "$doc"
took=$(since "$t0")
retry=$(header Retry-After)
[ "$code" = 503 ] || fail "POST /ingest with RabbitMQ killed: $code"
[ -n "$retry" ] || fail "the 503 has no Retry-After"
measured "RabbitMQ container killed: POST /ingest 503 in $took s, Retry-After: $retry"
t0=$(now_ms)
"$docker" start "$rabbitmq" >/dev/null
accepted() { http POST /ingest "$doc" && [ "$code" = 202 ]; }
wait_for 180 "POST /ingest 202 after RabbitMQ's restart" accepted
measured "RabbitMQ started again: POST /ingest 202 after $(since "$t0") s"
# /healthz is 200 once every worker is back (each retries on its own backoff).
all_back() { http GET /healthz && [ "$code" = 200 ]; }
wait_for 120 "GET /healthz 200 after RabbitMQ's restart" all_back
measured "GET /healthz 200 (every worker reconnected) after $(since "$t0") s"

# docker stop: SIGTERM to PID 1, the compose file's stop_grace_period.
grace=$(compose_value bridge stop_grace_period)
grace=${grace%s}
t0=$(now_ms)
"$docker" stop -t "$grace" "$bridge" >/dev/null
took=$(since "$t0")
rc=$("$docker" inspect -f '{{.State.ExitCode}}' "$bridge")
[ "$rc" = 0 ] || fail "docker stop: the bridge exited $rc (137: killed at the end of the grace period)"
logged bridge 'SIGTERM received' || fail "the bridge did not log the SIGTERM"
measured "docker stop of the bridge: exit code 0, SIGTERM logged, $took s (grace period $grace s)"

# ---- 5. teardown ---------------------------------------------------------------

stack_up=
dc down -v --remove-orphans >"$tmp/down.log" 2>&1 || { cat "$tmp/down.log"; fail "down -v"; }
left=$("$docker" ps -aq --filter "label=com.docker.compose.project=$project")
[ -z "$left" ] || fail "containers left after down -v: $left"
measured "down -v: no container of project $project left"
say "$checks checks passed; figures in $results"
