/* node.c - vramd's node socket: members join, report their models, and free memory for each other, least recently used first. */
#include "server/node.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "base/base.h"
#include "base/wire.h"

/*
 * THREADS AND LOCKS
 *
 * One thread (node_main) owns the listening socket and every member's
 * socket: it accepts, reads and parses lines, and writes what other threads
 * queued in a member's out buffer. An eviction (a member's need) runs in a
 * job thread of its own, and an order from HTTP or MCP in the requesting
 * thread: both queue an order line, then wait on n->cond for its done.
 *
 * n->lock guards everything in struct vram_node and its members. It is held
 * for bookkeeping only, never across a system call that can block (sockets
 * are non-blocking; the waits are on n->cond). Nothing else is locked with
 * it held, and no manager lock is ever taken here: members are other
 * processes (or this one's manager through its own socket connection).
 *
 * A member is freed only by the node thread, under the lock; other threads
 * name members by id and look them up again after every wait.
 */

#define NODE_MEMBERS_MAX 64
#define NODE_MODELS_MAX 1024   /* per member */
#define NODE_DEVICES_MAX 16
#define NODE_OUT_MAX (1u << 20) /* queued bytes for a member that does not read */
#define NODE_HELLO_WAIT 5.0
#define NODE_ACK_WAIT 2.0      /* an owner acknowledges an order within this, or is skipped */
#define NODE_EVICT_BOUND 30.0  /* one need, in all (members wait 35 s): copies of large models */
#define NODE_JOBS_MAX 8
#define NODE_RATE 1000.0       /* lines per second a member may send, */
#define NODE_BURST 4000.0      /* in bursts of this many */
#define NODE_EVENTS 32

typedef struct nmodel {
    char name[VRAM_NAME_MAX + 8];
    int dev;
    char state[16];
    uint64_t bytes;
    long leases;
    double last_used; /* vramd's clock */
    double idle_timeout, release_timeout;
    int immediate;
    char source[VRAM_STR_MAX];
    char error[512];
} nmodel;

typedef struct member {
    int fd;
    long id;
    long pid;       /* as vramd sees it; else the one the member says (another pid namespace) */
    int pid_seen;   /* pid came from the kernel (SO_PEERCRED), so it names the process */
    long uid, gid;
    char name[64];
    char backend[16];
    int hello;
    double joined;
    int ndev;
    char uuid[NODE_DEVICES_MAX][64];
    uint64_t total[NODE_DEVICES_MAX];
    nmodel *models;
    size_t nmodels, cap;
    vram__wire_reader rd;
    char *out;
    size_t outn, outcap;
    double tokens, tok_at;
    int asking;
    uint64_t given_bytes, given_count, asked_count;
    int closing; /* cut off: closed by the node thread at its next turn */
    char close_why[128];
} member;

typedef struct order {
    uint64_t id;
    long member;
    int acked, done, rc;
    uint64_t freed; /* device bytes the owner gave back */
    char msg[VRAM_ERRMSG_MAX];
} order;

typedef struct nevent {
    double at;
    char model[VRAM_NAME_MAX + 8], owner[64], asker[64], for_model[VRAM_NAME_MAX + 8];
    long owner_pid, asker_pid;
    uint64_t bytes;
} nevent;

struct vram_node {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int lfd, wake_fd;
    char path[108];
    pthread_t thread;
    int stopping;
    member *members[NODE_MEMBERS_MAX];
    long next_member;
    uint64_t next_order;
    order *orders[64];
    int jobs; /* evictions running */
    struct job_slot {
        pthread_t thread;
        int used, finished;
    } job[NODE_JOBS_MAX];
    nevent ev[NODE_EVENTS];
    int nev, evpos;
};

static pthread_mutex_t g_current_lock = PTHREAD_MUTEX_INITIALIZER;
static vram_node *g_current;

vram_node *vram__node_current(void)
{
    pthread_mutex_lock(&g_current_lock);
    vram_node *n = g_current;
    pthread_mutex_unlock(&g_current_lock);
    return n;
}

static void wake(vram_node *n)
{
    uint64_t one = 1;
    ssize_t w = write(n->wake_fd, &one, sizeof one);
    (void)w;
}

static member *member_by_id(vram_node *n, long id)
{
    for (int i = 0; i < NODE_MEMBERS_MAX; i++)
        if (n->members[i] && n->members[i]->id == id && !n->members[i]->closing)
            return n->members[i];
    return NULL;
}

/* A member by its reference in model ids: "PID" when vramd sees its pid,
 * else "mID" (a process in another pid namespace, whose own pid may repeat
 * across containers). */
static member *member_by_ref(vram_node *n, const char *ref)
{
    int by_id = ref[0] == 'm';
    char *end = NULL;
    long v = strtol(ref + by_id, &end, 10);
    if (!ref[by_id] || *end || v <= 0) return NULL;
    for (int i = 0; i < NODE_MEMBERS_MAX; i++) {
        member *mb = n->members[i];
        if (mb && mb->hello && !mb->closing &&
            (by_id ? mb->id == v : (mb->pid_seen && mb->pid == v)))
            return mb;
    }
    return NULL;
}

static void member_ref(const member *mb, char *buf, size_t len)
{
    if (mb->pid_seen)
        snprintf(buf, len, "%ld", mb->pid);
    else
        snprintf(buf, len, "m%ld", mb->id);
}

/* Queues a line for member mb; a member whose queue overflows is cut off.
 * Lock held. */
static int queue_line(vram_node *n, member *mb, vram__wire_out *o)
{
    long len = vram__wire_end(o);
    if (len < 0) return -1;
    if (mb->outn + (size_t)len > NODE_OUT_MAX) {
        mb->closing = 1;
        snprintf(mb->close_why, sizeof mb->close_why, "it does not read what vramd sends");
        wake(n);
        return -1;
    }
    if (mb->outn + (size_t)len > mb->outcap) {
        size_t cap = mb->outcap ? mb->outcap : 4096;
        while (cap < mb->outn + (size_t)len) cap *= 2;
        char *no = realloc(mb->out, cap);
        if (!no) return -1;
        mb->out = no;
        mb->outcap = cap;
    }
    memcpy(mb->out + mb->outn, o->buf, (size_t)len);
    mb->outn += (size_t)len;
    wake(n);
    return 0;
}

static void cut_off(member *mb, const char *why)
{
    if (mb->closing) return;
    mb->closing = 1;
    snprintf(mb->close_why, sizeof mb->close_why, "%s", why);
}

/* ---- orders ---- */

/* Sends an order to member id and waits for its done (dropping the lock
 * while waiting); *freed (when not NULL) gets the device bytes the owner
 * gave back. Lock held. */
static int order_locked(vram_node *n, long id, const char *verb, const char *name,
                        const char *key, const char *value, double timeout, char *msg,
                        size_t len, uint64_t *freed)
{
    if (freed) *freed = 0;
    member *mb = member_by_id(n, id);
    int slot = -1;
    for (int i = 0; i < 64 && slot < 0; i++)
        if (!n->orders[i]) slot = i;
    if (!mb || slot < 0 || n->stopping) {
        snprintf(msg, len, "%s", !mb ? "the process has left the node" : "vramd is busy");
        return !mb ? VRAM_ENOENT : VRAM_EBUSY;
    }
    order od = {++n->next_order, id, 0, 0, 0, 0, ""};
    vram__wire_out o;
    vram__wire_begin(&o, verb);
    vram__wire_uint(&o, "id", od.id);
    vram__wire_str(&o, "name", name);
    if (key) vram__wire_str(&o, key, value);
    if (queue_line(n, mb, &o) < 0) {
        snprintf(msg, len, "the process does not read its socket");
        return VRAM_EIO;
    }
    n->orders[slot] = &od;
    /* the owner acknowledges at once (then carries it out, which may take
     * seconds): no ack within NODE_ACK_WAIT means it does not answer */
    struct timespec ack_ts, done_ts;
    vram__deadline_after(&ack_ts, timeout < NODE_ACK_WAIT ? timeout : NODE_ACK_WAIT);
    vram__deadline_after(&done_ts, timeout);
    int rc = 0;
    while (!od.done && !n->stopping && member_by_id(n, id) && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&n->cond, &n->lock, od.acked ? &done_ts : &ack_ts);
    n->orders[slot] = NULL;
    if (od.done) {
        snprintf(msg, len, "%s", od.msg);
        if (freed) *freed = od.freed;
        return od.rc;
    }
    snprintf(msg, len, "%s", rc != ETIMEDOUT ? "the process left the node"
                             : od.acked      ? "the process did not finish in time"
                                             : "the process did not answer in time");
    return rc == ETIMEDOUT ? VRAM_ETIMEDOUT : VRAM_ENOENT;
}

int vram__node_order(vram_node *n, long member_id, const char *name, const char *verb,
                     const char *key, const char *value, double timeout, char *msg, size_t len,
                     uint64_t *freed)
{
    if (freed) *freed = 0;
    if (!n) {
        snprintf(msg, len, "no node socket in this process");
        return VRAM_ENOENT;
    }
    pthread_mutex_lock(&n->lock);
    int rc = order_locked(n, member_id, verb, name, key, value, timeout, msg, len, freed);
    pthread_mutex_unlock(&n->lock);
    return rc;
}

int vram__node_remote_id(vram_node *n, const char *id, char *name, size_t cap, long *member_id)
{
    const char *at = id ? strrchr(id, '@') : NULL;
    if (!n || !at || at == id || !at[1] || (size_t)(at - id) >= cap) return 0;
    pthread_mutex_lock(&n->lock);
    member *mb = member_by_ref(n, at + 1);
    int remote = mb && !(mb->pid_seen && mb->pid == (long)getpid());
    if (remote) *member_id = mb->id;
    pthread_mutex_unlock(&n->lock);
    if (!remote) return 0;
    memcpy(name, id, (size_t)(at - id));
    name[at - id] = '\0';
    return 1;
}

/* ---- eviction across processes ---- */

typedef struct evict_job {
    vram_node *n;
    int slot;
    long asker;
    uint64_t ask_id;
    char uuid[64];
    uint64_t bytes;
    char for_model[VRAM_NAME_MAX + 8];
} evict_job;

typedef struct tried {
    long member;
    char name[VRAM_NAME_MAX + 8];
} tried;

static int was_tried(const tried *t, int nt, long mid, const char *name)
{
    for (int i = 0; i < nt; i++)
        if (t[i].member == mid && strcmp(t[i].name, name) == 0) return 1;
    return 0;
}

/* The least recently used model that may go: on the device uuid, of a
 * member other than the asker, on the device, not kept resident (idle
 * timeout 0), not tried yet; models reported without a lease first. A
 * member reports lease changes only every half second (its hot path never
 * touches the socket), so a model reported under a lease may be idle by
 * now: it is asked last, and its owner refuses it (VRAM_NOWAIT) if a lease
 * still holds it. Lock held. */
static const nmodel *pick_victim(vram_node *n, const evict_job *j, const tried *t, int nt,
                                 member **owner)
{
    const nmodel *best = NULL;
    for (int i = 0; i < NODE_MEMBERS_MAX; i++) {
        member *mb = n->members[i];
        if (!mb || !mb->hello || mb->closing || mb->id == j->asker) continue;
        for (size_t k = 0; k < mb->nmodels; k++) {
            const nmodel *c = &mb->models[k];
            if (c->dev < 0 || c->dev >= mb->ndev || strcmp(mb->uuid[c->dev], j->uuid) != 0 ||
                strcmp(c->state, "gpu") != 0 || c->idle_timeout == 0 ||
                was_tried(t, nt, mb->id, c->name))
                continue;
            if (!best || (c->leases == 0) > (best->leases == 0) ||
                ((c->leases == 0) == (best->leases == 0) && c->last_used < best->last_used)) {
                best = c;
                *owner = mb;
            }
        }
    }
    return best;
}

static void note_event(vram_node *n, const member *owner, const char *model, uint64_t bytes,
                       const evict_job *j)
{
    nevent *e = &n->ev[n->evpos];
    n->evpos = (n->evpos + 1) % NODE_EVENTS;
    if (n->nev < NODE_EVENTS) n->nev++;
    memset(e, 0, sizeof *e);
    e->at = vram__now();
    snprintf(e->model, sizeof e->model, "%s", model);
    snprintf(e->owner, sizeof e->owner, "%s", owner->name);
    e->owner_pid = owner->pid;
    e->bytes = bytes;
    snprintf(e->for_model, sizeof e->for_model, "%s", j->for_model);
    member *asker = member_by_id(n, j->asker);
    snprintf(e->asker, sizeof e->asker, "%s", asker ? asker->name : "?");
    e->asker_pid = asker ? asker->pid : 0;
}

/* Offloads one victim through its owner. Lock held (dropped while the
 * owner works). Returns the bytes freed. */
static uint64_t evict_victim(vram_node *n, const evict_job *j, member *owner, const nmodel *v,
                             double deadline)
{
    char name[VRAM_NAME_MAX + 8], oname[64], msg[VRAM_ERRMSG_MAX];
    snprintf(name, sizeof name, "%s", v->name);
    snprintf(oname, sizeof oname, "%s", owner->name);
    long oid = owner->id, opid = owner->pid;
    uint64_t bytes = 0; /* what the owner says it freed, not what it last reported */
    double t0 = vram__now(), left = deadline - t0;
    int rc = order_locked(n, oid, "offload", name, NULL, NULL, left, msg, sizeof msg, &bytes);
    double secs = vram__now() - t0;
    member *asker = member_by_id(n, j->asker);
    if (rc == 0 && bytes == 0) {
        rc = VRAM_ESTATE;
        snprintf(msg, sizeof msg, "it was no longer on the device");
    }
    if (rc == 0) {
        member *o = member_by_id(n, oid);
        if (o) o->given_bytes += bytes, o->given_count++;
        if (o) note_event(n, o, name, bytes, j);
        vram_log(VRAM_LOG_INFO, "node-evict model=%s owner=%s pid=%ld bytes=%llu seconds=%.3f "
                 "gbps=%.2f for=%s asker=%s pid=%ld device=%s", name, oname, opid,
                 (unsigned long long)bytes, secs, secs > 0 ? (double)bytes / secs / 1e9 : 0.0,
                 j->for_model, asker ? asker->name : "?", asker ? asker->pid : 0L, j->uuid);
        return bytes;
    }
    vram_log(VRAM_LOG_INFO, "node-evict-skipped model=%s owner=%s pid=%ld error=%s: %s", name,
             oname, opid, vram_err_name(rc), msg);
    return 0;
}

static void *evict_main(void *arg)
{
    evict_job *j = arg;
    vram_node *n = j->n;
    tried t[64];
    int nt = 0;
    uint64_t freed = 0;
    double deadline = vram__now() + NODE_EVICT_BOUND;
    pthread_mutex_lock(&n->lock);
    while (freed < j->bytes && nt < 64 && !n->stopping && vram__now() < deadline) {
        member *owner = NULL;
        const nmodel *v = pick_victim(n, j, t, nt, &owner);
        if (!v) break;
        t[nt].member = owner->id;
        snprintf(t[nt].name, sizeof t[nt].name, "%s", v->name);
        nt++;
        freed += evict_victim(n, j, owner, v, deadline);
    }
    member *asker = member_by_id(n, j->asker);
    if (asker) {
        asker->asking = 0;
        vram__wire_out o;
        vram__wire_begin(&o, "freed");
        vram__wire_uint(&o, "id", j->ask_id);
        vram__wire_uint(&o, "bytes", freed);
        queue_line(n, asker, &o);
    }
    n->jobs--;
    n->job[j->slot].finished = 1; /* joined by the node thread (or stop) */
    pthread_cond_broadcast(&n->cond);
    pthread_mutex_unlock(&n->lock);
    free(j);
    return NULL;
}

/* ---- lines from members ---- */

static int split_list(const char *text, char out[][64], int max)
{
    int k = 0;
    const char *p = text;
    while (k < max) {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        if (len >= 64) return -1;
        memcpy(out[k], p, len);
        out[k][len] = '\0';
        k++;
        if (!c) break;
        p = c + 1;
    }
    return k;
}

static int on_hello(vram_node *n, member *mb, const vram__wire_msg *msg)
{
    long v = 0, pid = 0;
    const char *name = vram__wire_get(msg, "name"), *backend = vram__wire_get(msg, "backend");
    const char *devs = vram__wire_get(msg, "devices"), *tot = vram__wire_get(msg, "totals");
    if (mb->hello || vram__wire_int(msg, "v", 1, 1000, &v) < 0 || !name || !backend || !devs ||
        !tot)
        return -1;
    char totals[NODE_DEVICES_MAX][64];
    int nd = split_list(devs, mb->uuid, NODE_DEVICES_MAX);
    int nt = split_list(tot, totals, NODE_DEVICES_MAX);
    if (nd < 1 || nd != nt) return -1;
    for (int i = 0; i < nd; i++) {
        char *end = NULL;
        mb->total[i] = strtoull(totals[i], &end, 10);
        if (!totals[i][0] || *end) return -1;
    }
    mb->ndev = nd;
    if (mb->pid <= 0 && vram__wire_int(msg, "pid", 1, 1L << 30, &pid) == 0) mb->pid = pid;
    snprintf(mb->name, sizeof mb->name, "%s", name);
    vram__utf8_clean(mb->name);
    snprintf(mb->backend, sizeof mb->backend, "%s", backend);
    vram__utf8_clean(mb->backend);
    mb->hello = 1;
    vram__wire_out o;
    vram__wire_begin(&o, "welcome");
    vram__wire_uint(&o, "v", 1);
    vram__wire_uint(&o, "member", (uint64_t)mb->id);
    queue_line(n, mb, &o);
    vram_log(VRAM_LOG_INFO, "node join member=%ld name=%s pid=%ld uid=%ld backend=%s devices=%d",
             mb->id, mb->name, mb->pid, mb->uid, mb->backend, mb->ndev);
    return 0;
}

static nmodel *model_slot(member *mb, const char *name, int create)
{
    for (size_t i = 0; i < mb->nmodels; i++)
        if (strcmp(mb->models[i].name, name) == 0) return &mb->models[i];
    if (!create || mb->nmodels >= NODE_MODELS_MAX) return NULL;
    if (mb->nmodels == mb->cap) {
        size_t cap = mb->cap ? mb->cap * 2 : 8;
        nmodel *nm = realloc(mb->models, cap * sizeof *nm);
        if (!nm) return NULL;
        mb->models = nm;
        mb->cap = cap;
    }
    nmodel *s = &mb->models[mb->nmodels++];
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    return s;
}

static int on_model(member *mb, const vram__wire_msg *msg)
{
    static const char *const states[] = {"unloaded", "loading", "gpu", "offloading", "cpu",
                                         "restoring", "releasing", NULL};
    const char *name = vram__wire_get(msg, "name"), *state = vram__wire_get(msg, "state");
    long dev = 0, leases = 0;
    uint64_t bytes = 0;
    double idle = 0, it = 0, rt = 0;
    if (!name || !*name || strlen(name) > VRAM_NAME_MAX || !vram__utf8_valid(name) || !state ||
        vram__wire_int(msg, "dev", 0, mb->ndev - 1, &dev) < 0 ||
        vram__wire_u64(msg, "bytes", &bytes) < 0 ||
        vram__wire_int(msg, "leases", 0, 1L << 30, &leases) < 0 ||
        vram__wire_dbl(msg, "idle", &idle) < 0 || idle < 0 ||
        vram__wire_dbl(msg, "idle_timeout", &it) < 0 ||
        vram__wire_dbl(msg, "release_timeout", &rt) < 0)
        return -1;
    int known = 0;
    for (int i = 0; states[i]; i++) known |= strcmp(states[i], state) == 0;
    if (!known) return -1;
    nmodel *s = model_slot(mb, name, 1);
    if (!s) return -1; /* too many models: cut off */
    s->dev = (int)dev;
    snprintf(s->state, sizeof s->state, "%s", state);
    s->bytes = bytes;
    s->leases = leases;
    s->last_used = vram__now() - idle;
    s->idle_timeout = it;
    s->release_timeout = rt;
    const char *v = vram__wire_get(msg, "immediate");
    s->immediate = v && strcmp(v, "1") == 0;
    v = vram__wire_get(msg, "source");
    snprintf(s->source, sizeof s->source, "%s", v ? v : "");
    vram__utf8_clean(s->source);
    v = vram__wire_get(msg, "error");
    snprintf(s->error, sizeof s->error, "%s", v ? v : "");
    vram__utf8_clean(s->error);
    return 0;
}

static int on_need(vram_node *n, member *mb, const vram__wire_msg *msg)
{
    uint64_t id = 0, bytes = 0;
    long dev = 0;
    const char *for_model = vram__wire_get(msg, "for");
    if (vram__wire_u64(msg, "id", &id) < 0 || vram__wire_u64(msg, "bytes", &bytes) < 0 ||
        vram__wire_int(msg, "dev", 0, mb->ndev - 1, &dev) < 0)
        return -1;
    const char *why = NULL;
    if (bytes == 0 || bytes > mb->total[dev])
        why = "asks for more than the device holds";
    else if (!mb->uuid[dev][0])
        why = "its device is not shared (no UUID)";
    else if (mb->asking)
        why = "one request at a time";
    else if (n->jobs >= NODE_JOBS_MAX)
        why = "too many requests in flight";
    int slot = -1;
    for (int i = 0; i < NODE_JOBS_MAX && slot < 0 && !why; i++)
        if (!n->job[i].used) slot = i;
    if (!why && slot < 0) why = "too many requests in flight";
    evict_job *j = why ? NULL : calloc(1, sizeof *j);
    if (j) {
        j->n = n;
        j->slot = slot;
        j->asker = mb->id;
        j->ask_id = id;
        snprintf(j->uuid, sizeof j->uuid, "%s", mb->uuid[dev]);
        j->bytes = bytes;
        snprintf(j->for_model, sizeof j->for_model, "%s", for_model ? for_model : "");
        if (pthread_create(&n->job[slot].thread, NULL, evict_main, j) == 0) {
            n->job[slot].used = 1;
            n->job[slot].finished = 0;
            mb->asking = 1;
            mb->asked_count++;
            n->jobs++;
        } else {
            free(j);
            why = "cannot start a thread";
        }
    } else if (!why) {
        why = "out of host memory";
    }
    if (!why) return 0;
    vram_log(VRAM_LOG_WARN, "node need refused: member=%ld name=%s pid=%ld bytes=%llu: %s", mb->id,
             mb->name, mb->pid, (unsigned long long)bytes, why);
    vram__wire_out o;
    vram__wire_begin(&o, "freed");
    vram__wire_uint(&o, "id", id);
    vram__wire_uint(&o, "bytes", 0);
    queue_line(n, mb, &o);
    return 0;
}

static int on_ack(vram_node *n, member *mb, const vram__wire_msg *msg)
{
    uint64_t id = 0;
    if (vram__wire_u64(msg, "id", &id) < 0) return -1;
    for (int i = 0; i < 64; i++)
        if (n->orders[i] && n->orders[i]->id == id && n->orders[i]->member == mb->id) {
            n->orders[i]->acked = 1;
            pthread_cond_broadcast(&n->cond);
        }
    return 0;
}

static int on_done(vram_node *n, member *mb, const vram__wire_msg *msg)
{
    uint64_t id = 0;
    long rc = 0;
    if (vram__wire_u64(msg, "id", &id) < 0 || vram__wire_int(msg, "rc", -1000, 1000, &rc) < 0)
        return -1;
    const char *text = vram__wire_get(msg, "msg");
    for (int i = 0; i < 64; i++) {
        order *od = n->orders[i];
        if (!od || od->id != id || od->member != mb->id) continue;
        od->done = 1;
        od->rc = (int)rc;
        if (vram__wire_u64(msg, "freed", &od->freed) < 0) od->freed = 0;
        snprintf(od->msg, sizeof od->msg, "%s", text ? text : "");
        vram__utf8_clean(od->msg);
        pthread_cond_broadcast(&n->cond);
    }
    return 0;
}

/* One line of member mb. Lock held. -1 cuts the member off. */
static int on_line(vram_node *n, member *mb, char *line)
{
    double now = vram__now();
    mb->tokens += (now - mb->tok_at) * NODE_RATE;
    if (mb->tokens > NODE_BURST) mb->tokens = NODE_BURST;
    mb->tok_at = now;
    if (mb->tokens < 1) {
        cut_off(mb, "it sends more than 1000 lines a second");
        return -1;
    }
    mb->tokens -= 1;
    vram__wire_msg msg;
    if (vram__wire_parse(line, &msg) < 0) {
        cut_off(mb, "a malformed line");
        return -1;
    }
    int rc;
    if (strcmp(msg.verb, "hello") == 0)
        rc = on_hello(n, mb, &msg);
    else if (!mb->hello)
        rc = -1;
    else if (strcmp(msg.verb, "model") == 0)
        rc = on_model(mb, &msg);
    else if (strcmp(msg.verb, "drop") == 0) {
        const char *name = vram__wire_get(&msg, "name");
        nmodel *s = name ? model_slot(mb, name, 0) : NULL;
        if (s) *s = mb->models[--mb->nmodels];
        rc = name ? 0 : -1;
    } else if (strcmp(msg.verb, "need") == 0)
        rc = on_need(n, mb, &msg);
    else if (strcmp(msg.verb, "done") == 0)
        rc = on_done(n, mb, &msg);
    else if (strcmp(msg.verb, "ack") == 0)
        rc = on_ack(n, mb, &msg);
    else
        rc = -1;
    if (rc < 0) {
        char what[40];
        snprintf(what, sizeof what, "a bad '%.16s' line", msg.verb);
        cut_off(mb, what);
    }
    return rc;
}

/* ---- the node thread ---- */

static void member_free(vram_node *n, int slot)
{
    member *mb = n->members[slot];
    n->members[slot] = NULL;
    if (mb->hello)
        vram_log(VRAM_LOG_INFO, "node leave member=%ld name=%s pid=%ld models=%zu: %s", mb->id,
                 mb->name, mb->pid, mb->nmodels, mb->close_why[0] ? mb->close_why : "it left");
    if (mb->close_why[0] && strcmp(mb->close_why, "it closed the connection") != 0 &&
        strcmp(mb->close_why, "vramd stops") != 0)
        vram_log(VRAM_LOG_WARN, "node cut off member=%ld pid=%ld: %s", mb->id, mb->pid,
                 mb->close_why);
    close(mb->fd);
    free(mb->models);
    free(mb->out);
    free(mb);
    pthread_cond_broadcast(&n->cond); /* orders to it end at once */
}

static void accept_one(vram_node *n)
{
    int fd = accept4(n->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    struct ucred cr;
    socklen_t cl = sizeof cr;
    memset(&cr, 0, sizeof cr);
    getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl);
    int slot = -1;
    for (int i = 0; i < NODE_MEMBERS_MAX && slot < 0; i++)
        if (!n->members[i]) slot = i;
    member *mb = slot < 0 ? NULL : calloc(1, sizeof *mb);
    if (!mb) {
        vram_log(VRAM_LOG_WARN, "node: refusing pid=%ld: %d members already", (long)cr.pid,
                 NODE_MEMBERS_MAX);
        close(fd);
        return;
    }
    mb->fd = fd;
    mb->id = ++n->next_member;
    mb->pid = cr.pid; /* 0 when the peer is in another pid namespace: hello's then */
    mb->pid_seen = cr.pid > 0;
    mb->uid = cr.uid;
    mb->gid = cr.gid;
    mb->joined = mb->tok_at = vram__now();
    mb->tokens = NODE_BURST;
    n->members[slot] = mb;
}

/* Reads what member mb sent and handles its lines. */
static void read_member(vram_node *n, member *mb)
{
    size_t room;
    char *at = vram__wire_space(&mb->rd, &room);
    ssize_t r = room ? recv(mb->fd, at, room, MSG_DONTWAIT) : -1;
    pthread_mutex_lock(&n->lock);
    if (room == 0) {
        cut_off(mb, "a line longer than 4096 bytes");
    } else if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
        cut_off(mb, "it closed the connection");
    } else if (r > 0) {
        vram__wire_wrote(&mb->rd, (size_t)r);
        char *line;
        while (!mb->closing && (line = vram__wire_next(&mb->rd)) != NULL) on_line(n, mb, line);
    }
    pthread_mutex_unlock(&n->lock);
}

/* Writes queued lines; lock held (the socket does not block). */
static void flush_member(member *mb)
{
    if (!mb->outn || mb->closing) return;
    ssize_t w = send(mb->fd, mb->out, mb->outn, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (w < 0) {
        if (errno != EAGAIN && errno != EINTR) cut_off(mb, "it closed the connection");
        return;
    }
    memmove(mb->out, mb->out + w, mb->outn - (size_t)w);
    mb->outn -= (size_t)w;
}

/* Builds the poll set; closes members cut off. Lock held. */
static int poll_set(vram_node *n, struct pollfd *p, member **who)
{
    for (int i = 0; i < NODE_JOBS_MAX; i++)
        if (n->job[i].used && n->job[i].finished) { /* it has left the lock: exits at once */
            pthread_join(n->job[i].thread, NULL);
            n->job[i].used = 0;
        }
    int k = 0;
    p[k].fd = n->lfd, p[k].events = POLLIN, who[k++] = NULL;
    p[k].fd = n->wake_fd, p[k].events = POLLIN, who[k++] = NULL;
    double now = vram__now();
    for (int i = 0; i < NODE_MEMBERS_MAX; i++) {
        member *mb = n->members[i];
        if (!mb) continue;
        if (!mb->hello && now - mb->joined > NODE_HELLO_WAIT)
            cut_off(mb, "no hello within 5 s");
        if (mb->closing) {
            member_free(n, i);
            continue;
        }
        flush_member(mb);
        p[k].fd = mb->fd;
        p[k].events = (short)(POLLIN | (mb->outn ? POLLOUT : 0));
        who[k++] = mb;
    }
    return k;
}

static void *node_main(void *arg)
{
    vram_node *n = arg;
    struct pollfd p[NODE_MEMBERS_MAX + 2];
    member *who[NODE_MEMBERS_MAX + 2];
    for (;;) {
        pthread_mutex_lock(&n->lock);
        if (n->stopping) {
            pthread_mutex_unlock(&n->lock);
            break;
        }
        int k = poll_set(n, p, who);
        pthread_mutex_unlock(&n->lock);
        for (int i = 0; i < k; i++) p[i].revents = 0;
        if (poll(p, (nfds_t)k, 1000) <= 0) continue;
        if (p[1].revents) {
            uint64_t v;
            ssize_t r = read(n->wake_fd, &v, sizeof v);
            (void)r;
        }
        if (p[0].revents & POLLIN) {
            pthread_mutex_lock(&n->lock);
            accept_one(n);
            pthread_mutex_unlock(&n->lock);
        }
        for (int i = 2; i < k; i++)
            if (p[i].revents & (POLLIN | POLLHUP | POLLERR)) read_member(n, who[i]);
    }
    return NULL;
}

/* ---- start and stop ---- */

/* Makes path free for bind: its directory exists, nothing listens there
 * (a stale socket is removed). 0 or a VRAM_E* with the message set. */
static int prepare_path(const char *path)
{
    char dir[108];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        if (mkdir(dir, 0755) != 0 && errno != EEXIST)
            return vram_set_error(VRAM_EIO, "node socket %s: cannot create %s: %s", path, dir,
                                  strerror(errno));
    }
    struct stat st;
    if (lstat(path, &st) != 0) return 0;
    if (!S_ISSOCK(st.st_mode))
        return vram_set_error(VRAM_EIO, "node socket %s: the path exists and is not a socket",
                              path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int live = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    if (fd >= 0) close(fd);
    if (live)
        return vram_set_error(VRAM_EEXIST, "node socket %s: another vramd listens there", path);
    unlink(path);
    return 0;
}

static int listen_at(vram_node *n, const char *path)
{
    int rc = prepare_path(path);
    if (rc < 0) return rc;
    n->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    mode_t old = umask(0117); /* the socket is born 0660 */
    int ok = n->lfd >= 0 && bind(n->lfd, (struct sockaddr *)&sa, sizeof sa) == 0;
    umask(old);
    if (!ok || chmod(path, 0660) != 0 || listen(n->lfd, 64) != 0) {
        rc = vram_set_error(VRAM_EIO, "node socket %s: %s", path, strerror(errno));
        if (n->lfd >= 0) close(n->lfd);
        if (ok) unlink(path);
        return rc;
    }
    return 0;
}

int vram_node_start(const char *path, vram_node **out)
{
    if (out) *out = NULL;
    if (!path || !out) return vram_set_error(VRAM_EINVAL, "vram_node_start: path and out are required");
    if (!path[0] || strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return vram_set_error(VRAM_EINVAL, "node socket '%s': a path of 1-107 bytes is required",
                              path);
    vram_node *n = calloc(1, sizeof *n);
    if (!n) return vram_set_error(VRAM_EHOSTMEM, "out of host memory");
    snprintf(n->path, sizeof n->path, "%s", path);
    n->lfd = -1;
    int rc = listen_at(n, path);
    if (rc < 0) {
        free(n);
        return rc;
    }
    n->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    pthread_mutex_init(&n->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&n->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (n->wake_fd < 0 || pthread_create(&n->thread, NULL, node_main, n) != 0) {
        rc = vram_set_error(VRAM_EIO, "node socket %s: cannot start its thread", path);
        if (n->wake_fd >= 0) close(n->wake_fd);
        close(n->lfd);
        unlink(path);
        pthread_cond_destroy(&n->cond);
        pthread_mutex_destroy(&n->lock);
        free(n);
        return rc;
    }
    pthread_mutex_lock(&g_current_lock);
    g_current = n;
    pthread_mutex_unlock(&g_current_lock);
    vram_log(VRAM_LOG_INFO, "node socket=%s mode=0660: managers on this machine join here", path);
    *out = n;
    return 0;
}

void vram_node_stop(vram_node *n)
{
    if (!n) return;
    pthread_mutex_lock(&g_current_lock);
    if (g_current == n) g_current = NULL;
    pthread_mutex_unlock(&g_current_lock);
    pthread_mutex_lock(&n->lock);
    n->stopping = 1;
    pthread_cond_broadcast(&n->cond);
    pthread_mutex_unlock(&n->lock);
    wake(n);
    pthread_join(n->thread, NULL);
    for (int i = 0; i < NODE_JOBS_MAX; i++) /* evictions see stopping and end */
        if (n->job[i].used) pthread_join(n->job[i].thread, NULL);
    pthread_mutex_lock(&n->lock);
    for (int i = 0; i < NODE_MEMBERS_MAX; i++)
        if (n->members[i]) {
            cut_off(n->members[i], "vramd stops");
            member_free(n, i);
        }
    pthread_mutex_unlock(&n->lock);
    close(n->lfd);
    close(n->wake_fd);
    unlink(n->path);
    pthread_cond_destroy(&n->cond);
    pthread_mutex_destroy(&n->lock);
    free(n);
}

/* ---- the view ---- */

static json_t *model_view(const member *mb, const nmodel *c, double now)
{
    char id[VRAM_NAME_MAX + 32], ref[24];
    member_ref(mb, ref, sizeof ref);
    snprintf(id, sizeof id, "%s@%s", c->name, ref);
    int idle_known = strcmp(c->state, "unloaded") != 0 && c->leases == 0;
    return json_pack("{s:s, s:s, s:s, s:I, s:s, s:s, s:I, s:I, s:f, s:f, s:f, s:b, s:s, s:s}",
                     "id", id, "name", c->name, "owner", mb->name, "pid", (json_int_t)mb->pid,
                     "state", c->state, "device_uuid", c->dev < mb->ndev ? mb->uuid[c->dev] : "",
                     "device", (json_int_t)c->dev, "bytes", (json_int_t)c->bytes,
                     "idle_seconds", idle_known ? now - c->last_used : 0.0, "idle_timeout",
                     c->idle_timeout, "release_timeout", c->release_timeout, "immediate_offload",
                     c->immediate, "source", c->source, "last_error", c->error);
}

static json_t *member_view(const member *mb, double now)
{
    json_t *devs = json_array(), *models = json_array();
    for (int d = 0; d < mb->ndev; d++)
        json_array_append_new(devs, json_pack("{s:i, s:s, s:I}", "index", d, "uuid", mb->uuid[d],
                                              "total_bytes", (json_int_t)mb->total[d]));
    for (size_t k = 0; k < mb->nmodels; k++) {
        json_t *mv = model_view(mb, &mb->models[k], now);
        json_object_set_new(mv, "leases", json_integer(mb->models[k].leases));
        json_array_append_new(models, mv);
    }
    return json_pack("{s:I, s:I, s:I, s:I, s:s, s:s, s:b, s:f, s:I, s:I, s:I, s:o, s:o}",
                     "member", (json_int_t)mb->id, "pid", (json_int_t)mb->pid, "uid",
                     (json_int_t)mb->uid, "gid", (json_int_t)mb->gid, "name", mb->name,
                     "backend", mb->backend, "self", mb->pid_seen && mb->pid == (long)getpid(),
                     "joined_seconds", now - mb->joined, "evictions_given",
                     (json_int_t)mb->given_count, "bytes_given", (json_int_t)mb->given_bytes,
                     "requests", (json_int_t)mb->asked_count, "devices", devs, "models", models);
}

json_t *vram__node_view(vram_node *n)
{
    if (!n) return NULL;
    json_t *members = json_array(), *events = json_array();
    pthread_mutex_lock(&n->lock);
    double now = vram__now();
    for (int i = 0; i < NODE_MEMBERS_MAX; i++) {
        member *mb = n->members[i];
        if (mb && mb->hello && !mb->closing) json_array_append_new(members, member_view(mb, now));
    }
    for (int i = 0; i < n->nev; i++) {
        const nevent *e = &n->ev[(n->evpos - n->nev + i + NODE_EVENTS) % NODE_EVENTS];
        json_array_append_new(events, json_pack("{s:f, s:s, s:s, s:I, s:I, s:s, s:s, s:I}",
                                                "seconds_ago", now - e->at, "model", e->model,
                                                "owner", e->owner, "owner_pid",
                                                (json_int_t)e->owner_pid, "bytes",
                                                (json_int_t)e->bytes, "for", e->for_model,
                                                "asker", e->asker, "asker_pid",
                                                (json_int_t)e->asker_pid));
    }
    int jobs = n->jobs;
    pthread_mutex_unlock(&n->lock);
    return json_pack("{s:s, s:i, s:o, s:o}", "socket", n->path, "evictions_in_flight", jobs,
                     "members", members, "evictions", events);
}

char *vram_node_json(vram_node *n)
{
    json_t *v = vram__node_view(n);
    if (!v) return NULL;
    char *text = json_dumps(v, JSON_COMPACT);
    json_decref(v);
    return text;
}
