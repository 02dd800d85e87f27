/* vramctl.c - the vram CLI over vramd's HTTP API (libcurl), and `vramctl mcp`, a stdio bridge. */
#define _GNU_SOURCE
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "backend/nvml.h"
#include "core/config.h"
#include "base/base.h"
#include "common/st_write.h"
#include "vram.h"

/* Exit codes. */
#define EXIT_FAILED 1      /* vramd answered with an error */
#define EXIT_UNREACHABLE 2 /* vramd is not running or not reachable */
#define EXIT_USAGE 64      /* bad command line */

static struct {
    char url[VRAM_STR_MAX];
    char token[VRAM_STR_MAX];
    int json;
} g;

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: vramctl [--url URL] [--token TOKEN] [--json] COMMAND [ARGS]\n"
        "\n"
        "Talks to a running vramd (default http://127.0.0.1:7861).\n"
        "\n"
        "Commands:\n"
        "  status [MODEL]           models: location, state, size, idle time, timeout, leases\n"
        "  offload [MODEL]          move every model (or one) from the GPU to CPU memory\n"
        "  release [MODEL]          free every model (or one) completely\n"
        "  timeout SECONDS [MODEL]  set the idle timeout (0 = never) of every model (or one)\n"
        "  load MODEL               load or restore MODEL onto the GPU, showing progress\n"
        "  run MODEL                acquire, checksum on the device, end the lease; timings\n"
        "  devices                  devices and their memory\n"
        "  mcp                      speak MCP on stdin/stdout, forwarding to vramd's /mcp\n"
        "                           (for desktop MCP clients; logs go to stderr)\n"
        "  make-model PATH --size SIZE [--dtypes BF16,F32] [--seed N] [--shards N]\n"
        "                           write a synthetic safetensors model (for tests, demos)\n"
        "  pick-gpu                 print the idlest GPU (NVML), as vramd --gpu auto does\n"
        "  help                     this text\n"
        "\n"
        "Options:\n"
        "  --url URL      vramd's address (VRAM_URL, else ./.env, default http://127.0.0.1:7861)\n"
        "  --token TOKEN  bearer token when vramd runs with one (VRAM_TOKEN)\n"
        "  --json         print vramd's JSON answer as it is\n"
        "\n"
        "Exit codes: 0 success, 1 vramd answered with an error, 2 vramd not reachable,\n"
        "64 bad command line.\n");
}

static void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void die(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("vramctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(code);
}

/* ---- HTTP ---- */

typedef struct buf {
    char *data;
    size_t len;
} buf;

static size_t on_data(char *p, size_t size, size_t n, void *user)
{
    buf *b = user;
    size_t add = size * n;
    char *d = realloc(b->data, b->len + add + 1);
    if (!d) return 0;
    memcpy(d + b->len, p, add);
    b->len += add;
    d[b->len] = '\0';
    b->data = d;
    return add;
}

/* The reason a transfer failed, for people. */
static void unreachable_text(CURL *easy, CURLcode rc, char *out, size_t len)
{
    long os = 0;
    curl_easy_getinfo(easy, CURLINFO_OS_ERRNO, &os);
    const char *why = os ? strerror((int)os) : curl_easy_strerror(rc);
    char lower[128];
    snprintf(lower, sizeof lower, "%s", why);
    for (char *p = lower; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    snprintf(out, len,
             "cannot reach vramd at %s (%s) — is it running? start it with `vramd` or `make run`",
             g.url, lower);
}

static struct curl_slist *base_headers(int json_body)
{
    struct curl_slist *h = NULL;
    if (json_body) h = curl_slist_append(h, "Content-Type: application/json");
    if (g.token[0]) {
        char a[VRAM_STR_MAX + 32];
        snprintf(a, sizeof a, "Authorization: Bearer %s", g.token);
        h = curl_slist_append(h, a);
    }
    return h;
}

static CURL *new_easy(const char *method, const char *path, const char *body, buf *out,
                      struct curl_slist *headers)
{
    CURL *e = curl_easy_init();
    if (!e) die(EXIT_FAILED, "out of memory");
    char url[VRAM_STR_MAX + 512];
    size_t ul = strlen(g.url);
    while (ul && g.url[ul - 1] == '/')
        ul--;
    snprintf(url, sizeof url, "%.*s%s", (int)ul, g.url, path);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    } else if (!strcmp(method, "POST")) {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, 0L);
    }
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "vramctl/" VRAM_VERSION);
    return e;
}

/* One request; exits 2 when vramd cannot be reached. Returns the status. */
static long request(const char *method, const char *path, const char *body, buf *out)
{
    struct curl_slist *h = base_headers(body != NULL);
    CURL *e = new_easy(method, path, body, out, h);
    CURLcode rc = curl_easy_perform(e);
    long status = 0;
    if (rc != CURLE_OK) {
        char why[600];
        unreachable_text(e, rc, why, sizeof why);
        die(EXIT_UNREACHABLE, "%s", why);
    }
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(e);
    curl_slist_free_all(h);
    return status;
}

/* Parses an answer; on an error status prints vramd's message and exits 1. */
static json_t *answer(long status, buf *b)
{
    json_t *o = b->data ? json_loads(b->data, JSON_DECODE_ANY, NULL) : NULL;
    if (status >= 400 || !o) {
        json_t *e = json_object_get(o, "error");
        const char *msg = json_string_value(json_object_get(e, "message"));
        const char *code = json_string_value(json_object_get(e, "code"));
        if (msg)
            fprintf(stderr, "vramctl: %s (%s, HTTP %ld)\n", msg, code ? code : "error", status);
        else
            fprintf(stderr, "vramctl: vramd answered HTTP %ld: %.300s\n", status,
                    b->data ? b->data : "");
        exit(EXIT_FAILED);
    }
    return o;
}

static json_t *call(const char *method, const char *path, json_t *body_obj)
{
    char *body = body_obj ? json_dumps(body_obj, JSON_COMPACT) : NULL;
    json_decref(body_obj);
    buf b = {0};
    long st = request(method, path, body, &b);
    free(body);
    if (g.json) {
        if (b.data) fputs(b.data, stdout);
        if (b.len && b.data[b.len - 1] != '\n') fputc('\n', stdout);
        exit(st >= 400 ? EXIT_FAILED : 0);
    }
    json_t *o = answer(st, &b);
    free(b.data);
    return o;
}

/* A path segment with everything but unreserved characters percent-encoded. */
static void model_path(char *out, size_t len, const char *name, const char *suffix)
{
    size_t n = (size_t)snprintf(out, len, "/api/v1/models/");
    for (const unsigned char *p = (const unsigned char *)name; *p && n + 4 < len; p++) {
        if (isalnum(*p) || *p == '-' || *p == '_' || *p == '.' || *p == '~')
            out[n++] = (char)*p;
        else
            n += (size_t)snprintf(out + n, len - n, "%%%02X", *p);
    }
    snprintf(out + n, len - n, "%s", suffix);
}

/* ---- formatting ---- */

static void human_size(double bytes, char *out, size_t len)
{
    static const char *const units[] = {"B", "KB", "MB", "GB", "TB"};
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

static void human_duration(double s, char *out, size_t len)
{
    if (s < 60) {
        snprintf(out, len, "%.0fs", floor(s));
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

static void cell(const char *s, int width, int last)
{
    fputs(s, stdout);
    if (last) return;
    for (int i = display_width(s); i < width + 3; i++)
        fputc(' ', stdout);
}

/* ---- status ---- */

#define NCOLS 7
static void status_table(json_t *all)
{
    static const char *const head[NCOLS] = {"NAME", "LOCATION", "STATE", "SIZE",
                                            "IDLE", "TIMEOUT",  "LEASES"};
    size_t rows = json_object_size(all);
    char(*cells)[NCOLS][64] = calloc(rows ? rows : 1, sizeof *cells);
    if (!cells) die(EXIT_FAILED, "out of memory");
    int width[NCOLS];
    for (int c = 0; c < NCOLS; c++)
        width[c] = display_width(head[c]);
    const char *name;
    json_t *st;
    size_t r = 0;
    json_object_foreach(all, name, st)
    {
        const char *state = json_string_value(json_object_get(st, "state"));
        const char *loc = json_string_value(json_object_get(st, "location"));
        double bytes = json_number_value(json_object_get(st, "bytes"));
        double idle = json_number_value(json_object_get(st, "idle_time_seconds"));
        double timeout = json_number_value(json_object_get(st, "idle_timeout_seconds"));
        json_int_t leases = json_integer_value(json_object_get(st, "leases"));
        snprintf(cells[r][0], 64, "%s", name);
        snprintf(cells[r][1], 64, "%s", loc ? loc : "?");
        snprintf(cells[r][2], 64, "%s", state ? state : "?");
        if (bytes > 0)
            human_size(bytes, cells[r][3], 64);
        else
            snprintf(cells[r][3], 64, "-");
        if (leases > 0)
            snprintf(cells[r][4], 64, "in use");
        else if (state && (!strcmp(state, "gpu") || !strcmp(state, "cpu")))
            human_duration(idle, cells[r][4], 64);
        else
            snprintf(cells[r][4], 64, "-");
        if (timeout <= 0)
            snprintf(cells[r][5], 64, "never");
        else
            human_duration(timeout, cells[r][5], 64);
        snprintf(cells[r][6], 64, "%lld", (long long)leases);
        for (int c = 0; c < NCOLS; c++) {
            int w = display_width(cells[r][c]);
            if (w > width[c]) width[c] = w;
        }
        r++;
    }
    for (int c = 0; c < NCOLS; c++)
        cell(head[c], width[c], c == NCOLS - 1);
    fputc('\n', stdout);
    for (size_t i = 0; i < r; i++) {
        for (int c = 0; c < NCOLS; c++)
            cell(cells[i][c], width[c], c == NCOLS - 1);
        fputc('\n', stdout);
    }
    free(cells);
}

static int cmd_status(int argc, char **argv)
{
    if (argc > 1) die(EXIT_USAGE, "status takes at most one MODEL");
    if (argc == 1) {
        char path[1024];
        model_path(path, sizeof path, argv[0], "");
        json_t *one = call("GET", path, NULL);
        json_t *all = json_object();
        json_object_set_new(all, argv[0], one);
        status_table(all);
        json_decref(all);
        return 0;
    }
    json_t *all = call("GET", "/api/gpu/status", NULL);
    if (!json_object_size(all))
        printf("no models (start vramd with --model NAME=SOURCE)\n");
    else
        status_table(all);
    json_decref(all);
    return 0;
}

/* ---- offload, release, timeout ---- */

static void print_items(json_t *o)
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

static int cmd_move(const char *what, int argc, char **argv)
{
    if (argc > 1) die(EXIT_USAGE, "%s takes at most one MODEL", what);
    char path[64];
    snprintf(path, sizeof path, "/api/gpu/%s", what);
    json_t *body = argc == 1 ? json_pack("{s:s}", "model", argv[0]) : NULL;
    json_t *o = call("POST", path, body);
    print_items(o);
    json_decref(o);
    return 0;
}

static int cmd_timeout(int argc, char **argv)
{
    if (argc < 1 || argc > 2) die(EXIT_USAGE, "usage: vramctl timeout SECONDS [MODEL]");
    char *end = NULL;
    errno = 0;
    double s = strtod(argv[0], &end);
    if (errno || end == argv[0] || *end || !isfinite(s))
        die(EXIT_USAGE, "timeout: '%s' is not a number of seconds", argv[0]);
    json_t *v = (floor(s) == s && fabs(s) < 9e15) ? json_integer((json_int_t)s) : json_real(s);
    json_t *body = json_pack("{s:o}", "timeout", v);
    if (argc == 2) json_object_set_new(body, "model", json_string(argv[1]));
    json_t *o = call("POST", "/api/gpu/timeout", body);
    printf("%s\n", json_string_value(json_object_get(o, "message")));
    json_decref(o);
    return 0;
}

/* ---- load (with progress) and run ---- */

static void progress_line(const char *name, json_t *st, double elapsed)
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

static int cmd_load(int argc, char **argv)
{
    if (argc != 1) die(EXIT_USAGE, "usage: vramctl load MODEL");
    const char *name = argv[0];
    char path[1024], show[1024];
    model_path(path, sizeof path, name, "/load");
    model_path(show, sizeof show, name, "");
    int tty = isatty(2) && !g.json;
    CURLM *multi = curl_multi_init();
    struct curl_slist *h = base_headers(0);
    buf lb = {0}, sb = {0};
    CURL *load = new_easy("POST", path, NULL, &lb, h);
    CURL *poll_e = NULL;
    curl_multi_add_handle(multi, load);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    double next_poll = 0.3;
    int shown = 0, running = 1;
    CURLcode load_rc = CURLE_OK;
    int load_done = 0;
    while (!load_done) {
        curl_multi_perform(multi, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(multi, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            if (msg->easy_handle == load) {
                load_done = 1;
                load_rc = msg->data.result;
            } else if (msg->easy_handle == poll_e) {
                if (msg->data.result == CURLE_OK && tty) {
                    json_t *st = sb.data ? json_loads(sb.data, 0, NULL) : NULL;
                    struct timespec t;
                    clock_gettime(CLOCK_MONOTONIC, &t);
                    double el = (double)(t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) * 1e-9;
                    if (json_is_object(st)) {
                        progress_line(name, st, el);
                        shown = 1;
                    }
                    json_decref(st);
                }
                curl_multi_remove_handle(multi, poll_e);
                curl_easy_cleanup(poll_e);
                poll_e = NULL;
                free(sb.data);
                sb.data = NULL;
                sb.len = 0;
            }
        }
        if (load_done) break;
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        double el = (double)(t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) * 1e-9;
        if (!poll_e && el >= next_poll) {
            poll_e = new_easy("GET", show, NULL, &sb, h);
            curl_multi_add_handle(multi, poll_e);
            next_poll = el + 0.25;
        }
        curl_multi_poll(multi, NULL, 0, 100, NULL);
    }
    if (shown) fprintf(stderr, "\r%-78s\r", "");
    if (poll_e) {
        curl_multi_remove_handle(multi, poll_e);
        curl_easy_cleanup(poll_e);
        free(sb.data);
    }
    if (load_rc != CURLE_OK) {
        char why[600];
        unreachable_text(load, load_rc, why, sizeof why);
        die(EXIT_UNREACHABLE, "%s", why);
    }
    long status = 0;
    curl_easy_getinfo(load, CURLINFO_RESPONSE_CODE, &status);
    curl_multi_remove_handle(multi, load);
    curl_easy_cleanup(load);
    curl_multi_cleanup(multi);
    curl_slist_free_all(h);
    if (g.json) {
        if (lb.data) fputs(lb.data, stdout);
        return status >= 400 ? EXIT_FAILED : 0;
    }
    json_t *o = answer(status, &lb);
    free(lb.data);
    const char *where = json_string_value(json_object_get(o, "location"));
    printf("%s (now on %s)\n", json_string_value(json_object_get(o, "message")),
           where ? where : "?");
    json_decref(o);
    return 0;
}

static void step_line(const char *label, json_t *s, const char *what)
{
    char size[32];
    double bytes = json_number_value(json_object_get(s, "bytes"));
    human_size(bytes, size, sizeof size);
    printf("  %-10s %8.3f s  %-28s", label, json_number_value(json_object_get(s, "seconds")),
           what ? what : "");
    if (bytes > 0) printf("  %s  %.2f GB/s", size, json_number_value(json_object_get(s, "gbps")));
    printf("\n");
}

static int cmd_run(int argc, char **argv)
{
    if (argc != 1) die(EXIT_USAGE, "usage: vramctl run MODEL");
    char path[1024];
    model_path(path, sizeof path, argv[0], "/run");
    json_t *o = call("POST", path, NULL);
    json_t *steps = json_object_get(o, "steps");
    printf("%s: checksum %s (%.3f s in all; now on %s)\n", argv[0],
           json_string_value(json_object_get(o, "checksum")),
           json_number_value(json_object_get(o, "total_seconds")),
           json_string_value(json_object_get(o, "location")));
    json_t *end = json_object_get(steps, "end_lease");
    step_line("acquire", json_object_get(steps, "acquire"),
              json_string_value(json_object_get(json_object_get(steps, "acquire"), "action")));
    step_line("checksum", json_object_get(steps, "compute"), "on the device");
    step_line("end lease", end,
              json_is_true(json_object_get(end, "offloaded")) ? "offloaded (immediate_offload)"
                                                              : "stays on the GPU");
    json_decref(o);
    return 0;
}

static int cmd_devices(int argc, char **argv)
{
    (void)argv;
    if (argc) die(EXIT_USAGE, "devices takes no arguments");
    json_t *o = call("GET", "/api/v1/devices", NULL);
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
    json_decref(o);
    return 0;
}

/* ---- mcp: a stdio bridge to /mcp ---- */

typedef struct xfer {
    CURL *easy;
    struct curl_slist *headers;
    char *line; /* the message as sent */
    json_t *id; /* its id (NULL for notifications and responses) */
    buf out;
    int is_init;
    int retried;
    struct xfer *next;
} xfer;

static struct {
    CURLM *multi;
    char session[128];
    char version[32];
    char *init_line; /* the client's initialize, replayed when vramd forgot the session */
    xfer *live;
} mb;

static void mcp_write(json_t *msg)
{
    char *text = json_dumps(msg, JSON_COMPACT);
    if (!text) return;
    if (fputs(text, stdout) == EOF || fputc('\n', stdout) == EOF || fflush(stdout) == EOF) {
        free(text);
        exit(0); /* the client went away */
    }
    free(text);
}

static void mcp_error(json_t *id, int code, const char *message)
{
    if (!id) return; /* nothing may answer a notification */
    json_t *e = json_pack("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", id, "error", "code",
                          code, "message", message);
    mcp_write(e);
    json_decref(e);
}

static struct curl_slist *mcp_headers(void)
{
    struct curl_slist *h = base_headers(1);
    h = curl_slist_append(h, "Accept: application/json, text/event-stream");
    if (mb.session[0]) {
        char s[160];
        snprintf(s, sizeof s, "Mcp-Session-Id: %s", mb.session);
        h = curl_slist_append(h, s);
    }
    if (mb.version[0]) {
        char s[64];
        snprintf(s, sizeof s, "MCP-Protocol-Version: %s", mb.version);
        h = curl_slist_append(h, s);
    }
    return h;
}

static xfer *mcp_start(const char *line, json_t *id, int is_init)
{
    xfer *x = calloc(1, sizeof *x);
    if (!x) die(EXIT_FAILED, "out of memory");
    x->line = strdup(line);
    x->id = id ? json_incref(id) : NULL;
    x->is_init = is_init;
    x->headers = mcp_headers();
    x->easy = new_easy("POST", "/mcp", x->line, &x->out, x->headers);
    curl_easy_setopt(x->easy, CURLOPT_PRIVATE, x);
    curl_multi_add_handle(mb.multi, x->easy);
    x->next = mb.live;
    mb.live = x;
    return x;
}

static void mcp_free(xfer *x)
{
    xfer **pp = &mb.live;
    while (*pp && *pp != x)
        pp = &(*pp)->next;
    if (*pp) *pp = x->next;
    curl_multi_remove_handle(mb.multi, x->easy);
    curl_easy_cleanup(x->easy);
    curl_slist_free_all(x->headers);
    free(x->line);
    json_decref(x->id);
    free(x->out.data);
    free(x);
}

/* Replays the client's initialize (and initialized) after vramd lost the
 * session, e.g. because it restarted. Returns 1 on success. */
static int mcp_reinit(void)
{
    if (!mb.init_line) return 0;
    mb.session[0] = '\0';
    buf b = {0};
    struct curl_slist *h = mcp_headers();
    CURL *e = new_easy("POST", "/mcp", mb.init_line, &b, h);
    int ok = curl_easy_perform(e) == CURLE_OK;
    long status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    struct curl_header *sh = NULL;
    if (ok && status == 200 &&
        curl_easy_header(e, "Mcp-Session-Id", 0, CURLH_HEADER, -1, &sh) == CURLHE_OK)
        snprintf(mb.session, sizeof mb.session, "%s", sh->value);
    else
        ok = 0;
    curl_easy_cleanup(e);
    curl_slist_free_all(h);
    free(b.data);
    if (!ok) return 0;
    static const char note[] = "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}";
    b = (buf){0};
    h = mcp_headers();
    e = new_easy("POST", "/mcp", note, &b, h);
    curl_easy_perform(e);
    curl_easy_cleanup(e);
    curl_slist_free_all(h);
    free(b.data);
    fprintf(stderr, "vramctl mcp: vramd had forgotten the session; opened a new one\n");
    return 1;
}

/* Writes the answer of one finished transfer to stdout. */
static void mcp_finish(xfer *x, CURLcode rc)
{
    if (rc != CURLE_OK) {
        char why[600];
        unreachable_text(x->easy, rc, why, sizeof why);
        fprintf(stderr, "vramctl mcp: %s\n", why);
        mcp_error(x->id, -32000, why);
        return;
    }
    long status = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    if (x->is_init && status == 200) {
        struct curl_header *sh = NULL;
        if (curl_easy_header(x->easy, "Mcp-Session-Id", 0, CURLH_HEADER, -1, &sh) == CURLHE_OK)
            snprintf(mb.session, sizeof mb.session, "%s", sh->value);
        json_t *o = x->out.data ? json_loads(x->out.data, 0, NULL) : NULL;
        const char *v =
            json_string_value(json_object_get(json_object_get(o, "result"), "protocolVersion"));
        if (v) snprintf(mb.version, sizeof mb.version, "%s", v);
        json_decref(o);
    }
    if (status == 404 && !x->is_init && !x->retried && mb.session[0] && mcp_reinit()) {
        /* same message again, on the new session */
        xfer *again = mcp_start(x->line, x->id, 0);
        again->retried = 1;
        return;
    }
    if (status == 202 || !x->out.len) return;
    const char *ctype = NULL;
    curl_easy_getinfo(x->easy, CURLINFO_CONTENT_TYPE, &ctype);
    if (ctype && strncasecmp(ctype, "text/event-stream", 17) == 0) {
        /* one message per data: line (vramd answers JSON, but be ready) */
        char *save = NULL;
        for (char *l = strtok_r(x->out.data, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
            if (strncmp(l, "data:", 5) != 0) continue;
            json_t *m = json_loads(l + 5, 0, NULL);
            if (m) mcp_write(m);
            json_decref(m);
        }
        return;
    }
    json_t *m = json_loads(x->out.data, JSON_DECODE_ANY, NULL);
    if (json_is_object(m) && (json_object_get(m, "result") || json_object_get(m, "error"))) {
        /* an error vramd could not tie to the message gets its id back */
        json_t *rid = json_object_get(m, "id");
        if (x->id && (!rid || json_is_null(rid))) json_object_set(m, "id", x->id);
        mcp_write(m);
    } else {
        char text[400];
        snprintf(text, sizeof text, "vramd answered HTTP %ld: %.300s", status,
                 x->out.data ? x->out.data : "");
        mcp_error(x->id, -32603, text);
    }
    json_decref(m);
}

/* One line from the client. */
static void mcp_line(char *line)
{
    size_t n = strlen(line);
    if (n && line[n - 1] == '\r') line[--n] = '\0';
    char *p = line;
    while (*p == ' ' || *p == '\t')
        p++;
    if (!*p) return;
    json_error_t je;
    json_t *msg = json_loads(p, JSON_DECODE_ANY, &je);
    if (!msg) {
        /* vramd would say the same; answering here keeps the session usable */
        char text[300];
        snprintf(text, sizeof text, "Parse error: %s", je.text);
        json_t *e = json_pack("{s:s, s:n, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", "error", "code",
                              -32700, "message", text);
        mcp_write(e);
        json_decref(e);
        return;
    }
    json_t *id = json_is_object(msg) ? json_object_get(msg, "id") : NULL;
    const char *method = json_string_value(json_object_get(msg, "method"));
    int is_init = method && !strcmp(method, "initialize") && id;
    if (method && !strcmp(method, "notifications/cancelled")) {
        /* the client gave up on a request: drop its transfer, answer nothing */
        json_t *rid = json_object_get(json_object_get(msg, "params"), "requestId");
        for (xfer *x = mb.live; x && rid; x = x->next)
            if (x->id && json_equal(x->id, rid)) {
                mcp_free(x);
                break;
            }
        json_decref(msg);
        return;
    }
    if (is_init) {
        free(mb.init_line);
        mb.init_line = strdup(p);
    }
    mcp_start(p, method ? id : NULL, is_init);
    json_decref(msg);
}

static int init_in_flight(void)
{
    for (xfer *x = mb.live; x; x = x->next)
        if (x->is_init) return 1;
    return 0;
}

static int cmd_mcp(int argc, char **argv)
{
    (void)argv;
    if (argc) die(EXIT_USAGE, "mcp takes no arguments");
    signal(SIGPIPE, SIG_IGN);
    mb.multi = curl_multi_init();
    size_t len = 0, cap = 131072;
    char *in = malloc(cap);
    int eof = 0;
    if (!in) die(EXIT_FAILED, "out of memory");
    fprintf(stderr, "vramctl mcp: forwarding stdio to %s/mcp\n", g.url);
    while (!eof || mb.live || len) {
        /* lines wait while an initialize is out: they need its session id */
        if (!init_in_flight()) {
            char *nl;
            size_t start = 0;
            while (!init_in_flight() && (nl = memchr(in + start, '\n', len - start))) {
                *nl = '\0';
                mcp_line(in + start);
                start = (size_t)(nl - in) + 1;
            }
            memmove(in, in + start, len - start);
            len -= start;
            if (eof && len && !init_in_flight()) { /* a last line without newline */
                in[len] = '\0';
                mcp_line(in);
                len = 0;
            }
        }
        int running = 0;
        curl_multi_perform(mb.multi, &running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(mb.multi, &left))) {
            if (m->msg != CURLMSG_DONE) continue;
            xfer *x = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
            CURLcode rc = m->data.result;
            mcp_finish(x, rc);
            mcp_free(x);
        }
        if (eof && !mb.live && !len) break;
        struct curl_waitfd wfd = {.fd = 0, .events = CURL_WAIT_POLLIN, .revents = 0};
        curl_multi_poll(mb.multi, eof ? NULL : &wfd, eof ? 0 : 1, 1000, NULL);
        if (!eof && (wfd.revents & (CURL_WAIT_POLLIN | CURL_WAIT_POLLPRI))) {
            if (cap - len < 65536 + 1) {
                while (cap - len < 65536 + 1)
                    cap *= 2;
                char *grown = realloc(in, cap);
                if (!grown) die(EXIT_FAILED, "out of memory");
                in = grown;
            }
            ssize_t got = read(0, in + len, 65536);
            if (got > 0)
                len += (size_t)got;
            else if (got == 0 || (errno != EINTR && errno != EAGAIN))
                eof = 1;
        } else if (!eof) {
            /* poll gives no revents for a hung-up pipe on some systems */
            struct pollfd pf = {.fd = 0, .events = POLLIN};
            if (poll(&pf, 1, 0) > 0 && (pf.revents & (POLLHUP | POLLERR | POLLNVAL)) &&
                !(pf.revents & POLLIN))
                eof = 1;
        }
    }
    if (mb.session[0]) { /* end the session */
        buf b = {0};
        struct curl_slist *h = mcp_headers();
        CURL *e = new_easy("DELETE", "/mcp", NULL, &b, h);
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 2000L);
        curl_easy_perform(e);
        curl_easy_cleanup(e);
        curl_slist_free_all(h);
        free(b.data);
    }
    curl_multi_cleanup(mb.multi);
    free(in);
    free(mb.init_line);
    return 0;
}

/* ---- local helpers: make-model, pick-gpu, checksum-synthetic ---- */

static int cmd_make_model(int argc, char **argv)
{
    const char *path = NULL, *dtypes = NULL;
    uint64_t size = 0, seed = 0;
    int shards = 1;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--size") && v) {
            if (vram_parse_size(v, &size) < 0 || size == 0)
                die(EXIT_USAGE, "make-model: --size '%s' is not a size (e.g. 256M, 1G)", v);
            i++;
        } else if (!strcmp(a, "--dtypes") && v) {
            dtypes = v;
            i++;
        } else if (!strcmp(a, "--seed") && v) {
            char *end = NULL;
            seed = strtoull(v, &end, 0);
            if (*end || *v == '-') die(EXIT_USAGE, "make-model: --seed '%s' is not a number", v);
            i++;
        } else if (!strcmp(a, "--shards") && v) {
            char *end = NULL;
            long n = strtol(v, &end, 10);
            if (*end || n < 1 || n > 10000)
                die(EXIT_USAGE, "make-model: --shards '%s' is not 1-10000", v);
            shards = (int)n;
            i++;
        } else if (a[0] != '-' && !path) {
            path = a;
        } else {
            die(EXIT_USAGE, "usage: vramctl make-model PATH --size SIZE [--dtypes BF16,F32] "
                            "[--seed N] [--shards N]");
        }
    }
    if (!path || !size)
        die(EXIT_USAGE, "usage: vramctl make-model PATH --size SIZE [--dtypes BF16,F32] "
                        "[--seed N] [--shards N]");
    char err[512] = "";
    int rc = st_make_model(path, size, dtypes, seed, shards, err, sizeof err);
    if (rc < 0) die(EXIT_FAILED, "make-model: %s", err[0] ? err : vram_strerror(rc));
    char h[32];
    human_size((double)size, h, sizeof h);
    printf("wrote %s (about %s, %d shard%s, seed %" PRIu64 "); serve it with --model NAME=%s\n",
           path, h, shards, shards == 1 ? "" : "s", seed, path);
    return 0;
}

static int cmd_pick_gpu(int argc, char **argv)
{
    (void)argv;
    if (argc) die(EXIT_USAGE, "pick-gpu takes no arguments");
    char uuid[128], why[1024] = "";
    int index = -1;
    if (vram__nvml_pick(uuid, sizeof uuid, &index, why, sizeof why) < 0)
        die(EXIT_FAILED, "pick-gpu: %s", why[0] ? why : "no GPU could be picked");
    printf("%d %s\n", index, uuid);
    if (why[0]) fprintf(stderr, "%s\n", why);
    return 0;
}

/* Hidden (tests): the checksum of synthetic:SIZE:SEED as vramd's run reports it. */
static int cmd_checksum_synthetic(int argc, char **argv)
{
    uint64_t size = 0, seed = 0;
    if (argc < 1 || argc > 2 || vram_parse_size(argv[0], &size) < 0)
        die(EXIT_USAGE, "usage: vramctl checksum-synthetic SIZE [SEED]");
    if (argc == 2) seed = strtoull(argv[1], NULL, 0);
    size_t chunk = 8u << 20;
    unsigned char *b = malloc(chunk);
    if (!b) die(EXIT_FAILED, "out of memory");
    uint64_t sum = 0;
    for (uint64_t off = 0; off < size; off += chunk) {
        size_t n = (size_t)(size - off < chunk ? size - off : chunk);
        vram_synthetic_fill(seed, off, b, n);
        sum += vram__checksum_partial(b, n, off / 8);
    }
    sum += vram__checksum_final(size);
    free(b);
    printf("0x%016" PRIx64 "\n", sum);
    return 0;
}

/* ---- main ---- */

int main(int argc, char **argv)
{
    vram_config cfg;
    vram_config_init(&cfg);
    char err[512];
    /* options may come anywhere; the rest is the command and its arguments */
    /* the non-option words are packed, in place, into rest = argv + 1 */
    char **rest = argv + 1;
    int nrest = 0;
    const char *url = NULL, *token = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--version")) {
            printf("vramctl %s\n", VRAM_VERSION);
            return 0;
        } else if (!strcmp(a, "--json")) {
            g.json = 1;
        } else if (!strcmp(a, "--url") || !strcmp(a, "--token")) {
            if (i + 1 >= argc) die(EXIT_USAGE, "%s needs a value", a);
            if (!strcmp(a, "--url"))
                url = argv[++i];
            else
                token = argv[++i];
        } else if (!strncmp(a, "--url=", 6)) {
            url = a + 6;
        } else if (!strncmp(a, "--token=", 8)) {
            token = a + 8;
        } else {
            rest[nrest++] = argv[i];
        }
    }
    if (nrest == 0) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = rest[0];
    /* local commands need no daemon and no configuration */
    if (!strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "make-model")) return cmd_make_model(nrest - 1, rest + 1);
    if (!strcmp(cmd, "pick-gpu")) return cmd_pick_gpu(nrest - 1, rest + 1);
    if (!strcmp(cmd, "checksum-synthetic")) return cmd_checksum_synthetic(nrest - 1, rest + 1);

    if (vram_config_load(&cfg, NULL, err, sizeof err) < 0) die(EXIT_USAGE, "%s", err);
    if (url && vram__config_set_flag(&cfg, "--url", url, err, sizeof err) < 0)
        die(EXIT_USAGE, "%s", err);
    if (token && vram__config_set_flag(&cfg, "--token", token, err, sizeof err) < 0)
        die(EXIT_USAGE, "%s", err);
    snprintf(g.url, sizeof g.url, "%s", cfg.url);
    snprintf(g.token, sizeof g.token, "%s", cfg.token);
    curl_global_init(CURL_GLOBAL_DEFAULT);

    int argn = nrest - 1;
    char **args = rest + 1;
    int rc;
    if (!strcmp(cmd, "status") || !strcmp(cmd, "ps"))
        rc = cmd_status(argn, args);
    else if (!strcmp(cmd, "offload"))
        rc = cmd_move("offload", argn, args);
    else if (!strcmp(cmd, "release"))
        rc = cmd_move("release", argn, args);
    else if (!strcmp(cmd, "timeout"))
        rc = cmd_timeout(argn, args);
    else if (!strcmp(cmd, "load"))
        rc = cmd_load(argn, args);
    else if (!strcmp(cmd, "run"))
        rc = cmd_run(argn, args);
    else if (!strcmp(cmd, "devices"))
        rc = cmd_devices(argn, args);
    else if (!strcmp(cmd, "mcp"))
        rc = cmd_mcp(argn, args);
    else
        die(EXIT_USAGE, "unknown command '%s' (see vramctl --help)", cmd);
    curl_global_cleanup();
    return rc;
}
