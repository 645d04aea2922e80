#!/usr/bin/env bash
# run.sh BUILD table|plot|results - `make bench`, `make bench-plot` and
# `make bench-readme`: the bridge against the limits it is judged by,
# measured in one run on one machine.
#
# Starts, all private to this run and all on 127.0.0.1: a RabbitMQ node
# (tests/broker.sh, data under $BENCH_OUT/broker), the bridge from BUILD
# (the release build; the shipped bridge.ini with the listener and the broker
# URI overridden from the environment), the echo worker on queue rpc, and
# nginx with one worker serving `return 200 "Pong!"`. Then, each for
# BENCH_SECONDS (10) with wrk and tests/load/*.lua:
#
#   table  pong-keepalive  wrk -t1 -c100 GET /pong, bridge then nginx
#          pong-close      the same with Connection: close
#          fire            POST of tests/load/doc.xml to /ingest (persistent,
#                          confirms on) over BENCH_WINDOW connections (the
#                          ceiling's window), then the queue depth against the 2xx
#                          count; the limit: bench-ceiling publish (rabbitmq-c
#                          straight to the broker, window BENCH_WINDOW = 300)
#          rpc             the same document to /rpc, the echo worker
#                          answering; the limit: bench-ceiling rpc
#          c10k            10,000 keep-alive connections (wrk -t2) on /pong
#                          and on /ingest; the bridge's peak RSS
#          xml check       the slowest check of a 1 MiB hostile document
#                          against a 1 MiB plain one, without and with an
#                          XSD (bench-xmlcost, tests/bench/xmlcost.c)
#          quorum          (when BENCH_QUORUM=1, the default) fire to a
#                          route whose queue is a quorum queue on a three-node
#                          cluster, if tests/cluster.sh exists
#   plot   pong, fire and rpc at 10, 100, 1,000 and 10,000 connections
#          (BENCH_PLOT_SECONDS, 5, each), nginx's pong beside them; PNG plots
#          of req/s, p99 and errors against concurrency (gnuplot)
#
# Everything lands in $BENCH_OUT (BUILD/bench): results.tsv, table.md,
# wrk's own output per run, the bridge's log, and the plots.
# Traffic goes to 127.0.0.1 only and every run is bounded in time.
set -euo pipefail

build=${1:?usage: run.sh BUILD table|plot|results}
what=${2:-table}
here=$(cd "$(dirname "$0")/../.." && pwd)
cd "$here"
# shellcheck source=tests/lib/markers.sh
. tests/lib/markers.sh
secs=${BENCH_SECONDS:-10}
plot_secs=${BENCH_PLOT_SECONDS:-5}
window=${BENCH_WINDOW:-300}
out=${BENCH_OUT:-$here/$build/bench}
mkdir -p "$out"
out=$(cd "$out" && pwd)
doc=$here/tests/load/doc.xml
broker=$here/tests/broker.sh

say() { printf 'bench: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# results: the latest table.md into tests/bench/RESULTS.md between the BENCH
# markers, and the plots beside it (tests/bench/plots/), as
# `make bench-readme` does.
run_results() {
    local results=tests/bench/RESULTS.md
    [ -s "$out/table.md" ] || die "no $out/table.md: run make bench first"
    marked "$results" BENCH || die "the BENCH markers are missing from $results"
    local t
    t=$(mktemp)
    { echo '<!-- BENCH:BEGIN -->'; cat "$out/table.md"; echo '<!-- BENCH:END -->'; } >"$t"
    replace_marked "$results" BENCH "$t"
    rm -f "$t"
    mkdir -p tests/bench/plots
    local f
    for f in "$out"/plot-*.png; do
        [ -e "$f" ] && cp "$f" tests/bench/plots/
    done
    say "table and plots into $results and tests/bench/plots/"
}

if [ "$what" = results ]; then
    run_results
    exit 0
fi

for t in wrk nginx; do
    command -v "$t" >/dev/null || die "$t missing: make bench-deps"
done
[ "$what" != plot ] || command -v gnuplot >/dev/null || die "gnuplot missing: make bench-deps"

# 10,000 connections need 10,000 descriptors in wrk and in the bridge, each
# a process of its own: raise the soft limit as far as the hard one allows.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -ge 10100 ] || die "ulimit -n is $(ulimit -n); c10k needs 10100 (raise the hard limit)"

# shellcheck disable=SC2016 # $1 is the inner bash's argument
answers() { timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null; }
free_port() {
    local p=$1
    while answers "$p"; do p=$((p + 1)); done
    echo "$p"
}

pids=()
cleanup() {
    local rc=$?
    local p
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    [ -z "${nginx_dir:-}" ] || { [ ! -s "$nginx_dir/nginx.pid" ] || kill -QUIT "$(cat "$nginx_dir/nginx.pid")" 2>/dev/null || true; }
    BROKER_DIR=$out/broker "$broker" stop >/dev/null 2>&1 || true
    [ -z "${cluster_dir:-}" ] || "$here/tests/cluster.sh" stop "$cluster_dir" >/dev/null 2>&1 || true
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the machine -----------------------------------------------------------
# shellcheck disable=SC1091
machine="$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(. /etc/os-release && echo "$PRETTY_NAME")"
say "machine: $machine"

# --- broker ------------------------------------------------------------------
export BROKER_DIR=$out/broker
[ ! -f "$BROKER_DIR/node.env" ] || "$broker" stop >/dev/null 2>&1 || true
rm -rf "$BROKER_DIR"
"$broker" start
eval "$("$broker" env)"
uri="amqp://guest:guest@127.0.0.1:$BROKER_PORT/%2f"
depth() { "$broker" ctl list_queues -q name messages 2>/dev/null | awk -v q="$1" '$1 == q {print $2}'; }
purge() { "$broker" ctl purge_queue -q "$1" >/dev/null 2>&1 || true; }

# --- nginx: one worker, the same 5 bytes ---------------------------------------
nginx_dir=$out/nginx
rm -rf "$nginx_dir"
mkdir -p "$nginx_dir/logs"
nginx_port=$(free_port 18080)
cat >"$nginx_dir/nginx.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile 200000;
pid $nginx_dir/nginx.pid;
error_log $nginx_dir/logs/error.log warn;
events { worker_connections 20000; }
http {
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 30s;
    client_body_temp_path $nginx_dir/tmp;
    server {
        listen 127.0.0.1:$nginx_port backlog=4096;
        location = /pong { default_type text/plain; return 200 "Pong!"; }
    }
}
EOF
nginx -p "$nginx_dir" -c "$nginx_dir/nginx.conf" -g 'daemon on;' 2>"$nginx_dir/logs/start.log" ||
    { cat "$nginx_dir/logs/start.log" >&2; die "nginx did not start"; }

# --- the bridge and the echo worker ---------------------------------------------
bridge_port=$(free_port 18180)
start_bridge() {
    BRIDGE_HTTP_LISTEN=127.0.0.1:$bridge_port BRIDGE_AMQP_URI=$uri BRIDGE_LOG_LEVEL=warn \
        "$here/$build/ingest-bridge" -c "$here/bridge.ini" 2>>"$out/bridge.log" &
    bridge_pid=$!
    pids+=("$bridge_pid")
    for _ in $(seq 100); do
        if curl -sf "http://127.0.0.1:$bridge_port/healthz" >/dev/null 2>&1; then return; fi
        sleep 0.1
    done
    die "the bridge did not become healthy (see $out/bridge.log)"
}
: >"$out/bridge.log"
start_bridge
ECHO_URI=$uri "$here/$build/echo-worker" -u "$uri" -q rpc >"$out/echo.log" 2>&1 &
echo_pid=$!
pids+=("$echo_pid")
sleep 0.5

# --- measuring ----------------------------------------------------------------
# Where the two cores go: for every run, the CPU seconds (user + system) the
# broker, the bridge and the load generator used, over the wall seconds, into
# cpu.tsv; the table's second part shows them as cores kept busy.
hz=$(getconf CLK_TCK)
ticks() { # PID -> user + system ticks so far, 0 if it is gone
    sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12 + $13}' || echo 0
}
broker_ticks() { ticks "$(tr -dc 0-9 <"$BROKER_DIR/rabbit.pid")"; }
# timed NAME WALL CMD...: run CMD (its stdout passes through) and record the
# cores each side kept busy meanwhile.
timed() {
    local name=$1 wall=$2
    shift 2
    local b0 r0 e0 rc=0
    b0=$(broker_ticks)
    r0=$(ticks "$bridge_pid")
    e0=$(ticks "$echo_pid")
    ( "$@"; rc=$?; times >"$out/times.$$"; exit $rc ) || rc=$?
    local b1 r1 e1 client
    b1=$(broker_ticks)
    r1=$(ticks "$bridge_pid")
    e1=$(ticks "$echo_pid")
    # times: the shell, then its children (CMD): "0m1.250s 0m0.310s".
    client=$(awk 'NR == 2 { n = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); n += a[1] * 60 + a[2] } print n }' "$out/times.$$")
    rm -f "$out/times.$$"
    awk -v n="$name" -v w="$wall" -v b=$((b1 - b0)) -v r=$((r1 - r0)) -v e=$((e1 - e0)) \
        -v c="$client" -v hz="$hz" \
        'BEGIN { printf "%s\t%.2f\t%.2f\t%.2f\t%.2f\n", n, b / hz / w, r / hz / w, e / hz / w, c / w }' \
        >>"$out/cpu.tsv"
    return $rc
}

# wrk_run NAME THREADS CONNS SECONDS SCRIPT URL [ENV...]: prints the BENCH
# fields of tests/load/report.lua as "requests seconds non2xx p50 p99 sockerr".
wrk_run() {
    local name=$1 t=$2 c=$3 s=$4 script=$5 url=$6
    shift 6
    timed "$name" "$s" env "$@" wrk -t"$t" -c"$c" -d"${s}s" --timeout 30s \
        -s "$here/tests/load/$script" "$url" >"$out/wrk-$name.txt" 2>&1 || true
    local line
    line=$(grep '^BENCH ' "$out/wrk-$name.txt" | tail -n1) ||
        die "wrk printed no BENCH line for $name: $(cat "$out/wrk-$name.txt")"
    local requests seconds non2xx p50 p99 connect read write timeout
    eval "$(echo "${line#BENCH }" | tr ' ' '\n' | sed 's/^p50_ms/p50/;s/^p99_ms/p99/')"
    echo "$requests $seconds $non2xx $p50 $p99 $((connect + read + write + timeout))"
}

ceiling_run() { # MODE QUEUE -> "ops seconds rate p50 p99"
    local line
    line=$(timed "ceiling $1" "$secs" "$here/$build/bench-ceiling" "$1" -u "$uri" -q "$2" \
        -f "$doc" -w "$window" -d "$secs") ||
        die "bench-ceiling $1 failed"
    echo "$line" >>"$out/ceiling.txt"
    local ops seconds rate p50_ms p99_ms nacks returns
    eval "$(echo "${line#ceiling * }" | tr ' ' '\n')"
    echo "$ops $seconds $rate $p50_ms $p99_ms $((nacks + returns))"
}

# Rows: workload rate p50 p99 errors lost limit_name limit_rate
: >"$out/results.tsv"
: >"$out/ceiling.txt"
: >"$out/cpu.tsv"
row() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$out/results.tsv"; }
rate() { awk -v n="$1" -v e="$2" -v s="$3" 'BEGIN { printf "%.0f", (n - e) / s }'; }

# wrk_row NAME T C SCRIPT URL LIMIT_NAME LIMIT_RATE QUEUE [ENV...]
# QUEUE: "-" or the queue whose depth must cover every 2xx (purged before).
wrk_row() {
    local name=$1 t=$2 c=$3 script=$4 url=$5 lname=$6 lrate=$7 q=$8
    shift 8
    [ "$q" = - ] || purge "$q"
    local r
    read -r -a r < <(wrk_run "$name" "$t" "$c" "$secs" "$script" "$url" "$@")
    local ok=$((r[0] - r[2])) lost=-
    if [ "$q" != - ]; then
        sleep 1
        local d
        d=$(depth "$q")
        lost=$((ok > d ? ok - d : 0))
        say "$name: $ok answered 2xx, $d in queue $q"
        purge "$q"
    fi
    row "$name" "$(rate "${r[0]}" "${r[2]}" "${r[1]}")" "${r[3]}" "${r[4]}" "$((r[2] + r[5]))" \
        "$lost" "$lname" "$lrate"
    say "$name: $(tail -n1 "$out/results.tsv" | tr '\t' ' ')"
}

bridge=http://127.0.0.1:$bridge_port
ngx=http://127.0.0.1:$nginx_port

run_table() {
    say "nginx pong-keepalive"
    local n
    read -r -a n < <(wrk_run nginx-keepalive 1 100 "$secs" pong.lua "$ngx/pong")
    local nginx_ka
    nginx_ka=$(rate "${n[0]}" "${n[2]}" "${n[1]}")
    row "nginx pong-keepalive" "$nginx_ka" "${n[3]}" "${n[4]}" "$((n[2] + n[5]))" - - -
    say "bridge pong-keepalive"
    wrk_row pong-keepalive 1 100 pong.lua "$bridge/pong" nginx "$nginx_ka" -

    say "nginx pong-close"
    read -r -a n < <(wrk_run nginx-close 1 100 "$secs" pong.lua "$ngx/pong" CLOSE=1)
    local nginx_close
    nginx_close=$(rate "${n[0]}" "${n[2]}" "${n[1]}")
    row "nginx pong-close" "$nginx_close" "${n[3]}" "${n[4]}" "$((n[2] + n[5]))" - - -
    say "bridge pong-close"
    wrk_row pong-close 1 100 pong.lua "$bridge/pong" nginx "$nginx_close" - CLOSE=1

    say "ceiling: direct publish"
    purge ingest
    local c
    read -r -a c < <(ceiling_run publish ingest)
    row "ceiling publish (rabbitmq-c, window $window)" "${c[2]}" "${c[3]}" "${c[4]}" "${c[5]}" - - -
    purge ingest
    say "bridge fire"
    # As many connections as the ceiling has messages in flight: the same
    # concurrency on both sides of the ratio.
    wrk_row fire 1 "$window" post.lua "$bridge/ingest" "direct publish" "${c[2]}" ingest

    say "ceiling: direct rpc"
    read -r -a c < <(ceiling_run rpc rpc)
    row "ceiling rpc (rabbitmq-c, window $window)" "${c[2]}" "${c[3]}" "${c[4]}" "${c[5]}" - - -
    say "bridge rpc"
    wrk_row rpc 1 "$window" post.lua "$bridge/rpc" "direct rpc" "${c[2]}" -

    say "c10k"
    wrk_row c10k-pong 2 10000 pong.lua "$bridge/pong" - - -
    wrk_row c10k-fire 2 10000 post.lua "$bridge/ingest" - - ingest
    rss_kb=$(awk '/^VmHWM/ {print $2}' "/proc/$bridge_pid/status")
    say "bridge peak RSS: $rss_kb kB"

    run_xmlcost

    if [ "${BENCH_QUORUM:-1}" = 1 ] && [ -x "$here/tests/cluster.sh" ]; then
        run_quorum
    fi
    print_table
}

# The xml check on its own (no HTTP, no broker): the slowest of 1 MiB hostile
# documents of each kind (tests/bench/xmlcost.c) against a 1 MiB plain one,
# without and with an XSD. Every class's figure in $out/xmlcost.txt.
run_xmlcost() {
    say "xml check: 1 MiB hostile documents"
    "$here/$build/bench-xmlcost" -s -r 3 >"$out/xmlcost.txt" || die "bench-xmlcost failed"
    xml_rows=$(grep '^xml check' "$out/xmlcost.txt")
    say "$xml_rows"
}

# Fire to a quorum queue replicated on a three-node cluster: a second bridge
# whose route declares it, against tests/cluster.sh's nodes.
run_quorum() {
    say "quorum: starting a three-node cluster"
    cluster_dir=$out/cluster
    rm -rf "$cluster_dir"
    local curis
    "$here/tests/cluster.sh" start "$cluster_dir" >"$out/cluster.log" 2>&1 ||
        die "cluster did not start: $(tail -n 20 "$out/cluster.log")"
    curis=$("$here/tests/cluster.sh" uris "$cluster_dir")
    local qport
    qport=$(free_port $((bridge_port + 1)))
    BRIDGE_HTTP_LISTEN=127.0.0.1:$qport BRIDGE_AMQP_URI=$curis BRIDGE_LOG_LEVEL=warn \
        BRIDGE_ROUTE_INGEST_QUEUE=ingest_quorum BRIDGE_ROUTE_INGEST_ROUTING_KEY=ingest_quorum \
        BRIDGE_ROUTE_INGEST_QUEUE_TYPE=quorum \
        "$here/$build/ingest-bridge" -c "$here/bridge.ini" 2>>"$out/bridge-quorum.log" &
    local qpid=$!
    pids+=("$qpid")
    for _ in $(seq 200); do
        curl -sf "http://127.0.0.1:$qport/healthz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    local r
    read -r -a r < <(wrk_run quorum 1 "$window" "$secs" post.lua "http://127.0.0.1:$qport/ingest")
    sed -i '$d' "$out/cpu.tsv" # it measured the other bridge and node: not this run
    local ok=$((r[0] - r[2])) d=0 prev=-1 same=0
    # A quorum queue's message count comes from its replicas' metrics, which
    # lag: read it until it covers the 2xx count or has stood still 3 s.
    for _ in $(seq 30); do
        sleep 1
        d=$("$here/tests/cluster.sh" ctl "$cluster_dir" 1 list_queues -q name messages 2>/dev/null |
            awk '$1 == "ingest_quorum" {print $2}')
        d=${d:-0}
        [ "$d" -lt "$ok" ] || break
        if [ "$d" = "$prev" ]; then
            same=$((same + 1))
            [ "$same" -lt 3 ] || break
        else
            same=0
        fi
        prev=$d
    done
    say "quorum: $ok answered 2xx, $d in queue ingest_quorum"
    row "fire, quorum queue (3 nodes)" "$(rate "${r[0]}" "${r[2]}" "${r[1]}")" "${r[3]}" "${r[4]}" \
        "$((r[2] + r[5]))" "$((ok > d ? ok - d : 0))" "fire, classic" \
        "$(awk -F'\t' '$1 == "fire" {print $2}' "$out/results.tsv")"
    kill -TERM "$qpid" 2>/dev/null || true
    wait "$qpid" 2>/dev/null || true
    "$here/tests/cluster.sh" stop "$cluster_dir" >/dev/null 2>&1 || true
    cluster_dir=
}

print_table() {
    {
        echo "| workload | req/s | p50 ms | p99 ms | errors | lost | limit | ratio |"
        echo "|---|---:|---:|---:|---:|---:|---|---:|"
        awk -F'\t' '{
            ratio = ($8 == "-" || $8 == 0) ? "-" : sprintf("%.2fx", $2 / $8)
            printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6,
                   ($7 == "-" ? "-" : $7 " " $8), ratio
        }' "$out/results.tsv"
        echo
        echo "Cores kept busy during each run (CPU seconds over wall seconds; 2 = the whole machine):"
        echo
        echo "| run | broker | bridge | echo worker | load generator |"
        echo "|---|---:|---:|---:|---:|"
        awk -F'\t' '{ printf "| %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5 }' "$out/cpu.tsv"
        echo
        if [ -n "${xml_rows:-}" ]; then
            # "NAME: A ms (CLASS) vs B ms, xR", a list item each
            while IFS= read -r line; do echo "- $line"; done <<<"$xml_rows"
            echo
        fi
        echo "c10k: bridge peak RSS ${rss_kb} kB. ${secs} s a workload; pong wrk -t1 -c100, fire and"
        echo "rpc wrk -t1 -c$window (the ceiling's window), c10k wrk -t2 -c10000, quorum as fire. Machine: $machine; $(date -u +%Y-%m-%d)."
    } >"$out/table.md"
    echo
    cat "$out/table.md"
}

# --- plot: concurrency sweep ----------------------------------------------------
run_plot() {
    local c t name
    : >"$out/sweep.tsv"
    for c in 10 100 1000 10000; do
        t=1
        [ "$c" -lt 10000 ] || t=2
        for name in nginx-pong pong fire rpc; do
            local url script q=- r
            case $name in
            nginx-pong) url=$ngx/pong script=pong.lua ;;
            pong) url=$bridge/pong script=pong.lua ;;
            fire) url=$bridge/ingest script=post.lua q=ingest ;;
            rpc) url=$bridge/rpc script=post.lua ;;
            esac
            [ "$q" = - ] || purge "$q"
            read -r -a r < <(wrk_run "sweep-$name-$c" "$t" "$c" "$plot_secs" "$script" "$url")
            [ "$q" = - ] || purge "$q"
            printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$c" "$(rate "${r[0]}" "${r[2]}" "${r[1]}")" \
                "${r[4]}" "$((r[2] + r[5]))" >>"$out/sweep.tsv"
            say "sweep $name c=$c: $(tail -n1 "$out/sweep.tsv" | tr '\t' ' ')"
        done
    done
    local col title file ylab
    for col in 3:reqs:"requests per second":"req/s" 4:p99:"p99 latency":"ms" \
        5:errors:"errors (socket + non-2xx)":"count"; do
        IFS=: read -r n file title ylab <<<"$col"
        gnuplot <<EOF
set terminal pngcairo size 800,500 font ",10"
set output "$out/plot-$file.png"
set title "ingest-bridge: $title against concurrency (${plot_secs} s a point, $(nproc) cores)"
set xlabel "concurrent connections"
set ylabel "$ylab"
set logscale x
set xrange [7:14000]
set yrange [0:10<*]
set xtics ("10" 10, "100" 100, "1,000" 1000, "10,000" 10000)
set key outside right
set grid
plot for [w in "nginx-pong pong fire rpc"] "< awk -F'\t' '\$1 == \"".w."\"' $out/sweep.tsv" \
     using 2:$n with linespoints lw 2 title w
EOF
        say "wrote $out/plot-$file.png"
    done
}

case $what in
table) run_table ;;
plot) run_plot ;;
*) die "usage: run.sh BUILD table|plot|results" ;;
esac
