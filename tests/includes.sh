#!/usr/bin/env bash
# includes.sh - the rooms' doors (issue 13): which folder of the program may
# include what. Fails, printing each violation, when
#   - a quoted include is not a path from the top ("http/server.h", -I.), is
#     absolute, or names no file of ours; a header of ours is included
#     with <...>;
#   - a file of http/ or amqp/ includes a header of bridge/ other than
#     bridge/base/* (bridge/ is the top of the program, the rooms its leaves);
#   - a file of http/ or amqp/ includes bridge/worker.h (the worker sees all
#     rooms; no room sees it), or a header of the other room;
#   - a file of bridge/base/ includes anything of ours outside bridge/base/;
#   - a file of bridge/ other than main.c and worker.c includes a header of
#     http/ or amqp/ other than the room's config (http/http_config.h,
#     amqp/broker_config.h);
#   - rabbitmq-c (amqp*.h, rabbitmq-c/...) is included outside amqp/;
#   - libevent's evhttp (evhttp.h, event2/http*.h, event2/keyvalq_struct.h)
#     outside http/;
#   - libxml2 outside bridge/xmlcheck.c.
# Two passes. The first reads each #include line and names FILE:LINE. The
# second asks the compiler which headers each source really opens (cc -M,
# with the build's flags), directly or through other headers, so that a
# door is not passed by a macro include, a digraph (%:include), a comment
# between # and include, a line continuation or a header that includes the
# forbidden one for you; it names FILE and the header (`cc -H` shows the
# chain). Scans the program's sources (bridge/ http/ amqp/, every .c and
# .h); the test programs under tests/ link what they test and are not rooms.
set -euo pipefail
cd "$(dirname "$0")/.."

CHECK_NAME=includes
# shellcheck source=tests/lib/check.sh
. tests/lib/check.sh

# library FILE HEADER: sets why to the reason FILE may not include HEADER,
# a header of the system's (its name as included, or the path the compiler
# opened), "" when it may; lib to the library's name.
library() {
    local f=$1 t=$2
    why='' lib=''
    case "/$t" in
    */amqp.h | */amqp_*.h | */rabbitmq-c/*)
        lib=rabbitmq-c
        [ "${f%%/*}" = amqp ] || why="$t is rabbitmq-c, which only amqp/ may include" ;;
    */evhttp.h | */event2/http*.h | */event2/keyvalq_struct.h)
        lib=evhttp
        [ "${f%%/*}" = http ] || why="$t is libevent's evhttp, which only http/ may include" ;;
    */libxml/* | */libxml2/*)
        lib=libxml2
        [ "$f" = bridge/xmlcheck.c ] || why="$t is libxml2, which only bridge/xmlcheck.c may include" ;;
    esac
}

# door FILE TARGET: sets why to the reason FILE may not include TARGET, a
# repository path, "" when it may. No subshell: it runs for every include.
door() {
    local f=$1 t=$2 room=${1%%/*} other=amqp
    why=
    case "$f" in
    bridge/base/*)
        case "$t" in
        bridge/base/*) ;;
        *) why="$t: bridge/base/ is the leaves, it includes only bridge/base/*" ;;
        esac
        return ;;
    bridge/main.c | bridge/worker.c) return ;;
    bridge/*)
        case "$t" in
        http/http_config.h | amqp/broker_config.h | bridge/*) ;;
        *) why="$t: of the rooms, bridge/ outside main.c and worker.c sees only their config (http/http_config.h, amqp/broker_config.h)" ;;
        esac
        return ;;
    esac
    [ "$room" = amqp ] && other=http
    case "$t" in
    bridge/worker.h) why="$t is bridge/worker.h, which $room/ must not include" ;;
    bridge/base/* | "$room"/*) ;;
    bridge/*) why="$t is a header of bridge/ ($room/ may include only bridge/base/*)" ;;
    "$other"/*) why="$t is a header of $other/: the rooms meet only in bridge/worker.c" ;;
    esac
}

# resolve FILE NAME: sets target to the repository path NAME (quoted in
# FILE) stands for, "" if no file of ours has it: the first that exists of
# the including file's folder and the repository root (-I.).
resolve() {
    local dir=${1%/*} cand
    target=
    for cand in "$dir/$2" "$2"; do
        if [ -f "$cand" ]; then
            # amqp/../bridge/x.h is bridge/x.h
            while [[ $cand =~ ^(.*/)?[^/.][^/]*/\.\./(.*)$ ]]; do
                cand=${BASH_REMATCH[1]}${BASH_REMATCH[2]}
            done
            target=${cand#./}
            return
        fi
    done
}

violations=0
files=0
declare -A seen # "FILE TARGET" and "FILE LIBRARY" already reported
violation() {
    printf '%s\n' "$1" >&2
    violations=$((violations + 1))
}

mapfile -t sources < <(find bridge http amqp -type f \( -name '*.c' -o -name '*.h' \) | sort)
[ ${#sources[@]} -gt 0 ] || fail "no sources under bridge/ http/ amqp/"

# Pass 1: the #include lines as written.
# (SC2094: $f is only read here; the messages go to stderr.)
# shellcheck disable=SC2094
for f in "${sources[@]}"; do
    files=$((files + 1))
    n=0
    while IFS= read -r line || [ -n "$line" ]; do
        n=$((n + 1))
        [[ $line =~ ^[[:space:]]*#[[:space:]]*include[[:space:]]*([\"\<])([^\"\>]+)[\"\>] ]] || continue
        kind=${BASH_REMATCH[1]}
        name=${BASH_REMATCH[2]}
        if [ "$kind" = '<' ]; then
            if [ -f "$name" ]; then
                violation "$f:$n: <$name> is ours: include it as \"$name\""
                seen["$f $name"]=1
                continue
            fi
            library "$f" "$name"
            if [ -n "$why" ]; then
                violation "$f:$n: <$name>: $why"
                seen["$f $lib"]=1
            fi
            continue
        fi
        if [[ $name == /* ]]; then
            violation "$f:$n: \"$name\" is an absolute path: include the library as <...>, ours from the top"
            continue
        fi
        resolve "$f" "$name"
        if [ -z "$target" ]; then
            violation "$f:$n: \"$name\" names no file of ours (the folder, the top)"
            continue
        fi
        if [ "$name" != "$target" ]; then
            violation "$f:$n: \"$name\" is $target: write the path from the top"
            continue
        fi
        door "$f" "$target"
        if [ -n "$why" ]; then
            violation "$f:$n: \"$name\": $why"
            seen["$f $target"]=1
        fi
    done <"$f"
done

# Pass 2: what the compiler opens, with the build's flags (the Makefile
# passes its PKGS; run alone, read from the Makefile).
cc=${CC:-cc}
read -r -a pkgs <<<"${PKGS:-$(sed -n 's/^PKGS *:= *//p' Makefile)}"
[ ${#pkgs[@]} -gt 0 ] || fail "no PKGS in the Makefile"
cflags=$(pkg-config --cflags "${pkgs[@]}") || fail "pkg-config cannot find ${pkgs[*]} (make deps)"
opened=0
for f in "${sources[@]}"; do
    # shellcheck disable=SC2086 # $cflags is a list of flags
    deps=$("$cc" -M -MT - -std=c11 -D_GNU_SOURCE -I. $cflags -x c "$f" 2>&1) ||
        fail "$cc cannot preprocess $f: $deps"
    deps=${deps//\\$'\n'/ }
    read -r -a list <<<"${deps#-:}"
    # repository paths relative, the system's absolute; the first is $f
    mapfile -t list < <(realpath -m --relative-base=. -- "${list[@]:1}")
    for t in "${list[@]}"; do
        opened=$((opened + 1))
        if [[ $t == /* ]]; then
            library "$f" "$t"
            [ -n "$lib" ] && t=$lib # one line per library
        else
            door "$f" "$t"
        fi
        [ -z "${seen["$f $t"]:-}" ] || continue
        [ -z "$why" ] || violation "$f: opens $why (through its includes or a form pass 1 does not read; cc -H shows the chain)"
        seen["$f $t"]=1
    done
done

[ "$violations" -eq 0 ] || fail "$violations include(s) through a door that is not there, in $files files"
ok "$files files of bridge/ http/ amqp/ include only what their room may ($opened headers the compiler opens, checked)"
