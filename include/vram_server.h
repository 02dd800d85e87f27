/* vram_server.h - libvram-server: the seed's HTTP API, /api/v1, /metrics and /mcp over a manager, in any process. */
#ifndef VRAM_SERVER_H
#define VRAM_SERVER_H

#include <stddef.h>

#include "vram.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * An application that embeds libvram serves the same endpoints as vramd for
 * its own models (the seed's web app did this), with the same checks:
 *
 *     vram_server_opts o;
 *     vram_server_opts_init(&o);
 *     o.port = 0;                       // any free port
 *     vram_server *srv;
 *     if (vram_server_start(m, &o, &srv) < 0)
 *         fprintf(stderr, "%s\n", vram_last_error());
 *     printf("http://127.0.0.1:%d/api/gpu/status\n", vram_server_port(srv));
 *     ...
 *     vram_server_stop(srv, 5.0);
 *
 * Link with pkg-config's vram-server (libvram-server and libvram).
 */

typedef struct vram_server vram_server;

typedef struct vram_server_opts {
    const char *bind;          /* address to listen on; NULL: "127.0.0.1" */
    int port;                  /* 0: any free port (vram_server_port says which); default 7861 */
    const char *token;         /* NULL or "": no authentication; else every state-changing
                                  request and every /mcp request needs "Authorization: Bearer TOKEN" */
    const char *allowed_hosts; /* comma-separated Host names accepted besides the bind
                                  address and the loopback names; NULL: none */
    int threads;               /* event threads; 0: one per CPU, at least 2 */
    /* Hostile or idle clients (fields added at the end; 0 means the default): */
    double request_timeout;    /* seconds a connection has to send a request's headers and
                                  body (and an idle keep-alive connection waits for the
                                  next); then it is closed. Default 10 */
    int max_connections;       /* open connections in all; at the cap the oldest one that has
                                  sent no complete request is closed. Default 1000 (each takes
                                  a file descriptor: raise RLIMIT_NOFILE to match) */
    int max_per_client;        /* per client address; at the cap the client's oldest idle
                                  connection is closed, or the new one when all are busy.
                                  Default 64 */
} vram_server_opts;

/* Fills o with the defaults (127.0.0.1:7861, no token, no extra hosts,
 * limits 10 s, 1000 connections, 64 per client). */
VRAM_API void vram_server_opts_init(vram_server_opts *o);

/* Binds, listens and starts serving manager m (borrowed: it must outlive the
 * server). A taken port fails here, at once. Returns 0, or VRAM_EIO (bind or
 * listen failed: "127.0.0.1:7861 is already in use ..."), VRAM_EINVAL (bad
 * option) or VRAM_EHOSTMEM, with the detail in vram_last_error(); *out is
 * then NULL and nothing is left running. */
VRAM_API int vram_server_start(vram_manager *m, const vram_server_opts *o, vram_server **out);

/* The TCP port listened on (the one taken when opts.port was 0). */
VRAM_API int vram_server_port(const vram_server *s);

/* Stops accepting, lets requests in flight finish for up to grace seconds,
 * then stops and frees everything. Returns 0, or the number of slow
 * requests still running after grace: the server is then left allocated
 * to finish them, and the caller must not destroy the manager (a process
 * about to exit just exits). NULL does nothing. */
VRAM_API int vram_server_stop(vram_server *s, double grace);

/* The seed's status as JSON text (get_all_status: an object keyed by model
 * name with model_name, location, idle_time_seconds, idle_timeout_seconds,
 * monitor_running, gpu_memory, plus state, bytes, leases, counters,
 * durations, GB/s, load_progress, last_error), built from
 * vram_manager_models(). Caller frees with free(). NULL only when out of
 * host memory. */
VRAM_API char *vram_manager_status_json(vram_manager *m);
/* One model's status object; NULL for an unknown name. Caller frees. */
VRAM_API char *vram_model_status_json(vram_manager *m, const char *name);
/* The devices as a JSON array (GET /api/v1/devices). Caller frees. */
VRAM_API char *vram_manager_devices_json(vram_manager *m);

/* ------------------------------------------------------------------------ */
/* Models at run time: one parser of "NAME=SOURCE[,key=value...]" (vramd's  */
/* --model and its config file, POST /api/v1/models, vramctl register) and  */
/* registration that is safe against requests in flight.                   */
/* ------------------------------------------------------------------------ */
#define VRAM_SOURCE_MAX 1024

typedef struct vram_model_spec {
    char name[VRAM_NAME_MAX + 1];
    char source[VRAM_SOURCE_MAX]; /* "synthetic:SIZE[:SEED]", a .safetensors file, index or directory */
    double idle_timeout;          /* seconds; < 0: the manager's */
    double release_timeout;       /* seconds; < 0: the manager's; 0 = never */
    int immediate_offload;        /* 0 or 1 */
    int device;                   /* < 0: device 0 */
} vram_model_spec;

/* Fills s with no name, no source and the manager's defaults. */
VRAM_API void vram_model_spec_init(vram_model_spec *s);

/* Parses "NAME=SOURCE[,idle_timeout=S][,release_timeout=S]
 * [,immediate_offload=1][,device=N]" into s (initialized first). The source
 * runs up to the first ",key="; seconds are read as vram_parse_seconds
 * reads them. Returns 0, or VRAM_EINVAL with why in err (errlen bytes). */
VRAM_API int vram_model_spec_parse(vram_model_spec *s, const char *text, char *err,
                                   size_t errlen);

/* Sets one option of s from text: idle_timeout and release_timeout
 * (seconds: 600, 90s, 10m), immediate_offload (1, 0, true, false, yes, no,
 * on, off), device (an index). VRAM_EINVAL for an unknown key or a bad
 * value (err says which); s is unchanged on failure. */
VRAM_API int vram_model_spec_option(vram_model_spec *s, const char *key, const char *value,
                                    char *err, size_t errlen);

/* Registers the model s describes (VRAM_EEXIST for a taken name), or
 * unregisters one (VRAM_EBUSY under a lease or while a request uses it,
 * VRAM_ENOENT when unknown), in step with the HTTP and MCP commands that
 * use models: never while one of them holds a model. Details in
 * vram_last_error(). */
VRAM_API int vram_server_register(vram_manager *m, const vram_model_spec *s);
VRAM_API int vram_server_unregister(vram_manager *m, const char *name);

/* Makes the registry agree with s: registers a new model; for an existing
 * one applies changed timeouts and immediate_offload in place, and a
 * changed source or device by opening the new source, then replacing the
 * model (VRAM_EBUSY under a lease; the old one stays). *what (when not
 * NULL) gets "registered", "updated", "replaced" or "unchanged". For a
 * configuration reload (vramd's SIGHUP). */
VRAM_API int vram_server_apply(vram_manager *m, const vram_model_spec *s, const char **what);

/* Opens a model's source again (its file changed on disk): the new source
 * is opened first (a failure leaves the model as it was), then the model
 * is replaced with the same options, counters starting over. VRAM_EBUSY
 * under a lease; VRAM_EINVAL for a model with a load function. */
VRAM_API int vram_server_reopen(vram_manager *m, const char *name);

/* ------------------------------------------------------------------------ */
/* The node: vramd's Unix socket that every manager on the machine joins   */
/* (VRAM_NODE_SOCKET), for one view of the node and least-recently-used     */
/* eviction across processes. Protocol: src/base/wire.h.                    */
/* ------------------------------------------------------------------------ */
typedef struct vram_node vram_node;

/* Listens on the Unix socket at path: creates its directory (mode 0755)
 * when missing, replaces a stale socket that no one listens on, and sets
 * the socket's mode to 0660, so that the file's owner, group and mode
 * decide who may join (chown/chgrp it to widen that). VRAM_EEXIST when a
 * live vramd listens there already, VRAM_EIO for other failures, with the
 * detail in vram_last_error(). A server started in this process shows the
 * node (GET /api/v1/node, /metrics, the MCP tools) and carries out
 * offload, release and timeout changes of other processes' models, named
 * "NAME@PID", through their owners. One node per process. */
VRAM_API int vram_node_start(const char *path, vram_node **out);
/* Closes every member's connection, removes the socket and frees n. Stop
 * servers that show it first. NULL does nothing. */
VRAM_API void vram_node_stop(vram_node *n);
/* The node's view as JSON text (what GET /api/v1/node answers). Caller
 * frees. NULL when out of host memory. */
VRAM_API char *vram_node_json(vram_node *n);

#ifdef __cplusplus
}
#endif
#endif /* VRAM_SERVER_H */
