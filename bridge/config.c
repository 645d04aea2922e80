/* config.c - bridge.ini and BRIDGE_* environment overrides into one struct
 * config: the defaults, then the file and the environment (config_read.c),
 * every value through the key tables (config_keys.c) and its type's parser
 * (config_value.c); then a last pass checks the rules that span keys, and
 * each room gets its view of the result. Never prints, never exits. */
#include "bridge/config_int.h"
#include "bridge/base/errbuf.h"

#include <stdarg.h>
#include <stdlib.h>
#include <strings.h>
#include <unistd.h>

/* Paths the HTTP server answers itself. */
static const char *const reserved_paths[] = {"/healthz", "/metrics"};

/* Route names /metrics gives the bridge's own answers in its route label
 * (bridge/base/metrics.c): a route of that name would be counted with them. */
static const char *const reserved_route_names[] = {"pong", "healthz", "metrics", "none"};

/* The loader's one way to fail: see config_int.h. */
int config_fail(struct loader *ld, const struct origin *o, const char *key, const char *fmt, ...)
{
    if (ld->failed)
        return -1;
    ld->failed = true;
    char reason[REASON_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    if (ld->err == NULL || ld->errlen == 0)
        return -1;
    if (o != NULL && o->env != NULL)
        return errf(ld->err, ld->errlen, "environment %.*s: %s", env_name_len(o->env), o->env,
                    reason);
    if (o != NULL && o->line > 0) {
        ld->err_line = o->line;
        if (key != NULL)
            return errf(ld->err, ld->errlen, "%s:%d: %s: %s", ld->cfg->file, o->line, key, reason);
        return errf(ld->err, ld->errlen, "%s:%d: %s", ld->cfg->file, o->line, reason);
    }
    if (key != NULL)
        return errf(ld->err, ld->errlen, "%s: %s: %s", ld->cfg->file, key, reason);
    return errf(ld->err, ld->errlen, "%s: %s", ld->cfg->file, reason);
}

/* ---- rules that span keys --------------------------------------------- */

static int missing(struct loader *ld, size_t r, const char *key)
{
    const struct route_meta *m = &ld->meta[r];
    const char *name = ld->cfg->routes[r].name;
    ld->failed = true;
    if (m->line > 0)
        return errf(ld->err, ld->errlen, "%s: route %s: missing %s (section on line %d)",
                    ld->cfg->file, name, key, m->line);
    return errf(ld->err, ld->errlen, "%s: route %s: missing %s (route made by %.*s)", ld->cfg->file,
                name, key, env_name_len(m->env), m->env);
}

static const char *reserved_path(const char *path)
{
    for (size_t i = 0; i < sizeof reserved_paths / sizeof reserved_paths[0]; i++)
        if (strcmp(path, reserved_paths[i]) == 0)
            return reserved_paths[i];
    return NULL;
}

static const char *reserved_route_name(const char *name)
{
    for (size_t i = 0; i < sizeof reserved_route_names / sizeof reserved_route_names[0]; i++)
        if (strcasecmp(name, reserved_route_names[i]) == 0)
            return reserved_route_names[i];
    return NULL;
}

/* A certificate and its key: both or neither. */
static int check_pair(struct loader *ld, enum section_kind kind, size_t cert_key, size_t key_key,
                      const char *cert, const char *key)
{
    if ((cert[0] == '\0') == (key[0] == '\0'))
        return 0;
    size_t given = cert[0] != '\0' ? cert_key : key_key;
    size_t other = cert[0] != '\0' ? key_key : cert_key;
    const struct key_def *keys = config_sections[kind].keys;
    return config_fail(ld, &ld->glob[kind][given], keys[given].name,
                       "needs %s in [%s] too (both or neither)", keys[other].name,
                       config_sections[kind].name);
}

static int validate_tls(struct loader *ld)
{
    const struct config *c = ld->cfg;
    if (check_pair(ld, SEC_HTTP, HK_TLS_CERT, HK_TLS_KEY, c->http.tls_cert, c->http.tls_key) != 0 ||
        check_pair(ld, SEC_AMQP, AK_TLS_CERT, AK_TLS_KEY, c->amqp.tls_cert, c->amqp.tls_key) != 0)
        return -1;
    const struct origin *ca = &ld->glob[SEC_HTTP][HK_TLS_CLIENT_CA];
    const struct origin *mode = &ld->glob[SEC_HTTP][HK_TLS_CLIENT_AUTH];
    bool clients = c->http.tls_client_auth != HTTP_CLIENT_AUTH_NONE;
    if (clients && c->http.tls_cert[0] == '\0')
        return config_fail(ld, mode, "tls_client_auth", "needs tls_cert (an HTTPS listener)");
    if (clients && c->http.tls_client_ca[0] == '\0')
        return config_fail(ld, mode, "tls_client_auth",
                           "needs tls_client_ca (the CAs client certificates must chain to)");
    if (!clients && c->http.tls_client_ca[0] != '\0')
        return config_fail(ld, ca, "tls_client_ca", "set, but tls_client_auth is none");
    if (c->http.metrics_auth && c->http.auth_token_file[0] == '\0')
        return config_fail(ld, &ld->glob[SEC_HTTP][HK_METRICS_AUTH], "metrics_auth",
                           "needs [http] auth_token_file (the tokens /metrics asks for)");
    bool amqps = false;
    for (size_t i = 0; i < c->amqp.n_uris; i++)
        amqps = amqps || c->amqp.uris[i].tls;
    static const size_t tls_keys[] = {AK_TLS_CA, AK_TLS_CERT};
    const char *const tls_vals[] = {c->amqp.tls_ca, c->amqp.tls_cert};
    for (size_t i = 0; !amqps && i < 2; i++)
        if (tls_vals[i][0] != '\0')
            return config_fail(ld, &ld->glob[SEC_AMQP][tls_keys[i]],
                               config_sections[SEC_AMQP].keys[tls_keys[i]].name,
                               "set, but no uri is amqps://");
    return 0;
}

static int validate(struct loader *ld)
{
    const struct config *c = ld->cfg;
    const struct origin *pong = &ld->glob[SEC_HTTP][HK_PONG_PATH];
    if (reserved_path(c->http.pong_path) != NULL)
        return config_fail(ld, pong, "pong_path", "%s is answered by the bridge itself",
                           c->http.pong_path);
    if (validate_tls(ld) != 0)
        return -1;
    /* AMQP negotiates heartbeats in whole seconds, and the bridge sends its
     * own at half the interval: 1 ms would wake a worker every half
     * millisecond for nothing. */
    if (c->amqp.heartbeat_ms > 0 && c->amqp.heartbeat_ms < 1000)
        return config_fail(ld, &ld->glob[SEC_AMQP][AK_HEARTBEAT], "heartbeat",
                           "%llums is below 1s, the shortest AMQP heartbeat (0 turns it off)",
                           (unsigned long long)c->amqp.heartbeat_ms);
    if (c->http.max_pending_bytes < c->http.max_body)
        return config_fail(ld, &ld->glob[SEC_HTTP][HK_MAX_PENDING_BYTES], "max_pending_bytes",
                           "%zu is less than max_body (%zu): a body of max_body could never wait",
                           c->http.max_pending_bytes, c->http.max_body);

    for (size_t j = 0; j < c->n_routes; j++) {
        const struct config_route *r = &c->routes[j];
        const struct origin *ko = ld->meta[j].keys;
        if (reserved_route_name(r->name) != NULL) {
            const struct route_meta *m = &ld->meta[j];
            const struct origin o = {m->line, m->env};
            return config_fail(
                ld, &o, NULL,
                "route name %s is reserved: /metrics labels the bridge's own answers "
                "(pong, healthz, metrics, none) with it",
                r->name);
        }
        if (r->path == NULL)
            return missing(ld, j, "path");
        if (r->routing_key == NULL)
            return missing(ld, j, "routing_key");
        if (strcmp(r->path, c->http.pong_path) == 0)
            return config_fail(ld, &ko[RK_PATH], "path", "%s is the pong_path", r->path);
        if (reserved_path(r->path) != NULL)
            return config_fail(ld, &ko[RK_PATH], "path", "%s is answered by the bridge itself",
                               r->path);
        /* An exact path may stand beside a pattern that matches it too (the
         * exact one wins); two patterns that match one path may not. */
        for (size_t i = 0; i < j; i++) {
            const char *other = c->routes[i].path;
            bool patterns = path_has_captures(other) && path_has_captures(r->path);
            if (strcmp(other, r->path) == 0)
                return config_fail(ld, &ko[RK_PATH], "path", "%s is already the path of route %s",
                                   r->path, c->routes[i].name);
            if (patterns && path_patterns_overlap(other, r->path))
                return config_fail(ld, &ko[RK_PATH], "path",
                                   "%s matches paths that %s of route %s matches", r->path, other,
                                   c->routes[i].name);
        }
        if (config_route_prepare(ld, j) != 0)
            return -1;
        /* The type only matters when the bridge declares the queue; a
         * quorum route without one would suggest replication it does not
         * get (the queue it reaches may well be classic). */
        if (r->queue_type == QUEUE_QUORUM && r->queue[0] == '\0')
            return config_fail(
                ld, &ko[RK_QUEUE_TYPE], "queue_type",
                "quorum needs queue: the type is used when the bridge declares the queue");
        if (r->exchange[0] == '\0' && r->routing_key[0] == '\0')
            return config_fail(ld, &ko[RK_ROUTING_KEY], "routing_key",
                               "empty: with the default exchange the message would reach no queue");
        if (r->max_inflight > c->amqp.max_inflight)
            return config_fail(
                ld, &ko[RK_MAX_INFLIGHT], "max_inflight",
                "%zu is more than [amqp] max_inflight (%zu), the worker's whole budget",
                r->max_inflight, c->amqp.max_inflight);
    }
    return 0;
}

/* A route's max_inflight of 0: its share of [amqp] max_inflight. With one
 * route, all of it; with several, three quarters (rounded up) but never
 * the whole of a budget of 2 or more, so that one route whose queue
 * stopped confirming (its requests wait out their timeout) leaves a
 * quarter of every worker's budget (at least one) to the other routes, and
 * one busy route still has room for its load. With half, 10,000
 * connections to one route over two workers (the bench's c10k-fire) were
 * at the share, and a worker given a few more connections than the other
 * answered 503 at once (12,291 of them in 10 s). */
static void resolve_route_inflight(struct config *c)
{
    size_t all = c->amqp.max_inflight;
    size_t left = all / 4 > 0 ? all / 4 : all >= 2; /* for the other routes */
    for (size_t j = 0; j < c->n_routes; j++)
        if (c->routes[j].max_inflight == 0)
            c->routes[j].max_inflight = c->n_routes == 1 ? all : all - left;
}

/* A route's persistent left at its default: yes on a publish route, no on
 * an rpc route. An rpc request is worth nothing after a broker restart (its
 * reply-to, the channel's direct reply-to, is gone, and its client got 503),
 * and writing it to disk first costs the broker: a direct rpc client read
 * 14,654 round trips/s transient against 10,303 persistent (issue 14). */
static void resolve_route_persistent(struct loader *ld)
{
    for (size_t j = 0; j < ld->cfg->n_routes; j++) {
        const struct origin *o = &ld->meta[j].keys[RK_PERSISTENT];
        if (o->line == 0 && o->env == NULL && ld->cfg->routes[j].mode == ROUTE_RPC)
            ld->cfg->routes[j].persistent = false;
    }
}

/* Each room's part of the config: the HTTP and the AMQP room see their own
 * struct only, the routes included (same index, the strings of c->routes). */
static int make_room_views(struct config *c)
{
    c->http.file = c->file;
    c->amqp.write_timeout_ms = c->http.timeout_ms;
    c->http.routes = calloc(c->n_routes + 1, sizeof *c->http.routes);
    c->amqp.routes = calloc(c->n_routes + 1, sizeof *c->amqp.routes);
    if (c->http.routes == NULL || c->amqp.routes == NULL)
        return -1;
    c->http.n_routes = c->amqp.n_routes = c->n_routes;
    for (size_t i = 0; i < c->n_routes; i++) {
        const struct config_route *r = &c->routes[i];
        c->http.routes[i] = (struct http_route){
            .name = r->name,
            .path = r->path,
            .pattern = path_has_captures(r->path),
            .auth_token_file = r->auth_token_file,
            .encodings = r->encoding_bits,
            .keep_encoding = r->keep_encoding,
            .client_subjects = (const char *const *)r->subject_list,
            .n_client_subjects = r->n_subjects,
            .rate = r->rate_per_s,
            .burst = (double)r->burst,
            .rate_by = r->rate_by,
            .rate_keys = r->rate_keys,
        };
        c->amqp.routes[i] = (struct broker_route){
            .name = r->name,
            .exchange = r->exchange,
            .routing_key = r->bind_key != NULL ? r->bind_key : r->routing_key,
            .queue = r->queue,
            .queue_type = r->queue_type,
            .rpc = r->mode == ROUTE_RPC,
            .exchanges = (const char *const *)r->exchange_list,
            .n_exchanges = r->n_exchanges,
            .declare = r->declare,
            .args = {r->dead_letter_exchange, r->dead_letter_routing_key, r->max_length,
                     r->max_length_bytes, r->overflow, r->message_ttl_ms, r->max_priority},
        };
    }
    return 0;
}

/* ---- entry points ----------------------------------------------------- */

void config_free(struct config *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->file);
    free(cfg->http.listen_host);
    free(cfg->http.pong_path);
    free(cfg->http.tls_cert);
    free(cfg->http.tls_key);
    free(cfg->http.tls_client_ca);
    free(cfg->http.auth_token_file);
    free(cfg->amqp.tls_ca);
    free(cfg->amqp.tls_cert);
    free(cfg->amqp.tls_key);
    free(cfg->spool_dir);
    broker_uris_free(cfg->amqp.uris, cfg->amqp.n_uris);
    for (size_t i = 0; i < cfg->n_routes; i++) {
        config_route_free(&cfg->routes[i]);
    }
    free(cfg->routes);
    free(cfg->http.routes);
    free(cfg->amqp.routes);
    free(cfg);
}

struct config *config_load(const char *file, char *const *envp, char *err, size_t errlen)
{
    struct loader ld = {.err = err, .errlen = errlen};
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    ld.cfg = calloc(1, sizeof *ld.cfg);
    if (ld.cfg == NULL || (ld.cfg->file = strdup(file != NULL ? file : "")) == NULL) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "%s: out of memory", file != NULL ? file : "config");
        free(ld.cfg);
        return NULL;
    }

    /* Defaults first, through the same parsers as the file's values. */
    const struct origin dflt = {0, NULL};
    for (int s = SEC_HTTP; s < SEC_ROUTE && !ld.failed; s++)
        for (size_t ki = 0; ki < config_sections[s].n_keys && !ld.failed; ki++)
            (void)config_set_key(&ld, (enum section_kind)s, 0, ki, config_sections[s].keys[ki].def,
                                 &dflt);

    if (!ld.failed && config_read_file(&ld) == 0 && config_read_env(&ld, envp) == 0 &&
        validate(&ld) == 0) {
        resolve_route_inflight(ld.cfg);
        resolve_route_persistent(&ld);
        if (ld.cfg->http.workers == 0) {
            long cpus = sysconf(_SC_NPROCESSORS_ONLN);
            ld.cfg->http.workers = cpus < 1 ? 1 : cpus > MAX_WORKERS ? MAX_WORKERS : (int)cpus;
        }
        if (make_room_views(ld.cfg) != 0 && !ld.failed) {
            ld.failed = true;
            if (err != NULL && errlen > 0)
                snprintf(err, errlen, "%s: out of memory", ld.cfg->file);
        }
    }
    free(ld.meta);
    if (ld.failed) {
        config_free(ld.cfg);
        return NULL;
    }
    return ld.cfg;
}
