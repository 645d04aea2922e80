/* backlog.h - one worker's requests waiting for room toward the broker, in
 * arrival order. Pure data structure over opaque items: no I/O, no timers,
 * no locking (one per worker thread). The owner says when to try (room may
 * have come back) and when to give up (the connection is lost or blocked);
 * the backlog calls back to publish an item or to answer it, each item once. */
#ifndef BRIDGE_BACKLOG_H
#define BRIDGE_BACKLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Publish ITEM, which has just left the front of the backlog (its TICKET no
 * longer names it). True: it is gone for good (published, or answered by the
 * callback). False: no room, nothing happened; the backlog puts it back at
 * the front under the same TICKET and stops trying. */
typedef bool backlog_try_fn(void *arg, void *item, uint64_t ticket);

/* Answer ITEM (it will never go out: WHY); it has already left the backlog. */
typedef void backlog_fail_fn(void *arg, void *item, const char *why);

struct backlog;

/* At most CAP items at once (1..2^30), whatever left before: a request that
 * leaves from the middle costs nothing. NULL on allocation failure or a bad
 * CAP, or a NULL callback. Everything is allocated here: nothing later does. */
struct backlog *backlog_new(size_t cap, backlog_try_fn *try_fn, backlog_fail_fn *fail_fn, void *arg)
    __attribute__((warn_unused_result));
/* Forgets whatever still waits, unanswered: answer it first (backlog_fail_all). */
void backlog_free(struct backlog *b);

/* ITEM (non-NULL) waits behind the others; *TICKET names it for
 * backlog_cancel, valid until it leaves. -1 when CAP items wait already
 * (nothing changed: the caller answers it). */
int backlog_add(struct backlog *b, void *item, uint64_t *ticket)
    __attribute__((warn_unused_result));

/* ITEM leaves without being published (its client left, its timer ran out):
 * true if it was waiting under TICKET; false, changing nothing, if not (it
 * left already, or is being tried right now). Order of the others is kept. */
bool backlog_cancel(struct backlog *b, uint64_t ticket, const void *item)
    __attribute__((warn_unused_result));

/* Try the items from the front, oldest first, until one finds no room or
 * none is left; returns how many left. Each leaves before its try, so the
 * callback may cancel, add, or fail everything (the connection lost under
 * that very publish): the item being tried is the callback's alone. A
 * backlog_flush from inside a callback does nothing and returns 0. */
size_t backlog_flush(struct backlog *b);

/* Every waiting item leaves, oldest first, and is answered with WHY (the
 * fail callback, once each); returns how many. Items added by the callback
 * wait on. The item being tried by backlog_flush, if any, is not among them. */
size_t backlog_fail_all(struct backlog *b, const char *why);

size_t backlog_live(const struct backlog *b); /* items waiting now */
void *backlog_front(const struct backlog *b); /* the oldest, or NULL */

#endif
