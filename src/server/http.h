/* http.h - the HTTP server (libmicrohttpd thread pool): seed API, /api/v1, /metrics, /mcp. */
#ifndef VRAM_SERVER_HTTP_H
#define VRAM_SERVER_HTTP_H

#include <stddef.h>

#include "vram.h"

/* Largest request body accepted, in bytes; more is 413. */
#define VRAM__HTTP_BODY_MAX (64 * 1024)

typedef struct vram__http_opts {
    const char *bind;  /* address to listen on ("127.0.0.1", "::1", "0.0.0.0", "localhost") */
    int port;          /* 0: any free port (see vram__http_port) */
    const char *token; /* "" or NULL: no authentication */
    const char *allowed_hosts; /* comma-separated Host names accepted besides loopback and bind */
    int threads;       /* event threads; 0: one per CPU, at least 2 */
    double request_timeout; /* seconds for a request's headers and body; <= 0: 10 */
    int max_connections;    /* in all; <= 0: 1000 */
    int max_per_client;     /* per client address; <= 0: 64 */
} vram__http_opts;

typedef struct vram__http vram__http;

/* Binds and listens (nothing is served yet), so that a taken port fails
 * at once: returns VRAM_EIO with a message in err naming the address and
 * the reason ("127.0.0.1:7861 is already in use ..."). *out is NULL on
 * failure. */
int vram__http_listen(const vram__http_opts *o, vram__http **out, char *err, size_t errlen);

/* The port actually listened on. */
int vram__http_port(const vram__http *h);

/* Starts serving manager m (borrowed; it must outlive the server).
 * Returns 0, or VRAM_EIO / VRAM_EHOSTMEM with a message in err. */
int vram__http_start(vram__http *h, vram_manager *m, char *err, size_t errlen);

/* Stops accepting, lets requests in flight finish for up to grace seconds,
 * then stops the event threads and frees everything. Returns 0, or the
 * number of slow requests still running after grace (h is then left
 * allocated and running them: the caller must not destroy the manager and
 * should just exit). NULL does nothing. */
int vram__http_stop(vram__http *h, double grace);

#endif /* VRAM_SERVER_HTTP_H */
