/* mcp_bridge.c - vramctl mcp: MCP on stdin/stdout, each message forwarded to vramd's /mcp. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "client.h"
#include "vramctl.h"

/* One message on its way to vramd. */
typedef struct xfer {
    CURL *easy;
    struct curl_slist *headers;
    char *line; /* the message as sent */
    json_t *id; /* its id (NULL for notifications and responses) */
    buf out;
    int is_init;
    int retried;
    struct xfer *next;
} xfer;

static struct {
    CURLM *multi;
    char session[128];
    char version[32];
    char *init_line; /* the client's initialize, replayed when vramd forgot the session */
    xfer *live;
} mb;

/* The client's input not yet forwarded. */
typedef struct inbuf {
    char *data;
    size_t len, cap;
    int eof;
} inbuf;

static void mcp_write(json_t *msg)
{
    char *text = json_dumps(msg, JSON_COMPACT);
    if (!text) return;
    if (fputs(text, stdout) == EOF || fputc('\n', stdout) == EOF || fflush(stdout) == EOF) {
        free(text);
        exit(0); /* the client went away */
    }
    free(text);
}

static void mcp_error(json_t *id, int code, const char *message)
{
    if (!id) return; /* nothing may answer a notification */
    json_t *e = json_pack("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", id, "error", "code",
                          code, "message", message);
    mcp_write(e);
    json_decref(e);
}

static struct curl_slist *mcp_headers(void)
{
    struct curl_slist *h = client_headers(1);
    h = curl_slist_append(h, "Accept: application/json, text/event-stream");
    if (mb.session[0]) {
        char s[160];
        snprintf(s, sizeof s, "Mcp-Session-Id: %s", mb.session);
        h = curl_slist_append(h, s);
    }
    if (mb.version[0]) {
        char s[64];
        snprintf(s, sizeof s, "MCP-Protocol-Version: %s", mb.version);
        h = curl_slist_append(h, s);
    }
    return h;
}

static xfer *mcp_start(const char *line, json_t *id, int is_init)
{
    xfer *x = calloc(1, sizeof *x);
    if (!x) die(EXIT_FAILED, "out of memory");
    x->line = strdup(line);
    x->id = id ? json_incref(id) : NULL;
    x->is_init = is_init;
    x->headers = mcp_headers();
    x->easy = client_easy("POST", "/mcp", x->line, &x->out, x->headers);
    curl_easy_setopt(x->easy, CURLOPT_PRIVATE, x);
    curl_multi_add_handle(mb.multi, x->easy);
    x->next = mb.live;
    mb.live = x;
    return x;
}

static void mcp_free(xfer *x)
{
    xfer **pp = &mb.live;
    while (*pp && *pp != x)
        pp = &(*pp)->next;
    if (*pp) *pp = x->next;
    curl_multi_remove_handle(mb.multi, x->easy);
    curl_easy_cleanup(x->easy);
    curl_slist_free_all(x->headers);
    free(x->line);
    json_decref(x->id);
    free(x->out.data);
    free(x);
}

/* Replays the client's initialize (and initialized) after vramd lost the
 * session, e.g. because it restarted. Returns 1 on success. */
static int mcp_reinit(void)
{
    if (!mb.init_line) return 0;
    mb.session[0] = '\0';
    buf b = {0};
    struct curl_slist *h = mcp_headers();
    CURL *e = client_easy("POST", "/mcp", mb.init_line, &b, h);
    int ok = curl_easy_perform(e) == CURLE_OK;
    long status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    struct curl_header *sh = NULL;
    if (ok && status == 200 &&
        curl_easy_header(e, "Mcp-Session-Id", 0, CURLH_HEADER, -1, &sh) == CURLHE_OK)
        snprintf(mb.session, sizeof mb.session, "%s", sh->value);
    else
        ok = 0;
    curl_easy_cleanup(e);
    curl_slist_free_all(h);
    free(b.data);
    if (!ok) return 0;
    static const char note[] = "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}";
    b = (buf){0};
    h = mcp_headers();
    e = client_easy("POST", "/mcp", note, &b, h);
    curl_easy_perform(e);
    curl_easy_cleanup(e);
    curl_slist_free_all(h);
    free(b.data);
    fprintf(stderr, "vramctl mcp: vramd had forgotten the session; opened a new one\n");
    return 1;
}

/* The answer to the client's initialize: keep its session id and protocol
 * version for the messages after it. */
static void mcp_note_session(xfer *x)
{
    struct curl_header *sh = NULL;
    if (curl_easy_header(x->easy, "Mcp-Session-Id", 0, CURLH_HEADER, -1, &sh) == CURLHE_OK)
        snprintf(mb.session, sizeof mb.session, "%s", sh->value);
    json_t *o = x->out.data ? json_loads(x->out.data, 0, NULL) : NULL;
    const char *v =
        json_string_value(json_object_get(json_object_get(o, "result"), "protocolVersion"));
    if (v) snprintf(mb.version, sizeof mb.version, "%s", v);
    json_decref(o);
}

/* An event stream: one message per data: line (vramd answers JSON, but be
 * ready). */
static void mcp_write_events(xfer *x)
{
    char *save = NULL;
    for (char *l = strtok_r(x->out.data, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        if (strncmp(l, "data:", 5) != 0) continue;
        json_t *m = json_loads(l + 5, 0, NULL);
        if (m) mcp_write(m);
        json_decref(m);
    }
}

/* A JSON answer of status: passed on when it is a JSON-RPC result or
 * error, else turned into one. */
static void mcp_write_answer(xfer *x, long status)
{
    json_t *m = json_loads(x->out.data, JSON_DECODE_ANY, NULL);
    if (status == 401 || status == 403) {
        /* said once on stderr too: the MCP client may only show the answer */
        static int told;
        if (!told++)
            fprintf(stderr, "vramctl mcp: vramd refused the request (HTTP %ld): %s\n", status,
                    status == 401 ? "give its token with --token or VRAM_TOKEN"
                                  : "not allowed from here");
    }
    if (!x->id) {
        /* a notification (or a response): nothing may answer it on stdout */
        json_decref(m);
        return;
    }
    if (json_is_object(m) && (json_object_get(m, "result") || json_object_get(m, "error"))) {
        /* an error vramd could not tie to the message gets its id back */
        json_t *rid = json_object_get(m, "id");
        if (x->id && (!rid || json_is_null(rid))) json_object_set(m, "id", x->id);
        mcp_write(m);
    } else {
        char text[400];
        snprintf(text, sizeof text, "vramd answered HTTP %ld: %.300s", status,
                 x->out.data ? x->out.data : "");
        mcp_error(x->id, -32603, text);
    }
    json_decref(m);
}

/* Writes the answer of one finished transfer to stdout. */
static void mcp_finish(xfer *x, CURLcode rc)
{
    if (rc != CURLE_OK) {
        char why[600];
        client_unreachable_text(x->easy, rc, why, sizeof why);
        fprintf(stderr, "vramctl mcp: %s\n", why);
        mcp_error(x->id, -32000, why);
        return;
    }
    long status = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    if (x->is_init && status == 200) mcp_note_session(x);
    if (status == 404 && !x->is_init && !x->retried && mb.session[0] && mcp_reinit()) {
        /* same message again, on the new session */
        xfer *again = mcp_start(x->line, x->id, 0);
        again->retried = 1;
        return;
    }
    if (status == 202 || !x->out.len) return;
    const char *ctype = NULL;
    curl_easy_getinfo(x->easy, CURLINFO_CONTENT_TYPE, &ctype);
    if (ctype && strncasecmp(ctype, "text/event-stream", 17) == 0)
        mcp_write_events(x);
    else
        mcp_write_answer(x, status);
}

/* The client gave up on request rid: drop its transfer, answer nothing. */
static void mcp_cancel(json_t *rid)
{
    for (xfer *x = mb.live; x && rid; x = x->next)
        if (x->id && json_equal(x->id, rid)) {
            mcp_free(x);
            break;
        }
}

/* One line from the client. */
static void mcp_line(char *line)
{
    size_t n = strlen(line);
    if (n && line[n - 1] == '\r') line[--n] = '\0';
    char *p = line;
    while (*p == ' ' || *p == '\t')
        p++;
    if (!*p) return;
    json_error_t je;
    json_t *msg = json_loads(p, JSON_DECODE_ANY, &je);
    if (!msg) {
        /* vramd would say the same; answering here keeps the session usable */
        char text[300];
        snprintf(text, sizeof text, "Parse error: %s", je.text);
        json_t *e = json_pack("{s:s, s:n, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", "error", "code",
                              -32700, "message", text);
        mcp_write(e);
        json_decref(e);
        return;
    }
    json_t *id = json_is_object(msg) ? json_object_get(msg, "id") : NULL;
    const char *method = json_string_value(json_object_get(msg, "method"));
    int is_init = method && !strcmp(method, "initialize") && id;
    if (method && !strcmp(method, "notifications/cancelled")) {
        mcp_cancel(json_object_get(json_object_get(msg, "params"), "requestId"));
        json_decref(msg);
        return;
    }
    if (is_init) {
        free(mb.init_line);
        mb.init_line = strdup(p);
    }
    mcp_start(p, method ? id : NULL, is_init);
    json_decref(msg);
}

static int init_in_flight(void)
{
    for (xfer *x = mb.live; x; x = x->next)
        if (x->is_init) return 1;
    return 0;
}

/* Forwards the complete lines of in (and, at the end of input, a last line
 * without newline). Lines wait while an initialize is out: they need its
 * session id. */
static void mcp_feed(inbuf *in)
{
    if (init_in_flight()) return;
    char *nl;
    size_t start = 0;
    while (!init_in_flight() && (nl = memchr(in->data + start, '\n', in->len - start))) {
        *nl = '\0';
        mcp_line(in->data + start);
        start = (size_t)(nl - in->data) + 1;
    }
    memmove(in->data, in->data + start, in->len - start);
    in->len -= start;
    if (in->eof && in->len && !init_in_flight()) {
        in->data[in->len] = '\0';
        mcp_line(in->data);
        in->len = 0;
    }
}

/* Answers every transfer that has finished. */
static void mcp_reap(void)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(mb.multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        xfer *x = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        CURLcode rc = m->data.result;
        mcp_finish(x, rc);
        mcp_free(x);
    }
}

/* After a poll that watched stdin (wfd): reads what came, or notices the
 * end of input. */
static void mcp_read(inbuf *in, const struct curl_waitfd *wfd)
{
    if (wfd->revents & (CURL_WAIT_POLLIN | CURL_WAIT_POLLPRI)) {
        if (in->cap - in->len < 65536 + 1) {
            while (in->cap - in->len < 65536 + 1)
                in->cap *= 2;
            char *grown = realloc(in->data, in->cap);
            if (!grown) die(EXIT_FAILED, "out of memory");
            in->data = grown;
        }
        ssize_t got = read(0, in->data + in->len, 65536);
        if (got > 0)
            in->len += (size_t)got;
        else if (got == 0 || (errno != EINTR && errno != EAGAIN))
            in->eof = 1;
    } else {
        /* poll gives no revents for a hung-up pipe on some systems */
        struct pollfd pf = {.fd = 0, .events = POLLIN};
        if (poll(&pf, 1, 0) > 0 && (pf.revents & (POLLHUP | POLLERR | POLLNVAL)) &&
            !(pf.revents & POLLIN))
            in->eof = 1;
    }
}

/* Tells vramd that the session is over (DELETE /mcp, 2 s at most). */
static void mcp_end_session(void)
{
    if (!mb.session[0]) return;
    buf b = {0};
    struct curl_slist *h = mcp_headers();
    CURL *e = client_easy("DELETE", "/mcp", NULL, &b, h);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 2000L);
    curl_easy_perform(e);
    curl_easy_cleanup(e);
    curl_slist_free_all(h);
    free(b.data);
}

int cmd_mcp(int argc, char **argv)
{
    (void)argv;
    if (argc) die(EXIT_USAGE, "mcp takes no arguments");
    signal(SIGPIPE, SIG_IGN);
    mb.multi = curl_multi_init();
    inbuf in = {.cap = 131072};
    in.data = malloc(in.cap);
    if (!in.data) die(EXIT_FAILED, "out of memory");
    fprintf(stderr, "vramctl mcp: forwarding stdio to %s/mcp\n", client_opt.url);
    while (!in.eof || mb.live || in.len) {
        mcp_feed(&in);
        int running = 0;
        curl_multi_perform(mb.multi, &running);
        mcp_reap();
        if (in.eof && !mb.live && !in.len) break;
        struct curl_waitfd wfd = {.fd = 0, .events = CURL_WAIT_POLLIN, .revents = 0};
        curl_multi_poll(mb.multi, in.eof ? NULL : &wfd, in.eof ? 0 : 1, 1000, NULL);
        if (!in.eof) mcp_read(&in, &wfd);
    }
    mcp_end_session();
    curl_multi_cleanup(mb.multi);
    free(in.data);
    free(mb.init_line);
    return 0;
}
