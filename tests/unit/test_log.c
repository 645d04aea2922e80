/* test_log.c - log lines as written to stderr (captured with dup2): format,
 * time, level filter, thread names, escaping, truncation, whole lines from
 * several threads at once. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "log.h"

#define LINE_MAX_BYTES 2048 /* log.c's LOG_LINE_MAX, newline included */
#define LINE_RE                                                                                    \
    "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z "                          \
    "(DEBUG|INFO |WARN |ERROR) [a-z0-9]+ [^\n]*$"
#define PREFIX_LEN 24 /* "2026-11-24T10:00:00.123Z" */

/* Run FN with stderr going to a fresh file; return what it wrote (NUL-ended,
 * caller frees). stderr is back in place before anything is asserted. */
static char *capture(void (*fn)(void))
{
    char path[] = "/tmp/test_log.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    assert_int_equal(fcntl(fd, F_SETFL, O_APPEND), 0);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    fflush(stderr);
    assert_true(dup2(fd, STDERR_FILENO) >= 0);
    fn();
    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);

    off_t size = lseek(fd, 0, SEEK_END);
    assert_true(size >= 0);
    char *out = malloc((size_t)size + 1);
    assert_non_null(out);
    assert_int_equal(pread(fd, out, (size_t)size, 0), size);
    out[size] = '\0';
    close(fd);
    return out;
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s != '\0'; s++)
        n += *s == '\n';
    return n;
}

static void assert_line_format(const char *line)
{
    regex_t re;
    assert_int_equal(regcomp(&re, LINE_RE, REG_EXTENDED | REG_NEWLINE), 0);
    int rc = regexec(&re, line, 0, NULL, 0);
    regfree(&re);
    if (rc != 0)
        fail_msg("bad log line: %s", line);
}

/* The text after "TIME LEVEL thread ". */
static const char *message_of(const char *line)
{
    const char *p = line + PREFIX_LEN + 1 + 5 + 1;
    const char *sp = strchr(p, ' ');
    assert_non_null(sp);
    return sp + 1;
}

static void write_hello(void)
{
    log_set_level(LOG_INFO);
    log_info("hello %d %s", 42, "world");
}

static void test_line_format_and_time(void **state)
{
    (void)state;
    time_t before = time(NULL);
    char *out = capture(write_hello);
    time_t after = time(NULL);
    assert_int_equal(count_lines(out), 1);
    assert_line_format(out);
    assert_string_equal(out + PREFIX_LEN, " INFO  main hello 42 world\n");

    struct tm tm;
    memset(&tm, 0, sizeof tm);
    int ms = -1;
    assert_int_equal(sscanf(out, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ", &tm.tm_year, &tm.tm_mon,
                            &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms),
                     7);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm); /* UTC, as written */
    assert_true(t >= before && t <= after);
    assert_true(ms >= 0 && ms <= 999);
    free(out);
}

static void write_levels(void)
{
    log_set_level(LOG_WARN);
    log_debug("d1");
    log_info("i1");
    log_warn("w1");
    log_error("e1");
    log_set_level(LOG_DEBUG);
    log_debug("d2");
    log_set_level(LOG_INFO);
}

static void test_level_filter(void **state)
{
    (void)state;
    char *out = capture(write_levels);
    assert_int_equal(count_lines(out), 3);
    assert_null(strstr(out, "d1"));
    assert_null(strstr(out, "i1"));
    char *l1 = out;
    char *l2 = strchr(l1, '\n') + 1;
    char *l3 = strchr(l2, '\n') + 1;
    assert_memory_equal(l1 + PREFIX_LEN, " WARN  main w1\n", 15);
    assert_memory_equal(l2 + PREFIX_LEN, " ERROR main e1\n", 15);
    assert_memory_equal(l3 + PREFIX_LEN, " DEBUG main d2\n", 15);
    free(out);

    log_set_level(LOG_WARN);
    assert_false(log_enabled(LOG_DEBUG));
    assert_false(log_enabled(LOG_INFO));
    assert_true(log_enabled(LOG_WARN));
    assert_true(log_enabled(LOG_ERROR));
    log_set_level(LOG_INFO);
    assert_true(log_enabled(LOG_INFO));
}

static void *thread_default_name(void *arg)
{
    (void)arg;
    log_info("from a new thread");
    log_set_thread("w9");
    log_info("renamed");
    return NULL;
}

static void write_threads(void)
{
    log_set_thread("w3");
    log_info("as w3");
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, thread_default_name, NULL), 0);
    pthread_join(t, NULL);
    log_info("still w3"); /* the other thread's name is its own */
    log_set_thread("main");
}

static void test_thread_names(void **state)
{
    (void)state;
    char *out = capture(write_threads);
    assert_int_equal(count_lines(out), 4);
    assert_non_null(strstr(out, " INFO  w3 as w3\n"));
    assert_non_null(strstr(out, " INFO  main from a new thread\n"));
    assert_non_null(strstr(out, " INFO  w9 renamed\n"));
    assert_non_null(strstr(out, " INFO  w3 still w3\n"));
    free(out);
}

static void write_controls(void)
{
    log_info("a\nb\rc\td\x01"
             "e\x7f"
             "f caf\xc3\xa9 back\\slash");
    log_info("%s", "line one\nINFO forged line");
}

static void test_control_chars_escaped(void **state)
{
    (void)state;
    char *out = capture(write_controls);
    assert_int_equal(count_lines(out), 2);
    assert_line_format(out);
    char *second = strchr(out, '\n') + 1;
    second[-1] = '\0'; /* first line alone */
    assert_string_equal(message_of(out), "a\\nb\\rc\\td\\x01e\\x7ff caf\xc3\xa9 back\\slash");
    assert_line_format(second);
    assert_string_equal(message_of(second), "line one\\nINFO forged line\n");
    free(out);
}

static size_t fill_len;   /* message length for write_fill */
static char fill_char[4]; /* one character, up to 3 bytes of UTF-8 */

static void write_fill(void)
{
    size_t unit = strlen(fill_char);
    char *msg = malloc(fill_len * unit + 1);
    assert_non_null(msg);
    for (size_t i = 0; i < fill_len; i++)
        memcpy(msg + i * unit, fill_char, unit);
    msg[fill_len * unit] = '\0';
    log_info("%s", msg);
    free(msg);
}

static char *fill(size_t n, const char *c)
{
    fill_len = n;
    snprintf(fill_char, sizeof fill_char, "%s", c);
    return capture(write_fill);
}

static void test_truncation(void **state)
{
    (void)state;
    /* "TIME INFO  main " is the same length on every line. */
    const size_t prefix = PREFIX_LEN + 1 + 5 + 1 + 4 + 1;
    const size_t room = LINE_MAX_BYTES - 1 - prefix;

    char *out = fill(room, "x"); /* exactly fits: no ellipsis */
    assert_int_equal(strlen(out), LINE_MAX_BYTES);
    assert_int_equal(count_lines(out), 1);
    assert_int_equal(out[LINE_MAX_BYTES - 2], 'x');
    free(out);

    out = fill(room + 1, "x");
    assert_int_equal(strlen(out), LINE_MAX_BYTES);
    assert_int_equal(count_lines(out), 1);
    assert_string_equal(out + LINE_MAX_BYTES - 5, "x...\n");
    free(out);

    out = fill(100000, "x"); /* longer than the formatting buffer too */
    assert_int_equal(strlen(out), LINE_MAX_BYTES);
    assert_line_format(out);
    assert_string_equal(out + LINE_MAX_BYTES - 5, "x...\n");
    free(out);

    /* Cut between whole UTF-8 characters, never inside one ("\xe2\x82\xac"
     * is the euro sign, 3 bytes; the room is not a multiple of 3). */
    assert_int_not_equal((room - 3) % 3, 0);
    out = fill(3000, "\xe2\x82\xac");
    assert_int_equal(count_lines(out), 1);
    const char *msg = message_of(out);
    size_t mlen = strlen(msg) - strlen("...\n");
    assert_string_equal(msg + mlen, "...\n");
    assert_int_equal(mlen % 3, 0);
    assert_memory_equal(msg + mlen - 3, "\xe2\x82\xac", 3);
    assert_true(strlen(out) <= LINE_MAX_BYTES);
    assert_true(strlen(out) >= LINE_MAX_BYTES - 2);
    free(out);

    /* Cut between whole escapes: "\n" becomes two bytes, kept in pairs. */
    out = fill(3000, "\n");
    assert_int_equal(count_lines(out), 1);
    msg = message_of(out);
    mlen = strlen(msg) - strlen("...\n");
    assert_string_equal(msg + mlen, "...\n");
    assert_int_equal(mlen % 2, 0);
    assert_memory_equal(msg + mlen - 2, "\\n", 2);
    free(out);
}

#define THREADS 4
#define PER_THREAD 2000

static void *thread_spam(void *arg)
{
    char name[8];
    snprintf(name, sizeof name, "w%d", (int)(intptr_t)arg);
    log_set_thread(name);
    char pad[300];
    memset(pad, 'a' + (int)(intptr_t)arg, sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    for (int i = 0; i < PER_THREAD; i++)
        log_info("%d %s end", i, pad);
    return NULL;
}

static void write_concurrent(void)
{
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, thread_spam, (void *)(intptr_t)i), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
}

static void test_threads_never_interleave(void **state)
{
    (void)state;
    char *out = capture(write_concurrent);
    assert_int_equal(count_lines(out), THREADS * PER_THREAD);
    size_t seen[THREADS] = {0};
    for (char *line = out, *nl; (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
        *nl = '\0';
        assert_line_format(line);
        const char *w = line + PREFIX_LEN + 1 + 5 + 1;
        assert_true(w[0] == 'w' && w[1] >= '0' && w[1] < '0' + THREADS && w[2] == ' ');
        int id = w[1] - '0';
        /* The whole message is the writer's own: its letter only. */
        const char *pad = strchr(w + 3, ' ');
        assert_non_null(pad);
        for (int k = 1; k < 300; k++)
            assert_int_equal(pad[k], 'a' + id);
        assert_string_equal(pad + 300, " end");
        seen[id]++;
    }
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(seen[i], PER_THREAD);
    free(out);
}

/* errno after a written line, a filtered one, one whose write failed */
static int errno_after[3];

static void write_errno(void)
{
    errno = ENOENT;
    log_info("keeps errno");
    errno_after[0] = errno;
    errno = EAGAIN;
    log_debug("filtered");
    errno_after[1] = errno;
    close(STDERR_FILENO); /* write(2) fails with EBADF; capture() puts it back */
    errno = ENOENT;
    log_error("lost");
    errno_after[2] = errno;
}

/* Callers log strerror(errno) and then look at errno again. */
static void test_errno_kept(void **state)
{
    (void)state;
    char *out = capture(write_errno);
    assert_int_equal(count_lines(out), 1);
    assert_int_equal(errno_after[0], ENOENT);
    assert_int_equal(errno_after[1], EAGAIN);
    assert_int_equal(errno_after[2], ENOENT);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_line_format_and_time),
        cmocka_unit_test(test_level_filter),
        cmocka_unit_test(test_thread_names),
        cmocka_unit_test(test_control_chars_escaped),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_threads_never_interleave),
        cmocka_unit_test(test_errno_kept),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
