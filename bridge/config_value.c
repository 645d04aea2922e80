/* config_value.c - one value through its key's type: the parsers of
 * numbers, durations, sizes, booleans, enums, host:port and the URI list
 * (amqp/uri.c), the checks of paths, names and files, and the bounds, each
 * failure with its reason. Knows no file, line or variable. */
#include "bridge/config_int.h"
#include "bridge/base/errbuf.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/types.h>
#include <unistd.h>

#define AMQP_SHORTSTR_MAX 255 /* exchange, routing key, queue */

static bool is_ctl(char c)
{
    return (unsigned char)c < 0x20 || c == 0x7f;
}

static bool has_space_or_ctl(const char *s)
{
    for (; *s != '\0'; s++)
        if (*s == ' ' || is_ctl(*s))
            return true;
    return false;
}

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

/* A number's unit: what follows the digits, and what it multiplies by.
 * Each table smallest first, its first unit multiplying by 1. */
struct unit {
    const char *suffix;
    uint64_t mul;
};

static const struct unit duration_units[] = {{"ms", 1}, {"s", MS_PER_S}, {"m", MS_PER_M}, {0}};
static const struct unit size_units[] = {{"", 1}, {"KiB", KIB}, {"MiB", MIB}, {0}};

/* The parsers below return 0, -1 for bad syntax, -2 for a number too large
 * for its type (reported as "out of range" rather than "not a duration"). */
static int parse_number(const char *s, const struct unit *units, uint64_t max, uint64_t *out)
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
    uint64_t mul = 0;
    for (const struct unit *u = units; u->suffix != NULL && mul == 0; u++)
        if (strcmp(unit, u->suffix) == 0)
            mul = u->mul;
    if (mul == 0)
        return -1;
    if (overflow || n > max / mul)
        return -2;
    *out = n * mul;
    return 0;
}

static int parse_duration(const char *s, uint64_t *ms)
{
    /* A bare 0 needs no unit; any other bare number is ambiguous. */
    if (s != NULL && s[0] != '\0' && s[strspn(s, "0")] == '\0') {
        *ms = 0;
        return 0;
    }
    return parse_number(s, duration_units, UINT64_MAX, ms);
}

int config_parse_duration(const char *s, uint64_t *ms)
{
    return parse_duration(s, ms) == 0 ? 0 : -1;
}

static int parse_size(const char *s, size_t *bytes)
{
    uint64_t n;
    int rc = parse_number(s, size_units, SIZE_MAX, &n);
    if (rc == 0)
        *bytes = (size_t)n;
    return rc;
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

/* Bounds in the unit a user writes them in: the largest of UNITS that
 * divides N. */
static void unit_text(uint64_t n, const struct unit *units, char *buf, size_t len)
{
    const struct unit *best = &units[0];
    for (const struct unit *u = units + 1; u->suffix != NULL; u++)
        if (n != 0 && n % u->mul == 0)
            best = u;
    snprintf(buf, len, "%" PRIu64 "%s", n / best->mul, best->suffix);
}

/* ---- listen and URIs -------------------------------------------------- */

static int replace_string(char **field, const char *s, size_t len, char *why, size_t wl)
{
    char *copy = strndup(s, len);
    if (copy == NULL)
        return errf(why, wl, "out of memory");
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
        if (host_end == NULL)
            return errf(why, wl, "'%.64s': missing ']' after the IPv6 address", v);
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
        if (!ok)
            return errf(why, wl, "'%.64s': not an IPv6 address between [ ]", v);
        if (*colon != ':')
            return errf(why, wl, "'%.64s': expected [address]:port", v);
    } else {
        host = v;
        colon = strrchr(v, ':');
        if (colon == NULL)
            return errf(why, wl, "'%.64s': expected host:port", v);
        host_end = colon;
        if (memchr(host, ':', (size_t)(host_end - host)) != NULL)
            return errf(why, wl, "'%.64s': write an IPv6 address in brackets: [::1]:8080", v);
    }
    if (host_end == host)
        return errf(why, wl,
                    "'%.64s': missing host (0.0.0.0 for every IPv4 address, [::] for IPv6)", v);
    for (const char *p = host; p < host_end; p++) {
        if (*p == ' ' || is_ctl(*p))
            return errf(why, wl, "'%.64s': spaces or control characters in the host", v);
    }
    uint64_t port;
    const char *end = parse_digits(colon + 1, &port);
    if (end == NULL || *end != '\0' || port < 1 || port > 65535)
        return errf(why, wl, "'%.64s': port must be a number 1..65535", v);
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
        if (v[0] != '/')
            return errf(why, wl, "'%.64s' must start with '/'", v);
        if (strpbrk(v, "?#") != NULL)
            return errf(why, wl, "'%.64s': a path has no query ('?') or fragment ('#')", v);
        if (has_space_or_ctl(v))
            return errf(why, wl, "'%.64s': spaces or control characters in a path", v);
        return 0;
    case KEY_QUEUE:
        if (strncmp(v, "amq.", 4) == 0)
            return errf(why, wl, "'%.64s': names starting with amq. are reserved by the broker", v);
        /* fall through */
    case KEY_AMQP_NAME:
        if (len > AMQP_SHORTSTR_MAX)
            return errf(why, wl, "longer than %d bytes (an AMQP short string)", AMQP_SHORTSTR_MAX);
        for (const char *p = v; *p != '\0'; p++) {
            if (is_ctl(*p))
                return errf(why, wl, "control characters in a name");
        }
        return 0;
    case KEY_FILE:
        /* Certificates, keys and token files are read once at start-up:
         * one that cannot be read stops it here, named with its line. */
        if (v[0] != '\0' && access(v, R_OK) != 0)
            return errf(why, wl, "cannot read %.200s: %s", v, strerror(errno));
        return 0;
    case KEY_LOCAL_NAME:
        for (const char *p = v; *p != '\0'; p++) {
            if (*p == ' ' || is_ctl(*p) || strchr(":<>/=&'\"", *p) != NULL)
                return errf(why, wl,
                            "'%.64s' is not an element's local name (no prefix, no spaces)", v);
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
    if (k->type == KEY_DURATION || k->type == KEY_SIZE) {
        const struct unit *units = k->type == KEY_DURATION ? duration_units : size_units;
        unit_text(k->min, units, lo, sizeof lo);
        unit_text(k->max, units, hi, sizeof hi);
    } else {
        snprintf(lo, sizeof lo, "%" PRIu64, k->min);
        snprintf(hi, sizeof hi, "%" PRIu64, k->max);
    }
    return errf(why, wl, "'%.64s' is out of range (%s..%s)", v, lo, hi);
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
    for (size_t i = 0; i < e->n && len < sizeof list; i++) {
        const char *sep = i == 0 ? "" : i + 1 < e->n ? ", " : " or ";
        len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", sep, e->name[i]);
    }
    return errf(why, wl, "'%.64s' is not a %s (%s)", v, e->what, list);
}

/* Parse V for K into BASE: see config_int.h. */
int config_set_value(void *base, const struct key_def *k, const char *v, char *why, size_t wl)
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
            return errf(why, wl, "'%.64s' is not a whole number", v);
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
        if (rc != 0)
            return errf(why, wl, "'%.64s' is not a size (bytes, or a whole number of KiB or MiB)",
                        v);
        if (check_bounds(k, bytes, v, why, wl) != 0)
            return -1;
        *(size_t *)(void *)field = bytes;
        return 0;
    }
    case KEY_DURATION: {
        int rc = parse_duration(v, &n);
        if (rc == -2)
            return check_bounds(k, UINT64_MAX, v, why, wl);
        if (rc != 0)
            return errf(why, wl,
                        "'%.64s' is not a duration (a whole number with ms, s or m: 500ms, 30s, "
                        "2m)",
                        v);
        if (check_bounds(k, n, v, why, wl) != 0)
            return -1;
        *(uint64_t *)(void *)field = n;
        return 0;
    }
    case KEY_BOOL: {
        bool b;
        if (config_parse_bool(v, &b) != 0)
            return errf(why, wl, "'%.64s' is not a boolean (yes/no, true/false, on/off, 1/0)", v);
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
    return errf(why, wl, "internal error: unknown key type");
}
