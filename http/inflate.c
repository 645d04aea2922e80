/* inflate.c - bounded decompression of gzip and deflate request bodies
 * with zlib (inflate.h). */
#include "http/inflate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <zlib.h>

/* Output is written straight into OUT's space, this much at a time. */
#define INFLATE_STEP ((size_t)16 * 1024)

struct inflater {
    z_stream zs;
    bool ready; /* inflateInit2 done */
};

enum body_coding coding_of(const char *value)
{
    if (value == NULL)
        return CODING_IDENTITY;
    while (*value == ' ' || *value == '\t')
        value++;
    size_t n = strlen(value);
    while (n > 0 && (value[n - 1] == ' ' || value[n - 1] == '\t'))
        n--;
    if (n == 0 || (n == 8 && strncasecmp(value, "identity", 8) == 0))
        return CODING_IDENTITY;
    if ((n == 4 && strncasecmp(value, "gzip", 4) == 0) ||
        (n == 6 && strncasecmp(value, "x-gzip", 6) == 0))
        return CODING_GZIP;
    if (n == 7 && strncasecmp(value, "deflate", 7) == 0)
        return CODING_DEFLATE;
    return CODING_UNKNOWN;
}

const char *coding_name(enum body_coding c)
{
    switch (c) {
    case CODING_IDENTITY:
        return "identity";
    case CODING_GZIP:
        return "gzip";
    case CODING_DEFLATE:
        return "deflate";
    case CODING_UNKNOWN:
        break;
    }
    return "unknown";
}

struct inflater *inflater_new(void)
{
    return calloc(1, sizeof(struct inflater));
}

void inflater_free(struct inflater *z)
{
    if (z == NULL)
        return;
    if (z->ready)
        (void)inflateEnd(&z->zs);
    free(z);
}

static int fail(char *why, size_t wl, const char *what, const z_stream *zs)
{
    if (why != NULL && wl > 0)
        snprintf(why, wl, "%s%s%s", what, zs != NULL && zs->msg != NULL ? ": " : "",
                 zs != NULL && zs->msg != NULL ? zs->msg : "");
    return INFLATE_BAD;
}

enum inflate_result inflater_run(struct inflater *z, enum body_coding c, const void *in, size_t len,
                                 size_t max, struct evbuffer *out, size_t *produced, char *why,
                                 size_t wl)
{
    *produced = 0;
    /* 15 + 16: gzip only; 15: the zlib wrapper only. */
    int bits = c == CODING_GZIP ? 15 + 16 : 15;
    z_stream *zs = &z->zs;
    if (!z->ready) {
        memset(zs, 0, sizeof *zs);
        if (inflateInit2(zs, bits) != Z_OK)
            return INFLATE_NO_MEMORY;
        z->ready = true;
    } else if (inflateReset2(zs, bits) != Z_OK) {
        return INFLATE_NO_MEMORY; /* a window of another size, not to be had */
    }
    const unsigned char *p = in;
    size_t left = len;
    for (;;) {
        /* zlib's counts are uInt: feed at most 1 GiB at a time. */
        uInt feed = left > (1u << 30) ? (1u << 30) : (uInt)left;
        zs->next_in = (Bytef *)(uintptr_t)p;
        zs->avail_in = feed;
        /* One byte of room past MAX: a body that fills it is too large. */
        size_t room = max - *produced + 1;
        size_t step = room < INFLATE_STEP ? room : INFLATE_STEP;
        struct evbuffer_iovec v;
        if (evbuffer_reserve_space(out, (ev_ssize_t)step, &v, 1) < 1)
            return INFLATE_NO_MEMORY;
        zs->next_out = v.iov_base;
        zs->avail_out = (uInt)step;
        int rc = inflate(zs, Z_NO_FLUSH);
        size_t made = step - zs->avail_out;
        v.iov_len = made > max - *produced ? max - *produced : made;
        (void)evbuffer_commit_space(out, &v, 1);
        *produced += made;
        size_t used = feed - zs->avail_in;
        p += used;
        left -= used;
        if (*produced > max)
            return INFLATE_TOO_LARGE;
        if (rc == Z_STREAM_END) {
            /* gzip allows members one after another; anything else after
             * the end is not the body. */
            if (left == 0)
                return INFLATE_OK;
            if (c != CODING_GZIP || inflateReset(zs) != Z_OK)
                return (enum inflate_result)fail(why, wl, "data after the end of the stream", NULL);
            continue;
        }
        if (rc == Z_BUF_ERROR && left == 0 && zs->avail_out > 0)
            return (enum inflate_result)fail(why, wl, "the stream is cut short", NULL);
        if (rc == Z_MEM_ERROR)
            return INFLATE_NO_MEMORY;
        if (rc != Z_OK && rc != Z_BUF_ERROR)
            return (enum inflate_result)fail(
                why, wl, c == CODING_GZIP ? "not a valid gzip stream" : "not a valid zlib stream",
                zs);
        if (left == 0 && zs->avail_out > 0 && used == 0 && made == 0)
            return (enum inflate_result)fail(why, wl, "the stream is cut short", NULL);
    }
}
