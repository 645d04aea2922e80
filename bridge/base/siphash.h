/* siphash.h - SipHash-1-3 (Aumasson & Bernstein), a keyed 64-bit hash: with
 * a random key per table, ids chosen by clients cannot be made to collide. */
#ifndef BRIDGE_SIPHASH_H
#define BRIDGE_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

/* The hash of LEN bytes at DATA under the key (K0, K1). */
uint64_t siphash13(uint64_t k0, uint64_t k1, const void *data, size_t len);

#endif
