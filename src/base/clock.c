/* clock.c - monotonic seconds. */
#include <time.h>

#include "base/base.h"

double vram__now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
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
