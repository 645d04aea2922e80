/* test_config.c - config_load on the shipped bridge.ini, on generated files
 * (every error kind, with file:line and key) and with BRIDGE_* variables;
 * the duration / size / bool parsers. Runs from the repository root. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "bridge/config.h"

#define TMP_TEMPLATE "/tmp/test_config_XXXXXX"

/* A config file with TEXT (LEN bytes) in a new temporary file; its path in
 * PATH (sizeof TMP_TEMPLATE bytes). */
static void write_tmp(const char *text, size_t len, char *path)
{
    strcpy(path, TMP_TEMPLATE);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    assert_int_equal(close(fd), 0);
}

/* config_load on TEXT; the file is gone again on return. */
static struct config *load_len(const char *text, size_t len, char *const *envp, char *path,
                               char *err)
{
    write_tmp(text, len, path);
    struct config *cfg = config_load(path, envp, err, CONFIG_ERR_LEN);
    unlink(path);
    return cfg;
}

static struct config *load(const char *text, char *const *envp, char *path, char *err)
{
    return load_len(text, strlen(text), envp, path, err);
}

/* TEXT loads; the caller frees. */
static struct config *load_ok(const char *text, char *const *envp)
{
    char path[sizeof TMP_TEMPLATE], err[CONFIG_ERR_LEN] = "";
    struct config *cfg = load(text, envp, path, err);
    if (cfg == NULL)
        fail_msg("config refused: %s\n--- config ---\n%s", err, text);
    return cfg;
}

/* TEXT is refused with "PATH" followed by WANT at the start of the error. */
static void expect_file_error(const char *text, char *const *envp, const char *want)
{
    char path[sizeof TMP_TEMPLATE], err[CONFIG_ERR_LEN] = "";
    struct config *cfg = load(text, envp, path, err);
    if (cfg != NULL) {
        config_free(cfg);
        fail_msg("loaded, wanted error '%s'\n--- config ---\n%s", want, text);
    }
    size_t plen = strlen(path);
    if (strncmp(err, path, plen) != 0 || strncmp(err + plen, want, strlen(want)) != 0)
        fail_msg("error '%s', wanted '%s%s'\n--- config ---\n%s", err, path, want, text);
}

/* TEXT with ENVP is refused with an error that starts with WANT. */
static void expect_env_error(const char *text, char *const *envp, const char *want)
{
    char path[sizeof TMP_TEMPLATE], err[CONFIG_ERR_LEN] = "";
    struct config *cfg = load(text, envp, path, err);
    if (cfg != NULL) {
        config_free(cfg);
        fail_msg("loaded, wanted error '%s'", want);
    }
    if (strncmp(err, want, strlen(want)) != 0)
        fail_msg("error '%s', wanted '%s...'", err, want);
}

static const struct config_route *route(const struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_routes; i++)
        if (strcmp(cfg->routes[i].name, name) == 0)
            return &cfg->routes[i];
    fail_msg("no route %s", name);
    return NULL;
}

static const char ROUTE_A[] = "[route a]\npath = /a\nrouting_key = a\n";

/* ---- the shipped file -------------------------------------------------- */

static void test_shipped_bridge_ini(void **state)
{
    (void)state;
    char *env[] = {"PATH=/usr/bin", "HOME=/root", NULL};
    char err[CONFIG_ERR_LEN] = "";
    struct config *cfg = config_load("bridge.ini", env, err, sizeof err);
    if (cfg == NULL)
        fail_msg("bridge.ini refused: %s", err);
    assert_string_equal(cfg->file, "bridge.ini");
    assert_string_equal(cfg->http.listen_host, "127.0.0.1");
    assert_int_equal(cfg->http.listen_port, 8080);
    assert_true(cfg->http.workers >= 1);
    assert_int_equal(cfg->http.max_body, 1024 * 1024);
    assert_int_equal(cfg->http.timeout_ms, 30000);
    assert_string_equal(cfg->http.pong_path, "/pong");

    assert_int_equal(cfg->amqp.n_uris, 1);
    assert_string_equal(cfg->amqp.uris[0].text, "amqp://guest:guest@127.0.0.1:5672/%2f");
    assert_string_equal(cfg->amqp.uris[0].display, "amqp://guest@127.0.0.1:5672/%2f");
    assert_string_equal(cfg->amqp.uris[0].host, "127.0.0.1");
    assert_int_equal(cfg->amqp.uris[0].port, 5672);
    assert_string_equal(cfg->amqp.uris[0].user, "guest");
    assert_string_equal(cfg->amqp.uris[0].password, "guest");
    assert_string_equal(cfg->amqp.uris[0].vhost, "/");
    assert_int_equal(cfg->amqp.heartbeat_ms, 30000);
    assert_true(cfg->amqp.confirm);
    assert_int_equal(cfg->amqp.max_inflight, 10000);
    assert_int_equal(cfg->log_level, LOG_INFO);

    assert_int_equal(cfg->n_routes, 2);
    const struct config_route *r = &cfg->routes[0];
    assert_string_equal(r->name, "ingest");
    assert_string_equal(r->path, "/ingest");
    assert_int_equal(r->mode, ROUTE_PUBLISH);
    assert_string_equal(r->exchange, "");
    assert_string_equal(r->routing_key, "ingest");
    assert_string_equal(r->queue, "ingest");
    assert_true(r->persistent);
    assert_string_equal(r->schema, "");
    assert_string_equal(r->root, "");
    assert_int_equal(r->timeout_ms, 5000);

    r = &cfg->routes[1];
    assert_string_equal(r->name, "rpc");
    assert_string_equal(r->path, "/rpc");
    assert_int_equal(r->mode, ROUTE_RPC);
    assert_string_equal(r->exchange, "");
    assert_string_equal(r->routing_key, "rpc");
    assert_string_equal(r->queue, "rpc");
    assert_false(r->persistent); /* rpc: transient unless set */
    assert_string_equal(r->schema, "");
    assert_string_equal(r->root, "");
    assert_int_equal(r->timeout_ms, 5000);
    config_free(cfg);
}

/* The README's container example, against the shipped file. */
static void test_shipped_with_readme_env(void **state)
{
    (void)state;
    char *env[] = {"BRIDGE_AMQP_URI=amqp://app:secret@rabbit-1:5672/prod,"
                   "amqp://app:secret@rabbit-2:5672/prod",
                   "BRIDGE_HTTP_LISTEN=0.0.0.0:8080", NULL};
    char err[CONFIG_ERR_LEN] = "";
    struct config *cfg = config_load("bridge.ini", env, err, sizeof err);
    if (cfg == NULL)
        fail_msg("refused: %s", err);
    assert_string_equal(cfg->http.listen_host, "0.0.0.0");
    assert_int_equal(cfg->amqp.n_uris, 2);
    assert_string_equal(cfg->amqp.uris[0].host, "rabbit-1");
    assert_string_equal(cfg->amqp.uris[1].host, "rabbit-2");
    assert_string_equal(cfg->amqp.uris[1].display, "amqp://app@rabbit-2:5672/prod");
    assert_string_equal(cfg->amqp.uris[1].password, "secret");
    assert_int_equal(cfg->n_routes, 2);
    config_free(cfg);
}

/* ---- defaults and values ----------------------------------------------- */

static void test_defaults(void **state)
{
    (void)state;
    struct config *cfg = load_ok("; nothing but a comment\n", NULL);
    assert_string_equal(cfg->http.listen_host, "127.0.0.1");
    assert_int_equal(cfg->http.listen_port, 8080);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    assert_true(cfg->http.workers >= 1);
    assert_int_equal(cfg->http.workers, cpus < 1 ? 1 : cpus > 256 ? 256 : cpus);
    assert_int_equal(cfg->http.max_body, 1024 * 1024);
    assert_int_equal(cfg->http.timeout_ms, 30000);
    assert_string_equal(cfg->http.pong_path, "/pong");
    assert_int_equal(cfg->http.max_connections, 16384);
    assert_int_equal(cfg->http.max_pending_bytes, 256 * 1024 * 1024);
    assert_int_equal(cfg->amqp.n_uris, 1);
    assert_string_equal(cfg->amqp.uris[0].vhost, "/");
    assert_string_equal(cfg->amqp.uris[0].host, "127.0.0.1");
    assert_int_equal(cfg->amqp.heartbeat_ms, 30000);
    assert_true(cfg->amqp.confirm);
    assert_int_equal(cfg->amqp.max_inflight, 10000);
    assert_int_equal(cfg->log_level, LOG_INFO);
    assert_int_equal(cfg->n_routes, 0); /* pong only is allowed */
    config_free(cfg);

    cfg = load_ok("", NULL); /* an empty file too */
    assert_int_equal(cfg->n_routes, 0);
    config_free(cfg);
}

static void test_route_defaults(void **state)
{
    (void)state;
    struct config *cfg = load_ok(ROUTE_A, NULL);
    assert_int_equal(cfg->n_routes, 1);
    const struct config_route *r = &cfg->routes[0];
    assert_string_equal(r->name, "a");
    assert_int_equal(r->mode, ROUTE_PUBLISH);
    assert_non_null(r->exchange);
    assert_string_equal(r->exchange, "");
    assert_string_equal(r->queue, "");
    assert_int_equal(r->queue_type, QUEUE_CLASSIC);
    assert_true(r->persistent);
    assert_string_equal(r->schema, "");
    assert_string_equal(r->root, "");
    assert_int_equal(r->timeout_ms, 5000);
    config_free(cfg);
}

static void test_every_key_set(void **state)
{
    (void)state;
    struct config *cfg = load_ok("[http]\n"
                                 "listen = [::1]:9000\n"
                                 "workers = 3\n"
                                 "max_body = 512KiB\n"
                                 "timeout = 2m\n"
                                 "pong_path = /ping\n"
                                 "max_connections = 100\n"
                                 "max_pending_bytes = 2MiB\n"
                                 "[amqp]\n"
                                 "uri = amqp://u:p@broker:5673/v\n"
                                 "heartbeat = 0\n"
                                 "confirm = Off\n"
                                 "max_inflight = 7\n"
                                 "[log]\n"
                                 "level = DEBUG\n"
                                 "[route Orders.v2-x]\n"
                                 "path = /orders/v2\n"
                                 "mode = rpc\n"
                                 "exchange = ex\n"
                                 "routing_key = orders.v2\n"
                                 "queue = orders\n"
                                 "queue_type = quorum\n"
                                 "persistent = false\n"
                                 "schema = /etc/orders.xsd\n"
                                 "root = order\n"
                                 "timeout = 250ms\n",
                                 NULL);
    assert_string_equal(cfg->http.listen_host, "::1");
    assert_int_equal(cfg->http.listen_port, 9000);
    assert_int_equal(cfg->http.workers, 3);
    assert_int_equal(cfg->http.max_body, 512 * 1024);
    assert_int_equal(cfg->http.timeout_ms, 120000);
    assert_string_equal(cfg->http.pong_path, "/ping");
    assert_int_equal(cfg->http.max_connections, 100);
    assert_int_equal(cfg->http.max_pending_bytes, 2 * 1024 * 1024);
    assert_string_equal(cfg->amqp.uris[0].host, "broker");
    assert_int_equal(cfg->amqp.uris[0].port, 5673);
    assert_int_equal(cfg->amqp.heartbeat_ms, 0);
    assert_false(cfg->amqp.confirm);
    assert_int_equal(cfg->amqp.max_inflight, 7);
    assert_int_equal(cfg->log_level, LOG_DEBUG);
    const struct config_route *r = route(cfg, "Orders.v2-x");
    assert_string_equal(r->path, "/orders/v2");
    assert_int_equal(r->mode, ROUTE_RPC);
    assert_string_equal(r->exchange, "ex");
    assert_string_equal(r->routing_key, "orders.v2");
    assert_string_equal(r->queue, "orders");
    assert_int_equal(r->queue_type, QUEUE_QUORUM);
    assert_false(r->persistent);
    assert_string_equal(r->schema, "/etc/orders.xsd");
    assert_string_equal(r->root, "order");
    assert_int_equal(r->timeout_ms, 250);
    config_free(cfg);
}

/* The file's own syntax: BOM, CRLF, indentation, comments, ':' pairs. */
static void test_syntax_variants(void **state)
{
    (void)state;
    struct config *cfg = load_ok("\xEF\xBB\xBF; BOM first\r\n"
                                 "[http]\r\n"
                                 "   workers = 2   ; indented: still a key\r\n"
                                 "# hash comment\r\n"
                                 "  max_body = 2048\r\n"
                                 "\t\t; indented comment\r\n"
                                 "[ route  a ]\r\n"
                                 "path: /a\r\n"
                                 "routing_key = a\r\n",
                                 NULL);
    assert_int_equal(cfg->http.workers, 2);
    assert_int_equal(cfg->http.max_body, 2048);
    assert_string_equal(route(cfg, "a")->path, "/a");
    config_free(cfg);
}

/* A [route] section given twice merges its keys. */
static void test_route_section_twice_merges(void **state)
{
    (void)state;
    struct config *cfg = load_ok("[route a]\npath = /a\n[http]\nworkers = 1\n"
                                 "[route a]\nrouting_key = ka\n",
                                 NULL);
    assert_int_equal(cfg->n_routes, 1);
    assert_string_equal(cfg->routes[0].path, "/a");
    assert_string_equal(cfg->routes[0].routing_key, "ka");
    config_free(cfg);
}

static void test_workers_bounds(void **state)
{
    (void)state;
    struct config *cfg = load_ok("[http]\nworkers = 256\n", NULL);
    assert_int_equal(cfg->http.workers, 256);
    config_free(cfg);
    cfg = load_ok("[http]\nworkers = 0\n", NULL);
    assert_true(cfg->http.workers >= 1 && cfg->http.workers <= 256);
    config_free(cfg);
}

/* ---- URIs -------------------------------------------------------------- */

static void test_uri_list(void **state)
{
    (void)state;
    struct config *cfg = load_ok("[amqp]\n"
                                 "uri =  amqp://app:s3cret@node-1:5672/prod ,"
                                 "amqp://app:p%40ss@node-2/%2f,  amqp://[::1]:5680/a%2fb ; 3\n",
                                 NULL);
    assert_int_equal(cfg->amqp.n_uris, 3);
    const struct broker_uri *u = cfg->amqp.uris;
    assert_string_equal(u[0].text, "amqp://app:s3cret@node-1:5672/prod");
    assert_string_equal(u[0].display, "amqp://app@node-1:5672/prod");
    assert_null(strstr(u[0].display, "s3cret"));
    assert_string_equal(u[0].host, "node-1");
    assert_int_equal(u[0].port, 5672);
    assert_string_equal(u[0].user, "app");
    assert_string_equal(u[0].password, "s3cret");
    assert_string_equal(u[0].vhost, "prod");

    assert_string_equal(u[1].host, "node-2");
    assert_int_equal(u[1].port, 5672); /* default port */
    assert_string_equal(u[1].password, "p@ss");
    assert_string_equal(u[1].vhost, "/"); /* %2f decoded */
    assert_string_equal(u[1].display, "amqp://app@node-2:5672/%2f");

    assert_string_equal(u[2].host, "::1");
    assert_int_equal(u[2].port, 5680);
    assert_string_equal(u[2].user, "guest");
    assert_string_equal(u[2].vhost, "a/b");
    assert_string_equal(u[2].display, "amqp://guest@[::1]:5680/a%2fb");
    config_free(cfg);

    /* No vhost written: "/" */
    cfg = load_ok("[amqp]\nuri = amqp://h\n", NULL);
    assert_string_equal(cfg->amqp.uris[0].vhost, "/");
    assert_string_equal(cfg->amqp.uris[0].display, "amqp://guest@h:5672/%2f");
    config_free(cfg);
}

/* A URI's password never appears in an error. */
static void test_uri_error_hides_password(void **state)
{
    (void)state;
    const char *bad[] = {
        "[amqp]\nuri = amqp://u:sekret@h:99999/v\n",
        "[amqp]\nuri = amqp://u:sekret@h/\n",
        "[amqp]\nuri = amqps://u:sekret@h:0/v\n",
        "[amqp]\nuri = amqp://u:sekret@h/v, amqp://u:sekret@h:0/v\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char path[sizeof TMP_TEMPLATE], err[CONFIG_ERR_LEN] = "";
        struct config *cfg = load(bad[i], NULL, path, err);
        assert_null(cfg);
        assert_non_null(strstr(err, ": uri: "));
        if (strstr(err, "sekret") != NULL)
            fail_msg("password in error: %s", err);
    }
    char *env[] = {"BRIDGE_AMQP_URI=amqp://u:sekret@h:notaport/v", NULL};
    char path[sizeof TMP_TEMPLATE], err[CONFIG_ERR_LEN] = "";
    assert_null(load("", env, path, err));
    assert_non_null(strstr(err, "BRIDGE_AMQP_URI"));
    assert_null(strstr(err, "sekret"));
}

/* ---- errors ------------------------------------------------------------ */

struct error_case {
    const char *text; /* the config file */
    const char *want; /* what follows the file name at the start of the error */
};

static void run_error_cases(const struct error_case *c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        expect_file_error(c[i].text, NULL, c[i].want);
}

static void test_structure_errors(void **state)
{
    (void)state;
    static const struct error_case cases[] = {
        {"[http]\nlisten = 127.0.0.1:80\nbogus_key = 1\n", ":3: bogus_key: unknown key in [http]"},
        {"[route a]\npath = /a\nrouting_key = a\ncolour = red\n",
         ":4: colour: unknown key in [route a]"},
        {"[http]\nListen = 127.0.0.1:80\n", ":2: Listen: unknown key in [http]"},
        {"[amqp]\nlevel = info\n", ":2: level: unknown key in [amqp]"},
        {"[http]\n\n[bogus]\nx = 1\n", ":3: [bogus]: unknown section"},
        {"[bogus]\n", ":1: [bogus]: unknown section"},
        {"[HTTP]\n", ":1: [HTTP]: unknown section"},
        {"[routes a]\n", ":1: [routes a]: unknown section"},
        {"listen = 127.0.0.1:80\n", ":1: listen: key outside any section"},
        {"[route]\n", ":1: [route]: a route section needs a name"},
        {"[route a/b]\n", ":1: [route a/b]: route name must be"},
        {"[route a b]\n", ":1: [route a b]: route name must be"},
        {"[route A]\npath = /a\nrouting_key = a\n[route a]\n",
         ":4: [route a]: same name as route A"},
        {"[route aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa]\n",
         ":1: section name longer than"},
        {"[http] junk\nworkers = 1\n", ":1: text after ']'"},
        {"[http]\n[amqp\nworkers = 1\n", ":2: missing ']'"},
        {"[http]\nworkers\n", ":2: expected 'key = value'"},
        {"[http]\n= 5\n", ":2: missing key name"},
        {"[http]\nworkers = 1\nworkers = 2\n", ":3: workers: given twice (first on line 2)"},
        {"[http]\nworkers = 1\n[amqp]\nconfirm = yes\n[http]\nworkers = 1\n",
         ":6: workers: given twice (first on line 2)"},
        {"[route a]\npath = /a\nrouting_key = a\n[http]\n[route a]\npath = /b\n",
         ":6: path: given twice (first on line 2)"},
        {"[http]\nworkers = 1\n  workers = 2\n", ":3: workers: given twice (first on line 2)"},
    };
    run_error_cases(cases, sizeof cases / sizeof cases[0]);
}

static void test_value_errors(void **state)
{
    (void)state;
    static const struct error_case cases[] = {
        /* int */
        {"[http]\nworkers = many\n", ":2: workers: 'many' is not a whole number"},
        {"[http]\nworkers = -1\n", ":2: workers: '-1' is not a whole number"},
        {"[http]\nworkers = 257\n", ":2: workers: '257' is out of range (0..256)"},
        {"[http]\nworkers = 99999999999999999999999\n",
         ":2: workers: '99999999999999999999999' is out of range"},
        {"[http]\nworkers =\n", ":2: workers: '' is not a whole number"},
        {"[amqp]\nmax_inflight = 0\n", ":2: max_inflight: '0' is out of range (1..1000000)"},
        {"[amqp]\nmax_inflight = 1000001\n", ":2: max_inflight: '1000001' is out of range"},
        {"[http]\nmax_connections = 0\n", ":2: max_connections: '0' is out of range (1..1000000)"},
        {"[http]\nmax_connections = 1000001\n", ":2: max_connections: '1000001' is out of range"},
        {"[http]\nmax_pending_bytes = 0\n", ":2: max_pending_bytes: '0' is out of range"},
        {"[http]\nmax_pending_bytes = 65537MiB\n",
         ":2: max_pending_bytes: '65537MiB' is out of range"},
        /* size */
        {"[http]\nmax_body = 1GB\n", ":2: max_body: '1GB' is not a size"},
        {"[http]\nmax_body = 1 MiB\n", ":2: max_body: '1 MiB' is not a size"},
        {"[http]\nmax_body = 0\n", ":2: max_body: '0' is out of range (1..1024MiB)"},
        {"[http]\nmax_body = 1025MiB\n", ":2: max_body: '1025MiB' is out of range"},
        {"[http]\nmax_body = 99999999999999999999MiB\n",
         ":2: max_body: '99999999999999999999MiB' is out of range"},
        /* duration */
        {"[http]\ntimeout = 10 parsecs\n", ":2: timeout: '10 parsecs' is not a duration"},
        {"[http]\ntimeout = 10\n", ":2: timeout: '10' is not a duration"},
        {"[http]\ntimeout = 1h\n", ":2: timeout: '1h' is not a duration"},
        {"[http]\ntimeout = 99ms\n", ":2: timeout: '99ms' is out of range (100ms..60m)"},
        {"[http]\ntimeout = 61m\n", ":2: timeout: '61m' is out of range"},
        {"[amqp]\nheartbeat = 1ms\n",
         ":2: heartbeat: 1ms is below 1s, the shortest AMQP heartbeat (0 turns it off)"},
        {"[amqp]\nheartbeat = 999ms\n", ":2: heartbeat: 999ms is below 1s"},
        {"[amqp]\nheartbeat = 307445734561825861m\n",
         ":2: heartbeat: '307445734561825861m' is out of range"},
        {"[route a]\ntimeout = 0\n", ":2: timeout: '0' is out of range (1ms..60m)"},
        /* bool */
        {"[amqp]\nconfirm = maybe\n", ":2: confirm: 'maybe' is not a boolean"},
        {"[route a]\npersistent = 2\n", ":2: persistent: '2' is not a boolean"},
        /* enums */
        {"[route a]\nmode = fanout\n", ":2: mode: 'fanout' is not a mode (publish or rpc)"},
        {"[log]\nlevel = verbose\n", ":2: level: 'verbose' is not a level"},
        /* paths and names */
        {"[http]\npong_path = ping\n", ":2: pong_path: 'ping' must start with '/'"},
        {"[route a]\npath = /a?b=1\n", ":2: path: '/a?b=1': a path has no query"},
        {"[route a]\npath = /a b\n", ":2: path: '/a b': spaces"},
        {"[route a]\npath =\n", ":2: path: '' must start with '/'"},
        {"[route a]\nqueue = amq.gen-1\n", ":2: queue: 'amq.gen-1': names starting with amq."},
        {"[route a]\nroot = ns:doc\n", ":2: root: 'ns:doc' is not an element's local name"},
        /* listen */
        {"[http]\nlisten = 8080\n", ":2: listen: '8080': expected host:port"},
        {"[http]\nlisten = 127.0.0.1:0\n", ":2: listen: '127.0.0.1:0': port must be"},
        {"[http]\nlisten = 127.0.0.1:65536\n", ":2: listen: '127.0.0.1:65536': port must be"},
        {"[http]\nlisten = 127.0.0.1:http\n", ":2: listen: '127.0.0.1:http': port must be"},
        {"[http]\nlisten = :8080\n", ":2: listen: ':8080': missing host"},
        {"[http]\nlisten = ::1:8080\n", ":2: listen: '::1:8080': write an IPv6 address in"},
        {"[http]\nlisten = [::1]8080\n", ":2: listen: '[::1]8080': expected [address]:port"},
        {"[http]\nlisten = [::1:8080\n", ":2: listen: '[::1:8080': missing ']'"},
        {"[http]\nlisten = [nope]:8080\n", ":2: listen: '[nope]:8080': not an IPv6 address"},
        /* uri */
        {"[amqp]\nuri = http://h/v\n", ":2: uri: must start with amqp:// or amqps://"},
        {"[amqp]\nuri = AMQPS://h/v\n", ":2: uri: must start with amqp:// or amqps://"},
        {"[amqp]\nuri = amqp://h/v, amqps://h2:0/v\n", ":2: uri: entry 2: port must be 1..65535"},
        {"[amqp]\nuri = amqp://h:99999/v\n", ":2: uri: not a valid URI"},
        {"[amqp]\nuri = amqp://h/a/b\n", ":2: uri: not a valid URI"},
        {"[amqp]\nuri = amqp://h:0/v\n", ":2: uri: port must be 1..65535"},
        {"[amqp]\nuri = amqp://h/\n", ":2: uri: empty vhost"},
        {"[amqp]\nuri = amqp://a@b@h/v\n", ":2: uri: more than one '@'"},
        {"[amqp]\nuri =\n", ":2: uri: no URI given"},
        {"[amqp]\nuri = amqp://h/v,\n", ":2: uri: entry 2 is empty"},
        {"[amqp]\nuri = amqp://h/v, ,amqp://h/w\n", ":2: uri: entry 2 is empty"},
    };
    run_error_cases(cases, sizeof cases / sizeof cases[0]);
}

static void test_cross_key_errors(void **state)
{
    (void)state;
    static const struct error_case cases[] = {
        {"[route a]\nrouting_key = a\n", ": route a: missing path"},
        {"[route a]\npath = /a\n", ": route a: missing routing_key"},
        {"[route a]\n", ": route a: missing path"},
        {"[route a]\npath = /x\nrouting_key = a\n\n[route b]\nrouting_key = b\npath = /x\n",
         ":7: path: /x is already the path of route a"},
        {"[http]\npong_path = /a\n[route a]\npath = /a\nrouting_key = a\n",
         ":4: path: /a is the pong_path"},
        {"[route a]\npath = /healthz\nrouting_key = a\n", ":2: path: /healthz is answered by"},
        {"[route a]\npath = /metrics\nrouting_key = a\n", ":2: path: /metrics is answered by"},
        {"[http]\npong_path = /healthz\n", ":2: pong_path: /healthz is answered by"},
        {"[route a]\npath = /a\nrouting_key =\n", ":3: routing_key: empty"},
        {"[http]\nmax_body = 2MiB\nmax_pending_bytes = 1MiB\n",
         ":3: max_pending_bytes: 1048576 is less than max_body (2097152)"},
    };
    run_error_cases(cases, sizeof cases / sizeof cases[0]);

    /* With a named exchange an empty routing key is fine (fanout). */
    struct config *cfg = load_ok("[route a]\npath = /a\nexchange = fan\nrouting_key =\n", NULL);
    assert_string_equal(cfg->routes[0].routing_key, "");
    config_free(cfg);
}

/* A route's share of the worker's max_inflight: automatic (all of it for
 * one route, three quarters for each of several), or set, never above the
 * whole. */
static void test_route_max_inflight(void **state)
{
    (void)state;
    struct config *cfg =
        load_ok("[amqp]\nmax_inflight = 9\n[route a]\npath = /a\nrouting_key = a\n", NULL);
    assert_int_equal(cfg->routes[0].max_inflight, 9);
    config_free(cfg);
    cfg = load_ok("[amqp]\nmax_inflight = 9\n"
                  "[route a]\npath = /a\nrouting_key = a\n"
                  "[route b]\npath = /b\nrouting_key = b\nmax_inflight = 0\n"
                  "[route c]\npath = /c\nrouting_key = c\nmax_inflight = 9\n"
                  "[route d]\npath = /d\nrouting_key = d\nmax_inflight = 1\n",
                  NULL);
    assert_int_equal(cfg->routes[0].max_inflight, 7);
    assert_int_equal(cfg->routes[1].max_inflight, 7);
    assert_int_equal(cfg->routes[2].max_inflight, 9);
    assert_int_equal(cfg->routes[3].max_inflight, 1);
    config_free(cfg);
    /* Small budgets: never all of it to one of several routes, but for 1. */
    static const size_t small[][2] = {{2, 1}, {3, 2}, {4, 3}, {5, 4}, {8, 6}};
    for (size_t i = 0; i < sizeof small / sizeof small[0]; i++) {
        char ini[160];
        snprintf(ini, sizeof ini,
                 "[amqp]\nmax_inflight = %zu\n[route a]\npath = /a\nrouting_key = a\n"
                 "[route b]\npath = /b\nrouting_key = b\n",
                 small[i][0]);
        cfg = load_ok(ini, NULL);
        assert_int_equal(cfg->routes[0].max_inflight, small[i][1]);
        assert_int_equal(cfg->routes[1].max_inflight, small[i][1]);
        config_free(cfg);
    }
    /* One worker budget of 1: every route gets it. */
    cfg = load_ok("[amqp]\nmax_inflight = 1\n[route a]\npath = /a\nrouting_key = a\n"
                  "[route b]\npath = /b\nrouting_key = b\n",
                  NULL);
    assert_int_equal(cfg->routes[0].max_inflight, 1);
    assert_int_equal(cfg->routes[1].max_inflight, 1);
    config_free(cfg);
    /* The default budget, and the environment. */
    char *env[] = {"BRIDGE_ROUTE_B_MAX_INFLIGHT=300", NULL};
    cfg = load_ok("[route a]\npath = /a\nrouting_key = a\n[route b]\npath = /b\nrouting_key = b\n",
                  env);
    assert_int_equal(cfg->routes[0].max_inflight, 7500);
    assert_int_equal(cfg->routes[1].max_inflight, 300);
    config_free(cfg);
    static const struct error_case cases[] = {
        {"[amqp]\nmax_inflight = 8\n[route a]\npath = /a\nrouting_key = a\nmax_inflight = 9\n",
         ":6: max_inflight: 9 is more than [amqp] max_inflight (8)"},
        {"[route a]\npath = /a\nrouting_key = a\nmax_inflight = 10001\n",
         ":4: max_inflight: 10001 is more than [amqp] max_inflight (10000)"},
        {"[route a]\nmax_inflight = -1\n", ":2: max_inflight: '-1' is not a whole number"},
        {"[route a]\nmax_inflight = 1000001\n", ":2: max_inflight: '1000001' is out of range"},
    };
    run_error_cases(cases, sizeof cases / sizeof cases[0]);
}

static void test_line_errors(void **state)
{
    (void)state;
    /* inih's line buffer: a longer line would be split, never refused. */
    char text[512];
    int n = snprintf(text, sizeof text, "[http]\npong_path = /%0250d\nworkers = 1\n", 0);
    assert_true(n > 0 && (size_t)n < sizeof text);
    expect_file_error(text, NULL, ":2: line too long");

    /* The longest line that fits is fine. */
    snprintf(text, sizeof text, "[http]\npong_path = /%0*d\n", 197 - 13, 0);
    struct config *cfg = load_ok(text, NULL);
    assert_int_equal(strlen(cfg->http.pong_path), 197 - 12);
    config_free(cfg);
    snprintf(text, sizeof text, "[http]\npong_path = /%0*d\n", 197 - 12, 0);
    expect_file_error(text, NULL, ":2: line too long");

    static const char nul[] = "[http]\nworkers = 1\0 2\n";
    char path[sizeof TMP_TEMPLATE], err[CONFIG_ERR_LEN] = "";
    assert_null(load_len(nul, sizeof nul - 1, NULL, path, err));
    assert_non_null(strstr(err, ":2: NUL byte"));
}

static void test_missing_file(void **state)
{
    (void)state;
    char err[CONFIG_ERR_LEN] = "";
    const char *path = "/nonexistent/dir/bridge.ini";
    assert_null(config_load(path, NULL, err, sizeof err));
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, strerror(ENOENT)));

    /* A directory opens, then fails to read. */
    err[0] = '\0';
    assert_null(config_load("/", NULL, err, sizeof err));
    assert_non_null(strstr(err, strerror(EISDIR)));
}

/* A short error buffer is cut, never overrun. */
static void test_small_error_buffer(void **state)
{
    (void)state;
    char path[sizeof TMP_TEMPLATE];
    write_tmp("[http]\nbogus_key = 1\n", 21, path);
    char err[17];
    memset(err, 'x', sizeof err);
    struct config *cut = config_load(path, NULL, err, 16);
    struct config *none = config_load(path, NULL, NULL, 0);
    unlink(path);
    assert_null(cut);
    assert_null(none);
    assert_int_equal(strlen(err), 15);
    assert_int_equal(err[16], 'x');
}

/* ---- environment ------------------------------------------------------- */

static void test_env_sections(void **state)
{
    (void)state;
    char *env[] = {"HOME=/root",
                   "BRIDGE_HTTP_MAX_BODY=2MiB",
                   "BRIDGE_HTTP_LISTEN=0.0.0.0:9090",
                   "BRIDGE_HTTP_WORKERS=4",
                   "BRIDGE_AMQP_URI=amqp://a:b@n1/v1, amqp://c:d@n2:5674/v2",
                   "BRIDGE_AMQP_CONFIRM=no",
                   "BRIDGE_AMQP_HEARTBEAT=0",
                   "BRIDGE_LOG_LEVEL=ERROR",
                   "BRIDGEX=1",
                   "BRIDGE=1",
                   NULL};
    struct config *cfg = load_ok("[http]\nmax_body = 1KiB\nlisten = 127.0.0.1:1\nworkers = 1\n"
                                 "[amqp]\nuri = amqp://file/v\nconfirm = yes\n"
                                 "[log]\nlevel = debug\n",
                                 env);
    assert_int_equal(cfg->http.max_body, 2 * 1024 * 1024);
    assert_string_equal(cfg->http.listen_host, "0.0.0.0");
    assert_int_equal(cfg->http.listen_port, 9090);
    assert_int_equal(cfg->http.workers, 4);
    assert_int_equal(cfg->amqp.n_uris, 2);
    assert_string_equal(cfg->amqp.uris[0].host, "n1");
    assert_string_equal(cfg->amqp.uris[0].vhost, "v1");
    assert_string_equal(cfg->amqp.uris[1].host, "n2");
    assert_int_equal(cfg->amqp.uris[1].port, 5674);
    assert_string_equal(cfg->amqp.uris[1].display, "amqp://c@n2:5674/v2");
    assert_false(cfg->amqp.confirm);
    assert_int_equal(cfg->amqp.heartbeat_ms, 0);
    assert_int_equal(cfg->log_level, LOG_ERROR);
    config_free(cfg);
}

static void test_env_routes(void **state)
{
    (void)state;
    char *env[] = {"BRIDGE_ROUTE_INGEST_ROUTING_KEY=from-env",
                   "BRIDGE_ROUTE_MY_ROUTE_ROUTING_KEY=mine",
                   "BRIDGE_ROUTE_MY_ROUTE_TIMEOUT=2s",
                   "BRIDGE_ROUTE_ORDERS_V2_PATH=/orders",
                   "BRIDGE_ROUTE_ORDERS_V2_ROUTING_KEY=orders",
                   "BRIDGE_ROUTE_ORDERS_V2_MODE=rpc",
                   "BRIDGE_ROUTE_ROOT_ROOT=doc",
                   "BRIDGE_ROUTE_ROOT_PATH=/root",
                   "BRIDGE_ROUTE_ROOT_ROUTING_KEY=r",
                   NULL};
    struct config *cfg = load_ok("[route Ingest]\npath = /ingest\nrouting_key = ingest\n"
                                 "[route my_route]\npath = /mine\nrouting_key = file\n",
                                 env);
    assert_int_equal(cfg->n_routes, 4);
    /* Matched case-insensitively; the file's spelling stays. */
    assert_string_equal(route(cfg, "Ingest")->routing_key, "from-env");
    /* NAME with '_': the key is the longest route-key suffix. */
    const struct config_route *r = route(cfg, "my_route");
    assert_string_equal(r->routing_key, "mine");
    assert_int_equal(r->timeout_ms, 2000);
    assert_string_equal(r->path, "/mine");
    /* Not in the file: created, lower-cased, with the defaults. */
    r = route(cfg, "orders_v2");
    assert_string_equal(r->path, "/orders");
    assert_string_equal(r->routing_key, "orders");
    assert_int_equal(r->mode, ROUTE_RPC);
    assert_string_equal(r->exchange, "");
    assert_string_equal(r->queue, "");
    assert_false(r->persistent); /* an rpc route's default */
    assert_int_equal(r->timeout_ms, 5000);
    /* A route called "root" with the key root. */
    r = route(cfg, "root");
    assert_string_equal(r->root, "doc");
    assert_string_equal(r->path, "/root");
    config_free(cfg);
}

/* persistent defaults to yes on a publish route and to no on an rpc route;
 * set in the file or the environment it is what it says. properties: all
 * unless minimal. */
static void test_route_defaults_by_mode(void **state)
{
    (void)state;
    char *env[] = {"BRIDGE_ROUTE_D_PERSISTENT=yes", NULL};
    struct config *cfg = load_ok("[route a]\npath = /a\nrouting_key = a\n"
                                 "[route b]\npath = /b\nrouting_key = b\nmode = rpc\n"
                                 "[route c]\npath = /c\nrouting_key = c\nmode = rpc\n"
                                 "persistent = yes\nproperties = Minimal\n"
                                 "[route d]\npath = /d\nrouting_key = d\nmode = rpc\n"
                                 "[route e]\npath = /e\nrouting_key = e\npersistent = no\n",
                                 env);
    assert_true(route(cfg, "a")->persistent);
    assert_false(route(cfg, "b")->persistent);
    assert_true(route(cfg, "c")->persistent);
    assert_true(route(cfg, "d")->persistent);
    assert_false(route(cfg, "e")->persistent);
    assert_int_equal(route(cfg, "a")->properties, PROPERTIES_ALL);
    assert_int_equal(route(cfg, "c")->properties, PROPERTIES_MINIMAL);
    config_free(cfg);

    char path[sizeof TMP_TEMPLATE], err[CONFIG_ERR_LEN];
    assert_null(
        load("[route a]\npath = /a\nrouting_key = a\nproperties = some\n", NULL, path, err));
    assert_non_null(strstr(err, ":4: properties: 'some' is not a property set (all or minimal)"));
}

static void test_env_errors(void **state)
{
    (void)state;
    char *unknown[] = {"BRIDGE_NOPE=1", NULL};
    expect_env_error("", unknown, "environment BRIDGE_NOPE: unknown variable");
    char *unknown_key[] = {"BRIDGE_HTTP_BOGUS=1", NULL};
    expect_env_error("", unknown_key, "environment BRIDGE_HTTP_BOGUS: unknown key in [http]");
    char *unknown_rkey[] = {"BRIDGE_ROUTE_A_COLOUR=red", NULL};
    expect_env_error(ROUTE_A, unknown_rkey, "environment BRIDGE_ROUTE_A_COLOUR: expected");
    char *no_name[] = {"BRIDGE_ROUTE_PATH=/x", NULL};
    expect_env_error("", no_name, "environment BRIDGE_ROUTE_PATH: expected");
    char *bad_name[] = {"BRIDGE_ROUTE_A/B_PATH=/x", NULL};
    expect_env_error("", bad_name, "environment BRIDGE_ROUTE_A/B_PATH: route name");
    char *bad_size[] = {"BRIDGE_HTTP_MAX_BODY=lots", NULL};
    expect_env_error("", bad_size, "environment BRIDGE_HTTP_MAX_BODY: 'lots' is not a size");
    char *bad_dur[] = {"BRIDGE_ROUTE_A_TIMEOUT=10 parsecs", NULL};
    expect_env_error(ROUTE_A, bad_dur, "environment BRIDGE_ROUTE_A_TIMEOUT: '10 parsecs'");
    char *tls[] = {"BRIDGE_AMQP_URI=amqps://h/v", "BRIDGE_AMQP_TLS_CA=/nonexistent/ca.pem", NULL};
    expect_env_error("", tls, "environment BRIDGE_AMQP_TLS_CA: cannot read /nonexistent/ca.pem");
    char *twice[] = {"BRIDGE_LOG_LEVEL=info", "BRIDGE_LOG_LEVEL=debug", NULL};
    expect_env_error("", twice, "environment BRIDGE_LOG_LEVEL: level is also set by");
    char *dup_path[] = {"BRIDGE_ROUTE_B_PATH=/a", "BRIDGE_ROUTE_B_ROUTING_KEY=b", NULL};
    expect_env_error(ROUTE_A, dup_path,
                     "environment BRIDGE_ROUTE_B_PATH: /a is already the path of route a");

    /* A route made only by the environment still needs its path; the
     * check runs after the environment is applied. */
    char *half[] = {"BRIDGE_ROUTE_X_ROUTING_KEY=x", NULL};
    expect_file_error("", half, ": route x: missing path");
    char *fixes[] = {"BRIDGE_ROUTE_A_PATH=/a", NULL};
    struct config *cfg = load_ok("[route a]\nrouting_key = a\n", fixes);
    assert_string_equal(cfg->routes[0].path, "/a");
    config_free(cfg);
}

/* queue_type: its values, its rule, and its environment name, whose key
 * ends like another key's ("queue") and may follow a route name that holds
 * "queue" itself. */
static void test_queue_type(void **state)
{
    (void)state;
    struct config *cfg = load_ok("[route a]\npath = /a\nrouting_key = a\nqueue = a\n"
                                 "queue_type = Quorum\n"
                                 "[route b]\npath = /b\nrouting_key = b\nqueue = b\n"
                                 "queue_type = classic\n",
                                 NULL);
    assert_int_equal(route(cfg, "a")->queue_type, QUEUE_QUORUM);
    assert_int_equal(route(cfg, "b")->queue_type, QUEUE_CLASSIC);
    assert_string_equal(broker_queue_type_name(QUEUE_QUORUM), "quorum");
    assert_string_equal(broker_queue_type_name(QUEUE_CLASSIC), "classic");
    config_free(cfg);

    char *env[] = {
        "BRIDGE_ROUTE_A_QUEUE_TYPE=quorum",       "BRIDGE_ROUTE_MY_QUEUE_QUEUE_TYPE=quorum",
        "BRIDGE_ROUTE_MY_QUEUE_QUEUE=mine",       "BRIDGE_ROUTE_MY_QUEUE_PATH=/mine",
        "BRIDGE_ROUTE_MY_QUEUE_ROUTING_KEY=mine", NULL};
    cfg = load_ok("[route a]\npath = /a\nrouting_key = a\nqueue = a\n", env);
    assert_int_equal(cfg->n_routes, 2);
    assert_int_equal(route(cfg, "a")->queue_type, QUEUE_QUORUM);
    const struct config_route *r = route(cfg, "my_queue");
    assert_string_equal(r->queue, "mine");
    assert_int_equal(r->queue_type, QUEUE_QUORUM);
    config_free(cfg);

    static const struct error_case cases[] = {
        {"[route a]\nqueue_type = stream\n",
         ":2: queue_type: 'stream' is not a queue type (classic or quorum)"},
        {"[route a]\nqueue_type =\n", ":2: queue_type: '' is not a queue type"},
        {"[route a]\npath = /a\nrouting_key = a\nqueue_type = quorum\n",
         ":4: queue_type: quorum needs queue"},
    };
    run_error_cases(cases, sizeof cases / sizeof cases[0]);
    char *bad[] = {"BRIDGE_ROUTE_A_QUEUE_TYPE=mirrored", NULL};
    expect_env_error(ROUTE_A, bad,
                     "environment BRIDGE_ROUTE_A_QUEUE_TYPE: 'mirrored' is not a queue type");
    char *no_queue[] = {"BRIDGE_ROUTE_A_QUEUE_TYPE=quorum", NULL};
    expect_env_error(ROUTE_A, no_queue,
                     "environment BRIDGE_ROUTE_A_QUEUE_TYPE: quorum needs queue");
}

/* ---- scalar parsers ---------------------------------------------------- */

/* TLS and auth keys: amqps:// URIs, files that must be readable, pairs that
 * go together, from the file and from the environment. */
static void test_tls_and_auth_keys(void **state)
{
    (void)state;
    char f[sizeof TMP_TEMPLATE];
    write_tmp("x\n", 2, f); /* stands for a PEM file or a token file */
    char *text = NULL;
    assert_true(asprintf(&text,
                         "[http]\ntls_cert = %s\ntls_key = %s\nauth_token_file = %s\n"
                         "metrics_auth = yes\n"
                         "[amqp]\nuri = amqps://u:p@mq.example:5999/v, amqps://mq2/v\n"
                         "tls_ca = %s\ntls_cert = %s\ntls_key = %s\ntls_verify = no\n"
                         "[route a]\npath = /a\nrouting_key = a\nauth_token_file = %s\n",
                         f, f, f, f, f, f, f) > 0);
    struct config *cfg = load_ok(text, NULL);
    assert_string_equal(cfg->http.tls_cert, f);
    assert_string_equal(cfg->http.tls_key, f);
    assert_string_equal(cfg->http.auth_token_file, f);
    assert_true(cfg->http.metrics_auth);
    assert_true(cfg->amqp.uris[0].tls);
    assert_int_equal(cfg->amqp.uris[0].port, 5999);
    assert_string_equal(cfg->amqp.uris[0].display, "amqps://u@mq.example:5999/v");
    assert_int_equal(cfg->amqp.uris[1].port, 5671); /* amqps' default port */
    assert_string_equal(cfg->amqp.uris[1].display, "amqps://guest@mq2:5671/v");
    assert_string_equal(cfg->amqp.tls_ca, f);
    assert_false(cfg->amqp.tls_verify);
    assert_string_equal(route(cfg, "a")->auth_token_file, f);
    config_free(cfg);
    free(text);

    /* Defaults: plain, no auth, verify on. */
    cfg = load_ok("", NULL);
    assert_string_equal(cfg->http.tls_cert, "");
    assert_string_equal(cfg->http.auth_token_file, "");
    assert_false(cfg->http.metrics_auth);
    assert_false(cfg->amqp.uris[0].tls);
    assert_true(cfg->amqp.tls_verify);
    config_free(cfg);

    /* The environment reaches every new key, the route's too. */
    char e1[256], e2[256], e3[256];
    snprintf(e1, sizeof e1, "BRIDGE_HTTP_AUTH_TOKEN_FILE=%s", f);
    snprintf(e2, sizeof e2, "BRIDGE_ROUTE_A_AUTH_TOKEN_FILE=%s", f);
    snprintf(e3, sizeof e3, "BRIDGE_AMQP_TLS_CA=%s", f);
    char *env[] = {e1, e2, e3, "BRIDGE_AMQP_URI=amqps://h/v", "BRIDGE_HTTP_METRICS_AUTH=on", NULL};
    cfg = load_ok(ROUTE_A, env);
    assert_string_equal(cfg->http.auth_token_file, f);
    assert_string_equal(route(cfg, "a")->auth_token_file, f);
    assert_string_equal(cfg->amqp.tls_ca, f);
    assert_true(cfg->http.metrics_auth);
    config_free(cfg);

    /* Errors, each naming its line and key. */
    char *bad = NULL;
    assert_true(asprintf(&bad, "[http]\ntls_cert = %s\n", f) > 0);
    expect_file_error(bad, NULL, ":2: tls_cert: needs tls_key in [http] too (both or neither)");
    free(bad);
    assert_true(asprintf(&bad, "[amqp]\nuri = amqps://h/v\ntls_key = %s\n", f) > 0);
    expect_file_error(bad, NULL, ":3: tls_key: needs tls_cert in [amqp] too (both or neither)");
    free(bad);
    assert_true(asprintf(&bad, "[amqp]\ntls_ca = %s\n", f) > 0);
    expect_file_error(bad, NULL, ":2: tls_ca: set, but no uri is amqps://");
    free(bad);
    expect_file_error("[http]\nmetrics_auth = yes\n", NULL,
                      ":2: metrics_auth: needs [http] auth_token_file");
    expect_file_error("[http]\ntls_key = /nonexistent/key.pem\n", NULL,
                      ":2: tls_key: cannot read /nonexistent/key.pem: No such file or directory");
    expect_file_error("[route a]\nauth_token_file = /nonexistent/t\n", NULL,
                      ":2: auth_token_file: cannot read /nonexistent/t");
    unlink(f);
}

static void test_parse_duration(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        uint64_t ms;
    } good[] = {
        {"0", 0},
        {"0ms", 0},
        {"0s", 0},
        {"500ms", 500},
        {"30s", 30000},
        {"2m", 120000},
        {"007s", 7000},
        {"18446744073709551615ms", UINT64_MAX},
        {"18446744073709551s", UINT64_C(18446744073709551000)},
        {"307445734561825m", UINT64_C(307445734561825) * 60000},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        uint64_t ms = 1;
        if (config_parse_duration(good[i].s, &ms) != 0)
            fail_msg("refused '%s'", good[i].s);
        assert_int_equal(ms, good[i].ms);
    }
    static const char *const bad[] = {
        "",
        "10",
        "10 parsecs",
        "10 s",
        " 10s",
        "10s ",
        "10S",
        "10h",
        "1.5s",
        "-1s",
        "+1s",
        "s",
        "ms",
        "10sm",
        "0x10s",
        "18446744073709551616ms",
        "18446744073709552s",
        "307445734561826m",
        "99999999999999999999999999m",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t ms = 42;
        if (config_parse_duration(bad[i], &ms) == 0)
            fail_msg("accepted '%s'", bad[i]);
        assert_int_equal(ms, 42);
    }
    uint64_t ms;
    assert_int_equal(config_parse_duration(NULL, &ms), -1);
}

static void test_parse_size(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        size_t bytes;
    } good[] = {
        {"0", 0},
        {"1", 1},
        {"1024", 1024},
        {"512KiB", 512 * 1024},
        {"1MiB", 1024 * 1024},
        {"1024MiB", (size_t)1 << 30},
        {"18446744073709551615", SIZE_MAX},
        {"17592186044415MiB", (size_t)17592186044415 << 20},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        size_t n = 1;
        if (config_parse_size(good[i].s, &n) != 0)
            fail_msg("refused '%s'", good[i].s);
        assert_int_equal(n, good[i].bytes);
    }
    static const char *const bad[] = {
        "",
        "KiB",
        "1 KiB",
        "1kib",
        "1KB",
        "1MB",
        "1M",
        "1GiB",
        "1.5MiB",
        "-1",
        " 1",
        "1B",
        "1MiBs",
        "18446744073709551616",
        "17592186044416MiB",
        "18014398509481984KiB",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t n = 42;
        if (config_parse_size(bad[i], &n) == 0)
            fail_msg("accepted '%s'", bad[i]);
        assert_int_equal(n, 42);
    }
    size_t n;
    assert_int_equal(config_parse_size(NULL, &n), -1);
}

static void test_parse_bool(void **state)
{
    (void)state;
    static const char *const yes[] = {"yes", "YES", "Yes", "true", "TRUE", "on", "On", "1"};
    static const char *const no[] = {"no", "NO", "false", "False", "off", "OFF", "0"};
    static const char *const bad[] = {"", "y", "n", "2", "yess", "enabled", " yes", "01"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        bool b = false;
        assert_int_equal(config_parse_bool(yes[i], &b), 0);
        assert_true(b);
    }
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        bool b = true;
        assert_int_equal(config_parse_bool(no[i], &b), 0);
        assert_false(b);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        bool b = true;
        if (config_parse_bool(bad[i], &b) == 0)
            fail_msg("accepted '%s'", bad[i]);
        assert_true(b);
    }
    bool b;
    assert_int_equal(config_parse_bool(NULL, &b), -1);
}

static void test_log_level_names(void **state)
{
    (void)state;
    assert_string_equal(log_level_name(LOG_DEBUG), "debug");
    assert_string_equal(log_level_name(LOG_INFO), "info");
    assert_string_equal(log_level_name(LOG_WARN), "warn");
    assert_string_equal(log_level_name(LOG_ERROR), "error");
    assert_string_equal(log_level_name((enum log_level)99), "?");

    /* Every name loads back to its level. */
    for (int l = LOG_DEBUG; l <= LOG_ERROR; l++) {
        char text[64];
        snprintf(text, sizeof text, "[log]\nlevel = %s\n", log_level_name((enum log_level)l));
        struct config *cfg = load_ok(text, NULL);
        assert_int_equal(cfg->log_level, l);
        config_free(cfg);
    }
}

/* [log] format and access_log: defaults, the file, the environment (which
 * wins), bad values; and the route names /metrics keeps for itself. */
static void test_log_format_and_access_log(void **state)
{
    (void)state;
    struct config *cfg = load_ok("", NULL);
    assert_int_equal(cfg->log_format, LOG_FORMAT_TEXT);
    assert_false(cfg->http.access_log);
    config_free(cfg);

    cfg = load_ok("[log]\nformat = json\naccess_log = yes\n", NULL);
    assert_int_equal(cfg->log_format, LOG_FORMAT_JSON);
    assert_true(cfg->http.access_log);
    config_free(cfg);

    char *env[] = {"BRIDGE_LOG_FORMAT=TEXT", "BRIDGE_LOG_ACCESS_LOG=off", NULL};
    cfg = load_ok("[log]\nformat = json\naccess_log = yes\n", env);
    assert_int_equal(cfg->log_format, LOG_FORMAT_TEXT);
    assert_false(cfg->http.access_log);
    config_free(cfg);

    char *env_on[] = {"BRIDGE_LOG_FORMAT=json", "BRIDGE_LOG_ACCESS_LOG=1", NULL};
    cfg = load_ok("", env_on);
    assert_int_equal(cfg->log_format, LOG_FORMAT_JSON);
    assert_true(cfg->http.access_log);
    config_free(cfg);

    assert_string_equal(log_format_name(LOG_FORMAT_TEXT), "text");
    assert_string_equal(log_format_name(LOG_FORMAT_JSON), "json");

    expect_file_error("[log]\nformat = xml\n", NULL,
                      ":2: format: 'xml' is not a log format (text or json)");
    expect_file_error("[log]\naccess_log = sometimes\n", NULL,
                      ":2: access_log: 'sometimes' is not a boolean");
    char *bad[] = {"BRIDGE_LOG_FORMAT=yaml", NULL};
    expect_env_error("", bad, "environment BRIDGE_LOG_FORMAT: 'yaml' is not a log format");

    static const char *const reserved[] = {"pong", "healthz", "metrics", "none", "Metrics"};
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++) {
        char text[128], want[64];
        snprintf(text, sizeof text, "[route %s]\npath = /x\nrouting_key = x\n", reserved[i]);
        snprintf(want, sizeof want, ":1: route name %s is reserved", reserved[i]);
        expect_file_error(text, NULL, want);
    }
    char *made[] = {"BRIDGE_ROUTE_NONE_PATH=/x", "BRIDGE_ROUTE_NONE_ROUTING_KEY=x", NULL};
    expect_env_error("", made, "environment BRIDGE_ROUTE_NONE_");
}

/* ---- routing from the request, message properties, trace (issue 15) -- */

static void test_route_templates(void **state)
{
    (void)state;
    struct config *cfg = load_ok("[route ev]\n"
                                 "path = /events/{type}\n"
                                 "exchange = events\n"
                                 "routing_key = orders.{type}.{header:X-Region}\n"
                                 "queue = ev\n"
                                 "[route special]\n"
                                 "path = /events/special\n"
                                 "routing_key = special\n"
                                 "[route tenant]\n"
                                 "path = /t/{tenant}\n"
                                 "exchange = {tenant}.audit\n"
                                 "exchanges = a.audit, b.audit\n"
                                 "routing_key = x\n",
                                 NULL);
    const struct config_route *r = route(cfg, "ev");
    assert_true(r->dynamic);
    assert_true(r->rk_tmpl.dynamic);
    assert_false(r->ex_tmpl.dynamic);
    /* The queue is bound with the wildcard that reaches every expansion. */
    assert_string_equal(r->bind_key, "orders.*.*");
    assert_string_equal(cfg->amqp.routes[0].routing_key, "orders.*.*");
    assert_false(route(cfg, "special")->dynamic);
    const struct config_route *t = route(cfg, "tenant");
    assert_int_equal(t->n_exchanges, 2);
    assert_string_equal(t->exchange_list[0], "a.audit");
    assert_string_equal(t->exchange_list[1], "b.audit");
    assert_int_equal(cfg->amqp.routes[2].n_exchanges, 2);
    config_free(cfg);

    static const struct error_case cases[] = {
        {"[route a]\npath = /e/{type}\nrouting_key = k.{kind}\n",
         ":3: routing_key: '{kind}': is not a capture"},
        {"[route a]\npath = /e/x{type}\nrouting_key = k\n", ":2: path: 'x{type}': a capture is"},
        {"[route a]\npath = /e/{t}\nrouting_key = k\n[route b]\npath = /e/{u}\nrouting_key = k\n",
         ":5: path: /e/{u} matches paths that /e/{t} of route a matches"},
        {"[route a]\npath = /e/{t}\nexchange = {t}\nrouting_key = k\n",
         ":3: exchange: '{t}' is a template: list the exchanges"},
        {"[route a]\npath = /e\nexchanges = x\nrouting_key = k\n",
         ":3: exchanges: x: set, but exchange is not a template"},
        {"[route a]\npath = /e/{t}\nexchange = {t}\nexchanges = x\nrouting_key = k\nqueue = q\n",
         ":6: queue: q: with a templated exchange"},
        {"[route a]\npath = /e/{t}\nrouting_key = k-{t}\nexchange = ex\nqueue = q\n",
         ":3: routing_key: 'k-{t}': a placeholder is not a whole word"},
        {"[route a]\npath = /e/{t}\nrouting_key = {t}\nqueue = q\n",
         ":3: routing_key: '{t}' is a template on the default exchange"},
        {"[route a]\npath = /e/{t}\nrouting_key = jobs.{t}\n",
         ":3: routing_key: 'jobs.{t}' is a template on the default exchange"},
        {"[route a]\npath = /e/{t}\nexchange = {t}\nexchanges = ,\nrouting_key = k\n",
         ":4: exchanges: ',' names no exchange"},
        {"[route a]\npath = /e\nrouting_key = k\nbinding_key = b\n",
         ":4: binding_key: b: set, but the route declares no queue"},
    };
    run_error_cases(cases, sizeof cases / sizeof cases[0]);
}

static void test_route_properties(void **state)
{
    (void)state;
    struct config *cfg = load_ok("[route a]\n"
                                 "path = /a\n"
                                 "routing_key = a\n"
                                 "priority = 7\n"
                                 "expiration = 90s\n"
                                 "headers = Source = upstream-a, env=prod\n"
                                 "content_type = application/vnd.order+xml\n"
                                 "trace = pass\n"
                                 "[route b]\n"
                                 "path = /b\n"
                                 "routing_key = b\n"
                                 "priority = {header:X-Priority}\n"
                                 "priority_max = 5\n"
                                 "properties = minimal\n",
                                 NULL);
    const struct config_route *a = route(cfg, "a");
    assert_int_equal(a->priority_value, 7);
    assert_null(a->priority_header);
    assert_false(a->dynamic);
    assert_int_equal(a->expiration_ms, 90000);
    assert_int_equal(a->n_const_hdr, 2);
    assert_string_equal(a->const_hdr[0].name, "source");
    assert_string_equal(a->const_hdr[0].value, "upstream-a");
    assert_string_equal(a->const_hdr[1].name, "env");
    assert_string_equal(a->const_hdr[1].value, "prod");
    assert_string_equal(a->content_type, "application/vnd.order+xml");
    assert_int_equal(a->trace, TRACE_PASS);
    const struct config_route *b = route(cfg, "b");
    assert_int_equal(b->priority_value, -1);
    assert_string_equal(b->priority_header, "X-Priority");
    assert_true(b->dynamic);
    assert_int_equal(b->priority_max, 5);
    assert_int_equal(b->trace, TRACE_OFF); /* minimal sends no headers */
    config_free(cfg);

    static const struct error_case cases[] = {
        {"[route a]\npath = /a\nrouting_key = a\npriority = 10\n",
         ":4: priority: '10': a number from 0 to priority_max"},
        {"[route a]\npath = /a\nrouting_key = a\npriority_max = 3\npriority = 4\n",
         ":5: priority: '4': a number"},
        {"[route a]\npath = /a\nrouting_key = a\npriority = high\n", ":4: priority: 'high'"},
        {"[route a]\npath = /a\nrouting_key = a\npriority = {header:X}1\n",
         ":4: priority: '{header:X}1': a number, or {header:Name} alone"},
        {"[route a]\npath = /a\nrouting_key = a\npriority = {header:X Y}\n",
         ":4: priority: '{header:X Y}': not a header name"},
        {"[route a]\npath = /a\nrouting_key = a\npriority_max = 256\n",
         ":4: priority_max: '256' is out of range"},
        {"[route a]\npath = /a\nmode = rpc\nrouting_key = a\nexpiration = 1s\n",
         ":5: expiration: a: an rpc route's messages expire"},
        {"[route a]\npath = /a\nrouting_key = a\nheaders = novalue\n",
         ":4: headers: 'novalue': expected name=value"},
        {"[route a]\npath = /a\nrouting_key = a\nheaders = a=1, a=2\n",
         ":4: headers: 'a': given twice"},
        {"[route a]\npath = /a\nrouting_key = a\nheaders = traceparent=x\n",
         ":4: headers: 'traceparent': given twice, or set by the bridge"},
        {"[route a]\npath = /a\nrouting_key = a\nheaders = a=1\nproperties = minimal\n",
         ":4: headers: a=1: needs properties = all"},
        {"[route a]\npath = /a\nrouting_key = a\ntrace = start\nproperties = minimal\n",
         ":4: trace: start: needs properties = all"},
        {"[route a]\npath = /a\nrouting_key = a\ntrace = sometimes\n",
         ":4: trace: 'sometimes' is not a trace mode (start, pass or off)"},
    };
    run_error_cases(cases, sizeof cases / sizeof cases[0]);
}

static void test_queue_arguments(void **state)
{
    (void)state;
    struct config *cfg = load_ok("[route a]\n"
                                 "path = /a\n"
                                 "routing_key = a\n"
                                 "queue = a\n"
                                 "dead_letter_exchange = dlx\n"
                                 "dead_letter_routing_key = dead\n"
                                 "max_length = 1000\n"
                                 "max_length_bytes = 1MiB\n"
                                 "overflow = reject-publish\n"
                                 "message_ttl = 1m\n"
                                 "queue_max_priority = 5\n"
                                 "priority = 4\n"
                                 "[route b]\n"
                                 "path = /b\n"
                                 "routing_key = b\n"
                                 "queue = b\n"
                                 "declare = passive\n",
                                 NULL);
    const struct broker_route *a = &cfg->amqp.routes[0];
    assert_int_equal(a->declare, DECLARE_YES);
    assert_string_equal(a->args.dead_letter_exchange, "dlx");
    assert_string_equal(a->args.dead_letter_routing_key, "dead");
    assert_int_equal(a->args.max_length, 1000);
    assert_int_equal(a->args.max_length_bytes, 1024 * 1024);
    assert_string_equal(a->args.overflow, "reject-publish");
    assert_int_equal(a->args.message_ttl_ms, 60000);
    assert_int_equal(a->args.max_priority, 5);
    assert_int_equal(cfg->amqp.routes[1].declare, DECLARE_PASSIVE);
    config_free(cfg);

    static const struct error_case cases[] = {
        {"[route a]\npath = /a\nrouting_key = a\nmessage_ttl = 1s\n",
         ":4: message_ttl: set, but the bridge does not declare the queue"},
        {"[route a]\npath = /a\nrouting_key = a\nqueue = a\ndeclare = passive\nmax_length = 1\n",
         ":6: max_length: set, but the bridge does not declare the queue"},
        {"[route a]\npath = /a\nrouting_key = a\ndeclare = no\n",
         ":4: declare: set, but the route has no queue"},
        {"[route a]\npath = /a\nrouting_key = a\nqueue = a\ndeclare = maybe\n",
         ":5: declare: 'maybe' is not a declare mode (yes, no or passive)"},
        {"[route a]\npath = /a\nrouting_key = a\nqueue = a\ndead_letter_routing_key = d\n",
         ":5: dead_letter_routing_key: needs dead_letter_exchange"},
        {"[route a]\npath = /a\nrouting_key = a\nqueue = a\noverflow = drop-tail\n",
         ":5: overflow: 'drop-tail' is not drop-head"},
        {"[route a]\npath = /a\nrouting_key = a\nqueue = a\noverflow = drop-head\n",
         ":5: overflow: needs max_length or max_length_bytes"},
        {"[route a]\npath = /a\nrouting_key = a\nqueue = a\nqueue_type = quorum\nmax_length = 5\n"
         "overflow = reject-publish-dlx\n",
         ":7: overflow: reject-publish-dlx is for classic queues only"},
        {"[route a]\npath = /a\nrouting_key = a\nqueue = a\nqueue_type = "
         "quorum\nqueue_max_priority = 5\n",
         ":6: queue_max_priority: priorities are for classic queues only"},
        {"[route a]\npath = /a\nrouting_key = a\nqueue = a\nqueue_max_priority = 3\npriority = 4\n",
         ":6: priority: 4 is above queue_max_priority (3)"},
    };
    run_error_cases(cases, sizeof cases / sizeof cases[0]);
}

static void test_client_certificates(void **state)
{
    (void)state;
    char text[1024];
    snprintf(text, sizeof text,
             "[http]\ntls_cert = %s\ntls_key = %s\ntls_client_auth = required\ntls_client_ca = %s\n"
             "[route a]\npath = /a\nrouting_key = a\nclient_subjects = shop.example, b\n",
             "bridge.ini", "bridge.ini", "bridge.ini");
    struct config *cfg = load_ok(text, NULL);
    assert_int_equal(cfg->http.tls_client_auth, HTTP_CLIENT_AUTH_REQUIRED);
    assert_int_equal(cfg->http.routes[0].n_client_subjects, 2);
    assert_string_equal(cfg->http.routes[0].client_subjects[0], "shop.example");
    assert_string_equal(cfg->http.routes[0].client_subjects[1], "b");
    config_free(cfg);
    static const struct error_case cases[] = {
        {"[http]\ntls_client_auth = optional\n", ":2: tls_client_auth: needs tls_cert"},
        {"[http]\ntls_cert = bridge.ini\ntls_key = bridge.ini\ntls_client_auth = optional\n",
         ":4: tls_client_auth: needs tls_client_ca"},
        {"[http]\ntls_client_ca = bridge.ini\n",
         ":2: tls_client_ca: set, but tls_client_auth is none"},
        {"[http]\ntls_client_auth = sometimes\n",
         ":2: tls_client_auth: 'sometimes' is not a client certificate mode (none, optional or "
         "required)"},
        {"[route a]\npath = /a\nrouting_key = a\nclient_subjects = x\n",
         ":4: client_subjects: set, but [http] tls_client_auth is none"},
    };
    run_error_cases(cases, sizeof cases / sizeof cases[0]);
}

static void test_rate_limits(void **state)
{
    (void)state;
    struct config *cfg = load_ok("[route a]\npath = /a\nrouting_key = a\nrate = 600/m\n"
                                 "[route b]\npath = /b\nrouting_key = b\nrate = 7/s\nburst = 20\n"
                                 "rate_by = client\nrate_keys = 50\n",
                                 NULL);
    assert_true(cfg->http.routes[0].rate > 9.99 && cfg->http.routes[0].rate < 10.01);
    assert_true(cfg->http.routes[0].burst > 9.99 && cfg->http.routes[0].burst < 10.01);
    assert_int_equal(cfg->http.routes[0].rate_by, HTTP_RATE_ROUTE);
    assert_true(cfg->http.routes[1].burst > 19.99 && cfg->http.routes[1].burst < 20.01);
    assert_int_equal(cfg->http.routes[1].rate_by, HTTP_RATE_CLIENT);
    assert_int_equal(cfg->http.routes[1].rate_keys, 50);
    assert_true(cfg->http.routes[1].rate > 6.99);
    config_free(cfg);
    static const struct error_case cases[] = {
        {"[route a]\npath = /a\nrouting_key = a\nrate = 10\n",
         ":4: rate: '10': requests per time, 1 to 1000000, as N/s, N/m or N/h"},
        {"[route a]\npath = /a\nrouting_key = a\nrate = 0/s\n", ":4: rate: '0/s'"},
        {"[route a]\npath = /a\nrouting_key = a\nburst = 5\n",
         ":4: burst: set, but the route has no rate"},
        {"[route a]\npath = /a\nrouting_key = a\nrate = 1/s\nrate_by = token\n",
         ":5: rate_by: token, but the route asks for no token"},
        {"[route a]\npath = /a\nmode = rpc\nrouting_key = a\ndedupe = 1m\n",
         ":5: dedupe: for publish routes only"},
        {"[route a]\npath = /a\nrouting_key = a\ndedupe_ids = 5\n",
         ":4: dedupe_ids: set, but the route has no dedupe window"},
        {"[route a]\npath = /a\nrouting_key = a\ndedupe = 25h\n", ":4: dedupe: '25h'"},
        {"[route a]\npath = /a\nrouting_key = a\nrate = 1/s\nrate_by = ip\n",
         ":5: rate_by: 'ip' is not a rate key (route, client or token)"},
    };
    run_error_cases(cases, sizeof cases / sizeof cases[0]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shipped_bridge_ini),
        cmocka_unit_test(test_shipped_with_readme_env),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_route_defaults),
        cmocka_unit_test(test_every_key_set),
        cmocka_unit_test(test_syntax_variants),
        cmocka_unit_test(test_route_section_twice_merges),
        cmocka_unit_test(test_workers_bounds),
        cmocka_unit_test(test_uri_list),
        cmocka_unit_test(test_uri_error_hides_password),
        cmocka_unit_test(test_structure_errors),
        cmocka_unit_test(test_value_errors),
        cmocka_unit_test(test_cross_key_errors),
        cmocka_unit_test(test_route_max_inflight),
        cmocka_unit_test(test_line_errors),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_small_error_buffer),
        cmocka_unit_test(test_env_sections),
        cmocka_unit_test(test_env_routes),
        cmocka_unit_test(test_route_defaults_by_mode),
        cmocka_unit_test(test_env_errors),
        cmocka_unit_test(test_tls_and_auth_keys),
        cmocka_unit_test(test_queue_type),
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_parse_bool),
        cmocka_unit_test(test_log_level_names),
        cmocka_unit_test(test_log_format_and_access_log),
        cmocka_unit_test(test_route_templates),
        cmocka_unit_test(test_route_properties),
        cmocka_unit_test(test_queue_arguments),
        cmocka_unit_test(test_client_certificates),
        cmocka_unit_test(test_rate_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
