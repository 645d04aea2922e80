/* test_metrics.c - integration tests of what an operator watches: /metrics
 * parsed as Prometheus would (every sample well-formed, HELP and TYPE for
 * every family, histograms cumulative with +Inf = _count) and its counters
 * moving with real traffic against the private broker; /healthz naming each
 * worker's node; JSON logs and the access log in both formats. Run through
 * tests/integration/run.sh like test_bridge.c; helpers in tests/lib. */

#include <ctype.h>
#include <regex.h>
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
#include "harness_cmocka.h"  /* <cmocka.h>, assert_resp... */
#include "metric_families.h" /* METRIC_FAMILIES */

#define XML "application/xml"
static const char DOC[] = "<?xml version=\"1.0\"?>\n<order><id>1</id></order>\n";

static struct bridge g_main; /* json logs, access log on; started once */
static struct bridge g_aux;  /* a test's own instance */

/* What a test bridge's [log] says. */
struct log_opts {
    int workers;
    const char *format;     /* text | json */
    const char *access_log; /* yes | no | NULL: key left out */
};

static const struct log_opts MAIN_OPTS = {2, "json", "yes"};

/* A bridge_config_fn; ARG: const struct log_opts *. */
static char *metrics_config(int http_port, const void *arg)
{
    const struct log_opts *o = arg;
    char access[64] = "";
    if (o->access_log != NULL)
        snprintf(access, sizeof access, "access_log  = %s\n", o->access_log);
    char *text = NULL;
    if (asprintf(&text,
                 "; written by tests/integration/test_metrics.c\n"
                 "[http]\n"
                 "listen      = 127.0.0.1:%d\n"
                 "workers     = %d\n"
                 "timeout     = 10s\n"
                 "[amqp]\n"
                 "uri         = amqp://guest:guest@127.0.0.1:%d/%%2f\n"
                 "heartbeat   = 5s\n"
                 "[log]\n"
                 "level       = %s\n"
                 "format      = %s\n"
                 "%s"
                 "[route ingest]\n"
                 "path        = /ingest\n"
                 "routing_key = m.ingest\n"
                 "queue       = m.ingest\n"
                 "; unroutable: returned, then acked\n"
                 "[route lost]\n"
                 "path        = /lost\n"
                 "routing_key = m.nowhere\n"
                 "; m.full refuses every message (declared by the suite): nacked\n"
                 "[route full]\n"
                 "path        = /full\n"
                 "routing_key = m.full\n"
                 "[route rpcshort]\n"
                 "path        = /rpc-short\n"
                 "mode        = rpc\n"
                 "routing_key = m.rpc\n"
                 "queue       = m.rpc\n"
                 "timeout     = 700ms\n",
                 http_port, o->workers, g_harness.broker_port, g_harness.log_level, o->format,
                 access) < 0)
        abort();
    return text;
}

/* ------------------------------------------------------------------ */
/* fixtures                                                            */

static const struct suite SUITE = {
    .name = "metrics",
    .shared = {{&g_main, "main", metrics_config, &MAIN_OPTS}},
    .stop_ms = 20000,
    .reject_queue = "m.full",
    .aux = &g_aux,
};

/* ------------------------------------------------------------------ */
/* the exposition format, parsed                                       */

#define MAX_SAMPLES 1024

struct sample {
    char name[96];    /* metric name as written (with _bucket, _sum, _count) */
    char labels[256]; /* between the braces, as written; "" if none */
    double value;
};

struct family {
    char name[96];
    char type[16]; /* counter, gauge, histogram, ... */
    bool help;
};

struct scrape {
    struct sample s[MAX_SAMPLES];
    size_t n;
    struct family fam[64];
    size_t nfam;
};

static struct family *family_of(struct scrape *sc, const char *name, bool add)
{
    for (size_t i = 0; i < sc->nfam; i++)
        if (strcmp(sc->fam[i].name, name) == 0)
            return &sc->fam[i];
    if (!add)
        return NULL;
    assert_true(sc->nfam < sizeof sc->fam / sizeof sc->fam[0]);
    struct family *f = &sc->fam[sc->nfam++];
    memset(f, 0, sizeof *f);
    snprintf(f->name, sizeof f->name, "%s", name);
    return f;
}

static bool name_char(char c, bool first)
{
    return isalpha((unsigned char)c) || c == '_' || c == ':' ||
           (!first && isdigit((unsigned char)c));
}

/* Length of a metric name at P (0 if none). */
static size_t name_len(const char *p)
{
    size_t n = 0;
    while (name_char(p[n], n == 0))
        n++;
    return n;
}

/* P points after '{': check label="value" pairs up to '}'; return the
 * position after '}', or NULL when malformed. */
static const char *parse_labels(const char *p)
{
    if (*p == '}')
        return p + 1;
    for (;;) {
        size_t n = name_len(p);
        if (n == 0 || p[n] != '=' || p[n + 1] != '"')
            return NULL;
        p += n + 2;
        while (*p != '"') {
            if (*p == '\0' || *p == '\n')
                return NULL;
            if (*p == '\\') {
                if (p[1] != '\\' && p[1] != '"' && p[1] != 'n')
                    return NULL;
                p++;
            }
            p++;
        }
        p++;
        if (*p == '}')
            return p + 1;
        if (*p != ',')
            return NULL;
        p++;
    }
}

/* The family a sample belongs to: its own name, or without the histogram
 * suffix when that names a histogram. */
static struct family *family_of_sample(struct scrape *sc, const char *name)
{
    static const char *const suffix[] = {"_bucket", "_sum", "_count"};
    for (size_t i = 0; i < 3; i++) {
        size_t nl = strlen(name), sl = strlen(suffix[i]);
        if (nl > sl && strcmp(name + nl - sl, suffix[i]) == 0) {
            char base[96];
            snprintf(base, sizeof base, "%.*s", (int)(nl - sl), name);
            struct family *f = family_of(sc, base, false);
            if (f != NULL && strcmp(f->type, "histogram") == 0)
                return f;
        }
    }
    return family_of(sc, name, false);
}

/* Parse TEXT into SC, failing the test on anything Prometheus would refuse
 * or that breaks the rules of the format: HELP and TYPE before a family's
 * samples, one TYPE per family, no series twice, the text ending with a
 * newline. */
static void parse_exposition(const char *text, struct scrape *sc)
{
    memset(sc, 0, sizeof *sc);
    size_t tl = strlen(text);
    if (tl == 0 || text[tl - 1] != '\n')
        fail_msg("the exposition does not end with a newline");
    int lineno = 0;
    for (const char *p = text; *p != '\0';) {
        const char *eol = strchr(p, '\n');
        char line[1024];
        size_t ll = (size_t)(eol - p);
        lineno++;
        if (ll >= sizeof line)
            fail_msg("line %d: longer than %zu bytes", lineno, sizeof line);
        memcpy(line, p, ll);
        line[ll] = '\0';
        p = eol + 1;
        if (strncmp(line, "# HELP ", 7) == 0 || strncmp(line, "# TYPE ", 7) == 0) {
            const char *name = line + 7;
            size_t n = name_len(name);
            if (n == 0 || name[n] != ' ' || name[n + 1] == '\0')
                fail_msg("line %d: bad comment: %s", lineno, line);
            char fname[96];
            snprintf(fname, sizeof fname, "%.*s", (int)n, name);
            struct family *f = family_of(sc, fname, true);
            if (line[2] == 'H') {
                if (f->help)
                    fail_msg("line %d: second HELP for %s", lineno, fname);
                f->help = true;
            } else {
                const char *type = name + n + 1;
                if (f->type[0] != '\0')
                    fail_msg("line %d: second TYPE for %s", lineno, fname);
                if (strcmp(type, "counter") != 0 && strcmp(type, "gauge") != 0 &&
                    strcmp(type, "histogram") != 0 && strcmp(type, "summary") != 0 &&
                    strcmp(type, "untyped") != 0)
                    fail_msg("line %d: unknown type %s", lineno, type);
                snprintf(f->type, sizeof f->type, "%s", type);
            }
            continue;
        }
        if (line[0] == '#' || line[0] == '\0')
            fail_msg("line %d: a comment or blank line we do not write: '%s'", lineno, line);
        size_t n = name_len(line);
        if (n == 0)
            fail_msg("line %d: no metric name: %s", lineno, line);
        assert_true(sc->n < MAX_SAMPLES);
        struct sample *s = &sc->s[sc->n];
        snprintf(s->name, sizeof s->name, "%.*s", (int)n, line);
        const char *q = line + n;
        if (*q == '{') {
            const char *end = parse_labels(q + 1);
            if (end == NULL)
                fail_msg("line %d: bad labels: %s", lineno, line);
            snprintf(s->labels, sizeof s->labels, "%.*s", (int)(end - q - 2), q + 1);
            q = end;
        }
        if (*q != ' ')
            fail_msg("line %d: no space before the value: %s", lineno, line);
        q++;
        char *vend;
        if (strcmp(q, "+Inf") == 0 || strcmp(q, "-Inf") == 0 || strcmp(q, "NaN") == 0) {
            s->value = 0; /* well-formed; we never write them */
            fail_msg("line %d: a value we never write: %s", lineno, line);
        }
        s->value = strtod(q, &vend);
        if (vend == q || *vend != '\0')
            fail_msg("line %d: bad value: %s", lineno, line);
        struct family *f = family_of_sample(sc, s->name);
        if (f == NULL || !f->help || f->type[0] == '\0')
            fail_msg("line %d: sample of %s before its HELP and TYPE", lineno, s->name);
        if (strcmp(f->type, "counter") == 0 && s->value < 0)
            fail_msg("line %d: negative counter", lineno);
        for (size_t i = 0; i < sc->n; i++)
            if (strcmp(sc->s[i].name, s->name) == 0 && strcmp(sc->s[i].labels, s->labels) == 0)
                fail_msg("line %d: series %s{%s} twice", lineno, s->name, s->labels);
        sc->n++;
    }
}

/* LABELS less its le="..." label. */
static void without_le(const char *labels, char *out, size_t len, char *le, size_t lelen)
{
    const char *p = strstr(labels, "le=\"");
    assert_non_null(p);
    const char *end = strchr(p + 4, '"');
    assert_non_null(end);
    snprintf(le, lelen, "%.*s", (int)(end - p - 4), p + 4);
    size_t pre = (size_t)(p - labels);
    if (pre > 0 && labels[pre - 1] == ',')
        pre--;
    const char *post = end + 1;
    if (pre == 0 && *post == ',')
        post++;
    snprintf(out, len, "%.*s%s", (int)pre, labels, post);
}

static const struct sample *find(const struct scrape *sc, const char *name, const char *labels)
{
    for (size_t i = 0; i < sc->n; i++)
        if (strcmp(sc->s[i].name, name) == 0 && strcmp(sc->s[i].labels, labels) == 0)
            return &sc->s[i];
    return NULL;
}

/* Value of a series; 0 when absent (a counter not yet incremented). */
static double val(const struct scrape *sc, const char *name, const char *labels)
{
    const struct sample *s = find(sc, name, labels);
    return s != NULL ? s->value : 0;
}

/* Every histogram: per series, buckets in increasing le and never
 * decreasing, the last one +Inf and equal to _count, _sum present. */
static void check_histograms(const struct scrape *sc)
{
    for (size_t f = 0; f < sc->nfam; f++) {
        if (strcmp(sc->fam[f].type, "histogram") != 0)
            continue;
        char bname[128], cname[128], sname[128];
        snprintf(bname, sizeof bname, "%s_bucket", sc->fam[f].name);
        snprintf(cname, sizeof cname, "%s_count", sc->fam[f].name);
        snprintf(sname, sizeof sname, "%s_sum", sc->fam[f].name);
        size_t series = 0;
        for (size_t i = 0; i < sc->n; i++) {
            if (strcmp(sc->s[i].name, cname) != 0)
                continue;
            series++;
            const char *key = sc->s[i].labels;
            double prev_le = -1, prev = 0;
            bool inf = false;
            size_t buckets = 0;
            for (size_t j = 0; j < sc->n; j++) {
                if (strcmp(sc->s[j].name, bname) != 0)
                    continue;
                char rest[256], le[32];
                without_le(sc->s[j].labels, rest, sizeof rest, le, sizeof le);
                if (strcmp(rest, key) != 0)
                    continue;
                if (inf)
                    fail_msg("%s{%s}: a bucket after +Inf", bname, key);
                double b = strcmp(le, "+Inf") == 0 ? 1e300 : strtod(le, NULL);
                inf = strcmp(le, "+Inf") == 0;
                if (b <= prev_le)
                    fail_msg("%s{%s}: le=%s not above the previous bound", bname, key, le);
                if (sc->s[j].value < prev)
                    fail_msg("%s{%s}: le=%s holds %g, less than the bucket before (%g)", bname, key,
                             le, sc->s[j].value, prev);
                prev_le = b;
                prev = sc->s[j].value;
                buckets++;
            }
            if (!inf)
                fail_msg("%s{%s}: no +Inf bucket", bname, key);
            if (prev != sc->s[i].value)
                fail_msg("%s{%s}: +Inf %g, _count %g", bname, key, prev, sc->s[i].value);
            if (find(sc, sname, key) == NULL)
                fail_msg("%s{%s} missing", sname, key);
            assert_int_equal(buckets, 15); /* 0.5 ms .. 10 s, then +Inf */
        }
        if (series == 0)
            fail_msg("histogram %s has no series", sc->fam[f].name);
    }
}

/* GET /metrics on PORT, checked and parsed into SC. */
static void scrape(int port, struct scrape *sc)
{
    struct resp r;
    int rc = http_get(port, "/metrics", &r);
    assert_resp(rc, &r, 200);
    const char *ct = resp_header(&r, "Content-Type");
    if (ct == NULL || strncmp(ct, "text/plain; version=0.0.4", 25) != 0)
        fail_msg("/metrics Content-Type %s", ct ? ct : "(none)");
    assert_has_header(&r, "X-Request-Id");
    assert_int_equal(strlen(r.body), r.body_len);
    parse_exposition(r.body, sc);
    check_histograms(sc);
    resp_free(&r);
}

/* Wait until scrapes show NAME{LABELS} at least WANT; false after MS. */
static bool wait_value(int port, const char *name, const char *labels, double want, int ms,
                       struct scrape *sc)
{
    double end = now_ms() + ms;
    for (;;) {
        scrape(port, sc);
        if (val(sc, name, labels) >= want)
            return true;
        if (now_ms() > end)
            return false;
        sleep_ms(50);
    }
}

static int post(int port, const char *path, const char *extra)
{
    struct resp r;
    int rc = http_post(port, path, XML, extra, DOC, &r);
    int st = rc == 0 ? r.status : -1;
    if (rc == 0)
        resp_free(&r);
    return st;
}

/* ------------------------------------------------------------------ */
/* /metrics                                                            */

static void test_metrics_well_formed(void **state)
{
    (void)state;
    static struct scrape sc;
    scrape(g_main.port, &sc);
    for (size_t i = 0; i < METRIC_FAMILIES_N; i++) {
        struct family *f = family_of(&sc, METRIC_FAMILIES[i][0], false);
        if (f == NULL)
            fail_msg("no family %s", METRIC_FAMILIES[i][0]);
        assert_string_equal(f->type, METRIC_FAMILIES[i][1]);
    }
    /* A histogram per route, the bridge's own answers included. */
    static const char *const routes[] = {"pong",   "healthz", "metrics", "none",
                                         "ingest", "lost",    "full",    "rpcshort"};
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        char labels[64];
        snprintf(labels, sizeof labels, "route=\"%s\"", routes[i]);
        if (find(&sc, "bridge_request_duration_seconds_count", labels) == NULL)
            fail_msg("no duration histogram for route %s", routes[i]);
    }
    assert_non_null(find(&sc, "bridge_rpc_timeouts_total", "route=\"rpcshort\""));
    assert_null(find(&sc, "bridge_rpc_timeouts_total", "route=\"ingest\""));
    assert_non_null(find(&sc, "bridge_amqp_confirms_total", "result=\"return\""));

    /* HEAD gives the headers only; other methods 405. */
    struct resp r;
    int rc = http_req(g_main.port, "HEAD", "/metrics", NULL, NULL, NULL, 0, &r);
    assert_resp(rc, &r, 200);
    assert_int_equal(r.body_len, 0);
    resp_free(&r);
    rc = http_post(g_main.port, "/metrics", XML, NULL, DOC, &r);
    assert_resp(rc, &r, 405);
    assert_string_equal(resp_header(&r, "Allow"), "GET, HEAD");
    resp_free(&r);
    PASS();
}

static void test_counters_move(void **state)
{
    (void)state;
    enum { N = 5 };
    static struct scrape a, b;
    mq_purge("m.ingest");
    scrape(g_main.port, &a);
    for (int i = 0; i < N; i++)
        assert_int_equal(post(g_main.port, "/ingest", NULL), 202);
    struct resp r;
    int rc = http_get(g_main.port, "/no/such/path", &r);
    assert_resp(rc, &r, 404);
    resp_free(&r);
    rc = http_get(g_main.port, "/ingest", &r);
    assert_resp(rc, &r, 405);
    resp_free(&r);
    assert_int_equal(post(g_main.port, "/lost", NULL), 502);
    assert_int_equal(post(g_main.port, "/full", NULL), 503);
    rc = http_get(g_main.port, "/pong", &r);
    assert_resp(rc, &r, 200);
    resp_free(&r);
    scrape(g_main.port, &b);

#define DELTA(name, labels) (val(&b, name, labels) - val(&a, name, labels))
    const char *req = "bridge_http_requests_total";
    assert_int_equal(DELTA(req, "route=\"ingest\",code=\"202\""), N);
    assert_int_equal(DELTA(req, "route=\"ingest\",code=\"405\""), 1);
    assert_int_equal(DELTA(req, "route=\"none\",code=\"404\""), 1);
    assert_int_equal(DELTA(req, "route=\"lost\",code=\"502\""), 1);
    assert_int_equal(DELTA(req, "route=\"full\",code=\"503\""), 1);
    assert_int_equal(DELTA(req, "route=\"pong\",code=\"200\""), 1);
    /* The first scrape itself, counted once its answer left. */
    assert_int_equal(DELTA(req, "route=\"metrics\",code=\"200\""), 1);
    const char *cnt = "bridge_request_duration_seconds_count";
    assert_int_equal(DELTA(cnt, "route=\"ingest\""), N + 1);
    assert_int_equal(DELTA(cnt, "route=\"none\""), 1);
    assert_true(DELTA("bridge_request_duration_seconds_sum", "route=\"ingest\"") > 0);
    /* Every request that reached the worker was checked, every one
     * published waited for its confirm (ack, nack, or return): N + 2. */
    const char *phase = "bridge_request_phase_seconds_count";
    assert_int_equal(DELTA(phase, "phase=\"check\""), N + 2);
    assert_int_equal(DELTA(phase, "phase=\"confirm\""), N + 2);
    assert_int_equal(DELTA(phase, "phase=\"reply\""), 0);
    assert_true(DELTA("bridge_request_phase_seconds_sum", "phase=\"confirm\"") > 0);
    const char *pub = "bridge_amqp_published_total";
    assert_int_equal(DELTA(pub, "route=\"ingest\""), N);
    assert_int_equal(DELTA(pub, "route=\"lost\""), 1);
    assert_int_equal(DELTA(pub, "route=\"full\""), 1);
    const char *conf = "bridge_amqp_confirms_total";
    assert_int_equal(DELTA(conf, "result=\"ack\""), N);
    assert_int_equal(DELTA(conf, "result=\"nack\""), 1);
    assert_int_equal(DELTA(conf, "result=\"return\""), 1);
    assert_int_equal(val(&b, "bridge_inflight", ""), 0);
    assert_int_equal(val(&b, "bridge_pending_bytes", ""), 0);
    assert_int_equal(DELTA("bridge_broker_reconnects_total", ""), 0);
#undef DELTA

    size_t n = 0;
    char **ids = mq_drain_ids("m.ingest", &n);
    ids_free(ids, n);
    assert_int_equal(n, N); /* what was counted is what the queue holds */
    PASS();
}

/* An rpc request nobody answers in time: 504, counted as a timeout; the
 * worker's reply that comes afterwards is counted as late. */
static void test_rpc_timeout_and_late_reply(void **state)
{
    (void)state;
    static struct scrape a, b;
    mq_purge("m.rpc");
    scrape(g_main.port, &a);
    static const char *const slow[] = {"-d", "1000", "-p", "1", NULL};
    echo_start("m.rpc", slow);
    double t0 = now_ms();
    assert_int_equal(post(g_main.port, "/rpc-short", "X-Request-Id: m-late-1\r\n"), 504);
    if (now_ms() - t0 < 650)
        fail_msg("504 after %.0f ms, route timeout 700 ms", now_ms() - t0);
    double late0 = val(&a, "bridge_rpc_late_replies_total", "");
    if (!wait_value(g_main.port, "bridge_rpc_late_replies_total", "", late0 + 1, scale_ms(5000),
                    &b))
        fail_msg("the reply that came after the 504 was not counted as late (%g)",
                 val(&b, "bridge_rpc_late_replies_total", ""));
    assert_int_equal(val(&b, "bridge_rpc_late_replies_total", "") - late0, 1);
    assert_int_equal(val(&b, "bridge_rpc_timeouts_total", "route=\"rpcshort\"") -
                         val(&a, "bridge_rpc_timeouts_total", "route=\"rpcshort\""),
                     1);
    const char *l504 = "route=\"rpcshort\",code=\"504\"";
    assert_int_equal(val(&b, "bridge_http_requests_total", l504) -
                         val(&a, "bridge_http_requests_total", l504),
                     1);
    assert_int_equal(val(&b, "bridge_amqp_published_total", "route=\"rpcshort\"") -
                         val(&a, "bridge_amqp_published_total", "route=\"rpcshort\""),
                     1);
    /* Its duration: in the 0.5 .. 1 s bucket, not below. */
    const char *le05 = "route=\"rpcshort\",le=\"0.5\"", *le1 = "route=\"rpcshort\",le=\"1\"";
    const char *bk = "bridge_request_duration_seconds_bucket";
    assert_int_equal(val(&b, bk, le05) - val(&a, bk, le05), 0);
    assert_int_equal(val(&b, bk, le1) - val(&a, bk, le1), 1);
    PASS();
}

/* /healthz: "ok", then which node each worker is on; /metrics agrees. */
static void test_healthz_names_nodes(void **state)
{
    (void)state;
    struct resp r;
    int rc = http_get(g_main.port, "/healthz", &r);
    assert_resp(rc, &r, 200);
    char want[512];
    snprintf(want, sizeof want,
             "ok\nworker 0: up 127.0.0.1:%d\n"
             "worker 1: up 127.0.0.1:%d\n",
             g_harness.broker_port, g_harness.broker_port);
    assert_string_equal(r.body, want);
    resp_free(&r);

    static struct scrape sc;
    scrape(g_main.port, &sc);
    for (int w = 0; w < 2; w++) {
        char labels[160];
        snprintf(labels, sizeof labels, "worker=\"%d\"", w);
        assert_non_null(find(&sc, "bridge_broker_connected", labels));
        assert_int_equal(val(&sc, "bridge_broker_connected", labels), 1);
        snprintf(labels, sizeof labels, "worker=\"%d\",node=\"127.0.0.1:%d\"", w,
                 g_harness.broker_port);
        if (val(&sc, "bridge_broker_node_info", labels) != 1)
            fail_msg("no bridge_broker_node_info{%s} 1", labels);
    }
    PASS();
}

/* The broker stopped: /healthz 503 naming both workers down, /metrics
 * shows them disconnected (and where they were); started again: both
 * reconnect, and that is counted. */
static void test_broker_down_and_back(void **state)
{
    (void)state;
    static struct scrape a, b;
    scrape(g_main.port, &a);
    assert_int_equal(broker_stop(), 0);
    int last = 0;
    if (!wait_health(g_main.port, 503, scale_ms(15000), &last))
        fail_msg("/healthz %d with the broker stopped", last);
    /* Each worker notices on its own: wait until both say so. */
    struct resp r;
    double end = now_ms() + scale_ms(15000);
    for (;;) {
        int rc = http_get(g_main.port, "/healthz", &r);
        assert_int_equal(rc, 0);
        if (r.status == 503 && strstr(r.body, "worker 0: broker ") != NULL &&
            strstr(r.body, "worker 1: broker ") != NULL)
            break;
        if (now_ms() > end)
            fail_msg("/healthz does not name both workers down: %d %s", r.status, r.body);
        resp_free(&r);
        sleep_ms(50);
    }
    assert_int_equal(strncmp(r.body, "worker ", 7), 0); /* the first line names a worker */
    assert_null(strstr(r.body, ": up "));
    resp_free(&r);
    scrape(g_main.port, &b);
    char node[160];
    for (int w = 0; w < 2; w++) {
        char labels[200];
        snprintf(labels, sizeof labels, "worker=\"%d\"", w);
        assert_non_null(find(&b, "bridge_broker_connected", labels));
        assert_int_equal(val(&b, "bridge_broker_connected", labels), 0);
        snprintf(node, sizeof node, "127.0.0.1:%d", g_harness.broker_port);
        snprintf(labels, sizeof labels, "worker=\"%d\",node=\"%s\"", w, node);
        assert_int_equal(val(&b, "bridge_broker_node_info", labels), 1); /* where it was */
    }
    assert_int_equal(post(g_main.port, "/ingest", NULL), 503);

    assert_int_equal(broker_start(), 0);
    if (!wait_health(g_main.port, 200, scale_ms(30000), &last))
        fail_msg("/healthz %d after the broker came back", last);
    scrape(g_main.port, &b);
    double rec = val(&b, "bridge_broker_reconnects_total", "") -
                 val(&a, "bridge_broker_reconnects_total", "");
    if (rec < 2)
        fail_msg("%g reconnects counted, expected one per worker (2)", rec);
    assert_int_equal(val(&b, "bridge_broker_connected", "worker=\"0\""), 1);
    assert_int_equal(val(&b, "bridge_broker_connected", "worker=\"1\""), 1);
    const char *l503 = "route=\"ingest\",code=\"503\"";
    assert_int_equal(val(&b, "bridge_http_requests_total", l503) -
                         val(&a, "bridge_http_requests_total", l503),
                     1);
    PASS();
}

/* ------------------------------------------------------------------ */
/* logs                                                                */

/* The lines of B's log since its mark, valgrind's own ("==PID==") left
 * out. *N: how many. Free the array and the text with free_lines. */
static char **log_lines(const struct bridge *b, size_t *n, char **text)
{
    *text = slurp(b->log, b->mark);
    size_t cap = 16;
    char **v = xmalloc(cap * sizeof *v);
    *n = 0;
    for (char *p = *text; *p != '\0';) {
        char *eol = strchr(p, '\n');
        if (eol == NULL)
            break; /* a line still being written */
        *eol = '\0';
        if (strncmp(p, "==", 2) != 0) {
            if (*n == cap)
                v = realloc(v, (cap *= 2) * sizeof *v);
            assert_non_null(v);
            v[(*n)++] = p;
        }
        p = eol + 1;
    }
    return v;
}

static const char *line_with(char **lines, size_t n, const char *needle)
{
    for (size_t i = 0; i < n; i++)
        if (strstr(lines[i], needle) != NULL)
            return lines[i];
    return NULL;
}

static void assert_matches(const char *s, const char *re_text)
{
    regex_t re;
    assert_int_equal(regcomp(&re, re_text, REG_EXTENDED | REG_NOSUB), 0);
    int rc = regexec(&re, s, 0, NULL, 0);
    regfree(&re);
    if (rc != 0)
        fail_msg("'%s' does not match %s", s, re_text);
}

#define JSON_STR "\"([^\"\\\\]|\\\\.)*\""
#define JSON_HEAD                                                                                  \
    "^\\{\"time\":\"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z\","          \
    "\"level\":\"(debug|info|warn|error)\",\"worker\":\"[a-z0-9]+\",\"msg\":" JSON_STR

/* The main bridge logs JSON with the access log on: every line one object,
 * one access line per answer with its fields, client-sent text escaped. */
static void test_json_access_log(void **state)
{
    (void)state;
    assert_int_equal(post(g_main.port, "/ingest?batch=7", "X-Request-Id: m-acc\"1\\\r\n"), 202);
    struct resp r;
    size_t len;
    char *raw = fmt_request(&len, "GET", "/pong", NULL, "X-Request-Id: m-acc-2\r\n", NULL, 0);
    struct conn c;
    assert_int_equal(conn_open(&c, g_main.port), 0);
    assert_int_equal(exchange(&c, raw, len, &r, false), 0);
    free(raw);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    conn_close(&c);

    size_t n;
    char *text;
    char **lines = log_lines(&g_main, &n, &text);
    assert_true(n >= 2);
    for (size_t i = 0; i < n; i++)
        assert_matches(lines[i],
                       JSON_HEAD "(,\"[a-z_]+\":(" JSON_STR "|-?[0-9]+(\\.[0-9]+)?))*\\}$");
    const char *a = line_with(lines, n, "\"id\":\"m-acc\\\"1\\\\\"");
    if (a == NULL)
        fail_msg("no access line with the escaped id m-acc\"1\\");
    assert_matches(a, JSON_HEAD ",\"route\":\"ingest\",\"method\":\"POST\","
                                "\"path\":\"/ingest\\?batch=7\",\"status\":202,\"bytes\":0,"
                                "\"duration_ms\":[0-9]+\\.[0-9]{3},\"id\":\"m-acc\\\\\"1\\\\\\\\\","
                                "\"client\":\"127\\.0\\.0\\.1\","
                                "\"trace\":\"[0-9a-f]{32}\"\\}$");
    assert_contains(a, "\"level\":\"info\"");
    assert_contains(a, "\"msg\":\"access\"");
    const char *p = line_with(lines, n, "\"id\":\"m-acc-2\"");
    if (p == NULL)
        fail_msg("no access line for the pong");
    assert_contains(p, "\"route\":\"pong\",\"method\":\"GET\",\"path\":\"/pong\",\"status\":200,"
                       "\"bytes\":5,");
    /* A pong starts no trace: no trace field. */
    if (strstr(p, "\"trace\"") != NULL)
        fail_msg("a pong's access line has a trace: %s", p);
    free(lines);
    free(text);
    PASS();
}

/* Text format: the access line as key=value pairs; then a bridge with the
 * access log left at its default writes none. */
static void test_text_access_log(void **state)
{
    (void)state;
    static const struct log_opts text_on = {1, "text", "yes"};
    bridge_start(&g_aux, "textlog", metrics_config, &text_on);
    g_aux.mark = file_size(g_aux.log);
    struct resp r;
    int rc = http_req(g_aux.port, "GET", "/pong", NULL, "X-Request-Id: m-text-1\r\n", NULL, 0, &r);
    assert_resp(rc, &r, 200);
    resp_free(&r);
    rc = http_req(g_aux.port, "HEAD", "/nowhere", NULL, "X-Request-Id: m-text-2\r\n", NULL, 0, &r);
    assert_int_equal(rc, 0);
    assert_int_equal(r.status, 404);
    resp_free(&r);
    size_t n;
    char *text;
    char **lines = log_lines(&g_aux, &n, &text);
    const char *a = line_with(lines, n, "id=m-text-1");
    if (a == NULL)
        fail_msg("no access line for m-text-1");
    assert_matches(a, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}\\.[0-9]{3}Z INFO  w0 access "
                      "route=pong method=GET path=/pong status=200 bytes=5 "
                      "duration_ms=[0-9]+\\.[0-9]{3} id=m-text-1 client=127\\.0\\.0\\.1$");
    a = line_with(lines, n, "id=m-text-2");
    if (a == NULL)
        fail_msg("no access line for m-text-2");
    /* HEAD: no body bytes sent. */
    assert_contains(a, " access route=none method=HEAD path=/nowhere status=404 bytes=0 ");
    free(lines);
    free(text);
    int st = bridge_stop(&g_aux, scale_ms(20000));
    if (st != 0)
        fail_msg("bridge did not exit 0 on SIGTERM (0x%x)", st);

    static const struct log_opts text_default = {1, "text", NULL};
    bridge_start(&g_aux, "nolog", metrics_config, &text_default);
    g_aux.mark = file_size(g_aux.log);
    rc = http_get(g_aux.port, "/pong", &r);
    assert_resp(rc, &r, 200);
    resp_free(&r);
    assert_int_equal(post(g_aux.port, "/ingest", NULL), 202);
    st = bridge_stop(&g_aux, scale_ms(20000));
    if (st != 0)
        fail_msg("bridge did not exit 0 on SIGTERM (0x%x)", st);
    lines = log_lines(&g_aux, &n, &text);
    assert_true(n > 0); /* it did log: its stop */
    const char *any = line_with(lines, n, " access ");
    if (any != NULL)
        fail_msg("access line with access_log left at its default: %s", any);
    free(lines);
    free(text);
    mq_purge("m.ingest");
    PASS();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        SUITE_TEST(test_metrics_well_formed),
        SUITE_TEST(test_counters_move),
        SUITE_TEST(test_rpc_timeout_and_late_reply),
        SUITE_TEST(test_healthz_names_nodes),
        SUITE_TEST(test_json_access_log),
        SUITE_TEST(test_text_access_log),
        /* stops the broker: last, and its teardown starts it again */
        SUITE_TEST(test_broker_down_and_back),
    };
    return suite_run("ingest-bridge metrics and logs", &SUITE, tests, NULL);
}
