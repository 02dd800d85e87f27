/* host.c - the host backend: device memory emulated in host RAM, addressed like CUDA VMM. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

#include "backend/backend.h"
#include "backend/host_shared.h"
#include "base/base.h"

/*
 * Model
 *
 * - A device is a memfd of `capacity` bytes: the GPU's physical memory.
 *   A first-fit extent allocator over its offsets (granularity-aligned,
 *   free extents kept sorted and coalesced) hands out physical extents.
 *   Pages of the memfd stay resident once touched, like VRAM.
 * - reserve = an anonymous PROT_NONE range aligned to the granularity;
 *   map = physical extents mapped MAP_SHARED|MAP_FIXED over that same range;
 *   unmap = PROT_NONE anonymous memory MAP_FIXED over it again (the
 *   addresses stay reserved and fault if touched); unreserve = munmap.
 * - The pool: memory a range gives back stays mapped and populated, like
 *   VRAM a model frees. Each device has a pool view, an address range of
 *   its capacity where offset `off` of the memfd lives at pool + off.
 *   unmap moves the range's page tables there (mremap with
 *   MREMAP_DONTUNMAP, so that no address is ever left unmapped for another
 *   thread's mmap to take) and marks those granules warm; map moves warm
 *   granules back the same way and maps and prefaults only cold ones. A
 *   fresh mapping costs page-table setup and, under a hypervisor with
 *   shadow paging, a trap per page on first touch (measured 0.3-0.4 GB/s
 *   for the first copy into it, 10+ GB/s for the next); a moved one costs
 *   neither. Pooled memory is free memory: the accounting (used, free) is
 *   that of the extent allocator alone, and map takes warm extents first.
 * - Like cuMemCreate's pages, the memory behind one range need not be
 *   contiguous: map takes one extent when one is large enough, else several
 *   (scatter) and maps each piece at its place in the range, so a map fails
 *   for lack of memory only when fewer free bytes than it needs are left.
 * - One mutex guards the allocators; copies run without it.
 * - Shared devices (VRAM_HOST_SHARED=NAME, host_shared.c): the bytes stay
 *   in this process's memfds, but every growth of a device's `used` is
 *   first charged in the share's ledger, and every shrink uncharged, so
 *   that the processes naming NAME see one device of `capacity` between
 *   them (pooled memory is free there too). The ledger's lock is taken
 *   under c->lock, innermost. Without a share the cost is one branch.
 * - Poison (tests): with VRAM_HOST_POISON=1 in the environment when the
 *   backend is created, every map fills the whole range with a poison
 *   pattern and every host_alloc fills its memory, as real VRAM and pinned
 *   memory hold whatever was there before. Without it a range is given
 *   back the pages it had (the pool), still holding its old bytes, so a
 *   restore or a load that skips bytes would go unnoticed. CTest sets it
 *   for every test; production leaves it off (a map then costs no write).
 */

#define HOST_GRANULARITY ((size_t)2 << 20) /* 2 MiB, CUDA's usual granularity */
#define HOST_MAX_DEVICES 16
#define HOST_RANGE_MAGIC 0x686f737472616e67ULL /* "hostrang" */

typedef struct host_extent {
    uint64_t off;
    uint64_t len;
} host_extent;

typedef struct host_dev {
    int fd;                /* the memfd: physical memory of this device */
    char *pool;            /* the pool view: memfd offset off at pool + off */
    unsigned char *warm;   /* per granule: its pages are mapped at the pool view */
    uint64_t capacity;     /* bytes, a multiple of the granularity */
    uint64_t used;         /* bytes of extents handed out (mapped) */
    host_extent *free_ext; /* free extents sorted by offset, never adjacent */
    size_t nfree;
    size_t free_cap; /* room for the worst case: allocation never fails on free */
} host_dev;

typedef struct host_ctx {
    pthread_mutex_t lock;
    int ndev;
    host_dev devs[HOST_MAX_DEVICES];
    size_t page;
    int piece_countdown; /* atomic: vram__backend_host_fail_piece; 0 = not armed */
    int piece_n, piece_err;
    int piece_fired; /* atomic: armed piece failures that hit */
    int populate_fallback; /* kernel without MADV_POPULATE_*: use MAP_POPULATE */
    int no_pool;           /* kernel without MREMAP_DONTUNMAP for shmem: unmap drops */
    int poison;            /* VRAM_HOST_POISON: fill fresh memory with HOST_POISON */
    vram_host_shared *shared; /* VRAM_HOST_SHARED: the share's ledger; NULL = not shared */
} host_ctx;

/* The poison byte: not 0 (fresh pages) and not 0xff, so neither reads as
 * "untouched" by accident. */
#define HOST_POISON 0xa5

/* Whether VRAM_HOST_POISON asks for poison ("1", "yes", "true", "on"). */
static int poison_from_env(void)
{
    const char *v = getenv("VRAM_HOST_POISON");
    if (!v || !*v) return 0;
    return strcmp(v, "0") != 0 && strcasecmp(v, "no") != 0 && strcasecmp(v, "false") != 0 &&
           strcasecmp(v, "off") != 0;
}

/* buf->impl of a reserved range. While buf->mapped, pieces holds the
 * physical extents behind it in address order (piece i starts where the
 * pieces before it end): &one when a single extent backs the range, else an
 * array that map allocates before taking any memory and unmap frees, so
 * that giving memory back never needs an allocation. */
typedef struct host_range {
    uint64_t magic;
    host_extent *pieces; /* NULL while not mapped */
    size_t npieces;
    host_extent one;
} host_range;

static const struct vram_backend_iface host_iface;

static const char *host_strerror(int e, char *buf, size_t len)
{
    /* GNU strerror_r: returns a static string or one written into buf */
    return strerror_r(e, buf, len);
}

static double mib(uint64_t bytes)
{
    return (double)bytes / (1024.0 * 1024.0);
}

/* ---- the one fault the decorator cannot reach ---- */

/* Counts one piece mmap of a map; returns the armed error (message set)
 * when this is the piece that was asked to fail, else 0. */
static int piece_check(host_ctx *c)
{
    int left = __atomic_load_n(&c->piece_countdown, __ATOMIC_ACQUIRE);
    while (left > 0) {
        if (__atomic_compare_exchange_n(&c->piece_countdown, &left, left - 1, 0,
                                        __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            if (left != 1) return 0;
            __atomic_fetch_add(&c->piece_fired, 1, __ATOMIC_RELEASE);
            return vram__errorf(__atomic_load_n(&c->piece_err, __ATOMIC_ACQUIRE),
                                "injected failure: map_piece #%d",
                                __atomic_load_n(&c->piece_n, __ATOMIC_ACQUIRE));
        }
    }
    return 0;
}

/* Tests: the nth piece mapped from now (each map counts one per piece it
 * maps, a map in one extent one) fails with err, so that a map fails midway
 * with its memory taken; n = 0 clears. Whole-call failures of any backend
 * belong to the fault decorator (fault.c); this one sits inside map.
 * Returns VRAM_ENOTSUP when b is not a host backend. */
int vram__backend_host_fail_piece(vram_backend *b, int n, int err)
{
    if (!b || b->iface != &host_iface)
        return vram__errorf(VRAM_ENOTSUP, "map_piece faults: not a host backend");
    host_ctx *c = b->ctx;
    if (err >= 0) err = VRAM_EBACKEND;
    __atomic_store_n(&c->piece_n, n < 0 ? 0 : n, __ATOMIC_RELEASE);
    __atomic_store_n(&c->piece_err, err, __ATOMIC_RELEASE);
    __atomic_store_n(&c->piece_countdown, n < 0 ? 0 : n, __ATOMIC_RELEASE);
    return 0;
}

int vram__backend_host_piece_fired(vram_backend *b)
{
    if (!b || b->iface != &host_iface) return 0;
    return __atomic_load_n(&((host_ctx *)b->ctx)->piece_fired, __ATOMIC_ACQUIRE);
}

/* ---- extent allocator (caller holds c->lock) ---- */

/* First fit, warm first: the first free extent large enough whose first
 * granule is pooled, else the first large enough. Returns 0 and the
 * offset, or -1 when no free extent is large enough. */
static int extent_alloc(host_dev *d, uint64_t len, uint64_t *off)
{
    size_t pick = d->nfree;
    for (size_t i = 0; i < d->nfree; i++) {
        host_extent *e = &d->free_ext[i];
        if (e->len < len) continue;
        if (pick == d->nfree) pick = i;
        if (d->warm[e->off / HOST_GRANULARITY]) {
            pick = i;
            break;
        }
    }
    for (size_t i = pick; i < d->nfree; i++) {
        host_extent *e = &d->free_ext[i];
        if (e->len >= len) {
            *off = e->off;
            e->off += len;
            e->len -= len;
            if (e->len == 0) {
                memmove(e, e + 1, (d->nfree - i - 1) * sizeof *e);
                d->nfree--;
            }
            d->used += len;
            return 0;
        }
    }
    return -1;
}

/* Returns [off, off+len) to the free list, merging with its neighbours. */
static void extent_free(host_dev *d, uint64_t off, uint64_t len)
{
    size_t lo = 0, hi = d->nfree; /* first free extent with offset > off */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (d->free_ext[mid].off < off)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t i = lo;
    int merge_prev = i > 0 && d->free_ext[i - 1].off + d->free_ext[i - 1].len == off;
    int merge_next = i < d->nfree && off + len == d->free_ext[i].off;
    if (merge_prev && merge_next) {
        d->free_ext[i - 1].len += len + d->free_ext[i].len;
        memmove(&d->free_ext[i], &d->free_ext[i + 1], (d->nfree - i - 1) * sizeof(host_extent));
        d->nfree--;
    } else if (merge_prev) {
        d->free_ext[i - 1].len += len;
    } else if (merge_next) {
        d->free_ext[i].off = off;
        d->free_ext[i].len += len;
    } else if (d->nfree < d->free_cap) {
        /* free_cap covers the worst case (every other granule free) */
        memmove(&d->free_ext[i + 1], &d->free_ext[i], (d->nfree - i) * sizeof(host_extent));
        d->free_ext[i].off = off;
        d->free_ext[i].len = len;
        d->nfree++;
    } else {
        /* cannot happen (free_cap bounds the list); keep the count honest */
        vram__log(VRAM_LOG_ERROR, "host backend: free extent list full, %llu bytes lost",
                  (unsigned long long)len);
        return;
    }
    d->used -= len;
}

/* Takes extents that together cover len bytes into out[0..n), in the order
 * they are to be mapped: one extent (first fit) when one is large enough;
 * else the largest free extent whole (the first of equals), again and again,
 * until the rest fits in one, taken first fit. Returns n, or 0 having taken
 * nothing when fewer than len bytes are free or more than max pieces would
 * be needed. Every piece is a multiple of the granularity when len is, so
 * n <= len / granularity; and n <= nfree <= free_cap. */
static size_t extent_take(host_dev *d, uint64_t len, host_extent *out, size_t max)
{
    if (max == 0 || len == 0 || d->capacity - d->used < len) return 0;
    size_t n = 0;
    uint64_t left = len, off = 0;
    for (;;) { /* left > 0 here, and free bytes >= left */
        if (extent_alloc(d, left, &off) == 0) {
            out[n].off = off;
            out[n].len = left;
            return n + 1;
        }
        if (n + 2 > max) { /* a whole extent now and one more after it: too many */
            while (n > 0) {
                n--;
                extent_free(d, out[n].off, out[n].len);
            }
            return 0;
        }
        size_t big = 0; /* there is a free extent, and every one is smaller than left */
        for (size_t i = 1; i < d->nfree; i++)
            if (d->free_ext[i].len > d->free_ext[big].len) big = i;
        out[n++] = d->free_ext[big];
        left -= d->free_ext[big].len;
        d->used += d->free_ext[big].len;
        memmove(&d->free_ext[big], &d->free_ext[big + 1],
                (d->nfree - big - 1) * sizeof(host_extent));
        d->nfree--;
    }
}

/* ---- devices ---- */

static int host_device_count(vram_backend *b)
{
    host_ctx *c = b->ctx;
    return c->ndev;
}

static int check_dev(host_ctx *c, int dev)
{
    if (dev < 0 || dev >= c->ndev)
        return vram__errorf(VRAM_ENODEV, "host backend: no device %d (there are %d)", dev, c->ndev);
    return 0;
}

/* The uuid of shared device dev: "HOST-NAME-dev", the same in every
 * process; a name too long for it is cut and followed by a hash of it
 * all, so that two names never give one uuid. */
static void shared_uuid(const char *name, int dev, char *out, size_t len)
{
    size_t n = strlen(name);
    if (n + 12 <= len) {
        snprintf(out, len, "HOST-%s-%d", name, dev);
        return;
    }
    uint64_t h = VRAM_GOLDEN;
    for (size_t i = 0; i < n; i++)
        h = vram__mix64(h ^ (unsigned char)name[i]);
    snprintf(out, len, "HOST-%.*s~%016llx-%d", (int)(len > 40 ? len - 26 : 1), name,
             (unsigned long long)h, dev);
}

/* A shared device's figures: free is what no process holds. */
static int shared_info(host_ctx *c, int dev, vram_dev_info *out)
{
    vram_host_shared_usage u;
    int rc = vram__host_shared_usage(c->shared, dev, &u);
    if (rc) return rc;
    shared_uuid(vram__host_shared_name(c->shared), dev, out->uuid, sizeof out->uuid);
    out->total = u.capacity;
    out->free = u.used < u.capacity ? u.capacity - u.used : 0;
    out->granularity = HOST_GRANULARITY;
    return 0;
}

static int host_device_info(vram_backend *b, int dev, vram_dev_info *out)
{
    host_ctx *c = b->ctx;
    int rc = check_dev(c, dev);
    if (rc) return rc;
    if (!out) return vram__errorf(VRAM_EINVAL, "host backend: device_info: out is NULL");
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "host-emulated device %d", dev);
    if (c->shared) return shared_info(c, dev, out);
    snprintf(out->uuid, sizeof out->uuid, "HOST-%d", dev);
    pthread_mutex_lock(&c->lock);
    out->total = c->devs[dev].capacity;
    out->free = c->devs[dev].capacity - c->devs[dev].used;
    pthread_mutex_unlock(&c->lock);
    out->granularity = HOST_GRANULARITY;
    return 0;
}

/* ---- address ranges ---- */

static host_range *range_of(const vram_buf *buf)
{
    if (!buf || !buf->impl) return NULL;
    host_range *r = buf->impl;
    return r->magic == HOST_RANGE_MAGIC ? r : NULL;
}

static int host_reserve(vram_backend *b, int dev, size_t bytes, vram_buf *buf)
{
    host_ctx *c = b->ctx;
    if (!buf) return vram__errorf(VRAM_EINVAL, "host backend: reserve: buf is NULL");
    int rc = check_dev(c, dev);
    if (rc) return rc;
    if (bytes == 0) return vram__errorf(VRAM_EINVAL, "host backend: reserve: 0 bytes");
    if (bytes > SIZE_MAX / 2 - 2 * HOST_GRANULARITY)
        return vram__errorf(VRAM_EINVAL, "host backend: reserve: %zu bytes is too large", bytes);

    size_t rounded = (size_t)vram__round_up(bytes, HOST_GRANULARITY);
    host_range *r = malloc(sizeof *r);
    if (!r) return vram__errorf(VRAM_EHOSTMEM, "host backend: reserve: out of host memory");
    /* over-reserve by one granule, then trim to an aligned range */
    size_t span = rounded + HOST_GRANULARITY;
    void *p = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        int e = errno;
        char eb[128];
        free(r);
        return vram__errorf(VRAM_EHOSTMEM,
                            "host backend: reserve of %zu bytes on device %d: mmap: %s", rounded,
                            dev, host_strerror(e, eb, sizeof eb));
    }
    uintptr_t start = (uintptr_t)p;
    uintptr_t addr = (uintptr_t)vram__round_up(start, HOST_GRANULARITY);
    if (addr > start) munmap(p, addr - start);
    uintptr_t end = addr + rounded, span_end = start + span;
    if (span_end > end) munmap((void *)end, span_end - end);

    r->magic = HOST_RANGE_MAGIC;
    r->pieces = NULL;
    r->npieces = 0;
    r->one.off = r->one.len = 0;
    buf->device = dev;
    buf->addr = addr;
    buf->size = bytes;
    buf->reserved = rounded;
    buf->mapped = 0;
    buf->impl = r;
    return 0;
}

/* Puts PROT_NONE anonymous memory over the range: reserved, nothing behind it. */
static int range_to_none(vram_buf *buf)
{
    void *p = mmap((void *)buf->addr, buf->reserved, PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
    return p == MAP_FAILED ? errno : 0;
}

/* Gives the range's pieces back to its device and frees their array;
 * the range must no longer map them. Never fails. */
static void range_release(host_ctx *c, vram_buf *buf, host_range *r)
{
    if (r->npieces && buf->device >= 0 && buf->device < c->ndev) {
        host_dev *d = &c->devs[buf->device];
        uint64_t bytes = 0;
        pthread_mutex_lock(&c->lock);
        for (size_t i = 0; i < r->npieces; i++) {
            extent_free(d, r->pieces[i].off, r->pieces[i].len);
            bytes += r->pieces[i].len;
        }
        if (c->shared) vram__host_shared_uncharge(c->shared, buf->device, bytes);
        pthread_mutex_unlock(&c->lock);
    }
    if (r->pieces != &r->one) free(r->pieces);
    r->pieces = NULL;
    r->npieces = 0;
}

/* Why a take found no memory: the share's ledger said no (shared = 1,
 * its figures in u), or its lock failed (shared < 0, message set). */
typedef struct take_why {
    int shared;
    vram_host_shared_usage u;
} take_why;

/* extent_take on device dev (caller holds c->lock), the bytes charged
 * first in the share's ledger when there is one. Returns n, or 0 having
 * taken nothing (the ledger's refusal in *why). */
static size_t dev_take(host_ctx *c, int dev, uint64_t len, host_extent *out, size_t max,
                       take_why *why)
{
    host_dev *d = &c->devs[dev];
    if (!c->shared) return extent_take(d, len, out, max);
    if (max == 0 || len == 0 || d->capacity - d->used < len) return 0;
    why->shared = vram__host_shared_charge(c->shared, dev, len, &why->u);
    if (why->shared) return 0;
    size_t n = extent_take(d, len, out, max);
    if (n == 0) vram__host_shared_uncharge(c->shared, dev, len);
    return n;
}

/* The error of a map that found too few free bytes. */
static int take_fail(host_ctx *c, const vram_buf *buf, uint64_t free_now, const take_why *why)
{
    host_dev *d = &c->devs[buf->device];
    if (why->shared < 0) return why->shared;
    if (why->shared) {
        const vram_host_shared_usage *u = &why->u;
        uint64_t left = u->used < u->capacity ? u->capacity - u->used : 0;
        uint64_t others = u->used > u->mine ? u->used - u->mine : 0;
        return vram__errorf(VRAM_ENOMEM,
                            "host device %d (shared '%s'): out of device memory: asked %s, %s "
                            "free of %s; other processes hold %s, this one %s",
                            buf->device, vram__host_shared_name(c->shared),
                            vram__human(buf->reserved).s, vram__human(left).s,
                            vram__human(u->capacity).s, vram__human(others).s,
                            vram__human(u->mine).s);
    }
    return vram__errorf(VRAM_ENOMEM,
                        "host device %d: out of device memory: asked %zu bytes (%.1f MiB), "
                        "%llu bytes (%.1f MiB) free of %llu (%.1f MiB)",
                        buf->device, buf->reserved, mib(buf->reserved),
                        (unsigned long long)free_now, mib(free_now),
                        (unsigned long long)d->capacity, mib(d->capacity));
}

/* Takes device memory for the whole range into r->pieces: one extent into
 * r->one when one is large enough, else an array allocated (without the
 * lock) before anything is taken. Returns 0, VRAM_ENOMEM when fewer free
 * bytes than the range needs are left (on this device, or of a shared one
 * between all its processes), or VRAM_EHOSTMEM; on failure nothing is
 * taken and r->pieces stays NULL. */
static int range_take(host_ctx *c, vram_buf *buf, host_range *r)
{
    host_dev *d = &c->devs[buf->device];
    take_why why = {0, {0, 0, 0}};
    pthread_mutex_lock(&c->lock);
    size_t n = dev_take(c, buf->device, buf->reserved, &r->one, 1, &why);
    uint64_t free_now = d->capacity - d->used;
    pthread_mutex_unlock(&c->lock);
    host_extent *arr = NULL;
    if (n == 0 && !why.shared && free_now >= buf->reserved) {
        /* scattered: room for the most pieces the range can need */
        size_t max = buf->reserved / HOST_GRANULARITY;
        if (max > d->free_cap) max = d->free_cap;
        arr = malloc(max * sizeof *arr);
        if (!arr)
            return vram__errorf(VRAM_EHOSTMEM,
                                "host device %d: map of %zu bytes: out of host memory for its "
                                "list of %zu pieces",
                                buf->device, buf->reserved, max);
        pthread_mutex_lock(&c->lock);
        n = dev_take(c, buf->device, buf->reserved, arr, max, &why); /* 0: memory went */
        free_now = d->capacity - d->used;
        pthread_mutex_unlock(&c->lock);
        if (n == 1) { /* memory came back meanwhile: one extent after all */
            r->one = arr[0];
            free(arr);
            arr = NULL;
        }
    }
    if (n == 0) {
        free(arr);
        return take_fail(c, buf, free_now, &why);
    }
    r->pieces = arr ? arr : &r->one;
    r->npieces = n;
    return 0;
}

#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4 /* Linux 5.7; for shared memory 5.13 */
#endif

/* Moves the page tables of [from, from+len) to [to, to+len), keeping both
 * addresses mapped (no window for another thread's mmap). Returns 0 or an
 * errno. */
static int move_pages(void *from, void *to, size_t len)
{
    void *p = mremap(from, len, len, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, to);
    return p == MAP_FAILED ? errno : 0;
}

/* Moves [from, from+len) in one call, else granule by granule (the span
 * may cross mappings). Returns 0 or the first errno. */
static int move_span(char *from, char *to, size_t len)
{
    if (move_pages(from, to, len) == 0) return 0;
    for (size_t at = 0; at < len; at += HOST_GRANULARITY) {
        int e = move_pages(from + at, to + at, HOST_GRANULARITY);
        if (e) return e;
    }
    return 0;
}

/* Maps memfd [off, off+len) fresh at addr and prefaults it. Returns 0 or
 * an errno; *what names the call that failed. */
static int map_cold(host_ctx *c, int fd, char *addr, uint64_t off, size_t len, const char **what)
{
    int populate = __atomic_load_n(&c->populate_fallback, __ATOMIC_RELAXED) ? MAP_POPULATE : 0;
    *what = "mmap";
    void *p = mmap(addr, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED | populate, fd,
                   (off_t)off);
    if (p == MAP_FAILED) return errno;
    if (populate) return 0;
    /* THP for shmem only helps when enabled ("advise"); harmless otherwise.
     * Every piece is granularity (2 MiB) aligned. */
    (void)madvise(addr, len, MADV_HUGEPAGE);
    /* Prefault the page tables so that a restore copies at memcpy speed.
     * A read populate maps shmem pages writable (no write-notify on shmem)
     * and measured twice as fast as MADV_POPULATE_WRITE. Unlike
     * MAP_POPULATE it reports failure (host RAM exhausted). */
    if (madvise(addr, len, MADV_POPULATE_READ) == 0) return 0;
    int e = errno;
    *what = "madvise(MADV_POPULATE_READ)";
    if (e != EINVAL) return e;
    __atomic_store_n(&c->populate_fallback, 1, __ATOMIC_RELAXED); /* kernel older than 5.14 */
    *what = "mmap";
    p = mmap(addr, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED | MAP_POPULATE, fd,
             (off_t)off);
    return p == MAP_FAILED ? errno : 0;
}

/* Puts piece pc at addr: its warm granules moved from the pool view (runs
 * of them at once), its cold ones mapped fresh. Returns 0 or an errno. */
static int piece_place(host_ctx *c, host_dev *d, char *addr, host_extent pc, const char **what)
{
    size_t g = pc.off / HOST_GRANULARITY, end = (pc.off + pc.len) / HOST_GRANULARITY;
    while (g < end) {
        size_t run = g + 1;
        while (run < end && d->warm[run] == d->warm[g])
            run++;
        uint64_t off = (uint64_t)g * HOST_GRANULARITY;
        size_t len = (run - g) * HOST_GRANULARITY;
        char *at = addr + (off - pc.off);
        int e = d->warm[g] ? move_span(d->pool + off, at, len) : EAGAIN;
        if (e) e = map_cold(c, d->fd, at, off, len, what);
        if (e) return e;
        g = run;
    }
    return 0;
}

/* Places the range's pieces in turn from its start. Each piece counts for
 * vram__backend_host_fail_piece. Returns 0; a positive errno when a
 * mapping failed; or a negative VRAM code (message set) when an injected
 * failure hit. Pieces already placed stay (and are no longer warm). */
static int pieces_place(host_ctx *c, const vram_buf *buf, const host_range *r, const char **what)
{
    host_dev *d = &c->devs[buf->device];
    size_t at = 0;
    for (size_t i = 0; i < r->npieces; i++) {
        int rc = piece_check(c);
        if (rc) return rc;
        int e = piece_place(c, d, (char *)buf->addr + at, r->pieces[i], what);
        if (e) return e;
        at += (size_t)r->pieces[i].len;
    }
    return 0;
}

/* Marks the granules of the range's pieces warm or cold. The caller owns
 * them (they are in no free list). */
static void pieces_mark(host_ctx *c, const vram_buf *buf, const host_range *r, int warm)
{
    host_dev *d = &c->devs[buf->device];
    for (size_t i = 0; i < r->npieces; i++)
        memset(d->warm + r->pieces[i].off / HOST_GRANULARITY, warm,
               (size_t)(r->pieces[i].len / HOST_GRANULARITY));
}

/* Moves the range's pieces to the pool view and marks them warm; a piece
 * that cannot move stays cold (the PROT_NONE that follows drops it). */
static void pieces_park(host_ctx *c, const vram_buf *buf, const host_range *r)
{
    host_dev *d = &c->devs[buf->device];
    int pool = !__atomic_load_n(&c->no_pool, __ATOMIC_RELAXED);
    size_t at = 0;
    for (size_t i = 0; i < r->npieces; i++) {
        host_extent pc = r->pieces[i];
        int e = pool ? move_span((char *)buf->addr + at, d->pool + pc.off, (size_t)pc.len) : 1;
        if (e == EINVAL) { /* no MREMAP_DONTUNMAP for shared memory (before 5.13) */
            __atomic_store_n(&c->no_pool, 1, __ATOMIC_RELAXED);
            pool = 0;
        }
        memset(d->warm + pc.off / HOST_GRANULARITY, e == 0, (size_t)(pc.len / HOST_GRANULARITY));
        at += (size_t)pc.len;
    }
}

/* Takes the memory, then places it: pooled granules moved in, the rest
 * mapped and prefaulted. On failure every piece taken is given back (cold)
 * and PROT_NONE covers the whole range again: the range is exactly as
 * before. */
static int host_map(vram_backend *b, vram_buf *buf)
{
    host_ctx *c = b->ctx;
    host_range *r = range_of(buf);
    if (!r) return vram__errorf(VRAM_EINVAL, "host backend: map: not a reserved host range");
    if (check_dev(c, buf->device)) return VRAM_EINVAL;
    if (buf->mapped)
        return vram__errorf(VRAM_EINVAL, "host backend: map: range at %#lx is already mapped",
                            (unsigned long)buf->addr);
    int rc = range_take(c, buf, r);
    if (rc) return rc;
    const char *what = "mmap";
    int e = pieces_place(c, buf, r, &what);
    if (e) {
        /* leave the range exactly as before: reserved, nothing behind it */
        int e2 = range_to_none(buf);
        size_t npieces = r->npieces;
        pieces_mark(c, buf, r, 0);
        range_release(c, buf, r);
        if (e2)
            vram__log(VRAM_LOG_ERROR,
                      "host backend: could not restore PROT_NONE over %#lx after a failed map",
                      (unsigned long)buf->addr);
        if (e < 0) return e; /* injected, message set */
        char eb[128];
        const char *es = host_strerror(e, eb, sizeof eb);
        return vram__errorf(VRAM_EHOSTMEM,
                            "host device %d: map of %zu bytes (%.1f MiB) in %zu piece%s at %#lx: "
                            "%s: %s (host RAM behind the emulated device exhausted?)",
                            buf->device, buf->reserved, mib(buf->reserved), npieces,
                            npieces == 1 ? "" : "s", (unsigned long)buf->addr, what, es);
    }
    if (c->poison) memset((void *)buf->addr, HOST_POISON, buf->reserved);
    if (r->npieces > 1)
        vram__log(VRAM_LOG_DEBUG, "host device %d: %zu bytes at %#lx mapped in %zu pieces",
                  buf->device, buf->reserved, (unsigned long)buf->addr, r->npieces);
    buf->mapped = 1;
    return 0;
}

/* Parks the memory in the pool, then PROT_NONE over the range. */
static int host_unmap(vram_backend *b, vram_buf *buf)
{
    host_ctx *c = b->ctx;
    host_range *r = range_of(buf);
    if (!r) return vram__errorf(VRAM_EINVAL, "host backend: unmap: not a reserved host range");
    if (check_dev(c, buf->device)) return VRAM_EINVAL;
    if (!buf->mapped) return 0;
    pieces_park(c, buf, r);
    int e = range_to_none(buf);
    if (e) {
        /* still mapped where the pages did not move; those moved stay
         * reachable from the pool view too, and are taken by no one */
        char eb[128];
        return vram__errorf(VRAM_EBACKEND, "host device %d: unmap of %zu bytes at %#lx: mmap: %s",
                            buf->device, buf->reserved, (unsigned long)buf->addr,
                            host_strerror(e, eb, sizeof eb));
    }
    range_release(c, buf, r);
    buf->mapped = 0;
    return 0;
}

static void host_unreserve(vram_backend *b, vram_buf *buf)
{
    host_ctx *c = b->ctx;
    host_range *r = range_of(buf);
    if (!r) return;
    if (buf->mapped) pieces_park(c, buf, r);
    munmap((void *)buf->addr, buf->reserved);
    /* the munmap dropped what did not move; give the pieces back */
    range_release(c, buf, r);
    r->magic = 0;
    free(r);
    buf->addr = 0;
    buf->reserved = 0;
    buf->size = 0;
    buf->mapped = 0;
    buf->impl = NULL;
}

/* ---- host memory ---- */

static int host_host_alloc(vram_backend *b, size_t bytes, void **out)
{
    host_ctx *c = b->ctx;
    if (!out) return vram__errorf(VRAM_EINVAL, "host backend: host_alloc: out is NULL");
    *out = NULL;
    if (bytes == 0) return vram__errorf(VRAM_EINVAL, "host backend: host_alloc: 0 bytes");
    if (bytes > SIZE_MAX - c->page)
        return vram__errorf(VRAM_EHOSTMEM, "host backend: host_alloc: %zu bytes is too large",
                            bytes);
    size_t len = (size_t)vram__round_up(bytes, c->page);
    int populate = __atomic_load_n(&c->populate_fallback, __ATOMIC_RELAXED) ? MAP_POPULATE : 0;
    void *p =
        mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | populate, -1, 0);
    int e = p == MAP_FAILED ? errno : 0;
    if (!e && !populate) {
        /* huge pages make the first fault-in several times cheaper */
        if (len >= HOST_GRANULARITY) (void)madvise(p, len, MADV_HUGEPAGE);
        if (madvise(p, len, MADV_POPULATE_WRITE) != 0) {
            e = errno;
            if (e == EINVAL) { /* old kernel: let faults happen on first use */
                __atomic_store_n(&c->populate_fallback, 1, __ATOMIC_RELAXED);
                e = 0;
            } else {
                munmap(p, len);
            }
        }
    }
    if (e) {
        char eb[128];
        return vram__errorf(VRAM_EHOSTMEM, "host backend: host_alloc of %zu bytes (%.1f MiB): %s",
                            bytes, mib(bytes), host_strerror(e, eb, sizeof eb));
    }
    if (c->poison) memset(p, HOST_POISON, len);
    *out = p;
    return 0;
}

static void host_host_free(vram_backend *b, void *p, size_t bytes)
{
    host_ctx *c = b->ctx;
    if (!p || bytes == 0) return;
    munmap(p, (size_t)vram__round_up(bytes, c->page));
}

/* ---- copies ---- */

static int check_copy(const char *op, const vram_buf *buf, size_t off, size_t n, const void *host)
{
    if (!range_of(buf))
        return vram__errorf(VRAM_EINVAL, "host backend: %s: not a reserved host range", op);
    if (!buf->mapped)
        return vram__errorf(VRAM_EINVAL, "host backend: %s: range at %#lx is not mapped", op,
                            (unsigned long)buf->addr);
    if (off > buf->size || n > buf->size - off)
        return vram__errorf(VRAM_EINVAL,
                            "host backend: %s: [%zu, +%zu) is outside the %zu bytes of the range "
                            "at %#lx",
                            op, off, n, buf->size, (unsigned long)buf->addr);
    if (n > 0 && !host)
        return vram__errorf(VRAM_EINVAL, "host backend: %s: host pointer is NULL", op);
    return 0;
}

/* Copies of at least this many bytes are split across the calling thread and
 * one helper thread. Measured on a 2-core VM (1 GiB, touched memory): one
 * memcpy 8.3-9.3 GB/s; two halves 9.2 GB/s with the other core busy and
 * 18-19 GB/s with it idle. A thread start (~30 us) is lost in a 16 MiB copy
 * (~2 ms). */
#define HOST_SPLIT_MIN ((size_t)16 << 20)

typedef struct copy_half {
    void *dst;
    const void *src;
    size_t n;
} copy_half;

static void *copy_half_main(void *arg)
{
    copy_half *h = arg;
    memcpy(h->dst, h->src, h->n);
    return NULL;
}

static void host_copy(void *dst, const void *src, size_t n)
{
    if (n < HOST_SPLIT_MIN) {
        memcpy(dst, src, n);
        return;
    }
    size_t first = n / 2 / 4096 * 4096;
    copy_half h = {(char *)dst + first, (const char *)src + first, n - first};
    pthread_t t;
    if (pthread_create(&t, NULL, copy_half_main, &h) != 0) { /* no thread: one memcpy */
        memcpy(dst, src, n);
        return;
    }
    memcpy(dst, src, first);
    pthread_join(t, NULL);
}

static int host_to_host(vram_backend *b, const vram_buf *buf, size_t off, void *dst, size_t n)
{
    int rc = check_copy("to_host", buf, off, n, dst);
    if (rc) return rc;
    if (n) host_copy(dst, (const char *)buf->addr + off, n);
    return 0;
}

static int host_to_device(vram_backend *b, const vram_buf *buf, size_t off, const void *src,
                          size_t n)
{
    int rc = check_copy("to_device", buf, off, n, src);
    if (rc) return rc;
    if (n) host_copy((char *)buf->addr + off, src, n);
    return 0;
}

/* Device memory of the host backend is host memory: its address, when the
 * span is mapped and in bounds. */
static void *host_host_ptr(vram_backend *b, const vram_buf *buf, size_t off, size_t n)
{
    (void)b;
    if (!buf || !buf->mapped || off > buf->size || n > buf->size - off) return NULL;
    return (void *)(buf->addr + off);
}

static int host_checksum(vram_backend *b, const vram_buf *buf, size_t off, size_t n, uint64_t *sum)
{
    int rc = check_copy("checksum", buf, off, n, sum);
    if (rc) return rc;
    if (!sum) return vram__errorf(VRAM_EINVAL, "host backend: checksum: sum is NULL");
    if (off % 8)
        return vram__errorf(VRAM_EINVAL,
                            "host backend: checksum: offset %zu is not a multiple of 8", off);
    *sum = vram__checksum_partial((const char *)buf->addr + off, n, off / 8);
    return 0;
}

/* ---- life cycle ---- */

static void host_ctx_free(host_ctx *c)
{
    for (int i = 0; i < c->ndev; i++) {
        host_dev *d = &c->devs[i];
        if (d->used)
            vram__log(VRAM_LOG_WARN, "host backend: device %d destroyed with %llu bytes mapped", i,
                      (unsigned long long)d->used);
        if (d->fd >= 0) close(d->fd);
        if (d->pool) munmap(d->pool, d->capacity);
        free(d->warm);
        free(d->free_ext);
    }
    vram__host_shared_close(c->shared); /* gives back this process's slots */
    pthread_mutex_destroy(&c->lock);
    free(c);
}

static void host_destroy(vram_backend *b)
{
    if (!b) return;
    if (b->ctx) host_ctx_free(b->ctx);
    free(b);
}

/* Device i: its memfd of capacity bytes, its free list holding all of it,
 * and its pool view (nothing warm yet). On failure host_ctx_free cleans up
 * what was made. */
static int dev_init(host_dev *d, int i, uint64_t capacity)
{
    char name[32], eb[128];
    snprintf(name, sizeof name, "vram-host-dev%d", i);
    d->fd = memfd_create(name, MFD_CLOEXEC);
    if (d->fd < 0)
        return vram__errorf(VRAM_EHOSTMEM, "host backend: device %d: memfd_create: %s", i,
                            host_strerror(errno, eb, sizeof eb));
    if (ftruncate(d->fd, (off_t)capacity) != 0)
        return vram__errorf(VRAM_EHOSTMEM, "host backend: device %d: ftruncate to %llu bytes: %s",
                            i, (unsigned long long)capacity, host_strerror(errno, eb, sizeof eb));
    uint64_t granules = capacity / HOST_GRANULARITY;
    d->capacity = capacity;
    d->free_cap = (size_t)(granules / 2 + 1);
    d->free_ext = malloc(d->free_cap * sizeof *d->free_ext);
    d->warm = calloc((size_t)granules, 1);
    if (!d->free_ext || !d->warm)
        return vram__errorf(VRAM_EHOSTMEM, "host backend: out of host memory");
    void *pool =
        mmap(NULL, (size_t)capacity, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (pool == MAP_FAILED)
        return vram__errorf(VRAM_EHOSTMEM, "host backend: device %d: pool view of %llu bytes: %s",
                            i, (unsigned long long)capacity, host_strerror(errno, eb, sizeof eb));
    d->pool = pool;
    d->free_ext[0].off = 0;
    d->free_ext[0].len = capacity;
    d->nfree = 1;
    return 0;
}

static const struct vram_backend_iface host_iface = {
    .device_count = host_device_count,
    .device_info = host_device_info,
    .reserve = host_reserve,
    .map = host_map,
    .unmap = host_unmap,
    .unreserve = host_unreserve,
    .host_alloc = host_host_alloc,
    .host_free = host_host_free,
    .to_host = host_to_host,
    .to_device = host_to_device,
    .checksum = host_checksum,
    .destroy = host_destroy,
    .host_ptr = host_host_ptr,
};

/* The devices' capacity from cfg, in whole granules. Returns 0 or
 * VRAM_ECONFIG. */
static int host_capacity(const vram_backend_config *cfg, uint64_t *capacity)
{
    if (cfg->host_devices < 1 || cfg->host_devices > HOST_MAX_DEVICES)
        return vram__errorf(VRAM_ECONFIG, "VRAM_HOST_DEVICES: %d is not between 1 and %d",
                            cfg->host_devices, HOST_MAX_DEVICES);
    *capacity = cfg->host_memory / HOST_GRANULARITY * HOST_GRANULARITY;
    if (*capacity == 0)
        return vram__errorf(VRAM_ECONFIG,
                            "VRAM_HOST_MEMORY: %llu bytes is less than one 2 MiB granule",
                            (unsigned long long)cfg->host_memory);
    if (*capacity > (uint64_t)INT64_MAX / 2)
        return vram__errorf(VRAM_ECONFIG, "VRAM_HOST_MEMORY: %llu bytes is too large",
                            (unsigned long long)cfg->host_memory);
    if (*capacity != cfg->host_memory)
        vram__log(VRAM_LOG_WARN,
                  "host backend: VRAM_HOST_MEMORY %llu rounded down to %llu (2 MiB granules)",
                  (unsigned long long)cfg->host_memory, (unsigned long long)*capacity);
    return 0;
}

/* VRAM_HOST_SHARED: opens the share into c->shared, whose device count
 * and capacity replace *ndev and *capacity. Returns 0 or a VRAM error. */
static int host_share(host_ctx *c, const char *name, int *ndev, uint64_t *capacity)
{
    int rc = vram__host_shared_open(name, ndev, capacity, &c->shared);
    if (rc) return rc;
    if (*ndev > HOST_MAX_DEVICES || *capacity % HOST_GRANULARITY != 0 ||
        *capacity > (uint64_t)INT64_MAX / 2)
        return vram__errorf(VRAM_EBACKEND,
                            "VRAM_HOST_SHARED '%s': its %d devices of %llu bytes are not whole "
                            "2 MiB granules (a share of another build? remove "
                            "/dev/shm/vram-host-%s)",
                            name, *ndev, (unsigned long long)*capacity, name);
    vram__log(VRAM_LOG_DEBUG, "host backend: shared '%s': %d device%s of %s", name, *ndev,
              *ndev == 1 ? "" : "s", vram__human(*capacity).s);
    return 0;
}

int vram__backend_host_create(const vram_backend_config *cfg, vram_backend **out)
{
    if (!out) return vram__errorf(VRAM_EINVAL, "host backend: out is NULL");
    *out = NULL;
    if (!cfg) return vram__errorf(VRAM_EINVAL, "host backend: cfg is NULL");
    uint64_t capacity = 0;
    int rc = host_capacity(cfg, &capacity);
    if (rc) return rc;

    host_ctx *c = calloc(1, sizeof *c);
    vram_backend *b = calloc(1, sizeof *b);
    if (!c || !b) {
        free(c);
        free(b);
        return vram__errorf(VRAM_EHOSTMEM, "host backend: out of host memory");
    }
    if (pthread_mutex_init(&c->lock, NULL) != 0) {
        free(c);
        free(b);
        return vram__errorf(VRAM_EHOSTMEM, "host backend: pthread_mutex_init failed");
    }
    long pg = sysconf(_SC_PAGESIZE);
    c->page = pg > 0 ? (size_t)pg : 4096;
    c->poison = poison_from_env();
    if (c->poison) vram__log(VRAM_LOG_DEBUG, "host backend: VRAM_HOST_POISON: fresh memory poisoned");
    for (int i = 0; i < HOST_MAX_DEVICES; i++)
        c->devs[i].fd = -1;

    int ndev = cfg->host_devices;
    if (cfg->host_shared[0] && (rc = host_share(c, cfg->host_shared, &ndev, &capacity))) goto fail;
    for (int i = 0; i < ndev; i++) {
        c->ndev = i + 1; /* so that host_ctx_free cleans this one up */
        if ((rc = dev_init(&c->devs[i], i, capacity))) goto fail;
    }

    b->version = VRAM_BACKEND_VERSION;
    b->name = "host";
    b->iface = &host_iface;
    b->ctx = c;
    *out = b;
    return 0;

fail:
    host_ctx_free(c);
    free(b);
    return rc;
}
