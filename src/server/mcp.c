/* mcp.c - vramd's MCP server: one JSON-RPC dispatcher and tool table; Streamable HTTP rules. */
#define _GNU_SOURCE
#include "server/mcp.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "base/base.h"
#include "server/commands.h"

/*
 * LOCK DISCIPLINE: one mutex, mcp->lock, guards the session table and
 * nothing else. It is held only to look up, add, touch or drop a session,
 * never while a message is dispatched or a command runs. The tool table is
 * constant after vram__mcp_create.
 */

const char *const vram__mcp_versions[] = {"2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05",
                                          NULL};

#define JSONRPC_PARSE_ERROR -32700
#define JSONRPC_INVALID_REQUEST -32600
#define JSONRPC_METHOD_NOT_FOUND -32601
#define JSONRPC_INVALID_PARAMS -32602
#define JSONRPC_INTERNAL -32603
#define JSONRPC_SERVER -32000
#define JSONRPC_NO_SESSION -32001

#define MAX_SESSIONS 1024
#define SESSION_IDLE_MAX 1800.0 /* seconds unused before a session expires */
#define SESSIONS_PER_CLIENT 32  /* per client address */

typedef struct tool {
    const char *name;
    const char *title;
    const char *description;
    const char *command;
    const char *schema;      /* inputSchema as JSON text */
    const char *rename_from; /* an argument named differently from the command's field */
    const char *rename_to;
    int read_only, destructive, idempotent;
} tool;

static const tool tools[] = {
    {"get_gpu_status", "GPU status",
     "Status of every model vramd manages, keyed by model name: location (\"GPU\", \"CPU\" or "
     "\"未加载\" = not loaded), state, idle_time_seconds, idle_timeout_seconds, size in bytes, "
     "live leases, counters and timings of loads, offloads and restores, and the GPU memory "
     "(allocated_gb, reserved_gb, total_gb per GPU). Give 'model' for one model only.",
     "status",
     "{\"type\":\"object\",\"properties\":{\"model\":{\"type\":\"string\",\"description\":"
     "\"Only this model (optional).\"}},\"additionalProperties\":false}",
     NULL, NULL, 1, 0, 1},
    {"offload_gpu", "Offload to CPU",
     "Move models out of GPU memory into pinned CPU memory (the seed's force_offload). Their "
     "bytes are kept, and the next use restores them at PCIe speed. Every model, or only "
     "'model'. A model in use is offloaded when its last lease ends (deferred). A node-wide id "
     "NAME@PID from node_status offloads another process's model: its owner does it, and "
     "refuses (EBUSY) while that model is in use.",
     "offload",
     "{\"type\":\"object\",\"properties\":{\"model\":{\"type\":\"string\",\"description\":"
     "\"Name of the model to offload, or a node-wide id NAME@PID (NAME@mID) from node_status "
     "for a model of another process; every model of vramd when omitted.\"}},"
     "\"additionalProperties\":false}",
     NULL, NULL, 0, 0, 1},
    {"release_gpu", "Release completely",
     "Free models completely, from GPU and CPU memory; the next use loads them again from "
     "their source (the slow first load). Every model, or only 'model'. A model in use is "
     "released when its last lease ends (deferred). A node-wide id NAME@PID from node_status "
     "releases another process's model: its owner does it, and refuses (EBUSY) while that "
     "model is in use.",
     "release",
     "{\"type\":\"object\",\"properties\":{\"model\":{\"type\":\"string\",\"description\":"
     "\"Name of the model to release, or a node-wide id NAME@PID (NAME@mID) from node_status "
     "for a model of another process; every model of vramd when omitted.\"}},"
     "\"additionalProperties\":false}",
     NULL, NULL, 0, 1, 1},
    {"update_gpu_timeout", "Set idle timeout",
     "Set the idle timeout: a model left unused on the GPU for this many seconds is offloaded "
     "to the CPU. 0 means never. Applies to every model of vramd, or only to 'model'; a "
     "node-wide id NAME@PID from node_status sets it on another process's model, through its "
     "owner.",
     "timeout",
     "{\"type\":\"object\",\"properties\":{\"timeout_seconds\":{\"type\":\"number\","
     "\"minimum\":0,\"maximum\":315360000,\"description\":\"Seconds (0 = never offload on "
     "idle).\"},\"model\":{\"type\":\"string\",\"description\":\"Only this model (optional): "
     "a name, or a node-wide id NAME@PID (NAME@mID) from node_status.\"}},"
     "\"required\":[\"timeout_seconds\"],\"additionalProperties\":false}",
     "timeout_seconds", "timeout", 0, 0, 1},
    {"configure_model", "Configure a model",
     "Change one model's settings: idle_timeout (seconds unused on the GPU before it is "
     "offloaded; 0 = never), release_timeout (seconds unused before it is freed completely; "
     "0 = never) and immediate_offload (back to the CPU after every use). 'model' is a name, or "
     "a node-wide id NAME@PID from node_status for another process's model, changed by its "
     "owner.",
     "configure",
     "{\"type\":\"object\",\"properties\":{\"model\":{\"type\":\"string\",\"description\":"
     "\"Name of the model, or a node-wide id NAME@PID (NAME@mID) from node_status.\"},"
     "\"idle_timeout\":{\"type\":\"number\",\"minimum\":0,\"maximum\":315360000,"
     "\"description\":\"Seconds (0 = never).\"},\"release_timeout\":{\"type\":\"number\","
     "\"minimum\":0,\"maximum\":315360000,\"description\":\"Seconds (0 = never).\"},"
     "\"immediate_offload\":{\"type\":\"boolean\"}},\"required\":[\"model\"],"
     "\"additionalProperties\":false}",
     NULL, NULL, 0, 0, 1},
    {"node_status", "Node status",
     "Every process on this machine that has joined vramd's node socket (vramd itself is the "
     "member with self: true), each with its name, pid, uid, backend, devices and models, and "
     "the recent node evictions (who gave memory, who asked, bytes). Each model carries its "
     "node-wide id NAME@PID (NAME@mID for a process in another pid namespace): give it as "
     "'model' to offload_gpu, release_gpu, update_gpu_timeout or configure_model to act on "
     "that process's model, which its owner then does.",
     "node",
     "{\"type\":\"object\",\"properties\":{},\"additionalProperties\":false}",
     NULL, NULL, 1, 0, 1},
    {"load_model", "Load a model",
     "Make a model resident on the GPU now (lazy load from its source, or restore from the "
     "CPU) and wait until it is there. Answers what it did with seconds, bytes and GB/s. A "
     "model with immediate offload goes back to the CPU right after.",
     "load",
     "{\"type\":\"object\",\"properties\":{\"model\":{\"type\":\"string\",\"description\":"
     "\"Name of the model.\"}},\"required\":[\"model\"],\"additionalProperties\":false}",
     NULL, NULL, 0, 0, 1},
    {"run_model", "Run a model",
     "The three-step flow on one model: acquire it (loading or restoring as needed), compute "
     "a checksum of its bytes on the device, end the lease (offloading at once when the model "
     "asks for immediate offload). Answers the checksum and the timing of each step.",
     "run",
     "{\"type\":\"object\",\"properties\":{\"model\":{\"type\":\"string\",\"description\":"
     "\"Name of the model.\"}},\"required\":[\"model\"],\"additionalProperties\":false}",
     NULL, NULL, 0, 0, 0},
    {"register_model", "Register a model",
     "Add a model at run time, as vramd's --model NAME=SOURCE,key=value does: 'source' is "
     "synthetic:SIZE[:SEED], a .safetensors file, a model.safetensors.index.json or a directory. "
     "Nothing is loaded before its first use. Options: idle_timeout and release_timeout (seconds, "
     "or text such as \"10m\"), immediate_offload (true/false), device (index).",
     "register",
     "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"description\":"
     "\"Name of the new model.\"},\"source\":{\"type\":\"string\",\"description\":\"Where its "
     "bytes come from.\"},\"options\":{\"type\":\"object\",\"properties\":{\"idle_timeout\":"
     "{\"type\":[\"number\",\"string\"]},\"release_timeout\":{\"type\":[\"number\",\"string\"]},"
     "\"immediate_offload\":{\"type\":\"boolean\"},\"device\":{\"type\":\"integer\",\"minimum\":0}},"
     "\"additionalProperties\":false}},\"required\":[\"name\",\"source\"],"
     "\"additionalProperties\":false}",
     NULL, NULL, 0, 0, 0},
    {"unregister_model", "Unregister a model",
     "Release a model completely and remove it from vramd. Refused while the model is in use "
     "(a lease is held).",
     "unregister",
     "{\"type\":\"object\",\"properties\":{\"model\":{\"type\":\"string\",\"description\":"
     "\"Name of the model.\"}},\"required\":[\"model\"],\"additionalProperties\":false}",
     NULL, NULL, 0, 1, 0},
    {"reopen_model", "Reopen a model's source",
     "Open a model's source again after its file changed on disk: the new file is checked "
     "first (a failure leaves the model as it was), then the model starts over unloaded with "
     "the same options. Refused while the model is in use.",
     "reopen",
     "{\"type\":\"object\",\"properties\":{\"model\":{\"type\":\"string\",\"description\":"
     "\"Name of the model.\"}},\"required\":[\"model\"],\"additionalProperties\":false}",
     NULL, NULL, 0, 1, 1},
};
#define NTOOLS (sizeof tools / sizeof tools[0])

typedef struct session {
    char id[40];
    char client[64]; /* the address it was opened from */
    double last_used;
    int used;        /* used since its initialize: an active session, never pushed out */
} session;

struct vram__mcp {
    vram_manager *m;
    json_t *tool_list;       /* the tools/list array, built once */
    json_t *schemas[NTOOLS]; /* parsed inputSchemas */
    pthread_mutex_t lock;
    session *sessions; /* MAX_SESSIONS slots; id[0] == 0 when free */
    size_t nsessions;
    double idle_max;   /* SESSION_IDLE_MAX, tests change it */
    size_t per_client; /* SESSIONS_PER_CLIENT */
};

/* ---- construction ---- */

static json_t *tool_json(const tool *t, json_t *schema)
{
    json_t *ann = json_pack("{s:s, s:b, s:b}", "title", t->title, "readOnlyHint", t->read_only,
                            "openWorldHint", 0);
    if (ann && !t->read_only) {
        json_object_set_new(ann, "destructiveHint", json_boolean(t->destructive));
        json_object_set_new(ann, "idempotentHint", json_boolean(t->idempotent));
    }
    return json_pack("{s:s, s:s, s:s, s:O, s:o}", "name", t->name, "title", t->title, "description",
                     t->description, "inputSchema", schema, "annotations", ann);
}

vram__mcp *vram__mcp_create(vram_manager *m)
{
    vram__mcp *mcp = calloc(1, sizeof *mcp);
    if (!mcp) return NULL;
    mcp->m = m;
    pthread_mutex_init(&mcp->lock, NULL);
    mcp->sessions = calloc(MAX_SESSIONS, sizeof *mcp->sessions);
    mcp->idle_max = SESSION_IDLE_MAX;
    mcp->per_client = SESSIONS_PER_CLIENT;
    mcp->tool_list = json_array();
    if (!mcp->sessions || !mcp->tool_list) goto fail;
    for (size_t i = 0; i < NTOOLS; i++) {
        json_error_t err;
        mcp->schemas[i] = json_loads(tools[i].schema, 0, &err);
        json_t *t = mcp->schemas[i] ? tool_json(&tools[i], mcp->schemas[i]) : NULL;
        if (!t || json_array_append_new(mcp->tool_list, t) < 0) goto fail;
    }
    return mcp;
fail:
    vram__mcp_destroy(mcp);
    return NULL;
}

void vram__mcp_destroy(vram__mcp *mcp)
{
    if (!mcp) return;
    for (size_t i = 0; i < NTOOLS; i++)
        json_decref(mcp->schemas[i]);
    json_decref(mcp->tool_list);
    free(mcp->sessions);
    pthread_mutex_destroy(&mcp->lock);
    free(mcp);
}

/* ---- JSON-RPC helpers ---- */

static json_t *rpc_result(json_t *id, json_t *result)
{
    if (!result) result = json_object();
    return json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", id ? id : json_null(), "result",
                     result);
}

static json_t *rpc_error(json_t *id, int code, const char *message)
{
    return json_pack("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", id ? id : json_null(),
                     "error", "code", code, "message", message);
}

char *vram__mcp_error_text(json_t *id, int code, const char *message)
{
    json_t *e = rpc_error(id, code, message);
    char *text = e ? json_dumps(e, JSON_COMPACT | JSON_REAL_PRECISION(12)) : NULL;
    json_decref(e);
    return text;
}

static const char *supported_version(const char *v)
{
    for (size_t i = 0; v && vram__mcp_versions[i]; i++)
        if (strcmp(v, vram__mcp_versions[i]) == 0) return vram__mcp_versions[i];
    return NULL;
}

/* ---- methods ---- */

static json_t *do_initialize(json_t *id, json_t *params, const char **negotiated)
{
    json_t *pv = json_object_get(params, "protocolVersion");
    const char *v = supported_version(json_string_value(pv));
    if (!v) v = vram__mcp_versions[0]; /* answer with our latest; the client decides */
    if (negotiated) *negotiated = v;
    json_t *result = json_pack(
        "{s:s, s:{s:{s:b}}, s:{s:s, s:s, s:s}, s:s}", "protocolVersion", v, "capabilities", "tools",
        "listChanged", 0, "serverInfo", "name", "vramd", "title", "vram GPU memory manager",
        "version", VRAM_VERSION, "instructions",
        "vramd keeps large models on the GPU only while they are used. get_gpu_status shows "
        "where each model is; offload_gpu moves models to CPU memory (fast to restore); "
        "release_gpu frees them completely; update_gpu_timeout sets the idle timeout; "
        "load_model and run_model use a model. node_status lists every process sharing the GPU "
        "through vramd with its models' node-wide ids (NAME@PID): offload_gpu, release_gpu, "
        "update_gpu_timeout and configure_model accept such an id and have its owner act.");
    return rpc_result(id, result);
}

/* Replaces 'to' by 'from' in a command's message so that it names the tool's argument. */
static void rename_in_message(char *msg, size_t len, const char *from, const char *to)
{
    char pat[64], out[VRAM__CMD_MSG_MAX];
    snprintf(pat, sizeof pat, "'%s'", to);
    char *hit = strstr(msg, pat);
    if (!hit) return;
    snprintf(out, sizeof out, "%.*s'%s'%s", (int)(hit - msg), msg, from, hit + strlen(pat));
    snprintf(msg, len, "%s", out);
}

static json_t *tool_error(const char *fmt, const char *a, const char *b)
{
    char text[VRAM__CMD_MSG_MAX + 128];
    snprintf(text, sizeof text, fmt, a, b);
    return json_pack("{s:[{s:s, s:s}], s:b}", "content", "type", "text", "text", text, "isError",
                     1);
}

static const tool *find_tool(const char *name, size_t *index)
{
    for (size_t i = 0; name && i < NTOOLS; i++)
        if (strcmp(tools[i].name, name) == 0) {
            if (index) *index = i;
            return &tools[i];
        }
    return NULL;
}

/* The CallToolResult of tool t with arguments args (borrowed, may be NULL). */
static json_t *call_tool(vram__mcp *mcp, const tool *t, size_t ti, json_t *args)
{
    if (args && json_is_null(args)) args = NULL;
    if (args && !json_is_object(args))
        return tool_error("%s: arguments must be an object%s", t->name, "");
    json_t *props = json_object_get(mcp->schemas[ti], "properties");
    const char *key;
    json_t *v;
    json_object_foreach(args, key, v)
    {
        if (!json_object_get(props, key))
            return tool_error("%s: unknown argument '%.64s'", t->name, key);
    }
    size_t i;
    json_array_foreach(json_object_get(mcp->schemas[ti], "required"), i, v)
    {
        if (!json_object_get(args, json_string_value(v)))
            return tool_error("%s: missing required argument '%s'", t->name, json_string_value(v));
    }
    json_t *cargs = args ? json_deep_copy(args) : json_object();
    if (!cargs) return NULL;
    if (t->rename_from) {
        json_t *x = json_object_get(cargs, t->rename_from);
        if (x) {
            json_object_set(cargs, t->rename_to, x);
            json_object_del(cargs, t->rename_from);
        }
    }
    vram__cmd_result res = {0};
    int rc = vram__command_run(mcp->m, vram__command_find(t->command), cargs, &res);
    json_decref(cargs);
    json_t *out;
    if (rc < 0) {
        if (t->rename_from)
            rename_in_message(res.message, sizeof res.message, t->rename_from, t->rename_to);
        char text[VRAM__CMD_MSG_MAX + 128];
        snprintf(text, sizeof text, "%s failed (%s): %s", t->name, vram_err_name(rc), res.message);
        out = json_pack("{s:[{s:s, s:s}], s:b}", "content", "type", "text", "text", text, "isError",
                        1);
    } else {
        json_t *obj = vram__cmd_result_object(&res);
        char *text = obj ? json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(12)) : NULL;
        if (obj && text)
            out = json_pack("{s:[{s:s, s:s}], s:O, s:b}", "content", "type", "text", "text", text,
                            "structuredContent", obj, "isError", 0);
        else
            out = NULL;
        free(text);
        json_decref(obj);
    }
    vram__cmd_result_clear(&res);
    return out;
}

json_t *vram__mcp_dispatch(vram__mcp *mcp, json_t *msg, const char **negotiated)
{
    if (json_is_array(msg))
        return rpc_error(NULL, JSONRPC_INVALID_REQUEST,
                         "Invalid Request: batches are not supported; send one message");
    if (!json_is_object(msg))
        return rpc_error(NULL, JSONRPC_INVALID_REQUEST, "Invalid Request: not a JSON object");
    json_t *id = json_object_get(msg, "id");
    json_t *method = json_object_get(msg, "method");
    json_t *params = json_object_get(msg, "params");
    int has_id = id != NULL;
    if (has_id && !json_is_string(id) && !json_is_integer(id))
        return rpc_error(NULL, JSONRPC_INVALID_REQUEST,
                         "Invalid Request: id must be a string or an integer");
    if (!json_is_string(json_object_get(msg, "jsonrpc")) ||
        strcmp(json_string_value(json_object_get(msg, "jsonrpc")), "2.0") != 0)
        return rpc_error(id, JSONRPC_INVALID_REQUEST, "Invalid Request: jsonrpc must be \"2.0\"");
    if (!method) {
        /* a response from the client (we send no requests): nothing to answer */
        if (has_id && (json_object_get(msg, "result") || json_object_get(msg, "error")))
            return NULL;
        return rpc_error(id, JSONRPC_INVALID_REQUEST, "Invalid Request: no method");
    }
    if (!json_is_string(method))
        return rpc_error(id, JSONRPC_INVALID_REQUEST, "Invalid Request: method must be a string");
    const char *name = json_string_value(method);
    if (!has_id) return NULL; /* notifications: initialized, cancelled, ... need no answer */
    if (params && !json_is_object(params))
        return rpc_error(id, JSONRPC_INVALID_PARAMS, "Invalid params: params must be an object");

    if (strcmp(name, "initialize") == 0) return do_initialize(id, params, negotiated);
    if (strcmp(name, "ping") == 0) return rpc_result(id, NULL);
    if (strcmp(name, "tools/list") == 0) {
        if (json_object_get(params, "cursor") && !json_is_null(json_object_get(params, "cursor")))
            return rpc_error(id, JSONRPC_INVALID_PARAMS, "Invalid params: unknown cursor");
        return rpc_result(id, json_pack("{s:O}", "tools", mcp->tool_list));
    }
    if (strcmp(name, "tools/call") == 0) {
        json_t *tn = json_object_get(params, "name");
        if (!json_is_string(tn))
            return rpc_error(id, JSONRPC_INVALID_PARAMS,
                             "Invalid params: tools/call needs a tool name");
        size_t ti = 0;
        const tool *t = find_tool(json_string_value(tn), &ti);
        if (!t) {
            char text[200];
            snprintf(text, sizeof text, "Unknown tool: %.128s", json_string_value(tn));
            return rpc_error(id, JSONRPC_INVALID_PARAMS, text);
        }
        json_t *r = call_tool(mcp, t, ti, json_object_get(params, "arguments"));
        if (!r) return rpc_error(id, JSONRPC_INTERNAL, "Internal error: out of memory");
        return rpc_result(id, r);
    }
    char text[200];
    snprintf(text, sizeof text, "Method not found: %.128s", name);
    return rpc_error(id, JSONRPC_METHOD_NOT_FOUND, text);
}

/* ---- sessions ---- */

static void new_session_id(char out[40])
{
    unsigned char r[16];
    size_t got = 0;
    while (got < sizeof r) {
        ssize_t n = getrandom(r + got, sizeof r - got, 0);
        if (n <= 0) break;
        got += (size_t)n;
    }
    if (got < sizeof r) { /* no entropy source: fall back on time and address bits */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)(uintptr_t)out;
        for (size_t i = 0; i < sizeof r; i++) {
            x = vram__mix64(x + i);
            r[i] = (unsigned char)x;
        }
    }
    r[6] = (unsigned char)((r[6] & 0x0f) | 0x40); /* version 4 */
    r[8] = (unsigned char)((r[8] & 0x3f) | 0x80); /* variant */
    snprintf(out, 40, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", r[0],
             r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13],
             r[14], r[15]);
}

/* Drops sessions idle past idle_max. Lock held. */
static void sessions_expire(vram__mcp *mcp, double now)
{
    for (size_t i = 0; i < MAX_SESSIONS; i++) {
        session *s = &mcp->sessions[i];
        if (s->id[0] && now - s->last_used > mcp->idle_max) {
            s->id[0] = '\0';
            mcp->nsessions--;
        }
    }
}

/* The oldest session never used since its initialize (of client, or of
 * anyone when client is NULL), or NULL. Lock held. */
static session *oldest_unused(vram__mcp *mcp, const char *client)
{
    session *best = NULL;
    for (size_t i = 0; i < MAX_SESSIONS; i++) {
        session *s = &mcp->sessions[i];
        if (s->id[0] && !s->used && (!client || strcmp(s->client, client) == 0) &&
            (!best || s->last_used < best->last_used))
            best = s;
    }
    return best;
}

/* Opens a session for client (NULL: unknown). Expired sessions go first;
 * at the per-client cap or with the table full, only a session that was
 * never used may make room; an active one never does. Returns 0, or -1
 * when refused. */
static int session_add(vram__mcp *mcp, const char *client, char out[40])
{
    new_session_id(out);
    if (!client) client = "";
    double now = vram__now();
    int rc = 0;
    pthread_mutex_lock(&mcp->lock);
    sessions_expire(mcp, now);
    size_t mine = 0;
    session *slot = NULL;
    for (size_t i = 0; i < MAX_SESSIONS; i++) {
        session *s = &mcp->sessions[i];
        if (!s->id[0]) {
            if (!slot) slot = s;
        } else if (strcmp(s->client, client) == 0) {
            mine++;
        }
    }
    session *gone = NULL;
    if (mine >= mcp->per_client) gone = oldest_unused(mcp, client);
    else if (!slot) gone = oldest_unused(mcp, NULL);
    if ((mine >= mcp->per_client || !slot) && !gone) {
        rc = -1;
    } else {
        if (gone) {
            gone->id[0] = '\0';
            mcp->nsessions--;
            slot = gone;
        }
        memcpy(slot->id, out, 40);
        snprintf(slot->client, sizeof slot->client, "%s", client);
        slot->last_used = now;
        slot->used = 0;
        mcp->nsessions++;
    }
    pthread_mutex_unlock(&mcp->lock);
    if (rc < 0) out[0] = '\0';
    return rc;
}

void vram__mcp_set_session_limits(vram__mcp *mcp, double idle_max, size_t per_client)
{
    pthread_mutex_lock(&mcp->lock);
    if (idle_max > 0) mcp->idle_max = idle_max;
    if (per_client > 0) mcp->per_client = per_client;
    pthread_mutex_unlock(&mcp->lock);
}

/* Finds (and touches) a session; with drop, removes it. Returns 1 when found. */
static int session_use(vram__mcp *mcp, const char *id, int drop)
{
    int found = 0;
    if (!id || strlen(id) >= 40) return 0;
    double now = vram__now();
    pthread_mutex_lock(&mcp->lock);
    sessions_expire(mcp, now);
    for (size_t i = 0; i < MAX_SESSIONS; i++) {
        session *s = &mcp->sessions[i];
        if (s->id[0] && strcmp(s->id, id) == 0) {
            found = 1;
            if (drop) {
                s->id[0] = '\0';
                mcp->nsessions--;
            } else {
                s->last_used = now;
                s->used = 1;
            }
            break;
        }
    }
    pthread_mutex_unlock(&mcp->lock);
    return found;
}

size_t vram__mcp_session_count(vram__mcp *mcp)
{
    pthread_mutex_lock(&mcp->lock);
    size_t n = mcp->nsessions;
    pthread_mutex_unlock(&mcp->lock);
    return n;
}

/* ---- Streamable HTTP ---- */

/* An error reply; a request id that JSON-RPC does not allow (object, array,
 * real, boolean) is answered with null, as an unreadable id is. */
static void http_error(vram__mcp_http_resp *resp, unsigned status, json_t *id, int code,
                       const char *message)
{
    if (id && !json_is_string(id) && !json_is_integer(id)) id = NULL;
    resp->status = status;
    resp->body = vram__mcp_error_text(id, code, message);
}

/* Whether a header value lists a media type (case-insensitive, parameters ignored). */
static int lists_type(const char *header, const char *type)
{
    size_t tl = strlen(type);
    for (const char *p = header; p && *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (strncasecmp(p, type, tl) == 0 &&
            (p[tl] == '\0' || p[tl] == ';' || p[tl] == ',' || p[tl] == ' '))
            return 1;
        p = strchr(p, ',');
    }
    return 0;
}

static json_t *parse_body(const vram__mcp_http_req *req)
{
    return json_loadb(req->body ? req->body : "", req->body_len, JSON_DECODE_ANY, NULL);
}

int vram__mcp_http_is_slow(const vram__mcp_http_req *req)
{
    if (strcmp(req->method, "POST") != 0 || !req->body_len) return 0;
    json_t *msg = parse_body(req);
    int slow = 0;
    json_t *method = json_object_get(msg, "method");
    if (json_is_string(method) && strcmp(json_string_value(method), "tools/call") == 0) {
        const tool *t = find_tool(
            json_string_value(json_object_get(json_object_get(msg, "params"), "name")), NULL);
        const vram__command *c = t ? vram__command_find(t->command) : NULL;
        slow = c && c->slow;
    }
    json_decref(msg);
    return slow;
}

/* DELETE ends a session; any method but POST is 405. Returns 1 when resp
 * holds the answer. */
static int http_non_post(vram__mcp *mcp, const vram__mcp_http_req *req, vram__mcp_http_resp *resp)
{
    if (strcmp(req->method, "DELETE") == 0) {
        if (!req->session_id) {
            http_error(resp, 400, NULL, JSONRPC_SERVER,
                       "Bad Request: Mcp-Session-Id header is required");
        } else if (!session_use(mcp, req->session_id, 1)) {
            http_error(resp, 404, NULL, JSONRPC_NO_SESSION, "Session not found");
        } else {
            resp->status = 200;
        }
        return 1;
    }
    if (strcmp(req->method, "POST") != 0) {
        /* no server-to-client stream: GET is 405, as the transport allows */
        resp->allow = "POST, DELETE";
        http_error(resp, 405, NULL, JSONRPC_SERVER,
                   "Method Not Allowed: POST one JSON-RPC message; DELETE ends a session");
        return 1;
    }
    return 0;
}

/* Accept and Content-Type of a POST. Returns 1 when refused (resp set). */
static int http_bad_types(const vram__mcp_http_req *req, vram__mcp_http_resp *resp)
{
    if (req->accept && !lists_type(req->accept, "application/json") &&
        !lists_type(req->accept, "application/*") && !lists_type(req->accept, "*/*")) {
        http_error(resp, 406, NULL, JSONRPC_SERVER,
                   "Not Acceptable: the client must accept application/json");
        return 1;
    }
    if (!req->content_type || !lists_type(req->content_type, "application/json")) {
        http_error(resp, 415, NULL, JSONRPC_SERVER,
                   "Unsupported Media Type: Content-Type must be application/json");
        return 1;
    }
    return 0;
}

/* A message other than initialize needs a live session and a supported
 * protocol version. Returns 1 when refused (resp set). */
static int http_bad_session(vram__mcp *mcp, const vram__mcp_http_req *req, json_t *msg,
                            vram__mcp_http_resp *resp)
{
    json_t *id = json_object_get(msg, "id");
    if (!req->session_id) {
        http_error(resp, 400, id, JSONRPC_SERVER,
                   "Bad Request: Mcp-Session-Id header is required (send initialize first)");
        return 1;
    }
    if (!session_use(mcp, req->session_id, 0)) {
        http_error(resp, 404, id, JSONRPC_NO_SESSION, "Session not found: initialize again");
        return 1;
    }
    if (req->protocol_version && !supported_version(req->protocol_version)) {
        char text[200];
        snprintf(text, sizeof text,
                 "Bad Request: unsupported MCP-Protocol-Version '%.40s' (supported: %s, %s, "
                 "%s, %s)",
                 req->protocol_version, vram__mcp_versions[0], vram__mcp_versions[1],
                 vram__mcp_versions[2], vram__mcp_versions[3]);
        http_error(resp, 400, id, JSONRPC_SERVER, text);
        return 1;
    }
    return 0;
}

/* The dispatcher's answer as the HTTP response (202 when there is none). */
static void http_answer(vram__mcp *mcp, const char *client, json_t *answer, int is_init,
                        const char *negotiated, vram__mcp_http_resp *resp)
{
    if (!answer) {
        resp->status = 202; /* a notification or response: accepted, no body */
        return;
    }
    if (is_init && negotiated && json_object_get(answer, "result") &&
        session_add(mcp, client, resp->session_id) < 0) {
        http_error(resp, 503, json_object_get(answer, "id"), JSONRPC_SERVER,
                   "Service Unavailable: too many MCP sessions from this client (end one with "
                   "DELETE /mcp, or wait until idle ones expire)");
        return;
    }
    json_t *err = json_object_get(answer, "error");
    int invalid = err && json_integer_value(json_object_get(err, "code")) == JSONRPC_INVALID_REQUEST;
    resp->status = invalid ? 400 : 200;
    resp->body = json_dumps(answer, JSON_COMPACT | JSON_REAL_PRECISION(12));
    if (!resp->body) http_error(resp, 500, NULL, JSONRPC_INTERNAL, "Internal error");
}

void vram__mcp_http(vram__mcp *mcp, const vram__mcp_http_req *req, vram__mcp_http_resp *resp)
{
    memset(resp, 0, sizeof *resp);
    if (http_non_post(mcp, req, resp) || http_bad_types(req, resp)) return;
    json_error_t jerr;
    json_t *msg = json_loadb(req->body ? req->body : "", req->body_len, JSON_DECODE_ANY, &jerr);
    if (!msg) {
        char text[300];
        snprintf(text, sizeof text, "Parse error: %s", jerr.text);
        http_error(resp, 400, NULL, JSONRPC_PARSE_ERROR, text);
        return;
    }
    if (json_is_array(msg) || !json_is_object(msg)) {
        json_t *e = vram__mcp_dispatch(mcp, msg, NULL);
        resp->status = 400;
        resp->body = e ? json_dumps(e, JSON_COMPACT | JSON_REAL_PRECISION(12)) : NULL;
        json_decref(e);
        json_decref(msg);
        return;
    }
    json_t *method = json_object_get(msg, "method");
    int is_init = json_is_string(method) && strcmp(json_string_value(method), "initialize") == 0 &&
                  json_object_get(msg, "id");
    if (!is_init && http_bad_session(mcp, req, msg, resp)) {
        json_decref(msg);
        return;
    }
    const char *negotiated = NULL;
    json_t *answer = vram__mcp_dispatch(mcp, msg, &negotiated);
    json_decref(msg);
    http_answer(mcp, req->client, answer, is_init, negotiated, resp);
    json_decref(answer);
}
