/* broker.h - this worker's one connection + channel to RabbitMQ, driven from
 * the worker's event loop without ever blocking it: connect in a helper
 * thread, then a frame pump on the socket, a heartbeat timer, confirm
 * tracking, connection.blocked, reconnect with capped backoff and jitter. */
#ifndef BRIDGE_BROKER_H
#define BRIDGE_BROKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "amqp/tracker.h"

struct event_base;
struct broker_config;
struct bridge_msg;

enum broker_state {
    BROKER_DOWN,       /* not connected, a reconnect is scheduled */
    BROKER_CONNECTING, /* a connect attempt is under way */
    BROKER_UP,         /* connected, channel open, confirm mode */
    BROKER_BLOCKED,    /* connected but the broker sent connection.blocked */
    BROKER_CLOSED,     /* broker_close() was called; no reconnect */
    BROKER_FAILED,     /* before ever serving, the broker refused a route's queue as
                          configured (406): no reconnect, the bridge must stop */
};

const char *broker_state_name(enum broker_state s);

/* Where rpc requests ask for their reply: RabbitMQ's direct reply-to, which
 * this broker connection consumes when some route is rpc. */
#define BROKER_REPLY_TO "amq.rabbitmq.reply-to"

enum broker_pub {
    BROKER_PUB_WAIT,        /* published; done() (and for rpc reply()) will follow for CTX */
    BROKER_PUB_SENT,        /* published, confirm = no: nothing more will come */
    BROKER_PUB_UNAVAILABLE, /* not connected or blocked: answer 503 now */
    BROKER_PUB_FULL,        /* too many in flight: answer 503 now */
    BROKER_PUB_BUSY,        /* the broker is not reading fast enough (its socket is three
                               quarters full): nothing was sent; try again later */
};

/* Why an rpc reply cannot be used. */
enum broker_reply_bad {
    BROKER_REPLY_OK,         /* it can */
    BROKER_REPLY_BAD_STATUS, /* x-http-status not a final status (200..599) */
    BROKER_REPLY_BAD_CTYPE,  /* content_type holds control bytes (CR, LF, NUL...) */
    BROKER_REPLY_TOO_LARGE,  /* body over 64 MiB */
    BROKER_REPLY_NO_MEMORY,  /* no memory to reassemble the body */
    BROKER_REPLY_KINDS,      /* how many: the bad ones are 1..BROKER_REPLY_KINDS - 1 */
};

/* An rpc reply, valid during the reply callback only. */
struct broker_reply {
    int status;                /* x-http-status, 200 when absent */
    const char *content_type;  /* the reply's content_type; NULL if none or empty */
    const char *traceparent;   /* its traceparent header, unchecked; NULL if none */
    const void *body;          /* the reply body */
    size_t len;                /* its length */
    enum broker_reply_bad bad; /* not OK: the reply cannot be used */
    const char *error;         /* with BAD: answer 502 with this text */
};

/* A request's publish completed. Called from the worker's loop, once per
 * still-attached publish. */
typedef void broker_done_fn(void *arg, void *ctx, enum tracker_result r);
/* The connection changed state; REASON says why when not up. Called from the
 * worker's loop. */
typedef void broker_state_fn(void *arg, enum broker_state s, const char *reason);
/* The reply of an rpc request arrived. CTX is forgotten by the broker before
 * the call, and so is its publish confirm if still owed. A publish that
 * fails (nack, return, loss) calls done() instead, and then the caller must
 * broker_rpc_forget the request. */
typedef void broker_reply_fn(void *arg, void *ctx, const struct broker_reply *rep);

struct broker;

/* WORKER: index, used for the starting URI and log lines. */
struct broker *broker_new(struct event_base *base, const struct broker_config *cfg, unsigned worker,
                          broker_done_fn *done, broker_state_fn *state_changed,
                          broker_reply_fn *reply, void *arg) __attribute__((warn_unused_result));
/* Start connecting (asynchronously). */
void broker_start(struct broker *b);

enum broker_state broker_state(const struct broker *b);
/* Why the broker is not up ("connection refused", "blocked: low on memory"). */
const char *broker_reason(const struct broker *b);
/* host:port of the current or last connection's node, "" if none: for
 * /healthz and /metrics, which must name no user, password or vhost. */
const char *broker_node(const struct broker *b);

/* Publish M for request CTX. *TAG: what names the request to the broker
 * afterwards, 0 when nothing waits. For a publish, its delivery tag
 * (broker_detach); for an rpc request (M->reply_to set), its rpc handle
 * (broker_rpc_forget), from which the broker makes the message's
 * correlation id, new for every publish. Both stay below 2^62. */
enum broker_pub broker_publish(struct broker *b, const struct bridge_msg *m, void *ctx,
                               uint64_t *tag) __attribute__((warn_unused_result));
/* Would a publish of a BODY_LEN-byte body find room in the socket toward the
 * broker now (broker_publish's own check, without its headers)? A cheap
 * look before mapping a waiting request for broker_publish; false when not
 * up. */
bool broker_has_room(struct broker *b, size_t body_len);
/* The publish request behind delivery tag TAG left or timed out: drop its
 * confirm when it comes (counted as late), or forget the entry when the
 * tracker needs its room. Not for rpc requests: broker_rpc_forget. */
void broker_detach(struct broker *b, uint64_t tag);
/* The rpc request of HANDLE (broker_publish's *tag) was answered otherwise
 * (timeout, client gone, failed publish): its reply, and its confirm if
 * still owed, are dropped on arrival. 0 or an unknown handle: nothing. */
void broker_rpc_forget(struct broker *b, uint64_t handle);
/* Replies dropped because no request waited for them. */
uint64_t broker_late_replies(const struct broker *b);
/* Confirms dropped because their request was answered already (an entry
 * the tracker forgot to make room counts when it is forgotten). */
uint64_t broker_late_confirms(const struct broker *b);

/* From the text of a 406 PRECONDITION_FAILED on queue.declare, the type the
 * existing queue has ("classic" for one declared without x-queue-type) into
 * OUT. 0, or -1 when the text is not about x-queue-type. */
int broker_existing_queue_type(const char *text, size_t len, char *out, size_t outlen)
    __attribute__((warn_unused_result));

/* Close channel and connection cleanly (bounded), fail what is still
 * pending as TRACKER_LOST, never reconnect. */
void broker_close(struct broker *b);
/* Also joins a connect attempt still under way. */
void broker_free(struct broker *b);

#endif
