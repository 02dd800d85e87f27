/* cuda_pinned.c - pinned host blocks for backups: huge pages touched in parallel, registered,
 * pooled, bounded. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "backend/backend.h"
#include "backend/cuda_pinned.h"
#include "base/base.h"

#define PIN_HUGE ((size_t)2 << 20)      /* blocks are whole 2 MiB huge pages */
#define PIN_TOUCH_THREADS 8             /* at most, for the first touch */
#define PIN_PARALLEL ((size_t)64 << 20) /* smaller blocks are touched by one thread */

struct cuda_pin_block {
    void *p;
    size_t len;   /* mapped bytes, registered when ready == npieces */
    size_t piece; /* registered in pieces of this size (the last may be shorter) */
    int npieces;
    int ready; /* atomic: pieces [0, ready) are touched and registered */
    struct cuda_pin_block *next;
};

/* ---- the bound ---- */

/* The first unsigned number in file path, 0 when none ("max", absent). */
static uint64_t read_u64(const char *path, const char *key)
{
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[256];
    uint64_t v = 0;
    while (fgets(line, sizeof line, f)) {
        const char *p = line;
        if (key) {
            if (strncmp(line, key, strlen(key)) != 0) continue;
            p += strlen(key);
        }
        unsigned long long x;
        if (sscanf(p, " %llu", &x) == 1) v = x;
        break;
    }
    fclose(f);
    return v;
}

uint64_t vram__pinned_default_limit(void)
{
    uint64_t total = read_u64("/proc/meminfo", "MemTotal:") * 1024;
    uint64_t cg = read_u64("/sys/fs/cgroup/memory.max", NULL);
    if (!cg) cg = read_u64("/sys/fs/cgroup/memory/memory.limit_in_bytes", NULL);
    uint64_t lim = total;
    if (cg && (lim == 0 || cg < lim)) lim = cg;
    if (lim == 0) lim = (uint64_t)8 << 30; /* no figure at all: a modest bound */
    return lim / 10 * 8;
}

void vram__pinned_init(cuda_pinned *pp, const cuda_pin_ops *ops, uint64_t limit)
{
    memset(pp, 0, sizeof *pp);
    pthread_mutex_init(&pp->lock, NULL);
    pp->ops = *ops;
    pp->limit = limit ? limit : vram__pinned_default_limit();
    pp->pool_max = pp->limit / 4;
}

/* ---- making a block ---- */

typedef struct touch_job {
    unsigned char *p;
    size_t n;
} touch_job;

/* Writes one byte per page, its own value, so the kernel backs the range
 * now and what a lazily pinned block already holds is kept. */
static void *touch_main(void *arg)
{
    touch_job *j = arg;
    long page = sysconf(_SC_PAGESIZE);
    size_t step = page > 0 ? (size_t)page : 4096;
    volatile unsigned char *q = j->p;
    for (size_t off = 0; off < j->n; off += step)
        q[off] = q[off];
    return NULL;
}

/* Touches [p, p+n) with up to PIN_TOUCH_THREADS threads (whatever starts). */
static void touch_parallel(unsigned char *p, size_t n)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int k = n < PIN_PARALLEL ? 1
                             : (int)(cpus < 1                   ? 1
                                     : cpus > PIN_TOUCH_THREADS ? PIN_TOUCH_THREADS
                                                                : cpus);
    pthread_t th[PIN_TOUCH_THREADS];
    touch_job jobs[PIN_TOUCH_THREADS];
    int started[PIN_TOUCH_THREADS] = {0};
    size_t part = (n / (size_t)k + PIN_HUGE - 1) / PIN_HUGE * PIN_HUGE;
    for (int i = 0; i < k; i++) {
        size_t off = part * (size_t)i;
        jobs[i].p = p + (off < n ? off : n);
        jobs[i].n = off >= n ? 0 : (n - off < part ? n - off : part);
        if (i > 0) started[i] = pthread_create(&th[i], NULL, touch_main, &jobs[i]) == 0;
    }
    touch_main(&jobs[0]);
    for (int i = 1; i < k; i++) {
        if (started[i])
            pthread_join(th[i], NULL);
        else
            touch_main(&jobs[i]);
    }
}

/* An anonymous read/write mapping of len bytes (a multiple of 2 MiB),
 * explicit huge pages when the system has them reserved, else asking for
 * transparent ones. NULL when the system refuses. */
static void *map_block(size_t len)
{
    void *p =
        mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
    if (p != MAP_FAILED) return p;
    p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
#ifdef MADV_HUGEPAGE
    madvise(p, len, MADV_HUGEPAGE);
#endif
    return p;
}

/* ---- the pool ---- */

/* Takes a pooled block of len..len+len/8 bytes out of the pool (lock held). */
static cuda_pin_block *pool_take_locked(cuda_pinned *pp, size_t len)
{
    cuda_pin_block **best = NULL;
    for (cuda_pin_block **b = &pp->pool; *b; b = &(*b)->next)
        if ((*b)->len >= len && (*b)->len - len <= len / 8 && (!best || (*b)->len < (*best)->len))
            best = b;
    if (!best) return NULL;
    cuda_pin_block *blk = *best;
    *best = blk->next;
    pp->pooled -= blk->len;
    return blk;
}

/* Bytes of piece k of blk. */
static size_t piece_len(const cuda_pin_block *blk, int k)
{
    size_t off = blk->piece * (size_t)k;
    return blk->len - off < blk->piece ? blk->len - off : blk->piece;
}

/* Unpins (the pieces registered) and unmaps blocks taken off the lists. */
static void drop_blocks(cuda_pinned *pp, cuda_pin_block *list)
{
    while (list) {
        cuda_pin_block *n = list->next;
        int ready = __atomic_load_n(&list->ready, __ATOMIC_ACQUIRE);
        for (int k = 0; k < ready; k++)
            pp->ops.unpin(pp->ops.user, (unsigned char *)list->p + list->piece * (size_t)k,
                          piece_len(list, k));
        munmap(list->p, list->len);
        free(list);
        list = n;
    }
}

/* Makes room for len more pinned bytes: detaches pooled blocks (into
 * *drop) while the bound would be passed; VRAM_EHOSTMEM when even an empty
 * pool leaves too little. Counts len as pinned on success (lock held). */
static int reserve_locked(cuda_pinned *pp, size_t len, cuda_pin_block **drop)
{
    while (pp->pinned + len > pp->limit && pp->pool) {
        cuda_pin_block *b = pp->pool;
        pp->pool = b->next;
        pp->pooled -= b->len;
        pp->pinned -= b->len;
        b->next = *drop;
        *drop = b;
    }
    if (pp->pinned + len > pp->limit)
        return vram__errorf(VRAM_EHOSTMEM,
                            "cuda: pinning %s more host memory would pass the bound on pinned "
                            "memory (%s pinned of %s: 80%% of RAM or of the cgroup's limit; "
                            "pinned memory cannot be swapped)",
                            vram__human(len).s, vram__human(pp->pinned).s,
                            vram__human(pp->limit).s);
    pp->pinned += len;
    return 0;
}

/* Maps, touches and pins a new block of len bytes (no lock held). */
static int make_block(cuda_pinned *pp, size_t len, cuda_pin_block **out)
{
    cuda_pin_block *blk = calloc(1, sizeof *blk);
    void *p = blk ? map_block(len) : NULL;
    if (!p) {
        free(blk);
        return vram__errorf(VRAM_EHOSTMEM, "cuda: cannot map %s of host memory for a backup: %s",
                            vram__human(len).s, strerror(errno));
    }
    touch_parallel(p, len);
    int rc = pp->ops.pin(pp->ops.user, p, len);
    if (rc) {
        munmap(p, len);
        free(blk);
        return rc;
    }
    blk->p = p;
    blk->len = len;
    blk->piece = len;
    blk->npieces = 1;
    blk->ready = 1;
    *out = blk;
    return 0;
}

/* Takes a pooled block for bytes, or counts len new bytes against the
 * bound (*blk NULL then); *len gets the rounded size. */
static int get_begin(cuda_pinned *pp, size_t bytes, size_t *len, cuda_pin_block **blk)
{
    *blk = NULL;
    if (bytes == 0 || bytes > SIZE_MAX - PIN_HUGE)
        return vram__errorf(VRAM_EINVAL, "cuda: host_alloc: %zu bytes", bytes);
    *len = (bytes + PIN_HUGE - 1) / PIN_HUGE * PIN_HUGE;
    cuda_pin_block *drop = NULL;
    pthread_mutex_lock(&pp->lock);
    *blk = pool_take_locked(pp, *len);
    int rc = *blk ? 0 : reserve_locked(pp, *len, &drop);
    if (*blk) pp->reuses++;
    pthread_mutex_unlock(&pp->lock);
    drop_blocks(pp, drop);
    return rc;
}

/* Puts blk on the used list and hands it out. */
static void get_end(cuda_pinned *pp, cuda_pin_block *blk, void **out)
{
    pthread_mutex_lock(&pp->lock);
    blk->next = pp->used;
    pp->used = blk;
    pthread_mutex_unlock(&pp->lock);
    *out = blk->p;
}

int vram__pinned_get(cuda_pinned *pp, size_t bytes, void **out, double *secs)
{
    *out = NULL;
    *secs = 0;
    size_t len = 0;
    cuda_pin_block *blk;
    int rc = get_begin(pp, bytes, &len, &blk);
    if (rc) return rc;
    if (!blk) {
        double t0 = vram__now();
        rc = make_block(pp, len, &blk);
        *secs = vram__now() - t0;
        pthread_mutex_lock(&pp->lock);
        if (rc) {
            pp->pinned -= len;
        } else {
            pp->pinned_bytes_total += len;
            pp->pin_seconds_total += *secs;
        }
        pthread_mutex_unlock(&pp->lock);
        if (rc) return rc;
    }
    get_end(pp, blk, out);
    return 0;
}

int vram__pinned_get_lazy(cuda_pinned *pp, size_t bytes, size_t piece, void **out)
{
    *out = NULL;
    size_t len = 0;
    cuda_pin_block *blk;
    int rc = get_begin(pp, bytes, &len, &blk);
    if (rc) return rc;
    if (!blk) {
        piece = piece < PIN_HUGE ? PIN_HUGE : piece / PIN_HUGE * PIN_HUGE;
        blk = calloc(1, sizeof *blk);
        void *p = blk ? map_block(len) : NULL;
        if (!p) {
            free(blk);
            pthread_mutex_lock(&pp->lock);
            pp->pinned -= len;
            pthread_mutex_unlock(&pp->lock);
            return vram__errorf(VRAM_EHOSTMEM,
                                "cuda: cannot map %s of host memory for a backup: %s",
                                vram__human(len).s, strerror(errno));
        }
        blk->p = p;
        blk->len = len;
        blk->piece = piece;
        blk->npieces = (int)((len + piece - 1) / piece);
        blk->ready = 0;
    }
    get_end(pp, blk, out);
    return 0;
}

int vram__pinned_span(cuda_pinned *pp, const void *p, size_t n, cuda_pin_span *out)
{
    memset(out, 0, sizeof *out);
    uintptr_t a = (uintptr_t)p;
    pthread_mutex_lock(&pp->lock);
    for (cuda_pin_block *b = pp->used; b && !out->blk; b = b->next) {
        uintptr_t base = (uintptr_t)b->p;
        if (a >= base && a - base < b->len && n <= b->len - (a - base)) {
            out->blk = b;
            out->base = b->p;
            out->piece = b->piece;
            out->npieces = b->npieces;
            out->first = (int)((a - base) / b->piece);
            out->last = n ? (int)((a - base + n - 1) / b->piece) : out->first;
        }
    }
    pthread_mutex_unlock(&pp->lock);
    return out->blk != NULL;
}

int vram__pinned_ready(const cuda_pin_span *sp)
{
    return __atomic_load_n(&sp->blk->ready, __ATOMIC_ACQUIRE);
}

int vram__pinned_piece(cuda_pinned *pp, const cuda_pin_span *sp, double *secs)
{
    cuda_pin_block *blk = sp->blk;
    int k = __atomic_load_n(&blk->ready, __ATOMIC_ACQUIRE);
    *secs = 0;
    if (k >= blk->npieces) return 0;
    double t0 = vram__now();
    unsigned char *p = (unsigned char *)blk->p + blk->piece * (size_t)k;
    size_t n = piece_len(blk, k);
    touch_parallel(p, n);
    int rc = pp->ops.pin(pp->ops.user, p, n);
    *secs = vram__now() - t0;
    if (rc) return rc;
    __atomic_store_n(&blk->ready, k + 1, __ATOMIC_RELEASE);
    pthread_mutex_lock(&pp->lock);
    pp->pinned_bytes_total += n;
    pp->pin_seconds_total += *secs;
    pthread_mutex_unlock(&pp->lock);
    return 0;
}

int vram__pinned_put(cuda_pinned *pp, void *p)
{
    cuda_pin_block *blk = NULL, *drop = NULL;
    pthread_mutex_lock(&pp->lock);
    for (cuda_pin_block **b = &pp->used; *b; b = &(*b)->next)
        if ((*b)->p == p) {
            blk = *b;
            *b = blk->next;
            break;
        }
    int whole = blk && __atomic_load_n(&blk->ready, __ATOMIC_ACQUIRE) == blk->npieces;
    if (blk && whole && pp->pooled + blk->len <= pp->pool_max) {
        blk->next = pp->pool;
        pp->pool = blk;
        pp->pooled += blk->len;
    } else if (blk) {
        pp->pinned -= blk->len;
        drop = blk;
        drop->next = NULL;
    }
    pthread_mutex_unlock(&pp->lock);
    drop_blocks(pp, drop);
    return blk != NULL;
}

void vram__pinned_destroy(cuda_pinned *pp)
{
    pthread_mutex_lock(&pp->lock);
    cuda_pin_block *a = pp->used, *b = pp->pool;
    pp->used = pp->pool = NULL;
    pp->pinned = pp->pooled = 0;
    pthread_mutex_unlock(&pp->lock);
    drop_blocks(pp, a);
    drop_blocks(pp, b);
    pthread_mutex_destroy(&pp->lock);
}
