/* http.c - vramd's HTTP server (libmicrohttpd thread pool): seed API, /api/v1, /metrics, /mcp. */
#define _GNU_SOURCE
#include "server/http.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/base.h"
#include "server/commands.h"
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
 * One mutex, h->lock, guards h->jobs and h->stopping and nothing else; it
 * is never held while a command runs or an MHD function is called.
 */

#define MAX_JOBS 256           /* slow requests in flight at once; more get 503 */
#define DISCARD_MAX (1u << 20) /* bytes of an oversized chunked body read before hanging up */

/* ---- routes ---- */

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
    R_DEVICES,
    R_MCP,
    NROUTES
};

typedef struct route {
    const char *name;  /* path, or its template; the metrics label */
    const char *get;   /* command for GET/HEAD, or NULL */
    const char *post;  /* command for POST, or NULL */
    const char *patch; /* command for PATCH, or NULL */
    const char *allow; /* the Allow header of a 405 */
} route;

static const route routes[NROUTES] = {
    [R_OTHER] = {"other", NULL, NULL, NULL, ""},
    [R_ROOT] = {"/", "", NULL, NULL, "GET, HEAD"},
    [R_HEALTH] = {"/healthz", "health", NULL, NULL, "GET, HEAD"},
    [R_METRICS] = {"/metrics", "", NULL, NULL, "GET, HEAD"},
    [R_GPU_STATUS] = {"/api/gpu/status", "status", NULL, NULL, "GET, HEAD"},
    [R_GPU_OFFLOAD] = {"/api/gpu/offload", NULL, "offload", NULL, "POST"},
    [R_GPU_RELEASE] = {"/api/gpu/release", NULL, "release", NULL, "POST"},
    [R_GPU_TIMEOUT] = {"/api/gpu/timeout", NULL, "timeout", NULL, "POST"},
    [R_MODELS] = {"/api/v1/models", "models", NULL, NULL, "GET, HEAD"},
    [R_MODEL] = {"/api/v1/models/{name}", "show", NULL, "configure", "GET, HEAD, PATCH"},
    [R_MODEL_LOAD] = {"/api/v1/models/{name}/load", NULL, "load", NULL, "POST"},
    [R_MODEL_RUN] = {"/api/v1/models/{name}/run", NULL, "run", NULL, "POST"},
    [R_MODEL_OFFLOAD] = {"/api/v1/models/{name}/offload", NULL, "offload", NULL, "POST"},
    [R_MODEL_RELEASE] = {"/api/v1/models/{name}/release", NULL, "release", NULL, "POST"},
    [R_DEVICES] = {"/api/v1/devices", "devices", NULL, NULL, "GET, HEAD"},
    [R_MCP] = {"/mcp", NULL, NULL, NULL, "POST, DELETE"},
};

#define MODELS_PREFIX "/api/v1/models/"

/* Which route url is; for a per-model route, *name / *name_len get the
 * model's name (a slice of url). */
static int match_route(const char *url, const char **name, size_t *name_len)
{
    static const struct {
        const char *path;
        int r;
    } exact[] = {
        {"/", R_ROOT},
        {"/healthz", R_HEALTH},
        {"/metrics", R_METRICS},
        {"/api/gpu/status", R_GPU_STATUS},
        {"/api/gpu/offload", R_GPU_OFFLOAD},
        {"/api/gpu/release", R_GPU_RELEASE},
        {"/api/gpu/timeout", R_GPU_TIMEOUT},
        {"/api/v1/models", R_MODELS},
        {"/api/v1/models/", R_MODELS},
        {"/api/v1/devices", R_DEVICES},
        {"/mcp", R_MCP},
    };
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
        if (strcmp(url, exact[i].path) == 0) return exact[i].r;
    if (strncmp(url, MODELS_PREFIX, strlen(MODELS_PREFIX)) != 0) return R_OTHER;
    const char *rest = url + strlen(MODELS_PREFIX);
    size_t len = strlen(rest);
    static const struct {
        const char *suffix;
        int r;
    } actions[] = {{"/load", R_MODEL_LOAD},
                   {"/run", R_MODEL_RUN},
                   {"/offload", R_MODEL_OFFLOAD},
                   {"/release", R_MODEL_RELEASE}};
    for (size_t i = 0; i < sizeof actions / sizeof actions[0]; i++) {
        size_t sl = strlen(actions[i].suffix);
        if (len > sl && strcmp(rest + len - sl, actions[i].suffix) == 0) {
            *name = rest;
            *name_len = len - sl;
            return actions[i].r;
        }
    }
    *name = rest;
    *name_len = len;
    return R_MODEL;
}

/* ---- server and request state ---- */

struct vram__http {
    int listen_fd;
    int port;
    int wildcard; /* bound to every address: Host is not checked */
    char bind[128];
    char token[VRAM_STR_MAX];
    int threads;
    struct MHD_Daemon *daemon;
    vram_manager *m;
    vram__mcp *mcp;
    vram__metrics *mx;
    const char *route_names[NROUTES]; /* metrics labels: routes[i].name */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int jobs;
    int stopping;
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
    char name[132]; /* model name from the path */
    char *log_url;  /* only when debug logging is on */
    job *job;
} request;

enum { M_GET, M_HEAD, M_POST, M_PATCH, M_DELETE, M_OTHER };

struct job {
    vram__http *h;
    struct MHD_Connection *conn;
    /* a command ... */
    const vram__command *cmd;
    json_t *args;
    /* ... or an MCP message */
    int is_mcp;
    vram__mcp_http_req mreq;
    char *mcp_strings[4];
    /* the answer */
    int done;
    unsigned status;
    char *body;
    size_t len;
    char session_id[40];
    const char *allow;
};

/* ---- responses ---- */

static enum MHD_Result send_body(struct MHD_Connection *c, request *r, unsigned status, char *body,
                                 size_t len, const char *ctype, const char *h1, const char *v1)
{
    struct MHD_Response *resp =
        body ? MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE)
             : MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    if (ctype) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (h1 && v1) MHD_add_response_header(resp, h1, v1);
    r->status = status;
    enum MHD_Result ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* JSON text of o plus a newline (for terminals), malloc'd; steals o. */
static char *dump_line(json_t *o, size_t *len)
{
    char *text = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(12)) : NULL;
    json_decref(o);
    if (!text) return NULL;
    size_t n = strlen(text);
    char *t2 = realloc(text, n + 2);
    if (!t2) {
        free(text);
        return NULL;
    }
    t2[n] = '\n';
    t2[n + 1] = '\0';
    *len = n + 1;
    return t2;
}

static enum MHD_Result send_json(struct MHD_Connection *c, request *r, unsigned status, json_t *o,
                                 const char *h1, const char *v1)
{
    size_t len = 0;
    char *text = dump_line(o, &len);
    if (!text) return MHD_NO;
    return send_body(c, r, status, text, len, "application/json", h1, v1);
}

/* {"error":{"code":code,"message":message}} with status. */
static enum MHD_Result send_error(struct MHD_Connection *c, request *r, unsigned status,
                                  const char *code, const char *message, const char *h1,
                                  const char *v1)
{
    if (r->route == R_MCP) { /* /mcp speaks JSON-RPC, even when refusing */
        char *text = vram__mcp_error_text(NULL, -32000, message);
        return send_body(c, r, status, text, text ? strlen(text) : 0, "application/json", h1, v1);
    }
    return send_json(c, r, status,
                     json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", message), h1,
                     v1);
}

/* The answer of a finished command (raw text is taken over from res). */
static void result_body(vram__cmd_result *res, unsigned *status, char **body, size_t *len)
{
    *status = vram__cmd_http_status(res->code);
    *body = NULL;
    if (res->code < 0) {
        *body = dump_line(json_pack("{s:{s:s, s:s}}", "error", "code", vram_err_name(res->code),
                                    "message", res->message),
                          len);
    } else if (res->raw) {
        size_t n = strlen(res->raw);
        char *t = realloc(res->raw, n + 2);
        if (t) {
            res->raw = NULL;
            t[n] = '\n';
            t[n + 1] = '\0';
            *body = t;
            *len = n + 1;
        }
    } else {
        *body = dump_line(json_incref(res->json), len);
    }
}

/* ---- checks ---- */

static const char *header(struct MHD_Connection *c, const char *name)
{
    return MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
}

static int token_ok(const char *given, const char *want)
{
    /* constant time in the content of the token */
    size_t gl = strlen(given), wl = strlen(want);
    unsigned char d = (unsigned char)(gl != wl);
    for (size_t i = 0; i < wl; i++)
        d |= (unsigned char)(want[i] ^ (i < gl ? given[i] : 0));
    return d == 0;
}

static int authorized(vram__http *h, struct MHD_Connection *c)
{
    const char *a = header(c, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!a) return 0;
    while (*a == ' ')
        a++;
    if (strncasecmp(a, "Bearer", 6) != 0 || (a[6] != ' ' && a[6] != '\t')) return 0;
    a += 6;
    while (*a == ' ' || *a == '\t')
        a++;
    size_t n = strlen(a);
    while (n && (a[n - 1] == ' ' || a[n - 1] == '\t'))
        n--;
    char given[VRAM_STR_MAX + 2];
    if (n > VRAM_STR_MAX) n = VRAM_STR_MAX + 1; /* too long: cannot match, still compared */
    memcpy(given, a, n);
    given[n] = '\0';
    return token_ok(given, h->token);
}

/* host (no port, no brackets) is a loopback name or the address bound to. */
static int host_allowed(vram__http *h, const char *host, size_t len)
{
    static const char *const loop[] = {"localhost", "127.0.0.1", "::1", "localhost.", NULL};
    for (const char *const *l = loop; *l; l++)
        if (strlen(*l) == len && strncasecmp(host, *l, len) == 0) return 1;
    if (len > 4 && strncmp(host, "127.", 4) == 0) {
        for (size_t i = 4; i < len; i++)
            if (!((host[i] >= '0' && host[i] <= '9') || host[i] == '.')) return 0;
        return 1;
    }
    return strlen(h->bind) == len && strncasecmp(host, h->bind, len) == 0;
}

/* Splits "host:port", "[v6]:port" or "host" into the host part. */
static void host_part(const char *hp, const char **host, size_t *len)
{
    if (*hp == '[') {
        const char *e = strchr(hp, ']');
        *host = hp + 1;
        *len = e ? (size_t)(e - hp - 1) : strlen(hp + 1);
        return;
    }
    const char *colon = strchr(hp, ':');
    if (colon && strchr(colon + 1, ':')) colon = NULL; /* a bare IPv6 address */
    *host = hp;
    *len = colon ? (size_t)(colon - hp) : strlen(hp);
}

/* DNS-rebinding and cross-site protection: Host must name this machine's
 * loopback (or the bound address), and Origin, when sent, too. */
static int origin_allowed(vram__http *h, struct MHD_Connection *c, const char **why)
{
    const char *host = header(c, MHD_HTTP_HEADER_HOST);
    const char *hn = NULL;
    size_t hl = 0;
    if (host) {
        host_part(host, &hn, &hl);
        if (!h->wildcard && !host_allowed(h, hn, hl)) {
            *why = "Forbidden: the Host header does not name this server (DNS rebinding?)";
            return 0;
        }
    }
    const char *origin = header(c, "Origin");
    if (!origin) return 1;
    const char *p = strstr(origin, "://");
    if (!p || (strncasecmp(origin, "http://", 7) != 0 && strncasecmp(origin, "https://", 8) != 0)) {
        *why = "Forbidden: requests from this Origin are not accepted";
        return 0;
    }
    const char *on;
    size_t ol;
    host_part(p + 3, &on, &ol);
    if (ol && on[ol - 1] == '/') ol--;
    if (host_allowed(h, on, ol)) return 1;
    if (h->wildcard && hn && hl == ol && strncasecmp(hn, on, ol) == 0) return 1; /* same origin */
    *why = "Forbidden: requests from this Origin are not accepted";
    return 0;
}

/* ---- jobs: slow work off the event threads ---- */

static void job_free(job *j)
{
    if (!j) return;
    json_decref(j->args);
    for (int i = 0; i < 4; i++)
        free(j->mcp_strings[i]);
    free(j->body);
    free(j);
}

static void job_run(job *j)
{
    if (j->is_mcp) {
        vram__mcp_http_resp resp;
        vram__mcp_http(j->h->mcp, &j->mreq, &resp);
        j->status = resp.status;
        j->body = resp.body;
        j->len = resp.body ? strlen(resp.body) : 0;
        memcpy(j->session_id, resp.session_id, sizeof j->session_id);
        j->allow = resp.allow;
    } else {
        vram__cmd_result res = {0};
        vram__command_run(j->h->m, j->cmd, j->args, &res);
        result_body(&res, &j->status, &j->body, &j->len);
        vram__cmd_result_clear(&res);
    }
}

static void *job_main(void *arg)
{
    job *j = arg;
    vram__http *h = j->h;
    struct MHD_Connection *c = j->conn;
    job_run(j);
    __atomic_store_n(&j->done, 1, __ATOMIC_RELEASE);
    MHD_resume_connection(c); /* j belongs to the event thread from here on */
    pthread_mutex_lock(&h->lock);
    h->jobs--;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->lock);
    return NULL;
}

/* Hands j to a thread of its own and suspends the connection; the handler
 * is called again once the answer is ready. On refusal answers 503. */
static enum MHD_Result start_job(vram__http *h, struct MHD_Connection *c, request *r, job *j)
{
    pthread_mutex_lock(&h->lock);
    int ok = !h->stopping && h->jobs < MAX_JOBS;
    if (ok) h->jobs++;
    pthread_mutex_unlock(&h->lock);
    if (!ok) {
        job_free(j);
        return send_error(c, r, 503, "EBUSY",
                          h->stopping ? "vramd is shutting down"
                                      : "too many slow requests in flight; try again",
                          "Retry-After", "1");
    }
    j->h = h;
    j->conn = c;
    r->job = j;
    MHD_suspend_connection(c);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    int rc = pthread_create(&t, &attr, job_main, j);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        j->status = 503;
        j->body = dump_line(json_pack("{s:{s:s, s:s}}", "error", "code", "EBUSY", "message",
                                      "cannot start a thread for this request; try again"),
                            &j->len);
        __atomic_store_n(&j->done, 1, __ATOMIC_RELEASE);
        MHD_resume_connection(c);
        pthread_mutex_lock(&h->lock);
        h->jobs--;
        pthread_cond_broadcast(&h->cond);
        pthread_mutex_unlock(&h->lock);
    }
    return MHD_YES;
}

static enum MHD_Result finish_job(struct MHD_Connection *c, request *r)
{
    job *j = r->job;
    char *body = j->body;
    j->body = NULL;
    const char *h1 = NULL, *v1 = NULL;
    if (j->session_id[0]) {
        h1 = "Mcp-Session-Id";
        v1 = j->session_id;
    } else if (j->allow) {
        h1 = MHD_HTTP_HEADER_ALLOW;
        v1 = j->allow;
    }
    enum MHD_Result ret =
        send_body(c, r, j->status, body, j->len, body ? "application/json" : NULL, h1, v1);
    return ret;
}

/* ---- handlers ---- */

static enum MHD_Result handle_root(vram__http *h, struct MHD_Connection *c, request *r)
{
    json_t *eps = json_array();
    for (int i = R_ROOT; i < NROUTES; i++) {
        const char *allow = routes[i].allow;
        json_array_append_new(eps,
                              json_pack("{s:s, s:s}", "path", routes[i].name, "methods", allow));
    }
    return send_json(c, r, 200,
                     json_pack("{s:s, s:s, s:s, s:o, s:s}", "name", "vramd", "version",
                               VRAM_VERSION, "backend", vram_manager_backend(h->m), "endpoints",
                               eps, "docs", "see README.md (HTTP API)"),
                     NULL, NULL);
}

static enum MHD_Result handle_metrics(vram__http *h, struct MHD_Connection *c, request *r)
{
    size_t len = 0;
    char *text = vram__metrics_render(h->mx, h->m, vram__mcp_session_count(h->mcp), &len);
    if (!text) return send_error(c, r, 503, "EHOSTMEM", "out of host memory", NULL, NULL);
    return send_body(c, r, 200, text, len, "text/plain; version=0.0.4; charset=utf-8", NULL, NULL);
}

/* Arguments of a command from the body (and the model in the path). */
static int command_args(request *r, json_t **out, char *err, size_t errlen)
{
    *out = NULL;
    size_t i = 0;
    while (i < r->len &&
           (r->body[i] == ' ' || r->body[i] == '\t' || r->body[i] == '\r' || r->body[i] == '\n'))
        i++;
    json_t *args;
    if (i == r->len) {
        args = json_object();
    } else {
        json_error_t je;
        args = json_loadb(r->body, r->len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &je);
        if (!args) {
            snprintf(err, errlen, "malformed JSON body: %s (line %d, column %d)", je.text, je.line,
                     je.column);
            return VRAM_EINVAL;
        }
        if (!json_is_object(args)) {
            json_decref(args);
            snprintf(err, errlen, "the body must be a JSON object, e.g. {\"model\": \"NAME\"}");
            return VRAM_EINVAL;
        }
    }
    if (!args) {
        snprintf(err, errlen, "out of host memory");
        return VRAM_EHOSTMEM;
    }
    if (r->name[0]) {
        json_t *bm = json_object_get(args, "model");
        if (bm && (!json_is_string(bm) || strcmp(json_string_value(bm), r->name) != 0)) {
            json_decref(args);
            snprintf(err, errlen, "'model' in the body differs from the model in the path");
            return VRAM_EINVAL;
        }
        json_object_set_new(args, "model", json_string(r->name));
    }
    *out = args;
    return 0;
}

static enum MHD_Result handle_command(vram__http *h, struct MHD_Connection *c, request *r,
                                      const char *name)
{
    const vram__command *cmd = vram__command_find(name);
    if (!cmd) return send_error(c, r, 500, "EINVAL", "internal: unknown command", NULL, NULL);
    json_t *args = NULL;
    char err[300];
    int rc = command_args(r, &args, err, sizeof err);
    if (rc < 0)
        return send_error(c, r, vram__cmd_http_status(rc), vram_err_name(rc), err, NULL, NULL);
    if (cmd->slow) {
        job *j = calloc(1, sizeof *j);
        if (!j) {
            json_decref(args);
            return send_error(c, r, 503, "EHOSTMEM", "out of host memory", NULL, NULL);
        }
        j->cmd = cmd;
        j->args = args;
        return start_job(h, c, r, j);
    }
    vram__cmd_result res = {0};
    vram__command_run(h->m, cmd, args, &res);
    json_decref(args);
    unsigned status;
    char *body = NULL;
    size_t len = 0;
    result_body(&res, &status, &body, &len);
    vram__cmd_result_clear(&res);
    if (!body) return MHD_NO;
    return send_body(c, r, status, body, len, "application/json", NULL, NULL);
}

static enum MHD_Result handle_mcp(vram__http *h, struct MHD_Connection *c, request *r,
                                  const char *method)
{
    vram__mcp_http_req q = {
        .method = method,
        .session_id = header(c, "Mcp-Session-Id"),
        .protocol_version = header(c, "MCP-Protocol-Version"),
        .accept = header(c, MHD_HTTP_HEADER_ACCEPT),
        .content_type = header(c, MHD_HTTP_HEADER_CONTENT_TYPE),
        .body = r->body,
        .body_len = r->len,
    };
    if (vram__mcp_http_is_slow(&q)) {
        job *j = calloc(1, sizeof *j);
        if (!j) return send_error(c, r, 503, "EHOSTMEM", "out of host memory", NULL, NULL);
        /* copies: the job reads them from another thread */
        const char *src[4] = {q.session_id, q.protocol_version, q.accept, q.content_type};
        for (int i = 0; i < 4; i++)
            j->mcp_strings[i] = src[i] ? strdup(src[i]) : NULL;
        j->is_mcp = 1;
        j->mreq = q;
        j->mreq.method = "POST";
        j->mreq.session_id = j->mcp_strings[0];
        j->mreq.protocol_version = j->mcp_strings[1];
        j->mreq.accept = j->mcp_strings[2];
        j->mreq.content_type = j->mcp_strings[3];
        return start_job(h, c, r, j); /* r->body stays alive until the request completes */
    }
    vram__mcp_http_resp resp;
    vram__mcp_http(h->mcp, &q, &resp);
    const char *h1 = NULL, *v1 = NULL;
    if (resp.session_id[0]) {
        h1 = "Mcp-Session-Id";
        v1 = resp.session_id;
    } else if (resp.allow) {
        h1 = MHD_HTTP_HEADER_ALLOW;
        v1 = resp.allow;
    }
    return send_body(c, r, resp.status, resp.body, resp.body ? strlen(resp.body) : 0,
                     resp.body ? "application/json" : NULL, h1, v1);
}

static int method_of(const char *m)
{
    if (strcmp(m, "GET") == 0) return M_GET;
    if (strcmp(m, "HEAD") == 0) return M_HEAD;
    if (strcmp(m, "POST") == 0) return M_POST;
    if (strcmp(m, "PATCH") == 0) return M_PATCH;
    if (strcmp(m, "DELETE") == 0) return M_DELETE;
    return M_OTHER;
}

/* The command for r's route and method: a name, "" for a built-in page,
 * NULL when the method is not allowed there. */
static const char *route_command(const request *r)
{
    const route *rt = &routes[r->route];
    switch (r->method) {
    case M_GET:
    case M_HEAD: return rt->get;
    case M_POST: return rt->post;
    case M_PATCH: return rt->patch;
    default: return NULL;
    }
}

/* First call of a request, its headers read: everything that can be
 * refused before reading a body is refused here. Returns 1 when an answer
 * was queued (*ret set). */
static int first_call(vram__http *h, struct MHD_Connection *c, request *r, const char *url,
                      const char *method, enum MHD_Result *ret)
{
    const char *why = NULL;
    const char *name = NULL;
    size_t name_len = 0;
    char msg[320];
    r->route = match_route(url, &name, &name_len);
    r->method = method_of(method);
    if (!origin_allowed(h, c, &why)) {
        *ret = send_error(c, r, 403, "FORBIDDEN", why, NULL, NULL);
        return 1;
    }
    if (r->route == R_OTHER) {
        snprintf(msg, sizeof msg, "no such endpoint: %.16s %.200s (GET / lists them)", method, url);
        *ret = send_error(c, r, 404, "NOT_FOUND", msg, NULL, NULL);
        return 1;
    }
    if (name) {
        if (name_len == 0 || name_len >= sizeof r->name) {
            *ret = send_error(c, r, 404, "NOT_FOUND",
                              name_len ? "model name too long" : "no model name in the path", NULL,
                              NULL);
            return 1;
        }
        memcpy(r->name, name, name_len);
        r->name[name_len] = '\0';
    }
    int allowed = r->route == R_MCP ? 1 : route_command(r) != NULL;
    if (!allowed) {
        snprintf(msg, sizeof msg, "%.16s is not allowed on %s (allowed: %s)", method,
                 routes[r->route].name, routes[r->route].allow);
        *ret = send_error(c, r, 405, "METHOD_NOT_ALLOWED", msg, MHD_HTTP_HEADER_ALLOW,
                          routes[r->route].allow);
        return 1;
    }
    int changes = r->route == R_MCP || (r->method != M_GET && r->method != M_HEAD);
    if (h->token[0] && changes && !authorized(h, c)) {
        *ret = send_error(c, r, 401, "UNAUTHORIZED",
                          "this request needs 'Authorization: Bearer TOKEN' (vramd runs with "
                          "--token / VRAM_TOKEN)",
                          "WWW-Authenticate", "Bearer realm=\"vramd\"");
        return 1;
    }
    const char *cl = header(c, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end = NULL;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (errno || end == cl || n > VRAM__HTTP_BODY_MAX) {
            snprintf(msg, sizeof msg, "request body too large (limit %d bytes)",
                     VRAM__HTTP_BODY_MAX);
            *ret = send_error(c, r, 413, "PAYLOAD_TOO_LARGE", msg, NULL, NULL);
            return 1;
        }
    }
    return 0;
}

static enum MHD_Result dispatch(vram__http *h, struct MHD_Connection *c, request *r,
                                const char *method)
{
    if (r->route == R_MCP) return handle_mcp(h, c, r, method);
    const char *cmd = route_command(r);
    if (r->route == R_ROOT) return handle_root(h, c, r);
    if (r->route == R_METRICS) return handle_metrics(h, c, r);
    return handle_command(h, c, r, cmd);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **con_cls)
{
    vram__http *h = cls;
    request *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r) return MHD_NO;
        *con_cls = r;
        r->t0 = vram__now();
        if (vram_log_enabled(VRAM_LOG_DEBUG)) {
            if (asprintf(&r->log_url, "%.16s %.256s", method, url) < 0) r->log_url = NULL;
        }
        enum MHD_Result ret;
        if (first_call(h, c, r, url, method, &ret)) return ret;
        r->started = 1;
        /* answer on a later call, once the whole request is in: an answer
         * queued now would make libmicrohttpd close the connection */
        return MHD_YES;
    }
    if (r->job) {
        if (!__atomic_load_n(&r->job->done, __ATOMIC_ACQUIRE)) return MHD_YES;
        return finish_job(c, r);
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (r->too_large || r->len + n > VRAM__HTTP_BODY_MAX) {
            r->too_large = 1;
            r->discarded += n;
            return r->discarded > DISCARD_MAX ? MHD_NO : MHD_YES;
        }
        if (r->len + n + 1 > r->cap) {
            size_t cap = r->cap ? r->cap : 1024;
            while (cap < r->len + n + 1)
                cap *= 2;
            char *b = realloc(r->body, cap);
            if (!b) return MHD_NO;
            r->body = b;
            r->cap = cap;
        }
        memcpy(r->body + r->len, upload_data, n);
        r->len += n;
        r->body[r->len] = '\0';
        return MHD_YES;
    }
    if (r->status) return MHD_YES; /* answered already */
    if (r->too_large) {
        char msg[120];
        snprintf(msg, sizeof msg, "request body too large (limit %d bytes)", VRAM__HTTP_BODY_MAX);
        return send_error(c, r, 413, "PAYLOAD_TOO_LARGE", msg, NULL, NULL);
    }
    (void)version;
    return dispatch(h, c, r, method);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    vram__http *h = cls;
    request *r = *con_cls;
    (void)c;
    if (!r) return;
    double dt = vram__now() - r->t0;
    vram__metrics_count(h->mx, (size_t)r->route, r->status, dt);
    if (r->log_url)
        vram_log(VRAM_LOG_DEBUG, "http: %s -> %u (%.3f ms)%s", r->log_url, r->status, dt * 1e3,
                  toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (connection ended early)");
    job_free(r->job);
    free(r->body);
    free(r->log_url);
    free(r);
    *con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];
    (void)cls;
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    vram_log(VRAM_LOG_DEBUG, "http: libmicrohttpd: %s", line);
}

static void on_mhd_panic(void *cls, const char *file, unsigned int line, const char *reason)
{
    (void)cls;
    vram_log(VRAM_LOG_ERROR, "http: libmicrohttpd internal failure at %s:%u: %s; exiting",
              file ? file : "?", line, reason ? reason : "");
    _exit(70);
}

/* ---- life cycle ---- */

int vram__http_listen(const vram__http_opts *o, vram__http **out, char *err, size_t errlen)
{
    *out = NULL;
    const char *bind_addr = o->bind && *o->bind ? o->bind : "127.0.0.1";
    if (o->port < 0 || o->port > 65535) {
        snprintf(err, errlen, "port %d is not between 0 and 65535", o->port);
        return VRAM_EINVAL;
    }
    char port_text[16];
    snprintf(port_text, sizeof port_text, "%d", o->port);
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    const char *node = bind_addr;
    char v6[128];
    if (bind_addr[0] == '[') { /* "[::1]" */
        snprintf(v6, sizeof v6, "%s", bind_addr + 1);
        char *e = strchr(v6, ']');
        if (e) *e = '\0';
        node = v6;
    }
    int gai = getaddrinfo(node, port_text, &hints, &ai);
    if (gai != 0 || !ai) {
        snprintf(err, errlen, "cannot listen on %s: %s", bind_addr, gai_strerror(gai));
        return VRAM_EIO;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create a socket for %s: %s", bind_addr, strerror(errno));
        freeaddrinfo(ai);
        return VRAM_EIO;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ai->ai_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    int wildcard = 0;
    if (ai->ai_family == AF_INET)
        wildcard = ((struct sockaddr_in *)ai->ai_addr)->sin_addr.s_addr == htonl(INADDR_ANY);
    else if (ai->ai_family == AF_INET6)
        wildcard = memcmp(&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr, &in6addr_any,
                          sizeof in6addr_any) == 0;
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 512) < 0) {
        int e = errno;
        const char *hint = e == EADDRINUSE      ? " (another vramd, or another program, is using "
                                                  "it: stop it or choose another --port)"
                           : e == EACCES        ? " (ports below 1024 need privileges)"
                           : e == EADDRNOTAVAIL ? " (this machine has no such address: see --bind)"
                                                : "";
        if (e == EADDRINUSE)
            snprintf(err, errlen, "%s port %d is already in use%s", bind_addr, o->port, hint);
        else
            snprintf(err, errlen, "cannot listen on %s port %d: %s%s", bind_addr, o->port,
                     strerror(e), hint);
        close(fd);
        freeaddrinfo(ai);
        return VRAM_EIO;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int port = o->port;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                              : ((struct sockaddr_in *)&ss)->sin_port);
    vram__http *h = calloc(1, sizeof *h);
    if (!h) {
        close(fd);
        snprintf(err, errlen, "out of host memory");
        return VRAM_EHOSTMEM;
    }
    h->listen_fd = fd;
    h->port = port;
    h->wildcard = wildcard;
    snprintf(h->bind, sizeof h->bind, "%s", node);
    snprintf(h->token, sizeof h->token, "%s", o->token ? o->token : "");
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    h->threads = o->threads > 0 ? o->threads : (int)(ncpu < 2 ? 2 : ncpu > 16 ? 16 : ncpu);
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->cond, NULL);
    *out = h;
    return 0;
}

int vram__http_port(const vram__http *h)
{
    return h ? h->port : 0;
}

int vram__http_start(vram__http *h, vram_manager *m, char *err, size_t errlen)
{
    h->m = m;
    h->mcp = vram__mcp_create(m);
    for (int i = 0; i < NROUTES; i++)
        h->route_names[i] = routes[i].name;
    h->mx = vram__metrics_create(h->route_names, NROUTES);
    if (!h->mcp || !h->mx) {
        snprintf(err, errlen, "out of host memory");
        return VRAM_EHOSTMEM;
    }
    MHD_set_panic_func(on_mhd_panic, NULL);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG;
    h->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER,
                                 on_mhd_log, h, MHD_OPTION_LISTEN_SOCKET, (MHD_socket)h->listen_fd,
                                 MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)h->threads,
                                 MHD_OPTION_CONNECTION_LIMIT, (unsigned int)1000,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)60,
                                 MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_END);
    if (!h->daemon) {
        snprintf(err, errlen, "libmicrohttpd could not start on port %d", h->port);
        return VRAM_EIO;
    }
    return 0;
}

int vram__http_stop(vram__http *h, double grace)
{
    if (!h) return 0;
    pthread_mutex_lock(&h->lock);
    h->stopping = 1;
    pthread_mutex_unlock(&h->lock);
    if (h->daemon) {
        /* stop accepting; the listening socket comes back to us (when
         * quiescing fails, MHD_stop_daemon closes it) */
        MHD_socket fd = MHD_quiesce_daemon(h->daemon);
        if (fd != MHD_INVALID_SOCKET) close(fd);
        h->listen_fd = -1;
    }
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    double end = (double)until.tv_sec + (double)until.tv_nsec * 1e-9 + grace;
    until.tv_sec = (time_t)end;
    until.tv_nsec = (long)((end - (double)until.tv_sec) * 1e9);
    pthread_mutex_lock(&h->lock);
    while (h->jobs > 0)
        if (pthread_cond_timedwait(&h->cond, &h->lock, &until) == ETIMEDOUT) break;
    int left = h->jobs;
    pthread_mutex_unlock(&h->lock);
    if (left > 0) return left; /* suspended connections: stopping MHD now is not allowed */
    if (h->daemon) MHD_stop_daemon(h->daemon);
    if (h->listen_fd >= 0) close(h->listen_fd);
    vram__mcp_destroy(h->mcp);
    vram__metrics_destroy(h->mx);
    pthread_mutex_destroy(&h->lock);
    pthread_cond_destroy(&h->cond);
    free(h);
    return 0;
}
