/* config.c - bridge.ini and BRIDGE_* environment overrides into one struct
 * config: inih splits the file into sections and keys, one static table per
 * section gives every key its type, bounds and default, and a last pass
 * checks the rules that span keys. Never prints, never exits. */
#include "bridge/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <unistd.h>

#define MS_PER_S UINT64_C(1000)
#define MS_PER_M UINT64_C(60000)
#define HOUR_MS UINT64_C(3600000)
#define KIB ((size_t)1024)
#define MIB ((size_t)1024 * 1024)
#define GIB ((size_t)1024 * 1024 * 1024)
#define MAX_WORKERS 256
/* inih copies a section name into a 50-byte buffer and silently cuts what
 * does not fit: refuse longer ones rather than merge two routes. */
#define MAX_SECTION_TEXT 48
#define MAX_ROUTE_NAME (MAX_SECTION_TEXT - 6) /* after "route " */
#define AMQP_SHORTSTR_MAX 255                 /* exchange, routing key, queue */
#define MAX_KEYS 16                           /* most keys in one section */
#define REASON_LEN 256
#define ENV_PREFIX "BRIDGE_"

enum key_type {
    KEY_STRING,     /* any text, "" allowed */
    KEY_FILE,       /* "" or a file that must be readable at start-up */
    KEY_PATH,       /* request path: starts with '/', no query */
    KEY_AMQP_NAME,  /* exchange, routing key: an AMQP short string */
    KEY_QUEUE,      /* queue to declare: short string, not amq.* */
    KEY_LOCAL_NAME, /* "" or an XML element's local name */
    KEY_INT,        /* int within [min, max] */
    KEY_COUNT,      /* size_t within [min, max] */
    KEY_SIZE,       /* bytes, KiB, MiB -> size_t within [min, max] */
    KEY_DURATION,   /* ms, s, m -> uint64_t milliseconds within [min, max] */
    KEY_BOOL,       /* bool */
    KEY_ENUM,       /* one of key_def.names -> an enum (int-sized, first value 0) */
    KEY_LISTEN,     /* host:port -> cfg->http.listen_host, cfg->http.listen_port */
    KEY_URIS,       /* amqp:// list -> cfg->amqp.uris, cfg->amqp.n_uris */
};

/* The values of an enum key: name[i] is the C enum's value i, compared
 * without case. The error reads "'x' is not a WHAT (a, b or c)". */
struct key_enum {
    const char *what;        /* the kind of value, for the error */
    const char *const *name; /* indexed by the enum's values 0..n-1 */
    size_t n;                /* values of the enum */
};

struct key_def {
    const char *name;             /* as written in the file, lower case */
    enum key_type type;           /* how the value is parsed and checked */
    size_t offset;                /* field in struct config or struct config_route */
    uint64_t min, max;            /* bounds of numeric types */
    const char *def;              /* default, parsed like a file value; NULL = required */
    const struct key_enum *names; /* KEY_ENUM: the values the key takes */
};

enum section_kind { SEC_HTTP, SEC_AMQP, SEC_LOG, SEC_ROUTE, SEC_COUNT };

/* Indexes of keys the validation pass names. */
enum {
    HK_LISTEN,
    HK_WORKERS,
    HK_MAX_BODY,
    HK_TIMEOUT,
    HK_PONG_PATH,
    HK_TLS_CERT,
    HK_TLS_KEY,
    HK_AUTH_TOKEN_FILE,
    HK_METRICS_AUTH,
    HK_MAX_CONNECTIONS,
    HK_MAX_PENDING_BYTES,
    HK_COUNT
};
enum {
    AK_URI,
    AK_HEARTBEAT,
    AK_CONFIRM,
    AK_MAX_INFLIGHT,
    AK_TLS_CA,
    AK_TLS_CERT,
    AK_TLS_KEY,
    AK_TLS_VERIFY,
    AK_COUNT
};
enum { LK_LEVEL, LK_FORMAT, LK_ACCESS_LOG, LK_COUNT };
enum {
    RK_PATH,
    RK_MODE,
    RK_EXCHANGE,
    RK_ROUTING_KEY,
    RK_QUEUE,
    RK_QUEUE_TYPE,
    RK_PERSISTENT,
    RK_SCHEMA,
    RK_ROOT,
    RK_TIMEOUT,
    RK_AUTH_TOKEN_FILE,
    RK_MAX_INFLIGHT,
    RK_COUNT
};

_Static_assert(HK_COUNT <= MAX_KEYS && AK_COUNT <= MAX_KEYS && LK_COUNT <= MAX_KEYS &&
                   RK_COUNT <= MAX_KEYS,
               "MAX_KEYS too small");

/* The enums' names as their *_name() functions spell them (bridge/base/log.c,
 * amqp/uri.c), indexed by value. */
static const char *const route_mode_names[] = {[ROUTE_PUBLISH] = "publish", [ROUTE_RPC] = "rpc"};
static const char *const queue_type_names[] = {
    [QUEUE_CLASSIC] = "classic", [QUEUE_QUORUM] = "quorum"};
static const char *const log_level_names[] = {
    [LOG_DEBUG] = "debug", [LOG_INFO] = "info", [LOG_WARN] = "warn", [LOG_ERROR] = "error"};
static const char *const log_format_names[] = {
    [LOG_FORMAT_TEXT] = "text", [LOG_FORMAT_JSON] = "json"};

#define N_OF(a) (sizeof(a) / sizeof(a)[0])
static const struct key_enum route_mode_enum = {"mode", route_mode_names, N_OF(route_mode_names)};
static const struct key_enum queue_type_enum = {"queue type", queue_type_names,
                                                N_OF(queue_type_names)};
static const struct key_enum log_level_enum = {"level", log_level_names, N_OF(log_level_names)};
static const struct key_enum log_format_enum = {"log format", log_format_names,
                                                N_OF(log_format_names)};

/* set_value stores the index through an int. */
_Static_assert(sizeof(enum route_mode) == sizeof(int) && sizeof(enum queue_type) == sizeof(int) &&
                   sizeof(enum log_level) == sizeof(int) && sizeof(enum log_format) == sizeof(int),
               "an enum key is not int-sized");

#define CFG(f) offsetof(struct config, f)
#define RT(f) offsetof(struct config_route, f)

static const struct key_def http_keys[HK_COUNT] = {
    [HK_LISTEN] = {"listen", KEY_LISTEN, 0, 0, 0, "127.0.0.1:8080"},
    [HK_WORKERS] = {"workers", KEY_INT, CFG(http.workers), 0, MAX_WORKERS, "0"},
    [HK_MAX_BODY] = {"max_body", KEY_SIZE, CFG(http.max_body), 1, GIB, "1MiB"},
    [HK_TIMEOUT] = {"timeout", KEY_DURATION, CFG(http.timeout_ms), 100, HOUR_MS, "30s"},
    [HK_PONG_PATH] = {"pong_path", KEY_PATH, CFG(http.pong_path), 0, 0, "/pong"},
    [HK_TLS_CERT] = {"tls_cert", KEY_FILE, CFG(http.tls_cert), 0, 0, ""},
    [HK_TLS_KEY] = {"tls_key", KEY_FILE, CFG(http.tls_key), 0, 0, ""},
    [HK_AUTH_TOKEN_FILE] = {"auth_token_file", KEY_FILE, CFG(http.auth_token_file), 0, 0, ""},
    [HK_METRICS_AUTH] = {"metrics_auth", KEY_BOOL, CFG(http.metrics_auth), 0, 0, "no"},
    /* 16384: above the 10,000 idle keep-alive clients the hostile suite
     * holds, below the 65536 descriptors containers and systemd units
     * commonly allow (start-up warns when the limit leaves less). */
    [HK_MAX_CONNECTIONS] = {"max_connections", KEY_COUNT, CFG(http.max_connections), 1, 1000000,
                            "16384"},
    [HK_MAX_PENDING_BYTES] = {"max_pending_bytes", KEY_SIZE, CFG(http.max_pending_bytes), 1,
                              64 * GIB, "256MiB"},
};

static const struct key_def amqp_keys[AK_COUNT] = {
    [AK_URI] = {"uri", KEY_URIS, 0, 0, 0, "amqp://guest:guest@127.0.0.1:5672/%2f"},
    [AK_HEARTBEAT] = {"heartbeat", KEY_DURATION, CFG(amqp.heartbeat_ms), 0, HOUR_MS, "30s"},
    [AK_CONFIRM] = {"confirm", KEY_BOOL, CFG(amqp.confirm), 0, 0, "yes"},
    [AK_MAX_INFLIGHT] = {"max_inflight", KEY_COUNT, CFG(amqp.max_inflight), 1, 1000000, "10000"},
    [AK_TLS_CA] = {"tls_ca", KEY_FILE, CFG(amqp.tls_ca), 0, 0, ""},
    [AK_TLS_CERT] = {"tls_cert", KEY_FILE, CFG(amqp.tls_cert), 0, 0, ""},
    [AK_TLS_KEY] = {"tls_key", KEY_FILE, CFG(amqp.tls_key), 0, 0, ""},
    [AK_TLS_VERIFY] = {"tls_verify", KEY_BOOL, CFG(amqp.tls_verify), 0, 0, "yes"},
};

static const struct key_def log_keys[LK_COUNT] = {
    [LK_LEVEL] = {"level", KEY_ENUM, CFG(log_level), 0, 0, "info", &log_level_enum},
    [LK_FORMAT] = {"format", KEY_ENUM, CFG(log_format), 0, 0, "text", &log_format_enum},
    [LK_ACCESS_LOG] = {"access_log", KEY_BOOL, CFG(http.access_log), 0, 0, "no"},
};

static const struct key_def route_keys[RK_COUNT] = {
    [RK_PATH] = {"path", KEY_PATH, RT(path), 0, 0, NULL},
    [RK_MODE] = {"mode", KEY_ENUM, RT(mode), 0, 0, "publish", &route_mode_enum},
    [RK_EXCHANGE] = {"exchange", KEY_AMQP_NAME, RT(exchange), 0, 0, ""},
    [RK_ROUTING_KEY] = {"routing_key", KEY_AMQP_NAME, RT(routing_key), 0, 0, NULL},
    [RK_QUEUE] = {"queue", KEY_QUEUE, RT(queue), 0, 0, ""},
    [RK_QUEUE_TYPE] = {"queue_type", KEY_ENUM, RT(queue_type), 0, 0, "classic", &queue_type_enum},
    [RK_PERSISTENT] = {"persistent", KEY_BOOL, RT(persistent), 0, 0, "yes"},
    [RK_SCHEMA] = {"schema", KEY_STRING, RT(schema), 0, 0, ""},
    [RK_ROOT] = {"root", KEY_LOCAL_NAME, RT(root), 0, 0, ""},
    [RK_TIMEOUT] = {"timeout", KEY_DURATION, RT(timeout_ms), 1, HOUR_MS, "5s"},
    [RK_AUTH_TOKEN_FILE] = {"auth_token_file", KEY_FILE, RT(auth_token_file), 0, 0, ""},
    [RK_MAX_INFLIGHT] = {"max_inflight", KEY_COUNT, RT(max_inflight), 0, 1000000, "0"},
};

struct section_def {
    const char *name;           /* [name], or "route" for [route NAME] */
    const char *env;            /* variable prefix after BRIDGE_ */
    const struct key_def *keys; /* the section's table */
    size_t n_keys;
};

static const struct section_def sections[SEC_COUNT] = {
    [SEC_HTTP] = {"http", "HTTP_", http_keys, HK_COUNT},
    [SEC_AMQP] = {"amqp", "AMQP_", amqp_keys, AK_COUNT},
    [SEC_LOG] = {"log", "LOG_", log_keys, LK_COUNT},
    [SEC_ROUTE] = {"route", "ROUTE_", route_keys, RK_COUNT},
};

/* Paths the HTTP server answers itself. */
static const char *const reserved_paths[] = {"/healthz", "/metrics"};

/* Route names /metrics gives the bridge's own answers in its route label
 * (bridge/base/metrics.c): a route of that name would be counted with them. */
static const char *const reserved_route_names[] = {"pong", "healthz", "metrics", "none"};

/* Where a value came from: for "given twice" and for error messages. */
struct origin {
    int line;        /* > 0: line in the file; 0: default or environment */
    const char *env; /* environ entry "BRIDGE_X=value", or NULL */
};

/* Loader-only bookkeeping of one route, parallel to cfg->routes. */
struct route_meta {
    int line;                     /* first [route NAME] line; 0 if env-made */
    const char *env;              /* variable that created it, or NULL */
    struct origin keys[MAX_KEYS]; /* where each key was set */
};

struct loader {
    struct config *cfg; /* being built; config_free-able */
    char *err;          /* caller's buffer */
    size_t errlen;
    bool failed;                             /* err holds the first error */
    int err_line;                            /* its file line, 0 if none */
    struct origin glob[SEC_ROUTE][MAX_KEYS]; /* [http], [amqp], [log] */
    struct route_meta *meta;                 /* cfg->n_routes entries */
    size_t route_cap;                        /* allocated entries of both */

    FILE *fp;   /* the file, read by read_line for inih */
    char *line; /* getline buffer */
    size_t line_cap;
    int lineno;        /* line last handed to inih */
    int unclosed_line; /* first "[..." line without ']', for inih's error */
};

/* ---- helpers ---------------------------------------------------------- */

static bool is_ctl(char c)
{
    return (unsigned char)c < 0x20 || c == 0x7f;
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

static bool has_space_or_ctl(const char *s)
{
    for (; *s != '\0'; s++)
        if (*s == ' ' || is_ctl(*s))
            return true;
    return false;
}

/* Length of the variable name in an environ entry. */
static int env_name_len(const char *e)
{
    return (int)strcspn(e, "=");
}

__attribute__((format(printf, 4, 5))) static int fail(struct loader *ld, const struct origin *o,
                                                      const char *key, const char *fmt, ...)
{
    if (ld->failed)
        return -1;
    ld->failed = true;
    char reason[REASON_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    if (ld->err == NULL || ld->errlen == 0)
        return -1;
    if (o != NULL && o->env != NULL) {
        snprintf(ld->err, ld->errlen, "environment %.*s: %s", env_name_len(o->env), o->env, reason);
    } else if (o != NULL && o->line > 0) {
        ld->err_line = o->line;
        if (key != NULL)
            snprintf(ld->err, ld->errlen, "%s:%d: %s: %s", ld->cfg->file, o->line, key, reason);
        else
            snprintf(ld->err, ld->errlen, "%s:%d: %s", ld->cfg->file, o->line, reason);
    } else if (key != NULL) {
        snprintf(ld->err, ld->errlen, "%s: %s: %s", ld->cfg->file, key, reason);
    } else {
        snprintf(ld->err, ld->errlen, "%s: %s", ld->cfg->file, reason);
    }
    return -1;
}

/* ---- scalar parsers --------------------------------------------------- */

/* Leading decimal digits of S into *N; returns the first other character,
 * or NULL when there are no digits or the number passes UINT64_MAX. */
static const char *parse_digits(const char *s, uint64_t *n)
{
    if (!isdigit((unsigned char)*s))
        return NULL;
    uint64_t v = 0;
    for (; isdigit((unsigned char)*s); s++) {
        uint64_t d = (uint64_t)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return NULL;
        v = v * 10 + d;
    }
    *n = v;
    return s;
}

/* The parsers below return 0, -1 for bad syntax, -2 for a number too large
 * for its type (reported as "out of range" rather than "not a duration"). */
static int parse_duration(const char *s, uint64_t *ms)
{
    uint64_t n = 0;
    const char *unit = s != NULL ? parse_digits(s, &n) : NULL;
    bool overflow = false;
    if (unit == NULL) {
        if (s == NULL || !isdigit((unsigned char)*s))
            return -1;
        unit = s + strspn(s, "0123456789"); /* too many digits */
        overflow = true;
    }
    uint64_t mul;
    if (*unit == '\0' && n == 0 && !overflow)
        mul = 1; /* a bare 0 needs no unit; any other bare number is ambiguous */
    else if (strcmp(unit, "ms") == 0)
        mul = 1;
    else if (strcmp(unit, "s") == 0)
        mul = MS_PER_S;
    else if (strcmp(unit, "m") == 0)
        mul = MS_PER_M;
    else
        return -1;
    if (overflow || n > UINT64_MAX / mul)
        return -2;
    *ms = n * mul;
    return 0;
}

int config_parse_duration(const char *s, uint64_t *ms)
{
    return parse_duration(s, ms) == 0 ? 0 : -1;
}

static int parse_size(const char *s, size_t *bytes)
{
    uint64_t n = 0;
    const char *unit = s != NULL ? parse_digits(s, &n) : NULL;
    bool overflow = false;
    if (unit == NULL) {
        if (s == NULL || !isdigit((unsigned char)*s))
            return -1;
        unit = s + strspn(s, "0123456789");
        overflow = true;
    }
    size_t mul;
    if (*unit == '\0')
        mul = 1;
    else if (strcmp(unit, "KiB") == 0)
        mul = KIB;
    else if (strcmp(unit, "MiB") == 0)
        mul = MIB;
    else
        return -1;
    if (overflow || n > SIZE_MAX / mul)
        return -2;
    *bytes = (size_t)n * mul;
    return 0;
}

int config_parse_size(const char *s, size_t *bytes)
{
    return parse_size(s, bytes) == 0 ? 0 : -1;
}

int config_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"yes", "true", "on", "1"};
    static const char *const no[] = {"no", "false", "off", "0"};
    if (s == NULL)
        return -1;
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

/* Bounds in the unit a user writes them in. */
static void duration_text(uint64_t ms, char *buf, size_t len)
{
    if (ms != 0 && ms % MS_PER_M == 0)
        snprintf(buf, len, "%" PRIu64 "m", ms / MS_PER_M);
    else if (ms != 0 && ms % MS_PER_S == 0)
        snprintf(buf, len, "%" PRIu64 "s", ms / MS_PER_S);
    else
        snprintf(buf, len, "%" PRIu64 "ms", ms);
}

static void size_text(uint64_t n, char *buf, size_t len)
{
    if (n != 0 && n % MIB == 0)
        snprintf(buf, len, "%" PRIu64 "MiB", n / MIB);
    else if (n != 0 && n % KIB == 0)
        snprintf(buf, len, "%" PRIu64 "KiB", n / KIB);
    else
        snprintf(buf, len, "%" PRIu64, n);
}

/* ---- listen and URIs -------------------------------------------------- */

static int replace_string(char **field, const char *s, size_t len, char *why, size_t wl)
{
    char *copy = strndup(s, len);
    if (copy == NULL) {
        snprintf(why, wl, "out of memory");
        return -1;
    }
    free(*field);
    *field = copy;
    return 0;
}

/* "host:port", "[v6]:port". */
static int parse_listen(struct config *cfg, const char *v, char *why, size_t wl)
{
    const char *host, *host_end, *colon;
    if (v[0] == '[') {
        host = v + 1;
        host_end = strchr(host, ']');
        if (host_end == NULL) {
            snprintf(why, wl, "'%.64s': missing ']' after the IPv6 address", v);
            return -1;
        }
        colon = host_end + 1;
        char addr[INET6_ADDRSTRLEN];
        struct in6_addr in6;
        size_t n = (size_t)(host_end - host);
        bool ok = n < sizeof addr;
        if (ok) {
            memcpy(addr, host, n);
            addr[n] = '\0';
            ok = inet_pton(AF_INET6, addr, &in6) == 1;
        }
        if (!ok) {
            snprintf(why, wl, "'%.64s': not an IPv6 address between [ ]", v);
            return -1;
        }
        if (*colon != ':') {
            snprintf(why, wl, "'%.64s': expected [address]:port", v);
            return -1;
        }
    } else {
        host = v;
        colon = strrchr(v, ':');
        if (colon == NULL) {
            snprintf(why, wl, "'%.64s': expected host:port", v);
            return -1;
        }
        host_end = colon;
        if (memchr(host, ':', (size_t)(host_end - host)) != NULL) {
            snprintf(why, wl, "'%.64s': write an IPv6 address in brackets: [::1]:8080", v);
            return -1;
        }
    }
    if (host_end == host) {
        snprintf(why, wl, "'%.64s': missing host (0.0.0.0 for every IPv4 address, [::] for IPv6)",
                 v);
        return -1;
    }
    for (const char *p = host; p < host_end; p++) {
        if (*p == ' ' || is_ctl(*p)) {
            snprintf(why, wl, "'%.64s': spaces or control characters in the host", v);
            return -1;
        }
    }
    uint64_t port;
    const char *end = parse_digits(colon + 1, &port);
    if (end == NULL || *end != '\0' || port < 1 || port > 65535) {
        snprintf(why, wl, "'%.64s': port must be a number 1..65535", v);
        return -1;
    }
    if (replace_string(&cfg->http.listen_host, host, (size_t)(host_end - host), why, wl) != 0)
        return -1;
    cfg->http.listen_port = (int)port;
    return 0;
}

/* ---- one value through the table -------------------------------------- */

static int check_text(enum key_type type, const char *v, char *why, size_t wl)
{
    size_t len = strlen(v);
    switch (type) {
    case KEY_PATH:
        if (v[0] != '/') {
            snprintf(why, wl, "'%.64s' must start with '/'", v);
            return -1;
        }
        if (strpbrk(v, "?#") != NULL) {
            snprintf(why, wl, "'%.64s': a path has no query ('?') or fragment ('#')", v);
            return -1;
        }
        if (has_space_or_ctl(v)) {
            snprintf(why, wl, "'%.64s': spaces or control characters in a path", v);
            return -1;
        }
        return 0;
    case KEY_QUEUE:
        if (strncmp(v, "amq.", 4) == 0) {
            snprintf(why, wl, "'%.64s': names starting with amq. are reserved by the broker", v);
            return -1;
        }
        /* fall through */
    case KEY_AMQP_NAME:
        if (len > AMQP_SHORTSTR_MAX) {
            snprintf(why, wl, "longer than %d bytes (an AMQP short string)", AMQP_SHORTSTR_MAX);
            return -1;
        }
        for (const char *p = v; *p != '\0'; p++) {
            if (is_ctl(*p)) {
                snprintf(why, wl, "control characters in a name");
                return -1;
            }
        }
        return 0;
    case KEY_FILE:
        /* Certificates, keys and token files are read once at start-up:
         * one that cannot be read stops it here, named with its line. */
        if (v[0] != '\0' && access(v, R_OK) != 0) {
            snprintf(why, wl, "cannot read %.200s: %s", v, strerror(errno));
            return -1;
        }
        return 0;
    case KEY_LOCAL_NAME:
        for (const char *p = v; *p != '\0'; p++) {
            if (*p == ' ' || is_ctl(*p) || strchr(":<>/=&'\"", *p) != NULL) {
                snprintf(why, wl, "'%.64s' is not an element's local name (no prefix, no spaces)",
                         v);
                return -1;
            }
        }
        return 0;
    default:
        return 0;
    }
}

static int check_bounds(const struct key_def *k, uint64_t n, const char *v, char *why, size_t wl)
{
    if (n >= k->min && n <= k->max)
        return 0;
    char lo[32], hi[32];
    if (k->type == KEY_DURATION) {
        duration_text(k->min, lo, sizeof lo);
        duration_text(k->max, hi, sizeof hi);
    } else if (k->type == KEY_SIZE) {
        size_text(k->min, lo, sizeof lo);
        size_text(k->max, hi, sizeof hi);
    } else {
        snprintf(lo, sizeof lo, "%" PRIu64, k->min);
        snprintf(hi, sizeof hi, "%" PRIu64, k->max);
    }
    snprintf(why, wl, "'%.64s' is out of range (%s..%s)", v, lo, hi);
    return -1;
}

/* V, one of E's names, into *FIELD as its index. */
static int set_enum(const struct key_enum *e, const char *v, int *field, char *why, size_t wl)
{
    for (size_t i = 0; i < e->n; i++) {
        if (strcasecmp(v, e->name[i]) == 0) {
            *field = (int)i;
            return 0;
        }
    }
    /* "a or b", "a, b, c or d" */
    char list[96]; /* the longest, "debug, info, warn or error", and room */
    size_t len = 0;
    for (size_t i = 0; i < e->n && len < sizeof list; i++)
        len += (size_t)snprintf(list + len, sizeof list - len, "%s%s",
                                i == 0         ? ""
                                : i + 1 < e->n ? ", "
                                               : " or ",
                                e->name[i]);
    snprintf(why, wl, "'%.64s' is not a %s (%s)", v, e->what, list);
    return -1;
}

/* Parse V for K into BASE (struct config, or struct config_route for route
 * keys). On failure BASE is unchanged and WHY says why. */
static int set_value(void *base, const struct key_def *k, const char *v, char *why, size_t wl)
{
    char *field = (char *)base + k->offset;
    uint64_t n = 0;
    const char *end;
    switch (k->type) {
    case KEY_STRING:
    case KEY_FILE:
    case KEY_PATH:
    case KEY_AMQP_NAME:
    case KEY_QUEUE:
    case KEY_LOCAL_NAME:
        if (check_text(k->type, v, why, wl) != 0)
            return -1;
        return replace_string((char **)(void *)field, v, strlen(v), why, wl);
    case KEY_INT:
    case KEY_COUNT:
        end = parse_digits(v, &n);
        if (end == NULL || *end != '\0') {
            if (end == NULL && isdigit((unsigned char)v[0]))
                return check_bounds(k, UINT64_MAX, v, why, wl);
            snprintf(why, wl, "'%.64s' is not a whole number", v);
            return -1;
        }
        if (check_bounds(k, n, v, why, wl) != 0)
            return -1;
        if (k->type == KEY_INT)
            *(int *)(void *)field = (int)n;
        else
            *(size_t *)(void *)field = (size_t)n;
        return 0;
    case KEY_SIZE: {
        size_t bytes;
        int rc = parse_size(v, &bytes);
        if (rc == -2)
            return check_bounds(k, UINT64_MAX, v, why, wl);
        if (rc != 0) {
            snprintf(why, wl, "'%.64s' is not a size (bytes, or a whole number of KiB or MiB)", v);
            return -1;
        }
        if (check_bounds(k, bytes, v, why, wl) != 0)
            return -1;
        *(size_t *)(void *)field = bytes;
        return 0;
    }
    case KEY_DURATION: {
        int rc = parse_duration(v, &n);
        if (rc == -2)
            return check_bounds(k, UINT64_MAX, v, why, wl);
        if (rc != 0) {
            snprintf(why, wl,
                     "'%.64s' is not a duration (a whole number with ms, s or m: 500ms, 30s, "
                     "2m)",
                     v);
            return -1;
        }
        if (check_bounds(k, n, v, why, wl) != 0)
            return -1;
        *(uint64_t *)(void *)field = n;
        return 0;
    }
    case KEY_BOOL: {
        bool b;
        if (config_parse_bool(v, &b) != 0) {
            snprintf(why, wl, "'%.64s' is not a boolean (yes/no, true/false, on/off, 1/0)", v);
            return -1;
        }
        *(bool *)(void *)field = b;
        return 0;
    }
    case KEY_ENUM:
        return set_enum(k->names, v, (int *)(void *)field, why, wl);
    case KEY_LISTEN:
        return parse_listen(base, v, why, wl);
    case KEY_URIS: {
        struct config *cfg = base;
        struct broker_uri *list;
        size_t count;
        if (broker_uris_parse(v, &list, &count, why, wl) != 0)
            return -1;
        broker_uris_free(cfg->amqp.uris, cfg->amqp.n_uris);
        cfg->amqp.uris = list;
        cfg->amqp.n_uris = count;
        return 0;
    }
    }
    snprintf(why, wl, "internal error: unknown key type");
    return -1;
}

/* ---- sections and routes ---------------------------------------------- */

static int find_key(enum section_kind kind, const char *name, size_t len)
{
    const struct section_def *s = &sections[kind];
    for (size_t i = 0; i < s->n_keys; i++)
        if (strlen(s->keys[i].name) == len && strncasecmp(s->keys[i].name, name, len) == 0)
            return (int)i;
    return -1;
}

static void copy_name(char *dst, size_t dstlen, const char *name, size_t len)
{
    snprintf(dst, dstlen, "%.*s", (int)len, name);
}

static bool valid_route_name(const char *name, size_t len)
{
    if (len == 0 || len > MAX_ROUTE_NAME)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!isalnum((unsigned char)c) && c != '_' && c != '-' && c != '.')
            return false;
    }
    return true;
}

/* Route names compare case-insensitively: the environment cannot tell
 * "Ingest" from "ingest". */
static int find_route(const struct loader *ld, const char *name, size_t len)
{
    for (size_t i = 0; i < ld->cfg->n_routes; i++) {
        const char *r = ld->cfg->routes[i].name;
        if (strlen(r) == len && strncasecmp(r, name, len) == 0)
            return (int)i;
    }
    return -1;
}

/* Set K (index KI of section KIND; route ROUTE) from V, refusing a key the
 * same source already set. */
static int set_key(struct loader *ld, enum section_kind kind, size_t route, size_t ki,
                   const char *v, const struct origin *o)
{
    const struct key_def *k = &sections[kind].keys[ki];
    struct origin *slot = kind == SEC_ROUTE ? &ld->meta[route].keys[ki] : &ld->glob[kind][ki];
    if (o->env == NULL && o->line > 0 && slot->line > 0)
        return fail(ld, o, k->name, "given twice (first on line %d)", slot->line);
    if (o->env != NULL && slot->env != NULL)
        return fail(ld, o, k->name, "%s is also set by %.*s", k->name, env_name_len(slot->env),
                    slot->env);
    void *base = kind == SEC_ROUTE ? (void *)&ld->cfg->routes[route] : (void *)ld->cfg;
    char why[REASON_LEN];
    if (set_value(base, k, v, why, sizeof why) != 0)
        return fail(ld, o, k->name, "%s", why);
    *slot = *o;
    return 0;
}

/* A new route NAME (LEN bytes) with every default; created by O. */
static int add_route(struct loader *ld, const char *name, size_t len, bool lower,
                     const struct origin *o)
{
    struct config *cfg = ld->cfg;
    if (cfg->n_routes == ld->route_cap) {
        size_t cap = ld->route_cap != 0 ? ld->route_cap * 2 : 4;
        struct config_route *r = realloc(cfg->routes, cap * sizeof *r);
        if (r == NULL)
            return fail(ld, o, NULL, "out of memory");
        cfg->routes = r;
        struct route_meta *m = realloc(ld->meta, cap * sizeof *m);
        if (m == NULL)
            return fail(ld, o, NULL, "out of memory");
        ld->meta = m;
        ld->route_cap = cap;
    }
    size_t idx = cfg->n_routes;
    memset(&cfg->routes[idx], 0, sizeof cfg->routes[idx]);
    memset(&ld->meta[idx], 0, sizeof ld->meta[idx]);
    cfg->n_routes++; /* from here config_free owns whatever the entry holds */
    ld->meta[idx].line = o->line;
    ld->meta[idx].env = o->env;
    char *n = strndup(name, len);
    if (n == NULL)
        return fail(ld, o, NULL, "out of memory");
    for (char *p = n; lower && *p != '\0'; p++)
        *p = (char)tolower((unsigned char)*p);
    cfg->routes[idx].name = n;
    const struct origin dflt = {0, NULL};
    for (size_t ki = 0; ki < RK_COUNT; ki++)
        if (route_keys[ki].def != NULL &&
            set_key(ld, SEC_ROUTE, idx, ki, route_keys[ki].def, &dflt) != 0)
            return -1;
    return (int)idx;
}

/* Which section the header text TEXT (trimmed, as between the brackets)
 * names; a [route NAME] not seen before is created. */
static int resolve_section(struct loader *ld, const char *text, const struct origin *o,
                           enum section_kind *kind, size_t *route)
{
    char key[MAX_SECTION_TEXT + 8];
    snprintf(key, sizeof key, "[%.*s]", MAX_SECTION_TEXT, text);
    for (int s = SEC_HTTP; s < SEC_ROUTE; s++) {
        if (strcmp(text, sections[s].name) == 0) {
            *kind = (enum section_kind)s;
            return 0;
        }
    }
    if (strncmp(text, "route", 5) != 0 || (text[5] != '\0' && !is_blank(text[5])))
        return fail(ld, o, key, "unknown section (expected [http], [amqp], [log] or [route NAME])");
    const char *name = text + 5;
    while (is_blank(*name))
        name++;
    size_t len = strlen(name);
    if (len == 0)
        return fail(ld, o, key, "a route section needs a name: [route NAME]");
    if (!valid_route_name(name, len))
        return fail(ld, o, key, "route name must be 1..%d letters, digits, '_', '-' or '.'",
                    MAX_ROUTE_NAME);
    int idx = find_route(ld, name, len);
    if (idx >= 0 && strcmp(ld->cfg->routes[idx].name, name) != 0)
        return fail(ld, o, key, "same name as route %s: route names are case-insensitive",
                    ld->cfg->routes[idx].name);
    if (idx < 0 && (idx = add_route(ld, name, len, false, o)) < 0)
        return -1;
    *kind = SEC_ROUTE;
    *route = (size_t)idx;
    return 0;
}

/* ---- the file --------------------------------------------------------- */

/* A "[...]" line, seen before inih: so that an empty or unknown section is
 * refused too (inih only reports keys), and so that what inih would
 * silently accept (text after ']', a name it would cut) is refused. */
static void check_header(struct loader *ld, const char *line)
{
    const struct origin o = {ld->lineno, NULL};
    const char *close = strchr(line + 1, ']');
    if (close == NULL) {
        if (ld->unclosed_line == 0)
            ld->unclosed_line = ld->lineno;
        return; /* inih reports the syntax error */
    }
    const char *after = close + 1;
    while (is_blank(*after))
        after++;
    if (*after != '\0' && *after != '\n' && *after != ';') {
        fail(ld, &o, NULL, "text after ']' (a comment starts with ';')");
        return;
    }
    size_t raw = (size_t)(close - line - 1);
    if (raw > MAX_SECTION_TEXT) {
        fail(ld, &o, NULL, "section name longer than %d characters", MAX_SECTION_TEXT);
        return;
    }
    char text[MAX_SECTION_TEXT + 1];
    const char *b = line + 1, *e = close;
    while (b < e && is_blank(*b))
        b++;
    while (e > b && is_blank(e[-1]))
        e--;
    copy_name(text, sizeof text, b, (size_t)(e - b));
    enum section_kind kind;
    size_t route;
    (void)resolve_section(ld, text, &o, &kind, &route);
}

/* inih's reader: one line per call, numbered, too-long lines refused
 * (fgets would split them and inih would parse the rest as a new line).
 * Leading blanks are dropped, so an indented "key = value" is a key and
 * never a continuation of the previous value. */
static char *read_line(char *str, int num, void *stream)
{
    struct loader *ld = stream;
    if (ld->failed)
        return NULL;
    errno = 0;
    ssize_t n = getline(&ld->line, &ld->line_cap, ld->fp);
    if (n < 0) {
        /* -1 is also getline's ENOMEM, without the error flag: only a
         * real end of file ends the file. */
        if (!feof(ld->fp) || ferror(ld->fp)) {
            const struct origin o = {ld->lineno + 1, NULL};
            fail(ld, &o, NULL, "read error: %s", strerror(errno != 0 ? errno : EIO));
        }
        return NULL;
    }
    ld->lineno++;
    const struct origin o = {ld->lineno, NULL};
    char *line = ld->line;
    size_t len = (size_t)n;
    if (memchr(line, '\0', len) != NULL) {
        fail(ld, &o, NULL, "NUL byte in the line");
        return NULL;
    }
    size_t content = len;
    while (content > 0 && (line[content - 1] == '\n' || line[content - 1] == '\r'))
        content--;
    /* inih needs room for "\r\n\0" after the longest line. */
    if (num < 4 || content > (size_t)num - 3) {
        fail(ld, &o, NULL, "line too long (at most %d characters)", num - 3);
        return NULL;
    }
    /* inih gets the content and one '\n' at most: a run of '\r' before it
     * (a file converted to CRLF twice) must not spill past its buffer. */
    if (content < len) {
        line[content] = '\n';
        line[content + 1] = '\0';
        len = content + 1;
    }
    if (ld->lineno == 1 && len >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0) {
        line += 3;
        len -= 3;
    }
    while (len > 0 && is_blank(*line)) {
        line++;
        len--;
    }
    if (*line == '[') {
        check_header(ld, line);
        if (ld->failed)
            return NULL;
    }
    memcpy(str, line, len + 1);
    return str;
}

/* inih's handler: 1 = go on, 0 = error (the reason is in ld->err). */
static int on_key(void *user, const char *section, const char *name, const char *value)
{
    struct loader *ld = user;
    if (ld->failed)
        return 0;
    const struct origin o = {ld->lineno, NULL};
    if (name[0] == '\0') {
        fail(ld, &o, NULL, "missing key name before '='");
        return 0;
    }
    char text[MAX_SECTION_TEXT + 1];
    const char *b = section, *e = section + strlen(section);
    while (b < e && is_blank(*b))
        b++;
    while (e > b && is_blank(e[-1]))
        e--;
    if (b == e) {
        fail(ld, &o, name, "key outside any section");
        return 0;
    }
    copy_name(text, sizeof text, b, (size_t)(e - b));
    enum section_kind kind;
    size_t route = 0;
    if (resolve_section(ld, text, &o, &kind, &route) != 0)
        return 0;
    /* Keys are lower case in the file; find_key also serves the
     * environment, where they are upper case. */
    int ki = find_key(kind, name, strlen(name));
    if (ki < 0 || strcmp(sections[kind].keys[ki].name, name) != 0) {
        if (kind == SEC_ROUTE)
            fail(ld, &o, name, "unknown key in [route %s]", ld->cfg->routes[route].name);
        else
            fail(ld, &o, name, "unknown key in [%s]", sections[kind].name);
        return 0;
    }
    return set_key(ld, kind, route, (size_t)ki, value, &o) == 0;
}

static int parse_file(struct loader *ld)
{
    ld->fp = fopen(ld->cfg->file, "r");
    if (ld->fp == NULL)
        return fail(ld, NULL, NULL, "%s", strerror(errno));
    int rc = ini_parse_stream(read_line, ld, on_key, ld);
    fclose(ld->fp);
    ld->fp = NULL;
    free(ld->line);
    ld->line = NULL;
    /* inih keeps going after a syntax error and reports the first error
     * line; ours (the handler's, the reader's) stop it. The earlier wins. */
    if (rc > 0 && (!ld->failed || (ld->err_line > 0 && rc < ld->err_line))) {
        const struct origin o = {rc, NULL};
        ld->failed = false;
        if (rc == ld->unclosed_line)
            return fail(ld, &o, NULL, "missing ']' after the section name");
        return fail(ld, &o, NULL, "expected 'key = value' or '[section]'");
    }
    if (rc < 0 && !ld->failed)
        return fail(ld, NULL, NULL, "out of memory");
    return ld->failed ? -1 : 0;
}

/* ---- the environment -------------------------------------------------- */

static int apply_env_route(struct loader *ld, const char *rest, size_t len, const char *value,
                           const struct origin *o)
{
    /* NAME and KEY may both hold '_': KEY is the longest key name that
     * ends REST after a '_', NAME what is left before it. */
    int best = -1;
    size_t best_len = 0;
    for (size_t i = 0; i < RK_COUNT; i++) {
        size_t kl = strlen(route_keys[i].name);
        if (kl + 1 < len && kl > best_len && rest[len - kl - 1] == '_' &&
            strncasecmp(rest + len - kl, route_keys[i].name, kl) == 0) {
            best = (int)i;
            best_len = kl;
        }
    }
    if (best < 0)
        return fail(ld, o, NULL,
                    "expected BRIDGE_ROUTE_<NAME>_<KEY>, KEY one of path, mode, exchange, "
                    "routing_key, queue, queue_type, persistent, schema, root, timeout, "
                    "auth_token_file");
    size_t name_len = len - best_len - 1;
    if (!valid_route_name(rest, name_len))
        return fail(ld, o, NULL, "route name must be 1..%d letters, digits, '_', '-' or '.'",
                    MAX_ROUTE_NAME);
    int idx = find_route(ld, rest, name_len);
    if (idx < 0 && (idx = add_route(ld, rest, name_len, true, o)) < 0)
        return -1;
    return set_key(ld, SEC_ROUTE, (size_t)idx, (size_t)best, value, o);
}

static int apply_env(struct loader *ld, char *const *envp)
{
    const size_t plen = sizeof ENV_PREFIX - 1;
    for (size_t i = 0; envp != NULL && envp[i] != NULL; i++) {
        const char *e = envp[i];
        const char *eq = strchr(e, '=');
        if (strncmp(e, ENV_PREFIX, plen) != 0 || eq == NULL)
            continue;
        const struct origin o = {0, e};
        const char *name = e + plen, *value = eq + 1;
        size_t len = (size_t)(eq - name);
        int kind = -1;
        size_t sl = 0;
        for (int s = SEC_HTTP; s < SEC_COUNT; s++) {
            sl = strlen(sections[s].env);
            if (len > sl && strncasecmp(name, sections[s].env, sl) == 0) {
                kind = s;
                break;
            }
        }
        if (kind < 0)
            return fail(ld, &o, NULL,
                        "unknown variable (expected BRIDGE_HTTP_<KEY>, BRIDGE_AMQP_<KEY>, "
                        "BRIDGE_LOG_<KEY> or BRIDGE_ROUTE_<NAME>_<KEY>)");
        if (kind == SEC_ROUTE) {
            if (apply_env_route(ld, name + sl, len - sl, value, &o) != 0)
                return -1;
            continue;
        }
        int ki = find_key((enum section_kind)kind, name + sl, len - sl);
        if (ki < 0)
            return fail(ld, &o, NULL, "unknown key in [%s]", sections[kind].name);
        if (set_key(ld, (enum section_kind)kind, 0, (size_t)ki, value, &o) != 0)
            return -1;
    }
    return 0;
}

/* ---- rules that span keys --------------------------------------------- */

static int missing(struct loader *ld, size_t r, const char *key)
{
    const struct route_meta *m = &ld->meta[r];
    const char *name = ld->cfg->routes[r].name;
    ld->failed = true;
    if (m->line > 0)
        snprintf(ld->err, ld->errlen, "%s: route %s: missing %s (section on line %d)",
                 ld->cfg->file, name, key, m->line);
    else
        snprintf(ld->err, ld->errlen, "%s: route %s: missing %s (route made by %.*s)",
                 ld->cfg->file, name, key, env_name_len(m->env), m->env);
    return -1;
}

static const char *reserved_path(const char *path)
{
    for (size_t i = 0; i < sizeof reserved_paths / sizeof reserved_paths[0]; i++)
        if (strcmp(path, reserved_paths[i]) == 0)
            return reserved_paths[i];
    return NULL;
}

static const char *reserved_route_name(const char *name)
{
    for (size_t i = 0; i < sizeof reserved_route_names / sizeof reserved_route_names[0]; i++)
        if (strcasecmp(name, reserved_route_names[i]) == 0)
            return reserved_route_names[i];
    return NULL;
}

/* A certificate and its key: both or neither. */
static int check_pair(struct loader *ld, enum section_kind kind, size_t cert_key, size_t key_key,
                      const char *cert, const char *key)
{
    if ((cert[0] == '\0') == (key[0] == '\0'))
        return 0;
    size_t given = cert[0] != '\0' ? cert_key : key_key;
    size_t other = cert[0] != '\0' ? key_key : cert_key;
    const struct key_def *keys = sections[kind].keys;
    return fail(ld, &ld->glob[kind][given], keys[given].name,
                "needs %s in [%s] too (both or neither)", keys[other].name, sections[kind].name);
}

static int validate_tls(struct loader *ld)
{
    const struct config *c = ld->cfg;
    if (check_pair(ld, SEC_HTTP, HK_TLS_CERT, HK_TLS_KEY, c->http.tls_cert, c->http.tls_key) != 0 ||
        check_pair(ld, SEC_AMQP, AK_TLS_CERT, AK_TLS_KEY, c->amqp.tls_cert, c->amqp.tls_key) != 0)
        return -1;
    if (c->http.metrics_auth && c->http.auth_token_file[0] == '\0')
        return fail(ld, &ld->glob[SEC_HTTP][HK_METRICS_AUTH], "metrics_auth",
                    "needs [http] auth_token_file (the tokens /metrics asks for)");
    bool amqps = false;
    for (size_t i = 0; i < c->amqp.n_uris; i++)
        amqps = amqps || c->amqp.uris[i].tls;
    static const size_t tls_keys[] = {AK_TLS_CA, AK_TLS_CERT};
    const char *const tls_vals[] = {c->amqp.tls_ca, c->amqp.tls_cert};
    for (size_t i = 0; !amqps && i < 2; i++)
        if (tls_vals[i][0] != '\0')
            return fail(ld, &ld->glob[SEC_AMQP][tls_keys[i]], amqp_keys[tls_keys[i]].name,
                        "set, but no uri is amqps://");
    return 0;
}

static int validate(struct loader *ld)
{
    const struct config *c = ld->cfg;
    const struct origin *pong = &ld->glob[SEC_HTTP][HK_PONG_PATH];
    if (reserved_path(c->http.pong_path) != NULL)
        return fail(ld, pong, "pong_path", "%s is answered by the bridge itself",
                    c->http.pong_path);
    if (validate_tls(ld) != 0)
        return -1;
    /* AMQP negotiates heartbeats in whole seconds, and the bridge sends its
     * own at half the interval: 1 ms would wake a worker every half
     * millisecond for nothing. */
    if (c->amqp.heartbeat_ms > 0 && c->amqp.heartbeat_ms < 1000)
        return fail(ld, &ld->glob[SEC_AMQP][AK_HEARTBEAT], "heartbeat",
                    "%llums is below 1s, the shortest AMQP heartbeat (0 turns it off)",
                    (unsigned long long)c->amqp.heartbeat_ms);
    if (c->http.max_pending_bytes < c->http.max_body)
        return fail(ld, &ld->glob[SEC_HTTP][HK_MAX_PENDING_BYTES], "max_pending_bytes",
                    "%zu is less than max_body (%zu): a body of max_body could never wait",
                    c->http.max_pending_bytes, c->http.max_body);

    for (size_t j = 0; j < c->n_routes; j++) {
        const struct config_route *r = &c->routes[j];
        const struct origin *ko = ld->meta[j].keys;
        if (reserved_route_name(r->name) != NULL) {
            const struct route_meta *m = &ld->meta[j];
            const struct origin o = {m->line, m->env};
            return fail(ld, &o, NULL,
                        "route name %s is reserved: /metrics labels the bridge's own answers "
                        "(pong, healthz, metrics, none) with it",
                        r->name);
        }
        if (r->path == NULL)
            return missing(ld, j, "path");
        if (r->routing_key == NULL)
            return missing(ld, j, "routing_key");
        if (strcmp(r->path, c->http.pong_path) == 0)
            return fail(ld, &ko[RK_PATH], "path", "%s is the pong_path", r->path);
        if (reserved_path(r->path) != NULL)
            return fail(ld, &ko[RK_PATH], "path", "%s is answered by the bridge itself", r->path);
        for (size_t i = 0; i < j; i++)
            if (strcmp(c->routes[i].path, r->path) == 0)
                return fail(ld, &ko[RK_PATH], "path", "%s is already the path of route %s", r->path,
                            c->routes[i].name);
        /* The type only matters when the bridge declares the queue; a
         * quorum route without one would suggest replication it does not
         * get (the queue it reaches may well be classic). */
        if (r->queue_type == QUEUE_QUORUM && r->queue[0] == '\0')
            return fail(ld, &ko[RK_QUEUE_TYPE], "queue_type",
                        "quorum needs queue: the type is used when the bridge declares the queue");
        if (r->exchange[0] == '\0' && r->routing_key[0] == '\0')
            return fail(ld, &ko[RK_ROUTING_KEY], "routing_key",
                        "empty: with the default exchange the message would reach no queue");
        if (r->max_inflight > c->amqp.max_inflight)
            return fail(ld, &ko[RK_MAX_INFLIGHT], "max_inflight",
                        "%zu is more than [amqp] max_inflight (%zu), the worker's whole budget",
                        r->max_inflight, c->amqp.max_inflight);
    }
    return 0;
}

/* A route's max_inflight of 0: its share of [amqp] max_inflight. With one
 * route, all of it; with several, half (rounded up), so that one route whose
 * queue stopped confirming (its requests wait out their timeout) leaves the
 * other half of every worker's budget to the other routes. */
static void resolve_route_inflight(struct config *c)
{
    for (size_t j = 0; j < c->n_routes; j++)
        if (c->routes[j].max_inflight == 0)
            c->routes[j].max_inflight =
                c->n_routes == 1 ? c->amqp.max_inflight : (c->amqp.max_inflight + 1) / 2;
}

/* Each room's part of the config: the HTTP and the AMQP room see their own
 * struct only, the routes included (same index, the strings of c->routes). */
static int make_room_views(struct config *c)
{
    c->http.file = c->file;
    c->amqp.write_timeout_ms = c->http.timeout_ms;
    c->http.routes = calloc(c->n_routes + 1, sizeof *c->http.routes);
    c->amqp.routes = calloc(c->n_routes + 1, sizeof *c->amqp.routes);
    if (c->http.routes == NULL || c->amqp.routes == NULL)
        return -1;
    c->http.n_routes = c->amqp.n_routes = c->n_routes;
    for (size_t i = 0; i < c->n_routes; i++) {
        const struct config_route *r = &c->routes[i];
        c->http.routes[i] = (struct http_route){r->name, r->path, r->auth_token_file};
        c->amqp.routes[i] = (struct broker_route){r->name,  r->exchange,   r->routing_key,
                                                  r->queue, r->queue_type, r->mode == ROUTE_RPC};
    }
    return 0;
}

/* ---- entry points ----------------------------------------------------- */

void config_free(struct config *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->file);
    free(cfg->http.listen_host);
    free(cfg->http.pong_path);
    free(cfg->http.tls_cert);
    free(cfg->http.tls_key);
    free(cfg->http.auth_token_file);
    free(cfg->amqp.tls_ca);
    free(cfg->amqp.tls_cert);
    free(cfg->amqp.tls_key);
    broker_uris_free(cfg->amqp.uris, cfg->amqp.n_uris);
    for (size_t i = 0; i < cfg->n_routes; i++) {
        struct config_route *r = &cfg->routes[i];
        free(r->name);
        free(r->path);
        free(r->exchange);
        free(r->routing_key);
        free(r->queue);
        free(r->schema);
        free(r->root);
        free(r->auth_token_file);
    }
    free(cfg->routes);
    free(cfg->http.routes);
    free(cfg->amqp.routes);
    free(cfg);
}

struct config *config_load(const char *file, char *const *envp, char *err, size_t errlen)
{
    struct loader ld = {.err = err, .errlen = errlen};
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    ld.cfg = calloc(1, sizeof *ld.cfg);
    if (ld.cfg == NULL || (ld.cfg->file = strdup(file != NULL ? file : "")) == NULL) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "%s: out of memory", file != NULL ? file : "config");
        free(ld.cfg);
        return NULL;
    }

    /* Defaults first, through the same parsers as the file's values. */
    const struct origin dflt = {0, NULL};
    for (int s = SEC_HTTP; s < SEC_ROUTE && !ld.failed; s++)
        for (size_t ki = 0; ki < sections[s].n_keys && !ld.failed; ki++)
            (void)set_key(&ld, (enum section_kind)s, 0, ki, sections[s].keys[ki].def, &dflt);

    if (!ld.failed && parse_file(&ld) == 0 && apply_env(&ld, envp) == 0 && validate(&ld) == 0) {
        resolve_route_inflight(ld.cfg);
        if (ld.cfg->http.workers == 0) {
            long cpus = sysconf(_SC_NPROCESSORS_ONLN);
            ld.cfg->http.workers = cpus < 1 ? 1 : cpus > MAX_WORKERS ? MAX_WORKERS : (int)cpus;
        }
        if (make_room_views(ld.cfg) != 0 && !ld.failed) {
            ld.failed = true;
            if (err != NULL && errlen > 0)
                snprintf(err, errlen, "%s: out of memory", ld.cfg->file);
        }
    }
    free(ld.meta);
    if (ld.failed) {
        config_free(ld.cfg);
        return NULL;
    }
    return ld.cfg;
}
