/* hdrmap.c - HTTP request headers to AMQP message headers (see hdrmap.h).
 *
 * Memory: the kv table is allocated once at its final size (the limits bound
 * the entries); every string lives in one growable buffer (buf) that
 * hdrmap_clear rewinds. When buf must grow it is copied to a new block and
 * the kv pointers are moved with it, so they are always valid. The request's
 * X-Forwarded-For lines are joined in a second small buffer (xff) until
 * hdrmap_finish appends the client address. A warm map allocates nothing. */
#include "bridge/base/hdrmap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* path, query, the copied headers, x-forwarded-for */
#define HDRMAP_MAX_ENTRIES (HDRMAP_MAX_COPIED + 3 + HDRMAP_MAX_OWN)
#define HDRMAP_BUF_MIN 4096     /* first size of buf */
#define HDRMAP_KEEP (32u << 10) /* bigger buffers are freed by hdrmap_clear */

struct hdrmap_ent {
    uint32_t hash;      /* FNV-1a of the lower-cased name */
    uint32_t name_len;  /* strlen(kv.name) */
    uint32_t value_len; /* strlen(kv.value) */
};

/* Names the bridge sets itself, or that the message carries elsewhere: a
 * client must not forge them. */
static const char *const reserved[] = {"x-request-id", "x-http-path", "x-http-query"};

static const char xff_name[] = "x-forwarded-for";

static unsigned char ascii_lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c + ('a' - 'A')) : c;
}

/* Case-insensitive (ASCII) equality, whatever the locale. */
static bool ascii_equal(const char *a, const char *b)
{
    for (; *a != '\0' && *b != '\0'; a++, b++)
        if (ascii_lower((unsigned char)*a) != ascii_lower((unsigned char)*b))
            return false;
    return *a == *b;
}

/* Hash of NAME lower-cased; its length in *len. */
static uint32_t name_hash(const char *name, size_t *len)
{
    uint32_t h = 2166136261u;
    const unsigned char *p = (const unsigned char *)name;
    for (; *p != '\0'; p++)
        h = (h ^ ascii_lower(*p)) * 16777619u;
    *len = (size_t)(p - (const unsigned char *)name);
    return h;
}

void hdrmap_init(struct hdrmap *m)
{
    memset(m, 0, sizeof *m);
}

void hdrmap_clear(struct hdrmap *m)
{
    m->n = 0;
    m->dropped = 0;
    m->used = 0;
    m->copied = 0;
    m->copied_bytes = 0;
    m->xff_len = 0;
    if (m->size > HDRMAP_KEEP) {
        free(m->buf);
        m->buf = NULL;
        m->size = 0;
    }
}

void hdrmap_free(struct hdrmap *m)
{
    free(m->kv);
    free(m->ent);
    free(m->buf);
    free(m->xff);
    hdrmap_init(m);
}

bool hdrmap_wanted(const char *name)
{
    if (name == NULL || (name[0] != 'x' && name[0] != 'X') || name[1] != '-')
        return false;
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
        if (ascii_equal(name, reserved[i]))
            return false;
    return true;
}

/* The kv table at its final size, once per map. */
static int ensure_tables(struct hdrmap *m)
{
    if (m->kv != NULL)
        return 0;
    m->kv = calloc(HDRMAP_MAX_ENTRIES, sizeof *m->kv);
    m->ent = calloc(HDRMAP_MAX_ENTRIES, sizeof *m->ent);
    if (m->kv == NULL || m->ent == NULL) {
        free(m->kv);
        free(m->ent);
        m->kv = NULL;
        m->ent = NULL;
        return -1;
    }
    m->cap = HDRMAP_MAX_ENTRIES;
    return 0;
}

/* Room for NEED more bytes in buf. A new block rather than realloc: the kv
 * pointers are moved while the old block is still valid. */
static int reserve(struct hdrmap *m, size_t need)
{
    if (m->size - m->used >= need)
        return 0;
    if (need > SIZE_MAX / 4 - m->used)
        return -1;
    size_t size = m->size != 0 ? m->size : HDRMAP_BUF_MIN;
    while (size - m->used < need)
        size *= 2;
    char *nb = malloc(size);
    if (nb == NULL)
        return -1;
    if (m->used > 0)
        memcpy(nb, m->buf, m->used);
    for (size_t i = 0; i < m->n; i++) {
        m->kv[i].name = nb + (m->kv[i].name - m->buf);
        m->kv[i].value = nb + (m->kv[i].value - m->buf);
    }
    free(m->buf);
    m->buf = nb;
    m->size = size;
    return 0;
}

/* Append "NAME\0VALUE\0" to buf (NAME lower-cased) as a new entry. The
 * caller has checked the limits; lengths are below HDRMAP_COPY_MAX or come
 * from the bridge itself. */
static int push(struct hdrmap *m, const char *name, size_t nlen, uint32_t hash, const char *value,
                size_t vlen)
{
    if (m->n >= m->cap || nlen > UINT32_MAX || vlen > UINT32_MAX ||
        reserve(m, nlen + vlen + 2) != 0)
        return -1;
    char *dst = m->buf + m->used;
    for (size_t i = 0; i < nlen; i++)
        dst[i] = (char)ascii_lower((unsigned char)name[i]);
    dst[nlen] = '\0';
    memcpy(dst + nlen + 1, value, vlen);
    dst[nlen + 1 + vlen] = '\0';
    m->kv[m->n] = (struct hdrmap_kv){dst, dst + nlen + 1};
    m->ent[m->n] = (struct hdrmap_ent){hash, (uint32_t)nlen, (uint32_t)vlen};
    m->n++;
    m->used += nlen + vlen + 2;
    return 0;
}

static int push_str(struct hdrmap *m, const char *name, const char *value, size_t vlen)
{
    size_t nlen;
    uint32_t h = name_hash(name, &nlen);
    return push(m, name, nlen, h, value, vlen);
}

int hdrmap_begin(struct hdrmap *m, const char *path, const char *query)
{
    hdrmap_clear(m);
    if (ensure_tables(m) != 0)
        return -1;
    if (path == NULL)
        path = "";
    if (push_str(m, "x-http-path", path, strlen(path)) != 0)
        return -1;
    if (query != NULL && query[0] != '\0') {
        size_t qlen = strlen(query);
        if (qlen > HDRMAP_VALUE_MAX)
            m->dropped++;
        else if (push_str(m, "x-http-query", query, qlen) != 0)
            return -1;
    }
    return 0;
}

/* Drop whole addresses from the left of S (LEN bytes) until it fits in MAX:
 * the rightmost ones were added by the proxies nearest to us. */
static size_t trim_left(char *s, size_t len, size_t max)
{
    size_t start = 0;
    while (len - start > max) {
        char *comma = memchr(s + start, ',', len - start);
        if (comma == NULL)
            return 0;
        start = (size_t)(comma - s) + 1;
        while (start < len && (s[start] == ' ' || s[start] == '\t'))
            start++;
    }
    memmove(s, s + start, len - start);
    return len - start;
}

/* One X-Forwarded-For line: joined to the previous ones in xff. */
static int xff_append(struct hdrmap *m, const char *value, size_t vlen)
{
    if (vlen == 0)
        return 0;
    size_t sep = m->xff_len > 0 ? 2 : 0;
    size_t need = m->xff_len + sep + vlen;
    if (need > m->xff_size) {
        size_t size = m->xff_size != 0 ? m->xff_size : 256;
        while (size < need)
            size *= 2;
        char *nx = realloc(m->xff, size);
        if (nx == NULL)
            return -1;
        m->xff = nx;
        m->xff_size = size;
    }
    if (sep != 0)
        memcpy(m->xff + m->xff_len, ", ", 2);
    memcpy(m->xff + m->xff_len + sep, value, vlen);
    m->xff_len = trim_left(m->xff, need, HDRMAP_VALUE_MAX);
    return 0;
}

/* Join VALUE to entry I, whose name repeats. */
static int join(struct hdrmap *m, size_t i, const char *value, size_t vlen)
{
    struct hdrmap_ent *e = &m->ent[i];
    size_t total = (size_t)e->value_len + 2 + vlen;
    if (total > HDRMAP_VALUE_MAX) {
        m->dropped++;
        return 0;
    }
    /* At the end of buf the value grows in place; elsewhere it is copied to
     * the end (the old copy stays unused until hdrmap_clear). */
    bool tail = m->kv[i].value + e->value_len + 1 == m->buf + m->used;
    size_t cost = tail ? 2 + vlen : total + 1;
    if (m->copied_bytes + cost > HDRMAP_COPY_MAX) {
        m->dropped++;
        return 0;
    }
    if (reserve(m, cost) != 0)
        return -1;
    char *dst = tail ? m->kv[i].value : m->buf + m->used;
    if (!tail)
        memcpy(dst, m->kv[i].value, e->value_len);
    memcpy(dst + e->value_len, ", ", 2);
    memcpy(dst + e->value_len + 2, value, vlen);
    dst[total] = '\0';
    m->kv[i].value = dst;
    e->value_len = (uint32_t)total;
    m->used += cost;
    m->copied++;
    m->copied_bytes += cost;
    return 0;
}

int hdrmap_add(struct hdrmap *m, const char *name, const char *value)
{
    if (!hdrmap_wanted(name))
        return 0;
    if (ensure_tables(m) != 0)
        return -1;
    if (value == NULL)
        value = "";
    size_t nlen;
    uint32_t h = name_hash(name, &nlen);
    size_t vlen = strlen(value);
    if (m->copied >= HDRMAP_MAX_COPIED || nlen > HDRMAP_NAME_MAX || vlen > HDRMAP_VALUE_MAX) {
        m->dropped++;
        return 0;
    }
    if (ascii_equal(name, xff_name)) {
        if (xff_append(m, value, vlen) != 0)
            return -1;
        m->copied++;
        return 0;
    }
    for (size_t i = 0; i < m->n; i++) {
        const struct hdrmap_ent *e = &m->ent[i];
        if (e->hash == h && e->name_len == nlen && ascii_equal(m->kv[i].name, name))
            return join(m, i, value, vlen);
    }
    size_t cost = nlen + vlen + 2;
    if (m->copied_bytes + cost > HDRMAP_COPY_MAX) {
        m->dropped++;
        return 0;
    }
    if (push(m, name, nlen, h, value, vlen) != 0)
        return -1;
    m->copied++;
    m->copied_bytes += cost;
    return 0;
}

int hdrmap_put(struct hdrmap *m, const char *name, const char *value)
{
    if (ensure_tables(m) != 0)
        return -1;
    size_t nlen;
    uint32_t h = name_hash(name, &nlen);
    for (size_t i = 0; i < m->n; i++) {
        const struct hdrmap_ent *e = &m->ent[i];
        if (e->hash == h && e->name_len == nlen && ascii_equal(m->kv[i].name, name)) {
            /* Its bytes stay in buf until the next message. */
            memmove(&m->kv[i], &m->kv[i + 1], (m->n - i - 1) * sizeof *m->kv);
            memmove(&m->ent[i], &m->ent[i + 1], (m->n - i - 1) * sizeof *m->ent);
            m->n--;
            break;
        }
    }
    return push(m, name, nlen, h, value, strlen(value));
}

int hdrmap_finish(struct hdrmap *m, const char *client)
{
    if (ensure_tables(m) != 0)
        return -1;
    if (client == NULL)
        client = "";
    size_t clen = strlen(client);
    if (m->xff_len == 0 && clen == 0)
        return 0;
    size_t sep = m->xff_len > 0 && clen > 0 ? 2 : 0;
    size_t vlen = m->xff_len + sep + clen;
    size_t nlen = sizeof xff_name - 1;
    /* Written in place at the end of buf rather than through push(): the
     * value comes in three pieces. */
    if (m->n >= m->cap || vlen > UINT32_MAX || reserve(m, nlen + vlen + 2) != 0)
        return -1;
    char *dst = m->buf + m->used;
    memcpy(dst, xff_name, nlen + 1);
    char *v = dst + nlen + 1;
    if (m->xff_len > 0)
        memcpy(v, m->xff, m->xff_len);
    memcpy(v + m->xff_len, ", ", sep);
    memcpy(v + m->xff_len + sep, client, clen);
    v[vlen] = '\0';
    size_t unused;
    m->kv[m->n] = (struct hdrmap_kv){dst, v};
    m->ent[m->n] =
        (struct hdrmap_ent){name_hash(xff_name, &unused), (uint32_t)nlen, (uint32_t)vlen};
    m->n++;
    m->used += nlen + vlen + 2;
    return 0;
}

const char *hdrmap_get(const struct hdrmap *m, const char *name)
{
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->kv[i].name, name) == 0)
            return m->kv[i].value;
    return NULL;
}
