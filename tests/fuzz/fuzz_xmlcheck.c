/* fuzz_xmlcheck.c - libFuzzer target for bridge/xmlcheck: every input is a
 * request body, checked by one reused checker with no root or schema, with a
 * root, with a small XSD (compiled once, from a file written at start-up) and
 * with both. Invariants: a status of the enum; a one-line printable message
 * and its "line L, column C: ..." form; positions >= 0; the same body checked
 * again (after other checks) gives the same result; a root or a schema never
 * turns a 400 into something else or a 422 into 200; and no external load
 * ever reaches libxml2 while a body is checked. A body holding "<!--PAD-->"
 * is checked with that marker widened to a 64 KiB comment, so that the text
 * after it straddles the parser's first chunk boundary. */
#include "fuzz.h"
#include "bridge/xmlcheck.h"

#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include <libxml/parser.h>
#include <libxml/parserInternals.h>
#include <libxml/xmlerror.h>

/* The pieces xmlcheck.c feeds the parser, after its first 4 bytes. */
#define CHUNK ((size_t)64 * 1024)
#define PAD_MARK "<!--PAD-->"

/* A small order schema: sequence, choice, simple content with a required
 * attribute, a pattern, xs:any and an identity constraint (libxml2 2.9.14
 * leaks an xs:unique's matcher when its element is left open), so that
 * streaming validation has something to chew on. */
static const char ORDER_XSD[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<xs:schema xmlns:xs=\"http://www.w3.org/2001/XMLSchema\">\n"
    "  <xs:element name=\"order\">\n"
    "    <xs:complexType>\n"
    "      <xs:sequence>\n"
    "        <xs:element name=\"id\" type=\"xs:positiveInteger\"/>\n"
    "        <xs:element name=\"when\" type=\"xs:dateTime\" minOccurs=\"0\"/>\n"
    "        <xs:choice minOccurs=\"0\" maxOccurs=\"unbounded\">\n"
    "          <xs:element name=\"item\" type=\"item\"/>\n"
    "          <xs:element name=\"note\" type=\"xs:string\"/>\n"
    "        </xs:choice>\n"
    "        <xs:any namespace=\"##other\" processContents=\"lax\" minOccurs=\"0\"/>\n"
    "      </xs:sequence>\n"
    "      <xs:attribute name=\"currency\" type=\"code\"/>\n"
    "    </xs:complexType>\n"
    "    <xs:unique name=\"sku\">\n"
    "      <xs:selector xpath=\"item\"/>\n"
    "      <xs:field xpath=\"@sku\"/>\n"
    "    </xs:unique>\n"
    "  </xs:element>\n"
    "  <xs:complexType name=\"item\">\n"
    "    <xs:simpleContent>\n"
    "      <xs:extension base=\"xs:string\">\n"
    "        <xs:attribute name=\"qty\" type=\"xs:unsignedShort\" use=\"required\"/>\n"
    "        <xs:attribute name=\"sku\" type=\"xs:token\"/>\n"
    "      </xs:extension>\n"
    "    </xs:simpleContent>\n"
    "  </xs:complexType>\n"
    "  <xs:simpleType name=\"code\">\n"
    "    <xs:restriction base=\"xs:string\">\n"
    "      <xs:pattern value=\"[A-Z]{3}\"/>\n"
    "    </xs:restriction>\n"
    "  </xs:simpleType>\n"
    "</xs:schema>\n";

/* The four ways a route checks a body. */
struct mode {
    const char *root; /* required root, or NULL */
    bool schema;      /* validate against ORDER_XSD */
};
static const struct mode modes[] = {{NULL, false}, {"order", false}, {NULL, true}, {"order", true}};
enum { M_PLAIN, M_ROOT, M_SCHEMA, M_BOTH, M_COUNT };

/* libxml2 is Debian's, not instrumented: libFuzzer sees no coverage inside
 * it. Each kind of answer (mode, status, libxml2's last error domain and
 * code, the first word of the message) lights a counter of its own instead,
 * so that an input that makes libxml2 say something new is kept. */
#define ANSWER_KINDS 4096
__attribute__((used, section("__libfuzzer_extra_counters"))) static uint8_t g_answers[ANSWER_KINDS];

static struct xmlcheck *g_xc;            /* reused for every input, like a worker's */
static struct xmlcheck_schema *g_schema; /* compiled once */
static xmlExternalEntityLoader g_loader; /* libxml2's own, under xmlcheck's */
static bool g_in_run;                    /* inside xmlcheck_run */

/* Installed before xmlcheck_global_init, so that xmlcheck's loader forwards
 * here: loading the schema passes, a body must never get this far. */
static xmlParserInputPtr spy_loader(const char *url, const char *id, xmlParserCtxtPtr ctxt)
{
    FUZZ_CHECK(!g_in_run, "a body made libxml2 load %s", url != NULL ? url : "(no URL)");
    return g_loader(url, id, ctxt);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    g_loader = xmlGetExternalEntityLoader();
    xmlSetExternalEntityLoader(spy_loader);
    xmlcheck_global_init();

    const char *tmp = getenv("TMPDIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/fuzz-order-XXXXXX.xsd",
             tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
    int fd = mkstemps(path, 4);
    FUZZ_CHECK(fd >= 0, "cannot create %s", path);
    FUZZ_CHECK(write(fd, ORDER_XSD, sizeof ORDER_XSD - 1) == (ssize_t)(sizeof ORDER_XSD - 1),
               "cannot write %s", path);
    close(fd);
    char err[256];
    g_schema = xmlcheck_schema_load(path, err, sizeof err);
    unlink(path);
    FUZZ_CHECK(g_schema != NULL, "the fuzzer's schema does not compile: %s", err);
    g_xc = xmlcheck_new();
    FUZZ_CHECK(g_xc != NULL, "xmlcheck_new failed");
    return 0;
}

static bool printable(const char *s)
{
    for (; *s != '\0'; s++)
        if (*s < 0x20 || *s > 0x7e)
            return false;
    return true;
}

/* What must hold for any one result. */
static void check_result(const struct xmlcheck_result *r, enum xmlcheck_status ret)
{
    FUZZ_CHECK(ret == r->status, "returned %d, result says %d", (int)ret, (int)r->status);
    FUZZ_CHECK(r->status == XMLCHECK_OK || r->status == XMLCHECK_MALFORMED ||
                   r->status == XMLCHECK_INVALID,
               "status %d", (int)r->status);
    FUZZ_CHECK(r->line >= 0 && r->column >= 0, "line %d, column %d", r->line, r->column);
    FUZZ_CHECK(memchr(r->message, '\0', sizeof r->message) != NULL, "message not terminated");
    FUZZ_CHECK(r->message[0] != '\0', "empty message (status %d)", (int)r->status);
    FUZZ_CHECK(printable(r->message), "message not printable ASCII: \"%s\"", r->message);
    FUZZ_CHECK(r->message[strlen(r->message) - 1] != ' ', "trailing blank: \"%s\"", r->message);
    if (r->status == XMLCHECK_OK)
        FUZZ_CHECK(r->line == 0 && r->column == 0 && strcmp(r->message, "ok") == 0,
                   "ok with a position or a message: %d:%d %s", r->line, r->column, r->message);

    char buf[XMLCHECK_MSG_LEN + 64];
    int n = xmlcheck_format(r, buf, sizeof buf);
    FUZZ_CHECK(n > 0 && (size_t)n < sizeof buf && strlen(buf) == (size_t)n, "format gave %d", n);
    FUZZ_CHECK(printable(buf), "formatted message not one printable line: \"%s\"", buf);
    char head[64];
    snprintf(head, sizeof head, "line %d, column %d: ", r->line, r->column);
    FUZZ_CHECK(strncmp(buf, head, strlen(head)) == 0 && strcmp(buf + strlen(head), r->message) == 0,
               "formatted as \"%s\"", buf);
    /* A short buffer: cut, terminated, same would-be length. */
    char small[8];
    FUZZ_CHECK(xmlcheck_format(r, small, sizeof small) == n && strlen(small) == sizeof small - 1,
               "short buffer");
}

static void count_answer(int mode, const struct xmlcheck_result *r)
{
    const xmlError *e = xmlGetLastError();
    uint32_t h = 2166136261u;
    int key[] = {mode, (int)r->status, e != NULL ? e->domain : -1, e != NULL ? e->code : -1};
    for (size_t i = 0; i < sizeof key / sizeof key[0]; i++)
        h = (h ^ (uint32_t)key[i]) * 16777619u;
    /* The first word tells our own messages apart ("DOCTYPE", "root"...). */
    for (const char *p = r->message; *p != '\0' && *p != ' ' && *p != ':'; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    g_answers[h % ANSWER_KINDS] = 1;
}

static bool same(const struct xmlcheck_result *a, const struct xmlcheck_result *b)
{
    return a->status == b->status && a->line == b->line && a->column == b->column &&
           strcmp(a->message, b->message) == 0;
}

static void run(const char *body, size_t len, const char *root, bool schema,
                struct xmlcheck_result *r)
{
    memset(r, 0xA5, sizeof *r); /* nothing of a previous result may survive */
    xmlResetLastError();
    g_in_run = true;
    enum xmlcheck_status st = xmlcheck_run(g_xc, body, len, root, schema ? g_schema : NULL, r);
    g_in_run = false;
    check_result(r, st);
}

static void check_body(const char *body, size_t len)
{
    struct xmlcheck_result r[M_COUNT], again;
    for (int i = 0; i < M_COUNT; i++) {
        run(body, len, modes[i].root, modes[i].schema, &r[i]);
        count_answer(i, &r[i]);
    }

    /* Reuse leaks nothing: the same body after other runs, and "" is no root. */
    run(body, len, "", false, &again);
    FUZZ_CHECK(same(&again, &r[M_PLAIN]), "second plain run: %d \"%s\", first: %d \"%s\"",
               (int)again.status, again.message, (int)r[M_PLAIN].status, r[M_PLAIN].message);
    run(body, len, modes[M_BOTH].root, true, &again);
    FUZZ_CHECK(same(&again, &r[M_BOTH]), "second root+schema run: %d \"%s\", first: %d \"%s\"",
               (int)again.status, again.message, (int)r[M_BOTH].status, r[M_BOTH].message);

    /* Well-formedness does not depend on the route; 422 needs a root or a schema. */
    FUZZ_CHECK(r[M_PLAIN].status != XMLCHECK_INVALID, "422 without root or schema: %s",
               r[M_PLAIN].message);
    for (int i = M_ROOT; i < M_COUNT; i++)
        FUZZ_CHECK((r[i].status == XMLCHECK_MALFORMED) == (r[M_PLAIN].status == XMLCHECK_MALFORMED),
                   "mode %d: %d \"%s\", plain: %d \"%s\"", i, (int)r[i].status, r[i].message,
                   (int)r[M_PLAIN].status, r[M_PLAIN].message);
    /* Root and schema together refuse what either refuses, and only that. */
    if (r[M_PLAIN].status == XMLCHECK_OK) {
        bool want_ok = r[M_ROOT].status == XMLCHECK_OK && r[M_SCHEMA].status == XMLCHECK_OK;
        FUZZ_CHECK((r[M_BOTH].status == XMLCHECK_OK) == want_ok,
                   "root: %d, schema: %d, both: %d \"%s\"", (int)r[M_ROOT].status,
                   (int)r[M_SCHEMA].status, (int)r[M_BOTH].status, r[M_BOTH].message);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *body = (const char *)data;
    check_body(body, size);

    const char *mark = memmem(body, size, PAD_MARK, sizeof PAD_MARK - 1);
    size_t at = mark != NULL ? (size_t)(mark - body) : 0;
    /* What follows the mark starts 3 bytes before the second chunk. */
    size_t target = 4 + CHUNK - 3;
    if (mark == NULL || at + 7 > target)
        return 0;
    size_t rest = size - at - (sizeof PAD_MARK - 1);
    char *big = malloc(target + rest);
    FUZZ_CHECK(big != NULL, "out of memory");
    memcpy(big, body, at);
    memcpy(big + at, "<!--", 4);
    memset(big + at + 4, ' ', target - at - 7);
    memcpy(big + target - 3, "-->", 3);
    memcpy(big + target, mark + sizeof PAD_MARK - 1, rest);
    check_body(big, target + rest);
    free(big);
    return 0;
}
