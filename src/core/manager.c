/* manager.c - the manager: registry of models, device budgets, the idle monitor thread, the global manager. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/core.h"

int vram__check_seconds(double s);

double vram__clock(vram_manager *m)
{
    return m->cfg.clock ? m->cfg.clock(m->cfg.clock_user) : vram__now();
}

const char *vram_manager_backend(const vram_manager *m)
{
    return m ? m->backend->name : NULL;
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
    return out;
}

/* ---- idle monitor ---- */

/* Does every due offload and release; returns how many, and leaves the
 * next deadline in m->monitor_next. Lock held; dropped while working. */
static int tick_locked(vram_manager *m)
{
    int done = 0;
    for (;;) {
        double now = vram__clock(m);
        double next = INFINITY;
        vram_model *victim = NULL;
        int release = 0;
        for (size_t i = 0; i < m->nmodels && !victim; i++) {
            vram_model *c = m->models[i];
            if (c->state == VRAM_STATE_GPU && c->leases == 0) {
                if (c->pending) {
                    victim = c;
                    release = (c->pending & PENDING_RELEASE) != 0;
                    break;
                }
                double it = vram__idle_timeout(c);
                if (it > 0) {
                    double dl = c->last_used + it;
                    if (dl <= now)
                        victim = c;
                    else if (dl < next)
                        next = dl;
                }
            } else if (c->state == VRAM_STATE_CPU && c->readers == 0) {
                double rt = vram__release_timeout(c);
                if (c->pending & PENDING_RELEASE) {
                    victim = c;
                    release = 1;
                } else if (rt > 0) {
                    double dl = c->cpu_since + rt;
                    if (dl <= now) {
                        victim = c;
                        release = 1;
                    } else if (dl < next) {
                        next = dl;
                    }
                }
            }
        }
        if (!victim) {
            m->monitor_next = next;
            return done;
        }
        if (release) {
            vram__log(VRAM_LOG_INFO, "monitor: release model=%s idle on %s", victim->name,
                      vram_state_location(victim->state));
            vram__release_locked(victim);
        } else {
            vram__log(VRAM_LOG_INFO, "monitor: offload model=%s idle %.1f s (timeout %.1f s)",
                      victim->name, now - victim->last_used, vram__idle_timeout(victim));
            vram__offload_locked(victim, 0);
        }
        done++;
    }
}

static void *monitor_main(void *arg)
{
    vram_manager *m = arg;
    pthread_mutex_lock(&m->lock);
    while (!m->stopping) {
        tick_locked(m);
        if (m->stopping) break;
        double next = m->monitor_next;
        m->monitor_waiting = 1;
        if (isinf(next) && next > 0) {
            pthread_cond_wait(&m->monitor_cond, &m->lock);
        } else {
            double wait = next - vram__clock(m);
            if (wait > 0) {
                if (wait > 86400) wait = 86400;
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                ts.tv_sec += (time_t)wait;
                ts.tv_nsec += (long)((wait - (double)(time_t)wait) * 1e9) + 1000000L;
                while (ts.tv_nsec >= 1000000000L) {
                    ts.tv_sec++;
                    ts.tv_nsec -= 1000000000L;
                }
                pthread_cond_timedwait(&m->monitor_cond, &m->lock, &ts);
            }
        }
        m->monitor_waiting = 0;
    }
    m->monitor_running = 0;
    pthread_mutex_unlock(&m->lock);
    return NULL;
}

int vram_manager_tick(vram_manager *m)
{
    if (!m) return 0;
    pthread_mutex_lock(&m->lock);
    int n = tick_locked(m);
    pthread_mutex_unlock(&m->lock);
    return n;
}

void vram_manager_wake(vram_manager *m)
{
    if (!m) return;
    pthread_mutex_lock(&m->lock);
    m->monitor_next = -INFINITY;
    pthread_cond_signal(&m->monitor_cond);
    pthread_mutex_unlock(&m->lock);
}

int vram_manager_monitor_running(vram_manager *m)
{
    if (!m) return 0;
    pthread_mutex_lock(&m->lock);
    int r = m->monitor_running;
    pthread_mutex_unlock(&m->lock);
    return r;
}

/* ---- create / destroy ---- */

static uint64_t resolve_budget(vram_size_spec s, uint64_t capacity)
{
    if (s.percent > 0) return (uint64_t)((double)capacity * s.percent / 100.0);
    return s.bytes;
}

int vram_manager_create(const vram_config *cfg, vram_manager **out)
{
    if (!out) return vram__errorf(VRAM_EINVAL, "out is required");
    *out = NULL;
    vram_manager *m = calloc(1, sizeof *m);
    if (!m) return vram__errorf(VRAM_EHOSTMEM, "out of host memory");
    if (cfg) {
        m->cfg = *cfg;
    } else {
        char err[256];
        vram_config_init(&m->cfg);
        if (vram_config_load(&m->cfg, NULL, err, sizeof err) < 0) {
            free(m);
            return vram__errorf(VRAM_ECONFIG, "%s", err);
        }
    }
    vram_set_log_level(m->cfg.log_level);
    if (m->cfg.evict_wait < 0) m->cfg.evict_wait = 0;

    vram_backend_config bcfg;
    int rc = vram__backend_open(backend_config(&m->cfg, &bcfg), &m->backend);
    if (rc < 0) {
        free(m);
        return rc;
    }
    int n = vram__backend_device_count(m->backend);
    if (n <= 0) {
        vram__backend_destroy(m->backend);
        free(m);
        return vram__errorf(VRAM_ENODEV, "backend '%s' has no devices", m->backend ? "?" : "?");
    }
    m->devs = calloc((size_t)n, sizeof *m->devs);
    if (!m->devs) {
        vram__backend_destroy(m->backend);
        free(m);
        return vram__errorf(VRAM_EHOSTMEM, "out of host memory");
    }
    m->ndev = n;
    for (int i = 0; i < n; i++) {
        rc = vram__backend_device_info(m->backend, i, &m->devs[i].info);
        if (rc < 0) {
            vram__backend_destroy(m->backend);
            free(m->devs);
            free(m);
            return rc;
        }
        m->devs[i].budget = resolve_budget(m->cfg.gpu_budget, m->devs[i].info.total);
        if (m->devs[i].budget == 0 || m->devs[i].budget > m->devs[i].info.total)
            m->devs[i].budget = m->devs[i].info.total;
    }
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    uint64_t ram = pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz : 0;
    m->host_budget = resolve_budget(m->cfg.host_budget, ram);
    m->idle_timeout = m->cfg.idle_timeout;
    m->release_timeout = m->cfg.release_timeout;
    m->monitor_next = INFINITY;

    pthread_mutex_init(&m->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->mem_cond, &ca);
    pthread_cond_init(&m->monitor_cond, &ca);
    pthread_condattr_destroy(&ca);

    if (!m->cfg.no_monitor_thread) {
        m->monitor_running = 1;
        if (pthread_create(&m->monitor, NULL, monitor_main, m) != 0) {
            m->monitor_running = 0;
            vram__log(VRAM_LOG_ERROR, "cannot start the idle monitor thread: %s", strerror(errno));
        } else {
            m->monitor_started = 1;
        }
    }
    for (int i = 0; i < n; i++)
        vram__log(VRAM_LOG_INFO,
                  "device=%d name=\"%s\" total_gb=%.2f budget_gb=%.2f backend=%s idle_timeout=%g",
                  i, m->devs[i].info.name, (double)m->devs[i].info.total / 1e9,
                  (double)m->devs[i].budget / 1e9, m->backend->name, m->idle_timeout);
    *out = m;
    return 0;
}

static void model_free(vram_model *model)
{
    vram__source_close(model->source);
    pthread_cond_destroy(&model->cond);
    free(model->allocs);
    free(model->name);
    free(model);
}

void vram_manager_destroy(vram_manager *m)
{
    if (!m) return;
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
    for (size_t i = 0; i < m->nmodels; i++) model_free(m->models[i]);
    free(m->models);
    vram__backend_destroy(m->backend);
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
    } else if (m->monitor_started) {
        pthread_join(m->monitor, NULL);
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

/* ---- registry ---- */

void vram_model_opts_init(vram_model_opts *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->idle_timeout = -1;
    opts->release_timeout = -1;
    opts->device = -1;
}

static int valid_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 128 || !vram__utf8_valid(name)) return 0;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p < 0x20 || *p == 0x7f || *p == '/' || *p == '"' || *p == '\\') return 0;
    return 1;
}

static vram_model *find_locked(vram_manager *m, const char *name)
{
    for (size_t i = 0; i < m->nmodels; i++)
        if (strcmp(m->models[i]->name, name) == 0) return m->models[i];
    return NULL;
}

int vram_manager_register(vram_manager *m, const char *name, const vram_model_opts *opts,
                          vram_model **out)
{
    if (out) *out = NULL;
    if (!m || !name || !opts) return vram__errorf(VRAM_EINVAL, "manager, name and opts are required");
    if (!valid_name(name))
        return vram__errorf(VRAM_EINVAL, "model name must be 1-128 bytes of printable UTF-8 "
                                         "without '/', '\"' or '\\'");
    if (!opts->source && !opts->load)
        return vram__errorf(VRAM_EINVAL, "model '%s' needs a source or a load function", name);
    if ((opts->idle_timeout >= 0 && vram__check_seconds(opts->idle_timeout) < 0) ||
        (opts->release_timeout >= 0 && vram__check_seconds(opts->release_timeout) < 0) ||
        isnan(opts->idle_timeout) || isnan(opts->release_timeout))
        return vram__errorf(VRAM_EINVAL, "model '%s': timeouts must be finite seconds >= 0", name);
    int dev = opts->device < 0 ? 0 : opts->device;
    if (dev >= m->ndev)
        return vram__errorf(VRAM_ENODEV, "model '%s': device %d does not exist (%d device%s)", name,
                            dev, m->ndev, m->ndev == 1 ? "" : "s");

    vram_source *src = NULL;
    if (opts->source) {
        int rc = vram__source_open(opts->source, &src);
        if (rc < 0) return rc;
    }
    vram_model *model = calloc(1, sizeof *model);
    char *dup = strdup(name);
    if (!model || !dup) {
        free(model);
        free(dup);
        vram__source_close(src);
        return vram__errorf(VRAM_EHOSTMEM, "out of host memory");
    }
    model->m = m;
    model->name = dup;
    model->source = src;
    model->load = opts->load;
    model->load_user = opts->load_user;
    model->idle_timeout = opts->idle_timeout >= 0 ? opts->idle_timeout : -1;
    model->release_timeout = opts->release_timeout >= 0 ? opts->release_timeout : -1;
    model->immediate_offload = opts->immediate_offload ? 1 : 0;
    model->device = dev;
    model->state = VRAM_STATE_UNLOADED;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&model->cond, &ca);
    pthread_condattr_destroy(&ca);

    pthread_mutex_lock(&m->lock);
    int rc = 0;
    if (find_locked(m, name)) {
        rc = vram__errorf(VRAM_EEXIST, "model '%s' is already registered", name);
    } else if (m->nmodels == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 8;
        vram_model **nm = realloc(m->models, cap * sizeof *nm);
        if (!nm)
            rc = vram__errorf(VRAM_EHOSTMEM, "out of host memory");
        else {
            m->models = nm;
            m->cap = cap;
        }
    }
    if (rc == 0) {
        model->last_used = vram__clock(m);
        m->models[m->nmodels++] = model;
    }
    pthread_mutex_unlock(&m->lock);
    if (rc < 0) {
        model_free(model);
        return rc;
    }
    vram__log(VRAM_LOG_INFO, "register model=%s source=%s bytes=%llu device=%d", name,
              opts->source ? opts->source : "(load function)",
              (unsigned long long)(src ? src->bytes : 0), dev);
    if (out) *out = model;
    return 0;
}

vram_model *vram_manager_find(vram_manager *m, const char *name)
{
    if (!m || !name) return NULL;
    pthread_mutex_lock(&m->lock);
    vram_model *model = find_locked(m, name);
    pthread_mutex_unlock(&m->lock);
    return model;
}

int vram_manager_unregister(vram_manager *m, const char *name)
{
    if (!m || !name) return vram__errorf(VRAM_EINVAL, "manager and name are required");
    pthread_mutex_lock(&m->lock);
    vram_model *model = find_locked(m, name);
    int rc = 0;
    while (model && rc == 0) {
        vram_state s = model->state;
        if (s == VRAM_STATE_UNLOADED && model->waiters == 0) break;
        if (model->leases > 0 || s == VRAM_STATE_LOADING || s == VRAM_STATE_RESTORING) {
            rc = vram__errorf(VRAM_EBUSY, "model '%s' is in use", name);
        } else if ((s == VRAM_STATE_GPU) || (s == VRAM_STATE_CPU && model->readers == 0)) {
            vram__release_locked(model);
        } else {
            /* a transition in flight, or waiters yet to wake up and leave (the
             * last of them may not broadcast): look again every 20 ms */
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_nsec += 20 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&model->cond, &m->lock, &ts);
        }
    }
    if (!model) rc = vram__errorf(VRAM_ENOENT, "no model named '%s'", name);
    if (rc == 0) {
        for (size_t i = 0; i < m->nmodels; i++)
            if (m->models[i] == model) {
                m->models[i] = m->models[--m->nmodels];
                break;
            }
    }
    pthread_mutex_unlock(&m->lock);
    if (rc == 0) model_free(model);
    return rc;
}

/* ---- all models ---- */

int vram_manager_set_idle_timeout(vram_manager *m, double seconds)
{
    if (!m) return vram__errorf(VRAM_EINVAL, "manager is required");
    int rc = vram__check_seconds(seconds);
    if (rc < 0) return rc;
    pthread_mutex_lock(&m->lock);
    m->idle_timeout = seconds;
    for (size_t i = 0; i < m->nmodels; i++) m->models[i]->idle_timeout = -1;
    m->monitor_next = -INFINITY;
    pthread_cond_signal(&m->monitor_cond);
    pthread_mutex_unlock(&m->lock);
    vram__log(VRAM_LOG_INFO, "timeout idle_timeout=%g models=all", seconds);
    return 0;
}

int vram_manager_set_release_timeout(vram_manager *m, double seconds)
{
    if (!m) return vram__errorf(VRAM_EINVAL, "manager is required");
    int rc = vram__check_seconds(seconds);
    if (rc < 0) return rc;
    pthread_mutex_lock(&m->lock);
    m->release_timeout = seconds;
    for (size_t i = 0; i < m->nmodels; i++) m->models[i]->release_timeout = -1;
    m->monitor_next = -INFINITY;
    pthread_cond_signal(&m->monitor_cond);
    pthread_mutex_unlock(&m->lock);
    return 0;
}

/* Applies fn to every model; models are never freed while the manager
 * lives except by unregister, which callers must not race with this. */
static int for_all(vram_manager *m, int (*fn)(vram_model *, unsigned), unsigned flags)
{
    if (!m) return vram__errorf(VRAM_EINVAL, "manager is required");
    pthread_mutex_lock(&m->lock);
    size_t n = m->nmodels;
    vram_model **copy = n ? malloc(n * sizeof *copy) : NULL;
    if (n && !copy) {
        pthread_mutex_unlock(&m->lock);
        return vram__errorf(VRAM_EHOSTMEM, "out of host memory");
    }
    if (n) memcpy(copy, m->models, n * sizeof *copy);
    pthread_mutex_unlock(&m->lock);
    int first = 0;
    char msg[VRAM_ERRMSG_MAX] = "";
    for (size_t i = 0; i < n; i++) {
        int rc = fn(copy[i], flags);
        if (rc < 0 && first == 0) {
            first = rc;
            snprintf(msg, sizeof msg, "%s", vram__last_error());
        } else if (rc == VRAM_DEFERRED && first == 0) {
            first = VRAM_DEFERRED;
        }
    }
    free(copy);
    if (first < 0) vram__errorf(first, "%s", msg);
    return first;
}

int vram_manager_offload_all(vram_manager *m, unsigned flags)
{
    return for_all(m, vram_model_offload, flags);
}

int vram_manager_release_all(vram_manager *m, unsigned flags)
{
    return for_all(m, vram_model_release, flags);
}
