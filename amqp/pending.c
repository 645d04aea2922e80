/* pending.c - rpc requests waiting for their reply, keyed by correlation id:
 * an open-addressing hash table, so that add, find and remove cost O(1)
 * expected and nothing is allocated after pending_new.
 *
 * Hostile keys. The ids added are the bridge's own, but the ids looked up
 * come from replies, which any worker on the broker may send. With a fixed
 * hash function a sender could pick ids that all land in one cluster and make
 * every lookup of the worker walk it (the table itself does not know who
 * made its keys, and must not rely on it).
 * So ids are hashed with SipHash-1-3 under a 128-bit key drawn from
 * getrandom() for each table: without the key, colliding ids cannot be
 * computed offline. If getrandom fails (no entropy yet, a seccomp filter), the
 * key comes from the clock, the pid and the table's address: not secret, but
 * still different per table and per run.
 *
 * Layout. Three arrays, all sized at pending_new:
 *   - SLOTS, a power of two >= 2 * CAP: per slot 32 bits of the id's hash and
 *     the index + 1 of its entry (0: empty). The load factor stays <= 1/2, so
 *     probe sequences are short and a lookup always ends on an empty slot.
 *     Probing reads only these 8-byte slots, and compares an id only when
 *     its 32 hash bits match.
 *   - ENTRIES, CAP of them: ctx, id length, and a free-list link. The id bytes
 *     are in IDS, a parallel array of CAP rows of PENDING_ID_MAX bytes. An
 *     entry never moves while pending: deleting shifts 8-byte slots only, not
 *     128-byte ids, and id storage is CAP rows, not one per slot (up to 4 *
 *     CAP after rounding to a power of two).
 *   - DRAIN_BUF, CAP ctx pointers, filled by pending_drain before it calls
 *     back (see there).
 *
 * Probing is linear from the home slot (hash & mask). Removal uses
 * backward-shift deletion instead of tombstones: after the slot is emptied,
 * each following entry of the cluster moves back into the hole unless its
 * home lies cyclically in (hole, its slot], in which case moving it would put
 * it before its home and lose it. So the invariant of linear probing (no
 * empty slot between an entry's home and its slot) holds with no tombstones:
 * long-running churn leaves no debris and never degrades lookups.
 *
 * The home slot comes from the stored 32 bits, which bounds the table at 2^32
 * slots (CAP <= 2^30 here, far above any max_inflight). */
#include "amqp/pending.h"

#include "bridge/base/seed.h"
#include "bridge/base/siphash.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PENDING_CAP_MAX ((size_t)1 << 30) /* 2 * CAP rounded up fits 32 bits */
#define NO_ENTRY UINT32_MAX               /* end of the free list */

_Static_assert(PENDING_ID_MAX <= UINT32_MAX, "id length fits an entry");

struct slot {
    uint32_t hash;  /* low 32 bits of the id's SipHash; home = hash & mask */
    uint32_t entry; /* index + 1 in entries/ids; 0: empty slot */
};

struct entry {
    void *ctx;          /* caller's request; NULL while the entry is free */
    uint64_t tag;       /* caller's number, handed back by pending_remove */
    uint32_t len;       /* id length, 1..PENDING_ID_MAX */
    uint32_t next_free; /* free list link while free, else unused */
};

struct pending {
    struct slot *slots;          /* mask + 1 slots, load <= 1/2 */
    struct entry *entries;       /* CAP entries */
    char (*ids)[PENDING_ID_MAX]; /* CAP ids, parallel to entries */
    void **drain_buf;            /* CAP ctx pointers for pending_drain */
    size_t cap;                  /* most entries at once */
    size_t count;                /* entries pending */
    uint32_t mask;               /* slots - 1 (slots is a power of two) */
    uint32_t free_head;          /* first free entry, NO_ENTRY if none */
    uint64_t k0, k1;             /* SipHash key, random per table */
    bool draining;               /* inside pending_drain's callbacks */
};

const char *pending_add_name(enum pending_add r)
{
    switch (r) {
    case PENDING_ADDED:
        return "added";
    case PENDING_DUPLICATE:
        return "duplicate";
    case PENDING_FULL:
        return "full";
    case PENDING_BADID:
        return "bad id";
    }
    return "unknown";
}

/* ---- The per-table key. */

/* The per-table key: from getrandom(), else guessable but distinct per
 * table alive at once (its address) and per run (time, pid). */
static void seed(struct pending *p)
{
    uint64_t k[2];
    seed_fill(k, sizeof k, p);
    p->k0 = k[0];
    p->k1 = k[1];
}

/* ---- The table. */

struct pending *pending_new(size_t cap)
{
    if (cap == 0 || cap > PENDING_CAP_MAX)
        return NULL;
    size_t nslots = 2;
    while (nslots < 2 * cap)
        nslots *= 2;
    struct pending *p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    /* calloc: every slot empty. It also checks the products for overflow. */
    p->slots = calloc(nslots, sizeof *p->slots);
    p->entries = calloc(cap, sizeof *p->entries);
    p->ids = calloc(cap, sizeof *p->ids);
    p->drain_buf = calloc(cap, sizeof *p->drain_buf);
    if (p->slots == NULL || p->entries == NULL || p->ids == NULL || p->drain_buf == NULL) {
        pending_free(p);
        return NULL;
    }
    p->cap = cap;
    p->mask = (uint32_t)(nslots - 1);
    for (size_t i = 0; i < cap; i++)
        p->entries[i].next_free = i + 1 < cap ? (uint32_t)(i + 1) : NO_ENTRY;
    p->free_head = 0;
    seed(p);
    return p;
}

void pending_free(struct pending *p)
{
    if (p == NULL)
        return;
    free(p->slots);
    free(p->entries);
    free(p->ids);
    free(p->drain_buf);
    free(p);
}

static bool id_ok(const char *id, size_t len)
{
    return id != NULL && len >= 1 && len <= PENDING_ID_MAX;
}

static uint32_t hash_id(const struct pending *p, const char *id, size_t len)
{
    return (uint32_t)siphash13(p->k0, p->k1, id, len);
}

/* Walk ID's probe sequence (H: its hash). Returns the slot holding ID with
 * *FOUND true, or else the empty slot that ends the sequence, where ID would
 * go. The load is <= 1/2, so every sequence meets an empty slot. */
static uint32_t probe(const struct pending *p, const char *id, size_t len, uint32_t h, bool *found)
{
    for (uint32_t i = h & p->mask;; i = (i + 1) & p->mask) {
        const struct slot *s = &p->slots[i];
        *found = s->entry != 0;
        if (!*found)
            return i;
        if (s->hash != h)
            continue; /* most mismatches stop here, without touching the id */
        uint32_t e = s->entry - 1;
        if (p->entries[e].len == len && memcmp(p->ids[e], id, len) == 0)
            return i;
    }
}

enum pending_add pending_add(struct pending *p, const char *id, size_t len, void *ctx, uint64_t tag)
{
    if (!id_ok(id, len) || ctx == NULL)
        return PENDING_BADID;
    uint32_t h = hash_id(p, id, len);
    bool found;
    uint32_t i = probe(p, id, len, h, &found);
    if (found)
        return PENDING_DUPLICATE;
    if (p->count == p->cap)
        return PENDING_FULL;
    uint32_t e = p->free_head;
    struct entry *en = &p->entries[e];
    p->free_head = en->next_free;
    en->ctx = ctx;
    en->tag = tag;
    en->len = (uint32_t)len;
    memcpy(p->ids[e], id, len);
    p->slots[i] = (struct slot){.hash = h, .entry = e + 1};
    p->count++;
    return PENDING_ADDED;
}

void *pending_find(const struct pending *p, const char *id, size_t len)
{
    if (!id_ok(id, len))
        return NULL;
    bool found;
    uint32_t i = probe(p, id, len, hash_id(p, id, len), &found);
    return found ? p->entries[p->slots[i].entry - 1].ctx : NULL;
}

/* Empty slot HOLE, then close the gap: walk the rest of its cluster and move
 * back every entry whose home is not cyclically in (hole, its slot]. */
static void delete_slot(struct pending *p, uint32_t hole)
{
    uint32_t j = hole;
    for (;;) {
        j = (j + 1) & p->mask;
        const struct slot *s = &p->slots[j];
        if (s->entry == 0)
            break;
        uint32_t home = s->hash & p->mask;
        /* Distances walking forward (wrapping): from its home to J, and from
         * the hole to J. The entry may move to the hole iff the hole is not
         * before its home, i.e. its home is at least as far back as the hole. */
        if (((j - home) & p->mask) >= ((j - hole) & p->mask)) {
            p->slots[hole] = *s;
            hole = j;
        }
    }
    p->slots[hole] = (struct slot){0, 0};
}

static void free_entry(struct pending *p, uint32_t e)
{
    p->entries[e].ctx = NULL;
    p->entries[e].next_free = p->free_head;
    p->free_head = e;
}

void *pending_remove(struct pending *p, const char *id, size_t len, uint64_t *tag)
{
    if (tag != NULL)
        *tag = 0;
    if (!id_ok(id, len))
        return NULL;
    bool found;
    uint32_t i = probe(p, id, len, hash_id(p, id, len), &found);
    if (!found)
        return NULL;
    uint32_t e = p->slots[i].entry - 1;
    void *ctx = p->entries[e].ctx;
    if (tag != NULL)
        *tag = p->entries[e].tag;
    delete_slot(p, i);
    free_entry(p, e);
    p->count--;
    return ctx;
}

size_t pending_count(const struct pending *p)
{
    return p->count;
}

/* Drain happens when the channel or connection is lost: rare, so a walk over
 * the slots (stopping once all entries are found) is fine. The ctx pointers go
 * to DRAIN_BUF, allocated once at pending_new with room for CAP, and the table
 * is empty before the first callback: a callback that adds finds the room
 * free, and one that removes an entry of this drain gets NULL. */
size_t pending_drain(struct pending *p, pending_drain_fn *fn, void *arg)
{
    if (p->draining)
        return 0; /* DRAIN_BUF is in use by the outer call */
    size_t n = 0;
    for (uint32_t i = 0; n < p->count; i++) {
        struct slot *s = &p->slots[i];
        if (s->entry == 0)
            continue;
        uint32_t e = s->entry - 1;
        p->drain_buf[n++] = p->entries[e].ctx;
        free_entry(p, e);
        *s = (struct slot){0, 0};
    }
    p->count = 0;
    p->draining = true;
    for (size_t k = 0; k < n && fn != NULL; k++)
        fn(arg, p->drain_buf[k]);
    p->draining = false;
    return n;
}
