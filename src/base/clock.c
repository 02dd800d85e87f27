/* clock.c - monotonic seconds. */
#include <time.h>

#include "base/base.h"

double vram__now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

