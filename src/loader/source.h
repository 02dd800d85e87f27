/* source.h - model sources: what fills a model's device range on load (synthetic bytes, safetensors files). */
#ifndef VRAM_SOURCE_H
#define VRAM_SOURCE_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "vram.h"

/* Where a source writes: one mapped device range of the model. */
typedef struct vram_sink {
    vram_backend *backend;
    const vram_buf *buf;
    uint64_t *progress;   /* bytes written so far; update with __atomic_add_fetch */
    uint64_t chunk_bytes; /* preferred transfer size (VRAM_CHUNK) */
    const char *model;    /* for progress lines in the log; may be NULL */
    uint64_t total;       /* bytes the load will write (progress lines); 0: unknown */
} vram_sink;

/* Counts n more bytes done; writes a progress line to the log each time the
 * load crosses another tenth of its total. Thread-safe. */
void vram__sink_progress(const vram_sink *sink, uint64_t n);

typedef struct vram_source vram_source;
struct vram_source {
    char *spec;              /* as given, for messages */
    uint64_t bytes;          /* size of the one device range the model needs */
    size_t ntensors;         /* tensor table: offsets are from the range's start, */
    vram_tensor_info *tensors; /* dev_ptr NULL until the core sets it after the load */
    /* Writes the model's bytes into the sink's range: all of [0, bytes).
     * Returns 0 or a negative code with a message set by vram__errorf()
     * naming the file, tensor and problem. May be called again after a
     * release (a new load). */
    int (*load)(vram_source *s, const vram_sink *sink);
    /* Frees the source, its tensor table and everything else it holds. */
    void (*close)(vram_source *s);
    void *impl;
};

/* Opens and validates a source: "synthetic:SIZE[:SEED]", a .safetensors
 * file, a model.safetensors.index.json, or a directory holding either.
 * Nothing reaches a device here. On failure *out is NULL and the message
 * (vram__last_error) names the spec and the problem. */
int vram__source_open(const char *spec, vram_source **out);

/* Closes s; NULL does nothing. */
void vram__source_close(vram_source *s);

/* Safetensors (src/loader/safetensors.c): path is a file, an index json or a
 * directory. */
int vram__safetensors_open(const char *path, vram_source **out);

/* Writes n bytes from host memory at range offset off through the sink,
 * in chunk_bytes pieces, counting progress. */
int vram__sink_write(const vram_sink *sink, uint64_t off, const void *src, size_t n);

#endif /* VRAM_SOURCE_H */
