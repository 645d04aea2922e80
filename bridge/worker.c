/* worker.c - the worker threads and the glue between their rooms: a request
 * from http/ is checked (xmlcheck), mapped (hdrmap) and published through
 * amqp/; the broker's confirm comes back here and becomes the HTTP answer. */
#include "bridge/worker.h"

#include <assert.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "bridge/backlog.h"
#include "amqp/broker.h"
#include "bridge/config.h"
#include "bridge/base/dedupe.h"
#include "bridge/base/errbuf.h"
#include "bridge/base/hdrmap.h"
#include "bridge/base/log.h"
#include "bridge/base/message.h"
#include "bridge/base/metrics.h"
#include "bridge/base/spool.h"
#include "bridge/base/template.h"
#include "bridge/base/trace.h"
#include "http/server.h"
#include "bridge/xmlcheck.h"

#define WORKER_REASON_LEN 512
#define WORKER_DRAIN_TICK_MS 20 /* how often a stopping worker looks at what is left */
#define WORKER_FLUSH_MS 200     /* time given to the last responses to leave */
/* A draining worker closes a kept-alive connection that has sent nothing
 * this long since its last answer: one that is busy gets Connection:
 * close on its next answer instead (closing a connection the client may be
 * writing to at that moment is the one race HTTP/1.1 leaves). */
#define WORKER_DRAIN_IDLE_MS 1000
#define WORKER_BACKLOG_POLL_MS 1 /* how often a backlog looks for room toward the broker */
/* Where a request is, from the worker's side: its state and a handle for
 * it live in the request's bridge slot (http_req_set_slot). Legal moves
 * (enter() asserts them):
 *   READING -> CHECKING                         handed over by http/ (on_route)
 *   CHECKING -> WAIT_ROOM | WAIT_CONFIRM | WAIT_REPLY | ANSWERED
 *   WAIT_ROOM -> CHECKING                       left the backlog for a try or a 503
 *   WAIT_ROOM | WAIT_CONFIRM | WAIT_REPLY -> ANSWERED
 *   WAIT_CONFIRM -> WAIT_REPLY                  rpc: the broker has it, now the reply
 *   CHECKING -> WAIT_FIRST -> CHECKING | ANSWERED  a retry waits for the first (dedupe)
 * Every way out (an answer, the client gone) goes through forget(). */
enum req_state {
    REQ_READING,      /* 0: the server's, not handed over yet (or recycled) */
    REQ_CHECKING,     /* the worker's: load shed, XML check, broker state, publish */
    REQ_WAIT_ROOM,    /* in the backlog; handle = its ticket */
    REQ_WAIT_CONFIRM, /* published, its confirm awaited; handle = delivery tag, or the
                         rpc handle on an rpc route */
    REQ_WAIT_REPLY,   /* rpc, confirmed (or confirm = no): its reply awaited; handle = the
                         rpc handle */
    REQ_WAIT_FIRST,   /* a retry of an id whose first request still waits (dedupe): its
                         outcome awaited; handle = the first one's window handle */
    REQ_WAIT_SPOOL,   /* appended to the spool, its write awaited; handle = its ticket */
    REQ_ANSWERED,     /* answered: the server's again */
};

/* Whether the holder of a request (backlog, confirm tracker, rpc table) has
 * let it go already: true in the callbacks that hand it back. */
enum holder { STILL_HELD, LET_GO };

/* A request whose record the spool is writing. */
struct spool_wait {
    struct http_req *r; /* NULL once gone (or not in use) */
    uint64_t ticket;
};

/* What the spool's writer said of a ticket. */
struct spool_told {
    uint64_t ticket;
    int err;
};

/* A spooled record being published again. */
struct replay_slot {
    struct spool_rec rec; /* id, len, at; data freed once published */
    bool used;
};

#define REPLAY_MAX                                                                                 \
    64                           /* records a worker replays at once: the rest of its
                                  max_inflight is new requests' */
#define WORKER_REPLAY_POLL_MS 20 /* how often a worker looks for records to replay */

/* What a worker precomputes per route. */
struct route_rt {
    const struct timeval *tv; /* common timeout: rpc reply wait, or the confirm wait */
    char expiration[24];      /* rpc: the timeout in ms; publish: its expiration, if any;
                                 as AMQP expiration text ("" = none) */
};

struct worker {
    unsigned id;                                  /* index, "w<id>" in logs */
    struct worker_pool *pool;                     /* owner; /healthz reads siblings */
    const struct config *cfg;                     /* immutable */
    const struct xmlcheck_schema *const *schemas; /* per route, shared read-only */
    struct event_base *base;                      /* this thread's loop */
    struct http_server *http;                     /* this thread's listener + connections */
    struct broker *broker;                        /* this thread's connection + channel */
    struct xmlcheck *xc;                          /* used by this thread only */
    struct metrics_shard *m;                      /* this thread's counters */
    struct hdrmap headers;                        /* reused per request */
    struct trace_gen trace;                       /* new trace ids */
    char trace_buf[TRACE_BAGGAGE_MAX + 1];        /* a joined tracestate or baggage */
    struct route_rt *rt;                          /* per route, index as cfg->routes */
    struct backlog *backlog;                      /* publishes waiting for room */
    struct event *backlog_poll;                   /* while any wait: look for room */
    struct http_req **firsts;                     /* REQ_WAIT_FIRST requests */
    size_t n_firsts, cap_firsts;
    struct event *first_poll; /* while any: ask their windows */
    pthread_t thread;         /* the loop's thread */
    bool started;             /* thread created */

    int cmd_fd[2];                  /* main -> worker: 's' = stop, 'h' = hand over, 'r' = resume */
    struct event *cmd_ev;           /* read end of cmd_fd */
    struct event *drain_ev;         /* stopping: checks what is left */
    struct timespec drain_deadline; /* stopping: give up waiting then */
    bool stopping;                  /* stop requested */
    bool closing;                   /* drained: the broker connection is closing */

    /* The spool (issue 17): requests waiting for their write, by ticket;
     * what the writer told, handed over under told_lock with an eventfd;
     * records being replayed. */
    struct spool *spool;            /* the process's; NULL = none */
    struct spool_wait *spool_waits; /* spool_mask + 1 slots, by ticket */
    size_t spool_mask;              /* a power of two, less one */
    uint64_t next_ticket;           /* the next append's */
    size_t spool_writes;            /* appended, not told yet (whoever waits) */
    pthread_mutex_t told_lock;      /* guards told, n_told, cap_told */
    struct spool_told *told;        /* the writer's news, not read yet */
    struct spool_told *told_spare;  /* the other buffer, swapped in by on_told */
    size_t n_told, cap_told;
    int told_fd;                /* eventfd the writer wakes us with */
    struct event *told_ev;      /* its read side */
    struct replay_slot *replay; /* REPLAY_MAX slots */
    size_t n_replay;            /* of them in flight */
    struct event *replay_ev;    /* looks for records to replay */

    _Atomic int broker_state;       /* enum broker_state, for /healthz */
    bool ever_up;                   /* connected once: the next connection is a reconnect */
    pthread_mutex_t reason_lock;    /* guards reason and node */
    char reason[WORKER_REASON_LEN]; /* why the broker is not up */
    char node[WORKER_REASON_LEN];   /* host:port of the current or last node */
};

struct worker_pool {
    const struct config *cfg;   /* immutable */
    const int *listen_fds;      /* per worker: the process's listening socket */
    struct metrics *metrics;    /* every worker's counters */
    struct http_shared *shared; /* TLS context and tokens, read by every worker */
    struct dedupe **dedupe;     /* per route: its idempotency window, or NULL */
    struct spool *spool;        /* the process's local spool, NULL = none */
    struct worker *w;           /* cfg->http.workers entries */
    size_t n;                   /* created so far */
    unsigned gen;               /* pools made before this one in the process */
    bool successor;             /* made by a reload: paused until resumed, and a worker that
                                   cannot start fails the reload, not the process */

    pthread_mutex_t fail_lock;       /* guards failed, failure */
    bool failed;                     /* a worker cannot go on: the bridge must stop */
    char failure[WORKER_REASON_LEN]; /* the first such worker's reason */
};

/* A worker's broker refused the config before it ever served: keep the first
 * reason and ask main to stop, as SIGTERM would (main sigwaits for it; every
 * thread has it blocked), then main sees worker_pool_failed and exits 1. A
 * runtime error never stops the bridge; this one is a config error found
 * late, as start-up's last step. */
static void pool_fail(struct worker_pool *p, unsigned id, const char *why)
{
    pthread_mutex_lock(&p->fail_lock);
    bool first = !p->failed;
    if (first) {
        p->failed = true;
        snprintf(p->failure, sizeof p->failure, "worker %u: %s", id, why);
    }
    pthread_mutex_unlock(&p->fail_lock);
    if (first && !p->successor)
        kill(getpid(), SIGTERM);
}

/* ---- a request's state --------------------------------------------------- */

static enum req_state state_of(const struct http_req *r)
{
    return (enum req_state)http_req_state(r);
}

static bool legal(enum req_state from, enum req_state to)
{
    switch (from) {
    case REQ_READING:
        return to == REQ_CHECKING;
    case REQ_CHECKING:
        return to != REQ_READING && to != REQ_CHECKING;
    case REQ_WAIT_ROOM:
        return to == REQ_CHECKING || to == REQ_ANSWERED;
    case REQ_WAIT_CONFIRM: /* CHECKING: lost on a route that spools, it goes there (respool) */
        return to == REQ_WAIT_REPLY || to == REQ_ANSWERED || to == REQ_CHECKING;
    case REQ_WAIT_REPLY:
        return to == REQ_ANSWERED;
    case REQ_WAIT_FIRST:
        return to == REQ_CHECKING || to == REQ_ANSWERED;
    case REQ_WAIT_SPOOL:
        return to == REQ_ANSWERED;
    case REQ_ANSWERED:
        return false; /* answered twice, or a stale pointer */
    }
    return false;
}

/* R moves to state TO: the time it spent in the state it leaves is counted
 * under that state's phase (bridge_request_phase_seconds). */
static void enter(struct worker *w, struct http_req *r, enum req_state to, uint64_t handle)
{
    static const int phase_of[] = {
        [REQ_READING] = -1,
        [REQ_CHECKING] = METRICS_PHASE_CHECK,
        [REQ_WAIT_ROOM] = METRICS_PHASE_ROOM,
        [REQ_WAIT_CONFIRM] = METRICS_PHASE_CONFIRM,
        [REQ_WAIT_REPLY] = METRICS_PHASE_REPLY,
        [REQ_WAIT_FIRST] = METRICS_PHASE_CONFIRM, /* the first one's confirm */
        [REQ_WAIT_SPOOL] = METRICS_PHASE_CONFIRM, /* made durable here instead */
        [REQ_ANSWERED] = -1,
    };
    enum req_state from = state_of(r);
    assert(legal(from, to));
    if (phase_of[from] >= 0)
        metrics_phase(w->m, (enum metrics_phase)phase_of[from], http_req_slot_ns(r));
    http_req_set_slot(r, (unsigned)to, handle);
}

static size_t route_index(const struct worker *w, const struct http_route *hroute);
static const struct config_route *req_route(const struct worker *w, const struct http_req *r);
static void backlog_remove(struct worker *w, struct http_req *r);
static void firsts_remove(struct worker *w, struct http_req *r);
static void dedupe_settle(struct worker *w, struct http_req *r, int status);

/* R leaves the worker: whatever holds it lets it go (unless HOLDER is LET_GO:
 * the callback on our stack is that holder's, and it has). Every way out
 * passes here: an answer (answer()) and the client gone (on_gone). */
static void forget(struct worker *w, struct http_req *r, enum holder holder)
{
    enum req_state st = state_of(r);
    assert(st != REQ_READING && st != REQ_ANSWERED);
    if (holder == LET_GO)
        return;
    uint64_t handle = http_req_handle(r);
    switch (st) {
    case REQ_WAIT_ROOM:
        backlog_remove(w, r);
        break;
    case REQ_WAIT_CONFIRM:
        if (req_route(w, r)->mode == ROUTE_RPC)
            broker_rpc_forget(w->broker, handle); /* its handle: reply and confirm */
        else
            broker_detach(w->broker, handle);
        break;
    case REQ_WAIT_REPLY:
        broker_rpc_forget(w->broker, handle);
        break;
    case REQ_WAIT_FIRST:
        firsts_remove(w, r);
        break;
    case REQ_WAIT_SPOOL:
        w->spool_waits[handle & w->spool_mask].r = NULL; /* its write is told to no one */
        break;
    case REQ_READING:
    case REQ_CHECKING:
    case REQ_ANSWERED:
        break; /* nothing holds it */
    }
}

/* The one reply path of the worker: R is forgotten, marked answered, sent. */
static void answer(struct worker *w, struct http_req *r, enum holder holder, int status,
                   const char *ctype, const char *body, size_t len)
{
    forget(w, r, holder);
    dedupe_settle(w, r, status);
    enter(w, r, REQ_ANSWERED, 0);
    http_req_reply(r, status, ctype, body, len);
}

static void reply_text(struct worker *w, struct http_req *r, enum holder holder, int status,
                       const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void reply_text(struct worker *w, struct http_req *r, enum holder holder, int status,
                       const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n > sizeof buf - 2)
        n = (int)sizeof buf - 2;
    buf[n++] = '\n';
    answer(w, r, holder, status, "text/plain", buf, (size_t)n);
}

/* Index in the config's routes of the route the HTTP room calls HROUTE. */
static size_t route_index(const struct worker *w, const struct http_route *hroute)
{
    return (size_t)(hroute - w->cfg->http.routes);
}

/* The route R came on, as the config describes it. */
static const struct config_route *req_route(const struct worker *w, const struct http_req *r)
{
    return &w->cfg->routes[route_index(w, http_req_route(r))];
}

static bool is_rpc(const struct worker *w, const struct http_req *r)
{
    return req_route(w, r)->mode == ROUTE_RPC;
}

static void replay_done(struct worker *w, struct replay_slot *s, enum tracker_result res);
static bool is_replay(const struct worker *w, const void *ctx);
static bool respool(struct worker *w, struct http_req *r);

static void on_done(void *arg, void *ctx, enum tracker_result res)
{
    struct worker *w = arg;
    if (is_replay(w, ctx)) {
        replay_done(w, ctx, res);
        return;
    }
    struct http_req *r = ctx;
    /* A confirm; or, to an rpc request waiting for its reply, the end of
     * that wait: its return (confirm = no) or its channel lost. */
    assert(state_of(r) == REQ_WAIT_CONFIRM ||
           (state_of(r) == REQ_WAIT_REPLY && res != TRACKER_ACK && res != TRACKER_NACK &&
            is_rpc(w, r)));
    /* The tracker let go of R; on an rpc route the rpc table still holds it
     * (its reply may come): forget() drops that unless R waits on. */
    enum holder holder = STILL_HELD;
    if (is_rpc(w, r)) {
        if (res == TRACKER_ACK) {
            metrics_confirm(w->m, METRICS_ACK);
            enter(w, r, REQ_WAIT_REPLY, http_req_handle(r));
            return; /* the broker has it: now the reply (or the timeout) answers */
        }
    } else {
        holder = LET_GO;
    }
    switch (res) {
    case TRACKER_ACK:
        metrics_confirm(w->m, METRICS_ACK);
        answer(w, r, holder, 202, NULL, NULL, 0);
        break;
    case TRACKER_NACK:
        metrics_confirm(w->m, METRICS_NACK);
        reply_text(w, r, holder, 503, "the broker refused the message (nack); retry later");
        break;
    case TRACKER_RETURNED:
        metrics_confirm(w->m, METRICS_RETURN);
        reply_text(w, r, holder, 502,
                   "unroutable: no queue is bound for this route's exchange and routing key");
        break;
    case TRACKER_LOST:
        if (respool(w, r))
            break;
        reply_text(w, r, holder, 503,
                   "the broker connection was lost or blocked before the message was "
                   "confirmed; retry later");
        break;
    }
}

static void on_reply(void *arg, void *ctx, const struct broker_reply *rep)
{
    struct worker *w = arg;
    struct http_req *r = ctx;
    /* The broker forgot R, and its confirm if still owed. */
    assert(state_of(r) == REQ_WAIT_REPLY || state_of(r) == REQ_WAIT_CONFIRM);
    if (rep->bad != BROKER_REPLY_OK) {
        static const enum metrics_bad_reply why[] = {
            [BROKER_REPLY_BAD_STATUS] = METRICS_BAD_STATUS,
            [BROKER_REPLY_BAD_CTYPE] = METRICS_BAD_CONTENT_TYPE,
            [BROKER_REPLY_TOO_LARGE] = METRICS_BAD_TOO_LARGE,
            [BROKER_REPLY_NO_MEMORY] = METRICS_BAD_NO_MEMORY,
        };
        _Static_assert(sizeof why / sizeof why[0] == BROKER_REPLY_KINDS &&
                           BROKER_REPLY_KINDS - 1 == METRICS_BAD_KINDS,
                       "every reason of broker.h has its /metrics label");
        metrics_rpc_bad_reply(w->m, why[rep->bad]);
        log_warn("%s: %s", http_req_id(r), rep->error);
        reply_text(w, r, LET_GO, 502, "%s", rep->error);
        return;
    }
    /* The worker's span, when it names one, is what the caller links to. */
    char tp[TRACE_PARENT_LEN + 1];
    const char *ours = http_req_trace(r);
    if (rep->traceparent != NULL && ours[0] != '\0' && trace_parent_parse(rep->traceparent, tp) &&
        memcmp(tp + 3, ours + 3, TRACE_ID_LEN) == 0) /* of the same trace only */
        http_req_set_trace(r, tp, http_req_trace_passed(r));
    answer(w, r, LET_GO, rep->status,
           rep->content_type != NULL ? rep->content_type : "application/xml", rep->body, rep->len);
}

static bool publish(struct worker *w, struct http_req *r, bool queued);
static bool spoolable(const struct worker *w, size_t route_idx);
static void backlog_push(struct worker *w, struct http_req *r);
static void backlog_fail(struct worker *w, const char *why);

static void on_broker_state(void *arg, enum broker_state s, const char *reason)
{
    struct worker *w = arg;
    int was = atomic_load_explicit(&w->broker_state, memory_order_relaxed);
    /* Up again after down or connecting (not after blocked, nor a channel
     * reopened under an open connection): a new connection. */
    if (s == BROKER_UP && (was == BROKER_DOWN || was == BROKER_CONNECTING)) {
        if (w->ever_up)
            metrics_reconnected(w->m);
        w->ever_up = true;
    }
    pthread_mutex_lock(&w->reason_lock);
    snprintf(w->reason, sizeof w->reason, "%s", reason != NULL ? reason : "");
    snprintf(w->node, sizeof w->node, "%s", broker_node(w->broker));
    pthread_mutex_unlock(&w->reason_lock);
    atomic_store_explicit(&w->broker_state, (int)s, memory_order_release);
    if (s != BROKER_UP && backlog_live(w->backlog) > 0)
        backlog_fail(w, reason != NULL ? reason : broker_state_name(s));
    if (s == BROKER_FAILED)
        pool_fail(w->pool, w->id, reason != NULL ? reason : "the broker refused the config");
}

/* ---- requests from http/ ------------------------------------------------ */

struct header_ctx {
    struct hdrmap *m; /* being filled */
};

static int add_header(void *arg, const char *name, const char *value)
{
    struct header_ctx *hc = arg;
    return hdrmap_add(hc->m, name, value);
}

/* Why a request to ROUTE gets 503 before its body is checked, as text into
 * BUF; NULL when it may go on. UNCOUNTED: 1 when the request does not yet
 * count as pending (asked from its headers), 0 when it does. Requests of
 * this worker waiting on the broker: publishes awaiting a confirm and rpc
 * requests awaiting a reply. Load is shed before the body is checked (up to
 * ~2.4 ms a MiB), so that a flood to a route whose queue stopped confirming
 * costs O(1) each; and per route, so that one whose queue stopped
 * confirming does not take the budget of the others (its requests wait out
 * their timeout). */
static const char *load_shed(struct worker *w, size_t route_idx, size_t uncounted, char *buf,
                             size_t n)
{
    const struct config_route *route = &w->cfg->routes[route_idx];
    if (http_server_pending(w->http) + uncounted > w->cfg->amqp.max_inflight) {
        snprintf(buf, n, "too many requests waiting for the broker; retry later");
        return buf;
    }
    if (http_server_route_pending(w->http, &w->cfg->http.routes[route_idx]) + uncounted >
        route->max_inflight) {
        snprintf(buf, n, "too many requests of route %s waiting for the broker; retry later",
                 route->name);
        return buf;
    }
    return NULL;
}

/* Why nothing can be published now, as text into BUF; NULL when the broker
 * is up. */
static const char *broker_down(struct worker *w, char *buf, size_t n)
{
    enum broker_state st = broker_state(w->broker);
    if (st == BROKER_UP)
        return NULL;
    snprintf(buf, n, "broker unavailable (%s): %s", broker_state_name(st),
             broker_reason(w->broker));
    return buf;
}

static const char *on_admit(void *arg, const struct http_route *hroute, char *buf, size_t n)
{
    struct worker *w = arg;
    size_t route_idx = route_index(w, hroute);
    const char *why = load_shed(w, route_idx, 1, buf, n);
    if (why != NULL)
        return why;
    /* The broker first: the spool is asked only when it is away. */
    why = broker_down(w, buf, n);
    return why != NULL && spoolable(w, route_idx) ? NULL : why;
}

/* ---- what the request adds to its message ------------------------------ */

/* A route's names and priority for one request: its own, or expanded from
 * the request (routing from the path and headers, ingest-bridge(8)). */
struct expansion {
    const char *routing_key;
    const char *exchange;
    int priority; /* -1 = none */
    char rk[TMPL_VALUE_MAX + 1];
    char ex[TMPL_VALUE_MAX + 1];
};

static const char *header_of(void *arg, const char *name, int *count)
{
    return http_req_header(arg, name, count);
}

/* X for R on ROUTE; -1 with WHY (for a 400) naming what the request got
 * wrong. The same request expands the same way every time: done when it
 * is checked, and again when it is published (perhaps from the backlog). */
static int expand(struct http_req *r, const struct config_route *route, struct expansion *x,
                  char *why, size_t wl)
{
    x->routing_key = route->routing_key;
    x->exchange = route->exchange;
    x->priority = route->priority_value;
    if (!route->dynamic)
        return 0;
    struct tmpl_span caps[TMPL_MAX_CAPTURES];
    size_t n = 0;
    char part[200];
    if (!path_match(route->path, http_req_path(r), caps, &n))
        return errf(why, wl, "the path does not match the route's %s", route->path);
    if (route->rk_tmpl.dynamic) {
        if (tmpl_expand(&route->rk_tmpl, caps, header_of, r, x->rk, part, sizeof part) != 0)
            return errf(why, wl, "routing_key: %s", part);
        x->routing_key = x->rk;
    }
    if (route->ex_tmpl.dynamic) {
        if (tmpl_expand(&route->ex_tmpl, caps, header_of, r, x->ex, part, sizeof part) != 0)
            return errf(why, wl, "exchange: %s", part);
        size_t i = 0;
        while (i < route->n_exchanges && strcmp(route->exchange_list[i], x->ex) != 0)
            i++;
        if (i == route->n_exchanges)
            return errf(why, wl, "exchange: '%s' is not one of the route's exchanges", x->ex);
        x->exchange = x->ex;
    }
    if (route->priority_header != NULL) {
        int count = 0;
        const char *v = http_req_header(r, route->priority_header, &count);
        if (v != NULL) {
            long p = -1;
            if (count == 1 && v[0] >= '0' && v[0] <= '9' && strlen(v) <= 3) {
                char *end = NULL;
                p = strtol(v, &end, 10);
                if (*end != '\0')
                    p = -1;
            }
            if (p < 0 || p > route->priority_max)
                return errf(why, wl, "header %s must come once, a number from 0 to %d",
                            route->priority_header, route->priority_max);
            x->priority = (int)p;
        }
    }
    return 0;
}

/* The traceparent R's message and answer carry: the request's own when it
 * is valid (it passes unchanged: the bridge records no span), else a new
 * one when the route starts traces. */
static void trace_begin(struct worker *w, struct http_req *r, const struct config_route *route)
{
    if (route->trace == TRACE_OFF)
        return;
    int count = 0;
    const char *in = http_req_header(r, "traceparent", &count);
    char tp[TRACE_PARENT_LEN + 1];
    if (in != NULL && count == 1 && trace_parent_parse(in, tp)) {
        http_req_set_trace(r, tp, true);
    } else if (route->trace == TRACE_START) {
        trace_parent_new(&w->trace, tp);
        http_req_set_trace(r, tp, false);
    }
}

struct join_ctx {
    const char *name; /* the header */
    char *buf;        /* its lines, joined with "," */
    size_t len, cap;  /* bytes in buf; most it may hold */
    bool over;        /* longer than cap */
};

static int join_line(void *arg, const char *name, const char *value)
{
    struct join_ctx *j = arg;
    if (strcasecmp(name, j->name) != 0 || j->over)
        return 0;
    size_t n = strlen(value), sep = j->len > 0;
    if (j->len + sep + n > j->cap) {
        j->over = true;
        return 0;
    }
    if (sep)
        j->buf[j->len++] = ',';
    memcpy(j->buf + j->len, value, n);
    j->len += n;
    j->buf[j->len] = '\0';
    return 0;
}

/* Header NAME of R, every line joined (as the spec combines them), into
 * the worker's buffer when at most CAP bytes: its length, else 0. */
static size_t joined(struct worker *w, struct http_req *r, const char *name, size_t cap)
{
    struct join_ctx j = {name, w->trace_buf, 0, cap, false};
    w->trace_buf[0] = '\0';
    (void)http_req_foreach_header(r, join_line, &j);
    return j.over ? 0 : j.len;
}

/* The headers R's route adds: its constant ones, then trace context (the
 * tracestate only with the request's own traceparent; baggage when valid,
 * whole or not at all). 0 / -1 (out of memory). */
static int put_route_headers(struct worker *w, struct http_req *r, const struct config_route *route)
{
    for (size_t i = 0; i < route->n_const_hdr; i++)
        if (hdrmap_put(&w->headers, route->const_hdr[i].name, route->const_hdr[i].value) != 0)
            return -1;
    /* Not an X- name: a client can never send it for hdrmap to copy. */
    const char *subject = http_req_client_subject(r);
    if (subject != NULL && hdrmap_put(&w->headers, "tls-client-subject", subject) != 0)
        return -1;
    if (route->trace == TRACE_OFF)
        return 0;
    const char *tp = http_req_trace(r);
    if (tp[0] != '\0') {
        if (hdrmap_put(&w->headers, "traceparent", tp) != 0)
            return -1;
        size_t n;
        if (http_req_trace_passed(r) && (n = joined(w, r, "tracestate", TRACE_STATE_MAX)) > 0 &&
            trace_state_valid(w->trace_buf, n) &&
            hdrmap_put(&w->headers, "tracestate", w->trace_buf) != 0)
            return -1;
    }
    size_t n = joined(w, r, "baggage", TRACE_BAGGAGE_MAX);
    if (n > 0 && trace_baggage_valid(w->trace_buf, n) &&
        hdrmap_put(&w->headers, "baggage", w->trace_buf) != 0)
        return -1;
    return 0;
}

/* ---- the idempotency window (dedupe) -------------------------------------- */

static void check_and_publish(struct worker *w, struct http_req *r, size_t route_idx);

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static struct dedupe *window_of(const struct worker *w, size_t route_idx)
{
    return w->pool->dedupe != NULL ? w->pool->dedupe[route_idx] : NULL;
}

/* R's id was answered STATUS already (a 2xx within the window, or the
 * failure of the first one R waited for): the same answer, marked. HELD:
 * the ids the window holds. */
static void replay(struct worker *w, struct http_req *r, size_t route_idx, int status, size_t held)
{
    metrics_dedupe(w->m, METRICS_ROUTE0 + route_idx, true, held);
    http_req_add_header(r, "X-Idempotent-Replay", "true");
    log_debug("%s: answered from the idempotency window (%d)", http_req_id(r), status);
    if (status >= 200 && status < 300)
        answer(w, r, STILL_HELD, status, NULL, NULL, 0);
    else
        reply_text(w, r, STILL_HELD, status,
                   "the first request with this X-Request-Id was answered %d (this is its "
                   "answer); retry later",
                   status);
}

/* R's id in its route's window: false when R goes on (its id is new: R
 * owns it until answered); true when R was answered from the window, or
 * waits for the first request with its id (REQ_WAIT_FIRST). */
static bool dedupe_start(struct worker *w, struct http_req *r, size_t route_idx)
{
    struct dedupe *d = window_of(w, route_idx);
    /* An id the bridge made is new by construction: no retry carries it
     * unless the client read it from an answer, and it would only take a
     * place from the ids clients send. */
    if (d == NULL || http_req_id_generated(r))
        return false;
    uint64_t handle = 0;
    int status = 0;
    size_t held = 0;
    switch (
        dedupe_begin(d, http_req_id(r), http_req_id_len(r), mono_ms(), &handle, &status, &held)) {
    case DEDUPE_NEW:
        http_req_set_owner(r, handle);
        metrics_dedupe(w->m, METRICS_ROUTE0 + route_idx, false, held);
        return false;
    case DEDUPE_DONE:
        replay(w, r, route_idx, status, held);
        return true;
    case DEDUPE_PENDING:
        break;
    }
    enter(w, r, REQ_WAIT_FIRST, handle);
    if (w->n_firsts == w->cap_firsts) {
        size_t cap = w->cap_firsts > 0 ? 2 * w->cap_firsts : 16;
        struct http_req **grown = realloc(w->firsts, cap * sizeof *grown);
        if (grown == NULL) {
            reply_text(w, r, STILL_HELD, 503, "out of memory");
            return true;
        }
        w->firsts = grown;
        w->cap_firsts = cap;
    }
    w->firsts[w->n_firsts++] = r;
    if (!event_pending(w->first_poll, EV_TIMEOUT, NULL)) {
        struct timeval tv = {0, 2000};
        event_add(w->first_poll, &tv);
    }
    return true;
}

static void firsts_remove(struct worker *w, struct http_req *r)
{
    for (size_t i = 0; i < w->n_firsts; i++) {
        if (w->firsts[i] == r) {
            w->firsts[i] = w->firsts[--w->n_firsts];
            break;
        }
    }
    if (w->n_firsts == 0)
        event_del(w->first_poll);
}

/* Every 2 ms while retries wait for their first: done, they get its
 * outcome; gone (dropped from a full window, its client left), they go on
 * as if new. */
static void on_first_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct worker *w = arg;
    for (size_t i = w->n_firsts; i-- > 0;) {
        if (i >= w->n_firsts)
            continue;
        struct http_req *r = w->firsts[i];
        size_t route_idx = route_index(w, http_req_route(r));
        int status = 0;
        enum dedupe_seen seen = dedupe_poll(window_of(w, route_idx), http_req_handle(r),
                                            http_req_id(r), http_req_id_len(r), &status);
        if (seen == DEDUPE_PENDING) {
            /* Bounded on its own too: a chain of owners whose clients left
             * would hand the wait on and on. */
            if (http_req_slot_ns(r) / 1000000 > w->cfg->http.timeout_ms)
                reply_text(w, r, STILL_HELD, 503,
                           "the first request with this X-Request-Id did not finish within "
                           "[http] timeout; retry later");
            continue;
        }
        if (seen == DEDUPE_DONE && status != 0) {
            replay(w, r, route_idx, status, dedupe_size(window_of(w, route_idx)));
            continue;
        }
        firsts_remove(w, r);
        enter(w, r, REQ_CHECKING, 0);
        if (!dedupe_start(w, r, route_idx))
            check_and_publish(w, r, route_idx);
    }
}

/* R, the owner of its id, is answered STATUS (0: its client left, and its
 * publish may yet be confirmed): the window keeps a 2xx, and gives the
 * rest to the retries that wait. */
static void dedupe_settle(struct worker *w, struct http_req *r, int status)
{
    uint64_t owner = http_req_owner(r);
    if (owner == 0)
        return;
    http_req_set_owner(r, 0);
    size_t route_idx = route_index(w, http_req_route(r));
    struct dedupe *d = window_of(w, route_idx);
    dedupe_end(d, owner, http_req_id(r), http_req_id_len(r), status, mono_ms());
}

static void on_route(void *arg, struct http_req *r, const struct http_route *hroute)
{
    struct worker *w = arg;
    size_t route_idx = route_index(w, hroute);
    const struct config_route *route = &w->cfg->routes[route_idx];
    enter(w, r, REQ_CHECKING, 0);
    char why[200];
    if (load_shed(w, route_idx, 0, why, sizeof why) != NULL) {
        reply_text(w, r, STILL_HELD, 503, "%s", why);
        return;
    }
    struct expansion x;
    if (expand(r, route, &x, why, sizeof why) != 0) {
        reply_text(w, r, STILL_HELD, 400, "%s", why);
        return;
    }
    size_t len = 0;
    const char *body = http_req_plain(r, &len);
    struct xmlcheck_result xr;
    const char *root = route->root[0] != '\0' ? route->root : NULL;
    if (xmlcheck_run(w->xc, body, len, root, w->schemas[route_idx], &xr) != XMLCHECK_OK) {
        char msg[XMLCHECK_MSG_LEN + 64];
        (void)xmlcheck_format(&xr, msg, sizeof msg);
        log_debug("%s: %s: %s", http_req_id(r), route->name, msg);
        reply_text(w, r, STILL_HELD, xr.status == XMLCHECK_MALFORMED ? 400 : 422, "%s", msg);
        return;
    }
    /* A checked body asks the window: a bad one takes no place in it. */
    if (!dedupe_start(w, r, route_idx))
        check_and_publish(w, r, route_idx);
}

/* R (REQ_CHECKING, load shed, names expanded, body checked, its id new to
 * its window if it has one) published, or answered. */
static void check_and_publish(struct worker *w, struct http_req *r, size_t route_idx)
{
    const struct config_route *route = &w->cfg->routes[route_idx];
    char why[200];
    /* Once it would be published: a refused request starts no trace. */
    trace_begin(w, r, route);
    if (broker_down(w, why, sizeof why) != NULL && !spoolable(w, route_idx)) {
        reply_text(w, r, STILL_HELD, 503, "%s", why);
        return;
    }
    const char *ctype = http_req_content_type(r);
    if (ctype != NULL && strlen(ctype) > 255) {
        reply_text(w, r, STILL_HELD, 400, "Content-Type is longer than 255 bytes");
        return;
    }
    /* Behind the ones already waiting for room, never before them. */
    if (backlog_live(w->backlog) > 0 || !publish(w, r, false))
        backlog_push(w, r);
}

/* Map R's headers and publish it; false when the broker's socket has no room
 * (nothing sent, R untouched). Otherwise R waits for its confirm or reply, or
 * has been answered. QUEUED: R comes out of the backlog, whose wait counts
 * against the same bound: its timer runs on from backlog_push. */
/* ---- the spool --------------------------------------------------------- */

/* May R of ROUTE_IDX be spooled now (the broker away)? */
static bool spoolable(const struct worker *w, size_t route_idx)
{
    /* Not once the worker closes: its loop ends before a write is told. */
    return w->spool != NULL && !w->closing && w->cfg->routes[route_idx].spool &&
           spool_ready(w->spool);
}

/* The broker is away: M (R's message) goes to the spool; R is answered 202
 * once it is durable (on_told), 503 if it cannot be. */
static void spool_request(struct worker *w, struct http_req *r, const struct bridge_msg *m,
                          size_t route_idx)
{
    const struct config_route *route = &w->cfg->routes[route_idx];
    struct spool_wait *slot = &w->spool_waits[w->next_ticket & w->spool_mask];
    if (slot->r != NULL || w->spool_writes > w->spool_mask) {
        reply_text(w, r, STILL_HELD, 503,
                   "broker unavailable, and too many requests wait for the spool; retry later");
        return;
    }
    void *rec = NULL;
    size_t len = 0;
    if (spool_encode(m, route->name, &rec, &len) != 0) {
        reply_text(w, r, STILL_HELD, 503, "out of memory");
        return;
    }
    uint64_t ticket = w->next_ticket;
    int err = spool_append(w->spool, rec, len, w, ticket);
    free(rec);
    if (err != 0) {
        log_warn("%s: %s: broker unavailable and not spooled: %s", http_req_id(r), route->name,
                 err == ENOSPC ? "the spool is full ([spool] max_size)" : strerror(err));
        reply_text(w, r, STILL_HELD, 503, "broker unavailable, and the spool cannot take it: %s",
                   err == ENOSPC ? "the spool is full" : strerror(err));
        return;
    }
    w->next_ticket++;
    w->spool_writes++;
    *slot = (struct spool_wait){r, ticket};
    http_req_drop_body(r);
    enter(w, r, REQ_WAIT_SPOOL, ticket);
    /* Its whole timeout again (a request respooled had used some): the
     * writer answers long before, unless the disk hangs. */
    http_req_set_timer(r, w->rt[route_idx].tv);
}

void worker_spool_told(void *arg, uint64_t ticket, int err)
{
    struct worker *w = arg;
    pthread_mutex_lock(&w->told_lock);
    /* Room for every append in flight (spool_writes <= spool_mask + 1). */
    assert(w->n_told < w->cap_told);
    w->told[w->n_told++] = (struct spool_told){ticket, err};
    uint64_t one = 1;
    (void)write(w->told_fd, &one, sizeof one);
    pthread_mutex_unlock(&w->told_lock);
}

static void on_told(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct worker *w = arg;
    uint64_t n;
    (void)read(fd, &n, sizeof n);
    /* The news out from under the lock: the writer serves every worker. */
    pthread_mutex_lock(&w->told_lock);
    struct spool_told *told = w->told;
    size_t n_told = w->n_told;
    w->told = w->told_spare;
    w->told_spare = told;
    w->n_told = 0;
    pthread_mutex_unlock(&w->told_lock);
    for (size_t i = 0; i < n_told; i++) {
        struct spool_told t = told[i];
        w->spool_writes--;
        struct spool_wait *slot = &w->spool_waits[t.ticket & w->spool_mask];
        if (slot->ticket != t.ticket || slot->r == NULL)
            continue; /* its client left, or its timer answered it */
        struct http_req *r = slot->r;
        slot->r = NULL;
        if (t.err == 0) {
            http_req_add_header(r, "X-Spooled", "yes");
            answer(w, r, LET_GO, 202, NULL, NULL, 0);
        } else {
            log_warn("%s: the spool could not write it: %s", http_req_id(r), strerror(t.err));
            reply_text(w, r, LET_GO, 503,
                       "broker unavailable, and the spool could not write it: %s", strerror(t.err));
        }
    }
}

/* R's way to the broker is gone (the connection lost before its confirm,
 * or before it had room), and whoever held it let go: on a route that
 * spools it goes to the spool now (its body was kept for this), which may
 * mean twice at the broker, never lost. False when it cannot. */
static bool respool(struct worker *w, struct http_req *r)
{
    if (!spoolable(w, route_index(w, http_req_route(r))) || broker_state(w->broker) == BROKER_UP)
        return false;
    enter(w, r, REQ_CHECKING, 0);
    if (!publish(w, r, true))
        reply_text(w, r, STILL_HELD, 503, "broker unavailable");
    return true;
}

static bool is_replay(const struct worker *w, const void *ctx)
{
    const struct replay_slot *s = ctx;
    return w->replay != NULL && s >= w->replay && s < w->replay + REPLAY_MAX;
}

/* The broker said what became of a replayed record. */
static void replay_done(struct worker *w, struct replay_slot *s, enum tracker_result res)
{
    switch (res) {
    case TRACKER_ACK:
        metrics_confirm(w->m, METRICS_ACK);
        spool_ack(w->spool, &s->rec);
        break;
    case TRACKER_RETURNED:
        /* As a 502 would have said to the client: the broker has no queue
         * for it. Kept, it would come back for ever. */
        metrics_confirm(w->m, METRICS_RETURN);
        log_error("spool: a replayed message was unroutable (no queue bound): dropped");
        spool_ack(w->spool, &s->rec);
        break;
    case TRACKER_NACK:
        metrics_confirm(w->m, METRICS_NACK);
        spool_retry(w->spool, &s->rec);
        break;
    case TRACKER_LOST:
        spool_retry(w->spool, &s->rec);
        break;
    }
    s->used = false;
    w->n_replay--;
}

/* While the broker is up: the spool's oldest records go to it, at most
 * REPLAY_MAX at once per worker, beside new requests. */
static void on_replay_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct worker *w = arg;
    if (w->stopping || broker_state(w->broker) != BROKER_UP)
        return;
    struct hdrmap_kv kv[SPOOL_MAX_HEADERS];
    for (size_t i = 0; i < REPLAY_MAX && w->n_replay < REPLAY_MAX; i++) {
        struct replay_slot *s = &w->replay[i];
        if (s->used)
            continue;
        if (spool_next(w->spool, &s->rec) <= 0)
            return;
        struct bridge_msg m;
        struct hdrmap h;
        const char *route = NULL;
        if (spool_decode(s->rec.data, s->rec.len, &m, &route, &h, kv) != 0) {
            log_error("spool: a record that does not decode: dropped");
            spool_ack(w->spool, &s->rec);
            spool_rec_free(&s->rec);
            continue;
        }
        uint64_t tag = 0;
        enum broker_pub pub = broker_publish(w->broker, &m, s, &tag);
        spool_rec_free(&s->rec); /* sent or not, the record stays on disk until acked */
        if (pub == BROKER_PUB_WAIT) {
            s->used = true;
            w->n_replay++;
        } else if (pub == BROKER_PUB_SENT) {
            spool_ack(w->spool, &s->rec);
        } else {
            spool_retry(w->spool, &s->rec);
            return;
        }
    }
}

/* R's message headers into w->headers (shared by the worker's requests:
 * valid until the next publish). 0 / -1 (out of memory). */
static int map_headers(struct worker *w, struct http_req *r, const struct config_route *route)
{
    struct header_ctx hc = {&w->headers};
    return hdrmap_begin(&w->headers, http_req_path(r), http_req_query(r)) != 0 ||
                   http_req_foreach_header(r, add_header, &hc) != 0 ||
                   hdrmap_finish(&w->headers, http_req_client(r)) != 0 ||
                   put_route_headers(w, r, route) != 0
               ? -1
               : 0;
}

static bool publish(struct worker *w, struct http_req *r, bool queued)
{
    size_t route_idx = route_index(w, http_req_route(r));
    const struct config_route *route = &w->cfg->routes[route_idx];
    size_t len = 0;
    const char *body = http_req_body(r, &len);
    const char *ctype = http_req_content_type(r);
    bool minimal = route->properties == PROPERTIES_MINIMAL;
    struct expansion x;
    char why[300];
    if (expand(r, route, &x, why, sizeof why) != 0) {
        reply_text(w, r, STILL_HELD, 400, "%s", why);
        return true;
    }
    if (!minimal && map_headers(w, r, route) != 0) {
        log_error("%s: out of memory mapping headers", http_req_id(r));
        reply_text(w, r, STILL_HELD, 503, "out of memory");
        return true;
    }
    if (route->content_type[0] != '\0')
        ctype = route->content_type;

    struct bridge_msg m = {
        .body = body,
        .body_len = len,
        .content_type = ctype,
        .message_id = http_req_id(r),
        .message_id_len = http_req_id_len(r),
        .type = route->name,
        .exchange = x.exchange,
        .routing_key = x.routing_key,
        .content_encoding = http_req_encoding(r),
        .has_priority = x.priority >= 0,
        .priority = (uint8_t)(x.priority >= 0 ? x.priority : 0),
        .persistent = route->persistent,
        .minimal = minimal,
        .timestamp = http_req_arrival(r),
        .headers = minimal ? NULL : &w->headers,
    };
    if (route->mode == ROUTE_RPC)
        m.reply_to = BROKER_REPLY_TO;
    if (w->rt[route_idx].expiration[0] != '\0')
        m.expiration = w->rt[route_idx].expiration;
    uint64_t tag = 0;
    switch (broker_publish(w->broker, &m, r, &tag)) {
    case BROKER_PUB_WAIT:
        /* The broker's buffers or the socket hold the message now; a route
         * that spools keeps it, for the spool if the connection goes. */
        if (!route->spool || w->spool == NULL)
            http_req_drop_body(r);
        metrics_published(w->m, METRICS_ROUTE0 + route_idx);
        /* With confirm = no an rpc request waits for its reply only. */
        enter(w, r,
              route->mode == ROUTE_RPC && !w->cfg->amqp.confirm ? REQ_WAIT_REPLY : REQ_WAIT_CONFIRM,
              tag);
        if (!queued)
            http_req_set_timer(r, w->rt[route_idx].tv);
        break;
    case BROKER_PUB_SENT:
        metrics_published(w->m, METRICS_ROUTE0 + route_idx);
        answer(w, r, STILL_HELD, 202, NULL, NULL, 0);
        break;
    case BROKER_PUB_UNAVAILABLE:
        /* A publish that found the connection gone ran the broker's loss
         * callbacks, which may have spooled others through w->headers:
         * R's again. */
        if (route->spool && w->spool != NULL && (minimal || map_headers(w, r, route) == 0))
            spool_request(w, r, &m, route_idx);
        else
            reply_text(w, r, STILL_HELD, 503, "broker unavailable: %s", broker_reason(w->broker));
        break;
    case BROKER_PUB_FULL:
        reply_text(w, r, STILL_HELD, 503, "too many requests waiting for the broker; retry later");
        break;
    case BROKER_PUB_BUSY:
        return false;
    }
    return true;
}

/* ---- the backlog -------------------------------------------------------- */

/* Requests waiting for room toward the broker (backlog.h), oldest first.
 * RabbitMQ stops reading a publisher's socket while its queues catch up
 * (credit flow): the publishes that do not fit wait there, in order, instead
 * of blocking the loop or being refused, and go out as the broker reads
 * again. Bounded by max_inflight (every one counts as pending), by [http]
 * timeout each, and emptied with 503 the moment the connection is down or
 * blocked. A request waiting there is in REQ_WAIT_ROOM with its ticket as
 * its handle; a request that leaves (client gone, timer) frees its place at
 * once. */

/* The backlog's try: R has left it. Publish it; when the socket has no room
 * (nothing happened) it goes back to the front under the same ticket. */
static bool backlog_try(void *arg, void *item, uint64_t ticket)
{
    struct worker *w = arg;
    struct http_req *r = item;
    enter(w, r, REQ_CHECKING, 0);
    if (publish(w, r, true))
        return true;
    enter(w, r, REQ_WAIT_ROOM, ticket);
    return false;
}

/* The backlog's fail: R has left it and will not go out. */
static void backlog_answer(void *arg, void *item, const char *why)
{
    struct worker *w = arg;
    struct http_req *r = item;
    if (!respool(w, r))
        reply_text(w, r, LET_GO, 503, "broker unavailable: %s", why);
}

/* Nothing waits: stop looking for room. */
static void backlog_settle(struct worker *w)
{
    if (backlog_live(w->backlog) == 0)
        event_del(w->backlog_poll);
}

static void backlog_push(struct worker *w, struct http_req *r)
{
    uint64_t ticket = 0;
    if (backlog_add(w->backlog, r, &ticket) != 0) {
        reply_text(w, r, STILL_HELD, 503, "too many requests waiting for the broker; retry later");
        return;
    }
    enter(w, r, REQ_WAIT_ROOM, ticket);
    /* Bounded like a wait for a confirm: [http] timeout, or the rpc route's. */
    http_req_set_timer(r, w->rt[route_index(w, http_req_route(r))].tv);
    if (!event_pending(w->backlog_poll, EV_TIMEOUT, NULL)) {
        struct timeval tv = {0, WORKER_BACKLOG_POLL_MS * 1000};
        event_add(w->backlog_poll, &tv);
    }
}

/* R leaves the backlog without being published (forget()). */
static void backlog_remove(struct worker *w, struct http_req *r)
{
    if (backlog_cancel(w->backlog, http_req_handle(r), r))
        backlog_settle(w);
}

/* Publish from the front while the broker's socket has room. Each request
 * leaves the backlog before its publish: a publish that loses the connection
 * empties the backlog (backlog_fail, from the state callback) while R is
 * answered by publish itself, never twice. A full socket puts it back at the
 * front, nothing having happened. */
static void backlog_drain(struct worker *w)
{
    (void)backlog_flush(w->backlog);
    backlog_settle(w);
}

/* The connection is down or blocked: nothing in the backlog will go out. */
static void backlog_fail(struct worker *w, const char *why)
{
    size_t n = backlog_fail_all(w->backlog, why);
    backlog_settle(w);
    if (n > 0)
        log_warn("broker: %zu requests waiting for room toward it answered 503", n);
}

static void on_backlog_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct worker *w = arg;
    if (broker_state(w->broker) != BROKER_UP)
        return;
    /* Every millisecond while the broker is slow: look before mapping the
     * front request's headers for a publish that would not fit anyway. */
    struct http_req *front = backlog_front(w->backlog);
    size_t len = 0;
    if (front != NULL)
        (void)http_req_body(front, &len);
    if (front == NULL || broker_has_room(w->broker, len))
        backlog_drain(w);
}

static void on_gone(void *arg, struct http_req *r)
{
    struct worker *w = arg;
    log_debug("%s: client left before the answer", http_req_id(r));
    forget(w, r, STILL_HELD);
    /* Its publish may still be confirmed: its waiters go on their own. */
    dedupe_settle(w, r, 0);
    enter(w, r, REQ_ANSWERED, 0); /* the server answers it (no one reads it) and frees it */
}

/* An rpc request got no reply within its route's timeout: 504, and the reply
 * is dropped if it comes later. A publish the broker kept unconfirmed for
 * [http] timeout while connected (a queue without quorum, a broker that
 * stopped reading): 503, and the confirm is dropped if it comes later. */
static void on_expired(void *arg, struct http_req *r)
{
    struct worker *w = arg;
    const struct config_route *route = req_route(w, r);
    if (state_of(r) == REQ_WAIT_ROOM) {
        log_warn("%s: %s: no room toward the broker in time: answering 503", http_req_id(r),
                 route->name);
        reply_text(w, r, STILL_HELD, 503,
                   "the broker did not take the message in time; retry later");
        return;
    }
    if (state_of(r) == REQ_WAIT_SPOOL) {
        log_warn("%s: %s: the spool did not write it in time: answering 503", http_req_id(r),
                 route->name);
        reply_text(w, r, STILL_HELD, 503, "the spool did not write the message in time");
        return;
    }
    if (route->mode == ROUTE_RPC) {
        metrics_rpc_timeout(w->m, METRICS_ROUTE0 + (size_t)(route - w->cfg->routes));
        log_info("%s: %s: no reply within %llu ms: answering 504", http_req_id(r), route->name,
                 (unsigned long long)route->timeout_ms);
        reply_text(w, r, STILL_HELD, 504, "no reply from a worker within %llu ms",
                   (unsigned long long)route->timeout_ms);
        return;
    }
    log_warn("%s: no confirm from the broker within %llu ms: answering 503", http_req_id(r),
             (unsigned long long)w->cfg->http.timeout_ms);
    reply_text(w, r, STILL_HELD, 503,
               "the broker did not confirm the message in time; retry later");
}

/* One line per worker into buf: first those not up ("worker 1: broker down:
 * connection refused"), then those up ("worker 0: up 127.0.0.1:5672"). */
static bool on_health(void *arg, char *buf, size_t buflen)
{
    struct worker *self = arg;
    struct worker_pool *p = self->pool;
    bool ok = true;
    size_t off = 0;
    buf[0] = '\0';
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < p->n; i++) {
            struct worker *w = &p->w[i];
            int s = atomic_load_explicit(&w->broker_state, memory_order_acquire);
            if ((s == BROKER_UP) != (pass == 1))
                continue;
            int n;
            pthread_mutex_lock(&w->reason_lock);
            if (s == BROKER_UP)
                n = snprintf(buf + off, buflen - off, "worker %u: up %s\n", w->id, w->node);
            else
                n = snprintf(buf + off, buflen - off, "worker %u: broker %s: %s\n", w->id,
                             broker_state_name((enum broker_state)s), w->reason);
            pthread_mutex_unlock(&w->reason_lock);
            if (s != BROKER_UP)
                ok = false;
            if (n < 0 || (size_t)n >= buflen - off)
                return ok && pass == 1;
            off += (size_t)n;
        }
    }
    /* Whether a publish route that spools takes requests now, and what waits. */
    if (p->spool != NULL) {
        struct spool_stats st;
        spool_stats(p->spool, &st);
        time_t now = time(NULL);
        snprintf(buf + off, buflen - off, "spool: %s, %llu messages waiting (oldest %lld s)\n",
                 !spool_ready(p->spool) ? "not ready (held by another process)"
                 : ok                   ? "the broker is up"
                                        : "spooling for its routes while the broker is away",
                 (unsigned long long)st.records,
                 st.oldest > 0 && now > st.oldest ? (long long)(now - st.oldest) : 0LL);
    }
    return ok;
}

/* /metrics: every worker's counters and broker connection, read now. */
static int on_metrics(void *arg, char **body, size_t *len)
{
    struct worker *self = arg;
    struct worker_pool *p = self->pool;
    struct metrics_worker_info *info = calloc(p->n + 1, sizeof *info);
    char(*nodes)[WORKER_REASON_LEN] = calloc(p->n + 1, sizeof *nodes);
    int rc = -1;
    if (info != NULL && nodes != NULL) {
        for (size_t i = 0; i < p->n; i++) {
            struct worker *w = &p->w[i];
            info[i].connected =
                atomic_load_explicit(&w->broker_state, memory_order_acquire) == BROKER_UP;
            pthread_mutex_lock(&w->reason_lock);
            memcpy(nodes[i], w->node, sizeof nodes[i]);
            pthread_mutex_unlock(&w->reason_lock);
            info[i].node = nodes[i];
            info[i].late_replies = broker_late_replies(w->broker);
            info[i].late_confirms = broker_late_confirms(w->broker);
        }
        rc = metrics_render(p->metrics, info, body, len);
    }
    free(nodes);
    free(info);
    return rc;
}

/* ---- stopping ----------------------------------------------------------- */

static bool past(const struct timespec *deadline)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > deadline->tv_sec ||
           (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec);
}

static void on_drain_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct worker *w = arg;
    size_t left = http_server_pending(w->http);
    size_t open = http_server_close_idle(w->http, WORKER_DRAIN_IDLE_MS);
    /* And the spool's writer must have told every ticket: it calls us. */
    if ((left > 0 || open > 0 || w->spool_writes > 0) && !past(&w->drain_deadline))
        return;
    if (w->spool_writes > 0)
        return; /* past the deadline too: the writer calls us until it has told them all */
    if (left > 0)
        log_warn("drain deadline reached with %zu requests waiting: answering 503", left);
    else if (open > 0)
        log_info("drain deadline reached with %zu connections open: closing them", open);
    event_del(w->drain_ev);
    /* Retries waiting for a first one: broker_close answers only what the
     * broker holds. */
    while (w->n_firsts > 0)
        reply_text(w, w->firsts[w->n_firsts - 1], STILL_HELD, 503, "shutting down");
    /* Fails whatever still waits (503) and closes channel + connection;
     * nothing is spooled from here on. */
    w->closing = true;
    broker_close(w->broker);
    struct timeval flush = {0, WORKER_FLUSH_MS * 1000};
    event_base_loopexit(w->base, &flush);
}

/* Stop accepting and drain: what is in flight is answered, each open
 * connection is served until its next answer (Connection: close) or until
 * it idles, within the longest request timeout. STOPPING: for good (pong
 * and /healthz say 503); else another set of workers took over. */
static void drain(struct worker *w, bool stopping)
{
    w->stopping = true;
    http_server_drain(w->http, stopping);
    uint64_t bound = w->cfg->http.timeout_ms;
    for (size_t i = 0; i < w->cfg->n_routes; i++)
        if (w->cfg->routes[i].mode == ROUTE_RPC && w->cfg->routes[i].timeout_ms > bound)
            bound = w->cfg->routes[i].timeout_ms;
    clock_gettime(CLOCK_MONOTONIC, &w->drain_deadline);
    w->drain_deadline.tv_sec += (time_t)(bound / 1000);
    w->drain_deadline.tv_nsec += (long)(bound % 1000) * 1000000L;
    if (w->drain_deadline.tv_nsec >= 1000000000L) {
        w->drain_deadline.tv_sec++;
        w->drain_deadline.tv_nsec -= 1000000000L;
    }
    log_info("%s: %zu requests in flight", stopping ? "stopping" : "handing over",
             http_server_pending(w->http));
    struct timeval tick = {0, WORKER_DRAIN_TICK_MS * 1000};
    event_add(w->drain_ev, &tick);
    on_drain_tick(-1, 0, w);
}

static void on_cmd(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct worker *w = arg;
    char c = 0;
    if (read(fd, &c, 1) != 1)
        return;
    if (c == 'r' && !w->stopping)
        http_server_resume(w->http);
    else if ((c == 's' || c == 'h') && !w->stopping)
        drain(w, c == 's');
    else if (c == 's')
        http_server_drain(w->http, true); /* handing over, and now the process stops too */
}

/* ---- threads ------------------------------------------------------------ */

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    char name[16];
    /* A reload's workers run beside the ones they replace for a while:
     * "w0.1" is worker 0 of the first reload. */
    if (w->pool->gen == 0)
        snprintf(name, sizeof name, "w%u", w->id);
    else
        snprintf(name, sizeof name, "w%u.%u", w->id, w->pool->gen % 1000);
    log_set_thread(name);
    broker_start(w->broker);
    event_base_dispatch(w->base);
    /* Anything still pending was failed by broker_close; nothing is left
     * waiting on a connection evhttp is about to free. */
    return NULL;
}

/* A worker's side of the spool: its waiting slots (one per request it may
 * hold), the writer's news, the replay. */
static int spool_init(struct worker *w, struct spool *spool, char *err, size_t errlen)
{
    size_t n = 1;
    while (n < w->cfg->amqp.max_inflight + 1)
        n <<= 1;
    w->spool_mask = n - 1;
    w->spool = spool;
    pthread_mutex_init(&w->told_lock, NULL);
    w->cap_told = n + 1;
    w->spool_waits = calloc(n, sizeof *w->spool_waits);
    w->told = calloc(w->cap_told, sizeof *w->told);
    w->told_spare = calloc(w->cap_told, sizeof *w->told_spare);
    w->replay = calloc(REPLAY_MAX, sizeof *w->replay);
    w->told_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->spool_waits == NULL || w->told == NULL || w->told_spare == NULL || w->replay == NULL ||
        w->told_fd < 0)
        return errf(err, errlen, "worker %u: out of memory or descriptors for the spool", w->id);
    w->told_ev = event_new(w->base, w->told_fd, EV_READ | EV_PERSIST, on_told, w);
    w->replay_ev = event_new(w->base, -1, EV_PERSIST, on_replay_poll, w);
    struct timeval poll = {0, WORKER_REPLAY_POLL_MS * 1000};
    if (w->told_ev == NULL || w->replay_ev == NULL || event_add(w->told_ev, NULL) != 0 ||
        event_add(w->replay_ev, &poll) != 0)
        return errf(err, errlen, "worker %u: out of memory for the spool", w->id);
    return 0;
}

static int worker_init(struct worker *w, struct worker_pool *p, unsigned id,
                       const struct xmlcheck_schema *const *schemas, char *err, size_t errlen)
{
    w->id = id;
    w->pool = p;
    w->cfg = p->cfg;
    w->schemas = schemas;
    w->m = metrics_shard(p->metrics, id);
    w->cmd_fd[0] = w->cmd_fd[1] = -1;
    w->told_fd = -1;
    hdrmap_init(&w->headers);
    trace_gen_init(&w->trace);
    pthread_mutex_init(&w->reason_lock, NULL);
    atomic_init(&w->broker_state, BROKER_DOWN);
    snprintf(w->reason, sizeof w->reason, "not connected yet");

    struct event_config *ec = event_config_new();
    if (ec == NULL)
        return errf(err, errlen, "out of memory");
    /* EV_CLOSED (client hang-up while its request waits) needs early close
     * support: epoll has it. One thread per base: no locking. */
    event_config_require_features(ec, EV_FEATURE_EARLY_CLOSE);
    event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
    w->base = event_base_new_with_config(ec);
    event_config_free(ec);
    if (w->base == NULL)
        return errf(err, errlen, "cannot create an event loop with early-close support");
    struct http_handlers h = {
        .route = on_route,
        .admit = on_admit,
        .gone = on_gone,
        .expired = on_expired,
        .health = on_health,
        .metrics = on_metrics,
        .arg = w,
        .counters = w->m,
    };
    char herr[256];
    w->http = http_server_new(w->base, &w->cfg->http, p->shared, id, p->listen_fds[id],
                              p->successor, &h, herr, sizeof herr);
    if (w->http == NULL)
        return errf(err, errlen, "worker %u: %s", id, herr);
    w->rt = calloc(w->cfg->n_routes + 1, sizeof *w->rt);
    if (w->rt == NULL)
        return errf(err, errlen, "worker %u: out of memory", id);
    for (size_t i = 0; i < w->cfg->n_routes; i++) {
        const struct config_route *route = &w->cfg->routes[i];
        uint64_t ms = route->mode == ROUTE_RPC ? route->timeout_ms : w->cfg->http.timeout_ms;
        struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
        /* Equal durations share one timeout queue: O(1) per request. */
        w->rt[i].tv = event_base_init_common_timeout(w->base, &tv);
        uint64_t ttl = route->mode == ROUTE_RPC ? route->timeout_ms : route->expiration_ms;
        if (ttl > 0)
            snprintf(w->rt[i].expiration, sizeof w->rt[i].expiration, "%llu",
                     (unsigned long long)ttl);
        if (w->rt[i].tv == NULL)
            return errf(err, errlen, "worker %u: out of memory", id);
    }
    /* The checker installs its libxml2 error hooks per call: it may be made
     * here, so that a failure stops start-up instead of a worker. */
    /* One place more than on_route lets wait on the broker: never full. */
    w->backlog = backlog_new((size_t)w->cfg->amqp.max_inflight + 1, backlog_try, backlog_answer, w);
    w->backlog_poll = event_new(w->base, -1, EV_PERSIST, on_backlog_poll, w);
    w->first_poll = event_new(w->base, -1, EV_PERSIST, on_first_poll, w);
    if (w->backlog == NULL || w->backlog_poll == NULL || w->first_poll == NULL)
        return errf(err, errlen, "worker %u: out of memory", id);
    w->xc = xmlcheck_new();
    if (w->xc == NULL)
        return errf(err, errlen, "worker %u: out of memory", id);
    w->broker = broker_new(w->base, &w->cfg->amqp, id, on_done, on_broker_state, on_reply, w);
    if (w->broker == NULL || pipe2(w->cmd_fd, O_CLOEXEC) != 0)
        return errf(err, errlen, "worker %u: out of memory or descriptors", id);
    w->cmd_ev = event_new(w->base, w->cmd_fd[0], EV_READ | EV_PERSIST, on_cmd, w);
    w->drain_ev = event_new(w->base, -1, EV_PERSIST, on_drain_tick, w);
    if (w->cmd_ev == NULL || w->drain_ev == NULL || event_add(w->cmd_ev, NULL) != 0)
        return errf(err, errlen, "worker %u: out of memory", id);
    return p->spool != NULL ? spool_init(w, p->spool, err, errlen) : 0;
}

static void worker_destroy(struct worker *w)
{
    /* Connections first: their requests are all answered by now. */
    if (w->http != NULL)
        http_server_free(w->http);
    if (w->broker != NULL)
        broker_free(w->broker);
    /* After the broker: its last failures reach replay_done. */
    if (w->told_ev != NULL)
        event_free(w->told_ev);
    if (w->replay_ev != NULL)
        event_free(w->replay_ev);
    if (w->told_fd >= 0)
        close(w->told_fd);
    if (w->spool != NULL)
        pthread_mutex_destroy(&w->told_lock);
    free(w->told);
    free(w->told_spare);
    free(w->spool_waits);
    free(w->replay);
    if (w->cmd_ev != NULL)
        event_free(w->cmd_ev);
    if (w->drain_ev != NULL)
        event_free(w->drain_ev);
    if (w->backlog_poll != NULL)
        event_free(w->backlog_poll);
    if (w->first_poll != NULL)
        event_free(w->first_poll);
    free(w->firsts);
    backlog_free(w->backlog);
    if (w->base != NULL)
        event_base_free(w->base);
    if (w->xc != NULL)
        xmlcheck_free(w->xc);
    hdrmap_free(&w->headers);
    free(w->rt);
    for (int i = 0; i < 2; i++)
        if (w->cmd_fd[i] >= 0)
            close(w->cmd_fd[i]);
    pthread_mutex_destroy(&w->reason_lock);
}

/* The window PREV (the workers a reload replaces) keeps for a route named
 * as R, with R's size and duration: a retry across the reload is still
 * seen. NULL if none. */
static struct dedupe *window_before(const struct worker_pool *prev, const struct config_route *r)
{
    for (size_t i = 0; prev != NULL && i < prev->cfg->n_routes; i++) {
        const struct config_route *o = &prev->cfg->routes[i];
        if (prev->dedupe[i] != NULL && strcmp(o->name, r->name) == 0 &&
            o->dedupe_ms == r->dedupe_ms && o->dedupe_ids == r->dedupe_ids)
            return dedupe_hold(prev->dedupe[i]);
    }
    return NULL;
}

struct worker_pool *worker_pool_new(const struct config *cfg,
                                    const struct xmlcheck_schema *const *schemas,
                                    const int *listen_fds, const struct worker_pool *prev,
                                    struct spool *spool, bool successor, char *err, size_t errlen)
{
    struct worker_pool *p = calloc(1, sizeof *p);
    if (p == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->cfg = cfg;
    p->listen_fds = listen_fds;
    p->successor = successor;
    p->spool = spool;
    static atomic_uint pools;
    p->gen = atomic_fetch_add(&pools, 1);
    struct metrics_route *mr = calloc(cfg->n_routes + 1, sizeof *mr);
    for (size_t i = 0; mr != NULL && i < cfg->n_routes; i++)
        mr[i] = (struct metrics_route){cfg->routes[i].name, cfg->routes[i].mode == ROUTE_RPC};
    p->metrics = mr != NULL ? metrics_new((unsigned)cfg->http.workers, mr, cfg->n_routes) : NULL;
    free(mr);
    pthread_mutex_init(&p->fail_lock, NULL);
    p->w = calloc((size_t)cfg->http.workers, sizeof *p->w);
    if (p->w == NULL || p->metrics == NULL) {
        snprintf(err, errlen, "out of memory");
        free(p->w);
        metrics_free(p->metrics);
        pthread_mutex_destroy(&p->fail_lock);
        free(p);
        return NULL;
    }
    /* Certificates and token files, once for every worker. */
    p->shared = http_shared_new(&cfg->http, err, errlen);
    if (p->shared == NULL) {
        worker_pool_free(p);
        return NULL;
    }
    /* The idempotency windows, shared by every worker (a retry lands on any). */
    p->dedupe = calloc(cfg->n_routes + 1, sizeof *p->dedupe);
    for (size_t i = 0; p->dedupe != NULL && i < cfg->n_routes; i++) {
        const struct config_route *r = &cfg->routes[i];
        if (r->dedupe_ms > 0 && (p->dedupe[i] = window_before(prev, r)) == NULL &&
            (p->dedupe[i] = dedupe_new(r->dedupe_ms, r->dedupe_ids)) == NULL)
            break;
    }
    for (size_t i = 0; p->dedupe == NULL || i < cfg->n_routes; i++) {
        if (p->dedupe == NULL || (cfg->routes[i].dedupe_ms > 0 && p->dedupe[i] == NULL)) {
            snprintf(err, errlen, "out of memory for the idempotency windows");
            worker_pool_free(p);
            return NULL;
        }
    }
    for (int i = 0; i < cfg->http.workers; i++) {
        p->n++;
        if (worker_init(&p->w[i], p, (unsigned)i, schemas, err, errlen) != 0) {
            worker_pool_free(p);
            return NULL;
        }
    }
    return p;
}

int worker_pool_start(struct worker_pool *p, char *err, size_t errlen)
{
    for (size_t i = 0; i < p->n; i++) {
        int rc = pthread_create(&p->w[i].thread, NULL, worker_main, &p->w[i]);
        if (rc != 0)
            return errf(err, errlen, "cannot start worker %zu: %s", i, strerror(rc));
        p->w[i].started = true;
    }
    return 0;
}

/* Tell every started worker C (see cmd_fd). */
static void pool_tell(struct worker_pool *p, char c)
{
    for (size_t i = 0; i < p->n; i++) {
        if (!p->w[i].started)
            continue;
        while (write(p->w[i].cmd_fd[1], &c, 1) < 0 && errno == EINTR) {
        }
    }
}

bool worker_pool_ready(struct worker_pool *p, char *err, size_t errlen)
{
    for (size_t i = 0; i < p->n; i++) {
        struct worker *w = &p->w[i];
        int s = atomic_load_explicit(&w->broker_state, memory_order_acquire);
        if (s != BROKER_UP) {
            pthread_mutex_lock(&w->reason_lock);
            snprintf(err, errlen, "worker %u: broker %s: %s", w->id,
                     broker_state_name((enum broker_state)s), w->reason);
            pthread_mutex_unlock(&w->reason_lock);
            return false;
        }
    }
    return true;
}

void worker_pool_resume(struct worker_pool *p)
{
    pool_tell(p, 'r');
}

void worker_pool_stopping(struct worker_pool *p)
{
    /* Not pool_tell: another thread may be joining these workers, and
     * clears their started flags. A byte to a worker that never ran stays
     * in its pipe. */
    char c = 's';
    for (size_t i = 0; i < p->n; i++)
        while (p->w[i].cmd_fd[1] >= 0 && write(p->w[i].cmd_fd[1], &c, 1) < 0 && errno == EINTR) {
        }
}

void worker_pool_stop(struct worker_pool *p, bool stopping)
{
    pool_tell(p, stopping ? 's' : 'h');
    for (size_t i = 0; i < p->n; i++) {
        if (p->w[i].started)
            pthread_join(p->w[i].thread, NULL);
        p->w[i].started = false;
    }
}

bool worker_pool_failed(struct worker_pool *p, char *err, size_t errlen)
{
    pthread_mutex_lock(&p->fail_lock);
    bool failed = p->failed;
    if (failed)
        snprintf(err, errlen, "%s", p->failure);
    pthread_mutex_unlock(&p->fail_lock);
    return failed;
}

void worker_pool_free(struct worker_pool *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->n; i++)
        worker_destroy(&p->w[i]);
    http_shared_free(p->shared);
    for (size_t i = 0; p->dedupe != NULL && i < p->cfg->n_routes; i++)
        dedupe_free(p->dedupe[i]);
    free(p->dedupe);
    free(p->w);
    metrics_free(p->metrics);
    pthread_mutex_destroy(&p->fail_lock);
    free(p);
}
