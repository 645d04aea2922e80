/* test_broker_faults.c - the broker misbehaves under a running bridge, and
 * the bridge keeps its promises: nothing answered 202 is lost, every request
 * is answered exactly once, a broken broker gets 503 at once instead of a
 * hang, and the bridge comes back on its own. The broker is killed with
 * SIGKILL, stopped, frozen, alarmed, has its connections closed under it,
 * refuses publishes, loses an exchange, fails over to a second node; and the
 * bridge is stopped with SIGTERM under load. Each test counts what happened
 * and records it with result_row() for the README's Reliability table.
 *
 * Run through tests/integration/run.sh (make test-faults), which starts the
 * private node; tests that disturb it put it back in their teardown
 * (broker_restore), so their order does not matter. Timings are recorded,
 * and asserted only with loose bounds (a noisy 2-core machine). */

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

#include "harness.h"
#include "harness_cmocka.h" /* <cmocka.h>, assert_resp... */

#define XML "application/xml"
#define HTTP_TIMEOUT "10s" /* [http] timeout of every bridge here */
#define HTTP_TIMEOUT_MS 10000
#define RPC_TIMEOUT_MS 5000       /* route rpc */
#define RPC_LONG_TIMEOUT_MS 20000 /* route rpclong: waits longer than any fault here */
/* A client gives up on an answer after this: a hang, counted as unanswered. */
#define CLIENT_WAIT_MS 30000

static char g_doc[1200]; /* ~1 KB XML document */
static size_t g_doc_len;

static struct bridge g_main; /* shared by most tests, started once */
static struct bridge g_aux;  /* a test's own instance */

static bool g_stuck_suspended; /* f.stuck's queue process is suspended: resume it */
static int stuck_queue(bool suspend);

/* ------------------------------------------------------------------ */
/* config                                                              */

/* What a bridge of this suite varies. */
struct fcfg {
    int workers;
    const char *heartbeat; /* [amqp] heartbeat */
    const char *uri;       /* NULL: the private node */
    bool rpclong;          /* add route rpclong (20 s timeout: also the drain bound) */
    const char *max_body;  /* [http] max_body; NULL: 64KiB */
    bool amqps;            /* amqps:// to the node's TLS listener, with the run's certificates */
};

/* Routes (queues prefixed f.):
 *   /durable  publish, persistent, durable queue f.durable
 *   /other    publish, durable queue f.other
 *   /full     publish to f.full, declared by the suite with reject-publish
 *   /noexch   publish to the exchange f.missing, which does not exist
 *   /rpc      rpc on f.rpc (build/echo-worker answers when a test starts it)
 *   /rpc-long rpc on f.nobody, which nobody consumes (only with rpclong)
 * A bridge_config_fn; ARG: const struct fcfg *. */
static char *faults_config(int http_port, const void *arg)
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
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        abort();
    fprintf(f,
            "; written by tests/faults/test_broker_faults.c\n"
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

/* ------------------------------------------------------------------ */
/* clients under load                                                  */

/* One request a load client sent. */
struct rec {
    char id[40];
    int status;    /* -1: no answer (connection ended or CLIENT_WAIT_MS passed) */
    double t_send; /* now_ms() just before sending */
    double t_done; /* when the answer (or the failure) came */
    bool late;     /* SIGTERM: sent to a bridge that had stopped reading; not counted */
};

/* Shared by the clients of one load. */
struct loadctl {
    atomic_int stop;         /* finish the current request, then stop */
    atomic_int no_reconnect; /* once a connection ends, do not open another */
};

/* One client: a keep-alive connection posting to PATH until told to stop. */
struct load {
    int port;
    const char *path;
    const char *tag; /* request ids are TAG-PID-IDX-SEQ */
    int idx;
    bool rpc;         /* body carries the id; a 200 must echo it byte for byte */
    int pause_ok_ms;  /* after an answer that is not 503 */
    int pause_503_ms; /* after a 503, as a client honouring Retry-After would, sooner */
    int cap;          /* requests at most (recs) */
    struct loadctl *ctl;

    struct rec *recs; /* cap entries */
    int n;            /* requests sent */
    int nconnfail;    /* connects refused (no request sent) */
    int nbadbody;     /* rpc 200 with a body that is not the request's */
};

#define MAXLOAD 32
struct loadset {
    struct loadctl ctl;
    struct load l[MAXLOAD];
    pthread_t th[MAXLOAD];
    int n;
    bool running;
};

static struct loadset g_ls; /* the current test's load; teardown stops it */

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
        if (close_it)
            conn_close(&c);
        int pause = rc->status == 503 ? a->pause_503_ms : a->pause_ok_ms;
        if (pause > 0)
            sleep_ms(pause);
    }
    conn_close(&c);
    return NULL;
}

/* Add COUNT clients posting to PATH on PORT (before loads_run). */
static void loads_add(int count, int port, const char *path, const char *tag, bool rpc, int cap,
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

static void loads_run(void)
{
    atomic_store(&g_ls.ctl.stop, 0);
    atomic_store(&g_ls.ctl.no_reconnect, 0);
    for (int i = 0; i < g_ls.n; i++)
        if (pthread_create(&g_ls.th[i], NULL, load_thread, &g_ls.l[i]) != 0)
            abort();
    g_ls.running = true;
}

/* Stop and join the clients (each finishes its request: CLIENT_WAIT_MS at
 * most); their records stay until loads_free. */
static void loads_stop(void)
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

/* What a load's clients got, for requests sent in [FROM, TO) (ms, now_ms
 * clock), on PATH (NULL: any). */
struct tally {
    int n, n202, n200, n503, nother, nnoanswer, nbadbody, nconnfail;
    int other_status;  /* the first "other" status seen */
    char other_id[40]; /* and its request */
    char noans_id[40]; /* the first request without an answer */
    double slowest_ms; /* slowest answer */
};

static struct tally tally(const char *path, double from, double to)
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

#define ALL_TIME -1e300, 1e300

/* The promises every load must keep: every request answered, with a status
 * the contract allows. */
static void assert_tally_clean(const struct tally *t, const char *what)
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

/* ------------------------------------------------------------------ */
/* one request that waits, timed                                        */

struct waiter {
    int port;
    const char *path;
    char id[48];
    int status;    /* -1: no answer */
    double t_send; /* just before sending */
    double t_done; /* answer (or failure) */
    struct conn c; /* connected before the thread starts */
    pthread_t th;
    bool started;
};

#define MAXWAIT 16
static struct waiter g_wait[MAXWAIT];
static int g_nwait;

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

/* Start N requests to PATH, each on its own connection and thread. */
static void waiters_start(int n, int port, const char *path, const char *tag)
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

static void waiters_join(void)
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

/* ------------------------------------------------------------------ */
/* /healthz and /pong, watched                                          */

struct monitor {
    int port;
    atomic_int stop;
    pthread_t th;
    bool running;
    /* written by the thread, read after monitor_stop (or atomically) */
    _Atomic double t_first_bad;  /* first /healthz other than 200 (0: none) */
    _Atomic double t_good_again; /* first 200 after that (0: none yet) */
    int nbad;
    double bad_since;      /* start of the current unhealthy stretch, 0 if healthy */
    double longest_bad_ms; /* longest unhealthy stretch that ended */
    double slowest_health_ms;
    double slowest_pong_ms;
    int pong_failures; /* pong not 200, or no answer */
};

static struct monitor g_mon;

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

static void monitor_start(int port)
{
    memset(&g_mon, 0, sizeof g_mon);
    g_mon.port = port;
    if (pthread_create(&g_mon.th, NULL, monitor_thread, &g_mon) != 0)
        abort();
    g_mon.running = true;
}

static void monitor_stop(void)
{
    if (!g_mon.running)
        return;
    atomic_store(&g_mon.stop, 1);
    pthread_join(g_mon.th, NULL);
    g_mon.running = false;
}

/* Wait until the monitor saw the bridge unhealthy and then healthy again;
 * false after MS. */
static bool monitor_wait_recovered(int ms)
{
    double end = now_ms() + ms;
    while (now_ms() < end) {
        if (atomic_load(&g_mon.t_first_bad) != 0 && atomic_load(&g_mon.t_good_again) != 0)
            return true;
        sleep_ms(10);
    }
    return false;
}

/* ------------------------------------------------------------------ */
/* the broker, beyond the harness                                       */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every message id in queue Q of the broker on g_harness.broker_port,
 * consumed (no-ack, on a channel of our own: far faster than basic.get for
 * thousands), sorted; *N: how many. ids_free() them. The consumer is
 * cancelled and the channel closed before this returns: a no-ack consumer
 * the broker still believed in would swallow the next test's messages. */
static char **drain_sorted(const char *q, size_t *n)
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

static bool sorted_has(char **ids, size_t n, const char *id)
{
    return bsearch(&id, ids, n, sizeof *ids, cmp_str) != NULL;
}

static int sorted_dups(char **ids, size_t n)
{
    int d = 0;
    for (size_t i = 1; i < n; i++)
        if (strcmp(ids[i - 1], ids[i]) == 0)
            d++;
    return d;
}

/* The load's publishes on PATH against the queue's ids (sorted; two lists
 * for two nodes, B may be NULL). */
struct qcheck {
    int n202;      /* answered 202 */
    int lost;      /* answered 202, not in the queue */
    int stored503; /* answered 503, in the queue anyway (at-least-once) */
    char first_lost[40];
};

static struct qcheck check_queue(const char *path, char **a, size_t na, char **b, size_t nb)
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

/* The pids of the bridge's broker connections (connection_name "ingest-bridge
 * wN"), from rabbitmqctl list_connections; how many, -1 on error. */
static int bridge_conn_pids(char pids[][128], int max)
{
    char *argv[] = {(char *)g_harness.broker_sh, "ctl", "list_connections",  "-q",
                    "--no-table-headers",        "pid", "client_properties", NULL};
    char *out;
    int st = run_capture(argv, NULL, &out);
    if (st != 0) {
        print_message("rabbitmqctl list_connections: status 0x%x:\n%s\n", st, out);
        free(out);
        return -1;
    }
    int n = 0;
    char *save = NULL;
    for (char *line = strtok_r(out, "\n", &save); line && n < max;
         line = strtok_r(NULL, "\n", &save)) {
        if (!strstr(line, "\"connection_name\",\"ingest-bridge w") || line[0] != '<')
            continue;
        size_t k = strcspn(line, " \t");
        if (k >= 128)
            continue;
        memcpy(pids[n], line, k);
        pids[n][k] = '\0';
        n++;
    }
    free(out);
    return n;
}

/* rabbitmqctl close_connection on each of PIDS at once; 0 when all did. */
static int close_connections(char pids[][128], int n)
{
    pid_t ps[8];
    char log[600];
    snprintf(log, sizeof log, "%s/close_connection.out", g_harness.tmp);
    for (int i = 0; i < n && i < 8; i++) {
        char *argv[] = {
            (char *)g_harness.broker_sh, "ctl", "close_connection", pids[i], "fault test", NULL};
        ps[i] = spawn(argv, log, NULL);
    }
    int bad = 0;
    for (int i = 0; i < n && i < 8; i++) {
        int st;
        if (!wait_exit(ps[i], scale_ms(30000), &st)) {
            kill(ps[i], SIGKILL);
            waitpid(ps[i], &st, 0);
            st = -1;
        }
        if (st != 0)
            bad++;
    }
    if (bad) {
        char *s = slurp(log, 0);
        print_message("close_connection failed:\n%s\n", s);
        free(s);
    }
    return bad ? -1 : 0;
}

/* Has PID exited (gone, or a zombie nobody reaped yet)? */
static bool proc_gone(pid_t pid)
{
    if (kill(pid, 0) != 0)
        return true;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    char *s = slurp(path, 0);
    const char *p = strrchr(s, ')');
    bool gone = p == NULL || p[1] == '\0' || p[2] == 'Z' || p[2] == 'X';
    free(s);
    return gone;
}

/* SIGKILL to the node's Erlang VM; the harness restarts it (broker_restore)
 * if the test ends before it does. Returns when the VM is gone. */
static void broker_kill9(void)
{
    pid_t bp = broker_pid();
    if (bp <= 1)
        fail_msg("no broker pid file under %s", g_harness.broker_dir);
    g_harness.broker_stopped = true;
    if (kill(bp, SIGKILL) != 0)
        fail_msg("kill -9 %d: %s", (int)bp, strerror(errno));
    mq_disconnect();
    double end = now_ms() + 10000;
    while (!proc_gone(bp) && now_ms() < end)
        sleep_ms(5);
}

/* A second node for the failover test: its own directory, port and name. */
static struct {
    char dir[512];
    char node[96];
    int port;
    bool recorded; /* broker.sh start was run: stop it in teardown */
} g_node2;

static bool port_free(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_ANY);
    bool ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

/* tests/broker.sh CMD for node 2 (BROKER_DIR, _PORT, _NODE set through
 * env(1): the run's own BROKER_DIR is in our environment). 0 or -1. */
static int node2_sh(const char *cmd)
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

static void node2_stop(void)
{
    if (!g_node2.recorded)
        return;
    (void)node2_sh("stop");
    g_node2.recorded = false;
}

/* Read queue Q of node 2 (sorted ids), through the harness pointed there. */
static char **node2_drain(const char *q, size_t *n)
{
    int port1 = g_harness.broker_port;
    mq_disconnect();
    g_harness.broker_port = g_node2.port;
    char **ids = drain_sorted(q, n);
    mq_disconnect();
    g_harness.broker_port = port1;
    return ids;
}

/* ------------------------------------------------------------------ */
/* small helpers                                                        */

/* One POST on a fresh connection; the status, -1 if no answer; *MS: time. */
static int post_status(int port, const char *path, double *ms)
{
    struct resp r;
    int rc = http_req(port, "POST", path, XML, NULL, g_doc, g_doc_len, &r);
    int st = rc == 0 ? r.status : -1;
    if (ms)
        *ms = r.ms;
    resp_free(&r);
    return st;
}

/* POST until one gets WANT (every 50 ms), for at most MS; the time it took,
 * or -1. */
static double wait_status(int port, const char *path, int want, int ms)
{
    double t0 = now_ms(), end = t0 + ms;
    do {
        if (post_status(port, path, NULL) == want)
            return now_ms() - t0;
        sleep_ms(50);
    } while (now_ms() < end);
    return -1;
}

/* Lines of the bridge's log since the test began that contain NEEDLE. */
static int log_count(const struct bridge *b, const char *needle)
{
    char *s = slurp(b->log, b->mark);
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    free(s);
    return n;
}

/* The time of day (ms) of the first (LAST: the last) line of the bridge's
 * log since the test began that contains NEEDLE, from its timestamp
 * (2026-11-24T08:26:29.822Z ...); -1 if none. */
static double log_time(const struct bridge *b, const char *needle, bool last)
{
    char *s = slurp(b->log, b->mark);
    char *hit = strstr(s, needle);
    while (last && hit != NULL) {
        char *next = strstr(hit + 1, needle);
        if (next == NULL)
            break;
        hit = next;
    }
    double t = -1;
    if (hit != NULL) {
        char *line = hit;
        while (line > s && line[-1] != '\n')
            line--;
        int hh, mm, ss, ms;
        if (sscanf(line, "%*4d-%*2d-%*2dT%2d:%2d:%2d.%3dZ", &hh, &mm, &ss, &ms) == 4)
            t = ((hh * 60.0 + mm) * 60 + ss) * 1000 + ms;
    }
    free(s);
    return t;
}

/* How many times /healthz's body says NEEDLE (": broker ": one line per
 * worker that is not up; those up say "worker N: up NODE"); -1 if it did
 * not answer. *MS: how long it took. */
static int health_count(int port, const char *needle, double *ms)
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

static void expect_alive(struct bridge *b)
{
    int st;
    if (!bridge_alive(b, &st)) {
        char d[64];
        fail_msg("the bridge died: %s", describe_status(st, d, sizeof d));
    }
}

/* SIGTERM, exit 0 within the bound. */
static void stop_clean(struct bridge *b, int bound_ms)
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

static const struct suite SUITE = {
    .name = "faults",
    .shared = {{&g_main, "main", faults_config, &MAIN_CFG}},
    .stop_ms = 30000,
    .reject_queue = "f.full",
    .aux = &g_aux,
    .prepare = faults_prepare,
    .test_begin = faults_test_begin,
};

/* Not suite_teardown: the clients go first, and the broker is put back
 * whatever it was, node 2 included. */
static int teardown(void **state)
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

/* ------------------------------------------------------------------ */
/* 1. kill -9 of the broker under load                                  */

static void test_kill9_under_load(void **state)
{
    (void)state;
    enum { CLIENTS = 24, CAP = 4000 };
    mq_purge("f.durable");
    monitor_start(g_main.port);
    loads_add(CLIENTS, g_main.port, "/durable", "k9", false, CAP, 1, 50);
    loads_run();
    sleep_ms(2500);

    double t_kill = now_ms();
    broker_kill9();
    double t_dead = now_ms();
    sleep_ms(1000);
    double t_restart = now_ms();
    if (broker_start() != 0)
        fail_msg("tests/broker.sh start after kill -9 failed");
    double t_up = now_ms();
    int last;
    if (!wait_health(g_main.port, 200, scale_ms(20000), &last))
        fail_msg("/healthz %d %g s after the broker came back", last, scale_ms(20000) / 1000.0);
    double t_healthy = now_ms();
    sleep_ms(2000);
    loads_stop();
    monitor_stop();

    struct tally all = tally(NULL, ALL_TIME);
    struct tally before = tally(NULL, -1e300, t_kill);
    struct tally dead = tally(NULL, t_dead, t_restart);
    struct tally after = tally(NULL, t_healthy, 1e300);
    print_message("kill -9: %d requests: before %d x 202 / %d x 503; node dead %d x 202 / %d x "
                  "503; after %d x 202 / %d x 503; slowest %.0f ms; the VM was gone %.0f ms "
                  "after SIGKILL\n",
                  all.n, before.n202, before.n503, dead.n202, dead.n503, after.n202, after.n503,
                  all.slowest_ms, t_dead - t_kill);
    assert_tally_clean(&all, "kill -9 under load");
    if (before.n202 == 0 || after.n202 == 0)
        fail_msg("no 202 before the kill (%d) or after the restart (%d)", before.n202, after.n202);
    if (dead.n503 == 0)
        fail_msg("no 503 while the broker was dead");
    /* No broker, no confirm: a 202 sent then would be a lie. */
    for (int i = 0; i < g_ls.n; i++)
        for (int k = 0; k < g_ls.l[i].n; k++) {
            const struct rec *r = &g_ls.l[i].recs[k];
            if (r->status == 202 && r->t_send > t_dead && r->t_done < t_restart)
                fail_msg("request %s answered 202 while the broker was dead", r->id);
        }
    if (g_mon.pong_failures)
        fail_msg("/pong failed %d times while the broker was down", g_mon.pong_failures);

    /* When were the requests waiting at the kill answered? When came the
     * first 202 after the restart began? */
    double last_waiting = 0, first_back = 1e300;
    for (int i = 0; i < g_ls.n; i++)
        for (int k = 0; k < g_ls.l[i].n; k++) {
            const struct rec *r = &g_ls.l[i].recs[k];
            if (r->t_send < t_kill && r->t_done > t_kill && r->t_done - t_kill > last_waiting)
                last_waiting = r->t_done - t_kill;
            if (r->status == 202 && r->t_send > t_restart && r->t_done < first_back)
                first_back = r->t_done;
        }

    size_t nq;
    char **q = drain_sorted("f.durable", &nq);
    struct qcheck c = check_queue("/durable", q, nq, NULL, 0);
    int dups = sorted_dups(q, nq);
    ids_free(q, nq);
    if (c.lost)
        fail_msg("%d of %d requests answered 202 are not in the durable queue after kill -9 "
                 "(the first: %s)",
                 c.lost, c.n202, c.first_lost);
    result_row("kill -9 of the broker under load",
               "%d keep-alive clients, 1 KB persistent to a durable queue, %d requests: %d "
               "answered 202, %d answered 503, 0 other, 0 unanswered; after the restart "
               "all %d accepted were in the queue: 0 lost, %d duplicates (%d answered 503 "
               "were stored anyway, at-least-once); requests waiting at the kill answered "
               "503 within %.0f ms; the first 202 %.1f s after the restart began (the node "
               "took %.1f s to start), both workers back %.1f s after it was up",
               CLIENTS, all.n, all.n202, all.n503, c.n202, dups, c.stored503, last_waiting,
               (first_back - t_restart) / 1000, (t_up - t_restart) / 1000,
               (t_healthy - t_up) / 1000);
    PASS();
}

/* ------------------------------------------------------------------ */
/* 2. broker stopped and started                                        */

static void test_clean_stop_start(void **state)
{
    (void)state;
    enum { WAITING = 6, CLIENTS = 4 };
    mq_purge("f.durable");
    mq_purge("f.nobody");
    monitor_start(g_main.port);
    loads_add(CLIENTS, g_main.port, "/durable", "stop", false, 3000, 5, 50);
    loads_run();
    waiters_start(WAITING, g_main.port, "/rpc-long", "stopwait");
    sleep_ms(500);

    double t_stop = now_ms();
    if (broker_stop() != 0)
        fail_msg("tests/broker.sh stop failed");
    double t_stopped = now_ms();
    waiters_join();
    double worst = 0;
    for (int i = 0; i < g_nwait; i++) {
        struct waiter *w = &g_wait[i];
        if (w->status != 503 || w->t_done < t_stop)
            fail_msg("rpc request %s waiting when the broker stopped: %d %.0f ms after the stop "
                     "began, expected 503 after it",
                     w->id, w->status, w->t_done - t_stop);
        if (w->t_done - t_stop > worst)
            worst = w->t_done - t_stop;
    }
    if (worst > (t_stopped - t_stop) + scale_ms(1000))
        fail_msg("waiting requests answered %.0f ms after the stop began, the node was down "
                 "after %.0f ms",
                 worst, t_stopped - t_stop);
    int last;
    if (!wait_health(g_main.port, 503, scale_ms(1000), &last))
        fail_msg("/healthz %d with the broker stopped", last);
    double ms503;
    int st = post_status(g_main.port, "/durable", &ms503);
    if (st != 503)
        fail_msg("publish with the broker stopped: %d", st);
    sleep_ms(500);

    if (broker_start() != 0)
        fail_msg("tests/broker.sh start failed");
    double t_up = now_ms();
    if (!wait_health(g_main.port, 200, scale_ms(15000), &last))
        fail_msg("/healthz %d %g s after the broker came back", last, scale_ms(15000) / 1000.0);
    double t_healthy = now_ms();
    double ms202 = wait_status(g_main.port, "/durable", 202, scale_ms(5000));
    if (ms202 < 0)
        fail_msg("no 202 after the broker came back and /healthz said 200");
    sleep_ms(300);
    loads_stop();
    monitor_stop();

    struct tally all = tally(NULL, ALL_TIME);
    struct tally down = tally(NULL, t_stopped, t_up);
    assert_tally_clean(&all, "broker stopped under load");
    if (down.slowest_ms > scale_ms(2000))
        fail_msg("a publish with the broker stopped took %.0f ms", down.slowest_ms);
    size_t nq;
    char **q = drain_sorted("f.durable", &nq);
    struct qcheck c = check_queue("/durable", q, nq, NULL, 0);
    ids_free(q, nq);
    if (c.lost)
        fail_msg("%d accepted messages lost over a clean broker restart (the first: %s)", c.lost,
                 c.first_lost);
    result_row("broker stopped (rabbitmqctl stop) and started",
               "%d rpc requests waiting answered 503 within %.1f s of the stop command (the "
               "node took %.1f s to stop); publishes while down 503 in at most %.0f ms, "
               "/healthz 503; 202 again %.1f s after the node was up; under load %d "
               "requests: %d x 202, %d x 503, 0 unanswered, 0 lost",
               g_nwait, worst / 1000, (t_stopped - t_stop) / 1000, down.slowest_ms,
               (t_healthy - t_up) / 1000, all.n, all.n202, all.n503);
    PASS();
}

/* ------------------------------------------------------------------ */
/* 3. rabbitmqctl close_connection                                      */

static void test_close_connection(void **state)
{
    (void)state;
    enum { WAITING = 6, CLIENTS = 4 };
    char pids[8][128];
    int n = bridge_conn_pids(pids, 8);
    if (n != 2)
        fail_msg("the broker lists %d connections of the bridge, expected 2 (one per worker)", n);
    mq_purge("f.durable");
    mq_purge("f.nobody");
    monitor_start(g_main.port);
    loads_add(CLIENTS, g_main.port, "/durable", "cc", false, 3000, 5, 50);
    loads_run();
    waiters_start(WAITING, g_main.port, "/rpc-long", "ccwait");
    sleep_ms(500);

    double t0 = now_ms();
    if (close_connections(pids, n) != 0)
        fail_msg("rabbitmqctl close_connection failed");
    double t1 = now_ms();
    waiters_join();
    double worst = 0;
    for (int i = 0; i < g_nwait; i++) {
        struct waiter *w = &g_wait[i];
        if (w->status != 503 || w->t_done < t0)
            fail_msg("rpc request %s waiting when its connection was closed: %d %.0f ms after "
                     "the close began, expected 503 after it",
                     w->id, w->status, w->t_done - t0);
        if (w->t_done - t0 > worst)
            worst = w->t_done - t0;
    }
    if (worst > (t1 - t0) + scale_ms(1000))
        fail_msg("waiting requests answered %.0f ms after close_connection began (it took %.0f "
                 "ms)",
                 worst, t1 - t0);
    if (!monitor_wait_recovered(scale_ms(10000))) {
        /* Back before the monitor looked? Then /healthz is 200 by now. */
        int last;
        if (!wait_health(g_main.port, 200, scale_ms(1000), &last))
            fail_msg("/healthz %d %g s after close_connection", last, scale_ms(10000) / 1000.0);
    }
    if (wait_status(g_main.port, "/durable", 202, scale_ms(5000)) < 0)
        fail_msg("no 202 after the connections were closed");
    sleep_ms(300);
    loads_stop();
    monitor_stop();

    struct tally all = tally(NULL, ALL_TIME);
    assert_tally_clean(&all, "close_connection under load");
    int lost_lines = log_count(&g_main, "lost: closed by broker: 320");
    if (lost_lines != 2)
        fail_msg("the bridge logged %d connections closed by the broker, expected 2", lost_lines);
    char pids2[8][128];
    int n2 = bridge_conn_pids(pids2, 8);
    if (n2 != 2)
        fail_msg("after reconnecting the broker lists %d connections of the bridge", n2);
    for (int i = 0; i < n2; i++)
        for (int k = 0; k < n; k++)
            if (strcmp(pids2[i], pids[k]) == 0)
                fail_msg("connection %s survived close_connection", pids[k]);
    size_t nq;
    char **q = drain_sorted("f.durable", &nq);
    struct qcheck c = check_queue("/durable", q, nq, NULL, 0);
    ids_free(q, nq);
    if (c.lost)
        fail_msg("%d accepted messages lost (the first: %s)", c.lost, c.first_lost);
    result_row("rabbitmqctl close_connection on the bridge's 2 connections",
               "%d rpc requests waiting answered 503 at once (%.0f ms after the command "
               "began, which took %.0f ms); both workers reconnected, /healthz 503 for at "
               "most %.0f ms, then 202; under load %d requests: %d x 202, %d x 503, 0 "
               "unanswered, 0 lost",
               g_nwait, worst, t1 - t0, g_mon.longest_bad_ms, all.n, all.n202, all.n503);
    PASS();
}

/* ------------------------------------------------------------------ */
/* 4. kill -STOP with a short heartbeat                                  */

static void test_freeze_heartbeat(void **state)
{
    (void)state;
    enum { WAITING = 4, CLIENTS = 8 };
    static const struct fcfg cfg = {.workers = 2, .heartbeat = "2s", .rpclong = true};
    bridge_start(&g_aux, "freeze", faults_config, &cfg);
    g_aux.mark = file_size(g_aux.log);
    mq_purge("f.durable");
    mq_purge("f.nobody");
    /* Idle for more than two heartbeats: the bridge's timer keeps the
     * connections alive (the broker would close them otherwise). */
    sleep_ms(4500);
    if (log_count(&g_aux, "lost") != 0)
        fail_msg("an idle connection was lost with heartbeat 2 s");
    double ms;
    if (post_status(g_aux.port, "/durable", &ms) != 202)
        fail_msg("no 202 before the freeze");
    monitor_start(g_aux.port);
    loads_add(CLIENTS, g_aux.port, "/durable", "frz", false, 4000, 5, 50);
    loads_run();
    sleep_ms(500);

    if (broker_freeze() != 0)
        fail_msg("kill -STOP of the broker failed");
    double t_freeze = now_ms();
    waiters_start(WAITING, g_aux.port, "/durable", "frozen");
    waiters_start(WAITING, g_aux.port, "/rpc-long", "frozenrpc");
    waiters_join();
    double worst = 0;
    for (int i = 0; i < g_nwait; i++) {
        struct waiter *w = &g_wait[i];
        if (w->status != 503)
            fail_msg("request %s on %s with the broker frozen: %d, expected 503", w->id, w->path,
                     w->status);
        if (w->t_done - t_freeze > worst)
            worst = w->t_done - t_freeze;
    }
    if (worst > scale_ms(8000))
        fail_msg("publishes waiting on the frozen broker answered after %.0f ms (heartbeat 2 s)",
                 worst);
    /* Each connection notices on its own (heartbeats have their own
     * phase): wait until /healthz names both workers down. */
    double end = now_ms() + scale_ms(8000);
    while (health_count(g_aux.port, ": broker ", NULL) < 2) {
        if (now_ms() > end)
            fail_msg("/healthz does not name both workers down %.0f ms into the freeze",
                     now_ms() - t_freeze);
        sleep_ms(20);
    }
    double t_both = now_ms();
    /* Noticed: new requests are refused at once. */
    double ms503 = 0;
    for (int i = 0; i < 5; i++) {
        int st = post_status(g_aux.port, "/durable", &ms);
        if (st != 503)
            fail_msg("publish %d with the broker frozen (noticed): %d", i, st);
        if (ms > ms503)
            ms503 = ms;
    }
    if (ms503 > scale_ms(1000))
        fail_msg("a 503 with the broker frozen took %.0f ms", ms503);
    double pong_worst = g_mon.slowest_pong_ms;
    int pong_bad = g_mon.pong_failures;

    if (broker_thaw() != 0)
        fail_msg("kill -CONT failed");
    double t_thaw = now_ms();
    int last;
    if (!wait_health(g_aux.port, 200, scale_ms(30000), &last))
        fail_msg("/healthz %d %g s after kill -CONT", last, scale_ms(30000) / 1000.0);
    double ms202 = wait_status(g_aux.port, "/durable", 202, scale_ms(5000));
    if (ms202 < 0)
        fail_msg("no 202 after kill -CONT");
    double t_back = now_ms();
    sleep_ms(300);
    loads_stop();
    monitor_stop();
    struct tally all = tally(NULL, ALL_TIME);
    struct tally frozen = tally(NULL, t_freeze, t_thaw);
    assert_tally_clean(&all, "publishes across the freeze");
    if (frozen.n202)
        fail_msg("%d publishes sent to the frozen broker answered 202", frozen.n202);
    if (frozen.slowest_ms > scale_ms(8000))
        fail_msg("a publish to the frozen broker waited %.0f ms", frozen.slowest_ms);
    size_t nq;
    char **q = drain_sorted("f.durable", &nq);
    struct qcheck c = check_queue("/durable", q, nq, NULL, 0);
    ids_free(q, nq);
    if (c.lost)
        fail_msg("%d accepted messages lost (the first: %s)", c.lost, c.first_lost);
    if (pong_bad)
        fail_msg("/pong failed %d times with the broker frozen", pong_bad);
    if (pong_worst > scale_ms(1000))
        fail_msg("/pong took %.0f ms with the broker frozen", pong_worst);
    if (log_count(&g_aux, "heartbeat") == 0)
        print_message("note: the bridge did not name the heartbeat in its log\n");
    expect_alive(&g_aux);
    stop_clean(&g_aux, scale_ms(RPC_LONG_TIMEOUT_MS + 10000));
    result_row("broker frozen (kill -STOP), heartbeat 2 s",
               "idle connections kept by heartbeats; %d publish and rpc requests waiting "
               "answered 503 within %.1f s of the freeze (both connections given up after "
               "%.1f s); then /healthz 503 and new requests 503 in "
               "at most %.1f ms; /pong at most %.0f ms throughout; 202 again %.1f s after kill "
               "-CONT; %d clients meanwhile: %d requests, %d x 202, %d x 503 (none slower "
               "than %.1f s), 0 unanswered, 0 lost",
               g_nwait, worst / 1000, (t_both - t_freeze) / 1000, ms503, pong_worst,
               (t_back - t_thaw) / 1000, CLIENTS, all.n, all.n202, all.n503,
               frozen.slowest_ms / 1000);
    PASS();
}

/* ------------------------------------------------------------------ */
/* 5. memory alarm                                                      */

/* How many workers /healthz names as blocked; -1 if it did not answer. */
static int health_blocked(int port, double *ms)
{
    return health_count(port, "broker blocked", ms);
}

static void test_memory_alarm(void **state)
{
    (void)state;
    mq_purge("f.durable");
    mq_purge("f.rpc");
    echo_start("f.rpc", NULL);
    if (post_status(g_main.port, "/durable", NULL) != 202 ||
        post_status(g_main.port, "/rpc", NULL) != 200)
        fail_msg("publish / rpc not 202 / 200 before the alarm");
    /* Publishers all along (not rpc: the echo worker's replies are blocked
     * too, and a reply later than the route's timeout is a legitimate 504). */
    enum { CLIENTS = 4 };
    loads_add(CLIENTS, g_main.port, "/durable", "alarm", false, 4000, 5, 50);
    loads_run();
    sleep_ms(300);

    double t_alarm = now_ms();
    if (broker_alarm(true) != 0)
        fail_msg("could not raise the memory alarm");
    /* Each worker's connection is blocked on its next publish: publish on
     * fresh connections (spread over the workers) until both are. Every
     * answer comes within a second, 202 (the publish that ran into the
     * alarm) or 503. */
    int n = 0, n202 = 0, n503 = 0;
    double slowest = 0, end = now_ms() + scale_ms(15000);
    while (health_blocked(g_main.port, NULL) < 2) {
        if (now_ms() > end)
            fail_msg("/healthz does not show both workers blocked %g s into the alarm (%d "
                     "publishes)",
                     scale_ms(15000) / 1000.0, n);
        double ms;
        int st = post_status(g_main.port, "/durable", &ms);
        n++;
        if (st == 202)
            n202++;
        else if (st == 503)
            n503++;
        else
            fail_msg("publish %d into the memory alarm: %d", n, st);
        if (ms > slowest)
            slowest = ms;
        sleep_ms(20);
    }
    double t_blocked = now_ms();
    /* Blocked: publishes and rpc requests alike 503 at once, on new and on
     * keep-alive connections; /pong and /healthz fast. */
    struct conn c;
    if (conn_open(&c, g_main.port) != 0)
        fail_msg("connect");
    int b503 = 0;
    double bslow = 0, pong_slow = 0, health_slow = 0;
    for (int i = 0; i < 30; i++) {
        const char *path = i % 3 == 2 ? "/rpc" : "/durable";
        struct resp r;
        int rc;
        if (i % 2) {
            size_t len;
            char *raw = fmt_request(&len, "POST", path, XML, NULL, g_doc, g_doc_len);
            rc = exchange(&c, raw, len, &r, false);
            free(raw);
        } else {
            rc = http_req(g_main.port, "POST", path, XML, NULL, g_doc, g_doc_len, &r);
        }
        if (rc != 0)
            fail_msg("%s while blocked: no answer", path);
        if (r.status != 503)
            fail_msg("%s while blocked: %d, expected 503", path, r.status);
        assert_has_header(&r, "Retry-After");
        if (r.ms > bslow)
            bslow = r.ms;
        b503++;
        resp_free(&r);
        rc = http_get(g_main.port, "/pong", &r);
        assert_resp(rc, &r, 200);
        if (r.ms > pong_slow)
            pong_slow = r.ms;
        resp_free(&r);
        double hms;
        if (health_blocked(g_main.port, &hms) != 2)
            fail_msg("/healthz no longer names both workers blocked");
        if (hms > health_slow)
            health_slow = hms;
    }
    conn_close(&c);
    if (bslow > scale_ms(1000) || slowest > scale_ms(1000))
        fail_msg("an answer under the memory alarm took %.0f ms",
                 bslow > slowest ? bslow : slowest);
    if (pong_slow > scale_ms(1000) || health_slow > scale_ms(1000))
        fail_msg("/pong %.0f ms, /healthz %.0f ms under the memory alarm", pong_slow, health_slow);
    struct resp r;
    int rc = http_get(g_main.port, "/healthz", &r);
    assert_resp(rc, &r, 503);
    resp_free(&r);

    double t_lift = now_ms();
    if (broker_alarm(false) != 0)
        fail_msg("could not lift the memory alarm");
    double t_lifted = now_ms();
    int last;
    if (!wait_health(g_main.port, 200, scale_ms(10000), &last))
        fail_msg("/healthz %d %g s after the alarm was lifted", last, scale_ms(10000) / 1000.0);
    if (wait_status(g_main.port, "/durable", 202, scale_ms(5000)) < 0)
        fail_msg("no 202 after the alarm was lifted");
    if (wait_status(g_main.port, "/rpc", 200, scale_ms(5000)) < 0)
        fail_msg("no rpc 200 after the alarm was lifted");
    double t_back = now_ms();
    sleep_ms(300);
    loads_stop();
    struct tally all = tally(NULL, ALL_TIME);
    struct tally during = tally(NULL, t_alarm, t_lift);
    assert_tally_clean(&all, "publishers across the memory alarm");
    if (during.slowest_ms > scale_ms(3000))
        fail_msg("a publish under the memory alarm took %.0f ms", during.slowest_ms);
    size_t nq;
    char **q = drain_sorted("f.durable", &nq);
    struct qcheck qc = check_queue("/durable", q, nq, NULL, 0);
    ids_free(q, nq);
    if (qc.lost)
        fail_msg("%d accepted messages lost (the first: %s)", qc.lost, qc.first_lost);
    if (bslow < during.slowest_ms)
        bslow = during.slowest_ms;
    if (bslow < slowest)
        bslow = slowest;
    result_row("memory alarm (connection.blocked)",
               "both workers blocked %.2f s after the alarm command began (on their next "
               "publish); then %d publishes and rpc requests all 503 with Retry-After; every "
               "answer under the alarm in at most %.1f ms, /pong at most %.1f ms, /healthz "
               "503 in at most %.1f ms; publish 202 and rpc 200 again %.2f s after the lifting "
               "command began (it took %.2f s); %d publishers all along: %d requests, %d x 202, %d "
               "x 503, 0 "
               "unanswered, 0 lost (%d answered 503 stored anyway)",
               (t_blocked - t_alarm) / 1000, b503, bslow, pong_slow, health_slow,
               (t_back - t_lift) / 1000, (t_lifted - t_lift) / 1000, CLIENTS, all.n, all.n202,
               all.n503, qc.stored503);
    PASS();
}

/* ------------------------------------------------------------------ */
/* 6. a queue that refuses publishes                                    */

static void test_reject_publish(void **state)
{
    (void)state;
    enum { N = 20 };
    mq_purge("f.other");
    /* One keep-alive connection: one worker, one channel, alternating. */
    struct conn c;
    if (conn_open(&c, g_main.port) != 0)
        fail_msg("connect");
    double slow503 = 0, slow202 = 0;
    char ids[N][40];
    for (int i = 0; i < N; i++) {
        for (int k = 0; k < 2; k++) {
            const char *path = k == 0 ? "/full" : "/other";
            char extra[128];
            snprintf(ids[i], sizeof ids[i], "rej-%d-%d", (int)getpid(), i);
            snprintf(extra, sizeof extra, "X-Request-Id: rej-%d-%d%s\r\n", (int)getpid(), i,
                     k == 0 ? "-full" : "");
            size_t len;
            char *raw = fmt_request(&len, "POST", path, XML, extra, g_doc, g_doc_len);
            struct resp r;
            int rc = exchange(&c, raw, len, &r, false);
            free(raw);
            assert_resp(rc, &r, k == 0 ? 503 : 202);
            if (k == 0 && r.ms > slow503)
                slow503 = r.ms;
            if (k == 1 && r.ms > slow202)
                slow202 = r.ms;
            const char *cn = resp_header(&r, "Connection");
            if (cn && strcasecmp(cn, "close") == 0)
                fail_msg("%s answered with Connection: close", path);
            resp_free(&r);
        }
    }
    conn_close(&c);
    if (slow503 > scale_ms(2000))
        fail_msg("a nacked publish was answered after %.0f ms", slow503);

    /* Then concurrently: nacks and acks interleave on each channel, and
     * come coalesced (multiple); each request must get its own outcome. */
    enum { CLIENTS = 4 };
    loads_add(CLIENTS, g_main.port, "/full", "rejc", false, 4000, 1, 1);
    loads_add(CLIENTS, g_main.port, "/other", "rejc", false, 4000, 1, 1);
    loads_run();
    sleep_ms(1500);
    loads_stop();
    struct tally full = tally("/full", ALL_TIME);
    struct tally other = tally("/other", ALL_TIME);
    assert_tally_clean(&full, "publishes to the full queue");
    assert_tally_clean(&other, "publishes beside the full queue");
    if (full.n503 != full.n || full.n == 0)
        fail_msg("%d of %d publishes to the full queue answered 503", full.n503, full.n);
    if (other.n202 != other.n || other.n == 0)
        fail_msg("%d of %d publishes beside the full queue answered 202", other.n202, other.n);

    int closed = log_count(&g_main, "closed by broker");
    if (closed)
        fail_msg("the bridge's channel or connection was closed %d times by nacks", closed);
    amqp_message_t m;
    if (mq_get("f.full", &m) != 0)
        fail_msg("queue f.full holds a message");
    size_t nq;
    char **q = drain_sorted("f.other", &nq);
    int missing = 0;
    for (int i = 0; i < N; i++)
        missing += !sorted_has(q, nq, ids[i]);
    struct qcheck qc = check_queue("/other", q, nq, NULL, 0);
    ids_free(q, nq);
    if (missing)
        fail_msg("%d messages answered 202 on /other are not in f.other", missing);
    if (qc.lost)
        fail_msg("%d accepted messages lost (the first: %s)", qc.lost, qc.first_lost);
    result_row("queue full (x-max-length, overflow reject-publish)",
               "%d publishes nacked: all answered 503 (at most %.1f ms); each followed on the "
               "same connection and channel by a publish to another route: %d x 202 (at most "
               "%.1f ms); then %d + %d clients concurrently: %d publishes to the full queue "
               "all 503, %d beside them all 202 and in their queue; the channel was never "
               "closed",
               N, slow503, N, slow202, CLIENTS, CLIENTS, full.n, other.n);
    PASS();
}

/* ------------------------------------------------------------------ */
/* 7. a route whose exchange does not exist                             */

static void test_missing_exchange(void **state)
{
    (void)state;
    enum { CLIENTS = 8, BAD = 20 };
    mq_purge("f.durable");
    loads_add(CLIENTS, g_main.port, "/durable", "noex", false, 4000, 2, 20);
    loads_run();
    monitor_start(g_main.port);
    sleep_ms(500);
    double t0 = now_ms();
    int bad503 = 0;
    double bad_slow = 0;
    for (int i = 0; i < BAD; i++) {
        double ms;
        int st = post_status(g_main.port, "/noexch", &ms);
        if (st != 503)
            fail_msg("publish %d to a missing exchange: %d, expected 503", i, st);
        bad503++;
        if (ms > bad_slow)
            bad_slow = ms;
        sleep_ms(100);
    }
    double t1 = now_ms();
    sleep_ms(500);
    loads_stop();
    monitor_stop();
    expect_alive(&g_main);
    /* The connections stay up through channel errors: /healthz must not
     * tell a load balancer otherwise (one bad route would take every
     * instance out). */
    if (g_mon.nbad)
        fail_msg("/healthz was not 200 %d times during the channel errors (the connections "
                 "stayed up)",
                 g_mon.nbad);
    if (g_mon.pong_failures)
        fail_msg("/pong failed %d times during the channel errors", g_mon.pong_failures);
    int last;
    if (!wait_health(g_main.port, 200, scale_ms(2000), &last))
        fail_msg("/healthz %d after the channel errors", last);
    if (wait_status(g_main.port, "/durable", 202, scale_ms(2000)) < 0)
        fail_msg("no 202 after the channel errors");

    struct tally all = tally(NULL, ALL_TIME);
    struct tally during = tally(NULL, t0, t1);
    assert_tally_clean(&all, "publishes beside a missing exchange");
    if (during.n202 == 0)
        fail_msg("no 202 on the other route while the channel errors happened");
    int closes = log_count(&g_main, "closed by broker: 404");
    int reopens = log_count(&g_main, "reopened as channel");
    if (closes == 0 || reopens < closes)
        fail_msg("%d channel closes (404) logged, %d reopens", closes, reopens);
    if (log_count(&g_main, "connection to") != 0)
        fail_msg("a channel error cost a connection");
    size_t nq;
    char **q = drain_sorted("f.durable", &nq);
    struct qcheck c = check_queue("/durable", q, nq, NULL, 0);
    ids_free(q, nq);
    if (c.lost)
        fail_msg("%d accepted messages lost (the first: %s)", c.lost, c.first_lost);
    result_row(
        "route to a missing exchange (channel closed 404)",
        "%d publishes to it: all 503 (at most %.1f ms), %d channel closes, each "
        "reopened without losing the connection; meanwhile %d clients on another "
        "route: %d requests, %d x 202, %d x 503 (%.1f%%: in flight on a closed "
        "channel, or sent while it was reopened), 0 unanswered, 0 lost; /healthz 200 throughout",
        bad503, bad_slow, closes, CLIENTS, during.n, during.n202, during.n503,
        during.n ? 100.0 * during.n503 / during.n : 0.0);
    PASS();
}

/* ------------------------------------------------------------------ */
/* 8. failover to a second node                                         */

static void test_failover(void **state)
{
    (void)state;
    enum { CLIENTS = 4 };
    snprintf(g_node2.dir, sizeof g_node2.dir, "%s/node2", g_harness.tmp);
    snprintf(g_node2.node, sizeof g_node2.node, "faults2-%d@localhost", (int)getpid());
    g_node2.port = 0;
    for (int p = 5850; p < 5950 && !g_node2.port; p++)
        if (p != g_harness.broker_port && port_free(p) && port_free(p + 20000))
            g_node2.port = p;
    if (!g_node2.port)
        fail_msg("no free port for a second node in 5850..5949");
    g_node2.recorded = true;
    double t_n2 = now_ms();
    if (node2_sh("start") != 0)
        fail_msg("could not start node 2");
    print_message("node 2 %s on port %d up in %.1f s\n", g_node2.node, g_node2.port,
                  (now_ms() - t_n2) / 1000);

    char uri[300];
    snprintf(uri, sizeof uri,
             "amqp://guest:guest@127.0.0.1:%d/%%2f,amqp://guest:guest@127.0.0.1:%d/%%2f",
             g_harness.broker_port, g_node2.port);
    const struct fcfg cfg = {.workers = 2, .heartbeat = "5s", .uri = uri};
    mq_purge("f.durable");
    bridge_start(&g_aux, "failover", faults_config, &cfg);
    g_aux.mark = file_size(g_aux.log);
    /* Node 2 is new: its f.durable, empty, exists only once a worker of the
     * bridge declared it there (node2_drain reads it passively). */
    char on2[64];
    snprintf(on2, sizeof on2, "connected to amqp://guest@127.0.0.1:%d/", g_node2.port);

    loads_add(CLIENTS, g_aux.port, "/durable", "fo", false, 4000, 5, 20);
    loads_run();
    monitor_start(g_aux.port);
    sleep_ms(1000);

    /* The workers on node 1 (as this bridge spreads them: worker 0; all of
     * them if the list were tried in order) lose it and go to node 2. */
    g_aux.mark = file_size(g_aux.log);
    double t_kill = now_ms();
    broker_kill9();
    double t_fo = 0, end = now_ms() + scale_ms(15000);
    int nlost = 0;
    while (now_ms() < end) {
        nlost = log_count(&g_aux, "lost:");
        if (nlost > 0 && log_count(&g_aux, on2) >= nlost) {
            t_fo = now_ms();
            break;
        }
        sleep_ms(10);
    }
    if (t_fo == 0)
        fail_msg("%d workers lost node 1, %d connected to node 2 within %g s of its death", nlost,
                 log_count(&g_aux, on2), scale_ms(15000) / 1000.0);
    /* The bridge's own view: from noticing the loss to connected again. */
    double t_lost_log = log_time(&g_aux, "lost:", false);
    double t_conn_log = log_time(&g_aux, on2, true);
    double fo_ms = t_conn_log - t_lost_log;
    if (t_lost_log < 0 || t_conn_log < 0)
        fail_msg("the bridge's log does not show the loss and the reconnect");
    if (fo_ms < 0)
        fo_ms += 86400000; /* midnight */
    if (fo_ms > scale_ms(6000))
        fail_msg("the worker took %.0f ms to fail over (backoff cap 5 s)", fo_ms);
    int last;
    if (!wait_health(g_aux.port, 200, scale_ms(5000), &last))
        fail_msg("/healthz %d after failing over to node 2", last);
    double t_healthy = now_ms();
    if (wait_status(g_aux.port, "/durable", 202, scale_ms(2000)) < 0)
        fail_msg("no 202 after failing over to node 2");
    sleep_ms(1000);
    loads_stop();
    monitor_stop();
    struct tally all = tally(NULL, ALL_TIME);
    struct tally after = tally(NULL, t_healthy, 1e300);
    assert_tally_clean(&all, "failover under load");
    if (after.n202 == 0 || after.n503 != 0)
        fail_msg("after failing over: %d x 202, %d x 503", after.n202, after.n503);
    expect_alive(&g_aux);
    stop_clean(&g_aux, scale_ms(HTTP_TIMEOUT_MS + 10000));

    /* Every 202 is on one node or the other: node 1 back from its kill. */
    if (broker_start() != 0)
        fail_msg("could not restart node 1");
    size_t na, nb;
    char **qa = drain_sorted("f.durable", &na);
    char **qb = node2_drain("f.durable", &nb);
    struct qcheck c = check_queue("/durable", qa, na, qb, nb);
    ids_free(qa, na);
    ids_free(qb, nb);
    if (c.lost)
        fail_msg("%d accepted messages on neither node (the first: %s)", c.lost, c.first_lost);
    node2_stop();
    result_row("first node of the URI list killed (kill -9), second node up",
               "%d worker%s on node 1 connected to node 2 within %.0f ms of noticing the loss "
               "(backoff cap 5 s; the route's queue declared there), /healthz 200 %.2f s "
               "after the kill; under load %d requests: %d x 202, %d x 503, 0 unanswered; "
               "every 202 on node 1 (%zu) or node 2 (%zu), 0 lost",
               nlost, nlost == 1 ? "" : "s", fo_ms, (t_healthy - t_kill) / 1000, all.n, all.n202,
               all.n503, na, nb);
    PASS();
}

/* ------------------------------------------------------------------ */
/* 9. SIGTERM under load                                                */

static void test_sigterm_under_load(void **state)
{
    (void)state;
    enum { PUB = 12, RPC = 8 };
    static const struct fcfg cfg = {.workers = 2, .heartbeat = "5s"};
    mq_purge("f.durable");
    mq_purge("f.rpc");
    echo_start("f.rpc", NULL);
    bridge_start(&g_aux, "sigterm", faults_config, &cfg);
    g_aux.mark = file_size(g_aux.log);
    loads_add(PUB, g_aux.port, "/durable", "term", false, 4000, 2, 20);
    loads_add(RPC, g_aux.port, "/rpc", "termrpc", true, 4000, 2, 20);
    loads_run();
    sleep_ms(1500);

    /* From now on a client whose connection ends opens no other (the bridge
     * stopped accepting); each finishes what it sent. */
    atomic_store(&g_ls.ctl.no_reconnect, 1);
    double t_term = now_ms();
    kill(g_aux.pid, SIGTERM);
    /* drain bound: [http] timeout (10 s) > rpc timeout (5 s) */
    int bound = HTTP_TIMEOUT_MS;
    int st;
    if (!wait_exit(g_aux.pid, scale_ms(bound + 5000), &st))
        fail_msg("bridge still running %g s after SIGTERM", scale_ms(bound + 5000) / 1000.0);
    double t_exit = now_ms();
    g_aux.pid = 0;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        char d[64];
        dump_report(&g_aux);
        fail_msg("bridge after SIGTERM: %s, expected exit 0", describe_status(st, d, sizeof d));
    }
    loads_stop();

    /* A request a client only sent once the bridge had been closing for a
     * while (its thread descheduled between two requests) may find the
     * connection closed under it: never read, never accepted. Any other
     * request must have an answer. */
    double grace = t_term + 200;
    int late = 0;
    for (int i = 0; i < g_ls.n; i++)
        for (int k = 0; k < g_ls.l[i].n; k++) {
            struct rec *r = &g_ls.l[i].recs[k];
            if (r->status < 0 && r->t_send >= grace) {
                late++;
                r->late = true;
            }
        }
    struct tally pub = tally("/durable", ALL_TIME);
    struct tally rpc = tally("/rpc", ALL_TIME);
    assert_tally_clean(&pub, "publishes across SIGTERM");
    assert_tally_clean(&rpc, "rpc requests across SIGTERM");
    if (pub.n202 == 0 || rpc.n200 == 0)
        fail_msg("no 202 (%d) or rpc 200 (%d) before SIGTERM", pub.n202, rpc.n200);
    size_t nq;
    char **q = drain_sorted("f.durable", &nq);
    struct qcheck c = check_queue("/durable", q, nq, NULL, 0);
    /* The late ones were never read: never published either. */
    int late_published = 0;
    for (int i = 0; i < g_ls.n; i++)
        for (int k = 0; k < g_ls.l[i].n; k++) {
            const struct rec *r = &g_ls.l[i].recs[k];
            if (r->late && !g_ls.l[i].rpc && sorted_has(q, nq, r->id))
                late_published++;
        }
    ids_free(q, nq);
    if (c.lost)
        fail_msg("%d accepted messages lost across SIGTERM (the first: %s)", c.lost, c.first_lost);
    if (late_published)
        fail_msg("%d requests were published but got no answer", late_published);
    /* In flight at the signal: answered (202 / 200) once done, or 503 if the
     * bridge read them only after the drain had begun. Sent after it: 503
     * with Connection: close. */
    int fly_ok = 0, fly_503 = 0, post_503 = 0, post_ok = 0;
    for (int i = 0; i < g_ls.n; i++)
        for (int k = 0; k < g_ls.l[i].n; k++) {
            const struct rec *r = &g_ls.l[i].recs[k];
            bool ok = r->status == 202 || r->status == 200;
            if (r->late || r->t_done < t_term)
                continue;
            if (r->t_send < t_term) {
                fly_ok += ok;
                fly_503 += r->status == 503;
            } else {
                post_ok += ok;
                post_503 += r->status == 503;
            }
        }
    char *log = slurp(g_aux.log, g_aux.mark);
    bool drained = strstr(log, "stopping:") != NULL;
    free(log);
    if (!drained)
        fail_msg("the bridge did not log its drain");
    result_row("SIGTERM under load (publish and rpc)",
               "%d clients (%d publish, %d rpc with the echo worker): %d publishes (%d x 202, "
               "%d x 503) and %d rpc requests (%d x 200, %d x 503), 0 unanswered; in flight "
               "at the signal: %d answered 202/200, %d answered 503; sent after it: %d x 503 "
               "(Connection: close), %d x 202/200; %d sent after the bridge had closed its "
               "connections; every 202 in the queue; exit 0 %.2f s after SIGTERM (bound %d s)",
               PUB + RPC, PUB, RPC, pub.n, pub.n202, pub.n503, rpc.n, rpc.n200, rpc.n503, fly_ok,
               fly_503, post_503, post_ok, late, (t_exit - t_term) / 1000, bound / 1000);
    PASS();
}

/* ------------------------------------------------------------------ */
/* 10. a broker that stops reading for a while (backpressure)           */

/* One large publish on its own connection, answered or not. */
struct big_post {
    int port;
    char id[48];
    const char *doc;
    size_t len;
    int status; /* -1: no answer */
    double ms;  /* send to answer */
    pthread_t th;
};

static void *big_post_thread(void *p)
{
    struct big_post *b = p;
    char extra[96];
    snprintf(extra, sizeof extra, "X-Request-Id: %s\r\n", b->id);
    struct resp r;
    double t0 = now_ms();
    int rc = http_req(b->port, "POST", "/durable", XML, extra, b->doc, b->len, &r);
    b->ms = now_ms() - t0;
    b->status = rc == 0 ? r.status : -1;
    if (rc == 0)
        resp_free(&r);
    return NULL;
}

/* A document of LEN bytes: one element of FILL characters. */
static char *big_doc(size_t len, char fill)
{
    char *doc = xmalloc(len + 1);
    memcpy(doc, "<big>", 5);
    memset(doc + 5, fill, len - 11);
    memcpy(doc + len - 6, "</big>", 6);
    doc[len] = '\0';
    return doc;
}

/* The broker freezes for a second (kill -STOP: it reads nothing, as under
 * its own credit flow, but the connection lives) while 9.6 MB of publishes
 * arrive: what no longer fits into the socket toward it waits in the
 * worker's backlog instead of being refused, and goes out when the broker
 * reads again. Every request 202, every message in the queue. */
static void test_backpressure(void **state)
{
    (void)state;
    enum { N = 160, BODY = 60 * 1024 };
    static const struct fcfg cfg = {.workers = 1, .heartbeat = "30s"};
    bridge_start(&g_aux, "backpressure", faults_config, &cfg);
    g_aux.mark = file_size(g_aux.log);
    mq_purge("f.durable");
    /* A 60 KB document: one element holding text. */
    const int off = BODY - 5;
    char *doc = big_doc((size_t)off, 'x');
    double ms;
    if (post_status(g_aux.port, "/durable", &ms) != 202)
        fail_msg("no 202 before the freeze");

    if (broker_freeze() != 0)
        fail_msg("kill -STOP of the broker failed");
    double t_freeze = now_ms();
    static struct big_post posts[N];
    for (int i = 0; i < N; i++) {
        posts[i] =
            (struct big_post){.port = g_aux.port, .doc = doc, .len = (size_t)off, .status = -1};
        snprintf(posts[i].id, sizeof posts[i].id, "bp-%d-%d", (int)getpid(), i);
        if (pthread_create(&posts[i].th, NULL, big_post_thread, &posts[i]) != 0)
            abort();
    }
    sleep_ms(1000);
    int waited = log_count(&g_aux, "not reading fast enough");
    if (broker_thaw() != 0)
        fail_msg("kill -CONT failed");
    double t_thaw = now_ms();
    int n202 = 0, other = 0, first_other = 0;
    double slowest = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(posts[i].th, NULL);
        if (posts[i].status == 202)
            n202++;
        else if (other++ == 0)
            first_other = posts[i].status;
        if (posts[i].ms > slowest)
            slowest = posts[i].ms;
    }
    double t_all = now_ms();
    free(doc);
    if (waited == 0)
        fail_msg("the socket toward the frozen broker never filled: %d x %d bytes were not "
                 "enough to test the backlog",
                 N, BODY);
    if (other)
        fail_msg("%d of %d publishes across the pause were not 202 (the first: %d)", other, N,
                 first_other);
    size_t nq;
    char **q = drain_sorted("f.durable", &nq);
    int lost = 0;
    for (int i = 0; i < N; i++)
        if (!sorted_has(q, nq, posts[i].id))
            lost++;
    ids_free(q, nq);
    if (lost)
        fail_msg("%d accepted messages are not in the queue", lost);
    if (log_count(&g_aux, "reads again") == 0)
        fail_msg("the bridge did not log that the broker reads again");
    expect_alive(&g_aux);
    stop_clean(&g_aux, scale_ms(HTTP_TIMEOUT_MS + 10000));
    result_row("broker stops reading for 1 s (kill -STOP, heartbeat 30 s) while 160 x 60 KB "
               "publishes arrive",
               "the socket toward it filled and the publishes that did not fit waited in the "
               "worker's backlog (no 503); %d of %d answered 202, the last %.0f ms after the "
               "broker read again (%.1f s after the freeze), slowest request %.0f ms; all %d "
               "in the queue, 0 lost",
               n202, N, t_all - t_thaw, (t_all - t_freeze) / 1000, slowest, N);
    PASS();
}

/* ------------------------------------------------------------------ */
/* 11. one queue stops confirming (its process suspended)               */

#define STUCK_TIMEOUT_MS 2000 /* [http] timeout of the stuck test's bridge */
#define STUCK_INFLIGHT 8      /* its [amqp] max_inflight; each route's share: half */

/* Two publish routes on one worker, a small budget and a short timeout:
 * /stuck to f.stuck, whose queue process the test suspends, and /ok to
 * f.ok. A bridge_config_fn; ARG unused. */
static char *stuck_config(int http_port, const void *arg)
{
    (void)arg;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        abort();
    fprintf(f,
            "; written by tests/faults/test_broker_faults.c (test_stuck_queue)\n"
            "[http]\n"
            "listen      = 127.0.0.1:%d\n"
            "workers     = 1\n"
            "timeout     = %dms\n"
            "\n"
            "[amqp]\n"
            "uri         = amqp://guest:guest@127.0.0.1:%d/%%2f\n"
            "confirm     = yes\n"
            "max_inflight = %d\n"
            "\n"
            "[log]\n"
            "level       = %s\n"
            "\n"
            "[route stuck]\n"
            "path        = /stuck\n"
            "routing_key = f.stuck\n"
            "queue       = f.stuck\n"
            "\n"
            "[route ok]\n"
            "path        = /ok\n"
            "routing_key = f.ok\n"
            "queue       = f.ok\n",
            http_port, STUCK_TIMEOUT_MS, g_harness.broker_port, STUCK_INFLIGHT,
            g_harness.log_level);
    fclose(f);
    return text;
}

/* Suspend (or resume) the Erlang process of queue f.stuck: it takes
 * messages into its mailbox and confirms none, as a quorum queue without a
 * majority would, while every other queue of the node works. */
static int stuck_queue(bool suspend)
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

/* N posts to /ok over one keep-alive connection, ids TAG-PID-I; how many
 * were 202 (the others' first status in *OTHER). */
static int post_ok(int port, int n, const char *tag, int *other)
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

/* Issue 11: a publish that timed out held the confirm tracker's oldest slot,
 * and 2 x max_inflight publishes later every route of the worker got 503,
 * /healthz still 200. Now a queue that stops confirming hurts only its own
 * route: its requests wait out [http] timeout (503) up to the route's share
 * of max_inflight (503 at once beyond it), the other route answers 202
 * meanwhile and after, well past 2 x max_inflight; the late confirms, when
 * the queue resumes, are dropped and counted. */
static void test_stuck_queue(void **state)
{
    (void)state;
    enum { STUCK = 12, SHARE = (STUCK_INFLIGHT + 1) / 2, OK_DURING = 8, OK_AFTER = 40 };
    bridge_start(&g_aux, "stuck", stuck_config, NULL);
    g_aux.mark = file_size(g_aux.log);
    mq_purge("f.stuck");
    mq_purge("f.ok");
    if (stuck_queue(true) != 0)
        fail_msg("cannot suspend the process of queue f.stuck");

    /* More requests to the stuck route than the whole worker's budget. */
    waiters_start(STUCK, g_aux.port, "/stuck", "stuck");
    /* Until each one waits or was refused (no timing asserted: bounded). */
    double end = now_ms() + scale_ms(5000);
    double waiting = 0, refused = 0;
    do {
        waiting = metric(g_aux.port, "bridge_inflight");
        refused = metric(g_aux.port, "bridge_http_requests_total{route=\"stuck\",code=\"503\"}");
        if (waiting + refused >= STUCK)
            break;
        sleep_ms(20);
    } while (now_ms() < end);
    if (waiting + refused < STUCK)
        fail_msg("%.0f stuck requests waiting and %.0f refused, of %d", waiting, refused, STUCK);
    /* While they wait: the other route has room. */
    int other = 0;
    int ok_during = post_ok(g_aux.port, OK_DURING, "okd", &other);
    waiters_join();
    int stuck503 = 0, stuck_other = 0;
    for (int i = 0; i < g_nwait; i++) {
        if (g_wait[i].status == 503)
            stuck503++;
        else if (stuck_other == 0)
            stuck_other = g_wait[i].status;
    }
    /* After they timed out, their tags still unconfirmed: well over
     * 2 x max_inflight publishes. */
    int other_after = 0;
    int ok_after = post_ok(g_aux.port, OK_AFTER, "oka", &other_after);
    if (ok_after != OK_AFTER)
        fail_msg("%d of %d publishes to the other route answered 202 after the stuck route's "
                 "requests timed out (another status: %d)",
                 ok_after, OK_AFTER, other_after);
    if (ok_during != OK_DURING)
        fail_msg("%d of %d publishes to the other route answered 202 while the stuck route's "
                 "requests waited (another status: %d)",
                 ok_during, OK_DURING, other);
    if (stuck503 != STUCK)
        fail_msg("%d of %d requests to the stuck queue answered 503 (another: %d)", stuck503, STUCK,
                 stuck_other);
    if (waiting != SHARE)
        fail_msg("%.0f requests of the stuck route waited at once: its share is %d", waiting,
                 SHARE);
    int last;
    if (!wait_health(g_aux.port, 200, scale_ms(2000), &last))
        fail_msg("/healthz %d", last);
    double ok503 = metric(g_aux.port, "bridge_http_requests_total{route=\"ok\",code=\"503\"}");
    double ok202 = metric(g_aux.port, "bridge_http_requests_total{route=\"ok\",code=\"202\"}");
    double st503 = metric(g_aux.port, "bridge_http_requests_total{route=\"stuck\",code=\"503\"}");
    if (ok503 != 0 || ok202 != OK_DURING + OK_AFTER || st503 != STUCK)
        fail_msg("/metrics: route ok %.0f x 202 and %.0f x 503, route stuck %.0f x 503", ok202,
                 ok503, st503);

    /* The queue confirms again: the confirms of the timed-out publishes
     * come late, are dropped and counted. */
    double published = metric(g_aux.port, "bridge_amqp_published_total{route=\"stuck\"}");
    if (stuck_queue(false) != 0)
        fail_msg("cannot resume the process of queue f.stuck");
    double late = 0;
    end = now_ms() + scale_ms(10000);
    while ((late = metric(g_aux.port, "bridge_amqp_late_confirms_total")) < published &&
           now_ms() < end)
        sleep_ms(50);
    if (published != SHARE || late != published)
        fail_msg("%.0f publishes to the stuck queue, %.0f late confirms counted", published, late);
    size_t nq;
    char **q = drain_sorted("f.ok", &nq);
    int missing = 0;
    for (int i = 0; i < OK_DURING + OK_AFTER; i++) {
        char id[64];
        snprintf(id, sizeof id, "%s-%d-%d", i < OK_DURING ? "okd" : "oka", (int)getpid(),
                 i < OK_DURING ? i : i - OK_DURING);
        missing += !sorted_has(q, nq, id);
    }
    ids_free(q, nq);
    if (missing)
        fail_msg("%d messages answered 202 are not in f.ok", missing);
    mq_purge("f.stuck");
    expect_alive(&g_aux);
    stop_clean(&g_aux, scale_ms(STUCK_TIMEOUT_MS + 10000));
    result_row("one queue stops confirming (its process suspended), max_inflight 8, timeout 2 s",
               "%d concurrent requests to its route: %.0f waited (the route's share) and "
               "answered 503 after the timeout, %.0f refused 503 at once; meanwhile %d and "
               "after %d publishes to another route on the same worker and channel: all 202 "
               "and in their queue (503 after 2 x max_inflight before the fix), 0 x 503 for "
               "it in /metrics, /healthz 200; on resume %.0f late confirms dropped and counted",
               STUCK, waiting, refused, ok_during, ok_after, late);
    PASS();
}

/* kill -STOP takes effect thread by thread: a broker thread inside a system
 * call (an fsync of the message store) stops only when it returns, and
 * until every one has, the broker may still confirm. Freeze it and wait
 * until each of its threads is stopped ('T' in /proc), for at most MS. */
static void freeze_fully(int ms)
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

/* ------------------------------------------------------------------ */
/* 11. SIGTERM while publishes wait for room toward a frozen broker     */

/* One POST on its own connection: its one answer, and whether a second
 * one followed before the bridge closed the connection. */
struct once_post {
    int port;
    char id[48];
    const char *path;
    const char *doc;
    size_t len;
    int status;  /* -1: no answer */
    int after;   /* conn_wait_closed after the answer: 1 closed, 0 open, 2 more bytes */
    double done; /* now_ms() at the answer */
    pthread_t th;
};

static void *once_post_thread(void *p)
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

/* The broker freezes while 160 x 60 KB publishes arrive: the socket toward
 * it fills and the rest wait in the worker's backlog. Then SIGTERM: the
 * bridge stops taking requests but not the ones waiting. THAW: the broker
 * reads again a second later, the backlog drains within the drain bound,
 * and each request is answered 202 (its message in the queue). Otherwise it
 * stays frozen: each request is answered 503 by its timer within the bound,
 * and the bridge exits 0 (its channel close bounded by the rpc timeout).
 * Either way every request has exactly one answer before the exit, and
 * nothing more arrives on its connection. */
static void sigterm_waiting_for_room(bool thaw)
{
    enum { N = 160, BODY = 60 * 1024 };
    static const struct fcfg cfg = {.workers = 1, .heartbeat = "30s"};
    bridge_start(&g_aux, "sigterm-room", faults_config, &cfg);
    g_aux.mark = file_size(g_aux.log);
    mq_purge("f.durable");
    /* A 60 KB document: one element holding text. */
    const int off = BODY - 5;
    char *doc = big_doc((size_t)off, 'y');
    double ms;
    if (post_status(g_aux.port, "/durable", &ms) != 202)
        fail_msg("no 202 before the freeze");

    freeze_fully(scale_ms(5000));
    static struct once_post posts[N];
    for (int i = 0; i < N; i++) {
        posts[i] = (struct once_post){
            .port = g_aux.port, .path = "/durable", .doc = doc, .len = (size_t)off};
        snprintf(posts[i].id, sizeof posts[i].id, "tr-%d-%d", (int)getpid(), i);
        if (pthread_create(&posts[i].th, NULL, once_post_thread, &posts[i]) != 0)
            abort();
    }
    /* Until the socket is full and requests wait for room. */
    double t0 = now_ms();
    while (log_count(&g_aux, "not reading fast enough") == 0 && now_ms() - t0 < scale_ms(5000))
        sleep_ms(50);
    sleep_ms(300); /* let the rest of the 160 arrive */
    int waited = log_count(&g_aux, "not reading fast enough");
    double t_term = now_ms();
    kill(g_aux.pid, SIGTERM);
    sleep_ms(1000);
    int answered_frozen = 0;
    for (int i = 0; i < N; i++)
        answered_frozen += posts[i].done > 0;
    if (thaw && broker_thaw() != 0)
        fail_msg("kill -CONT failed");
    int st;
    /* The drain bound, and when frozen the channel close's rpc timeout. */
    int bound = HTTP_TIMEOUT_MS + (thaw ? 0 : 5000);
    bool exited = wait_exit(g_aux.pid, scale_ms(bound + 5000), &st);
    double t_exit = now_ms();
    if (!thaw && broker_thaw() != 0)
        fail_msg("kill -CONT failed");
    if (!exited)
        fail_msg("bridge still running %g s after SIGTERM", scale_ms(bound + 5000) / 1000.0);
    g_aux.pid = 0;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        char d[64];
        fail_msg("bridge after SIGTERM: %s, expected exit 0", describe_status(st, d, sizeof d));
    }
    int want = thaw ? 202 : 503;
    int nwant = 0, other = 0, first_other = 0, twice = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(posts[i].th, NULL);
        if (posts[i].status == want)
            nwant++;
        else if (other++ == 0)
            first_other = posts[i].status;
        if (posts[i].after == 2)
            twice++;
    }
    free(doc);
    if (waited == 0)
        fail_msg("the socket toward the frozen broker never filled: nothing waited for room");
    if (twice)
        fail_msg("%d requests got more than one answer", twice);
    if (other)
        fail_msg("%d of %d publishes waiting at SIGTERM were not %d (the first: %d)", other, N,
                 want, first_other);
    if (!thaw) {
        result_row("SIGTERM while 160 x 60 KB publishes wait for room toward a broker frozen "
                   "(kill -STOP) until the bridge has exited",
                   "each answered 503 exactly once by its timeout ([http] timeout 10 s; no "
                   "second answer on any connection), %d before the bridge exited 0, %.1f s "
                   "after SIGTERM (bound: drain %d s + channel close 5 s)",
                   nwant, (t_exit - t_term) / 1000, HTTP_TIMEOUT_MS / 1000);
        PASS();
        return;
    }
    if (log_count(&g_aux, "reads again") == 0)
        fail_msg("the bridge did not log that the broker reads again");
    size_t nq;
    char **q = drain_sorted("f.durable", &nq);
    int lost = 0;
    for (int i = 0; i < N; i++)
        if (!sorted_has(q, nq, posts[i].id))
            lost++;
    ids_free(q, nq);
    if (lost)
        fail_msg("%d accepted messages are not in the queue", lost);
    result_row("SIGTERM while 160 x 60 KB publishes wait for room toward a frozen broker "
               "(kill -STOP; it reads again 1 s later)",
               "the bridge stopped accepting but kept the waiting ones: %d answered while "
               "frozen, then the backlog drained; %d of %d answered 202 exactly once (no "
               "second answer on any connection), all in the queue; exit 0 %.1f s after "
               "SIGTERM (bound %d s)",
               answered_frozen, nwant, N, (t_exit - t_term) / 1000, bound / 1000);
    PASS();
}

static void test_sigterm_waiting_for_room(void **state)
{
    (void)state;
    sigterm_waiting_for_room(true);
}

static void test_sigterm_waiting_frozen(void **state)
{
    (void)state;
    sigterm_waiting_for_room(false);
}

/* ------------------------------------------------------------------ */
/* 12. a publish larger than the socket's room, the broker not reading  */

/* The broker freezes; two 6 MiB publishes (more than the socket toward it
 * and the broker's receive buffer hold) and a small one arrive at a
 * one-worker bridge. The loop must never wait in send(): pongs on that
 * worker are answered while the broker is still frozen. The first big one
 * is written as room allows, the others wait behind it; when the broker
 * reads again all three go out whole, each body byte for byte, each
 * answered 202 once. */
static void large_publish_frozen(bool amqps)
{
    enum { BIG = 6 << 20, PONGS = 15 };
    const struct fcfg cfg = {.workers = 1, .heartbeat = "30s", .max_body = "8MiB", .amqps = amqps};
    if (amqps && (g_harness.tls_dir == NULL || g_harness.broker_tls_port <= 0))
        fail_msg("IT_TLS_DIR / IT_BROKER_TLS_PORT missing: run me through run.sh");
    bridge_start(&g_aux, amqps ? "large-tls" : "large", faults_config, &cfg);
    g_aux.mark = file_size(g_aux.log);
    mq_purge("f.durable");
    mq_purge("f.other");
    double ms;
    if (post_status(g_aux.port, "/durable", &ms) != 202)
        fail_msg("no 202 before the freeze");
    char *doc_a = big_doc(BIG, 'a'), *doc_b = big_doc(BIG, 'b');

    freeze_fully(scale_ms(5000));
    double t_freeze = now_ms();
    struct once_post big[2] = {
        {.port = g_aux.port, .path = "/durable", .doc = doc_a, .len = BIG},
        {.port = g_aux.port, .path = "/durable", .doc = doc_b, .len = BIG},
    };
    struct once_post small = {.port = g_aux.port, .path = "/other", .doc = g_doc, .len = g_doc_len};
    for (int i = 0; i < 2; i++) {
        snprintf(big[i].id, sizeof big[i].id, "lg-%d-%d", (int)getpid(), i);
        if (pthread_create(&big[i].th, NULL, once_post_thread, &big[i]) != 0)
            abort();
        sleep_ms(300); /* in this order */
    }
    snprintf(small.id, sizeof small.id, "lg-%d-small", (int)getpid());
    if (pthread_create(&small.th, NULL, once_post_thread, &small) != 0)
        abort();
    sleep_ms(300);
    /* The bridge holds the big ones now, the broker reads nothing. */
    double slowest = 0;
    int pongs_ok = 0;
    for (int i = 0; i < PONGS; i++) {
        struct resp r;
        double t = now_ms();
        int rc = http_get(g_aux.port, "/pong", &r);
        double took = now_ms() - t;
        if (rc == 0 && r.status == 200)
            pongs_ok++;
        if (rc == 0)
            resp_free(&r);
        if (took > slowest)
            slowest = took;
        if (rc != 0)
            break; /* the loop is stuck: no use asking again before the thaw */
        sleep_ms(100);
    }
    int answered_frozen = (big[0].done > 0) + (big[1].done > 0) + (small.done > 0);
    double t_thaw = now_ms();
    if (broker_thaw() != 0)
        fail_msg("kill -CONT failed");
    for (int i = 0; i < 2; i++)
        pthread_join(big[i].th, NULL);
    pthread_join(small.th, NULL);
    double t_all = now_ms();
    if (pongs_ok != PONGS)
        fail_msg("only %d of %d pongs were answered while the broker was frozen (the slowest "
                 "took %.0f ms): the worker's loop waited in a publish",
                 pongs_ok, PONGS, slowest);
    if (answered_frozen != 0)
        fail_msg("%d publishes were answered before the frozen broker read them", answered_frozen);
    struct once_post *all[3] = {&big[0], &big[1], &small};
    for (int i = 0; i < 3; i++) {
        if (all[i]->status != 202)
            fail_msg("publish %s: %d, expected 202", all[i]->id, all[i]->status);
        if (all[i]->after == 2)
            fail_msg("publish %s got a second answer", all[i]->id);
    }
    /* Byte for byte: the frames of one message were never interleaved. */
    int found = 0;
    const char *queues[2] = {"f.durable", "f.other"};
    for (int k = 0; k < 2; k++) {
        amqp_message_t m;
        while (mq_get(queues[k], &m) == 1) {
            for (int i = 0; i < 3; i++) {
                if (!bytes_eq(m.properties.message_id, all[i]->id))
                    continue;
                if (m.body.len != all[i]->len || memcmp(m.body.bytes, all[i]->doc, all[i]->len))
                    fail_msg("message %s: %zu bytes in the queue, not the %zu posted", all[i]->id,
                             m.body.len, all[i]->len);
                found++;
            }
            amqp_destroy_message(&m);
        }
    }
    free(doc_a);
    free(doc_b);
    if (found != 3)
        fail_msg("%d of the 3 publishes are in their queues, each once", found);
    expect_alive(&g_aux);
    stop_clean(&g_aux, scale_ms(HTTP_TIMEOUT_MS + 10000));
    result_row(amqps ? "two 6 MiB publishes and a small one to a frozen broker over amqps:// "
                       "(kill -STOP; one worker, max_body 8 MiB)"
                     : "two 6 MiB publishes and a small one to a frozen broker (kill -STOP; one "
                       "worker, max_body 8 MiB)",
               "the big one is written as the socket has room, the others wait behind it; "
               "%d of %d pongs on that worker answered during the %.1f s freeze, slowest %.0f "
               "ms; all 3 answered 202 once, %.0f ms after the broker read again, whole in "
               "their queues",
               pongs_ok, PONGS, (t_thaw - t_freeze) / 1000, slowest, t_all - t_thaw);
    PASS();
}

static void test_large_publish_frozen(void **state)
{
    (void)state;
    large_publish_frozen(false);
}

/* The same over TLS: SSL_write must never meet a full socket either. */
static void test_large_publish_frozen_tls(void **state)
{
    (void)state;
    large_publish_frozen(true);
}

/* The broker stops reading longer than [http] timeout while a 6 MiB body is
 * being written in pieces. The message cannot be abandoned halfway on its
 * channel, and every other publish of the worker waits behind it: once its
 * request has had its 503 the bridge drops that connection, so that /healthz
 * says so and new requests get 503 at once instead of queueing behind a
 * body that may trickle for ever; after the thaw the worker reconnects. */
static void test_large_publish_stalled(void **state)
{
    (void)state;
    enum { BIG = 6 << 20 };
    const struct fcfg cfg = {.workers = 1, .heartbeat = "30s", .max_body = "8MiB"};
    bridge_start(&g_aux, "large-stalled", faults_config, &cfg);
    g_aux.mark = file_size(g_aux.log);
    double ms;
    if (post_status(g_aux.port, "/durable", &ms) != 202)
        fail_msg("no 202 before the freeze");
    char *doc = big_doc(BIG, 's');
    freeze_fully(scale_ms(5000));
    double t_freeze = now_ms();
    struct once_post big = {.port = g_aux.port, .path = "/durable", .doc = doc, .len = BIG};
    snprintf(big.id, sizeof big.id, "st-%d", (int)getpid());
    if (pthread_create(&big.th, NULL, once_post_thread, &big) != 0)
        abort();
    /* Its request times out (503), then the body's own deadline drops the
     * connection: /healthz turns 503 while the broker is still frozen. */
    int last = 0;
    bool down = wait_health(g_aux.port, 503, scale_ms(HTTP_TIMEOUT_MS + 8000), &last);
    double t_down = now_ms();
    struct resp r;
    int small = -1;
    bool fast = false;
    if (down && http_req(g_aux.port, "POST", "/other", XML, NULL, g_doc, g_doc_len, &r) == 0) {
        small = r.status;
        fast = strstr(r.body, "broker unavailable") != NULL;
        resp_free(&r);
    }
    if (broker_thaw() != 0)
        fail_msg("kill -CONT failed");
    pthread_join(big.th, NULL);
    free(doc);
    if (!down)
        fail_msg("/healthz still %d %.0f ms into the freeze: the stalled body kept the connection",
                 last, t_down - t_freeze);
    if (big.status != 503 || big.after == 2)
        fail_msg("the stalled publish: %d%s, expected one 503", big.status,
                 big.after == 2 ? " and a second answer" : "");
    if (small != 503 || !fast)
        fail_msg("a publish after the drop: %d%s, expected 503 at once naming the broker", small,
                 fast ? "" : " (not naming the broker)");
    if (log_count(&g_aux, "was not taken within") != 1)
        fail_msg("the bridge did not log the body it gave up on");
    if (!wait_health(g_aux.port, 200, scale_ms(15000), &last))
        fail_msg("/healthz %d after the thaw: no reconnect", last);
    if (post_status(g_aux.port, "/other", &ms) != 202)
        fail_msg("no 202 after the reconnect");
    expect_alive(&g_aux);
    stop_clean(&g_aux, scale_ms(HTTP_TIMEOUT_MS + 10000));
    result_row("a 6 MiB publish to a broker frozen longer than [http] timeout (10 s; one worker)",
               "the publish answered 503 once at its timeout; the half-written body given up "
               "and the connection dropped %.1f s into the freeze (/healthz 503, the next "
               "publish 503 at once instead of waiting behind it); reconnected and 202 after "
               "the thaw",
               (t_down - t_freeze) / 1000);
    PASS();
}

/* SIGTERM while a 6 MiB body is half written to a broker frozen until the
 * bridge has exited: the worker still answers (a pong), the request gets
 * one 503 when its timeout runs out, and the bridge exits 0 within the
 * drain bound, dropping the connection rather than closing the channel
 * between the frames of that message. */
static void test_sigterm_half_written(void **state)
{
    (void)state;
    enum { BIG = 6 << 20 };
    static const struct fcfg cfg = {.workers = 1, .heartbeat = "30s", .max_body = "8MiB"};
    bridge_start(&g_aux, "half", faults_config, &cfg);
    g_aux.mark = file_size(g_aux.log);
    double ms;
    if (post_status(g_aux.port, "/durable", &ms) != 202)
        fail_msg("no 202 before the freeze");
    char *doc = big_doc(BIG, 'h');
    freeze_fully(scale_ms(5000));
    struct once_post big = {.port = g_aux.port, .path = "/durable", .doc = doc, .len = BIG};
    snprintf(big.id, sizeof big.id, "half-%d", (int)getpid());
    if (pthread_create(&big.th, NULL, once_post_thread, &big) != 0)
        abort();
    sleep_ms(500);
    struct resp r;
    double t = now_ms();
    int rc = http_get(g_aux.port, "/pong", &r);
    double pong_ms = now_ms() - t;
    int pong = rc == 0 ? r.status : -1;
    if (rc == 0)
        resp_free(&r);
    double t_term = now_ms();
    kill(g_aux.pid, SIGTERM);
    int bound = HTTP_TIMEOUT_MS;
    int st;
    bool exited = wait_exit(g_aux.pid, scale_ms(bound + 5000), &st);
    double t_exit = now_ms();
    if (broker_thaw() != 0)
        fail_msg("kill -CONT failed");
    if (!exited)
        fail_msg("bridge still running %g s after SIGTERM", scale_ms(bound + 5000) / 1000.0);
    g_aux.pid = 0;
    pthread_join(big.th, NULL);
    free(doc);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        char d[64];
        fail_msg("bridge after SIGTERM: %s, expected exit 0", describe_status(st, d, sizeof d));
    }
    if (pong != 200)
        fail_msg("no pong while the body was half written (%d after %.0f ms)", pong, pong_ms);
    if (big.status != 503 || big.after == 2)
        fail_msg("the half-written publish: %d%s, expected one 503", big.status,
                 big.after == 2 ? " and a second answer" : "");
    /* Dropped by the close ("bytes short"), or, the drain bound and the
     * body's own deadline both being [http] timeout, a moment before by that
     * deadline ("was not taken within"): once, and either way the connection
     * is dropped, never closed with a channel.close between its frames. */
    int dropped = log_count(&g_aux, "bytes short") + log_count(&g_aux, "was not taken within");
    if (dropped != 1)
        fail_msg("the bridge logged %d drops of the half-written body, expected 1", dropped);
    result_row("SIGTERM while a 6 MiB body is half written to a broker frozen until the bridge "
               "has exited (one worker)",
               "pong on that worker in %.0f ms meanwhile; the publish answered 503 once when "
               "its timeout ran out; connection dropped instead of a channel close between the "
               "message's frames; exit 0 %.1f s after SIGTERM (bound %d s)",
               pong_ms, (t_exit - t_term) / 1000, bound / 1000);
    PASS();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reject_publish, suite_setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_exchange, suite_setup, teardown),
        cmocka_unit_test_setup_teardown(test_memory_alarm, suite_setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_connection, suite_setup, teardown),
        cmocka_unit_test_setup_teardown(test_freeze_heartbeat, suite_setup, teardown),
        cmocka_unit_test_setup_teardown(test_clean_stop_start, suite_setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill9_under_load, suite_setup, teardown),
        cmocka_unit_test_setup_teardown(test_failover, suite_setup, teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_under_load, suite_setup, teardown),
        cmocka_unit_test_setup_teardown(test_backpressure, suite_setup, teardown),
        cmocka_unit_test_setup_teardown(test_stuck_queue, suite_setup, teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_waiting_for_room, suite_setup, teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_waiting_frozen, suite_setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_publish_frozen, suite_setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_publish_frozen_tls, suite_setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_publish_stalled, suite_setup, teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_half_written, suite_setup, teardown),
    };
    /* FAULTS_ONLY=test_failover (a pattern, * and ? allowed): run just those. */
    if (getenv("FAULTS_ONLY") != NULL)
        cmocka_set_test_filter(getenv("FAULTS_ONLY"));
    suite_use(&SUITE);
    return cmocka_run_group_tests_name("ingest-bridge broker faults", tests, suite_group_setup,
                                       suite_group_teardown);
}
