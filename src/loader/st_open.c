/* st_open.c - opening a safetensors model: each file's header, the index joined with its shards, the tensor table and copy plan. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/base.h"
#include "loader/st_internal.h"

#define ST_RUN_GAP 4096 /* file bytes between tensors a run may carry */

/* ---- opening one file ---- */

/* Opens path, reads and validates its header into *h and records the file's
 * identity in *f (f->path is set by the caller). what names it in messages.
 * missing_code is the code for a file that does not exist. Returns 0 or a
 * negative code with the message set; on failure nothing is held. */
static int read_file_header(const char *path, int missing_code, st_file *f, vram__st_header *h)
{
    memset(h, 0, sizeof *h);
    int fd = -1;
    struct stat st;
    int rc = vram__st_open_regular(path, missing_code, &fd, &st);
    if (rc < 0) return rc;
    char *json = NULL;
    uint64_t size = (uint64_t)st.st_size;
    unsigned char lenbuf[8];
    if (size < 8) {
        rc = vram__st_parse_header(NULL, 0, size, path, h);
        goto out;
    }
    rc = vram__st_pread_full(fd, path, lenbuf, 8, 0);
    if (rc < 0) goto out;
    uint64_t n = vram__st_le64(lenbuf);
    if (n == 0 || n > VRAM_ST_MAX_HEADER || n > size - 8) {
        rc = vram__st_parse_header(NULL, n, size, path, h); /* refuses with the reason */
        goto out;
    }
    json = malloc((size_t)n);
    if (!json) {
        rc = vram__errorf(VRAM_EHOSTMEM, "%s: out of host memory for a %" PRIu64 "-byte header",
                          path, n);
        goto out;
    }
    rc = vram__st_pread_full(fd, path, json, (size_t)n, 8);
    if (rc < 0) goto out;
    rc = vram__st_parse_header(json, n, size, path, h);
    if (rc < 0) goto out;
    f->size = size;
    f->mtime = st.st_mtim;
    f->dev = st.st_dev;
    f->ino = st.st_ino;
    f->header_len = n;
out:
    free(json);
    close(fd);
    return rc;
}

/* Reads a whole small file (at most max bytes) into a new buffer. */
static int read_small_file(const char *path, uint64_t max, char **out, size_t *len)
{
    *out = NULL;
    int fd = -1;
    struct stat st;
    int rc = vram__st_open_regular(path, VRAM_EIO, &fd, &st);
    if (rc < 0) return rc;
    char *buf = NULL;
    if ((uint64_t)st.st_size > max) {
        rc = vram__errorf(VRAM_EFORMAT,
                          "%s: index of %" PRIu64 " bytes is larger than the limit "
                          "of %" PRIu64 " bytes",
                          path, (uint64_t)st.st_size, max);
        goto out;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        rc = vram__errorf(VRAM_EHOSTMEM, "%s: out of host memory", path);
        goto out;
    }
    rc = vram__st_pread_full(fd, path, buf, (size_t)st.st_size, 0);
    if (rc < 0) goto out;
    *out = buf;
    *len = (size_t)st.st_size;
    buf = NULL;
out:
    free(buf);
    close(fd);
    return rc;
}

/* ---- the model and the open state ---- */

/* See st_internal.h. */
void vram__st_model_free(st_model *m)
{
    if (!m) return;
    for (size_t i = 0; i < m->nfiles; i++)
        free(m->files[i].path);
    free(m->files);
    free(m->segs);
    free(m);
}

/* See st_internal.h. */
void vram__st_open_free(st_open *o)
{
    if (o->hdrs)
        for (size_t i = 0; i < o->m->nfiles; i++)
            vram__st_header_free(&o->hdrs[i]);
    free(o->hdrs);
    vram__st_model_free(o->m);
    o->hdrs = NULL;
    o->m = NULL;
}

/* Makes room for nfiles files (all zeroed). */
static int open_state_init(st_open *o, size_t nfiles, const char *spec)
{
    o->m = calloc(1, sizeof *o->m);
    o->hdrs = calloc(nfiles ? nfiles : 1, sizeof *o->hdrs);
    if (o->m) o->m->files = calloc(nfiles ? nfiles : 1, sizeof *o->m->files);
    if (!o->m || !o->hdrs || !o->m->files) {
        if (o->m) free(o->m->files);
        free(o->m);
        free(o->hdrs);
        o->m = NULL;
        o->hdrs = NULL;
        return vram__errorf(VRAM_EHOSTMEM, "%s: out of host memory", spec);
    }
    o->m->nfiles = nfiles;
    return 0;
}

/* ---- the tensor table and copy plan ---- */

/* See st_internal.h. */
int vram__st_build_table(vram_source *s, st_open *o)
{
    st_model *m = o->m;
    size_t total = 0;
    for (size_t f = 0; f < m->nfiles; f++)
        total += o->hdrs[f].ntensors;
    s->tensors = calloc(total ? total : 1, sizeof *s->tensors);
    m->segs = calloc(total ? total : 1, sizeof *m->segs);
    if (!s->tensors || !m->segs)
        return vram__errorf(VRAM_EHOSTMEM, "%s: out of host memory", s->spec);
    uint64_t cur = 0; /* end of the bytes placed so far */
    for (size_t f = 0; f < m->nfiles; f++) {
        vram__st_header *h = &o->hdrs[f];
        st_seg *run = NULL;
        uint64_t run_file_end = 0;
        for (size_t i = 0; i < h->ntensors; i++) {
            vram__st_tensor *t = &h->tensors[i];
            vram_tensor_info *ti = &s->tensors[s->ntensors++];
            ti->name = t->name;
            t->name = NULL;
            ti->dtype = t->dtype->name;
            ti->ndim = t->ndim;
            memcpy(ti->shape, t->shape, sizeof ti->shape);
            ti->bytes = t->end - t->begin;
            uint64_t file_off = h->data_start + t->begin;
            if (ti->bytes == 0) {
                ti->offset = vram__round_up(cur, ST_ALIGN);
                continue;
            }
            if (run) {
                uint64_t at = run->range_off + (file_off - run->file_off);
                if (file_off >= run_file_end && file_off - run_file_end <= ST_RUN_GAP &&
                    at % ST_ALIGN == 0) {
                    ti->offset = at;
                    run->len = file_off + ti->bytes - run->file_off;
                    run_file_end = file_off + ti->bytes;
                    cur = at + ti->bytes;
                    continue;
                }
            }
            run = &m->segs[m->nsegs++];
            run->file = f;
            run->file_off = file_off;
            run->range_off = vram__round_up(cur, ST_ALIGN);
            run->len = ti->bytes;
            run_file_end = file_off + ti->bytes;
            ti->offset = run->range_off;
            cur = run->range_off + ti->bytes;
        }
    }
    s->bytes = vram__round_up(cur, ST_ALIGN);
    if (s->bytes == 0)
        return vram__errorf(VRAM_EFORMAT, "%s: the model holds no tensor bytes", s->spec);
    return 0;
}

/* ---- the index joined with its shards ---- */

/* Index lookups: entry indices sorted by name. */
static int cmp_entry(const void *a, const void *b, void *arg)
{
    const vram__st_index *ix = arg;
    return strcmp(ix->names[*(const size_t *)a], ix->names[*(const size_t *)b]);
}

/* The entry indices of ix sorted by name (new array), NULL when out of memory. */
static size_t *index_sorted(const vram__st_index *ix)
{
    size_t *order = malloc((ix->nentries ? ix->nentries : 1) * sizeof *order);
    if (!order) return NULL;
    for (size_t i = 0; i < ix->nentries; i++)
        order[i] = i;
    qsort_r(order, ix->nentries, sizeof *order, cmp_entry, (void *)ix);
    return order;
}

/* The weight_map entry of name, or SIZE_MAX. */
static size_t index_find(const vram__st_index *ix, const size_t *order, const char *name)
{
    size_t lo = 0, hi = ix->nentries;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(ix->names[order[mid]], name);
        if (c == 0) return order[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return SIZE_MAX;
}

/* Opens and validates shard k of ix (a file in dir) as o's file k. A shard
 * that does not exist is refused naming the index at path and the shard. */
static int open_shard(const char *path, const char *dir, const vram__st_index *ix, size_t k,
                      st_open *o)
{
    st_file *f = &o->m->files[k];
    char qs[400];
    f->path = vram__st_path_join(dir, ix->shards[k]);
    if (!f->path) return vram__errorf(VRAM_EHOSTMEM, "%s: out of host memory", path);
    int rc = read_file_header(f->path, VRAM_EFORMAT, f, &o->hdrs[k]);
    if (rc == VRAM_EFORMAT && access(f->path, F_OK) != 0)
        vram__errorf(VRAM_EFORMAT, "%s: shard '%s' named in weight_map is missing (%s)", path,
                     vram__quote(ix->shards[k], qs, sizeof qs), f->path);
    return rc;
}

/* Checks that weight_map names every tensor of shard k (header h) and puts
 * it in shard k; marks the entries found. order is index_sorted(ix). */
static int match_shard(const char *path, const vram__st_index *ix, const size_t *order, size_t k,
                       const vram__st_header *h, unsigned char *found)
{
    for (size_t i = 0; i < h->ntensors; i++) {
        const char *name = h->tensors[i].name;
        size_t e = index_find(ix, order, name);
        char qn[400], qs[400], qb[400];
        if (e == SIZE_MAX)
            return vram__errorf(VRAM_EFORMAT,
                                "%s: tensor '%s' is in shard '%s' but not in "
                                "weight_map",
                                path, vram__quote(name, qn, sizeof qn),
                                vram__quote(ix->shards[k], qs, sizeof qs));
        if (ix->shard_of[e] != k)
            return vram__errorf(VRAM_EFORMAT,
                                "%s: tensor '%s' is in shard '%s' but weight_map puts it in '%s'",
                                path, vram__quote(name, qn, sizeof qn),
                                vram__quote(ix->shards[k], qs, sizeof qs),
                                vram__quote(ix->shards[ix->shard_of[e]], qb, sizeof qb));
        found[e] = 1;
    }
    return 0;
}

/* Checks that every weight_map entry was found in the shard it names. */
static int check_all_found(const char *path, const vram__st_index *ix, const unsigned char *found)
{
    for (size_t e = 0; e < ix->nentries; e++) {
        if (!found[e]) {
            char qn[400], qa[400];
            return vram__errorf(VRAM_EFORMAT,
                                "%s: weight_map puts tensor '%s' in shard '%s' but that shard "
                                "does not hold it",
                                path, vram__quote(ix->names[e], qn, sizeof qn),
                                vram__quote(ix->shards[ix->shard_of[e]], qa, sizeof qa));
        }
    }
    return 0;
}

/* See st_internal.h. */
int vram__st_open_index(const char *path, st_open *o)
{
    char *json = NULL;
    size_t len = 0;
    vram__st_index ix;
    memset(&ix, 0, sizeof ix);
    size_t *order = NULL;
    unsigned char *found = NULL;
    char *dir = NULL;
    int rc = read_small_file(path, VRAM_ST_MAX_HEADER, &json, &len);
    if (rc < 0) return rc;
    rc = vram__st_parse_index(json, len, path, &ix);
    free(json);
    if (rc < 0) return rc;
    dir = vram__st_path_dir(path);
    order = index_sorted(&ix);
    found = calloc(ix.nentries, 1);
    if (!dir || !order || !found) {
        rc = vram__errorf(VRAM_EHOSTMEM, "%s: out of host memory", path);
        goto out;
    }
    rc = open_state_init(o, ix.nshards, path);
    for (size_t k = 0; rc == 0 && k < ix.nshards; k++) {
        rc = open_shard(path, dir, &ix, k, o);
        if (rc == 0) rc = match_shard(path, &ix, order, k, &o->hdrs[k], found);
    }
    if (rc == 0) rc = check_all_found(path, &ix, found);
out:
    free(dir);
    free(order);
    free(found);
    vram__st_index_free(&ix);
    return rc;
}

/* ---- a single file ---- */

/* See st_internal.h. */
int vram__st_open_single(const char *path, st_open *o)
{
    int rc = open_state_init(o, 1, path);
    if (rc < 0) return rc;
    o->m->files[0].path = strdup(path);
    if (!o->m->files[0].path) return vram__errorf(VRAM_EHOSTMEM, "%s: out of host memory", path);
    return read_file_header(path, VRAM_EIO, &o->m->files[0], &o->hdrs[0]);
}
