/* test_broker_refusal.c - the broker is up and says no, or says nothing: a
 * queue that refuses publishes (nack), a route whose exchange does not exist
 * (channel closed), the memory alarm (connection blocked), and a queue
 * whose process stops confirming. Each gets a prompt 503 instead of a hang,
 * and the bridge recovers when the broker does. One of the broker fault
 * suites (the shared part: broker_faults.[ch]). */

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

/* ------------------------------------------------------------------ */
/* 5. memory alarm                                                      */

/* How many workers /healthz names as blocked; -1 if it did not answer. */
static int health_blocked(int port, double *ms)
{
    return health_count(port, "broker blocked", ms);
}

static void test_memory_alarm(void **state)
{
    (void)state;
    mq_purge("f.durable");
    mq_purge("f.rpc");
    echo_start("f.rpc", NULL);
    if (post_status(g_main.port, "/durable", NULL) != 202 ||
        post_status(g_main.port, "/rpc", NULL) != 200)
        fail_msg("publish / rpc not 202 / 200 before the alarm");
    /* Publishers all along (not rpc: the echo worker's replies are blocked
     * too, and a reply later than the route's timeout is a legitimate 504). */
    enum { CLIENTS = 4 };
    loads_add(CLIENTS, g_main.port, "/durable", "alarm", false, 4000, 5, 50);
    loads_run();
    sleep_ms(300);

    double t_alarm = now_ms();
    if (broker_alarm(true) != 0)
        fail_msg("could not raise the memory alarm");
    /* Each worker's connection is blocked on its next publish: publish on
     * fresh connections (spread over the workers) until both are. Every
     * answer comes within a second, 202 (the publish that ran into the
     * alarm) or 503. */
    int n = 0, n202 = 0, n503 = 0;
    double slowest = 0, end = now_ms() + scale_ms(15000);
    while (health_blocked(g_main.port, NULL) < 2) {
        if (now_ms() > end)
            fail_msg("/healthz does not show both workers blocked %g s into the alarm (%d "
                     "publishes)",
                     scale_ms(15000) / 1000.0, n);
        double ms;
        int st = post_status(g_main.port, "/durable", &ms);
        n++;
        if (st == 202)
            n202++;
        else if (st == 503)
            n503++;
        else
            fail_msg("publish %d into the memory alarm: %d", n, st);
        if (ms > slowest)
            slowest = ms;
        sleep_ms(20);
    }
    double t_blocked = now_ms();
    /* Blocked: publishes and rpc requests alike 503 at once, on new and on
     * keep-alive connections; /pong and /healthz fast. */
    struct conn c;
    if (conn_open(&c, g_main.port) != 0)
        fail_msg("connect");
    int b503 = 0;
    double bslow = 0, pong_slow = 0, health_slow = 0;
    for (int i = 0; i < 30; i++) {
        const char *path = i % 3 == 2 ? "/rpc" : "/durable";
        struct resp r;
        int rc;
        if (i % 2) {
            size_t len;
            char *raw = fmt_request(&len, "POST", path, XML, NULL, g_doc, g_doc_len);
            rc = exchange(&c, raw, len, &r, false);
            free(raw);
        } else {
            rc = http_req(g_main.port, "POST", path, XML, NULL, g_doc, g_doc_len, &r);
        }
        if (rc != 0)
            fail_msg("%s while blocked: no answer", path);
        if (r.status != 503)
            fail_msg("%s while blocked: %d, expected 503", path, r.status);
        assert_has_header(&r, "Retry-After");
        if (r.ms > bslow)
            bslow = r.ms;
        b503++;
        resp_free(&r);
        rc = http_get(g_main.port, "/pong", &r);
        assert_resp(rc, &r, 200);
        if (r.ms > pong_slow)
            pong_slow = r.ms;
        resp_free(&r);
        double hms;
        if (health_blocked(g_main.port, &hms) != 2)
            fail_msg("/healthz no longer names both workers blocked");
        if (hms > health_slow)
            health_slow = hms;
    }
    conn_close(&c);
    if (bslow > scale_ms(1000) || slowest > scale_ms(1000))
        fail_msg("an answer under the memory alarm took %.0f ms",
                 bslow > slowest ? bslow : slowest);
    if (pong_slow > scale_ms(1000) || health_slow > scale_ms(1000))
        fail_msg("/pong %.0f ms, /healthz %.0f ms under the memory alarm", pong_slow, health_slow);
    struct resp r;
    int rc = http_get(g_main.port, "/healthz", &r);
    assert_resp(rc, &r, 503);
    resp_free(&r);

    double t_lift = now_ms();
    if (broker_alarm(false) != 0)
        fail_msg("could not lift the memory alarm");
    double t_lifted = now_ms();
    int last;
    if (!wait_health(g_main.port, 200, scale_ms(10000), &last))
        fail_msg("/healthz %d %g s after the alarm was lifted", last, scale_ms(10000) / 1000.0);
    if (wait_status(g_main.port, "/durable", 202, scale_ms(5000)) < 0)
        fail_msg("no 202 after the alarm was lifted");
    if (wait_status(g_main.port, "/rpc", 200, scale_ms(5000)) < 0)
        fail_msg("no rpc 200 after the alarm was lifted");
    double t_back = now_ms();
    sleep_ms(300);
    loads_stop();
    struct tally all = tally(NULL, ALL_TIME);
    struct tally during = tally(NULL, t_alarm, t_lift);
    assert_tally_clean(&all, "publishers across the memory alarm");
    if (during.slowest_ms > scale_ms(3000))
        fail_msg("a publish under the memory alarm took %.0f ms", during.slowest_ms);
    struct qcheck qc = expect_durable_kept();
    if (bslow < during.slowest_ms)
        bslow = during.slowest_ms;
    if (bslow < slowest)
        bslow = slowest;
    result_row("memory alarm (connection.blocked)",
               "both workers blocked %.2f s after the alarm command began (on their next "
               "publish); then %d publishes and rpc requests all 503 with Retry-After; every "
               "answer under the alarm in at most %.1f ms, /pong at most %.1f ms, /healthz "
               "503 in at most %.1f ms; publish 202 and rpc 200 again %.2f s after the lifting "
               "command began (it took %.2f s); %d publishers all along: %d requests, %d x 202, %d "
               "x 503, 0 "
               "unanswered, 0 lost (%d answered 503 stored anyway)",
               (t_blocked - t_alarm) / 1000, b503, bslow, pong_slow, health_slow,
               (t_back - t_lift) / 1000, (t_lifted - t_lift) / 1000, CLIENTS, all.n, all.n202,
               all.n503, qc.stored503);
    PASS();
}

/* ------------------------------------------------------------------ */
/* 6. a queue that refuses publishes                                    */

static void test_reject_publish(void **state)
{
    (void)state;
    enum { N = 20 };
    mq_purge("f.other");
    /* One keep-alive connection: one worker, one channel, alternating. */
    struct conn c;
    if (conn_open(&c, g_main.port) != 0)
        fail_msg("connect");
    double slow503 = 0, slow202 = 0;
    char ids[N][40];
    for (int i = 0; i < N; i++) {
        for (int k = 0; k < 2; k++) {
            const char *path = k == 0 ? "/full" : "/other";
            char extra[128];
            snprintf(ids[i], sizeof ids[i], "rej-%d-%d", (int)getpid(), i);
            snprintf(extra, sizeof extra, "X-Request-Id: rej-%d-%d%s\r\n", (int)getpid(), i,
                     k == 0 ? "-full" : "");
            size_t len;
            char *raw = fmt_request(&len, "POST", path, XML, extra, g_doc, g_doc_len);
            struct resp r;
            int rc = exchange(&c, raw, len, &r, false);
            free(raw);
            assert_resp(rc, &r, k == 0 ? 503 : 202);
            if (k == 0 && r.ms > slow503)
                slow503 = r.ms;
            if (k == 1 && r.ms > slow202)
                slow202 = r.ms;
            const char *cn = resp_header(&r, "Connection");
            if (cn && strcasecmp(cn, "close") == 0)
                fail_msg("%s answered with Connection: close", path);
            resp_free(&r);
        }
    }
    conn_close(&c);
    if (slow503 > scale_ms(2000))
        fail_msg("a nacked publish was answered after %.0f ms", slow503);

    /* Then concurrently: nacks and acks interleave on each channel, and
     * come coalesced (multiple); each request must get its own outcome. */
    enum { CLIENTS = 4 };
    loads_add(CLIENTS, g_main.port, "/full", "rejc", false, 4000, 1, 1);
    loads_add(CLIENTS, g_main.port, "/other", "rejc", false, 4000, 1, 1);
    loads_run();
    sleep_ms(1500);
    loads_stop();
    struct tally full = tally("/full", ALL_TIME);
    struct tally other = tally("/other", ALL_TIME);
    assert_tally_clean(&full, "publishes to the full queue");
    assert_tally_clean(&other, "publishes beside the full queue");
    if (full.n503 != full.n || full.n == 0)
        fail_msg("%d of %d publishes to the full queue answered 503", full.n503, full.n);
    if (other.n202 != other.n || other.n == 0)
        fail_msg("%d of %d publishes beside the full queue answered 202", other.n202, other.n);

    int closed = log_count(&g_main, "closed by broker");
    if (closed)
        fail_msg("the bridge's channel or connection was closed %d times by nacks", closed);
    amqp_message_t m;
    if (mq_get("f.full", &m) != 0)
        fail_msg("queue f.full holds a message");
    size_t nq;
    char **q = drain_sorted("f.other", &nq);
    int missing = 0;
    for (int i = 0; i < N; i++)
        missing += !sorted_has(q, nq, ids[i]);
    struct qcheck qc = check_queue("/other", q, nq, NULL, 0);
    ids_free(q, nq);
    if (missing)
        fail_msg("%d messages answered 202 on /other are not in f.other", missing);
    if (qc.lost)
        fail_msg("%d accepted messages lost (the first: %s)", qc.lost, qc.first_lost);
    result_row("queue full (x-max-length, overflow reject-publish)",
               "%d publishes nacked: all answered 503 (at most %.1f ms); each followed on the "
               "same connection and channel by a publish to another route: %d x 202 (at most "
               "%.1f ms); then %d + %d clients concurrently: %d publishes to the full queue "
               "all 503, %d beside them all 202 and in their queue; the channel was never "
               "closed",
               N, slow503, N, slow202, CLIENTS, CLIENTS, full.n, other.n);
    PASS();
}

/* ------------------------------------------------------------------ */
/* 7. a route whose exchange does not exist                             */

static void test_missing_exchange(void **state)
{
    (void)state;
    enum { CLIENTS = 8, BAD = 20 };
    mq_purge("f.durable");
    loads_add(CLIENTS, g_main.port, "/durable", "noex", false, 4000, 2, 20);
    loads_run();
    monitor_start(g_main.port);
    sleep_ms(500);
    double t0 = now_ms();
    int bad503 = 0;
    double bad_slow = 0;
    for (int i = 0; i < BAD; i++) {
        double ms;
        int st = post_status(g_main.port, "/noexch", &ms);
        if (st != 503)
            fail_msg("publish %d to a missing exchange: %d, expected 503", i, st);
        bad503++;
        if (ms > bad_slow)
            bad_slow = ms;
        sleep_ms(100);
    }
    double t1 = now_ms();
    sleep_ms(500);
    loads_stop();
    monitor_stop();
    expect_alive(&g_main);
    /* The connections stay up through channel errors: /healthz must not
     * tell a load balancer otherwise (one bad route would take every
     * instance out). */
    if (g_mon.nbad)
        fail_msg("/healthz was not 200 %d times during the channel errors (the connections "
                 "stayed up)",
                 g_mon.nbad);
    if (g_mon.pong_failures)
        fail_msg("/pong failed %d times during the channel errors", g_mon.pong_failures);
    int last;
    if (!wait_health(g_main.port, 200, scale_ms(2000), &last))
        fail_msg("/healthz %d after the channel errors", last);
    if (wait_status(g_main.port, "/durable", 202, scale_ms(2000)) < 0)
        fail_msg("no 202 after the channel errors");

    struct tally all = tally(NULL, ALL_TIME);
    struct tally during = tally(NULL, t0, t1);
    assert_tally_clean(&all, "publishes beside a missing exchange");
    if (during.n202 == 0)
        fail_msg("no 202 on the other route while the channel errors happened");
    int closes = log_count(&g_main, "closed by broker: 404");
    int reopens = log_count(&g_main, "reopened as channel");
    if (closes == 0 || reopens < closes)
        fail_msg("%d channel closes (404) logged, %d reopens", closes, reopens);
    if (log_count(&g_main, "connection to") != 0)
        fail_msg("a channel error cost a connection");
    expect_durable_kept();
    result_row(
        "route to a missing exchange (channel closed 404)",
        "%d publishes to it: all 503 (at most %.1f ms), %d channel closes, each "
        "reopened without losing the connection; meanwhile %d clients on another "
        "route: %d requests, %d x 202, %d x 503 (%.1f%%: in flight on a closed "
        "channel, or sent while it was reopened), 0 unanswered, 0 lost; /healthz 200 throughout",
        bad503, bad_slow, closes, CLIENTS, during.n, during.n202, during.n503,
        during.n ? 100.0 * during.n503 / during.n : 0.0);
    PASS();
}

/* ------------------------------------------------------------------ */
/* 11. one queue stops confirming (its process suspended)               */

#define STUCK_TIMEOUT_MS 2000 /* [http] timeout of the stuck test's bridge */
#define STUCK_INFLIGHT 8      /* its [amqp] max_inflight; each route's share: 3/4 */

/* Two publish routes on one worker, a small budget and a short timeout:
 * /stuck to f.stuck, whose queue process the test suspends, and /ok to
 * f.ok. A bridge_config_fn; ARG unused. */
static char *stuck_config(int http_port, const void *arg)
{
    (void)arg;
    char *text;
    size_t len;
    FILE *f = xmemstream(&text, &len);
    fprintf(f,
            "; written by tests/faults/test_broker_refusal.c (test_stuck_queue)\n"
            "[http]\n"
            "listen      = 127.0.0.1:%d\n"
            "workers     = 1\n"
            "timeout     = %dms\n"
            "\n"
            "[amqp]\n"
            "uri         = amqp://guest:guest@127.0.0.1:%d/%%2f\n"
            "confirm     = yes\n"
            "max_inflight = %d\n"
            "\n"
            "[log]\n"
            "level       = %s\n"
            "\n"
            "[route stuck]\n"
            "path        = /stuck\n"
            "routing_key = f.stuck\n"
            "queue       = f.stuck\n"
            "\n"
            "[route ok]\n"
            "path        = /ok\n"
            "routing_key = f.ok\n"
            "queue       = f.ok\n",
            http_port, STUCK_TIMEOUT_MS, g_harness.broker_port, STUCK_INFLIGHT,
            g_harness.log_level);
    fclose(f);
    return text;
}

/* Issue 11: a publish that timed out held the confirm tracker's oldest slot,
 * and 2 x max_inflight publishes later every route of the worker got 503,
 * /healthz still 200. Now a queue that stops confirming hurts only its own
 * route: its requests wait out [http] timeout (503) up to the route's share
 * of max_inflight (503 at once beyond it), the other route answers 202
 * meanwhile and after, well past 2 x max_inflight; the late confirms, when
 * the queue resumes, are dropped and counted. */
static void test_stuck_queue(void **state)
{
    (void)state;
    enum {
        STUCK = 12,
        SHARE = STUCK_INFLIGHT - STUCK_INFLIGHT / 4, /* the route's share: 6 */
        OK_DURING = 8,
        OK_AFTER = 40
    };
    bridge_start(&g_aux, "stuck", stuck_config, NULL);
    g_aux.mark = file_size(g_aux.log);
    mq_purge("f.stuck");
    mq_purge("f.ok");
    if (stuck_queue(true) != 0)
        fail_msg("cannot suspend the process of queue f.stuck");

    /* More requests to the stuck route than the whole worker's budget. */
    waiters_start(STUCK, g_aux.port, "/stuck", "stuck");
    /* Until each one waits or was refused (no timing asserted: bounded). */
    double end = now_ms() + scale_ms(5000);
    double waiting = 0, refused = 0;
    do {
        waiting = metric(g_aux.port, "bridge_inflight");
        refused = metric(g_aux.port, "bridge_http_requests_total{route=\"stuck\",code=\"503\"}");
        if (waiting + refused >= STUCK)
            break;
        sleep_ms(20);
    } while (now_ms() < end);
    if (waiting + refused < STUCK)
        fail_msg("%.0f stuck requests waiting and %.0f refused, of %d", waiting, refused, STUCK);
    /* While they wait: the other route has room. */
    int other = 0;
    int ok_during = post_ok(g_aux.port, OK_DURING, "okd", &other);
    waiters_join();
    int stuck503 = 0, stuck_other = 0;
    for (int i = 0; i < g_nwait; i++) {
        if (g_wait[i].status == 503)
            stuck503++;
        else if (stuck_other == 0)
            stuck_other = g_wait[i].status;
    }
    /* After they timed out, their tags still unconfirmed: well over
     * 2 x max_inflight publishes. */
    int other_after = 0;
    int ok_after = post_ok(g_aux.port, OK_AFTER, "oka", &other_after);
    if (ok_after != OK_AFTER)
        fail_msg("%d of %d publishes to the other route answered 202 after the stuck route's "
                 "requests timed out (another status: %d)",
                 ok_after, OK_AFTER, other_after);
    if (ok_during != OK_DURING)
        fail_msg("%d of %d publishes to the other route answered 202 while the stuck route's "
                 "requests waited (another status: %d)",
                 ok_during, OK_DURING, other);
    if (stuck503 != STUCK)
        fail_msg("%d of %d requests to the stuck queue answered 503 (another: %d)", stuck503, STUCK,
                 stuck_other);
    if (waiting != SHARE)
        fail_msg("%.0f requests of the stuck route waited at once: its share is %d", waiting,
                 SHARE);
    int last;
    if (!wait_health(g_aux.port, 200, scale_ms(2000), &last))
        fail_msg("/healthz %d", last);
    double ok503 = metric(g_aux.port, "bridge_http_requests_total{route=\"ok\",code=\"503\"}");
    double ok202 = metric(g_aux.port, "bridge_http_requests_total{route=\"ok\",code=\"202\"}");
    double st503 = metric(g_aux.port, "bridge_http_requests_total{route=\"stuck\",code=\"503\"}");
    if (ok503 != 0 || ok202 != OK_DURING + OK_AFTER || st503 != STUCK)
        fail_msg("/metrics: route ok %.0f x 202 and %.0f x 503, route stuck %.0f x 503", ok202,
                 ok503, st503);

    /* The queue confirms again: the confirms of the timed-out publishes
     * come late, are dropped and counted. */
    double published = metric(g_aux.port, "bridge_amqp_published_total{route=\"stuck\"}");
    if (stuck_queue(false) != 0)
        fail_msg("cannot resume the process of queue f.stuck");
    double late = 0;
    end = now_ms() + scale_ms(10000);
    while ((late = metric(g_aux.port, "bridge_amqp_late_confirms_total")) < published &&
           now_ms() < end)
        sleep_ms(50);
    if (published != SHARE || late != published)
        fail_msg("%.0f publishes to the stuck queue, %.0f late confirms counted", published, late);
    size_t nq;
    char **q = drain_sorted("f.ok", &nq);
    int missing = 0;
    for (int i = 0; i < OK_DURING + OK_AFTER; i++) {
        char id[64];
        snprintf(id, sizeof id, "%s-%d-%d", i < OK_DURING ? "okd" : "oka", (int)getpid(),
                 i < OK_DURING ? i : i - OK_DURING);
        missing += !sorted_has(q, nq, id);
    }
    ids_free(q, nq);
    if (missing)
        fail_msg("%d messages answered 202 are not in f.ok", missing);
    mq_purge("f.stuck");
    expect_alive(&g_aux);
    stop_clean(&g_aux, scale_ms(STUCK_TIMEOUT_MS + 10000));
    result_row("one queue stops confirming (its process suspended), max_inflight 8, timeout 2 s",
               "%d concurrent requests to its route: %.0f waited (the route's share) and "
               "answered 503 after the timeout, %.0f refused 503 at once; meanwhile %d and "
               "after %d publishes to another route on the same worker and channel: all 202 "
               "and in their queue (503 after 2 x max_inflight before the fix), 0 x 503 for "
               "it in /metrics, /healthz 200; on resume %.0f late confirms dropped and counted",
               STUCK, waiting, refused, ok_during, ok_after, late);
    PASS();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        FAULTS_TEST(test_reject_publish),
        FAULTS_TEST(test_missing_exchange),
        FAULTS_TEST(test_memory_alarm),
        FAULTS_TEST(test_stuck_queue),
    };
    /* FAULTS_ONLY=test_failover (a pattern, * and ? allowed): run just those. */
    return suite_run("ingest-bridge broker faults: refusal", &FAULTS_SUITE, tests, "FAULTS_ONLY");
}
