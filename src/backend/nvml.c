/* nvml.c - picks the GPU with the most free memory, then the least busy, through NVML. */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/nvml.h"
#include "base/dl.h"
#include "vram.h"

#define NVML_DEFAULT_LIBRARY "libnvidia-ml.so.1"
#define NVML_MAX_DEVICES 64
#define NVML_UUID_LEN 96 /* NVML_DEVICE_UUID_V2_BUFFER_SIZE */

/* The few NVML types used, as its ABI has them. */
typedef int nvmlReturn_t;
typedef struct nvmlDevice_st *nvmlDevice_t;
typedef struct {
    unsigned long long total, free, used;
} nvml_memory;
typedef struct {
    unsigned int gpu, memory;
} nvml_utilization;

typedef struct nvml_api {
    vram_dl dl;
    nvmlReturn_t (*init)(void);
    nvmlReturn_t (*shutdown)(void);
    const char *(*error_string)(nvmlReturn_t r);
    nvmlReturn_t (*count)(unsigned int *n);
    nvmlReturn_t (*handle)(unsigned int i, nvmlDevice_t *d);
    nvmlReturn_t (*memory)(nvmlDevice_t d, nvml_memory *m);
    nvmlReturn_t (*utilization)(nvmlDevice_t d, nvml_utilization *u);
    nvmlReturn_t (*uuid)(nvmlDevice_t d, char *buf, unsigned int len);
    nvmlReturn_t (*name)(nvmlDevice_t d, char *buf, unsigned int len); /* optional */
} nvml_api;

typedef struct nvml_dev {
    unsigned index;
    char uuid[NVML_UUID_LEN];
    char name[96];
    unsigned long long free, total;
    int util; /* percent, -1 when NVML cannot tell */
} nvml_dev;

/* Writes the reason for the caller into why (whylen bytes), if any. */
static void say(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void say(char *why, size_t whylen, const char *fmt, ...)
{
    if (!why || whylen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
}

/* NVML's text for r; never NULL. */
static const char *nv_err(const nvml_api *a, nvmlReturn_t r)
{
    const char *s = a->error_string ? a->error_string(r) : NULL;
    return s ? s : "unknown NVML error";
}

#define SYM(field, name, req) {name, NULL, offsetof(nvml_api, field), req}
static const vram_dl_sym nvml_syms[] = {
    SYM(init, "nvmlInit_v2", 1),
    SYM(shutdown, "nvmlShutdown", 1),
    SYM(error_string, "nvmlErrorString", 1),
    SYM(count, "nvmlDeviceGetCount_v2", 1),
    SYM(handle, "nvmlDeviceGetHandleByIndex_v2", 1),
    SYM(memory, "nvmlDeviceGetMemoryInfo", 1),
    SYM(utilization, "nvmlDeviceGetUtilizationRates", 1),
    SYM(uuid, "nvmlDeviceGetUUID", 1),
    SYM(name, "nvmlDeviceGetName", 0),
};
#undef SYM
#define NVML_NSYMS (sizeof nvml_syms / sizeof nvml_syms[0])

/* Opens the library and binds the entry points; VRAM_ENODEV with the
 * reason in why when it cannot. */
static int api_load(nvml_api *a, const char *path, char *why, size_t whylen)
{
    memset(a, 0, sizeof *a);
    int rc = vram__dl_open(&a->dl, path, nvml_syms, NVML_NSYMS, a);
    if (rc == VRAM_DL_ENOLIB)
        say(why, whylen,
            "NVML is not available: cannot load '%s' (VRAM_NVML_LIBRARY; it comes with the NVIDIA "
            "driver): %s; no GPU picked",
            path, a->dl.dlerr);
    else if (rc == VRAM_DL_ENOSYM)
        say(why, whylen, "NVML library '%s' lacks %s; no GPU picked", path, a->dl.missing);
    return rc ? VRAM_ENODEV : 0;
}

static void api_free(nvml_api *a)
{
    vram__dl_close(&a->dl, nvml_syms, NVML_NSYMS, a);
}

/* a ranks before b: most free memory (ties within VRAM_NVML_FREE_TIE), then
 * known and lowest utilization, then most free, then lowest index. */
static int better(const nvml_dev *a, const nvml_dev *b)
{
    unsigned long long diff = a->free > b->free ? a->free - b->free : b->free - a->free;
    if (diff > VRAM_NVML_FREE_TIE) return a->free > b->free;
    if ((a->util < 0) != (b->util < 0)) return a->util >= 0;
    if (a->util != b->util) return a->util < b->util;
    if (a->free != b->free) return a->free > b->free;
    return a->index < b->index;
}

/* One device as "GPU 1 GPU-... (name): 12.0 GiB free of 80.0, 3% busy". */
static void describe(const nvml_dev *d, char *buf, size_t len)
{
    char util[32];
    if (d->util < 0)
        snprintf(util, sizeof util, "busy unknown");
    else
        snprintf(util, sizeof util, "%d%% busy", d->util);
    snprintf(buf, len, "GPU %u %s%s%s%s: %.1f GiB free of %.1f, %s", d->index, d->uuid,
             d->name[0] ? " (" : "", d->name, d->name[0] ? ")" : "", (double)d->free / (1 << 30),
             (double)d->total / (1 << 30), util);
}

/* See nvml.h. Everything loaded or allocated here is released before
 * returning, on success and on failure alike. */
/* Queries device i into d. Returns 0, or an NVML error with *step naming
 * the call that failed. */
static nvmlReturn_t query_device(const nvml_api *a, unsigned i, nvml_dev *d, const char **step)
{
    memset(d, 0, sizeof *d);
    d->index = i;
    nvmlDevice_t h;
    nvml_memory mem;
    nvml_utilization u;
    *step = "nvmlDeviceGetHandleByIndex_v2";
    nvmlReturn_t r = a->handle(i, &h);
    if (r == 0) {
        *step = "nvmlDeviceGetMemoryInfo";
        r = a->memory(h, &mem);
    }
    if (r == 0) {
        *step = "nvmlDeviceGetUUID";
        r = a->uuid(h, d->uuid, sizeof d->uuid);
    }
    if (r != 0) return r;
    d->free = mem.free;
    d->total = mem.total;
    d->util = a->utilization(h, &u) == 0 ? (int)u.gpu : -1;
    if (!a->name || a->name(h, d->name, sizeof d->name) != 0) d->name[0] = '\0';
    return 0;
}

/* Every device NVML can query into devs (n of them at most); the others are
 * listed in skipped. Returns how many. */
static unsigned query_all(const nvml_api *a, unsigned n, nvml_dev *devs, char *skipped,
                          size_t skipped_len)
{
    unsigned usable = 0;
    for (unsigned i = 0; i < n; i++) {
        const char *step;
        nvmlReturn_t r = query_device(a, i, &devs[usable], &step);
        if (r != 0) {
            size_t l = strlen(skipped);
            snprintf(skipped + l, skipped_len - l, "; GPU %u skipped: %s: %s", i, step,
                     nv_err(a, r));
            continue;
        }
        usable++;
    }
    return usable;
}

/* "picked GPU ... (why); other GPU ...; GPU k skipped: ..." */
static void explain(const nvml_dev *devs, unsigned usable, unsigned best, const char *skipped,
                    char *why, size_t whylen)
{
    if (!why || !whylen) return;
    char line[256];
    describe(&devs[best], line, sizeof line);
    say(why, whylen, "picked %s (most free memory, then least busy)", line);
    for (unsigned i = 0; i < usable; i++) {
        if (i == best) continue;
        describe(&devs[i], line, sizeof line);
        size_t l = strlen(why);
        snprintf(why + l, whylen - l, "; %s", line);
    }
    size_t l = strlen(why);
    snprintf(why + l, whylen - l, "%s", skipped);
}

/* Picks among the devices of a started NVML. */
static int pick_started(const nvml_api *a, char *uuid_out, size_t len, int *index_out, char *why,
                        size_t whylen)
{
    unsigned n = 0;
    nvmlReturn_t r = a->count(&n);
    if (r != 0 || n == 0) {
        if (r != 0)
            say(why, whylen, "NVML: nvmlDeviceGetCount_v2: %s; no GPU picked", nv_err(a, r));
        else
            say(why, whylen, "NVML sees no GPU; no GPU picked");
        return VRAM_ENODEV;
    }
    if (n > NVML_MAX_DEVICES) n = NVML_MAX_DEVICES;
    nvml_dev *devs = calloc(n, sizeof *devs);
    if (!devs) {
        say(why, whylen, "out of host memory");
        return VRAM_EHOSTMEM;
    }
    char skipped[512] = "";
    unsigned usable = query_all(a, n, devs, skipped, sizeof skipped);
    int rc = 0;
    unsigned best = 0;
    for (unsigned i = 1; i < usable; i++)
        if (better(&devs[i], &devs[best])) best = i;
    if (usable == 0) {
        say(why, whylen, "NVML could not query any GPU%s; no GPU picked", skipped);
        rc = VRAM_ENODEV;
    } else if (strlen(devs[best].uuid) + 1 > len) {
        say(why, whylen, "UUID buffer too small");
        rc = VRAM_EINVAL;
    } else {
        memcpy(uuid_out, devs[best].uuid, strlen(devs[best].uuid) + 1);
        if (index_out) *index_out = (int)devs[best].index;
        explain(devs, usable, best, skipped, why, whylen);
    }
    free(devs);
    return rc;
}

int vram__nvml_pick(char *uuid_out, size_t len, int *index_out, char *why, size_t whylen)
{
    if (why && whylen) why[0] = '\0';
    if (!uuid_out || len == 0) return VRAM_EINVAL;
    uuid_out[0] = '\0';
    const char *path = getenv("VRAM_NVML_LIBRARY");
    if (!path || !*path) path = NVML_DEFAULT_LIBRARY;
    nvml_api a;
    int rc = api_load(&a, path, why, whylen);
    if (rc) return rc;
    nvmlReturn_t r = a.init();
    if (r != 0) {
        say(why, whylen, "NVML (%s) failed to start: nvmlInit_v2: %s (error %d); no GPU picked",
            path, nv_err(&a, r), r);
        api_free(&a);
        return VRAM_ENODEV;
    }
    rc = pick_started(&a, uuid_out, len, index_out, why, whylen);
    a.shutdown();
    api_free(&a);
    return rc;
}

/* See nvml.h: the environment changes only on success. */
int vram__nvml_pin_best(char *uuid_out, size_t len, char *why, size_t whylen)
{
    int rc = vram__nvml_pick(uuid_out, len, NULL, why, whylen);
    if (rc) return rc;
    if (setenv("CUDA_VISIBLE_DEVICES", uuid_out, 1) != 0) {
        say(why, whylen, "setenv(CUDA_VISIBLE_DEVICES) failed");
        return VRAM_EHOSTMEM;
    }
    return 0;
}
