/* cuda_pinned.h - pinned host blocks for backups: huge pages touched in parallel, registered,
 * pooled, bounded. */
#ifndef VRAM_CUDA_PINNED_H
#define VRAM_CUDA_PINNED_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Why: one cuMemHostAlloc of a large backup costs seconds (the driver
 * zeroes and pins it page by page, in one thread), and pinned memory cannot
 * be swapped, so pinning more than the machine has ends in the kernel's OOM
 * killer rather than an error. Here a block is an anonymous mapping (explicit
 * 2 MiB huge pages when the system has them, else transparent huge pages
 * asked for with madvise), first touched by several threads at once, then
 * registered (cuMemHostRegister, by the caller's callback). Blocks given
 * back stay registered in a pool for the next backup of a similar size, up
 * to pool_max bytes; everything pinned (in use and pooled) stays below
 * limit, and a block that would pass it is refused (VRAM_EHOSTMEM) after
 * the pool has been emptied to make room.
 *
 * Threading: every function takes the pool's lock for its bookkeeping only;
 * touching and registering a new block run without it.
 */

/* The driver's side: pin or unpin [p, p+n) (a context is current). pin
 * returns 0, or a negative VRAM code after setting the message. */
typedef struct cuda_pin_ops {
    int (*pin)(void *user, void *p, size_t n);
    void (*unpin)(void *user, void *p, size_t n);
    void *user;
} cuda_pin_ops;

typedef struct cuda_pin_block cuda_pin_block;

typedef struct cuda_pinned {
    pthread_mutex_t lock;
    cuda_pin_ops ops;
    cuda_pin_block *used; /* handed out */
    cuda_pin_block *pool; /* given back, still registered */
    uint64_t pinned;      /* bytes pinned now, in use and pooled (and being pinned) */
    uint64_t pooled;      /* of those, in the pool */
    uint64_t limit;       /* bound on pinned */
    uint64_t pool_max;    /* bound on pooled */
    /* what it cost, for the log and the benchmark */
    uint64_t pinned_bytes_total; /* bytes ever pinned here */
    double pin_seconds_total;    /* seconds spent mapping, touching and registering them */
    uint64_t reuses;             /* blocks handed out again from the pool */
} cuda_pinned;

/* The default bound on pinned memory: 80% of the smaller of the cgroup's
 * memory limit (v2 memory.max, v1 memory.limit_in_bytes) and MemTotal. */
uint64_t vram__pinned_default_limit(void);

/* limit 0: vram__pinned_default_limit(); the pool keeps at most a quarter
 * of it. */
void vram__pinned_init(cuda_pinned *pp, const cuda_pin_ops *ops, uint64_t limit);

/* A pinned block of at least bytes: from the pool when one fits (at most
 * 1/8 larger), else a new one. VRAM_EHOSTMEM when the bound or the system
 * refuses; the error of ops->pin when registering fails (the caller may
 * then fall back to cuMemHostAlloc). *secs gets the pinning time (0 when
 * reused). */
int vram__pinned_get(cuda_pinned *pp, size_t bytes, void **out, double *secs);

/*
 * Lazily pinned blocks, to overlap pinning with the first copy into them:
 * vram__pinned_get_lazy maps a block (or takes a whole pooled one) without
 * touching or registering it; it counts against the bound at once. It is
 * registered later in pieces of piece bytes, in order (pieces [0, ready)
 * are pinned), by vram__pinned_piece - the caller's copy queues its
 * chunks into piece k while a helper thread pins piece k+1. A block given
 * back before all its pieces are pinned is unpinned and unmapped, never
 * pooled. Piece state: ready is atomic; a block's pieces are pinned by one
 * thread at a time (the owner of the block's copy).
 */
typedef struct cuda_pin_span {
    cuda_pin_block *blk; /* NULL when the range is not in a block of the pool */
    void *base;          /* the block's start */
    size_t piece;        /* its piece size */
    int npieces;
    int first, last; /* the pieces [p, p+n) touches */
} cuda_pin_span;

/* As vram__pinned_get, but a new block is only mapped (no secs: nothing
 * is pinned yet). */
int vram__pinned_get_lazy(cuda_pinned *pp, size_t bytes, size_t piece, void **out);

/* 1 and *out filled when [p, p+n) lies in a block handed out, else 0. */
int vram__pinned_span(cuda_pinned *pp, const void *p, size_t n, cuda_pin_span *out);

/* How many leading pieces of the span's block are pinned now. */
int vram__pinned_ready(const cuda_pin_span *sp);

/* Touches and registers the next unpinned piece of the span's block (a
 * context current); *secs gets the time. 0 when it was pinned (or all
 * were), else the error of ops->pin (the piece stays unpinned). */
int vram__pinned_piece(cuda_pinned *pp, const cuda_pin_span *sp, double *secs);

/* Gives back a block from vram__pinned_get: 1 when it was one (pooled or
 * unpinned and unmapped), 0 when p is not one of this pool's. */
int vram__pinned_put(cuda_pinned *pp, void *p);

/* Unpins and unmaps every block, used or pooled (a context is current). */
void vram__pinned_destroy(cuda_pinned *pp);

#endif /* VRAM_CUDA_PINNED_H */
