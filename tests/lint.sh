#!/usr/bin/env bash
# lint.sh - the files no compiler reads: YAML (yamllint, .yamllint), every
# shell script (shellcheck), the man page (groff -ww: a warning fails), and
# that the man page describes every key of bridge/config.c's tables.
# The Dockerfile has no linter here (hadolint is not packaged by Debian);
# tests/docker/check.sh checks what it says instead.
set -euo pipefail
cd "$(dirname "$0")/.."

CHECK_NAME=lint
# shellcheck source=tests/lib/check.sh
. tests/lib/check.sh
for tool in yamllint shellcheck groff; do
    command -v "$tool" >/dev/null || fail "$tool missing: make deps"
done

# Our files, never what a build or a broker node left under build/.
ours() { find . -path ./build -prune -o -path ./.git -prune -o -type f "$@" -print | sort; }

mapfile -t yaml < <(ours \( -name '*.yml' -o -name '*.yaml' -o -name .yamllint \))
[ ${#yaml[@]} -gt 0 ] || fail "no YAML files found"
yamllint --strict "${yaml[@]}" || fail "yamllint"
ok "yamllint --strict, ${#yaml[@]} files"

# Shell scripts by their #! line, whatever their name, and sourced *.sh.
# shellcheck disable=SC2016 # $1 is the inner shell's argument
mapfile -t scripts < <(ours \( -name '*.sh' -o -perm -u+x -exec sh -c \
    'head -n 1 "$1" | grep -Eq "^#!(/usr)?/bin/(env )?(ba)?sh"' _ {} \; \))
[ ${#scripts[@]} -ge 5 ] || fail "found only ${#scripts[@]} shell scripts: ${scripts[*]}"
shellcheck -x "${scripts[@]}" || fail "shellcheck"
ok "shellcheck, ${#scripts[@]} scripts: ${scripts[*]#./}"

man=bridge/ingest-bridge.8
warnings=$(groff -man -Tutf8 -ww -z "$man" 2>&1)
[ -z "$warnings" ] || fail "groff: $warnings"
ok "groff -man -ww $man: no warnings"

# Each key table of config.c against the man page's subsection of that
# section: every key there as a ".TP / .B key" item.
check_keys() { # check_keys TABLE SUBSECTION_TITLE
    local keys key text n=0
    keys=$(sed -n "/^static const struct key_def $1\[/,/^};/p" bridge/config.c |
        sed -n 's/^ *\[[A-Z_]*\] = {"\([a-z_]*\)".*/\1/p')
    [ -n "$keys" ] || fail "no keys found in bridge/config.c's $1"
    text=$(T=".SS \"$2\"" awk '$0 == ENVIRON["T"] {on = 1; next} /^\.S[SH] / {on = 0} on' "$man")
    [ -n "$text" ] || fail "$man: no subsection $2"
    for key in $keys; do
        grep -A1 -x '\.TP' <<<"$text" | grep -qx "\\.B $key" || fail "$man: $2 does not describe key $key"
        n=$((n + 1))
    done
    ok "$man describes the $n keys of $2"
}
check_keys http_keys '[http]'
check_keys amqp_keys '[amqp]'
check_keys log_keys '[log]'
check_keys route_keys '[route \fIname\fP]'
say "$checks checks passed"
