/* budget.c - device and host budgets: charging, least-recently-used eviction, bounded waits for memory, allocation of device ranges. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/core.h"

void vram__uncharge(vram_manager *m, vram_alloc *a)
{
    if (!a->charged) return;
    m->devs[a->buf.device].used -= a->buf.reserved;
    a->charged = 0;
    vram__mem_broadcast(m);
}

/* Waits on m->mem_cond for at most min(0.25 s, until deadline). Lock held. */
void vram__mem_wait(vram_manager *m, double deadline)
{
    double wait = deadline - vram__now();
    if (wait > 0.25) wait = 0.25; /* re-check evictability now and then */
    if (wait <= 0) return;
    struct timespec ts;
    vram__deadline_after(&ts, wait);
    m->mem_waiters++;
    pthread_cond_timedwait(&m->mem_cond, &m->lock, &ts);
    m->mem_waiters--;
}

/* Offloads the least recently used idle model on dev (never self, never one
 * under a lease or in transition). Lock held; dropped while offloading.
 * Returns 1 when it evicted or tried one (call again), 0 when none is left. */
static int evict_one(vram_manager *m, int dev, vram_model *self, uint64_t seq)
{
    vram_model *victim = NULL;
    for (size_t i = 0; i < m->nmodels; i++) {
        vram_model *c = m->models[i];
        if (c == self || c->device != dev || c->state != VRAM_STATE_GPU || c->leases > 0 ||
            c->evict_skip == seq)
            continue;
        if (!victim || c->last_used < victim->last_used) victim = c;
    }
    if (!victim) return 0;
    vram__log(VRAM_LOG_INFO, "evict model=%s bytes=%llu device=%d for=%s", victim->name,
              (unsigned long long)victim->bytes, dev, self ? self->name : "-");
    if (vram__offload_locked(victim, 1) < 0) victim->evict_skip = seq;
    return 1;
}

/* Describes who holds a device's memory, for an out-of-memory message; an
 * idle model whose eviction failed in charge sequence seq says why. */
static void describe_holders(vram_manager *m, int dev, const vram_model *self, uint64_t seq,
                             char *buf, size_t len)
{
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < m->nmodels && n + 1 < len; i++) {
        vram_model *c = m->models[i];
        if (c == self || c->device != dev || c->state == VRAM_STATE_UNLOADED ||
            c->state == VRAM_STATE_CPU)
            continue;
        int w;
        if (c->evict_skip == seq && c->leases == 0 && c->last_error[0])
            w = snprintf(buf + n, len - n, "%s%s (idle, but evicting it failed: %s)",
                         n ? ", " : "", c->name, c->last_error);
        else
            w = snprintf(buf + n, len - n, "%s%s (%s, %d lease%s)", n ? ", " : "", c->name,
                         vram_state_name(c->state), c->leases, c->leases == 1 ? "" : "s");
        if (w < 0) break;
        n += (size_t)w;
        if (n >= len) n = len - 1;
    }
    if (!buf[0]) snprintf(buf, len, "nothing");
}

/* Charges bytes to dev's budget, evicting idle models (LRU first) and then
 * waiting up to evict_wait seconds for memory to free. Lock held; may be
 * dropped. VRAM_ENOMEM with a message naming the holders when it can't. */
int vram__charge(vram_manager *m, int dev, uint64_t bytes, vram_model *self)
{
    vram_device *d = &m->devs[dev];
    if (bytes > d->budget)
        return vram__errorf(VRAM_ENOMEM,
                            "model '%s' needs %s on device %d, more than its budget of %s "
                            "(VRAM_GPU_BUDGET)",
                            self->name, vram__human(bytes).s, dev, vram__human(d->budget).s);
    uint64_t seq = ++m->charge_seq;
    double deadline = -1;
    while (d->used + bytes > d->budget) {
        if (m->stopping) return vram__errorf(VRAM_ECANCELED, "manager is shutting down");
        if (evict_one(m, dev, self, seq)) continue;
        double now = vram__now();
        if (deadline < 0) deadline = now + m->cfg.evict_wait;
        if (now >= deadline) {
            char holders[512];
            describe_holders(m, dev, self, seq, holders, sizeof holders);
            return vram__errorf(VRAM_ENOMEM,
                                "model '%s' needs %s on device %d: %s of the %s budget in "
                                "use by %s; nothing idle to evict after waiting %.1f s",
                                self->name, vram__human(bytes).s, dev, vram__human(d->used).s,
                                vram__human(d->budget).s, holders, m->cfg.evict_wait);
        }
        vram__mem_wait(m, deadline);
    }
    d->used += bytes;
    return 0;
}

/* Maps a's range. When the backend itself reports no memory (full,
 * or other processes on a real GPU) it evicts idle models, least recently
 * used first, and retries; with nothing idle it asks the node (vramd) once
 * to free memory in other processes, then waits for memory up to
 * evict_wait seconds like a budget charge does. Lock NOT held. */
int vram__map_with_evict(vram_model *model, vram_alloc *a)
{
    vram_manager *m = model->m;
    double deadline = -1;
    pthread_mutex_lock(&m->lock);
    uint64_t seq = ++m->charge_seq; /* one sequence: a victim that failed is not tried again */
    pthread_mutex_unlock(&m->lock);
    int asked = 0;
    for (;;) {
        int rc = vram__backend_map(m->backend, &a->buf);
        if (rc != VRAM_ENOMEM) return rc;
        char msg[VRAM_ERRMSG_MAX];
        snprintf(msg, sizeof msg, "%s", vram__last_error());
        pthread_mutex_lock(&m->lock);
        int e = m->stopping ? 0 : evict_one(m, a->buf.device, model, seq);
        if (!e && !asked && !m->stopping) {
            /* nothing of ours is idle: ask the node to free memory in other
             * processes (once per map), then map again */
            asked = 1;
            pthread_mutex_unlock(&m->lock);
            if (vram__node_ask(m, a->buf.device, a->buf.reserved, model->name) > 0) continue;
            pthread_mutex_lock(&m->lock);
        }
        if (!e) {
            double now = vram__now();
            if (deadline < 0) deadline = now + m->cfg.evict_wait;
            if (now >= deadline || m->stopping) {
                pthread_mutex_unlock(&m->lock);
                return vram__errorf(VRAM_ENOMEM, "%s; no idle model left to evict after waiting "
                                                 "%.1f s",
                                    msg, m->cfg.evict_wait);
            }
            vram__mem_wait(m, deadline);
        }
        pthread_mutex_unlock(&m->lock);
    }
}

/* Adds one device range of bytes to a model in LOADING, owned by the
 * caller: reserve, charge, map. Lock NOT held. On failure nothing is left. */
int vram__alloc_range(vram_model *model, size_t bytes, vram_alloc **out)
{
    vram_manager *m = model->m;
    vram_backend *b = m->backend;
    vram_buf buf;
    memset(&buf, 0, sizeof buf);
    int rc = vram__backend_reserve(b, model->device, bytes, &buf);
    if (rc < 0) return rc;

    pthread_mutex_lock(&m->lock);
    if (model->nallocs == model->cap) {
        size_t cap = model->cap ? model->cap * 2 : 4;
        vram_alloc *na = realloc(model->allocs, cap * sizeof *na);
        if (!na) {
            pthread_mutex_unlock(&m->lock);
            vram__backend_unreserve(b, &buf);
            return vram__errorf(VRAM_EHOSTMEM, "out of host memory for the allocation table");
        }
        model->allocs = na;
        model->cap = cap;
    }
    rc = vram__charge(m, model->device, buf.reserved, model);
    if (rc < 0) {
        pthread_mutex_unlock(&m->lock);
        vram__backend_unreserve(b, &buf);
        return rc;
    }
    size_t idx = model->nallocs++;
    vram_alloc *a = &model->allocs[idx];
    memset(a, 0, sizeof *a);
    a->buf = buf;
    a->charged = 1;
    pthread_mutex_unlock(&m->lock);

    rc = vram__map_with_evict(model, a);
    pthread_mutex_lock(&m->lock);
    if (rc < 0) {
        vram_buf cur = a->buf; /* map may have updated the backend's state */
        vram__uncharge(m, a);
        model->nallocs--;
        pthread_mutex_unlock(&m->lock);
        vram__backend_unreserve(b, &cur);
        return rc;
    }
    /* the realloc above may move the table only under the owner, which we are */
    m->devs[model->device].mapped += a->buf.size;
    model->bytes += a->buf.size;
    pthread_mutex_unlock(&m->lock);
    *out = a;
    return 0;
}

/* Frees every allocation and backup of a model owned by the caller (in a
 * transitional state). Lock NOT held on entry; takes it for accounting. */
void vram__free_all(vram_model *model)
{
    vram_manager *m = model->m;
    vram_backend *b = m->backend;
    for (size_t i = 0; i < model->nallocs; i++) {
        vram_alloc *a = &model->allocs[i];
        vram_buf buf = a->buf; /* unreserve may clear a->buf */
        void *backup = a->backup;
        vram__backend_unreserve(b, &a->buf);
        if (backup) vram__backend_host_free(b, backup, buf.size);
        pthread_mutex_lock(&m->lock);
        if (buf.mapped) m->devs[buf.device].mapped -= buf.size;
        if (a->charged) {
            m->devs[buf.device].used -= buf.reserved;
            a->charged = 0;
            vram__mem_broadcast(m);
        }
        if (backup) m->host_used -= buf.size;
        pthread_mutex_unlock(&m->lock);
        a->backup = NULL;
    }
    pthread_mutex_lock(&m->lock);
    model->nallocs = 0;
    model->bytes = 0;
    model->has_backup = 0;
    pthread_mutex_unlock(&m->lock);
}

/* Releases least recently used CPU copies (never self) until need more
 * bytes of backup fit the host budget. Lock held; may be dropped. */
int vram__make_host_room(vram_manager *m, uint64_t need, vram_model *self)
{
    if (!m->host_budget) return 0;
    while (m->host_used + need > m->host_budget) {
        vram_model *victim = NULL;
        for (size_t i = 0; i < m->nmodels; i++) {
            vram_model *c = m->models[i];
            if (c == self || c->state != VRAM_STATE_CPU || c->readers > 0) continue;
            if (!victim || c->last_used < victim->last_used) victim = c;
        }
        if (!victim)
            return vram__errorf(VRAM_EHOSTMEM,
                                "backup of '%s' needs %s but the host budget "
                                "(VRAM_HOST_BUDGET) has %s of %s in use",
                                self->name, vram__human(need).s, vram__human(m->host_used).s,
                                vram__human(m->host_budget).s);
        vram__log(VRAM_LOG_INFO, "host-evict model=%s bytes=%llu for=%s", victim->name,
                  (unsigned long long)victim->bytes, self->name);
        vram__release_locked(victim);
    }
    return 0;
}
