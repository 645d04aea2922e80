/* test_broker_stall.c - a broker that stops reading: frozen past the
 * heartbeat, frozen for a while under load (backpressure), and a publish
 * larger than the socket's room toward a frozen or stalled broker, over
 * plain AMQP and TLS. Other workers and /pong keep answering; the stuck
 * requests get 503 once. One of the broker fault suites (the shared part:
 * broker_faults.[ch]). */

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
/* 4. kill -STOP with a short heartbeat                                  */

static void test_freeze_heartbeat(void **state)
{
    (void)state;
    enum { WAITING = 4, CLIENTS = 8 };
    static const struct fcfg cfg = {.workers = 2, .heartbeat = "2s", .rpclong = true};
    bridge_start(&g_aux, "freeze", faults_config, &cfg);
    g_aux.mark = file_size(g_aux.log);
    mq_purge("f.durable");
    mq_purge("f.nobody");
    /* Idle for more than two heartbeats: the bridge's timer keeps the
     * connections alive (the broker would close them otherwise). */
    sleep_ms(4500);
    if (log_count(&g_aux, "lost") != 0)
        fail_msg("an idle connection was lost with heartbeat 2 s");
    double ms;
    if (post_status(g_aux.port, "/durable", &ms) != 202)
        fail_msg("no 202 before the freeze");
    monitor_start(g_aux.port);
    loads_add(CLIENTS, g_aux.port, "/durable", "frz", false, 4000, 5, 50);
    loads_run();
    sleep_ms(500);

    if (broker_freeze() != 0)
        fail_msg("kill -STOP of the broker failed");
    double t_freeze = now_ms();
    waiters_start(WAITING, g_aux.port, "/durable", "frozen");
    waiters_start(WAITING, g_aux.port, "/rpc-long", "frozenrpc");
    waiters_join();
    double worst = 0;
    for (int i = 0; i < g_nwait; i++) {
        struct waiter *w = &g_wait[i];
        if (w->status != 503)
            fail_msg("request %s on %s with the broker frozen: %d, expected 503", w->id, w->path,
                     w->status);
        if (w->t_done - t_freeze > worst)
            worst = w->t_done - t_freeze;
    }
    if (worst > scale_ms(8000))
        fail_msg("publishes waiting on the frozen broker answered after %.0f ms (heartbeat 2 s)",
                 worst);
    /* Each connection notices on its own (heartbeats have their own
     * phase): wait until /healthz names both workers down. */
    double end = now_ms() + scale_ms(8000);
    while (health_count(g_aux.port, ": broker ", NULL) < 2) {
        if (now_ms() > end)
            fail_msg("/healthz does not name both workers down %.0f ms into the freeze",
                     now_ms() - t_freeze);
        sleep_ms(20);
    }
    double t_both = now_ms();
    /* Noticed: new requests are refused at once. */
    double ms503 = 0;
    for (int i = 0; i < 5; i++) {
        int st = post_status(g_aux.port, "/durable", &ms);
        if (st != 503)
            fail_msg("publish %d with the broker frozen (noticed): %d", i, st);
        if (ms > ms503)
            ms503 = ms;
    }
    if (ms503 > scale_ms(1000))
        fail_msg("a 503 with the broker frozen took %.0f ms", ms503);
    double pong_worst = g_mon.slowest_pong_ms;
    int pong_bad = g_mon.pong_failures;

    if (broker_thaw() != 0)
        fail_msg("kill -CONT failed");
    double t_thaw = now_ms();
    int last;
    if (!wait_health(g_aux.port, 200, scale_ms(30000), &last))
        fail_msg("/healthz %d %g s after kill -CONT", last, scale_ms(30000) / 1000.0);
    double ms202 = wait_status(g_aux.port, "/durable", 202, scale_ms(5000));
    if (ms202 < 0)
        fail_msg("no 202 after kill -CONT");
    double t_back = now_ms();
    sleep_ms(300);
    loads_stop();
    monitor_stop();
    struct tally all = tally(NULL, ALL_TIME);
    struct tally frozen = tally(NULL, t_freeze, t_thaw);
    assert_tally_clean(&all, "publishes across the freeze");
    if (frozen.n202)
        fail_msg("%d publishes sent to the frozen broker answered 202", frozen.n202);
    if (frozen.slowest_ms > scale_ms(8000))
        fail_msg("a publish to the frozen broker waited %.0f ms", frozen.slowest_ms);
    expect_durable_kept();
    if (pong_bad)
        fail_msg("/pong failed %d times with the broker frozen", pong_bad);
    if (pong_worst > scale_ms(1000))
        fail_msg("/pong took %.0f ms with the broker frozen", pong_worst);
    if (log_count(&g_aux, "heartbeat") == 0)
        print_message("note: the bridge did not name the heartbeat in its log\n");
    expect_alive(&g_aux);
    stop_clean(&g_aux, scale_ms(RPC_LONG_TIMEOUT_MS + 10000));
    result_row("broker frozen (kill -STOP), heartbeat 2 s",
               "idle connections kept by heartbeats; %d publish and rpc requests waiting "
               "answered 503 within %.1f s of the freeze (both connections given up after "
               "%.1f s); then /healthz 503 and new requests 503 in "
               "at most %.1f ms; /pong at most %.0f ms throughout; 202 again %.1f s after kill "
               "-CONT; %d clients meanwhile: %d requests, %d x 202, %d x 503 (none slower "
               "than %.1f s), 0 unanswered, 0 lost",
               g_nwait, worst / 1000, (t_both - t_freeze) / 1000, ms503, pong_worst,
               (t_back - t_thaw) / 1000, CLIENTS, all.n, all.n202, all.n503,
               frozen.slowest_ms / 1000);
    PASS();
}

/* ------------------------------------------------------------------ */
/* 10. a broker that stops reading for a while (backpressure)           */

/* One large publish on its own connection, answered or not. */
struct big_post {
    int port;
    char id[48];
    const char *doc;
    size_t len;
    int status; /* -1: no answer */
    double ms;  /* send to answer */
    pthread_t th;
};

static void *big_post_thread(void *p)
{
    struct big_post *b = p;
    char extra[96];
    snprintf(extra, sizeof extra, "X-Request-Id: %s\r\n", b->id);
    struct resp r;
    double t0 = now_ms();
    int rc = http_req(b->port, "POST", "/durable", XML, extra, b->doc, b->len, &r);
    b->ms = now_ms() - t0;
    b->status = rc == 0 ? r.status : -1;
    if (rc == 0)
        resp_free(&r);
    return NULL;
}

/* The broker freezes for a second (kill -STOP: it reads nothing, as under
 * its own credit flow, but the connection lives) while 9.6 MB of publishes
 * arrive: what no longer fits into the socket toward it waits in the
 * worker's backlog instead of being refused, and goes out when the broker
 * reads again. Every request 202, every message in the queue. */
static void test_backpressure(void **state)
{
    (void)state;
    enum { N = 160, BODY = 60 * 1024 };
    static const struct fcfg cfg = {.workers = 1, .heartbeat = "30s"};
    bridge_start(&g_aux, "backpressure", faults_config, &cfg);
    g_aux.mark = file_size(g_aux.log);
    mq_purge("f.durable");
    /* A 60 KB document: one element holding text. */
    const int off = BODY - 5;
    char *doc = big_doc((size_t)off, 'x');
    double ms;
    if (post_status(g_aux.port, "/durable", &ms) != 202)
        fail_msg("no 202 before the freeze");

    if (broker_freeze() != 0)
        fail_msg("kill -STOP of the broker failed");
    double t_freeze = now_ms();
    static struct big_post posts[N];
    for (int i = 0; i < N; i++) {
        posts[i] =
            (struct big_post){.port = g_aux.port, .doc = doc, .len = (size_t)off, .status = -1};
        snprintf(posts[i].id, sizeof posts[i].id, "bp-%d-%d", (int)getpid(), i);
        if (pthread_create(&posts[i].th, NULL, big_post_thread, &posts[i]) != 0)
            abort();
    }
    sleep_ms(1000);
    int waited = log_count(&g_aux, "not reading fast enough");
    if (broker_thaw() != 0)
        fail_msg("kill -CONT failed");
    double t_thaw = now_ms();
    int n202 = 0, other = 0, first_other = 0;
    double slowest = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(posts[i].th, NULL);
        if (posts[i].status == 202)
            n202++;
        else if (other++ == 0)
            first_other = posts[i].status;
        if (posts[i].ms > slowest)
            slowest = posts[i].ms;
    }
    double t_all = now_ms();
    free(doc);
    if (waited == 0)
        fail_msg("the socket toward the frozen broker never filled: %d x %d bytes were not "
                 "enough to test the backlog",
                 N, BODY);
    if (other)
        fail_msg("%d of %d publishes across the pause were not 202 (the first: %d)", other, N,
                 first_other);
    expect_queued("f.durable", posts[0].id, sizeof posts[0], N);
    if (log_count(&g_aux, "reads again") == 0)
        fail_msg("the bridge did not log that the broker reads again");
    expect_alive(&g_aux);
    stop_clean(&g_aux, scale_ms(HTTP_TIMEOUT_MS + 10000));
    result_row("broker stops reading for 1 s (kill -STOP, heartbeat 30 s) while 160 x 60 KB "
               "publishes arrive",
               "the socket toward it filled and the publishes that did not fit waited in the "
               "worker's backlog (no 503); %d of %d answered 202, the last %.0f ms after the "
               "broker read again (%.1f s after the freeze), slowest request %.0f ms; all %d "
               "in the queue, 0 lost",
               n202, N, t_all - t_thaw, (t_all - t_freeze) / 1000, slowest, N);
    PASS();
}

/* ------------------------------------------------------------------ */
/* 12. a publish larger than the socket's room, the broker not reading  */

/* The broker freezes; two 6 MiB publishes (more than the socket toward it
 * and the broker's receive buffer hold) and a small one arrive at a
 * one-worker bridge. The loop must never wait in send(): pongs on that
 * worker are answered while the broker is still frozen. The first big one
 * is written as room allows, the others wait behind it; when the broker
 * reads again all three go out whole, each body byte for byte, each
 * answered 202 once. */
static void large_publish_frozen(bool amqps)
{
    enum { BIG = 6 << 20, PONGS = 15 };
    const struct fcfg cfg = {.workers = 1, .heartbeat = "30s", .max_body = "8MiB", .amqps = amqps};
    if (amqps && (g_harness.tls_dir == NULL || g_harness.broker_tls_port <= 0))
        fail_msg("IT_TLS_DIR / IT_BROKER_TLS_PORT missing: run me through run.sh");
    bridge_start(&g_aux, amqps ? "large-tls" : "large", faults_config, &cfg);
    g_aux.mark = file_size(g_aux.log);
    mq_purge("f.durable");
    mq_purge("f.other");
    double ms;
    if (post_status(g_aux.port, "/durable", &ms) != 202)
        fail_msg("no 202 before the freeze");
    char *doc_a = big_doc(BIG, 'a'), *doc_b = big_doc(BIG, 'b');

    freeze_fully(scale_ms(5000));
    double t_freeze = now_ms();
    struct once_post big[2] = {
        {.port = g_aux.port, .path = "/durable", .doc = doc_a, .len = BIG},
        {.port = g_aux.port, .path = "/durable", .doc = doc_b, .len = BIG},
    };
    struct once_post small = {.port = g_aux.port, .path = "/other", .doc = g_doc, .len = g_doc_len};
    for (int i = 0; i < 2; i++) {
        snprintf(big[i].id, sizeof big[i].id, "lg-%d-%d", (int)getpid(), i);
        if (pthread_create(&big[i].th, NULL, once_post_thread, &big[i]) != 0)
            abort();
        sleep_ms(300); /* in this order */
    }
    snprintf(small.id, sizeof small.id, "lg-%d-small", (int)getpid());
    if (pthread_create(&small.th, NULL, once_post_thread, &small) != 0)
        abort();
    sleep_ms(300);
    /* The bridge holds the big ones now, the broker reads nothing. */
    double slowest = 0;
    int pongs_ok = 0;
    for (int i = 0; i < PONGS; i++) {
        struct resp r;
        double t = now_ms();
        int rc = http_get(g_aux.port, "/pong", &r);
        double took = now_ms() - t;
        if (rc == 0 && r.status == 200)
            pongs_ok++;
        if (rc == 0)
            resp_free(&r);
        if (took > slowest)
            slowest = took;
        if (rc != 0)
            break; /* the loop is stuck: no use asking again before the thaw */
        sleep_ms(100);
    }
    int answered_frozen = (big[0].done > 0) + (big[1].done > 0) + (small.done > 0);
    double t_thaw = now_ms();
    if (broker_thaw() != 0)
        fail_msg("kill -CONT failed");
    for (int i = 0; i < 2; i++)
        pthread_join(big[i].th, NULL);
    pthread_join(small.th, NULL);
    double t_all = now_ms();
    if (pongs_ok != PONGS)
        fail_msg("only %d of %d pongs were answered while the broker was frozen (the slowest "
                 "took %.0f ms): the worker's loop waited in a publish",
                 pongs_ok, PONGS, slowest);
    if (answered_frozen != 0)
        fail_msg("%d publishes were answered before the frozen broker read them", answered_frozen);
    struct once_post *all[3] = {&big[0], &big[1], &small};
    for (int i = 0; i < 3; i++) {
        if (all[i]->status != 202)
            fail_msg("publish %s: %d, expected 202", all[i]->id, all[i]->status);
        if (all[i]->after == 2)
            fail_msg("publish %s got a second answer", all[i]->id);
    }
    /* Byte for byte: the frames of one message were never interleaved. */
    int found = 0;
    const char *queues[2] = {"f.durable", "f.other"};
    for (int k = 0; k < 2; k++) {
        amqp_message_t m;
        while (mq_get(queues[k], &m) == 1) {
            for (int i = 0; i < 3; i++) {
                if (!bytes_eq(m.properties.message_id, all[i]->id))
                    continue;
                if (m.body.len != all[i]->len || memcmp(m.body.bytes, all[i]->doc, all[i]->len))
                    fail_msg("message %s: %zu bytes in the queue, not the %zu posted", all[i]->id,
                             m.body.len, all[i]->len);
                found++;
            }
            amqp_destroy_message(&m);
        }
    }
    free(doc_a);
    free(doc_b);
    if (found != 3)
        fail_msg("%d of the 3 publishes are in their queues, each once", found);
    expect_alive(&g_aux);
    stop_clean(&g_aux, scale_ms(HTTP_TIMEOUT_MS + 10000));
    result_row(amqps ? "two 6 MiB publishes and a small one to a frozen broker over amqps:// "
                       "(kill -STOP; one worker, max_body 8 MiB)"
                     : "two 6 MiB publishes and a small one to a frozen broker (kill -STOP; one "
                       "worker, max_body 8 MiB)",
               "the big one is written as the socket has room, the others wait behind it; "
               "%d of %d pongs on that worker answered during the %.1f s freeze, slowest %.0f "
               "ms; all 3 answered 202 once, %.0f ms after the broker read again, whole in "
               "their queues",
               pongs_ok, PONGS, (t_thaw - t_freeze) / 1000, slowest, t_all - t_thaw);
    PASS();
}

static void test_large_publish_frozen(void **state)
{
    (void)state;
    large_publish_frozen(false);
}

/* The same over TLS: SSL_write must never meet a full socket either. */
static void test_large_publish_frozen_tls(void **state)
{
    (void)state;
    large_publish_frozen(true);
}

/* The broker stops reading longer than [http] timeout while a 6 MiB body is
 * being written in pieces. The message cannot be abandoned halfway on its
 * channel, and every other publish of the worker waits behind it: once its
 * request has had its 503 the bridge drops that connection, so that /healthz
 * says so and new requests get 503 at once instead of queueing behind a
 * body that may trickle for ever; after the thaw the worker reconnects. */
static void test_large_publish_stalled(void **state)
{
    (void)state;
    enum { BIG = 6 << 20 };
    const struct fcfg cfg = {.workers = 1, .heartbeat = "30s", .max_body = "8MiB"};
    bridge_start(&g_aux, "large-stalled", faults_config, &cfg);
    g_aux.mark = file_size(g_aux.log);
    double ms;
    if (post_status(g_aux.port, "/durable", &ms) != 202)
        fail_msg("no 202 before the freeze");
    char *doc = big_doc(BIG, 's');
    freeze_fully(scale_ms(5000));
    double t_freeze = now_ms();
    struct once_post big = {.port = g_aux.port, .path = "/durable", .doc = doc, .len = BIG};
    snprintf(big.id, sizeof big.id, "st-%d", (int)getpid());
    if (pthread_create(&big.th, NULL, once_post_thread, &big) != 0)
        abort();
    /* Its request times out (503), then the body's own deadline drops the
     * connection: /healthz turns 503 while the broker is still frozen. */
    int last = 0;
    bool down = wait_health(g_aux.port, 503, scale_ms(HTTP_TIMEOUT_MS + 8000), &last);
    double t_down = now_ms();
    struct resp r;
    int small = -1;
    bool fast = false;
    if (down && http_req(g_aux.port, "POST", "/other", XML, NULL, g_doc, g_doc_len, &r) == 0) {
        small = r.status;
        fast = strstr(r.body, "broker unavailable") != NULL;
        resp_free(&r);
    }
    if (broker_thaw() != 0)
        fail_msg("kill -CONT failed");
    pthread_join(big.th, NULL);
    free(doc);
    if (!down)
        fail_msg("/healthz still %d %.0f ms into the freeze: the stalled body kept the connection",
                 last, t_down - t_freeze);
    if (big.status != 503 || big.after == 2)
        fail_msg("the stalled publish: %d%s, expected one 503", big.status,
                 big.after == 2 ? " and a second answer" : "");
    if (small != 503 || !fast)
        fail_msg("a publish after the drop: %d%s, expected 503 at once naming the broker", small,
                 fast ? "" : " (not naming the broker)");
    if (log_count(&g_aux, "was not taken within") != 1)
        fail_msg("the bridge did not log the body it gave up on");
    if (!wait_health(g_aux.port, 200, scale_ms(15000), &last))
        fail_msg("/healthz %d after the thaw: no reconnect", last);
    if (post_status(g_aux.port, "/other", &ms) != 202)
        fail_msg("no 202 after the reconnect");
    expect_alive(&g_aux);
    stop_clean(&g_aux, scale_ms(HTTP_TIMEOUT_MS + 10000));
    result_row("a 6 MiB publish to a broker frozen longer than [http] timeout (10 s; one worker)",
               "the publish answered 503 once at its timeout; the half-written body given up "
               "and the connection dropped %.1f s into the freeze (/healthz 503, the next "
               "publish 503 at once instead of waiting behind it); reconnected and 202 after "
               "the thaw",
               (t_down - t_freeze) / 1000);
    PASS();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        FAULTS_TEST(test_freeze_heartbeat),      FAULTS_TEST(test_backpressure),
        FAULTS_TEST(test_large_publish_frozen),  FAULTS_TEST(test_large_publish_frozen_tls),
        FAULTS_TEST(test_large_publish_stalled),
    };
    /* FAULTS_ONLY=test_failover (a pattern, * and ? allowed): run just those. */
    return suite_run("ingest-bridge broker faults: stall", &FAULTS_SUITE, tests, "FAULTS_ONLY");
}
