/* reqid.h - request ids: taken from X-Request-Id when sane, else generated
 * (ULID: 48-bit milliseconds + 80 random bits, Crockford base32, unique and
 * time-ordered across workers and restarts). */
#ifndef BRIDGE_REQID_H
#define BRIDGE_REQID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REQID_MAX 128    /* longest id accepted from a client */
#define REQID_GEN_LEN 26 /* length of a generated id */

/* Per-worker generator state; no locking, one per thread. */
struct reqid_gen {
    uint64_t last_ms; /* millisecond of the previous id */
    uint8_t rand[10]; /* 80-bit random part, incremented within one ms */
};

/* Seed from getrandom(); WORKER is folded into the random part so that two
 * workers never produce the same id in the same millisecond. */
void reqid_gen_init(struct reqid_gen *g, unsigned worker);
/* Write a new id + NUL into out (REQID_GEN_LEN + 1 bytes). NOW_MS: unix ms. */
void reqid_next(struct reqid_gen *g, uint64_t now_ms, char out[REQID_GEN_LEN + 1]);
/* Is a client-supplied id acceptable: 1..REQID_MAX bytes, each 0x21..0x7e. */
bool reqid_valid(const char *id, size_t len);

#endif
