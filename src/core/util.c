/* util.c - error names and details, logging, clock, checksum and synthetic bytes. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "internal.h"

/* ---- errors ---- */

const char *vram_strerror(int err)
{
    switch (err) {
    case VRAM_OK: return "success";
#define VRAM_ERR_MSG_(name, val, msg) case VRAM_##name: return msg;
        VRAM_ERRNO_MAP(VRAM_ERR_MSG_)
#undef VRAM_ERR_MSG_
    default: return "unknown error";
    }
}

const char *vram_err_name(int err)
{
    switch (err) {
    case VRAM_OK: return "OK";
#define VRAM_ERR_NAME_(name, val, msg) case VRAM_##name: return #name;
        VRAM_ERRNO_MAP(VRAM_ERR_NAME_)
#undef VRAM_ERR_NAME_
    default: return "UNKNOWN";
    }
}

static _Thread_local char tls_errmsg[VRAM_ERRMSG_MAX];

int vram__errorf(int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tls_errmsg, sizeof tls_errmsg, fmt, ap);
    va_end(ap);
    return err;
}

int vram__errorf_to(char *err, size_t errlen, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tls_errmsg, sizeof tls_errmsg, fmt, ap);
    va_end(ap);
    if (err && errlen) snprintf(err, errlen, "%s", tls_errmsg);
    return code;
}

const char *vram__last_error(void) { return tls_errmsg; }

void vram__clear_error(void) { tls_errmsg[0] = '\0'; }

/* ---- logging ---- */

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

void vram__log(vram_log_level level, const char *fmt, ...)
{
    static const char *const names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
    if (!vram__log_enabled(level)) return;
    char line[1024];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, names[level]);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
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

/* ---- UTF-8 ---- */

/* Length of the valid UTF-8 sequence at p, or 0 when it is not one. */
static size_t utf8_seq(const unsigned char *p)
{
    unsigned c = p[0];
    if (c < 0x80) return 1;
    size_t n;
    unsigned min, cp;
    if (c >= 0xc2 && c <= 0xdf) n = 2, min = 0x80, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef) n = 3, min = 0x800, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4) n = 4, min = 0x10000, cp = c & 0x07;
    else return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return n;
}

char *vram__utf8_clean(char *s)
{
    unsigned char *p = (unsigned char *)s;
    while (*p) {
        size_t n = utf8_seq(p);
        if (n == 0) {
            *p++ = '?';
        } else {
            p += n;
        }
    }
    return s;
}

int vram__utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        size_t n = utf8_seq(p);
        if (n == 0) return 0;
        p += n;
    }
    return 1;
}

/* ---- sizes ---- */

vram__hsize vram__human(uint64_t bytes)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    vram__hsize h;
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024.0 && u < 5) {
        v /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(h.s, sizeof h.s, "%llu B", (unsigned long long)bytes);
    else
        snprintf(h.s, sizeof h.s, v < 10 ? "%.2f %s" : "%.1f %s", v, units[u]);
    return h;
}

/* ---- clock ---- */

double vram__now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- checksum ---- */

uint64_t vram__checksum_partial(const void *data, size_t n, uint64_t first_word)
{
    const unsigned char *p = data;
    uint64_t sum = 0, idx = first_word;
    size_t words = n / 8;
    for (size_t i = 0; i < words; i++, idx++) {
        uint64_t w;
        memcpy(&w, p + i * 8, 8); /* little-endian hosts only (x86-64, arm64) */
        sum += vram__mix64(w + idx * VRAM_GOLDEN);
    }
    size_t tail = n % 8;
    if (tail) {
        uint64_t w = 0;
        memcpy(&w, p + words * 8, tail);
        sum += vram__mix64(w + idx * VRAM_GOLDEN);
    }
    return sum;
}

uint64_t vram__checksum_final(uint64_t total_bytes)
{
    return vram__mix64(total_bytes ^ 0x5a5a5a5a5a5a5a5aULL);
}

uint64_t vram_checksum(const void *data, size_t bytes)
{
    return vram__checksum_partial(data, bytes, 0) + vram__checksum_final(bytes);
}

/* ---- synthetic bytes ---- */

void vram_synthetic_fill(uint64_t seed, uint64_t offset, void *dst, size_t n)
{
    unsigned char *out = dst;
    uint64_t key = vram__mix64(seed + 0x1234567ULL);
    uint64_t word = offset / 8;
    size_t skip = (size_t)(offset % 8);
    while (n > 0) {
        uint64_t v = vram__mix64(key ^ (word * VRAM_GOLDEN));
        unsigned char b[8];
        memcpy(b, &v, 8);
        size_t take = 8 - skip;
        if (take > n) take = n;
        if (take == 8) {
            memcpy(out, b, 8);
        } else {
            memcpy(out, b + skip, take);
        }
        out += take;
        n -= take;
        skip = 0;
        word++;
    }
}
