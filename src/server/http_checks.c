/* http_checks.c - the HTTP server's request checks: bearer token, Host and Origin (DNS rebinding). */
#include "server/http_checks.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

static int token_ok(const char *given, const char *want)
{
    /* constant time in the content of the token */
    size_t gl = strlen(given), wl = strlen(want);
    unsigned char d = (unsigned char)(gl != wl);
    for (size_t i = 0; i < wl; i++)
        d |= (unsigned char)(want[i] ^ (i < gl ? given[i] : 0));
    return d == 0;
}

int vram__http_authorized(const vram__http_guard *g, const char *a)
{
    if (!a) return 0;
    while (*a == ' ')
        a++;
    if (strncasecmp(a, "Bearer", 6) != 0 || (a[6] != ' ' && a[6] != '\t')) return 0;
    a += 6;
    while (*a == ' ' || *a == '\t')
        a++;
    size_t n = strlen(a);
    while (n && (a[n - 1] == ' ' || a[n - 1] == '\t'))
        n--;
    char given[VRAM_STR_MAX + 2];
    if (n > VRAM_STR_MAX) n = VRAM_STR_MAX + 1; /* too long: cannot match, still compared */
    memcpy(given, a, n);
    given[n] = '\0';
    return token_ok(given, g->token);
}

static int same(const char *a, size_t alen, const char *b)
{
    return strlen(b) == alen && strncasecmp(a, b, alen) == 0;
}

/* host (no port, no brackets) is a loopback name, the address bound to or
 * an allowed host. */
static int host_allowed(const vram__http_guard *g, const char *host, size_t len)
{
    static const char *const loop[] = {"localhost", "127.0.0.1", "::1", "localhost.", NULL};
    for (const char *const *l = loop; *l; l++)
        if (same(host, len, *l)) return 1;
    if (len > 4 && strncmp(host, "127.", 4) == 0) {
        for (size_t i = 4; i < len; i++)
            if (!((host[i] >= '0' && host[i] <= '9') || host[i] == '.')) return 0;
        return 1;
    }
    for (size_t i = 0; i < g->nhosts; i++)
        if (same(host, len, g->hosts[i])) return 1;
    for (size_t i = 0; i < g->nlocal; i++)
        if (same(host, len, g->local[i])) return 1;
    return !g->wildcard && same(host, len, g->bind);
}

/* Splits "host:port", "[v6]:port" or "host" into the host part. */
static void host_part(const char *hp, const char **host, size_t *len)
{
    if (*hp == '[') {
        const char *e = strchr(hp, ']');
        *host = hp + 1;
        *len = e ? (size_t)(e - hp - 1) : strlen(hp + 1);
        return;
    }
    const char *colon = strchr(hp, ':');
    if (colon && strchr(colon + 1, ':')) colon = NULL; /* a bare IPv6 address */
    *host = hp;
    *len = colon ? (size_t)(colon - hp) : strlen(hp);
}

int vram__http_origin_ok(const vram__http_guard *g, const char *host, const char *origin,
                         const char **why)
{
    const char *hn = NULL;
    size_t hl = 0;
    if (host) {
        host_part(host, &hn, &hl);
        if (!host_allowed(g, hn, hl)) {
            *why = "Forbidden: the Host header does not name this server (DNS rebinding?); "
                   "add the name to --allowed-hosts (VRAM_ALLOWED_HOSTS)";
            return 0;
        }
    }
    if (!origin) return 1;
    const char *p = strstr(origin, "://");
    if (!p || (strncasecmp(origin, "http://", 7) != 0 && strncasecmp(origin, "https://", 8) != 0)) {
        *why = "Forbidden: requests from this Origin are not accepted";
        return 0;
    }
    const char *on;
    size_t ol;
    host_part(p + 3, &on, &ol);
    if (ol && on[ol - 1] == '/') ol--;
    if (host_allowed(g, on, ol)) return 1;
    *why = "Forbidden: requests from this Origin are not accepted";
    return 0;
}

static void add_local(vram__http_guard *g, const char *name)
{
    if (!*name || g->nlocal == VRAM__HTTP_LOCAL_MAX || strlen(name) >= sizeof g->local[0]) return;
    snprintf(g->local[g->nlocal++], sizeof g->local[0], "%s", name);
}

/* A wildcard bind answers on every address of the machine: those (as
 * getifaddrs has them now, without an IPv6 zone) and the host name. */
static void add_local_names(vram__http_guard *g)
{
    char name[256];
    if (gethostname(name, sizeof name) == 0) {
        name[sizeof name - 1] = '\0';
        add_local(g, name);
    }
    struct ifaddrs *ifa = NULL;
    if (getifaddrs(&ifa) != 0) return;
    for (struct ifaddrs *i = ifa; i; i = i->ifa_next) {
        if (!i->ifa_addr) continue;
        char text[INET6_ADDRSTRLEN] = "";
        if (i->ifa_addr->sa_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, text, sizeof text);
        else if (i->ifa_addr->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr, text, sizeof text);
        add_local(g, text);
    }
    freeifaddrs(ifa);
}

static int host_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '-' || c == ':' || c == '_';
}

/* Adds one name of the allowed-hosts list; [v6] brackets are dropped. */
static int add_host(vram__http_guard *g, const char *s, size_t n, char *err, size_t errlen)
{
    if (n >= 2 && s[0] == '[' && s[n - 1] == ']') s++, n -= 2;
    if (n == 0) return 0;
    if (g->nhosts == VRAM__HTTP_HOSTS_MAX) {
        snprintf(err, errlen, "allowed hosts: at most %d names", VRAM__HTTP_HOSTS_MAX);
        return VRAM_EINVAL;
    }
    if (n >= sizeof g->hosts[0]) {
        snprintf(err, errlen, "allowed hosts: '%.40s...' is longer than %zu bytes", s,
                 sizeof g->hosts[0] - 1);
        return VRAM_EINVAL;
    }
    for (size_t i = 0; i < n; i++)
        if (!host_char_ok(s[i])) {
            snprintf(err, errlen, "allowed hosts: '%.*s' is not a host name or address",
                     (int)(n > 64 ? 64 : n), s);
            return VRAM_EINVAL;
        }
    memcpy(g->hosts[g->nhosts], s, n);
    g->hosts[g->nhosts++][n] = '\0';
    return 0;
}

int vram__http_guard_init(vram__http_guard *g, const char *bind, int wildcard, const char *token,
                          const char *allowed_hosts, char *err, size_t errlen)
{
    memset(g, 0, sizeof *g);
    snprintf(g->bind, sizeof g->bind, "%s", bind ? bind : "");
    g->wildcard = wildcard;
    if (wildcard) add_local_names(g);
    if (token && strlen(token) >= sizeof g->token) {
        snprintf(err, errlen, "the token is longer than %d bytes", VRAM_STR_MAX - 1);
        return VRAM_EINVAL;
    }
    snprintf(g->token, sizeof g->token, "%s", token ? token : "");
    for (const char *p = allowed_hosts; p && *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        size_t n = (size_t)(e - p);
        while (n && p[n - 1] == ' ')
            n--;
        int rc = add_host(g, p, n, err, errlen);
        if (rc < 0) return rc;
        p = e;
    }
    return 0;
}
