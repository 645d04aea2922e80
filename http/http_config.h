/* http_config.h - what the HTTP room is configured with: [http], the
 * access log switch and each route's path and tokens. Filled by
 * bridge/config.c, read-only afterwards; the strings belong to the config. */
#ifndef BRIDGE_HTTP_CONFIG_H
#define BRIDGE_HTTP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The Content-Encodings a route takes (http_route.encodings): bit N is
 * enum body_coding N of http/inflate.h. */
#define HTTP_ENCODING_GZIP (1u << 1)
#define HTTP_ENCODING_DEFLATE (1u << 2)

/* Client certificates on the HTTPS listener ([http] tls_client_auth). */
enum http_client_auth {
    HTTP_CLIENT_AUTH_NONE,     /* not asked for */
    HTTP_CLIENT_AUTH_OPTIONAL, /* asked for; one that is sent must verify */
    HTTP_CLIENT_AUTH_REQUIRED, /* no handshake without one that verifies */
};

/* Whose requests share a token bucket ([route] rate_by). */
enum http_rate_by {
    HTTP_RATE_ROUTE,  /* all the route's */
    HTTP_RATE_CLIENT, /* each client address's */
    HTTP_RATE_TOKEN,  /* each bearer token's */
};

/* A route as the HTTP room sees it. Its index in http_config.routes is the
 * route's index everywhere (the config's routes, the broker's, metrics). */
struct http_route {
    const char *name;            /* section name after "route ", e.g. "ingest" */
    const char *path;            /* request path, starts with '/'; {name} segments capture */
    bool pattern;                /* path has captures (path_has_captures, at load) */
    const char *auth_token_file; /* "" = [http] auth_token_file applies; else this route's tokens */
    unsigned encodings;          /* Content-Encodings taken: bit 1 << enum body_coding */
    bool keep_encoding;          /* publish the body as sent (with content_encoding) */
    const char *const *client_subjects; /* names a client certificate must have one of
                                           (CN or SAN); NULL = any client */
    size_t n_client_subjects;
    double rate;               /* requests a second its buckets refill by; 0 = no limit */
    double burst;              /* a bucket's size */
    enum http_rate_by rate_by; /* whose requests share a bucket */
    size_t rate_keys;          /* most buckets kept (client, token) */
};

struct http_config {
    const char *file;  /* the config file, named in errors */
    char *listen_host; /* numeric address or name, from listen = host:port */
    int listen_port;
    int workers;         /* resolved: never 0 after config_load */
    size_t max_body;     /* bytes */
    uint64_t timeout_ms; /* idle / total header deadline per connection */
    char *pong_path;
    char *tls_cert;      /* "" = plain HTTP; else PEM certificate (chain) of the listener */
    char *tls_key;       /* PEM private key of tls_cert; both or neither */
    char *tls_client_ca; /* "" = none; else the CAs client certificates must chain to */
    enum http_client_auth tls_client_auth; /* none | optional | required */
    char *auth_token_file;                 /* "" = no auth; else bearer tokens, one a line */
    bool metrics_auth;                     /* /metrics asks for a token of auth_token_file */
    size_t max_connections;   /* open client connections, all workers; beyond: 503 + close */
    size_t max_pending_bytes; /* request bodies waiting on the broker, all workers; beyond: 503 */
    bool access_log;          /* [log] access_log: one line per answered request */

    struct http_route *routes; /* one per configured route, in the config's order */
    size_t n_routes;
};

#endif
