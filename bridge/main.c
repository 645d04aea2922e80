/* main.c - ingest-bridge: options, config, schemas, workers, signals. The
 * only place that may exit: everything here happens before or after the
 * event loops run. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bridge/config.h"
#include "bridge/base/errbuf.h"
#include "bridge/base/log.h"
#include "http/server.h"
#include "bridge/worker.h"
#include "bridge/xmlcheck.h"

#define BRIDGE_VERSION "0.1.0"

extern char **environ;

static void usage(FILE *out)
{
    fprintf(out, "usage: ingest-bridge [-c FILE] [-t] [-V] [-h]\n"
                 "  -c FILE  config file (default: bridge.ini in the working directory)\n"
                 "  -t       check the config (schemas, certificates, token files), print 'config "
                 "ok', exit\n"
                 "  -V       print the version and exit\n"
                 "  -h       this help\n"
                 "Every key can be overridden from the environment: BRIDGE_<SECTION>_<KEY>,\n"
                 "routes as BRIDGE_ROUTE_<NAME>_<KEY>.\n");
}

/* Descriptors a bridge uses besides its clients': per worker a broker
 * connection, a listener, an epoll and a notification pair; the process a
 * few more (log, stdio, schemas being read). */
#define FDS_PER_WORKER 8
#define FDS_OTHER 64

/* Many keep-alive clients need many descriptors: take the hard limit. If
 * that leaves fewer than [http] max_connections for clients, the limit
 * cannot do its job (accepting pauses out of descriptors instead): say so. */
static void raise_nofile(const struct config *cfg)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            log_warn("cannot raise the descriptor limit: %s", strerror(errno));
            (void)getrlimit(RLIMIT_NOFILE, &rl);
        }
    }
    rlim_t other = (rlim_t)cfg->http.workers * FDS_PER_WORKER + FDS_OTHER;
    if (rl.rlim_cur != RLIM_INFINITY &&
        (rl.rlim_cur <= other || rl.rlim_cur - other < (rlim_t)cfg->http.max_connections))
        log_warn("[http] max_connections = %zu, but the descriptor limit (%llu) leaves about "
                 "%llu for clients: beyond that, accepting pauses instead of answering 503",
                 cfg->http.max_connections, (unsigned long long)rl.rlim_cur,
                 (unsigned long long)(rl.rlim_cur > other ? rl.rlim_cur - other : 0));
}

static void free_schemas(struct xmlcheck_schema **schemas, size_t n)
{
    if (schemas == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        xmlcheck_schema_free(schemas[i]);
    free(schemas);
}

/* Compile every route's XSD before any thread starts. */
static struct xmlcheck_schema **load_schemas(const struct config *cfg, char *err, size_t errlen)
{
    struct xmlcheck_schema **s = calloc(cfg->n_routes + 1, sizeof *s);
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < cfg->n_routes; i++) {
        const struct config_route *r = &cfg->routes[i];
        if (r->schema[0] == '\0')
            continue;
        char why[CONFIG_ERR_LEN / 2]; /* leaves room for the file, route and path */
        s[i] = xmlcheck_schema_load(r->schema, why, sizeof why);
        if (s[i] == NULL) {
            snprintf(err, errlen, "%s: route %s: schema %s: %s", cfg->file, r->name, r->schema,
                     why);
            free_schemas(s, cfg->n_routes);
            return NULL;
        }
    }
    return s;
}

/* systemd's socket activation (sd_listen_fds(3)): LISTEN_PID is ours and
 * LISTEN_FDS names the sockets from descriptor 3 on. One listening TCP
 * socket is taken in place of [http] listen; the variables are cleared, so
 * that nothing this process starts takes them for its own. 0, or -1 with
 * the reason in ERR (then the bridge does not start). */
static int inherit_listener(struct config *cfg, char *err, size_t errlen)
{
    const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
    if (pid == NULL || fds == NULL)
        return 0;
    char *end = NULL;
    long p = strtol(pid, &end, 10);
    bool ours = *end == '\0' && p == (long)getpid();
    long n = strtol(fds, &end, 10);
    bool fds_ok = *end == '\0';
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    if (!ours)
        return 0; /* meant for another process (our parent's) */
    if (!fds_ok || n != 1)
        return errf(err, errlen,
                    "LISTEN_FDS=%s: the bridge takes exactly one socket (one ListenStream)", fds);
    int listening = 0, type = 0, domain = 0;
    socklen_t len = sizeof listening;
    if (getsockopt(3, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || !listening ||
        (len = sizeof type, getsockopt(3, SOL_SOCKET, SO_TYPE, &type, &len)) != 0 ||
        type != SOCK_STREAM ||
        (len = sizeof domain, getsockopt(3, SOL_SOCKET, SO_DOMAIN, &domain, &len)) != 0 ||
        (domain != AF_INET && domain != AF_INET6))
        return errf(err, errlen, "LISTEN_FDS: descriptor 3 is not a listening TCP socket");
    (void)fcntl(3, F_SETFD, FD_CLOEXEC);
    cfg->http.inherited_fd = 3;
    return 0;
}

int main(int argc, char **argv)
{
    const char *file = "bridge.ini";
    bool test_only = false;
    int opt;
    while ((opt = getopt(argc, argv, "c:tVh")) != -1) {
        switch (opt) {
        case 'c':
            file = optarg;
            break;
        case 't':
            test_only = true;
            break;
        case 'V':
            printf("ingest-bridge %s\n", BRIDGE_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 1;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 1;
    }

    char err[CONFIG_ERR_LEN];
    struct config *cfg = config_load(file, environ, err, sizeof err);
    if (cfg == NULL) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    log_set_level(cfg->log_level);
    log_set_format(cfg->log_format);
    xmlcheck_global_init();
    struct xmlcheck_schema **schemas = load_schemas(cfg, err, sizeof err);
    if (schemas == NULL) {
        fprintf(stderr, "%s\n", err);
        config_free(cfg);
        xmlcheck_global_cleanup();
        return 1;
    }
    if (test_only) {
        /* The certificate and token files too: what the workers would load. */
        struct http_shared *sh = http_shared_new(&cfg->http, err, sizeof err);
        if (sh == NULL) {
            fprintf(stderr, "%s\n", err);
            free_schemas(schemas, cfg->n_routes);
            config_free(cfg);
            xmlcheck_global_cleanup();
            return 1;
        }
        http_shared_free(sh);
        printf("config ok\n");
        free_schemas(schemas, cfg->n_routes);
        config_free(cfg);
        xmlcheck_global_cleanup();
        return 0;
    }

    if (inherit_listener(cfg, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        free_schemas(schemas, cfg->n_routes);
        config_free(cfg);
        xmlcheck_global_cleanup();
        return 1;
    }

    /* A client gone mid-response must not kill us; signals are taken by
     * sigwait below, so every thread inherits them blocked. */
    signal(SIGPIPE, SIG_IGN);
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    raise_nofile(cfg);

    int rc = 1;
    struct worker_pool *pool =
        worker_pool_new(cfg, (const struct xmlcheck_schema *const *)schemas, err, sizeof err);
    if (pool == NULL) {
        log_error("%s", err);
        goto out;
    }
    if (worker_pool_start(pool, err, sizeof err) != 0) {
        log_error("%s", err);
        worker_pool_stop(pool);
        goto out;
    }
    char where[80];
    if (cfg->http.inherited_fd >= 0)
        snprintf(where, sizeof where, "the socket systemd passed (LISTEN_FDS)");
    else
        snprintf(where, sizeof where, "%s:%d", cfg->http.listen_host, cfg->http.listen_port);
    log_info("ingest-bridge %s listening on %s://%s with %d workers, %zu routes, broker %s%s",
             BRIDGE_VERSION, cfg->http.tls_cert[0] != '\0' ? "https" : "http", where,
             cfg->http.workers, cfg->n_routes, cfg->amqp.uris[0].display,
             cfg->amqp.n_uris > 1 ? " (+ more nodes: worker i starts on node i mod n)" : "");
    /* A route's share of the in-flight budget is often a default worked
     * out from the number of routes: say what it came to. */
    for (size_t i = 0; i < cfg->n_routes; i++) {
        const struct config_route *r = &cfg->routes[i];
        log_info("route %s: %s %s, at most %zu of each worker's %zu requests in flight, "
                 "timeout %llu ms",
                 r->name, r->mode == ROUTE_RPC ? "rpc" : "publish", r->path, r->max_inflight,
                 cfg->amqp.max_inflight, (unsigned long long)r->timeout_ms);
    }

    int sig = 0;
    while (sigwait(&stop, &sig) != 0) {
    }
    /* A worker that cannot start for good raises SIGTERM itself. */
    if (worker_pool_failed(pool, err, sizeof err)) {
        log_error("cannot start: %s", err);
        worker_pool_stop(pool);
        log_info("stopped");
        goto out;
    }
    log_info("%s received: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    worker_pool_stop(pool);
    log_info("stopped");
    rc = 0;
out:
    worker_pool_free(pool);
    free_schemas(schemas, cfg->n_routes);
    config_free(cfg);
    xmlcheck_global_cleanup();
    return rc;
}
