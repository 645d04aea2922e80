/* xmlcost.c - `make bench`'s xml check row, and the measurement behind the
 * man page's XML LIMITS: how long bridge/xmlcheck.c takes over 1 MiB of each
 * kind of hostile document, against 1 MiB of a plain one. A program that
 * prints figures, never a test.
 *
 *   bench-xmlcost [-s] [-r RUNS] [-k KIB]
 *
 * One line per input class: its verdict, the slowest of RUNS checks (3) in
 * ms, and its ratio to the plain document; -k: documents of KIB (1024)
 * KiB instead, to see how a cost grows. With -s, the classes that aim at
 * schema validation too (an XSD written to $TMPDIR at start-up), against
 * the plain document under that XSD. The last lines: the slowest class
 * against the plain document (the bench's row), and with -s the same under
 * the XSD, whose worst case is the schema's own (ingest-bridge(8), XML
 * LIMITS). */
#include "bridge/xmlcheck.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static size_t MIB = (size_t)1 << 20; /* the size of every document */

/* A growing body. */
struct buf {
    char *p;
    size_t n, cap;
};

static void put(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct buf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int w = vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
        va_end(ap);
        if (w >= 0 && (size_t)w < b->cap - b->n) {
            b->n += (size_t)w;
            return;
        }
        b->cap = b->cap * 2 + (size_t)(w > 0 ? w : 64) + 64;
        b->p = realloc(b->p, b->cap);
        if (b->p == NULL) {
            perror("realloc");
            exit(1);
        }
    }
}

static void gen_plain(struct buf *b)
{
    put(b, "<order>\n<id>1</id>\n");
    for (int i = 0; b->n < MIB - 64; i++)
        put(b, "<item sku=\"s%d\" qty=\"%d\">widget number %d</item>\n", i, i % 9 + 1, i);
    put(b, "</order>\n");
}

static void gen_attrs(struct buf *b)
{
    put(b, "<r");
    for (int i = 0; b->n < MIB - 16; i++)
        put(b, " a%d=''", i);
    put(b, "/>");
}

static void gen_xmlns(struct buf *b)
{
    put(b, "<r");
    for (int i = 0; b->n < MIB - 16; i++)
        put(b, " xmlns:p%d='u'", i);
    put(b, "/>");
}

/* The same, each within the limits: 1 MiB of elements with 128 attributes,
 * of elements with 64 declarations, of elements with 128 attributes whose
 * prefix is looked up through 256 declarations in scope, of 9,990 distinct
 * names over and over. */
static void gen_attrs_at(struct buf *b)
{
    put(b, "<r>");
    while (b->n < MIB - 2048) {
        put(b, "<e");
        for (int i = 0; i < 128; i++)
            put(b, " a%d=''", i);
        put(b, "/>");
    }
    put(b, "</r>");
}

static void gen_xmlns_at(struct buf *b)
{
    put(b, "<r>");
    while (b->n < MIB - 2048) {
        put(b, "<e");
        for (int i = 0; i < 64; i++)
            put(b, " xmlns:p%d='u'", i);
        put(b, "/>");
    }
    put(b, "</r>");
}

static void gen_scope_at(struct buf *b)
{
    put(b, "<r>");
    for (int level = 0; level < 4; level++) {
        put(b, "<e");
        for (int j = 0; j < 64; j++)
            put(b, " xmlns:n%d_%d='u%d_%d'", level, j, level, j);
        put(b, ">");
    }
    while (b->n < MIB - 4096) {
        put(b, "<x");
        for (int i = 0; i < 128; i++)
            put(b, " n0_0:a%d=''", i);
        put(b, "/>");
    }
    put(b, "</e></e></e></e></r>");
}

static void gen_names_at(struct buf *b)
{
    put(b, "<r>");
    for (int i = 0; b->n < MIB - 64; i++)
        put(b, "<e%d/>", i % 9990);
    put(b, "</r>");
}

/* Elements nested 200 deep, each declaring 60 prefixes and carrying 100
 * attributes in the outermost one (libxml2 looks a prefix up from the
 * innermost declaration out), then siblings of the same until 1 MiB. */
static void gen_nested_ns(struct buf *b)
{
    int depth = 0;
    put(b, "<r xmlns:q='urn:q'>");
    while (b->n < MIB - 4096) {
        put(b, "<e");
        for (int j = 0; j < 60; j++)
            put(b, " xmlns:n%d_%d='u%d'", depth, j, j);
        for (int j = 0; j < 100; j++)
            put(b, " q:a%d=''", j);
        put(b, ">");
        if (++depth == 200) {
            while (depth-- > 0)
                put(b, "</e>");
            depth = 0;
        }
    }
    while (depth-- > 0)
        put(b, "</e>");
    put(b, "</r>");
}

static void gen_long_name(struct buf *b)
{
    put(b, "<r>");
    while (b->n + 40016 < MIB) {
        put(b, "<");
        for (int i = 0; i < 40000; i++)
            put(b, "n");
        put(b, "/>");
    }
    put(b, "</r>");
}

/* Many distinct prefixes, each declared once and used by an element. */
static void gen_prefixes(struct buf *b)
{
    put(b, "<r>");
    for (int i = 0; b->n < MIB - 64; i++)
        put(b, "<p%d:e xmlns:p%d='u'/>", i, i);
    put(b, "</r>");
}

/* Many distinct element names, no prefix. */
static void gen_names(struct buf *b)
{
    put(b, "<r>");
    for (int i = 0; b->n < MIB - 64; i++)
        put(b, "<e%d/>", i);
    put(b, "</r>");
}

static void gen_charrefs(struct buf *b)
{
    put(b, "<r a='");
    while (b->n < MIB - 16)
        put(b, "&#65;&amp;&#x20AC;");
    put(b, "'/>");
}

/* libxml2 reports each error of a start tag it parses whole: one bad
 * reference after another in a value; "--" after "--" in a comment. */
static void gen_bad_refs(struct buf *b)
{
    put(b, "<r a='");
    while (b->n < MIB - 16)
        put(b, "&x");
    put(b, "'/>");
}

static void gen_hyphens(struct buf *b)
{
    put(b, "<r><!--");
    while (b->n < MIB - 16)
        put(b, "--x");
    put(b, "--></r>");
}

static void gen_comment(struct buf *b)
{
    put(b, "<r><!--");
    while (b->n < MIB - 16)
        put(b, "- ");
    put(b, "--></r>");
}

static void gen_deep(struct buf *b)
{
    put(b, "<r>");
    while (b->n < MIB - 4096) {
        for (int i = 0; i < 250; i++)
            put(b, "<a>");
        for (int i = 0; i < 250; i++)
            put(b, "</a>");
    }
    put(b, "</r>");
}

static void gen_text_entities(struct buf *b)
{
    put(b, "<r>");
    while (b->n < MIB - 16)
        put(b, "&lt;&#65;&amp;");
    put(b, "</r>");
}

/* The same attributes as gen_attrs, in UTF-16LE with a BOM. */
static void gen_attrs_utf16(struct buf *b)
{
    struct buf a = {0};
    put(&a, "<r");
    for (int i = 0; a.n < MIB / 2 - 16; i++)
        put(&a, " a%d=''", i);
    put(&a, "/>");
    put(b, "\xff\xfe");
    for (size_t i = 0; i < a.n; i++) {
        put(b, "%c", a.p[i]);
        b->p[b->n++] = '\0';
    }
    free(a.p);
}

/* Schema classes: many keys under an xs:unique, and long values for a
 * pattern. */
static void gen_unique(struct buf *b)
{
    put(b, "<order>");
    for (int i = 0; b->n < MIB - 64; i++)
        put(b, "<item sku='%d'/>", i);
    put(b, "</order>");
}

static void gen_pattern(struct buf *b)
{
    put(b, "<order code='");
    while (b->n < MIB - 16)
        put(b, "ab");
    put(b, "'/>");
}

/* Catastrophic backtracking, if the regex engine backtracks: "aaa...a!"
 * against (a|aa)*b. */
static size_t evil_len = 30; /* -e */
static void gen_evil(struct buf *b)
{
    put(b, "<order evil='");
    for (size_t i = 0; i < evil_len; i++)
        put(b, "a");
    put(b, "!'/>");
}

static const char XSD[] =
    "<xs:schema xmlns:xs='http://www.w3.org/2001/XMLSchema'>\n"
    " <xs:element name='order'>\n"
    "  <xs:complexType>\n"
    "   <xs:sequence>\n"
    "    <xs:element name='id' type='xs:string' minOccurs='0'/>\n"
    "    <xs:element name='item' minOccurs='0' maxOccurs='unbounded'>\n"
    "     <xs:complexType mixed='true'>\n"
    "      <xs:attribute name='sku' type='xs:string'/>\n"
    "      <xs:attribute name='qty' type='xs:string'/>\n"
    "     </xs:complexType>\n"
    "    </xs:element>\n"
    "   </xs:sequence>\n"
    "   <xs:attribute name='evil'>\n"
    "    <xs:simpleType><xs:restriction base='xs:string'>\n"
    "     <xs:pattern value='(a|aa)*b'/>\n"
    "    </xs:restriction></xs:simpleType>\n"
    "   </xs:attribute>\n"
    "   <xs:attribute name='code'>\n"
    "    <xs:simpleType><xs:restriction base='xs:string'>\n"
    "     <xs:pattern value='((a|ab)(c|bcd)?)*(b)*'/>\n"
    "    </xs:restriction></xs:simpleType>\n"
    "   </xs:attribute>\n"
    "  </xs:complexType>\n"
    "  <xs:unique name='sku'><xs:selector xpath='item'/><xs:field xpath='@sku'/></xs:unique>\n"
    " </xs:element>\n"
    "</xs:schema>\n";

struct class
{
    const char *name;
    void (*gen)(struct buf *);
    bool schema;
};

static const struct class classes[] = {
    {"plain", gen_plain, false},
    {"attributes on one element", gen_attrs, false},
    {"xmlns:pN on one element", gen_xmlns, false},
    {"nested namespaces, prefixed attributes", gen_nested_ns, false},
    {"128 attributes per element", gen_attrs_at, false},
    {"64 xmlns:pN per element", gen_xmlns_at, false},
    {"256 in scope, 128 prefixed attributes", gen_scope_at, false},
    {"9,990 distinct names over and over", gen_names_at, false},
    {"long names", gen_long_name, false},
    {"distinct prefixes", gen_prefixes, false},
    {"distinct element names", gen_names, false},
    {"character references in a value", gen_charrefs, false},
    {"references in text", gen_text_entities, false},
    {"one long comment", gen_comment, false},
    {"bad references in a value (400)", gen_bad_refs, false},
    {"double hyphens in a comment (400)", gen_hyphens, false},
    {"deep nesting (250)", gen_deep, false},
    {"attributes on one element, UTF-16", gen_attrs_utf16, false},
    {"plain, with the schema", gen_plain, true},
    {"xs:unique over many items", gen_unique, true},
    {"a long value for an xs:pattern", gen_pattern, true},
    {"(a|aa)*b against a...a!", gen_evil, true},
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
    int runs = 3;
    bool with_schema = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-s") == 0)
            with_schema = true;
        else if (strcmp(argv[i], "-r") == 0 && i + 1 < argc)
            runs = atoi(argv[++i]);
        else if (strcmp(argv[i], "-e") == 0 && i + 1 < argc)
            evil_len = (size_t)atoi(argv[++i]);
        else if (strcmp(argv[i], "-k") == 0 && i + 1 < argc)
            MIB = (size_t)atoi(argv[++i]) * 1024;
        else {
            fprintf(stderr, "usage: %s [-s] [-r RUNS] [-k KIB]\n", argv[0]);
            return 2;
        }
    }
    if (runs < 1)
        runs = 1;
    xmlcheck_global_init();
    struct xmlcheck *xc = xmlcheck_new();
    struct xmlcheck_schema *schema = NULL;
    if (with_schema) {
        const char *tmp = getenv("TMPDIR");
        char path[4096], err[256];
        snprintf(path, sizeof path, "%s/xmlcost-XXXXXX.xsd",
                 tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
        int fd = mkstemps(path, 4);
        if (fd < 0 || write(fd, XSD, sizeof XSD - 1) != (ssize_t)(sizeof XSD - 1)) {
            perror(path);
            return 1;
        }
        close(fd);
        schema = xmlcheck_schema_load(path, err, sizeof err);
        unlink(path);
        if (schema == NULL) {
            fprintf(stderr, "schema: %s\n", err);
            return 1;
        }
    }
    if (xc == NULL)
        return 1;

    /* [0]: the bridge's own check; [1]: with the operator's schema, against
     * the plain document with the same schema. */
    double plain[2] = {0, 0}, worst[2] = {0, 0};
    const char *worst_name[2] = {"", ""};
    for (size_t c = 0; c < sizeof classes / sizeof classes[0]; c++) {
        int k = classes[c].schema;
        if (k && schema == NULL)
            continue;
        struct buf b = {0};
        classes[c].gen(&b);
        struct xmlcheck_result r;
        double slowest = 0;
        for (int i = 0; i < runs; i++) {
            double t0 = now_ms();
            (void)xmlcheck_run(xc, b.p, b.n, NULL, k ? schema : NULL, &r);
            double ms = now_ms() - t0;
            if (ms > slowest)
                slowest = ms;
        }
        if (plain[k] == 0)
            plain[k] = slowest; /* each group's first class is its plain one */
        else if (slowest > worst[k]) {
            worst[k] = slowest;
            worst_name[k] = classes[c].name;
        }
        char text[XMLCHECK_MSG_LEN + 64];
        (void)xmlcheck_format(&r, text, sizeof text);
        printf("%-40s %8zu B %9.2f ms  x%-7.1f %s %.90s\n", classes[c].name, b.n, slowest,
               slowest / plain[k],
               r.status == XMLCHECK_OK          ? "ok "
               : r.status == XMLCHECK_MALFORMED ? "400"
                                                : "422",
               r.status == XMLCHECK_OK ? "" : text);
        free(b.p);
    }
    printf("xml check, slowest of a 1 MiB hostile document vs a 1 MiB plain one: %.2f ms (%s) vs "
           "%.2f ms, x%.1f\n",
           worst[0], worst_name[0], plain[0], worst[0] / plain[0]);
    if (schema != NULL)
        printf("xml check with this program's XSD, slowest vs the plain document: %.2f ms (%s) "
               "vs %.2f ms, x%.1f\n",
               worst[1], worst_name[1], plain[1], worst[1] / plain[1]);
    xmlcheck_schema_free(schema);
    xmlcheck_free(xc);
    xmlcheck_global_cleanup();
    return 0;
}
