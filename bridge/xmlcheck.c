/* xmlcheck.c - is a request body acceptable XML? One reused SAX2 push parser per
 * worker thread, no tree: a DOCTYPE stops it at once (so no DTD, entity or network
 * load ever happens), then the root name and, streaming through the same parse, an
 * XSD shared read-only by every worker. */
#include "bridge/xmlcheck.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/catalog.h>
#include <libxml/dict.h>
#include <libxml/encoding.h>
#include <libxml/globals.h>
#include <libxml/parser.h>
#include <libxml/parserInternals.h>
#include <libxml/xmlerror.h>
#include <libxml/xmlIO.h>
#include <libxml/xmlschemas.h>

#include "bridge/base/seed.h"

/* Never NOENT (substitutes entities: read files, fetched URLs), DTDLOAD, HUGE
 * (turns off the entity-loop and depth guards) or XINCLUDE. */
#define XMLCHECK_PARSE_OPTIONS (XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING)

/* A reused parser context keeps every element and attribute name it ever saw
 * in its dictionary (measured: 21 MB after 10,000 bodies with unique 1000-byte
 * names, never given back): past this many bytes the context is replaced. */
#define XMLCHECK_DICT_RECYCLE ((size_t)1 << 20)

/* The body goes to xmlParseChunk in pieces of this size (measured: 1 MB parses
 * in the same 3.4 ms whole or in 4 KiB to 256 KiB pieces). Between pieces a
 * run that already failed stops: at most one piece is parsed in vain. */
#define XMLCHECK_CHUNK ((size_t)64 * 1024)

/* The push parser, unlike xmlReadMemory, has no depth limit (a 10,000-deep
 * document parsed as well-formed): this is the pull parser's limit without
 * XML_PARSE_HUGE, enforced by the scan below. */
#define XMLCHECK_MAX_DEPTH 256
#define XMLCHECK_STR_(x) #x
#define XMLCHECK_STR(x) XMLCHECK_STR_(x)
static const char DEPTH_TEXT[] =
    "Excessive depth in document: more than " XMLCHECK_STR(XMLCHECK_MAX_DEPTH) " nested elements";

/* What libxml2 2.9 does in time worse than linear, bounded before it runs
 * (measured on 1 MiB documents, tests/bench/xmlcost.c): it compares every
 * attribute of a start tag with every earlier one (80,000 attributes: 4.7 s)
 * and every namespace declaration with the tag's earlier ones (1.9 s), looks
 * each prefix up through every declaration in scope, and parses a start tag
 * only once it is whole, so that no callback can stop it midway. The scan
 * counts them first and refuses a body past a limit (400) before libxml2
 * sees the tag. */
#define XMLCHECK_MAX_ATTRS 128    /* attributes of one element, xmlns* aside */
#define XMLCHECK_MAX_NS_DECLS 64  /* xmlns and xmlns:p on one element */
#define XMLCHECK_MAX_NS_SCOPE 256 /* declarations in scope at once */

/* libxml2's name dictionary stops growing its table at 4,608 buckets: past
 * that every lookup walks a chain as long as the names are many (1 MiB of
 * distinct names: 0.8 s; 4 MiB: 7 s). Counted exactly, on the dictionary's
 * own pointers, in the callbacks: at most one start tag's worth of names
 * goes past the limit before the run is refused. */
#define XMLCHECK_MAX_NAMES 10000
#define NAMESET_BITS 15 /* 32,768 slots: never more than a third full */

struct xmlcheck_schema {
    xmlSchemaPtr xsd; /* compiled, read-only after load */
};

/* What a run found first, of one kind. */
struct finding {
    bool set;                       /* something was found */
    int line;                       /* 1-based, 0 if unknown */
    int column;                     /* 1-based, 0 if unknown */
    char message[XMLCHECK_MSG_LEN]; /* sanitized, one line */
};

/* The distinct names (dictionary pointers) a run met: an open-addressed set,
 * emptied at the start of the next run through the list of the slots it
 * filled (until then it may hold pointers into a freed dictionary, never
 * followed). */
struct nameset {
    const void **slot;                     /* 1 << NAMESET_BITS, NULL = free */
    uint16_t used[XMLCHECK_MAX_NAMES + 1]; /* slots filled by this run */
    int count;                             /* entries in used */
    uint64_t key;                          /* odd multiplier, random per checker */
};

struct xmlcheck {
    xmlParserCtxtPtr ctxt; /* push parser, reset per run; NULL: make anew */
    struct nameset names;  /* this run's distinct names */

    /* per run */
    const char *root;         /* required root local name, NULL for any */
    bool seen_root;           /* the first start tag went by */
    int depth;                /* open elements */
    struct finding malformed; /* DOCTYPE or the first parser error: 400 */
    struct finding root_err;  /* wrong root element: 422 */
    struct finding invalid;   /* first schema validation error: 422 */
};

static xmlExternalEntityLoader prev_loader;       /* libxml2's, restored at cleanup */
static _Thread_local bool in_request;             /* this thread is inside xmlcheck_run */
static _Thread_local struct capture *load_errors; /* this thread is loading a schema */

/* The first error met while loading a schema. */
struct capture {
    bool set;
    char text[XMLCHECK_MSG_LEN];
};

/* ---- text ----------------------------------------------------------------- */

/* Copy SRC into DST (XMLCHECK_MSG_LEN) as one printable ASCII line: control
 * characters become spaces, other bytes '?', trailing blanks go. The result
 * is sent as text/plain and logged. */
static void sanitize(char *dst, const char *src)
{
    size_t n = 0;
    if (src != NULL) {
        for (; src[n] != '\0' && n < XMLCHECK_MSG_LEN - 1; n++) {
            unsigned char c = (unsigned char)src[n];
            dst[n] = c < 0x20 || c == 0x7f ? ' ' : c > 0x7f ? '?' : (char)c;
        }
    }
    while (n > 0 && dst[n - 1] == ' ')
        n--;
    dst[n] = '\0';
}

static void finding_set(struct finding *f, int line, int column, const char *msg)
{
    f->set = true;
    f->line = line > 0 ? line : 0;
    f->column = column > 0 ? column : 0;
    sanitize(f->message, msg);
}

/* Where the parser is now: the best position we have for events that libxml2
 * does not locate itself (DOCTYPE, root, streaming validation). */
static void parser_position(const struct xmlcheck *xc, int *line, int *column)
{
    *line = 0;
    *column = 0;
    if (xc->ctxt != NULL && xc->ctxt->input != NULL) {
        *line = xc->ctxt->input->line;
        *column = xc->ctxt->input->col;
    }
}

/* ---- the entity loader ---------------------------------------------------- */

/* True when URL starts with an RFC 3986 scheme other than file: ("http:",
 * "ftp:", "jar:"...). Plain paths have none. */
static bool is_remote(const char *url)
{
    size_t i = 0;
    if (!((url[0] >= 'a' && url[0] <= 'z') || (url[0] >= 'A' && url[0] <= 'Z')))
        return false;
    while ((url[i] >= 'a' && url[i] <= 'z') || (url[i] >= 'A' && url[i] <= 'Z') ||
           (url[i] >= '0' && url[i] <= '9') || url[i] == '+' || url[i] == '-' || url[i] == '.')
        i++;
    if (url[i] != ':')
        return false;
    return !(i == 4 && strncasecmp(url, "file", 4) == 0);
}

/* Every external load in the process comes here. Request bodies may load
 * nothing at all (their DOCTYPE is refused before any load could start; this
 * is the second lock); schemas may load local files only. */
static xmlParserInputPtr safe_loader(const char *url, const char *id, xmlParserCtxtPtr ctxt)
{
    if (in_request || url == NULL || is_remote(url)) {
        struct capture *c = load_errors;
        if (c != NULL && !c->set) {
            char msg[XMLCHECK_MSG_LEN];
            snprintf(msg, sizeof msg, "refused to load %.200s: not a local file",
                     url != NULL ? url : "(no URL)");
            sanitize(c->text, msg);
            c->set = true;
        }
        return NULL;
    }
    return prev_loader(url, id, ctxt);
}

void xmlcheck_global_init(void)
{
    xmlInitParser();
    /* Catalogs could map a local name to a URL; nothing here needs them. */
    xmlCatalogSetDefaults(XML_CATA_ALLOW_NONE);
    if (xmlGetExternalEntityLoader() != safe_loader) {
        prev_loader = xmlGetExternalEntityLoader();
        xmlSetExternalEntityLoader(safe_loader);
    }
}

void xmlcheck_global_cleanup(void)
{
    if (prev_loader != NULL && xmlGetExternalEntityLoader() == safe_loader)
        xmlSetExternalEntityLoader(prev_loader);
    prev_loader = NULL;
    xmlCleanupParser();
}

/* ---- error hooks ---------------------------------------------------------- */

/* The thread's libxml2 error hooks while we run, and what was there before. */
struct hooks {
    xmlStructuredErrorFunc serror;
    void *serror_ctx;
    xmlGenericErrorFunc generic;
    void *generic_ctx;
};

static void quiet(void *ctx, const char *fmt, ...)
{
    (void)ctx;
    (void)fmt;
}

/* The hooks are thread-local in libxml2: installing them for the length of a
 * call (rather than once per thread) lets several checkers, or other libxml2
 * users, share a thread. */
static void hooks_install(struct hooks *saved, xmlStructuredErrorFunc fn, void *ctx)
{
    saved->serror = xmlStructuredError;
    saved->serror_ctx = xmlStructuredErrorContext;
    saved->generic = xmlGenericError;
    saved->generic_ctx = xmlGenericErrorContext;
    xmlSetStructuredErrorFunc(ctx, fn);
    xmlSetGenericErrorFunc(NULL, quiet);
}

static void hooks_restore(const struct hooks *saved)
{
    xmlSetStructuredErrorFunc(saved->serror_ctx, saved->serror);
    xmlSetGenericErrorFunc(saved->generic_ctx, saved->generic);
}

/* ---- distinct names ------------------------------------------------------- */

/* Counts NAME (a dictionary pointer: equal names, equal pointers) among this
 * run's names; past XMLCHECK_MAX_NAMES the run is refused. Not stopped
 * here (as the DOCTYPE is): the schema plug still reads this element's
 * attributes from the input after us; feed stops at the next piece. */
static void note_name(struct xmlcheck *xc, const xmlChar *name)
{
    struct nameset *ns = &xc->names;
    if (name == NULL || ns->count > XMLCHECK_MAX_NAMES)
        return;
    size_t mask = ((size_t)1 << NAMESET_BITS) - 1;
    size_t h = (size_t)(((uint64_t)(uintptr_t)name * ns->key) >> (64 - NAMESET_BITS));
    for (; ns->slot[h] != NULL; h = (h + 1) & mask)
        if (ns->slot[h] == name)
            return;
    ns->slot[h] = name;
    ns->used[ns->count++] = (uint16_t)h;
    if (ns->count > XMLCHECK_MAX_NAMES && !xc->malformed.set) {
        int line, column;
        parser_position(xc, &line, &column);
        char msg[XMLCHECK_MSG_LEN];
        snprintf(msg, sizeof msg,
                 "more than %d distinct names (the limit per document: element, attribute, "
                 "prefix, namespace and PI names)",
                 XMLCHECK_MAX_NAMES);
        finding_set(&xc->malformed, line, column, msg);
    }
}

static void names_clear(struct nameset *ns)
{
    for (int i = 0; i < ns->count; i++)
        ns->slot[ns->used[i]] = NULL;
    ns->count = 0;
}

/* ---- SAX callbacks (user data: the xmlcheck) ----------------------------- */

/* Parser errors reach us through the thread's structured hook: a context's
 * sax->serror misses some I/O errors, and the schema plug does not forward it.
 * The first error wins; warnings are not errors. */
static void on_parse_error(void *ctx, xmlErrorPtr err)
{
    struct xmlcheck *xc = ctx;
    if (err == NULL || err->level < XML_ERR_ERROR || xc->malformed.set)
        return;
    int line = err->line, column = err->int2;
    if (line <= 0)
        parser_position(xc, &line, &column);
    const char *msg = err->message != NULL ? err->message : "not well-formed";
    char better[XMLCHECK_MSG_LEN];
    /* At the end of a pushed document libxml2 calls any unfinished document
     * "Extra content at the end of the document": say what is missing. */
    xmlParserCtxtPtr ctxt = xc->ctxt;
    if (err->code == XML_ERR_DOCUMENT_END && ctxt != NULL && ctxt->instate != XML_PARSER_EPILOG) {
        if (ctxt->instate == XML_PARSER_START)
            msg = "Document is empty";
        else if (!xc->seen_root)
            msg = "Document has no root element";
        else if (ctxt->name != NULL) {
            snprintf(better, sizeof better, "Premature end of data in tag %.100s",
                     (const char *)ctxt->name);
            msg = better;
        } else
            msg = "Premature end of data";
    }
    finding_set(&xc->malformed, line, column, msg);
    /* The first error is the answer. libxml2 carries on after it, SAX off,
     * and formats every further error of a start tag it parses whole (1 MiB
     * of "&x" in one attribute value: 70,000 errors, 270 ms): its error
     * functions stay quiet once the parser is at EOF with SAX off, and its
     * loops stop there. Not xmlStopParser, which also repoints the input
     * under the parse in progress. */
    if (ctxt != NULL) {
        ctxt->disableSAX = 1;
        ctxt->instate = XML_PARSER_EOF;
    }
}

static void on_schema_error(void *ctx, xmlErrorPtr err)
{
    struct xmlcheck *xc = ctx;
    if (err == NULL || err->level < XML_ERR_ERROR || xc->invalid.set)
        return;
    /* Streaming validation knows no node: locate it where the parser is,
     * just past the tag that failed. */
    int line = err->line, column = err->int2;
    if (line <= 0)
        parser_position(xc, &line, &column);
    finding_set(&xc->invalid, line, column,
                err->message != NULL ? err->message : "schema validation failed");
}

/* Any DOCTYPE, with or without an internal subset: stopping here means no
 * entity is ever declared, expanded or loaded (XXE, billion laughs). The parse
 * then looks successful, hence the finding. */
static void on_internal_subset(void *ctx, const xmlChar *name, const xmlChar *external_id,
                               const xmlChar *system_id)
{
    struct xmlcheck *xc = ctx;
    (void)name;
    (void)external_id;
    (void)system_id;
    if (!xc->malformed.set) {
        int line, column;
        parser_position(xc, &line, &column);
        finding_set(&xc->malformed, line, column, "DOCTYPE is not allowed");
    }
    xmlStopParser(xc->ctxt);
}

static void on_start_element(void *ctx, const xmlChar *localname, const xmlChar *prefix,
                             const xmlChar *uri, int nb_namespaces, const xmlChar **namespaces,
                             int nb_attributes, int nb_defaulted, const xmlChar **attributes)
{
    struct xmlcheck *xc = ctx;
    /* The scan refuses depth first; this is the backstop for a body the
     * scan read otherwise than libxml2 (the push parser itself has no
     * depth limit). Not stopped here: the schema plug still reads this
     * element's attributes from the input after us. */
    if (++xc->depth > XMLCHECK_MAX_DEPTH && !xc->malformed.set) {
        int line, column;
        parser_position(xc, &line, &column);
        finding_set(&xc->malformed, line, column, DEPTH_TEXT);
    }
    /* Every name here is the dictionary's own pointer (values are not). */
    note_name(xc, localname);
    note_name(xc, prefix);
    note_name(xc, uri);
    for (int i = 0; i < nb_namespaces; i++) {
        note_name(xc, namespaces[2 * i]);
        note_name(xc, namespaces[2 * i + 1]);
    }
    for (int i = 0; i < nb_attributes + nb_defaulted; i++) {
        note_name(xc, attributes[5 * i]);
        note_name(xc, attributes[5 * i + 1]);
        note_name(xc, attributes[5 * i + 2]);
    }
    if (xc->seen_root)
        return;
    xc->seen_root = true;
    if (xc->root != NULL && strcmp((const char *)localname, xc->root) != 0) {
        /* Keep parsing: a body that is also malformed further on gets 400. */
        char msg[XMLCHECK_MSG_LEN];
        int line, column;
        parser_position(xc, &line, &column);
        snprintf(msg, sizeof msg, "root element is <%.100s>, expected <%.100s>",
                 (const char *)localname, xc->root);
        finding_set(&xc->root_err, line, column, msg);
    }
}

/* A PI's target is a name in the dictionary too. */
static void on_pi(void *ctx, const xmlChar *target, const xmlChar *data)
{
    (void)data;
    note_name(ctx, target);
}

static void on_end_element(void *ctx, const xmlChar *localname, const xmlChar *prefix,
                           const xmlChar *uri)
{
    struct xmlcheck *xc = ctx;
    (void)localname;
    (void)prefix;
    (void)uri;
    xc->depth--;
}

/* Everything else stays NULL: no tree, no entity handling, no external
 * subset. Errors come through the structured hooks. Only read: each parser
 * context takes a copy. */
static xmlSAXHandler sax_handler = {
    .internalSubset = on_internal_subset,
    .startElementNs = on_start_element,
    .endElementNs = on_end_element,
    .processingInstruction = on_pi,
    .initialized = XML_SAX2_MAGIC,
};

/* ---- schemas -------------------------------------------------------------- */

static void on_load_error(void *ctx, xmlErrorPtr err)
{
    struct capture *c = ctx;
    if (err == NULL || err->level < XML_ERR_ERROR || c->set)
        return;
    char msg[XMLCHECK_MSG_LEN];
    if (err->file != NULL && err->line > 0)
        snprintf(msg, sizeof msg, "%s:%d: %s", err->file, err->line,
                 err->message != NULL ? err->message : "error");
    else
        snprintf(msg, sizeof msg, "%s", err->message != NULL ? err->message : "error");
    sanitize(c->text, msg);
    c->set = true;
}

struct xmlcheck_schema *xmlcheck_schema_load(const char *path, char *err, size_t errlen)
{
    if (path == NULL || path[0] == '\0' || is_remote(path)) {
        snprintf(err, errlen, "a schema must be a local file");
        return NULL;
    }
    struct xmlcheck_schema *s = calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    struct capture cap = {0};
    struct hooks saved;
    hooks_install(&saved, on_load_error, &cap);
    load_errors = &cap;
    xmlSchemaParserCtxtPtr pctxt = xmlSchemaNewParserCtxt(path);
    if (pctxt != NULL) {
        xmlSchemaSetParserStructuredErrors(pctxt, on_load_error, &cap);
        s->xsd = xmlSchemaParse(pctxt);
        xmlSchemaFreeParserCtxt(pctxt);
    }
    load_errors = NULL;
    hooks_restore(&saved);
    if (s->xsd == NULL) {
        snprintf(err, errlen, "%s", cap.set ? cap.text : "cannot compile the schema");
        free(s);
        return NULL;
    }
    return s;
}

void xmlcheck_schema_free(struct xmlcheck_schema *schema)
{
    if (schema == NULL)
        return;
    xmlSchemaFree(schema->xsd);
    free(schema);
}

/* ---- the scan: bounds on what libxml2 does in worse than linear time ------ */

/* It tokenizes every well-formed document as libxml2 does (text, start,
 * end and empty tags with values in either quote, comments, PIs, CDATA, the
 * XML declaration; a DOCTYPE is skipped to its first '>', libxml2 refuses
 * it) and decides nothing else: on a body that is not well-formed it reads
 * on from the next '<', counting whatever it finds, in one pass, never past
 * the end. What it refuses, it refuses at the first tag over a limit. */
struct scan {
    const unsigned char *p; /* the text, UTF-8 */
    size_t n;               /* its length */
    size_t at;              /* refused: offset of the tag's '<' in p */
    size_t where;           /* refused: offset of what went over the limit */
    char message[XMLCHECK_MSG_LEN];
};

static bool scan_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* The end of the name at I: up to a blank, '/', '>', '=', a quote or '<'. */
static size_t scan_name(const struct scan *s, size_t i)
{
    while (i < s->n && !scan_space(s->p[i]) && s->p[i] != '/' && s->p[i] != '>' && s->p[i] != '=' &&
           s->p[i] != '"' && s->p[i] != '\'' && s->p[i] != '<')
        i++;
    return i;
}

static size_t scan_blanks(const struct scan *s, size_t i)
{
    while (i < s->n && scan_space(s->p[i]))
        i++;
    return i;
}

/* Just past the first WHAT at or after I, or the end. By memchr, which
 * reads only up to what it finds: memmem may read (and ASan's always
 * checks) all that is left, once per comment or end tag. */
static size_t scan_past(const struct scan *s, size_t i, const char *what)
{
    size_t wl = strlen(what);
    while (i < s->n) {
        const unsigned char *f = memchr(s->p + i, what[0], s->n - i);
        if (f == NULL)
            break;
        size_t at = (size_t)(f - s->p), k = 1;
        while (k < wl && at + k < s->n && s->p[at + k] == (unsigned char)what[k])
            k++;
        if (k == wl)
            return at + wl;
        i = at + 1;
    }
    return s->n;
}

/* Refused at TAG (the limit gone over at WHERE): "more than LIMIT WHAT
 * <element>". */
static bool scan_refuse(struct scan *s, size_t tag, size_t where, size_t name, size_t name_end,
                        int limit, const char *what)
{
    s->at = tag;
    s->where = where;
    snprintf(s->message, sizeof s->message, "more than %d %s <%.*s>", limit, what,
             (int)(name_end - name < 60 ? name_end - name : 60), (const char *)s->p + name);
    return false;
}

/* One start tag, I just past its '<'. Updates *I, *DEPTH and the namespaces
 * in scope (SCOPE, NS[depth]); false when it goes over a limit. */
static bool scan_start_tag(struct scan *s, size_t *i, int *depth, int *scope, uint16_t *ns)
{
    size_t tag = *i - 1, name = *i, name_end = scan_name(s, name), k = name_end;
    int attrs = 0, decls = 0;
    if (name_end == name)
        return true; /* not a tag: '<' then anything else */
    for (;;) {
        k = scan_blanks(s, k);
        if (k >= s->n)
            break;
        bool empty = s->p[k] == '/' && k + 1 < s->n && s->p[k + 1] == '>';
        if (s->p[k] == '>' || empty) {
            /* An empty element is one level deeper too, as libxml2 counts. */
            if (*depth + 1 > XMLCHECK_MAX_DEPTH) {
                s->at = tag;
                s->where = tag;
                snprintf(s->message, sizeof s->message, "%s", DEPTH_TEXT);
                return false;
            }
            if (!empty) {
                ns[(*depth)++] = (uint16_t)decls;
                *scope += decls;
            }
            k += empty ? 2 : 1;
            break;
        }
        size_t a = k;
        k = scan_name(s, k);
        if (k == a)
            break; /* not well-formed: on from here */
        bool decl = s->p[a] == 'x' && k - a >= 5 && memcmp(s->p + a, "xmlns", 5) == 0 &&
                    (k - a == 5 || (k - a > 6 && s->p[a + 5] == ':'));
        if (!decl && ++attrs > XMLCHECK_MAX_ATTRS)
            return scan_refuse(s, tag, a, name, name_end, XMLCHECK_MAX_ATTRS,
                               "attributes (the limit per element) on element");
        if (decl && ++decls > XMLCHECK_MAX_NS_DECLS)
            return scan_refuse(s, tag, a, name, name_end, XMLCHECK_MAX_NS_DECLS,
                               "namespace declarations (the limit per element) on element");
        if (decl && *scope + decls > XMLCHECK_MAX_NS_SCOPE)
            return scan_refuse(s, tag, a, name, name_end, XMLCHECK_MAX_NS_SCOPE,
                               "namespace declarations in scope (the limit) at element");
        k = scan_blanks(s, k);
        if (k >= s->n || s->p[k] != '=')
            break;
        k = scan_blanks(s, k + 1);
        if (k >= s->n || (s->p[k] != '"' && s->p[k] != '\''))
            break;
        const unsigned char *q = memchr(s->p + k + 1, s->p[k], s->n - k - 1);
        k = q != NULL ? (size_t)(q - s->p) + 1 : s->n;
    }
    *i = k;
    return true;
}

/* True when every tag of S is within the limits; else S says where. */
static bool scan_run(struct scan *s)
{
    uint16_t ns[XMLCHECK_MAX_DEPTH]; /* declarations of each open element */
    int depth = 0, scope = 0;
    size_t i = 0;
    while (i < s->n) {
        const unsigned char *lt = memchr(s->p + i, '<', s->n - i);
        if (lt == NULL)
            break;
        i = (size_t)(lt - s->p) + 1;
        /* Bytes compared one by one: memcmp per '<' is what libFuzzer's
         * interceptors make slowest. */
        size_t left = s->n - i;
        unsigned char c = left > 0 ? s->p[i] : 0;
        if (c == '!' && left >= 3 && s->p[i + 1] == '-' && s->p[i + 2] == '-')
            i = scan_past(s, i + 3, "-->");
        else if (c == '!' && left >= 8 && s->p[i + 1] == '[' &&
                 memcmp(s->p + i, "![CDATA[", 8) == 0)
            i = scan_past(s, i + 8, "]]>");
        else if (c == '?')
            i = scan_past(s, i + 1, "?>");
        else if (c == '!' || c == '/') {
            if (c == '/' && depth > 0)
                scope -= ns[--depth];
            i = scan_past(s, i + 1, ">");
        } else if (!scan_start_tag(s, &i, &depth, &scope, ns))
            return false;
    }
    return true;
}

/* Line and column of offset AT in S, counted as libxml2 counts them: lines
 * by '\n', columns by characters. */
static void scan_position(const struct scan *s, size_t at, int *line, int *column)
{
    long l = 1, c = 1;
    for (size_t k = 0; k < at && k < s->n; k++) {
        if (s->p[k] == '\n') {
            l++;
            c = 1;
        } else if ((s->p[k] & 0xc0) != 0x80)
            c++;
    }
    *line = l < INT32_MAX ? (int)l : INT32_MAX;
    *column = c < INT32_MAX ? (int)c : INT32_MAX;
}

/* Encoding errors met while making the scan's text are libxml2's to report
 * when it parses: quiet here. */
static void ignore_error(void *ctx, xmlErrorPtr err)
{
    (void)ctx;
    (void)err;
}

/* The encoding an ASCII-compatible body declares: its name into NAME, and the
 * offset just past its closing quote (where libxml2 switches), or 0. */
static size_t declared_encoding(const unsigned char *p, size_t n, char *name, size_t size)
{
    if (n < 6 || memcmp(p, "<?xml", 5) != 0 || !scan_space(p[5]))
        return 0;
    /* libxml2 reads the declaration however long its blanks are: so does
     * this (one linear search; a window here let a UTF-7 body named after
     * 600 blanks go unscanned). */
    size_t end = n;
    const unsigned char *close = memmem(p, end, "?>", 2);
    if (close != NULL)
        end = (size_t)(close - p);
    const unsigned char *e = memmem(p, end, "encoding", 8);
    if (e == NULL)
        return 0;
    struct scan s = {.p = p, .n = end};
    size_t k = scan_blanks(&s, (size_t)(e - p) + 8);
    if (k >= end || p[k] != '=')
        return 0;
    k = scan_blanks(&s, k + 1);
    if (k >= end || (p[k] != '"' && p[k] != '\''))
        return 0;
    const unsigned char *q = memchr(p + k + 1, p[k], end - k - 1);
    size_t v = k + 1, vl = q != NULL ? (size_t)(q - p) - v : 0;
    if (vl == 0 || vl >= size)
        return 0;
    memcpy(name, p + v, vl);
    name[vl] = '\0';
    return v + vl + 1;
}

/* FROM (LEN bytes) through H, appended to OUT as far as it converts (libxml2
 * stops at the same byte). */
static void transcode(xmlCharEncodingHandlerPtr h, const unsigned char *from, size_t len,
                      xmlBufferPtr out)
{
    xmlBufferPtr in = xmlBufferCreate();
    if (in == NULL)
        return;
    for (size_t off = 0; off < len;) {
        size_t piece = len - off < XMLCHECK_CHUNK ? len - off : XMLCHECK_CHUNK;
        if (xmlBufferAdd(in, from + off, (int)piece) != 0)
            break;
        off += piece;
        int before;
        do {
            before = xmlBufferLength(in);
            if (xmlCharEncInFunc(h, out, in) == -2)
                goto done;
        } while (xmlBufferLength(in) > 0 && xmlBufferLength(in) < before);
    }
done:
    xmlBufferFree(in);
}

/* Scan BODY as libxml2 will read it: UTF-8 as it is, anything else (UTF-16,
 * UCS-4, EBCDIC, a declared encoding) transcoded first with libxml2's own
 * handler, since a byte scan of those would count nothing. True when within
 * the limits; else F holds the refusal and *CUT how much of BODY libxml2 may
 * parse first, so that an error of its own before that place wins (a
 * DOCTYPE...): 0 when the scan read a transcoding. */
static bool scan_body(const char *body, size_t len, size_t *cut, struct finding *f)
{
    const unsigned char *p = (const unsigned char *)body;
    struct scan s = {.p = p, .n = len};
    xmlCharEncodingHandlerPtr h = NULL;
    size_t from = 0, keep = 0; /* transcode from here; before it, KEEP bytes as they are */
    if (len >= 4 && len < (size_t)INT32_MAX / 4) {
        /* "UTF-8" for "<?xm" too: ASCII-compatible, the declaration says. */
        xmlCharEncoding enc = xmlDetectCharEncoding(p, 4);
        if (p[0] == 0xef && p[1] == 0xbb && p[2] == 0xbf) { /* a BOM, which libxml2 skips */
            s.p += 3;
            s.n -= 3;
        } else if (enc != XML_CHAR_ENCODING_NONE && enc != XML_CHAR_ENCODING_UTF8) {
            h = xmlGetCharEncodingHandler(enc);
            if ((p[0] == 0xff && p[1] == 0xfe) || (p[0] == 0xfe && p[1] == 0xff))
                from = 2; /* a UTF-16 BOM, which libxml2 skips */
        }
        char name[64];
        size_t after = h == NULL ? declared_encoding(s.p, s.n, name, sizeof name) : 0;
        /* libxml2 keeps reading a document labelled UTF-16 as bytes (and
         * refuses it). */
        if (after > 0 && strcasecmp(name, "UTF-8") != 0 && strcasecmp(name, "UTF8") != 0 &&
            strcasecmp(name, "UTF-16") != 0 && strcasecmp(name, "UTF16") != 0) {
            h = xmlFindCharEncodingHandler(name);
            keep = after;
            from = (size_t)(s.p - p) + after;
        }
    }
    xmlBufferPtr view = NULL;
    if (h != NULL) {
        struct hooks saved;
        hooks_install(&saved, ignore_error, NULL);
        view = xmlBufferCreate();
        if (view != NULL && (keep == 0 || xmlBufferAdd(view, s.p, (int)keep) == 0)) {
            transcode(h, p + from, len - from, view);
            s.p = xmlBufferContent(view);
            s.n = (size_t)xmlBufferLength(view);
        }
        hooks_restore(&saved);
        (void)xmlCharEncCloseFunc(h);
    }
    bool ok = scan_run(&s);
    if (!ok) {
        int line, column;
        scan_position(&s, s.where, &line, &column);
        finding_set(f, line, column, s.message);
        *cut = view != NULL ? 0 : (size_t)(s.p - p) + s.at;
    }
    if (view != NULL)
        xmlBufferFree(view);
    return ok;
}

/* ---- checker -------------------------------------------------------------- */

static xmlParserCtxtPtr parser_new(struct xmlcheck *xc)
{
    xmlParserCtxtPtr ctxt = xmlCreatePushParserCtxt(&sax_handler, xc, NULL, 0, NULL);
    if (ctxt != NULL)
        (void)xmlCtxtUseOptions(ctxt, XMLCHECK_PARSE_OPTIONS);
    return ctxt;
}

struct xmlcheck *xmlcheck_new(void)
{
    struct xmlcheck *xc = calloc(1, sizeof *xc);
    if (xc == NULL)
        return NULL;
    xc->names.slot = calloc((size_t)1 << NAMESET_BITS, sizeof *xc->names.slot);
    xc->ctxt = parser_new(xc);
    if (xc->ctxt == NULL || xc->names.slot == NULL) {
        xmlcheck_free(xc);
        return NULL;
    }
    /* Pointers a client can steer (by the lengths of its names) land
     * anywhere in the set only under a key it cannot guess. */
    seed_fill(&xc->names.key, sizeof xc->names.key, xc);
    xc->names.key |= 1;
    return xc;
}

void xmlcheck_free(struct xmlcheck *xc)
{
    if (xc == NULL)
        return;
    if (xc->ctxt != NULL)
        xmlFreeParserCtxt(xc->ctxt);
    free(xc->names.slot);
    free(xc);
}

static enum xmlcheck_status result(struct xmlcheck_result *res, enum xmlcheck_status st,
                                   const struct finding *f)
{
    res->status = st;
    res->line = f->line;
    res->column = f->column;
    memcpy(res->message, f->message, sizeof res->message);
    return st;
}

/* Feed BODY to the (reset) parser piece by piece, the last one with
 * TERMINATE; a run already refused goes no further. */
static void feed(struct xmlcheck *xc, const char *body, size_t len, int terminate)
{
    while (len > XMLCHECK_CHUNK) {
        (void)xmlParseChunk(xc->ctxt, body, (int)XMLCHECK_CHUNK, 0);
        if (xc->malformed.set)
            return;
        body += XMLCHECK_CHUNK;
        len -= XMLCHECK_CHUNK;
    }
    (void)xmlParseChunk(xc->ctxt, body, (int)len, terminate);
}

enum xmlcheck_status xmlcheck_run(struct xmlcheck *xc, const char *body, size_t len,
                                  const char *root, const struct xmlcheck_schema *schema,
                                  struct xmlcheck_result *res)
{
    memset(&xc->malformed, 0, sizeof xc->malformed);
    memset(&xc->root_err, 0, sizeof xc->root_err);
    memset(&xc->invalid, 0, sizeof xc->invalid);
    xc->root = root != NULL && root[0] != '\0' ? root : NULL;
    xc->seen_root = false;
    xc->depth = 0;

    if (body == NULL && len > 0) {
        finding_set(&xc->malformed, 0, 0, "no body");
        return result(res, XMLCHECK_MALFORMED, &xc->malformed);
    }
    if (body == NULL)
        body = "";
    if (xc->ctxt == NULL && (xc->ctxt = parser_new(xc)) == NULL) {
        /* No status for "us, not you": refuse rather than let it through. */
        finding_set(&xc->malformed, 0, 0, "cannot check the body: out of memory");
        return result(res, XMLCHECK_MALFORMED, &xc->malformed);
    }

    /* Over a limit: libxml2 parses only what comes before that tag (an
     * error of its own there comes first), then the limit is the answer. */
    struct finding limit = {0};
    size_t cut = len;
    bool over = !scan_body(body, len, &cut, &limit);
    names_clear(&xc->names);

    struct hooks saved;
    hooks_install(&saved, on_parse_error, xc);
    in_request = true;

    /* The first 4 bytes tell the encoding (UTF-16 BOM...): the push reset
     * looks at them; the rest is parsed in feed. */
    size_t head = cut < 4 ? 0 : 4;
    xmlSchemaValidCtxtPtr vctxt = NULL;
    xmlSchemaSAXPlugPtr plug = NULL;
    if (xmlCtxtResetPush(xc->ctxt, body, (int)head, NULL, NULL) != 0) {
        finding_set(&xc->malformed, 0, 0, "cannot check the body: out of memory");
    } else {
        (void)xmlCtxtUseOptions(xc->ctxt, XMLCHECK_PARSE_OPTIONS);
        if (schema != NULL) {
            /* A validation context per run: measured 0.1 us to make and free
             * (of 6.6 us for 1 KB), so no cache to keep in step. */
            vctxt = xmlSchemaNewValidCtxt(schema->xsd);
            if (vctxt != NULL) {
                xmlSchemaSetValidStructuredErrors(vctxt, on_schema_error, xc);
                plug = xmlSchemaSAXPlug(vctxt, &xc->ctxt->sax, &xc->ctxt->userData);
            }
            if (plug == NULL)
                finding_set(&xc->invalid, 0, 0, "cannot start schema validation");
        }
        feed(xc, body + head, cut - head, !over);
        if (plug != NULL) {
            /* Validation may have failed without telling us (internal error). */
            if (!xc->invalid.set && xmlSchemaIsValid(vctxt) != 1) {
                int line, column;
                parser_position(xc, &line, &column);
                finding_set(&xc->invalid, line, column, "schema validation failed");
            }
            (void)xmlSchemaSAXUnplug(plug);
            /* libxml2 2.9.14 leaks the identity-constraint matchers
             * (xs:unique, xs:key) of elements still open when validation
             * ends, 72 bytes each per body cut short inside such an
             * element: unplugging releases them into the validator's
             * matcher cache after emptying it. A second plug/unplug
             * empties it again. */
            if (xc->depth > 0) {
                xmlSAXHandlerPtr sax = NULL;
                void *user = NULL;
                xmlSchemaSAXPlugPtr again = xmlSchemaSAXPlug(vctxt, &sax, &user);
                if (again != NULL)
                    (void)xmlSchemaSAXUnplug(again);
            }
        }
        if (vctxt != NULL)
            xmlSchemaFreeValidCtxt(vctxt);
        if (!xc->malformed.set && over)
            xc->malformed = limit;
        if (!xc->malformed.set && !xc->ctxt->wellFormed) {
            int line, column;
            parser_position(xc, &line, &column);
            finding_set(&xc->malformed, line, column, "not well-formed");
        }
        if (!xc->malformed.set && !xc->seen_root) {
            int line, column;
            parser_position(xc, &line, &column);
            finding_set(&xc->malformed, line, column, "no root element");
        }
    }

    in_request = false;
    hooks_restore(&saved);

    /* Names interned by this context pile up across requests: start afresh
     * once they weigh too much, or once they are so many that lookups slow
     * down (the dictionary's table stops growing). */
    if (xc->ctxt != NULL && (xmlDictGetUsage(xc->ctxt->dict) > XMLCHECK_DICT_RECYCLE ||
                             xmlDictSize(xc->ctxt->dict) > XMLCHECK_MAX_NAMES)) {
        xmlFreeParserCtxt(xc->ctxt);
        xc->ctxt = NULL;
    }

    if (xc->malformed.set)
        return result(res, XMLCHECK_MALFORMED, &xc->malformed);
    if (xc->root_err.set)
        return result(res, XMLCHECK_INVALID, &xc->root_err);
    if (xc->invalid.set)
        return result(res, XMLCHECK_INVALID, &xc->invalid);
    res->status = XMLCHECK_OK;
    res->line = 0;
    res->column = 0;
    snprintf(res->message, sizeof res->message, "ok");
    return XMLCHECK_OK;
}

int xmlcheck_format(const struct xmlcheck_result *res, char *buf, size_t buflen)
{
    if (res == NULL || buf == NULL || buflen == 0)
        return -1;
    return snprintf(buf, buflen, "line %d, column %d: %s", res->line, res->column, res->message);
}
