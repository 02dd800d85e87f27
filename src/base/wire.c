/* wire.c - the node socket's line format (wire.h): parsing, building and reading lines; stateless. */
#include "base/wire.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decodes %XX in place; -1 on a bad escape or an encoded NUL. */
static int decode(char *s)
{
    char *w = s;
    for (char *r = s; *r; r++) {
        if (*r != '%') {
            *w++ = *r;
            continue;
        }
        int h = hexval((unsigned char)r[1]), l = h < 0 ? -1 : hexval((unsigned char)r[2]);
        if (h < 0 || l < 0 || (h == 0 && l == 0)) return -1;
        *w++ = (char)(h * 16 + l);
        r += 2;
    }
    *w = '\0';
    return 0;
}

static int plain(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           (c && strchr("._~:/@+,-", c) != NULL);
}

int vram__wire_parse(char *line, vram__wire_msg *msg)
{
    memset(msg, 0, sizeof *msg);
    char *p = line;
    for (char *q = line; *q; q++)
        if ((unsigned char)*q < 0x20 || (unsigned char)*q == 0x7f) return -1;
    char *save = NULL;
    char *tok = strtok_r(p, " ", &save);
    if (!tok) return -1;
    for (char *q = tok; *q; q++)
        if (!((*q >= 'a' && *q <= 'z') || *q == '_')) return -1;
    msg->verb = tok;
    while ((tok = strtok_r(NULL, " ", &save)) != NULL) {
        char *eq = strchr(tok, '=');
        if (!eq || eq == tok || msg->n == VRAM_WIRE_FIELDS_MAX) return -1;
        *eq = '\0';
        if (decode(eq + 1) < 0) return -1;
        msg->key[msg->n] = tok;
        msg->val[msg->n] = eq + 1;
        msg->n++;
    }
    return 0;
}

const char *vram__wire_get(const vram__wire_msg *msg, const char *key)
{
    for (int i = 0; i < msg->n; i++)
        if (strcmp(msg->key[i], key) == 0) return msg->val[i];
    return NULL;
}

int vram__wire_u64(const vram__wire_msg *msg, const char *key, uint64_t *out)
{
    const char *v = vram__wire_get(msg, key);
    if (!v || !*v || strlen(v) > 20) return -1;
    uint64_t x = 0;
    for (const char *q = v; *q; q++) {
        if (*q < '0' || *q > '9') return -1;
        unsigned d = (unsigned)(*q - '0');
        if (x > (UINT64_MAX - d) / 10) return -1;
        x = x * 10 + d;
    }
    *out = x;
    return 0;
}

int vram__wire_dbl(const vram__wire_msg *msg, const char *key, double *out)
{
    const char *v = vram__wire_get(msg, key);
    if (!v || !*v) return -1;
    char *end = NULL;
    double x = strtod(v, &end);
    if (*end || !isfinite(x)) return -1;
    *out = x;
    return 0;
}

int vram__wire_int(const vram__wire_msg *msg, const char *key, long lo, long hi, long *out)
{
    const char *v = vram__wire_get(msg, key);
    if (!v || !*v) return -1;
    char *end = NULL;
    long x = strtol(v, &end, 10);
    if (*end || x < lo || x > hi) return -1;
    *out = x;
    return 0;
}

static void put(vram__wire_out *o, const char *s, size_t len)
{
    if (o->overflow || o->n + len > VRAM_WIRE_LINE_MAX - 1) {
        o->overflow = 1;
        return;
    }
    memcpy(o->buf + o->n, s, len);
    o->n += len;
    o->buf[o->n] = '\0';
}

void vram__wire_begin(vram__wire_out *o, const char *verb)
{
    o->n = 0;
    o->overflow = 0;
    o->buf[0] = '\0';
    put(o, verb, strlen(verb));
}

void vram__wire_str(vram__wire_out *o, const char *key, const char *val)
{
    put(o, " ", 1);
    put(o, key, strlen(key));
    put(o, "=", 1);
    for (const unsigned char *p = (const unsigned char *)(val ? val : ""); *p; p++) {
        if (plain(*p)) {
            put(o, (const char *)p, 1);
        } else {
            char esc[4];
            snprintf(esc, sizeof esc, "%%%02X", *p);
            put(o, esc, 3);
        }
    }
}

void vram__wire_uint(vram__wire_out *o, const char *key, uint64_t v)
{
    char b[24];
    snprintf(b, sizeof b, "%llu", (unsigned long long)v);
    vram__wire_str(o, key, b);
}

void vram__wire_num(vram__wire_out *o, const char *key, double v)
{
    char b[40];
    snprintf(b, sizeof b, "%.6f", isfinite(v) ? v : 0.0);
    vram__wire_str(o, key, b);
}

long vram__wire_end(vram__wire_out *o)
{
    if (o->overflow) return -1;
    o->buf[o->n++] = '\n';
    o->buf[o->n] = '\0';
    return (long)o->n;
}

char *vram__wire_space(vram__wire_reader *r, size_t *room)
{
    if (r->off > 0) {
        memmove(r->buf, r->buf + r->off, r->n - r->off);
        r->n -= r->off;
        r->off = 0;
    }
    *room = VRAM_WIRE_LINE_MAX - r->n;
    return r->buf + r->n;
}

void vram__wire_wrote(vram__wire_reader *r, size_t n)
{
    r->n += n;
}

char *vram__wire_next(vram__wire_reader *r)
{
    char *start = r->buf + r->off;
    char *nl = memchr(start, '\n', r->n - r->off);
    if (!nl) return NULL;
    for (char *q = start; q < nl; q++)
        if (*q == '\0') *q = '\x01'; /* a NUL inside a line: parse rejects it */
    *nl = '\0';
    r->off = (size_t)(nl - r->buf) + 1;
    return start;
}
