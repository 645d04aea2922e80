/* siphash.c - SipHash-1-3, the keyed hash of the rpc table (pending.c) and
 * of the confirm tracker's message ids (tracker.c). */
#include "bridge/base/siphash.h"

/* ---- SipHash-1-3 (Aumasson & Bernstein): one compression round per 8-byte
 * word, three finalization rounds. Strong enough as a keyed hash for table
 * lookups, where speed matters and the output is never revealed. */

static uint64_t rotl64(uint64_t x, unsigned b)
{
    return (x << b) | (x >> (64 - b));
}

/* Little-endian 64-bit load, whatever the host's order: the same id hashes
 * the same way everywhere (and the known-answer vectors apply). The compiler
 * makes this one load on little-endian hosts. */
static uint64_t load_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

struct sip {
    uint64_t v0, v1, v2, v3; /* internal state */
};

static void sip_round(struct sip *s)
{
    s->v0 += s->v1;
    s->v1 = rotl64(s->v1, 13);
    s->v1 ^= s->v0;
    s->v0 = rotl64(s->v0, 32);
    s->v2 += s->v3;
    s->v3 = rotl64(s->v3, 16);
    s->v3 ^= s->v2;
    s->v0 += s->v3;
    s->v3 = rotl64(s->v3, 21);
    s->v3 ^= s->v0;
    s->v2 += s->v1;
    s->v1 = rotl64(s->v1, 17);
    s->v1 ^= s->v2;
    s->v2 = rotl64(s->v2, 32);
}

uint64_t siphash13(uint64_t k0, uint64_t k1, const void *data, size_t len)
{
    const unsigned char *p = data;
    struct sip s = {
        .v0 = k0 ^ UINT64_C(0x736f6d6570736575), /* "somepseudorandomlygeneratedbytes" */
        .v1 = k1 ^ UINT64_C(0x646f72616e646f6d),
        .v2 = k0 ^ UINT64_C(0x6c7967656e657261),
        .v3 = k1 ^ UINT64_C(0x7465646279746573),
    };
    size_t whole = len - len % 8;
    for (size_t i = 0; i < whole; i += 8) {
        uint64_t m = load_le64(p + i);
        s.v3 ^= m;
        sip_round(&s);
        s.v0 ^= m;
    }
    /* Last block: the 0..7 remaining bytes, and the length in the top byte. */
    uint64_t b = (uint64_t)len << 56;
    for (size_t i = 0; i < len % 8; i++)
        b |= (uint64_t)p[whole + i] << (8 * i);
    s.v3 ^= b;
    sip_round(&s);
    s.v0 ^= b;
    s.v2 ^= 0xff;
    sip_round(&s);
    sip_round(&s);
    sip_round(&s);
    return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}
