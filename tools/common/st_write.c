/* st_write.c - writes synthetic LLaMA-like safetensors models, single files or sharded. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "common/st_write.h"
#include "vram.h"

#define MW_MAX_DTYPES 16
#define MW_BUF ((size_t)8 << 20)

/* The dtypes of the safetensors format and their widths in bits (the
 * writer's own copy: libvram's parser keeps its table private). */
typedef struct mw_dtype {
    const char *name;
    unsigned bits;
} mw_dtype;

static const mw_dtype mw_dtypes[] = {
    {"BOOL", 8}, {"F4", 4},      {"F6_E2M3", 6}, {"F6_E3M2", 6}, {"U8", 8},
    {"I8", 8},   {"F8_E5M2", 8}, {"F8_E4M3", 8}, {"F8_E8M0", 8}, {"I16", 16},
    {"U16", 16}, {"F16", 16},    {"BF16", 16},   {"I32", 32},    {"U32", 32},
    {"F32", 32}, {"C64", 64},    {"F64", 64},    {"I64", 64},    {"U64", 64},
};

static const mw_dtype *dtype_find(const char *name)
{
    for (size_t i = 0; i < sizeof mw_dtypes / sizeof mw_dtypes[0]; i++)
        if (!strcmp(mw_dtypes[i].name, name)) return &mw_dtypes[i];
    return NULL;
}

/* Bytes of a tensor of dt with this shape; -1 when the count overflows or
 * does not end on a byte boundary. */
static int tensor_bytes(const mw_dtype *dt, int ndim, const int64_t *shape, uint64_t *bytes)
{
    uint64_t elems = 1, bits = 0;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return -1;
        if (__builtin_mul_overflow(elems, (uint64_t)shape[i], &elems)) return -1;
    }
    if (__builtin_mul_overflow(elems, (uint64_t)dt->bits, &bits)) return -1;
    if (bits % 8 != 0) return -1;
    *bytes = bits / 8;
    return 0;
}

typedef struct mw_tensor {
    char name[96];
    const mw_dtype *dtype;
    int ndim;
    int64_t shape[2];
    uint64_t bytes;
    int shard;
} mw_tensor;

/* Writes the message into err (errlen bytes, err may be NULL) and as the
 * thread's vram_last_error(), and returns code. */
static int mw_fail(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int mw_fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (err && errlen) snprintf(err, errlen, "%s", msg);
    return vram_set_error(code, "%s", msg);
}

/* Splits "BF16,F32" into dtypes; returns the count or a negative code. */
static int parse_dtypes(const char *text, const mw_dtype **out, char *err, size_t errlen)
{
    if (!text || !*text) text = "BF16";
    int n = 0;
    const char *p = text;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        if (!*p) break;
        const char *q = p;
        while (*q && *q != ',' && *q != ' ')
            q++;
        char name[32];
        size_t len = (size_t)(q - p);
        if (len >= sizeof name) len = sizeof name - 1;
        memcpy(name, p, len);
        name[len] = '\0';
        const mw_dtype *dt = dtype_find(name);
        if (!dt)
            return mw_fail(err, errlen, VRAM_EINVAL,
                           "unknown dtype '%s' (use e.g. BF16, F16, F32, F8_E4M3, I8, U8)", name);
        if (n == MW_MAX_DTYPES)
            return mw_fail(err, errlen, VRAM_EINVAL, "more than %d dtypes in '%s'", MW_MAX_DTYPES,
                           text);
        out[n++] = dt;
        p = q;
    }
    if (n == 0) return mw_fail(err, errlen, VRAM_EINVAL, "no dtype in '%s'", text);
    return n;
}

/* Chooses hidden size h, intermediate size, vocabulary and layer count so
 * that the model holds about total_bytes at avg_bits per element. */
static void choose_shape(uint64_t total_bytes, double avg_bits, uint64_t *h_out,
                         uint64_t *inter_out, uint64_t *vocab_out, uint64_t *layers_out)
{
    static const uint64_t hs[] = {16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 5120, 8192};
    double params = (double)total_bytes * 8.0 / avg_bits;
    uint64_t h = hs[0];
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) {
        uint64_t c = hs[i];
        uint64_t inter = c * 43 / 16;
        uint64_t vocab = c >= 1024 ? 32000 : c * 16;
        double layer = 4.0 * (double)(c * c) + 3.0 * (double)(c * inter) + 2.0 * (double)c;
        double fixed = 2.0 * (double)(vocab * c) + (double)c;
        if (fixed + 4.0 * layer <= params) h = c;
    }
    uint64_t inter = h * 43 / 16;
    uint64_t vocab = h >= 1024 ? 32000 : h * 16;
    double layer = 4.0 * (double)(h * h) + 3.0 * (double)(h * inter) + 2.0 * (double)h;
    double fixed = 2.0 * (double)(vocab * h) + (double)h;
    double l = (params - fixed) / layer;
    uint64_t layers = l < 1.0 ? 1 : (uint64_t)(l + 0.5);
    if (layers > 10000) layers = 10000;
    *h_out = h;
    *inter_out = inter;
    *vocab_out = vocab;
    *layers_out = layers;
}

/* Writes all n bytes (retrying short writes); -1 with errno on failure. */
static int write_full(int fd, const void *src, size_t n)
{
    const unsigned char *p = src;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Writes one safetensors file holding tensors t[first, last) whose data is
 * the synthetic stream from stream_off on. buf is MW_BUF bytes of scratch. */
static int write_shard(const char *path, const mw_tensor *t, size_t first, size_t last,
                       uint64_t seed, uint64_t stream_off, unsigned char *buf, char *err,
                       size_t errlen)
{
    json_t *root = json_object();
    json_t *meta = json_pack("{s:s}", "format", "pt");
    if (!root || !meta || json_object_set_new(root, "__metadata__", meta) < 0) {
        json_decref(root);
        return mw_fail(err, errlen, VRAM_EHOSTMEM, "%s: out of host memory", path);
    }
    uint64_t off = 0;
    for (size_t i = first; i < last; i++) {
        json_t *shape = json_array();
        for (int d = 0; d < t[i].ndim; d++)
            json_array_append_new(shape, json_integer((json_int_t)t[i].shape[d]));
        json_t *e = json_pack("{s:s,s:o,s:[I,I]}", "dtype", t[i].dtype->name, "shape", shape,
                              "data_offsets", (json_int_t)off, (json_int_t)(off + t[i].bytes));
        if (!e || json_object_set_new(root, t[i].name, e) < 0) {
            json_decref(root);
            return mw_fail(err, errlen, VRAM_EHOSTMEM, "%s: out of host memory", path);
        }
        off += t[i].bytes;
    }
    char *text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!text) return mw_fail(err, errlen, VRAM_EHOSTMEM, "%s: out of host memory", path);
    size_t len = strlen(text);
    size_t padded = (len + 7) / 8 * 8;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        free(text);
        return mw_fail(err, errlen, VRAM_EIO, "%s: %s", path, strerror(errno));
    }
    unsigned char lenb[8];
    for (int i = 0; i < 8; i++)
        lenb[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    int bad = write_full(fd, lenb, 8) < 0 || write_full(fd, text, len) < 0 ||
              write_full(fd, "        ", padded - len) < 0;
    free(text);
    for (uint64_t done = 0; !bad && done < off;) {
        size_t n = (size_t)(off - done < MW_BUF ? off - done : MW_BUF);
        vram_synthetic_fill(seed, stream_off + done, buf, n);
        bad = write_full(fd, buf, n) < 0;
        done += n;
    }
    if (bad) {
        int e = errno;
        close(fd);
        return mw_fail(err, errlen, VRAM_EIO, "%s: write: %s", path, strerror(e));
    }
    if (close(fd) < 0)
        return mw_fail(err, errlen, VRAM_EIO, "%s: close: %s", path, strerror(errno));
    return 0;
}

/* Writes model.safetensors.index.json at path: metadata.total_size and a
 * weight_map sorted by name, indented, with a final newline (as
 * transformers writes it). Returns 0 or a negative code with err set. */
static int write_index(const char *path, const mw_tensor *t, size_t n, const char *const *names,
                       uint64_t total, char *err, size_t errlen)
{
    json_t *wm = json_object();
    for (size_t i = 0; wm && i < n; i++)
        if (json_object_set_new(wm, t[i].name, json_string(names[t[i].shard])) < 0) {
            json_decref(wm);
            wm = NULL;
        }
    json_t *root = wm ? json_pack("{s:{s:I},s:o}", "metadata", "total_size", (json_int_t)total,
                                  "weight_map", wm)
                      : NULL;
    char *text = root ? json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
    json_decref(root);
    if (!text) return mw_fail(err, errlen, VRAM_EHOSTMEM, "%s: out of host memory", path);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int bad = fd < 0 || write_full(fd, text, strlen(text)) < 0 || write_full(fd, "\n", 1) < 0;
    int e = errno;
    free(text);
    if (fd >= 0 && close(fd) < 0 && !bad) {
        bad = 1;
        e = errno;
    }
    if (bad) return mw_fail(err, errlen, VRAM_EIO, "%s: %s", path, strerror(e));
    return 0;
}

/* The LLaMA-like tensor list of the shape choose_shape picked: names and
 * shapes into t (3 + 9 * layers entries), dtypes and bytes left to
 * assign_dtypes. */
static void list_tensors(mw_tensor *t, uint64_t h, uint64_t inter, uint64_t vocab, uint64_t layers)
{
    size_t k = 0;
#define MW_ADD(r, c, fmt, ...)                                                                     \
    do {                                                                                           \
        snprintf(t[k].name, sizeof t[k].name, fmt, __VA_ARGS__);                                   \
        t[k].ndim = (c) ? 2 : 1;                                                                   \
        t[k].shape[0] = (int64_t)(r);                                                              \
        t[k].shape[1] = (int64_t)(c);                                                              \
        k++;                                                                                       \
    } while (0)
    MW_ADD(vocab, h, "%s", "model.embed_tokens.weight");
    for (uint64_t l = 0; l < layers; l++) {
        MW_ADD(h, h, "model.layers.%" PRIu64 ".self_attn.q_proj.weight", l);
        MW_ADD(h, h, "model.layers.%" PRIu64 ".self_attn.k_proj.weight", l);
        MW_ADD(h, h, "model.layers.%" PRIu64 ".self_attn.v_proj.weight", l);
        MW_ADD(h, h, "model.layers.%" PRIu64 ".self_attn.o_proj.weight", l);
        MW_ADD(inter, h, "model.layers.%" PRIu64 ".mlp.gate_proj.weight", l);
        MW_ADD(inter, h, "model.layers.%" PRIu64 ".mlp.up_proj.weight", l);
        MW_ADD(h, inter, "model.layers.%" PRIu64 ".mlp.down_proj.weight", l);
        MW_ADD(h, 0, "model.layers.%" PRIu64 ".input_layernorm.weight", l);
        MW_ADD(h, 0, "model.layers.%" PRIu64 ".post_attention_layernorm.weight", l);
    }
    MW_ADD(h, 0, "%s", "model.norm.weight");
    MW_ADD(vocab, h, "%s", "lm_head.weight");
#undef MW_ADD
}

/* Gives tensor i dtype dts[i % ndt] and its byte count; sums them into
 * *total. VRAM_EINVAL when a tensor has no whole byte count. */
static int assign_dtypes(mw_tensor *t, size_t n, const mw_dtype *const *dts, int ndt,
                         uint64_t *total, char *err, size_t errlen)
{
    *total = 0;
    for (size_t i = 0; i < n; i++) {
        t[i].dtype = dts[i % (size_t)ndt];
        if (tensor_bytes(t[i].dtype, t[i].ndim, t[i].shape, &t[i].bytes) < 0)
            return mw_fail(err, errlen, VRAM_EINVAL, "tensor %s of %s has no whole byte count",
                           t[i].name, t[i].dtype->name);
        *total += t[i].bytes;
    }
    return 0;
}

/* Splits the tensors into shards contiguous groups of about equal bytes,
 * none empty (n >= shards). */
static void split_shards(mw_tensor *t, size_t n, uint64_t total, int shards)
{
    uint64_t cum = 0;
    int prev = 0;
    for (size_t i = 0; i < n; i++) {
        int s = (int)(total ? (uint64_t)((double)cum / (double)total * shards) : 0);
        int lowest = shards - (int)(n - i);
        if (s < prev) s = prev;
        if (s < lowest) s = lowest;
        if (s > prev + 1 && i > 0) s = prev + 1;
        if (i == 0) s = 0;
        if (s > shards - 1) s = shards - 1;
        t[i].shard = prev = s;
        cum += t[i].bytes;
    }
}

/* What one call writes, and what it must free (and, on failure, remove). */
typedef struct mw_plan {
    const char *out_path;
    uint64_t seed;
    int shards;
    mw_tensor *t;
    size_t n;
    uint64_t total; /* bytes of every tensor */
    int is_dir;     /* out_path is (or became) a directory */
    char **names;   /* shards file names */
    char **written; /* paths created so far (shards + 1 slots) */
    size_t nwritten;
    unsigned char *buf; /* MW_BUF bytes of scratch */
} mw_plan;

/* Makes out_path a directory when more than one shard goes there, and the
 * shard file names. */
static int plan_files(mw_plan *p, char *err, size_t errlen)
{
    struct stat st;
    p->is_dir = stat(p->out_path, &st) == 0 && S_ISDIR(st.st_mode);
    if (p->shards > 1 && !p->is_dir) {
        if (mkdir(p->out_path, 0755) < 0)
            return mw_fail(err, errlen, VRAM_EIO, "%s: cannot create directory: %s", p->out_path,
                           strerror(errno));
        p->is_dir = 1;
    }
    for (int s = 0; s < p->shards; s++) {
        char base[64];
        if (p->shards == 1)
            snprintf(base, sizeof base, "model.safetensors");
        else
            snprintf(base, sizeof base, "model-%05d-of-%05d.safetensors", s + 1, p->shards);
        p->names[s] = strdup(base);
        if (!p->names[s]) return mw_fail(err, errlen, VRAM_EHOSTMEM, "out of host memory");
    }
    return 0;
}

/* A new path under out_path (or out_path itself for name NULL), recorded in
 * p->written so that a failure removes it; NULL when out of memory. */
static char *plan_path(mw_plan *p, const char *name)
{
    char *path;
    if (!name) {
        path = strdup(p->out_path);
    } else {
        size_t len = strlen(p->out_path) + strlen(name) + 2;
        path = malloc(len);
        if (path) snprintf(path, len, "%s/%s", p->out_path, name);
    }
    if (path) p->written[p->nwritten++] = path;
    return path;
}

/* Writes every shard, then (sharded) the index. */
static int write_files(mw_plan *p, char *err, size_t errlen)
{
    uint64_t stream = 0;
    size_t first = 0;
    for (int s = 0; s < p->shards; s++) {
        size_t last = first;
        while (last < p->n && p->t[last].shard == s)
            last++;
        char *path = plan_path(p, p->shards == 1 && !p->is_dir ? NULL : p->names[s]);
        if (!path) return mw_fail(err, errlen, VRAM_EHOSTMEM, "out of host memory");
        int rc = write_shard(path, p->t, first, last, p->seed, stream, p->buf, err, errlen);
        if (rc < 0) return rc;
        for (size_t i = first; i < last; i++)
            stream += p->t[i].bytes;
        first = last;
    }
    if (p->shards == 1) return 0;
    char *path = plan_path(p, "model.safetensors.index.json");
    if (!path) return mw_fail(err, errlen, VRAM_EHOSTMEM, "out of host memory");
    return write_index(path, p->t, p->n, (const char *const *)p->names, p->total, err, errlen);
}

/* See st_write.h. Builds the tensor list, splits it into shards, writes
 * each file and the index; on failure removes every file it wrote. */
int st_make_model(const char *out_path, uint64_t total_bytes, const char *dtypes, uint64_t seed,
                  int shards, char *err, size_t errlen)
{
    if (err && errlen) err[0] = '\0';
    if (!out_path || !*out_path) return mw_fail(err, errlen, VRAM_EINVAL, "no output path");
    if (total_bytes == 0) return mw_fail(err, errlen, VRAM_EINVAL, "model size must be above 0");
    const mw_dtype *dts[MW_MAX_DTYPES];
    int ndt = parse_dtypes(dtypes, dts, err, errlen);
    if (ndt < 0) return ndt;
    if (shards < 1) shards = 1;
    if (shards > 99999) return mw_fail(err, errlen, VRAM_EINVAL, "at most 99999 shards");

    double avg_bits = 0;
    for (int i = 0; i < ndt; i++)
        avg_bits += dts[i]->bits;
    avg_bits /= ndt;
    uint64_t h, inter, vocab, layers;
    choose_shape(total_bytes, avg_bits, &h, &inter, &vocab, &layers);

    size_t n = (size_t)(3 + 9 * layers);
    if ((size_t)shards > n)
        return mw_fail(err, errlen, VRAM_EINVAL,
                       "%d shards but the model of about %" PRIu64 " bytes has only %zu tensors",
                       shards, total_bytes, n);
    mw_plan p = {.out_path = out_path, .seed = seed, .shards = shards, .n = n};
    p.t = calloc(n, sizeof *p.t);
    p.buf = malloc(MW_BUF);
    p.names = calloc((size_t)shards, sizeof *p.names);
    p.written = calloc((size_t)shards + 1, sizeof *p.written);
    int rc = 0;
    if (!p.t || !p.buf || !p.names || !p.written) {
        rc = mw_fail(err, errlen, VRAM_EHOSTMEM, "out of host memory");
        goto out;
    }
    list_tensors(p.t, h, inter, vocab, layers);
    rc = assign_dtypes(p.t, n, dts, ndt, &p.total, err, errlen);
    if (rc < 0) goto out;
    split_shards(p.t, n, p.total, shards);
    rc = plan_files(&p, err, errlen);
    if (rc < 0) goto out;
    rc = write_files(&p, err, errlen);
    if (rc < 0) goto out;
    vram_log(VRAM_LOG_DEBUG,
             "make-model %s: %zu tensors, %" PRIu64 " bytes, hidden %" PRIu64 ", %" PRIu64
             " layers, %d shard(s)",
             out_path, n, p.total, h, layers, shards);
out:
    for (size_t i = 0; i < p.nwritten; i++) {
        if (rc < 0) unlink(p.written[i]);
        free(p.written[i]);
    }
    if (p.names)
        for (int s = 0; s < shards; s++)
            free(p.names[s]);
    free(p.names);
    free(p.written);
    free(p.buf);
    free(p.t);
    return rc;
}
