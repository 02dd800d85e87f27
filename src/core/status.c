/* status.c - the status JSON (the seed's get_all_status fields plus state, bytes, counters and timings). */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"

typedef struct model_snap {
    char name[130];
    vram_state state;
    double idle, idle_timeout, release_timeout;
    int immediate, device, leases;
    uint64_t bytes, tensors, pdone, ptotal;
    uint64_t loads, offloads, restores, releases, evictions, failures;
    double load_s, offload_s, restore_s, load_g, offload_g, restore_g;
    double load_t, offload_t, restore_t;
    char source[VRAM_STR_MAX];
    char last_error[VRAM_ERRMSG_MAX];
} model_snap;

typedef struct dev_snap {
    uint64_t total, mapped, used, budget;
} dev_snap;

static double round_to(double v, double scale)
{
    return (double)(long long)(v * scale + (v >= 0 ? 0.5 : -0.5)) / scale;
}
#define round3(v) round_to((v), 1e3)
#define round6(v) round_to((v), 1e6)

static json_t *gb(uint64_t bytes)
{
    return json_real(round3((double)bytes / (1024.0 * 1024.0 * 1024.0)));
}

static json_t *gpu_memory_json(const dev_snap *d, int ndev)
{
    json_t *o = json_object();
    for (int i = 0; i < ndev; i++) {
        char key[32];
        snprintf(key, sizeof key, "GPU_%d", i);
        json_t *g = json_object();
        json_object_set_new(g, "allocated_gb", gb(d[i].mapped));
        json_object_set_new(g, "reserved_gb", gb(d[i].used));
        json_object_set_new(g, "total_gb", gb(d[i].total));
        json_object_set_new(g, "budget_gb", gb(d[i].budget));
        json_object_set_new(o, key, g);
    }
    return o;
}

static json_t *model_json(const model_snap *s, int monitor, const dev_snap *d, int ndev,
                          const char *backend)
{
    json_t *o = json_object();
    json_object_set_new(o, "model_name", json_string(s->name));
    json_object_set_new(o, "location", json_string(vram_state_location(s->state)));
    json_object_set_new(o, "idle_time_seconds", json_real(round3(s->idle)));
    json_object_set_new(o, "idle_timeout_seconds", json_real(s->idle_timeout));
    json_object_set_new(o, "monitor_running", json_boolean(monitor));
    json_object_set_new(o, "gpu_memory", gpu_memory_json(d, ndev));
    json_object_set_new(o, "state", json_string(vram_state_name(s->state)));
    json_object_set_new(o, "release_timeout_seconds", json_real(s->release_timeout));
    json_object_set_new(o, "immediate_offload", json_boolean(s->immediate));
    json_object_set_new(o, "device", json_integer(s->device));
    json_object_set_new(o, "backend", json_string(backend));
    json_object_set_new(o, "source", s->source[0] ? json_string(s->source) : json_null());
    json_object_set_new(o, "bytes", json_integer((json_int_t)s->bytes));
    json_object_set_new(o, "tensors", json_integer((json_int_t)s->tensors));
    json_object_set_new(o, "leases", json_integer(s->leases));
    json_object_set_new(o, "loads", json_integer((json_int_t)s->loads));
    json_object_set_new(o, "offloads", json_integer((json_int_t)s->offloads));
    json_object_set_new(o, "restores", json_integer((json_int_t)s->restores));
    json_object_set_new(o, "releases", json_integer((json_int_t)s->releases));
    json_object_set_new(o, "evictions", json_integer((json_int_t)s->evictions));
    json_object_set_new(o, "failures", json_integer((json_int_t)s->failures));
    json_object_set_new(o, "last_load_seconds", json_real(round6(s->load_s)));
    json_object_set_new(o, "last_load_gbps", json_real(round3(s->load_g)));
    json_object_set_new(o, "last_offload_seconds", json_real(round6(s->offload_s)));
    json_object_set_new(o, "last_offload_gbps", json_real(round3(s->offload_g)));
    json_object_set_new(o, "last_restore_seconds", json_real(round6(s->restore_s)));
    json_object_set_new(o, "last_restore_gbps", json_real(round3(s->restore_g)));
    json_object_set_new(o, "load_seconds_total", json_real(round6(s->load_t)));
    json_object_set_new(o, "offload_seconds_total", json_real(round6(s->offload_t)));
    json_object_set_new(o, "restore_seconds_total", json_real(round6(s->restore_t)));
    if (s->state == VRAM_STATE_LOADING && s->ptotal) {
        json_t *p = json_object();
        json_object_set_new(p, "done_bytes", json_integer((json_int_t)s->pdone));
        json_object_set_new(p, "total_bytes", json_integer((json_int_t)s->ptotal));
        json_object_set_new(p, "fraction",
                            json_real(round3((double)s->pdone / (double)s->ptotal)));
        json_object_set_new(o, "load_progress", p);
    } else {
        json_object_set_new(o, "load_progress", json_null());
    }
    json_object_set_new(o, "last_error", s->last_error[0] ? json_string(s->last_error) : json_null());
    return o;
}

static void snap_model(vram_manager *m, vram_model *c, double now, model_snap *s)
{
    snprintf(s->name, sizeof s->name, "%s", c->name);
    s->state = c->state;
    s->idle = (c->state == VRAM_STATE_GPU && c->leases == 0) || c->state == VRAM_STATE_CPU
                  ? now - c->last_used
                  : 0;
    if (s->idle < 0) s->idle = 0;
    s->idle_timeout = vram__idle_timeout(c);
    s->release_timeout = vram__release_timeout(c);
    s->immediate = c->immediate_offload;
    s->device = c->device;
    s->leases = c->leases;
    s->bytes = c->bytes ? c->bytes : (c->source ? c->source->bytes : 0);
    s->tensors = c->source ? c->source->ntensors : 0;
    s->pdone = __atomic_load_n(&c->progress_done, __ATOMIC_RELAXED);
    s->ptotal = __atomic_load_n(&c->progress_total, __ATOMIC_RELAXED);
    s->loads = c->loads;
    s->offloads = c->offloads;
    s->restores = c->restores;
    s->releases = c->releases;
    s->evictions = c->evictions;
    s->failures = c->failures;
    s->load_s = c->last_load_s;
    s->offload_s = c->last_offload_s;
    s->restore_s = c->last_restore_s;
    s->load_g = c->last_load_gbps;
    s->offload_g = c->last_offload_gbps;
    s->restore_g = c->last_restore_gbps;
    s->load_t = c->total_load_s;
    s->offload_t = c->total_offload_s;
    s->restore_t = c->total_restore_s;
    snprintf(s->source, sizeof s->source, "%s", c->source ? c->source->spec : "");
    snprintf(s->last_error, sizeof s->last_error, "%s", c->last_error);
    /* paths and driver messages may hold any bytes (or be cut mid-character) */
    vram__utf8_clean(s->source);
    vram__utf8_clean(s->last_error);
}

char *vram__status_json(vram_manager *m, const char *only)
{
    if (!m) return NULL;
    model_snap *snaps = NULL;
    dev_snap *devs = calloc((size_t)m->ndev, sizeof *devs);
    if (!devs) return NULL;
    size_t n = 0;
    int monitor;
    pthread_mutex_lock(&m->lock);
    double now = vram__clock(m);
    monitor = m->monitor_running;
    for (int i = 0; i < m->ndev; i++) {
        devs[i].total = m->devs[i].info.total;
        devs[i].mapped = m->devs[i].mapped;
        devs[i].used = m->devs[i].used;
        devs[i].budget = m->devs[i].budget;
    }
    snaps = calloc(m->nmodels ? m->nmodels : 1, sizeof *snaps);
    if (snaps) {
        for (size_t i = 0; i < m->nmodels; i++) {
            vram_model *c = m->models[i];
            if (only && strcmp(c->name, only) != 0) continue;
            snap_model(m, c, now, &snaps[n++]);
        }
    }
    pthread_mutex_unlock(&m->lock);
    if (!snaps || (only && n == 0)) {
        free(snaps);
        free(devs);
        return NULL;
    }
    json_t *root;
    if (only) {
        root = model_json(&snaps[0], monitor, devs, m->ndev, m->backend->name);
    } else {
        root = json_object();
        for (size_t i = 0; i < n; i++)
            json_object_set_new(root, snaps[i].name,
                                model_json(&snaps[i], monitor, devs, m->ndev, m->backend->name));
    }
    char *text = json_dumps(root, JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    json_decref(root);
    free(snaps);
    free(devs);
    return text;
}

char *vram_manager_status_json(vram_manager *m)
{
    return vram__status_json(m, NULL);
}

char *vram_model_status_json(vram_manager *m, const char *name)
{
    if (!name) return NULL;
    return vram__status_json(m, name);
}

char *vram_manager_devices_json(vram_manager *m)
{
    if (!m) return NULL;
    int ndev = m->ndev;
    vram_dev_info *info = calloc((size_t)ndev, sizeof *info);
    dev_snap *d = calloc((size_t)ndev, sizeof *d);
    if (!info || !d) {
        free(info);
        free(d);
        return NULL;
    }
    /* the backend's live figures, asked without the manager lock */
    for (int i = 0; i < ndev; i++)
        if (m->backend->device_info(m->backend, i, &info[i]) < 0) info[i] = m->devs[i].info;
    pthread_mutex_lock(&m->lock);
    for (int i = 0; i < ndev; i++) {
        d[i].mapped = m->devs[i].mapped;
        d[i].used = m->devs[i].used;
        d[i].budget = m->devs[i].budget;
    }
    pthread_mutex_unlock(&m->lock);
    json_t *arr = json_array();
    for (int i = 0; i < ndev; i++) {
        json_t *o = json_object();
        json_object_set_new(o, "index", json_integer(i));
        json_object_set_new(o, "name", json_string(info[i].name));
        json_object_set_new(o, "uuid", json_string(info[i].uuid));
        json_object_set_new(o, "backend", json_string(m->backend->name));
        json_object_set_new(o, "total_bytes", json_integer((json_int_t)info[i].total));
        json_object_set_new(o, "free_bytes", json_integer((json_int_t)info[i].free));
        json_object_set_new(o, "used_by_models_bytes", json_integer((json_int_t)d[i].mapped));
        json_object_set_new(o, "charged_bytes", json_integer((json_int_t)d[i].used));
        json_object_set_new(o, "budget_bytes", json_integer((json_int_t)d[i].budget));
        json_object_set_new(o, "total_gb", gb(info[i].total));
        json_object_set_new(o, "free_gb", gb(info[i].free));
        json_object_set_new(o, "allocated_gb", gb(d[i].mapped));
        json_array_append_new(arr, o);
    }
    char *text = json_dumps(arr, JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    json_decref(arr);
    free(info);
    free(d);
    return text;
}
