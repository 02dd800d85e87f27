/* node_member.c - a test program: one libvram manager driven by lines on stdin, for the node tests (several processes on one emulated device). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vram.h"

/*
 * Configured by the environment like any service (VRAM_NODE_SOCKET,
 * VRAM_HOST_SHARED, VRAM_HOST_MEMORY, VRAM_NODE_NAME, ...). Commands, one
 * per line; each is answered by one line "ok ..." or "err CODE message":
 *
 *   register NAME SIZE [IDLE_TIMEOUT]   a synthetic:SIZE model
 *   acquire NAME      acquire and keep the lease
 *   end NAME          end the lease acquire took
 *   load NAME         acquire and end at once
 *   offload NAME      offload it (VRAM_WAIT)
 *   release NAME      release it (VRAM_WAIT)
 *   state NAME        "ok STATE"
 *   check NAME        "ok CHECKSUM" of the model's bytes as they are now
 *   pid               "ok PID"
 *   quit
 */

#define LEASES_MAX 64

static struct {
    char name[VRAM_NAME_MAX + 1];
    vram_lease *lease;
} g_leases[LEASES_MAX];

static void answer_rc(int rc)
{
    if (rc < 0)
        printf("err %s %s\n", vram_err_name(rc), vram_last_error());
    else
        printf("ok\n");
}

static int cmd_register(vram_manager *m, const char *name, const char *size, const char *idle)
{
    char source[128];
    snprintf(source, sizeof source, "synthetic:%s", size);
    vram_model_opts o;
    vram_model_opts_init(&o);
    o.source = source;
    if (idle) o.idle_timeout = atof(idle);
    return vram_manager_register(m, name, &o, NULL);
}

static int cmd_acquire(vram_manager *m, const char *name, int keep)
{
    vram_model *model = vram_manager_find(m, name);
    if (!model) return vram_set_error(VRAM_ENOENT, "no model %s", name);
    vram_lease *l = NULL;
    int rc = vram_model_acquire(model, &l);
    if (rc < 0) return rc;
    if (!keep) {
        vram_lease_end(l);
        return 0;
    }
    for (int i = 0; i < LEASES_MAX; i++)
        if (!g_leases[i].lease) {
            snprintf(g_leases[i].name, sizeof g_leases[i].name, "%s", name);
            g_leases[i].lease = l;
            return 0;
        }
    vram_lease_end(l);
    return vram_set_error(VRAM_EINVAL, "too many leases");
}

static int cmd_end(const char *name)
{
    for (int i = 0; i < LEASES_MAX; i++)
        if (g_leases[i].lease && strcmp(g_leases[i].name, name) == 0) {
            vram_lease_end(g_leases[i].lease);
            g_leases[i].lease = NULL;
            return 0;
        }
    return vram_set_error(VRAM_ENOENT, "no lease on %s", name);
}

static void run(vram_manager *m, char *verb, char *a, char *b, char *c)
{
    vram_model *model = a ? vram_manager_find(m, a) : NULL;
    if (!strcmp(verb, "register") && a && b) {
        answer_rc(cmd_register(m, a, b, c));
    } else if (!strcmp(verb, "acquire") && a) {
        answer_rc(cmd_acquire(m, a, 1));
    } else if (!strcmp(verb, "load") && a) {
        answer_rc(cmd_acquire(m, a, 0));
    } else if (!strcmp(verb, "end") && a) {
        answer_rc(cmd_end(a));
    } else if (!strcmp(verb, "offload") && model) {
        answer_rc(vram_model_offload(model, VRAM_WAIT));
    } else if (!strcmp(verb, "release") && model) {
        answer_rc(vram_model_release(model, VRAM_WAIT));
    } else if (!strcmp(verb, "state") && model) {
        printf("ok %s\n", vram_state_name(vram_model_state(model)));
    } else if (!strcmp(verb, "check") && model) {
        uint64_t sum = 0;
        int rc = vram_model_checksum(model, &sum);
        if (rc < 0)
            answer_rc(rc);
        else
            printf("ok %016llx\n", (unsigned long long)sum);
    } else if (!strcmp(verb, "pid")) {
        printf("ok %ld\n", (long)getpid());
    } else {
        printf("err EINVAL unknown command or model: %s %s\n", verb, a ? a : "");
    }
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    vram_manager *m = NULL;
    if (vram_manager_create(NULL, &m) < 0) {
        printf("err %s %s\n", "START", vram_last_error());
        return 1;
    }
    printf("ok ready %ld\n", (long)getpid());
    char line[512];
    while (fgets(line, sizeof line, stdin)) {
        char *save = NULL;
        char *verb = strtok_r(line, " \n", &save);
        if (!verb) continue;
        if (!strcmp(verb, "quit")) break;
        char *a = strtok_r(NULL, " \n", &save);
        char *b = a ? strtok_r(NULL, " \n", &save) : NULL;
        char *c = b ? strtok_r(NULL, " \n", &save) : NULL;
        run(m, verb, a, b, c);
    }
    for (int i = 0; i < LEASES_MAX; i++)
        if (g_leases[i].lease) vram_lease_end(g_leases[i].lease);
    vram_manager_destroy(m);
    return 0;
}
