/* worker.h - one event-loop thread: its HTTP server, its broker connection,
 * its XML checker, its shard of the counters. Workers share nothing on the
 * hot path; /healthz and /metrics read the others' broker state through
 * atomics (and a lock taken only when that state changes or is read). */
#ifndef BRIDGE_WORKER_H
#define BRIDGE_WORKER_H

#include <stdbool.h>
#include <stddef.h>

struct config;
struct xmlcheck_schema;

struct worker_pool;

/* Create every worker: event base, bound listener, broker (not started).
 * SCHEMAS: one per route (NULL where the route has none), shared read-only.
 * NULL on failure with the reason in err. Runs before any thread starts. */
struct worker_pool *worker_pool_new(const struct config *cfg,
                                    const struct xmlcheck_schema *const *schemas, char *err,
                                    size_t errlen) __attribute__((warn_unused_result));
/* Start the threads. 0 / -1. */
int worker_pool_start(struct worker_pool *p, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Graceful stop: stop accepting, answer or wait for what is in flight (up to
 * its timeout), close the broker connections, join the threads. */
void worker_pool_stop(struct worker_pool *p);
/* True when a worker could not start for good (its broker refused a route's
 * queue as configured), with the reason in err; that worker also sent the
 * process SIGTERM, so that main's wait ends. Main then stops the pool and
 * exits 1. */
bool worker_pool_failed(struct worker_pool *p, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void worker_pool_free(struct worker_pool *p);

#endif
