#!/usr/bin/env bash
# includes.sh - the rooms' doors (issue 13): which folder of the program may
# include what. Fails, printing each violation as FILE:LINE: reason, when
#   - a quoted include is not a path from the top ("http/server.h", -I.);
#   - a file of http/ or amqp/ includes a header of bridge/ other than
#     bridge/base/* (bridge/ is the top of the program, the rooms its leaves);
#   - a file of http/ or amqp/ includes bridge/worker.h (the worker sees all
#     rooms; no room sees it), or a header of the other room;
#   - a file of bridge/base/ includes anything of ours outside bridge/base/;
#   - a file of bridge/ other than main.c and worker.c includes a header of
#     http/ or amqp/ other than the room's config (http/http_config.h,
#     amqp/broker_config.h);
#   - <amqp*.h> (rabbitmq-c) is included outside amqp/;
#   - <event2/http*.h> or <event2/keyvalq_struct.h> (evhttp) outside http/;
#   - <libxml/...> outside bridge/xmlcheck.c.
# Scans the program's sources (bridge/ http/ amqp/, every .c and .h); the
# test programs under tests/ link what they test and are not rooms. A quoted
# include is resolved as the compiler sees it, the first that exists: the
# including file's folder, then the repository root (-I.). One that names
# no file of ours is a violation too: a door nobody can check.
set -euo pipefail
cd "$(dirname "$0")/.."

CHECK_NAME=includes
# shellcheck source=tests/lib/check.sh
. tests/lib/check.sh

# resolve FILE NAME: sets target to the repository path NAME (quoted in
# FILE) stands for, "" if no file of ours has it. No subshell: it runs for
# every include.
resolve() {
    local dir=${1%/*} cand
    local -a cands
    cands=("$dir/$2" "$2")
    target=
    for cand in "${cands[@]}"; do
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
violation() {
    printf '%s\n' "$1" >&2
    violations=$((violations + 1))
}

mapfile -t sources < <(find bridge http amqp -type f \( -name '*.c' -o -name '*.h' \) | sort)
[ ${#sources[@]} -gt 0 ] || fail "no sources under bridge/ http/ amqp/"
# (SC2094: $f is only read here; the messages go to stderr.)
# shellcheck disable=SC2094
for f in "${sources[@]}"; do
    files=$((files + 1))
    room=${f%%/*}
    n=0
    while IFS= read -r line || [ -n "$line" ]; do
        n=$((n + 1))
        [[ $line =~ ^[[:space:]]*#[[:space:]]*include[[:space:]]*([\"\<])([^\"\>]+)[\"\>] ]] || continue
        kind=${BASH_REMATCH[1]}
        name=${BASH_REMATCH[2]}
        if [ "$kind" = '<' ]; then
            case "$name" in
            amqp*.h)
                [ "$room" = amqp ] ||
                    violation "$f:$n: <$name> is rabbitmq-c, which only amqp/ may include" ;;
            event2/http*.h | event2/keyvalq_struct.h)
                [ "$room" = http ] ||
                    violation "$f:$n: <$name> is libevent's evhttp, which only http/ may include" ;;
            libxml/*)
                [ "$f" = bridge/xmlcheck.c ] ||
                    violation "$f:$n: <$name> is libxml2, which only bridge/xmlcheck.c may include" ;;
            esac
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
        case "$f" in
        bridge/base/*)
            case "$target" in
            bridge/base/*) ;;
            *) violation "$f:$n: \"$name\": bridge/base/ is the leaves, it includes only bridge/base/*" ;;
            esac
            continue ;;
        bridge/main.c | bridge/worker.c) continue ;;
        bridge/*)
            case "$target" in
            http/http_config.h | amqp/broker_config.h | bridge/*) ;;
            *) violation "$f:$n: \"$name\": of the rooms, bridge/ outside main.c and worker.c sees only their config (http/http_config.h, amqp/broker_config.h)" ;;
            esac
            continue ;;
        esac
        other=amqp
        [ "$room" = amqp ] && other=http
        case "$target" in
        bridge/worker.h)
            violation "$f:$n: \"$name\" is bridge/worker.h, which $room/ must not include" ;;
        bridge/base/* | "$room"/*) ;;
        bridge/*)
            violation "$f:$n: \"$name\" is $target, a header of bridge/ ($room/ may include only bridge/base/*)" ;;
        "$other"/*)
            violation "$f:$n: \"$name\" is $target, a header of $other/: the rooms meet only in bridge/worker.c" ;;
        esac
    done <"$f"
done

[ "$violations" -eq 0 ] || fail "$violations include(s) through a door that is not there, in $files files"
ok "$files files of bridge/ http/ amqp/ include only what their room may"
