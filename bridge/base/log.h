/* log.h - one line per event on stderr: time, level, worker, message; as
 * text or as one JSON object a line. */
#ifndef BRIDGE_LOG_H
#define BRIDGE_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* How a log line is written: "TIME LEVEL thread message", or one JSON object. */
enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };

/* "debug", "info", "warn", "error" ("?" for anything else); "text", "json". */
const char *log_level_name(enum log_level level);
const char *log_format_name(enum log_format format);

void log_set_level(enum log_level level);
void log_set_format(enum log_format format);
/* Name of the calling thread in log lines ("main", "w0", "w1"...). */
void log_set_thread(const char *name);
bool log_enabled(enum log_level level);
void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A named value of a structured log line (the access log). */
enum log_field_type {
    LOG_FIELD_STR, /* str */
    LOG_FIELD_INT, /* num */
    LOG_FIELD_MS,  /* num nanoseconds, written as milliseconds with 3 decimals */
};
struct log_field {
    const char *key;          /* a plain word: [a-z_] */
    enum log_field_type type; /* which of str and num holds the value */
    const char *str;          /* LOG_FIELD_STR; NULL is written as "" */
    int64_t num;              /* the other types */
};
/* One line: MSG, then each field; text: " key=value" (a value quoted when
 * it holds a space, '"' or '=', or is empty), json: members of the object.
 * Not filtered by the level: the caller decided (e.g. [log] access_log). */
void log_record(enum log_level level, const char *msg, const struct log_field *fields, size_t n);

/* S as the inside of a JSON string into OUT (ROOM bytes, no NUL added): '"',
 * '\\' and control characters escaped, invalid UTF-8 replaced by \ufffd. If
 * it does not fit, or TRUNCATED, it is cut at a character boundary and ends
 * with "...". Returns the bytes written. Exposed for the tests. */
size_t log_json_escape(char *out, size_t room, const char *s, bool truncated);

#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (log_enabled(LOG_DEBUG))                                                                \
            log_write(LOG_DEBUG, __VA_ARGS__);                                                     \
    } while (0)
#define log_info(...) log_write(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_write(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)

#endif
