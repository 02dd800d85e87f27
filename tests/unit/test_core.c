/* test_core.c - the manager and model state machine on the host backend: every transition, deferral, eviction, timeout and failure rule. */
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "backend/backend.h"
#include "core/core.h"
#include "vram.h"
#include "vram_server.h"

#define MiB (1024ULL * 1024ULL)

/* ---- fixtures ---- */

static double fake_now;
static double fake_clock(void *user)
{
    (void)user;
    return fake_now;
}

static void test_config(vram_config *cfg, uint64_t host_memory)
{
    vram_config_init(cfg);
    cfg->backend = VRAM_BACKEND_HOST;
    cfg->host_memory = host_memory;
    cfg->host_devices = 1;
    cfg->evict_wait = 0; /* fail at once; test_bounded_wait_for_memory waits */
    cfg->log_level = VRAM_LOG_ERROR;
    cfg->chunk_bytes = 4 * MiB;
    cfg->fault_injection = 1; /* vram__backend_inject arms failures */
}

/* A manager with a fake clock and no monitor thread. */
static vram_manager *fake_manager(uint64_t host_memory)
{
    vram_config cfg;
    test_config(&cfg, host_memory);
    cfg.clock = fake_clock;
    cfg.no_monitor_thread = 1;
    fake_now = 1000.0;
    vram_manager *m = NULL;
    assert_int_equal(vram_manager_create(&cfg, &m), 0);
    return m;
}

static vram_model *add_synthetic(vram_manager *m, const char *name, const char *spec)
{
    vram_model_opts o;
    vram_model_opts_init(&o);
    o.source = spec;
    vram_model *model = NULL;
    assert_int_equal(vram_manager_register(m, name, &o, &model), 0);
    return model;
}

static uint64_t expected_synthetic(uint64_t bytes, uint64_t seed)
{
    unsigned char *p = malloc(bytes);
    assert_non_null(p);
    vram_synthetic_fill(seed, 0, p, bytes);
    uint64_t c = vram_checksum(p, bytes);
    free(p);
    return c;
}

static vram_backend *backend_of(vram_manager *m)
{
    return m->backend;
}

static uint64_t dev_used(vram_manager *m)
{
    pthread_mutex_lock(&m->lock);
    uint64_t u = m->devs[0].used;
    pthread_mutex_unlock(&m->lock);
    return u;
}

/* ---- callback models ---- */

typedef struct cb_state {
    int calls;
    int fail_with;     /* return this from the load */
    int alloc_none;
    int sleep_ms;
    size_t bytes;
    uint64_t seed;
    void *ptr;
} cb_state;

static int cb_load(vram_model *model, void *user)
{
    cb_state *s = user;
    __atomic_add_fetch(&s->calls, 1, __ATOMIC_RELAXED);
    if (s->sleep_ms) usleep((useconds_t)s->sleep_ms * 1000);
    if (s->alloc_none) return 0;
    void *p = NULL;
    int rc = vram_model_alloc(model, s->bytes, &p);
    if (rc < 0) return rc;
    unsigned char *buf = malloc(s->bytes);
    if (!buf) return VRAM_EHOSTMEM;
    vram_synthetic_fill(s->seed, 0, buf, s->bytes);
    rc = vram_model_upload(model, p, buf, s->bytes);
    free(buf);
    s->ptr = p;
    if (s->fail_with) return s->fail_with;
    return rc;
}

static vram_model *add_callback(vram_manager *m, const char *name, cb_state *s)
{
    vram_model_opts o;
    vram_model_opts_init(&o);
    o.load = cb_load;
    o.load_user = s;
    vram_model *model = NULL;
    assert_int_equal(vram_manager_register(m, name, &o, &model), 0);
    return model;
}

/* ---- lazy load, leases, offload, restore, release ---- */

static void test_lazy_load_and_cycle(void **state)
{
    (void)state;
    vram_manager *m = fake_manager(64 * MiB);
    vram_model *model = add_synthetic(m, "Llasa-8B", "synthetic:8M:7");
    assert_int_equal(vram_model_state(model), VRAM_STATE_UNLOADED);
    assert_int_equal(dev_used(m), 0);
    assert_string_equal(vram_state_location(vram_model_state(model)), "未加载");

    vram_lease *l = NULL;
    assert_int_equal(vram_model_acquire(model, &l), 0);
    assert_non_null(l);
    assert_int_equal(vram_model_state(model), VRAM_STATE_GPU);
    assert_int_equal(vram_model_bytes(model), 8 * MiB);
    void *addr = vram_lease_ptr(l);
    assert_non_null(addr);
    assert_ptr_equal(vram_lease_model(l), model);
    uint64_t want = expected_synthetic(8 * MiB, 7), got = 0;
    assert_int_equal(vram_model_checksum(model, &got), 0);
    assert_true(got == want);
    vram_lease_end(l);
    assert_int_equal(vram_model_state(model), VRAM_STATE_GPU);

    for (int i = 0; i < 10; i++) {
        assert_int_equal(vram_model_offload(model, 0), 0);
        assert_int_equal(vram_model_state(model), VRAM_STATE_CPU);
        assert_int_equal(dev_used(m), 0);
        assert_int_equal(vram_model_checksum(model, &got), 0); /* from the backup */
        assert_true(got == want);
        assert_int_equal(vram_model_acquire(model, &l), 0);
        assert_ptr_equal(vram_lease_ptr(l), addr); /* address-stable restore */
        assert_int_equal(vram_model_checksum(model, &got), 0);
        assert_true(got == want);
        vram_lease_end(l);
    }
    assert_int_equal(model->loads, 1);
    assert_int_equal(model->offloads, 10);
    assert_int_equal(model->restores, 10);

    /* offloading what is already offloaded is success, nothing to do */
    assert_int_equal(vram_model_offload(model, 0), 0);
    assert_int_equal(vram_model_offload(model, 0), 0);
    assert_int_equal(model->offloads, 11);

    assert_int_equal(vram_model_release(model, 0), 0);
    assert_int_equal(vram_model_state(model), VRAM_STATE_UNLOADED);
    assert_int_equal(dev_used(m), 0);
    assert_int_equal(m->host_used, 0);
    assert_int_equal(vram_model_checksum(model, &got), VRAM_ESTATE);
    assert_int_equal(vram_model_release(model, 0), 0); /* idempotent */

    assert_int_equal(vram_model_acquire(model, &l), 0); /* loads again */
    assert_int_equal(model->loads, 2);
    assert_int_equal(vram_model_checksum(model, &got), 0);
    assert_true(got == want);
    vram_lease_end(l);
    assert_int_equal(vram_model_release(model, 0), 0); /* from the GPU */
    vram_manager_destroy(m);
}

static void test_immediate_offload(void **state)
{
    (void)state;
    vram_manager *m = fake_manager(64 * MiB);
    vram_model *model = add_synthetic(m, "XCodec2", "synthetic:4M:1");
    assert_int_equal(vram_model_set_immediate_offload(model, 1), 0);
    vram_lease *a = NULL, *b = NULL;
    assert_int_equal(vram_model_acquire(model, &a), 0);
    assert_int_equal(vram_model_acquire(model, &b), 0);
    vram_lease_end(a);
    assert_int_equal(vram_model_state(model), VRAM_STATE_GPU); /* one lease left */
    vram_lease_end(b);
    assert_int_equal(vram_model_state(model), VRAM_STATE_CPU); /* the last one offloads */
    assert_int_equal(model->offloads, 1);
    vram_manager_destroy(m);
}

typedef struct race {
    vram_model *model;
    int rc;
    vram_lease *lease;
} race;

static void *acquire_thread(void *arg)
{
    race *r = arg;
    r->rc = vram_model_acquire(r->model, &r->lease);
    return NULL;
}

static void test_concurrent_acquirers_share_one_load(void **state)
{
    (void)state;
    vram_manager *m = fake_manager(64 * MiB);
    cb_state s = {.bytes = 2 * MiB, .seed = 3, .sleep_ms = 100};
    vram_model *model = add_callback(m, "cb", &s);
    enum { N = 8 };
    pthread_t t[N];
    race r[N];
    for (int i = 0; i < N; i++) {
        r[i].model = model;
        r[i].lease = NULL;
        pthread_create(&t[i], NULL, acquire_thread, &r[i]);
    }
    for (int i = 0; i < N; i++) pthread_join(t[i], NULL);
    assert_int_equal(s.calls, 1);
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].rc, 0);
        assert_ptr_equal(vram_lease_ptr(r[i].lease), s.ptr);
    }
    assert_int_equal(model->leases, N);
    for (int i = 0; i < N; i++) vram_lease_end(r[i].lease);
    assert_int_equal(model->leases, 0);
    vram_manager_destroy(m);
}

static void test_concurrent_acquirers_share_one_failure(void **state)
{
    (void)state;
    vram_manager *m = fake_manager(64 * MiB);
    cb_state s = {.bytes = 2 * MiB, .seed = 3, .sleep_ms = 100, .fail_with = VRAM_EIO};
    vram_model *model = add_callback(m, "cb", &s);
    enum { N = 4 };
    pthread_t t[N];
    race r[N];
    for (int i = 0; i < N; i++) {
        r[i].model = model;
        pthread_create(&t[i], NULL, acquire_thread, &r[i]);
    }
    for (int i = 0; i < N; i++) pthread_join(t[i], NULL);
    /* late arrivals may start a second try after the first failed, but
     * every waiter of a failed load sees a failure, never a half model */
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].rc, VRAM_EIO);
        assert_null(r[i].lease);
    }
    assert_true(s.calls >= 1 && s.calls <= N);
    assert_int_equal(vram_model_state(model), VRAM_STATE_UNLOADED);
    assert_int_equal(dev_used(m), 0);
    assert_non_null(strstr(model->last_error, "load failed"));
    vram_manager_destroy(m);
}

/* ---- deferral ---- */

typedef struct offload_call {
    vram_model *model;
    unsigned flags;
    int rc;
    int done;
    int release;
} offload_call;

/* Waits, at most 60 s (against a hang, not a timing check), until a thread
 * is blocked waiting on model's condition (an offload or release asked to
 * wait for the last lease); returns whether one is. */
static int wait_for_waiter(vram_model *model)
{
    for (int i = 0; i < 60000; i++) {
        pthread_mutex_lock(&model->m->lock);
        int w = model->waiters > 0;
        pthread_mutex_unlock(&model->m->lock);
        if (w) return 1;
        usleep(1000);
    }
    return 0;
}

/* The same for a thread waiting for device memory on manager m. */
static int wait_for_memory_waiter(vram_manager *m)
{
    for (int i = 0; i < 60000; i++) {
        pthread_mutex_lock(&m->lock);
        int w = m->mem_waiters > 0;
        pthread_mutex_unlock(&m->lock);
        if (w) return 1;
        usleep(1000);
    }
    return 0;
}

/* Waits, at most 60 s, until model is in state s; returns whether it is. */
static int wait_for_state(vram_model *model, vram_state s)
{
    for (int i = 0; i < 60000 && vram_model_state(model) != s; i++) usleep(1000);
    return vram_model_state(model) == s;
}

static void *offload_thread(void *arg)
{
    offload_call *c = arg;
    c->rc = c->release ? vram_model_release(c->model, c->flags) : vram_model_offload(c->model, c->flags);
    __atomic_store_n(&c->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void test_offload_under_lease(void **state)
{
    (void)state;
    vram_manager *m = fake_manager(64 * MiB);
    vram_model *model = add_synthetic(m, "m", "synthetic:4M:2");
    vram_lease *l = NULL;
    assert_int_equal(vram_model_acquire(model, &l), 0);

    /* refused when the caller asks not to wait */
    assert_int_equal(vram_model_offload(model, VRAM_NOWAIT), VRAM_EBUSY);
    assert_int_equal(vram_model_release(model, VRAM_NOWAIT), VRAM_EBUSY);
    assert_int_equal(vram_model_state(model), VRAM_STATE_GPU);

    /* deferred to the end of the last lease */
    assert_int_equal(vram_model_offload(model, VRAM_DEFER), VRAM_DEFERRED);
    assert_int_equal(vram_model_state(model), VRAM_STATE_GPU);
    vram_lease_end(l);
    assert_int_equal(vram_model_state(model), VRAM_STATE_CPU);

    /* deferred release */
    assert_int_equal(vram_model_acquire(model, &l), 0);
    assert_int_equal(vram_model_release(model, VRAM_DEFER), VRAM_DEFERRED);
    vram_lease_end(l);
    assert_int_equal(vram_model_state(model), VRAM_STATE_UNLOADED);

    /* waiting: the call returns once the lease ends, having offloaded */
    assert_int_equal(vram_model_acquire(model, &l), 0);
    offload_call c = {model, VRAM_WAIT, -99, 0, 0};
    pthread_t t;
    pthread_create(&t, NULL, offload_thread, &c);
    assert_true(wait_for_waiter(model)); /* the call is there, blocked on the lease */
    assert_int_equal(__atomic_load_n(&c.done, __ATOMIC_ACQUIRE), 0);
    assert_int_equal(vram_model_state(model), VRAM_STATE_GPU);
    vram_lease_end(l);
    pthread_join(t, NULL);
    assert_int_equal(c.rc, 0);
    assert_int_equal(vram_model_state(model), VRAM_STATE_CPU);

    /* the same for a waiting release */
    assert_int_equal(vram_model_acquire(model, &l), 0);
    offload_call r = {model, VRAM_WAIT, -99, 0, 1};
    pthread_create(&t, NULL, offload_thread, &r);
    assert_true(wait_for_waiter(model));
    assert_int_equal(__atomic_load_n(&r.done, __ATOMIC_ACQUIRE), 0);
    assert_int_equal(vram_model_state(model), VRAM_STATE_GPU);
    vram_lease_end(l);
    pthread_join(t, NULL);
    assert_int_equal(r.rc, 0);
    assert_int_equal(vram_model_state(model), VRAM_STATE_UNLOADED);
    vram_manager_destroy(m);
}

/* ---- nothing is lost ---- */

static void test_failed_load_frees_everything(void **state)
{
    (void)state;
    vram_manager *m = fake_manager(64 * MiB);
    vram_model *model = add_synthetic(m, "m", "synthetic:8M:5");
    vram__backend_inject(backend_of(m), "map", 1, VRAM_ENOMEM);
    vram_lease *l = NULL;
    int rc = vram_model_acquire(model, &l);
    assert_int_equal(rc, VRAM_ENOMEM);
    assert_null(l);
    assert_int_equal(vram_model_state(model), VRAM_STATE_UNLOADED);
    assert_int_equal(dev_used(m), 0);
    assert_int_equal(m->devs[0].mapped, 0);
    assert_non_null(strstr(model->last_error, "injected"));

    /* a copy failure in the middle of the load, too */
    vram__backend_inject(backend_of(m), "to_device", 1, VRAM_EBACKEND);
    assert_int_equal(vram_model_acquire(model, &l), VRAM_EBACKEND);
    assert_int_equal(dev_used(m), 0);

    /* and the next try works, with the right bytes */
    assert_int_equal(vram_model_acquire(model, &l), 0);
    uint64_t got = 0;
    assert_int_equal(vram_model_checksum(model, &got), 0);
    assert_true(got == expected_synthetic(8 * MiB, 5));
    vram_lease_end(l);
    assert_int_equal(model->failures, 2);
    vram_manager_destroy(m);
}

static void test_failed_restore_keeps_backup(void **state)
{
    (void)state;
    vram_manager *m = fake_manager(64 * MiB);
    vram_model *model = add_synthetic(m, "m", "synthetic:8M:6");
    uint64_t want = expected_synthetic(8 * MiB, 6), got = 0;
    vram_lease *l = NULL;
    assert_int_equal(vram_model_acquire(model, &l), 0);
    vram_lease_end(l);
    assert_int_equal(vram_model_offload(model, 0), 0);

    vram__backend_inject(backend_of(m), "map", 1, VRAM_ENOMEM);
    assert_int_equal(vram_model_acquire(model, &l), VRAM_ENOMEM);
    assert_int_equal(vram_model_state(model), VRAM_STATE_CPU);
    assert_int_equal(dev_used(m), 0);
    assert_int_equal(vram_model_checksum(model, &got), 0);
    assert_true(got == want);
    assert_non_null(strstr(model->last_error, "restore failed"));

    vram__backend_inject(backend_of(m), "to_device", 1, VRAM_EBACKEND);
    assert_int_equal(vram_model_acquire(model, &l), VRAM_EBACKEND);
    assert_int_equal(vram_model_state(model), VRAM_STATE_CPU);
    assert_int_equal(dev_used(m), 0);
    assert_int_equal(m->devs[0].mapped, 0);

    assert_int_equal(vram_model_acquire(model, &l), 0);
    assert_int_equal(vram_model_checksum(model, &got), 0);
    assert_true(got == want);
    vram_lease_end(l);
    vram_manager_destroy(m);
}

static void test_failed_offload_stays_on_gpu(void **state)
{
    (void)state;
    vram_manager *m = fake_manager(64 * MiB);
    vram_model *model = add_synthetic(m, "m", "synthetic:8M:8");
    uint64_t want = expected_synthetic(8 * MiB, 8), got = 0;
    vram_lease *l = NULL;
    assert_int_equal(vram_model_acquire(model, &l), 0);
    void *addr = vram_lease_ptr(l);
    vram_lease_end(l);

    vram__backend_inject(backend_of(m), "host_alloc", 1, VRAM_EHOSTMEM);
    assert_int_equal(vram_model_offload(model, 0), VRAM_EHOSTMEM);
    assert_int_equal(vram_model_state(model), VRAM_STATE_GPU);
    assert_int_equal(m->host_used, 0);

    vram__backend_inject(backend_of(m), "to_host", 1, VRAM_EBACKEND);
    assert_int_equal(vram_model_offload(model, 0), VRAM_EBACKEND);
    assert_int_equal(vram_model_state(model), VRAM_STATE_GPU);
    assert_int_equal(vram_model_checksum(model, &got), 0);
    assert_true(got == want);

    /* afterwards a cycle works and the bytes are the same */
    assert_int_equal(vram_model_offload(model, 0), 0);
    assert_int_equal(vram_model_acquire(model, &l), 0);
    assert_ptr_equal(vram_lease_ptr(l), addr);
    assert_int_equal(vram_model_checksum(model, &got), 0);
    assert_true(got == want);
    vram_lease_end(l);
    assert_int_equal(model->failures, 2);
    vram_manager_destroy(m);
}

static void test_callback_load_errors(void **state)
{
    (void)state;
    vram_manager *m = fake_manager(64 * MiB);
    cb_state none = {.alloc_none = 1};
    vram_model *a = add_callback(m, "none", &none);
    vram_lease *l = NULL;
    assert_int_equal(vram_model_acquire(a, &l), VRAM_ELOAD);
    assert_non_null(strstr(a->last_error, "vram_model_alloc"));

    cb_state fails = {.bytes = MiB, .fail_with = VRAM_EIO};
    vram_model *b = add_callback(m, "fails", &fails);
    assert_int_equal(vram_model_acquire(b, &l), VRAM_EIO);
    assert_int_equal(dev_used(m), 0);

    cb_state big = {.bytes = 512 * MiB};
    vram_model *c = add_callback(m, "big", &big);
    assert_int_equal(vram_model_acquire(c, &l), VRAM_ENOMEM);
    assert_non_null(strstr(c->last_error, "budget"));

    /* alloc outside a load is refused */
    void *p = NULL;
    assert_int_equal(vram_model_alloc(b, MiB, &p), VRAM_ESTATE);
    assert_null(p);
    vram_manager_destroy(m);
}

static void test_upload_download_bounds(void **state)
{
    (void)state;
    vram_manager *m = fake_manager(64 * MiB);
    cb_state s = {.bytes = MiB, .seed = 9};
    vram_model *model = add_callback(m, "cb", &s);
    vram_lease *l = NULL;
    char buf[64];
    assert_int_equal(vram_model_download(model, buf, (void *)0x10000, sizeof buf), VRAM_ESTATE);
    assert_int_equal(vram_model_acquire(model, &l), 0);
    char *p = vram_lease_ptr(l);
    assert_int_equal(vram_model_download(model, buf, p + MiB - 8, 8), 0);
    assert_int_equal(vram_model_download(model, buf, p + MiB - 8, 16), VRAM_EINVAL);
    assert_int_equal(vram_model_download(model, buf, p - 8, 8), VRAM_EINVAL);
    memset(buf, 0xab, sizeof buf);
    assert_int_equal(vram_model_upload(model, p + 100, buf, sizeof buf), 0);
    char back[64];
    assert_int_equal(vram_model_download(model, back, p + 100, sizeof back), 0);
    assert_memory_equal(buf, back, sizeof buf);
    vram_lease_end(l);
    vram_manager_destroy(m);
}

/* ---- budgets and eviction ---- */

static void test_lru_eviction(void **state)
{
    (void)state;
    /* 64 MiB device, 3 models of 24 MiB: two fit */
    vram_manager *m = fake_manager(64 * MiB);
    vram_model *a = add_synthetic(m, "a", "synthetic:24M:1");
    vram_model *b = add_synthetic(m, "b", "synthetic:24M:2");
    vram_model *c = add_synthetic(m, "c", "synthetic:24M:3");
    vram_lease *l = NULL;
    assert_int_equal(vram_model_acquire(a, &l), 0);
    vram_lease_end(l);
    fake_now += 1;
    assert_int_equal(vram_model_acquire(b, &l), 0);
    vram_lease_end(l);
    fake_now += 1;
    /* use a again: b becomes the least recently used */
    assert_int_equal(vram_model_acquire(a, &l), 0);
    vram_lease_end(l);
    fake_now += 1;
    assert_int_equal(vram_model_acquire(c, &l), 0);
    assert_int_equal(vram_model_state(b), VRAM_STATE_CPU);
    assert_int_equal(vram_model_state(a), VRAM_STATE_GPU);
    assert_int_equal(b->evictions, 1);

    /* c is leased and a is leased: nothing can be evicted for b */
    vram_lease *la = NULL, *lb = NULL;
    assert_int_equal(vram_model_acquire(a, &la), 0);
    assert_int_equal(vram_model_acquire(b, &lb), VRAM_ENOMEM);
    assert_null(lb);
    assert_int_equal(vram_model_state(b), VRAM_STATE_CPU); /* backup intact */
    assert_non_null(strstr(b->last_error, "nothing idle to evict"));
    uint64_t got = 0;
    assert_int_equal(vram_model_checksum(b, &got), 0);
    assert_true(got == expected_synthetic(24 * MiB, 2));

    /* leases end while b waits: it gets the memory */
    vram_lease_end(la);
    assert_int_equal(vram_model_acquire(b, &lb), 0); /* evicts a, never c (leased) */
    assert_int_equal(vram_model_state(a), VRAM_STATE_CPU);
    assert_int_equal(vram_model_state(c), VRAM_STATE_GPU);
    vram_lease_end(lb);
    vram_lease_end(l);
    vram_manager_destroy(m);
}

typedef struct waiter {
    vram_model *model;
    int rc;
} waiter;

static void *acquire_end_thread(void *arg)
{
    waiter *w = arg;
    vram_lease *l = NULL;
    w->rc = vram_model_acquire(w->model, &l);
    vram_lease_end(l);
    return NULL;
}

static void test_bounded_wait_for_memory(void **state)
{
    (void)state;
    vram_config cfg;
    test_config(&cfg, 64 * MiB);
    cfg.evict_wait = 3600; /* a bound that never ends the wait here: a lease's end does */
    cfg.no_monitor_thread = 1;
    vram_manager *m = NULL;
    assert_int_equal(vram_manager_create(&cfg, &m), 0);
    vram_model *a = add_synthetic(m, "a", "synthetic:40M:1");
    vram_model *b = add_synthetic(m, "b", "synthetic:40M:2");
    vram_lease *la = NULL;
    assert_int_equal(vram_model_acquire(a, &la), 0);
    waiter w = {b, -99};
    pthread_t t;
    pthread_create(&t, NULL, acquire_end_thread, &w);
    assert_true(wait_for_memory_waiter(m)); /* b waits for memory */
    assert_int_equal(vram_model_state(b), VRAM_STATE_LOADING);
    vram_lease_end(la); /* a becomes evictable */
    pthread_join(t, NULL);
    assert_int_equal(w.rc, 0);
    assert_int_equal(vram_model_state(a), VRAM_STATE_CPU);
    vram_manager_destroy(m);
}

/* The backend itself out of memory (full, or another process on a real
 * GPU) with nothing idle to evict: the acquire waits, bounded, and retries. */
static void test_backend_enomem_waits_and_retries(void **state)
{
    (void)state;
    vram_config cfg;
    test_config(&cfg, 64 * MiB);
    /* a bound far beyond the test's timeout: an acquire that waited for the
     * whole bound (rather than retrying after a short wait) would hang here */
    cfg.evict_wait = 3600;
    cfg.no_monitor_thread = 1;
    vram_manager *m = NULL;
    assert_int_equal(vram_manager_create(&cfg, &m), 0);
    vram_model *model = add_synthetic(m, "m", "synthetic:4M:1");
    vram__backend_inject(backend_of(m), "map", 1, VRAM_ENOMEM);
    vram_lease *l = NULL;
    assert_int_equal(vram_model_acquire(model, &l), 0);
    assert_int_equal(vram__backend_fault_fired(backend_of(m), "map"), 1); /* failed once, retried */
    assert_int_equal(vram_model_state(model), VRAM_STATE_GPU);
    assert_int_equal(model->failures, 0);
    vram_lease_end(l);
    vram_manager_destroy(m);
}

static void test_gpu_budget(void **state)
{
    (void)state;
    vram_config cfg;
    test_config(&cfg, 64 * MiB);
    char err[256];
    assert_int_equal(vram_config_set(&cfg, "VRAM_GPU_BUDGET", "50%", err, sizeof err), 0);
    cfg.no_monitor_thread = 1;
    vram_manager *m = NULL;
    assert_int_equal(vram_manager_create(&cfg, &m), 0);
    assert_int_equal(m->devs[0].budget, 32 * MiB);
    vram_model *a = add_synthetic(m, "a", "synthetic:24M:1");
    vram_model *b = add_synthetic(m, "b", "synthetic:24M:2");
    vram_lease *l = NULL;
    assert_int_equal(vram_model_acquire(a, &l), 0);
    vram_lease_end(l);
    assert_int_equal(vram_model_acquire(b, &l), 0); /* evicts a to stay in budget */
    vram_lease_end(l);
    assert_int_equal(vram_model_state(a), VRAM_STATE_CPU);
    vram_model *big = add_synthetic(m, "big", "synthetic:40M:3");
    assert_int_equal(vram_model_acquire(big, &l), VRAM_ENOMEM);
    assert_non_null(strstr(big->last_error, "VRAM_GPU_BUDGET"));
    vram_manager_destroy(m);
}

static void test_host_budget(void **state)
{
    (void)state;
    vram_config cfg;
    test_config(&cfg, 64 * MiB);
    cfg.host_budget.bytes = 20 * MiB;
    cfg.no_monitor_thread = 1;
    vram_manager *m = NULL;
    assert_int_equal(vram_manager_create(&cfg, &m), 0);
    vram_model *a = add_synthetic(m, "a", "synthetic:12M:1");
    vram_model *b = add_synthetic(m, "b", "synthetic:12M:2");
    vram_lease *l = NULL;
    assert_int_equal(vram_model_acquire(a, &l), 0);
    vram_lease_end(l);
    assert_int_equal(vram_model_acquire(b, &l), 0);
    vram_lease_end(l);
    assert_int_equal(vram_model_offload(a, 0), 0);
    /* b's backup does not fit next to a's: a's CPU copy is released */
    assert_int_equal(vram_model_offload(b, 0), 0);
    assert_int_equal(vram_model_state(a), VRAM_STATE_UNLOADED);
    assert_int_equal(vram_model_state(b), VRAM_STATE_CPU);
    assert_true(m->host_used <= 20 * MiB);
    /* a reloads from its source, bytes intact */
    assert_int_equal(vram_model_acquire(a, &l), 0);
    uint64_t got = 0;
    assert_int_equal(vram_model_checksum(a, &got), 0);
    assert_true(got == expected_synthetic(12 * MiB, 1));
    vram_lease_end(l);
    /* a backup larger than the whole host budget: the offload fails, model stays */
    vram_model *c = add_synthetic(m, "c", "synthetic:24M:3");
    assert_int_equal(vram_model_release(a, 0), 0);
    assert_int_equal(vram_model_acquire(c, &l), 0);
    vram_lease_end(l);
    assert_int_equal(vram_model_offload(c, 0), VRAM_EHOSTMEM);
    assert_int_equal(vram_model_state(c), VRAM_STATE_GPU);
    vram_manager_destroy(m);
}

/* ---- timeouts ---- */

static void test_idle_timeout_fake_clock(void **state)
{
    (void)state;
    vram_manager *m = fake_manager(64 * MiB);
    assert_int_equal(vram_manager_set_idle_timeout(m, 10), 0);
    vram_model *model = add_synthetic(m, "m", "synthetic:4M:1");
    vram_lease *l = NULL;
    assert_int_equal(vram_model_acquire(model, &l), 0);
    fake_now += 100; /* held for 100 s: idle time never counts during a lease */
    assert_int_equal(vram_manager_tick(m), 0);
    assert_int_equal(vram_model_state(model), VRAM_STATE_GPU);
    vram_lease_end(l);
    fake_now += 9.5;
    assert_int_equal(vram_manager_tick(m), 0);
    assert_int_equal(vram_model_state(model), VRAM_STATE_GPU);
    assert_true(fabs(m->monitor_next - (fake_now + 0.5)) < 1e-6); /* sleeps until the deadline */
    fake_now += 0.6;
    assert_int_equal(vram_manager_tick(m), 1);
    assert_int_equal(vram_model_state(model), VRAM_STATE_CPU);

    /* release timeout on the CPU, from the time it got there */
    assert_int_equal(vram_manager_set_release_timeout(m, 30), 0);
    fake_now += 29;
    assert_int_equal(vram_manager_tick(m), 0);
    fake_now += 2;
    assert_int_equal(vram_manager_tick(m), 1);
    assert_int_equal(vram_model_state(model), VRAM_STATE_UNLOADED);

    /* per-model timeout overrides; 0 = never */
    assert_int_equal(vram_model_acquire(model, &l), 0);
    vram_lease_end(l);
    assert_int_equal(vram_model_set_idle_timeout(model, 0), 0);
    fake_now += 1e6;
    assert_int_equal(vram_manager_tick(m), 0);
    assert_int_equal(vram_model_state(model), VRAM_STATE_GPU);
    assert_int_equal(vram_model_set_idle_timeout(model, 5), 0);
    assert_int_equal(vram_manager_tick(m), 1);
    /* a manager-wide change applies to every model again */
    assert_int_equal(vram_model_acquire(model, &l), 0);
    vram_lease_end(l);
    assert_int_equal(vram_manager_set_idle_timeout(m, 1000), 0);
    fake_now += 999;
    assert_int_equal(vram_manager_tick(m), 0);

    /* bad values */
    assert_int_equal(vram_manager_set_idle_timeout(m, -1), VRAM_EINVAL);
    assert_int_equal(vram_manager_set_idle_timeout(m, NAN), VRAM_EINVAL);
    assert_int_equal(vram_manager_set_idle_timeout(m, INFINITY), VRAM_EINVAL);
    assert_int_equal(vram_manager_set_idle_timeout(m, 1e12), VRAM_EINVAL);
    assert_int_equal(vram_model_set_idle_timeout(model, -0.5), VRAM_EINVAL);
    assert_int_equal(vram_model_set_release_timeout(model, NAN), VRAM_EINVAL);
    vram_manager_destroy(m);
}

static void test_monitor_thread_real_clock(void **state)
{
    (void)state;
    vram_config cfg;
    test_config(&cfg, 64 * MiB);
    cfg.idle_timeout = 0.2;
    vram_manager *m = NULL;
    assert_int_equal(vram_manager_create(&cfg, &m), 0);
    assert_true(vram_manager_monitor_running(m));
    vram_model *model = add_synthetic(m, "m", "synthetic:4M:1");
    vram_lease *l = NULL;
    assert_int_equal(vram_model_acquire(model, &l), 0);
    vram_lease_end(l);
    /* the monitor offloads it without anyone polling (a deadline of 60 s
     * against a hang: a loaded machine may take long) */
    assert_true(wait_for_state(model, VRAM_STATE_CPU));
    /* a timeout change at run time reaches the sleeping monitor */
    assert_int_equal(vram_manager_set_release_timeout(m, 0.2), 0);
    assert_true(wait_for_state(model, VRAM_STATE_UNLOADED));
    vram_manager_destroy(m);
}

/* ---- status JSON ---- */

static int load_says_why(vram_model *model, void *user)
{
    (void)user;
    void *p = NULL;
    int rc = vram_model_alloc(model, 1 << 20, &p);
    if (rc < 0) return rc;
    return vram_set_error(VRAM_ELOAD, "checkpoint %s: tensor 'lm_head' is missing", "x.safetensors");
}

/* When an idle model could not be evicted (its offload failed: here the
 * host budget has no room for its backup), the out-of-memory message says
 * so and why, rather than "nothing idle". */
static void test_enomem_says_why_idle_model_stayed(void **state)
{
    (void)state;
    vram_config cfg;
    test_config(&cfg, 64 * MiB);
    cfg.clock = fake_clock;
    cfg.no_monitor_thread = 1;
    cfg.host_budget.bytes = 8 * MiB;
    fake_now = 1000.0;
    vram_manager *m = NULL;
    assert_int_equal(vram_manager_create(&cfg, &m), 0);
    vram_model *a = add_synthetic(m, "a", "synthetic:40M:1");
    vram_model *b = add_synthetic(m, "b", "synthetic:40M:2");
    vram_lease *l = NULL;
    assert_int_equal(vram_model_acquire(a, &l), 0);
    vram_lease_end(l);
    l = NULL;
    assert_int_equal(vram_model_acquire(b, &l), VRAM_ENOMEM);
    assert_null(l);
    const char *why = vram_last_error();
    assert_non_null(strstr(why, "a (idle, but evicting it failed: offload failed"));
    assert_non_null(strstr(why, "VRAM_HOST_BUDGET"));
    assert_int_equal(vram_model_state(a), VRAM_STATE_GPU); /* nothing lost */
    vram_manager_destroy(m);
}

/* A load callback's own message (vram_set_error) becomes the model's last_error. */
static void test_load_callback_message(void **state)
{
    (void)state;
    vram_manager *m = fake_manager(64 * MiB);
    vram_model_opts o;
    vram_model_opts_init(&o);
    o.load = load_says_why;
    vram_model *model = NULL;
    assert_int_equal(vram_manager_register(m, "cb", &o, &model), 0);
    vram_lease *l = NULL;
    assert_int_equal(vram_model_acquire(model, &l), VRAM_ELOAD);
    assert_null(l);
    assert_non_null(strstr(vram_last_error(), "tensor 'lm_head' is missing"));
    vram_model_info mi;
    assert_int_equal(vram_model_get_info(model, &mi, sizeof mi), 0);
    assert_int_equal(mi.state, VRAM_STATE_UNLOADED);
    assert_non_null(strstr(mi.last_error, "checkpoint x.safetensors: tensor 'lm_head' is missing"));
    vram_device_status ds;
    assert_int_equal(vram_manager_devices(m, &ds, 1, sizeof ds), 1);
    assert_int_equal(ds.used_by_models_bytes, 0); /* every byte freed */
    vram_manager_destroy(m);
}

/* Status as data: one snapshot, counts, and structs that grow only at their end. */
static void test_status_structs(void **state)
{
    (void)state;
    vram_manager *m = fake_manager(64 * MiB);
    vram_model *a = add_synthetic(m, "a", "synthetic:2M:1");
    add_synthetic(m, "b", "synthetic:1M:2");
    assert_int_equal(vram_manager_models(m, NULL, 0, sizeof(vram_model_info)), 2);
    vram_model_info mi[3];
    memset(mi, 0x5a, sizeof mi);
    assert_int_equal(vram_manager_models(m, mi, 1, sizeof mi[0]), 2); /* too small: says so */
    assert_string_equal(mi[0].name, "a");
    assert_int_equal((unsigned char)mi[1].name[0], 0x5a); /* beyond cap: untouched */
    vram_lease *l = NULL;
    assert_int_equal(vram_model_acquire(a, &l), 0);
    assert_int_equal(vram_model_get_info(a, &mi[0], sizeof mi[0]), 0);
    assert_int_equal(mi[0].state, VRAM_STATE_GPU);
    assert_int_equal(mi[0].leases, 1);
    assert_int_equal(mi[0].bytes, 2 * MiB);
    assert_int_equal(mi[0].loads, 1);
    assert_true(mi[0].idle_seconds == 0); /* leased: not idle */
    vram_lease_end(l);
    fake_now += 5;
    assert_int_equal(vram_model_get_info(a, &mi[0], sizeof mi[0]), 0);
    assert_true(mi[0].idle_seconds == 5);
    assert_int_equal(mi[0].leases, 0);

    /* an embedder compiled against a shorter struct gets exactly its bytes */
    size_t old = offsetof(vram_model_info, bytes);
    unsigned char buf[2 * sizeof(vram_model_info)];
    memset(buf, 0xee, sizeof buf);
    assert_int_equal(vram_manager_models(m, (vram_model_info *)(void *)buf, 2, old), 2);
    assert_string_equal((const char *)buf, "a");
    assert_string_equal((const char *)buf + old, "b");
    assert_int_equal(buf[2 * old], 0xee);
    /* and one compiled against a longer struct gets zeros past ours */
    memset(buf, 0xee, sizeof buf);
    assert_int_equal(vram_model_get_info(a, (vram_model_info *)(void *)buf, sizeof(vram_model_info) + 16), 0);
    for (size_t i = sizeof(vram_model_info); i < sizeof(vram_model_info) + 16; i++)
        assert_int_equal(buf[i], 0);

    vram_device_status ds[2];
    assert_int_equal(vram_manager_devices(m, ds, 2, sizeof ds[0]), 1);
    assert_int_equal(ds[0].total_bytes, 64 * MiB);
    assert_int_equal(ds[0].used_by_models_bytes, 2 * MiB);
    vram_manager_info info;
    assert_int_equal(vram_manager_get_info(m, &info, sizeof info), 0);
    assert_string_equal(info.backend, "host");
    assert_int_equal(info.models, 2);
    assert_int_equal(info.devices, 1);
    assert_int_equal(info.monitor_running, 0);
    assert_int_equal(vram_manager_get_info(m, &info, 0), VRAM_EINVAL);
    assert_int_equal(vram_model_get_info(NULL, &mi[0], sizeof mi[0]), VRAM_EINVAL);
    assert_non_null(strstr(vram_last_error(), "required"));
    vram_manager_destroy(m);
}

static void test_status_json(void **state)
{
    (void)state;
    vram_manager *m = fake_manager(64 * MiB);
    vram_model *a = add_synthetic(m, "Llasa-8B", "synthetic:8M:1");
    add_synthetic(m, "XCodec2", "synthetic:4M:2");
    assert_int_equal(vram_manager_set_idle_timeout(m, 600), 0);
    vram_lease *l = NULL;
    assert_int_equal(vram_model_acquire(a, &l), 0);
    vram_lease_end(l);
    assert_int_equal(vram_model_offload(a, 0), 0);
    fake_now += 45.2;

    char *text = vram_manager_status_json(m);
    assert_non_null(text);
    json_error_t jerr;
    json_t *root = json_loads(text, 0, &jerr);
    assert_non_null(root);
    json_t *s = json_object_get(root, "Llasa-8B");
    assert_non_null(s);
    assert_string_equal(json_string_value(json_object_get(s, "model_name")), "Llasa-8B");
    assert_string_equal(json_string_value(json_object_get(s, "location")), "CPU");
    assert_string_equal(json_string_value(json_object_get(s, "state")), "cpu");
    assert_true(fabs(json_number_value(json_object_get(s, "idle_time_seconds")) - 45.2) < 0.01);
    assert_true(json_number_value(json_object_get(s, "idle_timeout_seconds")) == 600);
    assert_true(json_is_boolean(json_object_get(s, "monitor_running")));
    assert_false(json_is_true(json_object_get(s, "monitor_running"))); /* no thread here */
    json_t *g = json_object_get(json_object_get(s, "gpu_memory"), "GPU_0");
    assert_non_null(g);
    assert_true(json_is_number(json_object_get(g, "allocated_gb")));
    assert_true(json_is_number(json_object_get(g, "reserved_gb")));
    assert_true(fabs(json_number_value(json_object_get(g, "total_gb")) - 0.0625) < 0.001);
    assert_int_equal(json_integer_value(json_object_get(s, "bytes")), 8 * MiB);
    assert_int_equal(json_integer_value(json_object_get(s, "leases")), 0);
    assert_int_equal(json_integer_value(json_object_get(s, "loads")), 1);
    assert_int_equal(json_integer_value(json_object_get(s, "offloads")), 1);
    assert_true(json_is_number(json_object_get(s, "last_offload_seconds")));
    assert_true(json_is_number(json_object_get(s, "last_offload_gbps")));
    assert_true(json_is_number(json_object_get(s, "last_restore_gbps")));
    assert_true(json_number_value(json_object_get(s, "offload_seconds_total")) >=
                json_number_value(json_object_get(s, "last_offload_seconds")));
    assert_true(json_is_number(json_object_get(s, "load_seconds_total")));
    assert_true(json_is_number(json_object_get(s, "restore_seconds_total")));
    assert_true(json_is_null(json_object_get(s, "last_error")));
    json_t *x = json_object_get(root, "XCodec2");
    assert_string_equal(json_string_value(json_object_get(x, "location")), "未加载");
    assert_string_equal(json_string_value(json_object_get(x, "state")), "unloaded");
    json_decref(root);
    free(text);

    text = vram_model_status_json(m, "XCodec2");
    assert_non_null(text);
    root = json_loads(text, 0, &jerr);
    assert_string_equal(json_string_value(json_object_get(root, "model_name")), "XCodec2");
    json_decref(root);
    free(text);
    assert_null(vram_model_status_json(m, "nope"));

    text = vram_manager_devices_json(m);
    root = json_loads(text, 0, &jerr);
    assert_true(json_is_array(root));
    assert_int_equal(json_array_size(root), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(root, 0), "backend")),
                        "host");
    json_decref(root);
    free(text);
    vram_manager_destroy(m);
}

/* ---- registry and arguments ---- */

static void test_registry_and_bad_arguments(void **state)
{
    (void)state;
    vram_manager *m = fake_manager(64 * MiB);
    vram_model_opts o;
    vram_model_opts_init(&o);
    vram_model *model = NULL;
    assert_int_equal(vram_manager_register(m, "x", &o, &model), VRAM_EINVAL); /* no source */
    o.source = "synthetic:1M";
    assert_int_equal(vram_manager_register(m, "", &o, &model), VRAM_EINVAL);
    assert_int_equal(vram_manager_register(m, "a/b", &o, &model), VRAM_EINVAL);
    char longname[200];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_int_equal(vram_manager_register(m, longname, &o, &model), VRAM_EINVAL);
    assert_int_equal(vram_manager_register(m, "bad\xff\xfeutf8", &o, &model), VRAM_EINVAL);
    assert_int_equal(vram_manager_register(m, "模型-8B", &o, NULL), 0); /* UTF-8 is fine */
    assert_int_equal(vram_manager_register(m, "ok", &o, &model), 0);
    vram_model *dup = NULL;
    assert_int_equal(vram_manager_register(m, "ok", &o, &dup), VRAM_EEXIST);
    assert_null(dup);
    assert_ptr_equal(vram_manager_find(m, "ok"), model);
    assert_null(vram_manager_find(m, "missing"));
    o.source = "synthetic:0";
    assert_int_equal(vram_manager_register(m, "zero", &o, NULL), VRAM_EINVAL);
    o.source = "synthetic:-5M";
    assert_int_equal(vram_manager_register(m, "neg", &o, NULL), VRAM_EINVAL);
    o.source = "synthetic:1M:x";
    assert_int_equal(vram_manager_register(m, "seed", &o, NULL), VRAM_EINVAL);
    o.source = "/nonexistent/model.safetensors";
    assert_true(vram_manager_register(m, "file", &o, NULL) < 0);
    o.source = "synthetic:1M";
    o.device = 3;
    assert_int_equal(vram_manager_register(m, "dev", &o, NULL), VRAM_ENODEV);
    o.device = -1;
    o.idle_timeout = NAN;
    assert_int_equal(vram_manager_register(m, "nan", &o, NULL), VRAM_EINVAL);

    vram_lease *l = NULL;
    assert_int_equal(vram_model_acquire(model, &l), 0);
    assert_int_equal(vram_manager_unregister(m, "ok"), VRAM_EBUSY);
    vram_lease_end(l);
    assert_int_equal(vram_manager_unregister(m, "ok"), 0);
    assert_null(vram_manager_find(m, "ok"));
    assert_int_equal(vram_manager_unregister(m, "ok"), VRAM_ENOENT);
    assert_int_equal(dev_used(m), 0);

    assert_int_equal(vram_model_acquire(NULL, &l), VRAM_EINVAL);
    vram_lease_end(NULL);
    vram_manager_destroy(NULL);
    assert_string_equal(vram_err_name(VRAM_ENOMEM), "ENOMEM");
    assert_string_equal(vram_strerror(VRAM_EBUSY), "model is in use");
    assert_string_equal(vram_err_name(12345), "UNKNOWN");
    vram_manager_destroy(m);
}

static void test_status_survives_invalid_utf8(void **state)
{
    (void)state;
    vram_manager *m = fake_manager(64 * MiB);
    vram_model *model = add_synthetic(m, "m", "synthetic:1M");
    /* a driver message or a file name cut mid-character */
    snprintf(model->last_error, sizeof model->last_error, "load failed: /models/\xe6\xa8" "bad \xff");
    char *text = vram_manager_status_json(m);
    assert_non_null(text);
    json_error_t jerr;
    json_t *root = json_loads(text, 0, &jerr);
    assert_non_null(root);
    json_t *e = json_object_get(json_object_get(root, "m"), "last_error");
    assert_string_equal(json_string_value(e), "load failed: /models/??bad ?");
    json_decref(root);
    free(text);
    vram_manager_destroy(m);
}

static void test_offload_release_all(void **state)
{
    (void)state;
    vram_manager *m = fake_manager(64 * MiB);
    vram_model *a = add_synthetic(m, "a", "synthetic:4M:1");
    vram_model *b = add_synthetic(m, "b", "synthetic:4M:2");
    vram_lease *la = NULL, *lb = NULL;
    assert_int_equal(vram_model_acquire(a, &la), 0);
    assert_int_equal(vram_model_acquire(b, &lb), 0);
    vram_lease_end(lb);
    assert_int_equal(vram_manager_offload_all(m, VRAM_NOWAIT), VRAM_EBUSY);
    assert_int_equal(vram_model_state(b), VRAM_STATE_CPU); /* the others still went */
    assert_int_equal(vram_manager_offload_all(m, VRAM_DEFER), VRAM_DEFERRED);
    vram_lease_end(la);
    assert_int_equal(vram_model_state(a), VRAM_STATE_CPU);
    assert_int_equal(vram_manager_release_all(m, 0), 0);
    assert_int_equal(vram_model_state(a), VRAM_STATE_UNLOADED);
    assert_int_equal(vram_model_state(b), VRAM_STATE_UNLOADED);
    vram_manager_destroy(m);
}

static void test_checksum_function(void **state)
{
    (void)state;
    unsigned char buf[37];
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (unsigned char)(i * 7);
    uint64_t whole = vram_checksum(buf, sizeof buf);
    /* pieces at 8-byte boundaries add up to the whole */
    uint64_t parts = vram__checksum_partial(buf, 16, 0) + vram__checksum_partial(buf + 16, 21, 2) +
                     vram__checksum_final(sizeof buf);
    assert_true(whole == parts);
    buf[36] ^= 1;
    assert_true(vram_checksum(buf, sizeof buf) != whole);
    /* position matters: swapping two words changes it */
    unsigned char sw[16];
    memcpy(sw, buf + 8, 8);
    memcpy(sw + 8, buf, 8);
    assert_true(vram_checksum(sw, 16) != vram_checksum(buf, 16));
    /* synthetic bytes: any range is computable on its own */
    unsigned char all[100], part[30];
    vram_synthetic_fill(42, 0, all, sizeof all);
    vram_synthetic_fill(42, 13, part, sizeof part);
    assert_memory_equal(all + 13, part, sizeof part);
}

static void test_global_manager(void **state)
{
    (void)state;
    setenv("VRAM_BACKEND", "host", 1);
    setenv("VRAM_HOST_MEMORY", "64M", 1);
    setenv("VRAM_LOG_LEVEL", "error", 1);
    vram_manager *g = vram_global_manager(300);
    assert_non_null(g);
    assert_ptr_equal(vram_global_manager(-1), g);
    assert_string_equal(vram_manager_backend(g), "host");
    vram_model *model = add_synthetic(g, "global", "synthetic:1M");
    char *text = vram_model_status_json(g, "global");
    assert_non_null(strstr(text, "\"idle_timeout_seconds\": 300"));
    free(text);
    (void)model;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lazy_load_and_cycle),
        cmocka_unit_test(test_immediate_offload),
        cmocka_unit_test(test_concurrent_acquirers_share_one_load),
        cmocka_unit_test(test_concurrent_acquirers_share_one_failure),
        cmocka_unit_test(test_offload_under_lease),
        cmocka_unit_test(test_failed_load_frees_everything),
        cmocka_unit_test(test_failed_restore_keeps_backup),
        cmocka_unit_test(test_failed_offload_stays_on_gpu),
        cmocka_unit_test(test_callback_load_errors),
        cmocka_unit_test(test_upload_download_bounds),
        cmocka_unit_test(test_lru_eviction),
        cmocka_unit_test(test_bounded_wait_for_memory),
        cmocka_unit_test(test_backend_enomem_waits_and_retries),
        cmocka_unit_test(test_gpu_budget),
        cmocka_unit_test(test_host_budget),
        cmocka_unit_test(test_idle_timeout_fake_clock),
        cmocka_unit_test(test_monitor_thread_real_clock),
        cmocka_unit_test(test_status_structs),
        cmocka_unit_test(test_load_callback_message),
        cmocka_unit_test(test_enomem_says_why_idle_model_stayed),
        cmocka_unit_test(test_status_json),
        cmocka_unit_test(test_registry_and_bad_arguments),
        cmocka_unit_test(test_status_survives_invalid_utf8),
        cmocka_unit_test(test_offload_release_all),
        cmocka_unit_test(test_checksum_function),
        cmocka_unit_test(test_global_manager),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
