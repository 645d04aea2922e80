/* test_hostile_limits.c - what the bridge holds for clients it cannot
 * serve: requests refused (or shed) from their headers before the body,
 * refused bodies sent anyway, max_connections and max_pending_bytes. One of
 * the hostile input suites (the shared part: hostile.[ch]). */

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hostile.h"

/* ------------------------------------------------------------------ */

/* ------------------------------------------------------------------ */
/* what the bridge holds: refused before the body, connections, bytes   */

#define TOKEN "h-token-5e6f7a8b"
#define Q_WAIT "h.wait" /* an rpc route's queue that no worker reads */

/* The limits tests' bridge: g_main's routes behind a bearer token, an rpc
 * route whose requests wait for their timeout, and EXTRA [http] lines. A
 * bridge_config_fn; ARG: the extra lines ("" for none). */
static char *lim_config(int http_port, const void *arg)
{
    char tokens[600];
    snprintf(tokens, sizeof tokens, "%s/h-tokens", g_harness.tmp);
    write_file(tokens, TOKEN "\n");
    char *text = NULL;
    if (asprintf(&text,
                 "[http]\nlisten = 127.0.0.1:%d\nworkers = 2\n%s"
                 "timeout = 10s\nauth_token_file = %s\n%s"
                 "[amqp]\nuri = amqp://guest:guest@127.0.0.1:%d/%%2f\n"
                 "[log]\nlevel = %s\n"
                 "[route h.ingest]\npath = /h/ingest\nmode = publish\nrouting_key = " Q_INGEST
                 "\nqueue = " Q_INGEST "\n"
                 "[route h.wait]\npath = /h/wait\nmode = rpc\nrouting_key = " Q_WAIT
                 "\nqueue = " Q_WAIT "\ntimeout = 3s\n",
                 http_port, strstr(arg, "max_body") ? "" : "max_body = 1MiB\n", tokens,
                 (const char *)arg, g_harness.broker_port, g_harness.log_level) < 0)
        abort();
    return text;
}

/* Bytes waiting in the receive queues of the connections the bridge
 * accepted on PORT (IPv4, /proc/net/tcp): 0 once it has read everything
 * sent to it. -1 if unreadable. */
static long unread_bytes(int port)
{
    FILE *f = fopen("/proc/net/tcp", "r");
    if (f == NULL)
        return -1;
    char line[512];
    long sum = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        unsigned lport, st;
        unsigned long tx, rx;
        if (sscanf(line, " %*d: %*x:%x %*x:%*x %x %lx:%lx", &lport, &st, &tx, &rx) == 4 &&
            lport == (unsigned)port && st == 1 /* established */)
            sum += (long)rx;
    }
    fclose(f);
    return sum;
}

/* The first line the bridge sends after HEAD (request line and headers
 * only) on a fresh connection, into LINE; the connection stays open in C. */
static void first_line(struct conn *c, int port, const char *head, char *line, size_t n)
{
    if (conn_open(c, port) != 0)
        fail_msg("cannot connect to the bridge on port %d", port);
    assert_int_equal(conn_send(c, head, strlen(head)), 0);
    size_t ll;
    char *l = conn_line(c, &ll);
    if (l == NULL)
        fail_msg("closed without a response to: %s", head);
    snprintf(line, n, "%.*s", (int)ll, l);
    conn_consume(c, ll + 2);
}

/* After first_line: whether a header line of the rest of the response
 * head starts with PREFIX (conn_read_resp wants the status line again, so
 * the rest is read by hand, up to its blank line). */
static bool rest_has(struct conn *c, const char *prefix)
{
    bool has = false;
    size_t ll, pl = strlen(prefix);
    for (char *l; (l = conn_line(c, &ll)) != NULL && ll > 0; conn_consume(c, ll + 2))
        if (ll >= pl && strncasecmp(l, prefix, pl) == 0)
            has = true;
    return has;
}

/* lim_config with a broker that is not there. */
static char *down_config(int http_port, const void *arg)
{
    char *text = lim_config(http_port, arg);
    char live[40], dead[40];
    snprintf(live, sizeof live, "127.0.0.1:%d/", g_harness.broker_port);
    snprintf(dead, sizeof dead, "127.0.0.1:%d/", free_port());
    char *t = subst(text, live, dead);
    free(text);
    return t;
}

/* The 503s that load and the broker decide come from the headers too: a
 * client is never asked (100 Continue) to upload a body the bridge will
 * refuse, and without Expect the refused body is dropped as it comes and
 * the connection serves on. A body on HEAD (which evhttp never reads) is a
 * smuggled request: 400 and close, never a second response. */
static void test_shed_before_body(void **state)
{
    (void)state;
    bridge_spawn(&g_aux, "shed", down_config, "");
    double end = now_ms() + scale_ms(10000);
    while (pong_ms(g_aux.port) < 0 && now_ms() < end)
        sleep_ms(50);
    struct conn c;
    char line[160];
    first_line(&c, g_aux.port,
               "POST /h/ingest HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN
               "\r\nContent-Type: application/xml\r\nContent-Length: 1000\r\n"
               "Expect: 100-continue\r\n\r\n",
               line, sizeof line);
    if (strncmp(line, "HTTP/1.1 503 ", 13) != 0)
        fail_msg("broker down, Expect: 100-continue: first line \"%s\", expected 503", line);
    if (!rest_has(&c, "Retry-After:"))
        fail_msg("the 503 decided from the headers has no Retry-After");
    conn_close(&c);

    /* Without Expect: 503 once the body went by, then the same connection
     * answers a pong. */
    char *raw = NULL;
    int rl = asprintf(&raw,
                      "POST /h/ingest HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN
                      "\r\nContent-Type: application/xml\r\nContent-Length: %zu\r\n\r\n%s"
                      "GET /pong HTTP/1.1\r\nHost: x\r\n\r\n",
                      strlen(DOC), DOC);
    if (rl < 0)
        abort();
    assert_int_equal(conn_open(&c, g_aux.port), 0);
    assert_int_equal(conn_send(&c, raw, (size_t)rl), 0);
    free(raw);
    struct resp r;
    assert_int_equal(conn_read_resp(&c, &r, false), 0);
    if (r.status != 503 || strstr(r.body, "broker unavailable") == NULL)
        fail_msg("broker down, no Expect: %d \"%s\", expected 503 broker unavailable", r.status,
                 r.body);
    resp_free(&r);
    assert_int_equal(conn_read_resp(&c, &r, false), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    conn_close(&c);

    /* HEAD with a body that is itself a request. */
    static const char smuggle[] = "HEAD /pong HTTP/1.1\r\nHost: x\r\nContent-Length: 34\r\n\r\n"
                                  "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(conn_open(&c, g_aux.port), 0);
    assert_int_equal(conn_send(&c, smuggle, sizeof smuggle - 1), 0);
    assert_int_equal(conn_read_resp(&c, &r, true), 0);
    int status = r.status;
    resp_free(&r);
    int closed = conn_wait_closed(&c, scale_ms(2000));
    conn_close(&c);
    if (status != 400 || closed != 1)
        fail_msg("HEAD with a 34-byte body holding a GET: %d, then %s (expected 400 and close)",
                 status,
                 closed == 2 ? "a second response"
                 : closed    ? "closed"
                             : "kept open");
    assert_int_equal(bridge_stop(&g_aux, scale_ms(10000)), 0);
    result_row("503s decided from the headers (broker down), and a body on HEAD",
               "Expect: 100-continue: 503 with Retry-After at once, never 100 Continue; without "
               "Expect: 503 after the body was dropped, the connection then answered a pong; "
               "HEAD /pong with a 34-byte body holding GET /metrics: 400 and closed, no second "
               "response");
    PASS();
}

/* A request with `Expect: 100-continue` that its headers alone refuse is
 * answered at once, with the bridge's own answer and never 100 Continue,
 * and the connection is closed (the body may still come); one that passes
 * them gets 100 Continue, then its answer once the body is sent. */
static void test_refused_before_body(void **state)
{
    (void)state;
    bridge_start(&g_aux, "early", lim_config, "");
    static const struct {
        const char *what; /* the case */
        const char *head; /* request line and headers, up to the blank line excluded */
        int status;       /* the answer expected before any body byte */
    } cases[] = {
        {"no token", "POST /h/ingest HTTP/1.1\r\nContent-Type: application/xml", 401},
        {"a wrong token",
         "POST /h/ingest HTTP/1.1\r\nAuthorization: Bearer nope\r\nContent-Type: application/xml",
         401},
        {"no route", "POST /h/nowhere HTTP/1.1\r\nAuthorization: Bearer " TOKEN, 404},
        {"PUT",
         "PUT /h/ingest HTTP/1.1\r\nAuthorization: Bearer " TOKEN
         "\r\nContent-Type: application/xml",
         405},
        {"text/plain",
         "POST /h/ingest HTTP/1.1\r\nAuthorization: Bearer " TOKEN "\r\nContent-Type: text/plain",
         415},
    };
    char line[160];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char head[512];
        snprintf(head, sizeof head,
                 "%s\r\nHost: x\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n"
                 "X-Request-Id: early-%zu\r\n\r\n",
                 cases[i].head, i);
        struct conn c;
        first_line(&c, g_aux.port, head, line, sizeof line);
        char want[32];
        snprintf(want, sizeof want, "HTTP/1.1 %d ", cases[i].status);
        if (strncmp(line, want, strlen(want)) != 0)
            fail_msg("%s with Expect: 100-continue: first line \"%s\", expected %d", cases[i].what,
                     line, cases[i].status);
        conn_close(&c);
    }
    /* 413 by Content-Length: the bridge's own answer (X-Request-Id), not
     * evhttp's page. */
    struct conn c;
    first_line(&c, g_aux.port,
               "POST /h/ingest HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN
               "\r\nContent-Type: application/xml\r\nContent-Length: 2000000\r\n"
               "Expect: 100-continue\r\nX-Request-Id: early-413\r\n\r\n",
               line, sizeof line);
    if (strncmp(line, "HTTP/1.1 413 ", 13) != 0)
        fail_msg("2 MB by Content-Length with Expect: first line \"%s\", expected 413", line);
    size_t ll;
    if (!rest_has(&c, "X-Request-Id: early-413"))
        fail_msg("the 413 by Content-Length is not the bridge's own (no X-Request-Id)");
    conn_close(&c);

    /* A request that passes: 100 Continue, then 202 after the body. */
    char head[512];
    snprintf(head, sizeof head,
             "POST /h/ingest HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN
             "\r\nContent-Type: application/xml\r\nContent-Length: %zu\r\n"
             "Expect: 100-continue\r\nX-Request-Id: early-ok\r\n\r\n",
             strlen(DOC));
    first_line(&c, g_aux.port, head, line, sizeof line);
    if (strncmp(line, "HTTP/1.1 100 ", 13) != 0)
        fail_msg("a passing request with Expect: first line \"%s\", expected 100 Continue", line);
    if (conn_line(&c, &ll) == NULL || ll != 0) /* the 100's blank line */
        fail_msg("100 Continue not followed by a blank line");
    conn_consume(&c, 2);
    assert_int_equal(conn_send(&c, DOC, strlen(DOC)), 0);
    struct resp r;
    assert_int_equal(conn_read_resp(&c, &r, false), 0);
    assert_int_equal(r.status, 202);
    resp_free(&r);
    /* The next request on the kept-alive connection is decided from its
     * headers too. */
    static const char again[] =
        "POST /h/ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/xml"
        "\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n";
    assert_int_equal(conn_send(&c, again, sizeof again - 1), 0);
    char *l = conn_line(&c, &ll);
    if (l == NULL || strncmp(l, "HTTP/1.1 401 ", 13) != 0)
        fail_msg("a kept-alive connection's next request: first line \"%.*s\", expected 401",
                 l != NULL ? (int)ll : 6, l != NULL ? l : "(none)");
    conn_close(&c);
    /* Pipelined behind a passing request, in the same write: the refused
     * one is read from what the bridge had buffered, and decided too. */
    char *two = NULL;
    int tl = asprintf(&two,
                      "POST /h/ingest HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN
                      "\r\nContent-Type: application/xml\r\nContent-Length: %zu\r\n\r\n%s%s",
                      strlen(DOC), DOC, again);
    if (tl < 0)
        abort();
    assert_int_equal(conn_open(&c, g_aux.port), 0);
    assert_int_equal(conn_send(&c, two, (size_t)tl), 0);
    free(two);
    assert_int_equal(conn_read_resp(&c, &r, false), 0);
    assert_int_equal(r.status, 202);
    resp_free(&r);
    l = conn_line(&c, &ll);
    if (l == NULL || strncmp(l, "HTTP/1.1 401 ", 13) != 0)
        fail_msg("a pipelined request's first line \"%.*s\", expected 401", l != NULL ? (int)ll : 6,
                 l != NULL ? l : "(none)");
    conn_close(&c);
    assert_int_equal(bridge_stop(&g_aux, scale_ms(10000)), 0);
    result_row("Expect: 100-continue on requests refused by their headers (401 x2, 404, 405, 415, "
               "413 by Content-Length)",
               "each answered before its body with the bridge's answer, never 100 Continue; a "
               "passing request got 100 Continue, then 202");
    PASS();
}

/* Refused requests whose bodies are sent anyway are not held: N clients
 * each send the headers of a request without its token and a body of
 * nearly max_body, all but its last byte; the bridge's memory grows by far
 * less than those bodies (it held them whole before), and each gets 401. */
static void test_refused_bodies_not_held(void **state)
{
    (void)state;
    enum { N = 200, SIZE = 1000 * 1000 };
    bridge_start(&g_aux, "unheld", lim_config, "");
    char head[256];
    int hl = snprintf(head, sizeof head,
                      "POST /h/ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/xml\r\n"
                      "Content-Length: %d\r\n\r\n",
                      SIZE);
    char *body = xmalloc(SIZE);
    memset(body, 'x', SIZE);
    long rss0 = status_kb(g_aux.pid, "VmRSS");
    static struct conn c[N];
    for (int i = 0; i < N; i++) {
        if (conn_open(&c[i], g_aux.port) != 0)
            fail_msg("connection %d refused", i);
        fds_track(c[i].fd);
        if (conn_send(&c[i], head, (size_t)hl) != 0 || conn_send(&c[i], body, SIZE - 1) != 0)
            fail_msg("connection %d: the bridge stopped reading the body", i);
    }
    /* Sent is not read yet: the kernel holds what the bridge has not
     * taken. Wait until it has taken every byte. */
    double end = now_ms() + scale_ms(30000);
    long unread;
    while ((unread = unread_bytes(g_aux.port)) != 0 && now_ms() < end)
        sleep_ms(20);
    if (unread != 0)
        fail_msg("the bridge left %ld bytes unread in its sockets", unread);
    long held = status_kb(g_aux.pid, "VmRSS") - rss0;
    int ok = 0;
    for (int i = 0; i < N; i++) {
        struct resp r;
        memset(&r, 0, sizeof r);
        if (conn_send(&c[i], body, 1) == 0 && conn_read_resp(&c[i], &r, false) == 0 &&
            r.status == 401)
            ok++;
        resp_free(&r);
        /* The body was read to its end: the connection goes on. */
        static const char pong[] = "GET /pong HTTP/1.1\r\nHost: x\r\n\r\n";
        if (i == 0 && (exchange(&c[i], pong, sizeof pong - 1, &r, false) != 0 || r.status != 200))
            fail_msg("no pong after a refused body on the same connection");
        resp_free(&r);
        conn_close(&c[i]);
    }
    free(body);
    long all_kb = (long)N * SIZE / 1024;
    if (ok != N)
        fail_msg("%d of %d refused requests got their 401", ok, N);
    /* ASan's quarantine keeps every freed buffer for a while: there the
     * RSS counts bytes that went through, not bytes held. */
    bool asan = instrumented(g_aux.pid);
    if (asan)
        harness_note("instrumented bridge: RSS +%ld kB not asserted\n", held);
    else if (held > all_kb / 10)
        fail_msg("the bridge's RSS grew by %ld kB while %d refused bodies of %d bytes were "
                 "being sent (%ld kB in all)",
                 held, N, SIZE, all_kb);
    assert_int_equal(bridge_stop(&g_aux, scale_ms(10000)), 0);
    result_row("200 clients sending 1 MB bodies of requests refused 401 (no token)",
               "bridge RSS +%ld kB with every body but its last byte sent (%ld kB of bodies); "
               "%d of %d answered 401",
               held, all_kb, ok, N);
    PASS();
}

/* SERIES's value in B's /metrics, asked on C (a kept-alive connection) or,
 * when C is NULL, on a fresh one; -1 if absent. */
static long long metric_on(struct conn *c, const struct bridge *b, const char *series)
{
    struct resp r;
    int rc;
    if (c != NULL) {
        static const char get[] = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
        rc = exchange(c, get, sizeof get - 1, &r, false);
    } else {
        rc = http_get(b->port, "/metrics", &r);
    }
    if (rc != 0 || r.status != 200)
        fail_msg("GET /metrics failed (%d)", rc == 0 ? r.status : -1);
    long long v = metric_in(r.body, series);
    resp_free(&r);
    return v;
}

/* [http] max_connections = 50: with 50 open, the 51st gets a 503 with
 * Retry-After and is closed, counted; once some close, new ones are served. */
static void test_max_connections(void **state)
{
    (void)state;
    enum { MAX = 50 };
    bridge_start(&g_aux, "maxconn", lim_config, "max_connections = 50\n");
    static struct conn c[MAX];
    static const char pong[] = "GET /pong HTTP/1.1\r\nHost: x\r\n\r\n";
    for (int i = 0; i < MAX; i++) {
        struct resp r;
        if (conn_open(&c[i], g_aux.port) != 0 || exchange(&c[i], pong, sizeof pong - 1, &r, false))
            fail_msg("connection %d of %d: no pong", i + 1, MAX);
        fds_track(c[i].fd);
        assert_int_equal(r.status, 200);
        resp_free(&r);
    }
    struct conn x;
    assert_int_equal(conn_open(&x, g_aux.port), 0);
    struct resp r;
    if (conn_read_resp(&x, &r, false) != 0)
        fail_msg("connection %d: closed without a 503", MAX + 1);
    int status = r.status;
    bool retry = resp_header(&r, "Retry-After") != NULL;
    const char *conn_hdr = resp_header(&r, "Connection");
    bool close_hdr = conn_hdr != NULL && strcasecmp(conn_hdr, "close") == 0;
    bool names = strstr(r.body, "max_connections") != NULL;
    resp_free(&r);
    int after = conn_wait_closed(&x, scale_ms(2000));
    conn_close(&x);
    if (status != 503 || !retry || !close_hdr || !names || after != 1)
        fail_msg("connection %d: %d (Retry-After %d, Connection: close %d, names the key %d, "
                 "closed %d), expected 503 and a close",
                 MAX + 1, status, retry, close_hdr, names, after);
    assert_int_equal(metric_on(&c[0], &g_aux, "bridge_http_connections_refused_total"), 1);
    assert_int_equal(metric_on(&c[0], &g_aux, "bridge_http_connections"), MAX);
    for (int i = 1; i <= 10; i++)
        conn_close(&c[i]);
    /* The bridge notices the closes as they come: poll until one is free. */
    double end = now_ms() + scale_ms(5000);
    int got = 0;
    while (got != 200 && now_ms() < end) {
        if (http_get(g_aux.port, "/pong", &r) == 0) {
            got = r.status;
            resp_free(&r);
        }
        if (got != 200)
            sleep_ms(20);
    }
    if (got != 200)
        fail_msg("no new connection served after 10 of %d closed (last %d)", MAX, got);
    for (int i = 0; i < MAX; i++)
        conn_close(&c[i]);
    assert_int_equal(bridge_stop(&g_aux, scale_ms(10000)), 0);
    result_row("[http] max_connections = 50, a 51st client connects",
               "503 with Retry-After and Connection: close, then closed; "
               "bridge_http_connections_refused_total 1; after 10 closed, new ones served");
    PASS();
}

/* A body's worth of requests waiting on the broker, then the gauge. */
static long long pending_bytes(struct conn *m)
{
    return metric_on(m, &g_aux, "bridge_pending_bytes");
}

/* Wait until bridge_pending_bytes is WANT (5 s); false if it never is. */
static bool await_pending(struct conn *m, long long want)
{
    double end = now_ms() + scale_ms(5000);
    long long v;
    while ((v = pending_bytes(m)) != want && now_ms() < end)
        sleep_ms(20);
    return v == want;
}

/* [http] max_pending_bytes = 64 KiB, rpc requests of 10,000 bytes that no
 * worker answers: 6 wait (60,000 bytes), the next ones get 503 naming the
 * limit, counted; a client that goes, a 202 and the 504s at the route's
 * timeout each give back what they held: the gauge ends at 0. */
static void test_max_pending_bytes(void **state)
{
    (void)state;
    enum { WAIT = 6, SIZE = 10000 };
    mq_purge(Q_WAIT);
    bridge_start(&g_aux, "pending", lim_config, "max_body = 16KiB\nmax_pending_bytes = 64KiB\n");
    char *doc = make_doc(SIZE);
    size_t len;
    char *raw =
        fmt_request(&len, "POST", "/h/wait", XML, "Authorization: Bearer " TOKEN "\r\n", doc, SIZE);
    struct conn m;
    assert_int_equal(conn_open(&m, g_aux.port), 0);
    static struct conn c[WAIT];
    for (int i = 0; i < WAIT; i++) {
        assert_int_equal(conn_open(&c[i], g_aux.port), 0);
        fds_track(c[i].fd);
        assert_int_equal(conn_send(&c[i], raw, len), 0);
    }
    if (!await_pending(&m, (long long)WAIT * SIZE))
        fail_msg("bridge_pending_bytes %lld with %d requests of %d bytes waiting",
                 pending_bytes(&m), WAIT, SIZE);
    int refused = 0;
    for (int i = 0; i < 2; i++) {
        struct conn x;
        assert_int_equal(conn_open(&x, g_aux.port), 0);
        struct resp r;
        if (exchange(&x, raw, len, &r, false) != 0)
            fail_msg("request %d past the limit: no answer", WAIT + 1 + i);
        if (r.status == 503 && strstr(r.body, "max_pending_bytes") != NULL &&
            resp_header(&r, "Retry-After") != NULL)
            refused++;
        else
            fail_msg("request %d past the limit: %d %s", WAIT + 1 + i, r.status, r.body);
        resp_free(&r);
        conn_close(&x);
    }
    assert_int_equal(metric_on(&m, &g_aux, "bridge_pending_bytes_refused_total"), 2);
    conn_abort(&c[0]); /* a client that goes */
    if (!await_pending(&m, (long long)(WAIT - 1) * SIZE))
        fail_msg("bridge_pending_bytes %lld after a waiting client left", pending_bytes(&m));
    struct resp r;
    char *pub = fmt_request(&len, "POST", "/h/ingest", XML, "Authorization: Bearer " TOKEN "\r\n",
                            doc, SIZE);
    assert_int_equal(exchange(&m, pub, len, &r, false), 0);
    assert_int_equal(r.status, 202);
    resp_free(&r);
    free(pub);
    int timeouts = 0;
    for (int i = 1; i < WAIT; i++) {
        memset(&r, 0, sizeof r);
        conn_set_timeout(&c[i], scale_ms(10000));
        if (conn_read_resp(&c[i], &r, false) == 0 && r.status == 504)
            timeouts++;
        resp_free(&r);
        conn_close(&c[i]);
    }
    assert_int_equal(timeouts, WAIT - 1);
    long long end = pending_bytes(&m);
    conn_close(&m);
    free(raw);
    free(doc);
    mq_purge(Q_WAIT);
    if (end != 0)
        fail_msg("bridge_pending_bytes %lld once every request was answered or gone", end);
    assert_int_equal(bridge_stop(&g_aux, scale_ms(10000)), 0);
    result_row("[http] max_pending_bytes = 64 KiB, 10,000-byte rpc requests no worker answers",
               "6 waited (bridge_pending_bytes 60000), 2 more got 503 naming the key (counted); "
               "a client gone, a 202 and 5 x 504 later the gauge was 0");
    PASS();
}

static const struct suite SUITE = HOSTILE_SUITE();

/* IT_ONLY=PATTERN runs only the tests whose names match (cmocka's filter). */
int main(void)
{
    const struct CMUnitTest tests[] = {
        HOSTILE_TEST(test_refused_before_body),     HOSTILE_TEST(test_shed_before_body),
        HOSTILE_TEST(test_refused_bodies_not_held), HOSTILE_TEST(test_max_connections),
        HOSTILE_TEST(test_max_pending_bytes),
    };
    return suite_run("ingest-bridge hostile input: limits", &SUITE, tests, "IT_ONLY");
}
