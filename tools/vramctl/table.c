/* table.c - vramctl's output for people: ollama-ps-style tables, progress, human sizes. */
#include "table.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vram.h"
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

#define NCOLS 7       /* NAME LOCATION STATE SIZE IDLE TIMEOUT LEASES */
#define NCOLS_NODE 9  /* ... OWNER PID */
#define CELL 64
typedef char status_row[NCOLS_NODE][CELL];

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

static void print_row(const char *const *cells, const int *width, int ncols)
{
    for (int c = 0; c < ncols; c++)
        cell(cells[c], width[c], c == ncols - 1);
    fputc('\n', stdout);
}

/* The rows of a status table, columns sized to their widest cell. */
typedef struct status_table {
    status_row *rows;
    size_t n, cap;
    int ncols;
    int width[NCOLS_NODE];
} status_table;

static const char *const status_head[NCOLS_NODE] = {"NAME", "LOCATION", "STATE", "SIZE", "IDLE",
                                                    "TIMEOUT", "LEASES", "OWNER", "PID"};

static void table_init(status_table *t, size_t cap, int ncols)
{
    t->rows = calloc(cap ? cap : 1, sizeof *t->rows);
    if (!t->rows) die(EXIT_FAILED, "out of memory");
    t->n = 0;
    t->cap = cap ? cap : 1;
    t->ncols = ncols;
    for (int c = 0; c < ncols; c++)
        t->width[c] = display_width(status_head[c]);
}

/* Adds model name's row; owner and pid fill the node columns (NULL: none). */
static void table_add(status_table *t, const char *name, json_t *st, const char *owner,
                      const char *pid)
{
    if (t->n == t->cap) return;
    char(*row)[CELL] = t->rows[t->n++];
    status_cells(row, name, st);
    snprintf(row[7], CELL, "%s", owner ? owner : "");
    snprintf(row[8], CELL, "%s", pid ? pid : "");
    for (int c = 0; c < t->ncols; c++) {
        int w = display_width(row[c]);
        if (w > t->width[c]) t->width[c] = w;
    }
}

static void table_print(status_table *t)
{
    print_row(status_head, t->width, t->ncols);
    for (size_t i = 0; i < t->n; i++) {
        const char *row[NCOLS_NODE];
        for (int c = 0; c < t->ncols; c++)
            row[c] = t->rows[i][c];
        print_row(row, t->width, t->ncols);
    }
    free(t->rows);
}

void table_status(json_t *all)
{
    status_table t;
    table_init(&t, json_object_size(all), NCOLS);
    const char *name;
    json_t *st;
    json_object_foreach(all, name, st) table_add(&t, name, st, NULL, NULL);
    table_print(&t);
}

/* A model of the node view in the shape of vramd's status object. */
static json_t *node_model_status(json_t *md)
{
    const char *state = json_string_value(json_object_get(md, "state"));
    const char *loc = "?";
    for (int s = VRAM_STATE_UNLOADED; state && s <= VRAM_STATE_RELEASING; s++)
        if (!strcmp(vram_state_name((vram_state)s), state)) loc = vram_state_location((vram_state)s);
    return json_pack("{s:s, s:s, s:f, s:f, s:f, s:I}", "state", state ? state : "?", "location",
                     loc, "bytes", json_number_value(json_object_get(md, "bytes")),
                     "idle_time_seconds", json_number_value(json_object_get(md, "idle_seconds")),
                     "idle_timeout_seconds", json_number_value(json_object_get(md, "idle_timeout")),
                     "leases", json_integer_value(json_object_get(md, "leases")));
}

size_t node_models(json_t *node, int others_only)
{
    size_t n = 0, i;
    json_t *mb;
    json_array_foreach(json_object_get(node, "members"), i, mb)
    {
        if (others_only && json_is_true(json_object_get(mb, "self"))) continue;
        n += json_array_size(json_object_get(mb, "models"));
    }
    return n;
}

/* Adds every model of the node's other members, under its node-wide id;
 * only the one whose id is only (NULL: all). Returns how many. */
static size_t add_node_rows(status_table *t, json_t *node, const char *only)
{
    size_t i, j, added = 0;
    json_t *mb, *md;
    json_array_foreach(json_object_get(node, "members"), i, mb)
    {
        if (json_is_true(json_object_get(mb, "self"))) continue;
        char pid[32];
        snprintf(pid, sizeof pid, "%lld", (long long)json_integer_value(json_object_get(mb, "pid")));
        json_array_foreach(json_object_get(mb, "models"), j, md)
        {
            const char *id = json_string_value(json_object_get(md, "id"));
            if (!id || (only && strcmp(only, id) != 0)) continue;
            json_t *st = node_model_status(md);
            table_add(t, id, st, json_string_value(json_object_get(mb, "name")), pid);
            json_decref(st);
            added++;
        }
    }
    return added;
}

void table_status_node(json_t *all, json_t *node, const char *only)
{
    status_table t;
    table_init(&t, json_object_size(all) + node_models(node, 1), NCOLS_NODE);
    const char *self_name = "vramd";
    char self_pid[32] = "";
    size_t i;
    json_t *mb;
    json_array_foreach(json_object_get(node, "members"), i, mb)
    {
        if (!json_is_true(json_object_get(mb, "self"))) continue;
        self_name = json_string_value(json_object_get(mb, "name"));
        snprintf(self_pid, sizeof self_pid, "%lld",
                 (long long)json_integer_value(json_object_get(mb, "pid")));
    }
    const char *name;
    json_t *st;
    json_object_foreach(all, name, st) table_add(&t, name, st, self_name, self_pid);
    add_node_rows(&t, node, only);
    table_print(&t);
}

/* ---- the node ---- */

#define NODE_COLS 7
typedef char node_row[NODE_COLS][CELL];

/* Bytes of a member's models in device memory. */
static double member_gpu_bytes(json_t *mb)
{
    double sum = 0;
    size_t j;
    json_t *md;
    json_array_foreach(json_object_get(mb, "models"), j, md)
    {
        const char *st = json_string_value(json_object_get(md, "state"));
        if (st && (!strcmp(st, "gpu") || !strcmp(st, "offloading") || !strcmp(st, "restoring") ||
                   !strcmp(st, "releasing")))
            sum += json_number_value(json_object_get(md, "bytes"));
    }
    return sum;
}

static void member_cells(node_row row, json_t *mb)
{
    const char *name = json_string_value(json_object_get(mb, "name"));
    snprintf(row[0], CELL, "%s%s", name ? name : "?",
             json_is_true(json_object_get(mb, "self")) ? " (this vramd)" : "");
    snprintf(row[1], CELL, "%lld", (long long)json_integer_value(json_object_get(mb, "pid")));
    snprintf(row[2], CELL, "%lld", (long long)json_integer_value(json_object_get(mb, "uid")));
    const char *be = json_string_value(json_object_get(mb, "backend"));
    snprintf(row[3], CELL, "%s", be ? be : "?");
    snprintf(row[4], CELL, "%zu", json_array_size(json_object_get(mb, "models")));
    human_size(member_gpu_bytes(mb), row[5], CELL);
    json_int_t given = json_integer_value(json_object_get(mb, "evictions_given"));
    if (given > 0) {
        char b[32];
        human_size(json_number_value(json_object_get(mb, "bytes_given")), b, sizeof b);
        snprintf(row[6], CELL, "%s in %lld", b, (long long)given);
    } else {
        snprintf(row[6], CELL, "-");
    }
}

static void node_events(json_t *node)
{
    json_t *evs = json_object_get(node, "evictions");
    if (!json_array_size(evs)) {
        printf("\nno node evictions yet\n");
        return;
    }
    printf("\nrecent node evictions (the newest last):\n");
    size_t i;
    json_t *e;
    json_array_foreach(evs, i, e)
    {
        char ago[32], b[32];
        human_duration(json_number_value(json_object_get(e, "seconds_ago")), ago, sizeof ago);
        human_size(json_number_value(json_object_get(e, "bytes")), b, sizeof b);
        const char *model = json_string_value(json_object_get(e, "model"));
        const char *owner = json_string_value(json_object_get(e, "owner"));
        const char *asker = json_string_value(json_object_get(e, "asker"));
        const char *fo = json_string_value(json_object_get(e, "for"));
        printf("  %s ago: %s (pid %lld) gave %s, offloading %s, for %s (pid %lld) to load %s\n", ago,
               owner ? owner : "?", (long long)json_integer_value(json_object_get(e, "owner_pid")),
               b, model ? model : "?", asker ? asker : "?",
               (long long)json_integer_value(json_object_get(e, "asker_pid")), fo ? fo : "?");
    }
}

void table_node(json_t *node)
{
    static const char *const head[NODE_COLS] = {"NAME",   "PID",       "UID",  "BACKEND",
                                                "MODELS", "GPU BYTES", "GIVEN"};
    json_t *members = json_object_get(node, "members");
    size_t n = json_array_size(members), i;
    node_row *rows = calloc(n ? n : 1, sizeof *rows);
    if (!rows) die(EXIT_FAILED, "out of memory");
    int width[NODE_COLS];
    for (int c = 0; c < NODE_COLS; c++)
        width[c] = display_width(head[c]);
    json_t *mb;
    json_array_foreach(members, i, mb)
    {
        member_cells(rows[i], mb);
        for (int c = 0; c < NODE_COLS; c++)
            if (display_width(rows[i][c]) > width[c]) width[c] = display_width(rows[i][c]);
    }
    print_row(head, width, NODE_COLS);
    for (i = 0; i < n; i++) {
        const char *row[NODE_COLS];
        for (int c = 0; c < NODE_COLS; c++)
            row[c] = rows[i][c];
        print_row(row, width, NODE_COLS);
    }
    free(rows);
    node_events(node);
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
