/* ceiling.c - the broker's own limit, for `make bench`: publishes the
 * benchmark document straight to RabbitMQ with rabbitmq-c, as the bridge
 * does for one request but with no HTTP in between, and prints how many
 * messages (or rpc round trips) per second the broker took. The bridge is
 * judged by its ratio to this figure, measured in the same run on the same
 * machine.
 *
 *   bench-ceiling publish -u URI -q QUEUE -f DOC [-w WINDOW] [-d SECONDS] [-c CONNS] [-t]
 *                         [-p PARTS]
 *   bench-ceiling rpc     -u URI -q QUEUE -f DOC [-w WINDOW] [-d SECONDS] [-c CONNS] [-t]
 *                         [-p PARTS]
 *
 * publish: confirms on, at most WINDOW (default 300) unconfirmed at once;
 *          counts acks.
 * rpc:     the request goes to QUEUE with reply_to amq.rabbitmq.reply-to
 *          (direct reply-to, consumed on the same channel first), at most
 *          WINDOW awaiting their reply; counts replies matched by
 *          correlation id.
 * -t: transient (delivery_mode 1) instead of persistent, both modes.
 *
 * What each message carries is content_type and delivery_mode, plus PARTS,
 * a comma-separated list of (default "all", the bridge's, so that the
 * broker does the same work as for the bridge's messages):
 *   id         message_id (and, rpc, correlation_id: direct reply-to needs it)
 *   meta       timestamp, app_id, type
 *   headers    the headers table the bridge sends for tests/load/post.lua
 *              (x-http-path, x-forwarded-for)
 *   mandatory  the mandatory flag (unroutable messages come back)
 * "none" is the minimal message; "id,mandatory" is what a route with
 * `properties = minimal` sends. `make bench` measures each part's cost.
 *
 * CONNS connections (default: one per CPU, as the bridge has one per worker),
 * each a thread of its own, share the window.
 *
 * Output, one line: `ceiling MODE ops=N seconds=S rate=R p50_ms=A p99_ms=B
 * nacks=K returns=K`, latency being publish-to-ack (or publish-to-reply). A
 * nack, a return or a lost connection is counted and printed; a lost
 * connection exits 1. Each connection is driven by one thread on a blocking
 * socket: its window keeps the broker busy while it waits for frames. */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CHANNEL 1
#define MAX_WINDOW 100000
#define LAT_SLOTS (1u << 22) /* latency samples kept (4 M): more are not sampled */
#define ID_LEN 32

/* Settings from the command line. */
struct opts {
    bool rpc;              /* rpc round trips instead of confirmed publishes */
    const char *uri;       /* amqp://user:pass@host:port/vhost */
    const char *queue;     /* routing key on the default exchange */
    const char *doc;       /* file whose bytes are the body */
    unsigned window;       /* unconfirmed publishes (or unanswered rpcs) at most */
    double seconds;        /* how long to publish */
    bool transient;        /* delivery_mode 1 instead of 2 */
    unsigned conns;        /* connections (threads), the window split among them */
    unsigned parts;        /* PART_* bits: what each message carries beyond the minimum */
    const char *parts_arg; /* as given, for the output line */
};

enum {
    PART_ID = 1u << 0,
    PART_META = 1u << 1,
    PART_HEADERS = 1u << 2,
    PART_MANDATORY = 1u << 3,
    PART_ALL = PART_ID | PART_META | PART_HEADERS | PART_MANDATORY,
};

/* "id,meta,headers,mandatory" | "all" | "none" -> PART_* bits; -1 if not. */
static int parse_parts(const char *arg)
{
    static const struct {
        const char *name;
        unsigned bits;
    } names[] = {{"id", PART_ID},           {"meta", PART_META},
                 {"headers", PART_HEADERS}, {"mandatory", PART_MANDATORY},
                 {"all", PART_ALL},         {"none", 0}};
    unsigned bits = 0;
    const char *p = arg;
    while (*p != '\0') {
        size_t len = strcspn(p, ",");
        size_t i;
        for (i = 0; i < sizeof names / sizeof names[0]; i++)
            if (strlen(names[i].name) == len && strncmp(p, names[i].name, len) == 0)
                break;
        if (i == sizeof names / sizeof names[0])
            return -1;
        bits |= names[i].bits;
        p += len;
        if (*p == ',')
            p++;
    }
    return (int)bits;
}

/* One message in flight: when it left, by delivery tag or correlation id. */
struct slot {
    double sent; /* monotonic seconds; 0 = free */
};

/* What a run counted. */
struct tally {
    uint64_t ops;     /* acks (publish) or replies (rpc) */
    uint64_t nacks;   /* basic.nack */
    uint64_t returns; /* basic.return */
    double *lat;      /* latency samples, ms */
    size_t n_lat;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "bench-ceiling: %s: %s\n", what, detail);
    exit(1);
}

static void check_reply(amqp_rpc_reply_t r, const char *what)
{
    if (r.reply_type == AMQP_RESPONSE_NORMAL)
        return;
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION)
        die(what, amqp_error_string2(r.library_error));
    die(what, "the broker refused (channel or connection closed)");
}

static void usage(void)
{
    fputs("usage: bench-ceiling publish|rpc -u URI -q QUEUE -f DOC [-w WINDOW] [-d SECONDS] "
          "[-c CONNS] [-t] [-p id,meta,headers,mandatory|all|none]\n",
          stderr);
    exit(2);
}

static struct opts parse(int argc, char **argv)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    struct opts o = {.window = 300,
                     .seconds = 10,
                     .conns = cpus > 0 ? (unsigned)cpus : 1,
                     .parts = PART_ALL,
                     .parts_arg = "all"};
    if (argc < 2)
        usage();
    if (strcmp(argv[1], "rpc") == 0)
        o.rpc = true;
    else if (strcmp(argv[1], "publish") != 0)
        usage();
    int c;
    optind = 2;
    while ((c = getopt(argc, argv, "u:q:f:w:d:c:tp:")) != -1) {
        switch (c) {
        case 'u':
            o.uri = optarg;
            break;
        case 'q':
            o.queue = optarg;
            break;
        case 'f':
            o.doc = optarg;
            break;
        case 'c':
            o.conns = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'w':
            o.window = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'd':
            o.seconds = strtod(optarg, NULL);
            break;
        case 't':
            o.transient = true;
            break;
        case 'p': {
            int bits = parse_parts(optarg);
            if (bits < 0)
                usage();
            o.parts = (unsigned)bits;
            o.parts_arg = optarg;
            break;
        }
        default:
            usage();
        }
    }
    if (!o.uri || !o.queue || !o.doc || o.window == 0 || o.window > MAX_WINDOW || o.conns == 0 ||
        !(o.seconds > 0))
        usage();
    return o;
}

static amqp_bytes_t read_doc(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        die(path, strerror(errno));
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return (amqp_bytes_t){.len = n, .bytes = buf};
}

static amqp_connection_state_t connect_broker(const char *uri)
{
    char *copy = strdup(uri);
    struct amqp_connection_info info;
    if (!copy || amqp_parse_url(copy, &info) != AMQP_STATUS_OK)
        die("bad URI", uri);
    amqp_connection_state_t conn = amqp_new_connection();
    amqp_socket_t *sock = amqp_tcp_socket_new(conn);
    if (!sock || amqp_socket_open(sock, info.host, info.port) != AMQP_STATUS_OK)
        die("cannot connect", info.host);
    check_reply(amqp_login(conn, info.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, info.user,
                           info.password),
                "login");
    amqp_channel_open(conn, CHANNEL);
    check_reply(amqp_get_rpc_reply(conn), "channel.open");
    free(copy);
    return conn;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double percentile(double *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
    return v[i];
}

static void record(struct tally *t, struct slot *s)
{
    if (s->sent > 0 && t->n_lat < LAT_SLOTS / 4)
        t->lat[t->n_lat++] = (now_s() - s->sent) * 1000.0;
    s->sent = 0;
}

/* Skip the header and body frames that follow a basic.return or a
 * basic.deliver we do not keep. */
static void skip_content(amqp_connection_state_t conn)
{
    amqp_frame_t f;
    if (amqp_simple_wait_frame(conn, &f) != AMQP_STATUS_OK || f.frame_type != AMQP_FRAME_HEADER)
        die("content", "expected a header frame");
    uint64_t left = f.payload.properties.body_size;
    while (left > 0) {
        if (amqp_simple_wait_frame(conn, &f) != AMQP_STATUS_OK || f.frame_type != AMQP_FRAME_BODY)
            die("content", "expected a body frame");
        left -= f.payload.body_fragment.len;
    }
}

/* rpc: the correlation id of a reply, read from its header frame, to a
 * window index. The ids are "c<seq>" and (seq - 1) % window names the slot. */
static long reply_slot(amqp_connection_state_t conn, unsigned window)
{
    amqp_frame_t f;
    if (amqp_simple_wait_frame(conn, &f) != AMQP_STATUS_OK || f.frame_type != AMQP_FRAME_HEADER)
        die("reply", "expected a header frame");
    amqp_basic_properties_t *p = f.payload.properties.decoded;
    long slot = -1;
    if ((p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG) && p->correlation_id.len > 1 &&
        p->correlation_id.len < ID_LEN) {
        char id[ID_LEN];
        memcpy(id, p->correlation_id.bytes, p->correlation_id.len);
        id[p->correlation_id.len] = '\0';
        uint64_t seq = strtoull(id + 1, NULL, 10);
        if (seq > 0)
            slot = (long)((seq - 1) % window);
    }
    uint64_t left = f.payload.properties.body_size;
    while (left > 0) {
        if (amqp_simple_wait_frame(conn, &f) != AMQP_STATUS_OK || f.frame_type != AMQP_FRAME_BODY)
            die("reply", "expected a body frame");
        left -= f.payload.body_fragment.len;
    }
    return slot;
}

/* One connection's share of the run. */
struct run {
    const struct opts *o;
    amqp_bytes_t body;
    unsigned window; /* this connection's share of the window */
    struct tally t;
    pthread_t th;
};

static void *run_one(void *arg)
{
    struct run *run = arg;
    const struct opts *op = run->o;
    struct opts o = *op;
    o.window = run->window;
    amqp_bytes_t body = run->body;
    amqp_connection_state_t conn = connect_broker(o.uri);

    if (o.rpc) {
        amqp_basic_consume(conn, CHANNEL, amqp_cstring_bytes("amq.rabbitmq.reply-to"),
                           amqp_empty_bytes, 0, 1, 0, amqp_empty_table);
        check_reply(amqp_get_rpc_reply(conn), "basic.consume amq.rabbitmq.reply-to");
    }
    amqp_confirm_select(conn, CHANNEL);
    check_reply(amqp_get_rpc_reply(conn), "confirm.select");

    struct slot *slots = calloc(o.window, sizeof *slots);
    struct tally t = {.lat = malloc(LAT_SLOTS / 4 * sizeof(double))};
    if (!slots || !t.lat)
        die("out of memory", "slots");

    amqp_table_entry_t hdr[2] = {
        {.key = amqp_cstring_bytes("x-http-path"),
         .value = {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes("/bench")}},
        {.key = amqp_cstring_bytes("x-forwarded-for"),
         .value = {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes("127.0.0.1")}},
    };
    char id[ID_LEN];
    char expiration[] = "30000";
    amqp_basic_properties_t props = {
        ._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG,
        .content_type = amqp_cstring_bytes("application/xml"),
        .delivery_mode = o.transient ? 1 : 2,
    };
    if (o.parts & PART_ID)
        props._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
    if (o.parts & PART_META) {
        props._flags |= AMQP_BASIC_TIMESTAMP_FLAG | AMQP_BASIC_APP_ID_FLAG | AMQP_BASIC_TYPE_FLAG;
        props.app_id = amqp_cstring_bytes("ingest-bridge");
        props.type = amqp_cstring_bytes("bench");
    }
    if (o.parts & PART_HEADERS) {
        props._flags |= AMQP_BASIC_HEADERS_FLAG;
        props.headers = (amqp_table_t){.num_entries = 2, .entries = hdr};
    }
    /* rpc: direct reply-to needs reply_to and the reply is matched by its
     * correlation id, whatever the parts. */
    if (o.rpc) {
        props._flags |=
            AMQP_BASIC_REPLY_TO_FLAG | AMQP_BASIC_CORRELATION_ID_FLAG | AMQP_BASIC_EXPIRATION_FLAG;
        props.reply_to = amqp_cstring_bytes("amq.rabbitmq.reply-to");
        props.expiration = amqp_cstring_bytes(expiration);
    }
    amqp_boolean_t mandatory = (o.parts & PART_MANDATORY) ? 1 : 0;

    /* Publish: delivery tag n (1-based) sits in slots[(n - 1) % window] and
     * at most window are unconfirmed, so a slot is free when reused. rpc: the
     * correlation id names the slot; at most window await their reply. */
    uint64_t next_tag = 1, acked_upto = 0; /* publish: tags 1..acked_upto confirmed */
    uint64_t outstanding = 0;              /* rpc: awaiting a reply */
    double start = now_s(), stop = start + o.seconds;
    for (;;) {
        bool sending = now_s() < stop;
        uint64_t in_flight = o.rpc ? outstanding : next_tag - 1 - acked_upto;
        if (!sending && in_flight == 0)
            break;
        while (sending && in_flight < o.window) {
            snprintf(id, sizeof id, "c%" PRIu64, next_tag);
            props.message_id = amqp_cstring_bytes(id);
            props.correlation_id = props.message_id;
            props.timestamp = (uint64_t)time(NULL);
            slots[(next_tag - 1) % o.window].sent = now_s();
            int rc = amqp_basic_publish(conn, CHANNEL, amqp_empty_bytes,
                                        amqp_cstring_bytes(o.queue), mandatory, 0, &props, body);
            if (rc != AMQP_STATUS_OK)
                die("publish", amqp_error_string2(rc));
            next_tag++;
            in_flight++;
            if (o.rpc)
                outstanding++;
        }
        amqp_frame_t f;
        int rc = amqp_simple_wait_frame(conn, &f);
        if (rc != AMQP_STATUS_OK)
            die("connection lost", amqp_error_string2(rc));
        if (f.frame_type != AMQP_FRAME_METHOD)
            continue;
        switch (f.payload.method.id) {
        case AMQP_BASIC_ACK_METHOD:
        case AMQP_BASIC_NACK_METHOD: {
            bool nack = f.payload.method.id == AMQP_BASIC_NACK_METHOD;
            uint64_t tag;
            bool multiple;
            if (nack) {
                amqp_basic_nack_t *m = f.payload.method.decoded;
                tag = m->delivery_tag;
                multiple = m->multiple;
            } else {
                amqp_basic_ack_t *m = f.payload.method.decoded;
                tag = m->delivery_tag;
                multiple = m->multiple;
            }
            uint64_t from = multiple ? acked_upto + 1 : tag;
            for (uint64_t n = from; n <= tag; n++) {
                if (nack)
                    t.nacks++;
                else if (!o.rpc) {
                    t.ops++;
                    record(&t, &slots[(n - 1) % o.window]);
                }
            }
            if (tag > acked_upto)
                acked_upto = tag;
            break;
        }
        case AMQP_BASIC_RETURN_METHOD:
            t.returns++;
            skip_content(conn);
            if (o.rpc)
                outstanding--; /* no reply will come */
            break;
        case AMQP_BASIC_DELIVER_METHOD: {
            long s = reply_slot(conn, o.window);
            if (o.rpc && s >= 0) {
                t.ops++;
                outstanding--;
                record(&t, &slots[s]);
            }
            break;
        }
        case AMQP_CHANNEL_CLOSE_METHOD:
        case AMQP_CONNECTION_CLOSE_METHOD:
            die("broker", "closed the channel or connection");
        default:
            break;
        }
        amqp_maybe_release_buffers(conn);
    }
    amqp_channel_close(conn, CHANNEL, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
    free(slots);
    run->t = t;
    return NULL;
}

int main(int argc, char **argv)
{
    struct opts o = parse(argc, argv);
    amqp_bytes_t body = read_doc(o.doc);
    unsigned n = o.conns < o.window ? o.conns : o.window;
    struct run *runs = calloc(n, sizeof *runs);
    if (runs == NULL)
        die("out of memory", "runs");
    double start = now_s();
    for (unsigned i = 0; i < n; i++) {
        runs[i] = (struct run){.o = &o, .body = body, .window = o.window / n};
        if (i < o.window % n)
            runs[i].window++;
        if (pthread_create(&runs[i].th, NULL, run_one, &runs[i]) != 0)
            die("pthread_create", strerror(errno));
    }
    struct tally all = {.lat = malloc(LAT_SLOTS * sizeof(double))};
    if (all.lat == NULL)
        die("out of memory", "latencies");
    for (unsigned i = 0; i < n; i++) {
        pthread_join(runs[i].th, NULL);
        struct tally *t = &runs[i].t;
        all.ops += t->ops;
        all.nacks += t->nacks;
        all.returns += t->returns;
        size_t k = t->n_lat < LAT_SLOTS - all.n_lat ? t->n_lat : LAT_SLOTS - all.n_lat;
        memcpy(all.lat + all.n_lat, t->lat, k * sizeof(double));
        all.n_lat += k;
        free(t->lat);
    }
    double secs = now_s() - start;
    qsort(all.lat, all.n_lat, sizeof(double), cmp_double);
    printf("ceiling %s parts=%s window=%u conns=%u persistent=%d ops=%" PRIu64
           " seconds=%.2f rate=%.0f p50_ms=%.2f p99_ms=%.2f nacks=%" PRIu64 " returns=%" PRIu64
           "\n",
           o.rpc ? "rpc" : "publish", o.parts_arg, o.window, n, o.transient ? 0 : 1, all.ops, secs,
           (double)all.ops / secs, percentile(all.lat, all.n_lat, 50),
           percentile(all.lat, all.n_lat, 99), all.nacks, all.returns);
    free(all.lat);
    free(runs);
    return 0;
}
