/* config.h - bridge.ini and BRIDGE_* environment overrides, parsed into one
 * immutable struct before any thread starts. */
#ifndef BRIDGE_CONFIG_H
#define BRIDGE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONFIG_ERR_LEN 512

enum route_mode { ROUTE_PUBLISH, ROUTE_RPC };

/* The x-queue-type a route's queue is declared with. */
enum queue_type { QUEUE_CLASSIC, QUEUE_QUORUM };

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* How a log line is written: "TIME LEVEL thread message", or one JSON object. */
enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };

struct config_route {
    char *name;                 /* section name after "route ", e.g. "ingest" */
    char *path;                 /* exact request path, starts with '/' */
    enum route_mode mode;       /* publish | rpc */
    char *exchange;             /* "" = default exchange */
    char *routing_key;          /* routing key used for every publish */
    char *queue;                /* "" = declare nothing; else durable queue to declare and bind */
    enum queue_type queue_type; /* sent as x-queue-type when queue is declared */
    bool persistent;            /* delivery_mode 2 */
    char *schema;               /* "" = none; else XSD file path */
    char *root;                 /* "" = any; else required root element local name */
    uint64_t timeout_ms;        /* rpc: how long to wait for the reply */
    char *auth_token_file;      /* "" = [http] auth_token_file applies; else this route's tokens */
    size_t max_inflight;        /* per worker, this route's requests waiting on the broker;
                                   never 0 after config_load (0 in the file = automatic) */
};

struct config_uri {
    char *text;    /* the URI as written, password included (never logged) */
    char *display; /* amqp://user@host:port/vhost, safe to log */
    char *host;
    int port;
    char *user;
    char *password;
    char *vhost;
    bool tls; /* amqps:// */
};

struct config {
    char *file; /* path the config was read from */

    /* [http] */
    char *listen_host; /* numeric address or name, from listen = host:port */
    int listen_port;
    int workers;              /* resolved: never 0 after config_load */
    size_t max_body;          /* bytes */
    uint64_t http_timeout_ms; /* idle / total header deadline per connection */
    char *pong_path;
    char *tls_cert;           /* "" = plain HTTP; else PEM certificate (chain) of the listener */
    char *tls_key;            /* PEM private key of tls_cert; both or neither */
    char *auth_token_file;    /* "" = no auth; else bearer tokens, one a line */
    bool metrics_auth;        /* /metrics asks for a token of auth_token_file */
    size_t max_connections;   /* open client connections, all workers; beyond: 503 + close */
    size_t max_pending_bytes; /* request bodies waiting on the broker, all workers; beyond: 503 */

    /* [amqp] */
    struct config_uri *uris; /* failover list, in order */
    size_t n_uris;
    uint64_t heartbeat_ms; /* 0 = no heartbeats; whole seconds on the wire */
    bool confirm;          /* 202 only after basic.ack */
    size_t max_inflight;   /* per worker */
    char *amqp_tls_ca;     /* amqps://: CA file to verify the broker; "" = system CAs */
    char *amqp_tls_cert;   /* amqps://: client certificate (PEM), "" = none */
    char *amqp_tls_key;    /* its private key; both or neither */
    bool amqp_tls_verify;  /* verify the broker's certificate and host name */

    /* [log] */
    enum log_level log_level;
    enum log_format log_format; /* text | json */
    bool access_log;            /* one line per answered request */

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

const char *config_log_level_name(enum log_level level);
const char *config_log_format_name(enum log_format format);
/* "classic" or "quorum": the x-queue-type value on the wire. */
const char *config_queue_type_name(enum queue_type t);

#endif
