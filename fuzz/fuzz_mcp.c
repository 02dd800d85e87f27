/* fuzz_mcp.c - libFuzzer target: vramd's MCP JSON-RPC dispatcher, its Streamable HTTP rules and the command table, over arbitrary bytes against a real host-backend manager. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "server/commands.h"
#include "server/mcp.h"
#include "vram.h"
#include "vram_server.h"

/*
 * The first byte picks a mode (its value modulo 3; the seeds use the
 * digits '0', '1' and '2'):
 *   0  the rest is one JSON-RPC message for vram__mcp_dispatch
 *   1  the next byte picks a command of the table, the rest is its JSON args
 *   2  the next byte picks the HTTP method and headers, the rest is the
 *      body for vram__mcp_http (with a fresh session when a bit says so)
 * Every answer is checked against its contract; after each input the
 * manager's status must still be JSON and the idle monitor runs once.
 */

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static vram_manager *g_m;
static vram__mcp *g_mcp;
static size_t g_ncommands;

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "fuzz_mcp: check failed at line %d: %s\n", __LINE__, #c);             \
            __builtin_trap();                                                                      \
        }                                                                                          \
    } while (0)

static void drop_log(vram_log_level level, const char *line, void *user)
{
    (void)level;
    (void)line;
    (void)user;
}

static void set(vram_config *cfg, const char *name, const char *value)
{
    char err[256];
    if (vram_config_set(cfg, name, value, err, sizeof err) < 0) {
        fprintf(stderr, "fuzz_mcp: %s\n", err);
        abort();
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    vram_set_log_level(VRAM_LOG_ERROR);
    vram_set_log_callback(drop_log, NULL);
    vram_config cfg;
    vram_config_init(&cfg);
    set(&cfg, "VRAM_BACKEND", "host");
    /* both models do not fit at once: loads evict */
    set(&cfg, "VRAM_HOST_MEMORY", "2M");
    set(&cfg, "VRAM_HOST_DEVICES", "1");
    set(&cfg, "VRAM_EVICT_WAIT", "0");
    set(&cfg, "VRAM_CHUNK", "256K");
    set(&cfg, "GPU_IDLE_TIMEOUT", "0");
    set(&cfg, "VRAM_LOG_LEVEL", "error");
    cfg.no_monitor_thread = 1; /* the monitor runs in the fuzzer, once per input */
    if (vram_manager_create(&cfg, &g_m) < 0) {
        fprintf(stderr, "fuzz_mcp: cannot create the manager\n");
        abort();
    }
    static const char *const models[][2] = {{"small", "synthetic:768K"},
                                            {"big", "synthetic:1536K:7"}};
    for (size_t i = 0; i < 2; i++) {
        vram_model_opts o;
        vram_model_opts_init(&o);
        o.source = models[i][1];
        if (vram_manager_register(g_m, models[i][0], &o, NULL) < 0) {
            fprintf(stderr, "fuzz_mcp: cannot register %s\n", models[i][0]);
            abort();
        }
    }
    g_mcp = vram__mcp_create(g_m);
    if (!g_mcp) abort();
    while (vram__command_at(g_ncommands))
        g_ncommands++;
    return 0;
}

/* Parses text (when not NULL) as JSON and traps unless it is a JSON-RPC
 * 2.0 answer: an object with "jsonrpc":"2.0", an "id" and exactly one of
 * "result" (an object) and "error" ({code: integer, message: string}). */
static json_t *check_answer_text(const char *text, int any_id)
{
    json_error_t err;
    json_t *a = json_loads(text, 0, &err);
    CHECK(a && json_is_object(a));
    CHECK(json_is_string(json_object_get(a, "jsonrpc")) &&
          strcmp(json_string_value(json_object_get(a, "jsonrpc")), "2.0") == 0);
    json_t *id = json_object_get(a, "id");
    CHECK(id && (any_id || json_is_null(id) || json_is_string(id) || json_is_integer(id)));
    json_t *result = json_object_get(a, "result");
    json_t *error = json_object_get(a, "error");
    CHECK(!result != !error);
    if (result) CHECK(json_is_object(result));
    if (error) {
        CHECK(json_is_object(error));
        CHECK(json_is_integer(json_object_get(error, "code")));
        CHECK(json_is_string(json_object_get(error, "message")));
    }
    return a;
}

/* ---- mode 0: one message to the dispatcher ---- */

static void fuzz_dispatch(const uint8_t *data, size_t size)
{
    json_error_t err;
    json_t *msg = json_loadb((const char *)data, size, JSON_DECODE_ANY, &err);
    if (!msg) { /* what a transport answers then */
        char *t = vram__mcp_error_text(NULL, -32700, err.text);
        CHECK(t);
        json_decref(check_answer_text(t, 0));
        free(t);
        return;
    }
    const char *negotiated = NULL;
    json_t *reply = vram__mcp_dispatch(g_mcp, msg, &negotiated);
    json_t *msg_id = json_is_object(msg) ? json_object_get(msg, "id") : NULL;
    json_t *method = json_is_object(msg) ? json_object_get(msg, "method") : NULL;
    if (!reply) {
        /* none is due only for a notification or a response */
        CHECK(json_is_object(msg));
        CHECK(!msg_id || !method);
        CHECK(!negotiated);
    } else {
        char *text = json_dumps(reply, JSON_COMPACT | JSON_REAL_PRECISION(12));
        CHECK(text);
        json_t *a = check_answer_text(text, 0);
        free(text);
        json_t *id = json_object_get(a, "id");
        /* a valid id is echoed */
        if (msg_id && (json_is_string(msg_id) || json_is_integer(msg_id)) &&
            json_is_string(json_object_get(msg, "jsonrpc")) &&
            strcmp(json_string_value(json_object_get(msg, "jsonrpc")), "2.0") == 0)
            CHECK(json_equal(id, msg_id));
        json_t *result = json_object_get(a, "result");
        if (negotiated) {
            CHECK(result && json_is_string(method) &&
                  strcmp(json_string_value(method), "initialize") == 0);
            int known = 0;
            for (size_t i = 0; vram__mcp_versions[i]; i++)
                known |= strcmp(vram__mcp_versions[i], negotiated) == 0;
            CHECK(known);
            CHECK(strcmp(json_string_value(json_object_get(result, "protocolVersion")),
                         negotiated) == 0);
        }
        if (result && json_is_string(method) &&
            strcmp(json_string_value(method), "tools/call") == 0) {
            /* a CallToolResult: text content and isError; structured on success */
            json_t *content = json_object_get(result, "content");
            json_t *is_error = json_object_get(result, "isError");
            CHECK(json_is_array(content) && json_array_size(content) == 1);
            CHECK(json_is_string(json_object_get(json_array_get(content, 0), "text")));
            CHECK(json_is_boolean(is_error));
            if (json_is_false(is_error))
                CHECK(json_is_object(json_object_get(result, "structuredContent")));
        }
        json_decref(a);
        json_decref(reply);
    }
    json_decref(msg);
}

/* ---- mode 1: one command of the table with JSON args ---- */

static void fuzz_command(const uint8_t *data, size_t size)
{
    if (size < 1 || !g_ncommands) return;
    const vram__command *cmd = vram__command_at(data[0] % g_ncommands);
    CHECK(cmd && vram__command_find(cmd->name) == cmd);
    json_t *args = size > 1 ? json_loadb((const char *)data + 1, size - 1, JSON_DECODE_ANY, NULL)
                            : NULL;
    if (size > 1 && !args) return;
    vram__cmd_result res = {0}; /* run clears it first: it must hold nothing or its own */
    res.code = 1;
    snprintf(res.message, sizeof res.message, "stale");
    int rc = vram__command_run(g_m, cmd, args, &res);
    CHECK(rc == res.code);
    unsigned st = vram__cmd_http_status(rc);
    /* a 500 is a bug on any input: every failure a command reports has a
     * status that says whose fault it is */
    CHECK(st == 200 || st == 202 || st == 400 || st == 404 || st == 409 || st == 503);
    if (rc >= 0) {
        CHECK(rc == 0 || rc == VRAM_DEFERRED);
        CHECK(!res.json != !res.raw);
        json_t *o = vram__cmd_result_object(&res);
        CHECK(o && json_is_object(o));
        char *text = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(12));
        CHECK(text);
        free(text);
        json_decref(o);
    } else {
        CHECK(!res.json && !res.raw);
        CHECK(memchr(res.message, '\0', sizeof res.message));
        CHECK(res.message[0]);
        CHECK(!vram__cmd_result_object(&res));
    }
    vram__cmd_result_clear(&res);
    CHECK(!res.json && !res.raw);
    json_decref(args);
}

/* ---- mode 2: one HTTP request to /mcp ---- */

static void check_http(const vram__mcp_http_resp *r)
{
    unsigned s = r->status;
    /* never 500: no input is the server's fault */
    CHECK(s == 200 || s == 202 || s == 400 || s == 404 || s == 405 || s == 406 || s == 415);
    if (s == 202) CHECK(!r->body);
    if (s == 405) CHECK(r->allow);
    if (r->body) json_decref(check_answer_text(r->body, 0));
    if (r->session_id[0]) CHECK(memchr(r->session_id, '\0', sizeof r->session_id));
}

static void fuzz_http(const uint8_t *data, size_t size)
{
    static const char *const methods[] = {"POST", "POST", "POST", "POST",
                                          "GET",  "DELETE", "PUT", ""};
    static const char *const accepts[] = {NULL, "application/json, text/event-stream",
                                          "text/html", "*/*;q=0.1"};
    static const char *const types[] = {"application/json", NULL, "application/json; charset=utf-8",
                                        "text/plain,application/jsonx"};
    static const char *const versions[] = {NULL, "2025-06-18", "2024-11-05", "1999-01-01"};
    if (size < 2) return;
    unsigned b = data[0] | (unsigned)data[1] << 8;
    char sid[40] = "";
    int with_session = (b >> 7) & 3; /* 0: none, 1: a fresh one, 2: a bogus one, 3: fresh */
    if (with_session == 1 || with_session == 3) {
        static const char init[] = "{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"initialize\","
                                   "\"params\":{\"protocolVersion\":\"2025-06-18\"}}";
        vram__mcp_http_req q = {"POST", NULL, NULL, "application/json", "application/json",
                                init, sizeof init - 1, "127.0.0.1"};
        vram__mcp_http_resp r;
        vram__mcp_http(g_mcp, &q, &r);
        check_http(&r);
        CHECK(r.status == 200 && r.session_id[0]);
        memcpy(sid, r.session_id, sizeof sid);
        free(r.body);
    } else if (with_session == 2) {
        snprintf(sid, sizeof sid, "%s", "00000000-0000-4000-8000-000000000000");
    }
    size_t before = vram__mcp_session_count(g_mcp);
    vram__mcp_http_req q = {methods[b & 7],
                            sid[0] ? sid : NULL,
                            versions[(b >> 9) & 3],
                            accepts[(b >> 3) & 3],
                            types[(b >> 5) & 3],
                            (const char *)data + 2,
                            size - 2, "127.0.0.1"};
    (void)vram__mcp_http_is_slow(&q);
    vram__mcp_http_resp r;
    vram__mcp_http(g_mcp, &q, &r);
    check_http(&r);
    size_t after = vram__mcp_session_count(g_mcp);
    if (r.session_id[0]) {
        CHECK(r.status == 200 && after >= before);
        /* close the session it opened */
        vram__mcp_http_req d = {"DELETE", r.session_id, NULL, NULL, NULL, NULL, 0, NULL};
        vram__mcp_http_resp dr;
        vram__mcp_http(g_mcp, &d, &dr);
        check_http(&dr);
        CHECK(dr.status == 200);
        free(dr.body);
    }
    free(r.body);
    if (sid[0] && with_session != 2) { /* ours may be gone already (a DELETE) */
        vram__mcp_http_req d = {"DELETE", sid, NULL, NULL, NULL, NULL, 0, NULL};
        vram__mcp_http_resp dr;
        vram__mcp_http(g_mcp, &d, &dr);
        check_http(&dr);
        CHECK(dr.status == 200 || dr.status == 404);
        free(dr.body);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    switch (data[0] % 3) {
    case 0: fuzz_dispatch(data + 1, size - 1); break;
    case 1: fuzz_command(data + 1, size - 1); break;
    default: fuzz_http(data + 1, size - 1); break;
    }
    vram_manager_tick(g_m);
    char *status = vram_manager_status_json(g_m);
    CHECK(status);
    json_t *st = json_loads(status, 0, NULL);
    CHECK(st && json_is_object(st));
    json_decref(st);
    free(status);
    return 0;
}
