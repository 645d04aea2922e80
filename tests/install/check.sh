#!/usr/bin/env bash
# check.sh [BUILD] - `make install` and `make uninstall` into temporary
# directories: the files, their modes, the installed binary checking the
# installed config, an existing config kept, the systemd unit (hardening,
# stop timeout, systemd-analyze verify when systemd is there), the man page.
set -euo pipefail

build=${1:-build}
here=$(cd "$(dirname "$0")/../.." && pwd)
cd "$here"
make=${MAKE:-make}
CHECK_NAME=install/check
# shellcheck source=tests/lib/check.sh
. tests/lib/check.sh

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
minstall() { "$make" --no-print-directory BUILD="$build" "$@" >"$tmp/make.log" 2>&1 || {
    cat "$tmp/make.log"
    fail "make $*"
}; }

# ---- DESTDIR, default PREFIX -------------------------------------------------

dest=$tmp/dest
minstall install DESTDIR="$dest"
root=$dest/usr/local
unit=$root/lib/systemd/system/ingest-bridge.service
expect() { # expect MODE FILE
    [ -f "$2" ] || fail "make install did not write $2"
    [ "$(stat -c %a "$2")" = "$1" ] || fail "$2: mode $(stat -c %a "$2"), expected $1"
}
expect 755 "$root/bin/ingest-bridge"
expect 755 "$root/bin/ingest-bridge-echo-worker"
expect 644 "$root/etc/ingest-bridge/bridge.ini"
expect 644 "$root/share/man/man8/ingest-bridge.8"
expect 644 "$unit"
expect 644 "${unit%.service}.socket"
cmp -s bridge.ini "$root/etc/ingest-bridge/bridge.ini" || fail "the installed config is not bridge.ini"
cmp -s "$build/ingest-bridge" "$root/bin/ingest-bridge" || fail "the installed binary is not $build/ingest-bridge"
n=$(find "$dest" -type f | wc -l)
[ "$n" = 6 ] || fail "make install wrote $n files, expected 6: $(find "$dest" -type f)"
ok "make install DESTDIR: 6 files under /usr/local, modes 755/644"

out=$("$root/bin/ingest-bridge" -t -c "$root/etc/ingest-bridge/bridge.ini" 2>&1) ||
    fail "installed ingest-bridge -t on the installed config: $out"
[ "$out" = "config ok" ] || fail "installed ingest-bridge -t said: $out"
"$root/bin/ingest-bridge" -V | grep -q '^ingest-bridge [0-9]' || fail "installed ingest-bridge -V"
"$root/bin/ingest-bridge-echo-worker" -h | grep -q 'echo-worker' || fail "installed echo worker -h"
ok "installed ingest-bridge -t -c installed bridge.ini: config ok; -V and the echo worker's -h answer"

# The unit names the installed paths (without DESTDIR), nothing left unfilled.
grep -q '@[A-Z]*@' "$unit" && fail "$unit: placeholders left: $(grep '@[A-Z]*@' "$unit")"
grep -qx 'ExecStart=/usr/local/bin/ingest-bridge -c /usr/local/etc/ingest-bridge/bridge.ini' "$unit" ||
    fail "$unit: ExecStart is not the installed binary and config: $(grep ExecStart= "$unit")"
reload="ExecReload=/bin/kill -HUP \$MAINPID"
for line in Type=notify NotifyAccess=all User=ingest-bridge NoNewPrivileges=yes \
    ProtectSystem=strict ProtectHome=yes PrivateTmp=yes Restart=on-failure KillSignal=SIGTERM \
    "$reload"; do
    grep -qxF "$line" "$unit" || fail "$unit: no $line"
done
ok "unit: installed paths, Type=notify, User, hardening, Restart=on-failure, SIGTERM, ExecReload"
# The socket unit listens where the shipped config does.
sock=${unit%.service}.socket
listen=$(sed -n 's/^listen *= *\([^ ;]*\).*/\1/p' bridge.ini)
grep -qx "ListenStream=$listen" "$sock" || fail "$sock: ListenStream is not bridge.ini's listen ($listen)"
ok "socket unit: ListenStream=$listen, as bridge.ini's listen"

# The stop timeout outlasts every timeout of the shipped config: a stop
# waits for requests up to [http] timeout or their route's timeout.
to_ms() { # 30s, 500ms, 2m -> milliseconds
    case $1 in
    *ms) echo "${1%ms}" ;;
    *s) echo $((${1%s} * 1000)) ;;
    *m) echo $((${1%m} * 60000)) ;;
    *) fail "cannot read duration $1" ;;
    esac
}
stop=$(sed -n 's/^TimeoutStopSec=//p' "$unit")
stop_ms=$(to_ms "$stop")
longest=0
while read -r t; do
    ms=$(to_ms "$t")
    [ "$ms" -gt "$longest" ] && longest=$ms
done < <(sed -n 's/^timeout *= *\([0-9]*m\{0,1\}s\{0,1\}\).*/\1/p' bridge.ini)
[ "$longest" -gt 0 ] || fail "no timeout found in bridge.ini"
[ "$stop_ms" -gt "$longest" ] || fail "TimeoutStopSec=$stop is not longer than bridge.ini's longest timeout (${longest} ms)"
ok "TimeoutStopSec=$stop outlasts bridge.ini's longest timeout ($((longest / 1000)) s)"

# An existing config is kept; uninstall removes all but it.
echo '; edited by the operator' >>"$root/etc/ingest-bridge/bridge.ini"
minstall install DESTDIR="$dest"
grep -q 'edited by the operator' "$root/etc/ingest-bridge/bridge.ini" ||
    fail "make install overwrote an existing config"
grep -q 'keeping' "$tmp/make.log" || fail "make install did not say it kept the config"
minstall uninstall DESTDIR="$dest"
left=$(find "$dest" -type f)
[ "$left" = "$root/etc/ingest-bridge/bridge.ini" ] || fail "after make uninstall: $left"
ok "a second install keeps the edited config; uninstall leaves only it"

# ---- PREFIX=/usr: the config goes to /etc -------------------------------------

minstall install DESTDIR="$tmp/usr" PREFIX=/usr
[ -f "$tmp/usr/etc/ingest-bridge/bridge.ini" ] || fail "PREFIX=/usr: no /etc/ingest-bridge/bridge.ini"
grep -qx 'ExecStart=/usr/bin/ingest-bridge -c /etc/ingest-bridge/bridge.ini' \
    "$tmp/usr/usr/lib/systemd/system/ingest-bridge.service" || fail "PREFIX=/usr: ExecStart"
ok "PREFIX=/usr: bin in /usr/bin, config in /etc"

# ---- the unit as systemd reads it ---------------------------------------------

# Installed without DESTDIR under a real prefix, so that the paths the unit
# names exist; MANPATH lets `Documentation=man:` resolve.
if command -v systemd-analyze >/dev/null; then
    prefix=$tmp/prefix
    minstall install PREFIX="$prefix"
    u=$prefix/lib/systemd/system/ingest-bridge.service
    verify() { MANPATH=$prefix/share/man systemd-analyze verify "$1" 2>&1; }
    out=$(verify "$u") || fail "systemd-analyze verify: $out"
    [ -z "$out" ] || fail "systemd-analyze verify: $out"
    out=$(verify "${u%.service}.socket") || fail "systemd-analyze verify (socket): $out"
    [ -z "$out" ] || fail "systemd-analyze verify (socket): $out"
    # The same check refuses a unit whose binary is missing.
    mkdir -p "$tmp/bad"
    sed 's|^ExecStart=.*|ExecStart=/nonexistent/ingest-bridge|' "$u" >"$tmp/bad/ingest-bridge.service"
    out=$(verify "$tmp/bad/ingest-bridge.service") && [ -z "$out" ] &&
        fail "systemd-analyze verify accepted a unit whose binary is missing"
    ok "systemd-analyze verify: the installed units are clean (and a broken one is not)"
else
    say "skipped: systemd-analyze verify (systemd-analyze is not installed)"
fi

# ---- the man page as man finds it ----------------------------------------------

if command -v man >/dev/null; then
    MANPATH=$root/share/man man -w ingest-bridge >/dev/null 2>&1 &&
        fail "man found a page after uninstall"
    page=$(MANPATH=$tmp/usr/usr/share/man man -w 8 ingest-bridge) || fail "man -w 8 ingest-bridge"
    [ "$page" = "$tmp/usr/usr/share/man/man8/ingest-bridge.8" ] || fail "man -w found $page"
    MANPATH=$tmp/usr/usr/share/man MANWIDTH=80 man 8 ingest-bridge 2>/dev/null | grep -q '^EXIT STATUS' ||
        fail "man 8 ingest-bridge does not render"
    ok "man 8 ingest-bridge finds and renders the installed page"
else
    say "skipped: man (man-db is not installed; tests/lint.sh checks the page with groff)"
fi

say "$checks checks passed"
