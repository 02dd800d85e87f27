/* test_stress.c - many threads doing random acquire/end/offload/release/timeout changes; budget invariants at every step, exact books at barriers and at the end, checksums. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/core.h"
#include "vram.h"
#include "vram_server.h"

#define MiB (1024ULL * 1024ULL)
#define NMODELS 3
#define NTHREADS 6

static vram_manager *g_m;
static vram_model *g_models[NMODELS];
static uint64_t g_want[NMODELS];
static int g_ops_per_thread = 300;
static double g_deadline;

typedef struct counts {
    int acquires, enomem, offloads, releases, busy, deferred, checks, timeouts;
    int bad;
    char why[256];
} counts;

static unsigned next_rand(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return (*s >> 16) & 0x7fff;
}

/* What holds at every moment, even while a model is mid-transition (the
 * lock is held: every charge and its flag, every map and its count change
 * together under it): each device's charge within its budget, and never
 * more mapped than charged. Models in a final state are checked one by one:
 * leases only on the GPU, nothing mapped on the CPU. */
static int invariants_locked(vram_manager *m, char *why, size_t len)
{
    for (int d = 0; d < m->ndev; d++) {
        if (m->devs[d].used > m->devs[d].budget) {
            snprintf(why, len, "device %d: charge %llu over its budget %llu", d,
                     (unsigned long long)m->devs[d].used, (unsigned long long)m->devs[d].budget);
            return 0;
        }
        if (m->devs[d].mapped > m->devs[d].used) {
            snprintf(why, len, "device %d: mapped %llu > charged %llu", d,
                     (unsigned long long)m->devs[d].mapped, (unsigned long long)m->devs[d].used);
            return 0;
        }
    }
    for (size_t i = 0; i < m->nmodels; i++) {
        vram_model *c = m->models[i];
        if (c->state != VRAM_STATE_GPU && c->state != VRAM_STATE_CPU &&
            c->state != VRAM_STATE_UNLOADED)
            continue; /* its owner changes its allocations outside the lock */
        if (c->leases > 0 && c->state != VRAM_STATE_GPU) {
            snprintf(why, len, "%s has %d leases in state %s", c->name, c->leases,
                     vram_state_name(c->state));
            return 0;
        }
        if (c->state == VRAM_STATE_CPU && c->nallocs && c->allocs[0].buf.mapped) {
            snprintf(why, len, "%s is on the CPU with memory mapped", c->name);
            return 0;
        }
    }
    return 1;
}

static int sample_invariants(char *why, size_t len)
{
    pthread_mutex_lock(&g_m->lock);
    int ok = invariants_locked(g_m, why, len);
    pthread_mutex_unlock(&g_m->lock);
    return ok;
}

/* At a quiescent point (no worker runs; only the monitor may): waits, at
 * most 60 s, for a moment with no model mid-transition, and then, under the
 * lock, requires the books to balance exactly: each device's charge equals
 * its charged allocations, its mapped count the mapped ones, the host's use
 * the backups. Never skipped: a model stuck mid-transition fails it. */
static int books_balance(char *why, size_t len)
{
    vram_manager *m = g_m;
    double give_up = vram__now() + 60;
    for (;;) {
        pthread_mutex_lock(&m->lock);
        const char *busy = NULL;
        for (size_t i = 0; i < m->nmodels && !busy; i++) {
            vram_state st = m->models[i]->state;
            if (st != VRAM_STATE_GPU && st != VRAM_STATE_CPU && st != VRAM_STATE_UNLOADED)
                busy = m->models[i]->name;
        }
        if (!busy) break; /* lock held: nothing can start a transition now */
        pthread_mutex_unlock(&m->lock);
        if (vram__now() > give_up) {
            snprintf(why, len, "model %s still mid-transition after 60 s at a quiescent point",
                     busy);
            return 0;
        }
        usleep(1000);
    }
    int ok = invariants_locked(m, why, len);
    uint64_t charged[8] = {0}, mapped[8] = {0}, host = 0;
    for (size_t i = 0; ok && i < m->nmodels; i++) {
        vram_model *c = m->models[i];
        for (size_t k = 0; k < c->nallocs; k++) {
            int d = c->allocs[k].buf.device;
            if (c->allocs[k].charged) charged[d] += c->allocs[k].buf.reserved;
            if (c->allocs[k].buf.mapped) mapped[d] += c->allocs[k].buf.size;
            if (c->allocs[k].backup) host += c->allocs[k].buf.size;
        }
    }
    for (int d = 0; ok && d < m->ndev && d < 8; d++) {
        if (charged[d] != m->devs[d].used) {
            snprintf(why, len, "device %d charge %llu != charged allocations %llu", d,
                     (unsigned long long)m->devs[d].used, (unsigned long long)charged[d]);
            ok = 0;
        } else if (mapped[d] != m->devs[d].mapped) {
            snprintf(why, len, "device %d mapped %llu != mapped allocations %llu", d,
                     (unsigned long long)m->devs[d].mapped, (unsigned long long)mapped[d]);
            ok = 0;
        }
    }
    if (ok && host != m->host_used) {
        snprintf(why, len, "host used %llu != backups %llu", (unsigned long long)m->host_used,
                 (unsigned long long)host);
        ok = 0;
    }
    pthread_mutex_unlock(&m->lock);
    return ok;
}

/* Rounds: every worker does its share of a round's operations, then all
 * meet at a barrier where one of them checks the books while the others
 * wait; a quiescent point in the middle of the storm. */
#define ROUNDS 5
static pthread_barrier_t g_barrier;
static int g_abort; /* atomic: a worker failed; the others stop working, not meeting */
static int g_quiescent_checks;
static char g_quiescent_why[256];

static void meet(void)
{
    if (pthread_barrier_wait(&g_barrier) == PTHREAD_BARRIER_SERIAL_THREAD) {
        g_quiescent_checks++;
        if (!books_balance(g_quiescent_why, sizeof g_quiescent_why))
            __atomic_store_n(&g_abort, 1, __ATOMIC_RELAXED);
    }
    pthread_barrier_wait(&g_barrier);
}

static void *worker(void *arg)
{
    counts *c = arg;
    unsigned seed = (unsigned)(uintptr_t)arg * 2654435761u;
    int per_round = (g_ops_per_thread + ROUNDS - 1) / ROUNDS;
    for (int i = 0; i < g_ops_per_thread; i++) {
        if (i > 0 && i % per_round == 0) meet();
        if (c->bad) __atomic_store_n(&g_abort, 1, __ATOMIC_RELAXED);
        if (__atomic_load_n(&g_abort, __ATOMIC_RELAXED) || vram__now() >= g_deadline) continue;
        int k = (int)(next_rand(&seed) % NMODELS);
        vram_model *model = g_models[k];
        unsigned r = next_rand(&seed) % 100;
        if (r < 50) {
            vram_lease *l = NULL;
            int rc = vram_model_acquire(model, &l);
            if (rc == VRAM_ENOMEM) {
                c->enomem++;
                continue;
            }
            if (rc < 0) {
                snprintf(c->why, sizeof c->why, "acquire %s: %s %s", model->name,
                         vram_err_name(rc), vram__last_error());
                c->bad = 1;
                continue;
            }
            c->acquires++;
            if (vram_model_state(model) != VRAM_STATE_GPU) {
                snprintf(c->why, sizeof c->why, "leased model %s not on GPU", model->name);
                c->bad = 1;
            }
            if (next_rand(&seed) % 4 == 0) {
                uint64_t got = 0;
                rc = vram_model_checksum(model, &got);
                c->checks++;
                if (rc < 0 || got != g_want[k]) {
                    snprintf(c->why, sizeof c->why, "checksum of %s under lease: rc %d", model->name,
                             rc);
                    c->bad = 1;
                }
            }
            if (next_rand(&seed) % 3 == 0) usleep(200);
            vram_lease_end(l);
        } else if (r < 70) {
            static const unsigned flags[] = {VRAM_WAIT, VRAM_NOWAIT, VRAM_DEFER};
            int rc = vram_model_offload(model, flags[next_rand(&seed) % 3]);
            if (rc == VRAM_EBUSY)
                c->busy++;
            else if (rc == VRAM_DEFERRED)
                c->deferred++;
            else if (rc < 0 && rc != VRAM_EHOSTMEM) {
                snprintf(c->why, sizeof c->why, "offload %s: %s", model->name, vram_err_name(rc));
                c->bad = 1;
            } else
                c->offloads++;
        } else if (r < 80) {
            static const unsigned flags[] = {VRAM_NOWAIT, VRAM_DEFER, VRAM_WAIT};
            int rc = vram_model_release(model, flags[next_rand(&seed) % 3]);
            if (rc == VRAM_EBUSY)
                c->busy++;
            else if (rc == VRAM_DEFERRED)
                c->deferred++;
            else if (rc < 0) {
                snprintf(c->why, sizeof c->why, "release %s: %s", model->name, vram_err_name(rc));
                c->bad = 1;
            } else
                c->releases++;
        } else if (r < 88) {
            double t = (double)(next_rand(&seed) % 20) / 1000.0; /* 0..19 ms, 0 = never */
            if (next_rand(&seed) % 2)
                vram_manager_set_idle_timeout(g_m, t);
            else
                vram_model_set_idle_timeout(model, t);
            c->timeouts++;
        } else if (r < 92) {
            vram_manager_set_release_timeout(g_m, (double)(next_rand(&seed) % 3) * 0.01);
            c->timeouts++;
        } else if (r < 96) {
            uint64_t got = 0;
            int rc = vram_model_checksum(model, &got);
            if (rc == 0 && got != g_want[k]) {
                snprintf(c->why, sizeof c->why, "checksum of %s (no lease) differs", model->name);
                c->bad = 1;
            }
            c->checks += rc == 0;
        } else {
            char *s = vram_manager_status_json(g_m);
            if (!s) {
                snprintf(c->why, sizeof c->why, "status json NULL");
                c->bad = 1;
            }
            free(s);
        }
        if (!c->bad && !sample_invariants(c->why, sizeof c->why)) c->bad = 1;
    }
    meet(); /* the last round's end */
    return NULL;
}

static int g_log_lines;
static void count_log(vram_log_level level, const char *line, void *user)
{
    (void)level, (void)line, (void)user;
    __atomic_add_fetch(&g_log_lines, 1, __ATOMIC_RELAXED);
}

static void test_random_operations(void **state)
{
    (void)state;
    vram_set_log_callback(count_log, NULL); /* expected ENOMEM lines, counted not printed */
    vram_config cfg;
    vram_config_init(&cfg);
    cfg.backend = VRAM_BACKEND_HOST;
    cfg.host_memory = 10 * MiB; /* two of the three 4 MiB models fit */
    cfg.evict_wait = 0.05;
    cfg.log_level = VRAM_LOG_ERROR;
    cfg.idle_timeout = 0.005;
    cfg.chunk_bytes = MiB;
    assert_int_equal(vram_manager_create(&cfg, &g_m), 0);
    for (int k = 0; k < NMODELS; k++) {
        char name[16], spec[64];
        snprintf(name, sizeof name, "m%d", k);
        snprintf(spec, sizeof spec, "synthetic:4M:%d", k + 11);
        vram_model_opts o;
        vram_model_opts_init(&o);
        o.source = spec;
        o.immediate_offload = k == 2;
        assert_int_equal(vram_manager_register(g_m, name, &o, &g_models[k]), 0);
        unsigned char *p = malloc(4 * MiB);
        vram_synthetic_fill((uint64_t)k + 11, 0, p, 4 * MiB);
        g_want[k] = vram_checksum(p, 4 * MiB);
        free(p);
    }
    const char *ops = getenv("VRAM_STRESS_OPS");
    if (ops) g_ops_per_thread = atoi(ops);
    g_deadline = vram__now() + 60; /* bounded in time as well as count */

    assert_int_equal(pthread_barrier_init(&g_barrier, NULL, NTHREADS), 0);
    pthread_t t[NTHREADS];
    counts c[NTHREADS];
    memset(c, 0, sizeof c);
    for (int i = 0; i < NTHREADS; i++) pthread_create(&t[i], NULL, worker, &c[i]);
    counts total;
    memset(&total, 0, sizeof total);
    for (int i = 0; i < NTHREADS; i++) {
        pthread_join(t[i], NULL);
        if (c[i].bad) fail_msg("thread %d: %s", i, c[i].why);
        total.acquires += c[i].acquires;
        total.enomem += c[i].enomem;
        total.offloads += c[i].offloads;
        total.releases += c[i].releases;
        total.busy += c[i].busy;
        total.deferred += c[i].deferred;
        total.checks += c[i].checks;
    }
    pthread_barrier_destroy(&g_barrier);
    if (g_quiescent_why[0]) fail_msg("at a quiescent point: %s", g_quiescent_why);
    int per_round = (g_ops_per_thread + ROUNDS - 1) / ROUNDS;
    int meets = g_ops_per_thread > 0 ? (g_ops_per_thread - 1) / per_round + 1 : 1;
    assert_int_equal(g_quiescent_checks, meets); /* every barrier checked the books */
    print_message("quiescent checks %d; ", g_quiescent_checks);
    print_message("acquires %d (enomem %d) offloads %d releases %d busy %d deferred %d checks %d\n",
                  total.acquires, total.enomem, total.offloads, total.releases, total.busy,
                  total.deferred, total.checks);
    assert_true(total.acquires > 0);

    /* quiet now: the books balance and every model still has its bytes */
    vram_manager_set_idle_timeout(g_m, 0);
    vram_manager_set_release_timeout(g_m, 0);
    char why[256] = "";
    if (!books_balance(why, sizeof why)) fail_msg("%s", why);
    for (int k = 0; k < NMODELS; k++) {
        vram_lease *l = NULL;
        assert_int_equal(vram_model_acquire(g_models[k], &l), 0);
        uint64_t got = 0;
        assert_int_equal(vram_model_checksum(g_models[k], &got), 0);
        assert_true(got == g_want[k]);
        assert_int_equal(g_models[k]->leases, 1);
        vram_lease_end(l);
    }
    if (!books_balance(why, sizeof why)) fail_msg("%s", why);
    vram_manager_destroy(g_m);
    vram_set_log_callback(NULL, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_operations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
