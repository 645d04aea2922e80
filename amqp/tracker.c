/* tracker.c - publisher-confirm bookkeeping for one channel: a ring of CAP
 * slots indexed by delivery tag, so that add, ack and detach cost O(1)
 * amortized and nothing is allocated per publish.
 *
 * The window. Tags are handed out consecutively from 1 after a reset. HEAD is
 * the oldest tag that may still be pending: every tag below it is completed,
 * and HEAD is either NEXT (nothing pending) or a pending tag. The tags in
 * [HEAD, NEXT) live in consecutive slots starting at HEAD_IDX (wrapping), so a
 * tag's slot is HEAD_IDX + (tag - HEAD) with one conditional subtraction: no
 * division. Acks may come out of order (tag 7 before tag 5): a completed slot
 * inside the window is just marked free, and HEAD moves past free slots when
 * the slot at HEAD completes. Each tag is stepped over by HEAD once, so a
 * `multiple` ack costs O(tags it covers), amortized O(1) per publish.
 *
 * Full. A slot is reused only once HEAD has passed it, so tracker_add refuses
 * when the window spans CAP tags: always when CAP entries are pending
 * (detached ones included, they hold their tag until their confirm), and
 * also when fewer are pending but the oldest is CAP - 1 tags behind the
 * newest (one confirm stuck while later ones completed). broker.c sizes CAP at
 * twice max_inflight, which leaves that much room for out-of-order confirms.
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
 * included: basic.return carries no delivery tag, so with two publishes of
 * one id in flight (a client reusing X-Request-Id) we cannot tell which one
 * came back. Marking only one could give the unroutable message a 202 (a
 * false success); marking all gives the routable one a 502 at worst, which
 * the client retries (at-least-once allows the duplicate).
 *
 * A ctx of NULL in tracker_add makes an entry detached from the start. A
 * tracker_reset with entries left (the caller should fail them first)
 * completes them as TRACKER_LOST rather than lose their answers.
 *
 * Re-entrancy. The done callback may call back into the tracker. Every entry
 * is taken out of its slot (slot freed, counters updated, HEAD advanced)
 * before done is called for it, and a loop over several entries re-reads the
 * window after each callback. Allowed from inside done:
 *   - tracker_pending, tracker_attached, tracker_result_name;
 *   - tracker_detach of any tag (an entry the running loop has not reached
 *     yet is then dropped as late and not reported);
 *   - tracker_add: the new tag is above any range being completed, so the
 *     running ack/fail_attached does not complete it. Inside tracker_fail_all
 *     (connection lost) it refuses (returns 0): the channel is going away;
 *   - tracker_unadd of a tag added from the same callback;
 *   - tracker_ack / nack / return / fail_attached (the running loop skips
 *     what they completed);
 *   - tracker_fail_all and tracker_reset: the running loop stops at once
 *     (an epoch counter tells it), and never completes entries added after
 *     the reset with a confirm meant for the old channel.
 * tracker_free is never allowed from inside done. */
#include "tracker.h"

#include <stdlib.h>
#include <string.h>

#include "seed.h"
#include "siphash.h"

enum slot_state {
    SLOT_FREE,     /* completed, or never used */
    SLOT_PENDING,  /* published, waiting for its confirm */
    SLOT_RETURNED, /* pending, and a basic.return matched it */
};

struct slot {
    void *ctx;      /* caller's request; NULL once detached */
    uint32_t idlen; /* full length of the message id (saturated) */
    uint8_t state;  /* enum slot_state */
};

struct tracker {
    struct slot *slots;    /* CAP slots, tag order from head_idx */
    uint64_t *ids;         /* CAP message id hashes, parallel to slots */
    uint64_t k0, k1;       /* SipHash key of the ids, random per tracker */
    size_t cap;            /* ring size: most tags in the window */
    uint64_t head;         /* oldest tag that may be pending */
    size_t head_idx;       /* slot of HEAD */
    uint64_t next;         /* tag the next add gets */
    size_t pending;        /* slots not free */
    size_t attached;       /* pending slots with a ctx */
    uint64_t epoch;        /* bumped by fail_all/reset: stale loops stop */
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
    if (cap == 0 || cap > SIZE_MAX / sizeof(struct slot))
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

/* Free slot S and return its ctx (NULL if detached). */
static void *take(struct tracker *t, struct slot *s)
{
    void *ctx = s->ctx;
    s->ctx = NULL;
    s->state = SLOT_FREE;
    t->pending--;
    if (ctx != NULL)
        t->attached--;
    return ctx;
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
    t->epoch++;
}

uint64_t tracker_add(struct tracker *t, void *ctx, const char *msg_id, size_t msg_id_len)
{
    if (t->failing || t->next - t->head >= t->cap)
        return 0;
    uint64_t tag = t->next;
    size_t i = slot_index(t, tag);
    struct slot *s = &t->slots[i];
    if (msg_id == NULL)
        msg_id_len = 0;
    s->ctx = ctx;
    s->state = SLOT_PENDING;
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
    t->next--;
}

static enum tracker_result result_of(uint8_t state, bool nack)
{
    if (nack)
        return TRACKER_NACK;
    return state == SLOT_RETURNED ? TRACKER_RETURNED : TRACKER_ACK;
}

/* basic.ack / basic.nack. A tag outside the window (below HEAD: already
 * completed; at or past NEXT: never issued, a broker bug or a frame from a
 * previous channel) is ignored whole, even with MULTIPLE. */
static size_t confirm(struct tracker *t, uint64_t tag, bool multiple, bool nack)
{
    if (tag < t->head || tag >= t->next)
        return 0;
    if (!multiple) {
        struct slot *s = &t->slots[slot_index(t, tag)];
        if (s->state == SLOT_FREE)
            return 0; /* already completed: a duplicate confirm */
        enum tracker_result r = result_of(s->state, nack);
        void *ctx = take(t, s);
        if (tag == t->head)
            advance_head(t);
        if (ctx == NULL)
            return 1;
        call_done(t, ctx, r);
        return 0;
    }
    size_t late = 0;
    uint64_t epoch = t->epoch;
    /* HEAD is re-read after every callback: one may have completed or
     * detached entries of this range, or added past it. */
    while (t->head <= tag && t->head < t->next) {
        struct slot *s = &t->slots[t->head_idx];
        step_head(t);
        if (s->state == SLOT_FREE)
            continue; /* completed out of order before */
        enum tracker_result r = result_of(s->state, nack);
        void *ctx = take(t, s);
        if (ctx == NULL) {
            late++;
            continue;
        }
        call_done(t, ctx, r);
        if (t->epoch != epoch)
            return late; /* forgotten or reset under us: the rest is gone */
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

/* Returns are rare (mandatory + unroutable), so a linear scan of the whole
 * window is fine here and keeps the hot path free of an index. It does not
 * stop at the first match: every pending entry with the id is marked (see
 * the top of this file), so that no 202 answers a message that came back. */
bool tracker_return(struct tracker *t, const char *msg_id, size_t msg_id_len)
{
    if (msg_id == NULL)
        msg_id_len = 0;
    uint32_t len = saturate_len(msg_id_len);
    uint64_t hash = id_hash(t, msg_id, msg_id_len);
    bool marked = false;
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

bool tracker_detach(struct tracker *t, uint64_t tag)
{
    struct slot *s = slot_of(t, tag);
    if (s == NULL || s->state == SLOT_FREE)
        return false;
    if (s->ctx != NULL) {
        s->ctx = NULL;
        t->attached--;
    }
    return true;
}

/* O(window): used when the broker blocks us, not per request. Entries added
 * from a callback are past END and stay attached: they were published after
 * the failure. */
size_t tracker_fail_attached(struct tracker *t, enum tracker_result r)
{
    size_t n = 0;
    uint64_t end = t->next;
    uint64_t epoch = t->epoch;
    for (uint64_t tag = t->head; tag < end && t->attached > 0; tag++) {
        struct slot *s = slot_of(t, tag);
        if (s == NULL || s->ctx == NULL)
            continue; /* completed (maybe from a callback) or detached */
        void *ctx = s->ctx;
        s->ctx = NULL;
        t->attached--;
        n++;
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
