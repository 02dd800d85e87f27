/* st_internal.h - what the safetensors source's files share: the model description, the open state and their functions. */
#ifndef VRAM_ST_INTERNAL_H
#define VRAM_ST_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

#include "loader/source.h"
#include "loader/st_parse.h"

#define ST_ALIGN 256 /* device offset alignment of each tensor */

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

/* What open gathers before the table is built: per file its header. */
typedef struct st_open {
    st_model *m;
    vram__st_header *hdrs; /* one per m->files */
} st_open;

/* ---- paths and plain file reads (st_path.c) ---- */

/* Reads exactly n bytes at off. Returns 0, or VRAM_EIO naming path. */
int vram__st_pread_full(int fd, const char *path, void *dst, size_t n, uint64_t off);

/* The little-endian u64 at b. */
uint64_t vram__st_le64(const unsigned char *b);

/* "dir/name" in a new string, NULL when out of memory. */
char *vram__st_path_join(const char *dir, const char *name);

/* The directory part of path ("." when none), in a new string. */
char *vram__st_path_dir(const char *path);

/* True when s ends with suffix. */
int vram__st_ends_with(const char *s, const char *suffix);

/* Opens path read-only and checks that it is a regular file. On success
 * *fd_out (the caller closes it) and *st are set; on failure nothing is open
 * and the message names the file (missing_code when it does not exist). */
int vram__st_open_regular(const char *path, int missing_code, int *fd_out, struct stat *st);

/* Picks what a directory holds, as Hugging Face lays it out:
 * model.safetensors.index.json, else model.safetensors, else the one
 * *.safetensors file. Returns the chosen path (new string) in *out and
 * whether it is an index. */
int vram__st_resolve_dir(const char *dir, char **out, int *is_index);

/* ---- opening: headers, the index join, the table (st_open.c) ---- */

/* Frees a model description and its file paths; NULL does nothing. */
void vram__st_model_free(st_model *m);

/* Frees what a failed open gathered (headers and model); o itself is the
 * caller's. */
void vram__st_open_free(st_open *o);

/* Opens the single file at path into o. */
int vram__st_open_single(const char *path, st_open *o);

/* Opens the sharded checkpoint whose index is at path: every shard (in
 * shard-name order) is opened and validated, and the weight_map and the
 * shards must agree both ways. */
int vram__st_open_index(const char *path, st_open *o);

/* Places every tensor of every file in the device range (file order, each
 * at a multiple of ST_ALIGN) and builds the copy segments: consecutive
 * tensors of one file whose placement keeps their relative offsets share a
 * segment (a run), so that most of a file goes over in a few large copies.
 * Fills s->tensors, s->ntensors, s->bytes and m->segs. Takes the names out
 * of the headers. */
int vram__st_build_table(vram_source *s, st_open *o);

/* ---- loading: the staging ring and the direct path (st_read.c) ---- */

/* Opens every file again and checks it is the one validated. On success
 * fds[] are open (the caller closes them); on failure none is. */
int vram__st_reopen_files(const st_model *m, int *fds);

/* Streams the range image to the sink through pinned staging memory:
 * readers fill the staging ring from fds (the caller's, open), this thread
 * copies each chunk to the device in order. Returns 0 or the first error
 * (with its message); every thread and slot is gone on return. */
int vram__st_load_staged(vram_source *s, const vram_sink *sink, const int *fds);

/* Reads the range image from fds (the caller's, open and checked) straight
 * into the device range at dev (its CPU address, valid for all of
 * [0, s->bytes)), with up to ST_READERS reads in flight. Returns 0 or the
 * first error (with its message); the range is then partly written and
 * the caller frees it. Every thread and descriptor it opened is gone on
 * return. */
int vram__st_load_direct(vram_source *s, const vram_sink *sink, const int *fds, void *dev);

#endif /* VRAM_ST_INTERNAL_H */
