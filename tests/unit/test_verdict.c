/* test_verdict.c - what a request's line and headers alone decide
 * (http/verdict.c), without a socket: each refusal with its status, text,
 * extra header and close flag; the order of the checks when several apply;
 * the routes, pong, /healthz and /metrics; Content-Length parsing; one pass
 * over the headers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <sys/queue.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "bridge/base/metrics.h"
#include "http/auth.h"
#include "http/http_config.h"
#include "http/server.h"
#include "http/tls.h"
#include "http/verdict.h"

#define TOO_LARGE "body larger than max_body (100 bytes)\n"

static void free_heads(void);

/* Four routes: /ingest open, /secret with its own token file, /events/{type}
 * taking gzip, and /events/special beside it. */
struct fx {
    struct http_route routes[4];
    struct http_config cfg;
    struct http_shared *sh;
    struct auth_tokens *metrics_tokens;
    struct verdict_ctx x;
    char token_file[64];
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->token_file, sizeof f->token_file, "/tmp/test_verdict.%d", (int)getpid());
    FILE *fp = fopen(f->token_file, "w");
    assert_non_null(fp);
    fputs("route-token\n", fp);
    fclose(fp);
    static const char *const allowed[] = {"shop.example"};
    f->routes[0] = (struct http_route){.name = "ingest", .path = "/ingest", .auth_token_file = ""};
    f->routes[1] =
        (struct http_route){.name = "secret", .path = "/secret", .auth_token_file = f->token_file};
    f->routes[2] = (struct http_route){.name = "events",
                                       .path = "/events/{type}",
                                       .pattern = true,
                                       .auth_token_file = "",
                                       .encodings = HTTP_ENCODING_GZIP};
    f->routes[3] = (struct http_route){.name = "special",
                                       .path = "/events/special",
                                       .auth_token_file = "",
                                       .client_subjects = allowed,
                                       .n_client_subjects = 1};
    f->cfg = (struct http_config){
        .file = "test.ini",
        .listen_host = "127.0.0.1",
        .workers = 1,
        .max_body = 100,
        .timeout_ms = 1000,
        .pong_path = "/pong",
        .tls_cert = "",
        .tls_key = "",
        .auth_token_file = "",
        .max_connections = 10,
        .max_pending_bytes = 1000,
        .routes = f->routes,
        .n_routes = 4,
    };
    char err[256];
    f->sh = http_shared_new(&f->cfg, err, sizeof err);
    if (f->sh == NULL)
        fail_msg("http_shared_new: %s", err);
    f->metrics_tokens = auth_tokens_parse("scrape\n", 7, "metrics", err, sizeof err);
    assert_non_null(f->metrics_tokens);
    f->x = (struct verdict_ctx){&f->cfg, f->sh, NULL, TOO_LARGE, false};
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    http_shared_free(f->sh);
    auth_tokens_free(f->metrics_tokens);
    unlink(f->token_file);
    free(f);
    free_heads();
    return 0;
}

static int teardown_heads(void **state)
{
    (void)state;
    free_heads();
    return 0;
}

/* The header lists head() made: the head_info it returns points into them,
 * so they live until free_heads() (each test's end). */
static struct evkeyvalq heads[32];
static size_t n_heads;

static void free_heads(void)
{
    for (size_t i = 0; i < n_heads; i++)
        evhttp_clear_headers(&heads[i]);
    n_heads = 0;
}

/* Headers given as "Name", "value" pairs, NULL-terminated, scanned. */
static struct head_info head(const char *first, ...)
{
    assert_true(n_heads < sizeof heads / sizeof heads[0]);
    struct evkeyvalq *h = &heads[n_heads++];
    TAILQ_INIT(h);
    va_list ap;
    va_start(ap, first);
    for (const char *k = first; k != NULL; k = va_arg(ap, const char *))
        assert_int_equal(evhttp_add_header(h, k, va_arg(ap, const char *)), 0);
    va_end(ap);
    struct head_info hi;
    verdict_scan(h, &hi);
    return hi;
}

static struct verdict decide(const struct fx *f, enum evhttp_cmd_type cmd, const char *path,
                             const struct head_info *hi)
{
    struct verdict v;
    verdict_decide(&f->x, cmd, path, hi, &v);
    return v;
}

static void assert_refused(const struct verdict *v, int status, const char *text, bool close)
{
    assert_int_equal(v->kind, VERDICT_REFUSE);
    assert_int_equal(v->status, status);
    if (text != NULL)
        assert_string_equal(v->text, text);
    assert_int_equal(v->close, close);
}

static void test_scan_takes_first_and_counts(void **state)
{
    (void)state;
    struct head_info hi =
        head("content-length", "5", "Content-Length", "6", "X-Request-Id", "a", "X-REQUEST-ID", "b",
             "Content-Type", "text/xml", "Expect", "100-continue", "Authorization", "Bearer x",
             "authorization", "Bearer y", "Transfer-Encoding", "chunked", NULL);
    assert_int_equal(hi.n_cl, 2);
    assert_string_equal(hi.cl, "5");
    assert_string_equal(hi.id, "a");
    assert_string_equal(hi.ctype, "text/xml");
    assert_string_equal(hi.expect, "100-continue");
    assert_int_equal(hi.n_auth, 2);
    assert_string_equal(hi.auth, "Bearer x");
    assert_int_equal(hi.n_te, 1);
}

static void test_framing_refusals_close(void **state)
{
    struct fx *f = *state;
    struct head_info two_cl = head("Content-Length", "1", "Content-Length", "1", NULL);
    struct verdict v = decide(f, EVHTTP_REQ_POST, "/ingest", &two_cl);
    assert_refused(&v, 400, "ambiguous request framing: more than one Content-Length\n", true);

    struct head_info two_te =
        head("Transfer-Encoding", "chunked", "Transfer-Encoding", "chunked", NULL);
    v = decide(f, EVHTTP_REQ_POST, "/ingest", &two_te);
    assert_refused(&v, 400, "ambiguous request framing: more than one Transfer-Encoding\n", true);

    struct head_info gzip = head("Transfer-Encoding", "gzip, chunked", NULL);
    v = decide(f, EVHTTP_REQ_POST, "/ingest", &gzip);
    assert_refused(&v, 400, "ambiguous request framing: Transfer-Encoding other than chunked\n",
                   true);

    struct head_info both = head("Transfer-Encoding", "Chunked", "Content-Length", "3", NULL);
    v = decide(f, EVHTTP_REQ_POST, "/ingest", &both);
    assert_refused(&v, 400, "ambiguous request framing: Content-Length with Transfer-Encoding\n",
                   true);

    /* Framing first: even on a path that does not exist. */
    v = decide(f, EVHTTP_REQ_POST, "/nowhere", &two_cl);
    assert_int_equal(v.status, 400);
}

static void test_body_on_head_or_trace(void **state)
{
    struct fx *f = *state;
    struct head_info cl5 = head("Content-Length", "5", NULL);
    struct verdict v = decide(f, EVHTTP_REQ_HEAD, "/pong", &cl5);
    assert_refused(&v, 400, "ambiguous request framing: a body on a HEAD or TRACE request\n", true);
    struct head_info chunked = head("Transfer-Encoding", "chunked", NULL);
    v = decide(f, EVHTTP_REQ_TRACE, "/pong", &chunked);
    assert_int_equal(v.status, 400);
    struct head_info cl0 = head("Content-Length", "0", NULL);
    v = decide(f, EVHTTP_REQ_HEAD, "/pong", &cl0);
    assert_int_equal(v.kind, VERDICT_PONG);
}

static void test_too_large_before_route(void **state)
{
    struct fx *f = *state;
    struct head_info big = head("Content-Length", "101", "Content-Type", "text/xml", NULL);
    struct verdict v = decide(f, EVHTTP_REQ_POST, "/ingest", &big);
    assert_refused(&v, 413, TOO_LARGE, true);
    v = decide(f, EVHTTP_REQ_POST, "/nowhere", &big);
    assert_int_equal(v.status, 413);
    struct head_info edge = head("Content-Length", "100", "Content-Type", "text/xml", NULL);
    v = decide(f, EVHTTP_REQ_POST, "/ingest", &edge);
    assert_int_equal(v.kind, VERDICT_ROUTE);
    /* Past 2^64: saturated, still too large. */
    struct head_info huge = head("Content-Length", "99999999999999999999999", NULL);
    v = decide(f, EVHTTP_REQ_POST, "/ingest", &huge);
    assert_int_equal(v.status, 413);
}

static void test_builtin_paths(void **state)
{
    struct fx *f = *state;
    struct head_info none = head(NULL);
    struct verdict v = decide(f, EVHTTP_REQ_GET, "/pong", &none);
    assert_int_equal(v.kind, VERDICT_PONG);
    assert_int_equal(v.slot, METRICS_PONG);
    v = decide(f, EVHTTP_REQ_GET, "/healthz", &none);
    assert_int_equal(v.kind, VERDICT_HEALTHZ);
    v = decide(f, EVHTTP_REQ_HEAD, "/metrics", &none);
    assert_int_equal(v.kind, VERDICT_METRICS);
    assert_int_equal(v.slot, METRICS_METRICS);

    v = decide(f, EVHTTP_REQ_POST, "/pong", &none);
    assert_refused(&v, 405, "method not allowed: use GET or HEAD\n", false);
    assert_string_equal(v.hname, "Allow");
    assert_string_equal(v.hvalue, "GET, HEAD");

    f->x.draining = true;
    v = decide(f, EVHTTP_REQ_GET, "/healthz", &none);
    assert_refused(&v, 503, "shutting down\n", false);
    assert_int_equal(v.slot, METRICS_HEALTHZ);
}

static void test_metrics_auth(void **state)
{
    struct fx *f = *state;
    f->x.metrics_auth = f->metrics_tokens;
    struct head_info none = head(NULL);
    struct verdict v = decide(f, EVHTTP_REQ_GET, "/metrics", &none);
    assert_refused(&v, 401, NULL, false);
    assert_string_equal(v.hname, "WWW-Authenticate");
    struct head_info ok = head("Authorization", "Bearer scrape", NULL);
    v = decide(f, EVHTTP_REQ_GET, "/metrics", &ok);
    assert_int_equal(v.kind, VERDICT_METRICS);
    /* Auth before the method: a POST without a token learns nothing. */
    v = decide(f, EVHTTP_REQ_POST, "/metrics", &none);
    assert_int_equal(v.status, 401);
    /* pong and /healthz stay open. */
    v = decide(f, EVHTTP_REQ_GET, "/pong", &none);
    assert_int_equal(v.kind, VERDICT_PONG);
}

static void test_routes(void **state)
{
    struct fx *f = *state;
    struct head_info xml = head("Content-Type", "application/xml; charset=utf-8", NULL);
    struct verdict v = decide(f, EVHTTP_REQ_POST, "/ingest", &xml);
    assert_int_equal(v.kind, VERDICT_ROUTE);
    assert_ptr_equal(v.route, &f->routes[0]);
    assert_int_equal(v.slot, METRICS_ROUTE0);

    v = decide(f, EVHTTP_REQ_POST, "/nowhere", &xml);
    assert_refused(&v, 404, "no route for this path\n", false);
    assert_int_equal(v.slot, METRICS_NONE);
    v = decide(f, EVHTTP_REQ_POST, NULL, &xml);
    assert_int_equal(v.status, 404);

    v = decide(f, EVHTTP_REQ_PUT, "/ingest", &xml);
    assert_refused(&v, 405, "method not allowed: use POST\n", false);
    assert_string_equal(v.hvalue, "POST");

    static const char *const ok[] = {"text/xml", " TEXT/XML", "application/atom+xml",
                                     "image/svg+xml;q=1"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        struct head_info hi = head("Content-Type", ok[i], NULL);
        v = decide(f, EVHTTP_REQ_POST, "/ingest", &hi);
        assert_int_equal(v.kind, VERDICT_ROUTE);
    }
    static const char *const bad[] = {"text/plain", "application/xmlx", "/+xml", "a+xml",
                                      "application/json"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct head_info hi = head("Content-Type", bad[i], NULL);
        v = decide(f, EVHTTP_REQ_POST, "/ingest", &hi);
        assert_refused(&v, 415, NULL, false);
    }
    struct head_info none = head(NULL);
    v = decide(f, EVHTTP_REQ_POST, "/ingest", &none);
    assert_int_equal(v.status, 415);

    /* Stopping: a route's request is still served (its connection closes
     * after the answer), only the built-in paths say 503. */
    f->x.draining = true;
    v = decide(f, EVHTTP_REQ_POST, "/ingest", &xml);
    assert_int_equal(v.kind, VERDICT_ROUTE);
    assert_ptr_equal(v.route, &f->routes[0]);
}

/* Paths with captures: one segment each; an exact path wins; a literal
 * pattern text is no exact path. */
static void test_route_patterns(void **state)
{
    struct fx *f = *state;
    struct head_info xml = head("Content-Type", "text/xml", NULL);
    struct verdict v = decide(f, EVHTTP_REQ_POST, "/events/paid", &xml);
    assert_int_equal(v.kind, VERDICT_ROUTE);
    assert_ptr_equal(v.route, &f->routes[2]);
    /* /events/special takes the client certificate shop.example only. */
    v = decide(f, EVHTTP_REQ_POST, "/events/special", &xml);
    assert_refused(&v, 403, "this route needs a client certificate\n", false);
    struct tls_peer peer = {.subject = "CN=x", .names = {"x", "shop.example"}, .n = 2};
    xml.peer = &peer;
    v = decide(f, EVHTTP_REQ_POST, "/events/special", &xml);
    assert_int_equal(v.kind, VERDICT_ROUTE);
    assert_ptr_equal(v.route, &f->routes[3]);
    peer.n = 1; /* only "x" */
    v = decide(f, EVHTTP_REQ_POST, "/events/special", &xml);
    assert_refused(&v, 403, "this client certificate's subject is not allowed on this route\n",
                   false);
    xml.peer = NULL;
    v = decide(f, EVHTTP_REQ_POST, "/events/a/b", &xml);
    assert_refused(&v, 404, "no route for this path\n", false);
    v = decide(f, EVHTTP_REQ_POST, "/events/", &xml);
    assert_refused(&v, 404, "no route for this path\n", false);
}

/* Content-Encoding: 415 for what the route does not take, before the body. */
static void test_content_encoding(void **state)
{
    struct fx *f = *state;
    struct head_info gz = head("Content-Type", "text/xml", "Content-Encoding", "gzip", NULL);
    struct verdict v = decide(f, EVHTTP_REQ_POST, "/events/paid", &gz);
    assert_int_equal(v.kind, VERDICT_ROUTE);
    struct head_info xgz = head("Content-Type", "text/xml", "Content-Encoding", " X-GZIP ", NULL);
    v = decide(f, EVHTTP_REQ_POST, "/events/paid", &xgz);
    assert_int_equal(v.kind, VERDICT_ROUTE);
    struct head_info id = head("Content-Type", "text/xml", "Content-Encoding", "identity", NULL);
    v = decide(f, EVHTTP_REQ_POST, "/ingest", &id);
    assert_int_equal(v.kind, VERDICT_ROUTE);
    v = decide(f, EVHTTP_REQ_POST, "/ingest", &gz);
    assert_refused(&v, 415, "this route does not take Content-Encoding gzip (its encodings)\n",
                   false);
    struct head_info df = head("Content-Type", "text/xml", "Content-Encoding", "deflate", NULL);
    v = decide(f, EVHTTP_REQ_POST, "/events/paid", &df);
    assert_refused(&v, 415, "this route does not take Content-Encoding deflate (its encodings)\n",
                   false);
    static const char *const bad[] = {"br", "gzip, gzip", "compress", "gzip;q=1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct head_info hi = head("Content-Type", "text/xml", "Content-Encoding", bad[i], NULL);
        v = decide(f, EVHTTP_REQ_POST, "/events/paid", &hi);
        assert_refused(&v, 415, "Content-Encoding must be one of gzip, deflate or identity\n",
                       false);
    }
    struct head_info two = head("Content-Type", "text/xml", "Content-Encoding", "gzip",
                                "Content-Encoding", "gzip", NULL);
    v = decide(f, EVHTTP_REQ_POST, "/events/paid", &two);
    assert_int_equal(v.status, 415);
}

static void test_route_auth_order(void **state)
{
    struct fx *f = *state;
    struct head_info plain = head("Content-Type", "text/plain", NULL);
    /* 401 before 405 and 415: who may not send learns nothing more. */
    struct verdict v = decide(f, EVHTTP_REQ_GET, "/secret", &plain);
    assert_refused(&v, 401, "a bearer token is required: Authorization: Bearer TOKEN\n", false);
    assert_int_equal(v.slot, METRICS_ROUTE0 + 1);
    struct head_info wrong = head("Authorization", "Bearer nope", NULL);
    v = decide(f, EVHTTP_REQ_POST, "/secret", &wrong);
    assert_refused(&v, 401, "invalid bearer token\n", false);
    struct head_info twice = head("Authorization", "Bearer route-token", "Authorization",
                                  "Bearer route-token", "Content-Type", "text/xml", NULL);
    v = decide(f, EVHTTP_REQ_POST, "/secret", &twice);
    assert_int_equal(v.status, 401);
    struct head_info right =
        head("Authorization", "Bearer route-token", "Content-Type", "text/plain", NULL);
    v = decide(f, EVHTTP_REQ_POST, "/secret", &right);
    assert_int_equal(v.status, 415);
    struct head_info good =
        head("Authorization", "Bearer route-token", "Content-Type", "text/xml", NULL);
    v = decide(f, EVHTTP_REQ_POST, "/secret", &good);
    assert_int_equal(v.kind, VERDICT_ROUTE);
    assert_ptr_equal(v.route, &f->routes[1]);
}

static void test_content_length_parse(void **state)
{
    (void)state;
    unsigned long long n = 0;
    struct head_info a = head("Content-Length", "12", NULL);
    assert_true(verdict_content_length(&a, &n));
    assert_int_equal(n, 12);
    static const char *const bad[] = {"-1", "12a", "", " 1x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct head_info hi = head("Content-Length", bad[i], NULL);
        assert_false(verdict_content_length(&hi, &n));
    }
    struct head_info te = head("Content-Length", "12", "Transfer-Encoding", "chunked", NULL);
    assert_false(verdict_content_length(&te, &n));
    struct head_info none = head(NULL);
    assert_false(verdict_content_length(&none, &n));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_scan_takes_first_and_counts, teardown_heads),
        cmocka_unit_test_setup_teardown(test_framing_refusals_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_on_head_or_trace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_large_before_route, setup, teardown),
        cmocka_unit_test_setup_teardown(test_builtin_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics_auth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_routes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_route_auth_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_route_patterns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_content_encoding, setup, teardown),
        cmocka_unit_test_teardown(test_content_length_parse, teardown_heads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
