/* hostile.h - what the hostile input suites (tests/faults/test_hostile_*.c)
 * share: the bridge's config, the memory, CPU and /proc readings of the
 * bridge, probes that say what the bridge did with a hostile request, the
 * client sockets a failed test leaves, and the fixtures. Each test asserts
 * what CONTRACT.md promises, with counts, then records what it measured with
 * result_row() (the table of tests/faults/RESULTS.md). Run by `make test-faults`
 * through tests/integration/run.sh, which starts a private broker node. Every
 * loop is bounded in time and count, all traffic goes to 127.0.0.1. */
#ifndef HOSTILE_H
#define HOSTILE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "harness.h"
#include "harness_cmocka.h" /* <cmocka.h>, assert_resp... */

#define XML "application/xml"
#define TIMEOUT_MS 2000        /* [http] timeout of the bridges here */
#define MAX_BODY (1024 * 1024) /* [http] max_body */
#define Q_INGEST "h.ingest"    /* declared by the bridge (route h.ingest) */
#define Q_LOAD "h.load"        /* declared here, x-max-length: the 1 MB docs */

extern const char DOC[];

extern struct bridge g_main; /* shared by the tests, started once */
extern struct bridge g_aux;  /* a test's own instance (descriptor limit) */

/* Client sockets a test may leave open when it fails: teardown closes them. */
#define IDLE_N 10000
#define FDX_N 400
extern int g_fds[IDLE_N + FDX_N];
extern size_t g_nfds;
extern int g_epoll;

void fds_track(int fd);

void fds_close_all(void);

/* Routes and queues prefixed h.; a short timeout so deadline tests are
 * quick. h.load has no queue key: its queue is declared by test_hostile_xml.c
 * with a length limit, as 1 MB documents would otherwise pile up. A
 * bridge_config_fn; ARG: NULL, or an int, the number of workers (2). */
char *h_config(int http_port, const void *arg);

/* A /proc file whole (their size reads as 0, so not slurp()). malloc'd,
 * "" if unreadable. */
char *proc_read(pid_t pid, const char *what);

/* A "Key:   N kB" line of /proc/PID/status, in kB; -1 if absent. */
long status_kb(pid_t pid, const char *key);

/* Is PID running under ASan or valgrind? Their allocators keep freed
 * memory (quarantine), so RSS says little about what the bridge holds. */
bool instrumented(pid_t pid);

/* A bound on the bridge's memory growth, in kB: KB, or 8 times that under
 * ASan or valgrind. */
long rss_bound_kb(long kb);

/* The bridge's memory before something: its RSS, and the peak counter
 * restarted from there when the kernel lets us. */
struct mem_mark {
    long rss_kb;   /* VmRSS before */
    bool hwm_ok;   /* VmHWM was reset: the peak is measurable */
    long hwm_base; /* VmHWM right after the reset (or before, if not reset) */
};

void mem_mark(pid_t pid, struct mem_mark *m);

/* Growth since the mark, in kB: of the peak when it could be reset, else of
 * the current RSS (and of the peak, which only ever grows). */
long mem_growth_kb(pid_t pid, const struct mem_mark *m);

/* GET /pong on a fresh connection: its latency in ms, or -1 if it was not a
 * 200 "Pong!". */
double pong_ms(int port);

/* POST DOC with id ID to /h/ingest on a fresh connection: latency in ms, or
 * -1 if not 202. */
double publish_ms(int port, const char *id);

/* How many messages in Q have message_id ID, and how many in all; the queue
 * is drained. */
size_t queue_count(const char *q, const char *id, size_t *all);

/* Nothing in the queue. */
void assert_nothing_published(const char *what);

/* Read a response after a raw request: 1 a whole one in *R, 0 the bridge
 * closed (or reset) the connection without one, -1 nothing within MS. */
int await_resp(struct conn *c, struct resp *r, int ms);

/* What the bridge did with a hostile request, as one phrase. */
struct verdict {
    int got;       /* 1 response, 0 closed without one, -1 no answer */
    int status;    /* the response's, 0 if none */
    int after;     /* conn_wait_closed after it: 1 closed, 0 open, 2 more bytes */
    double ms;     /* from the request's last byte to the answer or the close */
    char id[160];  /* the response's X-Request-Id, "" if none */
    char body[96]; /* its body's start, one line */
    char said[64]; /* got, status and after as one phrase, for messages */
};

/* Send RAW (LEN bytes, may hold NULs) on a fresh connection and see what the
 * bridge does; send errors are not failures (the bridge may refuse early). */
void probe(int port, const void *raw, size_t len, struct verdict *v);
/* probe() with the request printf's FMT makes (no NULs in it). */
void probe_fmt(int port, struct verdict *v, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A well-formed document of exactly N bytes (N >= 64): a root element full
 * of small items, padded with spaces. malloc'd, NUL-terminated. */
char *make_doc(size_t n);

/* A test's start (struct suite's test_begin): h.ingest empty. */
void hostile_test_begin(void);

/* suite_teardown between the sockets a failed test left and a check that
 * the bridge is still there, whatever the test did. */
int hostile_teardown(void **state);

/* The bridge is alive and answers a pong. */
void assert_serving(const char *after);

/* Statistics of the pongs sent meanwhile. */
struct pongs {
    int n;      /* answered 200 */
    int bad;    /* not answered 200 */
    double max; /* worst latency, ms */
};

/* TEXT with every TOKEN replaced by VALUE. malloc'd. */
char *subst(const char *text, const char *token, const char *value);

/* The suite of a hostile test file: its one shared bridge, the fixtures
 * above, plus the file's own hooks (.prepare = ..., .finish = ...). */
#define HOSTILE_SUITE(...)                                                                         \
    {                                                                                              \
        .name = "hostile", .shared = {{&g_main, "hostile", h_config, NULL}}, .stop_ms = 20000,     \
        .aux = &g_aux, .test_begin = hostile_test_begin, __VA_ARGS__                               \
    }

/* A test of these suites: suite_setup, then hostile_teardown. */
#define HOSTILE_TEST(f) cmocka_unit_test_setup_teardown(f, suite_setup, hostile_teardown)

#endif
