/* registry.c - the manager's models: register, look up, unregister, and changes applied to all of them. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/core.h"

void vram__model_free(vram_model *model)
{
    vram__source_close(model->source);
    pthread_cond_destroy(&model->cond);
    free(model->allocs);
    free(model->name);
    free(model);
}

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
    if (n == 0 || n > VRAM_NAME_MAX || !vram__utf8_valid(name)) return 0;
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
        vram__model_free(model);
        return rc;
    }
    vram__log(VRAM_LOG_INFO, "register model=%s source=%s bytes=%llu device=%d", name,
              opts->source ? opts->source : "(load function)",
              (unsigned long long)(src ? src->bytes : 0), dev);
    if (out) *out = model;
    vram__node_notify(m);
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
        if (s == VRAM_STATE_UNLOADED && model->waiters == 0 && model->node_refs == 0) break;
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
            if (m->models[i] == model) { /* keep registration order */
                memmove(&m->models[i], &m->models[i + 1], (m->nmodels - i - 1) * sizeof *m->models);
                m->nmodels--;
                break;
            }
    }
    pthread_mutex_unlock(&m->lock);
    if (rc == 0) {
        vram__model_free(model);
        vram__node_notify(m);
    }
    return rc;
}

vram_model *vram__model_hold(vram_manager *m, const char *name)
{
    pthread_mutex_lock(&m->lock);
    vram_model *model = find_locked(m, name);
    if (model) model->node_refs++;
    pthread_mutex_unlock(&m->lock);
    return model;
}

void vram__model_unhold(vram_model *model)
{
    pthread_mutex_lock(&model->m->lock);
    model->node_refs--;
    pthread_mutex_unlock(&model->m->lock);
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
