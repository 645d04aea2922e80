/* metrics.h - the counters behind /metrics: one shard per worker, written
 * only by that worker's thread (no lock, no atomic read-modify-write on the
 * hot path), summed over the shards when /metrics is scraped and written in
 * the Prometheus text exposition format. */
#ifndef BRIDGE_METRICS_H
#define BRIDGE_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What a response is counted under (its "route" label): the bridge's own
 * answers, then route I of the config at METRICS_ROUTE0 + I. */
enum metrics_slot {
    METRICS_PONG,    /* route="pong": pong_path */
    METRICS_HEALTHZ, /* route="healthz" */
    METRICS_METRICS, /* route="metrics" */
    METRICS_NONE,    /* route="none": no route (404), or refused before routing */
    METRICS_ROUTE0,  /* first configured route */
};

enum metrics_confirm {
    METRICS_ACK,    /* basic.ack of a waiting publish */
    METRICS_NACK,   /* basic.nack */
    METRICS_RETURN, /* basic.return (unroutable), then its ack */
    METRICS_CONFIRM_KINDS,
};

/* Why an rpc reply could not be used (answered 502). */
enum metrics_bad_reply {
    METRICS_BAD_STATUS,       /* x-http-status not a final status (200..599) */
    METRICS_BAD_CONTENT_TYPE, /* content_type with control bytes (CR, LF, NUL...) */
    METRICS_BAD_TOO_LARGE,    /* body over the bridge's limit */
    METRICS_BAD_NO_MEMORY,    /* no memory to reassemble it */
    METRICS_BAD_KINDS,
};

/* The phases of a request on the bridge (bridge_request_phase_seconds). */
enum metrics_phase {
    METRICS_PHASE_CHECK,   /* read whole -> published or answered (shed, XML check, mapping) */
    METRICS_PHASE_ROOM,    /* in the backlog, waiting for room toward the broker */
    METRICS_PHASE_CONFIRM, /* published -> confirmed (or answered without) */
    METRICS_PHASE_REPLY,   /* rpc: confirmed -> its reply (or timeout) */
    METRICS_PHASES,
};

/* Histogram buckets of bridge_request_duration_seconds, upper bounds. */
#define METRICS_BUCKETS 14

/* Every worker's counters. */
struct metrics;
/* One worker's counters. */
struct metrics_shard;

/* A configured route as the counters name it. */
struct metrics_route {
    const char *name; /* its "route" label; must outlive the metrics */
    bool rpc;         /* it has rpc timeouts to count */
};

/* Shards for WORKERS workers and the N_ROUTES routes ROUTES (copied).
 * NULL when out of memory. */
struct metrics *metrics_new(unsigned workers, const struct metrics_route *routes, size_t n_routes)
    __attribute__((warn_unused_result));
void metrics_free(struct metrics *m);
struct metrics_shard *metrics_shard(struct metrics *m, unsigned worker);

/* The route label of SLOT ("pong", ..., or the route's name), as the
 * metrics S belongs to name it. */
const char *metrics_slot_name(const struct metrics_shard *s, size_t slot);

/* ---- the hot path: only the shard's own worker thread calls these ---- */

/* A response with STATUS left for SLOT, NS nanoseconds after the request
 * was read whole. */
void metrics_answered(struct metrics_shard *s, size_t slot, int status, uint64_t ns);
/* A request spent NS nanoseconds in phase P. */
void metrics_phase(struct metrics_shard *s, enum metrics_phase p, uint64_t ns);
/* A message was handed to the broker for SLOT. */
void metrics_published(struct metrics_shard *s, size_t slot);
void metrics_confirm(struct metrics_shard *s, enum metrics_confirm kind);
/* An rpc request of SLOT got no reply in its route's timeout. */
void metrics_rpc_timeout(struct metrics_shard *s, size_t slot);
/* A request of SLOT's route answered 429 by its rate limit. */
void metrics_rate_limited(struct metrics_shard *s, size_t slot);
/* SLOT's idempotency window holds IDS ids; REPLAY: a request was answered
 * from it. */
void metrics_dedupe(struct metrics_shard *s, size_t slot, bool replay, size_t ids);
/* An rpc reply came for a waiting request but could not be used (502). */
void metrics_rpc_bad_reply(struct metrics_shard *s, enum metrics_bad_reply why);
/* The worker's connection came back after a loss. */
void metrics_reconnected(struct metrics_shard *s);
/* Gauges: requests waiting on the broker, open client connections, bytes of
 * request bodies waiting on the broker (this worker's). */
void metrics_set_inflight(struct metrics_shard *s, size_t n);
void metrics_set_connections(struct metrics_shard *s, size_t n);
void metrics_set_pending_bytes(struct metrics_shard *s, size_t n);
/* A new connection was refused: [http] max_connections were open. */
void metrics_connection_refused(struct metrics_shard *s);
/* A request was answered 503: its body would have passed
 * [http] max_pending_bytes. */
void metrics_pending_bytes_refused(struct metrics_shard *s);
/* BYTES more inflated from a compressed request body (also when refused). */
void metrics_inflated(struct metrics_shard *s, uint64_t bytes);

/* ---- scraping: any thread ------------------------------------------ */

/* What the scraper learns of each worker's broker connection at the time. */
struct metrics_worker_info {
    bool connected;         /* up (blocked counts as connected but not up: false) */
    const char *node;       /* host:port of the current or last node; "" if none */
    uint64_t late_replies;  /* rpc replies dropped: nobody waited for them */
    uint64_t late_confirms; /* confirms dropped: their request was answered already */
};

/* The config was loaded (at start: RELOAD false) or a SIGHUP reload took
 * effect (OK) or was refused, at UNIX_S: bridge_config_* in the
 * exposition, which are the process's and outlive each pool's counters.
 * Any thread. */
void metrics_config_loaded(bool ok, int64_t unix_s, bool reload);

/* The local spool the exposition reads bridge_spool_* from (NULL: none,
 * all zero). Before the workers start, after they stopped. */
struct spool;
void metrics_spool(struct spool *s);

/* The exposition (text format 0.0.4) of every shard, summed, with INFO[i]
 * for worker i, into *OUT (malloc'd, *LEN bytes, NUL-terminated). 0, or -1
 * when out of memory. */
int metrics_render(const struct metrics *m, const struct metrics_worker_info *info, char **out,
                   size_t *len) __attribute__((warn_unused_result));

/* The Content-Type of what metrics_render writes. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#endif
