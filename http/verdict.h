/* verdict.h - what a request's line and headers alone decide (framing,
 * size, route, auth, method, content type), before any byte of its body:
 * http/server.c asks it from evhttp's header callback, or when the request
 * is complete. No I/O, nothing sent: a pure function of the headers and the
 * config, unit-tested on its own (tests/unit/test_verdict.c). Inside http/. */
#ifndef BRIDGE_HTTP_VERDICT_H
#define BRIDGE_HTTP_VERDICT_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/http.h>

struct http_config;
struct http_route;
struct http_shared;
struct auth_tokens;
struct tls_peer;

enum verdict_kind {
    VERDICT_ROUTE,   /* to the bridge: its body is needed */
    VERDICT_PONG,    /* answered here, the body unused */
    VERDICT_HEALTHZ, /* ditto */
    VERDICT_METRICS, /* ditto */
    VERDICT_REFUSE,  /* status and text below */
};

struct verdict {
    enum verdict_kind kind;
    size_t slot;                    /* metrics slot */
    const struct http_route *route; /* VERDICT_ROUTE */
    int status;                     /* VERDICT_REFUSE: the answer */
    const char *text;               /* VERDICT_REFUSE: its body, static */
    const char *hname, *hvalue;     /* VERDICT_REFUSE: one more header, or NULL */
    bool close;                     /* Connection: close */
    unsigned retry_after;           /* VERDICT_REFUSE: a Retry-After of this many seconds, 0 =
                                       none (a 429) */
    bool rated;                     /* VERDICT_ROUTE: took a token of its route's rate */
};

/* What one pass over the request headers tells. */
struct head_info {
    const char *id;              /* X-Request-Id, first one */
    const char *ctype;           /* Content-Type, first one */
    const char *te;              /* Transfer-Encoding, first one */
    const char *auth;            /* Authorization, first one */
    const char *cl;              /* Content-Length, first one */
    const char *expect;          /* Expect, first one */
    const char *ce;              /* Content-Encoding, first one */
    const struct tls_peer *peer; /* the verified client certificate, NULL = none (set by
                                    the caller, not by verdict_scan) */
    int n_ce;                    /* Content-Encoding headers */
    int n_auth;                  /* Authorization headers */
    int n_cl;                    /* Content-Length headers */
    int n_te;                    /* Transfer-Encoding headers */
};

/* What decide() reads besides the request: the server's, immutable but for
 * DRAINING. */
struct verdict_ctx {
    const struct http_config *cfg;          /* routes, pong_path, max_body */
    const struct http_shared *sh;           /* each route's tokens */
    const struct auth_tokens *metrics_auth; /* tokens /metrics asks for, NULL = open */
    const char *too_large_text;             /* the 413's text */
    bool draining;                          /* stopping for good: pong, /healthz and
                                               /metrics say 503 (routes are served) */
};

/* One pass over HEADERS (a request's input headers) into HI. */
void verdict_scan(const struct evkeyvalq *headers, struct head_info *hi);

/* Every answer the request line (CMD, PATH: "" or NULL = "/") and headers
 * (HI) alone decide, in one fixed order: framing (400 + close), a body on
 * HEAD/TRACE (400 + close), Content-Length over max_body (413 + close), the
 * built-in paths (auth for /metrics, then 405, 503 draining), 404, 401, 405,
 * 415; else VERDICT_ROUTE. */
void verdict_decide(const struct verdict_ctx *x, enum evhttp_cmd_type cmd, const char *path,
                    const struct head_info *hi, struct verdict *v);

/* Make V a refusal: STATUS with TEXT (static) as its body. */
void verdict_refuse(struct verdict *v, int status, const char *text);

/* The Content-Length of HI as a number (saturated at ULLONG_MAX); false
 * when there is none, it is not a plain decimal, or a Transfer-Encoding
 * makes it void. */
bool verdict_content_length(const struct head_info *hi, unsigned long long *n);

#endif
