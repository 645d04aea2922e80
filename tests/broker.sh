#!/usr/bin/env bash
# broker.sh - a private RabbitMQ node for tests and `make run`: its own node
# name, ports, data directory, HOME and Erlang cookie, so that it never meets
# the system node (if there is one) and works as root on a fresh machine.
#
#   tests/broker.sh start            start the node (or reuse it) and wait until it serves
#   tests/broker.sh stop             stop it for real (rabbitmqctl stop, then kill)
#   tests/broker.sh status           exit 0 if it runs and answers on its port
#   tests/broker.sh ctl ARGS...      rabbitmqctl -n NODE ARGS... with the node's cookie
#   tests/broker.sh env              print BROKER_NODE=, BROKER_PORT=, BROKER_DIR=
#   tests/broker.sh answers HOST:PORT   exit 0 if something accepts TCP there
#   tests/broker.sh uri-hostport URI    print host:port of the first URI of a list
#
# Environment:
#   BROKER_DIR   state directory (default build/broker); everything lives there
#   BROKER_PORT  AMQP port (default: the first free port from 5699 up)
#   BROKER_NODE  node name (default bridgetest-<pid>@localhost)
#   BROKER_TLS_DIR  if set: also a TLS (amqps) listener with the certificates
#                there (tests/tls-certs.sh: ca.pem, server.pem, server-key.pem),
#                clients must show a certificate of that CA
#   BROKER_TLS_PORT  its port (default: the first free one from AMQP port + 1000)
# The first `start` in a directory records node name and ports in
# $BROKER_DIR/node.env; later commands (and a restart) reuse them, so a
# restarted node keeps its durable queues.
set -euo pipefail

RMQ_BIN=/usr/lib/rabbitmq/bin
DIR=${BROKER_DIR:-build/broker}

say() { printf 'broker.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# answers HOST PORT: does anything accept a TCP connection there?
answers() {
    # shellcheck disable=SC2016 # $1 and $2 are the inner shell's arguments
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# uri_hostport URI[,URI...] -> "host port" of the first one.
uri_hostport() {
    local u=${1%%,*} scheme hp host port
    u=${u#"${u%%[![:space:]]*}"}
    scheme=amqp
    case $u in *://*) scheme=${u%%://*}; u=${u#*://} ;; esac
    hp=${u%%/*}
    hp=${hp##*@}
    case $hp in
        \[*\]:*) host=${hp%%]*}; host=${host#[}; port=${hp##*]:} ;;
        \[*\]) host=${hp#[}; host=${host%]}; port= ;;
        *:*) host=${hp%%:*}; port=${hp##*:} ;;
        *) host=$hp; port= ;;
    esac
    [ -n "$host" ] || host=127.0.0.1
    if [ -z "$port" ]; then
        if [ "$scheme" = amqps ]; then port=5671; else port=5672; fi
    fi
    printf '%s %s\n' "$host" "$port"
}

# Load or choose node name and port; export everything rabbitmq-env reads.
setup_env() {
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd)
    if [ -f "$DIR/node.env" ]; then
        # shellcheck disable=SC1091
        . "$DIR/node.env"
    fi
    NODE=${BROKER_NODE:-${NODE:-}}
    PORT=${BROKER_PORT:-${PORT:-}}
    TLS_DIR=${BROKER_TLS_DIR:-${TLS_DIR:-}}
    TLS_PORT=${BROKER_TLS_PORT:-${TLS_PORT:-}}
    if [ -z "$NODE" ]; then
        NODE="bridgetest-$$@localhost"
    fi
    if [ -z "$PORT" ]; then
        PORT=5699
        while answers 127.0.0.1 "$PORT" || answers 127.0.0.1 $((PORT + 20000)); do
            PORT=$((PORT + 1))
            [ "$PORT" -lt 5799 ] || die "no free port in 5699..5798"
        done
    fi
    if [ -n "$TLS_DIR" ] && [ -z "$TLS_PORT" ]; then
        TLS_PORT=$((PORT + 1000))
        while answers 127.0.0.1 "$TLS_PORT"; do
            TLS_PORT=$((TLS_PORT + 1))
            [ "$TLS_PORT" -lt $((PORT + 1100)) ] || die "no free TLS port above $((PORT + 1000))"
        done
    fi
    export HOME="$DIR/home"
    export RABBITMQ_NODENAME="$NODE"
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT="$PORT"
    export RABBITMQ_DIST_PORT=$((PORT + 20000))
    export RABBITMQ_CTL_DIST_PORT_MIN=$((PORT + 30000))
    export RABBITMQ_CTL_DIST_PORT_MAX=$((PORT + 30010))
    export RABBITMQ_MNESIA_BASE="$DIR/mnesia"
    export RABBITMQ_LOG_BASE="$DIR/log"
    export RABBITMQ_PID_FILE="$DIR/rabbit.pid"
    # Our own (empty) env file: /etc/rabbitmq/rabbitmq-env.conf may name
    # another node or port.
    export RABBITMQ_CONF_ENV_FILE="$DIR/rabbitmq-env.conf"
    export RABBITMQ_CONFIG_FILE="$DIR/rabbitmq.conf"
    export RABBITMQ_ADVANCED_CONFIG_FILE="$DIR/advanced.config"
    # No plugins: the management plugin alone costs seconds at start-up.
    export RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/enabled_plugins"
    export ERL_CRASH_DUMP="$DIR/log/erl_crash.dump"
    PIDFILE=$RABBITMQ_PID_FILE
}

write_files() {
    mkdir -p "$HOME" "$RABBITMQ_MNESIA_BASE" "$RABBITMQ_LOG_BASE"
    printf 'NODE=%q\nPORT=%q\nTLS_DIR=%q\nTLS_PORT=%q\n' "$NODE" "$PORT" "$TLS_DIR" "$TLS_PORT" \
        >"$DIR/node.env"
    if [ ! -s "$HOME/.erlang.cookie" ]; then
        rm -f "$HOME/.erlang.cookie"
        (umask 077; od -An -N20 -tx1 /dev/urandom | tr -d ' \n' | tr a-f A-F >"$HOME/.erlang.cookie")
    fi
    chmod 400 "$HOME/.erlang.cookie"
    : >"$RABBITMQ_CONF_ENV_FILE"
    echo '[].' >"$RABBITMQ_ENABLED_PLUGINS_FILE"
    # A test machine may have little free disk; the default 50MB limit would
    # raise a disk alarm and block every publisher.
    cat >"$RABBITMQ_CONFIG_FILE" <<EOF
disk_free_limit.absolute = 1MB
log.console = false
log.file.level = info
EOF
    if [ -n "$TLS_DIR" ]; then
        local t
        t=$(cd "$TLS_DIR" && pwd)
        cat >>"$RABBITMQ_CONFIG_FILE" <<EOF
listeners.ssl.1 = 127.0.0.1:$TLS_PORT
ssl_options.cacertfile = $t/ca.pem
ssl_options.certfile = $t/server.pem
ssl_options.keyfile = $t/server-key.pem
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = true
EOF
    fi
}

ctl() {
    "$RMQ_BIN/rabbitmqctl" -n "$NODE" "$@"
}

# Pids of this node's Erlang VM: the pid file if it names a live beam with
# our node name in its environment, else a scan for exactly that.
node_pids() {
    local p
    if [ -s "$PIDFILE" ]; then
        p=$(tr -dc 0-9 <"$PIDFILE")
        if [ -n "$p" ] && is_our_beam "$p"; then
            echo "$p"
            return
        fi
    fi
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        is_our_beam "$p" && echo "$p"
    done
    return 0
}

is_our_beam() {
    local exe
    exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
    case $exe in *beam*) ;; *) return 1 ;; esac
    tr '\0' '\n' <"/proc/$1/environ" 2>/dev/null | grep -qxF "RABBITMQ_NODENAME=$NODE"
}

# until_ok TRIES CMD...: CMD every 0.1 s until it succeeds, TRIES times at
# the most; false if it never did.
until_ok() {
    local n=$1 _
    shift
    for _ in $(seq "$n"); do
        "$@" && return 0
        sleep 0.1
    done
    return 1
}

epmd_answers() { epmd -names >/dev/null 2>&1; }

node_gone() { [ -z "$(node_pids)" ]; }

ensure_epmd() {
    if epmd_answers; then
        return
    fi
    say "epmd is not running; starting it"
    epmd -daemon
    until_ok 50 epmd_answers || die "epmd does not answer (epmd -names)"
}

is_running() {
    [ -n "$(node_pids)" ] && answers 127.0.0.1 "$PORT"
}

cmd_start() {
    [ -x "$RMQ_BIN/rabbitmq-server" ] || die "rabbitmq-server is not installed (make deps)"
    setup_env
    if [ -n "$(node_pids)" ]; then
        if answers 127.0.0.1 "$PORT"; then
            say "node $NODE already running on port $PORT"
            return 0
        fi
        say "node $NODE is starting or stuck; stopping it first"
        cmd_stop
    fi
    if answers 127.0.0.1 "$PORT"; then
        die "port $PORT is taken by another process (set BROKER_PORT)"
    fi
    write_files
    ensure_epmd
    local t0=$SECONDS
    say "starting node $NODE on 127.0.0.1:$PORT (data in $DIR)"
    "$RMQ_BIN/rabbitmq-server" -detached >>"$RABBITMQ_LOG_BASE/startup.log" 2>&1 ||
        { tail -n 30 "$RABBITMQ_LOG_BASE/startup.log" >&2; die "rabbitmq-server -detached failed"; }
    # await_startup fails fast while the VM is not registered with epmd yet:
    # retry until the deadline, and give up early if the VM died.
    local deadline=$((SECONDS + ${BROKER_START_TIMEOUT:-90})) seen=0
    while :; do
        if ctl await_startup --timeout 30 >>"$RABBITMQ_LOG_BASE/startup.log" 2>&1; then
            break
        fi
        if [ -n "$(node_pids)" ]; then
            seen=1
        elif [ $seen = 1 ] || [ $((SECONDS - t0)) -gt 15 ]; then
            show_logs
            die "node $NODE died during start-up"
        fi
        if [ $SECONDS -ge $deadline ]; then
            show_logs
            cmd_stop || true
            die "node $NODE did not start within ${BROKER_START_TIMEOUT:-90}s"
        fi
        sleep 0.5
    done
    until_ok 100 answers 127.0.0.1 "$PORT" ||
        { show_logs; die "node $NODE runs but port $PORT does not answer"; }
    if [ -n "$TLS_DIR" ]; then
        until_ok 100 answers 127.0.0.1 "$TLS_PORT" ||
            { show_logs; die "node $NODE: TLS port $TLS_PORT does not answer"; }
    fi
    say "node $NODE up on port $PORT${TLS_PORT:+ (TLS $TLS_PORT)} after $((SECONDS - t0))s"
}

show_logs() {
    local f
    for f in "$RABBITMQ_LOG_BASE"/startup.log "$RABBITMQ_LOG_BASE"/*.log; do
        [ -f "$f" ] || continue
        say "--- $f (tail)"
        tail -n 40 "$f" >&2
    done
}

cmd_stop() {
    setup_env
    [ -f "$DIR/node.env" ] || { say "no node recorded in $DIR"; return 0; }
    local pids
    pids=$(node_pids)
    if [ -z "$pids" ]; then
        say "node $NODE is not running"
        return 0
    fi
    say "stopping node $NODE (pid ${pids//$'\n'/ })"
    # `stop PIDFILE` returns once the VM has exited.
    if [ -s "$PIDFILE" ]; then
        timeout 60 "$RMQ_BIN/rabbitmqctl" -n "$NODE" stop "$PIDFILE" >/dev/null 2>&1 || true
    else
        timeout 60 "$RMQ_BIN/rabbitmqctl" -n "$NODE" stop >/dev/null 2>&1 || true
    fi
    if ! until_ok 50 node_gone; then
        say "node still there after rabbitmqctl stop: SIGTERM"
        # shellcheck disable=SC2046 # one word a pid
        kill -TERM $(node_pids) 2>/dev/null || true
        if ! until_ok 100 node_gone; then
            say "node still there: SIGKILL"
            # shellcheck disable=SC2046
            kill -KILL $(node_pids) 2>/dev/null || true
            sleep 0.2
        fi
    fi
    rm -f "$PIDFILE"
    [ -z "$(node_pids)" ] || die "could not stop node $NODE"
    say "node $NODE stopped"
}

cmd_status() {
    setup_env
    if [ -f "$DIR/node.env" ] && is_running; then
        echo "running: node $NODE on 127.0.0.1:$PORT (pid $(node_pids | tr '\n' ' '| sed 's/ $//'))"
        return 0
    fi
    echo "stopped: node ${NODE} port ${PORT}"
    return 3
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    ctl)
        setup_env
        [ -f "$DIR/node.env" ] || die "no node recorded in $DIR (start it first)"
        ctl "$@"
        ;;
    env)
        setup_env
        printf 'BROKER_NODE=%s\nBROKER_PORT=%s\nBROKER_DIR=%s\nBROKER_TLS_PORT=%s\n' "$NODE" "$PORT" \
            "$DIR" "$TLS_PORT"
        ;;
    answers)
        [ $# -eq 1 ] || die "usage: broker.sh answers HOST:PORT"
        answers "${1%:*}" "${1##*:}"
        ;;
    uri-hostport)
        [ $# -eq 1 ] || die "usage: broker.sh uri-hostport URI"
        read -r h p < <(uri_hostport "$1")
        printf '%s:%s\n' "$h" "$p"
        ;;
    *)
        sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2
        exit 2
        ;;
esac
