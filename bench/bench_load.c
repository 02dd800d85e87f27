/* bench_load.c - benchmark: vram's safetensors load into device memory against plain large sequential reads of the same file, cold and warm, medians of several rounds. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/st_write.h"
#include "vram.h"

#define READ_CHUNK ((size_t)16 << 20)

/* Monotonic seconds. */
static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Prints the options. */
static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: bench_load [--size SIZE] [--dir DIR] [--dtypes LIST] [--backend auto|host|cuda]\n"
        "                  [--chunk SIZE] [--runs N] [--reuse] [--keep] [--drop-all]\n"
        "  --size    model file size (default 2G; e.g. 256M for a quick run)\n"
        "  --dir     where the model file is written (default /tmp)\n"
        "  --dtypes  tensor dtypes for make_model (default BF16)\n"
        "  --backend device backend (default: VRAM_BACKEND or auto)\n"
        "  --chunk   VRAM_CHUNK for the load (default: the configured one)\n"
        "  --runs N  rounds (each: cold read, cold load, warm read, warm load); medians are\n"
        "            reported (default 3; --rounds is the same)\n"
        "  --reuse   use an existing model file of that name instead of writing it\n"
        "  --keep    leave the model file in place afterwards\n"
        "  --drop-all  for cold runs, always drop the whole page cache as well\n"
        "Cold runs drop the file from the page cache (fdatasync + POSIX_FADV_DONTNEED; and\n"
        "/proc/sys/vm/drop_caches, when permitted, if pages are left or with --drop-all:\n"
        "it also deactivates the host backend's emulated memory, slowing its next map, a\n"
        "cost real VRAM does not have); the fraction still cached is printed.\n"
        "One untimed load and release comes first: the host backend's first touch of its\n"
        "emulated memory is excluded, as real VRAM needs no page zeroing.\n");
}

/* Fraction of the file's pages in the page cache (mincore), or -1. */
static double cached_fraction(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_size == 0) {
        close(fd);
        return -1;
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return -1;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t pages = ((size_t)st.st_size + page - 1) / page;
    unsigned char *vec = malloc(pages);
    double frac = -1;
    if (vec && mincore(map, (size_t)st.st_size, vec) == 0) {
        size_t in = 0;
        for (size_t i = 0; i < pages; i++)
            in += vec[i] & 1;
        frac = (double)in / (double)pages;
    }
    free(vec);
    munmap(map, (size_t)st.st_size);
    return frac;
}

/* Drops the file from the page cache: fdatasync + POSIX_FADV_DONTNEED, and
 * the global /proc/sys/vm/drop_caches (when permitted) only when pages of
 * the file are still cached after that, or when all is set. The global drop
 * is avoided because it also pushes every shmem page, the host backend's
 * emulated device memory included, to the inactive LRU, which makes the
 * next map of that memory 3-4 times slower: a cost real VRAM does not
 * have. Returns the fraction of the file still cached. */
static double drop_cache(const char *path, int all)
{
    int fd = open(path, O_RDONLY);
    if (fd >= 0) {
        fdatasync(fd);
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
    double left = cached_fraction(path);
    if (!all && left == 0) return left;
    sync();
    int d = open("/proc/sys/vm/drop_caches", O_WRONLY);
    if (d >= 0) {
        if (write(d, "1", 1) < 0) { /* not permitted: DONTNEED has done what it can */
        }
        close(d);
    }
    return cached_fraction(path);
}

/* Reads the whole file with large sequential reads; returns seconds or -1. */
static double read_file(const char *path, uint64_t *bytes)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        fprintf(stderr, "bench_load: %s: %s\n", path, strerror(errno));
        return -1;
    }
    void *buf = NULL;
    if (posix_memalign(&buf, 4096, READ_CHUNK) != 0) {
        close(fd);
        return -1;
    }
    memset(buf, 0, READ_CHUNK);
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    double t0 = now();
    uint64_t total = 0;
    for (;;) {
        ssize_t r = read(fd, buf, READ_CHUNK);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        total += (uint64_t)r;
    }
    double secs = now() - t0;
    free(buf);
    close(fd);
    *bytes = total;
    return secs;
}

/* Loads the model through the public API (a fresh load each time); returns
 * seconds of vram_model_acquire or -1. */
static double vram_load(vram_manager *m, const char *path, int run, uint64_t *bytes,
                        size_t *ntensors)
{
    char name[64];
    snprintf(name, sizeof name, "bench-%d", run);
    vram_model_opts opts;
    vram_model_opts_init(&opts);
    opts.source = path;
    vram_model *model = NULL;
    int rc = vram_manager_register(m, name, &opts, &model);
    if (rc < 0) {
        fprintf(stderr, "bench_load: register %s: %s\n", path, vram_strerror(rc));
        return -1;
    }
    vram_lease *lease = NULL;
    double t0 = now();
    rc = vram_model_acquire(model, &lease);
    double secs = now() - t0;
    if (rc < 0) {
        fprintf(stderr, "bench_load: acquire: %s\n", vram_strerror(rc));
        vram_manager_unregister(m, name);
        return -1;
    }
    *bytes = vram_model_bytes(model);
    *ntensors = vram_model_tensor_count(model);
    vram_lease_end(lease);
    vram_model_release(model, VRAM_WAIT);
    vram_manager_unregister(m, name);
    return secs;
}

/* The median of n values (sorts v in place). */
static double median(double *v, int n)
{
    for (int i = 1; i < n; i++) /* insertion sort: n is small */
        for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
            double t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Prints one result line: both rates and their ratio. */
static void row(const char *mode, double cached, uint64_t rb, double rs, uint64_t vb, double vs)
{
    double r = rs > 0 ? (double)rb / rs / 1e9 : 0, v = vs > 0 ? (double)vb / vs / 1e9 : 0;
    printf("%-5s  cached-before=%5.1f%%  read %6.2f GB/s (%.3f s)  vram %6.2f GB/s (%.3f s)  "
           "ratio %.2f%s\n",
           mode, cached < 0 ? -1.0 : cached * 100, r, rs, v, vs, r > 0 ? v / r : 0,
           r > 0 && v / r >= 0.8 ? "" : "  (below the 0.8 target)");
}

/* Writes (or reuses) the model, loads it once untimed, then measures
 * rounds of cold and warm reads and loads side by side and prints the
 * medians and their ratios. Exit 0 after a run (the ratio is printed, not
 * enforced), 1 on failure, 2 on bad arguments. */
int main(int argc, char **argv)
{
    uint64_t size = (uint64_t)2 << 30, chunk = 0;
    const char *dir = "/tmp", *dtypes = "BF16", *backend = NULL;
    int runs = 3, reuse = 0, keep = 0, drop_all = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--reuse") == 0) {
            reuse = 1;
        } else if (strcmp(a, "--keep") == 0) {
            keep = 1;
        } else if (strcmp(a, "--drop-all") == 0) {
            drop_all = 1;
        } else if (v && strcmp(a, "--size") == 0) {
            if (vram_parse_size(v, &size) < 0 || size == 0) {
                fprintf(stderr, "bench_load: --size '%s' is not a size (use e.g. 256M or 2G)\n", v);
                return 2;
            }
            i++;
        } else if (v && strcmp(a, "--chunk") == 0) {
            if (vram_parse_size(v, &chunk) < 0) {
                fprintf(stderr, "bench_load: --chunk '%s' is not a size\n", v);
                return 2;
            }
            i++;
        } else if (v && strcmp(a, "--dir") == 0) {
            dir = v, i++;
        } else if (v && strcmp(a, "--dtypes") == 0) {
            dtypes = v, i++;
        } else if (v && strcmp(a, "--backend") == 0) {
            backend = v, i++;
        } else if (v && (strcmp(a, "--runs") == 0 || strcmp(a, "--rounds") == 0)) {
            runs = atoi(v), i++;
            if (runs < 1) runs = 1;
        } else {
            usage(stderr);
            return 2;
        }
    }

    char path[4096];
    snprintf(path, sizeof path, "%s/vram-bench-%" PRIu64 ".safetensors", dir, size);
    struct stat st;
    if (!(reuse && stat(path, &st) == 0)) {
        char err[512];
        double t0 = now();
        int rc = st_make_model(path, size, dtypes, 1, 1, err, sizeof err);
        if (rc < 0) {
            fprintf(stderr, "bench_load: make_model: %s\n", err);
            return 1;
        }
        printf("wrote %s in %.1f s\n", path, now() - t0);
    }
    if (stat(path, &st) < 0) {
        fprintf(stderr, "bench_load: %s: %s\n", path, strerror(errno));
        return 1;
    }

    vram_config cfg;
    vram_config_init(&cfg);
    char err[512];
    if (vram_config_load(&cfg, NULL, err, sizeof err) < 0) {
        fprintf(stderr, "bench_load: %s\n", err);
        return 2;
    }
    if (backend && vram_config_set(&cfg, "VRAM_BACKEND", backend, err, sizeof err) < 0) {
        fprintf(stderr, "bench_load: %s\n", err);
        return 2;
    }
    if (chunk) cfg.chunk_bytes = chunk;
    /* the host backend's emulated device must hold the model (2 MiB granules) */
    uint64_t need = ((uint64_t)st.st_size / 4 * 5 + ((uint64_t)64 << 20)) >> 21 << 21;
    if (cfg.host_memory < need) cfg.host_memory = need;
    cfg.log_level = VRAM_LOG_WARN;
    vram_set_log_level(VRAM_LOG_WARN);
    vram_manager *m = NULL;
    int rc = vram_manager_create(&cfg, &m);
    if (rc < 0) {
        fprintf(stderr, "bench_load: manager: %s\n", vram_strerror(rc));
        return 1;
    }
    printf("file %s: %.2f GiB, backend %s\n", path, (double)st.st_size / (1 << 30),
           vram_manager_backend(m));

    uint64_t rb = 0, vb = 0;
    size_t nt = 0;
    int run = 0;
    double *t = calloc((size_t)runs * 5, sizeof *t);
    if (!t) goto done;
    double *cold_r = t, *cold_v = t + runs, *warm_r = t + 2 * runs, *warm_v = t + 3 * runs,
           *syn = t + 4 * runs;
    /* Warm-up, untimed: one load and release of this model. The host
     * backend's first touch of its emulated memory is excluded, as real
     * VRAM needs no page zeroing (the emulated device's pages are zeroed by
     * the kernel on first use and stay resident after); on CUDA it takes
     * the context and pool set-up out of the timings. */
    if (vram_load(m, path, run++, &vb, &nt) < 0) goto done;
    printf("warm-up: one untimed load + release (the host backend's first touch of its emulated "
           "memory is excluded, as real VRAM needs no page zeroing)\n");
    printf("model: %zu tensors, %" PRIu64 " bytes in the device range; %d rounds, medians\n", nt,
           vb, runs);
    double cold_cached = 0, warm_cached = 1;
    for (int i = 0; i < runs; i++) {
        /* cold: the file dropped from the page cache before each */
        double c1 = drop_cache(path, drop_all);
        cold_r[i] = read_file(path, &rb);
        double c2 = drop_cache(path, drop_all);
        cold_v[i] = vram_load(m, path, run++, &vb, &nt);
        if (cold_r[i] < 0 || cold_v[i] < 0) goto done;
        if (c1 > cold_cached) cold_cached = c1;
        if (c2 > cold_cached) cold_cached = c2;
        /* warm: the file in the page cache (the cold load read all of it) */
        double c3 = cached_fraction(path);
        warm_r[i] = read_file(path, &rb);
        warm_v[i] = vram_load(m, path, run++, &vb, &nt);
        if (warm_r[i] < 0 || warm_v[i] < 0) goto done;
        if (c3 < warm_cached) warm_cached = c3;
        printf("round %d: cold read %.3f s, load %.3f s (%.2f); warm read %.3f s, load %.3f s "
               "(%.2f)\n",
               i + 1, cold_r[i], cold_v[i], cold_r[i] / cold_v[i] * (double)vb / (double)rb,
               warm_r[i], warm_v[i], warm_r[i] / warm_v[i] * (double)vb / (double)rb);
    }
    row("cold", cold_cached, rb, median(cold_r, runs), vb, median(cold_v, runs));
    row("warm", warm_cached, rb, median(warm_r, runs), vb, median(warm_v, runs));
    /* the device side alone: the same bytes from the synthetic source (no
     * file), i.e. allocation plus copies to the device */
    {
        char spec[64];
        snprintf(spec, sizeof spec, "synthetic:%" PRIu64, vb);
        uint64_t sb = 0;
        for (int i = 0; i < runs; i++) {
            syn[i] = vram_load(m, spec, run++, &sb, &nt);
            if (syn[i] < 0) goto done;
        }
        double med = median(syn, runs);
        printf("device side (synthetic:%" PRIu64 ", no file; its fill included): %.2f GB/s "
               "(%.3f s)\n",
               vb, med > 0 ? (double)sb / med / 1e9 : 0, med);
    }
done:
    free(t);
    vram_manager_destroy(m);
    if (!keep && !reuse) unlink(path);
    return 0;
}
