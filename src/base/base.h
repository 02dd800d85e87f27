/* base.h - the base layer under every other: error details, logging, clock, text, checksum, limits. */
#ifndef VRAM_BASE_H
#define VRAM_BASE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "vram.h"

#if defined(__GNUC__)
#define VRAM_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define VRAM_PRINTF(a, b)
#endif

#define VRAM_ERRMSG_MAX 512

/* A detailed message for the error about to be returned, kept per thread
 * (like dlerror): "cuMemCreate: CUDA_ERROR_OUT_OF_MEMORY (out of memory)".
 * Returns err so that `return vram__errorf(VRAM_EIO, "...")` reads well. */
int vram__errorf(int err, const char *fmt, ...) VRAM_PRINTF(2, 3);
/* The same, also copied into err (errlen bytes) when err is not NULL: for
 * functions that report into a caller's buffer as well. */
int vram__errorf_to(char *err, size_t errlen, int code, const char *fmt, ...) VRAM_PRINTF(4, 5);
/* The calling thread's last detailed message ("" when none). */
const char *vram__last_error(void);
void vram__clear_error(void);

/* Logging: one line per event. */
void vram__log(vram_log_level level, const char *fmt, ...) VRAM_PRINTF(2, 3);
int vram__log_enabled(vram_log_level level);

/* Monotonic seconds. */
double vram__now(void);
/* The CLOCK_MONOTONIC time seconds from now, for pthread_cond_timedwait on
 * a condition variable set to that clock (negative or NaN: now). */
struct timespec;
void vram__deadline_after(struct timespec *ts, double seconds);

/* Seconds the calling thread's backend calls spent pinning host memory so
 * far (thread-local: a backend adds what it spent for the caller, helper
 * threads' time included): the core reads it around an offload for the
 * log's pin_s. */
void vram__pin_seconds_add(double secs);
double vram__pin_seconds(void);

/* Raw checksum sum of n bytes whose first byte is word index first_word
 * (byte offset first_word * 8) of a buffer. Sums of consecutive pieces add
 * up; vram_checksum(p, n) = vram__checksum_partial(p, n, 0) + vram__checksum_final(n). */
uint64_t vram__checksum_partial(const void *data, size_t n, uint64_t first_word);
uint64_t vram__checksum_final(uint64_t total_bytes);
/* The per-word mix (splitmix64's finalizer over word + index * golden). */
static inline uint64_t vram__mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}
#define VRAM_GOLDEN 0x9e3779b97f4a7c15ULL

/* Replaces, in place, every byte of s that is not part of valid UTF-8 with
 * '?', so that text from file names or drivers can go into JSON. Returns s. */
char *vram__utf8_clean(char *s);
/* 1 when s is valid UTF-8 (no overlongs, surrogates or values past U+10FFFF). */
int vram__utf8_valid(const char *s);

/* Writes s into buf (cap bytes, at least 16) quoted for a message: about 96
 * bytes of it, control bytes, DEL, quotes and backslashes as \xNN, "..."
 * when cut; cuts fall between UTF-8 characters, never inside one. Returns
 * buf. */
const char *vram__quote(const char *s, char *buf, size_t cap);

/* The one rule for a number of seconds (timeouts, waits): finite, >= 0 and
 * at most VRAM_SECONDS_MAX (vram.h). NULL when s is fine, else what is
 * wrong with it, as a phrase that follows the value: "is negative", "is not
 * a finite number", "is more than 10 years (315360000 seconds)". */
const char *vram__seconds_problem(double s);

/* Seconds for people, never in exponent form: "600 s", "0.5 s",
 * "315360000 s", "0.001 s" (to the millisecond). */
typedef struct vram__stext {
    char s[48];
} vram__stext;
vram__stext vram__seconds_text(double s);

/* Bytes for people: "512 B", "24.0 MiB", "1.50 GiB" (powers of 1024). */
typedef struct vram__hsize {
    char s[32];
} vram__hsize;
vram__hsize vram__human(uint64_t bytes);

/* Round up to a multiple of a (a power of two or any non-zero value). */
static inline uint64_t vram__round_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

/* Bytes per second expressed as GB/s (1e9), 0 when seconds is 0. */
static inline double vram__gbps(uint64_t bytes, double seconds)
{
    return seconds > 0 ? (double)bytes / seconds / 1e9 : 0.0;
}

#endif /* VRAM_BASE_H */
