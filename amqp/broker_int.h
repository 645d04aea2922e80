/* broker_int.h - what the files of one broker connection share, and no one
 * else: struct broker itself and the functions one of them calls in another.
 * Included only by the broker's own files in amqp/; the bridge sees broker.h.
 *
 * Who does what (each file one job):
 *   broker.c    the object's life: new, start, state, getters, close, free
 *   connect.c   the connector thread: TCP or TLS socket, login, channel,
 *               queue declarations, everything that blocks (bounded)
 *   reconnect.c the connection's life on the loop: start an attempt, take its
 *               result, lose it, back off with jitter and try again
 *   channel.c   the channel on a live connection: fail what waits on it,
 *               reopen it step by step, renew a nacked one
 *   pump.c      frames in: drain, dispatch methods, content state machine,
 *               heartbeats
 *   reply.c     an rpc reply reassembled from its header and body frames
 *   output.c    frames out without blocking: the socket's room, a large body
 *               written in pieces, its stall deadline
 *   publish.c   broker_publish: properties, the room check, what a publish is
 *               remembered by (delivery tag, correlation id), forgetting it */
#ifndef BRIDGE_BROKER_INT_H
#define BRIDGE_BROKER_INT_H

#include <amqp.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "amqp/broker.h"
#include "amqp/pending.h"

struct broker_config;
struct broker_uri;
struct tracker;

#define BROKER_BACKOFF_MIN_MS 100  /* first retry after a loss */
#define BROKER_BACKOFF_MAX_MS 5000 /* cap of the exponential backoff */
#define BROKER_MAX_HEADERS 160     /* bridge headers + hdrmap's 128 copied ones */
#define BROKER_REASON_LEN 512      /* room for a route, a queue and the broker's 406 text */
/* Bytes of frame and properties a publish adds to its body and headers. */
#define BROKER_FRAME_OVERHEAD 512
#define BROKER_CTYPE_MAX 255 /* content_type is an AMQP short string */
/* A correlation id: "<16 hex digits>-<worker>-<sequence in hex>" (see
 * broker_publish); the longest fits PENDING_ID_MAX. */
#define BROKER_CID_PREFIX_MAX 32
#define BROKER_CID_MAX (BROKER_CID_PREFIX_MAX + 16)
_Static_assert(BROKER_CID_MAX <= PENDING_ID_MAX, "a correlation id fits the rpc table");

/* Where a publish stands toward the socket's room (broker_publish_fits). */
enum fit {
    FIT_WHOLE,  /* the whole publish fits in the room now */
    FIT_PIECES, /* it never will: start it, the body in pieces as room comes */
    FIT_WAIT,   /* not now: wait (BROKER_PUB_BUSY) */
};

/* Everything the connector thread needs and produces; the loop does not touch
 * it while the thread runs. */
struct connect_job {
    const struct broker_config *cfg; /* routes to declare, heartbeat, confirm */
    const struct broker_uri *uri;    /* node to try */
    unsigned worker;                 /* for the connection name */
    amqp_channel_t channel;          /* channel to open */
    amqp_connection_state_t conn;    /* result: open connection, or NULL */
    char err[BROKER_REASON_LEN];     /* result: why it failed */
    bool refused;                    /* result: the broker refused a queue as the config
                                     declares it (406 PRECONDITION_FAILED) */
    int notify_fd;                   /* write end of the broker's pipe */
};

/* What the frames that follow a basic.return / basic.deliver belong to. */
enum content_kind {
    CONTENT_NONE,   /* no content expected */
    CONTENT_RETURN, /* a returned publish of ours: match it by message_id */
    CONTENT_REPLY,  /* an rpc reply for a request that waits: reassemble it */
    CONTENT_SKIP,   /* anything else (a late reply, a stale channel): skip */
};

/* Where a channel reopen after a channel error stands: each step is a method
 * sent without waiting, its -ok read by the frame pump, so the loop never
 * blocks on it. */
enum reopen_step {
    REOPEN_NONE,    /* the channel is open (or the connection is down) */
    REOPEN_OPEN,    /* channel.open sent */
    REOPEN_CONFIRM, /* confirm.select sent */
    REOPEN_CONSUME, /* basic.consume of direct reply-to sent */
};

/* The rpc reply being reassembled from its header and body frames, which may
 * arrive over several pumps; copied, since frame memory is released. */
struct reply_state {
    char id[PENDING_ID_MAX + 1];      /* correlation_id */
    size_t id_len;                    /* its length */
    char ctype[BROKER_CTYPE_MAX + 1]; /* content_type, "" if none */
    bool has_ctype;                   /* the reply had a content_type */
    char traceparent[64];             /* its traceparent header as sent, "" if none (the
                                         worker checks it) */
    int status;                       /* HTTP status to answer with */
    enum broker_reply_bad bad;        /* why the reply cannot be used */
    const char *error;                /* its text, or NULL */
    char errbuf[128];                 /* room for an error text naming a value */
    char *buf;                        /* body so far */
    size_t len;                       /* bytes in buf */
    size_t cap;                       /* bytes allocated */
};

struct broker {
    struct event_base *base;         /* the worker's loop */
    const struct broker_config *cfg; /* immutable, owned by main */
    unsigned worker;                 /* worker index */
    broker_done_fn *done;            /* request completion */
    broker_state_fn *state_changed;  /* connection state change */
    broker_reply_fn *reply;          /* rpc reply for a waiting request */
    void *arg;                       /* for the callbacks */

    enum broker_state state;          /* see broker.h */
    char reason[BROKER_REASON_LEN];   /* why not up */
    char node[BROKER_REASON_LEN];     /* display URI of the current/last node, for the log */
    char hostport[BROKER_REASON_LEN]; /* its host:port, for /healthz and /metrics */
    size_t uri_next;                  /* index of the URI to try next */
    bool ever_up;                     /* connected at least once since start */
    uint64_t backoff_ms;              /* current reconnect delay ceiling */
    uint64_t rng;                     /* xorshift state for jitter */

    amqp_connection_state_t conn; /* NULL while not connected */
    amqp_channel_t channel;       /* our one channel; bumped on reopen */
    struct tracker *tracker;      /* confirms awaited on the channel */
    struct event *sock_ev;        /* readable broker socket (persist) */
    struct event *hb_ev;          /* heartbeat tick, heartbeat/2 */
    struct event *retry_ev;       /* reconnect timer */

    int pipe_fd[2];         /* connector thread -> loop */
    struct event *pipe_ev;  /* read end of pipe_fd */
    pthread_t thread;       /* connector thread, when running */
    bool thread_running;    /* thread started and not joined */
    struct connect_job job; /* the connector thread's in/out */

    enum content_kind content; /* frames expected after return/deliver */
    uint64_t content_left;     /* body bytes still to come */
    bool content_header;       /* waiting for the header frame */
    struct reply_state rep;    /* content == CONTENT_REPLY */

    bool rpc;                /* some route is rpc: consume direct reply-to */
    bool quorum;             /* some route declares a quorum queue */
    bool channel_acked;      /* a basic.ack arrived on the current channel */
    uint64_t renewed_ms;     /* when a nacked channel was last renewed (monotonic) */
    enum reopen_step reopen; /* channel reopen under way */
    struct pending *pending; /* rpc requests waiting for their reply, by correlation id;
                                each entry keeps its publish's delivery tag */
    char cid_prefix[BROKER_CID_PREFIX_MAX]; /* random per broker: "<16 hex>-<worker>-" */
    uint64_t rpc_seq;                       /* the last rpc handle given out (1, 2, ...) */
    _Atomic uint64_t late_replies;          /* replies that found no waiting request; /metrics
                                      reads it from another worker's thread */
    _Atomic uint64_t late_confirms;         /* confirms of requests answered already; read
                                       likewise */

    amqp_table_entry_t hdr[BROKER_MAX_HEADERS]; /* reused per publish */
    size_t peak_inflight;                       /* most publishes awaiting a confirm at once */
    bool socket_full; /* publishes refused for a full socket; logged once */
    bool tls;         /* the current connection is amqps:// */
    int sndbuf;       /* SO_SNDBUF as last read, 0 = not yet on this connection */
    /* The publishes of one turn of the event loop leave in one train of
     * full segments (TCP_CORK from the first to the turn's end), not one
     * small segment each: the broker reads them in a few reads instead of
     * one per message (output.c, broker_cork). */
    bool corked;            /* TCP_CORK is on */
    struct event *flush_ev; /* active while corked: uncork at the end of the turn */
    bool closing;           /* broker_close is taking the frames queued during the channel close */

    /* A publish whose body is larger than the socket's room, written as
     * room comes (broker_write_rest): its method and header frames went
     * out, the rest of its body waits here. Nothing else goes out on the
     * channel until it is whole (the frames of one message must not
     * interleave). */
    char *out_body;       /* copy of the body (the request may be answered
                              and freed meanwhile), NULL when none */
    size_t out_len;       /* its length */
    size_t out_off;       /* bytes of it written */
    struct event *out_ev; /* timer: write more of it */
    uint64_t out_until;   /* broker_mono_ms() by which it must be whole, or the
                             connection is dropped ([http] timeout) */
};

/* broker.c */
/* CLOCK_MONOTONIC in milliseconds. */
uint64_t broker_mono_ms(void);
/* Enter state S with REASON (NULL: none) and tell the worker. */
void broker_set_state(struct broker *b, enum broker_state s, const char *reason);

/* connect.c */
/* The connector thread's body: ARG is the broker's struct connect_job. */
void *broker_connect_main(void *arg);
/* Text of a failed synchronous rabbitmq-c call WHAT, into BUF. */
void broker_rpc_error(amqp_rpc_reply_t r, const char *what, char *buf, size_t len);
/* Some route of CFG is rpc: the connection consumes direct reply-to. */
bool broker_has_rpc_route(const struct broker_config *cfg);

/* reconnect.c */
/* Start a connect attempt on the next node, unless one runs or the broker
 * is closed or failed. */
void broker_start_connect(struct broker *b);
/* retry_ev's callback: the backoff is over, try again. */
void broker_on_retry(evutil_socket_t fd, short what, void *arg);
/* pipe_ev's callback: the connector thread finished; take its result. */
void broker_on_connected(evutil_socket_t fd, short what, void *arg);
/* The connection is gone (WHY): answer everything waiting, schedule a retry. */
void broker_lost(struct broker *b, const char *why);

/* channel.c */
/* Answer all that waits on the channel now gone (503); how many. */
size_t broker_fail_channel(struct broker *b);
/* pending_drain's callback: an rpc request's channel is gone (TRACKER_LOST). */
void broker_fail_waiting_reply(void *arg, void *ctx);
/* An -ok of the reopen under way came: send the next step's method. */
void broker_reopen_step(struct broker *b);
/* The broker closed our channel (C): acknowledge it and reopen. */
void broker_channel_closed(struct broker *b, const amqp_channel_close_t *c);
/* Publishes were nacked: renew the channel if it may be a stale leader's. */
void broker_renew_channel(struct broker *b);

/* pump.c */
/* LATE confirms dropped because their request was answered already (timed
 * out, client gone, blocked), or entries forgotten for them: counted for
 * /metrics. */
void broker_count_late_confirms(struct broker *b, size_t late);
/* Drain every whole frame the library can give without blocking. */
void broker_pump(struct broker *b);
/* After a write: drain frames already in the library's buffer next turn. */
void broker_pump_soon(struct broker *b);
/* sock_ev's callback: the broker socket is readable. */
void broker_on_socket(evutil_socket_t fd, short what, void *arg);
/* hb_ev's callback: a zero-timeout read sends and checks heartbeats. */
void broker_on_heartbeat(evutil_socket_t fd, short what, void *arg);
/* During broker_close: take the answers queued while the channel closed. */
void broker_take_queued(struct broker *b);

/* reply.c */
/* The header frame F of an rpc reply: take its properties, or skip it. */
void broker_start_reply(struct broker *b, const amqp_frame_t *f);
/* The reply's whole body is here: hand it to its request, if one waits. */
void broker_finish_reply(struct broker *b);
/* The reply buffer back to at most BROKER_REPLY_KEEP bytes. */
void broker_shrink_reply(struct reply_state *rs);

/* output.c */
/* Does a publish of HEAD bytes of frames and a BODY_LEN body fit now? */
enum fit broker_publish_fits(struct broker *b, size_t head, size_t body_len);
/* Write more of the body in pieces; AMQP_STATUS_OK or rabbitmq-c's error. */
int broker_write_rest(struct broker *b);
/* Stop writing a body in pieces: free its copy, stop its timer. */
void broker_drop_out(struct broker *b);
/* out_ev's callback: write more of the body in pieces, or give up on it. */
void broker_on_out(evutil_socket_t fd, short what, void *arg);
/* Before a publish: hold the socket's small segments until the end of this
 * turn of the loop (TCP_CORK), when flush_ev uncorks it. */
void broker_cork(struct broker *b);
/* Send what the publishes left corked now (TCP_CORK off, flush_ev off):
 * before anything that waits for the broker's answer. */
void broker_uncork(struct broker *b);
/* flush_ev's callback: send what the turn's publishes left corked. */
void broker_on_flush(evutil_socket_t fd, short what, void *arg);

#endif
