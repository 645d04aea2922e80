/* test_backlog.c - unit tests of bridge/backlog.c, the requests waiting for
 * room toward the broker: every way out (published in order as room comes
 * back; leaving from the front, the middle or the back when the client goes
 * or the timer runs out; the connection lost or blocked, before or during a
 * publish; a shutdown while some wait), the capacity (a request that leaves
 * frees its place at once, even behind a stuck front), callbacks that call
 * back in, and long random churn against a shadow model. Every request is
 * counted each time it is answered: each must be answered exactly once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bridge/backlog.h"

#define NREQ 512 /* requests one test may use */

/* A request as the worker would hold it. */
struct req {
    int id;          /* index in the world */
    uint64_t ticket; /* from backlog_add, while waiting */
    bool waiting;    /* added and not left yet */
    int published;   /* times the try callback published it (202 later) */
    int answered;    /* times it was answered 503 without being published */
    int cancelled;   /* times it left by backlog_cancel (client gone, timer) */
};

struct world;
typedef void hook_fn(struct world *w, struct req *r);

/* The worker side: the broker's room, what was published, in which order. */
struct world {
    struct backlog *b;    /* under test */
    struct req r[NREQ];   /* the requests */
    size_t room;          /* publishes the socket takes before it is full */
    int order[NREQ * 4];  /* ids in the order they were published */
    size_t n_order;       /* entries in order */
    size_t tries;         /* try callbacks, published or not */
    hook_fn *on_try;      /* run inside the try callback, before it decides */
    int hook_at;          /* the id whose try runs the hook; -1: every one */
    size_t nested_flush;  /* what a backlog_flush from inside a callback gave */
    const char *last_why; /* the fail callback's reason */
};

static bool try_cb(void *arg, void *item, uint64_t ticket)
{
    struct world *w = arg;
    struct req *r = item;
    assert_true(r->waiting);
    assert_int_equal(ticket, r->ticket);
    w->tries++;
    /* It is the callback's alone now: cancelling it finds nothing. */
    assert_false(backlog_cancel(w->b, ticket, r));
    if (w->on_try != NULL && (w->hook_at < 0 || w->hook_at == r->id))
        w->on_try(w, r);
    if (w->room == 0)
        return false; /* nothing happened: back to the front */
    w->room--;
    r->waiting = false;
    r->published++;
    w->order[w->n_order++] = r->id;
    return true;
}

static void fail_cb(void *arg, void *item, const char *why)
{
    struct world *w = arg;
    struct req *r = item;
    assert_true(r->waiting);
    r->waiting = false;
    r->answered++;
    w->last_why = why;
}

static void world_init(struct world *w, size_t cap)
{
    memset(w, 0, sizeof *w);
    w->hook_at = -1;
    for (int i = 0; i < NREQ; i++)
        w->r[i].id = i;
    w->b = backlog_new(cap, try_cb, fail_cb, w);
    assert_non_null(w->b);
    assert_int_equal(backlog_live(w->b), 0);
    assert_null(backlog_front(w->b));
}

static void add(struct world *w, int id)
{
    struct req *r = &w->r[id];
    assert_false(r->waiting);
    assert_int_equal(backlog_add(w->b, r, &r->ticket), 0);
    r->waiting = true;
}

/* The client left or the timer ran out: the worker cancels, then answers. */
static bool cancel(struct world *w, int id)
{
    struct req *r = &w->r[id];
    if (!backlog_cancel(w->b, r->ticket, r))
        return false;
    assert_true(r->waiting);
    r->waiting = false;
    r->cancelled++;
    return true;
}

static size_t flush(struct world *w, size_t room)
{
    w->room = room;
    return backlog_flush(w->b);
}

/* Requests 0..n-1 each left exactly once, and none waits any more. */
static void expect_each_once(const struct world *w, int n)
{
    for (int i = 0; i < n; i++) {
        const struct req *r = &w->r[i];
        if (r->published + r->answered + r->cancelled != 1)
            fail_msg("request %d: published %d, answered %d, cancelled %d times", i, r->published,
                     r->answered, r->cancelled);
        assert_false(r->waiting);
    }
    for (int i = n; i < NREQ; i++)
        assert_int_equal(w->r[i].published + w->r[i].answered + w->r[i].cancelled, 0);
}

static void expect_order(const struct world *w, const int *ids, size_t n)
{
    assert_int_equal(w->n_order, n);
    for (size_t i = 0; i < n; i++)
        if (w->order[i] != ids[i])
            fail_msg("publish %zu was request %d, expected %d", i, w->order[i], ids[i]);
}

static void test_new_free(void **state)
{
    (void)state;
    struct world w;
    assert_null(backlog_new(0, try_cb, fail_cb, &w));
    assert_null(backlog_new(((size_t)1 << 30) + 1, try_cb, fail_cb, &w));
    assert_null(backlog_new(SIZE_MAX, try_cb, fail_cb, &w));
    assert_null(backlog_new(4, NULL, fail_cb, &w));
    assert_null(backlog_new(4, try_cb, NULL, &w));
    world_init(&w, 4);
    uint64_t t;
    assert_int_equal(backlog_add(w.b, NULL, &t), -1);
    add(&w, 0);
    backlog_free(w.b); /* with one waiting: forgotten, not answered */
    assert_int_equal(w.r[0].answered + w.r[0].published, 0);
    backlog_free(NULL);
}

/* Room for everything: published oldest first, each once. */
static void test_flush_in_order(void **state)
{
    (void)state;
    struct world w;
    world_init(&w, 8);
    for (int i = 0; i < 5; i++)
        add(&w, i);
    assert_int_equal(backlog_live(w.b), 5);
    assert_ptr_equal(backlog_front(w.b), &w.r[0]);
    assert_int_equal(flush(&w, 100), 5);
    static const int want[] = {0, 1, 2, 3, 4};
    expect_order(&w, want, 5);
    assert_int_equal(backlog_live(w.b), 0);
    assert_null(backlog_front(w.b));
    assert_int_equal(flush(&w, 100), 0);
    expect_each_once(&w, 5);
    backlog_free(w.b);
}

/* No room: the front is tried and stays the front, under its own ticket;
 * as room comes back one at a time, they go out one at a time, in order. */
static void test_no_room_keeps_front(void **state)
{
    (void)state;
    struct world w;
    world_init(&w, 8);
    for (int i = 0; i < 3; i++)
        add(&w, i);
    for (int k = 0; k < 3; k++) {
        assert_int_equal(flush(&w, 0), 0);
        assert_int_equal(backlog_live(w.b), 3);
        assert_ptr_equal(backlog_front(w.b), &w.r[0]);
    }
    assert_int_equal(w.tries, 3); /* only the front was tried */
    add(&w, 3);                   /* behind them, never before */
    assert_int_equal(flush(&w, 1), 1);
    assert_ptr_equal(backlog_front(w.b), &w.r[1]);
    assert_int_equal(flush(&w, 2), 2);
    assert_ptr_equal(backlog_front(w.b), &w.r[3]);
    assert_int_equal(flush(&w, 1), 1);
    static const int want[] = {0, 1, 2, 3};
    expect_order(&w, want, 4);
    expect_each_once(&w, 4);
    backlog_free(w.b);
}

/* The front that found no room is still cancellable by its first ticket. */
static void test_front_put_back_keeps_ticket(void **state)
{
    (void)state;
    struct world w;
    world_init(&w, 4);
    add(&w, 0);
    add(&w, 1);
    assert_int_equal(flush(&w, 0), 0);
    assert_true(cancel(&w, 0));
    assert_ptr_equal(backlog_front(w.b), &w.r[1]);
    assert_int_equal(flush(&w, 5), 1);
    static const int want[] = {1};
    expect_order(&w, want, 1);
    expect_each_once(&w, 2);
    backlog_free(w.b);
}

/* Leaving from the front, the middle and the back (client gone, timer): the
 * others keep their order; a second cancel, a stale or foreign ticket, a
 * wrong item change nothing. */
static void test_cancel_front_middle_back(void **state)
{
    (void)state;
    struct world w;
    world_init(&w, 8);
    for (int i = 0; i < 7; i++)
        add(&w, i);
    assert_true(cancel(&w, 0)); /* front */
    assert_ptr_equal(backlog_front(w.b), &w.r[1]);
    assert_true(cancel(&w, 3)); /* middle */
    assert_true(cancel(&w, 6)); /* back */
    assert_true(cancel(&w, 4)); /* middle again, next to a hole */
    assert_int_equal(backlog_live(w.b), 3);
    assert_false(cancel(&w, 3));                               /* already left */
    assert_false(backlog_cancel(w.b, w.r[1].ticket, &w.r[2])); /* not its ticket */
    assert_false(backlog_cancel(w.b, 8, &w.r[1]));             /* beyond capacity */
    assert_false(backlog_cancel(w.b, UINT64_MAX, &w.r[1]));
    assert_int_equal(backlog_live(w.b), 3);
    add(&w, 7); /* may take a freed place: still behind the others */
    assert_int_equal(flush(&w, 100), 4);
    static const int want[] = {1, 2, 5, 7};
    expect_order(&w, want, 4);
    for (int i = 0; i < 8; i++)
        assert_false(cancel(&w, i)); /* all left: every ticket is stale */
    expect_each_once(&w, 8);
    backlog_free(w.b);
}

/* The timer of a stuck front runs out (the broker read nothing in [http]
 * timeout): it leaves, the next one becomes the front and goes first. */
static void test_timer_of_stuck_front(void **state)
{
    (void)state;
    struct world w;
    world_init(&w, 4);
    for (int i = 0; i < 3; i++)
        add(&w, i);
    assert_int_equal(flush(&w, 0), 0);
    assert_true(cancel(&w, 0)); /* on_expired: leaves, then 503 */
    assert_int_equal(flush(&w, 0), 0);
    assert_ptr_equal(backlog_front(w.b), &w.r[1]);
    assert_true(cancel(&w, 2)); /* its timer too, from behind */
    assert_int_equal(flush(&w, 9), 1);
    static const int want[] = {1};
    expect_order(&w, want, 1);
    expect_each_once(&w, 3);
    backlog_free(w.b);
}

/* The connection is lost or blocked: every waiting request answered once,
 * oldest first, with the reason; then nothing is left to answer. */
static void test_fail_all(void **state)
{
    (void)state;
    struct world w;
    world_init(&w, 8);
    for (int i = 0; i < 5; i++)
        add(&w, i);
    assert_true(cancel(&w, 2));
    assert_int_equal(flush(&w, 1), 1); /* 0 went out before the loss */
    assert_int_equal(backlog_fail_all(w.b, "connection lost"), 3);
    assert_string_equal(w.last_why, "connection lost");
    assert_int_equal(backlog_live(w.b), 0);
    assert_null(backlog_front(w.b));
    assert_int_equal(backlog_fail_all(w.b, "blocked"), 0);
    assert_int_equal(flush(&w, 10), 0);
    for (int i = 0; i < 5; i++)
        assert_false(cancel(&w, i)); /* a late timer or hang-up finds nothing */
    expect_each_once(&w, 5);
    /* The places are free again: a whole backlog fits after a loss. */
    for (int i = 5; i < 13; i++)
        add(&w, i);
    assert_int_equal(backlog_fail_all(w.b, "blocked"), 8);
    expect_each_once(&w, 13);
    backlog_free(w.b);
}

static void hook_lose_connection(struct world *w, struct req *r)
{
    /* broker_publish lost the connection: the state callback empties the
     * backlog, and publish answers R itself (503), which counts as its one
     * answer here through published. */
    (void)r;
    assert_int_equal(backlog_fail_all(w->b, "lost under a publish"), 3);
}

/* The connection is lost under a publish from the backlog: the request being
 * published is answered by the publish, the others by the loss, none twice. */
static void test_lost_during_publish(void **state)
{
    (void)state;
    struct world w;
    world_init(&w, 8);
    for (int i = 0; i < 5; i++)
        add(&w, i);
    w.on_try = hook_lose_connection;
    w.hook_at = 1;
    assert_int_equal(flush(&w, 100), 2); /* 0, then 1 under which it was lost */
    static const int want[] = {0, 1};
    expect_order(&w, want, 2);
    for (int i = 2; i < 5; i++)
        assert_int_equal(w.r[i].answered, 1);
    assert_int_equal(backlog_live(w.b), 0);
    expect_each_once(&w, 5);
    backlog_free(w.b);
}

static void hook_cancel_next_and_add(struct world *w, struct req *r)
{
    (void)r;
    assert_true(cancel(w, 2)); /* its client left meanwhile */
    add(w, 5);                 /* a new request arrives behind */
    w->nested_flush = backlog_flush(w->b);
}

/* Inside a try: another request leaves, a new one arrives, a nested flush
 * does nothing; the flush goes on with the rest, in order. */
static void test_reentrant_try(void **state)
{
    (void)state;
    struct world w;
    world_init(&w, 8);
    for (int i = 0; i < 5; i++)
        add(&w, i);
    w.on_try = hook_cancel_next_and_add;
    w.hook_at = 1;
    w.nested_flush = 99;
    assert_int_equal(flush(&w, 100), 5);
    assert_int_equal(w.nested_flush, 0);
    static const int want[] = {0, 1, 3, 4, 5};
    expect_order(&w, want, 5);
    expect_each_once(&w, 6);
    backlog_free(w.b);
}

static struct world *g_fail_world; /* for fail_add_cb */

static void fail_add_cb(void *arg, void *item, const char *why)
{
    fail_cb(arg, item, why);
    struct req *r = item;
    /* A request answered 503 whose answer makes another arrive (another
     * connection's callback): it waits on, it is not failed in this pass;
     * and one of this pass that the answer cancels is not cancellable. */
    if (r->id == 0) {
        add(g_fail_world, 10);
        assert_false(cancel(g_fail_world, 1));
    }
}

static void test_fail_all_reentrant(void **state)
{
    (void)state;
    struct world w;
    memset(&w, 0, sizeof w);
    w.hook_at = -1;
    for (int i = 0; i < NREQ; i++)
        w.r[i].id = i;
    g_fail_world = &w;
    w.b = backlog_new(4, try_cb, fail_add_cb, &w);
    assert_non_null(w.b);
    for (int i = 0; i < 4; i++)
        add(&w, i); /* full */
    assert_int_equal(backlog_fail_all(w.b, "blocked"), 4);
    assert_int_equal(backlog_live(w.b), 1);
    assert_ptr_equal(backlog_front(w.b), &w.r[10]);
    assert_int_equal(flush(&w, 1), 1);
    for (int i = 0; i < 4; i++)
        assert_int_equal(w.r[i].answered, 1);
    assert_int_equal(w.r[10].published, 1);
    backlog_free(w.b);
}

/* Capacity counts what waits, not what has left: behind a front stuck for
 * a long stall, clients keep leaving and others keep arriving, and none is
 * refused while fewer than CAP wait. Exactly CAP wait: the next is refused,
 * nothing changed. */
static void test_capacity_counts_only_waiting(void **state)
{
    (void)state;
    enum { CAP = 4 };
    struct world w;
    world_init(&w, CAP);
    add(&w, 0); /* the stuck front */
    assert_int_equal(flush(&w, 0), 0);
    int next = 1;
    for (int round = 0; round < 12; round++) {
        add(&w, next);
        assert_int_equal(flush(&w, 0), 0);
        assert_true(cancel(&w, next)); /* its client gave up */
        next++;
    }
    assert_int_equal(backlog_live(w.b), 1);
    for (int i = 0; i < CAP - 1; i++)
        add(&w, next + i);
    assert_int_equal(backlog_live(w.b), CAP);
    uint64_t t = 77;
    assert_int_equal(backlog_add(w.b, &w.r[next + CAP - 1], &t), -1);
    assert_int_equal(t, 77);
    assert_int_equal(backlog_live(w.b), CAP);
    /* A stuck front being tried still holds its place. */
    assert_int_equal(flush(&w, 0), 0);
    assert_int_equal(backlog_add(w.b, &w.r[next + CAP - 1], &t), -1);
    assert_int_equal(flush(&w, 100), CAP);
    const int want[] = {0, next, next + 1, next + 2};
    expect_order(&w, want, CAP);
    expect_each_once(&w, next + CAP - 1);
    backlog_free(w.b);
}

/* SIGTERM while requests wait for room, as the worker lives it: it stops
 * taking new ones and waits up to the drain bound. The broker reads a little
 * (those go out), a timer runs out (503), a client leaves, and at the
 * deadline broker_close turns the connection CLOSED: what is left is
 * answered 503 by the state callback. After that nothing answers again. */
static void test_shutdown_while_waiting(void **state)
{
    (void)state;
    struct world w;
    world_init(&w, 16);
    for (int i = 0; i < 10; i++)
        add(&w, i);
    assert_int_equal(flush(&w, 0), 0); /* SIGTERM: nothing fits */
    assert_int_equal(flush(&w, 3), 3); /* the broker reads a little */
    assert_true(cancel(&w, 3));        /* its timer, now the front */
    assert_true(cancel(&w, 7));        /* a client that left */
    assert_int_equal(flush(&w, 1), 1); /* 4 */
    assert_int_equal(flush(&w, 0), 0);
    /* The drain deadline: broker_close. */
    assert_int_equal(backlog_fail_all(w.b, "shutting down"), 4);
    assert_string_equal(w.last_why, "shutting down");
    assert_int_equal(backlog_live(w.b), 0);
    /* Late timers and hang-ups of the answered ones find nothing. */
    for (int i = 0; i < 10; i++)
        assert_false(cancel(&w, i));
    assert_int_equal(flush(&w, 100), 0);
    static const int want[] = {0, 1, 2, 4};
    expect_order(&w, want, 4);
    for (int i = 5; i < 10; i++)
        if (i != 7)
            assert_int_equal(w.r[i].answered, 1);
    expect_each_once(&w, 10);

    /* The other way out of a shutdown: the broker reads again in time and
     * the backlog empties before the deadline, every one published. */
    struct world v;
    world_init(&v, 16);
    for (int i = 0; i < 10; i++)
        add(&v, i);
    assert_int_equal(flush(&v, 0), 0);
    while (backlog_live(v.b) > 0)
        (void)flush(&v, 2);
    assert_int_equal(backlog_fail_all(v.b, "shutting down"), 0);
    assert_int_equal(v.n_order, 10);
    for (int i = 0; i < 10; i++)
        assert_int_equal(v.order[i], i);
    expect_each_once(&v, 10);
    backlog_free(v.b);
    backlog_free(w.b);
}

static uint64_t rnd(uint64_t *s)
{
    /* xorshift64: deterministic, good enough to pick operations. */
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Random adds, cancels, flushes with random room and losses, against a
 * shadow queue: the order of what goes out, the live count, the front,
 * refusals exactly when CAP wait, and each request out exactly once. */
static void churn(size_t cap, uint64_t seed, int steps)
{
    struct world w;
    world_init(&w, cap);
    int shadow[NREQ]; /* waiting ids, oldest first */
    size_t n_shadow = 0;
    int next = 0;
    uint64_t s = seed;
    for (int step = 0; step < steps; step++) {
        uint64_t op = rnd(&s) % 16;
        if (op < 6) { /* arrive */
            if (next >= NREQ)
                break;
            struct req *r = &w.r[next];
            uint64_t t = 0;
            int rc = backlog_add(w.b, r, &t);
            if (n_shadow == cap) {
                assert_int_equal(rc, -1);
                r->answered++; /* the worker answers 503 at once */
            } else {
                assert_int_equal(rc, 0);
                r->ticket = t;
                r->waiting = true;
                shadow[n_shadow++] = next;
            }
            next++;
        } else if (op < 10) { /* a waiting one leaves */
            if (n_shadow == 0)
                continue;
            size_t k = (size_t)(rnd(&s) % n_shadow);
            assert_true(cancel(&w, shadow[k]));
            memmove(&shadow[k], &shadow[k + 1], (n_shadow - k - 1) * sizeof *shadow);
            n_shadow--;
        } else if (op < 15) { /* the poll: some room */
            size_t room = (size_t)(rnd(&s) % 4);
            size_t before = w.n_order;
            size_t gone = flush(&w, room);
            size_t want = room < n_shadow ? room : n_shadow;
            assert_int_equal(gone, want);
            for (size_t k = 0; k < want; k++)
                assert_int_equal(w.order[before + k], shadow[k]);
            memmove(&shadow[0], &shadow[want], (n_shadow - want) * sizeof *shadow);
            n_shadow -= want;
        } else { /* lost or blocked */
            assert_int_equal(backlog_fail_all(w.b, "lost"), n_shadow);
            n_shadow = 0;
        }
        assert_int_equal(backlog_live(w.b), n_shadow);
        if (n_shadow > 0)
            assert_ptr_equal(backlog_front(w.b), &w.r[shadow[0]]);
        else
            assert_null(backlog_front(w.b));
    }
    assert_int_equal(backlog_fail_all(w.b, "end"), n_shadow);
    expect_each_once(&w, next);
    backlog_free(w.b);
}

static void test_churn_against_model(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 400; seed++)
        churn(1 + (size_t)(seed % 9), seed * UINT64_C(0x9e3779b97f4a7c15), 400);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_free),
        cmocka_unit_test(test_flush_in_order),
        cmocka_unit_test(test_no_room_keeps_front),
        cmocka_unit_test(test_front_put_back_keeps_ticket),
        cmocka_unit_test(test_cancel_front_middle_back),
        cmocka_unit_test(test_timer_of_stuck_front),
        cmocka_unit_test(test_fail_all),
        cmocka_unit_test(test_lost_during_publish),
        cmocka_unit_test(test_reentrant_try),
        cmocka_unit_test(test_fail_all_reentrant),
        cmocka_unit_test(test_capacity_counts_only_waiting),
        cmocka_unit_test(test_shutdown_while_waiting),
        cmocka_unit_test(test_churn_against_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
