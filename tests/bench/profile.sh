#!/usr/bin/env bash
# profile.sh BUILD - `make bench-profile`: instructions per request on the
# pong, fire and rpc paths, counted by valgrind's callgrind (instructions,
# not seconds: the same for the same binary and inputs, however busy the
# machine is). For each workload a bridge with one worker runs under
# callgrind against a private broker node, wrk sends it requests for
# PROFILE_SECONDS (5), the bridge stops; an idle run (no requests) gives the
# start-up and shutdown cost, which is taken off:
#
#   per request = (instructions of the run - instructions of the idle run)
#                 / requests answered
#
# The callgrind files stay in BUILD/profile (callgrind_annotate reads them:
# where the instructions go, function by function).
set -euo pipefail

build=${1:?usage: profile.sh BUILD}
here=$(cd "$(dirname "$0")/../.." && pwd)
cd "$here"
secs=${PROFILE_SECONDS:-5}
out=$here/$build/profile
mkdir -p "$out"
broker=$here/tests/broker.sh

say() { printf 'profile: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
command -v valgrind >/dev/null || die "valgrind missing: make deps"

export BROKER_DIR=$out/broker
[ ! -f "$BROKER_DIR/node.env" ] || "$broker" stop >/dev/null 2>&1 || true
rm -rf "$BROKER_DIR"
echo_pid=
cleanup() {
    local rc=$?
    [ -z "$echo_pid" ] || kill -TERM "$echo_pid" 2>/dev/null || true
    "$broker" stop >/dev/null 2>&1 || true
    exit $rc
}
trap cleanup EXIT
"$broker" start
eval "$("$broker" env)"
uri="amqp://guest:guest@127.0.0.1:$BROKER_PORT/%2f"
port=$((BROKER_PORT + 12000))

"$here/$build/echo-worker" -u "$uri" -q rpc >"$out/echo.log" 2>&1 &
echo_pid=$!

# run NAME PATH SCRIPT: one bridge under callgrind; prints "instructions requests".
run() {
    local name=$1 path=$2 script=$3
    rm -f "$out/callgrind.$name"
    BRIDGE_HTTP_LISTEN=127.0.0.1:$port BRIDGE_AMQP_URI=$uri BRIDGE_HTTP_WORKERS=1 \
        BRIDGE_LOG_LEVEL=warn \
        valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.$name" \
        "$here/$build/ingest-bridge" -c "$here/bridge.ini" 2>"$out/bridge-$name.log" &
    local pid=$!
    for _ in $(seq 300); do
        curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    local requests=0
    if [ "$path" != - ]; then
        wrk -t1 -c10 -d"${secs}s" --timeout 30s -s "$here/tests/load/$script" \
            "http://127.0.0.1:$port$path" >"$out/wrk-$name.txt" 2>&1
        local line non2xx
        line=$(grep '^BENCH ' "$out/wrk-$name.txt")
        requests=${line##*requests=}
        requests=${requests%%[!0-9]*}
        non2xx=${line##*non2xx=}
        non2xx=${non2xx%%[!0-9]*}
        [ "$non2xx" = 0 ] || say "$name: $non2xx answers were not 2xx"
    else
        curl -sf "http://127.0.0.1:$port/healthz" >/dev/null
        requests=1
    fi
    kill -TERM "$pid"
    wait "$pid" || die "the bridge under callgrind failed ($name): $(tail -n 20 "$out/bridge-$name.log")"
    local total
    total=$(awk '/^summary:|^totals:/ {print $2; exit}' "$out/callgrind.$name")
    echo "$total $requests"
}

read -r idle _ < <(run idle - -)
say "idle run (start-up, one /healthz, shutdown): $idle instructions"
printf '%-6s %12s %10s %14s\n' workload instructions requests "instr/request"
for w in pong:/pong:pong.lua fire:/ingest:post.lua rpc:/rpc:post.lua; do
    IFS=: read -r name path script <<<"$w"
    read -r total requests < <(run "$name" "$path" "$script")
    printf '%-6s %12s %10s %14s\n' "$name" "$total" "$requests" \
        "$(( (total - idle) / requests ))"
done | tee "$out/summary.txt"
