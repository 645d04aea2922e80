/* tls.h - the HTTPS listener's one OpenSSL context: made once before the
 * workers start from [http] tls_cert and tls_key, then shared read-only by
 * every worker (each connection gets its own SSL from it). */
#ifndef BRIDGE_HTTP_TLS_H
#define BRIDGE_HTTP_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "http/http_config.h"

struct tls_server;

#define TLS_PEER_NAMES 8      /* names kept of one client certificate */
#define TLS_PEER_NAME_MAX 128 /* longest name kept; longer ones are left out */

/* A client's verified certificate: what a route's client_subjects match. */
struct tls_peer {
    char subject[1024]; /* the subject, RFC 2253 one line ("CN=a,O=b"); "" when longer */
    /* The subject's CN, then the SAN's DNS names, emails and URIs. */
    char names[TLS_PEER_NAMES][TLS_PEER_NAME_MAX + 1];
    size_t n;
};

/* Load CERT (PEM, leaf first, chain after it) and KEY (PEM) and check that
 * they belong together; with CLIENT_AUTH not HTTP_CLIENT_AUTH_NONE, ask
 * clients for a certificate of the CAs in CLIENT_CA (required: refuse the
 * handshake without one). TLS 1.2 and later only. NULL with the reason,
 * naming the file, in err. */
struct tls_server *tls_server_new(const char *cert, const char *key, const char *client_ca,
                                  enum http_client_auth client_auth, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* The client certificate SSL (an SSL *) verified in its handshake, into P;
 * false when there is none. */
bool tls_peer_read(void *ssl, struct tls_peer *p);
void tls_server_free(struct tls_server *t);
/* A new SSL for one accepted connection (an SSL *), NULL when out of memory. */
void *tls_server_ssl(const struct tls_server *t);

#endif
