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
