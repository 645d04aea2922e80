/* shared.c - what every worker's HTTP server shares, made once before the
 * workers start and read-only afterwards: the HTTPS context and the bearer
 * tokens ([http] auth_token_file, and each route's own). Every file is read
 * here, so a bad certificate or token file stops start-up (and `-t`) with
 * its name, never a worker. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "bridge/base/errbuf.h"
#include "http/ratelimit.h"
#include "http/auth.h"
#include "http/http_config.h"
#include "http/server.h"
#include "http/tls.h"

struct http_shared {
    struct tls_server *tls;                /* NULL = plain HTTP */
    struct auth_tokens *global;            /* [http] auth_token_file; NULL = none */
    struct auth_tokens **own;              /* per route (as cfg->routes): its own file, or NULL */
    const struct auth_tokens **route_auth; /* per route: what it asks for (own, global or NULL) */
    size_t n_routes;
    struct http_held *held;  /* what every worker holds: the one mutable part */
    struct ratelimit **rate; /* per route: its buckets (locked inside), or NULL */
};

/* Counted by every worker, so atomics; written once per connection and
 * once per request handed to the bridge. */
struct http_held {
    atomic_size_t conns; /* open connections that took a slot */
    atomic_size_t bytes; /* request bodies waiting on the broker */
    size_t max_conns;    /* [http] max_connections */
    size_t max_bytes;    /* [http] max_pending_bytes */
};

/* SH's parts for CFG, every file read; SH may be NULL (calloc failed). 0 /
 * -1 with the reason in ERR; http_shared_free frees what was made. */
static int setup(struct http_shared *sh, const struct http_config *cfg, char *err, size_t errlen)
{
    if (sh == NULL || (sh->own = calloc(cfg->n_routes + 1, sizeof *sh->own)) == NULL ||
        (sh->route_auth = calloc(cfg->n_routes + 1, sizeof *sh->route_auth)) == NULL ||
        (sh->held = calloc(1, sizeof *sh->held)) == NULL ||
        (sh->rate = calloc(cfg->n_routes + 1, sizeof *sh->rate)) == NULL)
        return errf(err, errlen, "out of memory");
    sh->n_routes = cfg->n_routes;
    sh->held->max_conns = cfg->max_connections;
    sh->held->max_bytes = cfg->max_pending_bytes;
    char why[512];
    if (cfg->tls_cert[0] != '\0' &&
        (sh->tls = tls_server_new(cfg->tls_cert, cfg->tls_key, cfg->tls_client_ca,
                                  cfg->tls_client_auth, why, sizeof why)) == NULL)
        return errf(err, errlen, "%s: [http] %s", cfg->file, why);
    if (cfg->auth_token_file[0] != '\0' &&
        (sh->global = auth_tokens_load(cfg->auth_token_file, why, sizeof why)) == NULL)
        return errf(err, errlen, "%s: [http] auth_token_file: %s", cfg->file, why);
    for (size_t i = 0; i < cfg->n_routes; i++) {
        const struct http_route *r = &cfg->routes[i];
        if (r->rate > 0 &&
            (sh->rate[i] = ratelimit_new(r->rate, r->burst,
                                         r->rate_by == HTTP_RATE_ROUTE ? 1 : r->rate_keys)) == NULL)
            return errf(err, errlen, "out of memory");
        sh->route_auth[i] = sh->global;
        if (r->auth_token_file[0] == '\0')
            continue;
        sh->own[i] = auth_tokens_load(r->auth_token_file, why, sizeof why);
        if (sh->own[i] == NULL)
            return errf(err, errlen, "%s: route %s: auth_token_file: %s", cfg->file, r->name, why);
        sh->route_auth[i] = sh->own[i];
    }
    return 0;
}

struct http_shared *http_shared_new(const struct http_config *cfg, char *err, size_t errlen)
{
    struct http_shared *sh = calloc(1, sizeof *sh);
    if (setup(sh, cfg, err, errlen) != 0) {
        http_shared_free(sh);
        return NULL;
    }
    return sh;
}

void http_shared_free(struct http_shared *sh)
{
    if (sh == NULL)
        return;
    tls_server_free(sh->tls);
    auth_tokens_free(sh->global);
    for (size_t i = 0; sh->own != NULL && i < sh->n_routes; i++)
        auth_tokens_free(sh->own[i]);
    free(sh->own);
    free(sh->route_auth);
    for (size_t i = 0; sh->rate != NULL && i < sh->n_routes; i++)
        ratelimit_free(sh->rate[i]);
    free(sh->rate);
    free(sh->held);
    free(sh);
}

bool http_shared_tls(const struct http_shared *sh)
{
    return sh->tls != NULL;
}

const struct tls_server *http_shared_tls_server(const struct http_shared *sh)
{
    return sh->tls;
}

struct ratelimit *http_shared_rate(const struct http_shared *sh, size_t route)
{
    return route < sh->n_routes ? sh->rate[route] : NULL;
}

const struct auth_tokens *http_shared_auth(const struct http_shared *sh, size_t route)
{
    return route < sh->n_routes ? sh->route_auth[route] : sh->global;
}

static bool fits(size_t cur, unsigned long long n, size_t max)
{
    return n <= max && cur <= max - n;
}

/* Take N of a bound shared by every worker: false, nothing taken, when
 * that would pass MAX. */
static bool take(atomic_size_t *v, size_t n, size_t max)
{
    size_t cur = atomic_load_explicit(v, memory_order_relaxed);
    do {
        if (!fits(cur, n, max))
            return false;
    } while (!atomic_compare_exchange_weak_explicit(v, &cur, cur + n, memory_order_relaxed,
                                                    memory_order_relaxed));
    return true;
}

bool http_shared_conn_take(const struct http_shared *sh)
{
    return take(&sh->held->conns, 1, sh->held->max_conns);
}

void http_shared_conn_give(const struct http_shared *sh)
{
    atomic_fetch_sub_explicit(&sh->held->conns, 1, memory_order_relaxed);
}

bool http_shared_bytes_take(const struct http_shared *sh, size_t n)
{
    return take(&sh->held->bytes, n, sh->held->max_bytes);
}

bool http_shared_bytes_fit(const struct http_shared *sh, unsigned long long n)
{
    return fits(atomic_load_explicit(&sh->held->bytes, memory_order_relaxed), n,
                sh->held->max_bytes);
}

void http_shared_bytes_give(const struct http_shared *sh, size_t n)
{
    atomic_fetch_sub_explicit(&sh->held->bytes, n, memory_order_relaxed);
}
