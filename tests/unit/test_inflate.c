/* test_inflate.c - gzip and deflate bodies: decoded, bounded exactly at
 * the limit, members one after another, bytes after the end and streams
 * cut short refused, the coding names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <event2/buffer.h>
#include <zlib.h>

#include "http/inflate.h"

/* LEN bytes of DATA compressed as gzip or zlib into OUT (CAP); its length. */
static size_t squeeze(bool gzip, const void *data, size_t len, unsigned char *out, size_t cap)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    assert_int_equal(deflateInit2(&zs, 6, Z_DEFLATED, gzip ? 31 : 15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    zs.next_in = (Bytef *)(uintptr_t)data;
    zs.avail_in = (uInt)len;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    assert_int_equal(deflate(&zs, Z_FINISH), Z_STREAM_END);
    size_t n = cap - zs.avail_out;
    deflateEnd(&zs);
    return n;
}

static enum inflate_result run(struct inflater *z, enum body_coding c, const void *in, size_t len,
                               size_t max, char **text, size_t *made)
{
    struct evbuffer *out = evbuffer_new();
    char why[160] = "";
    enum inflate_result r = inflater_run(z, c, in, len, max, out, made, why, sizeof why);
    size_t n = evbuffer_get_length(out);
    *text = calloc(1, n + 1);
    evbuffer_remove(out, *text, n);
    evbuffer_free(out);
    return r;
}

static void codings(void **state)
{
    (void)state;
    assert_int_equal(coding_of(NULL), CODING_IDENTITY);
    assert_int_equal(coding_of(" identity "), CODING_IDENTITY);
    assert_int_equal(coding_of("GZip"), CODING_GZIP);
    assert_int_equal(coding_of("x-gzip"), CODING_GZIP);
    assert_int_equal(coding_of("deflate"), CODING_DEFLATE);
    assert_int_equal(coding_of("gzip, deflate"), CODING_UNKNOWN);
    assert_int_equal(coding_of("br"), CODING_UNKNOWN);
    assert_string_equal(coding_name(CODING_GZIP), "gzip");
}

static void decoded_and_bounded(void **state)
{
    (void)state;
    struct inflater *z = inflater_new();
    static const char doc[] = "<order><id>1</id></order>";
    unsigned char gz[256], zl[256];
    size_t glen = squeeze(true, doc, strlen(doc), gz, sizeof gz);
    size_t zlen = squeeze(false, doc, strlen(doc), zl, sizeof zl);
    char *text;
    size_t made;
    assert_int_equal(run(z, CODING_GZIP, gz, glen, 1000, &text, &made), INFLATE_OK);
    assert_string_equal(text, doc);
    free(text);
    /* The same inflater again, the other coding. */
    assert_int_equal(run(z, CODING_DEFLATE, zl, zlen, 1000, &text, &made), INFLATE_OK);
    assert_string_equal(text, doc);
    free(text);
    /* Exactly the bound is fine; one byte less is too large. */
    assert_int_equal(run(z, CODING_GZIP, gz, glen, strlen(doc), &text, &made), INFLATE_OK);
    free(text);
    assert_int_equal(run(z, CODING_GZIP, gz, glen, strlen(doc) - 1, &text, &made),
                     INFLATE_TOO_LARGE);
    assert_true(strlen(text) <= strlen(doc) - 1);
    free(text);
    /* The wrong wrapper for the coding. */
    assert_int_equal(run(z, CODING_DEFLATE, gz, glen, 1000, &text, &made), INFLATE_BAD);
    free(text);
    assert_int_equal(run(z, CODING_GZIP, zl, zlen, 1000, &text, &made), INFLATE_BAD);
    free(text);
    inflater_free(z);
}

static void members_garbage_and_cuts(void **state)
{
    (void)state;
    struct inflater *z = inflater_new();
    unsigned char two[512];
    size_t a = squeeze(true, "<a>", 3, two, sizeof two);
    size_t b = squeeze(true, "</a>", 4, two + a, sizeof two - a);
    char *text;
    size_t made;
    /* gzip members one after another are one body (RFC 1952). */
    assert_int_equal(run(z, CODING_GZIP, two, a + b, 100, &text, &made), INFLATE_OK);
    assert_string_equal(text, "<a></a>");
    free(text);
    /* Bytes after a zlib stream's end are not the body. */
    unsigned char zl[256];
    size_t zlen = squeeze(false, "<a/>", 4, zl, sizeof zl - 3);
    memcpy(zl + zlen, "xyz", 3);
    assert_int_equal(run(z, CODING_DEFLATE, zl, zlen + 3, 100, &text, &made), INFLATE_BAD);
    free(text);
    /* Cut short: every length short of the whole stream is refused. */
    for (size_t cut = 0; cut < a; cut++) {
        if (run(z, CODING_GZIP, two, cut, 100, &text, &made) != INFLATE_BAD)
            fail_msg("a gzip stream cut at %zu of %zu bytes was taken", cut, a);
        free(text);
    }
    inflater_free(z);
}

/* A bomb: 64 MiB of zeros stop at the bound, having inflated no more. */
static void bomb_stops_at_the_bound(void **state)
{
    (void)state;
    size_t n = (size_t)64 << 20;
    unsigned char *zeros = calloc(1, n);
    size_t cap = n / 500 + 1024;
    unsigned char *gz = malloc(cap);
    size_t glen = squeeze(true, zeros, n, gz, cap);
    free(zeros);
    struct inflater *z = inflater_new();
    char *text;
    size_t made;
    assert_int_equal(run(z, CODING_GZIP, gz, glen, 100000, &text, &made), INFLATE_TOO_LARGE);
    assert_true(made <= 100000 + 1); /* the bound, and the byte that shows it is over */
    free(text);
    free(gz);
    inflater_free(z);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(codings),
        cmocka_unit_test(decoded_and_bounded),
        cmocka_unit_test(members_garbage_and_cuts),
        cmocka_unit_test(bomb_stops_at_the_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
