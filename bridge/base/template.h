/* template.h - routing from the request: route paths with captured
 * segments ("/events/{type}") and templates over the captures and named
 * request headers ("orders.{type}", "{header:X-Tenant}.audit") for a
 * route's routing_key and exchange. Parsed and checked once at start-up
 * (bridge/config.c); matched (http/verdict.c) and expanded (bridge/worker.c)
 * per request, without allocating.
 *
 * What a client puts into a routing key or exchange name is held to a safe
 * set: non-empty, letters, digits, '-' and '_' only. A '.', '#' or '*' from
 * a client would widen a topic binding ("orders.#" reaching every queue
 * bound to "orders.*.x"), a '/' or '%' would stand for something else:
 * percent-escapes are not decoded, so "%2E" is refused like '.'. */
#ifndef BRIDGE_TEMPLATE_H
#define BRIDGE_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TMPL_MAX_CAPTURES 8 /* {name} segments in one path */
#define TMPL_NAME_MAX 32    /* a capture's name */
#define TMPL_HEADER_MAX 64  /* a header's name in {header:Name} */
#define TMPL_MAX_PARTS 16   /* literals and placeholders of one template */
#define TMPL_VALUE_MAX 255  /* an expanded value: an AMQP short string */

/* A piece of a request's path: a capture. Not NUL-terminated. */
struct tmpl_span {
    const char *p;
    size_t n;
};

enum tmpl_kind { TMPL_LIT, TMPL_CAPTURE, TMPL_HEADER };

struct tmpl_part {
    enum tmpl_kind kind;
    const char *text; /* LIT: the literal (LEN bytes); CAPTURE, HEADER: its name, NUL-terminated */
    size_t len;       /* bytes of text */
    size_t capture;   /* CAPTURE: its index in the path's captures */
};

/* A parsed template; owns BUF, where every part's text lives. */
struct tmpl {
    char *buf;
    struct tmpl_part part[TMPL_MAX_PARTS];
    size_t n;
    bool dynamic; /* has a placeholder: expanded per request */
};

/* Is PATTERN a path with captures (any '{')? */
bool path_has_captures(const char *pattern);
/* Check PATTERN (starts with '/', checked elsewhere): each {name} a whole
 * segment, names of letters, digits and '_', distinct, at most
 * TMPL_MAX_CAPTURES; no other '{' or '}'. 0, or -1 with WHY. */
int path_pattern_check(const char *pattern, char *why, size_t wl);
/* Does PATH (no query) match PATTERN? Literal segments compare exactly, a
 * capture takes one non-empty segment (never a '/'). CAPS (TMPL_MAX_CAPTURES)
 * gets the captures in order, *NCAPS their count; either may be NULL. */
bool path_match(const char *pattern, const char *path, struct tmpl_span *caps, size_t *ncaps);
/* Can one path match both patterns (same number of segments, and in each
 * place equal literals or a capture)? */
bool path_patterns_overlap(const char *a, const char *b);

/* Parse TEXT, whose placeholders name captures of PATTERN ({name}) or
 * request headers ({header:Name}). A literal may not contain '{' or '}'.
 * 0, or -1 with WHY (T is then empty). */
int tmpl_parse(struct tmpl *t, const char *text, const char *pattern, char *why, size_t wl)
    __attribute__((warn_unused_result));
void tmpl_free(struct tmpl *t);

/* The value of request header NAME (first one), NULL when absent; *COUNT
 * how many times the request carries it. */
typedef const char *(*tmpl_header_fn)(void *arg, const char *name, int *count);

/* Is C one of the HTTP token characters header names are made of (RFC
 * 9110)? */
bool tmpl_token_char(char c);

/* Is V (LEN bytes) a value a client may put into a name: 1..TMPL_VALUE_MAX
 * bytes of letters, digits, '-' and '_'? */
bool tmpl_value_safe(const char *v, size_t len);

/* Expand T with the path's captures CAPS and headers from HDR(ARG) into
 * OUT (TMPL_VALUE_MAX + 1 bytes, NUL-terminated). Every placeholder's value
 * must be tmpl_value_safe and a header must come once; the whole at most
 * TMPL_VALUE_MAX bytes. 0, or -1 with WHY naming the placeholder and what
 * is wrong (for a 400). */
int tmpl_expand(const struct tmpl *t, const struct tmpl_span *caps, tmpl_header_fn hdr, void *arg,
                char *out, char *why, size_t wl) __attribute__((warn_unused_result));

/* T with every placeholder as '*' ("orders.{type}" -> "orders.*"): the
 * binding key that reaches every expansion on a topic exchange. Into OUT
 * (TMPL_VALUE_MAX + 1 bytes); -1 when longer. */
int tmpl_wildcard(const struct tmpl *t, char *out);

#endif
