/* events.h - the server's event log: recent lines of libvram's log (loads, offloads, evictions, errors) in a ring, read with a cursor. */
#ifndef VRAM_SERVER_EVENTS_H
#define VRAM_SERVER_EVENTS_H

#include <jansson.h>
#include <stdint.h>

/* Events kept; older ones are dropped (a reader that fell behind is told). */
#define VRAM__EVENTS_MAX 256

typedef struct vram__events vram__events;

/* Starts listening to libvram's log (vram_log_listen, level info and
 * above, whatever the log level of stderr). NULL when out of host memory;
 * when no listener slot is free the ring stays empty (a warning says so). */
vram__events *vram__events_create(void);
/* Stops listening and frees. NULL does nothing. */
void vram__events_destroy(vram__events *ev);

/* Adds one event line as the log writes it ("2026-...Z INFO  load model=a
 * bytes=..."), as the listener does; for tests. */
void vram__events_add(vram__events *ev, int level, const char *line);

/* {"next": N, "oldest": O, "missed": K, "events": [{seq, time, level,
 * kind, model, message}...]}: the events with seq >= since (at most limit,
 * the oldest first). next is the cursor of the following call; missed
 * counts events after since that were dropped before being read. */
json_t *vram__events_json(vram__events *ev, uint64_t since, unsigned limit);

#endif /* VRAM_SERVER_EVENTS_H */
