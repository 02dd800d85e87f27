/* clock.c - monotonic seconds. */
#include <time.h>

#include "base/base.h"

double vram__now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void vram__deadline_after(struct timespec *ts, double seconds)
{
    if (!(seconds > 0)) seconds = 0;
    clock_gettime(CLOCK_MONOTONIC, ts);
    time_t whole = (time_t)seconds;
    ts->tv_sec += whole;
    ts->tv_nsec += (long)((seconds - (double)whole) * 1e9);
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static _Thread_local double tls_pin_seconds;

void vram__pin_seconds_add(double secs)
{
    tls_pin_seconds += secs;
}

double vram__pin_seconds(void)
{
    return tls_pin_seconds;
}
