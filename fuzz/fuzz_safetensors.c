/* fuzz_safetensors.c - libFuzzer target: the safetensors header and index validators over arbitrary bytes, checked against their promises and against jansson. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <jansson.h>

#include "loader/st_parse.h"

/* libFuzzer entry: the input as a whole file, as a bare JSON header and as
 * an index; every acceptance is checked, every result freed. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Traps unless h is what a validated header promises: tensors sorted by
 * begin, inside the data section, sized by shape x dtype, non-empty ones
 * not overlapping. */
static void check_header(const vram__st_header *h)
{
    uint64_t reach = 0;
    for (size_t i = 0; i < h->ntensors; i++) {
        const vram__st_tensor *t = &h->tensors[i];
        uint64_t bytes = 0;
        if (!t->name || !t->name[0] || strlen(t->name) > VRAM_ST_MAX_NAME) __builtin_trap();
        if (!t->dtype || t->ndim < 0 || t->ndim > VRAM_MAX_DIMS) __builtin_trap();
        if (t->begin > t->end || t->end > h->data_size) __builtin_trap();
        if (vram__st_tensor_bytes(t->dtype, t->ndim, t->shape, &bytes) != 0) __builtin_trap();
        if (bytes != t->end - t->begin) __builtin_trap();
        if (i > 0 && t->begin < h->tensors[i - 1].begin) __builtin_trap();
        if (t->end > t->begin) {
            if (t->begin < reach) __builtin_trap();
            reach = t->end;
        }
    }
    if (reach != h->data_end) __builtin_trap();
    if (h->data_start != 8 + h->header_len) __builtin_trap();
}

/* Traps unless ix is what a validated index promises. */
static void check_index(const vram__st_index *ix)
{
    if (ix->nentries == 0 || ix->nshards == 0 || ix->nshards > ix->nentries) __builtin_trap();
    for (size_t i = 0; i < ix->nentries; i++)
        if (ix->shard_of[i] >= ix->nshards || !ix->names[i][0]) __builtin_trap();
    for (size_t i = 0; i < ix->nshards; i++)
        if (strchr(ix->shards[i], '/') || strcmp(ix->shards[i], "..") == 0) __builtin_trap();
}

/* Differential check of a header parse against jansson (the reference
 * JSON reader): what the validator accepts jansson reads, with the same
 * tensors; what jansson refuses the validator refuses. */
static void check_header_json(const char *json, size_t n, int rc, const vram__st_header *h)
{
    json_error_t err;
    json_t *root = json_loadb(json, n, JSON_REJECT_DUPLICATES, &err);
    if (!root || !json_is_object(root)) {
        if (rc == 0) __builtin_trap(); /* accepted what is not a JSON object */
        json_decref(root);
        return;
    }
    if (rc == 0) {
        size_t meta = json_object_get(root, "__metadata__") ? 1 : 0;
        if (json_object_size(root) != h->ntensors + meta) __builtin_trap();
        for (size_t i = 0; i < h->ntensors; i++) {
            const vram__st_tensor *t = &h->tensors[i];
            json_t *e = json_object_get(root, t->name);
            if (!json_is_object(e)) __builtin_trap();
            const char *dt = json_string_value(json_object_get(e, "dtype"));
            if (!dt || strcmp(dt, t->dtype->name) != 0) __builtin_trap();
            json_t *shape = json_object_get(e, "shape"), *offs = json_object_get(e, "data_offsets");
            if (json_array_size(shape) != (size_t)t->ndim) __builtin_trap();
            for (int d = 0; d < t->ndim; d++)
                if (json_integer_value(json_array_get(shape, (size_t)d)) != t->shape[d])
                    __builtin_trap();
            if ((uint64_t)json_integer_value(json_array_get(offs, 0)) != t->begin ||
                (uint64_t)json_integer_value(json_array_get(offs, 1)) != t->end)
                __builtin_trap();
        }
    }
    json_decref(root);
}

/* What the index validator accepts, jansson reads with the same weight_map
 * (jansson may refuse more: the validator skips "metadata" unchecked). */
static void check_index_json(const char *json, size_t n, const vram__st_index *ix)
{
    json_t *root = json_loadb(json, n, JSON_REJECT_DUPLICATES, NULL);
    if (!root) return;
    json_t *wm = json_object_get(root, "weight_map");
    if (json_object_size(wm) != ix->nentries) __builtin_trap();
    for (size_t i = 0; i < ix->nentries; i++) {
        const char *s = json_string_value(json_object_get(wm, ix->names[i]));
        if (!s || strcmp(s, ix->shards[ix->shard_of[i]]) != 0) __builtin_trap();
    }
    json_decref(root);
}

/* libFuzzer entry: the input as a whole file, as a bare JSON header and as
 * an index; every acceptance is checked, every result freed. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    vram__st_header h;
    /* the input as a whole file */
    if (vram__st_parse_buffer(data, size, "fuzz", &h) == 0) {
        check_header(&h);
        vram__st_header_free(&h);
    }
    /* the input as the JSON header of a file with a 4 KiB data section */
    if (size > 0) {
        int rc =
            vram__st_parse_header((const char *)data, size, 8 + (uint64_t)size + 4096, "fuzz", &h);
        if (rc == 0) check_header(&h);
        check_header_json((const char *)data, size, rc, &h);
        vram__st_header_free(&h);
    }
    /* the input as a model.safetensors.index.json */
    vram__st_index ix;
    if (vram__st_parse_index((const char *)data, size, "fuzz", &ix) == 0) {
        check_index(&ix);
        check_index_json((const char *)data, size, &ix);
        vram__st_index_free(&ix);
    }
    return 0;
}
