/* test_log.c - log lines as written to stderr (captured with dup2): format,
 * time, level filter, thread names, escaping, truncation, whole lines from
 * several threads at once; JSON lines and their escaping; lines with fields
 * (the access log) in both formats. */
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

#include "bridge/base/log.h"

/* The wall clock's second as the bridge reads it (clock_gettime, as
 * gettimeofday): time() reads the kernel's coarse clock, which may still
 * say the second before, so a stamp taken between two time() calls could
 * fall a second after them. */
static time_t wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec;
}

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
    time_t before = wall_s();
    char *out = capture(write_hello);
    time_t after = wall_s();
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

/* ---- JSON --------------------------------------------------------- */

/* log_json_escape of S into a buffer of ROOM bytes, NUL-terminated. */
static char *jesc(const char *s, size_t room, bool truncated)
{
    static char buf[4096];
    assert_true(room < sizeof buf);
    memset(buf, '#', sizeof buf);
    size_t n = log_json_escape(buf, room, s, truncated);
    assert_true(n <= room);
    assert_int_equal(buf[room], '#'); /* nothing written past ROOM */
    buf[n] = '\0';
    return buf;
}

static void test_json_escape(void **state)
{
    (void)state;
    assert_string_equal(jesc("plain text", 100, false), "plain text");
    assert_string_equal(jesc("", 100, false), "");
    assert_string_equal(jesc("a\"b\\c", 100, false), "a\\\"b\\\\c");
    assert_string_equal(jesc("\n\r\t\x01\x1f\x7f", 100, false), "\\n\\r\\t\\u0001\\u001f\x7f");
    /* Valid UTF-8 passes whole: 2, 3 and 4 bytes. */
    assert_string_equal(jesc("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 100, false),
                        "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
    /* Invalid UTF-8: one replacement per bad byte. */
    assert_string_equal(jesc("a\xff"
                             "b",
                             100, false),
                        "a\\ufffdb");
    assert_string_equal(jesc("\xc0\xaf", 100, false), "\\ufffd\\ufffd");            /* overlong */
    assert_string_equal(jesc("\xed\xa0\x80", 100, false), "\\ufffd\\ufffd\\ufffd"); /* surrogate */
    assert_string_equal(jesc("\xf4\x90\x80\x80", 100, false),
                        "\\ufffd\\ufffd\\ufffd\\ufffd");                 /* above U+10FFFF */
    assert_string_equal(jesc("\xe2\x82", 100, false), "\\ufffd\\ufffd"); /* cut short */
    assert_string_equal(jesc("\xc3", 100, false), "\\ufffd");

    /* Too long: cut at a unit's boundary, "..." at the end, within ROOM. */
    assert_string_equal(jesc("abcdefghij", 10, false), "abcdefghij");
    assert_string_equal(jesc("abcdefghijk", 10, false), "abcdefg...");
    assert_string_equal(jesc("abc", 10, true), "abc...");
    assert_string_equal(jesc("\"\"\"\"\"\"", 8, false), "\\\"\\\"..."); /* never half an escape */
    assert_string_equal(jesc("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", 7, false),
                        "\xc3\xa9\xc3\xa9..."); /* nor a character */
    assert_string_equal(jesc("\x01\x01", 11, false), "\\u0001...");
    assert_string_equal(jesc("abc", 2, false), "ab"); /* no room for "...": cut short */
}

static void write_json(void)
{
    log_set_level(LOG_INFO);
    log_set_format(LOG_FORMAT_JSON);
    log_info("hello \"%s\"\tthere", "you");
    log_debug("not written");
    log_set_thread("w7");
    log_warn("%s", "back\\slash");
    log_set_thread("main");
    log_set_format(LOG_FORMAT_TEXT);
}

#define JSON_RE                                                                                    \
    "^\\{\"time\":\"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z\","          \
    "\"level\":\"(debug|info|warn|error)\",\"worker\":\"[a-z0-9]+\",\"msg\":\"([^\"\\\\]|\\\\.)*"  \
    "\""                                                                                           \
    "(,\"[a-z_]+\":(\"([^\"\\\\]|\\\\.)*\"|-?[0-9]+(\\.[0-9]+)?))*\\}$"

static void assert_json_line(const char *line)
{
    regex_t re;
    assert_int_equal(regcomp(&re, JSON_RE, REG_EXTENDED | REG_NEWLINE), 0);
    int rc = regexec(&re, line, 0, NULL, 0);
    regfree(&re);
    if (rc != 0)
        fail_msg("bad JSON log line: %s", line);
}

static void test_json_lines(void **state)
{
    (void)state;
    char *out = capture(write_json);
    assert_int_equal(count_lines(out), 2);
    char *second = strchr(out, '\n') + 1;
    assert_json_line(out);
    assert_json_line(second);
    const char *want1 = "\",\"level\":\"info\",\"worker\":\"main\",\"msg\":\"hello "
                        "\\\"you\\\"\\tthere\"}\n";
    assert_memory_equal(out + 9 + PREFIX_LEN, want1, strlen(want1));
    const char *want2 = "\",\"level\":\"warn\",\"worker\":\"w7\",\"msg\":\"back\\\\slash\"}\n";
    assert_string_equal(second + 9 + PREFIX_LEN, want2);
    free(out);
}

static void write_json_long(void)
{
    log_set_format(LOG_FORMAT_JSON);
    char *big = malloc(5000);
    assert_non_null(big);
    memset(big, '"', 4999);
    big[4999] = '\0';
    log_info("%s", big);
    const struct log_field f[] = {
        {"path", LOG_FIELD_STR, big, 0},
        {"status", LOG_FIELD_INT, NULL, 200},
    };
    log_record(LOG_INFO, big, f, 2);
    free(big);
    log_set_format(LOG_FORMAT_TEXT);
}

/* A message far over the line's size still makes one whole, closed object,
 * and the fields after a long message still get their room. */
static void test_json_long_lines(void **state)
{
    (void)state;
    char *out = capture(write_json_long);
    assert_int_equal(count_lines(out), 2);
    char *second = strchr(out, '\n') + 1;
    second[-1] = '\0';
    assert_true(strlen(out) <= LINE_MAX_BYTES - 1);
    assert_true(strlen(out) > LINE_MAX_BYTES - 10); /* filled, not given up */
    assert_json_line(out);
    assert_non_null(strstr(out, "\\\"...\"}"));
    assert_true(strlen(second) <= LINE_MAX_BYTES);
    assert_json_line(second);
    assert_non_null(strstr(second, "...\",\"path\":\"\\\""));
    assert_non_null(strstr(second, "...\",\"status\":200}\n"));
    free(out);
}

static const struct log_field access_fields[] = {
    {"route", LOG_FIELD_STR, "ingest", 0},
    {"method", LOG_FIELD_STR, "POST", 0},
    {"path", LOG_FIELD_STR, "/a b?x=\"1\"", 0},
    {"status", LOG_FIELD_INT, NULL, 202},
    {"bytes", LOG_FIELD_INT, NULL, 0},
    {"duration_ms", LOG_FIELD_MS, NULL, 1234567},
    {"id", LOG_FIELD_STR, "", 0},
    {"client", LOG_FIELD_STR, NULL, 0},
    {"short", LOG_FIELD_MS, NULL, 999},
};

static void write_fields(void)
{
    /* Written whatever the level: the caller asked for it. */
    log_set_level(LOG_ERROR);
    log_record(LOG_INFO, "access", access_fields, sizeof access_fields / sizeof access_fields[0]);
    log_set_format(LOG_FORMAT_JSON);
    log_record(LOG_INFO, "access", access_fields, sizeof access_fields / sizeof access_fields[0]);
    log_set_format(LOG_FORMAT_TEXT);
    log_set_level(LOG_INFO);
}

static void test_fields(void **state)
{
    (void)state;
    char *out = capture(write_fields);
    assert_int_equal(count_lines(out), 2);
    char *second = strchr(out, '\n') + 1;
    second[-1] = '\0';
    assert_line_format(out);
    assert_string_equal(message_of(out),
                        "access route=ingest method=POST path=\"/a b?x=\\\"1\\\"\" status=202 "
                        "bytes=0 duration_ms=1.234 id=\"\" client=\"\" short=0.000");
    assert_json_line(second);
    assert_non_null(strstr(second,
                           "\"msg\":\"access\",\"route\":\"ingest\",\"method\":\"POST\","
                           "\"path\":\"/a b?x=\\\"1\\\"\",\"status\":202,\"bytes\":0,"
                           "\"duration_ms\":1.234,\"id\":\"\",\"client\":\"\",\"short\":0.000}\n"));
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
        cmocka_unit_test(test_json_escape),
        cmocka_unit_test(test_json_lines),
        cmocka_unit_test(test_json_long_lines),
        cmocka_unit_test(test_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
