/* metrics.c - Prometheus text for vramd: models, devices and per-endpoint request counters. */
#define _GNU_SOURCE
#include "server/metrics.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* No locks: the counters are 64-bit atomics updated with relaxed ordering;
 * a scrape may see one request counted and its duration not yet, which
 * Prometheus tolerates. Model and device figures come from the core's own
 * snapshots (vram_manager_status_json / vram_manager_devices_json). */

/* The status codes counted one by one; anything else counts as "other". */
static const unsigned codes[] = {200, 202, 204, 400, 401, 403, 404, 405,
                                 406, 409, 413, 415, 500, 503, 0};
#define NCODES (sizeof codes / sizeof codes[0])

struct vram__metrics {
    const char *const *names;
    size_t n;
    uint64_t *count; /* [n][NCODES] */
    uint64_t *nanos; /* [n] sum of durations */
};

vram__metrics *vram__metrics_create(const char *const *names, size_t n)
{
    vram__metrics *mx = calloc(1, sizeof *mx);
    if (!mx) return NULL;
    mx->names = names;
    mx->n = n;
    mx->count = calloc(n * NCODES, sizeof *mx->count);
    mx->nanos = calloc(n, sizeof *mx->nanos);
    if (!mx->count || !mx->nanos) {
        vram__metrics_destroy(mx);
        return NULL;
    }
    return mx;
}

void vram__metrics_destroy(vram__metrics *mx)
{
    if (!mx) return;
    free(mx->count);
    free(mx->nanos);
    free(mx);
}

void vram__metrics_count(vram__metrics *mx, size_t endpoint, unsigned status, double seconds)
{
    if (!mx || endpoint >= mx->n) return;
    size_t c = NCODES - 1;
    for (size_t i = 0; i + 1 < NCODES; i++)
        if (codes[i] == status) c = i;
    __atomic_add_fetch(&mx->count[endpoint * NCODES + c], 1, __ATOMIC_RELAXED);
    if (seconds > 0)
        __atomic_add_fetch(&mx->nanos[endpoint], (uint64_t)(seconds * 1e9), __ATOMIC_RELAXED);
}

/* A label value with \, " and newline escaped. */
static void label(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        if (*s == '\\')
            fputs("\\\\", f);
        else if (*s == '"')
            fputs("\\\"", f);
        else if (*s == '\n')
            fputs("\\n", f);
        else
            fputc(*s, f);
    }
}

static double num(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : 0.0;
}

static void head(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One metric line per model from a numeric status field. */
static void per_model(FILE *f, json_t *all, const char *metric, const char *type, const char *help,
                      const char *field)
{
    head(f, metric, type, help);
    const char *name;
    json_t *st;
    json_object_foreach(all, name, st)
    {
        fprintf(f, "%s{model=\"", metric);
        label(f, name);
        fprintf(f, "\"} %.9g\n", num(st, field));
    }
}

static const char *const states[] = {"unloaded", "loading",   "gpu",      "offloading",
                                     "cpu",      "restoring", "releasing"};

static void models_section(FILE *f, vram_manager *m)
{
    char *text = vram_manager_status_json(m);
    json_t *all = text ? json_loads(text, 0, NULL) : NULL;
    free(text);
    if (!json_is_object(all)) {
        json_decref(all);
        return;
    }
    const char *name;
    json_t *st;
    head(f, "vram_model_state", "gauge",
         "1 for the state the model is in (lifecycle of DESIGN.md).");
    json_object_foreach(all, name, st)
    {
        const char *cur = json_string_value(json_object_get(st, "state"));
        for (size_t i = 0; i < sizeof states / sizeof states[0]; i++) {
            fputs("vram_model_state{model=\"", f);
            label(f, name);
            fprintf(f, "\",state=\"%s\"} %d\n", states[i], cur && strcmp(cur, states[i]) == 0);
        }
    }
    /* device bytes: mapped while on the GPU or moving; host bytes: the
     * model's bytes held in its host backup (on the CPU or moving) */
    head(f, "vram_model_device_bytes", "gauge", "Bytes of the model in device memory.");
    json_object_foreach(all, name, st)
    {
        const char *s = json_string_value(json_object_get(st, "state"));
        int on = s && (!strcmp(s, "gpu") || !strcmp(s, "offloading") || !strcmp(s, "restoring") ||
                       !strcmp(s, "releasing"));
        fputs("vram_model_device_bytes{model=\"", f);
        label(f, name);
        fprintf(f, "\"} %.0f\n", on ? num(st, "bytes") : 0.0);
    }
    head(f, "vram_model_host_bytes", "gauge",
         "Bytes of the model held in its host (pinned) backup.");
    json_object_foreach(all, name, st)
    {
        const char *s = json_string_value(json_object_get(st, "state"));
        int on = s && (!strcmp(s, "cpu") || !strcmp(s, "offloading") || !strcmp(s, "restoring"));
        fputs("vram_model_host_bytes{model=\"", f);
        label(f, name);
        fprintf(f, "\"} %.0f\n", on ? num(st, "bytes") : 0.0);
    }
    per_model(f, all, "vram_model_bytes", "gauge", "Size of the model in bytes.", "bytes");
    per_model(f, all, "vram_model_leases", "gauge", "Live leases of the model.", "leases");
    per_model(f, all, "vram_model_idle_seconds", "gauge", "Seconds since the model was last used.",
              "idle_time_seconds");
    per_model(f, all, "vram_model_idle_timeout_seconds", "gauge",
              "Idle timeout after which the model is offloaded (0 = never).",
              "idle_timeout_seconds");
    per_model(f, all, "vram_model_loads_total", "counter", "Loads from the source.", "loads");
    per_model(f, all, "vram_model_offloads_total", "counter", "Offloads to the CPU.", "offloads");
    per_model(f, all, "vram_model_restores_total", "counter", "Restores to the GPU.", "restores");
    per_model(f, all, "vram_model_releases_total", "counter", "Complete releases.", "releases");
    per_model(f, all, "vram_model_evictions_total", "counter",
              "Offloads forced by the device budget.", "evictions");
    per_model(f, all, "vram_model_failures_total", "counter", "Failed operations.", "failures");
    per_model(f, all, "vram_model_load_seconds_total", "counter", "Time spent loading.",
              "load_seconds_total");
    per_model(f, all, "vram_model_offload_seconds_total", "counter", "Time spent offloading.",
              "offload_seconds_total");
    per_model(f, all, "vram_model_restore_seconds_total", "counter", "Time spent restoring.",
              "restore_seconds_total");
    per_model(f, all, "vram_model_last_load_seconds", "gauge", "Duration of the last load.",
              "last_load_seconds");
    per_model(f, all, "vram_model_last_offload_seconds", "gauge", "Duration of the last offload.",
              "last_offload_seconds");
    per_model(f, all, "vram_model_last_restore_seconds", "gauge", "Duration of the last restore.",
              "last_restore_seconds");
    per_model(f, all, "vram_model_last_load_gbps", "gauge", "Rate of the last load in GB/s.",
              "last_load_gbps");
    per_model(f, all, "vram_model_last_offload_gbps", "gauge", "Rate of the last offload in GB/s.",
              "last_offload_gbps");
    per_model(f, all, "vram_model_last_restore_gbps", "gauge", "Rate of the last restore in GB/s.",
              "last_restore_gbps");
    json_decref(all);
}

static void device_metric(FILE *f, json_t *devs, const char *metric, const char *help,
                          const char *field)
{
    head(f, metric, "gauge", help);
    size_t i;
    json_t *d;
    json_array_foreach(devs, i, d)
    {
        fprintf(f, "%s{device=\"%lld\",name=\"", metric,
                (long long)json_integer_value(json_object_get(d, "index")));
        label(f, json_string_value(json_object_get(d, "name")));
        fprintf(f, "\"} %.0f\n", num(d, field));
    }
}

static void devices_section(FILE *f, vram_manager *m)
{
    char *text = vram_manager_devices_json(m);
    json_t *devs = text ? json_loads(text, 0, NULL) : NULL;
    free(text);
    if (json_is_array(devs)) {
        device_metric(f, devs, "vram_device_total_bytes", "Memory of the device.", "total_bytes");
        device_metric(f, devs, "vram_device_free_bytes", "Free memory the device reports.",
                      "free_bytes");
        device_metric(f, devs, "vram_device_model_bytes", "Device memory mapped by models.",
                      "used_by_models_bytes");
        device_metric(f, devs, "vram_device_charged_bytes",
                      "Device memory charged to models against the budget.", "charged_bytes");
        device_metric(f, devs, "vram_device_budget_bytes", "The device's budget for models.",
                      "budget_bytes");
    }
    json_decref(devs);
}

static void http_section(FILE *f, vram__metrics *mx)
{
    head(f, "vram_http_requests_total", "counter", "HTTP requests by endpoint and status.");
    for (size_t e = 0; e < mx->n; e++)
        for (size_t c = 0; c < NCODES; c++) {
            uint64_t v = __atomic_load_n(&mx->count[e * NCODES + c], __ATOMIC_RELAXED);
            if (!v) continue;
            fputs("vram_http_requests_total{endpoint=\"", f);
            label(f, mx->names[e]);
            if (codes[c])
                fprintf(f, "\",code=\"%u\"} %llu\n", codes[c], (unsigned long long)v);
            else
                fprintf(f, "\",code=\"other\"} %llu\n", (unsigned long long)v);
        }
    head(f, "vram_http_request_seconds_total", "counter",
         "Time spent answering requests, by endpoint.");
    for (size_t e = 0; e < mx->n; e++) {
        uint64_t ns = __atomic_load_n(&mx->nanos[e], __ATOMIC_RELAXED);
        uint64_t total = 0;
        for (size_t c = 0; c < NCODES; c++)
            total += __atomic_load_n(&mx->count[e * NCODES + c], __ATOMIC_RELAXED);
        if (!total) continue;
        fputs("vram_http_request_seconds_total{endpoint=\"", f);
        label(f, mx->names[e]);
        fprintf(f, "\"} %.9f\n", (double)ns * 1e-9);
    }
}

char *vram__metrics_render(vram__metrics *mx, vram_manager *m, size_t sessions, size_t *len)
{
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    if (!f) return NULL;
    head(f, "vram_build_info", "gauge", "Version and backend of vramd.");
    fprintf(f, "vram_build_info{version=\"%s\",backend=\"", VRAM_VERSION);
    label(f, vram_manager_backend(m));
    fputs("\"} 1\n", f);
    head(f, "vram_monitor_running", "gauge", "1 while the idle monitor thread runs.");
    fprintf(f, "vram_monitor_running %d\n", vram_manager_monitor_running(m) ? 1 : 0);
    models_section(f, m);
    devices_section(f, m);
    if (mx) http_section(f, mx);
    head(f, "vram_mcp_sessions", "gauge", "Live MCP Streamable HTTP sessions.");
    fprintf(f, "vram_mcp_sessions %zu\n", sessions);
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    if (len) *len = size;
    return buf;
}
