/* test_ratelimit.c - token buckets: the burst, then Retry-After seconds;
 * refill with time, capped at the burst; keys apart; the least recently
 * used key goes when the table is full. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "http/ratelimit.h"

#define S 1000000ull /* a second in us */

static void burst_then_wait(void **state)
{
    (void)state;
    struct ratelimit *rl = ratelimit_new(2.0, 3.0, 1); /* 2/s, 3 at once */
    uint64_t t = 100 * S;
    for (int i = 0; i < 3; i++)
        assert_int_equal(ratelimit_take(rl, NULL, 0, t), 0);
    /* Empty: half a second to the next token, said as 1 s. */
    assert_int_equal(ratelimit_take(rl, NULL, 0, t), 1);
    assert_int_equal(ratelimit_take(rl, NULL, 0, t + S / 2), 0);
    assert_int_equal(ratelimit_take(rl, NULL, 0, t + S / 2), 1);
    /* A long pause refills to the burst, not beyond. */
    t += 3600 * S;
    for (int i = 0; i < 3; i++)
        assert_int_equal(ratelimit_take(rl, NULL, 0, t), 0);
    assert_true(ratelimit_take(rl, NULL, 0, t) > 0);
    ratelimit_free(rl);

    /* 1 an hour: the wait is most of an hour. */
    rl = ratelimit_new(1.0 / 3600, 1.0, 1);
    assert_int_equal(ratelimit_take(rl, NULL, 0, t), 0);
    unsigned w = ratelimit_take(rl, NULL, 0, t);
    assert_true(w >= 3599 && w <= 3600);
    ratelimit_free(rl);
}

static void keys_apart_and_evicted(void **state)
{
    (void)state;
    struct ratelimit *rl = ratelimit_new(1.0 / 3600, 1.0, 2); /* two keys at most */
    uint64_t t = 100 * S;
    assert_int_equal(ratelimit_take(rl, "10.0.0.1", 9, t), 0);
    assert_true(ratelimit_take(rl, "10.0.0.1", 9, t) > 0);
    assert_int_equal(ratelimit_take(rl, "10.0.0.2", 9, t), 0); /* its own bucket */
    assert_true(ratelimit_take(rl, "10.0.0.2", 9, t) > 0);
    assert_int_equal(ratelimit_keys(rl), 2);
    /* A third key: .1, the least recently used, goes; .2 keeps its empty bucket. */
    assert_true(ratelimit_take(rl, "10.0.0.2", 9, t) > 0);
    assert_int_equal(ratelimit_take(rl, "10.0.0.3", 9, t), 0);
    assert_int_equal(ratelimit_keys(rl), 2);
    assert_true(ratelimit_take(rl, "10.0.0.2", 9, t) > 0);
    assert_int_equal(ratelimit_take(rl, "10.0.0.1", 9, t), 0); /* came back full */
    ratelimit_free(rl);
}

/* A refused request's token comes back, never past the burst. */
static void refund(void **state)
{
    (void)state;
    struct ratelimit *rl = ratelimit_new(1.0 / 3600, 2.0, 4);
    uint64_t t = 100 * S;
    assert_int_equal(ratelimit_take(rl, "a", 1, t), 0);
    assert_int_equal(ratelimit_take(rl, "a", 1, t), 0);
    assert_true(ratelimit_take(rl, "a", 1, t) > 0);
    ratelimit_refund(rl, "a", 1);
    assert_int_equal(ratelimit_take(rl, "a", 1, t), 0);
    ratelimit_refund(rl, "a", 1);
    ratelimit_refund(rl, "a", 1);
    ratelimit_refund(rl, "a", 1); /* capped at 2 */
    assert_int_equal(ratelimit_take(rl, "a", 1, t), 0);
    assert_int_equal(ratelimit_take(rl, "a", 1, t), 0);
    assert_true(ratelimit_take(rl, "a", 1, t) > 0);
    ratelimit_refund(rl, "never", 5); /* an unknown key: nothing */
    assert_int_equal(ratelimit_keys(rl), 1);
    ratelimit_free(rl);
}

/* Many keys through a small table: chains stay consistent (every key
 * found again while it is held). */
static void churn(void **state)
{
    (void)state;
    struct ratelimit *rl = ratelimit_new(1.0 / 3600, 1.0, 64);
    uint64_t t = 100 * S;
    char key[32];
    for (int round = 0; round < 50; round++) {
        for (int i = 0; i < 64; i++) {
            int n = snprintf(key, sizeof key, "k%d-%d", round, i);
            assert_int_equal(ratelimit_take(rl, key, (size_t)n, t), 0);
        }
        for (int i = 0; i < 64; i++) {
            int n = snprintf(key, sizeof key, "k%d-%d", round, i);
            assert_true(ratelimit_take(rl, key, (size_t)n, t) > 0);
        }
    }
    assert_int_equal(ratelimit_keys(rl), 64);
    ratelimit_free(rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(burst_then_wait),
        cmocka_unit_test(keys_apart_and_evicted),
        cmocka_unit_test(churn),
        cmocka_unit_test(refund),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
