/* seed.h - random bytes for keys and seeds, never blocking: the kernel's
 * pool through getrandom(), or, where that fails (no entropy yet at early
 * boot, a seccomp filter), a guessable fallback that still differs across
 * processes, threads and objects. */
#ifndef BRIDGE_SEED_H
#define BRIDGE_SEED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* LEN bytes from getrandom() without blocking; false if it cannot give them. */
bool seed_random(void *buf, size_t len) __attribute__((warn_unused_result));

/* LEN bytes from getrandom(), else mixed from the time, the pid and SALT
 * (the address of the object being seeded). Always fills BUF. */
void seed_fill(void *buf, size_t len, const void *salt);

/* One step of splitmix64: a good 64-bit mix of a counter state. */
uint64_t seed_mix(uint64_t *state);

#endif
