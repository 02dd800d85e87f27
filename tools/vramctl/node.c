/* node.c - vramctl's view of the node: `vramctl node`, and the other processes' models for `status`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "table.h"
#include "vramctl.h"

json_t *node_fetch(void)
{
    buf b = {0};
    long st = client_request("GET", "/api/v1/node", NULL, &b);
    json_t *o = st == 200 && b.data ? json_loads(b.data, 0, NULL) : NULL;
    free(b.data);
    if (o && !json_is_array(json_object_get(o, "members"))) {
        json_decref(o);
        o = NULL;
    }
    return o;
}

int node_others(json_t *node)
{
    int n = 0;
    size_t i;
    json_t *mb;
    json_array_foreach(json_object_get(node, "members"), i, mb)
    {
        if (!json_is_true(json_object_get(mb, "self"))) n++;
    }
    return n;
}

/* The model of another process with node-wide id, or NULL (borrowed from node). */
static json_t *node_model(json_t *node, const char *id)
{
    size_t i, j;
    json_t *mb, *md;
    json_array_foreach(json_object_get(node, "members"), i, mb)
    {
        if (json_is_true(json_object_get(mb, "self"))) continue;
        json_array_foreach(json_object_get(mb, "models"), j, md)
        {
            const char *mid = json_string_value(json_object_get(md, "id"));
            if (mid && !strcmp(mid, id)) return md;
        }
    }
    return NULL;
}

int status_remote(const char *id)
{
    if (!strchr(id, '@')) return 0;
    json_t *node = node_fetch();
    json_t *md = node ? node_model(node, id) : NULL;
    if (!md) {
        json_decref(node);
        return 0;
    }
    if (client_opt.json) {
        char *text = json_dumps(md, JSON_COMPACT);
        if (text) printf("%s\n", text);
        free(text);
    } else {
        json_t *none = json_object();
        table_status_node(none, node, id);
        json_decref(none);
    }
    json_decref(node);
    return 1;
}

int cmd_node(int argc, char **argv)
{
    (void)argv;
    if (argc) die(EXIT_USAGE, "node takes no arguments");
    json_t *o = client_call("GET", "/api/v1/node", NULL);
    const char *sock = json_string_value(json_object_get(o, "socket"));
    if (!sock) {
        const char *msg = json_string_value(json_object_get(o, "message"));
        printf("%s\n", msg ? msg : "vramd has no node socket");
        json_decref(o);
        return 0;
    }
    printf("node socket %s: %zu process%s joined\n\n", sock,
           json_array_size(json_object_get(o, "members")),
           json_array_size(json_object_get(o, "members")) == 1 ? "" : "es");
    table_node(o);
    json_decref(o);
    return 0;
}
