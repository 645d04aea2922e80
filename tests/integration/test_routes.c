/* test_routes.c - routes that fit real topologies (issue 15), against the
 * real broker: routing keys and exchanges from the request's path and
 * headers on topic exchanges with bindings, what a client may not route
 * on, message properties per route (priority, expiration, constant
 * headers, content_type), and W3C trace context on publish and rpc routes.
 * Run through tests/integration/run.sh like test_bridge.c. */
#include <amqp.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <zlib.h>

#include "harness.h"
#include "harness_cmocka.h" /* <cmocka.h>, assert_resp... */

#define XML "application/xml"
static const char DOC[] = "<?xml version=\"1.0\"?>\n<order><id>1</id></order>\n";
#define TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static struct bridge g_main;
static struct bridge g_aux; /* a test's own bridge */
static char g_tokens[600];  /* the pertoken route's token file */

/* The routes under test. Exchanges and the queues bound to them are
 * declared by the suite (prepare) before the bridge starts: the bridge
 * checks the templated exchange's names passively, and binds its own
 * queues only. */
static char *routes_config(int http_port, const void *arg)
{
    (void)arg;
    char *text;
    size_t len;
    FILE *f = xmemstream(&text, &len);
    fprintf(f,
            "; written by tests/integration/test_routes.c\n"
            "[http]\n"
            "listen      = 127.0.0.1:%d\n"
            "workers     = 2\n"
            "timeout     = 10s\n"
            "max_body    = 2MiB\n"
            "[amqp]\n"
            "uri         = amqp://guest:guest@127.0.0.1:%d/%%2f\n"
            "heartbeat   = 5s\n"
            "[log]\n"
            "level       = %s\n"
            "access_log  = yes\n"
            "\n"
            "; the routing key from the path; the queue bound with orders.*\n"
            "[route events]\n"
            "path        = /events/{type}\n"
            "exchange    = it.routes.topic\n"
            "routing_key = orders.{type}\n"
            "queue       = it.routes.events\n"
            "priority    = {header:X-Priority}\n"
            "priority_max = 5\n"
            "\n"
            "; an exact path beside the pattern wins\n"
            "[route special]\n"
            "path        = /events/special\n"
            "routing_key = it.routes.special\n"
            "queue       = it.routes.special\n"
            "\n"
            "; the exchange from the path, the routing key from a header\n"
            "[route audit]\n"
            "path        = /t/{tenant}/audit\n"
            "exchange    = {tenant}.it-audit\n"
            "exchanges   = acme.it-audit, globex.it-audit\n"
            "routing_key = audit.{header:X-Kind}\n"
            "\n"
            "[route props]\n"
            "path        = /props\n"
            "routing_key = it.routes.props\n"
            "queue       = it.routes.props\n"
            "priority    = 3\n"
            "expiration  = 90s\n"
            "headers     = source=upstream-a, x-env=test\n"
            "content_type = application/vnd.order+xml\n"
            "\n"
            "[route pass]\n"
            "path        = /pass\n"
            "routing_key = it.routes.pass\n"
            "queue       = it.routes.pass\n"
            "trace       = pass\n"
            "\n"
            "[route rpc]\n"
            "path        = /rpc\n"
            "mode        = rpc\n"
            "routing_key = it.routes.rpc\n"
            "queue       = it.routes.rpc\n"
            "timeout     = 5s\n"
            "\n"
            "; 3. queue arguments: a TTL and a dead-letter exchange\n"
            "[route ttl]\n"
            "path        = /ttl\n"
            "routing_key = it.routes.ttl\n"
            "queue       = it.routes.ttl\n"
            "message_ttl = 300ms\n"
            "dead_letter_exchange = it.routes.dlx\n"
            "dead_letter_routing_key = dead\n"
            "\n"
            "; the message's own expiration, dead-lettered the same way\n"
            "[route expire]\n"
            "path        = /expire\n"
            "routing_key = it.routes.exp\n"
            "queue       = it.routes.exp\n"
            "expiration  = 200ms\n"
            "dead_letter_exchange = it.routes.dlx\n"
            "dead_letter_routing_key = dead\n"
            "\n"
            "; one message, then the broker refuses (nack: 503)\n"
            "[route small]\n"
            "path        = /small\n"
            "routing_key = it.routes.small\n"
            "queue       = it.routes.small\n"
            "max_length  = 1\n"
            "overflow    = reject-publish\n"
            "\n"
            "; 5. compressed bodies: inflated, checked, published inflated\n"
            "[route gz]\n"
            "path        = /gz\n"
            "routing_key = it.routes.gz\n"
            "queue       = it.routes.gz\n"
            "encodings   = gzip, deflate\n"
            "\n"
            "; ... or published as sent, with content_encoding\n"
            "[route gzkeep]\n"
            "path        = /gzkeep\n"
            "routing_key = it.routes.gzkeep\n"
            "queue       = it.routes.gzkeep\n"
            "encodings   = gzip\n"
            "keep_encoding = yes\n"
            "\n"
            "; 7. rate limits: 3 at once, then 1 an hour (no refill in a test)\n"
            "[route limited]\n"
            "path        = /limited\n"
            "routing_key = it.routes.limited\n"
            "queue       = it.routes.limited\n"
            "rate        = 1/h\n"
            "burst       = 3\n"
            "rate_by     = client\n"
            "\n"
            "; one token an hour per bearer token, however it is spelt\n"
            "[route pertoken]\n"
            "path        = /pertoken\n"
            "routing_key = it.routes.limited\n"
            "auth_token_file = %s\n"
            "rate        = 1/h\n"
            "burst       = 1\n"
            "rate_by     = token\n"
            "\n"
            "; issue 16: a retried id within 3 s is answered, not published again\n"
            "[route once]\n"
            "path        = /once\n"
            "routing_key = it.routes.once\n"
            "queue       = it.routes.once\n"
            "dedupe      = 3s\n",
            http_port, g_harness.broker_port, g_harness.log_level, g_tokens);
    fclose(f);
    return text;
}

static bool mq_call(amqp_rpc_reply_t r, const char *what)
{
    return mq_ok(r, what);
}

/* A durable topic exchange NAME. */
static bool declare_topic(const char *name)
{
    amqp_exchange_declare(g_harness.mq, 1, amqp_cstring_bytes(name), amqp_cstring_bytes("topic"), 0,
                          1, 0, 0, amqp_empty_table);
    return mq_call(amqp_get_rpc_reply(g_harness.mq), name);
}

/* Queue Q, bound to exchange EX with KEY. */
static bool declare_bound(const char *q, const char *ex, const char *key)
{
    if (!mq_declare(q, amqp_empty_table))
        return false;
    amqp_queue_bind(g_harness.mq, 1, amqp_cstring_bytes(q), amqp_cstring_bytes(ex),
                    amqp_cstring_bytes(key), amqp_empty_table);
    return mq_call(amqp_get_rpc_reply(g_harness.mq), q);
}

static int prepare(void)
{
    snprintf(g_tokens, sizeof g_tokens, "%s/tokens", g_harness.tmp);
    write_file(g_tokens, "tok-a-1234\ntok-b-5678\n");
    if (!mq_connect() || !declare_topic("it.routes.topic") || !declare_topic("acme.it-audit") ||
        !declare_topic("globex.it-audit") ||
        !declare_bound("it.routes.paid", "it.routes.topic", "orders.paid") ||
        !declare_bound("it.routes.shipped", "it.routes.topic", "orders.shipped") ||
        !declare_bound("it.routes.acme", "acme.it-audit", "audit.login") ||
        !declare_bound("it.routes.globex", "globex.it-audit", "audit.login"))
        return -1;
    amqp_exchange_declare(g_harness.mq, 1, amqp_cstring_bytes("it.routes.dlx"),
                          amqp_cstring_bytes("direct"), 0, 1, 0, 0, amqp_empty_table);
    if (!mq_call(amqp_get_rpc_reply(g_harness.mq), "it.routes.dlx") ||
        !declare_bound("it.routes.dead", "it.routes.dlx", "dead"))
        return -1;
    return 0;
}

static const struct suite SUITE = {
    .name = "routes",
    .shared = {{&g_main, "routes", routes_config, NULL}},
    .stop_ms = 20000,
    .aux = &g_aux,
    .prepare = prepare,
};

static void purge_all(void)
{
    static const char *const qs[] = {"it.routes.events",  "it.routes.special", "it.routes.paid",
                                     "it.routes.shipped", "it.routes.acme",    "it.routes.globex",
                                     "it.routes.props",   "it.routes.pass",    "it.routes.dead",
                                     "it.routes.small",   "it.routes.gz",      "it.routes.gzkeep",
                                     "it.routes.limited", "it.routes.once"};
    for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++)
        mq_purge(qs[i]);
}

/* POST DOC to TARGET with the EXTRA header lines: the status, and the
 * response's body into BODY (BODYLEN bytes) when not NULL. */
static int post(const char *target, const char *extra, char *body, size_t bodylen)
{
    struct resp r;
    int rc = http_post(g_main.port, target, XML, extra, DOC, &r);
    if (rc != 0)
        fail_msg("POST %s: no answer", target);
    int status = r.status;
    if (body != NULL)
        snprintf(body, bodylen, "%.*s", (int)r.body_len, r.body);
    resp_free(&r);
    return status;
}

/* Exactly one message in Q, with id ID; its properties checked by the caller. */
static void expect_one(const char *q, const char *id, amqp_message_t *m)
{
    if (mq_get(q, m) != 1)
        fail_msg("queue %s is empty, expected message %s", q, id);
    if (!bytes_eq(m->properties.message_id, id))
        fail_msg("queue %s: message %.*s, expected %s", q, (int)m->properties.message_id.len,
                 (char *)m->properties.message_id.bytes, id);
    amqp_message_t more;
    if (mq_get(q, &more) == 1) {
        amqp_destroy_message(&more);
        fail_msg("queue %s has a second message", q);
    }
}

static void expect_empty(const char *q)
{
    amqp_message_t m;
    if (mq_get(q, &m) == 1) {
        amqp_destroy_message(&m);
        fail_msg("queue %s got a message it should not have", q);
    }
}

/* 1. The routing key from the path reaches the queue bound to it only. */
static void test_routing_key_from_path(void **state)
{
    (void)state;
    purge_all();
    assert_int_equal(post("/events/paid", "X-Request-Id: rt-paid\r\n", NULL, 0), 202);
    assert_int_equal(post("/events/shipped", "X-Request-Id: rt-shipped\r\n", NULL, 0), 202);
    amqp_message_t m;
    expect_one("it.routes.paid", "rt-paid", &m);
    amqp_destroy_message(&m);
    expect_one("it.routes.shipped", "rt-shipped", &m);
    amqp_destroy_message(&m);
    /* The route's own queue, bound with the wildcard orders.*, has both. */
    size_t n = 0;
    char **ids = mq_drain_ids("it.routes.events", &n);
    assert_int_equal(n, 2);
    assert_true(ids_have(ids, n, "rt-paid") && ids_have(ids, n, "rt-shipped"));
    ids_free(ids, n);
    /* The exact path wins over the pattern. */
    assert_int_equal(post("/events/special", "X-Request-Id: rt-special\r\n", NULL, 0), 202);
    expect_one("it.routes.special", "rt-special", &m);
    amqp_destroy_message(&m);
    expect_empty("it.routes.events");
    /* Not one segment: no route. */
    assert_int_equal(post("/events/a/b", NULL, NULL, 0), 404);
    assert_int_equal(post("/events/", NULL, NULL, 0), 404);
    PASS();
}

/* What a client puts in a name never widens a binding: 400 naming the
 * part, nothing published. */
static void test_routing_refuses_wildcards(void **state)
{
    (void)state;
    purge_all();
    static const char *const bad[] = {"/events/a.b", "/events/%23", "/events/*", "/events/%2A",
                                      "/events/paid%2Eshipped"};
    char body[512];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int st = post(bad[i], NULL, body, sizeof body);
        if (st != 400 || strstr(body, "routing_key") == NULL || strstr(body, "{type}") == NULL)
            fail_msg("POST %s: %d '%s', expected 400 naming routing_key {type}", bad[i], st, body);
    }
    char longer[400] = "/events/";
    memset(longer + 8, 'a', 260);
    longer[268] = '\0';
    assert_int_equal(post(longer, NULL, body, sizeof body), 400);
    expect_empty("it.routes.events");
    expect_empty("it.routes.paid");
    PASS();
}

/* The exchange from the path, among the route's exchanges; the routing key
 * from a header; unroutable keeps its 502. */
static void test_exchange_and_header_templates(void **state)
{
    (void)state;
    purge_all();
    char body[512];
    assert_int_equal(post("/t/acme/audit", "X-Request-Id: rt-acme\r\nX-Kind: login\r\n", NULL, 0),
                     202);
    assert_int_equal(
        post("/t/globex/audit", "X-Request-Id: rt-globex\r\nX-Kind: login\r\n", NULL, 0), 202);
    amqp_message_t m;
    expect_one("it.routes.acme", "rt-acme", &m);
    amqp_destroy_message(&m);
    expect_one("it.routes.globex", "rt-globex", &m);
    amqp_destroy_message(&m);
    /* Not one of the exchanges: refused before it could close the channel. */
    assert_int_equal(post("/t/initech/audit", "X-Kind: login\r\n", body, sizeof body), 400);
    assert_non_null(strstr(body, "not one of the route's exchanges"));
    assert_int_equal(post("/t/acme/audit", NULL, body, sizeof body), 400);
    assert_non_null(strstr(body, "X-Kind is missing"));
    assert_int_equal(
        post("/t/acme/audit", "X-Kind: login\r\nX-Kind: logout\r\n", body, sizeof body), 400);
    assert_non_null(strstr(body, "more than once"));
    assert_int_equal(post("/t/acme/audit", "X-Kind: log.#\r\n", body, sizeof body), 400);
    /* Routable to the exchange, but no queue is bound for audit.logout. */
    assert_int_equal(post("/t/acme/audit", "X-Kind: logout\r\n", body, sizeof body), 502);
    expect_empty("it.routes.acme");
    /* The channel is still fine: the next one goes through. */
    assert_int_equal(post("/t/acme/audit", "X-Request-Id: rt-acme2\r\nX-Kind: login\r\n", NULL, 0),
                     202);
    expect_one("it.routes.acme", "rt-acme2", &m);
    amqp_destroy_message(&m);
    PASS();
}

/* 2. Priority (constant, or from a header within bounds), expiration,
 * constant headers, content_type. */
static void test_message_properties(void **state)
{
    (void)state;
    purge_all();
    assert_int_equal(post("/props", "X-Request-Id: rt-props\r\nX-Env: client\r\n", NULL, 0), 202);
    amqp_message_t m;
    expect_one("it.routes.props", "rt-props", &m);
    amqp_basic_properties_t *p = &m.properties;
    assert_true(p->_flags & AMQP_BASIC_PRIORITY_FLAG);
    assert_int_equal(p->priority, 3);
    assert_true(p->_flags & AMQP_BASIC_EXPIRATION_FLAG);
    assert_true(bytes_eq(p->expiration, "90000"));
    assert_true(bytes_eq(p->content_type, "application/vnd.order+xml"));
    char buf[256];
    const char *v = tbl_get(&p->headers, "source", buf, sizeof buf);
    assert_non_null(v);
    assert_string_equal(v, "upstream-a");
    /* The route's constant header wins over the client's X-Env. */
    v = tbl_get(&p->headers, "x-env", buf, sizeof buf);
    assert_non_null(v);
    assert_string_equal(v, "test");
    amqp_destroy_message(&m);

    assert_int_equal(post("/events/paid", "X-Request-Id: rt-prio\r\nX-Priority: 4\r\n", NULL, 0),
                     202);
    expect_one("it.routes.paid", "rt-prio", &m);
    assert_true(m.properties._flags & AMQP_BASIC_PRIORITY_FLAG);
    assert_int_equal(m.properties.priority, 4);
    assert_false(m.properties._flags & AMQP_BASIC_EXPIRATION_FLAG);
    amqp_destroy_message(&m);
    assert_int_equal(post("/events/paid", "X-Request-Id: rt-noprio\r\n", NULL, 0), 202);
    expect_one("it.routes.paid", "rt-noprio", &m);
    assert_false(m.properties._flags & AMQP_BASIC_PRIORITY_FLAG);
    amqp_destroy_message(&m);
    char body[512];
    static const char *const bad[] = {"X-Priority: 6\r\n", "X-Priority: -1\r\n",
                                      "X-Priority: high\r\n", "X-Priority: 1\r\nX-Priority: 2\r\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int st = post("/events/paid", bad[i], body, sizeof body);
        if (st != 400 || strstr(body, "X-Priority") == NULL)
            fail_msg("%s: %d '%s', expected 400 naming X-Priority", bad[i], st, body);
    }
    expect_empty("it.routes.paid");
    PASS();
}

/* A message's trace headers and the answer's traceparent. */
static void trace_of(const char *q, const char *id, char *tp, char *ts, char *bg)
{
    amqp_message_t m;
    expect_one(q, id, &m);
    char buf[9000];
    const char *v = tbl_get(&m.properties.headers, "traceparent", buf, sizeof buf);
    snprintf(tp, 64, "%s", v != NULL ? v : "");
    v = tbl_get(&m.properties.headers, "tracestate", buf, sizeof buf);
    snprintf(ts, 600, "%s", v != NULL ? v : "");
    v = tbl_get(&m.properties.headers, "baggage", buf, sizeof buf);
    snprintf(bg, 600, "%s", v != NULL ? v : "");
    amqp_destroy_message(&m);
}

static bool valid_tp(const char *tp)
{
    if (strlen(tp) != 55 || strncmp(tp, "00-", 3) != 0 || tp[35] != '-' || tp[52] != '-')
        return false;
    for (int i = 3; i < 55; i++)
        if (i != 35 && i != 52 && strchr("0123456789abcdef", tp[i]) == NULL)
            return false;
    return strncmp(tp + 3, "00000000000000000000000000000000", 32) != 0;
}

/* 4. W3C trace context: copied when valid, started when missing or bad,
 * returned on the answer; an rpc reply's comes back; the access log has
 * the trace id. */
static void test_trace_context(void **state)
{
    (void)state;
    purge_all();
    char tp[64], ts[600], bg[600];
    struct resp r;
    /* Valid: passed on unchanged, with tracestate and baggage. */
    int rc = http_post(g_main.port, "/props", XML,
                       "X-Request-Id: rt-tr1\r\ntraceparent: " TP
                       "\r\ntracestate: rojo=00f067aa0ba902b7\r\ntracestate: congo=t61\r\n"
                       "baggage: userId=alice,isProduction=false\r\n",
                       DOC, &r);
    assert_resp(rc, &r, 202);
    assert_string_equal(resp_header(&r, "traceparent"), TP);
    resp_free(&r);
    trace_of("it.routes.props", "rt-tr1", tp, ts, bg);
    assert_string_equal(tp, TP);
    assert_string_equal(ts, "rojo=00f067aa0ba902b7,congo=t61");
    assert_string_equal(bg, "userId=alice,isProduction=false");

    /* None: the bridge starts a trace; the answer names the same one. */
    rc = http_post(g_main.port, "/props", XML, "X-Request-Id: rt-tr2\r\n", DOC, &r);
    assert_resp(rc, &r, 202);
    char answered[64];
    snprintf(answered, sizeof answered, "%s",
             resp_header(&r, "traceparent") ? resp_header(&r, "traceparent") : "");
    resp_free(&r);
    trace_of("it.routes.props", "rt-tr2", tp, ts, bg);
    assert_true(valid_tp(tp));
    assert_string_equal(answered, tp);
    assert_string_equal(ts, "");

    /* Invalid (upper case, version ff): a new trace, its tracestate dropped,
     * the baggage kept (it stands alone). */
    rc = http_post(g_main.port, "/props", XML,
                   "X-Request-Id: rt-tr3\r\n"
                   "traceparent: ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
                   "tracestate: rojo=1\r\nbaggage: k=v\r\n",
                   DOC, &r);
    assert_resp(rc, &r, 202);
    resp_free(&r);
    trace_of("it.routes.props", "rt-tr3", tp, ts, bg);
    assert_true(valid_tp(tp));
    assert_true(strstr(tp, "4bf92f3577b34da6a3ce929d0e0e4736") == NULL);
    assert_string_equal(ts, "");
    assert_string_equal(bg, "k=v");

    /* Bad baggage is dropped whole, never cut. */
    rc = http_post(g_main.port, "/props", XML,
                   "X-Request-Id: rt-tr4\r\ntraceparent: " TP "\r\nbaggage: novalue\r\n", DOC, &r);
    assert_resp(rc, &r, 202);
    resp_free(&r);
    trace_of("it.routes.props", "rt-tr4", tp, ts, bg);
    assert_string_equal(tp, TP);
    assert_string_equal(bg, "");

    /* trace = pass: nothing started. */
    rc = http_post(g_main.port, "/pass", XML, "X-Request-Id: rt-tr5\r\n", DOC, &r);
    assert_resp(rc, &r, 202);
    assert_null(resp_header(&r, "traceparent"));
    resp_free(&r);
    trace_of("it.routes.pass", "rt-tr5", tp, ts, bg);
    assert_string_equal(tp, "");

    /* The access log line carries the trace id. */
    if (log_count(&g_main, "trace=4bf92f3577b34da6a3ce929d0e0e4736") < 1)
        fail_msg("no access log line with the trace id");
    PASS();
}

/* An rpc reply's traceparent (the worker's span) comes back on the answer. */
static void test_trace_rpc_reply(void **state)
{
    (void)state;
    echo_start("it.routes.rpc", NULL);
    struct resp r;
    int rc = http_post(g_main.port, "/rpc", XML, "traceparent: " TP "\r\n", DOC, &r);
    assert_resp(rc, &r, 200);
    const char *got = resp_header(&r, "traceparent");
    if (got == NULL || strncmp(got, TP, 36) != 0 || strcmp(got, TP) == 0 || !valid_tp(got))
        fail_msg("answer's traceparent '%s': expected the trace of %s, the worker's span",
                 got ? got : "(none)", TP);
    resp_free(&r);
    echo_stop();
    PASS();
}

/* Wait up to MS for a message in Q: 1 with it in *M, 0 without. */
static int wait_message(const char *q, amqp_message_t *m, int ms)
{
    double until = now_ms() + scale_ms(ms);
    do {
        if (mq_get(q, m) == 1)
            return 1;
        sleep_ms(50);
    } while (now_ms() < until);
    return 0;
}

/* A message dead-lettered for REASON carries x-death naming it. */
static void expect_dead(const char *id, const char *reason)
{
    amqp_message_t m;
    if (wait_message("it.routes.dead", &m, 5000) != 1)
        fail_msg("%s: nothing reached the dead-letter queue", id);
    if (!bytes_eq(m.properties.message_id, id))
        fail_msg("dead-letter queue: message %.*s, expected %s", (int)m.properties.message_id.len,
                 (char *)m.properties.message_id.bytes, id);
    bool found = false;
    const amqp_table_t *h = &m.properties.headers;
    for (int i = 0; i < h->num_entries && !found; i++) {
        const amqp_table_entry_t *e = &h->entries[i];
        if (!bytes_eq(e->key, "x-death") || e->value.kind != AMQP_FIELD_KIND_ARRAY ||
            e->value.value.array.num_entries < 1)
            continue;
        const amqp_field_value_t *d = &e->value.value.array.entries[0];
        char buf[64];
        const char *v = d->kind == AMQP_FIELD_KIND_TABLE
                            ? tbl_get(&d->value.table, "reason", buf, sizeof buf)
                            : NULL;
        found = v != NULL && strcmp(v, reason) == 0;
    }
    amqp_destroy_message(&m);
    if (!found)
        fail_msg("%s: no x-death with reason %s", id, reason);
}

/* 3. A queue declared with a TTL and a dead-letter exchange: the expired
 * message reaches the DLX's queue; a message's own expiration too; a
 * max_length with reject-publish makes the broker refuse (503). */
static void test_queue_arguments(void **state)
{
    (void)state;
    purge_all();
    assert_int_equal(post("/ttl", "X-Request-Id: rt-ttl\r\n", NULL, 0), 202);
    expect_dead("rt-ttl", "expired");
    assert_int_equal(post("/expire", "X-Request-Id: rt-exp\r\n", NULL, 0), 202);
    expect_dead("rt-exp", "expired");
    expect_empty("it.routes.ttl");

    assert_int_equal(post("/small", "X-Request-Id: rt-small-1\r\n", NULL, 0), 202);
    char body[512];
    int st = post("/small", "X-Request-Id: rt-small-2\r\n", body, sizeof body);
    if (st != 503)
        fail_msg("second message to a queue of max_length 1 (reject-publish): %d '%s'", st, body);
    amqp_message_t m;
    expect_one("it.routes.small", "rt-small-1", &m);
    amqp_destroy_message(&m);
    PASS();
}

/* A bridge with one route on QUEUE and the route keys EXTRA. */
static char *one_route(const char *queue, const char *extra)
{
    char *s = NULL;
    if (asprintf(&s,
                 "[http]\nlisten = 127.0.0.1:%d\nworkers = 1\n"
                 "[amqp]\nuri = amqp://guest:guest@127.0.0.1:%d/%%2f\n"
                 "[log]\nlevel = %s\n"
                 "[route q]\npath = /q\nrouting_key = %s\nqueue = %s\n%s",
                 free_port(), g_harness.broker_port, g_harness.log_level, queue, queue, extra) < 0)
        abort();
    return s;
}

/* TEXT as a config: the bridge exits 1 at start, its output naming the
 * NEEDLES (NULL-ended). */
static void expect_refused(const char *name, char *text, const char *const needles[])
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s.ini", g_harness.tmp, name);
    write_file(path, text);
    free(text);
    char **argv = bridge_argv((const char *[]){"-c", path, NULL});
    char *out;
    int st = run_capture(argv, NULL, &out);
    free(argv);
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 1)
        fail_msg("%s: status 0x%x, expected exit 1 at start; output:\n%s", name, st, out);
    for (size_t i = 0; needles[i] != NULL; i++)
        assert_contains(out, needles[i]);
    free(out);
}

/* The arguments rabbitmqctl lists for queue Q. */
static char *queue_arguments(const char *q)
{
    char *argv[] = {
        (char *)g_harness.broker_sh, "ctl", "list_queues", "-q", "name", "arguments", NULL};
    char *out;
    if (run_capture(argv, NULL, &out) != 0)
        fail_msg("rabbitmqctl list_queues failed: %s", out);
    char *line = strstr(out, q);
    char *copy = xstrdup(line != NULL ? line : "");
    char *nl = strchr(copy, '\n');
    if (nl != NULL)
        *nl = '\0';
    free(out);
    return copy;
}

/* The passive route on it.routes.managed. A bridge_config_fn. */
static char *passive_config(int http_port, const void *arg)
{
    (void)arg;
    char *s = NULL;
    if (asprintf(&s,
                 "[http]\nlisten = 127.0.0.1:%d\nworkers = 1\n"
                 "[amqp]\nuri = amqp://guest:guest@127.0.0.1:%d/%%2f\n"
                 "[log]\nlevel = %s\n"
                 "[route q]\npath = /q\nrouting_key = it.routes.managed\n"
                 "queue = it.routes.managed\ndeclare = passive\n",
                 http_port, g_harness.broker_port, g_harness.log_level) < 0)
        abort();
    return s;
}

static int post_to(int port, const char *target, const char *extra)
{
    struct resp r;
    if (http_post(port, target, XML, extra, DOC, &r) != 0)
        fail_msg("POST %s: no answer", target);
    int st = r.status;
    resp_free(&r);
    return st;
}

/* A queue that exists with other arguments stops start-up naming both
 * sides; declare = passive checks without changing, and stops start-up
 * when the queue is not there. */
static void test_queue_declare_modes(void **state)
{
    (void)state;
    expect_refused(
        "ttl-mismatch", one_route("it.routes.ttl", "message_ttl = 500ms\n"),
        (const char *const[]){"route q: queue 'it.routes.ttl' exists with other arguments",
                              "the route: durable, x-queue-type=classic, "
                              "x-message-ttl=500",
                              "inequivalent arg 'x-message-ttl'", NULL});
    expect_refused("passive-missing", one_route("it.routes.managed", "declare = passive\n"),
                   (const char *const[]){"route q: queue 'it.routes.managed' does not exist",
                                         "declare = passive", NULL});
    /* An exchange a templated one may become must exist: start-up stops. */
    char *t = NULL;
    if (asprintf(
            &t,
            "[http]\nlisten = 127.0.0.1:%d\n[amqp]\nuri = amqp://guest:guest@127.0.0.1:%d/%%2f\n"
            "[route a]\npath = /t/{tenant}\nexchange = {tenant}.it-audit\n"
            "exchanges = acme.it-audit, missing.it-audit\nrouting_key = audit.x\n",
            free_port(), g_harness.broker_port) < 0)
        abort();
    expect_refused("exchange-missing", t,
                   (const char *const[]){"route a: exchange 'missing.it-audit' (of exchanges)",
                                         "NOT_FOUND", NULL});
    /* Someone else declares it, with arguments of their own. */
    amqp_table_entry_t max = {.key = amqp_cstring_bytes("x-max-length"),
                              .value = {.kind = AMQP_FIELD_KIND_I32, .value.i32 = 5}};
    assert_true(mq_declare("it.routes.managed", (amqp_table_t){1, &max}));
    bridge_start(&g_aux, "passive", passive_config, NULL);
    assert_int_equal(post_to(g_aux.port, "/q", "X-Request-Id: rt-managed\r\n"), 202);
    amqp_message_t m;
    expect_one("it.routes.managed", "rt-managed", &m);
    amqp_destroy_message(&m);
    /* Still its owner's: x-max-length 5, no x-queue-type added. */
    char *args = queue_arguments("it.routes.managed");
    assert_contains(args, "x-max-length");
    if (strstr(args, "x-queue-type") != NULL)
        fail_msg("passive declare changed the queue: %s", args);
    free(args);
    assert_int_equal(bridge_stop(&g_aux, scale_ms(10000)), 0);
    PASS();
}

/* DATA (LEN bytes, COPIES times over) compressed as gzip (GZIP) or zlib
 * (deflate); *OUTLEN its length; free() it. */
static unsigned char *compress_as(bool gzip, const void *data, size_t len, size_t copies,
                                  size_t *outlen)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    assert_int_equal(deflateInit2(&zs, 9, Z_DEFLATED, gzip ? 15 + 16 : 15, 9, Z_DEFAULT_STRATEGY),
                     Z_OK);
    size_t cap = deflateBound(&zs, len) * (copies > 1 ? copies / 512 + 2 : 1) + 1024;
    unsigned char *out = xmalloc(cap);
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    for (size_t i = 0; i < copies; i++) {
        zs.next_in = (Bytef *)(uintptr_t)data;
        zs.avail_in = (uInt)len;
        int rc = deflate(&zs, i + 1 == copies ? Z_FINISH : Z_NO_FLUSH);
        assert_true(rc == Z_OK || rc == Z_STREAM_END);
        assert_true(zs.avail_out > 0);
    }
    *outlen = cap - zs.avail_out;
    deflateEnd(&zs);
    return out;
}

/* POST BODY (LEN bytes) to TARGET with Content-Encoding CODING: the status,
 * and the response's body into TEXT. */
static int post_coded(const char *target, const char *coding, const char *id, const void *body,
                      size_t len, char *text, size_t textlen)
{
    char head[600];
    int n = snprintf(head, sizeof head,
                     "POST %s HTTP/1.1\r\nHost: t\r\nContent-Type: application/xml\r\n"
                     "Content-Encoding: %s\r\nX-Request-Id: %s\r\nContent-Length: %zu\r\n\r\n",
                     target, coding, id, len);
    size_t total = (size_t)n + len;
    char *raw = xmalloc(total);
    memcpy(raw, head, (size_t)n);
    memcpy(raw + n, body, len);
    struct conn c;
    if (conn_open(&c, g_main.port) != 0)
        fail_msg("cannot connect");
    struct resp r;
    int rc = exchange(&c, raw, total, &r, false);
    free(raw);
    conn_close(&c);
    if (rc != 0)
        fail_msg("POST %s (%s): no answer", target, coding);
    snprintf(text, textlen, "%.*s", (int)r.body_len, r.body);
    int st = r.status;
    resp_free(&r);
    return st;
}

/* 5. gzip and deflate bodies: inflated and checked as XML, published
 * inflated or as sent; a bomb of 1 GiB gets 413 having inflated no more
 * than max_body; unknown codings and routes without encodings get 415. */
static void test_compressed_bodies(void **state)
{
    (void)state;
    purge_all();
    char text[512];
    size_t glen, zlen;
    unsigned char *gz = compress_as(true, DOC, strlen(DOC), 1, &glen);
    unsigned char *zl = compress_as(false, DOC, strlen(DOC), 1, &zlen);
    assert_int_equal(post_coded("/gz", "gzip", "rt-gz", gz, glen, text, sizeof text), 202);
    assert_int_equal(post_coded("/gz", "deflate", "rt-zl", zl, zlen, text, sizeof text), 202);
    amqp_message_t m;
    if (mq_get("it.routes.gz", &m) != 1 || !bytes_eq(m.properties.message_id, "rt-gz"))
        fail_msg("rt-gz not first in it.routes.gz");
    assert_int_equal(m.body.len, strlen(DOC));
    assert_memory_equal(m.body.bytes, DOC, strlen(DOC));
    assert_false(m.properties._flags & AMQP_BASIC_CONTENT_ENCODING_FLAG);
    amqp_destroy_message(&m);
    expect_one("it.routes.gz", "rt-zl", &m);
    assert_int_equal(m.body.len, strlen(DOC));
    assert_memory_equal(m.body.bytes, DOC, strlen(DOC));
    amqp_destroy_message(&m);

    /* Kept as sent: the consumer gets the gzip bytes and content_encoding. */
    assert_int_equal(post_coded("/gzkeep", "gzip", "rt-keep", gz, glen, text, sizeof text), 202);
    expect_one("it.routes.gzkeep", "rt-keep", &m);
    assert_int_equal(m.body.len, glen);
    assert_memory_equal(m.body.bytes, gz, glen);
    assert_true(m.properties._flags & AMQP_BASIC_CONTENT_ENCODING_FLAG);
    assert_true(bytes_eq(m.properties.content_encoding, "gzip"));
    amqp_destroy_message(&m);

    /* Checked after inflating: not well-formed inside is the XML check's
     * 400; a stream that is not gzip, or one cut short, is 400 too. */
    static const char bad_xml[] = "<order><id>1</order>";
    size_t blen;
    unsigned char *bx = compress_as(true, bad_xml, strlen(bad_xml), 1, &blen);
    assert_int_equal(post_coded("/gz", "gzip", "rt-badxml", bx, blen, text, sizeof text), 400);
    assert_non_null(strstr(text, "line 1"));
    free(bx);
    assert_int_equal(post_coded("/gz", "gzip", "rt-notgz", DOC, strlen(DOC), text, sizeof text),
                     400);
    assert_non_null(strstr(text, "Content-Encoding gzip"));
    assert_int_equal(post_coded("/gz", "gzip", "rt-cut", gz, glen - 9, text, sizeof text), 400);
    assert_non_null(strstr(text, "Content-Encoding gzip"));
    assert_int_equal(post_coded("/gz", "br", "rt-br", gz, glen, text, sizeof text), 415);
    assert_int_equal(post_coded("/gz", "gzip, gzip", "rt-two", gz, glen, text, sizeof text), 415);
    assert_int_equal(post_coded("/props", "gzip", "rt-nogz", gz, glen, text, sizeof text), 415);
    assert_non_null(strstr(text, "does not take"));
    free(gz);
    free(zl);

    /* The bomb: 1 GiB of zeros in about 1 MB of gzip. */
    static unsigned char zeros[1 << 20];
    size_t bomb_len;
    unsigned char *bomb = compress_as(true, zeros, sizeof zeros, 1024, &bomb_len);
    assert_true(bomb_len < 2 * 1024 * 1024);
    double before = metric(g_main.port, "bridge_http_inflated_bytes_total");
    assert_int_equal(post_coded("/gz", "gzip", "rt-bomb", bomb, bomb_len, text, sizeof text), 413);
    assert_non_null(strstr(text, "inflates past max_body"));
    double after = metric(g_main.port, "bridge_http_inflated_bytes_total");
    /* No more than max_body (2 MiB) and the byte that shows it is over. */
    if (after - before > 2.0 * 1024 * 1024 + 1)
        fail_msg("the bomb inflated %.0f bytes before its 413 (max_body is 2 MiB)", after - before);
    assert_true(after - before > 1024 * 1024);
    free(bomb);
    expect_empty("it.routes.gz");
    PASS();
}

/* 7. A burst over the route's rate: the bucket's 3 go through, the rest
 * get 429 with Retry-After (most of an hour at 1/h) and are not published;
 * /metrics counts them. Both workers share the bucket. */
static void test_rate_limit_burst(void **state)
{
    (void)state;
    mq_purge("it.routes.limited");
    double before = metric(g_main.port, "bridge_rate_limited_total{route=\"limited\"}");
    int ok = 0, limited = 0;
    for (int i = 0; i < 12; i++) {
        char extra[80];
        snprintf(extra, sizeof extra, "X-Request-Id: rt-rl-%d\r\n", i);
        struct resp r;
        /* A new connection each: they spread over both workers. */
        if (http_post(g_main.port, "/limited", XML, extra, DOC, &r) != 0)
            fail_msg("request %d: no answer", i);
        if (r.status == 202) {
            ok++;
        } else if (r.status == 429) {
            limited++;
            const char *ra = resp_header(&r, "Retry-After");
            if (ra == NULL || atoi(ra) < 3000 || atoi(ra) > 3600)
                fail_msg("429 with Retry-After '%s', expected most of an hour", ra ? ra : "");
        } else {
            fail_msg("request %d: %d", i, r.status);
        }
        resp_free(&r);
    }
    assert_int_equal(ok, 3);
    assert_int_equal(limited, 9);
    size_t n = 0;
    char **ids = mq_drain_ids("it.routes.limited", &n);
    assert_int_equal(n, 3);
    ids_free(ids, n);
    double after = metric(g_main.port, "bridge_rate_limited_total{route=\"limited\"}");
    assert_int_equal((int)(after - before), 9);
    /* Per token: one each, whatever the spelling of "Bearer" and blanks;
     * another token has its own. */
    static const char *const spellings[] = {"Authorization: Bearer tok-a-1234\r\n",
                                            "Authorization: bearer   tok-a-1234 \r\n",
                                            "Authorization: BEARER\ttok-a-1234\r\n"};
    for (size_t i = 0; i < 3; i++) {
        struct resp r;
        if (http_post(g_main.port, "/pertoken", XML, spellings[i], DOC, &r) != 0)
            fail_msg("pertoken %zu: no answer", i);
        if (r.status != (i == 0 ? 202 : 429))
            fail_msg("'%.40s': %d, expected %d", spellings[i], r.status, i == 0 ? 202 : 429);
        resp_free(&r);
    }
    struct resp rb;
    assert_int_equal(
        http_post(g_main.port, "/pertoken", XML, "Authorization: Bearer tok-b-5678\r\n", DOC, &rb),
        0);
    assert_int_equal(rb.status, 202);
    resp_free(&rb);
    /* A wrong token is 401 and takes nothing. */
    assert_int_equal(
        http_post(g_main.port, "/pertoken", XML, "Authorization: Bearer nope\r\n", DOC, &rb), 0);
    assert_int_equal(rb.status, 401);
    resp_free(&rb);
    mq_purge("it.routes.limited");
    /* Another route is not limited by it. */
    assert_int_equal(post("/props", "X-Request-Id: rt-rl-other\r\n", NULL, 0), 202);
    PASS();
}

/* Issue 16: the idempotency window. A retry of a confirmed id inside it is
 * answered 202 with the same ids, marked, and publishes nothing (the queue
 * count proves it); outside it, it publishes again. Retries sent while the
 * first waits, on connections of both workers, all get its 202 and one
 * message. */
/* POST DOC to /once with X-Request-Id ID: 202, a replay or not. */
static void post_once(const char *id, bool replay)
{
    char extra[96];
    snprintf(extra, sizeof extra, "X-Request-Id: %s\r\n", id);
    struct resp r;
    assert_int_equal(http_post(g_main.port, "/once", XML, extra, DOC, &r), 0);
    assert_int_equal(r.status, 202);
    if (replay)
        assert_non_null(resp_header(&r, "X-Idempotent-Replay"));
    else
        assert_null(resp_header(&r, "X-Idempotent-Replay"));
    resp_free(&r);
}

static void test_dedupe_window(void **state)
{
    (void)state;
    mq_purge("it.routes.once");
    struct resp r;
    post_once("rt-once-1", false);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(
            http_post(g_main.port, "/once", XML, "X-Request-Id: rt-once-1\r\n", DOC, &r), 0);
        assert_int_equal(r.status, 202);
        assert_string_equal(resp_header(&r, "X-Message-Id"), "rt-once-1");
        assert_string_equal(resp_header(&r, "X-Request-Id"), "rt-once-1");
        assert_non_null(resp_header(&r, "X-Idempotent-Replay"));
        resp_free(&r);
    }
    size_t n = 0;
    char **ids = mq_drain_ids("it.routes.once", &n);
    assert_int_equal(n, 1);
    ids_free(ids, n);
    assert_true(metric(g_main.port, "bridge_dedupe_replays_total{route=\"once\"}") >= 3);
    assert_true(metric(g_main.port, "bridge_dedupe_ids{route=\"once\"}") >= 1);

    /* Outside the window (3 s after the confirm): published again. */
    sleep_ms(4000);
    assert_int_equal(http_post(g_main.port, "/once", XML, "X-Request-Id: rt-once-1\r\n", DOC, &r),
                     0);
    assert_int_equal(r.status, 202);
    assert_null(resp_header(&r, "X-Idempotent-Replay"));
    resp_free(&r);
    ids = mq_drain_ids("it.routes.once", &n);
    assert_int_equal(n, 1);
    ids_free(ids, n);

    /* Eight at once with one new id, over connections both workers took. */
    enum { N = 8 };
    struct conn c[N];
    size_t len;
    char *raw =
        fmt_request(&len, "POST", "/once", XML, "X-Request-Id: rt-once-2\r\n", DOC, strlen(DOC));
    for (int i = 0; i < N; i++)
        assert_int_equal(conn_open(&c[i], g_main.port), 0);
    for (int i = 0; i < N; i++)
        assert_int_equal(conn_send(&c[i], raw, len), 0);
    free(raw);
    int replays = 0;
    for (int i = 0; i < N; i++) {
        if (conn_read_resp(&c[i], &r, false) != 0)
            fail_msg("duplicate %d: no answer", i);
        if (r.status != 202)
            fail_msg("duplicate %d: %d", i, r.status);
        replays += resp_header(&r, "X-Idempotent-Replay") != NULL;
        resp_free(&r);
        conn_close(&c[i]);
    }
    assert_int_equal(replays, N - 1);
    ids = mq_drain_ids("it.routes.once", &n);
    assert_int_equal(n, 1);
    ids_free(ids, n);

    /* Without an X-Request-Id (the bridge makes one), or with a body that
     * fails the check, nothing takes a place in the window. */
    double held = metric(g_main.port, "bridge_dedupe_ids{route=\"once\"}");
    for (int i = 0; i < 2; i++) {
        assert_int_equal(http_post(g_main.port, "/once", XML, NULL, DOC, &r), 0);
        assert_int_equal(r.status, 202);
        assert_null(resp_header(&r, "X-Idempotent-Replay"));
        resp_free(&r);
    }
    assert_int_equal(
        http_post(g_main.port, "/once", XML, "X-Request-Id: rt-once-bad\r\n", "<not-closed>", &r),
        0);
    assert_int_equal(r.status, 400);
    resp_free(&r);
    assert_true(metric(g_main.port, "bridge_dedupe_ids{route=\"once\"}") == held);
    ids = mq_drain_ids("it.routes.once", &n);
    assert_int_equal(n, 2);
    ids_free(ids, n);
    PASS();
}

/* The window is the process's: a retry that lands after a SIGHUP reload
 * (the route kept its name, size and duration) is still a replay. */
static void test_dedupe_across_reload(void **state)
{
    (void)state;
    mq_purge("it.routes.once");
    post_once("rt-once-3", false);
    g_main.mark = file_size(g_main.log);
    kill(g_main.pid, SIGHUP);
    if (!log_wait(&g_main, "reloaded", scale_ms(15000)))
        fail_msg("no reload 15 s after SIGHUP");
    post_once("rt-once-3", true);
    size_t n = 0;
    char **ids = mq_drain_ids("it.routes.once", &n);
    assert_int_equal(n, 1);
    ids_free(ids, n);
    PASS();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        SUITE_TEST(test_routing_key_from_path),
        SUITE_TEST(test_routing_refuses_wildcards),
        SUITE_TEST(test_exchange_and_header_templates),
        SUITE_TEST(test_message_properties),
        SUITE_TEST(test_trace_context),
        SUITE_TEST(test_trace_rpc_reply),
        SUITE_TEST(test_queue_arguments),
        SUITE_TEST(test_queue_declare_modes),
        SUITE_TEST(test_compressed_bodies),
        SUITE_TEST(test_rate_limit_burst),
        SUITE_TEST(test_dedupe_window),
        SUITE_TEST(test_dedupe_across_reload),
    };
    return suite_run("ingest-bridge routes", &SUITE, tests, "IT_ONLY");
}
