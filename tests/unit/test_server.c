/* test_server.c - the server layer in C: request checks, routes, status JSON from the structs, commands, metrics and the embeddable server's life cycle. */
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "server/commands.h"
#include "server/http_checks.h"
#include "server/http_internal.h"
#include "server/metrics.h"
#include "server/status_json.h"
#include "../support/fixtures.h"
#include "vram.h"
#include "vram_server.h"

#define MiB (1024ULL * 1024ULL)

static vram_manager *host_manager(void)
{
    return fx_host_manager(64 * MiB);
}

/* ---- request checks ---- */

static void test_token(void **state)
{
    (void)state;
    vram__http_guard g;
    char err[256];
    assert_int_equal(vram__http_guard_init(&g, "127.0.0.1", 0, "s3cret", NULL, err, sizeof err), 0);
    assert_true(vram__http_authorized(&g, "Bearer s3cret"));
    assert_true(vram__http_authorized(&g, "  bearer   s3cret  "));
    assert_false(vram__http_authorized(&g, NULL));
    assert_false(vram__http_authorized(&g, "Bearer s3cre"));
    assert_false(vram__http_authorized(&g, "Bearer s3cretX"));
    assert_false(vram__http_authorized(&g, "Basic s3cret"));
    assert_false(vram__http_authorized(&g, "Bearers3cret"));
    char longtok[1000];
    memset(longtok, 'a', sizeof longtok - 1);
    longtok[sizeof longtok - 1] = '\0';
    memcpy(longtok, "Bearer ", 7);
    assert_false(vram__http_authorized(&g, longtok));
    char toolong[VRAM_STR_MAX + 10];
    memset(toolong, 'x', sizeof toolong - 1);
    toolong[sizeof toolong - 1] = '\0';
    assert_int_equal(vram__http_guard_init(&g, "127.0.0.1", 0, toolong, NULL, err, sizeof err),
                     VRAM_EINVAL);
    assert_non_null(strstr(err, "token is longer"));
}

static void test_host_and_origin(void **state)
{
    (void)state;
    vram__http_guard g;
    char err[256];
    const char *why = NULL;
    assert_int_equal(vram__http_guard_init(&g, "127.0.0.1", 0, "", NULL, err, sizeof err), 0);
    assert_true(vram__http_origin_ok(&g, "127.0.0.1:7861", NULL, &why));
    assert_true(vram__http_origin_ok(&g, "localhost:7861", "http://localhost:7861", &why));
    assert_true(vram__http_origin_ok(&g, "[::1]:7861", NULL, &why));
    assert_true(vram__http_origin_ok(&g, "127.5.6.7", NULL, &why));
    assert_true(vram__http_origin_ok(&g, NULL, NULL, &why)); /* HTTP/1.0 without Host */
    why = NULL;
    assert_false(vram__http_origin_ok(&g, "evil.example:7861", NULL, &why));
    assert_non_null(strstr(why, "DNS rebinding"));
    assert_false(vram__http_origin_ok(&g, "127.0.0.1.evil.example", NULL, &why));
    assert_false(vram__http_origin_ok(&g, "localhost", "http://evil.example", &why));
    assert_false(vram__http_origin_ok(&g, "localhost", "file://x", &why));
    assert_false(vram__http_origin_ok(&g, "localhost", "null", &why));

    /* allowed hosts extend the list, whatever the bind */
    assert_int_equal(vram__http_guard_init(&g, "127.0.0.1", 0, "", " gpu1.lan , [fd00::1],10.0.0.5",
                                           err, sizeof err),
                     0);
    assert_int_equal(g.nhosts, 3);
    assert_true(vram__http_origin_ok(&g, "gpu1.lan:7861", "http://gpu1.lan:7861", &why));
    assert_true(vram__http_origin_ok(&g, "GPU1.LAN", NULL, &why));
    assert_true(vram__http_origin_ok(&g, "[fd00::1]:7861", NULL, &why));
    assert_true(vram__http_origin_ok(&g, "10.0.0.5:7861", NULL, &why));
    assert_false(vram__http_origin_ok(&g, "gpu2.lan", NULL, &why));

    /* issue 11.4: a wildcard bind without allowed hosts accepts this
     * machine's names and addresses only; a rebinding name with an Origin
     * equal to its Host is refused */
    assert_int_equal(vram__http_guard_init(&g, "0.0.0.0", 1, "", NULL, err, sizeof err), 0);
    assert_false(vram__http_origin_ok(&g, "gpu1.lan:7861", "http://gpu1.lan:7861", &why));
    assert_false(vram__http_origin_ok(&g, "rebind.evil:7861", "http://rebind.evil:7861", &why));
    assert_false(vram__http_origin_ok(&g, "0.0.0.0:7861", NULL, &why));
    assert_true(vram__http_origin_ok(&g, "127.0.0.1:7861", "http://localhost:7861", &why));
    char hn[256];
    assert_int_equal(gethostname(hn, sizeof hn), 0);
    assert_true(vram__http_origin_ok(&g, hn, NULL, &why));
    assert_int_equal(vram__http_guard_init(&g, "::", 1, "", NULL, err, sizeof err), 0);
    assert_true(vram__http_origin_ok(&g, "[::1]:7861", NULL, &why));
    assert_false(vram__http_origin_ok(&g, "[::]:7861", NULL, &why));
    assert_false(vram__http_origin_ok(&g, "rebind.evil", NULL, &why));
    /* a wildcard bind with allowed hosts checks Host against them */
    assert_int_equal(vram__http_guard_init(&g, "0.0.0.0", 1, "", "gpu1.lan", err, sizeof err), 0);
    assert_true(vram__http_origin_ok(&g, "gpu1.lan:7861", NULL, &why));
    assert_false(vram__http_origin_ok(&g, "rebind.evil:7861", "http://rebind.evil:7861", &why));
}

static void test_allowed_hosts_errors(void **state)
{
    (void)state;
    vram__http_guard g;
    char err[256];
    assert_int_equal(vram__http_guard_init(&g, "127.0.0.1", 0, "", "ok.lan,bad/host", err,
                                           sizeof err),
                     VRAM_EINVAL);
    assert_non_null(strstr(err, "'bad/host' is not a host name"));
    char many[2048] = "";
    for (int i = 0; i < VRAM__HTTP_HOSTS_MAX + 1; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "h%d.lan,", i);
    assert_int_equal(vram__http_guard_init(&g, "127.0.0.1", 0, "", many, err, sizeof err),
                     VRAM_EINVAL);
    assert_non_null(strstr(err, "at most"));
    assert_int_equal(vram__http_guard_init(&g, "127.0.0.1", 0, "", " , ,", err, sizeof err), 0);
    assert_int_equal(g.nhosts, 0);
}

/* ---- routes ---- */

static void test_routes(void **state)
{
    (void)state;
    const char *name = NULL;
    size_t len = 0;
    assert_int_equal(vram__http_match_route("/api/gpu/status", &name, &len), R_GPU_STATUS);
    assert_int_equal(vram__http_match_route("/api/v1/models", &name, &len), R_MODELS);
    assert_int_equal(vram__http_match_route("/nope", &name, &len), R_OTHER);
    assert_int_equal(vram__http_match_route("/api/v1/models/Llasa-8B/load", &name, &len),
                     R_MODEL_LOAD);
    assert_int_equal(len, 8);
    assert_memory_equal(name, "Llasa-8B", 8);
    assert_int_equal(vram__http_match_route("/api/v1/models/a/b/offload", &name, &len),
                     R_MODEL_OFFLOAD);
    assert_int_equal(len, 3); /* "a/b": the name may hold a slash; the core refuses it */
    assert_int_equal(vram__http_match_route("/api/v1/models/XCodec2", &name, &len), R_MODEL);
    assert_string_equal(vram__http_route_command(R_MODEL, vram__http_method("GET")), "show");
    assert_string_equal(vram__http_route_command(R_MODEL, vram__http_method("PATCH")), "configure");
    assert_null(vram__http_route_command(R_MODEL, vram__http_method("POST")));
    assert_null(vram__http_route_command(R_GPU_STATUS, vram__http_method("BREW")));
    /* every command a route names exists in the command table */
    for (int r = 0; r < NROUTES; r++) {
        const char *cmds[3] = {vram__http_routes[r].get, vram__http_routes[r].post,
                               vram__http_routes[r].patch};
        for (int k = 0; k < 3; k++)
            if (cmds[k] && cmds[k][0]) assert_non_null(vram__command_find(cmds[k]));
    }
}

/* ---- status JSON from the structs ---- */

static void test_status_json_matches_structs(void **state)
{
    (void)state;
    vram_manager *m = host_manager();
    vram_model *a = fx_add(m, "Llasa-8B", "synthetic:4M:1");
    fx_add(m, "XCodec2", "synthetic:1M:2");
    vram_lease *l = NULL;
    assert_int_equal(vram_model_acquire(a, &l), 0);
    vram_lease_end(l);
    assert_int_equal(vram_model_offload(a, VRAM_WAIT), 0);

    vram__snapshot s;
    assert_int_equal(vram__snapshot_take(m, 1, &s), 0);
    assert_int_equal(s.nmodels, 2);
    assert_int_equal(s.ndevices, 1);
    json_t *all = vram__status_json(&s);
    json_t *o = json_object_get(all, "Llasa-8B");
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "model_name")), "Llasa-8B");
    assert_string_equal(json_string_value(json_object_get(o, "location")), "CPU");
    assert_string_equal(json_string_value(json_object_get(o, "state")), "cpu");
    assert_int_equal(json_integer_value(json_object_get(o, "bytes")), 4 * MiB);
    assert_int_equal(json_integer_value(json_object_get(o, "offloads")), 1);
    assert_int_equal(json_integer_value(json_object_get(o, "loads")), 1);
    assert_true(json_is_object(json_object_get(json_object_get(o, "gpu_memory"), "GPU_0")));
    assert_true(json_is_null(json_object_get(o, "last_error")));
    json_t *x = json_object_get(all, "XCodec2");
    assert_string_equal(json_string_value(json_object_get(x, "location")), "未加载");
    assert_int_equal(json_integer_value(json_object_get(x, "bytes")), 1 * MiB);
    json_decref(all);

    json_t *devs = vram__devices_json(&s);
    assert_int_equal(json_array_size(devs), 1);
    json_t *d = json_array_get(devs, 0);
    assert_int_equal(json_integer_value(json_object_get(d, "total_bytes")), 64 * MiB);
    assert_int_equal(json_integer_value(json_object_get(d, "used_by_models_bytes")), 0);
    json_decref(devs);
    vram__snapshot_free(&s);

    /* the public text functions agree with the builders */
    char *text = vram_model_status_json(m, "Llasa-8B");
    json_t *one = json_loads(text, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(one, "state")), "cpu");
    json_decref(one);
    free(text);
    assert_null(vram_model_status_json(m, "nope"));
    vram_manager_destroy(m);
}

/* ---- commands ---- */

static int run(vram_manager *m, const char *name, const char *args_json, vram__cmd_result *res)
{
    json_t *args = args_json ? json_loads(args_json, 0, NULL) : NULL;
    int rc = vram__command_run(m, vram__command_find(name), args, res);
    json_decref(args);
    return rc;
}

static void test_commands(void **state)
{
    (void)state;
    vram_manager *m = host_manager();
    fx_add(m, "a", "synthetic:2M:1");
    fx_add(m, "b", "synthetic:1M:2");
    vram__cmd_result res = {0};
    assert_int_equal(run(m, "load", "{\"model\": \"a\"}", &res), 0);
    json_t *o = vram__cmd_result_object(&res);
    assert_int_equal(json_integer_value(json_object_get(o, "bytes")), 2 * MiB);
    json_decref(o);
    assert_int_equal(run(m, "offload", "{\"model\": \"nope\"}", &res), VRAM_ENOENT);
    assert_non_null(strstr(res.message, "no model named 'nope' (models: a, b)"));
    assert_int_equal(run(m, "status", "{\"frobnicate\": 1}", &res), VRAM_EINVAL);
    assert_int_equal(run(m, "timeout", "{\"timeout\": -1}", &res), VRAM_EINVAL);
    assert_non_null(strstr(res.message, "negative"));
    assert_int_equal(run(m, "timeout", "{\"timeout\": 1e12}", &res), VRAM_EINVAL);
    assert_non_null(strstr(res.message, "more than 10 years"));
    assert_int_equal(run(m, "timeout", "{\"timeout\": \"600\"}", &res), VRAM_EINVAL);
    assert_int_equal(run(m, "timeout", "{\"timeout\": 300}", &res), 0);
    assert_int_equal(run(m, "models", NULL, &res), 0);
    o = vram__cmd_result_object(&res);
    json_t *list = json_object_get(o, "models");
    assert_int_equal(json_array_size(list), 2);
    assert_int_equal(json_real_value(json_object_get(json_array_get(list, 1), "idle_timeout_seconds")),
                     300);
    assert_string_equal(json_string_value(json_object_get(json_array_get(list, 0), "state")), "gpu");
    json_decref(o);
    assert_int_equal(run(m, "health", NULL, &res), 0);
    o = vram__cmd_result_object(&res);
    assert_int_equal(json_integer_value(json_object_get(o, "models")), 2);
    assert_string_equal(json_string_value(json_object_get(o, "backend")), "host");
    json_decref(o);
    vram__cmd_result_clear(&res);
    vram_manager_destroy(m);
}

/* ---- metrics ---- */

static void test_metrics(void **state)
{
    (void)state;
    vram_manager *m = host_manager();
    vram_model *a = fx_add(m, "Llasa-8B 语音", "synthetic:1M:1");
    vram_lease *l = NULL;
    assert_int_equal(vram_model_acquire(a, &l), 0);
    vram_lease_end(l);
    static const char *const names[] = {"/x"};
    vram__metrics *mx = vram__metrics_create(names, 1);
    vram__metrics_count(mx, 0, 200, 0.5);
    size_t len = 0;
    char *text = vram__metrics_render(mx, m, 0, &len);
    assert_non_null(text);
    assert_int_equal(strlen(text), len);
    assert_non_null(strstr(text, "vram_model_state{model=\"Llasa-8B 语音\",state=\"gpu\"} 1"));
    assert_non_null(strstr(text, "vram_model_state{model=\"Llasa-8B 语音\",state=\"cpu\"} 0"));
    assert_non_null(strstr(text, "vram_model_device_bytes{model=\"Llasa-8B 语音\"} 1048576"));
    assert_non_null(strstr(text, "vram_model_loads_total{model=\"Llasa-8B 语音\"} 1"));
    assert_non_null(strstr(text, "vram_device_total_bytes{device=\"0\""));
    assert_non_null(strstr(text, "vram_http_requests_total{endpoint=\"/x\",code=\"200\"} 1"));
    free(text);
    vram__metrics_destroy(mx);
    vram_manager_destroy(m);
}

/* The node's series: a manager of this process joins a node, its model is
 * listed with its process and node-wide id (label values escaped). */
static void test_metrics_node(void **state)
{
    (void)state;
    vram_manager *m = host_manager();
    char *text = vram__metrics_render(NULL, m, 0, NULL);
    assert_null(strstr(text, "vram_node_members")); /* no node: no node series */
    free(text);
    char dir[] = "/tmp/vram-metrics-node-XXXXXX", path[128];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/node.sock", dir);
    vram_node *node = NULL;
    assert_int_equal(vram_node_start(path, &node), 0);
    vram_config cfg;
    vram_config_init(&cfg);
    cfg.backend = VRAM_BACKEND_HOST;
    cfg.host_memory = 64 << 20;
    cfg.host_devices = 1;
    cfg.log_level = VRAM_LOG_ERROR;
    cfg.no_monitor_thread = 1;
    snprintf(cfg.node_socket, sizeof cfg.node_socket, "%s", path);
    snprintf(cfg.node_name, sizeof cfg.node_name, "svc \"b\\");
    vram_manager *member = NULL;
    assert_int_equal(vram_manager_create(&cfg, &member), 0);
    fx_add(member, "m 1 语音", "synthetic:1M:1");
    char want[256];
    snprintf(want, sizeof want,
             "vram_node_model_bytes{process=\"svc \\\"b\\\\\",pid=\"%ld\",model=\"m 1 语音\","
             "id=\"m 1 语音@%ld\",state=\"unloaded\",device_uuid=\"\"} 1048576",
             (long)getpid(), (long)getpid());
    int found = 0;
    for (int i = 0; i < 600 && !found; i++) { /* the member joins on its own thread */
        text = vram__metrics_render(NULL, m, 0, NULL);
        found = strstr(text, want) != NULL;
        if (found) {
            assert_non_null(strstr(text, "# TYPE vram_node_members gauge\nvram_node_members 1\n"));
            assert_non_null(strstr(text, "vram_node_model_leases{process="));
            assert_non_null(strstr(text, "vram_node_model_idle_seconds{process="));
            assert_non_null(strstr(text, "vram_node_evictions_given_total{process=\"svc"));
            assert_non_null(strstr(text, "vram_node_bytes_given_total{process=\"svc"));
        }
        free(text);
        if (!found) usleep(50 * 1000);
    }
    assert_true(found);
    vram_manager_destroy(member);
    vram_node_stop(node);
    text = vram__metrics_render(NULL, m, 0, NULL);
    assert_null(strstr(text, "vram_node_members")); /* stopped: gone again */
    free(text);
    rmdir(dir);
    vram_manager_destroy(m);
}

/* ---- the embeddable server ---- */

/* One HTTP/1.0 GET on 127.0.0.1:port; the whole answer into buf. */
static size_t http_get(int port, const char *path, char *buf, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    char req[256];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: 127.0.0.1:%d\r\n\r\n", path, port);
    assert_int_equal(write(fd, req, (size_t)n), n);
    size_t got = 0;
    ssize_t r;
    while (got + 1 < cap && (r = read(fd, buf + got, cap - 1 - got)) > 0)
        got += (size_t)r;
    buf[got] = '\0';
    close(fd);
    return got;
}

static void test_server_life_cycle(void **state)
{
    (void)state;
    vram_manager *m = host_manager();
    fx_add(m, "Llasa-8B", "synthetic:1M:1");
    vram_server_opts o;
    vram_server_opts_init(&o);
    assert_int_equal(o.port, 7861);
    assert_string_equal(o.bind, "127.0.0.1");
    o.port = 0;
    o.threads = 2;
    vram_server *s = NULL;
    assert_int_equal(vram_server_start(m, &o, &s), 0);
    int port = vram_server_port(s);
    assert_true(port > 0 && port < 65536);
    char buf[16384];
    http_get(port, "/api/gpu/status", buf, sizeof buf);
    assert_non_null(strstr(buf, "HTTP/1.0 200") ? buf : strstr(buf, "HTTP/1.1 200"));
    assert_non_null(strstr(buf, "\"model_name\": \"Llasa-8B\""));

    /* the same port again: taken, said at once, nothing left running */
    vram_server *s2 = (vram_server *)0x1;
    o.port = port;
    assert_int_equal(vram_server_start(m, &o, &s2), VRAM_EIO);
    assert_null(s2);
    assert_non_null(strstr(vram_last_error(), "already in use"));

    o.port = 0;
    o.threads = -3;
    assert_int_equal(vram_server_start(m, &o, &s2), VRAM_EINVAL);
    o.threads = 0;
    o.allowed_hosts = "bad host!";
    assert_int_equal(vram_server_start(m, &o, &s2), VRAM_EINVAL);
    assert_non_null(strstr(vram_last_error(), "allowed hosts"));
    o.allowed_hosts = NULL;
    o.port = 70000;
    assert_int_equal(vram_server_start(m, &o, &s2), VRAM_EINVAL);
    assert_int_equal(vram_server_start(NULL, &o, &s2), VRAM_EINVAL);

    assert_int_equal(vram_server_stop(s, 5.0), 0);
    assert_int_equal(vram_server_stop(NULL, 1.0), 0);
    vram_manager_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token),
        cmocka_unit_test(test_host_and_origin),
        cmocka_unit_test(test_allowed_hosts_errors),
        cmocka_unit_test(test_routes),
        cmocka_unit_test(test_status_json_matches_structs),
        cmocka_unit_test(test_commands),
        cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_metrics_node),
        cmocka_unit_test(test_server_life_cycle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
