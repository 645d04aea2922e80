#!/usr/bin/env bash
# results.sh RESULTS TARGET - put the rows a fault-suite run measured (RESULTS,
# written through result_row() by `make test-faults`) into TARGET
# (tests/faults/RESULTS.md, next to the suites) between the markers
# <!-- RELIABILITY:BEGIN --> and <!-- RELIABILITY:END -->, with the machine
# and date of the run. The table is produced by the suite, never edited by
# hand: `make reliability` runs the suite and this.
set -euo pipefail
results=${1:?usage: results.sh RESULTS TARGET}
target=${2:?usage: results.sh RESULTS TARGET}
[ -s "$results" ] || { echo "results.sh: $results is empty: run make test-faults first" >&2; exit 1; }
if ! grep -q '<!-- RELIABILITY:BEGIN -->' "$target" || ! grep -q '<!-- RELIABILITY:END -->' "$target"; then
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
awk -v table="$table" '
    /<!-- RELIABILITY:BEGIN -->/ { while ((getline line < table) > 0) print line; skip = 1; next }
    /<!-- RELIABILITY:END -->/ { skip = 0; next }
    !skip { print }
' "$target" >"$target.new"
mv "$target.new" "$target"
echo "results.sh: $(wc -l <"$results") rows into $target"
