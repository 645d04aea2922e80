/* config_read.c - where values come from: bridge.ini through inih (our
 * line reader, section headers checked before inih sees them, one callback
 * a key) and the BRIDGE_* environment, each [route NAME] or
 * BRIDGE_ROUTE_NAME_* made a route on first sight. Every value goes on to
 * config_set_key with its file:line or variable. */
#include "bridge/config_int.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/types.h>

/* inih copies a section name into a 50-byte buffer and silently cuts what
 * does not fit: refuse longer ones rather than merge two routes. */
#define MAX_SECTION_TEXT 48
#define MAX_ROUTE_NAME (MAX_SECTION_TEXT - 6) /* after "route " */
#define ENV_PREFIX "BRIDGE_"

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

/* ---- sections and routes ---------------------------------------------- */

static void copy_name(char *dst, size_t dstlen, const char *name, size_t len)
{
    snprintf(dst, dstlen, "%.*s", (int)len, name);
}

static bool valid_route_name(const char *name, size_t len)
{
    if (len == 0 || len > MAX_ROUTE_NAME)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!isalnum((unsigned char)c) && c != '_' && c != '-' && c != '.')
            return false;
    }
    return true;
}

/* Route names compare case-insensitively: the environment cannot tell
 * "Ingest" from "ingest". */
static int find_route(const struct loader *ld, const char *name, size_t len)
{
    for (size_t i = 0; i < ld->cfg->n_routes; i++) {
        const char *r = ld->cfg->routes[i].name;
        if (strlen(r) == len && strncasecmp(r, name, len) == 0)
            return (int)i;
    }
    return -1;
}

/* A new route NAME (LEN bytes) with every default; created by O. */
static int add_route(struct loader *ld, const char *name, size_t len, bool lower,
                     const struct origin *o)
{
    struct config *cfg = ld->cfg;
    if (cfg->n_routes == ld->route_cap) {
        size_t cap = ld->route_cap != 0 ? ld->route_cap * 2 : 4;
        struct config_route *r = realloc(cfg->routes, cap * sizeof *r);
        if (r == NULL)
            return config_fail(ld, o, NULL, "out of memory");
        cfg->routes = r;
        struct route_meta *m = realloc(ld->meta, cap * sizeof *m);
        if (m == NULL)
            return config_fail(ld, o, NULL, "out of memory");
        ld->meta = m;
        ld->route_cap = cap;
    }
    size_t idx = cfg->n_routes;
    memset(&cfg->routes[idx], 0, sizeof cfg->routes[idx]);
    memset(&ld->meta[idx], 0, sizeof ld->meta[idx]);
    cfg->n_routes++; /* from here config_free owns whatever the entry holds */
    ld->meta[idx].line = o->line;
    ld->meta[idx].env = o->env;
    char *n = strndup(name, len);
    if (n == NULL)
        return config_fail(ld, o, NULL, "out of memory");
    for (char *p = n; lower && *p != '\0'; p++)
        *p = (char)tolower((unsigned char)*p);
    cfg->routes[idx].name = n;
    const struct origin dflt = {0, NULL};
    for (size_t ki = 0; ki < RK_COUNT; ki++)
        if (config_sections[SEC_ROUTE].keys[ki].def != NULL &&
            config_set_key(ld, SEC_ROUTE, idx, ki, config_sections[SEC_ROUTE].keys[ki].def,
                           &dflt) != 0)
            return -1;
    return (int)idx;
}

/* Which section the header text TEXT (trimmed, as between the brackets)
 * names; a [route NAME] not seen before is created. */
static int resolve_section(struct loader *ld, const char *text, const struct origin *o,
                           enum section_kind *kind, size_t *route)
{
    char key[MAX_SECTION_TEXT + 8];
    snprintf(key, sizeof key, "[%.*s]", MAX_SECTION_TEXT, text);
    for (int s = SEC_HTTP; s < SEC_ROUTE; s++) {
        if (strcmp(text, config_sections[s].name) == 0) {
            *kind = (enum section_kind)s;
            return 0;
        }
    }
    if (strncmp(text, "route", 5) != 0 || (text[5] != '\0' && !is_blank(text[5])))
        return config_fail(ld, o, key,
                           "unknown section (expected [http], [amqp], [log] or [route NAME])");
    const char *name = text + 5;
    while (is_blank(*name))
        name++;
    size_t len = strlen(name);
    if (len == 0)
        return config_fail(ld, o, key, "a route section needs a name: [route NAME]");
    if (!valid_route_name(name, len))
        return config_fail(ld, o, key, "route name must be 1..%d letters, digits, '_', '-' or '.'",
                           MAX_ROUTE_NAME);
    int idx = find_route(ld, name, len);
    if (idx >= 0 && strcmp(ld->cfg->routes[idx].name, name) != 0)
        return config_fail(ld, o, key, "same name as route %s: route names are case-insensitive",
                           ld->cfg->routes[idx].name);
    if (idx < 0 && (idx = add_route(ld, name, len, false, o)) < 0)
        return -1;
    *kind = SEC_ROUTE;
    *route = (size_t)idx;
    return 0;
}

/* ---- the file --------------------------------------------------------- */

/* A "[...]" line, seen before inih: so that an empty or unknown section is
 * refused too (inih only reports keys), and so that what inih would
 * silently accept (text after ']', a name it would cut) is refused. */
static void check_header(struct loader *ld, const char *line)
{
    const struct origin o = {ld->lineno, NULL};
    const char *close = strchr(line + 1, ']');
    if (close == NULL) {
        if (ld->unclosed_line == 0)
            ld->unclosed_line = ld->lineno;
        return; /* inih reports the syntax error */
    }
    const char *after = close + 1;
    while (is_blank(*after))
        after++;
    if (*after != '\0' && *after != '\n' && *after != ';') {
        config_fail(ld, &o, NULL, "text after ']' (a comment starts with ';')");
        return;
    }
    size_t raw = (size_t)(close - line - 1);
    if (raw > MAX_SECTION_TEXT) {
        config_fail(ld, &o, NULL, "section name longer than %d characters", MAX_SECTION_TEXT);
        return;
    }
    char text[MAX_SECTION_TEXT + 1];
    const char *b = line + 1, *e = close;
    while (b < e && is_blank(*b))
        b++;
    while (e > b && is_blank(e[-1]))
        e--;
    copy_name(text, sizeof text, b, (size_t)(e - b));
    enum section_kind kind;
    size_t route;
    (void)resolve_section(ld, text, &o, &kind, &route);
}

/* inih's reader: one line per call, numbered, too-long lines refused
 * (fgets would split them and inih would parse the rest as a new line).
 * Leading blanks are dropped, so an indented "key = value" is a key and
 * never a continuation of the previous value. */
static char *read_line(char *str, int num, void *stream)
{
    struct loader *ld = stream;
    if (ld->failed)
        return NULL;
    errno = 0;
    ssize_t n = getline(&ld->line, &ld->line_cap, ld->fp);
    if (n < 0) {
        /* -1 is also getline's ENOMEM, without the error flag: only a
         * real end of file ends the file. */
        if (!feof(ld->fp) || ferror(ld->fp)) {
            const struct origin o = {ld->lineno + 1, NULL};
            config_fail(ld, &o, NULL, "read error: %s", strerror(errno != 0 ? errno : EIO));
        }
        return NULL;
    }
    ld->lineno++;
    const struct origin o = {ld->lineno, NULL};
    char *line = ld->line;
    size_t len = (size_t)n;
    if (memchr(line, '\0', len) != NULL) {
        config_fail(ld, &o, NULL, "NUL byte in the line");
        return NULL;
    }
    size_t content = len;
    while (content > 0 && (line[content - 1] == '\n' || line[content - 1] == '\r'))
        content--;
    /* inih needs room for "\r\n\0" after the longest line. */
    if (num < 4 || content > (size_t)num - 3) {
        config_fail(ld, &o, NULL, "line too long (at most %d characters)", num - 3);
        return NULL;
    }
    /* inih gets the content and one '\n' at most: a run of '\r' before it
     * (a file converted to CRLF twice) must not spill past its buffer. */
    if (content < len) {
        line[content] = '\n';
        line[content + 1] = '\0';
        len = content + 1;
    }
    if (ld->lineno == 1 && len >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0) {
        line += 3;
        len -= 3;
    }
    while (len > 0 && is_blank(*line)) {
        line++;
        len--;
    }
    if (*line == '[') {
        check_header(ld, line);
        if (ld->failed)
            return NULL;
    }
    memcpy(str, line, len + 1);
    return str;
}

/* inih's handler: 1 = go on, 0 = error (the reason is in ld->err). */
static int on_key(void *user, const char *section, const char *name, const char *value)
{
    struct loader *ld = user;
    if (ld->failed)
        return 0;
    const struct origin o = {ld->lineno, NULL};
    if (name[0] == '\0') {
        config_fail(ld, &o, NULL, "missing key name before '='");
        return 0;
    }
    char text[MAX_SECTION_TEXT + 1];
    const char *b = section, *e = section + strlen(section);
    while (b < e && is_blank(*b))
        b++;
    while (e > b && is_blank(e[-1]))
        e--;
    if (b == e) {
        config_fail(ld, &o, name, "key outside any section");
        return 0;
    }
    copy_name(text, sizeof text, b, (size_t)(e - b));
    enum section_kind kind;
    size_t route = 0;
    if (resolve_section(ld, text, &o, &kind, &route) != 0)
        return 0;
    /* Keys are lower case in the file; config_find_key also serves the
     * environment, where they are upper case. */
    int ki = config_find_key(kind, name, strlen(name));
    if (ki < 0 || strcmp(config_sections[kind].keys[ki].name, name) != 0) {
        if (kind == SEC_ROUTE)
            config_fail(ld, &o, name, "unknown key in [route %s]", ld->cfg->routes[route].name);
        else
            config_fail(ld, &o, name, "unknown key in [%s]", config_sections[kind].name);
        return 0;
    }
    return config_set_key(ld, kind, route, (size_t)ki, value, &o) == 0;
}

int config_read_file(struct loader *ld)
{
    ld->fp = fopen(ld->cfg->file, "r");
    if (ld->fp == NULL)
        return config_fail(ld, NULL, NULL, "%s", strerror(errno));
    int rc = ini_parse_stream(read_line, ld, on_key, ld);
    fclose(ld->fp);
    ld->fp = NULL;
    free(ld->line);
    ld->line = NULL;
    /* inih keeps going after a syntax error and reports the first error
     * line; ours (the handler's, the reader's) stop it. The earlier wins. */
    if (rc > 0 && (!ld->failed || (ld->err_line > 0 && rc < ld->err_line))) {
        const struct origin o = {rc, NULL};
        ld->failed = false;
        if (rc == ld->unclosed_line)
            return config_fail(ld, &o, NULL, "missing ']' after the section name");
        return config_fail(ld, &o, NULL, "expected 'key = value' or '[section]'");
    }
    if (rc < 0 && !ld->failed)
        return config_fail(ld, NULL, NULL, "out of memory");
    return ld->failed ? -1 : 0;
}

/* ---- the environment -------------------------------------------------- */

static int apply_env_route(struct loader *ld, const char *rest, size_t len, const char *value,
                           const struct origin *o)
{
    /* NAME and KEY may both hold '_': KEY is the longest key name that
     * ends REST after a '_', NAME what is left before it. */
    int best = -1;
    size_t best_len = 0;
    for (size_t i = 0; i < RK_COUNT; i++) {
        size_t kl = strlen(config_sections[SEC_ROUTE].keys[i].name);
        if (kl + 1 < len && kl > best_len && rest[len - kl - 1] == '_' &&
            strncasecmp(rest + len - kl, config_sections[SEC_ROUTE].keys[i].name, kl) == 0) {
            best = (int)i;
            best_len = kl;
        }
    }
    if (best < 0)
        return config_fail(ld, o, NULL,
                           "expected BRIDGE_ROUTE_<NAME>_<KEY>, KEY one of path, mode, exchange, "
                           "routing_key, queue, queue_type, persistent, schema, root, timeout, "
                           "auth_token_file");
    size_t name_len = len - best_len - 1;
    if (!valid_route_name(rest, name_len))
        return config_fail(ld, o, NULL, "route name must be 1..%d letters, digits, '_', '-' or '.'",
                           MAX_ROUTE_NAME);
    int idx = find_route(ld, rest, name_len);
    if (idx < 0 && (idx = add_route(ld, rest, name_len, true, o)) < 0)
        return -1;
    return config_set_key(ld, SEC_ROUTE, (size_t)idx, (size_t)best, value, o);
}

int config_read_env(struct loader *ld, char *const *envp)
{
    const size_t plen = sizeof ENV_PREFIX - 1;
    for (size_t i = 0; envp != NULL && envp[i] != NULL; i++) {
        const char *e = envp[i];
        const char *eq = strchr(e, '=');
        if (strncmp(e, ENV_PREFIX, plen) != 0 || eq == NULL)
            continue;
        const struct origin o = {0, e};
        const char *name = e + plen, *value = eq + 1;
        size_t len = (size_t)(eq - name);
        int kind = -1;
        size_t sl = 0;
        for (int s = SEC_HTTP; s < SEC_COUNT; s++) {
            sl = strlen(config_sections[s].env);
            if (len > sl && strncasecmp(name, config_sections[s].env, sl) == 0) {
                kind = s;
                break;
            }
        }
        if (kind < 0)
            return config_fail(ld, &o, NULL,
                               "unknown variable (expected BRIDGE_HTTP_<KEY>, BRIDGE_AMQP_<KEY>, "
                               "BRIDGE_LOG_<KEY> or BRIDGE_ROUTE_<NAME>_<KEY>)");
        if (kind == SEC_ROUTE) {
            if (apply_env_route(ld, name + sl, len - sl, value, &o) != 0)
                return -1;
            continue;
        }
        int ki = config_find_key((enum section_kind)kind, name + sl, len - sl);
        if (ki < 0)
            return config_fail(ld, &o, NULL, "unknown key in [%s]", config_sections[kind].name);
        if (config_set_key(ld, (enum section_kind)kind, 0, (size_t)ki, value, &o) != 0)
            return -1;
    }
    return 0;
}
