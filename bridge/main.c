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
#include <sys/wait.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include "bridge/config.h"
#include "bridge/base/errbuf.h"
#include "bridge/base/log.h"
#include "bridge/base/metrics.h"
#include "bridge/base/spool.h"
#include "bridge/handover.h"
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
                 "routes as BRIDGE_ROUTE_<NAME>_<KEY>.\n"
                 "Signals: TERM/INT stop (draining), HUP reloads the config, USR2 starts\n"
                 "a new binary that takes over the listening sockets.\n");
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

/* How long a reload's (or a new binary's) workers may take to reach the
 * broker before the reload is given up and the running config kept. */
#define READY_WAIT_MS 10000
/* Configs replaced by a reload and still draining, at most. */
#define MAX_RETIRING 4

/* One loaded configuration and the workers that run it. */
struct gen {
    struct config *cfg;
    struct xmlcheck_schema **schemas;
    struct worker_pool *pool;
};

static void gen_free(struct gen *g)
{
    worker_pool_free(g->pool);
    if (g->cfg != NULL)
        free_schemas(g->schemas, g->cfg->n_routes);
    config_free(g->cfg);
    *g = (struct gen){0};
}

/* Read FILE and the environment and compile the schemas. 0, or -1 with the
 * reason in err. */
static int gen_load(struct gen *g, const char *file, char *err, size_t errlen)
{
    *g = (struct gen){0};
    g->cfg = config_load(file, environ, err, errlen);
    if (g->cfg == NULL)
        return -1;
    g->schemas = load_schemas(g->cfg, err, errlen);
    if (g->schemas == NULL) {
        gen_free(g);
        return -1;
    }
    return 0;
}

/* A config a reload replaced: its workers drain on a thread of their own,
 * so that main keeps taking signals. */
struct retiring {
    struct gen g;
    pthread_t thread;
    atomic_bool done;
    bool used;
};

static void *retire_main(void *arg)
{
    struct retiring *r = arg;
    worker_pool_stop(r->g.pool, false);
    atomic_store(&r->done, true);
    return NULL;
}

struct bridge {
    const char *file;
    char *const *argv;
    char exe[4096];       /* this binary's path, as it was started: SIGUSR2 runs what is there
                              now */
    struct listeners lis; /* the process's sockets */
    struct spool *spool;  /* the process's local spool ([spool] dir), NULL = none */
    struct gen cur;       /* the running config */
    struct retiring old[MAX_RETIRING];
    pid_t successor;          /* SIGUSR2's new process, until it takes over or exits */
    sigset_t sigs;            /* what main waits for */
    bool stop;                /* SIGTERM/INT came while main waited for something else, */
    bool handed;              /* or the new binary's SIGUSR1 */
    bool again_hup;           /* a SIGHUP came while a config was starting: reload after it */
    bool again_usr2;          /* the same for SIGUSR2 */
    uint64_t successor_until; /* mono_ms() by which the successor must have taken over */
};

/* Join the drained ones; ALL: wait for every one. */
static void reap_retired(struct bridge *b, bool all)
{
    for (int i = 0; i < MAX_RETIRING; i++) {
        struct retiring *r = &b->old[i];
        if (!r->used || (!all && !atomic_load(&r->done)))
            continue;
        pthread_join(r->thread, NULL);
        gen_free(&r->g);
        r->used = false;
    }
}

/* The new process of SIGUSR2 exited before it took over. */
static void reap_successor(struct bridge *b)
{
    int st;
    if (b->successor <= 0 || waitpid(b->successor, &st, WNOHANG) != b->successor)
        return;
    if (WIFEXITED(st))
        log_error("upgrade failed: the new process (pid %ld) exited with status %d before it "
                  "took over: still serving",
                  (long)b->successor, WEXITSTATUS(st));
    else
        log_error("upgrade failed: the new process (pid %ld) was killed by signal %d before it "
                  "took over: still serving",
                  (long)b->successor, WTERMSIG(st));
    b->successor = 0;
}

enum wait_end { WAIT_READY, WAIT_FAILED, WAIT_STOP };

/* Wait for POOL's workers to reach the broker, taking signals meanwhile
 * (SIGTERM/INT ends the wait; the others wait their turn, logged). */
static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Wait for POOL's workers to reach the broker, taking signals meanwhile:
 * SIGTERM/INT (or the new binary's SIGUSR1) ends the wait; a SIGHUP or
 * SIGUSR2 is kept for after it. */
static enum wait_end wait_ready(struct bridge *b, struct worker_pool *pool, char *err,
                                size_t errlen)
{
    struct timespec tick = {0, 10 * 1000 * 1000};
    uint64_t end = mono_ms() + READY_WAIT_MS;
    for (;;) {
        if (worker_pool_failed(pool, err, errlen))
            return WAIT_FAILED;
        if (worker_pool_ready(pool, err, errlen))
            return WAIT_READY;
        if (mono_ms() >= end) {
            char why[512];
            snprintf(why, sizeof why, "%s", err);
            errf(err, errlen, "not every worker reached the broker within %d s (%s)",
                 READY_WAIT_MS / 1000, why);
            return WAIT_FAILED;
        }
        siginfo_t si;
        int sig = sigtimedwait(&b->sigs, &si, &tick);
        if (sig == SIGTERM || sig == SIGINT ||
            (sig == SIGUSR1 && b->successor > 0 && si.si_pid == b->successor)) {
            b->stop = true;
            b->handed = sig == SIGUSR1;
            return WAIT_STOP;
        }
        if (sig == SIGCHLD)
            reap_successor(b);
        else if (sig == SIGHUP)
            b->again_hup = true;
        else if (sig == SIGUSR2)
            b->again_usr2 = true;
    }
}

/* The new config's workers in place of the running ones. */
static bool same_listen(const struct bridge *b, const struct config *now, char *err, size_t errlen)
{
    const struct http_config *was = &b->cur.cfg->http, *is = &now->http;
    if (is->workers != was->workers)
        return errf(err, errlen, "[http] workers changed (%d to %d): that takes a restart",
                    was->workers, is->workers) == 0;
    if (strcmp(now->spool_dir, b->cur.cfg->spool_dir) != 0 ||
        now->spool_max_size != b->cur.cfg->spool_max_size)
        return errf(err, errlen, "[spool] changed: that takes a restart") == 0;
    if (!b->lis.inherited &&
        (strcmp(is->listen_host, was->listen_host) != 0 || is->listen_port != was->listen_port))
        return errf(err, errlen, "[http] listen changed (%s:%d to %s:%d): that takes a restart",
                    was->listen_host, was->listen_port, is->listen_host, is->listen_port) == 0;
    return true;
}

static void reload(struct bridge *b)
{
    char err[CONFIG_ERR_LEN];
    struct gen g;
    log_info("SIGHUP: reloading %s", b->file);
    notify("RELOADING=1");
    int slot = -1;
    reap_retired(b, false);
    for (int i = 0; i < MAX_RETIRING && slot < 0; i++)
        if (!b->old[i].used)
            slot = i;
    if (slot < 0) {
        errf(err, sizeof err, "%d earlier configs are still draining", MAX_RETIRING);
        goto refused;
    }
    if (gen_load(&g, b->file, err, sizeof err) != 0)
        goto refused;
    if (!same_listen(b, g.cfg, err, sizeof err)) {
        gen_free(&g);
        goto refused;
    }
    g.pool = worker_pool_new(g.cfg, (const struct xmlcheck_schema *const *)g.schemas, b->lis.fds,
                             b->cur.pool, b->spool, true, err, sizeof err);
    if (g.pool == NULL || worker_pool_start(g.pool, err, sizeof err) != 0) {
        if (g.pool != NULL)
            worker_pool_stop(g.pool, false);
        gen_free(&g);
        goto refused;
    }
    enum wait_end end = wait_ready(b, g.pool, err, sizeof err);
    if (end != WAIT_READY) {
        worker_pool_stop(g.pool, false);
        gen_free(&g);
        if (end == WAIT_STOP)
            return;
        goto refused;
    }
    /* Both sets accept for a moment; then the old one drains. */
    worker_pool_resume(g.pool);
    struct retiring *r = &b->old[slot];
    r->g = b->cur;
    atomic_store(&r->done, false);
    r->used = true;
    b->cur = g;
    log_set_level(g.cfg->log_level);
    log_set_format(g.cfg->log_format);
    if (pthread_create(&r->thread, NULL, retire_main, r) != 0) {
        log_warn("cannot start a thread to drain the old config: draining it here");
        worker_pool_stop(r->g.pool, false);
        gen_free(&r->g);
        r->used = false;
    }
    log_info("reloaded %s: %zu routes; the old config's workers drain what they hold", b->file,
             g.cfg->n_routes);
    metrics_config_loaded(true, (int64_t)time(NULL), true);
    notify("READY=1");
    return;
refused:
    log_error("reload failed, the running config stays: %s", err);
    metrics_config_loaded(false, (int64_t)time(NULL), true);
    notify("READY=1");
}

static void upgrade(struct bridge *b)
{
    reap_successor(b);
    if (b->successor > 0) {
        log_warn("SIGUSR2 ignored: the new process %ld has not taken over yet", (long)b->successor);
        return;
    }
    char err[256];
    pid_t pid = upgrade_spawn(&b->lis, b->exe, b->argv, err, sizeof err);
    if (pid < 0) {
        log_error("upgrade failed: %s", err);
        return;
    }
    b->successor = pid;
    /* Its own wait for the broker is READY_WAIT_MS: some more to start. */
    b->successor_until = mono_ms() + READY_WAIT_MS + 5000;
    log_info("SIGUSR2: started %s as pid %ld with the listening sockets; this process hands "
             "over once its workers reach the broker",
             b->exe, (long)pid);
}

static void log_started(const struct bridge *b)
{
    const struct config *cfg = b->cur.cfg;
    char where[80];
    if (b->lis.inherited)
        snprintf(where, sizeof where, "the socket%s handed over (LISTEN_FDS)",
                 b->lis.fds[0] == b->lis.fds[b->lis.n - 1] ? "" : "s");
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
}

/* -t: the certificate and token files too, what the workers would load. */
static int check_only(struct gen *g)
{
    char err[CONFIG_ERR_LEN];
    struct http_shared *sh = http_shared_new(&g->cfg->http, err, sizeof err);
    if (sh == NULL) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    http_shared_free(sh);
    printf("config ok\n");
    return 0;
}

/* The path SIGUSR2 starts again: as it was given, or the one found on PATH. */
static void find_exe(struct bridge *b, const char *argv0)
{
    if (strchr(argv0, '/') != NULL) {
        snprintf(b->exe, sizeof b->exe, "%s", argv0);
        return;
    }
    ssize_t n = readlink("/proc/self/exe", b->exe, sizeof b->exe - 1);
    b->exe[n > 0 ? n : 0] = '\0';
}

/* The new process of SIGUSR2 has not taken over and will not now (the
 * old one stops for good, or it ran out of time): SIGTERM, then SIGKILL
 * after a while, reaped either way. */
static void end_successor(struct bridge *b, const char *why)
{
    if (b->successor <= 0)
        return;
    log_warn("stopping the new process (pid %ld): %s", (long)b->successor, why);
    kill(b->successor, SIGTERM);
    int st;
    uint64_t until = mono_ms() + READY_WAIT_MS;
    while (waitpid(b->successor, &st, WNOHANG) == 0) {
        if (mono_ms() >= until) {
            kill(b->successor, SIGKILL);
            (void)waitpid(b->successor, &st, 0);
            break;
        }
        usleep(10 * 1000);
    }
    b->successor = 0;
}

/* Until SIGTERM or SIGINT (true: stop for good), or until the new binary
 * took over (false). */
static bool serve(struct bridge *b)
{
    for (;;) {
        if (b->again_hup || b->again_usr2) {
            bool hup = b->again_hup;
            b->again_hup = false;
            if (hup) {
                reload(b);
            } else {
                b->again_usr2 = false;
                upgrade(b);
            }
            if (b->stop)
                return !b->handed;
            continue;
        }
        siginfo_t si;
        int sig;
        if (b->successor > 0) {
            uint64_t now = mono_ms();
            if (now >= b->successor_until) {
                end_successor(b, "it did not take over in time; still serving");
                continue;
            }
            uint64_t left = b->successor_until - now;
            struct timespec ts = {(time_t)(left / 1000), (long)(left % 1000) * 1000000L};
            sig = sigtimedwait(&b->sigs, &si, &ts);
        } else {
            sig = sigwaitinfo(&b->sigs, &si);
        }
        if (sig < 0)
            continue;
        switch (sig) {
        case SIGTERM:
        case SIGINT:
            log_info("%s received: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            return true;
        case SIGHUP:
            b->again_hup = true;
            break;
        case SIGUSR2:
            b->again_usr2 = true;
            break;
        case SIGUSR1:
            if (b->successor > 0 && si.si_pid == b->successor) {
                b->handed = true;
                return false;
            }
            log_warn("SIGUSR1 from pid %ld ignored: it is what a new binary sends once it "
                     "took over",
                     (long)si.si_pid);
            break;
        case SIGCHLD:
            reap_successor(b);
            break;
        default:
            break;
        }
    }
}

int main(int argc, char **argv)
{
    static struct bridge b; /* big (the retiring slots): not on the stack */
    b.file = "bridge.ini";
    bool test_only = false;
    int opt;
    while ((opt = getopt(argc, argv, "c:tVh")) != -1) {
        switch (opt) {
        case 'c':
            b.file = optarg;
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
    b.argv = argv;
    find_exe(&b, argv[0]);

    char err[CONFIG_ERR_LEN];
    xmlcheck_global_init();
    if (gen_load(&b.cur, b.file, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        xmlcheck_global_cleanup();
        return 1;
    }
    const struct config *cfg = b.cur.cfg;
    log_set_level(cfg->log_level);
    log_set_format(cfg->log_format);
    if (test_only) {
        int rc = check_only(&b.cur);
        gen_free(&b.cur);
        xmlcheck_global_cleanup();
        return rc;
    }
    if (listeners_open(&b.lis, &cfg->http, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        gen_free(&b.cur);
        xmlcheck_global_cleanup();
        return 1;
    }
    bool successor = b.lis.takes_over > 0;
    if (cfg->spool_dir[0] != '\0') {
        b.spool =
            spool_open(cfg->spool_dir, cfg->spool_max_size, worker_spool_told, err, sizeof err);
        if (b.spool == NULL) {
            fprintf(stderr, "%s\n", err);
            listeners_close(&b.lis);
            gen_free(&b.cur);
            xmlcheck_global_cleanup();
            return 1;
        }
        metrics_spool(b.spool);
    }

    /* A client gone mid-response must not kill us; signals are taken by
     * sigwait below, so every thread inherits them blocked. */
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&b.sigs);
    int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2, SIGCHLD};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        sigaddset(&b.sigs, sigs[i]);
    pthread_sigmask(SIG_BLOCK, &b.sigs, NULL);
    raise_nofile(cfg);

    int rc = 1;
    bool for_good = true;
    b.cur.pool = worker_pool_new(cfg, (const struct xmlcheck_schema *const *)b.cur.schemas,
                                 b.lis.fds, NULL, b.spool, successor, err, sizeof err);
    if (b.cur.pool == NULL) {
        log_error("%s", err);
        goto out;
    }
    if (worker_pool_start(b.cur.pool, err, sizeof err) != 0) {
        log_error("%s", err);
        worker_pool_stop(b.cur.pool, true);
        goto out;
    }
    if (successor) {
        /* The old process serves until this one can: then it is told. */
        enum wait_end end = wait_ready(&b, b.cur.pool, err, sizeof err);
        if (end != WAIT_READY) {
            if (end == WAIT_FAILED)
                log_error("cannot take over from pid %ld: %s", (long)b.lis.takes_over, err);
            worker_pool_stop(b.cur.pool, true);
            goto out;
        }
        worker_pool_resume(b.cur.pool);
        char state[64];
        snprintf(state, sizeof state, "MAINPID=%ld\nREADY=1", (long)getpid());
        notify(state);
        /* Not if the old one is gone: the pid may be another process's. */
        if (getppid() == b.lis.takes_over)
            kill(b.lis.takes_over, SIGUSR1);
        log_info("took over the listening sockets from pid %ld", (long)b.lis.takes_over);
    } else {
        notify("READY=1");
    }
    metrics_config_loaded(true, (int64_t)time(NULL), false);
    log_started(&b);

    for_good = serve(&b);
    if (b.handed)
        log_info("the new process (pid %ld) took over the sockets: handing over",
                 (long)b.successor);
    else
        end_successor(&b, "this process stops for good");
    /* A worker that cannot start for good raises SIGTERM itself. */
    if (worker_pool_failed(b.cur.pool, err, sizeof err)) {
        log_error("cannot start: %s", err);
        for_good = true;
    } else {
        rc = 0;
    }
    if (for_good)
        notify("STOPPING=1"); /* else the new process is the service now */
    /* Stopping for good: the sockets close with the last worker's
     * descriptor, and new connections are refused from then on instead of
     * waiting for nobody. Handing over: the new process has them. */
    listeners_close(&b.lis);
    for (int i = 0; for_good && i < MAX_RETIRING; i++)
        if (b.old[i].used)
            worker_pool_stopping(b.old[i].g.pool);
    worker_pool_stop(b.cur.pool, for_good);
    reap_retired(&b, true);
    log_info("stopped");
out:
    listeners_close(&b.lis);
    reap_retired(&b, true);
    gen_free(&b.cur);
    metrics_spool(NULL);
    spool_close(b.spool); /* after every worker: they were its appenders */
    xmlcheck_global_cleanup();
    return rc;
}
