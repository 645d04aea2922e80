/* auth.c - bearer tokens. Tokens are kept as SHA-256 digests, never as
 * text: a request's token is hashed once and its digest compared with every
 * stored one by a loop without early exit, so neither where a guess goes
 * wrong nor which token it resembles shows in the time taken. */
#include "http/auth.h"
#include "bridge/base/errbuf.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define AUTH_MAX_FILE (1024 * 1024) /* a token file bigger than this is a mistake */

struct auth_tokens {
    size_t n;                                 /* tokens */
    unsigned char (*digest)[AUTH_DIGEST_LEN]; /* n SHA-256 digests */
};

bool auth_equal_ct(const unsigned char *a, const unsigned char *b, size_t n)
{
    /* volatile: keeps the compiler from turning the loop into one that
     * stops at the first difference. */
    volatile unsigned char diff = 0;
    for (size_t i = 0; i < n; i++)
        diff |= a[i] ^ b[i];
    return diff == 0;
}

static int sha256(const void *p, size_t len, unsigned char out[AUTH_DIGEST_LEN])
{
    unsigned int n = 0;
    if (EVP_Digest(p, len, out, &n, EVP_sha256(), NULL) != 1 || n != AUTH_DIGEST_LEN)
        return -1;
    return 0;
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

/* The tokens of TEXT (LEN bytes; NAME for errors) into T, which may be NULL
 * (calloc failed). 0 / -1 with the reason in ERR. */
static int parse_into(struct auth_tokens *t, const char *text, size_t len, const char *name,
                      char *err, size_t errlen)
{
    size_t cap = 0;
    if (t == NULL)
        return errf(err, errlen, "%s: out of memory", name);
    const char *p = text, *end = text + len;
    for (int line = 1; p < end; line++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl != NULL ? nl : end;
        const char *b = p;
        p = nl != NULL ? nl + 1 : end;
        while (b < e && is_blank(*b))
            b++;
        while (e > b && is_blank(e[-1]))
            e--;
        if (b == e || *b == '#')
            continue;
        for (const char *q = b; q < e; q++) {
            if ((unsigned char)*q <= 0x20 || (unsigned char)*q >= 0x7f)
                return errf(err, errlen,
                            "%s:%d: a token is printable ASCII without spaces, one per line", name,
                            line);
        }
        if (t->n == cap) {
            size_t ncap = cap ? cap * 2 : 4;
            void *nd = realloc(t->digest, ncap * sizeof *t->digest);
            if (nd == NULL)
                return errf(err, errlen, "%s: out of memory", name);
            t->digest = nd;
            cap = ncap;
        }
        if (sha256(b, (size_t)(e - b), t->digest[t->n]) != 0)
            return errf(err, errlen, "%s: SHA-256 unavailable", name);
        t->n++;
    }
    if (t->n == 0)
        return errf(err, errlen,
                    "%s: no token in the file (one per line; '#' starts a comment line)", name);
    return 0;
}

struct auth_tokens *auth_tokens_parse(const char *text, size_t len, const char *name, char *err,
                                      size_t errlen)
{
    struct auth_tokens *t = calloc(1, sizeof *t);
    if (parse_into(t, text, len, name, err, errlen) != 0) {
        auth_tokens_free(t);
        return NULL;
    }
    return t;
}

struct auth_tokens *auth_tokens_load(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(AUTH_MAX_FILE + 1);
    size_t n = buf != NULL ? fread(buf, 1, AUTH_MAX_FILE + 1, f) : 0;
    bool bad = buf == NULL || ferror(f);
    fclose(f);
    struct auth_tokens *t = NULL;
    if (bad)
        snprintf(err, errlen, "%s: cannot read it", path);
    else if (n > AUTH_MAX_FILE)
        snprintf(err, errlen, "%s: larger than %d bytes", path, AUTH_MAX_FILE);
    else if (memchr(buf, '\0', n) != NULL)
        snprintf(err, errlen, "%s: NUL byte in a token file", path);
    else
        t = auth_tokens_parse(buf, n, path, err, errlen);
    if (buf != NULL)
        memset(buf, 0, n); /* the tokens' text does not outlive their digests */
    free(buf);
    return t;
}

void auth_tokens_free(struct auth_tokens *t)
{
    if (t == NULL)
        return;
    free(t->digest);
    free(t);
}

size_t auth_tokens_count(const struct auth_tokens *t)
{
    return t->n;
}

bool auth_tokens_match(const struct auth_tokens *t, const char *token, size_t len)
{
    unsigned char d[AUTH_DIGEST_LEN];
    if (sha256(token, len, d) != 0)
        return false;
    bool found = false;
    for (size_t i = 0; i < t->n; i++)
        found |= auth_equal_ct(d, t->digest[i], AUTH_DIGEST_LEN);
    return found;
}

const char *auth_bearer(const char *authorization, size_t *len)
{
    if (authorization == NULL)
        return NULL;
    const char *v = authorization;
    while (*v == ' ' || *v == '\t')
        v++;
    /* RFC 6750 2.1: "Bearer" (any case), one or more spaces, the token. */
    if (strncasecmp(v, "Bearer", 6) != 0 || (v[6] != ' ' && v[6] != '\t'))
        return NULL;
    v += 6;
    while (*v == ' ' || *v == '\t')
        v++;
    size_t n = strlen(v);
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    if (n == 0)
        return NULL;
    *len = n;
    return v;
}

enum auth_result auth_check(const struct auth_tokens *t, const char *authorization)
{
    size_t len = 0;
    const char *v = auth_bearer(authorization, &len);
    if (v == NULL)
        return AUTH_MISSING;
    return auth_tokens_match(t, v, len) ? AUTH_OK : AUTH_INVALID;
}
