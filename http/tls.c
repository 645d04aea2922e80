/* tls.c - the HTTPS listener's OpenSSL context. SSL_CTX is safe to share
 * between threads once set up: only SSL_new reads it (and its session
 * cache, which OpenSSL locks itself). */
#include "http/tls.h"
#include "bridge/base/errbuf.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
/* Ask clients for certificates of the CAs in CA (MODE optional or
 * required). 0 / -1 with the reason in ERR. */
static int setup_clients(struct tls_server *t, const char *ca, enum http_client_auth mode,
                         char *err, size_t errlen)
{
    if (mode == HTTP_CLIENT_AUTH_NONE)
        return 0;
    if (SSL_CTX_load_verify_locations(t->ctx, ca, NULL) != 1)
        return errf(err, errlen, "tls_client_ca %s: not a PEM certificate: %s", ca, ssl_reason());
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca);
    if (names == NULL)
        return errf(err, errlen, "tls_client_ca %s: no CA certificate in it: %s", ca, ssl_reason());
    SSL_CTX_set_client_CA_list(t->ctx, names); /* the CAs a client is told to choose from */
    SSL_CTX_set_verify(
        t->ctx,
        SSL_VERIFY_PEER | (mode == HTTP_CLIENT_AUTH_REQUIRED ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
        NULL);
    SSL_CTX_set_verify_depth(t->ctx, 4);
    /* Session resumption would skip the certificate: the session keeps it
     * (SSL_get_peer_certificate on a resumed session), but a context id is
     * needed for resumption with verification at all. */
    static const unsigned char sid[] = "ingest-bridge";
    (void)SSL_CTX_set_session_id_context(t->ctx, sid, sizeof sid - 1);
    return 0;
}

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

struct tls_server *tls_server_new(const char *cert, const char *key, const char *client_ca,
                                  enum http_client_auth client_auth, char *err, size_t errlen)
{
    struct tls_server *t = calloc(1, sizeof *t);
    if (setup(t, cert, key, err, errlen) != 0 ||
        setup_clients(t, client_ca, client_auth, err, errlen) != 0) {
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

/* NAME (LEN bytes) into P's names when it fits and has no NUL. */
static void add_name(struct tls_peer *p, const unsigned char *name, int len)
{
    if (name == NULL || len <= 0 || len > TLS_PEER_NAME_MAX || p->n == TLS_PEER_NAMES ||
        memchr(name, '\0', (size_t)len) != NULL)
        return;
    memcpy(p->names[p->n], name, (size_t)len);
    p->names[p->n][len] = '\0';
    p->n++;
}

bool tls_peer_read(void *ssl, struct tls_peer *p)
{
    memset(p, 0, sizeof *p);
    if (ssl == NULL || SSL_get_verify_result(ssl) != X509_V_OK)
        return false;
    X509 *x = SSL_get1_peer_certificate(ssl);
    if (x == NULL)
        return false;
    X509_NAME *subject = X509_get_subject_name(x);
    /* Whole or not at all: a consumer may authorize on it, and a DN cut
     * short can read as another one. */
    BIO *b = BIO_new(BIO_s_mem());
    if (b != NULL && X509_NAME_print_ex(b, subject, 0, XN_FLAG_RFC2253) >= 0 &&
        BIO_pending(b) < (int)sizeof p->subject) {
        int n = BIO_read(b, p->subject, (int)sizeof p->subject - 1);
        p->subject[n > 0 ? n : 0] = '\0';
    }
    BIO_free(b);
    int i = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
    if (i >= 0) {
        ASN1_STRING *cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i));
        unsigned char *utf8 = NULL;
        int len = ASN1_STRING_to_UTF8(&utf8, cn);
        add_name(p, utf8, len);
        OPENSSL_free(utf8);
    }
    GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (int k = 0; sans != NULL && k < sk_GENERAL_NAME_num(sans); k++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, k);
        if (g->type == GEN_DNS || g->type == GEN_EMAIL || g->type == GEN_URI)
            add_name(p, ASN1_STRING_get0_data(g->d.ia5), ASN1_STRING_length(g->d.ia5));
    }
    GENERAL_NAMES_free(sans);
    X509_free(x);
    return true;
}
