/* st_read.c - the safetensors load: reader threads filling a pinned staging ring, or reads straight into host-visible device memory. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/base.h"
#include "loader/st_internal.h"

#ifndef ST_STAGE_MAX
#define ST_STAGE_MAX ((size_t)16 << 20) /* staging buffer size cap */
#endif
#define ST_STAGE_MIN ((size_t)64 << 10)
#ifndef ST_SLOTS
#define ST_SLOTS 4 /* staging buffers in the ring */
#endif
#ifndef ST_READERS
#define ST_READERS 2 /* reader threads (reads in flight) */
#endif
#ifndef ST_DIRECT_MAX
#define ST_DIRECT_MAX ((size_t)16 << 20) /* chunk cap of a direct load */
#endif

/* ---- the staging ring ---- */

/* The pipeline of one load: reader threads fill staging slots with range
 * chunks (file bytes and zero padding), the loading thread copies each full
 * slot to the device in chunk order. Chunk k uses slot k % nslots. */
typedef struct st_pipe {
    const st_model *m;
    const int *fds;
    uint64_t bytes; /* of the range */
    size_t chunk;   /* bytes per chunk (and per slot) */
    uint64_t nchunks;
    size_t nslots;
    void *slot[ST_SLOTS];
    int64_t held[ST_SLOTS]; /* chunk index a slot holds (filled), -1 when none */

    pthread_mutex_t lock;
    pthread_cond_t cond;
    uint64_t next;     /* next chunk for a reader to take */
    uint64_t consumed; /* chunks written to the device */
    int stop;          /* set on error or when the loader gives up */
    int err;           /* first reader error */
    char errmsg[VRAM_ERRMSG_MAX];
} st_pipe;

/* Fills buf with range bytes [a, a + n): file bytes read from fds (one per
 * file of m) and zeros where no segment lies. buf is staging memory or, on
 * the direct path, the device range itself. Returns 0 or a negative code
 * (VRAM_EIO naming the file); buf is then partly filled. */
static int fill_chunk(const st_model *m, const int *fds, uint64_t a, size_t n, unsigned char *buf)
{
    size_t lo = 0, hi = m->nsegs; /* first segment ending after a */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->segs[mid].range_off + m->segs[mid].len <= a)
            lo = mid + 1;
        else
            hi = mid;
    }
    uint64_t pos = a, end = a + n;
    size_t i = lo;
    while (pos < end) {
        const st_seg *sg = i < m->nsegs ? &m->segs[i] : NULL;
        if (!sg || sg->range_off >= end) {
            memset(buf + (pos - a), 0, (size_t)(end - pos));
            break;
        }
        if (sg->range_off > pos) {
            memset(buf + (pos - a), 0, (size_t)(sg->range_off - pos));
            pos = sg->range_off;
        }
        uint64_t seg_end = sg->range_off + sg->len;
        uint64_t take = (seg_end < end ? seg_end : end) - pos;
        int rc = vram__st_pread_full(fds[sg->file], m->files[sg->file].path, buf + (pos - a),
                                     (size_t)take, sg->file_off + (pos - sg->range_off));
        if (rc < 0) return rc;
        pos += take;
        i++;
    }
    return 0;
}

/* A reader thread: takes the next chunk, waits for its slot to be free,
 * fills it from the files and hands it to the loading thread; stops at the
 * end, on an error (kept in p->err / p->errmsg) or when told to. */
static void *reader_main(void *arg)
{
    st_pipe *p = arg;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        if (p->stop || p->next >= p->nchunks) break;
        uint64_t k = p->next++;
        while (!p->stop && p->consumed + p->nslots <= k) /* chunk k - nslots still in its slot */
            pthread_cond_wait(&p->cond, &p->lock);
        if (p->stop) break;
        size_t si = (size_t)(k % p->nslots);
        pthread_mutex_unlock(&p->lock);
        uint64_t a = k * p->chunk;
        size_t n = (size_t)(p->bytes - a < p->chunk ? p->bytes - a : p->chunk);
        int rc = fill_chunk(p->m, p->fds, a, n, p->slot[si]);
        pthread_mutex_lock(&p->lock);
        if (rc < 0) {
            if (!p->err) {
                p->err = rc;
                snprintf(p->errmsg, sizeof p->errmsg, "%s", vram__last_error());
            }
            p->stop = 1;
            pthread_cond_broadcast(&p->cond);
            break;
        }
        p->held[si] = (int64_t)k;
        pthread_cond_broadcast(&p->cond);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* See st_internal.h. */
int vram__st_reopen_files(const st_model *m, int *fds)
{
    for (size_t i = 0; i < m->nfiles; i++)
        fds[i] = -1;
    int rc = 0;
    for (size_t i = 0; i < m->nfiles && rc == 0; i++) {
        const st_file *f = &m->files[i];
        fds[i] = open(f->path, O_RDONLY | O_CLOEXEC);
        if (fds[i] < 0) {
            rc = vram__errorf(VRAM_EIO, "%s: %s", f->path, strerror(errno));
            break;
        }
        struct stat st;
        if (fstat(fds[i], &st) < 0) {
            rc = vram__errorf(VRAM_EIO, "%s: %s", f->path, strerror(errno));
            break;
        }
        if ((uint64_t)st.st_size != f->size || st.st_mtim.tv_sec != f->mtime.tv_sec ||
            st.st_mtim.tv_nsec != f->mtime.tv_nsec || st.st_ino != f->ino || st.st_dev != f->dev) {
            rc = vram__errorf(VRAM_EIO,
                              "%s: file changed since it was validated (size %" PRIu64
                              " -> %" PRIu64 ", mtime or inode differ); open the model again",
                              f->path, f->size, (uint64_t)st.st_size);
            break;
        }
        unsigned char b[8];
        rc = vram__st_pread_full(fds[i], f->path, b, 8, 0);
        if (rc == 0 && vram__st_le64(b) != f->header_len)
            rc =
                vram__errorf(VRAM_EIO, "%s: header length changed since it was validated", f->path);
        if (rc == 0) (void)posix_fadvise(fds[i], 0, 0, POSIX_FADV_SEQUENTIAL);
    }
    if (rc < 0)
        for (size_t i = 0; i < m->nfiles; i++)
            if (fds[i] >= 0) close(fds[i]);
    return rc;
}

/* Bytes per chunk of a load: the sink's preferred transfer size (max when
 * it has none) within [ST_STAGE_MIN, max], page-rounded, and no more than
 * the range. */
static size_t chunk_size(const vram_source *s, const vram_sink *sink, size_t max)
{
    size_t chunk = sink->chunk_bytes ? (size_t)sink->chunk_bytes : max;
    if (chunk > max) chunk = max;
    if (chunk < ST_STAGE_MIN) chunk = ST_STAGE_MIN;
    chunk = (size_t)vram__round_up(chunk, 4096);
    if (chunk > s->bytes) chunk = (size_t)vram__round_up(s->bytes, ST_ALIGN);
    return chunk;
}

/* Sets up the ring of a staged load of s from fds: chunk size and count,
 * and up to ST_SLOTS pinned slots from the sink's backend. On failure the
 * slots allocated so far stay in p for ring_free. */
static int ring_init(st_pipe *p, vram_source *s, const vram_sink *sink, const int *fds)
{
    vram_backend *b = sink->backend;
    int rc = 0;
    memset(p, 0, sizeof *p);
    p->m = s->impl;
    p->fds = fds;
    p->bytes = s->bytes;
    p->chunk = chunk_size(s, sink, ST_STAGE_MAX);
    p->nchunks = (s->bytes + p->chunk - 1) / p->chunk;
    p->nslots = p->nchunks < ST_SLOTS ? (size_t)p->nchunks : ST_SLOTS;
    for (size_t i = 0; i < ST_SLOTS; i++)
        p->held[i] = -1;
    for (size_t i = 0; i < p->nslots && rc == 0; i++)
        rc = vram__backend_host_alloc(b, p->chunk, &p->slot[i]);
    return rc;
}

/* Frees the ring's slots (those ring_init got). */
static void ring_free(st_pipe *p, vram_backend *b)
{
    for (size_t i = 0; i < p->nslots; i++)
        if (p->slot[i]) vram__backend_host_free(b, p->slot[i], p->chunk);
}

/* Starts up to ST_READERS reader threads (no more than there are chunks)
 * into th[]; returns how many started. */
static int start_readers(st_pipe *p, pthread_t *th)
{
    int nthreads = 0;
    int want = p->nchunks < ST_READERS ? (int)p->nchunks : ST_READERS;
    for (int i = 0; i < want; i++) {
        if (pthread_create(&th[i], NULL, reader_main, p) != 0) break;
        nthreads++;
    }
    return nthreads;
}

/* Tells the readers to stop and joins the nthreads of them in th[]. */
static void stop_readers(st_pipe *p, pthread_t *th, int nthreads)
{
    pthread_mutex_lock(&p->lock);
    p->stop = 1;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < nthreads; i++)
        pthread_join(th[i], NULL);
}

/* The loading thread's side of the ring: waits for each chunk in order,
 * writes it through the sink and hands its slot back to the readers.
 * Returns 0 or the first error (a reader's, with its message, or the
 * sink's); the readers are told to stop after a sink error. */
static int ring_drain(st_pipe *p, const vram_sink *sink)
{
    int rc = 0;
    for (uint64_t k = 0; rc == 0 && k < p->nchunks; k++) {
        size_t si = (size_t)(k % p->nslots);
        pthread_mutex_lock(&p->lock);
        while (p->held[si] != (int64_t)k && !p->err)
            pthread_cond_wait(&p->cond, &p->lock);
        if (p->held[si] != (int64_t)k) rc = vram__errorf(p->err, "%s", p->errmsg);
        pthread_mutex_unlock(&p->lock);
        if (rc < 0) break;
        uint64_t a = k * p->chunk;
        size_t n = (size_t)(p->bytes - a < p->chunk ? p->bytes - a : p->chunk);
        rc = vram__sink_write(sink, a, p->slot[si], n);
        pthread_mutex_lock(&p->lock);
        p->held[si] = -1;
        p->consumed = k + 1;
        if (rc < 0) p->stop = 1;
        pthread_cond_broadcast(&p->cond);
        pthread_mutex_unlock(&p->lock);
    }
    return rc;
}

/* See st_internal.h. */
int vram__st_load_staged(vram_source *s, const vram_sink *sink, const int *fds)
{
    st_pipe p;
    int rc = ring_init(&p, s, sink, fds);
    if (rc == 0) {
        pthread_t th[ST_READERS];
        pthread_mutex_init(&p.lock, NULL);
        pthread_cond_init(&p.cond, NULL);
        int nthreads = start_readers(&p, th);
        if (nthreads == 0)
            rc = vram__errorf(VRAM_EHOSTMEM, "%s: cannot start a reader thread", s->spec);
        if (rc == 0) rc = ring_drain(&p, sink);
        stop_readers(&p, th, nthreads);
        pthread_cond_destroy(&p.cond);
        pthread_mutex_destroy(&p.lock);
    }
    ring_free(&p, sink->backend);
    return rc;
}

/* ---- the direct path ---- */

/* A direct load: device memory is host-visible, so the files are read
 * straight into it, chunk by chunk, by several readers at once (the
 * loading thread is one of them). No staging, no second copy. */
typedef struct st_direct {
    const st_model *m;
    unsigned char *dev; /* CPU address of range offset 0 */
    uint64_t bytes;     /* of the range */
    size_t chunk;       /* bytes per chunk */
    uint64_t nchunks;
    const vram_sink *sink; /* progress is counted through it */

    pthread_mutex_t lock;
    uint64_t next; /* next chunk to take */
    int err;       /* first error; no chunk is taken after it */
    char errmsg[VRAM_ERRMSG_MAX];
} st_direct;

/* One reader of a direct load and the descriptors it reads through. */
typedef struct st_reader {
    st_direct *d;
    const int *fds; /* one per file */
    pthread_t th;
} st_reader;

/* A direct reader (thread body, also run by the loading thread): takes the
 * next chunk, reads it from the files into the device range and counts it
 * as progress, until none is left or a reader failed. The first error is
 * kept in d->err / d->errmsg. */
static void *direct_main(void *arg)
{
    st_reader *r = arg;
    st_direct *d = r->d;
    for (;;) {
        pthread_mutex_lock(&d->lock);
        if (d->err || d->next >= d->nchunks) {
            pthread_mutex_unlock(&d->lock);
            break;
        }
        uint64_t k = d->next++;
        pthread_mutex_unlock(&d->lock);
        uint64_t a = k * d->chunk;
        size_t n = (size_t)(d->bytes - a < d->chunk ? d->bytes - a : d->chunk);
        int rc = fill_chunk(d->m, r->fds, a, n, d->dev + a);
        if (rc < 0) {
            pthread_mutex_lock(&d->lock);
            if (!d->err) {
                d->err = rc;
                snprintf(d->errmsg, sizeof d->errmsg, "%s", vram__last_error());
            }
            pthread_mutex_unlock(&d->lock);
            break;
        }
        vram__sink_progress(d->sink, n);
    }
    return NULL;
}

/* Fills out[] (one per file of m) with descriptors of the files behind
 * fds[] that have their own file position and readahead state: the same
 * open files, opened again through /proc/self/fd (so a file replaced on
 * disk meanwhile is not picked up). Where that fails, out[i] = -1 and the
 * reader shares fds[i]. Readers that share a descriptor share its
 * readahead, which their interleaved reads defeat on a cold page cache.
 * The caller closes every out[i] >= 0. */
static void reopen_private(const st_model *m, const int *fds, int *out)
{
    for (size_t i = 0; i < m->nfiles; i++) {
        char proc[64];
        struct stat a, b;
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", fds[i]);
        out[i] = open(proc, O_RDONLY | O_CLOEXEC);
        if (out[i] < 0) continue;
        if (fstat(out[i], &a) < 0 || fstat(fds[i], &b) < 0 || a.st_ino != b.st_ino ||
            a.st_dev != b.st_dev) {
            close(out[i]);
            out[i] = -1;
            continue;
        }
        (void)posix_fadvise(out[i], 0, 0, POSIX_FADV_SEQUENTIAL);
    }
}

/* See st_internal.h. */
int vram__st_load_direct(vram_source *s, const vram_sink *sink, const int *fds, void *dev)
{
    const st_model *m = s->impl;
    st_direct d;
    memset(&d, 0, sizeof d);
    d.m = m;
    d.dev = dev;
    d.bytes = s->bytes;
    d.chunk = chunk_size(s, sink, ST_DIRECT_MAX);
    d.nchunks = (s->bytes + d.chunk - 1) / d.chunk;
    d.sink = sink;
    pthread_mutex_init(&d.lock, NULL);
    st_reader rd[ST_READERS];
    int *own[ST_READERS] = {NULL}; /* helpers' descriptors */
    int want = d.nchunks < ST_READERS ? (int)d.nchunks : ST_READERS;
    int nhelpers = 0;
    rd[0].d = &d;
    rd[0].fds = fds; /* this thread is reader 0 */
    for (int i = 1; i < want; i++) {
        own[i] = malloc(m->nfiles * sizeof *own[i]);
        if (!own[i]) break; /* fewer readers: slower, still correct */
        reopen_private(m, fds, own[i]);
        for (size_t f = 0; f < m->nfiles; f++)
            if (own[i][f] < 0) own[i][f] = fds[f];
        rd[i].d = &d;
        rd[i].fds = own[i];
        if (pthread_create(&rd[i].th, NULL, direct_main, &rd[i]) != 0) break;
        nhelpers = i;
    }
    direct_main(&rd[0]);
    for (int i = 1; i <= nhelpers; i++)
        pthread_join(rd[i].th, NULL);
    for (int i = 1; i < want; i++) {
        if (!own[i]) continue;
        for (size_t f = 0; f < m->nfiles; f++)
            if (own[i][f] != fds[f]) close(own[i][f]);
        free(own[i]);
    }
    pthread_mutex_destroy(&d.lock);
    if (d.err) return vram__errorf(d.err, "%s", d.errmsg);
    return 0;
}
