#!/usr/bin/env bash
# tests/fuzz/run.sh - build every libFuzzer target and run each for a while.
#
#   tests/fuzz/run.sh OUTDIR SECONDS
#
# Builds tests/fuzz/fuzz_<target>.c with the module it tests into
# OUTDIR/fuzz_<target> (clang, -fsanitize=fuzzer,address,undefined), then runs
# each target for SECONDS on a copy of tests/fuzz/corpus/<target>/ in
# OUTDIR/<target>/corpus (the committed seeds are never written to), with
# -timeout=10 -rss_limit_mb=2048; xmlcost, whose findings are slow checks
# of 1 MiB documents (~10 ms plain), with -timeout=2. One summary line per target; exit 1 if any
# target crashed, leaked, broke an invariant, timed out or ran out of memory,
# naming the input that did it (replay it: OUTDIR/fuzz_<target> FILE).
#
# Coverage instrumentation goes to the bridge's sources only: the fuzzers' own
# checking code is built with the sanitizers but gives libFuzzer no signal.
#
# Knobs: FUZZ_TARGETS="xmlcheck xmlcost config hdrmap" (a subset), FUZZ_CC (clang),
# WERROR=1 (-Werror, as in CI).
# Needs Debian's clang and libclang-rt-dev (libFuzzer's runtime lives there,
# not in clang): `make deps`.
set -euo pipefail

if [ $# -ne 2 ] || ! [[ $2 =~ ^[0-9]+$ ]] || [ "$2" -lt 1 ]; then
    echo "usage: $0 OUTDIR SECONDS" >&2
    exit 2
fi
root=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)
seconds=$2
cc=${FUZZ_CC:-clang}
targets=${FUZZ_TARGETS:-xmlcheck xmlcost config hdrmap}

# What each target links besides its fuzzer: the bridge sources and the
# pkg-config packages they need.
sources() {
    case $1 in
    xmlcheck | xmlcost) echo "bridge/xmlcheck.c bridge/base/seed.c" ;;
    config)
        echo "bridge/config.c bridge/config_keys.c bridge/config_read.c bridge/config_value.c" \
            "bridge/config_route.c bridge/base/template.c" \
            "bridge/base/errbuf.c bridge/base/log.c amqp/uri.c"
        ;;
    hdrmap) echo "bridge/base/hdrmap.c http/reqid.c bridge/base/seed.c" ;;
    *) echo "unknown target $1" >&2; return 1 ;;
    esac
}
packages() {
    case $1 in
    xmlcheck | xmlcost) echo "libxml-2.0" ;;
    config) echo "inih librabbitmq" ;;
    hdrmap) echo "" ;;
    esac
}

warn="-Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 -Wundef"
[ -n "${WERROR:-}" ] && warn="$warn -Werror"
cflags="-std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer -fno-sanitize-recover=all $warn
        -I$root -I$root/tests/fuzz"
san=address,undefined

# clang without libclang-rt-dev compiles but cannot link -fsanitize=fuzzer.
command -v "$cc" >/dev/null || { echo "fuzz: $cc missing: make deps (clang)" >&2; exit 1; }
probe=$out/.probe
printf '#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' >"$probe.c"
if ! "$cc" -fsanitize=fuzzer,$san -o "$probe" "$probe.c" 2>"$probe.err"; then
    echo "fuzz: $cc cannot link libFuzzer (-fsanitize=fuzzer): make deps (libclang-rt-dev)" >&2
    cat "$probe.err" >&2
    exit 1
fi
rm -f "$probe" "$probe.c" "$probe.err"

# xmlcost measures time: libFuzzer's tracing of every comparison (its
# default) made the scan of 1 MiB 250 times slower (2.5 s a run, 10 ms
# without), so its finding would be the fuzzer's own cost. Edges only.
coverage_of() {
    case $1 in
    xmlcost) echo "-fno-sanitize-coverage=trace-cmp" ;;
    esac
}

build() {
    local t=$1 objs=() pk o pcflags="" pclibs=""
    pk=$(packages "$t")
    if [ -n "$pk" ]; then
        # shellcheck disable=SC2086 # one word per package
        pcflags=$(pkg-config --cflags $pk)
        # shellcheck disable=SC2086
        pclibs=$(pkg-config --libs $pk)
    fi
    mkdir -p "$out/obj/$t"
    # shellcheck disable=SC2086
    "$cc" $cflags $pcflags -fsanitize=$san -c -o "$out/obj/$t/fuzz_$t.o" \
        "$root/tests/fuzz/fuzz_$t.c"
    objs+=("$out/obj/$t/fuzz_$t.o")
    for s in $(sources "$t"); do
        o=$out/obj/$t/$(basename "$s" .c).o
        # shellcheck disable=SC2086,SC2046 # words each; coverage_of: none or one
        "$cc" $cflags $pcflags -fsanitize=fuzzer-no-link,$san $(coverage_of "$t") -c -o "$o" "$root/$s"
        objs+=("$o")
    done
    # shellcheck disable=SC2086
    "$cc" -fsanitize=fuzzer,$san -o "$out/fuzz_$t" "${objs[@]}" $pclibs
}

for t in $targets; do
    echo "fuzz: build $out/fuzz_$t"
    build "$t"
done

# Seconds one input may take: a slow check is what xmlcost looks for.
timeout_of() {
    case $1 in
    xmlcost) echo 2 ;;
    *) echo 10 ;;
    esac
}

# A number from libFuzzer's final stats in LOG.
final_stat() { sed -n "s/^stat::$2: *//p" "$1" | tail -n1; }

failed=0
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
for t in $targets; do
    dir=$out/$t
    rm -rf "$dir"
    mkdir -p "$dir/corpus"
    cp -R "$root/tests/fuzz/corpus/$t/." "$dir/corpus/"
    dict=()
    [ -f "$root/tests/fuzz/$t.dict" ] && dict=("-dict=$root/tests/fuzz/$t.dict")
    start=$SECONDS
    rc=0
    "$out/fuzz_$t" -max_total_time="$seconds" -timeout="$(timeout_of "$t")" -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$dir/" "${dict[@]}" "$dir/corpus" \
        >"$dir/fuzz.log" 2>&1 || rc=$?
    took=$((SECONDS - start))

    last=$(grep -E '^#[0-9]+.*cov: ' "$dir/fuzz.log" | tail -n1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([^ ]*\).*/\1/p' <<<"$last")
    repro=$(find "$dir" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' -o \
        -name 'timeout-*' -o -name 'oom-*' \) | head -n1)
    if [ "$rc" -ne 0 ] || [ -n "$repro" ]; then
        verdict=FAILED
        failed=1
    else
        verdict=ok
    fi
    printf 'fuzz: %-8s %-6s %10s runs %7s/s  cov %s  ft %s  corpus %s  %d s\n' "$t" "$verdict" \
        "$(final_stat "$dir/fuzz.log" number_of_executed_units)" \
        "$(final_stat "$dir/fuzz.log" average_exec_per_sec)" "${cov:-?}" \
        "${ft:-?}" "${corp:-?}" "$took"
    if [ "$verdict" = FAILED ]; then
        # The sanitizer's or the invariant's report, then the input.
        grep -E -m1 -A20 'ERROR: |invariant failed|runtime error|Fuzzer: deadly|libFuzzer: (timeout|out-of-memory)' \
            "$dir/fuzz.log" | sed 's/^/    /' || true
        echo "fuzz: $t: log $dir/fuzz.log"
        echo "fuzz: $t: reproducer ${repro:-(none written, exit $rc)}"
        [ -n "$repro" ] && echo "fuzz: $t: replay with $out/fuzz_$t $repro"
    fi
done
exit $failed
