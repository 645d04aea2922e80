/* connect.c - the connector thread: everything of a connection that blocks
 * (TCP or TLS connect, login, channel open, confirm select, queue declare,
 * the direct reply-to consumer), each step bounded by a timeout. It works
 * on its struct connect_job only, never on the broker, and hands the open
 * connection back through the broker's pipe (reconnect.c takes it). */
#include "amqp/broker_int.h"

#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <unistd.h>

#include "amqp/broker_config.h"
#include "bridge/base/log.h"

#define BROKER_CONNECT_TIMEOUT_S 5 /* TCP connect, handshake and each sync rpc */
#define BROKER_FRAME_MAX 131072    /* RabbitMQ's default frame_max */
/* Bounds of TCP_USER_TIMEOUT on the broker socket (see broker_connect_main). */
#define BROKER_USER_TIMEOUT_MIN_MS 5000
#define BROKER_USER_TIMEOUT_MAX_MS 60000

/* Text of a failed synchronous rabbitmq-c call. */
void broker_rpc_error(amqp_rpc_reply_t r, const char *what, char *buf, size_t len)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        snprintf(buf, len, "%s: ok", what);
        break;
    case AMQP_RESPONSE_NONE:
        snprintf(buf, len, "%s: missing reply", what);
        break;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        snprintf(buf, len, "%s: %s", what, amqp_error_string2(r.library_error));
        break;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            const amqp_connection_close_t *c = r.reply.decoded;
            snprintf(buf, len, "%s: connection closed by broker: %u %.*s", what, c->reply_code,
                     (int)c->reply_text.len, (const char *)c->reply_text.bytes);
        } else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            const amqp_channel_close_t *c = r.reply.decoded;
            snprintf(buf, len, "%s: channel closed by broker: %u %.*s", what, c->reply_code,
                     (int)c->reply_text.len, (const char *)c->reply_text.bytes);
        } else {
            snprintf(buf, len, "%s: broker error, method 0x%08x", what, r.reply.id);
        }
        break;
    }
}

/* Open the channel, enable confirms. Synchronous: the connector thread only
 * (a reopen on a live connection goes step by step, see reopen_step). */
static int open_channel(amqp_connection_state_t conn, amqp_channel_t ch, bool confirm, char *err,
                        size_t errlen)
{
    amqp_channel_open(conn, ch);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(conn);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        broker_rpc_error(r, "channel.open", err, errlen);
        return -1;
    }
    if (confirm) {
        amqp_confirm_select(conn, ch);
        r = amqp_get_rpc_reply(conn);
        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            broker_rpc_error(r, "confirm.select", err, errlen);
            return -1;
        }
    }
    return 0;
}

/* Direct reply-to: the consumer must exist on the channel before the first
 * publish that names it (else 406), so it is set up with the channel, at
 * connect and on every reopen. No-ack: a reply to a closed channel is
 * dropped by the broker anyway. */
static int consume_replies(amqp_connection_state_t conn, amqp_channel_t ch, char *err,
                           size_t errlen)
{
    amqp_basic_consume(conn, ch, amqp_cstring_bytes(BROKER_REPLY_TO), amqp_empty_bytes, 0, 1, 0,
                       amqp_empty_table);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(conn);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        broker_rpc_error(r, "consume " BROKER_REPLY_TO, err, errlen);
        return -1;
    }
    return 0;
}

bool broker_has_rpc_route(const struct broker_config *cfg)
{
    for (size_t i = 0; i < cfg->n_routes; i++)
        if (cfg->routes[i].rpc)
            return true;
    return false;
}

int broker_existing_queue_type(const char *text, size_t len, char *out, size_t outlen)
{
    static const char mark[] = "current is ";
    const size_t ml = sizeof mark - 1;
    const char *end = text + len;
    if (memmem(text, len, "'x-queue-type'", 14) == NULL)
        return -1;
    const char *p = memmem(text, len, mark, ml);
    if (p == NULL)
        return -1;
    p += ml;
    /* "current is none": declared without x-queue-type, which RabbitMQ
     * makes a classic queue. */
    if ((size_t)(end - p) >= 4 && memcmp(p, "none", 4) == 0) {
        snprintf(out, outlen, "classic");
        return 0;
    }
    /* "current is 'quorum'" or "current is the value 'quorum' of type ..." */
    const char *q = memchr(p, '\'', (size_t)(end - p));
    if (q == NULL)
        return -1;
    q++;
    const char *qe = memchr(q, '\'', (size_t)(end - q));
    if (qe == NULL || qe == q)
        return -1;
    snprintf(out, outlen, "%.*s", (int)(qe - q), q);
    return 0;
}

/* A 406 on queue.declare: the queue exists with other properties than the
 * route declares. Name the route, both types when the broker's text gives
 * the existing one, and quote the broker. */
/* The arguments RT's queue is declared with, as text: "x-queue-type=classic,
 * x-message-ttl=1000", for the message that names both sides of a refusal. */
static void args_text(const amqp_table_t *t, char *out, size_t len)
{
    size_t used = 0;
    out[0] = '\0';
    for (int i = 0; i < t->num_entries && used < len; i++) {
        const amqp_table_entry_t *e = &t->entries[i];
        const char *sep = i == 0 ? "" : ", ";
        int n;
        if (e->value.kind == AMQP_FIELD_KIND_UTF8)
            n = snprintf(out + used, len - used, "%s%.*s=%.*s", sep, (int)e->key.len,
                         (const char *)e->key.bytes, (int)e->value.value.bytes.len,
                         (const char *)e->value.value.bytes.bytes);
        else
            n = snprintf(out + used, len - used, "%s%.*s=%lld", sep, (int)e->key.len,
                         (const char *)e->key.bytes, (long long)e->value.value.i64);
        used += n > 0 ? (size_t)n : 0;
    }
}

static void describe_refusal(const struct broker_route *rt, const amqp_table_t *args,
                             const amqp_channel_close_t *c, char *err, size_t errlen)
{
    const char *want = broker_queue_type_name(rt->queue_type);
    const char *text = c->reply_text.bytes;
    size_t len = c->reply_text.len;
    char have[32], ours[400];
    args_text(args, ours, sizeof ours);
    if (broker_existing_queue_type(text, len, have, sizeof have) == 0)
        snprintf(err, errlen,
                 "route %s: queue '%s' exists as a %s queue but the route has queue_type = %s "
                 "(broker: %u %.*s)",
                 rt->name, rt->queue, have, want, c->reply_code, (int)len, text);
    else
        snprintf(err, errlen,
                 "route %s: queue '%s' exists with other arguments than the route declares "
                 "(the route: durable, %s; the broker's queue: %u %.*s)",
                 rt->name, rt->queue, ours, c->reply_code, (int)len, text);
}

/* The arguments of RT's queue into ENT (room for 8), their count. Always
 * x-queue-type, classic too: RabbitMQ takes x-queue-type = classic as equal
 * to a classic queue declared without it, and a quorum queue then refuses
 * the declare instead of being used silently. The others only when set. */
static int queue_arguments(const struct broker_route *rt, amqp_table_entry_t *ent)
{
    int n = 0;
    const struct queue_args *a = &rt->args;
#define ARG_STR(k, v)                                                                              \
    ent[n++] = (amqp_table_entry_t)                                                                \
    {                                                                                              \
        .key = amqp_cstring_bytes(k), .value = {                                                   \
            .kind = AMQP_FIELD_KIND_UTF8,                                                          \
            .value.bytes = amqp_cstring_bytes(v)                                                   \
        }                                                                                          \
    }
#define ARG_INT(k, v)                                                                              \
    ent[n++] = (amqp_table_entry_t)                                                                \
    {                                                                                              \
        .key = amqp_cstring_bytes(k), .value = {                                                   \
            .kind = AMQP_FIELD_KIND_I64,                                                           \
            .value.i64 = (int64_t)(v)                                                              \
        }                                                                                          \
    }
    ARG_STR("x-queue-type", broker_queue_type_name(rt->queue_type));
    if (a->dead_letter_exchange != NULL && a->dead_letter_exchange[0] != '\0')
        ARG_STR("x-dead-letter-exchange", a->dead_letter_exchange);
    if (a->dead_letter_routing_key != NULL && a->dead_letter_routing_key[0] != '\0')
        ARG_STR("x-dead-letter-routing-key", a->dead_letter_routing_key);
    if (a->max_length > 0)
        ARG_INT("x-max-length", a->max_length);
    if (a->max_length_bytes > 0)
        ARG_INT("x-max-length-bytes", a->max_length_bytes);
    if (a->overflow != NULL && a->overflow[0] != '\0')
        ARG_STR("x-overflow", a->overflow);
    if (a->message_ttl_ms > 0)
        ARG_INT("x-message-ttl", a->message_ttl_ms);
    if (a->max_priority > 0)
        ARG_INT("x-max-priority", a->max_priority);
#undef ARG_STR
#undef ARG_INT
    return n;
}

/* Every name a templated exchange may become must exist: a publish to one
 * that does not would close the channel under every request waiting on it.
 * Passive: checked, never made. */
static int check_exchanges(amqp_connection_state_t conn, amqp_channel_t ch,
                           const struct broker_route *rt, bool *refused, char *err, size_t errlen)
{
    for (size_t k = 0; k < rt->n_exchanges; k++) {
        amqp_exchange_declare(conn, ch, amqp_cstring_bytes(rt->exchanges[k]),
                              amqp_cstring_bytes("direct"), 1, 0, 0, 0, amqp_empty_table);
        amqp_rpc_reply_t r = amqp_get_rpc_reply(conn);
        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            char what[400];
            snprintf(what, sizeof what, "route %s: exchange '%s' (of exchanges)", rt->name,
                     rt->exchanges[k]);
            broker_rpc_error(r, what, err, errlen);
            /* Not there: the config and the broker disagree, as a refused
             * declare shows; no retry makes it. */
            *refused =
                r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
                r.reply.id == AMQP_CHANNEL_CLOSE_METHOD &&
                ((const amqp_channel_close_t *)r.reply.decoded)->reply_code == AMQP_NOT_FOUND;
            return -1;
        }
    }
    return 0;
}

/* Declare (and bind) every route's queue. *REFUSED: the broker answered
 * 406 PRECONDITION_FAILED, a mismatch with the config no retry can fix. */
static int declare_queues(amqp_connection_state_t conn, amqp_channel_t ch,
                          const struct broker_config *cfg, bool *refused, char *err, size_t errlen)
{
    for (size_t i = 0; i < cfg->n_routes; i++) {
        const struct broker_route *rt = &cfg->routes[i];
        if (check_exchanges(conn, ch, rt, refused, err, errlen) != 0)
            return -1;
        if (rt->queue[0] == '\0' || rt->declare == DECLARE_NO)
            continue;
        bool passive = rt->declare == DECLARE_PASSIVE;
        amqp_table_entry_t ent[8];
        amqp_table_t args = {.num_entries = passive ? 0 : queue_arguments(rt, ent), .entries = ent};
        amqp_queue_declare(conn, ch, amqp_cstring_bytes(rt->queue), passive, 1, 0, 0, args);
        amqp_rpc_reply_t r = amqp_get_rpc_reply(conn);
        if (passive && r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
            r.reply.id == AMQP_CHANNEL_CLOSE_METHOD &&
            ((const amqp_channel_close_t *)r.reply.decoded)->reply_code == AMQP_NOT_FOUND) {
            /* Someone else's topology, and it is not there: no retry makes it. */
            const amqp_channel_close_t *c = r.reply.decoded;
            snprintf(err, errlen,
                     "route %s: queue '%s' does not exist (declare = passive: the bridge checks, "
                     "never creates it) (broker: %u %.*s)",
                     rt->name, rt->queue, c->reply_code, (int)c->reply_text.len,
                     (const char *)c->reply_text.bytes);
            *refused = true;
            return -1;
        }
        if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
            r.reply.id == AMQP_CHANNEL_CLOSE_METHOD &&
            ((const amqp_channel_close_t *)r.reply.decoded)->reply_code ==
                AMQP_PRECONDITION_FAILED) {
            describe_refusal(rt, &args, r.reply.decoded, err, errlen);
            *refused = true;
            return -1;
        }
        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            char what[300];
            snprintf(what, sizeof what, "route %s: declare queue '%s'", rt->name, rt->queue);
            broker_rpc_error(r, what, err, errlen);
            return -1;
        }
        if (rt->exchange[0] == '\0' || passive)
            continue; /* the default exchange routes by queue name already; passive binds nothing */
        amqp_queue_bind(conn, ch, amqp_cstring_bytes(rt->queue), amqp_cstring_bytes(rt->exchange),
                        amqp_cstring_bytes(rt->routing_key), amqp_empty_table);
        r = amqp_get_rpc_reply(conn);
        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            char what[300];
            snprintf(what, sizeof what, "route %s: bind queue '%s' to exchange '%s'", rt->name,
                     rt->queue, rt->exchange);
            broker_rpc_error(r, what, err, errlen);
            return -1;
        }
    }
    return 0;
}

#define ENTRY_BOOL(k, v)                                                                           \
    {                                                                                              \
        .key = amqp_cstring_bytes(k), .value = {                                                   \
            .kind = AMQP_FIELD_KIND_BOOLEAN,                                                       \
            .value.boolean = (v)                                                                   \
        }                                                                                          \
    }
#define ENTRY_STR(k, v)                                                                            \
    {                                                                                              \
        .key = amqp_cstring_bytes(k), .value = {                                                   \
            .kind = AMQP_FIELD_KIND_UTF8,                                                          \
            .value.bytes = amqp_cstring_bytes(v)                                                   \
        }                                                                                          \
    }

/* The first queued OpenSSL error of this thread as text, or "". */
static const char *ssl_reason(void)
{
    unsigned long e = ERR_get_error();
    const char *r = e != 0 ? ERR_reason_error_string(e) : NULL;
    ERR_clear_error();
    return r != NULL ? r : "";
}

/* An amqps:// socket for U: TLS 1.2 or later, the broker's certificate
 * checked against [amqp] tls_ca (else the system's CAs) and its name or
 * address against U's host, a client certificate if one is configured.
 * Host names are checked by OpenSSL itself (X509_VERIFY_PARAM, which knows
 * IP addresses and wildcards), not by rabbitmq-c 0.11's own check, which
 * only knows DNS names. Connector thread only. NULL with the reason in err. */
static amqp_socket_t *tls_socket(amqp_connection_state_t conn, const struct broker_config *cfg,
                                 const struct broker_uri *u, char *err, size_t errlen)
{
    ERR_clear_error();
    amqp_socket_t *sock = amqp_ssl_socket_new(conn);
    SSL_CTX *ctx = sock != NULL ? amqp_ssl_socket_get_context(sock) : NULL;
    if (ctx == NULL) {
        snprintf(err, errlen, "TLS: cannot set up a context: %s", ssl_reason());
        return NULL;
    }
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
        snprintf(err, errlen, "TLS: cannot require TLS 1.2: %s", ssl_reason());
        return NULL;
    }
    amqp_ssl_socket_set_verify_hostname(sock, 0); /* OpenSSL's check below instead */
    amqp_ssl_socket_set_verify_peer(sock, cfg->tls_verify);
    if (cfg->tls_verify) {
        int ok = cfg->tls_ca[0] != '\0'
                     ? amqp_ssl_socket_set_cacert(sock, cfg->tls_ca) == AMQP_STATUS_OK
                     : SSL_CTX_set_default_verify_paths(ctx) == 1;
        if (!ok) {
            snprintf(err, errlen, "tls_ca %s: no CA certificate in it: %s",
                     cfg->tls_ca[0] != '\0' ? cfg->tls_ca : "(system)", ssl_reason());
            return NULL;
        }
        /* Fail the handshake itself on a bad certificate, not after it. */
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        X509_VERIFY_PARAM *param = SSL_CTX_get0_param(ctx);
        struct in6_addr a6;
        struct in_addr a4;
        bool ip = inet_pton(AF_INET, u->host, &a4) == 1 || inet_pton(AF_INET6, u->host, &a6) == 1;
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if ((ip ? X509_VERIFY_PARAM_set1_ip_asc(param, u->host)
                : X509_VERIFY_PARAM_set1_host(param, u->host, 0)) != 1) {
            snprintf(err, errlen, "TLS: cannot check the name %s: %s", u->host, ssl_reason());
            return NULL;
        }
    }
    if (cfg->tls_cert[0] != '\0' &&
        amqp_ssl_socket_set_key(sock, cfg->tls_cert, cfg->tls_key) != AMQP_STATUS_OK) {
        snprintf(err, errlen, "tls_cert %s / tls_key %s: cannot use them: %s", cfg->tls_cert,
                 cfg->tls_key, ssl_reason());
        return NULL;
    }
    return sock;
}

/* Why amqp_socket_open_noblock failed, into the job's err; for TLS with
 * OpenSSL's reason ("certificate verify failed: ...") when it has one. */
static void tls_connect_error(struct connect_job *j, const struct broker_uri *u, int rc)
{
    const char *why = u->tls ? ssl_reason() : "";
    if (why[0] != '\0')
        snprintf(j->err, sizeof j->err, "connect to %s:%d: %s: %s", u->host, u->port,
                 amqp_error_string2(rc), why);
    else
        snprintf(j->err, sizeof j->err, "connect to %s:%d: %s", u->host, u->port,
                 amqp_error_string2(rc));
}

/* The connector thread: everything that blocks, bounded by timeouts. */
void *broker_connect_main(void *p)
{
    struct connect_job *j = p;
    const struct broker_uri *u = j->uri;
    struct timeval tv = {BROKER_CONNECT_TIMEOUT_S, 0};
    char name[64];
    snprintf(name, sizeof name, "ingest-bridge w%u", j->worker);

    amqp_connection_state_t conn = amqp_new_connection();
    if (conn == NULL) {
        snprintf(j->err, sizeof j->err, "out of memory");
        goto out;
    }
    amqp_socket_t *sock =
        u->tls ? tls_socket(conn, j->cfg, u, j->err, sizeof j->err) : amqp_tcp_socket_new(conn);
    if (sock == NULL) {
        if (!u->tls)
            snprintf(j->err, sizeof j->err, "out of memory");
        goto fail;
    }
    int rc = amqp_socket_open_noblock(sock, u->host, u->port, &tv);
    if (rc != AMQP_STATUS_OK) {
        tls_connect_error(j, u, rc);
        goto fail;
    }
    /* rabbitmq-c writes without a time limit. A broker that stops reading
     * while we are inside a write (frozen, paused) keeps acknowledging TCP
     * with a zero window forever; this makes the kernel give up on it, the
     * write fail and the connection count as lost. */
    uint64_t ut = j->cfg->heartbeat_ms > 0 ? j->cfg->heartbeat_ms : BROKER_USER_TIMEOUT_MAX_MS / 2;
    ut = ut < BROKER_USER_TIMEOUT_MIN_MS   ? BROKER_USER_TIMEOUT_MIN_MS
         : ut > BROKER_USER_TIMEOUT_MAX_MS ? BROKER_USER_TIMEOUT_MAX_MS
                                           : ut;
    unsigned int ut_ms = (unsigned int)ut;
    if (setsockopt(amqp_get_sockfd(conn), IPPROTO_TCP, TCP_USER_TIMEOUT, &ut_ms, sizeof ut_ms) != 0)
        log_warn("broker: cannot set TCP_USER_TIMEOUT: %s", strerror(errno));
    if (amqp_set_handshake_timeout(conn, &tv) != AMQP_STATUS_OK ||
        amqp_set_rpc_timeout(conn, &tv) != AMQP_STATUS_OK) {
        snprintf(j->err, sizeof j->err, "cannot set timeouts");
        goto fail;
    }
    /* connection.blocked is only sent to clients that announce it. */
    amqp_table_entry_t caps[] = {
        ENTRY_BOOL("connection.blocked", 1),
        ENTRY_BOOL("publisher_confirms", 1),
        ENTRY_BOOL("basic.nack", 1),
        ENTRY_BOOL("consumer_cancel_notify", 1),
        ENTRY_BOOL("authentication_failure_close", 1),
    };
    amqp_table_entry_t props[] = {
        {.key = amqp_cstring_bytes("capabilities"),
         .value = {.kind = AMQP_FIELD_KIND_TABLE,
                   .value.table = {.num_entries = sizeof caps / sizeof caps[0], .entries = caps}}},
        ENTRY_STR("product", "ingest-bridge"),
        ENTRY_STR("connection_name", name),
    };
    amqp_table_t props_table = {.num_entries = sizeof props / sizeof props[0], .entries = props};
    int heartbeat_s = (int)(j->cfg->heartbeat_ms / 1000);
    if (j->cfg->heartbeat_ms > 0 && heartbeat_s == 0)
        heartbeat_s = 1;
    amqp_rpc_reply_t r =
        amqp_login_with_properties(conn, u->vhost, 0, BROKER_FRAME_MAX, heartbeat_s, &props_table,
                                   AMQP_SASL_METHOD_PLAIN, u->user, u->password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        broker_rpc_error(r, "login", j->err, sizeof j->err);
        /* TLS 1.3: a broker that refuses our certificate says so only now,
         * in an alert, which rabbitmq-c reports as "a SSL error"; OpenSSL's
         * reason, when it is still queued, says which. */
        const char *why = u->tls ? ssl_reason() : "";
        size_t n = strlen(j->err);
        if (why[0] != '\0' && n < sizeof j->err)
            snprintf(j->err + n, sizeof j->err - n, ": %s", why);
        goto fail;
    }
    if (open_channel(conn, j->channel, j->cfg->confirm, j->err, sizeof j->err) != 0)
        goto fail;
    if (declare_queues(conn, j->channel, j->cfg, &j->refused, j->err, sizeof j->err) != 0)
        goto fail;
    if (broker_has_rpc_route(j->cfg) &&
        consume_replies(conn, j->channel, j->err, sizeof j->err) != 0)
        goto fail;
    j->conn = conn;
    goto out;
fail:
    amqp_destroy_connection(conn);
out:;
    char c = 'c';
    while (write(j->notify_fd, &c, 1) < 0 && errno == EINTR) {
    }
    return NULL;
}
