/* st_parse.h - safetensors header and index validation over memory buffers (the synthetic model writer is tools/common/st_write.h). */
#ifndef VRAM_ST_PARSE_H
#define VRAM_ST_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include "vram.h"

/* Limits applied to every file before anything else is read. */
#define VRAM_ST_MAX_HEADER ((uint64_t)100 << 20) /* bytes of JSON header (and of an index) */
#define VRAM_ST_MAX_NAME 1024                    /* bytes of one tensor name */
#define VRAM_ST_MAX_SHARD_NAME 255               /* bytes of one shard file name */

/* One dtype of the format: its name and its width in bits. */
typedef struct vram__st_dtype {
    const char *name; /* static: "BF16", "F8_E4M3", "F4" ... */
    unsigned bits;    /* 4, 6, 8, 16, 32 or 64 */
} vram__st_dtype;

/* The dtype called name, or NULL when the format has none by that name. */
const vram__st_dtype *vram__st_dtype_find(const char *name);

/* One tensor of a validated header. Offsets are from the start of the
 * file's data section (the byte after the header). */
typedef struct vram__st_tensor {
    char *name; /* owned by the header (freed by vram__st_header_free) */
    const vram__st_dtype *dtype;
    int ndim;
    int64_t shape[VRAM_MAX_DIMS];
    uint64_t begin, end; /* data_offsets */
} vram__st_tensor;

/* A validated safetensors header. Tensors are sorted by begin offset (file
 * order); they do not overlap and lie inside the data section. */
typedef struct vram__st_header {
    uint64_t header_len; /* N, the JSON's byte count */
    uint64_t data_start; /* 8 + N: where the data section starts in the file */
    uint64_t data_size;  /* file size - 8 - N */
    uint64_t data_end;   /* largest end offset (0 when no tensor holds bytes) */
    size_t nmeta;        /* entries of __metadata__ */
    size_t ntensors;
    vram__st_tensor *tensors;
} vram__st_header;

/* Validates the JSON header json (n bytes, not NUL-terminated) of a file of
 * file_size bytes whose first 8 bytes declared n. what names the file in
 * messages. Checks: UTF-8; JSON syntax (RFC 8259 as jansson reads it: no
 * NUL in strings, no lone surrogates, integers within int64), read without
 * building a tree so that memory stays a small multiple of the names kept;
 * a top-level object without a key twice (at any level); __metadata__ an
 * object of strings; each tensor entry an object with exactly dtype,
 * shape, data_offsets; dtype known; shape of at most VRAM_MAX_DIMS
 * non-negative integers whose element count does not overflow;
 * data_offsets [begin, end] with begin <= end inside the data section and
 * end - begin = elements x dtype bits / 8 (whole bytes); no two tensors
 * sharing a byte; names non-empty and at most VRAM_ST_MAX_NAME bytes. On
 * success fills *out (free with vram__st_header_free) and returns 0; on
 * failure returns VRAM_EFORMAT (or VRAM_EHOSTMEM) with the message set by
 * vram__errorf, and *out holds nothing to free. */
int vram__st_parse_header(const char *json, uint64_t n, uint64_t file_size, const char *what,
                          vram__st_header *out);

/* Validates a whole safetensors file held in memory (size bytes at data):
 * the 8-byte length, its bounds (<= VRAM_ST_MAX_HEADER and <= size - 8),
 * then the header as vram__st_parse_header does. Same ownership. */
int vram__st_parse_buffer(const void *data, size_t size, const char *what, vram__st_header *out);

/* Frees what a successful parse filled in; h itself is the caller's.
 * Safe on a zeroed struct. */
void vram__st_header_free(vram__st_header *h);

/* A validated model.safetensors.index.json. The strings live in the two
 * arenas, which the struct owns. */
typedef struct vram__st_index {
    size_t nshards;
    char **shards; /* the distinct shard file names, sorted (plain names) */
    size_t nentries;
    char **names;     /* weight_map keys, in the file's order */
    size_t *shard_of; /* names[i] lives in shards[shard_of[i]] */
    char *names_arena, *shards_arena;
} vram__st_index;

/* Validates an index (n bytes of JSON): an object whose "weight_map" is an
 * object of tensor name -> shard file name, every shard name a plain name
 * (no '/', '\\', control characters, "." or "..", at most
 * VRAM_ST_MAX_SHARD_NAME bytes), no key twice at the top level or in
 * weight_map, "metadata" (when present)
 * an object; other members are skipped. Returns 0 and fills *out (free with
 * vram__st_index_free) or VRAM_EFORMAT / VRAM_EHOSTMEM with the message
 * set; *out then holds nothing to free. */
int vram__st_parse_index(const char *json, size_t n, const char *what, vram__st_index *out);
void vram__st_index_free(vram__st_index *ix);


/* Bytes of a tensor of dtype dt with the given shape, or -1 when the count
 * overflows or does not end on a byte boundary (sub-byte dtypes). */
int vram__st_tensor_bytes(const vram__st_dtype *dt, int ndim, const int64_t *shape,
                          uint64_t *bytes);

#endif /* VRAM_ST_PARSE_H */
