/* st_parse.c - validation of safetensors headers and sharded-checkpoint indexes, as pure functions over memory. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "loader/st_json.h"
#include "loader/st_parse.h"

/* ---- dtypes ---- */

/* Every dtype of the format (huggingface/safetensors' Dtype, bit widths). */
static const vram__st_dtype st_dtypes[] = {
    {"BOOL", 8}, {"F4", 4},      {"F6_E2M3", 6}, {"F6_E3M2", 6}, {"U8", 8},
    {"I8", 8},   {"F8_E5M2", 8}, {"F8_E4M3", 8}, {"F8_E8M0", 8}, {"I16", 16},
    {"U16", 16}, {"F16", 16},    {"BF16", 16},   {"I32", 32},    {"U32", 32},
    {"F32", 32}, {"C64", 64},    {"F64", 64},    {"I64", 64},    {"U64", 64},
};

/* See st_parse.h. The result points at a static table entry. */
const vram__st_dtype *vram__st_dtype_find(const char *name)
{
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (strcmp(st_dtypes[i].name, name) == 0) return &st_dtypes[i];
    return NULL;
}

/* See st_parse.h. Checked arithmetic: elements, then bits, then bytes. */
int vram__st_tensor_bytes(const vram__st_dtype *dt, int ndim, const int64_t *shape, uint64_t *bytes)
{
    uint64_t elems = 1, bits = 0;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return -1;
        if (__builtin_mul_overflow(elems, (uint64_t)shape[i], &elems)) return -1;
    }
    if (__builtin_mul_overflow(elems, (uint64_t)dt->bits, &bits)) return -1;
    if (bits % 8 != 0) return -2;
    *bytes = bits / 8;
    return 0;
}

/* ---- message helpers ---- */

/* Formats a shape as "[10, 20]" into buf (cap bytes). */
static const char *shape_text(int ndim, const int64_t *shape, char *buf, size_t cap)
{
    size_t o = 0;
    o += (size_t)snprintf(buf + o, cap - o, "[");
    for (int i = 0; i < ndim && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
    return buf;
}

/* Offset of the first byte of p[0, n) that is not well-formed UTF-8
 * (RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF), or n. */
static uint64_t utf8_bad_at(const unsigned char *p, uint64_t n)
{
    uint64_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        unsigned need, min;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1, min = 0x80, cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2, min = 0x800, cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3, min = 0x10000, cp = c & 0x07;
        } else {
            return i;
        }
        if (n - i <= need) return i;
        for (unsigned k = 1; k <= need; k++) {
            unsigned cc = p[i + k];
            if ((cc & 0xc0) != 0x80) return i;
            cp = (cp << 6) | (cc & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
        i += need + 1;
    }
    return n;
}

/* ---- string sets (names kept for the duplicate check) ---- */

typedef struct strset {
    char *arena; /* NUL-terminated strings back to back */
    size_t len, cap;
    size_t *offs; /* start of each string in arena, in insertion order */
    size_t n, ncap;
} strset;

/* Appends a copy of str (k bytes and its NUL); -1 when out of memory, s
 * unchanged then. */
static int strset_add(strset *s, const char *str, size_t k)
{
    if (s->len + k + 1 > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 256;
        if (cap < s->len + k + 1) cap = s->len + k + 1;
        char *na = realloc(s->arena, cap);
        if (!na) return -1;
        s->arena = na;
        s->cap = cap;
    }
    if (s->n == s->ncap) {
        size_t cap = s->ncap ? s->ncap * 2 : 16;
        size_t *no = realloc(s->offs, cap * sizeof *no);
        if (!no) return -1;
        s->offs = no;
        s->ncap = cap;
    }
    memcpy(s->arena + s->len, str, k + 1);
    s->offs[s->n++] = s->len;
    s->len += k + 1;
    return 0;
}

/* Frees the set's memory; the struct is left empty and reusable. */
static void strset_free(strset *s)
{
    free(s->arena);
    free(s->offs);
    memset(s, 0, sizeof *s);
}

/* qsort_r order of arena offsets by the strings there. */
static int cmp_arena_off(const void *a, const void *b, void *arena)
{
    return strcmp((const char *)arena + *(const size_t *)a,
                  (const char *)arena + *(const size_t *)b);
}

/* The offsets of s sorted by string (new array), NULL when out of memory. */
static size_t *strset_sorted(const strset *s)
{
    size_t *o = malloc((s->n ? s->n : 1) * sizeof *o);
    if (!o) return NULL;
    if (s->n) memcpy(o, s->offs, s->n * sizeof *o);
    qsort_r(o, s->n, sizeof *o, cmp_arena_off, s->arena);
    return o;
}

/* Sets *dup to a string s holds twice (or NULL). Returns 0 or -1 when out
 * of memory. */
static int strset_dup(const strset *s, const char **dup)
{
    *dup = NULL;
    size_t *o = strset_sorted(s);
    if (!o) return -1;
    for (size_t i = 1; i < s->n && !*dup; i++)
        if (strcmp(s->arena + o[i - 1], s->arena + o[i]) == 0) *dup = s->arena + o[i];
    free(o);
    return 0;
}

/* ---- headers ---- */

/* See st_parse.h. */
void vram__st_header_free(vram__st_header *h)
{
    if (!h) return;
    for (size_t i = 0; i < h->ntensors; i++)
        free(h->tensors[i].name);
    free(h->tensors);
    h->tensors = NULL;
    h->ntensors = 0;
}

/* File order: by begin, then end, then name (a total order). */
static int cmp_tensor_begin(const void *a, const void *b)
{
    const vram__st_tensor *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* qsort order of string pointers. */
static int cmp_name_ptr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Reads a non-negative integer element field[idx] of tensor qname. */
static int read_u64(vram__jr *r, const char *qname, const char *field, int idx, uint64_t *out)
{
    int c = vram__jr_peek(r), kind, neg;
    uint64_t mag;
    if (c != '-' && (c < '0' || c > '9'))
        return vram__jr_wrong(r, "%s: tensor '%s': %s[%d] is not an integer", r->what, qname,
                              field, idx);
    int rc = vram__jr_number(r, &kind, &neg, &mag);
    if (rc) return rc;
    if (kind == VRAM_JR_REAL)
        return vram__errorf(VRAM_EFORMAT, "%s: tensor '%s': %s[%d] is not an integer", r->what,
                            qname, field, idx);
    if (kind == VRAM_JR_BIG)
        return vram__errorf(VRAM_EFORMAT, "%s: tensor '%s': %s[%d] is too large", r->what, qname,
                            field, idx);
    if (neg && mag)
        return vram__errorf(VRAM_EFORMAT, "%s: tensor '%s': %s[%d] is negative (-%" PRIu64 ")",
                            r->what, qname, field, idx, mag);
    *out = mag;
    return 0;
}

/* Reads a JSON array of at most max non-negative integers into v; *count
 * gets how many. Refuses longer arrays with too_long. */
static int read_u64_array(vram__jr *r, const char *qname, const char *field, int max, uint64_t *v,
                          int *count, const char *too_long)
{
    *count = 0;
    r->i++; /* '[' */
    if (vram__jr_peek(r) == ']') return r->i++, 0;
    for (;;) {
        if (*count == max)
            return vram__errorf(VRAM_EFORMAT, "%s: tensor '%s': %s", r->what, qname, too_long);
        int rc = read_u64(r, qname, field, *count, &v[*count]);
        if (rc) return rc;
        (*count)++;
        int more = vram__jr_next(r, ']');
        if (more <= 0) return more;
    }
}

/* Reads the dtype value of tensor qname into t->dtype. */
static int read_dtype(vram__jr *r, const char *qname, vram__st_tensor *t)
{
    char qk[160];
    if (vram__jr_peek(r) != '"')
        return vram__jr_wrong(r, "%s: tensor '%s': dtype is not a string", r->what, qname);
    int rc = vram__jr_string(r);
    if (rc) return rc;
    t->dtype = vram__st_dtype_find(r->buf);
    if (!t->dtype)
        return vram__errorf(VRAM_EFORMAT, "%s: tensor '%s': unknown dtype '%s'", r->what, qname,
                            vram__quote(r->buf, qk, sizeof qk));
    return 0;
}

/* Reads the shape value of tensor qname into t->ndim and t->shape. */
static int read_shape(vram__jr *r, const char *qname, vram__st_tensor *t)
{
    if (vram__jr_peek(r) != '[')
        return vram__jr_wrong(r, "%s: tensor '%s': shape is not an array", r->what, qname);
    uint64_t v[VRAM_MAX_DIMS];
    char msg[64];
    snprintf(msg, sizeof msg, "shape has more than %d dimensions", VRAM_MAX_DIMS);
    int rc = read_u64_array(r, qname, "shape", VRAM_MAX_DIMS, v, &t->ndim, msg);
    if (rc) return rc;
    for (int d = 0; d < t->ndim; d++)
        t->shape[d] = (int64_t)v[d];
    return 0;
}

/* Reads the data_offsets value of tensor qname into t->begin and t->end. */
static int read_offsets(vram__jr *r, const char *qname, vram__st_tensor *t)
{
    const char *bad = "data_offsets is not an array [begin, end]";
    if (vram__jr_peek(r) != '[')
        return vram__jr_wrong(r, "%s: tensor '%s': %s", r->what, qname, bad);
    uint64_t v[2];
    int k = 0;
    int rc = read_u64_array(r, qname, "data_offsets", 2, v, &k, bad);
    if (rc) return rc;
    if (k != 2) return vram__errorf(VRAM_EFORMAT, "%s: tensor '%s': %s", r->what, qname, bad);
    t->begin = v[0];
    t->end = v[1];
    return 0;
}

/* Reads one member of tensor qname's entry (key and value) into t; *seen
 * collects the keys read (1 dtype, 2 shape, 4 data_offsets), each at most
 * once. */
static int read_entry_member(vram__jr *r, const char *qname, vram__st_tensor *t, unsigned *seen)
{
    int rc = vram__jr_string(r);
    if (rc) return rc;
    unsigned which = strcmp(r->buf, "dtype") == 0          ? 1u
                     : strcmp(r->buf, "shape") == 0        ? 2u
                     : strcmp(r->buf, "data_offsets") == 0 ? 4u
                                                           : 0u;
    char qk[160];
    if (!which)
        return vram__errorf(VRAM_EFORMAT,
                            "%s: tensor '%s': unexpected key '%s' (expected only dtype, "
                            "shape, data_offsets)",
                            r->what, qname, vram__quote(r->buf, qk, sizeof qk));
    if (*seen & which)
        return vram__errorf(VRAM_EFORMAT,
                            "%s: header names a key twice ('%s' in tensor "
                            "'%s')",
                            r->what, r->buf, qname);
    *seen |= which;
    if ((rc = vram__jr_expect(r, ':', "expected ':'"))) return rc;
    if (which == 1) return read_dtype(r, qname, t);
    if (which == 2) return read_shape(r, qname, t);
    return read_offsets(r, qname, t);
}

/* Checks that the complete entry of tensor qname agrees with itself and
 * with a data section of data_size bytes: its shape and dtype make whole
 * bytes without overflow, and data_offsets hold exactly those bytes inside
 * the section. */
static int check_entry(const char *what, const char *qname, const vram__st_tensor *t,
                       uint64_t data_size)
{
    char st[256];
    uint64_t need = 0;
    int brc = vram__st_tensor_bytes(t->dtype, t->ndim, t->shape, &need);
    if (brc == -1)
        return vram__errorf(VRAM_EFORMAT,
                            "%s: tensor '%s': shape %s of %s overflows (too many elements)", what,
                            qname, shape_text(t->ndim, t->shape, st, sizeof st), t->dtype->name);
    if (brc == -2)
        return vram__errorf(VRAM_EFORMAT,
                            "%s: tensor '%s': shape %s of %s (%u-bit) does not end on a byte "
                            "boundary",
                            what, qname, shape_text(t->ndim, t->shape, st, sizeof st),
                            t->dtype->name, t->dtype->bits);
    if (t->begin > t->end)
        return vram__errorf(VRAM_EFORMAT,
                            "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                            "] end before they begin",
                            what, qname, t->begin, t->end);
    if (t->end > data_size)
        return vram__errorf(VRAM_EFORMAT,
                            "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                            "] reach past the data section (%" PRIu64 " bytes)",
                            what, qname, t->begin, t->end, data_size);
    if (t->end - t->begin != need)
        return vram__errorf(VRAM_EFORMAT,
                            "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] hold %" PRIu64
                            " bytes but shape %s of %s needs %" PRIu64,
                            what, qname, t->begin, t->end, t->end - t->begin,
                            shape_text(t->ndim, t->shape, st, sizeof st), t->dtype->name, need);
    return 0;
}

/* Reads and validates one tensor entry into *t (t->name set). */
static int parse_entry(vram__jr *r, vram__st_tensor *t, uint64_t data_size)
{
    const char *what = r->what;
    char qname[400];
    size_t len = strlen(t->name);
    vram__quote(t->name, qname, sizeof qname);
    if (len == 0) return vram__errorf(VRAM_EFORMAT, "%s: a tensor has an empty name", what);
    if (len > VRAM_ST_MAX_NAME)
        return vram__errorf(VRAM_EFORMAT, "%s: tensor '%s': name of %zu bytes is longer than %d",
                            what, qname, len, VRAM_ST_MAX_NAME);
    if (vram__jr_peek(r) != '{')
        return vram__jr_wrong(r, "%s: tensor '%s': entry is not a JSON object", what, qname);
    r->i++;
    unsigned seen = 0;
    if (vram__jr_peek(r) == '}') {
        r->i++;
    } else {
        for (;;) {
            int rc = read_entry_member(r, qname, t, &seen);
            if (rc) return rc;
            int more = vram__jr_next(r, '}');
            if (more < 0) return more;
            if (!more) break;
        }
    }
    if (seen != 7)
        return vram__errorf(VRAM_EFORMAT, "%s: tensor '%s': entry has no \"%s\"", what, qname,
                            !(seen & 1)   ? "dtype"
                            : !(seen & 2) ? "shape"
                                          : "data_offsets");
    return check_entry(what, qname, t, data_size);
}

/* Reads __metadata__: an object of strings; its keys go to keys. */
static int parse_meta(vram__jr *r, strset *keys, size_t *count)
{
    if (vram__jr_peek(r) != '{')
        return vram__jr_wrong(r, "%s: __metadata__ is not a JSON object", r->what);
    r->i++;
    if (vram__jr_peek(r) == '}') return r->i++, 0;
    for (;;) {
        int rc = vram__jr_string(r);
        if (rc) return rc;
        if (strset_add(keys, r->buf, r->blen) < 0)
            return vram__errorf(VRAM_EHOSTMEM, "%s: out of host memory", r->what);
        if ((rc = vram__jr_expect(r, ':', "expected ':'"))) return rc;
        if (vram__jr_peek(r) != '"') {
            char qk[400];
            return vram__jr_wrong(r, "%s: __metadata__ value of '%s' is not a string", r->what,
                            vram__quote(r->buf, qk, sizeof qk));
        }
        if ((rc = vram__jr_string(r))) return rc;
        (*count)++;
        int more = vram__jr_next(r, '}');
        if (more <= 0) return more;
    }
}

/* Checks what comes before the JSON of a header: the file holds the 8-byte
 * length, the length n is within VRAM_ST_MAX_HEADER and the file, not 0,
 * and the n bytes at json are valid UTF-8. */
static int check_header_bounds(const char *json, uint64_t n, uint64_t file_size, const char *what)
{
    if (file_size < 8)
        return vram__errorf(VRAM_EFORMAT,
                            "%s: file of %" PRIu64
                            " bytes is too short for a safetensors header (8-byte length first)",
                            what, file_size);
    if (n > VRAM_ST_MAX_HEADER)
        return vram__errorf(VRAM_EFORMAT,
                            "%s: header length %" PRIu64 " is larger than the limit of %" PRIu64
                            " bytes",
                            what, n, VRAM_ST_MAX_HEADER);
    if (n > file_size - 8)
        return vram__errorf(VRAM_EFORMAT,
                            "%s: header length %" PRIu64 " runs past the end of the file (%" PRIu64
                            " bytes)",
                            what, n, file_size);
    if (n == 0) return vram__errorf(VRAM_EFORMAT, "%s: header is empty (length 0)", what);
    uint64_t bad = utf8_bad_at((const unsigned char *)json, n);
    if (bad < n)
        return vram__errorf(VRAM_EFORMAT,
                            "%s: header is not valid UTF-8 (byte 0x%02x at header offset %" PRIu64
                            ")",
                            what, (unsigned char)json[bad], bad);
    return 0;
}

/* Appends the tensor named r->buf to h (growing h->tensors, *cap entries
 * now) and reads its entry. The tensor counts in h as soon as its name is
 * copied, so that vram__st_header_free frees it after a failure. */
static int add_tensor(vram__jr *r, vram__st_header *h, size_t *cap)
{
    if (h->ntensors == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        vram__st_tensor *nt = realloc(h->tensors, nc * sizeof *nt);
        if (!nt) return vram__errorf(VRAM_EHOSTMEM, "%s: out of host memory", r->what);
        h->tensors = nt;
        *cap = nc;
    }
    vram__st_tensor *t = &h->tensors[h->ntensors];
    memset(t, 0, sizeof *t);
    t->name = malloc(r->blen + 1);
    if (!t->name) return vram__errorf(VRAM_EHOSTMEM, "%s: out of host memory", r->what);
    memcpy(t->name, r->buf, r->blen + 1);
    h->ntensors++;
    return parse_entry(r, t, h->data_size);
}

/* Reads the top-level object of a header: __metadata__ (at most once; its
 * keys go to meta, their count to h->nmeta) and the tensor entries into h. */
static int read_header_members(vram__jr *r, vram__st_header *h, strset *meta)
{
    size_t cap = 0;
    int seen_meta = 0, rc;
    int open = vram__jr_open_top(r, r->what, "header");
    if (open <= 0) return open;
    for (;;) {
        if ((rc = vram__jr_string(r)) || (rc = vram__jr_expect(r, ':', "expected ':'")))
            return rc;
        if (strcmp(r->buf, "__metadata__") == 0) {
            if (seen_meta++)
                return vram__errorf(VRAM_EFORMAT,
                                    "%s: header names a key twice "
                                    "('__metadata__')",
                                    r->what);
            if ((rc = parse_meta(r, meta, &h->nmeta))) return rc;
        } else {
            if ((rc = add_tensor(r, h, &cap))) return rc;
        }
        int more = vram__jr_next(r, '}');
        if (more <= 0) return more;
    }
}

/* Refuses a name that a header holds twice: a key of __metadata__ (meta),
 * or a tensor name of h. */
static int check_header_dups(const vram__st_header *h, const strset *meta, const char *what)
{
    const char *dup = NULL;
    char qd[400];
    if (strset_dup(meta, &dup) < 0)
        return vram__errorf(VRAM_EHOSTMEM, "%s: out of host memory", what);
    if (dup)
        return vram__errorf(VRAM_EFORMAT, "%s: header names a key twice ('%s' in __metadata__)",
                            what, vram__quote(dup, qd, sizeof qd));
    char **names = malloc((h->ntensors ? h->ntensors : 1) * sizeof *names);
    if (!names) return vram__errorf(VRAM_EHOSTMEM, "%s: out of host memory", what);
    for (size_t i = 0; i < h->ntensors; i++)
        names[i] = h->tensors[i].name;
    qsort(names, h->ntensors, sizeof *names, cmp_name_ptr);
    int rc = 0;
    for (size_t i = 1; i < h->ntensors && rc == 0; i++)
        if (strcmp(names[i - 1], names[i]) == 0)
            rc = vram__errorf(VRAM_EFORMAT, "%s: header names a key twice (tensor '%s')", what,
                              vram__quote(names[i], qd, sizeof qd));
    free(names);
    return rc;
}

/* Sorts h's tensors into file order, refuses two that share a byte and
 * sets h->data_end. */
static int sort_and_check_overlaps(vram__st_header *h, const char *what)
{
    if (h->ntensors) qsort(h->tensors, h->ntensors, sizeof *h->tensors, cmp_tensor_begin);
    const vram__st_tensor *last = NULL; /* the non-empty tensor reaching furthest */
    for (size_t i = 0; i < h->ntensors; i++) {
        const vram__st_tensor *t = &h->tensors[i];
        if (t->end == t->begin) continue;
        if (last && t->begin < last->end) {
            char qa[400], qb[400];
            return vram__errorf(VRAM_EFORMAT,
                                "%s: tensors '%s' [%" PRIu64 ", %" PRIu64 "] and '%s' [%" PRIu64
                                ", %" PRIu64 "] overlap",
                                what, vram__quote(last->name, qa, sizeof qa), last->begin,
                                last->end, vram__quote(t->name, qb, sizeof qb), t->begin, t->end);
        }
        if (!last || t->end > last->end) last = t;
    }
    h->data_end = last ? last->end : 0;
    return 0;
}

/* See st_parse.h. One pass over the header builds the tensor list; then
 * duplicate names, file order and overlaps are checked. On failure every
 * allocation is freed before returning. */
int vram__st_parse_header(const char *json, uint64_t n, uint64_t file_size, const char *what,
                          vram__st_header *out)
{
    memset(out, 0, sizeof *out);
    int rc = check_header_bounds(json, n, file_size, what);
    if (rc) return rc;
    vram__jr r = {json, (size_t)n, 0, what, "header", NULL, 0, 0};
    vram__st_header h;
    memset(&h, 0, sizeof h);
    h.header_len = n;
    h.data_start = 8 + n;
    h.data_size = file_size - 8 - n;
    strset meta;
    memset(&meta, 0, sizeof meta);
    rc = read_header_members(&r, &h, &meta);
    if (rc == 0) rc = vram__jr_end(&r);
    if (rc == 0) rc = check_header_dups(&h, &meta, what);
    if (rc == 0) rc = sort_and_check_overlaps(&h, what);
    free(r.buf);
    strset_free(&meta);
    if (rc) {
        vram__st_header_free(&h);
        return rc;
    }
    *out = h;
    return 0;
}

/* See st_parse.h. The 8-byte length is read little-endian and bounded
 * before the header is looked at. */
int vram__st_parse_buffer(const void *data, size_t size, const char *what, vram__st_header *out)
{
    memset(out, 0, sizeof *out);
    if (size < 8)
        return vram__errorf(VRAM_EFORMAT,
                            "%s: file of %zu bytes is too short for a safetensors "
                            "header (8-byte length first)",
                            what, size);
    const unsigned char *p = data;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | p[i];
    if (n > VRAM_ST_MAX_HEADER || n > (uint64_t)size - 8)
        return vram__st_parse_header(NULL, n, size, what, out); /* refuses with its message */
    return vram__st_parse_header((const char *)p + 8, n, size, what, out);
}

/* ---- index ---- */

/* See st_parse.h. */
void vram__st_index_free(vram__st_index *ix)
{
    if (!ix) return;
    free(ix->names);
    free(ix->shards);
    free(ix->shard_of);
    free(ix->names_arena);
    free(ix->shards_arena);
    memset(ix, 0, sizeof *ix);
}

/* Returns NULL when name is a plain file name in the same directory, else
 * why not. */
static const char *shard_name_problem(const char *name)
{
    size_t len = strlen(name);
    if (len == 0) return "is empty";
    if (len > VRAM_ST_MAX_SHARD_NAME) return "is too long";
    if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0) return "is not a file name";
    if (strchr(name, '/') || strchr(name, '\\'))
        return "is not a plain file name in the index's directory (path traversal refused)";
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p < 0x20 || *p == 0x7f) return "holds a control character";
    return NULL;
}

/* Orders entry indices by their shard's name (arg: the shards strset). */
static int cmp_entry_shard(const void *a, const void *b, void *arg)
{
    const strset *s = arg;
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    int c = strcmp(s->arena + s->offs[x], s->arena + s->offs[y]);
    return c ? c : (x < y ? -1 : x > y);
}

/* Reads weight_map: tensor name -> shard file name. */
static int parse_weight_map(vram__jr *r, strset *names, strset *shards)
{
    if (vram__jr_peek(r) != '{')
        return vram__jr_wrong(r, "%s: \"weight_map\" is not a JSON object", r->what);
    r->i++;
    if (vram__jr_peek(r) == '}') return r->i++, 0;
    for (;;) {
        char qname[400], qs[400];
        int rc = vram__jr_string(r);
        if (rc) return rc;
        if (r->blen == 0 || r->blen > VRAM_ST_MAX_NAME)
            return vram__errorf(VRAM_EFORMAT,
                                "%s: weight_map has a tensor name of %zu bytes "
                                "(must be 1 to %d)",
                                r->what, r->blen, VRAM_ST_MAX_NAME);
        if (strset_add(names, r->buf, r->blen) < 0)
            return vram__errorf(VRAM_EHOSTMEM, "%s: out of host memory", r->what);
        vram__quote(r->buf, qname, sizeof qname);
        if ((rc = vram__jr_expect(r, ':', "expected ':'"))) return rc;
        if (vram__jr_peek(r) != '"')
            return vram__jr_wrong(r, "%s: tensor '%s': weight_map value is not a string", r->what,
                                  qname);
        if ((rc = vram__jr_string(r))) return rc;
        const char *why = shard_name_problem(r->buf);
        if (why)
            return vram__errorf(VRAM_EFORMAT, "%s: tensor '%s': shard name '%s' %s", r->what, qname,
                                vram__quote(r->buf, qs, sizeof qs), why);
        if (strset_add(shards, r->buf, r->blen) < 0)
            return vram__errorf(VRAM_EHOSTMEM, "%s: out of host memory", r->what);
        int more = vram__jr_next(r, '}');
        if (more <= 0) return more;
    }
}

/* Checks what comes before the JSON of an index: its size n is within
 * VRAM_ST_MAX_HEADER and not 0, and the n bytes at json are valid UTF-8. */
static int check_index_bounds(const char *json, size_t n, const char *what)
{
    if (n > VRAM_ST_MAX_HEADER)
        return vram__errorf(VRAM_EFORMAT,
                            "%s: index of %zu bytes is larger than the limit of %" PRIu64 " bytes",
                            what, n, VRAM_ST_MAX_HEADER);
    if (n == 0) return vram__errorf(VRAM_EFORMAT, "%s: index is empty", what);
    uint64_t bad = utf8_bad_at((const unsigned char *)json, n);
    if (bad < n)
        return vram__errorf(
            VRAM_EFORMAT, "%s: index is not valid UTF-8 (byte 0x%02x at index offset %" PRIu64 ")",
            what, (unsigned char)json[bad], bad);
    return 0;
}

/* Reads the top-level object of an index: every key goes to keys;
 * weight_map's names and shard names to names and shards (*has_wm set);
 * "metadata" must be an object; the rest is skipped. */
static int read_index_members(vram__jr *r, strset *keys, strset *names, strset *shards,
                              int *has_wm)
{
    int rc;
    int open = vram__jr_open_top(r, r->what, "index");
    if (open <= 0) return open;
    for (;;) {
        if ((rc = vram__jr_string(r))) return rc;
        if (strset_add(keys, r->buf, r->blen) < 0)
            return vram__errorf(VRAM_EHOSTMEM, "%s: out of host memory", r->what);
        int is_wm = strcmp(r->buf, "weight_map") == 0;
        int is_meta = strcmp(r->buf, "metadata") == 0;
        if ((rc = vram__jr_expect(r, ':', "expected ':'"))) return rc;
        if (is_wm) {
            *has_wm = 1;
            if ((rc = parse_weight_map(r, names, shards))) return rc;
        } else {
            if (is_meta && vram__jr_peek(r) != '{')
                return vram__jr_wrong(r, "%s: \"metadata\" is not a JSON object", r->what);
            if ((rc = vram__jr_skip(r, 1))) return rc;
        }
        int more = vram__jr_next(r, '}');
        if (more <= 0) return more;
    }
}

/* Refuses an index that names a top-level key twice, has no weight_map or
 * an empty one, or names a tensor twice in it. */
static int check_index_keys(const strset *keys, const strset *names, int has_wm,
                            const char *what)
{
    const char *dup = NULL;
    char qd[400];
    if (strset_dup(keys, &dup) < 0)
        return vram__errorf(VRAM_EHOSTMEM, "%s: out of host memory", what);
    if (dup)
        return vram__errorf(VRAM_EFORMAT, "%s: index names a key twice ('%s')", what,
                            vram__quote(dup, qd, sizeof qd));
    if (!has_wm)
        return vram__errorf(VRAM_EFORMAT, "%s: index has no \"weight_map\" object", what);
    if (names->n == 0) return vram__errorf(VRAM_EFORMAT, "%s: weight_map is empty", what);
    if (strset_dup(names, &dup) < 0)
        return vram__errorf(VRAM_EHOSTMEM, "%s: out of host memory", what);
    if (dup)
        return vram__errorf(VRAM_EFORMAT,
                            "%s: index names a key twice (tensor '%s' in weight_map)", what,
                            vram__quote(dup, qd, sizeof qd));
    return 0;
}

/* Fills ix from weight_map's entries (names, and per entry its shard name
 * in shards): the distinct shard names, sorted, and each entry's shard.
 * ix points into the arenas of names and shards, which the caller hands
 * over on success. On failure (VRAM_EHOSTMEM) the caller frees ix's arrays. */
static int build_shard_list(vram__st_index *ix, const strset *names, const strset *shards,
                            const char *what)
{
    ix->nentries = names->n;
    ix->names = malloc(names->n * sizeof *ix->names);
    ix->shard_of = malloc(names->n * sizeof *ix->shard_of);
    ix->shards = malloc(names->n * sizeof *ix->shards);
    size_t *order = malloc(names->n * sizeof *order);
    if (!ix->names || !ix->shard_of || !ix->shards || !order) {
        free(order);
        return vram__errorf(VRAM_EHOSTMEM, "%s: out of host memory", what);
    }
    for (size_t i = 0; i < names->n; i++) {
        ix->names[i] = names->arena + names->offs[i];
        order[i] = i;
    }
    qsort_r(order, names->n, sizeof *order, cmp_entry_shard, (void *)shards);
    for (size_t k = 0; k < names->n; k++) {
        const char *s = shards->arena + shards->offs[order[k]];
        if (ix->nshards == 0 || strcmp(ix->shards[ix->nshards - 1], s) != 0)
            ix->shards[ix->nshards++] = (char *)s;
        ix->shard_of[order[k]] = ix->nshards - 1;
    }
    free(order);
    return 0;
}

/* See st_parse.h. The names and shard names live in two arenas handed to
 * *out on success; on failure everything is freed. */
int vram__st_parse_index(const char *json, size_t n, const char *what, vram__st_index *out)
{
    memset(out, 0, sizeof *out);
    int rc = check_index_bounds(json, n, what);
    if (rc) return rc;
    vram__jr r = {json, n, 0, what, "index", NULL, 0, 0};
    strset keys, names, shards;
    memset(&keys, 0, sizeof keys);
    memset(&names, 0, sizeof names);
    memset(&shards, 0, sizeof shards);
    vram__st_index ix;
    memset(&ix, 0, sizeof ix);
    int has_wm = 0;
    rc = read_index_members(&r, &keys, &names, &shards, &has_wm);
    if (rc == 0) rc = vram__jr_end(&r);
    if (rc == 0) rc = check_index_keys(&keys, &names, has_wm, what);
    if (rc == 0) rc = build_shard_list(&ix, &names, &shards, what);
    free(r.buf);
    strset_free(&keys);
    if (rc) {
        free(ix.names);
        free(ix.shards);
        free(ix.shard_of);
        strset_free(&names);
        strset_free(&shards);
        return rc;
    }
    ix.names_arena = names.arena;
    ix.shards_arena = shards.arena;
    free(names.offs);
    free(shards.offs);
    *out = ix;
    return 0;
}
