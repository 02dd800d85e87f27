/* test_runtime.c - models at run time and the event log in C: the spec parser, register/unregister/apply/reopen, the log listener and event ring, the tools' option questions. */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/base.h"
#include "server/events.h"
#include "server/models.h"
#include "../support/fixtures.h"
#include "vram.h"
#include "vram_server.h"

#define MiB (1024ULL * 1024ULL)

static vram_manager *host_manager(void)
{
    return fx_host_manager(64 * MiB);
}

static void test_spec_parse(void **state)
{
    (void)state;
    vram_model_spec s;
    char err[512];
    assert_int_equal(vram_model_spec_parse(&s, "Llasa-8B=synthetic:1G,idle_timeout=10m,"
                                               "release_timeout=1h,immediate_offload=true,device=0",
                                           err, sizeof err),
                     0);
    assert_string_equal(s.name, "Llasa-8B");
    assert_string_equal(s.source, "synthetic:1G");
    assert_true(s.idle_timeout == 600 && s.release_timeout == 3600);
    assert_int_equal(s.immediate_offload, 1);
    assert_int_equal(s.device, 0);
    /* a comma inside the source stays in the source */
    assert_int_equal(vram_model_spec_parse(&s, "a=/models/x,y.safetensors", err, sizeof err), 0);
    assert_string_equal(s.source, "/models/x,y.safetensors");
    assert_true(s.idle_timeout < 0 && s.device < 0);
    static const struct {
        const char *text, *why;
    } bad[] = {
        {"nosource", "NAME=SOURCE"},     {"=synthetic:1M", "NAME=SOURCE"},
        {"a=", "NAME=SOURCE"},           {"a=,idle_timeout=5", "source is empty"},
        {"a=s:1,bogus=1", "unknown option 'bogus'"},
        {"a=s:1,idle_timeout=-5", "negative"},
        {"a=s:1,immediate_offload=maybe", "true or false"},
        {"a=s:1,device=x", "device index"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_int_equal(vram_model_spec_parse(&s, bad[i].text, err, sizeof err), VRAM_EINVAL);
        if (!strstr(err, bad[i].why)) fail_msg("%s: '%s' lacks '%s'", bad[i].text, err, bad[i].why);
    }
    int on = -1;
    assert_int_equal(vram__parse_bool("YES", &on), 0);
    assert_int_equal(on, 1);
    assert_int_equal(vram__parse_bool("off", &on), 0);
    assert_int_equal(on, 0);
    assert_int_equal(vram__parse_bool("2", &on), -1);
}

static void test_register_unregister(void **state)
{
    (void)state;
    vram_manager *m = host_manager();
    vram_model_spec s;
    char err[256];
    assert_int_equal(vram_model_spec_parse(&s, "a=synthetic:4M,idle_timeout=90", err, sizeof err), 0);
    assert_int_equal(vram_server_register(m, &s), 0);
    assert_int_equal(vram_server_register(m, &s), VRAM_EEXIST);
    vram_model *a = vram_manager_find(m, "a");
    vram_lease *l = NULL;
    assert_int_equal(vram_model_acquire(a, &l), 0);
    /* refused under a lease, with the reason */
    assert_int_equal(vram_server_unregister(m, "a"), VRAM_EBUSY);
    assert_non_null(strstr(vram_last_error(), "in use"));
    assert_int_equal(vram_server_reopen(m, "a"), VRAM_EBUSY);
    vram_lease_end(l);
    assert_int_equal(vram_server_unregister(m, "a"), 0);
    assert_null(vram_manager_find(m, "a"));
    assert_int_equal(vram_server_unregister(m, "a"), VRAM_ENOENT);
    vram_manager_destroy(m);
}

static void test_apply(void **state)
{
    (void)state;
    vram_manager *m = host_manager();
    vram_model_spec s;
    char err[256];
    const char *what = NULL;
    assert_int_equal(vram_model_spec_parse(&s, "a=synthetic:4M", err, sizeof err), 0);
    assert_int_equal(vram_server_apply(m, &s, &what), 0);
    assert_string_equal(what, "registered");
    assert_int_equal(vram_server_apply(m, &s, &what), 0);
    assert_string_equal(what, "unchanged");
    assert_int_equal(vram_model_spec_option(&s, "idle_timeout", "2m", err, sizeof err), 0);
    assert_int_equal(vram_server_apply(m, &s, &what), 0);
    assert_string_equal(what, "updated");
    vram_model_info mi;
    assert_int_equal(vram_model_get_info(vram_manager_find(m, "a"), &mi, sizeof mi), 0);
    assert_true(mi.idle_timeout == 120);
    /* a new source replaces the model; a source that does not open keeps it */
    snprintf(s.source, sizeof s.source, "synthetic:8M");
    assert_int_equal(vram_server_apply(m, &s, &what), 0);
    assert_string_equal(what, "replaced");
    assert_int_equal(vram_model_get_info(vram_manager_find(m, "a"), &mi, sizeof mi), 0);
    assert_true(mi.bytes == 8 * MiB && mi.idle_timeout == 120);
    snprintf(s.source, sizeof s.source, "/nonexistent/model.safetensors");
    assert_true(vram_server_apply(m, &s, &what) < 0);
    assert_int_equal(vram_model_get_info(vram_manager_find(m, "a"), &mi, sizeof mi), 0);
    assert_string_equal(mi.source, "synthetic:8M");
    assert_int_equal(vram_manager_models(m, NULL, 0, sizeof mi), 1); /* no scratch model left */
    assert_int_equal(vram_server_reopen(m, "a"), 0);
    assert_int_equal(vram_server_reopen(m, "nope"), VRAM_ENOENT);
    vram_manager_destroy(m);
}

static int g_heard;
static void hear(vram_log_level level, const char *line, void *user)
{
    (void)level;
    (void)user;
    if (strstr(line, "listener-test")) g_heard++;
}

static void test_log_listener(void **state)
{
    (void)state;
    vram_set_log_level(VRAM_LOG_ERROR); /* stderr quiet: listeners hear info anyway */
    int id = vram_log_listen(hear, NULL, VRAM_LOG_INFO);
    assert_true(id > 0);
    assert_true(vram_log_enabled(VRAM_LOG_INFO));
    assert_false(vram_log_enabled(VRAM_LOG_DEBUG));
    vram_log(VRAM_LOG_INFO, "listener-test one");
    vram_log(VRAM_LOG_DEBUG, "listener-test not heard");
    assert_int_equal(g_heard, 1);
    vram_log_unlisten(id);
    vram_log(VRAM_LOG_INFO, "listener-test after");
    assert_int_equal(g_heard, 1);
    assert_false(vram_log_enabled(VRAM_LOG_INFO));
    assert_int_equal(vram_log_listen(NULL, NULL, VRAM_LOG_INFO), VRAM_EINVAL);
    vram_log_unlisten(0);
    vram_log_unlisten(99);
}

static void test_events(void **state)
{
    (void)state;
    vram__events *ev = vram__events_create();
    assert_non_null(ev);
    vram__events_add(ev, VRAM_LOG_INFO, "2026-12-01T20:18:13.089Z INFO  load model=small bytes=1");
    vram__events_add(ev, VRAM_LOG_DEBUG, "2026-12-01T20:18:13.089Z DEBUG http: GET / -> 200");
    vram__events_add(ev, VRAM_LOG_WARN, "evict model=b bytes=2 device=0 for=a");
    json_t *o = vram__events_json(ev, 0, 100);
    json_t *list = json_object_get(o, "events");
    assert_int_equal(json_array_size(list), 2); /* the request trace is no event */
    json_t *e0 = json_array_get(list, 0), *e1 = json_array_get(list, 1);
    assert_string_equal(json_string_value(json_object_get(e0, "kind")), "load");
    assert_string_equal(json_string_value(json_object_get(e0, "model")), "small");
    assert_string_equal(json_string_value(json_object_get(e0, "message")), "load model=small bytes=1");
    assert_string_equal(json_string_value(json_object_get(e1, "level")), "warn");
    json_int_t next = json_integer_value(json_object_get(o, "next"));
    json_decref(o);
    o = vram__events_json(ev, (uint64_t)next, 100);
    assert_int_equal(json_array_size(json_object_get(o, "events")), 0);
    json_decref(o);
    /* a reader that fell behind is told how many it missed */
    for (int i = 0; i < VRAM__EVENTS_MAX + 10; i++)
        vram__events_add(ev, VRAM_LOG_INFO, "offload model=x");
    o = vram__events_json(ev, 1, 0);
    assert_int_equal(json_array_size(json_object_get(o, "events")), VRAM__EVENTS_MAX);
    assert_int_equal(json_integer_value(json_object_get(o, "missed")), 12);
    json_decref(o);
    o = vram__events_json(ev, 1, 5);
    assert_int_equal(json_array_size(json_object_get(o, "events")), 5);
    json_decref(o);
    vram__events_destroy(ev);
}

static void test_tool_options(void **state)
{
    (void)state;
    double s = -1;
    char err[256];
    assert_int_equal(vram_parse_seconds("10m", &s, err, sizeof err), 0);
    assert_true(s == 600);
    assert_int_equal(vram_parse_seconds("0.5", &s, err, sizeof err), 0);
    assert_true(s == 0.5);
    assert_int_equal(vram_parse_seconds("-1", &s, err, sizeof err), VRAM_EINVAL);
    assert_non_null(strstr(err, "negative"));
    assert_null(strstr(err, "VRAM_RELEASE_TIMEOUT"));
    assert_true(vram_config_has_flag("--port"));
    assert_true(vram_config_has_flag("--idle-timeout=5"));
    assert_false(vram_config_has_flag("--frobnicate"));
    char path[] = "/tmp/vram-env-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "VRAM_GPU_BUGDET=50%\nGPU_IDLE_TIMEOUT=5\nexport GPU_IDLE_TIMOUT=3\n"
                       "OPENAI_API_KEY=x\n# VRAM_NOPE=1\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    char out[1024];
    assert_int_equal(vram_config_env_warnings(path, out, sizeof out), 2);
    assert_non_null(strstr(out, ":1: VRAM_GPU_BUGDET is not a vram variable and is ignored (did you "
                                "mean VRAM_GPU_BUDGET?)"));
    assert_non_null(strstr(out, ":3: GPU_IDLE_TIMOUT"));
    assert_null(strstr(out, "OPENAI"));
    unlink(path);
    assert_int_equal(vram_config_env_warnings("/nonexistent/.env", out, sizeof out), 0);
    vram_config cfg;
    vram_config_init(&cfg);
    assert_string_equal(vram_config_source(&cfg, "VRAM_PORT"), "default");
    assert_null(vram_config_source(&cfg, "NOPE"));
    assert_string_equal(vram__seconds_text(315360000).s, "315360000 s");
    assert_string_equal(vram__seconds_text(0.5).s, "0.5 s");
    assert_string_equal(vram__seconds_text(0).s, "0 s");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_parse),   cmocka_unit_test(test_register_unregister),
        cmocka_unit_test(test_apply),        cmocka_unit_test(test_log_listener),
        cmocka_unit_test(test_events),       cmocka_unit_test(test_tool_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
