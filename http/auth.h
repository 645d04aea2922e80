/* auth.h - bearer tokens: a token file parsed into SHA-256 digests, and a
 * check of an Authorization header against them in constant time. */
#ifndef BRIDGE_HTTP_AUTH_H
#define BRIDGE_HTTP_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#define AUTH_DIGEST_LEN 32 /* SHA-256 */

/* The tokens of one file, immutable once loaded; shared read-only by every
 * worker. */
struct auth_tokens;

enum auth_result {
    AUTH_OK,      /* one of the tokens */
    AUTH_MISSING, /* no Authorization header, or not a Bearer one */
    AUTH_INVALID, /* a Bearer token that is none of them */
};

/* Parse TEXT (LEN bytes): one token per line, surrounding blanks and a
 * trailing CR ignored, blank lines and lines starting with '#' skipped. A
 * token is printable ASCII without spaces (RFC 6750's b64token and more).
 * NULL with the reason (naming NAME and the line) in err when a line is not
 * a token or there is no token at all. */
struct auth_tokens *auth_tokens_parse(const char *text, size_t len, const char *name, char *err,
                                      size_t errlen) __attribute__((warn_unused_result));
/* auth_tokens_parse of the file PATH. */
struct auth_tokens *auth_tokens_load(const char *path, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void auth_tokens_free(struct auth_tokens *t);
size_t auth_tokens_count(const struct auth_tokens *t);

/* Is TOKEN (LEN bytes) one of T's? Compares the token's digest with every
 * stored digest, each compare touching every byte: the time depends on LEN
 * and on the number of tokens, never on how much of a token matched. */
bool auth_tokens_match(const struct auth_tokens *t, const char *token, size_t len);
/* The bearer token of an Authorization header value, as auth_check reads
 * it ("Bearer" in any case, blanks around the token dropped): its start and
 * *LEN, or NULL when there is none. */
const char *auth_bearer(const char *authorization, size_t *len);
/* The value of an Authorization header (NULL when absent) against T. */
enum auth_result auth_check(const struct auth_tokens *t, const char *authorization);

/* A == B over N bytes, in time that depends on N only. */
bool auth_equal_ct(const unsigned char *a, const unsigned char *b, size_t n);

#endif
