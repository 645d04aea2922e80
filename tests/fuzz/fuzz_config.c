/* fuzz_config.c - libFuzzer target for bridge/config: the input is a
 * bridge.ini (written to a memfd and loaded through /proc/self/fd/N), then,
 * after a first "\0\0", BRIDGE_* variables, one a line ("HTTP_LISTEN=..."
 * becomes "BRIDGE_HTTP_LISTEN=..."). The file is loaded with no environment,
 * twice (the same answer both times), and when it loads, again with the
 * variables. Invariants: a config or an error, never both, never neither; the
 * error NUL-terminated inside the caller's buffer, on one line for a file
 * error, naming the file or the variable; a config that loads obeys every
 * bound and rule of ingest-bridge(8)'s CONFIGURATION; and config_read.c's
 * line reader never writes past inih's line buffer. */
#include "bridge/config.h"
#include "fuzz.h"

#include <ctype.h>
#include <ini.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

#define MAX_VARS 16 /* BRIDGE_* variables taken from one input */
#define HOUR_MS UINT64_C(3600000)

static int g_fd = -1;   /* the memfd holding the file */
static char g_path[64]; /* /proc/self/fd/N */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* inih's line buffer on the heap rather than on its own (uninstrumented)
     * stack: ASan then sees a reader that writes past it by one byte. */
    ini_use_stack = false;
    g_fd = memfd_create("bridge.ini", MFD_CLOEXEC);
    FUZZ_CHECK(g_fd >= 0, "memfd_create failed");
    snprintf(g_path, sizeof g_path, "/proc/self/fd/%d", g_fd);
    return 0;
}

static bool has_ctl(const char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

static bool route_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 42)
        return false;
    for (; *s != '\0'; s++)
        if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-' && *s != '.')
            return false;
    return true;
}

static bool path_ok(const char *s)
{
    return s != NULL && s[0] == '/' && strpbrk(s, "?# ") == NULL && !has_ctl(s) &&
           strcmp(s, "/healthz") != 0 && strcmp(s, "/metrics") != 0;
}

static bool amqp_name_ok(const char *s)
{
    return s != NULL && strlen(s) <= 255 && !has_ctl(s);
}

static void check_uri(const struct broker_uri *u)
{
    /* amqp:// or amqps://, and the tls flag, the text and the display agree. */
    const char *scheme = u->tls ? "amqps://" : "amqp://";
    size_t sl = strlen(scheme);
    FUZZ_CHECK(u->text != NULL && strncmp(u->text, scheme, sl) == 0, "uri text");
    FUZZ_CHECK(u->host != NULL && u->host[0] != '\0', "uri host");
    FUZZ_CHECK(u->port >= 1 && u->port <= 65535, "uri port %d", u->port);
    FUZZ_CHECK(u->user != NULL && u->password != NULL, "uri user/password");
    FUZZ_CHECK(u->vhost != NULL && u->vhost[0] != '\0', "uri vhost");
    /* "amqp://USER@...": the user as written has no ':', so no password. */
    FUZZ_CHECK(u->display != NULL && strncmp(u->display, scheme, sl) == 0, "display");
    const char *at = strchr(u->display + sl, '@');
    FUZZ_CHECK(at != NULL && memchr(u->display + sl, ':', (size_t)(at - u->display - sl)) == NULL,
               "display shows more than the user: %s", u->display);
}

/* A certificate and its key: both set or neither. */
static bool pair_ok(const char *cert, const char *key)
{
    return cert != NULL && key != NULL && (cert[0] == '\0') == (key[0] == '\0');
}

/* Everything README promises about a config that loaded. */
static void check_config(const struct config *c)
{
    FUZZ_CHECK(c->file != NULL && strcmp(c->file, g_path) == 0, "file %s", c->file);
    FUZZ_CHECK(c->http.listen_host != NULL && c->http.listen_host[0] != '\0' &&
                   !has_ctl(c->http.listen_host) && strchr(c->http.listen_host, ' ') == NULL,
               "listen host");
    FUZZ_CHECK(c->http.listen_port >= 1 && c->http.listen_port <= 65535, "listen port %d",
               c->http.listen_port);
    FUZZ_CHECK(c->http.workers >= 1 && c->http.workers <= 256, "workers %d", c->http.workers);
    FUZZ_CHECK(c->http.max_body >= 1 && c->http.max_body <= (size_t)1 << 30, "max_body %zu",
               c->http.max_body);
    FUZZ_CHECK(c->http.timeout_ms >= 100 && c->http.timeout_ms <= HOUR_MS, "http timeout");
    FUZZ_CHECK(path_ok(c->http.pong_path), "pong_path %s", c->http.pong_path);
    FUZZ_CHECK(c->amqp.n_uris >= 1 && c->amqp.uris != NULL, "no URI");
    bool amqps = false;
    for (size_t i = 0; i < c->amqp.n_uris; i++) {
        check_uri(&c->amqp.uris[i]);
        amqps = amqps || c->amqp.uris[i].tls;
    }
    FUZZ_CHECK(pair_ok(c->http.tls_cert, c->http.tls_key), "[http] tls_cert / tls_key");
    FUZZ_CHECK(pair_ok(c->amqp.tls_cert, c->amqp.tls_key), "[amqp] tls_cert / tls_key");
    FUZZ_CHECK(c->amqp.tls_ca != NULL && (amqps || c->amqp.tls_ca[0] == '\0'),
               "[amqp] tls_ca without amqps://");
    FUZZ_CHECK(c->http.auth_token_file != NULL &&
                   (!c->http.metrics_auth || c->http.auth_token_file[0] != '\0'),
               "metrics_auth without a token file");
    FUZZ_CHECK(c->amqp.heartbeat_ms <= HOUR_MS, "heartbeat");
    FUZZ_CHECK(c->amqp.max_inflight >= 1 && c->amqp.max_inflight <= 1000000, "max_inflight");
    FUZZ_CHECK(c->log_level >= LOG_DEBUG && c->log_level <= LOG_ERROR, "log level");
    FUZZ_CHECK(c->n_routes == 0 || c->routes != NULL, "routes");
    for (size_t i = 0; i < c->n_routes; i++) {
        const struct config_route *r = &c->routes[i];
        FUZZ_CHECK(r->name != NULL && route_name_ok(r->name), "route name");
        FUZZ_CHECK(path_ok(r->path) && strcmp(r->path, c->http.pong_path) != 0, "route %s path %s",
                   r->name, r->path);
        FUZZ_CHECK(r->mode == ROUTE_PUBLISH || r->mode == ROUTE_RPC, "route %s mode", r->name);
        FUZZ_CHECK(amqp_name_ok(r->exchange) && amqp_name_ok(r->routing_key) &&
                       amqp_name_ok(r->queue),
                   "route %s: AMQP names", r->name);
        FUZZ_CHECK(strncmp(r->queue, "amq.", 4) != 0, "route %s: queue %s", r->name, r->queue);
        FUZZ_CHECK(r->exchange[0] != '\0' || r->routing_key[0] != '\0',
                   "route %s: nothing would be delivered", r->name);
        FUZZ_CHECK(r->schema != NULL, "route %s: schema", r->name);
        FUZZ_CHECK(r->root != NULL && strpbrk(r->root, " :<>/=&'\"") == NULL && !has_ctl(r->root),
                   "route %s: root %s", r->name, r->root);
        FUZZ_CHECK(r->timeout_ms >= 1 && r->timeout_ms <= HOUR_MS, "route %s: timeout", r->name);
        FUZZ_CHECK(r->auth_token_file != NULL, "route %s: auth_token_file", r->name);
        for (size_t j = 0; j < i; j++) {
            FUZZ_CHECK(strcasecmp(c->routes[j].name, r->name) != 0, "route %s twice", r->name);
            FUZZ_CHECK(strcmp(c->routes[j].path, r->path) != 0, "path %s twice", r->path);
        }
    }
}

/* Load with ENVP into a buffer whose every byte is set, so that an error
 * left unwritten or unterminated shows. Returns the config (or NULL). */
static struct config *load(char *const *envp, char *err, size_t errlen)
{
    memset(err, 'X', errlen);
    struct config *c = config_load(g_path, envp, err, errlen);
    FUZZ_CHECK(memchr(err, '\0', errlen) != NULL, "error not terminated in the buffer");
    if (c != NULL) {
        FUZZ_CHECK(err[0] == '\0', "a config and an error: %s", err);
        check_config(c);
        return c;
    }
    FUZZ_CHECK(err[0] != '\0', "no config and no error");
    bool from_env = strncmp(err, "environment BRIDGE_", 19) == 0;
    FUZZ_CHECK(strncmp(err, g_path, strlen(g_path)) == 0 || (envp != NULL && from_env),
               "error names neither the file nor a variable: %s", err);
    if (envp == NULL)
        FUZZ_CHECK(strchr(err, '\n') == NULL, "file error on several lines: %s", err);
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *sep = memmem(data, size, "\0\0", 2);
    size_t flen = sep != NULL ? (size_t)(sep - data) : size;
    FUZZ_CHECK(ftruncate(g_fd, 0) == 0, "ftruncate");
    FUZZ_CHECK(pwrite(g_fd, data, flen, 0) == (ssize_t)flen, "pwrite");

    char err[CONFIG_ERR_LEN], again[CONFIG_ERR_LEN];
    struct config *c = load(NULL, err, sizeof err);
    struct config *c2 = load(NULL, again, sizeof again);
    FUZZ_CHECK((c == NULL) == (c2 == NULL) && strcmp(err, again) == 0,
               "the same file twice: \"%s\", then \"%s\"", err, again);
    config_free(c2);
    config_free(c);
    if (c == NULL || sep == NULL)
        return 0;

    /* The variables: "BRIDGE_" + each line after the separator. */
    const char *p = (const char *)sep + 2, *end = (const char *)data + size;
    char *vars[MAX_VARS + 1];
    size_t n = 0;
    while (p < end && n < MAX_VARS) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
        vars[n] = malloc(sizeof "BRIDGE_" + len);
        FUZZ_CHECK(vars[n] != NULL, "out of memory");
        memcpy(vars[n], "BRIDGE_", 7);
        memcpy(vars[n] + 7, p, len);
        vars[n][7 + len] = '\0';
        n++;
        p += len + 1;
    }
    vars[n] = NULL;
    config_free(load(vars, err, sizeof err));
    for (size_t i = 0; i < n; i++)
        free(vars[i]);
    return 0;
}
