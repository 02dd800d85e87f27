/* bench_core.c - offload/restore throughput of a model through the manager vs plain memcpy, and the cost of a hot acquire + end. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "vram.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[n / 2];
}

/* ---- hot acquire + end ---- */

typedef struct hot_arg {
    vram_model *model;
    long iters;
    double seconds;
} hot_arg;

static void *hot_loop(void *p)
{
    hot_arg *a = p;
    double t0 = now();
    for (long i = 0; i < a->iters; i++) {
        vram_lease *l = NULL;
        if (vram_model_acquire(a->model, &l) < 0) abort();
        vram_lease_end(l);
    }
    a->seconds = now() - t0;
    return NULL;
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_core [--size SIZE] [--rounds N] [--hot-iters N]\n"
                    "  Offload and restore a synthetic model of SIZE (default 1G) through the\n"
                    "  manager on the host backend, next to memcpy of SIZE into touched memory,\n"
                    "  and time a hot acquire + end of lease, alone and with two threads.\n");
}

int main(int argc, char **argv)
{
    uint64_t size = 1ULL << 30;
    int rounds = 5;
    long hot_iters = 2000000;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--size") && i + 1 < argc) {
            if (vram_parse_size(argv[++i], &size) < 0 || size == 0) {
                fprintf(stderr, "bench_core: bad size '%s'\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) {
            rounds = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--hot-iters") && i + 1 < argc) {
            hot_iters = atol(argv[++i]);
        } else {
            usage();
            return strcmp(argv[i], "--help") ? 2 : 0;
        }
    }
    if (rounds < 1) rounds = 1;
    if (rounds > 64) rounds = 64;

    vram_config cfg;
    vram_config_init(&cfg);
    cfg.backend = VRAM_BACKEND_HOST;
    cfg.host_memory = size + (size / 4) + (64ULL << 20);
    cfg.idle_timeout = 0;
    cfg.log_level = VRAM_LOG_WARN;
    vram_manager *m = NULL;
    if (vram_manager_create(&cfg, &m) < 0) {
        fprintf(stderr, "bench_core: cannot create the manager\n");
        return 1;
    }
    char spec[64];
    snprintf(spec, sizeof spec, "synthetic:%llu:1", (unsigned long long)size);
    vram_model_opts o;
    vram_model_opts_init(&o);
    o.source = spec;
    vram_model *model = NULL;
    if (vram_manager_register(m, "bench", &o, &model) < 0) return 1;

    /* baseline: memcpy of the same size into already-touched memory */
    unsigned char *src = mmap(NULL, size, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    unsigned char *dst = mmap(NULL, size, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (src == MAP_FAILED || dst == MAP_FAILED) {
        fprintf(stderr, "bench_core: cannot map 2 x %llu bytes\n", (unsigned long long)size);
        return 1;
    }
    memset(src, 0x5a, size);
    memset(dst, 0xa5, size);

    vram_lease *l = NULL;
    if (vram_model_acquire(model, &l) < 0) return 1; /* the load */
    vram_lease_end(l);
    if (vram_model_offload(model, 0) < 0) return 1; /* first offload allocates the backup */
    if (vram_model_acquire(model, &l) < 0) return 1;
    vram_lease_end(l);

    double t_memcpy[64], t_off[64], t_res[64];
    for (int r = 0; r < rounds; r++) {
        /* interleave so that drift hits both sides alike */
        double t0 = now();
        memcpy(dst, src, size);
        t_memcpy[r] = now() - t0;
        t0 = now();
        if (vram_model_offload(model, 0) < 0) return 1;
        t_off[r] = now() - t0;
        t0 = now();
        if (vram_model_acquire(model, &l) < 0) return 1;
        t_res[r] = now() - t0;
        vram_lease_end(l);
    }
    volatile unsigned char sink = dst[size / 2];
    (void)sink;
    double gb = (double)size / 1e9;
    double mc = gb / median(t_memcpy, rounds);
    double off = gb / median(t_off, rounds);
    double res = gb / median(t_res, rounds);
    printf("size %.2f GB, %d rounds, medians (host backend)\n", gb, rounds);
    printf("  memcpy into touched memory   %7.2f GB/s   1.00x\n", mc);
    printf("  offload through the manager  %7.2f GB/s   %.2fx   (target >= 0.80x)\n", off, off / mc);
    printf("  restore through the manager  %7.2f GB/s   %.2fx   (target >= 0.80x)\n", res, res / mc);
    munmap(src, size);
    munmap(dst, size);

    /* hot acquire + end: the model on the device */
    vram_model_opts_init(&o);
    o.source = "synthetic:2M:3";
    vram_model *hot = NULL;
    if (vram_manager_register(m, "hot", &o, &hot) < 0) return 1;
    if (vram_model_acquire(hot, &l) < 0) return 1;
    vram_lease_end(l);
    hot_arg one = {hot, hot_iters, 0};
    hot_loop(&one);
    double ns1 = one.seconds / (double)hot_iters * 1e9;
    hot_arg two[2] = {{hot, hot_iters / 2, 0}, {hot, hot_iters / 2, 0}};
    pthread_t t[2];
    double t0 = now();
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, hot_loop, &two[i]);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    double wall = now() - t0;
    double ns2 = (two[0].seconds + two[1].seconds) / (double)hot_iters * 1e9;
    printf("hot acquire + end of lease (%ld iterations)\n", hot_iters);
    printf("  uncontended                  %7.0f ns per pair   (target < 1000 ns)\n", ns1);
    printf("  two threads contending       %7.0f ns per pair per thread, %.0f ns wall per pair\n",
           ns2, wall / (double)hot_iters * 1e9);
    vram_manager_destroy(m);
    return 0;
}
