/* main.c - vramctl, the vram CLI over vramd's HTTP API: options, the command table, usage. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "vram.h"
#include "vramctl.h"

static int cmd_help(int argc, char **argv);

/* The commands; usage() lists those with a synopsis, in this order. */
typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    int local;            /* needs neither vramd nor the configuration */
    const char *synopsis; /* "status [MODEL]"; NULL: not listed */
    const char *help[2];  /* one or two lines */
} command;

/* clang-format off */
static const command commands[] = {
    {"status", cmd_status, 0, "status [MODEL]",
     {"models: location, state, size, idle time, timeout, leases; with other",
      "processes on the node, theirs too (as NAME@PID) with OWNER and PID"}},
    {"ps", cmd_status, 0, "ps [MODEL]",
     {"the same as status (for `ollama ps` habits)"}},
    {"node", cmd_node, 0, "node",
     {"the processes sharing the GPU through vramd's node socket, and the",
      "recent node evictions"}},
    {"offload", cmd_offload, 0, "offload [MODEL]",
     {"move every model of vramd (or one) from the GPU to CPU memory;",
      "MODEL NAME@PID: another process's model, offloaded by its owner"}},
    {"unload", cmd_offload, 0, "unload [MODEL]",
     {"the same as offload (for `ollama stop` habits): frees the GPU, keeps a fast restore"}},
    {"release", cmd_release, 0, "release [MODEL]",
     {"free every model of vramd (or one, or NAME@PID) completely"}},
    {"timeout", cmd_timeout, 0, "timeout DURATION [MODEL]",
     {"set the idle timeout of every model of vramd (or one, or NAME@PID):",
      "600, 90s, 10m, 1h; 0 = never"}},
    {"load", cmd_load, 0, "load MODEL",
     {"load or restore MODEL onto the GPU, showing progress"}},
    {"run", cmd_run, 0, "run MODEL",
     {"acquire, checksum on the device, end the lease; timings"}},
    {"devices", cmd_devices, 0, "devices",
     {"devices and their memory"}},
    {"register", cmd_register, 0, "register NAME=SOURCE[,key=value...]",
     {"add a model at run time, as vramd --model does (keys: idle_timeout,",
      "release_timeout, immediate_offload, device)"}},
    {"unregister", cmd_unregister, 0, "unregister MODEL",
     {"release and remove a model (refused while it is in use)"}},
    {"reopen", cmd_reopen, 0, "reopen MODEL",
     {"open MODEL's source again after its file changed on disk"}},
    {"mcp", cmd_mcp, 0, "mcp",
     {"speak MCP on stdin/stdout, forwarding to vramd's /mcp",
      "(for desktop MCP clients; logs go to stderr)"}},
    {"make-model", cmd_make_model, 1,
     "make-model PATH --size SIZE [--dtypes BF16,F32] [--seed N] [--shards N]",
     {"write a synthetic safetensors model (for tests, demos)"}},
    {"pick-gpu", cmd_pick_gpu, 1, "pick-gpu",
     {"print the idlest GPU (NVML), as vramd --gpu auto does"}},
    {"help", cmd_help, 1, "help",
     {"this text"}},
    /* test-only, unlisted (tests/integration/vramtest.py): the checksum of
     * synthetic:SIZE:SEED computed on the host */
    {"checksum-synthetic", cmd_checksum_synthetic, 1, NULL, {NULL}},
};
/* clang-format on */

#define SYNOPSIS_WIDTH 24

static void usage(FILE *f)
{
    fputs("usage: vramctl [--url URL] [--token-file PATH] [--timeout S] [--json] COMMAND [ARGS]\n"
          "\n"
          "Talks to a running vramd (default http://127.0.0.1:7861).\n"
          "\n"
          "Commands:\n",
          f);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        const command *c = &commands[i];
        if (!c->synopsis) continue;
        if (strlen(c->synopsis) > SYNOPSIS_WIDTH)
            fprintf(f, "  %s\n  %-*s %s\n", c->synopsis, SYNOPSIS_WIDTH, "", c->help[0]);
        else
            fprintf(f, "  %-*s %s\n", SYNOPSIS_WIDTH, c->synopsis, c->help[0]);
        if (c->help[1]) fprintf(f, "  %-*s %s\n", SYNOPSIS_WIDTH, "", c->help[1]);
    }
    fputs(
        "\n"
        "Options:\n"
        "  --url URL      vramd's address (VRAM_URL, else ./.env; else VRAM_PORT and VRAM_BIND\n"
        "                 as vramd reads them; default http://127.0.0.1:7861)\n"
        "  --token TOKEN  bearer token when vramd runs with one (VRAM_TOKEN)\n"
        "  --token-file PATH  read the bearer token from PATH's first line (VRAM_TOKEN_FILE);\n"
        "                 recommended, or VRAM_TOKEN: --token TOKEN shows it to every user\n"
        "                 in /proc/PID/cmdline\n"
        "  --timeout S    give up on a request after S seconds, exit 2 (VRAMCTL_TIMEOUT,\n"
        "                 default 120)\n"
        "  --json         print vramd's JSON answer as it is\n"
        "\n"
        "Exit codes: 0 success, 1 vramd answered with an error, 2 vramd not reachable,\n"
        "64 bad command line.\n",
        f);
}

static int cmd_help(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    usage(stdout);
    return 0;
}

void die(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("vramctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(code);
}

static const command *find_command(const char *name)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(commands[i].name, name)) return &commands[i];
    return NULL;
}

/* The command line: options may come anywhere; the other words are packed,
 * in place, into argv + 1 (the command and its arguments). */
typedef struct cli {
    const char *url, *token, *token_file, *timeout; /* NULL: not given */
    char **rest;
    int nrest;
} cli;

/* Returns -1 to go on, else the exit code (after --help or --version). */
static int parse_cli(int argc, char **argv, cli *c)
{
    c->rest = argv + 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--version")) {
            printf("vramctl %s\n", VRAM_VERSION);
            return 0;
        } else if (!strcmp(a, "--json")) {
            client_opt.json = 1;
        } else if (!strcmp(a, "--url") || !strcmp(a, "--token") || !strcmp(a, "--token-file") ||
                   !strcmp(a, "--timeout")) {
            if (i + 1 >= argc) die(EXIT_USAGE, "%s needs a value", a);
            const char **to = !strcmp(a, "--url")        ? &c->url
                              : !strcmp(a, "--token")    ? &c->token
                              : !strcmp(a, "--timeout")  ? &c->timeout
                                                         : &c->token_file;
            *to = argv[++i];
        } else if (!strncmp(a, "--token-file=", 13)) {
            c->token_file = a + 13;
        } else if (!strncmp(a, "--timeout=", 10)) {
            c->timeout = a + 10;
        } else if (!strncmp(a, "--url=", 6)) {
            c->url = a + 6;
        } else if (!strncmp(a, "--token=", 8)) {
            c->token = a + 8;
        } else {
            c->rest[c->nrest++] = argv[i];
        }
    }
    return -1;
}

/* vramd's address and token: the flags, else the environment and ./.env,
 * as vramd reads them. Exits 64 on a bad value. */
static void configure_client(const cli *c)
{
    vram_config cfg;
    vram_config_init(&cfg);
    char err[512];
    if (vram_config_load(&cfg, NULL, err, sizeof err) < 0) die(EXIT_USAGE, "%s", err);
    if (c->url && vram_config_set_flag(&cfg, "--url", c->url, err, sizeof err) < 0)
        die(EXIT_USAGE, "%s", err);
    if (c->token && vram_config_set_flag(&cfg, "--token", c->token, err, sizeof err) < 0)
        die(EXIT_USAGE, "%s", err);
    if (c->token_file && vram_config_set_flag(&cfg, "--token-file", c->token_file, err, sizeof err) < 0)
        die(EXIT_USAGE, "%s", err);
    const char *t = c->timeout ? c->timeout : getenv("VRAMCTL_TIMEOUT");
    if (t) {
        char *end = NULL;
        client_opt.timeout = strtod(t, &end);
        if (end == t || *end || !(client_opt.timeout > 0) || client_opt.timeout > 86400)
            die(EXIT_USAGE, "--timeout '%s' is not a number of seconds (0 < S <= 86400)", t);
    }
    snprintf(client_opt.url, sizeof client_opt.url, "%s", cfg.url);
    /* no URL given but a port (VRAM_PORT in the environment or ./.env, as
     * vramd reads it): vramd is on that port */
    const char *usrc = vram_config_source(&cfg, "VRAM_URL");
    const char *psrc = vram_config_source(&cfg, "VRAM_PORT");
    if (!c->url && usrc && !strcmp(usrc, "default") && psrc && strcmp(psrc, "default") != 0) {
        const char *b = cfg.bind;
        int any = !b[0] || !strcmp(b, "0.0.0.0") || !strcmp(b, "::") || !strcmp(b, "localhost");
        int v6 = !any && strchr(b, ':') != NULL;
        snprintf(client_opt.url, sizeof client_opt.url, "http://%s%.200s%s:%d", v6 ? "[" : "",
                 any ? "127.0.0.1" : b, v6 ? "]" : "", cfg.port);
    }
    snprintf(client_opt.token, sizeof client_opt.token, "%s", cfg.token);
}

int main(int argc, char **argv)
{
    cli c = {0};
    int done = parse_cli(argc, argv, &c);
    if (done >= 0) return done;
    if (c.nrest == 0) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const command *cmd = find_command(c.rest[0]);
    if (cmd && cmd->local) return cmd->run(c.nrest - 1, c.rest + 1);
    configure_client(&c);
    if (!cmd) die(EXIT_USAGE, "unknown command '%s' (see vramctl --help)", c.rest[0]);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = cmd->run(c.nrest - 1, c.rest + 1);
    curl_global_cleanup();
    return rc;
}
