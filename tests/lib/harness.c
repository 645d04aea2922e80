/* harness.c - the shared test harness (see harness.h): processes, raw HTTP,
 * the broker seen through rabbitmq-c, the broker node, the bridge and the
 * echo worker. No test framework in here: failures go through
 * g_harness.fail. */
#include "harness.h"

#include <amqp_tcp_socket.h>
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static void default_fail(const char *file, int line, const char *msg)
{
    fprintf(stderr, "%s:%d: %s\n", file, line, msg);
    abort();
}

static void default_note(const char *msg)
{
    fputs(msg, stdout);
}

struct harness g_harness = {.time_scale = 1, .fail = default_fail, .note = default_note};

/* ------------------------------------------------------------------ */
/* reporting, time, memory                                             */

void harness_fail_at(const char *file, int line, const char *fmt, ...)
{
    char *msg = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);
    g_harness.fail(file, line, msg ? msg : fmt);
    /* A fail hook that returns leaves no test to go back to. */
    abort();
}

void harness_note(const char *fmt, ...)
{
    char *msg = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&msg, fmt, ap);
    va_end(ap);
    if (n >= 0)
        g_harness.note(msg);
    free(msg);
}

void result_row(const char *what, const char *fmt, ...)
{
    char *outcome = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&outcome, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    harness_note("RESULT | %s | %s |\n", what, outcome);
    const char *path = getenv("IT_RESULTS");
    FILE *f = path != NULL && path[0] != '\0' ? fopen(path, "a") : NULL;
    if (f != NULL) {
        fprintf(f, "| %s | %s |\n", what, outcome);
        fclose(f);
    }
    free(outcome);
}

int scale_ms(int ms)
{
    return (int)(ms * g_harness.time_scale);
}

double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        abort();
    }
    return p;
}

char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(xmalloc(n), s, n);
}

FILE *xmemstream(char **text, size_t *len)
{
    *text = NULL;
    *len = 0;
    FILE *f = open_memstream(text, len);
    if (!f) {
        fprintf(stderr, "out of memory\n");
        abort();
    }
    return f;
}

/* ------------------------------------------------------------------ */
/* the run                                                             */

/* IT_BRIDGE_WRAP split on blanks into one malloc'd block: the pointer
 * array, then the words. NULL when unset or blank. */
static char **split_words(const char *s)
{
    if (!s)
        return NULL;
    size_t len = strlen(s), words = 0;
    for (size_t i = 0; i < len; i++)
        if (!isspace((unsigned char)s[i]) && (i == 0 || isspace((unsigned char)s[i - 1])))
            words++;
    if (words == 0)
        return NULL;
    char **v = xmalloc((words + 1) * sizeof *v + len + 1);
    char *text = (char *)(v + words + 1);
    memcpy(text, s, len + 1);
    size_t n = 0;
    char *save = NULL;
    for (char *w = strtok_r(text, " \t\n\r\v\f", &save); w;
         w = strtok_r(NULL, " \t\n\r\v\f", &save))
        v[n++] = w;
    v[n] = NULL;
    return v;
}

int harness_init(const char *suite)
{
    signal(SIGPIPE, SIG_IGN);
    struct harness *h = &g_harness;
    h->bin = getenv("IT_BRIDGE_BIN");
    h->echo_bin = getenv("IT_ECHO_BIN");
    h->broker_sh = getenv("IT_BROKER_SH");
    h->broker_dir = getenv("BROKER_DIR");
    h->node = getenv("IT_BROKER_NODE");
    const char *port = getenv("IT_BROKER_PORT");
    if (!h->bin || !h->echo_bin || !h->broker_sh || !port || !h->broker_dir) {
        fprintf(stderr, "run me through tests/integration/run.sh (IT_* variables missing)\n");
        return -1;
    }
    h->broker_port = atoi(port);
    const char *tls_port = getenv("IT_BROKER_TLS_PORT");
    h->broker_tls_port = tls_port ? atoi(tls_port) : 0;
    h->tls_dir = getenv("IT_TLS_DIR");
    h->log_level = getenv("IT_LOG_LEVEL") ? getenv("IT_LOG_LEVEL") : "info";
    const char *scale = getenv("IT_TIME_SCALE");
    if (scale && *scale) {
        char *end;
        h->time_scale = strtod(scale, &end);
        if (*end != '\0' || !(h->time_scale >= 1 && h->time_scale <= 1000)) {
            fprintf(stderr, "IT_TIME_SCALE=%s: a number from 1 to 1000, please\n", scale);
            return -1;
        }
    }
    h->wrap = split_words(getenv("IT_BRIDGE_WRAP"));
    if (access(h->bin, X_OK) != 0) {
        fprintf(stderr, "%s: %s (build it with make)\n", h->bin, strerror(errno));
        return -1;
    }
    snprintf(h->tmp, sizeof h->tmp, "%s/bridge-it-XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(h->tmp)) {
        perror("mkdtemp");
        return -1;
    }
    printf("%s: bridge %s, broker %s on port %d, files in %s\n", suite, h->bin,
           h->node ? h->node : "?", h->broker_port, h->tmp);
    if (h->wrap) {
        printf("%s: the bridge runs under", suite);
        for (char **w = h->wrap; *w; w++)
            printf(" %s", *w);
        printf("; time bounds x%g\n", h->time_scale);
    }
    return 0;
}

void harness_fini(void)
{
    mq_disconnect();
    if (g_harness.tmp[0] && !getenv("IT_KEEP")) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_harness.tmp);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", g_harness.tmp);
    }
    free(g_harness.wrap);
    g_harness.wrap = NULL;
}

/* ------------------------------------------------------------------ */
/* running programs                                                    */

pid_t spawn(char *const argv[], const char *log, char *const extra[])
{
    size_t n = 0, k = 0;
    while (environ[n])
        n++;
    size_t nx = 0;
    while (extra && extra[nx])
        nx++;
    char **envp = xmalloc((n + nx + 1) * sizeof *envp);
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "BRIDGE_", 7) != 0)
            envp[k++] = environ[i];
    for (size_t i = 0; i < nx; i++)
        envp[k++] = extra[i];
    envp[k] = NULL;

    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        int in = open("/dev/null", O_RDONLY);
        int out = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (in < 0 || out < 0)
            _exit(126);
        dup2(in, 0);
        dup2(out, 1);
        dup2(out, 2);
        close(in);
        close(out);
        signal(SIGPIPE, SIG_DFL);
        execvpe(argv[0], argv, envp); /* PATH for a wrapper ("valgrind") */
        dprintf(2, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    free(envp);
    return pid;
}

bool wait_exit(pid_t pid, int timeout_ms, int *st)
{
    double end = now_ms() + timeout_ms;
    for (;;) {
        pid_t r = waitpid(pid, st, WNOHANG);
        if (r == pid)
            return true;
        if (r < 0 && errno != EINTR)
            return true; /* not our child any more */
        if (now_ms() > end)
            return false;
        sleep_ms(10);
    }
}

char *slurp(const char *path, long from)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return xstrdup("");
    fseek(f, 0, SEEK_END);
    long end = ftell(f);
    if (from > end || from < 0)
        from = 0;
    fseek(f, from, SEEK_SET);
    size_t n = (size_t)(end - from);
    char *s = xmalloc(n + 1);
    n = fread(s, 1, n, f);
    s[n] = '\0';
    fclose(f);
    return s;
}

long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : 0;
}

void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0)
        harness_fail("cannot write %s", path);
}

int run_capture(char *const argv[], char *const extra_env[], char **out)
{
    char log[512];
    static int seq;
    snprintf(log, sizeof log, "%s/run-%d.out", g_harness.tmp, ++seq);
    pid_t pid = spawn(argv, log, extra_env);
    int st = 0;
    if (!wait_exit(pid, scale_ms(20000), &st)) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        st = -1;
    }
    *out = slurp(log, 0);
    return st;
}

/* PREFIX... (NULL-ended, may be NULL), then bridge_argv's command line. */
static char **prefixed_argv(const char *const prefix[], const char *const args[])
{
    size_t np = 0, nw = 0, na = 0;
    while (prefix && prefix[np])
        np++;
    while (g_harness.wrap && g_harness.wrap[nw])
        nw++;
    while (args && args[na])
        na++;
    char **v = xmalloc((np + nw + 1 + na + 1) * sizeof *v);
    size_t k = 0;
    for (size_t i = 0; i < np; i++)
        v[k++] = (char *)prefix[i];
    for (size_t i = 0; i < nw; i++)
        v[k++] = g_harness.wrap[i];
    v[k++] = (char *)g_harness.bin;
    for (size_t i = 0; i < na; i++)
        v[k++] = (char *)args[i];
    v[k] = NULL;
    return v;
}

char **bridge_argv(const char *const args[])
{
    return prefixed_argv(NULL, args);
}

/* ------------------------------------------------------------------ */
/* the broker node                                                     */

/* tests/broker.sh ARGV[1..] with its output appended to TMP/broker.out,
 * shown on failure as "WHAT failed". */
static int broker_sh(char *const argv[], int timeout_ms, const char *what)
{
    char log[512];
    snprintf(log, sizeof log, "%s/broker.out", g_harness.tmp);
    long mark = file_size(log);
    pid_t pid = spawn(argv, log, NULL);
    int st;
    if (!wait_exit(pid, timeout_ms, &st)) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        st = -1;
    }
    if (st != 0) {
        char *s = slurp(log, mark);
        harness_note("%s failed:\n%s\n", what, s);
        free(s);
        return -1;
    }
    return 0;
}

int broker_cmd(const char *a1, const char *a2)
{
    char *argv[] = {(char *)g_harness.broker_sh, (char *)a1, (char *)a2, NULL};
    char what[256];
    snprintf(what, sizeof what, "broker.sh %s %s", a1, a2 ? a2 : "");
    return broker_sh(argv, 120000, what);
}

int broker_ctl(const char *a1, const char *a2)
{
    char *argv[] = {(char *)g_harness.broker_sh, "ctl", (char *)a1, (char *)a2, NULL};
    char what[256];
    snprintf(what, sizeof what, "broker.sh ctl %s %s", a1, a2 ? a2 : "");
    return broker_sh(argv, 60000, what);
}

pid_t broker_pid(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/rabbit.pid", g_harness.broker_dir ? g_harness.broker_dir : "");
    char *s = slurp(path, 0);
    long pid = strtol(s, NULL, 10);
    free(s);
    return (pid_t)pid;
}

int broker_stop(void)
{
    g_harness.broker_stopped = true;
    int rc = broker_cmd("stop", NULL);
    mq_disconnect();
    return rc;
}

int broker_start(void)
{
    if (broker_cmd("start", NULL) != 0)
        return -1;
    g_harness.broker_stopped = false;
    return 0;
}

int broker_freeze(void)
{
    pid_t bp = broker_pid();
    if (bp <= 1)
        harness_fail("no broker pid file under BROKER_DIR");
    if (kill(bp, SIGSTOP) != 0)
        return -1;
    g_harness.broker_frozen = true;
    return 0;
}

int broker_thaw(void)
{
    if (kill(broker_pid(), SIGCONT) != 0)
        return -1;
    g_harness.broker_frozen = false;
    return 0;
}

int broker_alarm(bool on)
{
    if (on)
        g_harness.watermark_low = true; /* undo even if half done */
    if (broker_ctl("set_vm_memory_high_watermark", on ? "0" : "0.4") != 0)
        return -1;
    g_harness.watermark_low = on;
    return 0;
}

void broker_restore(void)
{
    if (g_harness.broker_frozen) {
        kill(broker_pid(), SIGCONT);
        g_harness.broker_frozen = false;
    }
    if (g_harness.watermark_low)
        (void)broker_alarm(false);
    if (g_harness.broker_stopped)
        (void)broker_start();
}

/* ------------------------------------------------------------------ */
/* raw HTTP over sockets                                               */

void resp_free(struct resp *r)
{
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof *r);
}

long long metric_in(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *l = text; l != NULL && *l != '\0';
         l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (strncmp(l, series, n) == 0 && l[n] == ' ')
            return strtoll(l + n + 1, NULL, 10);
    return -1;
}

const char *resp_header(const struct resp *r, const char *name)
{
    for (int i = 0; i < r->nh; i++)
        if (strcasecmp(r->hname[i], name) == 0)
            return r->hval[i];
    return NULL;
}

int resp_header_count(const struct resp *r, const char *name)
{
    int n = 0;
    for (int i = 0; i < r->nh; i++)
        if (strcasecmp(r->hname[i], name) == 0)
            n++;
    return n;
}

void conn_set_timeout(struct conn *c, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

int conn_open(struct conn *c, int port)
{
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    conn_set_timeout(c, scale_ms(5000));
    return 0;
}

/* The first queued OpenSSL error as text. */
static const char *ssl_reason(void)
{
    unsigned long e = ERR_get_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    ERR_clear_error();
    return r ? r : "no OpenSSL error queued";
}

int conn_open_tls(struct conn *c, int port, const char *ca, const char *cert, const char *key)
{
    if (conn_open(c, port) != 0)
        return -1;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        abort();
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    const char *why = NULL;
    if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1)
        why = "cannot load the CA file";
    else if (cert && (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
                      SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1))
        why = "cannot load the client certificate";
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    X509_VERIFY_PARAM_set1_ip_asc(SSL_CTX_get0_param(ctx), "127.0.0.1");
    SSL *ssl = why ? NULL : SSL_new(ctx);
    SSL_CTX_free(ctx); /* the SSL holds its own reference */
    if (!why && (!ssl || SSL_set_fd(ssl, c->fd) != 1))
        why = "cannot set up the connection";
    if (!why && SSL_connect(ssl) != 1)
        why = "handshake failed";
    if (why) {
        harness_note("TLS to 127.0.0.1:%d: %s: %s\n", port, why, ssl_reason());
        SSL_free(ssl);
        conn_close(c);
        return -1;
    }
    c->ssl = ssl;
    return 0;
}

void conn_close(struct conn *c)
{
    if (c->ssl)
        SSL_free(c->ssl); /* no close_notify: the bridge takes end of file as one */
    if (c->fd >= 0)
        close(c->fd);
    free(c->buf);
    memset(c, 0, sizeof *c);
    c->fd = -1;
}

void conn_abort(struct conn *c)
{
    struct linger lg = {1, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    conn_close(c);
}

int conn_send(struct conn *c, const void *p, size_t n)
{
    const char *s = p;
    while (n > 0) {
        ssize_t w = c->ssl ? SSL_write(c->ssl, s, (int)(n > 1 << 30 ? 1 << 30 : n))
                           : send(c->fd, s, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

int conn_fill(struct conn *c)
{
    if (c->cap - c->len < 4096) {
        size_t ncap = c->cap ? c->cap * 2 : 16384;
        char *nb = realloc(c->buf, ncap);
        if (!nb)
            abort();
        c->buf = nb;
        c->cap = ncap;
    }
    if (c->ssl) {
        ERR_clear_error();
        int n = SSL_read(c->ssl, c->buf + c->len, (int)(c->cap - c->len - 1));
        if (n > 0) {
            c->len += (size_t)n;
            c->buf[c->len] = '\0';
            return 1;
        }
        int e = SSL_get_error(c->ssl, n);
        if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno == 0))
            return 0; /* close_notify, or the peer closed the socket */
        if (e == SSL_ERROR_SYSCALL && errno == ECONNRESET)
            return 0;
        if (e != SSL_ERROR_SYSCALL && e != SSL_ERROR_WANT_READ)
            errno = EPROTO;
        return -1;
    }
    for (;;) {
        ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len - 1, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        c->len += (size_t)n;
        c->buf[c->len] = '\0';
        return n > 0 ? 1 : 0;
    }
}

void conn_consume(struct conn *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

int conn_need(struct conn *c, size_t n)
{
    while (c->len < n)
        if (conn_fill(c) <= 0)
            return -1;
    return 0;
}

char *conn_line(struct conn *c, size_t *linelen)
{
    char *eol;
    while (!(c->buf && (eol = memmem(c->buf, c->len, "\r\n", 2))))
        if (conn_fill(c) <= 0)
            return NULL;
    *linelen = (size_t)(eol - c->buf);
    return c->buf;
}

int conn_read_resp(struct conn *c, struct resp *r, bool head)
{
    memset(r, 0, sizeof *r);
    double t0 = now_ms();
    char *end;
again:
    while (!(c->buf && (end = memmem(c->buf, c->len, "\r\n\r\n", 4))))
        if (conn_fill(c) <= 0)
            return -1;
    size_t hlen = (size_t)(end - c->buf) + 4;
    free(r->head);
    r->head = xmalloc(hlen + 1);
    memcpy(r->head, c->buf, hlen);
    r->head[hlen] = '\0';
    conn_consume(c, hlen);

    char *save = NULL;
    char *line = strtok_r(r->head, "\r\n", &save);
    if (!line || strncmp(line, "HTTP/1.", 7) != 0 || strlen(line) < 12)
        return -1;
    r->status = atoi(line + 9);
    r->nh = 0;
    while ((line = strtok_r(NULL, "\r\n", &save)) && r->nh < MAXHDR) {
        char *colon = strchr(line, ':');
        if (!colon)
            continue;
        *colon = '\0';
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        char *ve = v + strlen(v);
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            *--ve = '\0';
        r->hname[r->nh] = line;
        r->hval[r->nh] = v;
        r->nh++;
    }
    if (r->status == 100)
        goto again;

    const char *te = resp_header(r, "Transfer-Encoding");
    const char *cl = resp_header(r, "Content-Length");
    if (head || r->status == 204 || r->status == 304) {
        r->body = xstrdup("");
    } else if (te && strcasecmp(te, "chunked") == 0) {
        size_t cap = 4096, n = 0;
        r->body = xmalloc(cap);
        for (;;) {
            size_t ll;
            char *l = conn_line(c, &ll);
            if (!l)
                return -1;
            size_t sz = strtoul(l, NULL, 16);
            conn_consume(c, ll + 2);
            if (sz == 0) {
                /* trailers, then the empty line */
                for (;;) {
                    l = conn_line(c, &ll);
                    if (!l)
                        return -1;
                    conn_consume(c, ll + 2);
                    if (ll == 0)
                        break;
                }
                break;
            }
            if (conn_need(c, sz + 2) != 0)
                return -1;
            while (n + sz + 1 > cap)
                cap *= 2;
            r->body = realloc(r->body, cap);
            if (!r->body)
                abort();
            memcpy(r->body + n, c->buf, sz);
            n += sz;
            conn_consume(c, sz + 2);
        }
        r->body[n] = '\0';
        r->body_len = n;
    } else if (cl) {
        size_t n = strtoul(cl, NULL, 10);
        if (conn_need(c, n) != 0)
            return -1;
        r->body = xmalloc(n + 1);
        memcpy(r->body, c->buf, n);
        r->body[n] = '\0';
        r->body_len = n;
        conn_consume(c, n);
    } else {
        while (conn_fill(c) > 0) {
        }
        r->body = xmalloc(c->len + 1);
        memcpy(r->body, c->buf ? c->buf : "", c->len);
        r->body[c->len] = '\0';
        r->body_len = c->len;
        conn_consume(c, c->len);
    }
    r->ms = now_ms() - t0;
    return 0;
}

int conn_wait_closed(struct conn *c, int ms)
{
    if (c->len > 0)
        return 2;
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    double end = now_ms() + ms;
    for (;;) {
        int left = (int)(end - now_ms());
        if (left < 0)
            return 0;
        int n = poll(&p, 1, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0)
            return 0;
        int f = conn_fill(c);
        if (f == 0 || (f < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
            return 1;
        if (f > 0)
            return 2;
    }
}

char *fmt_request(size_t *len, const char *method, const char *target, const char *ctype,
                  const char *extra, const void *body, size_t blen)
{
    char *out;
    size_t outlen;
    FILE *f = xmemstream(&out, &outlen);
    fprintf(f, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n", method, target);
    if (ctype)
        fprintf(f, "Content-Type: %s\r\n", ctype);
    bool framed =
        extra && (strcasestr(extra, "Content-Length:") || strcasestr(extra, "Transfer-Encoding:"));
    if (body && !framed)
        fprintf(f, "Content-Length: %zu\r\n", blen);
    if (extra)
        fputs(extra, f);
    fputs("\r\n", f);
    if (body && blen)
        fwrite(body, 1, blen, f);
    fclose(f);
    *len = outlen;
    return out;
}

int exchange(struct conn *c, const char *raw, size_t len, struct resp *r, bool head)
{
    if (conn_send(c, raw, len) != 0)
        return -1;
    return conn_read_resp(c, r, head);
}

/* One request on the fresh connection C, which it closes. */
static int request_once(struct conn *c, const char *method, const char *target, const char *ctype,
                        const char *extra, const void *body, size_t blen, struct resp *r)
{
    size_t len;
    char *raw = fmt_request(&len, method, target, ctype, extra, body, blen);
    double t0 = now_ms();
    int rc = exchange(c, raw, len, r, strcmp(method, "HEAD") == 0);
    r->ms = now_ms() - t0;
    free(raw);
    conn_close(c);
    return rc;
}

int http_req(int port, const char *method, const char *target, const char *ctype, const char *extra,
             const void *body, size_t blen, struct resp *r)
{
    struct conn c;
    memset(r, 0, sizeof *r);
    if (conn_open(&c, port) != 0)
        return -1;
    return request_once(&c, method, target, ctype, extra, body, blen, r);
}

int https_req(int port, const char *ca, const char *method, const char *target, const char *ctype,
              const char *extra, const void *body, size_t blen, struct resp *r)
{
    struct conn c;
    memset(r, 0, sizeof *r);
    if (conn_open_tls(&c, port, ca, NULL, NULL) != 0)
        return -1;
    return request_once(&c, method, target, ctype, extra, body, blen, r);
}

int http_get(int port, const char *target, struct resp *r)
{
    return http_req(port, "GET", target, NULL, NULL, NULL, 0, r);
}

int http_post(int port, const char *target, const char *ctype, const char *extra, const char *body,
              struct resp *r)
{
    return http_req(port, "POST", target, ctype, extra, body, strlen(body), r);
}

double metric(int port, const char *series)
{
    struct resp r;
    if (http_get(port, "/metrics", &r) != 0)
        return -1;
    long long v = metric_in(r.body, series);
    resp_free(&r);
    return v < 0 ? 0 : (double)v;
}

bool wait_metric(int port, const char *series, double want, int ms, double *last)
{
    double end = now_ms() + scale_ms(ms);
    for (;;) {
        double v = metric(port, series);
        if (last != NULL)
            *last = v;
        if (v == want)
            return true;
        if (now_ms() > end)
            return false;
        sleep_ms(20);
    }
}

/* ------------------------------------------------------------------ */
/* reading the broker with rabbitmq-c                                  */

bool mq_ok(amqp_rpc_reply_t r, const char *what)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        return true;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        harness_note("amqp %s: %s\n", what, amqp_error_string2(r.library_error));
        return false;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_channel_close_t *m = r.reply.decoded;
            harness_note("amqp %s: channel closed %u %.*s\n", what, m->reply_code,
                         (int)m->reply_text.len, (char *)m->reply_text.bytes);
        } else if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_connection_close_t *m = r.reply.decoded;
            harness_note("amqp %s: connection closed %u %.*s\n", what, m->reply_code,
                         (int)m->reply_text.len, (char *)m->reply_text.bytes);
        } else {
            harness_note("amqp %s: server exception 0x%08x\n", what, r.reply.id);
        }
        return false;
    default:
        harness_note("amqp %s: no reply\n", what);
        return false;
    }
}

void mq_disconnect(void)
{
    if (g_harness.mq) {
        amqp_destroy_connection(g_harness.mq);
        g_harness.mq = NULL;
    }
}

bool mq_connect(void)
{
    if (g_harness.mq)
        return true;
    amqp_connection_state_t mq = g_harness.mq = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(mq);
    struct timeval tv = {5, 0};
    if (!s ||
        amqp_socket_open_noblock(s, "127.0.0.1", g_harness.broker_port, &tv) != AMQP_STATUS_OK) {
        harness_note("amqp: cannot connect to 127.0.0.1:%d\n", g_harness.broker_port);
        mq_disconnect();
        return false;
    }
    amqp_set_rpc_timeout(mq, &tv);
    if (!mq_ok(amqp_login(mq, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest"),
               "login")) {
        mq_disconnect();
        return false;
    }
    amqp_channel_open(mq, 1);
    if (!mq_ok(amqp_get_rpc_reply(mq), "channel.open")) {
        mq_disconnect();
        return false;
    }
    return true;
}

bool mq_declare(const char *q, amqp_table_t args)
{
    if (!mq_connect())
        return false;
    amqp_queue_declare(g_harness.mq, 1, amqp_cstring_bytes(q), 0, 1, 0, 0, args);
    return mq_ok(amqp_get_rpc_reply(g_harness.mq), "queue.declare");
}

amqp_table_t mq_args_reject_all(void)
{
    static amqp_table_entry_t e[2];
    e[0].key = amqp_cstring_bytes("x-max-length");
    e[0].value.kind = AMQP_FIELD_KIND_I32;
    e[0].value.value.i32 = 0;
    e[1].key = amqp_cstring_bytes("x-overflow");
    e[1].value.kind = AMQP_FIELD_KIND_UTF8;
    e[1].value.value.bytes = amqp_cstring_bytes("reject-publish");
    return (amqp_table_t){2, e};
}

static bool mq_purge_once(const char *q)
{
    amqp_queue_purge(g_harness.mq, 1, amqp_cstring_bytes(q));
    return mq_ok(amqp_get_rpc_reply(g_harness.mq), "queue.purge");
}

/* 1 got a message into *M, 0 queue empty, -1 error. */
static int mq_get_once(const char *q, amqp_message_t *m)
{
    amqp_maybe_release_buffers(g_harness.mq);
    amqp_rpc_reply_t r = amqp_basic_get(g_harness.mq, 1, amqp_cstring_bytes(q), 1);
    if (!mq_ok(r, "basic.get"))
        return -1;
    if (r.reply.id == AMQP_BASIC_GET_EMPTY_METHOD)
        return 0;
    if (!mq_ok(amqp_read_message(g_harness.mq, 1, m, 0), "read_message"))
        return -1;
    return 1;
}

void mq_purge(const char *q)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        if (mq_connect() && mq_purge_once(q))
            return;
        mq_disconnect();
    }
    harness_fail("cannot purge queue %s (the bridge declares it at connect time)", q);
}

int mq_get(const char *q, amqp_message_t *m)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        int rc = mq_connect() ? mq_get_once(q, m) : -1;
        if (rc >= 0)
            return rc;
        mq_disconnect();
    }
    harness_fail("basic.get on %s failed", q);
}

bool bytes_eq(amqp_bytes_t b, const char *s)
{
    return b.len == strlen(s) && memcmp(b.bytes, s, b.len) == 0;
}

char **mq_drain_ids(const char *q, size_t *n)
{
    size_t cap = 64;
    char **ids = xmalloc(cap * sizeof *ids);
    *n = 0;
    amqp_message_t m;
    while (mq_get(q, &m) == 1) {
        if (*n == cap) {
            cap *= 2;
            char **nids = realloc(ids, cap * sizeof *ids);
            if (!nids)
                abort();
            ids = nids;
        }
        amqp_bytes_t id = m.properties.message_id;
        char *s = xmalloc(id.len + 1);
        memcpy(s, id.bytes, id.len);
        s[id.len] = '\0';
        ids[(*n)++] = s;
        amqp_destroy_message(&m);
    }
    return ids;
}

bool ids_have(char **ids, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(ids[i], id) == 0)
            return true;
    return false;
}

void ids_free(char **ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
}

const char *tbl_get(const amqp_table_t *t, const char *key, char *buf, size_t buflen)
{
    for (int i = 0; i < t->num_entries; i++) {
        const amqp_table_entry_t *e = &t->entries[i];
        if (!bytes_eq(e->key, key))
            continue;
        if (e->value.kind == AMQP_FIELD_KIND_UTF8 || e->value.kind == AMQP_FIELD_KIND_BYTES) {
            snprintf(buf, buflen, "%.*s", (int)e->value.value.bytes.len,
                     (char *)e->value.value.bytes.bytes);
        } else {
            snprintf(buf, buflen, "<kind %c>", e->value.kind);
        }
        return buf;
    }
    return NULL;
}

/* ------------------------------------------------------------------ */
/* the bridge under test                                               */

int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) {
        perror("free_port");
        abort();
    }
    close(fd);
    return ntohs(sa.sin_port);
}

int log_count(const struct bridge *b, const char *needle)
{
    char *s = slurp(b->log, b->mark);
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    free(s);
    return n;
}

bool log_wait(const struct bridge *b, const char *needle, int ms)
{
    double end = now_ms() + ms;
    while (log_count(b, needle) == 0) {
        if (now_ms() >= end)
            return false;
        sleep_ms(20);
    }
    return true;
}

void dump_log(const struct bridge *b, const char *title)
{
    enum { TAIL = 150 };
    if (!b->log[0])
        return;
    char *s = slurp(b->log, b->mark);
    size_t len = strlen(s), lines = 0;
    const char *from = s;
    for (size_t i = len; i > 0; i--) {
        if (s[i - 1] == '\n' && i != len && ++lines == TAIL) {
            from = s + i;
            break;
        }
    }
    harness_note("---- %s: %s (since this test began%s) ----\n%s%s---- end of %s ----\n", title,
                 b->log, from != s ? ", last lines" : "", from,
                 len && s[len - 1] != '\n' ? "\n" : "", title);
    free(s);
}

/* Is LINE (up to its end or '\n') "==<digits>==...": valgrind's prefix,
 * also that of the first line of a sanitizer report? */
static bool report_line(const char *line)
{
    if (line[0] != '=' || line[1] != '=' || !isdigit((unsigned char)line[2]))
        return false;
    const char *p = line + 2;
    while (isdigit((unsigned char)*p))
        p++;
    return p[0] == '=' && p[1] == '=';
}

bool dump_report(const struct bridge *b)
{
    enum { MAXLINES = 400 };
    if (!b->log[0])
        return false;
    char *s = slurp(b->log, b->start);
    char *out;
    size_t outlen;
    FILE *f = xmemstream(&out, &outlen);
    int n = 0;
    for (char *line = s; *line;) {
        char *eol = strchr(line, '\n');
        size_t ll = eol ? (size_t)(eol - line) : strlen(line);
        if (report_line(line) && n++ < MAXLINES)
            fprintf(f, "%.*s\n", (int)ll, line);
        line += ll + (eol ? 1 : 0);
    }
    if (n > MAXLINES)
        fprintf(f, "(%d more lines in %s)\n", n - MAXLINES, b->log);
    fclose(f);
    if (n > 0)
        harness_note("---- memcheck/sanitizer report in %s ----\n%s---- end of report ----\n",
                     b->log, out);
    free(out);
    free(s);
    return n > 0;
}

bool bridge_alive(struct bridge *b, int *st)
{
    if (b->pid <= 0)
        return false;
    pid_t r = waitpid(b->pid, st, WNOHANG);
    if (r == b->pid) {
        b->pid = 0;
        return false;
    }
    return true;
}

const char *describe_status(int st, char *buf, size_t n)
{
    if (WIFEXITED(st))
        snprintf(buf, n, "exit %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(buf, n, "killed by signal %d", WTERMSIG(st));
    else
        snprintf(buf, n, "status 0x%x", st);
    return buf;
}

/* bridge_spawn, the command line after PREFIX (NULL: none). */
static void spawn_under(struct bridge *b, const char *name, const char *const prefix[],
                        bridge_config_fn *config, const void *arg)
{
    snprintf(b->cfg, sizeof b->cfg, "%s/%s.ini", g_harness.tmp, name);
    snprintf(b->log, sizeof b->log, "%s/%s.log", g_harness.tmp, name);
    b->mark = b->start = file_size(b->log);
    b->port = free_port();
    char *text = config(b->port, arg);
    write_file(b->cfg, text);
    free(text);
    char **argv = prefixed_argv(prefix, (const char *[]){"-c", b->cfg, NULL});
    b->pid = spawn(argv, b->log, NULL);
    free(argv);
}

void bridge_spawn(struct bridge *b, const char *name, bridge_config_fn *config, const void *arg)
{
    spawn_under(b, name, NULL, config, arg);
}

void bridge_start(struct bridge *b, const char *name, bridge_config_fn *config, const void *arg)
{
    bridge_start_under(b, name, NULL, config, arg);
}

void bridge_start_under(struct bridge *b, const char *name, const char *const prefix[],
                        bridge_config_fn *config, const void *arg)
{
    spawn_under(b, name, prefix, config, arg);
    int limit = scale_ms(20000);
    double end = now_ms() + limit;
    int last = 0;
    while (now_ms() < end) {
        int st;
        if (!bridge_alive(b, &st)) {
            char d[64];
            dump_log(b, name);
            dump_report(b);
            harness_fail("bridge %s died at start-up: %s", name, describe_status(st, d, sizeof d));
        }
        struct resp r;
        if (bridge_get(b, "/healthz", &r) == 0) {
            last = r.status;
            resp_free(&r);
            if (last == 200)
                return;
        }
        sleep_ms(50);
    }
    dump_log(b, name);
    harness_fail("bridge %s: /healthz not 200 within %g s (last %d)", name, limit / 1000.0, last);
}

int bridge_stop_clean(struct bridge *b, const char *name, int timeout_ms)
{
    int st = bridge_stop(b, scale_ms(timeout_ms));
    if (st == 0)
        return 0;
    char d[64];
    b->mark = 0;
    dump_log(b, name);
    fprintf(stderr, "%s bridge did not stop cleanly: %s\n", name,
            st == -1 ? "hung, killed" : describe_status(st, d, sizeof d));
    return -1;
}

void bridge_aux_end(struct bridge *aux, bool ok)
{
    if (!ok && aux->log[0])
        dump_log(aux, "this test's bridge log");
    if (aux->pid > 0) {
        kill(aux->pid, SIGKILL);
        waitpid(aux->pid, NULL, 0);
        aux->pid = 0;
    }
}

void broker_restore_for(const struct bridge *b)
{
    bool was_stopped = g_harness.broker_stopped;
    broker_restore();
    if (was_stopped) {
        int last;
        (void)wait_health(b->port, 200, scale_ms(30000), &last);
    }
}

bool bridge_still_up(struct bridge *b, const char *name)
{
    int st;
    if (b->pid <= 0 || bridge_alive(b, &st))
        return true;
    char d[64];
    harness_note("%s bridge had died (%s); its log:\n", name, describe_status(st, d, sizeof d));
    dump_log(b, name);
    dump_report(b);
    return false;
}

int bridge_stop(struct bridge *b, int timeout_ms)
{
    if (b->pid <= 0)
        return 0;
    int st = 0;
    kill(b->pid, SIGTERM);
    if (!wait_exit(b->pid, timeout_ms, &st)) {
        kill(b->pid, SIGKILL);
        waitpid(b->pid, &st, 0);
        st = -1;
    }
    b->pid = 0;
    if (st != 0)
        dump_report(b);
    return st;
}

int bridge_get(const struct bridge *b, const char *target, struct resp *r)
{
    if (b->tls_ca && b->tls_cert) {
        struct conn c;
        memset(r, 0, sizeof *r);
        if (conn_open_tls(&c, b->port, b->tls_ca, b->tls_cert, b->tls_key) != 0)
            return -1;
        return request_once(&c, "GET", target, NULL, NULL, NULL, 0, r);
    }
    if (b->tls_ca)
        return https_req(b->port, b->tls_ca, "GET", target, NULL, NULL, NULL, 0, r);
    return http_get(b->port, target, r);
}

bool bridge_wait_health(const struct bridge *b, int want, int ms, int *last)
{
    double end = now_ms() + ms;
    *last = 0;
    do {
        struct resp r;
        if (bridge_get(b, "/healthz", &r) == 0) {
            *last = r.status;
            resp_free(&r);
            if (*last == want)
                return true;
        }
        sleep_ms(50);
    } while (now_ms() < end);
    return false;
}

bool wait_health(int port, int want, int ms, int *last)
{
    struct bridge b = {.port = port};
    return bridge_wait_health(&b, want, ms, last);
}

/* ------------------------------------------------------------------ */
/* a suite's fixtures                                                  */

static void suite_start_bridge(const struct suite_bridge *sb)
{
    bridge_start(sb->b, sb->name, sb->config, sb->arg);
}

int suite_group_setup(void **state)
{
    (void)state;
    const struct suite *s = g_harness.suite;
    if (harness_init(s->name) != 0)
        return -1;
    if (s->prepare != NULL && s->prepare() != 0)
        return -1;
    if (s->shared[0].b == NULL)
        return 0;
    if (!mq_connect() ||
        (s->reject_queue != NULL && !mq_declare(s->reject_queue, mq_args_reject_all()))) {
        fprintf(stderr, "cannot reach the test broker on port %d\n", g_harness.broker_port);
        return -1;
    }
    for (int i = 0; i < SUITE_BRIDGES && s->shared[i].b != NULL; i++)
        suite_start_bridge(&s->shared[i]);
    return 0;
}

int suite_group_teardown(void **state)
{
    (void)state;
    const struct suite *s = g_harness.suite;
    int st = 0;
    for (int i = 0; i < SUITE_BRIDGES && s->shared[i].b != NULL; i++)
        if (bridge_stop_clean(s->shared[i].b, s->shared[i].name, s->stop_ms) != 0)
            st = -1;
    if (s->finish != NULL)
        s->finish();
    mq_disconnect();
    if (st != 0)
        return -1;
    harness_fini();
    return 0;
}

int suite_setup(void **state)
{
    (void)state;
    const struct suite *s = g_harness.suite;
    g_harness.passed = false;
    for (int i = 0; i < SUITE_BRIDGES && s->shared[i].b != NULL; i++)
        if (!bridge_still_up(s->shared[i].b, s->shared[i].name))
            suite_start_bridge(&s->shared[i]);
    if (s->test_begin != NULL)
        s->test_begin();
    for (int i = 0; i < SUITE_BRIDGES && s->shared[i].b != NULL; i++)
        s->shared[i].b->mark = file_size(s->shared[i].b->log);
    if (s->aux != NULL)
        memset(s->aux, 0, sizeof *s->aux);
    return 0;
}

void suite_test_logs(void)
{
    const struct suite *s = g_harness.suite;
    if (!g_harness.passed) {
        for (int i = 0; i < SUITE_BRIDGES && s->shared[i].b != NULL; i++) {
            char title[128];
            snprintf(title, sizeof title, "%s bridge log", s->shared[i].name);
            dump_log(s->shared[i].b, title);
        }
    }
    if (s->aux != NULL)
        bridge_aux_end(s->aux, g_harness.passed);
}

int suite_teardown(void **state)
{
    (void)state;
    suite_test_logs();
    echo_stop();
    if (g_harness.suite->shared[0].b != NULL)
        broker_restore_for(g_harness.suite->shared[0].b);
    else
        broker_restore();
    return 0;
}

/* ------------------------------------------------------------------ */
/* the echo worker (rpc)                                               */

void echo_start(const char *queue, const char *const opts[])
{
    char uri[128];
    snprintf(uri, sizeof uri, "amqp://guest:guest@127.0.0.1:%d/%%2f", g_harness.broker_port);
    char *argv[16] = {(char *)g_harness.echo_bin, "-u", uri, "-q", (char *)queue};
    int n = 5;
    for (size_t i = 0; opts && opts[i] && n < 15; i++)
        argv[n++] = (char *)opts[i];
    argv[n] = NULL;
    snprintf(g_harness.echo_log, sizeof g_harness.echo_log, "%s/echo.log", g_harness.tmp);
    long mark = file_size(g_harness.echo_log);
    g_harness.echo_pid = spawn(argv, g_harness.echo_log, NULL);
    double end = now_ms() + 15000;
    while (now_ms() < end) {
        char *s = slurp(g_harness.echo_log, mark);
        bool ready = strstr(s, "echo-worker: ready") != NULL;
        free(s);
        if (ready)
            return;
        int st;
        if (waitpid(g_harness.echo_pid, &st, WNOHANG) == g_harness.echo_pid) {
            g_harness.echo_pid = 0;
            harness_fail("echo-worker exited at start-up (status 0x%x)", st);
        }
        sleep_ms(20);
    }
    harness_fail("echo-worker not ready within 15 s");
}

void echo_stop(void)
{
    if (g_harness.echo_pid <= 0)
        return;
    int st;
    kill(g_harness.echo_pid, SIGTERM);
    if (!wait_exit(g_harness.echo_pid, 5000, &st)) {
        kill(g_harness.echo_pid, SIGKILL);
        waitpid(g_harness.echo_pid, &st, 0);
    }
    g_harness.echo_pid = 0;
}
