/* node.c - the member side of the node socket: join vramd, report this manager's models, carry out its orders, ask it for memory. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "base/wire.h"
#include "core/core.h"

/*
 * One thread per manager (node_main) owns the connection: it connects when
 * the socket appears, sends hello and every model, then every 0.5 s (or
 * when notified) sends the models that changed, and reads vramd's lines:
 * orders, which it carries out itself through the public API, and the
 * answers to asks. An acquiring thread that asks (vram__node_ask) writes
 * its need line and waits on n->cond for the answer.
 *
 * n->lock guards fd, joined, member_id, the asks table and every write to
 * the socket (so lines never interleave). The node thread alone reads the
 * socket and changes fd, under n->lock. The sent table is the node
 * thread's alone. Lock order: n->lock and m->lock are never held together.
 */

#define NODE_PERIOD_MS 500
#define NODE_RETRY_MS 1000
#define NODE_ASK_WAIT 35.0 /* vramd answers within its own bound (30 s) */
#define NODE_ASKS_MAX 16
#define NODE_JOIN_WAIT 3.0 /* an ask waits this long for a join under way */

typedef struct node_ask {
    uint64_t id;
    int done;
    uint64_t freed;
} node_ask;

typedef struct node_sent {
    char name[VRAM_NAME_MAX + 8];
    uint64_t hash;
    int seen;
} node_sent;

struct vram__node {
    vram_manager *m;
    char path[VRAM_STR_MAX];
    char name[VRAM_STR_MAX];
    pthread_t thread;
    int wake_fd;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    int fd;         /* -1 while not connected */
    int joined;     /* welcome received */
    int stopping;
    long member_id;
    uint64_t next_id;
    node_ask *asks[NODE_ASKS_MAX];

    /* the node thread's own */
    vram__wire_reader rd;
    node_sent *sent;
    size_t nsent, capsent;
    int warned_access;
};

static int node_off(const char *path)
{
    return !path[0] || strcmp(path, "off") == 0;
}

/* Writes one line; n->lock held. -1 when the socket failed. */
static int send_line_locked(struct vram__node *n, vram__wire_out *o)
{
    long len = vram__wire_end(o);
    if (len < 0 || n->fd < 0) return -1;
    size_t off = 0;
    while (off < (size_t)len) {
        ssize_t w = send(n->fd, o->buf + off, (size_t)len - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        off += (size_t)w;
    }
    return 0;
}

static int send_line(struct vram__node *n, vram__wire_out *o)
{
    pthread_mutex_lock(&n->lock);
    int rc = send_line_locked(n, o);
    pthread_mutex_unlock(&n->lock);
    return rc;
}

static void disconnect(struct vram__node *n, const char *why)
{
    pthread_mutex_lock(&n->lock);
    int was = n->joined;
    if (n->fd >= 0) close(n->fd);
    n->fd = -1;
    n->joined = 0;
    pthread_cond_broadcast(&n->cond); /* asks in flight end with nothing freed */
    pthread_mutex_unlock(&n->lock);
    n->nsent = 0;
    n->rd.n = n->rd.off = 0;
    if (was)
        vram__log(VRAM_LOG_WARN, "node left socket=%s: %s; working on its own until vramd is back",
                  n->path, why);
}

/* The device's uuid as the node sees it: "" for a device of this process
 * alone (an unshared host-emulated one, whose "HOST-i" every process
 * has), so that no eviction elsewhere is ever done for it. */
static const char *node_uuid(const vram_manager *m, int dev)
{
    if (strcmp(m->backend->name, "host") == 0 && !m->cfg.host_shared[0]) return "";
    return m->devs[dev].info.uuid;
}

static int send_hello(struct vram__node *n)
{
    vram_manager *m = n->m;
    char uuids[1024] = "", totals[512] = "";
    size_t ul = 0, tl = 0;
    for (int i = 0; i < m->ndev; i++) {
        int a = snprintf(uuids + ul, sizeof uuids - ul, "%s%s", i ? "," : "", node_uuid(m, i));
        int b = snprintf(totals + tl, sizeof totals - tl, "%s%llu", i ? "," : "",
                         (unsigned long long)m->devs[i].info.total);
        if (a < 0 || b < 0 || (size_t)a >= sizeof uuids - ul || (size_t)b >= sizeof totals - tl)
            break;
        ul += (size_t)a;
        tl += (size_t)b;
    }
    vram__wire_out o;
    vram__wire_begin(&o, "hello");
    vram__wire_uint(&o, "v", 1);
    vram__wire_uint(&o, "pid", (uint64_t)getpid());
    vram__wire_str(&o, "name", n->name);
    vram__wire_str(&o, "backend", m->backend->name);
    vram__wire_str(&o, "devices", uuids);
    vram__wire_str(&o, "totals", totals);
    return send_line(n, &o);
}

static void try_connect(struct vram__node *n)
{
    struct stat st;
    if (stat(n->path, &st) != 0 || !S_ISSOCK(st.st_mode)) return;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, n->path, strlen(n->path) + 1); /* length checked at start */
    struct timeval tv = {2, 0}; /* a vramd that stops reading cannot stall us long */
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (errno == EACCES && !n->warned_access) {
            n->warned_access = 1;
            vram__log(VRAM_LOG_WARN, "node socket=%s: permission denied (the socket's owner, group "
                      "and mode decide who may join); working on its own", n->path);
        }
        close(fd);
        return;
    }
    pthread_mutex_lock(&n->lock);
    n->fd = fd;
    pthread_mutex_unlock(&n->lock);
    if (send_hello(n) < 0) disconnect(n, "the socket failed");
}

/* FNV-1a of a line, for "did it change". */
static uint64_t fnv(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

static node_sent *sent_find(struct vram__node *n, const char *name)
{
    for (size_t i = 0; i < n->nsent; i++)
        if (strcmp(n->sent[i].name, name) == 0) return &n->sent[i];
    if (n->nsent == n->capsent) {
        size_t cap = n->capsent ? n->capsent * 2 : 16;
        node_sent *ns = realloc(n->sent, cap * sizeof *ns);
        if (!ns) return NULL;
        n->sent = ns;
        n->capsent = cap;
    }
    node_sent *s = &n->sent[n->nsent++];
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    s->hash = 0;
    return s;
}

/* The model line; idle last, so that the hash covers the rest plus the
 * time of last use (which does not move while a model sits idle). */
static int report_model(struct vram__node *n, const vram_model_info *mi, double now)
{
    vram__wire_out o;
    vram__wire_begin(&o, "model");
    vram__wire_str(&o, "name", mi->name);
    vram__wire_uint(&o, "dev", (uint64_t)mi->device);
    vram__wire_str(&o, "state", vram_state_name(mi->state));
    vram__wire_uint(&o, "bytes", mi->bytes);
    vram__wire_uint(&o, "leases", (uint64_t)mi->leases);
    vram__wire_num(&o, "idle_timeout", mi->idle_timeout);
    vram__wire_num(&o, "release_timeout", mi->release_timeout);
    vram__wire_uint(&o, "immediate", (uint64_t)(mi->immediate_offload != 0));
    vram__wire_str(&o, "source", mi->source);
    vram__wire_str(&o, "error", mi->last_error);
    uint64_t h = fnv(o.buf, o.n);
    long used = mi->leases > 0 ? -1 : (long)((now - mi->idle_seconds) * 2); /* half seconds */
    h = fnv((const char *)&used, sizeof used) ^ h;
    node_sent *s = sent_find(n, mi->name);
    if (s) s->seen = 1;
    if (s && s->hash == h && mi->leases == 0) return 0;
    if (s) s->hash = h;
    vram__wire_num(&o, "idle", mi->idle_seconds);
    return send_line(n, &o);
}

/* Sends what changed since the last report, and drops for models gone. */
static int report(struct vram__node *n)
{
    int cnt = vram_manager_models(n->m, NULL, 0, sizeof(vram_model_info));
    if (cnt < 0) return 0;
    vram_model_info *mi = cnt ? calloc((size_t)cnt + 4, sizeof *mi) : NULL;
    if (cnt && !mi) return 0;
    int got = cnt ? vram_manager_models(n->m, mi, (size_t)cnt + 4, sizeof *mi) : 0;
    if (got > cnt + 4) got = cnt + 4;
    double now = vram__now();
    for (size_t i = 0; i < n->nsent; i++) n->sent[i].seen = 0;
    int rc = 0;
    for (int i = 0; i < got && rc == 0; i++) rc = report_model(n, &mi[i], now);
    free(mi);
    for (size_t i = 0; i < n->nsent && rc == 0;) {
        if (n->sent[i].seen) {
            i++;
            continue;
        }
        vram__wire_out o;
        vram__wire_begin(&o, "drop");
        vram__wire_str(&o, "name", n->sent[i].name);
        rc = send_line(n, &o);
        n->sent[i] = n->sent[--n->nsent];
    }
    return rc;
}

/* Carries out an order from vramd and answers it. */
static int do_order(struct vram__node *n, const vram__wire_msg *msg, const char *id)
{
    const char *name = vram__wire_get(msg, "name");
    int rc;
    uint64_t freed = 0; /* device bytes this order gave back (what an eviction counts) */
    char text[VRAM_ERRMSG_MAX] = "";
    vram_model *model = name ? vram__model_hold(n->m, name) : NULL;
    if (!model) {
        rc = VRAM_ENOENT;
        snprintf(text, sizeof text, "no model named '%s' in this process", name ? name : "");
    } else {
        const char *v;
        double d;
        int offload = strcmp(msg->verb, "offload") == 0;
        if (offload || strcmp(msg->verb, "release") == 0) {
            /* as a local call: nothing to do (not on the device) is success */
            int on_device = vram_model_state(model) == VRAM_STATE_GPU;
            uint64_t bytes = vram_model_bytes(model);
            rc = offload ? vram_model_offload(model, VRAM_NOWAIT)
                         : vram_model_release(model, VRAM_NOWAIT);
            if (rc == 0 && on_device) freed = bytes;
        } else if (vram__wire_dbl(msg, "idle_timeout", &d) == 0) {
            rc = vram_model_set_idle_timeout(model, d);
        } else if (vram__wire_dbl(msg, "release_timeout", &d) == 0) {
            rc = vram_model_set_release_timeout(model, d);
        } else if ((v = vram__wire_get(msg, "immediate")) && (!strcmp(v, "0") || !strcmp(v, "1"))) {
            rc = vram_model_set_immediate_offload(model, v[0] == '1');
        } else {
            rc = vram__errorf(VRAM_EINVAL, "set needs idle_timeout, release_timeout or immediate");
        }
        if (rc < 0) snprintf(text, sizeof text, "%s", vram__last_error());
        vram__log(VRAM_LOG_INFO, "node order=%s model=%s rc=%d%s%s", msg->verb, name, rc,
                  text[0] ? " error=" : "", text);
        vram__model_unhold(model);
    }
    vram__wire_out o;
    vram__wire_begin(&o, "done");
    vram__wire_str(&o, "id", id);
    char num[16];
    snprintf(num, sizeof num, "%d", rc < 0 ? rc : 0);
    vram__wire_str(&o, "rc", num);
    vram__wire_uint(&o, "freed", freed);
    vram__wire_str(&o, "msg", text);
    return send_line(n, &o);
}

/* One line from vramd. -1 ends the connection. */
static int handle_line(struct vram__node *n, char *line)
{
    vram__wire_msg msg;
    if (vram__wire_parse(line, &msg) < 0) return -1;
    const char *id = vram__wire_get(&msg, "id");
    if (strcmp(msg.verb, "welcome") == 0) {
        long member = 0;
        vram__wire_int(&msg, "member", 0, 1L << 30, &member);
        pthread_mutex_lock(&n->lock);
        n->joined = 1;
        n->member_id = member;
        pthread_cond_broadcast(&n->cond); /* an ask may wait for the join */
        pthread_mutex_unlock(&n->lock);
        vram__log(VRAM_LOG_INFO, "node joined socket=%s member=%ld name=%s", n->path, member,
                  n->name);
        return 0;
    }
    if (strcmp(msg.verb, "freed") == 0) {
        uint64_t kid = 0, bytes = 0;
        if (vram__wire_u64(&msg, "id", &kid) < 0) return -1;
        vram__wire_u64(&msg, "bytes", &bytes);
        pthread_mutex_lock(&n->lock);
        for (int i = 0; i < NODE_ASKS_MAX; i++)
            if (n->asks[i] && n->asks[i]->id == kid) {
                n->asks[i]->done = 1;
                n->asks[i]->freed = bytes;
            }
        pthread_cond_broadcast(&n->cond);
        pthread_mutex_unlock(&n->lock);
        return 0;
    }
    if (!strcmp(msg.verb, "offload") || !strcmp(msg.verb, "release") || !strcmp(msg.verb, "set")) {
        if (!id) return -1;
        vram__wire_out o; /* received: the work itself may take seconds */
        vram__wire_begin(&o, "ack");
        vram__wire_str(&o, "id", id);
        if (send_line(n, &o) < 0) return -1;
        return do_order(n, &msg, id);
    }
    return -1;
}

/* Reads what is there; -1 when the connection ended or broke the rules. */
static int read_lines(struct vram__node *n)
{
    size_t room;
    char *at = vram__wire_space(&n->rd, &room);
    if (room == 0) return -1;
    ssize_t r = recv(n->fd, at, room, MSG_DONTWAIT);
    if (r == 0) return -1;
    if (r < 0) return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
    vram__wire_wrote(&n->rd, (size_t)r);
    char *line;
    while ((line = vram__wire_next(&n->rd)) != NULL)
        if (handle_line(n, line) < 0) return -1;
    return 0;
}

static void drain_wake(struct vram__node *n)
{
    uint64_t v;
    ssize_t r = read(n->wake_fd, &v, sizeof v);
    (void)r;
}

static void *node_main(void *arg)
{
    struct vram__node *n = arg;
    for (;;) {
        pthread_mutex_lock(&n->lock);
        int stop = n->stopping, fd = n->fd;
        pthread_mutex_unlock(&n->lock);
        if (stop) break;
        if (fd < 0) {
            try_connect(n);
            if (n->fd < 0) {
                struct pollfd w = {n->wake_fd, POLLIN, 0};
                if (poll(&w, 1, NODE_RETRY_MS) > 0) drain_wake(n);
                continue;
            }
            fd = n->fd;
        }
        struct pollfd p[2] = {{fd, POLLIN, 0}, {n->wake_fd, POLLIN, 0}};
        int pr = poll(p, 2, NODE_PERIOD_MS);
        if (pr > 0 && p[1].revents) drain_wake(n);
        if (pr > 0 && (p[0].revents & (POLLIN | POLLHUP | POLLERR)) && read_lines(n) < 0) {
            disconnect(n, "vramd closed the connection");
            continue;
        }
        if (n->fd >= 0 && report(n) < 0) disconnect(n, "the socket failed");
    }
    return NULL;
}

int vram__node_start(vram_manager *m)
{
    if (node_off(m->cfg.node_socket)) return 0;
    if (strlen(m->cfg.node_socket) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        vram__log(VRAM_LOG_WARN, "node socket=%s: longer than the %zu bytes a Unix socket path "
                  "may have; working on its own", m->cfg.node_socket,
                  sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
        return 0;
    }
    struct vram__node *n = calloc(1, sizeof *n);
    if (!n) return vram__errorf(VRAM_EHOSTMEM, "out of host memory");
    n->m = m;
    n->fd = -1;
    snprintf(n->path, sizeof n->path, "%s", m->cfg.node_socket);
    snprintf(n->name, sizeof n->name, "%s",
             m->cfg.node_name[0] ? m->cfg.node_name : program_invocation_short_name);
    n->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    pthread_mutex_init(&n->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&n->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (n->wake_fd < 0 || pthread_create(&n->thread, NULL, node_main, n) != 0) {
        vram__log(VRAM_LOG_WARN, "node socket=%s: cannot start the node thread: %s; working on "
                  "its own", n->path, strerror(errno));
        if (n->wake_fd >= 0) close(n->wake_fd);
        pthread_cond_destroy(&n->cond);
        pthread_mutex_destroy(&n->lock);
        free(n);
        return 0;
    }
    m->node = n;
    return 0;
}

void vram__node_stop(vram_manager *m)
{
    struct vram__node *n = m->node;
    if (!n) return;
    pthread_mutex_lock(&n->lock);
    int was = n->stopping;
    n->stopping = 1;
    pthread_cond_broadcast(&n->cond);
    pthread_mutex_unlock(&n->lock);
    if (was) return;
    vram__node_notify(m);
    pthread_join(n->thread, NULL);
    pthread_mutex_lock(&n->lock);
    if (n->fd >= 0) close(n->fd);
    n->fd = -1;
    n->joined = 0;
    pthread_mutex_unlock(&n->lock);
}

void vram__node_free(vram_manager *m)
{
    struct vram__node *n = m->node;
    if (!n) return;
    vram__node_stop(m);
    m->node = NULL; /* no other thread is left: the monitor has stopped */
    close(n->wake_fd);
    pthread_cond_destroy(&n->cond);
    pthread_mutex_destroy(&n->lock);
    free(n->sent);
    free(n);
}

void vram__node_notify(vram_manager *m)
{
    struct vram__node *n = m->node;
    if (!n) return;
    uint64_t one = 1;
    ssize_t w = write(n->wake_fd, &one, sizeof one);
    (void)w;
}

uint64_t vram__node_ask(vram_manager *m, int dev, uint64_t bytes, const char *model)
{
    struct vram__node *n = m->node;
    if (!n || dev < 0 || dev >= m->ndev || !node_uuid(m, dev)[0]) return 0;
    node_ask ask = {0, 0, 0};
    struct stat st;
    int socket_there = stat(n->path, &st) == 0 && S_ISSOCK(st.st_mode);
    pthread_mutex_lock(&n->lock);
    if (!n->joined && socket_there && !n->stopping) {
        /* a process that needs memory right after it started: its node
         * thread is joining now; wait for that (bounded) rather than fail */
        struct timespec ts;
        vram__deadline_after(&ts, NODE_JOIN_WAIT);
        pthread_mutex_unlock(&n->lock);
        vram__node_notify(m);
        pthread_mutex_lock(&n->lock);
        while (!n->joined && !n->stopping)
            if (pthread_cond_timedwait(&n->cond, &n->lock, &ts) == ETIMEDOUT) break;
    }
    int slot = -1;
    for (int i = 0; i < NODE_ASKS_MAX && slot < 0; i++)
        if (!n->asks[i]) slot = i;
    if (!n->joined || slot < 0 || n->stopping) {
        pthread_mutex_unlock(&n->lock);
        return 0;
    }
    ask.id = ++n->next_id;
    n->asks[slot] = &ask;
    vram__wire_out o;
    vram__wire_begin(&o, "need");
    vram__wire_uint(&o, "id", ask.id);
    vram__wire_uint(&o, "dev", (uint64_t)dev);
    vram__wire_uint(&o, "bytes", bytes);
    vram__wire_str(&o, "for", model);
    double t0 = vram__now();
    vram__log(VRAM_LOG_INFO, "node ask model=%s bytes=%llu device=%d", model,
              (unsigned long long)bytes, dev);
    if (send_line_locked(n, &o) == 0) {
        struct timespec ts;
        vram__deadline_after(&ts, NODE_ASK_WAIT);
        while (!ask.done && n->joined && !n->stopping)
            if (pthread_cond_timedwait(&n->cond, &n->lock, &ts) == ETIMEDOUT) break;
    }
    n->asks[slot] = NULL;
    pthread_mutex_unlock(&n->lock);
    vram__log(VRAM_LOG_INFO, "node answer model=%s freed=%llu seconds=%.3f", model,
              (unsigned long long)ask.freed, vram__now() - t0);
    return ask.freed;
}
