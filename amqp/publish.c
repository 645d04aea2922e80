/* publish.c - broker_publish: a request's message with its properties and
 * headers, sent only when the socket has room (output.c), and the request
 * remembered by what will answer it: its delivery tag in the tracker
 * (confirm) and a correlation id of our own in the rpc table (rpc). Also
 * forgetting a request that was answered otherwise. */
#include "amqp/broker_int.h"
#include "amqp/broker_test.h"

#include <amqp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "amqp/broker_config.h"
#include "bridge/base/hdrmap.h"
#include "bridge/base/log.h"
#include "bridge/base/message.h"
#include "amqp/tracker.h"

#define BROKER_MANDATORY 1 /* every publish (CONTRACT): unroutable comes back, 502 */

/* The correlation id of rpc handle SEQ into OUT (BROKER_CID_MAX + 1 bytes);
 * its length. */
static size_t format_cid(const struct broker *b, uint64_t seq, char *out)
{
    int n = snprintf(out, BROKER_CID_MAX + 1, "%s%llx", b->cid_prefix, (unsigned long long)seq);
    return n < 0 ? 0 : (size_t)n;
}

static amqp_bytes_t bytes_of(const char *s)
{
    return s == NULL ? amqp_empty_bytes : amqp_cstring_bytes(s);
}

/* The method and header frames of a publish whose body goes in pieces, and
 * as much of the body as fits; the rest from a copy, as room comes. */
static int publish_in_pieces(struct broker *b, const struct bridge_msg *m,
                             const amqp_basic_properties_t *p, char *copy)
{
    amqp_basic_publish_t pm = {
        .ticket = 0,
        .exchange = bytes_of(m->exchange),
        .routing_key = bytes_of(m->routing_key),
        .mandatory = BROKER_MANDATORY,
        .immediate = 0,
    };
    int rc = amqp_send_method(b->conn, b->channel, AMQP_BASIC_PUBLISH_METHOD, &pm);
    if (rc != AMQP_STATUS_OK)
        return rc;
    amqp_frame_t f = {.frame_type = AMQP_FRAME_HEADER, .channel = b->channel};
    f.payload.properties.class_id = AMQP_BASIC_CLASS;
    f.payload.properties.body_size = m->body_len;
    f.payload.properties.decoded = (void *)(uintptr_t)p;
    rc = amqp_send_frame(b->conn, &f);
    if (rc != AMQP_STATUS_OK)
        return rc;
    memcpy(copy, m->body, m->body_len);
    b->out_body = copy;
    b->out_len = m->body_len;
    b->out_off = 0;
    b->out_until = broker_mono_ms() + b->cfg->write_timeout_ms;
    return broker_write_rest(b);
}

/* Remember M's request CTX before its publish: *DTAG its delivery tag
 * (confirm = yes, else 0); for rpc (M->reply_to set) *SEQ its handle and CID
 * (BROKER_CID_MAX + 1 bytes, *CID_LEN) its correlation id. BROKER_PUB_WAIT,
 * or why not (nothing remembered then). */
static enum broker_pub enlist(struct broker *b, const struct bridge_msg *m, void *ctx,
                              uint64_t *dtag, uint64_t *seq, char *cid, size_t *cid_len)
{
    bool rpc = m->reply_to != NULL;
    if (rpc && !b->rpc)
        return BROKER_PUB_UNAVAILABLE;
    if (b->cfg->confirm) {
        *dtag = tracker_add(b->tracker, ctx, m->message_id, m->message_id_len);
        broker_count_late_confirms(b, tracker_take_forgotten(b->tracker));
        if (*dtag == 0)
            return BROKER_PUB_FULL;
        size_t waiting = tracker_attached(b->tracker);
        if (waiting > b->peak_inflight)
            b->peak_inflight = waiting;
    }
    /* An rpc request waits for its reply under a correlation id of our own,
     * new for every publish: never the client's X-Request-Id, which a retry
     * or another client may send again while (or after) this one waits, so
     * that a late reply could reach the wrong request. The random prefix
     * keeps apart the ids of other workers and of earlier runs, whose late
     * replies may still be on their way. */
    if (rpc) {
        *seq = b->rpc_seq + 1;
        *cid_len = format_cid(b, *seq, cid);
        if (pending_add(b->pending, cid, *cid_len, ctx, *dtag) != PENDING_ADDED) {
            if (*dtag != 0)
                tracker_unadd(b->tracker, *dtag);
            *dtag = 0;
            return BROKER_PUB_FULL; /* a sequence number never repeats: full */
        }
        b->rpc_seq = *seq;
    }
    return BROKER_PUB_WAIT;
}

enum broker_pub broker_publish(struct broker *b, const struct bridge_msg *m, void *ctx,
                               uint64_t *tag)
{
    *tag = 0;
    if (b->state != BROKER_UP || b->conn == NULL || b->reopen != REOPEN_NONE)
        return BROKER_PUB_UNAVAILABLE;

    amqp_basic_properties_t p;
    memset(&p, 0, sizeof p);
    /* message_id always: a basic.return is matched by it (tracker.h). */
    p._flags = AMQP_BASIC_MESSAGE_ID_FLAG;
    if (!m->minimal)
        p._flags |= AMQP_BASIC_TIMESTAMP_FLAG | AMQP_BASIC_APP_ID_FLAG | AMQP_BASIC_TYPE_FLAG |
                    AMQP_BASIC_HEADERS_FLAG;
    if (m->content_type != NULL) {
        p._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
        p.content_type = amqp_cstring_bytes(m->content_type);
    }
    if (m->content_encoding != NULL) {
        p._flags |= AMQP_BASIC_CONTENT_ENCODING_FLAG;
        p.content_encoding = amqp_cstring_bytes(m->content_encoding);
    }
    if (m->persistent) {
        p._flags |= AMQP_BASIC_DELIVERY_MODE_FLAG;
        p.delivery_mode = AMQP_DELIVERY_PERSISTENT;
    }
    p.message_id = (amqp_bytes_t){m->message_id_len, (void *)(uintptr_t)m->message_id};
    if (!m->minimal) {
        p.timestamp = (uint64_t)m->timestamp;
        p.app_id = amqp_cstring_bytes("ingest-bridge");
        p.type = bytes_of(m->type);
    }
    if (m->reply_to != NULL) {
        p._flags |= AMQP_BASIC_REPLY_TO_FLAG;
        p.reply_to = amqp_cstring_bytes(m->reply_to);
    }
    if (m->expiration != NULL) {
        p._flags |= AMQP_BASIC_EXPIRATION_FLAG;
        p.expiration = amqp_cstring_bytes(m->expiration);
    }
    if (m->has_priority) {
        p._flags |= AMQP_BASIC_PRIORITY_FLAG;
        p.priority = m->priority;
    }
    size_t n = 0;
    /* Every variable part of the method and header frames (each short
     * string at most 255 bytes, bounded at config time or in http/). */
    size_t need = m->body_len + BROKER_FRAME_OVERHEAD + m->message_id_len + p.content_type.len +
                  p.type.len + bytes_of(m->exchange).len + bytes_of(m->routing_key).len +
                  (m->reply_to != NULL ? p.reply_to.len + BROKER_CID_MAX : 0) +
                  (m->expiration != NULL ? p.expiration.len : 0) + p.content_encoding.len +
                  1 /* priority */;
    if (m->headers != NULL && !m->minimal) {
        for (size_t i = 0; i < m->headers->n && n < BROKER_MAX_HEADERS; i++) {
            const struct hdrmap_kv *kv = &m->headers->kv[i];
            if (strlen(kv->name) > 255)
                continue; /* field names are AMQP short strings */
            b->hdr[n].key = amqp_cstring_bytes(kv->name);
            b->hdr[n].value.kind = AMQP_FIELD_KIND_UTF8;
            b->hdr[n].value.value.bytes = amqp_cstring_bytes(kv->value);
            need += b->hdr[n].key.len + b->hdr[n].value.value.bytes.len + 8;
            n++;
        }
    }
    p.headers = (amqp_table_t){(int)n, b->hdr};

    enum fit fit = broker_publish_fits(b, need - m->body_len, m->body_len);
    if (fit == FIT_WAIT && b->out_body != NULL)
        return BROKER_PUB_BUSY; /* behind a body in pieces: no news of the socket */
    if (fit == FIT_WAIT) {
        if (!b->socket_full)
            log_info("broker: %s is not reading fast enough (socket buffer full): publishes "
                     "wait until it catches up",
                     b->node);
        b->socket_full = true;
        return BROKER_PUB_BUSY;
    }
    if (b->socket_full) {
        log_info("broker: %s reads again: publishing", b->node);
        b->socket_full = false;
    }
    /* The copy a body in pieces is written from, made before anything is
     * sent or remembered. */
    char *copy = NULL;
    if (fit == FIT_PIECES && (copy = malloc(m->body_len)) == NULL) {
        log_error("%.*s: out of memory for a %zu-byte body", (int)m->message_id_len, m->message_id,
                  m->body_len);
        return BROKER_PUB_FULL;
    }
    bool rpc = m->reply_to != NULL;
    uint64_t dtag = 0, seq = 0;
    char cid[BROKER_CID_MAX + 1];
    size_t cid_len = 0;
    enum broker_pub res = enlist(b, m, ctx, &dtag, &seq, cid, &cid_len);
    if (res != BROKER_PUB_WAIT) {
        free(copy);
        return res;
    }
    if (rpc) {
        p._flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
        p.correlation_id = (amqp_bytes_t){cid_len, cid};
    }
    *tag = rpc ? seq : dtag;
    amqp_bytes_t body = {m->body_len, (void *)(uintptr_t)m->body};
    int rc;
    broker_cork(b);
    if (fit == FIT_PIECES) {
        rc = publish_in_pieces(b, m, &p, copy);
        if (rc != AMQP_STATUS_OK && b->out_body != copy)
            free(copy); /* not taken: broker_lost() below frees it when it was */
    } else {
        rc = amqp_basic_publish(b->conn, b->channel, bytes_of(m->exchange),
                                bytes_of(m->routing_key), BROKER_MANDATORY, 0, &p, body);
    }
    if (rc != AMQP_STATUS_OK) {
        /* The request is answered by our caller; forget its tag first so
         * broker_lost() does not answer it a second time. */
        if (dtag != 0)
            tracker_unadd(b->tracker, dtag);
        *tag = 0;
        if (rpc)
            (void)pending_remove(b->pending, cid, cid_len, NULL);
        broker_lost(b, amqp_error_string2(rc));
        return BROKER_PUB_UNAVAILABLE;
    }
    /* Never pump under the caller: it has not stored the tag yet. */
    broker_pump_soon(b);
    return b->cfg->confirm || rpc ? BROKER_PUB_WAIT : BROKER_PUB_SENT;
}

void broker_detach(struct broker *b, uint64_t tag)
{
    if (tag != 0)
        (void)tracker_detach(b->tracker, tag);
}

void broker_rpc_forget(struct broker *b, uint64_t handle)
{
    if (handle == 0)
        return;
    char cid[BROKER_CID_MAX + 1];
    uint64_t tag = 0;
    size_t len = format_cid(b, handle, cid);
    if (pending_remove(b->pending, cid, len, &tag) != NULL && tag != 0)
        (void)tracker_detach(b->tracker, tag); /* a no-op once its confirm came */
}

int broker_test_enlist(struct broker *b, const struct bridge_msg *m, void *ctx, uint64_t *tag)
{
    uint64_t dtag = 0, seq = 0;
    char cid[BROKER_CID_MAX + 1];
    size_t cid_len = 0;
    *tag = 0;
    if (enlist(b, m, ctx, &dtag, &seq, cid, &cid_len) != BROKER_PUB_WAIT)
        return -1;
    *tag = m->reply_to != NULL ? seq : dtag;
    return 0;
}

size_t broker_test_cid(const struct broker *b, uint64_t handle, char *out, size_t outlen)
{
    char cid[BROKER_CID_MAX + 1];
    size_t n = format_cid(b, handle, cid);
    snprintf(out, outlen, "%s", cid);
    return n;
}
