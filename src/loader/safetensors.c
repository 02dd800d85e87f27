/* safetensors.c - the safetensors model source: single files and sharded checkpoints, validated on open and streamed to the device on load (read straight into host-visible device memory, else through pinned staging). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/base.h"
#include "loader/source.h"
#include "loader/st_parse.h"

#define ST_ALIGN 256    /* device offset alignment of each tensor */
#define ST_RUN_GAP 4096 /* file bytes between tensors a run may carry */
#ifndef ST_STAGE_MAX
#define ST_STAGE_MAX ((size_t)16 << 20) /* staging buffer size cap */
#endif
#define ST_STAGE_MIN ((size_t)64 << 10)
#ifndef ST_SLOTS
#define ST_SLOTS 4 /* staging buffers in the ring */
#endif
#ifndef ST_READERS
#define ST_READERS 2 /* reader threads (reads in flight) */
#endif
#ifndef ST_DIRECT_MAX
#define ST_DIRECT_MAX ((size_t)16 << 20) /* chunk cap of a direct load */
#endif

/* One file of the model, as it was when validated. */
typedef struct st_file {
    char *path;
    uint64_t size;
    struct timespec mtime;
    dev_t dev;
    ino_t ino;
    uint64_t header_len;
} st_file;

/* A piece of the device range copied from one file: range bytes
 * [range_off, range_off + len) come from file bytes [file_off, ...). Bytes
 * of the range that no segment covers are zero. */
typedef struct st_seg {
    uint64_t range_off, len, file_off;
    size_t file;
} st_seg;

/* What a load needs: the files (in table order) and the copy plan. */
typedef struct st_model {
    size_t nfiles;
    st_file *files;
    size_t nsegs;
    st_seg *segs; /* sorted by range_off, non-overlapping */
} st_model;

/* ---- small I/O helpers ---- */

/* Reads exactly n bytes at off. Returns 0, or VRAM_EIO naming path. */
static int pread_full(int fd, const char *path, void *dst, size_t n, uint64_t off)
{
    unsigned char *p = dst;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, (off_t)off);
        if (r < 0) {
            if (errno == EINTR) continue;
            return vram__errorf(VRAM_EIO, "%s: read of %zu bytes at offset %" PRIu64 ": %s", path,
                                n, off, strerror(errno));
        }
        if (r == 0)
            return vram__errorf(
                VRAM_EIO, "%s: file ends at offset %" PRIu64 " (it shrank after it was validated)",
                path, off);
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

/* The little-endian u64 at b. */
static uint64_t le64(const unsigned char *b)
{
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | b[i];
    return n;
}

/* "dir/name" in a new string, NULL when out of memory. */
static char *path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    size_t o = a;
    if (a > 0 && dir[a - 1] != '/') p[o++] = '/';
    memcpy(p + o, name, b + 1);
    return p;
}

/* The directory part of path ("." when none), in a new string. */
static char *path_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    if (slash == path) return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

/* True when s ends with suffix. */
static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* ---- opening one file ---- */

/* Opens path, reads and validates its header into *h and records the file's
 * identity in *f (f->path is set by the caller). what names it in messages.
 * missing_code is the code for a file that does not exist. Returns 0 or a
 * negative code with the message set; on failure nothing is held. */
/* Opens path read-only and checks that it is a regular file. On success
 * *fd_out (the caller closes it) and *st are set; on failure nothing is open
 * and the message names the file (missing_code when it does not exist). */
static int open_regular(const char *path, int missing_code, int *fd_out, struct stat *st)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return vram__errorf(errno == ENOENT ? missing_code : VRAM_EIO, "%s: %s", path,
                            strerror(errno));
    if (fstat(fd, st) < 0) {
        int e = errno;
        close(fd);
        return vram__errorf(VRAM_EIO, "%s: %s", path, strerror(e));
    }
    if (!S_ISREG(st->st_mode)) {
        close(fd);
        return vram__errorf(VRAM_EFORMAT, "%s: not a regular file", path);
    }
    *fd_out = fd;
    return 0;
}

static int read_file_header(const char *path, int missing_code, st_file *f, vram__st_header *h)
{
    memset(h, 0, sizeof *h);
    int fd = -1;
    struct stat st;
    int rc = open_regular(path, missing_code, &fd, &st);
    if (rc < 0) return rc;
    char *json = NULL;
    uint64_t size = (uint64_t)st.st_size;
    unsigned char lenbuf[8];
    if (size < 8) {
        rc = vram__st_parse_header(NULL, 0, size, path, h);
        goto out;
    }
    rc = pread_full(fd, path, lenbuf, 8, 0);
    if (rc < 0) goto out;
    uint64_t n = le64(lenbuf);
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
    rc = pread_full(fd, path, json, (size_t)n, 8);
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
    int rc = open_regular(path, VRAM_EIO, &fd, &st);
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
    rc = pread_full(fd, path, buf, (size_t)st.st_size, 0);
    if (rc < 0) goto out;
    *out = buf;
    *len = (size_t)st.st_size;
    buf = NULL;
out:
    free(buf);
    close(fd);
    return rc;
}

/* ---- the source ---- */

/* Frees a model description and its file paths; NULL does nothing. */
static void model_free(st_model *m)
{
    if (!m) return;
    for (size_t i = 0; i < m->nfiles; i++)
        free(m->files[i].path);
    free(m->files);
    free(m->segs);
    free(m);
}

/* The source's close: frees the tensor table (names included), the model
 * description and the source itself. NULL does nothing. */
static void st_close(vram_source *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->ntensors; i++)
        free((char *)s->tensors[i].name);
    free(s->tensors);
    model_free(s->impl);
    free(s->spec);
    free(s);
}

/* What open gathers before the table is built: per file its header. */
typedef struct st_open {
    st_model *m;
    vram__st_header *hdrs; /* one per m->files */
} st_open;

/* Frees what a failed open gathered (headers and model); o itself is the
 * caller's. */
static void open_state_free(st_open *o)
{
    if (o->hdrs)
        for (size_t i = 0; i < o->m->nfiles; i++)
            vram__st_header_free(&o->hdrs[i]);
    free(o->hdrs);
    model_free(o->m);
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

/* Places every tensor of every file in the device range (file order, each
 * at a multiple of ST_ALIGN) and builds the copy segments: consecutive
 * tensors of one file whose placement keeps their relative offsets share a
 * segment (a run), so that most of a file goes over in a few large copies.
 * Fills s->tensors, s->ntensors, s->bytes and m->segs. Takes the names out
 * of the headers. */
static int build_table(vram_source *s, st_open *o)
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

/* Opens the sharded checkpoint whose index is at path: every shard (in
 * shard-name order) is opened and validated, and the weight_map and the
 * shards must agree both ways. */
static int open_index(const char *path, st_open *o)
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
    dir = path_dir(path);
    order = index_sorted(&ix);
    found = calloc(ix.nentries, 1);
    if (!dir || !order || !found) {
        rc = vram__errorf(VRAM_EHOSTMEM, "%s: out of host memory", path);
        goto out;
    }
    rc = open_state_init(o, ix.nshards, path);
    if (rc < 0) goto out;
    for (size_t k = 0; k < ix.nshards; k++) {
        st_file *f = &o->m->files[k];
        vram__st_header *h = &o->hdrs[k];
        char qs[400];
        f->path = path_join(dir, ix.shards[k]);
        if (!f->path) {
            rc = vram__errorf(VRAM_EHOSTMEM, "%s: out of host memory", path);
            goto out;
        }
        rc = read_file_header(f->path, VRAM_EFORMAT, f, h);
        if (rc < 0) {
            if (rc == VRAM_EFORMAT && access(f->path, F_OK) != 0)
                vram__errorf(VRAM_EFORMAT, "%s: shard '%s' named in weight_map is missing (%s)",
                             path, vram__quote(ix.shards[k], qs, sizeof qs), f->path);
            goto out;
        }
        for (size_t i = 0; i < h->ntensors; i++) {
            const char *name = h->tensors[i].name;
            size_t e = index_find(&ix, order, name);
            char qn[400], qb[400];
            if (e == SIZE_MAX) {
                rc = vram__errorf(VRAM_EFORMAT,
                                  "%s: tensor '%s' is in shard '%s' but not in "
                                  "weight_map",
                                  path, vram__quote(name, qn, sizeof qn),
                                  vram__quote(ix.shards[k], qs, sizeof qs));
                goto out;
            }
            if (ix.shard_of[e] != k) {
                rc = vram__errorf(VRAM_EFORMAT,
                                  "%s: tensor '%s' is in shard '%s' but weight_map puts it in '%s'",
                                  path, vram__quote(name, qn, sizeof qn),
                                  vram__quote(ix.shards[k], qs, sizeof qs),
                                  vram__quote(ix.shards[ix.shard_of[e]], qb, sizeof qb));
                goto out;
            }
            found[e] = 1;
        }
    }
    for (size_t e = 0; e < ix.nentries; e++) {
        if (!found[e]) {
            char qn[400], qa[400];
            rc = vram__errorf(VRAM_EFORMAT,
                              "%s: weight_map puts tensor '%s' in shard '%s' but that shard does "
                              "not hold it",
                              path, vram__quote(ix.names[e], qn, sizeof qn),
                              vram__quote(ix.shards[ix.shard_of[e]], qa, sizeof qa));
            goto out;
        }
    }
out:
    free(dir);
    free(order);
    free(found);
    vram__st_index_free(&ix);
    return rc;
}

/* Opens the single file at path. */
static int open_single(const char *path, st_open *o)
{
    int rc = open_state_init(o, 1, path);
    if (rc < 0) return rc;
    o->m->files[0].path = strdup(path);
    if (!o->m->files[0].path) return vram__errorf(VRAM_EHOSTMEM, "%s: out of host memory", path);
    return read_file_header(path, VRAM_EIO, &o->m->files[0], &o->hdrs[0]);
}

/* Picks what a directory holds, as Hugging Face lays it out:
 * model.safetensors.index.json, else model.safetensors, else the one
 * *.safetensors file. Returns the chosen path (new string) in *out and
 * whether it is an index. */
static int resolve_dir(const char *dir, char **out, int *is_index)
{
    *out = NULL;
    char *p = path_join(dir, "model.safetensors.index.json");
    if (!p) return vram__errorf(VRAM_EHOSTMEM, "%s: out of host memory", dir);
    if (access(p, F_OK) == 0) {
        *out = p;
        *is_index = 1;
        return 0;
    }
    free(p);
    p = path_join(dir, "model.safetensors");
    if (!p) return vram__errorf(VRAM_EHOSTMEM, "%s: out of host memory", dir);
    if (access(p, F_OK) == 0) {
        *out = p;
        *is_index = 0;
        return 0;
    }
    free(p);
    DIR *d = opendir(dir);
    if (!d) return vram__errorf(VRAM_EIO, "%s: %s", dir, strerror(errno));
    struct dirent *de;
    char *one = NULL;
    int count = 0;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.' || !ends_with(de->d_name, ".safetensors")) continue;
        if (++count == 1) one = strdup(de->d_name);
    }
    closedir(d);
    if (count == 0) {
        free(one);
        return vram__errorf(VRAM_EFORMAT,
                            "%s: no model.safetensors.index.json, model.safetensors or other "
                            "*.safetensors file in this directory",
                            dir);
    }
    if (count > 1) {
        free(one);
        return vram__errorf(VRAM_EFORMAT,
                            "%s: %d *.safetensors files but no model.safetensors.index.json to "
                            "say how they fit together",
                            dir, count);
    }
    if (!one) return vram__errorf(VRAM_EHOSTMEM, "%s: out of host memory", dir);
    *out = path_join(dir, one);
    free(one);
    if (!*out) return vram__errorf(VRAM_EHOSTMEM, "%s: out of host memory", dir);
    *is_index = 0;
    return 0;
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
        rc = resolve_dir(path, &chosen, &is_index);
        if (rc < 0) return rc;
    } else {
        chosen = strdup(path);
        if (!chosen) return vram__errorf(VRAM_EHOSTMEM, "%s: out of host memory", path);
        is_index = ends_with(path, ".json");
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
    rc = is_index ? open_index(chosen, &o) : open_single(chosen, &o);
    if (rc < 0) goto fail;
    rc = build_table(s, &o);
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
    open_state_free(&o);
    free(chosen);
    st_close(s);
    return rc;
}

/* ---- streaming load ---- */

/* The pipeline of one load: reader threads fill staging slots with range
 * chunks (file bytes and zero padding), the loading thread copies each full
 * slot to the device in chunk order. Chunk k uses slot k % nslots. */
typedef struct st_pipe {
    const st_model *m;
    const int *fds;
    uint64_t bytes; /* of the range */
    size_t chunk;   /* bytes per chunk (and per slot) */
    uint64_t nchunks;
    size_t nslots;
    void *slot[ST_SLOTS];
    int64_t held[ST_SLOTS]; /* chunk index a slot holds (filled), -1 when none */

    pthread_mutex_t lock;
    pthread_cond_t cond;
    uint64_t next;     /* next chunk for a reader to take */
    uint64_t consumed; /* chunks written to the device */
    int stop;          /* set on error or when the loader gives up */
    int err;           /* first reader error */
    char errmsg[VRAM_ERRMSG_MAX];
} st_pipe;

/* Fills buf with range bytes [a, a + n): file bytes read from fds (one per
 * file of m) and zeros where no segment lies. buf is staging memory or, on
 * the direct path, the device range itself. Returns 0 or a negative code
 * (VRAM_EIO naming the file); buf is then partly filled. */
static int fill_chunk(const st_model *m, const int *fds, uint64_t a, size_t n, unsigned char *buf)
{
    size_t lo = 0, hi = m->nsegs; /* first segment ending after a */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->segs[mid].range_off + m->segs[mid].len <= a)
            lo = mid + 1;
        else
            hi = mid;
    }
    uint64_t pos = a, end = a + n;
    size_t i = lo;
    while (pos < end) {
        const st_seg *sg = i < m->nsegs ? &m->segs[i] : NULL;
        if (!sg || sg->range_off >= end) {
            memset(buf + (pos - a), 0, (size_t)(end - pos));
            break;
        }
        if (sg->range_off > pos) {
            memset(buf + (pos - a), 0, (size_t)(sg->range_off - pos));
            pos = sg->range_off;
        }
        uint64_t seg_end = sg->range_off + sg->len;
        uint64_t take = (seg_end < end ? seg_end : end) - pos;
        int rc = pread_full(fds[sg->file], m->files[sg->file].path, buf + (pos - a), (size_t)take,
                            sg->file_off + (pos - sg->range_off));
        if (rc < 0) return rc;
        pos += take;
        i++;
    }
    return 0;
}

/* A reader thread: takes the next chunk, waits for its slot to be free,
 * fills it from the files and hands it to the loading thread; stops at the
 * end, on an error (kept in p->err / p->errmsg) or when told to. */
static void *reader_main(void *arg)
{
    st_pipe *p = arg;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        if (p->stop || p->next >= p->nchunks) break;
        uint64_t k = p->next++;
        while (!p->stop && p->consumed + p->nslots <= k) /* chunk k - nslots still in its slot */
            pthread_cond_wait(&p->cond, &p->lock);
        if (p->stop) break;
        size_t si = (size_t)(k % p->nslots);
        pthread_mutex_unlock(&p->lock);
        uint64_t a = k * p->chunk;
        size_t n = (size_t)(p->bytes - a < p->chunk ? p->bytes - a : p->chunk);
        int rc = fill_chunk(p->m, p->fds, a, n, p->slot[si]);
        pthread_mutex_lock(&p->lock);
        if (rc < 0) {
            if (!p->err) {
                p->err = rc;
                snprintf(p->errmsg, sizeof p->errmsg, "%s", vram__last_error());
            }
            p->stop = 1;
            pthread_cond_broadcast(&p->cond);
            break;
        }
        p->held[si] = (int64_t)k;
        pthread_cond_broadcast(&p->cond);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* Opens every file again and checks it is the one validated. On success
 * fds[] are open (the caller closes them); on failure none is. */
static int reopen_files(const st_model *m, int *fds)
{
    for (size_t i = 0; i < m->nfiles; i++)
        fds[i] = -1;
    int rc = 0;
    for (size_t i = 0; i < m->nfiles && rc == 0; i++) {
        const st_file *f = &m->files[i];
        fds[i] = open(f->path, O_RDONLY | O_CLOEXEC);
        if (fds[i] < 0) {
            rc = vram__errorf(VRAM_EIO, "%s: %s", f->path, strerror(errno));
            break;
        }
        struct stat st;
        if (fstat(fds[i], &st) < 0) {
            rc = vram__errorf(VRAM_EIO, "%s: %s", f->path, strerror(errno));
            break;
        }
        if ((uint64_t)st.st_size != f->size || st.st_mtim.tv_sec != f->mtime.tv_sec ||
            st.st_mtim.tv_nsec != f->mtime.tv_nsec || st.st_ino != f->ino || st.st_dev != f->dev) {
            rc = vram__errorf(VRAM_EIO,
                              "%s: file changed since it was validated (size %" PRIu64
                              " -> %" PRIu64 ", mtime or inode differ); open the model again",
                              f->path, f->size, (uint64_t)st.st_size);
            break;
        }
        unsigned char b[8];
        rc = pread_full(fds[i], f->path, b, 8, 0);
        if (rc == 0 && le64(b) != f->header_len)
            rc =
                vram__errorf(VRAM_EIO, "%s: header length changed since it was validated", f->path);
        if (rc == 0) (void)posix_fadvise(fds[i], 0, 0, POSIX_FADV_SEQUENTIAL);
    }
    if (rc < 0)
        for (size_t i = 0; i < m->nfiles; i++)
            if (fds[i] >= 0) close(fds[i]);
    return rc;
}

/* Bytes per chunk of a load: the sink's preferred transfer size (max when
 * it has none) within [ST_STAGE_MIN, max], page-rounded, and no more than
 * the range. */
static size_t chunk_size(const vram_source *s, const vram_sink *sink, size_t max)
{
    size_t chunk = sink->chunk_bytes ? (size_t)sink->chunk_bytes : max;
    if (chunk > max) chunk = max;
    if (chunk < ST_STAGE_MIN) chunk = ST_STAGE_MIN;
    chunk = (size_t)vram__round_up(chunk, 4096);
    if (chunk > s->bytes) chunk = (size_t)vram__round_up(s->bytes, ST_ALIGN);
    return chunk;
}

/* Streams the range image to the sink through pinned staging memory:
 * readers fill the staging ring from fds (the caller's, open), this thread
 * copies each chunk to the device in order. Returns 0 or the first error
 * (with its message); every thread and slot is gone on return. */
static int load_staged(vram_source *s, const vram_sink *sink, const int *fds)
{
    const st_model *m = s->impl;
    vram_backend *b = sink->backend;
    int rc = 0;
    st_pipe p;
    memset(&p, 0, sizeof p);
    p.m = m;
    p.fds = fds;
    p.bytes = s->bytes;
    size_t chunk = chunk_size(s, sink, ST_STAGE_MAX);
    p.chunk = chunk;
    p.nchunks = (s->bytes + chunk - 1) / chunk;
    p.nslots = p.nchunks < ST_SLOTS ? (size_t)p.nchunks : ST_SLOTS;
    for (size_t i = 0; i < ST_SLOTS; i++)
        p.held[i] = -1;
    for (size_t i = 0; i < p.nslots && rc == 0; i++)
        rc = vram__backend_host_alloc(b, chunk, &p.slot[i]);
    pthread_t th[ST_READERS];
    int nthreads = 0;
    if (rc == 0) {
        pthread_mutex_init(&p.lock, NULL);
        pthread_cond_init(&p.cond, NULL);
        int want = p.nchunks < ST_READERS ? (int)p.nchunks : ST_READERS;
        for (int i = 0; i < want; i++) {
            if (pthread_create(&th[i], NULL, reader_main, &p) != 0) break;
            nthreads++;
        }
        if (nthreads == 0)
            rc = vram__errorf(VRAM_EHOSTMEM, "%s: cannot start a reader thread", s->spec);
        for (uint64_t k = 0; rc == 0 && k < p.nchunks; k++) {
            size_t si = (size_t)(k % p.nslots);
            pthread_mutex_lock(&p.lock);
            while (p.held[si] != (int64_t)k && !p.err)
                pthread_cond_wait(&p.cond, &p.lock);
            if (p.held[si] != (int64_t)k) rc = vram__errorf(p.err, "%s", p.errmsg);
            pthread_mutex_unlock(&p.lock);
            if (rc < 0) break;
            uint64_t a = k * chunk;
            size_t n = (size_t)(s->bytes - a < chunk ? s->bytes - a : chunk);
            rc = vram__sink_write(sink, a, p.slot[si], n);
            pthread_mutex_lock(&p.lock);
            p.held[si] = -1;
            p.consumed = k + 1;
            if (rc < 0) p.stop = 1;
            pthread_cond_broadcast(&p.cond);
            pthread_mutex_unlock(&p.lock);
        }
        pthread_mutex_lock(&p.lock);
        p.stop = 1;
        pthread_cond_broadcast(&p.cond);
        pthread_mutex_unlock(&p.lock);
        for (int i = 0; i < nthreads; i++)
            pthread_join(th[i], NULL);
        pthread_cond_destroy(&p.cond);
        pthread_mutex_destroy(&p.lock);
    }
    for (size_t i = 0; i < p.nslots; i++)
        if (p.slot[i]) vram__backend_host_free(b, p.slot[i], chunk);
    return rc;
}

/* A direct load: device memory is host-visible, so the files are read
 * straight into it, chunk by chunk, by several readers at once (the
 * loading thread is one of them). No staging, no second copy. */
typedef struct st_direct {
    const st_model *m;
    unsigned char *dev; /* CPU address of range offset 0 */
    uint64_t bytes;     /* of the range */
    size_t chunk;       /* bytes per chunk */
    uint64_t nchunks;
    const vram_sink *sink; /* progress is counted through it */

    pthread_mutex_t lock;
    uint64_t next; /* next chunk to take */
    int err;       /* first error; no chunk is taken after it */
    char errmsg[VRAM_ERRMSG_MAX];
} st_direct;

/* One reader of a direct load and the descriptors it reads through. */
typedef struct st_reader {
    st_direct *d;
    const int *fds; /* one per file */
    pthread_t th;
} st_reader;

/* A direct reader (thread body, also run by the loading thread): takes the
 * next chunk, reads it from the files into the device range and counts it
 * as progress, until none is left or a reader failed. The first error is
 * kept in d->err / d->errmsg. */
static void *direct_main(void *arg)
{
    st_reader *r = arg;
    st_direct *d = r->d;
    for (;;) {
        pthread_mutex_lock(&d->lock);
        if (d->err || d->next >= d->nchunks) {
            pthread_mutex_unlock(&d->lock);
            break;
        }
        uint64_t k = d->next++;
        pthread_mutex_unlock(&d->lock);
        uint64_t a = k * d->chunk;
        size_t n = (size_t)(d->bytes - a < d->chunk ? d->bytes - a : d->chunk);
        int rc = fill_chunk(d->m, r->fds, a, n, d->dev + a);
        if (rc < 0) {
            pthread_mutex_lock(&d->lock);
            if (!d->err) {
                d->err = rc;
                snprintf(d->errmsg, sizeof d->errmsg, "%s", vram__last_error());
            }
            pthread_mutex_unlock(&d->lock);
            break;
        }
        vram__sink_progress(d->sink, n);
    }
    return NULL;
}

/* Fills out[] (one per file of m) with descriptors of the files behind
 * fds[] that have their own file position and readahead state: the same
 * open files, opened again through /proc/self/fd (so a file replaced on
 * disk meanwhile is not picked up). Where that fails, out[i] = -1 and the
 * reader shares fds[i]. Readers that share a descriptor share its
 * readahead, which their interleaved reads defeat on a cold page cache.
 * The caller closes every out[i] >= 0. */
static void reopen_private(const st_model *m, const int *fds, int *out)
{
    for (size_t i = 0; i < m->nfiles; i++) {
        char proc[64];
        struct stat a, b;
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", fds[i]);
        out[i] = open(proc, O_RDONLY | O_CLOEXEC);
        if (out[i] < 0) continue;
        if (fstat(out[i], &a) < 0 || fstat(fds[i], &b) < 0 || a.st_ino != b.st_ino ||
            a.st_dev != b.st_dev) {
            close(out[i]);
            out[i] = -1;
            continue;
        }
        (void)posix_fadvise(out[i], 0, 0, POSIX_FADV_SEQUENTIAL);
    }
}

/* Reads the range image from fds (the caller's, open and checked) straight
 * into the device range at dev (its CPU address, valid for all of
 * [0, s->bytes)), with up to ST_READERS reads in flight. Returns 0 or the
 * first error (with its message); the range is then partly written and
 * the caller frees it. Every thread and descriptor it opened is gone on
 * return. */
static int load_direct(vram_source *s, const vram_sink *sink, const int *fds, void *dev)
{
    const st_model *m = s->impl;
    st_direct d;
    memset(&d, 0, sizeof d);
    d.m = m;
    d.dev = dev;
    d.bytes = s->bytes;
    d.chunk = chunk_size(s, sink, ST_DIRECT_MAX);
    d.nchunks = (s->bytes + d.chunk - 1) / d.chunk;
    d.sink = sink;
    pthread_mutex_init(&d.lock, NULL);
    st_reader rd[ST_READERS];
    int *own[ST_READERS] = {NULL}; /* helpers' descriptors */
    int want = d.nchunks < ST_READERS ? (int)d.nchunks : ST_READERS;
    int nhelpers = 0;
    rd[0].d = &d;
    rd[0].fds = fds; /* this thread is reader 0 */
    for (int i = 1; i < want; i++) {
        own[i] = malloc(m->nfiles * sizeof *own[i]);
        if (!own[i]) break; /* fewer readers: slower, still correct */
        reopen_private(m, fds, own[i]);
        for (size_t f = 0; f < m->nfiles; f++)
            if (own[i][f] < 0) own[i][f] = fds[f];
        rd[i].d = &d;
        rd[i].fds = own[i];
        if (pthread_create(&rd[i].th, NULL, direct_main, &rd[i]) != 0) break;
        nhelpers = i;
    }
    direct_main(&rd[0]);
    for (int i = 1; i <= nhelpers; i++)
        pthread_join(rd[i].th, NULL);
    for (int i = 1; i < want; i++) {
        if (!own[i]) continue;
        for (size_t f = 0; f < m->nfiles; f++)
            if (own[i][f] != fds[f]) close(own[i][f]);
        free(own[i]);
    }
    pthread_mutex_destroy(&d.lock);
    if (d.err) return vram__errorf(d.err, "%s", d.errmsg);
    return 0;
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
    int rc = reopen_files(m, fds);
    if (rc < 0) {
        free(fds);
        return rc;
    }
    void *dev = vram__backend_host_ptr(b, sink->buf, 0, (size_t)s->bytes);
    if (dev)
        rc = load_direct(s, sink, fds, dev);
    else
        rc = load_staged(s, sink, fds);
    for (size_t i = 0; i < m->nfiles; i++)
        close(fds[i]);
    free(fds);
    return rc;
}
