#!/usr/bin/env bash
# run.sh BUILD TEST... - run the cluster test programs against a private
# three-node RabbitMQ cluster started for this run (tests/cluster.sh, data
# under BUILD/cluster.<pid>), stopped and removed afterwards whatever happens.
#
# Passed to the tests: the harness's IT_* variables (tests/lib/harness.h),
# node 1 standing for "the broker", and IT_CLUSTER_DIR / IT_CLUSTER_SH.
# IT_RESULTS, if set, names a file the test writes its figures to.
set -euo pipefail

build=${1:?usage: run.sh BUILD TEST...}
shift
[ $# -gt 0 ] || { echo "run.sh: no cluster test programs"; exit 1; }
here=$(cd "$(dirname "$0")/../.." && pwd)
cl="$here/tests/cluster.sh"

# A directory of its own per run: two runs side by side never meet.
export IT_CLUSTER_DIR="$here/$build/cluster.$$"
export IT_CLUSTER_SH="$cl"
rm -rf "$IT_CLUSTER_DIR"

# shellcheck disable=SC2317 # reached through the trap below
cleanup() {
    local rc=$?
    "$cl" stop "$IT_CLUSTER_DIR" || true
    if [ "$rc" -ne 0 ] && [ -n "${IT_KEEP:-}" ]; then
        echo "run.sh: cluster data kept in $IT_CLUSTER_DIR"
    else
        rm -rf "$IT_CLUSTER_DIR"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start=$SECONDS
CLUSTER_NAME="bridgecl-$$" "$cl" start "$IT_CLUSTER_DIR" 3
echo "== cluster up in $((SECONDS - start))s"
read -r _ node port dir < <("$cl" nodes "$IT_CLUSTER_DIR" | head -n1)

# shellcheck source=tests/lib/suites.sh
. "$here/tests/lib/suites.sh"
suite_env "$here" "$build"
export IT_BROKER_PORT="$port"
export IT_BROKER_NODE="$node"
export BROKER_DIR="$dir"

rc=0
run_suites "$here" "cluster in $IT_CLUSTER_DIR" "$@" || rc=1
echo "== cluster run: $((SECONDS - start))s in all"
exit $rc
