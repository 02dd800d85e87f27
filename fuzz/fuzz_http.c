/* fuzz_http.c - libFuzzer target: raw bytes as HTTP requests through the real server (libvram-server on a loopback port, host-backend manager), every answer checked. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>

#include "vram.h"
#include "vram_server.h"

/*
 * Each input is written as is to a fresh connection (one or more requests,
 * pipelined or not, well-formed or not). The fuzzer waits briefly for an
 * answer, half-closes, and reads to the end. Every answer must start with a
 * status line; every answer the server wrote itself (application/json)
 * must carry a JSON body of the length it announces and is never a 500. The
 * server must never crash, leak, hang past the request deadline or trip a
 * sanitizer.
 */

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int g_port;
static int g_head; /* the input holds a HEAD request: answers without bodies */
static vram_manager *g_m;  /* reachable: they live as long as the process */
static vram_server *g_srv;

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "fuzz_http: check failed at line %d: %s\n", __LINE__, #c);            \
            __builtin_trap();                                                                      \
        }                                                                                          \
    } while (0)

static void drop_log(vram_log_level level, const char *line, void *user)
{
    (void)level;
    (void)line;
    (void)user;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    vram_set_log_level(VRAM_LOG_ERROR);
    vram_set_log_callback(drop_log, NULL);
    vram_config cfg;
    vram_config_init(&cfg);
    char err[256];
    const char *set[][2] = {{"VRAM_BACKEND", "host"}, {"VRAM_HOST_MEMORY", "2M"},
                            {"VRAM_HOST_DEVICES", "1"}, {"VRAM_EVICT_WAIT", "0"},
                            {"VRAM_CHUNK", "256K"}, {"GPU_IDLE_TIMEOUT", "0"}};
    for (size_t i = 0; i < sizeof set / sizeof set[0]; i++)
        if (vram_config_set(&cfg, set[i][0], set[i][1], err, sizeof err) < 0) abort();
    if (vram_manager_create(&cfg, &g_m) < 0) abort();
    vram_manager *m = g_m;
    static const char *const models[][2] = {{"small", "synthetic:768K"}, {"big", "synthetic:1536K:7"}};
    for (size_t i = 0; i < 2; i++) {
        vram_model_opts o;
        vram_model_opts_init(&o);
        o.source = models[i][1];
        if (vram_manager_register(m, models[i][0], &o, NULL) < 0) abort();
    }
    vram_server_opts so;
    vram_server_opts_init(&so);
    so.port = 0;
    so.threads = 2;
    so.token = "fuzz-token";
    so.allowed_hosts = "gpu1.lan";
    so.request_timeout = 2;
    if (vram_server_start(m, &so, &g_srv) < 0) {
        fprintf(stderr, "fuzz_http: %s\n", vram_last_error());
        abort();
    }
    g_port = vram_server_port(g_srv);
    return 0; /* the server and manager live as long as the process */
}

/* Checks one answer at p (len bytes left); returns its length, or 0 when
 * the rest is not a complete answer (a body cut by a hang-up is fine). */
static size_t check_one(const char *p, size_t len)
{
    CHECK(len >= 12 && memcmp(p, "HTTP/1.", 7) == 0);
    const char *end = memmem(p, len, "\r\n\r\n", 4);
    if (!end) return 0;
    size_t head = (size_t)(end - p) + 4;
    char hdr[4096];
    size_t hl = head < sizeof hdr ? head : sizeof hdr - 1;
    memcpy(hdr, p, hl);
    hdr[hl] = '\0';
    const char *cl = strcasestr(hdr, "\r\nContent-Length:");
    if (!cl) return 0;
    size_t body = (size_t)strtoul(cl + 17, NULL, 10);
    if (head + body > len) return 0;
    if (!strcasestr(hdr, "\r\nContent-Type: application/json"))
        return 0; /* libmicrohttpd's own error page (HTML): the connection ends there */
    /* a 500 the server wrote itself is a bug on any input */
    CHECK(strncmp(p + 9, "500", 3) != 0);
    if (g_head) return 0; /* a HEAD answer announces a body it does not send */
    if (body > 0 && strncmp(p + 9, "204", 3) != 0) {
        json_error_t je;
        json_t *o = json_loadb(p + head, body, 0, &je);
        CHECK(o != NULL);
        json_decref(o);
    }
    return head + body;
}

static void check_answers(const char *p, size_t len)
{
    size_t off = 0;
    while (off < len) {
        size_t n = check_one(p + off, len - off);
        if (!n) break;
        off += n;
    }
}

/* Reads until EOF or ms of silence; returns the bytes read. */
static size_t read_some(int fd, char *buf, size_t cap, size_t got, int ms)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    while (got < cap && poll(&pfd, 1, ms) > 0) {
        ssize_t r = read(fd, buf + got, cap - got);
        if (r <= 0) break;
        got += (size_t)r;
    }
    return got;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int rc = -1;
    for (int i = 0; i < 50 && (rc = connect(fd, (struct sockaddr *)&sa, sizeof sa)) != 0; i++) {
        if (errno != EINTR && errno != EAGAIN && errno != EADDRNOTAVAIL) break;
        usleep(100 * 1000); /* local ports in TIME_WAIT: wait, don't fail the server */
    }
    if (rc != 0) fprintf(stderr, "fuzz_http: connect: %s\n", strerror(errno));
    CHECK(rc == 0);
    g_head = memmem(data, size, "HEAD", 4) != NULL;
    size_t off = 0;
    while (off < size) {
        ssize_t w = send(fd, data + off, size - off, MSG_NOSIGNAL);
        if (w <= 0) break; /* the server hung up (a refused request) */
        off += (size_t)w;
    }
    static char buf[1 << 20];
    size_t got = read_some(fd, buf, sizeof buf, 0, 30);
    shutdown(fd, SHUT_WR);
    got = read_some(fd, buf, sizeof buf, got, 5000); /* the request deadline is 2 s */
    close(fd);
    if (got) check_answers(buf, got);
    return 0;
}
