/* core.h - the manager and model structures and the lock discipline that guards them. */
#ifndef VRAM_CORE_H
#define VRAM_CORE_H

#include <pthread.h>
#include <stdint.h>

#include "backend/backend.h"
#include "base/base.h"
#include "loader/source.h"
#include "vram.h"

/*
 * LOCK DISCIPLINE
 *
 * 1. One mutex per manager, m->lock, guards every field of the manager and
 *    of its models, except where noted below. It is held only for short,
 *    non-blocking bookkeeping: never across a backend call, a copy, a file
 *    read, a user load callback or a log line's formatting of large data.
 *
 * 2. Transitional states (LOADING, OFFLOADING, RESTORING, RELEASING) are
 *    ownership tokens. The thread that moves a model into one (under the
 *    lock) is its owner: only it touches the model's allocations, buffers
 *    and backups, without the lock, until it moves the model to a final
 *    state (GPU, CPU, UNLOADED) under the lock and broadcasts model->cond.
 *    Everyone else who needs the model waits on model->cond.
 *
 * 3. A lease (model->leases > 0, state GPU) guarantees that the model's
 *    device memory stays mapped: no one may start an offload or release
 *    while leases > 0. Readers of a backup in the CPU state (checksums)
 *    count in model->readers; while any is there the model stays on the
 *    CPU (acquire and release wait until it drops to 0).
 *
 * 4. Device budget: dev->used counts the bytes charged by models whose
 *    memory is mapped or about to be. A thread charges before mapping and
 *    uncharges after unmapping, both under the lock. When a charge does not
 *    fit, the charging thread evicts least-recently-used idle models itself
 *    (taking ownership of each as in rule 2), or waits on m->mem_cond.
 *
 * 5. Condition variables: model->cond (state and lease changes of that
 *    model), m->mem_cond (device memory may have become available),
 *    m->monitor_cond (the monitor's next deadline may have moved). All use
 *    m->lock. Signals are sent only when someone waits (counted), which keeps
 *    the hot acquire/end path free of system calls.
 *
 * 6. A pending offload or release (model->pending, asked for under a lease)
 *    goes first: new acquires wait on model->cond until the last lease has
 *    carried it out, then restore or load. A background action that fails
 *    (the monitor's offload, an eviction) is not retried at once: the
 *    monitor waits model->retry_at (doubling back-off), an eviction skips
 *    the model for the rest of its charge (evict_skip). Every loop that
 *    drops and retakes the lock checks m->stopping.
 *
 * 7. progress_done/progress_total are atomics (read without the lock).
 *    The source (model->source) and its tensor table are fixed at register
 *    time; dev_ptr fields of the table change only under the lock.
 */

typedef struct vram_alloc {
    vram_buf buf;   /* the device range; buf.mapped tells if memory is behind it */
    void *backup;   /* host backup (pinned), allocated once, freed on release */
    int charged;    /* buf.reserved is counted in its device's budget */
} vram_alloc;

enum { PENDING_OFFLOAD = 1u, PENDING_RELEASE = 2u };

struct vram_model {
    vram_manager *m;
    char *name;

    /* options */
    vram_source *source; /* NULL for callback models */
    vram_load_fn load;
    void *load_user;
    double idle_timeout;    /* < 0: manager's */
    double release_timeout; /* < 0: manager's */
    int immediate_offload;
    int device;

    /* state */
    vram_state state;
    int leases;
    int readers;
    int waiters;           /* threads waiting on cond */
    pthread_cond_t cond;
    unsigned pending;      /* PENDING_* deferred to the last lease's end */
    double last_used;      /* clock at the end of the last lease (or load) */
    double cpu_since;      /* clock when it last reached the CPU state */
    uint64_t load_gen;     /* counts finished loads, to share one failure */
    int last_load_rc;
    pthread_t owner;       /* the thread in a transitional state (LOADING: the loader) */
    uint64_t evict_skip;   /* charge sequence in which evicting it failed */
    double retry_at;       /* clock before which the monitor does not retry a failed offload */
    double retry_delay;    /* back-off after the last failed background offload; 0: none */
    int offload_failing;   /* its last offload failed (a repeat of the same error logs quietly) */
    int node_refs;         /* holds by the node thread carrying out an order (unregister waits) */

    vram_alloc *allocs;
    size_t nallocs, cap;
    uint64_t bytes;        /* sum of allocation sizes */
    int has_backup;        /* backups hold the model's bytes (CPU state) */

    /* counters */
    uint64_t loads, offloads, restores, releases, evictions, failures;
    double last_load_s, last_offload_s, last_restore_s;
    double last_load_gbps, last_offload_gbps, last_restore_gbps;
    double total_load_s, total_offload_s, total_restore_s;
    char last_error[VRAM_ERRMSG_MAX];

    uint64_t progress_done, progress_total; /* atomics */
};

typedef struct vram_device {
    vram_dev_info info;
    uint64_t budget;
    uint64_t used;     /* charged bytes */
    uint64_t mapped;   /* bytes of model memory mapped (size, not reserved) */
} vram_device;

struct vram_manager {
    pthread_mutex_t lock;
    vram_config cfg;
    vram_backend *backend;
    int ndev;
    vram_device *devs;

    uint64_t host_budget; /* 0 = unlimited */
    uint64_t host_used;   /* bytes of backups */

    double idle_timeout;
    double release_timeout;

    vram_model **models;
    size_t nmodels, cap;

    pthread_cond_t mem_cond;
    int mem_waiters;
    uint64_t charge_seq;

    pthread_t monitor;
    int monitor_started;
    int monitor_running;
    int stopping;
    pthread_cond_t monitor_cond;
    double monitor_next;  /* the monitor's planned wake-up (clock), INFINITY when none */
    int monitor_waiting;

    struct vram__node *node; /* the node socket's member side (node.c); NULL when off */
};

struct vram_lease {
    vram_model *model;
};

/* The manager's clock (a test's fake one, or monotonic seconds). */
double vram__clock(vram_manager *m);

/* Effective timeouts of a model (its own, or the manager's). Lock held. */
double vram__idle_timeout(const vram_model *model);
double vram__release_timeout(const vram_model *model);

/* Model transitions used by the monitor (model.c). Lock held on entry and
 * on return; may drop it while working. Returns 0 or a negative code. */
int vram__offload_locked(vram_model *model, int evicting);
int vram__release_locked(vram_model *model);




/* Wakes threads waiting for device memory (only when some wait). Lock held. */
static inline void vram__mem_broadcast(vram_manager *m)
{
    if (m->mem_waiters > 0) pthread_cond_broadcast(&m->mem_cond);
}

/* Checks a timeout (vram__seconds_problem), setting the error. 0 or VRAM_EINVAL. */
int vram__check_seconds(double s);
/* Frees a model that is unloaded and known to no one any more (registry.c). */
void vram__model_free(vram_model *model);

/* The idle monitor thread's body (monitor.c); arg is the manager. */
void *vram__monitor_main(void *arg);

/* Budgets and eviction (budget.c). Lock held unless said otherwise. */

/* Gives a's charge back to its device's budget. */
void vram__uncharge(vram_manager *m, vram_alloc *a);
/* Waits on m->mem_cond for at most min(0.25 s, until deadline). */
void vram__mem_wait(vram_manager *m, double deadline);
/* Charges bytes to dev's budget, evicting idle models (LRU first) and then
 * waiting up to evict_wait seconds for memory to free; may drop the lock.
 * VRAM_ENOMEM with a message naming the holders when it can't. */
int vram__charge(vram_manager *m, int dev, uint64_t bytes, vram_model *self);
/* Maps a's range, evicting idle models and retrying when the backend has no
 * memory. Lock NOT held. */
int vram__map_with_evict(vram_model *model, vram_alloc *a);
/* Adds one device range of bytes to a model in LOADING, owned by the
 * caller: reserve, charge, map. Lock NOT held. On failure nothing is left. */
int vram__alloc_range(vram_model *model, size_t bytes, vram_alloc **out);
/* Frees every allocation and backup of a model owned by the caller. Lock
 * NOT held on entry; takes it for accounting. */
void vram__free_all(vram_model *model);
/* Makes room for need bytes of backups under the host budget by releasing
 * least recently used CPU copies (never self). */
int vram__make_host_room(vram_manager *m, uint64_t need, vram_model *self);

/* Registry (registry.c): a model by name, held against unregister until
 * unhold (for the node thread, which acts on names). Lock NOT held. */
vram_model *vram__model_hold(vram_manager *m, const char *name);
void vram__model_unhold(vram_model *model);

/* The node socket's member side (node.c). Its own lock, n->lock, is never
 * taken with m->lock held, nor m->lock with n->lock held: the node thread
 * uses only the public API on the manager.
 *
 * start: joins VRAM_NODE_SOCKET (retrying while it is absent) unless it is
 * "off"; a thread reports the models. stop: leaves and joins the thread
 * (m->node stays valid, so notify from the monitor is harmless); free: at
 * the very end of the manager's destroy, when no other thread is left.
 * notify: a model changed (a registration, a final state): report soon;
 * any thread, with or without m->lock (one write to an eventfd, only
 * while joined). ask: an acquire of model cannot map bytes on dev; asks
 * vramd to free that much in other processes and waits for the answer
 * (bounded). Lock NOT held. Returns the bytes vramd freed (0: none, not
 * joined, or the device is not shared). */
int vram__node_start(vram_manager *m);
void vram__node_stop(vram_manager *m);
void vram__node_free(vram_manager *m);
void vram__node_notify(vram_manager *m);
uint64_t vram__node_ask(vram_manager *m, int dev, uint64_t bytes, const char *model);

#endif /* VRAM_CORE_H */
