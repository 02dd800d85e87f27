/* mcp.h - vramd's MCP server: one JSON-RPC dispatcher and tool table; Streamable HTTP rules. */
#ifndef VRAM_SERVER_MCP_H
#define VRAM_SERVER_MCP_H

#include <jansson.h>
#include <stddef.h>

#include "vram.h"

typedef struct vram__mcp vram__mcp;

/* The protocol versions served, newest first. */
extern const char *const vram__mcp_versions[];

/* A dispatcher over manager m (borrowed) with an empty session table. */
vram__mcp *vram__mcp_create(vram_manager *m);
void vram__mcp_destroy(vram__mcp *mcp);

/* Live Streamable HTTP sessions. */
size_t vram__mcp_session_count(vram__mcp *mcp);

/* Sessions unused for idle_max seconds expire (default 1800); a client
 * address holds at most per_client (default 32). At a cap, or with the
 * table full, an initialize may push out only a session never used since
 * its own initialize, else it is refused with 503. 0 keeps a value. */
void vram__mcp_set_session_limits(vram__mcp *mcp, double idle_max, size_t per_client);

/* Handles one parsed JSON-RPC message (any JSON value). Returns the answer
 * (a new object) or NULL when none is due (notifications, responses). For
 * an accepted initialize, *negotiated (when not NULL) gets the version. */
json_t *vram__mcp_dispatch(vram__mcp *mcp, json_t *msg, const char **negotiated);

/* A JSON-RPC error object {"jsonrpc":"2.0","id":id,"error":{code,message}}
 * as text (malloc'd); id NULL means "id": null. */
char *vram__mcp_error_text(json_t *id, int code, const char *message);

/* One HTTP request to /mcp, as the HTTP layer saw it. */
typedef struct vram__mcp_http_req {
    const char *method;           /* "POST", "GET", "DELETE", ... */
    const char *session_id;       /* Mcp-Session-Id, or NULL */
    const char *protocol_version; /* MCP-Protocol-Version, or NULL */
    const char *accept;           /* Accept, or NULL */
    const char *content_type;     /* Content-Type, or NULL */
    const char *body;
    size_t body_len;
    const char *client;           /* the client's address (sessions are capped per client), or NULL */
} vram__mcp_http_req;

typedef struct vram__mcp_http_resp {
    unsigned status;
    char *body;          /* malloc'd application/json text, or NULL for an empty body */
    char session_id[40]; /* when not empty: send as Mcp-Session-Id */
    const char *allow;   /* when not NULL: send as Allow (405) */
} vram__mcp_http_resp;

/* Answers one request to /mcp (Host and Origin already checked): POST
 * carries one message; initialize opens a session; DELETE ends one; GET
 * and the rest are 405. Fills resp (body to be freed by the caller). */
void vram__mcp_http(vram__mcp *mcp, const vram__mcp_http_req *req, vram__mcp_http_resp *resp);

/* True when the request is a POST whose tools/call may block (a slow
 * command): the HTTP layer then answers it off its event threads. */
int vram__mcp_http_is_slow(const vram__mcp_http_req *req);

#endif /* VRAM_SERVER_MCP_H */
