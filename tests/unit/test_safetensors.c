/* test_safetensors.c - the safetensors source: round trips, other writers' files, hostile files, streaming load. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "backend/backend.h"
#include "base/base.h"
#include "loader/source.h"
#include "common/st_write.h"
#include "loader/st_parse.h"
#include "vram.h"

#define MiB ((uint64_t)1 << 20)
#define FIXTURES VRAM_SOURCE_DIR "/tests/data/safetensors/fluxml-SafeTensors.jl"

static char g_tmp[256]; /* a fresh directory per test */

/* ---- fixtures and helpers ---- */

/* nftw callback: removes one entry of the test directory. */
static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

/* Each test gets a fresh temporary directory. */
static int setup(void **state)
{
    (void)state;
    snprintf(g_tmp, sizeof g_tmp, "/tmp/vram-st-test-XXXXXX");
    if (!mkdtemp(g_tmp)) return -1;
    return 0;
}

/* Removes the test directory and everything in it. */
static int teardown(void **state)
{
    (void)state;
    nftw(g_tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* g_tmp/name in one of 8 rotating static buffers. */
static char *tmp_path(const char *name)
{
    static char buf[8][512];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, 512, "%s/%s", g_tmp, name);
    return p;
}

#define assert_contains(text, sub)                                                                 \
    do {                                                                                           \
        const char *t_ = (text), *s_ = (sub);                                                      \
        if (!t_ || !strstr(t_, s_))                                                                \
            fail_msg("expected message containing \"%s\"\n  got \"%s\"", s_, t_ ? t_ : "(null)");  \
    } while (0)

/* Writes n bytes to path (created or truncated); fails the test on error. */
static void write_bytes(const char *path, const void *data, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, n), (ssize_t)n);
    close(fd);
}

/* Writes a safetensors file: the 8-byte length (declared, or the real
 * length of header when declared is UINT64_MAX), header, then data_len
 * bytes of a pattern. */
static void write_st(const char *path, const char *header, uint64_t declared, size_t data_len)
{
    size_t hl = strlen(header);
    uint64_t n = declared == UINT64_MAX ? hl : declared;
    size_t total = 8 + hl + data_len;
    unsigned char *buf = malloc(total);
    assert_non_null(buf);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)(n >> (8 * i));
    memcpy(buf + 8, header, hl);
    for (size_t i = 0; i < data_len; i++)
        buf[8 + hl + i] = (unsigned char)(i * 7 + 3);
    write_bytes(path, buf, total);
    free(buf);
}

/* The whole file at path in a new buffer (caller frees), its size in *len. */
static void *read_all(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    unsigned char *p = malloc((size_t)st.st_size + 1);
    assert_non_null(p);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = pread(fd, p + got, (size_t)st.st_size - got, (off_t)got);
        assert_true(r > 0);
        got += (size_t)r;
    }
    close(fd);
    *len = got;
    return p;
}

/* A host backend with one 256 MiB device, inside the fault decorator so
 * that vram__backend_inject works on it (caller destroys). */
static vram_backend *host_backend(void)
{
    vram_backend_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.kind = VRAM_BACKEND_HOST;
    cfg.host_devices = 1;
    cfg.host_memory = 256 * MiB;
    cfg.fault_injection = 1;
    vram_backend *b = NULL;
    int rc = vram__backend_open(&cfg, &b);
    if (rc) fail_msg("host backend: %s", vram__last_error());
    return b;
}

/* The staging view of a host backend: a copy of its interface table (same
 * context) without host_ptr, so that loads take the staging path as on
 * CUDA. Optionally its host_alloc makes the nth staging buffer from now
 * read-only, so that a read into it fails midway (EFAULT). The caller
 * frees the copy with free(), and destroys the original only. */
static vram_backend *g_real_host; /* the backend the staging view copies */
static int g_ro_alloc;            /* host_alloc calls until the read-only one; 0 = none */

/* host_alloc of the staging view: the real one, then read-only when due. */
static int staged_host_alloc(vram_backend *b, size_t bytes, void **out)
{
    (void)b; /* the view: same context as the real one */
    int rc = vram__backend_host_alloc(g_real_host, bytes, out);
    if (rc == 0 && g_ro_alloc > 0 && --g_ro_alloc == 0)
        assert_int_equal(mprotect(*out, (size_t)vram__round_up(bytes, 4096), PROT_READ), 0);
    return rc;
}

/* The staging view of host (see above); the caller frees it with free(). */
static vram_backend *staging_view(vram_backend *host)
{
    static struct vram_backend_iface view_iface;
    view_iface = *host->iface;
    view_iface.host_ptr = NULL;
    view_iface.host_alloc = staged_host_alloc;
    vram_backend *v = malloc(sizeof *v);
    assert_non_null(v);
    *v = *host;
    v->iface = &view_iface;
    g_real_host = host;
    return v;
}

/* Loads s into a fresh host-backend range with the given chunk size, by
 * the direct path (staged = 0) or the staging path (staged = 1), and
 * returns the range's bytes (caller frees); *sum (when not NULL) gets the
 * backend's raw checksum of the range. The range holds other bytes before
 * the load, so that padding left unwritten would show. Fails the test when
 * the load fails. */
static unsigned char *load_range(vram_source *s, uint64_t chunk, int staged, uint64_t *sum)
{
    vram_backend *host = host_backend();
    vram_backend *b = staged ? staging_view(host) : host;
    vram_buf buf;
    memset(&buf, 0, sizeof buf);
    assert_int_equal(vram__backend_reserve(b, 0, (size_t)s->bytes, &buf), 0);
    assert_int_equal(vram__backend_map(b, &buf), 0);
    void *dev = vram__backend_host_ptr(host, &buf, 0, (size_t)s->bytes);
    assert_non_null(dev);
    memset(dev, 0xa5, (size_t)s->bytes);
    uint64_t progress = 0;
    vram_sink sink = {.backend = b, .buf = &buf, .progress = &progress, .chunk_bytes = chunk};
    int rc = s->load(s, &sink);
    if (rc)
        fail_msg("load %s (%s): %s: %s", s->spec, staged ? "staged" : "direct", vram_err_name(rc),
                 vram__last_error());
    assert_int_equal(progress, s->bytes);
    unsigned char *out = malloc((size_t)s->bytes);
    assert_non_null(out);
    assert_int_equal(vram__backend_to_host(b, &buf, 0, out, (size_t)s->bytes), 0);
    if (sum) assert_int_equal(vram__backend_checksum(b, &buf, 0, (size_t)s->bytes, sum), 0);
    vram__backend_unreserve(b, &buf);
    if (staged) free(b);
    vram__backend_destroy(host);
    return out;
}

/* Loads s by the direct path (the host backend's) and returns the range's
 * bytes (caller frees). */
static unsigned char *load_to_host(vram_source *s, uint64_t chunk)
{
    return load_range(s, chunk, 0, NULL);
}

/* The table entry called name, or NULL. */
static const vram_tensor_info *find_tensor(const vram_source *s, const char *name)
{
    for (size_t i = 0; i < s->ntensors; i++)
        if (strcmp(s->tensors[i].name, name) == 0) return &s->tensors[i];
    return NULL;
}

/* Checks every tensor of the safetensors file at path against the loaded
 * range: dtype, shape and bytes, reading the file's header with jansson
 * directly (not through the loader's parser). Marks the tensors seen in
 * seen[] (indexed like s->tensors); returns how many the file holds. */
static size_t check_file(const vram_source *s, const unsigned char *range, const char *path,
                         unsigned char *seen)
{
    size_t len = 0;
    unsigned char *file = read_all(path, &len);
    assert_true(len >= 8);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | file[i];
    json_error_t jerr;
    json_t *root = json_loadb((const char *)file + 8, (size_t)n, 0, &jerr);
    if (!root) fail_msg("%s: %s", path, jerr.text);
    const char *key;
    json_t *v;
    size_t count = 0;
    json_object_foreach(root, key, v)
    {
        if (strcmp(key, "__metadata__") == 0) continue;
        const vram_tensor_info *t = find_tensor(s, key);
        if (!t) fail_msg("%s: tensor %s is not in the table", path, key);
        seen[t - s->tensors] = 1;
        assert_string_equal(t->dtype, json_string_value(json_object_get(v, "dtype")));
        json_t *shape = json_object_get(v, "shape");
        assert_int_equal(t->ndim, (int)json_array_size(shape));
        for (int d = 0; d < t->ndim; d++)
            assert_int_equal(t->shape[d], json_integer_value(json_array_get(shape, (size_t)d)));
        json_t *offs = json_object_get(v, "data_offsets");
        uint64_t b = (uint64_t)json_integer_value(json_array_get(offs, 0));
        uint64_t e = (uint64_t)json_integer_value(json_array_get(offs, 1));
        assert_int_equal(t->bytes, e - b);
        assert_int_equal(t->offset % 256, 0);
        assert_true(t->offset + t->bytes <= s->bytes);
        assert_true(8 + n + e <= len);
        if (memcmp(range + t->offset, file + 8 + n + b, (size_t)(e - b)) != 0)
            fail_msg("%s: tensor %s: loaded bytes differ from the file's", path, key);
        count++;
    }
    json_decref(root);
    free(file);
    return count;
}

/* Opens spec, loads it and checks it against files[] (the safetensors
 * files it is made of); also checks the table's order and that the bytes
 * between tensors are zero. */
static void roundtrip(const char *spec, const char *const *files, size_t nfiles, uint64_t chunk)
{
    vram_source *s = NULL;
    int rc = vram__safetensors_open(spec, &s);
    if (rc) fail_msg("open %s: %s: %s", spec, vram_err_name(rc), vram__last_error());
    assert_non_null(s);
    assert_true(s->ntensors > 0);
    assert_int_equal(s->bytes % 256, 0);
    unsigned char *range = load_to_host(s, chunk);
    unsigned char *seen = calloc(s->ntensors, 1);
    unsigned char *covered = calloc((size_t)s->bytes, 1);
    assert_non_null(seen);
    assert_non_null(covered);
    size_t total = 0;
    for (size_t i = 0; i < nfiles; i++)
        total += check_file(s, range, files[i], seen);
    assert_int_equal(total, s->ntensors);
    for (size_t i = 0; i < s->ntensors; i++) {
        assert_true(seen[i]);
        assert_null(s->tensors[i].dev_ptr);
        if (i > 0 && s->tensors[i].bytes && s->tensors[i - 1].bytes)
            assert_true(s->tensors[i].offset >= s->tensors[i - 1].offset + s->tensors[i - 1].bytes);
        for (uint64_t k = 0; k < s->tensors[i].bytes; k++) {
            assert_int_equal(covered[s->tensors[i].offset + k], 0); /* no overlap */
            covered[s->tensors[i].offset + k] = 1;
        }
    }
    for (uint64_t k = 0; k < s->bytes; k++)
        if (!covered[k] && range[k] != 0) fail_msg("padding byte %" PRIu64 " is not zero", k);
    free(covered);
    free(seen);
    free(range);
    vram__source_close(s);
}

/* Expects opening spec to fail with code and a message containing sub. */
static void expect_refused(const char *spec, int code, const char *sub)
{
    vram_source *s = (vram_source *)1;
    vram__clear_error();
    int rc = vram__safetensors_open(spec, &s);
    if (rc != code)
        fail_msg("open %s: expected %s, got %s (%s)", spec, vram_err_name(code), vram_err_name(rc),
                 vram__last_error());
    assert_null(s);
    assert_contains(vram__last_error(), sub);
}

/* Writes a header-only corpus file and expects it refused with sub. */
static void expect_header_refused(const char *name, const char *header, size_t data_len,
                                  const char *sub)
{
    const char *p = tmp_path(name);
    write_st(p, header, UINT64_MAX, data_len);
    expect_refused(p, VRAM_EFORMAT, sub);
    assert_contains(vram__last_error(), name); /* names the file */
}

/* ---- round trips of files written by make_model ---- */

static void test_make_model_single(void **state)
{
    (void)state;
    const char *p = tmp_path("model.safetensors");
    char err[256];
    assert_int_equal(st_make_model(p, 3 * MiB, "BF16,F32", 7, 1, err, sizeof err), 0);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_true(st.st_size > (off_t)(2 * MiB) && st.st_size < (off_t)(5 * MiB));
    size_t len;
    unsigned char *file = read_all(p, &len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | file[i];
    assert_int_equal(n % 8, 0);
    assert_true(memmem(file + 8, (size_t)n, "\"__metadata__\":{\"format\":\"pt\"}", 30) != NULL);
    free(file);
    const char *files[] = {p};
    roundtrip(p, files, 1, 64 << 10); /* many small chunks through the ring */
    roundtrip(g_tmp, files, 1, 0);    /* the directory, default chunks */

    vram_source *s = NULL;
    assert_int_equal(vram__safetensors_open(p, &s), 0);
    const char *names[] = {"model.embed_tokens.weight",
                           "model.layers.0.self_attn.q_proj.weight",
                           "model.layers.0.self_attn.k_proj.weight",
                           "model.layers.0.mlp.down_proj.weight",
                           "model.layers.0.input_layernorm.weight",
                           "model.norm.weight",
                           "lm_head.weight"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!find_tensor(s, names[i])) fail_msg("no tensor %s", names[i]);
    const vram_tensor_info *q = find_tensor(s, "model.layers.0.self_attn.q_proj.weight");
    assert_int_equal(q->ndim, 2);
    assert_int_equal(q->shape[0], q->shape[1]);
    /* dtypes alternate BF16, F32 over the tensors */
    assert_string_equal(s->tensors[0].dtype, "BF16");
    assert_string_equal(s->tensors[1].dtype, "F32");
    /* the synthetic stream: the first tensor's bytes are fill(seed, 0) */
    unsigned char *range = load_to_host(s, 0);
    unsigned char *want = malloc((size_t)s->tensors[0].bytes);
    vram_synthetic_fill(7, 0, want, (size_t)s->tensors[0].bytes);
    assert_memory_equal(range + s->tensors[0].offset, want, (size_t)s->tensors[0].bytes);
    free(want);
    free(range);
    vram__source_close(s);
}

static void test_make_model_sharded(void **state)
{
    (void)state;
    const char *dir = tmp_path("ckpt");
    char err[256];
    int rc = st_make_model(dir, 3 * MiB, "F16", 11, 3, err, sizeof err);
    if (rc) fail_msg("make_model: %s", err);
    const char *files[] = {tmp_path("ckpt/model-00001-of-00003.safetensors"),
                           tmp_path("ckpt/model-00002-of-00003.safetensors"),
                           tmp_path("ckpt/model-00003-of-00003.safetensors")};
    roundtrip(dir, files, 3, 64 << 10);
    roundtrip(tmp_path("ckpt/model.safetensors.index.json"), files, 3, 0);
    /* the index's total_size is the sum of tensor bytes */
    size_t len;
    char *ix = read_all(tmp_path("ckpt/model.safetensors.index.json"), &len);
    json_t *root = json_loadb(ix, len, 0, NULL);
    assert_non_null(root);
    vram_source *s = NULL;
    assert_int_equal(vram__safetensors_open(dir, &s), 0);
    uint64_t sum = 0;
    for (size_t i = 0; i < s->ntensors; i++)
        sum += s->tensors[i].bytes;
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(root, "metadata"), "total_size")), sum);
    assert_int_equal(json_object_size(json_object_get(root, "weight_map")), s->ntensors);
    vram__source_close(s);
    json_decref(root);
    free(ix);
    /* a single-file model into an existing directory lands at dir/model.safetensors */
    const char *d2 = tmp_path("single");
    assert_int_equal(mkdir(d2, 0755), 0);
    assert_int_equal(st_make_model(d2, 1 * MiB, NULL, 1, 1, err, sizeof err), 0);
    assert_int_equal(access(tmp_path("single/model.safetensors"), F_OK), 0);
    /* bad arguments */
    assert_int_equal(st_make_model(tmp_path("x"), 1 * MiB, "F12", 1, 1, err, sizeof err),
                     VRAM_EINVAL);
    assert_contains(err, "unknown dtype 'F12'");
    assert_int_equal(st_make_model(tmp_path("y"), 64 << 10, "BF16", 1, 100000, err, sizeof err),
                     VRAM_EINVAL);
}

static void test_make_model_every_dtype(void **state)
{
    (void)state;
    const char *p = tmp_path("mixed.safetensors");
    char err[256];
    int rc = st_make_model(
        p, 2 * MiB,
        "BOOL,F4,F6_E2M3,F6_E3M2,U8,I8,F8_E5M2,F8_E4M3,F8_E8M0,I16,U16,F16,BF16,I32,U32,F32", 3, 1,
        err, sizeof err);
    if (rc) fail_msg("make_model: %s", err);
    const char *files[] = {p};
    roundtrip(p, files, 1, 64 << 10);
    assert_int_equal(st_make_model(p, 2 * MiB, "C64,F64,I64,U64", 3, 1, err, sizeof err), 0);
    roundtrip(p, files, 1, 0);
}

/* ---- files written by other implementations ---- */

static void test_fixtures_non_sharded(void **state)
{
    (void)state;
    const char *a[] = {FIXTURES "/non_sharded/model.safetensors"};
    roundtrip(a[0], a, 1, 0);
    roundtrip(a[0], a, 1, 64 << 10);
    const char *b[] = {FIXTURES "/non_sharded/model.numpy.safetensors"};
    roundtrip(b[0], b, 1, 0);
    /* the directory holds model.safetensors: that one is chosen */
    roundtrip(FIXTURES "/non_sharded", a, 1, 0);
    vram_source *s = NULL;
    assert_int_equal(vram__safetensors_open(a[0], &s), 0);
    assert_int_equal(s->ntensors, 36);
    const vram_tensor_info *t = find_tensor(s, "float32_357");
    assert_non_null(t);
    assert_int_equal(t->ndim, 3);
    assert_int_equal(t->shape[0], 3);
    assert_int_equal(t->shape[1], 5);
    assert_int_equal(t->shape[2], 7);
    assert_int_equal(t->bytes, 3 * 5 * 7 * 4);
    vram__source_close(s);
}

static void test_fixtures_sharded(void **state)
{
    (void)state;
    const char *files[6];
    char paths[6][512];
    for (int i = 0; i < 6; i++) {
        snprintf(paths[i], sizeof paths[i], FIXTURES "/sharded/model-%05d-of-00006.safetensors",
                 i + 1);
        files[i] = paths[i];
    }
    roundtrip(FIXTURES "/sharded/model.safetensors.index.json", files, 6, 0);
    roundtrip(FIXTURES "/sharded", files, 6, 64 << 10);
    vram_source *s = NULL;
    assert_int_equal(vram__safetensors_open(FIXTURES "/sharded", &s), 0);
    assert_int_equal(s->ntensors, 36);
    vram__source_close(s);
    /* each shard also opens on its own */
    for (int i = 0; i < 6; i++)
        roundtrip(files[i], &files[i], 1, 0);
}

/* Older writers did not pad the header: tensors at odd file offsets. */
static void test_unaligned_offsets(void **state)
{
    (void)state;
    const char *h = "{\"a\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[5],\"data_offsets\":[3,23]},"
                    "\"c\":{\"dtype\":\"I16\",\"shape\":[2,3],\"data_offsets\":[23,35]},"
                    "\"z\":{\"dtype\":\"F16\",\"shape\":[0],\"data_offsets\":[35,35]},"
                    "\"d\":{\"dtype\":\"F4\",\"shape\":[2,3],\"data_offsets\":[40,43]}}";
    assert_true(strlen(h) % 8 != 0);
    const char *p = tmp_path("old.safetensors");
    write_st(p, h, UINT64_MAX, 50); /* a hole at [35,40) and 7 trailing bytes */
    const char *files[] = {p};
    roundtrip(p, files, 1, 0);
    vram_source *s = NULL;
    assert_int_equal(vram__safetensors_open(p, &s), 0);
    assert_int_equal(s->ntensors, 5);
    /* file order: by data offset */
    assert_string_equal(s->tensors[0].name, "a");
    assert_string_equal(s->tensors[1].name, "b");
    assert_string_equal(s->tensors[4].name, "d");
    vram__source_close(s);
}

/* ---- hostile and broken files ---- */

static void test_refuse_short_files(void **state)
{
    (void)state;
    const char *p = tmp_path("empty.safetensors");
    write_bytes(p, "", 0);
    expect_refused(p, VRAM_EFORMAT, "empty.safetensors: file of 0 bytes is too short");
    p = tmp_path("five.safetensors");
    write_bytes(p, "\x10\0\0\0\0", 5);
    expect_refused(p, VRAM_EFORMAT, "file of 5 bytes is too short");
    p = tmp_path("zero.safetensors");
    write_st(p, "", 0, 16);
    expect_refused(p, VRAM_EFORMAT, "header is empty");
}

static void test_refuse_lengths(void **state)
{
    (void)state;
    const char *h = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    const char *p = tmp_path("huge.safetensors");
    write_st(p, h, (uint64_t)1 << 40, 8);
    expect_refused(p, VRAM_EFORMAT, "header length 1099511627776 is larger than the limit");
    p = tmp_path("max.safetensors");
    write_st(p, h, UINT64_MAX - 1, 8);
    expect_refused(p, VRAM_EFORMAT, "is larger than the limit");
    /* truncated inside the header */
    p = tmp_path("trunc.safetensors");
    write_st(p, h, 400, 0);
    expect_refused(p, VRAM_EFORMAT, "header length 400 runs past the end of the file");
    /* a length that lies short: the JSON is cut */
    p = tmp_path("short.safetensors");
    write_st(p, h, 20, 8);
    expect_refused(p, VRAM_EFORMAT, "header is not valid JSON");
    /* truncated inside the data */
    p = tmp_path("truncdata.safetensors");
    write_st(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[10,20],\"data_offsets\":[0,800]}}",
             UINT64_MAX, 400);
    expect_refused(p, VRAM_EFORMAT,
                   "tensor 'w': data_offsets [0, 800] reach past the data section (400 bytes)");
}

static void test_refuse_tensor_entries(void **state)
{
    (void)state;
    expect_header_refused("lying.safetensors",
                          "{\"lm_head.weight\":{\"dtype\":\"F32\",\"shape\":[10,20],"
                          "\"data_offsets\":[0,100]}}",
                          800,
                          "lying.safetensors: tensor 'lm_head.weight': data_offsets [0, 100] hold "
                          "100 bytes but shape [10, 20] of F32 needs 800");
    expect_header_refused("overlap.safetensors",
                          "{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
                          "\"b\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[4,12]}}",
                          12, "tensors 'a' [0, 8] and 'b' [4, 12] overlap");
    expect_header_refused("overflow.safetensors",
                          "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],"
                          "\"data_offsets\":[0,8]}}",
                          8, "shape [4294967296, 4294967296, 16] of F32 overflows");
    expect_header_refused("overflow2.safetensors",
                          "{\"a\":{\"dtype\":\"F64\",\"shape\":[2305843009213693952,1],"
                          "\"data_offsets\":[0,8]}}",
                          8, "overflows");
    expect_header_refused("negative.safetensors",
                          "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,-3],\"data_offsets\":[0,8]}}", 8,
                          "tensor 'a': shape[1] is negative (-3)");
    expect_header_refused("real.safetensors",
                          "{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8,
                          "shape[0] is not an integer");
    expect_header_refused("dtype.safetensors",
                          "{\"a\":{\"dtype\":\"F12\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
                          "tensor 'a': unknown dtype 'F12'");
    expect_header_refused("dtype2.safetensors",
                          "{\"a\":{\"dtype\":7,\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
                          "dtype is not a string");
    expect_header_refused("outside.safetensors",
                          "{\"a\":{\"dtype\":\"U8\",\"shape\":[800],\"data_offsets\":[1000,1800]}}",
                          800, "data_offsets [1000, 1800] reach past the data section (800 bytes)");
    expect_header_refused("backwards.safetensors",
                          "{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8,
                          "data_offsets [8, 0] end before they begin");
    expect_header_refused("negoff.safetensors",
                          "{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[-8,0]}}", 8,
                          "data_offsets[0] is negative");
    expect_header_refused("offs3.safetensors",
                          "{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,4,8]}}", 8,
                          "data_offsets is not an array [begin, end]");
    expect_header_refused("rank.safetensors",
                          "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],"
                          "\"data_offsets\":[0,1]}}",
                          8, "tensor 'a': shape has more than 8 dimensions");
    expect_header_refused("extra.safetensors",
                          "{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8],"
                          "\"foo\":1}}",
                          8, "tensor 'a': unexpected key 'foo'");
    expect_header_refused("missing.safetensors", "{\"a\":{\"dtype\":\"U8\",\"shape\":[8]}}", 8,
                          "entry has no \"data_offsets\"");
    expect_header_refused("notobj.safetensors", "{\"a\":[1,2]}", 8,
                          "tensor 'a': entry is not a JSON object");
    expect_header_refused("f4.safetensors",
                          "{\"a\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,1]}}", 8,
                          "shape [3] of F4 (4-bit) does not end on a byte boundary");
    expect_header_refused("noname.safetensors",
                          "{\"\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}", 8,
                          "a tensor has an empty name");
    char *big = malloc(4096);
    assert_non_null(big);
    char *q = big + sprintf(big, "{\"");
    memset(q, 'x', 2000);
    q += 2000;
    sprintf(q, "\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}");
    expect_header_refused("longname.safetensors", big, 8, "name of 2000 bytes is longer than 1024");
    free(big);
    /* a name with control characters is shown escaped */
    expect_header_refused("ctrl.safetensors",
                          "{\"a\\u0007b\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,4]}}",
                          8, "tensor 'a\\x07b'");
}

static void test_refuse_json(void **state)
{
    (void)state;
    expect_header_refused("badjson.safetensors", "{\"a\": {\"dtype\": ", 8,
                          "header is not valid JSON");
    expect_header_refused("utf8.safetensors",
                          "{\"\xff\xfe\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}",
                          8, "header is not valid UTF-8 (byte 0xff at header offset 2)");
    expect_header_refused("overlong.safetensors",
                          "{\"\xc0\xaf\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}",
                          8, "header is not valid UTF-8");
    expect_header_refused("dup.safetensors",
                          "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                          "\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}",
                          8, "header names a key twice");
    expect_header_refused("meta.safetensors",
                          "{\"__metadata__\":{\"format\":\"pt\",\"step\":3},"
                          "\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}",
                          8, "__metadata__ value of 'step' is not a string");
    expect_header_refused("meta2.safetensors",
                          "{\"__metadata__\":[\"pt\"],"
                          "\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}",
                          8, "__metadata__ is not a JSON object");
    expect_header_refused("array.safetensors", "[1,2,3] ", 8,
                          "header is a JSON array, not an object");
    expect_header_refused("number.safetensors", "42      ", 8, "header is not valid JSON");
    expect_header_refused("trail.safetensors", "{} {}   ", 8, "header is not valid JSON");
    expect_header_refused("nul.safetensors", "{\"a\\u0000\":{}}", 8, "header is not valid JSON");
    expect_header_refused("nothing.safetensors", "{}      ", 8, "holds no tensor bytes");
    char deep[5000];
    memcpy(deep, "{\"a\":", 5);
    memset(deep + 5, '[', 3000);
    memset(deep + 3005, ']', 1994);
    deep[4999] = '\0';
    expect_header_refused("deep.safetensors", deep, 8, "tensor 'a': entry is not a JSON object");
    /* a long array is refused before jansson expands it */
    char *arr = malloc(300000);
    assert_non_null(arr);
    char *q = arr + sprintf(arr, "{\"a\":{\"dtype\":\"U8\",\"shape\":[0");
    for (int i = 0; i < 100000; i++)
        q += sprintf(q, ",0");
    sprintf(q, "],\"data_offsets\":[0,0]}}");
    expect_header_refused("longarray.safetensors", arr, 8, "shape has more than 8 dimensions");
    free(arr);
}

/* Writes a two-shard checkpoint under dir with the given index text. */
static void write_sharded(const char *dir, const char *index)
{
    char p[600];
    mkdir(dir, 0755);
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);
    write_st(p,
             "{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
             "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[8,12]}}",
             UINT64_MAX, 12);
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    write_st(p, "{\"c\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", UINT64_MAX, 8);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    write_bytes(p, index, strlen(index));
}

#define IX(wm) "{\"metadata\":{\"total_size\":20},\"weight_map\":{" wm "}}"
#define S1 "\"model-00001-of-00002.safetensors\""
#define S2 "\"model-00002-of-00002.safetensors\""

static void test_index(void **state)
{
    (void)state;
    const char *d = tmp_path("ok");
    write_sharded(d, IX("\"a\":" S1 ",\"b\":" S1 ",\"c\":" S2));
    const char *files[] = {tmp_path("ok/model-00001-of-00002.safetensors"),
                           tmp_path("ok/model-00002-of-00002.safetensors")};
    roundtrip(d, files, 2, 0);

    d = tmp_path("missing");
    write_sharded(d,
                  IX("\"a\":" S1 ",\"b\":" S1 ",\"c\":" S2 ",\"d\":\"model-00003.safetensors\""));
    expect_refused(d, VRAM_EFORMAT,
                   "shard 'model-00003.safetensors' named in weight_map is missing");
    d = tmp_path("trav");
    write_sharded(d,
                  IX("\"a\":" S1 ",\"b\":" S1 ",\"c\":\"../ok/model-00002-of-00002.safetensors\""));
    expect_refused(d, VRAM_EFORMAT, "tensor 'c': shard name '..");
    assert_contains(vram__last_error(), "path traversal refused");
    d = tmp_path("abs");
    write_sharded(d, IX("\"a\":" S1 ",\"b\":" S1 ",\"c\":\"/etc/passwd\""));
    expect_refused(d, VRAM_EFORMAT, "path traversal refused");
    d = tmp_path("dotdot");
    write_sharded(d, IX("\"a\":" S1 ",\"b\":" S1 ",\"c\":\"..\""));
    expect_refused(d, VRAM_EFORMAT, "shard name '..' is not a file name");
    d = tmp_path("notheld");
    write_sharded(d, IX("\"a\":" S1 ",\"b\":" S1 ",\"c\":" S2 ",\"e\":" S2));
    expect_refused(d, VRAM_EFORMAT,
                   "weight_map puts tensor 'e' in shard 'model-00002-of-00002.safetensors' but "
                   "that shard does not hold it");
    d = tmp_path("unlisted");
    write_sharded(d, IX("\"a\":" S1 ",\"c\":" S2));
    expect_refused(d, VRAM_EFORMAT,
                   "tensor 'b' is in shard 'model-00001-of-00002.safetensors' but not in "
                   "weight_map");
    d = tmp_path("wrong");
    write_sharded(d, IX("\"a\":" S1 ",\"b\":" S2 ",\"c\":" S2));
    expect_refused(d, VRAM_EFORMAT,
                   "tensor 'b' is in shard 'model-00001-of-00002.safetensors' "
                   "but weight_map puts it in 'model-00002-of-00002.safetensors'");
    d = tmp_path("nowm");
    write_sharded(d, "{\"metadata\":{}}");
    expect_refused(d, VRAM_EFORMAT, "index has no \"weight_map\" object");
    d = tmp_path("emptywm");
    write_sharded(d, "{\"weight_map\":{}}");
    expect_refused(d, VRAM_EFORMAT, "weight_map is empty");
    d = tmp_path("wmval");
    write_sharded(d, IX("\"a\":" S1 ",\"b\":" S1 ",\"c\":2"));
    expect_refused(d, VRAM_EFORMAT, "tensor 'c': weight_map value is not a string");
    d = tmp_path("ixjson");
    write_sharded(d, "{\"weight_map\":{\"a\":");
    expect_refused(d, VRAM_EFORMAT, "index is not valid JSON");
    d = tmp_path("ixdup");
    write_sharded(d, IX("\"a\":" S1 ",\"a\":" S1 ",\"b\":" S1 ",\"c\":" S2));
    expect_refused(d, VRAM_EFORMAT, "index names a key twice");
    d = tmp_path("ixdeep");
    char deep[400];
    char *q = deep + sprintf(deep, "{\"metadata\":{\"x\":");
    for (int i = 0; i < 100; i++)
        *q++ = '[';
    for (int i = 0; i < 100; i++)
        *q++ = ']';
    sprintf(q, "},\"weight_map\":{\"a\":" S1 ",\"b\":" S1 ",\"c\":" S2 "}}");
    write_sharded(d, deep);
    expect_refused(d, VRAM_EFORMAT, "index is not valid JSON: values nested deeper than 64 levels");
    d = tmp_path("ixskip"); /* other members and nested metadata are fine */
    write_sharded(d, "{\"metadata\":{\"total_size\":20,\"x\":[1,2.5e3,{\"y\":null}],\"t\":true},"
                     "\"format\":\"pt\",\"weight_map\":{\"a\":" S1 ",\"b\":" S1 ",\"c\":" S2 "}}");
    const char *f2[] = {tmp_path("ixskip/model-00001-of-00002.safetensors"),
                        tmp_path("ixskip/model-00002-of-00002.safetensors")};
    roundtrip(d, f2, 2, 0);
    d = tmp_path("ixmeta");
    write_sharded(d, "{\"metadata\":3,\"weight_map\":{\"a\":" S1 "}}");
    expect_refused(d, VRAM_EFORMAT, "\"metadata\" is not a JSON object");
    /* a broken shard is named */
    d = tmp_path("badshard");
    write_sharded(d, IX("\"a\":" S1 ",\"b\":" S1 ",\"c\":" S2));
    write_st(tmp_path("badshard/model-00002-of-00002.safetensors"),
             "{\"c\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", UINT64_MAX, 8);
    expect_refused(d, VRAM_EFORMAT,
                   "model-00002-of-00002.safetensors: tensor 'c': data_offsets [0, 8] hold 8 "
                   "bytes but shape [3] of F32 needs 12");
}

static void test_directories(void **state)
{
    (void)state;
    const char *d = tmp_path("none");
    mkdir(d, 0755);
    expect_refused(d, VRAM_EFORMAT, "no model.safetensors.index.json, model.safetensors");
    const char *one = tmp_path("none/weights.safetensors");
    write_st(one, "{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}", UINT64_MAX, 8);
    const char *files[] = {one};
    roundtrip(d, files, 1, 0);
    write_st(tmp_path("none/other.safetensors"),
             "{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}", UINT64_MAX, 8);
    expect_refused(d, VRAM_EFORMAT, "2 *.safetensors files but no model.safetensors.index.json");
    expect_refused(tmp_path("nope.safetensors"), VRAM_EIO, "No such file or directory");
}

/* ---- the parser as the fuzzer calls it ---- */

static void test_parse_buffer(void **state)
{
    (void)state;
    size_t len;
    void *file = read_all(FIXTURES "/non_sharded/model.safetensors", &len);
    vram__st_header h;
    assert_int_equal(vram__st_parse_buffer(file, len, "mem", &h), 0);
    assert_int_equal(h.ntensors, 36);
    assert_int_equal(h.data_start, 8 + 2528);
    assert_int_equal(h.data_end, len - h.data_start);
    for (size_t i = 1; i < h.ntensors; i++)
        assert_true(h.tensors[i].begin >= h.tensors[i - 1].end);
    vram__st_header_free(&h);
    vram__st_header_free(&h); /* twice is fine */
    /* every prefix is refused or accepted without leaks or reads past it */
    for (size_t n = 0; n < len; n += 97) {
        void *cut = malloc(n ? n : 1);
        memcpy(cut, file, n);
        if (vram__st_parse_buffer(cut, n, "cut", &h) == 0) vram__st_header_free(&h);
        free(cut);
    }
    free(file);
    void *ix = read_all(FIXTURES "/sharded/model.safetensors.index.json", &len);
    vram__st_index x;
    assert_int_equal(vram__st_parse_index(ix, len, "ix", &x), 0);
    assert_int_equal(x.nentries, 36);
    assert_int_equal(x.nshards, 6);
    vram__st_index_free(&x);
    free(ix);
    /* quoting for messages: escaped, cut between UTF-8 characters */
    char q[160], name[800] = "";
    for (int i = 0; i < 200; i++)
        strcat(name, "\xc3\xa9"); /* é */
    vram__quote(name, q, sizeof q);
    assert_int_equal(strlen(q), 96 + 3);
    assert_string_equal(q + 96, "...");
    vram__quote("a'b\\c\n", q, 64);
    assert_string_equal(q, "a\\x27b\\x5cc\\x0a");
    assert_int_equal(vram__st_parse_buffer("\x02\0\0\0\0\0\0\0{}", 10, "mem", &h), 0);
    assert_int_equal(h.ntensors, 0);
    vram__st_header_free(&h);
}

/* ---- loading ---- */

static void test_reload_and_changed_file(void **state)
{
    (void)state;
    const char *p = tmp_path("m.safetensors");
    char err[256];
    assert_int_equal(st_make_model(p, 1 * MiB, "BF16", 5, 1, err, sizeof err), 0);
    vram_source *s = NULL;
    assert_int_equal(vram__safetensors_open(p, &s), 0);
    unsigned char *a = load_to_host(s, 0);
    unsigned char *b = load_to_host(s, 128 << 10);
    assert_memory_equal(a, b, (size_t)s->bytes);
    free(a);
    free(b);
    /* same size, new mtime: refused, naming the file */
    struct timespec ts[2] = {{0, UTIME_NOW}, {12345, 0}};
    assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
    vram_backend *be = host_backend();
    vram_buf buf;
    memset(&buf, 0, sizeof buf);
    assert_int_equal(vram__backend_reserve(be, 0, (size_t)s->bytes, &buf), 0);
    assert_int_equal(vram__backend_map(be, &buf), 0);
    uint64_t progress = 0;
    vram_sink sink = {.backend = be, .buf = &buf, .progress = &progress};
    assert_int_equal(s->load(s, &sink), VRAM_EIO);
    assert_contains(vram__last_error(), "m.safetensors: file changed since it was validated");
    assert_int_equal(progress, 0);
    /* gone */
    unlink(p);
    assert_int_equal(s->load(s, &sink), VRAM_EIO);
    assert_contains(vram__last_error(), "m.safetensors: No such file");
    vram__backend_unreserve(be, &buf);
    vram__backend_destroy(be);
    vram__source_close(s);
}

/* A reserved and mapped host-backend range for s, with its sink. */
typedef struct test_range {
    vram_backend *host; /* destroyed by range_end */
    vram_backend *b;    /* host, or its staging view (freed by range_end) */
    vram_buf buf;
    uint64_t progress;
    vram_sink sink;
} test_range;

/* Sets r up for s: a host backend (its staging view when staged), a
 * reserved and mapped range and a sink with the given chunk size. */
static void range_begin(test_range *r, const vram_source *s, int staged, uint64_t chunk)
{
    memset(r, 0, sizeof *r);
    r->host = host_backend();
    r->b = staged ? staging_view(r->host) : r->host;
    assert_int_equal(vram__backend_reserve(r->b, 0, (size_t)s->bytes, &r->buf), 0);
    assert_int_equal(vram__backend_map(r->b, &r->buf), 0);
    r->sink.backend = r->b;
    r->sink.buf = &r->buf;
    r->sink.progress = &r->progress;
    r->sink.chunk_bytes = chunk;
}

/* Frees what range_begin set up. */
static void range_end(test_range *r)
{
    vram__backend_unreserve(r->b, &r->buf);
    if (r->b != r->host) free(r->b);
    vram__backend_destroy(r->host);
}

/* Backend failures reach the staging path only: to_device and host_alloc
 * are the staging copies, which the direct path does without. */
static void test_load_backend_failures(void **state)
{
    (void)state;
    const char *p = tmp_path("f.safetensors");
    char err[256];
    assert_int_equal(st_make_model(p, 2 * MiB, "F32", 9, 1, err, sizeof err), 0);
    vram_source *s = NULL;
    assert_int_equal(vram__safetensors_open(p, &s), 0);
    const char *ops[] = {"to_device", "host_alloc"};
    int nth[] = {5, 3};
    for (int i = 0; i < 2; i++) {
        for (int staged = 0; staged < 2; staged++) {
            test_range r;
            range_begin(&r, s, staged, 64 << 10);
            vram__backend_inject(r.host, ops[i], nth[i], VRAM_EBACKEND);
            int rc = s->load(s, &r.sink);
            if (staged) {
                assert_int_equal(rc, VRAM_EBACKEND);
                assert_contains(vram__last_error(), "injected failure");
                assert_true(r.progress < s->bytes);
            } else { /* the direct path never calls them */
                assert_int_equal(rc, 0);
                assert_int_equal(r.progress, s->bytes);
            }
            vram__backend_inject(r.host, ops[i], 0, 0);
            r.progress = 0;
            assert_int_equal(s->load(s, &r.sink), 0); /* and again, cleanly */
            assert_int_equal(r.progress, s->bytes);
            range_end(&r);
        }
    }
    vram__source_close(s);
}

/* The direct path (files read straight into host-visible device memory)
 * and the staging path (pinned buffers, then to_device) give the same
 * device bytes and checksums, whatever the chunk size and layout. */
static void test_direct_and_staged_agree(void **state)
{
    (void)state;
    const char *dir = tmp_path("ckpt");
    char err[256];
    int rc = st_make_model(dir, 3 * MiB, "BOOL,F16,F6_E2M3,BF16,U8,F32", 21, 3, err, sizeof err);
    if (rc) fail_msg("make_model: %s", err);
    const char *single = tmp_path("one.safetensors");
    assert_int_equal(st_make_model(single, 5 * MiB / 2, "I8,F64", 4, 1, err, sizeof err), 0);
    const char *specs[] = {dir, single, FIXTURES "/sharded", FIXTURES "/non_sharded"};
    const uint64_t chunks[] = {0, 64 << 10, 200 << 10, 1 * MiB};
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        vram_source *s = NULL;
        rc = vram__safetensors_open(specs[i], &s);
        if (rc) fail_msg("open %s: %s", specs[i], vram__last_error());
        for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
            uint64_t sum_d = 0, sum_s = 1;
            unsigned char *d = load_range(s, chunks[c], 0, &sum_d);
            unsigned char *st = load_range(s, chunks[c], 1, &sum_s);
            if (memcmp(d, st, (size_t)s->bytes) != 0)
                fail_msg("%s, chunk %" PRIu64 ": direct and staged loads differ", specs[i],
                         chunks[c]);
            assert_int_equal(sum_d, sum_s);
            assert_int_equal(sum_d, vram__checksum_partial(d, (size_t)s->bytes, 0));
            assert_int_equal(vram_checksum(d, (size_t)s->bytes),
                             vram_checksum(st, (size_t)s->bytes));
            /* every tensor holds its file bytes and the padding is zero */
            unsigned char *covered = calloc((size_t)s->bytes, 1);
            assert_non_null(covered);
            for (size_t t = 0; t < s->ntensors; t++)
                memset(covered + s->tensors[t].offset, 1, (size_t)s->tensors[t].bytes);
            for (uint64_t k = 0; k < s->bytes; k++)
                if (!covered[k] && d[k] != 0) fail_msg("padding byte %" PRIu64 " not zero", k);
            free(covered);
            free(d);
            free(st);
        }
        vram__source_close(s);
    }
}

/* Faults in each path: a file truncated after open is refused before any
 * byte moves; a read that fails midway (EFAULT into a read-only page of
 * the device range, or of a staging buffer) returns VRAM_EIO naming the
 * file, and the next load is clean. */
static void test_load_io_faults(void **state)
{
    (void)state;
    const char *p = tmp_path("io.safetensors");
    char err[256];
    assert_int_equal(st_make_model(p, 2 * MiB, "BF16,F32", 13, 1, err, sizeof err), 0);
    vram_source *s = NULL;
    assert_int_equal(vram__safetensors_open(p, &s), 0);
    unsigned char *want = load_range(s, 0, 1, NULL);
    size_t half = (size_t)vram__round_up(s->bytes / 2, 4096);
    for (int staged = 0; staged < 2; staged++) {
        test_range r;
        range_begin(&r, s, staged, 64 << 10);
        void *dev = vram__backend_host_ptr(r.host, &r.buf, 0, (size_t)s->bytes);
        assert_non_null(dev);
        if (staged) {
            g_ro_alloc = 3; /* the third slot of the ring */
        } else {
            assert_int_equal(mprotect((char *)dev + half, r.buf.reserved - half, PROT_READ), 0);
        }
        vram__clear_error();
        int rc = s->load(s, &r.sink);
        assert_int_equal(rc, VRAM_EIO);
        assert_contains(vram__last_error(), "io.safetensors: read of ");
        assert_contains(vram__last_error(), "Bad address");
        assert_true(r.progress < s->bytes);
        g_ro_alloc = 0;
        if (!staged) {
            assert_true(r.progress > 0); /* chunks before the read-only half went in */
            assert_int_equal(
                mprotect((char *)dev + half, r.buf.reserved - half, PROT_READ | PROT_WRITE), 0);
        }
        r.progress = 0;
        assert_int_equal(s->load(s, &r.sink), 0);
        assert_int_equal(r.progress, s->bytes);
        assert_memory_equal(dev, want, (size_t)s->bytes);
        range_end(&r);
    }
    /* truncated after open: each path refuses it before reading */
    size_t len = 0;
    unsigned char *file = read_all(p, &len);
    assert_int_equal(truncate(p, (off_t)(len - 4096)), 0);
    for (int staged = 0; staged < 2; staged++) {
        test_range r;
        range_begin(&r, s, staged, 0);
        assert_int_equal(s->load(s, &r.sink), VRAM_EIO);
        assert_contains(vram__last_error(), "io.safetensors: file changed since it was validated");
        assert_int_equal(r.progress, 0);
        range_end(&r);
    }
    /* restored and opened again, it loads */
    write_bytes(p, file, len);
    vram__source_close(s);
    assert_int_equal(vram__safetensors_open(p, &s), 0);
    unsigned char *again = load_to_host(s, 0);
    assert_memory_equal(again, want, (size_t)s->bytes);
    free(again);
    free(file);
    free(want);
    vram__source_close(s);
}

/* The public API over a safetensors source: register, acquire, tensors. */
static void test_manager_api(void **state)
{
    (void)state;
    const char *dir = tmp_path("api");
    char err[256];
    assert_int_equal(st_make_model(dir, 2 * MiB, "BF16,F32", 3, 2, err, sizeof err), 0);
    vram_config cfg;
    vram_config_init(&cfg);
    cfg.backend = VRAM_BACKEND_HOST;
    cfg.host_devices = 1;
    cfg.host_memory = 64 * MiB;
    cfg.no_monitor_thread = 1;
    vram_manager *m = NULL;
    int rc = vram_manager_create(&cfg, &m);
    if (rc) fail_msg("manager: %s", vram__last_error());
    vram_model_opts opts;
    vram_model_opts_init(&opts);
    opts.source = dir;
    vram_model *model = NULL;
    assert_int_equal(vram_manager_register(m, "st", &opts, &model), 0);
    vram_lease *lease = NULL;
    rc = vram_model_acquire(model, &lease);
    if (rc) fail_msg("acquire: %s", vram__last_error());
    size_t n = vram_model_tensor_count(model);
    assert_true(n > 10);
    vram_tensor_info ti;
    assert_int_equal(vram_model_find_tensor(model, "lm_head.weight", &ti), 0);
    assert_int_equal(ti.ndim, 2);
    assert_true(strcmp(ti.dtype, "BF16") == 0 || strcmp(ti.dtype, "F32") == 0);
    assert_non_null(ti.dev_ptr);
    assert_ptr_equal(ti.dev_ptr, (char *)vram_lease_ptr(lease) + ti.offset);
    /* the tensor's bytes on the device are the synthetic stream at its place */
    vram_tensor_info first;
    assert_int_equal(vram_model_tensor(model, 0, &first), 0);
    assert_string_equal(first.name, "model.embed_tokens.weight");
    unsigned char *got = malloc((size_t)first.bytes), *want = malloc((size_t)first.bytes);
    assert_int_equal(vram_model_download(model, got, first.dev_ptr, (size_t)first.bytes), 0);
    vram_synthetic_fill(3, 0, want, (size_t)first.bytes);
    assert_memory_equal(got, want, (size_t)first.bytes);
    free(got);
    free(want);
    vram_lease_end(lease);
    vram_manager_destroy(m);

    /* a hostile source fails the acquire with the loader's message */
    const char *bad = tmp_path("bad.safetensors");
    write_st(bad, "{\"a\":{\"dtype\":\"F12\",\"shape\":[2],\"data_offsets\":[0,8]}}", UINT64_MAX,
             8);
    assert_int_equal(vram_manager_create(&cfg, &m), 0);
    opts.source = bad;
    model = NULL;
    rc = vram_manager_register(m, "bad", &opts, &model);
    if (rc == 0) {
        lease = NULL;
        assert_int_equal(vram_model_acquire(model, &lease), VRAM_EFORMAT);
        assert_null(lease);
    } else {
        assert_int_equal(rc, VRAM_EFORMAT);
    }
    vram_manager_destroy(m);
}

/* Runs every test, each in its own temporary directory. */
int main(void)
{
    vram_set_log_level(VRAM_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_make_model_single, setup, teardown),
        cmocka_unit_test_setup_teardown(test_make_model_sharded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_make_model_every_dtype, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fixtures_non_sharded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fixtures_sharded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unaligned_offsets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuse_short_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuse_lengths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuse_tensor_entries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuse_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_index, setup, teardown),
        cmocka_unit_test_setup_teardown(test_directories, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parse_buffer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload_and_changed_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_backend_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_direct_and_staged_agree, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_io_faults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_manager_api, setup, teardown),
    };
    return cmocka_run_group_tests_name("safetensors", tests, NULL, NULL);
}
