/* xmlcheck.c - is a request body acceptable XML? One reused SAX2 push parser per
 * worker thread, no tree: a DOCTYPE stops it at once (so no DTD, entity or network
 * load ever happens), then the root name and, streaming through the same parse, an
 * XSD shared read-only by every worker. */
#include "xmlcheck.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/catalog.h>
#include <libxml/dict.h>
#include <libxml/globals.h>
#include <libxml/parser.h>
#include <libxml/parserInternals.h>
#include <libxml/xmlerror.h>
#include <libxml/xmlIO.h>
#include <libxml/xmlschemas.h>

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
 * XML_PARSE_HUGE, enforced in our callbacks. */
#define XMLCHECK_MAX_DEPTH 256

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

struct xmlcheck {
    xmlParserCtxtPtr ctxt; /* push parser, reset per run; NULL: make anew */

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
    (void)prefix;
    (void)uri;
    (void)nb_namespaces;
    (void)namespaces;
    (void)nb_attributes;
    (void)nb_defaulted;
    (void)attributes;
    if (++xc->depth > XMLCHECK_MAX_DEPTH && !xc->malformed.set) {
        /* Not stopped here: the schema plug still reads this element's
         * attributes from the input after us. feed stops at the next piece. */
        char msg[XMLCHECK_MSG_LEN];
        int line, column;
        parser_position(xc, &line, &column);
        snprintf(msg, sizeof msg, "Excessive depth in document: more than %d nested elements",
                 XMLCHECK_MAX_DEPTH);
        finding_set(&xc->malformed, line, column, msg);
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
    xc->ctxt = parser_new(xc);
    if (xc->ctxt == NULL) {
        free(xc);
        return NULL;
    }
    return xc;
}

void xmlcheck_free(struct xmlcheck *xc)
{
    if (xc == NULL)
        return;
    if (xc->ctxt != NULL)
        xmlFreeParserCtxt(xc->ctxt);
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
 * terminate set; a run already refused goes no further. */
static void feed(struct xmlcheck *xc, const char *body, size_t len)
{
    while (len > XMLCHECK_CHUNK) {
        (void)xmlParseChunk(xc->ctxt, body, (int)XMLCHECK_CHUNK, 0);
        if (xc->malformed.set)
            return;
        body += XMLCHECK_CHUNK;
        len -= XMLCHECK_CHUNK;
    }
    (void)xmlParseChunk(xc->ctxt, body, (int)len, 1);
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

    struct hooks saved;
    hooks_install(&saved, on_parse_error, xc);
    in_request = true;

    /* The first 4 bytes tell the encoding (UTF-16 BOM...): the push reset
     * looks at them; the rest is parsed in feed. */
    size_t head = len < 4 ? 0 : 4;
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
        feed(xc, body + head, len - head);
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
     * once they weigh too much. */
    if (xc->ctxt != NULL && xmlDictGetUsage(xc->ctxt->dict) > XMLCHECK_DICT_RECYCLE) {
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
