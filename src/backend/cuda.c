/* cuda.c - the CUDA backend: libcuda via dlopen, VMM ranges, pinned memory, stream copies. */
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cuda_checksum_ptx.h"
#include "backend/cuda_driver.h"
#include "base/base.h"
#include "base/dl.h"

/*
 * Model
 *
 * - The driver library is opened with dlopen (cfg->cuda_library, else
 *   $VRAM_CUDA_LIBRARY, else libcuda.so.1) with RTLD_NODELETE: the driver
 *   starts threads in cuInit and must never be unmapped under them, so
 *   closing the handle only drops a reference. Every entry point is bound
 *   by its exported name, versioned ones explicitly (cuMemGetInfo_v2, ...).
 * - Each device's primary context is retained at creation and pushed
 *   (cuCtxPushCurrent_v2) around every entry that calls the driver, then
 *   popped, so any thread may call any entry and the caller's own current
 *   context (PyTorch's, say) is left as it was.
 * - A vram_buf is a cuMemAddressReserve range; map = cuMemCreate (pinned
 *   device memory) + cuMemMap + cuMemSetAccess(read/write) over the whole
 *   range; unmap = cuMemUnmap + cuMemRelease, keeping the range.
 * - Copies take one of CUDA_STREAMS (non-blocking) streams of the device, so
 *   copies of different models overlap, queue every chunk of the copy on it
 *   without waiting, and synchronize that stream once at the end.
 * - The checksum kernel is PTX (cuda_checksum.cu, embedded by scripts/gen-ptx)
 *   loaded per device on first use; a driver that cannot load it makes
 *   checksum() return VRAM_ENOTSUP, and the core hashes on the host.
 * - Locks: each device has one mutex for its stream pool and checksum module;
 *   it is never held across a copy.
 */

#define CUDA_DEFAULT_LIBRARY "libcuda.so.1"
#define CUDA_STREAMS 4                        /* streams per device */
#define CUDA_DEFAULT_CHUNK ((size_t)64 << 20) /* 64 MiB */
#define CUDA_MAX_DEVICES 64

/* ---- the driver's entry points ---- */

typedef struct cuda_api {
    vram_dl dl; /* the library handle and what its last open said */
    vram_cuInit_fn cuInit;
    vram_cuDriverGetVersion_fn cuDriverGetVersion;
    vram_cuGetErrorName_fn cuGetErrorName;
    vram_cuGetErrorString_fn cuGetErrorString;
    vram_cuDeviceGetCount_fn cuDeviceGetCount;
    vram_cuDeviceGet_fn cuDeviceGet;
    vram_cuDeviceGetName_fn cuDeviceGetName;
    vram_cuDeviceGetUuid_fn cuDeviceGetUuid;
    vram_cuDeviceTotalMem_fn cuDeviceTotalMem;
    vram_cuDeviceGetAttribute_fn cuDeviceGetAttribute;
    vram_cuDevicePrimaryCtxRetain_fn cuDevicePrimaryCtxRetain;
    vram_cuDevicePrimaryCtxRelease_fn cuDevicePrimaryCtxRelease;
    vram_cuCtxPushCurrent_fn cuCtxPushCurrent;
    vram_cuCtxPopCurrent_fn cuCtxPopCurrent;
    vram_cuMemGetInfo_fn cuMemGetInfo;
    vram_cuMemGetAllocationGranularity_fn cuMemGetAllocationGranularity;
    vram_cuMemAddressReserve_fn cuMemAddressReserve;
    vram_cuMemAddressFree_fn cuMemAddressFree;
    vram_cuMemCreate_fn cuMemCreate;
    vram_cuMemRelease_fn cuMemRelease;
    vram_cuMemMap_fn cuMemMap;
    vram_cuMemUnmap_fn cuMemUnmap;
    vram_cuMemSetAccess_fn cuMemSetAccess;
    vram_cuMemHostAlloc_fn cuMemHostAlloc;
    vram_cuMemFreeHost_fn cuMemFreeHost;
    vram_cuStreamCreate_fn cuStreamCreate;
    vram_cuStreamDestroy_fn cuStreamDestroy;
    vram_cuStreamSynchronize_fn cuStreamSynchronize;
    vram_cuMemcpyHtoDAsync_fn cuMemcpyHtoDAsync;
    vram_cuMemcpyDtoHAsync_fn cuMemcpyDtoHAsync;
    /* optional: the checksum kernel */
    vram_cuMemAlloc_fn cuMemAlloc;
    vram_cuMemFree_fn cuMemFree;
    vram_cuModuleLoadData_fn cuModuleLoadData;
    vram_cuModuleUnload_fn cuModuleUnload;
    vram_cuModuleGetFunction_fn cuModuleGetFunction;
    vram_cuLaunchKernel_fn cuLaunchKernel;
} cuda_api;

#define SYM(field, name, alt, req)                                                                 \
    {                                                                                              \
        name, alt, offsetof(cuda_api, field), req                                                  \
    }
/* name, versioned where the ABI changed; older name with the same
 * signature or NULL; where the pointer goes; required */
static const vram_dl_sym cuda_syms[] = {
    SYM(cuInit, "cuInit", NULL, 1),
    SYM(cuDriverGetVersion, "cuDriverGetVersion", NULL, 1),
    SYM(cuGetErrorName, "cuGetErrorName", NULL, 0),
    SYM(cuGetErrorString, "cuGetErrorString", NULL, 0),
    SYM(cuDeviceGetCount, "cuDeviceGetCount", NULL, 1),
    SYM(cuDeviceGet, "cuDeviceGet", NULL, 1),
    SYM(cuDeviceGetName, "cuDeviceGetName", NULL, 1),
    SYM(cuDeviceGetUuid, "cuDeviceGetUuid_v2", "cuDeviceGetUuid", 0),
    SYM(cuDeviceTotalMem, "cuDeviceTotalMem_v2", NULL, 1),
    SYM(cuDeviceGetAttribute, "cuDeviceGetAttribute", NULL, 1),
    SYM(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain", NULL, 1),
    SYM(cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease", 1),
    SYM(cuCtxPushCurrent, "cuCtxPushCurrent_v2", NULL, 1),
    SYM(cuCtxPopCurrent, "cuCtxPopCurrent_v2", NULL, 1),
    SYM(cuMemGetInfo, "cuMemGetInfo_v2", NULL, 1),
    SYM(cuMemGetAllocationGranularity, "cuMemGetAllocationGranularity", NULL, 1),
    SYM(cuMemAddressReserve, "cuMemAddressReserve", NULL, 1),
    SYM(cuMemAddressFree, "cuMemAddressFree", NULL, 1),
    SYM(cuMemCreate, "cuMemCreate", NULL, 1),
    SYM(cuMemRelease, "cuMemRelease", NULL, 1),
    SYM(cuMemMap, "cuMemMap", NULL, 1),
    SYM(cuMemUnmap, "cuMemUnmap", NULL, 1),
    SYM(cuMemSetAccess, "cuMemSetAccess", NULL, 1),
    SYM(cuMemHostAlloc, "cuMemHostAlloc", NULL, 1),
    SYM(cuMemFreeHost, "cuMemFreeHost", NULL, 1),
    SYM(cuStreamCreate, "cuStreamCreate", NULL, 1),
    SYM(cuStreamDestroy, "cuStreamDestroy_v2", NULL, 1),
    SYM(cuStreamSynchronize, "cuStreamSynchronize", NULL, 1),
    SYM(cuMemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2", NULL, 1),
    SYM(cuMemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2", NULL, 1),
    SYM(cuMemAlloc, "cuMemAlloc_v2", NULL, 0),
    SYM(cuMemFree, "cuMemFree_v2", NULL, 0),
    SYM(cuModuleLoadData, "cuModuleLoadData", NULL, 0),
    SYM(cuModuleUnload, "cuModuleUnload", NULL, 0),
    SYM(cuModuleGetFunction, "cuModuleGetFunction", NULL, 0),
    SYM(cuLaunchKernel, "cuLaunchKernel", NULL, 0),
};
#undef SYM

#define CUDA_NSYMS (sizeof cuda_syms / sizeof cuda_syms[0])

/* Drops the library reference and clears every pointer. Idempotent: an
 * api that was never loaded, or was freed already, is left as it is. */
static void cuda_api_free(cuda_api *api)
{
    vram__dl_close(&api->dl, cuda_syms, CUDA_NSYMS, api);
}

/* Opens the driver library at path and binds its entry points into api.
 * Idempotent: an api already loaded returns 0 at once. Returns VRAM_ENODEV
 * with the library's name and dlerror's text when it cannot be opened or a
 * required entry point is missing (api is then left empty). */
static int cuda_api_load(cuda_api *api, const char *path)
{
    int rc = vram__dl_open(&api->dl, path, cuda_syms, CUDA_NSYMS, api);
    if (rc == VRAM_DL_ENOLIB)
        return vram__errorf(VRAM_ENODEV,
                            "cuda: cannot load the driver library '%s' (VRAM_CUDA_LIBRARY): %s",
                            path, api->dl.dlerr);
    if (rc == VRAM_DL_ENOSYM)
        return vram__errorf(VRAM_ENODEV,
                            "cuda: the driver library %s (a driver for CUDA 10.2 or newer is "
                            "needed)",
                            api->dl.msg);
    return 0;
}

/* ---- backend state ---- */

typedef struct cuda_slot {
    CUstream stream;      /* created on first use */
    CUdeviceptr partials; /* checksum kernel output, VRAM_CK_MAX_BLOCKS words, on first use */
    int busy;
} cuda_slot;

typedef struct cuda_dev {
    CUdevice dev;
    CUcontext ctx; /* retained primary context, NULL until retained */
    char name[128];
    char uuid[64];
    uint64_t total;
    size_t gran;
    pthread_mutex_t lock; /* slots and the checksum module */
    pthread_cond_t cond;  /* a slot became free */
    int waiters;
    cuda_slot slots[CUDA_STREAMS];
    int ck_state; /* 0 not loaded yet, 1 loaded, -1 unavailable */
    CUmodule ck_mod;
    CUfunction ck_fn;
    char ck_err[VRAM_ERRMSG_MAX];
} cuda_dev;

typedef struct cuda_ctx {
    cuda_api api;
    int ndev;
    cuda_dev *devs;
    size_t chunk;
} cuda_ctx;

/* A buf's impl: the physical allocation behind a mapped range. */
typedef struct cuda_range {
    CUmemGenericAllocationHandle handle; /* valid while buf->mapped */
} cuda_range;

/* ---- errors ---- */

/* The VRAM code for a driver error. */
static int cu_code(CUresult r)
{
    switch (r) {
    case CUDA_ERROR_OUT_OF_MEMORY: return VRAM_ENOMEM;
    case CUDA_ERROR_NO_DEVICE: return VRAM_ENODEV;
    default: return VRAM_EBACKEND;
    }
}

/* Names of the CUresult values vram declares, for drivers (the stub
 * library, very old ones) that cannot name their own errors. */
static const struct {
    CUresult code;
    const char *name;
} cu_names[] = {
#define CU_NAME_(x)                                                                                \
    {                                                                                              \
        x, #x                                                                                      \
    }
    CU_NAME_(CUDA_ERROR_INVALID_VALUE),
    CU_NAME_(CUDA_ERROR_OUT_OF_MEMORY),
    CU_NAME_(CUDA_ERROR_NOT_INITIALIZED),
    CU_NAME_(CUDA_ERROR_DEINITIALIZED),
    CU_NAME_(CUDA_ERROR_STUB_LIBRARY),
    CU_NAME_(CUDA_ERROR_NO_DEVICE),
    CU_NAME_(CUDA_ERROR_INVALID_DEVICE),
    CU_NAME_(CUDA_ERROR_INVALID_IMAGE),
    CU_NAME_(CUDA_ERROR_INVALID_CONTEXT),
    CU_NAME_(CUDA_ERROR_ALREADY_MAPPED),
    CU_NAME_(CUDA_ERROR_NO_BINARY_FOR_GPU),
    CU_NAME_(CUDA_ERROR_NOT_MAPPED),
    CU_NAME_(CUDA_ERROR_INVALID_PTX),
    CU_NAME_(CUDA_ERROR_JIT_COMPILER_NOT_FOUND),
    CU_NAME_(CUDA_ERROR_UNSUPPORTED_PTX_VERSION),
    CU_NAME_(CUDA_ERROR_INVALID_HANDLE),
    CU_NAME_(CUDA_ERROR_NOT_FOUND),
    CU_NAME_(CUDA_ERROR_NOT_READY),
    CU_NAME_(CUDA_ERROR_ILLEGAL_ADDRESS),
    CU_NAME_(CUDA_ERROR_LAUNCH_FAILED),
    CU_NAME_(CUDA_ERROR_NOT_PERMITTED),
    CU_NAME_(CUDA_ERROR_NOT_SUPPORTED),
    CU_NAME_(CUDA_ERROR_SYSTEM_DRIVER_MISMATCH),
    CU_NAME_(CUDA_ERROR_UNKNOWN),
#undef CU_NAME_
};

/* Writes "<what>: CUDA_ERROR_NAME: driver's text" into buf: the driver's
 * own name and text when it gives them, else vram's name for the value (or
 * "CUDA error N") and "no description from the driver". */
static void cu_describe(const cuda_api *api, CUresult r, const char *what, char *buf, size_t len)
{
    const char *name = NULL, *str = NULL;
    if (api->cuGetErrorName && api->cuGetErrorName(r, &name) != CUDA_SUCCESS) name = NULL;
    if (api->cuGetErrorString && api->cuGetErrorString(r, &str) != CUDA_SUCCESS) str = NULL;
    for (size_t i = 0; !name && i < sizeof cu_names / sizeof cu_names[0]; i++)
        if (cu_names[i].code == r) name = cu_names[i].name;
    char num[32];
    if (!name) {
        snprintf(num, sizeof num, "CUDA error %d", (int)r);
        name = num;
    }
    snprintf(buf, len, "%s: %s: %s", what, name, str ? str : "no description from the driver");
}

/* Sets the thread's error message to "<what>: CUDA_ERROR_NAME: driver's
 * text" and returns the VRAM code for r (out of memory -> VRAM_ENOMEM, no
 * device -> VRAM_ENODEV, else VRAM_EBACKEND), or code when code != 0. */
static int cu_fail_code(const cuda_api *api, CUresult r, int code, const char *fmt, ...)
    VRAM_PRINTF(4, 5);
static int cu_fail_code(const cuda_api *api, CUresult r, int code, const char *fmt, ...)
{
    char what[256], msg[VRAM_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    cu_describe(api, r, what, msg, sizeof msg);
    return vram__errorf(code ? code : cu_code(r), "%s", msg);
}
#define cu_fail(api, r, ...) cu_fail_code((api), (r), 0, __VA_ARGS__)

/* ---- contexts ---- */

/* Makes device d's primary context current in this thread (pushed on top
 * of whatever the caller had). Pair with dev_leave on success only. */
static int dev_enter(cuda_ctx *c, int d)
{
    CUresult r = c->api.cuCtxPushCurrent(c->devs[d].ctx);
    if (r != CUDA_SUCCESS) return cu_fail(&c->api, r, "cuCtxPushCurrent_v2(device %d)", d);
    return 0;
}

/* Pops the context dev_enter pushed. */
static void dev_leave(cuda_ctx *c)
{
    CUcontext popped;
    c->api.cuCtxPopCurrent(&popped);
}

/* VRAM_EINVAL naming op unless d is one of the backend's devices. */
static int check_dev(cuda_ctx *c, int d, const char *op)
{
    if (d < 0 || d >= c->ndev)
        return vram__errorf(VRAM_EINVAL, "cuda: %s: no device %d (%d visible)", op, d, c->ndev);
    return 0;
}

/* ---- stream pool ---- */

/* Takes a free stream slot of device d, waiting while all are busy, and
 * creates its stream on first use. The device's context must be current.
 * On success the slot is the caller's until slot_put. */
static int slot_get(cuda_ctx *c, int d, cuda_slot **out)
{
    cuda_dev *dv = &c->devs[d];
    cuda_slot *s = NULL;
    pthread_mutex_lock(&dv->lock);
    for (;;) {
        for (int i = 0; i < CUDA_STREAMS && !s; i++)
            if (!dv->slots[i].busy && dv->slots[i].stream) s = &dv->slots[i];
        for (int i = 0; i < CUDA_STREAMS && !s; i++)
            if (!dv->slots[i].busy) s = &dv->slots[i];
        if (s) break;
        dv->waiters++;
        pthread_cond_wait(&dv->cond, &dv->lock);
        dv->waiters--;
    }
    s->busy = 1;
    pthread_mutex_unlock(&dv->lock);
    if (!s->stream) {
        CUresult r = c->api.cuStreamCreate(&s->stream, CU_STREAM_NON_BLOCKING);
        if (r != CUDA_SUCCESS) {
            s->stream = NULL;
            int rc = cu_fail(&c->api, r, "cuStreamCreate(non-blocking, device %d)", d);
            pthread_mutex_lock(&dv->lock);
            s->busy = 0;
            if (dv->waiters) pthread_cond_signal(&dv->cond);
            pthread_mutex_unlock(&dv->lock);
            return rc;
        }
    }
    *out = s;
    return 0;
}

/* Gives a slot from slot_get back (its stream stays for the next user). */
static void slot_put(cuda_ctx *c, int d, cuda_slot *s)
{
    cuda_dev *dv = &c->devs[d];
    pthread_mutex_lock(&dv->lock);
    s->busy = 0;
    if (dv->waiters) pthread_cond_signal(&dv->cond);
    pthread_mutex_unlock(&dv->lock);
}

/* ---- devices ---- */

/* Devices the driver showed at creation (after CUDA_VISIBLE_DEVICES). */
static int cuda_device_count(vram_backend *b)
{
    return ((cuda_ctx *)b->ctx)->ndev;
}

/* Fills out with the device's fixed facts and its free memory now
 * (cuMemGetInfo_v2 under its context). */
static int cuda_device_info(vram_backend *b, int d, vram_dev_info *out)
{
    cuda_ctx *c = b->ctx;
    if (!out) return vram__errorf(VRAM_EINVAL, "cuda: device_info: out is NULL");
    int rc = check_dev(c, d, "device_info");
    if (rc) return rc;
    cuda_dev *dv = &c->devs[d];
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", dv->name);
    snprintf(out->uuid, sizeof out->uuid, "%s", dv->uuid);
    out->total = dv->total;
    out->granularity = dv->gran;
    if ((rc = dev_enter(c, d))) return rc;
    size_t fr = 0, tot = 0;
    CUresult r = c->api.cuMemGetInfo(&fr, &tot);
    dev_leave(c);
    if (r != CUDA_SUCCESS) return cu_fail(&c->api, r, "cuMemGetInfo_v2(device %d)", d);
    out->free = fr;
    return 0;
}

/* ---- ranges ---- */

/* Reserves bytes rounded up to the device's granularity, aligned to it.
 * buf is filled only on success; impl is the backend's until unreserve. */
static int cuda_reserve(vram_backend *b, int d, size_t bytes, vram_buf *buf)
{
    cuda_ctx *c = b->ctx;
    if (!buf) return vram__errorf(VRAM_EINVAL, "cuda: reserve: buf is NULL");
    int rc = check_dev(c, d, "reserve");
    if (rc) return rc;
    if (bytes == 0) return vram__errorf(VRAM_EINVAL, "cuda: reserve: 0 bytes");
    size_t gran = c->devs[d].gran;
    if (bytes > SIZE_MAX - gran)
        return vram__errorf(VRAM_EINVAL, "cuda: reserve: %zu bytes is too large", bytes);
    size_t reserved = (size_t)vram__round_up(bytes, gran);
    cuda_range *rg = calloc(1, sizeof *rg);
    if (!rg) return vram__errorf(VRAM_EHOSTMEM, "cuda: reserve: out of host memory");
    if ((rc = dev_enter(c, d))) {
        free(rg);
        return rc;
    }
    CUdeviceptr p = 0;
    CUresult r = c->api.cuMemAddressReserve(&p, reserved, gran, 0, 0);
    dev_leave(c);
    if (r != CUDA_SUCCESS) {
        free(rg);
        return cu_fail(&c->api, r, "cuMemAddressReserve(%zu bytes, device %d)", reserved, d);
    }
    buf->device = d;
    buf->addr = (uintptr_t)p;
    buf->size = bytes;
    buf->reserved = reserved;
    buf->mapped = 0;
    buf->impl = rg;
    return 0;
}

/* VRAM_EINVAL unless buf came from cuda_reserve and is still reserved. */
static int check_range(const vram_buf *buf, const char *op)
{
    if (!buf || !buf->impl || !buf->addr)
        return vram__errorf(VRAM_EINVAL, "cuda: %s: not a reserved CUDA range", op);
    return 0;
}

/* Backs the whole range with a fresh cuMemCreate allocation on its device,
 * mapped read/write. On failure everything created here is released and
 * the range is as before (reserved, unmapped): VRAM_ENOMEM when the device
 * is out of memory. */
static int cuda_map(vram_backend *b, vram_buf *buf)
{
    cuda_ctx *c = b->ctx;
    int rc = check_range(buf, "map");
    if (rc) return rc;
    if ((rc = check_dev(c, buf->device, "map"))) return rc;
    if (buf->mapped)
        return vram__errorf(VRAM_EINVAL, "cuda: map: range at %#llx is already mapped",
                            (unsigned long long)buf->addr);
    cuda_range *rg = buf->impl;
    int d = buf->device;
    if ((rc = dev_enter(c, d))) return rc;

    CUmemAllocationProp prop;
    memset(&prop, 0, sizeof prop);
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_NONE;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = c->devs[d].dev;
    CUmemGenericAllocationHandle h = 0;
    CUresult r = c->api.cuMemCreate(&h, buf->reserved, &prop, 0);
    if (r != CUDA_SUCCESS) {
        rc = cu_fail(&c->api, r, "cuMemCreate(%zu bytes, device %d)", buf->reserved, d);
        goto out;
    }
    r = c->api.cuMemMap((CUdeviceptr)buf->addr, buf->reserved, 0, h, 0);
    if (r != CUDA_SUCCESS) {
        rc = cu_fail(&c->api, r, "cuMemMap(%#llx, %zu bytes, device %d)",
                     (unsigned long long)buf->addr, buf->reserved, d);
        c->api.cuMemRelease(h);
        goto out;
    }
    CUmemAccessDesc acc;
    memset(&acc, 0, sizeof acc);
    acc.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    acc.location.id = c->devs[d].dev;
    acc.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    r = c->api.cuMemSetAccess((CUdeviceptr)buf->addr, buf->reserved, &acc, 1);
    if (r != CUDA_SUCCESS) {
        rc = cu_fail(&c->api, r, "cuMemSetAccess(%#llx, %zu bytes, read/write, device %d)",
                     (unsigned long long)buf->addr, buf->reserved, d);
        c->api.cuMemUnmap((CUdeviceptr)buf->addr, buf->reserved);
        c->api.cuMemRelease(h);
        goto out;
    }
    rg->handle = h;
    buf->mapped = 1;
out:
    dev_leave(c);
    return rc;
}

/* Unmaps the range and releases its physical allocation; the addresses
 * stay reserved. When cuMemUnmap fails the range stays mapped and the
 * error is returned; a failed cuMemRelease after a good unmap is only
 * logged (the range is unmapped either way). */
static int cuda_unmap(vram_backend *b, vram_buf *buf)
{
    cuda_ctx *c = b->ctx;
    int rc = check_range(buf, "unmap");
    if (rc) return rc;
    if ((rc = check_dev(c, buf->device, "unmap"))) return rc;
    if (!buf->mapped) return 0;
    cuda_range *rg = buf->impl;
    int d = buf->device;
    if ((rc = dev_enter(c, d))) return rc;
    CUresult r = c->api.cuMemUnmap((CUdeviceptr)buf->addr, buf->reserved);
    if (r != CUDA_SUCCESS) {
        rc = cu_fail(&c->api, r, "cuMemUnmap(%#llx, %zu bytes, device %d)",
                     (unsigned long long)buf->addr, buf->reserved, d);
        dev_leave(c);
        return rc;
    }
    r = c->api.cuMemRelease(rg->handle);
    dev_leave(c);
    if (r != CUDA_SUCCESS) {
        char msg[VRAM_ERRMSG_MAX];
        cu_describe(&c->api, r, "cuMemRelease", msg, sizeof msg);
        vram__log(VRAM_LOG_WARN, "cuda: unmap of %#llx on device %d: %s",
                  (unsigned long long)buf->addr, d, msg);
    }
    rg->handle = 0;
    buf->mapped = 0;
    return 0;
}

/* Unmaps (if mapped) and frees the range and its impl. Never fails:
 * driver errors are logged. buf is left zeroed except for its size. */
static void cuda_unreserve(vram_backend *b, vram_buf *buf)
{
    cuda_ctx *c = b->ctx;
    if (!buf || !buf->impl) return;
    if (buf->mapped && cuda_unmap(b, buf) != 0)
        vram__log(VRAM_LOG_WARN, "cuda: unreserve: %s", vram__last_error());
    if (buf->device >= 0 && buf->device < c->ndev && dev_enter(c, buf->device) == 0) {
        CUresult r = c->api.cuMemAddressFree((CUdeviceptr)buf->addr, buf->reserved);
        dev_leave(c);
        if (r != CUDA_SUCCESS) {
            char msg[VRAM_ERRMSG_MAX];
            cu_describe(&c->api, r, "cuMemAddressFree", msg, sizeof msg);
            vram__log(VRAM_LOG_WARN, "cuda: unreserve of %#llx: %s", (unsigned long long)buf->addr,
                      msg);
        }
    }
    free(buf->impl);
    buf->impl = NULL;
    buf->addr = 0;
    buf->reserved = 0;
    buf->mapped = 0;
}

/* ---- pinned host memory ---- */

/* Page-locked memory usable by every context (CU_MEMHOSTALLOC_PORTABLE).
 * The caller frees it with host_free. VRAM_EHOSTMEM when the driver cannot
 * pin that much. */
static int cuda_host_alloc(vram_backend *b, size_t bytes, void **out)
{
    cuda_ctx *c = b->ctx;
    if (!out) return vram__errorf(VRAM_EINVAL, "cuda: host_alloc: out is NULL");
    *out = NULL;
    if (bytes == 0) return vram__errorf(VRAM_EINVAL, "cuda: host_alloc: 0 bytes");
    int rc = dev_enter(c, 0);
    if (rc) return rc;
    void *p = NULL;
    CUresult r = c->api.cuMemHostAlloc(&p, bytes, CU_MEMHOSTALLOC_PORTABLE);
    dev_leave(c);
    if (r != CUDA_SUCCESS)
        return cu_fail_code(&c->api, r, r == CUDA_ERROR_OUT_OF_MEMORY ? VRAM_EHOSTMEM : 0,
                            "cuMemHostAlloc(%zu bytes, portable)", bytes);
    *out = p;
    return 0;
}

/* Frees host_alloc memory; NULL does nothing. Never fails (errors are logged). */
static void cuda_host_free(vram_backend *b, void *p, size_t bytes)
{
    cuda_ctx *c = b->ctx;
    if (!p) return;
    if (dev_enter(c, 0) != 0) {
        vram__log(VRAM_LOG_WARN, "cuda: host_free of %zu bytes: %s", bytes, vram__last_error());
        return;
    }
    CUresult r = c->api.cuMemFreeHost(p);
    dev_leave(c);
    if (r != CUDA_SUCCESS) {
        char msg[VRAM_ERRMSG_MAX];
        cu_describe(&c->api, r, "cuMemFreeHost", msg, sizeof msg);
        vram__log(VRAM_LOG_WARN, "cuda: host_free of %zu bytes: %s", bytes, msg);
    }
}

/* ---- copies ---- */

/* VRAM_EINVAL unless [off, off+n) lies in a mapped range and host is set. */
static int check_copy(cuda_ctx *c, const char *op, const vram_buf *buf, size_t off, size_t n,
                      const void *host)
{
    int rc = check_range(buf, op);
    if (rc) return rc;
    if ((rc = check_dev(c, buf->device, op))) return rc;
    if (!buf->mapped)
        return vram__errorf(VRAM_EINVAL, "cuda: %s: range at %#llx is not mapped", op,
                            (unsigned long long)buf->addr);
    if (off > buf->size || n > buf->size - off)
        return vram__errorf(VRAM_EINVAL,
                            "cuda: %s: [%zu, +%zu) is outside the %zu bytes of the range at %#llx",
                            op, off, n, buf->size, (unsigned long long)buf->addr);
    if (n > 0 && !host) return vram__errorf(VRAM_EINVAL, "cuda: %s: host pointer is NULL", op);
    return 0;
}

/*
 * One copy between host memory and [off, off+n) of a mapped range: every
 * chunk is queued on one stream of the device's pool before any has to
 * finish, then the stream is synchronized once. Returns when the copy is
 * complete, also after an error (the stream is drained before the host
 * memory is handed back to the caller).
 *
 * Host memory from host_alloc is pinned, so the chunks run as DMA while the
 * next are queued. Pageable memory (vram_model_upload of a user buffer)
 * takes the same path and is correct by the driver's documented rules:
 * cuMemcpyHtoDAsync from pageable memory stages the bytes before it returns,
 * cuMemcpyDtoHAsync to pageable memory returns when the bytes have landed,
 * and the final stream synchronization covers both.
 */
static int cuda_copy(vram_backend *b, const vram_buf *buf, size_t off, void *host, size_t n,
                     int to_device)
{
    cuda_ctx *c = b->ctx;
    const char *op = to_device ? "to_device" : "to_host";
    int rc = check_copy(c, op, buf, off, n, host);
    if (rc || n == 0) return rc;
    int d = buf->device;
    if ((rc = dev_enter(c, d))) return rc;
    cuda_slot *s;
    if ((rc = slot_get(c, d, &s))) {
        dev_leave(c);
        return rc;
    }
    CUdeviceptr dev = (CUdeviceptr)buf->addr + off;
    unsigned char *h = host;
    for (size_t done = 0; done < n;) {
        size_t len = n - done < c->chunk ? n - done : c->chunk;
        CUresult r = to_device ? c->api.cuMemcpyHtoDAsync(dev + done, h + done, len, s->stream)
                               : c->api.cuMemcpyDtoHAsync(h + done, dev + done, len, s->stream);
        if (r != CUDA_SUCCESS) {
            rc = cu_fail(&c->api, r, "%s(%zu bytes at offset %zu of %#llx, device %d)",
                         to_device ? "cuMemcpyHtoDAsync_v2" : "cuMemcpyDtoHAsync_v2", len,
                         off + done, (unsigned long long)buf->addr, d);
            break;
        }
        done += len;
    }
    CUresult r = c->api.cuStreamSynchronize(s->stream);
    if (r != CUDA_SUCCESS && rc == 0)
        rc = cu_fail(&c->api, r, "cuStreamSynchronize after %s of %zu bytes (device %d)", op, n, d);
    slot_put(c, d, s);
    dev_leave(c);
    return rc;
}

/* Device -> host, see cuda_copy. */
static int cuda_to_host(vram_backend *b, const vram_buf *buf, size_t off, void *dst, size_t n)
{
    return cuda_copy(b, buf, off, dst, n, 0);
}

/* Host -> device, see cuda_copy. */
static int cuda_to_device(vram_backend *b, const vram_buf *buf, size_t off, const void *src,
                          size_t n)
{
    return cuda_copy(b, buf, off, (void *)src, n, 1);
}

/* ---- checksum kernel ---- */

/* Loads the checksum module on device d once (the device's context is
 * current). VRAM_ENOTSUP, with the driver's reason, when this driver or
 * device cannot run it; that answer is kept except after an out-of-memory,
 * which is tried again next time. */
static int ck_load(cuda_ctx *c, int d)
{
    cuda_dev *dv = &c->devs[d];
    int rc = 0;
    pthread_mutex_lock(&dv->lock);
    if (dv->ck_state == 1) goto out;
    if (dv->ck_state < 0) {
        rc = vram__errorf(VRAM_ENOTSUP, "%s", dv->ck_err);
        goto out;
    }
    const cuda_api *a = &c->api;
    if (!a->cuModuleLoadData || !a->cuModuleGetFunction || !a->cuModuleUnload ||
        !a->cuLaunchKernel || !a->cuMemAlloc || !a->cuMemFree) {
        snprintf(dv->ck_err, sizeof dv->ck_err,
                 "cuda: checksum kernel unavailable: '%s' lacks the module or launch API", a->dl.path);
        dv->ck_state = -1;
        rc = vram__errorf(VRAM_ENOTSUP, "%s", dv->ck_err);
        goto out;
    }
    CUmodule mod = NULL;
    CUresult r = a->cuModuleLoadData(&mod, cuda_checksum_ptx);
    if (r != CUDA_SUCCESS) {
        char what[128];
        snprintf(what, sizeof what, "cuModuleLoadData(checksum kernel PTX, device %d)", d);
        cu_describe(a, r, what, dv->ck_err, sizeof dv->ck_err);
        if (r != CUDA_ERROR_OUT_OF_MEMORY) dv->ck_state = -1;
        rc = vram__errorf(VRAM_ENOTSUP, "%s", dv->ck_err);
        goto out;
    }
    CUfunction fn = NULL;
    r = a->cuModuleGetFunction(&fn, mod, VRAM_CK_KERNEL_NAME);
    if (r != CUDA_SUCCESS) {
        cu_describe(a, r, "cuModuleGetFunction(" VRAM_CK_KERNEL_NAME ")", dv->ck_err,
                    sizeof dv->ck_err);
        a->cuModuleUnload(mod);
        dv->ck_state = -1;
        rc = vram__errorf(VRAM_ENOTSUP, "%s", dv->ck_err);
        goto out;
    }
    dv->ck_mod = mod;
    dv->ck_fn = fn;
    dv->ck_state = 1;
    vram__log(VRAM_LOG_DEBUG, "cuda: checksum kernel loaded on device %d", d);
out:
    pthread_mutex_unlock(&dv->lock);
    return rc;
}

/* The raw checksum sum of [off, off+n) of a mapped range, computed by the
 * kernel: VRAM_ENOTSUP when the kernel cannot be loaded (the core then
 * hashes on the host); *sum is written on success only. */
static int cuda_checksum(vram_backend *b, const vram_buf *buf, size_t off, size_t n, uint64_t *sum)
{
    cuda_ctx *c = b->ctx;
    int rc = check_copy(c, "checksum", buf, off, n, sum);
    if (rc) return rc;
    if (!sum) return vram__errorf(VRAM_EINVAL, "cuda: checksum: sum is NULL");
    if (off % 8)
        return vram__errorf(VRAM_EINVAL, "cuda: checksum: offset %zu is not a multiple of 8", off);
    if (n == 0) {
        *sum = 0;
        return 0;
    }
    int d = buf->device;
    if ((rc = dev_enter(c, d))) return rc;
    if ((rc = ck_load(c, d))) goto leave;
    cuda_slot *s;
    if ((rc = slot_get(c, d, &s))) goto leave;
    CUresult r;
    if (!s->partials) {
        r = c->api.cuMemAlloc(&s->partials, VRAM_CK_MAX_BLOCKS * sizeof(uint64_t));
        if (r != CUDA_SUCCESS) {
            s->partials = 0;
            rc = cu_fail(&c->api, r, "cuMemAlloc_v2(checksum partials, device %d)", d);
            goto put;
        }
    }
    {
        uint64_t words_total = ((uint64_t)n + 7) / 8;
        uint64_t blocks64 = (words_total + VRAM_CK_THREADS - 1) / VRAM_CK_THREADS;
        unsigned blocks = blocks64 > VRAM_CK_MAX_BLOCKS ? VRAM_CK_MAX_BLOCKS : (unsigned)blocks64;
        CUdeviceptr words = (CUdeviceptr)buf->addr + off;
        unsigned long long nbytes = n, first_word = off / 8;
        CUdeviceptr partials = s->partials;
        void *params[4] = {&words, &nbytes, &first_word, &partials};
        r = c->api.cuLaunchKernel(c->devs[d].ck_fn, blocks, 1, 1, VRAM_CK_THREADS, 1, 1, 0,
                                  s->stream, params, NULL);
        if (r != CUDA_SUCCESS) {
            rc =
                cu_fail(&c->api, r, "cuLaunchKernel(" VRAM_CK_KERNEL_NAME ", %u blocks, device %d)",
                        blocks, d);
        } else {
            uint64_t part[VRAM_CK_MAX_BLOCKS];
            r = c->api.cuMemcpyDtoHAsync(part, partials, blocks * sizeof(uint64_t), s->stream);
            if (r != CUDA_SUCCESS)
                rc = cu_fail(&c->api, r, "cuMemcpyDtoHAsync_v2(checksum partials, device %d)", d);
            CUresult r2 = c->api.cuStreamSynchronize(s->stream);
            if (r2 != CUDA_SUCCESS && rc == 0)
                rc = cu_fail(&c->api, r2,
                             "cuStreamSynchronize after the checksum kernel "
                             "(%zu bytes, device %d)",
                             n, d);
            if (rc == 0) {
                uint64_t total = 0;
                for (unsigned i = 0; i < blocks; i++)
                    total += part[i];
                *sum = total;
            }
        }
    }
put:
    slot_put(c, d, s);
leave:
    dev_leave(c);
    return rc;
}

/* ---- life cycle ---- */

/* Frees everything cuda_create made, in reverse: streams, scratch memory
 * and modules under each context, the retained contexts, the library. */
static void cuda_ctx_free(cuda_ctx *c)
{
    if (!c) return;
    for (int d = 0; d < c->ndev && c->devs; d++) {
        cuda_dev *dv = &c->devs[d];
        if (dv->ctx && c->api.cuCtxPushCurrent(dv->ctx) == CUDA_SUCCESS) {
            for (int i = 0; i < CUDA_STREAMS; i++) {
                cuda_slot *s = &dv->slots[i];
                if (s->stream) {
                    c->api.cuStreamSynchronize(s->stream);
                    c->api.cuStreamDestroy(s->stream);
                }
                if (s->partials && c->api.cuMemFree) c->api.cuMemFree(s->partials);
            }
            if (dv->ck_mod) c->api.cuModuleUnload(dv->ck_mod);
            dev_leave(c);
        }
        if (dv->ctx) c->api.cuDevicePrimaryCtxRelease(dv->dev);
        pthread_mutex_destroy(&dv->lock);
        pthread_cond_destroy(&dv->cond);
    }
    free(c->devs);
    cuda_api_free(&c->api);
    free(c);
}

/* Frees the backend after every range and host block was given back. */
static void cuda_destroy(vram_backend *b)
{
    if (!b) return;
    cuda_ctx_free(b->ctx);
    free(b);
}

/* cfg->visible_devices ("" = every device, "none", or a list) reaches the
 * driver through CUDA_VISIBLE_DEVICES, which it reads once, in its first
 * cuInit. A value already in the environment is left alone (it is where the
 * config took it from, or the user's own). setenv here runs before this
 * backend starts any thread; a program that calls getenv from other threads
 * while creating a manager should set CUDA_VISIBLE_DEVICES itself. */
static int only_indices(const char *list)
{
    for (const char *p = list; *p; p++)
        if (!(*p >= '0' && *p <= '9') && *p != ',') return 0;
    return 1;
}

static void apply_visible_devices(const vram_backend_config *cfg)
{
    if (!cfg || !cfg->visible_devices[0]) return;
    /* NVIDIA_VISIBLE_DEVICES in the environment is the NVIDIA container
     * runtime's variable (the seed's docker-compose): the runtime has already
     * exposed just those GPUs, renumbered from 0, so re-applying an index
     * ("1") here would hide the only device. UUIDs are the same inside and
     * outside, so they are still applied. */
    const char *nv = getenv("NVIDIA_VISIBLE_DEVICES");
    if (!getenv("CUDA_VISIBLE_DEVICES") && nv && strcmp(nv, cfg->visible_devices) == 0 &&
        only_indices(nv)) {
        vram__log(VRAM_LOG_INFO,
                  "cuda: NVIDIA_VISIBLE_DEVICES=%s is left to the container runtime (indices "
                  "are renumbered inside a container); set CUDA_VISIBLE_DEVICES to choose "
                  "devices in this process",
                  nv);
        return;
    }
    const char *env = getenv("CUDA_VISIBLE_DEVICES");
    if (env) {
        if (strcmp(env, cfg->visible_devices) != 0)
            vram__log(VRAM_LOG_WARN,
                      "cuda: CUDA_VISIBLE_DEVICES=%s from the environment wins over the "
                      "configured visible devices '%s'",
                      env, cfg->visible_devices);
        return;
    }
    setenv("CUDA_VISIBLE_DEVICES", cfg->visible_devices, 0);
    vram__log(VRAM_LOG_INFO, "cuda: CUDA_VISIBLE_DEVICES=%s (from the configuration)",
              cfg->visible_devices);
}

/* "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", as nvidia-smi shows it. */
static void format_uuid(const CUuuid *u, char *out, size_t len)
{
    const unsigned char *b = (const unsigned char *)u->bytes;
    snprintf(out, len, "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}

/* Reads device i's facts and retains its primary context. */
static int dev_open(cuda_ctx *c, int i)
{
    const cuda_api *a = &c->api;
    cuda_dev *dv = &c->devs[i];
    CUresult r = a->cuDeviceGet(&dv->dev, i);
    if (r != CUDA_SUCCESS) return cu_fail_code(a, r, VRAM_ENODEV, "cuDeviceGet(%d)", i);
    r = a->cuDeviceGetName(dv->name, (int)sizeof dv->name, dv->dev);
    if (r != CUDA_SUCCESS) snprintf(dv->name, sizeof dv->name, "CUDA device %d", i);
    dv->name[sizeof dv->name - 1] = '\0';
    size_t total = 0;
    r = a->cuDeviceTotalMem(&total, dv->dev);
    if (r != CUDA_SUCCESS)
        return cu_fail_code(a, r, VRAM_ENODEV, "cuDeviceTotalMem_v2(device %d)", i);
    dv->total = total;
    CUuuid u;
    if (a->cuDeviceGetUuid && a->cuDeviceGetUuid(&u, dv->dev) == CUDA_SUCCESS)
        format_uuid(&u, dv->uuid, sizeof dv->uuid);
    int vmm = 0;
    r = a->cuDeviceGetAttribute(&vmm, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED,
                                dv->dev);
    if (r != CUDA_SUCCESS || !vmm)
        return vram__errorf(VRAM_ENODEV,
                            "cuda: device %d (%s) does not support virtual memory management "
                            "(cuMemCreate/cuMemMap), which the CUDA backend needs",
                            i, dv->name);
    CUmemAllocationProp prop;
    memset(&prop, 0, sizeof prop);
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = dv->dev;
    size_t gran = 0;
    r = a->cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM);
    if (r != CUDA_SUCCESS)
        return cu_fail_code(a, r, VRAM_ENODEV, "cuMemGetAllocationGranularity(device %d)", i);
    if (gran == 0) gran = (size_t)2 << 20;
    dv->gran = gran;
    r = a->cuDevicePrimaryCtxRetain(&dv->ctx, dv->dev);
    if (r != CUDA_SUCCESS) {
        dv->ctx = NULL;
        return cu_fail_code(a, r, VRAM_ENODEV, "cuDevicePrimaryCtxRetain(device %d)", i);
    }
    return 0;
}

/* Loads the driver, initializes it and opens every device it shows.
 * VRAM_ENODEV, with the reason (library name and dlerror, the failing
 * driver call with its error name, or "no CUDA device"), when there is no
 * usable driver or device; nothing is left allocated on failure. */
static const struct vram_backend_iface cuda_iface = {
    .device_count = cuda_device_count,
    .device_info = cuda_device_info,
    .reserve = cuda_reserve,
    .map = cuda_map,
    .unmap = cuda_unmap,
    .unreserve = cuda_unreserve,
    .host_alloc = cuda_host_alloc,
    .host_free = cuda_host_free,
    .to_host = cuda_to_host,
    .to_device = cuda_to_device,
    .checksum = cuda_checksum,
    .destroy = cuda_destroy,
    .host_ptr = NULL, /* device memory is not host-visible */
};

int vram__backend_cuda_create(const vram_backend_config *cfg, vram_backend **out)
{
    *out = NULL;
    const char *path = cfg && cfg->cuda_library[0] ? cfg->cuda_library : NULL;
    if (!path) {
        const char *env = getenv("VRAM_CUDA_LIBRARY");
        path = env && env[0] ? env : CUDA_DEFAULT_LIBRARY;
    }
    if (cfg && strcmp(cfg->visible_devices, "none") == 0)
        return vram__errorf(VRAM_ENODEV, "cuda: visible devices are 'none'");

    cuda_ctx *c = calloc(1, sizeof *c);
    vram_backend *b = calloc(1, sizeof *b);
    if (!c || !b) {
        free(c);
        free(b);
        return vram__errorf(VRAM_EHOSTMEM, "cuda: out of host memory");
    }
    int rc = cuda_api_load(&c->api, path);
    if (rc) goto fail;
    const cuda_api *a = &c->api;

    apply_visible_devices(cfg);
    CUresult r = a->cuInit(0);
    if (r != CUDA_SUCCESS) {
        rc = cu_fail_code(a, r, VRAM_ENODEV, "cuInit (driver library '%s')", path);
        goto fail;
    }
    int version = 0, count = 0;
    a->cuDriverGetVersion(&version);
    r = a->cuDeviceGetCount(&count);
    if (r != CUDA_SUCCESS) {
        rc = cu_fail_code(a, r, VRAM_ENODEV, "cuDeviceGetCount");
        goto fail;
    }
    if (count <= 0) {
        const char *vis = getenv("CUDA_VISIBLE_DEVICES");
        rc = vram__errorf(VRAM_ENODEV, "cuda: no CUDA device (driver '%s'%s%s)", path,
                          vis ? ", CUDA_VISIBLE_DEVICES=" : "", vis ? vis : "");
        goto fail;
    }
    if (count > CUDA_MAX_DEVICES) count = CUDA_MAX_DEVICES;
    c->devs = calloc((size_t)count, sizeof *c->devs);
    if (!c->devs) {
        rc = vram__errorf(VRAM_EHOSTMEM, "cuda: out of host memory");
        goto fail;
    }
    for (int i = 0; i < count; i++) {
        pthread_mutex_init(&c->devs[i].lock, NULL);
        pthread_cond_init(&c->devs[i].cond, NULL);
        c->ndev = i + 1; /* cuda_ctx_free cleans up to here */
        if ((rc = dev_open(c, i))) goto fail;
    }
    c->chunk = cfg && cfg->chunk_bytes ? (size_t)cfg->chunk_bytes : CUDA_DEFAULT_CHUNK;

    b->version = VRAM_BACKEND_VERSION;
    b->name = "cuda";
    b->iface = &cuda_iface;
    b->ctx = c;
    for (int i = 0; i < c->ndev; i++)
        vram__log(VRAM_LOG_DEBUG, "cuda: device %d: %s %s, %.1f GiB, granularity %zu KiB", i,
                  c->devs[i].name, c->devs[i].uuid, (double)c->devs[i].total / (1 << 30),
                  c->devs[i].gran >> 10);
    vram__log(VRAM_LOG_DEBUG, "cuda: driver %d.%d from '%s', %d device(s), chunk %zu MiB",
              version / 1000, version % 1000 / 10, path, c->ndev, c->chunk >> 20);
    *out = b;
    return 0;
fail:
    cuda_ctx_free(c);
    free(b);
    return rc;
}
