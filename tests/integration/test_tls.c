/* test_tls.c - integration tests of TLS on both sides and of bearer auth:
 * the real bridge with an HTTPS listener and an amqps:// connection to the
 * private node's TLS listener (certificates made fresh for the run by
 * tests/tls-certs.sh, passed in IT_TLS_DIR), a wrong CA, a missing client
 * certificate, bad certificate and token files, and 401s. Run through
 * tests/integration/run.sh like test_bridge.c; helpers in tests/lib. */

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "harness_cmocka.h" /* <cmocka.h>, assert_resp... */

#define XML "application/xml"
static const char DOC[] = "<?xml version=\"1.0\"?>\n<order><id>7</id></order>\n";
#define TOKEN "it-token-0f1e2d3c"        /* in the global token file */
#define OTHER_TOKEN "it-token-ffff0000"  /* also in the global token file */
#define ROUTE_TOKEN "route-only-5a5a5a5" /* in the /audit route's own file */

static struct bridge g_tls;  /* HTTPS + amqps, shared */
static struct bridge g_auth; /* plain HTTP + tokens, shared */
static struct bridge g_aux;  /* a test's own instance */

static char g_ca[512];      /* the run's CA */
static char g_tokens[512];  /* global token file */
static char g_rtokens[512]; /* the audit route's token file */

/* What a config asks for; a bridge_config_fn's ARG. */
struct tls_cfg {
    bool https;             /* [http] tls_cert/tls_key: the run's server certificate */
    bool amqps;             /* amqps:// to the node's TLS listener, else plain amqp:// */
    const char *amqp_ca;    /* [amqp] tls_ca: a file of the run's TLS directory */
    bool client_cert;       /* [amqp] tls_cert/tls_key: the run's client certificate */
    bool no_verify;         /* [amqp] tls_verify = no */
    bool auth;              /* token files, metrics_auth */
    const char *http_limit; /* [http] timeout */
    const char *mtls;       /* [http] tls_client_auth (tls_client_ca: the run's CA), or NULL */
};

static const char *tls_file(const char *name)
{
    static char buf[4][512];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof buf[i], "%s/%s", g_harness.tls_dir, name);
    return buf[i];
}

static char *tls_config(int http_port, const void *arg)
{
    const struct tls_cfg *c = arg;
    char *text;
    size_t len;
    FILE *f = xmemstream(&text, &len);
    fprintf(f,
            "; written by tests/integration/test_tls.c\n"
            "[http]\n"
            "listen      = 127.0.0.1:%d\n"
            "workers     = 2\n"
            "timeout     = %s\n",
            http_port, c->http_limit ? c->http_limit : "10s");
    if (c->https)
        fprintf(f, "tls_cert    = %s\ntls_key     = %s\n", tls_file("server.pem"),
                tls_file("server-key.pem"));
    if (c->auth)
        fprintf(f, "auth_token_file = %s\nmetrics_auth = yes\n", g_tokens);
    if (c->mtls)
        fprintf(f, "tls_client_auth = %s\ntls_client_ca = %s\n", c->mtls, tls_file("ca.pem"));
    if (c->amqps)
        fprintf(f, "[amqp]\nuri = amqps://guest:guest@localhost:%d/%%2f\n",
                g_harness.broker_tls_port);
    else
        fprintf(f, "[amqp]\nuri = amqp://guest:guest@127.0.0.1:%d/%%2f\n", g_harness.broker_port);
    fprintf(f, "heartbeat = 5s\n");
    if (c->amqp_ca)
        fprintf(f, "tls_ca = %s\n", tls_file(c->amqp_ca));
    if (c->client_cert)
        fprintf(f, "tls_cert = %s\ntls_key = %s\n", tls_file("client.pem"),
                tls_file("client-key.pem"));
    if (c->no_verify)
        fprintf(f, "tls_verify = no\n");
    fprintf(f, "[log]\n"
               "level = debug\n"
               "[route ingest]\n"
               "path = /ingest\n"
               "routing_key = it.tls\n"
               "queue = it.tls\n"
               "[route wait]\n"
               "path = /wait\n"
               "mode = rpc\n"
               "routing_key = it.tls.nobody\n"
               "queue = it.tls.nobody\n"
               "timeout = 30s\n");
    if (c->mtls)
        fprintf(f, "[route a]\n"
                   "path = /a\n"
                   "routing_key = it.tls.a\n"
                   "queue = it.tls.a\n"
                   "client_subjects = ingest-bridge, someone-else\n"
                   "[route b]\n"
                   "path = /b\n"
                   "routing_key = it.tls.b\n"
                   "queue = it.tls.b\n"
                   "client_subjects = b.example\n");
    if (c->auth)
        fprintf(f,
                "[route audit]\n"
                "path = /audit\n"
                "routing_key = it.tls.audit\n"
                "queue = it.tls.audit\n"
                "auth_token_file = %s\n",
                g_rtokens);
    fclose(f);
    return text;
}

static const struct tls_cfg TLS_BOTH = {
    .https = true, .amqps = true, .amqp_ca = "ca.pem", .client_cert = true, .http_limit = "2s"};
static const struct tls_cfg AUTH_PLAIN = {.auth = true};

/* ------------------------------------------------------------------ */
/* fixtures                                                            */

/* The token files and the CA the HTTPS bridge's clients check it with. */
static int tls_prepare(void)
{
    if (!g_harness.tls_dir || g_harness.broker_tls_port <= 0) {
        fprintf(stderr, "IT_TLS_DIR / IT_BROKER_TLS_PORT missing: run me through run.sh\n");
        return -1;
    }
    snprintf(g_ca, sizeof g_ca, "%s", tls_file("ca.pem"));
    snprintf(g_tokens, sizeof g_tokens, "%s/tokens", g_harness.tmp);
    snprintf(g_rtokens, sizeof g_rtokens, "%s/audit-tokens", g_harness.tmp);
    write_file(g_tokens, "# clients of the integration tests\n" TOKEN "\n\n" OTHER_TOKEN "\n");
    write_file(g_rtokens, ROUTE_TOKEN "\n");
    g_tls.tls_ca = g_ca;
    return 0;
}

static const struct suite SUITE = {
    .name = "tls",
    .shared = {{&g_tls, "tls", tls_config, &TLS_BOTH}, {&g_auth, "auth", tls_config, &AUTH_PLAIN}},
    .stop_ms = 20000,
    .aux = &g_aux,
    .prepare = tls_prepare,
};

/* A POST over HTTPS to B. */
static int https_post(const struct bridge *b, const char *target, const char *extra, struct resp *r)
{
    return https_req(b->port, b->tls_ca, "POST", target, XML, extra, DOC, strlen(DOC), r);
}

/* The message with id ID is in queue Q, body DOC. */
static void expect_in_queue(const char *q, const char *id)
{
    amqp_message_t m;
    if (mq_get(q, &m) != 1)
        fail_msg("queue %s is empty, expected message %s", q, id);
    if (!bytes_eq(m.properties.message_id, id))
        fail_msg("queue %s: message %.*s, expected %s", q, (int)m.properties.message_id.len,
                 (const char *)m.properties.message_id.bytes, id);
    if (m.body.len != strlen(DOC) || memcmp(m.body.bytes, DOC, m.body.len) != 0)
        fail_msg("queue %s: the body is not the request's", q);
    amqp_destroy_message(&m);
}

/* ------------------------------------------------------------------ */
/* HTTPS in, amqps out                                                 */

static void test_https_publish_over_amqps(void **state)
{
    (void)state;
    mq_purge("it.tls");
    char *log = slurp(g_tls.log, g_tls.start);
    assert_contains(log, "listening on https://127.0.0.1:");
    assert_contains(log, "connected to amqps://guest@localhost:");
    free(log);

    struct resp r;
    int rc = https_req(g_tls.port, g_ca, "GET", "/pong", NULL, NULL, NULL, 0, &r);
    assert_resp(rc, &r, 200);
    assert_string_equal(r.body, "Pong!");
    resp_free(&r);

    rc = https_post(&g_tls, "/ingest", "X-Request-Id: tls-one\r\n", &r);
    assert_resp(rc, &r, 202);
    assert_string_equal(resp_header(&r, "X-Message-Id"), "tls-one");
    resp_free(&r);
    expect_in_queue("it.tls", "tls-one");

    /* Keep-alive over one TLS connection: pong, publish, healthz. */
    struct conn c;
    assert_int_equal(conn_open_tls(&c, g_tls.port, g_ca, NULL, NULL), 0);
    size_t len;
    char *raw = fmt_request(&len, "GET", "/pong", NULL, NULL, NULL, 0);
    rc = exchange(&c, raw, len, &r, false);
    free(raw);
    assert_resp(rc, &r, 200);
    resp_free(&r);
    raw = fmt_request(&len, "POST", "/ingest", XML, "X-Request-Id: tls-two\r\n", DOC, strlen(DOC));
    rc = exchange(&c, raw, len, &r, false);
    free(raw);
    assert_resp(rc, &r, 202);
    resp_free(&r);
    raw = fmt_request(&len, "GET", "/healthz", NULL, NULL, NULL, 0);
    rc = exchange(&c, raw, len, &r, false);
    free(raw);
    assert_resp(rc, &r, 200);
    resp_free(&r);
    conn_close(&c);
    expect_in_queue("it.tls", "tls-two");

    /* A client certificate is nothing the listener asks for, but it does
     * no harm either. */
    assert_int_equal(
        conn_open_tls(&c, g_tls.port, g_ca, tls_file("client.pem"), tls_file("client-key.pem")), 0);
    raw = fmt_request(&len, "GET", "/pong", NULL, NULL, NULL, 0);
    rc = exchange(&c, raw, len, &r, false);
    free(raw);
    assert_resp(rc, &r, 200);
    resp_free(&r);
    conn_close(&c);
    PASS();
}

static void test_https_refuses_plain_and_wrong_ca(void **state)
{
    (void)state;
    /* Plain HTTP on the HTTPS port: no HTTP answer, the connection ends. */
    struct conn c;
    assert_int_equal(conn_open(&c, g_tls.port), 0);
    const char plain[] = "GET /pong HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(conn_send(&c, plain, sizeof plain - 1), 0);
    int closed = conn_wait_closed(&c, scale_ms(3000));
    if (closed == 2 && strncmp(c.buf, "HTTP/", 5) == 0)
        fail_msg("plain HTTP answered on the HTTPS port: %.80s", c.buf);
    if (closed == 2)
        closed = conn_wait_closed(&c, scale_ms(3000)); /* a TLS alert, then the close */
    if (closed == 0)
        fail_msg("the connection stayed open after a plain HTTP request");
    conn_close(&c);

    /* A client that trusts another CA refuses the bridge's certificate. */
    assert_int_equal(conn_open_tls(&c, g_tls.port, tls_file("other-ca.pem"), NULL, NULL), -1);

    /* The bridge serves on. */
    struct resp r;
    int rc = https_req(g_tls.port, g_ca, "GET", "/pong", NULL, NULL, NULL, 0, &r);
    assert_resp(rc, &r, 200);
    resp_free(&r);
    PASS();
}

/* The request deadline ([http] timeout 2s) covers the handshake: a client
 * that connects and says nothing, or that shakes hands and sends nothing,
 * is cut off after it. */
static void test_https_deadline(void **state)
{
    (void)state;
    struct conn raw, idle;
    assert_int_equal(conn_open(&raw, g_tls.port), 0);
    assert_int_equal(conn_open_tls(&idle, g_tls.port, g_ca, NULL, NULL), 0);
    double t0 = now_ms();
    conn_set_timeout(&raw, scale_ms(6000));
    int a = conn_wait_closed(&raw, scale_ms(6000));
    int b = conn_wait_closed(&idle, scale_ms(6000));
    double took = now_ms() - t0;
    if (a != 1)
        fail_msg("a connection without a handshake was not closed (%d)", a);
    if (b != 1)
        fail_msg("an idle TLS connection was not closed (%d)", b);
    if (took < 1500 || took > scale_ms(5000))
        fail_msg("closed after %.0f ms, expected about 2000", took);
    conn_close(&raw);
    conn_close(&idle);
    PASS();
}

/* A client that hangs up over TLS while its request waits is noticed at
 * once (the hang-up watch on the descriptor works under the TLS
 * bufferevent too), with a FIN and with a reset. */
static void test_https_client_gone(void **state)
{
    (void)state;
    for (int rst = 0; rst < 2; rst++) {
        struct conn c;
        assert_int_equal(conn_open_tls(&c, g_tls.port, g_ca, NULL, NULL), 0);
        char extra[64], id[32];
        snprintf(id, sizeof id, "tls-gone-%d", rst);
        snprintf(extra, sizeof extra, "X-Request-Id: %s\r\n", id);
        size_t len;
        char *raw = fmt_request(&len, "POST", "/wait", XML, extra, DOC, strlen(DOC));
        assert_int_equal(conn_send(&c, raw, len), 0);
        free(raw);
        sleep_ms(300); /* published, waiting for a reply nobody sends */
        if (rst)
            conn_abort(&c);
        else
            conn_close(&c);
        char want[96];
        snprintf(want, sizeof want, "%s: client left before the answer", id);
        double end = now_ms() + scale_ms(1500);
        bool seen = false;
        while (!seen && now_ms() < end) {
            seen = log_count(&g_tls, want) > 0;
            if (!seen)
                sleep_ms(50);
        }
        if (!seen)
            fail_msg("the bridge did not notice that the client of %s left", id);
    }
    mq_purge("it.tls.nobody");
    struct resp r;
    int rc = https_req(g_tls.port, g_ca, "GET", "/pong", NULL, NULL, NULL, 0, &r);
    assert_resp(rc, &r, 200);
    resp_free(&r);
    PASS();
}

/* Start a bridge that will not get healthy; wait for /healthz 503 and
 * return its body (malloc'd). */
static char *start_unhealthy(struct bridge *b, const char *name, const struct tls_cfg *cfg)
{
    bridge_spawn(b, name, tls_config, cfg);
    /* Up to two connect attempts: the first failure is the reason. */
    double end = now_ms() + scale_ms(20000);
    while (now_ms() < end) {
        int st;
        if (!bridge_alive(b, &st)) {
            char d[64];
            fail_msg("bridge %s died: %s", name, describe_status(st, d, sizeof d));
        }
        struct resp r;
        if (bridge_get(b, "/healthz", &r) == 0 && r.status == 503 &&
            strstr(r.body, "not connected yet") == NULL && strstr(r.body, "connecting") == NULL) {
            char *body = xstrdup(r.body);
            resp_free(&r);
            return body;
        }
        if (r.status == 200)
            fail_msg("bridge %s: /healthz 200, expected the broker to refuse", name);
        resp_free(&r);
        sleep_ms(100);
    }
    fail_msg("bridge %s: no /healthz 503 with a reason in time", name);
    return NULL;
}

static void test_amqps_wrong_ca(void **state)
{
    (void)state;
    const struct tls_cfg cfg = {.amqps = true, .amqp_ca = "other-ca.pem", .client_cert = true};
    char *body = start_unhealthy(&g_aux, "wrong-ca", &cfg);
    assert_contains(body, "certificate verify failed");
    free(body);
    /* Publishes get 503 at once, pong works, and it stops cleanly. */
    struct resp r;
    int rc = http_post(g_aux.port, "/ingest", XML, NULL, DOC, &r);
    assert_resp(rc, &r, 503);
    resp_free(&r);
    rc = http_get(g_aux.port, "/pong", &r);
    assert_resp(rc, &r, 200);
    resp_free(&r);
    assert_int_equal(bridge_stop_clean(&g_aux, "wrong-ca", 20000), 0);

    /* The same CA with tls_verify = no: connected (what the check refused
     * above was the certificate, nothing else). */
    const struct tls_cfg blind = {
        .amqps = true, .amqp_ca = "other-ca.pem", .client_cert = true, .no_verify = true};
    bridge_start(&g_aux, "no-verify", tls_config, &blind);
    mq_purge("it.tls");
    rc = http_post(g_aux.port, "/ingest", XML, "X-Request-Id: tls-blind\r\n", DOC, &r);
    assert_resp(rc, &r, 202);
    resp_free(&r);
    expect_in_queue("it.tls", "tls-blind");
    assert_int_equal(bridge_stop_clean(&g_aux, "no-verify", 20000), 0);
    PASS();
}

/* The node asks for a client certificate: without one the bridge is
 * refused, says so, and goes on. */
static void test_amqps_without_client_cert(void **state)
{
    (void)state;
    const struct tls_cfg cfg = {.amqps = true, .amqp_ca = "ca.pem"};
    char *body = start_unhealthy(&g_aux, "no-client-cert", &cfg);
    assert_contains(body, "broker down: login: ");
    assert_contains(body, "SSL");
    free(body);
    assert_int_equal(bridge_stop_clean(&g_aux, "no-client-cert", 20000), 0);
    PASS();
}

/* Certificate, key and token files that are not what they should be stop
 * start-up and -t, naming the file. */
static void test_bad_files(void **state)
{
    (void)state;
    char notpem[512], empty[512];
    snprintf(notpem, sizeof notpem, "%s/not-a-cert.pem", g_harness.tmp);
    snprintf(empty, sizeof empty, "%s/empty-tokens", g_harness.tmp);
    write_file(notpem, "hello\n");
    write_file(empty, "# nobody\n\n");
    struct {
        const char *http; /* [http] lines */
        const char *want1, *want2;
    } cases[] = {
        {NULL, "tls_cert", notpem},
        {NULL, "does not belong to tls_cert", NULL},
        {NULL, "auth_token_file", "no token in the file"},
    };
    char lines[3][1600];
    snprintf(lines[0], sizeof lines[0], "tls_cert = %s\ntls_key = %s\n", notpem,
             tls_file("server-key.pem"));
    snprintf(lines[1], sizeof lines[1], "tls_cert = %s\ntls_key = %s\n", tls_file("server.pem"),
             tls_file("client-key.pem"));
    snprintf(lines[2], sizeof lines[2], "auth_token_file = %s\n", empty);
    for (int i = 0; i < 3; i++) {
        cases[i].http = lines[i];
        char path[600], text[8192];
        snprintf(path, sizeof path, "%s/bad-%d.ini", g_harness.tmp, i);
        snprintf(text, sizeof text,
                 "[http]\nlisten = 127.0.0.1:%d\n%s[amqp]\nuri = amqp://127.0.0.1:%d/%%2f\n"
                 "[route a]\npath = /a\nrouting_key = a\n",
                 free_port(), cases[i].http, g_harness.broker_port);
        write_file(path, text);
        for (int check = 0; check < 2; check++) {
            char **argv = bridge_argv((const char *[]){"-c", path, check ? "-t" : NULL, NULL});
            char *out;
            int st = run_capture(argv, NULL, &out);
            free(argv);
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 1)
                fail_msg("case %d%s: status 0x%x, expected exit 1; output:\n%s", i,
                         check ? " (-t)" : "", st, out);
            assert_contains(out, cases[i].want1);
            if (cases[i].want2)
                assert_contains(out, cases[i].want2);
            free(out);
        }
    }
    PASS();
}

/* ------------------------------------------------------------------ */
/* bearer tokens                                                       */

static void expect_401(int rc, struct resp *r, bool invalid)
{
    assert_resp(rc, r, 401);
    const char *w = resp_header(r, "WWW-Authenticate");
    if (!w || strncmp(w, "Bearer", 6) != 0)
        fail_msg("401 without WWW-Authenticate: Bearer (%s)", w ? w : "none");
    if (invalid != (strstr(w, "error=\"invalid_token\"") != NULL))
        fail_msg("WWW-Authenticate: %s; expected %s error=\"invalid_token\"", w,
                 invalid ? "with" : "without");
    assert_has_header(r, "X-Request-Id");
    resp_free(r);
}

static void test_auth(void **state)
{
    (void)state;
    mq_purge("it.tls");
    mq_purge("it.tls.audit");
    int port = g_auth.port;
    struct resp r;
    /* No token, another scheme, a wrong one, two headers. */
    expect_401(http_post(port, "/ingest", XML, "X-Request-Id: a-none\r\n", DOC, &r), &r, false);
    expect_401(http_post(port, "/ingest", XML, "Authorization: Basic dXNlcjpwdw==\r\n", DOC, &r),
               &r, false);
    expect_401(http_post(port, "/ingest", XML, "Authorization: Bearer wrong-token\r\n", DOC, &r),
               &r, true);
    expect_401(http_post(port, "/ingest", XML, "Authorization: Bearer " TOKEN "x\r\n", DOC, &r), &r,
               true);
    expect_401(http_post(port, "/ingest", XML,
                         "Authorization: Bearer " TOKEN "\r\nAuthorization: Bearer " TOKEN "\r\n",
                         DOC, &r),
               &r, true);
    /* Before anything looks at the request: a bad body, a bad method and a
     * bad type get 401 too, not 400/405/415. */
    expect_401(http_post(port, "/ingest", XML, NULL, "<not xml", &r), &r, false);
    expect_401(http_get(port, "/ingest", &r), &r, false);
    expect_401(http_post(port, "/ingest", "text/plain", NULL, "x", &r), &r, false);

    /* The right tokens: 202 and in the queue. */
    int rc = http_post(port, "/ingest", XML,
                       "X-Request-Id: a-ok\r\nAuthorization: Bearer " TOKEN "\r\n", DOC, &r);
    assert_resp(rc, &r, 202);
    resp_free(&r);
    expect_in_queue("it.tls", "a-ok");
    rc = http_post(port, "/ingest", XML,
                   "X-Request-Id: a-ok2\r\nauthorization: bearer   " OTHER_TOKEN "\r\n", DOC, &r);
    assert_resp(rc, &r, 202);
    resp_free(&r);
    expect_in_queue("it.tls", "a-ok2");
    /* With a valid token the usual checks apply again. */
    rc = http_post(port, "/ingest", XML, "Authorization: Bearer " TOKEN "\r\n", "<not xml", &r);
    assert_resp(rc, &r, 400);
    resp_free(&r);

    /* A route with a file of its own takes its tokens only. */
    expect_401(http_post(port, "/audit", XML, "Authorization: Bearer " TOKEN "\r\n", DOC, &r), &r,
               true);
    rc = http_post(port, "/audit", XML,
                   "X-Request-Id: a-audit\r\nAuthorization: Bearer " ROUTE_TOKEN "\r\n", DOC, &r);
    assert_resp(rc, &r, 202);
    resp_free(&r);
    expect_in_queue("it.tls.audit", "a-audit");

    /* pong and /healthz stay open; /metrics asks (metrics_auth = yes). */
    rc = http_get(port, "/pong", &r);
    assert_resp(rc, &r, 200);
    resp_free(&r);
    rc = http_get(port, "/healthz", &r);
    assert_resp(rc, &r, 200);
    resp_free(&r);
    expect_401(http_get(port, "/metrics", &r), &r, false);
    expect_401(
        http_req(port, "GET", "/metrics", NULL, "Authorization: Bearer nope\r\n", NULL, 0, &r), &r,
        true);
    rc =
        http_req(port, "GET", "/metrics", NULL, "Authorization: Bearer " TOKEN "\r\n", NULL, 0, &r);
    assert_resp(rc, &r, 200);
    assert_contains(r.body, "bridge_http_requests_total{route=\"metrics\",code=\"401\"} 2");
    resp_free(&r);
    /* The tokens never reach a log line. */
    char *log = slurp(g_auth.log, g_auth.start);
    if (strstr(log, TOKEN) || strstr(log, ROUTE_TOKEN) || strstr(log, "wrong-token"))
        fail_msg("a token is in the bridge's log");
    free(log);
    PASS();
}

/* The shared TLS bridge also serves the auth rules over HTTPS: a route
 * without tokens there stays open (no auth configured costs nothing). */
static void test_no_auth_configured(void **state)
{
    (void)state;
    mq_purge("it.tls");
    struct resp r;
    int rc = https_post(&g_tls, "/ingest", "Authorization: Bearer anything\r\n", &r);
    assert_resp(rc, &r, 202);
    resp_free(&r);
    rc = https_req(g_tls.port, g_ca, "GET", "/metrics", NULL, NULL, NULL, 0, &r);
    assert_resp(rc, &r, 200);
    assert_contains(r.body, "bridge_http_requests_total");
    resp_free(&r);
    mq_purge("it.tls");
    PASS();
}

/* Over HTTPS too, a request its headers refuse is answered before its body:
 * no token with `Expect: 100-continue` gets 401, never 100 Continue, and
 * one with a token gets 100 Continue, then 202. */
static void test_https_refused_before_body(void **state)
{
    (void)state;
    static const struct tls_cfg https_auth = {.https = true, .auth = true};
    g_aux.tls_ca = g_ca;
    bridge_start(&g_aux, "https-auth", tls_config, &https_auth);
    mq_purge("it.tls");
    for (int pass = 0; pass < 2; pass++) {
        char head[400];
        snprintf(head, sizeof head,
                 "POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/xml\r\n%s"
                 "Content-Length: %zu\r\nExpect: 100-continue\r\n\r\n",
                 pass == 0 ? "" : "Authorization: Bearer " TOKEN "\r\n", strlen(DOC));
        struct conn c;
        assert_int_equal(conn_open_tls(&c, g_aux.port, g_ca, NULL, NULL), 0);
        assert_int_equal(conn_send(&c, head, strlen(head)), 0);
        size_t ll;
        char *l = conn_line(&c, &ll);
        const char *want = pass == 0 ? "HTTP/1.1 401 " : "HTTP/1.1 100 ";
        if (l == NULL || ll < strlen(want) || strncmp(l, want, strlen(want)) != 0)
            fail_msg("%s: first line \"%.*s\", expected %s", pass == 0 ? "no token" : "a token",
                     l != NULL ? (int)ll : 6, l != NULL ? l : "(none)", want);
        if (pass == 1) {
            conn_consume(&c, ll + 2);
            assert_non_null(conn_line(&c, &ll)); /* the 100's blank line */
            conn_consume(&c, ll + 2);
            assert_int_equal(conn_send(&c, DOC, strlen(DOC)), 0);
            struct resp r;
            assert_int_equal(conn_read_resp(&c, &r, false), 0);
            assert_int_equal(r.status, 202);
            resp_free(&r);
        }
        conn_close(&c);
    }
    mq_purge("it.tls");
    assert_int_equal(bridge_stop(&g_aux, scale_ms(10000)), 0);
    PASS();
}

/* ------------------------------------------------------------------ */
/* client certificates (mTLS)                                          */

/* POST DOC to TARGET on B over TLS with the client certificate NAME (a
 * file of the run's, NULL for none): the status, -1 when the handshake or
 * the exchange failed. */
static int mtls_post(const struct bridge *b, const char *name, const char *target, const char *id)
{
    char cert[512] = "", key[512] = "";
    if (name != NULL) {
        snprintf(cert, sizeof cert, "%s/%s.pem", g_harness.tls_dir, name);
        snprintf(key, sizeof key, "%s/%s-key.pem", g_harness.tls_dir, name);
    }
    struct conn c;
    if (conn_open_tls(&c, b->port, g_ca, name ? cert : NULL, name ? key : NULL) != 0)
        return -1;
    char extra[100];
    snprintf(extra, sizeof extra, "X-Request-Id: %s\r\n", id);
    size_t len;
    char *raw = fmt_request(&len, "POST", target, XML, extra, DOC, strlen(DOC));
    struct resp r;
    int rc = exchange(&c, raw, len, &r, false);
    free(raw);
    conn_close(&c);
    if (rc != 0)
        return -1;
    int st = r.status;
    resp_free(&r);
    return st;
}

/* The tls-client-subject header of the message ID in Q ("" if none). */
static void subject_in_queue(const char *q, const char *id, char *out, size_t len)
{
    amqp_message_t m;
    if (mq_get(q, &m) != 1 || !bytes_eq(m.properties.message_id, id))
        fail_msg("message %s not first in %s", id, q);
    char buf[300];
    const char *v = tbl_get(&m.properties.headers, "tls-client-subject", buf, sizeof buf);
    snprintf(out, len, "%s", v != NULL ? v : "");
    amqp_destroy_message(&m);
}

/* Optional client certificates: a route without client_subjects takes
 * anyone (with the verified subject as a header), one with them only the
 * certificates that name one (CN or SAN): 403 otherwise; a certificate of
 * another CA fails the handshake. */
static void test_client_certificates_optional(void **state)
{
    (void)state;
    static const struct tls_cfg optional = {.https = true, .mtls = "optional"};
    g_aux.tls_ca = g_ca;
    bridge_start(&g_aux, "mtls-optional", tls_config, &optional);
    mq_purge("it.tls");
    mq_purge("it.tls.a");
    mq_purge("it.tls.b");
    char subject[300];
    assert_int_equal(mtls_post(&g_aux, NULL, "/ingest", "m-open-1"), 202);
    subject_in_queue("it.tls", "m-open-1", subject, sizeof subject);
    assert_string_equal(subject, "");
    assert_int_equal(mtls_post(&g_aux, "client", "/ingest", "m-open-2"), 202);
    subject_in_queue("it.tls", "m-open-2", subject, sizeof subject);
    assert_string_equal(subject, "CN=ingest-bridge");

    /* /a allows CN ingest-bridge; /b allows the SAN b.example. */
    assert_int_equal(mtls_post(&g_aux, "client", "/a", "m-a-1"), 202);
    subject_in_queue("it.tls.a", "m-a-1", subject, sizeof subject);
    assert_string_equal(subject, "CN=ingest-bridge");
    assert_int_equal(mtls_post(&g_aux, "client-b", "/a", "m-a-2"), 403);
    assert_int_equal(mtls_post(&g_aux, NULL, "/a", "m-a-3"), 403);
    assert_int_equal(mtls_post(&g_aux, "client-b", "/b", "m-b-1"), 202);
    subject_in_queue("it.tls.b", "m-b-1", subject, sizeof subject);
    assert_string_equal(subject, "CN=client-b");
    assert_int_equal(mtls_post(&g_aux, "client", "/b", "m-b-2"), 403);
    /* The right CN from the wrong CA: no handshake at all. */
    assert_int_equal(mtls_post(&g_aux, "other-client", "/a", "m-a-4"), -1);
    /* A client's own header of that name never reaches a message. */
    struct resp r;
    int rc = https_req(g_aux.port, g_ca, "POST", "/ingest", XML,
                       "X-Request-Id: m-spoof\r\ntls-client-subject: CN=admin\r\n", DOC,
                       strlen(DOC), &r);
    assert_resp(rc, &r, 202);
    resp_free(&r);
    subject_in_queue("it.tls", "m-spoof", subject, sizeof subject);
    assert_string_equal(subject, "");
    amqp_message_t m;
    assert_int_equal(mq_get("it.tls.a", &m), 0);
    assert_int_equal(mq_get("it.tls.b", &m), 0);
    assert_int_equal(bridge_stop(&g_aux, scale_ms(10000)), 0);
    PASS();
}

/* Required: no handshake without a certificate of the CA. */
static void test_client_certificates_required(void **state)
{
    (void)state;
    static const struct tls_cfg required = {.https = true, .mtls = "required"};
    static char cert[512], key[512]; /* g_aux keeps pointers to them */
    snprintf(cert, sizeof cert, "%s/client.pem", g_harness.tls_dir);
    snprintf(key, sizeof key, "%s/client-key.pem", g_harness.tls_dir);
    g_aux.tls_ca = g_ca;
    g_aux.tls_cert = cert;
    g_aux.tls_key = key;
    bridge_start(&g_aux, "mtls-required", tls_config, &required);
    mq_purge("it.tls");
    assert_int_equal(mtls_post(&g_aux, NULL, "/ingest", "m-req-1"), -1);
    assert_int_equal(mtls_post(&g_aux, "other-client", "/ingest", "m-req-2"), -1);
    assert_int_equal(mtls_post(&g_aux, "client-b", "/ingest", "m-req-3"), 202);
    char subject[300];
    subject_in_queue("it.tls", "m-req-3", subject, sizeof subject);
    assert_string_equal(subject, "CN=client-b");
    assert_int_equal(bridge_stop(&g_aux, scale_ms(10000)), 0);
    g_aux.tls_cert = g_aux.tls_key = NULL;
    PASS();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        SUITE_TEST(test_https_publish_over_amqps),
        SUITE_TEST(test_https_refuses_plain_and_wrong_ca),
        SUITE_TEST(test_https_deadline),
        SUITE_TEST(test_https_client_gone),
        SUITE_TEST(test_amqps_wrong_ca),
        SUITE_TEST(test_amqps_without_client_cert),
        SUITE_TEST(test_bad_files),
        SUITE_TEST(test_auth),
        SUITE_TEST(test_no_auth_configured),
        SUITE_TEST(test_https_refused_before_body),
        SUITE_TEST(test_client_certificates_optional),
        SUITE_TEST(test_client_certificates_required),
    };
    return suite_run("ingest-bridge TLS and auth", &SUITE, tests, NULL);
}
