/* table.h - vramctl's output for people: ollama-ps-style tables, progress, human sizes. */
#ifndef VRAMCTL_TABLE_H
#define VRAMCTL_TABLE_H

#include <jansson.h>
#include <stddef.h>

/* "512 B", "1.5 GB", "12 GB" (powers of 1024) into out (len bytes). */
void human_size(double bytes, char *out, size_t len);

/* "42s", "1 minute", "3 hours", "2 days" (whole units, rounded down). */
void human_duration(double seconds, char *out, size_t len);

/* To stdout: the table NAME LOCATION STATE SIZE IDLE TIMEOUT LEASES, one
 * row per member of all (model name -> vramd's status object of it),
 * columns sized to their widest cell in display columns. */
void table_status(json_t *all);

/* The same table with the columns OWNER and PID: vramd's own models (all,
 * as for table_status) owned by vramd, then every model of the other
 * processes in the node view node (GET /api/v1/node) under its node-wide id
 * NAME@PID; with only, only that one of them (all may then be empty). */
void table_status_node(json_t *all, json_t *node, const char *only);

/* The number of models in the node view (others_only: of the members other
 * than vramd itself). */
size_t node_models(json_t *node, int others_only);

/* To stdout: the node's members (NAME PID UID BACKEND MODELS GPU BYTES
 * GIVEN), then its recent evictions. */
void table_node(json_t *node);

/* To stdout: an answer's "message", then one line per entry of its
 * "models" (model, result, and seconds, size and GB/s when bytes moved). */
void table_items(json_t *answer);

/* To stdout: one step of `run` ("  acquire   0.012 s  loaded ...") from
 * the step object s, what describing it (NULL: nothing). */
void table_step(const char *label, json_t *s, const char *what);

/* To stdout: vramd's device list (INDEX NAME TOTAL FREE MODELS BUDGET). */
void table_devices(json_t *answer);

/* To stderr, over the previous one (\r): the progress of loading name from
 * its status object st, elapsed seconds after the start. */
void table_progress(const char *name, json_t *st, double elapsed);

#endif /* VRAMCTL_TABLE_H */
