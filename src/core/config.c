/* config.c - the option table of vram_config: parsers, environment, .env, printing. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/config.h"
#include "base/base.h"

/* ------------------------------------------------------------------------ */
/* Types of option: a parser from text and a formatter back to text.        */
/* ------------------------------------------------------------------------ */

struct option;

/* A parsed value before it is copied into its vram_config field. */
typedef union optval {
    double d;
    uint64_t u;
    int i;
    vram_size_spec spec;
    char s[VRAM_STR_MAX];
} optval;

typedef struct opt_type {
    /* Parses text (trimmed, shorter than VRAM_STR_MAX) into *v, or writes
     * why not into msg ("'12X' is not a size (...)"; shown is the value
     * quoted for messages) and returns -1. */
    int (*parse)(const struct option *o, const char *text, const char *shown, optval *v, char *msg,
                 size_t len);
    /* Writes the field's value as text that parse accepts. */
    void (*format)(const struct option *o, const void *field, char *buf, size_t len);
} opt_type;

enum {
    OPT_NONEMPTY = 1u << 0, /* strings: "" is an error */
    OPT_NOSPACE = 1u << 1,  /* strings: no blanks inside */
    OPT_SECRET = 1u << 2    /* never shown: the token */
};

typedef struct option {
    vram__option_desc desc;
    const opt_type *type;
    size_t offset, size;        /* the field in vram_config */
    uint64_t lo, hi;            /* sizes and integers: accepted range */
    const char *const *choices; /* enums: names in value order, NULL-terminated */
    unsigned flags;
} option;

/* ---- numbers ---- */

/* A plain decimal number as written: digits, then optionally '.' and digits. */
typedef struct decimal {
    uint64_t ip;     /* integer part */
    uint64_t frac;   /* the first FRAC_DIGITS_MAX digits after the dot */
    int frac_digits; /* how many of them frac holds */
    int has_dot;
    int overflow; /* the integer part does not fit in 64 bits */
} decimal;

#define FRAC_DIGITS_MAX 18

static const uint64_t g_pow10[FRAC_DIGITS_MAX + 1] = {1ULL,
                                                      10ULL,
                                                      100ULL,
                                                      1000ULL,
                                                      10000ULL,
                                                      100000ULL,
                                                      1000000ULL,
                                                      10000000ULL,
                                                      100000000ULL,
                                                      1000000000ULL,
                                                      10000000000ULL,
                                                      100000000000ULL,
                                                      1000000000000ULL,
                                                      10000000000000ULL,
                                                      100000000000000ULL,
                                                      1000000000000000ULL,
                                                      10000000000000000ULL,
                                                      100000000000000000ULL,
                                                      1000000000000000000ULL};

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Scans "12", "1.5", ".5" at p (no sign, no exponent, no blanks; a dot must
 * be followed by a digit). Returns the end, or NULL when p holds no number. */
static const char *scan_decimal(const char *p, decimal *d)
{
    memset(d, 0, sizeof *d);
    int digits = 0;
    while (is_digit(*p)) {
        unsigned v = (unsigned)(*p - '0');
        if (d->ip > (UINT64_MAX - v) / 10)
            d->overflow = 1;
        else
            d->ip = d->ip * 10 + v;
        p++;
        digits++;
    }
    if (*p == '.') {
        if (!is_digit(p[1])) return NULL;
        d->has_dot = 1;
        p++;
        while (is_digit(*p)) {
            if (d->frac_digits < FRAC_DIGITS_MAX) {
                d->frac = d->frac * 10 + (uint64_t)(*p - '0');
                d->frac_digits++;
            }
            p++;
            digits++;
        }
    }
    return digits ? p : NULL;
}

static double decimal_value(const decimal *d)
{
    if (d->overflow) return INFINITY;
    return (double)d->ip + (double)d->frac / (double)g_pow10[d->frac_digits];
}

int vram_parse_size(const char *text, uint64_t *out)
{
    if (!text || !out) return VRAM_EINVAL;
    decimal d;
    const char *p = scan_decimal(text, &d);
    if (!p || d.overflow) return VRAM_EINVAL;
    unsigned shift = 0;
    switch (*p) {
    case 'k':
    case 'K': shift = 10; break;
    case 'm':
    case 'M': shift = 20; break;
    case 'g':
    case 'G': shift = 30; break;
    case 't':
    case 'T': shift = 40; break;
    default: break;
    }
    if (shift) p++;
    if (shift && (p[0] == 'i' || p[0] == 'I') && (p[1] == 'b' || p[1] == 'B'))
        p += 2;
    else if (*p == 'b' || *p == 'B')
        p++;
    if (*p != '\0') return VRAM_EINVAL;
    if (d.has_dot && shift == 0) return VRAM_EINVAL; /* no fractional bytes */
    const uint64_t max = (uint64_t)INT64_MAX;
    if (d.ip > (max >> shift)) return VRAM_EINVAL;
    uint64_t bytes = d.ip << shift;
    if (d.frac_digits) {
#if defined(__SIZEOF_INT128__)
        unsigned __int128 f = ((unsigned __int128)d.frac << shift) / g_pow10[d.frac_digits];
        uint64_t fb = (uint64_t)f;
#else
        uint64_t fb = (uint64_t)((long double)d.frac / (long double)g_pow10[d.frac_digits] *
                                 (long double)(1ULL << shift));
#endif
        if (fb > max - bytes) return VRAM_EINVAL;
        bytes += fb;
    }
    *out = bytes;
    return VRAM_OK;
}

/* Writes a double without exponent or trailing zeros: "600", "1.5". */
static void format_decimal(double v, char *buf, size_t len)
{
    snprintf(buf, len, "%.9f", v);
    char *dot = strchr(buf, '.');
    if (!dot) return;
    char *end = buf + strlen(buf);
    while (end > dot + 1 && end[-1] == '0')
        end--;
    if (end == dot + 1) end = dot;
    *end = '\0';
}

static void format_bytes(uint64_t v, char *buf, size_t len)
{
    static const char units[] = "TGMK";
    for (int i = 0; i < 4 && v; i++) {
        unsigned shift = (unsigned)(40 - 10 * i);
        if ((v & ((1ULL << shift) - 1)) == 0) {
            snprintf(buf, len, "%llu%c", (unsigned long long)(v >> shift), units[i]);
            return;
        }
    }
    snprintf(buf, len, "%llu", (unsigned long long)v);
}

/* ---- seconds ---- */

static int parse_seconds(const option *o, const char *text, const char *shown, optval *v, char *msg,
                         size_t len)
{
    decimal d;
    const char *p = scan_decimal(text, &d);
    double mult = 1.0;
    if (p) {
        switch (*p) {
        case 's': p++; break;
        case 'm':
            mult = 60.0;
            p++;
            break;
        case 'h':
            mult = 3600.0;
            p++;
            break;
        default: break;
        }
    }
    if (!p || *p != '\0') {
        snprintf(msg, len, "%s is %s (use seconds >= 0, e.g. 600, 90s, 10m or 1h)", shown,
                 text[0] == '-' ? "negative" : "not a duration");
        return -1;
    }
    double s = decimal_value(&d) * mult;
    const char *why = vram__seconds_problem(s);
    if (why) {
        snprintf(msg, len, "%s %s", shown, why);
        return -1;
    }
    v->d = s;
    return 0;
}

static void format_seconds(const option *o, const void *field, char *buf, size_t len)
{
    double d;
    memcpy(&d, field, sizeof d);
    format_decimal(d, buf, len);
}

/* ---- sizes ---- */

static void size_range_text(const option *o, char *buf, size_t len)
{
    char lo[32], hi[32];
    format_bytes(o->lo, lo, sizeof lo);
    format_bytes(o->hi, hi, sizeof hi);
    if (o->hi)
        snprintf(buf, len, "use %s to %s", lo, hi);
    else
        snprintf(buf, len, "use at least %s", lo);
}

static int parse_size(const option *o, const char *text, const char *shown, optval *v, char *msg,
                      size_t len)
{
    uint64_t b = 0;
    if (vram_parse_size(text, &b) < 0) {
        snprintf(msg, len, "%s is %s (use bytes with K/M/G/T, e.g. 64M or 1G)", shown,
                 text[0] == '-' ? "negative" : "not a size");
        return -1;
    }
    if (b < o->lo || (o->hi && b > o->hi)) {
        char range[96];
        size_range_text(o, range, sizeof range);
        snprintf(msg, len, "%s is out of range (%s)", shown, range);
        return -1;
    }
    v->u = b;
    return 0;
}

static void format_size(const option *o, const void *field, char *buf, size_t len)
{
    uint64_t u;
    memcpy(&u, field, sizeof u);
    format_bytes(u, buf, len);
}

/* ---- sizes or percentages ---- */

static int parse_spec(const option *o, const char *text, const char *shown, optval *v, char *msg,
                      size_t len)
{
    size_t n = strlen(text);
    if (n > 0 && text[n - 1] == '%') {
        decimal d;
        const char *p = scan_decimal(text, &d);
        if (!p || p != text + n - 1) goto bad;
        double pct = decimal_value(&d);
        if (!(pct > 0.0 && pct <= 100.0)) {
            snprintf(msg, len, "%s is out of range (a percentage must be above 0 and at most 100)",
                     shown);
            return -1;
        }
        v->spec.bytes = 0;
        v->spec.percent = pct;
        return 0;
    }
    if (vram_parse_size(text, &v->spec.bytes) < 0) goto bad;
    v->spec.percent = 0.0;
    return 0;
bad:
    snprintf(msg, len, "%s is %s (use bytes with K/M/G/T, e.g. 8G, or a percentage, e.g. 80%%)",
             shown, text[0] == '-' ? "negative" : "not a size");
    return -1;
}

static void format_spec(const option *o, const void *field, char *buf, size_t len)
{
    vram_size_spec s;
    memcpy(&s, field, sizeof s);
    if (s.percent > 0.0) {
        char num[64];
        format_decimal(s.percent, num, sizeof num);
        snprintf(buf, len, "%s%%", num);
    } else {
        format_bytes(s.bytes, buf, len);
    }
}

/* ---- integers ---- */

static int parse_int(const option *o, const char *text, const char *shown, optval *v, char *msg,
                     size_t len)
{
    decimal d;
    const char *p = scan_decimal(text, &d);
    const char *what =
        o->desc.metavar && strcmp(o->desc.metavar, "PORT") == 0 ? "a port" : "a whole number";
    if (!p || *p != '\0' || d.has_dot) {
        snprintf(msg, len, "%s is not %s (use %llu to %llu)", shown, what,
                 (unsigned long long)o->lo, (unsigned long long)o->hi);
        return -1;
    }
    if (d.overflow || d.ip < o->lo || d.ip > o->hi) {
        snprintf(msg, len, "%s is out of range (use %llu to %llu)", shown,
                 (unsigned long long)o->lo, (unsigned long long)o->hi);
        return -1;
    }
    v->i = (int)d.ip;
    return 0;
}

static void format_int(const option *o, const void *field, char *buf, size_t len)
{
    int i;
    memcpy(&i, field, sizeof i);
    snprintf(buf, len, "%d", i);
}

/* ---- enumerations ---- */

static int parse_enum(const option *o, const char *text, const char *shown, optval *v, char *msg,
                      size_t len)
{
    for (int i = 0; o->choices[i]; i++) {
        if (strcasecmp(text, o->choices[i]) == 0) {
            v->i = i;
            return 0;
        }
    }
    snprintf(msg, len, "%s is not one of %s", shown, o->desc.metavar);
    return -1;
}

static void format_enum(const option *o, const void *field, char *buf, size_t len)
{
    int i;
    memcpy(&i, field, sizeof i);
    int n = 0;
    while (o->choices[n])
        n++;
    snprintf(buf, len, "%s", i >= 0 && i < n ? o->choices[i] : "?");
}

/* ---- strings ---- */

static int has_control(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f) return 1;
    return 0;
}

static int has_blank(const char *s)
{
    return strpbrk(s, " \t") != NULL;
}

static int parse_string(const option *o, const char *text, const char *shown, optval *v, char *msg,
                        size_t len)
{
    if ((o->flags & OPT_NONEMPTY) && text[0] == '\0') {
        snprintf(msg, len, "%s is empty (use e.g. %s)", shown, o->desc.def);
        return -1;
    }
    if (has_control(text) || ((o->flags & OPT_NOSPACE) && has_blank(text))) {
        if (o->flags & OPT_SECRET)
            snprintf(msg, len, "the value (not shown) contains %s",
                     (o->flags & OPT_NOSPACE) ? "blanks or control characters"
                                              : "control characters");
        else
            snprintf(msg, len, "%s contains %s", shown,
                     (o->flags & OPT_NOSPACE) ? "blanks or control characters"
                                              : "control characters");
        return -1;
    }
    snprintf(v->s, sizeof v->s, "%s", text);
    return 0;
}

/* A secret read from the file named by text: its first line, without the
 * line end and surrounding blanks (VRAM_TOKEN_FILE). */
static int parse_secret_file(const option *o, const char *text, const char *shown, optval *v,
                             char *msg, size_t len)
{
    (void)o;
    if (!text[0]) { /* the default: no file, no token */
        v->s[0] = '\0';
        return 0;
    }
    FILE *f = fopen(text, "r");
    if (!f) {
        snprintf(msg, len, "%s: %s", shown, strerror(errno));
        return -1;
    }
    char line[VRAM_STR_MAX + 2] = "";
    int got = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    size_t n = got ? strlen(line) : 0;
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' ||
                 line[n - 1] == '\t'))
        line[--n] = '\0';
    char *p = line;
    while (*p == ' ' || *p == '\t')
        p++;
    if (!*p || strlen(p) >= VRAM_STR_MAX || has_control(p) || has_blank(p)) {
        snprintf(msg, len, "%s: the file's first line must be the token (1 to %d characters "
                           "without blanks)", shown, VRAM_STR_MAX - 1);
        return -1;
    }
    memcpy(v->s, p, strlen(p) + 1); /* shorter than VRAM_STR_MAX: checked above */
    return 0;
}

static void format_string(const option *o, const void *field, char *buf, size_t len)
{
    char s[VRAM_STR_MAX];
    memcpy(s, field, sizeof s);
    s[sizeof s - 1] = '\0';
    snprintf(buf, len, "%s", s);
}

static int parse_url(const option *o, const char *text, const char *shown, optval *v, char *msg,
                     size_t len)
{
    size_t skip = strncasecmp(text, "http://", 7) == 0    ? 7
                  : strncasecmp(text, "https://", 8) == 0 ? 8
                                                          : 0;
    if (!skip || text[skip] == '\0' || text[skip] == '/' || has_blank(text) || has_control(text)) {
        snprintf(msg, len, "%s is not an http:// or https:// URL (use e.g. %s)", shown,
                 o->desc.def);
        return -1;
    }
    snprintf(v->s, sizeof v->s, "%s", text);
    return 0;
}

/* One entry of a device list: an index, or a GPU-/MIG- UUID (or its prefix). */
static int device_item_ok(const char *s, size_t n)
{
    if (n == 0) return 0;
    size_t i = 0;
    if (n > 4 && (strncmp(s, "GPU-", 4) == 0 || strncmp(s, "MIG-", 4) == 0)) {
        for (i = 4; i < n; i++)
            if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '/') return 0;
        return 1;
    }
    if (n > 6) return 0; /* indices are small */
    for (i = 0; i < n; i++)
        if (!is_digit(s[i])) return 0;
    return 1;
}

static int parse_devices(const option *o, const char *text, const char *shown, optval *v, char *msg,
                         size_t len)
{
    if (text[0] == '\0' || strcasecmp(text, "all") == 0) {
        v->s[0] = '\0';
        return 0;
    }
    if (strcasecmp(text, "none") == 0 || strcasecmp(text, "void") == 0 || strcmp(text, "-1") == 0) {
        snprintf(v->s, sizeof v->s, "none");
        return 0;
    }
    for (const char *p = text;;) {
        size_t n = strcspn(p, ",");
        if (!device_item_ok(p, n)) {
            snprintf(msg, len,
                     "%s is not a device list (use comma-separated indices or GPU-UUIDs, e.g. 0,1 "
                     "or GPU-5f1c...; all or empty for every device)",
                     shown);
            return -1;
        }
        p += n;
        if (*p == '\0') break;
        p++;
    }
    snprintf(v->s, sizeof v->s, "%s", text);
    return 0;
}

static const opt_type t_seconds = {parse_seconds, format_seconds};
static const opt_type t_size = {parse_size, format_size};
static const opt_type t_spec = {parse_spec, format_spec};
static const opt_type t_int = {parse_int, format_int};
static const opt_type t_enum = {parse_enum, format_enum};
static const opt_type t_string = {parse_string, format_string};
static const opt_type t_url = {parse_url, format_string};
static const opt_type t_devices = {parse_devices, format_string};
static const opt_type t_secret_file = {parse_secret_file, format_string};

/* ------------------------------------------------------------------------ */
/* The table                                                                 */
/* ------------------------------------------------------------------------ */

_Static_assert(sizeof(vram_backend_kind) == sizeof(int), "enum fields are stored as int");
_Static_assert(sizeof(vram_log_level) == sizeof(int), "enum fields are stored as int");

static const char *const g_backend_names[] = {"auto", "host", "cuda", NULL};
static const char *const g_level_names[] = {"error", "warn", "info", "debug", NULL};

#define FIELD(f) .offset = offsetof(vram_config, f), .size = sizeof(((vram_config *)0)->f)
#define KIB(n) ((uint64_t)(n) << 10)
#define GIB(n) ((uint64_t)(n) << 30)

static const option g_options[] = {
    {{"VRAM_BACKEND", NULL, "--backend", "auto|host|cuda", "auto",
      "device backend: auto (cuda when a driver and a device exist, else host), host or cuda"},
     &t_enum,
     FIELD(backend),
     .choices = g_backend_names},
    {{"GPU_IDLE_TIMEOUT", "VRAM_IDLE_TIMEOUT", "--idle-timeout", "SECONDS", "600",
      "seconds a model may sit idle on the device before it is offloaded; 0 = never"},
     &t_seconds,
     FIELD(idle_timeout)},
    {{"VRAM_RELEASE_TIMEOUT", NULL, "--release-timeout", "SECONDS", "0",
      "seconds an offloaded model may wait before its host copy is released; 0 = never"},
     &t_seconds,
     FIELD(release_timeout)},
    {{"VRAM_GPU_BUDGET", NULL, "--gpu-budget", "SIZE|PCT", "100%",
      "device memory models may use on each device: bytes (K/M/G/T) or a percentage; 0 = all"},
     &t_spec,
     FIELD(gpu_budget)},
    {{"VRAM_HOST_BUDGET", NULL, "--host-budget", "SIZE|PCT", "0",
      "host memory for offloaded copies: bytes (K/M/G/T) or a percentage; 0 = unlimited"},
     &t_spec,
     FIELD(host_budget)},
    {{"VRAM_HOST_MEMORY", NULL, "--host-memory", "SIZE", "1G",
      "emulated capacity of each host-backend device (at least 2M, in 2M granules)"},
     &t_size,
     FIELD(host_memory),
     .lo = KIB(2048),
     .hi = 0},
    {{"VRAM_HOST_DEVICES", NULL, "--host-devices", "N", "1",
      "number of emulated host-backend devices (1-16)"},
     &t_int,
     FIELD(host_devices),
     .lo = 1,
     .hi = 16},
    {{"VRAM_EVICT_WAIT", NULL, "--evict-wait", "SECONDS", "30",
      "seconds an acquire waits for device memory before it fails with ENOMEM"},
     &t_seconds,
     FIELD(evict_wait)},
    {{"VRAM_LOG_LEVEL", NULL, "--log-level", "error|warn|info|debug", "info", "log verbosity"},
     &t_enum,
     FIELD(log_level),
     .choices = g_level_names},
    {{"VRAM_CHUNK", NULL, "--chunk", "SIZE", "64M",
      "transfer chunk of offload and restore copies (64K-1G)"},
     &t_size,
     FIELD(chunk_bytes),
     .lo = KIB(64),
     .hi = GIB(1)},
    {{"CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "--visible-devices", "LIST", "",
      "devices to use: comma-separated indices or GPU-UUIDs; empty or all = every device"},
     &t_devices,
     FIELD(visible_devices)},
    {{"VRAM_CUDA_LIBRARY", NULL, "--cuda-library", "PATH", "libcuda.so.1",
      "CUDA driver library to load"},
     &t_string,
     FIELD(cuda_library),
     .flags = OPT_NONEMPTY},
    {{"VRAM_PORT", NULL, "--port", "PORT", "7861",
      "TCP port of the daemon's HTTP API (0: any free port, printed at start)"},
     &t_int,
     FIELD(port),
     .lo = 0,
     .hi = 65535},
    {{"VRAM_BIND", NULL, "--bind", "ADDR", "127.0.0.1", "address the daemon listens on"},
     &t_string,
     FIELD(bind),
     .flags = OPT_NONEMPTY | OPT_NOSPACE},
    {{"VRAM_TOKEN", NULL, "--token", "TOKEN", "",
      "bearer token for state-changing HTTP and /mcp requests; empty = no auth"},
     &t_string,
     FIELD(token),
     .flags = OPT_NOSPACE | OPT_SECRET},
    {{"VRAM_TOKEN_FILE", NULL, "--token-file", "PATH", "",
      "read the token from PATH's first line (recommended: --token is visible to every user "
      "in /proc/PID/cmdline; or use VRAM_TOKEN)"},
     &t_secret_file,
     FIELD(token),
     .flags = OPT_SECRET},
    {{"VRAM_ALLOWED_HOSTS", NULL, "--allowed-hosts", "LIST", "",
      "Host names accepted besides loopback and the bind address (comma-separated); with "
      "--bind 0.0.0.0 or :: this machine's addresses and host name are accepted too"},
     &t_string,
     FIELD(allowed_hosts)},
    {{"VRAM_NODE_SOCKET", NULL, "--node-socket", "PATH|off", "/run/vram/node.sock",
      "the node socket: vramd listens there, every other manager joins it when it exists "
      "(one view of the node, eviction across processes); off = neither"},
     &t_string,
     FIELD(node_socket),
     .flags = OPT_NONEMPTY | OPT_NOSPACE},
    {{"VRAM_NODE_NAME", NULL, "--node-name", "NAME", "",
      "name of this process in the node's view (default: the program's name)"},
     &t_string,
     FIELD(node_name),
     .flags = OPT_NOSPACE},
    {{"VRAM_HOST_SHARED", NULL, "--host-shared", "NAME", "",
      "host backend: share the emulated devices with every process that names them (a "
      "stand-in for one GPU shared by several processes); empty = this process's own"},
     &t_string,
     FIELD(host_shared),
     .flags = OPT_NOSPACE},
    {{"VRAM_URL", NULL, "--url", "URL", "http://127.0.0.1:7861", "daemon URL the CLI talks to"},
     &t_url,
     FIELD(url)},
};

#define NOPT (sizeof g_options / sizeof g_options[0])

size_t vram__config_option_count(void)
{
    return NOPT;
}

const vram__option_desc *vram__config_option(size_t i)
{
    return i < NOPT ? &g_options[i].desc : NULL;
}

/* The option named name (or its alias); *alias set to 1 when it was the alias. */
static const option *find_option(const char *name, int *alias)
{
    if (!name) return NULL;
    for (size_t i = 0; i < NOPT; i++) {
        if (strcmp(g_options[i].desc.name, name) == 0) {
            if (alias) *alias = 0;
            return &g_options[i];
        }
        if (g_options[i].desc.alias && strcmp(g_options[i].desc.alias, name) == 0) {
            if (alias) *alias = 1;
            return &g_options[i];
        }
    }
    return NULL;
}

static const option *find_flag(const char *flag, size_t n)
{
    for (size_t i = 0; i < NOPT; i++)
        if (strlen(g_options[i].desc.flag) == n && strncmp(g_options[i].desc.flag, flag, n) == 0)
            return &g_options[i];
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Errors and setting one option                                             */
/* ------------------------------------------------------------------------ */

/* Writes the message into err (when given) and the thread's error detail. */
#define config_error(err, errlen, ...) vram__errorf_to((err), (errlen), VRAM_ECONFIG, __VA_ARGS__)

/* Quotes a value for a message: '12X', escaping odd bytes, cut after 64. */
static void quote_value(const char *s, char *buf, size_t len)
{
    size_t n = 0, shown = 0;
    const size_t cut = 64;
    if (len < 16) {
        if (len) buf[0] = '\0';
        return;
    }
    buf[n++] = '\'';
    for (; *s && n + 8 < len; s++) {
        if (shown == cut) {
            memcpy(buf + n, "...", 3);
            n += 3;
            break;
        }
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f || c == '\\' || c == '\'')
            n += (size_t)snprintf(buf + n, len - n, "\\x%02x", c);
        else
            buf[n++] = (char)c;
        shown++;
    }
    buf[n++] = '\'';
    buf[n] = '\0';
}

static int is_blank_char(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

/* Parses value for option o and stores it in cfg; on failure writes
 * "PREFIX NAME: why" and leaves cfg alone. label names the option as the
 * caller wrote it (variable, alias or flag). */
static int apply_option(const option *o, vram_config *cfg, const char *prefix, const char *label,
                        const char *value, char *err, size_t errlen)
{
    if (!value) return config_error(err, errlen, "%s%s: no value given", prefix, label);
    const char *start = value;
    const char *end = value + strlen(value);
    while (start < end && is_blank_char(*start))
        start++;
    while (end > start && is_blank_char(end[-1]))
        end--;
    size_t n = (size_t)(end - start);
    if (n >= VRAM_STR_MAX)
        return config_error(err, errlen, "%s%s: value is too long (%zu bytes, at most %d)", prefix,
                            label, n, VRAM_STR_MAX - 1);
    char text[VRAM_STR_MAX];
    memcpy(text, start, n);
    text[n] = '\0';
    char shown[96];
    if (o->flags & OPT_SECRET)
        snprintf(shown, sizeof shown, "the value (not shown)");
    else
        quote_value(value, shown, sizeof shown);
    optval v;
    memset(&v, 0, sizeof v);
    char msg[384];
    if (o->type->parse(o, text, shown, &v, msg, sizeof msg) < 0)
        return config_error(err, errlen, "%s%s: %s", prefix, label, msg);
    memcpy((char *)cfg + o->offset, &v, o->size);
    return VRAM_OK;
}

static void format_option(const option *o, const vram_config *cfg, int reveal, char *buf,
                          size_t len)
{
    if ((o->flags & OPT_SECRET) && !reveal) {
        const char *s = (const char *)cfg + o->offset;
        snprintf(buf, len, "%s", s[0] ? "(set)" : "");
        return;
    }
    o->type->format(o, (const char *)cfg + o->offset, buf, len);
}

/* ------------------------------------------------------------------------ */
/* Where values came from: a small side table keyed by config address.       */
/* ------------------------------------------------------------------------ */

enum { SRC_NONE = 0, SRC_DEFAULT, SRC_SET, SRC_FLAG, SRC_ENV, SRC_DOTENV };
#define SRC_ALIAS 0x80u
#define SRC_KIND(s) ((s)&0x7fu)
#define TRACK_SLOTS 16

static const char *const g_src_names[] = {"default", "default", "set", "flag", "env", ".env"};

static struct track {
    const vram_config *cfg;
    unsigned char src[NOPT];
    uint64_t hash[NOPT]; /* of the value's text when its source was recorded */
} g_track[TRACK_SLOTS];
static unsigned g_track_next;
static pthread_mutex_t g_track_lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t value_hash(const option *o, const vram_config *cfg)
{
    char buf[VRAM_STR_MAX + 64];
    format_option(o, cfg, 1, buf, sizeof buf);
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const char *p = buf; *p; p++)
        h = (h ^ (unsigned char)*p) * 0x100000001b3ULL;
    return h;
}

static struct track *track_find(const vram_config *cfg)
{
    for (int i = 0; i < TRACK_SLOTS; i++)
        if (g_track[i].cfg == cfg) return &g_track[i];
    return NULL;
}

static void track_forget(const vram_config *cfg)
{
    pthread_mutex_lock(&g_track_lock);
    struct track *t = track_find(cfg);
    if (t) memset(t, 0, sizeof *t);
    pthread_mutex_unlock(&g_track_lock);
}

static void track_record(const vram_config *cfg, const option *o, unsigned src)
{
    size_t i = (size_t)(o - g_options);
    uint64_t h = value_hash(o, cfg);
    pthread_mutex_lock(&g_track_lock);
    struct track *t = track_find(cfg);
    if (!t) {
        t = &g_track[g_track_next++ % TRACK_SLOTS];
        memset(t, 0, sizeof *t);
        t->cfg = cfg;
    }
    t->src[i] = (unsigned char)src;
    t->hash[i] = h;
    pthread_mutex_unlock(&g_track_lock);
}

static void config_defaults(vram_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < NOPT; i++) {
        int rc = apply_option(&g_options[i], cfg, "", g_options[i].desc.name, g_options[i].desc.def,
                              NULL, 0);
        (void)rc; /* the defaults are checked by the tests */
    }
}

/* The recorded source of o's value in cfg (when tracked), or default/set by
 * comparison with the default. */
static unsigned option_source(const vram_config *cfg, const option *o, int tracked)
{
    size_t i = (size_t)(o - g_options);
    uint64_t h = value_hash(o, cfg);
    unsigned src = SRC_NONE;
    if (tracked) {
        pthread_mutex_lock(&g_track_lock);
        struct track *t = track_find(cfg);
        if (t && t->src[i] != SRC_NONE && t->hash[i] == h) src = t->src[i];
        pthread_mutex_unlock(&g_track_lock);
    }
    if (src != SRC_NONE) return src;
    vram_config def;
    config_defaults(&def);
    return value_hash(o, &def) == h ? SRC_DEFAULT : SRC_SET;
}

const char *vram__config_source(const vram_config *cfg, const char *name, const char **via)
{
    const option *o = find_option(name, NULL);
    if (!o || !cfg) return NULL;
    unsigned src = option_source(cfg, o, 1);
    if (via) *via = (src & SRC_ALIAS) ? o->desc.alias : o->desc.name;
    return g_src_names[SRC_KIND(src)];
}

int vram__config_format(const vram_config *cfg, const char *name, char *buf, size_t len)
{
    const option *o = find_option(name, NULL);
    if (!o || !cfg || !buf || !len) return VRAM_ECONFIG;
    format_option(o, cfg, 0, buf, len);
    return VRAM_OK;
}

/* ------------------------------------------------------------------------ */
/* Public setters                                                            */
/* ------------------------------------------------------------------------ */

void vram_config_init(vram_config *cfg)
{
    if (!cfg) return;
    config_defaults(cfg);
    track_forget(cfg);
}

int vram_config_set(vram_config *cfg, const char *name, const char *value, char *err, size_t errlen)
{
    if (!cfg) {
        config_error(err, errlen, "no configuration given");
        return VRAM_EINVAL;
    }
    const option *o = find_option(name, NULL);
    if (!o) return config_error(err, errlen, "unknown option '%s'", name ? name : "(null)");
    int rc = apply_option(o, cfg, "", name, value, err, errlen);
    if (rc == VRAM_OK) track_record(cfg, o, SRC_SET);
    return rc;
}

int vram__config_set_flag(vram_config *cfg, const char *flag, const char *value, char *err,
                          size_t errlen)
{
    if (!cfg) {
        config_error(err, errlen, "no configuration given");
        return VRAM_EINVAL;
    }
    if (!flag) return config_error(err, errlen, "unknown option '(null)'");
    size_t n = strlen(flag);
    const char *eq = strchr(flag, '=');
    if (!value && eq) {
        n = (size_t)(eq - flag);
        value = eq + 1;
    }
    const option *o = find_flag(flag, n);
    if (!o) return config_error(err, errlen, "unknown option '%.*s'", (int)n, flag);
    char label[64];
    snprintf(label, sizeof label, "%s", o->desc.flag);
    int rc = apply_option(o, cfg, "", label, value, err, errlen);
    if (rc == VRAM_OK) track_record(cfg, o, SRC_FLAG);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* .env                                                                      */
/* ------------------------------------------------------------------------ */

/* The last value the .env file gave for an option's name [0] or alias [1]. */
typedef struct dotent {
    int line; /* 0: not in the file */
    size_t len;
    char val[VRAM_STR_MAX];
} dotent;

static int key_ok(const char *k, size_t n)
{
    if (n == 0 || is_digit(k[0])) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)k[i]) && k[i] != '_' && k[i] != '.' && k[i] != '-') return 0;
    return 1;
}

/* Parses one line (no line ending) in place and records the table's keys. */
/* Decodes the quoted value at *p (its opening quote) in place into val.
 * Returns 0, or a config error naming the file, line and key. */
static int dotenv_quoted(const char *path, int lineno, const char *key, char *p, char *val,
                         char *err, size_t errlen)
{
    char q = *p++;
    char *w = val; /* decode in place: the text only shrinks */
    while (*p && *p != q) {
        if (q == '"' && *p == '\\' && p[1]) {
            p++;
            switch (*p) {
            case 'n': *w++ = '\n'; break;
            case 't': *w++ = '\t'; break;
            case 'r': *w++ = '\r'; break;
            case '"': *w++ = '"'; break;
            case '\\': *w++ = '\\'; break;
            default:
                *w++ = '\\';
                *w++ = *p;
                break;
            }
            p++;
        } else {
            *w++ = *p++;
        }
    }
    if (*p != q)
        return config_error(err, errlen, "%s:%d: %s: unterminated %s-quoted value", path, lineno,
                            key, q == '"' ? "double" : "single");
    char *rest = p + 1;
    *w = '\0';
    while (*rest == ' ' || *rest == '\t')
        rest++;
    if (*rest != '\0' && *rest != '#')
        return config_error(err, errlen, "%s:%d: %s: unexpected text after the closing quote",
                            path, lineno, key);
    return 0;
}

/* An unquoted value: a '#' after a blank starts a comment; blanks around
 * it are dropped. Returns the value's start (in place). */
static char *dotenv_unquoted(char *val)
{
    for (char *c = val; *c; c++) {
        if (*c == '#' && c > val && (c[-1] == ' ' || c[-1] == '\t')) {
            *c = '\0';
            break;
        }
    }
    while (*val == ' ' || *val == '\t')
        val++;
    char *e = val + strlen(val);
    while (e > val && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    *e = '\0';
    return val;
}

static int dotenv_line(const char *path, int lineno, char *line, dotent (*ents)[2], char *err,
                       size_t errlen)
{
    char *p = line;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == '\0' || *p == '#') return 0;
    if (strncmp(p, "export", 6) == 0 && (p[6] == ' ' || p[6] == '\t')) {
        p += 6;
        while (*p == ' ' || *p == '\t')
            p++;
    }
    char *key = p;
    while (*p && *p != '=' && *p != ' ' && *p != '\t')
        p++;
    char *kend = p;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p != '=' && !strchr(p, '='))
        return config_error(err, errlen, "%s:%d: expected KEY=VALUE, found no '='", path, lineno);
    if (*p != '=' || !key_ok(key, (size_t)(kend - key))) {
        char shown[96];
        kend = strchr(key, '=');
        while (kend > key && (kend[-1] == ' ' || kend[-1] == '\t'))
            kend--;
        *kend = '\0';
        quote_value(key, shown, sizeof shown);
        return config_error(err, errlen, "%s:%d: %s is not a variable name", path, lineno, shown);
    }
    *kend = '\0';
    p++; /* past '=' */

    char *val = p;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == '"' || *p == '\'') {
        int rc = dotenv_quoted(path, lineno, key, p, val, err, errlen);
        if (rc < 0) return rc;
    } else {
        val = dotenv_unquoted(val);
    }

    int alias = 0;
    const option *o = find_option(key, &alias);
    if (!o) return 0; /* not ours: the seed's .env has other keys */
    dotent *d = &ents[o - g_options][alias];
    d->line = lineno;
    d->len = strlen(val);
    snprintf(d->val, sizeof d->val, "%s", val);
    return 0;
}

/* Reads path into ents. A missing file is no error. */
static int dotenv_read(const char *path, dotent (*ents)[2], char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT) return VRAM_OK;
        return config_error(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    }
    char line[VRAM_ENV_LINE_MAX + 2]; /* the line, a '\r' and the NUL */
    int rc = VRAM_OK;
    for (int lineno = 1;; lineno++) {
        size_t n = 0;
        int c, nul = 0;
        errno = 0;
        while ((c = getc(f)) != EOF && c != '\n') {
            if (n == VRAM_ENV_LINE_MAX + 1) break;
            if (c == '\0') nul = 1;
            line[n++] = (char)c;
        }
        if (c == EOF && ferror(f)) {
            rc = config_error(err, errlen, "%s: cannot read: %s", path,
                              strerror(errno ? errno : EIO));
            break;
        }
        int full = c != EOF && c != '\n'; /* stopped with the buffer full */
        if (!full && n > 0 && line[n - 1] == '\r') n--;
        if (full || n > VRAM_ENV_LINE_MAX) {
            rc = config_error(err, errlen, "%s:%d: line is longer than %d bytes", path, lineno,
                              VRAM_ENV_LINE_MAX);
            break;
        }
        if (c == EOF && n == 0) break;
        line[n] = '\0';
        if (nul) {
            rc = config_error(err, errlen, "%s:%d: line contains a NUL byte", path, lineno);
            break;
        }
        char *p = line;
        if (lineno == 1 && strncmp(p, "\xef\xbb\xbf", 3) == 0) p += 3; /* UTF-8 BOM */
        rc = dotenv_line(path, lineno, p, ents, err, errlen);
        if (rc != VRAM_OK || c == EOF) break;
    }
    fclose(f);
    return rc;
}

int vram_config_load(vram_config *cfg, const char *env_path, char *err, size_t errlen)
{
    if (!cfg) {
        config_error(err, errlen, "no configuration given");
        return VRAM_EINVAL;
    }
    const char *path = env_path ? env_path : "./.env";
    dotent ents[NOPT][2];
    memset(ents, 0, sizeof ents);
    int rc = path[0] ? dotenv_read(path, ents, err, errlen) : VRAM_OK;
    if (rc != VRAM_OK) return rc;

    vram_config tmp = *cfg;
    unsigned src[NOPT];
    for (size_t i = 0; i < NOPT; i++) {
        const option *o = &g_options[i];
        const char *names[2] = {o->desc.name, o->desc.alias};
        src[i] = SRC_NONE;
        for (int k = 0; k < 2 && src[i] == SRC_NONE; k++) {
            const char *v = names[k] ? getenv(names[k]) : NULL;
            if (!v) continue;
            rc = apply_option(o, &tmp, "", names[k], v, err, errlen);
            if (rc != VRAM_OK) return rc;
            src[i] = SRC_ENV | (k ? SRC_ALIAS : 0u);
        }
        for (int k = 0; k < 2 && src[i] == SRC_NONE; k++) {
            const dotent *d = &ents[i][k];
            if (!d->line) continue;
            char prefix[VRAM_STR_MAX + 32];
            snprintf(prefix, sizeof prefix, "%s:%d: ", path, d->line);
            if (d->len >= VRAM_STR_MAX)
                return config_error(err, errlen, "%s%s: value is too long (%zu bytes, at most %d)",
                                    prefix, names[k], d->len, VRAM_STR_MAX - 1);
            rc = apply_option(o, &tmp, prefix, names[k], d->val, err, errlen);
            if (rc != VRAM_OK) return rc;
            src[i] = SRC_DOTENV | (k ? SRC_ALIAS : 0u);
        }
    }
    *cfg = tmp;
    for (size_t i = 0; i < NOPT; i++)
        if (src[i] != SRC_NONE) track_record(cfg, &g_options[i], src[i]);
    return VRAM_OK;
}

/* ------------------------------------------------------------------------ */
/* Printing                                                                  */
/* ------------------------------------------------------------------------ */

#define PRINT_VALUE_MAX 40

void vram_options_print(const vram_config *cfg, void *file)
{
    FILE *f = file ? (FILE *)file : stdout;
    vram_config def;
    int tracked = cfg != NULL;
    if (!cfg) {
        config_defaults(&def);
        cfg = &def;
    }
    char values[NOPT][VRAM_STR_MAX + 64];
    char sources[NOPT][64];
    int wname = 0, wvalue = 0, wsrc = 0;
    for (size_t i = 0; i < NOPT; i++) {
        const option *o = &g_options[i];
        format_option(o, cfg, 0, values[i], sizeof values[i]);
        if (values[i][0] == '\0') snprintf(values[i], sizeof values[i], "\"\"");
        unsigned src = option_source(cfg, o, tracked);
        if (src & SRC_ALIAS)
            snprintf(sources[i], sizeof sources[i], "(%s: %s)", g_src_names[SRC_KIND(src)],
                     o->desc.alias);
        else
            snprintf(sources[i], sizeof sources[i], "(%s)", g_src_names[SRC_KIND(src)]);
        int l = (int)strlen(o->desc.name);
        if (l > wname) wname = l;
        l = (int)strlen(values[i]);
        if (l > wvalue) wvalue = l;
        l = (int)strlen(sources[i]);
        if (l > wsrc) wsrc = l;
    }
    if (wvalue > PRINT_VALUE_MAX) wvalue = PRINT_VALUE_MAX;
    for (size_t i = 0; i < NOPT; i++)
        fprintf(f, "%-*s  %-*s  %-*s  %s\n", wname, g_options[i].desc.name, wvalue, values[i], wsrc,
                sources[i], g_options[i].desc.help);
}

void vram__config_print_help(void *file)
{
    FILE *f = file ? (FILE *)file : stdout;
    int w = 0;
    for (size_t i = 0; i < NOPT; i++) {
        int l = (int)(strlen(g_options[i].desc.flag) + 1 + strlen(g_options[i].desc.metavar));
        if (l > w) w = l;
    }
    for (size_t i = 0; i < NOPT; i++) {
        const vram__option_desc *d = &g_options[i].desc;
        char head[128];
        snprintf(head, sizeof head, "%s %s", d->flag, d->metavar);
        fprintf(f, "  %-*s  %s%s%s, default %s%s%s: %s\n", w, head, d->name, d->alias ? " or " : "",
                d->alias ? d->alias : "", d->def[0] ? "" : "\"", d->def, d->def[0] ? "" : "\"",
                d->help);
    }
}
