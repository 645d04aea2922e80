/* trace.c - W3C trace context: checked, passed on, or started (trace.h). */
#include "bridge/base/trace.h"

#include <string.h>

#include "bridge/base/seed.h"
#include "bridge/base/template.h"

static const char hex[] = "0123456789abcdef";

void trace_gen_init(struct trace_gen *g)
{
    seed_fill(&g->s, sizeof g->s, g);
}

static void put_hex(char *out, uint64_t v, int digits)
{
    for (int i = digits - 1; i >= 0; i--, v >>= 4)
        out[i] = hex[v & 15];
}

void trace_parent_new(struct trace_gen *g, char out[TRACE_PARENT_LEN + 1])
{
    uint64_t a, b, c;
    do {
        a = seed_mix(&g->s);
        b = seed_mix(&g->s);
        c = seed_mix(&g->s);
    } while ((a | b) == 0 || c == 0); /* all zeros is invalid */
    memcpy(out, "00-", 3);
    put_hex(out + 3, a, 16);
    put_hex(out + 19, b, 16);
    out[35] = '-';
    put_hex(out + 36, c, 16);
    memcpy(out + 52, "-01", 3); /* sampled: a consumer linking to it records */
    out[TRACE_PARENT_LEN] = '\0';
}

/* N lower-case hex digits at P, not all '0' when NONZERO. */
static bool is_hex(const char *p, size_t n, bool nonzero)
{
    bool zero = true;
    for (size_t i = 0; i < n; i++) {
        if (strchr(hex, p[i]) == NULL || p[i] == '\0')
            return false;
        zero = zero && p[i] == '0';
    }
    return !(nonzero && zero);
}

bool trace_parent_parse(const char *v, char out[TRACE_PARENT_LEN + 1])
{
    size_t len = strlen(v);
    if (len < TRACE_PARENT_LEN || !is_hex(v, 2, false) || memcmp(v, "ff", 2) == 0)
        return false;
    bool v00 = memcmp(v, "00", 2) == 0;
    /* Version 00 is exactly 55 bytes; a later one may add fields after a '-'. */
    if ((v00 && len != TRACE_PARENT_LEN) || (!v00 && len > TRACE_PARENT_LEN && v[55] != '-'))
        return false;
    if (v[2] != '-' || !is_hex(v + 3, 32, true) || v[35] != '-' || !is_hex(v + 36, 16, true) ||
        v[52] != '-' || !is_hex(v + 53, 2, false))
        return false;
    memcpy(out, v, TRACE_PARENT_LEN);
    out[0] = out[1] = '0';
    /* Of a later version's flags only the one version 00 knows, sampled. */
    if (!v00) {
        out[53] = '0';
        out[54] = strchr("13579bdf", v[54]) != NULL ? '1' : '0';
    }
    out[TRACE_PARENT_LEN] = '\0';
    return true;
}

static bool lcalpha_digit(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool lcalpha(char c)
{
    return c >= 'a' && c <= 'z';
}

/* One tracestate key: a simple key (lcalpha, then up to 255 of lcalpha,
 * digits, '_', '-', '*', '/') or tenant@system (the tenant lcalpha or a
 * digit first, at most 241; the system lcalpha first, at most 14). */
static bool state_key(const char *k, size_t n)
{
    if (n == 0 || n > 256 || !lcalpha_digit(k[0]))
        return false;
    const char *at = memchr(k, '@', n);
    if (at == NULL && !lcalpha(k[0]))
        return false;
    if (at != NULL &&
        (memchr(at + 1, '@', n - (size_t)(at - k) - 1) != NULL || (size_t)(k + n - at - 1) == 0 ||
         (size_t)(k + n - at - 1) > 14 || at - k > 241 || !lcalpha(at[1])))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!lcalpha_digit(k[i]) && strchr("_-*/@", k[i]) == NULL)
            return false;
    return true;
}

/* A tracestate value: 1 to 256 of 0x20..0x7e but ',' and '=', not ending
 * in a space. */
static bool state_value(const char *v, size_t n)
{
    if (n == 0 || n > 256 || v[n - 1] == ' ')
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)v[i] < 0x20 || (unsigned char)v[i] > 0x7e || v[i] == ',' || v[i] == '=')
            return false;
    return true;
}

static const char *skip_ows(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    return p;
}

bool trace_state_valid(const char *v, size_t len)
{
    if (len > TRACE_STATE_MAX)
        return false;
    const char *p = v, *end = v + len;
    size_t members = 0;
    while (p <= end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *stop = comma != NULL ? comma : end;
        const char *a = skip_ows(p, stop), *b = stop;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        if (b > a) { /* an empty member is allowed and skipped */
            const char *eq = memchr(a, '=', (size_t)(b - a));
            if (eq == NULL || !state_key(a, (size_t)(eq - a)) ||
                !state_value(eq + 1, (size_t)(b - eq - 1)) || ++members > TRACE_STATE_MEMBERS)
                return false;
        }
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    return true;
}

bool trace_baggage_valid(const char *v, size_t len)
{
    if (len == 0 || len > TRACE_BAGGAGE_MAX)
        return false;
    const char *p = v, *end = v + len;
    size_t members = 0;
    for (;;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *stop = comma != NULL ? comma : end;
        const char *a = skip_ows(p, stop);
        const char *k = a;
        while (k < stop && tmpl_token_char(*k))
            k++;
        if (k == a || ++members > TRACE_BAGGAGE_MEMBERS)
            return false;
        const char *q = skip_ows(k, stop);
        if (q >= stop || *q != '=')
            return false;
        /* The value and its properties: printable ASCII, no '"' or '\\'. */
        for (q++; q < stop; q++)
            if ((unsigned char)*q < 0x20 || (unsigned char)*q > 0x7e || *q == '"' || *q == '\\')
                return false;
        if (comma == NULL)
            return true;
        p = comma + 1;
    }
}
