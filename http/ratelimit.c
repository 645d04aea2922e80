/* ratelimit.c - token buckets under one lock per route (ratelimit.h). The
 * lock is held for one lookup and a few arithmetic operations: at the
 * bridge's rates (tens of thousands a second over two workers) it is not
 * contended enough to matter, and a lock-free table would buy nothing.
 *
 * Keys are stored as two SipHash-1-3 digests of their bytes under a random
 * key, so a client cannot aim many keys at one chain, and the table keeps no
 * token or address in the clear. */
#include "http/ratelimit.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/base/seed.h"
#include "bridge/base/siphash.h"

#define NONE UINT32_MAX

struct entry {
    uint64_t h0, h1;     /* the key's digests; both 0: the route's one bucket */
    double tokens;       /* tokens at AT */
    uint64_t at_us;      /* when TOKENS was computed */
    uint32_t chain;      /* next entry of the same hash slot */
    uint32_t prev, next; /* use order: most recent at head */
};

struct ratelimit {
    pthread_mutex_t lock;
    double rate, burst;
    uint64_t k[4]; /* SipHash keys of the two digests */
    struct entry *e;
    uint32_t *slot; /* n_slots heads of chains, NONE for empty */
    size_t n_slots, cap, used;
    uint32_t head, tail; /* use order */
};

struct ratelimit *ratelimit_new(double rate, double burst, size_t max_keys)
{
    struct ratelimit *rl = calloc(1, sizeof *rl);
    if (rl == NULL)
        return NULL;
    rl->rate = rate;
    rl->burst = burst;
    rl->cap = max_keys > 0 && max_keys < NONE ? max_keys : 1;
    rl->n_slots = 1;
    while (rl->n_slots < 2 * rl->cap)
        rl->n_slots <<= 1;
    rl->e = calloc(rl->cap, sizeof *rl->e);
    rl->slot = malloc(rl->n_slots * sizeof *rl->slot);
    if (rl->e == NULL || rl->slot == NULL || pthread_mutex_init(&rl->lock, NULL) != 0) {
        free(rl->e);
        free(rl->slot);
        free(rl);
        return NULL;
    }
    memset(rl->slot, 0xff, rl->n_slots * sizeof *rl->slot);
    rl->head = rl->tail = NONE;
    seed_fill(rl->k, sizeof rl->k, rl);
    return rl;
}

void ratelimit_free(struct ratelimit *rl)
{
    if (rl == NULL)
        return;
    pthread_mutex_destroy(&rl->lock);
    free(rl->e);
    free(rl->slot);
    free(rl);
}

static void unlink_use(struct ratelimit *rl, uint32_t i)
{
    struct entry *e = &rl->e[i];
    if (e->prev != NONE)
        rl->e[e->prev].next = e->next;
    else
        rl->head = e->next;
    if (e->next != NONE)
        rl->e[e->next].prev = e->prev;
    else
        rl->tail = e->prev;
}

static void push_use(struct ratelimit *rl, uint32_t i)
{
    struct entry *e = &rl->e[i];
    e->prev = NONE;
    e->next = rl->head;
    if (rl->head != NONE)
        rl->e[rl->head].prev = i;
    rl->head = i;
    if (rl->tail == NONE)
        rl->tail = i;
}

/* Take entry I off its hash chain. */
static void unchain(struct ratelimit *rl, uint32_t i)
{
    uint32_t *p = &rl->slot[rl->e[i].h0 & (rl->n_slots - 1)];
    while (*p != i)
        p = &rl->e[*p].chain;
    *p = rl->e[i].chain;
}

/* The entry of (H0, H1), made (with a full bucket) when there is none: the
 * least recently used one is reused when the table is full. */
static struct entry *lookup(struct ratelimit *rl, uint64_t h0, uint64_t h1, uint64_t now_us)
{
    uint32_t *head = &rl->slot[h0 & (rl->n_slots - 1)];
    for (uint32_t i = *head; i != NONE; i = rl->e[i].chain) {
        if (rl->e[i].h0 == h0 && rl->e[i].h1 == h1) {
            unlink_use(rl, i);
            push_use(rl, i);
            return &rl->e[i];
        }
    }
    uint32_t i;
    if (rl->used < rl->cap) {
        i = (uint32_t)rl->used++;
    } else {
        i = rl->tail;
        unlink_use(rl, i);
        unchain(rl, i);
    }
    struct entry *e = &rl->e[i];
    *e = (struct entry){h0, h1, rl->burst, now_us, *head, NONE, NONE};
    *head = i;
    push_use(rl, i);
    return e;
}

unsigned ratelimit_take(struct ratelimit *rl, const void *key, size_t len, uint64_t now_us)
{
    uint64_t h0 = 0, h1 = 0;
    if (len > 0) {
        h0 = siphash13(rl->k[0], rl->k[1], key, len);
        h1 = siphash13(rl->k[2], rl->k[3], key, len);
    }
    pthread_mutex_lock(&rl->lock);
    struct entry *e = lookup(rl, h0, h1, now_us);
    if (now_us > e->at_us) {
        e->tokens += (double)(now_us - e->at_us) * rl->rate / 1e6;
        if (e->tokens > rl->burst)
            e->tokens = rl->burst;
        e->at_us = now_us;
    }
    unsigned wait = 0;
    if (e->tokens >= 1.0) {
        e->tokens -= 1.0;
    } else {
        /* Whole seconds, rounded up (rate >= 1 an hour: at most 3600). */
        double w = (1.0 - e->tokens) / rl->rate;
        wait = (unsigned)w;
        if ((double)wait < w || wait == 0)
            wait++;
    }
    pthread_mutex_unlock(&rl->lock);
    return wait;
}

void ratelimit_refund(struct ratelimit *rl, const void *key, size_t len)
{
    uint64_t h0 = 0, h1 = 0;
    if (len > 0) {
        h0 = siphash13(rl->k[0], rl->k[1], key, len);
        h1 = siphash13(rl->k[2], rl->k[3], key, len);
    }
    pthread_mutex_lock(&rl->lock);
    uint32_t i = rl->slot[h0 & (rl->n_slots - 1)];
    while (i != NONE && (rl->e[i].h0 != h0 || rl->e[i].h1 != h1))
        i = rl->e[i].chain;
    /* Gone already (evicted): it comes back full anyway. */
    if (i != NONE && (rl->e[i].tokens += 1.0) > rl->burst)
        rl->e[i].tokens = rl->burst;
    pthread_mutex_unlock(&rl->lock);
}

size_t ratelimit_keys(struct ratelimit *rl)
{
    pthread_mutex_lock(&rl->lock);
    size_t n = rl->used;
    pthread_mutex_unlock(&rl->lock);
    return n;
}
