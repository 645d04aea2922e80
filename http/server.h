/* server.h - one worker's HTTP side: an evhttp on the shared port
 * (SO_REUSEPORT), connection limits and deadlines, routing, pong, healthz,
 * request contexts answered exactly once. Knows nothing of AMQP: requests for
 * routes are handed to the bridge through struct http_handlers. */
#ifndef BRIDGE_HTTP_SERVER_H
#define BRIDGE_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct timeval;
struct http_config;
struct http_route;
struct metrics_shard;

/* One POSTed request on a route, waiting for the bridge to answer it. */
struct http_req;

struct http_handlers {
    /* A POST with an XML content type and a complete body arrived on ROUTE.
     * The bridge must call http_req_reply exactly once, now or later. */
    void (*route)(void *arg, struct http_req *r, const struct http_route *route);
    /* The client of R hung up while R waited. The bridge must forget R (drop
     * its confirm later); when this returns, the server answers and frees R. */
    void (*gone)(void *arg, struct http_req *r);
    /* R's timer (http_req_set_timer) ran out while R waited. The bridge
     * must forget R and answer it (http_req_reply). */
    void (*expired)(void *arg, struct http_req *r);
    /* Before the body of a request to ROUTE is read: why it would get 503
     * (load shed, broker not up) as text into BUF (N bytes), returned; NULL
     * when it may go on. Asked from its headers, before it counts as
     * pending. */
    const char *(*admit)(void *arg, const struct http_route *route, char *buf, size_t n);
    /* /healthz: true when healthy. Either way buf gets one line per worker
     * (the reasons of those not up first). */
    bool (*health)(void *arg, char *buf, size_t buflen);
    /* /metrics: the exposition into *body (malloc'd, the server frees it),
     * *len bytes. 0, or -1 (out of memory: 500). */
    int (*metrics)(void *arg, char **body, size_t *len);
    void *arg;
    /* Where this worker's answers, their durations and its gauges are
     * counted; written by this worker's thread only. */
    struct metrics_shard *counters;
};

struct http_server;
struct tls_server;
struct auth_tokens;

/* What every worker's server shares (http/shared.c): the HTTPS context and
 * the bearer tokens, every file read and checked here. Made once before the
 * workers start, read-only afterwards. NULL with the reason, naming the
 * file, in err. */
struct http_shared;
struct http_shared *http_shared_new(const struct http_config *cfg, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void http_shared_free(struct http_shared *sh);
bool http_shared_tls(const struct http_shared *sh); /* the listener speaks HTTPS */
const struct tls_server *http_shared_tls_server(const struct http_shared *sh);
/* The tokens route ROUTE (index into the config's routes) asks for; ROUTE beyond
 * the routes: [http] auth_token_file's. NULL = none asked for. */
const struct auth_tokens *http_shared_auth(const struct http_shared *sh, size_t route);
/* ROUTE's token buckets (http/ratelimit.h), NULL when it has no rate. */
struct ratelimit *http_shared_rate(const struct http_shared *sh, size_t route);
/* The bounds every worker shares (the only part of SH that changes): take
 * one of [http] max_connections, or N bytes of [http] max_pending_bytes;
 * false, and nothing taken, when that would pass the bound. Give back
 * exactly what was taken. Any thread. */
bool http_shared_conn_take(const struct http_shared *sh) __attribute__((warn_unused_result));
void http_shared_conn_give(const struct http_shared *sh);
bool http_shared_bytes_take(const struct http_shared *sh, size_t n)
    __attribute__((warn_unused_result));
void http_shared_bytes_give(const struct http_shared *sh, size_t n);
/* Whether N more bytes would fit [http] max_pending_bytes now (nothing taken). */
bool http_shared_bytes_fit(const struct http_shared *sh, unsigned long long n);

/* A server on BASE accepting from LISTEN_FD (through a descriptor of its
 * own; LISTEN_FD stays the caller's); HTTPS when SH has a TLS context.
 * PAUSED: it accepts nothing until http_server_resume. NULL on failure
 * with the reason in err. */
struct http_server *http_server_new(struct event_base *base, const struct http_config *cfg,
                                    const struct http_shared *sh, unsigned worker, int listen_fd,
                                    bool paused, const struct http_handlers *h, char *err,
                                    size_t errlen) __attribute__((warn_unused_result));
/* Start accepting (a server made PAUSED). */
void http_server_resume(struct http_server *s);
/* Stop accepting new connections (closing this server's descriptor of the
 * socket: what is queued on it stays for the socket's next reader). Each
 * open connection is served as before, its answer says Connection: close,
 * and it closes after it. STOPPING (the process is going away, not handing
 * over): pong, /healthz and /metrics answer 503 from now on. */
void http_server_drain(struct http_server *s, bool stopping);
/* Close the connections that have waited IDLE_MS or more since their
 * last answer (or their accept) with no byte of another request come and
 * nothing left to write. The connections still open. */
size_t http_server_close_idle(struct http_server *s, uint64_t idle_ms);
/* Requests handed to the bridge and not answered yet. */
size_t http_server_pending(const struct http_server *s);
/* The same for ROUTE (one of the config's routes) only. */
size_t http_server_route_pending(const struct http_server *s, const struct http_route *route);
/* Close every connection and free. Every request must have been answered. */
void http_server_free(struct http_server *s);

/* Accessors for a pending request (valid until it is answered). */
const char *http_req_id(const struct http_req *r); /* X-Request-Id (taken or generated) */
size_t http_req_id_len(const struct http_req *r);
const struct http_route *http_req_route(const struct http_req *r); /* the route it came on */
const char *http_req_path(const struct http_req *r);               /* path without query */
const char *http_req_query(const struct http_req *r);              /* NULL if none */
const char *http_req_content_type(const struct http_req *r);
const char *http_req_client(const struct http_req *r); /* peer address, no port */
int64_t http_req_arrival(const struct http_req *r);    /* unix seconds */
/* The body as it is published, contiguous: inflated, unless its route
 * keeps the encoding (keep_encoding), then as sent. */
const char *http_req_body(struct http_req *r, size_t *len);
/* The body inflated, contiguous: what the XML check reads. */
const char *http_req_plain(struct http_req *r, size_t *len);
/* The Content-Encoding the published body is in ("gzip", "deflate"), or
 * NULL for none. */
const char *http_req_encoding(const struct http_req *r);
/* Free the body: once it has been handed to the broker, a request that
 * waits for its confirm or reply holds no bytes of it (10,000 waiting
 * requests would otherwise hold 10,000 bodies). http_req_body is empty then. */
void http_req_drop_body(struct http_req *r);
/* The first value of request header NAME (any case), NULL if absent;
 * *COUNT how many times it came. */
const char *http_req_header(const struct http_req *r, const char *name, int *count);
/* The traceparent R's answer carries (a response header, and its trace id
 * in the access log); NULL or "" for none. At most 55 bytes are kept.
 * PASSED: it is the request's own (its tracestate may go with it). */
void http_req_set_trace(struct http_req *r, const char *traceparent, bool passed);
/* Was the traceparent set for R the request's own (PASSED above)? */
bool http_req_trace_passed(const struct http_req *r);
/* Did the bridge make R's id (no valid X-Request-Id came)? */
bool http_req_id_generated(const struct http_req *r);
/* A number the bridge keeps with R (its idempotency-window handle), 0
 * until set. */
void http_req_set_owner(struct http_req *r, uint64_t owner);
uint64_t http_req_owner(const struct http_req *r);
/* One more header on R's answer (NAME and VALUE copied). */
void http_req_add_header(struct http_req *r, const char *name, const char *value);
/* The subject (RFC 2253) of the client certificate R's connection
 * verified, NULL when none. */
const char *http_req_client_subject(const struct http_req *r);
/* The traceparent set for R's answer, "" if none. */
const char *http_req_trace(const struct http_req *r);
/* Call FN for every request header, in order. Stops early if FN returns -1
 * and returns -1 then. */
int http_req_foreach_header(const struct http_req *r,
                            int (*fn)(void *arg, const char *name, const char *value), void *arg);
/* The bridge's slot: where R is, in the bridge's own terms (STATE, 0 when
 * R is handed over), and a handle that goes with it (a delivery tag...).
 * Reset to 0 when R is answered and recycled. */
void http_req_set_slot(struct http_req *r, unsigned state, uint64_t handle);
unsigned http_req_state(const struct http_req *r);
uint64_t http_req_handle(const struct http_req *r);
/* Nanoseconds since the slot was last set (since R was read whole, when
 * it was not yet). */
uint64_t http_req_slot_ns(const struct http_req *r);
/* Call handlers->expired for R if it still waits after TV (which may be a
 * common timeout of the worker's base: cheaper for many equal timers).
 * Answering R stops the timer. */
void http_req_set_timer(struct http_req *r, const struct timeval *tv);

/* Answer R and free it; R must not be used afterwards. Every response gets
 * X-Request-Id; a 503 gets Retry-After; a 202 gets X-Message-Id. BODY may be
 * NULL. CTYPE NULL = text/plain. */
void http_req_reply(struct http_req *r, int status, const char *ctype, const char *body,
                    size_t len);

#endif
