/* safetensors.c - the safetensors model source: open (file, index or directory), load (direct or staged) and close. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/base.h"
#include "loader/source.h"
#include "loader/st_internal.h"
#include "loader/st_parse.h"

/* The source's close: frees the tensor table (names included), the model
 * description and the source itself. NULL does nothing. */
static void st_close(vram_source *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->ntensors; i++)
        free((char *)s->tensors[i].name);
    free(s->tensors);
    vram__st_model_free(s->impl);
    free(s->spec);
    free(s);
}

static int st_load(vram_source *s, const vram_sink *sink);

/* See source.h. Resolves path (file, index or directory), validates every
 * file it names and builds the tensor table and copy plan; reads headers
 * only. On failure *out is NULL, nothing stays allocated and the message
 * names the file, the tensor and the problem. */
int vram__safetensors_open(const char *path, vram_source **out)
{
    *out = NULL;
    if (!path || !*path) return vram__errorf(VRAM_EINVAL, "empty model source");
    struct stat st;
    if (stat(path, &st) < 0)
        return vram__errorf(VRAM_EIO,
                            "%s: %s (expected a .safetensors file, an index json, a "
                            "directory or synthetic:SIZE[:SEED])",
                            path, strerror(errno));
    char *chosen = NULL;
    int is_index = 0, rc;
    if (S_ISDIR(st.st_mode)) {
        rc = vram__st_resolve_dir(path, &chosen, &is_index);
        if (rc < 0) return rc;
    } else {
        chosen = strdup(path);
        if (!chosen) return vram__errorf(VRAM_EHOSTMEM, "%s: out of host memory", path);
        is_index = vram__st_ends_with(path, ".json");
    }
    st_open o = {NULL, NULL};
    vram_source *s = calloc(1, sizeof *s);
    if (!s) {
        free(chosen);
        return vram__errorf(VRAM_EHOSTMEM, "%s: out of host memory", path);
    }
    s->spec = strdup(path);
    if (!s->spec) {
        rc = vram__errorf(VRAM_EHOSTMEM, "%s: out of host memory", path);
        goto fail;
    }
    rc = is_index ? vram__st_open_index(chosen, &o) : vram__st_open_single(chosen, &o);
    if (rc < 0) goto fail;
    rc = vram__st_build_table(s, &o);
    if (rc < 0) goto fail;
    for (size_t f = 0; f < o.m->nfiles; f++)
        vram__st_header_free(&o.hdrs[f]);
    free(o.hdrs);
    s->impl = o.m;
    s->load = st_load;
    s->close = st_close;
    free(chosen);
    vram__log(VRAM_LOG_DEBUG,
              "safetensors %s: %zu files, %zu tensors, %" PRIu64 " bytes, %zu copy runs", path,
              o.m->nfiles, s->ntensors, s->bytes, o.m->nsegs);
    *out = s;
    return 0;
fail:
    vram__st_open_free(&o);
    free(chosen);
    st_close(s);
    return rc;
}

/* The source's load: checks that every file is still the one validated,
 * then writes the range image to the sink: read straight into device
 * memory where the backend makes it host-visible (host_ptr), else through
 * the staging ring. Both give the same bytes. Returns 0 or the first error
 * (with its message); every thread, buffer and descriptor is gone on
 * return, and on failure the range is partly written (the core frees it). */
static int st_load(vram_source *s, const vram_sink *sink)
{
    const st_model *m = s->impl;
    vram_backend *b = sink->backend;
    int *fds = calloc(m->nfiles ? m->nfiles : 1, sizeof *fds);
    if (!fds) return vram__errorf(VRAM_EHOSTMEM, "%s: out of host memory", s->spec);
    int rc = vram__st_reopen_files(m, fds);
    if (rc < 0) {
        free(fds);
        return rc;
    }
    void *dev = vram__backend_host_ptr(b, sink->buf, 0, (size_t)s->bytes);
    if (dev)
        rc = vram__st_load_direct(s, sink, fds, dev);
    else
        rc = vram__st_load_staged(s, sink, fds);
    for (size_t i = 0; i < m->nfiles; i++)
        close(fds[i]);
    free(fds);
    return rc;
}
