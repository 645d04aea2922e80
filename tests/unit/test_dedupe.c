/* test_dedupe.c - the idempotency window: a confirmed id is replayed
 * within the window and new after it; a retry of a waiting id waits and
 * gets its outcome, a failure included, after which the id is new again;
 * the oldest id goes first when the window is full. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "bridge/base/dedupe.h"

static void confirmed_then_forgotten(void **state)
{
    (void)state;
    struct dedupe *d = dedupe_new(1000, 10);
    uint64_t h = 0, h2 = 0;
    int st = 0;
    size_t held = 0;
    assert_int_equal(dedupe_begin(d, "a", 1, 5000, &h, &st, &held), DEDUPE_NEW);
    assert_int_equal(dedupe_begin(d, "a", 1, 5001, &h2, &st, &held), DEDUPE_PENDING);
    assert_true(h2 == h);
    assert_int_equal(dedupe_poll(d, h, "a", 1, &st), DEDUPE_PENDING);
    dedupe_end(d, h, "a", 1, 202, 5002);
    assert_int_equal(dedupe_poll(d, h, "a", 1, &st), DEDUPE_DONE);
    assert_int_equal(st, 202);
    st = 0;
    assert_int_equal(dedupe_begin(d, "a", 1, 6001, &h2, &st, &held), DEDUPE_DONE);
    assert_int_equal(st, 202);
    /* Past the window (confirmed at 5002, 1000 ms): new again. */
    assert_int_equal(dedupe_begin(d, "a", 1, 6002, &h2, &st, &held), DEDUPE_NEW);
    assert_true(h2 != h);
    assert_int_equal(dedupe_size(d), 1);
    assert_int_equal(held, 1); /* dedupe_begin's own count agrees */
    dedupe_free(d);
}

static void failure_goes_to_waiters_then_new(void **state)
{
    (void)state;
    struct dedupe *d = dedupe_new(60000, 10);
    uint64_t h = 0, w = 0;
    int st = 0;
    size_t held = 0;
    assert_int_equal(dedupe_begin(d, "id-1", 4, 1, &h, &st, &held), DEDUPE_NEW);
    assert_int_equal(dedupe_begin(d, "id-1", 4, 2, &w, &st, &held), DEDUPE_PENDING);
    dedupe_end(d, h, "id-1", 4, 503, 3);
    assert_int_equal(dedupe_poll(d, w, "id-1", 4, &st), DEDUPE_DONE);
    assert_int_equal(st, 503);
    /* A retry after the failure tries again: it owns the id. */
    uint64_t h3 = 0;
    assert_int_equal(dedupe_begin(d, "id-1", 4, 4, &h3, &st, &held), DEDUPE_NEW);
    /* An end for an old owner changes nothing. */
    dedupe_end(d, h, "id-1", 4, 202, 5);
    uint64_t x = 0;
    assert_int_equal(dedupe_begin(d, "id-1", 4, 6, &x, &st, &held), DEDUPE_PENDING);
    dedupe_end(d, h3, "id-1", 4, 202, 7);
    assert_int_equal(dedupe_begin(d, "id-1", 4, 8, &x, &st, &held), DEDUPE_DONE);
    dedupe_free(d);
}

static void oldest_dropped_first(void **state)
{
    (void)state;
    struct dedupe *d = dedupe_new(60000, 3);
    char id[16];
    uint64_t h[5];
    int st = 0;
    size_t held = 0;
    for (int i = 0; i < 5; i++) {
        int n = snprintf(id, sizeof id, "r%d", i);
        assert_int_equal(dedupe_begin(d, id, (size_t)n, 10, &h[i], &st, &held), DEDUPE_NEW);
        dedupe_end(d, h[i], id, (size_t)n, 202, 11);
    }
    assert_int_equal(dedupe_size(d), 3);
    uint64_t x;
    assert_int_equal(dedupe_begin(d, "r0", 2, 12, &x, &st, &held), DEDUPE_NEW); /* dropped */
    assert_int_equal(dedupe_begin(d, "r4", 2, 12, &x, &st, &held), DEDUPE_DONE);
    assert_int_equal(dedupe_begin(d, "r3", 2, 12, &x, &st, &held), DEDUPE_DONE);
    /* A waiter whose first was dropped meanwhile is on its own. */
    dedupe_free(d);
    d = dedupe_new(60000, 1);
    uint64_t first, waiter, other;
    assert_int_equal(dedupe_begin(d, "a", 1, 1, &first, &st, &held), DEDUPE_NEW);
    assert_int_equal(dedupe_begin(d, "a", 1, 1, &waiter, &st, &held), DEDUPE_PENDING);
    assert_int_equal(dedupe_begin(d, "b", 1, 1, &other, &st, &held), DEDUPE_NEW);
    assert_int_equal(dedupe_poll(d, waiter, "a", 1, &st), DEDUPE_NEW);
    dedupe_free(d);
}

/* An id owned again (after a failure) is the newest: the next new id
 * drops the oldest, not it. */
static void reowned_is_newest(void **state)
{
    (void)state;
    struct dedupe *d = dedupe_new(60000, 3);
    uint64_t a, b, c, a2, dd, x;
    int st = 0;
    size_t held = 0;
    assert_int_equal(dedupe_begin(d, "A", 1, 1, &a, &st, &held), DEDUPE_NEW);
    dedupe_end(d, a, "A", 1, 503, 2);
    assert_int_equal(dedupe_begin(d, "B", 1, 3, &b, &st, &held), DEDUPE_NEW);
    dedupe_end(d, b, "B", 1, 202, 4);
    assert_int_equal(dedupe_begin(d, "C", 1, 5, &c, &st, &held), DEDUPE_NEW);
    dedupe_end(d, c, "C", 1, 202, 6);
    assert_int_equal(dedupe_begin(d, "A", 1, 7, &a2, &st, &held), DEDUPE_NEW); /* the retry */
    assert_int_equal(dedupe_begin(d, "D", 1, 8, &dd, &st, &held), DEDUPE_NEW);
    assert_int_equal(dedupe_poll(d, a2, "A", 1, &st), DEDUPE_PENDING); /* still held */
    dedupe_end(d, a2, "A", 1, 202, 9);
    assert_int_equal(dedupe_begin(d, "A", 1, 10, &x, &st, &held), DEDUPE_DONE);
    assert_int_equal(dedupe_begin(d, "C", 1, 10, &x, &st, &held), DEDUPE_DONE);
    assert_int_equal(dedupe_begin(d, "B", 1, 10, &x, &st, &held), DEDUPE_NEW); /* the oldest went */
    assert_true(dedupe_size(d) <= 3);
    dedupe_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(confirmed_then_forgotten),
        cmocka_unit_test(failure_goes_to_waiters_then_new),
        cmocka_unit_test(oldest_dropped_first),
        cmocka_unit_test(reowned_is_newest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
