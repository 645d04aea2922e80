#!/usr/bin/env bash
# run.sh BUILD TEST... - run the integration test programs against ONE private
# RabbitMQ node started for this run (tests/broker.sh, data under
# BUILD/it-broker), stopped afterwards whatever happens.
#
# Passed through to the tests (tests/lib/harness.h):
#   IT_BRIDGE_WRAP  command prefix for every bridge the tests start, split on
#                   blanks (`make test-valgrind`: valgrind ...); its exit
#                   status counts like the bridge's
#   IT_TIME_SCALE   multiplies the tests' bounds on how fast the bridge
#                   starts, stops and answers (default 1)
#   IT_LOG_LEVEL    the bridge's log level (default info)
#   IT_KEEP         keep the temporary directory (configs, logs)
# and, from here: IT_TLS_DIR (the run's certificates, tests/tls-certs.sh) and
# IT_BROKER_TLS_PORT (the node's amqps:// listener, which asks clients for a
# certificate of that CA).
set -euo pipefail

build=${1:?usage: run.sh BUILD TEST...}
shift
[ $# -gt 0 ] || { echo "run.sh: no integration test programs"; exit 1; }
here=$(cd "$(dirname "$0")/../.." && pwd)

# IT_BROKER_DIR: another state directory (make test-faults keeps its node apart).
export BROKER_DIR="${IT_BROKER_DIR:-$here/$build/it-broker}"
broker="$here/tests/broker.sh"

# A node left over by an interrupted run: stop it before wiping its data.
if [ -f "$BROKER_DIR/node.env" ]; then
    "$broker" stop || true
fi
rm -rf "$BROKER_DIR"

# shellcheck disable=SC2317 # reached through the trap below
cleanup() {
    local rc=$?
    "$broker" stop || true
    rm -rf "$BROKER_DIR.tls"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Fresh certificates for the run (tests/tls-certs.sh): the node gets a TLS
# listener with them, the TLS suite an HTTPS bridge.
tls_dir="$BROKER_DIR.tls"
rm -rf "$tls_dir"
"$here/tests/tls-certs.sh" "$tls_dir"
export BROKER_TLS_DIR="$tls_dir"
"$broker" start
eval "$("$broker" env)"

# What the tests need to know; they never guess ports or names.
# shellcheck source=tests/lib/suites.sh
. "$here/tests/lib/suites.sh"
suite_env "$here" "$build"
export IT_BROKER_PORT="$BROKER_PORT"
export IT_BROKER_NODE="$BROKER_NODE"
export IT_BROKER_TLS_PORT="$BROKER_TLS_PORT"
export IT_TLS_DIR="$tls_dir"
export BROKER_DIR

rc=0
run_suites "$here" "broker $BROKER_NODE on port $BROKER_PORT" "$@" || rc=1
exit $rc
