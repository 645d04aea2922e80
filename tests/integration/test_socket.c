/* test_socket.c - socket activation (issue 16): the bridge takes the
 * listening socket it is handed as systemd does it (descriptor 3,
 * LISTEN_FDS=1, LISTEN_PID its own pid) instead of binding [http] listen,
 * serves pong and publishes on it from every worker; a LISTEN_PID that is
 * not its own is ignored; three sockets for two workers are refused. And
 * what it tells systemd (sd_notify) when NOTIFY_SOCKET names a socket. Run through
 * tests/integration/run.sh like test_bridge.c. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "harness_cmocka.h" /* <cmocka.h>, assert_resp... */

#define XML "application/xml"
static const char DOC[] = "<?xml version=\"1.0\"?>\n<order><id>3</id></order>\n";

static struct bridge g_aux; /* killed by the fixtures if a test fails */

static const struct suite SUITE = {
    .name = "socket",
    .stop_ms = 20000,
    .aux = &g_aux,
};

/* A listening socket on 127.0.0.1, its port in *PORT. */
static int listening_socket(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    int on = 1;
    assert_true(fd >= 0);
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on), 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 128), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

/* The bridge on config CFG, started as systemd starts a socket-activated
 * service: FDS sockets from descriptor 3 on (the first is SOCK, the others
 * copies), LISTEN_FDS=FDS, LISTEN_PID its pid (plus OFFSET: another's). */
static pid_t activate(const char *cfg, const char *log, int sock, int fds, int offset)
{
    char **argv = bridge_argv((const char *[]){"-c", cfg, NULL});
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        int out = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        int in = open("/dev/null", O_RDONLY);
        if (out < 0 || in < 0)
            _exit(126);
        /* Out of the way of 3.. first, then into place. */
        int s = fcntl(sock, F_DUPFD, 20);
        dup2(in, 0);
        dup2(out, 1);
        dup2(out, 2);
        for (int i = 0; i < fds; i++)
            dup2(s, 3 + i);
        char n[16], p[32];
        snprintf(n, sizeof n, "%d", fds);
        snprintf(p, sizeof p, "%d", (int)getpid() + offset);
        setenv("LISTEN_FDS", n, 1);
        setenv("LISTEN_PID", p, 1);
        execvp(argv[0], argv);
        _exit(127);
    }
    free(argv);
    return pid;
}

/* A config whose [http] listen is a port nothing else listens on. */
static char *write_config(const char *name, int listen_port)
{
    char *path = NULL, *text = NULL;
    if (asprintf(&path, "%s/%s.ini", g_harness.tmp, name) < 0 ||
        asprintf(&text,
                 "[http]\nlisten = 127.0.0.1:%d\nworkers = 2\n"
                 "[amqp]\nuri = amqp://guest:guest@127.0.0.1:%d/%%2f\n"
                 "[log]\nlevel = %s\n"
                 "[route ingest]\npath = /ingest\nrouting_key = it.socket\nqueue = it.socket\n",
                 listen_port, g_harness.broker_port, g_harness.log_level) < 0)
        abort();
    write_file(path, text);
    free(text);
    return path;
}

static bool healthy(int port, int ms)
{
    double until = now_ms() + scale_ms(ms);
    while (now_ms() < until) {
        struct resp r;
        if (http_get(port, "/healthz", &r) == 0) {
            int st = r.status;
            resp_free(&r);
            if (st == 200)
                return true;
        }
        sleep_ms(100);
    }
    return false;
}

static void stop(pid_t pid)
{
    kill(pid, SIGTERM);
    int st = 0;
    if (!wait_exit(pid, scale_ms(20000), &st) || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("the bridge did not stop cleanly (0x%x)", st);
}

static void test_socket_activation(void **state)
{
    (void)state;
    int port = 0;
    int sock = listening_socket(&port);
    int other = free_port(); /* [http] listen: must stay unbound */
    char *cfg = write_config("activated", other);
    char log[600];
    snprintf(log, sizeof log, "%s/activated.log", g_harness.tmp);
    pid_t pid = activate(cfg, log, sock, 1, 0);
    close(sock); /* the bridge holds it now */
    g_aux.pid = pid;
    if (!healthy(port, 20000))
        fail_msg("not healthy on the handed socket: %s", slurp(log, 0));
    mq_purge("it.socket");
    /* Twenty connections: both workers accept from the one socket. */
    for (int i = 0; i < 20; i++) {
        char extra[64];
        snprintf(extra, sizeof extra, "X-Request-Id: sock-%d\r\n", i);
        struct resp r;
        int rc = http_post(port, "/ingest", XML, extra, DOC, &r);
        assert_resp(rc, &r, 202);
        resp_free(&r);
    }
    size_t n = 0;
    char **ids = mq_drain_ids("it.socket", &n);
    assert_int_equal(n, 20);
    ids_free(ids, n);
    /* Nothing was bound on [http] listen. */
    struct resp r;
    if (http_get(other, "/pong", &r) == 0) {
        resp_free(&r);
        fail_msg("the bridge also listens on [http] listen (port %d)", other);
    }
    char *text = slurp(log, 0);
    assert_non_null(strstr(text, "the socket handed over (LISTEN_FDS)"));
    free(text);
    stop(pid);
    g_aux.pid = 0;
    free(cfg);
    PASS();
}

/* LISTEN_PID of another process: not ours, [http] listen is bound. Three
 * sockets for two workers: refused at start, exit 1. */
static void test_socket_activation_refusals(void **state)
{
    (void)state;
    int port = 0;
    int sock = listening_socket(&port);
    int own = free_port();
    char *cfg = write_config("notours", own);
    char log[600];
    snprintf(log, sizeof log, "%s/notours.log", g_harness.tmp);
    pid_t pid = activate(cfg, log, sock, 1, 1);
    g_aux.pid = pid;
    if (!healthy(own, 20000))
        fail_msg("LISTEN_PID not its own, yet [http] listen not served: %s", slurp(log, 0));
    stop(pid);
    g_aux.pid = 0;

    /* One socket, or one per worker (what a binary upgrade hands over):
     * three for two workers are refused. */
    snprintf(log, sizeof log, "%s/three.log", g_harness.tmp);
    pid = activate(cfg, log, sock, 3, 0);
    int st = 0;
    if (!wait_exit(pid, scale_ms(20000), &st)) {
        kill(pid, SIGKILL);
        fail_msg("three sockets: the bridge started");
    }
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    char *text = slurp(log, 0);
    assert_non_null(strstr(text,
                           "LISTEN_FDS=3: the bridge takes one socket, or one per worker ([http] "
                           "workers = 2)"));
    free(text);
    close(sock);
    free(cfg);
    PASS();
}

/* The next datagram on FD within MS, into BUF; false if none came. */
static bool notified(int fd, char *buf, size_t n, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ssize_t got = recv(fd, buf, n - 1, 0);
    buf[got > 0 ? got : 0] = '\0';
    return got > 0;
}

/* A Type=notify unit's view: READY=1 once the workers run, RELOADING=1 and
 * READY=1 around a SIGHUP; on SIGUSR2 the new process names itself the
 * main one and the old one says nothing more (a STOPPING=1 from it would
 * stop the service); STOPPING=1 on SIGTERM. */
static void test_notify(void **state)
{
    (void)state;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char path[sizeof sa.sun_path];
    int len = snprintf(path, sizeof path, "%s/notify.sock", g_harness.tmp);
    if (len < 0 || (size_t)len >= sizeof path)
        fail_msg("%s: too long a path for a unix socket", g_harness.tmp);
    memcpy(sa.sun_path, path, (size_t)len + 1);
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    unlink(path);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    int port = free_port();
    char *cfg = write_config("notify", port);
    char log[600];
    snprintf(log, sizeof log, "%s/notify.log", g_harness.tmp);
    setenv("NOTIFY_SOCKET", path, 1);
    char **argv = bridge_argv((const char *[]){"-c", cfg, NULL});
    pid_t pid = spawn(argv, log, NULL);
    unsetenv("NOTIFY_SOCKET");
    free(argv);
    g_aux.pid = pid;
    char msg[256];
    if (!notified(fd, msg, sizeof msg, scale_ms(20000)))
        fail_msg("no notification from the bridge: %s", slurp(log, 0));
    assert_string_equal(msg, "READY=1");
    if (!healthy(port, 20000))
        fail_msg("READY=1, but not healthy: %s", slurp(log, 0));
    kill(pid, SIGHUP);
    assert_true(notified(fd, msg, sizeof msg, scale_ms(20000)));
    assert_string_equal(msg, "RELOADING=1");
    assert_true(notified(fd, msg, sizeof msg, scale_ms(20000)));
    assert_string_equal(msg, "READY=1");

    /* The new process will be the old one's child: ours once it exits. */
    assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    kill(pid, SIGUSR2);
    assert_true(notified(fd, msg, sizeof msg, scale_ms(20000)));
    long next = 0;
    if (sscanf(msg, "MAINPID=%ld\nREADY=1", &next) != 1 || next <= 0 || next == (long)pid ||
        strstr(msg, "\nREADY=1") == NULL)
        fail_msg("after SIGUSR2: \"%s\", expected MAINPID=<the new pid>\\nREADY=1", msg);
    int st = 0;
    if (!wait_exit(pid, scale_ms(20000), &st) || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("the old process did not hand over and exit 0 (0x%x)", st);
    g_aux.pid = (pid_t)next;
    if (notified(fd, msg, sizeof msg, 300))
        fail_msg("the old process said \"%s\" after the new one took over", msg);
    if (!healthy(port, 20000))
        fail_msg("the new process is not healthy: %s", slurp(log, 0));

    kill((pid_t)next, SIGTERM);
    assert_true(notified(fd, msg, sizeof msg, scale_ms(20000)));
    assert_string_equal(msg, "STOPPING=1");
    if (!wait_exit((pid_t)next, scale_ms(20000), &st) || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("the new process did not stop cleanly (0x%x)", st);
    g_aux.pid = 0;
    close(fd);
    unlink(path);
    free(cfg);
    PASS();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        SUITE_TEST(test_socket_activation),
        SUITE_TEST(test_socket_activation_refusals),
        SUITE_TEST(test_notify),
    };
    return suite_run("ingest-bridge socket activation", &SUITE, tests, "IT_ONLY");
}
