/* vramctl.h - what vramctl's modules share: exit codes, die(), the commands of main's table. */
#ifndef VRAMCTL_H
#define VRAMCTL_H

#include <jansson.h>

/* Exit codes. */
#define EXIT_FAILED 1      /* vramd answered with an error */
#define EXIT_UNREACHABLE 2 /* vramd is not running or not reachable */
#define EXIT_USAGE 64      /* bad command line */

/* Prints "vramctl: " and the message to stderr and exits with code. */
void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

/* Each command takes the words after its name and returns the exit code
 * (or exits through die). */

/* commands.c: the commands that talk to vramd */
int cmd_status(int argc, char **argv);
int cmd_offload(int argc, char **argv);
int cmd_release(int argc, char **argv);
int cmd_timeout(int argc, char **argv);
int cmd_load(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_devices(int argc, char **argv);
int cmd_register(int argc, char **argv);
int cmd_unregister(int argc, char **argv);
int cmd_reopen(int argc, char **argv);

/* node.c: the node (GET /api/v1/node) */
int cmd_node(int argc, char **argv);
/* The node view, or NULL when vramd has none (or answers an error). */
json_t *node_fetch(void);
/* How many members other than vramd itself it lists. */
int node_others(json_t *node);
/* Shows the model of another process with node-wide id NAME@PID (as status
 * MODEL does); 0 when the node has no such model. */
int status_remote(const char *id);

/* mcp_bridge.c: MCP on stdin/stdout, forwarded to vramd's /mcp */
int cmd_mcp(int argc, char **argv);

/* local commands, which need neither vramd nor the configuration */
int cmd_make_model(int argc, char **argv);         /* make_model.c */
int cmd_pick_gpu(int argc, char **argv);           /* pick_gpu.c */
int cmd_checksum_synthetic(int argc, char **argv); /* checksum.c, for the tests */

#endif /* VRAMCTL_H */
