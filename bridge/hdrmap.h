/* hdrmap.h - which HTTP request headers become AMQP message headers, and how:
 * x-http-path, x-http-query, x-forwarded-for, and every X-* header except
 * X-Request-Id, names lower-cased, repeated names joined with ", ". */
#ifndef BRIDGE_HDRMAP_H
#define BRIDGE_HDRMAP_H

#include <stdbool.h>
#include <stddef.h>

struct hdrmap_kv {
    char *name;    /* lower-cased, NUL-terminated */
    char *value;   /* NUL-terminated */
};

/* The headers of one message; owns its strings. */
struct hdrmap {
    struct hdrmap_kv *kv;
    size_t n;
    size_t cap;
};

void hdrmap_init(struct hdrmap *m);
void hdrmap_clear(struct hdrmap *m);   /* frees strings, keeps nothing */

/* Should request header NAME be copied (starts with "X-" in any case, is not
 * X-Request-Id, and is not one the bridge sets itself)? */
bool hdrmap_wanted(const char *name);

/* Start a message: x-http-path = PATH, x-http-query = QUERY (skipped when NULL
 * or ""), x-forwarded-for = CLIENT (appended after any X-Forwarded-For the
 * request carries, see hdrmap_add). Returns 0 / -1 (out of memory). */
int hdrmap_begin(struct hdrmap *m, const char *path, const char *query)
    __attribute__((warn_unused_result));
/* Offer one request header; ignored unless hdrmap_wanted(). 0 / -1. */
int hdrmap_add(struct hdrmap *m, const char *name, const char *value)
    __attribute__((warn_unused_result));
/* Finish: set x-forwarded-for to "<request's X-Forwarded-For>, CLIENT" or
 * CLIENT alone. 0 / -1. */
int hdrmap_finish(struct hdrmap *m, const char *client)
    __attribute__((warn_unused_result));
/* Lookup by lower-case name; NULL if absent. */
const char *hdrmap_get(const struct hdrmap *m, const char *name);

#endif
