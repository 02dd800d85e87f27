/* metrics.h - Prometheus text for vramd: models, devices and per-endpoint request counters. */
#ifndef VRAM_SERVER_METRICS_H
#define VRAM_SERVER_METRICS_H

#include <stddef.h>

#include "vram.h"

typedef struct vram__metrics vram__metrics;

/* Counters for n endpoints named by names (static strings, e.g.
 * "/api/gpu/status"); NULL when out of memory. */
vram__metrics *vram__metrics_create(const char *const *names, size_t n);
void vram__metrics_destroy(vram__metrics *mx);

/* Counts one finished request of endpoint (index into names) with its
 * status and duration. Lock-free; safe from any thread. */
void vram__metrics_count(vram__metrics *mx, size_t endpoint, unsigned status, double seconds);

/* The whole exposition (text format 0.0.4): per model state, bytes on
 * device and host, counters and last durations of loads, offloads,
 * restores, releases and evictions; per device memory; per endpoint
 * request counts and durations; when this process serves a node
 * (vram__node_current), its members and every joined process's models,
 * labelled by process and pid; sessions is the number of live MCP
 * sessions. Caller frees; *len gets the length. NULL when out of memory. */
char *vram__metrics_render(vram__metrics *mx, vram_manager *m, size_t sessions, size_t *len);

#endif /* VRAM_SERVER_METRICS_H */
