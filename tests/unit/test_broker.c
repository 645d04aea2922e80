/* test_broker.c - what the broker connection does without a broker: reading
 * the existing queue's type out of RabbitMQ's 406 text on queue.declare,
 * for the start-up error that names both types (the texts are RabbitMQ
 * 3.10's, as sent for each combination); and the frame handling, fed decoded
 * frames through broker_test.h: acks and nacks (multiple), returns and rpc
 * replies split over several reads, frames of another channel, a channel
 * renewal, the reply buffer given back after a large reply. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "amqp/broker.h"
#include "amqp/broker_test.h"
#include "bridge/config.h"
#include "bridge/base/message.h"

static int existing(const char *text, char *out, size_t outlen)
{
    return broker_existing_queue_type(text, strlen(text), out, outlen);
}

static void test_existing_queue_type(void **state)
{
    (void)state;
    char t[32];
    /* quorum wanted, classic there (declared with x-queue-type). */
    assert_int_equal(existing("PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue "
                              "'q' in vhost '/': received 'quorum' but current is 'classic'",
                              t, sizeof t),
                     0);
    assert_string_equal(t, "classic");
    /* classic wanted, quorum there. */
    assert_int_equal(existing("PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue "
                              "'q' in vhost '/': received 'classic' but current is 'quorum'",
                              t, sizeof t),
                     0);
    assert_string_equal(t, "quorum");
    /* quorum wanted, a classic queue declared without x-queue-type. */
    assert_int_equal(existing("PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue "
                              "'p1' in vhost '/': received the value 'quorum' of type 'longstr' "
                              "but current is none",
                              t, sizeof t),
                     0);
    assert_string_equal(t, "classic");
    /* The existing one named as a typed value. */
    assert_int_equal(existing("PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue "
                              "'p2' in vhost '/': received none but current is the value "
                              "'quorum' of type 'longstr'",
                              t, sizeof t),
                     0);
    assert_string_equal(t, "quorum");
    /* A queue name with quotes does not confuse it: the type follows
     * "current is". */
    assert_int_equal(existing("PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue "
                              "'it''s' in vhost '/': received 'classic' but current is 'stream'",
                              t, sizeof t),
                     0);
    assert_string_equal(t, "stream");
    /* A small buffer: cut, still terminated. */
    char small[4];
    assert_int_equal(existing("inequivalent arg 'x-queue-type' for queue 'q' in vhost '/': "
                              "received 'classic' but current is 'quorum'",
                              small, sizeof small),
                     0);
    assert_string_equal(small, "quo");
}

static void test_not_about_the_type(void **state)
{
    (void)state;
    char t[32] = "untouched";
    /* Another argument differs: no type to name. */
    assert_int_equal(existing("PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q' in "
                              "vhost '/': received 'true' but current is 'false'",
                              t, sizeof t),
                     -1);
    assert_int_equal(existing("PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue "
                              "'q' in vhost '/': received none but current is the value '0' of "
                              "type 'long'",
                              t, sizeof t),
                     -1);
    /* Cut short, or empty. */
    assert_int_equal(existing("inequivalent arg 'x-queue-type' for queue 'q'", t, sizeof t), -1);
    assert_int_equal(existing("inequivalent arg 'x-queue-type': current is '", t, sizeof t), -1);
    assert_int_equal(existing("inequivalent arg 'x-queue-type': current is ''", t, sizeof t), -1);
    assert_int_equal(existing("", t, sizeof t), -1);
    assert_string_equal(t, "untouched");
    /* Not NUL-terminated at LEN: only LEN bytes are read. */
    const char text[] = "inequivalent arg 'x-queue-type': current is 'quorum'";
    assert_int_equal(broker_existing_queue_type(text, sizeof text - 3, t, sizeof t), -1);
}

/* ---- the frame handling -------------------------------------------------- */

#define NREQ 16

/* What the broker called back, per request i (ctx = &req[i]). */
struct rec {
    int done[NREQ];                  /* how many done() calls */
    enum tracker_result res[NREQ];   /* the last one's result */
    int replies[NREQ];               /* how many reply() calls */
    char body[NREQ][64];             /* the last reply's body (cut) */
    size_t len[NREQ];                /* and its length */
    enum broker_reply_bad bad[NREQ]; /* the last reply's verdict */
    char error[NREQ][160];           /* and its error text, "" if none */
};

static struct rec g_rec;
static char g_req[NREQ]; /* the requests' ctx: &g_req[i] */

static int req_index(void *ctx)
{
    return (int)((char *)ctx - g_req);
}

static void on_done(void *arg, void *ctx, enum tracker_result r)
{
    (void)arg;
    int i = req_index(ctx);
    g_rec.done[i]++;
    g_rec.res[i] = r;
}

static void on_reply(void *arg, void *ctx, const struct broker_reply *rep)
{
    (void)arg;
    int i = req_index(ctx);
    g_rec.replies[i]++;
    g_rec.len[i] = rep->len;
    snprintf(g_rec.body[i], sizeof g_rec.body[i], "%.*s", (int)(rep->len < 63 ? rep->len : 63),
             (const char *)rep->body);
    g_rec.bad[i] = rep->bad;
    snprintf(g_rec.error[i], sizeof g_rec.error[i], "%s", rep->error ? rep->error : "");
}

/* A broker on a config with a publish route and an rpc route, CONFIRM as
 * given, "connected" on channel 1. */
struct fixture {
    struct event_base *base; /* never run: no socket, no timer fires */
    struct config *cfg;      /* from a file of the test's making */
    struct broker *b;        /* under test */
};

static void fixture_up(struct fixture *fx, bool confirm)
{
    memset(&g_rec, 0, sizeof g_rec);
    char path[] = "/tmp/test_broker-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    static const char text[] = "[amqp]\nuri = amqp://guest:guest@127.0.0.1:1/%2f\n"
                               "max_inflight = 100\n"
                               "[route p]\npath = /p\nrouting_key = p\n"
                               "[route r]\npath = /r\nmode = rpc\nrouting_key = r\n";
    assert_int_equal(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
    close(fd);
    char *env[] = {confirm ? "BRIDGE_AMQP_CONFIRM=yes" : "BRIDGE_AMQP_CONFIRM=no", NULL};
    char err[512];
    fx->cfg = config_load(path, env, err, sizeof err);
    unlink(path);
    if (fx->cfg == NULL)
        fail_msg("config: %s", err);
    fx->base = event_base_new();
    assert_non_null(fx->base);
    fx->b = broker_new(fx->base, &fx->cfg->amqp, 0, on_done, NULL, on_reply, NULL);
    assert_non_null(fx->b);
    broker_test_up(fx->b, 1);
}

static void fixture_down(struct fixture *fx)
{
    broker_free(fx->b);
    event_base_free(fx->base);
    config_free(fx->cfg);
}

/* Request I published (RPC: on the rpc route); its tag or handle. */
static uint64_t enlist(struct fixture *fx, int i, bool rpc, const char *msg_id)
{
    struct bridge_msg m = {
        .body = "<a/>",
        .body_len = 4,
        .message_id = msg_id,
        .message_id_len = strlen(msg_id),
        .type = rpc ? "r" : "p",
        .exchange = "",
        .routing_key = rpc ? "r" : "p",
        .reply_to = rpc ? BROKER_REPLY_TO : NULL,
        .expiration = rpc ? "5000" : NULL,
    };
    uint64_t tag = 0;
    assert_int_equal(broker_test_enlist(fx->b, &m, &g_req[i], &tag), 0);
    assert_true(tag != 0);
    return tag;
}

static void method(struct fixture *fx, uint16_t ch, amqp_method_number_t id, void *decoded)
{
    amqp_frame_t f = {.frame_type = AMQP_FRAME_METHOD, .channel = ch};
    f.payload.method.id = id;
    f.payload.method.decoded = decoded;
    broker_test_frame(fx->b, &f);
}

static void ack(struct fixture *fx, uint16_t ch, uint64_t tag, bool multiple)
{
    amqp_basic_ack_t a = {.delivery_tag = tag, .multiple = multiple};
    method(fx, ch, AMQP_BASIC_ACK_METHOD, &a);
}

static void nack(struct fixture *fx, uint16_t ch, uint64_t tag, bool multiple)
{
    amqp_basic_nack_t n = {.delivery_tag = tag, .multiple = multiple, .requeue = 0};
    method(fx, ch, AMQP_BASIC_NACK_METHOD, &n);
}

static void header(struct fixture *fx, uint16_t ch, amqp_basic_properties_t *p, uint64_t size)
{
    amqp_frame_t f = {.frame_type = AMQP_FRAME_HEADER, .channel = ch};
    f.payload.properties.class_id = AMQP_BASIC_CLASS;
    f.payload.properties.body_size = size;
    f.payload.properties.decoded = p;
    broker_test_frame(fx->b, &f);
}

static void body(struct fixture *fx, uint16_t ch, const void *bytes, size_t len)
{
    amqp_frame_t f = {.frame_type = AMQP_FRAME_BODY, .channel = ch};
    f.payload.body_fragment.bytes = (void *)(uintptr_t)bytes;
    f.payload.body_fragment.len = len;
    broker_test_frame(fx->b, &f);
}

static void deliver(struct fixture *fx, uint16_t ch)
{
    amqp_basic_deliver_t d = {.consumer_tag = amqp_cstring_bytes("ctag"), .delivery_tag = 1};
    method(fx, ch, AMQP_BASIC_DELIVER_METHOD, &d);
}

static void returned(struct fixture *fx, uint16_t ch)
{
    amqp_basic_return_t r = {.reply_code = 312, .reply_text = amqp_cstring_bytes("NO_ROUTE")};
    method(fx, ch, AMQP_BASIC_RETURN_METHOD, &r);
}

/* Reply properties for rpc HANDLE. */
static amqp_basic_properties_t reply_props(struct fixture *fx, uint64_t handle, char *cid,
                                           size_t cidlen)
{
    size_t n = broker_test_cid(fx->b, handle, cid, cidlen);
    amqp_basic_properties_t p = {._flags = AMQP_BASIC_CORRELATION_ID_FLAG};
    p.correlation_id = (amqp_bytes_t){n, cid};
    return p;
}

static void test_multiple_ack_and_nack(void **state)
{
    (void)state;
    struct fixture fx;
    fixture_up(&fx, true);
    for (int i = 0; i < 6; i++)
        assert_int_equal(enlist(&fx, i, false, "m"), (uint64_t)i + 1);
    ack(&fx, 1, 3, true); /* 1..3 */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(g_rec.done[i], 1);
        assert_int_equal(g_rec.res[i], TRACKER_ACK);
    }
    assert_int_equal(g_rec.done[3], 0);
    nack(&fx, 1, 4, false); /* only 4 */
    assert_int_equal(g_rec.done[3], 1);
    assert_int_equal(g_rec.res[3], TRACKER_NACK);
    assert_int_equal(g_rec.done[4], 0);
    nack(&fx, 1, 6, true); /* 5 and 6 */
    for (int i = 4; i < 6; i++) {
        assert_int_equal(g_rec.done[i], 1);
        assert_int_equal(g_rec.res[i], TRACKER_NACK);
    }
    ack(&fx, 1, 6, true); /* again: nothing is answered twice */
    for (int i = 0; i < 6; i++)
        assert_int_equal(g_rec.done[i], 1);
    fixture_down(&fx);
}

/* A return's method, header and body frames each in a read of their own,
 * then its ack: 502 (RETURNED) for that publish only. */
static void test_return_split_across_reads(void **state)
{
    (void)state;
    struct fixture fx;
    fixture_up(&fx, true);
    assert_int_equal(enlist(&fx, 0, false, "ret-1"), 1);
    assert_int_equal(enlist(&fx, 1, false, "ok-2"), 2);
    returned(&fx, 1);
    amqp_basic_properties_t p = {._flags = AMQP_BASIC_MESSAGE_ID_FLAG};
    p.message_id = amqp_cstring_bytes("ret-1");
    header(&fx, 1, &p, 10);
    body(&fx, 1, "<r>", 3);
    assert_int_equal(g_rec.done[0], 0);
    body(&fx, 1, "x</r>\n", 7); /* 10 in all */
    ack(&fx, 1, 2, true);
    assert_int_equal(g_rec.done[0], 1);
    assert_int_equal(g_rec.res[0], TRACKER_RETURNED);
    assert_int_equal(g_rec.done[1], 1);
    assert_int_equal(g_rec.res[1], TRACKER_ACK);
    fixture_down(&fx);
}

/* After a renewal, acks that still come for the old channel's tags must
 * not confirm the new channel's publishes, which reuse tags 1, 2... */
static void test_old_channel_acks_after_renewal(void **state)
{
    (void)state;
    struct fixture fx;
    fixture_up(&fx, true);
    assert_int_equal(enlist(&fx, 0, false, "old-1"), 1);
    assert_int_equal(enlist(&fx, 1, false, "old-2"), 2);
    broker_test_renew(fx.b, 2);
    assert_int_equal(g_rec.res[0], TRACKER_LOST);
    assert_int_equal(g_rec.res[1], TRACKER_LOST);
    assert_int_equal(enlist(&fx, 2, false, "new-1"), 1);
    assert_int_equal(enlist(&fx, 3, false, "new-2"), 2);
    ack(&fx, 1, 2, true);
    nack(&fx, 1, 2, true);
    assert_int_equal(g_rec.done[2], 0);
    assert_int_equal(g_rec.done[3], 0);
    ack(&fx, 2, 2, true);
    assert_int_equal(g_rec.res[2], TRACKER_ACK);
    assert_int_equal(g_rec.res[3], TRACKER_ACK);
    assert_int_equal(g_rec.done[0], 1);
    fixture_down(&fx);
}

/* Header and body frames of another channel are not the content of the
 * method that began on ours, nor does a method there end ours. */
static void test_content_frames_matched_to_channel(void **state)
{
    (void)state;
    struct fixture fx;
    fixture_up(&fx, false);
    broker_test_up(fx.b, 2);
    uint64_t h = enlist(&fx, 0, true, "same-id");
    char cid[160];
    amqp_basic_properties_t p = reply_props(&fx, h, cid, sizeof cid);
    deliver(&fx, 2);
    header(&fx, 1, &p, 5); /* a stale channel's header: not ours */
    body(&fx, 1, "wrong", 5);
    assert_int_equal(g_rec.replies[0], 0);
    header(&fx, 2, &p, 5);
    deliver(&fx, 1);          /* a stale channel begins a content */
    body(&fx, 1, "WRONG", 5); /* and sends its body */
    body(&fx, 2, "right", 5);
    assert_int_equal(g_rec.replies[0], 1);
    assert_string_equal(g_rec.body[0], "right");
    fixture_down(&fx);
}

/* A reply for a request that waits, split over reads; a second reply with
 * that correlation id, and one with the client's id, are late. */
static void test_reply_split_and_late(void **state)
{
    (void)state;
    struct fixture fx;
    fixture_up(&fx, true);
    uint64_t h = enlist(&fx, 0, true, "client-id");
    char cid[160];
    amqp_basic_properties_t p = reply_props(&fx, h, cid, sizeof cid);
    assert_true(strcmp(cid, "client-id") != 0);
    deliver(&fx, 1);
    header(&fx, 1, &p, 6);
    body(&fx, 1, "<o>", 3);
    assert_int_equal(g_rec.replies[0], 0);
    body(&fx, 1, "</o>", 4); /* one byte more than announced: cut */
    assert_int_equal(g_rec.replies[0], 1);
    assert_int_equal(g_rec.len[0], 6);
    assert_string_equal(g_rec.body[0], "<o></o");
    uint64_t late = broker_late_replies(fx.b);
    deliver(&fx, 1);
    header(&fx, 1, &p, 2);
    body(&fx, 1, "ab", 2);
    amqp_basic_properties_t q = {._flags = AMQP_BASIC_CORRELATION_ID_FLAG};
    q.correlation_id = amqp_cstring_bytes("client-id");
    deliver(&fx, 1);
    header(&fx, 1, &q, 0);
    assert_int_equal(g_rec.replies[0], 1);
    assert_int_equal(broker_late_replies(fx.b), late + 2);
    /* The reply overtook its confirm: that confirm is dropped, and it is
     * no late confirm (its request was answered by its reply). */
    ack(&fx, 1, 1, false);
    assert_int_equal(g_rec.done[0], 0);
    assert_int_equal(broker_late_confirms(fx.b), 0);
    fixture_down(&fx);
}

/* confirm = no: no ack carries the verdict, so a return of an rpc request
 * answers it (502), matched by its correlation id. */
static void test_rpc_return_without_confirms(void **state)
{
    (void)state;
    struct fixture fx;
    fixture_up(&fx, false);
    uint64_t h0 = enlist(&fx, 0, true, "dup");
    uint64_t h1 = enlist(&fx, 1, true, "dup");
    assert_true(h0 != h1);
    char cid[160];
    amqp_basic_properties_t p = reply_props(&fx, h1, cid, sizeof cid);
    p._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
    p.message_id = amqp_cstring_bytes("dup");
    returned(&fx, 1);
    header(&fx, 1, &p, 4);
    body(&fx, 1, "<a/>", 4);
    assert_int_equal(g_rec.done[1], 1);
    assert_int_equal(g_rec.res[1], TRACKER_RETURNED);
    assert_int_equal(g_rec.done[0], 0); /* the other one with that message id waits on */
    fixture_down(&fx);
}

/* Unusable replies: an informational x-http-status, a content_type with
 * CR/LF. */
static void test_bad_replies(void **state)
{
    (void)state;
    struct fixture fx;
    fixture_up(&fx, false);
    uint64_t h0 = enlist(&fx, 0, true, "a");
    uint64_t h1 = enlist(&fx, 1, true, "b");
    char cid[160];
    amqp_basic_properties_t p = reply_props(&fx, h0, cid, sizeof cid);
    amqp_table_entry_t st = {.key = amqp_cstring_bytes("x-http-status"),
                             .value = {.kind = AMQP_FIELD_KIND_I32, .value.i32 = 101}};
    p._flags |= AMQP_BASIC_HEADERS_FLAG;
    p.headers = (amqp_table_t){1, &st};
    deliver(&fx, 1);
    header(&fx, 1, &p, 0);
    assert_int_equal(g_rec.replies[0], 1);
    assert_int_equal(g_rec.bad[0], BROKER_REPLY_BAD_STATUS);
    assert_non_null(strstr(g_rec.error[0], "101"));
    assert_non_null(strstr(g_rec.error[0], "1xx"));
    char cid1[160];
    amqp_basic_properties_t q = reply_props(&fx, h1, cid1, sizeof cid1);
    q._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
    q.content_type = amqp_cstring_bytes("text/xml\r\nSet-Cookie: x=1");
    deliver(&fx, 1);
    header(&fx, 1, &q, 1);
    body(&fx, 1, "x", 1);
    assert_int_equal(g_rec.replies[1], 1);
    assert_int_equal(g_rec.bad[1], BROKER_REPLY_BAD_CTYPE);
    fixture_down(&fx);
}

/* Correlation ids: new for every publish, whatever the request id, and
 * different between two brokers (workers, or runs) for the same handle: a
 * random prefix, not a counter anyone can guess from outside. */
static void test_correlation_ids_unique(void **state)
{
    (void)state;
    struct fixture a;
    fixture_up(&a, true);
    char ids[4][160];
    for (int i = 0; i < 3; i++) {
        uint64_t h = enlist(&a, i, true, "same");
        (void)broker_test_cid(a.b, h, ids[i], sizeof ids[i]);
        assert_true(strcmp(ids[i], "same") != 0);
        for (int j = 0; j < i; j++)
            assert_true(strcmp(ids[i], ids[j]) != 0);
    }
    struct broker *first = a.b;
    a.b = broker_new(a.base, &a.cfg->amqp, 1, on_done, NULL, on_reply, NULL);
    assert_non_null(a.b);
    broker_test_up(a.b, 1);
    uint64_t h = enlist(&a, 3, true, "same");
    (void)broker_test_cid(a.b, h, ids[3], sizeof ids[3]);
    assert_int_equal(h, 1); /* the same handle as the first broker's first */
    assert_true(strcmp(ids[3], ids[0]) != 0);
    broker_free(first);
    fixture_down(&a);
}

/* One large reply must not keep its buffer: given back after it. */
static void test_reply_buffer_shrinks(void **state)
{
    (void)state;
    struct fixture fx;
    fixture_up(&fx, false);
    enum { BIG = 4 << 20, FRAME = 128 << 10 };
    char *chunk = calloc(1, FRAME);
    assert_non_null(chunk);
    uint64_t h = enlist(&fx, 0, true, "big");
    char cid[160];
    amqp_basic_properties_t p = reply_props(&fx, h, cid, sizeof cid);
    deliver(&fx, 1);
    header(&fx, 1, &p, BIG);
    assert_true(broker_test_reply_capacity(fx.b) >= BIG); /* reassembling */
    for (size_t off = 0; off < BIG; off += FRAME)
        body(&fx, 1, chunk, FRAME);
    assert_int_equal(g_rec.replies[0], 1);
    assert_int_equal(g_rec.len[0], BIG);
    size_t cap = broker_test_reply_capacity(fx.b);
    if (cap > (64u << 10))
        fail_msg("the reply buffer still holds %zu bytes after a %d-byte reply", cap, BIG);
    /* Small replies keep theirs: no allocation per reply. */
    h = enlist(&fx, 1, true, "small");
    p = reply_props(&fx, h, cid, sizeof cid);
    deliver(&fx, 1);
    header(&fx, 1, &p, 100);
    body(&fx, 1, chunk, 100);
    assert_int_equal(g_rec.replies[1], 1);
    assert_true(broker_test_reply_capacity(fx.b) >= 100);
    /* A reply bad from its header (a content_type with CR LF) takes no
     * buffer of its size: its body is never kept. */
    h = enlist(&fx, 2, true, "bad");
    p = reply_props(&fx, h, cid, sizeof cid);
    p._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
    p.content_type = amqp_cstring_bytes("text/xml\r\nX-Evil: 1");
    deliver(&fx, 1);
    header(&fx, 1, &p, BIG);
    cap = broker_test_reply_capacity(fx.b);
    if (cap > (64u << 10))
        fail_msg("a bad %d-byte reply took a %zu-byte buffer", BIG, cap);
    for (size_t off = 0; off < BIG; off += FRAME)
        body(&fx, 1, chunk, FRAME);
    assert_int_equal(g_rec.replies[2], 1);
    assert_int_equal(g_rec.bad[2], BROKER_REPLY_BAD_CTYPE);
    /* A channel lost halfway through a big reply gives its buffer back. */
    h = enlist(&fx, 3, true, "cut");
    p = reply_props(&fx, h, cid, sizeof cid);
    deliver(&fx, 1);
    header(&fx, 1, &p, BIG);
    body(&fx, 1, chunk, FRAME);
    assert_true(broker_test_reply_capacity(fx.b) >= BIG);
    broker_test_renew(fx.b, 2);
    cap = broker_test_reply_capacity(fx.b);
    if (cap > (64u << 10))
        fail_msg("the reply buffer still holds %zu bytes after its channel was lost", cap);
    assert_int_equal(g_rec.done[3], 1); /* the request is answered as lost (503) */
    assert_int_equal(g_rec.res[3], TRACKER_LOST);
    free(chunk);
    fixture_down(&fx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_existing_queue_type),
        cmocka_unit_test(test_not_about_the_type),
        cmocka_unit_test(test_multiple_ack_and_nack),
        cmocka_unit_test(test_return_split_across_reads),
        cmocka_unit_test(test_old_channel_acks_after_renewal),
        cmocka_unit_test(test_content_frames_matched_to_channel),
        cmocka_unit_test(test_reply_split_and_late),
        cmocka_unit_test(test_rpc_return_without_confirms),
        cmocka_unit_test(test_bad_replies),
        cmocka_unit_test(test_correlation_ids_unique),
        cmocka_unit_test(test_reply_buffer_shrinks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
