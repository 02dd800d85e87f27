/* test_faults.c - every fault point, every call: a scenario rerun failing call k of each backend operation until it runs clean, checking that nothing is lost after every step. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backend/backend.h"
#include "core/core.h"
#include "vram.h"

/*
 * SQLite's way of testing allocation failures, applied to the backend: a
 * fixed scenario (lazy loads, offloads, restores, releases, an eviction, a
 * model with three allocations, models on two devices) runs on a fresh
 * manager with call k of one operation armed to fail, for k = 1, 2, ...
 * until a run completes without the fault firing. After every step of
 * every run the rules of "nothing is lost" are checked against memory read
 * directly (not through the backend, whose calls are being failed):
 *
 * - every model is in a stable state (unloaded, gpu, cpu) and a step that
 *   failed did so only because the armed fault fired;
 * - a failed load leaves the model unloaded with no allocation; a failed
 *   restore leaves it on the CPU with its backup; a failed offload leaves
 *   it on the GPU;
 * - the bytes of a model on the GPU are its bytes, and so are those of its
 *   backup on the CPU (compared with memcmp against the expected content);
 * - the books balance: each device's charged and mapped bytes are the sums
 *   over the models' allocations, the host backend's used memory is what is
 *   mapped, the host books are the sum of the backups;
 * - at the end, with the fault cleared, every model loads or restores with
 *   its bytes, and after releasing everything no device memory is used
 *   (ASan's leak check covers the host side).
 *
 * Fresh memory is poisoned (VRAM_HOST_POISON, set here too), so a rollback
 * that forgets to copy shows as poison.
 */

#define MiB ((size_t)1 << 20)
#define MAX_RUNS 400 /* per operation: far above the calls the scenario makes */

/* ---- the models and their expected bytes ---- */

enum { M_A, M_B, M_C, M_E, NMODELS };

typedef struct expect {
    size_t nallocs;
    size_t size[3];
    unsigned char *bytes[3];
} expect;

static expect g_expect[NMODELS];

static const char *const g_names[NMODELS] = {"A", "B", "C", "E"};

/* B: a callback model with three allocations of odd sizes */
static const size_t b_sizes[3] = {1 * MiB, 1 * MiB + 5, MiB / 2 + 123};

static unsigned char *synthetic(uint64_t seed, size_t n)
{
    unsigned char *p = malloc(n);
    assert_non_null(p);
    vram_synthetic_fill(seed, 0, p, n);
    return p;
}

static int setup_expect(void **state)
{
    (void)state;
    g_expect[M_A] = (expect){1, {4 * MiB}, {synthetic(1, 4 * MiB)}};
    g_expect[M_B].nallocs = 3;
    for (int i = 0; i < 3; i++) {
        g_expect[M_B].size[i] = b_sizes[i];
        g_expect[M_B].bytes[i] = synthetic(100 + (uint64_t)i, b_sizes[i]);
    }
    g_expect[M_C] = (expect){1, {3 * MiB}, {synthetic(2, 3 * MiB)}};
    g_expect[M_E] = (expect){1, {8 * MiB}, {synthetic(3, 8 * MiB)}};
    return 0;
}

static int teardown_expect(void **state)
{
    (void)state;
    for (int i = 0; i < NMODELS; i++)
        for (size_t j = 0; j < g_expect[i].nallocs; j++) free(g_expect[i].bytes[j]);
    return 0;
}

static int load_b(vram_model *model, void *user)
{
    (void)user;
    for (int i = 0; i < 3; i++) {
        void *p = NULL;
        int rc = vram_model_alloc(model, b_sizes[i], &p);
        if (rc < 0) return rc;
        rc = vram_model_upload(model, p, g_expect[M_B].bytes[i], b_sizes[i]);
        if (rc < 0) return rc;
    }
    return 0;
}

/* ---- one run ---- */

typedef struct run {
    vram_manager *m;
    vram_model *mod[NMODELS];
    const char *op; /* the operation armed, or NULL */
    int err;        /* its error */
    int fired;      /* fires seen so far */
    int step;
} run;

static vram_manager *make_manager(void)
{
    vram_config cfg;
    vram_config_init(&cfg);
    cfg.backend = VRAM_BACKEND_HOST;
    cfg.host_memory = 16 * MiB;
    cfg.host_devices = 2;
    cfg.evict_wait = 0;
    cfg.log_level = VRAM_LOG_ERROR + (getenv("VRAM_TEST_VERBOSE") ? 3 : 0);
    cfg.chunk_bytes = 2 * MiB; /* several chunks per copy */
    cfg.no_monitor_thread = 1;
    cfg.fault_injection = 1;
    vram_manager *m = NULL;
    assert_int_equal(vram_manager_create(&cfg, &m), 0);
    return m;
}

static void register_models(run *r)
{
    const char *src[NMODELS] = {"synthetic:4M:1", NULL, "synthetic:3M:2", "synthetic:8M:3"};
    for (int i = 0; i < NMODELS; i++) {
        vram_model_opts o;
        vram_model_opts_init(&o);
        o.source = src[i];
        if (!src[i]) o.load = load_b;
        if (i == M_C) o.device = 1;
        assert_int_equal(vram_manager_register(r->m, g_names[i], &o, &r->mod[i]), 0);
    }
}

#define FAILR(r, ...)                                                                           \
    do {                                                                                        \
        char what_[512];                                                                        \
        snprintf(what_, sizeof what_, __VA_ARGS__);                                             \
        fail_msg("fault %s #%d, step %d: %s", (r)->base.op ? (r)->base.op : "(none)", (r)->k, (r)->base.step, \
                 what_);                                                                        \
    } while (0)

typedef struct runk {
    run base;
    int k;
} runk;

/* Checks every rule above on every model; lock taken here. */
static void check_all(runk *rk)
{
    run *r = &rk->base;
    vram_manager *m = r->m;
    pthread_mutex_lock(&m->lock);
    uint64_t used[2] = {0, 0}, mapped[2] = {0, 0}, reserved_mapped[2] = {0, 0}, host = 0;
    for (int i = 0; i < NMODELS; i++) {
        vram_model *mo = r->mod[i];
        const expect *e = &g_expect[i];
        vram_state st = mo->state;
        if (st != VRAM_STATE_UNLOADED && st != VRAM_STATE_GPU && st != VRAM_STATE_CPU) {
            pthread_mutex_unlock(&m->lock);
            FAILR(rk, "model %s in transitional state %s", g_names[i], vram_state_name(st));
        }
        if (mo->leases != 0) {
            pthread_mutex_unlock(&m->lock);
            FAILR(rk, "model %s holds %d leases", g_names[i], mo->leases);
        }
        if (st == VRAM_STATE_UNLOADED && mo->nallocs != 0) {
            pthread_mutex_unlock(&m->lock);
            FAILR(rk, "unloaded model %s keeps %zu allocations", g_names[i], mo->nallocs);
        }
        if (st != VRAM_STATE_UNLOADED && mo->nallocs != e->nallocs) {
            pthread_mutex_unlock(&m->lock);
            FAILR(rk, "model %s has %zu allocations, not %zu", g_names[i], mo->nallocs,
                  e->nallocs);
        }
        for (size_t j = 0; j < mo->nallocs; j++) {
            vram_alloc *a = &mo->allocs[j];
            int d = a->buf.device;
            if (a->buf.size != e->size[j]) {
                pthread_mutex_unlock(&m->lock);
                FAILR(rk, "model %s allocation %zu is %zu bytes, not %zu", g_names[i], j,
                      a->buf.size, e->size[j]);
            }
            if (a->charged) used[d] += a->buf.reserved;
            if (a->buf.mapped) {
                mapped[d] += a->buf.size;
                reserved_mapped[d] += a->buf.reserved;
            }
            if (a->backup) host += a->buf.size;
            if (a->buf.mapped != a->charged) {
                pthread_mutex_unlock(&m->lock);
                FAILR(rk, "model %s allocation %zu: mapped %d but charged %d", g_names[i], j,
                      a->buf.mapped, a->charged);
            }
            if (st == VRAM_STATE_GPU) {
                if (!a->buf.mapped) {
                    pthread_mutex_unlock(&m->lock);
                    FAILR(rk, "model %s on the GPU with allocation %zu unmapped", g_names[i], j);
                }
                if (memcmp((const void *)a->buf.addr, e->bytes[j], e->size[j]) != 0) {
                    pthread_mutex_unlock(&m->lock);
                    FAILR(rk, "model %s on the GPU: bytes of allocation %zu differ", g_names[i],
                          j);
                }
            }
            if (st == VRAM_STATE_CPU) {
                if (!a->backup || memcmp(a->backup, e->bytes[j], e->size[j]) != 0) {
                    pthread_mutex_unlock(&m->lock);
                    FAILR(rk, "model %s on the CPU: backup of allocation %zu %s", g_names[i], j,
                          a->backup ? "differs" : "is missing");
                }
            }
        }
    }
    for (int d = 0; d < 2; d++) {
        if (m->devs[d].used != used[d] || m->devs[d].mapped != mapped[d]) {
            uint64_t du = m->devs[d].used, dm = m->devs[d].mapped;
            pthread_mutex_unlock(&m->lock);
            FAILR(rk, "device %d books: used %llu (allocations say %llu), mapped %llu (say %llu)",
                  d, (unsigned long long)du, (unsigned long long)used[d],
                  (unsigned long long)dm, (unsigned long long)mapped[d]);
        }
    }
    if (m->host_used != host) {
        uint64_t hu = m->host_used;
        pthread_mutex_unlock(&m->lock);
        FAILR(rk, "host books: %llu bytes, backups hold %llu", (unsigned long long)hu,
              (unsigned long long)host);
    }
    pthread_mutex_unlock(&m->lock);
    for (int d = 0; d < 2; d++) {
        vram_dev_info info;
        assert_int_equal(vram__backend_device_info(m->backend, d, &info), 0);
        if (info.total - info.free != reserved_mapped[d])
            FAILR(rk, "device %d: the backend has %llu bytes mapped, the models %llu", d,
                  (unsigned long long)(info.total - info.free),
                  (unsigned long long)reserved_mapped[d]);
    }
}

/* A step's rc: 0, or a failure caused by the armed fault firing in it. */
static void step_done(runk *rk, int rc, const char *what)
{
    run *r = &rk->base;
    int fired = r->op ? vram__backend_fault_fired(r->m->backend, r->op) : 0;
    int fired_now = fired > r->fired;
    r->fired = fired;
    if (rc < 0 && !fired_now)
        FAILR(rk, "%s failed with %s (%s) though no fault fired", what, vram_err_name(rc),
              vram_last_error());
    if (rc < 0 && !strstr(vram_last_error(), "injected") && rc != VRAM_ENOMEM)
        FAILR(rk, "%s: the error does not name the injected fault: %s", what, vram_last_error());
    check_all(rk);
    r->step++;
}

static uint64_t expected_checksum(int i)
{
    /* one allocation: the checksum of its bytes (several: not used) */
    return vram_checksum(g_expect[i].bytes[0], g_expect[i].size[0]);
}

/* Acquire (load or restore), check the state the rules promise, end. */
static void use(runk *rk, int i, int with_checksum)
{
    run *r = &rk->base;
    vram_model *mo = r->mod[i];
    vram_state before = vram_model_state(mo);
    vram_lease *l = NULL;
    int rc = vram_model_acquire(mo, &l);
    if (rc == 0) {
        if (with_checksum) {
            uint64_t sum = 0;
            int crc = vram_model_checksum(mo, &sum);
            if (crc == 0 && sum != expected_checksum(i))
                FAILR(rk, "model %s: checksum %016llx, expected %016llx", g_names[i],
                      (unsigned long long)sum, (unsigned long long)expected_checksum(i));
            vram_lease_end(l);
            step_done(rk, crc, "checksum");
            return;
        }
        vram_lease_end(l);
    } else {
        vram_state after = vram_model_state(mo);
        vram_state want = before == VRAM_STATE_GPU ? VRAM_STATE_GPU
                          : before == VRAM_STATE_CPU ? VRAM_STATE_CPU
                                                     : VRAM_STATE_UNLOADED;
        if (after != want)
            FAILR(rk, "failed acquire of %s from %s left it %s, not %s", g_names[i],
                  vram_state_name(before), vram_state_name(after), vram_state_name(want));
    }
    step_done(rk, rc, "acquire");
}

static void offload(runk *rk, int i)
{
    vram_model *mo = rk->base.mod[i];
    vram_state before = vram_model_state(mo);
    int rc = vram_model_offload(mo, VRAM_WAIT);
    if (rc < 0 && before == VRAM_STATE_GPU && vram_model_state(mo) != VRAM_STATE_GPU)
        FAILR(rk, "failed offload of %s left it %s", g_names[i],
              vram_state_name(vram_model_state(mo)));
    step_done(rk, rc, "offload");
}

static void release(runk *rk, int i)
{
    vram_model *mo = rk->base.mod[i];
    int rc = vram_model_release(mo, VRAM_WAIT);
    if (rc == 0 && vram_model_state(mo) != VRAM_STATE_UNLOADED)
        FAILR(rk, "release of %s left it %s", g_names[i], vram_state_name(vram_model_state(mo)));
    step_done(rk, rc, "release");
}

/* The scenario. Returns with the fault possibly still armed. */
static void scenario(runk *rk)
{
    use(rk, M_A, 1);   /* lazy load of a source model, checksum on the device */
    use(rk, M_B, 0);   /* a callback model with three allocations */
    use(rk, M_C, 1);   /* device 1 */
    offload(rk, M_A);
    offload(rk, M_B);
    use(rk, M_A, 1);   /* restore */
    use(rk, M_B, 0);   /* restore of three allocations */
    use(rk, M_E, 0);   /* 8 MiB on a 16 MiB device with A (4) and B (6) idle on it: eviction */
    use(rk, M_A, 1);   /* back, evicting again */
    offload(rk, M_C);
    release(rk, M_B);  /* release from whatever state */
    use(rk, M_B, 0);   /* a second load */
    use(rk, M_C, 1);   /* restore on device 1 */
    offload(rk, M_E);
    release(rk, M_A);
    use(rk, M_E, 1);
}

/* With the fault cleared: every model comes back with its bytes, then
 * everything is released and no device memory is left in use. */
static void finish(runk *rk)
{
    run *r = &rk->base;
    if (r->op) vram__backend_inject(r->m->backend, r->op, 0, 0);
    r->op = NULL;
    for (int i = 0; i < NMODELS; i++) {
        if (i == M_E) offload(rk, M_E); /* room for the others */
        vram_lease *l = NULL;
        int rc = vram_model_acquire(r->mod[i], &l);
        if (rc != 0)
            FAILR(rk, "final acquire of %s: %s (%s)", g_names[i], vram_err_name(rc),
                  vram_last_error());
        vram_lease_end(l);
        check_all(rk);
    }
    for (int i = 0; i < NMODELS; i++) release(rk, i);
    for (int d = 0; d < 2; d++) {
        vram_dev_info info;
        assert_int_equal(vram__backend_device_info(r->m->backend, d, &info), 0);
        if (info.free != info.total)
            FAILR(rk, "device %d: %llu bytes still in use after releasing everything", d,
                  (unsigned long long)(info.total - info.free));
    }
    vram_manager_destroy(r->m);
    r->m = NULL;
}

/* Runs the scenario failing call k of op with err; returns whether the
 * fault fired. */
static int run_once(const char *op, int k, int err)
{
    runk rk;
    memset(&rk, 0, sizeof rk);
    rk.k = k;
    rk.base.m = make_manager();
    register_models(&rk.base);
    if (op) {
        assert_int_equal(vram__backend_inject(rk.base.m->backend, op, k, err), 0);
        rk.base.op = op;
        rk.base.err = err;
    }
    scenario(&rk);
    int fired = op ? vram__backend_fault_fired(rk.base.m->backend, op) : 0;
    if (fired > 1) FAILR(&rk, "the fault fired %d times", fired);
    finish(&rk);
    return fired;
}

/* Every call k of op, until a run completes without reaching it. */
static void every_call(const char *op, int err)
{
    int k = 1;
    while (run_once(op, k, err)) {
        k++;
        if (k > MAX_RUNS) fail_msg("%s: still firing after %d runs", op, MAX_RUNS);
    }
    /* at least one call was failed: the scenario reaches this point */
    if (k < 2) fail_msg("%s: the scenario never calls it", op);
    print_message("%-10s %-9s failed at each of its %d calls\n", op, vram_err_name(err), k - 1);
}

static void test_scenario_clean(void **state)
{
    (void)state;
    assert_int_equal(run_once(NULL, 0, 0), 0);
}

static void test_every_reserve(void **state) { (void)state; every_call("reserve", VRAM_EBACKEND); }
static void test_every_map(void **state) { (void)state; every_call("map", VRAM_EBACKEND); }
static void test_every_map_enomem(void **state) { (void)state; every_call("map", VRAM_ENOMEM); }
static void test_every_map_piece(void **state) { (void)state; every_call("map_piece", VRAM_EBACKEND); }
static void test_every_unmap(void **state) { (void)state; every_call("unmap", VRAM_EBACKEND); }
static void test_every_host_alloc(void **state) { (void)state; every_call("host_alloc", VRAM_EHOSTMEM); }
static void test_every_to_host(void **state) { (void)state; every_call("to_host", VRAM_EBACKEND); }
static void test_every_to_device(void **state) { (void)state; every_call("to_device", VRAM_EBACKEND); }
static void test_every_checksum(void **state) { (void)state; every_call("checksum", VRAM_EBACKEND); }

int main(void)
{
    setenv("VRAM_HOST_POISON", "1", 1); /* fresh memory lies like real memory */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scenario_clean),
        cmocka_unit_test(test_every_reserve),
        cmocka_unit_test(test_every_map),
        cmocka_unit_test(test_every_map_enomem),
        cmocka_unit_test(test_every_map_piece),
        cmocka_unit_test(test_every_unmap),
        cmocka_unit_test(test_every_host_alloc),
        cmocka_unit_test(test_every_to_host),
        cmocka_unit_test(test_every_to_device),
        cmocka_unit_test(test_every_checksum),
    };
    return cmocka_run_group_tests_name("faults", tests, setup_expect, teardown_expect);
}
