/* dedupe.c - the idempotency window (dedupe.h). Ids are kept as two keyed
 * SipHash-1-3 digests (a client cannot aim ids at one chain; the table
 * keeps no id in the clear). Entries live in a ring in the order they came:
 * a new id takes the next place, dropping whatever held it, so the oldest
 * goes first and the memory is fixed at start. */
#include "bridge/base/dedupe.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/base/seed.h"
#include "bridge/base/siphash.h"

#define NONE UINT32_MAX

enum state { FREE, PENDING, DONE, FAILED };

struct entry {
    uint64_t h0, h1;     /* the id's digests */
    uint64_t handle;     /* the owner's, new for every owner */
    uint64_t expires_ms; /* DONE: forgotten then */
    uint32_t chain;      /* next entry of the same hash slot */
    int status;          /* DONE, FAILED: the answer */
    enum state state;
};

struct dedupe {
    atomic_uint refs; /* dedupe_new's and dedupe_hold's, less dedupe_free's */
    pthread_mutex_t lock;
    uint64_t window_ms;
    uint64_t k[4];
    uint64_t next_handle;
    struct entry *e; /* cap, a ring */
    uint32_t *slot;  /* n_slots chain heads */
    size_t n_slots, cap, next, used;
};

struct dedupe *dedupe_new(uint64_t window_ms, size_t max_ids)
{
    struct dedupe *d = calloc(1, sizeof *d);
    if (d == NULL)
        return NULL;
    atomic_init(&d->refs, 1);
    d->window_ms = window_ms;
    d->cap = max_ids > 0 && max_ids < NONE ? max_ids : 1;
    d->n_slots = 1;
    while (d->n_slots < 2 * d->cap)
        d->n_slots <<= 1;
    d->e = calloc(d->cap, sizeof *d->e);
    d->slot = malloc(d->n_slots * sizeof *d->slot);
    if (d->e == NULL || d->slot == NULL || pthread_mutex_init(&d->lock, NULL) != 0) {
        free(d->e);
        free(d->slot);
        free(d);
        return NULL;
    }
    memset(d->slot, 0xff, d->n_slots * sizeof *d->slot);
    seed_fill(d->k, sizeof d->k, d);
    return d;
}

struct dedupe *dedupe_hold(struct dedupe *d)
{
    atomic_fetch_add(&d->refs, 1);
    return d;
}

void dedupe_free(struct dedupe *d)
{
    if (d == NULL || atomic_fetch_sub(&d->refs, 1) > 1)
        return;
    pthread_mutex_destroy(&d->lock);
    free(d->e);
    free(d->slot);
    free(d);
}

static void digest(const struct dedupe *d, const char *id, size_t len, uint64_t *h0, uint64_t *h1)
{
    *h0 = siphash13(d->k[0], d->k[1], id, len);
    *h1 = siphash13(d->k[2], d->k[3], id, len);
}

static uint32_t *head_of(struct dedupe *d, uint64_t h0)
{
    return &d->slot[h0 & (d->n_slots - 1)];
}

static struct entry *find(struct dedupe *d, uint64_t h0, uint64_t h1)
{
    for (uint32_t i = *head_of(d, h0); i != NONE; i = d->e[i].chain)
        if (d->e[i].h0 == h0 && d->e[i].h1 == h1)
            return &d->e[i];
    return NULL;
}

/* A new entry for (H0, H1): the ring's next place, whatever held it dropped. */
static struct entry *take_place(struct dedupe *d, uint64_t h0, uint64_t h1)
{
    uint32_t i = (uint32_t)d->next;
    d->next = (d->next + 1) % d->cap;
    struct entry *e = &d->e[i];
    if (e->state != FREE) {
        uint32_t *p = head_of(d, e->h0);
        while (*p != i)
            p = &d->e[*p].chain;
        *p = e->chain;
    } else {
        d->used++;
    }
    uint32_t *head = head_of(d, h0);
    *e = (struct entry){.h0 = h0, .h1 = h1, .chain = *head, .state = FREE};
    *head = i;
    return e;
}

enum dedupe_seen dedupe_begin(struct dedupe *d, const char *id, size_t len, uint64_t now_ms,
                              uint64_t *handle, int *status, size_t *held)
{
    uint64_t h0, h1;
    digest(d, id, len, &h0, &h1);
    pthread_mutex_lock(&d->lock);
    struct entry *e = find(d, h0, h1);
    enum dedupe_seen seen = DEDUPE_NEW;
    if (e != NULL && e->state == DONE && now_ms < e->expires_ms) {
        *status = e->status;
        seen = DEDUPE_DONE;
    } else if (e != NULL && e->state == PENDING) {
        *handle = e->handle;
        seen = DEDUPE_PENDING;
    } else {
        /* Unknown, expired or failed: this request owns the id now, and
         * as the newest it takes the ring's next place (left where it
         * was, it would be the first to go). */
        if (e != NULL) {
            uint32_t i = (uint32_t)(e - d->e);
            uint32_t *p = head_of(d, e->h0);
            while (*p != i)
                p = &d->e[*p].chain;
            *p = e->chain;
            e->state = FREE;
            d->used--;
        }
        e = take_place(d, h0, h1);
        e->state = PENDING;
        e->handle = ++d->next_handle;
        *handle = e->handle;
    }
    *held = d->used;
    pthread_mutex_unlock(&d->lock);
    return seen;
}

void dedupe_end(struct dedupe *d, uint64_t handle, const char *id, size_t len, int status,
                uint64_t now_ms)
{
    uint64_t h0, h1;
    digest(d, id, len, &h0, &h1);
    pthread_mutex_lock(&d->lock);
    struct entry *e = find(d, h0, h1);
    if (e != NULL && e->handle == handle && e->state == PENDING) {
        e->status = status;
        e->state = status >= 200 && status < 300 ? DONE : FAILED;
        e->expires_ms = now_ms + d->window_ms;
    }
    pthread_mutex_unlock(&d->lock);
}

enum dedupe_seen dedupe_poll(struct dedupe *d, uint64_t handle, const char *id, size_t len,
                             int *status)
{
    uint64_t h0, h1;
    digest(d, id, len, &h0, &h1);
    pthread_mutex_lock(&d->lock);
    struct entry *e = find(d, h0, h1);
    enum dedupe_seen seen = DEDUPE_NEW;
    if (e != NULL && e->handle == handle) {
        if (e->state == PENDING) {
            seen = DEDUPE_PENDING;
        } else {
            *status = e->status;
            seen = DEDUPE_DONE;
        }
    }
    pthread_mutex_unlock(&d->lock);
    return seen;
}

size_t dedupe_size(struct dedupe *d)
{
    pthread_mutex_lock(&d->lock);
    size_t n = d->used;
    pthread_mutex_unlock(&d->lock);
    return n;
}
