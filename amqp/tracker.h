/* tracker.h - publisher-confirm bookkeeping for one channel: which request
 * waits for which delivery tag. Pure data structure, no I/O. */
#ifndef BRIDGE_TRACKER_H
#define BRIDGE_TRACKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum tracker_result {
    TRACKER_ACK,      /* confirmed: answer 202 */
    TRACKER_NACK,     /* broker refused it: answer 503 */
    TRACKER_RETURNED, /* basic.return then ack: unroutable, answer 502 */
    TRACKER_LOST,     /* connection/channel gone before the confirm: 503 */
};

const char *tracker_result_name(enum tracker_result r);

/* Called once per still-attached entry that completes. CTX is what was given
 * to tracker_add; ARG is the caller's. */
typedef void tracker_done_fn(void *arg, void *ctx, enum tracker_result r);

struct tracker;

/* CAP: most entries pending at once. An add that finds CAP pending forgets
 * the oldest detached ones first; it is refused only when all CAP are
 * attached. However old the oldest pending entry is, it never blocks adds
 * (see tracker.c: laggards). */
struct tracker *tracker_new(size_t cap, tracker_done_fn *done, void *arg)
    __attribute__((warn_unused_result));
void tracker_free(struct tracker *t);

/* A new channel in confirm mode: the next delivery tag is 1. Entries left
 * must have been failed first (tracker_fail_all). */
void tracker_reset(struct tracker *t);

/* Record the next publish; returns its delivery tag (1, 2, 3...) or 0 when
 * CAP attached entries wait (or out of memory for the laggards). MSG_ID
 * (copied, may be NULL) matches a later basic.return. */
uint64_t tracker_add(struct tracker *t, void *ctx, const char *msg_id, size_t msg_id_len)
    __attribute__((warn_unused_result));

/* The publish of the newest entry did not leave (socket error): forget it so
 * that delivery tags stay aligned with what the broker saw. */
void tracker_unadd(struct tracker *t, uint64_t tag);

/* Detached entries forgotten to make room (tracker_add) since the last
 * call, those detached as expected left out: their confirms, when they
 * come, are dropped as unknown tags, so they are counted as late here. */
size_t tracker_take_forgotten(struct tracker *t);

/* basic.ack / basic.nack; MULTIPLE covers every tag <= TAG. Completes entries
 * (calling done for attached ones). Returns how many detached entries were
 * dropped (late confirms). Unknown tags (never issued, completed, or
 * forgotten to make room) are ignored and not counted. */
size_t tracker_ack(struct tracker *t, uint64_t tag, bool multiple);
size_t tracker_nack(struct tracker *t, uint64_t tag, bool multiple);

/* basic.return for a message with MSG_ID: mark EVERY pending, not yet
 * returned entry with that id (attached or detached); their acks then
 * complete as TRACKER_RETURNED. A return carries no delivery tag, so when a
 * client reused an id we cannot tell which publish came back: all of them
 * answer 502 (a retry, maybe a duplicate), never a 202 for a message the
 * broker does not have. true if at least one entry was marked. */
bool tracker_return(struct tracker *t, const char *msg_id, size_t msg_id_len);

/* The request behind TAG is gone (client hung up, timed out): its confirm
 * will be dropped on arrival, and its entry may be forgotten when room is
 * needed. false if TAG is not pending. */
bool tracker_detach(struct tracker *t, uint64_t tag);

/* As tracker_detach, for an entry whose request was answered by other means
 * before its confirm (an rpc reply that overtook it): its confirm is
 * expected, dropped on arrival and not counted as late; the entry may be
 * forgotten when room is needed like any detached one. false if TAG is not
 * pending or is detached already. */
bool tracker_detach_expected(struct tracker *t, uint64_t tag);

/* Complete every attached entry with R and detach it; entries stay in place
 * so later confirms for them are dropped (used when the broker blocks us). */
size_t tracker_fail_attached(struct tracker *t, enum tracker_result r);

/* Connection or channel lost: complete every attached entry as TRACKER_LOST
 * and forget all entries. */
size_t tracker_fail_all(struct tracker *t);

size_t tracker_pending(const struct tracker *t);  /* entries, attached or not */
size_t tracker_attached(const struct tracker *t); /* entries with a request */
/* Entries moved out of the ring: pending while CAP or more tags were added
 * after them (a queue that stopped confirming). */
size_t tracker_lagging(const struct tracker *t);

#endif
