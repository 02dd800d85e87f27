/* test_promises.c - promises of vram.h and vram_server.h that no other test held the code to: load progress mid-load, stable tensor pointers, tensor lookup errors, several devices, destroy under a lease, 409 on nowait, MCP tool failures. */
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
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

#include "core/core.h"
#include "server/mcp.h"
#include "common/st_write.h"
#include "../support/fixtures.h"
#include "vram.h"
#include "vram_server.h"

#define MiB (1024ULL * 1024ULL)

/* Waits (polling, at most 60 s: a deadline against a hang, not a timing
 * check) until pred(arg) holds; returns whether it did. */
static int wait_until(int (*pred)(void *), void *arg)
{
    for (int i = 0; i < 60000; i++) {
        if (pred(arg)) return 1;
        usleep(1000);
    }
    return pred(arg);
}

/* ---- load progress while a load is in flight ---- */

/* A log listener that holds the loading thread at its first progress line
 * (10 %: the source's first chunk is on the device, the rest is not) until
 * the test lets it go. The test thread logs nothing meanwhile. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int held, release;
} g_hold = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};

static void hold_at_progress(vram_log_level level, const char *line, void *user)
{
    (void)level;
    (void)user;
    if (!strstr(line, "load-progress model=slow ")) return;
    pthread_mutex_lock(&g_hold.lock);
    if (!g_hold.held) {
        g_hold.held = 1;
        pthread_cond_broadcast(&g_hold.cond);
        while (!g_hold.release)
            pthread_cond_wait(&g_hold.cond, &g_hold.lock);
    }
    pthread_mutex_unlock(&g_hold.lock);
}

typedef struct acquirer {
    vram_model *model;
    int rc;
    int ended; /* set just before vram_lease_end */
    int wait_for_destroy;
} acquirer;

static void *acquire_and_end(void *arg)
{
    acquirer *a = arg;
    vram_lease *l = NULL;
    a->rc = vram_model_acquire(a->model, &l);
    if (a->rc == 0) vram_lease_end(l);
    __atomic_store_n(&a->ended, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void test_load_progress_mid_load(void **state)
{
    (void)state;
    vram_config cfg;
    vram_config_init(&cfg);
    cfg.backend = VRAM_BACKEND_HOST;
    cfg.host_memory = 64 * MiB;
    cfg.host_devices = 1;
    cfg.evict_wait = 0;
    cfg.log_level = VRAM_LOG_ERROR;
    cfg.no_monitor_thread = 1;
    cfg.chunk_bytes = MiB; /* ten chunks: the first progress line comes after one */
    vram_manager *m = NULL;
    assert_int_equal(vram_manager_create(&cfg, &m), 0);
    vram_model *model = fx_add(m, "slow", "synthetic:10M:3");
    uint64_t done = 99, total = 99;
    vram_model_load_progress(model, &done, &total);
    assert_true(done == 0 && total == 0); /* idle: both 0 */

    int id = vram_log_listen(hold_at_progress, NULL, VRAM_LOG_INFO);
    assert_true(id > 0);
    acquirer a = {model, -99, 0, 0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, acquire_and_end, &a), 0);
    /* until the loader is held, or it finished without a progress line (a
     * failure, seen below; 60 s against a hang) */
    int held = 0;
    for (int i = 0; i < 60000 && !held; i++) {
        pthread_mutex_lock(&g_hold.lock);
        held = g_hold.held;
        pthread_mutex_unlock(&g_hold.lock);
        if (!held && __atomic_load_n(&a.ended, __ATOMIC_ACQUIRE)) break;
        if (!held) usleep(1000);
    }

    /* the load is held mid-way: observe, then let it go before asserting
     * (a failed assertion must not leave the loader blocked) */
    uint64_t mid_done = 0, mid_total = 0;
    vram_model_load_progress(model, &mid_done, &mid_total);
    vram_state mid_state = vram_model_state(model);
    vram_model_info info;
    memset(&info, 0, sizeof info);
    int info_rc = vram_model_get_info(model, &info, sizeof info);
    char *js = vram_model_status_json(m, "slow");
    pthread_mutex_lock(&g_hold.lock);
    g_hold.release = 1;
    pthread_cond_broadcast(&g_hold.cond);
    pthread_mutex_unlock(&g_hold.lock);
    pthread_join(t, NULL);
    vram_log_unlisten(id);

    assert_true(held); /* a progress line came while the load ran */
    assert_int_equal(a.rc, 0);
    assert_int_equal(mid_state, VRAM_STATE_LOADING);
    assert_true(mid_done == 1 * MiB);
    assert_true(mid_total == 10 * MiB);
    assert_int_equal(info_rc, 0);
    assert_int_equal(info.state, VRAM_STATE_LOADING);
    assert_true(info.progress_done == 1 * MiB && info.progress_total == 10 * MiB);
    assert_non_null(js);
    json_t *o = json_loads(js, 0, NULL);
    free(js);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "state")), "loading");
    json_t *p = json_object_get(o, "load_progress");
    assert_true(json_is_object(p));
    assert_int_equal(json_integer_value(json_object_get(p, "done_bytes")), (json_int_t)MiB);
    assert_int_equal(json_integer_value(json_object_get(p, "total_bytes")), (json_int_t)(10 * MiB));
    assert_true(json_real_value(json_object_get(p, "fraction")) == 0.1);
    json_decref(o);

    /* done: both 0 again, and the status says null */
    vram_model_load_progress(model, &done, &total);
    assert_true(done == 0 && total == 0);
    assert_int_equal(vram_model_state(model), VRAM_STATE_GPU);
    js = vram_model_status_json(m, "slow");
    o = json_loads(js, 0, NULL);
    free(js);
    assert_true(json_is_null(json_object_get(o, "load_progress")));
    json_decref(o);
    vram_manager_destroy(m);
}

/* ---- tensors ---- */

static char g_dir[256];

static const char *tmp_model(const char *name, uint64_t bytes, uint64_t seed)
{
    static char path[512];
    if (!g_dir[0]) {
        snprintf(g_dir, sizeof g_dir, "/tmp/vram-promises-XXXXXX");
        assert_non_null(mkdtemp(g_dir));
    }
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    char err[256];
    assert_int_equal(st_make_model(path, bytes, "BF16,F32", seed, 1, err, sizeof err), 0);
    return path;
}

#define MAXT 256

/* Checks every tensor's bytes on the device against the writer's
 * definition (tensor k holds synthetic bytes from the sum of the sizes
 * before it) and, when ptrs is not NULL, that its device pointer is ptrs[k]. */
static void check_tensors(vram_model *model, uint64_t seed, void *const *ptrs)
{
    size_t n = vram_model_tensor_count(model);
    uint64_t data_off = 0;
    for (size_t k = 0; k < n; k++) {
        vram_tensor_info ti;
        assert_int_equal(vram_model_tensor(model, k, &ti), 0);
        assert_non_null(ti.dev_ptr);
        if (ptrs) assert_ptr_equal(ti.dev_ptr, ptrs[k]);
        unsigned char *got = malloc(ti.bytes), *want = malloc(ti.bytes);
        assert_true(got && want);
        assert_int_equal(vram_model_download(model, got, ti.dev_ptr, ti.bytes), 0);
        vram_synthetic_fill(seed, data_off, want, ti.bytes);
        assert_memory_equal(got, want, ti.bytes);
        free(got);
        free(want);
        data_off += ti.bytes;
    }
}

static void test_tensor_pointers_survive_offload(void **state)
{
    (void)state;
    vram_manager *m = fx_host_manager(64 * MiB);
    vram_model *model = fx_add(m, "st", tmp_model("a.safetensors", 2 * MiB, 5));
    vram_lease *l = NULL;
    assert_int_equal(vram_model_acquire(model, &l), 0);
    size_t n = vram_model_tensor_count(model);
    assert_true(n > 2 && n <= MAXT);
    void *ptrs[MAXT];
    char *base = vram_lease_ptr(l);
    for (size_t k = 0; k < n; k++) {
        vram_tensor_info ti;
        assert_int_equal(vram_model_tensor(model, k, &ti), 0);
        assert_ptr_equal(ti.dev_ptr, base + ti.offset); /* inside the model's one range */
        assert_int_equal(ti.offset % 256, 0);           /* 256-byte aligned (README) */
        ptrs[k] = ti.dev_ptr;
    }
    check_tensors(model, 5, ptrs);
    vram_lease_end(l);
    for (int cycle = 0; cycle < 3; cycle++) {
        assert_int_equal(vram_model_offload(model, VRAM_NOWAIT), 0);
        assert_int_equal(vram_model_state(model), VRAM_STATE_CPU);
        assert_int_equal(vram_model_acquire(model, &l), 0); /* a restore */
        assert_ptr_equal(vram_lease_ptr(l), base);
        check_tensors(model, 5, ptrs);
        vram_lease_end(l);
    }
    vram_model_info info;
    assert_int_equal(vram_model_get_info(model, &info, sizeof info), 0);
    assert_true(info.restores == 3 && info.offloads == 3 && info.loads == 1);
    vram_manager_destroy(m);
}

static void test_tensor_lookup_errors(void **state)
{
    (void)state;
    vram_manager *m = fx_host_manager(64 * MiB);
    vram_model *model = fx_add(m, "st", tmp_model("b.safetensors", 1 * MiB, 2));
    vram_model *syn = fx_add(m, "syn", "synthetic:1M:1");
    vram_lease *l = NULL;
    assert_int_equal(vram_model_acquire(model, &l), 0);
    size_t n = vram_model_tensor_count(model);
    assert_true(n > 0);
    vram_tensor_info ti;
    memset(&ti, 0, sizeof ti);
    assert_int_equal(vram_model_tensor(model, n, &ti), VRAM_EINVAL);
    assert_non_null(strstr(vram_last_error(), "out of range"));
    assert_int_equal(vram_model_tensor(model, (size_t)-1, &ti), VRAM_EINVAL);
    assert_int_equal(vram_model_tensor(model, 0, NULL), VRAM_EINVAL);
    assert_int_equal(vram_model_tensor(NULL, 0, &ti), VRAM_EINVAL);

    assert_int_equal(vram_model_find_tensor(model, "no.such.weight", &ti), VRAM_ENOENT);
    assert_non_null(strstr(vram_last_error(), "no.such.weight"));
    assert_int_equal(vram_model_find_tensor(model, NULL, &ti), VRAM_EINVAL);
    assert_int_equal(vram_model_find_tensor(model, "lm_head.weight", NULL), VRAM_EINVAL);
    assert_int_equal(vram_model_find_tensor(NULL, "lm_head.weight", &ti), VRAM_EINVAL);
    /* a name that is there finds the same entry as its index */
    vram_tensor_info first, found;
    assert_int_equal(vram_model_tensor(model, 0, &first), 0);
    assert_int_equal(vram_model_find_tensor(model, first.name, &found), 0);
    assert_string_equal(found.name, first.name);
    assert_ptr_equal(found.dev_ptr, first.dev_ptr);
    assert_true(found.offset == first.offset && found.bytes == first.bytes);

    /* a synthetic model has no tensor table */
    assert_int_equal(vram_model_tensor_count(syn), 0);
    assert_int_equal(vram_model_tensor(syn, 0, &ti), VRAM_EINVAL);
    assert_int_equal(vram_model_find_tensor(syn, "x", &ti), VRAM_ENOENT);
    assert_int_equal(vram_model_tensor_count(NULL), 0);
    uint64_t done = 7, total = 7;
    vram_model_load_progress(NULL, &done, &total);
    assert_true(done == 0 && total == 0);
    vram_model_load_progress(model, NULL, NULL); /* no crash */
    vram_lease_end(l);

    /* released: the table stays, its device pointers are gone */
    assert_int_equal(vram_model_release(model, VRAM_NOWAIT), 0);
    assert_int_equal(vram_model_tensor(model, 0, &ti), 0);
    assert_null(ti.dev_ptr);
    vram_manager_destroy(m);
}

/* ---- several devices ---- */

static uint64_t charged(vram_manager *m, int dev)
{
    vram_device_status d[4];
    int n = vram_manager_devices(m, d, 4, sizeof d[0]);
    assert_true(n == 2);
    return d[dev].charged_bytes;
}

static void test_several_devices(void **state)
{
    (void)state;
    vram_config cfg;
    vram_config_init(&cfg);
    cfg.backend = VRAM_BACKEND_HOST;
    cfg.host_memory = 64 * MiB;
    cfg.host_devices = 2;
    cfg.gpu_budget.bytes = 10 * MiB; /* each device's budget */
    cfg.gpu_budget.percent = 0;
    cfg.evict_wait = 0;
    cfg.log_level = VRAM_LOG_ERROR;
    cfg.no_monitor_thread = 1;
    vram_manager *m = NULL;
    assert_int_equal(vram_manager_create(&cfg, &m), 0);
    vram_device_status d[4];
    assert_int_equal(vram_manager_devices(m, d, 4, sizeof d[0]), 2);
    assert_true(d[0].budget_bytes == 10 * MiB && d[1].budget_bytes == 10 * MiB);

    vram_model_opts o;
    vram_model_opts_init(&o);
    o.source = "synthetic:6M:1";
    o.device = 1;
    vram_model *a = NULL, *b = NULL, *c = NULL, *bad = NULL;
    assert_int_equal(vram_manager_register(m, "a", &o, &a), 0);
    o.source = "synthetic:6M:2";
    assert_int_equal(vram_manager_register(m, "b", &o, &b), 0);
    o.device = 0;
    assert_int_equal(vram_manager_register(m, "c", &o, &c), 0);
    o.device = 2;
    assert_int_equal(vram_manager_register(m, "nodev", &o, &bad), VRAM_ENODEV);
    assert_null(vram_manager_find(m, "nodev"));

    vram_lease *la = NULL;
    assert_int_equal(vram_model_acquire(a, &la), 0);
    vram_model_info info;
    assert_int_equal(vram_model_get_info(a, &info, sizeof info), 0);
    assert_int_equal(info.device, 1);
    assert_true(charged(m, 1) >= 6 * MiB);
    assert_true(charged(m, 0) == 0);
    assert_int_equal(vram_manager_devices(m, d, 4, sizeof d[0]), 2);
    assert_true(d[1].used_by_models_bytes == 6 * MiB && d[0].used_by_models_bytes == 0);

    /* device 1's budget is spent (a is leased), device 0 has room */
    vram_lease *lb = NULL;
    assert_int_equal(vram_model_acquire(b, &lb), VRAM_ENOMEM);
    assert_null(lb);
    assert_non_null(strstr(vram_last_error(), "on device 1"));
    assert_null(strstr(vram_last_error(), "on device 0"));
    assert_true(charged(m, 0) == 0);
    vram_lease *lc = NULL;
    assert_int_equal(vram_model_acquire(c, &lc), 0);
    assert_true(charged(m, 0) >= 6 * MiB);
    uint64_t one = charged(m, 1);
    vram_lease_end(lc);
    vram_lease_end(la);

    /* a idle now: b evicts it on device 1, device 0 untouched */
    assert_int_equal(vram_model_acquire(b, &lb), 0);
    assert_int_equal(vram_model_state(a), VRAM_STATE_CPU);
    assert_int_equal(vram_model_state(c), VRAM_STATE_GPU);
    assert_true(charged(m, 1) == one);
    vram_lease_end(lb);

    /* the status JSON and the spec parser carry the device */
    char *js = vram_model_status_json(m, "b");
    json_t *j = json_loads(js, 0, NULL);
    free(js);
    assert_int_equal(json_integer_value(json_object_get(j, "device")), 1);
    json_decref(j);
    vram_model_spec s;
    char err[256];
    assert_int_equal(vram_model_spec_parse(&s, "d1=synthetic:1M,device=1", err, sizeof err), 0);
    assert_int_equal(s.device, 1);
    assert_int_equal(vram_server_register(m, &s), 0);
    vram_model *d1 = vram_manager_find(m, "d1");
    assert_non_null(d1);
    assert_int_equal(vram_model_get_info(d1, &info, sizeof info), 0);
    assert_int_equal(info.device, 1);
    vram_manager_destroy(m);
}

/* ---- destroy waits for a lease held in another thread ---- */

static int destroy_waits(void *arg)
{
    acquirer *a = arg;
    vram_manager *m = a->model->m;
    pthread_mutex_lock(&m->lock);
    int w = a->model->waiters > 0;
    pthread_mutex_unlock(&m->lock);
    return w;
}

static void *hold_until_destroy(void *arg)
{
    acquirer *a = arg;
    vram_lease *l = NULL;
    a->rc = vram_model_acquire(a->model, &l);
    __atomic_store_n(&a->wait_for_destroy, 1, __ATOMIC_RELEASE); /* holding */
    if (a->rc < 0) return NULL;
    /* until vram_manager_destroy is demonstrably waiting for this lease */
    int waiting = wait_until(destroy_waits, a);
    __atomic_store_n(&a->ended, waiting ? 1 : -1, __ATOMIC_RELEASE);
    vram_lease_end(l); /* the model (and the manager) stay valid until this ends */
    return NULL;
}

static int holding(void *arg)
{
    return __atomic_load_n(&((acquirer *)arg)->wait_for_destroy, __ATOMIC_ACQUIRE);
}

static void test_destroy_waits_for_lease(void **state)
{
    (void)state;
    vram_manager *m = fx_host_manager(64 * MiB);
    vram_model *model = fx_add(m, "m", "synthetic:4M:1");
    acquirer a = {model, -99, 0, 0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, hold_until_destroy, &a), 0);
    assert_true(wait_until(holding, &a));
    assert_int_equal(a.rc, 0);
    vram_manager_destroy(m); /* returns only after the lease has ended */
    int ended = __atomic_load_n(&a.ended, __ATOMIC_ACQUIRE);
    pthread_join(t, NULL);
    assert_int_equal(ended, 1);
}

/* ---- HTTP: 409 for nowait under a lease ---- */

/* One HTTP/1.1 request (Connection: close) on 127.0.0.1:port; returns the
 * status and the body into body (cap bytes). */
static int http(int port, const char *method, const char *path, const char *json_body, char *body,
                size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    char req[2048];
    size_t blen = json_body ? strlen(json_body) : 0;
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     method, path, port, blen, json_body ? json_body : "");
    assert_int_equal(write(fd, req, (size_t)n), n);
    char buf[65536];
    size_t got = 0;
    ssize_t r;
    while (got + 1 < sizeof buf && (r = read(fd, buf + got, sizeof buf - 1 - got)) > 0)
        got += (size_t)r;
    buf[got] = '\0';
    close(fd);
    int status = 0;
    assert_int_equal(sscanf(buf, "HTTP/1.%*d %d", &status), 1);
    char *b = strstr(buf, "\r\n\r\n");
    snprintf(body, cap, "%s", b ? b + 4 : "");
    return status;
}

static void test_nowait_409_under_lease(void **state)
{
    (void)state;
    vram_manager *m = fx_host_manager(64 * MiB);
    vram_model *model = fx_add(m, "m", "synthetic:4M:1");
    vram_server_opts so;
    vram_server_opts_init(&so);
    so.port = 0;
    so.threads = 2;
    vram_server *srv = NULL;
    assert_int_equal(vram_server_start(m, &so, &srv), 0);
    int port = vram_server_port(srv);
    char body[8192];

    vram_lease *l = NULL;
    assert_int_equal(vram_model_acquire(model, &l), 0);
    assert_int_equal(http(port, "POST", "/api/v1/models/m/offload", "{\"nowait\": true}", body,
                          sizeof body),
                     409);
    assert_non_null(strstr(body, "EBUSY"));
    assert_int_equal(vram_model_state(model), VRAM_STATE_GPU);
    assert_int_equal(http(port, "POST", "/api/v1/models/m/release", "{\"nowait\": true}", body,
                          sizeof body),
                     409);
    assert_non_null(strstr(body, "EBUSY"));
    assert_int_equal(vram_model_state(model), VRAM_STATE_GPU);
    /* without nowait the offload is deferred to the lease's end: 202 */
    assert_int_equal(http(port, "POST", "/api/v1/models/m/offload", "{}", body, sizeof body), 202);
    assert_int_equal(vram_model_state(model), VRAM_STATE_GPU);
    vram_lease_end(l);
    assert_int_equal(vram_model_state(model), VRAM_STATE_CPU);
    /* no lease: nowait acts */
    assert_int_equal(http(port, "POST", "/api/v1/models/m/release", "{\"nowait\": true}", body,
                          sizeof body),
                     200);
    assert_int_equal(vram_model_state(model), VRAM_STATE_UNLOADED);
    assert_int_equal(vram_server_stop(srv, 5.0), 0);
    vram_manager_destroy(m);
}

/* ---- MCP: a failing tool is a tool result with isError, not a JSON-RPC error ---- */

static json_t *call(vram__mcp *mcp, const char *tool, const char *args)
{
    char text[512];
    snprintf(text, sizeof text,
             "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/call\",\"params\":{\"name\":\"%s\","
             "\"arguments\":%s}}",
             tool, args);
    json_t *msg = json_loads(text, 0, NULL);
    assert_non_null(msg);
    json_t *reply = vram__mcp_dispatch(mcp, msg, NULL);
    json_decref(msg);
    assert_non_null(reply);
    return reply;
}

/* The reply is a result (no error member) with isError true and a text
 * naming code. */
static void assert_tool_failure(json_t *reply, const char *code)
{
    assert_null(json_object_get(reply, "error"));
    assert_int_equal(json_integer_value(json_object_get(reply, "id")), 7);
    json_t *result = json_object_get(reply, "result");
    assert_true(json_is_object(result));
    assert_true(json_is_true(json_object_get(result, "isError")));
    const char *text =
        json_string_value(json_object_get(json_array_get(json_object_get(result, "content"), 0),
                                          "text"));
    assert_non_null(text);
    if (!strstr(text, code)) fail_msg("'%s' does not name %s", text, code);
}

static void test_mcp_tool_failures(void **state)
{
    (void)state;
    vram_manager *m = fx_host_manager(16 * MiB);
    vram_model *model = fx_add(m, "m", "synthetic:4M:1");
    fx_add(m, "huge", "synthetic:32M:1");
    vram__mcp *mcp = vram__mcp_create(m);
    assert_non_null(mcp);

    json_t *r = call(mcp, "load_model", "{\"model\":\"huge\"}");
    assert_tool_failure(r, "ENOMEM");
    json_decref(r);

    vram_lease *l = NULL;
    assert_int_equal(vram_model_acquire(model, &l), 0);
    r = call(mcp, "unregister_model", "{\"model\":\"m\"}");
    assert_tool_failure(r, "EBUSY");
    json_decref(r);
    r = call(mcp, "reopen_model", "{\"model\":\"m\"}");
    assert_tool_failure(r, "EBUSY");
    json_decref(r);
    assert_ptr_equal(vram_manager_find(m, "m"), model); /* still there */
    vram_lease_end(l);

    /* and a success is isError false with structured content */
    r = call(mcp, "load_model", "{\"model\":\"m\"}");
    json_t *result = json_object_get(r, "result");
    assert_true(json_is_false(json_object_get(result, "isError")));
    assert_true(json_is_object(json_object_get(result, "structuredContent")));
    json_decref(r);
    vram__mcp_destroy(mcp);
    vram_manager_destroy(m);
}

static int cleanup(void **state)
{
    (void)state;
    if (g_dir[0]) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
        if (system(cmd) != 0) return 0;
    }
    return 0;
}

static void quiet(vram_log_level level, const char *line, void *user)
{
    (void)level, (void)line, (void)user; /* the expected ENOMEM lines */
}

int main(void)
{
    vram_set_log_callback(quiet, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_progress_mid_load),
        cmocka_unit_test(test_tensor_pointers_survive_offload),
        cmocka_unit_test(test_tensor_lookup_errors),
        cmocka_unit_test(test_several_devices),
        cmocka_unit_test(test_destroy_waits_for_lease),
        cmocka_unit_test(test_nowait_409_under_lease),
        cmocka_unit_test(test_mcp_tool_failures),
    };
    return cmocka_run_group_tests(tests, NULL, cleanup);
}
