/* errbuf.h - the one way to fail with a reason in a caller's buffer: a
 * function that returns 0 / -1 and writes why into (buf, len) ends with
 * `return errf(buf, len, "...", ...);` rather than an snprintf and a
 * `return -1` of its own. A leaf: includes nothing of ours. */
#ifndef BRIDGE_ERRBUF_H
#define BRIDGE_ERRBUF_H

#include <stddef.h>

/* Format the reason into BUF (LEN bytes, cut and NUL-terminated as
 * snprintf does; nothing written when LEN is 0) and return -1. */
int errf(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
