/* worker.h - one event-loop thread: its HTTP server, its broker connection,
 * its XML checker, its shard of the counters. Workers share nothing on the
 * hot path; /healthz and /metrics read the others' broker state through
 * atomics (and a lock taken only when that state changes or is read). */
#ifndef BRIDGE_WORKER_H
#define BRIDGE_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct spool;
struct xmlcheck_schema;

struct worker_pool;

/* Create every worker: event base, server, broker (not started). SCHEMAS:
 * one per route (NULL where the route has none), shared read-only.
 * LISTEN_FDS: per worker, the listening socket it accepts from (the
 * process's; it outlives the pool). PREV: on a reload, the pool this one
 * replaces: the idempotency windows of its routes of the same name, size
 * and duration are shared. SPOOL: the process's local spool (NULL: none),
 * which the workers append to while the broker is away and replay from
 * while it is up. SUCCESSOR (a reload, or a binary taking over):
 * the workers accept nothing until worker_pool_resume, and one that cannot
 * start fails the pool (worker_pool_failed) without stopping the process.
 * NULL on failure with the reason in err. */
struct worker_pool *worker_pool_new(const struct config *cfg,
                                    const struct xmlcheck_schema *const *schemas,
                                    const int *listen_fds, const struct worker_pool *prev,
                                    struct spool *spool, bool successor, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Start the threads. 0 / -1. */
int worker_pool_start(struct worker_pool *p, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* True when every worker's broker connection is up (its queues declared);
 * else false with the first one's reason in err. Any thread. */
bool worker_pool_ready(struct worker_pool *p, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* The spool's spool_done_fn (spool_open's): on its writer thread, a
 * worker's record TICKET is durable (ERR 0) or not. */
void worker_spool_told(void *arg, uint64_t ticket, int err);
/* Start accepting (a pool made by a reload). */
void worker_pool_resume(struct worker_pool *p);
/* A pool draining for a reload, told from any thread that the process now
 * stops (pong and /healthz say 503 from now on); whoever stops it still
 * joins it. */
void worker_pool_stopping(struct worker_pool *p);
/* Graceful stop: stop accepting, answer or wait for what is in flight (up to
 * its timeout), serve each open connection until its next answer or until
 * it idles, close the broker connections, join the threads. STOPPING: the
 * process goes away (pong and /healthz say 503 meanwhile); else another
 * pool or process took over the sockets. */
void worker_pool_stop(struct worker_pool *p, bool stopping);
/* True when a worker could not start for good (its broker refused a route's
 * queue as configured), with the reason in err; that worker also sent the
 * process SIGTERM, so that main's wait ends. Main then stops the pool and
 * exits 1. */
bool worker_pool_failed(struct worker_pool *p, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void worker_pool_free(struct worker_pool *p);

#endif
