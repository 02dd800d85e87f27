/* http_respond.c - the HTTP server's answers: JSON bodies, errors, command results. */
#include <stdlib.h>
#include <string.h>

#include "server/http_internal.h"

enum MHD_Result vram__http_send_body(struct MHD_Connection *c, request *r, unsigned status, char *body,
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

char *vram__http_dump_line(json_t *o, size_t *len)
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

enum MHD_Result vram__http_send_json(struct MHD_Connection *c, request *r, unsigned status, json_t *o,
                                 const char *h1, const char *v1)
{
    size_t len = 0;
    char *text = vram__http_dump_line(o, &len);
    if (!text) return MHD_NO;
    return vram__http_send_body(c, r, status, text, len, "application/json", h1, v1);
}

enum MHD_Result vram__http_send_error(struct MHD_Connection *c, request *r, unsigned status,
                                  const char *code, const char *message, const char *h1,
                                  const char *v1)
{
    if (r->route == R_MCP) { /* /mcp speaks JSON-RPC, even when refusing */
        char *text = vram__mcp_error_text(NULL, -32000, message);
        return vram__http_send_body(c, r, status, text, text ? strlen(text) : 0, "application/json", h1, v1);
    }
    return vram__http_send_json(c, r, status,
                     json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", message), h1,
                     v1);
}

void vram__http_result_body(vram__cmd_result *res, unsigned *status, char **body, size_t *len)
{
    *status = vram__cmd_http_status(res->code);
    *body = NULL;
    if (res->code < 0) {
        *body = vram__http_dump_line(json_pack("{s:{s:s, s:s}}", "error", "code", vram_err_name(res->code),
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
        *body = vram__http_dump_line(json_incref(res->json), len);
    }
}
