#!/usr/bin/env bash
# readme.sh RESULTS README - put the rows a fault-suite run measured (RESULTS,
# written through result_row() by `make test-faults`) into README between the
# markers <!-- RELIABILITY:BEGIN --> and <!-- RELIABILITY:END -->, with the
# machine and date of the run. The table is produced by the suite, never
# edited by hand: `make reliability` runs the suite and this.
set -euo pipefail
results=${1:?usage: readme.sh RESULTS README}
readme=${2:?usage: readme.sh RESULTS README}
[ -s "$results" ] || { echo "readme.sh: $results is empty: run make test-faults first" >&2; exit 1; }
if ! grep -q '<!-- RELIABILITY:BEGIN -->' "$readme" || ! grep -q '<!-- RELIABILITY:END -->' "$readme"; then
    echo "readme.sh: the RELIABILITY markers are missing from $readme" >&2
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
' "$readme" >"$readme.new"
mv "$readme.new" "$readme"
echo "readme.sh: $(wc -l <"$results") rows into $readme"
