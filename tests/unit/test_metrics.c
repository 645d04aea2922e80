/* test_metrics.c - the counters and their Prometheus exposition: every
 * family with HELP and TYPE, sums over the shards, histogram buckets (bounds
 * inclusive, cumulative, +Inf = _count), label escaping, gauges and what the
 * scraper passes in. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bridge/base/metrics.h"
#include "tests/lib/metric_families.h" /* METRIC_FAMILIES */

#define MS 1000000ull /* nanoseconds */

/* Two workers; route 0 "ingest" (publish), route 1 "ask" (rpc). */
static const struct metrics_route test_routes[] = {{"ingest", false}, {"ask", true}};

static struct metrics *test_metrics(void)
{
    return metrics_new(2, test_routes, 2);
}

static char *render(const struct metrics *m, const struct metrics_worker_info *info)
{
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(metrics_render(m, info, &out, &len), 0);
    assert_non_null(out);
    assert_int_equal(strlen(out), len);
    return out;
}

/* TEXT holds LINE as a whole line. */
static bool has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return true;
    return false;
}

static void expect_line(const char *text, const char *line)
{
    if (!has_line(text, line))
        fail_msg("no line '%s' in:\n%s", line, text);
}

static const struct metrics_worker_info up2[2] = {
    {true, "amqp://guest@127.0.0.1:5672/%2f", 0, 0},
    {true, "amqp://guest@127.0.0.1:5672/%2f", 0, 0},
};

static void test_families_when_nothing_happened(void **state)
{
    (void)state;
    struct metrics *m = test_metrics();
    assert_non_null(m);
    char *t = render(m, up2);
    for (size_t i = 0; i < METRIC_FAMILIES_N; i++) {
        char type[128], help[128];
        snprintf(type, sizeof type, "# TYPE %s %s", METRIC_FAMILIES[i][0], METRIC_FAMILIES[i][1]);
        expect_line(t, type);
        snprintf(help, sizeof help, "# HELP %s ", METRIC_FAMILIES[i][0]);
        const char *h = strstr(t, help);
        assert_non_null(h);
        assert_true(h < strstr(t, type)); /* HELP, then TYPE, then samples */
    }
    /* No answer yet: no requests_total sample, but every other series at 0. */
    assert_null(strstr(t, "bridge_http_requests_total{"));
    expect_line(t, "bridge_request_duration_seconds_bucket{route=\"pong\",le=\"0.0005\"} 0");
    expect_line(t, "bridge_request_duration_seconds_bucket{route=\"ask\",le=\"+Inf\"} 0");
    expect_line(t, "bridge_request_duration_seconds_count{route=\"none\"} 0");
    expect_line(t, "bridge_request_duration_seconds_sum{route=\"ingest\"} 0.000000000");
    expect_line(t, "bridge_amqp_published_total{route=\"ingest\"} 0");
    expect_line(t, "bridge_amqp_published_total{route=\"ask\"} 0");
    expect_line(t, "bridge_amqp_confirms_total{result=\"ack\"} 0");
    expect_line(t, "bridge_amqp_confirms_total{result=\"nack\"} 0");
    expect_line(t, "bridge_amqp_confirms_total{result=\"return\"} 0");
    /* Timeouts only for rpc routes. */
    expect_line(t, "bridge_rpc_timeouts_total{route=\"ask\"} 0");
    assert_null(strstr(t, "bridge_rpc_timeouts_total{route=\"ingest\"}"));
    expect_line(t, "bridge_rpc_late_replies_total 0");
    expect_line(t, "bridge_rpc_bad_replies_total{reason=\"status\"} 0");
    expect_line(t, "bridge_rpc_bad_replies_total{reason=\"content_type\"} 0");
    expect_line(t, "bridge_rpc_bad_replies_total{reason=\"too_large\"} 0");
    expect_line(t, "bridge_rpc_bad_replies_total{reason=\"no_memory\"} 0");
    expect_line(t, "bridge_amqp_late_confirms_total 0");
    expect_line(t, "bridge_inflight 0");
    expect_line(t, "bridge_broker_connected{worker=\"0\"} 1");
    expect_line(t, "bridge_broker_connected{worker=\"1\"} 1");
    expect_line(t, "bridge_broker_reconnects_total 0");
    assert_int_equal(t[strlen(t) - 1], '\n');
    free(t);
    metrics_free(m);
}

static void test_sums_over_shards(void **state)
{
    (void)state;
    struct metrics *m = test_metrics();
    struct metrics_shard *s0 = metrics_shard(m, 0), *s1 = metrics_shard(m, 1);
    assert_non_null(s0);
    assert_non_null(s1);
    assert_true(s0 != s1);
    assert_null(metrics_shard(m, 2));
    size_t ingest = METRICS_ROUTE0, ask = METRICS_ROUTE0 + 1;

    metrics_answered(s0, ingest, 202, 300000); /* 0.3 ms */
    metrics_answered(s0, ingest, 202, 300000);
    metrics_answered(s1, ingest, 202, 3 * MS);
    metrics_answered(s1, ingest, 503, 1);
    metrics_answered(s0, METRICS_NONE, 404, 1000);
    metrics_answered(s1, ask, 504, 700 * MS);
    metrics_answered(s1, METRICS_PONG, 42, 1); /* not a status: not counted by code */
    for (int i = 0; i < 3; i++)
        metrics_published(i % 2 ? s1 : s0, ingest);
    metrics_published(s1, ask);
    metrics_confirm(s0, METRICS_ACK);
    metrics_confirm(s1, METRICS_ACK);
    metrics_confirm(s1, METRICS_NACK);
    metrics_confirm(s0, METRICS_RETURN);
    metrics_rpc_timeout(s1, ask);
    metrics_rpc_bad_reply(s0, METRICS_BAD_CONTENT_TYPE);
    metrics_rpc_bad_reply(s1, METRICS_BAD_CONTENT_TYPE);
    metrics_rpc_bad_reply(s1, METRICS_BAD_STATUS);
    metrics_reconnected(s0);
    metrics_reconnected(s1);
    metrics_reconnected(s1);
    metrics_set_inflight(s0, 7);
    metrics_set_inflight(s1, 5);
    metrics_set_inflight(s1, 4); /* a gauge: the last value counts */
    metrics_set_connections(s0, 3);
    metrics_set_connections(s1, 2);
    metrics_set_pending_bytes(s0, 1000);
    metrics_set_pending_bytes(s1, 24);
    metrics_connection_refused(s0);
    metrics_connection_refused(s1);
    metrics_pending_bytes_refused(s1);

    const struct metrics_worker_info info[2] = {
        {false, "amqp://u@h:5672/\"odd\\vhost\nx", 2, 4},
        {true, "", 3, 3},
    };
    char *t = render(m, info);
    expect_line(t, "bridge_http_requests_total{route=\"ingest\",code=\"202\"} 3");
    expect_line(t, "bridge_http_requests_total{route=\"ingest\",code=\"503\"} 1");
    expect_line(t, "bridge_http_requests_total{route=\"none\",code=\"404\"} 1");
    expect_line(t, "bridge_http_requests_total{route=\"ask\",code=\"504\"} 1");
    assert_null(strstr(t, "code=\"42\""));
    /* ingest: 0.3, 0.3, 3 ms and 1 ns. */
    expect_line(t, "bridge_request_duration_seconds_bucket{route=\"ingest\",le=\"0.0005\"} 3");
    expect_line(t, "bridge_request_duration_seconds_bucket{route=\"ingest\",le=\"0.0025\"} 3");
    expect_line(t, "bridge_request_duration_seconds_bucket{route=\"ingest\",le=\"0.005\"} 4");
    expect_line(t, "bridge_request_duration_seconds_bucket{route=\"ingest\",le=\"10\"} 4");
    expect_line(t, "bridge_request_duration_seconds_bucket{route=\"ingest\",le=\"+Inf\"} 4");
    expect_line(t, "bridge_request_duration_seconds_count{route=\"ingest\"} 4");
    expect_line(t, "bridge_request_duration_seconds_sum{route=\"ingest\"} 0.003600001");
    expect_line(t, "bridge_request_duration_seconds_bucket{route=\"ask\",le=\"0.5\"} 0");
    expect_line(t, "bridge_request_duration_seconds_bucket{route=\"ask\",le=\"1\"} 1");
    /* Counted in the histogram even without a valid code. */
    expect_line(t, "bridge_request_duration_seconds_count{route=\"pong\"} 1");
    expect_line(t, "bridge_amqp_published_total{route=\"ingest\"} 3");
    expect_line(t, "bridge_amqp_published_total{route=\"ask\"} 1");
    expect_line(t, "bridge_amqp_confirms_total{result=\"ack\"} 2");
    expect_line(t, "bridge_amqp_confirms_total{result=\"nack\"} 1");
    expect_line(t, "bridge_amqp_confirms_total{result=\"return\"} 1");
    expect_line(t, "bridge_rpc_timeouts_total{route=\"ask\"} 1");
    expect_line(t, "bridge_rpc_late_replies_total 5");
    expect_line(t, "bridge_rpc_bad_replies_total{reason=\"status\"} 1");
    expect_line(t, "bridge_rpc_bad_replies_total{reason=\"content_type\"} 2");
    expect_line(t, "bridge_rpc_bad_replies_total{reason=\"too_large\"} 0");
    expect_line(t, "bridge_amqp_late_confirms_total 7");
    expect_line(t, "bridge_inflight 11");
    expect_line(t, "bridge_http_connections 5");
    expect_line(t, "bridge_http_connections_refused_total 2");
    expect_line(t, "bridge_pending_bytes 1024");
    expect_line(t, "bridge_pending_bytes_refused_total 1");
    expect_line(t, "bridge_broker_connected{worker=\"0\"} 0");
    expect_line(t, "bridge_broker_connected{worker=\"1\"} 1");
    expect_line(t, "bridge_broker_reconnects_total 3");
    /* Backslash, quote and newline escaped; a worker without a node has no
     * info sample. */
    expect_line(t, "bridge_broker_node_info{worker=\"0\",node=\"amqp://u@h:5672/\\\"odd\\\\vhost"
                   "\\nx\"} 1");
    assert_null(strstr(t, "bridge_broker_node_info{worker=\"1\""));
    free(t);
    metrics_free(m);
}

/* A bucket's bound is inclusive (le); past the last one only +Inf counts. */
static void test_bucket_bounds(void **state)
{
    (void)state;
    static const struct {
        uint64_t ns;
        const char *first_le; /* the smallest bucket that counts it */
    } cases[] = {
        {0, "0.0005"},           {500000, "0.0005"},
        {500001, "0.001"},       {1 * MS, "0.001"},
        {2500 * 1000, "0.0025"}, {99 * MS, "0.1"},
        {1000 * MS, "1"},        {1000 * MS + 1, "2.5"},
        {10000 * MS, "10"},      {10000 * MS + 1, "+Inf"},
    };
    static const char *const les[] = {"0.0005", "0.001", "0.0025", "0.005", "0.01",
                                      "0.025",  "0.05",  "0.1",    "0.25",  "0.5",
                                      "1",      "2.5",   "5",      "10",    "+Inf"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct metrics *m = test_metrics();
        metrics_answered(metrics_shard(m, 1), METRICS_HEALTHZ, 200, cases[i].ns);
        char *t = render(m, up2);
        bool reached = false;
        for (size_t b = 0; b < sizeof les / sizeof les[0]; b++) {
            reached = reached || strcmp(les[b], cases[i].first_le) == 0;
            char line[160];
            snprintf(line, sizeof line,
                     "bridge_request_duration_seconds_bucket{route=\"healthz\",le=\"%s\"} %d",
                     les[b], reached ? 1 : 0);
            if (!has_line(t, line))
                fail_msg("%llu ns: no line '%s'", (unsigned long long)cases[i].ns, line);
        }
        free(t);
        metrics_free(m);
    }
}

/* bridge_request_phase_seconds: one histogram per phase, summed over the
 * shards; a phase nothing was spent in still has its samples at 0. */
static void test_phases(void **state)
{
    (void)state;
    struct metrics *m = test_metrics();
    metrics_phase(metrics_shard(m, 0), METRICS_PHASE_CONFIRM, 2 * MS);
    metrics_phase(metrics_shard(m, 1), METRICS_PHASE_CONFIRM, 3 * MS);
    metrics_phase(metrics_shard(m, 1), METRICS_PHASE_CHECK, 100000);
    char *t = render(m, up2);
    static const char *const lines[] = {
        "# TYPE bridge_request_phase_seconds histogram",
        "bridge_request_phase_seconds_bucket{phase=\"confirm\",le=\"0.0025\"} 1",
        "bridge_request_phase_seconds_bucket{phase=\"confirm\",le=\"0.005\"} 2",
        "bridge_request_phase_seconds_sum{phase=\"confirm\"} 0.005000000",
        "bridge_request_phase_seconds_count{phase=\"confirm\"} 2",
        "bridge_request_phase_seconds_bucket{phase=\"check\",le=\"0.0005\"} 1",
        "bridge_request_phase_seconds_sum{phase=\"check\"} 0.000100000",
        "bridge_request_phase_seconds_count{phase=\"room\"} 0",
        "bridge_request_phase_seconds_count{phase=\"reply\"} 0",
    };
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++)
        if (!has_line(t, lines[i]))
            fail_msg("no line '%s'", lines[i]);
    free(t);
    metrics_free(m);
}

static void test_slot_names(void **state)
{
    (void)state;
    struct metrics *m = test_metrics();
    assert_non_null(m);
    const struct metrics_shard *shard = metrics_shard(m, 1);
    assert_string_equal(metrics_slot_name(shard, METRICS_PONG), "pong");
    assert_string_equal(metrics_slot_name(shard, METRICS_HEALTHZ), "healthz");
    assert_string_equal(metrics_slot_name(shard, METRICS_METRICS), "metrics");
    assert_string_equal(metrics_slot_name(shard, METRICS_NONE), "none");
    assert_string_equal(metrics_slot_name(shard, METRICS_ROUTE0), "ingest");
    assert_string_equal(metrics_slot_name(shard, METRICS_ROUTE0 + 1), "ask");
    assert_string_equal(metrics_slot_name(shard, METRICS_ROUTE0 + 2), "none");
    metrics_free(m);
    metrics_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_families_when_nothing_happened),
        cmocka_unit_test(test_sums_over_shards),
        cmocka_unit_test(test_bucket_bounds),
        cmocka_unit_test(test_phases),
        cmocka_unit_test(test_slot_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
