/* tls.h - the HTTPS listener's one OpenSSL context: made once before the
 * workers start from [http] tls_cert and tls_key, then shared read-only by
 * every worker (each connection gets its own SSL from it). */
#ifndef BRIDGE_HTTP_TLS_H
#define BRIDGE_HTTP_TLS_H

#include <stddef.h>

struct tls_server;

/* Load CERT (PEM, leaf first, chain after it) and KEY (PEM) and check that
 * they belong together. TLS 1.2 and later only. NULL with the reason, naming
 * the file, in err. */
struct tls_server *tls_server_new(const char *cert, const char *key, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void tls_server_free(struct tls_server *t);
/* A new SSL for one accepted connection (an SSL *), NULL when out of memory. */
void *tls_server_ssl(const struct tls_server *t);

#endif
