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
 * puts physical memory (not necessarily the same) at the same addresses. */
typedef struct vram_buf {
    int device;
    uintptr_t addr;   /* start of the reserved range, the model's device pointer */
    size_t size;      /* bytes asked for */
    size_t reserved;  /* bytes reserved and mapped: size rounded up to granularity */
    int mapped;       /* physical memory is mapped (set by map/unmap) */
    void *impl;       /* the backend's own state for this range */
} vram_buf;

typedef struct vram_backend vram_backend;

/* What a backend reads of the configuration, filled by the core from
 * vram_config (see include/vram.h for each field's meaning). */
typedef struct vram_backend_config {
    vram_backend_kind kind;         /* auto, host or cuda */
    uint64_t host_memory;           /* host: bytes of emulated memory per device */
    int host_devices;               /* host: number of emulated devices */
    uint64_t chunk_bytes;           /* cuda: pipelined copy chunk (0: default) */
    char visible_devices[VRAM_STR_MAX]; /* cuda: "" (all), "none" or a list */
    char cuda_library[VRAM_STR_MAX];    /* cuda: driver library ("": default) */
    int fault_injection;            /* test-only: wrap in the fault decorator */
    char host_shared[VRAM_STR_MAX]; /* host: "" own devices; NAME: shared (host_shared.c) */
} vram_backend_config;

/* The interface of a backend: one static const table per implementation
 * (ggml's backend style), held by pointer beside the backend's context.
 * Callers never call an entry directly: they go through the
 * vram__backend_* wrappers below, which supply the defaults of the
 * optional entries.
 *
 * Every entry is required unless marked optional; every int-returning entry
 * returns 0 or a negative VRAM_E* code after setting a detailed message with
 * vram__errorf() (the driver's own error name and string on CUDA). All
 * entries are thread-safe: the core calls them without its lock, from any
 * thread, on different buffers at the same time.
 *
 * Synchronization with the application's own device work (CUDA): a lease
 * may end while kernels the application queued on its streams (PyTorch's)
 * still read or write the range, as every call into PyTorch returns before
 * its kernels finish. So to_host (every backup copy) and unmap (offload,
 * release, eviction, the idle monitor, unreserve) first wait for all work
 * in the device's context (and in the context of every peer device given
 * access to the range that is in use: a model shared across GPUs is read
 * by kernels on those too); the application need not synchronize before a
 * lease ends or an offload. It must not queue work on a range after its
 * lease ended (an unmapped address is a sticky CUDA_ERROR_ILLEGAL_ADDRESS
 * for the whole process). to_device does not wait: writing into memory the
 * application's kernels still use is the caller's to order.
 *
 * Stream capture (CUDA graphs, torch.cuda.graph): that wait would
 * invalidate a capture in progress in the context, so to_host, unmap and
 * host_alloc first ask the driver, and fail with VRAM_EBUSY ("cannot
 * offload model memory while a CUDA graph is being captured in this
 * thread; offload after capture ends") without waiting, the range still
 * mapped, when it shows one. The driver API shows a capture on a blocking
 * stream of the context (cuStreamIsCapturing on the legacy stream answers
 * CUDA_ERROR_STREAM_CAPTURE_IMPLICIT) and one on the calling thread's
 * per-thread default stream; a capture on a non-blocking stream (PyTorch's
 * side streams) no driver query can see: the wait then fails with the
 * driver's capture error, which has already invalidated that capture, and
 * the entry returns VRAM_EBUSY saying so. The application must not offload
 * while it captures on such a stream (the Python package's force_offload
 * and release ask torch.cuda.is_current_stream_capturing() first). Every
 * entry runs with the calling thread's capture mode relaxed (restored on
 * return), so its allocations, mappings and registrations never
 * invalidate a global-mode capture of another thread. unreserve never fails:
 * during a capture it unmaps without the wait.
 *
 * Sticky errors (CUDA): after an error that leaves the context unusable
 * (illegal address, launch failure, unknown error, ...) the backend is
 * latched: every entry that would use the device fails at once with
 * VRAM_EBACKEND and a message naming the first such error; unmap,
 * unreserve, host_free and destroy still give back what exists. */
struct vram_backend_iface {
    int (*device_count)(vram_backend *b);
    int (*device_info)(vram_backend *b, int dev, vram_dev_info *out);

    /* Reserves an address range of at least bytes on dev, without memory
     * behind it (touching it faults). Fills buf (mapped = 0). */
    int (*reserve)(vram_backend *b, int dev, size_t bytes, vram_buf *buf);
    /* Backs the whole range with physical memory (contents undefined).
     * VRAM_ENOMEM when the device has none left; the range is then as before. */
    int (*map)(vram_backend *b, vram_buf *buf);
    /* Drops the physical memory, keeps the range. */
    int (*unmap)(vram_backend *b, vram_buf *buf);
    /* Frees the range (unmapping first if needed). Never fails. */
    void (*unreserve)(vram_backend *b, vram_buf *buf);

    /* Page-locked host memory for backups and staging (pinned on CUDA).
     * VRAM_EHOSTMEM when none is to be had. The caller frees it with
     * host_free and the same size. */
    int (*host_alloc)(vram_backend *b, size_t bytes, void **out);
    void (*host_free)(vram_backend *b, void *p, size_t bytes);

    /* Copies between a mapped range at offset off and host memory, in large
     * pipelined chunks; returns when the copy is complete. */
    int (*to_host)(vram_backend *b, const vram_buf *buf, size_t off, void *dst, size_t n);
    int (*to_device)(vram_backend *b, const vram_buf *buf, size_t off, const void *src,
                     size_t n);

    /* Optional (NULL: the wrapper downloads and hashes): the raw checksum
     * sum of [off, off+n) of a mapped range, computed on the device. off is
     * a multiple of 8; see vram__checksum_partial. VRAM_ENOTSUP when the
     * device cannot (the caller then hashes on the host). */
    int (*checksum)(vram_backend *b, const vram_buf *buf, size_t off, size_t n,
                    uint64_t *sum);

    /* Frees the backend and its context; every range has been unreserved
     * and every host allocation freed before. */
    void (*destroy)(vram_backend *b);

    /* Optional (NULL: device memory is not host-visible): a CPU pointer to
     * [off, off+n) of a mapped range, or NULL when the range is not mapped
     * or out of bounds. Loaders read files straight into it instead of
     * staging. Valid while the range stays mapped. */
    void *(*host_ptr)(vram_backend *b, const vram_buf *buf, size_t off, size_t n);

    /* Optional (NULL: always usable): 0 while the backend works; else a
     * negative code with why it is unusable in msg (a sticky CUDA error,
     * latched: the process must restart). Sets no thread error. */
    int (*health)(vram_backend *b, char *msg, size_t len);
};

struct vram_backend {
    int version;                           /* VRAM_BACKEND_VERSION */
    const char *name;                      /* "host", "cuda" (a decorator: its inner one's) */
    const struct vram_backend_iface *iface; /* static, never NULL */
    void *ctx;                             /* the implementation's state */
};

/* ---- calling a backend (backend.c): the only way callers reach iface ---- */

int vram__backend_device_count(vram_backend *b);
int vram__backend_device_info(vram_backend *b, int dev, vram_dev_info *out);
int vram__backend_reserve(vram_backend *b, int dev, size_t bytes, vram_buf *buf);
int vram__backend_map(vram_backend *b, vram_buf *buf);
int vram__backend_unmap(vram_backend *b, vram_buf *buf);
void vram__backend_unreserve(vram_backend *b, vram_buf *buf);
int vram__backend_host_alloc(vram_backend *b, size_t bytes, void **out);
void vram__backend_host_free(vram_backend *b, void *p, size_t bytes);
int vram__backend_to_host(vram_backend *b, const vram_buf *buf, size_t off, void *dst, size_t n);
int vram__backend_to_device(vram_backend *b, const vram_buf *buf, size_t off, const void *src,
                            size_t n);
/* The entry when there is one; without it, downloads [off, off+n) through
 * to_host in 16 MiB chunks of host_alloc'd staging and hashes on the host
 * (off must be a multiple of 8). */
int vram__backend_checksum(vram_backend *b, const vram_buf *buf, size_t off, size_t n,
                           uint64_t *sum);
/* The entry when there is one, else NULL (not host-visible). */
void *vram__backend_host_ptr(vram_backend *b, const vram_buf *buf, size_t off, size_t n);
/* The entry when there is one, else 0 with msg "". */
int vram__backend_health(vram_backend *b, char *msg, size_t len);
/* destroy(NULL) does nothing. */
void vram__backend_destroy(vram_backend *b);

/* ---- opening one ---- */

/* Creates the backend cfg asks for (auto: cuda when a driver and a device
 * are found, else host) and logs which; wrapped in the fault decorator when
 * cfg->fault_injection is set. On failure *out is NULL. */
int vram__backend_open(const vram_backend_config *cfg, vram_backend **out);

int vram__backend_host_create(const vram_backend_config *cfg, vram_backend **out);
int vram__backend_cuda_create(const vram_backend_config *cfg, vram_backend **out);

/* cuda.c, for the GPU check: which entry points of the CUDA binding table
 * the driver at path has, one line each into out; returns how many
 * required ones are missing, -1 when it cannot be opened. */
int vram__cuda_check_symbols(const char *path, char *out, size_t len);

/* ---- fault injection for tests (fault.c) ---- */

/* Wraps inner in a decorator whose every entry forwards to inner, and which
 * fails the calls that vram__backend_inject arms. The decorator owns inner
 * from then on (destroying it destroys inner), also on failure: then inner
 * is destroyed and *out is NULL. */
int vram__backend_fault_wrap(vram_backend *inner, vram_backend **out);

/* The nth call from now (1 = the next) of the operation what ("reserve",
 * "map", "unmap", "host_alloc", "to_host", "to_device", "checksum") fails
 * with err (err >= 0 becomes VRAM_EBACKEND) without reaching the inner
 * backend; n = 0 clears it. "map_piece" arms
 * vram__backend_host_fail_piece on the inner backend (a host one).
 * Thread-safe. Returns 0, VRAM_ENOTSUP when b is not a fault decorator, or
 * VRAM_EINVAL for an unknown operation. */
int vram__backend_inject(vram_backend *b, const char *what, int n, int err);

/* How many armed failures of operation what (as above, "map_piece"
 * included) have hit since the decorator was made: a fault loop arms call
 * k and stops once a run ends without its fault firing. 0 when b is not a
 * fault decorator or what is unknown. */
int vram__backend_fault_fired(vram_backend *b, const char *what);

/* Host backend only (host.c): the nth piece mmap'd by maps from now fails
 * with err, so that a map fails midway with memory taken (a fault inside
 * map, which the decorator cannot reach); n = 0 clears. VRAM_ENOTSUP when
 * b is not a host backend. */
int vram__backend_host_fail_piece(vram_backend *b, int n, int err);
/* How many of those armed piece failures have hit; 0 when b is not a host
 * backend. */
int vram__backend_host_piece_fired(vram_backend *b);

#endif /* VRAM_BACKEND_H */
