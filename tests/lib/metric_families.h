/* metric_families.h - every family /metrics exposes, with its TYPE, even
 * before anything was counted: the list the unit test of the exposition
 * (tests/unit/test_metrics.c) and the black-box one of the running bridge
 * (tests/integration/test_metrics.c) both hold it to. A family added to
 * bridge/base/metrics.c belongs here. */
#ifndef METRIC_FAMILIES_H
#define METRIC_FAMILIES_H

#include <stddef.h>

/* {name, type} */
static const char *const METRIC_FAMILIES[][2] = {
    {"bridge_http_requests_total", "counter"},
    {"bridge_request_duration_seconds", "histogram"},
    {"bridge_request_phase_seconds", "histogram"},
    {"bridge_amqp_published_total", "counter"},
    {"bridge_amqp_confirms_total", "counter"},
    {"bridge_rpc_timeouts_total", "counter"},
    {"bridge_rpc_late_replies_total", "counter"},
    {"bridge_rpc_bad_replies_total", "counter"},
    {"bridge_amqp_late_confirms_total", "counter"},
    {"bridge_inflight", "gauge"},
    {"bridge_http_connections", "gauge"},
    {"bridge_http_connections_refused_total", "counter"},
    {"bridge_pending_bytes", "gauge"},
    {"bridge_pending_bytes_refused_total", "counter"},
    {"bridge_http_inflated_bytes_total", "counter"},
    {"bridge_rate_limited_total", "counter"},
    {"bridge_dedupe_replays_total", "counter"},
    {"bridge_dedupe_ids", "gauge"},
    {"bridge_broker_connected", "gauge"},
    {"bridge_broker_node_info", "gauge"},
    {"bridge_broker_reconnects_total", "counter"},
    {"bridge_config_reloads_total", "counter"},
    {"bridge_config_last_reload_success", "gauge"},
    {"bridge_config_last_reload_timestamp_seconds", "gauge"},
    {"bridge_spool_messages", "gauge"},
    {"bridge_spool_bytes", "gauge"},
    {"bridge_spool_oldest_age_seconds", "gauge"},
    {"bridge_spool_appended_total", "counter"},
    {"bridge_spool_replayed_total", "counter"},
    {"bridge_spool_refused_total", "counter"},
};

#define METRIC_FAMILIES_N (sizeof METRIC_FAMILIES / sizeof METRIC_FAMILIES[0])

#endif
