/* inflate.h - request bodies sent with Content-Encoding gzip or deflate
 * (zlib), decompressed under a bound on what they inflate to: a body that
 * would pass it stops being inflated at the bound (a zip bomb costs what
 * max_body of output costs, never what it would inflate to). Inside http/. */
#ifndef BRIDGE_HTTP_INFLATE_H
#define BRIDGE_HTTP_INFLATE_H

#include <stdbool.h>
#include <stddef.h>

#include "http/http_config.h"

struct evbuffer;

enum body_coding {
    CODING_IDENTITY, /* no Content-Encoding, or identity */
    CODING_GZIP,     /* gzip, x-gzip (RFC 1952; members one after another) */
    CODING_DEFLATE,  /* deflate: the zlib format (RFC 1950), as RFC 9110 names it */
    CODING_UNKNOWN,  /* anything else, a list of codings included */
};

_Static_assert(HTTP_ENCODING_GZIP == 1u << CODING_GZIP &&
                   HTTP_ENCODING_DEFLATE == 1u << CODING_DEFLATE,
               "http_config.h's encoding bits are enum body_coding's");

/* The coding a Content-Encoding value names (any case, blanks around). */
enum body_coding coding_of(const char *value);
/* "gzip", "deflate", "identity" or "unknown". */
const char *coding_name(enum body_coding c);

enum inflate_result {
    INFLATE_OK,
    INFLATE_TOO_LARGE, /* it inflates past the bound */
    INFLATE_BAD,       /* not a valid stream of its coding, or bytes after its end */
    INFLATE_NO_MEMORY, /* zlib or the output could not get memory: ours, not the client's */
};

/* One per worker: zlib's state, kept between bodies. */
struct inflater;
struct inflater *inflater_new(void) __attribute__((warn_unused_result));
void inflater_free(struct inflater *z);

/* Inflate IN (LEN bytes, coded as C: gzip or deflate) into OUT (appended),
 * never more than MAX bytes: INFLATE_TOO_LARGE as soon as a byte more would
 * come. *PRODUCED gets the bytes inflated (also on failure); WHY the
 * reason of INFLATE_BAD. */
enum inflate_result inflater_run(struct inflater *z, enum body_coding c, const void *in, size_t len,
                                 size_t max, struct evbuffer *out, size_t *produced, char *why,
                                 size_t wl);

#endif
