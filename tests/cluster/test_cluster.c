/* test_cluster.c - two bridges on a three-node RabbitMQ cluster with a
 * quorum queue, under load, through two node crashes (kill -9): first the
 * node that leads the queue, later (after it came back) a node a bridge is
 * connected to. Every request id answered 202 must be in the queue
 * afterwards, read id by id on a surviving node (lost = 0); both bridges
 * must answer /healthz 200 and 202 again after each crash, without a
 * restart. Prints what it measured: accepted, 503s, other answers, lost,
 * time to recover.
 *
 * Run by tests/cluster/run.sh (make test-cluster), which starts the cluster
 * with tests/cluster.sh and passes it in IT_CLUSTER_DIR / IT_CLUSTER_SH
 * next to the harness's IT_* variables (node 1 standing for "the broker"). */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "harness_cmocka.h"

#define QUEUE "cl.quorum"
#define XML "application/xml"
#define MAX_NODES 3
#define CLIENTS_PER_BRIDGE 2
#define MAX_REQUESTS 6000   /* per client: bounds the run whatever the timing */
#define PAUSE_MS 15         /* between one client's requests: moderate load */
#define RECOVER_MS 60000    /* bound on each recovery */
#define LOAD_BEFORE_MS 4000 /* load before the first crash */
#define LOAD_AFTER_MS 3000  /* load after the last recovery */

static const char DOC[] = "<?xml version=\"1.0\"?>\n<order><id>1</id></order>\n";

struct node {
    char name[128]; /* bridgecl-N-I@localhost */
    int port;       /* AMQP */
    bool down;      /* killed and not restarted */
};

static struct node g_nodes[MAX_NODES];
static int g_n_nodes;
static const char *g_dir; /* IT_CLUSTER_DIR */
static const char *g_sh;  /* IT_CLUSTER_SH */
static struct bridge g_b[2];

/* ---- the cluster -------------------------------------------------------- */

/* tests/cluster.sh A... (NULL-ended) with its output in *OUT; 0 when it
 * exited 0. */
static int cluster(char **out, const char *a1, const char *a2, const char *a3, const char *a4,
                   const char *a5)
{
    char *argv[] = {(char *)g_sh, (char *)a1, (char *)g_dir, (char *)a2,
                    (char *)a3,   (char *)a4, (char *)a5,    NULL};
    int st = run_capture(argv, NULL, out);
    return st == 0 ? 0 : -1;
}

static void read_nodes(void)
{
    char *out;
    if (cluster(&out, "nodes", NULL, NULL, NULL, NULL) != 0)
        fail_msg("cluster.sh nodes: %s", out);
    char *save = NULL;
    for (char *line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        int idx, port;
        char name[128];
        if (sscanf(line, "%d %127s %d", &idx, name, &port) != 3 || idx != g_n_nodes + 1 ||
            g_n_nodes == MAX_NODES)
            continue;
        snprintf(g_nodes[g_n_nodes].name, sizeof g_nodes[0].name, "%s", name);
        g_nodes[g_n_nodes].port = port;
        g_n_nodes++;
    }
    free(out);
    if (g_n_nodes != MAX_NODES)
        fail_msg("expected %d nodes from cluster.sh nodes, got %d", MAX_NODES, g_n_nodes);
}

/* A node that is up, for rabbitmqctl; 1-based. */
static int live_node(int except)
{
    for (int i = 0; i < g_n_nodes; i++)
        if (!g_nodes[i].down && i + 1 != except)
            return i + 1;
    fail_msg("no live node");
    return 0;
}

static int node_by_name(const char *name, size_t len)
{
    for (int i = 0; i < g_n_nodes; i++)
        if (strlen(g_nodes[i].name) == len && strncmp(g_nodes[i].name, name, len) == 0)
            return i + 1;
    return 0;
}

static int node_by_port(int port)
{
    for (int i = 0; i < g_n_nodes; i++)
        if (g_nodes[i].port == port)
            return i + 1;
    return 0;
}

/* list_queues -q name ITEM on a live node: the text after "QUEUE\t" on
 * QUEUE's line, malloc'd; NULL if the queue is not listed. */
static char *queue_info(const char *item)
{
    char idx[16], *out;
    snprintf(idx, sizeof idx, "%d", live_node(0));
    char *argv[] = {(char *)g_sh, "ctl",  (char *)g_dir, idx, "list_queues",
                    "-q",         "name", (char *)item,  NULL};
    int st = run_capture(argv, NULL, &out);
    char *res = NULL;
    if (st == 0) {
        char *save = NULL;
        for (char *line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
            if (strncmp(line, QUEUE "\t", sizeof QUEUE) == 0) {
                res = xstrdup(line + sizeof QUEUE);
                break;
            }
        }
    }
    if (res == NULL)
        print_message("list_queues name %s (status 0x%x):\n%s", item, st, out);
    free(out);
    return res;
}

static int queue_leader(void)
{
    char *l = queue_info("leader");
    if (l == NULL)
        fail_msg("no leader listed for " QUEUE);
    int n = node_by_name(l, strlen(l));
    if (n == 0)
        fail_msg("leader '%s' is none of the cluster's nodes", l);
    free(l);
    return n;
}

/* Wait until the queue has all three members online again. */
static void wait_members_online(void)
{
    double end = now_ms() + RECOVER_MS;
    while (now_ms() < end) {
        char *o = queue_info("online");
        int n = 0;
        for (int i = 0; o != NULL && i < g_n_nodes; i++)
            if (strstr(o, g_nodes[i].name) != NULL)
                n++;
        free(o);
        if (n == g_n_nodes)
            return;
        sleep_ms(500);
    }
    fail_msg(QUEUE " does not have its %d members online again", g_n_nodes);
}

/* cluster.sh kill|restart DIR IDX; the node is down after a kill. */
static void node_cmd(const char *cmd, int idx)
{
    char s[16], *out;
    snprintf(s, sizeof s, "%d", idx);
    if (cluster(&out, cmd, s, NULL, NULL, NULL) != 0)
        fail_msg("cluster.sh %s %d: %s", cmd, idx, out);
    free(out);
    g_nodes[idx - 1].down = strcmp(cmd, "kill") == 0;
}

/* ---- the bridges -------------------------------------------------------- */

/* Bridge I's config: two workers, the URI list rotated by I so that the
 * four workers cover the three nodes (worker w starts on URI w mod 3). */
static char *cl_config(int http_port, const void *arg)
{
    int rot = *(const int *)arg;
    char uris[512] = "";
    size_t off = 0;
    for (int k = 0; k < g_n_nodes; k++) {
        const struct node *n = &g_nodes[(k + rot) % g_n_nodes];
        off += (size_t)snprintf(uris + off, sizeof uris - off,
                                "%samqp://guest:guest@127.0.0.1:%d/%%2f", k ? "," : "", n->port);
    }
    char *s = NULL;
    if (asprintf(&s,
                 "[http]\nlisten = 127.0.0.1:%d\nworkers = 2\ntimeout = 10s\n"
                 "[amqp]\nuri = %s\nheartbeat = 5s\n"
                 "[log]\nlevel = %s\n"
                 "[route ingest]\npath = /ingest\nrouting_key = " QUEUE "\nqueue = " QUEUE
                 "\nqueue_type = quorum\n",
                 http_port, uris, g_harness.log_level) < 0)
        abort();
    return s;
}

/* The nodes bridge B's workers are on, from its /healthz, as a bit set of
 * 1-based node indexes. */
static unsigned bridge_nodes(const struct bridge *b)
{
    struct resp r;
    if (http_get(b->port, "/healthz", &r) != 0)
        return 0;
    unsigned set = 0;
    /* "worker N: up HOST:PORT" */
    for (const char *p = r.body; p && (p = strstr(p, ": up ")) != NULL; p++) {
        const char *eol = strchr(p, '\n');
        const char *colon = NULL; /* the last ':' of the line: IPv6 hosts have more */
        for (const char *q = p + 5; *q != '\0' && q != eol; q++)
            if (*q == ':')
                colon = q;
        int n = colon ? node_by_port(atoi(colon + 1)) : 0;
        if (n > 0)
            set |= 1u << n;
    }
    resp_free(&r);
    return set;
}

/* ---- load --------------------------------------------------------------- */

struct client {
    pthread_t thread;
    int id;             /* ids are "c<id>-<seq>" */
    int port;           /* bridge */
    int n;              /* requests sent */
    unsigned *accepted; /* seqs answered 202 */
    int n_accepted;
    int n_503;
    int n_other;     /* any other status */
    int n_noanswer;  /* connection failed or closed before an answer */
    int first_other; /* the first other status, for the message */
};

static atomic_bool g_stop;
/* Static, not on the test's stack: a failing assertion leaves the test
 * while they run, and the teardown stops them. */
static struct client g_cl[2 * CLIENTS_PER_BRIDGE];
static int g_n_cl; /* started */

static void clients_stop(void)
{
    atomic_store(&g_stop, true);
    for (int i = 0; i < g_n_cl; i++)
        pthread_join(g_cl[i].thread, NULL);
    g_n_cl = 0;
}

static void *client_main(void *p)
{
    struct client *c = p;
    c->accepted = xmalloc(MAX_REQUESTS * sizeof *c->accepted);
    struct conn cn = {.fd = -1};
    while (!atomic_load(&g_stop) && c->n < MAX_REQUESTS) {
        if (cn.fd < 0) {
            if (conn_open(&cn, c->port) != 0) {
                c->n_noanswer++;
                sleep_ms(50);
                continue;
            }
            conn_set_timeout(&cn, 30000);
        }
        char extra[64];
        unsigned seq = (unsigned)c->n++;
        snprintf(extra, sizeof extra, "X-Request-Id: c%d-%u\r\n", c->id, seq);
        size_t len;
        char *raw = fmt_request(&len, "POST", "/ingest", XML, extra, DOC, strlen(DOC));
        struct resp r;
        memset(&r, 0, sizeof r);
        int rc = exchange(&cn, raw, len, &r, false);
        free(raw);
        if (rc != 0) {
            c->n_noanswer++;
            conn_close(&cn);
        } else {
            if (r.status == 202)
                c->accepted[c->n_accepted++] = seq;
            else if (r.status == 503)
                c->n_503++;
            else if (c->n_other++ == 0)
                c->first_other = r.status;
            const char *conn_hdr = resp_header(&r, "Connection");
            if (conn_hdr && strcasecmp(conn_hdr, "close") == 0)
                conn_close(&cn);
        }
        resp_free(&r);
        sleep_ms(PAUSE_MS);
    }
    conn_close(&cn);
    return NULL;
}

/* ---- recovery ----------------------------------------------------------- */

/* After a crash at T0: poll until both bridges answer /healthz 200 and a
 * POST 202; returns the ms it took. The probes' ids join the checked ones. */
static char g_probe_ids[64][32];
static int g_n_probes;

static double wait_recovered(double t0, const char *what)
{
    bool ok[2] = {false, false};
    int last[2] = {0, 0};
    while (now_ms() - t0 < RECOVER_MS) {
        for (int i = 0; i < 2; i++) {
            if (ok[i])
                continue;
            struct resp r;
            if (http_get(g_b[i].port, "/healthz", &r) == 0)
                last[i] = r.status;
            bool healthy = r.status == 200;
            resp_free(&r);
            if (!healthy || g_n_probes == 64)
                continue;
            char extra[64];
            snprintf(g_probe_ids[g_n_probes], sizeof g_probe_ids[0], "probe-%d", g_n_probes);
            snprintf(extra, sizeof extra, "X-Request-Id: %s\r\n", g_probe_ids[g_n_probes]);
            if (http_post(g_b[i].port, "/ingest", XML, extra, DOC, &r) == 0) {
                last[i] = r.status;
                if (r.status == 202) {
                    ok[i] = true;
                    g_n_probes++;
                }
            }
            resp_free(&r);
        }
        if (ok[0] && ok[1])
            return now_ms() - t0;
        sleep_ms(100);
    }
    fail_msg("%s: the bridges did not recover within %d s (last answers %d, %d)", what,
             RECOVER_MS / 1000, last[0], last[1]);
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool sorted_have(char **ids, size_t n, const char *id)
{
    return bsearch(&id, ids, n, sizeof *ids, cmp_str) != NULL;
}

/* ---- the test ----------------------------------------------------------- */

static void test_failover(void **state)
{
    (void)state;
    read_nodes();
    for (int i = 0; i < 2; i++) {
        char name[16];
        snprintf(name, sizeof name, "bridge%d", i + 1);
        int rot = i == 0 ? 0 : 2; /* bridge 1: nodes 1, 2; bridge 2: nodes 3, 1 */
        bridge_start(&g_b[i], name, cl_config, &rot);
    }
    char *type = queue_info("type");
    if (type == NULL || strcmp(type, "quorum") != 0)
        fail_msg(QUEUE " is %s, not a quorum queue", type ? type : "missing");
    free(type);
    unsigned spread = bridge_nodes(&g_b[0]) | bridge_nodes(&g_b[1]);
    harness_note("workers on nodes:%s%s%s\n", spread & 2 ? " 1" : "", spread & 4 ? " 2" : "",
                 spread & 8 ? " 3" : "");
    assert_int_equal(spread, 2 | 4 | 8);

    struct client *cl = g_cl;
    memset(g_cl, 0, sizeof g_cl);
    atomic_store(&g_stop, false);
    for (int i = 0; i < 2 * CLIENTS_PER_BRIDGE; i++) {
        cl[i].id = i;
        cl[i].port = g_b[i % 2].port;
        if (pthread_create(&cl[i].thread, NULL, client_main, &cl[i]) != 0)
            fail_msg("pthread_create");
        g_n_cl++;
    }
    double t_load = now_ms();
    sleep_ms(LOAD_BEFORE_MS);

    /* 1. The queue's leader crashes. */
    int leader = queue_leader();
    harness_note("kill -9 node %d (%s), the leader of " QUEUE "\n", leader,
                 g_nodes[leader - 1].name);
    double t0 = now_ms();
    node_cmd("kill", leader);
    double rec1 = wait_recovered(t0, "leader crash");
    int new_leader = queue_leader();
    harness_note("recovered in %.0f ms; new leader node %d\n", rec1, new_leader);

    /* It comes back and rejoins, so that the queue keeps a majority
     * through the next crash. */
    node_cmd("restart", leader);
    wait_members_online();
    harness_note("node %d back, " QUEUE " has its %d members online\n", leader, g_n_nodes);

    /* 2. A node a bridge is connected to crashes. */
    unsigned on = bridge_nodes(&g_b[0]) | bridge_nodes(&g_b[1]);
    /* The harder case first: the queue's new leader, if a bridge is on it
     * (the queue elects a leader again while the workers reconnect). */
    int victim = (on & (1u << new_leader)) && new_leader != leader ? new_leader : 0;
    for (int i = 1; i <= g_n_nodes && victim == 0; i++)
        if ((on & (1u << i)) && i != leader)
            victim = i;
    if (victim == 0)
        fail_msg("no bridge is connected to a node other than %d", leader);
    harness_note("kill -9 node %d (%s), which bridge workers are connected to%s\n", victim,
                 g_nodes[victim - 1].name, victim == new_leader ? ", the queue's leader" : "");
    t0 = now_ms();
    node_cmd("kill", victim);
    double rec2 = wait_recovered(t0, "connected node crash");
    harness_note("recovered in %.0f ms\n", rec2);
    unsigned after = bridge_nodes(&g_b[0]) | bridge_nodes(&g_b[1]);
    if (after & (1u << victim))
        fail_msg("a worker still says it is on the killed node %d", victim);

    sleep_ms(LOAD_AFTER_MS);
    clients_stop();
    double load_s = (now_ms() - t_load) / 1000;
    int sent = 0, accepted = 0, n503 = 0, other = 0, noanswer = 0, first_other = 0;
    for (int i = 0; i < 2 * CLIENTS_PER_BRIDGE; i++) {
        sent += cl[i].n;
        accepted += cl[i].n_accepted;
        n503 += cl[i].n_503;
        noanswer += cl[i].n_noanswer;
        if (cl[i].n_other > 0 && other == 0)
            first_other = cl[i].first_other;
        other += cl[i].n_other;
    }
    for (int i = 0; i < 2; i++) {
        char name[16];
        snprintf(name, sizeof name, "bridge%d", i + 1);
        if (bridge_stop_clean(&g_b[i], name, 20000) != 0)
            fail_msg("%s did not stop cleanly", name);
    }

    /* Read the queue back on a node that is up, id by id. */
    int reader = live_node(victim);
    g_harness.broker_port = g_nodes[reader - 1].port;
    mq_disconnect();
    size_t n_ids;
    char **ids = mq_drain_ids(QUEUE, &n_ids);
    qsort(ids, n_ids, sizeof *ids, cmp_str);
    int lost = 0;
    char first_lost[64] = "";
    for (int i = 0; i < 2 * CLIENTS_PER_BRIDGE; i++) {
        for (int k = 0; k < cl[i].n_accepted; k++) {
            char id[64];
            snprintf(id, sizeof id, "c%d-%u", cl[i].id, cl[i].accepted[k]);
            if (!sorted_have(ids, n_ids, id) && lost++ == 0)
                snprintf(first_lost, sizeof first_lost, "%s", id);
        }
        free(cl[i].accepted);
        cl[i].accepted = NULL;
    }
    for (int i = 0; i < g_n_probes; i++)
        if (!sorted_have(ids, n_ids, g_probe_ids[i]) && lost++ == 0)
            snprintf(first_lost, sizeof first_lost, "%s", g_probe_ids[i]);
    size_t dups = 0;
    for (size_t i = 1; i < n_ids; i++)
        if (strcmp(ids[i], ids[i - 1]) == 0)
            dups++;
    ids_free(ids, n_ids);

    harness_note(
        "CLUSTER | requests sent %d in %.0f s | accepted (202) %d | 503 %d | other status %d | "
        "no answer %d | lost %d | in the queue %zu (%zu duplicates) | recovered after "
        "the leader crash in %.1f s, after the connected-node crash in %.1f s |\n",
        sent, load_s, accepted + g_n_probes, n503, other, noanswer, lost, n_ids, dups, rec1 / 1000,
        rec2 / 1000);
    if (getenv("IT_RESULTS") != NULL) {
        FILE *f = fopen(getenv("IT_RESULTS"), "w");
        if (f != NULL) {
            fprintf(f,
                    "sent=%d\nload_s=%.0f\naccepted=%d\nn503=%d\nother=%d\nnoanswer=%d\nlost=%d\n"
                    "queued=%zu\nduplicates=%zu\nrecover_leader_ms=%.0f\nrecover_node_ms=%.0f\n",
                    sent, load_s, accepted + g_n_probes, n503, other, noanswer, lost, n_ids, dups,
                    rec1, rec2);
            fclose(f);
        }
    }
    if (lost > 0)
        fail_msg("%d ids answered 202 are not in the queue (the first: %s)", lost, first_lost);
    if (other > 0)
        fail_msg("%d answers neither 202 nor 503 (the first: %d)", other, first_other);
    if (accepted < 100)
        fail_msg("only %d requests accepted: the load did not run", accepted);
    if ((size_t)(accepted + g_n_probes) > n_ids)
        fail_msg("more 202s (%d) than messages in the queue (%zu)", accepted + g_n_probes, n_ids);
}

/* The cluster run.sh started: where it is, and its script. */
static int cluster_prepare(void)
{
    g_dir = getenv("IT_CLUSTER_DIR");
    g_sh = getenv("IT_CLUSTER_SH");
    if (g_dir == NULL || g_sh == NULL) {
        fprintf(stderr, "run me through tests/cluster/run.sh (IT_CLUSTER_* missing)\n");
        return -1;
    }
    return 0;
}

/* The clients and bridges a failed test left behind. */
static void cluster_finish(void)
{
    clients_stop();
    for (int i = 0; i < 2 * CLIENTS_PER_BRIDGE; i++)
        free(g_cl[i].accepted);
    for (int i = 0; i < 2; i++) {
        if (g_b[i].pid > 0) {
            dump_log(&g_b[i], "bridge log");
            kill(g_b[i].pid, SIGKILL);
            waitpid(g_b[i].pid, NULL, 0);
        }
    }
}

/* No shared bridge: the test starts its two itself. */
static const struct suite SUITE = {
    .name = "cluster",
    .prepare = cluster_prepare,
    .finish = cluster_finish,
};

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_failover),
    };
    return suite_run("tests", &SUITE, tests, NULL);
}
