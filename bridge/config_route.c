/* config_route.c - the route keys that go together: a path with captures
 * and the routing_key / exchange templates over them, the exchanges a
 * templated exchange may become, the queue's binding key, priority,
 * expiration, constant headers, content_type and trace. Checked and parsed
 * once, at load, into the route's derived fields; the worker only reads
 * them. */
#include "bridge/config_int.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdlib.h>
#include <strings.h>

#define MAX_CONST_HEADERS 16 /* a route's headers key; within HDRMAP_MAX_OWN with trace's 3 */

static int route_fail(struct loader *ld, size_t j, size_t key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Fails naming key KEY of route J where it was set. Always -1. */
static int route_fail(struct loader *ld, size_t j, size_t key, const char *fmt, ...)
{
    char reason[REASON_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    return config_fail(ld, &ld->meta[j].keys[key], config_sections[SEC_ROUTE].keys[key].name, "%s",
                       reason);
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
    return s;
}

/* TEXT, key KEY of route J, as a comma-separated list of names of 1 to
 * MAX bytes (blanks around each dropped) into *LIST (NULL-terminated, *N
 * names); at least one. WHAT names them in the error. 0 / -1. */
static int split_names(struct loader *ld, size_t j, size_t key, const char *text, size_t max,
                       const char *what, char ***list, size_t *n)
{
    size_t cap = 1;
    for (const char *p = text; *p != '\0'; p++)
        cap += *p == ',';
    char *copy = strdup(text);
    *list = calloc(cap + 1, sizeof **list);
    if (copy == NULL || *list == NULL) {
        free(copy);
        return route_fail(ld, j, key, "out of memory");
    }
    char *save = NULL;
    int rc = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok != NULL && rc == 0;
         tok = strtok_r(NULL, ",", &save)) {
        const char *name = trim(tok);
        if (name[0] == '\0' || strlen(name) > max)
            rc = route_fail(ld, j, key, "'%.64s': %s of 1 to %zu bytes", name, what, max);
        else if (((*list)[*n] = strdup(name)) == NULL)
            rc = route_fail(ld, j, key, "out of memory");
        else
            ++*n;
    }
    free(copy);
    if (rc == 0 && *n == 0)
        rc = route_fail(ld, j, key, "'%.64s' names no %s", text, what);
    return rc;
}

/* exchanges = a, b, c: the names a templated exchange may become. */
static int parse_exchanges(struct loader *ld, size_t j)
{
    struct config_route *r = &ld->cfg->routes[j];
    return split_names(ld, j, RK_EXCHANGES, r->exchanges, TMPL_VALUE_MAX, "exchange",
                       &r->exchange_list, &r->n_exchanges);
}

/* headers = name=value, name=value: constant headers, names lower-cased. */
static int parse_headers(struct loader *ld, size_t j)
{
    struct config_route *r = &ld->cfg->routes[j];
    char *copy = strdup(r->headers);
    r->const_hdr = calloc(MAX_CONST_HEADERS, sizeof *r->const_hdr);
    if (copy == NULL || r->const_hdr == NULL) {
        free(copy);
        return route_fail(ld, j, RK_HEADERS, "out of memory");
    }
    char *save = NULL;
    int rc = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok != NULL && rc == 0;
         tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (eq == NULL) {
            rc = route_fail(ld, j, RK_HEADERS, "'%.64s': expected name=value", trim(tok));
            break;
        }
        *eq = '\0';
        char *name = trim(tok), *value = trim(eq + 1);
        bool ok = name[0] != '\0' && strlen(name) <= 64;
        for (char *p = name; ok && *p != '\0'; p++) {
            ok = tmpl_token_char(*p);
            *p = (char)tolower((unsigned char)*p);
        }
        for (const char *p = value; ok && *p != '\0'; p++)
            ok = (unsigned char)*p >= 0x20 && *p != 0x7f;
        if (!ok || strlen(value) > 1024) {
            rc = route_fail(ld, j, RK_HEADERS,
                            "'%.64s': a name of 1 to 64 token characters and a printable value "
                            "of at most 1024 bytes",
                            name);
            break;
        }
        static const char *const own[] = {"x-http-path",       "x-http-query", "x-forwarded-for",
                                          "traceparent",       "tracestate",   "baggage",
                                          "tls-client-subject"};
        for (size_t i = 0; ok && i < sizeof own / sizeof own[0]; i++)
            ok = strcmp(name, own[i]) != 0;
        for (size_t i = 0; ok && i < r->n_const_hdr; i++)
            ok = strcmp(name, r->const_hdr[i].name) != 0;
        if (!ok) {
            rc = route_fail(ld, j, RK_HEADERS, "'%.64s': given twice, or set by the bridge itself",
                            name);
            break;
        }
        if (r->n_const_hdr == MAX_CONST_HEADERS) {
            rc = route_fail(ld, j, RK_HEADERS, "more than %d headers", MAX_CONST_HEADERS);
            break;
        }
        struct route_header *h = &r->const_hdr[r->n_const_hdr];
        if ((h->name = strdup(name)) == NULL || (h->value = strdup(value)) == NULL) {
            free(h->name);
            h->name = NULL;
            rc = route_fail(ld, j, RK_HEADERS, "out of memory");
            break;
        }
        r->n_const_hdr++;
    }
    free(copy);
    return rc;
}

/* priority = N | {header:Name}. */
static int parse_priority(struct loader *ld, size_t j)
{
    struct config_route *r = &ld->cfg->routes[j];
    r->priority_value = -1;
    const char *v = r->priority;
    if (v[0] == '\0')
        return 0;
    if (v[0] == '{') {
        /* {header:Name}, read as the templates are: one placeholder. */
        struct tmpl t;
        char why[REASON_LEN];
        if (tmpl_parse(&t, v, NULL, why, sizeof why) != 0)
            return route_fail(ld, j, RK_PRIORITY, "%s", why);
        bool one = t.n == 1 && t.part[0].kind == TMPL_HEADER;
        r->priority_header = one ? strdup(t.part[0].text) : NULL;
        tmpl_free(&t);
        if (!one)
            return route_fail(ld, j, RK_PRIORITY, "'%.64s': a number, or {header:Name} alone", v);
        if (r->priority_header == NULL)
            return route_fail(ld, j, RK_PRIORITY, "out of memory");
        return 0;
    }
    char *end = NULL;
    long n = strtol(v, &end, 10);
    if (!isdigit((unsigned char)v[0]) || *end != '\0' || n > r->priority_max)
        return route_fail(ld, j, RK_PRIORITY,
                          "'%.64s': a number from 0 to priority_max, or {header:Name}", v);
    r->priority_value = (int)n;
    return 0;
}

/* routing_key, exchange: templates over the path's captures; a templated
 * exchange only among the names of exchanges (publishing to an exchange
 * that does not exist closes the channel, and every request waiting on it
 * would get 503). */
static int parse_templates(struct loader *ld, size_t j)
{
    struct config_route *r = &ld->cfg->routes[j];
    char why[REASON_LEN];
    if (path_pattern_check(r->path, why, sizeof why) != 0)
        return route_fail(ld, j, RK_PATH, "%s", why);
    if (tmpl_parse(&r->rk_tmpl, r->routing_key, r->path, why, sizeof why) != 0)
        return route_fail(ld, j, RK_ROUTING_KEY, "%s", why);
    if (tmpl_parse(&r->ex_tmpl, r->exchange, r->path, why, sizeof why) != 0)
        return route_fail(ld, j, RK_EXCHANGE, "%s", why);
    /* On the default exchange the routing key is a queue's name: a client
     * could name any queue of the vhost (another route's, an rpc
     * worker's). */
    if (r->rk_tmpl.dynamic && r->exchange[0] == '\0')
        return route_fail(ld, j, RK_ROUTING_KEY,
                          "'%.64s' is a template on the default exchange, where a routing key "
                          "names a queue: a client could reach any queue; use a named exchange",
                          r->routing_key);
    if (r->ex_tmpl.dynamic && r->exchanges[0] == '\0')
        return route_fail(ld, j, RK_EXCHANGE,
                          "'%.64s' is a template: list the exchanges it may become in exchanges "
                          "(a publish to an exchange that does not exist closes the channel)",
                          r->exchange);
    if (!r->ex_tmpl.dynamic && r->exchanges[0] != '\0')
        return route_fail(ld, j, RK_EXCHANGES, "%s: set, but exchange is not a template",
                          r->exchanges);
    if (r->ex_tmpl.dynamic && r->queue[0] != '\0')
        return route_fail(ld, j, RK_QUEUE,
                          "%s: with a templated exchange, bind the queue in the broker (the "
                          "bridge would not know to which exchange)",
                          r->queue);
    if (r->exchanges[0] != '\0' && parse_exchanges(ld, j) != 0)
        return -1;
    /* The queue's binding: the routing key, or what reaches every
     * expansion of it on a topic exchange. */
    char bind[TMPL_VALUE_MAX + 1];
    const char *b = r->routing_key;
    if (r->binding_key[0] != '\0') {
        if (r->queue[0] == '\0')
            return route_fail(ld, j, RK_BINDING_KEY, "%s: set, but the route declares no queue",
                              r->binding_key);
        b = r->binding_key;
    } else if (r->rk_tmpl.dynamic && r->queue[0] != '\0' && r->exchange[0] != '\0') {
        if (tmpl_wildcard(&r->rk_tmpl, bind) != 0)
            return route_fail(ld, j, RK_ROUTING_KEY,
                              "'%.64s': a placeholder is not a whole word (between dots): set "
                              "binding_key for the queue",
                              r->routing_key);
        b = bind;
    } else if (r->rk_tmpl.dynamic && r->queue[0] != '\0') {
        return route_fail(ld, j, RK_QUEUE,
                          "%s: the default exchange routes by queue name, and the routing key "
                          "is a template: the queue would not get these messages",
                          r->queue);
    }
    if ((r->bind_key = strdup(b)) == NULL)
        return route_fail(ld, j, RK_ROUTING_KEY, "out of memory");
    return 0;
}

/* The queue's arguments and declare mode: arguments only where the bridge
 * declares the queue, and what the broker would refuse refused here. */
static int check_queue_keys(struct loader *ld, size_t j)
{
    struct config_route *r = &ld->cfg->routes[j];
    const struct origin *ko = ld->meta[j].keys;
    static const size_t arg_keys[] = {RK_DEAD_LETTER_EXCHANGE,
                                      RK_DEAD_LETTER_ROUTING_KEY,
                                      RK_MAX_LENGTH,
                                      RK_MAX_LENGTH_BYTES,
                                      RK_OVERFLOW,
                                      RK_MESSAGE_TTL,
                                      RK_MAX_PRIORITY};
    bool declares = r->queue[0] != '\0' && r->declare == DECLARE_YES;
    for (size_t i = 0; i < sizeof arg_keys / sizeof arg_keys[0]; i++) {
        const struct origin *o = &ko[arg_keys[i]];
        if (!declares && (o->line > 0 || o->env != NULL))
            return route_fail(ld, j, arg_keys[i],
                              "set, but the bridge does not declare the queue (needs queue and "
                              "declare = yes)");
    }
    if ((ko[RK_DECLARE].line > 0 || ko[RK_DECLARE].env != NULL) && r->queue[0] == '\0')
        return route_fail(ld, j, RK_DECLARE, "set, but the route has no queue");
    if (r->dead_letter_routing_key[0] != '\0' && r->dead_letter_exchange[0] == '\0')
        return route_fail(ld, j, RK_DEAD_LETTER_ROUTING_KEY,
                          "needs dead_letter_exchange (\"\" cannot be given: the default "
                          "exchange is named by its queue)");
    static const char *const overflows[] = {"drop-head", "reject-publish", "reject-publish-dlx"};
    bool known = r->overflow[0] == '\0';
    for (size_t i = 0; !known && i < sizeof overflows / sizeof overflows[0]; i++)
        known = strcmp(r->overflow, overflows[i]) == 0;
    if (!known)
        return route_fail(ld, j, RK_OVERFLOW,
                          "'%.64s' is not drop-head, reject-publish or reject-publish-dlx",
                          r->overflow);
    if (r->overflow[0] != '\0' && r->max_length == 0 && r->max_length_bytes == 0)
        return route_fail(ld, j, RK_OVERFLOW, "needs max_length or max_length_bytes");
    bool quorum = r->queue_type == QUEUE_QUORUM;
    if (quorum && strcmp(r->overflow, "reject-publish-dlx") == 0)
        return route_fail(ld, j, RK_OVERFLOW, "reject-publish-dlx is for classic queues only");
    if (quorum && r->max_priority > 0)
        return route_fail(ld, j, RK_MAX_PRIORITY, "priorities are for classic queues only");
    if (r->priority_value > r->max_priority && r->max_priority > 0)
        return route_fail(ld, j, RK_PRIORITY, "%d is above queue_max_priority (%d)",
                          r->priority_value, r->max_priority);
    return 0;
}

/* encodings = gzip, deflate: the Content-Encodings the route takes. */
static int parse_encodings(struct loader *ld, size_t j)
{
    struct config_route *r = &ld->cfg->routes[j];
    char *copy = strdup(r->encodings);
    if (copy == NULL)
        return route_fail(ld, j, RK_ENCODINGS, "out of memory");
    char *save = NULL;
    int rc = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok != NULL && rc == 0;
         tok = strtok_r(NULL, ",", &save)) {
        const char *name = trim(tok);
        if (strcasecmp(name, "gzip") == 0)
            r->encoding_bits |= HTTP_ENCODING_GZIP;
        else if (strcasecmp(name, "deflate") == 0)
            r->encoding_bits |= HTTP_ENCODING_DEFLATE;
        else
            rc = route_fail(ld, j, RK_ENCODINGS, "'%.64s' is not gzip or deflate", name);
    }
    free(copy);
    if (rc == 0 && r->keep_encoding && r->encoding_bits == 0)
        rc = route_fail(ld, j, RK_KEEP_ENCODING, "set, but the route takes no encodings");
    return rc;
}

/* client_subjects = a, b: the names (CN or SAN) a client certificate must
 * have one of. */
static int parse_subjects(struct loader *ld, size_t j)
{
    struct config_route *r = &ld->cfg->routes[j];
    if (r->client_subjects[0] == '\0')
        return 0;
    if (ld->cfg->http.tls_client_auth == HTTP_CLIENT_AUTH_NONE)
        return route_fail(ld, j, RK_CLIENT_SUBJECTS,
                          "set, but [http] tls_client_auth is none (no client certificates)");
    return split_names(ld, j, RK_CLIENT_SUBJECTS, r->client_subjects, 128, "subject",
                       &r->subject_list, &r->n_subjects);
}

/* rate = N/s | N/m | N/h, burst (0: the rate's one second, at least 1),
 * rate_by (token: the route asks for tokens). */
static int parse_rate(struct loader *ld, size_t j)
{
    struct config_route *r = &ld->cfg->routes[j];
    const struct origin *ko = ld->meta[j].keys;
    static const size_t rate_keys[] = {RK_BURST, RK_RATE_BY, RK_RATE_KEYS};
    if (r->rate[0] == '\0') {
        for (size_t i = 0; i < sizeof rate_keys / sizeof rate_keys[0]; i++)
            if (ko[rate_keys[i]].line > 0 || ko[rate_keys[i]].env != NULL)
                return route_fail(ld, j, rate_keys[i], "set, but the route has no rate");
        return 0;
    }
    char *end = NULL;
    unsigned long n = strtoul(r->rate, &end, 10);
    double per = end != NULL && strcmp(end, "/s") == 0   ? 1
                 : end != NULL && strcmp(end, "/m") == 0 ? 60
                 : end != NULL && strcmp(end, "/h") == 0 ? 3600
                                                         : 0;
    if (!isdigit((unsigned char)r->rate[0]) || per == 0 || n == 0 || n > 1000000)
        return route_fail(ld, j, RK_RATE,
                          "'%.64s': requests per time, 1 to 1000000, as N/s, N/m or N/h", r->rate);
    r->rate_per_s = (double)n / per;
    if (r->burst == 0)
        r->burst = r->rate_per_s >= 1 ? (size_t)(r->rate_per_s + 0.999) : 1;
    if (r->rate_by == HTTP_RATE_TOKEN && r->auth_token_file[0] == '\0' &&
        ld->cfg->http.auth_token_file[0] == '\0')
        return route_fail(ld, j, RK_RATE_BY,
                          "token, but the route asks for no token (auth_token_file)");
    return 0;
}

int config_route_prepare(struct loader *ld, size_t j)
{
    struct config_route *r = &ld->cfg->routes[j];
    const struct origin *ko = ld->meta[j].keys;
    if (parse_templates(ld, j) != 0 || parse_priority(ld, j) != 0 || check_queue_keys(ld, j) != 0 ||
        parse_encodings(ld, j) != 0 || parse_subjects(ld, j) != 0 || parse_rate(ld, j) != 0)
        return -1;
    r->dynamic = r->rk_tmpl.dynamic || r->ex_tmpl.dynamic || r->priority_header != NULL;
    bool minimal = r->properties == PROPERTIES_MINIMAL;
    if (r->headers[0] != '\0' && (minimal || parse_headers(ld, j) != 0))
        return ld->failed ? -1
                          : route_fail(ld, j, RK_HEADERS,
                                       "%s: needs properties = all (minimal sends no headers)",
                                       r->headers);
    if (minimal && (ko[RK_TRACE].line > 0 || ko[RK_TRACE].env != NULL) && r->trace != TRACE_OFF)
        return route_fail(ld, j, RK_TRACE, "%s: needs properties = all (minimal sends no headers)",
                          config_sections[SEC_ROUTE].keys[RK_TRACE].names->name[r->trace]);
    if (minimal)
        r->trace = TRACE_OFF;
    if (r->dedupe_ms > 0 && r->mode == ROUTE_RPC)
        return route_fail(ld, j, RK_DEDUPE,
                          "for publish routes only: an rpc reply is not kept to be replayed");
    if (r->dedupe_ms == 0 && (ko[RK_DEDUPE_IDS].line > 0 || ko[RK_DEDUPE_IDS].env != NULL))
        return route_fail(ld, j, RK_DEDUPE_IDS, "set, but the route has no dedupe window");
    if (r->spool && r->mode == ROUTE_RPC)
        return route_fail(ld, j, RK_SPOOL,
                          "for publish routes only: an rpc request waits for its worker's reply");
    if (r->spool && ld->cfg->spool_dir[0] == '\0')
        return route_fail(ld, j, RK_SPOOL, "needs [spool] dir");
    if (r->spool && !ld->cfg->amqp.confirm)
        return route_fail(ld, j, RK_SPOOL,
                          "needs [amqp] confirm = yes: a spooled message goes only once confirmed");
    if (r->expiration_ms > 0 && r->mode == ROUTE_RPC)
        return route_fail(ld, j, RK_EXPIRATION,
                          "%s: an rpc route's messages expire after its timeout already", r->name);
    if (strlen(r->content_type) > 255)
        return route_fail(ld, j, RK_CONTENT_TYPE, "longer than 255 bytes");
    for (const char *p = r->content_type; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return route_fail(ld, j, RK_CONTENT_TYPE, "control characters in '%.64s'",
                              r->content_type);
    return 0;
}

void config_route_free(struct config_route *r)
{
    char **strings[] = {&r->name,
                        &r->path,
                        &r->exchange,
                        &r->routing_key,
                        &r->queue,
                        &r->schema,
                        &r->root,
                        &r->auth_token_file,
                        &r->exchanges,
                        &r->binding_key,
                        &r->priority,
                        &r->headers,
                        &r->content_type,
                        &r->priority_header,
                        &r->bind_key,
                        &r->dead_letter_exchange,
                        &r->dead_letter_routing_key,
                        &r->overflow,
                        &r->encodings,
                        &r->client_subjects,
                        &r->rate};
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++)
        free(*strings[i]);
    tmpl_free(&r->rk_tmpl);
    tmpl_free(&r->ex_tmpl);
    for (size_t i = 0; r->exchange_list != NULL && i < r->n_exchanges; i++)
        free(r->exchange_list[i]);
    free(r->exchange_list);
    for (size_t i = 0; r->subject_list != NULL && i < r->n_subjects; i++)
        free(r->subject_list[i]);
    free(r->subject_list);
    for (size_t i = 0; r->const_hdr != NULL && i < r->n_const_hdr; i++) {
        free(r->const_hdr[i].name);
        free(r->const_hdr[i].value);
    }
    free(r->const_hdr);
}
