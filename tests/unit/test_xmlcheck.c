/* test_xmlcheck.c - cmocka tests for bridge/xmlcheck.c: well-formedness with
 * exact positions, DOCTYPE/XXE/billion laughs refused without any load, depth,
 * root and XSD checks, reuse without state leaks, threads over one schema. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <ftw.h>
#include <malloc.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libxml/encoding.h>
#include <libxml/parser.h>
#include <libxml/parserInternals.h>
#include <libxml/xmlIO.h>

#include "bridge/xmlcheck.h"
#include "tests/lib/order_xsd.h" /* ORDER_XSD */

#define SECRET "s3cr3t-marker-7f1c"
#define ANY_LINE (-1)

static char g_dir[256];    /* temp directory, removed at the end */
static char g_xsd[320];    /* the order schema */
static char g_secret[320]; /* a file holding SECRET */
static char g_dtd[320];    /* a local DTD that would declare an entity */
static struct xmlcheck_schema *g_schema;
static int g_listen = -1; /* the local HTTP server below: no body may reach it */
static int g_port;        /* its port */

/* Every external load in the process goes through here (on top of the
 * module's own loader): request parsing must never call it. */
static atomic_int g_loads;
static xmlExternalEntityLoader g_module_loader;

static xmlParserInputPtr counting_loader(const char *url, const char *id, xmlParserCtxtPtr ctxt)
{
    atomic_fetch_add(&g_loads, 1);
    return g_module_loader(url, id, ctxt);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* A local HTTP server that answers anything with a small XML document and
 * counts connections: a load that got through would succeed and be seen
 * (rather than hang waiting for an answer). */
static atomic_int g_connections;
static int g_stop_pipe[2] = {-1, -1};
static pthread_t g_server;

static void *server_main(void *arg)
{
    (void)arg;
    static const char reply[] = "HTTP/1.0 200 OK\r\nContent-Type: application/xml\r\n\r\n"
                                "<x>" SECRET "</x>";
    for (;;) {
        struct pollfd p[2] = {{.fd = g_listen, .events = POLLIN},
                              {.fd = g_stop_pipe[0], .events = POLLIN}};
        if (poll(p, 2, -1) < 0 || p[1].revents != 0)
            return NULL;
        int c = accept(g_listen, NULL, NULL);
        if (c < 0)
            continue;
        atomic_fetch_add(&g_connections, 1);
        char buf[1024];
        ssize_t got = read(c, buf, sizeof buf);
        ssize_t sent = write(c, reply, sizeof reply - 1);
        (void)got;
        (void)sent;
        close(c);
    }
}

/* True if anyone connected to the server since the last call. */
static bool listener_touched(void)
{
    return atomic_exchange(&g_connections, 0) != 0;
}

static int group_setup(void **state)
{
    (void)state;
    xmlcheck_global_init();
    g_module_loader = xmlGetExternalEntityLoader();
    xmlSetExternalEntityLoader(counting_loader);

    const char *tmp = getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp";
    snprintf(g_dir, sizeof g_dir, "%s/xmlcheck-XXXXXX", tmp);
    if (mkdtemp(g_dir) == NULL)
        return -1;
    snprintf(g_xsd, sizeof g_xsd, "%s/order.xsd", g_dir);
    snprintf(g_secret, sizeof g_secret, "%s/secret.txt", g_dir);
    snprintf(g_dtd, sizeof g_dtd, "%s/r.dtd", g_dir);
    write_file(g_xsd, ORDER_XSD);
    write_file(g_secret, SECRET "\n");
    write_file(g_dtd, "<!ENTITY x \"" SECRET "\">\n");

    char err[256] = "";
    g_schema = xmlcheck_schema_load(g_xsd, err, sizeof err);
    if (g_schema == NULL) {
        fprintf(stderr, "schema: %s\n", err);
        return -1;
    }

    g_listen = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    if (g_listen < 0 || bind(g_listen, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        listen(g_listen, 16) != 0 || getsockname(g_listen, (struct sockaddr *)&sa, &sl) != 0)
        return -1;
    g_port = ntohs(sa.sin_port);
    if (pipe(g_stop_pipe) != 0 || pthread_create(&g_server, NULL, server_main, NULL) != 0)
        return -1;
    return 0;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int group_teardown(void **state)
{
    (void)state;
    xmlcheck_schema_free(g_schema);
    if (g_stop_pipe[1] >= 0) {
        ssize_t sent = write(g_stop_pipe[1], "s", 1);
        (void)sent;
        pthread_join(g_server, NULL);
        close(g_stop_pipe[0]);
        close(g_stop_pipe[1]);
    }
    if (g_listen >= 0)
        close(g_listen);
    xmlSetExternalEntityLoader(g_module_loader);
    xmlcheck_global_cleanup();
    if (g_dir[0] != '\0')
        nftw(g_dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static int setup_xc(void **state)
{
    struct xmlcheck *xc = xmlcheck_new();
    if (xc == NULL)
        return -1;
    *state = xc;
    atomic_store(&g_loads, 0);
    return 0;
}

static int teardown_xc(void **state)
{
    xmlcheck_free(*state);
    return 0;
}

/* Every result must be sendable as text/plain: one line, printable ASCII,
 * and format must name line and column. */
static void assert_clean(const struct xmlcheck_result *r)
{
    size_t n = strnlen(r->message, sizeof r->message);
    assert_true(n < sizeof r->message);
    assert_true(n > 0);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)r->message[i];
        if (c < 0x20 || c > 0x7e)
            fail_msg("unprintable byte 0x%02x in \"%s\"", c, r->message);
    }
    assert_int_not_equal(r->message[n - 1], ' ');
    char buf[XMLCHECK_MSG_LEN + 64];
    assert_true(xmlcheck_format(r, buf, sizeof buf) > 0);
    assert_non_null(strstr(buf, "column"));
}

/* Run BODY (LEN bytes) and check status and, unless ANY_LINE, the line. */
static struct xmlcheck_result check_n(struct xmlcheck *xc, const char *body, size_t len,
                                      const char *root, const struct xmlcheck_schema *schema,
                                      enum xmlcheck_status want, int line)
{
    struct xmlcheck_result r;
    memset(&r, 0x5a, sizeof r);
    enum xmlcheck_status st = xmlcheck_run(xc, body, len, root, schema, &r);
    if (st != r.status)
        fail_msg("returned %d but res->status is %d", st, r.status);
    if (st != want)
        fail_msg("status %d, expected %d; line %d, column %d: %.200s", st, want, r.line, r.column,
                 r.message);
    if (line != ANY_LINE && r.line != line)
        fail_msg("line %d, expected %d: %.200s", r.line, line, r.message);
    assert_clean(&r);
    return r;
}

static struct xmlcheck_result check(struct xmlcheck *xc, const char *body, const char *root,
                                    const struct xmlcheck_schema *schema, enum xmlcheck_status want,
                                    int line)
{
    return check_n(xc, body, strlen(body), root, schema, want, line);
}

#define LIT(s) s, sizeof(s) - 1

/* ------------------------------------------------------------------------ */

static void test_wellformed(void **state)
{
    struct xmlcheck *xc = *state;
    static const char *const docs[] = {
        "<order><id>1</id></order>",
        "<?xml version=\"1.0\"?>\n<order><id>1</id></order>\n",
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\r\n<a/>",
        "<a>caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xe6\x97\xa5\xe6\x9c\xac</a>",
        "<\xc3\xa9l\xc3\xa9ment attr=\"\xe2\x82\xac\"/>",
        "<a><![CDATA[<not> & a tag]]></a>",
        "<a xmlns=\"urn:x\" xmlns:p=\"urn:p\"><p:b p:c=\"1\"/><d/></a>",
        "<!-- before --><?pi data?><a>&amp;&lt;&gt;&quot;&apos;&#65;&#x20AC;</a><!-- after -->\n",
        "\xef\xbb\xbf<a/>",
        "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><a>caf\xe9</a>",
        "<a/>",
        "<a/>\n",
        " <a></a>",
    };
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        struct xmlcheck_result r = check(xc, docs[i], NULL, NULL, XMLCHECK_OK, 0);
        assert_int_equal(r.column, 0);
        assert_string_equal(r.message, "ok");
    }
}

static void test_utf16_bom(void **state)
{
    struct xmlcheck *xc = *state;
    /* "<a>é</a>" in UTF-16LE and UTF-16BE, each with its BOM */
    check_n(xc, LIT("\xff\xfe<\0a\0>\0\xe9\0<\0/\0a\0>\0"), NULL, NULL, XMLCHECK_OK, 0);
    check_n(xc, LIT("\xfe\xff\0<\0a\0>\0\xe9\0<\0/\0a\0>"), NULL, NULL, XMLCHECK_OK, 0);
    /* with a declaration, and the root check still sees the name */
    check_n(xc,
            LIT("\xff\xfe<\0?\0x\0m\0l\0 \0v\0e\0r\0s\0i\0o\0n\0=\0'\0\x31\0.\0\x30\0'\0 \0"
                "e\0n\0c\0o\0d\0i\0n\0g\0=\0'\0U\0T\0F\0-\0\x31\0\x36\0'\0?\0>\0"
                "<\0o\0r\0d\0e\0r\0/\0>\0"),
            "order", NULL, XMLCHECK_OK, 0);
    /* malformed UTF-16 is malformed */
    check_n(xc, LIT("\xff\xfe<\0a\0>\0<\0/\0b\0>\0"), NULL, NULL, XMLCHECK_MALFORMED, 1);
}

static void test_malformed_positions(void **state)
{
    struct xmlcheck *xc = *state;
    struct xmlcheck_result r;
    r = check(xc, "<?xml version=\"1.0\"?>\n<order>\n  <id>1</idx>\n</order>\n", NULL, NULL,
              XMLCHECK_MALFORMED, 3);
    assert_int_equal(r.column, 14);
    assert_non_null(strstr(r.message, "mismatch"));
    r = check(xc, "<a><b></a>", NULL, NULL, XMLCHECK_MALFORMED, 1);
    assert_int_equal(r.column, 11);
    r = check(xc, "not xml at all", NULL, NULL, XMLCHECK_MALFORMED, 1);
    assert_int_equal(r.column, 1);
    r = check(xc, "<a>\n\n<b>unclosed", NULL, NULL, XMLCHECK_MALFORMED, 3);
    assert_string_equal(r.message, "Premature end of data in tag b");
    r = check(xc, "<a/>\n<b/>", NULL, NULL, XMLCHECK_MALFORMED, 2);
    assert_non_null(strstr(r.message, "Extra content"));
    check(xc, "<a>&undefined;</a>", NULL, NULL, XMLCHECK_MALFORMED, 1);
    check(xc, "<a b=\"1\" b=\"2\"/>", NULL, NULL, XMLCHECK_MALFORMED, 1);
    check(xc, "<a>\x01</a>", NULL, NULL, XMLCHECK_MALFORMED, 1);
    check_n(xc, LIT("<a>\0</a>"), NULL, NULL, XMLCHECK_MALFORMED, 1);
    /* not namespace-well-formed is not well-formed */
    r = check(xc, "<x:a/>", NULL, NULL, XMLCHECK_MALFORMED, 1);
    assert_non_null(strstr(r.message, "Namespace prefix x"));
    /* only a prolog, no element */
    check(xc, "<?xml version=\"1.0\"?>\n<!-- nothing -->\n", NULL, NULL, XMLCHECK_MALFORMED,
          ANY_LINE);
}

static void test_bad_encoding(void **state)
{
    struct xmlcheck *xc = *state;
    struct xmlcheck_result r;
    r = check(xc, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<a>\xff\xfe</a>", NULL, NULL,
              XMLCHECK_MALFORMED, 2);
    /* libxml2 names the bytes in hex; the bytes themselves never appear */
    assert_non_null(strstr(r.message, "0xFF"));
    /* no declaration means UTF-8 */
    check(xc, "<a>caf\xe9</a>", NULL, NULL, XMLCHECK_MALFORMED, 1);
    /* overlong and surrogate encodings */
    check(xc, "<a>\xc0\xaf</a>", NULL, NULL, XMLCHECK_MALFORMED, 1);
    check(xc, "<a>\xed\xa0\x80</a>", NULL, NULL, XMLCHECK_MALFORMED, 1);
    /* an unknown declared encoding */
    check(xc, "<?xml version=\"1.0\" encoding=\"no-such-charset\"?><a/>", NULL, NULL,
          XMLCHECK_MALFORMED, 1);
}

static void test_empty(void **state)
{
    struct xmlcheck *xc = *state;
    struct xmlcheck_result r;
    r = check_n(xc, "", 0, NULL, NULL, XMLCHECK_MALFORMED, 1);
    assert_string_equal(r.message, "Document is empty");
    check_n(xc, NULL, 0, NULL, NULL, XMLCHECK_MALFORMED, 1);
    check_n(xc, NULL, 0, NULL, g_schema, XMLCHECK_MALFORMED, 1);
    check(xc, " \n\t ", NULL, NULL, XMLCHECK_MALFORMED, ANY_LINE);
    check(xc, "<", NULL, NULL, XMLCHECK_MALFORMED, 1);
    check(xc, "<a", NULL, NULL, XMLCHECK_MALFORMED, 1);
    /* NULL with a length is a caller's bug, refused rather than read */
    check_n(xc, NULL, 10, NULL, NULL, XMLCHECK_MALFORMED, 0);
}

/* ---- DOCTYPE and what it could have carried ----------------------------- */

static void expect_doctype(struct xmlcheck *xc, const char *body, int line)
{
    const struct xmlcheck_schema *schemas[] = {NULL, g_schema};
    const char *roots[] = {NULL, "r"};
    for (size_t i = 0; i < 2; i++) {
        for (size_t j = 0; j < 2; j++) {
            struct xmlcheck_result r =
                check(xc, body, roots[j], schemas[i], XMLCHECK_MALFORMED, line);
            assert_string_equal(r.message, "DOCTYPE is not allowed");
            char buf[XMLCHECK_MSG_LEN + 64];
            assert_true(xmlcheck_format(&r, buf, sizeof buf) > 0);
            assert_null(strstr(buf, SECRET));
        }
    }
    assert_int_equal(atomic_load(&g_loads), 0);
    assert_false(listener_touched());
}

static void test_doctype_plain(void **state)
{
    struct xmlcheck *xc = *state;
    expect_doctype(xc, "<!DOCTYPE order>\n<order/>", 1);
    expect_doctype(xc, "<?xml version=\"1.0\"?>\n\n<!DOCTYPE r [\n]>\n<r/>", 3);
    /* the parser stopped mid-document is fine for the next body */
    check(xc, "<r/>", "r", NULL, XMLCHECK_OK, 0);
}

static void test_xxe_file(void **state)
{
    struct xmlcheck *xc = *state;
    char body[1024];
    snprintf(body, sizeof body,
             "<?xml version=\"1.0\"?>\n<!DOCTYPE r [<!ENTITY x SYSTEM \"file://%s\">]>\n"
             "<r>&x;</r>",
             g_secret);
    expect_doctype(xc, body, 2);
    snprintf(body, sizeof body, "<!DOCTYPE r [<!ENTITY x SYSTEM \"%s\">]><r a=\"&x;\">&x;</r>",
             g_secret);
    expect_doctype(xc, body, 1);
    expect_doctype(xc,
                   "<?xml version=\"1.0\"?>\n"
                   "<!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>\n<r>&x;</r>",
                   2);
}

static void test_xxe_http(void **state)
{
    struct xmlcheck *xc = *state;
    char body[512];
    snprintf(body, sizeof body,
             "<!DOCTYPE r [<!ENTITY x SYSTEM \"http://127.0.0.1:%d/x\">]><r>&x;</r>", g_port);
    double t0 = now_ms();
    expect_doctype(xc, body, 1);
    double ms = now_ms() - t0;
    print_message("  xxe over http: 4 runs in %.3f ms, no connection\n", ms);
    assert_true(ms < 1000.0);
}

static void test_xxe_parameter_entity(void **state)
{
    struct xmlcheck *xc = *state;
    char body[512];
    snprintf(body, sizeof body,
             "<!DOCTYPE r [<!ENTITY %% p SYSTEM \"http://127.0.0.1:%d/p.dtd\"> %%p;]><r/>", g_port);
    expect_doctype(xc, body, 1);
    snprintf(body, sizeof body, "<!DOCTYPE r [<!ENTITY %% p SYSTEM \"%s\"> %%p;]><r>&x;</r>",
             g_dtd);
    expect_doctype(xc, body, 1);
}

static void test_external_dtd(void **state)
{
    struct xmlcheck *xc = *state;
    char body[512];
    snprintf(body, sizeof body, "<!DOCTYPE r SYSTEM \"http://127.0.0.1:%d/r.dtd\"><r>&x;</r>",
             g_port);
    expect_doctype(xc, body, 1);
    snprintf(body, sizeof body, "<!DOCTYPE r SYSTEM \"%s\"><r>&x;</r>", g_dtd);
    expect_doctype(xc, body, 1);
    snprintf(body, sizeof body,
             "<!DOCTYPE r PUBLIC \"-//X//DTD X//EN\" \"http://127.0.0.1:%d/r.dtd\"><r/>", g_port);
    expect_doctype(xc, body, 1);
}

static void test_billion_laughs(void **state)
{
    struct xmlcheck *xc = *state;
    static const char lol[] =
        "<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n <!ENTITY lol \"lol\">\n"
        " <!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\n"
        " <!ENTITY lol2 \"&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;\">\n"
        " <!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">\n"
        " <!ENTITY lol4 \"&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;\">\n"
        " <!ENTITY lol5 \"&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;\">\n"
        " <!ENTITY lol6 \"&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;\">\n"
        " <!ENTITY lol7 \"&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;\">\n"
        " <!ENTITY lol8 \"&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;\">\n"
        " <!ENTITY lol9 \"&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;\">\n"
        "]>\n<lolz>&lol9;</lolz>\n";
    double t0 = now_ms();
    struct xmlcheck_result r = check(xc, lol, NULL, NULL, XMLCHECK_MALFORMED, 2);
    double ms = now_ms() - t0;
    print_message("  billion laughs refused in %.3f ms\n", ms);
    assert_string_equal(r.message, "DOCTYPE is not allowed");
    /* a DoS guard, not a benchmark: generous */
    assert_true(ms < 1000.0);
    t0 = now_ms();
    check(xc, lol, NULL, g_schema, XMLCHECK_MALFORMED, 2);
    assert_true(now_ms() - t0 < 1000.0);
}

/* ---- depth -------------------------------------------------------------- */

static char *nested(int depth, bool closed, size_t *len)
{
    char *b = malloc((size_t)depth * 7 + 1);
    assert_non_null(b);
    size_t n = 0;
    for (int i = 0; i < depth; i++)
        n += (size_t)sprintf(b + n, "<a>");
    for (int i = 0; closed && i < depth; i++)
        n += (size_t)sprintf(b + n, "</a>");
    *len = n;
    return b;
}

static void test_depth(void **state)
{
    struct xmlcheck *xc = *state;
    size_t len;
    char *b = nested(256, true, &len);
    check_n(xc, b, len, NULL, NULL, XMLCHECK_OK, 0);
    free(b);
    b = nested(257, true, &len);
    struct xmlcheck_result r = check_n(xc, b, len, NULL, NULL, XMLCHECK_MALFORMED, 1);
    assert_non_null(strstr(r.message, "depth"));
    free(b);

    /* 10,000 deep, closed (the push parser alone would accept it) and not */
    for (int closed = 0; closed <= 1; closed++) {
        b = nested(10000, closed, &len);
        double t0 = now_ms();
        r = check_n(xc, b, len, NULL, NULL, XMLCHECK_MALFORMED, 1);
        check_n(xc, b, len, NULL, g_schema, XMLCHECK_MALFORMED, 1);
        double ms = now_ms() - t0;
        print_message("  10,000 deep (%s): refused twice in %.3f ms\n", closed ? "closed" : "open",
                      ms);
        assert_non_null(strstr(r.message, "depth"));
        assert_true(ms < 1000.0);
        free(b);
    }
    /* a whole megabyte of it stops after one piece */
    b = nested(350000, false, &len);
    double t0 = now_ms();
    check_n(xc, b, len, NULL, g_schema, XMLCHECK_MALFORMED, 1);
    print_message("  1 MB of open tags refused in %.3f ms\n", now_ms() - t0);
    free(b);
    check(xc, "<order><id>1</id></order>", "order", g_schema, XMLCHECK_OK, 0);
}

static void test_xinclude_not_processed(void **state)
{
    struct xmlcheck *xc = *state;
    char body[512];
    snprintf(body, sizeof body,
             "<r xmlns:xi=\"http://www.w3.org/2001/XInclude\">"
             "<xi:include href=\"%s\" parse=\"text\"/>"
             "<xi:include href=\"http://127.0.0.1:%d/x.xml\"/></r>",
             g_secret, g_port);
    check(xc, body, "r", NULL, XMLCHECK_OK, 0);
    assert_int_equal(atomic_load(&g_loads), 0);
    assert_false(listener_touched());
}

static void test_schema_location_hint_ignored(void **state)
{
    struct xmlcheck *xc = *state;
    char body[512];
    snprintf(body, sizeof body,
             "<order xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" "
             "xsi:noNamespaceSchemaLocation=\"http://127.0.0.1:%d/o.xsd\"><id>7</id></order>",
             g_port);
    check(xc, body, NULL, g_schema, XMLCHECK_OK, 0);
    assert_int_equal(atomic_load(&g_loads), 0);
    assert_false(listener_touched());
}

/* ---- root ---------------------------------------------------------------- */

static void test_root(void **state)
{
    struct xmlcheck *xc = *state;
    check(xc, "<order><x/></order>", "order", NULL, XMLCHECK_OK, 0);
    check(xc, "<p:order xmlns:p=\"urn:p\"/>", "order", NULL, XMLCHECK_OK, 0);
    check(xc, "<anything/>", "", NULL, XMLCHECK_OK, 0);
    check(xc, "<anything/>", NULL, NULL, XMLCHECK_OK, 0);
    struct xmlcheck_result r = check(xc, "<?xml version=\"1.0\"?>\n<invoice><id>1</id></invoice>",
                                     "order", NULL, XMLCHECK_INVALID, 2);
    assert_string_equal(r.message, "root element is <invoice>, expected <order>");
    assert_true(r.column > 0);
    /* an inner element of the right name does not count */
    check(xc, "<wrap><order/></wrap>", "order", NULL, XMLCHECK_INVALID, 1);
    /* wrong root and also malformed further on: 400 wins */
    check(xc, "<invoice>\n<id>1</invoice>", "order", NULL, XMLCHECK_MALFORMED, 2);
    /* a non-ASCII root name comes out printable */
    r = check(xc, "<r\xc3\xa9sum\xc3\xa9/>", "order", NULL, XMLCHECK_INVALID, 1);
    assert_string_equal(r.message, "root element is <r?\?sum?\?>, expected <order>");
}

/* ---- schema -------------------------------------------------------------- */

static void test_schema(void **state)
{
    struct xmlcheck *xc = *state;
    struct xmlcheck_result r;
    check(xc, "<order>\n  <id>42</id>\n  <item>x</item>\n</order>\n", NULL, g_schema, XMLCHECK_OK,
          0);
    r = check(xc, "<order>\n  <id>abc</id>\n</order>\n", NULL, g_schema, XMLCHECK_INVALID, 2);
    assert_non_null(strstr(r.message, "'abc' is not a valid value"));
    assert_true(r.column > 0);
    r = check(xc, "<order>\n  <item>x</item>\n</order>\n", NULL, g_schema, XMLCHECK_INVALID, 2);
    assert_non_null(strstr(r.message, "Expected is ( id )"));
    r = check(xc, "<order>\n</order>\n", NULL, g_schema, XMLCHECK_INVALID, 2);
    assert_non_null(strstr(r.message, "Missing child element"));
    r = check(xc, "<other/>", NULL, g_schema, XMLCHECK_INVALID, 1);
    assert_non_null(strstr(r.message, "No matching global declaration"));
    /* root and schema together: the root message, more to the point */
    r = check(xc, "<other/>", "order", g_schema, XMLCHECK_INVALID, 1);
    assert_string_equal(r.message, "root element is <other>, expected <order>");
    /* malformed on a schema route is still malformed */
    check(xc, "<order><id>1</id>", NULL, g_schema, XMLCHECK_MALFORMED, 1);
    check(xc, "<order><id>abc</id></ordr>", NULL, g_schema, XMLCHECK_MALFORMED, 1);
    check(xc, "<order><id>1</id></order><x/>", NULL, g_schema, XMLCHECK_MALFORMED, 1);
    check(xc, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<order><id>\xff</id></order>", NULL,
          g_schema, XMLCHECK_MALFORMED, 2);
    /* and the next good one is fine */
    check(xc, "<order><id>1</id></order>", NULL, g_schema, XMLCHECK_OK, 0);
    assert_int_equal(atomic_load(&g_loads), 0);
}

static void test_schema_load(void **state)
{
    (void)state;
    char err[256], path[400];
    struct xmlcheck_schema *s;

    snprintf(path, sizeof path, "%s/missing.xsd", g_dir);
    err[0] = '\0';
    assert_null(xmlcheck_schema_load(path, err, sizeof err));
    assert_true(err[0] != '\0');

    err[0] = '\0';
    assert_null(xmlcheck_schema_load("http://127.0.0.1:1/o.xsd", err, sizeof err));
    assert_non_null(strstr(err, "local"));
    assert_null(xmlcheck_schema_load("", err, sizeof err));

    snprintf(path, sizeof path, "%s/broken.xsd", g_dir);
    write_file(path, "<xs:schema xmlns:xs=\"http://www.w3.org/2001/XMLSchema\">\n<xs:element\n");
    err[0] = '\0';
    assert_null(xmlcheck_schema_load(path, err, sizeof err));
    assert_non_null(strstr(err, "broken.xsd"));

    /* an include over the network is refused, and nothing connects */
    snprintf(path, sizeof path, "%s/remote.xsd", g_dir);
    char text[512];
    snprintf(text, sizeof text,
             "<xs:schema xmlns:xs=\"http://www.w3.org/2001/XMLSchema\">\n"
             "<xs:include schemaLocation=\"http://127.0.0.1:%d/inc.xsd\"/>\n"
             "<xs:element name=\"a\" type=\"xs:string\"/>\n</xs:schema>\n",
             g_port);
    write_file(path, text);
    err[0] = '\0';
    assert_null(xmlcheck_schema_load(path, err, sizeof err));
    assert_non_null(strstr(err, "refused to load http://127.0.0.1:"));
    assert_false(listener_touched());

    /* a local include works */
    char inc[400];
    snprintf(inc, sizeof inc, "%s/inc.xsd", g_dir);
    write_file(inc, "<xs:schema xmlns:xs=\"http://www.w3.org/2001/XMLSchema\">\n"
                    "<xs:element name=\"b\" type=\"xs:int\"/>\n</xs:schema>\n");
    snprintf(path, sizeof path, "%s/local.xsd", g_dir);
    write_file(path, "<xs:schema xmlns:xs=\"http://www.w3.org/2001/XMLSchema\">\n"
                     "<xs:include schemaLocation=\"inc.xsd\"/>\n</xs:schema>\n");
    s = xmlcheck_schema_load(path, err, sizeof err);
    if (s == NULL)
        fail_msg("local include: %s", err);
    struct xmlcheck *xc = xmlcheck_new();
    assert_non_null(xc);
    check(xc, "<b>12</b>", NULL, s, XMLCHECK_OK, 0);
    check(xc, "<b>x</b>", NULL, s, XMLCHECK_INVALID, 1);
    xmlcheck_free(xc);
    xmlcheck_schema_free(s);
}

/* More schemas than the per-checker cache holds, used in turn by one
 * checker: each body is checked against its own schema. */
static void test_many_schemas(void **state)
{
    struct xmlcheck *xc = *state;
    enum { NS = 11 };
    struct xmlcheck_schema *s[NS];
    for (int i = 0; i < NS; i++) {
        char path[400], text[512], err[256];
        snprintf(path, sizeof path, "%s/e%d.xsd", g_dir, i);
        snprintf(text, sizeof text,
                 "<xs:schema xmlns:xs=\"http://www.w3.org/2001/XMLSchema\">\n"
                 "<xs:element name=\"e%d\" type=\"xs:%s\"/>\n</xs:schema>\n",
                 i, i % 2 ? "int" : "boolean");
        write_file(path, text);
        s[i] = xmlcheck_schema_load(path, err, sizeof err);
        if (s[i] == NULL)
            fail_msg("%s: %s", path, err);
    }
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < NS; i++) {
            char body[64];
            snprintf(body, sizeof body, "<e%d>%s</e%d>", i, i % 2 ? "12" : "true", i);
            check(xc, body, NULL, s[i], XMLCHECK_OK, 0);
            /* right name, other schema's type */
            snprintf(body, sizeof body, "<e%d>%s</e%d>", i, i % 2 ? "true" : "12", i);
            check(xc, body, NULL, s[i], XMLCHECK_INVALID, 1);
            /* another schema's element */
            snprintf(body, sizeof body, "<e%d>1</e%d>", (i + 1) % NS, (i + 1) % NS);
            check(xc, body, NULL, s[i], XMLCHECK_INVALID, 1);
        }
    }
    for (int i = 0; i < NS; i++)
        xmlcheck_schema_free(s[i]);
}

/* The module's loader itself, outside any request: local files yes, network
 * no. */
static void test_entity_loader(void **state)
{
    (void)state;
    xmlParserCtxtPtr ctxt = xmlNewParserCtxt();
    assert_non_null(ctxt);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/x", g_port);
    assert_null(xmlLoadExternalEntity(url, NULL, ctxt));
    snprintf(url, sizeof url, "ftp://127.0.0.1:%d/x", g_port);
    assert_null(xmlLoadExternalEntity(url, NULL, ctxt));
    assert_false(listener_touched());
    xmlParserInputPtr in = xmlLoadExternalEntity(g_secret, NULL, ctxt);
    assert_non_null(in);
    xmlFreeInputStream(in);
    xmlFreeParserCtxt(ctxt);
}

/* ---- reuse, size, threads ------------------------------------------------ */

struct sample {
    const char *body;
    const char *root;
    bool schema;
    enum xmlcheck_status want;
    int line;
};

static const struct sample SAMPLES[] = {
    {"<order><id>1</id></order>", "order", true, XMLCHECK_OK, 0},
    {"<a>\n<b></a>", NULL, false, XMLCHECK_MALFORMED, 2},
    {"<order>\n<id>1</id>\n</order>", NULL, true, XMLCHECK_OK, 0},
    {"<order>\n  <id>-5</id>\n</order>", NULL, true, XMLCHECK_INVALID, 2},
    {"<x/>", NULL, false, XMLCHECK_OK, 0},
    {"<!DOCTYPE x>\n<x/>", NULL, false, XMLCHECK_MALFORMED, 1},
    {"<order><id>2</id><item>y</item></order>", NULL, true, XMLCHECK_OK, 0},
    {"\n\n\n<invoice/>", "order", false, XMLCHECK_INVALID, 4},
    {"<order><id>3</id></order>", "order", false, XMLCHECK_OK, 0},
    {"<order><id>1</id>", NULL, true, XMLCHECK_MALFORMED, 1},
};
#define NSAMPLES (sizeof SAMPLES / sizeof SAMPLES[0])

static void test_reuse(void **state)
{
    struct xmlcheck *xc = *state;
    for (int i = 0; i < 1000; i++) {
        const struct sample *s = &SAMPLES[(size_t)i % NSAMPLES];
        check(xc, s->body, s->root, s->schema ? g_schema : NULL, s->want, s->line);
    }
    assert_int_equal(atomic_load(&g_loads), 0);
}

/* Two checkers on one thread, interleaved: findings land in the right one, and
 * the thread's own error hook is back after each run. */
static int g_foreign_errors;
static void foreign_hook(void *ctx, xmlErrorPtr err)
{
    (void)ctx;
    (void)err;
    g_foreign_errors++;
}

static void test_two_checkers_one_thread(void **state)
{
    struct xmlcheck *xc = *state;
    struct xmlcheck *other = xmlcheck_new();
    assert_non_null(other);
    xmlSetStructuredErrorFunc(NULL, foreign_hook);
    g_foreign_errors = 0;
    for (int i = 0; i < 50; i++) {
        check(xc, "<a>\n\n<b></a>", NULL, NULL, XMLCHECK_MALFORMED, 3);
        check(other, "<order><id>1</id></order>", NULL, g_schema, XMLCHECK_OK, 0);
        check(other, "<a></b>", NULL, NULL, XMLCHECK_MALFORMED, 1);
        check(xc, "<order>\n<id>0</id></order>", NULL, g_schema, XMLCHECK_INVALID, 2);
    }
    assert_ptr_equal(xmlStructuredError, foreign_hook);
    assert_int_equal(g_foreign_errors, 0);
    xmlSetStructuredErrorFunc(NULL, NULL);
    xmlcheck_free(other);
}

static void test_large(void **state)
{
    struct xmlcheck *xc = *state;
    size_t cap = 3u << 20, n = 0;
    char *b = malloc(cap);
    assert_non_null(b);
    n += (size_t)sprintf(b, "<order>\n<id>1</id>\n");
    int lines = 2;
    /* a 3-byte character lands across every piece boundary at some point */
    while (n < (1u << 20)) {
        n += (size_t)sprintf(b + n, "<item>%.*s\xe2\x82\xac</item>\n", (int)(lines % 7), "xxxxxxx");
        lines++;
    }
    size_t body_end = n;
    n += (size_t)sprintf(b + n, "</order>\n");
    double t0 = now_ms();
    check_n(xc, b, n, "order", g_schema, XMLCHECK_OK, 0);
    double with = now_ms() - t0;
    t0 = now_ms();
    check_n(xc, b, n, "order", NULL, XMLCHECK_OK, 0);
    print_message("  %zu bytes: %.2f ms well-formed only, %.2f ms with the schema\n", n,
                  now_ms() - t0, with);
    /* the error's line is right after many pieces */
    n = body_end + (size_t)sprintf(b + body_end, "<item>x</itm>\n</order>\n");
    check_n(xc, b, n, NULL, NULL, XMLCHECK_MALFORMED, lines + 1);
    n = body_end + (size_t)sprintf(b + body_end, "<id>9</id>\n</order>\n");
    check_n(xc, b, n, NULL, g_schema, XMLCHECK_INVALID, lines + 1);
    free(b);
}

/* Bodies with unique names must not make a long-lived checker grow for ever
 * (the parser dictionary keeps every name; the module recycles it). */
static void test_unique_names_bounded(void **state)
{
    struct xmlcheck *xc = *state;
    char body[2200];
    struct xmlcheck_result r;
    size_t base = 0;
    for (int i = 0; i < 12000; i++) {
        int n = snprintf(body, sizeof body, "<e%01000d a%01000d=\"1\"/>", i, i);
        if (xmlcheck_run(xc, body, (size_t)n, NULL, i % 2 ? g_schema : NULL, &r) !=
            (i % 2 ? XMLCHECK_INVALID : XMLCHECK_OK))
            fail_msg("run %d: %d %s", i, r.status, r.message);
        if (i == 100)
            base = mallinfo2().uordblks;
    }
    size_t end = mallinfo2().uordblks;
    print_message("  heap in use after 100 runs %zu KiB, after 12,000 %zu KiB\n", base >> 10,
                  end >> 10);
    /* 0 under sanitizers and valgrind, whose allocators mallinfo does not see */
    if (base != 0)
        assert_true(end < base + (8u << 20));
}

struct thread_arg {
    int iterations; /* per thread */
    int wrong;      /* answers that were not right */
    int done;       /* runs made */
};

static void *thread_main(void *p)
{
    struct thread_arg *a = p;
    struct xmlcheck *xc = xmlcheck_new();
    if (xc == NULL) {
        a->wrong = -1;
        return NULL;
    }
    for (int i = 0; i < a->iterations; i++) {
        const struct sample *s = &SAMPLES[(size_t)i % NSAMPLES];
        struct xmlcheck_result r;
        enum xmlcheck_status st =
            xmlcheck_run(xc, s->body, strlen(s->body), s->root, s->schema ? g_schema : NULL, &r);
        if (st != s->want || r.line != s->line)
            a->wrong++;
        a->done++;
    }
    xmlcheck_free(xc);
    return NULL;
}

static void test_threads_shared_schema(void **state)
{
    (void)state;
    enum { N = 4 };
    pthread_t t[N];
    struct thread_arg args[N];
    for (int i = 0; i < N; i++) {
        args[i] = (struct thread_arg){.iterations = 2000};
        assert_int_equal(pthread_create(&t[i], NULL, thread_main, &args[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(args[i].wrong, 0);
        assert_int_equal(args[i].done, 2000);
    }
    assert_int_equal(atomic_load(&g_loads), 0);
}

/* ---- the scan's limits: each body below is well-formed, and passed before
 * the limits (libxml2 took seconds over the large ones) -------------------- */

/* A growing body for the limit tests. */
struct text {
    char *p;
    size_t n, cap;
};

static void add(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add(struct text *t, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int w = vsnprintf(t->p + t->n, t->cap - t->n, fmt, ap);
        va_end(ap);
        assert_true(w >= 0);
        if ((size_t)w < t->cap - t->n) {
            t->n += (size_t)w;
            return;
        }
        t->cap = t->cap * 2 + (size_t)w + 64;
        t->p = realloc(t->p, t->cap);
        assert_non_null(t->p);
    }
}

/* <r> with N attributes (prefixed by PFX, "" for none) on one element. */
static struct text attrs_doc(int n, const char *pfx)
{
    struct text t = {0};
    add(&t, "<r xmlns:q='urn:q'>\n<e");
    for (int i = 0; i < n; i++)
        add(&t, " %sa%d='%d'", pfx, i, i);
    add(&t, "/></r>");
    return t;
}

/* Refused, the message naming WHAT, at LINE and COLUMN, in well under the
 * time libxml2 took (printed, not asserted). */
static void assert_refused(struct xmlcheck *xc, const struct text *t, const char *what, int line,
                           int column)
{
    double t0 = now_ms();
    struct xmlcheck_result r = check_n(xc, t->p, t->n, NULL, NULL, XMLCHECK_MALFORMED, line);
    double ms = now_ms() - t0;
    if (strstr(r.message, what) == NULL)
        fail_msg("\"%s\" does not say \"%s\"", r.message, what);
    if (column > 0 && r.column != column)
        fail_msg("column %d, expected %d: %s", r.column, column, r.message);
    /* the same again, with a schema: the limit comes before validation */
    struct xmlcheck_result again =
        check_n(xc, t->p, t->n, "order", g_schema, XMLCHECK_MALFORMED, line);
    assert_string_equal(again.message, r.message);
    assert_int_equal(again.column, r.column);
    print_message("  %zu bytes refused in %.2f ms: %s\n", t->n, ms, r.message);
}

static void test_limit_attributes(void **state)
{
    struct xmlcheck *xc = *state;
    struct text t = attrs_doc(128, "");
    check_n(xc, t.p, t.n, NULL, NULL, XMLCHECK_OK, 0);
    free(t.p);
    t = attrs_doc(128, "q:");
    check_n(xc, t.p, t.n, NULL, NULL, XMLCHECK_OK, 0);
    free(t.p);
    /* the 129th, on line 2: " a128=" starts at column 3 + 128 attributes */
    t = attrs_doc(129, "");
    int col = 3;
    for (int i = 0; i < 128; i++)
        col += snprintf(NULL, 0, " a%d='%d'", i, i);
    assert_refused(xc, &t, "more than 128 attributes (the limit per element) on element <e>", 2,
                   col + 1);
    free(t.p);
    /* the document: 80,000 on one element (libxml2 alone: 3.5 s) */
    t = attrs_doc(80000, "");
    assert_refused(xc, &t, "more than 128 attributes", 2, col + 1);
    free(t.p);
    /* 128 of each kind on many elements is within the limits */
    t = (struct text){0};
    add(&t, "<r xmlns:q='urn:q'>");
    for (int e = 0; e < 50; e++) {
        add(&t, "<e");
        for (int i = 0; i < 128; i++)
            add(&t, " a%d='' q:a%d=''", i, i);
        add(&t, "/>");
    }
    add(&t, "</r>");
    /* 128 plain and 128 prefixed are 256 attributes */
    assert_refused(xc, &t, "more than 128 attributes", 1, 0);
    free(t.p);
}

/* <r> with N namespace declarations on one element (the default one first). */
static struct text decls_doc(int n)
{
    struct text t = {0};
    add(&t, "<r xmlns='urn:d'");
    for (int i = 1; i < n; i++)
        add(&t, " xmlns:p%d='urn:%d'", i, i);
    add(&t, "/>");
    return t;
}

static void test_limit_ns_decls(void **state)
{
    struct xmlcheck *xc = *state;
    struct text t = decls_doc(64);
    check_n(xc, t.p, t.n, NULL, NULL, XMLCHECK_OK, 0);
    free(t.p);
    t = decls_doc(65);
    assert_refused(
        xc, &t, "more than 64 namespace declarations (the limit per element) on element <r>", 1, 0);
    free(t.p);
    t = decls_doc(80000);
    assert_refused(xc, &t, "more than 64 namespace declarations", 1, 0);
    free(t.p);
}

/* LEVELS nested elements declaring PER prefixes each, the innermost with
 * attributes in the outermost namespace. */
static struct text scope_doc(int levels, int per)
{
    struct text t = {0};
    add(&t, "<r>");
    for (int l = 0; l < levels; l++) {
        add(&t, "\n<e");
        for (int j = 0; j < per; j++)
            add(&t, " xmlns:n%d_%d='urn:%d:%d'", l, j, l, j);
        add(&t, ">");
    }
    add(&t, "<x n0_0:a='1' n0_0:b='2'/>");
    for (int l = 0; l < levels; l++)
        add(&t, "</e>");
    add(&t, "</r>");
    return t;
}

static void test_limit_ns_scope(void **state)
{
    struct xmlcheck *xc = *state;
    struct text t = scope_doc(4, 64);
    check_n(xc, t.p, t.n, NULL, NULL, XMLCHECK_OK, 0);
    free(t.p);
    /* the 257th in scope, on the fifth element's line */
    t = scope_doc(5, 52);
    assert_refused(
        xc, &t, "more than 256 namespace declarations in scope (the limit) at element <e>", 6, 0);
    free(t.p);
    /* declarations leave scope with their element: many siblings of 64 each */
    t = (struct text){0};
    add(&t, "<r>");
    for (int e = 0; e < 100; e++) {
        add(&t, "<e");
        for (int j = 0; j < 64; j++)
            add(&t, " xmlns:p%d='urn:%d'", j, e);
        add(&t, e % 2 ? "/>" : "><f p0:a=''/></e>");
    }
    add(&t, "</r>");
    check_n(xc, t.p, t.n, NULL, NULL, XMLCHECK_OK, 0);
    free(t.p);
}

/* Distinct names: N element names, then each used again, then a PI. */
static struct text names_doc(int n, bool pi)
{
    struct text t = {0};
    add(&t, "<r>\n");
    for (int i = 1; i < n; i++)
        add(&t, pi ? "<?t%d?>" : "<e%d/>", i);
    add(&t, "\n");
    for (int i = 1; i < n; i += 7)
        add(&t, "<e%d/>", pi ? 1 : i);
    add(&t, "</r>");
    return t;
}

static void test_limit_names(void **state)
{
    struct xmlcheck *xc = *state;
    /* r and e1..e9999: 10,000 */
    struct text t = names_doc(10000, false);
    for (int i = 0; i < 3; i++)
        check_n(xc, t.p, t.n, NULL, NULL, XMLCHECK_OK, 0);
    free(t.p);
    t = names_doc(10001, false);
    struct xmlcheck_result first = check_n(xc, t.p, t.n, NULL, NULL, XMLCHECK_MALFORMED, 2);
    assert_non_null(strstr(first.message, "more than 10000 distinct names"));
    /* the same verdict, same place, whatever the checker met before */
    for (int i = 0; i < 3; i++) {
        struct text other = names_doc(9000 + i, false);
        check_n(xc, other.p, other.n, NULL, NULL, XMLCHECK_OK, 0);
        free(other.p);
        struct xmlcheck_result r = check_n(xc, t.p, t.n, NULL, NULL, XMLCHECK_MALFORMED, 2);
        assert_int_equal(r.column, first.column);
        assert_string_equal(r.message, first.message);
    }
    assert_refused(xc, &t, "more than 10000 distinct names", 2, first.column);
    free(t.p);
    /* PI targets are names too (t1..t10000, r, e1) */
    t = names_doc(10001, true);
    assert_refused(xc, &t, "more than 10000 distinct names", 2, 0);
    free(t.p);
    /* 1 MiB of them (libxml2 alone: 0.8 s) */
    t = (struct text){0};
    add(&t, "<r>");
    for (int i = 0; t.n < (1u << 20); i++)
        add(&t, "<e%d/>", i);
    add(&t, "</r>");
    assert_refused(xc, &t, "more than 10000 distinct names", 1, 0);
    free(t.p);
}

/* BODY (ASCII) in UTF-16, with a BOM. */
static struct text to_utf16(const struct text *a, bool big)
{
    struct text t = {.cap = a->n * 2 + 2};
    t.p = malloc(t.cap);
    assert_non_null(t.p);
    t.p[t.n++] = big ? '\xfe' : '\xff';
    t.p[t.n++] = big ? '\xff' : '\xfe';
    for (size_t i = 0; i < a->n; i++) {
        t.p[t.n++] = big ? '\0' : a->p[i];
        t.p[t.n++] = big ? a->p[i] : '\0';
    }
    return t;
}

/* A byte scan of these would count nothing: the scan reads what libxml2
 * reads. */
static void test_limit_encodings(void **state)
{
    struct xmlcheck *xc = *state;
    struct text a = attrs_doc(10000, "");
    for (int big = 0; big <= 1; big++) {
        struct text t = to_utf16(&a, big);
        assert_refused(xc, &t, "more than 128 attributes", 2, 0);
        free(t.p);
    }
    free(a.p);
    a = attrs_doc(128, "");
    for (int big = 0; big <= 1; big++) {
        struct text t = to_utf16(&a, big);
        check_n(xc, t.p, t.n, NULL, NULL, XMLCHECK_OK, 0);
        free(t.p);
    }
    free(a.p);
    /* declared: ISO-8859-1 (e-acute in names), and UTF-16 without a BOM */
    struct text t = {0};
    add(&t, "<?xml version='1.0' encoding='ISO-8859-1'?>\n<r\xe9");
    for (int i = 0; i < 200; i++)
        add(&t, " \xe9%d=''", i);
    add(&t, "/>");
    assert_refused(xc, &t, "more than 128 attributes (the limit per element) on element <r?\?>", 2,
                   0);
    free(t.p);
    a = (struct text){0};
    add(&a, "<?xml version='1.0' encoding='UTF-16'?>");
    struct text body = attrs_doc(1000, "");
    add(&a, "%s", body.p);
    free(body.p);
    struct text bomless = to_utf16(&a, false);
    assert_refused(xc, &(struct text){.p = bomless.p + 2, .n = bomless.n - 2},
                   "more than 128 attributes", 2, 0);
    free(bomless.p);
    free(a.p);
    /* The declaration where libxml2 reads it, however far: UTF-7 named
     * after 600 blanks, every '<' written +ADw- (ASCII bytes, no tag in
     * them for a byte scan). Deep nesting and many attributes both. */
    a = (struct text){0};
    add(&a, "<?xml version='1.0'%600s encoding='UTF-7'?>+ADw-r", "");
    for (int i = 0; i < 1000; i++)
        add(&a, " a%d=''", i);
    add(&a, "/>");
    assert_refused(xc, &a, "more than 128 attributes", ANY_LINE, 0);
    free(a.p);
    a = (struct text){0};
    add(&a, "<?xml version='1.0'%600s encoding='UTF-7'?>", "");
    for (int i = 0; i < 300; i++)
        add(&a, "+ADw-a>");
    struct xmlcheck_result deep = check_n(xc, a.p, a.n, NULL, NULL, XMLCHECK_MALFORMED, ANY_LINE);
    if (strstr(deep.message, "more than 256 nested elements") == NULL)
        fail_msg("300 deep in UTF-7: \"%s\"", deep.message);
    free(a.p);
    /* EBCDIC (IBM-037): "<?xml version='1.0' encoding='IBM037'?><r a0='' ...>" */
    xmlCharEncodingHandlerPtr h = xmlFindCharEncodingHandler("IBM037");
    if (h == NULL) {
        print_message("  no IBM037 converter here: EBCDIC not tried\n");
        return;
    }
    a = (struct text){0};
    add(&a, "<?xml version='1.0' encoding='IBM037'?>\n<r");
    for (int i = 0; i < 1000; i++)
        add(&a, " a%d=''", i);
    add(&a, "/>");
    xmlBufferPtr in = xmlBufferCreate(), out = xmlBufferCreate();
    assert_int_equal(xmlBufferAdd(in, (const xmlChar *)a.p, (int)a.n), 0);
    assert_true(xmlCharEncOutFunc(h, out, in) > 0);
    t = (struct text){.p = (char *)xmlBufferContent(out), .n = (size_t)xmlBufferLength(out)};
    assert_int_equal((unsigned char)t.p[0], 0x4c); /* '<' in EBCDIC */
    assert_refused(xc, &t, "more than 128 attributes", 2, 0);
    xmlBufferFree(in);
    xmlBufferFree(out);
    xmlCharEncCloseFunc(h);
    free(a.p);
}

/* The scan tokenizes as libxml2 does: what is not a tag is not counted,
 * and libxml2's own first error before the place over a limit wins. */
static void test_limit_tokens(void **state)
{
    struct xmlcheck *xc = *state;
    struct text many = {0};
    for (int i = 0; i < 300; i++)
        add(&many, " a%d=''", i);
    /* each with the 300 attributes between its two halves */
    static const char *const halves[][2] = {
        {"<r><!-- <e", "/> --></r>"},
        {"<r><![CDATA[<e", "/>]]></r>"},
        {"<r><?pi <e", "/> ?></r>"},
        {"<r a='>' b=\"'>' e", "\"><e/></r>"},
        {"<?xml version='1.0'?><!-- - --><r>text &amp; <x/> more", "</r>"},
    };
    for (size_t i = 0; i < sizeof halves / sizeof *halves; i++) {
        struct text t = {0};
        add(&t, "%s%s%s", halves[i][0], many.p, halves[i][1]);
        check_n(xc, t.p, t.n, NULL, NULL, XMLCHECK_OK, 0);
        free(t.p);
    }
    char *d = NULL;
    /* a '>' inside a value does not end the tag */
    assert_true(asprintf(&d, "<r x='>'%s/>", many.p) > 0);
    struct text t = {.p = d, .n = strlen(d)};
    assert_refused(xc, &t, "more than 128 attributes", 1, 0);
    free(d);
    /* errors of libxml2's own, before the tag over the limit */
    assert_true(asprintf(&d, "<!DOCTYPE r>\n<r%s/>", many.p) > 0);
    struct xmlcheck_result r = check(xc, d, NULL, NULL, XMLCHECK_MALFORMED, 1);
    assert_string_equal(r.message, "DOCTYPE is not allowed");
    free(d);
    assert_true(asprintf(&d, "<r>\n<a></b>\n<r%s/></r>", many.p) > 0);
    r = check(xc, d, NULL, NULL, XMLCHECK_MALFORMED, 2);
    assert_non_null(strstr(r.message, "mismatch"));
    free(d);
    /* a body cut short is not well-formed either way */
    check(xc, "<r a='1' b", NULL, NULL, XMLCHECK_MALFORMED, 1);
    check(xc, "<r a='1", NULL, NULL, XMLCHECK_MALFORMED, 1);
    check(xc, "<r><!-- ", NULL, NULL, XMLCHECK_MALFORMED, 1);
    check(xc, "<", NULL, NULL, XMLCHECK_MALFORMED, 1);
    free(many.p);
}

static void test_format(void **state)
{
    (void)state;
    struct xmlcheck_result r = {.status = XMLCHECK_MALFORMED, .line = 3, .column = 7};
    snprintf(r.message, sizeof r.message, "Opening and ending tag mismatch");
    char buf[128];
    int n = xmlcheck_format(&r, buf, sizeof buf);
    assert_string_equal(buf, "line 3, column 7: Opening and ending tag mismatch");
    assert_int_equal(n, (int)strlen(buf));
    /* truncated: still terminated, and the length it wanted */
    char small[10];
    assert_int_equal(xmlcheck_format(&r, small, sizeof small), n);
    assert_string_equal(small, "line 3, c");
    r.line = 0;
    r.column = 0;
    xmlcheck_format(&r, buf, sizeof buf);
    assert_string_equal(buf, "line 0, column 0: Opening and ending tag mismatch");
    assert_int_equal(xmlcheck_format(NULL, buf, sizeof buf), -1);
    assert_int_equal(xmlcheck_format(&r, NULL, 0), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_wellformed, setup_xc, teardown_xc),
        cmocka_unit_test_setup_teardown(test_utf16_bom, setup_xc, teardown_xc),
        cmocka_unit_test_setup_teardown(test_malformed_positions, setup_xc, teardown_xc),
        cmocka_unit_test_setup_teardown(test_bad_encoding, setup_xc, teardown_xc),
        cmocka_unit_test_setup_teardown(test_empty, setup_xc, teardown_xc),
        cmocka_unit_test_setup_teardown(test_doctype_plain, setup_xc, teardown_xc),
        cmocka_unit_test_setup_teardown(test_xxe_file, setup_xc, teardown_xc),
        cmocka_unit_test_setup_teardown(test_xxe_http, setup_xc, teardown_xc),
        cmocka_unit_test_setup_teardown(test_xxe_parameter_entity, setup_xc, teardown_xc),
        cmocka_unit_test_setup_teardown(test_external_dtd, setup_xc, teardown_xc),
        cmocka_unit_test_setup_teardown(test_billion_laughs, setup_xc, teardown_xc),
        cmocka_unit_test_setup_teardown(test_depth, setup_xc, teardown_xc),
        cmocka_unit_test_setup_teardown(test_xinclude_not_processed, setup_xc, teardown_xc),
        cmocka_unit_test_setup_teardown(test_schema_location_hint_ignored, setup_xc, teardown_xc),
        cmocka_unit_test_setup_teardown(test_root, setup_xc, teardown_xc),
        cmocka_unit_test_setup_teardown(test_schema, setup_xc, teardown_xc),
        cmocka_unit_test(test_schema_load),
        cmocka_unit_test_setup_teardown(test_many_schemas, setup_xc, teardown_xc),
        cmocka_unit_test(test_entity_loader),
        cmocka_unit_test_setup_teardown(test_reuse, setup_xc, teardown_xc),
        cmocka_unit_test_setup_teardown(test_two_checkers_one_thread, setup_xc, teardown_xc),
        cmocka_unit_test_setup_teardown(test_large, setup_xc, teardown_xc),
        cmocka_unit_test_setup_teardown(test_unique_names_bounded, setup_xc, teardown_xc),
        cmocka_unit_test_setup_teardown(test_threads_shared_schema, setup_xc, teardown_xc),
        cmocka_unit_test_setup_teardown(test_limit_attributes, setup_xc, teardown_xc),
        cmocka_unit_test_setup_teardown(test_limit_ns_decls, setup_xc, teardown_xc),
        cmocka_unit_test_setup_teardown(test_limit_ns_scope, setup_xc, teardown_xc),
        cmocka_unit_test_setup_teardown(test_limit_names, setup_xc, teardown_xc),
        cmocka_unit_test_setup_teardown(test_limit_encodings, setup_xc, teardown_xc),
        cmocka_unit_test_setup_teardown(test_limit_tokens, setup_xc, teardown_xc),
        cmocka_unit_test(test_format),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
