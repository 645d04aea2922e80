/* broker.h - this worker's one connection + channel to RabbitMQ, driven from
 * the worker's event loop without ever blocking it: connect in a helper
 * thread, then a frame pump on the socket, a heartbeat timer, confirm
 * tracking, connection.blocked, reconnect with capped backoff and jitter. */
#ifndef BRIDGE_BROKER_H
#define BRIDGE_BROKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tracker.h"

struct event_base;
struct config;
struct bridge_msg;

enum broker_state {
    BROKER_DOWN,       /* not connected, a reconnect is scheduled */
    BROKER_CONNECTING, /* a connect attempt is under way */
    BROKER_UP,         /* connected, channel open, confirm mode */
    BROKER_BLOCKED,    /* connected but the broker sent connection.blocked */
    BROKER_CLOSED,     /* broker_close() was called; no reconnect */
};

const char *broker_state_name(enum broker_state s);

enum broker_pub {
    BROKER_PUB_WAIT,        /* published; done() will be called for CTX */
    BROKER_PUB_SENT,        /* published, confirm = no: nothing more will come */
    BROKER_PUB_UNAVAILABLE, /* not connected or blocked: answer 503 now */
    BROKER_PUB_FULL,        /* too many in flight: answer 503 now */
};

/* A request's publish completed. Called from the worker's loop, once per
 * still-attached publish. */
typedef void broker_done_fn(void *arg, void *ctx, enum tracker_result r);
/* The connection changed state; REASON says why when not up. Called from the
 * worker's loop. */
typedef void broker_state_fn(void *arg, enum broker_state s, const char *reason);

struct broker;

/* WORKER: index, used for the starting URI and log lines. */
struct broker *broker_new(struct event_base *base, const struct config *cfg, unsigned worker,
                          broker_done_fn *done, broker_state_fn *state_changed, void *arg)
    __attribute__((warn_unused_result));
/* Start connecting (asynchronously). */
void broker_start(struct broker *b);

enum broker_state broker_state(const struct broker *b);
/* Why the broker is not up ("connection refused", "blocked: low on memory"). */
const char *broker_reason(const struct broker *b);
/* The URI (display form) of the current or last connection, "" if none. */
const char *broker_node(const struct broker *b);

enum broker_pub broker_publish(struct broker *b, const struct bridge_msg *m, void *ctx,
                               uint64_t *tag) __attribute__((warn_unused_result));
/* The request behind TAG left: drop its confirm when it comes. */
void broker_detach(struct broker *b, uint64_t tag);
/* Publishes waiting for a confirm (attached to a request). */
size_t broker_inflight(const struct broker *b);

/* Close channel and connection cleanly (bounded), fail what is still
 * pending as TRACKER_LOST, never reconnect. */
void broker_close(struct broker *b);
/* Also joins a connect attempt still under way. */
void broker_free(struct broker *b);

#endif
