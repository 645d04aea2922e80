/* log.c - one line per event on stderr: "2026-11-24T10:00:00.123Z INFO  w0 message",
 * or with [log] format = json one object a line,
 * {"time":"2026-11-24T10:00:00.123Z","level":"info","worker":"w0","msg":"message"},
 * each line handed to the kernel by a single write(2) so that lines from
 * several threads never interleave. */
#include "bridge/base/log.h"

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
#define LOG_JSON_TAIL 2       /* "}\n" closing a JSON line */
#define LOG_FIELD_STR_MAX 192 /* escaped bytes of one string field's value */
#define LOG_FIELD_NUM_MAX 24  /* bytes of one numeric field's value */
#define LOG_FIELD_MAX 16      /* fields of one line */

/* Lowest level written. Set by main before the threads start and read on
 * every call: a relaxed atomic keeps a later change (none today) race-free. */
static atomic_int log_min = LOG_INFO;
/* enum log_format; set by main before the threads start, like log_min. */
static atomic_int log_fmt = LOG_FORMAT_TEXT;

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

void log_set_format(enum log_format format)
{
    atomic_store_explicit(&log_fmt, (int)format, memory_order_relaxed);
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

/* Milliseconds of now, with log_stamp holding its "YYYY-MM-DDTHH:MM:SS". */
static long stamp_now(void)
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
    return ts.tv_nsec / 1000000L;
}

/* snprintf's count made a length within a buffer of LEN. */
static size_t clamp(int n, size_t len)
{
    if (n < 0)
        return 0;
    return (size_t)n < len ? (size_t)n : len - 1;
}

/* "2026-11-24T10:00:00.123Z LEVEL thread " into buf; returns its length. */
static size_t format_prefix(char *buf, size_t len, enum log_level level)
{
    long ms = stamp_now();
    return clamp(
        snprintf(buf, len, "%s.%03ldZ %s %s ", log_stamp, ms, level_name(level), log_thread), len);
}

/* The end of an escaped text of POS bytes in OUT (ROOM bytes): when it was
 * TRUNCATED, "..." after it, or after SOFT (the last cut that leaves room
 * for it) when there is no room at POS. Returns the bytes written. */
static size_t end_cut(char *out, size_t room, size_t pos, size_t soft, bool truncated)
{
    const size_t ell = sizeof LOG_ELLIPSIS - 1;
    if (truncated && room >= ell) {
        if (pos + ell > room)
            pos = soft;
        memcpy(out + pos, LOG_ELLIPSIS, ell);
        pos += ell;
    }
    return pos;
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
    return end_cut(out, room, pos, soft, truncated);
}

/* Bytes of the UTF-8 character starting at P (1..4), or 0 if P does not
 * start a valid one (overlong forms, surrogates and code points above
 * U+10FFFF are invalid, as in RFC 3629). */
static size_t utf8_len(const unsigned char *p)
{
    unsigned char c = p[0];
    if (c < 0x80)
        return 1;
    unsigned char lo = 0x80, hi = 0xbf;
    size_t n;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong */
        else if (c == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0)
            lo = 0x90; /* overlong */
        else if (c == 0xf4)
            hi = 0x8f; /* above U+10FFFF */
    } else {
        return 0;
    }
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    return n;
}

size_t log_json_escape(char *out, size_t room, const char *s, bool truncated)
{
    static const char hex[] = "0123456789abcdef";
    const size_t ell = sizeof LOG_ELLIPSIS - 1;
    size_t pos = 0;
    size_t soft = 0; /* last cut point that leaves room for the ellipsis */
    const unsigned char *p = (const unsigned char *)s;
    while (*p != '\0') {
        char unit[6];
        size_t ulen = 0;
        size_t used = 1; /* input bytes */
        unsigned char c = *p;
        if (c == '"' || c == '\\') {
            unit[ulen++] = '\\';
            unit[ulen++] = (char)c;
        } else if (c == '\n' || c == '\r' || c == '\t') {
            unit[ulen++] = '\\';
            unit[ulen++] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
        } else if (c < 0x20) {
            memcpy(unit, "\\u00", 4);
            unit[4] = hex[c >> 4];
            unit[5] = hex[c & 0xf];
            ulen = 6;
        } else if (c < 0x80) {
            unit[ulen++] = (char)c;
        } else if ((used = utf8_len(p)) > 0) {
            memcpy(unit, p, used);
            ulen = used;
        } else {
            /* One bad byte, one replacement: the rest may resynchronise. */
            memcpy(unit, "\\ufffd", 6);
            ulen = 6;
            used = 1;
        }
        if (pos + ulen > room) {
            truncated = true;
            break;
        }
        memcpy(out + pos, unit, ulen);
        pos += ulen;
        p += used;
        if (pos + ell <= room)
            soft = pos;
    }
    return end_cut(out, room, pos, soft, truncated);
}

/* A JSON line being built: the object is always closed, so every value is
 * written within what is left before LOG_JSON_TAIL. */
struct json_line {
    char buf[LOG_LINE_MAX];
    size_t len;
};

static size_t json_left(const struct json_line *j)
{
    size_t end = sizeof j->buf - LOG_JSON_TAIL;
    return j->len < end ? end - j->len : 0;
}

static void json_raw(struct json_line *j, const char *s)
{
    size_t n = strlen(s);
    if (n > json_left(j))
        n = json_left(j);
    memcpy(j->buf + j->len, s, n);
    j->len += n;
}

/* "KEY":"VALUE" (preceded by a comma unless FIRST), VALUE escaped into at
 * most CAP bytes. Nothing at all if not even an empty value would fit. */
static void json_str(struct json_line *j, bool first, const char *key, const char *value,
                     size_t cap, bool truncated)
{
    size_t head = strlen(key) + 4 + (first ? 0 : 1); /* ,"key": */
    if (json_left(j) < head + 2)
        return;
    if (!first)
        json_raw(j, ",");
    json_raw(j, "\"");
    json_raw(j, key);
    json_raw(j, "\":\"");
    size_t room = json_left(j) - 1; /* the closing quote */
    if (cap < room)
        room = cap;
    j->len += log_json_escape(j->buf + j->len, room, value != NULL ? value : "", truncated);
    json_raw(j, "\"");
}

/* "KEY":NUMBER, NUMBER already formatted (digits, '-', '.'). */
static void json_num(struct json_line *j, const char *key, const char *num)
{
    if (json_left(j) < strlen(key) + 4 + strlen(num))
        return;
    json_raw(j, ",\"");
    json_raw(j, key);
    json_raw(j, "\":");
    json_raw(j, num);
}

/* One call per line; loop only on a signal or a short write (a full disk or
 * a non-blocking stderr), where interleaving can no longer be helped. */
static void write_line(const char *line, size_t len)
{
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(STDERR_FILENO, line + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
}

/* Value of a numeric field as text: an integer, or nanoseconds as
 * milliseconds with 3 decimals. */
static void field_number(const struct log_field *f, char *buf, size_t len)
{
    if (f->type == LOG_FIELD_MS)
        snprintf(buf, len, "%s%lld.%03lld", f->num < 0 ? "-" : "",
                 (long long)(f->num < 0 ? -f->num : f->num) / 1000000,
                 (long long)((f->num < 0 ? -f->num : f->num) / 1000 % 1000));
    else
        snprintf(buf, len, "%lld", (long long)f->num);
}

/* MSG (cut short if TRUNCATED) and FIELDS as one line in the format set. */
static void emit(enum log_level level, const char *msg, bool truncated,
                 const struct log_field *fields, size_t n)
{
    if (atomic_load_explicit(&log_fmt, memory_order_relaxed) == LOG_FORMAT_JSON) {
        struct json_line j;
        j.len = 0;
        long ms = stamp_now();
        char stamp[40];
        snprintf(stamp, sizeof stamp, "%s.%03ldZ", log_stamp, ms);
        json_raw(&j, "{");
        json_str(&j, true, "time", stamp, sizeof stamp, false);
        json_str(&j, false, "level", log_level_name(level), 8, false);
        json_str(&j, false, "worker", log_thread, 4 * LOG_THREAD_LEN, false);
        /* What the fields may need is kept back from the message. */
        size_t keep = 0;
        for (size_t i = 0; i < n; i++)
            keep += strlen(fields[i].key) + 6 +
                    (fields[i].type == LOG_FIELD_STR ? LOG_FIELD_STR_MAX : LOG_FIELD_NUM_MAX);
        size_t left = json_left(&j);
        size_t cap = left > keep + 16 ? left - keep - 16 : 8;
        json_str(&j, false, "msg", msg, cap, truncated);
        for (size_t i = 0; i < n; i++) {
            const struct log_field *f = &fields[i];
            if (f->type == LOG_FIELD_STR) {
                json_str(&j, false, f->key, f->str, LOG_FIELD_STR_MAX, false);
            } else {
                char num[LOG_FIELD_NUM_MAX];
                field_number(f, num, sizeof num);
                json_num(&j, f->key, num);
            }
        }
        j.buf[j.len++] = '}';
        j.buf[j.len++] = '\n';
        write_line(j.buf, j.len);
        return;
    }
    char line[LOG_LINE_MAX];
    size_t len = format_prefix(line, sizeof line, level);
    len += escape_message(line + len, sizeof line - 1 - len, msg, truncated);
    line[len++] = '\n';
    write_line(line, len);
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
    emit(level, msg, (size_t)n >= sizeof msg, NULL, 0);
    errno = saved_errno;
}

/* A text field's value as written after "key=": quoted, with '"' and '\\'
 * escaped, when a reader splitting on spaces and '=' would misread it. */
static size_t text_value(char *out, size_t room, const char *v)
{
    if (v == NULL)
        v = "";
    bool quote = v[0] == '\0' || strpbrk(v, " \"=\\") != NULL;
    if (!quote)
        return clamp(snprintf(out, room, "%s", v), room);
    size_t pos = 0;
    if (pos + 1 < room)
        out[pos++] = '"';
    for (; *v != '\0' && pos + 3 < room; v++) {
        if (*v == '"' || *v == '\\')
            out[pos++] = '\\';
        out[pos++] = *v;
    }
    if (pos + 1 < room)
        out[pos++] = '"';
    out[pos] = '\0';
    return pos;
}

void log_record(enum log_level level, const char *msg, const struct log_field *fields, size_t n)
{
    int saved_errno = errno;
    if (n > LOG_FIELD_MAX)
        n = LOG_FIELD_MAX;
    if (atomic_load_explicit(&log_fmt, memory_order_relaxed) == LOG_FORMAT_JSON) {
        emit(level, msg, false, fields, n);
        errno = saved_errno;
        return;
    }
    char text[LOG_LINE_MAX];
    size_t len = clamp(snprintf(text, sizeof text, "%s", msg), sizeof text);
    for (size_t i = 0; i < n && len + 2 < sizeof text; i++) {
        const struct log_field *f = &fields[i];
        len += clamp(snprintf(text + len, sizeof text - len, " %s=", f->key), sizeof text - len);
        if (f->type == LOG_FIELD_STR) {
            len += text_value(text + len, sizeof text - len, f->str);
        } else {
            char num[LOG_FIELD_NUM_MAX];
            field_number(f, num, sizeof num);
            len += clamp(snprintf(text + len, sizeof text - len, "%s", num), sizeof text - len);
        }
    }
    emit(level, text, len + 2 >= sizeof text, NULL, 0);
    errno = saved_errno;
}

const char *log_level_name(enum log_level level)
{
    switch (level) {
    case LOG_DEBUG:
        return "debug";
    case LOG_INFO:
        return "info";
    case LOG_WARN:
        return "warn";
    case LOG_ERROR:
        return "error";
    }
    return "?";
}

const char *log_format_name(enum log_format format)
{
    return format == LOG_FORMAT_JSON ? "json" : "text";
}
