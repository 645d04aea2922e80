/* fuzz_hdrmap.c - libFuzzer target for bridge/hdrmap (and reqid_valid): the
 * input is a request's path, query and client address, one a line, then its
 * headers, "Name:value" one a line. "+N " before a header repeats it N times
 * and a value (or path, query, client) "*N text" is text repeated to N bytes,
 * so that short inputs reach the limits (128 lines, 8 KiB values, 64 KiB in
 * all). One map is
 * reused for every message, twice per input, and compared with a fresh map.
 * Invariants: names lower-case, starting "x-", never x-request-id, unique,
 * found by hdrmap_get; x-http-path and x-http-query as given; x-forwarded-for
 * ends with the client and keeps the right end of the request's own; every
 * copied value is whole request values joined with ", ", all of them when
 * nothing was dropped, and nothing is dropped while every limit holds. */
#include "fuzz.h"
#include "bridge/base/hdrmap.h"
#include "http/reqid.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#define MAX_HEADERS 400        /* header lines taken from one input */
#define MAX_REPEAT 300         /* "+N " */
#define MAX_VALUE (70u << 10)  /* "*N " */
#define MAX_BYTES (256u << 10) /* expanded header bytes per input */

struct header {
    char *name;
    char *value;
    size_t vlen;   /* strlen(value) */
    uint32_t hash; /* of the lower-cased name: cheap comparisons */
};

/* One decoded input. */
struct request {
    char *path, *query, *client;
    struct header h[MAX_HEADERS];
    size_t n;
};

static struct hdrmap g_map; /* reused for every message, like a worker's */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    hdrmap_init(&g_map);
    return 0;
}

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    FUZZ_CHECK(d != NULL, "out of memory");
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

/* "*N text" -> text repeated to N bytes; anything else as is. */
static char *expand_value(const char *v, size_t len)
{
    if (len < 2 || v[0] != '*' || v[1] < '0' || v[1] > '9')
        return dup_n(v, len);
    size_t i = 1, n = 0;
    while (i < len && v[i] >= '0' && v[i] <= '9' && n <= MAX_VALUE)
        n = n * 10 + (size_t)(v[i++] - '0');
    if (i < len && v[i] == ' ')
        i++;
    const char *unit = i < len ? v + i : "v";
    size_t ulen = i < len ? len - i : 1;
    if (n > MAX_VALUE)
        n = MAX_VALUE;
    char *d = malloc(n + 1);
    FUZZ_CHECK(d != NULL, "out of memory");
    for (size_t k = 0; k < n; k += ulen)
        memcpy(d + k, unit, n - k < ulen ? n - k : ulen);
    d[n] = '\0';
    return d;
}

static uint32_t lower_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s != '\0'; s++)
        h = (h ^ (uint8_t)(*s >= 'A' && *s <= 'Z' ? *s + 32 : *s)) * 16777619u;
    return h;
}

/* Is H's name NAME (whose lower_hash is HASH), in any case? */
static bool same_name(const struct header *h, const char *name, uint32_t hash)
{
    return h->hash == hash && strcasecmp(h->name, name) == 0;
}

static void decode(const char *p, const char *end, struct request *rq)
{
    char **first[] = {&rq->path, &rq->query, &rq->client};
    size_t bytes = 0;
    memset(rq, 0, sizeof *rq);
    for (size_t line = 0;; line++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl != NULL ? nl : end;
        if (line < 3) {
            *first[line] = expand_value(p, (size_t)(e - p));
        } else {
            size_t repeat = 1;
            if (p < e && *p == '+') {
                repeat = 0;
                for (p++; p < e && *p >= '0' && *p <= '9'; p++)
                    if (repeat <= MAX_REPEAT)
                        repeat = repeat * 10 + (size_t)(*p - '0');
                if (p < e && *p == ' ')
                    p++;
                if (repeat > MAX_REPEAT)
                    repeat = MAX_REPEAT;
            }
            const char *colon = memchr(p, ':', (size_t)(e - p));
            char *name = dup_n(p, (size_t)((colon != NULL ? colon : e) - p));
            char *value =
                colon != NULL ? expand_value(colon + 1, (size_t)(e - colon - 1)) : dup_n("", 0);
            size_t nlen = strlen(name), vlen = strlen(value);
            for (size_t k = 0;
                 k < repeat && rq->n < MAX_HEADERS && bytes + nlen + vlen <= MAX_BYTES; k++) {
                rq->h[rq->n].name = dup_n(name, nlen);
                rq->h[rq->n].value = dup_n(value, vlen);
                rq->h[rq->n].vlen = vlen;
                rq->h[rq->n].hash = lower_hash(name);
                rq->n++;
                bytes += nlen + vlen;
            }
            free(name);
            free(value);
        }
        if (nl == NULL)
            break;
        p = nl + 1;
    }
    for (size_t i = 0; i < 3; i++)
        if (*first[i] == NULL)
            *first[i] = dup_n("", 0);
}

static void request_free(struct request *rq)
{
    free(rq->path);
    free(rq->query);
    free(rq->client);
    for (size_t i = 0; i < rq->n; i++) {
        free(rq->h[i].name);
        free(rq->h[i].value);
    }
}

static bool is_xff(const char *name)
{
    return strcasecmp(name, "x-forwarded-for") == 0;
}

/* What hdrmap_wanted must say, from ingest-bridge(8), AMQP MAPPING. */
static bool wanted_model(const char *name)
{
    return (name[0] == 'x' || name[0] == 'X') && name[1] == '-' &&
           strcasecmp(name, "x-request-id") != 0 && strcasecmp(name, "x-http-path") != 0 &&
           strcasecmp(name, "x-http-query") != 0;
}

/* Is VALUE the ", "-join of some of NAME's values, in request order (all of
 * them when ALL)? Only asked when none of those values holds a ','. */
static bool joined_from(const struct request *rq, const char *name, const char *value, bool all)
{
    const char *v = value;
    bool any = false;
    uint32_t hash = lower_hash(name);
    for (size_t i = 0; i < rq->n; i++) {
        if (!same_name(&rq->h[i], name, hash))
            continue;
        const char *part = rq->h[i].value;
        size_t plen = rq->h[i].vlen;
        const char *sep = any ? ", " : "";
        size_t slen = strlen(sep);
        if (strncmp(v, sep, slen) == 0 && strncmp(v + slen, part, plen) == 0 &&
            (v[slen + plen] == '\0' || v[slen + plen] == ',')) {
            v += slen + plen;
            any = true;
        } else if (all) {
            return false;
        }
    }
    return any && *v == '\0';
}

/* The request's X-Forwarded-For lines, as the map joins them (before the
 * 8 KiB trim). Caller frees. */
static char *xff_joined(const struct request *rq)
{
    size_t len = 0;
    for (size_t i = 0; i < rq->n; i++)
        if (is_xff(rq->h[i].name) && rq->h[i].value[0] != '\0')
            len += rq->h[i].vlen + 2;
    char *j = malloc(len + 1);
    FUZZ_CHECK(j != NULL, "out of memory");
    size_t at = 0;
    for (size_t i = 0; i < rq->n; i++) {
        if (!is_xff(rq->h[i].name) || rq->h[i].value[0] == '\0')
            continue;
        if (at > 0) {
            memcpy(j + at, ", ", 2);
            at += 2;
        }
        memcpy(j + at, rq->h[i].value, rq->h[i].vlen);
        at += rq->h[i].vlen;
    }
    j[at] = '\0';
    return j;
}

/* Could a limit have been hit? Counted the map's way, over-estimating what
 * repeated names cost: each line as if its name's whole joined value were
 * copied again. */
static bool within_limits(const struct request *rq)
{
    size_t lines = 0, budget = 0;
    if (strlen(rq->query) > HDRMAP_VALUE_MAX)
        return false;
    for (size_t i = 0; i < rq->n; i++) {
        const char *name = rq->h[i].name;
        if (!wanted_model(name))
            continue;
        if (++lines > HDRMAP_MAX_COPIED || strlen(name) > HDRMAP_NAME_MAX ||
            rq->h[i].vlen > HDRMAP_VALUE_MAX)
            return false;
        if (is_xff(name))
            continue;
        size_t joined = 0, count = 0;
        for (size_t k = 0; k < rq->n; k++)
            if (same_name(&rq->h[k], name, rq->h[i].hash))
                joined += rq->h[k].vlen + (count++ > 0 ? 2 : 0);
        if (joined > HDRMAP_VALUE_MAX)
            return false;
        budget += strlen(name) + joined + 2;
    }
    return budget <= HDRMAP_COPY_MAX;
}

static void check_map(const struct hdrmap *m, const struct request *rq)
{
    FUZZ_CHECK(m->n >= 1 && m->n <= HDRMAP_MAX_COPIED + 3 && m->n <= m->cap, "n %zu", m->n);
    FUZZ_CHECK(strcmp(m->kv[0].name, "x-http-path") == 0 && strcmp(m->kv[0].value, rq->path) == 0,
               "x-http-path");
    bool ok_limits = within_limits(rq);
    if (ok_limits)
        FUZZ_CHECK(m->dropped == 0, "%zu dropped within every limit", m->dropped);
    for (size_t i = 0; i < m->n; i++) {
        const char *name = m->kv[i].name, *value = m->kv[i].value;
        FUZZ_CHECK(name != NULL && value != NULL, "entry %zu", i);
        FUZZ_CHECK(strncmp(name, "x-", 2) == 0, "name %s", name);
        FUZZ_CHECK(strcmp(name, "x-request-id") != 0, "x-request-id copied");
        for (const char *c = name; *c != '\0'; c++)
            FUZZ_CHECK(*c < 'A' || *c > 'Z', "name %s not lower-case", name);
        FUZZ_CHECK(strlen(name) <= HDRMAP_NAME_MAX, "name of %zu bytes", strlen(name));
        for (size_t j = 0; j < i; j++)
            FUZZ_CHECK(strcmp(m->kv[j].name, name) != 0, "%s twice", name);
        FUZZ_CHECK(hdrmap_get(m, name) == value, "hdrmap_get(%s)", name);
        if (i == 0 || strcmp(name, "x-forwarded-for") == 0)
            continue;
        if (strcmp(name, "x-http-query") == 0) {
            FUZZ_CHECK(strcmp(value, rq->query) == 0, "x-http-query");
            continue;
        }
        FUZZ_CHECK(strlen(value) <= HDRMAP_VALUE_MAX, "%s: value of %zu bytes", name,
                   strlen(value));
        bool commas = false;
        uint32_t hash = lower_hash(name);
        for (size_t k = 0; k < rq->n && !commas; k++)
            if (same_name(&rq->h[k], name, hash) && strchr(rq->h[k].value, ',') != NULL)
                commas = true;
        if (!commas)
            FUZZ_CHECK(joined_from(rq, name, value, m->dropped == 0),
                       "%s: \"%.80s\" is not whole request values joined", name, value);
    }

    /* x-http-query as given, when it fits. */
    const char *q = hdrmap_get(m, "x-http-query");
    FUZZ_CHECK((q != NULL) == (rq->query[0] != '\0' && strlen(rq->query) <= HDRMAP_VALUE_MAX),
               "x-http-query present: %d", q != NULL);

    /* Every wanted header is there when nothing was dropped. */
    if (m->dropped == 0)
        for (size_t k = 0; k < rq->n; k++)
            if (wanted_model(rq->h[k].name) && !is_xff(rq->h[k].name)) {
                char lower[HDRMAP_NAME_MAX + 1];
                size_t len = strlen(rq->h[k].name);
                FUZZ_CHECK(len <= HDRMAP_NAME_MAX, "a %zu-byte name, none dropped", len);
                for (size_t c = 0; c <= len; c++)
                    lower[c] = (char)(rq->h[k].name[c] >= 'A' && rq->h[k].name[c] <= 'Z'
                                          ? rq->h[k].name[c] + 32
                                          : rq->h[k].name[c]);
                FUZZ_CHECK(hdrmap_get(m, lower) != NULL, "%s missing, none dropped", lower);
            }

    /* x-forwarded-for: the request's own (its right end), then the client. */
    const char *xff = hdrmap_get(m, "x-forwarded-for");
    char *joined = xff_joined(rq);
    size_t clen = strlen(rq->client);
    if (clen == 0 && joined[0] == '\0') {
        FUZZ_CHECK(xff == NULL, "x-forwarded-for from nothing: %s", xff);
    } else if (clen > 0) {
        FUZZ_CHECK(xff != NULL, "x-forwarded-for missing");
        size_t xlen = strlen(xff);
        FUZZ_CHECK(xlen >= clen && strcmp(xff + xlen - clen, rq->client) == 0,
                   "x-forwarded-for \"%.80s\" does not end with the client", xff);
    }
    if (xff != NULL && m->dropped == 0) {
        /* Without the client: a suffix of the joined lines, cut after a comma. */
        size_t own = strlen(xff) - (clen > 0 ? clen : 0);
        if (clen > 0 && own > 0)
            own -= 2;
        FUZZ_CHECK(own <= HDRMAP_VALUE_MAX, "own X-Forwarded-For of %zu bytes", own);
        size_t jlen = strlen(joined);
        FUZZ_CHECK(own <= jlen && strncmp(xff, joined + jlen - own, own) == 0,
                   "x-forwarded-for \"%.80s\" is not the right end of the request's", xff);
        if (jlen <= HDRMAP_VALUE_MAX)
            FUZZ_CHECK(own == jlen, "X-Forwarded-For cut though it fits");
        else if (own > 0)
            FUZZ_CHECK(strchr(", \t", joined[jlen - own - 1]) != NULL,
                       "X-Forwarded-For cut inside an address");
    }
    free(joined);
}

static int build(struct hdrmap *m, const struct request *rq)
{
    if (hdrmap_begin(m, rq->path, rq->query) != 0)
        return -1;
    for (size_t i = 0; i < rq->n; i++)
        if (hdrmap_add(m, rq->h[i].name, rq->h[i].value) != 0)
            return -1;
    return hdrmap_finish(m, rq->client);
}

static bool same_map(const struct hdrmap *a, const struct hdrmap *b)
{
    if (a->n != b->n || a->dropped != b->dropped)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->kv[i].name, b->kv[i].name) != 0 ||
            strcmp(a->kv[i].value, b->kv[i].value) != 0)
            return false;
    return true;
}

/* reqid_valid against ingest-bridge(8): 1..128 bytes, each 0x21..0x7e. */
static void check_reqid(const char *s)
{
    size_t len = strlen(s);
    bool want = len >= 1 && len <= REQID_MAX;
    for (size_t i = 0; i < len && want; i++)
        want = (unsigned char)s[i] >= 0x21 && (unsigned char)s[i] <= 0x7e;
    FUZZ_CHECK(reqid_valid(s, len) == want, "reqid_valid(\"%.40s\", %zu)", s, len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct request rq;
    decode((const char *)data, (const char *)data + size, &rq);

    for (size_t i = 0; i < rq.n; i++) {
        FUZZ_CHECK(hdrmap_wanted(rq.h[i].name) == wanted_model(rq.h[i].name), "wanted(%s)",
                   rq.h[i].name);
        check_reqid(rq.h[i].value);
    }

    /* The reused map, twice; then a fresh one: the same message each time. */
    FUZZ_CHECK(build(&g_map, &rq) == 0, "out of memory");
    check_map(&g_map, &rq);
    struct hdrmap fresh;
    hdrmap_init(&fresh);
    FUZZ_CHECK(build(&fresh, &rq) == 0, "out of memory");
    FUZZ_CHECK(same_map(&g_map, &fresh), "the reused map differs from a fresh one");
    FUZZ_CHECK(build(&g_map, &rq) == 0, "out of memory");
    FUZZ_CHECK(same_map(&g_map, &fresh), "the reused map differs the second time");
    hdrmap_free(&fresh);

    request_free(&rq);
    return 0;
}
