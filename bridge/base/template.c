/* template.c - path patterns with captures, and templates over them and
 * request headers (template.h). */
#include "bridge/base/template.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static bool name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

bool tmpl_token_char(char c)
{
    return name_char(c) || (c != '\0' && strchr("!#$%&'*+-.^`|~", c) != NULL);
}

/* "'A': MSG" into WHY (at most 64 bytes of A, ALEN long). Always -1. */
static int fail(char *why, size_t wl, const char *a, size_t alen, const char *msg)
{
    if (why != NULL && wl > 0)
        snprintf(why, wl, "'%.*s': %s", (int)(alen < 64 ? alen : 64), a, msg);
    return -1;
}

bool path_has_captures(const char *pattern)
{
    return strchr(pattern, '{') != NULL;
}

/* The next segment of a path: *S points just past a '/' (NULL: no more);
 * SEG gets the text up to the next '/' or the end, and *S moves past that
 * '/' (NULL at the end). "/" is one empty segment, "/a/" is "a" and "". */
static bool next_segment(const char **s, struct tmpl_span *seg)
{
    if (*s == NULL)
        return false;
    size_t n = strcspn(*s, "/");
    *seg = (struct tmpl_span){*s, n};
    *s = (*s)[n] == '/' ? *s + n + 1 : NULL;
    return true;
}

static bool is_capture(struct tmpl_span seg)
{
    return seg.n >= 2 && seg.p[0] == '{' && seg.p[seg.n - 1] == '}';
}

static bool same(struct tmpl_span a, struct tmpl_span b)
{
    return a.n == b.n && memcmp(a.p, b.p, a.n) == 0;
}

int path_pattern_check(const char *pattern, char *why, size_t wl)
{
    struct tmpl_span names[TMPL_MAX_CAPTURES], seg;
    size_t n = 0;
    for (const char *s = pattern + 1; next_segment(&s, &seg);) {
        if (memchr(seg.p, '{', seg.n) == NULL && memchr(seg.p, '}', seg.n) == NULL)
            continue;
        if (!is_capture(seg) || memchr(seg.p + 1, '{', seg.n - 2) != NULL ||
            memchr(seg.p + 1, '}', seg.n - 2) != NULL)
            return fail(why, wl, seg.p, seg.n, "a capture is a whole segment, /{name}/");
        struct tmpl_span name = {seg.p + 1, seg.n - 2};
        if (name.n == 0 || name.n > TMPL_NAME_MAX)
            return fail(why, wl, seg.p, seg.n, "a capture's name has 1 to 32 characters");
        for (size_t i = 0; i < name.n; i++)
            if (!name_char(name.p[i]))
                return fail(why, wl, seg.p, seg.n, "a capture's name is letters, digits and '_'");
        for (size_t i = 0; i < n; i++)
            if (same(names[i], name))
                return fail(why, wl, seg.p, seg.n, "captured twice");
        if (n == TMPL_MAX_CAPTURES)
            return fail(why, wl, seg.p, seg.n, "more than 8 captures in one path");
        names[n++] = name;
    }
    return 0;
}

bool path_match(const char *pattern, const char *path, struct tmpl_span *caps, size_t *ncaps)
{
    if (pattern[0] != '/' || path[0] != '/')
        return false;
    size_t n = 0;
    struct tmpl_span ps, qs;
    const char *p = pattern + 1, *q = path + 1;
    for (;;) {
        bool more_p = next_segment(&p, &ps), more_q = next_segment(&q, &qs);
        if (!more_p || !more_q) {
            if (more_p || more_q)
                return false;
            break;
        }
        if (!is_capture(ps)) {
            if (!same(ps, qs))
                return false;
        } else if (qs.n == 0) {
            return false;
        } else {
            if (caps != NULL && n < TMPL_MAX_CAPTURES)
                caps[n] = qs;
            n++;
        }
    }
    if (ncaps != NULL)
        *ncaps = n;
    return true;
}

bool path_patterns_overlap(const char *a, const char *b)
{
    struct tmpl_span as, bs;
    const char *p = a + 1, *q = b + 1;
    for (;;) {
        bool more_a = next_segment(&p, &as), more_b = next_segment(&q, &bs);
        if (!more_a || !more_b)
            return !more_a && !more_b;
        if (!is_capture(as) && !is_capture(bs) && !same(as, bs))
            return false;
    }
}

/* The index of capture NAME (LEN bytes) in PATTERN, or -1. */
static long capture_index(const char *pattern, const char *name, size_t len)
{
    struct tmpl_span seg, want = {name, len};
    long i = 0;
    for (const char *s = pattern + 1; next_segment(&s, &seg);) {
        if (!is_capture(seg))
            continue;
        if (same((struct tmpl_span){seg.p + 1, seg.n - 2}, want))
            return i;
        i++;
    }
    return -1;
}

void tmpl_free(struct tmpl *t)
{
    free(t->buf);
    memset(t, 0, sizeof *t);
}

static const char header_prefix[] = "header:";

int tmpl_parse(struct tmpl *t, const char *text, const char *pattern, char *why, size_t wl)
{
    memset(t, 0, sizeof *t);
    size_t len = strlen(text);
    /* Every part's text lands in BUF, each followed by a NUL. */
    if ((t->buf = malloc(2 * len + 2)) == NULL) {
        if (why != NULL && wl > 0)
            snprintf(why, wl, "out of memory");
        return -1;
    }
    char *w = t->buf;
    const char *p = text;
    while (*p != '\0') {
        if (t->n == TMPL_MAX_PARTS) {
            tmpl_free(t);
            return fail(why, wl, text, len, "more than 16 parts");
        }
        struct tmpl_part *part = &t->part[t->n];
        if (*p == '}') {
            tmpl_free(t);
            return fail(why, wl, text, len, "'}' without '{'");
        }
        if (*p != '{') {
            size_t n = strcspn(p, "{}");
            *part = (struct tmpl_part){TMPL_LIT, w, n, 0};
            memcpy(w, p, n);
            w[n] = '\0';
            w += n + 1;
            p += n;
            t->n++;
            continue;
        }
        const char *close = strchr(p, '}');
        const char *open2 = strchr(p + 1, '{');
        if (close == NULL || (open2 != NULL && open2 < close)) {
            tmpl_free(t);
            return fail(why, wl, text, len, "'{' without '}'");
        }
        const char *name = p + 1;
        size_t nlen = (size_t)(close - name);
        bool header = nlen > strlen(header_prefix) &&
                      strncasecmp(name, header_prefix, strlen(header_prefix)) == 0;
        if (header) {
            name += strlen(header_prefix);
            nlen -= strlen(header_prefix);
            bool ok = nlen <= TMPL_HEADER_MAX;
            for (size_t i = 0; ok && i < nlen; i++)
                ok = tmpl_token_char(name[i]);
            if (!ok) {
                tmpl_free(t);
                return fail(why, wl, p, (size_t)(close - p) + 1,
                            "not a header name (1 to 64 token characters)");
            }
            *part = (struct tmpl_part){TMPL_HEADER, w, nlen, 0};
        } else {
            long ci = pattern != NULL ? capture_index(pattern, name, nlen) : -1;
            if (ci < 0) {
                tmpl_free(t);
                return fail(why, wl, p, (size_t)(close - p) + 1,
                            "is not a capture of the route's path");
            }
            *part = (struct tmpl_part){TMPL_CAPTURE, w, nlen, (size_t)ci};
        }
        memcpy(w, name, nlen);
        w[nlen] = '\0';
        w += nlen + 1;
        t->dynamic = true;
        t->n++;
        p = close + 1;
    }
    return 0;
}

bool tmpl_value_safe(const char *v, size_t len)
{
    if (len == 0 || len > TMPL_VALUE_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!name_char(v[i]) && v[i] != '-')
            return false;
    return true;
}

int tmpl_expand(const struct tmpl *t, const struct tmpl_span *caps, tmpl_header_fn hdr, void *arg,
                char *out, char *why, size_t wl)
{
    size_t used = 0;
    for (size_t i = 0; i < t->n; i++) {
        const struct tmpl_part *part = &t->part[i];
        const char *v = part->text;
        size_t vlen = part->len;
        if (part->kind == TMPL_CAPTURE) {
            v = caps[part->capture].p;
            vlen = caps[part->capture].n;
            if (!tmpl_value_safe(v, vlen)) {
                if (why != NULL && wl > 0)
                    snprintf(why, wl,
                             "path segment {%s} is '%.*s': 1 to 255 letters, digits, '-' or '_' "
                             "may be routed on",
                             part->text, (int)(vlen < 64 ? vlen : 64), v);
                return -1;
            }
        } else if (part->kind == TMPL_HEADER) {
            int count = 0;
            v = hdr != NULL ? hdr(arg, part->text, &count) : NULL;
            vlen = v != NULL ? strlen(v) : 0;
            const char *wrong = v == NULL   ? "is missing"
                                : count > 1 ? "is given more than once"
                                : !tmpl_value_safe(v, vlen)
                                    ? "must be 1 to 255 letters, digits, '-' or '_'"
                                    : NULL;
            if (wrong != NULL) {
                if (why != NULL && wl > 0)
                    snprintf(why, wl, "header %s %s", part->text, wrong);
                return -1;
            }
        }
        if (vlen > TMPL_VALUE_MAX - used) {
            if (why != NULL && wl > 0)
                snprintf(why, wl, "the expanded name is longer than %d bytes", TMPL_VALUE_MAX);
            return -1;
        }
        memcpy(out + used, v, vlen);
        used += vlen;
    }
    out[used] = '\0';
    return 0;
}

int tmpl_wildcard(const struct tmpl *t, char *out)
{
    size_t used = 0;
    for (size_t i = 0; i < t->n; i++) {
        const struct tmpl_part *part = &t->part[i];
        bool lit = part->kind == TMPL_LIT;
        /* A placeholder is '*' only when it is a whole word of the key. */
        if (!lit &&
            ((i > 0 && (t->part[i - 1].kind != TMPL_LIT ||
                        t->part[i - 1].text[t->part[i - 1].len - 1] != '.')) ||
             (i + 1 < t->n && (t->part[i + 1].kind != TMPL_LIT || t->part[i + 1].text[0] != '.'))))
            return -1;
        size_t n = lit ? part->len : 1;
        if (n > TMPL_VALUE_MAX - used)
            return -1;
        memcpy(out + used, lit ? part->text : "*", n);
        used += n;
    }
    out[used] = '\0';
    return 0;
}
