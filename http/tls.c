/* tls.c - the HTTPS listener's OpenSSL context. SSL_CTX is safe to share
 * between threads once set up: only SSL_new reads it (and its session
 * cache, which OpenSSL locks itself). */
#include "http/tls.h"
#include "bridge/base/errbuf.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>

struct tls_server {
    SSL_CTX *ctx; /* read-only once tls_server_new returns */
};

/* The first queued OpenSSL error as text ("no start line", ...). */
static const char *ssl_reason(void)
{
    unsigned long e = ERR_get_error();
    const char *r = e != 0 ? ERR_reason_error_string(e) : NULL;
    ERR_clear_error();
    return r != NULL ? r : "unknown error";
}

/* T's context from CERT and KEY; T may be NULL (calloc failed). 0 / -1
 * with the reason in ERR. */
static int setup(struct tls_server *t, const char *cert, const char *key, char *err, size_t errlen)
{
    if (t == NULL)
        return errf(err, errlen, "out of memory");
    ERR_clear_error();
    t->ctx = SSL_CTX_new(TLS_server_method());
    if (t->ctx == NULL)
        return errf(err, errlen, "TLS: %s", ssl_reason());
    if (SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION) != 1)
        return errf(err, errlen, "TLS: cannot require TLS 1.2: %s", ssl_reason());
    /* No renegotiation (a client could make us spend CPU at will), no
     * compression (CRIME). Session tickets keep reconnects cheap. */
    SSL_CTX_set_options(t->ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                    SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* libevent hands OpenSSL the same buffer again after a partial write
     * only if it may move between calls. */
    SSL_CTX_set_mode(t->ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_ENABLE_PARTIAL_WRITE |
                                 SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_use_certificate_chain_file(t->ctx, cert) != 1)
        return errf(err, errlen, "tls_cert %s: not a PEM certificate: %s", cert, ssl_reason());
    if (SSL_CTX_use_PrivateKey_file(t->ctx, key, SSL_FILETYPE_PEM) != 1) {
        if (ERR_GET_REASON(ERR_peek_error()) == X509_R_KEY_VALUES_MISMATCH) {
            ERR_clear_error();
            return errf(err, errlen, "tls_key %s does not belong to tls_cert %s", key, cert);
        }
        /* ssl_reason clears the queue */
        return errf(err, errlen, "tls_key %s: not a PEM private key (without a passphrase): %s",
                    key, ssl_reason());
    }
    if (SSL_CTX_check_private_key(t->ctx) != 1)
        return errf(err, errlen, "tls_key %s does not belong to tls_cert %s: %s", key, cert,
                    ssl_reason());
    return 0;
}

struct tls_server *tls_server_new(const char *cert, const char *key, char *err, size_t errlen)
{
    struct tls_server *t = calloc(1, sizeof *t);
    if (setup(t, cert, key, err, errlen) != 0) {
        tls_server_free(t);
        return NULL;
    }
    return t;
}

void tls_server_free(struct tls_server *t)
{
    if (t == NULL)
        return;
    SSL_CTX_free(t->ctx);
    free(t);
}

void *tls_server_ssl(const struct tls_server *t)
{
    return SSL_new(t->ctx);
}
