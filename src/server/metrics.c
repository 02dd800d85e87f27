/* metrics.c - Prometheus text for vramd: models, devices, the node's processes and per-endpoint request counters. */
#define _GNU_SOURCE
#include "server/metrics.h"
#include "server/node.h"
#include "server/status_json.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* No locks: the counters are 64-bit atomics updated with relaxed ordering;
 * a scrape may see one request counted and its duration not yet, which
 * Prometheus tolerates. Model and device figures come from the core's own
 * status structs (vram_manager_models, vram_manager_devices). */

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

static void head(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A numeric field of vram_model_info / vram_device_status, by offset. */
enum { F_U64, F_DBL, F_INT };
typedef struct field {
    const char *metric, *type, *help;
    size_t off;
    int kind;
} field;

static double value_at(const void *base, const field *fd)
{
    const char *p = (const char *)base + fd->off;
    switch (fd->kind) {
    case F_U64: return (double)*(const uint64_t *)(const void *)p;
    case F_INT: return (double)*(const int *)(const void *)p;
    default: return *(const double *)(const void *)p;
    }
}

#define MF(metric, type, help, member, kind) \
    {metric, type, help, offsetof(vram_model_info, member), kind}
static const field model_fields[] = {
    MF("vram_model_bytes", "gauge", "Size of the model in bytes.", bytes, F_U64),
    MF("vram_model_leases", "gauge", "Live leases of the model.", leases, F_INT),
    MF("vram_model_idle_seconds", "gauge", "Seconds since the model was last used.",
       idle_seconds, F_DBL),
    MF("vram_model_idle_timeout_seconds", "gauge",
       "Idle timeout after which the model is offloaded (0 = never).", idle_timeout, F_DBL),
    MF("vram_model_loads_total", "counter", "Loads from the source.", loads, F_U64),
    MF("vram_model_offloads_total", "counter", "Offloads to the CPU.", offloads, F_U64),
    MF("vram_model_restores_total", "counter", "Restores to the GPU.", restores, F_U64),
    MF("vram_model_releases_total", "counter", "Complete releases.", releases, F_U64),
    MF("vram_model_evictions_total", "counter", "Offloads forced by the device budget.",
       evictions, F_U64),
    MF("vram_model_failures_total", "counter", "Failed operations.", failures, F_U64),
    MF("vram_model_load_seconds_total", "counter", "Time spent loading.", load_seconds_total,
       F_DBL),
    MF("vram_model_offload_seconds_total", "counter", "Time spent offloading.",
       offload_seconds_total, F_DBL),
    MF("vram_model_restore_seconds_total", "counter", "Time spent restoring.",
       restore_seconds_total, F_DBL),
    MF("vram_model_last_load_seconds", "gauge", "Duration of the last load.", last_load_seconds,
       F_DBL),
    MF("vram_model_last_offload_seconds", "gauge", "Duration of the last offload.",
       last_offload_seconds, F_DBL),
    MF("vram_model_last_restore_seconds", "gauge", "Duration of the last restore.",
       last_restore_seconds, F_DBL),
    MF("vram_model_last_load_gbps", "gauge", "Rate of the last load in GB/s.", last_load_gbps,
       F_DBL),
    MF("vram_model_last_offload_gbps", "gauge", "Rate of the last offload in GB/s.",
       last_offload_gbps, F_DBL),
    MF("vram_model_last_restore_gbps", "gauge", "Rate of the last restore in GB/s.",
       last_restore_gbps, F_DBL),
};
#undef MF

#define DF(metric, help, member) \
    {metric, "gauge", help, offsetof(vram_device_status, member), F_U64}
static const field device_fields[] = {
    DF("vram_device_total_bytes", "Memory of the device.", total_bytes),
    DF("vram_device_free_bytes", "Free memory the device reports.", free_bytes),
    DF("vram_device_model_bytes", "Device memory mapped by models.", used_by_models_bytes),
    DF("vram_device_charged_bytes", "Device memory charged to models against the budget.",
       charged_bytes),
    DF("vram_device_budget_bytes", "The device's budget for models.", budget_bytes),
};
#undef DF

static void model_line(FILE *f, const char *metric, const char *name, double v)
{
    fprintf(f, "%s{model=\"", metric);
    label(f, name);
    fprintf(f, "\"} %.9g\n", v);
}

/* device bytes: mapped while on the GPU or moving; host bytes: the model's
 * bytes held in its host backup (on the CPU or moving) */
static int on_device(vram_state st)
{
    return st == VRAM_STATE_GPU || st == VRAM_STATE_OFFLOADING || st == VRAM_STATE_RESTORING ||
           st == VRAM_STATE_RELEASING;
}

static int on_host(vram_state st)
{
    return st == VRAM_STATE_CPU || st == VRAM_STATE_OFFLOADING || st == VRAM_STATE_RESTORING;
}

static void models_section(FILE *f, const vram__snapshot *s)
{
    head(f, "vram_model_state", "gauge",
         "1 for the state the model is in (lifecycle of DESIGN.md).");
    for (size_t i = 0; i < s->nmodels; i++)
        for (int st = VRAM_STATE_UNLOADED; st <= VRAM_STATE_RELEASING; st++) {
            fputs("vram_model_state{model=\"", f);
            label(f, s->models[i].name);
            fprintf(f, "\",state=\"%s\"} %d\n", vram_state_name((vram_state)st),
                    (int)s->models[i].state == st);
        }
    head(f, "vram_model_device_bytes", "gauge", "Bytes of the model in device memory.");
    for (size_t i = 0; i < s->nmodels; i++)
        model_line(f, "vram_model_device_bytes", s->models[i].name,
                   on_device(s->models[i].state) ? (double)s->models[i].bytes : 0.0);
    head(f, "vram_model_host_bytes", "gauge",
         "Bytes of the model held in its host (pinned) backup.");
    for (size_t i = 0; i < s->nmodels; i++)
        model_line(f, "vram_model_host_bytes", s->models[i].name,
                   on_host(s->models[i].state) ? (double)s->models[i].bytes : 0.0);
    for (size_t k = 0; k < sizeof model_fields / sizeof model_fields[0]; k++) {
        const field *fd = &model_fields[k];
        head(f, fd->metric, fd->type, fd->help);
        for (size_t i = 0; i < s->nmodels; i++)
            model_line(f, fd->metric, s->models[i].name, value_at(&s->models[i], fd));
    }
}

static void devices_section(FILE *f, const vram__snapshot *s)
{
    for (size_t k = 0; k < sizeof device_fields / sizeof device_fields[0]; k++) {
        const field *fd = &device_fields[k];
        head(f, fd->metric, fd->type, fd->help);
        for (size_t i = 0; i < s->ndevices; i++) {
            fprintf(f, "%s{device=\"%d\",name=\"", fd->metric, s->devices[i].index);
            label(f, s->devices[i].name);
            fprintf(f, "\"} %.0f\n", value_at(&s->devices[i], fd));
        }
    }
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

/* ---- the node: every joined process's models, labelled by process ---- */

static const char *jstr(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static double jnum(json_t *o, const char *key)
{
    return json_number_value(json_object_get(o, key));
}

/* process="NAME",pid="PID" of a member */
static void member_labels(FILE *f, json_t *mb)
{
    fputs("process=\"", f);
    label(f, jstr(mb, "name"));
    fprintf(f, "\",pid=\"%lld\"", (long long)json_integer_value(json_object_get(mb, "pid")));
}

static const struct {
    const char *metric, *help, *key;
} node_model_fields[] = {
    {"vram_node_model_bytes", "Size of a joined process's model in bytes.", "bytes"},
    {"vram_node_model_leases", "Live leases of a joined process's model.", "leases"},
    {"vram_node_model_idle_seconds", "Seconds since a joined process's model was last used.",
     "idle_seconds"},
};

static void node_models(FILE *f, json_t *members)
{
    for (size_t k = 0; k < sizeof node_model_fields / sizeof node_model_fields[0]; k++) {
        head(f, node_model_fields[k].metric, "gauge", node_model_fields[k].help);
        size_t i, j;
        json_t *mb, *md;
        json_array_foreach(members, i, mb) {
            json_array_foreach(json_object_get(mb, "models"), j, md) {
                fprintf(f, "%s{", node_model_fields[k].metric);
                member_labels(f, mb);
                fputs(",model=\"", f);
                label(f, jstr(md, "name"));
                fputs("\",id=\"", f);
                label(f, jstr(md, "id"));
                fputs("\",state=\"", f);
                label(f, jstr(md, "state"));
                fputs("\",device_uuid=\"", f);
                label(f, jstr(md, "device_uuid"));
                fprintf(f, "\"} %.9g\n", jnum(md, node_model_fields[k].key));
            }
        }
    }
}

static const struct {
    const char *metric, *help, *key;
} node_member_fields[] = {
    {"vram_node_evictions_given_total",
     "Models a joined process offloaded for another's need (node eviction).", "evictions_given"},
    {"vram_node_bytes_given_total", "Bytes a joined process freed for another's need.",
     "bytes_given"},
};

static void node_section(FILE *f, vram_node *n)
{
    json_t *v = vram__node_view(n);
    if (!v) return;
    json_t *members = json_object_get(v, "members");
    head(f, "vram_node_members", "gauge", "Processes joined to the node socket (vramd included).");
    fprintf(f, "vram_node_members %zu\n", json_array_size(members));
    node_models(f, members);
    for (size_t k = 0; k < sizeof node_member_fields / sizeof node_member_fields[0]; k++) {
        head(f, node_member_fields[k].metric, "counter", node_member_fields[k].help);
        size_t i;
        json_t *mb;
        json_array_foreach(members, i, mb) {
            fprintf(f, "%s{", node_member_fields[k].metric);
            member_labels(f, mb);
            fprintf(f, "} %.0f\n", jnum(mb, node_member_fields[k].key));
        }
    }
    json_decref(v);
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
    vram__snapshot snap;
    if (vram__snapshot_take(m, 1, &snap) == 0) {
        models_section(f, &snap);
        devices_section(f, &snap);
        vram__snapshot_free(&snap);
    }
    vram_node *node = vram__node_current();
    if (node) node_section(f, node);
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
