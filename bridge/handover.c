/* handover.c - listening sockets that outlive their workers and their
 * binary; sd_notify. See handover.h. */
#include "bridge/handover.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netdb.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "bridge/base/errbuf.h"
#include "http/http_config.h"

#define UPGRADE_FROM "INGEST_BRIDGE_UPGRADE_FROM" /* set for a successor: the pid it replaces */

extern char **environ;

/* FD is a listening TCP socket. */
static bool listening_tcp(int fd)
{
    int listening = 0, type = 0, domain = 0;
    socklen_t len = sizeof listening;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || !listening)
        return false;
    len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM)
        return false;
    len = sizeof domain;
    return getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 &&
           (domain == AF_INET || domain == AF_INET6);
}

/* sd_listen_fds(3): LISTEN_PID is ours and LISTEN_FDS names the sockets
 * from descriptor 3 on. The number of them, 0 when none is for us, -1
 * when they cannot be taken (ERR says why). */
static int inherited(const struct http_config *cfg, pid_t *from, char *err, size_t errlen)
{
    const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
    const char *up = getenv(UPGRADE_FROM);
    long upgrade = up != NULL ? strtol(up, NULL, 10) : 0;
    *from = upgrade > 0 && upgrade == (long)getppid() ? (pid_t)upgrade : 0;
    if (pid == NULL || fds == NULL)
        return 0;
    char *end = NULL;
    long p = strtol(pid, &end, 10);
    bool ours = *end == '\0' && p == (long)getpid();
    long n = strtol(fds, &end, 10);
    bool fds_ok = *end == '\0';
    if (!ours)
        return 0; /* meant for another process (our parent's) */
    if (!fds_ok || (n != 1 && n != cfg->workers))
        return errf(err, errlen,
                    "LISTEN_FDS=%s: the bridge takes one socket, or one per worker ([http] "
                    "workers = %d)",
                    fds, cfg->workers);
    for (int i = 0; i < (int)n; i++) {
        if (!listening_tcp(3 + i))
            return errf(err, errlen, "LISTEN_FDS: descriptor %d is not a listening TCP socket",
                        3 + i);
        (void)fcntl(3 + i, F_SETFD, FD_CLOEXEC);
    }
    return (int)n;
}

/* A listening socket on cfg->listen_host:listen_port with SO_REUSEPORT
 * (one per worker: the kernel spreads connections over them), non-blocking,
 * close-on-exec, into *FD. 0, or -1 with the reason in err. */
static int listen_open(const struct http_config *cfg, int *fd, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char port[8];
    snprintf(port, sizeof port, "%d", cfg->listen_port);
    int rc = getaddrinfo(cfg->listen_host, port, &hints, &ai);
    if (rc != 0) {
        snprintf(err, errlen, "listen %s:%d: %s", cfg->listen_host, cfg->listen_port,
                 gai_strerror(rc));
        return -1;
    }
    int one = 1;
    int s = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0 || setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        setsockopt(s, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
        bind(s, ai->ai_addr, ai->ai_addrlen) != 0 || listen(s, SOMAXCONN) != 0) {
        snprintf(err, errlen, "listen %s:%d: %s", cfg->listen_host, cfg->listen_port,
                 strerror(errno));
        if (s >= 0)
            close(s);
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    *fd = s;
    return 0;
}

int listeners_open(struct listeners *l, const struct http_config *cfg, char *err, size_t errlen)
{
    memset(l, 0, sizeof *l);
    if (cfg->workers < 1 || (size_t)cfg->workers > sizeof l->fds / sizeof l->fds[0])
        return errf(err, errlen, "[http] workers = %d: out of range", cfg->workers);
    int n = inherited(cfg, &l->takes_over, err, errlen);
    /* Nothing this process starts may take them for its own. */
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    unsetenv(UPGRADE_FROM);
    if (n < 0)
        return -1;
    for (int i = 0; i < cfg->workers; i++) {
        if (n > 0) {
            l->fds[i] = 3 + (n == 1 ? 0 : i);
        } else if (listen_open(cfg, &l->fds[i], err, errlen) != 0) {
            listeners_close(l);
            return -1;
        }
        l->n = i + 1;
    }
    l->inherited = n > 0;
    return 0;
}

void listeners_close(struct listeners *l)
{
    for (int i = 0; i < l->n; i++) {
        bool again = false;
        for (int k = 0; k < i; k++)
            again = again || l->fds[k] == l->fds[i];
        if (!again)
            close(l->fds[i]);
    }
    l->n = 0;
}

/* Async-signal-safe: the decimal digits of V at the end of BUF[N). */
static void put_decimal(char *buf, size_t n, long v)
{
    size_t i = n;
    do {
        buf[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0 && i > 0);
    while (i > 0)
        buf[--i] = '0';
}

pid_t upgrade_spawn(const struct listeners *l, const char *exe, char *const argv[], char *err,
                    size_t errlen)
{
    /* The distinct sockets, in the order the successor numbers them. */
    int socks[sizeof l->fds / sizeof l->fds[0]];
    int n = 0;
    for (int i = 0; i < l->n; i++)
        if (i == 0 || l->fds[i] != l->fds[0])
            socks[n++] = l->fds[i];
    size_t env_n = 0;
    while (environ[env_n] != NULL)
        env_n++;
    char **envp = calloc(env_n + 4, sizeof *envp);
    /* LISTEN_PID is the child's: its digits are written after the fork
     * (zero-padded: leading zeros still parse as the same number). */
    char pid_var[32] = "LISTEN_PID=0000000000";
    char fds_var[32], from_var[48];
    snprintf(fds_var, sizeof fds_var, "LISTEN_FDS=%d", n);
    snprintf(from_var, sizeof from_var, UPGRADE_FROM "=%ld", (long)getpid());
    if (envp == NULL)
        return (pid_t)errf(err, errlen, "out of memory");
    size_t k = 0;
    for (size_t i = 0; i < env_n; i++)
        if (strncmp(environ[i], "LISTEN_", 7) != 0 &&
            strncmp(environ[i], UPGRADE_FROM "=", sizeof UPGRADE_FROM) != 0)
            envp[k++] = environ[i];
    envp[k++] = pid_var;
    envp[k++] = fds_var;
    envp[k++] = from_var;
    envp[k] = NULL;

    /* Where to stop closing if close_range(2) is missing (before 5.9). */
    struct rlimit rl;
    long max_fd = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
                          rl.rlim_cur < (rlim_t)(1 << 20)
                      ? (long)rl.rlim_cur
                      : 1L << 20;
    pid_t pid = fork();
    if (pid == 0) {
        /* Only async-signal-safe calls until execve. First every socket
         * above the range it goes to, then each in place (dup2 clears
         * close-on-exec). */
        put_decimal(pid_var + 11, 10, (long)getpid());
        int high[sizeof socks / sizeof socks[0]];
        for (int i = 0; i < n; i++)
            if ((high[i] = fcntl(socks[i], F_DUPFD_CLOEXEC, 3 + n)) < 0)
                _exit(126);
        for (int i = 0; i < n; i++)
            if (dup2(high[i], 3 + i) < 0)
                _exit(126);
        /* Nothing else of ours goes along (a broker connection, a client). */
        if (close_range((unsigned)(3 + n), ~0U, 0) != 0)
            for (long fd = 3 + n; fd < max_fd; fd++)
                (void)close((int)fd);
        execve(exe, argv, envp);
        _exit(127);
    }
    int saved = errno;
    free(envp);
    if (pid < 0)
        return (pid_t)errf(err, errlen, "fork: %s", strerror(saved));
    return pid;
}

void notify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (path == NULL || (path[0] != '/' && path[0] != '@'))
        return;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if (len >= sizeof sa.sun_path)
        return;
    memcpy(sa.sun_path, path, len);
    if (path[0] == '@')
        sa.sun_path[0] = '\0'; /* abstract namespace */
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    (void)sendto(fd, state, strlen(state), MSG_NOSIGNAL, (const struct sockaddr *)&sa,
                 (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len));
    close(fd);
}
