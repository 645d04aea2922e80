/* log.c - one line per event on stderr: "2026-11-24T10:00:00.123Z INFO  w0 message",
 * each line handed to the kernel by a single write(2) so that lines from
 * several threads never interleave. */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Longest line, newline included. Under PIPE_BUF (4096), so a write to a pipe
 * is atomic; to a file or terminal it is one write call all the same. */
#define LOG_LINE_MAX 2048
#define LOG_THREAD_LEN 16 /* thread name, NUL included */
#define LOG_ELLIPSIS "..."

/* Lowest level written. Set by main before the threads start and read on
 * every call: a relaxed atomic keeps a later change (none today) race-free. */
static atomic_int log_min = LOG_INFO;

/* Name of the calling thread in its lines; each thread sets its own. */
static _Thread_local char log_thread[LOG_THREAD_LEN] = "main";

/* Per thread: the second whose "YYYY-MM-DDTHH:MM:SS" is in log_stamp, so
 * gmtime_r runs once per second and thread, not once per line. */
static _Thread_local time_t log_stamp_sec = (time_t)-1;
static _Thread_local char log_stamp[24];

void log_set_level(enum log_level level)
{
    atomic_store_explicit(&log_min, (int)level, memory_order_relaxed);
}

void log_set_thread(const char *name)
{
    snprintf(log_thread, sizeof log_thread, "%s", name != NULL ? name : "?");
}

bool log_enabled(enum log_level level)
{
    return (int)level >= atomic_load_explicit(&log_min, memory_order_relaxed);
}

/* Padded to one width so the messages line up. */
static const char *level_name(enum log_level level)
{
    switch (level) {
    case LOG_DEBUG:
        return "DEBUG";
    case LOG_INFO:
        return "INFO ";
    case LOG_WARN:
        return "WARN ";
    case LOG_ERROR:
        return "ERROR";
    }
    return "?????";
}

/* "2026-11-24T10:00:00.123Z LEVEL thread " into buf; returns its length. */
static size_t format_prefix(char *buf, size_t len, enum log_level level)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != log_stamp_sec) {
        struct tm tm;
        if (gmtime_r(&ts.tv_sec, &tm) == NULL ||
            strftime(log_stamp, sizeof log_stamp, "%Y-%m-%dT%H:%M:%S", &tm) == 0)
            snprintf(log_stamp, sizeof log_stamp, "%lld", (long long)ts.tv_sec);
        log_stamp_sec = ts.tv_sec;
    }
    int n = snprintf(buf, len, "%s.%03ldZ %s %s ", log_stamp, ts.tv_nsec / 1000000L,
                     level_name(level), log_thread);
    if (n < 0)
        return 0;
    return (size_t)n < len ? (size_t)n : len - 1;
}

/* Copy MSG into OUT (room bytes), escaping control characters so that one
 * event stays one line: \n \r \t as such, others (and DEL) as \xHH. Bytes >=
 * 0x80 pass unchanged (UTF-8); backslashes are not doubled: the aim is one
 * line per event, not a reversible encoding. If MSG does not fit or
 * TRUNCATED, it is cut at a character boundary and ends with "...". Returns
 * the bytes written. */
static size_t escape_message(char *out, size_t room, const char *msg, bool truncated)
{
    static const char hex[] = "0123456789abcdef";
    const size_t ell = sizeof LOG_ELLIPSIS - 1;
    size_t pos = 0;
    size_t soft = 0; /* last cut point that leaves room for the ellipsis */
    const unsigned char *p = (const unsigned char *)msg;
    for (; *p != '\0'; p++) {
        char unit[4];
        size_t ulen = 1;
        unsigned char c = *p;
        if (c == '\n' || c == '\r' || c == '\t') {
            unit[0] = '\\';
            unit[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
            ulen = 2;
        } else if (c < 0x20 || c == 0x7f) {
            unit[0] = '\\';
            unit[1] = 'x';
            unit[2] = hex[c >> 4];
            unit[3] = hex[c & 0xf];
            ulen = 4;
        } else {
            unit[0] = (char)c;
        }
        if (pos + ulen > room) {
            truncated = true;
            break;
        }
        memcpy(out + pos, unit, ulen);
        pos += ulen;
        /* Never cut inside a UTF-8 sequence: only before a lead byte. */
        if (pos + ell <= room && (p[1] & 0xc0) != 0x80)
            soft = pos;
    }
    if (truncated && room >= ell) {
        if (pos + ell > room)
            pos = soft;
        memcpy(out + pos, LOG_ELLIPSIS, ell);
        pos += ell;
    }
    return pos;
}

void log_write(enum log_level level, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    int saved_errno = errno; /* callers log strerror(errno) and then look at errno */

    char msg[LOG_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0) {
        snprintf(msg, sizeof msg, "(bad log format: %s)", fmt);
        n = 0;
    }

    char line[LOG_LINE_MAX];
    size_t len = format_prefix(line, sizeof line, level);
    len += escape_message(line + len, sizeof line - 1 - len, msg, (size_t)n >= sizeof msg);
    line[len++] = '\n';

    /* One call per line; loop only on a signal or a short write (a full disk
     * or a non-blocking stderr), where interleaving can no longer be helped. */
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(STDERR_FILENO, line + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    errno = saved_errno;
}
