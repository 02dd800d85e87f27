/* embed_server.c - an application that embeds libvram and serves the seed's HTTP API and MCP for its own models. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vram.h"
#include "vram_server.h"

/* The application's own model: a load callback that allocates device
 * memory in the model and fills it (here with a pattern; a real engine
 * reads its weights). */
static int load_weights(vram_model *model, void *user)
{
    size_t bytes = *(const size_t *)user;
    void *dev = NULL;
    int rc = vram_model_alloc(model, bytes, &dev);
    if (rc < 0) return rc;
    unsigned char *host = malloc(bytes);
    if (!host) return vram_set_error(VRAM_EHOSTMEM, "no host memory for the weights");
    for (size_t i = 0; i < bytes; i++)
        host[i] = (unsigned char)(i * 31u + 7u);
    rc = vram_model_upload(model, dev, host, bytes);
    free(host);
    return rc;
}

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 7861; /* 0: any free port */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);

    vram_manager *m = NULL;
    if (vram_manager_create(NULL, &m) < 0) {
        fprintf(stderr, "embed_server: %s\n", vram_last_error());
        return 1;
    }
    /* one model from a file or synthetic source, one from the application's callback */
    vram_model_opts o;
    vram_model_opts_init(&o);
    o.source = "synthetic:16M:7";
    static size_t app_bytes = 8u << 20;
    if (vram_manager_register(m, "tts", &o, NULL) < 0) goto fail;
    vram_model_opts_init(&o);
    o.load = load_weights;
    o.load_user = &app_bytes;
    o.immediate_offload = 1;
    if (vram_manager_register(m, "codec", &o, NULL) < 0) goto fail;

    vram_server_opts so;
    vram_server_opts_init(&so);
    so.port = port;
    so.token = getenv("EMBED_TOKEN"); /* NULL: no token */
    vram_server *srv = NULL;
    if (vram_server_start(m, &so, &srv) < 0) goto fail;
    printf("serving on http://127.0.0.1:%d/api/gpu/status (MCP at /mcp); stop with Ctrl-C\n",
           vram_server_port(srv));
    fflush(stdout);

    int sig;
    sigwait(&stop, &sig);
    if (vram_server_stop(srv, 5.0) > 0) return 0; /* requests still running: just exit */
    vram_manager_destroy(m);
    printf("stopped\n");
    return 0;
fail:
    fprintf(stderr, "embed_server: %s\n", vram_last_error());
    vram_manager_destroy(m);
    return 1;
}
