/* verdict.c - the answers a request's line and headers alone decide
 * (verdict.h): framing evhttp does not check, size, route, auth, method and
 * content type, in one fixed order. */
#include "http/verdict.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h> /* before event2/keyvalq_struct.h: TAILQ_FOREACH */
#include <event2/keyvalq_struct.h>

#include "bridge/base/metrics.h"
#include "bridge/base/template.h"
#include "http/auth.h"
#include "http/http_config.h"
#include "http/inflate.h"
#include "http/tls.h"
#include "http/server.h"

void verdict_scan(const struct evkeyvalq *headers, struct head_info *hi)
{
    memset(hi, 0, sizeof *hi);
    struct evkeyval *kv;
    TAILQ_FOREACH(kv, headers, next)
    {
        const char *k = kv->key;
        switch (k[0] | 0x20) {
        case 'a':
            if (strcasecmp(k, "Authorization") == 0 && hi->n_auth++ == 0)
                hi->auth = kv->value;
            break;
        case 'c':
            if (strcasecmp(k, "Content-Length") == 0) {
                if (hi->n_cl++ == 0)
                    hi->cl = kv->value;
            } else if (hi->ctype == NULL && strcasecmp(k, "Content-Type") == 0) {
                hi->ctype = kv->value;
            } else if (strcasecmp(k, "Content-Encoding") == 0 && hi->n_ce++ == 0) {
                hi->ce = kv->value;
            }
            break;
        case 'e':
            if (hi->expect == NULL && strcasecmp(k, "Expect") == 0)
                hi->expect = kv->value;
            break;
        case 't':
            if (strcasecmp(k, "Transfer-Encoding") == 0 && hi->n_te++ == 0)
                hi->te = kv->value;
            break;
        case 'x':
            if (hi->id == NULL && strcasecmp(k, "X-Request-Id") == 0)
                hi->id = kv->value;
            break;
        }
    }
}

/* The 400's text when the framing is ambiguous, or NULL. evhttp itself
 * takes the first of two Content-Lengths and treats "gzip, chunked" as no
 * body at all: either way what follows could be read as another request
 * (smuggling). */
static const char *bad_framing(const struct head_info *hi)
{
    if (hi->n_cl > 1)
        return "ambiguous request framing: more than one Content-Length\n";
    if (hi->n_te > 1)
        return "ambiguous request framing: more than one Transfer-Encoding\n";
    if (hi->n_te == 1 && strcasecmp(hi->te, "chunked") != 0)
        return "ambiguous request framing: Transfer-Encoding other than chunked\n";
    if (hi->n_te == 1 && hi->n_cl > 0)
        return "ambiguous request framing: Content-Length with Transfer-Encoding\n";
    return NULL;
}

/* application/xml, text/xml, any type/subtype+xml; parameters allowed. */
static bool xml_type(const char *ct)
{
    if (ct == NULL)
        return false;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = strcspn(ct, "; \t");
    if (n == 15 && strncasecmp(ct, "application/xml", 15) == 0)
        return true;
    if (n == 8 && strncasecmp(ct, "text/xml", 8) == 0)
        return true;
    const char *slash = memchr(ct, '/', n);
    return slash != NULL && slash > ct && (size_t)(ct + n - slash) > 5 &&
           strncasecmp(ct + n - 4, "+xml", 4) == 0;
}

/* An exact path first; else the first route whose path with captures
 * matches (config_load refuses two that could match one path). */
/* Does the client certificate P have a name ROUTE allows (its CN or a SAN,
 * compared exactly)? */
static bool subject_allowed(const struct http_route *route, const struct tls_peer *p)
{
    for (size_t i = 0; p != NULL && i < p->n; i++)
        for (size_t k = 0; k < route->n_client_subjects; k++)
            if (strcmp(p->names[i], route->client_subjects[k]) == 0)
                return true;
    return false;
}

static const struct http_route *find_route(const struct http_config *cfg, const char *path)
{
    for (size_t i = 0; i < cfg->n_routes; i++)
        if (!cfg->routes[i].pattern && strcmp(cfg->routes[i].path, path) == 0)
            return &cfg->routes[i];
    for (size_t i = 0; i < cfg->n_routes; i++)
        if (cfg->routes[i].pattern && path_match(cfg->routes[i].path, path, NULL, NULL))
            return &cfg->routes[i];
    return NULL;
}

void verdict_refuse(struct verdict *v, int status, const char *text)
{
    v->kind = VERDICT_REFUSE;
    v->status = status;
    v->text = text;
}

/* Bearer auth of a request that asks for tokens T: true when it may go on,
 * else V says the 401. When no token is asked for it costs one test. */
static bool authorized(const struct auth_tokens *t, const struct head_info *hi, struct verdict *v)
{
    if (t == NULL)
        return true;
    /* Two Authorization headers: which one a proxy in front of us would
     * read is anybody's guess. Refused. */
    enum auth_result ar = hi->n_auth > 1 ? AUTH_INVALID : auth_check(t, hi->auth);
    if (ar == AUTH_OK)
        return true;
    v->hname = "WWW-Authenticate";
    if (ar == AUTH_INVALID) {
        v->hvalue = "Bearer realm=\"ingest-bridge\", error=\"invalid_token\"";
        verdict_refuse(v, 401, "invalid bearer token\n");
    } else {
        v->hvalue = "Bearer realm=\"ingest-bridge\"";
        verdict_refuse(v, 401, "a bearer token is required: Authorization: Bearer TOKEN\n");
    }
    return false;
}

/* Content-Length over max_body: evhttp would answer 413 itself (an HTML
 * page, neither counted nor logged); decided here with the others. */
bool verdict_content_length(const struct head_info *hi, unsigned long long *n)
{
    if (hi->cl == NULL || hi->n_te > 0 || hi->cl[0] == '-')
        return false;
    char *end;
    errno = 0;
    *n = strtoull(hi->cl, &end, 10);
    if (end == hi->cl || *end != '\0')
        return false;
    if (errno == ERANGE)
        *n = ULLONG_MAX;
    return true;
}

static bool too_large(const struct http_config *cfg, const struct head_info *hi)
{
    unsigned long long n;
    return verdict_content_length(hi, &n) && n > (unsigned long long)cfg->max_body;
}

/* A body evhttp will not read (HEAD and TRACE have none for it): its bytes
 * would be parsed as the next request, one a proxy in front took for this
 * request's body (smuggling). */
static bool unread_body(enum evhttp_cmd_type cmd, const struct head_info *hi)
{
    if (cmd != EVHTTP_REQ_HEAD && cmd != EVHTTP_REQ_TRACE)
        return false;
    unsigned long long n;
    return hi->n_te > 0 || (hi->cl != NULL && !(verdict_content_length(hi, &n) && n == 0));
}

/* Every answer the request line and headers alone decide, in the one order
 * both callers follow: on_headers before the body is read (when the
 * connection is hooked), on_request otherwise. Nothing is sent here. */
void verdict_decide(const struct verdict_ctx *x, enum evhttp_cmd_type cmd, const char *path,
                    const struct head_info *hi, struct verdict *v)
{
    memset(v, 0, sizeof *v);
    v->slot = METRICS_NONE;
    const char *why = bad_framing(hi);
    if (why != NULL) {
        verdict_refuse(v, 400, why);
        v->close = true;
        return;
    }
    if (unread_body(cmd, hi)) {
        verdict_refuse(v, 400, "ambiguous request framing: a body on a HEAD or TRACE request\n");
        v->close = true;
        return;
    }
    if (too_large(x->cfg, hi)) {
        verdict_refuse(v, 413, x->too_large_text);
        v->close = true; /* the body is not read */
        return;
    }
    if (path == NULL || path[0] == '\0')
        path = "/";
    bool get = cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD;

    if (strcmp(path, x->cfg->pong_path) == 0) {
        v->slot = METRICS_PONG;
        v->kind = VERDICT_PONG;
    } else if (strcmp(path, "/healthz") == 0) {
        v->slot = METRICS_HEALTHZ;
        v->kind = VERDICT_HEALTHZ;
    } else if (strcmp(path, "/metrics") == 0) {
        v->slot = METRICS_METRICS;
        v->kind = VERDICT_METRICS;
    }
    if (v->slot != METRICS_NONE) {
        /* /metrics asks for a token when [http] metrics_auth says so,
         * before whatever answers it. pong and /healthz stay open. */
        if (v->slot == METRICS_METRICS && x->metrics_auth != NULL &&
            !authorized(x->metrics_auth, hi, v))
            return;
        if (!get) {
            v->hname = "Allow";
            v->hvalue = "GET, HEAD";
            verdict_refuse(v, 405, "method not allowed: use GET or HEAD\n");
        } else if (x->draining) {
            verdict_refuse(v, 503, "shutting down\n");
        }
        return;
    }
    const struct http_route *route = find_route(x->cfg, path);
    if (route == NULL) {
        verdict_refuse(v, 404, "no route for this path\n");
        return;
    }
    v->slot = METRICS_ROUTE0 + (size_t)(route - x->cfg->routes);
    if (!authorized(http_shared_auth(x->sh, (size_t)(route - x->cfg->routes)), hi, v))
        return;
    if (route->n_client_subjects > 0 && !subject_allowed(route, hi->peer)) {
        verdict_refuse(v, 403,
                       hi->peer == NULL
                           ? "this route needs a client certificate\n"
                           : "this client certificate's subject is not allowed on this route\n");
        return;
    }
    if (cmd != EVHTTP_REQ_POST) {
        v->hname = "Allow";
        v->hvalue = "POST";
        verdict_refuse(v, 405, "method not allowed: use POST\n");
        return;
    }
    if (!xml_type(hi->ctype)) {
        verdict_refuse(v, 415, "Content-Type must be application/xml, text/xml or */*+xml\n");
        return;
    }
    /* A coding the route does not take: 415 before a byte of the body (RFC
     * 9110). One coding at most: a list would take one inflate each. */
    enum body_coding coding = hi->n_ce > 1 ? CODING_UNKNOWN : coding_of(hi->ce);
    if (coding == CODING_UNKNOWN) {
        verdict_refuse(v, 415, "Content-Encoding must be one of gzip, deflate or identity\n");
        return;
    }
    if (coding != CODING_IDENTITY && !(route->encodings & (1u << coding))) {
        verdict_refuse(v, 415,
                       coding == CODING_GZIP
                           ? "this route does not take Content-Encoding gzip (its encodings)\n"
                           : "this route does not take Content-Encoding deflate (its encodings)\n");
        return;
    }
    /* Draining or not, a route's request is served: its connection closes
     * after the answer (the client reconnects to whoever listens now). */
    v->kind = VERDICT_ROUTE;
    v->route = route;
}
