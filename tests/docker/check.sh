#!/usr/bin/env bash
# check.sh [BUILD] - what can be checked of docker/ without a Docker engine:
# the compose file's and the Dockerfile's configuration is run through the
# real bridge (BUILD/ingest-bridge -t), their ports agree, each stage
# installs what the programs need, and then the compose stack is played out
# here: a private broker node standing in for the rabbitmq service, the
# bridge as PID 1 with the container's environment, the echo worker with its
# own, the image's HEALTHCHECK command against /healthz, an rpc round trip
# and a graceful SIGTERM.
set -euo pipefail

build=${1:-build}
here=$(cd "$(dirname "$0")/../.." && pwd)
cd "$here"
bridge=$here/$build/ingest-bridge
echo_bin=$here/$build/echo-worker
dockerfile=docker/Dockerfile
compose=docker/docker-compose.yml
CHECK_NAME=docker/check
# shellcheck source=tests/lib/check.sh
. tests/lib/check.sh
if ! [ -x "$bridge" ] || ! [ -x "$echo_bin" ]; then
    fail "$bridge and $echo_bin must be built first (make)"
fi
python3 -c 'import yaml' 2>/dev/null || fail "python3-yaml missing: make deps"

# ---- the compose file, read with a YAML parser -----------------------------

# compose_env SERVICE: its environment as KEY=VALUE lines (map or list form).
compose_env() {
    python3 - "$compose" "$1" <<'EOF'
import sys, yaml
svc = yaml.safe_load(open(sys.argv[1]))["services"][sys.argv[2]]
env = svc.get("environment") or {}
if isinstance(env, list):
    env = dict(e.split("=", 1) for e in env)
for k, v in env.items():
    print(f"{k}={v}")
EOF
}

# compose_ports SERVICE: "PUBLISHED TARGET" lines of its port mappings.
compose_ports() {
    python3 - "$compose" "$1" <<'EOF'
import sys, yaml
svc = yaml.safe_load(open(sys.argv[1]))["services"][sys.argv[2]]
for p in svc.get("ports") or []:
    if isinstance(p, dict):
        print(p["published"], p["target"])
    else:
        parts = str(p).split("/")[0].split(":")
        print(parts[-2], parts[-1])
EOF
}

# compose_get SERVICE KEY...: one value (a list as JSON), "" when absent.
compose_get() {
    python3 - "$compose" "$@" <<'EOF'
import json, sys, yaml
v = yaml.safe_load(open(sys.argv[1]))["services"][sys.argv[2]]
for k in sys.argv[3:]:
    v = v.get(k) if isinstance(v, dict) else None
print("" if v is None else json.dumps(v) if not isinstance(v, str) else v)
EOF
}

# ---- the Dockerfile: continuation lines joined, split into stages ----------

joined=$(sed -e ':a' -e '/\\$/{N;s/\\\n//;ba}' "$dockerfile" | grep -v '^[[:space:]]*#')
build_stage=$(awk '/^FROM /{n++} n==1' <<<"$joined")
runtime_stage=$(awk '/^FROM /{n++} n==2' <<<"$joined")
[ "$(grep -c '^FROM ' <<<"$joined")" = 2 ] || fail "$dockerfile: expected two stages (build, runtime)"
grep -q '^FROM debian:bookworm-slim AS build$' <<<"$build_stage" ||
    fail "$dockerfile: the build stage is not debian:bookworm-slim AS build"
grep -q '^FROM debian:bookworm-slim$' <<<"$runtime_stage" ||
    fail "$dockerfile: the runtime stage is not debian:bookworm-slim"

# apt_packages STAGE_TEXT: the packages its apt-get install names.
apt_packages() {
    grep -o 'apt-get install[^&]*' <<<"$1" | tr -s ' ' '\n' |
        grep -v -e '^-' -e '^apt-get$' -e '^install$' -e '^$' | sort -u
}
# json_instr STAGE_TEXT NAME: the exec-form argument list of an instruction.
json_instr() {
    sed -n "s/^$2 .*CMD \(\[.*\]\)$/\1/p; s/^$2 \(\[.*\]\)$/\1/p" <<<"$1"
}
port_of() { printf '%s\n' "${1##*:}"; }

# ---- configuration: the container's environment through the real bridge ----

# The container's environment: the Dockerfile's ENV, then compose's on top.
mapfile -t image_env < <(sed -n 's/^ENV \([A-Z_]*\)=\(.*\)$/\1=\2/p' <<<"$runtime_stage")
mapfile -t bridge_env < <(compose_env bridge)
mapfile -t echo_env < <(compose_env echo-worker)
[ ${#bridge_env[@]} -gt 0 ] || fail "$compose: the bridge service has no environment"
container_env=("${image_env[@]}" "${bridge_env[@]}")

# The config file the image runs: ENTRYPOINT's -c, copied from the repository.
entry=$(json_instr "$runtime_stage" ENTRYPOINT)
mapfile -t entry_argv < <(python3 -c 'import json,sys; print(*json.loads(sys.argv[1]), sep="\n")' "$entry")
[ "${entry_argv[1]:-}" = -c ] || fail "$dockerfile: ENTRYPOINT is not [BINARY, -c, CONFIG]"
copied_from() { # DEST -> the build stage path copied there
    sed -n "s|^COPY --from=build /src/\([^ ]*\) $1\$|\1|p" <<<"$runtime_stage"
}
[ "$(copied_from "${entry_argv[0]}")" = build/ingest-bridge ] ||
    fail "$dockerfile: ENTRYPOINT ${entry_argv[0]} is not the copied build/ingest-bridge"
config=$(copied_from "${entry_argv[2]}")
if [ -z "$config" ] || ! [ -f "$config" ]; then
    fail "$dockerfile: ENTRYPOINT's config ${entry_argv[2]} is not copied from the repository"
fi

check_config() { # check_config ENV...: the bridge's -t verdict on the image's config
    env -i PATH="$PATH" "$@" "$bridge" -t -c "$config" 2>&1
}
out=$(check_config "${container_env[@]}") || fail "the container's environment is refused: $out"
[ "$out" = "config ok" ] || fail "bridge -t said: $out"
ok "$config with the image's ENV and compose's environment: config ok (${#container_env[@]} variables)"

# Each BRIDGE_* key is one the bridge reads: misspelt, it must be refused.
for kv in "${container_env[@]}"; do
    key=${kv%%=*}
    case $key in BRIDGE_*) ;; *) fail "$compose: bridge variable $key is not BRIDGE_*" ;; esac
    if out=$(check_config "${container_env[@]}" "${key}X=${kv#*=}"); then
        fail "a misspelt ${key}X was accepted: $out"
    fi
    grep -q "environment ${key}X" <<<"$out" || fail "misspelt ${key}X refused for another reason: $out"
done
ok "each of ${#container_env[@]} BRIDGE_* keys refused when misspelt"

# The environment is really read: a bad listen address from it is refused.
out=$(check_config "${container_env[@]}" BRIDGE_HTTP_LISTEN=0.0.0.0:notaport) &&
    fail "BRIDGE_HTTP_LISTEN=0.0.0.0:notaport accepted: $out"
ok "a bad BRIDGE_HTTP_LISTEN is refused: ${out%%$'\n'*}"

# The echo worker's ECHO_* keys are ones it documents (it ignores others).
echo_vars=$("$echo_bin" -h | grep -o 'ECHO_[A-Z_]*' | sort -u)
for kv in "${echo_env[@]}"; do
    grep -qx "${kv%%=*}" <<<"$echo_vars" || fail "$compose: echo-worker variable ${kv%%=*} is not one it reads"
done
[ "$(compose_get echo-worker entrypoint)" = '["/usr/local/bin/ingest-bridge-echo-worker"]' ] ||
    fail "$compose: echo-worker entrypoint is not /usr/local/bin/ingest-bridge-echo-worker"
[ "$(copied_from /usr/local/bin/ingest-bridge-echo-worker)" = build/echo-worker ] ||
    fail "$dockerfile: the echo worker is not copied to /usr/local/bin/ingest-bridge-echo-worker"
ok "echo-worker: entrypoint in the image, ${#echo_env[@]} ECHO_* keys it reads"

# Both point at the rabbitmq service on its AMQP port.
env_value() { # env_value NAME KEY=VALUE...: NAME's value, the last one winning as in env
    local name=$1 kv value=
    shift
    for kv in "$@"; do [ "${kv%%=*}" = "$name" ] && value=${kv#*=}; done
    printf '%s\n' "$value"
}
uri=$(env_value BRIDGE_AMQP_URI "${container_env[@]}")
echo_uri=$(env_value ECHO_URI "${echo_env[@]}")
for u in "$uri" "$echo_uri"; do
    case $u in amqp://*@rabbitmq:5672/*) ;; *) fail "$compose: broker URI $u is not the rabbitmq service's port 5672" ;; esac
done
[ "$(compose_get rabbitmq image)" = rabbitmq:3-management ] || fail "$compose: rabbitmq is not rabbitmq:3-management"
[ "$(compose_get bridge depends_on rabbitmq condition)" = service_healthy ] ||
    fail "$compose: the bridge does not wait for a healthy rabbitmq"
ok "bridge and echo worker use amqp://...@rabbitmq:5672, after its healthcheck"

# ---- ports: listen, publish, EXPOSE, HEALTHCHECK ---------------------------

listen=$(env_value BRIDGE_HTTP_LISTEN "${container_env[@]}")
case $listen in 0.0.0.0:*) ;; *) fail "the container listens on $listen, not 0.0.0.0: unreachable from outside" ;; esac
port=$(port_of "$listen")
read -r published target < <(compose_ports bridge) || fail "$compose: the bridge publishes no port"
[ "$target" = "$port" ] || fail "$compose: publishes container port $target, the bridge listens on $port"
expose=$(sed -n 's/^EXPOSE \([0-9]*\).*/\1/p' <<<"$runtime_stage")
[ "$expose" = "$port" ] || fail "$dockerfile: EXPOSE $expose, the bridge listens on $port"
health=$(json_instr "$runtime_stage" HEALTHCHECK)
[ -n "$health" ] || fail "$dockerfile: no exec-form HEALTHCHECK"
mapfile -t health_argv < <(python3 -c 'import json,sys; print(*json.loads(sys.argv[1]), sep="\n")' "$health")
grep -q "/dev/tcp/127.0.0.1/$port " <<<"${health_argv[*]}" || fail "HEALTHCHECK does not ask port $port: $health"
grep -q 'GET /healthz ' <<<"${health_argv[*]}" || fail "HEALTHCHECK does not ask /healthz: $health"
ok "port $port: BRIDGE_HTTP_LISTEN, compose ${published}:${target}, EXPOSE, HEALTHCHECK"

# ---- the build context: what the build stage copies is enough to build ----

# COPY sources of the build stage (relative to the repository root, the
# context), none of them excluded by .dockerignore.
mapfile -t sources < <(sed -n 's/^COPY \([^-].*\) [^ ]*$/\1/p' <<<"$build_stage" | tr ' ' '\n')
[ ${#sources[@]} -gt 0 ] || fail "$dockerfile: the build stage copies nothing"
ctx=$(mktemp -d)
for src in "${sources[@]}"; do
    [ -e "$src" ] || fail "$dockerfile: COPY $src: no such file in the repository"
    if grep -qx -e "${src%/}" -e "${src%/}/" .dockerignore; then
        fail ".dockerignore excludes $src, which $dockerfile copies"
    fi
    cp -r "$src" "$ctx/"
done
# make -n there: every prerequisite of `make all` present (nothing compiled).
if ! out=$(make -C "$ctx" -n all 2>&1); then
    rm -rf "$ctx"
    fail "make all in a context of only ${sources[*]}: $out"
fi
rm -rf "$ctx"
grep -q 'bridge/main.c' <<<"$out" || fail "make -n all did not plan to build bridge/main.c: $out"
ok "the build stage's COPY (${sources[*]}) holds all make all needs; none in .dockerignore"

# ---- packages: what each stage installs against what the build needs ------

# The build stage has the -dev package of every pkg-config module the
# Makefile names (PKGS), and the compiler.
build_pkgs=$(apt_packages "$build_stage")
read -ra pkgs_modules < <(sed -n 's/^PKGS *:= *//p' Makefile)
for mod in "${pkgs_modules[@]}"; do
    pc="$(pkg-config --variable=pcfiledir "$mod")/$mod.pc"
    pkg=$(dpkg -S "$pc" 2>/dev/null | cut -d: -f1) || fail "no Debian package owns $pc"
    grep -qx "$pkg" <<<"$build_pkgs" || fail "$dockerfile: the build stage lacks $pkg (for $mod)"
done
for pkg in gcc make pkg-config; do
    grep -qx "$pkg" <<<"$build_pkgs" || fail "$dockerfile: the build stage lacks $pkg"
done
ok "build stage installs $(wc -w <<<"$build_pkgs") packages, every PKGS module's among them"

# The runtime stage has the package of every library either program links
# directly (libc6 is in the base image).
runtime_pkgs=$(apt_packages "$runtime_stage")
for bin in "$bridge" "$echo_bin"; do
    for lib in $(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
        path=$(ldd "$bin" | awk -v l="$lib" '$1 == l { print $3 }')
        pkg=$(dpkg -S "$path" 2>/dev/null || dpkg -S "$(readlink -f "$path")" 2>/dev/null) ||
            fail "no Debian package owns $path ($lib)"
        pkg=${pkg%%:*}
        [ "$pkg" = libc6 ] && continue
        grep -qx "$pkg" <<<"$runtime_pkgs" ||
            fail "$dockerfile: the runtime stage lacks $pkg ($lib, linked by $(basename "$bin"))"
    done
done
grep -qx 'libc6-dev\|gcc\|make' <<<"$runtime_pkgs" && fail "$dockerfile: build tools in the runtime stage"
grep -q '^USER ingest-bridge$' <<<"$runtime_stage" || fail "$dockerfile: the runtime does not run as ingest-bridge"
ok "runtime stage installs the package of every library linked ($(tr '\n' ' ' <<<"$runtime_pkgs")), no compiler; USER ingest-bridge"

# ---- the stack, played out here ---------------------------------------------

tmp=$(mktemp -d)
broker_dir=$here/$build/docker-broker.$$
bridge_pid=
echo_pid=
# shellcheck disable=SC2317 # reached through the trap below
cleanup() {
    local rc=$?
    [ -n "$echo_pid" ] && kill -TERM "$echo_pid" 2>/dev/null
    [ -n "$bridge_pid" ] && kill -KILL "$bridge_pid" 2>/dev/null
    wait 2>/dev/null
    tests/broker.sh stop >/dev/null 2>&1 || true
    rm -rf "$broker_dir".* "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() { # the first port from $1 up that nothing answers on
    local p=$1
    while tests/broker.sh answers "127.0.0.1:$p"; do p=$((p + 1)); done
    echo "$p"
}
# The service names as this machine reaches them: rabbitmq is the private
# node, the published port a free one (the image's own port may be taken).
# Other runs on this machine start nodes of their own from port 5699 up: a
# node that loses the race for a port dies starting; the next try takes
# another port and a fresh directory. What is tested starts after this.
for try in 1 2 3; do
    export BROKER_DIR=$broker_dir.$try
    BROKER_PORT=$(free_port $((5750 + RANDOM % 200)))
    export BROKER_PORT
    tests/broker.sh start && break
    tests/broker.sh stop || true
    [ "$try" = 3 ] && fail "the private broker node did not start in 3 tries"
    say "the broker node did not start (try $try): another port"
done
eval "$(tests/broker.sh env)"
# The bridge binds with SO_REUSEPORT, so a second run picking the same port
# would share it unnoticed: start from a random one.
http_port=$(free_port $((18080 + RANDOM % 1000)))
local_env() { # KEY=VALUE... with the service addresses made local
    local kv
    for kv in "$@"; do
        kv=${kv//@rabbitmq:5672/@127.0.0.1:$BROKER_PORT}
        printf '%s\n' "${kv/#BRIDGE_HTTP_LISTEN=0.0.0.0:$port/BRIDGE_HTTP_LISTEN=127.0.0.1:$http_port}"
    done
}
mapfile -t run_env < <(local_env "${container_env[@]}")
mapfile -t run_echo_env < <(local_env "${echo_env[@]}")

# The image's HEALTHCHECK, word for word but for the port.
healthcheck() {
    timeout 3 "${health_argv[0]}" "${health_argv[1]}" \
        "${health_argv[2]//\/dev\/tcp\/127.0.0.1\/$port/\/dev\/tcp\/127.0.0.1\/$http_port}" 2>/dev/null
}
# http METHOD PATH [BODY]: the whole response, over bash's /dev/tcp.
http() {
    # shellcheck disable=SC2016 # $1.. are the inner shell's arguments
    timeout 10 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" &&
        printf "%s %s HTTP/1.0\r\nContent-Type: application/xml\r\nContent-Length: %d\r\n\r\n%s" \
            "$2" "$3" "${#4}" "$4" >&3 && cat <&3' _ "$http_port" "$@"
}

# The bridge as the container runs it: PID 1 of its own PID namespace (as
# root; else a plain child), only the container's environment.
pid1=
if [ "$(id -u)" = 0 ] && unshare --pid --fork true 2>/dev/null; then
    pid1="unshare --pid --fork --kill-child"
fi
# shellcheck disable=SC2086 # pid1 is a command prefix
env -i PATH="$PATH" "${run_env[@]}" $pid1 "$bridge" -c "$config" >"$tmp/bridge.log" 2>&1 &
bridge_pid=$!
for _ in $(seq 100); do
    healthcheck && break
    sleep 0.1
done
healthcheck || { cat "$tmp/bridge.log"; fail "HEALTHCHECK did not pass within 10 s of the bridge's start"; }
ok "HEALTHCHECK passes once the bridge is connected${pid1:+ (bridge as PID 1)}"

env -i PATH="$PATH" "${run_echo_env[@]}" "$echo_bin" >"$tmp/echo.log" 2>&1 &
echo_pid=$!
for _ in $(seq 100); do
    grep -q 'echo-worker: ready' "$tmp/echo.log" && break
    sleep 0.1
done
doc='<order id="42"><item>compose</item></order>'
resp=$(http POST /rpc "$doc") || true
head -n 1 <<<"$resp" | grep -q '^HTTP/1\.[01] 200 ' || { cat "$tmp/echo.log"; fail "POST /rpc: ${resp%%$'\n'*}"; }
[ "${resp##*$'\r\n\r\n'}" = "$doc" ] || fail "POST /rpc: the reply is not the document: $resp"
resp=$(http POST /ingest "$doc") || true
head -n 1 <<<"$resp" | grep -q '^HTTP/1\.[01] 202 ' || fail "POST /ingest: ${resp%%$'\n'*}"
ok "POST /rpc answered by the echo worker (200, the document), POST /ingest 202"

kill -TERM "$echo_pid"
wait "$echo_pid" || fail "echo worker exit status $? on SIGTERM"
echo_pid=
tests/broker.sh stop
for _ in $(seq 100); do
    healthcheck || break
    sleep 0.1
done
healthcheck && fail "HEALTHCHECK still passes 10 s after the broker stopped"
ok "HEALTHCHECK fails once the broker is gone: $(http GET /healthz | head -n 1 | tr -d '\r')"

# SIGTERM to the bridge itself (PID 1 inside): a graceful stop, exit 0.
target_pid=$bridge_pid
if [ -n "$pid1" ]; then
    target_pid=$(awk '{print $1}' "/proc/$bridge_pid/task/$bridge_pid/children" 2>/dev/null)
    [ -n "$target_pid" ] || fail "the bridge under unshare has gone"
    grep -q '^NSpid:.*[[:space:]]1$' "/proc/$target_pid/status" || fail "the bridge is not PID 1 in its namespace"
fi
kill -TERM "$target_pid"
for _ in $(seq 100); do
    kill -0 "$bridge_pid" 2>/dev/null || break
    sleep 0.1
done
rc=0
wait "$bridge_pid" || rc=$?
bridge_pid=
[ "$rc" = 0 ] || { cat "$tmp/bridge.log"; fail "the bridge exited $rc on SIGTERM"; }
grep -q 'SIGTERM received' "$tmp/bridge.log" || fail "the bridge did not log the SIGTERM"
ok "SIGTERM${pid1:+ to PID 1}: the bridge stopped, exit 0"

say "$checks checks passed"
