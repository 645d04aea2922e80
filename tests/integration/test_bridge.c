/* test_bridge.c - integration tests: the real ingest-bridge binary driven
 * over real sockets against a private RabbitMQ node, messages read back with
 * rabbitmq-c and checked byte for byte. Run through tests/integration/run.sh,
 * which starts the node and passes it in IT_* variables. Tests that stop,
 * freeze or alarm the broker put it back in their teardown, so the order of
 * tests does not matter. The helpers are tests/lib/harness.[ch]. */

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "harness_cmocka.h" /* <cmocka.h>, assert_resp... */
#include "order_xsd.h"      /* ORDER_XSD */

/* The wall clock's second as the bridge reads it (clock_gettime, as
 * gettimeofday): time() reads the kernel's coarse clock, which may still
 * say the second before, so a stamp taken between two time() calls could
 * fall a second after them. */
static time_t wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec;
}

static char g_xsd[512]; /* the schema route's XSD */

#define XML "application/xml"
static const char DOC[] = "<?xml version=\"1.0\"?>\n<order><id>1</id></order>\n";

static struct bridge g_main; /* shared by most tests, started once */
static struct bridge g_aux;  /* a test's own instance (SIGTERM, blocked) */

/* The test config: every route kind the tests need. ARG: the number of
 * workers (const int *). A bridge_config_fn. */
static char *it_config(int http_port, const void *arg)
{
    int workers = *(const int *)arg;
    char *text;
    size_t len;
    FILE *f = xmemstream(&text, &len);
    fprintf(f,
            "; written by tests/integration/test_bridge.c\n"
            "[http]\n"
            "listen      = 127.0.0.1:%d\n"
            "workers     = %d\n"
            "max_body    = 64KiB\n"
            "timeout     = 10s\n"
            "pong_path   = /pong\n"
            "\n"
            "[amqp]\n"
            "uri         = amqp://guest:guest@127.0.0.1:%d/%%2f\n"
            "heartbeat   = 5s\n"
            "confirm     = yes\n"
            "max_inflight = 1000\n"
            "\n"
            "[log]\n"
            "level       = %s\n"
            "\n"
            "[route ingest]\n"
            "path        = /ingest\n"
            "mode        = publish\n"
            "exchange    =\n"
            "routing_key = it.ingest\n"
            "queue       = it.ingest\n"
            "persistent  = yes\n"
            "\n"
            "[route rooted]\n"
            "path        = /rooted\n"
            "mode        = publish\n"
            "routing_key = it.rooted\n"
            "queue       = it.rooted\n"
            "root        = order\n"
            "\n"
            "[route schema]\n"
            "path        = /schema\n"
            "mode        = publish\n"
            "routing_key = it.schema\n"
            "queue       = it.schema\n"
            "schema      = %s\n"
            "\n"
            "; the message_id, content_type and delivery_mode only\n"
            "[route minimal]\n"
            "path        = /minimal\n"
            "routing_key = it.minimal\n"
            "queue       = it.minimal\n"
            "properties  = minimal\n"
            "\n"
            "; the default exchange, a routing key naming no queue: unroutable\n"
            "[route lost]\n"
            "path        = /lost\n"
            "mode        = publish\n"
            "routing_key = it.nowhere\n"
            "\n"
            "; it.full is declared by the test with x-max-length=0, reject-publish\n"
            "[route full]\n"
            "path        = /full\n"
            "mode        = publish\n"
            "routing_key = it.full\n"
            "\n"
            "; rpc: answered by build/echo-worker consuming it.rpc\n"
            "[route rpc]\n"
            "path        = /rpc\n"
            "mode        = rpc\n"
            "routing_key = it.rpc\n"
            "queue       = it.rpc\n"
            "timeout     = 5s\n"
            "\n"
            "; the same queue with a short timeout\n"
            "[route rpcshort]\n"
            "path        = /rpc-short\n"
            "mode        = rpc\n"
            "routing_key = it.rpc\n"
            "timeout     = 700ms\n"
            "\n"
            "; the same queue, waiting longer than a broker takes to stop\n"
            "[route rpclong]\n"
            "path        = /rpc-long\n"
            "mode        = rpc\n"
            "routing_key = it.rpc\n"
            "timeout     = 60s\n",
            http_port, workers, g_harness.broker_port, g_harness.log_level, g_xsd);
    fclose(f);
    return text;
}

/* Start a bridge NAME with WORKERS workers and the test config. */
static void start_bridge(struct bridge *b, const char *name, int workers)
{
    bridge_start(b, name, it_config, &workers);
}

/* ------------------------------------------------------------------ */
/* fixtures                                                            */

static const int MAIN_WORKERS = 2;

/* The schema route's XSD, in the run's temporary directory. */
static int write_xsd(void)
{
    snprintf(g_xsd, sizeof g_xsd, "%s/order.xsd", g_harness.tmp);
    write_file(g_xsd, ORDER_XSD);
    return 0;
}

static const struct suite SUITE = {
    .name = "integration",
    .shared = {{&g_main, "main", it_config, &MAIN_WORKERS}},
    .stop_ms = 20000,
    .reject_queue = "it.full",
    .aux = &g_aux,
    .prepare = write_xsd,
};

/* ------------------------------------------------------------------ */
/* -t and bad configs                                                  */

static char *write_cfg_text(const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", g_harness.tmp, name);
    write_file(path, text);
    return xstrdup(path);
}

/* A config that is fine except for what a test changes. */
static char *valid_cfg(const char *http_extra, const char *route_extra)
{
    char *s = NULL;
    if (asprintf(&s,
                 "[http]\n"                /* 1 */
                 "listen = 127.0.0.1:%d\n" /* 2 */
                 "%s"                      /* 3... */
                 "[amqp]\n"
                 "uri = amqp://guest:guest@127.0.0.1:%d/%%2f\n"
                 "[route ingest]\n"
                 "path = /ingest\n"
                 "mode = publish\n"
                 "routing_key = it.ingest\n"
                 "%s",
                 free_port(), http_extra ? http_extra : "", g_harness.broker_port,
                 route_extra ? route_extra : "") < 0)
        abort();
    return s;
}

static void test_config_ok(void **state)
{
    (void)state;
    char *path = write_cfg_text("ok.ini", valid_cfg(NULL, NULL));
    char **argv = bridge_argv((const char *[]){"-t", "-c", path, NULL});
    char *out;
    int st = run_capture(argv, NULL, &out);
    free(argv);
    if (st != 0)
        fail_msg("-t on a good config: status 0x%x, output:\n%s", st, out);
    assert_contains(out, "config ok");
    free(out);

    /* The shipped-style file with every key spelled out is fine too. */
    argv = bridge_argv((const char *[]){"-t", "-c", g_main.cfg, NULL});
    st = run_capture(argv, NULL, &out);
    free(argv);
    if (st != 0)
        fail_msg("-t on %s: status 0x%x, output:\n%s", g_main.cfg, st, out);
    assert_contains(out, "config ok");
    free(out);
    free(path);
    PASS();
}

/* Expect exit 1 and an error naming NEEDLE1 (and NEEDLE2 if given). */
static void expect_bad(const char *file, const char *text, bool check_only, char *const env[],
                       const char *needle1, const char *needle2)
{
    char *path = write_cfg_text(file, text);
    char **argv = bridge_argv((const char *[]){"-c", path, check_only ? "-t" : NULL, NULL});
    char *out;
    int st = run_capture(argv, env, &out);
    free(argv);
    if (st == -1)
        fail_msg("%s: the bridge did not exit within %g s (it started with a bad config?)", file,
                 scale_ms(20000) / 1000.0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 1)
        fail_msg("%s: status 0x%x, expected exit 1; output:\n%s", file, st, out);
    char want[600];
    snprintf(want, sizeof want, "%s", needle1);
    if (strcmp(needle1, "@FILE") == 0)
        snprintf(want, sizeof want, "%s", path);
    else if (strncmp(needle1, "@FILE:", 6) == 0)
        snprintf(want, sizeof want, "%s:%s", path, needle1 + 6);
    assert_contains(out, want);
    if (needle2)
        assert_contains(out, needle2);
    free(out);
    free(path);
}

static void test_config_bad(void **state)
{
    (void)state;
    char *t;

    t = valid_cfg("bogus_key = 1\n", NULL); /* line 3 */
    expect_bad("unknown.ini", t, true, NULL, "@FILE:3", "bogus_key");
    free(t);

    t = valid_cfg("max_body = lots\n", NULL);
    expect_bad("badvalue.ini", t, true, NULL, "@FILE:3", "max_body");
    free(t);

    t = valid_cfg("workers = 1\nworkers = 2\n", NULL); /* duplicate on line 4 */
    expect_bad("duplicate.ini", t, true, NULL, "@FILE:4", "workers");
    free(t);

    t = valid_cfg("timeout = 10 parsecs\n", NULL);
    expect_bad("badduration.ini", t, true, NULL, "@FILE:3", "timeout");
    free(t);

    /* A route without its path. */
    if (asprintf(&t,
                 "[http]\nlisten = 127.0.0.1:%d\n"
                 "[amqp]\nuri = amqp://guest:guest@127.0.0.1:%d/%%2f\n"
                 "[route nopath]\nmode = publish\nrouting_key = x\n",
                 free_port(), g_harness.broker_port) < 0)
        abort();
    expect_bad("nopath.ini", t, true, NULL, "@FILE", "path");
    free(t);

    /* Not with -t either: start-up is refused, exit 1. */
    t = valid_cfg("bogus_key = 1\n", NULL);
    expect_bad("unknown-start.ini", t, false, NULL, "@FILE:3", "bogus_key");
    free(t);

    /* A bad environment override is named. */
    t = valid_cfg(NULL, NULL);
    char *env[] = {"BRIDGE_HTTP_MAX_BODY=lots", NULL};
    expect_bad("envbad.ini", t, true, env, "BRIDGE_HTTP_MAX_BODY", NULL);
    free(t);

    /* A missing file. */
    char **argv = bridge_argv((const char *[]){"-t", "-c", "/nonexistent/bridge.ini", NULL});
    char *out;
    int st = run_capture(argv, NULL, &out);
    free(argv);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 1)
        fail_msg("missing config file: status 0x%x, expected exit 1; output:\n%s", st, out);
    assert_contains(out, "/nonexistent/bridge.ini");
    free(out);
    PASS();
}

/* ------------------------------------------------------------------ */
/* queue_type and the URI list as a cluster                            */

/* A bridge with one publish route on QUEUE of TYPE, WORKERS workers, and
 * URIS as [amqp] uri ("" = the test node). A bridge_config_fn. */
struct qt_arg {
    const char *queue;
    const char *type;
    int workers;
    const char *uris;
};

static char *qt_config(int http_port, const void *arg)
{
    const struct qt_arg *a = arg;
    char *s = NULL, uri[256];
    if (a->uris[0] != '\0')
        snprintf(uri, sizeof uri, "%s", a->uris);
    else
        snprintf(uri, sizeof uri, "amqp://guest:guest@127.0.0.1:%d/%%2f", g_harness.broker_port);
    if (asprintf(&s,
                 "[http]\nlisten = 127.0.0.1:%d\nworkers = %d\n"
                 "[amqp]\nuri = %s\n"
                 "[log]\nlevel = %s\n"
                 "[route ingest]\npath = /ingest\nrouting_key = %s\nqueue = %s\n"
                 "queue_type = %s\n",
                 http_port, a->workers, uri, g_harness.log_level, a->queue, a->queue, a->type) < 0)
        abort();
    return s;
}

/* The type the test node gives QUEUE, from rabbitmqctl list_queues. */
static bool queue_has_type(const char *queue, const char *type)
{
    char *argv[] = {(char *)g_harness.broker_sh, "ctl", "list_queues", "-q", "name", "type", NULL};
    char *out;
    int st = run_capture(argv, NULL, &out);
    char line[300];
    snprintf(line, sizeof line, "%s\t%s\n", queue, type);
    bool found = st == 0 && strstr(out, line) != NULL;
    if (!found)
        print_message("list_queues (status 0x%x):\n%s", st, out);
    free(out);
    return found;
}

static void test_queue_type(void **state)
{
    (void)state;
    /* A quorum route declares a quorum queue and publishes to it. */
    struct qt_arg q = {"it.qt.quorum", "quorum", 1, ""};
    bridge_start(&g_aux, "quorum", qt_config, &q);
    struct resp r;
    int rc = http_post(g_aux.port, "/ingest", XML, "X-Request-Id: qt-1\r\n", DOC, &r);
    assert_resp(rc, &r, 202);
    resp_free(&r);
    assert_true(queue_has_type("it.qt.quorum", "quorum"));
    assert_int_equal(bridge_stop(&g_aux, scale_ms(10000)), 0);
    size_t n;
    char **ids = mq_drain_ids("it.qt.quorum", &n);
    assert_true(ids_have(ids, n, "qt-1"));
    ids_free(ids, n);

    /* The same queue, now wanted classic: start-up stops with exit 1 and
     * both types named, instead of a reconnect loop. */
    char *t = valid_cfg(NULL, "queue = it.qt.quorum\nqueue_type = classic\n");
    expect_bad("qt-quorum-as-classic.ini", t, false, NULL,
               "route ingest: queue 'it.qt.quorum' exists as a quorum queue but the route has "
               "queue_type = classic",
               "received 'classic' but current is 'quorum'");
    free(t);

    /* A classic queue made without x-queue-type (by another program), wanted
     * quorum: refused the same way. */
    assert_true(mq_declare("it.qt.classic", amqp_empty_table));
    t = valid_cfg(NULL, "queue = it.qt.classic\nqueue_type = quorum\n");
    expect_bad("qt-classic-as-quorum.ini", t, false, NULL,
               "route ingest: queue 'it.qt.classic' exists as a classic queue but the route has "
               "queue_type = quorum",
               "cannot start");
    free(t);

    /* ... and wanted classic, as by default: x-queue-type = classic matches it. */
    struct qt_arg c = {"it.qt.classic", "classic", 1, ""};
    bridge_start(&g_aux, "classic", qt_config, &c);
    rc = http_post(g_aux.port, "/ingest", XML, "X-Request-Id: qt-2\r\n", DOC, &r);
    assert_resp(rc, &r, 202);
    resp_free(&r);
    assert_int_equal(bridge_stop(&g_aux, scale_ms(10000)), 0);
    mq_purge("it.qt.classic");
    PASS();
}

/* Two routes: "ok" declares the quorum queue it.qt.ok; "full" publishes to
 * it.qt.full, a quorum queue the test made that nacks every publish. A
 * bridge_config_fn. */
static char *renew_config(int http_port, const void *arg)
{
    (void)arg;
    char *s = NULL;
    if (asprintf(&s,
                 "[http]\nlisten = 127.0.0.1:%d\nworkers = 1\n"
                 "[amqp]\nuri = amqp://guest:guest@127.0.0.1:%d/%%2f\n"
                 "[log]\nlevel = %s\n"
                 "[route ok]\npath = /ok\nrouting_key = it.qt.ok\nqueue = it.qt.ok\n"
                 "queue_type = quorum\n"
                 "[route full]\npath = /full\nrouting_key = it.qt.full\n",
                 http_port, g_harness.broker_port, g_harness.log_level) < 0)
        abort();
    return s;
}

static int count_in(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

/* With a quorum route, nacks on a channel that never had an ack renew the
 * channel (RabbitMQ 3.10 can leave a channel opened during a leader
 * election nacking forever); nacks on a channel that had acks do not. */
static void test_quorum_nack_renews_channel(void **state)
{
    (void)state;
    amqp_table_t full = mq_args_reject_all();
    amqp_table_entry_t e[3] = {full.entries[0], full.entries[1]};
    e[2].key = amqp_cstring_bytes("x-queue-type");
    e[2].value.kind = AMQP_FIELD_KIND_UTF8;
    e[2].value.value.bytes = amqp_cstring_bytes("quorum");
    assert_true(mq_declare("it.qt.full", (amqp_table_t){3, e}));
    /* A quorum queue rejects once over its length: one message first. */
    amqp_basic_properties_t p = {._flags = 0};
    assert_int_equal(amqp_basic_publish(g_harness.mq, 1, amqp_empty_bytes,
                                        amqp_cstring_bytes("it.qt.full"), 0, 0, &p,
                                        amqp_cstring_bytes("filler")),
                     AMQP_STATUS_OK);
    amqp_queue_declare_ok_t *ok = NULL;
    for (int i = 0; i < 100 && (ok == NULL || ok->message_count == 0); i++) {
        sleep_ms(20);
        ok = amqp_queue_declare(g_harness.mq, 1, amqp_cstring_bytes("it.qt.full"), 1, 0, 0, 0,
                                amqp_empty_table);
    }
    assert_true(ok != NULL && ok->message_count == 1);
    bridge_start(&g_aux, "renew", renew_config, NULL);

    struct resp r;
    int rc = http_post(g_aux.port, "/full", XML, NULL, DOC, &r);
    assert_resp(rc, &r, 503);
    assert_contains(r.body, "nack");
    resp_free(&r);
    /* The next publish goes out on the new channel, once it is open. */
    double end = now_ms() + scale_ms(5000);
    int status = 0;
    while (now_ms() < end) {
        rc = http_post(g_aux.port, "/ok", XML, NULL, DOC, &r);
        status = rc == 0 ? r.status : -1;
        resp_free(&r);
        if (status == 202)
            break;
        sleep_ms(20);
    }
    assert_int_equal(status, 202);
    /* This channel had an ack: its nacks are the queue's answer. */
    for (int i = 0; i < 3; i++) {
        rc = http_post(g_aux.port, "/full", XML, NULL, DOC, &r);
        assert_resp(rc, &r, 503);
        resp_free(&r);
    }
    rc = http_post(g_aux.port, "/ok", XML, NULL, DOC, &r);
    assert_resp(rc, &r, 202);
    resp_free(&r);
    assert_int_equal(bridge_stop(&g_aux, scale_ms(10000)), 0);
    char *log = slurp(g_aux.log, 0);
    int renewed = count_in(log, "which never had an ack: opening a new channel");
    free(log);
    if (renewed != 1)
        fail_msg("the channel was renewed %d times, expected once", renewed);
    mq_purge("it.qt.ok");
    mq_purge("it.qt.full");
    PASS();
}

/* Worker i starts on URI i mod n; /healthz names each worker's node. Two
 * spellings of the one test node stand for two cluster nodes. */
static void test_workers_spread_over_uris(void **state)
{
    (void)state;
    char uris[256];
    snprintf(uris, sizeof uris,
             "amqp://guest:guest@127.0.0.1:%d/%%2f, amqp://guest:guest@localhost:%d/%%2f",
             g_harness.broker_port, g_harness.broker_port);
    struct qt_arg a = {"it.ingest", "classic", 3, uris};
    bridge_start(&g_aux, "spread", qt_config, &a);
    struct resp r;
    int rc = http_get(g_aux.port, "/healthz", &r);
    assert_resp(rc, &r, 200);
    char want[3][160];
    /* host:port only: this endpoint answers anyone, so no user, password
     * or vhost. */
    snprintf(want[0], sizeof want[0], "worker 0: up 127.0.0.1:%d\n", g_harness.broker_port);
    snprintf(want[1], sizeof want[1], "worker 1: up localhost:%d\n", g_harness.broker_port);
    snprintf(want[2], sizeof want[2], "worker 2: up 127.0.0.1:%d\n", g_harness.broker_port);
    for (int i = 0; i < 3; i++)
        assert_contains(r.body, want[i]);
    if (strstr(r.body, "guest") != NULL || strstr(r.body, "%2f") != NULL)
        fail_msg("/healthz names a user or vhost: %s", r.body);
    resp_free(&r);
    assert_int_equal(bridge_stop(&g_aux, scale_ms(10000)), 0);

    /* The main bridge (one URI): every worker on it, "ok" first. */
    rc = http_get(g_main.port, "/healthz", &r);
    assert_resp(rc, &r, 200);
    assert_true(strncmp(r.body, "ok\n", 3) == 0);
    assert_contains(r.body, "worker 0: up 127.0.0.1:");
    assert_contains(r.body, "worker 1: up 127.0.0.1:");
    resp_free(&r);
    PASS();
}

/* ------------------------------------------------------------------ */
/* pong                                                                */

static void check_pong(const struct resp *r, bool head)
{
    assert_int_equal(r->status, 200);
    const char *ct = resp_header(r, "Content-Type");
    if (!ct || strncmp(ct, "text/plain", 10) != 0)
        fail_msg("pong Content-Type %s", ct ? ct : "(none)");
    if (head) {
        assert_int_equal(r->body_len, 0);
    } else {
        assert_int_equal(r->body_len, 5);
        assert_memory_equal(r->body, "Pong!", 5);
    }
    assert_int_equal(resp_header_count(r, "X-Request-Id"), 1);
}

static void test_pong_keepalive(void **state)
{
    (void)state;
    struct conn c;
    assert_int_equal(conn_open(&c, g_main.port), 0);
    for (int i = 0; i < 5; i++) {
        struct resp r;
        size_t len;
        const char *m = (i == 2 || i == 3) ? "HEAD" : "GET";
        char *raw = fmt_request(&len, m, "/pong", NULL, NULL, NULL, 0);
        int rc = exchange(&c, raw, len, &r, strcmp(m, "HEAD") == 0);
        free(raw);
        if (rc != 0)
            fail_msg("request %d (%s) on the keep-alive connection got no response", i, m);
        check_pong(&r, strcmp(m, "HEAD") == 0);
        const char *cn = resp_header(&r, "Connection");
        if (cn && strcasecmp(cn, "close") == 0)
            fail_msg("keep-alive pong answered with Connection: close");
        resp_free(&r);
    }
    /* Nothing stray after a HEAD: the connection still works and is open. */
    assert_int_equal(conn_wait_closed(&c, 100), 0);
    conn_close(&c);

    /* A query string does not change the path. */
    struct resp r;
    assert_int_equal(http_get(g_main.port, "/pong?x=1", &r), 0);
    check_pong(&r, false);
    resp_free(&r);
    PASS();
}

static void test_pong_http10(void **state)
{
    (void)state;
    for (int i = 0; i < 3; i++) {
        struct conn c;
        assert_int_equal(conn_open(&c, g_main.port), 0);
        static const char req[] = "GET /pong HTTP/1.0\r\n\r\n";
        struct resp r;
        if (exchange(&c, req, sizeof req - 1, &r, false) != 0)
            fail_msg("HTTP/1.0 pong: no response");
        check_pong(&r, false);
        resp_free(&r);
        /* one request per connection: the server closes */
        if (conn_wait_closed(&c, scale_ms(2000)) != 1)
            fail_msg("HTTP/1.0 pong: connection not closed by the server");
        conn_close(&c);
    }
    PASS();
}

/* ------------------------------------------------------------------ */
/* publish                                                             */

static void test_publish_mapping(void **state)
{
    (void)state;
    /* Bytes that a careless copy would change: CRLF, tabs, trailing blanks,
     * multi-byte UTF-8, CDATA, no final newline. */
    static const char body[] =
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n"
        "<order id=\"7\">\r\n"
        "\t<name>Gr\xc3\xbc\xc3\x9f Gott \xe2\x82\xac \xf0\x9f\x90\x87</name>   \n"
        "\t<note><![CDATA[a < b && c]]></note>\n"
        "</order>";
    mq_purge("it.ingest");
    time_t t0 = wall_s();
    struct resp r;
    int rc = http_post(g_main.port, "/ingest?a=1&b=xyz", "application/xml; charset=utf-8",
                       "X-Request-Id: it-map-1\r\n"
                       "X-Tenant-ID: Acme\r\n"
                       "x-lower: v1\r\n"
                       "X-Tag: a\r\n"
                       "X-Tag: b\r\n"
                       "X-Forwarded-For: 10.1.2.3\r\n"
                       "Authorization: Basic c2VjcmV0\r\n"
                       "User-Agent: test_bridge\r\n",
                       body, &r);
    time_t t1 = wall_s();
    assert_resp(rc, &r, 202);
    assert_has_header(&r, "X-Request-Id");
    assert_string_equal(resp_header(&r, "X-Request-Id"), "it-map-1");
    assert_has_header(&r, "X-Message-Id");
    assert_string_equal(resp_header(&r, "X-Message-Id"), "it-map-1");
    /* No traceparent came: the bridge started a trace (trace = start). */
    assert_has_header(&r, "traceparent");
    char tp[64];
    snprintf(tp, sizeof tp, "%s", resp_header(&r, "traceparent"));
    resp_free(&r);

    amqp_message_t m;
    if (mq_get("it.ingest", &m) != 1)
        fail_msg("202 given but queue it.ingest is empty");
    amqp_basic_properties_t *p = &m.properties;
    /* body, byte for byte */
    assert_int_equal(m.body.len, sizeof body - 1);
    assert_memory_equal(m.body.bytes, body, sizeof body - 1);
    assert_true(p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG);
    assert_true(bytes_eq(p->content_type, "application/xml; charset=utf-8"));
    assert_true(p->_flags & AMQP_BASIC_DELIVERY_MODE_FLAG);
    assert_int_equal(p->delivery_mode, 2);
    assert_true(p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG);
    assert_true(bytes_eq(p->message_id, "it-map-1"));
    assert_true(p->_flags & AMQP_BASIC_TIMESTAMP_FLAG);
    if ((time_t)p->timestamp < t0 || (time_t)p->timestamp > t1)
        fail_msg("timestamp %llu not within [%lld, %lld]", (unsigned long long)p->timestamp,
                 (long long)t0, (long long)t1);
    assert_true(p->_flags & AMQP_BASIC_APP_ID_FLAG);
    assert_true(bytes_eq(p->app_id, "ingest-bridge"));
    assert_true(p->_flags & AMQP_BASIC_TYPE_FLAG);
    assert_true(bytes_eq(p->type, "ingest"));
    assert_false(p->_flags & AMQP_BASIC_REPLY_TO_FLAG);
    assert_false(p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG);
    assert_false(p->_flags & AMQP_BASIC_EXPIRATION_FLAG);

    assert_true(p->_flags & AMQP_BASIC_HEADERS_FLAG);
    const amqp_table_t *h = &p->headers;
    char buf[256];
    const char *v;
#define HDR_IS(key, want)                                                                          \
    do {                                                                                           \
        v = tbl_get(h, (key), buf, sizeof buf);                                                    \
        if (!v || strcmp(v, (want)) != 0)                                                          \
            fail_msg("message header %s = \"%s\", expected \"%s\"", (key), v ? v : "(absent)",     \
                     (want));                                                                      \
    } while (0)
    HDR_IS("x-http-path", "/ingest");
    HDR_IS("x-http-query", "a=1&b=xyz");
    HDR_IS("x-forwarded-for", "10.1.2.3, 127.0.0.1");
    HDR_IS("x-tenant-id", "Acme");
    HDR_IS("x-lower", "v1");
    HDR_IS("x-tag", "a, b");
    HDR_IS("traceparent", tp);
#undef HDR_IS
    /* ...and nothing else: not the request id, not other request headers. */
    for (int i = 0; i < h->num_entries; i++) {
        amqp_bytes_t k = h->entries[i].key;
        static const char *const allowed[] = {"x-http-path", "x-http-query", "x-forwarded-for",
                                              "x-tenant-id", "x-lower",      "x-tag",
                                              "traceparent"};
        bool ok = false;
        for (size_t j = 0; j < sizeof allowed / sizeof *allowed; j++)
            ok = ok || bytes_eq(k, allowed[j]);
        if (!ok)
            fail_msg("unexpected message header \"%.*s\"", (int)k.len, (char *)k.bytes);
    }
    assert_int_equal(h->num_entries, 7);
    amqp_destroy_message(&m);

    /* exactly one message */
    assert_int_equal(mq_get("it.ingest", &m), 0);
    PASS();
}

static void test_publish_generated_id(void **state)
{
    (void)state;
    mq_purge("it.ingest");
    char id[2][64];
    for (int i = 0; i < 2; i++) {
        struct resp r;
        int rc = http_post(g_main.port, "/ingest", XML, NULL, DOC, &r);
        assert_resp(rc, &r, 202);
        const char *rid = resp_header(&r, "X-Request-Id");
        const char *mid = resp_header(&r, "X-Message-Id");
        if (!rid || !mid)
            fail_msg("202 without X-Request-Id or X-Message-Id");
        if (strlen(rid) < 8 || strlen(rid) >= sizeof id[i])
            fail_msg("generated request id \"%s\" is odd", rid);
        assert_string_equal(rid, mid);
        snprintf(id[i], sizeof id[i], "%s", rid);
        resp_free(&r);

        amqp_message_t m;
        if (mq_get("it.ingest", &m) != 1)
            fail_msg("202 given but queue it.ingest is empty");
        if (!bytes_eq(m.properties.message_id, id[i]))
            fail_msg("message_id %.*s, X-Request-Id %s", (int)m.properties.message_id.len,
                     (char *)m.properties.message_id.bytes, id[i]);
        char buf[64];
        /* no query: no x-http-query; the client address alone */
        assert_null(tbl_get(&m.properties.headers, "x-http-query", buf, sizeof buf));
        const char *xff = tbl_get(&m.properties.headers, "x-forwarded-for", buf, sizeof buf);
        assert_non_null(xff);
        assert_string_equal(xff, "127.0.0.1");
        amqp_destroy_message(&m);
        sleep_ms(3);
    }
    /* unique and time-ordered */
    if (strcmp(id[0], id[1]) >= 0)
        fail_msg("generated ids not increasing: %s then %s", id[0], id[1]);

    /* An unacceptable client id (too long) is replaced by a generated one. */
    char longid[200];
    memset(longid, 'a', 129);
    longid[129] = '\0';
    char *extra;
    if (asprintf(&extra, "X-Request-Id: %s\r\n", longid) < 0)
        abort();
    struct resp r;
    int rc = http_post(g_main.port, "/ingest", XML, extra, DOC, &r);
    free(extra);
    assert_resp(rc, &r, 202);
    assert_has_header(&r, "X-Request-Id");
    if (strcmp(resp_header(&r, "X-Request-Id"), longid) == 0)
        fail_msg("a 129-character X-Request-Id was taken as is");
    resp_free(&r);
    mq_purge("it.ingest");
    PASS();
}

static void test_publish_content_types(void **state)
{
    (void)state;
    static const char *const ok[] = {"application/xml", "text/xml", "text/xml; charset=utf-8",
                                     "application/atom+xml", "Application/XML"};
    mq_purge("it.ingest");
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        struct resp r;
        int rc = http_post(g_main.port, "/ingest", ok[i], NULL, DOC, &r);
        if (rc != 0 || r.status != 202)
            fail_msg("Content-Type %s: status %d (expected 202): %s", ok[i], r.status,
                     r.body ? r.body : "");
        resp_free(&r);
        amqp_message_t m;
        if (mq_get("it.ingest", &m) != 1)
            fail_msg("Content-Type %s: 202 but no message", ok[i]);
        if (!bytes_eq(m.properties.content_type, ok[i]))
            fail_msg("content_type %.*s, sent %s", (int)m.properties.content_type.len,
                     (char *)m.properties.content_type.bytes, ok[i]);
        amqp_destroy_message(&m);
    }
    PASS();
}

/* Many requests on one keep-alive connection, and a chunked body. */
static void test_publish_keepalive_chunked(void **state)
{
    (void)state;
    mq_purge("it.ingest");
    struct conn c;
    assert_int_equal(conn_open(&c, g_main.port), 0);
    for (int i = 0; i < 20; i++) {
        char extra[64], body[128];
        snprintf(extra, sizeof extra, "X-Request-Id: ka-%d\r\n", i);
        snprintf(body, sizeof body, "<n>%d</n>", i);
        size_t len;
        char *raw = fmt_request(&len, "POST", "/ingest", XML, extra, body, strlen(body));
        struct resp r;
        int rc = exchange(&c, raw, len, &r, false);
        free(raw);
        assert_resp(rc, &r, 202);
        assert_has_header(&r, "X-Request-Id");
        char id[32];
        snprintf(id, sizeof id, "ka-%d", i);
        assert_string_equal(resp_header(&r, "X-Request-Id"), id);
        resp_free(&r);
    }
    conn_close(&c);
    for (int i = 0; i < 20; i++) {
        amqp_message_t m;
        if (mq_get("it.ingest", &m) != 1)
            fail_msg("message %d of 20 missing", i);
        char id[32], body[64];
        snprintf(id, sizeof id, "ka-%d", i);
        snprintf(body, sizeof body, "<n>%d</n>", i);
        assert_true(bytes_eq(m.properties.message_id, id));
        assert_int_equal(m.body.len, strlen(body));
        assert_memory_equal(m.body.bytes, body, strlen(body));
        amqp_destroy_message(&m);
    }

    /* chunked: three chunks make one body */
    static const char chunked[] = "POST /ingest HTTP/1.1\r\nHost: x\r\n"
                                  "Content-Type: application/xml\r\n"
                                  "Transfer-Encoding: chunked\r\n"
                                  "X-Request-Id: chunked-1\r\n\r\n"
                                  "3\r\n<a>\r\n"
                                  "5\r\nhello\r\n"
                                  "4\r\n</a>\r\n"
                                  "0\r\n\r\n";
    assert_int_equal(conn_open(&c, g_main.port), 0);
    struct resp r;
    int rc = exchange(&c, chunked, sizeof chunked - 1, &r, false);
    assert_resp(rc, &r, 202);
    resp_free(&r);
    conn_close(&c);
    amqp_message_t m;
    if (mq_get("it.ingest", &m) != 1)
        fail_msg("chunked POST: 202 but no message");
    assert_int_equal(m.body.len, 12);
    assert_memory_equal(m.body.bytes, "<a>hello</a>", 12);
    amqp_destroy_message(&m);

    /* Trailers after the last chunk are never request headers: neither the
     * id nor the type they name is taken, and they are not read as the
     * next request on the connection. */
    static const char trailed[] = "POST /ingest HTTP/1.1\r\nHost: x\r\n"
                                  "Content-Type: application/xml\r\n"
                                  "Transfer-Encoding: chunked\r\n"
                                  "X-Request-Id: chunked-2\r\n\r\n"
                                  "8\r\n<a>t</a>\r\n"
                                  "0\r\n"
                                  "X-Request-Id: from-trailer\r\n"
                                  "Content-Type: text/plain\r\n\r\n";
    assert_int_equal(conn_open(&c, g_main.port), 0);
    rc = exchange(&c, trailed, sizeof trailed - 1, &r, false);
    assert_resp(rc, &r, 202);
    assert_string_equal(resp_header(&r, "X-Request-Id"), "chunked-2");
    resp_free(&r);
    static const char next[] = "GET /pong HTTP/1.1\r\nHost: x\r\n\r\n";
    rc = exchange(&c, next, sizeof next - 1, &r, false);
    assert_resp(rc, &r, 200);
    resp_free(&r);
    conn_close(&c);
    if (mq_get("it.ingest", &m) != 1)
        fail_msg("chunked POST with trailers: 202 but no message");
    if (!bytes_eq(m.properties.message_id, "chunked-2") || !bytes_eq(m.body, "<a>t</a>"))
        fail_msg("chunked POST with trailers: message_id %.*s, body %.*s",
                 (int)m.properties.message_id.len, (const char *)m.properties.message_id.bytes,
                 (int)m.body.len, (const char *)m.body.bytes);
    amqp_destroy_message(&m);
    PASS();
}

/* ------------------------------------------------------------------ */
/* refused bodies                                                      */

/* Expect STATUS, text/plain, a body naming line LINE and a column, and no
 * message in Q. */
static void expect_xml_refused(const char *path, const char *body, int status, int line,
                               const char *q)
{
    struct resp r;
    int rc = http_post(g_main.port, path, XML, NULL, body, &r);
    assert_resp(rc, &r, status);
    const char *ct = resp_header(&r, "Content-Type");
    if (!ct || strncmp(ct, "text/plain", 10) != 0)
        fail_msg("%d with Content-Type %s, expected text/plain", status, ct ? ct : "(none)");
    assert_has_header(&r, "X-Request-Id");
    if (line > 0) {
        char want[32];
        snprintf(want, sizeof want, "line %d", line);
        assert_contains(r.body, want);
    }
    assert_contains(r.body, "column");
    resp_free(&r);
    amqp_message_t m;
    if (mq_get(q, &m) == 1) {
        amqp_destroy_message(&m);
        fail_msg("a refused body (%d) reached queue %s", status, q);
    }
}

static void test_400_malformed(void **state)
{
    (void)state;
    mq_purge("it.ingest");
    expect_xml_refused("/ingest", "<?xml version=\"1.0\"?>\n<order>\n  <id>1</idx>\n</order>\n",
                       400, 3, "it.ingest");
    expect_xml_refused("/ingest", "<a><b></a>", 400, 1, "it.ingest");
    expect_xml_refused("/ingest", "not xml at all", 400, 1, "it.ingest");
    expect_xml_refused("/ingest", "<a>\n\n<b>unclosed", 400, 0, "it.ingest");
    /* invalid UTF-8 in a document that says UTF-8 */
    expect_xml_refused("/ingest", "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<a>\xff\xfe</a>",
                       400, 2, "it.ingest");
    PASS();
}

static void test_400_doctype(void **state)
{
    (void)state;
    mq_purge("it.ingest");
    expect_xml_refused("/ingest", "<!DOCTYPE order>\n<order/>", 400, 1, "it.ingest");
    /* XXE and billion laughs never get as far as expanding anything */
    expect_xml_refused("/ingest",
                       "<?xml version=\"1.0\"?>\n"
                       "<!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>\n<r>&x;</r>",
                       400, 0, "it.ingest");
    expect_xml_refused("/ingest",
                       "<!DOCTYPE l [<!ENTITY a \"aaaaaaaaaa\">"
                       "<!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\">"
                       "<!ENTITY c \"&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;\">]><l>&c;</l>",
                       400, 0, "it.ingest");
    PASS();
}

static void test_422_root(void **state)
{
    (void)state;
    mq_purge("it.rooted");
    expect_xml_refused("/rooted", "<?xml version=\"1.0\"?>\n<invoice><id>1</id></invoice>", 422, 2,
                       "it.rooted");
    /* the right root passes */
    struct resp r;
    int rc = http_post(g_main.port, "/rooted", XML, NULL, "<order><x/></order>", &r);
    assert_resp(rc, &r, 202);
    resp_free(&r);
    amqp_message_t m;
    assert_int_equal(mq_get("it.rooted", &m), 1);
    assert_true(bytes_eq(m.properties.type, "rooted"));
    amqp_destroy_message(&m);
    PASS();
}

static void test_422_schema(void **state)
{
    (void)state;
    mq_purge("it.schema");
    expect_xml_refused("/schema", "<order>\n  <id>abc</id>\n</order>\n", 422, 2, "it.schema");
    expect_xml_refused("/schema", "<order>\n  <item>x</item>\n</order>\n", 422, 0, "it.schema");
    expect_xml_refused("/schema", "<other/>", 422, 1, "it.schema");
    /* malformed is still 400 on a schema route */
    expect_xml_refused("/schema", "<order><id>1</id>", 400, 0, "it.schema");
    struct resp r;
    int rc = http_post(g_main.port, "/schema", XML, NULL,
                       "<order>\n  <id>42</id>\n  <item>x</item>\n</order>\n", &r);
    assert_resp(rc, &r, 202);
    resp_free(&r);
    amqp_message_t m;
    assert_int_equal(mq_get("it.schema", &m), 1);
    amqp_destroy_message(&m);
    PASS();
}

/* Ambiguous framing: 400, then the connection is closed, and whatever
 * followed is never taken as a second request. */
static void expect_framing_400(const char *what, const char *raw)
{
    struct conn c;
    assert_int_equal(conn_open(&c, g_main.port), 0);
    struct resp r;
    int rc = exchange(&c, raw, strlen(raw), &r, false);
    if (rc != 0)
        fail_msg("%s: no response (expected 400)", what);
    if (r.status != 400)
        fail_msg("%s: status %d, expected 400; body: %s", what, r.status, r.body);
    resp_free(&r);
    int closed = conn_wait_closed(&c, scale_ms(2000));
    if (closed == 2)
        fail_msg("%s: after the 400 the server sent more: %.200s", what, c.buf);
    if (closed != 1)
        fail_msg("%s: connection still open %g s after the 400", what, scale_ms(2000) / 1000.0);
    conn_close(&c);
}

static void test_400_framing(void **state)
{
    (void)state;
    mq_purge("it.ingest");
    expect_framing_400("two Content-Lengths, same value",
                       "POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/xml\r\n"
                       "Content-Length: 4\r\nContent-Length: 4\r\n\r\n<a/>");
    expect_framing_400("two Content-Lengths, smuggled request",
                       "POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/xml\r\n"
                       "Content-Length: 4\r\nContent-Length: 40\r\n\r\n<a/>"
                       "GET /pong HTTP/1.1\r\nHost: x\r\n\r\n");
    expect_framing_400("Content-Length with Transfer-Encoding",
                       "POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/xml\r\n"
                       "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "4\r\n<a/>\r\n0\r\n\r\n");
    expect_framing_400("Transfer-Encoding: gzip",
                       "POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/xml\r\n"
                       "Transfer-Encoding: gzip\r\n\r\n"
                       "4\r\n<a/>\r\n0\r\n\r\n");
    expect_framing_400("Transfer-Encoding: gzip, chunked",
                       "POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/xml\r\n"
                       "Transfer-Encoding: gzip, chunked\r\n\r\n"
                       "4\r\n<a/>\r\n0\r\n\r\n");
    amqp_message_t m;
    if (mq_get("it.ingest", &m) == 1) {
        amqp_destroy_message(&m);
        fail_msg("a request with ambiguous framing was published");
    }
    PASS();
}

static void test_415(void **state)
{
    (void)state;
    static const char *const bad[] = {"text/plain", "application/json",
                                      "application/x-www-form-urlencoded", NULL};
    mq_purge("it.ingest");
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct resp r;
        int rc = http_post(g_main.port, "/ingest", bad[i], NULL, DOC, &r);
        if (rc != 0 || r.status != 415)
            fail_msg("Content-Type %s: status %d, expected 415", bad[i] ? bad[i] : "(none)",
                     r.status);
        assert_has_header(&r, "X-Request-Id");
        resp_free(&r);
    }
    amqp_message_t m;
    assert_int_equal(mq_get("it.ingest", &m), 0);
    PASS();
}

static void test_413(void **state)
{
    (void)state;
    /* By Content-Length alone: answered without waiting for the body. */
    struct conn c;
    assert_int_equal(conn_open(&c, g_main.port), 0);
    static const char head[] = "POST /ingest HTTP/1.1\r\nHost: x\r\n"
                               "Content-Type: application/xml\r\n"
                               "Content-Length: 10000000\r\n\r\n<a>";
    struct resp r;
    int rc = exchange(&c, head, sizeof head - 1, &r, false);
    assert_resp(rc, &r, 413);
    if (r.ms > scale_ms(2000))
        fail_msg("413 took %.0f ms: the body was waited for", r.ms);
    resp_free(&r);
    conn_close(&c);

    /* The limit is max_body = 64KiB: 65536 bytes pass, 65537 do not. */
    mq_purge("it.ingest");
    for (size_t n = 65536; n <= 65537; n++) {
        char *body = xmalloc(n + 1);
        memset(body, 'x', n);
        memcpy(body, "<a>", 3);
        memcpy(body + n - 4, "</a>", 4);
        body[n] = '\0';
        rc = http_post(g_main.port, "/ingest", XML, NULL, body, &r);
        free(body);
        int want = n == 65536 ? 202 : 413;
        if (rc != 0 || r.status != want)
            fail_msg("body of %zu bytes: status %d, expected %d", n, r.status, want);
        resp_free(&r);
    }
    amqp_message_t m;
    assert_int_equal(mq_get("it.ingest", &m), 1);
    assert_int_equal(m.body.len, 65536);
    amqp_destroy_message(&m);
    assert_int_equal(mq_get("it.ingest", &m), 0);
    PASS();
}

static void test_404_405(void **state)
{
    (void)state;
    struct resp r;
    int rc = http_post(g_main.port, "/nope", XML, NULL, DOC, &r);
    assert_resp(rc, &r, 404);
    assert_has_header(&r, "X-Request-Id");
    resp_free(&r);
    rc = http_get(g_main.port, "/ingest/more", &r);
    assert_resp(rc, &r, 404);
    resp_free(&r);
    rc = http_get(g_main.port, "/", &r);
    assert_resp(rc, &r, 404);
    resp_free(&r);

    static const char *const methods[] = {"GET", "PUT", "DELETE", "PATCH", "HEAD"};
    for (size_t i = 0; i < sizeof methods / sizeof *methods; i++) {
        bool body = strcmp(methods[i], "GET") != 0 && strcmp(methods[i], "HEAD") != 0;
        rc = http_req(g_main.port, methods[i], "/ingest", body ? XML : NULL, NULL,
                      body ? DOC : NULL, body ? strlen(DOC) : 0, &r);
        if (rc != 0 || r.status != 405)
            fail_msg("%s /ingest: status %d, expected 405", methods[i], r.status);
        const char *allow = resp_header(&r, "Allow");
        if (!allow || strcmp(allow, "POST") != 0)
            fail_msg("%s /ingest: Allow: %s, expected POST", methods[i], allow ? allow : "(none)");
        resp_free(&r);
    }
    PASS();
}

/* ------------------------------------------------------------------ */
/* broker outcomes                                                     */

static void test_502_unroutable(void **state)
{
    (void)state;
    for (int i = 0; i < 3; i++) {
        struct resp r;
        double t0 = now_ms();
        int rc = http_post(g_main.port, "/lost", XML, NULL, DOC, &r);
        assert_resp(rc, &r, 502);
        assert_has_header(&r, "X-Request-Id");
        if (now_ms() - t0 > scale_ms(2000))
            fail_msg("502 took %.0f ms", now_ms() - t0);
        resp_free(&r);
    }
    /* a routable publish right after is still 202 (the return matched the
     * right request) */
    mq_purge("it.ingest");
    struct resp r;
    int rc = http_post(g_main.port, "/ingest", XML, NULL, DOC, &r);
    assert_resp(rc, &r, 202);
    resp_free(&r);
    PASS();
}

static void test_503_nack(void **state)
{
    (void)state;
    for (int i = 0; i < 3; i++) {
        struct resp r;
        int rc = http_post(g_main.port, "/full", XML, NULL, DOC, &r);
        assert_resp(rc, &r, 503);
        assert_has_header(&r, "X-Request-Id");
        resp_free(&r);
    }
    amqp_message_t m;
    assert_int_equal(mq_get("it.full", &m), 0);
    PASS();
}

static void test_healthz(void **state)
{
    (void)state;
    struct resp r;
    int rc = http_get(g_main.port, "/healthz", &r);
    assert_resp(rc, &r, 200);
    assert_has_header(&r, "X-Request-Id");
    resp_free(&r);
    PASS();
}

/* Mixed results on concurrent connections are matched to the right
 * requests: 202 / 502 / 503 interleaved. */
struct mix_arg {
    int port;
    int n;
    int bad; /* wrong answers seen */
    char first_bad[160];
};

static void *mix_thread(void *p)
{
    struct mix_arg *a = p;
    static const char *const path[] = {"/ingest", "/lost", "/full"};
    static const int want[] = {202, 502, 503};
    for (int i = 0; i < a->n; i++) {
        int k = i % 3;
        struct resp r;
        int rc = http_post(a->port, path[k], XML, NULL, DOC, &r);
        if (rc != 0 || r.status != want[k]) {
            if (!a->bad++)
                snprintf(a->first_bad, sizeof a->first_bad, "%s: %d (expected %d)", path[k],
                         rc != 0 ? -1 : r.status, want[k]);
        }
        resp_free(&r);
    }
    return NULL;
}

static void test_results_matched_concurrently(void **state)
{
    (void)state;
    mq_purge("it.ingest");
    enum { T = 6 };
    pthread_t th[T];
    struct mix_arg a[T];
    for (int i = 0; i < T; i++) {
        a[i] = (struct mix_arg){.port = g_main.port, .n = 30};
        pthread_create(&th[i], NULL, mix_thread, &a[i]);
    }
    int bad = 0;
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        if (a[i].bad)
            print_message("thread %d: %d wrong, first: %s\n", i, a[i].bad, a[i].first_bad);
        bad += a[i].bad;
    }
    assert_int_equal(bad, 0);
    mq_purge("it.ingest");
    PASS();
}

/* ------------------------------------------------------------------ */
/* clients that leave                                                  */

static void post_and_leave(int port, bool rst, const char *id)
{
    struct conn c;
    if (conn_open(&c, port) != 0)
        fail_msg("connect to the bridge failed");
    char extra[128];
    snprintf(extra, sizeof extra, "X-Request-Id: %s\r\n", id);
    size_t len;
    char *raw = fmt_request(&len, "POST", "/ingest", XML, extra, DOC, strlen(DOC));
    conn_send(&c, raw, len);
    free(raw);
    if (rst)
        conn_abort(&c);
    else
        conn_close(&c);
}

static void expect_serving(struct bridge *b)
{
    int st;
    if (!bridge_alive(b, &st)) {
        char d[64];
        fail_msg("the bridge died: %s", describe_status(st, d, sizeof d));
    }
    struct resp r;
    int rc = http_get(b->port, "/pong", &r);
    assert_resp(rc, &r, 200);
    resp_free(&r);
    rc = http_post(b->port, "/ingest", XML, "X-Request-Id: still-serving\r\n", DOC, &r);
    assert_resp(rc, &r, 202);
    assert_string_equal(resp_header(&r, "X-Request-Id"), "still-serving");
    resp_free(&r);
}

static void test_client_gone(void **state)
{
    (void)state;
    mq_purge("it.ingest");
    /* Leave at once, with FIN and with RST. */
    for (int i = 0; i < 20; i++) {
        char id[32];
        snprintf(id, sizeof id, "gone-fast-%d", i);
        post_and_leave(g_main.port, i % 2, id);
    }
    sleep_ms(200);
    expect_serving(&g_main);

    /* Leave while the publish waits for its confirm: freeze the broker so
     * that the confirm cannot come, hang up, thaw it, and the late ack must
     * be dropped, not given to another request. */
    assert_int_equal(broker_freeze(), 0);
    enum { N = 12 };
    struct conn c[N];
    for (int i = 0; i < N; i++) {
        assert_int_equal(conn_open(&c[i], g_main.port), 0);
        char extra[64];
        snprintf(extra, sizeof extra, "X-Request-Id: gone-wait-%d\r\n", i);
        size_t len;
        char *raw = fmt_request(&len, "POST", "/ingest", XML, extra, DOC, strlen(DOC));
        assert_int_equal(conn_send(&c[i], raw, len), 0);
        free(raw);
    }
    double v;
    if (!wait_metric(g_main.port, "bridge_inflight", N, 2000, &v))
        fail_msg("bridge_inflight %.0f with %d publishes waiting on the frozen broker", v, N);
    /* A third of them pipeline their next request before leaving: bytes
     * waiting to be read must not hide the hang-up. */
    for (int i = 0; i < N; i += 3) {
        static const char next[] = "GET /pong HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_int_equal(conn_send(&c[i], next, sizeof next - 1), 0);
    }
    sleep_ms(100);
    /* pong never touches the broker, frozen or not */
    struct resp r;
    int rc = http_get(g_main.port, "/pong", &r);
    assert_resp(rc, &r, 200);
    if (r.ms > scale_ms(1000))
        fail_msg("pong took %.0f ms with the broker frozen", r.ms);
    resp_free(&r);
    for (int i = 0; i < N; i++) {
        if (i % 2)
            conn_abort(&c[i]);
        else
            conn_close(&c[i]);
    }
    /* Noticed while the broker is still frozen: no confirm or timeout can
     * have freed the slots. */
    if (!wait_metric(g_main.port, "bridge_inflight", 0, 2000, &v))
        fail_msg("bridge_inflight still %.0f after every waiting client hung up", v);
    assert_int_equal(broker_thaw(), 0);
    sleep_ms(300);
    expect_serving(&g_main);
    mq_purge("it.ingest");
    PASS();
}

/* ------------------------------------------------------------------ */
/* memory alarm: connection.blocked                                    */

static void test_blocked(void **state)
{
    (void)state;
    /* One worker, so that its one connection is the one that gets blocked. */
    start_bridge(&g_aux, "blocked", 1);
    mq_purge("it.ingest");
    struct resp r;
    int rc = http_post(g_aux.port, "/ingest", XML, NULL, DOC, &r);
    assert_resp(rc, &r, 202);
    resp_free(&r);

    assert_int_equal(broker_alarm(true), 0);

    /* The broker says connection.blocked on the next publish. Every answer
     * comes within 1 s; once one is 503 the rest are too. */
    int n503 = 0, n = 0;
    double end = now_ms() + scale_ms(10000);
    while (n503 < 5 && now_ms() < end) {
        rc = http_post(g_aux.port, "/ingest", XML, NULL, DOC, &r);
        n++;
        if (rc != 0)
            fail_msg("publish %d under the memory alarm: no answer", n);
        if (r.ms > scale_ms(1000))
            fail_msg("publish %d under the memory alarm answered after %.0f ms", n, r.ms);
        if (r.status == 503) {
            assert_has_header(&r, "Retry-After");
            n503++;
        } else if (n503 > 0) {
            fail_msg("publish %d: %d after a 503 while blocked", n, r.status);
        } else if (r.status != 202) {
            fail_msg("publish %d under the memory alarm: %d", n, r.status);
        }
        resp_free(&r);
        sleep_ms(20);
    }
    if (n503 < 5)
        fail_msg("no 503 within %g s of the memory alarm (%d publishes)", scale_ms(10000) / 1000.0,
                 n);

    rc = http_get(g_aux.port, "/pong", &r);
    assert_resp(rc, &r, 200);
    resp_free(&r);

    assert_int_equal(broker_alarm(false), 0);
    end = now_ms() + scale_ms(10000);
    int last = 0;
    do {
        rc = http_post(g_aux.port, "/ingest", XML, NULL, DOC, &r);
        last = rc == 0 ? r.status : -1;
        resp_free(&r);
        if (last == 202)
            break;
        sleep_ms(100);
    } while (now_ms() < end);
    if (last != 202)
        fail_msg("publishes not 202 within %g s of lifting the alarm (last %d)",
                 scale_ms(10000) / 1000.0, last);

    int st = bridge_stop(&g_aux, scale_ms(20000));
    if (st != 0) {
        char d[64];
        fail_msg("bridge did not exit 0 on SIGTERM: %s",
                 st == -1 ? "hung" : describe_status(st, d, sizeof d));
    }
    mq_purge("it.ingest");
    PASS();
}

/* ------------------------------------------------------------------ */
/* SIGTERM with requests in flight                                     */

static void test_sigterm_inflight(void **state)
{
    (void)state;
    enum { N = 50 };
    start_bridge(&g_aux, "sigterm", 2);
    mq_purge("it.ingest");

    /* 50 keep-alive connections, each proven accepted and served by a pong
     * first, then a POST on each, then SIGTERM while they are in flight. */
    static struct conn c[N];
    for (int i = 0; i < N; i++) {
        assert_int_equal(conn_open(&c[i], g_aux.port), 0);
        conn_set_timeout(&c[i], scale_ms(20000));
        size_t len;
        char *raw = fmt_request(&len, "GET", "/pong", NULL, NULL, NULL, 0);
        struct resp r;
        int rc = exchange(&c[i], raw, len, &r, false);
        free(raw);
        assert_resp(rc, &r, 200);
        resp_free(&r);
    }
    char *reqs[N];
    size_t lens[N];
    for (int i = 0; i < N; i++) {
        char extra[64];
        snprintf(extra, sizeof extra, "X-Request-Id: term-%d-%d\r\n", (int)getpid(), i);
        reqs[i] = fmt_request(&lens[i], "POST", "/ingest", XML, extra, DOC, strlen(DOC));
    }
    for (int i = 0; i < N; i++)
        assert_int_equal(conn_send(&c[i], reqs[i], lens[i]), 0);
    sleep_ms(1);
    kill(g_aux.pid, SIGTERM);

    int n202 = 0, n503 = 0;
    bool got202[N] = {false};
    for (int i = 0; i < N; i++) {
        struct resp r;
        if (conn_read_resp(&c[i], &r, false) != 0)
            fail_msg("request %d of %d got no answer after SIGTERM (%d x 202, %d x 503 before)", i,
                     N, n202, n503);
        if (r.status == 202) {
            n202++;
            got202[i] = true;
        } else if (r.status == 503) {
            n503++;
        } else {
            fail_msg("request %d after SIGTERM: status %d", i, r.status);
        }
        char id[64];
        snprintf(id, sizeof id, "term-%d-%d", (int)getpid(), i);
        const char *rid = resp_header(&r, "X-Request-Id");
        if (!rid || strcmp(rid, id) != 0)
            fail_msg("answer on connection %d carries id %s, sent %s", i, rid ? rid : "-", id);
        resp_free(&r);
        conn_close(&c[i]);
        free(reqs[i]);
    }
    print_message("SIGTERM with %d in flight: %d x 202, %d x 503\n", N, n202, n503);

    int st;
    if (!wait_exit(g_aux.pid, scale_ms(20000), &st))
        fail_msg("bridge still running %g s after SIGTERM", scale_ms(20000) / 1000.0);
    g_aux.pid = 0;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        char d[64];
        dump_report(&g_aux);
        fail_msg("bridge after SIGTERM: %s, expected exit 0", describe_status(st, d, sizeof d));
    }

    size_t nids;
    char **ids = mq_drain_ids("it.ingest", &nids);
    for (int i = 0; i < N; i++) {
        if (!got202[i])
            continue;
        char id[64];
        snprintf(id, sizeof id, "term-%d-%d", (int)getpid(), i);
        if (!ids_have(ids, nids, id))
            fail_msg("request %s got 202 but is not in the queue", id);
    }
    ids_free(ids, nids);
    PASS();
}

/* ------------------------------------------------------------------ */
/* the broker goes away and comes back                                 */

struct poster {
    int port;
    volatile bool stop;
    int n, n202, n503, nother, nnoanswer;
    char (*ids202)[48];
    int cap;
    double slowest_ms;
};

static void *poster_thread(void *p)
{
    struct poster *a = p;
    while (!a->stop && a->n < a->cap) {
        char extra[96];
        char id[48];
        snprintf(id, sizeof id, "down-%d-%d", (int)getpid(), a->n);
        snprintf(extra, sizeof extra, "X-Request-Id: %s\r\n", id);
        struct resp r;
        int rc = http_post(a->port, "/ingest", XML, extra, DOC, &r);
        a->n++;
        if (rc != 0) {
            a->nnoanswer++;
        } else {
            if (r.ms > a->slowest_ms)
                a->slowest_ms = r.ms;
            if (r.status == 202)
                memcpy(a->ids202[a->n202++], id, sizeof id);
            else if (r.status == 503)
                a->n503++;
            else
                a->nother++;
        }
        resp_free(&r);
        sleep_ms(20);
    }
    return NULL;
}

static void test_broker_down_and_back(void **state)
{
    (void)state;
    mq_purge("it.ingest");
    struct poster ps = {.port = g_main.port, .cap = 4000};
    ps.ids202 = calloc((size_t)ps.cap, sizeof *ps.ids202);
    pthread_t th;
    pthread_create(&th, NULL, poster_thread, &ps);
    sleep_ms(300);

    if (broker_stop() != 0)
        fail_msg("tests/broker.sh stop failed");

    /* pong is untouched, publish is 503 + Retry-After at once */
    struct resp r;
    int rc = http_get(g_main.port, "/pong", &r);
    assert_resp(rc, &r, 200);
    resp_free(&r);
    rc = http_post(g_main.port, "/ingest", XML, NULL, DOC, &r);
    assert_resp(rc, &r, 503);
    assert_has_header(&r, "Retry-After");
    if (r.ms > scale_ms(1000))
        fail_msg("503 with the broker down took %.0f ms", r.ms);
    resp_free(&r);
    int last;
    if (!wait_health(g_main.port, 503, scale_ms(1000), &last))
        fail_msg("/healthz %d within %g s of the broker stopping, expected 503", last,
                 scale_ms(1000) / 1000.0);
    rc = http_get(g_main.port, "/healthz", &r);
    assert_resp(rc, &r, 503);
    if (r.body_len == 0)
        fail_msg("/healthz 503 without a reason");
    resp_free(&r);

    /* back again */
    if (broker_start() != 0)
        fail_msg("tests/broker.sh start failed");
    double t0 = now_ms();
    if (!wait_health(g_main.port, 200, scale_ms(15000), &last))
        fail_msg("/healthz %d %g s after the broker came back, expected 200", last,
                 scale_ms(15000) / 1000.0);
    print_message("bridge reconnected %.1f s after the broker was up again\n",
                  (now_ms() - t0) / 1000);
    rc = http_post(g_main.port, "/ingest", XML, NULL, DOC, &r);
    assert_resp(rc, &r, 202);
    resp_free(&r);

    sleep_ms(300);
    ps.stop = true;
    pthread_join(th, NULL);
    print_message("during the outage: %d posts, %d x 202, %d x 503, %d other, %d unanswered, "
                  "slowest %.0f ms\n",
                  ps.n, ps.n202, ps.n503, ps.nother, ps.nnoanswer, ps.slowest_ms);
    assert_int_equal(ps.nother, 0);
    assert_int_equal(ps.nnoanswer, 0);

    /* At-least-once: every 202 is in the (durable) queue after the restart. */
    size_t nids;
    char **ids = mq_drain_ids("it.ingest", &nids);
    int missing = 0;
    for (int i = 0; i < ps.n202; i++) {
        if (!ids_have(ids, nids, ps.ids202[i])) {
            if (!missing)
                print_message("first missing: %s\n", ps.ids202[i]);
            missing++;
        }
    }
    ids_free(ids, nids);
    free(ps.ids202);
    if (missing)
        fail_msg("%d messages answered 202 are not in the queue after the broker restart", missing);
    PASS();
}

/* ------------------------------------------------------------------ */
/* rpc routes                                                          */

static void test_rpc_reply(void **state)
{
    (void)state;
    mq_purge("it.rpc");
    echo_start("it.rpc", NULL);
    /* Bytes a careless copy would change, and a content type to carry back. */
    static const char body[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n"
                               "<q>Gr\xc3\xbc\xc3\x9f \xe2\x82\xac\t </q>";
    struct resp r;
    int rc = http_post(g_main.port, "/rpc", "application/atom+xml; charset=utf-8",
                       "X-Request-Id: rpc-reply-1\r\n", body, &r);
    assert_resp(rc, &r, 200);
    assert_int_equal(r.body_len, sizeof body - 1);
    assert_memory_equal(r.body, body, sizeof body - 1);
    const char *ct = resp_header(&r, "Content-Type");
    if (!ct || strcmp(ct, "application/atom+xml; charset=utf-8") != 0)
        fail_msg("rpc reply Content-Type %s", ct ? ct : "(none)");
    assert_string_equal(resp_header(&r, "X-Request-Id"), "rpc-reply-1");
    resp_free(&r);
    echo_stop();

    /* The worker's x-http-status is the answer's status. */
    static const char *const status_opts[] = {"-s", "201", NULL};
    echo_start("it.rpc", status_opts);
    rc = http_post(g_main.port, "/rpc", XML, NULL, DOC, &r);
    assert_resp(rc, &r, 201);
    assert_string_equal(r.body, DOC);
    resp_free(&r);
    echo_stop();

    /* 204 has no body and no Content-Length, whatever the reply carried:
     * the next response on the same connection is read as itself. */
    static const char *const nobody_opts[] = {"-s", "204", NULL};
    echo_start("it.rpc", nobody_opts);
    struct conn c;
    assert_int_equal(conn_open(&c, g_main.port), 0);
    size_t len;
    char *raw = fmt_request(&len, "POST", "/rpc", XML, NULL, DOC, strlen(DOC));
    rc = exchange(&c, raw, len, &r, false);
    free(raw);
    assert_resp(rc, &r, 204);
    if (resp_header(&r, "Content-Length") != NULL)
        fail_msg("204 with Content-Length: %s", resp_header(&r, "Content-Length"));
    resp_free(&r);
    raw = fmt_request(&len, "GET", "/pong", NULL, NULL, NULL, 0);
    rc = exchange(&c, raw, len, &r, false);
    free(raw);
    assert_resp(rc, &r, 200);
    assert_string_equal(r.body, "Pong!");
    resp_free(&r);
    conn_close(&c);
    PASS();
}

/* properties = minimal: message_id, content_type and delivery_mode, nothing
 * of the request's metadata (no timestamp, app_id, type, headers). */
static void test_minimal_properties(void **state)
{
    (void)state;
    mq_purge("it.minimal");
    struct resp r;
    int rc = http_post(g_main.port, "/minimal?q=1", "application/xml",
                       "X-Request-Id: it-min-1\r\nX-Tenant: acme\r\n", DOC, &r);
    assert_resp(rc, &r, 202);
    assert_string_equal(resp_header(&r, "X-Message-Id"), "it-min-1");
    resp_free(&r);
    amqp_message_t m;
    if (mq_get("it.minimal", &m) != 1)
        fail_msg("202 given but queue it.minimal is empty");
    amqp_basic_properties_t *p = &m.properties;
    assert_int_equal(m.body.len, strlen(DOC));
    assert_true(p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG);
    assert_true(bytes_eq(p->message_id, "it-min-1"));
    assert_true(p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG);
    assert_true(bytes_eq(p->content_type, "application/xml"));
    assert_true(p->_flags & AMQP_BASIC_DELIVERY_MODE_FLAG);
    assert_int_equal(p->delivery_mode, 2);
    assert_false(p->_flags & AMQP_BASIC_TIMESTAMP_FLAG);
    assert_false(p->_flags & AMQP_BASIC_APP_ID_FLAG);
    assert_false(p->_flags & AMQP_BASIC_TYPE_FLAG);
    assert_false(p->_flags & AMQP_BASIC_HEADERS_FLAG);
    amqp_destroy_message(&m);
    PASS();
}

/* No worker: the request waits in the queue with the right properties, and
 * the client gets 504 after the route's timeout. */
static void test_rpc_timeout_no_worker(void **state)
{
    (void)state;
    mq_purge("it.rpc");
    struct conn c;
    assert_int_equal(conn_open(&c, g_main.port), 0);
    size_t len;
    char *raw = fmt_request(&len, "POST", "/rpc-short", XML, "X-Request-Id: rpc-nobody\r\n", DOC,
                            strlen(DOC));
    double t0 = now_ms();
    assert_int_equal(conn_send(&c, raw, len), 0);
    free(raw);
    sleep_ms(150);
    amqp_message_t m;
    if (mq_get("it.rpc", &m) != 1)
        fail_msg("the rpc request is not in queue it.rpc");
    amqp_basic_properties_t *p = &m.properties;
    assert_true(p->_flags & AMQP_BASIC_REPLY_TO_FLAG);
    /* The broker rewrites direct reply-to into amq.rabbitmq.reply-to.<channel key>. */
    if (p->reply_to.len < 22 || memcmp(p->reply_to.bytes, "amq.rabbitmq.reply-to.", 22) != 0)
        fail_msg("reply_to %.*s", (int)p->reply_to.len, (char *)p->reply_to.bytes);
    /* The correlation id is the bridge's own, never the client's id (which
     * a retry may send again); message_id stays the request id. */
    assert_true(p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG);
    if (p->correlation_id.len == 0 || bytes_eq(p->correlation_id, "rpc-nobody"))
        fail_msg("correlation_id \"%.*s\"", (int)p->correlation_id.len,
                 (char *)p->correlation_id.bytes);
    assert_true(bytes_eq(p->message_id, "rpc-nobody"));
    assert_true(p->_flags & AMQP_BASIC_EXPIRATION_FLAG);
    assert_true(bytes_eq(p->expiration, "700"));
    assert_true(bytes_eq(p->type, "rpcshort"));
    /* No persistent key: an rpc route publishes transient messages. */
    if ((p->_flags & AMQP_BASIC_DELIVERY_MODE_FLAG) && p->delivery_mode == 2)
        fail_msg("rpc request published persistent (delivery_mode 2)");
    assert_int_equal(m.body.len, strlen(DOC));
    amqp_destroy_message(&m);

    struct resp r;
    assert_int_equal(conn_read_resp(&c, &r, false), 0);
    double took = now_ms() - t0;
    assert_int_equal(r.status, 504);
    assert_string_equal(resp_header(&r, "X-Request-Id"), "rpc-nobody");
    if (took < 650 || took > scale_ms(3000))
        fail_msg("504 after %.0f ms, route timeout 700 ms", took);
    resp_free(&r);
    conn_close(&c);
    PASS();
}

/* One worker, so every request shares one channel. A reply that comes after
 * its request timed out is dropped and counted, never given to a later
 * request, not even one with the same X-Request-Id (a retry, a constant id);
 * and two requests waiting at once with one id each get their own reply:
 * ids are the client's business, not a lock (no 409). */
static void test_rpc_late_reply(void **state)
{
    (void)state;
    start_bridge(&g_aux, "rpclate", 1);
    mq_purge("it.rpc");
    static const char *const slow[] = {"-d", "1000", "-p", "1", NULL};
    echo_start("it.rpc", slow);

    struct resp r;
    double t0 = now_ms();
    int rc =
        http_post(g_aux.port, "/rpc-short", XML, "X-Request-Id: late-a\r\n", "<a>first</a>", &r);
    assert_resp(rc, &r, 504);
    if (now_ms() - t0 > scale_ms(2000))
        fail_msg("504 after %.0f ms", now_ms() - t0);
    resp_free(&r);

    /* Sent while the worker still works on the first, with its id: the
     * first's reply comes while these two wait on the same channel. */
    struct conn c1, c2;
    assert_int_equal(conn_open(&c1, g_aux.port), 0);
    assert_int_equal(conn_open(&c2, g_aux.port), 0);
    conn_set_timeout(&c1, scale_ms(10000));
    conn_set_timeout(&c2, scale_ms(10000));
    size_t len;
    char *raw =
        fmt_request(&len, "POST", "/rpc", XML, "X-Request-Id: late-a\r\n", "<b>second</b>", 13);
    assert_int_equal(conn_send(&c1, raw, len), 0);
    free(raw);
    sleep_ms(50);
    raw = fmt_request(&len, "POST", "/rpc", XML, "X-Request-Id: late-a\r\n", "<c>third</c>", 12);
    assert_int_equal(conn_send(&c2, raw, len), 0);
    free(raw);

    assert_int_equal(conn_read_resp(&c1, &r, false), 0);
    if (r.status != 200 || r.body_len != 13 || memcmp(r.body, "<b>second</b>", 13) != 0)
        fail_msg("the retry got %d \"%s\", not its own reply", r.status, r.body);
    assert_string_equal(resp_header(&r, "X-Request-Id"), "late-a");
    resp_free(&r);
    conn_close(&c1);
    assert_int_equal(conn_read_resp(&c2, &r, false), 0);
    if (r.status != 200 || r.body_len != 12 || memcmp(r.body, "<c>third</c>", 12) != 0)
        fail_msg("the second request with that id got %d \"%s\", not its own reply", r.status,
                 r.body);
    resp_free(&r);
    conn_close(&c2);
    long long late = (long long)metric(g_aux.port, "bridge_rpc_late_replies_total");
    if (late != 1)
        fail_msg("bridge_rpc_late_replies_total %lld, expected 1 (the first's reply)", late);

    int st = bridge_stop(&g_aux, scale_ms(20000));
    if (st != 0)
        fail_msg("bridge did not exit 0 on SIGTERM (0x%x)", st);
    if (log_count(&g_aux, "1 late rpc replies dropped") == 0)
        fail_msg("the late reply was not counted as dropped");
    result_row("rpc: a reply after its request's 504, then a retry with the same X-Request-Id",
               "the late reply dropped and counted (bridge_rpc_late_replies_total 1); the retry "
               "and a second request with that id waiting at once each got their own reply "
               "(200, no 409)");
    PASS();
}

/* Take the rpc request waiting in it.rpc (the test plays the worker);
 * harness_fail after 5 s. */
static void take_rpc_request(amqp_message_t *m)
{
    double t0 = now_ms();
    while (mq_get("it.rpc", m) != 1) {
        if (now_ms() - t0 > scale_ms(5000))
            fail_msg("no rpc request in it.rpc");
        sleep_ms(20);
    }
}

/* Reply to request M as a worker would, with PROPS (correlation_id is set
 * here) and BODY. */
static void send_reply(const amqp_message_t *m, amqp_basic_properties_t *props, const void *body,
                       size_t blen)
{
    props->_flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
    props->correlation_id = m->properties.correlation_id;
    amqp_bytes_t b = {blen, (void *)(uintptr_t)body};
    int rc = amqp_basic_publish(g_harness.mq, 1, amqp_empty_bytes, m->properties.reply_to, 0, 0,
                                props, b);
    if (rc != AMQP_STATUS_OK)
        fail_msg("reply publish: %s", amqp_error_string2(rc));
}

/* A reply whose content_type holds CR/LF (a header of the worker's making)
 * or a NUL: 502, no header from it, counted by reason. An empty one is
 * none: application/xml. */
static void test_rpc_bad_content_type(void **state)
{
    (void)state;
    echo_stop();
    mq_purge("it.rpc");
    static const char *const bad[] = {"text/xml\r\nX-Injected: yes", "text/xml\0junk", ""};
    static const size_t bad_len[] = {sizeof "text/xml\r\nX-Injected: yes" - 1,
                                     sizeof "text/xml\0junk" - 1, 0};
    const char *series = "bridge_rpc_bad_replies_total{reason=\"content_type\"}";
    long long before = (long long)metric(g_main.port, series);
    assert_true(before >= 0);
    for (int i = 0; i < 3; i++) {
        struct conn c;
        assert_int_equal(conn_open(&c, g_main.port), 0);
        size_t len;
        char *raw = fmt_request(&len, "POST", "/rpc", XML, NULL, DOC, strlen(DOC));
        assert_int_equal(conn_send(&c, raw, len), 0);
        free(raw);
        amqp_message_t m;
        take_rpc_request(&m);
        amqp_basic_properties_t props = {._flags = AMQP_BASIC_CONTENT_TYPE_FLAG};
        props.content_type = (amqp_bytes_t){bad_len[i], (void *)(uintptr_t)bad[i]};
        send_reply(&m, &props, "<r/>", 4);
        amqp_destroy_message(&m);
        struct resp r;
        assert_int_equal(conn_read_resp(&c, &r, false), 0);
        if (i < 2) {
            if (r.status != 502)
                fail_msg("content_type %d: %d, expected 502", i, r.status);
            if (resp_header(&r, "X-Injected") != NULL)
                fail_msg("the worker's content_type made a header");
            if (strstr(r.body, "content_type") == NULL)
                fail_msg("the 502 does not name the content_type: %s", r.body);
        } else {
            assert_int_equal(r.status, 200);
            assert_string_equal(resp_header(&r, "Content-Type"), "application/xml");
            assert_string_equal(r.body, "<r/>");
        }
        resp_free(&r);
        conn_close(&c);
    }
    long long after = (long long)metric(g_main.port, series);
    if (after != before + 2)
        fail_msg("%s went from %lld to %lld, expected +2", series, before, after);
    result_row("rpc reply with CR/LF or NUL in its content_type",
               "502 naming it, no header made of it, counted in "
               "bridge_rpc_bad_replies_total{reason=\"content_type\"} (2 of 2); an empty one "
               "answered as application/xml");
    PASS();
}

/* A bridge with confirm = no and an rpc route to a routing key no queue is
 * bound to. A bridge_config_fn; ARG unused. */
static char *noconfirm_config(int http_port, const void *arg)
{
    (void)arg;
    char *s = NULL;
    if (asprintf(&s,
                 "[http]\nlisten = 127.0.0.1:%d\nworkers = 1\n"
                 "[amqp]\nuri = amqp://guest:guest@127.0.0.1:%d/%%2f\nconfirm = no\n"
                 "[log]\nlevel = %s\n"
                 "[route nowhere]\npath = /rpc-nowhere\nmode = rpc\nrouting_key = it.nowhere\n"
                 "timeout = 5s\n",
                 http_port, g_harness.broker_port, g_harness.log_level) < 0)
        abort();
    return s;
}

/* confirm = no: an unroutable rpc request is answered 502 from its return
 * (matched by correlation id), not 504 once the route's timeout is over. */
static void test_rpc_unroutable_without_confirms(void **state)
{
    (void)state;
    bridge_start(&g_aux, "noconfirm", noconfirm_config, NULL);
    struct resp r;
    int rc = http_post(g_aux.port, "/rpc-nowhere", XML, "X-Request-Id: rpc-nowhere\r\n", DOC, &r);
    assert_resp(rc, &r, 502);
    double ms = r.ms;
    if (ms > scale_ms(2500)) /* the timeout is 5 s: a 502 from it would take that */
        fail_msg("502 after %.0f ms: not from the return", ms);
    assert_string_equal(resp_header(&r, "X-Request-Id"), "rpc-nowhere");
    resp_free(&r);
    assert_int_equal(bridge_stop(&g_aux, scale_ms(10000)), 0);
    result_row("rpc, confirm = no, unroutable request",
               "502 from the broker's return, matched by correlation id, in %.0f ms (route "
               "timeout 5 s: no 504)",
               ms);
    PASS();
}

/* x-http-status 1xx: informational, never a final response: 502 naming
 * it, counted as reason="status". */
static void test_rpc_informational_status(void **state)
{
    (void)state;
    mq_purge("it.rpc");
    static const char *const opts[] = {"-s", "101", NULL};
    echo_start("it.rpc", opts);
    const char *series = "bridge_rpc_bad_replies_total{reason=\"status\"}";
    long long before = (long long)metric(g_main.port, series);
    struct resp r;
    int rc = http_post(g_main.port, "/rpc", XML, NULL, DOC, &r);
    assert_resp(rc, &r, 502);
    if (strstr(r.body, "101") == NULL || strstr(r.body, "1xx") == NULL)
        fail_msg("the 502 does not name the informational status: %s", r.body);
    resp_free(&r);
    echo_stop();
    assert_int_equal((long long)metric(g_main.port, series), before + 1);
    PASS();
}

/* 200 requests in flight at once, each gets its own body back. */
static void test_rpc_concurrent(void **state)
{
    (void)state;
    enum { N = 200 };
    mq_purge("it.rpc");
    echo_start("it.rpc", NULL);
    static struct conn c[N];
    for (int i = 0; i < N; i++) {
        assert_int_equal(conn_open(&c[i], g_main.port), 0);
        conn_set_timeout(&c[i], scale_ms(10000));
        char body[64], extra[64];
        snprintf(body, sizeof body, "<n>%d-%d</n>", (int)getpid(), i);
        snprintf(extra, sizeof extra, "X-Request-Id: many-%d-%d\r\n", (int)getpid(), i);
        size_t len;
        char *raw = fmt_request(&len, "POST", "/rpc", XML, extra, body, strlen(body));
        assert_int_equal(conn_send(&c[i], raw, len), 0);
        free(raw);
    }
    int wrong = 0;
    for (int i = 0; i < N; i++) {
        struct resp r;
        char body[64];
        snprintf(body, sizeof body, "<n>%d-%d</n>", (int)getpid(), i);
        if (conn_read_resp(&c[i], &r, false) != 0)
            fail_msg("rpc request %d of %d: no answer", i, N);
        if (r.status != 200 || strcmp(r.body, body) != 0) {
            if (!wrong++)
                print_message("request %d: %d \"%s\", expected 200 \"%s\"\n", i, r.status, r.body,
                              body);
        }
        resp_free(&r);
        conn_close(&c[i]);
    }
    assert_int_equal(wrong, 0);
    PASS();
}

/* Clients that leave while their rpc request waits: the bridge forgets
 * them, drops their replies, and goes on serving. */
static void test_rpc_client_gone(void **state)
{
    (void)state;
    mq_purge("it.rpc");
    static const char *const slow[] = {"-d", "300", NULL};
    echo_start("it.rpc", slow);
    enum { N = 10 };
    struct conn c[N];
    for (int i = 0; i < N; i++) {
        assert_int_equal(conn_open(&c[i], g_main.port), 0);
        char extra[64];
        snprintf(extra, sizeof extra, "X-Request-Id: rpc-gone-%d\r\n", i);
        size_t len;
        char *raw = fmt_request(&len, "POST", "/rpc", XML, extra, DOC, strlen(DOC));
        assert_int_equal(conn_send(&c[i], raw, len), 0);
        free(raw);
    }
    /* The worker answers one each 300 ms: most still wait when they leave. */
    double v;
    if (!wait_metric(g_main.port, "bridge_inflight", N, 250, &v) && v < N / 2)
        fail_msg("bridge_inflight %.0f with %d rpc requests sent", v, N);
    double t0 = now_ms();
    for (int i = 0; i < N; i++) {
        if (i % 2)
            conn_abort(&c[i]);
        else
            conn_close(&c[i]);
    }
    /* Noticed long before the worker has replied to them all (N x 300 ms)
     * or the route's 5 s timeout. */
    if (!wait_metric(g_main.port, "bridge_inflight", 0, 1500, &v))
        fail_msg("bridge_inflight still %.0f %.0f ms after every rpc client hung up", v,
                 now_ms() - t0);
    /* The worker goes on replying to every one of them while nobody waits
     * any more: each reply is dropped. */
    sleep_ms(3000);
    expect_serving(&g_main);
    struct resp r;
    int rc = http_post(g_main.port, "/rpc", XML, NULL, DOC, &r);
    assert_resp(rc, &r, 200);
    assert_string_equal(r.body, DOC);
    resp_free(&r);
    PASS();
}

/* The broker stops while rpc requests wait: 503 at once, not 504 later. */
static void test_rpc_broker_stopped(void **state)
{
    (void)state;
    enum { N = 6 };
    mq_purge("it.rpc");
    static const char *const stuck[] = {"-d", "30000", "-p", "1", NULL};
    echo_start("it.rpc", stuck);
    struct conn c[N];
    for (int i = 0; i < N; i++) {
        assert_int_equal(conn_open(&c[i], g_main.port), 0);
        conn_set_timeout(&c[i], scale_ms(15000));
        size_t len;
        char *raw = fmt_request(&len, "POST", "/rpc-long", XML, NULL, DOC, strlen(DOC));
        assert_int_equal(conn_send(&c[i], raw, len), 0);
        free(raw);
    }
    sleep_ms(300);
    if (broker_stop() != 0)
        fail_msg("tests/broker.sh stop failed");
    double stopped = now_ms();
    for (int i = 0; i < N; i++) {
        struct resp r;
        if (conn_read_resp(&c[i], &r, false) != 0)
            fail_msg("rpc request %d: no answer after the broker stopped", i);
        if (r.status != 503)
            fail_msg("rpc request %d: %d after the broker stopped, expected 503", i, r.status);
        resp_free(&r);
        conn_close(&c[i]);
    }
    if (now_ms() - stopped > scale_ms(1000))
        fail_msg("answers came %.0f ms after the broker had stopped", now_ms() - stopped);
    PASS();
}

/* IT_ONLY=PATTERN runs only the tests whose names match (cmocka's filter). */
int main(void)
{
    const struct CMUnitTest tests[] = {
        SUITE_TEST(test_config_ok),
        SUITE_TEST(test_config_bad),
        SUITE_TEST(test_pong_keepalive),
        SUITE_TEST(test_pong_http10),
        SUITE_TEST(test_publish_mapping),
        SUITE_TEST(test_minimal_properties),
        SUITE_TEST(test_publish_generated_id),
        SUITE_TEST(test_publish_content_types),
        SUITE_TEST(test_publish_keepalive_chunked),
        SUITE_TEST(test_400_malformed),
        SUITE_TEST(test_400_doctype),
        SUITE_TEST(test_422_root),
        SUITE_TEST(test_422_schema),
        SUITE_TEST(test_400_framing),
        SUITE_TEST(test_415),
        SUITE_TEST(test_413),
        SUITE_TEST(test_404_405),
        SUITE_TEST(test_502_unroutable),
        SUITE_TEST(test_503_nack),
        SUITE_TEST(test_healthz),
        SUITE_TEST(test_queue_type),
        SUITE_TEST(test_workers_spread_over_uris),
        SUITE_TEST(test_quorum_nack_renews_channel),
        SUITE_TEST(test_results_matched_concurrently),
        SUITE_TEST(test_client_gone),
        SUITE_TEST(test_blocked),
        SUITE_TEST(test_sigterm_inflight),
        SUITE_TEST(test_rpc_reply),
        SUITE_TEST(test_rpc_timeout_no_worker),
        SUITE_TEST(test_rpc_late_reply),
        SUITE_TEST(test_rpc_bad_content_type),
        SUITE_TEST(test_rpc_unroutable_without_confirms),
        SUITE_TEST(test_rpc_informational_status),
        SUITE_TEST(test_rpc_concurrent),
        SUITE_TEST(test_rpc_client_gone),
        /* stops the broker: its teardown starts it again */
        SUITE_TEST(test_rpc_broker_stopped),
        /* stops the broker: last, and its teardown restarts it anyway */
        SUITE_TEST(test_broker_down_and_back),
    };
    return suite_run("ingest-bridge integration", &SUITE, tests, "IT_ONLY");
}
