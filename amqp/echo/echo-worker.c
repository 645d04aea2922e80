/* echo-worker.c - an rpc worker for ingest-bridge that answers every request
 * with its own body: the integration tests, the benchmarks and the docker
 * compose file use it, and it is the example to copy when writing a worker.
 *
 * The reply contract. The bridge publishes an rpc request to the route's queue
 * with reply_to = "amq.rabbitmq.reply-to" (RabbitMQ's direct reply-to),
 * correlation_id = an id the bridge makes for that publish (not the request
 * id, which is the message_id) and expiration = the route timeout. A worker
 * answers by publishing
 *   - to the default exchange "" with routing key = the request's reply_to,
 *   - with the request's correlation_id copied unchanged (the bridge matches
 *     the reply to the waiting HTTP request by it),
 *   - WITHOUT mandatory: RabbitMQ returns a spurious NO_ROUTE for replies to
 *     direct reply-to even though they were delivered,
 *   - with a traceparent header when the request has one (W3C trace
 *     context): the same trace id and the worker's own span id, which the
 *     bridge returns to the HTTP client as its traceparent,
 *   - optionally with a header x-http-status (a 32-bit int, 200..599) that
 *     becomes the HTTP status (200 without it; a 1xx cannot be a final
 *     response, so the bridge answers 502), and a content_type that becomes
 *     the HTTP Content-Type (application/xml without it; one with a control
 *     byte such as CR or LF is answered 502);
 * and then acks the request. A reply that comes after the route timeout is
 * dropped by the bridge (the client already got 504).
 *
 * This program is standalone (it links librabbitmq only) and deliberately
 * simple: one connection, one channel, blocking amqp_consume_message with a
 * short timeout so that SIGTERM/SIGINT are noticed. It reconnects every second
 * when the broker goes away. */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define ECHO_CHANNEL 1          /* the only channel we use */
#define ECHO_TIMEOUT_S 5        /* TCP connect, login and each sync rpc */
#define ECHO_HEARTBEAT_S 30     /* as the bridge's default heartbeat */
#define ECHO_MAX_DELAY_MS 30000 /* longer sleeps would outlast the heartbeat */
#define ECHO_POLL_MS 200        /* how often the consume loop checks for a signal */
#define ECHO_RETRY_MS 1000      /* pause between reconnect attempts */
#define ECHO_STATUS_HEADER "x-http-status"
#define ECHO_REASON_LEN 256

/* Settings from the environment, then the command line. */
struct options {
    const char *uri;                  /* broker URI as given (for messages) */
    char *uri_buf;                    /* copy that amqp_parse_url cut up; owns info's strings */
    struct amqp_connection_info info; /* host, port, vhost, user, password */
    const char *queue;                /* queue to consume */
    long prefetch;                    /* basic.qos prefetch_count, 0 = unlimited */
    long delay_ms;                    /* sleep before each reply */
    long status;                      /* x-http-status of every reply, 0 = no header */
    long drop_every;                  /* ack but never answer request N, 2N...; 0 = never */
    long count;                       /* exit after this many requests, 0 = never */
};

/* What the summary line at exit reports. */
struct stats {
    unsigned long requests; /* deliveries acked (answered, dropped or unanswerable) */
    unsigned long replies;  /* replies published */
    unsigned long dropped;  /* acked without a reply because of -n */
};

/* Why the consume loop returned. */
enum outcome {
    RUN_STOP, /* a signal or -c: leave cleanly, exit 0 */
    RUN_LOST, /* the connection or channel is gone: reconnect */
};

/* How a connection ends, which decides what we still owe the broker. */
enum ending {
    END_CLEAN,    /* we close it: connection.close, wait for close-ok */
    END_CLOSE_OK, /* the broker sent connection.close: answer close-ok */
    END_DEAD,     /* socket or protocol error: just free it */
};

static volatile sig_atomic_t stop_flag; /* set by SIGTERM/SIGINT */

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: echo-worker [options]   (each option also from its environment variable)\n"
        "  -u URI      broker URI (ECHO_URI; default amqp://guest:guest@127.0.0.1:5672/%%2f)\n"
        "  -q QUEUE    queue to consume, declared durable (ECHO_QUEUE; default rpc)\n"
        "  -p N        prefetch count, 0 = unlimited (ECHO_PREFETCH; default 100)\n"
        "  -d MS       delay before each reply, 0..%d (ECHO_DELAY_MS; default 0)\n"
        "  -s STATUS   add header " ECHO_STATUS_HEADER
        "=STATUS (100..599) to every reply (ECHO_STATUS)\n"
        "  -n N        drop every Nth request: ack it, never reply (ECHO_DROP_EVERY; 0 = never)\n"
        "  -c COUNT    exit 0 after COUNT requests (ECHO_COUNT; 0 = run forever)\n"
        "  -h          this help\n",
        ECHO_MAX_DELAY_MS);
}

/* Parse a whole decimal integer in [lo, hi]; on failure say which option or
 * variable (`name`) was wrong and exit 2. */
static long parse_long(const char *name, const char *s, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
        if (hi == LONG_MAX) {
            fprintf(stderr, "echo-worker: bad %s '%s': expected an integer >= %ld\n", name, s, lo);
        } else {
            fprintf(stderr, "echo-worker: bad %s '%s': expected an integer in %ld..%ld\n", name, s,
                    lo, hi);
        }
        exit(2);
    }
    return v;
}

/* Apply one option, from the command line (name "-p") or the environment
 * (name "ECHO_PREFETCH"). */
static void set_option(struct options *o, int opt, const char *name, const char *val)
{
    switch (opt) {
    case 'u':
        o->uri = val;
        break;
    case 'q':
        o->queue = val;
        break;
    case 'p':
        o->prefetch = parse_long(name, val, 0, 65535); /* prefetch_count is 16 bits */
        break;
    case 'd':
        o->delay_ms = parse_long(name, val, 0, ECHO_MAX_DELAY_MS);
        break;
    case 's':
        o->status = parse_long(name, val, 100, 599);
        break;
    case 'n':
        o->drop_every = parse_long(name, val, 0, LONG_MAX);
        break;
    case 'c':
        o->count = parse_long(name, val, 0, LONG_MAX);
        break;
    }
}

static void parse_options(struct options *o, int argc, char **argv)
{
    /* Environment first, so that the command line wins. */
    static const struct {
        int opt;
        const char *var;
    } env[] = {{'u', "ECHO_URI"},      {'q', "ECHO_QUEUE"},  {'p', "ECHO_PREFETCH"},
               {'d', "ECHO_DELAY_MS"}, {'s', "ECHO_STATUS"}, {'n', "ECHO_DROP_EVERY"},
               {'c', "ECHO_COUNT"}};
    for (size_t i = 0; i < sizeof env / sizeof env[0]; i++) {
        const char *v = getenv(env[i].var);
        if (v != NULL && *v != '\0') {
            set_option(o, env[i].opt, env[i].var, v);
        }
    }

    int c;
    while ((c = getopt(argc, argv, "u:q:p:d:s:n:c:h")) != -1) {
        char name[3] = {'-', (char)c, '\0'};
        if (c == 'h') {
            usage(stdout);
            exit(0);
        }
        if (c == '?') {
            usage(stderr);
            exit(2);
        }
        set_option(o, c, name, optarg);
    }
    if (optind < argc) {
        fprintf(stderr, "echo-worker: unexpected argument '%s'\n", argv[optind]);
        exit(2);
    }
    if (*o->queue == '\0' || strlen(o->queue) > 255) { /* an AMQP short string */
        fprintf(stderr, "echo-worker: bad queue name '%s': 1..255 bytes\n", o->queue);
        exit(2);
    }

    /* amqp_parse_url cuts its argument up in place and info points into it:
     * parse a copy that lives as long as the program. */
    o->uri_buf = strdup(o->uri);
    if (o->uri_buf == NULL) {
        fprintf(stderr, "echo-worker: out of memory\n");
        exit(1);
    }
    amqp_default_connection_info(&o->info);
    if (amqp_parse_url(o->uri_buf, &o->info) != AMQP_STATUS_OK) {
        fprintf(stderr, "echo-worker: bad URI '%s'\n", o->uri);
        exit(2);
    }
    if (o->info.ssl) {
        fprintf(stderr, "echo-worker: amqps:// is not supported by this example\n");
        exit(2);
    }
}

/* Sleep, but return early once a signal asked us to stop. */
static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (!stop_flag && nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

/* Put a readable reason for a failed rabbitmq-c call into why. */
static void describe(amqp_rpc_reply_t r, const char *what, char *why, size_t len)
{
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
        snprintf(why, len, "%s: %s", what, amqp_error_string2(r.library_error));
    } else if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
               r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        const amqp_connection_close_t *m = r.reply.decoded;
        snprintf(why, len, "%s: connection closed by broker: %u %.*s", what, m->reply_code,
                 (int)m->reply_text.len, (const char *)m->reply_text.bytes);
    } else if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
               r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        const amqp_channel_close_t *m = r.reply.decoded;
        snprintf(why, len, "%s: channel closed by broker: %u %.*s", what, m->reply_code,
                 (int)m->reply_text.len, (const char *)m->reply_text.bytes);
    } else {
        snprintf(why, len, "%s: unexpected reply (type %d, method 0x%08x)", what, (int)r.reply_type,
                 (unsigned)r.reply.id);
    }
}

/* End a connection and free it. */
static void finish(amqp_connection_state_t conn, enum ending how)
{
    if (how == END_CLEAN) {
        /* Closing the connection closes the channel: the broker requeues what
         * we did not ack, for another worker (or us, after a reconnect). */
        amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    } else if (how == END_CLOSE_OK) {
        amqp_connection_close_ok_t ok = {0};
        amqp_send_method(conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
    }
    amqp_destroy_connection(conn); /* also closes the socket */
}

/* Connect, log in, open the channel, declare the queue, set the prefetch and
 * start consuming. Returns the connection, or NULL with the reason in why
 * and *unreachable set when the broker did not even accept TCP. */
static amqp_connection_state_t open_consumer(const struct options *o, bool *unreachable, char *why,
                                             size_t len)
{
    const struct timeval tmo = {ECHO_TIMEOUT_S, 0};
    amqp_connection_state_t conn = amqp_new_connection();
    amqp_socket_t *sock = conn != NULL ? amqp_tcp_socket_new(conn) : NULL;
    if (sock == NULL) {
        snprintf(why, len, "out of memory");
        *unreachable = false;
        if (conn != NULL) {
            amqp_destroy_connection(conn);
        }
        return NULL;
    }
    int rc = amqp_socket_open_noblock(sock, o->info.host, o->info.port, &tmo);
    *unreachable = rc != AMQP_STATUS_OK;
    if (*unreachable) {
        snprintf(why, len, "connect: %s", amqp_error_string2(rc));
        amqp_destroy_connection(conn);
        return NULL;
    }
    amqp_set_handshake_timeout(conn, &tmo);
    amqp_set_rpc_timeout(conn, &tmo);

    /* Announce consumer_cancel_notify, or the broker silently forgets our
     * consumer when the queue is deleted and we would wait forever. The
     * connection name shows in the management UI. */
    amqp_table_entry_t caps[] = {
        {.key = amqp_cstring_bytes("consumer_cancel_notify"),
         .value = {.kind = AMQP_FIELD_KIND_BOOLEAN, .value.boolean = 1}},
    };
    amqp_table_entry_t props[] = {
        {.key = amqp_cstring_bytes("capabilities"),
         .value = {.kind = AMQP_FIELD_KIND_TABLE, .value.table = {1, caps}}},
        {.key = amqp_cstring_bytes("connection_name"),
         .value = {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes("echo-worker")}},
    };
    amqp_table_t client_props = {2, props};
    amqp_rpc_reply_t r = amqp_login_with_properties(
        conn, o->info.vhost, 0, AMQP_DEFAULT_FRAME_SIZE, ECHO_HEARTBEAT_S, &client_props,
        AMQP_SASL_METHOD_PLAIN, o->info.user, o->info.password);
    const char *step = "login";
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        step = "channel.open";
        amqp_channel_open(conn, ECHO_CHANNEL);
        r = amqp_get_rpc_reply(conn);
    }
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        /* The same arguments as the bridge (durable, not exclusive, not
         * auto-delete, no arguments): whoever starts first declares it. */
        step = "queue.declare";
        amqp_queue_declare(conn, ECHO_CHANNEL, amqp_cstring_bytes(o->queue), 0, 1, 0, 0,
                           amqp_empty_table);
        r = amqp_get_rpc_reply(conn);
    }
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        step = "basic.qos";
        amqp_basic_qos(conn, ECHO_CHANNEL, 0, (uint16_t)o->prefetch, 0);
        r = amqp_get_rpc_reply(conn);
    }
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        step = "basic.consume"; /* manual ack: no_ack = 0 */
        amqp_basic_consume(conn, ECHO_CHANNEL, amqp_cstring_bytes(o->queue), amqp_empty_bytes, 0, 0,
                           0, amqp_empty_table);
        r = amqp_get_rpc_reply(conn);
    }
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        return conn;
    }
    describe(r, step, why, len);
    /* A refused login closes the socket; a refused channel method leaves a
     * usable connection that we close politely. */
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        amqp_channel_close_ok_t ok = {0};
        amqp_send_method(conn, ECHO_CHANNEL, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
        finish(conn, END_CLEAN);
    } else if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
               r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        finish(conn, END_CLOSE_OK);
    } else {
        finish(conn, END_DEAD);
    }
    return NULL;
}

/* The traceparent of this worker's span for request REQ (number SEQ): the
 * request's trace id, a span id of our own. False when the request has no
 * traceparent of the version-00 form. */
static bool child_traceparent(const amqp_basic_properties_t *req, unsigned long seq, char out[56])
{
    if (!(req->_flags & AMQP_BASIC_HEADERS_FLAG))
        return false;
    for (int i = 0; i < req->headers.num_entries; i++) {
        const amqp_table_entry_t *e = &req->headers.entries[i];
        if (e->key.len != 11 || memcmp(e->key.bytes, "traceparent", 11) != 0 ||
            e->value.kind != AMQP_FIELD_KIND_UTF8 || e->value.value.bytes.len != 55)
            continue;
        const char *tp = e->value.value.bytes.bytes;
        /* "00-" trace id "-": kept; then our span id; the flags kept. */
        snprintf(out, 56, "%.36s%016lx%.3s", tp, (unsigned long)(0xec40000000000000UL | seq),
                 tp + 52);
        return true;
    }
    return false;
}

/* Answer one request (or drop it, or skip it) and ack it. Returns 0 when
 * done, 1 when a signal interrupted the delay (the request stays unacked and
 * goes back to the queue), -1 when the connection failed (reason in why). */
static int handle(amqp_connection_state_t conn, const struct options *o, struct stats *st,
                  const amqp_envelope_t *env, char *why, size_t len)
{
    const amqp_basic_properties_t *req = &env->message.properties;
    unsigned long seq = st->requests + 1; /* this request's number, from 1 */
    bool has_reply_to = (req->_flags & AMQP_BASIC_REPLY_TO_FLAG) && req->reply_to.len > 0;
    bool has_corr_id =
        (req->_flags & AMQP_BASIC_CORRELATION_ID_FLAG) && req->correlation_id.len > 0;

    if (!has_reply_to || !has_corr_id) {
        fprintf(stderr, "echo-worker: request %lu has no %s: acked, nothing to answer\n", seq,
                has_reply_to ? "correlation_id" : "reply_to");
    } else if (o->drop_every > 0 && seq % (unsigned long)o->drop_every == 0) {
        st->dropped++; /* -n: the bridge will answer its client 504 */
    } else {
        if (o->delay_ms > 0) {
            pause_ms(o->delay_ms);
            if (stop_flag) {
                return 1;
            }
        }
        amqp_basic_properties_t rep = {0};
        rep._flags = AMQP_BASIC_CORRELATION_ID_FLAG;
        rep.correlation_id = req->correlation_id;
        if (req->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG) {
            rep._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
            rep.content_type = req->content_type;
        }
        amqp_table_entry_t hdr[2] = {{
            .key = amqp_cstring_bytes(ECHO_STATUS_HEADER),
            .value = {.kind = AMQP_FIELD_KIND_I32, .value.i32 = (int32_t)o->status},
        }};
        int nhdr = o->status != 0;
        char child[56];
        if (child_traceparent(req, seq, child)) {
            hdr[nhdr].key = amqp_cstring_bytes("traceparent");
            hdr[nhdr].value.kind = AMQP_FIELD_KIND_UTF8;
            hdr[nhdr].value.value.bytes = amqp_cstring_bytes(child);
            nhdr++;
        }
        if (nhdr > 0) {
            rep._flags |= AMQP_BASIC_HEADERS_FLAG;
            rep.headers = (amqp_table_t){nhdr, hdr};
        }
        /* Default exchange, routing key = reply_to, mandatory = 0, immediate = 0. */
        int rc = amqp_basic_publish(conn, ECHO_CHANNEL, amqp_empty_bytes, req->reply_to, 0, 0, &rep,
                                    env->message.body);
        if (rc != AMQP_STATUS_OK) {
            snprintf(why, len, "basic.publish: %s", amqp_error_string2(rc));
            return -1;
        }
        st->replies++;
    }

    int rc = amqp_basic_ack(conn, env->channel, env->delivery_tag, 0);
    if (rc != AMQP_STATUS_OK) {
        snprintf(why, len, "basic.ack: %s", amqp_error_string2(rc));
        return -1;
    }
    st->requests++;
    return 0;
}

/* amqp_consume_message met a frame other than basic.deliver: read it and act.
 * Returns true to keep consuming, false when the connection must go (reason in
 * why, and *how says how to end it). */
static bool other_frame(amqp_connection_state_t conn, enum ending *how, char *why, size_t len)
{
    amqp_frame_t frame;
    int rc = amqp_simple_wait_frame(conn, &frame); /* the frame put back: no wait */
    if (rc != AMQP_STATUS_OK) {
        snprintf(why, len, "%s", amqp_error_string2(rc));
        *how = END_DEAD;
        return false;
    }
    if (frame.frame_type != AMQP_FRAME_METHOD) {
        return true; /* a heartbeat or stray content frame: nothing to do */
    }
    switch (frame.payload.method.id) {
    case AMQP_CONNECTION_CLOSE_METHOD: { /* e.g. the broker shuts down */
        const amqp_connection_close_t *m = frame.payload.method.decoded;
        snprintf(why, len, "connection closed by broker: %u %.*s", m->reply_code,
                 (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        *how = END_CLOSE_OK;
        return false;
    }
    case AMQP_CHANNEL_CLOSE_METHOD: { /* e.g. an ack the broker did not expect */
        const amqp_channel_close_t *m = frame.payload.method.decoded;
        snprintf(why, len, "channel closed by broker: %u %.*s", m->reply_code,
                 (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        amqp_channel_close_ok_t ok = {0};
        amqp_send_method(conn, frame.channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
        *how = END_CLEAN; /* a fresh connection redoes channel, queue and consumer */
        return false;
    }
    case AMQP_BASIC_CANCEL_METHOD: /* the queue was deleted under us */
        snprintf(why, len, "consumer cancelled by broker (queue deleted?)");
        *how = END_CLEAN;
        return false;
    case AMQP_BASIC_RETURN_METHOD: {
        /* Only mandatory publishes come back, and we publish none; read
         * and discard the returned message should one come anyway. */
        amqp_message_t msg;
        amqp_rpc_reply_t r = amqp_read_message(conn, frame.channel, &msg, 0);
        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            describe(r, "basic.return", why, len);
            *how = END_DEAD;
            return false;
        }
        amqp_destroy_message(&msg);
        return true;
    }
    default:
        fprintf(stderr, "echo-worker: ignoring unexpected %s\n",
                amqp_method_name(frame.payload.method.id));
        return true;
    }
}

/* Consume until a signal, -c, or the loss of the connection. */
static enum outcome consume(amqp_connection_state_t conn, const struct options *o, struct stats *st,
                            enum ending *how, char *why, size_t len)
{
    while (!stop_flag && (o->count == 0 || st->requests < (unsigned long)o->count)) {
        const struct timeval tmo = {0, ECHO_POLL_MS * 1000};
        amqp_envelope_t env;
        amqp_maybe_release_buffers(conn);
        amqp_rpc_reply_t r = amqp_consume_message(conn, &env, &tmo, 0);

        if (r.reply_type == AMQP_RESPONSE_NORMAL) {
            int rc = handle(conn, o, st, &env, why, len);
            amqp_destroy_envelope(&env);
            if (rc < 0) {
                *how = END_DEAD;
                return RUN_LOST;
            }
        } else if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
                   r.library_error == AMQP_STATUS_TIMEOUT) {
            continue; /* nothing for 200 ms: look at stop_flag again */
        } else if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
                   r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
            if (!other_frame(conn, how, why, len)) {
                return RUN_LOST;
            }
        } else {
            describe(r, "consume", why, len); /* socket closed, heartbeat missed... */
            *how = END_DEAD;
            return RUN_LOST;
        }
    }
    *how = END_CLEAN;
    return RUN_STOP;
}

int main(int argc, char **argv)
{
    struct options o = {
        .uri = "amqp://guest:guest@127.0.0.1:5672/%2f",
        .queue = "rpc",
        .prefetch = 100,
    };
    parse_options(&o, argc, argv);

    /* No SA_RESTART: a signal interrupts our sleeps at once. */
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN); /* a write to a dead broker must fail, not kill us */

    char status[16] = "none", drop[32] = "never", count[32] = "forever";
    if (o.status != 0) {
        snprintf(status, sizeof status, "%ld", o.status);
    }
    if (o.drop_every != 0) {
        snprintf(drop, sizeof drop, "every %ld", o.drop_every);
    }
    if (o.count != 0) {
        snprintf(count, sizeof count, "exit after %ld", o.count);
    }
    fprintf(stderr,
            "echo-worker: consuming %s on %s:%d (prefetch %ld, delay %ld ms, " ECHO_STATUS_HEADER
            " %s, drop %s, %s)\n",
            o.queue, o.info.host, o.info.port, o.prefetch, o.delay_ms, status, drop, count);

    struct stats st = {0};
    char why[ECHO_REASON_LEN], last[ECHO_REASON_LEN] = "";
    bool lost = false; /* we already said the connection was lost */
    while (!stop_flag) {
        bool unreachable;
        amqp_connection_state_t conn = open_consumer(&o, &unreachable, why, sizeof why);
        if (conn == NULL) {
            /* One line per outage: after "connection lost", a broker that
             * does not answer yet is expected; other reasons are said once. */
            if (!(lost && unreachable) && strcmp(why, last) != 0) {
                fprintf(stderr, "echo-worker: cannot consume from %s:%d: %s (retrying every 1 s)\n",
                        o.info.host, o.info.port, why);
                snprintf(last, sizeof last, "%s", why);
            }
            pause_ms(ECHO_RETRY_MS);
            continue;
        }
        fprintf(stderr, "echo-worker: ready\n");
        last[0] = '\0';
        lost = false;

        enum ending how;
        enum outcome out = consume(conn, &o, &st, &how, why, sizeof why);
        finish(conn, how);
        if (out == RUN_STOP) {
            break;
        }
        fprintf(stderr, "echo-worker: connection lost: %s; reconnecting every 1 s\n", why);
        lost = true;
        pause_ms(ECHO_RETRY_MS);
    }

    fprintf(stderr, "echo-worker: %lu requests, %lu replies, %lu dropped\n", st.requests,
            st.replies, st.dropped);
    free(o.uri_buf);
    return 0;
}
