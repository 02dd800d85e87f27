/* models.c - models at run time: register, unregister, apply (config reload) and reopen, under the registry lock; their commands. */
#define _GNU_SOURCE
#include "server/models.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/base.h"

/* LOCK DISCIPLINE: see models.h (the registry lock). */

static pthread_rwlock_t g_registry = PTHREAD_RWLOCK_INITIALIZER;

#define WRITE_WAIT 5.0 /* seconds a registry change waits for commands in flight */

void vram__registry_read_lock(void)
{
    pthread_rwlock_rdlock(&g_registry);
}

void vram__registry_read_unlock(void)
{
    pthread_rwlock_unlock(&g_registry);
}

static int write_lock(void)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)WRITE_WAIT;
    if (pthread_rwlock_timedwrlock(&g_registry, &until) == 0) return 0;
    return vram_set_error(VRAM_EBUSY, "requests in flight are using the models (a load, a run): "
                                      "try again when they end");
}

static void write_unlock(void)
{
    pthread_rwlock_unlock(&g_registry);
}

/* ---- what a file source looked like when it was opened ---- */

/* A source's files as a fingerprint: size and newest mtime of the file, or
 * of the *.safetensors and *.json files of a directory (a checkpoint
 * directory, or the one an index file lives in). 0 when there is no file. */
static int fingerprint(const char *source, unsigned long long out[2])
{
    struct stat st;
    out[0] = out[1] = 0;
    if (!strncmp(source, "synthetic:", 10) || stat(source, &st) < 0) return 0;
    char dir[VRAM_SOURCE_MAX];
    size_t n = strlen(source);
    if (S_ISDIR(st.st_mode)) {
        snprintf(dir, sizeof dir, "%s", source);
    } else if (n > 5 && !strcmp(source + n - 5, ".json")) {
        snprintf(dir, sizeof dir, "%s", source);
        char *slash = strrchr(dir, '/');
        if (slash)
            *slash = '\0';
        else
            snprintf(dir, sizeof dir, ".");
        if (!dir[0]) snprintf(dir, sizeof dir, "/");
    } else {
        out[0] = (unsigned long long)st.st_size;
        out[1] = (unsigned long long)st.st_mtim.tv_sec * 1000000000ull + (unsigned long long)st.st_mtim.tv_nsec;
        return 1;
    }
    DIR *d = opendir(dir);
    if (!d) return 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        size_t l = strlen(e->d_name);
        if (!(l > 12 && !strcmp(e->d_name + l - 12, ".safetensors")) &&
            !(l > 5 && !strcmp(e->d_name + l - 5, ".json")))
            continue;
        char p[VRAM_SOURCE_MAX + 256];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (stat(p, &st) < 0) continue;
        unsigned long long t = (unsigned long long)st.st_mtim.tv_sec * 1000000000ull + (unsigned long long)st.st_mtim.tv_nsec;
        out[0] += (unsigned long long)st.st_size;
        if (t > out[1]) out[1] = t;
    }
    closedir(d);
    return 1;
}

typedef struct opened {
    char name[VRAM_NAME_MAX + 1];
    unsigned long long print[2];
} opened;

static struct {
    pthread_mutex_t lock; /* guards the table; held for no other call */
    opened *v;
    size_t n;
} g_opened = {PTHREAD_MUTEX_INITIALIZER, NULL, 0};

/* Remembers (print non-NULL) or forgets the fingerprint of name. */
static void opened_set(const char *name, const unsigned long long *print)
{
    pthread_mutex_lock(&g_opened.lock);
    size_t i = 0;
    while (i < g_opened.n && strcmp(g_opened.v[i].name, name) != 0)
        i++;
    if (!print) {
        if (i < g_opened.n) g_opened.v[i] = g_opened.v[--g_opened.n];
    } else {
        if (i == g_opened.n) {
            opened *g = realloc(g_opened.v, (g_opened.n + 1) * sizeof *g);
            if (g) {
                g_opened.v = g;
                snprintf(g[g_opened.n++].name, sizeof g->name, "%s", name);
            }
        }
        if (i < g_opened.n) memcpy(g_opened.v[i].print, print, sizeof g_opened.v[i].print);
    }
    pthread_mutex_unlock(&g_opened.lock);
}

/* 1 when name's source has changed since it was opened. */
static int opened_changed(const char *name, const char *source)
{
    unsigned long long now[2];
    if (!fingerprint(source, now)) return 0;
    int changed = 0;
    pthread_mutex_lock(&g_opened.lock);
    for (size_t i = 0; i < g_opened.n; i++)
        if (!strcmp(g_opened.v[i].name, name))
            changed = memcmp(g_opened.v[i].print, now, sizeof now) != 0;
    pthread_mutex_unlock(&g_opened.lock);
    return changed;
}

/* ---- under the write lock ---- */

static int do_register(vram_manager *m, const vram_model_spec *s)
{
    if (!s->source[0]) return vram_set_error(VRAM_EINVAL, "model '%s' needs a source", s->name);
    vram_model_opts o;
    vram__spec_opts(s, &o);
    unsigned long long print[2];
    int has_file = fingerprint(s->source, print); /* before opening: a change after shows */
    int rc = vram_manager_register(m, s->name, &o, NULL);
    if (rc == 0 && has_file) opened_set(s->name, print);
    return rc;
}

static int do_unregister(vram_manager *m, const char *name)
{
    vram_model *model = vram_manager_find(m, name);
    if (!model) return vram_set_error(VRAM_ENOENT, "no model named '%s'", name);
    vram_model_info mi;
    if (vram_model_get_info(model, &mi, sizeof mi) == 0 && mi.leases > 0)
        return vram_set_error(VRAM_EBUSY,
                              "model '%s' is in use (%d lease%s): it can be removed once %s", name,
                              mi.leases, mi.leases == 1 ? "" : "s",
                              mi.leases == 1 ? "it ends" : "they end");
    int rc = vram_manager_unregister(m, name);
    if (rc == 0) {
        opened_set(name, NULL);
        vram_log(VRAM_LOG_INFO, "unregister model=%s", name);
    }
    return rc;
}

/* Replaces a model by s: the new source is opened under a scratch name
 * first, so that a source that does not open leaves the old model alone. */
static int do_replace(vram_manager *m, const vram_model_spec *s)
{
    static int counter;
    vram_model_spec probe = *s;
    snprintf(probe.name, sizeof probe.name, "vram-reopen-%d-%d", (int)getpid(),
             __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED));
    int rc = do_register(m, &probe);
    if (rc < 0) return rc;
    vram_manager_unregister(m, probe.name);
    opened_set(probe.name, NULL);
    rc = do_unregister(m, s->name);
    if (rc < 0) return rc;
    return do_register(m, s);
}

/* The spec of a registered model (its effective options; a timeout equal
 * to the manager's counts as the manager's). */
static int spec_of(vram_manager *m, vram_model *model, vram_model_spec *s)
{
    vram_model_info mi;
    vram_manager_info info;
    int rc = vram_model_get_info(model, &mi, sizeof mi);
    if (rc == 0) rc = vram_manager_get_info(m, &info, sizeof info);
    if (rc < 0) return rc;
    vram_model_spec_init(s);
    snprintf(s->name, sizeof s->name, "%.*s", VRAM_NAME_MAX, mi.name);
    snprintf(s->source, sizeof s->source, "%.*s", (int)sizeof s->source - 1, mi.source);
    s->idle_timeout = mi.idle_timeout == info.idle_timeout ? -1 : mi.idle_timeout;
    s->release_timeout = mi.release_timeout == info.release_timeout ? -1 : mi.release_timeout;
    s->immediate_offload = mi.immediate_offload;
    s->device = mi.device;
    return 0;
}

/* Timeouts and immediate_offload of model set to those of s. 1 when something changed. */
static int update_in_place(vram_manager *m, vram_model *model, const vram_model_spec *cur,
                           const vram_model_spec *s)
{
    vram_manager_info info;
    if (vram_manager_get_info(m, &info, sizeof info) < 0) return 0;
    double idle = s->idle_timeout >= 0 ? s->idle_timeout : info.idle_timeout;
    double rel = s->release_timeout >= 0 ? s->release_timeout : info.release_timeout;
    double cidle = cur->idle_timeout >= 0 ? cur->idle_timeout : info.idle_timeout;
    double crel = cur->release_timeout >= 0 ? cur->release_timeout : info.release_timeout;
    int changed = 0;
    if (idle != cidle && vram_model_set_idle_timeout(model, idle) == 0) changed = 1;
    if (rel != crel && vram_model_set_release_timeout(model, rel) == 0) changed = 1;
    if (!!s->immediate_offload != !!cur->immediate_offload &&
        vram_model_set_immediate_offload(model, s->immediate_offload) == 0)
        changed = 1;
    return changed;
}

/* ---- the public functions ---- */

int vram_server_register(vram_manager *m, const vram_model_spec *s)
{
    if (!m || !s) return vram_set_error(VRAM_EINVAL, "manager and spec are required");
    int rc = write_lock();
    if (rc < 0) return rc;
    rc = do_register(m, s);
    write_unlock();
    return rc;
}

int vram_server_unregister(vram_manager *m, const char *name)
{
    if (!m || !name) return vram_set_error(VRAM_EINVAL, "manager and name are required");
    int rc = write_lock();
    if (rc < 0) return rc;
    rc = do_unregister(m, name);
    write_unlock();
    return rc;
}

int vram_server_apply(vram_manager *m, const vram_model_spec *s, const char **what)
{
    if (what) *what = "unchanged";
    if (!m || !s) return vram_set_error(VRAM_EINVAL, "manager and spec are required");
    int rc = write_lock();
    if (rc < 0) return rc;
    vram_model *model = vram_manager_find(m, s->name);
    vram_model_spec cur;
    if (!model) {
        rc = do_register(m, s);
        if (rc == 0 && what) *what = "registered";
    } else if ((rc = spec_of(m, model, &cur)) == 0) {
        int dev = s->device < 0 ? 0 : s->device, cdev = cur.device < 0 ? 0 : cur.device;
        if (strcmp(cur.source, s->source) != 0 || dev != cdev) {
            rc = do_replace(m, s);
            if (rc == 0 && what) *what = "replaced";
        } else if (update_in_place(m, model, &cur, s) && what) {
            *what = "updated";
        }
    }
    write_unlock();
    return rc;
}

int vram_server_reopen(vram_manager *m, const char *name)
{
    if (!m || !name) return vram_set_error(VRAM_EINVAL, "manager and name are required");
    int rc = write_lock();
    if (rc < 0) return rc;
    vram_model *model = vram_manager_find(m, name);
    vram_model_spec s;
    if (!model)
        rc = vram_set_error(VRAM_ENOENT, "no model named '%s'", name);
    else if ((rc = spec_of(m, model, &s)) == 0 && !s.source[0])
        rc = vram_set_error(VRAM_EINVAL, "model '%s' has a load function, not a source to reopen",
                            name);
    else if (rc == 0)
        rc = do_replace(m, &s);
    write_unlock();
    return rc;
}

int vram__reopen_if_changed(vram_manager *m, json_t *args)
{
    json_t *v = args ? json_object_get(args, "model") : NULL;
    if (!json_is_string(v)) return 0;
    vram_model_info mi;
    /* the handle is only read under the registry lock */
    vram__registry_read_lock();
    vram_model *model = vram_manager_find(m, json_string_value(v));
    int stale = model && vram_model_get_info(model, &mi, sizeof mi) == 0 &&
                mi.state == VRAM_STATE_UNLOADED && mi.leases == 0 &&
                opened_changed(mi.name, mi.source);
    vram__registry_read_unlock();
    if (!stale) return 0;
    vram_log(VRAM_LOG_INFO, "reopen model=%s: its source changed on disk since it was opened",
             mi.name);
    int rc = vram_server_reopen(m, mi.name);
    if (rc < 0)
        vram_log(VRAM_LOG_WARN, "reopen model=%s failed: %s", mi.name, vram_last_error());
    return rc;
}
