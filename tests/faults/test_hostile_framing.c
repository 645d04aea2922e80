/* test_hostile_framing.c - requests whose framing is ambiguous or too big:
 * Content-Length against Transfer-Encoding, bodies over max_body (by
 * Content-Length, chunked, after Expect: 100-continue), and deep pipelines,
 * read and unread. Refused before the body where the headers allow it, never
 * smuggled. One of the hostile input suites (the shared part: hostile.[ch]). */

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

static void test_framing(void **state)
{
    (void)state;
    /* A second request hidden behind the first: if anything but the 400 is
     * read from the connection, this one gets published. */
    char smuggled[512];
    static const char sdoc[] = "<doc>smuggled</doc>";
    int sl = snprintf(smuggled, sizeof smuggled,
                      "POST /h/ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/xml\r\n"
                      "Content-Length: %zu\r\nX-Request-Id: h-smuggled\r\n\r\n%s",
                      sizeof sdoc - 1, sdoc);
    static const char hdr[] = "POST /h/ingest HTTP/1.1\r\nHost: x\r\n"
                              "Content-Type: application/xml\r\nX-Request-Id: h-frame\r\n";
    struct {
        const char *name;
        const char *framing; /* header lines */
        bool chunked;        /* the body is sent chunked (else raw) */
    } cases[] = {
        {"two Content-Length, equal", "Content-Length: 10\r\nContent-Length: 10\r\n", false},
        {"two Content-Length, 0 then N", "Content-Length: 0\r\nContent-Length: {N}\r\n", false},
        {"two Content-Length, N then 0", "Content-Length: {N}\r\nContent-Length: 0\r\n", false},
        {"Content-Length + Transfer-Encoding: chunked",
         "Content-Length: 10\r\nTransfer-Encoding: chunked\r\n", true},
        {"Transfer-Encoding: chunked + Content-Length",
         "Transfer-Encoding: chunked\r\nContent-Length: 10\r\n", true},
        {"Transfer-Encoding: gzip", "Transfer-Encoding: gzip\r\n", false},
        {"Transfer-Encoding: identity", "Transfer-Encoding: identity\r\n", false},
        {"Transfer-Encoding: gzip, chunked", "Transfer-Encoding: gzip, chunked\r\n", true},
        {"Transfer-Encoding: chunked, gzip", "Transfer-Encoding: chunked, gzip\r\n", true},
        {"two Transfer-Encoding: chunked then gzip",
         "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n", true},
        {"two Transfer-Encoding: gzip then chunked",
         "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", true},
        {"two Transfer-Encoding: chunked twice",
         "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", true},
    };
    const size_t ncases = sizeof cases / sizeof *cases;
    double worst = 0;
    for (size_t i = 0; i < ncases; i++) {
        char nbuf[16];
        /* {N}: the length that makes the smuggled request the first one's body */
        snprintf(nbuf, sizeof nbuf, "%d", 10 + sl);
        char *framing = subst(cases[i].framing, "{N}", nbuf);
        struct verdict v;
        if (cases[i].chunked)
            probe_fmt(g_main.port, &v, "%s%s\r\na\r\n<d>abc</d>\r\n0\r\n\r\n%s", hdr, framing,
                      smuggled);
        else
            probe_fmt(g_main.port, &v, "%s%s\r\n<d>abc</d>%s", hdr, framing, smuggled);
        free(framing);
        if (v.got != 1 || v.status != 400 || v.after != 1)
            fail_msg("%s: %s, expected 400 and the connection closed", cases[i].name, v.said);
        if (v.ms > worst)
            worst = v.ms;
    }
    /* A sentinel after them all: once it is confirmed, anything smuggled
     * (sent earlier) would be in the queue too. */
    sleep_ms(200);
    if (publish_ms(g_main.port, "h-frame-sentinel") < 0)
        fail_msg("the sentinel publish after the framing cases was not accepted");
    size_t n;
    char **ids = mq_drain_ids(Q_INGEST, &n);
    bool only_sentinel = n == 1 && strcmp(ids[0], "h-frame-sentinel") == 0;
    size_t nsmuggled = 0, nframe = 0;
    for (size_t i = 0; i < n; i++) {
        nsmuggled += strcmp(ids[i], "h-smuggled") == 0;
        nframe += strcmp(ids[i], "h-frame") == 0;
    }
    ids_free(ids, n);
    if (!only_sentinel)
        fail_msg("%zu messages in %s after the framing cases: %zu smuggled, %zu first requests", n,
                 Q_INGEST, nsmuggled, nframe);
    result_row("ambiguous framing, each followed by a smuggled POST: 2x Content-Length (equal, "
               "0/N, N/0), CL + TE both orders, TE gzip / identity / \"gzip, chunked\" / "
               "\"chunked, gzip\", two TE headers (3 ways)",
               "%zu of %zu: 400 and connection closed, no second response (slowest %.1f ms); "
               "queue: 0 published, 0 smuggled",
               ncases, ncases, worst);
    PASS();
}

/* ------------------------------------------------------------------ */
/* oversized bodies                                                    */

/* Send HEAD, then stream up to TOTAL body bytes (64 KiB pieces: raw, or
 * chunked when CHUNKED) while watching for an answer; stops at the first
 * byte of one, a send error, or MS. *SENT: body bytes written (framing
 * included). Returns await_resp's value for the answer. */
static int stream_body(struct conn *c, const char *head, size_t total, bool chunked, int ms,
                       size_t *sent, struct resp *r, double *answer_ms)
{
    enum { PIECE = 64 * 1024 };
    static char unit[PIECE + 16];
    size_t ulen;
    if (chunked) {
        int h = snprintf(unit, sizeof unit, "%x\r\n", PIECE);
        memset(unit + h, 'a', PIECE);
        memcpy(unit + h + PIECE, "\r\n", 2);
        ulen = (size_t)h + PIECE + 2;
    } else {
        memset(unit, 'a', PIECE);
        ulen = PIECE;
    }
    *sent = 0;
    double t0 = now_ms();
    if (conn_send(c, head, strlen(head)) != 0)
        return await_resp(c, r, 0);
    size_t off = 0;
    bool sending = true;
    while (now_ms() - t0 < ms) {
        struct pollfd p = {.fd = c->fd,
                           .events = (short)(POLLIN | (sending && *sent < total ? POLLOUT : 0))};
        int n = poll(&p, 1, 50);
        if (n < 0 && errno != EINTR)
            break;
        if (n <= 0)
            continue;
        if (p.revents & (POLLIN | POLLHUP | POLLERR))
            break;
        if (p.revents & POLLOUT) {
            ssize_t w = send(c->fd, unit + off, ulen - off, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
                continue;
            if (w <= 0) {
                sending = false; /* reset: the answer, if any, is there to read */
                break;
            }
            *sent += (size_t)w;
            off = (off + (size_t)w) % ulen;
        }
    }
    *answer_ms = now_ms() - t0;
    return await_resp(c, r, scale_ms(2000));
}

/* What streaming a 50 MB body to the shared bridge brought: the answer,
 * how far the client got, and the bridge's memory meanwhile. */
struct streamed {
    int got;            /* stream_body's value: 1 an answer, 0 closed, -1 none */
    int status;         /* the answer's, 0 without one */
    int after;          /* conn_wait_closed after the answer; 1 without one */
    size_t sent;        /* body bytes written (framing included) */
    double ms;          /* from the head to the answer */
    struct mem_mark mm; /* the bridge's memory before */
    long growth;        /* its growth since, kB */
};

/* stream_body of 50 MB after HEAD (chunked when CHUNKED), for at most 10 s,
 * on a fresh connection with a send buffer of SNDBUF bytes (0: the
 * system's), which is then closed. */
static void stream_50mb(const char *head, bool chunked, int sndbuf, struct streamed *s)
{
    memset(s, 0, sizeof *s);
    mem_mark(g_main.pid, &s->mm);
    struct conn c;
    assert_int_equal(conn_open(&c, g_main.port), 0);
    if (sndbuf > 0)
        setsockopt(c.fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    struct resp r;
    s->got = stream_body(&c, head, 50u << 20, chunked, scale_ms(10000), &s->sent, &r, &s->ms);
    s->after = s->got == 1 ? conn_wait_closed(&c, scale_ms(2000)) : 1;
    conn_close(&c);
    s->growth = mem_growth_kb(g_main.pid, &s->mm);
    s->status = r.status;
    resp_free(&r);
}

static void test_413_content_length(void **state)
{
    (void)state;
    static const char head[] = "POST /h/ingest HTTP/1.1\r\nHost: x\r\n"
                               "Content-Type: application/xml\r\nContent-Length: 52428800\r\n"
                               "X-Request-Id: h-50mb\r\n\r\n";
    struct streamed s;
    stream_50mb(head, false, 0, &s);
    if (s.got != 1 || s.status != 413)
        fail_msg("50 MB by Content-Length: %s %d after %zu body bytes, expected 413",
                 s.got == 1 ? "status" : "no response", s.status, s.sent);
    if (s.ms > scale_ms(2000))
        fail_msg("the 413 took %.0f ms: the body was waited for", s.ms);
    if (s.after != 1)
        fail_msg("the connection stayed open after the 413 (%d)", s.after);
    if (s.growth > rss_bound_kb(10 * 1024))
        fail_msg("the bridge's memory grew by %ld kB while refusing 50 MB", s.growth);
    assert_nothing_published("a 50 MB body");
    assert_serving("a 50 MB body");
    result_row("50 MB body by Content-Length, the client streaming it without waiting",
               "413 after %.1f ms, connection closed after %.1f MB of the 50 were written into "
               "the socket; bridge RSS %s +%ld kB (from %ld kB); nothing published",
               s.ms, s.sent / 1048576.0, s.mm.hwm_ok ? "peak" : "", s.growth, s.mm.rss_kb);
    PASS();
}

static void test_413_chunked(void **state)
{
    (void)state;
    /* Control: a chunked body under max_body is accepted. */
    size_t dlen = 900 * 1000;
    char *doc = make_doc(dlen);
    struct verdict v;
    probe_fmt(g_main.port, &v,
              "POST /h/ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/xml\r\n"
              "Transfer-Encoding: chunked\r\nX-Request-Id: h-chunked-ok\r\n\r\n"
              "%zx\r\n%s\r\n0\r\n\r\n",
              dlen, doc);
    free(doc);
    if (v.got != 1 || v.status != 202)
        fail_msg("a 900 KB chunked document: %s, expected 202", v.said);

    static const char head[] = "POST /h/ingest HTTP/1.1\r\nHost: x\r\n"
                               "Content-Type: application/xml\r\nTransfer-Encoding: chunked\r\n"
                               "X-Request-Id: h-chunked-big\r\n\r\n";
    /* A small send buffer: what we count as sent is close to what reached
     * the bridge's socket. */
    struct streamed s;
    stream_50mb(head, true, 64 * 1024, &s);
    if (s.got != 1 || s.status != 413)
        fail_msg("chunked body past max_body: %s %d after %zu bytes, expected 413",
                 s.got == 1 ? "status" : "no response", s.status, s.sent);
    if (s.sent < MAX_BODY)
        fail_msg("413 after %zu bytes, before max_body (%d) was passed", s.sent, MAX_BODY);
    if (s.sent > (size_t)MAX_BODY + (16u << 20))
        fail_msg("413 only after %zu bytes (max_body %d)", s.sent, MAX_BODY);
    if (s.after != 1)
        fail_msg("the connection stayed open after the 413 (%d)", s.after);
    if (s.growth > rss_bound_kb(10 * 1024))
        fail_msg("the bridge's memory grew by %ld kB while refusing a chunked body", s.growth);
    size_t all;
    assert_int_equal(queue_count(Q_INGEST, "h-chunked-ok", &all), 1);
    assert_int_equal(all, 1);
    assert_serving("a chunked body past max_body");
    result_row("chunked body growing past max_body (1 MiB), 64 KiB chunks",
               "413 after %.2f MiB written (client send buffer 64 KiB), in %.0f ms; connection "
               "closed; bridge RSS %s +%ld kB; nothing published (control: 900 KB chunked: 202)",
               s.sent / 1048576.0, s.ms, s.mm.hwm_ok ? "peak" : "", s.growth);
    PASS();
}

static void test_413_expect_continue(void **state)
{
    (void)state;
    static const char head[] = "POST /h/ingest HTTP/1.1\r\nHost: x\r\n"
                               "Content-Type: application/xml\r\nContent-Length: 52428800\r\n"
                               "Expect: 100-continue\r\nX-Request-Id: h-expect\r\n\r\n";
    struct conn c;
    assert_int_equal(conn_open(&c, g_main.port), 0);
    double t0 = now_ms();
    assert_int_equal(conn_send(&c, head, sizeof head - 1), 0);
    size_t ll;
    char *line = conn_line(&c, &ll);
    double ms = now_ms() - t0;
    if (line == NULL)
        fail_msg("Expect: 100-continue with 50 MB: closed without a response");
    char first[64];
    snprintf(first, sizeof first, "%.*s", (int)(ll < 63 ? ll : 63), line);
    if (strncmp(first, "HTTP/1.1 413", 12) != 0 && strncmp(first, "HTTP/1.0 413", 12) != 0)
        fail_msg("Expect: 100-continue with 50 MB: first line \"%s\", expected a 413", first);
    struct resp r;
    assert_int_equal(conn_read_resp(&c, &r, false), 0);
    assert_int_equal(r.status, 413);
    resp_free(&r);
    int after = conn_wait_closed(&c, scale_ms(2000));
    conn_close(&c);
    if (after != 1)
        fail_msg("the connection stayed open after the 413 (%d)", after);
    assert_nothing_published("Expect: 100-continue");
    result_row("Expect: 100-continue, Content-Length 50 MB",
               "\"%s\" after %.1f ms, no 100 Continue before it; connection closed", first, ms);
    PASS();
}

/* ------------------------------------------------------------------ */
/* pipelining                                                          */

struct sender {
    struct conn *c;
    const char *buf;
    size_t len;
    int rc;
};

static void *sender_main(void *arg)
{
    struct sender *s = arg;
    s->rc = conn_send(s->c, s->buf, s->len);
    return NULL;
}

static void test_pipelined_1000(void **state)
{
    (void)state;
    enum { N = 1000 };
    char *all;
    size_t alen;
    FILE *f = xmemstream(&all, &alen);
    for (int i = 0; i < N; i++) {
        if (i % 2 == 0) {
            fprintf(f, "GET /pong HTTP/1.1\r\nHost: x\r\nX-Request-Id: h-pipe-%04d\r\n\r\n", i);
        } else {
            char doc[64];
            int dl = snprintf(doc, sizeof doc, "<doc n=\"%d\"/>", i);
            fprintf(f,
                    "POST /h/ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/xml\r\n"
                    "X-Request-Id: h-pipe-%04d\r\nContent-Length: %d\r\n\r\n%s",
                    i, dl, doc);
        }
    }
    fclose(f);
    struct conn c;
    assert_int_equal(conn_open(&c, g_main.port), 0);
    conn_set_timeout(&c, scale_ms(10000));
    struct sender s = {&c, all, alen, 0};
    pthread_t th;
    double t0 = now_ms();
    assert_int_equal(pthread_create(&th, NULL, sender_main, &s), 0);
    int got = 0, bad = -1, pongs = 0, accepted = 0;
    char why[200] = "";
    for (int i = 0; i < N; i++) {
        struct resp r;
        if (conn_read_resp(&c, &r, false) != 0) {
            snprintf(why, sizeof why, "response %d missing (connection ended or timed out)", i);
            bad = i;
            break;
        }
        char want[32];
        snprintf(want, sizeof want, "h-pipe-%04d", i);
        const char *id = resp_header(&r, "X-Request-Id");
        int wst = i % 2 == 0 ? 200 : 202;
        if (!id || strcmp(id, want) != 0 || r.status != wst) {
            snprintf(why, sizeof why, "response %d: status %d id %s, expected %d %s", i, r.status,
                     id ? id : "(none)", wst, want);
            bad = i;
            resp_free(&r);
            break;
        }
        got++;
        pongs += i % 2 == 0;
        accepted += i % 2 == 1;
        resp_free(&r);
    }
    double ms = now_ms() - t0;
    if (bad >= 0)
        shutdown(c.fd, SHUT_RDWR); /* unblock the sender */
    pthread_join(th, NULL);
    int after = bad < 0 ? conn_wait_closed(&c, 200) : 0;
    conn_close(&c);
    free(all);
    if (bad >= 0)
        fail_msg("%s", why);
    assert_int_equal(s.rc, 0);
    if (after == 2)
        fail_msg("more bytes after the %d responses", N);
    /* Each POST published exactly once. */
    size_t n;
    char **ids = mq_drain_ids(Q_INGEST, &n);
    int seen[N] = {0};
    size_t dup = 0, stray = 0;
    for (size_t k = 0; k < n; k++) {
        int i;
        if (sscanf(ids[k], "h-pipe-%d", &i) == 1 && i >= 0 && i < N && i % 2 == 1) {
            if (seen[i]++)
                dup++;
        } else {
            stray++;
        }
    }
    ids_free(ids, n);
    if (n != (size_t)accepted || dup || stray)
        fail_msg("%zu messages for %d accepted POSTs (%zu duplicates, %zu strays)", n, accepted,
                 dup, stray);
    result_row("1,000 pipelined requests on one connection (GET /pong and POST of a small doc "
               "alternating), sent in one go",
               "%d responses in order in %.0f ms (%.0f req/s), each X-Request-Id its request's; "
               "%d pongs 200, %d POSTs 202, %zu messages in the queue, none twice",
               got, ms, got / (ms / 1000.0), pongs, accepted, n);
    PASS();
}

static void test_pipeline_unread(void **state)
{
    (void)state;
    /* A client that pipelines requests and never reads an answer: once its
     * receive window is full, the bridge can write nothing more; what it
     * keeps reading meanwhile must stay bounded. */
    enum { BLOCK = 64 * 1024 };
    static const char get[] = "GET /pong HTTP/1.1\r\nHost: x\r\n\r\n";
    static char block[BLOCK];
    size_t per = sizeof get - 1, nreq = BLOCK / per;
    for (size_t k = 0; k < nreq; k++)
        memcpy(block + k * per, get, per);
    size_t blen = nreq * per;
    struct mem_mark mm;
    mem_mark(g_main.pid, &mm);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_main.port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    g_nfds = 0;
    fds_track(fd);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        fail_msg("connect: %s", strerror(errno));
    double t0 = now_ms(), closed = -1;
    size_t sent = 0;
    int limit = TIMEOUT_MS + scale_ms(3000);
    long peak = 0;
    while (now_ms() - t0 < limit) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int k = poll(&p, 1, 50);
        long g = mem_growth_kb(g_main.pid, &mm);
        if (g > peak)
            peak = g;
        if (k <= 0)
            continue;
        if (p.revents & (POLLERR | POLLHUP)) {
            closed = now_ms() - t0;
            break;
        }
        ssize_t w = send(fd, block + sent % blen, blen - sent % blen, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            continue;
        if (w <= 0) {
            closed = now_ms() - t0;
            break;
        }
        sent += (size_t)w;
    }
    long growth = mem_growth_kb(g_main.pid, &mm);
    if (growth > peak)
        peak = growth;
    fds_close_all();
    /* Until the bridge stops reading, a client can push what it likes:
     * the bytes it got in are the measure (socket buffers hold a few MB). */
    if (sent > 32u << 20)
        fail_msg("the bridge read %.0f MB from a client that reads nothing (RSS +%ld kB, closed "
                 "after %.0f ms): its read-ahead is unbounded",
                 sent / 1e6, peak, closed);
    if (peak > 16 * 1024 && !instrumented(g_main.pid))
        fail_msg("the bridge's memory grew by %ld kB while a client pipelined %.0f MB without "
                 "reading",
                 peak, sent / 1e6);
    if (closed < 0)
        fail_msg("a client pipelining without reading was still connected after %d ms", limit);
    assert_serving("a client pipelining without reading");
    result_row("pipelining GET /pong without ever reading a response (client receive buffer 4 KB)",
               "%.1f MB sent (%.0f requests), then the connection closed %.0f ms after connect; "
               "bridge RSS peak +%ld kB",
               sent / 1e6, (double)sent / per, closed, peak);
    PASS();
}

static const struct suite SUITE = HOSTILE_SUITE();

/* IT_ONLY=PATTERN runs only the tests whose names match (cmocka's filter). */
int main(void)
{
    const struct CMUnitTest tests[] = {
        HOSTILE_TEST(test_framing),        HOSTILE_TEST(test_413_content_length),
        HOSTILE_TEST(test_413_chunked),    HOSTILE_TEST(test_413_expect_continue),
        HOSTILE_TEST(test_pipelined_1000), HOSTILE_TEST(test_pipeline_unread),
    };
    return suite_run("ingest-bridge hostile input: framing", &SUITE, tests, "IT_ONLY");
}
