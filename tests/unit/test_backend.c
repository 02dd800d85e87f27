/* test_backend.c - conformance suite of the backend interface (host; VRAM_TEST_BACKEND=cuda). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend/backend.h"
#include "base/base.h"
#include "vram.h"

#define MiB ((size_t)1 << 20)
#define HOST_TEST_DEVICES 2
#define HOST_TEST_MEMORY ((uint64_t)64 << 20)
#define SMALL_DEVICE_MAX ((uint64_t)256 << 20) /* exhaust a device only up to this size */

static const char *g_kind = "host"; /* VRAM_TEST_BACKEND */
static int g_host;                  /* the backend under test is the host emulation */

/* ---- fixtures and helpers ---- */

/* The config a backend is made from: defaults, then for cuda the environment
 * and .env (VRAM_CUDA_LIBRARY, CUDA_VISIBLE_DEVICES, ...); the host backend
 * gets a small fixed shape so that the suite is hermetic. */
static int test_config(vram_config *cfg)
{
    vram_config_init(cfg);
    if (g_host) {
        cfg->backend = VRAM_BACKEND_HOST;
        cfg->host_devices = HOST_TEST_DEVICES;
        cfg->host_memory = HOST_TEST_MEMORY;
        return 0;
    }
    char err[512];
    int rc = vram_config_load(cfg, NULL, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "configuration: %s\n", err);
        return rc;
    }
    cfg->backend = VRAM_BACKEND_CUDA;
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

static int make_backend(vram_backend **out)
{
    vram_config cfg;
    int rc = test_config(&cfg);
    if (rc != 0) return rc;
    return g_host ? vram__backend_host_create(bcfg(&cfg), out)
                  : vram__backend_cuda_create(bcfg(&cfg), out);
}

static int setup(void **state)
{
    vram_backend *b = NULL;
    int rc = make_backend(&b);
    if (rc != 0) {
        fprintf(stderr, "backend %s: %s (%s)\n", g_kind, vram_err_name(rc), vram__last_error());
        return -1;
    }
    *state = b;
    return 0;
}

/* The backend under test inside the fault decorator (fault.c). */
static int setup_fault(void **state)
{
    if (setup(state) != 0) return -1;
    vram_backend *b = NULL;
    int rc = vram__backend_fault_wrap(*state, &b);
    *state = b;
    if (rc != 0) {
        fprintf(stderr, "fault decorator: %s\n", vram__last_error());
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    vram_backend *b = *state;
    vram__backend_destroy(b);
    return 0;
}

static vram_dev_info info_of(vram_backend *b, int dev)
{
    vram_dev_info info;
    memset(&info, 0, sizeof info);
    assert_int_equal(vram__backend_device_info(b, dev, &info), 0);
    return info;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    assert_non_null(p);
    return p;
}

/* Reserves and maps bytes on dev; fails the test on error. */
static void new_mapped(vram_backend *b, int dev, size_t bytes, vram_buf *buf)
{
    memset(buf, 0, sizeof *buf);
    assert_int_equal(vram__backend_reserve(b, dev, bytes, buf), 0);
    int rc = vram__backend_map(b, buf);
    if (rc) fprintf(stderr, "map: %s: %s\n", vram_err_name(rc), vram__last_error());
    assert_int_equal(rc, 0);
    assert_true(buf->mapped);
}

/* Writes the synthetic bytes of seed over the whole buffer. */
static void fill_device(vram_backend *b, const vram_buf *buf, uint64_t seed)
{
    unsigned char *tmp = xmalloc(buf->size);
    vram_synthetic_fill(seed, 0, tmp, buf->size);
    assert_int_equal(vram__backend_to_device(b, buf, 0, tmp, buf->size), 0);
    free(tmp);
}

/* Checksum of the buffer's bytes, read back with to_host. */
static uint64_t device_sum(vram_backend *b, const vram_buf *buf)
{
    unsigned char *tmp = xmalloc(buf->size);
    assert_int_equal(vram__backend_to_host(b, buf, 0, tmp, buf->size), 0);
    uint64_t s = vram_checksum(tmp, buf->size);
    free(tmp);
    return s;
}

static uint64_t synthetic_sum(uint64_t seed, size_t n)
{
    unsigned char *tmp = xmalloc(n);
    vram_synthetic_fill(seed, 0, tmp, n);
    uint64_t s = vram_checksum(tmp, n);
    free(tmp);
    return s;
}

static uint64_t used_bytes(vram_backend *b, int dev)
{
    vram_dev_info info = info_of(b, dev);
    return info.total - info.free;
}

/* Host only: the number of mappings (VMAs) of this process that overlap
 * [addr, addr+len), from /proc/self/maps. A range backed by one extent is
 * one mapping; one backed by pieces far apart in the device is several. */
static int vma_count(uintptr_t addr, size_t len)
{
    FILE *f = fopen("/proc/self/maps", "r");
    assert_non_null(f);
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo = 0, hi = 0;
        if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && lo < addr + len && hi > addr) n++;
    }
    fclose(f);
    return n;
}

/* ---- devices ---- */

static void test_device_count_and_info(void **state)
{
    vram_backend *b = *state;
    assert_int_equal(b->version, VRAM_BACKEND_VERSION);
    assert_non_null(b->name);
    assert_string_equal(b->name, g_kind);
    int n = vram__backend_device_count(b);
    assert_true(n >= 1);
    if (g_host) assert_int_equal(n, HOST_TEST_DEVICES);
    for (int d = 0; d < n; d++) {
        vram_dev_info info = info_of(b, d);
        assert_true(info.name[0] != '\0');
        assert_true(info.total > 0);
        assert_true(info.free <= info.total);
        assert_true(info.granularity > 0);
        assert_int_equal(info.granularity & (info.granularity - 1), 0); /* a power of two */
        assert_non_null(memchr(info.name, '\0', sizeof info.name));
        assert_non_null(memchr(info.uuid, '\0', sizeof info.uuid));
        if (g_host) {
            char want[64];
            snprintf(want, sizeof want, "host-emulated device %d", d);
            assert_string_equal(info.name, want);
            snprintf(want, sizeof want, "HOST-%d", d);
            assert_string_equal(info.uuid, want);
            assert_int_equal(info.total, HOST_TEST_MEMORY);
            assert_int_equal(info.free, info.total);
            assert_int_equal(info.granularity, 2 * MiB);
        }
    }
}

static void test_device_info_bad_index(void **state)
{
    vram_backend *b = *state;
    vram_dev_info info;
    int n = vram__backend_device_count(b);
    assert_true(vram__backend_device_info(b, -1, &info) < 0);
    assert_true(vram__backend_device_info(b, n, &info) < 0);
    assert_true(vram__last_error()[0] != '\0');
}

static void test_host_create_checks_config(void **state)
{
    (void)state;
    vram_config cfg;
    vram_backend *b = (vram_backend *)&cfg;
    vram_config_init(&cfg);
    cfg.host_devices = 0;
    cfg.host_memory = 8 * MiB;
    assert_int_equal(vram__backend_host_create(bcfg(&cfg), &b), VRAM_ECONFIG);
    assert_null(b);
    assert_non_null(strstr(vram__last_error(), "VRAM_HOST_DEVICES"));
    cfg.host_devices = 17;
    assert_int_equal(vram__backend_host_create(bcfg(&cfg), &b), VRAM_ECONFIG);
    cfg.host_devices = 16;
    cfg.host_memory = MiB; /* less than one granule */
    assert_int_equal(vram__backend_host_create(bcfg(&cfg), &b), VRAM_ECONFIG);
    assert_non_null(strstr(vram__last_error(), "VRAM_HOST_MEMORY"));
    /* a capacity between granules is rounded down to whole granules */
    cfg.host_memory = 5 * MiB + 12345;
    assert_int_equal(vram__backend_host_create(bcfg(&cfg), &b), 0);
    assert_int_equal(vram__backend_device_count(b), 16);
    assert_int_equal(info_of(b, 15).total, 4 * MiB);
    vram__backend_destroy(b);
}

/* ---- reserve ---- */

static void test_reserve_rounds_and_aligns(void **state)
{
    vram_backend *b = *state;
    size_t g = info_of(b, 0).granularity;
    size_t sizes[] = {1, g - 1, g, g + 1, 3 * g + 5, 5 * MiB + 123};
    enum { N = sizeof sizes / sizeof sizes[0] };
    vram_buf bufs[N];
    for (int i = 0; i < N; i++) {
        memset(&bufs[i], 0, sizeof bufs[i]);
        assert_int_equal(vram__backend_reserve(b, 0, sizes[i], &bufs[i]), 0);
        assert_int_equal(bufs[i].device, 0);
        assert_int_equal(bufs[i].size, sizes[i]);
        assert_int_equal(bufs[i].reserved, vram__round_up(sizes[i], g));
        assert_int_equal(bufs[i].addr % g, 0);
        assert_true(bufs[i].addr != 0);
        assert_int_equal(bufs[i].mapped, 0);
    }
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++) {
            int disjoint = bufs[i].addr + bufs[i].reserved <= bufs[j].addr ||
                           bufs[j].addr + bufs[j].reserved <= bufs[i].addr;
            assert_true(disjoint);
        }
    /* reserving maps nothing */
    if (g_host) assert_int_equal(used_bytes(b, 0), 0);
    for (int i = 0; i < N; i++)
        vram__backend_unreserve(b, &bufs[i]);
}

static void test_reserve_bad_args(void **state)
{
    vram_backend *b = *state;
    vram_buf buf;
    memset(&buf, 0, sizeof buf);
    assert_true(vram__backend_reserve(b, -1, MiB, &buf) < 0);
    assert_true(vram__backend_reserve(b, vram__backend_device_count(b), MiB, &buf) < 0);
    assert_true(vram__backend_reserve(b, 0, 0, &buf) < 0);
    assert_true(vram__last_error()[0] != '\0');
}

static void test_reserve_on_every_device(void **state)
{
    vram_backend *b = *state;
    int n = vram__backend_device_count(b);
    for (int d = 0; d < n; d++) {
        vram_buf buf;
        new_mapped(b, d, 3 * MiB, &buf);
        assert_int_equal(buf.device, d);
        fill_device(b, &buf, 100 + (uint64_t)d);
        assert_true(device_sum(b, &buf) == synthetic_sum(100 + (uint64_t)d, buf.size));
        vram__backend_unreserve(b, &buf);
    }
}

/* ---- map, copies ---- */

static void test_map_write_read(void **state)
{
    vram_backend *b = *state;
    size_t n = 4 * MiB + 123;
    vram_buf buf;
    new_mapped(b, 0, n, &buf);
    unsigned char *src = xmalloc(n), *dst = xmalloc(n);
    vram_synthetic_fill(7, 0, src, n);
    assert_int_equal(vram__backend_to_device(b, &buf, 0, src, n), 0);
    memset(dst, 0, n);
    assert_int_equal(vram__backend_to_host(b, &buf, 0, dst, n), 0);
    assert_memory_equal(src, dst, n);
    /* partial copies at odd offsets */
    size_t off = 1 * MiB + 7, len = 100003;
    memset(dst, 0, len);
    assert_int_equal(vram__backend_to_host(b, &buf, off, dst, len), 0);
    assert_memory_equal(src + off, dst, len);
    unsigned char patch[333];
    memset(patch, 0xC3, sizeof patch);
    assert_int_equal(vram__backend_to_device(b, &buf, n - sizeof patch, patch, sizeof patch), 0);
    memcpy(src + n - sizeof patch, patch, sizeof patch);
    assert_int_equal(vram__backend_to_host(b, &buf, 0, dst, n), 0);
    assert_memory_equal(src, dst, n);
    if (g_host) /* the device address is host memory here */
        assert_memory_equal((const void *)buf.addr, src, n);
    /* zero-length copies are no-ops */
    assert_int_equal(vram__backend_to_host(b, &buf, n, dst, 0), 0);
    assert_int_equal(vram__backend_to_device(b, &buf, 0, src, 0), 0);
    assert_int_equal(vram__backend_unmap(b, &buf), 0);
    assert_int_equal(buf.mapped, 0);
    vram__backend_unreserve(b, &buf);
    free(src);
    free(dst);
}

static void test_map_twice_fails(void **state)
{
    vram_backend *b = *state;
    vram_buf buf;
    new_mapped(b, 0, 2 * MiB, &buf);
    fill_device(b, &buf, 11);
    uint64_t used = g_host ? used_bytes(b, 0) : 0;
    assert_true(vram__backend_map(b, &buf) < 0);
    assert_true(buf.mapped);
    assert_true(device_sum(b, &buf) == synthetic_sum(11, buf.size));
    if (g_host) assert_int_equal(used_bytes(b, 0), used);
    vram__backend_unreserve(b, &buf);
}

static void test_address_stable_over_cycles(void **state)
{
    vram_backend *b = *state;
    size_t n = 6 * MiB + 4097;
    vram_buf buf;
    new_mapped(b, 0, n, &buf);
    const uintptr_t addr = buf.addr;
    const size_t reserved = buf.reserved;
    void *backup = NULL;
    assert_int_equal(vram__backend_host_alloc(b, n, &backup), 0);
    unsigned char *junk = xmalloc(n);
    memset(junk, 0xEE, n);
    for (int cycle = 0; cycle < 20; cycle++) {
        uint64_t seed = 1000 + (uint64_t)cycle;
        fill_device(b, &buf, seed);
        uint64_t want = synthetic_sum(seed, n);
        /* offload: backup, then drop the memory but keep the range */
        assert_int_equal(vram__backend_to_host(b, &buf, 0, backup, n), 0);
        assert_true(vram_checksum(backup, n) == want);
        assert_int_equal(vram__backend_unmap(b, &buf), 0);
        assert_int_equal(buf.mapped, 0);
        assert_true(buf.addr == addr);
        assert_int_equal(buf.reserved, reserved);
        if (g_host) assert_int_equal(used_bytes(b, 0), 0);
        /* restore: fresh memory at the same addresses */
        assert_int_equal(vram__backend_map(b, &buf), 0);
        assert_true(buf.addr == addr);
        assert_true(buf.mapped);
        /* whatever the fresh memory holds, the copy back must win */
        assert_int_equal(vram__backend_to_device(b, &buf, 0, junk, n), 0);
        assert_true(device_sum(b, &buf) != want);
        assert_int_equal(vram__backend_to_device(b, &buf, 0, backup, n), 0);
        assert_true(device_sum(b, &buf) == want);
    }
    vram__backend_host_free(b, backup, n);
    free(junk);
    vram__backend_unreserve(b, &buf);
    if (g_host) assert_int_equal(used_bytes(b, 0), 0);
}

/* ---- faults (host only: reads device addresses from the CPU) ---- */

static void on_fault(int sig)
{
    _exit(sig == SIGSEGV ? 0 : 3);
}

/* Reads one byte at addr in a child process: 1 when it faulted, 0 when the
 * read succeeded. */
static int read_faults(uintptr_t addr)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_fault;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, NULL);
        sigaction(SIGBUS, &sa, NULL);
        volatile unsigned char *p = (volatile unsigned char *)addr;
        unsigned char v = *p;
        (void)v;
        _exit(1);
    }
    int status = 0;
    pid_t got;
    do {
        got = waitpid(pid, &status, 0);
    } while (got < 0 && errno == EINTR);
    assert_int_equal(got, pid);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return 1;
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV) return 1; /* a sanitizer's handler */
    if (WIFEXITED(status) && WEXITSTATUS(status) == 1) return 0;
    fail_msg("child reading %#lx ended with status %#x", (unsigned long)addr, status);
    return -1;
}

static void test_unmapped_range_faults(void **state)
{
    vram_backend *b = *state;
    vram_buf buf;
    memset(&buf, 0, sizeof buf);
    assert_int_equal(vram__backend_reserve(b, 0, 4 * MiB + 1, &buf), 0);
    assert_int_equal(read_faults(buf.addr), 1); /* reserved, never mapped */
    assert_int_equal(vram__backend_map(b, &buf), 0);
    fill_device(b, &buf, 5);
    assert_int_equal(read_faults(buf.addr), 0);
    assert_int_equal(read_faults(buf.addr + buf.size - 1), 0);
    assert_int_equal(vram__backend_unmap(b, &buf), 0);
    assert_int_equal(read_faults(buf.addr), 1);
    assert_int_equal(read_faults(buf.addr + buf.size / 2), 1);
    assert_int_equal(read_faults(buf.addr + buf.reserved - 1), 1);
    vram__backend_unreserve(b, &buf);
}

/* ---- capacity ---- */

static void test_capacity_enomem(void **state)
{
    vram_backend *b = *state;
    vram_dev_info info = info_of(b, 0);
    size_t g = info.granularity;
    /* more than the whole device never maps, and the range stays reserved */
    vram_buf huge;
    memset(&huge, 0, sizeof huge);
    assert_int_equal(vram__backend_reserve(b, 0, (size_t)info.total + g, &huge), 0);
    vram__clear_error();
    assert_int_equal(vram__backend_map(b, &huge), VRAM_ENOMEM);
    assert_true(vram__last_error()[0] != '\0');
    assert_int_equal(huge.mapped, 0);
    vram__backend_unreserve(b, &huge);
    if (info.total > SMALL_DEVICE_MAX) { /* exhausting it would take too long: say so */
        print_message("skipped: exhausting a %llu-byte device takes too long\n",
                      (unsigned long long)info.total);
        skip();
    }

    size_t cap = (size_t)info.total;
    size_t a_bytes = cap / 4 * 3 / g * g, b_bytes = cap - a_bytes + g;
    vram_buf A, B;
    new_mapped(b, 0, a_bytes, &A);
    fill_device(b, &A, 21);
    memset(&B, 0, sizeof B);
    assert_int_equal(vram__backend_reserve(b, 0, b_bytes, &B), 0);
    vram__clear_error();
    assert_int_equal(vram__backend_map(b, &B), VRAM_ENOMEM);
    assert_int_equal(B.mapped, 0);
    if (g_host) {
        const char *msg = vram__last_error();
        assert_non_null(strstr(msg, "host device 0"));
        assert_non_null(strstr(msg, "free"));
        char asked[32];
        snprintf(asked, sizeof asked, "%zu", B.reserved);
        assert_non_null(strstr(msg, asked));
        assert_int_equal(used_bytes(b, 0), A.reserved);
    }
    /* A is untouched by the failed map */
    assert_true(device_sum(b, &A) == synthetic_sum(21, A.size));
    /* once memory frees, the same range maps */
    assert_int_equal(vram__backend_unmap(b, &A), 0);
    assert_int_equal(vram__backend_map(b, &B), 0);
    fill_device(b, &B, 22);
    assert_true(device_sum(b, &B) == synthetic_sum(22, B.size));
    assert_int_equal(vram__backend_map(b, &A), VRAM_ENOMEM);
    assert_int_equal(A.mapped, 0);
    assert_int_equal(vram__backend_unmap(b, &B), 0);
    assert_int_equal(vram__backend_map(b, &A), 0);
    fill_device(b, &A, 23);
    assert_true(device_sum(b, &A) == synthetic_sum(23, A.size));
    vram__backend_unreserve(b, &A);
    vram__backend_unreserve(b, &B);
    if (g_host) assert_int_equal(used_bytes(b, 0), 0);
}

static void test_capacity_per_device(void **state)
{
    vram_backend *b = *state;
    if (vram__backend_device_count(b) < 2 || info_of(b, 0).total > SMALL_DEVICE_MAX) {
        print_message("skipped: needs 2 devices of at most %llu bytes\n",
                      (unsigned long long)SMALL_DEVICE_MAX);
        skip();
    }
    /* filling device 0 leaves device 1 alone */
    vram_buf full0, on1;
    new_mapped(b, 0, (size_t)info_of(b, 0).total, &full0);
    new_mapped(b, 1, 8 * MiB, &on1);
    if (g_host) assert_int_equal(info_of(b, 1).free, info_of(b, 1).total - on1.reserved);
    vram__backend_unreserve(b, &on1);
    vram__backend_unreserve(b, &full0);
}

static void test_fragmentation_and_coalescing(void **state)
{
    vram_backend *b = *state;
    vram_dev_info info = info_of(b, 0);
    size_t g = info.granularity, cap = (size_t)info.total;
    size_t slot = cap / 8 / g * g;
    assert_true(slot >= g);
    vram_buf s[8];
    for (int i = 0; i < 8; i++)
        new_mapped(b, 0, slot, &s[i]);
    size_t rest = cap - 8 * slot;
    /* free every other slot: half the device is free, in slot-sized holes */
    for (int i = 0; i < 8; i += 2)
        assert_int_equal(vram__backend_unmap(b, &s[i]), 0);
    assert_int_equal(info_of(b, 0).free, 4 * slot + rest);
    /* a range larger than any hole maps all the same, in pieces */
    vram_buf two;
    memset(&two, 0, sizeof two);
    assert_int_equal(vram__backend_reserve(b, 0, 2 * slot + rest, &two), 0);
    assert_int_equal(vram__backend_map(b, &two), 0);
    assert_true(vma_count(two.addr, two.reserved) >= 2);
    fill_device(b, &two, 30);
    assert_true(device_sum(b, &two) == synthetic_sum(30, two.size));
    assert_int_equal(info_of(b, 0).free, 4 * slot + rest - two.reserved);
    assert_int_equal(vram__backend_unmap(b, &two), 0);
    assert_int_equal(info_of(b, 0).free, 4 * slot + rest);
    /* more than is free still fails, and says how much is free */
    vram_buf over;
    memset(&over, 0, sizeof over);
    assert_int_equal(vram__backend_reserve(b, 0, 4 * slot + rest + g, &over), 0);
    vram__clear_error();
    assert_int_equal(vram__backend_map(b, &over), VRAM_ENOMEM);
    assert_int_equal(over.mapped, 0);
    char want[64];
    snprintf(want, sizeof want, "%zu bytes", 4 * slot + rest);
    assert_non_null(strstr(vram__last_error(), want));
    vram__backend_unreserve(b, &over);
    assert_int_equal(info_of(b, 0).free, 4 * slot + rest);
    /* freeing slot 1 joins holes 0, 1 and 2 into one of three slots: one extent */
    assert_int_equal(vram__backend_unmap(b, &s[1]), 0);
    assert_int_equal(vram__backend_map(b, &two), 0);
    assert_int_equal(vma_count(two.addr, two.reserved), 1);
    fill_device(b, &two, 31);
    assert_true(device_sum(b, &two) == synthetic_sum(31, two.size));
    assert_int_equal(info_of(b, 0).free, cap - 3 * slot - two.reserved);
    /* everything back: the whole device maps as one extent again */
    assert_int_equal(vram__backend_unmap(b, &two), 0);
    for (int i = 3; i < 8; i += 2)
        assert_int_equal(vram__backend_unmap(b, &s[i]), 0);
    assert_int_equal(info_of(b, 0).free, cap);
    vram_buf all;
    new_mapped(b, 0, cap, &all);
    assert_int_equal(info_of(b, 0).free, 0);
    /* and when full, the smallest map fails */
    assert_int_equal(vram__backend_map(b, &s[0]), VRAM_ENOMEM);
    vram__backend_unreserve(b, &all);
    /* coalescing from the other side: free in reverse order */
    for (int i = 0; i < 8; i++)
        assert_int_equal(vram__backend_map(b, &s[i]), 0);
    for (int i = 7; i >= 0; i--)
        assert_int_equal(vram__backend_unmap(b, &s[i]), 0);
    new_mapped(b, 0, cap, &all);
    vram__backend_unreserve(b, &all);
    /* and in a scattered order */
    static const int order[8] = {3, 6, 0, 5, 1, 7, 2, 4};
    for (int i = 0; i < 8; i++)
        assert_int_equal(vram__backend_map(b, &s[i]), 0);
    for (int i = 0; i < 8; i++)
        assert_int_equal(vram__backend_unmap(b, &s[order[i]]), 0);
    new_mapped(b, 0, cap, &all);
    vram__backend_unreserve(b, &all);
    vram__backend_unreserve(b, &two);
    for (int i = 0; i < 8; i++)
        vram__backend_unreserve(b, &s[i]);
    assert_int_equal(info_of(b, 0).free, cap);
}

/* Host only: maps eight slots of an eighth of device 0 each, fills them
 * (seed 200 + i) and unmaps slots 1, 3 and 5: three eighths are free, in
 * holes of one slot each. Returns the slot size. */
static size_t fragment_device(vram_backend *b, vram_buf s[8])
{
    vram_dev_info info = info_of(b, 0);
    size_t slot = (size_t)info.total / 8;
    assert_int_equal(slot % info.granularity, 0);
    for (int i = 0; i < 8; i++) {
        new_mapped(b, 0, slot, &s[i]);
        fill_device(b, &s[i], 200 + (uint64_t)i);
    }
    for (int i = 1; i < 7; i += 2)
        assert_int_equal(vram__backend_unmap(b, &s[i]), 0);
    assert_int_equal(info_of(b, 0).free, 3 * slot);
    return slot;
}

/* The slots still mapped hold their bytes. */
static void check_slots(vram_backend *b, vram_buf s[8])
{
    for (int i = 0; i < 8; i++)
        if (s[i].mapped)
            assert_true(device_sum(b, &s[i]) == synthetic_sum(200 + (uint64_t)i, s[i].size));
}

static void test_scatter_map_round_trips(void **state)
{
    vram_backend *b = *state;
    vram_buf s[8];
    size_t slot = fragment_device(b, s);
    size_t g = info_of(b, 0).granularity;
    uint64_t cap = info_of(b, 0).total;
    /* larger than any hole (and one granule short of all that is free): no
     * single extent fits, three pieces do */
    size_t n = 3 * slot - 2 * g + 12345;
    vram_buf x;
    memset(&x, 0, sizeof x);
    assert_int_equal(vram__backend_reserve(b, 0, n, &x), 0);
    assert_int_equal(x.reserved, 3 * slot - g);
    vram__clear_error();
    int rc = vram__backend_map(b, &x);
    if (rc) fprintf(stderr, "map: %s: %s\n", vram_err_name(rc), vram__last_error());
    assert_int_equal(rc, 0);
    const uintptr_t addr = x.addr;
    assert_int_equal(vma_count(x.addr, x.reserved), 3);
    assert_int_equal(info_of(b, 0).free, 3 * slot - x.reserved);
    /* the bytes round-trip, whole and across the piece boundaries */
    unsigned char *src = xmalloc(n), *dst = xmalloc(n);
    vram_synthetic_fill(210, 0, src, n);
    assert_int_equal(vram__backend_to_device(b, &x, 0, src, n), 0);
    memset(dst, 0, n);
    assert_int_equal(vram__backend_to_host(b, &x, 0, dst, n), 0);
    assert_memory_equal(src, dst, n);
    assert_memory_equal((const void *)x.addr, src, n);
    for (size_t k = 1; k <= 2; k++) {
        size_t off = k * slot - 4097, len = 8194; /* straddles the end of piece k */
        memset(dst, 0, len);
        assert_int_equal(vram__backend_to_host(b, &x, off, dst, len), 0);
        assert_memory_equal(src + off, dst, len);
        unsigned char patch[3001];
        memset(patch, 0x40 + (int)k, sizeof patch);
        assert_int_equal(vram__backend_to_device(b, &x, k * slot - 1500, patch, sizeof patch), 0);
        memcpy(src + k * slot - 1500, patch, sizeof patch);
    }
    assert_int_equal(vram__backend_to_host(b, &x, 0, dst, n), 0);
    assert_memory_equal(src, dst, n);
    if (b->iface->checksum) {
        uint64_t sum = 0;
        assert_int_equal(vram__backend_checksum(b, &x, 0, n, &sum), 0);
        assert_true(sum == vram__checksum_partial(src, n, 0));
    }
    check_slots(b, s); /* the pieces overlap no one else's memory */

    /* offload/restore cycles: same address, exact free figures, and every
     * other cycle a filler in the first hole shifts where the pieces go */
    uint64_t want = vram_checksum(src, n);
    void *backup = NULL;
    assert_int_equal(vram__backend_host_alloc(b, n, &backup), 0);
    unsigned char *junk = xmalloc(n);
    memset(junk, 0xEE, n);
    vram_buf filler;
    memset(&filler, 0, sizeof filler);
    assert_int_equal(vram__backend_reserve(b, 0, g, &filler), 0);
    for (int cycle = 0; cycle < 6; cycle++) {
        assert_int_equal(vram__backend_to_host(b, &x, 0, backup, n), 0);
        assert_true(vram_checksum(backup, n) == want);
        assert_int_equal(vram__backend_unmap(b, &x), 0);
        assert_true(x.addr == addr);
        assert_int_equal(read_faults(x.addr + slot), 1);
        uint64_t free_now = 3 * slot - (filler.mapped ? g : 0);
        assert_int_equal(info_of(b, 0).free, free_now);
        if (cycle % 2 == 0) {
            assert_int_equal(vram__backend_map(b, &filler), 0);
            free_now -= g;
        } else {
            assert_int_equal(vram__backend_unmap(b, &filler), 0);
            free_now += g;
        }
        assert_int_equal(info_of(b, 0).free, free_now);
        assert_int_equal(vram__backend_map(b, &x), 0);
        assert_true(x.addr == addr);
        assert_true(vma_count(x.addr, x.reserved) >= 3);
        assert_int_equal(info_of(b, 0).free, free_now - x.reserved);
        assert_int_equal(vram__backend_to_device(b, &x, 0, junk, n), 0);
        assert_true(device_sum(b, &x) != want);
        assert_int_equal(vram__backend_to_device(b, &x, 0, backup, n), 0);
        assert_true(device_sum(b, &x) == want);
        check_slots(b, s);
    }
    /* what is left is less than a slot: slot 1 cannot come back */
    uint64_t free_now = info_of(b, 0).free;
    vram__clear_error();
    assert_int_equal(vram__backend_map(b, &s[1]), VRAM_ENOMEM);
    assert_int_equal(s[1].mapped, 0);
    char want_msg[64];
    snprintf(want_msg, sizeof want_msg, "%llu bytes", (unsigned long long)free_now);
    assert_non_null(strstr(vram__last_error(), "host device 0"));
    assert_non_null(strstr(vram__last_error(), want_msg));
    snprintf(want_msg, sizeof want_msg, "%zu bytes", slot);
    assert_non_null(strstr(vram__last_error(), want_msg));
    assert_int_equal(info_of(b, 0).free, free_now);
    /* unreserve gives every piece back */
    vram__backend_unreserve(b, &x);
    vram__backend_unreserve(b, &filler);
    assert_int_equal(info_of(b, 0).free, 3 * slot);
    vram__backend_host_free(b, backup, n);
    free(junk);
    free(src);
    free(dst);
    check_slots(b, s);
    for (int i = 0; i < 8; i++)
        vram__backend_unreserve(b, &s[i]);
    assert_int_equal(info_of(b, 0).free, cap);
    /* all coalesced again: the whole device maps as one extent */
    vram_buf all;
    new_mapped(b, 0, (size_t)cap, &all);
    assert_int_equal(vma_count(all.addr, all.reserved), 1);
    vram__backend_unreserve(b, &all);
}

/* The case that used to fail: a 32 MiB device and models of 8, 12, 16, 8
 * and 4 MiB offloaded and restored in random order. A restore fails exactly
 * when fewer bytes are free than it needs, however scattered they are. */
static void test_scatter_random_models(void **state)
{
    (void)state;
    vram_config cfg;
    vram_config_init(&cfg);
    cfg.backend = VRAM_BACKEND_HOST;
    cfg.host_devices = 1;
    cfg.host_memory = 32 * MiB;
    vram_backend *b = NULL;
    assert_int_equal(vram__backend_host_create(bcfg(&cfg), &b), 0);
    enum { M = 5 };
    static const size_t mib[M] = {8, 12, 16, 8, 4};
    vram_buf buf[M];
    void *backup[M];
    uint64_t seed[M];
    size_t mapped = 0;
    for (int i = 0; i < M; i++) {
        memset(&buf[i], 0, sizeof buf[i]);
        assert_int_equal(vram__backend_reserve(b, 0, mib[i] * MiB - 1000 * (size_t)i, &buf[i]), 0);
        assert_int_equal(buf[i].reserved, mib[i] * MiB);
        assert_int_equal(vram__backend_host_alloc(b, buf[i].size, &backup[i]), 0);
        seed[i] = 0; /* no bytes yet */
    }
    uint64_t rnd = 0x1234567;
    int scattered = 0, refused = 0;
    for (int step = 0; step < 300; step++) {
        rnd = rnd * 6364136223846793005ULL + 1442695040888963407ULL;
        int i = (int)((rnd >> 33) % M);
        vram_buf *x = &buf[i];
        if (x->mapped) { /* offload */
            assert_int_equal(vram__backend_to_host(b, x, 0, backup[i], x->size), 0);
            assert_true(vram_checksum(backup[i], x->size) == synthetic_sum(seed[i], x->size));
            assert_int_equal(vram__backend_unmap(b, x), 0);
            mapped -= x->reserved;
        } else { /* restore, or a first load */
            uint64_t free_before = info_of(b, 0).free;
            assert_int_equal(free_before, 32 * MiB - mapped);
            vram__clear_error();
            int rc = vram__backend_map(b, x);
            if (free_before < x->reserved) {
                assert_int_equal(rc, VRAM_ENOMEM);
                assert_int_equal(x->mapped, 0);
                assert_null(strstr(vram__last_error(), "fragmented"));
                assert_int_equal(read_faults(x->addr), 1);
                refused++;
            } else {
                if (rc) fprintf(stderr, "map: %s\n", vram__last_error());
                assert_int_equal(rc, 0);
                mapped += x->reserved;
                if (vma_count(x->addr, x->reserved) > 1) scattered++;
                if (seed[i] == 0) {
                    seed[i] = 300 + (uint64_t)step;
                    fill_device(b, x, seed[i]);
                } else {
                    assert_int_equal(vram__backend_to_device(b, x, 0, backup[i], x->size), 0);
                }
                assert_true(device_sum(b, x) == synthetic_sum(seed[i], x->size));
            }
        }
        assert_int_equal(info_of(b, 0).free, 32 * MiB - mapped);
    }
    assert_true(scattered > 0); /* these would have failed before */
    assert_true(refused > 0);
    for (int i = 0; i < M; i++) {
        vram__backend_host_free(b, backup[i], buf[i].size);
        vram__backend_unreserve(b, &buf[i]);
    }
    assert_int_equal(info_of(b, 0).free, 32 * MiB);
    vram__backend_destroy(b);
}

/* Host: memory a range gives back is pooled (kept mapped and populated)
 * and reused by the next map, here or in another range; pooled memory
 * counts as free, and an unmapped range still faults. */
static void test_pooled_memory_is_free_and_reused(void **state)
{
    vram_backend *b = *state;
    const uint64_t total = info_of(b, 0).total;
    vram_buf x, y;
    new_mapped(b, 0, 8 * MiB, &x);
    fill_device(b, &x, 31);
    assert_int_equal(vram__backend_unmap(b, &x), 0);
    assert_int_equal(info_of(b, 0).free, total);
    assert_int_equal(read_faults(x.addr), 1);
    assert_int_equal(vram__backend_map(b, &x), 0); /* back from the pool */
    assert_int_equal(vma_count(x.addr, x.reserved), 1);
    assert_int_equal(info_of(b, 0).free, total - 8 * MiB);
    fill_device(b, &x, 32);
    assert_true(device_sum(b, &x) == synthetic_sum(32, x.size));
    assert_int_equal(vram__backend_unmap(b, &x), 0);
    new_mapped(b, 0, 12 * MiB, &y); /* 8 MiB pooled and 4 MiB fresh */
    assert_int_equal(vma_count(y.addr, y.reserved), 1);
    assert_int_equal(info_of(b, 0).free, total - 12 * MiB);
    fill_device(b, &y, 33);
    assert_true(device_sum(b, &y) == synthetic_sum(33, y.size));
    assert_int_equal(read_faults(x.addr), 1);
    vram__backend_unreserve(b, &y); /* mapped: its memory is pooled, then the range goes */
    assert_int_equal(info_of(b, 0).free, total);
    assert_int_equal(vram__backend_map(b, &x), 0);
    fill_device(b, &x, 34);
    assert_true(device_sum(b, &x) == synthetic_sum(34, x.size));
    vram__backend_unreserve(b, &x);
    assert_int_equal(used_bytes(b, 0), 0);
}

static void test_unreserve_mapped_frees_memory(void **state)
{
    vram_backend *b = *state;
    uint64_t before = info_of(b, 0).free;
    vram_buf buf;
    new_mapped(b, 0, 10 * MiB, &buf);
    if (g_host) assert_int_equal(info_of(b, 0).free, before - buf.reserved);
    vram__backend_unreserve(b, &buf); /* without unmap first */
    if (g_host) assert_int_equal(info_of(b, 0).free, before);
    /* the memory is usable again */
    new_mapped(b, 0, 10 * MiB, &buf);
    vram__backend_unreserve(b, &buf);
}

static void test_free_matches_mapped(void **state)
{
    vram_backend *b = *state;
    vram_dev_info info = info_of(b, 0);
    size_t sizes[] = {1, 3 * MiB, 5 * MiB + 1, 8 * MiB};
    enum { N = sizeof sizes / sizeof sizes[0] };
    vram_buf bufs[N];
    uint64_t mapped = 0, free0 = info.free;
    for (int i = 0; i < N; i++) {
        new_mapped(b, 0, sizes[i], &bufs[i]);
        mapped += bufs[i].reserved;
        vram_dev_info now = info_of(b, 0);
        assert_int_equal(now.total, info.total);
        assert_true(now.free <= now.total);
        if (g_host)
            assert_int_equal(now.free, info.total - mapped);
        else /* a real device: other users may come and go; only the trend */
            assert_true(now.free + mapped / 2 <= free0);
    }
    /* unmapping gives back exactly what it took, in any order */
    static const int order[N] = {2, 0, 3, 1};
    for (int i = 0; i < N; i++) {
        assert_int_equal(vram__backend_unmap(b, &bufs[order[i]]), 0);
        mapped -= bufs[order[i]].reserved;
        if (g_host) assert_int_equal(info_of(b, 0).free, info.total - mapped);
    }
    for (int i = 0; i < N; i++)
        vram__backend_unreserve(b, &bufs[i]);
    if (g_host) assert_int_equal(info_of(b, 0).free, info.total);
}

/* ---- host memory ---- */

static void test_host_alloc_free(void **state)
{
    vram_backend *b = *state;
    size_t sizes[] = {1, 4096, 4097, 5 * MiB + 3, 16 * MiB};
    long page = sysconf(_SC_PAGESIZE);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        void *p = NULL;
        assert_int_equal(vram__backend_host_alloc(b, sizes[i], &p), 0);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % (uintptr_t)page, 0);
        memset(p, (int)i + 1, sizes[i]); /* all of it is writable */
        assert_int_equal(((unsigned char *)p)[sizes[i] - 1], (unsigned char)(i + 1));
        vram__backend_host_free(b, p, sizes[i]);
    }
    vram__backend_host_free(b, NULL, 0); /* does nothing */
    /* a backup round-trips through a device range */
    void *backup = NULL;
    vram_buf buf;
    new_mapped(b, 0, 3 * MiB, &buf);
    fill_device(b, &buf, 41);
    assert_int_equal(vram__backend_host_alloc(b, buf.size, &backup), 0);
    assert_int_equal(vram__backend_to_host(b, &buf, 0, backup, buf.size), 0);
    assert_true(vram_checksum(backup, buf.size) == synthetic_sum(41, buf.size));
    vram__backend_host_free(b, backup, buf.size);
    vram__backend_unreserve(b, &buf);
}

/* ---- argument checks ---- */

static void test_copy_bounds(void **state)
{
    vram_backend *b = *state;
    size_t n = 3 * MiB + 7;
    vram_buf buf;
    new_mapped(b, 0, n, &buf);
    fill_device(b, &buf, 51);
    unsigned char tmp[64];
    assert_int_equal(vram__backend_to_host(b, &buf, n - 10, tmp, 10), 0);
    assert_int_equal(vram__backend_to_device(b, &buf, n - 10, tmp, 10), 0);
    /* past the end of the asked size (even though the granule has room) */
    vram__clear_error();
    assert_int_equal(vram__backend_to_host(b, &buf, n - 10, tmp, 11), VRAM_EINVAL);
    assert_true(vram__last_error()[0] != '\0');
    vram__clear_error();
    assert_int_equal(vram__backend_to_device(b, &buf, n - 10, tmp, 11), VRAM_EINVAL);
    assert_true(vram__last_error()[0] != '\0');
    assert_int_equal(vram__backend_to_host(b, &buf, n + 1, tmp, 0), VRAM_EINVAL);
    assert_int_equal(vram__backend_to_device(b, &buf, n, tmp, 1), VRAM_EINVAL);
    /* offsets that overflow */
    assert_int_equal(vram__backend_to_host(b, &buf, SIZE_MAX, tmp, 2), VRAM_EINVAL);
    assert_int_equal(vram__backend_to_device(b, &buf, 8, tmp, SIZE_MAX - 4), VRAM_EINVAL);
    /* unmapped */
    assert_int_equal(vram__backend_unmap(b, &buf), 0);
    vram__clear_error();
    assert_int_equal(vram__backend_to_host(b, &buf, 0, tmp, 1), VRAM_EINVAL);
    assert_true(vram__last_error()[0] != '\0');
    assert_int_equal(vram__backend_to_device(b, &buf, 0, tmp, 1), VRAM_EINVAL);
    /* the failed calls changed nothing */
    assert_int_equal(vram__backend_map(b, &buf), 0);
    vram__backend_unreserve(b, &buf);
}

static void test_checksum_entry(void **state)
{
    vram_backend *b = *state;
    if (!b->iface->checksum) { /* optional: the core hashes on the host */
        print_message("skipped: backend %s has no checksum entry\n", g_kind);
        skip();
    }
    size_t n = 5 * MiB + 13;
    vram_buf buf;
    new_mapped(b, 0, n, &buf);
    fill_device(b, &buf, 61);
    unsigned char *src = xmalloc(n);
    vram_synthetic_fill(61, 0, src, n);
    uint64_t sum = 0;
    assert_int_equal(vram__backend_checksum(b, &buf, 0, n, &sum), 0);
    assert_true(sum == vram__checksum_partial(src, n, 0));
    assert_true(sum + vram__checksum_final(n) == vram_checksum(src, n));
    /* pieces add up */
    size_t cut = 2 * MiB + 8 * 1001;
    uint64_t s1 = 0, s2 = 0;
    assert_int_equal(vram__backend_checksum(b, &buf, 0, cut, &s1), 0);
    assert_int_equal(vram__backend_checksum(b, &buf, cut, n - cut, &s2), 0);
    assert_true(s1 + s2 == sum);
    assert_true(s2 == vram__checksum_partial(src + cut, n - cut, cut / 8));
    assert_int_equal(vram__backend_checksum(b, &buf, 0, 0, &s1), 0);
    assert_true(s1 == 0);
    assert_true(vram__backend_checksum(b, &buf, 8, n, &s1) < 0); /* past the end */
    assert_int_equal(vram__backend_unmap(b, &buf), 0);
    assert_true(vram__backend_checksum(b, &buf, 0, 8, &s1) < 0); /* not mapped */
    vram__backend_unreserve(b, &buf);
    free(src);
}

/* ---- fault injection: the decorator over the backend under test (fault.c) ---- */

static void test_inject_map_leaves_range_unmapped(void **state)
{
    vram_backend *b = *state;
    vram_buf buf;
    memset(&buf, 0, sizeof buf);
    assert_int_equal(vram__backend_reserve(b, 0, 4 * MiB, &buf), 0);
    uintptr_t addr = buf.addr;
    vram__backend_inject(b, "map", 1, VRAM_ENOMEM);
    assert_int_equal(vram__backend_map(b, &buf), VRAM_ENOMEM);
    assert_string_equal(vram__last_error(), "injected failure: map #1");
    assert_int_equal(buf.mapped, 0);
    assert_true(buf.addr == addr);
    assert_int_equal(used_bytes(b, 0), 0);
    assert_int_equal(read_faults(buf.addr), 1);
    /* one-shot: the next map works, at the same address */
    assert_int_equal(vram__backend_map(b, &buf), 0);
    assert_true(buf.addr == addr);
    fill_device(b, &buf, 71);
    assert_true(device_sum(b, &buf) == synthetic_sum(71, buf.size));
    vram__backend_unreserve(b, &buf);
}

static void test_inject_map_piece_midway(void **state)
{
    vram_backend *b = *state;
    vram_buf s[8];
    size_t slot = fragment_device(b, s);
    vram_buf x;
    memset(&x, 0, sizeof x);
    assert_int_equal(vram__backend_reserve(b, 0, 3 * slot, &x), 0); /* three pieces */
    const uintptr_t addr = x.addr;
    const uint64_t free_before = info_of(b, 0).free;
    for (int nth = 1; nth <= 3; nth++) {
        assert_int_equal(vram__backend_host_fail_piece(b, nth, VRAM_EHOSTMEM), 0);
        assert_int_equal(vram__backend_map(b, &x), VRAM_EHOSTMEM);
        char want[64];
        snprintf(want, sizeof want, "injected failure: map_piece #%d", nth);
        assert_string_equal(vram__last_error(), want);
        /* exactly as before: nothing taken, nothing mapped, all of it faults */
        assert_int_equal(x.mapped, 0);
        assert_true(x.addr == addr);
        assert_int_equal(x.reserved, 3 * slot);
        assert_int_equal(info_of(b, 0).free, free_before);
        assert_int_equal(vma_count(x.addr, x.reserved), 1);
        for (int k = 0; k < 3; k++) {
            assert_int_equal(read_faults(x.addr + (size_t)k * slot), 1);
            assert_int_equal(read_faults(x.addr + (size_t)k * slot + slot - 1), 1);
        }
        check_slots(b, s);
    }
    /* one-shot: the next map works, at the same address, in pieces */
    assert_int_equal(vram__backend_map(b, &x), 0);
    assert_true(x.addr == addr);
    assert_int_equal(vma_count(x.addr, x.reserved), 3);
    assert_int_equal(info_of(b, 0).free, 0);
    fill_device(b, &x, 220);
    assert_true(device_sum(b, &x) == synthetic_sum(220, x.size));
    check_slots(b, s);
    /* a map in one extent counts as one piece */
    assert_int_equal(vram__backend_unmap(b, &x), 0);
    assert_int_equal(vram__backend_unmap(b, &s[0]), 0); /* joins holes 0 and 1 */
    vram_buf two;
    memset(&two, 0, sizeof two);
    assert_int_equal(vram__backend_reserve(b, 0, 2 * slot, &two), 0);
    assert_int_equal(vram__backend_host_fail_piece(b, 1, VRAM_EIO), 0);
    assert_int_equal(vram__backend_map(b, &two), VRAM_EIO);
    assert_int_equal(two.mapped, 0);
    assert_int_equal(info_of(b, 0).free, free_before + slot);
    assert_int_equal(read_faults(two.addr), 1);
    assert_int_equal(vram__backend_map(b, &two), 0);
    assert_int_equal(vma_count(two.addr, two.reserved), 1);
    vram__backend_unreserve(b, &two);
    vram__backend_unreserve(b, &x);
    check_slots(b, s);
    for (int i = 0; i < 8; i++)
        vram__backend_unreserve(b, &s[i]);
    assert_int_equal(used_bytes(b, 0), 0);
}

static void test_inject_nth_call_and_clear(void **state)
{
    vram_backend *b = *state;
    vram_buf bufs[4];
    vram__backend_inject(b, "map", 3, VRAM_EBACKEND);
    for (int i = 0; i < 4; i++) {
        memset(&bufs[i], 0, sizeof bufs[i]);
        assert_int_equal(vram__backend_reserve(b, 0, 2 * MiB, &bufs[i]), 0);
        int rc = vram__backend_map(b, &bufs[i]);
        if (i == 2) {
            assert_int_equal(rc, VRAM_EBACKEND);
            assert_string_equal(vram__last_error(), "injected failure: map #3");
            assert_int_equal(bufs[i].mapped, 0);
        } else {
            assert_int_equal(rc, 0);
        }
    }
    assert_int_equal(used_bytes(b, 0), 3 * 2 * MiB);
    /* n = 0 clears an armed injection */
    vram__backend_inject(b, "to_host", 2, VRAM_EIO);
    vram__backend_inject(b, "to_host", 0, 0);
    unsigned char tmp[16];
    for (int i = 0; i < 3; i++)
        assert_int_equal(vram__backend_to_host(b, &bufs[0], 0, tmp, sizeof tmp), 0);
    /* re-arming replaces the earlier count */
    vram__backend_inject(b, "to_host", 5, VRAM_EIO);
    vram__backend_inject(b, "to_host", 1, VRAM_EIO);
    assert_int_equal(vram__backend_to_host(b, &bufs[0], 0, tmp, sizeof tmp), VRAM_EIO);
    assert_string_equal(vram__last_error(), "injected failure: to_host #1");
    for (int i = 0; i < 6; i++)
        assert_int_equal(vram__backend_to_host(b, &bufs[0], 0, tmp, sizeof tmp), 0);
    /* an unknown operation is refused, and arms nothing */
    assert_int_equal(vram__backend_inject(b, "frobnicate", 1, VRAM_EIO), VRAM_EINVAL);
    assert_int_equal(vram__backend_to_host(b, &bufs[0], 0, tmp, sizeof tmp), 0);
    for (int i = 0; i < 4; i++)
        vram__backend_unreserve(b, &bufs[i]);
}

static void test_inject_reserve(void **state)
{
    vram_backend *b = *state;
    vram_buf buf;
    memset(&buf, 0, sizeof buf);
    vram__backend_inject(b, "reserve", 1, VRAM_ENOMEM);
    assert_int_equal(vram__backend_reserve(b, 0, 2 * MiB, &buf), VRAM_ENOMEM);
    assert_string_equal(vram__last_error(), "injected failure: reserve #1");
    assert_null(buf.impl);
    assert_true(buf.addr == 0);
    assert_int_equal(vram__backend_reserve(b, 0, 2 * MiB, &buf), 0);
    assert_int_equal(vram__backend_map(b, &buf), 0);
    vram__backend_unreserve(b, &buf);
    assert_int_equal(used_bytes(b, 0), 0);
}

static void test_inject_host_alloc(void **state)
{
    vram_backend *b = *state;
    void *p = (void *)&p;
    vram__backend_inject(b, "host_alloc", 1, VRAM_EHOSTMEM);
    assert_int_equal(vram__backend_host_alloc(b, MiB, &p), VRAM_EHOSTMEM);
    assert_string_equal(vram__last_error(), "injected failure: host_alloc #1");
    assert_null(p);
    assert_int_equal(vram__backend_host_alloc(b, MiB, &p), 0);
    assert_non_null(p);
    memset(p, 1, MiB);
    vram__backend_host_free(b, p, MiB);
}

static void test_inject_to_host_keeps_device(void **state)
{
    vram_backend *b = *state;
    size_t n = 3 * MiB;
    vram_buf buf;
    new_mapped(b, 0, n, &buf);
    fill_device(b, &buf, 81);
    unsigned char *dst = xmalloc(n);
    memset(dst, 0x5A, n);
    vram__backend_inject(b, "to_host", 1, VRAM_EIO);
    assert_int_equal(vram__backend_to_host(b, &buf, 0, dst, n), VRAM_EIO);
    assert_string_equal(vram__last_error(), "injected failure: to_host #1");
    assert_true(buf.mapped);
    for (size_t i = 0; i < n; i += 4096)
        assert_int_equal(dst[i], 0x5A); /* nothing copied */
    /* the device still holds its bytes and the next copy works */
    assert_int_equal(vram__backend_to_host(b, &buf, 0, dst, n), 0);
    assert_true(vram_checksum(dst, n) == synthetic_sum(81, n));
    free(dst);
    vram__backend_unreserve(b, &buf);
}

static void test_inject_to_device_keeps_device(void **state)
{
    vram_backend *b = *state;
    size_t n = 3 * MiB + 5;
    vram_buf buf;
    new_mapped(b, 0, n, &buf);
    fill_device(b, &buf, 91);
    unsigned char *src = xmalloc(n);
    vram_synthetic_fill(92, 0, src, n);
    vram__backend_inject(b, "to_device", 1, VRAM_EIO);
    assert_int_equal(vram__backend_to_device(b, &buf, 0, src, n), VRAM_EIO);
    assert_string_equal(vram__last_error(), "injected failure: to_device #1");
    assert_true(device_sum(b, &buf) == synthetic_sum(91, n));
    assert_int_equal(vram__backend_to_device(b, &buf, 0, src, n), 0);
    assert_true(device_sum(b, &buf) == synthetic_sum(92, n));
    free(src);
    vram__backend_unreserve(b, &buf);
}

static void test_inject_unmap_keeps_mapping(void **state)
{
    vram_backend *b = *state;
    vram_buf buf;
    new_mapped(b, 0, 2 * MiB, &buf);
    fill_device(b, &buf, 93);
    vram__backend_inject(b, "unmap", 1, VRAM_EBACKEND);
    assert_int_equal(vram__backend_unmap(b, &buf), VRAM_EBACKEND);
    assert_true(buf.mapped);
    assert_int_equal(used_bytes(b, 0), buf.reserved);
    assert_true(device_sum(b, &buf) == synthetic_sum(93, buf.size));
    assert_int_equal(vram__backend_unmap(b, &buf), 0);
    assert_int_equal(used_bytes(b, 0), 0);
    vram__backend_unreserve(b, &buf);
}

static void test_inject_needs_the_decorator(void **state)
{
    vram_backend *b = *state; /* the plain backend under test */
    assert_int_equal(vram__backend_inject(b, "map", 1, VRAM_ENOMEM), VRAM_ENOTSUP);
    assert_int_equal(vram__backend_inject(NULL, "map", 1, VRAM_ENOMEM), VRAM_ENOTSUP);
    /* nothing was armed: the next map works */
    vram_buf buf;
    new_mapped(b, 0, 2 * MiB, &buf);
    vram__backend_unreserve(b, &buf);
    /* the host-only piece fault is refused by a decorator */
    vram_backend *f = NULL;
    vram_backend *inner = NULL;
    assert_int_equal(make_backend(&inner), 0);
    assert_int_equal(vram__backend_fault_wrap(inner, &f), 0);
    assert_int_equal(vram__backend_host_fail_piece(f, 1, VRAM_EIO), VRAM_ENOTSUP);
    assert_int_equal(vram__backend_inject(f, NULL, 1, VRAM_EIO), VRAM_EINVAL);
    assert_string_equal(f->name, inner->name);
    vram__backend_destroy(f); /* and inner with it */
}

/* ---- threads ---- */

typedef struct inject_worker {
    vram_backend *b;
    const vram_buf *buf;
    int failures;
    int other_errors;
} inject_worker;

static void *inject_worker_main(void *arg)
{
    inject_worker *w = arg;
    unsigned char tmp[4096];
    for (int i = 0; i < 50; i++) {
        int rc = vram__backend_to_host(w->b, w->buf, 0, tmp, sizeof tmp);
        if (rc == VRAM_EIO && strcmp(vram__last_error(), "injected failure: to_host #100") == 0)
            w->failures++;
        else if (rc != 0)
            w->other_errors++;
    }
    return NULL;
}

static void test_inject_counts_across_threads(void **state)
{
    vram_backend *b = *state;
    vram_buf buf;
    new_mapped(b, 0, 2 * MiB, &buf);
    vram__backend_inject(b, "to_host", 100, VRAM_EIO);
    enum { T = 4 };
    pthread_t th[T];
    inject_worker w[T];
    for (int i = 0; i < T; i++) {
        w[i] = (inject_worker){b, &buf, 0, 0};
        assert_int_equal(pthread_create(&th[i], NULL, inject_worker_main, &w[i]), 0);
    }
    int failures = 0, others = 0;
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        failures += w[i].failures;
        others += w[i].other_errors;
    }
    assert_int_equal(failures, 1); /* exactly the 100th of 200 calls */
    assert_int_equal(others, 0);
    vram__backend_unreserve(b, &buf);
}

typedef struct model_worker {
    vram_backend *b;
    int id;
    int device;
    size_t bytes;
    int cycles;
    int line; /* first failure: source line, 0 = none */
    int rc;
    char msg[VRAM_ERRMSG_MAX];
} model_worker;

#define WCHECK(w, cond, code)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            (w)->line = __LINE__;                                                                  \
            (w)->rc = (code);                                                                      \
            snprintf((w)->msg, sizeof(w)->msg, "%s", vram__last_error());                          \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)

/* One model's life on its own buffer: load, then offload/restore cycles,
 * verifying its bytes and address each time. */
static void *model_worker_main(void *arg)
{
    model_worker *w = arg;
    vram_backend *b = w->b;
    size_t n = w->bytes;
    vram_buf buf;
    memset(&buf, 0, sizeof buf);
    void *backup = NULL;
    unsigned char *src = malloc(n), *chk = malloc(n);
    int rc = 0, reserved = 0;
    WCHECK(w, src && chk, 0);
    rc = vram__backend_reserve(b, w->device, n, &buf);
    WCHECK(w, rc == 0, rc);
    reserved = 1;
    rc = vram__backend_host_alloc(b, n, &backup);
    WCHECK(w, rc == 0, rc);
    uintptr_t addr = buf.addr;
    for (int c = 0; c < w->cycles; c++) {
        uint64_t seed = (uint64_t)w->id * 1000 + (uint64_t)c;
        vram_synthetic_fill(seed, 0, src, n);
        uint64_t want = vram_checksum(src, n);
        if (!buf.mapped) {
            rc = vram__backend_map(b, &buf);
            WCHECK(w, rc == 0, rc);
        }
        rc = vram__backend_to_device(b, &buf, 0, src, n); /* load */
        WCHECK(w, rc == 0, rc);
        vram_dev_info info;
        rc = vram__backend_device_info(b, w->device, &info);
        WCHECK(w, rc == 0 && info.free <= info.total, rc);
        rc = vram__backend_to_host(b, &buf, 0, backup, n); /* offload */
        WCHECK(w, rc == 0, rc);
        rc = vram__backend_unmap(b, &buf);
        WCHECK(w, rc == 0 && !buf.mapped && buf.addr == addr, rc);
        rc = vram__backend_map(b, &buf); /* restore */
        WCHECK(w, rc == 0 && buf.addr == addr, rc);
        rc = vram__backend_to_device(b, &buf, 0, backup, n);
        WCHECK(w, rc == 0, rc);
        rc = vram__backend_to_host(b, &buf, 0, chk, n); /* verify */
        WCHECK(w, rc == 0, rc);
        WCHECK(w, vram_checksum(chk, n) == want, 0);
        if (c % 3 == 2) { /* now and then stay offloaded across a cycle */
            rc = vram__backend_unmap(b, &buf);
            WCHECK(w, rc == 0, rc);
        }
    }
out:
    if (backup) vram__backend_host_free(b, backup, n);
    if (reserved) vram__backend_unreserve(b, &buf);
    free(src);
    free(chk);
    return NULL;
}

static void test_concurrent_models(void **state)
{
    vram_backend *b = *state;
    enum { T = 4 };
    int ndev = vram__backend_device_count(b);
    pthread_t th[T];
    model_worker w[T];
    for (int i = 0; i < T; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].b = b;
        w[i].id = i + 1;
        w[i].device = i % ndev;
        /* the last one is large enough for a backend to split its copies */
        w[i].bytes = (i == T - 1 ? 18 * MiB : 6 * MiB) + (size_t)i * 4096 + 13;
        w[i].cycles = 8;
        assert_int_equal(pthread_create(&th[i], NULL, model_worker_main, &w[i]), 0);
    }
    for (int i = 0; i < T; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < T; i++)
        if (w[i].line)
            fail_msg("worker %d failed at line %d: %s (%s)", i, w[i].line, vram_err_name(w[i].rc),
                     w[i].msg);
    if (g_host)
        for (int d = 0; d < ndev; d++)
            assert_int_equal(used_bytes(b, d), 0);
}

/* Models that fill the holes of a fragmented device exactly, offloaded and
 * restored at the same time: the two larger than any hole map in pieces
 * every time, and however the free memory is scattered each restore fits. */
static void test_concurrent_scatter(void **state)
{
    vram_backend *b = *state;
    vram_buf s[8];
    size_t slot = fragment_device(b, s); /* three holes of one slot */
    enum { T = 3 };
    const size_t bytes[T] = {slot + slot / 4, slot + slot / 4, slot / 2}; /* 3 slots in all */
    pthread_t th[T];
    model_worker w[T];
    for (int i = 0; i < T; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].b = b;
        w[i].id = 10 + i;
        w[i].device = 0;
        w[i].bytes = bytes[i] - (size_t)i * 4096 - 7;
        w[i].cycles = 12;
        assert_int_equal(pthread_create(&th[i], NULL, model_worker_main, &w[i]), 0);
    }
    for (int i = 0; i < T; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < T; i++)
        if (w[i].line)
            fail_msg("worker %d failed at line %d: %s (%s)", i, w[i].line, vram_err_name(w[i].rc),
                     w[i].msg);
    assert_int_equal(info_of(b, 0).free, 3 * slot);
    check_slots(b, s);
    for (int i = 0; i < 8; i++)
        vram__backend_unreserve(b, &s[i]);
    assert_int_equal(used_bytes(b, 0), 0);
}

/* ---- runner ---- */

/* Cases about the host backend's own internals (its extent allocator, its
 * pool, its config checks, the fault decorator over it): not run, rather
 * than run and skipped, on another backend, so that a skip always means a
 * case that could not run here. */
static const char *const host_only[] = {
    "test_host_create_checks_config",
    "test_unmapped_range_faults",
    "test_fragmentation_and_coalescing",
    "test_scatter_map_round_trips",
    "test_scatter_random_models",
    "test_pooled_memory_is_free_and_reused",
    "test_inject_map_leaves_range_unmapped",
    "test_inject_map_piece_midway",
    "test_inject_nth_call_and_clear",
    "test_inject_reserve",
    "test_inject_host_alloc",
    "test_inject_to_host_keeps_device",
    "test_inject_to_device_keeps_device",
    "test_inject_unmap_keeps_mapping",
    "test_inject_counts_across_threads",
    "test_concurrent_scatter",
};

static int is_host_only(const char *name)
{
    for (size_t i = 0; i < sizeof host_only / sizeof host_only[0]; i++)
        if (strcmp(name, host_only[i]) == 0) return 1;
    return 0;
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
#define TF(fn) cmocka_unit_test_setup_teardown(fn, setup_fault, teardown)

int main(void)
{
    const char *kind = getenv("VRAM_TEST_BACKEND");
    if (kind && *kind) g_kind = kind;
    if (strcmp(g_kind, "host") == 0) {
        g_host = 1;
    } else if (strcmp(g_kind, "cuda") != 0) {
        fprintf(stderr, "VRAM_TEST_BACKEND: '%s' is not host or cuda\n", g_kind);
        return 1;
    }
    /* a backend that cannot be created here: skip (cuda without a device) */
    vram_backend *probe = NULL;
    int rc = make_backend(&probe);
    if (rc == VRAM_ENODEV) {
        fprintf(stderr, "skipped: backend %s: %s\n", g_kind, vram__last_error());
        return 77;
    }
    if (rc != 0) {
        fprintf(stderr, "backend %s: %s (%s)\n", g_kind, vram_err_name(rc), vram__last_error());
        return 1;
    }
    vram__backend_destroy(probe);

    const struct CMUnitTest tests[] = {
        T(test_device_count_and_info),
        T(test_device_info_bad_index),
        cmocka_unit_test(test_host_create_checks_config),
        T(test_reserve_rounds_and_aligns),
        T(test_reserve_bad_args),
        T(test_reserve_on_every_device),
        T(test_map_write_read),
        T(test_map_twice_fails),
        T(test_address_stable_over_cycles),
        T(test_unmapped_range_faults),
        T(test_capacity_enomem),
        T(test_capacity_per_device),
        T(test_fragmentation_and_coalescing),
        T(test_scatter_map_round_trips),
        cmocka_unit_test(test_scatter_random_models),
        T(test_pooled_memory_is_free_and_reused),
        T(test_unreserve_mapped_frees_memory),
        T(test_free_matches_mapped),
        T(test_host_alloc_free),
        T(test_copy_bounds),
        T(test_checksum_entry),
        TF(test_inject_map_leaves_range_unmapped),
        T(test_inject_map_piece_midway),
        TF(test_inject_nth_call_and_clear),
        TF(test_inject_reserve),
        TF(test_inject_host_alloc),
        TF(test_inject_to_host_keeps_device),
        TF(test_inject_to_device_keeps_device),
        TF(test_inject_unmap_keeps_mapping),
        T(test_inject_needs_the_decorator),
        TF(test_inject_counts_across_threads),
        T(test_concurrent_models),
        T(test_concurrent_scatter),
    };
    struct CMUnitTest run[sizeof tests / sizeof tests[0]];
    size_t n = 0;
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++)
        if (g_host || !is_host_only(tests[i].name)) run[n++] = tests[i];
    if (n < sizeof tests / sizeof tests[0])
        printf("backend %s: %zu host-only cases not applicable, %zu run\n", g_kind,
               sizeof tests / sizeof tests[0] - n, n);
    return _cmocka_run_group_tests(g_kind, run, n, NULL, NULL);
}
