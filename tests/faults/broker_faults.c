/* broker_faults.c - the broker fault suites' shared part (broker_faults.h). */
#include "broker_faults.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#define HTTP_TIMEOUT "10s"  /* [http] timeout of every bridge here */
#define RPC_TIMEOUT_MS 5000 /* route rpc */
/* A client gives up on an answer after this: a hang, counted as unanswered. */
#define CLIENT_WAIT_MS 30000

char g_doc[1200];

size_t g_doc_len;

struct bridge g_main;

struct bridge g_aux;

static bool g_stuck_suspended; /* f.stuck's queue process is suspended: resume it */

char *faults_config(int http_port, const void *arg)
{
    const struct fcfg *fc = arg;
    char uri[512];
    if (fc->uri != NULL)
        snprintf(uri, sizeof uri, "%s", fc->uri);
    else if (fc->amqps)
        snprintf(uri, sizeof uri, "amqps://guest:guest@localhost:%d/%%2f",
                 g_harness.broker_tls_port);
    else
        snprintf(uri, sizeof uri, "amqp://guest:guest@127.0.0.1:%d/%%2f", g_harness.broker_port);
    /* The node asks amqps clients for a certificate of the run's CA. */
    char tls[1600] = "";
    if (fc->amqps)
        snprintf(tls, sizeof tls,
                 "tls_ca      = %s/ca.pem\ntls_cert    = %s/client.pem\n"
                 "tls_key     = %s/client-key.pem\n",
                 g_harness.tls_dir, g_harness.tls_dir, g_harness.tls_dir);
    char *text;
    size_t len;
    FILE *f = xmemstream(&text, &len);
    fprintf(f,
            "; written by tests/faults/broker_faults.c\n"
            "[http]\n"
            "listen      = 127.0.0.1:%d\n"
            "workers     = %d\n"
            "max_body    = %s\n"
            "timeout     = " HTTP_TIMEOUT "\n"
            "pong_path   = /pong\n"
            "\n"
            "[amqp]\n"
            "uri         = %s\n"
            "heartbeat   = %s\n"
            "confirm     = yes\n"
            "max_inflight = 2000\n"
            "%s"
            "\n"
            "[log]\n"
            "level       = %s\n"
            "\n"
            "[route durable]\n"
            "path        = /durable\n"
            "routing_key = f.durable\n"
            "queue       = f.durable\n"
            "persistent  = yes\n"
            "\n"
            "[route other]\n"
            "path        = /other\n"
            "routing_key = f.other\n"
            "queue       = f.other\n"
            "\n"
            "; f.full: declared by the suite with x-max-length 0, reject-publish\n"
            "[route full]\n"
            "path        = /full\n"
            "routing_key = f.full\n"
            "\n"
            "; an exchange that does not exist: the broker closes the channel\n"
            "[route noexch]\n"
            "path        = /noexch\n"
            "exchange    = f.missing\n"
            "routing_key = f.noexch\n"
            "\n"
            "[route rpc]\n"
            "path        = /rpc\n"
            "mode        = rpc\n"
            "routing_key = f.rpc\n"
            "queue       = f.rpc\n"
            "timeout     = %dms\n",
            http_port, fc->workers, fc->max_body != NULL ? fc->max_body : "64KiB", uri,
            fc->heartbeat, tls, g_harness.log_level, RPC_TIMEOUT_MS);
    if (fc->rpclong)
        fprintf(f,
                "\n"
                "; nobody consumes f.nobody: its requests wait until a fault answers them\n"
                "[route rpclong]\n"
                "path        = /rpc-long\n"
                "mode        = rpc\n"
                "routing_key = f.nobody\n"
                "queue       = f.nobody\n"
                "timeout     = %dms\n",
                RPC_LONG_TIMEOUT_MS);
    fclose(f);
    return text;
}

static const struct fcfg MAIN_CFG = {.workers = 2, .heartbeat = "5s", .rpclong = true};

struct loadset g_ls;

static void *load_thread(void *p)
{
    struct load *a = p;
    struct conn c = {.fd = -1};
    int seq = 0;
    char body[256];
    while (!atomic_load(&a->ctl->stop) && a->n < a->cap) {
        if (c.fd < 0) {
            if (atomic_load(&a->ctl->no_reconnect))
                break;
            if (conn_open(&c, a->port) != 0) {
                a->nconnfail++;
                sleep_ms(20);
                continue;
            }
            conn_set_timeout(&c, scale_ms(CLIENT_WAIT_MS));
        }
        struct rec *rc = &a->recs[a->n];
        snprintf(rc->id, sizeof rc->id, "%s-%d-%d-%d", a->tag, (int)getpid(), a->idx, seq++);
        char extra[96];
        snprintf(extra, sizeof extra, "X-Request-Id: %s\r\n", rc->id);
        const char *b = g_doc;
        size_t blen = g_doc_len;
        if (a->rpc) {
            snprintf(body, sizeof body, "<r><id>%s</id></r>", rc->id);
            b = body;
            blen = strlen(body);
        }
        size_t len;
        char *raw = fmt_request(&len, "POST", a->path, XML, extra, b, blen);
        struct resp r;
        memset(&r, 0, sizeof r);
        rc->t_send = now_ms();
        int ok = exchange(&c, raw, len, &r, false);
        rc->t_done = now_ms();
        free(raw);
        a->n++;
        if (ok != 0) {
            rc->status = -1;
            resp_free(&r);
            conn_close(&c);
            continue;
        }
        rc->status = r.status;
        if (a->rpc && r.status == 200 && (r.body_len != blen || memcmp(r.body, b, blen) != 0))
            a->nbadbody++;
        const char *cn = resp_header(&r, "Connection");
        bool close_it = cn != NULL && strcasecmp(cn, "close") == 0;
        resp_free(&r);
        if (close_it || a->fresh)
            conn_close(&c);
        int pause = rc->status == 503 ? a->pause_503_ms : a->pause_ok_ms;
        if (pause > 0)
            sleep_ms(pause);
    }
    conn_close(&c);
    return NULL;
}

void loads_add(int count, int port, const char *path, const char *tag, bool rpc, int cap,
               int pause_ok_ms, int pause_503_ms)
{
    for (int i = 0; i < count; i++) {
        if (g_ls.n == MAXLOAD)
            fail_msg("more than %d load clients", MAXLOAD);
        struct load *l = &g_ls.l[g_ls.n];
        *l = (struct load){.port = port,
                           .path = path,
                           .tag = tag,
                           .idx = g_ls.n,
                           .rpc = rpc,
                           .pause_ok_ms = pause_ok_ms,
                           .pause_503_ms = pause_503_ms,
                           .cap = cap,
                           .ctl = &g_ls.ctl};
        l->recs = calloc((size_t)cap, sizeof *l->recs);
        if (!l->recs)
            abort();
        g_ls.n++;
    }
}

void loads_run(void)
{
    atomic_store(&g_ls.ctl.stop, 0);
    atomic_store(&g_ls.ctl.no_reconnect, 0);
    for (int i = 0; i < g_ls.n; i++)
        if (pthread_create(&g_ls.th[i], NULL, load_thread, &g_ls.l[i]) != 0)
            abort();
    g_ls.running = true;
}

void loads_stop(void)
{
    if (!g_ls.running)
        return;
    atomic_store(&g_ls.ctl.stop, 1);
    for (int i = 0; i < g_ls.n; i++)
        pthread_join(g_ls.th[i], NULL);
    g_ls.running = false;
}

static void loads_free(void)
{
    loads_stop();
    for (int i = 0; i < g_ls.n; i++)
        free(g_ls.l[i].recs);
    memset(&g_ls, 0, sizeof g_ls);
}

struct tally tally(const char *path, double from, double to)
{
    struct tally t;
    memset(&t, 0, sizeof t);
    for (int i = 0; i < g_ls.n; i++) {
        const struct load *l = &g_ls.l[i];
        if (path != NULL && strcmp(l->path, path) != 0)
            continue;
        t.nbadbody += l->nbadbody;
        t.nconnfail += l->nconnfail;
        for (int k = 0; k < l->n; k++) {
            const struct rec *r = &l->recs[k];
            if (r->late || r->t_send < from || r->t_send >= to)
                continue;
            t.n++;
            if (r->status < 0) {
                if (!t.nnoanswer++)
                    snprintf(t.noans_id, sizeof t.noans_id, "%s", r->id);
                continue;
            }
            double ms = r->t_done - r->t_send;
            if (ms > t.slowest_ms)
                t.slowest_ms = ms;
            if (r->status == 202 && !l->rpc)
                t.n202++;
            else if (r->status == 200 && l->rpc)
                t.n200++;
            else if (r->status == 503)
                t.n503++;
            else if (!t.nother++) {
                t.other_status = r->status;
                snprintf(t.other_id, sizeof t.other_id, "%s", r->id);
            }
        }
    }
    return t;
}

void assert_tally_clean(const struct tally *t, const char *what)
{
    if (t->nother)
        fail_msg("%s: %d answers other than 202/200/503, the first %d (request %s)", what,
                 t->nother, t->other_status, t->other_id);
    if (t->nnoanswer)
        fail_msg("%s: %d of %d requests got no answer (the first: %s)", what, t->nnoanswer, t->n,
                 t->noans_id);
    if (t->nbadbody)
        fail_msg("%s: %d rpc answers carried another request's body", what, t->nbadbody);
}

struct waiter g_wait[MAXWAIT];

int g_nwait;

static void *waiter_thread(void *p)
{
    struct waiter *w = p;
    char extra[96];
    snprintf(extra, sizeof extra, "X-Request-Id: %s\r\n", w->id);
    size_t len;
    char *raw = fmt_request(&len, "POST", w->path, XML, extra, g_doc, g_doc_len);
    struct resp r;
    memset(&r, 0, sizeof r);
    w->t_send = now_ms();
    int rc = exchange(&w->c, raw, len, &r, false);
    w->t_done = now_ms();
    w->status = rc == 0 ? r.status : -1;
    resp_free(&r);
    free(raw);
    return NULL;
}

void waiters_start(int n, int port, const char *path, const char *tag)
{
    for (int i = 0; i < n; i++) {
        if (g_nwait == MAXWAIT)
            fail_msg("more than %d waiting requests", MAXWAIT);
        struct waiter *w = &g_wait[g_nwait];
        memset(w, 0, sizeof *w);
        w->port = port;
        w->path = path;
        w->status = -1;
        snprintf(w->id, sizeof w->id, "%s-%d-%d", tag, (int)getpid(), g_nwait);
        if (conn_open(&w->c, port) != 0)
            fail_msg("cannot connect to the bridge on port %d", port);
        conn_set_timeout(&w->c, scale_ms(CLIENT_WAIT_MS));
        if (pthread_create(&w->th, NULL, waiter_thread, w) != 0)
            abort();
        w->started = true;
        g_nwait++;
    }
}

void waiters_join(void)
{
    for (int i = 0; i < g_nwait; i++) {
        if (g_wait[i].started)
            pthread_join(g_wait[i].th, NULL);
        g_wait[i].started = false;
    }
}

static void waiters_free(void)
{
    waiters_join();
    for (int i = 0; i < g_nwait; i++)
        conn_close(&g_wait[i].c);
    g_nwait = 0;
}

struct monitor g_mon;

static void *monitor_thread(void *p)
{
    struct monitor *m = p;
    while (!atomic_load(&m->stop)) {
        struct resp r;
        double t = now_ms();
        int rc = http_get(m->port, "/healthz", &r);
        double took = now_ms() - t;
        if (took > m->slowest_health_ms)
            m->slowest_health_ms = took;
        int st = rc == 0 ? r.status : -1;
        resp_free(&r);
        if (st != 200) {
            m->nbad++;
            if (m->bad_since == 0)
                m->bad_since = t;
            if (atomic_load(&m->t_first_bad) == 0)
                atomic_store(&m->t_first_bad, t);
        } else {
            if (m->bad_since != 0 && t - m->bad_since > m->longest_bad_ms)
                m->longest_bad_ms = t - m->bad_since;
            m->bad_since = 0;
            if (atomic_load(&m->t_first_bad) != 0 && atomic_load(&m->t_good_again) == 0)
                atomic_store(&m->t_good_again, t);
        }
        t = now_ms();
        rc = http_get(m->port, "/pong", &r);
        took = now_ms() - t;
        if (took > m->slowest_pong_ms)
            m->slowest_pong_ms = took;
        if (rc != 0 || r.status != 200)
            m->pong_failures++;
        resp_free(&r);
        sleep_ms(10);
    }
    return NULL;
}

void monitor_start(int port)
{
    memset(&g_mon, 0, sizeof g_mon);
    g_mon.port = port;
    if (pthread_create(&g_mon.th, NULL, monitor_thread, &g_mon) != 0)
        abort();
    g_mon.running = true;
}

void monitor_stop(void)
{
    if (!g_mon.running)
        return;
    atomic_store(&g_mon.stop, 1);
    pthread_join(g_mon.th, NULL);
    g_mon.running = false;
}

/* ------------------------------------------------------------------ */
/* the broker, beyond the harness                                       */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

char **drain_sorted(const char *q, size_t *n)
{
    enum { CH = 2 };
    if (!mq_connect())
        fail_msg("cannot connect to the broker on port %d to read %s", g_harness.broker_port, q);
    amqp_connection_state_t mq = g_harness.mq;
    amqp_channel_open(mq, CH);
    if (!mq_ok(amqp_get_rpc_reply(mq), "channel.open"))
        fail_msg("channel.open to read %s", q);
    amqp_queue_declare_ok_t *d =
        amqp_queue_declare(mq, CH, amqp_cstring_bytes(q), 1, 1, 0, 0, amqp_empty_table);
    if (!mq_ok(amqp_get_rpc_reply(mq), "queue.declare passive") || d == NULL)
        fail_msg("queue %s: passive declare failed", q);
    size_t want = d->message_count;
    char **ids = xmalloc((want + 1) * sizeof *ids);
    *n = 0;
    if (want > 0) {
        amqp_basic_consume_ok_t *ok = amqp_basic_consume(
            mq, CH, amqp_cstring_bytes(q), amqp_empty_bytes, 0, 1, 0, amqp_empty_table);
        if (!mq_ok(amqp_get_rpc_reply(mq), "basic.consume") || ok == NULL)
            fail_msg("basic.consume on %s", q);
        char tag[256];
        snprintf(tag, sizeof tag, "%.*s", (int)ok->consumer_tag.len,
                 (const char *)ok->consumer_tag.bytes);
        while (*n < want) {
            amqp_envelope_t env;
            struct timeval tv = {10, 0};
            amqp_maybe_release_buffers(mq);
            amqp_rpc_reply_t r = amqp_consume_message(mq, &env, &tv, 0);
            if (r.reply_type != AMQP_RESPONSE_NORMAL) {
                (void)mq_ok(r, "consume");
                fail_msg("queue %s: %zu of %zu messages read, then no more", q, *n, want);
            }
            amqp_bytes_t id = env.message.properties.message_id;
            char *s = xmalloc(id.len + 1);
            memcpy(s, id.bytes, id.len);
            s[id.len] = '\0';
            ids[(*n)++] = s;
            amqp_destroy_envelope(&env);
        }
        /* Nobody publishes to Q now: nothing arrives between these. */
        amqp_basic_cancel(mq, CH, amqp_cstring_bytes(tag));
        if (!mq_ok(amqp_get_rpc_reply(mq), "basic.cancel"))
            fail_msg("basic.cancel on %s", q);
    }
    if (!mq_ok(amqp_channel_close(mq, CH, AMQP_REPLY_SUCCESS), "channel.close"))
        fail_msg("channel.close after reading %s", q);
    qsort(ids, *n, sizeof *ids, cmp_str);
    return ids;
}

bool sorted_has(char **ids, size_t n, const char *id)
{
    return bsearch(&id, ids, n, sizeof *ids, cmp_str) != NULL;
}

void expect_queued(const char *q, const char *first, size_t stride, int n)
{
    size_t nq;
    char **ids = drain_sorted(q, &nq);
    int lost = 0;
    for (int i = 0; i < n; i++)
        if (!sorted_has(ids, nq, first + (size_t)i * stride))
            lost++;
    ids_free(ids, nq);
    if (lost)
        fail_msg("%d accepted messages are not in the queue", lost);
}

struct qcheck check_queue(const char *path, char **a, size_t na, char **b, size_t nb)
{
    struct qcheck c;
    memset(&c, 0, sizeof c);
    for (int i = 0; i < g_ls.n; i++) {
        const struct load *l = &g_ls.l[i];
        if (l->rpc || strcmp(l->path, path) != 0)
            continue;
        for (int k = 0; k < l->n; k++) {
            const struct rec *r = &l->recs[k];
            bool in = sorted_has(a, na, r->id) || (b != NULL && sorted_has(b, nb, r->id));
            if (r->status == 202) {
                c.n202++;
                if (!in && !c.lost++)
                    snprintf(c.first_lost, sizeof c.first_lost, "%s", r->id);
            } else if (in) {
                c.stored503++;
            }
        }
    }
    return c;
}

struct qcheck check_durable(void)
{
    size_t nq;
    char **q = drain_sorted("f.durable", &nq);
    struct qcheck c = check_queue("/durable", q, nq, NULL, 0);
    ids_free(q, nq);
    return c;
}

struct qcheck expect_durable_kept(void)
{
    struct qcheck c = check_durable();
    if (c.lost)
        fail_msg("%d accepted messages lost (the first: %s)", c.lost, c.first_lost);
    return c;
}

struct node2 g_node2;

int node2_sh(const char *cmd)
{
    char dirv[600], portv[32], nodev[128], log[600];
    snprintf(dirv, sizeof dirv, "BROKER_DIR=%s", g_node2.dir);
    snprintf(portv, sizeof portv, "BROKER_PORT=%d", g_node2.port);
    snprintf(nodev, sizeof nodev, "BROKER_NODE=%s", g_node2.node);
    snprintf(log, sizeof log, "%s/node2.out", g_harness.tmp);
    char *argv[] = {"env", dirv, portv, nodev, (char *)g_harness.broker_sh, (char *)cmd, NULL};
    long mark = file_size(log);
    pid_t pid = spawn(argv, log, NULL);
    int st;
    if (!wait_exit(pid, 150000, &st)) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        st = -1;
    }
    if (st != 0) {
        char *s = slurp(log, mark);
        print_message("node 2: broker.sh %s failed (0x%x):\n%s\n", cmd, st, s);
        free(s);
        return -1;
    }
    return 0;
}

void node2_stop(void)
{
    if (!g_node2.recorded)
        return;
    (void)node2_sh("stop");
    g_node2.recorded = false;
}

/* ------------------------------------------------------------------ */
/* small helpers                                                        */
int post_status(int port, const char *path, double *ms)
{
    struct resp r;
    int rc = http_req(port, "POST", path, XML, NULL, g_doc, g_doc_len, &r);
    int st = rc == 0 ? r.status : -1;
    if (ms)
        *ms = r.ms;
    resp_free(&r);
    return st;
}

double wait_status(int port, const char *path, int want, int ms)
{
    double t0 = now_ms(), end = t0 + ms;
    do {
        if (post_status(port, path, NULL) == want)
            return now_ms() - t0;
        sleep_ms(50);
    } while (now_ms() < end);
    return -1;
}

int health_count(int port, const char *needle, double *ms)
{
    struct resp r;
    if (http_get(port, "/healthz", &r) != 0)
        return -1;
    if (ms)
        *ms = r.ms;
    int n = 0;
    for (const char *p = r.body; p && (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    resp_free(&r);
    return n;
}

void expect_alive(struct bridge *b)
{
    int st;
    if (!bridge_alive(b, &st)) {
        char d[64];
        fail_msg("the bridge died: %s", describe_status(st, d, sizeof d));
    }
}

void stop_clean(struct bridge *b, int bound_ms)
{
    int st = bridge_stop(b, bound_ms);
    if (st != 0) {
        char d[64];
        fail_msg("bridge did not exit 0 on SIGTERM: %s",
                 st == -1 ? "hung, killed" : describe_status(st, d, sizeof d));
    }
}

/* ------------------------------------------------------------------ */
/* fixtures                                                            */

/* The ~1 KB document the clients post: an order with a note. */
static int faults_prepare(void)
{
    int n = snprintf(g_doc, sizeof g_doc,
                     "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<order><id>42</id><note>");
    for (; n < 1000; n++)
        g_doc[n] = (char)('a' + n % 26);
    n += snprintf(g_doc + n, sizeof g_doc - (size_t)n, "</note></order>\n");
    g_doc_len = (size_t)n;
    return 0;
}

/* A fault of the previous test may still echo (a reconnect under way):
 * start from a bridge that is up. */
static void faults_test_begin(void)
{
    int last;
    if (!wait_health(g_main.port, 200, scale_ms(30000), &last))
        print_message("main bridge: /healthz %d at the start of the test\n", last);
}

const struct suite FAULTS_SUITE = {
    .name = "faults",
    .shared = {{&g_main, "main", faults_config, &MAIN_CFG}},
    .stop_ms = 30000,
    .reject_queue = "f.full",
    .aux = &g_aux,
    .prepare = faults_prepare,
    .test_begin = faults_test_begin,
};

int faults_teardown(void **state)
{
    (void)state;
    bool disturbed = g_harness.broker_stopped || g_harness.broker_frozen || g_harness.watermark_low;
    /* Clients first: they may wait on a bridge or broker the rest undoes.
     * Tell them to stop and let a frozen broker go, then join them. */
    atomic_store(&g_ls.ctl.stop, 1);
    atomic_store(&g_mon.stop, 1);
    if (g_harness.broker_frozen)
        (void)broker_thaw();
    monitor_stop();
    loads_free();
    waiters_free();
    suite_test_logs();
    if (g_stuck_suspended && stuck_queue(false) != 0)
        print_message("cannot resume the process of queue f.stuck\n");
    echo_stop();
    node2_stop();
    broker_restore();
    if (disturbed || !g_harness.passed) {
        int last;
        if (!wait_health(g_main.port, 200, 30000, &last))
            print_message("main bridge: /healthz %d 30 s after the broker was restored\n", last);
    }
    return 0;
}

char *big_doc(size_t len, char fill)
{
    char *doc = xmalloc(len + 1);
    memcpy(doc, "<big>", 5);
    memset(doc + 5, fill, len - 11);
    memcpy(doc + len - 6, "</big>", 6);
    doc[len] = '\0';
    return doc;
}

int stuck_queue(bool suspend)
{
    char expr[256];
    snprintf(expr, sizeof expr,
             "{ok, Q} = rabbit_amqqueue:lookup(rabbit_misc:r(<<\"/\">>, queue, "
             "<<\"f.stuck\">>)), sys:%s(amqqueue:get_pid(Q)).",
             suspend ? "suspend" : "resume");
    int rc = broker_ctl("eval", expr);
    if (rc == 0)
        g_stuck_suspended = suspend;
    return rc;
}

int post_ok(int port, int n, const char *tag, int *other)
{
    struct conn c;
    if (conn_open(&c, port) != 0)
        fail_msg("connect");
    int n202 = 0;
    for (int i = 0; i < n; i++) {
        char extra[96];
        snprintf(extra, sizeof extra, "X-Request-Id: %s-%d-%d\r\n", tag, (int)getpid(), i);
        size_t len;
        char *raw = fmt_request(&len, "POST", "/ok", XML, extra, g_doc, g_doc_len);
        struct resp r;
        memset(&r, 0, sizeof r);
        int rc = exchange(&c, raw, len, &r, false);
        free(raw);
        int st = rc == 0 ? r.status : -1;
        resp_free(&r);
        if (st == 202)
            n202++;
        else if (*other == 0)
            *other = st;
        if (rc != 0) {
            conn_close(&c);
            if (conn_open(&c, port) != 0)
                fail_msg("connect");
        }
    }
    conn_close(&c);
    return n202;
}

void freeze_fully(int ms)
{
    if (broker_freeze() != 0)
        fail_msg("kill -STOP of the broker failed");
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%d/task", (int)broker_pid());
    double end = now_ms() + ms;
    for (;;) {
        int running = 0, seen = 0;
        DIR *d = opendir(dir);
        if (d == NULL)
            fail_msg("cannot read %s", dir);
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            char path[384];
            snprintf(path, sizeof path, "%s/%s/stat", dir, e->d_name);
            char *st = slurp(path, 0);
            const char *rp = strrchr(st, ')'); /* after "pid (comm)" */
            if (rp != NULL && rp[1] == ' ' && rp[2] != 'T' && rp[2] != 't')
                running++;
            seen++;
            free(st);
        }
        closedir(d);
        if (seen > 0 && running == 0)
            return;
        if (now_ms() > end)
            fail_msg("%d of the broker's %d threads still not stopped %d ms after kill -STOP",
                     running, seen, ms);
        sleep_ms(5);
    }
}

void *once_post_thread(void *p)
{
    struct once_post *o = p;
    o->status = -1;
    o->after = 0;
    struct conn c;
    if (conn_open(&c, o->port) != 0)
        return NULL;
    conn_set_timeout(&c, scale_ms(CLIENT_WAIT_MS));
    char extra[96];
    /* Connection: close: the answer is the last thing on it. */
    snprintf(extra, sizeof extra, "X-Request-Id: %s\r\nConnection: close\r\n", o->id);
    size_t n;
    char *raw = fmt_request(&n, "POST", o->path, XML, extra, o->doc, o->len);
    struct resp r;
    if (exchange(&c, raw, n, &r, false) == 0) {
        o->status = r.status;
        o->done = now_ms();
        resp_free(&r);
        /* A second answer to the same request would arrive here. */
        o->after = conn_wait_closed(&c, scale_ms(CLIENT_WAIT_MS));
    }
    free(raw);
    conn_close(&c);
    return NULL;
}
