# check.sh - sourced by the shell checks (tests/docker, tests/install, lint):
# one way to report. Set CHECK_NAME before sourcing; `checks` counts ok.
# shellcheck shell=bash
checks=0
say() { printf '%s: %s\n' "${CHECK_NAME:?}" "$*"; }
fail() {
    say "FAIL: $*" >&2
    exit 1
}
ok() {
    checks=$((checks + 1))
    say "ok: $*"
}
