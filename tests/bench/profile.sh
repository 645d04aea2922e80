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

# A third route beside the shipped two: routing from the request (the key
# from a path segment and a header, the queue bound with its wildcard on
# amq.topic) with W3C trace started, against the plain /ingest route.
# And a fourth: /gz takes gzip bodies (the same document, gzip -9), which it
# inflates, checks and publishes like /ingest.
templated=(BRIDGE_ROUTE_EVENTS_PATH='/events/{type}' BRIDGE_ROUTE_EVENTS_EXCHANGE=amq.topic
    BRIDGE_ROUTE_EVENTS_ROUTING_KEY='orders.{type}.{header:X-Region}'
    BRIDGE_ROUTE_EVENTS_QUEUE=events
    BRIDGE_ROUTE_GZ_PATH=/gz BRIDGE_ROUTE_GZ_ROUTING_KEY=ingest BRIDGE_ROUTE_GZ_ENCODINGS=gzip)
gzip -9 -c "$here/tests/load/doc.xml" >"$out/doc.xml.gz"

# run NAME PATH SCRIPT [VAR=VALUE...]: one bridge under callgrind (the
# variables in its environment, and wrk's); prints "instructions requests".
run() {
    local name=$1 path=$2 script=$3
    shift 3
    rm -f "$out/callgrind.$name"
    env "${templated[@]}" "$@" BRIDGE_HTTP_LISTEN=127.0.0.1:$port BRIDGE_AMQP_URI="$uri" \
        BRIDGE_HTTP_WORKERS=1 BRIDGE_LOG_LEVEL=warn \
        valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.$name" \
        "$here/$build/ingest-bridge" -c "$here/bridge.ini" 2>"$out/bridge-$name.log" &
    local pid=$!
    for _ in $(seq 300); do
        curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    local requests=0
    if [ "$path" != - ]; then
        env "$@" wrk -t1 -c10 -d"${secs}s" --timeout 30s -s "$here/tests/load/$script" \
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
printf '%-12s %12s %10s %14s\n' workload instructions requests "instr/request"
# NAME:PATH:SCRIPT[:VAR=VALUE...]. fire-notrace is fire with trace = off:
# what starting a trace and its header cost.
for w in pong:/pong:pong.lua fire:/ingest:post.lua fire-notrace:/ingest:post.lua:BRIDGE_ROUTE_INGEST_TRACE=off \
    "templated:/events/paid:post.lua:HEADER=X-Region: eu-1" \
    "gzip:/gz:post.lua:HEADER=Content-Encoding: gzip:DOC=$out/doc.xml.gz" rpc:/rpc:post.lua; do
    IFS=: read -r name path script vars <<<"$w"
    local_env=()
    # VAR=VALUE pairs, ':' between them (a value's own ': ' stays)
    while [ -n "$vars" ]; do
        case $vars in
        *:[A-Z]*=*)
            local_env+=("${vars%%:[A-Z]*=*}")
            rest=${vars#"${local_env[-1]}":}
            vars=$rest ;;
        *)
            local_env+=("$vars")
            vars= ;;
        esac
    done
    read -r total requests < <(run "$name" "$path" "$script" "${local_env[@]}")
    printf '%-12s %12s %10s %14s\n' "$name" "$total" "$requests" \
        "$(( (total - idle) / requests ))"
done | tee "$out/summary.txt"

# Where pong's and fire's instructions go: the functions with the most
# instructions of their own (callgrind_annotate), less the idle run's, per
# request.
# by_function FILE: "function (library)<TAB>instructions" per line.
by_function() {
    callgrind_annotate --auto=no --threshold=100 "$1" 2>/dev/null |
        awk '
            /file:function/ { table = 1; next } # the function table, up to a blank line
            table && /^-+$/ { next }
            table && /^ *$/ { table = 0 }
            table && $1 ~ /^[0-9,]+$/ {
                ir = $1; gsub(",", "", ir)
                rest = $0; sub(/^ *[0-9,]+ +\( *[0-9.]+%\) +/, "", rest)
                lib = "-"
                if (match(rest, / \[[^]]*\]$/)) {
                    lib = substr(rest, RSTART + 2, RLENGTH - 3); sub(/^.*\//, "", lib)
                    rest = substr(rest, 1, RSTART - 1)
                }
                sub(/^.*:/, "", rest)
                printf "%s (%s)\t%s\n", rest, lib, ir
            }'
}
by_function "$out/callgrind.idle" >"$out/functions.idle"
for name in pong fire; do
    read -r _ requests < <(awk -v n="$name" '$1 == n {print $2, $3}' "$out/summary.txt")
    echo
    echo "$name: the 12 functions with the most instructions of their own, per request"
    by_function "$out/callgrind.$name" |
        awk -F'\t' -v n="$requests" '
            FILENAME == ARGV[1] { idle[$1] += $2; next }
            { run[$1] += $2 }
            END { for (f in run) printf "%.0f\t%s\n", (run[f] - idle[f]) / n, f }' \
            "$out/functions.idle" - |
        sort -t"$(printf '\t')" -k1,1nr | awk -F'\t' 'NR <= 12 { printf "  %8s  %s\n", $1, $2 }'
done | tee -a "$out/summary.txt"
