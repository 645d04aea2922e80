# suites.sh - sourced by the runners of the C suites (tests/integration/run.sh,
# tests/cluster/run.sh) once their broker is up: what every suite is told
# beyond its broker, and the loop that runs the suites.
# shellcheck shell=bash

# suite_env HERE BUILD: the harness's programs (tests/lib/harness.h) for the
# build BUILD of the tree at HERE, and the sanitizers' options: a report fails
# the bridge's exit status, which the tests check; leaks count.
suite_env() {
    export IT_BRIDGE_BIN="$1/$2/ingest-bridge"
    export IT_ECHO_BIN="$1/$2/echo-worker"
    export IT_BROKER_SH="$1/tests/broker.sh"
    export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=23}"
    export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
}

# run_suites HERE WHAT TEST...: each test program (a path from HERE) in turn,
# a line naming it and WHAT it runs against before, its time after; 1 when
# any of them failed, after all have run.
run_suites() {
    local here=$1 what=$2 t t0 rc=0
    shift 2
    for t in "$@"; do
        echo "== $t ($what)"
        t0=$SECONDS
        "$here/$t" || rc=1
        echo "== $t: $((SECONDS - t0))s"
    done
    return "$rc"
}
