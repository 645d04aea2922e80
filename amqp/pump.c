/* pump.c - frames from the broker, read on every readable event, every
 * heartbeat tick and after every write, until AMQP_STATUS_TIMEOUT (PITFALLS:
 * one frame per event leaves acks parked in the library's buffer); each
 * method dispatched (ack, nack, return, deliver, channel and connection
 * close, blocked, the reopen's -oks) and the content frames that follow a
 * return or a deliver followed frame by frame. */
#include "amqp/broker_int.h"
#include "amqp/broker_test.h"

#include <amqp.h>
#include <event2/event.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "amqp/broker_config.h"
#include "bridge/base/log.h"
#include "amqp/tracker.h"

void broker_on_socket(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    broker_pump(arg);
}

void broker_on_heartbeat(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    /* Reading with a zero timeout is what sends our heartbeats and notices a
     * broker that stopped sending its own (rabbitmq-c checks both there). */
    broker_pump(arg);
}

void broker_count_late_confirms(struct broker *b, size_t late)
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
            broker_count_late_confirms(b, late);
        }
        break;
    }
    case AMQP_BASIC_NACK_METHOD: {
        const amqp_basic_nack_t *n = m->decoded;
        if (f->channel == b->channel) {
            broker_count_late_confirms(b, tracker_nack(b->tracker, n->delivery_tag, n->multiple));
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

/* While amqp_channel_close waited for close-ok, rabbitmq-c queued every
 * other frame it read: acks and nacks of our last publishes, returns, rpc
 * replies. The broker sent them before its close-ok, so they are real
 * answers: honour them (202, 502, the reply) instead of failing those
 * requests as lost. Only these frames: anything else (a method that would
 * send one back) is dropped, the channel being closed. */
void broker_take_queued(struct broker *b)
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

void broker_test_frame(struct broker *b, const amqp_frame_t *f)
{
    handle_frame(b, f);
}
