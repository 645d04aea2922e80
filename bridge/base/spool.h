/* spool.h - the local spool ([spool], route spool = yes): messages a
 * publish route accepted while the broker was away, durable on this
 * machine's disk until the broker confirms them.
 *
 * On disk: a directory of segments, spool-<16 hex digits>.seg, appended in
 * order, each a run of records: magic, payload length, CRC-32 of the
 * payload, payload. Opening the spool reads every segment: a record whose
 * header or checksum is wrong ends its segment there (in the last segment
 * that is a record torn by a crash: never answered, it is cut off).
 *
 * Appending: any thread hands a record to the spool's writer thread, which
 * writes what has come in one write and one fdatasync (group commit), then
 * tells each appender, on the writer thread, whether its record is
 * durable. A failed write or sync is cut off again and told as failed.
 * The spool refuses records past its size cap (nothing is queued).
 *
 * Replaying: spool_next hands out the oldest durable record not handed out
 * yet; spool_ack says the broker confirmed it, spool_retry puts it back at
 * the front. A segment is deleted once every record of it is confirmed.
 * Locked inside; any thread. */
#ifndef BRIDGE_SPOOL_H
#define BRIDGE_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bridge/base/hdrmap.h"
#include "bridge/base/message.h"

#define SPOOL_SEGMENT_BYTES (16u << 20) /* a segment is closed once past this */
#define SPOOL_RECORD_MAX (64u << 20)    /* a payload longer than this is damage */

struct spool;

/* Called on the writer thread once record TICKET of ARG is durable (ERR
 * 0) or failed (an errno: ENOSPC, EIO...). */
typedef void spool_done_fn(void *arg, uint64_t ticket, int err);

/* Open (creating it if needed) the spool in DIR, at most MAX_BYTES of
 * records on disk, and start its writer. What DIR holds is read now and
 * will be replayed. NULL with the reason in err. */
struct spool *spool_open(const char *dir, uint64_t max_bytes, spool_done_fn *done, char *err,
                         size_t errlen) __attribute__((warn_unused_result));
/* Stop the writer (what was handed to it is written and told first),
 * close. What is not confirmed stays on disk for the next start. */
void spool_close(struct spool *s);

/* Hand the record PAYLOAD (LEN bytes, copied) to the writer; it tells
 * done(ARG, TICKET, err) later. 0, or an errno now (ENOSPC: past the cap;
 * EIO: the spool failed and takes nothing more; ENOMEM) and nothing is
 * told. */
int spool_append(struct spool *s, const void *payload, size_t len, void *arg, uint64_t ticket)
    __attribute__((warn_unused_result));

/* A record handed out for replay. */
struct spool_rec {
    uint64_t seq; /* its segment and offset, for spool_ack / spool_retry */
    uint64_t off;
    void *data; /* the payload, malloc'd: spool_rec_free */
    size_t len;
    int64_t at; /* unix seconds it was spooled */
};

/* The oldest durable record not handed out: 1 and *R, 0 when none, -1 on
 * a read error (logged; the spool takes nothing more then). */
int spool_next(struct spool *s, struct spool_rec *r) __attribute__((warn_unused_result));
void spool_ack(struct spool *s, const struct spool_rec *r);
void spool_retry(struct spool *s, const struct spool_rec *r);
void spool_rec_free(struct spool_rec *r);

struct spool_stats {
    uint64_t records;  /* durable, not confirmed (handed out or not) */
    uint64_t bytes;    /* their payload bytes */
    int64_t oldest;    /* unix seconds the oldest of them was spooled; 0 = none */
    uint64_t appended; /* records made durable since the start */
    uint64_t replayed; /* records confirmed since the start */
    uint64_t refused;  /* appends refused or failed (full, I/O) */
    uint64_t cut;      /* damaged or torn records cut off at the start */
};
void spool_stats(struct spool *s, struct spool_stats *st);
/* The writer has the directory to itself and has read it: appends and
 * replay work (until then spool_append says EAGAIN). */
bool spool_ready(struct spool *s);

/* The message M of route ROUTE as a record: everything needed to publish
 * it again exactly so. Malloc'd into *OUT, *LEN bytes; 0 / -1 (ENOMEM). */
int spool_encode(const struct bridge_msg *m, const char *route, void **out, size_t *len)
    __attribute__((warn_unused_result));
/* The other way: M's strings, body and headers point into DATA (which must
 * outlive M); KV (with room for HDRMAP_MAX_COPIED + HDRMAP_MAX_OWN + 4
 * entries) and *H back its headers. *ROUTE: the route's name. 0 / -1
 * (damaged). */
#define SPOOL_MAX_HEADERS (HDRMAP_MAX_COPIED + HDRMAP_MAX_OWN + 4)
int spool_decode(void *data, size_t len, struct bridge_msg *m, const char **route, struct hdrmap *h,
                 struct hdrmap_kv *kv) __attribute__((warn_unused_result));

#endif
