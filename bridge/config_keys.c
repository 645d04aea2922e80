/* config_keys.c - the key tables: every key of every section with its type,
 * bounds and default (the man page describes each: tests/lint.sh checks),
 * the names of the enum keys, and setting one key by its index, refusing a
 * key its source already gave. */
#include "bridge/config_int.h"

#include <strings.h>

/* The enums' names as their *_name() functions spell them (bridge/base/log.c,
 * amqp/uri.c), indexed by value. */
static const char *const route_mode_names[] = {[ROUTE_PUBLISH] = "publish", [ROUTE_RPC] = "rpc"};
static const char *const queue_type_names[] = {
    [QUEUE_CLASSIC] = "classic", [QUEUE_QUORUM] = "quorum"};
static const char *const log_level_names[] = {
    [LOG_DEBUG] = "debug", [LOG_INFO] = "info", [LOG_WARN] = "warn", [LOG_ERROR] = "error"};
static const char *const properties_names[] = {
    [PROPERTIES_ALL] = "all", [PROPERTIES_MINIMAL] = "minimal"};
static const char *const trace_names[] = {
    [TRACE_START] = "start", [TRACE_PASS] = "pass", [TRACE_OFF] = "off"};
static const char *const declare_names[] = {
    [DECLARE_YES] = "yes", [DECLARE_NO] = "no", [DECLARE_PASSIVE] = "passive"};
static const char *const client_auth_names[] = {[HTTP_CLIENT_AUTH_NONE] = "none",
                                                [HTTP_CLIENT_AUTH_OPTIONAL] = "optional",
                                                [HTTP_CLIENT_AUTH_REQUIRED] = "required"};
static const char *const rate_by_names[] = {
    [HTTP_RATE_ROUTE] = "route", [HTTP_RATE_CLIENT] = "client", [HTTP_RATE_TOKEN] = "token"};
static const char *const log_format_names[] = {
    [LOG_FORMAT_TEXT] = "text", [LOG_FORMAT_JSON] = "json"};

#define N_OF(a) (sizeof(a) / sizeof(a)[0])
static const struct key_enum route_mode_enum = {"mode", route_mode_names, N_OF(route_mode_names)};
static const struct key_enum queue_type_enum = {"queue type", queue_type_names,
                                                N_OF(queue_type_names)};
static const struct key_enum properties_enum = {"property set", properties_names,
                                                N_OF(properties_names)};
static const struct key_enum trace_enum = {"trace mode", trace_names, N_OF(trace_names)};
static const struct key_enum declare_enum = {"declare mode", declare_names, N_OF(declare_names)};
static const struct key_enum client_auth_enum = {"client certificate mode", client_auth_names,
                                                 N_OF(client_auth_names)};
static const struct key_enum rate_by_enum = {"rate key", rate_by_names, N_OF(rate_by_names)};
static const struct key_enum log_level_enum = {"level", log_level_names, N_OF(log_level_names)};
static const struct key_enum log_format_enum = {"log format", log_format_names,
                                                N_OF(log_format_names)};

/* set_value stores the index through an int. */
_Static_assert(sizeof(enum route_mode) == sizeof(int) && sizeof(enum queue_type) == sizeof(int) &&
                   sizeof(enum log_level) == sizeof(int) &&
                   sizeof(enum log_format) == sizeof(int) &&
                   sizeof(enum route_properties) == sizeof(int) &&
                   sizeof(enum route_trace) == sizeof(int) &&
                   sizeof(enum queue_declare) == sizeof(int) &&
                   sizeof(enum http_client_auth) == sizeof(int) &&
                   sizeof(enum http_rate_by) == sizeof(int),
               "an enum key is not int-sized");

#define CFG(f) offsetof(struct config, f)
#define RT(f) offsetof(struct config_route, f)

static const struct key_def http_keys[HK_COUNT] = {
    [HK_LISTEN] = {"listen", KEY_LISTEN, 0, 0, 0, "127.0.0.1:8080", NULL},
    [HK_WORKERS] = {"workers", KEY_INT, CFG(http.workers), 0, MAX_WORKERS, "0", NULL},
    [HK_MAX_BODY] = {"max_body", KEY_SIZE, CFG(http.max_body), 1, GIB, "1MiB", NULL},
    [HK_TIMEOUT] = {"timeout", KEY_DURATION, CFG(http.timeout_ms), 100, HOUR_MS, "30s", NULL},
    [HK_PONG_PATH] = {"pong_path", KEY_PATH, CFG(http.pong_path), 0, 0, "/pong", NULL},
    [HK_TLS_CERT] = {"tls_cert", KEY_FILE, CFG(http.tls_cert), 0, 0, "", NULL},
    [HK_TLS_KEY] = {"tls_key", KEY_FILE, CFG(http.tls_key), 0, 0, "", NULL},
    [HK_AUTH_TOKEN_FILE] = {"auth_token_file", KEY_FILE, CFG(http.auth_token_file), 0, 0, "", NULL},
    [HK_METRICS_AUTH] = {"metrics_auth", KEY_BOOL, CFG(http.metrics_auth), 0, 0, "no", NULL},
    /* 16384: above the 10,000 idle keep-alive clients the hostile suite
     * holds, below the 65536 descriptors containers and systemd units
     * commonly allow (start-up warns when the limit leaves less). */
    [HK_MAX_CONNECTIONS] = {"max_connections", KEY_COUNT, CFG(http.max_connections), 1, 1000000,
                            "16384", NULL},
    [HK_MAX_PENDING_BYTES] = {"max_pending_bytes", KEY_SIZE, CFG(http.max_pending_bytes), 1,
                              64 * GIB, "256MiB", NULL},
    [HK_TLS_CLIENT_CA] = {"tls_client_ca", KEY_FILE, CFG(http.tls_client_ca), 0, 0, "", NULL},
    [HK_TLS_CLIENT_AUTH] = {"tls_client_auth", KEY_ENUM, CFG(http.tls_client_auth), 0, 0, "none",
                            &client_auth_enum},
};

static const struct key_def amqp_keys[AK_COUNT] = {
    [AK_URI] = {"uri", KEY_URIS, 0, 0, 0, "amqp://guest:guest@127.0.0.1:5672/%2f", NULL},
    [AK_HEARTBEAT] = {"heartbeat", KEY_DURATION, CFG(amqp.heartbeat_ms), 0, HOUR_MS, "30s", NULL},
    [AK_CONFIRM] = {"confirm", KEY_BOOL, CFG(amqp.confirm), 0, 0, "yes", NULL},
    [AK_MAX_INFLIGHT] = {"max_inflight", KEY_COUNT, CFG(amqp.max_inflight), 1, 1000000, "10000",
                         NULL},
    [AK_TLS_CA] = {"tls_ca", KEY_FILE, CFG(amqp.tls_ca), 0, 0, "", NULL},
    [AK_TLS_CERT] = {"tls_cert", KEY_FILE, CFG(amqp.tls_cert), 0, 0, "", NULL},
    [AK_TLS_KEY] = {"tls_key", KEY_FILE, CFG(amqp.tls_key), 0, 0, "", NULL},
    [AK_TLS_VERIFY] = {"tls_verify", KEY_BOOL, CFG(amqp.tls_verify), 0, 0, "yes", NULL},
};

static const struct key_def log_keys[LK_COUNT] = {
    [LK_LEVEL] = {"level", KEY_ENUM, CFG(log_level), 0, 0, "info", &log_level_enum},
    [LK_FORMAT] = {"format", KEY_ENUM, CFG(log_format), 0, 0, "text", &log_format_enum},
    [LK_ACCESS_LOG] = {"access_log", KEY_BOOL, CFG(http.access_log), 0, 0, "no", NULL},
};

static const struct key_def spool_keys[SK_COUNT] = {
    [SK_DIR] = {"dir", KEY_STRING, CFG(spool_dir), 0, 0, "", NULL},
    [SK_MAX_SIZE] = {"max_size", KEY_SIZE, CFG(spool_max_size), 1024 * 1024, 1024 * GIB, "1024MiB",
                     NULL},
};

static const struct key_def route_keys[RK_COUNT] = {
    [RK_PATH] = {"path", KEY_PATH, RT(path), 0, 0, NULL, NULL},
    [RK_MODE] = {"mode", KEY_ENUM, RT(mode), 0, 0, "publish", &route_mode_enum},
    [RK_EXCHANGE] = {"exchange", KEY_AMQP_NAME, RT(exchange), 0, 0, "", NULL},
    [RK_ROUTING_KEY] = {"routing_key", KEY_AMQP_NAME, RT(routing_key), 0, 0, NULL, NULL},
    [RK_QUEUE] = {"queue", KEY_QUEUE, RT(queue), 0, 0, "", NULL},
    [RK_QUEUE_TYPE] = {"queue_type", KEY_ENUM, RT(queue_type), 0, 0, "classic", &queue_type_enum},
    [RK_PERSISTENT] = {"persistent", KEY_BOOL, RT(persistent), 0, 0, "yes", NULL},
    [RK_SCHEMA] = {"schema", KEY_STRING, RT(schema), 0, 0, "", NULL},
    [RK_ROOT] = {"root", KEY_LOCAL_NAME, RT(root), 0, 0, "", NULL},
    [RK_TIMEOUT] = {"timeout", KEY_DURATION, RT(timeout_ms), 1, HOUR_MS, "5s", NULL},
    [RK_AUTH_TOKEN_FILE] = {"auth_token_file", KEY_FILE, RT(auth_token_file), 0, 0, "", NULL},
    [RK_MAX_INFLIGHT] = {"max_inflight", KEY_COUNT, RT(max_inflight), 0, 1000000, "0", NULL},
    [RK_PROPERTIES] = {"properties", KEY_ENUM, RT(properties), 0, 0, "all", &properties_enum},
    [RK_EXCHANGES] = {"exchanges", KEY_STRING, RT(exchanges), 0, 0, "", NULL},
    [RK_BINDING_KEY] = {"binding_key", KEY_AMQP_NAME, RT(binding_key), 0, 0, "", NULL},
    [RK_PRIORITY] = {"priority", KEY_STRING, RT(priority), 0, 0, "", NULL},
    [RK_PRIORITY_MAX] = {"priority_max", KEY_INT, RT(priority_max), 0, 255, "9", NULL},
    [RK_EXPIRATION] = {"expiration", KEY_DURATION, RT(expiration_ms), 0, 365 * 24 * HOUR_MS, "0",
                       NULL},
    [RK_HEADERS] = {"headers", KEY_STRING, RT(headers), 0, 0, "", NULL},
    [RK_CONTENT_TYPE] = {"content_type", KEY_STRING, RT(content_type), 0, 0, "", NULL},
    [RK_TRACE] = {"trace", KEY_ENUM, RT(trace), 0, 0, "start", &trace_enum},
    [RK_DECLARE] = {"declare", KEY_ENUM, RT(declare), 0, 0, "yes", &declare_enum},
    [RK_DEAD_LETTER_EXCHANGE] = {"dead_letter_exchange", KEY_AMQP_NAME, RT(dead_letter_exchange), 0,
                                 0, "", NULL},
    [RK_DEAD_LETTER_ROUTING_KEY] = {"dead_letter_routing_key", KEY_AMQP_NAME,
                                    RT(dead_letter_routing_key), 0, 0, "", NULL},
    [RK_MAX_LENGTH] = {"max_length", KEY_COUNT, RT(max_length), 0, INT32_MAX, "0", NULL},
    [RK_MAX_LENGTH_BYTES] = {"max_length_bytes", KEY_SIZE, RT(max_length_bytes), 0, 1024 * GIB, "0",
                             NULL},
    [RK_OVERFLOW] = {"overflow", KEY_STRING, RT(overflow), 0, 0, "", NULL},
    [RK_MESSAGE_TTL] = {"message_ttl", KEY_DURATION, RT(message_ttl_ms), 0, 365 * 24 * HOUR_MS, "0",
                        NULL},
    [RK_MAX_PRIORITY] = {"queue_max_priority", KEY_INT, RT(max_priority), 0, 255, "0", NULL},
    [RK_ENCODINGS] = {"encodings", KEY_STRING, RT(encodings), 0, 0, "", NULL},
    [RK_KEEP_ENCODING] = {"keep_encoding", KEY_BOOL, RT(keep_encoding), 0, 0, "no", NULL},
    [RK_CLIENT_SUBJECTS] = {"client_subjects", KEY_STRING, RT(client_subjects), 0, 0, "", NULL},
    [RK_RATE] = {"rate", KEY_STRING, RT(rate), 0, 0, "", NULL},
    [RK_BURST] = {"burst", KEY_COUNT, RT(burst), 0, 1000000, "0", NULL},
    [RK_RATE_BY] = {"rate_by", KEY_ENUM, RT(rate_by), 0, 0, "route", &rate_by_enum},
    [RK_RATE_KEYS] = {"rate_keys", KEY_COUNT, RT(rate_keys), 1, 1000000, "10000", NULL},
    [RK_DEDUPE] = {"dedupe", KEY_DURATION, RT(dedupe_ms), 0, 24 * HOUR_MS, "0", NULL},
    [RK_DEDUPE_IDS] = {"dedupe_ids", KEY_COUNT, RT(dedupe_ids), 1, 10000000, "100000", NULL},
    [RK_SPOOL] = {"spool", KEY_BOOL, RT(spool), 0, 0, "no", NULL},
};

const struct section_def config_sections[SEC_COUNT] = {
    [SEC_HTTP] = {"http", "HTTP_", http_keys, HK_COUNT},
    [SEC_AMQP] = {"amqp", "AMQP_", amqp_keys, AK_COUNT},
    [SEC_LOG] = {"log", "LOG_", log_keys, LK_COUNT},
    [SEC_SPOOL] = {"spool", "SPOOL_", spool_keys, SK_COUNT},
    [SEC_ROUTE] = {"route", "ROUTE_", route_keys, RK_COUNT},
};

int config_find_key(enum section_kind kind, const char *name, size_t len)
{
    const struct section_def *s = &config_sections[kind];
    for (size_t i = 0; i < s->n_keys; i++)
        if (strlen(s->keys[i].name) == len && strncasecmp(s->keys[i].name, name, len) == 0)
            return (int)i;
    return -1;
}

/* Set K (index KI of section KIND; route ROUTE) from V, refusing a key the
 * same source already set. */
int config_set_key(struct loader *ld, enum section_kind kind, size_t route, size_t ki,
                   const char *v, const struct origin *o)
{
    const struct key_def *k = &config_sections[kind].keys[ki];
    struct origin *slot = kind == SEC_ROUTE ? &ld->meta[route].keys[ki] : &ld->glob[kind][ki];
    if (o->env == NULL && o->line > 0 && slot->line > 0)
        return config_fail(ld, o, k->name, "given twice (first on line %d)", slot->line);
    if (o->env != NULL && slot->env != NULL)
        return config_fail(ld, o, k->name, "%s is also set by %.*s", k->name,
                           env_name_len(slot->env), slot->env);
    void *base = kind == SEC_ROUTE ? (void *)&ld->cfg->routes[route] : (void *)ld->cfg;
    char why[REASON_LEN];
    if (config_set_value(base, k, v, why, sizeof why) != 0)
        return config_fail(ld, o, k->name, "%s", why);
    *slot = *o;
    return 0;
}
