/* harness.h - what the suites that drive the real ingest-bridge share:
 * spawning programs, raw HTTP over sockets, reading the broker with
 * rabbitmq-c, the private broker node, the bridge process and the echo
 * worker. Run under tests/integration/run.sh, which starts the node and
 * passes it in IT_* variables; harness_init() reads them.
 *
 * Free of any test framework: a helper that cannot go on calls
 * harness_fail(), which ends the test through g_harness.fail (abort() unless
 * a framework is plugged in: harness_cmocka.h does it for cmocka). */
#ifndef HARNESS_H
#define HARNESS_H

#include <amqp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

/* ---- the run ------------------------------------------------------------ */

/* Ends the current test with MSG, reported at FILE:LINE; must not return
 * (cmocka longjmps out of the test). */
typedef void harness_fail_fn(const char *file, int line, const char *msg);
/* Prints MSG (a whole line or lines, '\n' included) to the test's output. */
typedef void harness_note_fn(const char *msg);

/* Everything the run gives the tests, set by harness_init(), plus the state
 * the helpers share. One instance: g_harness. */
struct harness {
    const char *bin;        /* IT_BRIDGE_BIN: build/ingest-bridge (absolute) */
    const char *echo_bin;   /* IT_ECHO_BIN: build/echo-worker (absolute) */
    const char *broker_sh;  /* IT_BROKER_SH: tests/broker.sh (absolute) */
    const char *broker_dir; /* BROKER_DIR: the node's state (pid file) */
    const char *node;       /* IT_BROKER_NODE: node name, for messages; may be NULL */
    int broker_port;        /* IT_BROKER_PORT: the private node's AMQP port */
    int broker_tls_port;    /* IT_BROKER_TLS_PORT: its amqps:// port (TLS listener) */
    const char *tls_dir;    /* IT_TLS_DIR: the run's certificates (tests/tls-certs.sh) */
    const char *log_level;  /* IT_LOG_LEVEL for the bridge's config, default "info" */
    char **wrap;            /* IT_BRIDGE_WRAP split on blanks, NULL-ended; NULL if unset */
    double time_scale;      /* IT_TIME_SCALE (default 1), see scale_ms() */
    char tmp[256];          /* this run's temporary directory (removed by harness_fini) */

    amqp_connection_state_t mq; /* the tests' own broker connection (mq_*), NULL if none */
    pid_t echo_pid;             /* running echo-worker, 0 if none */
    char echo_log[512];         /* its output */

    /* Undo-list of broker_stop/freeze/alarm, for broker_restore(). */
    bool broker_stopped;
    bool broker_frozen;
    bool watermark_low;

    harness_fail_fn *fail; /* default: print to stderr, abort() */
    harness_note_fn *note; /* default: stdout */

    const struct suite *suite; /* what the suite_* fixtures run, NULL if unused */
    bool passed; /* set by PASS() at the end of a test body; false: the logs get printed */
};

extern struct harness g_harness;

/* Read the IT_* variables, ignore SIGPIPE, make the temporary directory
 * (TMPDIR or /tmp, "bridge-it-XXXXXX") and print one line
 * "SUITE: bridge ..., broker ... on port ..., files in ..." (and one naming
 * the wrapper, if any). 0, or -1 with the reason on stderr (not run through
 * run.sh, binary missing, bad IT_TIME_SCALE). */
int harness_init(const char *suite) __attribute__((warn_unused_result));
/* Disconnect from the broker, remove the temporary directory unless
 * IT_KEEP is set. */
void harness_fini(void);

void harness_fail_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));
#define harness_fail(...) harness_fail_at(__FILE__, __LINE__, __VA_ARGS__)
void harness_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* One measured outcome for tests/faults/RESULTS.md's table: printed as
 * "RESULT | WHAT | OUTCOME |" and appended as a markdown row to the file
 * named by IT_RESULTS, if set (make test-faults sets it). Call it with what
 * the test measured, after the assertions on it passed. */
void result_row(const char *what, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* MS stretched by IT_TIME_SCALE: for every bound on how fast the bridge
 * answers, starts or stops (valgrind slows it: start-up ~1 s instead of
 * 50 ms). Not for a route's own timeout, nor for a sleep that must stay
 * shorter than one (a scaled bound only lengthens a failing run). */
int scale_ms(int ms);

/* ---- time and memory ---------------------------------------------------- */

double now_ms(void); /* CLOCK_MONOTONIC, in ms */
void sleep_ms(int ms);
void *xmalloc(size_t n); /* abort()s when out of memory */
char *xstrdup(const char *s);
/* open_memstream(TEXT, LEN) with *TEXT and *LEN zeroed first; abort()s when
 * out of memory. After fclose, *TEXT is the malloc'd text. */
FILE *xmemstream(char **text, size_t *len);

/* ---- running programs --------------------------------------------------- */

/* fork + exec ARGV (argv[0] looked up in PATH if it has no '/') with stdout and stderr appended to LOG, stdin from
 * /dev/null, and the environment less every BRIDGE_* variable (a developer's
 * BRIDGE_AMQP_URI must not leak in) plus EXTRA ("K=V" strings, NULL-ended,
 * may be NULL). */
pid_t spawn(char *const argv[], const char *log, char *const extra[]);
/* waitpid with a deadline; true when PID exited (status in *ST). */
bool wait_exit(pid_t pid, int timeout_ms, int *st);
/* The file from offset FROM (0 if out of range) as a malloc'd string; ""
 * if it cannot be read. */
char *slurp(const char *path, long from);
long file_size(const char *path); /* 0 if missing */
/* Write TEXT to PATH; harness_fail on error. */
void write_file(const char *path, const char *text);
/* Run ARGV to completion (20 s, scaled), output captured; returns the raw
 * wait status, or -1 on timeout (the program is then killed). *OUT:
 * malloc'd. */
int run_capture(char *const argv[], char *const extra_env[], char **out);
/* IT_BRIDGE_WRAP..., g_harness.bin, ARGS... (NULL-ended): the command line
 * of a bridge, under the wrapper if one is set. Free with free() (one
 * block). */
char **bridge_argv(const char *const args[]);

/* ---- the broker node ---------------------------------------------------- */

/* tests/broker.sh A1 [A2]; 0, or -1 with its output printed. */
int broker_cmd(const char *a1, const char *a2);
/* tests/broker.sh ctl A1 [A2] (rabbitmqctl -n NODE); 0 or -1, same. */
int broker_ctl(const char *a1, const char *a2);
/* The node's Erlang VM, from the pid file tests/broker.sh keeps; 0 if none. */
pid_t broker_pid(void);

/* Disturb the broker, remembering it for broker_restore(); 0 or -1. */
int broker_stop(void);     /* tests/broker.sh stop; also mq_disconnect() */
int broker_start(void);    /* tests/broker.sh start */
int broker_freeze(void);   /* SIGSTOP to its VM; harness_fail if there is no pid file */
int broker_thaw(void);     /* SIGCONT */
int broker_alarm(bool on); /* memory alarm: high watermark 0, or back to 0.4 */
/* Thaw, lift the alarm, start: whatever the list says is still disturbed. */
void broker_restore(void);

/* ---- raw HTTP over sockets ---------------------------------------------- */

struct conn {
    int fd;    /* -1 when closed */
    void *ssl; /* SSL * over fd (conn_open_tls), NULL for plain HTTP */
    char *buf; /* bytes read and not consumed yet, NUL-terminated */
    size_t len;
    size_t cap;
};

#define MAXHDR 64

struct resp {
    int status;
    char *head; /* header block, lines NUL-split */
    const char *hname[MAXHDR];
    const char *hval[MAXHDR];
    int nh;
    char *body; /* NUL-terminated for convenience */
    size_t body_len;
    double ms; /* from the request's last byte to the response's */
};

void resp_free(struct resp *r);
const char *resp_header(const struct resp *r, const char *name); /* first, NULL if none */
int resp_header_count(const struct resp *r, const char *name);

/* Connect to 127.0.0.1:PORT, send/receive timeouts 5 s (scaled); 0 or -1. */
int conn_open(struct conn *c, int port);
void conn_set_timeout(struct conn *c, int ms);
/* conn_open, then a TLS handshake (TLS 1.2+) that checks the server's
 * certificate against the CA file CA and the address 127.0.0.1; CERT and
 * KEY (both may be NULL): a client certificate. 0, or -1 with the reason
 * noted. conn_send, conn_fill and conn_close then go through TLS. */
int conn_open_tls(struct conn *c, int port, const char *ca, const char *cert, const char *key);
void conn_close(struct conn *c);
void conn_abort(struct conn *c); /* close with RST instead of FIN */
int conn_send(struct conn *c, const void *p, size_t n);
int conn_fill(struct conn *c); /* read more: >0 read, 0 EOF, -1 error or timeout */
void conn_consume(struct conn *c, size_t n);
int conn_need(struct conn *c, size_t n); /* N bytes buffered; -1 if closed/timed out first */
/* The next line (without CRLF, length in *LINELEN) at c->buf; NULL at EOF. */
char *conn_line(struct conn *c, size_t *linelen);
/* Read one whole response (status line, headers, body by Content-Length,
 * chunked, or until EOF). HEAD: no body. 0, or -1 when the connection
 * ended or timed out before a whole response. */
int conn_read_resp(struct conn *c, struct resp *r, bool head);
/* After a response: did the server close the connection within MS?
 * 1 closed (EOF or reset), 0 still open, 2 more bytes arrived instead. */
int conn_wait_closed(struct conn *c, int ms);

/* A request: method, target, optional Content-Type, extra header lines
 * ("Name: value\r\n"...), optional body (Content-Length added when BODY is
 * not NULL and EXTRA does not frame it itself). HTTP/1.1. malloc'd. */
char *fmt_request(size_t *len, const char *method, const char *target, const char *ctype,
                  const char *extra, const void *body, size_t blen);
/* Send RAW on a connection and read one response. */
int exchange(struct conn *c, const char *raw, size_t len, struct resp *r, bool head);
/* One request on a fresh connection; 0 or -1 (no whole response). */
int http_req(int port, const char *method, const char *target, const char *ctype, const char *extra,
             const void *body, size_t blen, struct resp *r);
int http_get(int port, const char *target, struct resp *r);
/* http_req over TLS (conn_open_tls with CA, no client certificate). */
int https_req(int port, const char *ca, const char *method, const char *target, const char *ctype,
              const char *extra, const void *body, size_t blen, struct resp *r);
/* The value of SERIES (name and labels, as /metrics writes them) on PORT; 0
 * when absent (a counter nothing has counted yet), -1 without an answer. */
double metric(int port, const char *series);
/* Until SERIES on PORT reads WANT (true), or MS (scaled) pass (false); the
 * last value read in *LAST if not NULL. */
bool wait_metric(int port, const char *series, double want, int ms, double *last);
int http_post(int port, const char *target, const char *ctype, const char *extra, const char *body,
              struct resp *r);

/* The value of SERIES (a name, with its labels as the bridge writes them) in
 * the exposition TEXT of /metrics; -1 if absent. */
long long metric_in(const char *text, const char *series);

/* ---- reading the broker with rabbitmq-c --------------------------------- */

/* Connect g_harness.mq (guest, vhost /, channel 1) unless connected. */
bool mq_connect(void);
void mq_disconnect(void); /* no close handshake: the broker may be dead */
/* true on a normal reply; else prints why, naming WHAT. */
bool mq_ok(amqp_rpc_reply_t r, const char *what);
/* Connect if needed and declare durable queue Q with ARGS (amqp_empty_table
 * for none). */
bool mq_declare(const char *q, amqp_table_t args);
/* Arguments of a queue that refuses every publish (x-max-length 0,
 * reject-publish): the broker nacks. Points to static storage. */
amqp_table_t mq_args_reject_all(void);
/* The next two try again once on a fresh connection (the broker may have
 * restarted, a channel error may have closed channel 1), then
 * harness_fail. */
void mq_purge(const char *q);
/* 1 got a message into *M (amqp_destroy_message it), 0 queue empty. */
int mq_get(const char *q, amqp_message_t *m);
/* All message ids in Q (consumed); *N: how many. ids_free() them. */
char **mq_drain_ids(const char *q, size_t *n);
bool ids_have(char **ids, size_t n, const char *id);
void ids_free(char **ids, size_t n);
bool bytes_eq(amqp_bytes_t b, const char *s);
/* A string header of a message; NULL if absent, "<kind X>" if not a string. */
const char *tbl_get(const amqp_table_t *t, const char *key, char *buf, size_t buflen);

/* ---- the bridge under test ---------------------------------------------- */

struct bridge {
    pid_t pid;          /* 0 when not running */
    int port;           /* its HTTP port */
    char cfg[512];      /* TMP/NAME.ini */
    char log[512];      /* TMP/NAME.log: its stdout and stderr (and valgrind's) */
    long mark;          /* log offset at the start of the current test */
    long start;         /* log offset when this process was started */
    const char *tls_ca; /* set before bridge_start: it speaks HTTPS, its certificate from this CA */
    const char *tls_cert, *tls_key; /* and, when set, the client certificate bridge_get shows */
};

/* The whole text of a config (malloc'd) for a bridge that listens on
 * 127.0.0.1:HTTP_PORT; ARG is what the suite gave bridge_start. */
typedef char *bridge_config_fn(int http_port, const void *arg);

int free_port(void); /* a TCP port nothing listens on right now */
/* Start a bridge NAME (files TMP/NAME.ini, TMP/NAME.log) on a free port
 * with the config CONFIG writes, under IT_BRIDGE_WRAP if set; wait until
 * /healthz says 200 (20 s, scaled). harness_fail, its log printed, if it
 * dies or does not get there. */
void bridge_start(struct bridge *b, const char *name, bridge_config_fn *config, const void *arg);
/* bridge_start with PREFIX (NULL-ended) before the command line: a program
 * that runs the bridge, as "prlimit", "--nofile=256:256", "--" (before
 * IT_BRIDGE_WRAP's wrapper, if any). */
void bridge_start_under(struct bridge *b, const char *name, const char *const prefix[],
                        bridge_config_fn *config, const void *arg);
/* bridge_start without the wait: the bridge is starting when it returns. */
void bridge_spawn(struct bridge *b, const char *name, bridge_config_fn *config, const void *arg);
/* SIGTERM and wait; returns the raw wait status (-1: had to SIGKILL). A
 * status other than 0 prints the valgrind/sanitizer report, if any. */
int bridge_stop(struct bridge *b, int timeout_ms);
/* Still running? If not, *ST is its wait status and b->pid becomes 0. */
bool bridge_alive(struct bridge *b, int *st);
/* A suite's end: stop the shared bridge NAME (bridge_stop with TIMEOUT_MS,
 * scaled); 0 when it exited 0, else -1 with its whole log and why on
 * stderr. */
int bridge_stop_clean(struct bridge *b, const char *name, int timeout_ms)
    __attribute__((warn_unused_result));
/* A test's start: false, with its log and report printed, when the shared
 * bridge NAME died since (the caller starts it again). */
bool bridge_still_up(struct bridge *b, const char *name) __attribute__((warn_unused_result));
/* A test's end for the bridge it started of its own (AUX, may never have
 * been started): when the test failed (!OK) print its log, then kill -9 and
 * reap it if it runs. */
void bridge_aux_end(struct bridge *aux, bool ok);
/* broker_restore(), and when the broker had been stopped, wait (up to 30 s,
 * scaled) for B's /healthz to say 200 again before the next test. */
void broker_restore_for(const struct bridge *b);
/* How many times NEEDLE stands in what the bridge logged since the test
 * began (from b->mark). */
int log_count(const struct bridge *b, const char *needle);
/* Poll log_count until NEEDLE stands there (every 20 ms); false after MS. */
bool log_wait(const struct bridge *b, const char *needle, int ms);
/* Print what the bridge logged since the test began (its last 150 lines). */
void dump_log(const struct bridge *b, const char *title);
/* Print the lines valgrind (or a sanitizer) wrote, "==PID==...", since this
 * process started, whole (up to 400 lines) even when the log's tail would
 * cut them; false if there are none. bridge_stop() calls it on a bad exit
 * status, bridge_start() when the bridge dies. */
bool dump_report(const struct bridge *b);
const char *describe_status(int st, char *buf, size_t n);
/* Poll /healthz until it answers WANT; false after MS (*LAST: the last status). */
bool wait_health(int port, int want, int ms, int *last);
/* GET TARGET from B, over HTTPS when b->tls_ca is set. */
int bridge_get(const struct bridge *b, const char *target, struct resp *r);
/* wait_health for B, over HTTPS when b->tls_ca is set. */
bool bridge_wait_health(const struct bridge *b, int want, int ms, int *last);

/* ---- a suite's fixtures ------------------------------------------------- */

/* One bridge a suite's tests share: started before the first test, started
 * again by a test's setup when it had died, stopped cleanly after the last. */
struct suite_bridge {
    struct bridge *b;         /* NULL: no such bridge */
    const char *name;         /* bridge_start's NAME; its log's title is "NAME bridge log" */
    bridge_config_fn *config; /* and its ARG */
    const void *arg;
};

#define SUITE_BRIDGES 2

/* What the fixtures of a black-box suite need to know; everything else a
 * suite does in its hooks. The fixtures below have cmocka's shape. */
struct suite {
    const char *name; /* harness_init's SUITE */
    struct suite_bridge shared[SUITE_BRIDGES];
    int stop_ms; /* bound on each shared bridge's clean stop at the end (scaled) */
    /* A queue declared refusing every publish (mq_args_reject_all()) before
     * the bridges start; NULL: none. */
    const char *reject_queue;
    struct bridge *aux; /* a test's own bridge: its log on failure, killed at the end */
    /* After harness_init, before the broker connection and the bridges:
     * files, queues, listeners of the suite's own. 0, or -1 with the reason
     * on stderr. NULL: nothing. */
    int (*prepare)(void);
    /* The suite's end, after the shared bridges stopped and before the
     * broker connection goes. NULL: nothing. */
    void (*finish)(void);
    /* A test's start, once the shared bridges are up and before their log
     * marks are taken (what the test's log reading starts after). */
    void (*test_begin)(void);
};

/* Group setup: harness_init, prepare, then (when the suite has shared
 * bridges) the broker connection, the reject queue and the bridges. -1 if
 * any fails. */
int suite_group_setup(void **state);
/* Group teardown: the shared bridges stopped (each must exit 0), finish,
 * harness_fini; -1 when a bridge did not stop cleanly (the files are kept
 * for reading then). */
int suite_group_teardown(void **state);
/* A test's setup: passed = false, the shared bridges started again if one
 * had died, test_begin, the log marks, the aux bridge cleared. */
int suite_setup(void **state);
/* The first half of suite_teardown, for a suite that tears down in its own
 * order: when the test failed, the shared bridges' logs since it began;
 * then bridge_aux_end for the aux bridge. */
void suite_test_logs(void);
/* A test's teardown: suite_test_logs, echo_stop, broker_restore_for the
 * first shared bridge (the broker put back as the test found it). */
int suite_teardown(void **state);

/* ---- the echo worker (rpc) ---------------------------------------------- */

/* Start build/echo-worker on QUEUE with OPTS (NULL-ended, may be NULL) and
 * wait until it says it consumes (15 s). */
void echo_start(const char *queue, const char *const opts[]);
void echo_stop(void); /* SIGTERM, SIGKILL after 5 s; nothing if none runs */

#endif
