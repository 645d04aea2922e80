/* config.h - bridge.ini and BRIDGE_* environment overrides, parsed into one
 * immutable struct before any thread starts. */
#ifndef BRIDGE_CONFIG_H
#define BRIDGE_CONFIG_H

#include "amqp/broker_config.h"
#include "bridge/base/log.h"
#include "bridge/base/template.h"
#include "http/http_config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONFIG_ERR_LEN 512

enum route_mode { ROUTE_PUBLISH, ROUTE_RPC };

/* The message properties a route sends (ingest-bridge(8): AMQP MAPPING). */
enum route_properties {
    PROPERTIES_ALL,     /* the contract's mapping: ids, timestamp, app_id, type, headers */
    PROPERTIES_MINIMAL, /* message_id, content_type, delivery_mode (and rpc's) only */
};

/* What a route does with W3C trace context (traceparent, tracestate,
 * baggage) on its messages (ingest-bridge(8): TRACE CONTEXT). */
enum route_trace {
    TRACE_START, /* copy a valid one; start a trace when the request has none */
    TRACE_PASS,  /* copy a valid one, start nothing */
    TRACE_OFF,   /* neither */
};

/* One constant header a route adds to its messages. */
struct route_header {
    char *name; /* lower case */
    char *value;
};

/* A route as the file describes it, every key. The rooms see their part of
 * it through the views config_load makes (http.routes, amqp.routes: same
 * index, the same strings). */
struct config_route {
    char *name;                 /* section name after "route ", e.g. "ingest" */
    char *path;                 /* exact request path, starts with '/' */
    enum route_mode mode;       /* publish | rpc */
    char *exchange;             /* "" = default exchange */
    char *routing_key;          /* routing key used for every publish */
    char *queue;                /* "" = declare nothing; else durable queue to declare and bind */
    enum queue_type queue_type; /* sent as x-queue-type when queue is declared */
    bool persistent;            /* delivery_mode 2; default: yes for publish, no for rpc */
    enum route_properties properties; /* all | minimal */
    char *schema;                     /* "" = none; else XSD file path */
    char *root;                       /* "" = any; else required root element local name */
    uint64_t timeout_ms;              /* rpc: how long to wait for the reply */
    char *auth_token_file;      /* "" = [http] auth_token_file applies; else this route's tokens */
    size_t max_inflight;        /* per worker, this route's requests waiting on the broker;
                                   never 0 after config_load (0 in the file = automatic) */
    char *exchanges;            /* a templated exchange: the names it may become, comma-separated */
    char *binding_key;          /* "" = routing_key, or its wildcard when templated */
    char *priority;             /* "" = none; a number; or {header:Name} */
    int priority_max;           /* highest priority a header may ask for */
    uint64_t expiration_ms;     /* publish: per-message TTL (AMQP expiration); 0 = none */
    char *headers;              /* constant headers, "name=value, name=value" */
    char *content_type;         /* "" = the request's Content-Type; else this one */
    enum route_trace trace;     /* start | pass | off */
    enum queue_declare declare; /* what is done with queue at connect */
    char *dead_letter_exchange; /* queue arguments, with declare = yes; "" or 0 = none */
    char *dead_letter_routing_key;
    size_t max_length;
    size_t max_length_bytes;
    char *overflow;
    uint64_t message_ttl_ms;
    int max_priority;
    char *encodings;        /* Content-Encodings taken: "gzip, deflate" */
    bool keep_encoding;     /* publish a compressed body as sent, with content_encoding */
    unsigned encoding_bits; /* encodings, parsed: HTTP_ENCODING_* */
    char *client_subjects;  /* client certificate names allowed, comma-separated; "" = any */
    char **subject_list;    /* client_subjects, split; NULL-terminated */
    size_t n_subjects;
    char *rate;                /* "" = no limit; "N/s", "N/m", "N/h" */
    size_t burst;              /* a bucket's size; never 0 after config_load when rate is set */
    enum http_rate_by rate_by; /* route | client | token */
    size_t rate_keys;          /* most buckets (client, token) */
    double rate_per_s;         /* rate, parsed; 0 = none */
    uint64_t dedupe_ms;        /* idempotency window; 0 = none */
    size_t dedupe_ids;         /* most request ids it keeps */
    bool spool;                /* accepted into [spool] while the broker is away */

    /* Made by config_load from the keys above, read-only afterwards. */
    struct tmpl rk_tmpl;  /* routing_key as a template */
    struct tmpl ex_tmpl;  /* exchange as a template */
    bool dynamic;         /* a template or a header-given priority: per request */
    char **exchange_list; /* exchanges, split; NULL-terminated */
    size_t n_exchanges;
    int priority_value;             /* the constant priority, -1 = none or from a header */
    char *priority_header;          /* the header priority comes from, NULL = none */
    struct route_header *const_hdr; /* the headers key, parsed */
    size_t n_const_hdr;
    char *bind_key; /* the queue's binding key, resolved */
};

struct config {
    char *file; /* path the config was read from */

    struct http_config http;   /* [http], [log] access_log, the routes' paths and tokens */
    struct broker_config amqp; /* [amqp], the routes' queues */

    /* [log] */
    enum log_level log_level;
    enum log_format log_format; /* text | json */

    /* [spool] */
    char *spool_dir;       /* "" = no spool */
    size_t spool_max_size; /* bytes on disk at most */

    struct config_route *routes;
    size_t n_routes;
};

/* Parse FILE, apply BRIDGE_* variables from ENVP (NULL-terminated, e.g.
 * environ), validate. On failure returns NULL and writes "file:line: key:
 * reason" (or "environment BRIDGE_X: reason") into err. */
struct config *config_load(const char *file, char *const *envp, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void config_free(struct config *cfg);

/* "30s", "500ms", "2m", "0" -> milliseconds. 0 / -1. */
int config_parse_duration(const char *s, uint64_t *ms) __attribute__((warn_unused_result));
/* "1MiB", "512KiB", "1024" -> bytes. 0 / -1. */
int config_parse_size(const char *s, size_t *bytes) __attribute__((warn_unused_result));
/* "yes"/"no"/"true"/"false"/"on"/"off"/"1"/"0". 0 / -1. */
int config_parse_bool(const char *s, bool *out) __attribute__((warn_unused_result));

#endif
