/* spool.c - segments of checksummed records, a writer thread that commits
 * in groups, a replay queue. See spool.h. */
#include "bridge/base/spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "bridge/base/log.h"

#define MAGIC 0x50534249u /* "IBSP", little-endian on disk */
#define HDR 20            /* magic, length, crc (u32 each), spooled at (i64) */
#define LOCK_POLL_MS 100  /* how often a spool held by another process is tried */

struct seg {
    uint64_t seq;
    int fd;
    uint64_t size; /* bytes written and synced */
    uint64_t live; /* records not confirmed */
    int64_t first_at;
    uint64_t *acked; /* offsets of its records confirmed (spool-<seq>.done at a stop) */
    size_t n_acked, cap_acked;
    struct seg *next; /* in seq order */
};

struct entry { /* a durable record, not handed out */
    struct seg *seg;
    uint64_t off; /* of its header */
    uint32_t len;
    int64_t at;
};

struct job { /* a record for the writer */
    struct job *next;
    void *arg;
    uint64_t ticket;
    uint32_t len;
    int64_t at;
    unsigned char hdr[HDR];
    unsigned char data[];
};

struct spool {
    char *dir;
    int dirfd;
    int lockfd;
    uint64_t max_bytes;
    spool_done_fn *done;

    pthread_mutex_t lock; /* everything below */
    pthread_cond_t wake;
    atomic_bool ready; /* the directory is ours and read (set once, under the lock too) */
    bool stopping;     /* spool_close */
    bool broken;       /* a write could not be cut off again: takes nothing more */
    struct job *head, **tail;
    uint64_t queued;  /* bytes handed to the writer, not written */
    uint64_t disk;    /* bytes of every segment on disk */
    struct seg *segs; /* oldest first */
    struct seg *wseg; /* the one written to (the last), NULL until a write */
    uint64_t next_seq;
    struct entry *q; /* ring of entries to replay */
    size_t q_cap, q_head, q_n;
    struct spool_stats st;

    pthread_t writer;
};

/* ---- little-endian fields ---------------------------------------------- */

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get64(const unsigned char *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* The checksum covers the time and the payload. */
static uint32_t checksum(const unsigned char *hdr, const void *data, size_t len)
{
    uLong c = crc32(0L, hdr + 12, 8);
    return (uint32_t)crc32(c, data, (uInt)len);
}

/* ---- the replay queue -------------------------------------------------- */

static int q_grow(struct spool *s)
{
    if (s->q_n < s->q_cap)
        return 0;
    size_t cap = s->q_cap ? s->q_cap * 2 : 1024;
    struct entry *q = malloc(cap * sizeof *q);
    if (q == NULL)
        return -1;
    for (size_t i = 0; i < s->q_n; i++)
        q[i] = s->q[(s->q_head + i) % s->q_cap];
    free(s->q);
    s->q = q;
    s->q_cap = cap;
    s->q_head = 0;
    return 0;
}

static int q_push_back(struct spool *s, struct entry e)
{
    if (q_grow(s) != 0)
        return -1;
    s->q[(s->q_head + s->q_n++) % s->q_cap] = e;
    return 0;
}

static int q_push_front(struct spool *s, struct entry e)
{
    if (q_grow(s) != 0)
        return -1;
    s->q_head = (s->q_head + s->q_cap - 1) % s->q_cap;
    s->q[s->q_head] = e;
    s->q_n++;
    return 0;
}

/* ---- segments ---------------------------------------------------------- */

static void seg_name(char *buf, size_t n, uint64_t seq)
{
    snprintf(buf, n, "spool-%016llx.seg", (unsigned long long)seq);
}

/* The file that names G's confirmed records across a stop. */
static void done_name(char *buf, size_t n, uint64_t seq)
{
    snprintf(buf, n, "spool-%016llx.done", (unsigned long long)seq);
}

static int seg_acked(struct seg *g, uint64_t off)
{
    if (g->n_acked == g->cap_acked) {
        size_t cap = g->cap_acked ? g->cap_acked * 2 : 64;
        uint64_t *a = realloc(g->acked, cap * sizeof *a);
        if (a == NULL)
            return -1;
        g->acked = a;
        g->cap_acked = cap;
    }
    g->acked[g->n_acked++] = off;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* G's .done file, if any, into g->acked (sorted). */
static void seg_read_done(struct spool *s, struct seg *g)
{
    char name[64];
    done_name(name, sizeof name, g->seq);
    int fd = openat(s->dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    unsigned char b[8];
    while (read(fd, b, 8) == 8)
        if (seg_acked(g, get64(b)) != 0)
            break;
    close(fd);
    if (g->n_acked > 1)
        qsort(g->acked, g->n_acked, sizeof *g->acked, cmp_u64);
}

static bool seg_was_acked(const struct seg *g, uint64_t off)
{
    return g->n_acked > 0 && bsearch(&off, g->acked, g->n_acked, sizeof off, cmp_u64) != NULL;
}

/* At a stop: G's confirmed records, so that the next start does not
 * publish them again (a crash loses this: they are, at least once). */
static void seg_write_done(struct spool *s, struct seg *g)
{
    if (g->n_acked == 0)
        return;
    char name[64], tmp[72];
    done_name(name, sizeof name, g->seq);
    snprintf(tmp, sizeof tmp, "%s.tmp", name);
    int fd = openat(s->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    bool ok = fd >= 0;
    for (size_t i = 0; ok && i < g->n_acked; i++) {
        unsigned char b[8];
        put64(b, g->acked[i]);
        ok = write(fd, b, 8) == 8;
    }
    ok = ok && fdatasync(fd) == 0;
    if (fd >= 0)
        close(fd);
    if (!ok || renameat(s->dirfd, tmp, s->dirfd, name) != 0) {
        log_warn("spool: cannot write %s/%s: its %zu confirmed messages go again at the next start",
                 s->dir, name, g->n_acked);
        unlinkat(s->dirfd, tmp, 0);
    }
}

static struct seg *seg_by_seq(struct spool *s, uint64_t seq)
{
    for (struct seg *g = s->segs; g != NULL; g = g->next)
        if (g->seq == seq)
            return g;
    return NULL;
}

/* Unlink G (every record of it confirmed); lock held. */
static void seg_drop(struct spool *s, struct seg *g)
{
    /* Its .done first: a .done without its segment must never meet a new
     * segment of the same number (spool_load drops such orphans too). */
    char name[64];
    done_name(name, sizeof name, g->seq);
    if (unlinkat(s->dirfd, name, 0) == 0)
        (void)fsync(s->dirfd);
    seg_name(name, sizeof name, g->seq);
    if (unlinkat(s->dirfd, name, 0) != 0)
        log_warn("spool: cannot delete %s/%s: %s", s->dir, name, strerror(errno));
    (void)fsync(s->dirfd);
    close(g->fd);
    free(g->acked);
    s->disk -= g->size;
    if (s->wseg == g)
        s->wseg = NULL;
    struct seg **p = &s->segs;
    while (*p != g)
        p = &(*p)->next;
    *p = g->next;
    free(g);
}

/* A new segment to write; lock held. */
static struct seg *seg_new(struct spool *s, int *err)
{
    struct seg *g = calloc(1, sizeof *g);
    if (g == NULL) {
        *err = ENOMEM;
        return NULL;
    }
    char name[64];
    g->seq = s->next_seq++;
    done_name(name, sizeof name, g->seq);
    (void)unlinkat(s->dirfd, name, 0); /* never another segment's */
    seg_name(name, sizeof name, g->seq);
    g->fd = openat(s->dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (g->fd < 0 || fsync(s->dirfd) != 0) {
        *err = errno;
        if (g->fd >= 0) {
            close(g->fd);
            unlinkat(s->dirfd, name, 0);
        }
        free(g);
        return NULL;
    }
    struct seg **p = &s->segs;
    while (*p != NULL)
        p = &(*p)->next;
    *p = g;
    return g;
}

/* Read segment G from the start: its records into the queue. A damaged
 * record ends it: the rest is cut off (LAST: a torn tail, truncated). */
static int seg_scan(struct spool *s, struct seg *g, bool last)
{
    struct stat sb;
    if (fstat(g->fd, &sb) != 0)
        return -1;
    uint64_t end = (uint64_t)sb.st_size, off = 0;
    unsigned char hdr[HDR];
    void *buf = NULL;
    size_t cap = 0;
    const char *io_err = NULL; /* not damage: nothing is cut for it */
    while (off + HDR <= end) {
        if (pread(g->fd, hdr, HDR, (off_t)off) != HDR) {
            io_err = "read error";
            break;
        }
        uint32_t len = get32(hdr + 4);
        if (get32(hdr) != MAGIC || len > SPOOL_RECORD_MAX || off + HDR + len > end)
            break;
        if (len > cap) {
            void *nb = realloc(buf, len);
            if (nb == NULL) {
                io_err = "out of memory";
                break;
            }
            buf = nb;
            cap = len;
        }
        if (pread(g->fd, buf, len, (off_t)(off + HDR)) != (ssize_t)len) {
            io_err = "read error";
            break;
        }
        if (checksum(hdr, buf, len) != get32(hdr + 8))
            break;
        struct entry e = {g, off, len, (int64_t)get64(hdr + 12)};
        off += HDR + len;
        if (seg_was_acked(g, e.off))
            continue; /* confirmed before the last stop */
        if (q_push_back(s, e) != 0) {
            free(buf);
            return -1;
        }
        if (g->live++ == 0)
            g->first_at = e.at;
        s->st.records++;
        s->st.bytes += len;
    }
    free(buf);
    if (io_err != NULL) {
        char name[64];
        seg_name(name, sizeof name, g->seq);
        log_error("spool: %s/%s: %s at byte %llu: the spool takes nothing more (the file is kept)",
                  s->dir, name, io_err, (unsigned long long)off);
        g->size = end;
        s->disk += end;
        g->live++; /* never deleted by this process */
        return -1;
    }
    if (off < end) {
        s->st.cut++;
        char name[64];
        seg_name(name, sizeof name, g->seq);
        log_warn("spool: %s/%s: a damaged or torn record at byte %llu: %s", s->dir, name,
                 (unsigned long long)off,
                 last ? "cut off (a write the crash interrupted, never answered 202)"
                      : "the rest of the segment is skipped");
        if (last && ftruncate(g->fd, (off_t)off) == 0)
            (void)fdatasync(g->fd);
    }
    g->size = last ? off : end;
    s->disk += g->size;
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Take the directory's lock and read it; lock not held (the writer has not
 * started handing out). 0, or -1 (error logged). */
/* The names of one kind in the directory. */
struct names {
    char **v;
    size_t n, cap;
};

static int names_add(struct names *l, const char *name)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        char **v = realloc(l->v, cap * sizeof *v);
        if (v == NULL)
            return -1;
        l->v = v;
        l->cap = cap;
    }
    if ((l->v[l->n] = strdup(name)) == NULL)
        return -1;
    l->n++;
    return 0;
}

static void names_free(struct names *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
}

/* NAME is spool-<16 hex digits>EXT: true and its number in *SEQ. */
static bool name_seq(const char *name, const char *ext, uint64_t *seq)
{
    size_t el = strlen(ext);
    if (strncmp(name, "spool-", 6) != 0 || strlen(name) != 22 + el || strcmp(name + 22, ext) != 0 ||
        strspn(name + 6, "0123456789abcdef") != 16)
        return false;
    *seq = strtoull(name + 6, NULL, 16);
    return true;
}

static int spool_load(struct spool *s)
{
    DIR *d = fdopendir(dup(s->dirfd));
    if (d == NULL)
        return -1;
    struct names segs = {0}, dones = {0};
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d)) != NULL) {
        uint64_t seq;
        bool done = name_seq(de->d_name, ".done", &seq);
        if (!done && !name_seq(de->d_name, ".seg", &seq))
            continue;
        if (seq + 1 > s->next_seq) /* numbers go on past a .done's too */
            s->next_seq = seq + 1;
        if (names_add(done ? &dones : &segs, de->d_name) != 0) {
            log_error("spool: out of memory reading %s", s->dir);
            rc = -1;
            break;
        }
    }
    closedir(d);
    if (segs.n > 1)
        qsort(segs.v, segs.n, sizeof *segs.v, by_name);
    for (size_t i = 0; i < segs.n; i++) {
        uint64_t seq = 0;
        (void)name_seq(segs.v[i], ".seg", &seq);
        struct seg *g = calloc(1, sizeof *g);
        if (g == NULL || (g->fd = openat(s->dirfd, segs.v[i], O_RDWR | O_CLOEXEC)) < 0) {
            log_error("spool: cannot open %s/%s: %s", s->dir, segs.v[i], strerror(errno));
            free(g);
            rc = -1;
            continue;
        }
        g->seq = seq;
        seg_read_done(s, g);
        struct seg **p = &s->segs;
        while (*p != NULL)
            p = &(*p)->next;
        *p = g;
        if (seg_scan(s, g, i + 1 == segs.n) != 0)
            rc = -1;
        if (g->live == 0)
            seg_drop(s, g);
    }
    /* A .done whose segment is gone (deleted, the .done not yet): drop it. */
    for (size_t i = 0; i < dones.n; i++) {
        uint64_t seq = 0;
        (void)name_seq(dones.v[i], ".done", &seq);
        if (seg_by_seq(s, seq) == NULL)
            (void)unlinkat(s->dirfd, dones.v[i], 0);
    }
    names_free(&dones);
    names_free(&segs);
    if (s->st.records > 0)
        log_info("spool: %llu messages (%llu bytes) from an earlier run to replay",
                 (unsigned long long)s->st.records, (unsigned long long)s->st.bytes);
    return rc;
}

/* ---- the writer --------------------------------------------------------- */

/* Write JOBS to the last segment (a new one past SPOOL_SEGMENT_BYTES) and
 * sync. 0, or an errno (nothing of them left on disk unless s->broken). */
static int commit(struct spool *s, struct job *jobs)
{
    pthread_mutex_lock(&s->lock);
    struct seg *g = s->wseg;
    int err = 0;
    if (g != NULL && g->live == 0) { /* every record of it confirmed */
        seg_drop(s, g);
        g = NULL;
    }
    if (g == NULL || g->size >= SPOOL_SEGMENT_BYTES)
        g = s->wseg = seg_new(s, &err);
    pthread_mutex_unlock(&s->lock);
    if (g == NULL)
        return err;
    uint64_t start = g->size, off = start;
    struct iovec iov[IOV_MAX];
    struct job *j = jobs;
    while (j != NULL && err == 0) {
        int n = 0;
        size_t want = 0;
        for (; j != NULL && n + 2 <= IOV_MAX; j = j->next) {
            iov[n++] = (struct iovec){j->hdr, HDR};
            iov[n++] = (struct iovec){j->data, j->len};
            want += HDR + j->len;
        }
        /* pwritev at most SSIZE_MAX, partial writes resumed */
        int first = 0;
        while (want > 0) {
            ssize_t w = pwritev(g->fd, iov + first, n - first, (off_t)off);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                err = errno;
                break;
            }
            if (w == 0) {
                err = EIO;
                break;
            }
            off += (uint64_t)w;
            want -= (size_t)w;
            while (first < n && (size_t)w >= iov[first].iov_len) {
                w -= (ssize_t)iov[first].iov_len;
                first++;
            }
            if (first < n) {
                iov[first].iov_base = (char *)iov[first].iov_base + w;
                iov[first].iov_len -= (size_t)w;
            }
        }
    }
    if (err == 0 && fdatasync(g->fd) != 0)
        err = errno;
    if (err != 0) {
        /* What was written of the group goes again: none of it is told
         * durable. If it cannot go, the next start would replay it: the
         * spool takes nothing more. */
        if (ftruncate(g->fd, (off_t)start) != 0 || fdatasync(g->fd) != 0) {
            log_error("spool: cannot cut a failed write off %s: %s: the spool takes nothing more",
                      s->dir, strerror(errno));
            pthread_mutex_lock(&s->lock);
            s->broken = true;
            pthread_mutex_unlock(&s->lock);
        }
        return err;
    }
    pthread_mutex_lock(&s->lock);
    uint64_t at = start;
    for (j = jobs; j != NULL; j = j->next) {
        struct entry e = {g, at, j->len, j->at};
        if (q_push_back(s, e) != 0) {
            log_error("spool: out of memory queueing a spooled record for replay");
            s->broken = true;
        }
        if (g->live++ == 0)
            g->first_at = j->at;
        s->st.records++;
        s->st.bytes += j->len;
        s->st.appended++;
        at += HDR + j->len;
    }
    s->disk += off - start;
    g->size = off;
    pthread_mutex_unlock(&s->lock);
    return 0;
}

static void *writer_main(void *arg)
{
    struct spool *s = arg;
    log_set_thread("spool");
    /* Another process's (the one this one takes over from) until it exits. */
    bool warned = false;
    while (flock(s->lockfd, LOCK_EX | LOCK_NB) != 0) {
        pthread_mutex_lock(&s->lock);
        bool stop = s->stopping;
        pthread_mutex_unlock(&s->lock);
        if (stop)
            return NULL;
        if (!warned)
            log_info("spool: %s is held by another process: spooling waits for it", s->dir);
        warned = true;
        struct timespec ts = {0, LOCK_POLL_MS * 1000000L};
        nanosleep(&ts, NULL);
    }
    int rc = spool_load(s);
    pthread_mutex_lock(&s->lock);
    atomic_store_explicit(&s->ready, true, memory_order_release);
    if (rc != 0)
        s->broken = true;
    for (;;) {
        while (s->head == NULL && !s->stopping)
            pthread_cond_wait(&s->wake, &s->lock);
        struct job *jobs = s->head;
        if (jobs == NULL)
            break;
        s->head = NULL;
        s->tail = &s->head;
        bool broken = s->broken;
        pthread_mutex_unlock(&s->lock);
        int err = broken ? EIO : commit(s, jobs);
        uint64_t bytes = 0, n = 0;
        for (struct job *j = jobs, *next; j != NULL; j = next) {
            next = j->next;
            bytes += HDR + j->len;
            n++;
            s->done(j->arg, j->ticket, err);
            free(j);
        }
        pthread_mutex_lock(&s->lock);
        s->queued -= bytes;
        if (err != 0)
            s->st.refused += n;
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* ---- the interface ------------------------------------------------------ */

struct spool *spool_open(const char *dir, uint64_t max_bytes, spool_done_fn *done, char *err,
                         size_t errlen)
{
    struct spool *s = calloc(1, sizeof *s);
    if (s == NULL || (s->dir = strdup(dir)) == NULL) {
        free(s);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->max_bytes = max_bytes;
    s->done = done;
    s->tail = &s->head;
    s->dirfd = s->lockfd = -1;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "[spool] dir %s: %s", dir, strerror(errno));
        goto fail;
    }
    s->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s->dirfd < 0) {
        snprintf(err, errlen, "[spool] dir %s: %s", dir, strerror(errno));
        goto fail;
    }
    s->lockfd = openat(s->dirfd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (s->lockfd < 0) {
        snprintf(err, errlen, "[spool] dir %s: cannot make its lock file: %s", dir,
                 strerror(errno));
        goto fail;
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->wake, NULL);
    if (pthread_create(&s->writer, NULL, writer_main, s) != 0) {
        snprintf(err, errlen, "[spool]: cannot start its writer thread");
        pthread_mutex_destroy(&s->lock);
        pthread_cond_destroy(&s->wake);
        goto fail;
    }
    return s;
fail:
    if (s->lockfd >= 0)
        close(s->lockfd);
    if (s->dirfd >= 0)
        close(s->dirfd);
    free(s->dir);
    free(s);
    return NULL;
}

void spool_close(struct spool *s)
{
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->writer, NULL);
    while (s->segs != NULL) {
        struct seg *g = s->segs;
        s->segs = g->next;
        seg_write_done(s, g);
        close(g->fd);
        free(g->acked);
        free(g);
    }
    (void)fsync(s->dirfd);
    free(s->q);
    close(s->lockfd); /* the lock goes with it */
    close(s->dirfd);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->wake);
    free(s->dir);
    free(s);
}

int spool_append(struct spool *s, const void *payload, size_t len, void *arg, uint64_t ticket)
{
    if (len > SPOOL_RECORD_MAX)
        return EMSGSIZE;
    struct job *j = malloc(sizeof *j + len);
    if (j == NULL)
        return ENOMEM;
    j->next = NULL;
    j->arg = arg;
    j->ticket = ticket;
    j->len = (uint32_t)len;
    j->at = (int64_t)time(NULL);
    memcpy(j->data, payload, len);
    put32(j->hdr, MAGIC);
    put32(j->hdr + 4, j->len);
    put64(j->hdr + 12, (uint64_t)j->at);
    put32(j->hdr + 8, checksum(j->hdr, j->data, len));
    pthread_mutex_lock(&s->lock);
    int err = s->stopping ? EIO : !s->ready ? EAGAIN : s->broken ? EIO : 0;
    /* The segment written to, once confirmed whole, goes at the next write. */
    struct seg *w = s->wseg;
    uint64_t used = s->disk - (w != NULL && w->live == 0 ? w->size : 0);
    if (err == 0 && used + s->queued + HDR + len > s->max_bytes)
        err = ENOSPC;
    if (err != 0) {
        s->st.refused++;
        pthread_mutex_unlock(&s->lock);
        free(j);
        return err;
    }
    s->queued += HDR + len;
    *s->tail = j;
    s->tail = &j->next;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

int spool_next(struct spool *s, struct spool_rec *r)
{
    pthread_mutex_lock(&s->lock);
    if (!s->ready || s->q_n == 0) {
        pthread_mutex_unlock(&s->lock);
        return 0;
    }
    struct entry e = s->q[s->q_head];
    s->q_head = (s->q_head + 1) % s->q_cap;
    s->q_n--;
    int fd = e.seg->fd;
    uint64_t seq = e.seg->seq;
    pthread_mutex_unlock(&s->lock);
    /* The segment stays while this record is live: read it unlocked. */
    r->seq = seq;
    r->off = e.off;
    r->len = e.len;
    r->at = e.at;
    r->data = malloc(e.len ? e.len : 1);
    unsigned char hdr[HDR];
    if (r->data == NULL || pread(fd, hdr, HDR, (off_t)e.off) != HDR ||
        pread(fd, r->data, e.len, (off_t)(e.off + HDR)) != (ssize_t)e.len ||
        checksum(hdr, r->data, e.len) != get32(hdr + 8)) {
        log_error("spool: %s: cannot read back a record (%s): the spool takes nothing more", s->dir,
                  r->data == NULL ? "out of memory" : "read error or damage");
        pthread_mutex_lock(&s->lock);
        s->broken = true;
        (void)q_push_front(s, e);
        pthread_mutex_unlock(&s->lock);
        free(r->data);
        r->data = NULL;
        return -1;
    }
    return 1;
}

void spool_ack(struct spool *s, const struct spool_rec *r)
{
    pthread_mutex_lock(&s->lock);
    struct seg *g = seg_by_seq(s, r->seq);
    if (g != NULL && g->live > 0) {
        if (seg_acked(g, r->off) != 0)
            log_warn("spool: out of memory: a confirmed message goes again at the next start");
        g->live--;
        s->st.records--;
        s->st.bytes -= r->len;
        s->st.replayed++;
        /* The one written to only while the writer is idle (else it goes
         * at its next write, commit). */
        if (g->live == 0 && (g != s->wseg || s->queued == 0))
            seg_drop(s, g);
    }
    pthread_mutex_unlock(&s->lock);
}

void spool_retry(struct spool *s, const struct spool_rec *r)
{
    pthread_mutex_lock(&s->lock);
    struct seg *g = seg_by_seq(s, r->seq);
    struct entry e = {g, r->off, (uint32_t)r->len, r->at};
    if (g != NULL && q_push_front(s, e) != 0) {
        log_error("spool: out of memory putting a record back: it is replayed at the next start");
        s->broken = true;
    }
    pthread_mutex_unlock(&s->lock);
}

void spool_rec_free(struct spool_rec *r)
{
    free(r->data);
    r->data = NULL;
}

void spool_stats(struct spool *s, struct spool_stats *st)
{
    pthread_mutex_lock(&s->lock);
    if (!s->ready) { /* the writer is still reading the directory, unlocked */
        pthread_mutex_unlock(&s->lock);
        memset(st, 0, sizeof *st);
        return;
    }
    *st = s->st;
    st->oldest = 0;
    for (struct seg *g = s->segs; g != NULL && st->oldest == 0; g = g->next)
        if (g->live > 0)
            st->oldest = g->first_at;
    pthread_mutex_unlock(&s->lock);
}

bool spool_ready(struct spool *s)
{
    return atomic_load_explicit(&s->ready, memory_order_acquire);
}

/* ---- records ------------------------------------------------------------ */

#define NONE 0xffffffffu /* a string that is NULL */
#define V1 1

struct out {
    unsigned char *p;
    size_t n, cap;
    bool oom;
};

static void out_bytes(struct out *o, const void *b, size_t n)
{
    if (o->oom)
        return;
    if (o->n + n > o->cap) {
        size_t cap = o->cap ? o->cap : 512;
        while (cap < o->n + n)
            cap *= 2;
        unsigned char *p = realloc(o->p, cap);
        if (p == NULL) {
            o->oom = true;
            return;
        }
        o->p = p;
        o->cap = cap;
    }
    memcpy(o->p + o->n, b, n);
    o->n += n;
}

static void out_u32(struct out *o, uint32_t v)
{
    unsigned char b[4];
    put32(b, v);
    out_bytes(o, b, 4);
}

/* LEN bytes of S (NULL: none), then a NUL the reader points at. */
static void out_str(struct out *o, const char *s, size_t len)
{
    if (s == NULL) {
        out_u32(o, NONE);
        return;
    }
    out_u32(o, (uint32_t)len);
    out_bytes(o, s, len);
    out_bytes(o, "", 1);
}

static void out_cstr(struct out *o, const char *s)
{
    out_str(o, s, s != NULL ? strlen(s) : 0);
}

int spool_encode(const struct bridge_msg *m, const char *route, void **out, size_t *len)
{
    struct out o = {0};
    unsigned char head[12] = {
        V1,
        (unsigned char)((m->persistent ? 1 : 0) | (m->has_priority ? 2 : 0) | (m->minimal ? 4 : 0)),
        m->priority, 0};
    put64(head + 4, (uint64_t)m->timestamp);
    out_bytes(&o, head, sizeof head);
    out_cstr(&o, route);
    out_cstr(&o, m->exchange);
    out_cstr(&o, m->routing_key);
    out_str(&o, m->message_id, m->message_id_len);
    out_cstr(&o, m->content_type);
    out_cstr(&o, m->content_encoding);
    out_cstr(&o, m->type);
    out_cstr(&o, m->expiration);
    out_cstr(&o, m->reply_to);
    size_t nh = m->headers != NULL ? m->headers->n : 0;
    out_u32(&o, (uint32_t)nh);
    for (size_t i = 0; i < nh; i++) {
        out_cstr(&o, m->headers->kv[i].name);
        out_cstr(&o, m->headers->kv[i].value);
    }
    out_str(&o, m->body != NULL ? m->body : "", m->body_len);
    if (o.oom) {
        free(o.p);
        return -1;
    }
    *out = o.p;
    *len = o.n;
    return 0;
}

struct in {
    char *p;
    size_t n, off;
    bool bad;
};

static uint32_t in_u32(struct in *i)
{
    if (i->bad || i->n - i->off < 4) {
        i->bad = true;
        return 0;
    }
    uint32_t v = get32((unsigned char *)i->p + i->off);
    i->off += 4;
    return v;
}

static const char *in_str(struct in *i, size_t *len)
{
    uint32_t n = in_u32(i);
    if (i->bad || n == NONE)
        return NULL;
    if (i->n - i->off < (size_t)n + 1 || i->p[i->off + n] != '\0') {
        i->bad = true;
        return NULL;
    }
    const char *s = i->p + i->off;
    i->off += (size_t)n + 1;
    if (len != NULL)
        *len = n;
    return s;
}

int spool_decode(void *data, size_t len, struct bridge_msg *m, const char **route, struct hdrmap *h,
                 struct hdrmap_kv *kv)
{
    struct in i = {data, len, 12, len < 12};
    const unsigned char *head = data;
    if (i.bad || head[0] != V1)
        return -1;
    memset(m, 0, sizeof *m);
    m->persistent = head[1] & 1;
    m->has_priority = (head[1] & 2) != 0;
    m->minimal = (head[1] & 4) != 0;
    m->priority = head[2];
    m->timestamp = (int64_t)get64(head + 4);
    *route = in_str(&i, NULL);
    m->exchange = in_str(&i, NULL);
    m->routing_key = in_str(&i, NULL);
    m->message_id = in_str(&i, &m->message_id_len);
    m->content_type = in_str(&i, NULL);
    m->content_encoding = in_str(&i, NULL);
    m->type = in_str(&i, NULL);
    m->expiration = in_str(&i, NULL);
    m->reply_to = in_str(&i, NULL);
    uint32_t nh = in_u32(&i);
    if (nh > SPOOL_MAX_HEADERS)
        return -1;
    memset(h, 0, sizeof *h);
    h->kv = kv;
    for (uint32_t k = 0; k < nh && !i.bad; k++) {
        kv[k].name = (char *)in_str(&i, NULL);
        kv[k].value = (char *)in_str(&i, NULL);
        if (kv[k].name == NULL || kv[k].value == NULL)
            i.bad = true;
    }
    h->n = nh;
    m->headers = m->minimal ? NULL : h;
    m->body = in_str(&i, &m->body_len);
    if (i.bad || i.off != i.n || *route == NULL || m->exchange == NULL || m->routing_key == NULL ||
        m->message_id == NULL || m->body == NULL)
        return -1;
    return 0;
}
