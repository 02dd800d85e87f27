/* node.h - vramd's side of the node socket, for the views (status, metrics, commands, MCP): members, their models, orders. */
#ifndef VRAM_SERVER_NODE_H
#define VRAM_SERVER_NODE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "vram_server.h"

/* The node this process serves (the last vram_node_start), or NULL. The
 * views below use it; one node per process. */
vram_node *vram__node_current(void);

/* The node's view as a JSON object (new reference): socket, members (each
 * with pid, uid, name, backend, devices and models, every model with its
 * node-wide id "NAME@PID"), and the last evictions. NULL when there is no
 * node or out of memory. */
json_t *vram__node_view(vram_node *n);

/* Splits a node-wide model id naming a model of another process that has
 * joined: "NAME@PID", or "NAME@mMEMBER" for a process in another pid
 * namespace (a container), whose pid vramd cannot see. 1 with name (cap
 * bytes) and *member_id set; 0 when id is not such an id (a local name). */
int vram__node_remote_id(vram_node *n, const char *id, char *name, size_t cap, long *member_id);

/* Has the owner of remote model NAME of member member_id carry out verb
 * ("offload", "release" or "set" with key=value: idle_timeout,
 * release_timeout, immediate), waiting up to timeout seconds for its answer.
 * Returns the owner's code (0 or VRAM_E*; VRAM_ENOENT: no such process or
 * model; VRAM_ETIMEDOUT: no answer in time) with its message in msg, and
 * in *freed (when not NULL) the device bytes the owner gave back (0: the
 * model was not on the device; an offload or release of it is then, as a
 * local one, a success with nothing to do). */
int vram__node_order(vram_node *n, long member_id, const char *name, const char *verb,
                     const char *key, const char *value, double timeout, char *msg, size_t len,
                     uint64_t *freed);

#endif /* VRAM_SERVER_NODE_H */
