/* vramd.c - the vram daemon: a thin program over libvram-server (seed API, /api/v1, /metrics, MCP) with models from flags. */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
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

typedef struct model_entry {
    char *text; /* as given, for messages */
    vram_model_spec spec;
} model_entry;

typedef struct settings {
    vram_config cfg;
    model_entry *models;
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
            "`vramctl mcp`), and a live dashboard at / for browsers.\n"
            "\n"
            "Daemon options:\n"
            "  --model "
            "NAME=SOURCE[,idle_timeout=S][,release_timeout=S][,immediate_offload=1][,device=N]\n"
            "                        serve a model (repeatable); SOURCE is synthetic:SIZE[:SEED],\n"
            "                        a .safetensors file, a model.safetensors.index.json or a\n"
            "                        directory; nothing is loaded before its first use.\n"
            "                        Seconds read as 600, 90s, 10m or 1h; immediate_offload\n"
            "                        as 1/0, true/false, yes/no. More models at run time:\n"
            "                        POST /api/v1/models, `vramctl register` (the same parser)\n"
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
            "SIGHUP rereads the environment, ./.env and the config file (the command line\n"
            "still wins): new models are registered, removed ones released and dropped,\n"
            "changed timeouts applied; a bad file changes nothing and the log says why.\n"
            "Port, bind, token, backend, devices and budgets change only with a restart.\n"
            "\n"
            "Give the token with --token-file FILE or VRAM_TOKEN: --token is visible to every\n"
            "user in /proc/PID/cmdline. With --bind 0.0.0.0 or ::, Host must name this machine\n"
            "(its addresses, its host name) or one of --allowed-hosts.\n"
            "\n"
            "Stop with SIGINT or SIGTERM: requests in flight finish (up to %.0f s; later ones\n"
            "get a 503 saying vramd is stopping), models are\n"
            "released and vramd exits 0. Exit codes: 0 stopped cleanly, 1 could not start\n"
            "(port taken, backend failure, a source that does not open), 2 bad option, model\n"
            "name or config file.\n",
            GRACE_SECONDS);
}

/* While a SIGHUP reload parses, a usage error returns to it (nothing is
 * changed) instead of exiting. */
static jmp_buf *g_reload;
static char g_reload_error[1024];

static void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void die(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (g_reload && code == EXIT_USAGE) {
        vsnprintf(g_reload_error, sizeof g_reload_error, fmt, ap);
        va_end(ap);
        longjmp(*g_reload, 1);
    }
    fputs("vramd: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(code);
}

/* ---- flags and config file ---- */

/* --model NAME=SOURCE[,key=value...], through libvram-server's parser (the
 * one POST /api/v1/models uses). */
static void add_model(settings *s, const char *text, const char *where)
{
    model_entry *grown = realloc(s->models, (s->nmodels + 1) * sizeof *grown);
    if (!grown) die(EXIT_RUNTIME, "out of memory");
    s->models = grown;
    model_entry *e = &s->models[s->nmodels];
    char err[600];
    if (vram_model_spec_parse(&e->spec, text, err, sizeof err) < 0)
        die(EXIT_USAGE, "%s--model '%s': %s", where, text, err);
    for (size_t i = 0; i < s->nmodels; i++)
        if (strcmp(s->models[i].spec.name, e->spec.name) == 0)
            die(EXIT_USAGE, "%s--model: the name '%s' is given twice", where, e->spec.name);
    e->text = strdup(text);
    if (!e->text) die(EXIT_RUNTIME, "out of memory");
    s->nmodels++;
}

/* Applies one option: flag is "--name" (value NULL when it has none). */
static void apply(settings *s, const char *flag, const char *value, const char *where)
{
    char err[512];
    if (!strcmp(flag, "--model")) {
        if (!value) die(EXIT_USAGE, "%s--model needs NAME=SOURCE", where);
        add_model(s, value, where);
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

/* A flag of vramd's own or of the option table. */
static int known_flag(const char *flag)
{
    return !strcmp(flag, "--model") || !strcmp(flag, "--gpu") || !strcmp(flag, "--config") ||
           vram_config_has_flag(flag);
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

/* The config file being read and its line buffer, for a reload that a bad
 * line ends with a longjmp (see die) to close and free. */
static struct {
    FILE *f;
    char *line;
} g_reading;

static void reading_done(void)
{
    if (g_reading.f) fclose(g_reading.f);
    free(g_reading.line);
    memset(&g_reading, 0, sizeof g_reading);
}

static void read_config_file(settings *s, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) die(EXIT_USAGE, "--config %s: %s", path, strerror(errno));
    g_reading.f = f;
    size_t cap = 0;
    int lineno = 0;
    while (getline(&g_reading.line, &cap, f) >= 0) {
        char *line = g_reading.line;
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
    reading_done();
}

/* A variable of ./.env that looks like ours but is none (a typo) is
 * ignored by the configuration, as the seed's other keys are: say so. */
static void warn_env_file(void)
{
    char text[2048];
    if (vram_config_env_warnings(NULL, text, sizeof text) <= 0) return;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
        vram_log(VRAM_LOG_WARN, "%s", line);
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
    warn_env_file();
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
            if (!known_flag(flag))
                die(EXIT_USAGE, "unknown option '%s' (see vramd --help)", a);
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
    signal(SIGHUP, SIG_DFL);
    sigemptyset(stop);
    sigaddset(stop, SIGINT);
    sigaddset(stop, SIGTERM);
    sigaddset(stop, SIGHUP); /* reload */
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

/* The node socket (VRAM_NODE_SOCKET), unless it is off. A vramd that
 * cannot listen there runs without it (its manager then joins the vramd
 * that does, if one listens). */
static vram_node *start_node(const settings *s)
{
    if (strcmp(s->cfg.node_socket, "off") == 0) return NULL;
    vram_node *n = NULL;
    vram_set_error(VRAM_OK, "%s", "");
    if (vram_node_start(s->cfg.node_socket, &n) < 0)
        vram_log(VRAM_LOG_WARN, "%s; running without a node socket (--node-socket PATH or off)",
                 vram_last_error());
    return n;
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
        model_entry *e = &s->models[i];
        vram_set_error(VRAM_OK, "%s", "");
        rc = vram_server_register(m, &e->spec);
        if (rc < 0) {
            const char *d = vram_last_error();
            vram_manager_destroy(m);
            /* a bad name or value is an option error; a source that does not open is not */
            die(rc == VRAM_EINVAL ? EXIT_USAGE : EXIT_RUNTIME, "--model %s: %s%s%s", e->text,
                vram_strerror(rc), *d ? ": " : "", d);
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
                              s->models[i].spec.name);
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

/* ---- SIGHUP: the config file and .env again ---- */

static const model_entry *find_entry(const settings *s, const char *name)
{
    for (size_t i = 0; i < s->nmodels; i++)
        if (!strcmp(s->models[i].spec.name, name)) return &s->models[i];
    return NULL;
}

/* Options that only a restart applies, when they changed. */
static void warn_restart_only(const vram_config *a, const vram_config *b)
{
    if (a->port != b->port || strcmp(a->bind, b->bind) || strcmp(a->token, b->token) ||
        a->backend != b->backend || strcmp(a->visible_devices, b->visible_devices) ||
        memcmp(&a->gpu_budget, &b->gpu_budget, sizeof a->gpu_budget) ||
        memcmp(&a->host_budget, &b->host_budget, sizeof a->host_budget) ||
        a->host_memory != b->host_memory || a->host_devices != b->host_devices)
        vram_log(VRAM_LOG_WARN, "reload: port, bind, token, backend, devices and budgets change "
                                "only with a restart; they keep their values");
}

/* Makes the manager agree with next; cur (what was applied) becomes next. */
static void apply_settings(settings *cur, settings *next, vram_manager *m)
{
    warn_restart_only(&cur->cfg, &next->cfg);
    if (next->cfg.idle_timeout != cur->cfg.idle_timeout)
        vram_manager_set_idle_timeout(m, next->cfg.idle_timeout);
    if (next->cfg.release_timeout != cur->cfg.release_timeout)
        vram_manager_set_release_timeout(m, next->cfg.release_timeout);
    vram_set_log_level(next->cfg.log_level);
    for (size_t i = 0; i < next->nmodels; i++) {
        const char *what = NULL;
        vram_set_error(VRAM_OK, "%s", "");
        if (vram_server_apply(m, &next->models[i].spec, &what) < 0)
            vram_log(VRAM_LOG_WARN, "reload: model %s: %s", next->models[i].spec.name,
                     vram_last_error());
        else if (strcmp(what, "unchanged") != 0)
            vram_log(VRAM_LOG_INFO, "reload: model %s %s", next->models[i].spec.name, what);
    }
    for (size_t i = 0; i < cur->nmodels; i++) {
        const char *name = cur->models[i].spec.name;
        if (find_entry(next, name)) continue;
        vram_set_error(VRAM_OK, "%s", "");
        if (vram_server_unregister(m, name) < 0)
            vram_log(VRAM_LOG_WARN, "reload: model %s is no longer configured but stays: %s", name,
                     vram_last_error());
        else
            vram_log(VRAM_LOG_INFO, "reload: model %s released and removed", name);
    }
}

static void settings_free(settings *s);

/* Rereads everything as at start; a bad file or value changes nothing. */
static void reload(settings *cur, int argc, char **argv, vram_manager *m)
{
    settings *next = calloc(1, sizeof *next);
    if (!next) return;
    vram_config_init(&next->cfg);
    jmp_buf jb;
    g_reload = &jb;
    if (setjmp(jb)) {
        g_reload = NULL;
        reading_done();
        vram_log(VRAM_LOG_WARN, "reload: %s; nothing changed", g_reload_error);
        settings_free(next);
        free(next);
        return;
    }
    parse_args(next, argc, argv);
    g_reload = NULL;
    if (next->gpu) /* --gpu chose the devices at start; it is not chosen again */
        memcpy(next->cfg.visible_devices, cur->cfg.visible_devices, sizeof next->cfg.visible_devices);
    vram_log(VRAM_LOG_INFO, "reload: configuration read (%zu model%s)", next->nmodels,
             next->nmodels == 1 ? "" : "s");
    apply_settings(cur, next, m);
    settings_free(cur);
    *cur = *next;
    free(next);
}

static void settings_free(settings *s)
{
    for (size_t i = 0; i < s->nmodels; i++) {
        free(s->models[i].text);
    }
    free(s->models);
    free(s->gpu);
    memset(s, 0, sizeof *s);
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
    vram_node *node = start_node(&s);
    vram_manager *m = start_manager(&s); /* joins the node like any other manager */
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
        vram_node_stop(node);
        release_held(0);
        die(EXIT_RUNTIME, "%s", why);
    }
    release_held(1);
    log_started(&s, m, srv);

    int sig = 0;
    for (;;) {
        if (sigwait(&stop, &sig) != 0) continue;
        if (sig != SIGHUP) break;
        vram_log(VRAM_LOG_INFO, "vramd: SIGHUP received, reloading the configuration");
        reload(&s, argc, argv, m);
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
    vram_node_stop(node);
    settings_free(&s);
    vram_log(VRAM_LOG_INFO, "vramd: stopped");
    return 0;
}
