/* uri.c - the amqp:// and amqps:// URI list of [amqp] uri, parsed with
 * rabbitmq-c's amqp_parse_url into struct broker_uri. Reasons never quote a
 * URI: it may hold a password. */
#include "amqp/broker_config.h"
#include "bridge/base/errbuf.h"

#include <amqp.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_VHOST_ENCODED "%2f"

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

static bool has_space_or_ctl(const char *s)
{
    for (; *s != '\0'; s++)
        if (*s == ' ' || (unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

const char *broker_queue_type_name(enum queue_type t)
{
    switch (t) {
    case QUEUE_CLASSIC:
        return "classic";
    case QUEUE_QUORUM:
        return "quorum";
    }
    return "?";
}

static void free_uri(struct broker_uri *u)
{
    free(u->text);
    free(u->display);
    free(u->host);
    free(u->user);
    free(u->password);
    free(u->vhost);
}

void broker_uris_free(struct broker_uri *u, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free_uri(&u[i]);
    free(u);
}

/* One amqp:// URI (TEXT, LEN bytes, already trimmed) into *U, which starts
 * zeroed and is freed by the caller on failure too. Reasons never quote the
 * URI: it may hold a password. */
static int parse_uri(const char *text, size_t len, struct broker_uri *u, char *why, size_t wl)
{
    static const char plain_scheme[] = "amqp://";
    static const char tls_scheme[] = "amqps://";
    size_t scheme_len;
    if (len >= sizeof tls_scheme - 1 && strncmp(text, tls_scheme, sizeof tls_scheme - 1) == 0) {
        scheme_len = sizeof tls_scheme - 1;
        u->tls = true;
    } else if (len >= sizeof plain_scheme - 1 &&
               strncmp(text, plain_scheme, sizeof plain_scheme - 1) == 0) {
        scheme_len = sizeof plain_scheme - 1;
    } else {
        return errf(why, wl, "must start with amqp:// or amqps://");
    }
    u->text = strndup(text, len);
    if (u->text == NULL)
        return errf(why, wl, "out of memory");
    if (has_space_or_ctl(u->text))
        return errf(why, wl, "spaces or control characters inside a URI");
    const char *auth = u->text + scheme_len;
    size_t auth_len = strcspn(auth, "/");
    const char *at = memchr(auth, '@', auth_len);
    if (at != NULL && memchr(at + 1, '@', auth_len - (size_t)(at + 1 - auth)) != NULL)
        return errf(why, wl, "more than one '@': write an '@' in a user or password as %%40");

    /* amqp_parse_url cuts its argument into pieces (and percent-decodes
     * them in place): give it a copy. */
    char *work = strdup(u->text);
    if (work == NULL)
        return errf(why, wl, "out of memory");
    struct amqp_connection_info ci;
    amqp_default_connection_info(&ci);
    const char *bad = NULL;
    if (amqp_parse_url(work, &ci) != AMQP_STATUS_OK)
        bad = "not a valid URI (amqp://user:password@host:port/vhost)";
    else if (ci.host[0] == '\0')
        bad = "missing host";
    else if (ci.port < 1 || ci.port > 65535)
        bad = "port must be 1..65535";
    else if (ci.vhost[0] == '\0')
        bad = "empty vhost: write %2f for the default vhost \"/\"";
    if (bad == NULL) {
        u->host = strdup(ci.host);
        u->user = strdup(ci.user);
        u->password = strdup(ci.password);
        u->vhost = strdup(ci.vhost);
        u->port = ci.port;
    }
    free(work); /* ci pointed into it */
    if (bad != NULL)
        return errf(why, wl, "%s", bad);
    if (u->host == NULL || u->user == NULL || u->password == NULL || u->vhost == NULL)
        return errf(why, wl, "out of memory");

    /* Display: the user as written (never the password), the host and
     * port as parsed, the vhost as written (still encoded). */
    const char *user = u->user;
    int user_len = (int)strlen(u->user);
    if (at != NULL) {
        user = auth;
        user_len = (int)strcspn(auth, ":@");
    }
    const char *slash = auth[auth_len] == '/' ? auth + auth_len : NULL;
    const char *vhost = slash != NULL ? slash + 1 : DEFAULT_VHOST_ENCODED;
    bool v6 = strchr(u->host, ':') != NULL;
    if (asprintf(&u->display, "%s://%.*s@%s%s%s:%d/%s", u->tls ? "amqps" : "amqp", user_len, user,
                 v6 ? "[" : "", u->host, v6 ? "]" : "", u->port, vhost) < 0) {
        u->display = NULL;
        return errf(why, wl, "out of memory");
    }
    return 0;
}

/* Comma-separated URIs, whitespace around each ignored, appended to *LIST
 * (*N entries), which the caller frees on failure too. */
static int parse_list(const char *v, struct broker_uri **list, size_t *n, char *why, size_t wl)
{
    bool many = strchr(v, ',') != NULL;
    const char *p = v;
    for (;;) {
        const char *comma = strchr(p, ',');
        const char *end = comma != NULL ? comma : p + strlen(p);
        const char *b = p, *e = end;
        while (b < e && is_blank(*b))
            b++;
        while (e > b && is_blank(e[-1]))
            e--;
        if (b == e)
            return many ? errf(why, wl, "entry %zu is empty", *n + 1)
                        : errf(why, wl, "no URI given");
        struct broker_uri *tmp = realloc(*list, (*n + 1) * sizeof **list);
        if (tmp == NULL)
            return errf(why, wl, "out of memory");
        *list = tmp;
        struct broker_uri *u = &tmp[(*n)++];
        memset(u, 0, sizeof *u);
        char reason[128];
        if (parse_uri(b, (size_t)(e - b), u, reason, sizeof reason) != 0)
            return many ? errf(why, wl, "entry %zu: %s", *n, reason) : errf(why, wl, "%s", reason);
        if (comma == NULL)
            return 0;
        p = comma + 1;
    }
}

int broker_uris_parse(const char *v, struct broker_uri **out, size_t *out_n, char *why, size_t wl)
{
    struct broker_uri *list = NULL;
    size_t n = 0;
    if (parse_list(v, &list, &n, why, wl) != 0) {
        broker_uris_free(list, n);
        return -1;
    }
    *out = list;
    *out_n = n;
    return 0;
}
