#!/usr/bin/env bash
# results.sh RESULTS TARGET [README] - put the rows a fault-suite run
# measured (RESULTS, written through result_row() by `make test-faults`) into
# TARGET (tests/faults/RESULTS.md, next to the suites) between the markers
# <!-- RELIABILITY:BEGIN --> and <!-- RELIABILITY:END -->, with the machine
# and date of the run; and the rows of the reloads and the upgrade under
# load (their titles begin with SIGHUP, SIGUSR2) into
# README between <!-- HANDOVER:BEGIN --> and <!-- HANDOVER:END -->. The
# tables are produced by the suite, never edited by hand: `make reliability`
# runs the suite and this.
set -euo pipefail
results=${1:?usage: results.sh RESULTS TARGET [README]}
target=${2:?usage: results.sh RESULTS TARGET [README]}
readme=${3:-}
# shellcheck source=tests/lib/markers.sh
. "$(dirname "$0")/../lib/markers.sh"
[ -s "$results" ] || { echo "results.sh: $results is empty: run make test-faults first" >&2; exit 1; }
if ! marked "$target" RELIABILITY; then
    echo "results.sh: the RELIABILITY markers are missing from $target" >&2
    exit 1
fi

table=$(mktemp)
trap 'rm -f "$table"' EXIT
{
    echo "<!-- RELIABILITY:BEGIN -->"
    # shellcheck source=/dev/null # the machine's own os-release
    echo "Measured by \`make reliability\` on $(date -u +%Y-%m-%d), $(nproc) cores, $(. /etc/os-release && echo "$PRETTY_NAME"):"
    echo
    echo "| fault or input | outcome measured |"
    echo "|---|---|"
    cat "$results"
    echo "<!-- RELIABILITY:END -->"
} >"$table"
replace_marked "$target" RELIABILITY "$table"
echo "results.sh: $(wc -l <"$results") rows into $target"

[ -n "$readme" ] || exit 0
if ! marked "$readme" HANDOVER; then
    echo "results.sh: the HANDOVER markers are missing from $readme" >&2
    exit 1
fi
rows=$(grep -E '^\| (SIGHUP|SIGUSR2)' "$results" || true)
n=$(printf '%s' "$rows" | grep -c '^|' || true)
if [ "$n" -lt 3 ]; then
    echo "results.sh: $n rows of a reload or an upgrade in $results, expected 3" >&2
    exit 1
fi
{
    echo "<!-- HANDOVER:BEGIN -->"
    echo "| under load | outcome measured by \`make reliability\`, $(date -u +%Y-%m-%d) |"
    echo "|---|---|"
    printf '%s\n' "$rows"
    echo "<!-- HANDOVER:END -->"
} >"$table"
replace_marked "$readme" HANDOVER "$table"
echo "results.sh: $n rows into $readme"
