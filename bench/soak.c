/* soak.c - the soak run (make soak): thousands of offload/restore cycles over HTTP and the C API with checksums, RSS, open files and device memory required flat; --faults makes a share of transfers and allocations fail. */
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "backend/backend.h"
#include "core/core.h"
#include "vram.h"
#include "vram_server.h"

#define NMODELS 3
#define MiB (1024ULL * 1024ULL)

static const char *const g_ops[] = {"to_host", "to_device", "host_alloc", "map"};

static long rss_kib(void)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0;
        fclose(f);
    }
    return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

static int open_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    for (struct dirent *e; d && (e = readdir(d));)
        if (e->d_name[0] != '.') n++;
    if (d) closedir(d);
    return n - 1; /* the directory itself */
}

static uint64_t device_used(vram_manager *m)
{
    vram_device_status st;
    return vram_manager_devices(m, &st, 1, sizeof st) >= 1 ? st.used_by_models_bytes : 0;
}

/* One HTTP request (Connection: close); returns the status, 0 on no answer. */
static int http_post(int port, const char *path)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        if (fd >= 0) close(fd);
        return 0;
    }
    char req[256], buf[4096];
    int n = snprintf(req, sizeof req, "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                                      "Content-Length: 0\r\n\r\n", path);
    int status = 0;
    if (write(fd, req, (size_t)n) == n) {
        size_t got = 0;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ssize_t r;
        while (got + 1 < sizeof buf && poll(&p, 1, 60000) > 0 &&
               (r = read(fd, buf + got, sizeof buf - 1 - got)) > 0)
            got += (size_t)r;
        buf[got] = '\0';
        if (got > 12) status = atoi(buf + 9);
    }
    close(fd);
    return status;
}

typedef struct soak {
    vram_manager *m;
    vram_model *models[NMODELS];
    uint64_t sums[NMODELS];
    int port, faults_pct;
    long cycles, failures, injected, bad_sums, http_errors;
} soak;

/* A cycle through the C API: acquire (load or restore), checksum, end, offload. */
static void c_cycle(soak *s, int k)
{
    vram_lease *l = NULL;
    if (vram_model_acquire(s->models[k], &l) < 0) {
        s->failures++;
        return;
    }
    uint64_t sum = 0;
    if (vram_model_checksum(s->models[k], &sum) < 0) s->failures++;
    else if (s->sums[k] == 0) s->sums[k] = sum;
    else if (sum != s->sums[k]) s->bad_sums++;
    vram_lease_end(l);
    if (vram_model_offload(s->models[k], VRAM_WAIT) < 0) s->failures++;
}

/* A cycle over HTTP: load (restore), run, offload. */
static void http_cycle(soak *s, int k)
{
    static const char *const names[NMODELS] = {"m0", "m1", "m2"};
    const char *acts[] = {"load", "run", "offload"};
    for (int a = 0; a < 3; a++) {
        char path[96];
        snprintf(path, sizeof path, "/api/v1/models/%s/%s", names[k], acts[a]);
        int st = http_post(s->port, path);
        if (st == 0) s->http_errors++;
        else if (st != 200) s->failures++;
    }
}

static void maybe_inject(soak *s)
{
    if (!s->faults_pct || rand() % 100 >= s->faults_pct) return;
    const char *op = g_ops[rand() % 4];
    vram__backend_inject(s->m->backend, op, 1 + rand() % 3, VRAM_EBACKEND);
    s->injected++;
}

static void sample(const soak *s, long i, const char *when)
{
    printf("soak: %-6s cycle %6ld  rss %6ld KiB  fds %3d  device %6.1f MiB  failures %ld "
           "(injected %ld)\n",
           when, i, rss_kib(), open_fds(), (double)device_used(s->m) / (double)MiB, s->failures,
           s->injected);
    fflush(stdout);
}

static int run(soak *s)
{
    long warm = s->cycles / 10 > 50 ? s->cycles / 10 : 50;
    long rss0 = 0;
    int fds0 = 0;
    for (long i = 0; i < s->cycles; i++) {
        maybe_inject(s);
        if (i % 2) http_cycle(s, (int)(i % NMODELS));
        else c_cycle(s, (int)(i % NMODELS));
        if (i == warm) {
            for (const char **o = (const char *[]){g_ops[0], g_ops[1], g_ops[2], g_ops[3], NULL}; *o; o++)
                vram__backend_inject(s->m->backend, *o, 0, 0);
            vram_manager_offload_all(s->m, VRAM_WAIT);
            rss0 = rss_kib();
            fds0 = open_fds();
            sample(s, i, "base");
        } else if (i % (s->cycles / 10 > 0 ? s->cycles / 10 : 1) == 0) {
            sample(s, i, "");
        }
    }
    for (const char **o = (const char *[]){g_ops[0], g_ops[1], g_ops[2], g_ops[3], NULL}; *o; o++)
        vram__backend_inject(s->m->backend, *o, 0, 0);
    vram_manager_offload_all(s->m, VRAM_WAIT);
    sample(s, s->cycles, "end");
    long drss = rss_kib() - rss0;
    int dfds = open_fds() - fds0;
    uint64_t dev = device_used(s->m);
    printf("soak: %ld cycles (%ld C API, %ld HTTP), %ld failures with %ld injected faults, %ld "
           "checksum mismatches, %ld HTTP non-answers; RSS %+ld KiB, fds %+d, device memory "
           "after offload %llu bytes\n",
           s->cycles, (s->cycles + 1) / 2, s->cycles / 2, s->failures, s->injected, s->bad_sums,
           s->http_errors, drss, dfds, (unsigned long long)dev);
    int ok = s->bad_sums == 0 && s->http_errors == 0 && drss < 16 * 1024 && dfds <= 2 && dev == 0 &&
             (s->faults_pct || s->failures == 0);
    printf("soak: %s\n", ok ? "PASS (flat)" : "FAIL");
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    soak s = {.cycles = 3000};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--cycles") && i + 1 < argc) s.cycles = atol(argv[++i]);
        else if (!strcmp(argv[i], "--faults") && i + 1 < argc) s.faults_pct = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: soak [--cycles N (3000)] [--faults PCT (0: none)]\n");
            return 64;
        }
    }
    srand(11);
    vram_config cfg;
    vram_config_init(&cfg);
    cfg.backend = VRAM_BACKEND_HOST;
    cfg.fault_injection = 1;
    cfg.host_memory = 64 * MiB;
    cfg.host_devices = 1;
    cfg.evict_wait = 0;
    cfg.log_level = VRAM_LOG_ERROR;
    cfg.idle_timeout = 0;
    vram_set_log_level(VRAM_LOG_ERROR);
    vram_set_log_callback(NULL, NULL);
    if (vram_manager_create(&cfg, &s.m) < 0) return 1;
    for (int k = 0; k < NMODELS; k++) {
        char name[8], src[32];
        snprintf(name, sizeof name, "m%d", k);
        snprintf(src, sizeof src, "synthetic:8M:%d", k + 1);
        vram_model_opts o;
        vram_model_opts_init(&o);
        o.source = src;
        if (vram_manager_register(s.m, name, &o, &s.models[k]) < 0) return 1;
    }
    vram_server_opts so;
    vram_server_opts_init(&so);
    so.port = 0;
    vram_server *srv = NULL;
    if (vram_server_start(s.m, &so, &srv) < 0) return 1;
    s.port = vram_server_port(srv);
    int rc = run(&s);
    vram_server_stop(srv, 5);
    vram_manager_destroy(s.m);
    return rc;
}
