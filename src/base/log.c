/* log.c - one line per event, to stderr or to the embedder's callback, and to listeners (event logs). */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "base/base.h"

#define LISTENERS_MAX 8

typedef struct listener {
    vram_log_fn fn; /* NULL: a free slot */
    void *user;
    vram_log_level max_level;
} listener;

static struct {
    pthread_mutex_t lock; /* serializes callback and listener changes and output lines */
    vram_log_level level;
    vram_log_fn fn;
    void *user;
    listener listeners[LISTENERS_MAX];
    int listen_level; /* the highest max_level of the listeners, -1 when none */
} g_log = {PTHREAD_MUTEX_INITIALIZER, VRAM_LOG_INFO, NULL, NULL, {{0}}, -1};

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

/* Recomputes listen_level; g_log.lock held. */
static void listen_level_update(void)
{
    int top = -1;
    for (int i = 0; i < LISTENERS_MAX; i++)
        if (g_log.listeners[i].fn && (int)g_log.listeners[i].max_level > top)
            top = (int)g_log.listeners[i].max_level;
    __atomic_store_n(&g_log.listen_level, top, __ATOMIC_RELAXED);
}

int vram_log_listen(vram_log_fn fn, void *user, vram_log_level max_level)
{
    if (!fn) return VRAM_EINVAL;
    int id = VRAM_EHOSTMEM;
    pthread_mutex_lock(&g_log.lock);
    for (int i = 0; i < LISTENERS_MAX; i++) {
        if (g_log.listeners[i].fn) continue;
        g_log.listeners[i] = (listener){fn, user, max_level};
        id = i + 1;
        break;
    }
    listen_level_update();
    pthread_mutex_unlock(&g_log.lock);
    return id;
}

void vram_log_unlisten(int id)
{
    if (id < 1 || id > LISTENERS_MAX) return;
    pthread_mutex_lock(&g_log.lock);
    g_log.listeners[id - 1].fn = NULL;
    listen_level_update();
    pthread_mutex_unlock(&g_log.lock);
}

/* Lines of this level go to stderr or the callback. */
static int output_enabled(vram_log_level level)
{
    return level <= __atomic_load_n(&g_log.level, __ATOMIC_RELAXED);
}

int vram__log_enabled(vram_log_level level)
{
    return output_enabled(level) ||
           (int)level <= __atomic_load_n(&g_log.listen_level, __ATOMIC_RELAXED);
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
    int out = output_enabled(level);
    pthread_mutex_lock(&g_log.lock);
    if (out && g_log.fn)
        g_log.fn(level, line, g_log.user);
    else if (out)
        fprintf(stderr, "%s\n", line);
    for (int i = 0; i < LISTENERS_MAX; i++)
        if (g_log.listeners[i].fn && level <= g_log.listeners[i].max_level)
            g_log.listeners[i].fn(level, line, g_log.listeners[i].user);
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
