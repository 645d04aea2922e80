/* broker_faults.h - what the broker fault suites (tests/faults/test_broker_*.c)
 * share: the bridge config they vary, load clients and their tally, waiting
 * requests, a /healthz and /pong monitor, the broker read back id by id,
 * broker faults beyond the harness (kill -9, closed connections, a second
 * node), and the fixtures. The broker misbehaves under a running bridge,
 * and the bridge keeps its promises: nothing answered 202 is lost, every
 * request is answered exactly once, a broken broker gets 503 at once
 * instead of a hang, and the bridge comes back on its own.
 *
 * Run through tests/integration/run.sh (make test-faults), which starts the
 * private node; tests that disturb it put it back in their teardown
 * (broker_restore), so their order does not matter. Timings are recorded,
 * and asserted only with loose bounds (a noisy 2-core machine). */
#ifndef BROKER_FAULTS_H
#define BROKER_FAULTS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "harness.h"
#include "harness_cmocka.h" /* <cmocka.h>, assert_resp... */

#define XML "application/xml"
#define HTTP_TIMEOUT_MS 10000
#define RPC_LONG_TIMEOUT_MS 20000 /* route rpclong: waits longer than any fault here */

extern char g_doc[1200]; /* ~1 KB XML document */
extern size_t g_doc_len;

extern struct bridge g_main; /* shared by most tests, started once */
extern struct bridge g_aux;  /* a test's own instance */

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
char *faults_config(int http_port, const void *arg);

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
    bool fresh;       /* a new connection for every request (set after loads_add) */
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

extern struct loadset g_ls; /* the current test's load; teardown stops it */

/* Add COUNT clients posting to PATH on PORT (before loads_run). */
void loads_add(int count, int port, const char *path, const char *tag, bool rpc, int cap,
               int pause_ok_ms, int pause_503_ms);

/* Start the clients loads_add set up. */
void loads_run(void);

/* Stop and join the clients (each finishes its request: CLIENT_WAIT_MS at
 * most); their records stay until loads_free. */
void loads_stop(void);

/* What a load's clients got, for requests sent in [FROM, TO) (ms, now_ms
 * clock), on PATH (NULL: any). */
struct tally {
    int n, n202, n200, n503, nother, nnoanswer, nbadbody, nconnfail;
    int other_status;  /* the first "other" status seen */
    char other_id[40]; /* and its request */
    char noans_id[40]; /* the first request without an answer */
    double slowest_ms; /* slowest answer */
};

/* The tally of the current load (g_ls). */
struct tally tally(const char *path, double from, double to);

#define ALL_TIME -1e300, 1e300

/* The promises every load must keep: every request answered, with a status
 * the contract allows. */
void assert_tally_clean(const struct tally *t, const char *what);

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
extern struct waiter g_wait[MAXWAIT];
extern int g_nwait;

/* Start N requests to PATH, each on its own connection and thread. */
void waiters_start(int n, int port, const char *path, const char *tag);

/* Wait for every waiting request's answer; waiters_free closes them too. */
void waiters_join(void);

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

extern struct monitor g_mon;

/* Watch /healthz and /pong on PORT every 10 ms until monitor_stop. */
void monitor_start(int port);

/* Stop and join the monitor; g_mon keeps what it saw. */
void monitor_stop(void);

/* Every message id in queue Q of the broker on g_harness.broker_port,
 * consumed (no-ack, on a channel of our own: far faster than basic.get for
 * thousands), sorted; *N: how many. ids_free() them. The consumer is
 * cancelled and the channel closed before this returns: a no-ack consumer
 * the broker still believed in would swallow the next test's messages. */
char **drain_sorted(const char *q, size_t *n);

/* Is ID in the sorted IDS? */
bool sorted_has(char **ids, size_t n, const char *id);

/* fail_msg unless each of N ids is in queue Q (drained: drain_sorted). The
 * ids are strings STRIDE bytes apart from FIRST: the id field of an array
 * of structs, as expect_queued(q, posts[0].id, sizeof posts[0], n). */
void expect_queued(const char *q, const char *first, size_t stride, int n);

/* The load's publishes on PATH against the queue's ids (sorted; two lists
 * for two nodes, B may be NULL). */
struct qcheck {
    int n202;      /* answered 202 */
    int lost;      /* answered 202, not in the queue */
    int stored503; /* answered 503, in the queue anyway (at-least-once) */
    char first_lost[40];
};

/* The current load's records on PATH against the ids of queue A (and B). */
struct qcheck check_queue(const char *path, char **a, size_t na, char **b, size_t nb);

/* check_queue of the load's /durable against f.durable, read (and emptied)
 * here: what most tests ask after their fault. */
struct qcheck check_durable(void);

/* check_durable, and fail_msg when an accepted message is not in f.durable:
 * the end of every test whose fault must lose nothing. */
struct qcheck expect_durable_kept(void);

/* A second node for the failover test: its own directory, port and name. */
struct node2 {
    char dir[512];
    char node[96];
    int port;
    bool recorded; /* broker.sh start was run: stop it in teardown */
};
extern struct node2 g_node2;

/* tests/broker.sh CMD for node 2 (BROKER_DIR, _PORT, _NODE set through
 * env(1): the run's own BROKER_DIR is in our environment). 0 or -1. */
int node2_sh(const char *cmd);

void node2_stop(void);

/* One POST on a fresh connection; the status, -1 if no answer; *MS: time. */
int post_status(int port, const char *path, double *ms);

/* POST until one gets WANT (every 50 ms), for at most MS; the time it took,
 * or -1. */
double wait_status(int port, const char *path, int want, int ms);

/* How many times /healthz's body says NEEDLE (": broker ": one line per
 * worker that is not up; those up say "worker N: up NODE"); -1 if it did
 * not answer. *MS: how long it took. */
int health_count(int port, const char *needle, double *ms);

/* fail_msg unless B still runs. */
void expect_alive(struct bridge *b);

/* SIGTERM, exit 0 within the bound. */
void stop_clean(struct bridge *b, int bound_ms);

/* The fixtures: the main bridge (MAIN_CFG), f.full, the document. */
extern const struct suite FAULTS_SUITE;

/* Not suite_teardown: the clients go first, and the broker is put back
 * whatever it was, node 2 included. */
int faults_teardown(void **state);

/* A document of LEN bytes: one element of FILL characters. */
char *big_doc(size_t len, char fill);

/* Suspend (or resume) the Erlang process of queue f.stuck: it takes
 * messages into its mailbox and confirms none, as a quorum queue without a
 * majority would, while every other queue of the node works. */
int stuck_queue(bool suspend);

/* N posts to /ok over one keep-alive connection, ids TAG-PID-I; how many
 * were 202 (the others' first status in *OTHER). */
int post_ok(int port, int n, const char *tag, int *other);

/* kill -STOP takes effect thread by thread: a broker thread inside a system
 * call (an fsync of the message store) stops only when it returns, and
 * until every one has, the broker may still confirm. Freeze it and wait
 * until each of its threads is stopped ('T' in /proc), for at most MS. */
void freeze_fully(int ms);

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

/* A struct once_post's thread: the POST, its answer, what came after. */
void *once_post_thread(void *p);

/* A test of these suites: suite_setup, then faults_teardown. */
#define FAULTS_TEST(f) cmocka_unit_test_setup_teardown(f, suite_setup, faults_teardown)

#endif
