/* st_json.h - a small bounded JSON reader (RFC 8259) over a buffer, pulled value by value, for the safetensors validators. */
#ifndef VRAM_ST_JSON_H
#define VRAM_ST_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

/* Reads the grammar of RFC 8259 (as jansson does: no NUL in strings, no lone
 * surrogates, integers within int64) without building a tree: the parsers
 * in st_parse.c pull exactly the values the schema allows and refuse the
 * rest, so that memory stays a small multiple of what is kept (names,
 * offsets), whatever the input. The input must be valid UTF-8 (the callers
 * check it first). Strings are decoded into r->buf. Every refusal returns
 * VRAM_EFORMAT (or VRAM_EHOSTMEM) with the message set by vram__errorf; a
 * syntax error reads "WHAT: KIND is not valid JSON: WHY at offset N".
 * Initialise with {json, n, 0, what, kind, NULL, 0, 0}; free r->buf after. */
typedef struct vram__jr {
    const char *p;
    size_t n, i;
    const char *what, *kind; /* the file and "header" / "index", for messages */
    char *buf;               /* the last string read, decoded and NUL-terminated */
    size_t blen, bcap;
} vram__jr;

/* Refuses the input as malformed JSON at the current offset. */
int vram__jr_syntax(vram__jr *r, const char *msg);

/* Skips white space; returns the next byte or -1 at the end. */
static inline int vram__jr_peek(vram__jr *r)
{
    while (r->i < r->n) {
        char c = r->p[r->i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') return (unsigned char)c;
        r->i++;
    }
    return -1;
}

/* After a member of a container closed by `close` ('}' or ']'): consumes
 * ',' (returns 1: another member follows) or close (returns 0: the container
 * ended); anything else refuses the input (< 0). */
int vram__jr_next(vram__jr *r, char close);

/* Consumes the byte c (after white space) or refuses with msg. */
int vram__jr_expect(vram__jr *r, char c, const char *msg);

/* Opens the top-level object of a header or index (kind: "header",
 * "index"): refuses an array by name and anything else that is not '{'.
 * Returns 1 when a member follows, 0 for an empty object ('}' consumed),
 * < 0 when refused. */
int vram__jr_open_top(vram__jr *r, const char *what, const char *kind);

/* A value of the wrong type was found at r->i: a syntax error when the
 * input simply ended there, else VRAM_EFORMAT with the formatted message. */
int vram__jr_wrong(vram__jr *r, const char *fmt, ...) VRAM_PRINTF(2, 3);

/* Reads the string at r->i into r->buf (the input is valid UTF-8). */
int vram__jr_string(vram__jr *r);

enum { VRAM_JR_INT, VRAM_JR_REAL, VRAM_JR_BIG };

/* Reads the number at r->i: *kind VRAM_JR_INT with *neg and *mag (|value|
 * within int64), VRAM_JR_REAL (a fraction or exponent) or VRAM_JR_BIG (an
 * integer beyond int64). */
int vram__jr_number(vram__jr *r, int *kind, int *neg, uint64_t *mag);

/* Reads and discards any value, nested at most 64 deep. */
int vram__jr_skip(vram__jr *r, int depth);

/* Refuses anything but white space after the top-level value. */
int vram__jr_end(vram__jr *r);

#endif /* VRAM_ST_JSON_H */
