/* source.c - dispatch of model sources, and the synthetic source (deterministic pseudo-random bytes). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "loader/source.h"

void vram__sink_progress(const vram_sink *sink, uint64_t n)
{
    if (!sink->progress) return;
    uint64_t after = __atomic_add_fetch(sink->progress, n, __ATOMIC_RELAXED);
    uint64_t total = sink->total;
    if (!total || !sink->model || after > total) return;
    uint64_t before = after - n;
    if (before * 10 / total != after * 10 / total && after < total)
        vram__log(VRAM_LOG_INFO, "load-progress model=%s bytes=%llu total=%llu percent=%.0f",
                  sink->model, (unsigned long long)after, (unsigned long long)total,
                  100.0 * (double)after / (double)total);
}

int vram__sink_write(const vram_sink *sink, uint64_t off, const void *src, size_t n)
{
    const unsigned char *p = src;
    size_t chunk = sink->chunk_bytes ? (size_t)sink->chunk_bytes : (size_t)64 << 20;
    while (n > 0) {
        size_t take = n < chunk ? n : chunk;
        int rc = vram__backend_to_device(sink->backend, sink->buf, (size_t)off, p, take);
        if (rc < 0) return rc;
        vram__sink_progress(sink, take);
        p += take;
        off += take;
        n -= take;
    }
    return 0;
}

/* ---- synthetic:SIZE[:SEED] ---- */

typedef struct synthetic {
    uint64_t seed;
} synthetic;

static int synthetic_load(vram_source *s, const vram_sink *sink)
{
    synthetic *syn = s->impl;
    size_t chunk = sink->chunk_bytes ? (size_t)sink->chunk_bytes : (size_t)64 << 20;
    if (chunk > s->bytes) chunk = (size_t)s->bytes;
    if (chunk == 0) return 0;
    void *stage = NULL;
    int rc = vram__backend_host_alloc(sink->backend, chunk, &stage);
    if (rc < 0) return rc;
    for (uint64_t off = 0; off < s->bytes && rc == 0; off += chunk) {
        size_t n = (size_t)(s->bytes - off < chunk ? s->bytes - off : chunk);
        vram_synthetic_fill(syn->seed, off, stage, n);
        rc = vram__sink_write(sink, off, stage, n);
    }
    vram__backend_host_free(sink->backend, stage, chunk);
    return rc;
}

static void synthetic_close(vram_source *s)
{
    free(s->impl);
    free(s->spec);
    free(s);
}

static int synthetic_open(const char *spec, vram_source **out)
{
    const char *rest = spec + strlen("synthetic:");
    char size_text[64];
    const char *colon = strchr(rest, ':');
    size_t len = colon ? (size_t)(colon - rest) : strlen(rest);
    if (len == 0 || len >= sizeof size_text)
        return vram__errorf(VRAM_EINVAL, "%s: expected synthetic:SIZE[:SEED], e.g. synthetic:64M:7",
                            spec);
    memcpy(size_text, rest, len);
    size_text[len] = '\0';
    uint64_t bytes = 0, seed = 0;
    if (vram_parse_size(size_text, &bytes) < 0 || bytes == 0)
        return vram__errorf(VRAM_EINVAL, "%s: '%s' is not a size above zero (use e.g. 64M or 1G)",
                            spec, size_text);
    if (colon) {
        char *end = NULL;
        if (colon[1] == '\0' || colon[1] == '-')
            return vram__errorf(VRAM_EINVAL, "%s: seed must be a non-negative integer", spec);
        seed = strtoull(colon + 1, &end, 0);
        if (*end != '\0')
            return vram__errorf(VRAM_EINVAL, "%s: seed '%s' is not a non-negative integer", spec,
                                colon + 1);
    }
    vram_source *s = calloc(1, sizeof *s);
    synthetic *syn = calloc(1, sizeof *syn);
    char *dup = strdup(spec);
    if (!s || !syn || !dup) {
        free(s);
        free(syn);
        free(dup);
        return vram__errorf(VRAM_EHOSTMEM, "%s: out of host memory", spec);
    }
    syn->seed = seed;
    s->spec = dup;
    s->bytes = bytes;
    s->load = synthetic_load;
    s->close = synthetic_close;
    s->impl = syn;
    *out = s;
    return 0;
}

int vram__source_open(const char *spec, vram_source **out)
{
    *out = NULL;
    if (!spec || !*spec) return vram__errorf(VRAM_EINVAL, "empty model source");
    if (strncmp(spec, "synthetic:", 10) == 0) return synthetic_open(spec, out);
    return vram__safetensors_open(spec, out);
}

void vram__source_close(vram_source *s)
{
    if (s) s->close(s);
}
