/* st_json.c - a small bounded JSON reader (RFC 8259) over a buffer: strings, numbers, skipping, and its syntax errors. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "loader/st_json.h"

/* See st_json.h. */
int vram__jr_syntax(vram__jr *r, const char *msg)
{
    return vram__errorf(VRAM_EFORMAT, "%s: %s is not valid JSON: %s at offset %zu", r->what,
                        r->kind, msg, r->i);
}

/* See st_json.h. */
int vram__jr_next(vram__jr *r, char close)
{
    int c = vram__jr_peek(r);
    if (c == ',') {
        r->i++;
        return 1;
    }
    if (c == close) {
        r->i++;
        return 0;
    }
    return vram__jr_syntax(r, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
}

/* See st_json.h. */
int vram__jr_expect(vram__jr *r, char c, const char *msg)
{
    if (vram__jr_peek(r) != (unsigned char)c) return vram__jr_syntax(r, msg);
    r->i++;
    return 0;
}

/* See st_json.h. */
int vram__jr_open_top(vram__jr *r, const char *what, const char *kind)
{
    if (vram__jr_peek(r) == '[')
        return vram__errorf(VRAM_EFORMAT, "%s: %s is a JSON array, not an object", what, kind);
    int rc = vram__jr_expect(r, '{', "expected '{'");
    if (rc) return rc;
    if (vram__jr_peek(r) == '}') {
        r->i++;
        return 0;
    }
    return 1;
}

/* See st_json.h. */
int vram__jr_wrong(vram__jr *r, const char *fmt, ...)
{
    if (vram__jr_peek(r) == -1) return vram__jr_syntax(r, "unexpected end of input");
    char msg[VRAM_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return vram__errorf(VRAM_EFORMAT, "%s", msg);
}

/* Appends k bytes to r->buf (kept NUL-terminated), growing it; VRAM_EHOSTMEM
 * when out of memory. */
static int jr_put(vram__jr *r, const char *s, size_t k)
{
    if (r->blen + k + 1 > r->bcap) {
        size_t cap = r->bcap ? r->bcap * 2 : 64;
        if (cap < r->blen + k + 1) cap = r->blen + k + 1;
        char *nb = realloc(r->buf, cap);
        if (!nb) return vram__errorf(VRAM_EHOSTMEM, "%s: out of host memory", r->what);
        r->buf = nb;
        r->bcap = cap;
    }
    memcpy(r->buf + r->blen, s, k);
    r->blen += k;
    r->buf[r->blen] = '\0';
    return 0;
}

/* Parses 4 hex digits at s (the caller checked they are in bounds). */
static int hex4(const char *s, unsigned *out)
{
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        char c = s[k];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

/* Writes code point cp (below 0x110000) as UTF-8 into out; returns its
 * byte count (1 to 4). */
static size_t utf8_encode(unsigned cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Decodes the \u escape at r->i (a surrogate pair counts as one) into *cp;
 * *adv gets its length in input bytes (6 or 12). Refuses bad hex, lone
 * surrogates and \u0000. */
static int read_u_escape(vram__jr *r, unsigned *cp, size_t *adv)
{
    unsigned lo;
    if (r->n - r->i < 6 || hex4(r->p + r->i + 2, cp) < 0)
        return vram__jr_syntax(r, "invalid \\u escape");
    *adv = 6;
    if (*cp >= 0xd800 && *cp <= 0xdbff) {
        if (r->n - r->i < 12 || r->p[r->i + 6] != '\\' || r->p[r->i + 7] != 'u' ||
            hex4(r->p + r->i + 8, &lo) < 0 || lo < 0xdc00 || lo > 0xdfff)
            return vram__jr_syntax(r, "invalid Unicode (a lone surrogate)");
        *cp = 0x10000 + ((*cp - 0xd800) << 10) + (lo - 0xdc00);
        *adv = 12;
    } else if (*cp >= 0xdc00 && *cp <= 0xdfff) {
        return vram__jr_syntax(r, "invalid Unicode (a lone surrogate)");
    } else if (*cp == 0) {
        return vram__jr_syntax(r, "\\u0000 is not allowed in a string");
    }
    return 0;
}

/* Decodes the escape at r->i (the backslash, with at least one byte after
 * it) into out (*k bytes, at most 4); *adv gets its length in the input. */
static int read_escape(vram__jr *r, char *out, size_t *k, size_t *adv)
{
    char e = r->p[r->i + 1];
    *k = 1;
    *adv = 2;
    switch (e) {
    case '"':
    case '\\':
    case '/': out[0] = e; return 0;
    case 'b': out[0] = '\b'; return 0;
    case 'f': out[0] = '\f'; return 0;
    case 'n': out[0] = '\n'; return 0;
    case 'r': out[0] = '\r'; return 0;
    case 't': out[0] = '\t'; return 0;
    case 'u': {
        unsigned cp = 0; /* set on success; gcc -O3 cannot see it (Release builds) */
        int rc = read_u_escape(r, &cp, adv);
        if (rc) return rc;
        *k = utf8_encode(cp, out);
        return 0;
    }
    default: return vram__jr_syntax(r, "invalid escape in a string");
    }
}

/* See st_json.h. */
int vram__jr_string(vram__jr *r)
{
    int rc = jr_put(r, "", 0);
    if (rc) return rc;
    r->blen = 0;
    r->buf[0] = '\0';
    if (vram__jr_peek(r) != '"') return vram__jr_syntax(r, "expected a string");
    size_t run = ++r->i; /* start of the bytes not yet copied */
    for (;;) {
        if (r->i >= r->n) return vram__jr_syntax(r, "unterminated string");
        unsigned char c = (unsigned char)r->p[r->i];
        if (c == '"') {
            rc = jr_put(r, r->p + run, r->i - run);
            r->i++;
            return rc;
        }
        if (c < 0x20) return vram__jr_syntax(r, "control character in a string");
        if (c != '\\') {
            r->i++;
            continue;
        }
        rc = jr_put(r, r->p + run, r->i - run);
        if (rc) return rc;
        if (r->i + 1 >= r->n) return vram__jr_syntax(r, "unterminated string");
        char out[4];
        size_t k, adv;
        if ((rc = read_escape(r, out, &k, &adv))) return rc;
        if ((rc = jr_put(r, out, k))) return rc;
        r->i += adv;
        run = r->i;
    }
}

/* See st_json.h. */
int vram__jr_number(vram__jr *r, int *kind, int *neg, uint64_t *mag)
{
    const char *p = r->p;
    size_t n = r->n, i = r->i;
    int big = 0, real = 0;
    *neg = 0;
    *mag = 0;
#define JR_DIGIT(k) ((k) < n && p[k] >= '0' && p[k] <= '9')
    if (i < n && p[i] == '-') *neg = 1, i++;
    if (!JR_DIGIT(i)) return r->i = i, vram__jr_syntax(r, "invalid number");
    if (p[i] == '0') {
        i++;
    } else {
        while (JR_DIGIT(i)) {
            unsigned d = (unsigned)(p[i] - '0');
            if (*mag > (UINT64_MAX - d) / 10)
                big = 1;
            else
                *mag = *mag * 10 + d;
            i++;
        }
    }
    if (i < n && p[i] == '.') {
        i++;
        if (!JR_DIGIT(i)) return r->i = i, vram__jr_syntax(r, "invalid number");
        while (JR_DIGIT(i))
            i++;
        real = 1;
    }
    if (i < n && (p[i] == 'e' || p[i] == 'E')) {
        i++;
        if (i < n && (p[i] == '+' || p[i] == '-')) i++;
        if (!JR_DIGIT(i)) return r->i = i, vram__jr_syntax(r, "invalid number");
        while (JR_DIGIT(i))
            i++;
        real = 1;
    }
#undef JR_DIGIT
    r->i = i;
    if (real)
        *kind = VRAM_JR_REAL;
    else if (big || *mag > (*neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX))
        *kind = VRAM_JR_BIG;
    else
        *kind = VRAM_JR_INT;
    return 0;
}

/* See st_json.h. */
int vram__jr_skip(vram__jr *r, int depth)
{
    if (depth > 64) return vram__jr_syntax(r, "values nested deeper than 64 levels");
    int c = vram__jr_peek(r), rc;
    if (c == '"') return vram__jr_string(r);
    if (c == '{' || c == '[') {
        int close = c == '{' ? '}' : ']';
        r->i++;
        if (vram__jr_peek(r) == close) return r->i++, 0;
        for (;;) {
            if (c == '{') {
                if ((rc = vram__jr_string(r))) return rc;
                if ((rc = vram__jr_expect(r, ':', "expected ':'"))) return rc;
            }
            if ((rc = vram__jr_skip(r, depth + 1))) return rc;
            int d = vram__jr_peek(r);
            if (d == ',') {
                r->i++;
                continue;
            }
            if (d == close) return r->i++, 0;
            return vram__jr_syntax(r, c == '{' ? "expected ',' or '}'" : "expected ',' or ']'");
        }
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        int kind, neg;
        uint64_t mag;
        return vram__jr_number(r, &kind, &neg, &mag);
    }
    static const char *const lits[] = {"true", "false", "null"};
    for (int k = 0; k < 3; k++) {
        size_t len = strlen(lits[k]);
        if (r->n - r->i >= len && memcmp(r->p + r->i, lits[k], len) == 0) {
            r->i += len;
            return 0;
        }
    }
    return vram__jr_syntax(r, "expected a value");
}

/* See st_json.h. */
int vram__jr_end(vram__jr *r)
{
    if (vram__jr_peek(r) != -1)
        return vram__jr_syntax(r, "unexpected data after the top-level object");
    return 0;
}
