/* config_int.h - what the files of bridge/config share and nothing else
 * includes: the key table's types, the loader's state, and the few functions
 * one file calls in another. Included only by bridge/config*.c; the public
 * API is bridge/config.h. */
#ifndef BRIDGE_CONFIG_INT_H
#define BRIDGE_CONFIG_INT_H

#include "bridge/config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define MS_PER_S UINT64_C(1000)
#define MS_PER_M UINT64_C(60000)
#define HOUR_MS UINT64_C(3600000)
#define KIB ((size_t)1024)
#define MIB ((size_t)1024 * 1024)
#define GIB ((size_t)1024 * 1024 * 1024)
#define MAX_WORKERS 256
#define MAX_KEYS 40 /* most keys in one section */
#define REASON_LEN 256

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

enum section_kind { SEC_HTTP, SEC_AMQP, SEC_LOG, SEC_SPOOL, SEC_ROUTE, SEC_COUNT };

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
    HK_TLS_CLIENT_CA,
    HK_TLS_CLIENT_AUTH,
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
enum { SK_DIR, SK_MAX_SIZE, SK_COUNT };
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
    RK_PROPERTIES,
    RK_EXCHANGES,
    RK_BINDING_KEY,
    RK_PRIORITY,
    RK_PRIORITY_MAX,
    RK_EXPIRATION,
    RK_HEADERS,
    RK_CONTENT_TYPE,
    RK_TRACE,
    RK_DECLARE,
    RK_DEAD_LETTER_EXCHANGE,
    RK_DEAD_LETTER_ROUTING_KEY,
    RK_MAX_LENGTH,
    RK_MAX_LENGTH_BYTES,
    RK_OVERFLOW,
    RK_MESSAGE_TTL,
    RK_MAX_PRIORITY,
    RK_ENCODINGS,
    RK_KEEP_ENCODING,
    RK_CLIENT_SUBJECTS,
    RK_RATE,
    RK_BURST,
    RK_RATE_BY,
    RK_RATE_KEYS,
    RK_DEDUPE,
    RK_DEDUPE_IDS,
    RK_SPOOL,
    RK_COUNT
};

_Static_assert(HK_COUNT <= MAX_KEYS && AK_COUNT <= MAX_KEYS && LK_COUNT <= MAX_KEYS &&
                   SK_COUNT <= MAX_KEYS && RK_COUNT <= MAX_KEYS,
               "MAX_KEYS too small");

struct section_def {
    const char *name;           /* [name], or "route" for [route NAME] */
    const char *env;            /* variable prefix after BRIDGE_ */
    const struct key_def *keys; /* the section's table */
    size_t n_keys;
};

/* Every section's table, indexed by enum section_kind (config_keys.c). */
extern const struct section_def config_sections[SEC_COUNT];

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

/* Length of the variable name in an environ entry. */
static inline int env_name_len(const char *e)
{
    return (int)strcspn(e, "=");
}

/* config.c: the first error into ld->err, naming where O says the value
 * came from (file:line, a variable, or the file) and KEY if not NULL; later
 * ones are dropped. Always -1. */
int config_fail(struct loader *ld, const struct origin *o, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* config_keys.c: the index of key NAME (LEN bytes, any case) in section
 * KIND's table, or -1. */
int config_find_key(enum section_kind kind, const char *name, size_t len);
/* config_keys.c: key KI of section KIND (of route ROUTE) from V, which came
 * from O; refuses a key the same source already set. 0 / -1 (config_fail). */
int config_set_key(struct loader *ld, enum section_kind kind, size_t route, size_t ki,
                   const char *v, const struct origin *o);

/* config_value.c: parse V for K into BASE (struct config, or struct
 * config_route for route keys). On failure BASE is unchanged and WHY says
 * why. 0 / -1. */
int config_set_value(void *base, const struct key_def *k, const char *v, char *why, size_t wl)
    __attribute__((warn_unused_result));

/* config_route.c: route J's keys that span each other (templates, the
 * exchange list, priority, constant headers) checked and parsed into its
 * derived fields. 0 / -1 (config_fail). */
int config_route_prepare(struct loader *ld, size_t j) __attribute__((warn_unused_result));
/* config_route.c: free what config_route_prepare made and the route's strings. */
void config_route_free(struct config_route *r);

/* config_read.c: the file ld->cfg->file, then the BRIDGE_* variables of
 * ENVP, into ld->cfg. 0 / -1 (config_fail). */
int config_read_file(struct loader *ld) __attribute__((warn_unused_result));
int config_read_env(struct loader *ld, char *const *envp) __attribute__((warn_unused_result));

#endif
