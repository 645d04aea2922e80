/* test_hostile_xml.c - hostile XML: XXE by file and by URL, entity bombs,
 * deep nesting, XInclude, odd encodings, 1 MB documents under load, and
 * documents whose check would cost more than linear. Nothing leaves a file,
 * no connection goes out, and the check's cost stays bounded. One of the
 * hostile input suites (the shared part: hostile.[ch]). */

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
#define MARKER "H0STILE-SECRET-7f3a" /* must never leave a file */

/* Files the XML tests point entities at, in the run's temporary directory. */
static char g_secret[512]; /* holds MARKER */
static char g_dtd[512];    /* an external DTD declaring entity e = MARKER */
static char g_inc[512];    /* an XInclude target holding MARKER */

/* UTF-8 TEXT (BMP characters only) as UTF-16 with a byte-order mark, big
 * or little endian. malloc'd; *LEN bytes. */
static char *utf16(const char *text, bool big, size_t *len)
{
    size_t n = strlen(text);
    unsigned char *out = xmalloc(2 * n + 2), *o = out;
    *o++ = big ? 0xfe : 0xff;
    *o++ = big ? 0xff : 0xfe;
    for (const unsigned char *p = (const unsigned char *)text; *p;) {
        unsigned cp;
        if (*p < 0x80)
            cp = *p++;
        else if ((*p & 0xe0) == 0xc0)
            cp = (unsigned)(p[0] & 0x1f) << 6 | (p[1] & 0x3f), p += 2;
        else
            cp = (unsigned)(p[0] & 0x0f) << 12 | (unsigned)(p[1] & 0x3f) << 6 | (p[2] & 0x3f),
            p += 3;
        *o++ = (unsigned char)(big ? cp >> 8 : cp & 0xff);
        *o++ = (unsigned char)(big ? cp & 0xff : cp >> 8);
    }
    *len = (size_t)(o - out);
    return (char *)out;
}

/* ------------------------------------------------------------------ */
/* a listener of ours, counting who comes (XXE by URL must never)      */

struct listener {
    int fd;
    int port;
    pthread_t th;
    bool running;
    atomic_int conns; /* connections accepted */
    atomic_bool stop; /* set by group_teardown */
    char first[256];  /* the first request line seen, for the failure message */
};
static struct listener g_lis = {.fd = -1};

static void *listener_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&g_lis.stop)) {
        struct pollfd p = {.fd = g_lis.fd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0)
            continue;
        int c = accept4(g_lis.fd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0)
            continue;
        char buf[1024];
        struct timeval tv = {0, 200000};
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        ssize_t n = recv(c, buf, sizeof buf - 1, 0);
        if (n > 0 && atomic_load(&g_lis.conns) == 0) {
            buf[n] = '\0';
            snprintf(g_lis.first, sizeof g_lis.first, "%.*s", (int)strcspn(buf, "\r\n"), buf);
        }
        atomic_fetch_add(&g_lis.conns, 1);
        static const char answer[] = "HTTP/1.0 200 OK\r\nContent-Type: application/xml-dtd\r\n\r\n"
                                     "<!ENTITY e \"" MARKER "\">\n";
        (void)send(c, answer, sizeof answer - 1, MSG_NOSIGNAL);
        close(c);
    }
    return NULL;
}

static int listener_start(void)
{
    g_lis.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    if (g_lis.fd < 0 || bind(g_lis.fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        listen(g_lis.fd, 64) != 0 || getsockname(g_lis.fd, (struct sockaddr *)&sa, &sl) != 0)
        return -1;
    g_lis.port = ntohs(sa.sin_port);
    if (pthread_create(&g_lis.th, NULL, listener_main, NULL) != 0)
        return -1;
    g_lis.running = true;
    return 0;
}

static void listener_stop(void)
{
    if (g_lis.running) {
        atomic_store(&g_lis.stop, true);
        pthread_join(g_lis.th, NULL);
        g_lis.running = false;
    }
    if (g_lis.fd >= 0)
        close(g_lis.fd);
    g_lis.fd = -1;
}

/* ------------------------------------------------------------------ */
/* fixtures                                                            */

/* The files the XML tests point entities at, the listener XXE by URL must
 * never reach, and h.load. */
static int hostile_prepare(void)
{
    snprintf(g_secret, sizeof g_secret, "%s/secret.txt", g_harness.tmp);
    write_file(g_secret, MARKER "\n");
    snprintf(g_dtd, sizeof g_dtd, "%s/x.dtd", g_harness.tmp);
    write_file(g_dtd, "<!ENTITY e \"" MARKER "\">\n");
    snprintf(g_inc, sizeof g_inc, "%s/inc.xml", g_harness.tmp);
    write_file(g_inc, "<included>" MARKER "</included>\n");
    if (listener_start() != 0) {
        perror("listener");
        return -1;
    }
    /* h.load keeps the last 4 documents: the load test sends hundreds of MB. */
    amqp_table_entry_t e = {.key = amqp_cstring_bytes("x-max-length"),
                            .value = {.kind = AMQP_FIELD_KIND_I32, .value.i32 = 4}};
    if (!mq_declare(Q_LOAD, (amqp_table_t){1, &e})) {
        fprintf(stderr, "cannot reach the test broker on port %d\n", g_harness.broker_port);
        return -1;
    }
    return 0;
}

static void hostile_finish(void)
{
    listener_stop();
    if (mq_connect()) {
        mq_purge(Q_LOAD);
        amqp_queue_delete(g_harness.mq, 1, amqp_cstring_bytes(Q_LOAD), 0, 0);
        (void)mq_ok(amqp_get_rpc_reply(g_harness.mq), "queue.delete");
    }
}

/* ------------------------------------------------------------------ */
/* hostile XML                                                         */

/* POST BODY (LEN bytes) to /h/ingest as application/xml with id ID. */
static void post_xml(const char *id, const void *body, size_t len, struct resp *r)
{
    char extra[200];
    snprintf(extra, sizeof extra, "X-Request-Id: %s\r\n", id);
    int rc = http_req(g_main.port, "POST", "/h/ingest", XML, extra, body, len, r);
    if (rc != 0)
        fail_msg("%s: no whole response", id);
}

static void test_xxe(void **state)
{
    (void)state;
    int lp = g_lis.port;
    atomic_store(&g_lis.conns, 0);
    struct {
        const char *kind; /* result row it counts toward */
        const char *name;
        char *doc;
        size_t len;
    } cases[16];
    size_t n = 0;
#define XXE(k, nm, ...)                                                                            \
    do {                                                                                           \
        cases[n].kind = (k);                                                                       \
        cases[n].name = (nm);                                                                      \
        int l_ = asprintf(&cases[n].doc, __VA_ARGS__);                                             \
        if (l_ < 0)                                                                                \
            abort();                                                                               \
        cases[n].len = (size_t)l_;                                                                 \
        n++;                                                                                       \
    } while (0)
    XXE("file", "file:// entity",
        "<?xml version=\"1.0\"?>\n<!DOCTYPE r [<!ENTITY x SYSTEM \"file://%s\">]>\n<r>&x;</r>\n",
        g_secret);
    XXE("file", "plain-path entity",
        "<?xml version=\"1.0\"?>\n<!DOCTYPE r [<!ENTITY x SYSTEM \"%s\">]>\n<r>&x;</r>\n",
        g_secret);
    XXE("file", "entity in an attribute",
        "<!DOCTYPE r [<!ENTITY x SYSTEM \"file://%s\">]>\n<r a=\"&x;\"/>\n", g_secret);
    XXE("url", "http:// entity",
        "<?xml version=\"1.0\"?>\n<!DOCTYPE r [<!ENTITY x SYSTEM \"http://127.0.0.1:%d/e.xml\">]>"
        "\n<r>&x;</r>\n",
        lp);
    XXE("url", "http:// entity, PUBLIC id",
        "<!DOCTYPE r [<!ENTITY x PUBLIC \"-//H//E//EN\" \"http://127.0.0.1:%d/p.xml\">]>\n"
        "<r>&x;</r>\n",
        lp);
    XXE("param", "parameter entity by http://",
        "<?xml version=\"1.0\"?>\n<!DOCTYPE r [<!ENTITY %% p SYSTEM "
        "\"http://127.0.0.1:%d/p.dtd\"> %%p;]>\n<r>&e;</r>\n",
        lp);
    XXE("param", "parameter entity by file",
        "<?xml version=\"1.0\"?>\n<!DOCTYPE r [<!ENTITY %% p SYSTEM \"file://%s\"> %%p;]>\n"
        "<r>&e;</r>\n",
        g_dtd);
    XXE("param", "parameter entity defining an entity on a file",
        "<!DOCTYPE r [<!ENTITY %% p \"<!ENTITY x SYSTEM 'file://%s'>\"> %%p;]>\n<r>&x;</r>\n",
        g_secret);
    XXE("dtd", "external DTD by http://",
        "<?xml version=\"1.0\"?>\n<!DOCTYPE r SYSTEM \"http://127.0.0.1:%d/x.dtd\">\n"
        "<r>&e;</r>\n",
        lp);
    XXE("dtd", "external DTD by file", "<!DOCTYPE r SYSTEM \"file://%s\">\n<r>&e;</r>\n", g_dtd);
    XXE("dtd", "external DTD, PUBLIC id",
        "<!DOCTYPE r PUBLIC \"-//H//DTD//EN\" \"http://127.0.0.1:%d/pub.dtd\">\n<r>&e;</r>\n", lp);
    XXE("dtd", "external DTD and an internal subset",
        "<!DOCTYPE r SYSTEM \"http://127.0.0.1:%d/y.dtd\" [<!ENTITY z \"z\">]>\n<r>&e;&z;</r>\n",
        lp);
#undef XXE
    /* The same attack in UTF-16: the refusal must not depend on the encoding. */
    {
        char *ascii = NULL;
        if (asprintf(&ascii,
                     "<?xml version=\"1.0\" encoding=\"UTF-16\"?>\n"
                     "<!DOCTYPE r [<!ENTITY x SYSTEM \"file://%s\">]>\n<r>&x;</r>\n",
                     g_secret) < 0)
            abort();
        cases[n].kind = "file";
        cases[n].name = "file:// entity, UTF-16";
        cases[n].doc = utf16(ascii, false, &cases[n].len);
        free(ascii);
        n++;
    }
    struct {
        const char *kind;
        int n;
        double worst;
    } kinds[] = {{"file", 0, 0}, {"url", 0, 0}, {"param", 0, 0}, {"dtd", 0, 0}};
    for (size_t i = 0; i < n; i++) {
        char rid[32];
        snprintf(rid, sizeof rid, "h-xxe-%zu", i);
        struct resp r;
        post_xml(rid, cases[i].doc, cases[i].len, &r);
        if (r.status != 400)
            fail_msg("XXE %s: status %d, expected 400; body %.200s", cases[i].name, r.status,
                     r.body ? r.body : "");
        if (memmem(r.head ? r.head : "", r.head ? strlen(r.head) : 0, MARKER, strlen(MARKER)) ||
            memmem(r.body, r.body_len, MARKER, strlen(MARKER)))
            fail_msg("XXE %s: the secret is in the response", cases[i].name);
        for (size_t k = 0; k < 4; k++)
            if (strcmp(kinds[k].kind, cases[i].kind) == 0) {
                kinds[k].n++;
                if (r.ms > kinds[k].worst)
                    kinds[k].worst = r.ms;
            }
        resp_free(&r);
        free(cases[i].doc);
    }
    assert_nothing_published("XXE");
    sleep_ms(200); /* a fetch, were there one, would be in flight by now */
    int conns = atomic_load(&g_lis.conns);
    if (conns != 0)
        fail_msg("%d connections to our listener (first: \"%s\")", conns, g_lis.first);
    if (log_count(&g_main, MARKER) != 0)
        fail_msg("the secret is in the bridge's log");
    static const char *const what[] = {
        "XXE by file: external entity on a local file holding a marker (file://, plain path, in "
        "an attribute, UTF-16)",
        "XXE by URL: external entity on http://127.0.0.1 (SYSTEM, PUBLIC), a listener counting "
        "connections",
        "XXE by parameter entity (http://, file, one defining a file entity)",
        "XXE by external DTD (SYSTEM http:// and file, PUBLIC, with an internal subset)",
    };
    for (size_t k = 0; k < 4; k++)
        result_row(what[k],
                   "%d of %d documents 400 (DOCTYPE refused), slowest %.1f ms; marker in 0 "
                   "responses, 0 messages, 0 log lines; 0 connections to the listener",
                   kinds[k].n, kinds[k].n, kinds[k].worst);
    PASS();
}

static void test_entity_bombs(void **state)
{
    (void)state;
    /* Billion laughs: 10 levels of 10 references. */
    char *laughs;
    size_t ll;
    FILE *f = xmemstream(&laughs, &ll);
    fputs("<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n<!ENTITY lol \"lol\">\n", f);
    for (int lv = 1; lv <= 9; lv++) {
        fprintf(f, "<!ENTITY lol%d \"", lv);
        for (int k = 0; k < 10; k++)
            fprintf(f, lv == 1 ? "&lol;" : "&lol%d;", lv - 1);
        fputs("\">\n", f);
    }
    fputs("]>\n<lolz>&lol9;</lolz>\n", f);
    fclose(f);
    /* Quadratic blow-up: one 100 KB entity referenced 10,000 times. */
    char *quad;
    size_t ql;
    f = xmemstream(&quad, &ql);
    fputs("<?xml version=\"1.0\"?>\n<!DOCTYPE r [<!ENTITY a \"", f);
    for (int k = 0; k < 100 * 1000; k++)
        fputc('a', f);
    fputs("\">]>\n<r>", f);
    for (int k = 0; k < 10000; k++)
        fputs("&a;", f);
    fputs("</r>\n", f);
    fclose(f);

    struct {
        const char *id;
        const char *doc;
        size_t len;
        double ms;
        long growth;
        bool hwm;
    } c[] = {{"h-laughs", laughs, ll, 0, 0, false}, {"h-quadratic", quad, ql, 0, 0, false}};
    for (size_t i = 0; i < 2; i++) {
        struct mem_mark mm;
        mem_mark(g_main.pid, &mm);
        struct resp r;
        post_xml(c[i].id, c[i].doc, c[i].len, &r);
        c[i].growth = mem_growth_kb(g_main.pid, &mm);
        c[i].hwm = mm.hwm_ok;
        c[i].ms = r.ms;
        int st = r.status;
        resp_free(&r);
        if (st != 400)
            fail_msg("%s: status %d, expected 400", c[i].id, st);
        if (c[i].ms > scale_ms(1000))
            fail_msg("%s: answered after %.0f ms", c[i].id, c[i].ms);
        if (c[i].growth > rss_bound_kb(4 * 1024))
            fail_msg("%s: the bridge's memory grew by %ld kB", c[i].id, c[i].growth);
    }
    free(laughs);
    free(quad);
    assert_nothing_published("entity bombs");
    assert_serving("entity bombs");
    result_row("billion laughs (10 levels x 10 references, 10^9 \"lol\"s)",
               "400 in %.1f ms (request to response), bridge RSS %s +%ld kB; nothing published",
               c[0].ms, c[0].hwm ? "peak" : "", c[0].growth);
    result_row("quadratic blow-up (one 100 KB entity referenced 10,000 times, 130 KB document)",
               "400 in %.1f ms, bridge RSS %s +%ld kB; nothing published", c[1].ms,
               c[1].hwm ? "peak" : "", c[1].growth);
    PASS();
}

static void test_deep_nesting(void **state)
{
    (void)state;
    static const size_t depths[] = {10000, 140000};
    double ms[2];
    char msg[2][120];
    for (size_t i = 0; i < 2; i++) {
        size_t d = depths[i], len = d * 7;
        char *doc = xmalloc(len + 1);
        for (size_t k = 0; k < d; k++) {
            memcpy(doc + 3 * k, "<a>", 3);
            memcpy(doc + 3 * d + 4 * k, "</a>", 4);
        }
        doc[len] = '\0';
        assert_true(len <= MAX_BODY);
        char rid[32];
        snprintf(rid, sizeof rid, "h-deep-%zu", d);
        struct resp r;
        post_xml(rid, doc, len, &r);
        free(doc);
        ms[i] = r.ms;
        snprintf(msg[i], sizeof msg[i], "%.100s", r.body ? r.body : "");
        msg[i][strcspn(msg[i], "\n")] = '\0';
        int st = r.status;
        resp_free(&r);
        if (st != 400)
            fail_msg("%zu-deep: status %d, expected 400", d, st);
        if (ms[i] > scale_ms(1000))
            fail_msg("%zu-deep: answered after %.0f ms", d, ms[i]);
    }
    assert_nothing_published("deep nesting");
    assert_serving("deep nesting");
    result_row("10,000-deep nesting (70 KB), and 140,000-deep (980 KB)",
               "400 in %.1f ms and %.1f ms (\"%s\"); no crash, nothing published", ms[0], ms[1],
               msg[0]);
    PASS();
}

/* The one message in Q_INGEST must be BODY, byte for byte. */
static void assert_published_as_is(const char *what, const char *id, const char *body, size_t len)
{
    amqp_message_t m;
    if (mq_get(Q_INGEST, &m) != 1)
        fail_msg("%s: 202 but no message in %s", what, Q_INGEST);
    bool same = m.body.len == len && memcmp(m.body.bytes, body, len) == 0;
    bool idok = bytes_eq(m.properties.message_id, id);
    bool marker = memmem(m.body.bytes, m.body.len, MARKER, strlen(MARKER)) != NULL;
    size_t got = m.body.len;
    amqp_destroy_message(&m);
    if (!same)
        fail_msg("%s: the message body (%zu bytes) differs from the request's (%zu)", what, got,
                 len);
    if (!idok)
        fail_msg("%s: the message is not the request's (message_id)", what);
    if (marker)
        fail_msg("%s: the marker is in the message", what);
    if (mq_get(Q_INGEST, &m) == 1) {
        amqp_destroy_message(&m);
        fail_msg("%s: more than one message", what);
    }
}

static void test_xinclude(void **state)
{
    (void)state;
    atomic_store(&g_lis.conns, 0);
    char *doc = NULL;
    int len = asprintf(&doc,
                       "<?xml version=\"1.0\"?>\n"
                       "<r xmlns:xi=\"http://www.w3.org/2001/XInclude\">\n"
                       "  <xi:include href=\"file://%s\" parse=\"text\"/>\n"
                       "  <xi:include href=\"%s\"/>\n"
                       "  <xi:include href=\"http://127.0.0.1:%d/inc.xml\"/>\n"
                       "</r>\n",
                       g_inc, g_inc, g_lis.port);
    if (len < 0)
        abort();
    struct resp r;
    post_xml("h-xinclude", doc, (size_t)len, &r);
    int st = r.status;
    double ms = r.ms;
    resp_free(&r);
    if (st != 202)
        fail_msg("XInclude document: status %d, expected 202 (accepted as-is)", st);
    assert_published_as_is("XInclude", "h-xinclude", doc, (size_t)len);
    free(doc);
    sleep_ms(100);
    if (atomic_load(&g_lis.conns) != 0)
        fail_msg("%d connections to our listener", atomic_load(&g_lis.conns));
    result_row("XInclude (xi:include of a local file holding a marker, as text and as XML, and "
               "of an http:// URL)",
               "202 in %.1f ms; the message is the request body byte for byte (%d bytes), "
               "marker absent, 0 connections to the listener",
               ms, len);
    PASS();
}

static void test_encodings(void **state)
{
    (void)state;
    static const char text[] = "<?xml version=\"1.0\" encoding=\"UTF-16\"?>\n"
                               "<r lang=\"fr\">h\xc3\xa9llo \xe6\x97\xa5\xe6\x9c\xac</r>\n";
    for (int big = 0; big <= 1; big++) {
        size_t len;
        char *doc = utf16(text, big, &len);
        const char *id = big ? "h-utf16be" : "h-utf16le";
        struct resp r;
        post_xml(id, doc, len, &r);
        int st = r.status;
        char body[200];
        snprintf(body, sizeof body, "%.190s", r.body ? r.body : "");
        resp_free(&r);
        if (st != 202)
            fail_msg("UTF-16%s with BOM: status %d, expected 202; %s", big ? "BE" : "LE", st, body);
        assert_published_as_is(id, id, doc, len);
        free(doc);
    }
    struct {
        const char *name;
        const char *doc;
    } bad[] = {
        {"C3 28 (bad continuation)", "<?xml version=\"1.0\" encoding=\"UTF-8\"?><r>\xc3\x28</r>"},
        {"FF (never UTF-8), no declaration", "<r>\xff</r>"},
        {"C0 AF (overlong /)", "<?xml version=\"1.0\" encoding=\"UTF-8\"?><r>\xc0\xaf</r>"},
        {"ED A0 80 (a UTF-16 surrogate)",
         "<?xml version=\"1.0\" encoding=\"UTF-8\"?><r>\xed\xa0\x80</r>"},
        {"F4 90 80 80 (above U+10FFFF)", "<?xml version=\"1.0\"?><r>\xf4\x90\x80\x80</r>"},
        {"E2 82 (truncated) in an attribute", "<?xml version=\"1.0\"?><r a=\"\xe2\x82\"/>"},
        {"80 in an element name", "<?xml version=\"1.0\"?><r\x80/>"},
    };
    const size_t nbad = sizeof bad / sizeof *bad;
    for (size_t i = 0; i < nbad; i++) {
        char rid[32];
        snprintf(rid, sizeof rid, "h-badutf8-%zu", i);
        struct resp r;
        post_xml(rid, bad[i].doc, strlen(bad[i].doc), &r);
        int st = r.status;
        resp_free(&r);
        if (st != 400)
            fail_msg("invalid UTF-8 %s: status %d, expected 400", bad[i].name, st);
    }
    assert_nothing_published("invalid UTF-8");
    result_row("UTF-16 with a BOM (LE and BE, non-ASCII text), valid",
               "202 each; the message body is the request body byte for byte");
    result_row("invalid UTF-8 in a UTF-8 document (bad continuation, FF, overlong, surrogate, "
               "above U+10FFFF, truncated in an attribute, in a name)",
               "%zu of %zu: 400; nothing published", nbad, nbad);
    PASS();
}

/* ------------------------------------------------------------------ */
/* 1 MB documents under load                                           */

struct loader {
    int port;
    const char *req; /* a whole POST of the 1 MB document */
    size_t len;
    double until;    /* now_ms() deadline */
    int accepted;    /* 202 */
    int unavailable; /* 503 */
    int other;       /* any other status */
    int broken;      /* no whole response */
    int last_other;  /* the last such status */
};

static void *loader_main(void *arg)
{
    struct loader *l = arg;
    struct conn c = {.fd = -1};
    while (now_ms() < l->until) {
        if (c.fd < 0 && conn_open(&c, l->port) != 0) {
            l->broken++;
            sleep_ms(10);
            continue;
        }
        struct resp r;
        if (exchange(&c, l->req, l->len, &r, false) != 0) {
            l->broken++;
            conn_close(&c);
            resp_free(&r);
            continue;
        }
        if (r.status == 202)
            l->accepted++;
        else if (r.status == 503)
            l->unavailable++;
        else {
            l->other++;
            l->last_other = r.status;
        }
        const char *conn = resp_header(&r, "Connection");
        if (conn && strcasecmp(conn, "close") == 0)
            conn_close(&c);
        resp_free(&r);
    }
    if (c.fd >= 0)
        conn_close(&c);
    return NULL;
}

struct pinger {
    int port;
    double until;
    double *ms; /* latencies */
    int n, cap;
    int bad;
};

static void *pinger_main(void *arg)
{
    struct pinger *p = arg;
    while (now_ms() < p->until && p->n < p->cap) {
        double ms = pong_ms(p->port);
        if (ms < 0)
            p->bad++;
        else
            p->ms[p->n++] = ms;
        sleep_ms(5);
    }
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void test_1mb_under_load(void **state)
{
    (void)state;
    enum { LOADERS = 3, SECONDS = 5 };
    size_t dlen = 1000 * 1000;
    char *doc = make_doc(dlen);
    size_t rlen;
    char *req = fmt_request(&rlen, "POST", "/h/load", XML, NULL, doc, dlen);
    free(doc);
    double until = now_ms() + SECONDS * 1000;
    struct loader l[LOADERS];
    pthread_t lt[LOADERS], pt;
    struct pinger p = {.port = g_main.port, .until = until, .cap = 20000};
    p.ms = xmalloc((size_t)p.cap * sizeof *p.ms);
    for (int i = 0; i < LOADERS; i++) {
        l[i] = (struct loader){.port = g_main.port, .req = req, .len = rlen, .until = until};
        if (pthread_create(&lt[i], NULL, loader_main, &l[i]) != 0)
            abort();
    }
    if (pthread_create(&pt, NULL, pinger_main, &p) != 0)
        abort();
    pthread_join(pt, NULL);
    int accepted = 0, unavailable = 0, other = 0, broken = 0, last_other = 0;
    for (int i = 0; i < LOADERS; i++) {
        pthread_join(lt[i], NULL);
        accepted += l[i].accepted;
        unavailable += l[i].unavailable;
        other += l[i].other;
        broken += l[i].broken;
        if (l[i].other)
            last_other = l[i].last_other;
    }
    free(req);
    qsort(p.ms, (size_t)p.n, sizeof *p.ms, cmp_double);
    int n = p.n;
    double p50 = n ? p.ms[n / 2] : 0, p99 = n ? p.ms[(n * 99) / 100] : 0, max = n ? p.ms[n - 1] : 0;
    free(p.ms);
    if (p.bad)
        fail_msg("%d of %d pongs under load were not 200", p.bad, p.bad + n);
    if (n < 50)
        fail_msg("only %d pongs in %d s under load", n, SECONDS);
    if (other || broken)
        fail_msg("1 MB documents: %d answered %d, %d without a whole response", other, last_other,
                 broken);
    if (accepted < 1)
        fail_msg("no 1 MB document accepted in %d s (%d 503)", SECONDS, unavailable);
    if (max > scale_ms(500))
        fail_msg("pong latency under load: p50 %.1f ms, p99 %.1f ms, max %.1f ms (> 500)", p50, p99,
                 max);
    assert_serving("1 MB documents under load");
    result_row("1 MB well-formed documents under load: 3 clients posting them back to back for "
               "5 s (non-persistent, confirms on) while a 4th sends GET /pong every 5 ms",
               "%d documents 202 (%.0f MB/s), %d 503, nothing else; %d pongs all 200: p50 %.1f "
               "ms, p99 %.1f ms, max %.1f ms",
               accepted, accepted * (dlen / 1e6) / SECONDS, unavailable, n, p50, p99, max);
    PASS();
}

/* IT_ONLY=PATTERN runs only the tests whose names match (cmocka's filter). */
/* ------------------------------------------------------------------ */
/* XML whose check cost more than linear (issue 11, item 1)            */

/* One kind of hostile body: ~1 MiB, well-formed or nearly, and the words its
 * 400 must hold. */
struct costly {
    const char *what; /* for the messages */
    const char *want; /* in the 400's text */
    char *req;        /* the whole POST */
    size_t len;
};

/* HEAD, then PRE N POST for N = 0, 1... (PRE POST alone when !NUMBERED)
 * until ~1 MiB, then TAIL. */
static char *costly_doc(const char *const part[4], bool numbered, size_t *len)
{
    size_t cap = MAX_BODY, n = 0;
    char *d = xmalloc(cap + 64);
    n += (size_t)snprintf(d, cap, "%s", part[0]);
    for (int i = 0; n + 64 + strlen(part[3]) < cap - 64; i++) {
        if (numbered)
            n += (size_t)snprintf(d + n, 64, "%s%d%s", part[1], i, part[2]);
        else
            n += (size_t)snprintf(d + n, 64, "%s%s", part[1], part[2]);
    }
    n += (size_t)snprintf(d + n, cap + 64 - n, "%s", part[3]);
    *len = n;
    return d;
}

struct flooder {
    int port;
    const struct costly *kinds;
    int nkinds;
    double until;
    int sent;       /* bodies answered */
    int refused;    /* 400 naming the limit */
    int wrong;      /* anything else */
    char last[300]; /* the last wrong answer */
};

static void *flooder_main(void *arg)
{
    struct flooder *f = arg;
    struct conn c = {.fd = -1};
    for (int i = 0; now_ms() < f->until; i++) {
        const struct costly *k = &f->kinds[i % f->nkinds];
        if (c.fd < 0 && conn_open(&c, f->port) != 0) {
            f->wrong++;
            snprintf(f->last, sizeof f->last, "%s: cannot connect", k->what);
            sleep_ms(10);
            continue;
        }
        struct resp r;
        int rc = exchange(&c, k->req, k->len, &r, false);
        f->sent++;
        if (rc == 0 && r.status == 400 && r.body != NULL && strstr(r.body, k->want) != NULL)
            f->refused++;
        else {
            f->wrong++;
            snprintf(f->last, sizeof f->last, "%s: %d %.200s", k->what, rc == 0 ? r.status : -1,
                     rc == 0 && r.body ? r.body : "(no response)");
        }
        const char *conn = rc == 0 ? resp_header(&r, "Connection") : "close";
        if (conn != NULL && strcasecmp(conn, "close") == 0)
            conn_close(&c);
        resp_free(&r);
    }
    if (c.fd >= 0)
        conn_close(&c);
    return NULL;
}

/* A one-worker bridge, so that the pongs share the worker that checks the
 * hostile bodies: while a client sends them for a few seconds, another
 * measures pongs. On main each body kept the worker in libxml2 for seconds
 * (80,000 attributes: 3.5 s), and so the pongs. */
static void test_xml_cost_flood(void **state)
{
    (void)state;
    enum { SECONDS = 4 };
    static const int one = 1;
    bridge_start(&g_aux, "xmlcost", h_config, &one);
    struct costly kinds[] = {
        {"80,000 attributes on one element", "more than 128 attributes", NULL, 0},
        {"80,000 xmlns:pN on one element", "more than 64 namespace declarations", NULL, 0},
        {"100,000 distinct element names", "more than 10000 distinct names", NULL, 0},
        {"1 MiB of bad references in one value", "EntityRef: expecting ';'", NULL, 0},
    };
    static const char *const parts[][4] = {
        {"<r", " a", "=''", "/>"},
        {"<r", " xmlns:p", "='u'", "/>"},
        {"<r>", "<e", "/>", "</r>"},
        {"<r a='", "&x", "", "'/>"},
    };
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++) {
        size_t dlen;
        char *doc = costly_doc(parts[i], i < 3, &dlen);
        kinds[i].req = fmt_request(&kinds[i].len, "POST", "/h/ingest", XML, NULL, doc, dlen);
        free(doc);
    }
    double before = pong_ms(g_aux.port);
    double until = now_ms() + SECONDS * 1000;
    struct flooder f = {.port = g_aux.port, .kinds = kinds, .nkinds = 4, .until = until};
    struct pinger p = {.port = g_aux.port, .until = until, .cap = 20000};
    p.ms = xmalloc((size_t)p.cap * sizeof *p.ms);
    pthread_t ft, pt;
    if (pthread_create(&ft, NULL, flooder_main, &f) != 0 ||
        pthread_create(&pt, NULL, pinger_main, &p) != 0)
        abort();
    pthread_join(ft, NULL);
    pthread_join(pt, NULL);
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++)
        free(kinds[i].req);
    qsort(p.ms, (size_t)p.n, sizeof *p.ms, cmp_double);
    int n = p.n;
    double p50 = n ? p.ms[n / 2] : 0, max = n ? p.ms[n - 1] : 0;
    free(p.ms);
    print_message(
        "  %d hostile bodies in %d s, %d refused naming the limit; %d pongs, p50 %.1f ms, "
        "slowest %.1f ms (before: %.1f ms)\n",
        f.sent, SECONDS, f.refused, n, p50, max, before);
    if (f.wrong)
        fail_msg("%d of %d hostile bodies not refused with the limit; last: %s", f.wrong, f.sent,
                 f.last);
    if (f.sent < 4)
        fail_msg("only %d hostile bodies answered in %d s", f.sent, SECONDS);
    if (p.bad)
        fail_msg("%d of %d pongs during the flood were not 200", p.bad, p.bad + n);
    /* Generous: a fixed bridge answers in a few ms, main took seconds. */
    if (max > scale_ms(500))
        fail_msg("the slowest pong on the worker took %.1f ms during the flood (p50 %.1f ms)", max,
                 p50);
    result_row("XML whose check cost more than linear, ~1 MiB each, for 4 s at a one-worker bridge "
               "(80,000 attributes or xmlns:pN on one element, 100,000 distinct names, bad "
               "references in one value)",
               "%d of %d: 400 naming the limit; pongs on the same worker during it: p50 %.1f ms, "
               "slowest %.1f ms",
               f.refused, f.sent, p50, max);
    PASS();
}

static const struct suite SUITE =
    HOSTILE_SUITE(.prepare = hostile_prepare, .finish = hostile_finish);

/* IT_ONLY=PATTERN runs only the tests whose names match (cmocka's filter). */
int main(void)
{
    const struct CMUnitTest tests[] = {
        HOSTILE_TEST(test_xxe),
        HOSTILE_TEST(test_entity_bombs),
        HOSTILE_TEST(test_deep_nesting),
        HOSTILE_TEST(test_xinclude),
        HOSTILE_TEST(test_encodings),
        HOSTILE_TEST(test_1mb_under_load),
        HOSTILE_TEST(test_xml_cost_flood),
    };
    return suite_run("ingest-bridge hostile input: xml", &SUITE, tests, "IT_ONLY");
}
