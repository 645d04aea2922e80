/* dedupe.h - a route's idempotency window ([route] dedupe): the request
 * ids of the route's publishes the broker confirmed within the window, and
 * of those still waiting, shared by every worker of the process (a retry
 * may land on any of them). A retry of a confirmed id is answered from here
 * and not published again; one that arrives while the first still waits
 * gets the first one's outcome. Bounded by a count of ids, the oldest
 * dropped first. Locked inside; one lock per route, held for a lookup. */
#ifndef BRIDGE_DEDUPE_H
#define BRIDGE_DEDUPE_H

#include <stddef.h>
#include <stdint.h>

struct dedupe;

/* WINDOW_MS (> 0) after its confirm an id is forgotten; at most MAX_IDS
 * (>= 1) are kept. NULL when out of memory. */
struct dedupe *dedupe_new(uint64_t window_ms, size_t max_ids) __attribute__((warn_unused_result));
/* One more holder of D (the next config's workers, on a reload): D goes
 * with the last dedupe_free. Returns D. */
struct dedupe *dedupe_hold(struct dedupe *d);
void dedupe_free(struct dedupe *d);

enum dedupe_seen {
    DEDUPE_NEW,     /* not seen (or forgotten, or it failed): *HANDLE is now its owner's */
    DEDUPE_DONE,    /* confirmed within the window: *STATUS is what it was answered */
    DEDUPE_PENDING, /* another request with the id waits: *HANDLE names it for dedupe_poll */
};

/* Request id ID (LEN bytes) arrives at NOW_MS. *HELD: the ids held then
 * (dedupe_size, without taking the lock again). */
enum dedupe_seen dedupe_begin(struct dedupe *d, const char *id, size_t len, uint64_t now_ms,
                              uint64_t *handle, int *status, size_t *held);
/* The owner of HANDLE (dedupe_begin's DEDUPE_NEW) was answered STATUS at
 * NOW_MS: a 2xx is kept for the window; anything else is a failure that
 * the waiters of the id get, after which the id is new again. */
void dedupe_end(struct dedupe *d, uint64_t handle, const char *id, size_t len, int status,
                uint64_t now_ms);
/* A waiter of HANDLE (dedupe_begin's DEDUPE_PENDING) asks again:
 * DEDUPE_PENDING while the first waits; DEDUPE_DONE with the outcome in
 * *STATUS (a 2xx, or the first one's failure); DEDUPE_NEW when the id was
 * dropped meanwhile (the table was full): the waiter is on its own. */
enum dedupe_seen dedupe_poll(struct dedupe *d, uint64_t handle, const char *id, size_t len,
                             int *status);

/* Ids held now, and how many requests were answered from the window. */
size_t dedupe_size(struct dedupe *d);

#endif
