/* node_holder.c - a process that joins a vramd node socket with libvram, for the node-view tests (the C twin of node_member.py). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vram.h"

/*
 * usage: node_holder SOCKET NAME MODEL=SIZE [MODEL=SIZE...] [--hold MODEL]
 *
 * Loads every MODEL (synthetic:SIZE, host backend), prints "ready PID" on
 * stdout, then waits until its stdin closes (the test ending or dying ends
 * it too). --hold MODEL keeps a lease on MODEL meanwhile (orders to it
 * answer EBUSY). Built with the tests, sanitizers included, so that it runs
 * under TSan where a Python member cannot load an instrumented libvram.
 */

#define MODELS_MAX 16

static int setup(vram_manager **m, const char *sock, const char *name)
{
    vram_config cfg;
    vram_config_init(&cfg);
    char err[512];
    if (vram_config_set(&cfg, "VRAM_BACKEND", "host", err, sizeof err) < 0 ||
        vram_config_set(&cfg, "VRAM_HOST_MEMORY", "256M", err, sizeof err) < 0 ||
        vram_config_set(&cfg, "VRAM_HOST_DEVICES", "1", err, sizeof err) < 0 ||
        vram_config_set(&cfg, "VRAM_LOG_LEVEL", "warn", err, sizeof err) < 0 ||
        vram_config_set(&cfg, "VRAM_NODE_SOCKET", sock, err, sizeof err) < 0 ||
        vram_config_set(&cfg, "VRAM_NODE_NAME", name, err, sizeof err) < 0) {
        fprintf(stderr, "node_holder: %s\n", err);
        return -1;
    }
    if (vram_manager_create(&cfg, m) < 0) {
        fprintf(stderr, "node_holder: %s\n", vram_last_error());
        return -1;
    }
    return 0;
}

/* Registers MODEL=SIZE and loads it; NULL on failure (said on stderr). */
static vram_model *add(vram_manager *m, const char *spec)
{
    char name[VRAM_NAME_MAX + 1], source[128];
    const char *eq = strchr(spec, '=');
    if (!eq || eq == spec || (size_t)(eq - spec) > VRAM_NAME_MAX) {
        fprintf(stderr, "node_holder: '%s' is not MODEL=SIZE\n", spec);
        return NULL;
    }
    snprintf(name, sizeof name, "%.*s", (int)(eq - spec), spec);
    snprintf(source, sizeof source, "synthetic:%s", eq + 1);
    vram_model_opts o;
    vram_model_opts_init(&o);
    o.source = source;
    vram_model *model = NULL;
    vram_lease *l = NULL;
    if (vram_manager_register(m, name, &o, &model) < 0 || vram_model_acquire(model, &l) < 0) {
        fprintf(stderr, "node_holder: %s: %s\n", name, vram_last_error());
        return NULL;
    }
    vram_lease_end(l);
    return model;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: node_holder SOCKET NAME MODEL=SIZE... [--hold MODEL]\n");
        return 2;
    }
    const char *hold = NULL;
    vram_manager *m = NULL;
    if (setup(&m, argv[1], argv[2]) < 0) return 1;
    vram_model *models[MODELS_MAX];
    int n = 0;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--hold") && i + 1 < argc) {
            hold = argv[++i];
        } else if (n < MODELS_MAX) {
            if (!(models[n++] = add(m, argv[i]))) return 1;
        }
    }
    vram_lease *held = NULL;
    for (int i = 0; hold && i < n; i++)
        if (!strcmp(vram_model_name(models[i]), hold) && vram_model_acquire(models[i], &held) < 0)
            return 1;
    printf("ready %ld\n", (long)getpid());
    fflush(stdout);
    char buf[256];
    while (fread(buf, 1, sizeof buf, stdin) > 0) {
    } /* until the test closes it */
    if (held) vram_lease_end(held);
    vram_manager_destroy(m);
    return 0;
}
