/* monitor.c - the idle monitor: one thread per manager sleeping until the next deadline, offloading and releasing idle models. */
#include <math.h>
#include <stdio.h>
#include <time.h>

#include "core/core.h"

#define RETRY_FIRST 1.0 /* seconds before the first retry of a failed background offload */
#define RETRY_MAX 300.0 /* the longest back-off */

/* The next model due for an offload (*release 0) or a release (*release 1),
 * or NULL; lowers *next to the earliest later deadline. A model whose last
 * background offload failed waits for its retry_at. Lock held. */
static vram_model *pick_due(vram_manager *m, double now, double *next, int *release)
{
    for (size_t i = 0; i < m->nmodels; i++) {
        vram_model *c = m->models[i];
        if (c->state == VRAM_STATE_GPU && c->leases == 0) {
            if (c->pending) {
                *release = (c->pending & PENDING_RELEASE) != 0;
                return c;
            }
            double it = vram__idle_timeout(c);
            if (it <= 0) continue;
            double dl = c->last_used + it;
            if (c->retry_at > dl) dl = c->retry_at;
            if (dl <= now) {
                *release = 0;
                return c;
            }
            if (dl < *next) *next = dl;
        } else if (c->state == VRAM_STATE_CPU && c->readers == 0) {
            double rt = vram__release_timeout(c);
            double dl = (c->pending & PENDING_RELEASE) ? now : rt > 0 ? c->cpu_since + rt : INFINITY;
            if (dl <= now) {
                *release = 1;
                return c;
            }
            if (dl < *next) *next = dl;
        }
    }
    return NULL;
}

/* After a failed background offload: the next try waits, doubling. */
static void back_off(vram_model *model, double now)
{
    double d = model->retry_delay > 0 ? model->retry_delay * 2 : RETRY_FIRST;
    model->retry_delay = d > RETRY_MAX ? RETRY_MAX : d;
    model->retry_at = now + model->retry_delay;
    vram__log(VRAM_LOG_DEBUG, "monitor: offload model=%s failed; next try in %.0f s", model->name,
              model->retry_delay);
}

/* Does every due offload and release; returns how many, and leaves the
 * next deadline in m->monitor_next. Lock held; dropped while working. A
 * failure backs off that model and goes on with the others; a stopping
 * manager ends the round. */
static int tick_locked(vram_manager *m)
{
    int done = 0;
    while (!m->stopping) {
        double now = vram__clock(m);
        double next = INFINITY;
        int release = 0;
        vram_model *victim = pick_due(m, now, &next, &release);
        if (!victim) {
            m->monitor_next = next;
            return done;
        }
        if (release) {
            vram__log(VRAM_LOG_INFO, "monitor: release model=%s idle on %s", victim->name,
                      vram_state_location(victim->state));
            vram__release_locked(victim);
        } else {
            vram__log(victim->retry_delay > 0 ? VRAM_LOG_DEBUG : VRAM_LOG_INFO,
                      "monitor: offload model=%s idle %.1f s (timeout %.1f s)", victim->name,
                      now - victim->last_used, vram__idle_timeout(victim));
            if (vram__offload_locked(victim, 0) < 0) back_off(victim, vram__clock(m));
        }
        done++;
    }
    m->monitor_next = INFINITY;
    return done;
}

void *vram__monitor_main(void *arg)
{
    vram_manager *m = arg;
    pthread_mutex_lock(&m->lock);
    while (!m->stopping) {
        tick_locked(m);
        if (m->stopping) break;
        double next = m->monitor_next;
        m->monitor_waiting = 1;
        if (isinf(next) && next > 0) {
            pthread_cond_wait(&m->monitor_cond, &m->lock);
        } else {
            double wait = next - vram__clock(m);
            if (wait > 0) {
                if (wait > 86400) wait = 86400;
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                ts.tv_sec += (time_t)wait;
                ts.tv_nsec += (long)((wait - (double)(time_t)wait) * 1e9) + 1000000L;
                while (ts.tv_nsec >= 1000000000L) {
                    ts.tv_sec++;
                    ts.tv_nsec -= 1000000000L;
                }
                pthread_cond_timedwait(&m->monitor_cond, &m->lock, &ts);
            }
        }
        m->monitor_waiting = 0;
    }
    m->monitor_running = 0;
    pthread_mutex_unlock(&m->lock);
    return NULL;
}

int vram_manager_tick(vram_manager *m)
{
    if (!m) return 0;
    pthread_mutex_lock(&m->lock);
    int n = tick_locked(m);
    pthread_mutex_unlock(&m->lock);
    return n;
}

void vram_manager_wake(vram_manager *m)
{
    if (!m) return;
    pthread_mutex_lock(&m->lock);
    m->monitor_next = -INFINITY;
    pthread_cond_signal(&m->monitor_cond);
    pthread_mutex_unlock(&m->lock);
}

int vram_manager_monitor_running(vram_manager *m)
{
    if (!m) return 0;
    pthread_mutex_lock(&m->lock);
    int r = m->monitor_running;
    pthread_mutex_unlock(&m->lock);
    return r;
}
