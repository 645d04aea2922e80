/* test_pending.c - unit tests of amqp/pending.c: add, find and remove by
 * correlation id, duplicates refused while pending, the capacity, bad
 * lengths, ids that differ only in length or last byte, late and second
 * replies, drain (and callbacks that call back in), a per-table hash key
 * that covers every byte and the length (both seen through drain order), and
 * long random churn against a shadow model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "amqp/pending.h"

#define MAX_CALLS 256 /* drain callbacks one test may record */
#define SCATTER_N 64  /* ids per expect_scattered run */

/* Distinct, never dereferenced request pointers. */
static void *C(uintptr_t n)
{
    return (void *)(n * 16 + 16);
}

static uint64_t rnd(uint64_t *s)
{
    /* xorshift64: deterministic, good enough to pick operations. */
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static struct pending *new_table(size_t cap)
{
    struct pending *p = pending_new(cap);
    assert_non_null(p);
    assert_int_equal(pending_count(p), 0);
    return p;
}

static enum pending_add add_s(struct pending *p, const char *id, void *ctx)
{
    return pending_add(p, id, strlen(id), ctx, 0);
}

static void *find_s(const struct pending *p, const char *id)
{
    return pending_find(p, id, strlen(id));
}

static void *remove_s(struct pending *p, const char *id)
{
    return pending_remove(p, id, strlen(id), NULL);
}

struct recorder;
typedef void hook_fn(struct recorder *r, void *ctx);

/* What the drain callback saw, and what it should do in turn. */
struct recorder {
    struct pending *p;         /* the table being drained */
    size_t n;                  /* calls recorded */
    void *ctx[MAX_CALLS];      /* ctx of each call */
    size_t count_seen[4];      /* pending_count inside the first calls */
    hook_fn *hook;             /* run inside each call, after recording */
    size_t hook_calls;         /* how many times the hook ran */
    enum pending_add added[4]; /* results of the hook's adds */
    void *got[4];              /* results of the hook's finds/removes */
    size_t nested;             /* result of a nested pending_drain */
};

static void on_drain(void *arg, void *ctx)
{
    struct recorder *r = arg;
    assert_non_null(ctx);
    assert_true(r->n < MAX_CALLS);
    if (r->n < 4)
        r->count_seen[r->n] = pending_count(r->p);
    r->ctx[r->n++] = ctx;
    if (r->hook != NULL)
        r->hook(r, ctx);
}

/* Each of C(1)..C(n) was called back exactly once, and nothing else. */
static void expect_each_once(const struct recorder *r, uintptr_t n)
{
    assert_int_equal(r->n, n);
    for (uintptr_t i = 1; i <= n; i++) {
        size_t seen = 0;
        for (size_t k = 0; k < r->n; k++)
            seen += r->ctx[k] == C(i);
        assert_int_equal(seen, 1);
    }
}

static void test_new_free_names(void **state)
{
    (void)state;
    assert_null(pending_new(0));
    assert_null(pending_new(((size_t)1 << 30) + 1));
    assert_null(pending_new(SIZE_MAX));
    struct pending *p = new_table(1);
    assert_int_equal(add_s(p, "a", C(1)), PENDING_ADDED);
    assert_int_equal(pending_count(p), 1);
    pending_free(p); /* with an entry left: the caller's ctx is not touched */
    pending_free(NULL);
    assert_string_equal(pending_add_name(PENDING_ADDED), "added");
    assert_string_equal(pending_add_name(PENDING_DUPLICATE), "duplicate");
    assert_string_equal(pending_add_name(PENDING_FULL), "full");
    assert_string_equal(pending_add_name(PENDING_BADID), "bad id");
    assert_string_equal(pending_add_name((enum pending_add)42), "unknown");
}

static void test_add_find_remove(void **state)
{
    (void)state;
    struct pending *p = new_table(8);
    assert_null(find_s(p, "01J0000000000000000000000A"));
    assert_int_equal(add_s(p, "01J0000000000000000000000A", C(1)), PENDING_ADDED);
    assert_int_equal(add_s(p, "client-id-7", C(2)), PENDING_ADDED);
    assert_int_equal(add_s(p, "x", C(3)), PENDING_ADDED);
    assert_int_equal(pending_count(p), 3);
    assert_ptr_equal(find_s(p, "01J0000000000000000000000A"), C(1));
    assert_ptr_equal(find_s(p, "client-id-7"), C(2));
    assert_ptr_equal(find_s(p, "x"), C(3));
    assert_int_equal(pending_count(p), 3); /* find leaves it pending */
    assert_ptr_equal(remove_s(p, "client-id-7"), C(2));
    assert_int_equal(pending_count(p), 2);
    assert_null(find_s(p, "client-id-7"));
    assert_ptr_equal(find_s(p, "01J0000000000000000000000A"), C(1));
    assert_ptr_equal(find_s(p, "x"), C(3));
    assert_ptr_equal(remove_s(p, "x"), C(3));
    assert_ptr_equal(remove_s(p, "01J0000000000000000000000A"), C(1));
    assert_int_equal(pending_count(p), 0);
    /* The id is copied: the caller's buffer may change afterwards. */
    char buf[8] = "abc";
    assert_int_equal(pending_add(p, buf, 3, C(4), 0), PENDING_ADDED);
    buf[0] = 'z';
    assert_null(pending_find(p, buf, 3));
    assert_ptr_equal(find_s(p, "abc"), C(4));
    pending_free(p);
}

static void test_duplicate_refused_while_pending(void **state)
{
    (void)state;
    struct pending *p = new_table(4);
    assert_int_equal(add_s(p, "req-1", C(1)), PENDING_ADDED);
    assert_int_equal(add_s(p, "req-1", C(2)), PENDING_DUPLICATE);
    assert_int_equal(add_s(p, "req-1", C(1)), PENDING_DUPLICATE);
    assert_int_equal(pending_count(p), 1);
    assert_ptr_equal(find_s(p, "req-1"), C(1)); /* the first one keeps it */
    /* After its reply the id may be used again, by another request. */
    assert_ptr_equal(remove_s(p, "req-1"), C(1));
    assert_int_equal(add_s(p, "req-1", C(2)), PENDING_ADDED);
    assert_ptr_equal(find_s(p, "req-1"), C(2));
    assert_int_equal(add_s(p, "req-1", C(3)), PENDING_DUPLICATE);
    assert_ptr_equal(remove_s(p, "req-1"), C(2));
    assert_null(remove_s(p, "req-1"));
    assert_int_equal(pending_count(p), 0);
    pending_free(p);
}

static void test_full_at_cap(void **state)
{
    (void)state;
    struct pending *p = new_table(3);
    assert_int_equal(add_s(p, "a", C(1)), PENDING_ADDED);
    assert_int_equal(add_s(p, "b", C(2)), PENDING_ADDED);
    assert_int_equal(add_s(p, "c", C(3)), PENDING_ADDED);
    assert_int_equal(add_s(p, "d", C(4)), PENDING_FULL);
    assert_int_equal(add_s(p, "b", C(5)), PENDING_DUPLICATE);        /* checked before full */
    assert_int_equal(pending_add(p, "", 0, C(6), 0), PENDING_BADID); /* checked first */
    assert_int_equal(pending_count(p), 3);
    assert_null(find_s(p, "d"));
    assert_ptr_equal(remove_s(p, "b"), C(2));
    assert_int_equal(add_s(p, "d", C(4)), PENDING_ADDED);
    assert_int_equal(add_s(p, "e", C(7)), PENDING_FULL);
    assert_ptr_equal(find_s(p, "a"), C(1));
    assert_ptr_equal(find_s(p, "c"), C(3));
    assert_ptr_equal(find_s(p, "d"), C(4));
    assert_int_equal(pending_count(p), 3);
    pending_free(p);

    /* Cap 1: one at a time, over and over. */
    p = new_table(1);
    for (uintptr_t i = 1; i <= 100; i++) {
        char id[16];
        snprintf(id, sizeof id, "r%u", (unsigned)i);
        assert_int_equal(add_s(p, id, C(i)), PENDING_ADDED);
        assert_int_equal(add_s(p, "other", C(i + 1000)), PENDING_FULL);
        assert_ptr_equal(remove_s(p, id), C(i));
    }
    assert_int_equal(pending_count(p), 0);
    pending_free(p);
}

static void test_bad_lengths(void **state)
{
    (void)state;
    struct pending *p = new_table(4);
    char id[PENDING_ID_MAX + 2];
    memset(id, 'k', sizeof id);
    assert_int_equal(pending_add(p, id, 0, C(1), 0), PENDING_BADID);
    assert_int_equal(pending_add(p, id, PENDING_ID_MAX + 1, C(1), 0), PENDING_BADID);
    assert_int_equal(pending_add(p, id, SIZE_MAX, C(1), 0), PENDING_BADID);
    assert_int_equal(pending_add(p, NULL, 5, C(1), 0), PENDING_BADID);
    assert_int_equal(pending_add(p, id, 5, NULL, 0), PENDING_BADID); /* NULL would mean absent */
    assert_int_equal(pending_count(p), 0);
    assert_null(pending_find(p, id, 5));
    /* The longest and shortest accepted. */
    assert_int_equal(pending_add(p, id, PENDING_ID_MAX, C(2), 0), PENDING_ADDED);
    assert_int_equal(pending_add(p, id, 1, C(3), 0), PENDING_ADDED);
    assert_int_equal(pending_count(p), 2);
    /* Lookups with a bad length find nothing and change nothing. */
    assert_null(pending_find(p, id, 0));
    assert_null(pending_find(p, id, PENDING_ID_MAX + 1));
    assert_null(pending_find(p, NULL, 1));
    assert_null(pending_remove(p, id, 0, NULL));
    assert_null(pending_remove(p, id, PENDING_ID_MAX + 1, NULL));
    assert_null(pending_remove(p, NULL, 1, NULL));
    assert_int_equal(pending_count(p), 2);
    assert_ptr_equal(pending_find(p, id, PENDING_ID_MAX), C(2));
    assert_ptr_equal(pending_find(p, id, 1), C(3));
    assert_ptr_equal(pending_remove(p, id, PENDING_ID_MAX, NULL), C(2));
    assert_ptr_equal(pending_remove(p, id, 1, NULL), C(3));
    pending_free(p);
}

/* Each entry hands back its own tag on removal, also after the slots moved
 * (backward-shift deletion); a removal that finds nothing gives 0. */
static void test_tag_kept_per_entry(void **state)
{
    (void)state;
    struct pending *p = new_table(64);
    char id[16];
    for (int i = 0; i < 64; i++) {
        snprintf(id, sizeof id, "t%d", i);
        assert_int_equal(pending_add(p, id, strlen(id), C(i + 1), 1000 + (uint64_t)i),
                         PENDING_ADDED);
    }
    uint64_t tag = 7;
    for (int i = 0; i < 64; i += 2) {
        snprintf(id, sizeof id, "t%d", i);
        assert_ptr_equal(pending_remove(p, id, strlen(id), &tag), C(i + 1));
        assert_int_equal(tag, 1000 + (uint64_t)i);
    }
    for (int i = 1; i < 64; i += 2) {
        snprintf(id, sizeof id, "t%d", i);
        assert_ptr_equal(pending_remove(p, id, strlen(id), &tag), C(i + 1));
        assert_int_equal(tag, 1000 + (uint64_t)i);
    }
    tag = 7;
    assert_null(pending_remove(p, "t1", 2, &tag));
    assert_int_equal(tag, 0);
    tag = 7;
    assert_null(pending_remove(p, "", 0, &tag)); /* a bad length too */
    assert_int_equal(tag, 0);
    pending_free(p);
}

static void test_ids_differing_in_length_or_last_byte(void **state)
{
    (void)state;
    struct pending *p = new_table(16);
    assert_int_equal(add_s(p, "abc", C(1)), PENDING_ADDED);
    assert_int_equal(add_s(p, "abcd", C(2)), PENDING_ADDED);
    assert_int_equal(add_s(p, "abce", C(3)), PENDING_ADDED);
    assert_int_equal(add_s(p, "ab", C(4)), PENDING_ADDED);
    assert_int_equal(add_s(p, "abb", C(5)), PENDING_ADDED);
    assert_ptr_equal(find_s(p, "abc"), C(1));
    assert_ptr_equal(find_s(p, "abcd"), C(2));
    assert_ptr_equal(find_s(p, "abce"), C(3));
    assert_ptr_equal(find_s(p, "ab"), C(4));
    assert_ptr_equal(find_s(p, "abb"), C(5));
    assert_null(find_s(p, "a"));
    assert_null(find_s(p, "abcf"));
    assert_null(find_s(p, "abcde"));
    /* Only LEN bytes count: what follows in the caller's buffer does not. */
    assert_ptr_equal(pending_find(p, "abcz", 3), C(1));
    assert_ptr_equal(pending_find(p, "abcd!", 4), C(2));
    /* Any bytes, a NUL included (the table does not care; reqid.h does). */
    assert_int_equal(pending_add(p, "ab\0", 3, C(6), 0), PENDING_ADDED);
    assert_ptr_equal(pending_find(p, "ab\0", 3), C(6));
    assert_ptr_equal(find_s(p, "ab"), C(4));
    /* Longest ids, the same but for the last byte, or one byte shorter. */
    char x[PENDING_ID_MAX], y[PENDING_ID_MAX];
    memset(x, 'Q', sizeof x);
    memcpy(y, x, sizeof y);
    y[PENDING_ID_MAX - 1] = 'R';
    assert_int_equal(pending_add(p, x, sizeof x, C(7), 0), PENDING_ADDED);
    assert_int_equal(pending_add(p, y, sizeof y, C(8), 0), PENDING_ADDED);
    assert_int_equal(pending_add(p, x, sizeof x - 1, C(9), 0), PENDING_ADDED);
    assert_ptr_equal(pending_find(p, x, sizeof x), C(7));
    assert_ptr_equal(pending_find(p, y, sizeof y), C(8));
    assert_ptr_equal(pending_find(p, x, sizeof x - 1), C(9));
    assert_ptr_equal(pending_find(p, y, sizeof y - 1), C(9)); /* same 127 bytes */
    assert_int_equal(pending_count(p), 9);
    /* Removing one leaves its neighbours. */
    assert_ptr_equal(remove_s(p, "abc"), C(1));
    assert_ptr_equal(pending_remove(p, x, sizeof x, NULL), C(7));
    assert_null(find_s(p, "abc"));
    assert_null(pending_find(p, x, sizeof x));
    assert_ptr_equal(find_s(p, "abcd"), C(2));
    assert_ptr_equal(find_s(p, "abce"), C(3));
    assert_ptr_equal(find_s(p, "ab"), C(4));
    assert_ptr_equal(find_s(p, "abb"), C(5));
    assert_ptr_equal(pending_find(p, y, sizeof y), C(8));
    assert_ptr_equal(pending_find(p, x, sizeof x - 1), C(9));
    assert_int_equal(pending_count(p), 7);
    pending_free(p);
}

static void test_late_and_second_reply(void **state)
{
    (void)state;
    struct pending *p = new_table(4);
    assert_int_equal(add_s(p, "waits", C(1)), PENDING_ADDED);
    assert_int_equal(add_s(p, "timed-out", C(2)), PENDING_ADDED);
    /* The request timed out (or its client left): the bridge forgets it. */
    assert_ptr_equal(remove_s(p, "timed-out"), C(2));
    /* Its reply arrives late: nobody waits for it. */
    assert_null(find_s(p, "timed-out"));
    assert_null(remove_s(p, "timed-out"));
    /* A reply that is answered, then arrives a second time. */
    assert_ptr_equal(find_s(p, "waits"), C(1));
    assert_ptr_equal(remove_s(p, "waits"), C(1));
    assert_null(find_s(p, "waits"));
    assert_null(remove_s(p, "waits"));
    /* A reply for an id never sent. */
    assert_null(find_s(p, "never-sent"));
    assert_null(remove_s(p, "never-sent"));
    assert_int_equal(pending_count(p), 0);
    pending_free(p);
}

static void test_drain(void **state)
{
    (void)state;
    struct pending *p = new_table(8);
    struct recorder r = {.p = p};
    assert_int_equal(pending_drain(p, on_drain, &r), 0); /* empty */
    assert_int_equal(r.n, 0);
    const char *ids[] = {"one", "two", "three", "four", "five", "six", "seven", "eight"};
    for (uintptr_t i = 1; i <= 8; i++)
        assert_int_equal(add_s(p, ids[i - 1], C(i)), PENDING_ADDED);
    assert_ptr_equal(remove_s(p, "three"), C(3)); /* answered before: not drained */
    assert_int_equal(pending_drain(p, on_drain, &r), 7);
    assert_int_equal(r.n, 7);
    for (uintptr_t i = 1; i <= 8; i++) {
        size_t seen = 0;
        for (size_t k = 0; k < r.n; k++)
            seen += r.ctx[k] == C(i);
        assert_int_equal(seen, i == 3 ? 0 : 1);
        assert_null(find_s(p, ids[i - 1]));
    }
    assert_int_equal(r.count_seen[0], 0); /* empty before the first call */
    assert_int_equal(pending_count(p), 0);
    assert_int_equal(pending_drain(p, on_drain, &r), 0); /* nothing twice */
    assert_int_equal(r.n, 7);
    /* The whole capacity is free again, and the old ids usable. */
    for (uintptr_t i = 1; i <= 8; i++)
        assert_int_equal(add_s(p, ids[i - 1], C(i + 10)), PENDING_ADDED);
    assert_int_equal(add_s(p, "nine", C(19)), PENDING_FULL);
    for (uintptr_t i = 1; i <= 8; i++)
        assert_ptr_equal(find_s(p, ids[i - 1]), C(i + 10));
    /* No callback: just forgets. */
    assert_int_equal(pending_drain(p, NULL, NULL), 8);
    assert_int_equal(pending_count(p), 0);
    assert_null(find_s(p, "one"));
    pending_free(p);
}

/* First call: add a new id and one of the drained ids (gone already), and
 * find both. */
static void hook_add(struct recorder *r, void *ctx)
{
    (void)ctx;
    if (r->hook_calls++ != 0)
        return;
    r->added[0] = add_s(r->p, "new", C(100));
    r->added[1] = add_s(r->p, "d2", C(101));
    r->added[2] = add_s(r->p, "new", C(102));
    r->got[0] = find_s(r->p, "new");
    r->got[1] = find_s(r->p, "d2");
}

static void test_drain_reentrant_add(void **state)
{
    (void)state;
    struct pending *p = new_table(4);
    struct recorder r = {.p = p, .hook = hook_add};
    for (uintptr_t i = 1; i <= 4; i++) {
        char id[8];
        snprintf(id, sizeof id, "d%u", (unsigned)i);
        assert_int_equal(add_s(p, id, C(i)), PENDING_ADDED);
    }
    assert_int_equal(add_s(p, "new", C(100)), PENDING_FULL);
    assert_int_equal(pending_drain(p, on_drain, &r), 4);
    expect_each_once(&r, 4); /* the added entries are not drained */
    assert_int_equal(r.added[0], PENDING_ADDED);
    assert_int_equal(r.added[1], PENDING_ADDED);
    assert_int_equal(r.added[2], PENDING_DUPLICATE);
    assert_ptr_equal(r.got[0], C(100));
    assert_ptr_equal(r.got[1], C(101));
    assert_int_equal(r.count_seen[1], 2); /* second call sees the two adds */
    /* What the callback added stays pending. */
    assert_int_equal(pending_count(p), 2);
    assert_ptr_equal(find_s(p, "new"), C(100));
    assert_ptr_equal(find_s(p, "d2"), C(101));
    assert_null(find_s(p, "d1"));
    assert_ptr_equal(remove_s(p, "new"), C(100));
    assert_ptr_equal(remove_s(p, "d2"), C(101));
    pending_free(p);
}

/* First call adds "extra"; second call removes it and tries to remove a
 * drained entry; every call tries a nested drain. */
static void hook_remove(struct recorder *r, void *ctx)
{
    (void)ctx;
    r->nested += pending_drain(r->p, on_drain, r);
    switch (r->hook_calls++) {
    case 0:
        r->added[0] = add_s(r->p, "extra", C(200));
        break;
    case 1:
        r->got[0] = remove_s(r->p, "extra");
        r->got[1] = remove_s(r->p, "e1"); /* drained: already gone */
        r->got[2] = remove_s(r->p, "e3");
        break;
    default:
        break;
    }
}

static void test_drain_reentrant_remove(void **state)
{
    (void)state;
    struct pending *p = new_table(8);
    struct recorder r = {.p = p, .hook = hook_remove};
    r.got[1] = r.got[2] = C(999); /* must be overwritten with NULL */
    for (uintptr_t i = 1; i <= 3; i++) {
        char id[8];
        snprintf(id, sizeof id, "e%u", (unsigned)i);
        assert_int_equal(add_s(p, id, C(i)), PENDING_ADDED);
    }
    assert_int_equal(pending_drain(p, on_drain, &r), 3);
    /* Each drained ctx once, even the ones "removed" from a callback; no
     * nested drain ran (it would have called back C(200)). */
    expect_each_once(&r, 3);
    assert_int_equal(r.nested, 0);
    assert_int_equal(r.added[0], PENDING_ADDED);
    assert_ptr_equal(r.got[0], C(200));
    assert_null(r.got[1]);
    assert_null(r.got[2]);
    assert_int_equal(pending_count(p), 0);
    assert_null(find_s(p, "extra"));
    /* Outside a callback, drain works again. */
    assert_int_equal(add_s(p, "f", C(300)), PENDING_ADDED);
    r.hook = NULL;
    r.n = 0;
    assert_int_equal(pending_drain(p, on_drain, &r), 1);
    assert_ptr_equal(r.ctx[0], C(300));
    pending_free(p);
}

/* Drain order follows the slots, so it depends on the table's hash key: two
 * tables given the same ids in the same order drain them in different orders
 * unless their keys are equal (chance of a coincidence with 64 ids: about
 * 1/64!). Checks through behaviour alone that each table has its own key. */
static void test_each_table_own_key(void **state)
{
    (void)state;
    enum { N = 64 };
    struct recorder *r[2];
    struct pending *p[2];
    for (int t = 0; t < 2; t++) {
        p[t] = new_table(N);
        r[t] = calloc(1, sizeof *r[t]);
        assert_non_null(r[t]);
        r[t]->p = p[t];
        for (uintptr_t i = 1; i <= N; i++) {
            char id[16];
            snprintf(id, sizeof id, "same-%u", (unsigned)i);
            assert_int_equal(add_s(p[t], id, C(i)), PENDING_ADDED);
        }
    }
    for (int t = 0; t < 2; t++) {
        assert_int_equal(pending_drain(p[t], on_drain, r[t]), N);
        expect_each_once(r[t], N);
    }
    assert_memory_not_equal(r[0]->ctx, r[1]->ctx, N * sizeof(void *));
    for (int t = 0; t < 2; t++) {
        pending_free(p[t]);
        free(r[t]);
    }
}

/* Drain order follows the slots. If the hash ignored a byte (or the length),
 * ids differing only there would share a home slot and fill one cluster in
 * insertion order, and drain would mostly return each one right after the
 * one added before it. A real hash scatters them: of 63 such successions, a
 * random order has about 1 (Poisson), and 16 or more with a chance below
 * 1e-13. Ids are FILL bytes with a leading 'x'; byte VARY takes 64 values,
 * or with VARY SIZE_MAX the length does (LEN, LEN + 1...). */
static void expect_scattered(size_t len, size_t vary, char fill)
{
    struct pending *p = new_table(SCATTER_N);
    struct recorder *r = calloc(1, sizeof *r);
    assert_non_null(r);
    r->p = p;
    char id[PENDING_ID_MAX + SCATTER_N];
    memset(id, fill, sizeof id);
    id[0] = 'x';
    for (uintptr_t i = 0; i < SCATTER_N; i++) {
        size_t n = len;
        if (vary == SIZE_MAX)
            n = len + i;
        else
            id[vary] = (char)('!' + i);
        assert_int_equal(pending_add(p, id, n, C(i), 0), PENDING_ADDED);
    }
    assert_int_equal(pending_drain(p, on_drain, r), SCATTER_N);
    size_t successions = 0;
    for (size_t k = 0; k < SCATTER_N; k++) {
        void *next = r->ctx[(k + 1) % SCATTER_N];
        for (uintptr_t i = 0; i + 1 < SCATTER_N; i++)
            successions += r->ctx[k] == C(i) && next == C(i + 1);
    }
    assert_in_range(successions, 0, 15);
    free(r);
    pending_free(p);
}

static void test_hash_covers_every_byte(void **state)
{
    (void)state;
    expect_scattered(1, 0, 'w');                                   /* one-byte ids */
    expect_scattered(8, 7, 'w');                                   /* end of a full block */
    expect_scattered(13, 12, 'w');                                 /* last byte of the tail */
    expect_scattered(13, 0, 'w');                                  /* first byte */
    expect_scattered(PENDING_ID_MAX, PENDING_ID_MAX - 1, 'w');     /* last of the longest */
    expect_scattered(PENDING_ID_MAX, PENDING_ID_MAX / 2 + 3, 'w'); /* a middle byte */
    /* "x", "x\0", "x\0\0"...: only the length tells them apart. */
    expect_scattered(1, SIZE_MAX, '\0');
    expect_scattered(PENDING_ID_MAX - SCATTER_N + 1, SIZE_MAX, '\0');
}

/* ---- Random churn against a shadow model: an array of the ctx pending
 * under each id of a fixed pool (NULL: not pending), and the list of pending
 * pool indices to pick existing ids from. */

#define POOL_MAX 4096 /* ids in the largest pool */

struct model {
    size_t pool;                /* ids in use */
    char (*id)[PENDING_ID_MAX]; /* the pool's ids */
    size_t *len;                /* their lengths */
    void **ctx;                 /* ctx pending under each id, or NULL */
    size_t *live;               /* pool indices pending, in any order */
    size_t *live_pos;           /* index of each pool id in live */
    size_t n;                   /* pending */
};

/* Ids of random lengths 1..128, half of them made from an earlier one by
 * changing its last byte, adding a byte or dropping one: many pairs differ
 * only in length or last byte. All distinct. */
static void model_init(struct model *m, size_t pool, uint64_t *seed)
{
    assert_true(pool <= POOL_MAX);
    m->pool = pool;
    m->n = 0;
    m->id = calloc(pool, sizeof *m->id);
    m->len = calloc(pool, sizeof *m->len);
    m->ctx = calloc(pool, sizeof *m->ctx);
    m->live = calloc(pool, sizeof *m->live);
    m->live_pos = calloc(pool, sizeof *m->live_pos);
    assert_true(m->id && m->len && m->ctx && m->live && m->live_pos);
    for (size_t i = 0; i < pool; i++) {
        for (;;) {
            char *s = m->id[i];
            size_t len;
            if (i > 0 && rnd(seed) % 2 == 0) {
                size_t j = (size_t)(rnd(seed) % i);
                len = m->len[j];
                memcpy(s, m->id[j], len);
                switch (rnd(seed) % 3) {
                case 0:
                    s[len - 1] = (char)(0x21 + rnd(seed) % 94);
                    break;
                case 1:
                    if (len < PENDING_ID_MAX)
                        s[len++] = (char)(0x21 + rnd(seed) % 94);
                    break;
                default:
                    if (len > 1)
                        len--;
                    break;
                }
            } else {
                len = 1 + (size_t)(rnd(seed) % PENDING_ID_MAX);
                for (size_t k = 0; k < len; k++)
                    s[k] = (char)(0x21 + rnd(seed) % 94);
            }
            bool dup = false;
            for (size_t j = 0; j < i && !dup; j++)
                dup = m->len[j] == len && memcmp(m->id[j], s, len) == 0;
            if (!dup) {
                m->len[i] = len;
                break;
            }
        }
    }
}

static void model_free(struct model *m)
{
    free(m->id);
    free(m->len);
    free(m->ctx);
    free(m->live);
    free(m->live_pos);
}

static void model_set(struct model *m, size_t i, void *ctx)
{
    if (ctx != NULL) {
        m->live_pos[i] = m->n;
        m->live[m->n++] = i;
    } else {
        size_t last = m->live[--m->n];
        m->live[m->live_pos[i]] = last;
        m->live_pos[last] = m->live_pos[i];
    }
    m->ctx[i] = ctx;
}

/* Every id of the pool, pending or not, gives what the model says. */
static void model_check_all(const struct model *m, const struct pending *p)
{
    assert_int_equal(pending_count(p), m->n);
    for (size_t i = 0; i < m->pool; i++)
        assert_ptr_equal(pending_find(p, m->id[i], m->len[i]), m->ctx[i]);
}

/* Drain callback of the churn: collects ctx pointers (at most CAP). */
struct collect {
    void **ctx; /* room for the table's cap */
    size_t n;   /* collected */
};

static void on_collect(void *arg, void *ctx)
{
    struct collect *c = arg;
    c->ctx[c->n++] = ctx;
}

static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (void *const *)a, y = (uintptr_t) * (void *const *)b;
    return x < y ? -1 : x > y;
}

/* What the churn went through, to check it exercised what it claims. */
struct churn_stats {
    size_t added, duplicate, full, removed, remove_miss, found, find_miss, drains, peak;
};

static void churn(size_t cap, size_t pool, size_t ops, uint64_t seed, struct churn_stats *st)
{
    struct model m;
    model_init(&m, pool, &seed);
    struct pending *p = new_table(cap);
    struct collect col = {calloc(cap, sizeof(void *)), 0};
    void **want = calloc(cap, sizeof(void *));
    assert_true(col.ctx != NULL && want != NULL);
    memset(st, 0, sizeof *st);
    uintptr_t serial = 0;
    bool growing = true;
    for (size_t op = 0; op < ops; op++) {
        /* Fill to the cap (and stay there a while: adds refused), empty to
         * a few, fill again: clusters form, wrap around the table's end and
         * are torn down by deletions. */
        if (m.n >= cap && rnd(&seed) % 256 == 0)
            growing = false;
        else if (m.n <= cap / 8)
            growing = true;
        unsigned dice = (unsigned)(rnd(&seed) % 100);
        bool add = dice < (growing ? 60u : 30u);
        /* An id pending now (adds: 1 in 8, a duplicate; else 1 in 2), or
         * any id of the pool. */
        size_t i = m.n > 0 && rnd(&seed) % (add ? 8 : 2) == 0 ? m.live[rnd(&seed) % m.n]
                                                              : (size_t)(rnd(&seed) % pool);
        if (add) {
            void *ctx = C(++serial);
            enum pending_add want_r = m.ctx[i] != NULL ? PENDING_DUPLICATE
                                      : m.n == cap     ? PENDING_FULL
                                                       : PENDING_ADDED;
            assert_int_equal(pending_add(p, m.id[i], m.len[i], ctx, 0), want_r);
            if (want_r == PENDING_ADDED) {
                model_set(&m, i, ctx);
                st->added++;
            }
            st->duplicate += want_r == PENDING_DUPLICATE;
            st->full += want_r == PENDING_FULL;
        } else if (dice < 85) {
            void *got = pending_remove(p, m.id[i], m.len[i], NULL);
            assert_ptr_equal(got, m.ctx[i]);
            if (m.ctx[i] != NULL) {
                model_set(&m, i, NULL);
                st->removed++;
            } else {
                st->remove_miss++;
            }
        } else if (dice < 99 || rnd(&seed) % 500 != 0) {
            assert_ptr_equal(pending_find(p, m.id[i], m.len[i]), m.ctx[i]);
            st->found += m.ctx[i] != NULL;
            st->find_miss += m.ctx[i] == NULL;
        } else {
            /* Rarely, the channel goes: every pending ctx exactly once. */
            col.n = 0;
            size_t n = m.n;
            for (size_t k = 0; k < n; k++)
                want[k] = m.ctx[m.live[k]];
            assert_int_equal(pending_drain(p, on_collect, &col), n);
            assert_int_equal(col.n, n);
            qsort(want, n, sizeof *want, cmp_ptr);
            qsort(col.ctx, n, sizeof *col.ctx, cmp_ptr);
            if (n > 0)
                assert_memory_equal(want, col.ctx, n * sizeof *want);
            while (m.n > 0)
                model_set(&m, m.live[0], NULL);
            st->drains++;
        }
        assert_int_equal(pending_count(p), m.n);
        if (m.n > st->peak)
            st->peak = m.n;
        if (op % 65536 == 0)
            model_check_all(&m, p);
    }
    model_check_all(&m, p);
    free(col.ctx);
    free(want);
    pending_free(p);
    model_free(&m);
}

static void test_churn_against_model(void **state)
{
    (void)state;
    struct churn_stats st;
    churn(1024, POOL_MAX, 1000000, UINT64_C(0x2545f4914f6cdd1d), &st);
    /* The run exercised what it claims to. */
    assert_int_equal(st.peak, 1024);
    assert_true(st.added > 100000);
    assert_true(st.removed > 100000);
    assert_true(st.duplicate > 1000);
    assert_true(st.full > 1000);
    assert_true(st.remove_miss > 1000);
    assert_true(st.found > 1000 && st.find_miss > 1000);
    assert_true(st.drains > 0);
}

/* Tiny tables (8 and 16 slots): every cluster wraps around the end, and a
 * deletion shifts entries across it. */
static void test_churn_small_tables(void **state)
{
    (void)state;
    struct churn_stats st;
    for (size_t cap = 1; cap <= 8; cap++) {
        churn(cap, 3 * cap + 2, 100000, UINT64_C(0x9e3779b97f4a7c15) + cap, &st);
        assert_int_equal(st.peak, cap);
        assert_true(st.full > 100);
        assert_true(st.removed > 1000);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_free_names),
        cmocka_unit_test(test_add_find_remove),
        cmocka_unit_test(test_duplicate_refused_while_pending),
        cmocka_unit_test(test_full_at_cap),
        cmocka_unit_test(test_bad_lengths),
        cmocka_unit_test(test_tag_kept_per_entry),
        cmocka_unit_test(test_ids_differing_in_length_or_last_byte),
        cmocka_unit_test(test_late_and_second_reply),
        cmocka_unit_test(test_drain),
        cmocka_unit_test(test_drain_reentrant_add),
        cmocka_unit_test(test_drain_reentrant_remove),
        cmocka_unit_test(test_each_table_own_key),
        cmocka_unit_test(test_hash_covers_every_byte),
        cmocka_unit_test(test_churn_against_model),
        cmocka_unit_test(test_churn_small_tables),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
