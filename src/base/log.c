/* log.c - one line per event, to stderr or to the embedder's callback. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "base/base.h"

static struct {
    pthread_mutex_t lock; /* serializes callback changes and output lines */
    vram_log_level level;
    vram_log_fn fn;
    void *user;
} g_log = {PTHREAD_MUTEX_INITIALIZER, VRAM_LOG_INFO, NULL, NULL};

void vram_set_log_level(vram_log_level level)
{
    if (level < VRAM_LOG_ERROR) level = VRAM_LOG_ERROR;
    if (level > VRAM_LOG_DEBUG) level = VRAM_LOG_DEBUG;
    __atomic_store_n(&g_log.level, level, __ATOMIC_RELAXED);
}

void vram_set_log_callback(vram_log_fn fn, void *user)
{
    pthread_mutex_lock(&g_log.lock);
    g_log.fn = fn;
    g_log.user = user;
    pthread_mutex_unlock(&g_log.lock);
}

int vram__log_enabled(vram_log_level level)
{
    return level <= __atomic_load_n(&g_log.level, __ATOMIC_RELAXED);
}

static void vlog(vram_log_level level, const char *fmt, va_list ap)
{
    static const char *const names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
    if (level < VRAM_LOG_ERROR) level = VRAM_LOG_ERROR;
    if (level > VRAM_LOG_DEBUG) level = VRAM_LOG_DEBUG;
    if (!vram__log_enabled(level)) return;
    char line[1024];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, names[level]);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    /* one event, one line: no newline may split it */
    for (char *p = line; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    pthread_mutex_lock(&g_log.lock);
    if (g_log.fn)
        g_log.fn(level, line, g_log.user);
    else
        fprintf(stderr, "%s\n", line);
    pthread_mutex_unlock(&g_log.lock);
}

int vram_log_enabled(vram_log_level level)
{
    return vram__log_enabled(level);
}

void vram__log(vram_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level, fmt, ap);
    va_end(ap);
}

void vram_log(vram_log_level level, const char *fmt, ...)
{
    if (!fmt) return;
    va_list ap;
    va_start(ap, fmt);
    vlog(level, fmt, ap);
    va_end(ap);
}
