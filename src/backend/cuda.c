/* cuda.c - the CUDA backend: libcuda via dlopen, VMM ranges, pinned memory, stream copies. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/backend.h"
#include "backend/cuda_checksum_ptx.h"
#include "backend/cuda_driver.h"
#include "base/base.h"
#include "base/dl.h"
#include "backend/cuda_pinned.h"

/*
 * Model
 *
 * - The driver library is opened with dlopen (cfg->cuda_library, else
 *   $VRAM_CUDA_LIBRARY, else libcuda.so.1) with RTLD_NODELETE: the driver
 *   starts threads in cuInit and must never be unmapped under them, so
 *   closing the handle only drops a reference. Every entry point is bound
 *   by its exported name, versioned ones explicitly (cuMemGetInfo_v2, ...).
 * - Each device's primary context is retained on the device's first use
 *   (dev_retain: a GPU nobody uses pays no context; one that cannot give a
 *   context is skipped with the driver's reason) and pushed
 *   (cuCtxPushCurrent_v2) around every entry that calls the driver, then
 *   popped, so any thread may call any entry and the caller's own current
 *   context (PyTorch's, say) is left as it was.
 * - Devices: CUDA_VISIBLE_DEVICES from the configuration is set before
 *   cuInit; when CUDA was initialised in the process before (PyTorch
 *   first) the driver ignores it, and select_devices applies the list by
 *   UUID itself, warning. MIG instances get "MIG-" UUIDs.
 * - Synchronization (see backend.h): cuCtxSynchronize in the device's
 *   context before every device-to-host copy and every unmap, because the
 *   application's kernels on its own streams may still use the memory and
 *   neither cuMemUnmap nor a copy on a non-blocking stream waits for them.
 * - Sticky errors latch the backend (latch): every later entry fails with
 *   the first one's name and text; cleanup still runs.
 * - Host memory: backups come from cuda_pinned.c (huge-page mappings
 *   touched in parallel and registered, pooled, bounded by RAM or the
 *   cgroup limit); cuMemHostAlloc only where registering is not supported.
 *   A backup larger than a piece is registered piece by piece by a helper
 *   thread during its first copy (copy_pinning), overlapping the two.
 * - A forked child is refused (check_pid): CUDA state does not survive fork.
 * - A vram_buf is a cuMemAddressReserve range; map = cuMemCreate (pinned
 *   device memory) + cuMemMap + cuMemSetAccess(read/write for the owning
 *   device and its peers, see set_access) over the whole range; unmap =
 *   cuMemUnmap + cuMemRelease, keeping the range.
 * - Copies take one of CUDA_STREAMS (non-blocking) streams of the device, so
 *   copies of different models overlap, queue every chunk of the copy on it
 *   without waiting, and synchronize that stream once at the end.
 * - The checksum kernel is PTX (cuda_checksum.cu, embedded by scripts/gen-ptx)
 *   loaded per device on first use; a driver that cannot load it makes
 *   checksum() return VRAM_ENOTSUP, and the core hashes on the host.
 * - Locks: each device has one mutex for its stream pool, never held across
 *   a copy, and one for its checksum module (the PTX JIT runs under it, not
 *   under the pool's); open_lock guards retaining contexts, the peer lists
 *   (written once before a device opens) and the latch. A first copy's
 *   pin_job has its own mutex for the helper's progress only; nothing else
 *   is held while either thread waits or calls the driver.
 */

#define CUDA_DEFAULT_LIBRARY "libcuda.so.1"
#define CUDA_STREAMS 4                        /* streams per device */
#define CUDA_DEFAULT_CHUNK ((size_t)64 << 20) /* 64 MiB */
#define CUDA_MAX_DEVICES 64
#define CUDA_MAX_PIECE ((size_t)256 << 20) /* pinning pieces: 4 chunks, at most 256 MiB, */
#define CUDA_MIN_PIECE ((size_t)2 << 20)   /* whole 2 MiB huge pages */

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
    vram_cuDeviceGetUuid_fn cuDeviceGetUuidV1; /* the GPU's own UUID, also in MIG mode */
    vram_cuDeviceTotalMem_fn cuDeviceTotalMem;
    vram_cuDeviceGetAttribute_fn cuDeviceGetAttribute;
    vram_cuDeviceCanAccessPeer_fn cuDeviceCanAccessPeer; /* optional: owner-only access without */
    vram_cuDevicePrimaryCtxRetain_fn cuDevicePrimaryCtxRetain;
    vram_cuDevicePrimaryCtxRelease_fn cuDevicePrimaryCtxRelease;
    vram_cuDevicePrimaryCtxGetState_fn cuDevicePrimaryCtxGetState; /* optional: peers' waits */
    vram_cuCtxPushCurrent_fn cuCtxPushCurrent;
    vram_cuCtxPopCurrent_fn cuCtxPopCurrent;
    vram_cuCtxSynchronize_fn cuCtxSynchronize;
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
    vram_cuMemHostRegister_fn cuMemHostRegister;     /* optional: cuMemHostAlloc without it */
    vram_cuMemHostUnregister_fn cuMemHostUnregister; /* optional, with the above */
    vram_cuStreamCreate_fn cuStreamCreate;
    vram_cuStreamDestroy_fn cuStreamDestroy;
    vram_cuStreamSynchronize_fn cuStreamSynchronize;
    vram_cuStreamIsCapturing_fn cuStreamIsCapturing; /* optional (CUDA 10.0+): no capture check */
    vram_cuThreadExchangeStreamCaptureMode_fn cuThreadExchangeStreamCaptureMode; /* optional */
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
    SYM(cuDeviceGetUuidV1, "cuDeviceGetUuid", NULL, 0),
    SYM(cuDeviceTotalMem, "cuDeviceTotalMem_v2", NULL, 1),
    SYM(cuDeviceGetAttribute, "cuDeviceGetAttribute", NULL, 1),
    SYM(cuDeviceCanAccessPeer, "cuDeviceCanAccessPeer", NULL, 0),
    SYM(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain", NULL, 1),
    SYM(cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease", 1),
    SYM(cuDevicePrimaryCtxGetState, "cuDevicePrimaryCtxGetState", NULL, 0),
    SYM(cuCtxPushCurrent, "cuCtxPushCurrent_v2", NULL, 1),
    SYM(cuCtxPopCurrent, "cuCtxPopCurrent_v2", NULL, 1),
    SYM(cuCtxSynchronize, "cuCtxSynchronize", NULL, 1),
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
    SYM(cuMemHostRegister, "cuMemHostRegister_v2", "cuMemHostRegister", 0),
    SYM(cuMemHostUnregister, "cuMemHostUnregister", NULL, 0),
    SYM(cuStreamCreate, "cuStreamCreate", NULL, 1),
    SYM(cuStreamDestroy, "cuStreamDestroy_v2", NULL, 1),
    SYM(cuStreamSynchronize, "cuStreamSynchronize", NULL, 1),
    SYM(cuStreamIsCapturing, "cuStreamIsCapturing", NULL, 0),
    SYM(cuThreadExchangeStreamCaptureMode, "cuThreadExchangeStreamCaptureMode", NULL, 0),
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

enum { DEV_CLOSED = 0, DEV_OPEN = 1, DEV_UNUSABLE = -1 };

typedef struct cuda_dev {
    CUdevice dev;  /* the driver's ordinal (not always vram's index: see select_devices) */
    CUcontext ctx; /* retained primary context, NULL until the device's first use */
    int state;     /* DEV_*: atomic; set under cuda_ctx.open_lock */
    char unusable[VRAM_ERRMSG_MAX]; /* why, when DEV_UNUSABLE */
    /* the other devices of the backend that can access this one's memory
     * as peers (cuDeviceCanAccessPeer(peer, this)): written once by
     * dev_retain under open_lock before state becomes DEV_OPEN, read
     * after dev_enter without a lock */
    int npeers;
    int peers[CUDA_MAX_DEVICES]; /* vram's indices of those devices */
    int peers_refused;           /* atomic: cuMemSetAccess refused them once; owner only since */
    char name[128];
    char uuid[64];
    uint64_t total;
    size_t gran;
    pthread_mutex_t lock; /* slots */
    pthread_cond_t cond;  /* a slot became free */
    int waiters;
    cuda_slot slots[CUDA_STREAMS];
    pthread_mutex_t ck_lock; /* the checksum module (its JIT must not stall copies) */
    int ck_state;            /* 0 not loaded yet, 1 loaded, -1 unavailable */
    CUmodule ck_mod;
    CUfunction ck_fn;
    char ck_err[VRAM_ERRMSG_MAX];
} cuda_dev;

typedef struct cuda_ctx {
    cuda_api api;
    int ndev;
    cuda_dev *devs;
    size_t chunk;
    /* a new large backup is pinned in pieces of this size (host_alloc) */
    size_t piece;
    pid_t pid;                 /* the process that opened the driver */
    pthread_mutex_t open_lock; /* retaining primary contexts; the latch message */
    int dead;                  /* atomic: a sticky error was seen, see latch() */
    char dead_msg[VRAM_ERRMSG_MAX];
    cuda_pinned pin; /* the pool of pinned backups (cuda_pinned.c) */
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

/* Errors after which the context is unusable: every later call in the
 * process fails the same way, and only a new process recovers. */
static int cu_sticky(CUresult r)
{
    switch (r) {
    case CUDA_ERROR_ECC_UNCORRECTABLE:
    case CUDA_ERROR_ILLEGAL_ADDRESS:
    case CUDA_ERROR_ASSERT:
    case CUDA_ERROR_HARDWARE_STACK_ERROR:
    case CUDA_ERROR_ILLEGAL_INSTRUCTION:
    case CUDA_ERROR_MISALIGNED_ADDRESS:
    case CUDA_ERROR_INVALID_ADDRESS_SPACE:
    case CUDA_ERROR_INVALID_PC:
    case CUDA_ERROR_LAUNCH_FAILED:
    case CUDA_ERROR_UNKNOWN: return 1;
    default: return 0;
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
    CU_NAME_(CUDA_ERROR_DEVICE_UNAVAILABLE),
    CU_NAME_(CUDA_ERROR_ECC_UNCORRECTABLE),
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
    CU_NAME_(CUDA_ERROR_ASSERT),
    CU_NAME_(CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED),
    CU_NAME_(CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED),
    CU_NAME_(CUDA_ERROR_HARDWARE_STACK_ERROR),
    CU_NAME_(CUDA_ERROR_ILLEGAL_INSTRUCTION),
    CU_NAME_(CUDA_ERROR_MISALIGNED_ADDRESS),
    CU_NAME_(CUDA_ERROR_INVALID_ADDRESS_SPACE),
    CU_NAME_(CUDA_ERROR_INVALID_PC),
    CU_NAME_(CUDA_ERROR_LAUNCH_FAILED),
    CU_NAME_(CUDA_ERROR_NOT_PERMITTED),
    CU_NAME_(CUDA_ERROR_NOT_SUPPORTED),
    CU_NAME_(CUDA_ERROR_SYSTEM_DRIVER_MISMATCH),
    CU_NAME_(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED),
    CU_NAME_(CUDA_ERROR_STREAM_CAPTURE_INVALIDATED),
    CU_NAME_(CUDA_ERROR_STREAM_CAPTURE_IMPLICIT),
    CU_NAME_(CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD),
    CU_NAME_(CUDA_ERROR_UNKNOWN),
#undef CU_NAME_
};

/* The driver's name for r, else vram's name for the value, else "CUDA
 * error N" (in num). */
static const char *cu_name(const cuda_api *api, CUresult r, char *num, size_t len)
{
    const char *name = NULL;
    if (api->cuGetErrorName && api->cuGetErrorName(r, &name) != CUDA_SUCCESS) name = NULL;
    for (size_t i = 0; !name && i < sizeof cu_names / sizeof cu_names[0]; i++)
        if (cu_names[i].code == r) name = cu_names[i].name;
    if (!name) {
        snprintf(num, len, "CUDA error %d", (int)r);
        name = num;
    }
    return name;
}

/* Writes "<what>: CUDA_ERROR_NAME: driver's text" into buf: the driver's
 * own name and text when it gives them, else vram's name for the value (or
 * "CUDA error N") and "no description from the driver". */
static void cu_describe(const cuda_api *api, CUresult r, const char *what, char *buf, size_t len)
{
    const char *str = NULL;
    if (api->cuGetErrorString && api->cuGetErrorString(r, &str) != CUDA_SUCCESS) str = NULL;
    char num[32];
    const char *name = cu_name(api, r, num, sizeof num);
    snprintf(buf, len, "%s: %s: %s", what, name, str ? str : "no description from the driver");
}

/* Makes the backend unusable after sticky error r (msg: the call and the
 * driver's name and text): from then every entry that would use the
 * device fails at once with VRAM_EBACKEND and this message; only the
 * releases of cleanup still reach the driver. Logged once. The message
 * says first that the process must restart (it survives being cut short
 * in a model's last_error), then the driver's code, and that what is in
 * device memory can no longer be trusted: a model "still on the GPU" is
 * not safe there. */
static void latch(cuda_ctx *c, CUresult r, const char *msg)
{
    char num[32];
    const char *name = cu_name(&c->api, r, num, sizeof num);
    pthread_mutex_lock(&c->open_lock);
    int first = !__atomic_load_n(&c->dead, __ATOMIC_RELAXED);
    if (first) {
        snprintf(c->dead_msg, sizeof c->dead_msg,
                 "cuda: the CUDA context is unusable and the process must restart: sticky error "
                 "%s (%d) in %.250s; what is in GPU memory in this process cannot be trusted "
                 "and every later CUDA call fails",
                 name, (int)r, msg);
        __atomic_store_n(&c->dead, 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&c->open_lock);
    if (first) vram__log(VRAM_LOG_ERROR, "%s", c->dead_msg);
}

/* VRAM_EBACKEND with the latched message when a sticky error was seen. */
static int check_alive(cuda_ctx *c)
{
    if (!__atomic_load_n(&c->dead, __ATOMIC_ACQUIRE)) return 0;
    return vram__errorf(VRAM_EBACKEND, "%s", c->dead_msg);
}

/* Sets the thread's error message to "<what>: CUDA_ERROR_NAME: driver's
 * text" and returns the VRAM code for r (out of memory -> VRAM_ENOMEM, no
 * device -> VRAM_ENODEV, else VRAM_EBACKEND), or code when code != 0. A
 * sticky error latches the backend unusable (latch). */
static int cu_fail_code(cuda_ctx *c, CUresult r, int code, const char *fmt, ...) VRAM_PRINTF(4, 5);
static int cu_fail_code(cuda_ctx *c, CUresult r, int code, const char *fmt, ...)
{
    char what[256], msg[VRAM_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    cu_describe(&c->api, r, what, msg, sizeof msg);
    if (cu_sticky(r)) {
        latch(c, r, msg);
        return vram__errorf(VRAM_EBACKEND, "%s", c->dead_msg);
    }
    return vram__errorf(code ? code : cu_code(r), "%s", msg);
}
#define cu_fail(c, r, ...) cu_fail_code((c), (r), 0, __VA_ARGS__)

/* ---- contexts ---- */

static int dev_retain(cuda_ctx *c, int d);

/* VRAM_EBACKEND when this process is a fork of the one that opened the
 * driver: the child inherits the parent's CUDA state in name only. */
static int check_pid(cuda_ctx *c)
{
    pid_t now = getpid();
    if (now == c->pid) return 0;
    return vram__errorf(VRAM_EBACKEND,
                        "cuda: this process (pid %d) is a fork of the one that opened the CUDA "
                        "driver (pid %d); CUDA state does not survive fork: create the manager "
                        "in the child, or start it with spawn",
                        (int)now, (int)c->pid);
}

/*
 * Stream capture interaction mode. While another thread captures a CUDA
 * graph in global mode (torch.cuda.graph's default), every thread whose
 * own mode is global (the default) is refused the driver's "potentially
 * unsafe" calls - allocating, mapping, registering memory - and such a
 * call invalidates that capture. None of vram's calls belongs to anyone's
 * graph, so while the calling thread is inside vram (between the first
 * push of a context and its last pop) its mode is relaxed
 * (cuThreadExchangeStreamCaptureMode, as PyTorch's own allocator does
 * around such calls), and the caller's mode is restored on the way out.
 * Relaxed does not permit what conflicts with a capture by nature (a wait
 * on a capturing context: see check_capture). Thread-local, no lock.
 */
static _Thread_local int tls_depth;                /* dev_enter pushes without their pop */
static _Thread_local int tls_mode_saved;           /* the caller's mode is in tls_mode */
static _Thread_local CUstreamCaptureMode tls_mode; /* the caller's mode */

/* Relaxes this thread's capture mode on entering vram's first push. */
static void relax_enter(cuda_ctx *c)
{
    if (tls_depth++ > 0 || !c->api.cuThreadExchangeStreamCaptureMode) return;
    CUstreamCaptureMode m = CU_STREAM_CAPTURE_MODE_RELAXED;
    tls_mode_saved = c->api.cuThreadExchangeStreamCaptureMode(&m) == CUDA_SUCCESS;
    tls_mode = m;
}

/* Gives the caller its capture mode back at vram's last pop. */
static void relax_leave(cuda_ctx *c)
{
    if (--tls_depth > 0 || !tls_mode_saved) return;
    CUstreamCaptureMode m = tls_mode;
    c->api.cuThreadExchangeStreamCaptureMode(&m);
    tls_mode_saved = 0;
}

/* Makes device d's primary context current in this thread (pushed on top
 * of whatever the caller had), retaining it on the device's first use.
 * Fails when the backend is latched dead, in a forked child, or when the
 * device is unusable. Pair with dev_leave on success only. */
static int dev_enter(cuda_ctx *c, int d)
{
    int rc = check_pid(c);
    if (rc || (rc = check_alive(c))) return rc;
    if (__atomic_load_n(&c->devs[d].state, __ATOMIC_ACQUIRE) != DEV_OPEN && (rc = dev_retain(c, d)))
        return rc;
    CUresult r = c->api.cuCtxPushCurrent(c->devs[d].ctx);
    if (r != CUDA_SUCCESS) return cu_fail(c, r, "cuCtxPushCurrent_v2(device %d)", d);
    relax_enter(c);
    return 0;
}

/* dev_enter for releasing what exists: also after a sticky error, never
 * retaining; -1 (no message) when there is no context to release in. */
static int dev_enter_cleanup(cuda_ctx *c, int d)
{
    if (getpid() != c->pid) return -1;
    if (__atomic_load_n(&c->devs[d].state, __ATOMIC_ACQUIRE) != DEV_OPEN) return -1;
    if (c->api.cuCtxPushCurrent(c->devs[d].ctx) != CUDA_SUCCESS) return -1;
    relax_enter(c);
    return 0;
}

/* Pops the context dev_enter pushed (and restores the capture mode at the
 * last pop, see relax_enter). */
static void dev_leave(cuda_ctx *c)
{
    CUcontext popped;
    relax_leave(c);
    c->api.cuCtxPopCurrent(&popped);
}

#define CAPTURE_BUSY                                                                               \
    "cuda: cannot offload model memory while a CUDA graph is being captured in this thread; "      \
    "offload after capture ends"

/* Errors of a wait that met a stream capture (which it has now broken). */
static int cu_capture_error(CUresult r)
{
    return r == CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED ||
           r == CUDA_ERROR_STREAM_CAPTURE_INVALIDATED || r == CUDA_ERROR_STREAM_CAPTURE_IMPLICIT ||
           r == CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD;
}

/*
 * VRAM_EBUSY when the driver shows a stream capture (a CUDA graph being
 * recorded, torch.cuda.graph) in device d's context (current) that a
 * context-wide wait would invalidate. What the driver API can tell,
 * without disturbing a capture: cuStreamIsCapturing on the legacy stream
 * answers CUDA_ERROR_STREAM_CAPTURE_IMPLICIT while any blocking stream of
 * the context captures, and on CU_STREAM_PER_THREAD whether this thread
 * captures on its per-thread default stream. A capture on a non-blocking
 * stream (PyTorch's side streams) is visible to no driver query: it shows
 * only as the wait's own error (ctx_sync). Other errors of the query are
 * ignored, except sticky ones.
 */
static int check_capture(cuda_ctx *c, int d, const char *why)
{
    if (!c->api.cuStreamIsCapturing) return 0;
    static const struct {
        CUstream s;
        const char *what;
    } q[] = {{CU_STREAM_PER_THREAD, "this thread's per-thread default stream is capturing"},
             {CU_STREAM_LEGACY, "a blocking stream of the device's context is capturing (the "
                                "legacy stream says CUDA_ERROR_STREAM_CAPTURE_IMPLICIT)"}};
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) {
        CUstreamCaptureStatus st = CU_STREAM_CAPTURE_STATUS_NONE;
        CUresult r = c->api.cuStreamIsCapturing(q[i].s, &st);
        if (r == CUDA_ERROR_STREAM_CAPTURE_IMPLICIT ||
            (r == CUDA_SUCCESS && st != CU_STREAM_CAPTURE_STATUS_NONE))
            return vram__errorf(VRAM_EBUSY,
                                CAPTURE_BUSY " (device %d: %s; waiting for the device before %s "
                                             "would invalidate the capture)",
                                d, q[i].what, why);
        if (r != CUDA_SUCCESS && cu_sticky(r))
            return cu_fail(c, r, "cuStreamIsCapturing before %s (device %d)", why, d);
    }
    return 0;
}

/* Waits until every operation queued in device d's context (the current
 * one; ctx_sync adds its peers') has finished: the application's kernels on its own streams
 * (PyTorch's) as well as vram's copies. The driver's cuMemUnmap and a copy
 * on vram's own stream wait for nothing, so this comes before every backup
 * copy and every unmap. A failure of earlier work shows here (and a sticky
 * one latches the backend). First, VRAM_EBUSY when a stream capture that
 * the wait would break is visible (check_capture); a wait that meets one
 * anyway (invisible to the driver's queries) is VRAM_EBUSY too, saying the
 * capture was invalidated. */
static int ctx_sync_one(cuda_ctx *c, int d, const char *why)
{
    int rc = check_capture(c, d, why);
    if (rc) return rc;
    CUresult r = c->api.cuCtxSynchronize();
    if (cu_capture_error(r)) {
        char msg[VRAM_ERRMSG_MAX];
        cu_describe(&c->api, r, "cuCtxSynchronize", msg, sizeof msg);
        return vram__errorf(VRAM_EBUSY,
                            CAPTURE_BUSY
                            " (device %d: a stream no driver query shows, such as a "
                            "non-blocking one, is capturing, and the wait before %s has "
                            "invalidated that capture: %s)",
                            d, why, msg);
    }
    if (r != CUDA_SUCCESS) return cu_fail(c, r, "cuCtxSynchronize before %s (device %d)", why, d);
    return 0;
}

/* Peer j may be running the application's kernels: vram has its context
 * open, or its primary context is active (the application's, PyTorch's).
 * A device no one uses has nothing to wait for and gets no context. */
static int peer_in_use(cuda_ctx *c, int j)
{
    int st = __atomic_load_n(&c->devs[j].state, __ATOMIC_ACQUIRE);
    if (st != DEV_CLOSED) return st == DEV_OPEN;
    unsigned flags = 0;
    int active = 0;
    return c->api.cuDevicePrimaryCtxGetState &&
           c->api.cuDevicePrimaryCtxGetState(c->devs[j].dev, &flags, &active) == CUDA_SUCCESS &&
           active;
}

/* ctx_sync_one in device d's context (current), then in the context of
 * every peer that was granted access to d's memory and may be in use: a
 * model shared across GPUs is read by kernels on the peers too, which d's
 * context does not wait for. */
static int ctx_sync(cuda_ctx *c, int d, const char *why)
{
    int rc = ctx_sync_one(c, d, why);
    cuda_dev *dv = &c->devs[d];
    int n = __atomic_load_n(&dv->peers_refused, __ATOMIC_RELAXED) ? 0 : dv->npeers;
    for (int i = 0; rc == 0 && i < n; i++) {
        int j = dv->peers[i];
        if (!peer_in_use(c, j)) continue;
        if ((rc = dev_enter(c, j))) {
            if (rc == VRAM_ENODEV) rc = 0; /* an unusable peer runs nothing */
            continue;
        }
        rc = ctx_sync_one(c, j, why);
        dev_leave(c);
    }
    return rc;
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
            int rc = cu_fail(c, r, "cuStreamCreate(non-blocking, device %d)", d);
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
    out->free = dv->total;
    /* no context before the device's first use (each costs device memory):
     * until then the free figure is the total */
    if (__atomic_load_n(&dv->state, __ATOMIC_ACQUIRE) != DEV_OPEN) return 0;
    if ((rc = dev_enter(c, d))) return rc;
    size_t fr = 0, tot = 0;
    CUresult r = c->api.cuMemGetInfo(&fr, &tot);
    dev_leave(c);
    if (r != CUDA_SUCCESS) return cu_fail(c, r, "cuMemGetInfo_v2(device %d)", d);
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
        return cu_fail_code(c, r, r == CUDA_ERROR_OUT_OF_MEMORY ? VRAM_EBACKEND : 0,
                            "cuMemAddressReserve(%zu bytes, device %d)%s", reserved, d,
                            r == CUDA_ERROR_OUT_OF_MEMORY ? ": out of GPU virtual address space, "
                                                            "not of device memory"
                                                          : "");
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

/* Grants read/write on a freshly mapped range (its context current) to
 * its device and to every peer that can access it (a model shared across
 * GPUs: kernels on another GPU read it over NVLink or PCIe). Access
 * belongs to the mapping and is gone at unmap, so every map calls this.
 * When the driver refuses a peer (invalid device, not supported or not
 * permitted), the owner alone is granted, from then on for this device,
 * with a warning once; other errors fail the map. */
static int set_access(cuda_ctx *c, const vram_buf *buf)
{
    cuda_dev *dv = &c->devs[buf->device];
    CUmemAccessDesc acc[CUDA_MAX_DEVICES + 1];
    int n = __atomic_load_n(&dv->peers_refused, __ATOMIC_RELAXED) ? 0 : dv->npeers;
    memset(acc, 0, sizeof acc);
    for (int i = 0; i <= n; i++) {
        acc[i].location.type = CU_MEM_LOCATION_TYPE_DEVICE;
        acc[i].location.id = i == 0 ? dv->dev : c->devs[dv->peers[i - 1]].dev;
        acc[i].flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    }
    CUresult r = c->api.cuMemSetAccess((CUdeviceptr)buf->addr, buf->reserved, acc, (size_t)n + 1);
    if (n > 0 && (r == CUDA_ERROR_INVALID_DEVICE || r == CUDA_ERROR_NOT_SUPPORTED ||
                  r == CUDA_ERROR_NOT_PERMITTED)) {
        char msg[VRAM_ERRMSG_MAX];
        cu_describe(&c->api, r, "cuMemSetAccess with peers", msg, sizeof msg);
        if (!__atomic_exchange_n(&dv->peers_refused, 1, __ATOMIC_RELAXED))
            vram__log(VRAM_LOG_WARN,
                      "cuda: device %d: %s; granting access to the owning device only from now",
                      buf->device, msg);
        n = 0;
        r = c->api.cuMemSetAccess((CUdeviceptr)buf->addr, buf->reserved, acc, 1);
    }
    if (r != CUDA_SUCCESS)
        return cu_fail(c, r, "cuMemSetAccess(%#llx, %zu bytes, read/write, device %d and %d peers)",
                       (unsigned long long)buf->addr, buf->reserved, buf->device, n);
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
        rc = cu_fail(c, r, "cuMemCreate(%zu bytes, device %d)", buf->reserved, d);
        goto out;
    }
    r = c->api.cuMemMap((CUdeviceptr)buf->addr, buf->reserved, 0, h, 0);
    if (r != CUDA_SUCCESS) {
        rc = cu_fail(c, r, "cuMemMap(%#llx, %zu bytes, device %d)", (unsigned long long)buf->addr,
                     buf->reserved, d);
        c->api.cuMemRelease(h);
        goto out;
    }
    if ((rc = set_access(c, buf))) {
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

/* cuMemUnmap + cuMemRelease of a mapped range (its context current), no
 * waiting. When cuMemUnmap fails the range stays mapped and the error is
 * returned; a failed cuMemRelease after a good unmap is only logged. */
static int unmap_now(cuda_ctx *c, vram_buf *buf)
{
    cuda_range *rg = buf->impl;
    int d = buf->device;
    CUresult r = c->api.cuMemUnmap((CUdeviceptr)buf->addr, buf->reserved);
    if (r != CUDA_SUCCESS)
        return cu_fail(c, r, "cuMemUnmap(%#llx, %zu bytes, device %d)",
                       (unsigned long long)buf->addr, buf->reserved, d);
    r = c->api.cuMemRelease(rg->handle);
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

/* Unmaps the range and releases its physical allocation; the addresses
 * stay reserved. First waits for all work in the device's context
 * (ctx_sync: kernels the application queued on its own streams may still
 * read the memory, and the driver's unmap does not wait for them). When
 * that wait or cuMemUnmap fails the range stays mapped and the error is
 * returned. */
static int cuda_unmap(vram_backend *b, vram_buf *buf)
{
    cuda_ctx *c = b->ctx;
    int rc = check_range(buf, "unmap");
    if (rc) return rc;
    if ((rc = check_dev(c, buf->device, "unmap"))) return rc;
    if (!buf->mapped) return 0;
    int d = buf->device;
    if ((rc = dev_enter(c, d))) return rc;
    rc = ctx_sync(c, d, "unmapping");
    if (rc == 0) rc = unmap_now(c, buf);
    dev_leave(c);
    return rc;
}

/* Unmaps (if mapped) and frees the range and its impl. Never fails:
 * driver errors are logged. After a sticky error (or a failed wait) the
 * memory is unmapped without waiting: nothing can run in that context any
 * more. buf is left zeroed except for its size. */
static void cuda_unreserve(vram_backend *b, vram_buf *buf)
{
    cuda_ctx *c = b->ctx;
    if (!buf || !buf->impl) return;
    int d = buf->device, entered = d >= 0 && d < c->ndev && dev_enter_cleanup(c, d) == 0;
    if (buf->mapped && cuda_unmap(b, buf) != 0) {
        vram__log(VRAM_LOG_WARN, "cuda: unreserve: %s", vram__last_error());
        if (entered && unmap_now(c, buf) != 0)
            vram__log(VRAM_LOG_WARN, "cuda: unreserve: %s", vram__last_error());
    }
    if (entered) {
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

/* Enters a device for host memory (portable: any context will do): one
 * whose context is open already, else the first that can give one (so
 * host memory alone never makes an unused GPU pay a context when another
 * is in use); *d gets it. */
static int dev_enter_any(cuda_ctx *c, int *d)
{
    for (int i = 0; i < c->ndev; i++)
        if (__atomic_load_n(&c->devs[i].state, __ATOMIC_ACQUIRE) == DEV_OPEN) {
            *d = i;
            return dev_enter(c, i);
        }
    int rc = VRAM_ENODEV;
    for (int i = 0; i < c->ndev; i++) {
        if (__atomic_load_n(&c->devs[i].state, __ATOMIC_ACQUIRE) == DEV_UNUSABLE) continue;
        if ((rc = dev_enter(c, i)) == 0) {
            *d = i;
            return 0;
        }
        if (check_alive(c) || check_pid(c)) return rc;
    }
    if (rc == VRAM_ENODEV) return vram__errorf(VRAM_ENODEV, "cuda: no usable device left");
    return rc;
}

/* cuda_pin_ops.pin: cuMemHostRegister_v2(portable). */
static int pin_register(void *user, void *p, size_t n)
{
    cuda_ctx *c = user;
    if (!c->api.cuMemHostRegister || !c->api.cuMemHostUnregister)
        return vram__errorf(VRAM_ENOTSUP, "cuda: the driver has no cuMemHostRegister");
    CUresult r = c->api.cuMemHostRegister(p, n, CU_MEMHOSTREGISTER_PORTABLE);
    if (r != CUDA_SUCCESS)
        return cu_fail_code(c, r, r == CUDA_ERROR_OUT_OF_MEMORY ? VRAM_EHOSTMEM : VRAM_ENOTSUP,
                            "cuMemHostRegister_v2(%zu bytes, portable)", n);
    return 0;
}

/* cuda_pin_ops.unpin: cuMemHostUnregister, failures logged. */
static void pin_unregister(void *user, void *p, size_t n)
{
    cuda_ctx *c = user;
    CUresult r = c->api.cuMemHostUnregister(p);
    if (r != CUDA_SUCCESS) {
        char msg[VRAM_ERRMSG_MAX];
        cu_describe(&c->api, r, "cuMemHostUnregister", msg, sizeof msg);
        vram__log(VRAM_LOG_WARN, "cuda: unpinning %zu bytes: %s", n, msg);
    }
}

/* Page-locked memory usable by every context: a pooled block of
 * cuda_pinned.c (huge pages touched in parallel, cuMemHostRegister; one
 * larger than a piece is only mapped here and pinned piece by piece by its
 * first copy, see copy_pinning), or,
 * where registering is not supported, cuMemHostAlloc(portable). The caller
 * frees it with host_free. VRAM_EHOSTMEM past the bound on pinned memory
 * or when the system has none. */
static int cuda_host_alloc(vram_backend *b, size_t bytes, void **out)
{
    cuda_ctx *c = b->ctx;
    if (!out) return vram__errorf(VRAM_EINVAL, "cuda: host_alloc: out is NULL");
    *out = NULL;
    if (bytes == 0) return vram__errorf(VRAM_EINVAL, "cuda: host_alloc: 0 bytes");
    int d = 0, rc = dev_enter_any(c, &d);
    if (rc) return rc;
    /* registering is a call a capture in global mode forbids */
    if ((rc = check_capture(c, d, "pinning host memory"))) {
        dev_leave(c);
        return rc;
    }
    double secs = 0;
    void *p = NULL;
    /* a backup of several pieces is pinned during its first copy (see
     * copy_pinning); where registering is missing, cuMemHostAlloc below */
    if (bytes > c->piece && c->api.cuMemHostRegister && c->api.cuMemHostUnregister)
        rc = vram__pinned_get_lazy(&c->pin, bytes, c->piece, &p);
    else
        rc = vram__pinned_get(&c->pin, bytes, &p, &secs);
    vram__pin_seconds_add(secs);
    if (rc == 0 && secs > 0)
        vram__log(VRAM_LOG_DEBUG,
                  "cuda: pinned %s in %.3f s (mapping, parallel first touch, "
                  "cuMemHostRegister; apart from any copy)",
                  vram__human(bytes).s, secs);
    if (rc == VRAM_ENOTSUP) {
        CUresult r = c->api.cuMemHostAlloc(&p, bytes, CU_MEMHOSTALLOC_PORTABLE);
        rc = r == CUDA_SUCCESS
                 ? 0
                 : cu_fail_code(c, r, r == CUDA_ERROR_OUT_OF_MEMORY ? VRAM_EHOSTMEM : 0,
                                "cuMemHostAlloc(%zu bytes, portable)", bytes);
    }
    dev_leave(c);
    if (rc) return rc;
    *out = p;
    return 0;
}

/* Frees host_alloc memory (back to the pool, or cuMemFreeHost); NULL does
 * nothing. Never fails (errors are logged). */
static void cuda_host_free(vram_backend *b, void *p, size_t bytes)
{
    cuda_ctx *c = b->ctx;
    if (!p) return;
    int entered = -1;
    for (int i = 0; i < c->ndev && entered < 0; i++)
        if (dev_enter_cleanup(c, i) == 0) entered = i;
    if (entered < 0) {
        vram__log(VRAM_LOG_WARN, "cuda: host_free of %zu bytes: no context to free it in", bytes);
        return;
    }
    if (!vram__pinned_put(&c->pin, p)) {
        CUresult r = c->api.cuMemFreeHost(p);
        if (r != CUDA_SUCCESS) {
            char msg[VRAM_ERRMSG_MAX];
            cu_describe(&c->api, r, "cuMemFreeHost", msg, sizeof msg);
            vram__log(VRAM_LOG_WARN, "cuda: host_free of %zu bytes: %s", bytes, msg);
        }
    }
    dev_leave(c);
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

/* Queues the copy of n bytes between [off, off+n) of buf and h on slot s
 * in chunks, none waited for; the first failure to queue is returned
 * (those queued still run). */
static int queue_chunks(cuda_ctx *c, const vram_buf *buf, size_t off, cuda_slot *s,
                        unsigned char *h, size_t n, int to_device)
{
    CUdeviceptr dev = (CUdeviceptr)buf->addr + off;
    for (size_t done = 0; done < n;) {
        size_t len = n - done < c->chunk ? n - done : c->chunk;
        CUresult r = to_device ? c->api.cuMemcpyHtoDAsync(dev + done, h + done, len, s->stream)
                               : c->api.cuMemcpyDtoHAsync(h + done, dev + done, len, s->stream);
        if (r != CUDA_SUCCESS)
            return cu_fail(c, r, "%s(%zu bytes at offset %zu of %#llx, device %d)",
                           to_device ? "cuMemcpyHtoDAsync_v2" : "cuMemcpyDtoHAsync_v2", len,
                           off + done, (unsigned long long)buf->addr, buf->device);
        done += len;
    }
    return 0;
}

/* Pins the unpinned pieces of sp's block up to sp->last in this thread (a
 * context current). A driver that cannot register (VRAM_ENOTSUP) leaves
 * the rest pageable, which copies handle; other errors are returned. */
static int pin_upto(cuda_ctx *c, const cuda_pin_span *sp)
{
    double total = 0;
    int rc = 0;
    while (rc == 0 && vram__pinned_ready(sp) <= sp->last) {
        double secs = 0;
        rc = vram__pinned_piece(&c->pin, sp, &secs);
        total += secs;
    }
    vram__pin_seconds_add(total);
    return rc == VRAM_ENOTSUP ? 0 : rc;
}

/*
 * The first copy into a lazily pinned backup (host_alloc): pinning it
 * (first touch and cuMemHostRegister, seconds for a large model) overlaps
 * the copy instead of preceding it. A helper thread pins the pieces in
 * order, publishing each; this thread queues the chunks of piece k on the
 * stream as soon as piece k is pinned, so the copy engine drains piece k
 * while piece k+1 is being pinned. Why this and not pinning at load time
 * in the background: nothing is pinned for models that are never
 * offloaded (pinned memory cannot be swapped, and the bound is shared),
 * the core's host accounting stays as it is, and no thread outlives the
 * call. The first offload then costs about max(pinning, copy) plus one
 * piece, instead of their sum.
 *
 * Locks: the job's mutex guards its progress fields only; the helper runs
 * the pool's vram__pinned_piece (pool lock for bookkeeping only) in its
 * own push of the device's context; this thread holds no lock while
 * waiting. The helper is joined before return, so the block is never
 * touched after the copy is over.
 */
typedef struct pin_job {
    cuda_ctx *c;
    CUcontext ctx;
    const cuda_pin_span *sp;
    pthread_mutex_t m;
    pthread_cond_t cv;
    int ready;    /* pieces pinned (under m) */
    int finished; /* the helper is done (under m) */
    int stop;     /* the copy failed: stop pinning (under m) */
    int rc;       /* the helper's error, message in err */
    char err[VRAM_ERRMSG_MAX];
    double secs; /* time spent pinning */
} pin_job;

/* The helper thread: pins pieces until sp->last, or stop. */
static void *pin_main(void *arg)
{
    pin_job *j = arg;
    int rc = 0, pushed = j->c->api.cuCtxPushCurrent(j->ctx) == CUDA_SUCCESS;
    if (pushed)
        relax_enter(j->c); /* a thread of vram's own: relaxed like every caller inside vram */
    else
        rc = vram__errorf(VRAM_EBACKEND, "cuda: pinning thread: cannot push the context");
    for (int more = 1; rc == 0 && more;) {
        double secs = 0;
        rc = vram__pinned_piece(&j->c->pin, j->sp, &secs);
        pthread_mutex_lock(&j->m);
        j->secs += secs;
        j->ready = vram__pinned_ready(j->sp);
        more = !j->stop && j->ready <= j->sp->last;
        pthread_cond_broadcast(&j->cv);
        pthread_mutex_unlock(&j->m);
    }
    if (pushed) dev_leave(j->c);
    pthread_mutex_lock(&j->m);
    j->finished = 1;
    j->rc = rc;
    if (rc) snprintf(j->err, sizeof j->err, "%s", vram__last_error());
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->m);
    return NULL;
}

/* Waits until piece k of the job is pinned (1), or the helper ended
 * without it (0: *hrc its error). */
static int pin_wait(pin_job *j, int k, int *hrc)
{
    pthread_mutex_lock(&j->m);
    while (j->ready <= k && !j->finished)
        pthread_cond_wait(&j->cv, &j->m);
    int ok = j->ready > k;
    *hrc = j->rc;
    pthread_mutex_unlock(&j->m);
    return ok;
}

/* See pin_job: queues the chunks of the copy [off, off+n) of buf -> h (inside
 * sp's block) piece by piece as the helper pins them; chunks never cross
 * a piece. Pieces the driver cannot register (VRAM_ENOTSUP) are copied
 * pageable; another pinning error fails the copy with its message. */
static int copy_pinning(cuda_ctx *c, const vram_buf *buf, size_t off, cuda_slot *s,
                        unsigned char *h, size_t n, const cuda_pin_span *sp)
{
    pin_job j;
    memset(&j, 0, sizeof j);
    j.c = c;
    j.ctx = c->devs[buf->device].ctx;
    j.sp = sp;
    j.ready = vram__pinned_ready(sp);
    pthread_mutex_init(&j.m, NULL);
    pthread_cond_init(&j.cv, NULL);
    pthread_t th;
    int threaded = pthread_create(&th, NULL, pin_main, &j) == 0;
    if (!threaded) pin_main(&j); /* no thread: pin first, then copy */
    int rc = 0, hrc = 0;
    size_t base = (size_t)(h - (unsigned char *)sp->base);
    for (size_t done = 0; done < n && rc == 0;) {
        size_t at = base + done, k = at / sp->piece, room = (k + 1) * sp->piece - at;
        size_t len = n - done < c->chunk ? n - done : c->chunk;
        if (len > room) len = room;
        if (!pin_wait(&j, (int)k, &hrc) && hrc != VRAM_ENOTSUP) {
            rc = vram__errorf(hrc, "%s", j.err);
            break;
        }
        rc = queue_chunks(c, buf, off + done, s, h + done, len, 0);
        done += len;
    }
    pthread_mutex_lock(&j.m);
    j.stop = 1;
    pthread_mutex_unlock(&j.m);
    if (threaded) pthread_join(th, NULL);
    pthread_mutex_destroy(&j.m);
    pthread_cond_destroy(&j.cv);
    vram__pin_seconds_add(j.secs);
    vram__log(VRAM_LOG_DEBUG,
              "cuda: pinned %s of a new backup in %.3f s, in pieces of %s overlapped with its "
              "first copy",
              vram__human((uint64_t)n).s, j.secs, vram__human((uint64_t)sp->piece).s);
    return rc;
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
    /* a backup or download must not read memory the application's kernels
     * still write: wait for the context first (see ctx_sync) */
    if (!to_device && (rc = ctx_sync(c, d, "copying to the host"))) {
        dev_leave(c);
        return rc;
    }
    cuda_pin_span sp;
    int lazy = vram__pinned_span(&c->pin, host, n, &sp) && vram__pinned_ready(&sp) <= sp.last;
    if (lazy && to_device && (rc = pin_upto(c, &sp))) { /* uploads from it are rare: pin first */
        dev_leave(c);
        return rc;
    }
    cuda_slot *s;
    if ((rc = slot_get(c, d, &s))) {
        dev_leave(c);
        return rc;
    }
    if (lazy && !to_device)
        rc = copy_pinning(c, buf, off, s, host, n, &sp);
    else
        rc = queue_chunks(c, buf, off, s, host, n, to_device);
    CUresult r = c->api.cuStreamSynchronize(s->stream);
    if (r != CUDA_SUCCESS && rc == 0)
        rc = cu_fail(c, r, "cuStreamSynchronize after %s of %zu bytes (device %d)", op, n, d);
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
    pthread_mutex_lock(&dv->ck_lock);
    if (dv->ck_state == 1) goto out;
    if (dv->ck_state < 0) {
        rc = vram__errorf(VRAM_ENOTSUP, "%s", dv->ck_err);
        goto out;
    }
    const cuda_api *a = &c->api;
    if (!a->cuModuleLoadData || !a->cuModuleGetFunction || !a->cuModuleUnload ||
        !a->cuLaunchKernel || !a->cuMemAlloc || !a->cuMemFree) {
        snprintf(dv->ck_err, sizeof dv->ck_err,
                 "cuda: checksum kernel unavailable: '%s' lacks the module or launch API",
                 a->dl.path);
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
    pthread_mutex_unlock(&dv->ck_lock);
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
            rc = cu_fail(c, r, "cuMemAlloc_v2(checksum partials, device %d)", d);
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
            rc = cu_fail(c, r, "cuLaunchKernel(" VRAM_CK_KERNEL_NAME ", %u blocks, device %d)",
                         blocks, d);
        } else {
            uint64_t part[VRAM_CK_MAX_BLOCKS];
            r = c->api.cuMemcpyDtoHAsync(part, partials, blocks * sizeof(uint64_t), s->stream);
            if (r != CUDA_SUCCESS)
                rc = cu_fail(c, r, "cuMemcpyDtoHAsync_v2(checksum partials, device %d)", d);
            CUresult r2 = c->api.cuStreamSynchronize(s->stream);
            if (r2 != CUDA_SUCCESS && rc == 0)
                rc = cu_fail(c, r2,
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

/* Frees one device's streams, scratch memory and module, then its context. */
static void dev_free(cuda_ctx *c, cuda_dev *dv)
{
    if (dv->ctx && getpid() == c->pid && c->api.cuCtxPushCurrent(dv->ctx) == CUDA_SUCCESS) {
        relax_enter(c); /* paired with dev_leave's relax_leave */
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
    if (dv->ctx && getpid() == c->pid) c->api.cuDevicePrimaryCtxRelease(dv->dev);
    pthread_mutex_destroy(&dv->lock);
    pthread_mutex_destroy(&dv->ck_lock);
    pthread_cond_destroy(&dv->cond);
}

/* Frees everything cuda_create made, in reverse: the pinned pool (in any
 * open context), each device's resources and context, the library. */
static void cuda_ctx_free(cuda_ctx *c)
{
    if (!c) return;
    int entered = -1;
    for (int d = 0; d < c->ndev && c->devs && entered < 0; d++)
        if (dev_enter_cleanup(c, d) == 0) entered = d;
    if (entered >= 0) {
        vram__pinned_destroy(&c->pin);
        dev_leave(c);
    } else {
        pthread_mutex_destroy(&c->pin.lock); /* nothing was ever pinned without a context */
    }
    for (int d = 0; d < c->ndev && c->devs; d++)
        dev_free(c, &c->devs[d]);
    free(c->devs);
    pthread_mutex_destroy(&c->open_lock);
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

/* Fills device d's peer list: the other devices of the backend that can
 * access its memory (cuDeviceCanAccessPeer(peer, d) = 1), once, on the
 * device's first use (open_lock held). No list without the entry point or
 * when the driver cannot answer: then only the owner gets access. */
static void find_peers(cuda_ctx *c, int d)
{
    cuda_dev *dv = &c->devs[d];
    dv->npeers = 0;
    for (int j = 0; j < c->ndev && c->api.cuDeviceCanAccessPeer; j++) {
        int can = 0;
        if (j == d || c->devs[j].dev == dv->dev) continue;
        if (c->api.cuDeviceCanAccessPeer(&can, c->devs[j].dev, dv->dev) == CUDA_SUCCESS && can)
            dv->peers[dv->npeers++] = j;
    }
    if (dv->npeers)
        vram__log(VRAM_LOG_DEBUG, "cuda: device %d: memory shared read/write with %d peer(s)", d,
                  dv->npeers);
}

/* Retains device d's primary context on its first use (under open_lock).
 * A device that cannot give one (exclusive-process mode with another
 * process on it, a failed GPU) is marked unusable with the driver's reason,
 * said once in the log, and every later use fails with VRAM_ENODEV and
 * that reason; the other devices go on. */
static int dev_retain(cuda_ctx *c, int d)
{
    cuda_dev *dv = &c->devs[d];
    int rc = 0;
    pthread_mutex_lock(&c->open_lock);
    if (dv->state == DEV_CLOSED) {
        CUresult r = c->api.cuDevicePrimaryCtxRetain(&dv->ctx, dv->dev);
        if (r == CUDA_SUCCESS) {
            find_peers(c, d);
            __atomic_store_n(&dv->state, DEV_OPEN, __ATOMIC_RELEASE);
            vram__log(VRAM_LOG_DEBUG, "cuda: device %d: primary context retained", d);
        } else {
            char what[320];
            dv->ctx = NULL;
            snprintf(what, sizeof what,
                     "cuda: device %d (%.100s, %.63s) is unusable and skipped: "
                     "cuDevicePrimaryCtxRetain",
                     d, dv->name, dv->uuid);
            cu_describe(&c->api, r, what, dv->unusable, sizeof dv->unusable);
            __atomic_store_n(&dv->state, DEV_UNUSABLE, __ATOMIC_RELEASE);
            vram__log(VRAM_LOG_WARN, "%s", dv->unusable);
        }
    }
    if (dv->state == DEV_UNUSABLE) rc = vram__errorf(VRAM_ENODEV, "%s", dv->unusable);
    pthread_mutex_unlock(&c->open_lock);
    return rc;
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

/* Returns 1 when it set CUDA_VISIBLE_DEVICES itself (select_devices then
 * checks the driver took it), else 0. */
static int apply_visible_devices(const vram_backend_config *cfg)
{
    if (!cfg || !cfg->visible_devices[0]) return 0;
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
        return 0;
    }
    const char *env = getenv("CUDA_VISIBLE_DEVICES");
    if (env) {
        if (strcmp(env, cfg->visible_devices) != 0)
            vram__log(VRAM_LOG_WARN,
                      "cuda: CUDA_VISIBLE_DEVICES=%s from the environment wins over the "
                      "configured visible devices '%s'",
                      env, cfg->visible_devices);
        return 0;
    }
    setenv("CUDA_VISIBLE_DEVICES", cfg->visible_devices, 0);
    vram__log(VRAM_LOG_INFO, "cuda: CUDA_VISIBLE_DEVICES=%s (from the configuration)",
              cfg->visible_devices);
    return 1;
}

/* "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" as nvidia-smi shows it, or
 * "MIG-..." for a MIG compute instance (prefix given). */
static void format_uuid(const char *prefix, const CUuuid *u, char *out, size_t len)
{
    const unsigned char *b = (const unsigned char *)u->bytes;
    snprintf(out, len, "%s-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             prefix, b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11],
             b[12], b[13], b[14], b[15]);
}

/* The UUID text of driver ordinal ord ("" when the driver has none). In
 * MIG mode cuDeviceGetUuid_v2 gives the instance's UUID and the older
 * cuDeviceGetUuid the whole GPU's: when they differ it is a MIG device. */
static void ordinal_uuid(const cuda_api *a, int ord, char *out, size_t len)
{
    CUdevice dev;
    CUuuid u, u1;
    out[0] = '\0';
    if (a->cuDeviceGet(&dev, ord) != CUDA_SUCCESS || !a->cuDeviceGetUuid ||
        a->cuDeviceGetUuid(&u, dev) != CUDA_SUCCESS)
        return;
    int mig = a->cuDeviceGetUuidV1 && a->cuDeviceGetUuidV1 != a->cuDeviceGetUuid &&
              a->cuDeviceGetUuidV1(&u1, dev) == CUDA_SUCCESS && memcmp(&u, &u1, sizeof u) != 0;
    format_uuid(mig ? "MIG" : "GPU", &u, out, len);
}

/* The driver ordinal a CUDA_VISIBLE_DEVICES entry names among count
 * devices (a UUID or its prefix, or an index), -1 when none. */
static int entry_ordinal(const cuda_api *a, const char *e, int count)
{
    if (strncmp(e, "GPU-", 4) == 0 || strncmp(e, "MIG-", 4) == 0) {
        for (int i = 0; i < count; i++) {
            char u[64];
            ordinal_uuid(a, i, u, sizeof u);
            if (u[0] && strncmp(u, e, strlen(e)) == 0) return i;
        }
        return -1;
    }
    char *end;
    long x = strtol(e, &end, 10);
    return end != e && !*end && x >= 0 && x < count ? (int)x : -1;
}

/*
 * Which driver ordinals are vram's devices: all of them, unless vram set
 * CUDA_VISIBLE_DEVICES itself (set_here) and the driver shows more devices
 * than the list names. Then CUDA was initialised in this process before
 * (PyTorch first), the driver read the variable then and ignores it now,
 * and the list is applied here: UUIDs by UUID, indices as the driver's
 * ordinals, the list ending at the first entry that matches nothing, as
 * the driver's does. Fills ords, returns how many (count at most).
 */
static int select_devices(const cuda_api *a, const char *list, int set_here, int count, int *ords)
{
    int n = 0, entries = 0;
    for (const char *p = list; set_here && *p; p++)
        entries += *p == ',' || p == list;
    if (!set_here || count <= entries) {
        for (int i = 0; i < count; i++)
            ords[i] = i;
        return count;
    }
    char buf[VRAM_STR_MAX], *save = NULL;
    snprintf(buf, sizeof buf, "%s", list);
    for (char *e = strtok_r(buf, ",", &save); e && n < count; e = strtok_r(NULL, ",", &save)) {
        while (*e == ' ')
            e++;
        int o = entry_ordinal(a, e, count);
        if (o < 0) {
            vram__log(VRAM_LOG_WARN,
                      "cuda: visible device '%s' matches no device; the list "
                      "ends there",
                      e);
            break;
        }
        int dup = 0;
        for (int k = 0; k < n; k++)
            dup |= ords[k] == o;
        if (!dup) ords[n++] = o;
    }
    vram__log(VRAM_LOG_WARN,
              "cuda: CUDA was initialised in this process before vram (PyTorch first?), so the "
              "driver ignores CUDA_VISIBLE_DEVICES=%s set now and shows %d devices; vram selects "
              "%d of them by UUID or index itself. Other CUDA users in this process still see "
              "every device",
              list, count, n);
    return n;
}

/* Reads the facts of vram's device i, the driver's ordinal ord; its
 * context is retained on first use (dev_retain). */
static int dev_probe(cuda_ctx *c, int i, int ord)
{
    const cuda_api *a = &c->api;
    cuda_dev *dv = &c->devs[i];
    CUresult r = a->cuDeviceGet(&dv->dev, ord);
    if (r != CUDA_SUCCESS) return cu_fail_code(c, r, VRAM_ENODEV, "cuDeviceGet(%d)", ord);
    r = a->cuDeviceGetName(dv->name, (int)sizeof dv->name, dv->dev);
    if (r != CUDA_SUCCESS) snprintf(dv->name, sizeof dv->name, "CUDA device %d", i);
    dv->name[sizeof dv->name - 1] = '\0';
    size_t total = 0;
    r = a->cuDeviceTotalMem(&total, dv->dev);
    if (r != CUDA_SUCCESS)
        return cu_fail_code(c, r, VRAM_ENODEV, "cuDeviceTotalMem_v2(device %d)", i);
    dv->total = total;
    ordinal_uuid(a, ord, dv->uuid, sizeof dv->uuid);
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
        return cu_fail_code(c, r, VRAM_ENODEV, "cuMemGetAllocationGranularity(device %d)", i);
    if (gran == 0) gran = (size_t)2 << 20;
    dv->gran = gran;
    return 0;
}

/* VRAM_EBACKEND with the latched message after a sticky error, else 0. */
static int cuda_health(vram_backend *b, char *msg, size_t len)
{
    cuda_ctx *c = b->ctx;
    if (!__atomic_load_n(&c->dead, __ATOMIC_ACQUIRE)) return 0;
    snprintf(msg, len, "%s", c->dead_msg);
    return VRAM_EBACKEND;
}

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
    .health = cuda_health,
};

/* Allocates the device table for the ordinals ords[0..n) and probes each
 * (c->ndev counts those initialised, for cuda_ctx_free). */
static int open_devices(cuda_ctx *c, const int *ords, int n)
{
    c->devs = calloc((size_t)n, sizeof *c->devs);
    if (!c->devs) return vram__errorf(VRAM_EHOSTMEM, "cuda: out of host memory");
    for (int i = 0; i < n; i++) {
        pthread_mutex_init(&c->devs[i].lock, NULL);
        pthread_mutex_init(&c->devs[i].ck_lock, NULL);
        pthread_cond_init(&c->devs[i].cond, NULL);
        c->ndev = i + 1;
        int rc = dev_probe(c, i, ords[i]);
        if (rc) return rc;
    }
    return 0;
}

/* Initialises the driver and opens the devices cfg selects. */
static int cuda_start(cuda_ctx *c, const vram_backend_config *cfg, const char *path)
{
    const cuda_api *a = &c->api;
    int set_here = apply_visible_devices(cfg);
    CUresult r = a->cuInit(0);
    if (r != CUDA_SUCCESS)
        return cu_fail_code(c, r, VRAM_ENODEV, "cuInit (driver library '%s')", path);
    int version = 0, count = 0;
    a->cuDriverGetVersion(&version);
    r = a->cuDeviceGetCount(&count);
    if (r != CUDA_SUCCESS) return cu_fail_code(c, r, VRAM_ENODEV, "cuDeviceGetCount");
    if (count > CUDA_MAX_DEVICES) count = CUDA_MAX_DEVICES;
    int ords[CUDA_MAX_DEVICES];
    int n =
        count > 0 ? select_devices(a, cfg ? cfg->visible_devices : "", set_here, count, ords) : 0;
    if (n <= 0) {
        const char *vis = getenv("CUDA_VISIBLE_DEVICES");
        return vram__errorf(VRAM_ENODEV, "cuda: no CUDA device (driver '%s'%s%s)", path,
                            vis ? ", CUDA_VISIBLE_DEVICES=" : "", vis ? vis : "");
    }
    int rc = open_devices(c, ords, n);
    if (rc) return rc;
    for (int i = 0; i < c->ndev; i++)
        vram__log(VRAM_LOG_DEBUG, "cuda: device %d: %s %s, %.1f GiB, granularity %zu KiB", i,
                  c->devs[i].name, c->devs[i].uuid, (double)c->devs[i].total / (1 << 30),
                  c->devs[i].gran >> 10);
    vram__log(VRAM_LOG_DEBUG, "cuda: driver %d.%d from '%s', %d device(s), chunk %zu MiB",
              version / 1000, version % 1000 / 10, path, c->ndev, c->chunk >> 20);
    return 0;
}

/* Loads the driver, initializes it and reads the facts of every device it
 * shows (or cfg selects), retaining no context yet. VRAM_ENODEV, with the
 * reason (library name and dlerror, the failing driver call with its error
 * name, or "no CUDA device"), when there is no usable driver or device;
 * nothing is left allocated on failure. */
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
    c->pid = getpid();
    pthread_mutex_init(&c->open_lock, NULL);
    const cuda_pin_ops ops = {pin_register, pin_unregister, c};
    vram__pinned_init(&c->pin, &ops, 0);
    c->chunk = cfg && cfg->chunk_bytes ? (size_t)cfg->chunk_bytes : CUDA_DEFAULT_CHUNK;
    c->piece = c->chunk >= CUDA_MAX_PIECE / 4 ? CUDA_MAX_PIECE : 4 * c->chunk;
    c->piece =
        c->piece < CUDA_MIN_PIECE ? CUDA_MIN_PIECE : c->piece / CUDA_MIN_PIECE * CUDA_MIN_PIECE;
    int rc = cuda_api_load(&c->api, path);
    if (rc || (rc = cuda_start(c, cfg, path))) goto fail;
    b->version = VRAM_BACKEND_VERSION;
    b->name = "cuda";
    b->iface = &cuda_iface;
    b->ctx = c;
    *out = b;
    return 0;
fail:
    cuda_ctx_free(c);
    free(b);
    return rc;
}

/* For the GPU check: opens the driver at path on its own and says, one line
 * per entry point of the binding table, which name bound ("bound NAME",
 * "bound ALT (older name)", "MISSING NAME (required)" or "absent NAME
 * (optional)"), into out (NUL-terminated, cut at len). Returns the number
 * of required entry points missing, or -1 when the library cannot be
 * opened. */
int vram__cuda_check_symbols(const char *path, char *out, size_t len)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (!h) {
        snprintf(out, len, "cannot load %s: %s\n", path, dlerror());
        return -1;
    }
    size_t used = 0;
    int missing = 0;
    out[0] = '\0';
    for (size_t i = 0; i < CUDA_NSYMS; i++) {
        const vram_dl_sym *s = &cuda_syms[i];
        const char *how = "bound", *name = s->name, *note = "";
        if (!dlsym(h, s->name)) {
            if (s->alt && dlsym(h, s->alt)) {
                name = s->alt;
                note = " (older name)";
            } else {
                how = s->required ? "MISSING" : "absent";
                note = s->required ? " (required)" : " (optional)";
                missing += s->required;
            }
        }
        int k = snprintf(out + used, len - used, "%s %s%s\n", how, name, note);
        if (k < 0 || (size_t)k >= len - used) break;
        used += (size_t)k;
    }
    dlclose(h);
    return missing;
}
