/* log.h - one line per event on stderr: time, level, worker, message. */
#ifndef BRIDGE_LOG_H
#define BRIDGE_LOG_H

#include "config.h"

void log_set_level(enum log_level level);
/* Name of the calling thread in log lines ("main", "w0", "w1"...). */
void log_set_thread(const char *name);
bool log_enabled(enum log_level level);
void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (log_enabled(LOG_DEBUG))                                                                \
            log_write(LOG_DEBUG, __VA_ARGS__);                                                     \
    } while (0)
#define log_info(...) log_write(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_write(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)

#endif
