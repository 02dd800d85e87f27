/* server.c - libvram-server's public face (vram_server.h): start and stop the HTTP/MCP/metrics server over a manager. */
#include <stdio.h>
#include <stdlib.h>

#include "server/http.h"
#include "vram_server.h"

struct vram_server {
    vram__http *http;
};

void vram_server_opts_init(vram_server_opts *o)
{
    if (!o) return;
    o->bind = "127.0.0.1";
    o->port = 7861;
    o->token = NULL;
    o->allowed_hosts = NULL;
    o->threads = 0;
    o->request_timeout = 10.0;
    o->max_connections = 1000;
    o->max_per_client = 64;
}

int vram_server_start(vram_manager *m, const vram_server_opts *o, vram_server **out)
{
    if (out) *out = NULL;
    if (!m || !out) return vram_set_error(VRAM_EINVAL, "vram_server_start: manager and out are required");
    vram_server_opts def;
    if (!o) {
        vram_server_opts_init(&def);
        o = &def;
    }
    if (o->threads < 0 || o->threads > 256)
        return vram_set_error(VRAM_EINVAL, "server threads must be between 0 (one per CPU) and "
                                           "256, got %d", o->threads);
    if (!(o->request_timeout >= 0) || o->request_timeout > 86400 || o->max_connections < 0 ||
        o->max_per_client < 0)
        return vram_set_error(VRAM_EINVAL, "server limits: request_timeout must be 0..86400 s "
                                           "and the connection caps >= 0");
    vram_server *s = calloc(1, sizeof *s);
    if (!s) return vram_set_error(VRAM_EHOSTMEM, "vram_server_start: out of host memory");
    char err[512] = "";
    vram__http_opts ho = {
        .bind = o->bind, .port = o->port, .token = o->token,
        .allowed_hosts = o->allowed_hosts, .threads = o->threads,
        .request_timeout = o->request_timeout, .max_connections = o->max_connections,
        .max_per_client = o->max_per_client,
    };
    int rc = vram__http_listen(&ho, &s->http, err, sizeof err);
    if (rc == 0) {
        rc = vram__http_start(s->http, m, err, sizeof err);
        if (rc < 0) vram__http_stop(s->http, 0);
    }
    if (rc < 0) {
        free(s);
        return vram_set_error(rc, "%s", err[0] ? err : vram_strerror(rc));
    }
    *out = s;
    return 0;
}

int vram_server_port(const vram_server *s)
{
    return s ? vram__http_port(s->http) : 0;
}

int vram_server_stop(vram_server *s, double grace)
{
    if (!s) return 0;
    if (!(grace >= 0)) grace = 0;
    int left = vram__http_stop(s->http, grace);
    if (left > 0) return left; /* s stays allocated with the requests it still runs */
    free(s);
    return 0;
}
