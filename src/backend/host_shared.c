/* host_shared.c - the host backend's shared capacity ledger: one POSIX shared-memory object per share name, counting what every process holds of each emulated device. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backend/host_shared.h"
#include "base/base.h"

/*
 * Model
 *
 * - With VRAM_HOST_SHARED=NAME every host backend that names NAME keeps its
 *   own memfds (the bytes of its emulated devices stay private), but counts
 *   what it takes of device i in one ledger shared by all of them: the POSIX
 *   shared memory object /vram-host-NAME (/dev/shm/vram-host-NAME), a header
 *   and one record per device. So the processes see one device of
 *   `capacity` bytes between them, as processes sharing a GPU do.
 * - A record holds the device's capacity, the bytes charged by all
 *   processes (`used`), and a table of slots, one per backend that opened
 *   the share: pid, the process's start time (field 22 of /proc/PID/stat,
 *   so that a reused pid is not taken for the old process) and the bytes it
 *   holds. `used` is the sum of the slots' bytes.
 * - The first process creates the object (O_CREAT|O_EXCL), sizes and
 *   initialises it, then sets `ready` (release); the others wait (bounded)
 *   for its size and for `ready` (acquire). The first process's device
 *   count and capacity are the share's: a later one with other figures
 *   uses the share's and logs a warning. The object outlives the processes
 *   (it is the share); removing it is the user's (or a test's) business.
 * - Dead processes: under a record's lock, a slot whose process is gone
 *   (kill(pid, 0) fails with ESRCH) is reclaimed: its bytes are free again.
 *   Every charge and uncharge checks that; when a charge does not fit, and
 *   for device_info and open, the start times are compared too (a reused
 *   pid). So a process killed with SIGKILL gives its emulated memory back
 *   the next time anyone takes the lock.
 *
 * Locks
 *
 * - Each device record has one pthread mutex, PTHREAD_PROCESS_SHARED and
 *   PTHREAD_MUTEX_ROBUST. It guards that record: `used` and the slot table.
 *   The header (ready, version, size, ndev) is written once before `ready`
 *   and only read after. A lock whose owner died mid-update (EOWNERDEAD) is
 *   repaired (used recomputed from the slots, dead slots reclaimed) and
 *   marked consistent.
 * - The shared lock is the innermost lock: host.c takes it while holding
 *   its own allocator lock (c->lock), never the other way round, and no
 *   other lock (not even the log's: messages are formatted after unlock)
 *   is taken under it. It is held for arithmetic over the record, plus
 *   kill(pid, 0) per occupied slot and, when memory is short, a read of
 *   /proc/PID/stat per other process; never across mmap, copies or waits.
 * - Handles are used by one backend; its c->lock serialises a process's
 *   charges on its slot, and the record lock serialises processes.
 */

#define HS_MAGIC 0x7672616d73686172ULL /* "vramshar": `ready` once initialised */
#define HS_VERSION 1
#define HS_NAME_MAX 64
#define HS_WAIT_MS 5000 /* how long an opener waits for the creator */

typedef struct hs_slot {
    int32_t pid; /* 0: free; set last when taken */
    uint32_t pad;
    uint64_t start; /* the process's start time (clock ticks after boot); 0: unknown */
    uint64_t held;  /* bytes charged */
} hs_slot;

typedef struct hs_dev {
    pthread_mutex_t lock; /* robust, process-shared: guards the rest */
    uint64_t capacity;    /* bytes; the same for every device of a share */
    uint64_t used;        /* sum of slot[].held */
    hs_slot slot[VRAM_HOST_SHARED_SLOTS];
} hs_dev;

typedef struct hs_shm {
    uint64_t ready; /* HS_MAGIC once the creator initialised the rest */
    uint32_t version;
    uint32_t size; /* sizeof(hs_shm) */
    int32_t ndev;
    uint32_t pad;
    hs_dev dev[VRAM_HOST_SHARED_DEVICES];
} hs_shm;

struct vram_host_shared {
    hs_shm *shm;
    int ndev;
    pid_t pid;                          /* the process that took the slots */
    uint64_t start;                     /* its start time */
    int slot[VRAM_HOST_SHARED_DEVICES]; /* this handle's slot in each record; -1: none */
    char name[HS_NAME_MAX + 1];
};

int vram__host_shared_name_ok(const char *name)
{
    if (!name) return 0;
    size_t n = 0;
    for (; name[n]; n++) {
        char ch = name[n];
        int ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
                 ch == '.' || ch == '_' || ch == '-';
        if (!ok || n >= HS_NAME_MAX) return 0;
    }
    return n > 0;
}

const char *vram__host_shared_name(const vram_host_shared *s)
{
    return s ? s->name : "";
}

/* ---- processes ---- */

/* Field 22 of /proc/PID/stat (starttime), or 0 when it cannot be read. */
static uint64_t proc_start(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the name (field 2) may hold spaces and ')' */
    if (!p) return 0;
    p++;
    for (int field = 3; field <= 22; field++) { /* p is at the space before `field` */
        while (*p == ' ')
            p++;
        if (!*p) return 0;
        if (field == 22) return strtoull(p, NULL, 10);
        while (*p && *p != ' ')
            p++;
    }
    return 0;
}

/* 1 when the slot's process is gone: no such pid, or (full) a pid now
 * used by a process that started at another time. */
static int slot_dead(const hs_slot *sl, int full)
{
    if (sl->pid < 0) return 1; /* not a pid: a damaged record */
    if (kill((pid_t)sl->pid, 0) == -1 && errno == ESRCH) return 1;
    if (!full || sl->start == 0) return 0;
    uint64_t now = proc_start((pid_t)sl->pid);
    return now != 0 && now != sl->start;
}

/* ---- records (caller holds the record's lock) ---- */

/* Bytes no process holds (0 when a damaged record counts more than all). */
static uint64_t room(const hs_dev *d)
{
    return d->used < d->capacity ? d->capacity - d->used : 0;
}

typedef struct hs_reclaimed {
    int procs;
    uint64_t bytes;
} hs_reclaimed;

/* Frees the slots of dead processes, their bytes with them. The slots of
 * this process (pid and start time) are skipped. */
static void reclaim(hs_dev *d, pid_t self, uint64_t self_start, int full, hs_reclaimed *out)
{
    for (int i = 0; i < VRAM_HOST_SHARED_SLOTS; i++) {
        hs_slot *sl = &d->slot[i];
        if (sl->pid == 0) continue;
        if (sl->pid == self && sl->start == self_start) continue;
        if (!slot_dead(sl, full)) continue;
        out->procs++;
        out->bytes += sl->held;
        d->used = d->used >= sl->held ? d->used - sl->held : 0;
        sl->held = 0;
        sl->start = 0;
        sl->pid = 0;
    }
}

/* used from the slots: what a holder that died mid-update left behind. */
static void repair(hs_dev *d)
{
    uint64_t sum = 0;
    for (int i = 0; i < VRAM_HOST_SHARED_SLOTS; i++)
        if (d->slot[i].pid != 0) sum += d->slot[i].held;
    d->used = sum;
}

/* Takes the record's lock, repairing it when its holder died. Returns 0 or
 * VRAM_EBACKEND (message set; not locked). */
static int dev_lock(const vram_host_shared *s, int dev)
{
    hs_dev *d = &s->shm->dev[dev];
    int e = pthread_mutex_lock(&d->lock);
    if (e == EOWNERDEAD) {
        repair(d);
        e = pthread_mutex_consistent(&d->lock);
        if (e == 0) return 0;
        pthread_mutex_unlock(&d->lock);
    }
    if (e == 0) return 0;
    char eb[128];
    return vram__errorf(VRAM_EBACKEND, "host device %d (shared '%s'): its lock: %s", dev, s->name,
                        strerror_r(e, eb, sizeof eb));
}

static void log_reclaimed(const vram_host_shared *s, int dev, const hs_reclaimed *r)
{
    if (r->procs == 0) return;
    vram__log(VRAM_LOG_INFO,
              "host device %d (shared '%s'): %s given back by %d process%s that ended", dev,
              s->name, vram__human(r->bytes).s, r->procs, r->procs == 1 ? "" : "es");
}

/* This handle's slot in record dev while it is still its own (not
 * reclaimed as a dead process's), else NULL. Caller holds the lock. */
static hs_slot *my_slot(const vram_host_shared *s, int dev)
{
    if (s->slot[dev] < 0) return NULL;
    hs_slot *sl = &s->shm->dev[dev].slot[s->slot[dev]];
    return sl->pid == (int32_t)s->pid && sl->start == s->start ? sl : NULL;
}

static void usage_of(const vram_host_shared *s, int dev, vram_host_shared_usage *out)
{
    const hs_dev *d = &s->shm->dev[dev];
    const hs_slot *sl = my_slot(s, dev);
    out->capacity = d->capacity;
    out->used = d->used;
    out->mine = sl ? sl->held : 0;
}

/* ---- charges ---- */

int vram__host_shared_charge(vram_host_shared *s, int dev, uint64_t bytes,
                             vram_host_shared_usage *why)
{
    hs_dev *d = &s->shm->dev[dev];
    hs_reclaimed r = {0, 0};
    int rc = dev_lock(s, dev);
    if (rc) return rc;
    reclaim(d, s->pid, s->start, 0, &r);
    if (bytes > room(d)) reclaim(d, s->pid, s->start, 1, &r);
    hs_slot *sl = my_slot(s, dev);
    int fits = sl && bytes <= room(d);
    if (fits) {
        sl->held += bytes;
        d->used += bytes;
    } else if (why) {
        usage_of(s, dev, why);
    }
    pthread_mutex_unlock(&d->lock);
    log_reclaimed(s, dev, &r);
    return fits ? 0 : 1;
}

void vram__host_shared_uncharge(vram_host_shared *s, int dev, uint64_t bytes)
{
    hs_dev *d = &s->shm->dev[dev];
    hs_reclaimed r = {0, 0};
    if (dev_lock(s, dev)) {
        vram__log(VRAM_LOG_ERROR, "%s (%llu bytes not given back)", vram__last_error(),
                  (unsigned long long)bytes);
        return;
    }
    reclaim(d, s->pid, s->start, 0, &r);
    hs_slot *sl = my_slot(s, dev);
    if (sl) {
        uint64_t give = bytes <= sl->held ? bytes : sl->held;
        sl->held -= give;
        d->used = d->used >= give ? d->used - give : 0;
    }
    pthread_mutex_unlock(&d->lock);
    log_reclaimed(s, dev, &r);
}

int vram__host_shared_usage(vram_host_shared *s, int dev, vram_host_shared_usage *out)
{
    hs_dev *d = &s->shm->dev[dev];
    hs_reclaimed r = {0, 0};
    int rc = dev_lock(s, dev);
    if (rc) return rc;
    reclaim(d, s->pid, s->start, 1, &r);
    usage_of(s, dev, out);
    pthread_mutex_unlock(&d->lock);
    log_reclaimed(s, dev, &r);
    return 0;
}

int vram__host_shared_hold_lock(vram_host_shared *s, int dev)
{
    if (!s || dev < 0 || dev >= s->ndev) return VRAM_EINVAL;
    return dev_lock(s, dev);
}

void vram__host_shared_fake_reuse(vram_host_shared *s)
{
    for (int dev = 0; s && dev < s->ndev; dev++) {
        if (s->slot[dev] < 0 || dev_lock(s, dev)) continue;
        s->shm->dev[dev].slot[s->slot[dev]].start = s->start + 1;
        pthread_mutex_unlock(&s->shm->dev[dev].lock);
    }
}

/* ---- slots ---- */

/* Takes a free slot in every record (dead processes reclaimed first).
 * Returns 0, or VRAM_EBACKEND (message set); give_slots frees those taken. */
static int take_slots(vram_host_shared *s)
{
    for (int dev = 0; dev < s->ndev; dev++) {
        hs_dev *d = &s->shm->dev[dev];
        hs_reclaimed r = {0, 0};
        int rc = dev_lock(s, dev);
        if (rc) return rc;
        reclaim(d, s->pid, s->start, 1, &r);
        for (int i = 0; i < VRAM_HOST_SHARED_SLOTS && s->slot[dev] < 0; i++) {
            if (d->slot[i].pid != 0) continue;
            d->slot[i].held = 0;
            d->slot[i].start = s->start;
            d->slot[i].pid = (int32_t)s->pid;
            s->slot[dev] = i;
        }
        pthread_mutex_unlock(&d->lock);
        log_reclaimed(s, dev, &r);
        if (s->slot[dev] < 0)
            return vram__errorf(VRAM_EBACKEND,
                                "host device %d (shared '%s'): all %d process slots are held by "
                                "live processes",
                                dev, s->name, VRAM_HOST_SHARED_SLOTS);
    }
    return 0;
}

/* Frees this handle's slots; their bytes become free. */
static void give_slots(vram_host_shared *s)
{
    for (int dev = 0; dev < s->ndev; dev++) {
        if (s->slot[dev] < 0) continue;
        hs_dev *d = &s->shm->dev[dev];
        if (dev_lock(s, dev)) {
            vram__log(VRAM_LOG_ERROR, "%s (slot not given back)", vram__last_error());
            continue;
        }
        hs_slot *sl = my_slot(s, dev);
        if (sl) {
            d->used = d->used >= sl->held ? d->used - sl->held : 0;
            sl->held = 0;
            sl->start = 0;
            sl->pid = 0;
        }
        pthread_mutex_unlock(&d->lock);
        s->slot[dev] = -1;
    }
}

void vram__host_shared_close(vram_host_shared *s)
{
    if (!s) return;
    /* a forked child that inherited the handle leaves its parent's slots */
    if (s->shm && getpid() == s->pid) give_slots(s);
    if (s->shm) munmap(s->shm, sizeof *s->shm);
    free(s);
}

/* ---- creating or joining the object ---- */

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* The creator's part: the records' capacity and locks, then `ready`.
 * Returns 0 or an errno. */
static int shm_init(hs_shm *m, int ndev, uint64_t capacity)
{
    pthread_mutexattr_t a;
    int e = pthread_mutexattr_init(&a);
    if (e) return e;
    e = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    if (!e) e = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    for (int i = 0; i < VRAM_HOST_SHARED_DEVICES && !e; i++) {
        m->dev[i].capacity = i < ndev ? capacity : 0;
        e = pthread_mutex_init(&m->dev[i].lock, &a);
    }
    pthread_mutexattr_destroy(&a);
    if (e) return e;
    m->version = HS_VERSION;
    m->size = (uint32_t)sizeof *m;
    m->ndev = ndev;
    __atomic_store_n(&m->ready, HS_MAGIC, __ATOMIC_RELEASE);
    return 0;
}

static int shm_fail(const char *name, const char *what, int e)
{
    char eb[128];
    return vram__errorf(VRAM_EBACKEND, "VRAM_HOST_SHARED '%s': /dev/shm/vram-host-%s: %s: %s", name,
                        name, what, strerror_r(e, eb, sizeof eb));
}

/* Creates the object: 1 and *m when this process made it, 0 when it
 * exists already, or a VRAM error. */
static int shm_create(const char *path, const char *name, int ndev, uint64_t capacity, hs_shm **m)
{
    int fd = shm_open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return errno == EEXIST ? 0 : shm_fail(name, "shm_open", errno);
    int e = ftruncate(fd, (off_t)sizeof(hs_shm)) == 0 ? 0 : errno;
    void *p = MAP_FAILED;
    if (!e) {
        p = mmap(NULL, sizeof(hs_shm), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) e = errno;
    }
    close(fd);
    if (!e) e = shm_init(p, ndev, capacity);
    if (e) { /* leave nothing for the others to wait on */
        if (p != MAP_FAILED) munmap(p, sizeof(hs_shm));
        shm_unlink(path);
        return shm_fail(name, "creating it", e);
    }
    *m = p;
    return 1;
}

/* Opens an existing object once its creator sized and initialised it:
 * 1 and *m, 0 when it vanished meanwhile (try creating again), or a VRAM
 * error. */
static int shm_join(const char *path, const char *name, hs_shm **m)
{
    int fd = shm_open(path, O_RDWR | O_CLOEXEC, 0);
    if (fd < 0) return errno == ENOENT ? 0 : shm_fail(name, "shm_open", errno);
    struct stat st;
    memset(&st, 0, sizeof st);
    int waited = 0, e = 0;
    while ((e = fstat(fd, &st) == 0 ? 0 : errno) == 0 && st.st_size == 0 && waited < HS_WAIT_MS) {
        sleep_ms(1);
        waited++;
    }
    if (e) {
        close(fd);
        return shm_fail(name, "fstat", e);
    }
    if (st.st_size != (off_t)sizeof(hs_shm)) {
        close(fd);
        return vram__errorf(VRAM_EBACKEND,
                            "VRAM_HOST_SHARED '%s': /dev/shm/vram-host-%s is %lld bytes, not the "
                            "%zu of a share of this version (remove it?)",
                            name, name, (long long)st.st_size, sizeof(hs_shm));
    }
    void *p = mmap(NULL, sizeof(hs_shm), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    e = p == MAP_FAILED ? errno : 0;
    close(fd);
    if (e) return shm_fail(name, "mmap", e);
    hs_shm *h = p;
    while (__atomic_load_n(&h->ready, __ATOMIC_ACQUIRE) != HS_MAGIC && waited < HS_WAIT_MS) {
        sleep_ms(1);
        waited++;
    }
    if (__atomic_load_n(&h->ready, __ATOMIC_ACQUIRE) != HS_MAGIC || h->version != HS_VERSION ||
        h->size != sizeof *h) {
        munmap(p, sizeof *h);
        return vram__errorf(VRAM_EBACKEND,
                            "VRAM_HOST_SHARED '%s': /dev/shm/vram-host-%s is not a ready share of "
                            "this version (its creator died while making it? remove it)",
                            name, name);
    }
    *m = h;
    return 1;
}

/* The share's figures, checked; a warning when they are not this
 * process's wish. Returns 0 or VRAM_EBACKEND. */
static int shm_figures(const vram_host_shared *s, int *ndev, uint64_t *capacity)
{
    const hs_shm *m = s->shm;
    int n = m->ndev;
    uint64_t cap = n >= 1 && n <= VRAM_HOST_SHARED_DEVICES ? m->dev[0].capacity : 0;
    for (int i = 1; i < n && cap; i++)
        if (m->dev[i].capacity != cap) cap = 0;
    if (cap == 0)
        return vram__errorf(VRAM_EBACKEND,
                            "VRAM_HOST_SHARED '%s': /dev/shm/vram-host-%s is malformed (%d "
                            "devices; remove it?)",
                            s->name, s->name, n);
    if (n != *ndev || cap != *capacity)
        vram__log(VRAM_LOG_WARN,
                  "host backend: shared '%s' has %d device%s of %s: using those, not "
                  "VRAM_HOST_DEVICES=%d and VRAM_HOST_MEMORY=%s",
                  s->name, n, n == 1 ? "" : "s", vram__human(cap).s, *ndev,
                  vram__human(*capacity).s);
    *ndev = n;
    *capacity = cap;
    return 0;
}

/* Maps the object, creating it when it does not exist. Returns 0 or a
 * VRAM error. */
static int shm_attach(const char *name, int ndev, uint64_t capacity, hs_shm **m)
{
    char path[16 + HS_NAME_MAX];
    snprintf(path, sizeof path, "/vram-host-%s", name);
    for (int tries = 0; tries < 100; tries++) {
        int rc = shm_create(path, name, ndev, capacity, m);
        if (rc == 0) rc = shm_join(path, name, m);
        if (rc < 0) return rc;
        if (rc == 1) return 0;
    }
    return vram__errorf(VRAM_EBACKEND,
                        "VRAM_HOST_SHARED '%s': /dev/shm/vram-host-%s keeps vanishing", name, name);
}

int vram__host_shared_open(const char *name, int *ndev, uint64_t *capacity, vram_host_shared **out)
{
    if (!out || !ndev || !capacity) return vram__errorf(VRAM_EINVAL, "host_shared_open: NULL");
    *out = NULL;
    if (!vram__host_shared_name_ok(name)) {
        char q[128];
        return vram__errorf(VRAM_ECONFIG,
                            "VRAM_HOST_SHARED: '%s' is not a share name (1 to 64 of A-Z a-z 0-9 . "
                            "_ -)",
                            vram__quote(name ? name : "", q, sizeof q));
    }
    if (*ndev < 1 || *ndev > VRAM_HOST_SHARED_DEVICES || *capacity == 0)
        return vram__errorf(VRAM_ECONFIG, "VRAM_HOST_SHARED '%s': %d devices of %llu bytes", name,
                            *ndev, (unsigned long long)*capacity);
    vram_host_shared *s = calloc(1, sizeof *s);
    if (!s) return vram__errorf(VRAM_EHOSTMEM, "out of host memory");
    snprintf(s->name, sizeof s->name, "%s", name);
    s->pid = getpid();
    s->start = proc_start(s->pid);
    for (int i = 0; i < VRAM_HOST_SHARED_DEVICES; i++)
        s->slot[i] = -1;
    int rc = shm_attach(name, *ndev, *capacity, &s->shm);
    if (rc == 0) rc = shm_figures(s, ndev, capacity);
    if (rc == 0) {
        s->ndev = *ndev;
        rc = take_slots(s);
    }
    if (rc) {
        vram__host_shared_close(s);
        return rc;
    }
    *out = s;
    return 0;
}
