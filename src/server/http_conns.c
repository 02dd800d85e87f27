/* http_conns.c - the HTTP server's connections: a table of them, a deadline for each request to arrive, caps per client and in all, and the watchdog that enforces them. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "base/base.h"
#include "server/http_internal.h"

#define LOG_EVERY 10.0 /* seconds between two log lines about the same limit */

/* Logs "what" at most once per LOG_EVERY seconds, with how often it happened. */
static void limit_note(vram__http *h, int which, const char *what, const char *addr)
{
    double now = vram__now();
    h->limit_hits[which]++;
    if (now - h->limit_logged[which] < LOG_EVERY) return;
    h->limit_logged[which] = now;
    vram_log(VRAM_LOG_WARN, "http: %s (client %s; %llu time%s since the last note)", what, addr,
             (unsigned long long)h->limit_hits[which], h->limit_hits[which] == 1 ? "" : "s");
    h->limit_hits[which] = 0;
}

static void addr_text(const struct sockaddr *sa, char *out, size_t len)
{
    snprintf(out, len, "?");
    if (!sa) return;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)len);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, (socklen_t)len);
}

/* Closes k's socket under the server (libmicrohttpd then ends it). Lock held. */
static void kill_conn(vram__conn *k)
{
    if (k->killed) return;
    k->killed = 1;
    shutdown(k->fd, SHUT_RDWR);
}

/* The oldest connection still waiting for its request (none handled),
 * optionally only from addr. Lock held. */
static vram__conn *oldest_waiting(vram__http *h, const char *addr)
{
    vram__conn *best = NULL;
    for (vram__conn *k = h->conns; k; k = k->next)
        if (!k->killed && !isinf(k->deadline) && (!addr || strcmp(k->addr, addr) == 0) &&
            (!best || k->since < best->since))
            best = k;
    return best;
}

/* A new connection: makes room under the caps by closing the oldest idle
 * connection of the same client (or, at the global cap, of anyone); a
 * client whose connections are all busy is refused. Lock held. */
static void admit(vram__http *h, vram__conn *nk)
{
    size_t same = 0;
    for (vram__conn *k = h->conns; k; k = k->next)
        if (!k->killed && strcmp(k->addr, nk->addr) == 0) same++;
    if (same >= (size_t)h->max_per_client) {
        vram__conn *old = oldest_waiting(h, nk->addr);
        if (old) {
            kill_conn(old);
            limit_note(h, 0, "connections per client at the limit: closed its oldest idle one",
                       nk->addr);
        } else {
            kill_conn(nk);
            limit_note(h, 1, "connections per client at the limit, all busy: refused a new one",
                       nk->addr);
            return;
        }
    }
    if (h->nconns >= (size_t)h->max_conns) {
        vram__conn *old = oldest_waiting(h, NULL);
        if (old) kill_conn(old);
        limit_note(h, 2, "connection limit reached: closed the oldest idle connection", nk->addr);
    }
}

void vram__http_on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                              enum MHD_ConnectionNotificationCode code)
{
    vram__http *h = cls;
    vram__conn *k = *socket_context;
    if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        if (!k) return;
        pthread_mutex_lock(&h->conn_lock);
        if (k->prev) k->prev->next = k->next;
        else h->conns = k->next;
        if (k->next) k->next->prev = k->prev;
        h->nconns--;
        pthread_mutex_unlock(&h->conn_lock);
        free(k);
        *socket_context = NULL;
        return;
    }
    k = calloc(1, sizeof *k);
    if (!k) return;
    const union MHD_ConnectionInfo *fi = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    const union MHD_ConnectionInfo *ai = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    k->fd = fi ? fi->connect_fd : -1;
    addr_text(ai ? ai->client_addr : NULL, k->addr, sizeof k->addr);
    k->since = vram__now();
    k->deadline = k->since + h->request_timeout;
    pthread_mutex_lock(&h->conn_lock);
    admit(h, k);
    k->next = h->conns;
    if (h->conns) h->conns->prev = k;
    h->conns = k;
    h->nconns++;
    pthread_mutex_unlock(&h->conn_lock);
    *socket_context = k;
}

vram__conn *vram__http_conn_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

void vram__http_conn_phase(vram__http *h, struct MHD_Connection *c, int handling)
{
    vram__conn *k = vram__http_conn_of(c);
    if (!k) return;
    double now = vram__now();
    pthread_mutex_lock(&h->conn_lock);
    k->deadline = handling ? INFINITY : now + h->request_timeout;
    k->since = now;
    pthread_mutex_unlock(&h->conn_lock);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

size_t vram__http_unescape(void *cls, struct MHD_Connection *c, char *uri)
{
    (void)cls;
    char *w = uri;
    for (char *p = uri; *p; p++) {
        int hi, lo;
        if (p[0] == '%' && (hi = hexval(p[1])) >= 0 && (lo = hexval(p[2])) >= 0) {
            char ch = (char)(hi * 16 + lo);
            if (ch == '\0') {
                vram__conn *k = vram__http_conn_of(c);
                if (k) k->bad_path = 1; /* answered 400 instead of cut short */
                ch = '?';
            }
            *w++ = ch;
            p += 2;
        } else {
            *w++ = *p;
        }
    }
    *w = '\0';
    return (size_t)(w - uri);
}

/* Closes every connection whose request is overdue; every 0.5 s. */
static void *watchdog_main(void *arg)
{
    vram__http *h = arg;
    pthread_mutex_lock(&h->conn_lock);
    while (!h->watchdog_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 500000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&h->watchdog_cond, &h->conn_lock, &ts);
        double now = vram__now();
        for (vram__conn *k = h->conns; k; k = k->next)
            if (!k->killed && k->deadline < now) {
                kill_conn(k);
                char what[160];
                snprintf(what, sizeof what, "closed a connection that sent no complete request "
                                            "in %.0f s", h->request_timeout);
                limit_note(h, 3, what, k->addr);
            }
    }
    pthread_mutex_unlock(&h->conn_lock);
    return NULL;
}

int vram__http_conns_start(vram__http *h)
{
    pthread_mutex_init(&h->conn_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h->watchdog_cond, &ca);
    pthread_condattr_destroy(&ca);
    h->conns_inited = 1;
    if (pthread_create(&h->watchdog, NULL, watchdog_main, h) != 0) return VRAM_EHOSTMEM;
    h->watchdog_started = 1;
    return 0;
}

void vram__http_conns_stop(vram__http *h)
{
    if (!h->conns_inited) return;
    if (h->watchdog_started) {
        pthread_mutex_lock(&h->conn_lock);
        h->watchdog_stop = 1;
        pthread_cond_signal(&h->watchdog_cond);
        pthread_mutex_unlock(&h->conn_lock);
        pthread_join(h->watchdog, NULL);
        h->watchdog_started = 0;
    }
}

void vram__http_conns_free(vram__http *h)
{
    if (!h->conns_inited) return;
    pthread_mutex_destroy(&h->conn_lock);
    pthread_cond_destroy(&h->watchdog_cond);
    h->conns_inited = 0;
}
