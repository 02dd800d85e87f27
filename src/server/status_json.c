/* status_json.c - the status structs as JSON for HTTP, MCP and the CLI (the seed's fields plus state, counters, timings). */
#include <stdlib.h>
#include <string.h>

#include "server/status_json.h"

double vram__round(double v, double scale)
{
    return (double)(long long)(v * scale + (v >= 0 ? 0.5 : -0.5)) / scale;
}

json_t *vram__json_gb(uint64_t bytes)
{
    return json_real(vram__round((double)bytes / (1024.0 * 1024.0 * 1024.0), 1e3));
}

char *vram__json_text(json_t *o)
{
    if (!o) return NULL;
    char *text = json_dumps(o, JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10) | JSON_ENCODE_ANY);
    json_decref(o);
    return text;
}

int vram__snapshot_take(vram_manager *m, int with_devices, vram__snapshot *out)
{
    memset(out, 0, sizeof *out);
    if (!m) return vram_set_error(VRAM_EINVAL, "no manager");
    int rc = vram_manager_get_info(m, &out->info, sizeof out->info);
    if (rc < 0) return rc;
    /* models may be registered between the count and the copy: grow and retry */
    size_t cap = (size_t)out->info.models + 4;
    for (;;) {
        vram_model_info *mi = realloc(out->models, cap * sizeof *mi);
        if (!mi) goto oom;
        out->models = mi;
        int n = vram_manager_models(m, mi, cap, sizeof *mi);
        if (n < 0) {
            vram__snapshot_free(out);
            return n;
        }
        if ((size_t)n <= cap) {
            out->nmodels = (size_t)n;
            break;
        }
        cap = (size_t)n + 4;
    }
    if (with_devices && out->info.devices > 0) {
        out->devices = calloc((size_t)out->info.devices, sizeof *out->devices);
        if (!out->devices) goto oom;
        int n = vram_manager_devices(m, out->devices, (size_t)out->info.devices,
                                     sizeof *out->devices);
        out->ndevices = n < 0 ? 0 : (size_t)n < (size_t)out->info.devices ? (size_t)n
                                                                           : (size_t)out->info.devices;
    }
    return 0;
oom:
    vram__snapshot_free(out);
    return vram_set_error(VRAM_EHOSTMEM, "status snapshot: out of host memory");
}

void vram__snapshot_free(vram__snapshot *s)
{
    if (!s) return;
    free(s->models);
    free(s->devices);
    memset(s, 0, sizeof *s);
}

const vram_model_info *vram__snapshot_find(const vram__snapshot *s, const char *name)
{
    for (size_t i = 0; name && i < s->nmodels; i++)
        if (strcmp(s->models[i].name, name) == 0) return &s->models[i];
    return NULL;
}

/* The seed's gpu_memory: {"GPU_0": {allocated_gb, reserved_gb, total_gb}} per device. */
static json_t *gpu_memory_json(const vram__snapshot *s)
{
    json_t *o = json_object();
    for (size_t i = 0; i < s->ndevices; i++) {
        const vram_device_status *d = &s->devices[i];
        char key[32];
        snprintf(key, sizeof key, "GPU_%d", d->index);
        json_t *g = json_object();
        json_object_set_new(g, "allocated_gb", vram__json_gb(d->used_by_models_bytes));
        json_object_set_new(g, "reserved_gb", vram__json_gb(d->charged_bytes));
        json_object_set_new(g, "total_gb", vram__json_gb(d->total_bytes));
        json_object_set_new(g, "budget_gb", vram__json_gb(d->budget_bytes));
        json_object_set_new(o, key, g);
    }
    return o;
}

static json_t *str_or_null(const char *s)
{
    return s[0] ? json_string(s) : json_null();
}

json_t *vram__model_json(const vram__snapshot *s, const vram_model_info *mi)
{
#define R3(v) json_real(vram__round((v), 1e3))
#define R6(v) json_real(vram__round((v), 1e6))
#define INT(v) json_integer((json_int_t)(v))
    json_t *o = json_object();
    json_object_set_new(o, "model_name", json_string(mi->name));
    json_object_set_new(o, "location", json_string(vram_state_location(mi->state)));
    json_object_set_new(o, "idle_time_seconds", R3(mi->idle_seconds));
    json_object_set_new(o, "idle_timeout_seconds", json_real(mi->idle_timeout));
    json_object_set_new(o, "monitor_running", json_boolean(s->info.monitor_running));
    json_object_set_new(o, "gpu_memory", gpu_memory_json(s));
    json_object_set_new(o, "state", json_string(vram_state_name(mi->state)));
    json_object_set_new(o, "release_timeout_seconds", json_real(mi->release_timeout));
    json_object_set_new(o, "immediate_offload", json_boolean(mi->immediate_offload));
    json_object_set_new(o, "device", json_integer(mi->device));
    json_object_set_new(o, "backend", json_string(s->info.backend));
    if (s->info.backend_error[0]) /* latched unusable: every call fails */
        json_object_set_new(o, "backend_error", json_string(s->info.backend_error));
    json_object_set_new(o, "source", str_or_null(mi->source));
    json_object_set_new(o, "bytes", INT(mi->bytes));
    json_object_set_new(o, "tensors", INT(mi->tensors));
    json_object_set_new(o, "leases", json_integer(mi->leases));
    json_object_set_new(o, "loads", INT(mi->loads));
    json_object_set_new(o, "offloads", INT(mi->offloads));
    json_object_set_new(o, "restores", INT(mi->restores));
    json_object_set_new(o, "releases", INT(mi->releases));
    json_object_set_new(o, "evictions", INT(mi->evictions));
    json_object_set_new(o, "failures", INT(mi->failures));
    json_object_set_new(o, "last_load_seconds", R6(mi->last_load_seconds));
    json_object_set_new(o, "last_load_gbps", R3(mi->last_load_gbps));
    json_object_set_new(o, "last_offload_seconds", R6(mi->last_offload_seconds));
    json_object_set_new(o, "last_offload_gbps", R3(mi->last_offload_gbps));
    json_object_set_new(o, "last_restore_seconds", R6(mi->last_restore_seconds));
    json_object_set_new(o, "last_restore_gbps", R3(mi->last_restore_gbps));
    json_object_set_new(o, "load_seconds_total", R6(mi->load_seconds_total));
    json_object_set_new(o, "offload_seconds_total", R6(mi->offload_seconds_total));
    json_object_set_new(o, "restore_seconds_total", R6(mi->restore_seconds_total));
    if (mi->state == VRAM_STATE_LOADING && mi->progress_total) {
        json_t *p = json_object();
        json_object_set_new(p, "done_bytes", INT(mi->progress_done));
        json_object_set_new(p, "total_bytes", INT(mi->progress_total));
        json_object_set_new(p, "fraction",
                            R3((double)mi->progress_done / (double)mi->progress_total));
        json_object_set_new(o, "load_progress", p);
    } else {
        json_object_set_new(o, "load_progress", json_null());
    }
    json_object_set_new(o, "last_error", str_or_null(mi->last_error));
    return o;
}

json_t *vram__status_json(const vram__snapshot *s)
{
    json_t *root = json_object();
    for (size_t i = 0; i < s->nmodels; i++)
        json_object_set_new(root, s->models[i].name, vram__model_json(s, &s->models[i]));
    return root;
}

json_t *vram__devices_json(const vram__snapshot *s)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < s->ndevices; i++) {
        const vram_device_status *d = &s->devices[i];
        json_t *o = json_object();
        json_object_set_new(o, "index", json_integer(d->index));
        json_object_set_new(o, "name", json_string(d->name));
        json_object_set_new(o, "uuid", json_string(d->uuid));
        json_object_set_new(o, "backend", json_string(s->info.backend));
        if (s->info.backend_error[0])
            json_object_set_new(o, "backend_error", json_string(s->info.backend_error));
        json_object_set_new(o, "total_bytes", INT(d->total_bytes));
        json_object_set_new(o, "free_bytes", INT(d->free_bytes));
        json_object_set_new(o, "used_by_models_bytes", INT(d->used_by_models_bytes));
        json_object_set_new(o, "charged_bytes", INT(d->charged_bytes));
        json_object_set_new(o, "budget_bytes", INT(d->budget_bytes));
        json_object_set_new(o, "total_gb", vram__json_gb(d->total_bytes));
        json_object_set_new(o, "free_gb", vram__json_gb(d->free_bytes));
        json_object_set_new(o, "allocated_gb", vram__json_gb(d->used_by_models_bytes));
        json_array_append_new(arr, o);
    }
    return arr;
#undef R3
#undef R6
#undef INT
}

char *vram_manager_status_json(vram_manager *m)
{
    vram__snapshot s;
    if (vram__snapshot_take(m, 1, &s) < 0) return NULL;
    char *text = vram__json_text(vram__status_json(&s));
    vram__snapshot_free(&s);
    return text;
}

char *vram_model_status_json(vram_manager *m, const char *name)
{
    vram__snapshot s;
    if (!name || vram__snapshot_take(m, 1, &s) < 0) return NULL;
    const vram_model_info *mi = vram__snapshot_find(&s, name);
    char *text = mi ? vram__json_text(vram__model_json(&s, mi)) : NULL;
    vram__snapshot_free(&s);
    return text;
}

char *vram_manager_devices_json(vram_manager *m)
{
    vram__snapshot s;
    if (vram__snapshot_take(m, 1, &s) < 0) return NULL;
    char *text = vram__json_text(vram__devices_json(&s));
    vram__snapshot_free(&s);
    return text;
}
