/* libcuda_double.c - a test double of the CUDA driver library, on host memory. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "backend/cuda_driver.h"
#include "cuda_double.h"

/*
 * Model
 *
 * - Device addresses are host addresses. cuMemAddressReserve is an
 *   anonymous PROT_NONE mapping aligned to the granularity; cuMemCreate is a
 *   memfd of the allocation's size (its pages appear only when touched);
 *   cuMemMap maps the memfd MAP_FIXED over the reserved addresses, still
 *   PROT_NONE; cuMemSetAccess makes it readable and writable; cuMemUnmap
 *   puts PROT_NONE anonymous memory back. So the addresses stay stable and
 *   any touch of an unmapped or access-less range faults, as on a GPU.
 * - Streams are worker threads that run queued copies and kernels in order.
 *   cuMemcpyHtoDAsync from pinned memory (this double's cuMemHostAlloc)
 *   reads the source when it runs, later; from pageable memory it copies the
 *   source before returning (the driver's staging); cuMemcpyDtoHAsync to
 *   pageable memory returns when the bytes have landed. With the "lazy" flag
 *   nothing runs before the stream is synchronized, which makes a missing
 *   synchronization visible as wrong bytes.
 * - The checksum kernel of libvram (VRAM_CK_KERNEL_NAME) is recognised in the
 *   PTX given to cuModuleLoadData (its entry and its four .u64 parameters)
 *   and computed on the host by the stream, block by block as the kernel
 *   partitions the words, so that the launch path is exercised. run_kernel
 *   is written here from the documented definition (the contract in
 *   cuda_driver.h, vram_checksum in include/vram.h: splitmix64's finaliser
 *   over each little-endian word plus its index times the golden ratio),
 *   with its own
 *   constants, not by calling or copying src/base/checksum.c: a kernel or
 *   host code that drifts from the definition disagrees with it, and
 *   test_checksum_kernel_matches_host fails.
 * - The application's own work (vram_double_user_work: PyTorch kernels on
 *   its streams) stays pending until cuCtxSynchronize; unmapping it is a
 *   violation that gives the context a sticky CUDA_ERROR_ILLEGAL_ADDRESS,
 *   copying it one too (a torn copy). Sticky errors can be injected; a
 *   sticky context refuses every call but push/pop, device queries and
 *   cuInit. A device can be made unusable (its context cannot be retained).
 * - New device memory is poison (0xdb0adb0a... words), never zeros.
 * - Events record the time their stream reaches them (timing only).
 * - Misuse (no current context, unaligned sizes, unmapping what is not
 *   mapped, freeing a range still mapped, a stream of another context, a
 *   copy into memory not mapped, releasing a context with resources alive)
 *   returns the driver's error and counts a violation, printed to stderr.
 * - Locks: g_mem (rwlock) guards reservations, allocations, mappings and
 *   device usage; stream work holds it for reading while it touches device
 *   memory, so an unmap waits for copies in flight. g_lock guards the rest.
 *   Order: g_mem before g_lock.
 */

#define MAXDEV 16
#define CTX_MAGIC 0x63747864u
#define STREAM_MAGIC 0x73747264u
#define MOD_MAGIC 0x6d6f6464u
#define FUNC_MAGIC 0x66756e64u
#define DBL_EXPORT __attribute__((visibility("default")))

/* ---- state ---- */

struct CUctx_st {
    unsigned magic;
    int phys;          /* physical device index */
    long retain;       /* primary context references */
    CUresult sticky;   /* a sticky error: every later call in the context fails with it */
    CUresult unusable; /* cuDevicePrimaryCtxRetain fails with it (exclusive mode, failed GPU) */
    int app_active;    /* the application (PyTorch) uses this primary context too */
};

typedef struct dalloc {
    unsigned long long id; /* the CUmemGenericAllocationHandle */
    int fd;
    size_t size;
    int phys;
    int released;
    int mapcount;
    struct dalloc *next;
} dalloc;

typedef struct dresv {
    uintptr_t base;
    size_t size;
    struct dresv *next;
} dresv;

typedef struct dmap {
    uintptr_t base;
    size_t size;
    dalloc *a;
    int rw;          /* cuMemSetAccess gave read/write to some device */
    unsigned access; /* which physical devices have read/write: bit i */
    struct dmap *next;
} dmap;

typedef struct dblock { /* cuMemHostAlloc, cuMemHostRegister and cuMemAlloc blocks */
    uintptr_t p;
    size_t size;
    int phys;
    int registered; /* cuMemHostRegister'd (the caller owns the memory) */
    int copied;     /* a device-to-host copy into it was queued */
    CUcontext ctx;
    struct dblock *next;
} dblock;

/* Work the application queued on its own streams (a PyTorch kernel reading
 * or writing device memory): pending until cuCtxSynchronize in its context
 * or vram_double_user_finish. */
typedef struct duser {
    int phys;
    uintptr_t base;
    size_t n;
    struct duser *next;
} duser;

enum { OP_H2D, OP_D2H, OP_KERNEL, OP_EVENT };

#define EVENT_MAGIC 0x65766e64u

struct CUevent_st {
    unsigned magic;
    CUstream stream; /* where it was last recorded (NULL: the legacy stream) */
    double t;        /* seconds when it ran */
    int done;
};

typedef struct dop {
    int kind;
    uintptr_t dst, src;
    size_t n;
    void *staging; /* freed after the op (pageable HtoD) */
    /* kernel */
    unsigned long long words, nbytes, first_word, partials;
    unsigned grid;
    CUevent ev; /* OP_EVENT */
    struct dop *next;
} dop;

struct CUstream_st {
    unsigned magic;
    CUcontext ctx;
    pthread_t thr;
    pthread_mutex_t m;
    pthread_cond_t cv;   /* work queued, flush asked or stop */
    pthread_cond_t done; /* queue drained */
    dop *head, *tail;
    long pending;
    int running;
    int flush;
    int stop;
    CUresult sticky;
    struct CUstream_st *next;
};

struct CUfunc_st {
    unsigned magic;
    CUmodule mod;
};

struct CUmod_st {
    unsigned magic;
    CUcontext ctx;
    int has_ck;
    struct CUfunc_st fn;
    struct CUmod_st *next;
};

typedef struct fail_spec {
    char fn[64];
    long nth;  /* fail the nth call from when it was set */
    int every; /* and every one after */
    long seen;
    CUresult code;
} fail_spec;

static pthread_rwlock_t g_mem = PTHREAD_RWLOCK_INITIALIZER;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static pthread_cond_t g_copied_cv = PTHREAD_COND_INITIALIZER; /* a copy into host memory (g_lock) */

static struct {
    /* configuration (g_lock) */
    int nphys;
    unsigned long long memory;
    size_t gran;
    int vmm, lazy, quiet, poison;
    int jit_ms;   /* cuModuleLoadData takes this long (a PTX JIT) */
    int no_peer;  /* cuDeviceCanAccessPeer says no for every pair */
    int pin_gate; /* cuMemHostRegister right after a registered range waits for a copy into it */
    uintptr_t last_reg_end; /* where the latest cuMemHostRegister range ended (g_lock) */
    int capture[MAXDEV];    /* a stream of that context is capturing: 1 blocking, 3 non-blocking */
    int mig_mask;           /* physical devices in MIG mode: bit i */
    int isa_major, isa_minor;
    int inited;      /* cuInit succeeded */
    int vis[MAXDEV]; /* ordinal -> physical device */
    int nvis;
    struct CUctx_st ctx[MAXDEV];
    fail_spec fails[16];
    int nfails;
    struct {
        const char *name;
        long n;
    } calls[96];
    int ncalls;
    dblock *hosts; /* g_lock */
    CUstream streams;
    CUmodule modules;
    unsigned long long next_id;
    /* memory (g_mem) */
    dresv *resv;
    dalloc *allocs;
    dmap *maps;
    dblock *devblocks;
    duser *user; /* the application's pending work */
    unsigned long long used[MAXDEV];
} g;

static vram_double_stats g_stats; /* counters updated with atomics */

static _Thread_local CUcontext tls_ctx[16];
static _Thread_local int tls_depth;
static _Thread_local int tls_mode;    /* cuThreadExchangeStreamCaptureMode: 0 global (default) */
static _Thread_local int tls_capture; /* 1 + the physical device this thread captures on its
                                         per-thread default stream, 0 when none */

#define STAT_ADD(field, v) __atomic_add_fetch(&g_stats.field, (v), __ATOMIC_RELAXED)

/* Counts one misuse of the API by the caller and says what it was on stderr. */
static void violation(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void violation(const char *fmt, ...)
{
    STAT_ADD(violations, 1);
    if (__atomic_load_n(&g.quiet, __ATOMIC_RELAXED)) return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "libcuda_double: violation: %s\n", line);
}

/* ---- configuration ---- */

static int parse_size(const char *s, unsigned long long *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v < 0) return -1;
    double mul = 1;
    switch (*end) {
    case 'k':
    case 'K':
        mul = 1024.0;
        end++;
        break;
    case 'm':
    case 'M':
        mul = 1024.0 * 1024;
        end++;
        break;
    case 'g':
    case 'G':
        mul = 1024.0 * 1024 * 1024;
        end++;
        break;
    case 't':
    case 'T':
        mul = 1024.0 * 1024 * 1024 * 1024;
        end++;
        break;
    default: break;
    }
    if (*end == 'i' || *end == 'B') end++;
    if (*end == 'B') end++;
    if (*end) return -1;
    *out = (unsigned long long)(v * mul);
    return 0;
}

static const struct {
    const char *name;
    CUresult code;
    const char *text;
} g_errors[] = {
    {"CUDA_SUCCESS", CUDA_SUCCESS, "no error"},
    {"CUDA_ERROR_INVALID_VALUE", CUDA_ERROR_INVALID_VALUE, "invalid argument"},
    {"CUDA_ERROR_OUT_OF_MEMORY", CUDA_ERROR_OUT_OF_MEMORY, "out of memory"},
    {"CUDA_ERROR_NOT_INITIALIZED", CUDA_ERROR_NOT_INITIALIZED, "initialization error"},
    {"CUDA_ERROR_DEINITIALIZED", CUDA_ERROR_DEINITIALIZED, "driver shutting down"},
    {"CUDA_ERROR_STUB_LIBRARY", CUDA_ERROR_STUB_LIBRARY, "CUDA driver is a stub library"},
    {"CUDA_ERROR_NO_DEVICE", CUDA_ERROR_NO_DEVICE, "no CUDA-capable device is detected"},
    {"CUDA_ERROR_INVALID_DEVICE", CUDA_ERROR_INVALID_DEVICE, "invalid device ordinal"},
    {"CUDA_ERROR_INVALID_IMAGE", CUDA_ERROR_INVALID_IMAGE, "device kernel image is invalid"},
    {"CUDA_ERROR_INVALID_CONTEXT", CUDA_ERROR_INVALID_CONTEXT, "invalid device context"},
    {"CUDA_ERROR_ALREADY_MAPPED", CUDA_ERROR_ALREADY_MAPPED, "resource already mapped"},
    {"CUDA_ERROR_NO_BINARY_FOR_GPU", CUDA_ERROR_NO_BINARY_FOR_GPU,
     "no kernel image is available for execution on the device"},
    {"CUDA_ERROR_NOT_MAPPED", CUDA_ERROR_NOT_MAPPED, "resource not mapped"},
    {"CUDA_ERROR_INVALID_PTX", CUDA_ERROR_INVALID_PTX, "a PTX JIT compilation failed"},
    {"CUDA_ERROR_JIT_COMPILER_NOT_FOUND", CUDA_ERROR_JIT_COMPILER_NOT_FOUND,
     "PTX JIT compiler library not found"},
    {"CUDA_ERROR_UNSUPPORTED_PTX_VERSION", CUDA_ERROR_UNSUPPORTED_PTX_VERSION,
     "the provided PTX was compiled with an unsupported toolchain."},
    {"CUDA_ERROR_INVALID_HANDLE", CUDA_ERROR_INVALID_HANDLE, "invalid resource handle"},
    {"CUDA_ERROR_NOT_FOUND", CUDA_ERROR_NOT_FOUND, "named symbol not found"},
    {"CUDA_ERROR_NOT_READY", CUDA_ERROR_NOT_READY, "device not ready"},
    {"CUDA_ERROR_ILLEGAL_ADDRESS", CUDA_ERROR_ILLEGAL_ADDRESS,
     "an illegal memory access was encountered"},
    {"CUDA_ERROR_LAUNCH_FAILED", CUDA_ERROR_LAUNCH_FAILED, "unspecified launch failure"},
    {"CUDA_ERROR_NOT_PERMITTED", CUDA_ERROR_NOT_PERMITTED, "operation not permitted"},
    {"CUDA_ERROR_NOT_SUPPORTED", CUDA_ERROR_NOT_SUPPORTED, "operation not supported"},
    {"CUDA_ERROR_SYSTEM_DRIVER_MISMATCH", CUDA_ERROR_SYSTEM_DRIVER_MISMATCH,
     "system has unsupported display driver / cuda driver combination"},
    {"CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED", CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED,
     "operation not permitted when stream is capturing"},
    {"CUDA_ERROR_STREAM_CAPTURE_INVALIDATED", CUDA_ERROR_STREAM_CAPTURE_INVALIDATED,
     "operation failed due to a previous error during capture"},
    {"CUDA_ERROR_STREAM_CAPTURE_IMPLICIT", CUDA_ERROR_STREAM_CAPTURE_IMPLICIT,
     "operation would make the legacy stream depend on a capturing blocking stream"},
    {"CUDA_ERROR_UNKNOWN", CUDA_ERROR_UNKNOWN, "unknown error"},
};

/* "OOM", "OUT_OF_MEMORY", "CUDA_ERROR_OUT_OF_MEMORY" or "2" -> the CUresult. */
static int parse_code(const char *s, CUresult *out)
{
    static const struct {
        const char *alias;
        CUresult code;
    } aliases[] = {
        {"OOM", CUDA_ERROR_OUT_OF_MEMORY},
        {"UNSUPPORTED_PTX", CUDA_ERROR_UNSUPPORTED_PTX_VERSION},
    };
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (strcmp(s, aliases[i].alias) == 0) return (*out = aliases[i].code), 0;
    for (size_t i = 0; i < sizeof g_errors / sizeof g_errors[0]; i++) {
        const char *n = g_errors[i].name;
        if (strcmp(s, n) == 0 || strcmp(s, n + strlen("CUDA_ERROR_")) == 0)
            return (*out = g_errors[i].code), 0;
    }
    char *end;
    long v = strtol(s, &end, 10);
    if (end != s && !*end && v > 0) return (*out = (CUresult)v), 0;
    return -1;
}

/* Parses "FN:N:CODE[,...]" into g.fails (g_lock held). */
static int set_fails_locked(const char *spec)
{
    fail_spec f[16];
    int n = 0;
    if (spec && *spec) {
        char *dup = strdup(spec), *save = NULL;
        if (!dup) return -1;
        for (char *item = strtok_r(dup, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
            char *c1 = strchr(item, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
            if (!c1 || !c2 || n == 16 || (size_t)(c1 - item) >= sizeof f[0].fn) {
                free(dup);
                return -1;
            }
            memset(&f[n], 0, sizeof f[n]);
            memcpy(f[n].fn, item, (size_t)(c1 - item));
            *c2 = '\0';
            if (strcmp(c1 + 1, "*") == 0) {
                f[n].nth = 1;
                f[n].every = 1;
            } else {
                char *end;
                f[n].nth = strtol(c1 + 1, &end, 10);
                if (*end || f[n].nth < 1) {
                    free(dup);
                    return -1;
                }
            }
            if (parse_code(c2 + 1, &f[n].code)) {
                free(dup);
                return -1;
            }
            n++;
        }
        free(dup);
    }
    memcpy(g.fails, f, sizeof f[0] * (size_t)n);
    g.nfails = n;
    return 0;
}

/* An integer environment variable, def when unset or empty. */
static int env_int(const char *name, int def)
{
    const char *v = getenv(name);
    return v && *v ? atoi(v) : def;
}

/* Reads the environment into the configuration (g_lock held). */
static void read_env_locked(void)
{
    g.nphys = env_int("VRAM_DOUBLE_DEVICES", 1);
    if (g.nphys < 0) g.nphys = 0;
    if (g.nphys > MAXDEV) g.nphys = MAXDEV;
    g.memory = 2ULL << 30;
    const char *v = getenv("VRAM_DOUBLE_MEMORY");
    if (v && *v && parse_size(v, &g.memory)) {
        fprintf(stderr, "libcuda_double: bad VRAM_DOUBLE_MEMORY '%s', using 2G\n", v);
        g.memory = 2ULL << 30;
    }
    unsigned long long gran = 2ULL << 20;
    v = getenv("VRAM_DOUBLE_GRANULARITY");
    if (v && *v && (parse_size(v, &gran) || gran < 4096 || (gran & (gran - 1)))) {
        fprintf(stderr, "libcuda_double: bad VRAM_DOUBLE_GRANULARITY '%s', using 2M\n", v);
        gran = 2ULL << 20;
    }
    g.gran = (size_t)gran;
    g.vmm = env_int("VRAM_DOUBLE_VMM", 1);
    g.lazy = env_int("VRAM_DOUBLE_LAZY", 0);
    g.quiet = env_int("VRAM_DOUBLE_QUIET", 0);
    g.poison = env_int("VRAM_DOUBLE_POISON", 1);
    g.isa_major = 9;
    g.isa_minor = 0;
    v = getenv("VRAM_DOUBLE_PTX_ISA");
    if (v && *v && sscanf(v, "%d.%d", &g.isa_major, &g.isa_minor) != 2) {
        g.isa_major = 9;
        g.isa_minor = 0;
    }
    if (set_fails_locked(getenv("VRAM_DOUBLE_FAIL")))
        fprintf(stderr, "libcuda_double: bad VRAM_DOUBLE_FAIL '%s', ignored\n",
                getenv("VRAM_DOUBLE_FAIL"));
    for (int i = 0; i < MAXDEV; i++) {
        g.ctx[i].magic = CTX_MAGIC;
        g.ctx[i].phys = i;
        g.ctx[i].sticky = CUDA_SUCCESS;
        g.ctx[i].unusable = CUDA_SUCCESS;
        g.ctx[i].app_active = 0;
    }
    g.inited = 0;
    g.nvis = 0;
}

/* pthread_once body: the first call of any entry point reads the environment. */
static void load_env_once(void)
{
    pthread_mutex_lock(&g_lock);
    read_env_locked();
    pthread_mutex_unlock(&g_lock);
}

/* Physical device i's UUID bytes: d0b1e000-0000-4000-8000-<i>. */
static void uuid_of(int phys, unsigned char b[16])
{
    static const unsigned char base[16] = {0xd0, 0xb1, 0xe0, 0, 0, 0, 0x40, 0, 0x80, 0};
    memcpy(b, base, 16);
    for (int k = 0; k < 6; k++)
        b[15 - k] = (unsigned char)((unsigned long long)phys >> (8 * k));
}

/* The same UUID as text, "GPU-...". */
static void uuid_text(int phys, char *out, size_t len)
{
    unsigned char b[16];
    uuid_of(phys, b);
    snprintf(out, len, "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}

/* CUDA_VISIBLE_DEVICES as the driver reads it: indices or UUID prefixes,
 * the list ending at the first entry that matches nothing (g_lock held). */
static void parse_visible_locked(void)
{
    const char *v = getenv("CUDA_VISIBLE_DEVICES");
    g.nvis = 0;
    if (!v) {
        for (int i = 0; i < g.nphys; i++)
            g.vis[g.nvis++] = i;
        return;
    }
    char *dup = strdup(v), *save = NULL;
    if (!dup) return;
    for (char *it = strtok_r(dup, ",", &save); it && g.nvis < MAXDEV;
         it = strtok_r(NULL, ",", &save)) {
        while (*it == ' ')
            it++;
        int phys = -1;
        if (strncmp(it, "GPU-", 4) == 0) {
            for (int i = 0; i < g.nphys && phys < 0; i++) {
                char u[64];
                uuid_text(i, u, sizeof u);
                if (strncmp(u, it, strlen(it)) == 0) phys = i;
            }
        } else {
            char *end;
            long x = strtol(it, &end, 10);
            if (end != it && !*end && x >= 0 && x < g.nphys) phys = (int)x;
        }
        if (phys < 0) break;
        int dup_entry = 0;
        for (int k = 0; k < g.nvis; k++)
            dup_entry |= g.vis[k] == phys;
        if (dup_entry) break;
        g.vis[g.nvis++] = phys;
    }
    free(dup);
}

static CUcontext current(void);

/* Entry points that still answer in a context with a sticky error: the
 * context stack, errors, device queries and the releases of cleanup. */
static int sticky_exempt(const char *fn)
{
    static const char *const ok[] = {
        "cuCtxPushCurrent", "cuCtxPopCurrent",    "cuCtxGetCurrent", "cuCtxSetCurrent",
        "cuDevice",         "cuDriverGetVersion", "cuInit"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (strncmp(fn, ok[i], strlen(ok[i])) == 0) return 1;
    return 0;
}

/* fn is one of the driver's "potentially unsafe" calls during a global
 * capture (the documentation names cudaMalloc; the double treats every
 * allocation, mapping and registration of memory and module loads so),
 * a capture in global mode is in progress (vram_double_set_capture how 4)
 * and the calling thread's own mode is global (g_lock held). */
static int capture_unsafe_locked(const char *fn)
{
    static const char *const unsafe[] = {
        "cuMemAddressReserve",
        "cuMemAddressFree",
        "cuMemCreate",
        "cuMemRelease",
        "cuMemMap",
        "cuMemUnmap",
        "cuMemSetAccess",
        "cuMemHostRegister_v2",
        "cuMemHostUnregister",
        "cuMemHostAlloc",
        "cuMemFreeHost",
        "cuMemAlloc_v2",
        "cuMemFree_v2",
        "cuModuleLoadData",
    };
    if (tls_mode != CU_STREAM_CAPTURE_MODE_GLOBAL) return 0;
    int global = 0;
    for (int i = 0; i < MAXDEV; i++)
        global |= g.capture[i] == 4;
    for (size_t i = 0; global && i < sizeof unsafe / sizeof unsafe[0]; i++)
        if (strcmp(fn, unsafe[i]) == 0) return 1;
    return 0;
}

/* Counts the call, and answers an injected failure if one is due, or the
 * sticky error of the current context. */
static CUresult enter(const char *fn, int need_init)
{
    pthread_once(&g_once, load_env_once);
    CUresult r = CUDA_SUCCESS;
    pthread_mutex_lock(&g_lock);
    int i;
    for (i = 0; i < g.ncalls; i++)
        if (strcmp(g.calls[i].name, fn) == 0) break;
    if (i == g.ncalls && g.ncalls < (int)(sizeof g.calls / sizeof g.calls[0])) {
        g.calls[i].name = fn;
        g.calls[i].n = 0;
        g.ncalls++;
    }
    if (i < g.ncalls) g.calls[i].n++;
    for (int k = 0; k < g.nfails; k++) {
        fail_spec *f = &g.fails[k];
        if (strcmp(f->fn, fn) != 0) continue;
        f->seen++;
        if (f->seen == f->nth || (f->every && f->seen >= f->nth)) {
            r = f->code;
            if (!f->every) {
                g.fails[k] = g.fails[--g.nfails];
            }
            break;
        }
    }
    if (r == CUDA_SUCCESS && need_init && !g.inited) r = CUDA_ERROR_NOT_INITIALIZED;
    if (r == CUDA_SUCCESS && capture_unsafe_locked(fn)) {
        violation("%s while another thread captures a CUDA graph in global mode, from a thread "
                  "in global mode: a potentially unsafe call, the capture is invalidated",
                  fn);
        STAT_ADD(capture_invalidations, 1);
        r = CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    }
    CUcontext cur = current();
    if (r == CUDA_SUCCESS && cur && cur->sticky != CUDA_SUCCESS && !sticky_exempt(fn)) {
        r = cur->sticky;
        STAT_ADD(sticky_refusals, 1);
    }
    pthread_mutex_unlock(&g_lock);
    return r;
}

#define ENTER(fn, need_init)                                                                       \
    do {                                                                                           \
        CUresult enter_r_ = enter(fn, need_init);                                                  \
        if (enter_r_ != CUDA_SUCCESS) return enter_r_;                                             \
    } while (0)

/* The calling thread's current context, NULL when none. */
static CUcontext current(void)
{
    return tls_depth > 0 ? tls_ctx[tls_depth - 1] : NULL;
}

/* The current context, or NULL after counting a violation. */
static CUcontext need_ctx(const char *fn)
{
    CUcontext c = current();
    if (!c) violation("%s called with no current context", fn);
    return c;
}

/* Device ordinal (as the caller sees it) -> physical device, -1 when none (g_lock held). */
static int ordinal_phys(int ordinal)
{
    return ordinal >= 0 && ordinal < g.nvis ? g.vis[ordinal] : -1;
}

/* ---- errors, init, devices ---- */

/* Every DBL_EXPORT cu* function behaves as the driver's function of the same
 * name, under the model above; beyond that it checks what it says it checks. */

DBL_EXPORT CUresult cuGetErrorName(CUresult err, const char **name)
{
    for (size_t i = 0; i < sizeof g_errors / sizeof g_errors[0]; i++)
        if (g_errors[i].code == err) return (*name = g_errors[i].name), CUDA_SUCCESS;
    *name = NULL;
    return CUDA_ERROR_INVALID_VALUE;
}

DBL_EXPORT CUresult cuGetErrorString(CUresult err, const char **str)
{
    for (size_t i = 0; i < sizeof g_errors / sizeof g_errors[0]; i++)
        if (g_errors[i].code == err) return (*str = g_errors[i].text), CUDA_SUCCESS;
    *str = NULL;
    return CUDA_ERROR_INVALID_VALUE;
}

DBL_EXPORT CUresult cuDriverGetVersion(int *version)
{
    ENTER("cuDriverGetVersion", 0);
    if (!version) return CUDA_ERROR_INVALID_VALUE;
    *version = 12080;
    return CUDA_SUCCESS;
}

DBL_EXPORT CUresult cuInit(unsigned int flags)
{
    ENTER("cuInit", 0);
    if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_lock);
    if (!g.inited) parse_visible_locked();
    CUresult r = g.nvis == 0 ? CUDA_ERROR_NO_DEVICE : CUDA_SUCCESS;
    if (r == CUDA_SUCCESS) g.inited = 1;
    pthread_mutex_unlock(&g_lock);
    return r;
}

DBL_EXPORT CUresult cuDeviceGetCount(int *count)
{
    ENTER("cuDeviceGetCount", 1);
    if (!count) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_lock);
    *count = g.nvis;
    pthread_mutex_unlock(&g_lock);
    return CUDA_SUCCESS;
}

DBL_EXPORT CUresult cuDeviceGet(CUdevice *dev, int ordinal)
{
    ENTER("cuDeviceGet", 1);
    if (!dev) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_lock);
    int ok = ordinal >= 0 && ordinal < g.nvis;
    pthread_mutex_unlock(&g_lock);
    if (!ok) return CUDA_ERROR_INVALID_DEVICE;
    *dev = ordinal;
    return CUDA_SUCCESS;
}

/* ordinal_phys taking the lock. */
static int dev_phys(CUdevice dev)
{
    pthread_mutex_lock(&g_lock);
    int p = ordinal_phys(dev);
    pthread_mutex_unlock(&g_lock);
    return p;
}

DBL_EXPORT CUresult cuDeviceGetName(char *name, int len, CUdevice dev)
{
    ENTER("cuDeviceGetName", 1);
    int p = dev_phys(dev);
    if (p < 0) return CUDA_ERROR_INVALID_DEVICE;
    if (!name || len <= 0) return CUDA_ERROR_INVALID_VALUE;
    snprintf(name, (size_t)len, "vram test double (no GPU) #%d", p);
    return CUDA_SUCCESS;
}

/* Body of cuDeviceGetUuid and cuDeviceGetUuid_v2. */
static CUresult device_uuid(CUuuid *uuid, CUdevice dev)
{
    int p = dev_phys(dev);
    if (p < 0) return CUDA_ERROR_INVALID_DEVICE;
    if (!uuid) return CUDA_ERROR_INVALID_VALUE;
    uuid_of(p, (unsigned char *)uuid->bytes);
    return CUDA_SUCCESS;
}

DBL_EXPORT CUresult cuDeviceGetUuid(CUuuid *uuid, CUdevice dev)
{
    ENTER("cuDeviceGetUuid", 1);
    return device_uuid(uuid, dev);
}

DBL_EXPORT CUresult cuDeviceGetUuid_v2(CUuuid *uuid, CUdevice dev)
{
    ENTER("cuDeviceGetUuid_v2", 1);
    CUresult r = device_uuid(uuid, dev);
    int p = dev_phys(dev);
    if (r == CUDA_SUCCESS && p >= 0 && (__atomic_load_n(&g.mig_mask, __ATOMIC_RELAXED) >> p & 1))
        uuid->bytes[0] ^= (char)0x5a; /* a MIG instance: its own UUID, not the GPU's */
    return r;
}

DBL_EXPORT CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev)
{
    ENTER("cuDeviceTotalMem_v2", 1);
    if (dev_phys(dev) < 0) return CUDA_ERROR_INVALID_DEVICE;
    if (!bytes) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_lock);
    *bytes = (size_t)g.memory;
    pthread_mutex_unlock(&g_lock);
    return CUDA_SUCCESS;
}

DBL_EXPORT CUresult cuDeviceGetAttribute(int *value, int attrib, CUdevice dev)
{
    ENTER("cuDeviceGetAttribute", 1);
    if (dev_phys(dev) < 0) return CUDA_ERROR_INVALID_DEVICE;
    if (!value) return CUDA_ERROR_INVALID_VALUE;
    switch (attrib) {
    case CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED:
        pthread_mutex_lock(&g_lock);
        *value = g.vmm != 0;
        pthread_mutex_unlock(&g_lock);
        return CUDA_SUCCESS;
    case CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING: *value = 1; return CUDA_SUCCESS;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *value = 9; return CUDA_SUCCESS;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *value = 0; return CUDA_SUCCESS;
    case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *value = 4; return CUDA_SUCCESS;
    default: return CUDA_ERROR_INVALID_VALUE;
    }
}

/* ---- contexts ---- */

DBL_EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext *ctx, CUdevice dev)
{
    ENTER("cuDevicePrimaryCtxRetain", 1);
    if (!ctx) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_lock);
    int p = ordinal_phys(dev);
    CUresult bad = p >= 0 ? g.ctx[p].unusable : CUDA_ERROR_INVALID_DEVICE;
    if (bad == CUDA_SUCCESS) {
        g.ctx[p].retain++;
        *ctx = &g.ctx[p];
    }
    pthread_mutex_unlock(&g_lock);
    if (bad != CUDA_SUCCESS) return bad;
    STAT_ADD(ctx_retained, 1);
    return CUDA_SUCCESS;
}

DBL_EXPORT CUresult cuDevicePrimaryCtxGetState(CUdevice dev, unsigned int *flags, int *active)
{
    ENTER("cuDevicePrimaryCtxGetState", 1);
    if (!flags || !active) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_lock);
    int p = ordinal_phys(dev);
    if (p >= 0) {
        *flags = 0;
        *active = g.ctx[p].retain > 0 || g.ctx[p].app_active;
    }
    pthread_mutex_unlock(&g_lock);
    return p >= 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_DEVICE;
}

/* Streams and modules still alive in c (g_lock held). */
static long ctx_resources_locked(CUcontext c, long *streams, long *modules)
{
    *streams = *modules = 0;
    for (CUstream s = g.streams; s; s = s->next)
        *streams += s->ctx == c;
    for (CUmodule m = g.modules; m; m = m->next)
        *modules += m->ctx == c;
    return *streams + *modules;
}

/* Drops one primary context reference; the last one must find nothing alive in it. */
static CUresult primary_release(CUdevice dev, const char *fn)
{
    CUresult r = CUDA_SUCCESS;
    long nblocks = 0;
    pthread_rwlock_rdlock(&g_mem);
    pthread_mutex_lock(&g_lock);
    int p = ordinal_phys(dev);
    if (p < 0) {
        r = CUDA_ERROR_INVALID_DEVICE;
    } else if (g.ctx[p].retain <= 0) {
        r = CUDA_ERROR_INVALID_CONTEXT;
        violation("%s(device %d): primary context not retained", fn, dev);
    } else if (--g.ctx[p].retain == 0) {
        long ns, nm;
        for (dblock *b = g.devblocks; b; b = b->next)
            nblocks += b->ctx == &g.ctx[p];
        if (ctx_resources_locked(&g.ctx[p], &ns, &nm) || nblocks)
            violation("%s(device %d): last reference dropped with %ld streams, %ld modules and "
                      "%ld cuMemAlloc blocks alive",
                      fn, dev, ns, nm, nblocks);
    }
    pthread_mutex_unlock(&g_lock);
    pthread_rwlock_unlock(&g_mem);
    if (r == CUDA_SUCCESS) STAT_ADD(ctx_retained, -1);
    return r;
}

DBL_EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev)
{
    ENTER("cuDevicePrimaryCtxRelease_v2", 1);
    return primary_release(dev, "cuDevicePrimaryCtxRelease_v2");
}

DBL_EXPORT CUresult cuDevicePrimaryCtxRelease(CUdevice dev)
{
    ENTER("cuDevicePrimaryCtxRelease", 1);
    return primary_release(dev, "cuDevicePrimaryCtxRelease");
}

/* c is a primary context that is retained now. */
static int ctx_valid(CUcontext c)
{
    if (!c || c->magic != CTX_MAGIC) return 0;
    pthread_mutex_lock(&g_lock);
    int ok = c->retain > 0;
    pthread_mutex_unlock(&g_lock);
    return ok;
}

DBL_EXPORT CUresult cuCtxPushCurrent_v2(CUcontext ctx)
{
    ENTER("cuCtxPushCurrent_v2", 1);
    if (!ctx_valid(ctx)) {
        violation("cuCtxPushCurrent_v2: not a live context");
        return CUDA_ERROR_INVALID_CONTEXT;
    }
    if (tls_depth == (int)(sizeof tls_ctx / sizeof tls_ctx[0])) {
        violation("cuCtxPushCurrent_v2: context stack overflow (unbalanced push/pop?)");
        return CUDA_ERROR_INVALID_VALUE;
    }
    tls_ctx[tls_depth++] = ctx;
    return CUDA_SUCCESS;
}

DBL_EXPORT CUresult cuCtxPopCurrent_v2(CUcontext *ctx)
{
    ENTER("cuCtxPopCurrent_v2", 1);
    if (tls_depth == 0) {
        violation("cuCtxPopCurrent_v2: no current context");
        return CUDA_ERROR_INVALID_CONTEXT;
    }
    CUcontext c = tls_ctx[--tls_depth];
    if (ctx) *ctx = c;
    return CUDA_SUCCESS;
}

DBL_EXPORT CUresult cuCtxSetCurrent(CUcontext ctx)
{
    ENTER("cuCtxSetCurrent", 1);
    if (ctx && !ctx_valid(ctx)) return CUDA_ERROR_INVALID_CONTEXT;
    if (!ctx) {
        if (tls_depth > 0) tls_depth--;
        return CUDA_SUCCESS;
    }
    if (tls_depth == 0) tls_depth = 1;
    tls_ctx[tls_depth - 1] = ctx;
    return CUDA_SUCCESS;
}

DBL_EXPORT CUresult cuCtxGetCurrent(CUcontext *ctx)
{
    ENTER("cuCtxGetCurrent", 1);
    if (!ctx) return CUDA_ERROR_INVALID_VALUE;
    *ctx = current();
    return CUDA_SUCCESS;
}

/* ---- memory bookkeeping (g_mem held) ---- */

static dresv *resv_containing(uintptr_t p, size_t n)
{
    for (dresv *r = g.resv; r; r = r->next)
        if (p >= r->base && p - r->base <= r->size && n <= r->size - (p - r->base)) return r;
    return NULL;
}

/* The mapping holding address p, NULL when none (g_mem held). */
static dmap *map_containing(uintptr_t p)
{
    for (dmap *m = g.maps; m; m = m->next)
        if (p >= m->base && p - m->base < m->size) return m;
    return NULL;
}

/* [p, p+n) is device memory that physical device phys (any device when
 * phys < 0) may read and write now: cuMemSetAccess gave it read/write on
 * every mapping of the range (access is per device and per mapping). */
static int accessible_from_locked(uintptr_t p, size_t n, int phys)
{
    if (n == 0) return 1;
    for (dblock *b = g.devblocks; b; b = b->next)
        if (p >= b->p && p - b->p < b->size) return n <= b->size - (p - b->p);
    while (n > 0) {
        dmap *m = map_containing(p);
        if (!m || !m->rw || (phys >= 0 && !(m->access >> phys & 1u))) return 0;
        size_t in = m->size - (p - m->base);
        if (in >= n) return 1;
        p += in;
        n -= in;
    }
    return 1;
}

/* [p, p+n) may be read and written by some device now. */
static int accessible_locked(uintptr_t p, size_t n)
{
    return accessible_from_locked(p, n, -1);
}

/* The application's pending work that overlaps [p, p+n), NULL when none (g_mem held). */
static duser *user_overlap_locked(uintptr_t p, size_t n)
{
    for (duser *u = g.user; u; u = u->next)
        if (u->base < p + n && p < u->base + u->n) return u;
    return NULL;
}

/* Completes the pending application work of physical device phys (all
 * when phys < 0), and with only_over set just what overlaps [p, p+n);
 * returns how many (g_mem held for writing). */
static long user_complete_locked(int phys, int only_over, uintptr_t p, size_t n)
{
    long k = 0;
    for (duser **pp = &g.user; *pp;) {
        duser *u = *pp;
        int hit = (phys < 0 || u->phys == phys) &&
                  (!only_over || (u->base < p + n && p < u->base + u->n));
        if (hit) {
            *pp = u->next;
            free(u);
            k++;
            STAT_ADD(user_pending, -1);
        } else {
            pp = &u->next;
        }
    }
    return k;
}

/* New device memory holds garbage, not zeros: the poison pattern, so a
 * restore or load that skips bytes is caught. */
#define POISON_WORD 0xdb0adb0adb0adb0aULL

static uint64_t g_poison_chunk[1 << 14]; /* 128 KiB of the pattern */
static pthread_once_t g_poison_once = PTHREAD_ONCE_INIT;

static void poison_chunk_init(void)
{
    for (size_t i = 0; i < sizeof g_poison_chunk / 8; i++)
        g_poison_chunk[i] = POISON_WORD;
}

/* Fills fd's size bytes with the poison pattern when the flag is on. */
static int poison_fd(int fd, size_t size)
{
    if (!__atomic_load_n(&g.poison, __ATOMIC_RELAXED)) return 0;
    pthread_once(&g_poison_once, poison_chunk_init);
    for (size_t off = 0; off < size;) {
        size_t len = size - off < sizeof g_poison_chunk ? size - off : sizeof g_poison_chunk;
        ssize_t w = pwrite(fd, g_poison_chunk, len, (off_t)off);
        if (w <= 0) return -1;
        off += (size_t)w;
    }
    return 0;
}

/* Frees a released, unmapped allocation and its device memory (g_mem held). */
static void alloc_destroy_locked(dalloc *a)
{
    for (dalloc **pp = &g.allocs; *pp; pp = &(*pp)->next)
        if (*pp == a) {
            *pp = a->next;
            break;
        }
    g.used[a->phys] -= a->size;
    close(a->fd);
    free(a);
    STAT_ADD(allocations, -1);
}

/* prop asks for pinned memory on a visible device; *phys gets that device. */
static int prop_ok(const CUmemAllocationProp *prop, int *phys)
{
    if (!prop || prop->type != CU_MEM_ALLOCATION_TYPE_PINNED ||
        prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE || prop->win32HandleMetaData)
        return 0;
    pthread_mutex_lock(&g_lock);
    *phys = ordinal_phys(prop->location.id);
    pthread_mutex_unlock(&g_lock);
    return *phys >= 0;
}

/* ---- virtual memory management ---- */

DBL_EXPORT CUresult cuMemGetAllocationGranularity(size_t *gran, const CUmemAllocationProp *prop,
                                                  CUmemAllocationGranularity_flags option)
{
    ENTER("cuMemGetAllocationGranularity", 1);
    int phys;
    if (!gran || !prop_ok(prop, &phys) ||
        (option != CU_MEM_ALLOC_GRANULARITY_MINIMUM &&
         option != CU_MEM_ALLOC_GRANULARITY_RECOMMENDED))
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_lock);
    *gran = g.gran;
    pthread_mutex_unlock(&g_lock);
    return CUDA_SUCCESS;
}

/* The configured allocation granularity. */
static size_t granularity(void)
{
    pthread_mutex_lock(&g_lock);
    size_t v = g.gran;
    pthread_mutex_unlock(&g_lock);
    return v;
}

DBL_EXPORT CUresult cuMemAddressReserve(CUdeviceptr *ptr, size_t size, size_t alignment,
                                        CUdeviceptr addr, unsigned long long flags)
{
    ENTER("cuMemAddressReserve", 1);
    if (!need_ctx("cuMemAddressReserve")) return CUDA_ERROR_INVALID_CONTEXT;
    size_t gran = granularity();
    if (!ptr || size == 0 || size % gran || flags || (alignment & (alignment - 1))) {
        violation("cuMemAddressReserve(%zu bytes, alignment %zu): not a multiple of the "
                  "granularity %zu or bad alignment/flags",
                  size, alignment, gran);
        return CUDA_ERROR_INVALID_VALUE;
    }
    (void)addr; /* a hint only */
    size_t align = alignment > gran ? alignment : gran;
    void *raw =
        mmap(NULL, size + align, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
    uintptr_t r0 = (uintptr_t)raw, base = (r0 + align - 1) / align * align;
    if (base > r0) munmap(raw, base - r0);
    if (r0 + size + align > base + size) munmap((void *)(base + size), r0 + align - base);
    dresv *r = calloc(1, sizeof *r);
    if (!r) {
        munmap((void *)base, size);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    r->base = base;
    r->size = size;
    pthread_rwlock_wrlock(&g_mem);
    r->next = g.resv;
    g.resv = r;
    pthread_rwlock_unlock(&g_mem);
    STAT_ADD(reservations, 1);
    *ptr = (CUdeviceptr)base;
    return CUDA_SUCCESS;
}

DBL_EXPORT CUresult cuMemAddressFree(CUdeviceptr ptr, size_t size)
{
    ENTER("cuMemAddressFree", 1);
    if (!need_ctx("cuMemAddressFree")) return CUDA_ERROR_INVALID_CONTEXT;
    CUresult rc = CUDA_SUCCESS;
    pthread_rwlock_wrlock(&g_mem);
    dresv **pp = &g.resv;
    while (*pp && !((*pp)->base == ptr && (*pp)->size == size))
        pp = &(*pp)->next;
    if (!*pp) {
        violation("cuMemAddressFree(%#llx, %zu): not a reserved range", ptr, size);
        rc = CUDA_ERROR_INVALID_VALUE;
    } else {
        for (dmap *m = g.maps; m; m = m->next)
            if (m->base >= ptr && m->base < ptr + size) {
                violation("cuMemAddressFree(%#llx, %zu): range still mapped", ptr, size);
                rc = CUDA_ERROR_INVALID_VALUE;
                break;
            }
        if (rc == CUDA_SUCCESS) {
            dresv *r = *pp;
            *pp = r->next;
            munmap((void *)r->base, r->size);
            free(r);
            STAT_ADD(reservations, -1);
        }
    }
    pthread_rwlock_unlock(&g_mem);
    return rc;
}

DBL_EXPORT CUresult cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size,
                                const CUmemAllocationProp *prop, unsigned long long flags)
{
    ENTER("cuMemCreate", 1);
    if (!need_ctx("cuMemCreate")) return CUDA_ERROR_INVALID_CONTEXT;
    int phys;
    size_t gran = granularity();
    if (!handle || !prop_ok(prop, &phys) || flags || size == 0 || size % gran) {
        violation("cuMemCreate(%zu bytes): bad properties, flags or size (granularity %zu)", size,
                  gran);
        return CUDA_ERROR_INVALID_VALUE;
    }
    pthread_rwlock_wrlock(&g_mem);
    pthread_mutex_lock(&g_lock);
    unsigned long long memory = g.memory;
    unsigned long long id = ++g.next_id;
    pthread_mutex_unlock(&g_lock);
    CUresult rc = CUDA_SUCCESS;
    dalloc *a = NULL;
    if (size > memory - g.used[phys]) {
        rc = CUDA_ERROR_OUT_OF_MEMORY;
    } else if (!(a = calloc(1, sizeof *a))) {
        rc = CUDA_ERROR_OUT_OF_MEMORY;
    } else {
        a->fd = memfd_create("vram-double-vram", MFD_CLOEXEC);
        if (a->fd < 0 || ftruncate(a->fd, (off_t)size) != 0 || poison_fd(a->fd, size) != 0) {
            if (a->fd >= 0) close(a->fd);
            free(a);
            rc = CUDA_ERROR_OUT_OF_MEMORY;
        } else {
            a->id = id;
            a->size = size;
            a->phys = phys;
            a->next = g.allocs;
            g.allocs = a;
            g.used[phys] += size;
            STAT_ADD(allocations, 1);
            *handle = id;
        }
    }
    pthread_rwlock_unlock(&g_mem);
    return rc;
}

/* The allocation with handle id, NULL when none (g_mem held). */
static dalloc *alloc_find_locked(unsigned long long id)
{
    for (dalloc *a = g.allocs; a; a = a->next)
        if (a->id == id) return a;
    return NULL;
}

DBL_EXPORT CUresult cuMemRelease(CUmemGenericAllocationHandle handle)
{
    ENTER("cuMemRelease", 1);
    if (!need_ctx("cuMemRelease")) return CUDA_ERROR_INVALID_CONTEXT;
    CUresult rc = CUDA_SUCCESS;
    pthread_rwlock_wrlock(&g_mem);
    dalloc *a = alloc_find_locked(handle);
    if (!a || a->released) {
        violation("cuMemRelease(%llu): not a live allocation handle", handle);
        rc = CUDA_ERROR_INVALID_VALUE;
    } else {
        a->released = 1;
        if (a->mapcount == 0) alloc_destroy_locked(a);
    }
    pthread_rwlock_unlock(&g_mem);
    return rc;
}

DBL_EXPORT CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset,
                             CUmemGenericAllocationHandle handle, unsigned long long flags)
{
    ENTER("cuMemMap", 1);
    if (!need_ctx("cuMemMap")) return CUDA_ERROR_INVALID_CONTEXT;
    size_t gran = granularity();
    CUresult rc = CUDA_SUCCESS;
    pthread_rwlock_wrlock(&g_mem);
    dalloc *a = alloc_find_locked(handle);
    dmap *m = NULL;
    if (!a || a->released) {
        violation("cuMemMap(%#llx): handle %llu is not a live allocation", ptr, handle);
        rc = CUDA_ERROR_INVALID_HANDLE;
    } else if (flags || size == 0 || size % gran || offset % gran || offset > a->size ||
               size > a->size - offset || !resv_containing((uintptr_t)ptr, size) || ptr % gran) {
        violation("cuMemMap(%#llx, %zu bytes, offset %zu): outside a reservation or the "
                  "allocation, or not granularity-aligned",
                  ptr, size, offset);
        rc = CUDA_ERROR_INVALID_VALUE;
    } else {
        for (dmap *o = g.maps; o; o = o->next)
            if (o->base < ptr + size && ptr < o->base + o->size) {
                violation("cuMemMap(%#llx, %zu bytes): already mapped", ptr, size);
                rc = CUDA_ERROR_ALREADY_MAPPED;
                break;
            }
        if (rc == CUDA_SUCCESS && !(m = calloc(1, sizeof *m))) rc = CUDA_ERROR_OUT_OF_MEMORY;
        if (rc == CUDA_SUCCESS) {
            void *p = mmap((void *)(uintptr_t)ptr, size, PROT_NONE, MAP_SHARED | MAP_FIXED, a->fd,
                           (off_t)offset);
            if (p == MAP_FAILED) {
                free(m);
                rc = CUDA_ERROR_OUT_OF_MEMORY;
            } else {
                m->base = (uintptr_t)ptr;
                m->size = size;
                m->a = a;
                m->next = g.maps;
                g.maps = m;
                a->mapcount++;
                STAT_ADD(mappings, 1);
            }
        }
    }
    pthread_rwlock_unlock(&g_mem);
    return rc;
}

/* Physical device a may access memory on physical device b as a peer. */
static int peer_ok(int a, int b)
{
    return a != b && !__atomic_load_n(&g.no_peer, __ATOMIC_RELAXED);
}

/* The read/write mask of access descriptors and whether any asks for read
 * only (PROT_READ); -1 for a bad descriptor. */
static int access_mask(const CUmemAccessDesc *desc, size_t count, unsigned *mask, int *ro)
{
    *mask = 0;
    *ro = 0;
    for (size_t i = 0; i < count; i++) {
        pthread_mutex_lock(&g_lock);
        int phys = ordinal_phys(desc[i].location.id);
        pthread_mutex_unlock(&g_lock);
        if (desc[i].location.type != CU_MEM_LOCATION_TYPE_DEVICE || phys < 0) {
            violation("cuMemSetAccess: descriptor %zu is not a valid device location", i);
            return -1;
        }
        if (desc[i].flags == CU_MEM_ACCESS_FLAGS_PROT_READWRITE)
            *mask |= 1u << phys;
        else if (desc[i].flags == CU_MEM_ACCESS_FLAGS_PROT_READ)
            *ro = 1;
        else if (desc[i].flags != CU_MEM_ACCESS_FLAGS_PROT_NONE)
            return -1;
    }
    return 0;
}

/* Every byte of [p, p+size) is mapped, and every device in mask is the
 * owner of each mapping or may access it as a peer (g_mem held). */
static CUresult access_check_locked(uintptr_t ptr, size_t size, unsigned mask)
{
    for (uintptr_t p = ptr, end = p + size; p < end;) {
        dmap *m = map_containing(p);
        if (!m) {
            violation("cuMemSetAccess(%#lx, %zu): part of the range is not mapped",
                      (unsigned long)ptr, size);
            return CUDA_ERROR_INVALID_VALUE;
        }
        for (int d = 0; d < MAXDEV; d++)
            if ((mask >> d & 1u) && d != m->a->phys && !peer_ok(d, m->a->phys)) {
                violation("cuMemSetAccess(%#lx): device %d cannot access memory of device %d "
                          "as a peer (cuDeviceCanAccessPeer says 0)",
                          (unsigned long)ptr, d, m->a->phys);
                return CUDA_ERROR_INVALID_DEVICE;
            }
        p = m->base + m->size;
    }
    return CUDA_SUCCESS;
}

DBL_EXPORT CUresult cuMemSetAccess(CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc,
                                   size_t count)
{
    ENTER("cuMemSetAccess", 1);
    if (!need_ctx("cuMemSetAccess")) return CUDA_ERROR_INVALID_CONTEXT;
    if (!desc || count == 0) return CUDA_ERROR_INVALID_VALUE;
    unsigned mask;
    int ro;
    if (access_mask(desc, count, &mask, &ro)) return CUDA_ERROR_INVALID_VALUE;
    int prot = mask ? PROT_READ | PROT_WRITE : ro ? PROT_READ : PROT_NONE;
    pthread_rwlock_wrlock(&g_mem);
    CUresult rc = access_check_locked((uintptr_t)ptr, size, mask);
    if (rc == CUDA_SUCCESS) {
        if (mprotect((void *)(uintptr_t)ptr, size, prot) != 0) {
            rc = CUDA_ERROR_INVALID_VALUE;
        } else {
            for (dmap *m = g.maps; m; m = m->next)
                if (m->base >= ptr && m->base < ptr + size) {
                    m->rw = mask != 0;
                    m->access = mask;
                }
        }
    }
    pthread_rwlock_unlock(&g_mem);
    return rc;
}

DBL_EXPORT CUresult cuDeviceCanAccessPeer(int *can, CUdevice dev, CUdevice peer)
{
    ENTER("cuDeviceCanAccessPeer", 1);
    int a = dev_phys(dev), b = dev_phys(peer);
    if (a < 0 || b < 0) return CUDA_ERROR_INVALID_DEVICE;
    if (!can) return CUDA_ERROR_INVALID_VALUE;
    *can = peer_ok(a, b);
    return CUDA_SUCCESS;
}

DBL_EXPORT CUresult cuMemUnmap(CUdeviceptr ptr, size_t size)
{
    ENTER("cuMemUnmap", 1);
    if (!need_ctx("cuMemUnmap")) return CUDA_ERROR_INVALID_CONTEXT;
    CUresult rc = CUDA_SUCCESS;
    pthread_rwlock_wrlock(&g_mem);
    /* the range must be made of whole mappings */
    size_t covered = 0;
    for (dmap *m = g.maps; m; m = m->next) {
        int inside = m->base >= ptr && m->base + m->size <= ptr + size;
        int overlap = m->base < ptr + size && ptr < m->base + m->size;
        if (overlap && !inside) {
            violation("cuMemUnmap(%#llx, %zu): cuts a mapping in two", ptr, size);
            rc = CUDA_ERROR_INVALID_VALUE;
        }
        if (inside) covered += m->size;
    }
    if (rc == CUDA_SUCCESS && (covered != size || size == 0)) {
        violation("cuMemUnmap(%#llx, %zu): only %zu bytes of it are mapped", ptr, size, covered);
        rc = CUDA_ERROR_INVALID_VALUE;
    }
    duser *busy = rc == CUDA_SUCCESS ? user_overlap_locked((uintptr_t)ptr, size) : NULL;
    if (busy) {
        /* the driver's unmap does not wait: the kernels fault when they run */
        violation("cuMemUnmap(%#llx, %zu): work queued on the application's streams still "
                  "uses it (synchronize first); the context now has CUDA_ERROR_ILLEGAL_ADDRESS",
                  ptr, size);
        int phys = busy->phys;
        user_complete_locked(phys, 1, (uintptr_t)ptr, size);
        pthread_mutex_lock(&g_lock);
        if (g.ctx[phys].sticky == CUDA_SUCCESS) g.ctx[phys].sticky = CUDA_ERROR_ILLEGAL_ADDRESS;
        pthread_mutex_unlock(&g_lock);
    }
    if (rc == CUDA_SUCCESS) {
        void *p = mmap((void *)(uintptr_t)ptr, size, PROT_NONE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) {
            rc = CUDA_ERROR_UNKNOWN;
        } else {
            for (dmap **pp = &g.maps; *pp;) {
                dmap *m = *pp;
                if (m->base >= ptr && m->base + m->size <= ptr + size) {
                    *pp = m->next;
                    dalloc *a = m->a;
                    a->mapcount--;
                    if (a->released && a->mapcount == 0) alloc_destroy_locked(a);
                    free(m);
                    STAT_ADD(mappings, -1);
                } else {
                    pp = &m->next;
                }
            }
        }
    }
    pthread_rwlock_unlock(&g_mem);
    return rc;
}

DBL_EXPORT CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total_bytes)
{
    ENTER("cuMemGetInfo_v2", 1);
    CUcontext c = need_ctx("cuMemGetInfo_v2");
    if (!c) return CUDA_ERROR_INVALID_CONTEXT;
    if (!free_bytes || !total_bytes) return CUDA_ERROR_INVALID_VALUE;
    pthread_rwlock_rdlock(&g_mem);
    pthread_mutex_lock(&g_lock);
    unsigned long long memory = g.memory;
    pthread_mutex_unlock(&g_lock);
    *total_bytes = (size_t)memory;
    *free_bytes = (size_t)(memory - g.used[c->phys]);
    pthread_rwlock_unlock(&g_mem);
    return CUDA_SUCCESS;
}

DBL_EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytes)
{
    ENTER("cuMemAlloc_v2", 1);
    CUcontext c = need_ctx("cuMemAlloc_v2");
    if (!c) return CUDA_ERROR_INVALID_CONTEXT;
    if (!dptr || bytes == 0) return CUDA_ERROR_INVALID_VALUE;
    CUresult rc = CUDA_SUCCESS;
    pthread_rwlock_wrlock(&g_mem);
    pthread_mutex_lock(&g_lock);
    unsigned long long memory = g.memory;
    pthread_mutex_unlock(&g_lock);
    dblock *b = NULL;
    void *p = NULL;
    if (bytes > memory - g.used[c->phys] || !(b = calloc(1, sizeof *b)) ||
        posix_memalign(&p, 256, bytes) != 0) {
        free(b);
        rc = CUDA_ERROR_OUT_OF_MEMORY;
    } else {
        if (__atomic_load_n(&g.poison, __ATOMIC_RELAXED)) memset(p, 0xdb, bytes);
        b->p = (uintptr_t)p;
        b->size = bytes;
        b->phys = c->phys;
        b->ctx = c;
        b->next = g.devblocks;
        g.devblocks = b;
        g.used[c->phys] += bytes;
        STAT_ADD(dev_allocs, 1);
        *dptr = (CUdeviceptr)b->p;
    }
    pthread_rwlock_unlock(&g_mem);
    return rc;
}

DBL_EXPORT CUresult cuMemFree_v2(CUdeviceptr dptr)
{
    ENTER("cuMemFree_v2", 1);
    if (!need_ctx("cuMemFree_v2")) return CUDA_ERROR_INVALID_CONTEXT;
    CUresult rc = CUDA_SUCCESS;
    pthread_rwlock_wrlock(&g_mem);
    dblock **pp = &g.devblocks;
    while (*pp && (*pp)->p != dptr)
        pp = &(*pp)->next;
    if (!*pp) {
        violation("cuMemFree_v2(%#llx): not a cuMemAlloc block", dptr);
        rc = CUDA_ERROR_INVALID_VALUE;
    } else {
        dblock *b = *pp;
        *pp = b->next;
        g.used[b->phys] -= b->size;
        free((void *)b->p);
        free(b);
        STAT_ADD(dev_allocs, -1);
    }
    pthread_rwlock_unlock(&g_mem);
    return rc;
}

/* ---- pinned host memory ---- */

DBL_EXPORT CUresult cuMemHostAlloc(void **pp, size_t bytes, unsigned int flags)
{
    ENTER("cuMemHostAlloc", 1);
    if (!need_ctx("cuMemHostAlloc")) return CUDA_ERROR_INVALID_CONTEXT;
    if (!pp || bytes == 0 || (flags & ~0x7u)) return CUDA_ERROR_INVALID_VALUE;
    void *p = NULL;
    dblock *b = calloc(1, sizeof *b);
    if (!b || posix_memalign(&p, 4096, bytes) != 0) {
        free(b);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    b->p = (uintptr_t)p;
    b->size = bytes;
    pthread_mutex_lock(&g_lock);
    b->next = g.hosts;
    g.hosts = b;
    pthread_mutex_unlock(&g_lock);
    STAT_ADD(host_allocs, 1);
    STAT_ADD(pinned_alloc_bytes, (long)bytes);
    *pp = p;
    return CUDA_SUCCESS;
}

/* The "pin_gate" flag: registering the range that starts where the latest
 * registered one ends (the next piece of a backup pinned in pieces) does
 * not return before a device-to-host copy into that previous range was
 * queued, or 5 s passed (a deadlock breaker, not a measure). When the copy
 * came first, the registration finished after it started: counted in
 * pin_overlaps - an ordering, not a timing. */
static void pin_gate_wait(uintptr_t a)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    int seen = 0, prev = 0;
    pthread_mutex_lock(&g_lock);
    for (;;) {
        dblock *o = NULL;
        for (dblock *b = g.hosts; b && !o; b = b->next)
            if (b->registered && b->p + b->size == a) o = b;
        prev = o != NULL;
        seen = o && o->copied;
        if (!o || seen || pthread_cond_timedwait(&g_copied_cv, &g_lock, &until) != 0) break;
    }
    pthread_mutex_unlock(&g_lock);
    if (prev && seen) STAT_ADD(pin_overlaps, 1);
}

/* Notes a device-to-host copy queued into registered host memory at p. */
static void note_copy_into(const void *p)
{
    uintptr_t a = (uintptr_t)p;
    pthread_mutex_lock(&g_lock);
    for (dblock *b = g.hosts; b; b = b->next)
        if (b->registered && a >= b->p && a - b->p < b->size && !b->copied) {
            b->copied = 1;
            pthread_cond_broadcast(&g_copied_cv);
        }
    pthread_mutex_unlock(&g_lock);
}

DBL_EXPORT CUresult cuMemHostRegister_v2(void *p, size_t bytes, unsigned int flags)
{
    ENTER("cuMemHostRegister_v2", 1);
    if (!need_ctx("cuMemHostRegister_v2")) return CUDA_ERROR_INVALID_CONTEXT;
    if (!p || bytes == 0 || (flags & ~0xfu)) return CUDA_ERROR_INVALID_VALUE;
    dblock *b = calloc(1, sizeof *b);
    if (!b) return CUDA_ERROR_OUT_OF_MEMORY;
    uintptr_t a = (uintptr_t)p;
    CUresult r = CUDA_SUCCESS;
    pthread_mutex_lock(&g_lock);
    for (dblock *o = g.hosts; o && r == CUDA_SUCCESS; o = o->next)
        if (o->p < a + bytes && a < o->p + o->size) r = CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED;
    int chained = 0;
    if (r == CUDA_SUCCESS) {
        chained = g.last_reg_end == a;
        g.last_reg_end = a + bytes;
        b->p = a;
        b->size = bytes;
        b->registered = 1;
        b->next = g.hosts;
        g.hosts = b;
    }
    pthread_mutex_unlock(&g_lock);
    if (r != CUDA_SUCCESS) {
        violation("cuMemHostRegister_v2(%p, %zu): overlaps memory already pinned", p, bytes);
        free(b);
        return r;
    }
    STAT_ADD(host_registered, 1);
    STAT_ADD(pinned_register_bytes, (long)bytes);
    if (chained && __atomic_load_n(&g.pin_gate, __ATOMIC_RELAXED)) pin_gate_wait(a);
    return CUDA_SUCCESS;
}

DBL_EXPORT CUresult cuMemHostUnregister(void *p)
{
    ENTER("cuMemHostUnregister", 1);
    if (!need_ctx("cuMemHostUnregister")) return CUDA_ERROR_INVALID_CONTEXT;
    pthread_mutex_lock(&g_lock);
    dblock **pp = &g.hosts;
    while (*pp && !((*pp)->p == (uintptr_t)p && (*pp)->registered))
        pp = &(*pp)->next;
    dblock *b = *pp;
    if (b) *pp = b->next;
    pthread_mutex_unlock(&g_lock);
    if (!b) {
        violation("cuMemHostUnregister(%p): not the start of a registered range", p);
        return CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED;
    }
    free(b);
    STAT_ADD(host_registered, -1);
    return CUDA_SUCCESS;
}

DBL_EXPORT CUresult cuMemFreeHost(void *p)
{
    ENTER("cuMemFreeHost", 1);
    if (!need_ctx("cuMemFreeHost")) return CUDA_ERROR_INVALID_CONTEXT;
    pthread_mutex_lock(&g_lock);
    dblock **pp = &g.hosts;
    while (*pp && !((*pp)->p == (uintptr_t)p && !(*pp)->registered))
        pp = &(*pp)->next;
    dblock *b = *pp;
    if (b) *pp = b->next;
    pthread_mutex_unlock(&g_lock);
    if (!b) {
        violation("cuMemFreeHost(%p): not from cuMemHostAlloc", p);
        return CUDA_ERROR_INVALID_VALUE;
    }
    free((void *)b->p);
    free(b);
    STAT_ADD(host_allocs, -1);
    return CUDA_SUCCESS;
}

/* [p, p+n) lies in one pinned block. */
static int is_pinned(const void *p, size_t n)
{
    uintptr_t a = (uintptr_t)p;
    int yes = 0;
    pthread_mutex_lock(&g_lock);
    for (dblock *b = g.hosts; b && !yes; b = b->next)
        yes = a >= b->p && a - b->p < b->size && n <= b->size - (a - b->p);
    pthread_mutex_unlock(&g_lock);
    return yes;
}

/* ---- streams ---- */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

/* The checksum kernel, block by block as it partitions the words. */
static CUresult run_kernel(const dop *op)
{
    const unsigned char *base = (const unsigned char *)(uintptr_t)op->words;
    const uint64_t golden = 0x9e3779b97f4a7c15ULL;
    uint64_t nwords = op->nbytes / 8, stride = (uint64_t)op->grid * VRAM_CK_THREADS;
    uint64_t *part = calloc(op->grid, sizeof *part);
    if (!part) return CUDA_ERROR_OUT_OF_MEMORY;
    for (uint64_t i = 0; i < nwords; i++) {
        uint64_t w;
        memcpy(&w, base + i * 8, 8);
        part[(i % stride) / VRAM_CK_THREADS] += mix64(w + (op->first_word + i) * golden);
    }
    unsigned tail = (unsigned)(op->nbytes % 8);
    if (tail) {
        uint64_t w = 0;
        for (unsigned k = 0; k < tail; k++)
            w |= (uint64_t)base[nwords * 8 + k] << (8 * k);
        part[(nwords % stride) / VRAM_CK_THREADS] += mix64(w + (op->first_word + nwords) * golden);
    }
    memcpy((void *)(uintptr_t)op->partials, part, op->grid * sizeof *part);
    free(part);
    return CUDA_SUCCESS;
}

/* Runs one operation, device memory locked against unmapping meanwhile. */
static CUresult run_op(const dop *op)
{
    CUresult r = CUDA_SUCCESS;
    pthread_rwlock_rdlock(&g_mem);
    switch (op->kind) {
    case OP_H2D:
        if (!accessible_locked(op->dst, op->n)) {
            violation("stream copy to %#lx (%zu bytes): device memory unmapped before the copy "
                      "ran",
                      (unsigned long)op->dst, op->n);
            r = CUDA_ERROR_ILLEGAL_ADDRESS;
        } else {
            memcpy((void *)op->dst, op->staging ? op->staging : (const void *)op->src, op->n);
        }
        break;
    case OP_D2H:
        if (!accessible_locked(op->src, op->n)) {
            violation("stream copy from %#lx (%zu bytes): device memory unmapped before the "
                      "copy ran",
                      (unsigned long)op->src, op->n);
            r = CUDA_ERROR_ILLEGAL_ADDRESS;
        } else {
            memcpy((void *)op->dst, (const void *)op->src, op->n);
        }
        break;
    case OP_EVENT: {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        op->ev->t = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9; /* published by done */
        __atomic_store_n(&op->ev->done, 1, __ATOMIC_RELEASE);
        break;
    }
    case OP_KERNEL:
        if (!accessible_locked((uintptr_t)op->words, (size_t)op->nbytes) ||
            !accessible_locked((uintptr_t)op->partials, op->grid * sizeof(uint64_t))) {
            violation("kernel launch: its memory was unmapped before it ran");
            r = CUDA_ERROR_ILLEGAL_ADDRESS;
        } else {
            r = run_kernel(op);
        }
        break;
    default: break;
    }
    pthread_rwlock_unlock(&g_mem);
    return r;
}

/* Streams run their work only when synchronized. */
static int lazy_mode(void)
{
    return __atomic_load_n(&g.lazy, __ATOMIC_RELAXED);
}

/* A stream's worker thread: runs queued operations in order until stopped. */
static void *stream_main(void *arg)
{
    CUstream s = arg;
    pthread_mutex_lock(&s->m);
    for (;;) {
        while (!s->stop && !(s->head && (!lazy_mode() || s->flush)))
            pthread_cond_wait(&s->cv, &s->m);
        if (!s->head) {
            if (s->stop) break;
            continue;
        }
        dop *op = s->head;
        s->head = op->next;
        if (!s->head) s->tail = NULL;
        s->running = 1;
        pthread_mutex_unlock(&s->m);
        CUresult r = run_op(op);
        free(op->staging);
        free(op);
        pthread_mutex_lock(&s->m);
        s->running = 0;
        s->pending--;
        if (r != CUDA_SUCCESS && s->sticky == CUDA_SUCCESS) s->sticky = r;
        if (!s->head) pthread_cond_broadcast(&s->done);
    }
    pthread_mutex_unlock(&s->m);
    return NULL;
}

/* Waits until everything queued on s has run; returns its sticky error. */
static CUresult stream_drain(CUstream s, int count_sync)
{
    pthread_mutex_lock(&s->m);
    if (count_sync) {
        long cur = __atomic_load_n(&g_stats.max_pending, __ATOMIC_RELAXED);
        while (s->pending > cur &&
               !__atomic_compare_exchange_n(&g_stats.max_pending, &cur, s->pending, 0,
                                            __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
        }
    }
    s->flush++;
    pthread_cond_signal(&s->cv);
    while (s->head || s->running)
        pthread_cond_wait(&s->done, &s->m);
    s->flush--;
    CUresult r = s->sticky;
    pthread_mutex_unlock(&s->m);
    return r;
}

/* s is a stream created here and not destroyed. */
static int stream_live(CUstream s)
{
    int ok = 0;
    pthread_mutex_lock(&g_lock);
    for (CUstream t = g.streams; t && !ok; t = t->next)
        ok = t == s;
    pthread_mutex_unlock(&g_lock);
    return ok && s->magic == STREAM_MAGIC;
}

DBL_EXPORT CUresult cuStreamCreate(CUstream *out, unsigned int flags)
{
    ENTER("cuStreamCreate", 1);
    CUcontext c = need_ctx("cuStreamCreate");
    if (!c) return CUDA_ERROR_INVALID_CONTEXT;
    if (!out || (flags & ~CU_STREAM_NON_BLOCKING)) return CUDA_ERROR_INVALID_VALUE;
    CUstream s = calloc(1, sizeof *s);
    if (!s) return CUDA_ERROR_OUT_OF_MEMORY;
    s->magic = STREAM_MAGIC;
    s->ctx = c;
    pthread_mutex_init(&s->m, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_cond_init(&s->done, NULL);
    if (pthread_create(&s->thr, NULL, stream_main, s) != 0) {
        pthread_mutex_destroy(&s->m);
        pthread_cond_destroy(&s->cv);
        pthread_cond_destroy(&s->done);
        free(s);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    pthread_mutex_lock(&g_lock);
    s->next = g.streams;
    g.streams = s;
    pthread_mutex_unlock(&g_lock);
    STAT_ADD(streams, 1);
    *out = s;
    return CUDA_SUCCESS;
}

DBL_EXPORT CUresult cuStreamDestroy_v2(CUstream s)
{
    ENTER("cuStreamDestroy_v2", 1);
    if (!s || !stream_live(s)) {
        violation("cuStreamDestroy_v2: not a live stream");
        return CUDA_ERROR_INVALID_HANDLE;
    }
    pthread_mutex_lock(&g_lock);
    for (CUstream *pp = &g.streams; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    pthread_mutex_unlock(&g_lock);
    stream_drain(s, 0);
    pthread_mutex_lock(&s->m);
    s->stop = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->m);
    pthread_join(s->thr, NULL);
    pthread_mutex_destroy(&s->m);
    pthread_cond_destroy(&s->cv);
    pthread_cond_destroy(&s->done);
    s->magic = 0;
    free(s);
    STAT_ADD(streams, -1);
    return CUDA_SUCCESS;
}

DBL_EXPORT CUresult cuStreamSynchronize(CUstream s)
{
    ENTER("cuStreamSynchronize", 1);
    STAT_ADD(stream_syncs, 1);
    if (!s) return CUDA_SUCCESS; /* the legacy stream: this double runs its work at once */
    if (!stream_live(s)) {
        violation("cuStreamSynchronize: not a live stream");
        return CUDA_ERROR_INVALID_HANDLE;
    }
    return stream_drain(s, 1);
}

/* A capture is in progress in c that a context-wide wait would break. */
static int capturing(CUcontext c)
{
    pthread_mutex_lock(&g_lock);
    int any = g.capture[c->phys] != 0;
    pthread_mutex_unlock(&g_lock);
    return any || tls_capture == c->phys + 1;
}

DBL_EXPORT CUresult cuStreamIsCapturing(CUstream s, CUstreamCaptureStatus *status)
{
    ENTER("cuStreamIsCapturing", 1);
    CUcontext c = need_ctx("cuStreamIsCapturing");
    if (!c) return CUDA_ERROR_INVALID_CONTEXT;
    if (!status) return CUDA_ERROR_INVALID_VALUE;
    *status = CU_STREAM_CAPTURE_STATUS_NONE;
    if (s == NULL || s == CU_STREAM_LEGACY) {
        pthread_mutex_lock(&g_lock);
        int blocking = g.capture[c->phys] == 1;
        pthread_mutex_unlock(&g_lock);
        return blocking ? CUDA_ERROR_STREAM_CAPTURE_IMPLICIT : CUDA_SUCCESS;
    }
    if (s == CU_STREAM_PER_THREAD) {
        if (tls_capture == c->phys + 1) *status = CU_STREAM_CAPTURE_STATUS_ACTIVE;
        return CUDA_SUCCESS;
    }
    if (!stream_live(s)) return CUDA_ERROR_INVALID_HANDLE;
    return CUDA_SUCCESS; /* vram's own streams never capture */
}

DBL_EXPORT CUresult cuThreadExchangeStreamCaptureMode(CUstreamCaptureMode *mode)
{
    ENTER("cuThreadExchangeStreamCaptureMode", 1);
    if (!mode || *mode < CU_STREAM_CAPTURE_MODE_GLOBAL || *mode > CU_STREAM_CAPTURE_MODE_RELAXED)
        return CUDA_ERROR_INVALID_VALUE;
    int old = tls_mode;
    tls_mode = (int)*mode;
    *mode = (CUstreamCaptureMode)old;
    return CUDA_SUCCESS;
}

DBL_EXPORT CUresult cuCtxSynchronize(void)
{
    ENTER("cuCtxSynchronize", 1);
    CUcontext c = need_ctx("cuCtxSynchronize");
    if (!c) return CUDA_ERROR_INVALID_CONTEXT;
    if (capturing(c)) {
        violation("cuCtxSynchronize(device %d) while a stream of the context is capturing: the "
                  "capture (a CUDA graph being recorded) is invalidated",
                  c->phys);
        STAT_ADD(capture_invalidations, 1);
        return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    }
    CUstream list[64];
    int n = 0;
    pthread_mutex_lock(&g_lock);
    for (CUstream s = g.streams; s && n < 64; s = s->next)
        if (s->ctx == c) list[n++] = s;
    pthread_mutex_unlock(&g_lock);
    CUresult r = CUDA_SUCCESS;
    for (int i = 0; i < n; i++) {
        CUresult ri = stream_drain(list[i], 0);
        if (r == CUDA_SUCCESS) r = ri;
    }
    pthread_rwlock_wrlock(&g_mem);
    user_complete_locked(c->phys, 0, 0, 0); /* the application's streams too */
    pthread_rwlock_unlock(&g_mem);
    pthread_mutex_lock(&g_lock);
    if (c->sticky != CUDA_SUCCESS) r = c->sticky;
    pthread_mutex_unlock(&g_lock);
    return r;
}

/* Checks a stream argument of an async call against the current context. */
static CUresult stream_arg(CUstream s, const char *fn)
{
    CUcontext c = need_ctx(fn);
    if (!c) return CUDA_ERROR_INVALID_CONTEXT;
    if (!s) return CUDA_SUCCESS;
    if (!stream_live(s)) {
        violation("%s: not a live stream", fn);
        return CUDA_ERROR_INVALID_HANDLE;
    }
    if (s->ctx != c) {
        violation("%s: the stream belongs to another context than the current one", fn);
        return CUDA_ERROR_INVALID_CONTEXT;
    }
    return CUDA_SUCCESS;
}

/* accessible_from_locked taking the lock, for the device of the current
 * context (any device when none is current). */
static int dev_range_ok(uintptr_t p, size_t n)
{
    CUcontext c = current();
    pthread_rwlock_rdlock(&g_mem);
    int ok = accessible_from_locked(p, n, c ? c->phys : -1);
    pthread_rwlock_unlock(&g_mem);
    return ok;
}

/* Counts a violation when a copy on a stream of its own touches memory the
 * application's pending work still uses: nothing orders the two, so the
 * copy reads (or overwrites) bytes mid-update - a torn backup. */
static void check_unordered(const char *fn, uintptr_t p, size_t n)
{
    pthread_rwlock_rdlock(&g_mem);
    int busy = user_overlap_locked(p, n) != NULL;
    pthread_rwlock_unlock(&g_mem);
    if (busy)
        violation("%s(%#lx, %zu bytes): work queued on the application's streams still uses "
                  "this memory and nothing orders the copy after it (a torn copy)",
                  fn, (unsigned long)p, n);
}

/* Appends op to s's queue and wakes its worker; s owns op from here. */
static void enqueue(CUstream s, dop *op)
{
    pthread_mutex_lock(&s->m);
    if (s->tail)
        s->tail->next = op;
    else
        s->head = op;
    s->tail = op;
    s->pending++;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->m);
}

/* Queues op on s, or runs it now on the legacy stream (s NULL). */
static CUresult submit(CUstream s, dop *op)
{
    if (s) {
        enqueue(s, op);
        return CUDA_SUCCESS;
    }
    CUresult r = run_op(op);
    free(op->staging);
    free(op);
    return r;
}

/* Body of the host-to-device copies: pinned sources are read when the copy
 * runs, pageable ones are staged before returning. */
static CUresult copy_h2d(CUdeviceptr dst, const void *src, size_t n, CUstream s, const char *fn,
                         int async)
{
    CUresult r = stream_arg(s, fn);
    if (r != CUDA_SUCCESS) return r;
    if (n == 0) return CUDA_SUCCESS;
    if (!src || !dev_range_ok((uintptr_t)dst, n)) {
        violation("%s(%#llx, %zu bytes): destination is not mapped device memory", fn, dst, n);
        return CUDA_ERROR_INVALID_VALUE;
    }
    check_unordered(fn, (uintptr_t)dst, n);
    dop *op = calloc(1, sizeof *op);
    if (!op) return CUDA_ERROR_OUT_OF_MEMORY;
    op->kind = OP_H2D;
    op->dst = (uintptr_t)dst;
    op->src = (uintptr_t)src;
    op->n = n;
    if (async) {
        STAT_ADD(async_copies, 1);
        if (!is_pinned(src, n)) {
            /* the driver stages pageable memory before returning */
            STAT_ADD(pageable_copies, 1);
            if (!(op->staging = malloc(n))) {
                free(op);
                return CUDA_ERROR_OUT_OF_MEMORY;
            }
            memcpy(op->staging, src, n);
        }
        return submit(s, op);
    }
    return submit(NULL, op);
}

/* Body of the device-to-host copies: to pageable memory the call returns
 * only once the bytes have landed. */
static CUresult copy_d2h(void *dst, CUdeviceptr src, size_t n, CUstream s, const char *fn,
                         int async)
{
    CUresult r = stream_arg(s, fn);
    if (r != CUDA_SUCCESS) return r;
    if (n == 0) return CUDA_SUCCESS;
    if (!dst || !dev_range_ok((uintptr_t)src, n)) {
        violation("%s(%#llx, %zu bytes): source is not mapped device memory", fn, src, n);
        return CUDA_ERROR_INVALID_VALUE;
    }
    check_unordered(fn, (uintptr_t)src, n);
    dop *op = calloc(1, sizeof *op);
    if (!op) return CUDA_ERROR_OUT_OF_MEMORY;
    op->kind = OP_D2H;
    op->dst = (uintptr_t)dst;
    op->src = (uintptr_t)src;
    op->n = n;
    if (!async) return submit(NULL, op);
    STAT_ADD(async_copies, 1);
    note_copy_into(dst);
    if (is_pinned(dst, n) || !s) return submit(s, op);
    /* to pageable memory the call returns once the bytes have landed */
    STAT_ADD(pageable_copies, 1);
    enqueue(s, op);
    return stream_drain(s, 0);
}

DBL_EXPORT CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t n, CUstream s)
{
    ENTER("cuMemcpyHtoDAsync_v2", 1);
    return copy_h2d(dst, src, n, s, "cuMemcpyHtoDAsync_v2", 1);
}

DBL_EXPORT CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t n, CUstream s)
{
    ENTER("cuMemcpyDtoHAsync_v2", 1);
    return copy_d2h(dst, src, n, s, "cuMemcpyDtoHAsync_v2", 1);
}

DBL_EXPORT CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t n)
{
    ENTER("cuMemcpyHtoD_v2", 1);
    return copy_h2d(dst, src, n, NULL, "cuMemcpyHtoD_v2", 0);
}

DBL_EXPORT CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n)
{
    ENTER("cuMemcpyDtoH_v2", 1);
    return copy_d2h(dst, src, n, NULL, "cuMemcpyDtoH_v2", 0);
}

/* ---- events (timing only: recorded when the stream reaches them) ---- */

DBL_EXPORT CUresult cuEventCreate(CUevent *ev, unsigned int flags)
{
    ENTER("cuEventCreate", 1);
    if (!need_ctx("cuEventCreate")) return CUDA_ERROR_INVALID_CONTEXT;
    if (!ev || flags > 0xf) return CUDA_ERROR_INVALID_VALUE;
    CUevent e = calloc(1, sizeof *e);
    if (!e) return CUDA_ERROR_OUT_OF_MEMORY;
    e->magic = EVENT_MAGIC;
    *ev = e;
    return CUDA_SUCCESS;
}

DBL_EXPORT CUresult cuEventRecord(CUevent ev, CUstream s)
{
    ENTER("cuEventRecord", 1);
    CUresult r = stream_arg(s, "cuEventRecord");
    if (r != CUDA_SUCCESS) return r;
    if (!ev || ev->magic != EVENT_MAGIC) return CUDA_ERROR_INVALID_HANDLE;
    dop *op = calloc(1, sizeof *op);
    if (!op) return CUDA_ERROR_OUT_OF_MEMORY;
    op->kind = OP_EVENT;
    op->ev = ev;
    __atomic_store_n(&ev->done, 0, __ATOMIC_RELAXED);
    ev->stream = s;
    return submit(s, op);
}

DBL_EXPORT CUresult cuEventSynchronize(CUevent ev)
{
    ENTER("cuEventSynchronize", 1);
    if (!ev || ev->magic != EVENT_MAGIC) return CUDA_ERROR_INVALID_HANDLE;
    if (ev->stream && stream_live(ev->stream)) return stream_drain(ev->stream, 0);
    return CUDA_SUCCESS;
}

DBL_EXPORT CUresult cuEventElapsedTime(float *ms, CUevent a, CUevent b)
{
    ENTER("cuEventElapsedTime", 1);
    if (!ms || !a || !b || a->magic != EVENT_MAGIC || b->magic != EVENT_MAGIC)
        return CUDA_ERROR_INVALID_HANDLE;
    if (!__atomic_load_n(&a->done, __ATOMIC_ACQUIRE) ||
        !__atomic_load_n(&b->done, __ATOMIC_ACQUIRE))
        return CUDA_ERROR_NOT_READY;
    *ms = (float)((b->t - a->t) * 1e3);
    return CUDA_SUCCESS;
}

DBL_EXPORT CUresult cuEventDestroy_v2(CUevent ev)
{
    ENTER("cuEventDestroy_v2", 1);
    if (!ev || ev->magic != EVENT_MAGIC) return CUDA_ERROR_INVALID_HANDLE;
    if (ev->stream && stream_live(ev->stream)) stream_drain(ev->stream, 0);
    ev->magic = 0;
    free(ev);
    return CUDA_SUCCESS;
}

/* ---- modules and the checksum kernel ---- */

/* Checks the PTX the way a JIT would for what this double needs: its ISA
 * version, and the checksum entry with four .u64 parameters. */
static CUresult parse_ptx(const char *ptx, int *has_ck)
{
    *has_ck = 0;
    const char *v = strstr(ptx, "\n.version ");
    int maj, min;
    if (!v || sscanf(v + 10, "%d.%d", &maj, &min) != 2 || !strstr(ptx, "\n.target sm_"))
        return CUDA_ERROR_INVALID_PTX;
    pthread_mutex_lock(&g_lock);
    int too_new = maj > g.isa_major || (maj == g.isa_major && min > g.isa_minor);
    pthread_mutex_unlock(&g_lock);
    if (too_new) return CUDA_ERROR_UNSUPPORTED_PTX_VERSION;
    const char *e = strstr(ptx, ".entry " VRAM_CK_KERNEL_NAME "(");
    if (!e) return CUDA_SUCCESS;
    const char *close = strchr(e, ')');
    if (!close) return CUDA_ERROR_INVALID_PTX;
    int params = 0;
    for (const char *p = e; (p = strstr(p, ".param ")) && p < close; p += 7) {
        if (strncmp(p, ".param .u64 ", 12) != 0) return CUDA_ERROR_INVALID_PTX;
        params++;
    }
    if (params != 4) {
        fprintf(stderr, "libcuda_double: %s has %d parameters, the double expects 4\n",
                VRAM_CK_KERNEL_NAME, params);
        return CUDA_ERROR_INVALID_PTX;
    }
    *has_ck = 1;
    return CUDA_SUCCESS;
}

DBL_EXPORT CUresult cuModuleLoadData(CUmodule *module, const void *image)
{
    ENTER("cuModuleLoadData", 1);
    CUcontext c = need_ctx("cuModuleLoadData");
    if (!c) return CUDA_ERROR_INVALID_CONTEXT;
    if (!module || !image) return CUDA_ERROR_INVALID_VALUE;
    int has_ck;
    CUresult r = parse_ptx(image, &has_ck);
    if (r != CUDA_SUCCESS) return r;
    int ms = __atomic_load_n(&g.jit_ms, __ATOMIC_RELAXED);
    if (ms > 0) usleep((useconds_t)ms * 1000);
    CUmodule m = calloc(1, sizeof *m);
    if (!m) return CUDA_ERROR_OUT_OF_MEMORY;
    m->magic = MOD_MAGIC;
    m->ctx = c;
    m->has_ck = has_ck;
    m->fn.magic = FUNC_MAGIC;
    m->fn.mod = m;
    pthread_mutex_lock(&g_lock);
    m->next = g.modules;
    g.modules = m;
    pthread_mutex_unlock(&g_lock);
    STAT_ADD(modules, 1);
    *module = m;
    return CUDA_SUCCESS;
}

/* m is a module loaded here and not unloaded. */
static int module_live(CUmodule m)
{
    int ok = 0;
    pthread_mutex_lock(&g_lock);
    for (CUmodule t = g.modules; t && !ok; t = t->next)
        ok = t == m;
    pthread_mutex_unlock(&g_lock);
    return ok;
}

DBL_EXPORT CUresult cuModuleUnload(CUmodule m)
{
    ENTER("cuModuleUnload", 1);
    pthread_mutex_lock(&g_lock);
    CUmodule *pp = &g.modules;
    while (*pp && *pp != m)
        pp = &(*pp)->next;
    CUmodule found = *pp;
    if (found) *pp = found->next;
    pthread_mutex_unlock(&g_lock);
    if (!found) {
        violation("cuModuleUnload: not a loaded module");
        return CUDA_ERROR_INVALID_HANDLE;
    }
    found->magic = 0;
    free(found);
    STAT_ADD(modules, -1);
    return CUDA_SUCCESS;
}

DBL_EXPORT CUresult cuModuleGetFunction(CUfunction *fn, CUmodule m, const char *name)
{
    ENTER("cuModuleGetFunction", 1);
    if (!fn || !name) return CUDA_ERROR_INVALID_VALUE;
    if (!module_live(m)) return CUDA_ERROR_INVALID_HANDLE;
    if (!m->has_ck || strcmp(name, VRAM_CK_KERNEL_NAME) != 0) return CUDA_ERROR_NOT_FOUND;
    *fn = &m->fn;
    return CUDA_SUCCESS;
}

DBL_EXPORT CUresult cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
                                   unsigned int bx, unsigned int by, unsigned int bz,
                                   unsigned int shared, CUstream s, void **params, void **extra)
{
    ENTER("cuLaunchKernel", 1);
    CUresult r = stream_arg(s, "cuLaunchKernel");
    if (r != CUDA_SUCCESS) return r;
    if (!f || f->magic != FUNC_MAGIC || !module_live(f->mod)) return CUDA_ERROR_INVALID_HANDLE;
    if (f->mod->ctx != current()) {
        violation("cuLaunchKernel: the function's module belongs to another context");
        return CUDA_ERROR_INVALID_CONTEXT;
    }
    if (gx == 0 || gx > VRAM_CK_MAX_BLOCKS || gy != 1 || gz != 1 || bx != VRAM_CK_THREADS ||
        by != 1 || bz != 1 || shared != 0 || extra || !params) {
        violation("cuLaunchKernel(%s): grid %ux%ux%u, block %ux%ux%u, %u shared bytes, params "
                  "%p, extra %p: outside the kernel's contract",
                  VRAM_CK_KERNEL_NAME, gx, gy, gz, bx, by, bz, shared, (void *)params,
                  (void *)extra);
        return CUDA_ERROR_INVALID_VALUE;
    }
    dop *op = calloc(1, sizeof *op);
    if (!op) return CUDA_ERROR_OUT_OF_MEMORY;
    op->kind = OP_KERNEL;
    memcpy(&op->words, params[0], 8);
    memcpy(&op->nbytes, params[1], 8);
    memcpy(&op->first_word, params[2], 8);
    memcpy(&op->partials, params[3], 8);
    op->grid = gx;
    if (!dev_range_ok((uintptr_t)op->words, (size_t)op->nbytes) ||
        !dev_range_ok((uintptr_t)op->partials, gx * sizeof(uint64_t))) {
        violation("cuLaunchKernel(%s): words %#llx+%llu or partials %#llx are not mapped "
                  "device memory",
                  VRAM_CK_KERNEL_NAME, op->words, op->nbytes, op->partials);
        free(op);
        return CUDA_ERROR_INVALID_VALUE;
    }
    STAT_ADD(launches, 1);
    return submit(s, op);
}

/* ---- control API for tests ---- */

/* Control API for tests: see cuda_double.h. */
DBL_EXPORT int vram_double_configure(int devices, unsigned long long memory)
{
    pthread_once(&g_once, load_env_once);
    int rc = 0;
    pthread_rwlock_wrlock(&g_mem);
    pthread_mutex_lock(&g_lock);
    long retained = 0;
    for (int i = 0; i < MAXDEV; i++)
        retained += g.ctx[i].retain;
    if (retained || g.allocs || g.resv || g.devblocks || g.hosts || g.streams || g.modules) {
        rc = -1;
    } else if (devices < 0) {
        read_env_locked();
    } else {
        g.nphys = devices > MAXDEV ? MAXDEV : devices;
        if (memory) g.memory = memory;
        for (int i = 0; i < MAXDEV; i++)
            g.ctx[i].app_active = 0;
        g.inited = 0;
        g.nvis = 0;
    }
    pthread_mutex_unlock(&g_lock);
    pthread_rwlock_unlock(&g_mem);
    return rc;
}

DBL_EXPORT int vram_double_set_fail(const char *spec)
{
    pthread_once(&g_once, load_env_once);
    pthread_mutex_lock(&g_lock);
    int rc = set_fails_locked(spec);
    pthread_mutex_unlock(&g_lock);
    return rc;
}

DBL_EXPORT void vram_double_set_flag(const char *name, int value)
{
    pthread_once(&g_once, load_env_once);
    if (strcmp(name, "lazy") == 0) __atomic_store_n(&g.lazy, value, __ATOMIC_RELAXED);
    if (strcmp(name, "quiet") == 0) __atomic_store_n(&g.quiet, value, __ATOMIC_RELAXED);
    if (strcmp(name, "poison") == 0) __atomic_store_n(&g.poison, value, __ATOMIC_RELAXED);
    if (strcmp(name, "jit_ms") == 0) __atomic_store_n(&g.jit_ms, value, __ATOMIC_RELAXED);
    if (strcmp(name, "mig") == 0) __atomic_store_n(&g.mig_mask, value, __ATOMIC_RELAXED);
    if (strcmp(name, "peer") == 0) __atomic_store_n(&g.no_peer, !value, __ATOMIC_RELAXED);
    if (strcmp(name, "pin_gate") == 0) __atomic_store_n(&g.pin_gate, value, __ATOMIC_RELAXED);
    if (strcmp(name, "vmm") == 0) {
        pthread_mutex_lock(&g_lock);
        g.vmm = value;
        pthread_mutex_unlock(&g_lock);
    }
}

DBL_EXPORT long vram_double_calls(const char *fn)
{
    long n = 0;
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i < g.ncalls; i++)
        if (strcmp(g.calls[i].name, fn) == 0) n = g.calls[i].n;
    pthread_mutex_unlock(&g_lock);
    return n;
}

DBL_EXPORT void vram_double_get_stats(vram_double_stats *out)
{
    pthread_rwlock_rdlock(&g_mem);
    long *src = (long *)&g_stats, *dst = (long *)out;
    size_t nlong = offsetof(vram_double_stats, used) / sizeof(long);
    for (size_t i = 0; i < nlong; i++)
        dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
    for (int i = 0; i < MAXDEV; i++)
        out->used[i] = g.used[i];
    pthread_rwlock_unlock(&g_mem);
}

DBL_EXPORT int vram_double_ctx_depth(void)
{
    return tls_depth;
}

DBL_EXPORT int vram_double_accessible(unsigned long long addr)
{
    pthread_rwlock_rdlock(&g_mem);
    int r = accessible_locked((uintptr_t)addr, 1) ? 1
            : resv_containing((uintptr_t)addr, 1) ? 0
                                                  : -1;
    pthread_rwlock_unlock(&g_mem);
    return r;
}

DBL_EXPORT int vram_double_access(unsigned long long addr, int phys)
{
    pthread_rwlock_rdlock(&g_mem);
    dmap *m = map_containing((uintptr_t)addr);
    int r = !m ? -1 : phys >= 0 && phys < MAXDEV && m->rw && (m->access >> phys & 1u);
    pthread_rwlock_unlock(&g_mem);
    return r;
}

/* Queues the application's work on physical device phys (the owner of the
 * mapping when phys < 0) over [addr, addr+n). */
static int user_work_on(int phys, unsigned long long addr, unsigned long long n)
{
    pthread_once(&g_once, load_env_once);
    duser *u = calloc(1, sizeof *u);
    if (!u || n == 0) {
        free(u);
        return -1;
    }
    pthread_rwlock_wrlock(&g_mem);
    dmap *m = map_containing((uintptr_t)addr);
    if (m && phys < 0) phys = m->a->phys;
    int ok = m && accessible_from_locked((uintptr_t)addr, (size_t)n, phys);
    if (!ok && m && m->rw) {
        /* a kernel on a device without access faults: sticky, as on a GPU */
        violation("device %d touched %#llx (%llu bytes), memory of device %d it has no access "
                  "to (cuMemSetAccess); its context now has CUDA_ERROR_ILLEGAL_ADDRESS",
                  phys, addr, n, m->a->phys);
        pthread_mutex_lock(&g_lock);
        if (g.ctx[phys].sticky == CUDA_SUCCESS) g.ctx[phys].sticky = CUDA_ERROR_ILLEGAL_ADDRESS;
        pthread_mutex_unlock(&g_lock);
    }
    if (ok) {
        pthread_mutex_lock(&g_lock);
        g.ctx[phys].app_active = 1; /* its primary context is in use by the application */
        pthread_mutex_unlock(&g_lock);
        u->phys = phys;
        u->base = (uintptr_t)addr;
        u->n = (size_t)n;
        u->next = g.user;
        g.user = u;
        STAT_ADD(user_pending, 1);
    }
    pthread_rwlock_unlock(&g_mem);
    if (!ok) free(u);
    return ok ? 0 : -1;
}

DBL_EXPORT int vram_double_user_work(unsigned long long addr, unsigned long long n)
{
    return user_work_on(-1, addr, n);
}

DBL_EXPORT int vram_double_peer_work(int phys, unsigned long long addr, unsigned long long n)
{
    if (phys < 0 || phys >= MAXDEV) return -1;
    return user_work_on(phys, addr, n);
}

DBL_EXPORT long vram_double_user_finish(void)
{
    pthread_once(&g_once, load_env_once);
    pthread_rwlock_wrlock(&g_mem);
    long k = user_complete_locked(-1, 0, 0, 0);
    pthread_rwlock_unlock(&g_mem);
    return k;
}

DBL_EXPORT int vram_double_set_sticky(int phys, int code)
{
    pthread_once(&g_once, load_env_once);
    if (phys < 0 || phys >= MAXDEV) return -1;
    pthread_mutex_lock(&g_lock);
    g.ctx[phys].sticky = code;
    pthread_mutex_unlock(&g_lock);
    return 0;
}

DBL_EXPORT int vram_double_set_capture(int phys, int how)
{
    pthread_once(&g_once, load_env_once);
    if (phys < 0 || phys >= MAXDEV || how < 0 || how > 4) return -1;
    pthread_mutex_lock(&g_lock);
    g.capture[phys] = how == 1 || how == 3 || how == 4 ? how : 0;
    pthread_mutex_unlock(&g_lock);
    tls_capture = how == 2 ? phys + 1 : 0;
    return 0;
}

DBL_EXPORT int vram_double_set_unusable(int phys, int code)
{
    pthread_once(&g_once, load_env_once);
    if (phys < 0 || phys >= MAXDEV) return -1;
    pthread_mutex_lock(&g_lock);
    g.ctx[phys].unusable = code;
    pthread_mutex_unlock(&g_lock);
    return 0;
}
