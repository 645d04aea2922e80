/* pending.h - rpc requests of one worker waiting for their reply, keyed by
 * correlation id (made by the broker module, unique per publish). Pure data
 * structure, no I/O, no locking: one table per worker thread. */
#ifndef BRIDGE_PENDING_H
#define BRIDGE_PENDING_H

#include <stddef.h>
#include <stdint.h>

#define PENDING_ID_MAX 128 /* longest correlation id (an AMQP short string is longer) */

enum pending_add {
    PENDING_ADDED,     /* remembered */
    PENDING_DUPLICATE, /* that id is already pending: nothing changed */
    PENDING_FULL,      /* CAP entries pending: nothing changed */
    PENDING_BADID,     /* id length not 1..PENDING_ID_MAX (or a NULL id or ctx) */
};

const char *pending_add_name(enum pending_add r);

/* Called by pending_drain once per entry it removed. ARG is the caller's. */
typedef void pending_drain_fn(void *arg, void *ctx);

struct pending;

/* CAP: most entries at once (1..2^30). NULL on allocation failure or a bad
 * CAP. Everything is allocated here: nothing later allocates. */
struct pending *pending_new(size_t cap) __attribute__((warn_unused_result));
void pending_free(struct pending *p);

/* Remember CTX (non-NULL) and TAG (any value, handed back by pending_remove:
 * the broker keeps the publish's delivery tag there) under ID, LEN bytes
 * (copied; any bytes). An id already pending is refused: two waiting
 * requests must never share an id, or a reply could go to the wrong one.
 * Checked in this order: BADID, DUPLICATE, FULL. */
enum pending_add pending_add(struct pending *p, const char *id, size_t len, void *ctx, uint64_t tag)
    __attribute__((warn_unused_result));

/* The ctx pending under ID, or NULL (never added, removed, drained, or a
 * length no entry can have). */
void *pending_find(const struct pending *p, const char *id, size_t len);

/* Forget ID; returns its ctx, or NULL if it was not pending (a late reply,
 * a second reply, or an unknown id: the caller drops it). TAG (may be NULL):
 * the entry's tag, 0 when it was not pending. */
void *pending_remove(struct pending *p, const char *id, size_t len, uint64_t *tag);

size_t pending_count(const struct pending *p); /* entries pending now */

/* Remove every entry, then call FN(ARG, ctx) once for each, in no particular
 * order (it depends on the table's random hash key). Returns how many.
 * Everything is removed before the first call, so FN may use pending_add,
 * pending_find, pending_remove and pending_count on P: entries it adds stay
 * pending, and the drained ones are already gone (removing one gives NULL,
 * and it is still called back). A pending_drain of P from inside FN does
 * nothing and returns 0; pending_free of P from inside FN is not allowed.
 * FN NULL: just forget every entry. */
size_t pending_drain(struct pending *p, pending_drain_fn *fn, void *arg);

#endif
