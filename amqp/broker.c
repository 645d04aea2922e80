/* broker.c - one worker's connection and channel to RabbitMQ: the object's
 * life (new, start, its state and what /healthz reads of it, close, free).
 * The jobs the connection is made of live beside it, one a file; broker_int.h
 * says which.
 *
 * The blocking parts of rabbitmq-c (TCP connect, login, channel open, confirm
 * select, queue declare) run in a short-lived connector thread, so a slow or
 * unreachable broker never stalls the worker's event loop; the finished
 * connection is handed back through a pipe. From then on the socket belongs
 * to the loop: every readable event, every heartbeat tick and every publish
 * drains whole frames until AMQP_STATUS_TIMEOUT (PITFALLS: one frame per
 * event leaves acks parked in the library's buffer). */
#include "amqp/broker.h"
#include "amqp/broker_int.h"

#include <amqp.h>
#include <event2/event.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "amqp/broker_config.h"
#include "bridge/base/log.h"
#include "amqp/pending.h"
#include "bridge/base/seed.h"
#include "amqp/tracker.h"

const char *broker_state_name(enum broker_state s)
{
    switch (s) {
    case BROKER_DOWN:
        return "down";
    case BROKER_CONNECTING:
        return "connecting";
    case BROKER_UP:
        return "up";
    case BROKER_BLOCKED:
        return "blocked";
    case BROKER_CLOSED:
        return "closed";
    case BROKER_FAILED:
        return "failed";
    }
    return "?";
}

void broker_set_state(struct broker *b, enum broker_state s, const char *reason)
{
    b->state = s;
    if (reason != NULL)
        snprintf(b->reason, sizeof b->reason, "%s", reason);
    else
        b->reason[0] = '\0';
    if (b->state_changed != NULL)
        b->state_changed(b->arg, s, b->reason);
}

static bool has_quorum_route(const struct broker_config *cfg)
{
    for (size_t i = 0; i < cfg->n_routes; i++)
        if (cfg->routes[i].queue[0] != '\0' && cfg->routes[i].queue_type == QUEUE_QUORUM)
            return true;
    return false;
}

uint64_t broker_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void on_tracker_done(void *arg, void *ctx, enum tracker_result r)
{
    struct broker *b = arg;
    b->done(b->arg, ctx, r);
}

struct broker *broker_new(struct event_base *base, const struct broker_config *cfg, unsigned worker,
                          broker_done_fn *done, broker_state_fn *state_changed,
                          broker_reply_fn *reply, void *arg)
{
    struct broker *b = calloc(1, sizeof *b);
    if (b == NULL)
        return NULL;
    b->base = base;
    b->cfg = cfg;
    b->worker = worker;
    b->done = done;
    b->state_changed = state_changed;
    b->reply = reply;
    b->arg = arg;
    b->rpc = broker_has_rpc_route(cfg);
    b->quorum = has_quorum_route(cfg);
    b->state = BROKER_DOWN;
    snprintf(b->reason, sizeof b->reason, "not connected yet");
    /* The URIs are the nodes of one cluster: worker i starts on node i mod
     * n, so that the workers spread over the nodes, and moves on to the next
     * node after a loss or a failed attempt. */
    b->uri_next = worker % cfg->n_uris;
    b->backoff_ms = BROKER_BACKOFF_MIN_MS;
    b->pipe_fd[0] = b->pipe_fd[1] = -1;
    seed_fill(&b->rng, sizeof b->rng, b);
    uint64_t prefix;
    seed_fill(&prefix, sizeof prefix, &b->cid_prefix);
    snprintf(b->cid_prefix, sizeof b->cid_prefix, "%016llx-%u-", (unsigned long long)prefix,
             worker);
    if (b->rng == 0)
        b->rng = 0x9e3779b97f4a7c15ULL; /* xorshift's one fixed point */
    /* At most max_inflight entries are attached (the worker's bound on
     * requests waiting); the room beyond holds detached ones (client gone,
     * timed out, blocked) until it is needed. A confirm that never comes
     * does not hold the window (tracker.c: laggards). */
    b->tracker = tracker_new(cfg->max_inflight * 2, on_tracker_done, b);
    b->pending = pending_new(cfg->max_inflight + 1);
    if (b->tracker == NULL || b->pending == NULL || pipe2(b->pipe_fd, O_CLOEXEC) != 0)
        goto fail;
    b->sock_ev = event_new(base, -1, 0, broker_on_socket, b);
    b->hb_ev = event_new(base, -1, EV_PERSIST, broker_on_heartbeat, b);
    b->retry_ev = event_new(base, -1, 0, broker_on_retry, b);
    b->out_ev = event_new(base, -1, 0, broker_on_out, b);
    b->flush_ev = event_new(base, -1, 0, broker_on_flush, b);
    b->pipe_ev = event_new(base, b->pipe_fd[0], EV_READ | EV_PERSIST, broker_on_connected, b);
    if (b->sock_ev == NULL || b->hb_ev == NULL || b->retry_ev == NULL || b->out_ev == NULL ||
        b->flush_ev == NULL || b->pipe_ev == NULL || event_add(b->pipe_ev, NULL) != 0)
        goto fail;
    return b;
fail:
    broker_free(b);
    return NULL;
}

void broker_start(struct broker *b)
{
    broker_start_connect(b);
}

enum broker_state broker_state(const struct broker *b)
{
    return b->state;
}

const char *broker_reason(const struct broker *b)
{
    return b->reason;
}

const char *broker_node(const struct broker *b)
{
    return b->hostport;
}

uint64_t broker_late_replies(const struct broker *b)
{
    return atomic_load_explicit(&b->late_replies, memory_order_relaxed);
}

uint64_t broker_late_confirms(const struct broker *b)
{
    return atomic_load_explicit(&b->late_confirms, memory_order_relaxed);
}

void broker_close(struct broker *b)
{
    if (b->state == BROKER_CLOSED)
        return;
    /* The close below waits for its -ok: nothing may sit corked (up to
     * 200 ms a frame in the kernel) while it does. */
    broker_uncork(b);
    /* Confirms that already arrived answer their requests 202, not 503. */
    if (b->conn != NULL)
        broker_pump(b);
    event_del(b->retry_ev); /* pump may have lost the connection */
    if (b->conn != NULL && b->out_body != NULL) {
        /* A body half written (the broker stopped reading until the drain's
         * deadline): a channel.close between its frames would be a protocol
         * error, and waiting for room is what the deadline ended. The
         * broker drops the half; its request, if it still waits, gets 503
         * from broker_fail_channel below. */
        log_warn("broker: closing the connection to %s with a %zu-byte body %zu bytes short",
                 b->node, b->out_len, b->out_len - b->out_off);
        event_del(b->sock_ev);
        event_del(b->hb_ev);
        amqp_destroy_connection(b->conn);
        b->conn = NULL;
    }
    if (b->conn != NULL) {
        event_del(b->sock_ev);
        event_del(b->hb_ev);
        /* Bounded by the rpc timeout set at connect. */
        amqp_rpc_reply_t r = amqp_channel_close(b->conn, b->channel, AMQP_REPLY_SUCCESS);
        if (r.reply_type == AMQP_RESPONSE_NORMAL) {
            broker_take_queued(b);
            r = amqp_connection_close(b->conn, AMQP_REPLY_SUCCESS);
        }
        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            char err[BROKER_REASON_LEN];
            broker_rpc_error(r, "close", err, sizeof err);
            log_warn("broker: %s", err);
        } else {
            log_info("broker: connection to %s closed", b->node);
        }
        amqp_destroy_connection(b->conn);
        b->conn = NULL;
    }
    (void)broker_fail_channel(b);
    log_info("broker: at most %zu publishes awaited a confirm at once; %llu late rpc replies "
             "dropped",
             b->peak_inflight, (unsigned long long)b->late_replies);
    broker_set_state(b, BROKER_CLOSED, "shutting down");
}

void broker_free(struct broker *b)
{
    if (b == NULL)
        return;
    b->state = BROKER_CLOSED;
    if (b->thread_running) {
        pthread_join(b->thread, NULL); /* bounded by the connect timeouts */
        b->thread_running = false;
        if (b->job.conn != NULL)
            amqp_destroy_connection(b->job.conn);
    }
    if (b->conn != NULL)
        amqp_destroy_connection(b->conn);
    if (b->tracker != NULL) {
        tracker_fail_all(b->tracker);
        tracker_free(b->tracker);
    }
    if (b->pending != NULL) {
        (void)pending_drain(b->pending, broker_fail_waiting_reply, b);
        pending_free(b->pending);
    }
    free(b->rep.buf);
    if (b->sock_ev != NULL)
        event_free(b->sock_ev);
    if (b->hb_ev != NULL)
        event_free(b->hb_ev);
    if (b->retry_ev != NULL)
        event_free(b->retry_ev);
    if (b->out_ev != NULL)
        event_free(b->out_ev);
    if (b->flush_ev != NULL)
        event_free(b->flush_ev);
    free(b->out_body);
    if (b->pipe_ev != NULL)
        event_free(b->pipe_ev);
    if (b->pipe_fd[0] >= 0)
        close(b->pipe_fd[0]);
    if (b->pipe_fd[1] >= 0)
        close(b->pipe_fd[1]);
    free(b);
}

/* ---- for tests/unit/test_broker.c (broker_test.h) ---- */
