/* test_broker.c - what the broker connection does without a broker: reading
 * the existing queue's type out of RabbitMQ's 406 text on queue.declare,
 * for the start-up error that names both types. The texts are RabbitMQ
 * 3.10's, as sent for each combination. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "broker.h"

static int existing(const char *text, char *out, size_t outlen)
{
    return broker_existing_queue_type(text, strlen(text), out, outlen);
}

static void test_existing_queue_type(void **state)
{
    (void)state;
    char t[32];
    /* quorum wanted, classic there (declared with x-queue-type). */
    assert_int_equal(existing("PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue "
                              "'q' in vhost '/': received 'quorum' but current is 'classic'",
                              t, sizeof t),
                     0);
    assert_string_equal(t, "classic");
    /* classic wanted, quorum there. */
    assert_int_equal(existing("PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue "
                              "'q' in vhost '/': received 'classic' but current is 'quorum'",
                              t, sizeof t),
                     0);
    assert_string_equal(t, "quorum");
    /* quorum wanted, a classic queue declared without x-queue-type. */
    assert_int_equal(existing("PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue "
                              "'p1' in vhost '/': received the value 'quorum' of type 'longstr' "
                              "but current is none",
                              t, sizeof t),
                     0);
    assert_string_equal(t, "classic");
    /* The existing one named as a typed value. */
    assert_int_equal(existing("PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue "
                              "'p2' in vhost '/': received none but current is the value "
                              "'quorum' of type 'longstr'",
                              t, sizeof t),
                     0);
    assert_string_equal(t, "quorum");
    /* A queue name with quotes does not confuse it: the type follows
     * "current is". */
    assert_int_equal(existing("PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue "
                              "'it''s' in vhost '/': received 'classic' but current is 'stream'",
                              t, sizeof t),
                     0);
    assert_string_equal(t, "stream");
    /* A small buffer: cut, still terminated. */
    char small[4];
    assert_int_equal(existing("inequivalent arg 'x-queue-type' for queue 'q' in vhost '/': "
                              "received 'classic' but current is 'quorum'",
                              small, sizeof small),
                     0);
    assert_string_equal(small, "quo");
}

static void test_not_about_the_type(void **state)
{
    (void)state;
    char t[32] = "untouched";
    /* Another argument differs: no type to name. */
    assert_int_equal(existing("PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q' in "
                              "vhost '/': received 'true' but current is 'false'",
                              t, sizeof t),
                     -1);
    assert_int_equal(existing("PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue "
                              "'q' in vhost '/': received none but current is the value '0' of "
                              "type 'long'",
                              t, sizeof t),
                     -1);
    /* Cut short, or empty. */
    assert_int_equal(existing("inequivalent arg 'x-queue-type' for queue 'q'", t, sizeof t), -1);
    assert_int_equal(existing("inequivalent arg 'x-queue-type': current is '", t, sizeof t), -1);
    assert_int_equal(existing("inequivalent arg 'x-queue-type': current is ''", t, sizeof t), -1);
    assert_int_equal(existing("", t, sizeof t), -1);
    assert_string_equal(t, "untouched");
    /* Not NUL-terminated at LEN: only LEN bytes are read. */
    const char text[] = "inequivalent arg 'x-queue-type': current is 'quorum'";
    assert_int_equal(broker_existing_queue_type(text, sizeof text - 3, t, sizeof t), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_existing_queue_type),
        cmocka_unit_test(test_not_about_the_type),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
