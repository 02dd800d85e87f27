/* vramd.c - the vram daemon: a thin program over libvram-server (seed API, /api/v1, /metrics, MCP) with models from flags. */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <unistd.h>

#include "vram.h"
#include "vram_server.h"

#define EXIT_USAGE 2   /* bad flag, config file or value: nothing started */
#define EXIT_RUNTIME 1 /* could not start (port taken, no backend, a model that does not open) */
#define GRACE_SECONDS 5.0

typedef struct model_spec {
    char *text; /* as given, for messages */
    char *name;
    char *source;
    double idle_timeout, release_timeout;
    int immediate_offload, device;
} model_spec;

typedef struct settings {
    vram_config cfg;
    model_spec *models;
    size_t nmodels;
    char *gpu;
} settings;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: vramd [OPTIONS]\n"
            "\n"
            "The vram daemon: keeps models on the GPU only while they are used and serves\n"
            "the seed's HTTP API (GET /api/gpu/status, POST /api/gpu/offload|release|timeout),\n"
            "/api/v1, /metrics, /healthz and MCP (Streamable HTTP at /mcp; stdio through\n"
            "`vramctl mcp`).\n"
            "\n"
            "Daemon options:\n"
            "  --model "
            "NAME=SOURCE[,idle_timeout=S][,release_timeout=S][,immediate_offload=1][,device=N]\n"
            "                        serve a model (repeatable); SOURCE is synthetic:SIZE[:SEED],\n"
            "                        a .safetensors file, a model.safetensors.index.json or a\n"
            "                        directory; nothing is loaded before its first use\n"
            "  --config FILE         read options from FILE, one per line, written as flags\n"
            "                        without the dashes (`model Llasa-8B=synthetic:1G`,\n"
            "                        `port 7861`) or as variables (`GPU_IDLE_TIMEOUT=300`);\n"
            "                        '#' starts a comment; flags on the command line win\n"
            "  --gpu auto|N|UUID     pick the idlest GPU (auto, via NVML) or a given one; sets\n"
            "                        CUDA_VISIBLE_DEVICES before the backend starts\n"
            "  --show-config         print every option with its value and source, then exit\n"
            "  --help, --version\n"
            "\n"
            "Options of the configuration table (flag VALUE, then its variable and default).\n"
            "Each is read from the flag, else the environment, else ./.env:\n");
    vram_config_print_help(f);
    fprintf(f,
            "\n"
            "Give the token with --token-file FILE or VRAM_TOKEN: --token is visible to every\n"
            "user in /proc/PID/cmdline. With --bind 0.0.0.0 or ::, Host must name this machine\n"
            "(its addresses, its host name) or one of --allowed-hosts.\n"
            "\n"
            "Stop with SIGINT or SIGTERM: requests in flight finish (up to %.0f s; later ones\n"
            "get a 503 saying vramd is stopping), models are\n"
            "released and vramd exits 0. Exit codes: 0 stopped cleanly, 1 could not start\n"
            "(port taken, backend or model failure), 2 bad option or config file.\n",
            GRACE_SECONDS);
}

static void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void die(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("vramd: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(code);
}

/* ---- --model NAME=SOURCE[,key=value...] ---- */

static const char *const model_keys[] = {"idle_timeout", "release_timeout", "immediate_offload",
                                         "device", NULL};

/* When s (just after a comma) starts "key=", the key's length, else 0. */
static size_t option_key(const char *s)
{
    size_t n = 0;
    while (s[n] && (islower((unsigned char)s[n]) || s[n] == '_'))
        n++;
    return n && s[n] == '=' ? n : 0;
}

/* Seconds as the option table reads them (600, 90s, 10m, 1h), through a
 * scratch config: one parser and one limit for every surface. */
static int parse_seconds_text(const char *v, double *out, char *err, size_t errlen)
{
    vram_config tmp;
    vram_config_init(&tmp);
    if (vram_config_set(&tmp, "VRAM_RELEASE_TIMEOUT", v, err, errlen) < 0) return -1;
    *out = tmp.release_timeout;
    return 0;
}

/* The value of one NAME=SOURCE,key=value option into ms. */
static void model_option(model_spec *ms, const char *text, const char *k, size_t kl, const char *val)
{
    char err[512];
    if (strncmp(k, "idle_timeout", kl) == 0) {
        if (parse_seconds_text(val, &ms->idle_timeout, err, sizeof err) < 0)
            die(EXIT_USAGE, "--model '%s': idle_timeout: %s", text, err);
    } else if (strncmp(k, "release_timeout", kl) == 0) {
        if (parse_seconds_text(val, &ms->release_timeout, err, sizeof err) < 0)
            die(EXIT_USAGE, "--model '%s': release_timeout: %s", text, err);
    } else if (strncmp(k, "immediate_offload", kl) == 0) {
        if (!strcmp(val, "1") || !strcasecmp(val, "true") || !strcasecmp(val, "yes"))
            ms->immediate_offload = 1;
        else if (!strcmp(val, "0") || !strcasecmp(val, "false") || !strcasecmp(val, "no"))
            ms->immediate_offload = 0;
        else
            die(EXIT_USAGE, "--model '%s': immediate_offload '%s' is not 1 or 0", text, val);
    } else {
        char *end = NULL;
        long d = strtol(val, &end, 10);
        if (end == val || *end || d < 0 || d > 1023)
            die(EXIT_USAGE, "--model '%s': device '%s' is not a device index", text, val);
        ms->device = (int)d;
    }
}

static void parse_model(const char *text, model_spec *ms)
{
    memset(ms, 0, sizeof *ms);
    ms->idle_timeout = -1;
    ms->release_timeout = -1;
    ms->device = -1;
    ms->text = strdup(text);
    const char *eq = strchr(text, '=');
    if (!eq || eq == text || !eq[1])
        die(EXIT_USAGE, "--model '%s': expected NAME=SOURCE, e.g. --model Llasa-8B=synthetic:1G",
            text);
    ms->name = strndup(text, (size_t)(eq - text));
    const char *src = eq + 1;
    /* the source runs up to the first ",key=" */
    const char *p = src, *opts = NULL;
    for (; (p = strchr(p, ',')) != NULL; p++) {
        if (option_key(p + 1)) {
            opts = p;
            break;
        }
    }
    ms->source = opts ? strndup(src, (size_t)(opts - src)) : strdup(src);
    if (!ms->name || !ms->source || !ms->text) die(EXIT_RUNTIME, "out of memory");
    if (!ms->source[0]) die(EXIT_USAGE, "--model '%s': the source is empty", text);
    while (opts) {
        const char *k = opts + 1;
        size_t kl = option_key(k);
        if (!kl) die(EXIT_USAGE, "--model '%s': expected key=value after ','", text);
        const char *v = k + kl + 1;
        const char *next = strchr(v, ',');
        char val[128];
        size_t vl = next ? (size_t)(next - v) : strlen(v);
        if (vl >= sizeof val) die(EXIT_USAGE, "--model '%s': value too long", text);
        memcpy(val, v, vl);
        val[vl] = '\0';
        int known = 0;
        for (size_t i = 0; model_keys[i]; i++)
            if (strlen(model_keys[i]) == kl && strncmp(k, model_keys[i], kl) == 0) known = 1;
        if (!known)
            die(EXIT_USAGE,
                "--model '%s': unknown option '%.*s' (known: idle_timeout, release_timeout, "
                "immediate_offload, device)",
                text, (int)kl, k);
        model_option(ms, text, k, kl, val);
        opts = next;
    }
}

/* ---- flags and config file ---- */

static void add_model(settings *s, const char *text)
{
    model_spec *grown = realloc(s->models, (s->nmodels + 1) * sizeof *grown);
    if (!grown) die(EXIT_RUNTIME, "out of memory");
    s->models = grown;
    parse_model(text, &s->models[s->nmodels]);
    for (size_t i = 0; i < s->nmodels; i++)
        if (strcmp(s->models[i].name, s->models[s->nmodels].name) == 0)
            die(EXIT_USAGE, "--model: the name '%s' is given twice", s->models[i].name);
    s->nmodels++;
}

/* Applies one option: flag is "--name" (value NULL when it has none). */
static void apply(settings *s, const char *flag, const char *value, const char *where)
{
    char err[512];
    if (!strcmp(flag, "--model")) {
        if (!value) die(EXIT_USAGE, "%s--model needs NAME=SOURCE", where);
        add_model(s, value);
    } else if (!strcmp(flag, "--gpu")) {
        if (!value || !*value) die(EXIT_USAGE, "%s--gpu needs auto, an index or a GPU UUID", where);
        free(s->gpu);
        s->gpu = strdup(value); /* a config file's line buffer does not last */
        if (!s->gpu) die(EXIT_RUNTIME, "out of memory");
    } else {
        if (!value) die(EXIT_USAGE, "%s%s needs a value (see vramd --help)", where, flag);
        if (vram_config_set_flag(&s->cfg, flag, value, err, sizeof err) < 0)
            die(EXIT_USAGE, "%s%s", where, err);
    }
}

static int takes_no_value(const char *flag)
{
    return !strcmp(flag, "--help") || !strcmp(flag, "-h") || !strcmp(flag, "--version") ||
           !strcmp(flag, "--show-config");
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

static void read_config_file(settings *s, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) die(EXIT_USAGE, "--config %s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0;
    while (getline(&line, &cap, f) >= 0) {
        lineno++;
        char *l = trim(line);
        if (!*l || *l == '#') continue;
        char where[600];
        snprintf(where, sizeof where, "%s:%d: ", path, lineno);
        if (l[0] == '-' && l[1] == '-') l += 2;
        size_t n = 0;
        while (l[n] && (isalnum((unsigned char)l[n]) || l[n] == '_' || l[n] == '-'))
            n++;
        if (!n) die(EXIT_USAGE, "%sexpected an option name", where);
        char name[64];
        if (n >= sizeof name) die(EXIT_USAGE, "%soption name too long", where);
        memcpy(name, l, n);
        name[n] = '\0';
        char *v = l + n;
        while (*v == ' ' || *v == '\t')
            v++;
        if (*v == '=') v++;
        v = trim(v);
        int upper = 1;
        for (size_t i = 0; i < n; i++)
            if (islower((unsigned char)name[i]) || name[i] == '-') upper = 0;
        if (upper) { /* a variable: GPU_IDLE_TIMEOUT=300 */
            char err[512];
            if (vram_config_set(&s->cfg, name, v, err, sizeof err) < 0)
                die(EXIT_USAGE, "%s%s", where, err);
            continue;
        }
        if (!strcmp(name, "config"))
            die(EXIT_USAGE, "%sa config file cannot include another", where);
        char flag[80];
        snprintf(flag, sizeof flag, "--%s", name);
        apply(s, flag, *v ? v : NULL, where);
    }
    free(line);
    fclose(f);
}

static void parse_args(settings *s, int argc, char **argv)
{
    /* first pass: help, version, the config file */
    const char *config = NULL;
    int show = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(argv[i], "--version")) {
            printf("vramd %s\n", VRAM_VERSION);
            exit(0);
        }
        if (!strcmp(argv[i], "--show-config")) show = 1;
        if (!strcmp(argv[i], "--config")) {
            if (i + 1 >= argc) die(EXIT_USAGE, "--config needs a file");
            config = argv[++i];
        } else if (!strncmp(argv[i], "--config=", 9)) {
            config = argv[i] + 9;
        }
    }
    char err[512];
    /* environment and ./.env, then the config file, then the command line */
    if (vram_config_load(&s->cfg, NULL, err, sizeof err) < 0) die(EXIT_USAGE, "%s", err);
    if (config) read_config_file(s, config);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--config")) {
            i++;
            continue;
        }
        if (!strncmp(a, "--config=", 9) || takes_no_value(a)) continue;
        if (strncmp(a, "--", 2) != 0)
            die(EXIT_USAGE, "unexpected argument '%s' (options start with --; see vramd --help)",
                a);
        const char *eq = strchr(a, '=');
        char flag[80];
        const char *value;
        if (eq) {
            snprintf(flag, sizeof flag, "%.*s", (int)(eq - a), a);
            value = eq + 1;
        } else {
            snprintf(flag, sizeof flag, "%s", a);
            if (i + 1 >= argc) die(EXIT_USAGE, "%s needs a value (see vramd --help)", a);
            value = argv[++i];
        }
        apply(s, flag, value, "");
    }
    if (show) {
        vram_options_print(&s->cfg, stdout);
        exit(0);
    }
}

/* ---- GPU choice ---- */

static void choose_gpu(settings *s)
{
    if (!s->gpu) return;
    char err[512], chosen[128];
    if (!strcmp(s->gpu, "auto")) {
        char why[1024];
        int index = -1;
        if (vram_gpu_pick(chosen, sizeof chosen, &index, why, sizeof why) < 0) {
            vram_log(VRAM_LOG_WARN, "--gpu auto: %s; keeping the default devices", why);
            return;
        }
        vram_log(VRAM_LOG_INFO, "--gpu auto: picked GPU %d (%s): %s", index, chosen, why);
    } else {
        snprintf(chosen, sizeof chosen, "%s", s->gpu);
    }
    if (vram_config_set(&s->cfg, "CUDA_VISIBLE_DEVICES", chosen, err, sizeof err) < 0)
        die(EXIT_USAGE, "--gpu %s: %s", s->gpu, err);
    setenv("CUDA_VISIBLE_DEVICES", chosen, 1);
}

/* ---- main ---- */

static const char *url_host(const char *bind, char *buf, size_t len)
{
    if (strchr(bind, ':') && bind[0] != '[')
        snprintf(buf, len, "[%s]", bind);
    else
        snprintf(buf, len, "%s", bind);
    return buf;
}

/* Signals are handled by sigwait in the main thread only (an inherited
 * "ignore", as a shell gives background jobs, would make sigwait miss them). */
static void block_stop_signals(sigset_t *stop)
{
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    sigemptyset(stop);
    sigaddset(stop, SIGINT);
    sigaddset(stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, stop, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* Log lines of the start, held back until the port is ours: a daemon that
 * cannot start says so in one line, not after the backend's. */
static struct {
    char lines[16][1024];
    int n;
} g_held;

static void hold_line(vram_log_level level, const char *line, void *user)
{
    (void)user;
    if (level <= VRAM_LOG_WARN || g_held.n == 16) {
        fprintf(stderr, "%s\n", line);
        return;
    }
    snprintf(g_held.lines[g_held.n++], sizeof g_held.lines[0], "%s", line);
}

static void release_held(int print)
{
    vram_set_log_callback(NULL, NULL);
    for (int i = 0; print && i < g_held.n; i++)
        fprintf(stderr, "%s\n", g_held.lines[i]);
    g_held.n = 0;
}

/* The manager with every --model registered; exits on failure. */
static vram_manager *start_manager(settings *s)
{
    vram_manager *m = NULL;
    vram_set_error(VRAM_OK, "%s", "");
    int rc = vram_manager_create(&s->cfg, &m);
    if (rc < 0) {
        const char *d = vram_last_error();
        die(EXIT_RUNTIME, "cannot start the memory manager: %s%s%s", vram_strerror(rc),
            *d ? ": " : "", d);
    }
    for (size_t i = 0; i < s->nmodels; i++) {
        model_spec *ms = &s->models[i];
        vram_model_opts o;
        vram_model_opts_init(&o);
        o.source = ms->source;
        o.idle_timeout = ms->idle_timeout;
        o.release_timeout = ms->release_timeout;
        o.immediate_offload = ms->immediate_offload;
        o.device = ms->device;
        vram_set_error(VRAM_OK, "%s", "");
        rc = vram_manager_register(m, ms->name, &o, NULL);
        if (rc < 0) {
            const char *d = vram_last_error();
            vram_manager_destroy(m);
            die(EXIT_RUNTIME, "--model %s: %s%s%s", ms->text, vram_strerror(rc), *d ? ": " : "", d);
        }
    }
    return m;
}

static void log_started(const settings *s, vram_manager *m, vram_server *srv)
{
    char names[512] = "";
    size_t n = 0;
    for (size_t i = 0; i < s->nmodels && n < sizeof names; i++)
        n += (size_t)snprintf(names + n, sizeof names - n, "%s%s", i ? ", " : "",
                              s->models[i].name);
    char hostbuf[VRAM_STR_MAX + 4];
    vram_log(VRAM_LOG_INFO,
             "vramd %s listening on http://%s:%d (backend %s; %zu model%s%s%s; MCP at /mcp%s)",
             VRAM_VERSION, url_host(s->cfg.bind, hostbuf, sizeof hostbuf), vram_server_port(srv),
             vram_manager_backend(m), s->nmodels, s->nmodels == 1 ? "" : "s",
             s->nmodels ? ": " : "", names, s->cfg.token[0] ? "; token required" : "");
    const char *b = s->cfg.bind;
    if (!s->cfg.token[0] && strcmp(b, "127.0.0.1") != 0 && strcmp(b, "::1") != 0 &&
        strcmp(b, "localhost") != 0)
        vram_log(VRAM_LOG_WARN,
                 "listening on %s without a token: anyone who reaches this address can offload "
                 "and release models (set --token or VRAM_TOKEN)",
                 b);
    if (!s->nmodels)
        vram_log(VRAM_LOG_WARN,
                 "no models: give --model NAME=SOURCE, e.g. --model demo=synthetic:256M");
}

static void settings_free(settings *s)
{
    for (size_t i = 0; i < s->nmodels; i++) {
        free(s->models[i].text);
        free(s->models[i].name);
        free(s->models[i].source);
    }
    free(s->models);
    free(s->gpu);
}

/* Room for the server's connection cap (1000) and the models' files. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 4096 && rl.rlim_max > rl.rlim_cur) {
        rl.rlim_cur = rl.rlim_max < 4096 ? rl.rlim_max : 4096;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    settings s;
    memset(&s, 0, sizeof s);
    vram_config_init(&s.cfg);
    parse_args(&s, argc, argv);
    vram_set_log_level(s.cfg.log_level);
    choose_gpu(&s);
    sigset_t stop;
    block_stop_signals(&stop);
    raise_fd_limit();

    vram_set_log_callback(hold_line, NULL);
    vram_manager *m = start_manager(&s);
    vram_server_opts so;
    vram_server_opts_init(&so);
    so.bind = s.cfg.bind;
    so.port = s.cfg.port;
    so.token = s.cfg.token;
    so.allowed_hosts = s.cfg.allowed_hosts;
    vram_server *srv = NULL;
    if (vram_server_start(m, &so, &srv) < 0) {
        char why[600];
        snprintf(why, sizeof why, "%s", vram_last_error());
        vram_manager_destroy(m);
        release_held(0);
        die(EXIT_RUNTIME, "%s", why);
    }
    release_held(1);
    log_started(&s, m, srv);

    int sig = 0;
    while (sigwait(&stop, &sig) != 0) {
    }
    vram_log(VRAM_LOG_INFO, "vramd: %s received, stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
    int left = vram_server_stop(srv, GRACE_SECONDS);
    if (left > 0) {
        vram_log(VRAM_LOG_WARN,
                 "vramd: %d slow request%s still running after %.0f s; exiting without them", left,
                 left == 1 ? "" : "s", GRACE_SECONDS);
        fflush(stderr);
        _exit(0);
    }
    vram_manager_destroy(m);
    settings_free(&s);
    vram_log(VRAM_LOG_INFO, "vramd: stopped");
    return 0;
}
