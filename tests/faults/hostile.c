/* hostile.c - the hostile input suites' shared part (hostile.h). */
#include "hostile.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
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

const char DOC[] = "<?xml version=\"1.0\"?>\n<order><id>1</id></order>\n";

struct bridge g_main;

struct bridge g_aux;

int g_fds[IDLE_N + FDX_N];

size_t g_nfds;

int g_epoll = -1;

void fds_track(int fd)
{
    if (g_nfds < sizeof g_fds / sizeof *g_fds)
        g_fds[g_nfds++] = fd;
}

void fds_close_all(void)
{
    for (size_t i = 0; i < g_nfds; i++)
        if (g_fds[i] >= 0)
            close(g_fds[i]);
    g_nfds = 0;
    if (g_epoll >= 0)
        close(g_epoll);
    g_epoll = -1;
}

/* ------------------------------------------------------------------ */
/* the bridge's config                                                 */
char *h_config(int http_port, const void *arg)
{
    int workers = arg != NULL ? *(const int *)arg : 2;
    char *text = NULL;
    if (asprintf(&text,
                 "; written by tests/faults/hostile.c\n"
                 "[http]\n"
                 "listen      = 127.0.0.1:%d\n"
                 "workers     = %d\n"
                 "max_body    = 1MiB\n"
                 "timeout     = %dms\n"
                 "pong_path   = /pong\n"
                 "\n"
                 "[amqp]\n"
                 "uri         = amqp://guest:guest@127.0.0.1:%d/%%2f\n"
                 "heartbeat   = 5s\n"
                 "confirm     = yes\n"
                 "max_inflight = 10000\n"
                 "\n"
                 "[log]\n"
                 "level       = %s\n"
                 "\n"
                 "[route h.ingest]\n"
                 "path        = /h/ingest\n"
                 "mode        = publish\n"
                 "routing_key = " Q_INGEST "\n"
                 "queue       = " Q_INGEST "\n"
                 "persistent  = yes\n"
                 "\n"
                 "[route h.load]\n"
                 "path        = /h/load\n"
                 "mode        = publish\n"
                 "routing_key = " Q_LOAD "\n"
                 "persistent  = no\n",
                 http_port, workers, TIMEOUT_MS, g_harness.broker_port, g_harness.log_level) < 0)
        abort();
    return text;
}

/* ------------------------------------------------------------------ */
/* small helpers                                                       */
char *proc_read(pid_t pid, const char *what)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, what);
    size_t cap = 8192, n = 0;
    char *s = xmalloc(cap);
    FILE *f = fopen(path, "r");
    if (f != NULL) {
        size_t k;
        while ((k = fread(s + n, 1, cap - n - 1, f)) > 0) {
            n += k;
            if (cap - n < 2) {
                char *t = realloc(s, cap * 2);
                if (!t)
                    abort();
                s = t;
                cap *= 2;
            }
        }
        fclose(f);
    }
    s[n] = '\0';
    return s;
}

long status_kb(pid_t pid, const char *key)
{
    char *s = proc_read(pid, "status");
    long v = -1;
    size_t kl = strlen(key);
    for (char *line = s; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
        if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
            v = strtol(line + kl + 1, NULL, 10);
            break;
        }
    free(s);
    return v;
}

bool instrumented(pid_t pid)
{
    if (g_harness.wrap != NULL)
        return true;
    char *maps = proc_read(pid, "maps");
    bool asan = strstr(maps, "libasan") != NULL;
    free(maps);
    return asan;
}

long rss_bound_kb(long kb)
{
    return instrumented(g_main.pid) ? 8 * kb : kb;
}

/* Restart the peak-RSS count (VmHWM) of PID; false if the kernel refuses. */
static bool hwm_reset(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/clear_refs", (int)pid);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    bool ok = write(fd, "5", 1) == 1;
    close(fd);
    return ok;
}

void mem_mark(pid_t pid, struct mem_mark *m)
{
    m->hwm_ok = hwm_reset(pid);
    m->rss_kb = status_kb(pid, "VmRSS");
    m->hwm_base = status_kb(pid, "VmHWM");
}

long mem_growth_kb(pid_t pid, const struct mem_mark *m)
{
    long rss = status_kb(pid, "VmRSS"), hwm = status_kb(pid, "VmHWM");
    long g = rss - m->rss_kb;
    if (hwm - (m->hwm_ok ? m->rss_kb : m->hwm_base) > g)
        g = hwm - (m->hwm_ok ? m->rss_kb : m->hwm_base);
    return g;
}

double pong_ms(int port)
{
    struct resp r;
    double t0 = now_ms();
    int rc = http_get(port, "/pong", &r);
    double ms = now_ms() - t0;
    bool ok = rc == 0 && r.status == 200 && r.body_len == 5 && memcmp(r.body, "Pong!", 5) == 0;
    resp_free(&r);
    return ok ? ms : -1;
}

double publish_ms(int port, const char *id)
{
    char extra[200];
    snprintf(extra, sizeof extra, "X-Request-Id: %s\r\n", id);
    struct resp r;
    double t0 = now_ms();
    int rc = http_post(port, "/h/ingest", XML, extra, DOC, &r);
    double ms = now_ms() - t0;
    int st = rc == 0 ? r.status : -1;
    resp_free(&r);
    return st == 202 ? ms : -1;
}

size_t queue_count(const char *q, const char *id, size_t *all)
{
    size_t n;
    char **ids = mq_drain_ids(q, &n);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (id && strcmp(ids[i], id) == 0)
            k++;
    ids_free(ids, n);
    if (all)
        *all = n;
    return k;
}

void assert_nothing_published(const char *what)
{
    size_t all;
    queue_count(Q_INGEST, NULL, &all);
    if (all != 0)
        fail_msg("%s: %zu messages published", what, all);
}

int await_resp(struct conn *c, struct resp *r, int ms)
{
    memset(r, 0, sizeof *r);
    if (c->len == 0) {
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        int n;
        do
            n = poll(&p, 1, ms);
        while (n < 0 && errno == EINTR);
        if (n == 0)
            return -1;
    }
    return conn_read_resp(c, r, false) == 0 ? 1 : 0;
}

/* v->said from the rest of V. */
static void verdict_say(struct verdict *v)
{
    if (v->got == 1)
        snprintf(v->said, sizeof v->said, "%d%s", v->status,
                 v->after == 1   ? ", connection closed"
                 : v->after == 2 ? ", then more bytes"
                                 : ", connection kept");
    else if (v->got == 0)
        snprintf(v->said, sizeof v->said, "closed without a response");
    else
        snprintf(v->said, sizeof v->said, "no answer within 5 s");
}

void probe(int port, const void *raw, size_t len, struct verdict *v)
{
    memset(v, 0, sizeof *v);
    struct conn c;
    if (conn_open(&c, port) != 0)
        fail_msg("cannot connect to the bridge on port %d", port);
    (void)conn_send(&c, raw, len);
    double t0 = now_ms();
    struct resp r;
    v->got = await_resp(&c, &r, scale_ms(5000));
    v->ms = now_ms() - t0;
    if (v->got == 1) {
        v->status = r.status;
        const char *id = resp_header(&r, "X-Request-Id");
        snprintf(v->id, sizeof v->id, "%s", id ? id : "");
        size_t k = 0;
        for (; k < r.body_len && k < sizeof v->body - 1; k++)
            v->body[k] = r.body[k] < 0x20 || r.body[k] > 0x7e ? ' ' : r.body[k];
        v->body[k] = '\0';
        v->after = conn_wait_closed(&c, scale_ms(1000));
    } else {
        v->after = v->got == 0 ? 1 : 0;
    }
    resp_free(&r);
    conn_close(&c);
    verdict_say(v);
}

void probe_fmt(int port, struct verdict *v, const char *fmt, ...)
{
    char *raw = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&raw, fmt, ap);
    va_end(ap);
    if (n < 0)
        abort();
    probe(port, raw, (size_t)n, v);
    free(raw);
}

char *make_doc(size_t n)
{
    static const char head[] = "<?xml version=\"1.0\"?>\n<doc>";
    static const char tail[] = "</doc>\n";
    static const char item[] = "<item n=\"42\">hostile but well formed</item>\n";
    char *s = xmalloc(n + 1);
    size_t k = 0;
    memcpy(s, head, sizeof head - 1);
    k = sizeof head - 1;
    while (k + (sizeof item - 1) + (sizeof tail - 1) <= n) {
        memcpy(s + k, item, sizeof item - 1);
        k += sizeof item - 1;
    }
    memset(s + k, ' ', n - k - (sizeof tail - 1));
    memcpy(s + n - (sizeof tail - 1), tail, sizeof tail - 1);
    s[n] = '\0';
    return s;
}

void hostile_test_begin(void)
{
    mq_purge(Q_INGEST);
}

int hostile_teardown(void **state)
{
    fds_close_all();
    (void)suite_teardown(state);
    int st;
    if (g_main.pid > 0 && !bridge_alive(&g_main, &st)) {
        char d[64];
        print_error("the bridge died during the test: %s\n", describe_status(st, d, sizeof d));
        dump_log(&g_main, "bridge log");
        dump_report(&g_main);
        return -1;
    }
    return 0;
}

void assert_serving(const char *after)
{
    int st;
    if (!bridge_alive(&g_main, &st)) {
        char d[64];
        fail_msg("the bridge died after %s: %s", after, describe_status(st, d, sizeof d));
    }
    if (pong_ms(g_main.port) < 0)
        fail_msg("the bridge does not answer a pong after %s", after);
}

/* ------------------------------------------------------------------ */
/* ambiguous framing                                                   */
char *subst(const char *text, const char *token, const char *value)
{
    char *out;
    size_t len, tl = strlen(token);
    FILE *f = xmemstream(&out, &len);
    for (const char *p = text; *p;) {
        const char *hit = strstr(p, token);
        if (!hit) {
            fputs(p, f);
            break;
        }
        fwrite(p, 1, (size_t)(hit - p), f);
        fputs(value, f);
        p = hit + tl;
    }
    fclose(f);
    return out;
}
