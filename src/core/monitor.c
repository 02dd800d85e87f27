/* monitor.c - the idle monitor: one thread per manager sleeping until the next deadline, offloading and releasing idle models. */
#include <math.h>
#include <stdio.h>
#include <time.h>

#include "core/core.h"

/* Does every due offload and release; returns how many, and leaves the
 * next deadline in m->monitor_next. Lock held; dropped while working. */
static int tick_locked(vram_manager *m)
{
    int done = 0;
    for (;;) {
        double now = vram__clock(m);
        double next = INFINITY;
        vram_model *victim = NULL;
        int release = 0;
        for (size_t i = 0; i < m->nmodels && !victim; i++) {
            vram_model *c = m->models[i];
            if (c->state == VRAM_STATE_GPU && c->leases == 0) {
                if (c->pending) {
                    victim = c;
                    release = (c->pending & PENDING_RELEASE) != 0;
                    break;
                }
                double it = vram__idle_timeout(c);
                if (it > 0) {
                    double dl = c->last_used + it;
                    if (dl <= now)
                        victim = c;
                    else if (dl < next)
                        next = dl;
                }
            } else if (c->state == VRAM_STATE_CPU && c->readers == 0) {
                double rt = vram__release_timeout(c);
                if (c->pending & PENDING_RELEASE) {
                    victim = c;
                    release = 1;
                } else if (rt > 0) {
                    double dl = c->cpu_since + rt;
                    if (dl <= now) {
                        victim = c;
                        release = 1;
                    } else if (dl < next) {
                        next = dl;
                    }
                }
            }
        }
        if (!victim) {
            m->monitor_next = next;
            return done;
        }
        if (release) {
            vram__log(VRAM_LOG_INFO, "monitor: release model=%s idle on %s", victim->name,
                      vram_state_location(victim->state));
            vram__release_locked(victim);
        } else {
            vram__log(VRAM_LOG_INFO, "monitor: offload model=%s idle %.1f s (timeout %.1f s)",
                      victim->name, now - victim->last_used, vram__idle_timeout(victim));
            vram__offload_locked(victim, 0);
        }
        done++;
    }
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
