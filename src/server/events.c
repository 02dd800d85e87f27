/* events.c - the server's event log: a ring of recent libvram log lines, fed by a log listener, read by GET /api/v1/events. */
#include "server/events.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/base.h"
#include "vram.h"

/*
 * LOCK DISCIPLINE: ev->lock guards the ring. The listener runs under the
 * log's own lock and then takes ev->lock (log -> ring); readers take only
 * ev->lock and never log while holding it, so the order is never reversed.
 */

typedef struct event {
    uint64_t seq;
    double time; /* Unix seconds */
    int level;
    char kind[24];
    char model[VRAM_NAME_MAX + 1];
    char message[400];
} event;

struct vram__events {
    pthread_mutex_t lock;
    event ring[VRAM__EVENTS_MAX];
    uint64_t next; /* seq of the next event; the first is 1 */
    int listener;  /* vram_log_listen id, 0 when none */
};

static void on_line(vram_log_level level, const char *line, void *user)
{
    vram__events_add(user, (int)level, line);
}

vram__events *vram__events_create(void)
{
    vram__events *ev = calloc(1, sizeof *ev);
    if (!ev) return NULL;
    pthread_mutex_init(&ev->lock, NULL);
    ev->next = 1;
    int id = vram_log_listen(on_line, ev, VRAM_LOG_INFO);
    if (id <= 0) /* every listener slot taken (many servers in one process): no events */
        vram_log(VRAM_LOG_WARN, "http: no log listener free: GET /api/v1/events and the "
                                "dashboard's event log stay empty for this server");
    ev->listener = id > 0 ? id : 0;
    return ev;
}

void vram__events_destroy(vram__events *ev)
{
    if (!ev) return;
    vram_log_unlisten(ev->listener);
    pthread_mutex_destroy(&ev->lock);
    free(ev);
}

/* The message of a log line: what follows "TIMESTAMP LEVEL ". */
static const char *line_message(const char *line)
{
    const char *p = line;
    if (strlen(p) > 25 && p[4] == '-' && p[10] == 'T') {
        p = strchr(p, ' ');
        if (!p) return line;
        while (*p == ' ')
            p++;
        while (*p && *p != ' ')
            p++; /* the level */
        while (*p == ' ')
            p++;
    }
    return p;
}

/* kind: the first word ("load", "evict", "monitor:"), model: after "model=". */
static void classify(event *e)
{
    size_t n = strcspn(e->message, " ");
    if (n >= sizeof e->kind) n = sizeof e->kind - 1;
    memcpy(e->kind, e->message, n);
    e->kind[n] = '\0';
    if (n && e->kind[n - 1] == ':') e->kind[n - 1] = '\0';
    e->model[0] = '\0';
    const char *m = strstr(e->message, "model=");
    if (m && (m == e->message || m[-1] == ' ')) {
        m += 6;
        size_t ml = strcspn(m, " ,;");
        if (ml >= sizeof e->model) ml = sizeof e->model - 1;
        memcpy(e->model, m, ml);
        e->model[ml] = '\0';
    }
}

void vram__events_add(vram__events *ev, int level, const char *line)
{
    if (!ev || !line) return;
    const char *msg = line_message(line);
    if (strncmp(msg, "http:", 5) == 0) return; /* request traces are no events */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    pthread_mutex_lock(&ev->lock);
    event *e = &ev->ring[ev->next % VRAM__EVENTS_MAX];
    e->seq = ev->next++;
    e->time = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    e->level = level;
    snprintf(e->message, sizeof e->message, "%s", msg);
    vram__utf8_clean(e->message); /* a cut may split a character */
    classify(e);
    pthread_mutex_unlock(&ev->lock);
}

static const char *level_name(int level)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    return level >= 0 && level <= 3 ? names[level] : "info";
}

json_t *vram__events_json(vram__events *ev, uint64_t since, unsigned limit)
{
    json_t *list = json_array();
    if (!list) return NULL;
    pthread_mutex_lock(&ev->lock);
    uint64_t oldest = ev->next > VRAM__EVENTS_MAX ? ev->next - VRAM__EVENTS_MAX : 1;
    uint64_t from = since < oldest ? oldest : since;
    uint64_t missed = since < oldest && since > 0 ? oldest - since : 0;
    uint64_t to = from;
    for (; to < ev->next && (limit == 0 || to - from < limit); to++) {
        const event *e = &ev->ring[to % VRAM__EVENTS_MAX];
        json_t *o = json_pack("{s:I, s:f, s:s, s:s, s:s, s:s}", "seq", (json_int_t)e->seq, "time",
                              e->time, "level", level_name(e->level), "kind", e->kind, "model",
                              e->model, "message", e->message);
        if (o) json_array_append_new(list, o);
    }
    pthread_mutex_unlock(&ev->lock);
    return json_pack("{s:I, s:I, s:I, s:o}", "next", (json_int_t)to, "oldest",
                     (json_int_t)oldest, "missed", (json_int_t)missed, "events", list);
}
