/* test_broker_handover.c - changing the config and the binary under load:
 * a SIGHUP reload that adds a route, a reload the new file fails, and a
 * SIGUSR2 binary upgrade, each while keep-alive clients and clients that
 * open a connection per request post to a publish route and an rpc route.
 * Each must end with 0 connections refused, 0 requests unanswered, 0
 * answers but 202/200, and every 202 in the queue. One of the broker fault
 * suites (the shared part: broker_faults.[ch]). */

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "broker_faults.h"

static const struct fcfg CFG = {.workers = 2, .heartbeat = "5s"};

/* The suite's config, with EXTRA after it. */
static void write_config(const struct bridge *b, const char *extra)
{
    char *text = faults_config(b->port, &CFG);
    FILE *f = fopen(b->cfg, "w");
    if (f == NULL)
        fail_msg("%s: %s", b->cfg, strerror(errno));
    fprintf(f, "%s%s", text, extra);
    fclose(f);
    free(text);
}

/* Messages in Q (emptied). */
static int mq_count(const char *q)
{
    size_t n;
    char **ids = mq_drain_ids(q, &n);
    ids_free(ids, n);
    return (int)n;
}

enum { KEEP = 6, FRESH = 4, RPC_KEEP = 4, RPC_FRESH = 2 };

/* Keep-alive and connection-per-request clients, publish and rpc, each
 * with its own tag; started. */
static void start_load(const char *tag)
{
    char t[4][32];
    snprintf(t[0], sizeof t[0], "%s-k", tag);
    snprintf(t[1], sizeof t[1], "%s-f", tag);
    snprintf(t[2], sizeof t[2], "%s-rk", tag);
    snprintf(t[3], sizeof t[3], "%s-rf", tag);
    static char tags[4][32];
    memcpy(tags, t, sizeof tags);
    loads_add(KEEP, g_aux.port, "/durable", tags[0], false, 20000, 2, 20);
    int first_fresh = g_ls.n;
    loads_add(FRESH, g_aux.port, "/durable", tags[1], false, 20000, 2, 20);
    loads_add(RPC_KEEP, g_aux.port, "/rpc", tags[2], true, 20000, 2, 20);
    int first_rpc_fresh = g_ls.n;
    loads_add(RPC_FRESH, g_aux.port, "/rpc", tags[3], true, 20000, 2, 20);
    for (int i = first_fresh; i < first_fresh + FRESH; i++)
        g_ls.l[i].fresh = true;
    for (int i = first_rpc_fresh; i < g_ls.n; i++)
        g_ls.l[i].fresh = true;
    loads_run();
}

/* What the load got; fail_msg on anything but 202/200, an unanswered
 * request, a refused connect, or a 202 not in f.durable. */
struct outcome {
    struct tally pub, rpc;
    int fresh_conns; /* connections opened by the per-request clients */
};

static struct outcome end_load(const char *what)
{
    loads_stop();
    struct outcome o = {tally("/durable", ALL_TIME), tally("/rpc", ALL_TIME), 0};
    for (int i = 0; i < g_ls.n; i++)
        if (g_ls.l[i].fresh)
            o.fresh_conns += g_ls.l[i].n;
    assert_tally_clean(&o.pub, what);
    assert_tally_clean(&o.rpc, what);
    if (o.pub.nconnfail || o.rpc.nconnfail)
        fail_msg("%s: %d connects refused", what, o.pub.nconnfail + o.rpc.nconnfail);
    if (o.pub.n503 || o.rpc.n503)
        fail_msg("%s: %d publishes and %d rpc requests answered 503", what, o.pub.n503, o.rpc.n503);
    if (o.pub.n202 == 0 || o.rpc.n200 == 0)
        fail_msg("%s: no 202 (%d) or no rpc 200 (%d)", what, o.pub.n202, o.rpc.n200);
    struct qcheck c = expect_durable_kept();
    (void)c;
    return o;
}

static void begin(const char *name)
{
    mq_purge("f.durable");
    mq_purge("f.rpc");
    if (!mq_declare("f.added", amqp_empty_table))
        fail_msg("cannot declare f.added");
    mq_purge("f.added");
    echo_start("f.rpc", NULL);
    bridge_start(&g_aux, name, faults_config, &CFG);
    g_aux.mark = file_size(g_aux.log);
}

static const char ADDED[] = "\n[route added]\n"
                            "path        = /added\n"
                            "routing_key = f.added\n"
                            "queue       = f.added\n";

/* A reload that adds a route, under load: the new route answers, the
 * old ones never fail. */
static void test_reload_adds_route(void **state)
{
    (void)state;
    begin("reload");
    start_load("rl");
    sleep_ms(1000);
    write_config(&g_aux, ADDED);
    double t0 = now_ms();
    kill(g_aux.pid, SIGHUP);
    if (!log_wait(&g_aux, "reloaded", scale_ms(15000)))
        fail_msg("no 'reloaded' in the log 15 s after SIGHUP");
    double t_done = now_ms();
    int added = post_status(g_aux.port, "/added", NULL);
    if (added != 202)
        fail_msg("the added route answered %d after the reload, expected 202", added);
    sleep_ms(1000);
    struct outcome o = end_load("publishes and rpc across a reload");
    int n_added = mq_count("f.added");
    if (n_added != 1)
        fail_msg("f.added holds %d messages, expected the 1 posted", n_added);
    result_row("SIGHUP reload adding a route, under load",
               "%d clients: %d publishes, %d rpc, %d connections opened; 0 connection "
               "errors, 0 unanswered, 0 x 503, 0 lost; the new route served %.0f ms after the "
               "signal",
               KEEP + FRESH + RPC_KEEP + RPC_FRESH, o.pub.n, o.rpc.n, o.fresh_conns, t_done - t0);
    PASS();
}

/* A reload of a broken file: the running config stays, nothing fails, and
 * the log and /metrics say so. */
static void test_reload_fails(void **state)
{
    (void)state;
    begin("badreload");
    start_load("bad");
    sleep_ms(1000);
    write_config(&g_aux, "\n[route broken]\npath = /broken\nmode = sometimes\n");
    kill(g_aux.pid, SIGHUP);
    if (!log_wait(&g_aux, "reload failed, the running config stays", scale_ms(5000)))
        fail_msg("no 'reload failed' in the log after a SIGHUP with a broken file");
    if (log_count(&g_aux, "mode") == 0)
        fail_msg("the failed reload's log line does not name the bad key");
    /* A second kind: what takes a restart is refused too. */
    char *text = faults_config(g_aux.port, &(struct fcfg){.workers = 3, .heartbeat = "5s"});
    FILE *f = fopen(g_aux.cfg, "w");
    fputs(text, f);
    fclose(f);
    free(text);
    kill(g_aux.pid, SIGHUP);
    if (!log_wait(&g_aux, "that takes a restart", scale_ms(5000)))
        fail_msg("a reload changing [http] workers was not refused");
    sleep_ms(1000);
    struct resp r;
    if (bridge_get(&g_aux, "/metrics", &r) != 0 || r.status != 200)
        fail_msg("/metrics after the failed reloads");
    bool counted = r.body != NULL &&
                   strstr(r.body, "bridge_config_reloads_total{result=\"failed\"} 2") != NULL &&
                   strstr(r.body, "bridge_config_last_reload_success 0") != NULL;
    resp_free(&r);
    if (!counted)
        fail_msg("/metrics does not count the 2 failed reloads");
    struct outcome o = end_load("publishes and rpc across a failed reload");
    result_row("SIGHUP reload of a broken file, then of one changing [http] workers, under load",
               "both refused, the log saying why, the running config kept; %d clients: %d "
               "publishes, %d rpc, %d connections opened; 0 connection errors, 0 unanswered, 0 x "
               "503, 0 lost",
               KEEP + FRESH + RPC_KEEP + RPC_FRESH, o.pub.n, o.rpc.n, o.fresh_conns);
    PASS();
}

/* The pid in the log line after NEEDLE ("... as pid 123 ..."), 0 if none. */
static pid_t pid_after(const struct bridge *b, const char *needle)
{
    FILE *f = fopen(b->log, "r");
    char line[1024];
    pid_t pid = 0;
    while (f != NULL && fgets(line, sizeof line, f) != NULL) {
        char *p = strstr(line, needle);
        if (p != NULL)
            pid = (pid_t)atol(p + strlen(needle));
    }
    if (f != NULL)
        fclose(f);
    return pid;
}

/* SIGUSR2 under load: a new process takes the sockets, the old one drains
 * and exits 0, and no client sees a refused or reset connection. */
static void test_binary_upgrade(void **state)
{
    (void)state;
    /* The new process is the old one's child: once that exits, ours. */
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0)
        fail_msg("PR_SET_CHILD_SUBREAPER: %s", strerror(errno));
    begin("upgrade");
    start_load("up");
    sleep_ms(1000);
    pid_t old = g_aux.pid;
    double t0 = now_ms();
    kill(old, SIGUSR2);
    int st;
    if (!wait_exit(old, scale_ms(HTTP_TIMEOUT_MS + 5000), &st))
        fail_msg("the old process still runs %d s after SIGUSR2",
                 scale_ms(HTTP_TIMEOUT_MS + 5000) / 1000);
    double t_exit = now_ms();
    pid_t now = pid_after(&g_aux, "as pid ");
    g_aux.pid = now; /* teardown stops this one */
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("the old process ended with status %d, expected exit 0", st);
    if (now <= 0 || kill(now, 0) != 0)
        fail_msg("no new process after SIGUSR2 (log says pid %ld)", (long)now);
    if (log_count(&g_aux, "took over the listening sockets") != 1)
        fail_msg("the new process did not log its take-over");
    sleep_ms(1000);
    struct outcome o = end_load("publishes and rpc across a binary upgrade");
    /* The new process serves: /healthz answers from it. */
    struct resp r;
    if (bridge_get(&g_aux, "/healthz", &r) != 0 || r.status != 200)
        fail_msg("/healthz of the new process");
    resp_free(&r);
    result_row("SIGUSR2 binary upgrade under load",
               "%d clients: %d publishes, %d rpc, %d connections opened; 0 connection "
               "errors, 0 unanswered, 0 x 503, 0 lost; the old process exited 0 %.2f s after "
               "the signal",
               KEEP + FRESH + RPC_KEEP + RPC_FRESH, o.pub.n, o.rpc.n, o.fresh_conns,
               (t_exit - t0) / 1000);
    PASS();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        FAULTS_TEST(test_reload_adds_route),
        FAULTS_TEST(test_reload_fails),
        FAULTS_TEST(test_binary_upgrade),
    };
    return suite_run("ingest-bridge broker faults: reload and upgrade", &FAULTS_SUITE, tests,
                     "FAULTS_ONLY");
}
