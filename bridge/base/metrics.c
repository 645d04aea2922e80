/* metrics.c - per-worker counters and their Prometheus exposition.
 *
 * Each counter has one writer, its worker's thread, which adds with a
 * relaxed load and a relaxed store: on x86-64 a plain load, add and store,
 * no lock prefix, no cache line shared with another writer (each shard is
 * its own cache-aligned allocation). A scrape on any thread reads every
 * shard with relaxed loads: a counter may be a few increments behind, never
 * torn, and the sum of monotonic counters stays monotonic. */
#include "bridge/base/metrics.h"
#include "bridge/base/spool.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define METRICS_CODE_MIN 100 /* status codes counted: 100..599 */
#define METRICS_CODES 500
#define METRICS_ALIGN 64 /* a cache line: shards never share one */

typedef _Atomic uint64_t counter;

/* Upper bounds of the duration buckets, in nanoseconds and as the le label
 * writes them: 0.5 ms .. 10 s. */
static const uint64_t bucket_ns[METRICS_BUCKETS] = {
    500000,    1000000,   2500000,   5000000,    10000000,   25000000,   50000000,
    100000000, 250000000, 500000000, 1000000000, 2500000000, 5000000000, 10000000000,
};
static const char *const bucket_le[METRICS_BUCKETS] = {
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
    "0.1",    "0.25",  "0.5",    "1",     "2.5",  "5",     "10",
};

static const char *const builtin_names[METRICS_ROUTE0] = {"pong", "healthz", "metrics", "none"};
static const char *const confirm_names[METRICS_CONFIRM_KINDS] = {"ack", "nack", "return"};
static const char *const bad_reply_names[METRICS_BAD_KINDS] = {"status", "content_type",
                                                               "too_large", "no_memory"};

static const char *const phase_names[METRICS_PHASES] = {"check", "room", "confirm", "reply"};

/* Durations: a count per bucket (not cumulative; the last is +Inf) and their sum. */
struct hist {
    counter buckets[METRICS_BUCKETS + 1];
    counter sum_ns;
};

/* One route label's counters in one shard. */
struct slot_ctr {
    counter codes[METRICS_CODES]; /* answers by status - METRICS_CODE_MIN */
    struct hist duration;         /* read whole -> answered */
    counter published;            /* messages handed to the broker */
    counter rpc_timeouts;         /* rpc requests answered 504 */
    counter rate_limited;         /* requests answered 429 by the route's rate */
    counter dedupe_replays;       /* answered from the idempotency window */
    counter dedupe_ids;           /* gauge: ids the route's window holds (the process's) */
};

struct metrics_shard {
    const struct metrics *owner;             /* the metrics it is a shard of (route names) */
    counter confirms[METRICS_CONFIRM_KINDS]; /* by enum metrics_confirm */
    counter bad_replies[METRICS_BAD_KINDS];  /* by enum metrics_bad_reply */
    counter reconnects;                      /* connections made after a loss */
    counter inflight;                        /* gauge: requests waiting on the broker */
    counter connections;                     /* gauge: open client connections */
    counter pending_bytes;                   /* gauge: bodies waiting on the broker, bytes */
    counter conns_refused;                   /* connections over [http] max_connections */
    counter bytes_refused;                   /* requests over [http] max_pending_bytes */
    counter inflated;                        /* bytes inflated from gzip/deflate bodies */
    struct hist phases[METRICS_PHASES];      /* time spent in each phase of a request */
    struct slot_ctr slots[];                 /* metrics->n_slots */
};

struct metrics {
    struct metrics_route *routes; /* route names and modes, n_slots - METRICS_ROUTE0 */
    size_t n_routes;
    unsigned n_shards;             /* one per worker */
    size_t n_slots;                /* METRICS_ROUTE0 + n_routes */
    struct metrics_shard **shards; /* one per worker */
};

static void add(counter *c, uint64_t n)
{
    /* One writer: no read-modify-write instruction needed. */
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static uint64_t get(counter *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

struct metrics *metrics_new(unsigned workers, const struct metrics_route *routes, size_t n_routes)
{
    struct metrics *m = calloc(1, sizeof *m);
    if (m == NULL)
        return NULL;
    m->n_shards = workers;
    m->n_routes = n_routes;
    m->n_slots = METRICS_ROUTE0 + n_routes;
    m->shards = calloc(m->n_shards, sizeof *m->shards);
    m->routes = calloc(n_routes + 1, sizeof *m->routes);
    if (m->shards == NULL || m->routes == NULL) {
        metrics_free(m);
        return NULL;
    }
    if (n_routes > 0)
        memcpy(m->routes, routes, n_routes * sizeof *routes);
    size_t size = sizeof(struct metrics_shard) + m->n_slots * sizeof(struct slot_ctr);
    size = (size + METRICS_ALIGN - 1) / METRICS_ALIGN * METRICS_ALIGN;
    for (unsigned i = 0; i < m->n_shards; i++) {
        m->shards[i] = aligned_alloc(METRICS_ALIGN, size);
        if (m->shards[i] == NULL) {
            metrics_free(m);
            return NULL;
        }
        /* All-zero bytes are a zero atomic counter on every target we build for. */
        memset(m->shards[i], 0, size);
        m->shards[i]->owner = m;
    }
    return m;
}

void metrics_free(struct metrics *m)
{
    if (m == NULL)
        return;
    for (unsigned i = 0; m->shards != NULL && i < m->n_shards; i++)
        free(m->shards[i]);
    free(m->shards);
    free(m->routes);
    free(m);
}

struct metrics_shard *metrics_shard(struct metrics *m, unsigned worker)
{
    return worker < m->n_shards ? m->shards[worker] : NULL;
}

static const char *slot_name(const struct metrics *m, size_t slot)
{
    if (slot < METRICS_ROUTE0)
        return builtin_names[slot];
    if (slot - METRICS_ROUTE0 < m->n_routes)
        return m->routes[slot - METRICS_ROUTE0].name;
    return "none";
}

const char *metrics_slot_name(const struct metrics_shard *s, size_t slot)
{
    return slot_name(s->owner, slot);
}

/* ---- the hot path ---------------------------------------------------- */

static void observe(struct hist *h, uint64_t ns)
{
    size_t b = 0;
    while (b < METRICS_BUCKETS && ns > bucket_ns[b])
        b++;
    add(&h->buckets[b], 1);
    add(&h->sum_ns, ns);
}

void metrics_answered(struct metrics_shard *s, size_t slot, int status, uint64_t ns)
{
    struct slot_ctr *c = &s->slots[slot];
    /* Every status the bridge sends is a final one; anything else would
     * be a bug, and is not counted rather than counted wrongly. */
    if (status >= METRICS_CODE_MIN && status < METRICS_CODE_MIN + METRICS_CODES)
        add(&c->codes[status - METRICS_CODE_MIN], 1);
    observe(&c->duration, ns);
}

void metrics_phase(struct metrics_shard *s, enum metrics_phase p, uint64_t ns)
{
    observe(&s->phases[p], ns);
}

void metrics_published(struct metrics_shard *s, size_t slot)
{
    add(&s->slots[slot].published, 1);
}

void metrics_confirm(struct metrics_shard *s, enum metrics_confirm kind)
{
    add(&s->confirms[kind], 1);
}

void metrics_rpc_timeout(struct metrics_shard *s, size_t slot)
{
    add(&s->slots[slot].rpc_timeouts, 1);
}

void metrics_rate_limited(struct metrics_shard *s, size_t slot)
{
    add(&s->slots[slot].rate_limited, 1);
}

void metrics_dedupe(struct metrics_shard *s, size_t slot, bool replay, size_t ids)
{
    if (replay)
        add(&s->slots[slot].dedupe_replays, 1);
    atomic_store_explicit(&s->slots[slot].dedupe_ids, ids, memory_order_relaxed);
}

void metrics_rpc_bad_reply(struct metrics_shard *s, enum metrics_bad_reply why)
{
    add(&s->bad_replies[why], 1);
}

void metrics_reconnected(struct metrics_shard *s)
{
    add(&s->reconnects, 1);
}

void metrics_set_inflight(struct metrics_shard *s, size_t n)
{
    atomic_store_explicit(&s->inflight, n, memory_order_relaxed);
}

void metrics_set_connections(struct metrics_shard *s, size_t n)
{
    atomic_store_explicit(&s->connections, n, memory_order_relaxed);
}

void metrics_set_pending_bytes(struct metrics_shard *s, size_t n)
{
    atomic_store_explicit(&s->pending_bytes, n, memory_order_relaxed);
}

void metrics_connection_refused(struct metrics_shard *s)
{
    add(&s->conns_refused, 1);
}

void metrics_pending_bytes_refused(struct metrics_shard *s)
{
    add(&s->bytes_refused, 1);
}

void metrics_inflated(struct metrics_shard *s, uint64_t bytes)
{
    add(&s->inflated, bytes);
}

/* ---- scraping -------------------------------------------------------- */

/* Sum over the shards of the counter at byte offset OFF of a shard. */
static uint64_t total(const struct metrics *m, size_t off)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < m->n_shards; i++)
        n += get((counter *)(void *)((char *)m->shards[i] + off));
    return n;
}

/* Offset of counter FIELD (+ I counters) of SLOT in a shard. */
#define SLOT_OFF(slot, field, i)                                                                   \
    (offsetof(struct metrics_shard, slots) + (slot) * sizeof(struct slot_ctr) +                    \
     offsetof(struct slot_ctr, field) + (i) * sizeof(counter))
#define SHARD_OFF(field, i) (offsetof(struct metrics_shard, field) + (i) * sizeof(counter))

/* A label value: backslash, double quote and newline escaped, as the text
 * format asks. */
static void put_label(FILE *f, const char *v)
{
    for (; *v != '\0'; v++) {
        if (*v == '\\' || *v == '"')
            fprintf(f, "\\%c", *v);
        else if (*v == '\n')
            fputs("\\n", f);
        else
            fputc(*v, f);
    }
}

static void family(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A family of one sample without labels. */
static void single(FILE *f, const char *name, const char *type, const char *help, uint64_t v)
{
    family(f, name, type, help);
    fprintf(f, "%s %llu\n", name, (unsigned long long)v);
}

static void route_sample(FILE *f, const struct metrics *m, const char *name, size_t slot,
                         uint64_t v)
{
    fprintf(f, "%s{route=\"", name);
    put_label(f, slot_name(m, slot));
    fprintf(f, "\"} %llu\n", (unsigned long long)v);
}

static void render_requests(FILE *f, const struct metrics *m)
{
    family(f, "bridge_http_requests_total", "counter",
           "HTTP responses the bridge sent, by route and status code.");
    for (size_t s = 0; s < m->n_slots; s++) {
        for (size_t c = 0; c < METRICS_CODES; c++) {
            uint64_t n = total(m, SLOT_OFF(s, codes, c));
            if (n == 0)
                continue;
            fputs("bridge_http_requests_total{route=\"", f);
            put_label(f, slot_name(m, s));
            fprintf(f, "\",code=\"%zu\"} %llu\n", c + METRICS_CODE_MIN, (unsigned long long)n);
        }
    }
}

/* The samples of histogram NAME{LABEL="VALUE"} whose struct hist is at
 * offset OFF of every shard. Buckets read once each, and the count is their
 * sum: +Inf equals _count even while the workers keep counting. */
static void render_hist(FILE *f, const struct metrics *m, const char *name, const char *label,
                        const char *value, size_t off)
{
    uint64_t cum = 0;
    for (size_t b = 0; b <= METRICS_BUCKETS; b++) {
        cum += total(m, off + offsetof(struct hist, buckets) + b * sizeof(counter));
        fprintf(f, "%s_bucket{%s=\"", name, label);
        put_label(f, value);
        fprintf(f, "\",le=\"%s\"} %llu\n", b < METRICS_BUCKETS ? bucket_le[b] : "+Inf",
                (unsigned long long)cum);
    }
    uint64_t ns = total(m, off + offsetof(struct hist, sum_ns));
    fprintf(f, "%s_sum{%s=\"", name, label);
    put_label(f, value);
    fprintf(f, "\"} %llu.%09llu\n", (unsigned long long)(ns / 1000000000u),
            (unsigned long long)(ns % 1000000000u));
    fprintf(f, "%s_count{%s=\"", name, label);
    put_label(f, value);
    fprintf(f, "\"} %llu\n", (unsigned long long)cum);
}

static void render_durations(FILE *f, const struct metrics *m)
{
    const char *name = "bridge_request_duration_seconds";
    family(f, name, "histogram",
           "Time from a request read whole to its response handed to the socket, by route.");
    for (size_t s = 0; s < m->n_slots; s++)
        render_hist(f, m, name, "route", slot_name(m, s), SLOT_OFF(s, duration, 0));
    name = "bridge_request_phase_seconds";
    family(f, name, "histogram",
           "Time requests spent in each phase on the bridge: check (read whole to published "
           "or answered: load shed, XML check, headers), room (waiting for room toward the "
           "broker), confirm (published to confirmed), reply (rpc: confirmed to replied).");
    for (size_t p = 0; p < METRICS_PHASES; p++)
        render_hist(f, m, name, "phase", phase_names[p],
                    offsetof(struct metrics_shard, phases) + p * sizeof(struct hist));
}

/* Family NAME (a counter, HELP) with one sample per route (rpc routes only
 * when RPC_ONLY): the slot counter at FIELD (offsetof struct slot_ctr)
 * summed over the shards. */
static void route_counter(FILE *f, const struct metrics *m, const char *name, const char *help,
                          size_t field, bool rpc_only)
{
    family(f, name, "counter", help);
    for (size_t r = 0; r < m->n_routes; r++)
        if (!rpc_only || m->routes[r].rpc)
            route_sample(f, m, name, METRICS_ROUTE0 + r,
                         total(m, offsetof(struct metrics_shard, slots) +
                                      (METRICS_ROUTE0 + r) * sizeof(struct slot_ctr) + field));
}

static void render_broker(FILE *f, const struct metrics *m, const struct metrics_worker_info *info)
{
    route_counter(f, m, "bridge_amqp_published_total",
                  "Messages handed to the broker, by route (rpc requests included).",
                  offsetof(struct slot_ctr, published), false);

    family(f, "bridge_amqp_confirms_total", "counter",
           "Publisher confirms of publishes still awaited by a request: ack, nack, or return "
           "(unroutable).");
    for (size_t k = 0; k < METRICS_CONFIRM_KINDS; k++)
        fprintf(f, "bridge_amqp_confirms_total{result=\"%s\"} %llu\n", confirm_names[k],
                (unsigned long long)total(m, SHARD_OFF(confirms, k)));

    route_counter(f, m, "bridge_rpc_timeouts_total",
                  "rpc requests answered 504: no reply within the route's timeout.",
                  offsetof(struct slot_ctr, rpc_timeouts), true);
    route_counter(f, m, "bridge_rate_limited_total",
                  "Requests answered 429: the route's rate limit (rate, burst, rate_by) was "
                  "reached.",
                  offsetof(struct slot_ctr, rate_limited), false);
    route_counter(f, m, "bridge_dedupe_replays_total",
                  "Requests answered from the route's idempotency window (dedupe), not "
                  "published again.",
                  offsetof(struct slot_ctr, dedupe_replays), false);
    family(f, "bridge_dedupe_ids", "gauge",
           "Request ids the route's idempotency window holds (shared by the workers).");
    for (size_t r = 0; r < m->n_routes; r++) {
        uint64_t most = 0; /* every worker writes the one table's size: the latest is the most */
        for (unsigned i = 0; i < m->n_shards; i++) {
            uint64_t v = get((counter *)(void *)((char *)m->shards[i] +
                                                 SLOT_OFF(METRICS_ROUTE0 + r, dedupe_ids, 0)));
            most = v > most ? v : most;
        }
        route_sample(f, m, "bridge_dedupe_ids", METRICS_ROUTE0 + r, most);
    }

    uint64_t late = 0;
    for (unsigned i = 0; i < m->n_shards; i++)
        late += info[i].late_replies;
    family(f, "bridge_rpc_late_replies_total", "counter",
           "rpc replies dropped because no request waited for them any more.");
    fprintf(f, "bridge_rpc_late_replies_total %llu\n", (unsigned long long)late);

    family(f, "bridge_rpc_bad_replies_total", "counter",
           "rpc replies answered 502 because they could not be used, by reason.");
    for (size_t k = 0; k < METRICS_BAD_KINDS; k++)
        fprintf(f, "bridge_rpc_bad_replies_total{reason=\"%s\"} %llu\n", bad_reply_names[k],
                (unsigned long long)total(m, SHARD_OFF(bad_replies, k)));

    late = 0;
    for (unsigned i = 0; i < m->n_shards; i++)
        late += info[i].late_confirms;
    family(f, "bridge_amqp_late_confirms_total", "counter",
           "Confirms (ack or nack) dropped because their request was answered already "
           "(timed out, client gone, broker blocked).");
    fprintf(f, "bridge_amqp_late_confirms_total %llu\n", (unsigned long long)late);

    single(f, "bridge_inflight", "gauge",
           "Requests waiting on the broker (room to publish, a confirm, an rpc reply), all "
           "workers.",
           total(m, SHARD_OFF(inflight, 0)));
    single(f, "bridge_http_connections", "gauge", "Open client connections, all workers.",
           total(m, SHARD_OFF(connections, 0)));
    single(f, "bridge_http_connections_refused_total", "counter",
           "New connections answered 503 and closed: [http] max_connections were open.",
           total(m, SHARD_OFF(conns_refused, 0)));
    single(f, "bridge_pending_bytes", "gauge",
           "Bytes of request bodies waiting on the broker, all workers.",
           total(m, SHARD_OFF(pending_bytes, 0)));
    single(f, "bridge_pending_bytes_refused_total", "counter",
           "Requests answered 503: their body would have passed [http] max_pending_bytes.",
           total(m, SHARD_OFF(bytes_refused, 0)));
    single(f, "bridge_http_inflated_bytes_total", "counter",
           "Bytes inflated from request bodies sent with Content-Encoding gzip or deflate.",
           total(m, SHARD_OFF(inflated, 0)));

    family(f, "bridge_broker_connected", "gauge",
           "1 when the worker's broker connection is up, else 0 (down, connecting, blocked).");
    for (unsigned i = 0; i < m->n_shards; i++)
        fprintf(f, "bridge_broker_connected{worker=\"%u\"} %d\n", i, info[i].connected ? 1 : 0);

    family(f, "bridge_broker_node_info", "gauge",
           "The broker node (host:port) each worker is on, or was last on.");
    for (unsigned i = 0; i < m->n_shards; i++) {
        if (info[i].node == NULL || info[i].node[0] == '\0')
            continue;
        fprintf(f, "bridge_broker_node_info{worker=\"%u\",node=\"", i);
        put_label(f, info[i].node);
        fputs("\"} 1\n", f);
    }

    family(f, "bridge_broker_reconnects_total", "counter",
           "Broker connections made again after a loss, all workers.");
    fprintf(f, "bridge_broker_reconnects_total %llu\n",
            (unsigned long long)total(m, SHARD_OFF(reconnects, 0)));
}

/* The process's, not a pool's: a reload makes new counters for the new
 * routes, and these say how the reloads went. */
static atomic_uint_fast64_t reloads[2]; /* [0] failed, [1] ok */
static atomic_int last_reload_ok = 1;
static atomic_int_fast64_t last_reload_at;

void metrics_config_loaded(bool ok, int64_t unix_s, bool reload)
{
    if (reload)
        atomic_fetch_add(&reloads[ok], 1);
    atomic_store(&last_reload_ok, ok);
    atomic_store(&last_reload_at, unix_s);
}

static struct spool *_Atomic spool_of;

void metrics_spool(struct spool *s)
{
    atomic_store(&spool_of, s);
}

static void render_spool(FILE *f)
{
    struct spool_stats st = {0};
    struct spool *s = atomic_load(&spool_of);
    if (s != NULL)
        spool_stats(s, &st);
    time_t now = time(NULL);
    single(f, "bridge_spool_messages", "gauge",
           "Messages in the local spool the broker has not confirmed yet.", st.records);
    single(f, "bridge_spool_bytes", "gauge", "Their bytes.", st.bytes);
    single(f, "bridge_spool_oldest_age_seconds", "gauge",
           "Age of the oldest spool segment holding one of them; 0 when none.",
           st.oldest > 0 && now > st.oldest ? (uint64_t)(now - st.oldest) : 0);
    single(f, "bridge_spool_appended_total", "counter",
           "Requests made durable in the spool (answered 202) while the broker was away.",
           st.appended);
    single(f, "bridge_spool_replayed_total", "counter",
           "Spooled messages the broker confirmed on replay.", st.replayed);
    single(f, "bridge_spool_refused_total", "counter",
           "Requests the spool could not take (full, I/O error): answered 503.", st.refused);
}

static void render_config(FILE *f)
{
    family(f, "bridge_config_reloads_total", "counter",
           "SIGHUP reloads since the process started, by result.");
    fprintf(f, "bridge_config_reloads_total{result=\"ok\"} %llu\n",
            (unsigned long long)atomic_load(&reloads[1]));
    fprintf(f, "bridge_config_reloads_total{result=\"failed\"} %llu\n",
            (unsigned long long)atomic_load(&reloads[0]));
    single(f, "bridge_config_last_reload_success", "gauge",
           "1 when the last config load (start or SIGHUP) took effect, 0 when it was refused.",
           (uint64_t)atomic_load(&last_reload_ok));
    single(f, "bridge_config_last_reload_timestamp_seconds", "gauge",
           "When the config was last loaded or a reload last tried (unix time).",
           (uint64_t)atomic_load(&last_reload_at));
}

int metrics_render(const struct metrics *m, const struct metrics_worker_info *info, char **out,
                   size_t *len)
{
    *out = NULL;
    *len = 0;
    FILE *f = open_memstream(out, len);
    if (f == NULL)
        return -1;
    render_requests(f, m);
    render_durations(f, m);
    render_broker(f, m, info);
    render_config(f);
    render_spool(f);
    bool bad = ferror(f) != 0;
    if (fclose(f) != 0 || bad) {
        free(*out);
        *out = NULL;
        *len = 0;
        return -1;
    }
    return 0;
}
