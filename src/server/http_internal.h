/* http_internal.h - what the HTTP server's files share: routes, server and request state, responses, jobs. */
#ifndef VRAM_SERVER_HTTP_INTERNAL_H
#define VRAM_SERVER_HTTP_INTERNAL_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stddef.h>

#include "server/commands.h"
#include "server/events.h"
#include "server/http.h"
#include "server/http_checks.h"
#include "server/mcp.h"
#include "server/metrics.h"

/*
 * THREADS AND LOCKS
 *
 * libmicrohttpd runs a pool of event threads (epoll). A handler on an event
 * thread never blocks: fast commands (status, lists, timeouts) run there;
 * slow ones (load, run, offload, release, and MCP tools/call of those) run
 * as a job on a thread of their own while the connection is suspended, and
 * the job resumes the connection when its answer is ready. A job touches
 * its request only before MHD_resume_connection; after that the event
 * thread owns it again (and frees it when the request completes).
 *
 * One mutex, h->lock, guards h->jobs, h->job_list and h->stopping and
 * nothing else; it is never held while a command runs or an MHD function is
 * called (MHD_resume_connection excepted: it only flags the connection).
 *
 * A second one, h->conn_lock, guards the connection table (h->conns, each
 * connection's deadline) and the limit counters; the watchdog thread holds
 * it while it shuts overdue sockets down. libmicrohttpd tells us a
 * connection closed before it closes the socket, so a socket in the table
 * is always still open.
 */

#define MAX_JOBS 256           /* slow requests in flight at once; more get 503 */
#define DISCARD_MAX (64u << 20) /* bytes of an oversized chunked body read before hanging up */

/* ---- routes (http_routes.c) ---- */

enum {
    R_OTHER,
    R_ROOT,
    R_HEALTH,
    R_METRICS,
    R_GPU_STATUS,
    R_GPU_OFFLOAD,
    R_GPU_RELEASE,
    R_GPU_TIMEOUT,
    R_MODELS,
    R_MODEL,
    R_MODEL_LOAD,
    R_MODEL_RUN,
    R_MODEL_OFFLOAD,
    R_MODEL_RELEASE,
    R_MODEL_REOPEN,
    R_DEVICES,
    R_EVENTS,
    R_NODE,
    R_MCP,
    NROUTES
};

typedef struct route {
    const char *name;  /* path, or its template; the metrics label */
    const char *get;   /* command for GET/HEAD, or NULL */
    const char *post;  /* command for POST, or NULL */
    const char *patch; /* command for PATCH, or NULL */
    const char *del;   /* command for DELETE, or NULL */
    const char *allow; /* the Allow header of a 405 */
} route;

extern const route vram__http_routes[NROUTES];

#define MODELS_PREFIX "/api/v1/models/"

/* Which route url is; for a per-model route, *name / *name_len get the
 * model's name (a slice of url). */
int vram__http_match_route(const char *url, const char **name, size_t *name_len);

enum { M_GET, M_HEAD, M_POST, M_PATCH, M_DELETE, M_OTHER };
int vram__http_method(const char *m);

/* The command for a route and method: a name, "" for a built-in page,
 * NULL when the method is not allowed there. */
const char *vram__http_route_command(int r, int method);

/* ---- server and request state ---- */

/* One client connection (the socket context of libmicrohttpd). */
typedef struct vram__conn {
    struct vram__conn *prev, *next;
    int fd;
    char addr[64];   /* the client's address as text */
    double since;    /* when it started waiting for its request, or its handling */
    double deadline; /* its request must be in by then; INFINITY while handled */
    int killed;      /* shut down by us (limits, deadline) */
    int bad_path;    /* the request's path held a %00 */
} vram__conn;

struct vram__http {
    int listen_fd;
    int port;
    vram__http_guard guard; /* bind address, token, allowed hosts */
    int threads;
    struct MHD_Daemon *daemon;
    vram_manager *m;
    vram__mcp *mcp;
    vram__metrics *mx;
    vram__events *events; /* the event log of GET /api/v1/events and the dashboard */
    const char *route_names[NROUTES]; /* metrics labels: routes[i].name */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int jobs;
    struct job *job_list; /* the jobs still running (h->lock) */
    int stopping;
    int stop_answers;     /* 503s sent at stop still to complete (h->lock) */
    /* connections (http_conns.c; h->conn_lock) */
    double request_timeout; /* seconds for a request's headers and body to arrive */
    int max_conns, max_per_client;
    pthread_mutex_t conn_lock;
    pthread_cond_t watchdog_cond;
    pthread_t watchdog;
    int conns_inited, watchdog_started, watchdog_stop;
    vram__conn *conns;
    size_t nconns;
    unsigned long long limit_hits[4];
    double limit_logged[4];
};

typedef struct job job;

typedef struct request {
    double t0;
    int route;
    int method; /* M_* */
    unsigned status;
    int started;
    char *body;
    size_t len, cap;
    size_t discarded;
    int too_large;
    char name[VRAM_NAME_MAX + 4]; /* model name from the path */
    char *log_url;  /* only when debug logging is on */
    job *job;
} request;

struct job {
    vram__http *h;
    struct job *next_running; /* h->job_list */
    int refs;                 /* the job thread and the request (h->lock) */
    int answered;             /* its answer is in (by the job, or a 503 at stop) */
    int abandoned;            /* answered 503 by a stop */
    struct MHD_Connection *conn;
    /* a command ... */
    const vram__command *cmd;
    json_t *args;
    /* ... or an MCP message */
    int is_mcp;
    vram__mcp_http_req mreq;
    char *mcp_strings[5]; /* the four headers and the body, copied */
    /* the answer */
    int done;
    unsigned status;
    char *body;
    size_t len;
    char session_id[40];
    const char *allow;
};

/* ---- responses (http_respond.c) ---- */

/* Queues an answer; takes over body (malloc'd, or NULL for an empty one). */
enum MHD_Result vram__http_send_body(struct MHD_Connection *c, request *r, unsigned status,
                                     char *body, size_t len, const char *ctype, const char *h1,
                                     const char *v1);
/* JSON text of o plus a newline (for terminals), malloc'd; steals o. */
char *vram__http_dump_line(json_t *o, size_t *len);
enum MHD_Result vram__http_send_json(struct MHD_Connection *c, request *r, unsigned status,
                                     json_t *o, const char *h1, const char *v1);
/* {"error":{"code":code,"message":message}} with status (JSON-RPC on /mcp). */
enum MHD_Result vram__http_send_error(struct MHD_Connection *c, request *r, unsigned status,
                                      const char *code, const char *message, const char *h1,
                                      const char *v1);
/* The answer of a finished command (raw text is taken over from res). */
void vram__http_result_body(vram__cmd_result *res, unsigned *status, char **body, size_t *len);

/* ---- jobs: slow work off the event threads (http_jobs.c) ---- */

void vram__http_job_free(job *j);
/* Hands j to a thread of its own and suspends the connection; the handler
 * is called again once the answer is ready. On refusal answers 503. */
enum MHD_Result vram__http_start_job(vram__http *h, struct MHD_Connection *c, request *r, job *j);
/* Sends the answer of r's finished job. */
enum MHD_Result vram__http_finish_job(struct MHD_Connection *c, request *r);

/* Answers every job still running with a 503 "stopping" (they go on,
 * their result dropped); returns how many. */
int vram__http_jobs_abandon(vram__http *h);

/* ---- connections (http_conns.c) ---- */

/* MHD_OPTION_NOTIFY_CONNECTION: adds and drops table entries, enforcing the caps. */
void vram__http_on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                              enum MHD_ConnectionNotificationCode code);
vram__conn *vram__http_conn_of(struct MHD_Connection *c);
/* A request's headers and body are in (handling 1), or it completed and
 * the connection waits for the next one (handling 0). */
void vram__http_conn_phase(vram__http *h, struct MHD_Connection *c, int handling);
/* MHD_OPTION_UNESCAPE_CALLBACK: %XX decoding that flags a %00. */
size_t vram__http_unescape(void *cls, struct MHD_Connection *c, char *uri);
int vram__http_conns_start(vram__http *h);
void vram__http_conns_stop(vram__http *h);
void vram__http_conns_free(vram__http *h);

#endif /* VRAM_SERVER_HTTP_INTERNAL_H */
