/* test_reqid.c - request ids: ULID format, time part, monotonic order within
 * and across milliseconds, workers apart, client id validation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "http/reqid.h"

#define ALPHABET "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
#define MANY 100000

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Value of one Crockford character, -1 if not in the alphabet. */
static int digit(char c)
{
    const char *p = c != '\0' ? strchr(ALPHABET, c) : NULL;
    return p != NULL ? (int)(p - ALPHABET) : -1;
}

static uint64_t decode_ms(const char *id)
{
    uint64_t t = 0;
    for (int i = 0; i < 10; i++)
        t = t << 5 | (uint64_t)digit(id[i]);
    return t;
}

/* First byte of the 80-bit random part: chars 10 and 11 hold its 5 + 3 bits. */
static unsigned decode_worker_byte(const char *id)
{
    return (unsigned)(digit(id[10]) << 3 | digit(id[11]) >> 2);
}

static void assert_format(const char *id)
{
    assert_int_equal(strlen(id), REQID_GEN_LEN);
    for (size_t i = 0; i < REQID_GEN_LEN; i++)
        assert_true(digit(id[i]) >= 0);
    /* 128 bits in 130: the first character carries at most 3 bits. */
    assert_true(digit(id[0]) < 8);
}

static void test_format_and_time(void **state)
{
    (void)state;
    struct reqid_gen g;
    reqid_gen_init(&g, 3);
    char id[REQID_GEN_LEN + 1];
    uint64_t t = now_ms();
    reqid_next(&g, t, id);
    assert_format(id);
    assert_int_equal(decode_ms(id), t);
    assert_int_equal(decode_worker_byte(id), 3);
    assert_true(reqid_valid(id, strlen(id)));

    /* An earlier time on the same generator: the clock went back, the id
     * keeps t. */
    reqid_next(&g, UINT64_C(1469918176385), id);
    assert_int_equal(decode_ms(id), t);

    /* The time part of the ULID spec's example id. */
    struct reqid_gen g2;
    reqid_gen_init(&g2, 0);
    reqid_next(&g2, UINT64_C(1469918176385), id);
    assert_memory_equal(id, "01ARYZ6S41", 10);
}

static void test_same_ms_strictly_increasing(void **state)
{
    (void)state;
    struct reqid_gen g;
    reqid_gen_init(&g, 0);
    uint64_t t = now_ms();
    char prev[REQID_GEN_LEN + 1];
    char id[REQID_GEN_LEN + 1];
    reqid_next(&g, t, prev);
    for (int i = 0; i < MANY; i++) {
        reqid_next(&g, t, id);
        assert_format(id);
        assert_true(strcmp(prev, id) < 0);
        assert_int_equal(decode_ms(id), t);
        memcpy(prev, id, sizeof id);
    }
}

static void test_new_ms_increasing(void **state)
{
    (void)state;
    struct reqid_gen g;
    reqid_gen_init(&g, 7);
    uint64_t t = now_ms();
    char prev[REQID_GEN_LEN + 1];
    char id[REQID_GEN_LEN + 1];
    reqid_next(&g, t, prev);
    for (int i = 1; i < 1000; i++) {
        reqid_next(&g, t + (uint64_t)i, id);
        assert_true(strcmp(prev, id) < 0);
        assert_int_equal(decode_ms(id), t + (uint64_t)i);
        assert_int_equal(decode_worker_byte(id), 7);
        /* Fresh random bits each millisecond, the counter's top bit clear
         * (bit 71 of the random part: the second bit of char 11). */
        assert_int_equal(digit(id[11]) & 2, 0);
        memcpy(prev, id, sizeof id);
    }
}

static void test_clock_back_still_increasing(void **state)
{
    (void)state;
    struct reqid_gen g;
    reqid_gen_init(&g, 1);
    uint64_t t = now_ms();
    char prev[REQID_GEN_LEN + 1];
    char id[REQID_GEN_LEN + 1];
    reqid_next(&g, t, prev);
    for (int i = 1; i <= 5000; i++) {
        reqid_next(&g, t - (uint64_t)i, id); /* each call further back */
        assert_true(strcmp(prev, id) < 0);
        assert_int_equal(decode_ms(id), t); /* keeps the last millisecond */
        memcpy(prev, id, sizeof id);
    }
    /* Time catches up: ids follow the clock again. */
    reqid_next(&g, t + 1, id);
    assert_true(strcmp(prev, id) < 0);
    assert_int_equal(decode_ms(id), t + 1);
}

/* The counter wrapping within one millisecond borrows the next one. */
static void test_counter_wrap(void **state)
{
    (void)state;
    struct reqid_gen g;
    reqid_gen_init(&g, 5);
    uint64_t t = now_ms();
    char prev[REQID_GEN_LEN + 1];
    char id[REQID_GEN_LEN + 1];
    reqid_next(&g, t, prev);
    memset(g.rand + 1, 0xff, sizeof g.rand - 1);
    reqid_next(&g, t, id);
    assert_true(strcmp(prev, id) < 0);
    assert_int_equal(decode_ms(id), t + 1);
    assert_int_equal(decode_worker_byte(id), 5);
    memcpy(prev, id, sizeof id);
    reqid_next(&g, t + 1, id);
    assert_true(strcmp(prev, id) < 0);
}

static int cmp_ids(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void test_workers_never_collide(void **state)
{
    (void)state;
    enum { N = 50000 };
    char(*a)[REQID_GEN_LEN + 1] = malloc(2 * N * sizeof *a);
    assert_non_null(a);
    for (int round = 0; round < 4; round++) {
        struct reqid_gen g0, g1;
        reqid_gen_init(&g0, (unsigned)round);
        reqid_gen_init(&g1, (unsigned)round + 1);
        /* Force the worst case: identical random bits, same millisecond. */
        memcpy(g1.rand + 1, g0.rand + 1, sizeof g0.rand - 1);
        uint64_t t = now_ms();
        for (int i = 0; i < N; i++) {
            reqid_next(&g0, t, a[2 * i]);
            reqid_next(&g1, t, a[2 * i + 1]);
            assert_string_not_equal(a[2 * i], a[2 * i + 1]);
        }
        qsort(a, 2 * N, sizeof *a, cmp_ids);
        for (int i = 1; i < 2 * N; i++)
            assert_true(strcmp(a[i - 1], a[i]) < 0);
    }
    free(a);
}

static void test_max_time_clamped(void **state)
{
    (void)state;
    struct reqid_gen g;
    reqid_gen_init(&g, 0);
    char id[REQID_GEN_LEN + 1];
    reqid_next(&g, UINT64_MAX, id);
    assert_format(id);
    assert_memory_equal(id, "7ZZZZZZZZZ", 10);
}

static void test_valid(void **state)
{
    (void)state;
    char buf[REQID_MAX + 2];
    memset(buf, 'a', sizeof buf);
    assert_false(reqid_valid("", 0));
    assert_false(reqid_valid(NULL, 0));
    assert_true(reqid_valid("a", 1));
    assert_true(reqid_valid(buf, REQID_MAX));
    assert_false(reqid_valid(buf, REQID_MAX + 1));
    assert_false(reqid_valid("a b", 3));
    assert_false(reqid_valid(" ", 1));
    assert_true(reqid_valid("!", 1));      /* 0x21, lowest accepted */
    assert_true(reqid_valid("~", 1));      /* 0x7e, highest accepted */
    assert_false(reqid_valid("a\x7f", 2)); /* DEL */
    assert_false(reqid_valid("a\t", 2));
    assert_false(reqid_valid("a\n", 2));
    assert_false(reqid_valid("caf\xc3\xa9", 5)); /* non-ASCII */
    assert_false(reqid_valid("a\0b", 3));        /* embedded NUL */
    assert_true(reqid_valid("req-42/{x}", 10));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_and_time),
        cmocka_unit_test(test_same_ms_strictly_increasing),
        cmocka_unit_test(test_new_ms_increasing),
        cmocka_unit_test(test_clock_back_still_increasing),
        cmocka_unit_test(test_counter_wrap),
        cmocka_unit_test(test_workers_never_collide),
        cmocka_unit_test(test_max_time_clamped),
        cmocka_unit_test(test_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
