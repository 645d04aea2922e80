/* tracker.c - publisher-confirm bookkeeping for one channel: a ring of CAP
 * slots indexed by delivery tag, so that add, ack and detach cost O(1)
 * amortized and nothing is allocated per publish, and beside it a sorted
 * overflow of the entries that lag far behind (the laggards).
 *
 * The window. Tags are handed out consecutively from 1 after a reset. HEAD is
 * the oldest tag the ring may still hold: HEAD is either NEXT (nothing in the
 * ring) or a pending tag. The tags in [HEAD, NEXT) live in consecutive slots
 * starting at HEAD_IDX (wrapping), so a tag's slot is HEAD_IDX + (tag - HEAD)
 * with one conditional subtraction: no division. Acks may come out of order
 * (tag 7 before tag 5): a completed slot inside the window is just marked
 * free, and HEAD moves past free slots when the slot at HEAD completes. Each
 * tag is stepped over by HEAD once, so a `multiple` ack costs O(tags it
 * covers), amortized O(1) per publish.
 *
 * Laggards. The ring can span at most CAP tags. When an add would make it
 * span more, the entry at HEAD (still pending: a queue that stopped
 * confirming, a quorum queue without a majority) moves out of the ring to
 * the laggards array and HEAD moves on. So one stuck confirm no longer holds
 * the window (it used to: every route of the worker got 503 after CAP more
 * publishes). Entries leave the ring in tag order, so the laggards array is
 * sorted by tag without any sorting: a single ack finds its entry by binary
 * search, a multiple ack pops from its front, a return scans it. An entry
 * completed in the middle leaves a tombstone (state free, tag kept, so the
 * order holds); the array is compacted when its end reaches its allocation,
 * which is up to twice CAP entries, grown on demand: at most CAP of them are
 * live, so a compaction frees at least half and costs O(1) amortized per
 * entry moved in. Every laggard tag is below HEAD.
 *
 * Full. At most CAP entries are pending, ring and laggards together. When an
 * add finds CAP pending, the oldest detached entries (a request that timed
 * out or whose client left: nobody waits for their confirm) are forgotten, a
 * quarter of CAP at a time, so that a queue that never confirms cannot fill
 * the tracker with detached entries over time. A confirm for a forgotten tag
 * is then an unknown tag: dropped, and not counted as late (only the late
 * confirms of entries still held are counted). An add is refused only when
 * CAP entries are pending and every one is attached. broker.c sizes CAP at
 * twice max_inflight and attaches at most max_inflight: refusals do not
 * happen there.
 *
 * Message ids are kept as their length and a keyed 64-bit hash (SipHash with
 * a random key per tracker), in an array of their own so that acks only touch
 * the small slot array: 8 bytes a slot instead of a 128-byte copy, which at
 * twice max_inflight slots was 2.5 MB per worker. Two ids match when length
 * and hash are equal; with a secret key a client cannot make ids collide, and
 * a chance collision (2^-64) could only turn a 202 into a 502, never the
 * other way. An entry added with no id (NULL) went out with an empty
 * message_id and matches a return of "".
 * A return marks EVERY pending unreturned entry with its id, detached ones
 * and laggards included: basic.return carries no delivery tag, so with two
 * publishes of one id in flight (a client reusing X-Request-Id) we cannot
 * tell which one came back. Marking only one could give the unroutable
 * message a 202 (a false success); marking all gives the routable one a 502
 * at worst, which the client retries (at-least-once allows the duplicate).
 *
 * A ctx of NULL in tracker_add makes an entry detached from the start. A
 * tracker_reset with entries left (the caller should fail them first)
 * completes them as TRACKER_LOST rather than lose their answers.
 *
 * Re-entrancy. The done callback may call back into the tracker. Every entry
 * is taken out of its slot (slot freed, counters updated, HEAD advanced)
 * before done is called for it, and a loop over several entries re-reads the
 * window and the laggards' bounds after each callback: it never keeps an
 * index or a pointer across one (an add from the callback may move a laggard
 * in, compact the array or grow it). Allowed from inside done:
 *   - tracker_pending, tracker_attached, tracker_lagging, tracker_result_name;
 *   - tracker_detach of any tag (an entry the running loop has not reached
 *     yet is then dropped as late and not reported);
 *   - tracker_add: the new tag is above any range being completed, so the
 *     running ack/fail_attached does not complete it (an older entry it moves
 *     to the laggards or forgets is still completed at most once). Inside
 *     tracker_fail_all (connection lost) it refuses (returns 0): the channel
 *     is going away;
 *   - tracker_unadd of a tag added from the same callback;
 *   - tracker_ack / nack / return / fail_attached (the running loop skips
 *     what they completed);
 *   - tracker_fail_all and tracker_reset: the running loop stops at once
 *     (an epoch counter tells it), and never completes entries added after
 *     the reset with a confirm meant for the old channel.
 * tracker_free is never allowed from inside done. */
#include "amqp/tracker.h"

#include <stdlib.h>
#include <string.h>

#include "bridge/base/seed.h"
#include "bridge/base/siphash.h"

#define TRACKER_LAG_MIN 16 /* first allocation of the laggards array */

enum slot_state {
    SLOT_FREE,     /* completed, forgotten, or never used */
    SLOT_PENDING,  /* published, waiting for its confirm */
    SLOT_RETURNED, /* pending, and a basic.return matched it */
};

struct slot {
    void *ctx;      /* caller's request; NULL once detached */
    uint32_t idlen; /* full length of the message id (saturated) */
    uint8_t state;  /* enum slot_state */
    uint8_t quiet;  /* detached because its request was answered otherwise
                       (tracker_detach_expected): its confirm is not late */
};

/* An entry moved out of the ring, or its tombstone (state free). */
struct laggard {
    uint64_t tag;  /* its delivery tag: ascending along the array */
    uint64_t id;   /* message id hash, as in tracker.ids */
    struct slot s; /* as in the ring */
};

struct tracker {
    struct slot *slots;    /* CAP slots, tag order from head_idx */
    uint64_t *ids;         /* CAP message id hashes, parallel to slots */
    uint64_t k0, k1;       /* SipHash key of the ids, random per tracker */
    size_t cap;            /* ring size: most tags in the window; most pending */
    uint64_t head;         /* oldest tag the ring may hold */
    size_t head_idx;       /* slot of HEAD */
    uint64_t next;         /* tag the next add gets */
    size_t pending;        /* entries not free, ring and laggards */
    size_t attached;       /* pending entries with a ctx */
    struct laggard *lag;   /* laggards, sorted by tag; NULL until the first */
    size_t lag_alloc;      /* entries allocated in lag (at most 2 * CAP) */
    size_t lag_lo, lag_hi; /* [lag_lo, lag_hi) in use, tombstones included */
    size_t lag_live;       /* pending entries among them */
    uint64_t epoch;        /* bumped by fail_all/reset: stale loops stop */
    bool took_quiet;       /* the entry take() freed last was detached as expected */
    size_t forgotten;      /* detached entries (not quiet) forgotten to make room, since
                              tracker_take_forgotten */
    bool failing;          /* inside tracker_fail_all: adds refused */
    tracker_done_fn *done; /* completion callback (may be NULL) */
    void *arg;             /* for done */
};

const char *tracker_result_name(enum tracker_result r)
{
    switch (r) {
    case TRACKER_ACK:
        return "ack";
    case TRACKER_NACK:
        return "nack";
    case TRACKER_RETURNED:
        return "returned";
    case TRACKER_LOST:
        return "lost";
    }
    return "unknown";
}

struct tracker *tracker_new(size_t cap, tracker_done_fn *done, void *arg)
{
    if (cap == 0 || cap > SIZE_MAX / 2 / sizeof(struct laggard))
        return NULL;
    struct tracker *t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    t->slots = calloc(cap, sizeof *t->slots);
    t->ids = calloc(cap, sizeof *t->ids);
    if (t->slots == NULL || t->ids == NULL) {
        tracker_free(t);
        return NULL;
    }
    uint64_t k[2];
    seed_fill(k, sizeof k, t);
    t->k0 = k[0];
    t->k1 = k[1];
    t->cap = cap;
    t->head = t->next = 1;
    t->done = done;
    t->arg = arg;
    return t;
}

void tracker_free(struct tracker *t)
{
    if (t == NULL)
        return;
    free(t->slots);
    free(t->ids);
    free(t->lag);
    free(t);
}

/* Slot index of TAG, which must be in [head, next). */
static size_t slot_index(const struct tracker *t, uint64_t tag)
{
    size_t i = t->head_idx + (size_t)(tag - t->head);
    return i >= t->cap ? i - t->cap : i;
}

/* The slot of TAG if TAG is in the window (pending or completed out of
 * order), else NULL. */
static struct slot *slot_of(struct tracker *t, uint64_t tag)
{
    if (tag < t->head || tag >= t->next)
        return NULL;
    return &t->slots[slot_index(t, tag)];
}

/* HEAD moves one tag on; its slot must have been freed or be freed now. */
static void step_head(struct tracker *t)
{
    t->head++;
    if (++t->head_idx == t->cap)
        t->head_idx = 0;
}

/* Move HEAD past the slots completed out of order. */
static void advance_head(struct tracker *t)
{
    while (t->head < t->next && t->slots[t->head_idx].state == SLOT_FREE)
        step_head(t);
}

/* Free slot S and return its ctx (NULL if detached; took_quiet then says
 * whether its confirm was expected). */
static void *take(struct tracker *t, struct slot *s)
{
    void *ctx = s->ctx;
    t->took_quiet = s->quiet;
    s->ctx = NULL;
    s->quiet = 0;
    s->state = SLOT_FREE;
    t->pending--;
    if (ctx != NULL)
        t->attached--;
    return ctx;
}

/* Drop the tombstones at the laggards' front. */
static void lag_trim(struct tracker *t)
{
    while (t->lag_lo < t->lag_hi && t->lag[t->lag_lo].s.state == SLOT_FREE)
        t->lag_lo++;
    if (t->lag_lo == t->lag_hi)
        t->lag_lo = t->lag_hi = 0;
}

/* Take laggard L (pending) out; returns its ctx. */
static void *lag_take(struct tracker *t, struct laggard *l)
{
    t->lag_live--;
    void *ctx = take(t, &l->s);
    lag_trim(t);
    return ctx;
}

/* The first laggard position whose tag is >= TAG (tombstones included). */
static size_t lag_lower_bound(const struct tracker *t, uint64_t tag)
{
    size_t lo = t->lag_lo, hi = t->lag_hi;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (t->lag[mid].tag < tag)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The pending laggard with TAG, or NULL. Binary search: tombstones keep
 * their tag, so the array stays sorted. */
static struct laggard *lag_find(struct tracker *t, uint64_t tag)
{
    size_t i = lag_lower_bound(t, tag);
    if (i < t->lag_hi && t->lag[i].tag == tag && t->lag[i].s.state != SLOT_FREE)
        return &t->lag[i];
    return NULL;
}

/* Room at the laggards' end for one more: compact (tombstones out), or grow
 * up to 2 * CAP. At most CAP entries are live, so once 2 * CAP are
 * allocated a compaction always frees at least CAP of them. -1 only when
 * growing failed (out of memory). */
static int lag_room(struct tracker *t)
{
    if (t->lag_hi < t->lag_alloc)
        return 0;
    if (t->lag_live * 2 <= t->lag_alloc || t->lag_alloc >= 2 * t->cap) {
        size_t n = 0;
        for (size_t i = t->lag_lo; i < t->lag_hi; i++)
            if (t->lag[i].s.state != SLOT_FREE)
                t->lag[n++] = t->lag[i];
        t->lag_lo = 0;
        t->lag_hi = n;
        if (n < t->lag_alloc)
            return 0;
    }
    size_t want = t->lag_alloc == 0 ? TRACKER_LAG_MIN : t->lag_alloc * 2;
    if (want > 2 * t->cap)
        want = 2 * t->cap;
    if (want <= t->lag_alloc)
        return -1; /* cannot happen: live <= CAP < 2 * CAP */
    struct laggard *p = realloc(t->lag, want * sizeof *p);
    if (p == NULL)
        return -1;
    t->lag = p;
    t->lag_alloc = want;
    return 0;
}

/* The ring spans CAP tags: move the entry at HEAD (pending, by the window's
 * rule) to the laggards' end and let HEAD move on. -1 when out of memory. */
static int lag_push_head(struct tracker *t)
{
    if (lag_room(t) != 0)
        return -1;
    struct slot *s = &t->slots[t->head_idx];
    t->lag[t->lag_hi++] = (struct laggard){t->head, t->ids[t->head_idx], *s};
    t->lag_live++;
    s->ctx = NULL;
    s->state = SLOT_FREE;
    step_head(t);
    advance_head(t);
    return 0;
}

/* Forget up to WANT detached entries, oldest first (laggards, then the
 * ring): nobody waits for their confirm, which is dropped as an unknown tag
 * if it comes. Returns how many. */
static size_t forget_detached(struct tracker *t, size_t want)
{
    size_t n = 0;
    for (size_t i = t->lag_lo; i < t->lag_hi && n < want; i++) {
        struct laggard *l = &t->lag[i];
        if (l->s.state != SLOT_FREE && l->s.ctx == NULL) {
            t->forgotten += !l->s.quiet;
            l->s.state = SLOT_FREE;
            t->lag_live--;
            t->pending--;
            n++;
        }
    }
    lag_trim(t);
    size_t i = t->head_idx;
    for (uint64_t tag = t->head; tag < t->next && n < want; tag++) {
        struct slot *s = &t->slots[i];
        if (s->state != SLOT_FREE && s->ctx == NULL) {
            t->forgotten += !s->quiet;
            s->state = SLOT_FREE;
            t->pending--;
            n++;
        }
        if (++i == t->cap)
            i = 0;
    }
    advance_head(t);
    return n;
}

static void call_done(struct tracker *t, void *ctx, enum tracker_result r)
{
    if (t->done != NULL)
        t->done(t->arg, ctx, r);
}

static uint32_t saturate_len(size_t len)
{
    return len > UINT32_MAX ? UINT32_MAX : (uint32_t)len;
}

static uint64_t id_hash(const struct tracker *t, const char *msg_id, size_t len)
{
    return siphash13(t->k0, t->k1, len > 0 ? msg_id : "", len);
}

void tracker_reset(struct tracker *t)
{
    /* The contract is that the caller failed everything first; if it did
     * not, the requests still get their answer instead of hanging. */
    if (t->pending > 0)
        (void)tracker_fail_all(t);
    t->head = t->next = 1;
    t->head_idx = 0;
    t->lag_lo = t->lag_hi = t->lag_live = 0;
    t->epoch++;
}

uint64_t tracker_add(struct tracker *t, void *ctx, const char *msg_id, size_t msg_id_len)
{
    if (t->failing)
        return 0;
    if (t->pending >= t->cap &&
        (t->pending == t->attached || forget_detached(t, (t->cap + 3) / 4) == 0))
        return 0; /* CAP requests wait: the caller bounds them below that */
    if (t->next - t->head >= t->cap && lag_push_head(t) != 0)
        return 0;
    uint64_t tag = t->next;
    size_t i = slot_index(t, tag);
    struct slot *s = &t->slots[i];
    if (msg_id == NULL)
        msg_id_len = 0;
    s->ctx = ctx;
    s->state = SLOT_PENDING;
    s->quiet = 0;
    s->idlen = saturate_len(msg_id_len);
    t->ids[i] = id_hash(t, msg_id, msg_id_len);
    t->next++;
    t->pending++;
    if (ctx != NULL)
        t->attached++;
    return tag;
}

void tracker_unadd(struct tracker *t, uint64_t tag)
{
    if (tag == 0 || tag + 1 != t->next)
        return; /* only the newest entry can be taken back */
    struct slot *s = slot_of(t, tag);
    if (s == NULL || s->state == SLOT_FREE)
        return;
    (void)take(t, s);
    t->next--; /* HEAD <= TAG: the ring is empty (HEAD == NEXT) or HEAD pending */
}

static enum tracker_result result_of(uint8_t state, bool nack)
{
    if (nack)
        return TRACKER_NACK;
    return state == SLOT_RETURNED ? TRACKER_RETURNED : TRACKER_ACK;
}

/* One entry, taken out already: report it, or count it as late. */
static size_t finish(struct tracker *t, void *ctx, enum tracker_result r)
{
    if (ctx == NULL)
        return t->took_quiet ? 0 : 1;
    call_done(t, ctx, r);
    return 0;
}

/* basic.ack / basic.nack. A tag at or past NEXT (never issued, a broker bug
 * or a frame from a previous channel) is ignored whole, even with MULTIPLE.
 * A tag that is not pending (completed, or forgotten) is ignored. */
static size_t confirm(struct tracker *t, uint64_t tag, bool multiple, bool nack)
{
    if (tag == 0 || tag >= t->next)
        return 0;
    if (!multiple) {
        if (tag < t->head) {
            struct laggard *l = lag_find(t, tag);
            if (l == NULL)
                return 0;
            enum tracker_result r = result_of(l->s.state, nack);
            return finish(t, lag_take(t, l), r);
        }
        struct slot *s = &t->slots[slot_index(t, tag)];
        if (s->state == SLOT_FREE)
            return 0; /* already completed: a duplicate confirm */
        enum tracker_result r = result_of(s->state, nack);
        void *ctx = take(t, s);
        if (tag == t->head)
            advance_head(t);
        return finish(t, ctx, r);
    }
    size_t late = 0;
    uint64_t epoch = t->epoch;
    /* The laggards first (their tags are the oldest), then the ring. The
     * front and HEAD are re-read after every callback: one may have
     * completed or detached entries of this range, moved one to the
     * laggards, or added past it. */
    while (t->lag_lo < t->lag_hi && t->lag[t->lag_lo].tag <= tag) {
        struct laggard *l = &t->lag[t->lag_lo];
        enum tracker_result r = result_of(l->s.state, nack);
        late += finish(t, lag_take(t, l), r); /* the front is never a tombstone */
        if (t->epoch != epoch)
            return late; /* failed or reset under us: the rest is gone */
    }
    while (t->head <= tag && t->head < t->next) {
        struct slot *s = &t->slots[t->head_idx];
        step_head(t);
        if (s->state == SLOT_FREE)
            continue; /* completed out of order before */
        enum tracker_result r = result_of(s->state, nack);
        void *ctx = take(t, s);
        /* HEAD past what completed out of order before the callback runs:
         * an add from it must never move a free slot to the laggards. */
        advance_head(t);
        late += finish(t, ctx, r);
        if (t->epoch != epoch)
            return late;
        /* A callback's add may have moved entries <= TAG to the laggards. */
        while (t->lag_lo < t->lag_hi && t->lag[t->lag_lo].tag <= tag) {
            struct laggard *l = &t->lag[t->lag_lo];
            r = result_of(l->s.state, nack);
            late += finish(t, lag_take(t, l), r);
            if (t->epoch != epoch)
                return late;
        }
    }
    advance_head(t);
    return late;
}

size_t tracker_ack(struct tracker *t, uint64_t tag, bool multiple)
{
    return confirm(t, tag, multiple, false);
}

size_t tracker_nack(struct tracker *t, uint64_t tag, bool multiple)
{
    return confirm(t, tag, multiple, true);
}

/* Returns are rare (mandatory + unroutable), so a linear scan of the
 * laggards and the whole window is fine here and keeps the hot path free of
 * an index. It does not stop at the first match: every pending entry with
 * the id is marked (see the top of this file), so that no 202 answers a
 * message that came back. */
bool tracker_return(struct tracker *t, const char *msg_id, size_t msg_id_len)
{
    if (msg_id == NULL)
        msg_id_len = 0;
    uint32_t len = saturate_len(msg_id_len);
    uint64_t hash = id_hash(t, msg_id, msg_id_len);
    bool marked = false;
    for (size_t j = t->lag_lo; j < t->lag_hi; j++) {
        struct laggard *l = &t->lag[j];
        if (l->s.state == SLOT_PENDING && l->s.idlen == len && l->id == hash) {
            l->s.state = SLOT_RETURNED;
            marked = true;
        }
    }
    size_t i = t->head_idx;
    for (uint64_t tag = t->head; tag < t->next; tag++) {
        struct slot *s = &t->slots[i];
        if (s->state == SLOT_PENDING && s->idlen == len && t->ids[i] == hash) {
            s->state = SLOT_RETURNED;
            marked = true;
        }
        if (++i == t->cap)
            i = 0;
    }
    return marked;
}

/* The pending entry of TAG, ring or laggard, or NULL. */
static struct slot *entry_of(struct tracker *t, uint64_t tag)
{
    if (tag == 0 || tag >= t->next)
        return NULL;
    if (tag < t->head) {
        struct laggard *l = lag_find(t, tag);
        return l != NULL ? &l->s : NULL;
    }
    struct slot *s = &t->slots[slot_index(t, tag)];
    return s->state != SLOT_FREE ? s : NULL;
}

size_t tracker_take_forgotten(struct tracker *t)
{
    size_t n = t->forgotten;
    t->forgotten = 0;
    return n;
}

bool tracker_detach_expected(struct tracker *t, uint64_t tag)
{
    struct slot *s = entry_of(t, tag);
    if (s == NULL || s->ctx == NULL)
        return false;
    s->ctx = NULL;
    s->quiet = 1;
    t->attached--;
    return true;
}

bool tracker_detach(struct tracker *t, uint64_t tag)
{
    struct slot *s = entry_of(t, tag);
    if (s == NULL)
        return false;
    if (s->ctx != NULL) {
        s->ctx = NULL;
        t->attached--;
    }
    return true;
}

/* The attached entry with the lowest tag in [FROM, END), its tag in *TAG;
 * NULL if none. Laggards first: all their tags are below HEAD. */
static struct slot *next_attached(struct tracker *t, uint64_t from, uint64_t end, uint64_t *tag)
{
    for (size_t j = lag_lower_bound(t, from); j < t->lag_hi && t->lag[j].tag < end; j++) {
        if (t->lag[j].s.state != SLOT_FREE && t->lag[j].s.ctx != NULL) {
            *tag = t->lag[j].tag;
            return &t->lag[j].s;
        }
    }
    uint64_t stop = end < t->next ? end : t->next;
    for (uint64_t g = from > t->head ? from : t->head; g < stop; g++) {
        struct slot *s = &t->slots[slot_index(t, g)];
        if (s->state != SLOT_FREE && s->ctx != NULL) {
            *tag = g;
            return s;
        }
    }
    return NULL;
}

/* O(window): used when the broker blocks us, not per request. Entries added
 * from a callback are past END and stay attached: they were published after
 * the failure. A tag, not a position, carries the loop from one callback to
 * the next: a callback may move entries from the ring to the laggards or
 * compact them. */
size_t tracker_fail_attached(struct tracker *t, enum tracker_result r)
{
    size_t n = 0;
    uint64_t end = t->next;
    uint64_t epoch = t->epoch;
    uint64_t tag = 0;
    struct slot *s;
    while (t->attached > 0 && (s = next_attached(t, tag, end, &tag)) != NULL) {
        void *ctx = s->ctx;
        s->ctx = NULL;
        t->attached--;
        n++;
        tag++;
        call_done(t, ctx, r);
        if (t->epoch != epoch)
            break;
    }
    return n;
}

size_t tracker_fail_all(struct tracker *t)
{
    bool was_failing = t->failing;
    t->failing = true; /* a callback's tracker_add would join a dying channel */
    t->epoch++;        /* an ack loop we were called from stops */
    size_t n = 0;
    while (t->lag_lo < t->lag_hi) {
        void *ctx = lag_take(t, &t->lag[t->lag_lo]);
        if (ctx == NULL)
            continue;
        n++;
        call_done(t, ctx, TRACKER_LOST);
    }
    while (t->head < t->next) {
        struct slot *s = &t->slots[t->head_idx];
        step_head(t);
        if (s->state == SLOT_FREE)
            continue;
        void *ctx = take(t, s);
        if (ctx == NULL)
            continue;
        n++;
        call_done(t, ctx, TRACKER_LOST);
    }
    t->failing = was_failing;
    return n;
}

size_t tracker_pending(const struct tracker *t)
{
    return t->pending;
}

size_t tracker_attached(const struct tracker *t)
{
    return t->attached;
}

size_t tracker_lagging(const struct tracker *t)
{
    return t->lag_live;
}
