/* http.c - the HTTP server (libmicrohttpd thread pool): request handling and life cycle; seed API, /api/v1, /metrics, /mcp. */
#define _GNU_SOURCE
#include "server/http.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/base.h"
#include "server/dashboard.h"
#include "server/http_internal.h"

/* Threads and locks: see http_internal.h. */

static const char *header(struct MHD_Connection *c, const char *name)
{
    return MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
}

/* ---- handlers ---- */

/* The dashboard page (a browser asks for text/html): built in, no CDN. */
static enum MHD_Result send_dashboard(struct MHD_Connection *c, request *r)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        vram__dashboard_html_len, (void *)vram__dashboard_html, MHD_RESPMEM_PERSISTENT);
    if (!resp) return MHD_NO;
    static const char *const hdrs[][2] = {
        {MHD_HTTP_HEADER_CONTENT_TYPE, "text/html; charset=utf-8"},
        {MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache"},
        {"Content-Security-Policy",
         "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
         "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
         "frame-ancestors 'none'"},
        {"X-Content-Type-Options", "nosniff"},
        {"X-Frame-Options", "DENY"},
        {"Referrer-Policy", "no-referrer"},
        {MHD_HTTP_HEADER_VARY, "Accept"},
    };
    for (size_t i = 0; i < sizeof hdrs / sizeof hdrs[0]; i++)
        MHD_add_response_header(resp, hdrs[i][0], hdrs[i][1]);
    r->status = 200;
    enum MHD_Result ret = MHD_queue_response(c, 200, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result handle_root(vram__http *h, struct MHD_Connection *c, request *r)
{
    const char *accept = header(c, MHD_HTTP_HEADER_ACCEPT);
    if (accept && strstr(accept, "text/html")) return send_dashboard(c, r);
    json_t *eps = json_array();
    for (int i = R_ROOT; i < NROUTES; i++) {
        const char *allow = vram__http_routes[i].allow;
        json_array_append_new(eps,
                              json_pack("{s:s, s:s}", "path", vram__http_routes[i].name, "methods", allow));
    }
    return vram__http_send_json(c, r, 200,
                     json_pack("{s:s, s:s, s:s, s:o, s:s}", "name", "vramd", "version",
                               VRAM_VERSION, "backend", vram_manager_backend(h->m), "endpoints",
                               eps, "docs", "see README.md (HTTP API)"),
                     NULL, NULL);
}

/* GET /api/v1/events?since=N&limit=L: the event log from cursor N. */
static enum MHD_Result handle_events(vram__http *h, struct MHD_Connection *c, request *r)
{
    const char *names[2] = {"since", "limit"};
    unsigned long long v[2] = {0, 100};
    for (int i = 0; i < 2; i++) {
        const char *t = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, names[i]);
        if (!t) continue;
        char *end = NULL;
        errno = 0;
        unsigned long long n = strtoull(t, &end, 10);
        if (errno || end == t || *end || t[0] == '-' || (i == 1 && (n == 0 || n > 1000))) {
            char msg[160];
            snprintf(msg, sizeof msg, "'%s' must be %s, not '%.40s'", names[i],
                     i ? "a count from 1 to 1000" : "an event number (the 'next' of the last answer)",
                     t);
            return vram__http_send_error(c, r, 400, "EINVAL", msg, NULL, NULL);
        }
        v[i] = n;
    }
    json_t *o = vram__events_json(h->events, (uint64_t)v[0], (unsigned)v[1]);
    if (!o) return vram__http_send_error(c, r, 503, "EHOSTMEM", "out of host memory", NULL, NULL);
    return vram__http_send_json(c, r, 200, o, NULL, NULL);
}

static enum MHD_Result handle_metrics(vram__http *h, struct MHD_Connection *c, request *r)
{
    size_t len = 0;
    char *text = vram__metrics_render(h->mx, h->m, vram__mcp_session_count(h->mcp), &len);
    if (!text) return vram__http_send_error(c, r, 503, "EHOSTMEM", "out of host memory", NULL, NULL);
    return vram__http_send_body(c, r, 200, text, len, "text/plain; version=0.0.4; charset=utf-8", NULL, NULL);
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
    if (!cmd) return vram__http_send_error(c, r, 500, "EINVAL", "internal: unknown command", NULL, NULL);
    json_t *args = NULL;
    char err[300];
    int rc = command_args(r, &args, err, sizeof err);
    if (rc < 0)
        return vram__http_send_error(c, r, vram__cmd_http_status(rc), vram_err_name(rc), err, NULL, NULL);
    if (cmd->slow) {
        job *j = calloc(1, sizeof *j);
        if (!j) {
            json_decref(args);
            return vram__http_send_error(c, r, 503, "EHOSTMEM", "out of host memory", NULL, NULL);
        }
        j->cmd = cmd;
        j->args = args;
        return vram__http_start_job(h, c, r, j);
    }
    vram__cmd_result res = {0};
    vram__command_run(h->m, cmd, args, &res);
    json_decref(args);
    unsigned status;
    char *body = NULL;
    size_t len = 0;
    vram__http_result_body(&res, &status, &body, &len);
    vram__cmd_result_clear(&res);
    if (!body) return MHD_NO;
    return vram__http_send_body(c, r, status, body, len, "application/json", NULL, NULL);
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
    vram__conn *k = vram__http_conn_of(c);
    q.client = k ? k->addr : NULL;
    if (vram__mcp_http_is_slow(&q)) {
        job *j = calloc(1, sizeof *j);
        if (!j) return vram__http_send_error(c, r, 503, "EHOSTMEM", "out of host memory", NULL, NULL);
        /* copies: the job reads them from another thread */
        const char *src[4] = {q.session_id, q.protocol_version, q.accept, q.content_type};
        for (int i = 0; i < 4; i++)
            j->mcp_strings[i] = src[i] ? strdup(src[i]) : NULL;
        j->mcp_strings[4] = malloc(r->len + 1); /* the job may outlive the request (stop) */
        if (j->mcp_strings[4]) memcpy(j->mcp_strings[4], r->body ? r->body : "", r->len), j->mcp_strings[4][r->len] = 0;
        j->is_mcp = 1;
        j->mreq = q;
        j->mreq.method = "POST";
        j->mreq.session_id = j->mcp_strings[0];
        j->mreq.protocol_version = j->mcp_strings[1];
        j->mreq.accept = j->mcp_strings[2];
        j->mreq.content_type = j->mcp_strings[3];
        j->mreq.body = j->mcp_strings[4] ? j->mcp_strings[4] : "";
        j->mreq.body_len = j->mcp_strings[4] ? r->len : 0;
        j->mreq.client = NULL; /* tools/call only: it opens no session */
        return vram__http_start_job(h, c, r, j);
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
    return vram__http_send_body(c, r, resp.status, resp.body, resp.body ? strlen(resp.body) : 0,
                     resp.body ? "application/json" : NULL, h1, v1);
}

/* Counts of the headers that must come once, and names that are not tokens. */
typedef struct header_scan {
    int host, auth, length, te;
    int bad_name;
} header_scan;

static enum MHD_Result scan_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    header_scan *st = cls;
    (void)kind;
    (void)value;
    if (!key || !*key || strpbrk(key, " \t\r\n")) st->bad_name = 1;
    else if (!strcasecmp(key, MHD_HTTP_HEADER_HOST)) st->host++;
    else if (!strcasecmp(key, MHD_HTTP_HEADER_AUTHORIZATION)) st->auth++;
    else if (!strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH)) st->length++;
    else if (!strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING)) st->te++;
    return MHD_YES;
}

/* Why the request's head is ambiguous (a smuggling or check-bypass risk),
 * or NULL: duplicate Host, Authorization or Content-Length, a header name
 * with white space ("Host :"), Content-Length with Transfer-Encoding, a
 * %00 in the path, an HTTP/1.1 request without Host. */
static const char *head_problem(struct MHD_Connection *c, const char *version)
{
    header_scan st = {0};
    MHD_get_connection_values(c, MHD_HEADER_KIND, scan_header, &st);
    if (st.bad_name) return "malformed header name (white space before ':'?)";
    if (st.host > 1) return "duplicate Host header";
    if (st.auth > 1) return "duplicate Authorization header";
    if (st.length > 1) return "duplicate Content-Length header";
    if (st.te > 1) return "duplicate Transfer-Encoding header";
    if (st.length && st.te) return "Content-Length together with Transfer-Encoding";
    if (st.host == 0 && version && strcmp(version, MHD_HTTP_VERSION_1_0) != 0)
        return "HTTP/1.1 request without a Host header";
    vram__conn *k = vram__http_conn_of(c);
    if (k && k->bad_path) return "the path holds a NUL byte (%00)";
    return NULL;
}

/* First call of a request, its headers read: everything that can be
 * refused before reading a body is refused here. Returns 1 when an answer
 * was queued (*ret set). */
static int first_call(vram__http *h, struct MHD_Connection *c, request *r, const char *url,
                      const char *method, const char *version, enum MHD_Result *ret)
{
    const char *why = head_problem(c, version);
    if (why) {
        *ret = vram__http_send_error(c, r, 400, "BAD_REQUEST", why, NULL, NULL);
        return 1;
    }
    const char *name = NULL;
    size_t name_len = 0;
    char msg[320];
    r->route = vram__http_match_route(url, &name, &name_len);
    r->method = vram__http_method(method);
    if (!vram__http_origin_ok(&h->guard, header(c, MHD_HTTP_HEADER_HOST), header(c, "Origin"),
                             &why)) {
        *ret = vram__http_send_error(c, r, 403, "FORBIDDEN", why, NULL, NULL);
        return 1;
    }
    if (r->route == R_OTHER) {
        snprintf(msg, sizeof msg, "no such endpoint: %.16s %.200s (GET / lists them)", method, url);
        *ret = vram__http_send_error(c, r, 404, "NOT_FOUND", msg, NULL, NULL);
        return 1;
    }
    if (name) {
        if (name_len == 0 || name_len >= sizeof r->name) {
            *ret = vram__http_send_error(c, r, 404, "NOT_FOUND",
                              name_len ? "model name too long" : "no model name in the path", NULL,
                              NULL);
            return 1;
        }
        memcpy(r->name, name, name_len);
        r->name[name_len] = '\0';
        if (!vram__utf8_valid(r->name)) {
            *ret = vram__http_send_error(c, r, 400, "BAD_REQUEST",
                                         "the model name in the path is not valid UTF-8 (send "
                                         "it percent-encoded as UTF-8)",
                                         NULL, NULL);
            return 1;
        }
    }
    int allowed = r->route == R_MCP ? 1 : vram__http_route_command(r->route, r->method) != NULL;
    if (!allowed) {
        snprintf(msg, sizeof msg, "%.16s is not allowed on %s (allowed: %s)", method,
                 vram__http_routes[r->route].name, vram__http_routes[r->route].allow);
        *ret = vram__http_send_error(c, r, 405, "METHOD_NOT_ALLOWED", msg, MHD_HTTP_HEADER_ALLOW,
                          vram__http_routes[r->route].allow);
        return 1;
    }
    int changes = r->route == R_MCP || (r->method != M_GET && r->method != M_HEAD);
    if (h->guard.token[0] && changes &&
        !vram__http_authorized(&h->guard, header(c, MHD_HTTP_HEADER_AUTHORIZATION))) {
        *ret = vram__http_send_error(c, r, 401, "UNAUTHORIZED",
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
            *ret = vram__http_send_error(c, r, 413, "PAYLOAD_TOO_LARGE", msg, NULL, NULL);
            return 1;
        }
    }
    return 0;
}

static enum MHD_Result dispatch(vram__http *h, struct MHD_Connection *c, request *r,
                                const char *method)
{
    if (r->route == R_MCP) return handle_mcp(h, c, r, method);
    const char *cmd = vram__http_route_command(r->route, r->method);
    if (r->route == R_ROOT) return handle_root(h, c, r);
    if (r->route == R_METRICS) return handle_metrics(h, c, r);
    if (r->route == R_EVENTS) return handle_events(h, c, r);
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
        if (first_call(h, c, r, url, method, version, &ret)) {
            vram__http_conn_phase(h, c, 1);
            return ret;
        }
        r->started = 1;
        /* answer on a later call, once the whole request is in: an answer
         * queued now would make libmicrohttpd close the connection */
        return MHD_YES;
    }
    if (r->job) {
        if (!__atomic_load_n(&r->job->done, __ATOMIC_ACQUIRE)) return MHD_YES;
        return vram__http_finish_job(c, r);
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (r->too_large || r->len + n > VRAM__HTTP_BODY_MAX) {
            r->too_large = 1;
            r->discarded += n;
            /* a chunked body past the limit is read to its end (within the
             * request deadline) and answered 413 below; only a flood past
             * DISCARD_MAX is hung up on */
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
    vram__http_conn_phase(h, c, 1); /* the whole request is in */
    if (r->too_large) {
        char msg[120];
        snprintf(msg, sizeof msg, "request body too large (limit %d bytes)", VRAM__HTTP_BODY_MAX);
        return vram__http_send_error(c, r, 413, "PAYLOAD_TOO_LARGE", msg, NULL, NULL);
    }
    return dispatch(h, c, r, method);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    vram__http *h = cls;
    request *r = *con_cls;
    if (!r) return;
    vram__http_conn_phase(h, c, 0); /* waits for its next request */
    double dt = vram__now() - r->t0;
    vram__metrics_count(h->mx, (size_t)r->route, r->status, dt);
    if (r->log_url)
        vram_log(VRAM_LOG_DEBUG, "http: %s -> %u (%.3f ms)%s", r->log_url, r->status, dt * 1e3,
                  toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (connection ended early)");
    vram__http_job_free(r->job);
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

/* Why bind or listen failed, with what to do about it. */
static void bind_error(int e, const char *bind_addr, int port, char *err, size_t errlen)
{
    const char *hint = e == EADDRINUSE      ? " (another vramd, or another program, is using "
                                              "it: stop it or choose another --port)"
                       : e == EACCES        ? " (ports below 1024 need privileges)"
                       : e == EADDRNOTAVAIL ? " (this machine has no such address: see --bind)"
                                            : "";
    if (e == EADDRINUSE)
        snprintf(err, errlen, "%s port %d is already in use%s", bind_addr, port, hint);
    else
        snprintf(err, errlen, "cannot listen on %s port %d: %s%s", bind_addr, port, strerror(e),
                 hint);
}

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
        bind_error(errno, bind_addr, o->port, err, errlen);
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
    int rc = vram__http_guard_init(&h->guard, node, wildcard, o->token, o->allowed_hosts, err,
                                   errlen);
    if (rc < 0) {
        close(fd);
        free(h);
        return rc;
    }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    h->threads = o->threads > 0 ? o->threads : (int)(ncpu < 2 ? 2 : ncpu > 16 ? 16 : ncpu);
    h->request_timeout = o->request_timeout > 0 ? o->request_timeout : 10.0;
    h->max_conns = o->max_connections > 0 ? o->max_connections : 1000;
    h->max_per_client = o->max_per_client > 0 ? o->max_per_client : 64;
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
        h->route_names[i] = vram__http_routes[i].name;
    h->mx = vram__metrics_create(h->route_names, NROUTES);
    h->events = vram__events_create();
    if (!h->mcp || !h->mx || !h->events) {
        snprintf(err, errlen, "out of host memory");
        return VRAM_EHOSTMEM;
    }
    if (vram__http_conns_start(h) < 0) {
        snprintf(err, errlen, "cannot start the connection watchdog thread");
        return VRAM_EHOSTMEM;
    }
    MHD_set_panic_func(on_mhd_panic, NULL);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG;
    h->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER,
                                 on_mhd_log, h, MHD_OPTION_LISTEN_SOCKET, (MHD_socket)h->listen_fd,
                                 MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)h->threads,
                                 /* our own caps come first (http_conns.c); this one
                                    only bounds a burst between two of its checks */
                                 MHD_OPTION_CONNECTION_LIMIT, (unsigned int)h->max_conns + 64,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)60,
                                 MHD_OPTION_STRICT_FOR_CLIENT, (int)1,
                                 MHD_OPTION_UNESCAPE_CALLBACK, vram__http_unescape, h,
                                 MHD_OPTION_NOTIFY_CONNECTION, vram__http_on_connection, h,
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
         * quiescing fails, MHD_stop_daemon closes it). MHD's threads may
         * still hold its number, so it is closed only after
         * MHD_stop_daemon; shutdown() makes new connections fail now */
        MHD_socket fd = MHD_quiesce_daemon(h->daemon);
        if (fd != MHD_INVALID_SOCKET) shutdown(fd, SHUT_RDWR);
        h->listen_fd = fd != MHD_INVALID_SOCKET ? fd : -1;
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
    if (left > 0) {
        /* past the grace: those clients get a 503 saying so, not an empty
         * reply; the jobs go on (they hold h), their results dropped */
        vram__http_jobs_abandon(h);
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 2;
        pthread_mutex_lock(&h->lock);
        while (h->stop_answers > 0)
            if (pthread_cond_timedwait(&h->cond, &h->lock, &until) == ETIMEDOUT) break;
        pthread_mutex_unlock(&h->lock);
        return left;
    }
    vram__http_conns_stop(h);
    if (h->daemon) MHD_stop_daemon(h->daemon);
    vram__http_conns_free(h);
    if (h->listen_fd >= 0) close(h->listen_fd);
    vram__mcp_destroy(h->mcp);
    vram__metrics_destroy(h->mx);
    vram__events_destroy(h->events);
    pthread_mutex_destroy(&h->lock);
    pthread_cond_destroy(&h->cond);
    free(h);
    return 0;
}
