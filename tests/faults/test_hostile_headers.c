/* test_hostile_headers.c - abuse in the request head: huge headers,
 * thousands of small ones, NUL bytes and bare LFs, odd request lines. Each
 * gets its 4xx (or a close) and nothing reaches the broker. One of the
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

/* ------------------------------------------------------------------ */
/* oversized and odd headers                                           */

static void test_huge_headers(void **state)
{
    (void)state;
    struct {
        const char *name;
        size_t one;  /* one header value of this many bytes, or */
        size_t many; /* this many 46-byte headers */
        bool refuse; /* over the 64 KiB limit */
    } cases[] = {
        {"one 32 KiB header (control)", 32 * 1024, 0, false},
        {"one 64 KiB header", 64 * 1024, 0, true},
        {"one 1 MiB header", 1024 * 1024, 0, true},
        {"2,000 headers, 92 KB in all", 0, 2000, true},
    };
    char out[4][160];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *raw;
        size_t len;
        FILE *f = xmemstream(&raw, &len);
        fputs("GET /pong HTTP/1.1\r\nHost: x\r\n", f);
        if (cases[i].one) {
            fputs("X-Big: ", f);
            for (size_t k = 0; k < cases[i].one; k++)
                fputc('a' + (int)(k % 26), f);
            fputs("\r\n", f);
        }
        for (size_t k = 0; k < cases[i].many; k++)
            fprintf(f, "X-H-%05zu: %030zu\r\n", k, k);
        fputs("\r\n", f);
        fclose(f);
        struct verdict v;
        probe(g_main.port, raw, len, &v);
        free(raw);
        if (!cases[i].refuse) {
            if (v.got != 1 || v.status != 200)
                fail_msg("%s: %s, expected 200", cases[i].name, v.said);
        } else if (v.got == 1 && (v.status < 400 || v.status > 499)) {
            fail_msg("%s: %s, expected a 4xx or a close", cases[i].name, v.said);
        } else if (v.got == -1) {
            fail_msg("%s: no answer and no close within 5 s", cases[i].name);
        } else if (v.got == 1 && v.after != 1) {
            fail_msg("%s: %s, expected the connection closed after the refusal", cases[i].name,
                     v.said);
        }
        assert_serving(cases[i].name);
        snprintf(out[i], sizeof out[i], "%s: %s", cases[i].name, v.said);
    }
    result_row("64 KiB of headers (limit: request line + headers 64 KiB)",
               "%s; %s; %s; %s; the bridge served the next client (pong 200) after each", out[1],
               out[2], out[3], out[0]);
    PASS();
}

static void test_nul_and_bare_lf(void **state)
{
    (void)state;
    static const char doc[] = "<doc>odd bytes</doc>";
    struct {
        const char *name;
        const char *id;
        const char *fmt; /* request, {N} the body length; '@' becomes NUL */
    } cases[] = {
        {"NUL in a header value", "h-nul-value",
         "POST /h/ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/xml\r\n"
         "X-Odd: ab@cd\r\nX-Request-Id: h-nul-value\r\nContent-Length: {N}\r\n\r\n"},
        {"NUL in a header name", "h-nul-name",
         "POST /h/ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/xml\r\n"
         "X-O@dd: v\r\nX-Request-Id: h-nul-name\r\nContent-Length: {N}\r\n\r\n"},
        {"NUL in Content-Type", "h-nul-ctype",
         "POST /h/ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/xml@text/plain\r\n"
         "X-Request-Id: h-nul-ctype\r\nContent-Length: {N}\r\n\r\n"},
        {"NUL in X-Request-Id", "h-nul-i",
         "POST /h/ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/xml\r\n"
         "X-Request-Id: h-nul-i@d\r\nContent-Length: {N}\r\n\r\n"},
        {"NUL in Transfer-Encoding (chunked NUL gzip)", "h-nul-te",
         "POST /h/ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/xml\r\n"
         "Transfer-Encoding: chunked@, gzip\r\nX-Request-Id: h-nul-te\r\n\r\n{C}\r\n"},
        {"NUL starting a header line (evhttp ends the header block there)", "h-nul-line",
         "POST /h/ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/xml\r\n"
         "X-Request-Id: h-nul-line\r\nContent-Length: {N}\r\n@X-After: 1\r\n"},
        {"bare LF line endings", "h-bare-lf",
         "POST /h/ingest HTTP/1.1\nHost: x\nContent-Type: application/xml\n"
         "X-Request-Id: h-bare-lf\nContent-Length: {N}\n\n"},
        {"CRLF request line, bare LF headers", "h-mixed-lf",
         "POST /h/ingest HTTP/1.1\r\nHost: x\nContent-Type: application/xml\n"
         "X-Request-Id: h-mixed-lf\r\nContent-Length: {N}\n\n"},
        {"bare CR inside a header", "h-bare-cr",
         "POST /h/ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/xml\r\n"
         "X-Odd: a\rb\r\nX-Request-Id: h-bare-cr\r\nContent-Length: {N}\r\n\r\n"},
    };
    const size_t ncases = sizeof cases / sizeof *cases;
    char *row;
    size_t rowlen;
    FILE *rf = xmemstream(&row, &rowlen);
    int published = 0;
    for (size_t i = 0; i < ncases; i++) {
        /* {N}: the body's length; {C}: the same in hex, for one chunk */
        char nbuf[16], cbuf[16];
        snprintf(nbuf, sizeof nbuf, "%zu", sizeof doc - 1);
        snprintf(cbuf, sizeof cbuf, "%zx", sizeof doc - 1);
        bool chunked = strstr(cases[i].fmt, "{C}") != NULL;
        char *t = subst(cases[i].fmt, "{N}", nbuf);
        char *raw = subst(t, "{C}", cbuf);
        free(t);
        size_t n = strlen(raw);
        for (size_t k = 0; k < n; k++)
            if (raw[k] == '@')
                raw[k] = '\0';
        static const char last[] = "\r\n0\r\n\r\n";
        char *full = xmalloc(n + sizeof doc + sizeof last);
        memcpy(full, raw, n);
        memcpy(full + n, doc, sizeof doc - 1);
        size_t flen = n + sizeof doc - 1;
        if (chunked) {
            memcpy(full + flen, last, sizeof last - 1);
            flen += sizeof last - 1;
        }
        free(raw);
        struct verdict v;
        probe(g_main.port, full, flen, &v);
        free(full);
        if (v.got == -1)
            fail_msg("%s: no answer and no close within 5 s", cases[i].name);
        if (v.got == 1 && v.status != 202 && (v.status < 400 || v.status > 499))
            fail_msg("%s: %s, expected 202 or a 4xx", cases[i].name, v.said);
        assert_serving(cases[i].name);
        /* Published once if accepted, never otherwise, never twice. The
         * id the bridge answered with is the message id. */
        size_t all;
        bool ok202 = v.got == 1 && v.status == 202;
        const char *mid = v.id[0] ? v.id : cases[i].id;
        size_t k = queue_count(Q_INGEST, mid, &all);
        if (ok202 && (k != 1 || all != 1))
            fail_msg("%s: 202, but %zu messages with id %s (%zu in all)", cases[i].name, k, mid,
                     all);
        if (!ok202 && all != 0)
            fail_msg("%s: %s, yet %zu messages were published", cases[i].name, v.said, all);
        published += (int)all;
        fprintf(rf, "%s: %s", cases[i].name, v.said);
        if (ok202)
            fprintf(rf, " (published once, id %s)", mid);
        fputs("; ", rf);
    }
    fclose(rf);
    result_row("NUL bytes and bare LF / CR in the request head",
               "%s%d published in all, none twice; the bridge served the next client after each",
               row, published);
    free(row);
    PASS();
}

static void test_many_small_headers(void **state)
{
    (void)state;
    /* Under the 64 KiB limit, but thousands of lines: all parsed, the
     * message's header table stays bounded (128 copied lines). */
    struct {
        const char *name;
        const char *id;
        bool same; /* one name repeated (values joined) rather than distinct names */
    } cases[] = {
        {"5,000 distinct X- headers", "h-many-distinct", false},
        {"5,000 copies of one X- header", "h-many-same", true},
    };
    char out[2][200];
    for (size_t i = 0; i < 2; i++) {
        char *extra;
        size_t elen;
        FILE *f = xmemstream(&extra, &elen);
        fprintf(f, "X-Request-Id: %s\r\n", cases[i].id);
        for (int k = 0; k < 5000; k++)
            if (cases[i].same)
                fputs("X-Same:v\r\n", f);
            else
                fprintf(f, "X-%04d:v\r\n", k);
        fclose(f);
        struct resp r;
        int rc = http_req(g_main.port, "POST", "/h/ingest", XML, extra, DOC, strlen(DOC), &r);
        free(extra);
        assert_resp(rc, &r, 202);
        double ms = r.ms;
        resp_free(&r);
        if (ms > scale_ms(1000))
            fail_msg("%s: answered after %.0f ms", cases[i].name, ms);
        amqp_message_t m;
        if (mq_get(Q_INGEST, &m) != 1)
            fail_msg("%s: 202 but no message", cases[i].name);
        int entries = m.properties.headers.num_entries;
        bool idok = bytes_eq(m.properties.message_id, cases[i].id);
        amqp_destroy_message(&m);
        if (!idok)
            fail_msg("%s: another message in the queue", cases[i].name);
        if (entries > 128 + 8)
            fail_msg("%s: %d headers in the message", cases[i].name, entries);
        snprintf(out[i], sizeof out[i], "%s (50 KB): 202 in %.1f ms, %d AMQP headers",
                 cases[i].name, ms, entries);
    }
    assert_nothing_published("many headers");
    result_row("thousands of small headers under the 64 KiB limit",
               "%s; %s (the copy is capped at 128 lines, 8 KiB a value)", out[0], out[1]);
    PASS();
}

static void test_odd_request_lines(void **state)
{
    (void)state;
    char *longuri = xmalloc(80 * 1024);
    memcpy(longuri, "GET /pong?", 10);
    memset(longuri + 10, 'q', 70 * 1024);
    strcpy(longuri + 10 + 70 * 1024, " HTTP/1.1\r\nHost: x\r\n\r\n");
    struct {
        const char *name;
        const char *raw;
    } cases[] = {
        {"HTTP/0.9 (no version)", "GET /pong\r\n\r\n"},
        {"version HTTP/9.9", "GET /pong HTTP/9.9\r\nHost: x\r\n\r\n"},
        {"version garbage", "GET /pong HTTQ/1.1\r\nHost: x\r\n\r\n"},
        {"unknown method", "BREW /h/ingest HTTP/1.1\r\nHost: x\r\n\r\n"},
        {"absolute-form URI", "GET http://elsewhere.example/pong HTTP/1.1\r\nHost: x\r\n\r\n"},
        {"70 KB URI", longuri},
        {"only CRLFs", "\r\n\r\n\r\n\r\n"},
        {"binary garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"},
    };
    const size_t n = sizeof cases / sizeof *cases;
    char *row;
    size_t rl;
    FILE *f = xmemstream(&row, &rl);
    for (size_t i = 0; i < n; i++) {
        struct verdict v;
        probe(g_main.port, cases[i].raw, strlen(cases[i].raw), &v);
        if (v.got == -1)
            fail_msg("%s: no answer and no close within 5 s", cases[i].name);
        assert_serving(cases[i].name);
        fprintf(f, "%s%s: %s", i ? "; " : "", cases[i].name, v.said);
    }
    fclose(f);
    free(longuri);
    assert_nothing_published("odd request lines");
    result_row("odd request lines (HTTP/0.9, unknown versions and methods, absolute-form, a 70 KB "
               "URI, bare CRLFs, a TLS hello)",
               "%s; the bridge served the next client after each", row);
    free(row);
    PASS();
}

static const struct suite SUITE = HOSTILE_SUITE();

/* IT_ONLY=PATTERN runs only the tests whose names match (cmocka's filter). */
int main(void)
{
    const struct CMUnitTest tests[] = {
        HOSTILE_TEST(test_huge_headers),
        HOSTILE_TEST(test_many_small_headers),
        HOSTILE_TEST(test_nul_and_bare_lf),
        HOSTILE_TEST(test_odd_request_lines),
    };
    return suite_run("ingest-bridge hostile input: headers", &SUITE, tests, "IT_ONLY");
}
