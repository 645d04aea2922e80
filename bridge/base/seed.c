/* seed.c - random bytes for keys and seeds, never blocking (see seed.h). */
#include "bridge/base/seed.h"

#include <errno.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

bool seed_random(void *buf, size_t len)
{
    unsigned char *b = buf;
    size_t off = 0;
    while (off < len) {
        ssize_t n = getrandom(b + off, len - off, GRND_NONBLOCK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        off += (size_t)n;
    }
    return true;
}

uint64_t seed_mix(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

void seed_fill(void *buf, size_t len, const void *salt)
{
    if (seed_random(buf, len))
        return;
    struct timespec rt, mono;
    clock_gettime(CLOCK_REALTIME, &rt);
    clock_gettime(CLOCK_MONOTONIC, &mono);
    uint64_t s = (uint64_t)rt.tv_sec * UINT64_C(1000000000) + (uint64_t)rt.tv_nsec;
    s ^= (uint64_t)getpid() << 32;
    s ^= (uint64_t)(uintptr_t)salt;
    s = seed_mix(&s) ^ ((uint64_t)mono.tv_sec * UINT64_C(1000000000) + (uint64_t)mono.tv_nsec);
    unsigned char *b = buf;
    for (size_t i = 0; i < len; i += 8) {
        uint64_t r = seed_mix(&s);
        for (size_t j = 0; j < 8 && i + j < len; j++)
            b[i + j] = (unsigned char)(r >> (8 * j));
    }
}
