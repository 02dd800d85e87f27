/* test_cuda.c - the CUDA backend and NVML pick against their test doubles. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vram_server.h"
#include "backend/backend.h"
#include "backend/cuda_driver.h"
#include "backend/cuda_pinned.h"
#include "backend/nvml.h"
#include "core/core.h"
#include "base/base.h"
#include "cuda_double.h"
#include "server/commands.h"

#ifndef VRAM_CUDA_DOUBLE_PATH
#define VRAM_CUDA_DOUBLE_PATH "libcuda_double.so"
#endif
#ifndef VRAM_NVML_DOUBLE_PATH
#define VRAM_NVML_DOUBLE_PATH "libnvml_double.so"
#endif

#define MIB ((size_t)1 << 20)
#define GRAN (2 * MIB)

/* ---- the double's control API ---- */

static struct {
    void *h, *nh;
    const char *path, *nvml_path;
    vram_double_configure_fn configure;
    vram_double_set_fail_fn set_fail;
    vram_double_set_flag_fn set_flag;
    vram_double_calls_fn calls;
    vram_double_get_stats_fn stats;
    vram_double_ctx_depth_fn depth;
    vram_double_accessible_fn accessible;
    vram_double_user_work_fn user_work;
    vram_double_user_finish_fn user_finish;
    vram_double_set_sticky_fn set_sticky;
    vram_double_set_unusable_fn set_unusable;
    vram_double_access_fn access;
    vram_double_peer_work_fn peer_work;
    vram_double_set_capture_fn set_capture;
    CUresult (*cu_init)(unsigned int);
    vram_nvml_double_set_fn nvml_set;
    vram_nvml_double_inits_fn nvml_inits;
    long violations_at_start;
} D;

#define BIND(handle, field, name)                                                                  \
    do {                                                                                           \
        void *p_ = dlsym(handle, name);                                                            \
        if (!p_) return -1;                                                                        \
        memcpy(&D.field, &p_, sizeof p_);                                                          \
    } while (0)

/* Opens the doubles the backend will open (same paths, so the same
 * objects) and binds their control functions; -1 when the library at
 * VRAM_CUDA_LIBRARY is not the double. */
static int open_doubles(void)
{
    const char *p = getenv("VRAM_CUDA_LIBRARY");
    D.path = p && *p ? p : VRAM_CUDA_DOUBLE_PATH;
    p = getenv("VRAM_NVML_LIBRARY");
    D.nvml_path = p && *p ? p : VRAM_NVML_DOUBLE_PATH;
    setenv("VRAM_NVML_LIBRARY", D.nvml_path, 1);
    D.h = dlopen(D.path, RTLD_NOW | RTLD_LOCAL);
    D.nh = dlopen(D.nvml_path, RTLD_NOW | RTLD_LOCAL);
    if (!D.h || !D.nh) return -1;
    BIND(D.h, configure, "vram_double_configure");
    BIND(D.h, set_fail, "vram_double_set_fail");
    BIND(D.h, set_flag, "vram_double_set_flag");
    BIND(D.h, calls, "vram_double_calls");
    BIND(D.h, stats, "vram_double_get_stats");
    BIND(D.h, depth, "vram_double_ctx_depth");
    BIND(D.h, accessible, "vram_double_accessible");
    BIND(D.h, user_work, "vram_double_user_work");
    BIND(D.h, user_finish, "vram_double_user_finish");
    BIND(D.h, set_sticky, "vram_double_set_sticky");
    BIND(D.h, set_unusable, "vram_double_set_unusable");
    BIND(D.h, access, "vram_double_access");
    BIND(D.h, peer_work, "vram_double_peer_work");
    BIND(D.h, set_capture, "vram_double_set_capture");
    BIND(D.h, cu_init, "cuInit");
    BIND(D.nh, nvml_set, "vram_nvml_double_set");
    BIND(D.nh, nvml_inits, "vram_nvml_double_inits");
    return 0;
}

static vram_double_stats stats(void)
{
    vram_double_stats s;
    D.stats(&s);
    return s;
}

/* Every test starts from 2 devices of 256 MiB, no failures, eager streams. */
static int setup(void **state)
{
    (void)state;
    unsetenv("CUDA_VISIBLE_DEVICES");
    if (D.configure(2, 256 * MIB) != 0) {
        fprintf(stderr, "double still holds resources from an earlier test\n");
        return -1;
    }
    D.set_fail(NULL);
    D.set_flag("lazy", 0);
    D.set_flag("vmm", 1);
    D.set_flag("poison", 1);
    D.set_flag("jit_ms", 0);
    D.set_flag("mig", 0);
    D.set_flag("peer", 1);
    for (int i = 0; i < 4; i++) {
        D.set_sticky(i, 0);
        D.set_unusable(i, 0);
        D.set_capture(i, 0);
    }
    D.nvml_set("8G:0", 0);
    D.violations_at_start = stats().violations;
    return 0;
}

/* ... and ends with nothing alive in the double and no API misuse. */
static int teardown(void **state)
{
    (void)state;
    vram_double_stats s = stats();
    assert_int_equal(s.reservations, 0);
    assert_int_equal(s.allocations, 0);
    assert_int_equal(s.mappings, 0);
    assert_int_equal(s.host_allocs, 0);
    assert_int_equal(s.host_registered, 0);
    assert_int_equal(s.user_pending, 0);
    assert_int_equal(s.dev_allocs, 0);
    assert_int_equal(s.streams, 0);
    assert_int_equal(s.modules, 0);
    assert_int_equal(s.ctx_retained, 0);
    assert_int_equal(s.violations, D.violations_at_start);
    assert_int_equal(D.depth(), 0);
    assert_int_equal(D.nvml_inits(), 0);
    D.set_fail(NULL);
    return 0;
}

/* The backend's part of cfg, as vram_manager_create passes it on (one
 * static copy: backends are made on the main thread only). */
static const vram_backend_config *bcfg(const vram_config *cfg)
{
    static vram_backend_config out;
    memset(&out, 0, sizeof out);
    out.kind = cfg->backend;
    out.host_memory = cfg->host_memory;
    out.host_devices = cfg->host_devices;
    out.chunk_bytes = cfg->chunk_bytes;
    snprintf(out.visible_devices, sizeof out.visible_devices, "%s", cfg->visible_devices);
    snprintf(out.cuda_library, sizeof out.cuda_library, "%s", cfg->cuda_library);
    out.fault_injection = cfg->fault_injection;
    return &out;
}

static int make_backend_chunk(vram_backend **b, size_t chunk)
{
    vram_config cfg;
    vram_config_init(&cfg);
    snprintf(cfg.cuda_library, sizeof cfg.cuda_library, "%s", D.path);
    cfg.visible_devices[0] = '\0';
    cfg.chunk_bytes = chunk;
    return vram__backend_cuda_create(bcfg(&cfg), b);
}

static vram_backend *make_backend(size_t chunk)
{
    vram_backend *b = NULL;
    int rc = make_backend_chunk(&b, chunk);
    if (rc) fprintf(stderr, "cuda backend: %s\n", vram__last_error());
    assert_int_equal(rc, 0);
    assert_non_null(b);
    return b;
}

#define assert_msg_has(needle)                                                                     \
    do {                                                                                           \
        const char *m_ = vram__last_error();                                                       \
        if (!strstr(m_, (needle))) fail_msg("message \"%s\" lacks \"%s\"", m_, (needle));          \
    } while (0)

/* ---- creation ---- */

static void test_create_reports_devices(void **state)
{
    (void)state;
    vram_backend *b = make_backend(64 * MIB);
    assert_string_equal(b->name, "cuda");
    assert_int_equal(b->version, VRAM_BACKEND_VERSION);
    assert_int_equal(vram__backend_device_count(b), 2);
    vram_dev_info info;
    assert_int_equal(vram__backend_device_info(b, 1, &info), 0);
    assert_non_null(strstr(info.name, "test double"));
    assert_string_equal(info.uuid, "GPU-d0b1e000-0000-4000-8000-000000000001");
    assert_int_equal(info.total, 256 * MIB);
    assert_int_equal(info.free, 256 * MIB);
    assert_int_equal(info.granularity, GRAN);
    assert_int_equal(vram__backend_device_info(b, 2, &info), VRAM_EINVAL);
    /* no device pays a context before its first use */
    assert_int_equal(stats().ctx_retained, 0);
    vram_buf buf;
    assert_int_equal(vram__backend_reserve(b, 1, GRAN, &buf), 0);
    assert_int_equal(stats().ctx_retained, 1);
    vram__backend_unreserve(b, &buf);
    assert_int_equal(D.depth(), 0);
    vram__backend_destroy(b);
}

static void test_library_missing_is_enodev(void **state)
{
    (void)state;
    vram_config cfg;
    vram_config_init(&cfg);
    snprintf(cfg.cuda_library, sizeof cfg.cuda_library, "/nonexistent/libcuda-missing.so.1");
    vram_backend *b = (vram_backend *)&cfg; /* must be set to NULL */
    assert_int_equal(vram__backend_cuda_create(bcfg(&cfg), &b), VRAM_ENODEV);
    assert_null(b);
    assert_msg_has("/nonexistent/libcuda-missing.so.1");
    assert_msg_has("VRAM_CUDA_LIBRARY");

    /* a library that is not a CUDA driver */
    snprintf(cfg.cuda_library, sizeof cfg.cuda_library, "libm.so.6");
    assert_int_equal(vram__backend_cuda_create(bcfg(&cfg), &b), VRAM_ENODEV);
    assert_msg_has("libm.so.6");
    assert_msg_has("has no cuInit");
}

/* The CUDA toolkit's stub libcuda (where one is installed) cannot name its
 * own errors: the message still names the error. */
static void test_stub_library_is_enodev(void **state)
{
    (void)state;
    const char *stub = "/usr/local/cuda/lib64/stubs/libcuda.so";
    FILE *f = fopen(stub, "rb");
    if (!f) skip();
    fclose(f);
    vram_config cfg;
    vram_config_init(&cfg);
    snprintf(cfg.cuda_library, sizeof cfg.cuda_library, "%s", stub);
    vram_backend *b = NULL;
    assert_int_equal(vram__backend_cuda_create(bcfg(&cfg), &b), VRAM_ENODEV);
    assert_null(b);
    assert_msg_has("cuInit");
    assert_msg_has("CUDA_ERROR_STUB_LIBRARY");
}

static void test_cuinit_failure_is_enodev(void **state)
{
    (void)state;
    vram_backend *b = NULL;
    assert_int_equal(D.set_fail("cuInit:1:NO_DEVICE"), 0);
    assert_int_equal(make_backend_chunk(&b, 0), VRAM_ENODEV);
    assert_null(b);
    assert_msg_has("cuInit");
    assert_msg_has("CUDA_ERROR_NO_DEVICE: no CUDA-capable device is detected");

    assert_int_equal(D.set_fail("cuInit:1:STUB_LIBRARY"), 0);
    assert_int_equal(make_backend_chunk(&b, 0), VRAM_ENODEV);
    assert_msg_has("CUDA_ERROR_STUB_LIBRARY");
}

static void test_zero_devices_is_enodev(void **state)
{
    (void)state;
    vram_backend *b = NULL;
    assert_int_equal(D.configure(0, 0), 0);
    assert_int_equal(make_backend_chunk(&b, 0), VRAM_ENODEV);
    assert_null(b);
    assert_msg_has("CUDA_ERROR_NO_DEVICE");
}

static void test_device_without_vmm_is_enodev(void **state)
{
    (void)state;
    vram_backend *b = NULL;
    D.set_flag("vmm", 0);
    assert_int_equal(make_backend_chunk(&b, 0), VRAM_ENODEV);
    assert_null(b);
    assert_msg_has("virtual memory management");
    assert_int_equal(stats().ctx_retained, 0);
}

static void test_visible_none_is_enodev(void **state)
{
    (void)state;
    vram_config cfg;
    vram_config_init(&cfg);
    snprintf(cfg.cuda_library, sizeof cfg.cuda_library, "%s", D.path);
    snprintf(cfg.visible_devices, sizeof cfg.visible_devices, "none");
    vram_backend *b = NULL;
    assert_int_equal(vram__backend_cuda_create(bcfg(&cfg), &b), VRAM_ENODEV);
    assert_msg_has("none");
}

/* ---- ranges ---- */

static void test_reserve_map_unmap_keeps_address(void **state)
{
    (void)state;
    vram_backend *b = make_backend(64 * MIB);
    vram_buf buf;
    memset(&buf, 0, sizeof buf);
    assert_int_equal(vram__backend_reserve(b, 0, 3 * MIB + 5, &buf), 0);
    assert_int_equal(buf.size, 3 * MIB + 5);
    assert_int_equal(buf.reserved, 4 * MIB);
    assert_int_equal(buf.addr % GRAN, 0);
    assert_int_equal(buf.mapped, 0);
    uintptr_t addr = buf.addr;
    assert_int_equal(D.accessible(addr), 0); /* reserved: touching it faults */

    vram_dev_info info;
    for (int cycle = 0; cycle < 3; cycle++) {
        assert_int_equal(vram__backend_map(b, &buf), 0);
        assert_int_equal(buf.mapped, 1);
        assert_int_equal(buf.addr, addr);
        assert_int_equal(D.accessible(addr), 1);
        assert_int_equal(D.accessible(addr + buf.reserved - 1), 1);
        assert_int_equal(vram__backend_device_info(b, 0, &info), 0);
        assert_int_equal(info.free, 252 * MIB);
        assert_int_equal(vram__backend_unmap(b, &buf), 0);
        assert_int_equal(buf.mapped, 0);
        assert_int_equal(buf.addr, addr);
        assert_int_equal(D.accessible(addr), 0);
        assert_int_equal(vram__backend_device_info(b, 0, &info), 0);
        assert_int_equal(info.free, 256 * MIB);
    }
    assert_int_equal(vram__backend_unmap(b, &buf), 0); /* unmapping an unmapped range is nothing */
    assert_int_equal(vram__backend_map(b, &buf), 0);
    vram__backend_unreserve(b, &buf); /* unmaps first */
    assert_int_equal(D.accessible(addr), -1);
    assert_int_equal(vram__backend_reserve(b, 0, 0, &buf), VRAM_EINVAL);
    assert_int_equal(vram__backend_reserve(b, 5, MIB, &buf), VRAM_EINVAL);
    vram__backend_destroy(b);
}

static void test_map_oom_leaves_range_intact(void **state)
{
    (void)state;
    vram_backend *b = make_backend(64 * MIB);
    vram_buf buf;
    memset(&buf, 0, sizeof buf);
    assert_int_equal(vram__backend_reserve(b, 1, 4 * MIB, &buf), 0);
    uintptr_t addr = buf.addr;

    /* injected: the driver's own out-of-memory answer */
    assert_int_equal(D.set_fail("cuMemCreate:1:OOM"), 0);
    assert_int_equal(vram__backend_map(b, &buf), VRAM_ENOMEM);
    assert_msg_has("cuMemCreate(4194304 bytes, device 1): CUDA_ERROR_OUT_OF_MEMORY: out of memory");
    assert_int_equal(buf.mapped, 0);
    assert_int_equal(buf.addr, addr);
    assert_int_equal(D.accessible(addr), 0);
    assert_int_equal(stats().allocations, 0);
    assert_int_equal(vram__backend_map(b, &buf), 0); /* and the range still works */
    assert_int_equal(buf.addr, addr);

    /* real: the device is full */
    vram_buf big;
    memset(&big, 0, sizeof big);
    assert_int_equal(vram__backend_reserve(b, 1, 254 * MIB, &big), 0);
    assert_int_equal(vram__backend_map(b, &big), VRAM_ENOMEM);
    assert_msg_has("CUDA_ERROR_OUT_OF_MEMORY");
    assert_int_equal(big.mapped, 0);
    assert_int_equal(D.accessible(big.addr), 0);
    assert_int_equal(vram__backend_unmap(b, &buf), 0);
    assert_int_equal(vram__backend_map(b, &big), 0); /* fits once the other is gone */
    vram__backend_unreserve(b, &big);
    vram__backend_unreserve(b, &buf);
    vram__backend_destroy(b);
}

static void test_map_failures_release_what_was_created(void **state)
{
    (void)state;
    vram_backend *b = make_backend(64 * MIB);
    vram_buf buf;
    memset(&buf, 0, sizeof buf);
    assert_int_equal(vram__backend_reserve(b, 0, 2 * MIB, &buf), 0);

    assert_int_equal(D.set_fail("cuMemMap:1:NOT_SUPPORTED"), 0);
    assert_int_equal(vram__backend_map(b, &buf), VRAM_EBACKEND);
    assert_msg_has("cuMemMap(");
    assert_msg_has("CUDA_ERROR_NOT_SUPPORTED: operation not supported");
    assert_int_equal(buf.mapped, 0);
    assert_int_equal(stats().allocations, 0);

    assert_int_equal(D.set_fail("cuMemSetAccess:1:INVALID_VALUE"), 0);
    assert_int_equal(vram__backend_map(b, &buf), VRAM_EBACKEND);
    assert_msg_has("cuMemSetAccess(");
    assert_msg_has("CUDA_ERROR_INVALID_VALUE: invalid argument");
    assert_int_equal(buf.mapped, 0);
    assert_int_equal(stats().allocations, 0);
    assert_int_equal(stats().mappings, 0);
    assert_int_equal(D.accessible(buf.addr), 0);

    assert_int_equal(D.set_fail("cuMemUnmap:1:NOT_PERMITTED"), 0);
    assert_int_equal(vram__backend_map(b, &buf), 0);
    assert_int_equal(vram__backend_unmap(b, &buf), VRAM_EBACKEND);
    assert_int_equal(buf.mapped, 1); /* still mapped, still usable */
    assert_int_equal(D.accessible(buf.addr), 1);
    assert_int_equal(vram__backend_unmap(b, &buf), 0);

    assert_int_equal(D.set_fail("cuMemAddressReserve:1:OOM"), 0);
    vram_buf other;
    memset(&other, 0, sizeof other);
    /* out of virtual address space is not out of device memory (no eviction) */
    assert_int_equal(vram__backend_reserve(b, 0, MIB, &other), VRAM_EBACKEND);
    assert_msg_has("cuMemAddressReserve");
    assert_msg_has("virtual address space");
    vram__backend_unreserve(b, &buf);
    vram__backend_unreserve(b, &other); /* never reserved: nothing */
    vram__backend_destroy(b);
}

/* ---- host memory and copies ---- */

/* Backups are mappings registered with cuMemHostRegister (not one slow
 * cuMemHostAlloc each), pooled for reuse; where registering is not
 * supported cuMemHostAlloc stands in. */
static void test_host_alloc_registers_and_pools(void **state)
{
    (void)state;
    vram_backend *b = make_backend(64 * MIB);
    vram_double_stats s0 = stats();
    void *p = NULL, *q = NULL;
    assert_int_equal(vram__backend_host_alloc(b, 3 * MIB, &p), 0);
    assert_non_null(p);
    memset(p, 0xab, 3 * MIB);
    assert_int_equal(stats().host_allocs, 0);
    assert_int_equal(stats().host_registered, 1);
    assert_int_equal(stats().pinned_register_bytes - s0.pinned_register_bytes, 4 * MIB);
    assert_int_equal(stats().pinned_alloc_bytes, s0.pinned_alloc_bytes);
    vram__backend_host_free(b, p, 3 * MIB);
    assert_int_equal(stats().host_registered, 1); /* pooled, still pinned */
    assert_int_equal(vram__backend_host_alloc(b, 3 * MIB, &q), 0);
    assert_ptr_equal(q, p); /* reused: no second pinning */
    assert_int_equal(stats().pinned_register_bytes - s0.pinned_register_bytes, 4 * MIB);
    vram__backend_host_free(b, q, 3 * MIB);
    vram__backend_host_free(b, NULL, 0);

    assert_int_equal(D.set_fail("cuMemHostRegister_v2:1:OOM"), 0);
    assert_int_equal(vram__backend_host_alloc(b, 16 * MIB, &p), VRAM_EHOSTMEM);
    assert_null(p);
    assert_msg_has("cuMemHostRegister_v2(16777216 bytes, portable): CUDA_ERROR_OUT_OF_MEMORY");
    assert_int_equal(D.set_fail("cuMemHostRegister_v2:1:NOT_SUPPORTED"), 0);
    assert_int_equal(vram__backend_host_alloc(b, 16 * MIB, &p), 0); /* cuMemHostAlloc instead */
    assert_int_equal(stats().host_allocs, 1);
    vram__backend_host_free(b, p, 16 * MIB);
    assert_int_equal(stats().host_allocs, 0);
    assert_int_equal(vram__backend_host_alloc(b, 0, &p), VRAM_EINVAL);
    vram__backend_destroy(b);
    assert_int_equal(stats().host_registered, 0);
}

static int fake_pin(void *user, void *p, size_t n)
{
    (void)p;
    *(size_t *)user += n;
    return 0;
}

static void fake_unpin(void *user, void *p, size_t n)
{
    (void)p;
    *(size_t *)user -= n;
}

/* Pinned memory is bounded: past the bound the pool is emptied to make
 * room, then a clear VRAM_EHOSTMEM (never the OOM killer). */
static void test_pinned_pool_is_bounded(void **state)
{
    (void)state;
    size_t pinned = 0;
    cuda_pin_ops ops = {fake_pin, fake_unpin, &pinned};
    cuda_pinned pp;
    vram__pinned_init(&pp, &ops, 16 * MIB);
    void *a, *b2, *c;
    double secs;
    assert_int_equal(vram__pinned_get(&pp, 4 * MIB, &a, &secs), 0);
    assert_int_equal(vram__pinned_get(&pp, 10 * MIB, &b2, &secs), 0);
    assert_int_equal(vram__pinned_get(&pp, 4 * MIB, &c, &secs), VRAM_EHOSTMEM);
    assert_msg_has("bound on pinned memory");
    assert_int_equal(vram__pinned_put(&pp, a), 1); /* pooled (pool_max = 4 MiB) */
    assert_int_equal(pinned, 14 * MIB);
    assert_int_equal(vram__pinned_get(&pp, 6 * MIB, &c, &secs), 0); /* drops the pooled 4 */
    assert_int_equal(pinned, 16 * MIB);
    assert_int_equal(vram__pinned_put(&pp, &pinned), 0); /* not one of the pool's */
    vram__pinned_put(&pp, b2);
    vram__pinned_put(&pp, c);
    vram__pinned_destroy(&pp);
    assert_int_equal(pinned, 0);
}

static void fill(unsigned char *p, size_t n, uint64_t seed)
{
    vram_synthetic_fill(seed, 0, p, n);
}

static void test_chunked_copies_are_pipelined(void **state)
{
    (void)state;
    const size_t chunk = 64 * 1024;
    vram_backend *b = make_backend(chunk);
    D.set_flag("lazy", 1); /* nothing runs before the stream is synchronized */
    vram_buf buf;
    memset(&buf, 0, sizeof buf);
    const size_t size = MIB + 13;
    assert_int_equal(vram__backend_reserve(b, 1, size, &buf), 0);
    assert_int_equal(vram__backend_map(b, &buf), 0);
    unsigned char *src, *dst;
    assert_int_equal(vram__backend_host_alloc(b, size, (void **)&src), 0);
    assert_int_equal(vram__backend_host_alloc(b, size, (void **)&dst), 0);

    const size_t sizes[] = {1, 7, chunk - 1, chunk, chunk + 1, 5 * chunk + 13, size};
    const size_t offs[] = {0, 3, chunk - 1};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        for (size_t j = 0; j < sizeof offs / sizeof offs[0]; j++) {
            size_t n = sizes[i], off = offs[j];
            if (off + n > size) continue;
            size_t chunks = (n + chunk - 1) / chunk;
            fill(src, n, i * 10 + j);
            memset(dst, 0, n);
            long h0 = D.calls("cuMemcpyHtoDAsync_v2"), d0 = D.calls("cuMemcpyDtoHAsync_v2");
            long s0 = D.calls("cuStreamSynchronize");
            assert_int_equal(vram__backend_to_device(b, &buf, off, src, n), 0);
            assert_int_equal(D.calls("cuMemcpyHtoDAsync_v2") - h0, (long)chunks);
            assert_int_equal(D.calls("cuStreamSynchronize") - s0, 1);
            /* after to_device returned, the bytes are on the device */
            assert_memory_equal((unsigned char *)buf.addr + off, src, n);
            assert_int_equal(vram__backend_to_host(b, &buf, off, dst, n), 0);
            assert_int_equal(D.calls("cuMemcpyDtoHAsync_v2") - d0, (long)chunks);
            assert_int_equal(D.calls("cuStreamSynchronize") - s0, 2);
            assert_memory_equal(dst, src, n);
        }
    }
    /* every chunk of a copy was queued before the first one ran */
    assert_true(stats().max_pending >= (long)((size + chunk - 1) / chunk));
    assert_int_equal(vram__backend_to_device(b, &buf, 0, src, 0), 0);
    assert_int_equal(vram__backend_to_host(b, &buf, size, dst, 1), VRAM_EINVAL);
    assert_int_equal(vram__backend_to_host(b, &buf, 0, NULL, 1), VRAM_EINVAL);
    vram__backend_host_free(b, src, size);
    vram__backend_host_free(b, dst, size);
    assert_int_equal(vram__backend_unmap(b, &buf), 0);
    assert_int_equal(vram__backend_to_host(b, &buf, 0, dst, 1), VRAM_EINVAL); /* not mapped */
    vram__backend_unreserve(b, &buf);
    vram__backend_destroy(b);
}

static void test_pageable_upload_and_download(void **state)
{
    (void)state;
    vram_backend *b = make_backend(64 * 1024);
    D.set_flag("lazy", 1);
    vram_buf buf;
    memset(&buf, 0, sizeof buf);
    const size_t n = 300 * 1024 + 3;
    assert_int_equal(vram__backend_reserve(b, 0, n, &buf), 0);
    assert_int_equal(vram__backend_map(b, &buf), 0);
    unsigned char *user = malloc(n), *want = malloc(n), *back = malloc(n);
    assert_non_null(user);
    assert_non_null(want);
    assert_non_null(back);
    fill(want, n, 99);
    memcpy(user, want, n);
    long pg0 = stats().pageable_copies;
    assert_int_equal(vram__backend_to_device(b, &buf, 0, user, n), 0);
    memset(user, 0x5a, n); /* the caller reuses its buffer at once */
    assert_true(stats().pageable_copies - pg0 >= 5);
    assert_int_equal(vram__backend_to_host(b, &buf, 0, back, n), 0); /* pageable destination too */
    assert_memory_equal(back, want, n);
    free(user);
    free(want);
    free(back);
    vram__backend_unreserve(b, &buf);
    vram__backend_destroy(b);
}

static void test_copy_errors_carry_driver_names(void **state)
{
    (void)state;
    const size_t chunk = 64 * 1024;
    vram_backend *b = make_backend(chunk);
    vram_buf buf;
    memset(&buf, 0, sizeof buf);
    assert_int_equal(vram__backend_reserve(b, 0, 4 * chunk, &buf), 0);
    assert_int_equal(vram__backend_map(b, &buf), 0);
    void *h;
    assert_int_equal(vram__backend_host_alloc(b, 4 * chunk, &h), 0);
    assert_int_equal(D.set_fail("cuMemcpyHtoDAsync_v2:2:INVALID_VALUE"), 0);
    long s0 = D.calls("cuStreamSynchronize");
    assert_int_equal(vram__backend_to_device(b, &buf, 0, h, 4 * chunk), VRAM_EBACKEND);
    assert_msg_has("cuMemcpyHtoDAsync_v2(65536 bytes at offset 65536");
    assert_msg_has("CUDA_ERROR_INVALID_VALUE: invalid argument");
    assert_int_equal(D.calls("cuStreamSynchronize") - s0, 1); /* drained before returning */

    assert_int_equal(D.set_fail("cuStreamSynchronize:1:NOT_SUPPORTED"), 0);
    assert_int_equal(vram__backend_to_host(b, &buf, 0, h, chunk), VRAM_EBACKEND);
    assert_msg_has("cuStreamSynchronize");
    assert_msg_has("CUDA_ERROR_NOT_SUPPORTED");

    assert_int_equal(D.set_fail("cuMemcpyDtoHAsync_v2:1:OOM"), 0);
    assert_int_equal(vram__backend_to_host(b, &buf, 0, h, chunk), VRAM_ENOMEM);
    assert_int_equal(vram__backend_to_host(b, &buf, 0, h, 4 * chunk), 0); /* and it works again */
    vram__backend_host_free(b, h, 4 * chunk);
    vram__backend_unreserve(b, &buf);
    vram__backend_destroy(b);
}

/* ---- checksum kernel ---- */

static void test_checksum_kernel_matches_host(void **state)
{
    (void)state;
    vram_backend *b = make_backend(64 * MIB);
    D.set_flag("lazy", 1);
    vram_buf buf;
    memset(&buf, 0, sizeof buf);
    const size_t size = 8 * MIB + 5; /* over a million words: the grid strides */
    assert_int_equal(vram__backend_reserve(b, 0, size, &buf), 0);
    assert_int_equal(vram__backend_map(b, &buf), 0);
    unsigned char *h;
    assert_int_equal(vram__backend_host_alloc(b, size, (void **)&h), 0);
    fill(h, size, 7);
    assert_int_equal(vram__backend_to_device(b, &buf, 0, h, size), 0);

    static const struct {
        size_t off, n;
    } cases[] = {
        {0, 8 * MIB + 5}, {0, 1},       {8, 1000},        {16, 13},
        {4096, 7},        {8 * MIB, 5}, {64, 2048 * 256}, {0, 2048 * 256 * 8 + 3},
    };
    long l0 = stats().launches;
    long loads0 = D.calls("cuModuleLoadData");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t sum = 0;
        assert_int_equal(vram__backend_checksum(b, &buf, cases[i].off, cases[i].n, &sum), 0);
        assert_int_equal(sum,
                         vram__checksum_partial(h + cases[i].off, cases[i].n, cases[i].off / 8));
    }
    assert_int_equal(stats().launches - l0, (long)(sizeof cases / sizeof cases[0]));
    uint64_t sum;
    assert_int_equal(vram__backend_checksum(b, &buf, 0, size, &sum), 0);
    assert_int_equal(sum + vram__checksum_final(size), vram_checksum(h, size));
    assert_int_equal(vram__backend_checksum(b, &buf, 0, 0, &sum), 0);
    assert_int_equal(sum, 0);
    assert_int_equal(vram__backend_checksum(b, &buf, 4, 8, &sum), VRAM_EINVAL);
    assert_int_equal(D.calls("cuModuleLoadData") - loads0, 1); /* loaded once, on first use */
    vram__backend_host_free(b, h, size);
    vram__backend_unreserve(b, &buf);
    vram__backend_destroy(b);
}

static void test_checksum_module_failure_is_enotsup(void **state)
{
    (void)state;
    vram_backend *b = make_backend(64 * MIB);
    vram_buf buf;
    memset(&buf, 0, sizeof buf);
    assert_int_equal(vram__backend_reserve(b, 0, MIB, &buf), 0);
    assert_int_equal(vram__backend_map(b, &buf), 0);
    long m0 = D.calls("cuModuleLoadData"), l0 = stats().launches;
    assert_int_equal(D.set_fail("cuModuleLoadData:*:UNSUPPORTED_PTX"), 0);
    uint64_t sum = 42;
    assert_int_equal(vram__backend_checksum(b, &buf, 0, 64, &sum), VRAM_ENOTSUP);
    assert_msg_has("cuModuleLoadData");
    assert_msg_has("CUDA_ERROR_UNSUPPORTED_PTX_VERSION");
    assert_int_equal(sum, 42);
    assert_int_equal(vram__backend_checksum(b, &buf, 0, 64, &sum), VRAM_ENOTSUP);
    assert_int_equal(D.calls("cuModuleLoadData") - m0, 1); /* the answer is kept */
    assert_int_equal(stats().launches, l0);                /* nothing was launched */
    vram__backend_unreserve(b, &buf);
    vram__backend_destroy(b);
}

/* ---- contexts and threads ---- */

typedef struct worker {
    vram_backend *b;
    int dev, id, cycles;
    int failures;
    char msg[256];
} worker;

#define WCHECK(cond)                                                                               \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            w->failures++;                                                                         \
            snprintf(w->msg, sizeof w->msg, "line %d: %s (%s)", __LINE__, #cond,                   \
                     vram__last_error());                                                          \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)

/* One model's life on one device, from a thread that never made any
 * context current itself. */
static void *worker_main(void *arg)
{
    worker *w = arg;
    vram_backend *b = w->b;
    const size_t n = 3 * MIB + 17 * (size_t)w->id;
    vram_buf buf;
    memset(&buf, 0, sizeof buf);
    unsigned char *pin = NULL;
    unsigned char *want = malloc(n);
    WCHECK(want != NULL);
    fill(want, n, 1000 + (uint64_t)w->id);
    WCHECK(vram__backend_reserve(b, w->dev, n, &buf) == 0);
    WCHECK(D.depth() == 0);
    WCHECK(vram__backend_host_alloc(b, n, (void **)&pin) == 0);
    memcpy(pin, want, n);
    WCHECK(vram__backend_map(b, &buf) == 0);
    WCHECK(vram__backend_to_device(b, &buf, 0, pin, n) == 0);
    uintptr_t addr = buf.addr;
    for (int c = 0; c < w->cycles; c++) {
        memset(pin, 0, n);
        WCHECK(vram__backend_to_host(b, &buf, 0, pin, n) == 0); /* offload */
        WCHECK(vram__backend_unmap(b, &buf) == 0);
        WCHECK(vram__backend_map(b, &buf) == 0); /* restore at the same address */
        WCHECK(buf.addr == addr);
        WCHECK(vram__backend_to_device(b, &buf, 0, pin, n) == 0);
        uint64_t sum = 0;
        WCHECK(vram__backend_checksum(b, &buf, 0, n, &sum) == 0);
        WCHECK(sum == vram__checksum_partial(want, n, 0));
        vram_dev_info info;
        WCHECK(vram__backend_device_info(b, w->dev, &info) == 0);
        WCHECK(D.depth() == 0);
    }
    WCHECK(memcmp(pin, want, n) == 0);
out:
    if (buf.impl) vram__backend_unreserve(b, &buf);
    if (pin) vram__backend_host_free(b, pin, n);
    free(want);
    return NULL;
}

static void test_threads_share_devices_and_streams(void **state)
{
    (void)state;
    vram_backend *b = make_backend(256 * 1024);
    enum { NT = 6 };
    pthread_t t[NT];
    worker w[NT];
    for (int i = 0; i < NT; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].b = b;
        w[i].dev = i % 2;
        w[i].id = i;
        w[i].cycles = 4;
        assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < NT; i++) {
        pthread_join(t[i], NULL);
        if (w[i].failures) fail_msg("worker %d: %s", i, w[i].msg);
    }
    assert_true(stats().streams <= 2 * 4); /* a small pool per device */
    assert_true(stats().streams >= 2);
    vram__backend_destroy(b);
}

/* ---- NVML ---- */

static void test_nvml_picks_most_free_then_least_busy(void **state)
{
    (void)state;
    char uuid[96], why[1024];
    int idx = -1;
    assert_int_equal(D.nvml_set("8G:10,16G:50,16G:5,12G:0", 0), 0);
    assert_int_equal(vram__nvml_pick(uuid, sizeof uuid, &idx, why, sizeof why), 0);
    assert_int_equal(idx, 2);
    assert_string_equal(uuid, "GPU-d0b1e000-0000-4000-8000-000000000002");
    assert_non_null(strstr(why, "picked GPU 2 GPU-d0b1e000-0000-4000-8000-000000000002"));
    assert_non_null(strstr(why, "5% busy"));

    /* more free memory beats a lower utilization */
    assert_int_equal(D.nvml_set("16G:50,15G:0", 0), 0);
    assert_int_equal(vram__nvml_pick(uuid, sizeof uuid, &idx, why, sizeof why), 0);
    assert_int_equal(idx, 0);

    /* free memory within the tie margin: utilization decides */
    assert_int_equal(D.nvml_set("16G:30,16.1G:20", 0), 0);
    assert_int_equal(vram__nvml_pick(uuid, sizeof uuid, &idx, why, sizeof why), 0);
    assert_int_equal(idx, 1);
    assert_int_equal(D.nvml_set("16.1G:30,16G:20", 0), 0);
    assert_int_equal(vram__nvml_pick(uuid, sizeof uuid, &idx, why, sizeof why), 0);
    assert_int_equal(idx, 1);
    assert_int_equal(D.nvml_set("16G:30,16.5G:90", 0), 0);
    assert_int_equal(vram__nvml_pick(uuid, sizeof uuid, &idx, why, sizeof why), 0);
    assert_int_equal(idx, 1);

    /* a device that cannot report its utilization ranks after one that can */
    assert_int_equal(D.nvml_set("16G:-,16G:90", 0), 0);
    assert_int_equal(vram__nvml_pick(uuid, sizeof uuid, &idx, why, sizeof why), 0);
    assert_int_equal(idx, 1);
    assert_int_equal(D.nvml_set("16G:-", 0), 0);
    assert_int_equal(vram__nvml_pick(uuid, sizeof uuid, &idx, why, sizeof why), 0);
    assert_non_null(strstr(why, "busy unknown"));
    assert_int_equal(D.nvml_inits(), 0); /* shut down every time */
}

static void test_nvml_missing_is_a_clear_error(void **state)
{
    (void)state;
    char uuid[96] = "x", why[512];
    setenv("VRAM_NVML_LIBRARY", "/nonexistent/libnvidia-ml.so.1", 1);
    int rc = vram__nvml_pick(uuid, sizeof uuid, NULL, why, sizeof why);
    setenv("VRAM_NVML_LIBRARY", D.nvml_path, 1);
    assert_int_equal(rc, VRAM_ENODEV);
    assert_string_equal(uuid, "");
    assert_non_null(strstr(why, "/nonexistent/libnvidia-ml.so.1"));
    assert_non_null(strstr(why, "no GPU picked"));

    /* NVML present, driver not loaded */
    assert_int_equal(D.nvml_set(NULL, 9), 0);
    assert_int_equal(vram__nvml_pick(uuid, sizeof uuid, NULL, why, sizeof why), VRAM_ENODEV);
    assert_non_null(strstr(why, "nvmlInit_v2: Driver Not Loaded"));
    assert_int_equal(D.nvml_set("", 0), 0);
    assert_int_equal(vram__nvml_pick(uuid, sizeof uuid, NULL, why, sizeof why), VRAM_ENODEV);
    assert_non_null(strstr(why, "no GPU"));
}

static void test_nvml_pin_selects_the_cuda_device(void **state)
{
    (void)state;
    char uuid[96], why[512];
    assert_int_equal(D.nvml_set("4G:0,8G:0", 0), 0);
    assert_int_equal(vram__nvml_pin_best(uuid, sizeof uuid, why, sizeof why), 0);
    assert_string_equal(getenv("CUDA_VISIBLE_DEVICES"), "GPU-d0b1e000-0000-4000-8000-000000000001");
    assert_int_equal(D.configure(2, 256 * MIB), 0); /* the driver reads it at its next cuInit */
    vram_backend *b = make_backend(0);
    assert_int_equal(vram__backend_device_count(b), 1);
    vram_dev_info info;
    assert_int_equal(vram__backend_device_info(b, 0, &info), 0);
    assert_string_equal(info.uuid, uuid);
    vram__backend_destroy(b);
    unsetenv("CUDA_VISIBLE_DEVICES");
}

/* ---- the whole manager on the CUDA backend ---- */

static uint64_t synthetic_checksum(uint64_t seed, size_t n)
{
    unsigned char *p = malloc(n);
    assert_non_null(p);
    vram_synthetic_fill(seed, 0, p, n);
    uint64_t c = vram_checksum(p, n);
    free(p);
    return c;
}

static void test_manager_cycles_on_cuda(void **state)
{
    (void)state;
    vram_config cfg;
    vram_config_init(&cfg);
    cfg.backend = VRAM_BACKEND_CUDA;
    snprintf(cfg.cuda_library, sizeof cfg.cuda_library, "%s", D.path);
    cfg.no_monitor_thread = 1;
    cfg.idle_timeout = 0;
    cfg.chunk_bytes = 256 * 1024;
    cfg.log_level = VRAM_LOG_ERROR;
    D.set_flag("lazy", 1);
    vram_manager *m = NULL;
    assert_int_equal(vram_manager_create(&cfg, &m), 0);
    assert_string_equal(vram_manager_backend(m), "cuda");

    const size_t n = 5 * MIB + 3;
    const uint64_t want = synthetic_checksum(11, n);
    vram_model_opts o;
    vram_model_opts_init(&o);
    o.source = "synthetic:5242883:11";
    o.device = 1;
    vram_model *model = NULL;
    assert_int_equal(vram_manager_register(m, "m1", &o, &model), 0);

    vram_lease *l = NULL;
    assert_int_equal(vram_model_acquire(model, &l), 0);
    void *ptr = vram_lease_ptr(l);
    assert_int_equal(D.accessible((uintptr_t)ptr), 1);
    uint64_t c = 0;
    long l0 = stats().launches;
    assert_int_equal(vram_model_checksum(model, &c), 0);
    assert_int_equal(c, want);
    assert_true(stats().launches > l0); /* computed by the kernel path */
    vram_lease_end(l);

    for (int cycle = 0; cycle < 3; cycle++) {
        assert_int_equal(vram_model_offload(model, VRAM_WAIT), 0);
        assert_int_equal(vram_model_state(model), VRAM_STATE_CPU);
        assert_int_equal(D.accessible((uintptr_t)ptr), 0);   /* unmapped, address kept */
        assert_int_equal(vram_model_checksum(model, &c), 0); /* from the pinned backup */
        assert_int_equal(c, want);
        assert_int_equal(vram_model_acquire(model, &l), 0);
        assert_ptr_equal(vram_lease_ptr(l), ptr);
        assert_int_equal(vram_model_checksum(model, &c), 0);
        assert_int_equal(c, want);
        vram_lease_end(l);
    }
    char *js = vram_manager_devices_json(m);
    assert_non_null(js);
    assert_non_null(strstr(js, "GPU-d0b1e000-0000-4000-8000-000000000001"));
    free(js);
    assert_int_equal(vram_model_release(model, VRAM_WAIT), 0);
    vram_manager_destroy(m);
}

/* CUDA_ERROR_OUT_OF_MEMORY from the driver (another process took the memory)
 * evicts idle models through the core and retries; when nothing is left to
 * evict it is the core's clear ENOMEM with the model intact on the CPU. */
static void test_driver_oom_evicts_then_fails_cleanly(void **state)
{
    (void)state;
    vram_config cfg;
    vram_config_init(&cfg);
    cfg.backend = VRAM_BACKEND_CUDA;
    snprintf(cfg.cuda_library, sizeof cfg.cuda_library, "%s", D.path);
    cfg.no_monitor_thread = 1;
    cfg.idle_timeout = 0;
    cfg.evict_wait = 0.1;
    cfg.log_level = VRAM_LOG_ERROR;
    vram_manager *m = NULL;
    assert_int_equal(vram_manager_create(&cfg, &m), 0);
    vram_model_opts o;
    vram_model_opts_init(&o);
    vram_model *a = NULL, *b = NULL;
    o.source = "synthetic:4M:1";
    assert_int_equal(vram_manager_register(m, "a", &o, &a), 0);
    o.source = "synthetic:4M:2";
    assert_int_equal(vram_manager_register(m, "b", &o, &b), 0);
    vram_lease *l = NULL;
    assert_int_equal(vram_model_acquire(b, &l), 0);
    vram_lease_end(l);
    assert_int_equal(vram_model_offload(b, VRAM_WAIT), 0);
    assert_int_equal(vram_model_acquire(a, &l), 0);
    vram_lease_end(l);

    /* the next cuMemCreate fails: a (idle) is evicted and b's restore retried */
    assert_int_equal(D.set_fail("cuMemCreate:1:OOM"), 0);
    assert_int_equal(vram_model_acquire(b, &l), 0);
    assert_int_equal(vram_model_state(a), VRAM_STATE_CPU);
    uint64_t c = 0;
    assert_int_equal(vram_model_checksum(b, &c), 0);
    assert_int_equal(c, synthetic_checksum(2, 4 * MIB));
    vram_lease_end(l);

    /* every cuMemCreate fails: nothing to evict helps; a stays on the CPU, intact */
    assert_int_equal(D.set_fail("cuMemCreate:*:OOM"), 0);
    assert_int_equal(vram_model_acquire(a, &l), VRAM_ENOMEM);
    assert_null(l);
    assert_int_equal(vram_model_state(a), VRAM_STATE_CPU);
    assert_int_equal(vram_model_checksum(a, &c), 0);
    assert_int_equal(c, synthetic_checksum(1, 4 * MIB));
    char *st = vram_model_status_json(m, "a");
    assert_non_null(strstr(st, "CUDA_ERROR_OUT_OF_MEMORY"));
    free(st);
    assert_int_equal(D.set_fail(""), 0);
    assert_int_equal(vram_model_acquire(a, &l), 0);
    vram_lease_end(l);
    vram_manager_destroy(m);
}

/* The fault decorator over the cuda backend: an injected map failure on a
 * restore leaves the model on the CPU with its backup intact, nothing
 * mapped in the driver, and the next restore puts it back at its address. */
static void test_injected_map_failure_keeps_model_on_cpu(void **state)
{
    (void)state;
    vram_config cfg;
    vram_config_init(&cfg);
    cfg.backend = VRAM_BACKEND_CUDA;
    snprintf(cfg.cuda_library, sizeof cfg.cuda_library, "%s", D.path);
    cfg.no_monitor_thread = 1;
    cfg.idle_timeout = 0;
    cfg.evict_wait = 0;
    cfg.log_level = VRAM_LOG_ERROR;
    cfg.fault_injection = 1;
    vram_manager *m = NULL;
    assert_int_equal(vram_manager_create(&cfg, &m), 0);
    assert_string_equal(vram_manager_backend(m), "cuda");
    vram_model_opts o;
    vram_model_opts_init(&o);
    o.source = "synthetic:3M:7";
    vram_model *model = NULL;
    assert_int_equal(vram_manager_register(m, "m", &o, &model), 0);
    const uint64_t want = synthetic_checksum(7, 3 * MIB);
    vram_lease *l = NULL;
    assert_int_equal(vram_model_acquire(model, &l), 0);
    void *ptr = vram_lease_ptr(l);
    vram_lease_end(l);
    assert_int_equal(vram_model_offload(model, VRAM_WAIT), 0);
    long mappings = stats().mappings;

    assert_int_equal(vram__backend_inject(m->backend, "map", 1, VRAM_EBACKEND), 0);
    assert_int_equal(vram_model_acquire(model, &l), VRAM_EBACKEND);
    assert_null(l);
    assert_int_equal(vram_model_state(model), VRAM_STATE_CPU);
    assert_int_equal(stats().mappings, mappings);
    assert_int_equal(D.accessible((uintptr_t)ptr), 0);
    char *st = vram_model_status_json(m, "m");
    assert_non_null(strstr(st, "injected failure: map #1"));
    free(st);
    uint64_t c = 0;
    assert_int_equal(vram_model_checksum(model, &c), 0); /* the backup */
    assert_int_equal(c, want);

    assert_int_equal(vram_model_acquire(model, &l), 0); /* one-shot: this one maps */
    assert_ptr_equal(vram_lease_ptr(l), ptr);
    assert_int_equal(vram_model_checksum(model, &c), 0);
    assert_int_equal(c, want);
    vram_lease_end(l);
    assert_int_equal(vram_model_release(model, VRAM_WAIT), 0);
    vram_manager_destroy(m);
}

/* NVIDIA_VISIBLE_DEVICES=1 in the environment is the container runtime's:
 * the index is not re-applied as CUDA_VISIBLE_DEVICES (it would hide the
 * only device inside a container); a UUID is. */
static void test_nvidia_visible_devices_index_left_to_runtime(void **state)
{
    (void)state;
    vram_config cfg;
    vram_config_init(&cfg);
    cfg.backend = VRAM_BACKEND_CUDA;
    snprintf(cfg.cuda_library, sizeof cfg.cuda_library, "%s", D.path);
    unsetenv("CUDA_VISIBLE_DEVICES");
    setenv("NVIDIA_VISIBLE_DEVICES", "1", 1);
    snprintf(cfg.visible_devices, sizeof cfg.visible_devices, "1");
    vram_backend *b = NULL;
    assert_int_equal(vram__backend_cuda_create(bcfg(&cfg), &b), 0);
    assert_null(getenv("CUDA_VISIBLE_DEVICES"));
    vram__backend_destroy(b);
    unsetenv("NVIDIA_VISIBLE_DEVICES");
}

/* ---- defects of issue 10, each against the double ---- */

/* Defect 1: kernels the application queued on its own streams may still
 * use the memory; unmap and a backup copy wait for them (cuCtxSynchronize)
 * instead of unmapping under them (ILLEGAL_ADDRESS) or tearing the copy. */
static void test_unmap_and_backup_wait_for_application_work(void **state)
{
    (void)state;
    vram_backend *b = make_backend(MIB);
    vram_buf buf;
    assert_int_equal(vram__backend_reserve(b, 0, 4 * MIB, &buf), 0);
    assert_int_equal(vram__backend_map(b, &buf), 0);
    void *h;
    assert_int_equal(vram__backend_host_alloc(b, 4 * MIB, &h), 0);
    assert_int_equal(D.user_work(buf.addr, 4 * MIB), 0);
    assert_int_equal(vram__backend_to_host(b, &buf, 0, h, 4 * MIB), 0);
    assert_int_equal(stats().user_pending, 0); /* waited for before the copy */
    assert_int_equal(D.user_work(buf.addr + MIB, MIB), 0);
    assert_int_equal(vram__backend_unmap(b, &buf), 0);
    assert_int_equal(stats().user_pending, 0); /* and before the unmap */
    assert_int_equal(stats().violations, D.violations_at_start);
    assert_int_equal(vram__backend_map(b, &buf), 0); /* the context is alive */
    vram__backend_host_free(b, h, 4 * MIB);
    vram__backend_unreserve(b, &buf);
    vram__backend_destroy(b);
}

static vram_manager *cuda_manager(void)
{
    vram_config cfg;
    vram_config_init(&cfg);
    cfg.backend = VRAM_BACKEND_CUDA;
    snprintf(cfg.cuda_library, sizeof cfg.cuda_library, "%s", D.path);
    cfg.no_monitor_thread = 1;
    cfg.idle_timeout = 0;
    cfg.chunk_bytes = 256 * 1024;
    cfg.log_level = VRAM_LOG_ERROR;
    vram_manager *m = NULL;
    assert_int_equal(vram_manager_create(&cfg, &m), 0);
    return m;
}

/* Defect 1 through the manager: a lease ends with a kernel still queued
 * (PyTorch returns before its kernels finish); offload and release wait. */
static void test_offload_and_release_wait_for_queued_kernels(void **state)
{
    (void)state;
    vram_manager *m = cuda_manager();
    vram_model_opts o;
    vram_model_opts_init(&o);
    o.source = "synthetic:3145728:5";
    vram_model *model = NULL;
    assert_int_equal(vram_manager_register(m, "k", &o, &model), 0);
    for (int cycle = 0; cycle < 2; cycle++) {
        vram_lease *l = NULL;
        assert_int_equal(vram_model_acquire(model, &l), 0);
        assert_int_equal(D.user_work((uintptr_t)vram_lease_ptr(l), 3 * MIB), 0);
        vram_lease_end(l);
        assert_int_equal(vram_model_offload(model, VRAM_WAIT), 0);
        assert_int_equal(stats().user_pending, 0);
        uint64_t c = 0;
        assert_int_equal(vram_model_checksum(model, &c), 0);
        assert_int_equal(c, synthetic_checksum(5, 3 * MIB));
    }
    vram_lease *l = NULL;
    assert_int_equal(vram_model_acquire(model, &l), 0);
    assert_int_equal(D.user_work((uintptr_t)vram_lease_ptr(l), MIB), 0);
    vram_lease_end(l);
    assert_int_equal(vram_model_release(model, VRAM_WAIT), 0);
    assert_int_equal(stats().user_pending, 0);
    assert_int_equal(stats().violations, D.violations_at_start);
    vram_manager_destroy(m);
}

/* Defect 3: after a sticky error the backend is latched unusable: calls
 * fail at once with the driver's code and text, even if the driver were
 * to answer again; cleanup still gives everything back. */
static void test_sticky_error_latches_the_backend(void **state)
{
    (void)state;
    vram_backend *b = make_backend(MIB);
    vram_buf buf;
    assert_int_equal(vram__backend_reserve(b, 0, 2 * MIB, &buf), 0);
    assert_int_equal(vram__backend_map(b, &buf), 0);
    void *h;
    assert_int_equal(vram__backend_host_alloc(b, 2 * MIB, &h), 0);
    assert_int_equal(D.set_sticky(0, CUDA_ERROR_ILLEGAL_ADDRESS), 0);
    assert_int_equal(vram__backend_to_host(b, &buf, 0, h, 2 * MIB), VRAM_EBACKEND);
    assert_msg_has("CUDA_ERROR_ILLEGAL_ADDRESS: an illegal memory access was encountered");
    assert_msg_has("unusable");
    assert_int_equal(D.set_sticky(0, 0), 0); /* the double forgets; vram must not */
    long copies = D.calls("cuMemcpyDtoHAsync_v2"), syncs = D.calls("cuCtxSynchronize");
    assert_int_equal(vram__backend_to_host(b, &buf, 0, h, 2 * MIB), VRAM_EBACKEND);
    assert_msg_has("CUDA_ERROR_ILLEGAL_ADDRESS");
    assert_int_equal(vram__backend_to_device(b, &buf, 0, h, 2 * MIB), VRAM_EBACKEND);
    vram_buf other;
    assert_int_equal(vram__backend_reserve(b, 1, 2 * MIB, &other), VRAM_EBACKEND);
    void *h2 = NULL;
    assert_int_equal(vram__backend_host_alloc(b, MIB, &h2), VRAM_EBACKEND);
    assert_int_equal(D.calls("cuMemcpyDtoHAsync_v2"), copies);
    assert_int_equal(D.calls("cuCtxSynchronize"), syncs);
    vram__backend_host_free(b, h, 2 * MIB); /* cleanup still reaches the driver */
    vram__backend_unreserve(b, &buf);
    vram__backend_destroy(b);
}

/* Defect 3 through the manager: the latched error shows in the status
 * (vram_manager_info and the status JSON), and offload fails clearly
 * instead of claiming a backup. */
static void test_sticky_error_shows_in_the_status(void **state)
{
    (void)state;
    vram_manager *m = cuda_manager();
    vram_model_opts o;
    vram_model_opts_init(&o);
    o.source = "synthetic:2097152:3";
    vram_model *model = NULL;
    assert_int_equal(vram_manager_register(m, "s", &o, &model), 0);
    vram_lease *l = NULL;
    assert_int_equal(vram_model_acquire(model, &l), 0);
    vram_lease_end(l);
    vram_manager_info info;
    assert_int_equal(vram_manager_get_info(m, &info, sizeof info), 0);
    assert_string_equal(info.backend_error, "");
    const vram__command *health = vram__command_find("health");
    assert_non_null(health);
    vram__cmd_result res = {0};
    assert_int_equal(vram__command_run(m, health, NULL, &res), 0); /* GET /healthz: 200 */
    assert_int_equal(D.set_sticky(0, CUDA_ERROR_LAUNCH_FAILED), 0);
    assert_int_equal(vram_model_offload(model, VRAM_WAIT), VRAM_EBACKEND);
    assert_msg_has("CUDA_ERROR_LAUNCH_FAILED");
    assert_int_equal(vram_manager_get_info(m, &info, sizeof info), 0);
    assert_non_null(strstr(info.backend_error, "CUDA_ERROR_LAUNCH_FAILED"));
    /* the health check fails now (a liveness probe restarts the process) */
    assert_int_equal(vram__command_run(m, health, NULL, &res), VRAM_EBACKEND);
    assert_int_equal(vram__cmd_http_status(res.code), 503);
    assert_non_null(strstr(res.message, "CUDA_ERROR_LAUNCH_FAILED"));
    vram__cmd_result_clear(&res);
    char *js = vram_manager_status_json(m);
    assert_non_null(js);
    assert_non_null(strstr(js, "\"backend_error\""));
    free(js);
    assert_int_equal(D.set_sticky(0, 0), 0);
    assert_int_equal(vram_model_release(model, VRAM_WAIT), 0);
    vram_manager_destroy(m);
}

/* Log lines a test listens to (vram_log_listen). */
static struct {
    pthread_mutex_t lock;
    char text[8192];
} G_LOG = {PTHREAD_MUTEX_INITIALIZER, ""};

static void log_grab(vram_log_level level, const char *line, void *user)
{
    (void)level;
    (void)user;
    pthread_mutex_lock(&G_LOG.lock);
    size_t used = strlen(G_LOG.text);
    snprintf(G_LOG.text + used, sizeof G_LOG.text - used, "%s\n", line);
    pthread_mutex_unlock(&G_LOG.lock);
}

/* The line of the log holding needle, copied into out ("" when none). */
static void log_line_with(const char *needle, char *out, size_t len)
{
    out[0] = '\0';
    pthread_mutex_lock(&G_LOG.lock);
    const char *p = strstr(G_LOG.text, needle);
    if (p) {
        while (p > G_LOG.text && p[-1] != '\n')
            p--;
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        snprintf(out, len, "%.*s", (int)(n < len ? n : len - 1), p);
    }
    pthread_mutex_unlock(&G_LOG.lock);
}

/* After a latched sticky error nothing may claim the model is safe on the
 * GPU: the message says the context is unusable, names the driver's code
 * and text and says the process must restart; the offload-failed line
 * does not say "model stays on GPU", the restore-failed one not just
 * "backup intact". */
static void test_sticky_error_wording(void **state)
{
    (void)state;
    vram_manager *m = cuda_manager();
    vram_model_opts o;
    vram_model_opts_init(&o);
    o.source = "synthetic:2097152:3";
    vram_model *a = NULL, *bm = NULL;
    assert_int_equal(vram_manager_register(m, "a", &o, &a), 0);
    assert_int_equal(vram_manager_register(m, "b", &o, &bm), 0);
    vram_lease *l = NULL;
    assert_int_equal(vram_model_acquire(a, &l), 0);
    vram_lease_end(l);
    assert_int_equal(vram_model_acquire(bm, &l), 0);
    vram_lease_end(l);
    assert_int_equal(vram_model_offload(bm, VRAM_WAIT), 0);
    G_LOG.text[0] = '\0';
    int id = vram_log_listen(log_grab, NULL, VRAM_LOG_DEBUG);
    assert_true(id > 0);
    assert_int_equal(D.set_sticky(0, CUDA_ERROR_ILLEGAL_ADDRESS), 0);
    assert_int_equal(vram_model_offload(a, VRAM_WAIT), VRAM_EBACKEND);
    assert_msg_has("CUDA context is unusable");
    assert_msg_has("CUDA_ERROR_ILLEGAL_ADDRESS (700)");
    assert_msg_has("an illegal memory access was encountered");
    assert_msg_has("cannot be trusted");
    assert_msg_has("the process must restart");
    vram_model_info mi;
    assert_int_equal(vram_model_get_info(a, &mi, sizeof mi), 0);
    assert_non_null(strstr(mi.last_error, "process must restart"));
    assert_int_equal(vram_model_acquire(bm, &l), VRAM_EBACKEND);
    vram_log_unlisten(id);
    char line[1024];
    log_line_with("offload-failed model=a", line, sizeof line);
    assert_true(line[0]);
    if (strstr(line, "stays on GPU")) fail_msg("claims the model is safe: %s", line);
    assert_non_null(strstr(line, "restart"));
    log_line_with("restore-failed model=b", line, sizeof line);
    assert_true(line[0]);
    assert_non_null(strstr(line, "restart"));
    assert_int_equal(D.set_sticky(0, 0), 0);
    assert_int_equal(vram_model_release(a, VRAM_WAIT), 0);
    assert_int_equal(vram_model_release(bm, VRAM_WAIT), 0);
    vram_manager_destroy(m);
}

/* A model shared across GPUs: every map (the load, each restore) grants
 * read/write to the owning device and to every other device that can
 * access it as a peer; access is per mapping, gone after the offload. With
 * peer access impossible only the owner gets it (granting a non-peer is
 * misuse in the double), and a kernel on the other device faults. */
static void peer_cycle(int peers)
{
    D.set_flag("peer", peers);
    vram_manager *m = cuda_manager();
    vram_model_opts o;
    vram_model_opts_init(&o);
    o.source = "synthetic:4194304:9";
    o.device = 0;
    vram_model *model = NULL;
    assert_int_equal(vram_manager_register(m, "shared", &o, &model), 0);
    vram_lease *l = NULL;
    assert_int_equal(vram_model_acquire(model, &l), 0);
    uintptr_t p = (uintptr_t)vram_lease_ptr(l);
    assert_int_equal(D.access(p, 0), 1);
    assert_int_equal(D.access(p, 1), peers);
    vram_lease_end(l);
    for (int cycle = 0; cycle < 2; cycle++) {
        assert_int_equal(vram_model_offload(model, VRAM_WAIT), 0);
        assert_int_equal(D.access(p, 0), -1); /* unmapped: no mapping, no access */
        assert_int_equal(vram_model_acquire(model, &l), 0);
        assert_int_equal((uintptr_t)vram_lease_ptr(l), p);
        assert_int_equal(D.access(p, 0), 1);
        assert_int_equal(D.access(p, 1), peers); /* granted again on the new mapping */
        vram_lease_end(l);
    }
    if (!peers) {
        /* a kernel on device 1 reading device 0's model faults */
        D.set_flag("quiet", 1);
        assert_int_equal(D.peer_work(1, p, 4096), -1);
        D.set_flag("quiet", 0);
        D.violations_at_start++;
        assert_int_equal(D.set_sticky(1, 0), 0);
    } else {
        /* a kernel on device 1 still reads the model when it is offloaded:
         * the wait covers the peer's context too (else a torn backup and
         * an unmap under the kernel: violations, a sticky error) */
        assert_int_equal(D.peer_work(1, p, 4096), 0);
        assert_int_equal(vram_model_offload(model, VRAM_WAIT), 0);
        assert_int_equal(stats().user_pending, 0);
    }
    assert_true(D.calls("cuDeviceCanAccessPeer") >= 1);
    assert_int_equal(vram_model_release(model, VRAM_WAIT), 0);
    vram_manager_destroy(m);
}

static void test_peer_access_after_every_map(void **state)
{
    (void)state;
    long before = D.calls("cuDeviceCanAccessPeer");
    peer_cycle(1);
    /* the peer list is computed once per device, not per map */
    assert_true(D.calls("cuDeviceCanAccessPeer") - before <= 2);
}

static void test_no_peer_access_owner_only(void **state)
{
    (void)state;
    peer_cycle(0);
}

/* PyTorch CUDA graphs: while a stream of the context is capturing, the
 * cuCtxSynchronize before a backup would invalidate the capture. Where the
 * driver shows the capture (a blocking stream: the legacy stream answers
 * CUDA_ERROR_STREAM_CAPTURE_IMPLICIT; this thread's per-thread stream) the
 * offload fails with VRAM_EBUSY before any wait, the model stays on the
 * GPU, mapped, and offloads once capture ends. A capture no query shows (a
 * non-blocking stream) is the documented limit: the wait's own error is
 * still VRAM_EBUSY, saying the capture was invalidated. */
static void test_offload_refused_during_graph_capture(void **state)
{
    (void)state;
    vram_manager *m = cuda_manager();
    vram_model_opts o;
    vram_model_opts_init(&o);
    o.source = "synthetic:2097152:4";
    vram_model *model = NULL;
    assert_int_equal(vram_manager_register(m, "g", &o, &model), 0);
    for (int how = 1; how <= 3; how++) {
        vram_lease *l = NULL;
        assert_int_equal(vram_model_acquire(model, &l), 0);
        uintptr_t p = (uintptr_t)vram_lease_ptr(l);
        vram_lease_end(l);
        long broken = stats().capture_invalidations;
        assert_int_equal(D.set_capture(0, how), 0);
        if (how == 3) D.set_flag("quiet", 1);
        assert_int_equal(vram_model_offload(model, VRAM_WAIT), VRAM_EBUSY);
        D.set_flag("quiet", 0);
        assert_msg_has("cannot offload model memory while a CUDA graph is being captured in this "
                       "thread; offload after capture ends");
        assert_int_equal(vram_model_state(model), VRAM_STATE_GPU);
        assert_int_equal(D.accessible(p), 1);
        if (how < 3) {
            assert_int_equal(stats().capture_invalidations, broken); /* capture intact */
        } else {
            assert_msg_has("invalidated");
            assert_int_equal(stats().capture_invalidations, broken + 1);
            D.violations_at_start++;
        }
        assert_int_equal(D.set_capture(0, 0), 0);
        assert_int_equal(vram_model_offload(model, VRAM_WAIT), 0);
        assert_int_equal(vram_model_state(model), VRAM_STATE_CPU);
    }
    vram_manager_info info;
    assert_int_equal(vram_manager_get_info(m, &info, sizeof info), 0);
    assert_string_equal(info.backend_error, ""); /* not a sticky error */
    assert_int_equal(vram_model_release(model, VRAM_WAIT), 0);
    vram_manager_destroy(m);
}

/* Another thread captures a CUDA graph in global mode (PyTorch's default)
 * on device 0: a thread in global mode may make none of the driver's
 * "potentially unsafe" calls (allocating, mapping, registering memory)
 * without invalidating that capture. vram relaxes the calling thread's
 * capture mode while inside it, and gives the caller its own mode back,
 * so load, offload, restore and release of a model on device 1 go on and
 * the capture survives. */
static void test_global_capture_elsewhere_is_not_broken(void **state)
{
    (void)state;
    CUresult (*exchange)(CUstreamCaptureMode *) = NULL;
    void *sym = dlsym(D.h, "cuThreadExchangeStreamCaptureMode");
    assert_non_null(sym);
    memcpy(&exchange, &sym, sizeof sym);
    D.set_flag("peer", 0); /* device 0 is then no peer whose context is waited for */
    vram_manager *m = cuda_manager();
    assert_int_equal(D.set_capture(0, 4), 0);
    long broken = stats().capture_invalidations;
    vram_model_opts o;
    vram_model_opts_init(&o);
    o.source = "synthetic:8388608:6";
    o.device = 1;
    vram_model *model = NULL;
    assert_int_equal(vram_manager_register(m, "elsewhere", &o, &model), 0);
    vram_lease *l = NULL;
    assert_int_equal(vram_model_acquire(model, &l), 0); /* load: reserve, map, pinned staging */
    vram_lease_end(l);
    assert_int_equal(vram_model_offload(model, VRAM_WAIT), 0); /* pin, copy, unmap */
    assert_int_equal(vram_model_acquire(model, &l), 0);        /* restore: map again */
    uint64_t c = 0;
    assert_int_equal(vram_model_checksum(model, &c), 0);
    assert_int_equal(c, synthetic_checksum(6, 8 * MIB));
    vram_lease_end(l);
    assert_int_equal(vram_model_release(model, VRAM_WAIT), 0);
    assert_int_equal(stats().capture_invalidations, broken); /* the capture survived */
    CUstreamCaptureMode mode = CU_STREAM_CAPTURE_MODE_RELAXED;
    assert_int_equal(exchange(&mode), CUDA_SUCCESS);
    assert_int_equal(mode, CU_STREAM_CAPTURE_MODE_GLOBAL); /* the caller's mode is back */
    assert_int_equal(exchange(&mode), CUDA_SUCCESS);
    assert_int_equal(D.set_capture(0, 0), 0);
    vram_manager_destroy(m);
}

/* The first offload of a model pins its backup while copying: pieces are
 * registered one by one by a helper while the stream copies the pieces
 * already pinned. The double's pin_gate makes the order checkable: the
 * registration of piece k+1 cannot finish before the copy into piece k
 * has started, and counts when it did (pin_overlaps). The log line says
 * pin_s= apart; the backup is exact; a later offload pins nothing. */
static void test_first_offload_pins_while_copying(void **state)
{
    (void)state;
    vram_manager *m = cuda_manager(); /* chunk 256 KiB: pieces of 2 MiB (huge pages) */
    const size_t n = 8 * MIB;
    vram_model_opts o;
    vram_model_opts_init(&o);
    o.source = "synthetic:8388608:21";
    vram_model *model = NULL;
    assert_int_equal(vram_manager_register(m, "p", &o, &model), 0);
    vram_lease *l = NULL;
    assert_int_equal(vram_model_acquire(model, &l), 0);
    vram_lease_end(l);
    G_LOG.text[0] = '\0';
    int id = vram_log_listen(log_grab, NULL, VRAM_LOG_DEBUG);
    vram_double_stats s0 = stats();
    D.set_flag("pin_gate", 1);
    assert_int_equal(vram_model_offload(model, VRAM_WAIT), 0);
    D.set_flag("pin_gate", 0);
    vram_double_stats s1 = stats();
    assert_int_equal(s1.pinned_register_bytes - s0.pinned_register_bytes, (long)n);
    assert_int_equal(s1.host_registered - s0.host_registered, 4); /* in 4 pieces */
    assert_int_equal(s1.pin_overlaps - s0.pin_overlaps, 3);       /* each after a copy began */
    uint64_t c = 0;
    assert_int_equal(vram_model_checksum(model, &c), 0); /* the backup, in the CPU state */
    assert_int_equal(c, synthetic_checksum(21, n));
    char line[1024];
    log_line_with("offload model=p ", line, sizeof line);
    assert_non_null(strstr(line, " gbps="));
    assert_non_null(strstr(line, " pin_s="));
    assert_null(strstr(line, " pin_s=0.000"));
    assert_int_equal(vram_model_acquire(model, &l), 0);
    vram_lease_end(l);
    G_LOG.text[0] = '\0';
    assert_int_equal(vram_model_offload(model, VRAM_WAIT), 0); /* backup kept: nothing pinned */
    assert_int_equal(stats().pinned_register_bytes, s1.pinned_register_bytes);
    log_line_with("offload model=p ", line, sizeof line);
    assert_non_null(strstr(line, " pin_s=0.000"));
    vram_log_unlisten(id);
    assert_int_equal(vram_model_acquire(model, &l), 0);
    assert_int_equal(vram_model_checksum(model, &c), 0);
    assert_int_equal(c, synthetic_checksum(21, n));
    vram_lease_end(l);
    assert_int_equal(vram_model_release(model, VRAM_WAIT), 0);
    vram_manager_destroy(m);
}

/* Defect 4: a device that cannot give a context (exclusive-process mode,
 * failed) is skipped with its reason; the others work. */
static void test_unusable_device_is_skipped(void **state)
{
    (void)state;
    assert_int_equal(D.set_unusable(0, CUDA_ERROR_DEVICE_UNAVAILABLE), 0);
    vram_backend *b = make_backend(MIB);
    assert_int_equal(vram__backend_device_count(b), 2);
    vram_buf buf;
    assert_int_equal(vram__backend_reserve(b, 0, 2 * MIB, &buf), VRAM_ENODEV);
    assert_msg_has("device 0");
    assert_msg_has("CUDA_ERROR_DEVICE_UNAVAILABLE");
    assert_int_equal(vram__backend_reserve(b, 1, 2 * MIB, &buf), 0);
    assert_int_equal(vram__backend_map(b, &buf), 0);
    void *h;
    assert_int_equal(vram__backend_host_alloc(b, MIB, &h), 0); /* in device 1's context */
    vram__backend_host_free(b, h, MIB);
    vram__backend_unreserve(b, &buf);
    assert_int_equal(stats().ctx_retained, 1);
    vram__backend_destroy(b);
}

/* Defect 4: CUDA initialised first (PyTorch) ignores CUDA_VISIBLE_DEVICES
 * set later; the configured UUID still selects the device. */
static void test_visible_uuid_selects_after_cuda_init(void **state)
{
    (void)state;
    assert_int_equal(D.configure(3, 256 * MIB), 0);
    assert_int_equal(D.cu_init(0), CUDA_SUCCESS); /* someone else was first */
    vram_config cfg;
    vram_config_init(&cfg);
    snprintf(cfg.cuda_library, sizeof cfg.cuda_library, "%s", D.path);
    snprintf(cfg.visible_devices, sizeof cfg.visible_devices, "%s",
             "GPU-d0b1e000-0000-4000-8000-000000000002");
    vram_backend *b = NULL;
    assert_int_equal(vram__backend_cuda_create(bcfg(&cfg), &b), 0);
    unsetenv("CUDA_VISIBLE_DEVICES");
    assert_int_equal(vram__backend_device_count(b), 1);
    vram_dev_info info;
    assert_int_equal(vram__backend_device_info(b, 0, &info), 0);
    assert_string_equal(info.uuid, "GPU-d0b1e000-0000-4000-8000-000000000002");
    vram_buf buf;
    assert_int_equal(vram__backend_reserve(b, 0, 2 * MIB, &buf), 0);
    assert_int_equal(vram__backend_map(b, &buf), 0);
    assert_int_equal(stats().used[2], 2 * MIB); /* on physical device 2 */
    vram__backend_unreserve(b, &buf);
    vram__backend_destroy(b);
}

/* Defect 4: a MIG instance's UUID reads MIG-..., a GPU's GPU-... */
static void test_mig_uuid_prefix(void **state)
{
    (void)state;
    D.set_flag("mig", 2);
    vram_backend *b = make_backend(MIB);
    vram_dev_info info;
    assert_int_equal(vram__backend_device_info(b, 0, &info), 0);
    assert_string_equal(info.uuid, "GPU-d0b1e000-0000-4000-8000-000000000000");
    assert_int_equal(vram__backend_device_info(b, 1, &info), 0);
    assert_true(strncmp(info.uuid, "MIG-", 4) == 0);
    D.set_flag("mig", 0);
    vram__backend_destroy(b);
}

typedef struct ck_job {
    vram_backend *b;
    vram_buf *buf;
    int rc;
} ck_job;

static void *checksum_main(void *arg)
{
    ck_job *j = arg;
    uint64_t sum;
    j->rc = vram__backend_checksum(j->b, j->buf, 0, MIB, &sum);
    return NULL;
}

/* Defect 5: the checksum kernel's PTX JIT does not hold the device's copy
 * lock: a copy on that device finishes while the JIT runs. */
static void test_checksum_jit_does_not_stall_copies(void **state)
{
    (void)state;
    vram_backend *b = make_backend(MIB);
    vram_buf buf;
    assert_int_equal(vram__backend_reserve(b, 0, 2 * MIB, &buf), 0);
    assert_int_equal(vram__backend_map(b, &buf), 0);
    void *h;
    assert_int_equal(vram__backend_host_alloc(b, MIB, &h), 0);
    assert_int_equal(vram__backend_to_host(b, &buf, 0, h, MIB), 0); /* streams exist */
    D.set_flag("jit_ms", 600);
    ck_job j = {b, &buf, -1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, checksum_main, &j), 0);
    usleep(100 * 1000); /* the JIT is running */
    double t0 = vram__now();
    assert_int_equal(vram__backend_to_host(b, &buf, 0, h, MIB), 0);
    double took = vram__now() - t0;
    pthread_join(t, NULL);
    D.set_flag("jit_ms", 0);
    assert_int_equal(j.rc, 0);
    if (took > 0.3) fail_msg("a copy waited %.3f s for the checksum module's JIT", took);
    vram__backend_host_free(b, h, MIB);
    vram__backend_unreserve(b, &buf);
    vram__backend_destroy(b);
}

/* Defect 5: a forked child is refused clearly instead of using the
 * parent's CUDA state. */
static void test_forked_child_is_refused(void **state)
{
    (void)state;
    vram_backend *b = make_backend(MIB);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        vram_buf buf;
        int rc = vram__backend_reserve(b, 0, 2 * MIB, &buf);
        _exit(rc == VRAM_EBACKEND && strstr(vram__last_error(), "fork") ? 0 : 1);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    vram__backend_destroy(b);
}

/* Issue 14's part: fresh device memory is poison, not zeros, so a restore
 * or load that skips bytes shows. */
static void test_fresh_device_memory_is_poisoned(void **state)
{
    (void)state;
    vram_backend *b = make_backend(MIB);
    vram_buf buf;
    assert_int_equal(vram__backend_reserve(b, 0, 2 * MIB, &buf), 0);
    assert_int_equal(vram__backend_map(b, &buf), 0);
    uint64_t w[4];
    assert_int_equal(vram__backend_to_host(b, &buf, 4096, w, sizeof w), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(w[i], 0xdb0adb0adb0adb0aULL);
    vram__backend_unreserve(b, &buf);
    vram__backend_destroy(b);
}

int main(void)
{
    if (open_doubles() != 0) {
        fprintf(stderr,
                "test_cuda: the driver double is needed (VRAM_CUDA_LIBRARY=%s, "
                "VRAM_NVML_LIBRARY=%s): %s; skipped\n",
                D.path, D.nvml_path, dlerror());
        return 77;
    }
    vram_set_log_level(VRAM_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_reports_devices, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nvidia_visible_devices_index_left_to_runtime, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_driver_oom_evicts_then_fails_cleanly, setup, teardown),
        cmocka_unit_test_setup_teardown(test_injected_map_failure_keeps_model_on_cpu, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_library_missing_is_enodev, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cuinit_failure_is_enodev, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stub_library_is_enodev, setup, teardown),
        cmocka_unit_test_setup_teardown(test_zero_devices_is_enodev, setup, teardown),
        cmocka_unit_test_setup_teardown(test_device_without_vmm_is_enodev, setup, teardown),
        cmocka_unit_test_setup_teardown(test_visible_none_is_enodev, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reserve_map_unmap_keeps_address, setup, teardown),
        cmocka_unit_test_setup_teardown(test_map_oom_leaves_range_intact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_map_failures_release_what_was_created, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_host_alloc_registers_and_pools, setup, teardown),
        cmocka_unit_test(test_pinned_pool_is_bounded),
        cmocka_unit_test_setup_teardown(test_chunked_copies_are_pipelined, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pageable_upload_and_download, setup, teardown),
        cmocka_unit_test_setup_teardown(test_copy_errors_carry_driver_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checksum_kernel_matches_host, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checksum_module_failure_is_enotsup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads_share_devices_and_streams, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nvml_picks_most_free_then_least_busy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nvml_missing_is_a_clear_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nvml_pin_selects_the_cuda_device, setup, teardown),
        cmocka_unit_test_setup_teardown(test_manager_cycles_on_cuda, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unmap_and_backup_wait_for_application_work, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_offload_and_release_wait_for_queued_kernels, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_sticky_error_latches_the_backend, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sticky_error_shows_in_the_status, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sticky_error_wording, setup, teardown),
        cmocka_unit_test_setup_teardown(test_peer_access_after_every_map, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_peer_access_owner_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_offload_refused_during_graph_capture, setup, teardown),
        cmocka_unit_test_setup_teardown(test_first_offload_pins_while_copying, setup, teardown),
        cmocka_unit_test_setup_teardown(test_global_capture_elsewhere_is_not_broken, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_unusable_device_is_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_visible_uuid_selects_after_cuda_init, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mig_uuid_prefix, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checksum_jit_does_not_stall_copies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forked_child_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fresh_device_memory_is_poisoned, setup, teardown),
    };
    const char *only = getenv("VRAM_TEST_FILTER"); /* one test by name (cmocka's glob) */
    if (only && *only) cmocka_set_test_filter(only);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
