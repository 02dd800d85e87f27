/* make_model.c - vramctl make-model: a synthetic safetensors model for tests and demos. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/st_write.h"
#include "table.h"
#include "vram.h"
#include "vramctl.h"

#define MAKE_MODEL_USAGE                                                                           \
    "usage: vramctl make-model PATH --size SIZE [--dtypes BF16,F32] [--seed N] [--shards N]"

typedef struct make_args {
    const char *path, *dtypes;
    uint64_t size, seed;
    int shards;
} make_args;

/* Reads PATH and the options into *a; exits 64 on a bad command line. */
static void parse_make_args(int argc, char **argv, make_args *a)
{
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(arg, "--size") && v) {
            if (vram_parse_size(v, &a->size) < 0 || a->size == 0)
                die(EXIT_USAGE, "make-model: --size '%s' is not a size (e.g. 256M, 1G)", v);
            i++;
        } else if (!strcmp(arg, "--dtypes") && v) {
            a->dtypes = v;
            i++;
        } else if (!strcmp(arg, "--seed") && v) {
            char *end = NULL;
            a->seed = strtoull(v, &end, 0);
            if (*end || *v == '-') die(EXIT_USAGE, "make-model: --seed '%s' is not a number", v);
            i++;
        } else if (!strcmp(arg, "--shards") && v) {
            char *end = NULL;
            long n = strtol(v, &end, 10);
            if (*end || n < 1 || n > 10000)
                die(EXIT_USAGE, "make-model: --shards '%s' is not 1-10000", v);
            a->shards = (int)n;
            i++;
        } else if (arg[0] != '-' && !a->path) {
            a->path = arg;
        } else {
            die(EXIT_USAGE, MAKE_MODEL_USAGE);
        }
    }
    if (!a->path || !a->size) die(EXIT_USAGE, MAKE_MODEL_USAGE);
}

int cmd_make_model(int argc, char **argv)
{
    make_args a = {.shards = 1};
    parse_make_args(argc, argv, &a);
    char err[512] = "";
    int rc = st_make_model(a.path, a.size, a.dtypes, a.seed, a.shards, err, sizeof err);
    if (rc < 0) die(EXIT_FAILED, "make-model: %s", err[0] ? err : vram_strerror(rc));
    char h[32];
    human_size((double)a.size, h, sizeof h);
    printf("wrote %s (about %s, %d shard%s, seed %" PRIu64 "); serve it with --model NAME=%s\n",
           a.path, h, a.shards, a.shards == 1 ? "" : "s", a.seed, a.path);
    return 0;
}
