/* http_checks.h - the HTTP server's request checks: bearer token, Host and Origin (DNS rebinding). */
#ifndef VRAM_SERVER_HTTP_CHECKS_H
#define VRAM_SERVER_HTTP_CHECKS_H

#include <stddef.h>

#include "vram.h"

#define VRAM__HTTP_HOSTS_MAX 16
#define VRAM__HTTP_LOCAL_MAX 32

/* What a request is checked against; fixed once the server starts (read
 * from any event thread without a lock). */
typedef struct vram__http_guard {
    char bind[128];           /* the address bound to, without brackets */
    int wildcard;             /* bound to every address (0.0.0.0, ::) */
    char token[VRAM_STR_MAX]; /* "" = no authentication */
    char hosts[VRAM__HTTP_HOSTS_MAX][128]; /* allowed Host names besides loopback and bind */
    size_t nhosts;
    char local[VRAM__HTTP_LOCAL_MAX][64]; /* wildcard bind: this machine's addresses and names */
    size_t nlocal;
} vram__http_guard;

/* Fills g. allowed_hosts is a comma-separated list of names or addresses
 * (spaces around commas ignored; NULL or "" for none). Returns 0, or
 * VRAM_EINVAL with a message in err for a token or host that is too long,
 * too many hosts, or a host holding characters a Host header cannot. */
int vram__http_guard_init(vram__http_guard *g, const char *bind, int wildcard, const char *token,
                          const char *allowed_hosts, char *err, size_t errlen);

/* 1 when the Authorization header value (NULL: absent) carries the
 * guard's token as "Bearer TOKEN" (compared in constant time). */
int vram__http_authorized(const vram__http_guard *g, const char *authorization);

/* DNS-rebinding and cross-site protection: Host (NULL: absent) must name
 * this machine's loopback, the bound address or an allowed host, and
 * Origin (NULL: absent), when sent, too. On a wildcard bind the bound
 * address is every address of this machine (getifaddrs) and its host
 * name, as found when the guard was made; any other name is refused.
 * Returns 1 when the request may go on, else 0 with *why set. */
int vram__http_origin_ok(const vram__http_guard *g, const char *host, const char *origin,
                         const char **why);

#endif /* VRAM_SERVER_HTTP_CHECKS_H */
