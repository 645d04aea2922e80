/* reqid.c - request ids: client-supplied ones checked, others generated as
 * ULIDs (48-bit unix milliseconds + 80 random bits, Crockford base32).
 *
 * Random part: byte 0 is the worker index (mod 256), bytes 1..9 are random,
 * drawn afresh from getrandom() at each new millisecond; within one
 * millisecond (or when the clock goes back) bytes 1..9 count up as one
 * big-endian integer and the time part stays at the last millisecond. So ids
 * of one generator sort in generation order, and two workers never collide
 * (their byte 0 differs). Bit 7 of byte 1 is cleared on each draw: 2^71 ids
 * fit in a millisecond before the counter could carry; if it ever did, the
 * time part moves one millisecond ahead, which keeps order and uniqueness. */
#include "http/reqid.h"

#include "bridge/base/seed.h"

#include <time.h>

#define REQID_TIME_CHARS 10                    /* 50 bits, the top 2 zero */
#define REQID_MS_MAX ((UINT64_C(1) << 48) - 1) /* year 10889 */
#define REQID_RAND_LEN 10                      /* bytes of struct reqid_gen.rand */

_Static_assert(sizeof(((struct reqid_gen *)0)->rand) == REQID_RAND_LEN, "80 random bits");

static const char reqid_alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

void reqid_gen_init(struct reqid_gen *g, unsigned worker)
{
    g->last_ms = 0;
    seed_fill(g->rand, REQID_RAND_LEN, g);
    g->rand[0] = (uint8_t)worker;
    g->rand[1] &= 0x7f;
}

/* Count bytes 1..9 up by one; true when the count wrapped to zero. */
static bool increment(struct reqid_gen *g)
{
    for (size_t i = REQID_RAND_LEN - 1; i >= 1; i--)
        if (++g->rand[i] != 0)
            return false;
    return true;
}

/* Five bits at a time, most significant first. */
static void encode40(const uint8_t b[5], char out[8])
{
    uint64_t v = 0;
    for (int i = 0; i < 5; i++)
        v = v << 8 | b[i];
    for (int i = 7; i >= 0; i--) {
        out[i] = reqid_alphabet[v & 31];
        v >>= 5;
    }
}

void reqid_next(struct reqid_gen *g, uint64_t now_ms, char out[REQID_GEN_LEN + 1])
{
    if (now_ms > REQID_MS_MAX)
        now_ms = REQID_MS_MAX;
    if (now_ms > g->last_ms) {
        g->last_ms = now_ms;
        /* One syscall per millisecond at most; if it fails, counting on
         * from the previous value is still unique and ordered. */
        if (seed_random(g->rand + 1, REQID_RAND_LEN - 1))
            g->rand[1] &= 0x7f;
        else
            (void)increment(g);
    } else if (increment(g) && g->last_ms < REQID_MS_MAX) {
        g->last_ms++;
    }

    uint64_t t = g->last_ms;
    for (int i = REQID_TIME_CHARS - 1; i >= 0; i--) {
        out[i] = reqid_alphabet[t & 31];
        t >>= 5;
    }
    encode40(g->rand, out + REQID_TIME_CHARS);
    encode40(g->rand + 5, out + REQID_TIME_CHARS + 8);
    out[REQID_GEN_LEN] = '\0';
}

bool reqid_valid(const char *id, size_t len)
{
    if (id == NULL || len == 0 || len > REQID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)id[i];
        if (c < 0x21 || c > 0x7e)
            return false;
    }
    return true;
}
