/* test_backoff.c - the core under faults and traffic: failed background offloads back off without starving others or blocking shutdown; a pending offload or release overtakes new leases. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "backend/backend.h"
#include "core/core.h"
#include "vram.h"

#define MiB (1024ULL * 1024ULL)

/* A hang is a failure, not a stuck CI job: each test arms this. */
static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "test_faults: a test hung (alarm); failing\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    _exit(1);
}

static void watchdog(unsigned seconds)
{
    signal(SIGALRM, on_alarm);
    alarm(seconds);
}

static double fake_now;
static double fake_clock(void *user)
{
    (void)user;
    return fake_now;
}

static vram_manager *manager(uint64_t host_budget, int fake, double idle)
{
    vram_config cfg;
    vram_config_init(&cfg);
    cfg.backend = VRAM_BACKEND_HOST;
    cfg.fault_injection = 1;
    cfg.host_memory = 64 * MiB;
    cfg.host_devices = 1;
    cfg.evict_wait = 0;
    cfg.log_level = VRAM_LOG_ERROR;
    cfg.chunk_bytes = 4 * MiB;
    cfg.host_budget.bytes = host_budget;
    cfg.idle_timeout = idle;
    if (fake) {
        cfg.clock = fake_clock;
        cfg.no_monitor_thread = 1;
        fake_now = 1000.0;
    }
    vram_manager *m = NULL;
    assert_int_equal(vram_manager_create(&cfg, &m), 0);
    return m;
}

static vram_model *add(vram_manager *m, const char *name, const char *spec)
{
    vram_model_opts o;
    vram_model_opts_init(&o);
    o.source = spec;
    vram_model *model = NULL;
    assert_int_equal(vram_manager_register(m, name, &o, &model), 0);
    return model;
}

static void touch(vram_model *model)
{
    vram_lease *l = NULL;
    assert_int_equal(vram_model_acquire(model, &l), 0);
    vram_lease_end(l);
}

static uint64_t failures(vram_model *model)
{
    vram_model_info info;
    assert_int_equal(vram_model_get_info(model, &info, sizeof info), 0);
    return info.failures;
}

/* ---- 1. a failed background offload ---- */

/* Item 1: "big" cannot be backed up (host budget); the monitor offloads
 * "small" anyway, tries "big" once per round and then only after a back-off. */
static void test_failed_idle_offload_backs_off(void **state)
{
    (void)state;
    watchdog(120);
    vram_manager *m = manager(8 * MiB, 1, 10);
    vram_model *big = add(m, "big", "synthetic:12M:1");
    vram_model *small = add(m, "small", "synthetic:4M:2");
    touch(big);
    touch(small);
    fake_now += 11;
    vram_manager_tick(m); /* before the fix: spins on "big" for ever */
    assert_int_equal(vram_model_state(big), VRAM_STATE_GPU);
    assert_int_equal(vram_model_state(small), VRAM_STATE_CPU);
    assert_int_equal(failures(big), 1);
    /* the same instant: no retry */
    assert_int_equal(vram_manager_tick(m), 0);
    assert_int_equal(failures(big), 1);
    assert_true(m->monitor_next > fake_now && !isinf(m->monitor_next));
    /* after the back-off: one more try, then a longer wait */
    fake_now += 1.5;
    vram_manager_tick(m);
    assert_int_equal(failures(big), 2);
    double first_wait = m->monitor_next - fake_now;
    fake_now += 2.5;
    vram_manager_tick(m);
    assert_int_equal(failures(big), 3);
    assert_true(m->monitor_next - fake_now > first_wait);
    vram_manager_destroy(m);
}

/* Item 1 with a pinned allocation failing (the CUDA case), then succeeding:
 * the back-off ends with the offload. */
static void test_failed_pinned_alloc_retried(void **state)
{
    (void)state;
    watchdog(120);
    vram_manager *m = manager(0, 1, 10);
    vram_model *a = add(m, "a", "synthetic:4M:1");
    touch(a);
    vram__backend_inject(m->backend, "host_alloc", 1, VRAM_EHOSTMEM);
    fake_now += 11;
    vram_manager_tick(m);
    assert_int_equal(vram_model_state(a), VRAM_STATE_GPU);
    assert_int_equal(failures(a), 1);
    vram_model_info info;
    assert_int_equal(vram_model_get_info(a, &info, sizeof info), 0);
    assert_non_null(strstr(info.last_error, "injected"));
    fake_now += 1.5;
    assert_int_equal(vram_manager_tick(m), 1);
    assert_int_equal(vram_model_state(a), VRAM_STATE_CPU);
    assert_int_equal(failures(a), 1);
    vram_manager_destroy(m);
}

/* Item 1: with the monitor thread failing on a model, the manager still
 * stops (SIGTERM in vramd), and acquiring that model still works. */
static void test_stop_while_offload_fails(void **state)
{
    (void)state;
    watchdog(120);
    vram_manager *m = manager(8 * MiB, 0, 0.05);
    vram_model *big = add(m, "big", "synthetic:12M:1");
    touch(big);
    for (int i = 0; i < 200 && failures(big) < 1; i++)
        usleep(10 * 1000);
    assert_true(failures(big) >= 1);
    usleep(300 * 1000);
    assert_true(failures(big) <= 4); /* backing off, not spinning */
    vram_lease *l = NULL;
    assert_int_equal(vram_model_acquire(big, &l), 0);
    vram_lease_end(l);
    vram_manager_destroy(m); /* before the fix: never returns */
}

/* The eviction loop: a victim whose offload fails is tried once per charge,
 * and the charge fails with ENOMEM instead of spinning. */
static void test_failed_eviction_not_retried_in_a_loop(void **state)
{
    (void)state;
    watchdog(120);
    vram_config cfg;
    vram_config_init(&cfg);
    cfg.backend = VRAM_BACKEND_HOST;
    cfg.fault_injection = 1;
    cfg.host_memory = 16 * MiB;
    cfg.host_devices = 1;
    cfg.evict_wait = 0;
    cfg.log_level = VRAM_LOG_ERROR;
    cfg.host_budget.bytes = 4 * MiB;
    cfg.no_monitor_thread = 1;
    vram_manager *m = NULL;
    assert_int_equal(vram_manager_create(&cfg, &m), 0);
    vram_model *a = add(m, "a", "synthetic:10M:1");
    vram_model *b = add(m, "b", "synthetic:10M:2");
    touch(a);
    vram_lease *l = NULL;
    assert_int_equal(vram_model_acquire(b, &l), VRAM_ENOMEM);
    assert_int_equal(vram_model_state(a), VRAM_STATE_GPU);
    assert_true(failures(a) >= 1 && failures(a) <= 2);
    vram_manager_destroy(m);
}

/* ---- 3. a pending offload under steady traffic ---- */

typedef struct traffic {
    vram_model *model;
    int stop;
    int acquired;
} traffic;

static void *traffic_main(void *arg)
{
    traffic *t = arg;
    while (!__atomic_load_n(&t->stop, __ATOMIC_ACQUIRE)) {
        vram_lease *l = NULL;
        if (vram_model_acquire(t->model, &l) == 0) {
            __atomic_add_fetch(&t->acquired, 1, __ATOMIC_RELAXED);
            usleep(2000);
            vram_lease_end(l);
        }
    }
    return NULL;
}

/* Overlapping leases from four threads; an offload asked for (WAIT, then
 * DEFER) and a release happen while the traffic goes on. */
static void test_pending_offload_under_traffic(void **state)
{
    (void)state;
    watchdog(240);
    vram_manager *m = manager(0, 1, 0);
    vram_model *a = add(m, "a", "synthetic:4M:1");
    touch(a);
    traffic t = {.model = a};
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, traffic_main, &t), 0);
    while (__atomic_load_n(&t.acquired, __ATOMIC_RELAXED) < 50)
        usleep(1000);
    vram_model_info info;
    assert_int_equal(vram_model_offload(a, VRAM_WAIT), 0); /* before the fix: never returns */
    assert_int_equal(vram_model_get_info(a, &info, sizeof info), 0);
    assert_true(info.offloads >= 1);
    uint64_t before = info.offloads;
    int r;
    while ((r = vram_model_offload(a, VRAM_DEFER)) == 0) /* 0: it was on the CPU just then */
        usleep(1000);
    assert_int_equal(r, VRAM_DEFERRED);
    for (int i = 0; i < 3000; i++) {
        assert_int_equal(vram_model_get_info(a, &info, sizeof info), 0);
        if (info.offloads > before) break;
        usleep(10 * 1000);
    }
    assert_true(info.offloads > before);
    assert_int_equal(vram_model_release(a, VRAM_WAIT), 0);
    assert_int_equal(vram_model_get_info(a, &info, sizeof info), 0);
    assert_true(info.releases >= 1);
    int seen = __atomic_load_n(&t.acquired, __ATOMIC_RELAXED);
    while (__atomic_load_n(&t.acquired, __ATOMIC_RELAXED) < seen + 20)
        usleep(1000); /* traffic goes on after: restored or loaded again */
    __atomic_store_n(&t.stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    vram_manager_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_failed_idle_offload_backs_off),
        cmocka_unit_test(test_failed_pinned_alloc_retried),
        cmocka_unit_test(test_stop_while_offload_fails),
        cmocka_unit_test(test_failed_eviction_not_retried_in_a_loop),
        cmocka_unit_test(test_pending_offload_under_traffic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
