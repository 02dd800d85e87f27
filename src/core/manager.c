/* manager.c - the manager: create (backend, devices, budgets, monitor), destroy, and the process-wide global manager. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/core.h"

double vram__clock(vram_manager *m)
{
    return m->cfg.clock ? m->cfg.clock(m->cfg.clock_user) : vram__now();
}

const char *vram_manager_backend(const vram_manager *m)
{
    return m ? m->backend->name : NULL;
}

/* ---- create / destroy ---- */

static uint64_t resolve_budget(vram_size_spec s, uint64_t capacity)
{
    if (s.percent > 0) return (uint64_t)((double)capacity * s.percent / 100.0);
    return s.bytes;
}

/* What the backend reads of cfg, copied into out; returns out. */
static const vram_backend_config *backend_config(const vram_config *cfg, vram_backend_config *out)
{
    memset(out, 0, sizeof *out);
    out->kind = cfg->backend;
    out->host_memory = cfg->host_memory;
    out->host_devices = cfg->host_devices;
    out->chunk_bytes = cfg->chunk_bytes;
    snprintf(out->visible_devices, sizeof out->visible_devices, "%s", cfg->visible_devices);
    snprintf(out->cuda_library, sizeof out->cuda_library, "%s", cfg->cuda_library);
    out->fault_injection = cfg->fault_injection;
    snprintf(out->host_shared, sizeof out->host_shared, "%s", cfg->host_shared);
    return out;
}

/* Reads the devices' figures and sets their budgets. */
static int init_devices(vram_manager *m)
{
    int n = vram__backend_device_count(m->backend);
    if (n <= 0)
        return vram__errorf(VRAM_ENODEV, "backend '%s' has no devices%s", m->backend->name,
                            m->cfg.visible_devices[0] ? " (check CUDA_VISIBLE_DEVICES)" : "");
    m->devs = calloc((size_t)n, sizeof *m->devs);
    if (!m->devs) return vram__errorf(VRAM_EHOSTMEM, "out of host memory");
    m->ndev = n;
    for (int i = 0; i < n; i++) {
        int rc = vram__backend_device_info(m->backend, i, &m->devs[i].info);
        if (rc < 0) return rc;
        m->devs[i].budget = resolve_budget(m->cfg.gpu_budget, m->devs[i].info.total);
        if (m->devs[i].budget == 0 || m->devs[i].budget > m->devs[i].info.total)
            m->devs[i].budget = m->devs[i].info.total;
    }
    return 0;
}

static void init_sync(vram_manager *m)
{
    pthread_mutex_init(&m->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->mem_cond, &ca);
    pthread_cond_init(&m->monitor_cond, &ca);
    pthread_condattr_destroy(&ca);
}

static void start_monitor(vram_manager *m)
{
    if (m->cfg.no_monitor_thread) return;
    m->monitor_running = 1;
    if (pthread_create(&m->monitor, NULL, vram__monitor_main, m) != 0) {
        m->monitor_running = 0;
        vram__log(VRAM_LOG_ERROR, "cannot start the idle monitor thread: %s", strerror(errno));
    } else {
        m->monitor_started = 1;
    }
}

int vram_manager_create(const vram_config *cfg, vram_manager **out)
{
    if (!out) return vram__errorf(VRAM_EINVAL, "out is required");
    *out = NULL;
    vram_manager *m = calloc(1, sizeof *m);
    if (!m) return vram__errorf(VRAM_EHOSTMEM, "out of host memory");
    int rc = 0;
    if (cfg) {
        m->cfg = *cfg;
    } else {
        char err[256];
        vram_config_init(&m->cfg);
        if (vram_config_load(&m->cfg, NULL, err, sizeof err) < 0) {
            rc = vram__errorf(VRAM_ECONFIG, "%s", err);
            goto fail;
        }
    }
    vram_set_log_level(m->cfg.log_level);
    if (m->cfg.evict_wait < 0) m->cfg.evict_wait = 0;

    vram_backend_config bcfg;
    rc = vram__backend_open(backend_config(&m->cfg, &bcfg), &m->backend);
    if (rc < 0) goto fail;
    rc = init_devices(m);
    if (rc < 0) goto fail;
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    uint64_t ram = pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz : 0;
    m->host_budget = resolve_budget(m->cfg.host_budget, ram);
    m->idle_timeout = m->cfg.idle_timeout;
    m->release_timeout = m->cfg.release_timeout;
    m->monitor_next = INFINITY;
    init_sync(m);
    start_monitor(m);
    vram__node_start(m);
    for (int i = 0; i < m->ndev; i++)
        vram__log(VRAM_LOG_INFO,
                  "device=%d name=\"%s\" total=%s budget=%s backend=%s idle_timeout=%g", i,
                  m->devs[i].info.name, vram__human(m->devs[i].info.total).s,
                  vram__human(m->devs[i].budget).s, m->backend->name, m->idle_timeout);
    *out = m;
    return 0;
fail:
    if (m->backend) vram__backend_destroy(m->backend);
    free(m->devs);
    free(m);
    return rc;
}


void vram_manager_destroy(vram_manager *m)
{
    if (!m) return;
    vram__node_stop(m); /* leave the node first: no order runs during the teardown */
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->nmodels; i++) {
        vram_model *model = m->models[i];
        for (;;) {
            vram_state s = model->state;
            if (s == VRAM_STATE_UNLOADED) break;
            if ((s == VRAM_STATE_GPU && model->leases == 0) ||
                (s == VRAM_STATE_CPU && model->readers == 0)) {
                vram__release_locked(model);
                break;
            }
            model->waiters++;
            pthread_cond_wait(&model->cond, &m->lock);
            model->waiters--;
        }
    }
    m->stopping = 1;
    pthread_cond_broadcast(&m->monitor_cond);
    pthread_cond_broadcast(&m->mem_cond);
    pthread_mutex_unlock(&m->lock);
    if (m->monitor_started) pthread_join(m->monitor, NULL);
    for (size_t i = 0; i < m->nmodels; i++) vram__model_free(m->models[i]);
    free(m->models);
    vram__backend_destroy(m->backend);
    vram__node_free(m);
    pthread_cond_destroy(&m->mem_cond);
    pthread_cond_destroy(&m->monitor_cond);
    pthread_mutex_destroy(&m->lock);
    free(m->devs);
    free(m);
}

/* ---- the global manager ---- */

static pthread_mutex_t g_global_lock = PTHREAD_MUTEX_INITIALIZER;
static vram_manager *g_global;

/* At exit: a full teardown, unless some thread still holds a lease or is
 * mid-transfer (exit() from another thread): then only the monitor stops
 * and the process's end frees the rest, rather than waiting forever. */
static void global_destroy(void)
{
    pthread_mutex_lock(&g_global_lock);
    vram_manager *m = g_global;
    g_global = NULL;
    pthread_mutex_unlock(&g_global_lock);
    if (!m) return;
    pthread_mutex_lock(&m->lock);
    int busy = 0;
    for (size_t i = 0; i < m->nmodels; i++) {
        vram_state s = m->models[i]->state;
        if (m->models[i]->leases > 0 || m->models[i]->readers > 0 ||
            (s != VRAM_STATE_GPU && s != VRAM_STATE_CPU && s != VRAM_STATE_UNLOADED))
            busy = 1;
    }
    if (busy) {
        m->stopping = 1;
        pthread_cond_broadcast(&m->monitor_cond);
        pthread_cond_broadcast(&m->mem_cond);
    }
    pthread_mutex_unlock(&m->lock);
    if (!busy) {
        vram_manager_destroy(m);
    } else {
        vram__node_stop(m);
        if (m->monitor_started) pthread_join(m->monitor, NULL);
    }
}

vram_manager *vram_global_manager(double idle_timeout)
{
    pthread_mutex_lock(&g_global_lock);
    if (!g_global) {
        vram_config cfg;
        char err[256];
        vram_config_init(&cfg);
        if (vram_config_load(&cfg, NULL, err, sizeof err) < 0) {
            vram__log(VRAM_LOG_ERROR, "global manager: %s", err);
        } else {
            if (idle_timeout >= 0 && vram__check_seconds(idle_timeout) == 0)
                cfg.idle_timeout = idle_timeout;
            vram_manager *m = NULL;
            if (vram_manager_create(&cfg, &m) < 0)
                vram__log(VRAM_LOG_ERROR, "global manager: %s", vram__last_error());
            else {
                g_global = m;
                atexit(global_destroy);
            }
        }
    }
    vram_manager *m = g_global;
    pthread_mutex_unlock(&g_global_lock);
    return m;
}

