/* test_hostile.c - the server against idle, slow and malformed clients: connection caps and deadlines, strict request heads, MCP session floods, answers at stop. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "server/mcp.h"
#include "../support/fixtures.h"
#include "vram.h"
#include "vram_server.h"

#define MiB (1024ULL * 1024ULL)

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "test_hostile: a test hung (alarm); failing\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    _exit(1);
}

static vram_manager *host_manager(void)
{
    signal(SIGALRM, on_alarm);
    signal(SIGPIPE, SIG_IGN);
    alarm(240);
    vram_manager *m = fx_host_manager(64 * MiB);
    vram_model_opts o;
    vram_model_opts_init(&o);
    o.source = "synthetic:1M:1";
    assert_int_equal(vram_manager_register(m, "small", &o, NULL), 0);
    return m;
}

static vram_server *server(vram_manager *m, double request_timeout, int max_conns, int per_client)
{
    vram_server_opts o;
    vram_server_opts_init(&o);
    o.port = 0;
    o.threads = 2;
    o.request_timeout = request_timeout;
    o.max_connections = max_conns;
    o.max_per_client = per_client;
    vram_server *s = NULL;
    assert_int_equal(vram_server_start(m, &o, &s), 0);
    return s;
}

static int dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

/* Sends req (len bytes), reads the answer until the server closes or 60 s
 * of silence (a generous deadline against hanging, not a timing check). */
static size_t exchange(int port, const char *req, size_t len, char *buf, size_t cap)
{
    int fd = dial(port);
    size_t off = 0;
    while (off < len) {
        ssize_t w = send(fd, req + off, len - off, MSG_NOSIGNAL);
        if (w <= 0) break;
        off += (size_t)w;
    }
    size_t got = 0;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    while (got + 1 < cap && poll(&p, 1, 60000) > 0) {
        ssize_t r = read(fd, buf + got, cap - 1 - got);
        if (r <= 0) break;
        got += (size_t)r;
        buf[got] = '\0';
        if (strstr(buf, "\r\n\r\n") && strstr(buf, "}\n")) break; /* one JSON answer in */
    }
    buf[got] = '\0';
    close(fd);
    return got;
}

static void expect(int port, const char *req, const char *status, const char *text)
{
    char buf[8192];
    exchange(port, req, strlen(req), buf, sizeof buf);
    if (strncmp(buf, status, strlen(status)) != 0 || (text && !strstr(buf, text)))
        fail_msg("request %.60s...\nwanted %s / %s, got: %.400s", req, status, text ? text : "",
                 buf);
}

#define H "Host: 127.0.0.1\r\n"

/* Issue 11.6: ambiguous heads are refused in JSON, not read the lenient way. */
static void test_strict_heads(void **state)
{
    (void)state;
    vram_manager *m = host_manager();
    vram_server *s = server(m, 10, 0, 0);
    int port = vram_server_port(s);
    expect(port, "GET /api/gpu/status HTTP/1.1\r\n" H "\r\n", "HTTP/1.1 200", "small");
    expect(port, "GET / HTTP/1.1\r\n" H "Host: evil.example\r\n\r\n", "HTTP/1.1 400",
           "duplicate Host");
    expect(port, "POST /api/gpu/offload HTTP/1.1\r\n" H "Authorization: Bearer a\r\n"
                 "Authorization: Bearer b\r\nContent-Length: 0\r\n\r\n",
           "HTTP/1.1 400", "duplicate Authorization");
    expect(port, "POST /api/gpu/offload HTTP/1.1\r\n" H "Content-Length: 0\r\nContent-Length: 2\r\n\r\n",
           "HTTP/1.1 400", "duplicate Content-Length");
    expect(port, "POST /api/gpu/offload HTTP/1.1\r\n" H "Content-Length: 5\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
           "HTTP/1.1 400", NULL);
    expect(port, "GET / HTTP/1.1\r\nHost : evil.example\r\n\r\n", "HTTP/1.1 400", NULL);
    expect(port, "GET /api/v1/models/sm%00all HTTP/1.1\r\n" H "\r\n", "HTTP/1.1 400", "NUL");
    expect(port, "GET /api/v1/models/%ff%fe HTTP/1.1\r\n" H "\r\n", "HTTP/1.1 400", "UTF-8");
    expect(port, "POST /api/v1/models//load HTTP/1.1\r\n" H "Content-Length: 0\r\n\r\n",
           "HTTP/1.1 404", "no model name");
    /* a chunked body past the limit: the documented 413 */
    size_t cap = 2 * MiB;
    char *big = malloc(cap);
    assert_non_null(big);
    size_t n = (size_t)snprintf(big, cap, "POST /api/gpu/offload HTTP/1.1\r\n" H
                                          "Transfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 20; i++) {
        n += (size_t)snprintf(big + n, cap - n, "10000\r\n");
        memset(big + n, 'x', 0x10000);
        n += 0x10000;
        n += (size_t)snprintf(big + n, cap - n, "\r\n");
    }
    n += (size_t)snprintf(big + n, cap - n, "0\r\n\r\n");
    char buf[8192];
    exchange(port, big, n, buf, sizeof buf);
    free(big);
    if (!strstr(buf, " 413 ") || !strstr(buf, "PAYLOAD_TOO_LARGE")) fail_msg("got: %.300s", buf);
    assert_int_equal(vram_server_stop(s, 5), 0);
    vram_manager_destroy(m);
}

/* Issue 11.2: hundreds of idle sockets from the same address do not lock a
 * new client out, and a client trickling header lines is closed. */
static void test_idle_and_slow_clients(void **state)
{
    (void)state;
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < 2600 && rl.rlim_max >= 2600) rl.rlim_cur = 2600, setrlimit(RLIMIT_NOFILE, &rl);
    int nidle = rl.rlim_cur >= 2600 ? 1100 : 150; /* more than libmicrohttpd's own limit */
    vram_manager *m = host_manager();
    vram_server *s = server(m, 1.0, 100, 16);
    int port = vram_server_port(s);
    int *idle = calloc((size_t)nidle, sizeof *idle);
    for (int i = 0; i < nidle; i++)
        idle[i] = dial(port); /* they send nothing */
    expect(port, "GET /healthz HTTP/1.1\r\n" H "\r\n", "HTTP/1.1 200", NULL);

    int slow = dial(port);
    const char *first = "GET /healthz HTTP/1.1\r\n";
    assert_true(send(slow, first, strlen(first), MSG_NOSIGNAL) > 0);
    int closed = 0;
    for (int i = 0; i < 300 && !closed; i++) { /* one header line every 0.2 s */
        usleep(200 * 1000);
        char line[64];
        int l = snprintf(line, sizeof line, "X-Slow-%d: 1\r\n", i);
        if (send(slow, line, (size_t)l, MSG_NOSIGNAL) <= 0) closed = 1;
        struct pollfd p = {.fd = slow, .events = POLLIN};
        char c;
        if (poll(&p, 1, 0) > 0 && recv(slow, &c, 1, MSG_DONTWAIT) <= 0) closed = 1;
    }
    assert_true(closed);
    close(slow);
    for (int i = 0; i < nidle; i++)
        close(idle[i]);
    free(idle);
    expect(port, "GET /healthz HTTP/1.1\r\n" H "\r\n", "HTTP/1.1 200", NULL);
    assert_int_equal(vram_server_stop(s, 5), 0);
    vram_manager_destroy(m);
}

static int post_mcp(vram__mcp *mcp, const char *client, const char *sid, const char *body,
                    char out_sid[40])
{
    vram__mcp_http_req q = {.method = "POST", .session_id = sid,
                            .accept = "application/json, text/event-stream",
                            .content_type = "application/json", .body = body,
                            .body_len = strlen(body), .client = client};
    vram__mcp_http_resp r;
    vram__mcp_http(mcp, &q, &r);
    if (out_sid) memcpy(out_sid, r.session_id, 40);
    free(r.body);
    return (int)r.status;
}

#define INIT "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"2025-06-18\",\"capabilities\":{},\"clientInfo\":{\"name\":\"t\",\"version\":\"1\"}}}"
#define PING "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\"}"

/* Issue 11.5: a flood of initialize calls pushes out no active session,
 * from another address or the same one, and idle sessions expire. */
static void test_mcp_session_flood(void **state)
{
    (void)state;
    vram_manager *m = host_manager();
    vram__mcp *mcp = vram__mcp_create(m);
    char real[40], local[40], sid[40];
    assert_int_equal(post_mcp(mcp, "10.0.0.7", NULL, INIT, real), 200);
    assert_int_equal(post_mcp(mcp, "10.0.0.7", real, PING, NULL), 200);
    assert_int_equal(post_mcp(mcp, "127.0.0.1", NULL, INIT, local), 200);
    assert_int_equal(post_mcp(mcp, "127.0.0.1", local, PING, NULL), 200);
    int refused = 0;
    for (int i = 0; i < 1000; i++)
        if (post_mcp(mcp, "127.0.0.1", NULL, INIT, sid) == 503) refused++;
    assert_int_equal(refused, 0); /* unused flood sessions make room for each other */
    assert_true(vram__mcp_session_count(mcp) <= 33);
    assert_int_equal(post_mcp(mcp, "10.0.0.7", real, PING, NULL), 200);
    assert_int_equal(post_mcp(mcp, "127.0.0.1", local, PING, NULL), 200);
    /* a client whose sessions are all in use gets 503, not someone's slot */
    vram__mcp_set_session_limits(mcp, 0, 2);
    char a[40];
    assert_int_equal(post_mcp(mcp, "10.0.0.9", NULL, INIT, a), 200);
    assert_int_equal(post_mcp(mcp, "10.0.0.9", a, PING, NULL), 200);
    char b[40];
    assert_int_equal(post_mcp(mcp, "10.0.0.9", NULL, INIT, b), 200);
    assert_int_equal(post_mcp(mcp, "10.0.0.9", b, PING, NULL), 200);
    assert_int_equal(post_mcp(mcp, "10.0.0.9", NULL, INIT, sid), 503);
    assert_int_equal(post_mcp(mcp, "10.0.0.9", a, PING, NULL), 200);
    /* idle sessions expire */
    vram__mcp_set_session_limits(mcp, 0.05, 0);
    usleep(200 * 1000);
    assert_int_equal(post_mcp(mcp, "10.0.0.7", real, PING, NULL), 404);
    assert_int_equal(vram__mcp_session_count(mcp), 0);
    vram__mcp_destroy(mcp);
    vram_manager_destroy(m);
}

static int slow_load(vram_model *model, void *user)
{
    (void)user;
    usleep(3000 * 1000);
    void *p = NULL;
    return vram_model_alloc(model, 1 << 20, &p);
}

/* Issue 11.7: a request still running when the grace period ends gets a
 * 503 that says the daemon is stopping, not an empty reply. */
static void test_stop_answers_running_requests(void **state)
{
    (void)state;
    vram_manager *m = host_manager();
    vram_model_opts o;
    vram_model_opts_init(&o);
    o.load = slow_load;
    assert_int_equal(vram_manager_register(m, "slow", &o, NULL), 0);
    vram_server *s = server(m, 10, 0, 0);
    int fd = dial(vram_server_port(s));
    const char *req = "POST /api/v1/models/slow/load HTTP/1.1\r\n" H "Content-Length: 0\r\n\r\n";
    assert_int_equal(send(fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
    usleep(300 * 1000); /* the load has started */
    assert_int_equal(vram_server_stop(s, 0.1), 1);
    char buf[4096];
    size_t got = 0;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    while (got + 1 < sizeof buf && poll(&p, 1, 60000) > 0) {
        ssize_t r = read(fd, buf + got, sizeof buf - 1 - got);
        if (r <= 0) break;
        got += (size_t)r;
        buf[got] = '\0';
        if (strstr(buf, "}\n")) break;
    }
    buf[got] = '\0';
    close(fd);
    if (!strstr(buf, " 503 ") || !strstr(buf, "stopping")) fail_msg("got: %.300s", buf);
    /* once the load is done, a second stop frees the server */
    int left = 1;
    for (int i = 0; i < 100 && left; i++)
        left = vram_server_stop(s, 1.0);
    assert_int_equal(left, 0);
    vram_manager_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strict_heads),
        cmocka_unit_test(test_idle_and_slow_clients),
        cmocka_unit_test(test_mcp_session_flood),
        cmocka_unit_test(test_stop_answers_running_requests),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
