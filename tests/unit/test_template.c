/* test_template.c - routing from the request: path patterns with captures,
 * templates over captures and headers, the safe set of what a client may
 * route on, and the wildcard binding key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <cmocka.h>

#include "bridge/base/template.h"

static void patterns_checked(void **state)
{
    (void)state;
    char why[200];
    assert_int_equal(path_pattern_check("/events", why, sizeof why), 0);
    assert_int_equal(path_pattern_check("/events/{type}", why, sizeof why), 0);
    assert_int_equal(path_pattern_check("/t/{tenant}/e/{type}", why, sizeof why), 0);
    assert_int_equal(path_pattern_check("/events/x{type}", why, sizeof why), -1);
    assert_non_null(strstr(why, "whole segment"));
    assert_int_equal(path_pattern_check("/events/{}", why, sizeof why), -1);
    assert_int_equal(path_pattern_check("/events/{a-b}", why, sizeof why), -1);
    assert_int_equal(path_pattern_check("/events/{a}/{a}", why, sizeof why), -1);
    assert_non_null(strstr(why, "twice"));
    assert_int_equal(path_pattern_check("/events/{a}}", why, sizeof why), -1);
    assert_int_equal(path_pattern_check("/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}", why, sizeof why), 0);
    assert_int_equal(path_pattern_check("/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}", why, sizeof why),
                     -1);
    assert_true(path_has_captures("/e/{x}"));
    assert_false(path_has_captures("/e/x"));
}

static void paths_matched(void **state)
{
    (void)state;
    struct tmpl_span caps[TMPL_MAX_CAPTURES];
    size_t n = 99;
    assert_true(path_match("/events/{type}", "/events/order", caps, &n));
    assert_int_equal(n, 1);
    assert_int_equal(caps[0].n, 5);
    assert_memory_equal(caps[0].p, "order", 5);
    assert_true(path_match("/t/{tenant}/e/{type}", "/t/acme/e/paid", caps, &n));
    assert_int_equal(n, 2);
    assert_memory_equal(caps[0].p, "acme", 4);
    assert_memory_equal(caps[1].p, "paid", 4);
    /* One segment each: never empty, never across a '/'. */
    assert_false(path_match("/events/{type}", "/events/", caps, &n));
    assert_false(path_match("/events/{type}", "/events", caps, &n));
    assert_false(path_match("/events/{type}", "/events/a/b", caps, &n));
    assert_false(path_match("/events/{type}", "/event/a", caps, &n));
    assert_false(path_match("/events/{type}", "/events/a/", caps, &n));
    assert_true(path_match("/events", "/events", NULL, NULL));
    assert_false(path_match("/events", "/events/", NULL, NULL));
}

static void overlaps_found(void **state)
{
    (void)state;
    assert_true(path_patterns_overlap("/e/{a}", "/e/{b}"));
    assert_true(path_patterns_overlap("/e/{a}", "/e/x"));
    assert_true(path_patterns_overlap("/{x}/y", "/e/{b}"));
    assert_false(path_patterns_overlap("/e/{a}", "/e/{a}/x"));
    assert_false(path_patterns_overlap("/e/{a}", "/f/{a}"));
}

struct hdrs {
    const char *name, *value;
    int count;
};

static const char *lookup(void *arg, const char *name, int *count)
{
    for (const struct hdrs *h = arg; h->name != NULL; h++) {
        if (strcasecmp(h->name, name) == 0) {
            *count = h->count;
            return h->value;
        }
    }
    *count = 0;
    return NULL;
}

static void expanded(void **state)
{
    (void)state;
    char why[200], out[TMPL_VALUE_MAX + 1];
    struct tmpl t;
    const char *pat = "/t/{tenant}/e/{type}";
    assert_int_equal(tmpl_parse(&t, "orders.{type}.{header:X-Region}", pat, why, sizeof why), 0);
    assert_true(t.dynamic);
    struct tmpl_span caps[TMPL_MAX_CAPTURES];
    size_t n = 0;
    assert_true(path_match(pat, "/t/acme/e/paid", caps, &n));
    struct hdrs h[] = {{"x-region", "eu-1", 1}, {NULL, NULL, 0}};
    assert_int_equal(tmpl_expand(&t, caps, lookup, h, out, why, sizeof why), 0);
    assert_string_equal(out, "orders.paid.eu-1");
    assert_int_equal(tmpl_wildcard(&t, out), 0);
    assert_string_equal(out, "orders.*.*");

    /* What a client sends never widens a binding. */
    const char *bad_paths[] = {"/t/acme/e/a.b", "/t/acme/e/%23", "/t/acme/e/*", "/t/acme/e/#"};
    for (size_t i = 0; i < sizeof bad_paths / sizeof *bad_paths; i++) {
        assert_true(path_match(pat, bad_paths[i], caps, &n));
        assert_int_equal(tmpl_expand(&t, caps, lookup, h, out, why, sizeof why), -1);
        assert_non_null(strstr(why, "{type}"));
    }
    assert_true(path_match(pat, "/t/acme/e/paid", caps, &n));
    struct hdrs dot[] = {{"x-region", "eu.#", 1}, {NULL, NULL, 0}};
    assert_int_equal(tmpl_expand(&t, caps, lookup, dot, out, why, sizeof why), -1);
    assert_non_null(strstr(why, "X-Region"));
    struct hdrs twice[] = {{"x-region", "eu", 2}, {NULL, NULL, 0}};
    assert_int_equal(tmpl_expand(&t, caps, lookup, twice, out, why, sizeof why), -1);
    assert_non_null(strstr(why, "more than once"));
    struct hdrs none[] = {{NULL, NULL, 0}};
    assert_int_equal(tmpl_expand(&t, caps, lookup, none, out, why, sizeof why), -1);
    assert_non_null(strstr(why, "missing"));
    struct hdrs empty[] = {{"x-region", "", 1}, {NULL, NULL, 0}};
    assert_int_equal(tmpl_expand(&t, caps, lookup, empty, out, why, sizeof why), -1);
    tmpl_free(&t);
}

static void too_long_refused(void **state)
{
    (void)state;
    char why[200], out[TMPL_VALUE_MAX + 1], path[600], seg[300];
    struct tmpl t;
    assert_int_equal(tmpl_parse(&t, "prefix.{a}", "/x/{a}", why, sizeof why), 0);
    memset(seg, 'a', 250);
    seg[250] = '\0';
    snprintf(path, sizeof path, "/x/%s", seg);
    struct tmpl_span caps[TMPL_MAX_CAPTURES];
    size_t n = 0;
    assert_true(path_match("/x/{a}", path, caps, &n));
    /* 7 + 250 bytes: over 255 in all though the capture alone fits. */
    assert_int_equal(tmpl_expand(&t, caps, NULL, NULL, out, why, sizeof why), -1);
    assert_non_null(strstr(why, "longer than 255"));
    tmpl_free(&t);
}

static void templates_checked(void **state)
{
    (void)state;
    char why[200];
    struct tmpl t;
    assert_int_equal(tmpl_parse(&t, "plain.key", "/p", why, sizeof why), 0);
    assert_false(t.dynamic);
    tmpl_free(&t);
    assert_int_equal(tmpl_parse(&t, "a.{nope}", "/e/{type}", why, sizeof why), -1);
    assert_non_null(strstr(why, "not a capture"));
    assert_int_equal(tmpl_parse(&t, "a.{type", "/e/{type}", why, sizeof why), -1);
    assert_int_equal(tmpl_parse(&t, "a.type}", "/e/{type}", why, sizeof why), -1);
    assert_int_equal(tmpl_parse(&t, "a.{header:X Y}", "/e/{type}", why, sizeof why), -1);
    assert_int_equal(tmpl_parse(&t, "{header:X-Tenant}.audit", "/e", why, sizeof why), 0);
    char out[TMPL_VALUE_MAX + 1];
    assert_int_equal(tmpl_wildcard(&t, out), 0);
    assert_string_equal(out, "*.audit");
    tmpl_free(&t);
    /* A placeholder inside a word has no wildcard binding. */
    assert_int_equal(tmpl_parse(&t, "orders-{type}", "/e/{type}", why, sizeof why), 0);
    assert_int_equal(tmpl_wildcard(&t, out), -1);
    tmpl_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(patterns_checked), cmocka_unit_test(paths_matched),
        cmocka_unit_test(overlaps_found),   cmocka_unit_test(expanded),
        cmocka_unit_test(too_long_refused), cmocka_unit_test(templates_checked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
