/* message.h - one AMQP message as the bridge wants it published; filled by
 * the worker from an HTTP request, turned into frames by amqp/broker.c. */
#ifndef BRIDGE_MESSAGE_H
#define BRIDGE_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct hdrmap;

struct bridge_msg {
    const void *body; /* request body, byte for byte */
    size_t body_len;
    const char *content_type;     /* request Content-Type; NULL = none */
    const char *content_encoding; /* a body published compressed: gzip, deflate; NULL = none */
    const char *message_id;       /* the request id */
    size_t message_id_len;
    const char *type;     /* the route name */
    const char *exchange; /* "" = default exchange */
    const char *routing_key;
    bool persistent;   /* delivery_mode 2 */
    bool has_priority; /* send priority */
    uint8_t priority;
    bool minimal;                 /* message_id, content_type, delivery_mode (and rpc's)
                                     only: no timestamp, app_id, type, headers */
    int64_t timestamp;            /* arrival, unix seconds */
    const struct hdrmap *headers; /* message headers (already mapped) */
    /* rpc routes only; NULL otherwise. The correlation id is the broker
     * module's own (broker_publish). */
    const char *reply_to;
    const char *expiration; /* milliseconds, as decimal text; NULL = none (rpc: its timeout) */
};

#endif
