#!/usr/bin/env bash
# cluster.sh - a private RabbitMQ cluster of N nodes on this one machine, for
# the cluster test and the benchmark: each node is a tests/broker.sh node
# (own name, AMQP and distribution ports, data directory, HOME) under one
# base directory, all with one shared Erlang cookie, joined to the first
# node with rabbitmqctl stop_app / reset / join_cluster / start_app.
#
#   tests/cluster.sh start DIR [N]    start N nodes (default 3) under DIR/n1..nN
#                                     joined in one cluster; print one line a node
#   tests/cluster.sh nodes DIR        print the nodes again: "INDEX NAME PORT DIR"
#   tests/cluster.sh uris DIR         the bridge's [amqp] uri for them (guest, vhost /)
#   tests/cluster.sh ctl DIR I ARGS   rabbitmqctl -n NODE_I ARGS (I from 1)
#   tests/cluster.sh kill DIR I       kill -9 node I (no clean stop: a crash)
#   tests/cluster.sh restart DIR I    start node I again; it rejoins with its data
#   tests/cluster.sh stop DIR         stop every node under DIR (then kill -9)
#
# Environment: CLUSTER_PORT, the first AMQP port to try (default 5750; each
# node takes the next free one, its distribution port is AMQP + 20000).
# CLUSTER_NAME, the node name prefix (default bridgecl-<pid>); nodes are
# NAME-I@localhost. Each node's name and port are recorded in DIR/nI/node.env.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
broker="$here/broker.sh"

say() { printf 'cluster.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

usage() {
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# node_dir DIR I
node_dir() { printf '%s/n%s\n' "$1" "$2"; }

# Every node directory under DIR, in order.
node_dirs() {
    local d i=1
    while d=$(node_dir "$1" $i) && [ -f "$d/node.env" ]; do
        echo "$d"
        i=$((i + 1))
    done
}

# Read NODE and PORT of node directory D.
node_env() {
    NODE='' PORT=''
    # shellcheck disable=SC1091
    . "$1/node.env"
}

port_free() {
    ! "$broker" answers "127.0.0.1:$1" && ! "$broker" answers "127.0.0.1:$(($1 + 20000))"
}

print_nodes() {
    local d i=1
    for d in $(node_dirs "$1"); do
        node_env "$d"
        printf '%s %s %s %s\n' "$i" "$NODE" "$PORT" "$d"
        i=$((i + 1))
    done
}

# One node's broker.sh, with its directory. Name and port come from the
# node's node.env: a BROKER_PORT or BROKER_NODE meant for a single node
# (make test-faults BROKER_PORT=...) must not give every node the same one.
nb() {
    local d=$1
    shift
    env -u BROKER_PORT -u BROKER_NODE BROKER_DIR="$d" "$broker" "$@"
}

cmd_start() {
    local dir=${1:?usage: cluster.sh start DIR [N]} n=${2:-3}
    [ "$n" -ge 1 ] 2>/dev/null || die "N must be a whole number >= 1"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [ -n "$(node_dirs "$dir")" ]; then
        die "$dir already holds a cluster (cluster.sh stop it, then remove the directory)"
    fi
    local name=${CLUSTER_NAME:-bridgecl-$$}
    local cookie
    cookie=$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n' | tr a-f A-F)
    local port=${CLUSTER_PORT:-5750} i d first=
    # Everything recorded first, so that stop finds every node even when a
    # start fails half-way.
    for i in $(seq "$n"); do
        while ! port_free "$port"; do
            port=$((port + 1))
            [ "$port" -lt 6750 ] || die "no free port below 6750"
        done
        d=$(node_dir "$dir" "$i")
        mkdir -p "$d/home"
        (umask 077; printf '%s' "$cookie" >"$d/home/.erlang.cookie")
        chmod 400 "$d/home/.erlang.cookie"
        printf 'NODE=%q\nPORT=%q\n' "$name-$i@localhost" "$port" >"$d/node.env"
        port=$((port + 1))
    done
    for d in $(node_dirs "$dir"); do
        node_env "$d"
        nb "$d" start
        if [ -z "$first" ]; then
            first=$NODE
            continue
        fi
        say "joining $NODE to $first"
        nb "$d" ctl stop_app >/dev/null
        nb "$d" ctl reset >/dev/null
        nb "$d" ctl join_cluster "$first" >/dev/null
        nb "$d" ctl start_app >/dev/null
        nb "$d" ctl await_startup --timeout 60 >/dev/null
    done
    local running
    running=$(nb "$(node_dir "$dir" 1)" ctl cluster_status --formatter json |
        grep -o '"running_nodes":\[[^]]*\]' | grep -o '@localhost' | wc -l)
    [ "$running" -eq "$n" ] || die "the cluster runs $running nodes, not $n"
    say "cluster of $n nodes up under $dir"
    print_nodes "$dir"
}

cmd_stop() {
    local dir=${1:?usage: cluster.sh stop DIR} d rc=0
    [ -d "$dir" ] || return 0
    # The last nodes first: the first one is where the others joined.
    for d in $(node_dirs "$dir" | tac); do
        nb "$d" stop || rc=1
    done
    return $rc
}

# node_at DIR I: the directory of node I, or die.
node_at() {
    local d
    d=$(node_dir "$1" "${2:?node index missing}")
    [ -f "$d/node.env" ] || die "no node $2 under $1"
    echo "$d"
}

cmd_kill() {
    local d p
    d=$(node_at "$1" "$2")
    node_env "$d"
    p=$(tr -dc 0-9 <"$d/rabbit.pid" 2>/dev/null || true)
    if [ -z "$p" ] || [ ! -d "/proc/$p" ]; then
        die "node $NODE: no running VM in $d/rabbit.pid"
    fi
    say "kill -9 node $NODE (pid $p)"
    kill -KILL "$p"
    local i
    for i in $(seq 50); do
        [ -d "/proc/$p" ] || break
        sleep 0.1
    done
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    nodes) print_nodes "${1:?usage: cluster.sh nodes DIR}" ;;
    uris)
        list=
        for d in $(node_dirs "${1:?usage: cluster.sh uris DIR}"); do
            node_env "$d"
            list="${list:+$list,}amqp://guest:guest@127.0.0.1:$PORT/%2f"
        done
        echo "$list"
        ;;
    ctl)
        [ $# -ge 3 ] || usage
        d=$(node_at "$1" "$2")
        shift 2
        nb "$d" ctl "$@"
        ;;
    kill) cmd_kill "${1:?usage: cluster.sh kill DIR I}" "${2:-}" ;;
    restart)
        d=$(node_at "${1:?usage: cluster.sh restart DIR I}" "${2:-}")
        nb "$d" start
        ;;
    *) usage ;;
esac
