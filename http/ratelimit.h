/* ratelimit.h - a route's token buckets ([route] rate, burst, rate_by):
 * one for the route, or one per client address or per bearer token, shared
 * by every worker (a client's requests may land on any of them). Memory is
 * bounded by a count of keys: past it the key used least recently goes (a
 * key that comes back starts with a full bucket). Inside http/. */
#ifndef BRIDGE_HTTP_RATELIMIT_H
#define BRIDGE_HTTP_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

struct ratelimit;

/* RATE tokens a second (> 0), at most BURST (>= 1) at once, for at most
 * MAX_KEYS keys (>= 1). NULL when out of memory. */
struct ratelimit *ratelimit_new(double rate, double burst, size_t max_keys)
    __attribute__((warn_unused_result));
void ratelimit_free(struct ratelimit *rl);

/* Take a token of KEY's bucket (LEN bytes; LEN 0: the one bucket of the
 * route) at NOW_US (a monotonic clock): 0 when there was one, else the
 * whole seconds until there is (at least 1: a Retry-After). */
unsigned ratelimit_take(struct ratelimit *rl, const void *key, size_t len, uint64_t now_us);

/* Give back the token a request took that was refused after all (a 503
 * decided after the rate): KEY's bucket gets it back, capped at the burst. */
void ratelimit_refund(struct ratelimit *rl, const void *key, size_t len);

/* Keys held now (a gauge for tests and /metrics). */
size_t ratelimit_keys(struct ratelimit *rl);

#endif
