/* xmlcheck.h - is a request body acceptable XML? A reused SAX push parser per
 * worker (no tree, no DTD, no entities, no network), plus optional root-name
 * and XSD checks. */
#ifndef BRIDGE_XMLCHECK_H
#define BRIDGE_XMLCHECK_H

#include <stdbool.h>
#include <stddef.h>

#define XMLCHECK_MSG_LEN 256

enum xmlcheck_status {
    XMLCHECK_OK = 0,
    XMLCHECK_MALFORMED, /* not well-formed, bad encoding, DOCTYPE: answer 400 */
    XMLCHECK_INVALID,   /* well-formed but fails root/schema: answer 422 */
};

struct xmlcheck_result {
    enum xmlcheck_status status;
    int line;                       /* 1-based, 0 if unknown */
    int column;                     /* 1-based, 0 if unknown */
    char message[XMLCHECK_MSG_LEN]; /* one line, no trailing newline */
};

/* A compiled XSD, shared read-only by every worker. */
struct xmlcheck_schema;

/* Once in main, before any thread: xmlInitParser and global hardening. */
void xmlcheck_global_init(void);
void xmlcheck_global_cleanup(void);

/* Load and compile an XSD from PATH (local file only, no network).
 * NULL on failure with the reason in err. */
struct xmlcheck_schema *xmlcheck_schema_load(const char *path, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void xmlcheck_schema_free(struct xmlcheck_schema *schema);

/* Per-thread checker; create and use it on the same thread. */
struct xmlcheck;
struct xmlcheck *xmlcheck_new(void) __attribute__((warn_unused_result));
void xmlcheck_free(struct xmlcheck *xc);

/* Check BODY. ROOT: required root element local name, or NULL/"" for any.
 * SCHEMA: NULL for none. Fills RES; returns res->status. */
enum xmlcheck_status xmlcheck_run(struct xmlcheck *xc, const char *body, size_t len,
                                  const char *root, const struct xmlcheck_schema *schema,
                                  struct xmlcheck_result *res);

/* "line 3, column 7: <message>" */
int xmlcheck_format(const struct xmlcheck_result *res, char *buf, size_t buflen);

#endif
