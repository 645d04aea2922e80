/* harness_cmocka.h - the harness inside cmocka tests: its failures become
 * cmocka failures, its notes cmocka messages, plus assertions that show the
 * response on failure, and the suite_* fixtures. Include after <cmocka.h>;
 * call harness_use_cmocka() (or suite_use()) once, before any test runs. */
#ifndef HARNESS_CMOCKA_H
#define HARNESS_CMOCKA_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "harness.h"

/* As fail_msg() does it: "ERROR: MSG" on cmocka's error output, then the
 * test fails at FILE:LINE (cmocka longjmps out of it). */
static inline void harness_cmocka_fail(const char *file, int line, const char *msg)
{
    print_error("ERROR: %s\n", msg);
    _fail(file, line);
}

static inline void harness_cmocka_note(const char *msg)
{
    print_message("%s", msg);
}

static inline void harness_use_cmocka(void)
{
    g_harness.fail = harness_cmocka_fail;
    g_harness.note = harness_cmocka_note;
}

/* Run the suite_* fixtures (harness.h) for S with cmocka; call it in main()
 * before cmocka_run_group_tests. */
static inline void suite_use(const struct suite *s)
{
    harness_use_cmocka();
    g_harness.suite = s;
}

/* A suite's main() after its table: TESTS (an array) run as the group
 * NAME with S's fixtures; ONLY_ENV, when not NULL, names a variable whose
 * value (a pattern, * and ? allowed) picks the tests to run. */
#define suite_run(name, s, tests, only_env)                                                        \
    suite_run_n((name), (s), (tests), sizeof(tests) / sizeof((tests)[0]), (only_env))

static inline int suite_run_n(const char *name, const struct suite *s,
                              const struct CMUnitTest *tests, size_t n, const char *only_env)
{
    if (only_env != NULL && getenv(only_env) != NULL)
        cmocka_set_test_filter(getenv(only_env));
    suite_use(s);
    return _cmocka_run_group_tests(name, tests, n, suite_group_setup, suite_group_teardown);
}

/* A test run between suite_setup and suite_teardown. */
#define SUITE_TEST(f) cmocka_unit_test_setup_teardown(f, suite_setup, suite_teardown)

/* The end of every test body: the teardown then prints no logs. */
#define PASS() (g_harness.passed = true)

/* Assertions with the response shown on failure. */
#define assert_resp(rc, r, want)                                                                   \
    do {                                                                                           \
        if ((rc) != 0)                                                                             \
            fail_msg("no whole response (expected %d)", (want));                                   \
        if ((r)->status != (want))                                                                 \
            fail_msg("status %d, expected %d; body: %.300s", (r)->status, (want),                  \
                     (r)->body ? (r)->body : "");                                                  \
    } while (0)

#define assert_has_header(r, name)                                                                 \
    do {                                                                                           \
        if (!resp_header((r), (name)))                                                             \
            fail_msg("response %d has no %s header", (r)->status, (name));                         \
    } while (0)

#define assert_contains(hay, needle)                                                               \
    do {                                                                                           \
        if (!(hay) || !strstr((hay), (needle)))                                                    \
            fail_msg("\"%.400s\" does not contain \"%s\"", (hay) ? (hay) : "(null)", (needle));    \
    } while (0)

#endif
