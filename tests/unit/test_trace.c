/* test_trace.c - W3C trace context: which traceparent, tracestate and
 * baggage values pass, which are refused, and new traceparents. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "bridge/base/trace.h"

#define TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static void parents(void **state)
{
    (void)state;
    char out[TRACE_PARENT_LEN + 1];
    assert_true(trace_parent_parse(TP, out));
    assert_string_equal(out, TP);
    /* A later version: its first four fields, as version 00. */
    assert_true(
        trace_parent_parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz", out));
    assert_string_equal(out, TP);
    /* Of a later version's flags only sampled is kept. */
    assert_true(
        trace_parent_parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff-zz", out));
    assert_string_equal(out + 52, "-01");
    assert_true(trace_parent_parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-fe", out));
    assert_string_equal(out + 52, "-00");
    static const char *const bad[] = {
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",    /* short */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", /* 00 has no more */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   /* forbidden version */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",   /* zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",   /* zero parent id */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",   /* upper case */
        "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",   /* separator */
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",   /* not hex */
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",  /* later, no '-' */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (trace_parent_parse(bad[i], out))
            fail_msg("accepted '%s'", bad[i]);
}

static void new_parents(void **state)
{
    (void)state;
    struct trace_gen g;
    trace_gen_init(&g);
    char a[TRACE_PARENT_LEN + 1], b[TRACE_PARENT_LEN + 1], check[TRACE_PARENT_LEN + 1];
    trace_parent_new(&g, a);
    trace_parent_new(&g, b);
    assert_int_equal(strlen(a), TRACE_PARENT_LEN);
    assert_true(trace_parent_parse(a, check));
    assert_true(trace_parent_parse(b, check));
    assert_memory_not_equal(a + 3, b + 3, 32);
    assert_memory_equal(a + 52, "-01", 3);
}

static void states(void **state)
{
    (void)state;
    static const char *const good[] = {
        "rojo=00f067aa0ba902b7", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
        "rojo=1 , , congo=2",    "tenant@vendor=x",
        "1tenant@vendor=x",      "",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!trace_state_valid(good[i], strlen(good[i])))
            fail_msg("refused '%s'", good[i]);
    static const char *const bad[] = {
        "Rojo=1",      /* upper case key */
        "rojo",        /* no value */
        "rojo=a=b",    /* '=' in the value */
        "rojo=ok\x01", /* control character */
        "a@b@c=1",     /* two '@' */
        "1abc=v",      /* a simple key starts with a letter */
        "t@1sys=v",    /* so does a system id */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (trace_state_valid(bad[i], strlen(bad[i])))
            fail_msg("accepted '%s'", bad[i]);
    /* 33 members, and 513 bytes: over the bounds. */
    char many[400] = "";
    for (int i = 0; i < 33; i++)
        strcat(many, i == 0 ? "k0=v" : ",k=v");
    assert_false(trace_state_valid(many, strlen(many)));
    char longer[TRACE_STATE_MAX + 2];
    memset(longer, 'a', sizeof longer - 1);
    longer[0] = 'k';
    longer[1] = '=';
    longer[sizeof longer - 1] = '\0';
    assert_false(trace_state_valid(longer, strlen(longer)));
}

static void baggages(void **state)
{
    (void)state;
    static const char *const good[] = {
        "userId=alice",
        "userId=alice,serverNode=DF%2028,isProduction=false",
        "key1=value1;property1;property2, key2 = value2",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!trace_baggage_valid(good[i], strlen(good[i])))
            fail_msg("refused '%s'", good[i]);
    static const char *const bad[] = {"", "novalue", "=x", "k=\"quoted\"", "k=a\nb", "k=1,,"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (trace_baggage_valid(bad[i], strlen(bad[i])))
            fail_msg("accepted '%s'", bad[i]);
    static char big[TRACE_BAGGAGE_MAX + 2];
    memset(big, 'v', sizeof big - 1);
    memcpy(big, "k=", 2);
    assert_false(trace_baggage_valid(big, strlen(big)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parents),
        cmocka_unit_test(new_parents),
        cmocka_unit_test(states),
        cmocka_unit_test(baggages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
