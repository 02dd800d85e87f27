/* http_routes.c - the HTTP server's routes: paths, the command each method runs, and the Allow lists. */
#include <string.h>

#include "server/http_internal.h"

const route vram__http_routes[NROUTES] = {
    [R_OTHER] = {"other", NULL, NULL, NULL, NULL, ""},
    [R_ROOT] = {"/", "", NULL, NULL, NULL, "GET, HEAD"},
    [R_HEALTH] = {"/healthz", "health", NULL, NULL, NULL, "GET, HEAD"},
    [R_METRICS] = {"/metrics", "", NULL, NULL, NULL, "GET, HEAD"},
    [R_GPU_STATUS] = {"/api/gpu/status", "status", NULL, NULL, NULL, "GET, HEAD"},
    [R_GPU_OFFLOAD] = {"/api/gpu/offload", NULL, "offload", NULL, NULL, "POST"},
    [R_GPU_RELEASE] = {"/api/gpu/release", NULL, "release", NULL, NULL, "POST"},
    [R_GPU_TIMEOUT] = {"/api/gpu/timeout", NULL, "timeout", NULL, NULL, "POST"},
    [R_MODELS] = {"/api/v1/models", "models", "register", NULL, NULL, "GET, HEAD, POST"},
    [R_MODEL] = {"/api/v1/models/{name}", "show", NULL, "configure", "unregister",
                 "GET, HEAD, PATCH, DELETE"},
    [R_MODEL_LOAD] = {"/api/v1/models/{name}/load", NULL, "load", NULL, NULL, "POST"},
    [R_MODEL_RUN] = {"/api/v1/models/{name}/run", NULL, "run", NULL, NULL, "POST"},
    [R_MODEL_OFFLOAD] = {"/api/v1/models/{name}/offload", NULL, "offload", NULL, NULL, "POST"},
    [R_MODEL_RELEASE] = {"/api/v1/models/{name}/release", NULL, "release", NULL, NULL, "POST"},
    [R_MODEL_REOPEN] = {"/api/v1/models/{name}/reopen", NULL, "reopen", NULL, NULL, "POST"},
    [R_DEVICES] = {"/api/v1/devices", "devices", NULL, NULL, NULL, "GET, HEAD"},
    [R_EVENTS] = {"/api/v1/events", "", NULL, NULL, NULL, "GET, HEAD"},
    [R_NODE] = {"/api/v1/node", "node", NULL, NULL, NULL, "GET, HEAD"},
    [R_MCP] = {"/mcp", NULL, NULL, NULL, NULL, "POST, DELETE"},
};

int vram__http_match_route(const char *url, const char **name, size_t *name_len)
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
        {"/api/v1/events", R_EVENTS},
        {"/api/v1/node", R_NODE},
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
                   {"/release", R_MODEL_RELEASE},
                   {"/reopen", R_MODEL_REOPEN}};
    for (size_t i = 0; i < sizeof actions / sizeof actions[0]; i++) {
        size_t sl = strlen(actions[i].suffix);
        if (len >= sl && strcmp(rest + len - sl, actions[i].suffix) == 0) { /* "/load" alone: no name, 404 */
            *name = rest;
            *name_len = len - sl;
            return actions[i].r;
        }
    }
    *name = rest;
    *name_len = len;
    return R_MODEL;
}

int vram__http_method(const char *m)
{
    if (strcmp(m, "GET") == 0) return M_GET;
    if (strcmp(m, "HEAD") == 0) return M_HEAD;
    if (strcmp(m, "POST") == 0) return M_POST;
    if (strcmp(m, "PATCH") == 0) return M_PATCH;
    if (strcmp(m, "DELETE") == 0) return M_DELETE;
    return M_OTHER;
}

const char *vram__http_route_command(int r, int method)
{
    const route *rt = &vram__http_routes[r];
    switch (method) {
    case M_GET:
    case M_HEAD: return rt->get;
    case M_POST: return rt->post;
    case M_PATCH: return rt->patch;
    case M_DELETE: return rt->del;
    default: return NULL;
    }
}
