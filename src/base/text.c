/* text.c - text for messages and JSON: UTF-8 checks, human sizes, quoting. */
#include <stdio.h>
#include <string.h>

#include "base/base.h"

/* Length of the valid UTF-8 sequence at p, or 0 when it is not one. */
static size_t utf8_seq(const unsigned char *p)
{
    unsigned c = p[0];
    if (c < 0x80) return 1;
    size_t n;
    unsigned min, cp;
    if (c >= 0xc2 && c <= 0xdf) n = 2, min = 0x80, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef) n = 3, min = 0x800, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4) n = 4, min = 0x10000, cp = c & 0x07;
    else return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return n;
}

char *vram__utf8_clean(char *s)
{
    unsigned char *p = (unsigned char *)s;
    while (*p) {
        size_t n = utf8_seq(p);
        if (n == 0) {
            *p++ = '?';
        } else {
            p += n;
        }
    }
    return s;
}

int vram__utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        size_t n = utf8_seq(p);
        if (n == 0) return 0;
        p += n;
    }
    return 1;
}

/* ---- sizes ---- */

vram__hsize vram__human(uint64_t bytes)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    vram__hsize h;
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024.0 && u < 5) {
        v /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(h.s, sizeof h.s, "%llu B", (unsigned long long)bytes);
    else
        snprintf(h.s, sizeof h.s, v < 10 ? "%.2f %s" : "%.1f %s", v, units[u]);
    return h;
}


const char *vram__quote(const char *s, char *buf, size_t cap)
{
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        int boundary = (*p & 0xc0) != 0x80;
        if (boundary && (o >= 96 || o + 12 >= cap)) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (*p < 0x20 || *p == 0x7f || *p == '\'' || *p == '\\')
            o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", *p);
        else
            buf[o++] = (char)*p;
    }
    buf[o] = '\0';
    return buf;
}

vram__stext vram__seconds_text(double s)
{
    vram__stext t;
    if (s != s || s == 1.0 / 0.0 || s == -1.0 / 0.0 || s > 1e15 || s < -1e15) {
        snprintf(t.s, sizeof t.s, "%g s", s);
        return t;
    }
    snprintf(t.s, sizeof t.s, "%.3f", s);
    size_t n = strlen(t.s);
    while (n && t.s[n - 1] == '0')
        t.s[--n] = '\0';
    if (n && t.s[n - 1] == '.') t.s[--n] = '\0';
    if (!strcmp(t.s, "-0") || !n) snprintf(t.s, sizeof t.s, "0");
    snprintf(t.s + strlen(t.s), sizeof t.s - strlen(t.s), " s");
    return t;
}

const char *vram__seconds_problem(double s)
{
    if (s != s || s == 1.0 / 0.0 || s == -1.0 / 0.0) return "is not a finite number";
    if (s < 0) return "is negative (seconds must be >= 0)";
    if (s > VRAM_SECONDS_MAX) return "is more than 10 years (315360000 seconds)";
    return NULL;
}
