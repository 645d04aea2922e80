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
#          grid            the broker's limit: bench-ceiling publish
#                          (tests/bench/ceiling.c, rabbitmq-c straight to
#                          the broker, confirms on, persistent) over windows
#                          100, 300, 1000 and 1 or 2 connections, with
#                          minimal messages and with the bridge's
#                          properties, BENCH_GRID_SECONDS (5) each
#          parts           each part of the bridge's message (id, meta,
#                          headers, mandatory) on top of the minimal one,
#                          BENCH_ROUNDS (2) interleaved rounds, the broker's
#                          CPU per message beside the rate
#          fire            POST of tests/load/doc.xml to /ingest (persistent,
#                          confirms on) over 300 connections, then the queue
#                          depth against the 2xx count; the ratios to the
#                          best minimal, the best with the bridge's
#                          properties, and the same properties and in-flight
#                          (window 300 over 2 connections, as 2 workers),
#                          and the last beside bench-burn taking the cores
#                          the bridge and wrk took (tests/bench/burn.c);
#                          the mean time of each phase from /metrics; again
#                          with `properties = minimal` (a second bridge)
#          spool           the same over 300 connections to a bridge whose
#                          broker is away, route spool = yes: every request
#                          made durable by the local spool (group commit);
#                          against fire and the best direct client
#          rpc             the same document to /rpc over 100 connections,
#                          the echo worker answering; the limit: bench-ceiling
#                          rpc, transient, windows 100 and 300 (and once
#                          persistent, and once beside bench-burn)
#          seeds           wrk -t4 -c1000 -s post.lua, fire and rpc, beside
#                          the seed article's Tornado/gevent + Celery figures
#          c10k            10,000 keep-alive connections (wrk -t2) on /pong
#                          and on /ingest; the bridge's peak RSS
#          xml check       the slowest check of a 1 MiB hostile document
#                          against a 1 MiB plain one, without and with an
#                          XSD (bench-xmlcost, tests/bench/xmlcost.c)
#          quorum          (when BENCH_QUORUM=1, the default) fire to a
#                          route whose queue is a quorum queue on a three-node
#                          cluster, if tests/cluster.sh exists
#          profile         (when BENCH_PROFILE=1, the default) instructions
#                          per request, tests/bench/profile.sh (callgrind)
# and the CPU each process used per request in every run.
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
grid_secs=${BENCH_GRID_SECONDS:-5}
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
depth() {
    "$broker" ctl list_queues -q name messages 2>/dev/null | awk -v q="$1" '$1 == q {print $2}' ||
        say "rabbitmqctl list_queues failed: depth of $1 unknown"
}
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
# spawn_bridge PORT URI LOG SECONDS [VAR=VALUE...]: a bridge from BUILD with
# the shipped bridge.ini, its listener, broker URIs and the extra variables
# from the environment; spawned is its pid once /healthz says 200 (dies
# after SECONDS without it). Stopped by cleanup with the others.
spawn_bridge() {
    local port=$1 uris=$2 log=$3 wait_s=$4
    shift 4
    env BRIDGE_HTTP_LISTEN="127.0.0.1:$port" BRIDGE_AMQP_URI="$uris" BRIDGE_LOG_LEVEL=warn "$@" \
        "$here/$build/ingest-bridge" -c "$here/bridge.ini" 2>>"$log" &
    spawned=$!
    pids+=("$spawned")
    for _ in $(seq $((wait_s * 10))); do
        # A bridge meant to be without its broker (the spool's) says 503.
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/healthz" 2>/dev/null)" != \
            "${want_health:-200}" ] || return 0
        sleep 0.1
    done
    die "the bridge on port $port did not become healthy (see $log)"
}
start_bridge() {
    spawn_bridge "$bridge_port" "$uri" "$out/bridge.log" 10
    bridge_pid=$spawned
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
# The ticks the hypervisor gave to others while this machine wanted them
# (/proc/stat's steal): a shared machine's noise, shown beside every run.
steal_ticks() { awk '/^cpu / { print $9; exit }' /proc/stat; }
# timed NAME WALL CMD...: run CMD (its stdout passes through) and record the
# cores each side kept busy meanwhile.
timed() {
    local name=$1 wall=$2
    shift 2
    local b0 r0 e0 s0 rc=0
    s0=$(steal_ticks)
    b0=$(broker_ticks)
    r0=$(ticks "$bridge_pid")
    e0=$(ticks "$echo_pid")
    ( "$@"; rc=$?; times >"$out/times.$$"; exit $rc ) || rc=$?
    local b1 r1 e1 s1 client
    s1=$(steal_ticks)
    b1=$(broker_ticks)
    r1=$(ticks "$bridge_pid")
    e1=$(ticks "$echo_pid")
    # times: the shell, then its children (CMD): "0m1.250s 0m0.310s".
    client=$(awk 'NR == 2 { n = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); n += a[1] * 60 + a[2] } print n }' "$out/times.$$")
    rm -f "$out/times.$$"
    awk -v n="$name" -v w="$wall" -v b=$((b1 - b0)) -v r=$((r1 - r0)) -v e=$((e1 - e0)) \
        -v c="$client" -v hz="$hz" -v st=$((s1 - s0)) \
        'BEGIN { printf "%s\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\n", n, b / hz / w, r / hz / w, e / hz / w, c / w, st / hz / w }' \
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

# ceiling_run MODE QUEUE WINDOW CONNS PARTS [FLAG...]: one bench-ceiling run
# for $grid_secs; sets cr to (rate p50 p99 errors broker_us), the broker's
# CPU microseconds per message last, and keeps the line in ceiling.txt. Not
# in a subshell: a failure ends the benchmark. $tag, when set, ends the
# run's name (a round), so that every run's name is its own.
ceiling_run() {
    local mode=$1 q=$2 w=$3 c=$4 parts=$5 line name
    shift 5
    name="ceiling $mode $parts w$w c$c${*:+ $*}${tag:+ $tag}"
    [ "$mode" = rpc ] || purge "$q"
    # Bounded: a reply or confirm that never comes must not hold the run.
    line=$(timed "$name" "$grid_secs" timeout $((grid_secs + 60)) "$here/$build/bench-ceiling" "$mode" -u "$uri" -q "$q" \
        -f "$doc" -w "$w" -c "$c" -p "$parts" -d "$grid_secs" "$@") ||
        die "bench-ceiling $mode failed"
    [ "$mode" = rpc ] || purge "$q"
    echo "$line" >>"$out/ceiling.txt"
    local rate p50_ms p99_ms nacks returns
    eval "$(echo "${line#ceiling }" | tr ' ' '\n' | grep -E '^(rate|p50_ms|p99_ms|nacks|returns)=')"
    printf '%s\t%s\n' "$name" "$rate" >>"$out/rates.tsv"
    cr=("$rate" "$p50_ms" "$p99_ms" "$((nacks + returns))" "$(broker_us "$name" "$rate")")
}

# broker_us NAME RATE: the broker's CPU microseconds per message in run NAME.
broker_us() {
    awk -F'\t' -v n="$1" -v r="$2" '$1 == n { b = $2 } END { printf "%.0f", (r > 0 ? b * 1e6 / r : 0) }' \
        "$out/cpu.tsv"
}

# Rows: workload rate p50 p99 errors lost limit_name limit_rate
: >"$out/results.tsv"
: >"$out/ceiling.txt"
: >"$out/cpu.tsv"
: >"$out/rates.tsv"
: >"$out/grid.tsv"
: >"$out/parts.tsv"
: >"$out/ratios.tsv"
: >"$out/burn.txt"
rm -f "$out/profile.txt"
[ "${BENCH_ROUNDS:-2}" -ge 1 ] || die "BENCH_ROUNDS must be 1 or more"
row() {
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$out/results.tsv"
    printf '%s\t%s\n' "$1" "$2" >>"$out/rates.tsv"
}
rate() { awk -v n="$1" -v e="$2" -v s="$3" 'BEGIN { printf "%.0f", (n - e) / s }'; }

# confirmed FILE: the publishes the broker confirmed (ack) in a /metrics
# snapshot, those still awaited by a request and those whose request had
# gone (late: wrk's last requests, cut off at its end).
confirmed() {
    awk '/^bridge_amqp_confirms_total\{result="ack"\}/ || /^bridge_amqp_late_confirms_total / { n += $NF }
        END { print n + 0 }' "$1"
}

# wrk_row NAME T C SCRIPT URL LIMIT_NAME LIMIT_RATE QUEUE [ENV...]
# QUEUE: "-" or the queue (purged before) that must hold every publish the
# broker confirmed meanwhile (the bridge's /metrics before and after): lost
# is how many it lacks. The confirmed count, not the 2xx count: it covers
# every 2xx, and also the publishes of wrk's last requests, which would
# otherwise hide as many lost ones.
wrk_row() {
    local name=$1 t=$2 c=$3 script=$4 url=$5 lname=$6 lrate=$7 q=$8
    shift 8
    [ "$q" = - ] || purge "$q"
    [ "$q" = - ] || metrics_snap "${url%/*}" "$out/metrics-row-0.txt"
    local r
    read -r -a r < <(wrk_run "$name" "$t" "$c" "$secs" "$script" "$url" "$@")
    local ok=$((r[0] - r[2])) lost=-
    if [ "$q" != - ]; then
        sleep 1
        metrics_snap "${url%/*}" "$out/metrics-row-1.txt"
        local d acked
        acked=$(($(confirmed "$out/metrics-row-1.txt") - $(confirmed "$out/metrics-row-0.txt")))
        d=$(depth "$q")
        d=${d:-0}
        lost=$((acked > d ? acked - d : 0))
        [ "$ok" -le "$acked" ] || lost=$((lost + ok - acked)) # a 2xx without a confirm
        say "$name: $ok answered 2xx, $acked confirmed, $d in queue $q"
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
    printf '%s\t%s\n' nginx-keepalive "$nginx_ka" >>"$out/rates.tsv" # its cpu.tsv name
    row "nginx pong-keepalive" "$nginx_ka" "${n[3]}" "${n[4]}" "$((n[2] + n[5]))" - - -
    say "bridge pong-keepalive"
    wrk_row pong-keepalive 1 100 pong.lua "$bridge/pong" nginx "$nginx_ka" -

    say "nginx pong-close"
    read -r -a n < <(wrk_run nginx-close 1 100 "$secs" pong.lua "$ngx/pong" CLOSE=1)
    local nginx_close
    nginx_close=$(rate "${n[0]}" "${n[2]}" "${n[1]}")
    printf '%s\t%s\n' nginx-close "$nginx_close" >>"$out/rates.tsv"
    row "nginx pong-close" "$nginx_close" "${n[3]}" "${n[4]}" "$((n[2] + n[5]))" - - -
    say "bridge pong-close"
    wrk_row pong-close 1 100 pong.lua "$bridge/pong" nginx "$nginx_close" - CLOSE=1

    run_grid
    run_parts
    run_fire
    run_spool
    run_rpc
    run_seeds

    say "c10k"
    # The peak of c10k itself: a bridge fresh for it, as an operator's is
    # under such a load; the peak of the one that ran everything before
    # (memory malloc keeps from the runs before) is printed beside it.
    run_rss_kb=$(awk '/^VmHWM/ {print $2}' "/proc/$bridge_pid/status")
    kill -TERM "$bridge_pid"
    wait "$bridge_pid" 2>/dev/null || true
    start_bridge
    wrk_row c10k-pong 2 10000 pong.lua "$bridge/pong" - - -
    wrk_row c10k-fire 2 10000 post.lua "$bridge/ingest" - - ingest
    rss_kb=$(awk '/^VmHWM/ {print $2}' "/proc/$bridge_pid/status")
    say "bridge peak RSS: $rss_kb kB over c10k ($run_rss_kb kB over the runs before it)"

    run_xmlcost

    if [ "${BENCH_QUORUM:-1}" = 1 ] && [ -x "$here/tests/cluster.sh" ]; then
        run_quorum
    fi
    if [ "${BENCH_PROFILE:-1}" = 1 ]; then
        say "instructions per request: tests/bench/profile.sh (callgrind)"
        tests/bench/profile.sh "$build" >"$out/profile.txt" 2>&1 ||
            die "profile.sh failed: $(tail -n 20 "$out/profile.txt")"
    fi
    print_table
}

# The broker's limit on this machine: the direct client over windows
# {100, 300, 1000} and 1 or 2 connections, with minimal messages (parts
# none) and with the bridge's (all), persistent and mandatory as the
# shipped ingest route. grid.tsv: parts window conns rate p50 p99 errors
# broker_us.
run_grid() {
    local parts w c r
    for parts in none all; do
        for w in 100 300 1000; do
            for c in 1 2; do
                say "ceiling publish parts=$parts window=$w conns=$c"
                ceiling_run publish ingest "$w" "$c" "$parts"
                printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$parts" "$w" "$c" "${cr[@]}" >>"$out/grid.tsv"
            done
        done
    done
}

# best PARTS: "rate window conns p99" of the best grid run with PARTS.
best() {
    awk -F'\t' -v p="$1" '$1 == p && $4 > r { r = $4; w = $2; c = $3; q = $6 }
        END { print r + 0, w, c, q }' "$out/grid.tsv"
}

# What each part of a message costs the broker: one connection, window 300,
# the parts one at a time on top of the minimal message, interleaved (every
# variant once a round, BENCH_ROUNDS rounds, 2) so that the machine's drift
# falls on all of them alike. parts.tsv: parts round rate broker_us.
run_parts() {
    local round parts r
    for round in $(seq "${BENCH_ROUNDS:-2}"); do
        for parts in none id meta headers mandatory id,mandatory all; do
            say "parts round $round: $parts"
            tag="(round $round)" ceiling_run publish ingest 300 1 "$parts"
            printf '%s\t%s\t%s\t%s\n' "$parts" "$round" "${cr[0]}" "${cr[4]}" >>"$out/parts.tsv"
        done
    done
}

# phases: the bridge's mean time per request in each phase (check, room,
# confirm, reply), from /metrics before and after a run: "phase mean_ms ...".
metrics_snap() { curl -sf "$1/metrics" >"$2" || : >"$2"; }
phase_means() { # BEFORE AFTER
    awk '
        /^bridge_request_phase_seconds_(sum|count)\{/ {
            match($0, /phase="[a-z]+"/)
            ph = substr($0, RSTART + 7, RLENGTH - 8)
            kind = ($0 ~ /_sum\{/) ? "sum" : "count"
            v[FILENAME == ARGV[1] ? "a" : "b", kind, ph] += $NF
            seen[ph] = 1
        }
        END {
            n = split("check room confirm reply", order, " ")
            for (i = 1; i <= n; i++) {
                ph = order[i]
                c = v["b", "count", ph] - v["a", "count", ph]
                if (!(ph in seen) || c <= 0) continue
                printf "%s %.3f ", ph, (v["b", "sum", ph] - v["a", "sum", ph]) / c * 1000
            }
        }' "$1" "$2"
}

# The broker's reads: "peer_port reads bytes" of each of its connections so
# far, into FILE (rabbitmqctl, itself a busy process: never inside a timed
# run of the bridge).
broker_reads() {
    "$broker" ctl list_connections -q peer_port recv_cnt recv_oct >"$1" 2>/dev/null || : >"$1"
}
# bytes_per_read BEFORE AFTER: the bytes per read of the connections of
# AFTER, less what each had in BEFORE (a connection new in AFTER counts
# whole).
bytes_per_read() {
    awk 'FILENAME == ARGV[1] { c0[$1] = $2; o0[$1] = $3; next }
        { c += $2 - c0[$1]; o += $3 - o0[$1] }
        END { printf "%.0f", (c > 0 ? o / c : 0) }' "$1" "$2"
}

# ratio NAME RATE LIMIT_NAME LIMIT TARGET: a line of the ratios table.
ratio() {
    awk -v n="$1" -v r="$2" -v ln="$3" -v l="$4" -v t="$5" \
        'BEGIN { printf "%s\t%s\t%s\t%s\t%s\t%s\n", n, r, ln, l, (l > 0 ? sprintf("%.2fx", r / l) : "-"), t }' \
        >>"$out/ratios.tsv"
}

# mean_of NAME FIELD [FORMAT]: the mean of FIELD (2 rate, 4 p99) over the
# rows of results.tsv whose name starts with NAME (the rounds of a run).
mean_of() {
    awk -F'\t' -v n="$1" -v f="$2" -v fmt="${3:-%.0f}" 'index($1, n) == 1 { s += $f; k++ }
        END { printf fmt, (k > 0 ? s / k : 0) }' "$out/results.tsv"
}

# fire: the bridge and the direct client it is judged by, in interleaved
# rounds (BENCH_ROUNDS, 2), each round, back to back: the direct client with
# the bridge's properties and in-flight (window 300 over 2 connections, as
# the bridge's 2 workers); fire (300 connections); the same direct client
# beside bench-burn taking the cores the bridge and wrk just took; the
# direct client with what `properties = minimal` sends; fire against a
# second bridge whose route has it. Ratios of the means of the rounds.
run_fire() {
    local mport mpid
    mport=$(free_port $((bridge_port + 1)))
    spawn_bridge "$mport" "$uri" "$out/bridge-minimal.log" 10 BRIDGE_ROUTE_INGEST_PROPERTIES=minimal
    mpid=$spawned
    metrics_snap "$bridge" "$out/metrics-fire-0.txt"
    local round same=0 same99=0 beside=0 minimal=0 load keep burner
    for round in $(seq "${BENCH_ROUNDS:-2}"); do
        say "fire round $round: direct, the bridge's properties, w300 c2"
        tag="(round $round)" ceiling_run publish ingest 300 2 all
        same=$((same + cr[0]))
        same99=$(awk -v a="$same99" -v b="${cr[2]}" 'BEGIN { print a + b }')
        say "fire round $round: the bridge"
        [ "$round" != 1 ] || broker_reads "$out/reads-fire-0.txt"
        wrk_row "fire (round $round)" 1 300 post.lua "$bridge/ingest" - - ingest
        [ "$round" != 1 ] || broker_reads "$out/reads-fire-1.txt"
        load=$(awk -F'\t' -v n="fire (round $round)" '$1 == n { printf "%.2f", $3 + $5 }' "$out/cpu.tsv")
        say "fire round $round: direct beside $load cores of load"
        "$here/$build/bench-burn" "$load" "$((grid_secs + 2))" >>"$out/burn.txt" &
        burner=$!
        tag="(round $round) beside $load cores" ceiling_run publish ingest 300 2 all
        wait "$burner" || die "bench-burn failed"
        beside=$((beside + cr[0]))
        say "fire round $round: direct, id,mandatory, w300 c2"
        tag="(round $round)" ceiling_run publish ingest 300 2 id,mandatory
        minimal=$((minimal + cr[0]))
        say "fire round $round: the bridge, properties = minimal"
        keep=$bridge_pid
        bridge_pid=$mpid # timed() measures this bridge
        wrk_row "fire, properties = minimal (round $round)" 1 300 post.lua \
            "http://127.0.0.1:$mport/ingest" - - ingest
        bridge_pid=$keep
    done
    metrics_snap "$bridge" "$out/metrics-fire-1.txt"
    kill -TERM "$mpid" 2>/dev/null || true
    wait "$mpid" 2>/dev/null || true
    fire_phases=$(phase_means "$out/metrics-fire-0.txt" "$out/metrics-fire-1.txt")

    # How the broker reads what arrives: the bridge's publishes in fire's
    # first round, and the direct client's (its connections sampled during
    # a run of its own, untimed; the others' counts taken off).
    fire_reads=$(bytes_per_read "$out/reads-fire-0.txt" "$out/reads-fire-1.txt")
    broker_reads "$out/reads-direct-0.txt"
    ( sleep 3; broker_reads "$out/reads-direct-1.txt" ) &
    local sampler=$!
    "$here/$build/bench-ceiling" publish -u "$uri" -q ingest -f "$doc" -w 300 -c 2 -d 6 >/dev/null ||
        die "bench-ceiling failed"
    wait "$sampler"
    purge ingest
    direct_reads=$(awk 'FILENAME == ARGV[1] { old[$1] = 1; next } !($1 in old)' \
        "$out/reads-direct-0.txt" "$out/reads-direct-1.txt" | bytes_per_read /dev/null /dev/stdin)

    local rounds=${BENCH_ROUNDS:-2} f p99 fm bm bb
    fire_rate=$(mean_of "fire (round" 2)
    f=$fire_rate
    p99=$(mean_of "fire (round" 4 %.1f)
    fm=$(mean_of "fire, properties = minimal (round" 2)
    read -r -a bm < <(best none)
    read -r -a bb < <(best all)
    ratio "fire" "$f" "best direct, minimal (w${bm[1]} c${bm[2]}): the physical limit" "${bm[0]}" "report"
    ratio "fire" "$f" "best direct, the bridge's properties (w${bb[1]} c${bb[2]})" "${bb[0]}" "-"
    ratio "fire" "$f" "direct, the bridge's properties, same in-flight (w300 c2), same rounds" \
        "$((same / rounds))" ">= 0.9x"
    ratio "fire p99 ms" "$p99" "direct p99, same properties and in-flight, same rounds" \
        "$(awk -v s="$same99" -v n="$rounds" 'BEGIN { printf "%.1f", s / n }')" "<= 1.5x"
    ratio "fire" "$f" "the same direct client beside the cores the bridge and wrk took (bench-burn)" \
        "$((beside / rounds))" "-"
    ratio "fire, properties = minimal" "$fm" "direct, the same parts (id,mandatory), w300 c2, same rounds" \
        "$((minimal / rounds))" ">= 0.9x"
    ratio "fire, properties = minimal" "$fm" "best direct, minimal: the physical limit" "${bm[0]}" "report"
}

# spool: the rate the local spool takes requests at (group commit: one
# write and one fdatasync for what came meanwhile), on a bridge whose
# broker is away for good (its URI a port nothing listens on), the same
# document and connections as fire; against what the broker confirms
# (fire, and the best direct client with the bridge's properties, both of
# this run). It must be at least as fast, or an outage backs up.
run_spool() {
    local sport sdir spid dead bb
    sport=$(free_port $((bridge_port + 2)))
    dead=$(free_port 5990)
    sdir=$out/spool
    rm -rf "$sdir"
    want_health=503 spawn_bridge "$sport" "amqp://guest:guest@127.0.0.1:$dead/%2f" \
        "$out/bridge-spool.log" 10 BRIDGE_SPOOL_DIR="$sdir" BRIDGE_ROUTE_INGEST_SPOOL=yes \
        BRIDGE_SPOOL_MAX_SIZE=4096MiB
    spid=$spawned
    local keep=$bridge_pid
    bridge_pid=$spid # timed() measures this bridge
    say "spool: the bridge with its broker away, every request to the spool"
    wrk_row "spool, broker away (group commit)" 1 300 post.lua "http://127.0.0.1:$sport/ingest" \
        - - -
    bridge_pid=$keep
    local n
    n=$(curl -s "http://127.0.0.1:$sport/metrics" | awk '$1 == "bridge_spool_appended_total" { print $2 }')
    say "spool: ${n:-0} requests made durable; $(du -sh "$sdir" | cut -f1) on disk"
    kill -TERM "$spid" 2>/dev/null || true
    wait "$spid" 2>/dev/null || true
    rm -rf "$sdir"
    spool_rate=$(mean_of "spool, broker away" 2)
    read -r -a bb < <(best all)
    ratio "spool, broker away" "$spool_rate" "fire: what the broker confirms through the bridge, same run" \
        "$fire_rate" ">= 1x"
    ratio "spool, broker away" "$spool_rate" "best direct, the bridge's properties (w${bb[1]} c${bb[2]}): the broker's limit" \
        "${bb[0]}" ">= 1x"
}

# rpc: the direct client through direct reply-to against the same echo
# worker, transient (as rpc routes now are by default), windows 100 and 300;
# and once persistent, what the old default cost. The bridge at 100
# connections (the issue's comparison).
run_rpc() {
    local r best_t=0 best_n=-
    local v
    for v in "100 1" "100 2" "300 2"; do
        read -r w c <<<"$v"
        say "ceiling rpc transient window=$w conns=$c"
        ceiling_run rpc rpc "$w" "$c" all -t
        row "direct rpc, transient (w$w c$c)" "${cr[0]}" "${cr[1]}" "${cr[2]}" "${cr[3]}" - - -
        if [ "${cr[0]}" -gt "$best_t" ]; then best_t=${cr[0]}; best_n="w$w c$c"; fi
    done
    say "ceiling rpc persistent window=100 conns=2"
    ceiling_run rpc rpc 100 2 all
    row "direct rpc, persistent (w100 c2)" "${cr[0]}" "${cr[1]}" "${cr[2]}" "${cr[3]}" - - -
    say "bridge rpc"
    wrk_row rpc 1 100 post.lua "$bridge/rpc" "best direct transient rpc" "$best_t" -
    local rr
    rr=$(awk -F'\t' '$1 == "rpc" {print $2}' "$out/results.tsv")
    ratio "rpc (100 connections)" "$rr" "best direct rpc, transient ($best_n)" "$best_t" ">= 0.8x"
    # The same direct rpc client (window 100, 2 connections) beside the
    # cores the bridge and wrk took during rpc.
    local load burner
    load=$(awk -F'\t' '$1 == "rpc" { printf "%.2f", $3 + $5 }' "$out/cpu.tsv")
    say "ceiling rpc transient window=100 conns=2 beside $load cores of load"
    "$here/$build/bench-burn" "$load" "$((grid_secs + 2))" >>"$out/burn.txt" &
    burner=$!
    tag="beside $load cores" ceiling_run rpc rpc 100 2 all -t
    wait "$burner" || die "bench-burn failed"
    row "direct rpc, transient (w100 c2), beside $load cores" "${cr[0]}" "${cr[1]}" "${cr[2]}" "${cr[3]}" - - -
    ratio "rpc (100 connections)" "$rr" "direct rpc, transient (w100 c2), beside the cores the bridge and wrk took (bench-burn)" \
        "${cr[0]}" "-"
}

# The seeds' own test: wrk -t4 -c1000 -s post.lua, fire and blocking (rpc),
# beside the figures the seed article reports for Tornado/gevent + Celery.
run_seeds() {
    say "seeds: wrk -t4 -c1000 fire"
    wrk_row "seeds fire (wrk -t4 -c1000)" 4 1000 post.lua "$bridge/ingest" \
        "Tornado/gevent + Celery, fire" 253 ingest
    say "seeds: wrk -t4 -c1000 rpc"
    wrk_row "seeds rpc (wrk -t4 -c1000)" 4 1000 post.lua "$bridge/rpc" \
        "Tornado/gevent + Celery, blocking" 7.4 -
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
    spawn_bridge "$qport" "$curis" "$out/bridge-quorum.log" 20 \
        BRIDGE_ROUTE_INGEST_QUEUE=ingest_quorum BRIDGE_ROUTE_INGEST_ROUTING_KEY=ingest_quorum \
        BRIDGE_ROUTE_INGEST_QUEUE_TYPE=quorum
    local qpid=$spawned
    local r
    metrics_snap "http://127.0.0.1:$qport" "$out/metrics-quorum-0.txt"
    read -r -a r < <(wrk_run quorum 1 300 "$secs" post.lua "http://127.0.0.1:$qport/ingest")
    sed -i '$d' "$out/cpu.tsv" # it measured the other bridge and node: not this run
    sleep 1
    metrics_snap "http://127.0.0.1:$qport" "$out/metrics-quorum-1.txt"
    local ok=$((r[0] - r[2])) d=0 prev=-1 same=0 acked
    acked=$(($(confirmed "$out/metrics-quorum-1.txt") - $(confirmed "$out/metrics-quorum-0.txt")))
    # A quorum queue's message count comes from its replicas' metrics, which
    # lag: read it until it covers the confirmed count or has stood still 3 s.
    for _ in $(seq 30); do
        sleep 1
        d=$("$here/tests/cluster.sh" ctl "$cluster_dir" 1 list_queues -q name messages 2>/dev/null |
            awk '$1 == "ingest_quorum" {print $2}') || d=
        d=${d:-0}
        [ "$d" -lt "$acked" ] || break
        if [ "$d" = "$prev" ]; then
            same=$((same + 1))
            [ "$same" -lt 3 ] || break
        else
            same=0
        fi
        prev=$d
    done
    say "quorum: $ok answered 2xx, $acked confirmed, $d in queue ingest_quorum"
    row "fire, quorum queue (3 nodes)" "$(rate "${r[0]}" "${r[2]}" "${r[1]}")" "${r[3]}" "${r[4]}" \
        "$((r[2] + r[5]))" "$((acked > d ? acked - d : 0))" "fire, classic" \
        "$fire_rate"
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
        echo "The broker's limit: the direct client (rabbitmq-c, confirms on, persistent, ${grid_secs} s each),"
        echo "with minimal messages (content_type, delivery_mode) and with the bridge's properties"
        echo "(+ message_id, timestamp, app_id, type, two headers, mandatory):"
        echo
        echo "| properties | window | connections | msg/s | p50 ms | p99 ms | errors | broker µs/msg |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|"
        awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n",
            ($1 == "none" ? "minimal" : "the bridge'"'"'s"), $2, $3, $4, $5, $6, $7, $8 }' "$out/grid.tsv"
        echo
        echo "What each part costs (window 300, one connection, interleaved rounds; vs the minimal message):"
        echo
        echo "| parts | msg/s per round | mean | vs minimal | broker µs/msg | vs minimal |"
        echo "|---|---|---:|---:|---:|---:|"
        awk -F'\t' '
            { if (!($1 in n)) order[++k] = $1; n[$1]++; r[$1] += $3; u[$1] += $4
              runs[$1] = runs[$1] (runs[$1] == "" ? "" : " / ") $3 }
            END {
                if (n["none"] == 0) exit
                r0 = r["none"] / n["none"]; u0 = u["none"] / n["none"]
                for (i = 1; i <= k; i++) {
                    p = order[i]; mr = r[p] / n[p]; mu = u[p] / n[p]
                    printf "| %s | %s | %.0f | %.2fx | %.0f | %.2fx |\n", (p == "none" ? "minimal" : p),
                        runs[p], mr, (r0 > 0 ? mr / r0 : 0), mu, (u0 > 0 ? mu / u0 : 0)
                }
            }' "$out/parts.tsv"
        echo
        echo "The bridge against its limits (issue 14's targets):"
        echo
        echo "| bridge | value | against | its value | ratio | target |"
        echo "|---|---:|---|---:|---:|---|"
        awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6 }' "$out/ratios.tsv"
        echo
        if [ -n "${fire_phases:-}" ]; then
            echo "Where a fire request's time goes on the bridge (mean ms, bridge_request_phase_seconds):"
            echo "$fire_phases" | awk '{ s = ""; for (i = 1; i < NF; i += 2) s = s (s == "" ? "" : ", ") $i " " $(i + 1); print s "." }'
            echo
            echo "Bytes per read of the broker (a 1 KB message is about 1.2 KB on the wire): the bridge's"
            echo "publishes during fire ${fire_reads:-?}, the direct client's (window 300, 2 connections) ${direct_reads:-?}."
            echo
        fi
        echo "CPU per request (µs of CPU, user + system, over the requests or messages of the run), cores kept busy,"
        echo "and cores stolen (the hypervisor's steal time: what other tenants took while this machine wanted it):"
        echo
        echo "| run | req/s | broker µs | bridge µs | echo worker µs | load generator µs | cores: broker, bridge, echo, load | cores stolen |"
        echo "|---|---:|---:|---:|---:|---:|---|---:|"
        awk -F'\t' '
            FILENAME == ARGV[1] { rate[$1] = $2; next }
            ($1 in rate) && rate[$1] > 0 {
                r = rate[$1]
                printf "| %s | %s | %.0f | %.0f | %.0f | %.0f | %s, %s, %s, %s | %s |\n", $1, r,
                    $2 * 1e6 / r, $3 * 1e6 / r, $4 * 1e6 / r, $5 * 1e6 / r, $2, $3, $4, $5, $6
            }' "$out/rates.tsv" "$out/cpu.tsv"
        echo
        if [ -n "${xml_rows:-}" ]; then
            # "NAME: A ms (CLASS) vs B ms, xR", a list item each
            while IFS= read -r line; do echo "- $line"; done <<<"$xml_rows"
            echo
        fi
        if [ -s "$out/profile.txt" ]; then
            echo "Instructions per request (make bench-profile, callgrind, one worker):"
            echo
            echo '```'
            grep -v '^profile:\|^broker.sh:' "$out/profile.txt"
            echo '```'
            echo
        fi
        echo "c10k: bridge peak RSS ${rss_kb} kB (a bridge started for c10k; the one that ran the workloads before"
        echo "it peaked at ${run_rss_kb} kB). ${secs} s a workload; pong wrk -t1 -c100, fire wrk -t1 -c300,"
        echo "rpc wrk -t1 -c100, c10k wrk -t2 -c10000, quorum as fire. Machine: $machine; $(date -u +%Y-%m-%d)."
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
