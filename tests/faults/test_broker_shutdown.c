/* test_broker_shutdown.c - SIGTERM while the broker is a problem: under
 * load, with publishes waiting for room toward a blocked or frozen broker,
 * and with a large body half written. The bridge answers what it holds,
 * within its drain bound, and exits 0. One of the broker fault suites (the
 * shared part: broker_faults.[ch]). */

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
/* 9. SIGTERM under load                                                */

static void test_sigterm_under_load(void **state)
{
    (void)state;
    enum { PUB = 12, RPC = 8 };
    static const struct fcfg cfg = {.workers = 2, .heartbeat = "5s"};
    mq_purge("f.durable");
    mq_purge("f.rpc");
    echo_start("f.rpc", NULL);
    bridge_start(&g_aux, "sigterm", faults_config, &cfg);
    g_aux.mark = file_size(g_aux.log);
    loads_add(PUB, g_aux.port, "/durable", "term", false, 4000, 2, 20);
    loads_add(RPC, g_aux.port, "/rpc", "termrpc", true, 4000, 2, 20);
    loads_run();
    sleep_ms(1500);

    /* From now on a client whose connection ends opens no other (the bridge
     * stopped accepting); each finishes what it sent. */
    atomic_store(&g_ls.ctl.no_reconnect, 1);
    double t_term = now_ms();
    kill(g_aux.pid, SIGTERM);
    /* drain bound: [http] timeout (10 s) > rpc timeout (5 s) */
    int bound = HTTP_TIMEOUT_MS;
    int st;
    if (!wait_exit(g_aux.pid, scale_ms(bound + 5000), &st))
        fail_msg("bridge still running %g s after SIGTERM", scale_ms(bound + 5000) / 1000.0);
    double t_exit = now_ms();
    g_aux.pid = 0;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        char d[64];
        dump_report(&g_aux);
        fail_msg("bridge after SIGTERM: %s, expected exit 0", describe_status(st, d, sizeof d));
    }
    loads_stop();

    /* A request a client only sent once the bridge had been closing for a
     * while (its thread descheduled between two requests) may find the
     * connection closed under it: never read, never accepted. Any other
     * request must have an answer. */
    double grace = t_term + 200;
    int late = 0;
    for (int i = 0; i < g_ls.n; i++)
        for (int k = 0; k < g_ls.l[i].n; k++) {
            struct rec *r = &g_ls.l[i].recs[k];
            if (r->status < 0 && r->t_send >= grace) {
                late++;
                r->late = true;
            }
        }
    struct tally pub = tally("/durable", ALL_TIME);
    struct tally rpc = tally("/rpc", ALL_TIME);
    assert_tally_clean(&pub, "publishes across SIGTERM");
    assert_tally_clean(&rpc, "rpc requests across SIGTERM");
    if (pub.n202 == 0 || rpc.n200 == 0)
        fail_msg("no 202 (%d) or rpc 200 (%d) before SIGTERM", pub.n202, rpc.n200);
    size_t nq;
    char **q = drain_sorted("f.durable", &nq);
    struct qcheck c = check_queue("/durable", q, nq, NULL, 0);
    /* The late ones were never read: never published either. */
    int late_published = 0;
    for (int i = 0; i < g_ls.n; i++)
        for (int k = 0; k < g_ls.l[i].n; k++) {
            const struct rec *r = &g_ls.l[i].recs[k];
            if (r->late && !g_ls.l[i].rpc && sorted_has(q, nq, r->id))
                late_published++;
        }
    ids_free(q, nq);
    if (c.lost)
        fail_msg("%d accepted messages lost across SIGTERM (the first: %s)", c.lost, c.first_lost);
    if (late_published)
        fail_msg("%d requests were published but got no answer", late_published);
    /* In flight at the signal, or sent after it on a connection still
     * open: served (202 / 200), the answer closing the connection. */
    int fly_ok = 0, fly_503 = 0, post_503 = 0, post_ok = 0;
    for (int i = 0; i < g_ls.n; i++)
        for (int k = 0; k < g_ls.l[i].n; k++) {
            const struct rec *r = &g_ls.l[i].recs[k];
            bool ok = r->status == 202 || r->status == 200;
            if (r->late || r->t_done < t_term)
                continue;
            if (r->t_send < t_term) {
                fly_ok += ok;
                fly_503 += r->status == 503;
            } else {
                post_ok += ok;
                post_503 += r->status == 503;
            }
        }
    if (log_count(&g_aux, "stopping:") == 0)
        fail_msg("the bridge did not log its drain");
    if (fly_503 || post_503)
        fail_msg("%d requests in flight at SIGTERM and %d sent after it were answered 503: a "
                 "draining bridge serves what its open connections send",
                 fly_503, post_503);
    result_row("SIGTERM under load (publish and rpc)",
               "%d clients (%d publish, %d rpc with the echo worker): %d publishes (%d x 202, "
               "%d x 503) and %d rpc requests (%d x 200, %d x 503), 0 unanswered; in flight "
               "at the signal: %d answered 202/200, %d answered 503; sent after it on an open "
               "connection: %d x 202/200 (Connection: close), %d x 503; %d sent after the "
               "bridge had closed its connections; every 202 in the queue; exit 0 %.2f s after "
               "SIGTERM (bound %d s)",
               PUB + RPC, PUB, RPC, pub.n, pub.n202, pub.n503, rpc.n, rpc.n200, rpc.n503, fly_ok,
               fly_503, post_ok, post_503, late, (t_exit - t_term) / 1000, bound / 1000);
    PASS();
}

/* The broker freezes while 160 x 60 KB publishes arrive: the socket toward
 * it fills and the rest wait in the worker's backlog. Then SIGTERM: the
 * bridge stops taking requests but not the ones waiting. THAW: the broker
 * reads again a second later, the backlog drains within the drain bound,
 * and each request is answered 202 (its message in the queue). Otherwise it
 * stays frozen: each request is answered 503 by its timer within the bound,
 * and the bridge exits 0 (its channel close bounded by the rpc timeout).
 * Either way every request has exactly one answer before the exit, and
 * nothing more arrives on its connection. */
static void sigterm_waiting_for_room(bool thaw)
{
    enum { N = 160, BODY = 60 * 1024 };
    static const struct fcfg cfg = {.workers = 1, .heartbeat = "30s"};
    bridge_start(&g_aux, "sigterm-room", faults_config, &cfg);
    g_aux.mark = file_size(g_aux.log);
    mq_purge("f.durable");
    /* A 60 KB document: one element holding text. */
    const int off = BODY - 5;
    char *doc = big_doc((size_t)off, 'y');
    double ms;
    if (post_status(g_aux.port, "/durable", &ms) != 202)
        fail_msg("no 202 before the freeze");

    freeze_fully(scale_ms(5000));
    static struct once_post posts[N];
    for (int i = 0; i < N; i++) {
        posts[i] = (struct once_post){
            .port = g_aux.port, .path = "/durable", .doc = doc, .len = (size_t)off};
        snprintf(posts[i].id, sizeof posts[i].id, "tr-%d-%d", (int)getpid(), i);
        if (pthread_create(&posts[i].th, NULL, once_post_thread, &posts[i]) != 0)
            abort();
    }
    /* Until the socket is full and requests wait for room. */
    (void)log_wait(&g_aux, "not reading fast enough", scale_ms(5000));
    sleep_ms(300); /* let the rest of the 160 arrive */
    int waited = log_count(&g_aux, "not reading fast enough");
    double t_term = now_ms();
    kill(g_aux.pid, SIGTERM);
    sleep_ms(1000);
    int answered_frozen = 0;
    for (int i = 0; i < N; i++)
        answered_frozen += posts[i].done > 0;
    if (thaw && broker_thaw() != 0)
        fail_msg("kill -CONT failed");
    int st;
    /* The drain bound, and when frozen the channel close's rpc timeout. */
    int bound = HTTP_TIMEOUT_MS + (thaw ? 0 : 5000);
    bool exited = wait_exit(g_aux.pid, scale_ms(bound + 5000), &st);
    double t_exit = now_ms();
    if (!thaw && broker_thaw() != 0)
        fail_msg("kill -CONT failed");
    if (!exited)
        fail_msg("bridge still running %g s after SIGTERM", scale_ms(bound + 5000) / 1000.0);
    g_aux.pid = 0;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        char d[64];
        fail_msg("bridge after SIGTERM: %s, expected exit 0", describe_status(st, d, sizeof d));
    }
    int want = thaw ? 202 : 503;
    int nwant = 0, other = 0, first_other = 0, twice = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(posts[i].th, NULL);
        if (posts[i].status == want)
            nwant++;
        else if (other++ == 0)
            first_other = posts[i].status;
        if (posts[i].after == 2)
            twice++;
    }
    free(doc);
    if (waited == 0)
        fail_msg("the socket toward the frozen broker never filled: nothing waited for room");
    if (twice)
        fail_msg("%d requests got more than one answer", twice);
    if (other)
        fail_msg("%d of %d publishes waiting at SIGTERM were not %d (the first: %d)", other, N,
                 want, first_other);
    if (!thaw) {
        result_row("SIGTERM while 160 x 60 KB publishes wait for room toward a broker frozen "
                   "(kill -STOP) until the bridge has exited",
                   "each answered 503 exactly once by its timeout ([http] timeout 10 s; no "
                   "second answer on any connection), %d before the bridge exited 0, %.1f s "
                   "after SIGTERM (bound: drain %d s + channel close 5 s)",
                   nwant, (t_exit - t_term) / 1000, HTTP_TIMEOUT_MS / 1000);
        PASS();
        return;
    }
    if (log_count(&g_aux, "reads again") == 0)
        fail_msg("the bridge did not log that the broker reads again");
    expect_queued("f.durable", posts[0].id, sizeof posts[0], N);
    result_row("SIGTERM while 160 x 60 KB publishes wait for room toward a frozen broker "
               "(kill -STOP; it reads again 1 s later)",
               "the bridge stopped accepting but kept the waiting ones: %d answered while "
               "frozen, then the backlog drained; %d of %d answered 202 exactly once (no "
               "second answer on any connection), all in the queue; exit 0 %.1f s after "
               "SIGTERM (bound %d s)",
               answered_frozen, nwant, N, (t_exit - t_term) / 1000, bound / 1000);
    PASS();
}

static void test_sigterm_waiting_for_room(void **state)
{
    (void)state;
    sigterm_waiting_for_room(true);
}

static void test_sigterm_waiting_frozen(void **state)
{
    (void)state;
    sigterm_waiting_for_room(false);
}

/* SIGTERM while a 6 MiB body is half written to a broker frozen until the
 * bridge has exited: the worker still answers (a pong), the request gets
 * one 503 when its timeout runs out, and the bridge exits 0 within the
 * drain bound, dropping the connection rather than closing the channel
 * between the frames of that message. */
static void test_sigterm_half_written(void **state)
{
    (void)state;
    enum { BIG = 6 << 20 };
    static const struct fcfg cfg = {.workers = 1, .heartbeat = "30s", .max_body = "8MiB"};
    bridge_start(&g_aux, "half", faults_config, &cfg);
    g_aux.mark = file_size(g_aux.log);
    double ms;
    if (post_status(g_aux.port, "/durable", &ms) != 202)
        fail_msg("no 202 before the freeze");
    char *doc = big_doc(BIG, 'h');
    freeze_fully(scale_ms(5000));
    struct once_post big = {.port = g_aux.port, .path = "/durable", .doc = doc, .len = BIG};
    snprintf(big.id, sizeof big.id, "half-%d", (int)getpid());
    if (pthread_create(&big.th, NULL, once_post_thread, &big) != 0)
        abort();
    sleep_ms(500);
    struct resp r;
    double t = now_ms();
    int rc = http_get(g_aux.port, "/pong", &r);
    double pong_ms = now_ms() - t;
    int pong = rc == 0 ? r.status : -1;
    if (rc == 0)
        resp_free(&r);
    double t_term = now_ms();
    kill(g_aux.pid, SIGTERM);
    int bound = HTTP_TIMEOUT_MS;
    int st;
    bool exited = wait_exit(g_aux.pid, scale_ms(bound + 5000), &st);
    double t_exit = now_ms();
    if (broker_thaw() != 0)
        fail_msg("kill -CONT failed");
    if (!exited)
        fail_msg("bridge still running %g s after SIGTERM", scale_ms(bound + 5000) / 1000.0);
    g_aux.pid = 0;
    pthread_join(big.th, NULL);
    free(doc);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        char d[64];
        fail_msg("bridge after SIGTERM: %s, expected exit 0", describe_status(st, d, sizeof d));
    }
    if (pong != 200)
        fail_msg("no pong while the body was half written (%d after %.0f ms)", pong, pong_ms);
    if (big.status != 503 || big.after == 2)
        fail_msg("the half-written publish: %d%s, expected one 503", big.status,
                 big.after == 2 ? " and a second answer" : "");
    /* Dropped by the close ("bytes short"), or, the drain bound and the
     * body's own deadline both being [http] timeout, a moment before by that
     * deadline ("was not taken within"): once, and either way the connection
     * is dropped, never closed with a channel.close between its frames. */
    int dropped = log_count(&g_aux, "bytes short") + log_count(&g_aux, "was not taken within");
    if (dropped != 1)
        fail_msg("the bridge logged %d drops of the half-written body, expected 1", dropped);
    result_row("SIGTERM while a 6 MiB body is half written to a broker frozen until the bridge "
               "has exited (one worker)",
               "pong on that worker in %.0f ms meanwhile; the publish answered 503 once when "
               "its timeout ran out; connection dropped instead of a channel close between the "
               "message's frames; exit 0 %.1f s after SIGTERM (bound %d s)",
               pong_ms, (t_exit - t_term) / 1000, bound / 1000);
    PASS();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        FAULTS_TEST(test_sigterm_under_load),
        FAULTS_TEST(test_sigterm_waiting_for_room),
        FAULTS_TEST(test_sigterm_waiting_frozen),
        FAULTS_TEST(test_sigterm_half_written),
    };
    /* FAULTS_ONLY=test_failover (a pattern, * and ? allowed): run just those. */
    return suite_run("ingest-bridge broker faults: shutdown", &FAULTS_SUITE, tests, "FAULTS_ONLY");
}
