/* broker_config.h - what the AMQP room is configured with: [amqp], the
 * queues each route declares, and the parser of the amqp:// URI list
 * (amqp/uri.c). Filled by bridge/config.c, read-only afterwards. */
#ifndef BRIDGE_BROKER_CONFIG_H
#define BRIDGE_BROKER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The x-queue-type a route's queue is declared with. */
enum queue_type { QUEUE_CLASSIC, QUEUE_QUORUM };

/* What the bridge does with a route's queue at connect time. */
enum queue_declare {
    DECLARE_YES,     /* declare it (durable, the route's arguments) and bind it */
    DECLARE_NO,      /* nothing: the broker's topology is someone else's */
    DECLARE_PASSIVE, /* check that it exists, never change or bind it */
};

/* The arguments a declared queue gets; 0 or "" = not sent. */
struct queue_args {
    const char *dead_letter_exchange;    /* x-dead-letter-exchange */
    const char *dead_letter_routing_key; /* x-dead-letter-routing-key */
    uint64_t max_length;                 /* x-max-length (messages) */
    uint64_t max_length_bytes;           /* x-max-length-bytes */
    const char *overflow;                /* x-overflow */
    uint64_t message_ttl_ms;             /* x-message-ttl */
    int max_priority;                    /* x-max-priority, 0 = none */
};

/* One node of the failover list. */
struct broker_uri {
    char *text;    /* the URI as written, password included (never logged) */
    char *display; /* amqp://user@host:port/vhost, safe to log */
    char *host;
    int port;
    char *user;
    char *password;
    char *vhost;
    bool tls; /* amqps:// */
};

/* A route as the AMQP room sees it (same index as the config's routes). */
struct broker_route {
    const char *name;             /* the route's name, for messages */
    const char *exchange;         /* "" = default exchange */
    const char *routing_key;      /* the queue's binding key (the routing key, or its wildcard) */
    const char *queue;            /* "" = declare nothing; else durable queue to declare and bind */
    enum queue_type queue_type;   /* sent as x-queue-type when queue is declared */
    bool rpc;                     /* the route waits for replies (direct reply-to) */
    const char *const *exchanges; /* a templated exchange's names: each must exist (checked
                                     passively at connect); NULL = none */
    size_t n_exchanges;
    enum queue_declare declare; /* yes | no | passive */
    struct queue_args args;     /* with declare = yes */
};

struct broker_config {
    struct broker_uri *uris; /* failover list, in order */
    size_t n_uris;
    uint64_t heartbeat_ms;     /* 0 = no heartbeats; whole seconds on the wire */
    bool confirm;              /* 202 only after basic.ack */
    size_t max_inflight;       /* per worker */
    char *tls_ca;              /* amqps://: CA file to verify the broker; "" = system CAs */
    char *tls_cert;            /* amqps://: client certificate (PEM), "" = none */
    char *tls_key;             /* its private key; both or neither */
    bool tls_verify;           /* verify the broker's certificate and host name */
    uint64_t write_timeout_ms; /* [http] timeout: how long a write to the broker may stall */

    struct broker_route *routes; /* one per configured route, in the config's order */
    size_t n_routes;
};

/* "classic" or "quorum": the x-queue-type value on the wire. */
const char *broker_queue_type_name(enum queue_type t);

/* Parse LIST, URIs separated by commas (blanks around each ignored), into *OUT (*N of them,
 * malloc'd; free with broker_uris_free). 0, or -1 with the reason in WHY. */
int broker_uris_parse(const char *list, struct broker_uri **out, size_t *n, char *why, size_t wl)
    __attribute__((warn_unused_result));
void broker_uris_free(struct broker_uri *u, size_t n);

#endif
