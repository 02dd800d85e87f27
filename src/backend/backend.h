/* backend.h - the device interface: what the core asks of a GPU (or of its host emulation). */
#ifndef VRAM_BACKEND_H
#define VRAM_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "vram.h"

#define VRAM_BACKEND_VERSION 1

typedef struct vram_dev_info {
    char name[128];   /* "NVIDIA H200", "host-emulated device 0" */
    char uuid[64];    /* "GPU-…" on CUDA; "" when unknown */
    uint64_t total;   /* bytes of device memory */
    uint64_t free;    /* bytes free now, as the device reports (all users) */
    size_t granularity; /* reservations and mappings are multiples of this */
} vram_dev_info;

/* A device range of one model allocation. The core owns the struct; the
 * backend fills it in reserve() and keeps its own state behind impl.
 * addr never changes between reserve() and unreserve(): map() after unmap()
 * puts fresh physical memory at the same addresses. */
typedef struct vram_buf {
    int device;
    uintptr_t addr;   /* start of the reserved range, the model's device pointer */
    size_t size;      /* bytes asked for */
    size_t reserved;  /* bytes reserved and mapped: size rounded up to granularity */
    int mapped;       /* physical memory is mapped (set by map/unmap) */
    void *impl;       /* the backend's own state for this range */
} vram_buf;

typedef struct vram_backend vram_backend;

/* Function table held by value beside its context (ggml's backend style).
 * Every entry is required unless marked optional; every int-returning entry
 * returns 0 or a negative VRAM_E* code after setting a detailed message with
 * vram__errorf() (the driver's own error name and string on CUDA). All
 * entries are thread-safe: the core calls them without its lock, from any
 * thread, on different buffers at the same time. */
struct vram_backend {
    int version;           /* VRAM_BACKEND_VERSION */
    const char *name;      /* "host", "cuda" */
    void *ctx;

    int (*device_count)(vram_backend *b);
    int (*device_info)(vram_backend *b, int dev, vram_dev_info *out);

    /* Reserves an address range of at least bytes on dev, without memory
     * behind it (touching it faults). Fills buf (mapped = 0). */
    int (*reserve)(vram_backend *b, int dev, size_t bytes, vram_buf *buf);
    /* Backs the whole range with fresh physical memory (contents undefined).
     * VRAM_ENOMEM when the device has none left; the range is then as before. */
    int (*map)(vram_backend *b, vram_buf *buf);
    /* Drops the physical memory, keeps the range. */
    int (*unmap)(vram_backend *b, vram_buf *buf);
    /* Frees the range (unmapping first if needed). Never fails. */
    void (*unreserve)(vram_backend *b, vram_buf *buf);

    /* Page-locked host memory for backups and staging (pinned on CUDA).
     * VRAM_EHOSTMEM when none is to be had. */
    int (*host_alloc)(vram_backend *b, size_t bytes, void **out);
    void (*host_free)(vram_backend *b, void *p, size_t bytes);

    /* Copies between a mapped range at offset off and host memory, in large
     * pipelined chunks; returns when the copy is complete. */
    int (*to_host)(vram_backend *b, const vram_buf *buf, size_t off, void *dst, size_t n);
    int (*to_device)(vram_backend *b, const vram_buf *buf, size_t off, const void *src,
                     size_t n);

    /* Optional (NULL: the core downloads and hashes): the raw checksum sum
     * of [off, off+n) of a mapped range, computed on the device. off is a
     * multiple of 8; see vram__checksum_partial. */
    int (*checksum)(vram_backend *b, const vram_buf *buf, size_t off, size_t n,
                    uint64_t *sum);

    /* Frees the backend; every range has been unreserved and every host
     * allocation freed before. */
    void (*destroy)(vram_backend *b);

    /* Optional (NULL: device memory is not host-visible): a CPU pointer to
     * [off, off+n) of a mapped range, or NULL when the range is not mapped
     * or out of bounds. Loaders read files straight into it instead of
     * staging. Valid while the range stays mapped. */
    void *(*host_ptr)(vram_backend *b, const vram_buf *buf, size_t off, size_t n);
};

/* Creates the backend cfg asks for (auto: cuda when a driver and a device
 * are found, else host) and logs which. On failure *out is NULL. */
int vram__backend_open(const vram_config *cfg, vram_backend **out);

int vram__backend_host_create(const vram_config *cfg, vram_backend **out);
int vram__backend_cuda_create(const vram_config *cfg, vram_backend **out);

/* Fault injection for tests (host backend; no-ops on other backends):
 * the nth call from now (1 = the next) of the named operation fails with
 * err. what: "map", "host_alloc", "to_host", "to_device", "reserve".
 * n = 0 clears it. */
void vram__backend_host_inject(vram_backend *b, const char *what, int n, int err);

#endif /* VRAM_BACKEND_H */
