/* server.c - one worker's HTTP side on libevent's evhttp: a listener on the
 * shared port (SO_REUSEPORT), a deadline per request, the framing checks
 * evhttp does not make, routing, pong and healthz, and request contexts that
 * are answered exactly once.
 *
 * Connections. evhttp 2.1 has no hook that runs when a request starts, so
 * each connection gets a context of ours when evhttp asks for its
 * bufferevent (evhttp_set_bevcb). evhttp creates the connection right after
 * that, inside the same accept callback; an event we activate there runs
 * before any byte of the connection is read and "adopts" it: it learns the
 * evhttp_connection (evhttp passes it as the bufferevent's callback argument),
 * sets a close callback and starts the request deadline. Contexts are found
 * again by descriptor.
 *
 * Deadline. From the moment a connection can send a request (accepted, or its
 * previous response sent) the whole request, headers and body, must arrive
 * within [http] timeout, or the connection is closed: a client sending one
 * header byte a second (slowloris) or one body byte a second is cut off
 * after `timeout`, and so is a keep-alive connection idle that long.
 *
 * Waiting requests. While a request waits for the bridge, evhttp does not
 * read its connection, so a client that hangs up would go unnoticed. An
 * edge-triggered EV_READ|EV_CLOSED event on the descriptor notices it (epoll
 * reports a reset as EV_READ, never as EV_CLOSED; edge-triggered, so data a
 * client pipelines meanwhile wakes us once, not in a loop), tells the bridge
 * (which drops the late confirm), and frees the connection with its request.
 * A client that half-closes (shutdown(SHUT_WR)) after its request counts as
 * gone, as in nginx.
 *
 * Headers first. Every answer the request line and headers decide (decide())
 * is made when the headers are read, from evhttp's header callback: a
 * refused request's body is never held, and `Expect: 100-continue` gets its
 * answer instead of `100 Continue` (see on_headers). libevent 2.1 gives no
 * hook at a request's start: the request is found in its connection's
 * private struct (evcon21), checked on each connection.
 *
 * Bounds. [http] max_connections and max_pending_bytes are counted across
 * the workers (http_shared_*_take): a connection beyond the first gets a
 * canned 503 and is closed; a body beyond the second, a 503 before the
 * bridge sees it. */
#include "http/server.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <sys/queue.h> /* before event2/keyvalq_struct.h: TAILQ_FOREACH */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>

#include "http/auth.h"
#include "http/http_config.h"
#include "bridge/base/log.h"
#include "bridge/base/metrics.h"
#include "http/inflate.h"
#include "http/ratelimit.h"
#include "http/reqid.h"
#include "http/tls.h"
#include "http/verdict.h"

#define HTTP_MAX_HEADERS_SIZE (64 * 1024) /* request line + headers */
#define HTTP_RETRY_AFTER "1"              /* seconds, on every 503 */
#define HTTP_ACCEPT_PAUSE_MS 250          /* accept paused this long on EMFILE & co */
#define HTTP_HEALTH_LINE 400              /* /healthz body, per worker */

static const char PONG[] = "Pong!";

/* One accepted connection. */
struct http_conn {
    struct http_server *s;           /* owner */
    struct bufferevent *bev;         /* made in on_bev, owned by evhttp */
    struct evhttp_connection *evcon; /* NULL until adopted */
    int fd;                          /* -1 until adopted */
    struct event *timer;             /* adoption, then the request deadline */
    struct event *gone;              /* hang-up watch while a request waits */
    struct http_req *waiting;        /* request handed to the bridge, unanswered */
    uint32_t waiting_gen;            /* its generation when handed over */
    struct event *hook;              /* hooks the next request of a kept-alive connection */
    struct evbuffer_cb_entry *input; /* on_input on the bufferevent's input; NULL if none */
    struct evhttp_request *hooked;   /* the request on_headers is set on; NULL between two */
    struct evhttp_request *early;    /* the request decided by on_headers, or NULL */
    uint64_t idle_since;             /* mono_us() of its adoption or its last answer */
    struct verdict verdict;          /* what on_headers decided for it */
    char why[200];                   /* its text when not static (shed_early) */
    bool counted;                    /* holds one of max_connections */
    bool peer_read;                  /* peer is what the handshake verified */
    struct tls_peer *peer;           /* the client's certificate, NULL = none */
    struct http_conn *prev, *next;   /* the server's live list, or the free list */
};

struct http_req {
    struct http_server *s;          /* owner */
    struct evhttp_request *req;     /* evhttp's request; freed by the reply */
    struct http_conn *c;            /* its connection (NULL if it has no context) */
    struct event *timer;            /* http_req_set_timer; kept across reuse */
    const struct http_route *route; /* the route it came on */
    unsigned state;                 /* the bridge's slot: its state of R */
    uint64_t handle;                /* and the handle that goes with it */
    uint64_t slot_at;               /* mono_us() when the slot was set (handed over: t0) */
    uint32_t gen;                   /* uses of this context so far: a reference that kept
                                       an older one is stale */
    bool live;                      /* between req_get and req_put */
    int64_t arrival;                /* unix seconds */
    const char *path;               /* owned by req */
    const char *query;              /* owned by req; NULL if none */
    const char *ctype;              /* owned by req; NULL if none */
    const char *target;             /* request target as sent; owned by req */
    size_t slot;                    /* metrics slot of its route */
    size_t held;                    /* body bytes taken of [http] max_pending_bytes */
    uint64_t t0;                    /* mono_us() when it was read whole */
    size_t id_len;                  /* strlen(id) */
    char id[REQID_MAX + 1];         /* X-Request-Id, taken or generated */
    char trace[56];                 /* traceparent of the answer, "" = none */
    bool trace_passed;              /* it is the request's own */
    char *subject;                  /* its verified client certificate's subject, or NULL */
    bool id_generated;              /* the bridge made the id: no client sent one */
    uint64_t owner;                 /* the bridge's: its idempotency-window handle, 0 = none */
    struct evbuffer *plain;         /* the inflated body, when the published one stays
                                       compressed (keep_encoding); else NULL */
    enum body_coding coding;        /* the coding the published body is in */
    struct http_req *next_free;     /* free list */
};

struct http_server {
    struct event_base *base;                /* the worker's loop */
    const struct http_config *cfg;          /* immutable */
    const struct http_shared *sh;           /* TLS context and tokens, shared read-only */
    const struct tls_server *tls;           /* NULL = plain HTTP */
    const struct auth_tokens *metrics_auth; /* tokens /metrics asks for, NULL = open */
    unsigned worker;                        /* index */
    struct http_handlers h;                 /* the bridge */
    struct evhttp *http;                    /* evhttp server */
    struct evconnlistener *lev;             /* our listener (evhttp accepts on it) */
    struct evhttp_bound_socket *bound;      /* lev as evhttp knows it; NULL once draining */
    struct event *accept_ev;                /* re-enables accepting after EMFILE & co */
    const struct timeval *deadline;         /* common timeout of cfg->timeout_ms */
    struct reqid_gen ids;                   /* this worker's request ids */
    bool draining;                          /* stop accepting, close after each answer */
    bool stopping;                          /* draining to exit: /healthz and pong say 503 */
    bool paused;                            /* not accepting until http_server_resume */
    bool hooks;                             /* requests decided from their headers (on_headers) */
    char too_large_text[80];                /* the 413's text */
    char too_many_text[200];                /* the canned 503 of max_connections, whole */
    size_t too_many_len;                    /* its length */
    char held_text[120];                    /* the 503's text of max_pending_bytes */
    size_t pending;                         /* requests handed to the bridge, unanswered */
    size_t held;                            /* their body bytes (of [http] max_pending_bytes) */
    size_t *route_pending;                  /* the same per route, as cfg->routes */
    struct inflater *inflater;              /* gzip/deflate bodies; made at the first */
    size_t n_conns;                         /* live connection contexts */
    struct http_conn live;                  /* sentinel of the live connection list */
    struct http_conn *free_conns;           /* recycled contexts (events kept) */
    struct http_req *free_reqs;             /* recycled request contexts */
    struct http_conn **byfd;                /* descriptor -> adopted connection */
    size_t nbyfd;                           /* entries in byfd */
    size_t read_ahead;                      /* unparsed input a connection may hold */
    struct http_server *next_server;        /* the registry below */
    time_t date_sec;                        /* the second date_text was made for */
    char date_text[40];                     /* Date header value, made once a second */
};

/* Every server, by listener. evconnlistener gives its error callback the
 * listener's user data, and evhttp_bind_listener made that its struct evhttp,
 * not us: on_accept_error finds its server here (and, with libevent 2.2,
 * on_headers by its struct evhttp). Changed only when a server is made or
 * freed; read on accept errors, which are rare. */
static pthread_mutex_t servers_lock = PTHREAD_MUTEX_INITIALIZER;
static struct http_server *servers;

static void servers_add(struct http_server *s)
{
    pthread_mutex_lock(&servers_lock);
    s->next_server = servers;
    servers = s;
    pthread_mutex_unlock(&servers_lock);
}

static void servers_remove(struct http_server *s)
{
    pthread_mutex_lock(&servers_lock);
    for (struct http_server **p = &servers; *p != NULL; p = &(*p)->next_server)
        if (*p == s) {
            *p = s->next_server;
            break;
        }
    pthread_mutex_unlock(&servers_lock);
}

/* The server of listener LEV, or of evhttp HTTP (the other NULL). */
static struct http_server *server_of(const struct evconnlistener *lev, const struct evhttp *http)
{
    pthread_mutex_lock(&servers_lock);
    struct http_server *s = servers;
    while (s != NULL && !((lev != NULL && s->lev == lev) || (http != NULL && s->http == http)))
        s = s->next_server;
    pthread_mutex_unlock(&servers_lock);
    return s;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (p == NULL) {
        log_error("out of memory");
        abort();
    }
    return p;
}

/* ---- connections -------------------------------------------------------- */

static void on_timer(evutil_socket_t fd, short what, void *arg);
static void on_hook(evutil_socket_t fd, short what, void *arg);
static uint64_t mono_us(void);
static void hook_conn(struct http_conn *c);

static struct http_conn *conn_get(struct http_server *s)
{
    struct http_conn *c = s->free_conns;
    if (c != NULL) {
        s->free_conns = c->next;
    } else {
        c = xcalloc(1, sizeof *c);
        c->s = s;
        c->timer = event_new(s->base, -1, 0, on_timer, c);
        c->gone = event_new(s->base, -1, 0, NULL, NULL);
        c->hook = event_new(s->base, -1, 0, on_hook, c);
        if (c->timer == NULL || c->gone == NULL || c->hook == NULL) {
            log_error("out of memory");
            abort();
        }
    }
    c->bev = NULL;
    c->evcon = NULL;
    c->fd = -1;
    c->waiting = NULL;
    c->input = NULL;
    c->hooked = NULL;
    c->early = NULL;
    c->counted = false;
    c->next = s->live.next;
    c->prev = &s->live;
    s->live.next->prev = c;
    s->live.next = c;
    metrics_set_connections(s->h.counters, ++s->n_conns);
    return c;
}

static void conn_free(struct http_conn *c);

static void conn_put(struct http_conn *c)
{
    struct http_server *s = c->s;
    event_del(c->timer);
    event_del(c->gone);
    /* The connection may be freed right after a request's on_complete:
     * the hook it asked for must not run on a recycled context. */
    event_del(c->hook);
    if (c->input != NULL)
        evbuffer_remove_cb_entry(bufferevent_get_input(c->bev), c->input);
    c->input = NULL;
    c->evcon = NULL;
    free(c->peer);
    c->peer = NULL;
    c->peer_read = false;
    if (c->counted)
        http_shared_conn_give(s->sh);
    c->counted = false;
    if (c->fd >= 0 && (size_t)c->fd < s->nbyfd && s->byfd[c->fd] == c)
        s->byfd[c->fd] = NULL;
    c->prev->next = c->next;
    c->next->prev = c->prev;
    metrics_set_connections(s->h.counters, --s->n_conns);
#ifdef BRIDGE_NO_POOLS
    conn_free(c); /* as req_put: ASan sees a stale context */
#else
    c->prev = NULL;
    c->next = s->free_conns;
    s->free_conns = c;
#endif
}

static void conn_free(struct http_conn *c)
{
    event_free(c->timer);
    event_free(c->gone);
    event_free(c->hook);
    free(c);
}

static void arm_deadline(struct http_conn *c)
{
    event_add(c->timer, c->s->deadline);
}

static struct http_conn *conn_of(struct http_server *s, struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    if (evcon == NULL)
        return NULL;
    int fd = (int)bufferevent_getfd(evhttp_connection_get_bufferevent(evcon));
    if (fd < 0 || (size_t)fd >= s->nbyfd)
        return NULL;
    struct http_conn *c = s->byfd[fd];
    return c != NULL && c->evcon == evcon ? c : NULL;
}

static void req_put(struct http_server *s, struct http_req *r);

/* R waits no more (answered, or its client gone): what it held is given
 * back, every count and gauge with it. */
static void req_done(struct http_server *s, struct http_req *r)
{
    s->pending--;
    s->route_pending[r->route - s->cfg->routes]--;
    metrics_set_inflight(s->h.counters, s->pending);
    if (r->held > 0) {
        http_shared_bytes_give(s->sh, r->held);
        s->held -= r->held;
        metrics_set_pending_bytes(s->h.counters, s->held);
        r->held = 0;
    }
}

/* evhttp is freeing the connection (client gone, deadline, error, or the
 * server itself): a request of ours still waiting on it goes with it. */
static void on_close(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    struct http_conn *c = arg;
    struct http_server *s = c->s;
    struct http_req *r = c->waiting;
    if (r != NULL) {
        assert(r->live && r->gen == c->waiting_gen);
        c->waiting = NULL;
        req_done(s, r);
        s->h.gone(s->h.arg, r);
        req_put(s, r);
    }
    conn_put(c);
}

/* [http] max_connections are open: a plain client gets a canned 503 (a
 * few hundred bytes into an empty socket buffer: never blocks), a TLS one
 * only the close; then the connection goes. What the client sent already
 * is read first, so that the close is not a reset that could lose the 503. */
static void refuse_conn(struct http_conn *c)
{
    struct http_server *s = c->s;
    metrics_connection_refused(s->h.counters);
    if (s->tls == NULL && s->too_many_len > 0) {
        (void)send(c->fd, s->too_many_text, s->too_many_len, MSG_DONTWAIT | MSG_NOSIGNAL);
        char sink[4096];
        for (int i = 0; i < 16 && recv(c->fd, sink, sizeof sink, MSG_DONTWAIT) > 0; i++)
            ;
    }
    log_debug("http: connection refused: [http] max_connections (%zu) are open",
              s->cfg->max_connections);
    evhttp_connection_free(c->evcon); /* on_close recycles c */
}

static bool adopt(struct http_conn *c)
{
    struct http_server *s = c->s;
    void *cbarg = NULL;
    if (c->bev == NULL)
        return false;
    /* evhttp sets every bufferevent's callback argument to its connection;
     * the check below makes sure that is what we got. */
    bufferevent_getcb(c->bev, NULL, NULL, NULL, &cbarg);
    struct evhttp_connection *evcon = cbarg;
    int fd = (int)bufferevent_getfd(c->bev);
    if (evcon == NULL || fd < 0 || evhttp_connection_get_bufferevent(evcon) != c->bev)
        return false;
    if ((size_t)fd >= s->nbyfd) {
        size_t n = s->nbyfd ? s->nbyfd : 1024;
        while (n <= (size_t)fd)
            n *= 2;
        struct http_conn **p = realloc(s->byfd, n * sizeof *p);
        if (p == NULL) {
            log_error("out of memory");
            abort();
        }
        memset(p + s->nbyfd, 0, (n - s->nbyfd) * sizeof *p);
        s->byfd = p;
        s->nbyfd = n;
    }
    c->evcon = evcon;
    c->fd = fd;
    s->byfd[fd] = c;
    evhttp_connection_set_closecb(evcon, on_close, c);
    c->counted = http_shared_conn_take(s->sh);
    if (!c->counted) {
        refuse_conn(c);
        return true;
    }
    if (s->hooks)
        hook_conn(c);
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    arm_deadline(c);
    c->idle_since = mono_us();
    return true;
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct http_conn *c = arg;
    if (c->evcon == NULL) {
        if (!adopt(c)) {
            /* Only when evhttp failed to set the connection up (out of
             * memory): it has freed what it made. */
            log_warn("http: cannot track a new connection");
            conn_put(c);
        }
        return;
    }
    char *addr = NULL;
    ev_uint16_t port = 0;
    evhttp_connection_get_peer(c->evcon, &addr, &port);
    log_debug("http: closing connection from %s:%u: no complete request within %llu ms",
              addr ? addr : "?", port, (unsigned long long)c->s->cfg->timeout_ms);
    evhttp_connection_free(c->evcon); /* on_close recycles c */
}

static void on_gone(evutil_socket_t fd, short what, void *arg)
{
    struct http_conn *c = arg;
    if (!(what & EV_CLOSED)) {
        /* Readable: a reset or an orderly close shows as an error or as
         * end of file; anything else is the client's next request. But a
         * reset after pipelined bytes still peeks those bytes, and libevent
         * reports epoll's HUP/ERR as readable without EV_CLOSED: the
         * socket's pending error tells. */
        char b;
        ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
        int err = 0;
        socklen_t errlen = sizeof err;
        bool reset = n > 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &errlen) == 0 && err != 0;
        if (!reset &&
            (n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))))
            return;
    }
    evhttp_connection_free(c->evcon); /* on_close tells the bridge, recycles c */
}

static struct bufferevent *on_bev(struct event_base *base, void *arg)
{
    struct http_server *s = arg;
    struct http_conn *c = conn_get(s);
    if (s->tls != NULL) {
        /* evhttp gives the descriptor later (bufferevent_setfd): the
         * handshake starts then, under the same request deadline as the
         * rest, so a client that never finishes it is cut off too. A NULL
         * here would make evhttp fall back to plain HTTP on this port:
         * out of memory ends the process instead, as everywhere. */
        SSL *ssl = tls_server_ssl(s->tls);
        c->bev = ssl != NULL ? bufferevent_openssl_socket_new(
                                   base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE)
                             : NULL;
        if (c->bev == NULL) {
            log_error("out of memory");
            abort();
        }
        /* A client that closes without close_notify is at end of file
         * like a plain one, not in error. */
        bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
    } else {
        c->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    /* evhttp sets no read limit: while it writes a response (to a client
     * that reads none, say) its bufferevent goes on reading whatever the
     * client pipelines into memory, without bound until the deadline. A
     * high watermark bounds it. */
    if (c->bev != NULL)
        bufferevent_setwatermark(c->bev, EV_READ, 0, s->read_ahead);
    /* Runs once evhttp has made the connection, before it reads a byte. */
    event_active(c->timer, EV_TIMEOUT, 0);
    return c->bev;
}

/* ---- accepting ---------------------------------------------------------- */

static void on_accept_again(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct http_server *s = arg;
    if (s->lev != NULL && !s->draining && !s->paused)
        evconnlistener_enable(s->lev);
}

/* Out of descriptors (or memory) the listener would spin on a ready socket it
 * cannot accept: pause it a little instead, and say so once per pause. */
static void on_accept_error(struct evconnlistener *lev, void *arg)
{
    (void)arg; /* evhttp's, not ours: see servers */
    int err = EVUTIL_SOCKET_ERROR();
    struct http_server *s = server_of(lev, NULL);
    if (s == NULL) {
        log_error("http: accept failed: %s; listener of no server", strerror(err));
        return;
    }
    log_warn("http: accept failed: %s; pausing accepts for %d ms", strerror(err),
             HTTP_ACCEPT_PAUSE_MS);
    evconnlistener_disable(lev);
    struct timeval tv = {0, HTTP_ACCEPT_PAUSE_MS * 1000};
    event_add(s->accept_ev, &tv);
}

/* ---- answering ---------------------------------------------------------- */

static const char *reason_of(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 202:
        return "Accepted";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 413:
        return "Payload Too Large";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Entity";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    }
    if (status < 200)
        return "Informational";
    if (status < 300)
        return "Success";
    if (status < 400)
        return "Redirection";
    if (status < 500)
        return "Client Error";
    return "Server Error";
}

/* Bits of a response beyond status, type and body. */
enum {
    SEND_CLOSE = 1,  /* Connection: close */
    SEND_STATIC = 2, /* body outlives the response: reference it, no copy */
};

/* The Date header's value (RFC 9110 IMF-fixdate), made anew once a second. */
static const char *date_now(struct http_server *s)
{
    struct timeval now;
    event_base_gettimeofday_cached(s->base, &now);
    if (now.tv_sec != s->date_sec || s->date_text[0] == '\0') {
        struct tm tm;
        gmtime_r(&now.tv_sec, &tm);
        strftime(s->date_text, sizeof s->date_text, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        s->date_sec = now.tv_sec;
    }
    return s->date_text;
}

/* N in decimal into BUF (24 bytes), without printf. */
static const char *fmt_size(char *buf, size_t n)
{
    char *p = buf + 23;
    *p = '\0';
    do {
        *--p = (char)('0' + n % 10);
        n /= 10;
    } while (n > 0);
    return p;
}

/* What a response answers, for its headers, its count and the access log. */
struct answer {
    const char *id;     /* X-Request-Id */
    const char *target; /* request target as sent */
    size_t slot;        /* metrics slot (enum metrics_slot) */
    uint64_t t0;        /* mono_us() when the request was read whole */
    const char *trace;  /* traceparent, NULL = none */
};

/* Microseconds on the monotonic clock (a vDSO read, no system call: two a
 * request). libevent's cached per-turn time was tried and gave 0 to fast
 * answers, confirms of a quiet broker included. */
static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static const char *method_name(enum evhttp_cmd_type cmd)
{
    switch (cmd) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_HEAD:
        return "HEAD";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    case EVHTTP_REQ_OPTIONS:
        return "OPTIONS";
    case EVHTTP_REQ_TRACE:
        return "TRACE";
    case EVHTTP_REQ_CONNECT:
        return "CONNECT";
    case EVHTTP_REQ_PATCH:
        return "PATCH";
    }
    return "?";
}

/* One access log line ([log] access_log = yes). */
static void log_access(struct http_server *s, struct evhttp_request *req, const struct answer *a,
                       int status, size_t bytes, uint64_t ns)
{
    char *addr = NULL;
    ev_uint16_t port = 0;
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    if (evcon != NULL)
        evhttp_connection_get_peer(evcon, &addr, &port);
    /* The trace id: the second field of the traceparent. */
    char trace_id[33] = "";
    if (a->trace != NULL && strlen(a->trace) >= 35) {
        memcpy(trace_id, a->trace + 3, 32);
        trace_id[32] = '\0';
    }
    const struct log_field f[] = {
        {"route", LOG_FIELD_STR, metrics_slot_name(s->h.counters, a->slot), 0},
        {"method", LOG_FIELD_STR, method_name(evhttp_request_get_command(req)), 0},
        {"path", LOG_FIELD_STR, a->target, 0},
        {"status", LOG_FIELD_INT, NULL, status},
        {"bytes", LOG_FIELD_INT, NULL, (int64_t)bytes},
        {"duration_ms", LOG_FIELD_MS, NULL, (int64_t)ns},
        {"id", LOG_FIELD_STR, a->id, 0},
        {"client", LOG_FIELD_STR, addr, 0},
        {"trace", LOG_FIELD_STR, trace_id, 0}, /* last: left out when there is none */
    };
    log_record(LOG_INFO, "access", f, sizeof f / sizeof f[0] - (trace_id[0] == '\0'));
}

/* The one place responses leave: counted, logged if asked. Frees evhttp's
 * request. */
static void send_response(struct http_server *s, struct evhttp_request *req, const struct answer *a,
                          int status, const char *ctype, const char *body, size_t len, int flags)
{
    const char *id = a->id;
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    evhttp_add_header(out, "X-Request-Id", id);
    if (ctype != NULL)
        evhttp_add_header(out, "Content-Type", ctype);
    if (status == 202)
        evhttp_add_header(out, "X-Message-Id", id);
    if (status == 503)
        evhttp_add_header(out, "Retry-After", HTTP_RETRY_AFTER);
    if (a->trace != NULL)
        evhttp_add_header(out, "traceparent", a->trace);
    if ((flags & SEND_CLOSE) || s->draining)
        evhttp_add_header(out, "Connection", "close");
    /* Date and Content-Length given here spare evhttp a gmtime and two
     * snprintfs per response (measured: 9% of the instructions of a pong). */
    evhttp_add_header(out, "Date", date_now(s));
    /* 1xx, 204 and 304 (an rpc worker may answer with any of them) have no
     * body and no Content-Length (RFC 9110): a body sent anyway would be
     * read as the next response on a kept-alive connection. */
    bool bodyless = status < 200 || status == 204 || status == 304;
    char n[24];
    if (!bodyless)
        evhttp_add_header(out, "Content-Length", fmt_size(n, len));
    /* evhttp would send a body given for HEAD: the length only. */
    size_t sent = 0;
    if (evhttp_request_get_command(req) != EVHTTP_REQ_HEAD && !bodyless && len > 0) {
        sent = len;
        struct evbuffer *b = evhttp_request_get_output_buffer(req);
        if (flags & SEND_STATIC)
            evbuffer_add_reference(b, body, len, NULL, NULL);
        else
            evbuffer_add(b, body, len);
    }
    uint64_t ns = (mono_us() - a->t0) * 1000;
    metrics_answered(s->h.counters, a->slot, status, ns);
    if (s->cfg->access_log)
        log_access(s, req, a, status, sent, ns);
    evhttp_send_reply(req, status, reason_of(status), NULL);
}

static void send_text(struct http_server *s, struct evhttp_request *req, const struct answer *a,
                      int status, const char *text, int flags)
{
    send_response(s, req, a, status, "text/plain", text, strlen(text), flags | SEND_STATIC);
}

/* ---- requests ----------------------------------------------------------- */

static void on_req_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct http_req *r = arg;
    r->s->h.expired(r->s->h.arg, r);
}

static struct http_req *req_get(struct http_server *s)
{
    struct http_req *r = s->free_reqs;
    if (r != NULL) {
        s->free_reqs = r->next_free;
    } else {
        r = xcalloc(1, sizeof *r);
        r->s = s;
        r->timer = event_new(s->base, -1, 0, on_req_timer, r);
        if (r->timer == NULL) {
            log_error("out of memory");
            abort();
        }
    }
    assert(!r->live);
    r->live = true;
    r->state = 0;
    r->handle = 0;
    return r;
}

/* R goes back to the pool: every reference kept to it is stale from now
 * (its generation moves on). With BRIDGE_NO_POOLS (the sanitizer build) it
 * is freed instead, so that ASan reports a use of a stale one. */
static void req_put(struct http_server *s, struct http_req *r)
{
    assert(r->live);
    event_del(r->timer);
    if (r->plain != NULL) {
        evbuffer_free(r->plain);
        r->plain = NULL;
    }
    free(r->subject);
    r->subject = NULL;
    r->live = false;
    r->gen++;
    r->req = NULL;
    r->c = NULL;
#ifdef BRIDGE_NO_POOLS
    (void)s;
    event_free(r->timer);
    free(r);
#else
    r->next_free = s->free_reqs;
    s->free_reqs = r;
#endif
}

/* verdict_decide for REQ on server S. */
/* The verified client certificate of REQ's connection, read once per
 * connection (C caches it; NULL C: read for this request, into *SPARE), or
 * NULL when the listener asks for none or the client sent none. */
static const struct tls_peer *peer_of(const struct http_server *s, struct http_conn *c,
                                      struct evhttp_request *req, struct tls_peer *spare)
{
    if (s->tls == NULL || s->cfg->tls_client_auth == HTTP_CLIENT_AUTH_NONE)
        return NULL;
    if (c != NULL && c->peer_read)
        return c->peer;
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent *bev = evcon != NULL ? evhttp_connection_get_bufferevent(evcon) : NULL;
    SSL *ssl = bev != NULL ? bufferevent_openssl_get_ssl(bev) : NULL;
    if (!tls_peer_read(ssl, spare))
        spare = NULL;
    if (c == NULL)
        return spare;
    c->peer_read = true;
    if (spare != NULL && (c->peer = malloc(sizeof *c->peer)) != NULL)
        memcpy(c->peer, spare, sizeof *c->peer);
    return c->peer;
}

/* The key of REQ's bucket in its route's rate (ratelimit.h): nothing (the
 * route's one bucket, *LEN 0), the client's address, or its bearer token as
 * auth_check reads it (however the header spells "Bearer" and its blanks:
 * one token, one bucket). */
static const char *rate_key(const struct http_route *route, struct evhttp_request *req,
                            const struct head_info *hi, size_t *len)
{
    *len = 0;
    const char *key = NULL;
    if (route->rate_by == HTTP_RATE_CLIENT) {
        char *addr = NULL;
        ev_uint16_t port = 0;
        struct evhttp_connection *evcon = evhttp_request_get_connection(req);
        if (evcon != NULL)
            evhttp_connection_get_peer(evcon, &addr, &port);
        key = addr != NULL ? addr : "";
        *len = strlen(key) + 1; /* with its NUL: "" is not the route's bucket */
    } else if (route->rate_by == HTTP_RATE_TOKEN) {
        key = auth_bearer(hi->auth, len);
        if (key == NULL) {
            key = "";
            *len = 1;
        }
    }
    return key;
}

/* A route's rate limit, once its request passed every other check of the
 * headers and the bounds on what waits (so that a request refused for
 * those takes no token): 429 with Retry-After when its bucket is empty. */
static void rate_limit(const struct http_server *s, struct evhttp_request *req,
                       const struct head_info *hi, struct verdict *v)
{
    struct ratelimit *rl = http_shared_rate(s->sh, (size_t)(v->route - s->cfg->routes));
    if (rl == NULL || v->rated)
        return;
    size_t len;
    const char *key = rate_key(v->route, req, hi, &len);
    unsigned wait = ratelimit_take(rl, key, len, mono_us());
    if (wait == 0) {
        v->rated = true;
        return;
    }
    metrics_rate_limited(s->h.counters, v->slot);
    verdict_refuse(v, 429, "rate limit of this route reached; retry after Retry-After\n");
    v->retry_after = wait;
}

/* V took a token but is refused after all: give it back. */
static void rate_refund(const struct http_server *s, struct evhttp_request *req,
                        const struct head_info *hi, struct verdict *v)
{
    if (!v->rated)
        return;
    v->rated = false;
    size_t len;
    const char *key = rate_key(v->route, req, hi, &len);
    ratelimit_refund(http_shared_rate(s->sh, (size_t)(v->route - s->cfg->routes)), key, len);
}

static void decide(const struct http_server *s, struct evhttp_request *req,
                   const struct head_info *hi, struct verdict *v)
{
    const struct verdict_ctx x = {s->cfg, s->sh, s->metrics_auth, s->too_large_text, s->stopping};
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    verdict_decide(&x, evhttp_request_get_command(req),
                   uri != NULL ? evhttp_uri_get_path(uri) : NULL, hi, v);
}

/* "ok" when healthy, then a line per worker; when not, the lines alone,
 * those of the workers not up first. */
static void answer_health(struct http_server *s, struct evhttp_request *req, const struct answer *a,
                          int flags)
{
    size_t len = (size_t)s->cfg->workers * HTTP_HEALTH_LINE + 4;
    char *buf = malloc(len);
    if (buf == NULL) {
        send_text(s, req, a, 500, "out of memory\n", flags);
        return;
    }
    memcpy(buf, "ok\n", 4);
    bool ok = s->h.health(s->h.arg, buf + 3, len - 3);
    const char *body = ok ? buf : buf + 3;
    send_response(s, req, a, ok ? 200 : 503, "text/plain", body, strlen(body), flags);
    free(buf);
}

static void answer_metrics(struct http_server *s, struct evhttp_request *req,
                           const struct answer *a, int flags)
{
    char *body = NULL;
    size_t len = 0;
    if (s->h.metrics(s->h.arg, &body, &len) != 0) {
        send_text(s, req, a, 500, "out of memory\n", flags);
        return;
    }
    send_response(s, req, a, 200, METRICS_CONTENT_TYPE, body, len, flags);
    free(body);
}

/* REQ's body (BLEN bytes, coded as CODING) inflated, at most max_body
 * bytes, the inflated bytes taken of max_pending_bytes (*INFLATED of them);
 * NULL once it is answered: 413 past max_body, 400 for a stream its
 * coding does not make, 503 past max_pending_bytes. */
static struct evbuffer *inflate_body(struct http_server *s, struct evhttp_request *req,
                                     const struct answer *a, enum body_coding coding, size_t blen,
                                     size_t *inflated)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    struct evbuffer *out = evbuffer_new();
    if (s->inflater == NULL)
        s->inflater = inflater_new();
    if (out == NULL || s->inflater == NULL) {
        if (out != NULL)
            evbuffer_free(out);
        send_text(s, req, a, 503, "out of memory\n", 0);
        return NULL;
    }
    char why[160], text[300];
    size_t made = 0;
    const void *bytes = blen > 0 ? (const void *)evbuffer_pullup(in, -1) : "";
    enum inflate_result ir = inflater_run(s->inflater, coding, bytes, blen, s->cfg->max_body, out,
                                          &made, why, sizeof why);
    metrics_inflated(s->h.counters, made);
    if (ir == INFLATE_OK && !http_shared_bytes_take(s->sh, made)) {
        metrics_pending_bytes_refused(s->h.counters);
        send_text(s, req, a, 503, s->held_text, 0);
    } else if (ir == INFLATE_TOO_LARGE) {
        log_debug("%s: 413: a %zu-byte %s body inflates past max_body", a->id, blen,
                  coding_name(coding));
        snprintf(text, sizeof text,
                 "the %s body inflates past max_body (%zu bytes); stopped there\n",
                 coding_name(coding), s->cfg->max_body);
        send_response(s, req, a, 413, "text/plain", text, strlen(text), 0); /* copied */
    } else if (ir == INFLATE_BAD) {
        snprintf(text, sizeof text, "Content-Encoding %s: %s\n", coding_name(coding), why);
        send_response(s, req, a, 400, "text/plain", text, strlen(text), 0); /* copied */
    } else if (ir == INFLATE_NO_MEMORY) {
        log_error("%s: out of memory inflating a %s body", a->id, coding_name(coding));
        send_text(s, req, a, 503, "out of memory\n", 0);
    } else {
        *inflated = made;
        return out;
    }
    evbuffer_free(out);
    return NULL;
}

static void on_request(struct evhttp_request *req, void *arg)
{
    struct http_server *s = arg;
    struct http_conn *c = conn_of(s, req);
    struct answer a = {NULL, evhttp_request_get_uri(req), METRICS_NONE, 0, NULL};
    struct head_info hi;
    verdict_scan(evhttp_request_get_input_headers(req), &hi);
    struct tls_peer spare;
    hi.peer = peer_of(s, c, req, &spare);

    char idbuf[REQID_MAX + 1];
    const char *id = hi.id;
    size_t id_len = id != NULL ? strlen(id) : 0;
    struct timeval now;
    event_base_gettimeofday_cached(s->base, &now);
    if (id == NULL || !reqid_valid(id, id_len)) {
        reqid_next(&s->ids, (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_usec / 1000, idbuf);
        id = idbuf;
        id_len = REQID_GEN_LEN;
    }
    a.id = id;
    a.t0 = mono_us();
    if (a.target == NULL)
        a.target = "";
    if (c != NULL)
        arm_deadline(c); /* the next request's clock; stopped below if this one waits */

    struct verdict v;
    if (c != NULL && c->early == req) {
        /* Decided by on_headers, before the body (whose framing headers it
         * may have taken off): draining may have begun since it passed. */
        v = c->verdict;
        c->early = NULL;
        if (s->stopping && v.kind != VERDICT_REFUSE && v.kind != VERDICT_ROUTE)
            verdict_refuse(&v, 503, "shutting down\n");
    } else {
        decide(s, req, &hi, &v); /* not hooked */
    }
    a.slot = v.slot;
    switch (v.kind) {
    case VERDICT_REFUSE:
        if (v.hname != NULL)
            evhttp_add_header(evhttp_request_get_output_headers(req), v.hname, v.hvalue);
        if (v.retry_after > 0) {
            char n[24];
            evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After",
                              fmt_size(n, v.retry_after));
        }
        log_debug("%s: %d: %.*s", id, v.status, (int)strcspn(v.text, "\n"), v.text);
        send_text(s, req, &a, v.status, v.text, v.close ? SEND_CLOSE : 0);
        return;
    case VERDICT_PONG:
        send_response(s, req, &a, 200, "text/plain", PONG, sizeof PONG - 1,
                      SEND_STATIC | (v.close ? SEND_CLOSE : 0));
        return;
    case VERDICT_HEALTHZ:
        answer_health(s, req, &a, v.close ? SEND_CLOSE : 0);
        return;
    case VERDICT_METRICS:
        answer_metrics(s, req, &a, v.close ? SEND_CLOSE : 0);
        return;
    case VERDICT_ROUTE:
        break;
    }
    /* What waits on the broker is bounded before anything reads the body. */
    size_t blen = evbuffer_get_length(evhttp_request_get_input_buffer(req));
    if (!http_shared_bytes_take(s->sh, blen)) {
        rate_refund(s, req, &hi, &v);
        metrics_pending_bytes_refused(s->h.counters);
        log_debug("%s: 503: [http] max_pending_bytes reached", id);
        send_text(s, req, &a, 503, s->held_text, 0);
        return;
    }
    /* Not hooked (no early verdict): the rate comes last of the checks. */
    rate_limit(s, req, &hi, &v);
    if (v.kind == VERDICT_REFUSE) {
        http_shared_bytes_give(s->sh, blen);
        char n[24];
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After",
                          fmt_size(n, v.retry_after));
        send_text(s, req, &a, v.status, v.text, 0);
        return;
    }
    const struct http_route *route = v.route;
    enum body_coding coding = coding_of(hi.ce); /* one the route takes (verdict) */
    struct evbuffer *plain = NULL;
    if (coding != CODING_IDENTITY) {
        size_t inflated = 0;
        plain = inflate_body(s, req, &a, coding, blen, &inflated);
        if (plain == NULL) {
            http_shared_bytes_give(s->sh, blen);
            return; /* answered */
        }
        if (!route->keep_encoding) {
            /* Only the inflated body is held now. */
            struct evbuffer *in = evhttp_request_get_input_buffer(req);
            (void)evbuffer_drain(in, evbuffer_get_length(in));
            (void)evbuffer_add_buffer(in, plain);
            evbuffer_free(plain);
            plain = NULL;
            coding = CODING_IDENTITY;
            http_shared_bytes_give(s->sh, blen);
            blen = inflated;
        } else {
            blen += inflated; /* both are held until the answer */
        }
    }
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
    if (path == NULL || path[0] == '\0')
        path = "/";

    struct http_req *r = req_get(s);
    r->req = req;
    r->c = c;
    r->route = route;
    r->arrival = (int64_t)now.tv_sec;
    r->path = path;
    r->query = uri != NULL ? evhttp_uri_get_query(uri) : NULL;
    if (r->query != NULL && r->query[0] == '\0')
        r->query = NULL;
    r->ctype = hi.ctype;
    r->target = a.target;
    r->slot = a.slot;
    r->t0 = a.t0;
    r->slot_at = a.t0;
    memcpy(r->id, id, id_len + 1);
    r->id_len = id_len;
    r->trace[0] = '\0';
    r->trace_passed = false;
    r->owner = 0;
    r->id_generated = id == idbuf;
    r->plain = plain;
    r->coding = coding;
    r->subject = hi.peer != NULL && hi.peer->subject[0] != '\0' ? strdup(hi.peer->subject) : NULL;
    r->held = blen;
    s->held += blen;
    metrics_set_pending_bytes(s->h.counters, s->held);
    s->pending++;
    s->route_pending[route - s->cfg->routes]++;
    metrics_set_inflight(s->h.counters, s->pending);
    uint32_t gen = r->gen;
    if (c != NULL) {
        c->waiting = r;
        c->waiting_gen = gen;
    }
    s->h.route(s->h.arg, r, route);
    /* Answered already (a refusal: R may be recycled), or waiting: then
     * watch its client and stop the deadline, the bridge bounds the wait. */
    if (c != NULL && c->waiting == r && c->waiting_gen == gen) {
        event_del(c->timer);
        event_assign(c->gone, s->base, c->fd, EV_READ | EV_CLOSED | EV_ET | EV_PERSIST, on_gone, c);
        event_add(c->gone, NULL);
    }
}

/* ---- deciding from the headers ----------------------------------------- */

/* evhttp's header callback: every answer that needs no body (decide()) is
 * made before the body is read, and a refused request's body is not held.
 * With `Expect: 100-continue` its framing headers are removed, so evhttp
 * takes it as complete at once and sends no 100 Continue (a passing
 * request still gets one); the answer then closes the connection, since
 * the body may still come. Without, the body is read and dropped piece by
 * piece (a chunk callback that does nothing: O(1) memory, still bounded by
 * max_body and the request deadline), and the connection stays usable. A
 * Content-Length over max_body is never read: 413 and close. Framing
 * errors too are read and dropped as evhttp frames them, then answered 400
 * with a close: closing on an unread body would reset the connection and
 * could lose the answer. on_request answers what is decided here. */
static void drop_body(struct evhttp_request *req, void *arg)
{
    (void)req;
    (void)arg;
}

static struct http_conn *hooked_conn(struct evhttp_request *req);

/* Makes evhttp take REQ, answered from its headers, as complete without a
 * body: no 100 Continue, no byte of the body read. on_request reads nothing
 * of its headers after this but the id, so all go in one pass (removing the
 * framing headers one by one is a scan each: 1,000 Content-Lengths behind
 * 4,000 other headers, 51 KB, kept a worker 27 ms). */
static void take_framing_off(struct evhttp_request *req, const struct head_info *hi)
{
    char id[REQID_MAX + 1];
    size_t n = hi->id != NULL ? strnlen(hi->id, sizeof id) : sizeof id;
    if (n < sizeof id)
        memcpy(id, hi->id, n + 1);
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    evhttp_clear_headers(in);
    if (n < sizeof id)
        evhttp_add_header(in, "X-Request-Id", id);
}

/* A request that passed decide() and brings a body: the 503s that load and
 * the broker decide (the bridge's admit) and, from its Content-Length,
 * [http] max_pending_bytes, before a byte of the body is read: no client
 * is asked (100 Continue) to upload what will be refused, and no refused
 * body is held. The bridge checks again once the body is in. */
static void shed_early(struct http_conn *c, const struct head_info *hi, struct verdict *v)
{
    struct http_server *s = c->s;
    const char *why = s->h.admit(s->h.arg, v->route, c->why, sizeof c->why - 1);
    if (why != NULL) {
        size_t n = strlen(c->why);
        c->why[n] = '\n';
        c->why[n + 1] = '\0';
        verdict_refuse(v, 503, c->why);
        return;
    }
    unsigned long long cl;
    if (verdict_content_length(hi, &cl) && !http_shared_bytes_fit(s->sh, cl)) {
        metrics_pending_bytes_refused(s->h.counters);
        verdict_refuse(v, 503, s->held_text);
    }
}

static int on_headers(struct evhttp_request *req, void *arg)
{
    (void)arg;
    struct http_conn *c = hooked_conn(req);
    if (c == NULL)
        return 0;
    struct head_info hi;
    verdict_scan(evhttp_request_get_input_headers(req), &hi);
    struct tls_peer spare;
    hi.peer = peer_of(c->s, c, req, &spare);
    decide(c->s, req, &hi, &c->verdict);
    c->early = req;
    struct verdict *v = &c->verdict;
    if (v->kind == VERDICT_ROUTE && (hi.n_cl > 0 || hi.n_te > 0))
        shed_early(c, &hi, v);
    if (v->kind == VERDICT_ROUTE)
        rate_limit(c->s, req, &hi, v); /* before the body, after the other refusals */
    if (v->kind == VERDICT_ROUTE || (hi.n_cl == 0 && hi.n_te == 0))
        return 0;
    if (hi.expect != NULL || (v->kind == VERDICT_REFUSE && v->status == 413)) {
        take_framing_off(req, &hi);
        v->close = true;
    } else {
        evhttp_request_set_chunked_cb(req, drop_body);
    }
    return 0;
}

#if LIBEVENT_VERSION_NUMBER < 0x02020000
/* libevent 2.1 tells nobody when a request starts (2.2's evhttp_set_newreqcb
 * does): the request being read is the first of its connection's queue, in
 * a struct that 2.1 keeps private. This is that struct as 2.1.12 lays it
 * out (http-internal.h), up to the last field read here. It is read only on
 * a connection where layout_agrees() found it to say what the public
 * getters say, with a runtime library of the same major.minor. */
struct evcon21 {
    struct {
        void *tqe_next, **tqe_prev;
    } next;
    evutil_socket_t fd;
    struct bufferevent *bufev;
    struct event retry_ev;
    char *bind_address;
    ev_uint16_t bind_port;
    char *address;
    ev_uint16_t port;
    size_t max_headers_size;
    ev_uint64_t max_body_size;
    int flags;
    struct timeval timeout;
    int retry_cnt;
    int retry_max;
    struct timeval initial_retry_timeout;
    enum { EVCON21_STATE } state;
    struct evhttp *http_server;
    struct {
        struct evhttp_request *tqh_first, **tqh_last;
    } requests;
    void (*cb)(struct evhttp_connection *, void *);
    void *cb_arg;
    void (*closecb)(struct evhttp_connection *, void *);
    void *closecb_arg;
    struct event_callback read_more_deferred_cb;
    struct event_base *base;
};

static const struct evcon21 *evcon21(const struct evhttp_connection *evcon)
{
    return (const struct evcon21 *)(const void *)evcon;
}

static bool layout_agrees(const struct http_conn *c)
{
    const struct evcon21 *e = evcon21(c->evcon);
    struct evhttp_request *first = e->requests.tqh_first;
    return e->fd == bufferevent_getfd(c->bev) && e->bufev == c->bev &&
           e->base == evhttp_connection_get_base(c->evcon) && e->http_server == c->s->http &&
           e->closecb == on_close && e->closecb_arg == c && first != NULL &&
           evhttp_request_get_connection(first) == c->evcon;
}

/* The context of a request whose connection hook_conn accepted. */
static struct http_conn *hooked_conn(struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    return evcon != NULL ? evcon21(evcon)->closecb_arg : NULL;
}

static void on_complete(struct evhttp_request *req, void *arg);

/* Sets on_headers on the request C's connection is about to read, unless
 * done already. */
static void hook_next(struct http_conn *c)
{
    struct evhttp_request *req = evcon21(c->evcon)->requests.tqh_first;
    if (c->hooked != NULL || req == NULL || evhttp_request_get_connection(req) != c->evcon)
        return;
    c->hooked = req;
    evhttp_request_set_header_cb(req, on_headers);
    evhttp_request_set_on_complete_cb(req, on_complete, c);
}

/* A response was sent; evhttp makes the connection's next request right
 * after this returns, and reads bytes the client pipelined from a deferred
 * callback: the hook, activated here, runs before it. Bytes that arrive
 * first meet on_input. */
static void on_complete(struct evhttp_request *req, void *arg)
{
    (void)req;
    struct http_conn *c = arg;
    c->hooked = NULL;
    c->early = NULL;
    c->idle_since = mono_us();
    event_active(c->hook, EV_TIMEOUT, 0);
}

static void on_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)buf;
    struct http_conn *c = arg;
    if (info->n_added > 0 && c->hooked == NULL && c->evcon != NULL)
        hook_next(c);
}

static void hook_conn(struct http_conn *c)
{
    static atomic_bool warned;
    if (!layout_agrees(c)) {
        if (!atomic_exchange(&warned, true))
            log_warn("http: libevent's connection is not laid out as 2.1.12's: requests on such "
                     "connections are checked after their body (no early 401/404/405/413/415)");
        return;
    }
    c->input = evbuffer_add_cb(bufferevent_get_input(c->bev), on_input, c);
    hook_next(c);
}

static bool hooks_usable(void)
{
    if ((event_get_version_number() >> 16) == (LIBEVENT_VERSION_NUMBER >> 16))
        return true;
    log_warn("http: libevent %s runs, built against %s: every request's headers are checked "
             "after its body (no early 401/404/405/413/415)",
             event_get_version(), LIBEVENT_VERSION);
    return false;
}
#else
/* libevent 2.2 and later announce each request (evhttp_set_newreqcb): no
 * layout copy needed. Untested here (Debian 12 ships 2.1). */
static struct http_conn *hooked_conn(struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct http_server *s =
        evcon != NULL ? server_of(NULL, evhttp_connection_get_server(evcon)) : NULL;
    return s != NULL ? conn_of(s, req) : NULL;
}

static int on_newreq(struct evhttp_request *req, void *arg)
{
    (void)arg;
    evhttp_request_set_header_cb(req, on_headers);
    return 0;
}

static void hook_next(struct http_conn *c)
{
    (void)c;
}

static void hook_conn(struct http_conn *c)
{
    (void)c;
}

static bool hooks_usable(void)
{
    return true;
}
#endif

static void on_hook(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct http_conn *c = arg;
    if (c->evcon != NULL)
        hook_next(c);
}

/* ---- the interface ------------------------------------------------------ */

struct http_server *http_server_new(struct event_base *base, const struct http_config *cfg,
                                    const struct http_shared *sh, unsigned worker, int listen_fd,
                                    bool paused, const struct http_handlers *h, char *err,
                                    size_t errlen)
{
    struct http_server *s = calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->base = base;
    s->cfg = cfg;
    s->sh = sh;
    s->tls = http_shared_tls_server(sh);
    s->metrics_auth = cfg->metrics_auth ? http_shared_auth(sh, cfg->n_routes) : NULL;
    s->worker = worker;
    s->h = *h;
    s->live.next = s->live.prev = &s->live;
    /* The most evhttp must hold whole in a connection's input: a header
     * block, or one chunk of a chunked body (up to max_body: a bigger one
     * is refused from its size line). Content-Length bodies move on to the
     * request's own buffer as they come. */
    s->read_ahead = (size_t)cfg->max_body + HTTP_MAX_HEADERS_SIZE;
    snprintf(s->too_large_text, sizeof s->too_large_text, "body larger than max_body (%zu bytes)\n",
             cfg->max_body);
    snprintf(s->held_text, sizeof s->held_text,
             "too many bytes waiting on the broker ([http] max_pending_bytes = %zu)\n",
             cfg->max_pending_bytes);
    static const char busy[] = "too many connections ([http] max_connections)\n";
    int n = snprintf(s->too_many_text, sizeof s->too_many_text,
                     "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                     "Retry-After: " HTTP_RETRY_AFTER "\r\nConnection: close\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     sizeof busy - 1, busy);
    s->too_many_len = n > 0 && (size_t)n < sizeof s->too_many_text ? (size_t)n : 0;
    reqid_gen_init(&s->ids, worker);

    /* The socket is the process's (http_listen_open, or inherited): this
     * worker accepts through a descriptor of its own, closed when it drains,
     * so that connections queued meanwhile wait for whoever listens next
     * (the next config's workers, the next binary) instead of being reset. */
    int fd = fcntl(listen_fd, F_DUPFD_CLOEXEC, 3);
    /* libevent's accept loop reads until EAGAIN: a blocking socket (systemd
     * hands them so) would hang the worker in accept(). O_NONBLOCK is the
     * socket's, for every descriptor of it. */
    if (fd >= 0 && evutil_make_socket_nonblocking(fd) != 0) {
        close(fd);
        fd = -1;
    }
    /* Backlog 0: listening already, with the backlog its owner gave it. */
    s->lev = fd >= 0 ? evconnlistener_new(base, NULL, NULL,
                                          LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC |
                                              (paused ? LEV_OPT_DISABLED : 0),
                                          0, fd)
                     : NULL;
    if (s->lev == NULL) {
        snprintf(err, errlen, "listening socket: %s", strerror(errno));
        if (fd >= 0)
            close(fd);
        free(s);
        return NULL;
    }
    s->paused = paused;
    /* From here on evhttp owns the listener: evhttp_free frees it. */
    s->http = evhttp_new(base);
    s->bound = s->http != NULL ? evhttp_bind_listener(s->http, s->lev) : NULL;
    if (s->bound == NULL) {
        snprintf(err, errlen, "out of memory");
        evconnlistener_free(s->lev);
        if (s->http != NULL)
            evhttp_free(s->http);
        free(s);
        return NULL;
    }
    struct timeval tv = {(time_t)(cfg->timeout_ms / 1000),
                         (suseconds_t)(cfg->timeout_ms % 1000) * 1000};
    s->deadline = event_base_init_common_timeout(base, &tv);
    s->accept_ev = event_new(base, -1, 0, on_accept_again, s);
    s->route_pending = calloc(cfg->n_routes + 1, sizeof *s->route_pending);
    if (s->accept_ev == NULL || s->deadline == NULL || s->route_pending == NULL) {
        snprintf(err, errlen, "out of memory");
        http_server_free(s);
        return NULL;
    }
    servers_add(s);
    evconnlistener_set_error_cb(s->lev, on_accept_error);
    /* Every method reaches on_request, which answers 405 itself (evhttp
     * would say 501). */
    evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                            EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    evhttp_set_max_body_size(s->http, (ev_ssize_t)cfg->max_body);
    evhttp_set_max_headers_size(s->http, HTTP_MAX_HEADERS_SIZE);
    /* No evhttp timeout: our deadline (arm_deadline) bounds every moment
     * of a connection but the bridge's wait, which the bridge bounds; an
     * evhttp inactivity timeout on top re-armed two bufferevent timers on
     * every read and write (measured: 6% of the instructions of a pong). */
    evhttp_set_bevcb(s->http, on_bev, s);
    evhttp_set_gencb(s->http, on_request, s);
    s->hooks = hooks_usable();
#if LIBEVENT_VERSION_NUMBER >= 0x02020000
    evhttp_set_newreqcb(s->http, on_newreq, s);
#endif
    return s;
}

void http_server_resume(struct http_server *s)
{
    if (!s->paused)
        return;
    s->paused = false;
    if (s->lev != NULL && !s->draining)
        evconnlistener_enable(s->lev);
}

void http_server_drain(struct http_server *s, bool stopping)
{
    s->stopping = s->stopping || stopping;
    if (s->draining)
        return;
    s->draining = true;
    event_del(s->accept_ev);
    if (s->bound != NULL) {
        evhttp_del_accept_socket(s->http, s->bound); /* frees lev, closes the socket */
        s->bound = NULL;
        s->lev = NULL;
    }
}

/* Nothing of a next request has come on C (not in evhttp, not in the
 * kernel's queue, not in a TLS record half read), nor is anything of its
 * last one left to answer or write. Known only on connections the 2.1
 * hooks follow (c->input): any other is never taken for idle, and waits
 * for the drain's deadline instead. */
static bool conn_idle(const struct http_conn *c)
{
    if (c->evcon == NULL || c->input == NULL || c->waiting != NULL || c->early != NULL ||
        evbuffer_get_length(bufferevent_get_input(c->bev)) > 0 ||
        evbuffer_get_length(bufferevent_get_output(c->bev)) > 0)
        return false;
#if LIBEVENT_VERSION_NUMBER < 0x02020000
    /* evhttp drains what it parsed: a request line or headers read
     * already show on the request it is reading. */
    struct evhttp_request *next = evcon21(c->evcon)->requests.tqh_first;
    if (next != NULL && (evhttp_request_get_uri(next) != NULL ||
                         evhttp_request_get_input_headers(next)->tqh_first != NULL))
        return false;
#endif
    char b;
    if (recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0)
        return false;
    SSL *ssl = c->s->tls != NULL ? bufferevent_openssl_get_ssl(c->bev) : NULL;
    return ssl == NULL || !SSL_has_pending(ssl);
}

size_t http_server_close_idle(struct http_server *s, uint64_t idle_ms)
{
    uint64_t now = mono_us();
    for (struct http_conn *c = s->live.next, *next; c != &s->live; c = next) {
        next = c->next;
        /* The clock first: conn_idle asks the kernel (a syscall), and a
         * drain ticks over every connection every WORKER_DRAIN_TICK_MS. */
        if (now - c->idle_since >= idle_ms * 1000 && conn_idle(c))
            evhttp_connection_free(c->evcon); /* on_close recycles c */
    }
    return s->n_conns;
}

size_t http_server_pending(const struct http_server *s)
{
    return s->pending;
}

size_t http_server_route_pending(const struct http_server *s, const struct http_route *route)
{
    return s->route_pending[route - s->cfg->routes];
}

void http_server_free(struct http_server *s)
{
    if (s == NULL)
        return;
    servers_remove(s);
    /* Frees every connection (on_close recycles its context) and the
     * listener evhttp was given. */
    evhttp_free(s->http);
    /* Contexts evhttp never adopted (its setup failed) are still live. */
    while (s->live.next != &s->live) {
        s->live.next->input = NULL; /* its bufferevent is gone */
        conn_put(s->live.next);
    }
    while (s->free_conns != NULL) {
        struct http_conn *c = s->free_conns;
        s->free_conns = c->next;
        conn_free(c);
    }
    while (s->free_reqs != NULL) {
        struct http_req *r = s->free_reqs;
        s->free_reqs = r->next_free;
        event_free(r->timer);
        free(r);
    }
    if (s->accept_ev != NULL)
        event_free(s->accept_ev);
    free(s->byfd);
    free(s->route_pending);
    inflater_free(s->inflater);
    free(s);
}

const char *http_req_id(const struct http_req *r)
{
    return r->id;
}

size_t http_req_id_len(const struct http_req *r)
{
    return r->id_len;
}

const struct http_route *http_req_route(const struct http_req *r)
{
    return r->route;
}

const char *http_req_path(const struct http_req *r)
{
    return r->path;
}

const char *http_req_query(const struct http_req *r)
{
    return r->query;
}

const char *http_req_content_type(const struct http_req *r)
{
    return r->ctype;
}

const char *http_req_client(const struct http_req *r)
{
    char *addr = NULL;
    ev_uint16_t port = 0;
    struct evhttp_connection *evcon = evhttp_request_get_connection(r->req);
    if (evcon != NULL)
        evhttp_connection_get_peer(evcon, &addr, &port);
    return addr != NULL ? addr : "";
}

int64_t http_req_arrival(const struct http_req *r)
{
    return r->arrival;
}

const char *http_req_body(struct http_req *r, size_t *len)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(r->req);
    *len = evbuffer_get_length(in);
    if (*len == 0)
        return "";
    return (const char *)evbuffer_pullup(in, -1);
}

void http_req_drop_body(struct http_req *r)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(r->req);
    (void)evbuffer_drain(in, evbuffer_get_length(in));
    if (r->plain != NULL) {
        evbuffer_free(r->plain);
        r->plain = NULL;
    }
}

const char *http_req_plain(struct http_req *r, size_t *len)
{
    if (r->plain == NULL)
        return http_req_body(r, len);
    *len = evbuffer_get_length(r->plain);
    return *len > 0 ? (const char *)evbuffer_pullup(r->plain, -1) : "";
}

const char *http_req_encoding(const struct http_req *r)
{
    return r->coding != CODING_IDENTITY ? coding_name(r->coding) : NULL;
}

const char *http_req_header(const struct http_req *r, const char *name, int *count)
{
    const char *first = NULL;
    struct evkeyval *kv;
    *count = 0;
    TAILQ_FOREACH(kv, evhttp_request_get_input_headers(r->req), next)
    {
        if (strcasecmp(kv->key, name) != 0)
            continue;
        if (first == NULL)
            first = kv->value;
        ++*count;
    }
    return first;
}

bool http_req_trace_passed(const struct http_req *r)
{
    return r->trace_passed;
}

void http_req_set_trace(struct http_req *r, const char *traceparent, bool passed)
{
    r->trace_passed = passed;
    size_t n = traceparent != NULL ? strnlen(traceparent, sizeof r->trace - 1) : 0;
    memcpy(r->trace, traceparent != NULL ? traceparent : "", n);
    r->trace[n] = '\0';
}

bool http_req_id_generated(const struct http_req *r)
{
    return r->id_generated;
}

void http_req_set_owner(struct http_req *r, uint64_t owner)
{
    r->owner = owner;
}

uint64_t http_req_owner(const struct http_req *r)
{
    return r->owner;
}

void http_req_add_header(struct http_req *r, const char *name, const char *value)
{
    evhttp_add_header(evhttp_request_get_output_headers(r->req), name, value);
}

const char *http_req_client_subject(const struct http_req *r)
{
    return r->subject;
}

const char *http_req_trace(const struct http_req *r)
{
    return r->trace;
}

int http_req_foreach_header(const struct http_req *r,
                            int (*fn)(void *arg, const char *name, const char *value), void *arg)
{
    struct evkeyval *kv;
    TAILQ_FOREACH(kv, evhttp_request_get_input_headers(r->req), next)
    {
        if (fn(arg, kv->key, kv->value) != 0)
            return -1;
    }
    return 0;
}

void http_req_set_slot(struct http_req *r, unsigned state, uint64_t handle)
{
    assert(r->live);
    r->state = state;
    r->handle = handle;
    r->slot_at = mono_us();
}

uint64_t http_req_slot_ns(const struct http_req *r)
{
    assert(r->live);
    return (mono_us() - r->slot_at) * 1000;
}

unsigned http_req_state(const struct http_req *r)
{
    assert(r->live);
    return r->state;
}

uint64_t http_req_handle(const struct http_req *r)
{
    assert(r->live);
    return r->handle;
}

void http_req_set_timer(struct http_req *r, const struct timeval *tv)
{
    event_add(r->timer, tv);
}

void http_req_reply(struct http_req *r, int status, const char *ctype, const char *body, size_t len)
{
    struct http_server *s = r->s;
    struct http_conn *c = r->c;
    assert(r->live); /* answered once */
    if (c != NULL && c->waiting == r) {
        assert(c->waiting_gen == r->gen);
        c->waiting = NULL;
        event_del(c->gone);
        arm_deadline(c);
    }
    req_done(s, r);
    const struct answer a = {r->id, r->target, r->slot, r->t0,
                             r->trace[0] != '\0' ? r->trace : NULL};
    send_response(s, r->req, &a, status, ctype != NULL ? ctype : "text/plain", body, len, 0);
    req_put(s, r);
}
