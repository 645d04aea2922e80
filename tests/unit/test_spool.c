/* test_spool.c - the local spool: records are durable when told so, come
 * back in order after a restart (a kill -9 included: nothing but the files),
 * go when confirmed (their segment deleted), come first again when put
 * back; a torn last record is cut off and the rest replayed; a damaged one
 * ends its segment; past the cap nothing is taken; a message survives the
 * encoding byte for byte. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "bridge/base/spool.h"

/* What the writer told, by ticket. */
static pthread_mutex_t told_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t told_cond = PTHREAD_COND_INITIALIZER;
static int told_err[4096];
static int n_told;

static void on_done(void *arg, uint64_t ticket, int err)
{
    (void)arg;
    pthread_mutex_lock(&told_lock);
    told_err[ticket] = err;
    n_told++;
    pthread_cond_broadcast(&told_cond);
    pthread_mutex_unlock(&told_lock);
}

static void wait_told(int n)
{
    pthread_mutex_lock(&told_lock);
    while (n_told < n)
        pthread_cond_wait(&told_cond, &told_lock);
    pthread_mutex_unlock(&told_lock);
}

static char dir[200];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/spool-test-XXXXXX");
    assert_non_null(mkdtemp(dir));
    n_told = 0;
    memset(told_err, 0xff, sizeof told_err);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static struct spool *open_spool(uint64_t cap)
{
    char err[256];
    struct spool *s = spool_open(dir, cap, on_done, err, sizeof err);
    if (s == NULL)
        fail_msg("spool_open: %s", err);
    for (int i = 0; i < 5000 && !spool_ready(s); i++)
        usleep(1000);
    assert_true(spool_ready(s));
    return s;
}

/* Append "rec-I" records FROM..TO-1 once the writer is ready (EAGAIN
 * until it has read the directory). */
static void append_range(struct spool *s, int from, int to)
{
    for (int i = from; i < to; i++) {
        char rec[32];
        int n = snprintf(rec, sizeof rec, "rec-%d", i);
        int rc;
        while ((rc = spool_append(s, rec, (size_t)n, NULL, (uint64_t)i)) == EAGAIN)
            usleep(1000);
        assert_int_equal(rc, 0);
    }
}

/* The next record is "rec-I". */
static void expect_next(struct spool *s, int i, struct spool_rec *r)
{
    char want[32];
    int n = snprintf(want, sizeof want, "rec-%d", i);
    assert_int_equal(spool_next(s, r), 1);
    assert_int_equal(r->len, (size_t)n);
    assert_memory_equal(r->data, want, (size_t)n);
}

static int segments(void)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *de;
    while (d != NULL && (de = readdir(d)) != NULL)
        n += strstr(de->d_name, ".seg") != NULL;
    if (d != NULL)
        closedir(d);
    return n;
}

static void durable_ordered_and_kept_across_restart(void **state)
{
    (void)state;
    struct spool *s = open_spool(1 << 20);
    append_range(s, 0, 100);
    wait_told(100);
    for (int i = 0; i < 100; i++)
        assert_int_equal(told_err[i], 0);
    struct spool_stats st;
    spool_stats(s, &st);
    assert_int_equal(st.records, 100);
    assert_int_equal(st.appended, 100);
    assert_true(st.oldest > 0);
    /* Three handed out and confirmed, one put back: it comes first again. */
    struct spool_rec r;
    for (int i = 0; i < 3; i++) {
        expect_next(s, i, &r);
        spool_ack(s, &r);
        spool_rec_free(&r);
    }
    expect_next(s, 3, &r);
    spool_retry(s, &r);
    spool_rec_free(&r);
    expect_next(s, 3, &r);
    spool_rec_free(&r); /* handed out, never confirmed: stays */
    spool_close(s);

    /* A restart (the files alone): every record not confirmed, in order. */
    s = open_spool(1 << 20);
    expect_next(s, 3, &r); /* the writer read the directory before handing out */
    spool_rec_free(&r);
    spool_stats(s, &st);
    assert_int_equal(st.records, 97);
    for (int i = 4; i < 100; i++) {
        expect_next(s, i, &r);
        spool_ack(s, &r);
        spool_rec_free(&r);
    }
    assert_int_equal(spool_next(s, &r), 0);
    spool_close(s);
}

static void confirmed_segment_deleted(void **state)
{
    (void)state;
    struct spool *s = open_spool(1 << 20);
    append_range(s, 0, 10);
    wait_told(10);
    assert_int_equal(segments(), 1);
    struct spool_rec r;
    for (int i = 0; i < 10; i++) {
        expect_next(s, i, &r);
        spool_ack(s, &r);
        spool_rec_free(&r);
    }
    /* Every record confirmed, the writer idle: the segment is gone. */
    assert_int_equal(segments(), 0);
    struct spool_stats st;
    spool_stats(s, &st);
    assert_int_equal(st.records, 0);
    assert_int_equal(st.replayed, 10);
    assert_int_equal(st.oldest, 0);
    /* And writing goes on in a new one. */
    append_range(s, 10, 12);
    wait_told(12);
    assert_int_equal(segments(), 1);
    spool_close(s);
}

/* The one segment's path. */
static void seg_path(char *buf, size_t n)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    buf[0] = '\0';
    while (d != NULL && (de = readdir(d)) != NULL)
        if (strstr(de->d_name, ".seg") != NULL &&
            (size_t)snprintf(buf, n, "%s/%.40s", dir, de->d_name) >= n)
            fail_msg("path too long");
    if (d != NULL)
        closedir(d);
    assert_true(buf[0] != '\0');
}

/* N records written and the spool closed: its one segment's path. */
static void written_and_closed(int n, char *path, size_t len)
{
    struct spool *s = open_spool(1 << 20);
    append_range(s, 0, n);
    wait_told(n);
    spool_close(s);
    seg_path(path, len);
}

static void torn_tail_cut_rest_replayed(void **state)
{
    (void)state;
    char path[300];
    written_and_closed(20, path, sizeof path);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    /* The crash tore the last record: its last 3 bytes never reached the disk. */
    assert_int_equal(truncate(path, sb.st_size - 3), 0);
    struct spool *s = open_spool(1 << 20);
    struct spool_rec r;
    for (int i = 0; i < 19; i++) {
        expect_next(s, i, &r);
        spool_rec_free(&r);
    }
    assert_int_equal(spool_next(s, &r), 0);
    struct spool_stats st;
    spool_stats(s, &st);
    assert_int_equal(st.cut, 1);
    assert_int_equal(st.records, 19);
    spool_close(s);
    /* Cut off for good: the file ends where the torn record began. */
    struct stat after;
    assert_int_equal(stat(path, &after), 0);
    assert_true(after.st_size < sb.st_size - 3);
}

static void damaged_record_ends_segment(void **state)
{
    (void)state;
    char path[300];
    written_and_closed(5, path, sizeof path);
    /* Flip a byte of record 2's payload ("rec-2" at 20 + 2 * 25 + 20). */
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    off_t at = 2 * (20 + 5) + 20;
    char c;
    assert_int_equal(pread(fd, &c, 1, at), 1);
    c ^= 0x40;
    assert_int_equal(pwrite(fd, &c, 1, at), 1);
    close(fd);
    struct spool *s = open_spool(1 << 20);
    struct spool_rec r;
    expect_next(s, 0, &r);
    spool_rec_free(&r);
    expect_next(s, 1, &r);
    spool_rec_free(&r);
    assert_int_equal(spool_next(s, &r), 0); /* 2 fails its checksum: 2..4 are not replayed */
    spool_close(s);
}

static void full_takes_nothing(void **state)
{
    (void)state;
    /* 10 records of 20 + 6 bytes fit in 260 bytes; the 11th does not. */
    struct spool *s = open_spool(260);
    char rec[6] = "abcdef";
    int rc;
    while ((rc = spool_append(s, rec, sizeof rec, NULL, 0)) == EAGAIN)
        usleep(1000);
    assert_int_equal(rc, 0);
    for (int i = 1; i < 10; i++)
        assert_int_equal(spool_append(s, rec, sizeof rec, NULL, (uint64_t)i), 0);
    assert_int_equal(spool_append(s, rec, sizeof rec, NULL, 10), ENOSPC);
    wait_told(10);
    struct spool_stats st;
    spool_stats(s, &st);
    assert_int_equal(st.records, 10);
    assert_int_equal(st.refused, 1);
    /* Confirmed, it makes room again. */
    struct spool_rec r;
    assert_int_equal(spool_next(s, &r), 1);
    spool_ack(s, &r);
    spool_rec_free(&r);
    spool_close(s);
}

/* A .done left by a crash between deleting its segment and itself must not
 * hide the records of a new segment: a new record after it survives. */
static void orphan_done_hides_nothing(void **state)
{
    (void)state;
    char path[300];
    snprintf(path, sizeof path, "%s/spool-0000000000000000.done", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    static const unsigned char off0[8] = {0};
    assert_int_equal(fwrite(off0, 1, 8, f), 8);
    fclose(f);
    struct spool *s = open_spool(1 << 20);
    append_range(s, 0, 1);
    wait_told(1);
    spool_close(s);
    s = open_spool(1 << 20);
    struct spool_rec r;
    expect_next(s, 0, &r);
    spool_rec_free(&r);
    spool_close(s);
    assert_int_equal(access(path, F_OK), -1); /* the orphan is gone */
}

static void message_round_trip(void **state)
{
    (void)state;
    struct hdrmap_kv in_kv[2] = {{"x-http-path", "/a/b"}, {"x-forwarded-for", "127.0.0.1"}};
    struct hdrmap in_h = {.kv = in_kv, .n = 2};
    static const char body[] = "<a>\0binary</a>";
    struct bridge_msg m = {
        .body = body,
        .body_len = sizeof body,
        .content_type = "application/xml",
        .content_encoding = NULL,
        .message_id = "id-1xyz",
        .message_id_len = 4,
        .type = "orders",
        .exchange = "ex",
        .routing_key = "orders.eu",
        .persistent = true,
        .has_priority = true,
        .priority = 7,
        .timestamp = 1796356888,
        .headers = &in_h,
        .expiration = "60000",
    };
    void *rec = NULL;
    size_t len = 0;
    assert_int_equal(spool_encode(&m, "orders", &rec, &len), 0);
    struct bridge_msg out;
    struct hdrmap h;
    struct hdrmap_kv kv[SPOOL_MAX_HEADERS];
    const char *route = NULL;
    assert_int_equal(spool_decode(rec, len, &out, &route, &h, kv), 0);
    assert_string_equal(route, "orders");
    assert_int_equal(out.body_len, sizeof body);
    assert_memory_equal(out.body, body, sizeof body);
    assert_string_equal(out.content_type, "application/xml");
    assert_null(out.content_encoding);
    assert_null(out.reply_to);
    assert_int_equal(out.message_id_len, 4);
    assert_memory_equal(out.message_id, "id-1", 4);
    assert_string_equal(out.exchange, "ex");
    assert_string_equal(out.routing_key, "orders.eu");
    assert_string_equal(out.expiration, "60000");
    assert_true(out.persistent && out.has_priority && !out.minimal);
    assert_int_equal(out.priority, 7);
    assert_int_equal(out.timestamp, 1796356888);
    assert_non_null(out.headers);
    assert_int_equal(out.headers->n, 2);
    assert_string_equal(out.headers->kv[1].name, "x-forwarded-for");
    assert_string_equal(out.headers->kv[1].value, "127.0.0.1");
    /* Cut short anywhere: refused, never read past the end. */
    for (size_t cut = 0; cut < len; cut++)
        assert_int_equal(spool_decode(rec, cut, &out, &route, &h, kv), -1);
    free(rec);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(durable_ordered_and_kept_across_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(confirmed_segment_deleted, setup, teardown),
        cmocka_unit_test_setup_teardown(torn_tail_cut_rest_replayed, setup, teardown),
        cmocka_unit_test_setup_teardown(damaged_record_ends_segment, setup, teardown),
        cmocka_unit_test_setup_teardown(full_takes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(orphan_done_hides_nothing, setup, teardown),
        cmocka_unit_test(message_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
