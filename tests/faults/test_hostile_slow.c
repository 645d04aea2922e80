/* test_hostile_slow.c - clients that take their time or hold on: headers
 * and bodies sent a byte at a time (slowloris), 10,000 idle keep-alive
 * connections, and a bridge that runs out of descriptors. The bridge drops
 * them at its deadlines, keeps answering everyone else, and recovers. One of
 * the hostile input suites (the shared part: hostile.[ch]). */

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hostile.h"

/* utime + stime of PID, in seconds (every thread). */
static double cpu_seconds(pid_t pid)
{
    char *s = proc_read(pid, "stat");
    char *p = strrchr(s, ')');
    unsigned long ut = 0, st = 0;
    if (p == NULL ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        ut = st = 0;
    free(s);
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* Lines of TEXT, and of those the ones containing NEEDLE (may be NULL). */
static int count_lines(const char *text, const char *needle, int *matching)
{
    int n = 0, m = 0;
    for (const char *line = text; *line;) {
        const char *eol = strchr(line, '\n');
        size_t len = eol ? (size_t)(eol - line) : strlen(line);
        n++;
        if (needle && memmem(line, len, needle, strlen(needle)))
            m++;
        line += len + (eol ? 1 : 0);
    }
    if (matching)
        *matching = m;
    return n;
}

/* Send TEXT one byte every STEP ms on C (connected at T0) until the bridge
 * closes it, sending a pong on a fresh connection after every byte. Returns
 * ms from T0 to the close, or -1 if the connection outlived LIMIT ms. *SENT:
 * bytes trickled; *GOT: bytes the bridge sent. */
static double trickle(struct conn *c, double t0, const char *text, int step, int limit,
                      struct pongs *pg, size_t *sent, size_t *got)
{
    size_t i = 0, n = strlen(text);
    double next = now_ms();
    *sent = *got = 0;
    for (;;) {
        double now = now_ms();
        if (now - t0 > limit)
            return -1;
        if (now >= next && i < n) {
            if (send(c->fd, text + i, 1, MSG_NOSIGNAL) != 1)
                return now_ms() - t0; /* reset: closed already */
            *sent = ++i;
            next = now + step;
            double ms = pong_ms(g_main.port);
            if (ms < 0) {
                pg->bad++;
            } else {
                pg->n++;
                if (ms > pg->max)
                    pg->max = ms;
            }
        }
        int wait = (int)(next - now_ms());
        wait = wait < 0 ? 0 : wait > 50 ? 50 : wait;
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        if (poll(&p, 1, wait) > 0) {
            char b[4096];
            ssize_t k = recv(c->fd, b, sizeof b, MSG_DONTWAIT);
            if (k > 0) {
                *got += (size_t)k;
                continue;
            }
            if (k == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
                return now_ms() - t0;
        }
    }
}

/* HEAD at once on a fresh connection to the shared bridge, then REST
 * trickled at one byte per 300 ms, a pong after each: the bridge must close
 * the connection at its [http] timeout (not before 90% of it, nor 2 s after)
 * and answer every pong. WHAT names the trickled part in a failure. Returns
 * when it closed, ms after connecting; *PG, *SENT and *GOT as trickle's. */
static double trickle_to_timeout(const char *head, const char *rest, const char *what,
                                 struct pongs *pg, size_t *sent, size_t *got)
{
    struct conn c;
    assert_int_equal(conn_open(&c, g_main.port), 0);
    double t0 = now_ms();
    assert_int_equal(conn_send(&c, head, strlen(head)), 0);
    int limit = TIMEOUT_MS + scale_ms(2000);
    double closed = trickle(&c, t0, rest, 300, limit, pg, sent, got);
    conn_close(&c);
    if (closed < 0)
        fail_msg("%s at one byte per 300 ms: still open after %d ms (timeout %d ms)", what, limit,
                 TIMEOUT_MS);
    if (closed < TIMEOUT_MS * 0.9)
        fail_msg("closed after %.0f ms, before the %d ms timeout", closed, TIMEOUT_MS);
    if (pg->bad > 0 || pg->n == 0)
        fail_msg("%d of %d pongs meanwhile failed", pg->bad, pg->n + pg->bad);
    return closed;
}

static void test_slowloris_headers(void **state)
{
    (void)state;
    static const char line[] = "GET /pong HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    /* Far longer than the test lasts at one byte per 300 ms. */
    static const char rest[] =
        "X-Slow-1: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"
        "X-Slow-2: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\r\n\r\n";
    struct pongs pg = {0};
    size_t sent, got;
    double closed = trickle_to_timeout(line, rest, "headers", &pg, &sent, &got);
    result_row("slowloris: request line, then headers at 1 byte / 300 ms ([http] timeout 2 s)",
               "connection closed %.0f ms after connect (%zu header bytes trickled, %zu bytes "
               "answered); %d pongs meanwhile all 200, slowest %.1f ms",
               closed, sent, got, pg.n, pg.max);
    PASS();
}

static void test_slow_body(void **state)
{
    (void)state;
    static const char head[] = "POST /h/ingest HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                               "Content-Type: application/xml\r\nContent-Length: 120\r\n"
                               "X-Request-Id: h-slow-body\r\n\r\n";
    char body[121]; /* "<doc>", dots, "</doc>": the 120 bytes announced */
    memset(body, '.', 120);
    memcpy(body, "<doc>", 5);
    memcpy(body + 114, "</doc>", 6);
    body[120] = '\0';
    struct pongs pg = {0};
    size_t sent, got;
    double closed = trickle_to_timeout(head, body, "body", &pg, &sent, &got);
    size_t all;
    assert_int_equal(queue_count(Q_INGEST, "h-slow-body", &all), 0);
    assert_int_equal(all, 0);
    result_row("slow body: whole headers, then the body at 1 byte / 300 ms",
               "connection closed %.0f ms after connect (%zu of 120 body bytes sent, %zu bytes "
               "answered), nothing published; %d pongs meanwhile all 200, slowest %.1f ms",
               closed, sent, got, pg.n, pg.max);
    PASS();
}

/* ------------------------------------------------------------------ */
/* 10,000 idle connections                                             */

/* Raise this process's descriptor limit to at least WANT; false if the hard
 * limit is lower. */
static bool raise_nofile(rlim_t want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return false;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur >= want;
}

/* A "Max open files  SOFT  HARD  files" line of /proc/PID/limits. */
static long limit_nofile(pid_t pid)
{
    char *s = proc_read(pid, "limits");
    char *p = strstr(s, "Max open files");
    long v = p ? strtol(p + strlen("Max open files"), NULL, 10) : -1;
    free(s);
    return v;
}

/* Connect to 127.0.0.1:PORT (blocking); the descriptor, or -1. */
static int tcp_connect(int port)
{
    struct conn c;
    if (conn_open(&c, port) != 0)
        return -1;
    free(c.buf);
    return c.fd;
}

/* The idle connections and what became of them. */
struct idle {
    int ep;
    double *t_open;  /* when each connect returned */
    bool *closed;    /* EOF or reset seen */
    size_t opened;   /* connected */
    size_t nclosed;  /* closed by the bridge */
    size_t data;     /* connections on which the bridge sent bytes */
    double min_life; /* shortest open-to-close, ms */
    double max_life; /* longest */
};

/* Collect closes reported within MS. */
static void idle_reap(struct idle *id, int ms)
{
    struct epoll_event ev[512];
    int n = epoll_wait(id->ep, ev, 512, ms);
    double now = now_ms();
    for (int k = 0; k < n; k++) {
        size_t i = ev[k].data.u32;
        if (id->closed[i])
            continue;
        char b[512];
        ssize_t r;
        bool sent_data = false;
        while ((r = recv(g_fds[i], b, sizeof b, MSG_DONTWAIT)) > 0)
            sent_data = true;
        if (sent_data)
            id->data++;
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            id->closed[i] = true;
            id->nclosed++;
            double life = now - id->t_open[i];
            if (life < id->min_life)
                id->min_life = life;
            if (life > id->max_life)
                id->max_life = life;
            epoll_ctl(id->ep, EPOLL_CTL_DEL, g_fds[i], NULL);
            close(g_fds[i]);
            g_fds[i] = -1;
        }
    }
}

static void test_idle_10k(void **state)
{
    (void)state;
    if (!raise_nofile(IDLE_N + 256)) {
        print_message("descriptor hard limit below %d: skipped\n", IDLE_N + 256);
        skip();
    }
    long blimit = limit_nofile(g_main.pid);
    if (blimit >= 0 && blimit < IDLE_N + 64)
        fail_msg("the bridge's descriptor limit is %ld, below %d", blimit, IDLE_N + 64);
    struct idle id = {.min_life = 1e12};
    id.t_open = xmalloc(IDLE_N * sizeof *id.t_open);
    id.closed = calloc(IDLE_N, sizeof *id.closed);
    g_epoll = id.ep = epoll_create1(EPOLL_CLOEXEC);
    if (!id.closed || id.ep < 0)
        abort();
    g_nfds = 0;
    double t0 = now_ms();
    struct pongs during = {0};
    for (size_t i = 0; i < IDLE_N; i++) {
        int fd = tcp_connect(g_main.port);
        if (fd < 0)
            fail_msg("connection %zu of %d failed: %s", i, IDLE_N, strerror(errno));
        id.t_open[i] = now_ms();
        fds_track(fd);
        id.opened++;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u32 = (uint32_t)i};
        epoll_ctl(id.ep, EPOLL_CTL_ADD, fd, &ev);
        if (i % 500 == 499)
            idle_reap(&id, 0);
        if (i % 2500 == 2499) {
            double ms = pong_ms(g_main.port);
            if (ms < 0) {
                during.bad++;
            } else {
                during.n++;
                if (ms > during.max)
                    during.max = ms;
            }
        }
        if (now_ms() - t0 > scale_ms(60000))
            fail_msg("only %zu connections in 60 s", i);
    }
    double t_opened = now_ms() - t0;
    idle_reap(&id, 0);
    /* Requests while they are open. */
    size_t open_then = id.opened - id.nclosed;
    double pong_max = 0, pub_max = 0;
    for (int k = 0; k < 5; k++) {
        double ms = pong_ms(g_main.port);
        if (ms < 0)
            fail_msg("pong %d with %zu idle connections open: not 200", k, open_then);
        if (ms > pong_max)
            pong_max = ms;
    }
    for (int k = 0; k < 3; k++) {
        char rid[32];
        snprintf(rid, sizeof rid, "h-idle-%d", k);
        double ms = publish_ms(g_main.port, rid);
        if (ms < 0)
            fail_msg("publish %d with %zu idle connections open: not 202", k, open_then);
        if (ms > pub_max)
            pub_max = ms;
    }
    idle_reap(&id, 0);
    size_t open_after = id.opened - id.nclosed;
    if (during.bad)
        fail_msg("%d pongs while the connections opened failed", during.bad);
    /* Then every one is closed by the bridge, about TIMEOUT after it came. */
    double last_open = id.t_open[IDLE_N - 1];
    double until = last_open + TIMEOUT_MS + scale_ms(3000);
    while (id.nclosed < id.opened && now_ms() < until)
        idle_reap(&id, 100);
    double t_all = now_ms() - last_open;
    if (id.nclosed != IDLE_N)
        fail_msg("%zu of %d idle connections closed by the bridge within %d ms of the last one "
                 "opening (timeout %d ms)",
                 id.nclosed, IDLE_N, TIMEOUT_MS + scale_ms(3000), TIMEOUT_MS);
    if (id.min_life < TIMEOUT_MS * 0.75)
        fail_msg("an idle connection was closed after %.0f ms, well before the %d ms timeout",
                 id.min_life, TIMEOUT_MS);
    if (pong_max > scale_ms(1000) || pub_max > scale_ms(2000))
        fail_msg("slow with 10,000 idle connections: pong %.0f ms, publish %.0f ms", pong_max,
                 pub_max);
    size_t all;
    queue_count(Q_INGEST, NULL, &all);
    assert_int_equal(all, 3);
    free(id.t_open);
    free(id.closed);
    assert_serving("10,000 idle connections");
    result_row("10,000 idle connections (opened in a row, nothing sent)",
               "opened in %.0f ms (pongs meanwhile: %d, all 200, slowest %.1f ms); with %zu of "
               "them open (%zu after): 5 pongs 200 (slowest %.1f ms), 3 publishes 202 (slowest "
               "%.1f ms); "
               "all %zu closed by the bridge, each %.0f-%.0f ms after it opened, the last %.0f ms "
               "after the last one opened; %zu got bytes before the close",
               t_opened, during.n, during.max, open_then, open_after, pong_max, pub_max, id.nclosed,
               id.min_life, id.max_life, t_all, id.data);
    PASS();
}

/* ------------------------------------------------------------------ */
/* out of descriptors                                                  */

/* Start bridge NAME under prlimit: its descriptor limit NOFILE, soft and
 * hard (it raises soft to hard itself). */
static void start_limited(struct bridge *b, const char *name, int nofile)
{
    char lim[64];
    snprintf(lim, sizeof lim, "--nofile=%d:%d", nofile, nofile);
    bridge_start_under(b, name, (const char *[]){"prlimit", lim, "--", NULL}, h_config, NULL);
}

static void test_out_of_fds(void **state)
{
    (void)state;
    start_limited(&g_aux, "fd256", 256);
    long lim = limit_nofile(g_aux.pid);
    if (lim != 256)
        fail_msg("the limited bridge's descriptor limit is %ld, expected 256", lim);
    g_aux.mark = file_size(g_aux.log);
    g_nfds = 0;
    double t0 = now_ms();
    size_t opened = 0;
    for (size_t i = 0; i < FDX_N; i++) {
        int fd = tcp_connect(g_aux.port);
        if (fd < 0)
            break; /* the kernel's queue is full: enough */
        fds_track(fd);
        opened++;
        if (now_ms() - t0 > scale_ms(20000))
            break;
    }
    if (opened < 300)
        fail_msg("only %zu of %d connections could be opened", opened, FDX_N);
    sleep_ms(200);
    double cpu0 = cpu_seconds(g_aux.pid), w0 = now_ms();
    sleep_ms(2000);
    double cpu = cpu_seconds(g_aux.pid) - cpu0, wall = (now_ms() - w0) / 1000.0;
    int st;
    if (!bridge_alive(&g_aux, &st)) {
        char d[64];
        fail_msg("the limited bridge died out of descriptors: %s",
                 describe_status(st, d, sizeof d));
    }
    /* The clients go; the bridge serves again. */
    fds_close_all();
    double t_closed = now_ms();
    double served = -1;
    while (now_ms() - t_closed < scale_ms(5000)) {
        if (pong_ms(g_aux.port) >= 0) {
            served = now_ms() - t_closed;
            break;
        }
        sleep_ms(50);
    }
    double episode = (now_ms() - t0) / 1000.0;
    char *log = slurp(g_aux.log, g_aux.mark);
    int accept_lines = 0;
    int lines = count_lines(log, "accept", &accept_lines);
    free(log);
    if (served < 0)
        fail_msg("no pong from the limited bridge within 5 s of the clients closing");
    if (cpu > 0.5 * wall)
        fail_msg("the bridge used %.2f s of CPU in %.2f s out of descriptors: spinning", cpu, wall);
    if (accept_lines >= 50)
        fail_msg("%d log lines about accept in %.1f s (%d lines in all): a flood", accept_lines,
                 episode, lines);
    int last;
    if (!wait_health(g_aux.port, 200, scale_ms(5000), &last))
        fail_msg("/healthz %d after the episode", last);
    int stst = bridge_stop(&g_aux, scale_ms(20000));
    if (stst != 0) {
        char d[64];
        fail_msg("the limited bridge did not stop cleanly: %s",
                 stst == -1 ? "hung, killed" : describe_status(stst, d, sizeof d));
    }
    result_row("out of descriptors: the bridge under prlimit --nofile=256:256, 400 clients "
               "connect and stay",
               "%zu connected; CPU %.2f s in %.1f s (%.0f%% of a core: no spin); %d log lines in "
               "the %.1f s episode (%d about accept); pong 200 %.0f ms after the clients closed; "
               "clean exit 0 on SIGTERM",
               opened, cpu, wall, 100.0 * cpu / wall, lines, episode, accept_lines, served);
    PASS();
}

static const struct suite SUITE = HOSTILE_SUITE();

/* IT_ONLY=PATTERN runs only the tests whose names match (cmocka's filter). */
int main(void)
{
    const struct CMUnitTest tests[] = {
        HOSTILE_TEST(test_slowloris_headers),
        HOSTILE_TEST(test_slow_body),
        HOSTILE_TEST(test_idle_10k),
        HOSTILE_TEST(test_out_of_fds),
    };
    return suite_run("ingest-bridge hostile input: slow", &SUITE, tests, "IT_ONLY");
}
