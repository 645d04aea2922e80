/* broker.c - one worker's connection and channel to RabbitMQ.
 *
 * The blocking parts of rabbitmq-c (TCP connect, login, channel open, confirm
 * select, queue declare) run in a short-lived connector thread, so a slow or
 * unreachable broker never stalls the worker's event loop; the finished
 * connection is handed back through a pipe. From then on the socket belongs
 * to the loop: every readable event, every heartbeat tick and every publish
 * drains whole frames until AMQP_STATUS_TIMEOUT (PITFALLS: one frame per
 * event leaves acks parked in the library's buffer). */
#include "broker.h"
#include "broker_test.h"
#include "broker_int.h"

#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "hdrmap.h"
#include "log.h"
#include "message.h"
#include "pending.h"
#include "seed.h"

const char *broker_state_name(enum broker_state s)
{
    switch (s) {
    case BROKER_DOWN:
        return "down";
    case BROKER_CONNECTING:
        return "connecting";
    case BROKER_UP:
        return "up";
    case BROKER_BLOCKED:
        return "blocked";
    case BROKER_CLOSED:
        return "closed";
    case BROKER_FAILED:
        return "failed";
    }
    return "?";
}

void broker_set_state(struct broker *b, enum broker_state s, const char *reason)
{
    b->state = s;
    if (reason != NULL)
        snprintf(b->reason, sizeof b->reason, "%s", reason);
    else
        b->reason[0] = '\0';
    if (b->state_changed != NULL)
        b->state_changed(b->arg, s, b->reason);
}

static bool has_quorum_route(const struct config *cfg)
{
    for (size_t i = 0; i < cfg->n_routes; i++)
        if (cfg->routes[i].queue[0] != '\0' && cfg->routes[i].queue_type == QUEUE_QUORUM)
            return true;
    return false;
}

uint64_t broker_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void broker_on_socket(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    broker_pump(arg);
}

static void on_heartbeat(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    /* Reading with a zero timeout is what sends our heartbeats and notices a
     * broker that stopped sending its own (rabbitmq-c checks both there). */
    broker_pump(arg);
}

/* Confirms whose request was answered already (timed out, client gone,
 * blocked): dropped, and counted for /metrics. */
static void count_late_confirms(struct broker *b, size_t late)
{
    if (late == 0)
        return;
    atomic_fetch_add_explicit(&b->late_confirms, late, memory_order_relaxed);
    log_debug("broker: dropped %zu late confirms", late);
}

static void handle_method(struct broker *b, const amqp_frame_t *f)
{
    const amqp_method_t *m = &f->payload.method;
    switch (m->id) {
    case AMQP_BASIC_ACK_METHOD: {
        const amqp_basic_ack_t *a = m->decoded;
        if (f->channel == b->channel) {
            b->channel_acked = true;
            size_t late = tracker_ack(b->tracker, a->delivery_tag, a->multiple);
            count_late_confirms(b, late);
        }
        break;
    }
    case AMQP_BASIC_NACK_METHOD: {
        const amqp_basic_nack_t *n = m->decoded;
        if (f->channel == b->channel) {
            count_late_confirms(b, tracker_nack(b->tracker, n->delivery_tag, n->multiple));
            broker_renew_channel(b);
        }
        break;
    }
    case AMQP_BASIC_RETURN_METHOD: {
        const amqp_basic_return_t *r = m->decoded;
        log_debug("broker: message returned: %u %.*s", r->reply_code, (int)r->reply_text.len,
                  (const char *)r->reply_text.bytes);
        /* A stale channel's content (its header and body frames carry its
         * number) is skipped frame by frame, and must not end one of ours
         * that is halfway through. */
        if (f->channel != b->channel)
            break;
        b->content = CONTENT_RETURN;
        b->content_header = true;
        break;
    }
    case AMQP_BASIC_DELIVER_METHOD:
        /* Our one consumer is direct reply-to on our channel. */
        if (f->channel != b->channel)
            break; /* as for a return */
        b->content = b->rpc ? CONTENT_REPLY : CONTENT_SKIP;
        b->content_header = true;
        break;
    case AMQP_CHANNEL_CLOSE_METHOD:
        if (f->channel == b->channel)
            broker_channel_closed(b, m->decoded);
        break;
    case AMQP_CONNECTION_CLOSE_METHOD: {
        const amqp_connection_close_t *c = m->decoded;
        char why[BROKER_REASON_LEN];
        snprintf(why, sizeof why, "closed by broker: %u %.*s", c->reply_code,
                 (int)c->reply_text.len, (const char *)c->reply_text.bytes);
        amqp_connection_close_ok_t ok = {0};
        (void)amqp_send_method(b->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
        broker_lost(b, why);
        break;
    }
    case AMQP_CONNECTION_BLOCKED_METHOD: {
        const amqp_connection_blocked_t *bl = m->decoded;
        char why[BROKER_REASON_LEN];
        snprintf(why, sizeof why, "blocked by broker: %.*s", (int)bl->reason.len,
                 (const char *)bl->reason.bytes);
        /* The broker stopped reading: what we sent will not be confirmed
         * until the alarm clears. Answer those requests now instead of
         * hanging; their late confirms are dropped. */
        size_t n = tracker_fail_attached(b->tracker, TRACKER_LOST);
        log_warn("broker: %s (%zu waiting requests answered 503)", why, n);
        broker_set_state(b, BROKER_BLOCKED, why);
        break;
    }
    case AMQP_CHANNEL_OPEN_OK_METHOD:
    case AMQP_CONFIRM_SELECT_OK_METHOD:
    case AMQP_BASIC_CONSUME_OK_METHOD:
        if (f->channel == b->channel)
            broker_reopen_step(b);
        break;
    case AMQP_CONNECTION_UNBLOCKED_METHOD:
        log_info("broker: unblocked");
        if (b->state == BROKER_BLOCKED)
            broker_set_state(b, BROKER_UP, NULL);
        break;
    default:
        log_debug("broker: ignoring method 0x%08x on channel %u", m->id, f->channel);
        break;
    }
}

/* An rpc request published with confirm = no came back unroutable: without
 * a confirm to carry the verdict, the return itself is the answer (502, not
 * a 504 later). A return carries the properties we sent: the correlation id
 * names the request. */
static void rpc_returned(struct broker *b, const amqp_basic_properties_t *p)
{
    if (b->cfg->confirm || p == NULL || !(p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG))
        return; /* with confirms, the ack after the return answers it */
    void *ctx = pending_remove(b->pending, p->correlation_id.bytes, p->correlation_id.len, NULL);
    if (ctx != NULL)
        b->done(b->arg, ctx, TRACKER_RETURNED);
}

static void handle_frame(struct broker *b, const amqp_frame_t *f)
{
    /* Content frames belong to the method that began the content on their
     * own channel: one of another channel (a stale one after a renewal)
     * is not ours to take. */
    if ((f->frame_type == AMQP_FRAME_HEADER || f->frame_type == AMQP_FRAME_BODY) &&
        f->channel != b->channel)
        return;
    switch (f->frame_type) {
    case AMQP_FRAME_METHOD:
        handle_method(b, f);
        break;
    case AMQP_FRAME_HEADER:
        if (b->content == CONTENT_NONE || !b->content_header)
            break;
        b->content_header = false;
        if (b->content == CONTENT_REPLY) {
            broker_start_reply(b, f);
            break;
        }
        b->content_left = f->payload.properties.body_size;
        if (b->content == CONTENT_RETURN) {
            const amqp_basic_properties_t *p = f->payload.properties.decoded;
            if (p != NULL && (p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG) &&
                !tracker_return(b->tracker, p->message_id.bytes, p->message_id.len))
                log_debug("broker: return for unknown message %.*s", (int)p->message_id.len,
                          (const char *)p->message_id.bytes);
            rpc_returned(b, p);
        }
        if (b->content_left == 0)
            b->content = CONTENT_NONE;
        break;
    case AMQP_FRAME_BODY: {
        if (b->content == CONTENT_NONE || b->content_header)
            break;
        size_t n = f->payload.body_fragment.len;
        if (n > b->content_left)
            n = (size_t)b->content_left;
        if (b->content == CONTENT_REPLY && b->rep.bad == BROKER_REPLY_OK) {
            memcpy(b->rep.buf + b->rep.len, f->payload.body_fragment.bytes, n);
            b->rep.len += n;
        }
        b->content_left -= n;
        if (b->content_left == 0) {
            if (b->content == CONTENT_REPLY)
                broker_finish_reply(b);
            else
                b->content = CONTENT_NONE;
        }
        break;
    }
    default: /* heartbeats: rabbitmq-c already noted them */
        break;
    }
}

/* Drain every whole frame the library can give without blocking. */
void broker_pump(struct broker *b)
{
    static const struct timeval zero = {0, 0};
    while (b->conn != NULL) {
        amqp_frame_t f;
        struct timeval tv = zero;
        int rc = amqp_simple_wait_frame_noblock(b->conn, &f, &tv);
        if (rc == AMQP_STATUS_TIMEOUT)
            break;
        if (rc != AMQP_STATUS_OK) {
            broker_lost(b, amqp_error_string2(rc));
            return;
        }
        handle_frame(b, &f);
    }
    if (b->conn != NULL)
        amqp_maybe_release_buffers(b->conn);
}

/* After a write: acks may already wait in the library's buffer (rabbitmq-c
 * reads while it writes), where no readable event would show them. Drain
 * them on the next loop turn. */
void broker_pump_soon(struct broker *b)
{
    if (amqp_frames_enqueued(b->conn) || amqp_data_in_buffer(b->conn))
        event_active(b->sock_ev, EV_READ, 0);
}

static void on_tracker_done(void *arg, void *ctx, enum tracker_result r)
{
    struct broker *b = arg;
    b->done(b->arg, ctx, r);
}

struct broker *broker_new(struct event_base *base, const struct config *cfg, unsigned worker,
                          broker_done_fn *done, broker_state_fn *state_changed,
                          broker_reply_fn *reply, void *arg)
{
    struct broker *b = calloc(1, sizeof *b);
    if (b == NULL)
        return NULL;
    b->base = base;
    b->cfg = cfg;
    b->worker = worker;
    b->done = done;
    b->state_changed = state_changed;
    b->reply = reply;
    b->arg = arg;
    b->rpc = broker_has_rpc_route(cfg);
    b->quorum = has_quorum_route(cfg);
    b->state = BROKER_DOWN;
    snprintf(b->reason, sizeof b->reason, "not connected yet");
    /* The URIs are the nodes of one cluster: worker i starts on node i mod
     * n, so that the workers spread over the nodes, and moves on to the next
     * node after a loss or a failed attempt. */
    b->uri_next = worker % cfg->n_uris;
    b->backoff_ms = BROKER_BACKOFF_MIN_MS;
    b->pipe_fd[0] = b->pipe_fd[1] = -1;
    seed_fill(&b->rng, sizeof b->rng, b);
    uint64_t prefix;
    seed_fill(&prefix, sizeof prefix, &b->cid_prefix);
    snprintf(b->cid_prefix, sizeof b->cid_prefix, "%016llx-%u-", (unsigned long long)prefix,
             worker);
    if (b->rng == 0)
        b->rng = 0x9e3779b97f4a7c15ULL; /* xorshift's one fixed point */
    /* At most max_inflight entries are attached (the worker's bound on
     * requests waiting); the room beyond holds detached ones (client gone,
     * timed out, blocked) until it is needed. A confirm that never comes
     * does not hold the window (tracker.c: laggards). */
    b->tracker = tracker_new(cfg->max_inflight * 2, on_tracker_done, b);
    b->pending = pending_new(cfg->max_inflight + 1);
    if (b->tracker == NULL || b->pending == NULL || pipe2(b->pipe_fd, O_CLOEXEC) != 0)
        goto fail;
    b->sock_ev = event_new(base, -1, 0, broker_on_socket, b);
    b->hb_ev = event_new(base, -1, EV_PERSIST, on_heartbeat, b);
    b->retry_ev = event_new(base, -1, 0, broker_on_retry, b);
    b->out_ev = event_new(base, -1, 0, broker_on_out, b);
    b->pipe_ev = event_new(base, b->pipe_fd[0], EV_READ | EV_PERSIST, broker_on_connected, b);
    if (b->sock_ev == NULL || b->hb_ev == NULL || b->retry_ev == NULL || b->out_ev == NULL ||
        b->pipe_ev == NULL || event_add(b->pipe_ev, NULL) != 0)
        goto fail;
    return b;
fail:
    broker_free(b);
    return NULL;
}

void broker_start(struct broker *b)
{
    broker_start_connect(b);
}

enum broker_state broker_state(const struct broker *b)
{
    return b->state;
}

const char *broker_reason(const struct broker *b)
{
    return b->reason;
}

const char *broker_node(const struct broker *b)
{
    return b->hostport;
}

uint64_t broker_late_replies(const struct broker *b)
{
    return atomic_load_explicit(&b->late_replies, memory_order_relaxed);
}

uint64_t broker_late_confirms(const struct broker *b)
{
    return atomic_load_explicit(&b->late_confirms, memory_order_relaxed);
}

/* While amqp_channel_close waited for close-ok, rabbitmq-c queued every
 * other frame it read: acks and nacks of our last publishes, returns, rpc
 * replies. The broker sent them before its close-ok, so they are real
 * answers: honour them (202, 502, the reply) instead of failing those
 * requests as lost. Only these frames: anything else (a method that would
 * send one back) is dropped, the channel being closed. */
static void take_queued(struct broker *b)
{
    b->closing = true;
    while (b->conn != NULL && amqp_frames_enqueued(b->conn)) {
        amqp_frame_t f;
        struct timeval tv = {0, 0};
        if (amqp_simple_wait_frame_noblock(b->conn, &f, &tv) != AMQP_STATUS_OK)
            break;
        if (f.frame_type == AMQP_FRAME_METHOD) {
            amqp_method_number_t id = f.payload.method.id;
            if (id != AMQP_BASIC_ACK_METHOD && id != AMQP_BASIC_NACK_METHOD &&
                id != AMQP_BASIC_RETURN_METHOD && id != AMQP_BASIC_DELIVER_METHOD)
                continue;
        }
        handle_frame(b, &f);
    }
}

void broker_close(struct broker *b)
{
    if (b->state == BROKER_CLOSED)
        return;
    /* Confirms that already arrived answer their requests 202, not 503. */
    if (b->conn != NULL)
        broker_pump(b);
    event_del(b->retry_ev); /* pump may have lost the connection */
    if (b->conn != NULL && b->out_body != NULL) {
        /* A body half written (the broker stopped reading until the drain's
         * deadline): a channel.close between its frames would be a protocol
         * error, and waiting for room is what the deadline ended. The
         * broker drops the half; its request, if it still waits, gets 503
         * from broker_fail_channel below. */
        log_warn("broker: closing the connection to %s with a %zu-byte body %zu bytes short",
                 b->node, b->out_len, b->out_len - b->out_off);
        event_del(b->sock_ev);
        event_del(b->hb_ev);
        amqp_destroy_connection(b->conn);
        b->conn = NULL;
    }
    if (b->conn != NULL) {
        event_del(b->sock_ev);
        event_del(b->hb_ev);
        /* Bounded by the rpc timeout set at connect. */
        amqp_rpc_reply_t r = amqp_channel_close(b->conn, b->channel, AMQP_REPLY_SUCCESS);
        if (r.reply_type == AMQP_RESPONSE_NORMAL) {
            take_queued(b);
            r = amqp_connection_close(b->conn, AMQP_REPLY_SUCCESS);
        }
        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            char err[BROKER_REASON_LEN];
            broker_rpc_error(r, "close", err, sizeof err);
            log_warn("broker: %s", err);
        } else {
            log_info("broker: connection to %s closed", b->node);
        }
        amqp_destroy_connection(b->conn);
        b->conn = NULL;
    }
    (void)broker_fail_channel(b);
    log_info("broker: at most %zu publishes awaited a confirm at once; %llu late rpc replies "
             "dropped",
             b->peak_inflight, (unsigned long long)b->late_replies);
    broker_set_state(b, BROKER_CLOSED, "shutting down");
}

void broker_free(struct broker *b)
{
    if (b == NULL)
        return;
    b->state = BROKER_CLOSED;
    if (b->thread_running) {
        pthread_join(b->thread, NULL); /* bounded by the connect timeouts */
        b->thread_running = false;
        if (b->job.conn != NULL)
            amqp_destroy_connection(b->job.conn);
    }
    if (b->conn != NULL)
        amqp_destroy_connection(b->conn);
    if (b->tracker != NULL) {
        tracker_fail_all(b->tracker);
        tracker_free(b->tracker);
    }
    if (b->pending != NULL) {
        (void)pending_drain(b->pending, broker_fail_waiting_reply, b);
        pending_free(b->pending);
    }
    free(b->rep.buf);
    if (b->sock_ev != NULL)
        event_free(b->sock_ev);
    if (b->hb_ev != NULL)
        event_free(b->hb_ev);
    if (b->retry_ev != NULL)
        event_free(b->retry_ev);
    if (b->out_ev != NULL)
        event_free(b->out_ev);
    free(b->out_body);
    if (b->pipe_ev != NULL)
        event_free(b->pipe_ev);
    if (b->pipe_fd[0] >= 0)
        close(b->pipe_fd[0]);
    if (b->pipe_fd[1] >= 0)
        close(b->pipe_fd[1]);
    free(b);
}

/* ---- for tests/unit/test_broker.c (broker_test.h) ---- */

void broker_test_frame(struct broker *b, const amqp_frame_t *f)
{
    handle_frame(b, f);
}
