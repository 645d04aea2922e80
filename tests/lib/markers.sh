# markers.sh - sourced by the scripts that write a generated table into a
# markdown file between two markers, <!-- NAME:BEGIN --> and
# <!-- NAME:END --> (tests/bench/run.sh, tests/faults/results.sh).
# shellcheck shell=bash

# marked FILE NAME: true when FILE holds both of NAME's markers.
marked() {
    grep -q "<!-- $2:BEGIN -->" "$1" && grep -q "<!-- $2:END -->" "$1"
}

# replace_marked FILE NAME TEXT: FILE's lines from NAME's BEGIN marker to
# its END marker become the lines of the file TEXT (which holds the markers
# again); the rest of FILE stays as it was.
replace_marked() {
    awk -v table="$3" -v begin="<!-- $2:BEGIN -->" -v end="<!-- $2:END -->" '
        index($0, begin) { while ((getline line < table) > 0) print line; skip = 1; next }
        index($0, end) { skip = 0; next }
        !skip { print }
    ' "$1" >"$1.new"
    mv "$1.new" "$1"
}
