/* commands.h - vramd's one command table, used by HTTP and MCP alike, over jansson. */
#ifndef VRAM_SERVER_COMMANDS_H
#define VRAM_SERVER_COMMANDS_H

#include <jansson.h>

#include "vram.h"

/* Longest detail message of a failed command. */
#define VRAM__CMD_MSG_MAX 640

/* The outcome of one command. On success (code >= 0) exactly one of json
 * and raw holds the answer; on failure (code < 0) message says what went
 * wrong and neither is set. Clear with vram__cmd_result_clear. */
typedef struct vram__cmd_result {
    int code;     /* 0, VRAM_DEFERRED (work handed to the last lease), or a negative VRAM_E* */
    json_t *json; /* the answer object (owned) */
    char *raw;    /* or the answer as JSON text (malloc'd): the core's status, verbatim */
    char message[VRAM__CMD_MSG_MAX];
} vram__cmd_result;

typedef int (*vram__cmd_fn)(vram_manager *m, json_t *args, vram__cmd_result *res);

/* One operation. Arguments are a JSON object (NULL means {}); a field that
 * the command does not know, a wrong type or a bad value is VRAM_EINVAL and
 * changes nothing. */
typedef struct vram__command {
    const char *name;
    const char *summary;
    int slow;    /* may block (loads, transfers, waits): never run it on an event thread */
    int mutates; /* changes state: needs the token when one is set */
    vram__cmd_fn run;
    int registry; /* adds or removes models: takes the registry lock's write side itself
                     (server/models.h); every other command runs under its read side */
} vram__command;

/* The command called name ("status", "load", ...), or NULL. */
const vram__command *vram__command_find(const char *name);
/* The i-th command of the table, NULL past the end. */
const vram__command *vram__command_at(size_t i);

/* Runs cmd with args (borrowed; NULL = {}) and fills res, first freeing
 * what res holds: res must be zeroed or hold an earlier result. Returns
 * res->code. Never blocks forever: offload and release
 * of a model under a lease are deferred to the lease's end (VRAM_DEFERRED). */
int vram__command_run(vram_manager *m, const vram__command *cmd, json_t *args,
                      vram__cmd_result *res);

/* Frees what res holds and resets it. */
void vram__cmd_result_clear(vram__cmd_result *res);

/* The answer of a successful result as a JSON object (a new reference;
 * parses raw when that is what it holds). NULL on failure results. */
json_t *vram__cmd_result_object(const vram__cmd_result *res);

/* Sets a failure: res->code = code and the message from fmt. Returns code. */
int vram__cmd_fail(vram__cmd_result *res, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The HTTP status for a result code: 200, 202 for VRAM_DEFERRED, 400, 404,
 * 409, 503 or 500. */
unsigned vram__cmd_http_status(int code);

/* A number of seconds from a JSON value, as every command reads one. */
int vram__cmd_get_seconds(json_t *v, const char *field, double *out, vram__cmd_result *res);

/* The node (commands_node.c). "node": the node's view. remote: when
 * args.model names another process's model ("NAME@PID"), has its owner
 * carry out op ("offload", "release", "timeout" or "configure", with the
 * command's own arguments) and returns the result's code; returns 1 when
 * the model is not remote (the caller goes on locally). */
int vram__cmd_node(vram_manager *m, json_t *args, vram__cmd_result *res);
int vram__cmd_remote(json_t *args, const char *op, vram__cmd_result *res);

#endif /* VRAM_SERVER_COMMANDS_H */
