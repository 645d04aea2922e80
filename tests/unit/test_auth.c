/* test_auth.c - bearer tokens: the token file's rules, the Authorization
 * header's forms, and a compare that looks at every byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "http/auth.h"

static struct auth_tokens *parse_ok(const char *text)
{
    char err[256] = "";
    struct auth_tokens *t = auth_tokens_parse(text, strlen(text), "tokens", err, sizeof err);
    if (t == NULL)
        fail_msg("refused: %s\n--- file ---\n%s", err, text);
    return t;
}

static void parse_error(const char *text, const char *want)
{
    char err[256] = "";
    struct auth_tokens *t = auth_tokens_parse(text, strlen(text), "tokens", err, sizeof err);
    if (t != NULL) {
        auth_tokens_free(t);
        fail_msg("parsed, wanted error '%s'", want);
    }
    if (strcmp(err, want) != 0)
        fail_msg("error '%s', wanted '%s'", err, want);
}

static void test_file_format(void **state)
{
    (void)state;
    struct auth_tokens *t = parse_ok("# tokens of the ingest clients\n"
                                     "\n"
                                     "alpha-1\n"
                                     "   beta.2/x+y=   \r\n"
                                     "\t\n"
                                     "  # an indented comment\n"
                                     "gamma~3"); /* no newline at the end */
    assert_int_equal(auth_tokens_count(t), 3);
    assert_true(auth_tokens_match(t, "alpha-1", 7));
    assert_true(auth_tokens_match(t, "beta.2/x+y=", 11));
    assert_true(auth_tokens_match(t, "gamma~3", 7));
    /* Only whole tokens: prefixes, extensions, other case, the comment. */
    assert_false(auth_tokens_match(t, "alpha-", 6));
    assert_false(auth_tokens_match(t, "alpha-12", 8));
    assert_false(auth_tokens_match(t, "ALPHA-1", 7));
    assert_false(auth_tokens_match(t, "# tokens of the ingest clients", 30));
    assert_false(auth_tokens_match(t, "", 0));
    auth_tokens_free(t);

    /* CRLF files and a lone token. */
    t = parse_ok("one\r\ntwo\r\n");
    assert_int_equal(auth_tokens_count(t), 2);
    assert_true(auth_tokens_match(t, "two", 3));
    auth_tokens_free(t);
}

static void test_file_errors(void **state)
{
    (void)state;
    parse_error("", "tokens: no token in the file (one per line; '#' starts a comment line)");
    parse_error("# only a comment\n\n   \n",
                "tokens: no token in the file (one per line; '#' starts a comment line)");
    parse_error("good\ntwo words\n",
                "tokens:2: a token is printable ASCII without spaces, one per line");
    parse_error("ok\nok\ncaf\xc3\xa9\n",
                "tokens:3: a token is printable ASCII without spaces, one per line");
    parse_error("a\x01z\n", "tokens:1: a token is printable ASCII without spaces, one per line");

    char err[256] = "";
    assert_null(auth_tokens_load("/nonexistent/tokens", err, sizeof err));
    assert_string_equal(err, "/nonexistent/tokens: No such file or directory");
}

static void test_load_file(void **state)
{
    (void)state;
    char path[] = "/tmp/test_auth_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char text[] = "# deploy\ns3cr3t-token\n";
    assert_int_equal(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
    assert_int_equal(close(fd), 0);
    char err[256] = "";
    struct auth_tokens *t = auth_tokens_load(path, err, sizeof err);
    assert_non_null(t);
    assert_int_equal(auth_tokens_count(t), 1);
    assert_int_equal(auth_check(t, "Bearer s3cr3t-token"), AUTH_OK);
    auth_tokens_free(t);

    /* A NUL inside the file is refused rather than cut. */
    fd = open(path, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "ab\0cd\n", 6), 6);
    assert_int_equal(close(fd), 0);
    assert_null(auth_tokens_load(path, err, sizeof err));
    assert_non_null(strstr(err, "NUL byte"));
    unlink(path);
}

static void test_header_forms(void **state)
{
    (void)state;
    struct auth_tokens *t = parse_ok("tok-1\ntok-2\n");
    assert_int_equal(auth_check(t, NULL), AUTH_MISSING);
    assert_int_equal(auth_check(t, ""), AUTH_MISSING);
    assert_int_equal(auth_check(t, "Bearer"), AUTH_MISSING);
    assert_int_equal(auth_check(t, "Bearer   "), AUTH_MISSING);
    assert_int_equal(auth_check(t, "Basic dG9rLTE6"), AUTH_MISSING);
    assert_int_equal(auth_check(t, "Bearertok-1"), AUTH_MISSING);
    assert_int_equal(auth_check(t, "Bearer tok-1"), AUTH_OK);
    assert_int_equal(auth_check(t, "Bearer tok-2"), AUTH_OK);
    assert_int_equal(auth_check(t, "bearer tok-1"), AUTH_OK); /* the scheme has no case */
    assert_int_equal(auth_check(t, "  BEARER \t tok-2  "), AUTH_OK);
    assert_int_equal(auth_check(t, "Bearer tok-3"), AUTH_INVALID);
    assert_int_equal(auth_check(t, "Bearer TOK-1"), AUTH_INVALID); /* the token has */
    assert_int_equal(auth_check(t, "Bearer tok-1 tok-2"), AUTH_INVALID);
    assert_int_equal(auth_check(t, "Bearer tok-"), AUTH_INVALID);
    auth_tokens_free(t);
}

static void test_equal_ct(void **state)
{
    (void)state;
    unsigned char a[32], b[32];
    for (int i = 0; i < 32; i++)
        a[i] = b[i] = (unsigned char)(i * 7 + 1);
    assert_true(auth_equal_ct(a, b, 32));
    assert_true(auth_equal_ct(a, b, 0));
    /* A difference anywhere counts: first byte, last byte, one bit. */
    for (int i = 0; i < 32; i++) {
        for (int bit = 0; bit < 8; bit++) {
            b[i] ^= (unsigned char)(1u << bit);
            assert_false(auth_equal_ct(a, b, 32));
            b[i] ^= (unsigned char)(1u << bit);
        }
    }
    assert_true(auth_equal_ct(a, b, 32));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_file_format), cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_load_file),   cmocka_unit_test(test_header_forms),
        cmocka_unit_test(test_equal_ct),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
