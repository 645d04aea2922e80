/* test_hdrmap.c - the AMQP headers of the contract: path, query, X-* headers
 * lower-cased and joined, X-Forwarded-For + client, exclusions, limits, and
 * reuse of one map across many requests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "bridge/base/hdrmap.h"

/* One request header, as http/ offers it. */
struct hdr {
    const char *name;
    const char *value;
};

/* Map one request, the way worker.c does: HDRS ends with a NULL name. */
static void map_request(struct hdrmap *m, const char *path, const char *query,
                        const struct hdr *hdrs, const char *client)
{
    hdrmap_clear(m);
    assert_int_equal(hdrmap_begin(m, path, query), 0);
    for (size_t i = 0; hdrs != NULL && hdrs[i].name != NULL; i++)
        assert_int_equal(hdrmap_add(m, hdrs[i].name, hdrs[i].value), 0);
    assert_int_equal(hdrmap_finish(m, client), 0);
}

static void assert_kv(const struct hdrmap *m, size_t i, const char *name, const char *value)
{
    assert_true(i < m->n);
    assert_string_equal(m->kv[i].name, name);
    assert_string_equal(m->kv[i].value, value);
}

/* A string of LEN copies of C (caller frees). */
static char *filled(size_t len, char c)
{
    char *s = malloc(len + 1);
    assert_non_null(s);
    memset(s, c, len);
    s[len] = '\0';
    return s;
}

static void test_wanted(void **state)
{
    (void)state;
    assert_true(hdrmap_wanted("X-Tenant-ID"));
    assert_true(hdrmap_wanted("x-lower"));
    assert_true(hdrmap_wanted("X-Forwarded-For"));
    assert_true(hdrmap_wanted("X-Request-Ids")); /* only the exact name is excluded */
    assert_false(hdrmap_wanted("X-Request-Id"));
    assert_false(hdrmap_wanted("x-request-id"));
    assert_false(hdrmap_wanted("X-REQUEST-ID"));
    assert_false(hdrmap_wanted("X-Http-Path"));
    assert_false(hdrmap_wanted("x-http-query"));
    assert_false(hdrmap_wanted("Authorization"));
    assert_false(hdrmap_wanted("User-Agent"));
    assert_false(hdrmap_wanted("Xylophone"));
    assert_false(hdrmap_wanted("X"));
    assert_false(hdrmap_wanted(""));
    assert_false(hdrmap_wanted(NULL));
}

/* The contract's row, on one realistic request. */
static void test_contract_mapping(void **state)
{
    (void)state;
    struct hdrmap m;
    hdrmap_init(&m);
    const struct hdr hdrs[] = {
        {"Host", "127.0.0.1:8080"},
        {"Content-Type", "application/xml"},
        {"X-Tenant-ID", "acme"},
        {"x-lower", "v"},
        {"X-Tag", "a"},
        {"Authorization", "Bearer secret"},
        {"User-Agent", "curl/7.88"},
        {"X-Tag", "b"},
        {"X-Request-Id", "r1"},
        {"x-REQUEST-id", "r2"},
        {"X-Http-Path", "/forged"},
        {"X-HTTP-QUERY", "forged=1"},
        {"X-Forwarded-For", "10.1.2.3"},
        {NULL, NULL},
    };
    map_request(&m, "/ingest", "a=1&b=2", hdrs, "127.0.0.1");
    assert_int_equal(m.n, 6);
    assert_kv(&m, 0, "x-http-path", "/ingest");
    assert_kv(&m, 1, "x-http-query", "a=1&b=2");
    assert_kv(&m, 2, "x-tenant-id", "acme");
    assert_kv(&m, 3, "x-lower", "v");
    assert_kv(&m, 4, "x-tag", "a, b");
    assert_kv(&m, 5, "x-forwarded-for", "10.1.2.3, 127.0.0.1");
    assert_int_equal(m.dropped, 0);

    assert_string_equal(hdrmap_get(&m, "x-tag"), "a, b");
    assert_null(hdrmap_get(&m, "X-Tenant-ID")); /* lookup is by lower-case name */
    assert_null(hdrmap_get(&m, "x-request-id"));
    assert_null(hdrmap_get(&m, "authorization"));
    assert_null(hdrmap_get(&m, "user-agent"));
    assert_null(hdrmap_get(&m, "host"));
    hdrmap_free(&m);
}

static void test_query_and_client(void **state)
{
    (void)state;
    struct hdrmap m;
    hdrmap_init(&m);

    map_request(&m, "/ingest", NULL, NULL, "127.0.0.1");
    assert_int_equal(m.n, 2);
    assert_kv(&m, 0, "x-http-path", "/ingest");
    assert_null(hdrmap_get(&m, "x-http-query"));
    assert_kv(&m, 1, "x-forwarded-for", "127.0.0.1");

    map_request(&m, "/ingest", "", NULL, "::1");
    assert_int_equal(m.n, 2);
    assert_null(hdrmap_get(&m, "x-http-query"));
    assert_string_equal(hdrmap_get(&m, "x-forwarded-for"), "::1");

    map_request(&m, "/ingest", "q", NULL, "::1");
    assert_string_equal(hdrmap_get(&m, "x-http-query"), "q");

    /* No client address and no X-Forwarded-For: no header at all. */
    map_request(&m, "/ingest", NULL, NULL, NULL);
    assert_int_equal(m.n, 1);
    assert_null(hdrmap_get(&m, "x-forwarded-for"));

    /* No client address: the request's chain alone. */
    const struct hdr xff[] = {
        {"X-Forwarded-For", "10.1.2.3"},
        {NULL, NULL},
    };
    map_request(&m, "/ingest", NULL, xff, "");
    assert_string_equal(hdrmap_get(&m, "x-forwarded-for"), "10.1.2.3");

    /* An empty X-* value is a header all the same. */
    const struct hdr empty[] = {
        {"X-Empty", ""},
        {NULL, NULL},
    };
    map_request(&m, "/ingest", NULL, empty, "127.0.0.1");
    assert_string_equal(hdrmap_get(&m, "x-empty"), "");
    hdrmap_free(&m);
}

static void test_forwarded_for_lines_joined(void **state)
{
    (void)state;
    struct hdrmap m;
    hdrmap_init(&m);
    const struct hdr hdrs[] = {
        {"X-Forwarded-For", "10.0.0.1, 10.0.0.2"},
        {"X-Other", "o"},
        {"x-FORWARDED-for", "10.0.0.3"},
        {"X-Forwarded-For", ""},
        {NULL, NULL},
    };
    map_request(&m, "/p", NULL, hdrs, "::1");
    assert_int_equal(m.n, 3);
    assert_kv(&m, 1, "x-other", "o");
    assert_kv(&m, 2, "x-forwarded-for", "10.0.0.1, 10.0.0.2, 10.0.0.3, ::1");
    hdrmap_free(&m);
}

/* Repeats are found whatever their case, whether they follow each other
 * (joined in place) or not (copied to the end of the buffer). */
static void test_repeats(void **state)
{
    (void)state;
    struct hdrmap m;
    hdrmap_init(&m);
    const struct hdr hdrs[] = {
        {"X-Tag", "a"},   {"x-tag", "b"},    {"X-Other", "o1"}, {"X-TAG", "c"},
        {"X-Third", "t"}, {"x-other", "o2"}, {"X-Tag", "d"},    {NULL, NULL},
    };
    map_request(&m, "/p", NULL, hdrs, "1.2.3.4");
    assert_int_equal(m.n, 5);
    assert_kv(&m, 1, "x-tag", "a, b, c, d");
    assert_kv(&m, 2, "x-other", "o1, o2");
    assert_kv(&m, 3, "x-third", "t");
    assert_kv(&m, 4, "x-forwarded-for", "1.2.3.4");
    hdrmap_free(&m);
}

static void test_header_count_limit(void **state)
{
    (void)state;
    struct hdrmap m;
    hdrmap_init(&m);
    assert_int_equal(hdrmap_begin(&m, "/p", "q=1"), 0);
    char name[32], value[32];
    for (int i = 0; i < 200; i++) {
        snprintf(name, sizeof name, "X-H-%d", i);
        snprintf(value, sizeof value, "v%d", i);
        assert_int_equal(hdrmap_add(&m, name, value), 0);
    }
    /* Beyond the limit even an X-Forwarded-For line is ignored. */
    assert_int_equal(hdrmap_add(&m, "X-Forwarded-For", "6.6.6.6"), 0);
    assert_int_equal(hdrmap_finish(&m, "127.0.0.1"), 0);
    assert_int_equal(m.n, 2 + HDRMAP_MAX_COPIED + 1);
    assert_int_equal(m.dropped, 200 - HDRMAP_MAX_COPIED + 1);
    for (int i = 0; i < 200; i++) {
        snprintf(name, sizeof name, "x-h-%d", i);
        snprintf(value, sizeof value, "v%d", i);
        if (i < HDRMAP_MAX_COPIED)
            assert_string_equal(hdrmap_get(&m, name), value);
        else
            assert_null(hdrmap_get(&m, name));
    }
    assert_string_equal(hdrmap_get(&m, "x-forwarded-for"), "127.0.0.1");
    hdrmap_free(&m);
}

static void test_size_limits(void **state)
{
    (void)state;
    struct hdrmap m;
    hdrmap_init(&m);
    char *longest = filled(HDRMAP_VALUE_MAX, 'v');
    char *too_long = filled(HDRMAP_VALUE_MAX + 1, 'w');
    char *name_ok = filled(HDRMAP_NAME_MAX, 'n');
    char *name_long = filled(HDRMAP_NAME_MAX + 1, 'n');
    name_ok[0] = name_long[0] = 'X';
    name_ok[1] = name_long[1] = '-';

    assert_int_equal(hdrmap_begin(&m, "/p", too_long), 0); /* query too long: left out */
    assert_int_equal(m.dropped, 1);
    assert_null(hdrmap_get(&m, "x-http-query"));
    assert_int_equal(hdrmap_add(&m, "X-Big", longest), 0);
    assert_int_equal(hdrmap_add(&m, "X-Bigger", too_long), 0);
    assert_int_equal(hdrmap_add(&m, name_ok, "ok"), 0);
    assert_int_equal(hdrmap_add(&m, name_long, "no"), 0);
    /* Joining would pass the value limit: the entry keeps what it had. */
    assert_int_equal(hdrmap_add(&m, "X-Small", "s"), 0);
    assert_int_equal(hdrmap_add(&m, "X-Small", longest + 1), 0); /* 1 + 2 + 8191 > 8192 */
    assert_int_equal(hdrmap_finish(&m, "127.0.0.1"), 0);

    assert_string_equal(hdrmap_get(&m, "x-big"), longest);
    assert_null(hdrmap_get(&m, "x-bigger"));
    name_ok[0] = 'x';
    assert_string_equal(hdrmap_get(&m, name_ok), "ok");
    assert_int_equal(m.n, 5); /* path, x-big, name_ok, x-small, x-forwarded-for */
    assert_string_equal(hdrmap_get(&m, "x-small"), "s");
    assert_int_equal(m.dropped, 4);
    for (size_t i = 0; i < m.n; i++)
        assert_true(strlen(m.kv[i].name) <= HDRMAP_NAME_MAX);
    free(longest);
    free(too_long);
    free(name_ok);
    free(name_long);
    hdrmap_free(&m);
}

/* The copied headers together stay within HDRMAP_COPY_MAX. */
static void test_copy_budget(void **state)
{
    (void)state;
    struct hdrmap m;
    hdrmap_init(&m);
    char *value = filled(8000, 'b');
    char name[32];
    assert_int_equal(hdrmap_begin(&m, "/p", NULL), 0);
    for (int i = 0; i < 20; i++) {
        snprintf(name, sizeof name, "X-Blob-%d", i);
        assert_int_equal(hdrmap_add(&m, name, value), 0);
    }
    assert_int_equal(hdrmap_add(&m, "X-Late-Small", "fits"), 0);
    assert_int_equal(hdrmap_finish(&m, "127.0.0.1"), 0);
    size_t total = 0, blobs = 0;
    for (size_t i = 0; i < m.n; i++) {
        if (strncmp(m.kv[i].name, "x-blob-", 7) == 0) {
            blobs++;
            assert_string_equal(m.kv[i].value, value);
        }
        if (strncmp(m.kv[i].name, "x-http-", 7) != 0 &&
            strcmp(m.kv[i].name, "x-forwarded-for") != 0)
            total += strlen(m.kv[i].name) + strlen(m.kv[i].value) + 2;
    }
    assert_true(total <= HDRMAP_COPY_MAX);
    assert_int_equal(blobs, HDRMAP_COPY_MAX / (8000 + 10));
    assert_int_equal(m.dropped, 20 - blobs);
    assert_string_equal(hdrmap_get(&m, "x-late-small"), "fits");
    free(value);
    hdrmap_free(&m);
}

/* An X-Forwarded-For chain over the limit loses its leftmost addresses. */
static void test_forwarded_for_trimmed(void **state)
{
    (void)state;
    struct hdrmap m;
    hdrmap_init(&m);
    assert_int_equal(hdrmap_begin(&m, "/p", NULL), 0);
    char line[4096];
    int addr = 0;
    for (int l = 0; l < 6; l++) {
        size_t off = 0;
        for (int k = 0; k < 200; k++, addr++)
            off += (size_t)snprintf(line + off, sizeof line - off, "%s10.%d.%d.%d", k ? ", " : "",
                                    addr / 65536, addr / 256 % 256, addr % 256);
        assert_int_equal(hdrmap_add(&m, "X-Forwarded-For", line), 0);
    }
    assert_int_equal(hdrmap_finish(&m, "192.168.0.1"), 0);
    const char *v = hdrmap_get(&m, "x-forwarded-for");
    assert_non_null(v);
    size_t len = strlen(v);
    assert_true(len <= HDRMAP_VALUE_MAX + 2 + strlen("192.168.0.1"));
    assert_true(len > HDRMAP_VALUE_MAX / 2);
    assert_string_equal(v + len - strlen(", 10.0.4.175, 192.168.0.1"),
                        ", 10.0.4.175, 192.168.0.1"); /* address 1199, then the client */
    assert_memory_equal(v, "10.", 3);                 /* cut at an address boundary */
    assert_null(strstr(v, "10.0.0.0,"));              /* the oldest are gone */
    hdrmap_free(&m);
}

/* Enough headers to grow the buffer several times: every earlier string must
 * still be readable and right (ASan would see a pointer into a freed block). */
static void test_buffer_growth_keeps_pointers(void **state)
{
    (void)state;
    enum { VAL = 400, N = 90 }; /* 90 lines + 30 joins: under the line limit */
    struct hdrmap m;
    hdrmap_init(&m);
    assert_int_equal(hdrmap_begin(&m, "/p", "q"), 0);
    char name[32], value[VAL + 1];
    char joined[VAL + 3 * N + 1]; /* expected x-g-0 */
    size_t joins = 0;
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "X-G-%d", i);
        memset(value, 'a' + i % 26, VAL);
        value[VAL] = '\0';
        int h = snprintf(value, 8, "%d:", i);
        value[h] = '.';
        assert_int_equal(hdrmap_add(&m, name, value), 0);
        if (i == 0)
            memcpy(joined, value, VAL + 1);
        if (i % 3 == 0) { /* a join, mostly not at the end of the buffer */
            assert_int_equal(hdrmap_add(&m, "X-G-0", "j"), 0);
            memcpy(joined + VAL + 3 * joins++, ", j", 4);
        }
    }
    assert_int_equal(hdrmap_finish(&m, "127.0.0.1"), 0);
    assert_int_equal(m.dropped, 0);
    assert_true(m.size > 4 * 4096); /* it did grow, more than once */
    assert_string_equal(hdrmap_get(&m, "x-http-path"), "/p");
    assert_string_equal(hdrmap_get(&m, "x-http-query"), "q");
    assert_string_equal(hdrmap_get(&m, "x-forwarded-for"), "127.0.0.1");
    assert_string_equal(hdrmap_get(&m, "x-g-0"), joined);
    for (int i = 1; i < N; i++) {
        snprintf(name, sizeof name, "x-g-%d", i);
        const char *v = hdrmap_get(&m, name);
        assert_non_null(v);
        char head[16];
        snprintf(head, sizeof head, "%d:.", i);
        assert_memory_equal(v, head, strlen(head));
        assert_int_equal(strlen(v), VAL);
        assert_int_equal(v[VAL - 1], 'a' + i % 26);
    }
    hdrmap_free(&m);
}

/* One map per worker, many requests: nothing stale, nothing leaked, and no
 * allocation once warm (the same blocks are used). */
static void test_reuse(void **state)
{
    (void)state;
    struct hdrmap m;
    hdrmap_init(&m);
    const struct hdr even[] = {
        {"X-Even", "e"}, {"X-Tag", "1"}, {"X-Tag", "2"}, {"X-Forwarded-For", "10.9.9.9"},
        {NULL, NULL},
    };
    const struct hdr odd[] = {
        {"X-Odd", "o"},
        {"X-Tag", "3"},
        {NULL, NULL},
    };
    map_request(&m, "/warm", "x", even, "127.0.0.1");
    map_request(&m, "/warm", "x", odd, "127.0.0.1");
    const struct hdrmap_kv *kv = m.kv;
    const char *buf = m.buf;
    const char *xff = m.xff;
    for (int i = 0; i < 1000; i++) {
        char path[32];
        snprintf(path, sizeof path, "/r%d", i);
        if (i % 2 == 0) {
            map_request(&m, path, "q=1", even, "127.0.0.1");
            assert_int_equal(m.n, 5);
            assert_string_equal(hdrmap_get(&m, "x-tag"), "1, 2");
            assert_string_equal(hdrmap_get(&m, "x-even"), "e");
            assert_null(hdrmap_get(&m, "x-odd"));
            assert_string_equal(hdrmap_get(&m, "x-forwarded-for"), "10.9.9.9, 127.0.0.1");
            assert_string_equal(hdrmap_get(&m, "x-http-query"), "q=1");
        } else {
            map_request(&m, path, NULL, odd, "::1");
            assert_int_equal(m.n, 4);
            assert_string_equal(hdrmap_get(&m, "x-tag"), "3");
            assert_null(hdrmap_get(&m, "x-even"));
            assert_null(hdrmap_get(&m, "x-http-query"));
            assert_string_equal(hdrmap_get(&m, "x-forwarded-for"), "::1");
        }
        assert_string_equal(hdrmap_get(&m, "x-http-path"), path);
        assert_int_equal(m.dropped, 0);
        assert_ptr_equal(m.kv, kv);
        assert_ptr_equal(m.buf, buf);
        assert_ptr_equal(m.xff, xff);
    }

    /* A big request grows the buffer; the next clear gives it back. */
    char *big = filled(HDRMAP_VALUE_MAX, 'z');
    const struct hdr bigh[] = {
        {"X-A", big}, {"X-B", big}, {"X-C", big}, {"X-D", big}, {"X-E", big}, {NULL, NULL},
    };
    map_request(&m, "/big", NULL, bigh, "::1");
    assert_true(m.size > 32 * 1024);
    assert_string_equal(hdrmap_get(&m, "x-e"), big);
    hdrmap_clear(&m);
    assert_int_equal(m.n, 0);
    assert_true(m.size <= 32 * 1024);
    assert_null(hdrmap_get(&m, "x-a"));
    map_request(&m, "/after", NULL, odd, "::1");
    assert_int_equal(m.n, 4);
    assert_string_equal(hdrmap_get(&m, "x-odd"), "o");
    free(big);

    hdrmap_free(&m);
    assert_null(m.kv);
    assert_int_equal(m.n, 0);
    hdrmap_free(&m); /* twice is harmless */
    map_request(&m, "/again", NULL, NULL, "::1");
    assert_int_equal(m.n, 2);
    hdrmap_free(&m);
}

/* begin empties the map by itself; get on a fresh map is safe. */
static void test_begin_without_clear(void **state)
{
    (void)state;
    struct hdrmap m;
    hdrmap_init(&m);
    assert_null(hdrmap_get(&m, "x-http-path"));
    assert_int_equal(hdrmap_begin(&m, "/a", NULL), 0);
    assert_int_equal(hdrmap_add(&m, "X-One", "1"), 0);
    assert_int_equal(hdrmap_add(&m, "X-Forwarded-For", "10.0.0.1"), 0);
    assert_int_equal(hdrmap_finish(&m, "::1"), 0);
    assert_int_equal(hdrmap_begin(&m, "/b", NULL), 0);
    assert_int_equal(hdrmap_finish(&m, "::1"), 0);
    assert_int_equal(m.n, 2);
    assert_string_equal(hdrmap_get(&m, "x-http-path"), "/b");
    assert_null(hdrmap_get(&m, "x-one"));
    assert_string_equal(hdrmap_get(&m, "x-forwarded-for"), "::1");
    hdrmap_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wanted),
        cmocka_unit_test(test_contract_mapping),
        cmocka_unit_test(test_query_and_client),
        cmocka_unit_test(test_forwarded_for_lines_joined),
        cmocka_unit_test(test_repeats),
        cmocka_unit_test(test_header_count_limit),
        cmocka_unit_test(test_size_limits),
        cmocka_unit_test(test_copy_budget),
        cmocka_unit_test(test_forwarded_for_trimmed),
        cmocka_unit_test(test_buffer_growth_keeps_pointers),
        cmocka_unit_test(test_reuse),
        cmocka_unit_test(test_begin_without_clear),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
