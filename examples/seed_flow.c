/* seed_flow.c - the seed's three-step flow in C: lazy load, process, immediate offload, on two models named as in the seed. */
#include <stdio.h>
#include <stdlib.h>

#include "vram.h"
#include "vram_server.h"

/* "Processing": read the weights back from the device and hash them. */
static int process(vram_model *model, vram_lease *lease, uint64_t *out)
{
    return vram_model_checksum(model, out) < 0 ? -1 : (lease ? 0 : -1);
}

/* One task on one model, the seed's standard three steps. */
static int task(vram_model *model)
{
    vram_lease *lease = NULL;
    /* step 1: lazy load (first call) or restore (later calls) */
    int rc = vram_model_acquire(model, &lease);
    if (rc < 0) {
        fprintf(stderr, "%s: %s\n", vram_model_name(model), vram_strerror(rc));
        return rc;
    }
    /* step 2: process */
    uint64_t sum = 0;
    rc = process(model, lease, &sum);
    printf("  %-9s on the device at %p, checksum 0x%016llx\n", vram_model_name(model),
           vram_lease_ptr(lease), (unsigned long long)sum);
    /* step 3: end the lease and offload at once (the seed's force_offload) */
    vram_lease_end(lease);
    vram_model_offload(model, VRAM_WAIT);
    return rc;
}

int main(void)
{
    /* get_global_manager(idle_timeout=600): backend, budgets and timeouts
     * come from the environment and ./.env (see the README). */
    vram_manager *m = vram_global_manager(600);
    if (!m) return 1;
    printf("backend: %s\n", vram_manager_backend(m));

    const char *llasa_src = getenv("LLASA_SOURCE") ? getenv("LLASA_SOURCE") : "synthetic:256M:1";
    const char *codec_src = getenv("XCODEC_SOURCE") ? getenv("XCODEC_SOURCE") : "synthetic:64M:2";
    vram_model_opts opts;
    vram_model *llasa = NULL, *codec = NULL;
    vram_model_opts_init(&opts);
    opts.source = llasa_src;
    if (vram_manager_register(m, "Llasa-8B", &opts, &llasa) < 0) return 1;
    opts.source = codec_src;
    if (vram_manager_register(m, "XCodec2", &opts, &codec) < 0) return 1;

    char *status = vram_manager_status_json(m);
    printf("status before any use:\n%s\n", status);
    free(status);

    /* the seed's multi-model coordination: codec, LLM, codec again */
    printf("round 1 (lazy loads):\n");
    if (task(codec) < 0 || task(llasa) < 0) return 1;
    printf("round 2 (restores from pinned host memory):\n");
    if (task(codec) < 0 || task(llasa) < 0) return 1;

    status = vram_manager_status_json(m);
    printf("status after the tasks:\n%s\n", status);
    free(status);
    return 0;
}
