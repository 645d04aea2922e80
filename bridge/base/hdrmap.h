/* hdrmap.h - which HTTP request headers become AMQP message headers, and how:
 * x-http-path, x-http-query, x-forwarded-for, and every X-* header except
 * X-Request-Id, names lower-cased, repeated names joined with ", ".
 *
 * Limits. A request header over a limit is left out (never truncated: a
 * consumer sees a value whole or not at all) and counted in `dropped`; it is
 * never an error:
 *   - HDRMAP_MAX_COPIED request header lines are copied (X-Forwarded-For lines
 *     included); later ones are ignored.
 *   - names longer than HDRMAP_NAME_MAX (an AMQP short string) are ignored.
 *   - values longer than HDRMAP_VALUE_MAX are ignored; a repeated header whose
 *     joined value would pass HDRMAP_VALUE_MAX keeps the values it had.
 *   - copied X-* headers take at most HDRMAP_COPY_MAX bytes of the map's
 *     buffer (names + values + NULs; a repeated name that does not follow its
 *     previous line directly costs its joined value again). With the bridge's
 *     own headers the table stays well under the 128 KiB frame the AMQP
 *     properties must fit in: a bigger one would fail the publish and cost
 *     the broker connection.
 *   - x-http-query longer than HDRMAP_VALUE_MAX is left out.
 *   - the request's own X-Forwarded-For (its lines joined) keeps at most
 *     HDRMAP_VALUE_MAX bytes: when longer, its leftmost (oldest, least
 *     trusted) addresses are dropped. The client address is always appended.
 *   - x-http-path is the request's path (a route with captures takes any
 *     segments), bounded by evhttp's limit on the request line: copied as
 *     is.
 *
 * Memory: one map per worker, reused for every request. hdrmap_clear empties
 * it and keeps its memory (no allocation per request once warm); hdrmap_free
 * releases it. Not thread-safe: one map per thread. */
#ifndef BRIDGE_HDRMAP_H
#define BRIDGE_HDRMAP_H

#include <stdbool.h>
#include <stddef.h>

#define HDRMAP_MAX_COPIED 128       /* request header lines copied per message */
#define HDRMAP_NAME_MAX 255         /* longest name copied (AMQP short string) */
#define HDRMAP_VALUE_MAX (8u << 10) /* longest value copied (joined, for repeats) */
#define HDRMAP_COPY_MAX (64u << 10) /* buffer bytes all copied X-* headers may take */
#define HDRMAP_MAX_OWN 24           /* headers the bridge sets with hdrmap_put per message */

struct hdrmap_kv {
    char *name;  /* lower-cased, NUL-terminated */
    char *value; /* NUL-terminated */
};

struct hdrmap_ent; /* private to hdrmap.c: lengths and name hash of one entry */

/* The headers of one message; owns its strings. Callers read kv, n and
 * dropped; the rest is hdrmap.c's. */
struct hdrmap {
    struct hdrmap_kv *kv; /* n entries; strings point into buf */
    size_t n;             /* entries in use */
    size_t cap;           /* entries allocated (fixed once allocated) */
    size_t dropped;       /* request headers left out by the limits, this message */

    struct hdrmap_ent *ent; /* cap entries, same index as kv */
    char *buf;              /* every string of kv, back to back */
    size_t used;            /* bytes of buf in use */
    size_t size;            /* bytes of buf allocated */
    size_t copied;          /* request header lines copied, this message */
    size_t copied_bytes;    /* bytes of buf taken by copied X-* headers */
    char *xff;              /* request's X-Forwarded-For, joined, until finish */
    size_t xff_len;         /* bytes in xff (no NUL kept) */
    size_t xff_size;        /* bytes of xff allocated */
};

void hdrmap_init(struct hdrmap *m);
/* Empty M for the next message, keeping its memory (a buffer that grew past
 * a few tens of KiB for one big request is given back). */
void hdrmap_clear(struct hdrmap *m);
/* Release all memory; M is then as after hdrmap_init (and may be reused). */
void hdrmap_free(struct hdrmap *m);

/* Should request header NAME be copied (starts with "X-" in any case, is not
 * X-Request-Id, and is not one the bridge sets itself: x-http-path,
 * x-http-query)? X-Forwarded-For is wanted: it is merged in hdrmap_finish. */
bool hdrmap_wanted(const char *name);

/* Start a message: empty M (as hdrmap_clear), then x-http-path = PATH and
 * x-http-query = QUERY (skipped when NULL or ""). Returns 0 / -1 (out of
 * memory). */
int hdrmap_begin(struct hdrmap *m, const char *path, const char *query)
    __attribute__((warn_unused_result));
/* Offer one request header, in request order; ignored unless hdrmap_wanted()
 * and within the limits above. 0 / -1 (out of memory; M stays usable). */
int hdrmap_add(struct hdrmap *m, const char *name, const char *value)
    __attribute__((warn_unused_result));
/* Finish: set x-forwarded-for to "<request's X-Forwarded-For>, CLIENT" or
 * CLIENT alone (nothing when both are empty). Once per message. 0 / -1. */
int hdrmap_finish(struct hdrmap *m, const char *client) __attribute__((warn_unused_result));
/* Set header NAME (lower-cased) to VALUE, the bridge's own (a route's
 * constant headers, trace context): it replaces a copied request header of
 * the same name. At most HDRMAP_MAX_OWN per message, bounded by the caller
 * (config time). 0 / -1 (out of memory, or past the bound). */
int hdrmap_put(struct hdrmap *m, const char *name, const char *value)
    __attribute__((warn_unused_result));
/* Lookup by lower-case name; NULL if absent. */
const char *hdrmap_get(const struct hdrmap *m, const char *name);

#endif
