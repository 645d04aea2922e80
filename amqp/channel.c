/* channel.c - the one channel on a live connection: when it goes, answer
 * what waits on it; after a channel error, open the next one step by step
 * (each method's -ok comes through the frame pump, so the loop never
 * blocks); renew a channel whose quorum-queue publishes are all nacked. */
#include "amqp/broker_int.h"
#include "amqp/broker_test.h"

#include <amqp.h>
#include <stdio.h>

#include "amqp/broker_config.h"
#include "bridge/base/log.h"
#include "amqp/tracker.h"

/* At most one renewal of a nacked channel this often (see
 * broker_renew_channel). */
#define BROKER_RENEW_MIN_MS 1000

void broker_fail_waiting_reply(void *arg, void *ctx)
{
    struct broker *b = arg;
    b->done(b->arg, ctx, TRACKER_LOST);
}

/* The channel is gone: publishes not yet confirmed will never be, and replies
 * sent to its reply-to are dropped by the broker. Answer all of them now
 * (tracker first: its callbacks forget their rpc entries, so nothing is
 * answered twice). Returns how many. */
size_t broker_fail_channel(struct broker *b)
{
    broker_drop_out(b); /* the channel (or connection) it was on is gone */
    size_t n = tracker_fail_all(b->tracker);
    tracker_reset(b->tracker);
    n += pending_drain(b->pending, broker_fail_waiting_reply, b);
    b->content = CONTENT_NONE;
    broker_shrink_reply(&b->rep); /* a reply cut short by the loss */
    return n;
}

static void send_or_lose(struct broker *b, amqp_method_number_t id, void *method)
{
    int rc = amqp_send_method(b->conn, b->channel, id, method);
    if (rc != AMQP_STATUS_OK)
        broker_lost(b, amqp_error_string2(rc));
}

/* The next step of a channel reopen, once the previous one's -ok came. */
void broker_reopen_step(struct broker *b)
{
    switch (b->reopen) {
    case REOPEN_NONE:
        return;
    case REOPEN_OPEN:
        if (b->cfg->confirm) {
            amqp_confirm_select_t sel = {.nowait = 0};
            b->reopen = REOPEN_CONFIRM;
            send_or_lose(b, AMQP_CONFIRM_SELECT_METHOD, &sel);
            return;
        }
        /* fall through - no confirms to select */
    case REOPEN_CONFIRM:
        if (b->rpc) {
            amqp_basic_consume_t c = {.queue = amqp_cstring_bytes(BROKER_REPLY_TO),
                                      .consumer_tag = amqp_empty_bytes,
                                      .no_ack = 1,
                                      .arguments = amqp_empty_table};
            b->reopen = REOPEN_CONSUME;
            send_or_lose(b, AMQP_BASIC_CONSUME_METHOD, &c);
            return;
        }
        /* fall through - no replies to consume */
    case REOPEN_CONSUME:
        b->reopen = REOPEN_NONE;
        log_info("broker: reopened as channel %u", b->channel);
        /* The state never left UP (or BLOCKED): nobody to tell. */
        if (b->state == BROKER_UP)
            b->reason[0] = '\0';
        return;
    }
}

/* Fail what waits on the current channel and open the next one, step by
 * step without blocking (reopen_step); WHY is /healthz's reason meanwhile. */
static void start_reopen(struct broker *b, const char *why)
{
    size_t n = broker_fail_channel(b);
    if (n > 0)
        log_warn("broker: %zu requests waiting on channel %u answered 503", n, b->channel);
    /* A fresh channel number keeps stray frames of the old one apart. */
    b->channel = (amqp_channel_t)(b->channel % 2000 + 1);
    b->channel_acked = false;
    b->reopen = REOPEN_OPEN;
    if (b->state == BROKER_UP)
        snprintf(b->reason, sizeof b->reason, "%s", why);
    amqp_channel_open_t open = {.out_of_band = amqp_empty_bytes};
    send_or_lose(b, AMQP_CHANNEL_OPEN_METHOD, &open);
}

/* A channel error closed our channel (e.g. publish to a missing exchange):
 * only its requests fail; the connection lives on with a new channel, opened
 * without blocking the loop. A channel that fails while being reopened means
 * something is wrong beyond one publish: reconnect instead. The connection
 * stays up meanwhile, and so does /healthz: one bad route must not make every
 * instance look down to a load balancer; broker_publish refuses (503) until
 * the new channel is ready. */
void broker_channel_closed(struct broker *b, const amqp_channel_close_t *c)
{
    log_warn("broker: channel %u closed by broker: %u %.*s", b->channel, c->reply_code,
             (int)c->reply_text.len, (const char *)c->reply_text.bytes);
    amqp_channel_close_ok_t ok = {0};
    if (amqp_send_method(b->conn, b->channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok) !=
        AMQP_STATUS_OK) {
        broker_lost(b, "cannot acknowledge channel close");
        return;
    }
    if (b->reopen != REOPEN_NONE) {
        broker_lost(b, "the channel failed while being reopened");
        return;
    }
    start_reopen(b, "reopening the channel after a channel error");
}

/* A quorum queue's publishes nacked on a channel that never had an ack: on
 * RabbitMQ 3.10 a channel opened while a quorum queue elects a new leader
 * (we reconnect within ~100 ms of a node's crash) may keep sending to the
 * dead leader, and every publish on it is nacked for as long as it lives,
 * though the queue is fine. A new channel looks the leader up again. A
 * channel that had acks is left alone: its nacks are the queue's answer
 * (full, reject-publish), and so are those of a renewed channel when the
 * nacks go on, renewed at most once every BROKER_RENEW_MIN_MS. */
void broker_renew_channel(struct broker *b)
{
    uint64_t now = broker_mono_ms();
    /* Never while a body is half written: a channel.close between its
     * frames is a connection error (UNEXPECTED_FRAME); the next nack
     * renews it. */
    if (b->closing || !b->quorum || b->channel_acked || b->reopen != REOPEN_NONE ||
        b->conn == NULL || b->out_body != NULL ||
        (b->renewed_ms != 0 && now - b->renewed_ms < BROKER_RENEW_MIN_MS))
        return;
    b->renewed_ms = now;
    log_warn("broker: publishes nacked on channel %u, which never had an ack: opening a new "
             "channel (a quorum queue's leader may have changed while it opened)",
             b->channel);
    amqp_channel_close_t close = {.reply_code = AMQP_REPLY_SUCCESS,
                                  .reply_text = amqp_cstring_bytes("renewing the channel")};
    send_or_lose(b, AMQP_CHANNEL_CLOSE_METHOD, &close);
    if (b->conn != NULL)
        start_reopen(b, "renewing a channel whose publishes were nacked");
}

void broker_test_renew(struct broker *b, uint16_t channel)
{
    (void)broker_fail_channel(b);
    b->channel = channel;
    b->channel_acked = false;
}
