/* commands_node.c - the node in the command table: its view, and changes to other processes' models carried out by their owners. */
#include <stdio.h>
#include <string.h>

#include "base/base.h"
#include "server/commands.h"
#include "server/node.h"

/* An order to a remote model waits this long for its owner: a transfer of
 * a large model takes seconds. */
#define REMOTE_WAIT 60.0

int vram__cmd_node(vram_manager *m, json_t *args, vram__cmd_result *res)
{
    (void)m;
    if (args && json_object_size(args) > 0)
        return vram__cmd_fail(res, VRAM_EINVAL, "'node' takes no arguments");
    vram_node *n = vram__node_current();
    json_t *v = n ? vram__node_view(n)
                  : json_pack("{s:n, s:[], s:[], s:s}", "socket", "members", "evictions",
                              "message", "this server has no node socket (VRAM_NODE_SOCKET=off)");
    if (!v) return vram__cmd_fail(res, VRAM_EHOSTMEM, "out of host memory");
    vram__cmd_result_clear(res);
    res->code = 0;
    res->json = v;
    return 0;
}

/* One order, its failure turned into the result; *freed (when not NULL)
 * gets the device bytes the owner gave back. */
static int order(vram_node *n, long pid, const char *name, const char *verb, const char *key,
                 const char *val, uint64_t *freed, vram__cmd_result *res)
{
    char msg[VRAM_ERRMSG_MAX] = "";
    int rc = vram__node_order(n, pid, name, verb, key, val, REMOTE_WAIT, msg, sizeof msg, freed);
    if (rc >= 0) return 0;
    if (rc == VRAM_EBUSY)
        return vram__cmd_fail(res, rc, "%s is in use in its process (%s); try again when its "
                              "lease ends", name, msg);
    return vram__cmd_fail(res, rc, "%s %s: %s", verb, name, msg[0] ? msg : vram_strerror(rc));
}

static int seconds_arg(json_t *args, const char *field, char *buf, size_t len, int *has,
                       vram__cmd_result *res)
{
    json_t *v = json_object_get(args, field);
    *has = v != NULL;
    if (!v) return 0;
    double s = 0;
    if (vram__cmd_get_seconds(v, field, &s, res)) return res->code;
    snprintf(buf, len, "%.6f", s);
    return 0;
}

/* configure / timeout: every change is checked before any is sent. */
static int remote_settings(vram_node *n, long pid, const char *name, json_t *args, int seed,
                           vram__cmd_result *res)
{
    char idle[48], rel[48];
    int hi = 0, hr = 0, ho = 0, imm = 0;
    if (seconds_arg(args, seed ? "timeout" : "idle_timeout", idle, sizeof idle, &hi, res) ||
        (!seed && seconds_arg(args, "release_timeout", rel, sizeof rel, &hr, res)))
        return res->code;
    json_t *vo = seed ? NULL : json_object_get(args, "immediate_offload");
    if (vo) {
        if (json_is_boolean(vo))
            imm = json_is_true(vo);
        else if (json_is_integer(vo) && (json_integer_value(vo) == 0 || json_integer_value(vo) == 1))
            imm = (int)json_integer_value(vo);
        else
            return vram__cmd_fail(res, VRAM_EINVAL, "'immediate_offload' must be true or false");
        ho = 1;
    }
    if (!hi && !hr && !ho)
        return vram__cmd_fail(res, VRAM_EINVAL, seed ? "'timeout' is required (seconds, >= 0)"
                                                     : "nothing to change: give idle_timeout, "
                                                       "release_timeout or immediate_offload");
    if ((hi && order(n, pid, name, "set", "idle_timeout", idle, NULL, res)) ||
        (hr && order(n, pid, name, "set", "release_timeout", rel, NULL, res)) ||
        (ho && order(n, pid, name, "set", "immediate", imm ? "1" : "0", NULL, res)))
        return res->code;
    return 0;
}

int vram__cmd_remote(json_t *args, const char *op, vram__cmd_result *res)
{
    json_t *v = args ? json_object_get(args, "model") : NULL;
    vram_node *n = vram__node_current();
    char name[VRAM_NAME_MAX + 8];
    long pid = 0;
    if (!n || !json_is_string(v) ||
        !vram__node_remote_id(n, json_string_value(v), name, sizeof name, &pid))
        return 1;
    const char *id = json_string_value(v);
    int rc, moves = strcmp(op, "offload") == 0 || strcmp(op, "release") == 0;
    uint64_t freed = 0;
    if (moves)
        rc = order(n, pid, name, op, NULL, NULL, &freed, res);
    else
        rc = remote_settings(n, pid, name, args, strcmp(op, "timeout") == 0, res);
    if (rc < 0) return rc;
    char msg[256];
    if (strcmp(op, "offload") == 0 && freed == 0)
        snprintf(msg, sizeof msg, "%s is not on the GPU (nothing to offload; node member %ld)",
                 id, pid);
    else
        snprintf(msg, sizeof msg, "%s: done by its owner (node member %ld)",
                 strcmp(op, "offload") == 0   ? "offloaded"
                 : strcmp(op, "release") == 0 ? "released"
                                              : "updated",
                 pid);
    json_t *o = json_pack("{s:b, s:s, s:s, s:I, s:s, s:b}", "success", 1, "model", id, "name",
                          name, "member", (json_int_t)pid, "message", msg, "remote", 1);
    if (!o) return vram__cmd_fail(res, VRAM_EHOSTMEM, "out of host memory");
    vram__cmd_result_clear(res);
    res->code = 0;
    res->json = o;
    return 0;
}
