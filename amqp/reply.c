/* reply.c - an rpc reply, reassembled from its header frame and body frames
 * (which may arrive over several pumps) into a buffer of our own, checked
 * (x-http-status, content_type, size), then handed to the request that
 * waits for it by correlation id; a reply nobody waits for is counted and
 * dropped. */
#include "amqp/broker_int.h"
#include "amqp/broker_test.h"

#include <amqp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/base/log.h"
#include "amqp/tracker.h"

/* Largest rpc reply body taken; a larger one is answered 502. */
#define BROKER_MAX_REPLY (64u << 20)
/* The reply buffer kept between replies; a larger one is given back after
 * its reply, so that one 64 MiB reply does not stay with the worker. */
#define BROKER_REPLY_KEEP (64u << 10)

/* May a reply's content_type become a Content-Type header? Not with a
 * control byte (CR and LF would end the header, NUL cut it): HTAB, the
 * visible ASCII and bytes >= 0x80 (obs-text) only. */
static bool ctype_ok(const void *bytes, size_t len)
{
    const unsigned char *c = bytes;
    for (size_t i = 0; i < len; i++)
        if ((c[i] < 0x20 && c[i] != '\t') || c[i] == 0x7f)
            return false;
    return true;
}

/* x-http-status of a reply: 200 when absent; when present but not a final
 * HTTP status (200..599): -N for an informational N (100..199), else -1. */
static int reply_status(const amqp_basic_properties_t *p)
{
    if (!(p->_flags & AMQP_BASIC_HEADERS_FLAG))
        return 200;
    for (int i = 0; i < p->headers.num_entries; i++) {
        const amqp_table_entry_t *e = &p->headers.entries[i];
        if (e->key.len != 13 || memcmp(e->key.bytes, "x-http-status", 13) != 0)
            continue;
        const amqp_field_value_t *v = &e->value;
        long long n;
        switch (v->kind) {
        case AMQP_FIELD_KIND_I8:
            n = v->value.i8;
            break;
        case AMQP_FIELD_KIND_U8:
            n = v->value.u8;
            break;
        case AMQP_FIELD_KIND_I16:
            n = v->value.i16;
            break;
        case AMQP_FIELD_KIND_U16:
            n = v->value.u16;
            break;
        case AMQP_FIELD_KIND_I32:
            n = v->value.i32;
            break;
        case AMQP_FIELD_KIND_U32:
            n = v->value.u32;
            break;
        case AMQP_FIELD_KIND_I64:
            n = v->value.i64;
            break;
        case AMQP_FIELD_KIND_U64:
            n = v->value.u64 > 999 ? -1 : (long long)v->value.u64;
            break;
        case AMQP_FIELD_KIND_UTF8:
        case AMQP_FIELD_KIND_BYTES: {
            char txt[8];
            if (v->value.bytes.len == 0 || v->value.bytes.len >= sizeof txt)
                return -1;
            memcpy(txt, v->value.bytes.bytes, v->value.bytes.len);
            txt[v->value.bytes.len] = '\0';
            char *end;
            n = strtoll(txt, &end, 10);
            if (*end != '\0')
                return -1;
            break;
        }
        default:
            return -1;
        }
        if (n >= 100 && n <= 199)
            return (int)-n;
        return n >= 200 && n <= 599 ? (int)n : -1;
    }
    return 200;
}

/* The reply buffer back to at most BROKER_REPLY_KEEP bytes. */
void broker_shrink_reply(struct reply_state *rs)
{
    if (rs->cap <= BROKER_REPLY_KEEP)
        return;
    free(rs->buf);
    rs->buf = NULL;
    rs->cap = 0;
    rs->len = 0;
}

/* The whole reply is here: hand it to the request that waits for it, if one
 * still does (it may have timed out or its client left meanwhile). */
void broker_finish_reply(struct broker *b)
{
    struct reply_state *rs = &b->rep;
    b->content = CONTENT_NONE;
    uint64_t tag = 0;
    void *ctx = pending_remove(b->pending, rs->id, rs->id_len, &tag);
    if (ctx == NULL) {
        atomic_fetch_add_explicit(&b->late_replies, 1, memory_order_relaxed);
        log_debug("broker: dropped a reply for %.*s: nobody waits for it", (int)rs->id_len, rs->id);
        broker_shrink_reply(rs);
        return;
    }
    struct broker_reply r = {
        .status = rs->status,
        .content_type = rs->has_ctype ? rs->ctype : NULL,
        .traceparent = rs->traceparent[0] != '\0' ? rs->traceparent : NULL,
        .body = rs->buf != NULL ? rs->buf : "",
        .len = rs->len,
        .bad = rs->bad,
        .error = rs->error,
    };
    /* A reply may overtake the confirm of its request (the broker confirms a
     * persistent message once on disk): that confirm is expected, not late,
     * and is dropped on arrival without being counted. */
    if (tag != 0)
        (void)tracker_detach_expected(b->tracker, tag);
    b->reply(b->arg, ctx, &r); /* the answer copied the body */
    broker_shrink_reply(rs);
}

/* The reply's traceparent header (a string of fewer than SIZE bytes) into
 * OUT, else "". */
static void reply_traceparent(const amqp_basic_properties_t *p, char *out, size_t size)
{
    out[0] = '\0';
    if (p == NULL || !(p->_flags & AMQP_BASIC_HEADERS_FLAG))
        return;
    for (int i = 0; i < p->headers.num_entries; i++) {
        const amqp_table_entry_t *e = &p->headers.entries[i];
        if (e->key.len != 11 || memcmp(e->key.bytes, "traceparent", 11) != 0)
            continue;
        const amqp_field_value_t *v = &e->value;
        if ((v->kind == AMQP_FIELD_KIND_UTF8 || v->kind == AMQP_FIELD_KIND_BYTES) &&
            v->value.bytes.len < size &&
            memchr(v->value.bytes.bytes, '\0', v->value.bytes.len) == NULL) {
            memcpy(out, v->value.bytes.bytes, v->value.bytes.len);
            out[v->value.bytes.len] = '\0';
        }
        return;
    }
}

void broker_start_reply(struct broker *b, const amqp_frame_t *f)
{
    struct reply_state *rs = &b->rep;
    const amqp_basic_properties_t *p = f->payload.properties.decoded;
    uint64_t size = f->payload.properties.body_size;
    rs->id_len = 0;
    if (p != NULL && (p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG) &&
        p->correlation_id.len <= PENDING_ID_MAX) {
        memcpy(rs->id, p->correlation_id.bytes, p->correlation_id.len);
        rs->id_len = p->correlation_id.len;
    }
    rs->id[rs->id_len] = '\0';
    if (rs->id_len == 0 || pending_find(b->pending, rs->id, rs->id_len) == NULL) {
        /* Late (timed out, client gone), twice, or not ours: skip it. */
        atomic_fetch_add_explicit(&b->late_replies, 1, memory_order_relaxed);
        log_debug("broker: dropped a reply for '%s': nobody waits for it", rs->id);
        b->content = size > 0 ? CONTENT_SKIP : CONTENT_NONE;
        b->content_left = size;
        return;
    }
    rs->bad = BROKER_REPLY_OK;
    rs->error = NULL;
    /* An empty content_type is none: application/xml, as without one. */
    rs->has_ctype = p != NULL && (p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG) &&
                    p->content_type.len > 0 && p->content_type.len <= BROKER_CTYPE_MAX;
    if (rs->has_ctype) {
        memcpy(rs->ctype, p->content_type.bytes, p->content_type.len);
        rs->ctype[p->content_type.len] = '\0';
        if (!ctype_ok(p->content_type.bytes, p->content_type.len)) {
            /* It would not make a header (evhttp refuses CR/LF and then
             * silently sends text/html; a NUL would cut it short): the
             * worker is broken, and guessing a type for its body is not ours
             * to do. */
            rs->bad = BROKER_REPLY_BAD_CTYPE;
            rs->error = "the worker's reply has a content_type with control characters";
        }
    }
    rs->status = reply_status(p);
    reply_traceparent(p, rs->traceparent, sizeof rs->traceparent);
    if (rs->status < 0 && rs->bad == BROKER_REPLY_OK) {
        rs->bad = BROKER_REPLY_BAD_STATUS;
        if (rs->status >= -199 && rs->status <= -100)
            snprintf(rs->errbuf, sizeof rs->errbuf,
                     "the worker's reply has x-http-status %d, an informational (1xx) status, "
                     "which cannot be a final response",
                     -rs->status);
        else
            snprintf(rs->errbuf, sizeof rs->errbuf,
                     "the worker's reply has an x-http-status that is not 200..599");
        rs->error = rs->errbuf;
    }
    rs->len = 0;
    if (size > BROKER_MAX_REPLY) {
        rs->bad = BROKER_REPLY_TOO_LARGE;
        rs->error = "the worker's reply is larger than 64 MiB";
    } else if (rs->bad == BROKER_REPLY_OK && size > rs->cap) {
        /* Nothing in it is kept: a new buffer, not a realloc's copy. */
        free(rs->buf);
        rs->buf = malloc((size_t)size);
        rs->cap = rs->buf != NULL ? (size_t)size : 0;
        if (rs->buf == NULL) {
            rs->bad = BROKER_REPLY_NO_MEMORY;
            rs->error = "out of memory for the worker's reply";
        }
    }
    b->content_left = size;
    if (size == 0)
        broker_finish_reply(b);
}

size_t broker_test_reply_capacity(const struct broker *b)
{
    return b->rep.cap;
}
