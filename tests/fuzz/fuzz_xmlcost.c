/* fuzz_xmlcost.c - libFuzzer target for the cost of bridge/xmlcheck: an input
 * is a recipe for a document of up to 1 MiB, and a check that takes long is
 * the finding (run.sh gives this target -timeout=2: 1 MiB of a plain
 * document takes ~10 ms, the hostile ones before the limits took seconds).
 *
 * Recipe: HEAD \x01 UNIT \x01 TAIL (without \x01: all of it is UNIT). The
 * document is HEAD, then UNIT again and again until 1 MiB, then TAIL; each
 * \x02 in UNIT becomes the repetition's number, so that names can be
 * distinct ("<e\x02/>": <e0/><e1/>...), each \x03 the same in UTF-16LE.
 * The document is checked as a route does, without and with a small XSD,
 * by one reused checker; invariants: a status of the enum and a message. */
#include "fuzz.h"
#include "bridge/xmlcheck.h"

#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#define DOC_MAX ((size_t)1 << 20)

/* Deterministic facets only: a non-deterministic xs:pattern costs what the
 * operator's schema makes it cost (ingest-bridge(8), XML LIMITS). */
static const char XSD[] =
    "<xs:schema xmlns:xs='http://www.w3.org/2001/XMLSchema'>\n"
    " <xs:element name='r'>\n"
    "  <xs:complexType>\n"
    "   <xs:sequence>\n"
    "    <xs:element name='e' minOccurs='0' maxOccurs='unbounded'>\n"
    "     <xs:complexType mixed='true'>\n"
    "      <xs:sequence><xs:any processContents='lax' minOccurs='0'\n"
    "                           maxOccurs='unbounded'/></xs:sequence>\n"
    "      <xs:attribute name='k' type='xs:token'/>\n"
    "      <xs:anyAttribute processContents='lax'/>\n"
    "     </xs:complexType>\n"
    "    </xs:element>\n"
    "   </xs:sequence>\n"
    "   <xs:attribute name='c'>\n"
    "    <xs:simpleType><xs:restriction base='xs:string'>\n"
    "     <xs:pattern value='[A-Z]{3}(-[0-9]+)*'/>\n"
    "    </xs:restriction></xs:simpleType>\n"
    "   </xs:attribute>\n"
    "  </xs:complexType>\n"
    "  <xs:unique name='k'><xs:selector xpath='e'/><xs:field xpath='@k'/></xs:unique>\n"
    " </xs:element>\n"
    "</xs:schema>\n";

static struct xmlcheck *g_xc;
static struct xmlcheck_schema *g_schema;
static char *g_doc; /* DOC_MAX + room for one more unit */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    xmlcheck_global_init();
    const char *tmp = getenv("TMPDIR");
    char path[4096], err[256];
    snprintf(path, sizeof path, "%s/fuzz-cost-XXXXXX.xsd",
             tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
    int fd = mkstemps(path, 4);
    FUZZ_CHECK(fd >= 0, "cannot create %s", path);
    FUZZ_CHECK(write(fd, XSD, sizeof XSD - 1) == (ssize_t)(sizeof XSD - 1), "cannot write %s",
               path);
    close(fd);
    g_schema = xmlcheck_schema_load(path, err, sizeof err);
    unlink(path);
    FUZZ_CHECK(g_schema != NULL, "the fuzzer's schema does not compile: %s", err);
    g_xc = xmlcheck_new();
    FUZZ_CHECK(g_xc != NULL, "xmlcheck_new failed");
    g_doc = malloc(2 * DOC_MAX + 64);
    FUZZ_CHECK(g_doc != NULL, "out of memory");
    return 0;
}

/* The document the recipe DATA makes, into g_doc; its length. */
static size_t expand(const uint8_t *data, size_t size)
{
    const uint8_t *unit = data, *end = data + size;
    const uint8_t *s1 = memchr(data, 1, size);
    const uint8_t *s2 = s1 != NULL ? memchr(s1 + 1, 1, (size_t)(end - s1 - 1)) : NULL;
    size_t head = 0, ulen = size, tail = 0;
    if (s2 != NULL) {
        head = (size_t)(s1 - data);
        unit = s1 + 1;
        ulen = (size_t)(s2 - unit);
        tail = (size_t)(end - s2 - 1);
    }
    size_t n = 0;
    memcpy(g_doc, data, head < DOC_MAX ? head : DOC_MAX);
    n = head < DOC_MAX ? head : DOC_MAX;
    for (unsigned long k = 0; ulen > 0 && n + ulen + tail < DOC_MAX; k++) {
        for (size_t i = 0; i < ulen && n < DOC_MAX; i++) {
            if (unit[i] == 2)
                n += (size_t)snprintf(g_doc + n, 24, "%lu", k);
            else if (unit[i] == 3) { /* the same in UTF-16LE */
                char d[24];
                int dl = snprintf(d, sizeof d, "%lu", k);
                for (int j = 0; j < dl; j++) {
                    g_doc[n++] = d[j];
                    g_doc[n++] = '\0';
                }
            } else
                g_doc[n++] = (char)unit[i];
        }
    }
    if (tail > 0 && n + tail <= 2 * DOC_MAX) {
        memcpy(g_doc + n, s2 + 1, tail);
        n += tail;
    }
    return n;
}

/* Once per mode: twice would halve the time left to a slow input within
 * -timeout (fuzz_xmlcheck checks that an answer does not change). */
static void check(const char *doc, size_t len, const struct xmlcheck_schema *schema)
{
    struct xmlcheck_result a;
    enum xmlcheck_status st = xmlcheck_run(g_xc, doc, len, NULL, schema, &a);
    FUZZ_CHECK(st == a.status &&
                   (st == XMLCHECK_OK || st == XMLCHECK_MALFORMED || st == XMLCHECK_INVALID),
               "status %d, result %d", (int)st, (int)a.status);
    FUZZ_CHECK(a.message[0] != '\0', "no message");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t n = expand(data, size);
    check(g_doc, n, NULL);
    check(g_doc, n, g_schema);
    return 0;
}
