/* reconnect.c - the connection's life on the worker's loop: start a connect
 * attempt in the connector thread (connect.c) on the next node, take its
 * result from the pipe, lose the connection (every waiting request answered
 * at once), and try again after a capped exponential backoff with jitter.
 * A queue the broker refuses before the worker ever served stops it. */
#include "amqp/broker_int.h"
#include "amqp/broker_test.h"

#include <amqp.h>
#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "amqp/broker_config.h"
#include "bridge/base/log.h"
#include "amqp/tracker.h"

static uint64_t jitter(struct broker *b, uint64_t max)
{
    /* xorshift64: good enough to spread reconnects of many workers. */
    b->rng ^= b->rng << 13;
    b->rng ^= b->rng >> 7;
    b->rng ^= b->rng << 17;
    return max == 0 ? 0 : b->rng % max;
}

static void schedule_retry(struct broker *b)
{
    /* Equal jitter: between half and all of the current ceiling. */
    uint64_t half = b->backoff_ms / 2;
    uint64_t delay = half + jitter(b, b->backoff_ms - half + 1);
    struct timeval tv = {(time_t)(delay / 1000), (suseconds_t)((delay % 1000) * 1000)};
    event_add(b->retry_ev, &tv);
    b->backoff_ms =
        b->backoff_ms * 2 > BROKER_BACKOFF_MAX_MS ? BROKER_BACKOFF_MAX_MS : b->backoff_ms * 2;
    log_debug("broker: next connect attempt in %llu ms", (unsigned long long)delay);
}

void broker_start_connect(struct broker *b)
{
    if (b->state == BROKER_CLOSED || b->state == BROKER_FAILED || b->thread_running)
        return;
    const struct broker_uri *u = &b->cfg->uris[b->uri_next % b->cfg->n_uris];
    b->uri_next = (b->uri_next + 1) % b->cfg->n_uris;
    memset(&b->job, 0, sizeof b->job);
    b->job.cfg = b->cfg;
    b->job.uri = u;
    b->job.worker = b->worker;
    b->job.channel = 1;
    b->job.notify_fd = b->pipe_fd[1];
    snprintf(b->node, sizeof b->node, "%s", u->display);
    /* /healthz and /metrics answer anyone who asks: no user name, no vhost
     * (and never a password) there, only where the node is. */
    bool v6 = strchr(u->host, ':') != NULL;
    snprintf(b->hostport, sizeof b->hostport, "%s%s%s:%d", v6 ? "[" : "", u->host, v6 ? "]" : "",
             u->port);
    int rc = pthread_create(&b->thread, NULL, broker_connect_main, &b->job);
    if (rc != 0) {
        log_error("broker: cannot start connector thread: %s", strerror(rc));
        schedule_retry(b);
        return;
    }
    b->thread_running = true;
    if (b->state != BROKER_DOWN)
        broker_set_state(b, BROKER_CONNECTING, "connecting");
    else
        b->state = BROKER_CONNECTING; /* keep the last failure as the reason */
}

void broker_on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    broker_start_connect(arg);
}

/* Connection gone: fail every waiting request at once, schedule a reconnect. */
void broker_lost(struct broker *b, const char *why)
{
    if (b->conn == NULL)
        return;
    log_warn("broker: connection to %s lost: %s (%zu requests waiting answered 503)", b->node, why,
             tracker_attached(b->tracker) + pending_count(b->pending));
    event_del(b->sock_ev);
    event_del(b->hb_ev);
    broker_uncork(b); /* before its socket goes */
    amqp_destroy_connection(b->conn);
    b->conn = NULL;
    b->reopen = REOPEN_NONE;
    char reason[BROKER_REASON_LEN];
    snprintf(reason, sizeof reason, "connection lost: %s", why);
    broker_set_state(b, BROKER_DOWN, reason);
    broker_fail_channel(b);
    b->backoff_ms = BROKER_BACKOFF_MIN_MS;
    schedule_retry(b);
}

/* A new connection's channel CH has just opened (confirm mode from tag 1):
 * nothing of an earlier one carries over. */
static void begin_channel(struct broker *b, amqp_channel_t ch)
{
    b->channel = ch;
    b->content = CONTENT_NONE;
    b->channel_acked = false;
    tracker_reset(b->tracker);
}

void broker_on_connected(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct broker *b = arg;
    char c;
    while (read(fd, &c, 1) < 0 && errno == EINTR) {
    }
    if (!b->thread_running)
        return;
    pthread_join(b->thread, NULL);
    b->thread_running = false;
    if (b->state == BROKER_CLOSED) {
        if (b->job.conn != NULL)
            amqp_destroy_connection(b->job.conn);
        return;
    }
    if (b->job.conn == NULL && b->job.refused && !b->ever_up) {
        /* The config and the broker disagree on a queue before this worker
         * ever served: a config error found late. Retrying cannot help;
         * the worker pool stops the bridge (exit 1). */
        log_error("broker: %s: %s", b->node, b->job.err);
        broker_set_state(b, BROKER_FAILED, b->job.err);
        return;
    }
    if (b->job.conn == NULL) {
        /* The same refusal on a reconnect (someone redeclared the queue
         * while the bridge ran) must not end a serving bridge: it answers
         * 503, /healthz names the reason, and it retries in case the queue
         * is put right. */
        if (b->job.refused)
            log_error("broker: %s: %s", b->node, b->job.err);
        else
            log_warn("broker: %s: %s", b->node, b->job.err);
        broker_set_state(b, BROKER_DOWN, b->job.err);
        schedule_retry(b);
        return;
    }
    b->conn = b->job.conn;
    b->tls = b->job.uri->tls;
    b->sndbuf = 0;
    b->job.conn = NULL;
    begin_channel(b, b->job.channel);
    event_assign(b->sock_ev, b->base, amqp_get_sockfd(b->conn), EV_READ | EV_PERSIST,
                 broker_on_socket, b);
    event_add(b->sock_ev, NULL);
    if (b->cfg->heartbeat_ms > 0) {
        uint64_t half = b->cfg->heartbeat_ms / 2;
        struct timeval tv = {(time_t)(half / 1000), (suseconds_t)((half % 1000) * 1000)};
        event_add(b->hb_ev, &tv);
    }
    b->backoff_ms = BROKER_BACKOFF_MIN_MS;
    b->ever_up = true;
    log_info("broker: connected to %s", b->node);
    broker_set_state(b, BROKER_UP, NULL);
    /* Frames may already sit in the library's buffer from the handshake. */
    broker_pump(b);
}

void broker_test_up(struct broker *b, uint16_t channel)
{
    begin_channel(b, channel);
    b->state = BROKER_UP;
}
