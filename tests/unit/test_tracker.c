/* test_tracker.c - unit tests of amqp/tracker.c: confirms by delivery tag
 * (single, multiple, out of order), nacks, returns matched by message id,
 * detached entries and late confirms, failing, reset, the ring's capacity and
 * wrap-around against a shadow model, and callbacks that call back in. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "amqp/tracker.h"

#define MAX_CALLS 64 /* done calls one test step may record */

struct fixture;
typedef void hook_fn(struct fixture *f, void *ctx, enum tracker_result r);

/* What the done callback saw, and what it should do in turn. */
struct fixture {
    struct tracker *t;                /* under test */
    size_t n;                         /* calls recorded since the last clear */
    void *ctx[MAX_CALLS];             /* ctx of each call */
    enum tracker_result r[MAX_CALLS]; /* result of each call */
    hook_fn *hook;                    /* run inside done, after recording */
    void *hook_ctx;                   /* the hook acts when done gets this ctx */
    uint64_t hook_tag;                /* tag argument for the hook */
    uint64_t hook_added[4];           /* tags the hook's tracker_add returned */
    size_t hook_n_added;              /* how many */
};

/* Distinct, never dereferenced request pointers. */
static void *C(uintptr_t n)
{
    return (void *)(n * 16 + 16);
}

static void on_done(void *arg, void *ctx, enum tracker_result r)
{
    struct fixture *f = arg;
    assert_non_null(ctx); /* done is never called for detached entries */
    assert_true(f->n < MAX_CALLS);
    f->ctx[f->n] = ctx;
    f->r[f->n] = r;
    f->n++;
    if (f->hook != NULL && (f->hook_ctx == NULL || f->hook_ctx == ctx))
        f->hook(f, ctx, r);
}

static struct fixture *fixture_new(size_t cap)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->t = tracker_new(cap, on_done, f);
    assert_non_null(f->t);
    return f;
}

static void fixture_free(struct fixture *f)
{
    tracker_free(f->t);
    free(f);
}

static void clear(struct fixture *f)
{
    f->n = 0;
}

/* The call log since the last clear is exactly these (ctx, result) pairs. */
static void expect_calls(struct fixture *f, size_t n, ...)
{
    va_list ap;
    va_start(ap, n);
    assert_int_equal(f->n, n);
    for (size_t i = 0; i < n; i++) {
        void *ctx = va_arg(ap, void *);
        enum tracker_result r = va_arg(ap, enum tracker_result);
        assert_ptr_equal(f->ctx[i], ctx);
        assert_int_equal(f->r[i], r);
    }
    va_end(ap);
    clear(f);
}

static void expect_counts(const struct fixture *f, size_t pending, size_t attached)
{
    assert_int_equal(tracker_pending(f->t), pending);
    assert_int_equal(tracker_attached(f->t), attached);
}

static uint64_t add_id(struct fixture *f, uintptr_t n, const char *id)
{
    return tracker_add(f->t, C(n), id, id != NULL ? strlen(id) : 0);
}

/* Add C(1)..C(n) with ids "m1".."mn"; they must get tags 1..n. */
static void add_n(struct fixture *f, uintptr_t n)
{
    for (uintptr_t i = 1; i <= n; i++) {
        char id[16];
        snprintf(id, sizeof id, "m%u", (unsigned)i);
        assert_int_equal(add_id(f, i, id), i);
    }
}

static void test_new_and_names(void **state)
{
    (void)state;
    assert_null(tracker_new(0, on_done, NULL));
    struct tracker *t = tracker_new(1, NULL, NULL);
    assert_non_null(t);
    assert_int_equal(tracker_pending(t), 0);
    assert_int_equal(tracker_attached(t), 0);
    /* No callback: completing is still counted and safe. */
    assert_int_equal(tracker_add(t, C(1), "a", 1), 1);
    assert_int_equal(tracker_ack(t, 1, false), 0);
    assert_int_equal(tracker_pending(t), 0);
    tracker_free(t);
    tracker_free(NULL);
    assert_string_equal(tracker_result_name(TRACKER_ACK), "ack");
    assert_string_equal(tracker_result_name(TRACKER_NACK), "nack");
    assert_string_equal(tracker_result_name(TRACKER_RETURNED), "returned");
    assert_string_equal(tracker_result_name(TRACKER_LOST), "lost");
    assert_string_equal(tracker_result_name((enum tracker_result)42), "unknown");
}

static void test_single_ack(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(8);
    add_n(f, 3);
    expect_counts(f, 3, 3);
    assert_int_equal(tracker_ack(f->t, 2, false), 0);
    expect_calls(f, 1, C(2), TRACKER_ACK);
    expect_counts(f, 2, 2);
    assert_false(tracker_detach(f->t, 2)); /* completed, though inside the window */
    expect_counts(f, 2, 2);
    /* A duplicate confirm completes nothing. */
    assert_int_equal(tracker_ack(f->t, 2, false), 0);
    assert_int_equal(tracker_ack(f->t, 2, true), 0);
    expect_calls(f, 1, C(1), TRACKER_ACK); /* but multiple 2 still covers tag 1 */
    expect_counts(f, 1, 1);
    assert_int_equal(tracker_ack(f->t, 3, false), 0);
    expect_calls(f, 1, C(3), TRACKER_ACK);
    expect_counts(f, 0, 0);
    fixture_free(f);
}

static void test_multiple_skips_completed(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(8);
    add_n(f, 5);
    assert_int_equal(tracker_ack(f->t, 2, false), 0);
    assert_int_equal(tracker_ack(f->t, 4, false), 0);
    expect_calls(f, 2, C(2), TRACKER_ACK, C(4), TRACKER_ACK);
    assert_int_equal(tracker_ack(f->t, 4, true), 0);
    expect_calls(f, 2, C(1), TRACKER_ACK, C(3), TRACKER_ACK);
    expect_counts(f, 1, 1);
    assert_int_equal(tracker_ack(f->t, 5, true), 0);
    expect_calls(f, 1, C(5), TRACKER_ACK);
    expect_counts(f, 0, 0);
    fixture_free(f);
}

static void test_out_of_order_then_multiple(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(6);
    add_n(f, 6);
    assert_int_equal(tracker_add(f->t, C(99), NULL, 0), 0); /* full */
    assert_int_equal(tracker_ack(f->t, 5, false), 0);
    assert_int_equal(tracker_ack(f->t, 3, false), 0);
    assert_int_equal(tracker_ack(f->t, 6, false), 0);
    expect_calls(f, 3, C(5), TRACKER_ACK, C(3), TRACKER_ACK, C(6), TRACKER_ACK);
    expect_counts(f, 3, 3);
    assert_int_equal(tracker_ack(f->t, 4, true), 0);
    expect_calls(f, 3, C(1), TRACKER_ACK, C(2), TRACKER_ACK, C(4), TRACKER_ACK);
    expect_counts(f, 0, 0);
    /* The head went past the slots completed out of order: the whole ring is
     * free again. */
    for (uintptr_t i = 7; i <= 12; i++)
        assert_int_equal(tracker_add(f->t, C(i), NULL, 0), i);
    assert_int_equal(tracker_add(f->t, C(13), NULL, 0), 0);
    assert_int_equal(tracker_ack(f->t, 12, true), 0);
    assert_int_equal(f->n, 6);
    fixture_free(f);
}

static void test_nack(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(8);
    add_n(f, 5);
    assert_int_equal(tracker_nack(f->t, 2, false), 0);
    expect_calls(f, 1, C(2), TRACKER_NACK);
    /* A returned entry that is nacked is a nack. */
    assert_true(tracker_return(f->t, "m3", 2));
    assert_int_equal(tracker_nack(f->t, 4, true), 0);
    expect_calls(f, 3, C(1), TRACKER_NACK, C(3), TRACKER_NACK, C(4), TRACKER_NACK);
    expect_counts(f, 1, 1);
    assert_true(tracker_detach(f->t, 5));
    assert_int_equal(tracker_nack(f->t, 5, false), 1); /* late, not reported */
    expect_calls(f, 0);
    expect_counts(f, 0, 0);
    fixture_free(f);
}

static void test_return_marks_that_entry(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(8);
    assert_int_equal(add_id(f, 1, "a"), 1);
    assert_int_equal(add_id(f, 2, "b"), 2);
    assert_int_equal(add_id(f, 3, "c"), 3);
    assert_true(tracker_return(f->t, "b", 1));
    expect_counts(f, 3, 3); /* a return completes nothing by itself */
    expect_calls(f, 0);
    assert_int_equal(tracker_ack(f->t, 3, true), 0);
    expect_calls(f, 3, C(1), TRACKER_ACK, C(2), TRACKER_RETURNED, C(3), TRACKER_ACK);
    /* Single ack of a returned entry. */
    assert_int_equal(add_id(f, 4, "d"), 4);
    assert_true(tracker_return(f->t, "d", 1));
    assert_int_equal(tracker_ack(f->t, 4, false), 0);
    expect_calls(f, 1, C(4), TRACKER_RETURNED);
    fixture_free(f);
}

static void test_return_same_id_marks_all(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(8);
    /* A client retried: two publishes of "x" in flight, and one of "y". */
    assert_int_equal(add_id(f, 1, "x"), 1);
    assert_int_equal(add_id(f, 2, "y"), 2);
    assert_int_equal(add_id(f, 3, "x"), 3);
    /* The return carries no tag: one return marks both, none is left. */
    assert_true(tracker_return(f->t, "x", 1));
    assert_false(tracker_return(f->t, "x", 1));
    expect_calls(f, 0);
    /* The unroutable one is confirmed first, the routable one after its disk
     * write: both answer 502 (a retry), neither a 202 it may not deserve. */
    assert_int_equal(tracker_ack(f->t, 3, false), 0);
    expect_calls(f, 1, C(3), TRACKER_RETURNED);
    assert_int_equal(tracker_ack(f->t, 2, true), 0);
    expect_calls(f, 2, C(1), TRACKER_RETURNED, C(2), TRACKER_ACK);
    expect_counts(f, 0, 0);
    /* A detached entry with the id is marked too, and its ack dropped. */
    assert_int_equal(add_id(f, 4, "z"), 4);
    assert_int_equal(add_id(f, 5, "z"), 5);
    assert_int_equal(add_id(f, 6, "x"), 6);
    assert_true(tracker_detach(f->t, 4));
    assert_true(tracker_return(f->t, "z", 1));
    assert_false(tracker_return(f->t, "z", 1));
    assert_int_equal(tracker_ack(f->t, 4, false), 1); /* late, not reported */
    expect_calls(f, 0);
    assert_int_equal(tracker_ack(f->t, 6, true), 0);
    expect_calls(f, 2, C(5), TRACKER_RETURNED, C(6), TRACKER_ACK);
    /* Alone with its id, a detached entry is found and marked (once). */
    assert_int_equal(tracker_add(f->t, NULL, "w", 1), 7);
    assert_true(tracker_return(f->t, "w", 1));
    assert_false(tracker_return(f->t, "w", 1));
    assert_int_equal(tracker_ack(f->t, 7, false), 1);
    expect_calls(f, 0);
    expect_counts(f, 0, 0);
    fixture_free(f);
}

static void test_return_unknown(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(8);
    assert_false(tracker_return(f->t, "a", 1)); /* nothing pending */
    assert_int_equal(add_id(f, 1, "a"), 1);
    assert_int_equal(add_id(f, 2, "ab"), 2);
    assert_int_equal(add_id(f, 3, NULL), 3);
    assert_false(tracker_return(f->t, "b", 1));
    assert_false(tracker_return(f->t, "abc", 3)); /* a prefix of it is no match */
    assert_false(tracker_return(f->t, "A", 1));
    assert_int_equal(tracker_ack(f->t, 1, false), 0);
    assert_false(tracker_return(f->t, "a", 1)); /* completed already */
    /* An entry with no id is what went out with an empty message_id. */
    assert_true(tracker_return(f->t, NULL, 0));
    assert_false(tracker_return(f->t, "", 0));
    clear(f);
    assert_int_equal(tracker_ack(f->t, 3, true), 0);
    expect_calls(f, 2, C(2), TRACKER_ACK, C(3), TRACKER_RETURNED);
    fixture_free(f);
}

static void test_long_id(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(8);
    char id[200], other[200];
    memset(id, 'q', sizeof id);
    memcpy(other, id, sizeof other);
    other[190] = 'r'; /* differs far into the id */
    assert_int_equal(tracker_add(f->t, C(1), id, sizeof id), 1);
    assert_false(tracker_return(f->t, id, 128)); /* same prefix, other length */
    assert_false(tracker_return(f->t, id, 199));
    assert_true(tracker_return(f->t, id, sizeof id));
    assert_int_equal(tracker_add(f->t, C(2), id, sizeof id), 2);
    /* The whole id is hashed: one byte apart at 190 is another id. */
    assert_false(tracker_return(f->t, other, sizeof other));
    assert_int_equal(tracker_ack(f->t, 2, true), 0);
    expect_calls(f, 2, C(1), TRACKER_RETURNED, C(2), TRACKER_ACK);
    fixture_free(f);
}

static void test_detach_then_ack_is_late(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(8);
    add_n(f, 4);
    assert_true(tracker_detach(f->t, 2));
    expect_counts(f, 4, 3);
    assert_true(tracker_detach(f->t, 2)); /* still pending, still true */
    expect_counts(f, 4, 3);
    assert_false(tracker_detach(f->t, 0));
    assert_false(tracker_detach(f->t, 9));
    assert_int_equal(tracker_ack(f->t, 3, true), 1);
    expect_calls(f, 2, C(1), TRACKER_ACK, C(3), TRACKER_ACK);
    expect_counts(f, 1, 1);
    assert_false(tracker_detach(f->t, 2)); /* completed */
    assert_true(tracker_detach(f->t, 4));
    expect_counts(f, 1, 0);
    assert_int_equal(tracker_ack(f->t, 4, false), 1);
    expect_calls(f, 0);
    expect_counts(f, 0, 0);
    /* Added without a ctx: detached from the start. */
    assert_int_equal(tracker_add(f->t, NULL, "n", 1), 5);
    expect_counts(f, 1, 0);
    assert_int_equal(tracker_ack(f->t, 5, false), 1);
    expect_calls(f, 0);
    fixture_free(f);
}

static void test_fail_attached_then_late(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(8);
    add_n(f, 3);
    assert_true(tracker_detach(f->t, 2));
    assert_int_equal(tracker_fail_attached(f->t, TRACKER_LOST), 2);
    expect_calls(f, 2, C(1), TRACKER_LOST, C(3), TRACKER_LOST);
    expect_counts(f, 3, 0); /* entries stay until their confirms */
    assert_int_equal(tracker_fail_attached(f->t, TRACKER_LOST), 0);
    expect_calls(f, 0);
    assert_int_equal(add_id(f, 4, "m4"), 4);
    expect_counts(f, 4, 1);
    assert_int_equal(tracker_ack(f->t, 4, true), 3);
    expect_calls(f, 1, C(4), TRACKER_ACK);
    expect_counts(f, 0, 0);
    /* The result given is the one reported. */
    assert_int_equal(add_id(f, 5, "m5"), 5);
    assert_int_equal(tracker_fail_attached(f->t, TRACKER_NACK), 1);
    expect_calls(f, 1, C(5), TRACKER_NACK);
    assert_int_equal(tracker_nack(f->t, 5, false), 1);
    expect_calls(f, 0);
    fixture_free(f);
}

static void test_fail_all(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(8);
    add_n(f, 5);
    assert_true(tracker_detach(f->t, 3));
    assert_true(tracker_return(f->t, "m2", 2));
    assert_int_equal(tracker_ack(f->t, 4, false), 0);
    expect_calls(f, 1, C(4), TRACKER_ACK);
    assert_int_equal(tracker_fail_all(f->t), 3);
    expect_calls(f, 3, C(1), TRACKER_LOST, C(2), TRACKER_LOST, C(5), TRACKER_LOST);
    expect_counts(f, 0, 0);
    /* Forgotten: confirms for them are unknown now. */
    assert_int_equal(tracker_ack(f->t, 5, true), 0);
    assert_false(tracker_detach(f->t, 1));
    assert_false(tracker_return(f->t, "m1", 2));
    assert_int_equal(tracker_fail_all(f->t), 0);
    expect_calls(f, 0);
    /* Without a reset tags go on. */
    assert_int_equal(add_id(f, 6, NULL), 6);
    assert_int_equal(tracker_ack(f->t, 6, false), 0);
    expect_calls(f, 1, C(6), TRACKER_ACK);
    fixture_free(f);
}

/* Detached entries forgotten to make room are counted as late confirms
 * (their confirms will be dropped as unknown tags); those detached as
 * expected (an rpc reply came first) are not. */
static void test_forgotten_counted(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(4);
    add_n(f, 4);
    assert_true(tracker_detach(f->t, 1));
    assert_true(tracker_detach(f->t, 2));
    assert_true(tracker_detach_expected(f->t, 3));
    assert_int_equal(tracker_take_forgotten(f->t), 0);
    /* Full: the add forgets the oldest detached ones, (4 + 3) / 4 = 1. */
    assert_int_equal(add_id(f, 5, "m5"), 5);
    assert_int_equal(tracker_take_forgotten(f->t), 1);
    assert_int_equal(tracker_take_forgotten(f->t), 0); /* taken */
    assert_int_equal(add_id(f, 6, "m6"), 6);
    assert_int_equal(tracker_take_forgotten(f->t), 1);
    /* The next one forgotten was detached as expected: not late. */
    assert_int_equal(add_id(f, 7, "m7"), 7);
    assert_int_equal(tracker_take_forgotten(f->t), 0);
    /* The forgotten tags' confirms are unknown now, and not counted again. */
    assert_int_equal(tracker_ack(f->t, 3, true), 0);
    expect_calls(f, 0);
    fixture_free(f);
}

static void test_reset(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(4);
    add_n(f, 3);
    assert_int_equal(tracker_ack(f->t, 2, false), 0); /* head stays at 1 */
    assert_int_equal(tracker_fail_all(f->t), 2);
    tracker_reset(f->t);
    clear(f);
    add_n(f, 4); /* tags from 1 again, and the whole ring is usable */
    assert_int_equal(tracker_add(f->t, C(5), NULL, 0), 0);
    /* A reset with entries left (a caller bug) still answers them. */
    assert_true(tracker_detach(f->t, 4));
    tracker_reset(f->t);
    expect_calls(f, 3, C(1), TRACKER_LOST, C(2), TRACKER_LOST, C(3), TRACKER_LOST);
    expect_counts(f, 0, 0);
    assert_int_equal(add_id(f, 7, "x"), 1);
    assert_int_equal(tracker_ack(f->t, 1, false), 0);
    expect_calls(f, 1, C(7), TRACKER_ACK);
    fixture_free(f);
}

static void test_full_at_cap(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(4);
    add_n(f, 4);
    /* CAP requests wait, every one attached: refused. */
    assert_int_equal(tracker_add(f->t, C(5), "m5", 2), 0);
    expect_counts(f, 4, 4);
    /* Detached entries make room: the oldest are forgotten, a quarter of
     * CAP (here one) at a time. */
    assert_true(tracker_detach(f->t, 2));
    assert_true(tracker_detach(f->t, 3));
    assert_int_equal(tracker_add(f->t, C(5), "m5", 2), 5);
    expect_counts(f, 4, 3);
    assert_int_equal(tracker_lagging(f->t), 1);       /* tag 1 moved out of the ring */
    assert_int_equal(tracker_ack(f->t, 2, false), 0); /* forgotten: unknown, not late */
    assert_int_equal(tracker_ack(f->t, 3, false), 1); /* still held: late */
    expect_calls(f, 0);
    expect_counts(f, 3, 3);
    /* The ids of reused slots are the new ones. */
    assert_int_equal(tracker_add(f->t, C(6), "m6", 2), 6);
    assert_int_equal(tracker_add(f->t, C(7), "m7", 2), 0);
    assert_false(tracker_return(f->t, "m2", 2));
    assert_true(tracker_return(f->t, "m5", 2));
    assert_int_equal(tracker_ack(f->t, 6, true), 0);
    expect_calls(f, 4, C(1), TRACKER_ACK, C(4), TRACKER_ACK, C(5), TRACKER_RETURNED, C(6),
                 TRACKER_ACK);
    expect_counts(f, 0, 0);
    assert_int_equal(tracker_lagging(f->t), 0);
    fixture_free(f);
}

/* The defect of issue 11: one confirm that never comes held the oldest slot,
 * and CAP publishes later every add was refused. Now it moves out of the ring
 * and any number of publishes after it are accepted, while it still waits. */
static void test_stuck_tag_does_not_block(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(4);
    assert_int_equal(add_id(f, 1, "stuck"), 1);
    for (uintptr_t tag = 2; tag < 2 + 100 * 4; tag++) {
        assert_int_equal(tracker_add(f->t, C(tag), "ok", 2), tag);
        assert_int_equal(tracker_ack(f->t, tag, false), 0);
        expect_calls(f, 1, C(tag), TRACKER_ACK);
    }
    expect_counts(f, 1, 1);
    assert_int_equal(tracker_lagging(f->t), 1);
    assert_true(tracker_detach(f->t, 2 + 100 * 4 - 1) == false); /* completed */
    /* Its confirm comes at last: reported, with the result it earned. */
    assert_true(tracker_return(f->t, "stuck", 5));
    assert_int_equal(tracker_ack(f->t, 1, false), 0);
    expect_calls(f, 1, C(1), TRACKER_RETURNED);
    expect_counts(f, 0, 0);
    assert_int_equal(tracker_lagging(f->t), 0);
    /* Several stuck ones, then many more: refused only once CAP attached
     * entries wait. */
    uint64_t base = 2 + 100 * 4;
    for (uintptr_t i = 0; i < 3; i++)
        assert_int_equal(tracker_add(f->t, C(1000 + i), NULL, 0), base + i);
    for (uint64_t tag = base + 3; tag < base + 3 + 50; tag++) {
        assert_int_equal(tracker_add(f->t, C(tag), NULL, 0), tag);
        assert_int_equal(tracker_ack(f->t, tag, false), 0);
        clear(f);
    }
    assert_int_equal(tracker_lagging(f->t), 3);
    assert_int_equal(tracker_add(f->t, C(1), NULL, 0), base + 53);
    assert_int_equal(tracker_add(f->t, C(2), NULL, 0), 0);   /* 4 attached: full */
    assert_int_equal(tracker_ack(f->t, base + 1, false), 0); /* a laggard in the middle */
    expect_calls(f, 1, C(1001), TRACKER_ACK);
    assert_int_equal(tracker_add(f->t, C(2), NULL, 0), base + 54);
    assert_int_equal(tracker_ack(f->t, base + 54, true), 0);
    expect_calls(f, 4, C(1000), TRACKER_ACK, C(1002), TRACKER_ACK, C(1), TRACKER_ACK, C(2),
                 TRACKER_ACK);
    expect_counts(f, 0, 0);
    fixture_free(f);
}

/* A queue that never confirms, whose requests all time out (detached): the
 * tracker never fills, however long it goes on, and other publishes are
 * always accepted. */
/* An entry detached as expected (its rpc reply came first): its confirm is
 * dropped and not counted as late, and, since nobody waits for it, it
 * frees its room like any detached entry: CAP of them whose confirm never
 * comes do not refuse the next add. */
static void test_detach_expected(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(4);
    add_n(f, 3);
    assert_true(tracker_detach_expected(f->t, 2));
    expect_counts(f, 3, 2);
    assert_false(tracker_detach_expected(f->t, 2)); /* detached already */
    assert_false(tracker_detach_expected(f->t, 9)); /* never issued */
    assert_true(tracker_detach(f->t, 3));
    assert_int_equal(tracker_ack(f->t, 3, true), 1); /* 3 late, 2 expected */
    expect_calls(f, 1, C(1), TRACKER_ACK);
    expect_counts(f, 0, 0);
    for (uintptr_t i = 10; i < 14; i++) {
        uint64_t tag = tracker_add(f->t, C(i), "e", 1);
        assert_int_not_equal(tag, 0);
        assert_true(tracker_detach_expected(f->t, tag));
    }
    expect_counts(f, 4, 0); /* CAP entries, none waited for, never confirmed */
    for (uintptr_t i = 20; i < 40; i++) {
        uint64_t tag = tracker_add(f->t, C(i), "n", 1);
        if (tag == 0)
            fail_msg("add %d refused behind entries detached as expected", (int)(i - 20));
        assert_int_equal(tracker_ack(f->t, tag, false), 0);
        expect_calls(f, 1, C(i), TRACKER_ACK);
    }
    fixture_free(f);
}

/* A callback of a multiple ack adds while HEAD sits before a slot acked out
 * of order: the add must not take that free slot for a pending entry. */
static struct tracker *g_cb_t;
static int g_cb_adds;
static void add_twice_cb(void *arg, void *ctx, enum tracker_result r)
{
    (void)arg;
    (void)r;
    if (ctx == C(1) && g_cb_adds-- > 0) {
        assert_int_not_equal(tracker_add(g_cb_t, C(50), "x", 1), 0);
        assert_int_not_equal(tracker_add(g_cb_t, C(51), "y", 1), 0);
    }
}

static void test_add_from_multiple_ack(void **state)
{
    (void)state;
    struct tracker *t = tracker_new(4, add_twice_cb, NULL);
    assert_non_null(t);
    g_cb_t = t;
    g_cb_adds = 1;
    for (uintptr_t i = 1; i <= 4; i++)
        assert_int_equal(tracker_add(t, C(i), "a", 1), i);
    assert_int_equal(tracker_ack(t, 2, false), 0);
    assert_int_equal(tracker_ack(t, 1, true), 0); /* its callback adds 5 and 6 */
    assert_int_equal(tracker_pending(t), 4);      /* 3, 4, 5, 6 */
    assert_int_equal(tracker_ack(t, 6, true), 0); /* none of them late */
    assert_int_equal(tracker_pending(t), 0);
    assert_int_equal(tracker_attached(t), 0);
    tracker_free(t);
}

static void test_detached_never_fill(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(8);
    for (uintptr_t i = 1; i <= 10000; i++) {
        uint64_t stuck = tracker_add(f->t, C(i), "s", 1);
        assert_int_not_equal(stuck, 0);
        uint64_t ok = tracker_add(f->t, C(i + 20000), "o", 1);
        assert_int_not_equal(ok, 0);
        assert_int_equal(tracker_ack(f->t, ok, false), 0);
        expect_calls(f, 1, C(i + 20000), TRACKER_ACK);
        assert_true(tracker_detach(f->t, stuck)); /* its request timed out */
        assert_true(tracker_pending(f->t) <= 8);
    }
    expect_counts(f, tracker_pending(f->t), 0);
    /* The queue confirms everything at last: the ones still held are late,
     * the forgotten ones unknown; nobody is answered twice. */
    size_t held = tracker_pending(f->t);
    assert_true(held > 0);
    assert_int_equal(tracker_ack(f->t, 20000, true), held);
    expect_calls(f, 0);
    expect_counts(f, 0, 0);
    fixture_free(f);
}

static void test_laggards_multiple_and_nack(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(5);
    /* Tags 1, 3, 5 stuck; 2, 4, 6.. acked as they go. */
    uintptr_t tag = 1;
    for (; tag <= 6; tag++) {
        assert_int_equal(add_id(f, tag, "m"), tag);
        if (tag % 2 == 0)
            assert_int_equal(tracker_ack(f->t, tag, false), 0);
    }
    for (; tag <= 14; tag++) {
        assert_int_equal(add_id(f, tag, "m"), tag);
        assert_int_equal(tracker_ack(f->t, tag, false), 0);
    }
    expect_calls(f, 11, C(2), TRACKER_ACK, C(4), TRACKER_ACK, C(6), TRACKER_ACK, C(7), TRACKER_ACK,
                 C(8), TRACKER_ACK, C(9), TRACKER_ACK, C(10), TRACKER_ACK, C(11), TRACKER_ACK,
                 C(12), TRACKER_ACK, C(13), TRACKER_ACK, C(14), TRACKER_ACK);
    assert_int_equal(tracker_lagging(f->t), 3);
    /* Two ring entries after them, one detached. */
    assert_int_equal(add_id(f, 15, "m"), 15);
    assert_int_equal(tracker_add(f->t, NULL, "m", 1), 16);
    assert_true(tracker_detach(f->t, 3)); /* a laggard, detached */
    expect_counts(f, 5, 3);
    /* A multiple ack below the ring covers only laggards. */
    assert_int_equal(tracker_ack(f->t, 3, true), 1);
    expect_calls(f, 1, C(1), TRACKER_ACK);
    assert_int_equal(tracker_lagging(f->t), 1);
    /* A multiple nack across the last laggard and the ring, in tag order. */
    assert_int_equal(tracker_nack(f->t, 16, true), 1);
    expect_calls(f, 2, C(5), TRACKER_NACK, C(15), TRACKER_NACK);
    expect_counts(f, 0, 0);
    assert_int_equal(tracker_lagging(f->t), 0);
    /* Confirms of what is gone are ignored. */
    assert_int_equal(tracker_ack(f->t, 5, false), 0);
    assert_int_equal(tracker_ack(f->t, 16, true), 0);
    expect_calls(f, 0);
    fixture_free(f);
}

static void test_laggard_return_detach_fail(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(3);
    assert_int_equal(add_id(f, 1, "x"), 1);
    assert_int_equal(add_id(f, 2, "y"), 2);
    assert_int_equal(add_id(f, 3, "q"), 3);
    assert_int_equal(tracker_ack(f->t, 3, false), 0);
    assert_int_equal(add_id(f, 4, "x"), 4); /* 1 moves out */
    assert_int_equal(tracker_ack(f->t, 4, false), 0);
    assert_int_equal(add_id(f, 5, "z"), 5); /* 2 moves out */
    expect_calls(f, 2, C(3), TRACKER_ACK, C(4), TRACKER_ACK);
    assert_int_equal(tracker_lagging(f->t), 2);
    /* A return marks a laggard. */
    assert_true(tracker_return(f->t, "x", 1));
    assert_false(tracker_return(f->t, "x", 1));
    assert_false(tracker_detach(f->t, 3)); /* completed */
    assert_false(tracker_detach(f->t, 4));
    assert_true(tracker_detach(f->t, 2)); /* a laggard */
    expect_counts(f, 3, 2);
    /* Blocked: the attached ones, laggards first. */
    assert_int_equal(tracker_fail_attached(f->t, TRACKER_LOST), 2);
    expect_calls(f, 2, C(1), TRACKER_LOST, C(5), TRACKER_LOST);
    expect_counts(f, 3, 0);
    /* Their confirms come late. */
    assert_int_equal(tracker_ack(f->t, 1, false), 1);
    assert_int_equal(tracker_ack(f->t, 2, false), 1);
    assert_int_equal(tracker_ack(f->t, 2, false), 0);
    expect_counts(f, 1, 0);
    assert_int_equal(tracker_lagging(f->t), 0);
    /* 5 (detached) is forgotten for 8; 9 finds CAP attached entries. */
    assert_int_equal(add_id(f, 6, "v"), 6);
    assert_int_equal(add_id(f, 7, "v"), 7);
    assert_int_equal(add_id(f, 8, "v"), 8);
    assert_int_equal(add_id(f, 9, "v"), 0);
    expect_counts(f, 3, 3);
    assert_int_equal(tracker_ack(f->t, 5, false), 0); /* forgotten: unknown */
    /* Lost: every entry is forgotten, laggards included. */
    assert_int_equal(tracker_fail_all(f->t), 3);
    expect_calls(f, 3, C(6), TRACKER_LOST, C(7), TRACKER_LOST, C(8), TRACKER_LOST);
    expect_counts(f, 0, 0);
    fixture_free(f);
}

static void test_unadd(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(4);
    add_n(f, 3);
    tracker_unadd(f->t, 2); /* not the newest: ignored */
    tracker_unadd(f->t, 4); /* never issued: ignored */
    tracker_unadd(f->t, 0);
    expect_counts(f, 3, 3);
    tracker_unadd(f->t, 3);
    expect_counts(f, 2, 2);
    assert_int_equal(add_id(f, 30, "again"), 3); /* the tag is reused */
    assert_true(tracker_return(f->t, "again", 5));
    assert_int_equal(tracker_add(f->t, NULL, "d", 1), 4); /* detached newest */
    expect_counts(f, 4, 3);
    tracker_unadd(f->t, 4);
    expect_counts(f, 3, 3);
    assert_int_equal(tracker_ack(f->t, 3, true), 0);
    expect_calls(f, 3, C(1), TRACKER_ACK, C(2), TRACKER_ACK, C(30), TRACKER_RETURNED);
    /* The only entry, which is also the head. */
    assert_int_equal(add_id(f, 4, "m4"), 4);
    tracker_unadd(f->t, 4);
    expect_counts(f, 0, 0);
    assert_int_equal(tracker_ack(f->t, 4, false), 0); /* no longer issued */
    expect_calls(f, 0);
    for (uintptr_t i = 4; i <= 7; i++)
        assert_int_equal(add_id(f, i, NULL), i);
    assert_int_equal(add_id(f, 8, NULL), 0);
    fixture_free(f);
}

static void test_ack_never_issued(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(8);
    add_n(f, 3);
    assert_int_equal(tracker_ack(f->t, 7, false), 0);
    assert_int_equal(tracker_ack(f->t, 7, true), 0);
    assert_int_equal(tracker_nack(f->t, 4, true), 0);
    assert_int_equal(tracker_ack(f->t, 0, true), 0);
    assert_int_equal(tracker_ack(f->t, UINT64_MAX, true), 0);
    expect_calls(f, 0);
    expect_counts(f, 3, 3);
    /* After a reset, a stale confirm of the old channel's tags is ignored. */
    assert_int_equal(tracker_fail_all(f->t), 3);
    tracker_reset(f->t);
    clear(f);
    assert_int_equal(add_id(f, 10, NULL), 1);
    assert_int_equal(tracker_ack(f->t, 3, true), 0);
    expect_calls(f, 0);
    expect_counts(f, 1, 1);
    fixture_free(f);
}

/* ---- callbacks that call back in ---------------------------------------- */

static void hook_detach(struct fixture *f, void *ctx, enum tracker_result r)
{
    (void)ctx;
    (void)r;
    assert_true(tracker_detach(f->t, f->hook_tag));
}

static void test_reentrant_detach(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(8);
    add_n(f, 5);
    /* Tag 3 is inside the range being completed: dropped as late. */
    f->hook = hook_detach;
    f->hook_ctx = C(1);
    f->hook_tag = 3;
    assert_int_equal(tracker_ack(f->t, 4, true), 1);
    expect_calls(f, 3, C(1), TRACKER_ACK, C(2), TRACKER_ACK, C(4), TRACKER_ACK);
    expect_counts(f, 1, 1);
    /* Tag 6 is past it: stays pending, detached. */
    assert_int_equal(add_id(f, 6, NULL), 6);
    f->hook_ctx = C(5);
    f->hook_tag = 6;
    assert_int_equal(tracker_ack(f->t, 5, false), 0);
    expect_calls(f, 1, C(5), TRACKER_ACK);
    expect_counts(f, 1, 0);
    f->hook = NULL;
    assert_int_equal(tracker_ack(f->t, 6, false), 1);
    expect_calls(f, 0);
    /* While failing attached entries. */
    for (uintptr_t i = 7; i <= 9; i++)
        assert_int_equal(add_id(f, i, NULL), i);
    f->hook = hook_detach;
    f->hook_ctx = C(7);
    f->hook_tag = 8;
    assert_int_equal(tracker_fail_attached(f->t, TRACKER_LOST), 2);
    expect_calls(f, 2, C(7), TRACKER_LOST, C(9), TRACKER_LOST);
    expect_counts(f, 3, 0);
    fixture_free(f);
}

static void hook_add(struct fixture *f, void *ctx, enum tracker_result r)
{
    (void)ctx;
    (void)r;
    assert_true(f->hook_n_added < 4);
    uintptr_t n = 100 + f->hook_n_added;
    f->hook_added[f->hook_n_added++] = tracker_add(f->t, C(n), "new", 3);
}

static void test_reentrant_add(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(3);
    add_n(f, 3);
    /* Full; the slot of tag 1 is free by the time done runs for it. */
    f->hook = hook_add;
    f->hook_ctx = C(1);
    assert_int_equal(tracker_ack(f->t, 3, true), 0);
    assert_int_equal(f->hook_n_added, 1);
    assert_int_equal(f->hook_added[0], 4);
    /* The new tag is past the range: not completed by this ack. */
    expect_calls(f, 3, C(1), TRACKER_ACK, C(2), TRACKER_ACK, C(3), TRACKER_ACK);
    expect_counts(f, 1, 1);
    /* Single ack, full ring. */
    f->hook_ctx = C(100);
    assert_int_equal(tracker_add(f->t, C(5), "m5", 2), 5);
    assert_int_equal(tracker_add(f->t, C(6), "m6", 2), 6);
    assert_int_equal(tracker_add(f->t, C(7), "m7", 2), 0);
    assert_int_equal(tracker_ack(f->t, 4, false), 0);
    assert_int_equal(f->hook_n_added, 2);
    assert_int_equal(f->hook_added[1], 7);
    expect_calls(f, 1, C(100), TRACKER_ACK);
    expect_counts(f, 3, 3);
    f->hook = NULL;
    assert_true(tracker_return(f->t, "new", 3));
    assert_int_equal(tracker_ack(f->t, 7, true), 0);
    expect_calls(f, 3, C(5), TRACKER_ACK, C(6), TRACKER_ACK, C(101), TRACKER_RETURNED);
    /* From fail_attached: the new entry stays attached. */
    f->hook = hook_add;
    f->hook_ctx = NULL;
    f->hook_n_added = 0;
    assert_int_equal(add_id(f, 8, NULL), 8);
    assert_int_equal(tracker_fail_attached(f->t, TRACKER_LOST), 1);
    assert_int_equal(f->hook_n_added, 1);
    assert_int_equal(f->hook_added[0], 9);
    expect_calls(f, 1, C(8), TRACKER_LOST);
    expect_counts(f, 2, 1);
    fixture_free(f);
}

static void hook_fail_all_reset_add(struct fixture *f, void *ctx, enum tracker_result r)
{
    (void)ctx;
    (void)r;
    f->hook = NULL;
    assert_int_equal(tracker_fail_all(f->t), 3);
    tracker_reset(f->t);
    f->hook_added[0] = tracker_add(f->t, C(200), NULL, 0);
    f->hook_added[1] = tracker_add(f->t, C(201), NULL, 0);
}

static void test_reentrant_fail_all_reset(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(8);
    add_n(f, 4);
    f->hook = hook_fail_all_reset_add;
    f->hook_ctx = C(1);
    /* The rest of this stale ack must not complete the new tags 1 and 2. */
    assert_int_equal(tracker_ack(f->t, 3, true), 0);
    assert_int_equal(f->hook_added[0], 1);
    assert_int_equal(f->hook_added[1], 2);
    expect_calls(f, 4, C(1), TRACKER_ACK, C(2), TRACKER_LOST, C(3), TRACKER_LOST, C(4),
                 TRACKER_LOST);
    expect_counts(f, 2, 2);
    assert_int_equal(tracker_ack(f->t, 2, true), 0);
    expect_calls(f, 2, C(200), TRACKER_ACK, C(201), TRACKER_ACK);
    /* The same from fail_attached. */
    for (uintptr_t i = 1; i <= 4; i++)
        assert_int_equal(add_id(f, i, NULL), i + 2);
    f->hook = hook_fail_all_reset_add;
    f->hook_ctx = C(1);
    assert_int_equal(tracker_fail_attached(f->t, TRACKER_NACK), 1);
    expect_calls(f, 4, C(1), TRACKER_NACK, C(2), TRACKER_LOST, C(3), TRACKER_LOST, C(4),
                 TRACKER_LOST);
    expect_counts(f, 2, 2);
    fixture_free(f);
}

static void hook_add2(struct fixture *f, void *ctx, enum tracker_result r)
{
    for (int i = 0; i < 2; i++)
        hook_add(f, ctx, r);
}

/* Callbacks that move entries between the ring and the laggards, or forget
 * them, while a loop over several entries runs. */
static void test_reentrant_laggards(void **state)
{
    (void)state;
    /* An add inside a multiple ack pushes tag 2, which the ack covers, out
     * of the ring: completed once, in tag order. */
    struct fixture *f = fixture_new(4);
    add_n(f, 4);
    assert_int_equal(tracker_ack(f->t, 3, false), 0); /* a hole in the ring */
    expect_calls(f, 1, C(3), TRACKER_ACK);
    f->hook = hook_add2;
    f->hook_ctx = C(1);
    assert_int_equal(tracker_ack(f->t, 4, true), 0);
    assert_int_equal(f->hook_n_added, 2);
    assert_int_equal(f->hook_added[0], 5);
    assert_int_equal(f->hook_added[1], 6); /* moved tag 2 out of the ring */
    expect_calls(f, 3, C(1), TRACKER_ACK, C(2), TRACKER_ACK, C(4), TRACKER_ACK);
    expect_counts(f, 2, 2);
    assert_int_equal(tracker_lagging(f->t), 0);
    fixture_free(f);

    /* A detach, from a callback, of a laggard the loop has not reached. */
    f = fixture_new(3);
    add_n(f, 3);
    assert_int_equal(tracker_ack(f->t, 3, false), 0);
    assert_int_equal(add_id(f, 4, NULL), 4); /* 1 moves out */
    assert_int_equal(tracker_ack(f->t, 4, false), 0);
    assert_int_equal(add_id(f, 5, NULL), 5); /* 2 moves out */
    clear(f);
    assert_int_equal(tracker_lagging(f->t), 2);
    f->hook = hook_detach;
    f->hook_ctx = C(1);
    f->hook_tag = 2;
    assert_int_equal(tracker_ack(f->t, 5, true), 1);
    expect_calls(f, 2, C(1), TRACKER_ACK, C(5), TRACKER_ACK);
    expect_counts(f, 0, 0);
    fixture_free(f);

    /* An add inside fail_attached forgets the laggard just failed (detached
     * now) to make room; the loop goes on, and the new entry stays
     * attached. */
    f = fixture_new(3);
    add_n(f, 2);
    assert_int_equal(tracker_ack(f->t, 2, false), 0);
    assert_int_equal(add_id(f, 3, NULL), 3);
    assert_int_equal(add_id(f, 4, NULL), 4); /* 1 moves out */
    clear(f);
    assert_int_equal(tracker_lagging(f->t), 1);
    f->hook = hook_add;
    f->hook_ctx = C(1);
    assert_int_equal(tracker_fail_attached(f->t, TRACKER_LOST), 3);
    assert_int_equal(f->hook_n_added, 1);
    assert_int_equal(f->hook_added[0], 5);
    expect_calls(f, 3, C(1), TRACKER_LOST, C(3), TRACKER_LOST, C(4), TRACKER_LOST);
    expect_counts(f, 3, 1);
    assert_int_equal(tracker_lagging(f->t), 0);
    f->hook = NULL;
    assert_int_equal(tracker_ack(f->t, 5, true), 2);
    expect_calls(f, 1, C(100), TRACKER_ACK);
    fixture_free(f);

    /* Connection lost and reset from the callback of a laggard: the stale
     * ack stops at once, the new channel's tags 1 and 2 untouched. */
    f = fixture_new(4);
    add_n(f, 3);
    assert_int_equal(tracker_ack(f->t, 3, false), 0);
    assert_int_equal(add_id(f, 4, NULL), 4);
    assert_int_equal(add_id(f, 5, NULL), 5); /* 1 moves out */
    assert_int_equal(tracker_ack(f->t, 4, false), 0);
    assert_int_equal(add_id(f, 6, NULL), 6); /* 2 moves out */
    clear(f);
    assert_int_equal(tracker_lagging(f->t), 2);
    f->hook = hook_fail_all_reset_add;
    f->hook_ctx = C(1);
    assert_int_equal(tracker_ack(f->t, 6, true), 0);
    assert_int_equal(f->hook_added[0], 1);
    assert_int_equal(f->hook_added[1], 2);
    expect_calls(f, 4, C(1), TRACKER_ACK, C(2), TRACKER_LOST, C(5), TRACKER_LOST, C(6),
                 TRACKER_LOST);
    expect_counts(f, 2, 2);
    assert_int_equal(tracker_lagging(f->t), 0);
    assert_int_equal(tracker_ack(f->t, 2, true), 0);
    expect_calls(f, 2, C(200), TRACKER_ACK, C(201), TRACKER_ACK);
    fixture_free(f);
}

static void test_add_refused_inside_fail_all(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(8);
    add_n(f, 2);
    f->hook = hook_add;
    assert_int_equal(tracker_fail_all(f->t), 2);
    assert_int_equal(f->hook_n_added, 2);
    assert_int_equal(f->hook_added[0], 0);
    assert_int_equal(f->hook_added[1], 0);
    expect_calls(f, 2, C(1), TRACKER_LOST, C(2), TRACKER_LOST);
    expect_counts(f, 0, 0);
    /* And accepted again afterwards. */
    f->hook = NULL;
    assert_int_equal(add_id(f, 3, NULL), 3);
    fixture_free(f);
}

static void hook_ack(struct fixture *f, void *ctx, enum tracker_result r)
{
    (void)ctx;
    (void)r;
    assert_int_equal(tracker_ack(f->t, f->hook_tag, false), 0);
}

static void test_reentrant_ack(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(8);
    add_n(f, 4);
    /* Completes tag 2 under the multiple ack of 1..3: reported once. */
    f->hook = hook_ack;
    f->hook_ctx = C(1);
    f->hook_tag = 2;
    assert_int_equal(tracker_ack(f->t, 3, true), 0);
    expect_calls(f, 3, C(1), TRACKER_ACK, C(2), TRACKER_ACK, C(3), TRACKER_ACK);
    expect_counts(f, 1, 1);
    /* The head is at 4 now: confirms of 1..3 are old. */
    f->hook = NULL;
    assert_int_equal(tracker_ack(f->t, 3, true), 0);
    expect_calls(f, 0);
    assert_int_equal(tracker_ack(f->t, 4, true), 0);
    expect_calls(f, 1, C(4), TRACKER_ACK);
    fixture_free(f);
}

static void hook_counts(struct fixture *f, void *ctx, enum tracker_result r)
{
    (void)ctx;
    (void)r;
    /* The completed entry is already out of both counters. */
    assert_int_equal(tracker_pending(f->t), f->hook_tag);
    assert_int_equal(tracker_attached(f->t), f->hook_tag);
    f->hook_tag--;
}

static void test_counts_inside_done(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(8);
    add_n(f, 4);
    f->hook = hook_counts;
    f->hook_tag = 3;
    assert_int_equal(tracker_ack(f->t, 3, true), 0);
    assert_int_equal(f->n, 3);
    assert_int_equal(f->hook_tag, 0);
    fixture_free(f);
}

/* ---- wrap-around against a shadow model --------------------------------- */

#define MODEL_CAP 8
#define MODEL_ADDS 100000
#define MODEL_TAGS (MODEL_ADDS + 16) /* tags of one epoch fit */
#define MODEL_IDS 5                  /* few distinct ids: duplicates in flight */

/* What the model expects of one tag. */
struct mentry {
    uint8_t state; /* 0 free, 1 pending, 2 returned */
    uint8_t id;    /* index of its message id */
    void *ctx;     /* NULL when detached */
};

/* The shadow tracker: plain arrays by tag, no ring. */
struct model {
    struct mentry *e;                 /* MODEL_TAGS entries */
    uint64_t head, next;              /* as in the tracker */
    size_t pending, attached;         /* as in the tracker */
    size_t forgotten, refused;        /* adds that forgot detached entries, refused */
    size_t n;                         /* expected calls of the current step */
    void *ctx[MAX_CALLS];             /* their ctx */
    enum tracker_result r[MAX_CALLS]; /* their result */
};

static uint64_t rnd(uint64_t *s)
{
    /* xorshift64: deterministic, good enough to shuffle confirms. */
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static const char *const model_ids[MODEL_IDS] = {"alpha", "beta", "gamma", "delta", ""};

static void model_expect(struct model *m, void *ctx, enum tracker_result r)
{
    assert_true(m->n < MAX_CALLS);
    m->ctx[m->n] = ctx;
    m->r[m->n] = r;
    m->n++;
}

static void model_advance(struct model *m)
{
    while (m->head < m->next && m->e[m->head].state == 0)
        m->head++;
}

/* Complete TAG if pending; returns 1 if it was detached (late). */
static size_t model_complete(struct model *m, uint64_t tag, bool nack)
{
    struct mentry *e = &m->e[tag];
    if (e->state == 0)
        return 0;
    enum tracker_result r = nack ? TRACKER_NACK : e->state == 2 ? TRACKER_RETURNED : TRACKER_ACK;
    e->state = 0;
    m->pending--;
    if (e->ctx == NULL)
        return 1;
    m->attached--;
    model_expect(m, e->ctx, r);
    e->ctx = NULL;
    return 0;
}

static size_t model_confirm(struct model *m, uint64_t tag, bool multiple, bool nack)
{
    if (tag < m->head || tag >= m->next)
        return 0;
    size_t late = 0;
    for (uint64_t t = multiple ? m->head : tag; t <= tag; t++)
        late += model_complete(m, t, nack);
    model_advance(m);
    return late;
}

static void check_step(const struct fixture *f, const struct model *m)
{
    assert_int_equal(f->n, m->n);
    for (size_t i = 0; i < m->n; i++) {
        assert_ptr_equal(f->ctx[i], m->ctx[i]);
        assert_int_equal(f->r[i], m->r[i]);
    }
    assert_int_equal(tracker_pending(f->t), m->pending);
    assert_int_equal(tracker_attached(f->t), m->attached);
}

/* A tag around the window: mostly a pending one (the window may be wide,
 * a laggard far behind), sometimes any inside it or just outside. */
static uint64_t pick_tag(struct model *m, uint64_t *seed)
{
    uint64_t lo = m->head > 2 ? m->head - 2 : 0;
    uint64_t span = m->next + 2 - lo;
    if (rnd(seed) % 8 != 0 && m->next > m->head) {
        uint64_t tag = m->head;
        for (int i = 0; i < 8; i++) {
            tag = m->head + rnd(seed) % (m->next - m->head);
            if (m->e[tag].state != 0)
                break;
        }
        return tag;
    }
    return lo + rnd(seed) % span;
}

/* Room for an add as the tracker makes it: with CAP pending, forget the
 * oldest detached entries, a quarter of CAP at a time. false: refused. */
static bool model_room(struct model *m)
{
    if (m->pending < MODEL_CAP)
        return true;
    size_t n = 0;
    for (uint64_t t = m->head; t < m->next && n < (MODEL_CAP + 3) / 4; t++) {
        if (m->e[t].state != 0 && m->e[t].ctx == NULL) {
            m->e[t].state = 0;
            m->pending--;
            n++;
        }
    }
    model_advance(m);
    m->forgotten += n > 0;
    m->refused += n == 0;
    return n > 0;
}

static void test_wrap_against_model(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(MODEL_CAP);
    struct model m = {.head = 1, .next = 1};
    m.e = calloc(MODEL_TAGS, sizeof *m.e);
    assert_non_null(m.e);
    uint64_t seed = 0x2545f4914f6cdd1dULL;
    size_t adds = 0, serial = 0, late_seen = 0, returned_seen = 0, resets = 0;
    size_t multi_marked = 0; /* returns that marked several entries */
    uint64_t max_tag = 0;
    size_t max_lagging = 0; /* most entries out of the ring at once */
    while (adds < MODEL_ADDS) {
        clear(f);
        m.n = 0;
        unsigned op = (unsigned)(rnd(&seed) % 1000);
        if (op < 450) {
            uint8_t id = (uint8_t)(rnd(&seed) % MODEL_IDS);
            bool detached = rnd(&seed) % 16 == 0;
            void *ctx = detached ? NULL : C(++serial);
            const char *s = model_ids[id];
            uint64_t tag = tracker_add(f->t, ctx, s, strlen(s));
            if (!model_room(&m)) {
                assert_int_equal(tag, 0);
            } else {
                assert_int_equal(tag, m.next);
                assert_true(m.next < MODEL_TAGS);
                m.e[m.next] = (struct mentry){1, id, ctx};
                m.next++;
                m.pending++;
                m.attached += ctx != NULL;
                adds++;
                if (tag > max_tag)
                    max_tag = tag;
                if (tracker_lagging(f->t) > max_lagging)
                    max_lagging = tracker_lagging(f->t);
            }
        } else if (op < 800) {
            bool multiple = op >= 700;
            bool nack = rnd(&seed) % 10 == 0;
            uint64_t tag = pick_tag(&m, &seed);
            size_t late =
                nack ? tracker_nack(f->t, tag, multiple) : tracker_ack(f->t, tag, multiple);
            assert_int_equal(late, model_confirm(&m, tag, multiple, nack));
            late_seen += late;
        } else if (op < 900) {
            uint64_t tag = pick_tag(&m, &seed);
            bool pending = tag >= m.head && tag < m.next && m.e[tag].state != 0;
            assert_int_equal(tracker_detach(f->t, tag), pending);
            if (pending && m.e[tag].ctx != NULL) {
                m.e[tag].ctx = NULL;
                m.attached--;
            }
        } else if (op < 980) {
            /* A return marks every pending unreturned entry with its id. */
            uint8_t id = (uint8_t)(rnd(&seed) % MODEL_IDS);
            size_t marked = 0;
            for (uint64_t t = m.head; t < m.next; t++) {
                if (m.e[t].state == 1 && m.e[t].id == id) {
                    m.e[t].state = 2;
                    marked++;
                }
            }
            const char *s = model_ids[id];
            assert_int_equal(tracker_return(f->t, s, strlen(s)), marked > 0);
            returned_seen += marked > 0;
            multi_marked += marked > 1;
        } else if (op < 999 || rnd(&seed) % 20 != 0) {
            enum tracker_result r = op % 2 ? TRACKER_LOST : TRACKER_NACK;
            size_t n = 0;
            for (uint64_t t = m.head; t < m.next; t++) {
                if (m.e[t].state != 0 && m.e[t].ctx != NULL) {
                    model_expect(&m, m.e[t].ctx, r);
                    m.e[t].ctx = NULL;
                    m.attached--;
                    n++;
                }
            }
            assert_int_equal(tracker_fail_attached(f->t, r), n);
        } else {
            size_t n = 0;
            for (uint64_t t = m.head; t < m.next; t++) {
                if (m.e[t].state != 0 && m.e[t].ctx != NULL) {
                    model_expect(&m, m.e[t].ctx, TRACKER_LOST);
                    n++;
                }
            }
            assert_int_equal(tracker_fail_all(f->t), n);
            tracker_reset(f->t);
            memset(m.e, 0, MODEL_TAGS * sizeof *m.e);
            m.head = m.next = 1;
            m.pending = m.attached = 0;
            resets++;
        }
        check_step(f, &m);
    }
    /* Drain: one multiple ack for everything left. */
    clear(f);
    m.n = 0;
    if (m.next > 1)
        assert_int_equal(tracker_ack(f->t, m.next - 1, true),
                         model_confirm(&m, m.next - 1, true, false));
    check_step(f, &m);
    assert_int_equal(tracker_pending(f->t), 0);
    /* The run exercised what it claims to. */
    assert_true(max_tag > 100 * MODEL_CAP); /* the ring wrapped many times */
    assert_true(late_seen > 0);
    assert_true(returned_seen > 0);
    assert_true(multi_marked > 0);
    assert_true(resets > 0);
    assert_true(max_lagging >= MODEL_CAP / 2); /* laggards, many at once */
    assert_true(m.forgotten > 0);
    assert_true(m.refused > 0);
    free(m.e);
    fixture_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_and_names),
        cmocka_unit_test(test_single_ack),
        cmocka_unit_test(test_multiple_skips_completed),
        cmocka_unit_test(test_out_of_order_then_multiple),
        cmocka_unit_test(test_nack),
        cmocka_unit_test(test_return_marks_that_entry),
        cmocka_unit_test(test_return_same_id_marks_all),
        cmocka_unit_test(test_return_unknown),
        cmocka_unit_test(test_long_id),
        cmocka_unit_test(test_detach_then_ack_is_late),
        cmocka_unit_test(test_fail_attached_then_late),
        cmocka_unit_test(test_fail_all),
        cmocka_unit_test(test_forgotten_counted),
        cmocka_unit_test(test_reset),
        cmocka_unit_test(test_full_at_cap),
        cmocka_unit_test(test_stuck_tag_does_not_block),
        cmocka_unit_test(test_detach_expected),
        cmocka_unit_test(test_add_from_multiple_ack),
        cmocka_unit_test(test_detached_never_fill),
        cmocka_unit_test(test_laggards_multiple_and_nack),
        cmocka_unit_test(test_laggard_return_detach_fail),
        cmocka_unit_test(test_unadd),
        cmocka_unit_test(test_ack_never_issued),
        cmocka_unit_test(test_reentrant_detach),
        cmocka_unit_test(test_reentrant_add),
        cmocka_unit_test(test_reentrant_laggards),
        cmocka_unit_test(test_reentrant_fail_all_reset),
        cmocka_unit_test(test_reentrant_ack),
        cmocka_unit_test(test_add_refused_inside_fail_all),
        cmocka_unit_test(test_counts_inside_done),
        cmocka_unit_test(test_wrap_against_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
