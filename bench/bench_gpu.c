/* bench_gpu.c - GPU benchmark: raw pinned cuMemcpy vs vram offload/restore, latency, ratios. */
#include <dlfcn.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda_driver.h"
#include "base/base.h"
#include "vram.h"
#include "vram_server.h"

/*
 * Usage: bench_gpu [--sizes 1G,4G,16G] [--raw 4G] [--cycles 3] [--hot 1000]
 *                  [--device N] [--results FILE]
 *
 * 1. Raw: cuMemcpyHtoD_v2 / cuMemcpyDtoH_v2 of --raw bytes between
 *    cuMemHostAlloc'd (pinned) memory and a cuMemAlloc_v2 block, best of 3,
 *    straight through the driver (VRAM_CUDA_LIBRARY, default libcuda.so.1).
 * 2. vram: a manager on the cuda backend; per size a synthetic model is
 *    loaded, checksummed on the GPU (the PTX kernel) and compared with the
 *    host's value, acquired --hot times while resident (latency), then
 *    offloaded and restored --cycles times (GB/s, best and median, and the
 *    status JSON's own figures), checksummed again after the cycles, in the
 *    CPU state, and released. Sizes that do not fit the device or the host
 *    are skipped with the reason.
 * 3. Ratios: restore / raw H2D and offload / raw D2H.
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

/* ---- 1. raw driver bandwidth ---- */

typedef struct raw_api {
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
    vram_cuMemcpyHtoD_fn cuMemcpyHtoD;
    vram_cuMemcpyDtoH_fn cuMemcpyDtoH;
    vram_cuDriverGetVersion_fn cuDriverGetVersion;
} raw_api;

/* Binds the raw benchmark's entry points; -1 (printed) when one is missing. */
static int raw_bind(void *lib, raw_api *a)
{
    static const struct {
        const char *name;
        size_t off;
    } syms[] = {
        {"cuInit", offsetof(raw_api, cuInit)},
        {"cuDeviceGet", offsetof(raw_api, cuDeviceGet)},
        {"cuDeviceGetName", offsetof(raw_api, cuDeviceGetName)},
        {"cuDevicePrimaryCtxRetain", offsetof(raw_api, cuDevicePrimaryCtxRetain)},
        {"cuDevicePrimaryCtxRelease_v2", offsetof(raw_api, cuDevicePrimaryCtxRelease)},
        {"cuCtxPushCurrent_v2", offsetof(raw_api, cuCtxPushCurrent)},
        {"cuCtxPopCurrent_v2", offsetof(raw_api, cuCtxPopCurrent)},
        {"cuMemGetInfo_v2", offsetof(raw_api, cuMemGetInfo)},
        {"cuMemAlloc_v2", offsetof(raw_api, cuMemAlloc)},
        {"cuMemFree_v2", offsetof(raw_api, cuMemFree)},
        {"cuMemHostAlloc", offsetof(raw_api, cuMemHostAlloc)},
        {"cuMemFreeHost", offsetof(raw_api, cuMemFreeHost)},
        {"cuMemcpyHtoD_v2", offsetof(raw_api, cuMemcpyHtoD)},
        {"cuMemcpyDtoH_v2", offsetof(raw_api, cuMemcpyDtoH)},
        {"cuDriverGetVersion", offsetof(raw_api, cuDriverGetVersion)},
    };
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

/* Best-of-3 plain synchronous copies of bytes (halved while the device or
 * host refuses that much). 0 on success; *free_out gets the device's free
 * memory before the test. */
static int raw_bandwidth(const char *lib, int dev, uint64_t bytes, double *h2d, double *d2h,
                         uint64_t *free_out)
{
    void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (!h) {
        failure("cannot load %s: %s", lib, dlerror());
        return -1;
    }
    g_double = dlsym(h, "vram_double_configure") != NULL;
    raw_api a;
    if (raw_bind(h, &a)) {
        failure("%s is not a usable CUDA driver", lib);
        return -1;
    }
    CUdevice d;
    CUcontext ctx;
    CUresult r = a.cuInit(0);
    if (r == CUDA_SUCCESS) r = a.cuDeviceGet(&d, dev);
    if (r == CUDA_SUCCESS) r = a.cuDevicePrimaryCtxRetain(&ctx, d);
    if (r != CUDA_SUCCESS) {
        failure("raw: cuInit/cuDeviceGet/cuDevicePrimaryCtxRetain(device %d): CUDA error %d", dev,
                r);
        return -1;
    }
    a.cuCtxPushCurrent(ctx);
    char name[128] = "?";
    a.cuDeviceGetName(name, sizeof name, d);
    int ver = 0;
    a.cuDriverGetVersion(&ver);
    size_t fr = 0, tot = 0;
    a.cuMemGetInfo(&fr, &tot);
    *free_out = fr;
    char line[256];
    snprintf(line, sizeof line, "%s (driver API %d.%d, %.1f GiB free of %.1f)%s", name, ver / 1000,
             ver % 1000 / 10, (double)fr / (1 << 30), (double)tot / (1 << 30),
             g_double ? " [TEST DOUBLE: no GPU]" : "");
    result_text("device", line);

    int rc = -1;
    CUdeviceptr dp = 0;
    void *hp = NULL;
    while (bytes >= (64ULL << 20)) {
        if (a.cuMemAlloc(&dp, bytes) == CUDA_SUCCESS) {
            if (a.cuMemHostAlloc(&hp, bytes, CU_MEMHOSTALLOC_PORTABLE) == CUDA_SUCCESS) break;
            a.cuMemFree(dp);
            dp = 0;
        }
        bytes /= 2;
    }
    if (!dp) {
        failure("raw: no room for a 64 MiB device block and pinned buffer");
        goto out;
    }
    memset(hp, 0x3c, bytes);
    result("raw_bytes", (double)bytes, "bytes");
    double best_h = 0, best_d = 0;
    for (int rep = 0; rep < 4; rep++) { /* the first one warms up */
        double t0 = vram__now();
        r = a.cuMemcpyHtoD(dp, hp, bytes);
        double t1 = vram__now();
        if (r == CUDA_SUCCESS) r = a.cuMemcpyDtoH(hp, dp, bytes);
        double t2 = vram__now();
        if (r != CUDA_SUCCESS) {
            failure("raw: cuMemcpy: CUDA error %d", r);
            goto out;
        }
        if (rep > 0) {
            if (vram__gbps(bytes, t1 - t0) > best_h) best_h = vram__gbps(bytes, t1 - t0);
            if (vram__gbps(bytes, t2 - t1) > best_d) best_d = vram__gbps(bytes, t2 - t1);
        }
    }
    *h2d = best_h;
    *d2h = best_d;
    result("raw_h2d_gbps", best_h, "GB/s (pinned cuMemcpyHtoD_v2, best of 3)");
    result("raw_d2h_gbps", best_d, "GB/s (pinned cuMemcpyDtoH_v2, best of 3)");
    rc = 0;
out:
    if (dp) a.cuMemFree(dp);
    if (hp) a.cuMemFreeHost(hp);
    CUcontext popped;
    a.cuCtxPopCurrent(&popped);
    a.cuDevicePrimaryCtxRelease(d);
    dlclose(h);
    return rc;
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

    /* hot acquire: the model is resident, a lease is bookkeeping only */
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

    double *off_g = calloc((size_t)cycles + 1, sizeof(double));
    double *res_g = calloc((size_t)cycles + 1, sizeof(double));
    int done = 0;
    for (int i = 0; i < cycles && off_g && res_g; i++) {
        t0 = vram__now();
        rc = vram_model_offload(model, VRAM_WAIT);
        double t1 = vram__now();
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
        rc = vram_model_acquire(model, &l);
        double t3 = vram__now();
        if (rc) {
            failure("%s: restore: %s", name, vram_strerror(rc));
            break;
        }
        vram_lease_end(l);
        off_g[i] = vram__gbps(bytes, t1 - t0);
        res_g[i] = vram__gbps(bytes, t3 - t2);
        done++;
    }
    if (done > 0) {
        double json_res = status_number(m, name, "last_restore_gbps");
        double json_off = status_number(m, name, "last_offload_gbps");
        qsort(off_g, (size_t)done, sizeof *off_g, cmp_double);
        qsort(res_g, (size_t)done, sizeof *res_g, cmp_double);
        snprintf(key, sizeof key, "%s.offload_gbps_best", sz);
        result(key, off_g[done - 1], "GB/s (vram_model_offload, wall time)");
        snprintf(key, sizeof key, "%s.offload_gbps_median", sz);
        result(key, off_g[done / 2], "GB/s");
        snprintf(key, sizeof key, "%s.restore_gbps_best", sz);
        result(key, res_g[done - 1], "GB/s (vram_model_acquire from CPU, wall time)");
        snprintf(key, sizeof key, "%s.restore_gbps_median", sz);
        result(key, res_g[done / 2], "GB/s");
        snprintf(key, sizeof key, "%s.status_last_offload_gbps", sz);
        result(key, json_off, "GB/s (the status JSON's own figure)");
        snprintf(key, sizeof key, "%s.status_last_restore_gbps", sz);
        result(key, json_res, "GB/s (the status JSON's own figure)");
        if (raw_h2d > 0) {
            snprintf(key, sizeof key, "%s.ratio_restore_vs_raw_h2d", sz);
            result(key, res_g[done - 1] / raw_h2d, "(restore best / raw H2D)");
        }
        if (raw_d2h > 0) {
            snprintf(key, sizeof key, "%s.ratio_offload_vs_raw_d2h", sz);
            result(key, off_g[done - 1] / raw_d2h, "(offload best / raw D2H)");
        }
        rc = vram_model_checksum(model, &c);
        snprintf(key, sizeof key, "%s.checksum_after_cycles_ok", sz);
        result(key, rc == 0 && c == want, "(1 = bytes intact after every cycle)");
        if (rc || c != want) failure("%s: checksum after %d cycles differs", name, done);
    }
    free(off_g);
    free(res_g);
out:
    rc = vram_model_release(model, VRAM_WAIT);
    if (rc) failure("%s: release: %s", name, vram_strerror(rc));
    vram_manager_unregister(m, name);
}

/* Prints the usage line to stderr. */
static void usage(void)
{
    fprintf(stderr, "usage: bench_gpu [--sizes 1G,4G,16G] [--raw 4G] [--cycles 3] [--hot 1000] "
                    "[--device N] [--results FILE]\n");
}

/* Parses the flags, runs the raw test and each size, prints the summary. */
int main(int argc, char **argv)
{
    const char *sizes = "1G,4G,16G", *results = NULL;
    uint64_t raw = 4ULL << 30;
    int cycles = 3, hot = 1000, dev = 0;
    for (int i = 1; i < argc; i += 2) { /* every flag takes a value */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            usage();
            return 2;
        }
        if (strcmp(a, "--sizes") == 0)
            sizes = v;
        else if (strcmp(a, "--raw") == 0) {
            if (vram_parse_size(v, &raw) < 0) return usage(), 2;
        } else if (strcmp(a, "--cycles") == 0)
            cycles = atoi(v);
        else if (strcmp(a, "--hot") == 0)
            hot = atoi(v);
        else if (strcmp(a, "--device") == 0)
            dev = atoi(v);
        else if (strcmp(a, "--results") == 0)
            results = v;
        else {
            usage();
            return 2;
        }
    }
    if (cycles < 1) cycles = 1;
    if (hot < 0) hot = 0;
    if (results && !(g_results = fopen(results, "w"))) {
        perror(results);
        return 2;
    }

    vram_config cfg;
    char err[512];
    vram_config_init(&cfg);
    if (vram_config_load(&cfg, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "bench_gpu: %s\n", err);
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
    printf("== raw pinned copies\n");
    raw_bandwidth(cfg.cuda_library, dev, raw, &h2d, &d2h, &dev_free);
    if (g_double)
        printf("   *** DRY RUN on the CUDA driver TEST DOUBLE (%s): no GPU, the numbers are host "
               "memcpy speeds and prove only that the paths work ***\n",
               cfg.cuda_library);
    result_text("driver", g_double ? "test-double" : "real");

    vram_manager *m = NULL;
    int rc = vram_manager_create(&cfg, &m);
    if (rc) {
        failure("vram_manager_create(backend cuda): %s", vram_strerror(rc));
    } else {
        char *list = strdup(sizes), *save = NULL;
        for (char *it = list ? strtok_r(list, ",", &save) : NULL; it;
             it = strtok_r(NULL, ",", &save)) {
            uint64_t bytes;
            if (vram_parse_size(it, &bytes) < 0 || bytes == 0) {
                failure("bad size '%s'", it);
                continue;
            }
            bench_size(m, bytes, cycles, hot, dev, dev_free, h2d, d2h);
        }
        free(list);
        vram_manager_destroy(m);
    }
    printf("\n== bench_gpu: %s (%d failure%s)%s\n", g_failures ? "FAILED" : "ok", g_failures,
           g_failures == 1 ? "" : "s", g_double ? " [TEST DOUBLE: no GPU]" : "");
    if (g_results) fclose(g_results);
    return g_failures ? 1 : 0;
}
