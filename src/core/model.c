/* model.c - the model state machine: lazy load, leases, offload, restore, release, checksums and per-model options. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/core.h"

/* ---- small helpers (lock held unless said otherwise) ---- */

static void model_wait(vram_model *model)
{
    model->waiters++;
    pthread_cond_wait(&model->cond, &model->m->lock);
    model->waiters--;
}

static void model_broadcast(vram_model *model)
{
    if (model->waiters > 0) pthread_cond_broadcast(&model->cond);
}

/* Tells the monitor about a deadline; wakes it only when the deadline is
 * earlier than the one it sleeps towards. */
static void monitor_note(vram_manager *m, double deadline)
{
    if (deadline < m->monitor_next) {
        m->monitor_next = deadline;
        if (m->monitor_waiting) pthread_cond_signal(&m->monitor_cond);
    }
}

static void note_idle(vram_model *model)
{
    double it = vram__idle_timeout(model);
    if (it > 0) monitor_note(model->m, model->last_used + it);
}

/* Records the calling thread's detailed error as the model's last_error. */
static void set_last_error(vram_model *model, int rc, const char *what)
{
    const char *detail = vram__last_error();
    snprintf(model->last_error, sizeof model->last_error, "%s failed: %s%s%s", what,
             vram_strerror(rc), *detail ? ": " : "", detail);
}

double vram__idle_timeout(const vram_model *model)
{
    return model->idle_timeout >= 0 ? model->idle_timeout : model->m->idle_timeout;
}

double vram__release_timeout(const vram_model *model)
{
    return model->release_timeout >= 0 ? model->release_timeout : model->m->release_timeout;
}

/* ---- load ---- */

/* UNLOADED -> LOADING -> GPU with one lease taken for the caller, or back to
 * UNLOADED with everything freed. Lock held on entry and return. */
static int load_locked(vram_model *model)
{
    vram_manager *m = model->m;
    model->state = VRAM_STATE_LOADING;
    model->owner = pthread_self();
    model->pending = 0;
    uint64_t total = model->source ? model->source->bytes : 0;
    __atomic_store_n(&model->progress_total, total, __ATOMIC_RELAXED);
    __atomic_store_n(&model->progress_done, 0, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&m->lock);

    vram__clear_error();
    double t0 = vram__now();
    int rc;
    if (model->source) {
        vram_alloc *a = NULL;
        rc = vram__alloc_range(model, (size_t)model->source->bytes, &a);
        if (rc == 0) {
            vram_sink sink = {m->backend, &a->buf, &model->progress_done, m->cfg.chunk_bytes,
                              model->name, model->source->bytes};
            rc = model->source->load(model->source, &sink);
        }
    } else {
        rc = model->load(model, model->load_user);
        if (rc > 0) rc = vram__errorf(VRAM_ELOAD, "load function returned %d", rc);
        if (rc < 0 && !vram__last_error()[0])
            vram__errorf(rc, "load function returned %s", vram_err_name(rc));
        if (rc == 0 && model->nallocs == 0)
            rc = vram__errorf(VRAM_ELOAD, "load function allocated no device memory "
                                          "(call vram_model_alloc)");
    }
    double secs = vram__now() - t0;
    if (rc < 0) vram__free_all(model);

    pthread_mutex_lock(&m->lock);
    __atomic_store_n(&model->progress_total, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&model->progress_done, 0, __ATOMIC_RELAXED);
    model->load_gen++;
    model->last_load_rc = rc;
    if (rc < 0) {
        model->failures++;
        set_last_error(model, rc, "load");
        model->state = VRAM_STATE_UNLOADED;
        model->bytes = 0;
        vram__log(VRAM_LOG_ERROR, "load-failed model=%s seconds=%.3f error=%s: %s", model->name,
                  secs, vram_err_name(rc), vram__last_error());
    } else {
        model->loads++;
        model->last_load_s = secs;
        model->total_load_s += secs;
        model->last_load_gbps = vram__gbps(model->bytes, secs);
        model->last_error[0] = '\0';
        if (model->source)
            for (size_t i = 0; i < model->source->ntensors; i++)
                model->source->tensors[i].dev_ptr =
                    (void *)(model->allocs[0].buf.addr + model->source->tensors[i].offset);
        model->state = VRAM_STATE_GPU;
        model->leases++;
        model->last_used = vram__clock(m);
        vram__log(VRAM_LOG_INFO, "load model=%s bytes=%llu seconds=%.3f gbps=%.2f device=%d",
                  model->name, (unsigned long long)model->bytes, secs, model->last_load_gbps,
                  model->device);
    }
    vram__mem_broadcast(m);
    model_broadcast(model);
    vram__node_notify(m); /* a final state: the node hears of it soon */
    return rc;
}

int vram_model_alloc(vram_model *model, size_t bytes, void **dev_ptr)
{
    if (!model || !dev_ptr) return vram__errorf(VRAM_EINVAL, "model and dev_ptr are required");
    *dev_ptr = NULL;
    if (bytes == 0) return vram__errorf(VRAM_EINVAL, "cannot allocate 0 bytes");
    vram_manager *m = model->m;
    pthread_mutex_lock(&m->lock);
    int ok = model->state == VRAM_STATE_LOADING && pthread_equal(model->owner, pthread_self());
    pthread_mutex_unlock(&m->lock);
    if (!ok)
        return vram__errorf(VRAM_ESTATE, "vram_model_alloc('%s') is only valid inside its load "
                                         "function",
                            model->name);
    vram_alloc *a = NULL;
    int rc = vram__alloc_range(model, bytes, &a);
    if (rc < 0) return rc;
    *dev_ptr = (void *)a->buf.addr;
    return 0;
}

/* Finds the allocation holding [p, p+n). Caller owns the model or a lease. */
static vram_alloc *find_alloc(vram_model *model, const void *p, size_t n)
{
    uintptr_t u = (uintptr_t)p;
    for (size_t i = 0; i < model->nallocs; i++) {
        vram_alloc *a = &model->allocs[i];
        if (u >= a->buf.addr && u - a->buf.addr <= a->buf.size && n <= a->buf.size - (u - a->buf.addr))
            return a;
    }
    return NULL;
}

static int may_touch_device(vram_model *model)
{
    return (model->state == VRAM_STATE_GPU && model->leases > 0) ||
           (model->state == VRAM_STATE_LOADING && pthread_equal(model->owner, pthread_self()));
}

static int transfer(vram_model *model, void *dev_ptr, void *host, size_t bytes, int up)
{
    if (!model || !dev_ptr || (!host && bytes))
        return vram__errorf(VRAM_EINVAL, "model, device pointer and host pointer are required");
    vram_manager *m = model->m;
    pthread_mutex_lock(&m->lock);
    int ok = may_touch_device(model);
    vram_alloc *a = ok ? find_alloc(model, dev_ptr, bytes) : NULL;
    vram_buf buf;
    if (a) buf = a->buf;
    pthread_mutex_unlock(&m->lock);
    if (!ok)
        return vram__errorf(VRAM_ESTATE, "model '%s' is not on the device under a lease",
                            model->name);
    if (!a)
        return vram__errorf(VRAM_EINVAL, "%zu bytes at %p are outside model '%s'", bytes, dev_ptr,
                            model->name);
    size_t off = (size_t)((uintptr_t)dev_ptr - buf.addr);
    return up ? vram__backend_to_device(m->backend, &buf, off, host, bytes)
              : vram__backend_to_host(m->backend, &buf, off, host, bytes);
}

int vram_model_upload(vram_model *model, void *dev_ptr, const void *src, size_t bytes)
{
    return transfer(model, dev_ptr, (void *)src, bytes, 1);
}

int vram_model_download(vram_model *model, void *dst, const void *dev_ptr, size_t bytes)
{
    return transfer(model, (void *)dev_ptr, dst, bytes, 0);
}

/* ---- offload ---- */

/* GPU (no lease) -> OFFLOADING -> CPU, or back to GPU on failure with the
 * device memory untouched. Lock held on entry and return. */
/* Copies every allocation of a model in OFFLOADING (owned by the caller) to
 * its host backup, allocating backups the first time, then unmaps the
 * device memory. On failure the device copy is untouched and the backups
 * made by this call are freed. Lock NOT held. */
static int copy_to_backups(vram_model *model)
{
    vram_backend *b = model->m->backend;
    int rc = 0;
    unsigned char *fresh_mark = NULL; /* backups allocated by this call */
    if (model->nallocs) {
        fresh_mark = calloc(model->nallocs, 1);
        if (!fresh_mark) return vram__errorf(VRAM_EHOSTMEM, "out of host memory");
    }
    for (size_t i = 0; rc == 0 && i < model->nallocs; i++) {
        vram_alloc *a = &model->allocs[i];
        if (!a->backup) {
            rc = vram__backend_host_alloc(b, a->buf.size, &a->backup);
            if (rc < 0) {
                a->backup = NULL;
                break;
            }
            fresh_mark[i] = 1;
        }
        rc = vram__backend_to_host(b, &a->buf, 0, a->backup, a->buf.size);
    }
    if (rc < 0) {
        /* nothing is lost: the device copy is untouched; drop new backups */
        char msg[VRAM_ERRMSG_MAX];
        snprintf(msg, sizeof msg, "%s", vram__last_error());
        for (size_t i = 0; i < model->nallocs; i++)
            if (fresh_mark[i]) {
                vram__backend_host_free(b, model->allocs[i].backup, model->allocs[i].buf.size);
                model->allocs[i].backup = NULL;
            }
        vram__errorf(rc, "%s", msg);
    } else {
        for (size_t i = 0; i < model->nallocs; i++) {
            vram_alloc *a = &model->allocs[i];
            int urc = vram__backend_unmap(b, &a->buf);
            if (urc < 0)
                vram__log(VRAM_LOG_WARN, "unmap model=%s failed: %s (memory stays mapped)",
                          model->name, vram__last_error());
        }
    }
    free(fresh_mark);
    return rc;
}

/* Ends an offload: CPU with the device memory uncharged, or back to GPU
 * after a failure (host charge returned). Lock held. */
static void offload_done_locked(vram_model *model, int rc, uint64_t host_charged, double secs,
                                double pin_s, int evicting)
{
    vram_manager *m = model->m;
    if (rc < 0) {
        m->host_used -= host_charged;
        model->failures++;
        char before[sizeof model->last_error];
        memcpy(before, model->last_error, sizeof before);
        set_last_error(model, rc, "offload");
        model->state = VRAM_STATE_GPU;
        /* the same failure again (a retry, another eviction) is logged once */
        int again = model->offload_failing && strcmp(before, model->last_error) == 0;
        model->offload_failing = 1;
        /* after a latched backend error the device copy is not safe */
        char why[8];
        int dead = vram__backend_health(m->backend, why, sizeof why) != 0;
        vram__log(again ? VRAM_LOG_DEBUG : VRAM_LOG_ERROR,
                  "offload-failed model=%s error=%s: %s (%s)", model->name, vram_err_name(rc),
                  vram__last_error(),
                  dead ? "the device is unusable, its copy of the model cannot be trusted: "
                         "restart the process"
                       : "model stays on GPU");
        note_idle(model);
        return;
    }
    for (size_t i = 0; i < model->nallocs; i++) {
        vram_alloc *a = &model->allocs[i];
        if (!a->buf.mapped) {
            m->devs[a->buf.device].mapped -= a->buf.size;
            vram__uncharge(m, a);
        }
    }
    model->has_backup = 1;
    model->retry_at = 0;
    model->retry_delay = 0;
    model->offload_failing = 0;
    model->offloads++;
    if (evicting) model->evictions++;
    model->last_offload_s = secs;
    model->total_offload_s += secs;
    model->last_offload_gbps = vram__gbps(model->bytes, secs);
    model->state = VRAM_STATE_CPU;
    model->cpu_since = vram__clock(m);
    double rt = vram__release_timeout(model);
    if (rt > 0) monitor_note(m, model->cpu_since + rt);
    /* pin_s: pinning new backups (part of seconds; on CUDA overlapped
     * with the copy, so seconds can be less than pin_s plus the copy) */
    vram__log(VRAM_LOG_INFO, "%s model=%s bytes=%llu seconds=%.3f gbps=%.2f pin_s=%.3f",
              evicting ? "offload(evict)" : "offload", model->name,
              (unsigned long long)model->bytes, secs, model->last_offload_gbps, pin_s);
}

int vram__offload_locked(vram_model *model, int evicting)
{
    vram_manager *m = model->m;
    model->state = VRAM_STATE_OFFLOADING;
    model->owner = pthread_self();
    model->pending &= ~PENDING_OFFLOAD;

    uint64_t need = 0;
    for (size_t i = 0; i < model->nallocs; i++)
        if (!model->allocs[i].backup) need += model->allocs[i].buf.size;
    vram__clear_error();
    int rc = vram__make_host_room(m, need, model);
    uint64_t host_charged = rc == 0 ? need : 0;
    m->host_used += host_charged;
    pthread_mutex_unlock(&m->lock);

    double t0 = vram__now(), pin0 = vram__pin_seconds();
    if (rc == 0) rc = copy_to_backups(model);
    double secs = vram__now() - t0, pin_s = vram__pin_seconds() - pin0;

    pthread_mutex_lock(&m->lock);
    offload_done_locked(model, rc, host_charged, secs, pin_s, evicting);
    vram__mem_broadcast(m);
    model_broadcast(model);
    vram__node_notify(m); /* a final state: the node hears of it soon */
    return rc;
}

/* ---- restore ---- */

/* CPU -> RESTORING -> GPU with one lease taken for the caller, or back to
 * CPU with the backup intact. Lock held on entry and return. */
static int restore_locked(vram_model *model)
{
    vram_manager *m = model->m;
    vram_backend *b = m->backend;
    model->state = VRAM_STATE_RESTORING;
    model->owner = pthread_self();
    vram__clear_error();

    uint64_t need = 0;
    for (size_t i = 0; i < model->nallocs; i++)
        if (!model->allocs[i].charged) need += model->allocs[i].buf.reserved;
    int rc = need ? vram__charge(m, model->device, need, model) : 0;
    if (rc == 0)
        for (size_t i = 0; i < model->nallocs; i++) model->allocs[i].charged = 1;
    pthread_mutex_unlock(&m->lock);

    double t0 = vram__now();
    unsigned char *mapped_here = NULL;
    if (rc == 0 && model->nallocs) {
        mapped_here = calloc(model->nallocs, 1);
        if (!mapped_here) rc = vram__errorf(VRAM_EHOSTMEM, "out of host memory");
    }
    for (size_t i = 0; rc == 0 && i < model->nallocs; i++) {
        vram_alloc *a = &model->allocs[i];
        if (!a->buf.mapped) {
            rc = vram__map_with_evict(model, a);
            if (rc < 0) break;
            mapped_here[i] = 1;
        }
        rc = vram__backend_to_device(b, &a->buf, 0, a->backup, a->buf.size);
    }
    if (rc < 0) {
        char msg[VRAM_ERRMSG_MAX];
        snprintf(msg, sizeof msg, "%s", vram__last_error());
        for (size_t i = 0; mapped_here && i < model->nallocs; i++)
            if (mapped_here[i]) vram__backend_unmap(b, &model->allocs[i].buf);
        vram__errorf(rc, "%s", msg);
    }
    double secs = vram__now() - t0;

    pthread_mutex_lock(&m->lock);
    if (rc < 0) {
        for (size_t i = 0; i < model->nallocs; i++)
            if (!model->allocs[i].buf.mapped) vram__uncharge(m, &model->allocs[i]);
        model->failures++;
        set_last_error(model, rc, "restore");
        model->pending &= ~PENDING_OFFLOAD; /* it is off the device already */
        model->state = VRAM_STATE_CPU;
        char why[8];
        int dead = vram__backend_health(b, why, sizeof why) != 0;
        vram__log(VRAM_LOG_ERROR, "restore-failed model=%s error=%s: %s (%s)", model->name,
                  vram_err_name(rc), vram__last_error(),
                  dead ? "backup on CPU, but the device is unusable: restart the process"
                       : "backup intact on CPU");
    } else {
        for (size_t i = 0; i < model->nallocs; i++)
            if (mapped_here[i]) m->devs[model->allocs[i].buf.device].mapped += model->allocs[i].buf.size;
        model->restores++;
        model->last_restore_s = secs;
        model->total_restore_s += secs;
        model->last_restore_gbps = vram__gbps(model->bytes, secs);
        model->state = VRAM_STATE_GPU;
        model->leases++;
        model->last_used = vram__clock(m);
        vram__log(VRAM_LOG_INFO, "restore model=%s bytes=%llu seconds=%.3f gbps=%.2f",
                  model->name, (unsigned long long)model->bytes, secs, model->last_restore_gbps);
    }
    free(mapped_here);
    vram__mem_broadcast(m);
    model_broadcast(model);
    vram__node_notify(m); /* a final state: the node hears of it soon */
    return rc;
}

/* ---- release ---- */

/* GPU or CPU (no lease, no reader) -> RELEASING -> UNLOADED. Lock held on
 * entry and return. Never fails. */
int vram__release_locked(vram_model *model)
{
    vram_manager *m = model->m;
    vram_state from = model->state;
    model->state = VRAM_STATE_RELEASING;
    model->owner = pthread_self();
    model->pending = 0;
    uint64_t bytes = model->bytes;
    pthread_mutex_unlock(&m->lock);
    double t0 = vram__now();
    vram__free_all(model);
    double secs = vram__now() - t0;
    pthread_mutex_lock(&m->lock);
    model->releases++;
    model->state = VRAM_STATE_UNLOADED;
    if (model->source)
        for (size_t i = 0; i < model->source->ntensors; i++) model->source->tensors[i].dev_ptr = NULL;
    vram__log(VRAM_LOG_INFO, "release model=%s bytes=%llu from=%s seconds=%.3f", model->name,
              (unsigned long long)bytes, vram_state_location(from), secs);
    vram__mem_broadcast(m);
    model_broadcast(model);
    vram__node_notify(m); /* a final state: the node hears of it soon */
    return 0;
}

/* ---- public entry points ---- */

int vram_model_acquire(vram_model *model, vram_lease **out)
{
    if (!out) return vram__errorf(VRAM_EINVAL, "out is required");
    *out = NULL;
    if (!model) return vram__errorf(VRAM_EINVAL, "model is required");
    vram_lease *lease = malloc(sizeof *lease);
    if (!lease) return vram__errorf(VRAM_EHOSTMEM, "out of host memory");
    lease->model = model;
    vram_manager *m = model->m;
    int rc = 0, saw_load = 0;
    uint64_t gen = 0;
    double now = vram__clock(m); /* read before the lock: keeps the hot path short */

    pthread_mutex_lock(&m->lock);
    for (;;) {
        if (m->stopping) {
            rc = vram__errorf(VRAM_ECANCELED, "manager is shutting down");
            break;
        }
        if (model->state == VRAM_STATE_GPU && model->pending) {
            /* an offload or release asked for goes first (rule 6): the last
             * lease carries it out, then this acquire restores or loads */
            if (model->leases > 0)
                model_wait(model);
            else if (model->pending & PENDING_RELEASE)
                vram__release_locked(model);
            else
                vram__offload_locked(model, 0); /* a failure clears pending */
            continue;
        }
        if (model->state == VRAM_STATE_GPU) {
            model->leases++;
            if (now > model->last_used) model->last_used = now;
            break;
        }
        if (model->state == VRAM_STATE_CPU && model->readers == 0) {
            /* readers (checksums of the backup) finish first: a restored
             * model could be offloaded or released under them */
            rc = restore_locked(model);
            break;
        }
        if (model->state == VRAM_STATE_UNLOADED) {
            if (saw_load && model->load_gen != gen && model->last_load_rc < 0) {
                /* share the failure of the load we waited for, not a second try */
                rc = model->last_load_rc;
                vram__errorf(rc, "%s", model->last_error);
                break;
            }
            rc = load_locked(model);
            break;
        }
        if (model->state == VRAM_STATE_LOADING && !saw_load) {
            saw_load = 1;
            gen = model->load_gen;
        }
        model_wait(model);
    }
    pthread_mutex_unlock(&m->lock);
    if (rc < 0) {
        free(lease);
        return rc;
    }
    *out = lease;
    return 0;
}

void vram_lease_end(vram_lease *lease)
{
    if (!lease) return;
    vram_model *model = lease->model;
    vram_manager *m = model->m;
    free(lease);
    double now = vram__clock(m);
    pthread_mutex_lock(&m->lock);
    model->leases--;
    if (now > model->last_used) model->last_used = now;
    if (model->leases == 0) {
        if (model->pending & PENDING_RELEASE) {
            vram__release_locked(model);
        } else if ((model->pending & PENDING_OFFLOAD) || model->immediate_offload) {
            vram__offload_locked(model, 0);
        } else {
            model_broadcast(model);
            vram__mem_broadcast(m);
            note_idle(model);
        }
    }
    pthread_mutex_unlock(&m->lock);
}

void *vram_lease_ptr(const vram_lease *lease)
{
    if (!lease) return NULL;
    vram_model *model = lease->model;
    /* stable while the lease lives: the table changes only in LOADING/RELEASING */
    return model->nallocs ? (void *)model->allocs[0].buf.addr : NULL;
}

vram_model *vram_lease_model(const vram_lease *lease)
{
    return lease ? lease->model : NULL;
}

/* Waits for or defers work on a model under a lease; returns 1 to go on
 * and act, 0 with *rc set when done. Lock held. */
static int settle(vram_model *model, unsigned flags, unsigned pending, int *rc)
{
    if (flags & VRAM_NOWAIT) {
        *rc = vram__errorf(VRAM_EBUSY, "model '%s' is %s with %d lease%s", model->name,
                           vram_state_name(model->state), model->leases,
                           model->leases == 1 ? "" : "s");
        return 0;
    }
    model->pending |= pending; /* new acquires wait for it (rule 6) */
    if (flags & VRAM_DEFER) {
        *rc = VRAM_DEFERRED;
        return 0;
    }
    model_wait(model);
    return 1;
}

int vram_model_offload(vram_model *model, unsigned flags)
{
    if (!model) return vram__errorf(VRAM_EINVAL, "model is required");
    vram_manager *m = model->m;
    int rc = 0;
    pthread_mutex_lock(&m->lock);
    for (;;) {
        vram_state s = model->state;
        if (s == VRAM_STATE_UNLOADED || s == VRAM_STATE_CPU) break;
        if (s == VRAM_STATE_GPU && model->leases == 0) {
            rc = vram__offload_locked(model, 0);
            break;
        }
        if (s == VRAM_STATE_OFFLOADING || s == VRAM_STATE_RELEASING) {
            model_wait(model);
            continue;
        }
        /* GPU under a lease, LOADING or RESTORING (whose acquirer holds a lease next) */
        if (!settle(model, flags, PENDING_OFFLOAD, &rc)) break;
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}

int vram_model_release(vram_model *model, unsigned flags)
{
    if (!model) return vram__errorf(VRAM_EINVAL, "model is required");
    vram_manager *m = model->m;
    int rc = 0;
    pthread_mutex_lock(&m->lock);
    for (;;) {
        vram_state s = model->state;
        if (s == VRAM_STATE_UNLOADED) break;
        if ((s == VRAM_STATE_CPU && model->readers == 0) ||
            (s == VRAM_STATE_GPU && model->leases == 0)) {
            rc = vram__release_locked(model);
            break;
        }
        if (s == VRAM_STATE_OFFLOADING || s == VRAM_STATE_RELEASING || s == VRAM_STATE_CPU) {
            model_wait(model); /* CPU: a checksum reads the backup; it is short */
            continue;
        }
        if (!settle(model, flags, PENDING_RELEASE, &rc)) break;
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}

/* ---- checksum ---- */

/* Checksum of one allocation, on the device when the backend can. Caller
 * holds a lease (or owns the model) so the range stays mapped. */
static int checksum_device(vram_backend *b, const vram_buf *buf, uint64_t *out)
{
    uint64_t sum = 0;
    int rc = vram__backend_checksum(b, buf, 0, buf->size, &sum);
    if (rc == VRAM_ENOTSUP) {
        size_t chunk = (size_t)16 << 20;
        void *stage = NULL;
        rc = vram__backend_host_alloc(b, chunk, &stage);
        if (rc < 0) return rc;
        sum = 0;
        for (size_t off = 0; off < buf->size && rc == 0; off += chunk) {
            size_t n = buf->size - off < chunk ? buf->size - off : chunk;
            rc = vram__backend_to_host(b, buf, off, stage, n);
            if (rc == 0) sum += vram__checksum_partial(stage, n, off / 8);
        }
        vram__backend_host_free(b, stage, chunk);
    }
    if (rc < 0) return rc;
    *out = sum + vram__checksum_final(buf->size);
    return 0;
}

int vram_model_checksum(vram_model *model, uint64_t *out)
{
    if (!model || !out) return vram__errorf(VRAM_EINVAL, "model and out are required");
    vram_manager *m = model->m;
    int rc = 0, on_device = 0;
    pthread_mutex_lock(&m->lock);
    for (;;) {
        vram_state s = model->state;
        if (s == VRAM_STATE_GPU) {
            model->leases++;
            on_device = 1;
            break;
        }
        if (s == VRAM_STATE_CPU) {
            model->readers++;
            break;
        }
        if (s == VRAM_STATE_UNLOADED) {
            rc = vram__errorf(VRAM_ESTATE, "model '%s' is not loaded", model->name);
            break;
        }
        model_wait(model);
    }
    pthread_mutex_unlock(&m->lock);
    if (rc < 0) return rc;

    uint64_t h = 0;
    for (size_t i = 0; i < model->nallocs && rc == 0; i++) {
        vram_alloc *a = &model->allocs[i];
        uint64_t c = 0;
        if (on_device)
            rc = checksum_device(m->backend, &a->buf, &c);
        else
            c = vram_checksum(a->backup, a->buf.size);
        h = model->nallocs == 1 ? c : h * 0x100000001b3ULL + c;
    }

    pthread_mutex_lock(&m->lock);
    if (on_device) {
        /* an internal lease: its end neither counts as use nor triggers offload */
        model->leases--;
        if (model->leases == 0) {
            if (model->pending & PENDING_RELEASE)
                vram__release_locked(model);
            else if (model->pending & PENDING_OFFLOAD)
                vram__offload_locked(model, 0);
            else
                model_broadcast(model), vram__mem_broadcast(m);
        }
    } else {
        model->readers--;
        model_broadcast(model);
    }
    pthread_mutex_unlock(&m->lock);
    if (rc == 0) *out = h;
    return rc;
}

/* ---- options and queries ---- */

static int check_seconds(double s)
{
    const char *why = vram__seconds_problem(s);
    if (why) return vram__errorf(VRAM_EINVAL, "timeout of %g seconds %s", s, why);
    return 0;
}

int vram_model_set_idle_timeout(vram_model *model, double seconds)
{
    if (!model) return vram__errorf(VRAM_EINVAL, "model is required");
    int rc = check_seconds(seconds);
    if (rc < 0) return rc;
    pthread_mutex_lock(&model->m->lock);
    model->idle_timeout = seconds;
    if (model->state == VRAM_STATE_GPU && model->leases == 0) {
        model->m->monitor_next = -INFINITY; /* force a re-plan */
        if (model->m->monitor_waiting) pthread_cond_signal(&model->m->monitor_cond);
    }
    pthread_mutex_unlock(&model->m->lock);
    return 0;
}

int vram_model_set_release_timeout(vram_model *model, double seconds)
{
    if (!model) return vram__errorf(VRAM_EINVAL, "model is required");
    int rc = check_seconds(seconds);
    if (rc < 0) return rc;
    pthread_mutex_lock(&model->m->lock);
    model->release_timeout = seconds;
    model->m->monitor_next = -INFINITY;
    if (model->m->monitor_waiting) pthread_cond_signal(&model->m->monitor_cond);
    pthread_mutex_unlock(&model->m->lock);
    return 0;
}

int vram__check_seconds(double s)
{
    return check_seconds(s);
}

int vram_model_set_immediate_offload(vram_model *model, int on)
{
    if (!model) return vram__errorf(VRAM_EINVAL, "model is required");
    pthread_mutex_lock(&model->m->lock);
    model->immediate_offload = on ? 1 : 0;
    pthread_mutex_unlock(&model->m->lock);
    return 0;
}

vram_state vram_model_state(vram_model *model)
{
    pthread_mutex_lock(&model->m->lock);
    vram_state s = model->state;
    pthread_mutex_unlock(&model->m->lock);
    return s;
}

uint64_t vram_model_bytes(vram_model *model)
{
    pthread_mutex_lock(&model->m->lock);
    uint64_t b = model->bytes;
    pthread_mutex_unlock(&model->m->lock);
    return b;
}

const char *vram_model_name(const vram_model *model)
{
    return model ? model->name : NULL;
}

const char *vram_state_name(vram_state s)
{
    switch (s) {
    case VRAM_STATE_UNLOADED: return "unloaded";
    case VRAM_STATE_LOADING: return "loading";
    case VRAM_STATE_GPU: return "gpu";
    case VRAM_STATE_OFFLOADING: return "offloading";
    case VRAM_STATE_CPU: return "cpu";
    case VRAM_STATE_RESTORING: return "restoring";
    case VRAM_STATE_RELEASING: return "releasing";
    }
    return "unknown";
}

const char *vram_state_location(vram_state s)
{
    switch (s) {
    case VRAM_STATE_GPU:
    case VRAM_STATE_OFFLOADING: /* bytes still on the device until it completes */
    case VRAM_STATE_RELEASING:
        return "GPU";
    case VRAM_STATE_CPU:
    case VRAM_STATE_RESTORING:
        return "CPU";
    case VRAM_STATE_UNLOADED:
    case VRAM_STATE_LOADING:
    default:
        return "未加载";
    }
}

void vram_model_load_progress(vram_model *model, uint64_t *done, uint64_t *total)
{
    uint64_t d = model ? __atomic_load_n(&model->progress_done, __ATOMIC_RELAXED) : 0;
    uint64_t t = model ? __atomic_load_n(&model->progress_total, __ATOMIC_RELAXED) : 0;
    if (done) *done = d;
    if (total) *total = t;
}

size_t vram_model_tensor_count(vram_model *model)
{
    return model && model->source ? model->source->ntensors : 0;
}

int vram_model_tensor(vram_model *model, size_t i, vram_tensor_info *out)
{
    if (!model || !out) return vram__errorf(VRAM_EINVAL, "model and out are required");
    if (!model->source || i >= model->source->ntensors)
        return vram__errorf(VRAM_EINVAL, "tensor index %zu out of range (model '%s' has %zu)", i,
                            model->name, vram_model_tensor_count(model));
    pthread_mutex_lock(&model->m->lock);
    *out = model->source->tensors[i];
    pthread_mutex_unlock(&model->m->lock);
    return 0;
}

int vram_model_find_tensor(vram_model *model, const char *name, vram_tensor_info *out)
{
    if (!model || !name || !out) return vram__errorf(VRAM_EINVAL, "model, name and out are required");
    for (size_t i = 0; model->source && i < model->source->ntensors; i++)
        if (strcmp(model->source->tensors[i].name, name) == 0) return vram_model_tensor(model, i, out);
    return vram__errorf(VRAM_ENOENT, "model '%s' has no tensor '%s'", model->name, name);
}
