/* libnvml_double.c - a test double of NVML with configurable free memory and utilization. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_double.h"

/*
 * Devices come from VRAM_NVML_DOUBLE_DEVICES ("FREE:UTIL[:TOTAL],...",
 * default "8G:0") or vram_nvml_double_set(); their UUIDs are those of the
 * CUDA driver double's devices of the same index, so that a UUID picked here
 * selects the same device there through CUDA_VISIBLE_DEVICES. A device whose
 * UTIL is "-" answers NVML_ERROR_NOT_SUPPORTED for utilization, as MIG
 * devices do. Every entry point but nvmlInit_v2 and nvmlErrorString answers
 * NVML_ERROR_UNINITIALIZED outside an nvmlInit_v2/nvmlShutdown pair.
 */

#define DBL_EXPORT __attribute__((visibility("default")))
#define MAXDEV 16

typedef int nvmlReturn_t;
typedef struct nvml_dev *nvmlDevice_t;
typedef struct {
    unsigned long long total, free, used;
} nvmlMemory_t;
typedef struct {
    unsigned int gpu, memory;
} nvmlUtilization_t;

enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_UNKNOWN = 999
};

struct nvml_dev {
    int index;
    unsigned long long free, total;
    int util; /* percent, or -1: not supported */
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static struct nvml_dev g_devs[MAXDEV];
static int g_ndev;
static int g_init_error;
static int g_inits;

/* "8G", "512M", "1.5G" or bytes; -1 when malformed. */
static int parse_size(const char *s, unsigned long long *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || v < 0) return -1;
    double mul = 1;
    switch (*end) {
    case 'K':
        mul = 1024.0;
        end++;
        break;
    case 'M':
        mul = 1024.0 * 1024;
        end++;
        break;
    case 'G':
        mul = 1024.0 * 1024 * 1024;
        end++;
        break;
    case 'T':
        mul = 1024.0 * 1024 * 1024 * 1024;
        end++;
        break;
    default: break;
    }
    if (*end) return -1;
    *out = (unsigned long long)(v * mul);
    return 0;
}

/* Parses a device list into g_devs (g_lock held); -1 leaves them as they were. */
static int set_devices_locked(const char *spec)
{
    struct nvml_dev d[MAXDEV];
    int n = 0;
    char *dup = strdup(spec), *save = NULL;
    if (!dup) return -1;
    for (char *it = strtok_r(dup, ",", &save); it; it = strtok_r(NULL, ",", &save)) {
        char *f[3] = {it, NULL, NULL};
        for (int k = 1; k < 3; k++) {
            char *c = f[k - 1] ? strchr(f[k - 1], ':') : NULL;
            if (c) {
                *c = '\0';
                f[k] = c + 1;
            }
        }
        if (n == MAXDEV || !f[1] || parse_size(f[0], &d[n].free)) goto bad;
        if (strcmp(f[1], "-") == 0) {
            d[n].util = -1;
        } else {
            char *end;
            long u = strtol(f[1], &end, 10);
            if (*end || u < 0 || u > 100) goto bad;
            d[n].util = (int)u;
        }
        d[n].total = d[n].free;
        if (f[2] && parse_size(f[2], &d[n].total)) goto bad;
        if (d[n].total < d[n].free) d[n].total = d[n].free;
        d[n].index = n;
        n++;
    }
    free(dup);
    memcpy(g_devs, d, sizeof d[0] * (size_t)n);
    g_ndev = n;
    return 0;
bad:
    free(dup);
    return -1;
}

/* Reads the environment once, on first use. */
static void load_env(void)
{
    pthread_mutex_lock(&g_lock);
    const char *v = getenv("VRAM_NVML_DOUBLE_DEVICES");
    if (set_devices_locked(v && *v ? v : "8G:0")) {
        fprintf(stderr, "libnvml_double: bad VRAM_NVML_DOUBLE_DEVICES '%s'\n", v);
        set_devices_locked("8G:0");
    }
    v = getenv("VRAM_NVML_DOUBLE_INIT");
    g_init_error = v && *v ? atoi(v) : 0;
    pthread_mutex_unlock(&g_lock);
}

/* Whether an nvmlInit_v2 is in force (the NVML entry points need one). */
static int inited(void)
{
    pthread_once(&g_once, load_env);
    pthread_mutex_lock(&g_lock);
    int ok = g_inits > 0;
    pthread_mutex_unlock(&g_lock);
    return ok;
}

/* The NVML entry points below behave as NVML's functions of the same names. */

DBL_EXPORT const char *nvmlErrorString(nvmlReturn_t r)
{
    switch (r) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    default: return "Unknown Error";
    }
}

DBL_EXPORT nvmlReturn_t nvmlInit_v2(void)
{
    pthread_once(&g_once, load_env);
    pthread_mutex_lock(&g_lock);
    nvmlReturn_t r = g_init_error;
    if (r == NVML_SUCCESS) g_inits++;
    pthread_mutex_unlock(&g_lock);
    return r;
}

DBL_EXPORT nvmlReturn_t nvmlShutdown(void)
{
    pthread_mutex_lock(&g_lock);
    nvmlReturn_t r = g_inits > 0 ? NVML_SUCCESS : NVML_ERROR_UNINITIALIZED;
    if (g_inits > 0) g_inits--;
    pthread_mutex_unlock(&g_lock);
    return r;
}

DBL_EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count)
{
    if (!inited()) return NVML_ERROR_UNINITIALIZED;
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    pthread_mutex_lock(&g_lock);
    *count = (unsigned)g_ndev;
    pthread_mutex_unlock(&g_lock);
    return NVML_SUCCESS;
}

DBL_EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *dev)
{
    if (!inited()) return NVML_ERROR_UNINITIALIZED;
    if (!dev) return NVML_ERROR_INVALID_ARGUMENT;
    pthread_mutex_lock(&g_lock);
    nvmlReturn_t r = index < (unsigned)g_ndev ? NVML_SUCCESS : NVML_ERROR_INVALID_ARGUMENT;
    if (r == NVML_SUCCESS) *dev = &g_devs[index];
    pthread_mutex_unlock(&g_lock);
    return r;
}

/* d is a handle this double gave out. */
static int dev_ok(nvmlDevice_t d)
{
    return d >= g_devs && d < g_devs + MAXDEV;
}

DBL_EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *mem)
{
    if (!inited()) return NVML_ERROR_UNINITIALIZED;
    if (!dev_ok(d) || !mem) return NVML_ERROR_INVALID_ARGUMENT;
    pthread_mutex_lock(&g_lock);
    mem->total = d->total;
    mem->free = d->free;
    mem->used = d->total - d->free;
    pthread_mutex_unlock(&g_lock);
    return NVML_SUCCESS;
}

DBL_EXPORT nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t *u)
{
    if (!inited()) return NVML_ERROR_UNINITIALIZED;
    if (!dev_ok(d) || !u) return NVML_ERROR_INVALID_ARGUMENT;
    pthread_mutex_lock(&g_lock);
    int util = d->util;
    pthread_mutex_unlock(&g_lock);
    if (util < 0) return NVML_ERROR_NOT_SUPPORTED;
    u->gpu = (unsigned)util;
    u->memory = (unsigned)util / 2;
    return NVML_SUCCESS;
}

DBL_EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *uuid, unsigned int len)
{
    if (!inited()) return NVML_ERROR_UNINITIALIZED;
    if (!dev_ok(d) || !uuid) return NVML_ERROR_INVALID_ARGUMENT;
    char u[64];
    snprintf(u, sizeof u, "GPU-d0b1e000-0000-4000-8000-%012x", (unsigned)d->index);
    if (strlen(u) + 1 > len) return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(uuid, u, strlen(u) + 1);
    return NVML_SUCCESS;
}

DBL_EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t d, char *name, unsigned int len)
{
    if (!inited()) return NVML_ERROR_UNINITIALIZED;
    if (!dev_ok(d) || !name || len == 0) return NVML_ERROR_INVALID_ARGUMENT;
    snprintf(name, len, "vram NVML double #%d", d->index);
    return NVML_SUCCESS;
}

/* Control API: see cuda_double.h. */
DBL_EXPORT int vram_nvml_double_set(const char *devices, int init_error)
{
    pthread_once(&g_once, load_env);
    pthread_mutex_lock(&g_lock);
    int rc = devices ? set_devices_locked(devices) : 0;
    if (rc == 0) g_init_error = init_error;
    pthread_mutex_unlock(&g_lock);
    return rc;
}

DBL_EXPORT int vram_nvml_double_inits(void)
{
    pthread_mutex_lock(&g_lock);
    int n = g_inits;
    pthread_mutex_unlock(&g_lock);
    return n;
}
