/* test_broker_spool.c - the local spool ([spool], route spool = yes) while
 * the broker is away: stopped for 20 s under load, every request is
 * answered 202 and every 202 reaches the queue once it is back; a bridge
 * killed with -9 while spooling replays at its next start, a torn record
 * at the end of the spool included; a full filesystem and a full spool
 * answer 503, and no 202 is false. One of the broker fault suites (the
 * shared part: broker_faults.[ch]). */

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "broker_faults.h"

/* A spooling bridge: the suite's routes and /spooled (queue f.spooled). */
struct spool_cfg {
    char dir[400];
    const char *max_size;
};

static char *spool_config(int http_port, const void *arg)
{
    const struct spool_cfg *sc = arg;
    static const struct fcfg base = {.workers = 2, .heartbeat = "5s"};
    char *text = faults_config(http_port, &base), *out = NULL;
    if (asprintf(&out,
                 "%s\n[spool]\ndir = %s\nmax_size = %s\n\n"
                 "[route spooled]\npath = /spooled\nrouting_key = f.spooled\n"
                 "queue = f.spooled\nspool = yes\n",
                 text, sc->dir, sc->max_size) < 0)
        abort();
    free(text);
    return out;
}

static struct spool_cfg g_sc;

static void spool_begin(const char *name, const char *max_size)
{
    snprintf(g_sc.dir, sizeof g_sc.dir, "%s/%s.spool", g_harness.tmp, name);
    g_sc.max_size = max_size;
    bridge_start(&g_aux, name, spool_config, &g_sc);
    g_aux.mark = file_size(g_aux.log);
    mq_purge("f.spooled");
}

/* bridge_spool_NAME from /metrics; -1 if it cannot be read. */
static double spool_metric(const char *name)
{
    struct resp r;
    double v = -1;
    if (bridge_get(&g_aux, "/metrics", &r) == 0 && r.status == 200 && r.body != NULL) {
        char key[80];
        snprintf(key, sizeof key, "\nbridge_spool_%s ", name);
        const char *p = strstr(r.body, key);
        if (p != NULL)
            v = strtod(p + strlen(key), NULL);
    }
    resp_free(&r);
    return v;
}

/* Wait until the spool holds nothing (replayed, confirmed); false after MS. */
static bool spool_drained(int ms)
{
    double end = now_ms() + ms;
    while (now_ms() < end) {
        if (spool_metric("messages") == 0)
            return true;
        sleep_ms(100);
    }
    return false;
}

/* Once the spool is empty again: how many of the N IDS (those whose ST is
 * 202; ST NULL: all) are not in f.spooled (read and emptied). */
static int missing_after_replay(char ids[][48], const int *st, int n)
{
    if (!spool_drained(scale_ms(60000)))
        fail_msg("the spool still holds %g messages", spool_metric("messages"));
    size_t nq;
    char **q = drain_sorted("f.spooled", &nq);
    int missing = 0;
    for (int i = 0; i < n; i++)
        missing += (st == NULL || st[i] == 202) && !sorted_has(q, nq, ids[i]);
    ids_free(q, nq);
    return missing;
}

/* The broker stopped for 20 s under load: every request 202, and after the
 * restart every 202's id in the queue. */
static void test_spool_broker_stopped(void **state)
{
    (void)state;
    enum { CLIENTS = 8 };
    spool_begin("spoolstop", "256MiB");
    loads_add(CLIENTS, g_aux.port, "/spooled", "sp", false, 20000, 5, 20);
    loads_run();
    sleep_ms(1500);
    double t_stop = now_ms();
    if (broker_stop() != 0)
        fail_msg("tests/broker.sh stop failed");
    sleep_ms(20000);
    double spooled_at_peak = spool_metric("messages");
    if (broker_start() != 0)
        fail_msg("tests/broker.sh start failed");
    double t_up = now_ms();
    sleep_ms(3000);
    loads_stop();
    if (!spool_drained(scale_ms(60000)))
        fail_msg("the spool still holds %g messages 60 s after the broker came back",
                 spool_metric("messages"));
    double t_drained = now_ms();
    struct tally t = tally("/spooled", ALL_TIME);
    struct tally down = tally("/spooled", t_stop, t_up);
    assert_tally_clean(&t, "publishes to a spooling route across a broker stop");
    if (t.n503 || t.nother || t.nconnfail)
        fail_msg("%d x 503, %d other answers, %d refused connects: the spool route must answer "
                 "202",
                 t.n503, t.nother, t.nconnfail);
    if (down.n202 == 0)
        fail_msg("no 202 while the broker was stopped");
    size_t nq;
    char **q = drain_sorted("f.spooled", &nq);
    struct qcheck c = check_queue("/spooled", q, nq, NULL, 0);
    ids_free(q, nq);
    if (c.lost)
        fail_msg("%d of %d accepted messages are not in the queue (the first: %s)", c.lost, c.n202,
                 c.first_lost);
    double appended = spool_metric("appended_total");
    if (appended <= 0)
        fail_msg("bridge_spool_appended_total is %g: nothing was spooled", appended);
    result_row("broker stopped for 20 s under load, route with spool = yes",
               "%d clients: %d requests, all 202 (%d while the broker was down, %.0f of them "
               "spooled; %.0f held at once), 0 x 503, 0 unanswered; every 202 in the queue "
               "(%zu messages, %d more than the 202s: at least once); the spool empty %.1f s "
               "after the broker was back",
               CLIENTS, t.n, down.n202, appended, spooled_at_peak, nq, (int)nq - c.n202,
               (t_drained - t_up) / 1000);
    PASS();
}

/* The segment file in DIR (the newest), into PATH; false if none. */
static bool last_segment(const char *dir, char *path, size_t n)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls %s/spool-*.seg 2>/dev/null | tail -1", dir);
    FILE *p = popen(cmd, "r");
    bool ok = p != NULL && fgets(path, (int)n, p) != NULL;
    if (p != NULL)
        pclose(p);
    if (ok)
        path[strcspn(path, "\n")] = '\0';
    return ok && path[0] != '\0';
}

/* kill -9 while spooling, a torn record appended to the spool as a crash
 * would leave it, then a new bridge on the same spool: every 202 replayed. */
static void test_spool_kill9_and_torn(void **state)
{
    (void)state;
    enum { N = 300 };
    spool_begin("spoolkill", "256MiB");
    if (broker_stop() != 0)
        fail_msg("tests/broker.sh stop failed");
    int n202 = 0;
    static char ids[N][48];
    for (int i = 0; i < N; i++) {
        snprintf(ids[i], sizeof ids[i], "kill9-%d-%d", (int)getpid(), i);
        char extra[96];
        snprintf(extra, sizeof extra, "X-Request-Id: %.47s\r\n", ids[i]);
        struct resp r;
        if (http_post(g_aux.port, "/spooled", XML, extra, g_doc, &r) == 0 && r.status == 202) {
            if (resp_header(&r, "X-Spooled") == NULL)
                fail_msg("a 202 with the broker stopped but no X-Spooled header");
            n202++;
        } else {
            fail_msg("request %d with the broker stopped: %d, expected 202 from the spool", i,
                     r.status);
        }
        resp_free(&r);
    }
    kill(g_aux.pid, SIGKILL);
    int st;
    (void)wait_exit(g_aux.pid, scale_ms(5000), &st);
    g_aux.pid = 0;
    /* A crash in the middle of a write: half a header at the end. */
    char seg[600];
    if (!last_segment(g_sc.dir, seg, sizeof seg))
        fail_msg("no spool segment in %s", g_sc.dir);
    FILE *f = fopen(seg, "a");
    fwrite("IBSP\x40\x00", 1, 6, f);
    fclose(f);
    if (broker_start() != 0)
        fail_msg("tests/broker.sh start failed");
    bridge_start(&g_aux, "spoolkill2", spool_config, &g_sc);
    int lost = missing_after_replay(ids, NULL, N);
    if (lost)
        fail_msg("%d of %d spooled 202s missing after kill -9 and a restart", lost, n202);
    if (log_count(&g_aux, "torn record") == 0)
        fail_msg("the restarted bridge did not report the torn record");
    result_row("kill -9 of the bridge while spooling (broker stopped), a torn record appended, "
               "then a new bridge on the same spool",
               "%d of %d requests 202 from the spool; the torn record cut off at start; all "
               "%d in the queue after the restart (lost 0)",
               n202, N, n202);
    PASS();
}

/* A filesystem of 1 MiB under a spool allowed 64 MiB: the disk fills first.
 * Every 202 must be in the queue later; past the disk, 503. */
static void test_spool_disk_full(void **state)
{
    (void)state;
    char mnt[300];
    snprintf(mnt, sizeof mnt, "%s/smallfs", g_harness.tmp);
    if (mkdir(mnt, 0700) != 0 && errno != EEXIST)
        fail_msg("mkdir %s: %s", mnt, strerror(errno));
    if (mount("tmpfs", mnt, "tmpfs", 0, "size=1m") != 0)
        fail_msg("mount -t tmpfs %s (the test needs root): %s", mnt, strerror(errno));
    snprintf(g_sc.dir, sizeof g_sc.dir, "%s/spool", mnt);
    g_sc.max_size = "64MiB";
    bridge_start(&g_aux, "spoolfull", spool_config, &g_sc);
    g_aux.mark = file_size(g_aux.log);
    mq_purge("f.spooled");
    if (broker_stop() != 0)
        fail_msg("tests/broker.sh stop failed");
    enum { N = 60 };
    char *doc = big_doc(40 * 1024, 'x');
    static char ids[N][48];
    int st[N];
    int n202 = 0, n503 = 0;
    for (int i = 0; i < N; i++) {
        snprintf(ids[i], sizeof ids[i], "full-%d-%d", (int)getpid(), i);
        char extra[96];
        snprintf(extra, sizeof extra, "X-Request-Id: %.47s\r\n", ids[i]);
        struct resp r;
        st[i] = http_post(g_aux.port, "/spooled", XML, extra, doc, &r) == 0 ? r.status : -1;
        resp_free(&r);
        n202 += st[i] == 202;
        n503 += st[i] == 503;
        if (st[i] != 202 && st[i] != 503)
            fail_msg("request %d: %d, expected 202 or 503", i, st[i]);
    }
    free(doc);
    if (n503 == 0 || n202 == 0)
        fail_msg("%d x 202, %d x 503 on a 1 MiB filesystem: expected both", n202, n503);
    if (broker_start() != 0)
        fail_msg("tests/broker.sh start failed");
    int false202 = missing_after_replay(ids, st, N);
    bridge_stop(&g_aux, scale_ms(20000));
    if (umount(mnt) != 0)
        fail_msg("umount %s: %s", mnt, strerror(errno));
    if (false202)
        fail_msg("%d requests answered 202 are not in the queue", false202);
    result_row("spool on a 1 MiB filesystem (ENOSPC), broker stopped, 60 x 40 KB",
               "%d x 202 then 503 for the other %d (disk full); every 202 in the queue after "
               "the broker came back: 0 false 202",
               n202, n503);
    PASS();
}

/* [spool] max_size reached: 503, the spool keeps what it has. */
static void test_spool_cap(void **state)
{
    (void)state;
    spool_begin("spoolcap", "1MiB");
    if (broker_stop() != 0)
        fail_msg("tests/broker.sh stop failed");
    char *doc = big_doc(40 * 1024, 'y');
    int n202 = 0, n503 = 0;
    for (int i = 0; i < 40; i++) {
        struct resp r;
        int s = http_post(g_aux.port, "/spooled", XML, NULL, doc, &r) == 0 ? r.status : -1;
        if (s == 503 && (r.body == NULL || strstr(r.body, "spool is full") == NULL))
            fail_msg("a 503 past the cap does not say the spool is full: %s", r.body ? r.body : "");
        resp_free(&r);
        n202 += s == 202;
        n503 += s == 503;
    }
    free(doc);
    /* 1 MiB holds 25 records of 40 KB and their headers at most. */
    if (n202 == 0 || n202 > 26 || n503 == 0)
        fail_msg("%d x 202 and %d x 503 under a 1 MiB cap", n202, n503);
    if (spool_metric("refused_total") < n503)
        fail_msg("bridge_spool_refused_total does not count the %d refusals", n503);
    if (broker_start() != 0)
        fail_msg("tests/broker.sh start failed");
    if (!spool_drained(scale_ms(60000)))
        fail_msg("the spool still holds %g messages", spool_metric("messages"));
    size_t nq;
    char **q = drain_sorted("f.spooled", &nq);
    ids_free(q, nq);
    if ((int)nq < n202)
        fail_msg("%zu messages in the queue, %d were answered 202", nq, n202);
    result_row("[spool] max_size = 1MiB reached, broker stopped, 40 x 40 KB",
               "%d x 202, then 503 \"the spool is full\" for %d; all %d in the queue once the "
               "broker was back",
               n202, n503, n202);
    PASS();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        FAULTS_TEST(test_spool_broker_stopped),
        FAULTS_TEST(test_spool_kill9_and_torn),
        FAULTS_TEST(test_spool_disk_full),
        FAULTS_TEST(test_spool_cap),
    };
    return suite_run("ingest-bridge broker faults: the local spool", &FAULTS_SUITE, tests,
                     "FAULTS_ONLY");
}
