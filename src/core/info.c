/* info.c - status as data: snapshots of models, devices and the manager as the public structs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"

/* Fills s from model c. Lock held. */
static void snap_model(vram_model *c, double now, vram_model_info *s)
{
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", c->name);
    s->state = c->state;
    int idle = (c->state == VRAM_STATE_GPU && c->leases == 0) || c->state == VRAM_STATE_CPU;
    s->idle_seconds = idle && now > c->last_used ? now - c->last_used : 0;
    s->idle_timeout = vram__idle_timeout(c);
    s->release_timeout = vram__release_timeout(c);
    s->immediate_offload = c->immediate_offload;
    s->device = c->device;
    s->leases = c->leases;
    s->bytes = c->bytes ? c->bytes : (c->source ? c->source->bytes : 0);
    s->tensors = c->source ? c->source->ntensors : 0;
    if (c->state == VRAM_STATE_LOADING) {
        s->progress_done = __atomic_load_n(&c->progress_done, __ATOMIC_RELAXED);
        s->progress_total = __atomic_load_n(&c->progress_total, __ATOMIC_RELAXED);
    }
    s->loads = c->loads;
    s->offloads = c->offloads;
    s->restores = c->restores;
    s->releases = c->releases;
    s->evictions = c->evictions;
    s->failures = c->failures;
    s->last_load_seconds = c->last_load_s;
    s->last_offload_seconds = c->last_offload_s;
    s->last_restore_seconds = c->last_restore_s;
    s->last_load_gbps = c->last_load_gbps;
    s->last_offload_gbps = c->last_offload_gbps;
    s->last_restore_gbps = c->last_restore_gbps;
    s->load_seconds_total = c->total_load_s;
    s->offload_seconds_total = c->total_offload_s;
    s->restore_seconds_total = c->total_restore_s;
    snprintf(s->source, sizeof s->source, "%s", c->source ? c->source->spec : "");
    snprintf(s->last_error, sizeof s->last_error, "%s", c->last_error);
    /* paths and driver messages may hold any bytes (or be cut mid-character) */
    vram__utf8_clean(s->source);
    vram__utf8_clean(s->last_error);
}

/* Copies the first size bytes of a full struct into the caller's. */
static void give(void *out, const void *full, size_t full_size, size_t size)
{
    memcpy(out, full, size < full_size ? size : full_size);
    if (size > full_size) memset((char *)out + full_size, 0, size - full_size);
}

int vram_model_get_info(vram_model *model, vram_model_info *out, size_t size)
{
    if (!model || !out || size == 0)
        return vram__errorf(VRAM_EINVAL, "vram_model_get_info: model, out and size are required");
    vram_model_info s;
    vram_manager *m = model->m;
    pthread_mutex_lock(&m->lock);
    snap_model(model, vram__clock(m), &s);
    pthread_mutex_unlock(&m->lock);
    give(out, &s, sizeof s, size);
    return 0;
}

int vram_manager_models(vram_manager *m, vram_model_info *out, size_t cap, size_t size)
{
    if (!m || (cap && (!out || size == 0)))
        return vram__errorf(VRAM_EINVAL, "vram_manager_models: manager required, and out and "
                                         "size when cap > 0");
    vram_model_info *tmp = NULL;
    if (cap && size < sizeof *tmp) {
        /* an older, smaller struct: snapshot into full ones, then cut */
        tmp = malloc(cap * sizeof *tmp);
        if (!tmp) return vram__errorf(VRAM_EHOSTMEM, "vram_manager_models: out of host memory");
    }
    pthread_mutex_lock(&m->lock);
    double now = vram__clock(m);
    size_t n = m->nmodels;
    for (size_t i = 0; i < n && i < cap; i++) {
        vram_model_info *dst = tmp ? &tmp[i] : (vram_model_info *)((char *)out + i * size);
        snap_model(m->models[i], now, dst);
    }
    pthread_mutex_unlock(&m->lock);
    for (size_t i = 0; i < cap && i < n; i++) {
        char *dst = (char *)out + i * size;
        if (tmp)
            give(dst, &tmp[i], sizeof *tmp, size);
        else if (size > sizeof *tmp)
            memset(dst + sizeof *tmp, 0, size - sizeof *tmp);
    }
    free(tmp);
    return n > (size_t)0x7fffffff ? 0x7fffffff : (int)n;
}

int vram_manager_devices(vram_manager *m, vram_device_status *out, size_t cap, size_t size)
{
    if (!m || (cap && (!out || size == 0)))
        return vram__errorf(VRAM_EINVAL, "vram_manager_devices: manager required, and out and "
                                         "size when cap > 0");
    int ndev = m->ndev;
    size_t n = cap < (size_t)ndev ? cap : (size_t)ndev;
    for (size_t i = 0; i < n; i++) {
        vram_device_status d;
        memset(&d, 0, sizeof d);
        vram_dev_info info;
        /* the backend's live figures, asked without the manager lock */
        if (vram__backend_device_info(m->backend, (int)i, &info) < 0) info = m->devs[i].info;
        d.index = (int)i;
        snprintf(d.name, sizeof d.name, "%s", info.name);
        snprintf(d.uuid, sizeof d.uuid, "%s", info.uuid);
        vram__utf8_clean(d.name);
        vram__utf8_clean(d.uuid);
        d.total_bytes = info.total;
        d.free_bytes = info.free;
        pthread_mutex_lock(&m->lock);
        d.used_by_models_bytes = m->devs[i].mapped;
        d.charged_bytes = m->devs[i].used;
        d.budget_bytes = m->devs[i].budget;
        pthread_mutex_unlock(&m->lock);
        give((char *)out + i * size, &d, sizeof d, size);
    }
    return ndev;
}

int vram_manager_get_info(vram_manager *m, vram_manager_info *out, size_t size)
{
    if (!m || !out || size == 0)
        return vram__errorf(VRAM_EINVAL, "vram_manager_get_info: manager, out and size are required");
    vram_manager_info s;
    memset(&s, 0, sizeof s);
    snprintf(s.backend, sizeof s.backend, "%s", m->backend->name);
    vram__backend_health(m->backend, s.backend_error, sizeof s.backend_error);
    pthread_mutex_lock(&m->lock);
    s.devices = m->ndev;
    s.models = (int)m->nmodels;
    s.monitor_running = m->monitor_running;
    s.idle_timeout = m->idle_timeout;
    s.release_timeout = m->release_timeout;
    s.host_budget_bytes = m->host_budget;
    s.host_used_bytes = m->host_used;
    pthread_mutex_unlock(&m->lock);
    give(out, &s, sizeof s, size);
    return 0;
}

size_t vram_struct_size(const char *name)
{
    static const struct {
        const char *name;
        size_t size;
    } sizes[] = {
        {"vram_model_info", sizeof(vram_model_info)},
        {"vram_device_status", sizeof(vram_device_status)},
        {"vram_manager_info", sizeof(vram_manager_info)},
        {"vram_model_opts", sizeof(vram_model_opts)},
        {"vram_tensor_info", sizeof(vram_tensor_info)},
        {"vram_config", sizeof(vram_config)},
    };
    for (size_t i = 0; name && i < sizeof sizes / sizeof sizes[0]; i++)
        if (strcmp(name, sizes[i].name) == 0) return sizes[i].size;
    return 0;
}
