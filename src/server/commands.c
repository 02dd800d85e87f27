/* commands.c - vramd's one command table (status, load, run, offload, release, timeouts). */
#define _GNU_SOURCE
#include "server/commands.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/base.h"
#include "server/models.h"
#include "server/status_json.h"
#include "vram_server.h"

/*
 * LOCK DISCIPLINE: commands work through libvram's thread-safe API and keep
 * their state on their own stack. The one shared thing is the status cache
 * below: g_status.lock guards its fields and is held only to copy or swap
 * the cached text, never while the core builds a new one.
 *
 * The status cache: building the status JSON of a few models costs the core
 * a few hundred microseconds, which would cap GET /api/gpu/status at a few
 * thousand requests per second. The text is therefore reused for at most
 * STATUS_TTL seconds, and never across a state-changing command: every such
 * command bumps g_gen when it finishes, and a text built at an older
 * generation is not served. Transitions made by the core on its own (the
 * idle monitor) show up within STATUS_TTL.
 */

#define STATUS_TTL 0.010 /* seconds */

static struct {
    pthread_mutex_t lock;
    const vram_manager *m; /* whose status text is cached */
    char *text;
    size_t len;
    double built; /* vram__now() when built */
    uint64_t gen; /* g_gen when built */
} g_status = {PTHREAD_MUTEX_INITIALIZER, NULL, NULL, 0, 0, 0};

static uint64_t g_gen; /* bumped after every state-changing command */

/* The status JSON of every model (malloc'd), from the cache when fresh. */
static char *status_text(vram_manager *m)
{
    uint64_t gen = __atomic_load_n(&g_gen, __ATOMIC_ACQUIRE);
    double now = vram__now();
    char *out = NULL;
    pthread_mutex_lock(&g_status.lock);
    if (g_status.text && g_status.m == m && g_status.gen == gen &&
        now - g_status.built < STATUS_TTL) {
        out = malloc(g_status.len + 1);
        if (out) memcpy(out, g_status.text, g_status.len + 1);
    }
    pthread_mutex_unlock(&g_status.lock);
    if (out) return out;
    out = vram_manager_status_json(m);
    if (!out) return NULL;
    char *copy = strdup(out);
    if (!copy) return out;
    pthread_mutex_lock(&g_status.lock);
    if (gen >= g_status.gen || g_status.m != m) {
        free(g_status.text);
        g_status.text = copy;
        g_status.len = strlen(copy);
        g_status.m = m;
        g_status.built = now;
        g_status.gen = gen;
        copy = NULL;
    }
    pthread_mutex_unlock(&g_status.lock);
    free(copy);
    return out;
}

/* ---- results ---- */

void vram__cmd_result_clear(vram__cmd_result *res)
{
    json_decref(res->json);
    free(res->raw);
    res->json = NULL;
    res->raw = NULL;
    res->code = 0;
    res->message[0] = '\0';
}

int vram__cmd_fail(vram__cmd_result *res, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->message, sizeof res->message, fmt, ap);
    va_end(ap);
    json_decref(res->json);
    free(res->raw);
    res->json = NULL;
    res->raw = NULL;
    res->code = code;
    return code;
}

json_t *vram__cmd_result_object(const vram__cmd_result *res)
{
    if (res->code < 0) return NULL;
    if (res->json) return json_incref(res->json);
    if (res->raw) return json_loads(res->raw, 0, NULL);
    return NULL;
}

unsigned vram__cmd_http_status(int code)
{
    if (code == VRAM_DEFERRED) return 202;
    if (code >= 0) return 200;
    switch (code) {
    case VRAM_EINVAL:
    case VRAM_ECONFIG:
    case VRAM_EFORMAT:
    case VRAM_ENODEV: return 400; /* a model placed on a device that does not exist */
    case VRAM_ENOENT: return 404;
    case VRAM_EBUSY:
    case VRAM_ESTATE:
    case VRAM_EEXIST: return 409;
    case VRAM_ENOMEM:
    case VRAM_EHOSTMEM:
    case VRAM_ETIMEDOUT:
    case VRAM_EBACKEND: return 503; /* a latched device: unusable until the process restarts */
    default: return 500;
    }
}

/* Fails res with the library's code and the most precise reason it gave. */
static int fail_core(vram__cmd_result *res, int rc, const char *what, const char *model)
{
    const char *detail = vram_last_error();
    if (detail && *detail) return vram__cmd_fail(res, rc, "%s '%s': %s", what, model, detail);
    return vram__cmd_fail(res, rc, "%s '%s': %s", what, model, vram_strerror(rc));
}

static int out_of_memory(vram__cmd_result *res)
{
    return vram__cmd_fail(res, VRAM_EHOSTMEM, "out of host memory");
}

/* ---- argument checks ---- */

/* args must be an object (or NULL) whose keys are all in allowed (NULL-terminated). */
static int check_fields(json_t *args, const char *const *allowed, vram__cmd_result *res)
{
    if (!args) return 0;
    if (!json_is_object(args))
        return vram__cmd_fail(res, VRAM_EINVAL, "arguments must be a JSON object");
    const char *key;
    json_t *v;
    json_object_foreach(args, key, v)
    {
        int ok = 0;
        for (const char *const *a = allowed; *a; a++)
            if (strcmp(*a, key) == 0) ok = 1;
        if (!ok) {
            char list[256] = "";
            size_t n = 0;
            for (const char *const *a = allowed; *a && n < sizeof list; a++)
                n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", n ? ", " : "", *a);
            if (!allowed[0]) snprintf(list, sizeof list, "none");
            return vram__cmd_fail(res, VRAM_EINVAL, "unknown field '%.64s' (accepted: %s)", key,
                                  list);
        }
    }
    return 0;
}

/* A number of seconds: finite, >= 0, at most VRAM_SECONDS_MAX. */
int vram__cmd_get_seconds(json_t *v, const char *field, double *out, vram__cmd_result *res)
{
    if (!json_is_number(v))
        return vram__cmd_fail(res, VRAM_EINVAL, "'%s' must be a number of seconds, not %s", field,
                              json_is_string(v)    ? "a string"
                              : json_is_boolean(v) ? "a boolean"
                              : json_is_null(v)    ? "null"
                                                   : "an object or array");
    double s = json_number_value(v);
    const char *why = vram__seconds_problem(s);
    if (why)
        return vram__cmd_fail(res, VRAM_EINVAL, "'%s' of %s %s", field, vram__seconds_text(s).s,
                              why);
    *out = s;
    return 0;
}

/* The names of every model, in registration order (a new array). */
static json_t *model_names(vram_manager *m)
{
    json_t *names = json_array();
    vram__snapshot snap;
    if (names && vram__snapshot_take(m, 0, &snap) == 0) {
        for (size_t i = 0; i < snap.nmodels; i++)
            json_array_append_new(names, json_string(snap.models[i].name));
        vram__snapshot_free(&snap);
    }
    return names;
}

static int unknown_model(vram_manager *m, const char *name, vram__cmd_result *res)
{
    vram__snapshot snap;
    char list[384] = "";
    size_t n = 0;
    if (vram__snapshot_take(m, 0, &snap) == 0) {
        for (size_t i = 0; i < snap.nmodels && n < sizeof list - 1; i++)
            n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", n ? ", " : "",
                                  snap.models[i].name);
        vram__snapshot_free(&snap);
    }
    return vram__cmd_fail(res, VRAM_ENOENT, "no model named '%.128s' (models: %s)", name,
                          n ? list : "none");
}

/* The model named by args.model. With required 0 a missing field gives *out NULL. */
static int get_model(vram_manager *m, json_t *args, int required, vram_model **out,
                     vram__cmd_result *res)
{
    *out = NULL;
    json_t *v = args ? json_object_get(args, "model") : NULL;
    if (!v || (!required && json_is_null(v))) {
        if (!required) return 0;
        return vram__cmd_fail(res, VRAM_EINVAL, "'model' is required (a model name)");
    }
    if (!json_is_string(v))
        return vram__cmd_fail(res, VRAM_EINVAL, "'model' must be a string (a model name)");
    const char *name = json_string_value(v);
    size_t len = json_string_length(v);
    if (len == 0 || len > VRAM_NAME_MAX || strlen(name) != len)
        return vram__cmd_fail(res, VRAM_EINVAL, "'model' must be 1-%d characters", VRAM_NAME_MAX);
    vram_model *model = vram_manager_find(m, name);
    const char *at = strrchr(name, '@');
    if (!model && at && at > name) { /* this process's own node-wide id, "NAME@PID" */
        char own[VRAM_NAME_MAX + 8], pid[24];
        snprintf(pid, sizeof pid, "@%ld", (long)getpid());
        if (strcmp(at, pid) == 0 && (size_t)(at - name) < sizeof own) {
            memcpy(own, name, (size_t)(at - name));
            own[at - name] = '\0';
            model = vram_manager_find(m, own);
        }
    }
    if (!model) return unknown_model(m, name, res);
    *out = model;
    return 0;
}

/* One model's status as an object (new reference) or NULL. */
static json_t *model_status(vram_manager *m, const char *name)
{
    vram__snapshot snap;
    if (vram__snapshot_take(m, 1, &snap) < 0) return NULL;
    const vram_model_info *mi = vram__snapshot_find(&snap, name);
    json_t *o = mi ? vram__model_json(&snap, mi) : NULL;
    vram__snapshot_free(&snap);
    return o;
}

static double gbps(uint64_t bytes, double seconds)
{
    return seconds > 0 ? (double)bytes / seconds / 1e9 : 0.0;
}

static double rounded(double v, double scale)
{
    return floor(v * scale + 0.5) / scale;
}

/* seconds to the microsecond, GB/s to the MB/s */
static json_t *timing(double seconds, uint64_t bytes)
{
    return json_pack("{s:f, s:I, s:f}", "seconds", rounded(seconds, 1e6), "bytes",
                     (json_int_t)bytes, "gbps", rounded(gbps(bytes, seconds), 1e3));
}

static int set_json(vram__cmd_result *res, json_t *o)
{
    if (!o) return out_of_memory(res);
    res->json = o;
    return res->code;
}

/* ---- status, models, show, devices, health ---- */

static int cmd_status(vram_manager *m, json_t *args, vram__cmd_result *res)
{
    static const char *const fields[] = {"model", NULL};
    vram_model *model;
    if (check_fields(args, fields, res) || get_model(m, args, 0, &model, res)) return res->code;
    if (!model) {
        res->raw = status_text(m);
        return res->raw ? 0 : out_of_memory(res);
    }
    const char *name = vram_model_name(model);
    json_t *one = model_status(m, name);
    if (!one) return unknown_model(m, name, res);
    json_t *o = json_object();
    if (o)
        json_object_set_new(o, name, one);
    else
        json_decref(one);
    return set_json(res, o);
}

static int cmd_models(vram_manager *m, json_t *args, vram__cmd_result *res)
{
    static const char *const fields[] = {NULL};
    if (check_fields(args, fields, res)) return res->code;
    vram__snapshot snap;
    if (vram__snapshot_take(m, 1, &snap) < 0) return out_of_memory(res);
    json_t *list = json_array();
    for (size_t i = 0; list && i < snap.nmodels; i++) {
        json_t *v = vram__model_json(&snap, &snap.models[i]);
        json_object_set_new(v, "name", json_string(snap.models[i].name));
        json_array_append_new(list, v);
    }
    vram__snapshot_free(&snap);
    if (!list) return out_of_memory(res);
    return set_json(res, json_pack("{s:o}", "models", list));
}

static int cmd_show(vram_manager *m, json_t *args, vram__cmd_result *res)
{
    static const char *const fields[] = {"model", NULL};
    vram_model *model;
    if (check_fields(args, fields, res) || get_model(m, args, 1, &model, res)) return res->code;
    /* load_progress included while loading */
    json_t *o = model_status(m, vram_model_name(model));
    return o ? set_json(res, o) : unknown_model(m, vram_model_name(model), res);
}

static int cmd_devices(vram_manager *m, json_t *args, vram__cmd_result *res)
{
    static const char *const fields[] = {NULL};
    if (check_fields(args, fields, res)) return res->code;
    vram__snapshot snap;
    if (vram__snapshot_take(m, 1, &snap) < 0) return out_of_memory(res);
    json_t *list = vram__devices_json(&snap);
    vram__snapshot_free(&snap);
    if (!list) return out_of_memory(res);
    return set_json(res, json_pack("{s:o}", "devices", list));
}

static int cmd_health(vram_manager *m, json_t *args, vram__cmd_result *res)
{
    static const char *const fields[] = {NULL};
    if (check_fields(args, fields, res)) return res->code;
    vram_manager_info info;
    if (vram_manager_get_info(m, &info, sizeof info) < 0) return out_of_memory(res);
    /* a latched backend (a sticky CUDA error) fails the health check, so
     * that a liveness probe restarts the process, as the error asks */
    if (info.backend_error[0])
        return vram__cmd_fail(res, VRAM_EBACKEND, "the device backend is unusable: %s",
                              info.backend_error);
    return set_json(res, json_pack("{s:s, s:s, s:s, s:I, s:b}", "status", "ok", "version",
                                   VRAM_VERSION, "backend", info.backend, "models",
                                   (json_int_t)info.models, "monitor_running",
                                   info.monitor_running));
}

/* ---- load and run ---- */

static const char *acquire_action(vram_state before)
{
    switch (before) {
    case VRAM_STATE_UNLOADED: return "loaded";
    case VRAM_STATE_CPU:
    case VRAM_STATE_OFFLOADING: return "restored";
    case VRAM_STATE_GPU: return "none";
    case VRAM_STATE_LOADING: return "joined a load in progress";
    case VRAM_STATE_RESTORING: return "joined a restore in progress";
    default: return "loaded";
    }
}

/* Acquires model, timing it; fills step with what it did. */
static int timed_acquire(vram_model *model, vram_lease **lease, json_t **step, uint64_t *moved,
                         double *secs, vram__cmd_result *res)
{
    vram_state before = vram_model_state(model);
    vram_set_error(VRAM_OK, "%s", "");
    double t0 = vram__now();
    int rc = vram_model_acquire(model, lease);
    double t1 = vram__now();
    if (rc < 0) return fail_core(res, rc, "loading", vram_model_name(model));
    const char *action = acquire_action(before);
    *moved = strcmp(action, "none") == 0 ? 0 : vram_model_bytes(model);
    *secs = t1 - t0;
    *step = timing(*secs, *moved);
    if (*step) json_object_set_new(*step, "action", json_string(action));
    return 0;
}

/* Ends lease, timing it; reports whether the end offloaded the model. */
static json_t *timed_end(vram_model *model, vram_lease *lease, uint64_t *moved, double *secs)
{
    vram_state before = vram_model_state(model);
    double t0 = vram__now();
    vram_lease_end(lease);
    double t1 = vram__now();
    vram_state after = vram_model_state(model);
    int offloaded =
        before == VRAM_STATE_GPU && (after == VRAM_STATE_CPU || after == VRAM_STATE_OFFLOADING);
    *moved = offloaded ? vram_model_bytes(model) : 0;
    *secs = t1 - t0;
    json_t *o = timing(*secs, *moved);
    if (o) json_object_set_new(o, "offloaded", json_boolean(offloaded));
    return o;
}

static void add_place(json_t *o, vram_model *model)
{
    vram_state s = vram_model_state(model);
    json_object_set_new(o, "state", json_string(vram_state_name(s)));
    json_object_set_new(o, "location", json_string(vram_state_location(s)));
}

static int cmd_load(vram_manager *m, json_t *args, vram__cmd_result *res)
{
    static const char *const fields[] = {"model", NULL};
    vram_model *model;
    if (check_fields(args, fields, res) || get_model(m, args, 1, &model, res)) return res->code;
    const char *name = vram_model_name(model);
    double t0 = vram__now(), acq_s = 0, end_s = 0;
    vram_lease *lease = NULL;
    json_t *acq = NULL;
    uint64_t moved = 0, back = 0;
    if (timed_acquire(model, &lease, &acq, &moved, &acq_s, res)) return res->code;
    json_t *end = timed_end(model, lease, &back, &end_s);
    double total = vram__now() - t0;
    const char *action = json_string_value(json_object_get(acq, "action"));
    json_t *o = timing(acq_s, moved);
    if (!o) {
        json_decref(acq);
        json_decref(end);
        return out_of_memory(res);
    }
    char msg[320];
    if (strcmp(action ? action : "none", "none") == 0)
        snprintf(msg, sizeof msg, "%s is already on the GPU", name);
    else
        snprintf(msg, sizeof msg, "%s %s in %.3f s (%.2f GB/s)%s", name, action, acq_s,
                 gbps(moved, acq_s), back ? ", then offloaded at once (immediate_offload)" : "");
    json_object_set_new(o, "success", json_true());
    json_object_set_new(o, "model", json_string(name));
    json_object_set_new(o, "action", json_string(action ? action : "none"));
    json_object_set_new(o, "message", json_string(msg));
    json_object_set_new(o, "model_bytes", json_integer((json_int_t)vram_model_bytes(model)));
    json_object_set_new(o, "total_seconds", json_real(rounded(total, 1e6)));
    json_object_set_new(o, "offloaded", json_boolean(back != 0));
    json_object_set_new(o, "steps", json_pack("{s:o, s:o}", "acquire", acq, "end_lease", end));
    add_place(o, model);
    return set_json(res, o);
}

static int cmd_run(vram_manager *m, json_t *args, vram__cmd_result *res)
{
    static const char *const fields[] = {"model", NULL};
    vram_model *model;
    if (check_fields(args, fields, res) || get_model(m, args, 1, &model, res)) return res->code;
    const char *name = vram_model_name(model);
    double t0 = vram__now(), acq_s = 0, end_s = 0;
    vram_lease *lease = NULL;
    json_t *acq = NULL;
    uint64_t moved = 0, back = 0, sum = 0;
    if (timed_acquire(model, &lease, &acq, &moved, &acq_s, res)) return res->code;

    vram_set_error(VRAM_OK, "%s", "");
    double c0 = vram__now();
    int rc = vram_model_checksum(model, &sum);
    double c_s = vram__now() - c0;
    uint64_t bytes = vram_model_bytes(model);
    json_t *end = timed_end(model, lease, &back, &end_s);
    if (rc < 0) {
        json_decref(acq);
        json_decref(end);
        return fail_core(res, rc, "checksum of", name);
    }
    double total = vram__now() - t0;
    json_t *compute = timing(c_s, bytes);
    char hex[24];
    snprintf(hex, sizeof hex, "0x%016" PRIx64, sum);
    /* the top-level figures are the transfers the run did: its load or
     * restore plus the offload at its end */
    double xfer_s = (moved ? acq_s : 0) + (back ? end_s : 0);
    json_t *o = timing(xfer_s, moved + back);
    if (!o) {
        json_decref(acq);
        json_decref(end);
        json_decref(compute);
        return out_of_memory(res);
    }
    char msg[320];
    snprintf(msg, sizeof msg, "%s: acquire %.3f s (%s), checksum %.3f s, end %.3f s%s", name, acq_s,
             json_string_value(json_object_get(acq, "action")), c_s, end_s,
             back ? " (offloaded)" : "");
    json_object_set_new(o, "success", json_true());
    json_object_set_new(o, "model", json_string(name));
    json_object_set_new(o, "checksum", json_string(hex));
    json_object_set_new(o, "message", json_string(msg));
    json_object_set_new(o, "model_bytes", json_integer((json_int_t)bytes));
    json_object_set_new(o, "total_seconds", json_real(rounded(total, 1e6)));
    json_object_set_new(
        o, "steps",
        json_pack("{s:o, s:o, s:o}", "acquire", acq, "compute", compute, "end_lease", end));
    add_place(o, model);
    return set_json(res, o);
}

/* ---- offload and release ---- */

typedef int (*model_op)(vram_model *model, unsigned flags);

/* Runs op (offload or release) on one model with VRAM_DEFER; appends what
 * it did to list. Returns 0, VRAM_DEFERRED, or a negative code (res set). */
static int one_op(vram_model *model, int release, unsigned flags, json_t *list, uint64_t *moved,
                  double *secs, vram__cmd_result *res)
{
    const char *name = vram_model_name(model);
    vram_state before = vram_model_state(model);
    uint64_t bytes = vram_model_bytes(model);
    vram_set_error(VRAM_OK, "%s", "");
    double t0 = vram__now();
    int rc = release ? vram_model_release(model, flags) : vram_model_offload(model, flags);
    double s = vram__now() - t0;
    if (rc < 0) return fail_core(res, rc, release ? "releasing" : "offloading", name);
    const char *what;
    uint64_t b = 0;
    if (rc == VRAM_DEFERRED) {
        what = "deferred until its last lease ends";
    } else if (release) {
        if (before == VRAM_STATE_UNLOADED) {
            what = "not loaded";
        } else {
            what = "released";
            b = bytes;
        }
    } else if (before == VRAM_STATE_GPU || before == VRAM_STATE_RESTORING) {
        what = "offloaded";
        b = bytes;
    } else if (before == VRAM_STATE_CPU) {
        what = "already on the CPU";
    } else if (before == VRAM_STATE_UNLOADED) {
        what = "not loaded";
    } else {
        what = "done";
    }
    json_t *item = timing(s, b);
    if (!item) return out_of_memory(res);
    /* a release moves no bytes over the bus: it only frees them */
    if (release) json_object_set_new(item, "gbps", json_real(0));
    json_object_set_new(item, "model", json_string(name));
    json_object_set_new(item, "result", json_string(what));
    json_object_set_new(item, "deferred", json_boolean(rc == VRAM_DEFERRED));
    add_place(item, model);
    json_array_append_new(list, item);
    *moved += b;
    *secs += s;
    return rc;
}

static int offload_or_release(vram_manager *m, json_t *args, int release, vram__cmd_result *res)
{
    static const char *const fields[] = {"model", "nowait", NULL};
    vram_model *model;
    if (check_fields(args, fields, res)) return res->code;
    int remote = vram__cmd_remote(args, release ? "release" : "offload", res);
    if (remote != 1) return remote; /* another process's model: done by its owner */
    if (get_model(m, args, 0, &model, res)) return res->code;
    /* a model under a lease: by default the work is deferred to the end of
     * its last lease (202); with "nowait": true it is refused (409) */
    unsigned flags = VRAM_DEFER;
    json_t *nw = args ? json_object_get(args, "nowait") : NULL;
    if (nw && !json_is_boolean(nw))
        return vram__cmd_fail(res, VRAM_EINVAL, "'nowait' must be true or false");
    if (json_is_true(nw)) flags = VRAM_NOWAIT;
    json_t *list = json_array();
    if (!list) return out_of_memory(res);
    uint64_t moved = 0;
    double secs = 0;
    int deferred = 0, acted = 0, rc = 0;
    if (model) {
        rc = one_op(model, release, flags, list, &moved, &secs, res);
        if (rc == VRAM_DEFERRED) deferred++;
    } else {
        /* every model: try all, report the first failure after the rest */
        json_t *names = model_names(m);
        size_t i;
        json_t *v;
        vram__cmd_result first = {0};
        json_array_foreach(names, i, v)
        {
            vram_model *mm = vram_manager_find(m, json_string_value(v));
            if (!mm) continue; /* unregistered meanwhile */
            int r = one_op(mm, release, flags, list, &moved, &secs, res);
            if (r == VRAM_DEFERRED) deferred++;
            if (r < 0 && first.code == 0) {
                first.code = r;
                memcpy(first.message, res->message, sizeof first.message);
            }
        }
        json_decref(names);
        rc = first.code;
        if (rc < 0) vram__cmd_fail(res, rc, "%s", first.message);
    }
    if (rc < 0) {
        json_decref(list);
        return rc;
    }
    size_t i;
    json_t *item;
    json_array_foreach(list, i, item)
    {
        const char *r = json_string_value(json_object_get(item, "result"));
        if (r && (strcmp(r, "offloaded") == 0 || strcmp(r, "released") == 0)) acted++;
    }
    char msg[256];
    if (release)
        snprintf(msg, sizeof msg, "released %d model%s from GPU and CPU memory", acted,
                 acted == 1 ? "" : "s");
    else
        snprintf(msg, sizeof msg, "offloaded %d model%s to the CPU", acted, acted == 1 ? "" : "s");
    if (deferred) {
        size_t n = strlen(msg);
        snprintf(msg + n, sizeof msg - n, "; %d deferred until its last lease ends", deferred);
    }
    json_t *o = timing(secs, moved);
    if (!o) {
        json_decref(list);
        return out_of_memory(res);
    }
    if (release) json_object_set_new(o, "gbps", json_real(0));
    json_object_set_new(o, "success", json_true());
    json_object_set_new(o, "message", json_string(msg));
    json_object_set_new(o, "deferred", json_boolean(deferred > 0));
    if (model) json_object_set_new(o, "model", json_string(vram_model_name(model)));
    json_object_set_new(o, "models", list);
    res->code = deferred ? VRAM_DEFERRED : 0;
    return set_json(res, o);
}

static int cmd_offload(vram_manager *m, json_t *args, vram__cmd_result *res)
{
    return offload_or_release(m, args, 0, res);
}

static int cmd_release(vram_manager *m, json_t *args, vram__cmd_result *res)
{
    return offload_or_release(m, args, 1, res);
}

/* ---- timeouts ---- */

/* The seed's timeout: {"timeout": S} for every model, or one with "model". */
static int cmd_timeout(vram_manager *m, json_t *args, vram__cmd_result *res)
{
    static const char *const fields[] = {"timeout", "model", NULL};
    vram_model *model;
    double s = 0;
    if (check_fields(args, fields, res)) return res->code;
    int remote = vram__cmd_remote(args, "timeout", res);
    if (remote != 1) return remote;
    if (get_model(m, args, 0, &model, res)) return res->code;
    json_t *v = args ? json_object_get(args, "timeout") : NULL;
    if (!v) return vram__cmd_fail(res, VRAM_EINVAL, "'timeout' is required (seconds, >= 0)");
    if (vram__cmd_get_seconds(v, "timeout", &s, res)) return res->code;
    vram_set_error(VRAM_OK, "%s", "");
    int rc = model ? vram_model_set_idle_timeout(model, s) : vram_manager_set_idle_timeout(m, s);
    if (rc < 0)
        return fail_core(res, rc, "setting the idle timeout of",
                         model ? vram_model_name(model) : "all models");
    json_t *names = model ? json_pack("[s]", vram_model_name(model)) : model_names(m);
    char msg[256];
    snprintf(msg, sizeof msg, "idle timeout set to %s for %s%s", vram__seconds_text(s).s,
             model ? vram_model_name(model) : "all models",
             s == 0 ? " (0 = never offload on idle)" : "");
    return set_json(res, json_pack("{s:b, s:s, s:f, s:o}", "success", 1, "message", msg, "timeout",
                                   s, "models", names ? names : json_array()));
}

/* PATCH of one model: idle_timeout, release_timeout, immediate_offload. */
static int cmd_configure(vram_manager *m, json_t *args, vram__cmd_result *res)
{
    static const char *const fields[] = {"model", "idle_timeout", "release_timeout",
                                         "immediate_offload", NULL};
    vram_model *model;
    if (check_fields(args, fields, res)) return res->code;
    int remote = vram__cmd_remote(args, "configure", res);
    if (remote != 1) return remote;
    if (get_model(m, args, 1, &model, res)) return res->code;
    json_t *vi = json_object_get(args, "idle_timeout");
    json_t *vr = json_object_get(args, "release_timeout");
    json_t *vo = json_object_get(args, "immediate_offload");
    double idle = 0, rel = 0;
    int imm = 0;
    if (!vi && !vr && !vo)
        return vram__cmd_fail(res, VRAM_EINVAL,
                              "nothing to change: give idle_timeout, release_timeout "
                              "(seconds) or immediate_offload (true/false)");
    /* check everything before changing anything */
    if (vi && vram__cmd_get_seconds(vi, "idle_timeout", &idle, res)) return res->code;
    if (vr && vram__cmd_get_seconds(vr, "release_timeout", &rel, res)) return res->code;
    if (vo) {
        if (json_is_boolean(vo))
            imm = json_is_true(vo);
        else if (json_is_integer(vo) &&
                 (json_integer_value(vo) == 0 || json_integer_value(vo) == 1))
            imm = (int)json_integer_value(vo);
        else if (!json_is_string(vo) || vram__parse_bool(json_string_value(vo), &imm) < 0)
            return vram__cmd_fail(res, VRAM_EINVAL,
                                  "'immediate_offload' must be true or false (or 1/0, \"yes\"/\"no\", "
                                  "\"on\"/\"off\")");
    }
    const char *name = vram_model_name(model);
    vram_set_error(VRAM_OK, "%s", "");
    int rc = 0;
    if (vi && (rc = vram_model_set_idle_timeout(model, idle)) < 0)
        return fail_core(res, rc, "setting the idle timeout of", name);
    if (vr && (rc = vram_model_set_release_timeout(model, rel)) < 0)
        return fail_core(res, rc, "setting the release timeout of", name);
    if (vo && (rc = vram_model_set_immediate_offload(model, imm)) < 0)
        return fail_core(res, rc, "setting immediate_offload of", name);
    json_t *st = model_status(m, name);
    json_t *o = json_pack("{s:b, s:s, s:s, s:o}", "success", 1, "model", name, "message",
                          "model updated", "status", st ? st : json_object());
    return set_json(res, o);
}

/* ---- the table ---- */

static const vram__command commands[] = {
    {"status", "status of every model (or of one)", 0, 0, cmd_status, 0},
    {"models", "list models with their status", 0, 0, cmd_models, 0},
    {"show", "one model's status (with load_progress while loading)", 0, 0, cmd_show, 0},
    {"devices", "devices with their memory", 0, 0, cmd_devices, 0},
    {"node", "every process on the node that has joined vramd, with its models", 0, 0,
     vram__cmd_node, 0},
    {"health", "liveness and a summary", 0, 0, cmd_health, 0},
    {"load", "load or restore a model onto the GPU and wait", 1, 1, cmd_load, 0},
    {"run", "acquire, checksum on the device, end the lease", 1, 1, cmd_run, 0},
    {"offload", "offload every model (or one) to the CPU", 1, 1, cmd_offload, 0},
    {"release", "release every model (or one) completely", 1, 1, cmd_release, 0},
    {"timeout", "set the idle timeout of every model (or one)", 0, 1, cmd_timeout, 0},
    {"configure", "set one model's timeouts and immediate offload", 0, 1, cmd_configure, 0},
    {"register", "register a model from a source (NAME=SOURCE,key=value... or name/source/options)",
     1, 1, vram__cmd_register, 1},
    {"unregister", "release and forget a model (refused under a lease)", 1, 1, vram__cmd_unregister,
     1},
    {"reopen", "open a model's source again (its file changed on disk)", 1, 1, vram__cmd_reopen, 1},
};

const vram__command *vram__command_find(const char *name)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(commands[i].name, name) == 0) return &commands[i];
    return NULL;
}

const vram__command *vram__command_at(size_t i)
{
    return i < sizeof commands / sizeof commands[0] ? &commands[i] : NULL;
}

int vram__command_run(vram_manager *m, const vram__command *cmd, json_t *args,
                      vram__cmd_result *res)
{
    vram__cmd_result_clear(res);
    if (!cmd) return vram__cmd_fail(res, VRAM_EINVAL, "unknown command");
    if (cmd->run == cmd_load || cmd->run == cmd_run)
        vram__reopen_if_changed(m, args); /* a file changed on disk since it was opened */
    if (cmd->registry) {
        cmd->run(m, args, res);
    } else {
        vram__registry_read_lock(); /* the model handles it finds stay valid */
        cmd->run(m, args, res);
        vram__registry_read_unlock();
    }
    if (cmd->mutates) __atomic_add_fetch(&g_gen, 1, __ATOMIC_RELEASE);
    if (res->code >= 0 && !res->json && !res->raw) out_of_memory(res);
    return res->code;
}
