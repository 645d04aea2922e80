/* test_broker_loss.c - the broker goes away under a running bridge: its
 * connections closed with rabbitmqctl, the node stopped and started, killed
 * with SIGKILL under load, and a failover to a second node. Nothing answered
 * 202 is lost, every request is answered, and the bridge comes back on its
 * own. One of the broker fault suites (the shared part: broker_faults.[ch]);
 * each test records what it measured with result_row(). */

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "broker_faults.h"

/* Wait until the monitor saw the bridge unhealthy and then healthy again;
 * false after MS. */
static bool monitor_wait_recovered(int ms)
{
    double end = now_ms() + ms;
    while (now_ms() < end) {
        if (atomic_load(&g_mon.t_first_bad) != 0 && atomic_load(&g_mon.t_good_again) != 0)
            return true;
        sleep_ms(10);
    }
    return false;
}

static int sorted_dups(char **ids, size_t n)
{
    int d = 0;
    for (size_t i = 1; i < n; i++)
        if (strcmp(ids[i - 1], ids[i]) == 0)
            d++;
    return d;
}

/* The pids of the bridge's broker connections (connection_name "ingest-bridge
 * wN"), from rabbitmqctl list_connections; how many, -1 on error. */
static int bridge_conn_pids(char pids[][128], int max)
{
    char *argv[] = {(char *)g_harness.broker_sh, "ctl", "list_connections",  "-q",
                    "--no-table-headers",        "pid", "client_properties", NULL};
    char *out;
    int st = run_capture(argv, NULL, &out);
    if (st != 0) {
        print_message("rabbitmqctl list_connections: status 0x%x:\n%s\n", st, out);
        free(out);
        return -1;
    }
    int n = 0;
    char *save = NULL;
    for (char *line = strtok_r(out, "\n", &save); line && n < max;
         line = strtok_r(NULL, "\n", &save)) {
        if (!strstr(line, "\"connection_name\",\"ingest-bridge w") || line[0] != '<')
            continue;
        size_t k = strcspn(line, " \t");
        if (k >= 128)
            continue;
        memcpy(pids[n], line, k);
        pids[n][k] = '\0';
        n++;
    }
    free(out);
    return n;
}

/* rabbitmqctl close_connection on each of PIDS at once; 0 when all did. */
static int close_connections(char pids[][128], int n)
{
    pid_t ps[8];
    char log[600];
    snprintf(log, sizeof log, "%s/close_connection.out", g_harness.tmp);
    for (int i = 0; i < n && i < 8; i++) {
        char *argv[] = {
            (char *)g_harness.broker_sh, "ctl", "close_connection", pids[i], "fault test", NULL};
        ps[i] = spawn(argv, log, NULL);
    }
    int bad = 0;
    for (int i = 0; i < n && i < 8; i++) {
        int st;
        if (!wait_exit(ps[i], scale_ms(30000), &st)) {
            kill(ps[i], SIGKILL);
            waitpid(ps[i], &st, 0);
            st = -1;
        }
        if (st != 0)
            bad++;
    }
    if (bad) {
        char *s = slurp(log, 0);
        print_message("close_connection failed:\n%s\n", s);
        free(s);
    }
    return bad ? -1 : 0;
}

/* Has PID exited (gone, or a zombie nobody reaped yet)? */
static bool proc_gone(pid_t pid)
{
    if (kill(pid, 0) != 0)
        return true;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    char *s = slurp(path, 0);
    const char *p = strrchr(s, ')');
    bool gone = p == NULL || p[1] == '\0' || p[2] == 'Z' || p[2] == 'X';
    free(s);
    return gone;
}

/* SIGKILL to the node's Erlang VM; the harness restarts it (broker_restore)
 * if the test ends before it does. Returns when the VM is gone. */
static void broker_kill9(void)
{
    pid_t bp = broker_pid();
    if (bp <= 1)
        fail_msg("no broker pid file under %s", g_harness.broker_dir);
    g_harness.broker_stopped = true;
    if (kill(bp, SIGKILL) != 0)
        fail_msg("kill -9 %d: %s", (int)bp, strerror(errno));
    mq_disconnect();
    double end = now_ms() + 10000;
    while (!proc_gone(bp) && now_ms() < end)
        sleep_ms(5);
}

static bool port_free(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_ANY);
    bool ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

/* Read queue Q of node 2 (sorted ids), through the harness pointed there. */
static char **node2_drain(const char *q, size_t *n)
{
    int port1 = g_harness.broker_port;
    mq_disconnect();
    g_harness.broker_port = g_node2.port;
    char **ids = drain_sorted(q, n);
    mq_disconnect();
    g_harness.broker_port = port1;
    return ids;
}

/* The time of day (ms) of the first (LAST: the last) line of the bridge's
 * log since the test began that contains NEEDLE, from its timestamp
 * (2026-11-24T08:26:29.822Z ...); -1 if none. */
static double log_time(const struct bridge *b, const char *needle, bool last)
{
    char *s = slurp(b->log, b->mark);
    char *hit = strstr(s, needle);
    while (last && hit != NULL) {
        char *next = strstr(hit + 1, needle);
        if (next == NULL)
            break;
        hit = next;
    }
    double t = -1;
    if (hit != NULL) {
        char *line = hit;
        while (line > s && line[-1] != '\n')
            line--;
        int hh, mm, ss, ms;
        if (sscanf(line, "%*4d-%*2d-%*2dT%2d:%2d:%2d.%3dZ", &hh, &mm, &ss, &ms) == 4)
            t = ((hh * 60.0 + mm) * 60 + ss) * 1000 + ms;
    }
    free(s);
    return t;
}

/* ------------------------------------------------------------------ */
/* 1. kill -9 of the broker under load                                  */

static void test_kill9_under_load(void **state)
{
    (void)state;
    enum { CLIENTS = 24, CAP = 4000 };
    mq_purge("f.durable");
    monitor_start(g_main.port);
    loads_add(CLIENTS, g_main.port, "/durable", "k9", false, CAP, 1, 50);
    loads_run();
    sleep_ms(2500);

    double t_kill = now_ms();
    broker_kill9();
    double t_dead = now_ms();
    sleep_ms(1000);
    double t_restart = now_ms();
    if (broker_start() != 0)
        fail_msg("tests/broker.sh start after kill -9 failed");
    double t_up = now_ms();
    int last;
    if (!wait_health(g_main.port, 200, scale_ms(20000), &last))
        fail_msg("/healthz %d %g s after the broker came back", last, scale_ms(20000) / 1000.0);
    double t_healthy = now_ms();
    sleep_ms(2000);
    loads_stop();
    monitor_stop();

    struct tally all = tally(NULL, ALL_TIME);
    struct tally before = tally(NULL, -1e300, t_kill);
    struct tally dead = tally(NULL, t_dead, t_restart);
    struct tally after = tally(NULL, t_healthy, 1e300);
    print_message("kill -9: %d requests: before %d x 202 / %d x 503; node dead %d x 202 / %d x "
                  "503; after %d x 202 / %d x 503; slowest %.0f ms; the VM was gone %.0f ms "
                  "after SIGKILL\n",
                  all.n, before.n202, before.n503, dead.n202, dead.n503, after.n202, after.n503,
                  all.slowest_ms, t_dead - t_kill);
    assert_tally_clean(&all, "kill -9 under load");
    if (before.n202 == 0 || after.n202 == 0)
        fail_msg("no 202 before the kill (%d) or after the restart (%d)", before.n202, after.n202);
    if (dead.n503 == 0)
        fail_msg("no 503 while the broker was dead");
    /* No broker, no confirm: a 202 sent then would be a lie. */
    for (int i = 0; i < g_ls.n; i++)
        for (int k = 0; k < g_ls.l[i].n; k++) {
            const struct rec *r = &g_ls.l[i].recs[k];
            if (r->status == 202 && r->t_send > t_dead && r->t_done < t_restart)
                fail_msg("request %s answered 202 while the broker was dead", r->id);
        }
    if (g_mon.pong_failures)
        fail_msg("/pong failed %d times while the broker was down", g_mon.pong_failures);

    /* When were the requests waiting at the kill answered? When came the
     * first 202 after the restart began? */
    double last_waiting = 0, first_back = 1e300;
    for (int i = 0; i < g_ls.n; i++)
        for (int k = 0; k < g_ls.l[i].n; k++) {
            const struct rec *r = &g_ls.l[i].recs[k];
            if (r->t_send < t_kill && r->t_done > t_kill && r->t_done - t_kill > last_waiting)
                last_waiting = r->t_done - t_kill;
            if (r->status == 202 && r->t_send > t_restart && r->t_done < first_back)
                first_back = r->t_done;
        }

    size_t nq;
    char **q = drain_sorted("f.durable", &nq);
    struct qcheck c = check_queue("/durable", q, nq, NULL, 0);
    int dups = sorted_dups(q, nq);
    ids_free(q, nq);
    if (c.lost)
        fail_msg("%d of %d requests answered 202 are not in the durable queue after kill -9 "
                 "(the first: %s)",
                 c.lost, c.n202, c.first_lost);
    result_row("kill -9 of the broker under load",
               "%d keep-alive clients, 1 KB persistent to a durable queue, %d requests: %d "
               "answered 202, %d answered 503, 0 other, 0 unanswered; after the restart "
               "all %d accepted were in the queue: 0 lost, %d duplicates (%d answered 503 "
               "were stored anyway, at-least-once); requests waiting at the kill answered "
               "503 within %.0f ms; the first 202 %.1f s after the restart began (the node "
               "took %.1f s to start), both workers back %.1f s after it was up",
               CLIENTS, all.n, all.n202, all.n503, c.n202, dups, c.stored503, last_waiting,
               (first_back - t_restart) / 1000, (t_up - t_restart) / 1000,
               (t_healthy - t_up) / 1000);
    PASS();
}

/* ------------------------------------------------------------------ */
/* 2. broker stopped and started                                        */

static void test_clean_stop_start(void **state)
{
    (void)state;
    enum { WAITING = 6, CLIENTS = 4 };
    mq_purge("f.durable");
    mq_purge("f.nobody");
    monitor_start(g_main.port);
    loads_add(CLIENTS, g_main.port, "/durable", "stop", false, 3000, 5, 50);
    loads_run();
    waiters_start(WAITING, g_main.port, "/rpc-long", "stopwait");
    sleep_ms(500);

    double t_stop = now_ms();
    if (broker_stop() != 0)
        fail_msg("tests/broker.sh stop failed");
    double t_stopped = now_ms();
    waiters_join();
    double worst = 0;
    for (int i = 0; i < g_nwait; i++) {
        struct waiter *w = &g_wait[i];
        if (w->status != 503 || w->t_done < t_stop)
            fail_msg("rpc request %s waiting when the broker stopped: %d %.0f ms after the stop "
                     "began, expected 503 after it",
                     w->id, w->status, w->t_done - t_stop);
        if (w->t_done - t_stop > worst)
            worst = w->t_done - t_stop;
    }
    if (worst > (t_stopped - t_stop) + scale_ms(1000))
        fail_msg("waiting requests answered %.0f ms after the stop began, the node was down "
                 "after %.0f ms",
                 worst, t_stopped - t_stop);
    int last;
    if (!wait_health(g_main.port, 503, scale_ms(1000), &last))
        fail_msg("/healthz %d with the broker stopped", last);
    double ms503;
    int st = post_status(g_main.port, "/durable", &ms503);
    if (st != 503)
        fail_msg("publish with the broker stopped: %d", st);
    sleep_ms(500);

    if (broker_start() != 0)
        fail_msg("tests/broker.sh start failed");
    double t_up = now_ms();
    if (!wait_health(g_main.port, 200, scale_ms(15000), &last))
        fail_msg("/healthz %d %g s after the broker came back", last, scale_ms(15000) / 1000.0);
    double t_healthy = now_ms();
    double ms202 = wait_status(g_main.port, "/durable", 202, scale_ms(5000));
    if (ms202 < 0)
        fail_msg("no 202 after the broker came back and /healthz said 200");
    sleep_ms(300);
    loads_stop();
    monitor_stop();

    struct tally all = tally(NULL, ALL_TIME);
    struct tally down = tally(NULL, t_stopped, t_up);
    assert_tally_clean(&all, "broker stopped under load");
    if (down.slowest_ms > scale_ms(2000))
        fail_msg("a publish with the broker stopped took %.0f ms", down.slowest_ms);
    expect_durable_kept();
    result_row("broker stopped (rabbitmqctl stop) and started",
               "%d rpc requests waiting answered 503 within %.1f s of the stop command (the "
               "node took %.1f s to stop); publishes while down 503 in at most %.0f ms, "
               "/healthz 503; 202 again %.1f s after the node was up; under load %d "
               "requests: %d x 202, %d x 503, 0 unanswered, 0 lost",
               g_nwait, worst / 1000, (t_stopped - t_stop) / 1000, down.slowest_ms,
               (t_healthy - t_up) / 1000, all.n, all.n202, all.n503);
    PASS();
}

/* ------------------------------------------------------------------ */
/* 3. rabbitmqctl close_connection                                      */

static void test_close_connection(void **state)
{
    (void)state;
    enum { WAITING = 6, CLIENTS = 4 };
    char pids[8][128];
    int n = bridge_conn_pids(pids, 8);
    if (n != 2)
        fail_msg("the broker lists %d connections of the bridge, expected 2 (one per worker)", n);
    mq_purge("f.durable");
    mq_purge("f.nobody");
    monitor_start(g_main.port);
    loads_add(CLIENTS, g_main.port, "/durable", "cc", false, 3000, 5, 50);
    loads_run();
    waiters_start(WAITING, g_main.port, "/rpc-long", "ccwait");
    sleep_ms(500);

    double t0 = now_ms();
    if (close_connections(pids, n) != 0)
        fail_msg("rabbitmqctl close_connection failed");
    double t1 = now_ms();
    waiters_join();
    double worst = 0;
    for (int i = 0; i < g_nwait; i++) {
        struct waiter *w = &g_wait[i];
        if (w->status != 503 || w->t_done < t0)
            fail_msg("rpc request %s waiting when its connection was closed: %d %.0f ms after "
                     "the close began, expected 503 after it",
                     w->id, w->status, w->t_done - t0);
        if (w->t_done - t0 > worst)
            worst = w->t_done - t0;
    }
    if (worst > (t1 - t0) + scale_ms(1000))
        fail_msg("waiting requests answered %.0f ms after close_connection began (it took %.0f "
                 "ms)",
                 worst, t1 - t0);
    if (!monitor_wait_recovered(scale_ms(10000))) {
        /* Back before the monitor looked? Then /healthz is 200 by now. */
        int last;
        if (!wait_health(g_main.port, 200, scale_ms(1000), &last))
            fail_msg("/healthz %d %g s after close_connection", last, scale_ms(10000) / 1000.0);
    }
    if (wait_status(g_main.port, "/durable", 202, scale_ms(5000)) < 0)
        fail_msg("no 202 after the connections were closed");
    sleep_ms(300);
    loads_stop();
    monitor_stop();

    struct tally all = tally(NULL, ALL_TIME);
    assert_tally_clean(&all, "close_connection under load");
    int lost_lines = log_count(&g_main, "lost: closed by broker: 320");
    if (lost_lines != 2)
        fail_msg("the bridge logged %d connections closed by the broker, expected 2", lost_lines);
    char pids2[8][128];
    int n2 = bridge_conn_pids(pids2, 8);
    if (n2 != 2)
        fail_msg("after reconnecting the broker lists %d connections of the bridge", n2);
    for (int i = 0; i < n2; i++)
        for (int k = 0; k < n; k++)
            if (strcmp(pids2[i], pids[k]) == 0)
                fail_msg("connection %s survived close_connection", pids[k]);
    expect_durable_kept();
    result_row("rabbitmqctl close_connection on the bridge's 2 connections",
               "%d rpc requests waiting answered 503 at once (%.0f ms after the command "
               "began, which took %.0f ms); both workers reconnected, /healthz 503 for at "
               "most %.0f ms, then 202; under load %d requests: %d x 202, %d x 503, 0 "
               "unanswered, 0 lost",
               g_nwait, worst, t1 - t0, g_mon.longest_bad_ms, all.n, all.n202, all.n503);
    PASS();
}

/* ------------------------------------------------------------------ */
/* 8. failover to a second node                                         */

static void test_failover(void **state)
{
    (void)state;
    enum { CLIENTS = 4 };
    snprintf(g_node2.dir, sizeof g_node2.dir, "%s/node2", g_harness.tmp);
    snprintf(g_node2.node, sizeof g_node2.node, "faults2-%d@localhost", (int)getpid());
    g_node2.port = 0;
    for (int p = 5850; p < 5950 && !g_node2.port; p++)
        if (p != g_harness.broker_port && port_free(p) && port_free(p + 20000))
            g_node2.port = p;
    if (!g_node2.port)
        fail_msg("no free port for a second node in 5850..5949");
    g_node2.recorded = true;
    double t_n2 = now_ms();
    if (node2_sh("start") != 0)
        fail_msg("could not start node 2");
    print_message("node 2 %s on port %d up in %.1f s\n", g_node2.node, g_node2.port,
                  (now_ms() - t_n2) / 1000);

    char uri[300];
    snprintf(uri, sizeof uri,
             "amqp://guest:guest@127.0.0.1:%d/%%2f,amqp://guest:guest@127.0.0.1:%d/%%2f",
             g_harness.broker_port, g_node2.port);
    const struct fcfg cfg = {.workers = 2, .heartbeat = "5s", .uri = uri};
    mq_purge("f.durable");
    bridge_start(&g_aux, "failover", faults_config, &cfg);
    g_aux.mark = file_size(g_aux.log);
    /* Node 2 is new: its f.durable, empty, exists only once a worker of the
     * bridge declared it there (node2_drain reads it passively). */
    char on2[64];
    snprintf(on2, sizeof on2, "connected to amqp://guest@127.0.0.1:%d/", g_node2.port);

    loads_add(CLIENTS, g_aux.port, "/durable", "fo", false, 4000, 5, 20);
    loads_run();
    monitor_start(g_aux.port);
    sleep_ms(1000);

    /* The workers on node 1 (as this bridge spreads them: worker 0; all of
     * them if the list were tried in order) lose it and go to node 2. */
    g_aux.mark = file_size(g_aux.log);
    double t_kill = now_ms();
    broker_kill9();
    double t_fo = 0, end = now_ms() + scale_ms(15000);
    int nlost = 0;
    while (now_ms() < end) {
        nlost = log_count(&g_aux, "lost:");
        if (nlost > 0 && log_count(&g_aux, on2) >= nlost) {
            t_fo = now_ms();
            break;
        }
        sleep_ms(10);
    }
    if (t_fo == 0)
        fail_msg("%d workers lost node 1, %d connected to node 2 within %g s of its death", nlost,
                 log_count(&g_aux, on2), scale_ms(15000) / 1000.0);
    /* The bridge's own view: from noticing the loss to connected again. */
    double t_lost_log = log_time(&g_aux, "lost:", false);
    double t_conn_log = log_time(&g_aux, on2, true);
    double fo_ms = t_conn_log - t_lost_log;
    if (t_lost_log < 0 || t_conn_log < 0)
        fail_msg("the bridge's log does not show the loss and the reconnect");
    if (fo_ms < 0)
        fo_ms += 86400000; /* midnight */
    if (fo_ms > scale_ms(6000))
        fail_msg("the worker took %.0f ms to fail over (backoff cap 5 s)", fo_ms);
    int last;
    if (!wait_health(g_aux.port, 200, scale_ms(5000), &last))
        fail_msg("/healthz %d after failing over to node 2", last);
    double t_healthy = now_ms();
    if (wait_status(g_aux.port, "/durable", 202, scale_ms(2000)) < 0)
        fail_msg("no 202 after failing over to node 2");
    sleep_ms(1000);
    loads_stop();
    monitor_stop();
    struct tally all = tally(NULL, ALL_TIME);
    struct tally after = tally(NULL, t_healthy, 1e300);
    assert_tally_clean(&all, "failover under load");
    if (after.n202 == 0 || after.n503 != 0)
        fail_msg("after failing over: %d x 202, %d x 503", after.n202, after.n503);
    expect_alive(&g_aux);
    stop_clean(&g_aux, scale_ms(HTTP_TIMEOUT_MS + 10000));

    /* Every 202 is on one node or the other: node 1 back from its kill. */
    if (broker_start() != 0)
        fail_msg("could not restart node 1");
    size_t na, nb;
    char **qa = drain_sorted("f.durable", &na);
    char **qb = node2_drain("f.durable", &nb);
    struct qcheck c = check_queue("/durable", qa, na, qb, nb);
    ids_free(qa, na);
    ids_free(qb, nb);
    if (c.lost)
        fail_msg("%d accepted messages on neither node (the first: %s)", c.lost, c.first_lost);
    node2_stop();
    result_row("first node of the URI list killed (kill -9), second node up",
               "%d worker%s on node 1 connected to node 2 within %.0f ms of noticing the loss "
               "(backoff cap 5 s; the route's queue declared there), /healthz 200 %.2f s "
               "after the kill; under load %d requests: %d x 202, %d x 503, 0 unanswered; "
               "every 202 on node 1 (%zu) or node 2 (%zu), 0 lost",
               nlost, nlost == 1 ? "" : "s", fo_ms, (t_healthy - t_kill) / 1000, all.n, all.n202,
               all.n503, na, nb);
    PASS();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        FAULTS_TEST(test_close_connection),
        FAULTS_TEST(test_clean_stop_start),
        FAULTS_TEST(test_kill9_under_load),
        FAULTS_TEST(test_failover),
    };
    /* FAULTS_ONLY=test_failover (a pattern, * and ? allowed): run just those. */
    return suite_run("ingest-bridge broker faults: loss", &FAULTS_SUITE, tests, "FAULTS_ONLY");
}
