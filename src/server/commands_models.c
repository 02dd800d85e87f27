/* commands_models.c - the register, unregister and reopen commands (POST/DELETE /api/v1/models, MCP, vramctl) over models.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/models.h"

/* Fails res with rc and the library's detail. */
static int fail_detail(vram__cmd_result *res, int rc, const char *what, const char *name)
{
    const char *d = vram_last_error();
    return vram__cmd_fail(res, rc, "%s '%.128s': %s", what, name, d && *d ? d : vram_strerror(rc));
}

/* Only the keys of allowed (NULL-terminated) in args. */
static int only_fields(json_t *args, const char *const *allowed, vram__cmd_result *res)
{
    const char *key;
    json_t *v;
    json_object_foreach(args, key, v)
    {
        int ok = 0;
        for (const char *const *a = allowed; *a; a++)
            ok |= strcmp(*a, key) == 0;
        if (!ok)
            return vram__cmd_fail(res, VRAM_EINVAL, "unknown field '%.64s' (accepted: %s)", key,
                                  allowed[1] && !strcmp(allowed[1], "source")
                                      ? "name, source, options; or spec"
                                      : "model");
    }
    return 0;
}

/* A JSON option value as the text the spec parser reads. */
static int option_text(json_t *v, char *out, size_t len)
{
    if (json_is_string(v))
        snprintf(out, len, "%s", json_string_value(v));
    else if (json_is_integer(v))
        snprintf(out, len, "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v))
        snprintf(out, len, "%.17g", json_real_value(v));
    else if (json_is_boolean(v))
        snprintf(out, len, "%s", json_is_true(v) ? "true" : "false");
    else
        return -1;
    return 0;
}

/* The spec of a register command: {"spec": "NAME=SOURCE,..."} or
 * {"name": N, "source": S, "options": {...}}, through the one parser. */
static int spec_from_args(json_t *args, vram_model_spec *s, vram__cmd_result *res)
{
    static const char *const fields[] = {"name", "source", "options", "spec", NULL};
    char err[512];
    if (!args || only_fields(args, fields, res)) return args ? res->code : vram__cmd_fail(res, VRAM_EINVAL, "'name' and 'source' are required");
    json_t *spec = json_object_get(args, "spec");
    json_t *name = json_object_get(args, "name"), *src = json_object_get(args, "source");
    json_t *opts = json_object_get(args, "options");
    if (spec) {
        if (!json_is_string(spec) || name || src || opts)
            return vram__cmd_fail(res, VRAM_EINVAL,
                                  "'spec' is a string NAME=SOURCE[,key=value...] and comes alone");
        if (vram_model_spec_parse(s, json_string_value(spec), err, sizeof err) < 0)
            return vram__cmd_fail(res, VRAM_EINVAL, "spec '%.200s': %s", json_string_value(spec), err);
        return 0;
    }
    if (!json_is_string(name) || !json_string_length(name) || json_string_length(name) > VRAM_NAME_MAX)
        return vram__cmd_fail(res, VRAM_EINVAL, "'name' is required: a model name of 1-%d bytes",
                              VRAM_NAME_MAX);
    if (!json_is_string(src) || !json_string_length(src) || json_string_length(src) >= VRAM_SOURCE_MAX)
        return vram__cmd_fail(res, VRAM_EINVAL,
                              "'source' is required: synthetic:SIZE[:SEED], a .safetensors file, "
                              "an index or a directory");
    if (opts && !json_is_object(opts))
        return vram__cmd_fail(res, VRAM_EINVAL, "'options' must be an object, e.g. "
                                                "{\"idle_timeout\": \"10m\", \"device\": 0}");
    vram_model_spec_init(s);
    snprintf(s->name, sizeof s->name, "%s", json_string_value(name));
    snprintf(s->source, sizeof s->source, "%s", json_string_value(src));
    const char *key;
    json_t *v;
    json_object_foreach(opts, key, v)
    {
        char text[128];
        if (option_text(v, text, sizeof text) < 0)
            return vram__cmd_fail(res, VRAM_EINVAL, "option '%.64s' must be a number, a string or "
                                                    "a boolean", key);
        if (vram_model_spec_option(s, key, text, err, sizeof err) < 0)
            return vram__cmd_fail(res, VRAM_EINVAL, "%s", err);
    }
    return 0;
}

/* {"success": true, "model": name, "message": msg, "status": {...}} */
static int answer(vram_manager *m, const char *name, const char *msg, vram__cmd_result *res)
{
    char *st = vram_model_status_json(m, name);
    json_t *status = st ? json_loads(st, 0, NULL) : NULL;
    free(st);
    res->json = json_pack("{s:b, s:s, s:s, s:o}", "success", 1, "model", name, "message", msg,
                          "status", status ? status : json_null());
    if (!res->json) return vram__cmd_fail(res, VRAM_EHOSTMEM, "out of host memory");
    return 0;
}

int vram__cmd_register(vram_manager *m, json_t *args, vram__cmd_result *res)
{
    vram_model_spec s;
    if (spec_from_args(args, &s, res)) return res->code;
    vram_set_error(VRAM_OK, "%s", "");
    int rc = vram_server_register(m, &s);
    /* a source the request names that cannot be opened (no such file, not
     * readable) is the request's mistake, not the server's: 400, not 500 */
    if (rc == VRAM_EIO) rc = VRAM_EINVAL;
    if (rc < 0) return fail_detail(res, rc, "registering", s.name);
    char msg[VRAM_SOURCE_MAX + 200];
    snprintf(msg, sizeof msg, "registered %s (%s); nothing is loaded before its first use", s.name,
             s.source);
    return answer(m, s.name, msg, res);
}

/* The name in args.model (the path's {name} over HTTP). */
static const char *model_arg(json_t *args, vram__cmd_result *res)
{
    static const char *const fields[] = {"model", NULL};
    if (!args || only_fields(args, fields, res)) {
        if (!args) vram__cmd_fail(res, VRAM_EINVAL, "'model' is required (a model name)");
        return NULL;
    }
    json_t *v = json_object_get(args, "model");
    if (!json_is_string(v) || !json_string_length(v)) {
        vram__cmd_fail(res, VRAM_EINVAL, "'model' is required (a model name)");
        return NULL;
    }
    return json_string_value(v);
}

int vram__cmd_unregister(vram_manager *m, json_t *args, vram__cmd_result *res)
{
    const char *name = model_arg(args, res);
    if (!name) return res->code;
    vram_set_error(VRAM_OK, "%s", "");
    int rc = vram_server_unregister(m, name);
    if (rc < 0) return fail_detail(res, rc, "unregistering", name);
    char msg[VRAM_NAME_MAX + 80];
    snprintf(msg, sizeof msg, "%s released and unregistered", name);
    res->json = json_pack("{s:b, s:s, s:s}", "success", 1, "model", name, "message", msg);
    return res->json ? 0 : vram__cmd_fail(res, VRAM_EHOSTMEM, "out of host memory");
}

int vram__cmd_reopen(vram_manager *m, json_t *args, vram__cmd_result *res)
{
    const char *name = model_arg(args, res);
    if (!name) return res->code;
    vram_set_error(VRAM_OK, "%s", "");
    int rc = vram_server_reopen(m, name);
    if (rc < 0) return fail_detail(res, rc, "reopening", name);
    char msg[VRAM_NAME_MAX + 80];
    snprintf(msg, sizeof msg, "%s reopened from its source; the next use loads it", name);
    return answer(m, name, msg, res);
}
