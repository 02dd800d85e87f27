/* bench_gpu.c - GPU benchmark: raw pinned cuMemcpy vs vram offload/restore, latency, ratios. */
#include <dlfcn.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend/backend.h"
#include "backend/cuda_driver.h"
#include "backend/cuda_pinned.h"
#include "base/base.h"
#include "vram.h"
#include "vram_server.h"

/*
 * Usage: bench_gpu [--sizes 1G,4G,16G] [--raw 512M] [--pin 16G] [--lru 20G]
 *                  [--oom 4G] [--cycles 4] [--hot 1000] [--device N]
 *                  [--results FILE]
 *        bench_gpu --hog BYTES (a child holding device memory; see 3)
 *
 * 1. Driver: every entry point of the backend's binding table, bound or not.
 *    Raw copies, as nvbandwidth measures them: events around
 *    cuMemcpy*Async of --raw bytes on a non-blocking stream between
 *    cuMemHostAlloc'd memory and a cuMemAlloc_v2 block, median of 7 after a
 *    warm-up, each way; and from/to pageable (malloc) memory, median of 3.
 *    Pinning --pin bytes by cuMemHostAlloc, by mmap + one-thread touch +
 *    cuMemHostRegister, and vram's way (cuda_pinned.c).
 * 2. vram: a manager on the cuda backend; per size a synthetic model is
 *    loaded, checksummed on the GPU (the PTX kernel) and compared with the
 *    host's value, acquired --hot times while resident (latency), then
 *    offloaded and restored --cycles times: the first offload (which pins
 *    the backup while copying; its time and its pinning seconds reported)
 *    apart from the steady ones, half the restores from another
 *    thread, the device pointer checked after each, the kernel's checksum
 *    after the cycles; ratios to the raw copies of 1. Sizes that do not fit
 *    the device or the host are skipped with the reason.
 * 3. Eviction: three --lru models under a budget for two and a half (the
 *    least recently used goes). Out of memory: a child (--hog) holds all but
 *    half of --oom of the device; an acquire of --oom must fail with
 *    VRAM_ENOMEM and succeed once the child exits (real GPUs only).
 * Every figure is printed and written as key=value to --results. Exit 0
 * when every step that ran succeeded and every checksum matched, else 1.
 * On the driver test double (no GPU) the output says so on every line that
 * matters: its numbers are host memcpy speeds.
 */

static FILE *g_results;
static int g_failures;
static int g_double;

/* One figure: printed, and written as key=value to the results file. */
static void result(const char *key, double v, const char *unit)
{
    printf("  %-44s %14.3f %s\n", key, v, unit);
    if (g_results) fprintf(g_results, "%s=%.6f\n", key, v);
}

/* One text fact, as result(). */
static void result_text(const char *key, const char *v)
{
    printf("  %-44s %s\n", key, v);
    if (g_results) fprintf(g_results, "%s=%s\n", key, v);
}

/* A failed step or check: printed, recorded, and the exit status becomes 1. */
static void failure(const char *fmt, ...) VRAM_PRINTF(1, 2);
static void failure(const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    printf("  FAIL: %s\n", line);
    if (g_results) fprintf(g_results, "failure=%s\n", line);
    g_failures++;
}

/* MemAvailable of /proc/meminfo in bytes, 0 when unknown. */
static uint64_t mem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    unsigned long long kb = 0;
    if (!f) return 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
    fclose(f);
    return (uint64_t)kb * 1024;
}

/* qsort order of doubles, ascending. */
static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* 1073741824 -> "1G", 67108864 -> "64M", else the byte count. */
static void fmt_size(uint64_t b, char *out, size_t len)
{
    if (b >= (1ULL << 30) && b % (1ULL << 30) == 0)
        snprintf(out, len, "%lluG", (unsigned long long)(b >> 30));
    else if (b >= (1ULL << 20) && b % (1ULL << 20) == 0)
        snprintf(out, len, "%lluM", (unsigned long long)(b >> 20));
    else
        snprintf(out, len, "%llu", (unsigned long long)b);
}

/* ---- 1. raw driver bandwidth, as nvbandwidth measures it ---- */

typedef struct raw_api {
    void *lib;
    CUdevice dev;
    CUcontext ctx;
    vram_cuInit_fn cuInit;
    vram_cuDeviceGet_fn cuDeviceGet;
    vram_cuDeviceGetName_fn cuDeviceGetName;
    vram_cuDevicePrimaryCtxRetain_fn cuDevicePrimaryCtxRetain;
    vram_cuDevicePrimaryCtxRelease_fn cuDevicePrimaryCtxRelease;
    vram_cuCtxPushCurrent_fn cuCtxPushCurrent;
    vram_cuCtxPopCurrent_fn cuCtxPopCurrent;
    vram_cuMemGetInfo_fn cuMemGetInfo;
    vram_cuMemAlloc_fn cuMemAlloc;
    vram_cuMemFree_fn cuMemFree;
    vram_cuMemHostAlloc_fn cuMemHostAlloc;
    vram_cuMemFreeHost_fn cuMemFreeHost;
    vram_cuMemHostRegister_fn cuMemHostRegister;
    vram_cuMemHostUnregister_fn cuMemHostUnregister;
    vram_cuMemcpyHtoD_fn cuMemcpyHtoD;
    vram_cuMemcpyDtoH_fn cuMemcpyDtoH;
    vram_cuMemcpyHtoDAsync_fn cuMemcpyHtoDAsync;
    vram_cuMemcpyDtoHAsync_fn cuMemcpyDtoHAsync;
    vram_cuStreamCreate_fn cuStreamCreate;
    vram_cuStreamDestroy_fn cuStreamDestroy;
    vram_cuEventCreate_fn cuEventCreate;
    vram_cuEventRecord_fn cuEventRecord;
    vram_cuEventSynchronize_fn cuEventSynchronize;
    vram_cuEventElapsedTime_fn cuEventElapsedTime;
    vram_cuEventDestroy_fn cuEventDestroy;
    vram_cuDriverGetVersion_fn cuDriverGetVersion;
} raw_api;

/* Binds the raw benchmark's entry points; -1 (printed) when one is missing. */
static int raw_bind(void *lib, raw_api *a)
{
#define RAW_SYM(f, n)                                                                              \
    {                                                                                              \
        n, offsetof(raw_api, f)                                                                    \
    }
    static const struct {
        const char *name;
        size_t off;
    } syms[] = {
        RAW_SYM(cuInit, "cuInit"),
        RAW_SYM(cuDeviceGet, "cuDeviceGet"),
        RAW_SYM(cuDeviceGetName, "cuDeviceGetName"),
        RAW_SYM(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain"),
        RAW_SYM(cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2"),
        RAW_SYM(cuCtxPushCurrent, "cuCtxPushCurrent_v2"),
        RAW_SYM(cuCtxPopCurrent, "cuCtxPopCurrent_v2"),
        RAW_SYM(cuMemGetInfo, "cuMemGetInfo_v2"),
        RAW_SYM(cuMemAlloc, "cuMemAlloc_v2"),
        RAW_SYM(cuMemFree, "cuMemFree_v2"),
        RAW_SYM(cuMemHostAlloc, "cuMemHostAlloc"),
        RAW_SYM(cuMemFreeHost, "cuMemFreeHost"),
        RAW_SYM(cuMemHostRegister, "cuMemHostRegister_v2"),
        RAW_SYM(cuMemHostUnregister, "cuMemHostUnregister"),
        RAW_SYM(cuMemcpyHtoD, "cuMemcpyHtoD_v2"),
        RAW_SYM(cuMemcpyDtoH, "cuMemcpyDtoH_v2"),
        RAW_SYM(cuMemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2"),
        RAW_SYM(cuMemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2"),
        RAW_SYM(cuStreamCreate, "cuStreamCreate"),
        RAW_SYM(cuStreamDestroy, "cuStreamDestroy_v2"),
        RAW_SYM(cuEventCreate, "cuEventCreate"),
        RAW_SYM(cuEventRecord, "cuEventRecord"),
        RAW_SYM(cuEventSynchronize, "cuEventSynchronize"),
        RAW_SYM(cuEventElapsedTime, "cuEventElapsedTime"),
        RAW_SYM(cuEventDestroy, "cuEventDestroy_v2"),
        RAW_SYM(cuDriverGetVersion, "cuDriverGetVersion"),
    };
#undef RAW_SYM
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
        void *p = dlsym(lib, syms[i].name);
        if (!p) {
            fprintf(stderr, "bench_gpu: driver lacks %s\n", syms[i].name);
            return -1;
        }
        memcpy((char *)a + syms[i].off, &p, sizeof p);
    }
    return 0;
}

/* Opens the driver, makes device dev's primary context current and prints
 * the device line; *free_out gets its free memory. 0, or -1 (recorded). */
static int raw_open(raw_api *a, const char *lib, int dev, uint64_t *free_out)
{
    memset(a, 0, sizeof *a);
    a->lib = dlopen(lib, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (!a->lib) {
        failure("cannot load %s: %s", lib, dlerror());
        return -1;
    }
    g_double = dlsym(a->lib, "vram_double_configure") != NULL;
    if (raw_bind(a->lib, a)) {
        failure("%s is not a usable CUDA driver", lib);
        return -1;
    }
    CUresult r = a->cuInit(0);
    if (r == CUDA_SUCCESS) r = a->cuDeviceGet(&a->dev, dev);
    if (r == CUDA_SUCCESS) r = a->cuDevicePrimaryCtxRetain(&a->ctx, a->dev);
    if (r != CUDA_SUCCESS) {
        failure("raw: cuInit/cuDeviceGet/cuDevicePrimaryCtxRetain(device %d): CUDA error %d", dev,
                r);
        a->ctx = NULL;
        return -1;
    }
    a->cuCtxPushCurrent(a->ctx);
    char name[128] = "?", line[256];
    a->cuDeviceGetName(name, sizeof name, a->dev);
    int ver = 0;
    a->cuDriverGetVersion(&ver);
    size_t fr = 0, tot = 0;
    a->cuMemGetInfo(&fr, &tot);
    *free_out = fr;
    snprintf(line, sizeof line, "%s (driver API %d.%d, %.1f GiB free of %.1f)%s", name, ver / 1000,
             ver % 1000 / 10, (double)fr / (1 << 30), (double)tot / (1 << 30),
             g_double ? " [TEST DOUBLE: no GPU]" : "");
    result_text("device", line);
    return 0;
}

static void raw_close(raw_api *a)
{
    if (a->ctx) {
        CUcontext popped;
        a->cuCtxPopCurrent(&popped);
        a->cuDevicePrimaryCtxRelease(a->dev);
    }
    if (a->lib) dlclose(a->lib);
}

#define RAW_REPS 7 /* timed copies per direction, after one warm-up */

/* Median GB/s of RAW_REPS async copies of n bytes on a non-blocking stream,
 * each timed by events around it (nvbandwidth's way); 0 on failure. */
static double raw_timed(raw_api *a, CUdeviceptr dp, void *hp, size_t n, int to_device)
{
    CUstream s = NULL;
    CUevent e0 = NULL, e1 = NULL;
    double g[RAW_REPS];
    int k = 0;
    if (a->cuStreamCreate(&s, CU_STREAM_NON_BLOCKING) != CUDA_SUCCESS ||
        a->cuEventCreate(&e0, 0) != CUDA_SUCCESS || a->cuEventCreate(&e1, 0) != CUDA_SUCCESS)
        goto out;
    for (int rep = 0; rep <= RAW_REPS; rep++) {
        CUresult r = a->cuEventRecord(e0, s);
        if (r == CUDA_SUCCESS)
            r = to_device ? a->cuMemcpyHtoDAsync(dp, hp, n, s) : a->cuMemcpyDtoHAsync(hp, dp, n, s);
        if (r == CUDA_SUCCESS) r = a->cuEventRecord(e1, s);
        if (r == CUDA_SUCCESS) r = a->cuEventSynchronize(e1);
        float ms = 0;
        if (r == CUDA_SUCCESS) r = a->cuEventElapsedTime(&ms, e0, e1);
        if (r != CUDA_SUCCESS) {
            failure("raw: timed %s copy: CUDA error %d", to_device ? "H2D" : "D2H", r);
            break;
        }
        if (rep > 0 && ms > 0) g[k++] = vram__gbps(n, ms / 1e3);
    }
out:
    if (e0) a->cuEventDestroy(e0);
    if (e1) a->cuEventDestroy(e1);
    if (s) a->cuStreamDestroy(s);
    if (k == 0) return 0;
    qsort(g, (size_t)k, sizeof g[0], cmp_double);
    return g[k / 2];
}

/* Median GB/s of 3 synchronous copies from / to pageable (malloc) memory. */
static double raw_pageable(raw_api *a, CUdeviceptr dp, size_t n, int to_device)
{
    unsigned char *p = malloc(n);
    if (!p) return 0;
    memset(p, 0x5a, n);
    double g[3];
    for (int rep = 0; rep < 3; rep++) {
        double t0 = vram__now();
        CUresult r = to_device ? a->cuMemcpyHtoD(dp, p, n) : a->cuMemcpyDtoH(p, dp, n);
        g[rep] = r == CUDA_SUCCESS ? vram__gbps(n, vram__now() - t0) : 0;
    }
    free(p);
    qsort(g, 3, sizeof g[0], cmp_double);
    return g[1];
}

/* The pinned baselines (pinned and pageable, each way) over bytes-sized
 * buffers (halved while refused). 0 on success. */
static int raw_bandwidth(raw_api *a, uint64_t bytes, double *h2d, double *d2h)
{
    CUdeviceptr dp = 0;
    void *hp = NULL;
    while (bytes >= (32ULL << 20)) {
        if (a->cuMemAlloc(&dp, bytes) == CUDA_SUCCESS) {
            if (a->cuMemHostAlloc(&hp, bytes, CU_MEMHOSTALLOC_PORTABLE) == CUDA_SUCCESS) break;
            a->cuMemFree(dp);
            dp = 0;
        }
        bytes /= 2;
    }
    if (!dp) {
        failure("raw: no room for a 32 MiB device block and pinned buffer");
        return -1;
    }
    memset(hp, 0x3c, bytes);
    result("raw_bytes", (double)bytes, "bytes per copy");
    *h2d = raw_timed(a, dp, hp, bytes, 1);
    *d2h = raw_timed(a, dp, hp, bytes, 0);
    result("raw_h2d_gbps", *h2d, "GB/s (pinned, events around cuMemcpyHtoDAsync, median of 7)");
    result("raw_d2h_gbps", *d2h, "GB/s (pinned, events around cuMemcpyDtoHAsync, median of 7)");
    result("raw_pageable_h2d_gbps", raw_pageable(a, dp, bytes, 1), "GB/s (malloc'd, median of 3)");
    result("raw_pageable_d2h_gbps", raw_pageable(a, dp, bytes, 0), "GB/s (malloc'd, median of 3)");
    a->cuMemFree(dp);
    a->cuMemFreeHost(hp);
    return *h2d > 0 && *d2h > 0 ? 0 : -1;
}

/* ---- 1b. what pinning a backup costs, by each method ---- */

static int pin_by_register(void *user, void *p, size_t n)
{
    raw_api *a = user;
    CUresult r = a->cuMemHostRegister(p, n, CU_MEMHOSTREGISTER_PORTABLE);
    return r == CUDA_SUCCESS ? 0 : vram__errorf(VRAM_EHOSTMEM, "cuMemHostRegister: %d", r);
}

static void unpin_by_register(void *user, void *p, size_t n)
{
    (void)n;
    ((raw_api *)user)->cuMemHostUnregister(p);
}

/* Seconds to pin bytes: one cuMemHostAlloc (plus touching it, as a backup
 * copy would), mmap + one-thread touch + cuMemHostRegister, and vram's way
 * (cuda_pinned.c: huge pages, parallel first touch, register). */
static void raw_pinning(raw_api *a, uint64_t bytes)
{
    char key[96], sz[32];
    fmt_size(bytes, sz, sizeof sz);
    uint64_t avail = mem_available();
    if (avail && bytes > avail / 2) {
        snprintf(key, sizeof key, "skipped: %s is over half of the %.1f GiB available", sz,
                 (double)avail / (1 << 30));
        result_text("pin", key);
        return;
    }
    void *p = NULL;
    double t0 = vram__now();
    CUresult r = a->cuMemHostAlloc(&p, bytes, CU_MEMHOSTALLOC_PORTABLE);
    if (r == CUDA_SUCCESS) memset(p, 0, bytes);
    double t_alloc = vram__now() - t0;
    if (r == CUDA_SUCCESS) a->cuMemFreeHost(p);
    snprintf(key, sizeof key, "pin_%s_cuMemHostAlloc_seconds", sz);
    result(key, r == CUDA_SUCCESS ? t_alloc : -1, "s (one call, then written once)");

    t0 = vram__now();
    p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    r = p == MAP_FAILED ? CUDA_ERROR_OUT_OF_MEMORY : CUDA_SUCCESS;
    if (r == CUDA_SUCCESS) memset(p, 0, bytes);
    if (r == CUDA_SUCCESS) r = a->cuMemHostRegister(p, bytes, CU_MEMHOSTREGISTER_PORTABLE);
    double t_reg = vram__now() - t0;
    if (r == CUDA_SUCCESS) a->cuMemHostUnregister(p);
    if (p != MAP_FAILED) munmap(p, bytes);
    snprintf(key, sizeof key, "pin_%s_mmap_register_seconds", sz);
    result(key, r == CUDA_SUCCESS ? t_reg : -1, "s (mmap, one-thread touch, cuMemHostRegister)");

    cuda_pin_ops ops = {pin_by_register, unpin_by_register, a};
    cuda_pinned pp;
    vram__pinned_init(&pp, &ops, 0);
    double secs = 0;
    int rc = vram__pinned_get(&pp, bytes, &p, &secs);
    if (rc == 0) vram__pinned_put(&pp, p);
    vram__pinned_destroy(&pp);
    snprintf(key, sizeof key, "pin_%s_vram_seconds", sz);
    result(key, rc == 0 ? secs : -1, "s (vram: huge pages, parallel touch, register)");
}

/* ---- 2. vram through its public API ---- */

/* vram_checksum of synthetic:SIZE:SEED, computed on the host in pieces. */
static uint64_t expected_checksum(uint64_t seed, uint64_t bytes)
{
    const size_t piece = 64u << 20;
    unsigned char *buf = malloc(piece);
    if (!buf) return 0;
    uint64_t sum = 0;
    for (uint64_t off = 0; off < bytes; off += piece) {
        size_t n = bytes - off < piece ? (size_t)(bytes - off) : piece;
        vram_synthetic_fill(seed, off, buf, n);
        sum += vram__checksum_partial(buf, n, off / 8);
    }
    free(buf);
    return sum + vram__checksum_final(bytes);
}

/* A number field of the model's status JSON, -1 when absent. */
static double status_number(vram_manager *m, const char *name, const char *field)
{
    char *js = vram_model_status_json(m, name);
    double v = -1;
    if (!js) return v;
    json_error_t e;
    json_t *o = json_loads(js, 0, &e);
    json_t *x = o ? json_object_get(o, field) : NULL;
    if (x && json_is_number(x)) v = json_number_value(x);
    json_decref(o);
    free(js);
    return v;
}

/* An acquire from another thread: half the restores come from one, as
 * when a server's worker threads share a model. */
typedef struct acq_job {
    vram_model *model;
    void *ptr;
    int rc;
} acq_job;

static void *acquire_main(void *arg)
{
    acq_job *j = arg;
    vram_lease *l = NULL;
    j->rc = vram_model_acquire(j->model, &l);
    if (j->rc == 0) {
        j->ptr = vram_lease_ptr(l);
        vram_lease_end(l);
    }
    return NULL;
}

/* Acquires and ends a lease, from this thread or (other) a new one; the
 * lease's pointer in *ptr. */
static int acquire_once(vram_model *model, int other, void **ptr)
{
    acq_job j = {model, NULL, 0};
    if (other) {
        pthread_t t;
        if (pthread_create(&t, NULL, acquire_main, &j) != 0) return VRAM_EHOSTMEM;
        pthread_join(t, NULL);
    } else {
        acquire_main(&j);
    }
    *ptr = j.ptr;
    return j.rc;
}

/* Median of v[from..n) (sorted in place); 0 when empty. */
static double median_from(double *v, int from, int n)
{
    if (n - from <= 0) return 0;
    qsort(v + from, (size_t)(n - from), sizeof *v, cmp_double);
    return v[from + (n - from) / 2];
}

/* Offload and restore cycles of a loaded model: the first offload (which
 * pins the backup) apart from the steady state, half the restores from
 * another thread, the address checked after each, the checksum at the end. */
static void bench_cycles(vram_manager *m, vram_model *model, const char *name, const char *sz,
                         uint64_t bytes, int cycles, uint64_t want, double raw_h2d, double raw_d2h)
{
    char key[128];
    double off_g[64], res_g[64], first_s = 0, first_pin = 0;
    void *ptr0 = NULL, *ptr = NULL;
    int done = 0, stable = 1;
    uint64_t c = 0;
    if (cycles > 64) cycles = 64;
    int rc = acquire_once(model, 0, &ptr0);
    for (int i = 0; rc == 0 && i < cycles; i++) {
        double t0 = vram__now(), pin0 = vram__pin_seconds();
        rc = vram_model_offload(model, VRAM_WAIT);
        double t1 = vram__now();
        if (i == 0) { /* this thread ran the offload: its pinning is counted here */
            first_s = t1 - t0;
            first_pin = vram__pin_seconds() - pin0;
        }
        if (rc) {
            failure("%s: offload: %s", name, vram_strerror(rc));
            break;
        }
        if (i == 0) { /* in the CPU state the checksum reads the pinned backup */
            rc = vram_model_checksum(model, &c);
            if (rc || c != want) failure("%s: checksum of the host backup differs", name);
            snprintf(key, sizeof key, "%s.cpu_checksum_ok", sz);
            result(key, rc == 0 && c == want, "(1 = the backup's checksum equals the host's)");
        }
        double t2 = vram__now();
        rc = acquire_once(model, i % 2, &ptr);
        double t3 = vram__now();
        if (rc) {
            failure("%s: restore: %s", name, vram_strerror(rc));
            break;
        }
        stable &= ptr == ptr0;
        off_g[i] = vram__gbps(bytes, t1 - t0);
        res_g[i] = vram__gbps(bytes, t3 - t2);
        done++;
    }
    if (done == 0) return;
    snprintf(key, sizeof key, "%s.address_stable", sz);
    result(key, stable, "(1 = the same device pointer after every restore, half from a thread)");
    if (!stable) failure("%s: the device pointer moved across a restore", name);
    snprintf(key, sizeof key, "%s.first_offload_gbps", sz);
    result(key, off_g[0], "GB/s (first offload: pins the backup, apart from the steady state)");
    snprintf(key, sizeof key, "%s.first_offload_seconds", sz);
    result(key, first_s, "s (first offload, wall time)");
    snprintf(key, sizeof key, "%s.first_offload_pin_seconds", sz);
    result(key, first_pin, "s (of which pinning the backup, overlapped with the copy)");
    double off_s = median_from(off_g, done > 1 ? 1 : 0, done);
    double res_s = median_from(res_g, 0, done);
    snprintf(key, sizeof key, "%s.offload_gbps_median", sz);
    result(key, off_s, "GB/s (steady offloads, wall time)");
    snprintf(key, sizeof key, "%s.restore_gbps_median", sz);
    result(key, res_s, "GB/s (vram_model_acquire from CPU, wall time)");
    snprintf(key, sizeof key, "%s.ratio_first_offload_time_vs_steady", sz);
    result(key, off_g[0] > 0 ? off_s / off_g[0] : 0,
           "(first offload's time / steady; target <= 1.5)");
    snprintf(key, sizeof key, "%s.status_last_restore_gbps", sz);
    result(key, status_number(m, name, "last_restore_gbps"), "GB/s (the status JSON's own figure)");
    if (raw_h2d > 0) {
        snprintf(key, sizeof key, "%s.ratio_restore_vs_raw_h2d", sz);
        result(key, res_s / raw_h2d, "(restore median / pinned H2D; target >= 0.9)");
    }
    if (raw_d2h > 0) {
        snprintf(key, sizeof key, "%s.ratio_offload_vs_raw_d2h", sz);
        result(key, off_s / raw_d2h, "(steady offload median / pinned D2H; target >= 0.9)");
    }
    rc = vram_model_checksum(model, &c);
    snprintf(key, sizeof key, "%s.checksum_after_cycles_ok", sz);
    result(key, rc == 0 && c == want, "(1 = the kernel reads the same bytes after every cycle)");
    if (rc || c != want) failure("%s: checksum after %d cycles differs", name, done);
}

/* Hot acquire: the model is resident, a lease is bookkeeping only. */
static void bench_hot(vram_model *model, const char *name, const char *sz, int hot)
{
    char key[128];
    vram_lease *l = NULL;
    double t0;
    int rc;
    double *lat = calloc((size_t)(hot > 0 ? hot : 1), sizeof *lat);
    if (lat && hot > 0) {
        for (int i = 0; i < hot; i++) {
            t0 = vram__now();
            rc = vram_model_acquire(model, &l);
            lat[i] = vram__now() - t0;
            if (rc) {
                failure("%s: hot acquire: %s", name, vram_strerror(rc));
                break;
            }
            vram_lease_end(l);
        }
        snprintf(key, sizeof key, "%s.hot_acquire_first_us", sz);
        result(key, lat[0] * 1e6, "us (first acquire after the load, model resident)");
        qsort(lat, (size_t)hot, sizeof *lat, cmp_double);
        snprintf(key, sizeof key, "%s.hot_acquire_p50_us", sz);
        result(key, lat[hot / 2] * 1e6, "us");
        snprintf(key, sizeof key, "%s.hot_acquire_p99_us", sz);
        result(key, lat[(size_t)hot * 99 / 100] * 1e6, "us");
    }
    free(lat);
}

/* Every vram measurement for one model size (see the top of the file);
 * the model is released and unregistered at the end, also after a failure. */
static void bench_size(vram_manager *m, uint64_t bytes, int cycles, int hot, int dev,
                       uint64_t dev_free, double raw_h2d, double raw_d2h)
{
    char sz[32], name[64], spec[96], key[128];
    fmt_size(bytes, sz, sizeof sz);
    snprintf(name, sizeof name, "bench-%s", sz);
    const uint64_t seed = 20250 + bytes % 977;
    snprintf(spec, sizeof spec, "synthetic:%llu:%llu", (unsigned long long)bytes,
             (unsigned long long)seed);
    printf("\n== model %s (%s)%s\n", name, spec, g_double ? " [TEST DOUBLE]" : "");

    uint64_t host_need = g_double ? bytes * 2 + bytes / 4 : bytes + bytes / 4;
    uint64_t avail = mem_available();
    if (dev_free && bytes + (64ULL << 20) > dev_free) {
        snprintf(key, sizeof key, "skipped: needs %s on the device, %.1f GiB free", sz,
                 (double)dev_free / (1 << 30));
        result_text(name, key);
        return;
    }
    if (avail && host_need > avail) {
        snprintf(key, sizeof key, "skipped: needs %.1f GiB of host memory, %.1f GiB available",
                 (double)host_need / (1 << 30), (double)avail / (1 << 30));
        result_text(name, key);
        return;
    }

    double t0 = vram__now();
    uint64_t want = expected_checksum(seed, bytes);
    snprintf(key, sizeof key, "%s.host_checksum_gbps", sz);
    result(key, vram__gbps(bytes, vram__now() - t0), "GB/s (synthetic bytes + hash on the CPU)");

    vram_model_opts o;
    vram_model_opts_init(&o);
    o.source = spec;
    o.device = dev;
    vram_model *model = NULL;
    int rc = vram_manager_register(m, name, &o, &model);
    if (rc) {
        failure("%s: register: %s", name, vram_strerror(rc));
        return;
    }
    vram_lease *l = NULL;
    t0 = vram__now();
    rc = vram_model_acquire(model, &l);
    double t_load = vram__now() - t0;
    if (rc) {
        failure("%s: first acquire (load): %s", name, vram_strerror(rc));
        goto out;
    }
    vram_lease_end(l);
    snprintf(key, sizeof key, "%s.load_seconds", sz);
    result(key, t_load, "s (first acquire: synthetic generation + upload)");

    uint64_t c = 0;
    t0 = vram__now();
    rc = vram_model_checksum(model, &c);
    double t_ck = vram__now() - t0;
    snprintf(key, sizeof key, "%s.gpu_checksum_gbps", sz);
    result(key, vram__gbps(bytes, t_ck), "GB/s (checksum kernel over the model)");
    snprintf(key, sizeof key, "%s.gpu_checksum_ok", sz);
    result(key, rc == 0 && c == want, "(1 = the device's checksum equals the host's)");
    if (rc || c != want)
        failure("%s: GPU checksum %016llx (rc %d) != host %016llx", name, (unsigned long long)c, rc,
                (unsigned long long)want);

    bench_hot(model, name, sz, hot);
    bench_cycles(m, model, name, sz, bytes, cycles, want, raw_h2d, raw_d2h);
out:
    rc = vram_model_release(model, VRAM_WAIT);
    if (rc) failure("%s: release: %s", name, vram_strerror(rc));
    vram_manager_unregister(m, name);
}

/* ---- 3. eviction and out-of-memory recovery ---- */

/* A manager on the cuda backend with a device budget of budget bytes. */
static vram_manager *manager_with_budget(const vram_config *base, uint64_t budget)
{
    vram_config cfg = *base;
    cfg.gpu_budget.bytes = budget;
    cfg.gpu_budget.percent = 0;
    vram_manager *m = NULL;
    int rc = vram_manager_create(&cfg, &m);
    if (rc)
        failure("vram_manager_create(budget %llu): %s", (unsigned long long)budget,
                vram_strerror(rc));
    return m;
}

/* Registers synthetic model name of bytes and takes one lease on it. */
static int touch_model(vram_manager *m, const char *name, uint64_t bytes, vram_model **out)
{
    char spec[96];
    snprintf(spec, sizeof spec, "synthetic:%llu:%u", (unsigned long long)bytes,
             (unsigned)bytes % 97);
    vram_model_opts o;
    vram_model_opts_init(&o);
    o.source = spec;
    int rc = *out ? 0 : vram_manager_register(m, name, &o, out);
    vram_lease *l = NULL;
    if (rc == 0) rc = vram_model_acquire(*out, &l);
    if (rc == 0) vram_lease_end(l);
    return rc;
}

/* LRU eviction: three models of bytes under a budget for two and a half;
 * using the third evicts the least recently used, using that one again
 * evicts the next. */
static void bench_lru(const vram_config *base, uint64_t bytes, uint64_t dev_free)
{
    char sz[32], key[96];
    fmt_size(bytes, sz, sizeof sz);
    if (dev_free && bytes / 2 * 5 + (256ULL << 20) > dev_free) {
        snprintf(key, sizeof key, "skipped: 2.5 x %s does not fit the device", sz);
        result_text("lru", key);
        return;
    }
    vram_manager *m = manager_with_budget(base, bytes / 2 * 5);
    if (!m) return;
    vram_model *md[3] = {NULL, NULL, NULL};
    const char *names[3] = {"lru-a", "lru-b", "lru-c"};
    int rc = 0;
    double t0 = vram__now();
    for (int i = 0; i < 3 && rc == 0; i++)
        rc = touch_model(m, names[i], bytes, &md[i]);
    int ok = rc == 0 && vram_model_state(md[0]) == VRAM_STATE_CPU &&
             vram_model_state(md[1]) == VRAM_STATE_GPU && vram_model_state(md[2]) == VRAM_STATE_GPU;
    double t1 = vram__now();
    if (rc == 0) rc = touch_model(m, names[0], bytes, &md[0]);
    double t2 = vram__now();
    ok = ok && rc == 0 && vram_model_state(md[1]) == VRAM_STATE_CPU &&
         vram_model_state(md[0]) == VRAM_STATE_GPU;
    snprintf(key, sizeof key, "lru_%s_ok", sz);
    result(key, ok, "(1 = the least recently used model was evicted each time)");
    snprintf(key, sizeof key, "lru_%s_evict_and_restore_seconds", sz);
    result(key, t2 - t1, "s (evicting one model and restoring another)");
    snprintf(key, sizeof key, "lru_%s_three_loads_seconds", sz);
    result(key, t1 - t0, "s");
    if (!ok)
        failure("lru %s: wrong model evicted or an acquire failed (%s)", sz, vram_strerror(rc));
    for (int i = 0; i < 3; i++)
        if (md[i]) vram_model_release(md[i], VRAM_WAIT);
    vram_manager_destroy(m);
}

/* --hog BYTES: a child that holds bytes of device memory until its stdin
 * closes (another process taking the GPU). */
static int hog_main(const char *lib, uint64_t bytes)
{
    raw_api a;
    uint64_t fr = 0;
    if (raw_open(&a, lib, 0, &fr)) return 1;
    CUdeviceptr p = 0;
    CUresult r = a.cuMemAlloc(&p, bytes);
    printf("%s\n", r == CUDA_SUCCESS ? "ready" : "failed");
    fflush(stdout);
    char c;
    while (fread(&c, 1, 1, stdin) == 1) {
    }
    if (r == CUDA_SUCCESS) a.cuMemFree(p);
    raw_close(&a);
    return 0;
}

/* Out of memory because another process holds it: an acquire ends in a
 * clear VRAM_ENOMEM with nothing lost, and succeeds once the memory is back. */
static void bench_oom(const vram_config *base, const char *self, uint64_t bytes, uint64_t dev_free)
{
    if (g_double || dev_free < bytes * 2) {
        result_text("oom_other_process", g_double ? "skipped: the double's memory is per process"
                                                  : "skipped: too little free device memory");
        return;
    }
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' --hog %llu", self, (unsigned long long)(dev_free - bytes / 2));
    int to_child[2];
    if (pipe(to_child) != 0) return;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(to_child[0], 0);
        close(to_child[1]);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(to_child[0]);
    sleep(5); /* the child's context and allocation */
    vram_manager *m = manager_with_budget(base, 0);
    vram_model *md = NULL;
    int rc1 = m ? touch_model(m, "oom", bytes, &md) : VRAM_EBACKEND;
    close(to_child[1]);
    waitpid(pid, NULL, 0);
    int rc2 = m ? touch_model(m, "oom", bytes, &md) : VRAM_EBACKEND;
    result("oom_other_process_enomem", rc1 == VRAM_ENOMEM, "(1 = a clear VRAM_ENOMEM while held)");
    result("oom_other_process_recovered", rc2 == 0,
           "(1 = the acquire works once it is given back)");
    if (rc1 != VRAM_ENOMEM || rc2 != 0)
        failure("oom with another process: first %s, then %s", vram_strerror(rc1),
                vram_strerror(rc2));
    if (md) vram_model_release(md, VRAM_WAIT);
    if (m) vram_manager_destroy(m);
}

/* Prints the usage line to stderr. */
static void usage(void)
{
    fprintf(stderr, "usage: bench_gpu [--sizes 1G,4G,16G] [--raw 512M] [--pin 16G] [--lru 20G] "
                    "[--oom 4G] [--cycles 4] [--hot 1000] [--device N] [--results FILE]\n"
                    "       bench_gpu --hog BYTES   (holds device memory until stdin closes)\n");
}

typedef struct bench_opts {
    const char *sizes, *results;
    uint64_t raw, pin, lru, oom, hog;
    int cycles, hot, dev;
} bench_opts;

/* Parses the flags (each takes a value) into o; -1 after printing usage. */
static int parse_args(int argc, char **argv, bench_opts *o)
{
    *o = (bench_opts){"1G,4G,16G", NULL, 512ULL << 20, 16ULL << 30, 20ULL << 30, 4ULL << 30, 0, 4,
                      1000,        0};
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t *size = strcmp(a, "--raw") == 0   ? &o->raw
                         : strcmp(a, "--pin") == 0 ? &o->pin
                         : strcmp(a, "--lru") == 0 ? &o->lru
                         : strcmp(a, "--oom") == 0 ? &o->oom
                         : strcmp(a, "--hog") == 0 ? &o->hog
                                                   : NULL;
        if (!v) return usage(), -1;
        if (size) {
            if (vram_parse_size(v, size) < 0) return usage(), -1;
        } else if (strcmp(a, "--sizes") == 0) {
            o->sizes = v;
        } else if (strcmp(a, "--cycles") == 0) {
            o->cycles = atoi(v);
        } else if (strcmp(a, "--hot") == 0) {
            o->hot = atoi(v);
        } else if (strcmp(a, "--device") == 0) {
            o->dev = atoi(v);
        } else if (strcmp(a, "--results") == 0) {
            o->results = v;
        } else {
            return usage(), -1;
        }
    }
    if (o->cycles < 2) o->cycles = 2; /* a first offload and a steady one */
    if (o->hot < 0) o->hot = 0;
    return 0;
}

/* Which driver entry points bound, as the backend binds them. */
static void bench_symbols(const char *lib)
{
    char report[8192];
    int missing = vram__cuda_check_symbols(lib, report, sizeof report);
    int bound = 0;
    for (const char *p = report; (p = strstr(p, "bound ")); p += 6)
        bound++;
    printf("%s", report);
    result("symbols_bound", bound, "(driver entry points of the binding table found)");
    result("symbols_required_missing", missing, "(0 = every required entry point is there)");
    if (missing) failure("the driver lacks %d required entry points (see above)", missing);
}

/* The raw baselines, pinning costs and the symbol report. */
static void bench_raw(const vram_config *cfg, const bench_opts *o, double *h2d, double *d2h,
                      uint64_t *dev_free)
{
    printf("== driver entry points\n");
    bench_symbols(cfg->cuda_library);
    printf("== raw copies (pinned and pageable)\n");
    raw_api a;
    if (raw_open(&a, cfg->cuda_library, o->dev, dev_free) == 0) {
        raw_bandwidth(&a, o->raw, h2d, d2h);
        printf("== pinning a backup, by each method\n");
        if (o->pin) raw_pinning(&a, o->pin);
    }
    raw_close(&a);
    if (g_double)
        printf("   *** DRY RUN on the CUDA driver TEST DOUBLE (%s): no GPU, the numbers are host "
               "memcpy speeds and prove only that the paths work ***\n",
               cfg->cuda_library);
    result_text("driver", g_double ? "test-double" : "real");
}

/* Parses the flags, runs the raw tests, each size, eviction and OOM. */
int main(int argc, char **argv)
{
    bench_opts o;
    if (parse_args(argc, argv, &o)) return 2;
    vram_config cfg;
    char err[512];
    vram_config_init(&cfg);
    if (vram_config_load(&cfg, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "bench_gpu: %s\n", err);
        return 2;
    }
    if (o.hog) return hog_main(cfg.cuda_library, o.hog);
    if (o.results && !(g_results = fopen(o.results, "w"))) {
        perror(o.results);
        return 2;
    }
    cfg.backend = VRAM_BACKEND_CUDA;
    cfg.idle_timeout = 0;
    cfg.release_timeout = 0;
    cfg.no_monitor_thread = 1;
    if (cfg.log_level > VRAM_LOG_WARN) cfg.log_level = VRAM_LOG_WARN;

    printf("== bench_gpu: driver library %s\n", cfg.cuda_library);
    double h2d = 0, d2h = 0;
    uint64_t dev_free = 0;
    bench_raw(&cfg, &o, &h2d, &d2h, &dev_free);
    vram_manager *m = NULL;
    int rc = vram_manager_create(&cfg, &m);
    if (rc) {
        failure("vram_manager_create(backend cuda): %s", vram_strerror(rc));
    } else {
        char *list = strdup(o.sizes), *save = NULL;
        for (char *it = list ? strtok_r(list, ",", &save) : NULL; it;
             it = strtok_r(NULL, ",", &save)) {
            uint64_t bytes;
            if (vram_parse_size(it, &bytes) < 0 || bytes == 0) {
                failure("bad size '%s'", it);
                continue;
            }
            bench_size(m, bytes, o.cycles, o.hot, o.dev, dev_free, h2d, d2h);
        }
        free(list);
        vram_manager_destroy(m);
    }
    printf("\n== eviction and out-of-memory recovery\n");
    if (o.lru) bench_lru(&cfg, o.lru, dev_free);
    if (o.oom) bench_oom(&cfg, argv[0], o.oom, dev_free);
    printf("\n== bench_gpu: %s (%d failure%s)%s\n", g_failures ? "FAILED" : "ok", g_failures,
           g_failures == 1 ? "" : "s", g_double ? " [TEST DOUBLE: no GPU]" : "");
    if (g_results) fclose(g_results);
    return g_failures ? 1 : 0;
}
