/* table.c - vramctl's output for people: ollama-ps-style tables, progress, human sizes. */
#include "table.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vramctl.h"

void human_size(double bytes, char *out, size_t len)
{
    /* binary units, labelled as such (README: "Units") */
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (bytes >= 1024 && u < 4) {
        bytes /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(out, len, "%.0f B", bytes);
    else if (bytes < 10)
        snprintf(out, len, "%.1f %s", bytes, units[u]);
    else
        snprintf(out, len, "%.0f %s", bytes, units[u]);
}

void human_duration(double s, char *out, size_t len)
{
    if (s < 60) {
        /* a fraction shows (0.5 s is not "0s") */
        snprintf(out, len, s == floor(s) || s >= 10 ? "%.0fs" : "%.2gs", s >= 10 ? floor(s) : s);
        return;
    }
    static const struct {
        double size;
        const char *one, *many;
    } u[] = {{86400, "day", "days"}, {3600, "hour", "hours"}, {60, "minute", "minutes"}};
    for (size_t i = 0; i < 3; i++)
        if (s >= u[i].size) {
            long n = (long)floor(s / u[i].size);
            snprintf(out, len, "%ld %s", n, n == 1 ? u[i].one : u[i].many);
            return;
        }
}

/* Display columns of UTF-8 text (East Asian wide characters count 2). */
static int display_width(const char *s)
{
    int w = 0;
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        uint32_t cp;
        int n;
        if (*p < 0x80) {
            cp = *p;
            n = 1;
        } else if ((*p & 0xe0) == 0xc0) {
            cp = *p & 0x1f;
            n = 2;
        } else if ((*p & 0xf0) == 0xe0) {
            cp = *p & 0x0f;
            n = 3;
        } else {
            cp = *p & 0x07;
            n = 4;
        }
        for (int i = 1; i < n; i++) {
            if ((p[i] & 0xc0) != 0x80) {
                n = i;
                break;
            }
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        p += n;
        int wide = (cp >= 0x1100 && cp <= 0x115f) || (cp >= 0x2e80 && cp <= 0xa4cf) ||
                   (cp >= 0xac00 && cp <= 0xd7a3) || (cp >= 0xf900 && cp <= 0xfaff) ||
                   (cp >= 0xfe30 && cp <= 0xfe4f) || (cp >= 0xff00 && cp <= 0xff60) ||
                   (cp >= 0xffe0 && cp <= 0xffe6) || cp >= 0x20000;
        w += wide ? 2 : 1;
    }
    return w;
}

/* One cell padded to width + 3 display columns (the last one unpadded). */
static void cell(const char *s, int width, int last)
{
    fputs(s, stdout);
    if (last) return;
    for (int i = display_width(s); i < width + 3; i++)
        fputc(' ', stdout);
}

/* ---- status ---- */

#define NCOLS 7
#define CELL 64
typedef char status_row[NCOLS][CELL];

/* The cells of model name from its status object st. */
static void status_cells(status_row row, const char *name, json_t *st)
{
    const char *state = json_string_value(json_object_get(st, "state"));
    const char *loc = json_string_value(json_object_get(st, "location"));
    double bytes = json_number_value(json_object_get(st, "bytes"));
    double idle = json_number_value(json_object_get(st, "idle_time_seconds"));
    double timeout = json_number_value(json_object_get(st, "idle_timeout_seconds"));
    json_int_t leases = json_integer_value(json_object_get(st, "leases"));
    snprintf(row[0], CELL, "%s", name);
    snprintf(row[1], CELL, "%s", loc ? loc : "?");
    snprintf(row[2], CELL, "%s", state ? state : "?");
    if (bytes > 0)
        human_size(bytes, row[3], CELL);
    else
        snprintf(row[3], CELL, "-");
    if (leases > 0)
        snprintf(row[4], CELL, "in use");
    else if (state && (!strcmp(state, "gpu") || !strcmp(state, "cpu")))
        human_duration(idle, row[4], CELL);
    else
        snprintf(row[4], CELL, "-");
    if (timeout <= 0)
        snprintf(row[5], CELL, "never");
    else
        human_duration(timeout, row[5], CELL);
    snprintf(row[6], CELL, "%lld", (long long)leases);
}

static void print_row(const char *const *cells, const int *width)
{
    for (int c = 0; c < NCOLS; c++)
        cell(cells[c], width[c], c == NCOLS - 1);
    fputc('\n', stdout);
}

void table_status(json_t *all)
{
    static const char *const head[NCOLS] = {"NAME", "LOCATION", "STATE", "SIZE",
                                            "IDLE", "TIMEOUT",  "LEASES"};
    size_t rows = json_object_size(all);
    status_row *cells = calloc(rows ? rows : 1, sizeof *cells);
    if (!cells) die(EXIT_FAILED, "out of memory");
    int width[NCOLS];
    for (int c = 0; c < NCOLS; c++)
        width[c] = display_width(head[c]);
    const char *name;
    json_t *st;
    size_t r = 0;
    json_object_foreach(all, name, st)
    {
        status_cells(cells[r], name, st);
        for (int c = 0; c < NCOLS; c++) {
            int w = display_width(cells[r][c]);
            if (w > width[c]) width[c] = w;
        }
        r++;
    }
    print_row(head, width);
    for (size_t i = 0; i < r; i++) {
        const char *row[NCOLS];
        for (int c = 0; c < NCOLS; c++)
            row[c] = cells[i][c];
        print_row(row, width);
    }
    free(cells);
}

/* ---- results of offload, release, run ---- */

void table_items(json_t *o)
{
    const char *msg = json_string_value(json_object_get(o, "message"));
    if (msg) printf("%s\n", msg);
    size_t i;
    json_t *it;
    json_array_foreach(json_object_get(o, "models"), i, it)
    {
        if (!json_is_object(it)) continue;
        double bytes = json_number_value(json_object_get(it, "bytes"));
        double secs = json_number_value(json_object_get(it, "seconds"));
        double gbps = json_number_value(json_object_get(it, "gbps"));
        char size[32];
        human_size(bytes, size, sizeof size);
        printf("  %-24s %s", json_string_value(json_object_get(it, "model")),
               json_string_value(json_object_get(it, "result")));
        if (bytes > 0) {
            printf(" (%.3f s, %s", secs, size);
            if (gbps > 0) printf(", %.2f GB/s", gbps);
            printf(")");
        }
        printf("\n");
    }
}

void table_step(const char *label, json_t *s, const char *what)
{
    char size[32];
    double bytes = json_number_value(json_object_get(s, "bytes"));
    human_size(bytes, size, sizeof size);
    printf("  %-10s %8.3f s  %-28s", label, json_number_value(json_object_get(s, "seconds")),
           what ? what : "");
    if (bytes > 0) printf("  %s  %.2f GB/s", size, json_number_value(json_object_get(s, "gbps")));
    printf("\n");
}

/* ---- devices ---- */

void table_devices(json_t *o)
{
    printf("%-5s %-28s %-10s %-10s %-10s %-10s\n", "INDEX", "NAME", "TOTAL", "FREE", "MODELS",
           "BUDGET");
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(o, "devices"), i, d)
    {
        char t[32], f[32], u[32], b[32];
        human_size(json_number_value(json_object_get(d, "total_bytes")), t, sizeof t);
        human_size(json_number_value(json_object_get(d, "free_bytes")), f, sizeof f);
        human_size(json_number_value(json_object_get(d, "used_by_models_bytes")), u, sizeof u);
        human_size(json_number_value(json_object_get(d, "budget_bytes")), b, sizeof b);
        printf("%-5lld %-28.28s %-10s %-10s %-10s %-10s\n",
               (long long)json_integer_value(json_object_get(d, "index")),
               json_string_value(json_object_get(d, "name")), t, f, u, b);
    }
}

/* ---- load progress ---- */

void table_progress(const char *name, json_t *st, double elapsed)
{
    const char *state = json_string_value(json_object_get(st, "state"));
    json_t *p = json_object_get(st, "load_progress");
    double done = json_number_value(json_object_get(p, "done_bytes"));
    double total = json_number_value(json_object_get(p, "total_bytes"));
    char line[200];
    if (total > 0) {
        char a[32], b[32], bar[31];
        human_size(done, a, sizeof a);
        human_size(total, b, sizeof b);
        int fill = (int)(30.0 * done / total);
        if (fill > 30) fill = 30;
        for (int i = 0; i < 30; i++)
            bar[i] = i < fill ? '#' : ' ';
        bar[30] = '\0';
        snprintf(line, sizeof line, "%s %s [%s] %3.0f%%  %s / %s  %.1fs", state ? state : "loading",
                 name, bar, 100.0 * done / total, a, b, elapsed);
    } else {
        snprintf(line, sizeof line, "%s %s ... %.1fs", state ? state : "waiting for", name,
                 elapsed);
    }
    fprintf(stderr, "\r%-78s", line);
    fflush(stderr);
}
