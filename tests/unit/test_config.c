/* test_config.c - unit tests of the option table, vram_config_set/load and printing. */
#include <fcntl.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/config.h"
#include "vram.h"

/* ---- helpers ---- */

/* Removes every variable of the table from the environment. */
static void clear_env(void)
{
    for (size_t i = 0; i < vram__config_option_count(); i++) {
        const vram__option_desc *d = vram__config_option(i);
        unsetenv(d->name);
        if (d->alias) unsetenv(d->alias);
    }
}

static int setup(void **state)
{
    (void)state;
    clear_env();
    return 0;
}

static char g_env_path[64];

/* Writes n bytes to a fresh temporary file and returns its path. */
static const char *write_env_n(const char *text, size_t n)
{
    snprintf(g_env_path, sizeof g_env_path, "/tmp/vram-test-env-XXXXXX");
    int fd = mkstemp(g_env_path);
    assert_true(fd >= 0);
    assert_int_equal((ssize_t)n, write(fd, text, n));
    close(fd);
    return g_env_path;
}

static const char *write_env(const char *text)
{
    return write_env_n(text, strlen(text));
}

static void remove_env(void)
{
    unlink(g_env_path);
}

/* Sets name=value on a fresh default config and expects success. */
static vram_config set_ok(const char *name, const char *value)
{
    vram_config cfg;
    char err[512] = "";
    vram_config_init(&cfg);
    int rc = vram_config_set(&cfg, name, value, err, sizeof err);
    if (rc != 0) print_error("%s=%s failed: %s\n", name, value, err);
    assert_int_equal(rc, 0);
    return cfg;
}

/* Expects name=value to fail with VRAM_ECONFIG, an error naming name, and
 * cfg untouched. Returns the message in a static buffer. */
static const char *set_bad(const char *name, const char *value)
{
    static char err[512];
    vram_config cfg, before;
    vram_config_init(&cfg);
    before = cfg;
    err[0] = '\0';
    int rc = vram_config_set(&cfg, name, value, err, sizeof err);
    if (rc != VRAM_ECONFIG) print_error("%s='%s' was accepted\n", name, value ? value : "(null)");
    assert_int_equal(rc, VRAM_ECONFIG);
    assert_memory_equal(&cfg, &before, sizeof cfg);
    assert_non_null(strstr(err, name));
    return err;
}

/* Like set_bad, and the message also quotes the value. */
static void set_bad_quoted(const char *name, const char *value)
{
    const char *err = set_bad(name, value);
    char quoted[300];
    snprintf(quoted, sizeof quoted, "'%s'", value);
    if (!strstr(err, quoted)) print_error("message '%s' lacks %s\n", err, quoted);
    assert_non_null(strstr(err, quoted));
}

/* ---- defaults ---- */

static void test_defaults(void **state)
{
    (void)state;
    vram_config cfg;
    memset(&cfg, 0x5a, sizeof cfg);
    vram_config_init(&cfg);
    assert_int_equal(cfg.backend, VRAM_BACKEND_AUTO);
    assert_true(cfg.idle_timeout == 600.0);
    assert_true(cfg.release_timeout == 0.0);
    assert_true(cfg.gpu_budget.percent == 100.0);
    assert_int_equal(cfg.gpu_budget.bytes, 0);
    assert_true(cfg.host_budget.percent == 0.0);
    assert_int_equal(cfg.host_budget.bytes, 0);
    assert_int_equal(cfg.host_memory, 1ULL << 30);
    assert_int_equal(cfg.host_devices, 1);
    assert_true(cfg.evict_wait == 30.0);
    assert_int_equal(cfg.log_level, VRAM_LOG_INFO);
    assert_int_equal(cfg.chunk_bytes, 64ULL << 20);
    assert_string_equal(cfg.visible_devices, "");
    assert_string_equal(cfg.cuda_library, "libcuda.so.1");
    assert_int_equal(cfg.port, 7861);
    assert_string_equal(cfg.bind, "127.0.0.1");
    assert_string_equal(cfg.token, "");
    assert_string_equal(cfg.url, "http://127.0.0.1:7861");
    assert_null(cfg.clock);
    assert_null(cfg.clock_user);
    assert_int_equal(cfg.no_monitor_thread, 0);
}

/* Issue 11.8: the token from a file (not the command line), first line only. */
static void test_token_file(void **state)
{
    (void)state;
    vram_config cfg;
    vram_config_init(&cfg);
    char err[512], path[] = "/tmp/vram-token-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char text[] = "  s3cret-token \nsecond line\n";
    assert_int_equal(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
    close(fd);
    assert_int_equal(vram_config_set_flag(&cfg, "--token-file", path, err, sizeof err), 0);
    assert_string_equal(cfg.token, "s3cret-token");
    char shown[64];
    assert_int_equal(vram__config_format(&cfg, "VRAM_TOKEN_FILE", shown, sizeof shown), 0);
    assert_null(strstr(shown, "s3cret"));
    fd = open(path, O_WRONLY | O_TRUNC);
    assert_int_equal(write(fd, "two words\n", 10), 10);
    close(fd);
    assert_int_equal(vram_config_set(&cfg, "VRAM_TOKEN_FILE", path, err, sizeof err), VRAM_ECONFIG);
    assert_non_null(strstr(err, "first line"));
    unlink(path);
    assert_int_equal(vram_config_set(&cfg, "VRAM_TOKEN_FILE", path, err, sizeof err), VRAM_ECONFIG);
    assert_non_null(strstr(err, "No such file"));
    assert_int_equal(vram_config_set(&cfg, "VRAM_ALLOWED_HOSTS", "gpu1.lan,10.0.0.5", err, sizeof err), 0);
    assert_string_equal(cfg.allowed_hosts, "gpu1.lan,10.0.0.5");
    /* the node options */
    vram_config_init(&cfg);
    assert_string_equal(cfg.node_socket, "/run/vram/node.sock");
    assert_string_equal(cfg.node_name, "");
    assert_string_equal(cfg.host_shared, "");
    assert_int_equal(vram_config_set(&cfg, "VRAM_NODE_SOCKET", "", err, sizeof err), VRAM_ECONFIG);
    assert_int_equal(vram_config_set(&cfg, "VRAM_NODE_SOCKET", "off", err, sizeof err), 0);
    assert_string_equal(cfg.node_socket, "off");
    assert_int_equal(vram_config_set(&cfg, "VRAM_NODE_NAME", "tts service", err, sizeof err),
                     VRAM_ECONFIG);
    assert_int_equal(vram_config_set(&cfg, "VRAM_HOST_SHARED", "gpu0", err, sizeof err), 0);
    assert_string_equal(cfg.host_shared, "gpu0");
}

static void test_table_is_consistent(void **state)
{
    (void)state;
    size_t n = vram__config_option_count();
    assert_int_equal(n, 21);
    assert_null(vram__config_option(n));
    for (size_t i = 0; i < n; i++) {
        const vram__option_desc *d = vram__config_option(i);
        assert_non_null(d->name);
        assert_non_null(d->flag);
        assert_non_null(d->metavar);
        assert_non_null(d->def);
        assert_non_null(d->help);
        assert_true(strncmp(d->flag, "--", 2) == 0);
        /* every default parses, by name, alias and flag */
        vram_config cfg;
        char err[512];
        vram_config_init(&cfg);
        assert_int_equal(vram_config_set(&cfg, d->name, d->def, err, sizeof err), 0);
        if (d->alias) assert_int_equal(vram_config_set(&cfg, d->alias, d->def, err, sizeof err), 0);
        assert_int_equal(vram__config_set_flag(&cfg, d->flag, d->def, err, sizeof err), 0);
        for (size_t j = 0; j < i; j++) {
            const vram__option_desc *e = vram__config_option(j);
            assert_string_not_equal(d->name, e->name);
            assert_string_not_equal(d->flag, e->flag);
        }
    }
}

/* Formatting a value and setting it back gives the same config. */
static void test_format_round_trips(void **state)
{
    (void)state;
    vram_config cfg;
    char err[512];
    vram_config_init(&cfg);
    static const char *const sets[][2] = {
        {"VRAM_BACKEND", "cuda"},
        {"GPU_IDLE_TIMEOUT", "12.25"},
        {"VRAM_RELEASE_TIMEOUT", "1h"},
        {"VRAM_GPU_BUDGET", "12.5%"},
        {"VRAM_HOST_BUDGET", "1.5G"},
        {"VRAM_HOST_MEMORY", "2097153"},
        {"VRAM_HOST_DEVICES", "3"},
        {"VRAM_EVICT_WAIT", "0.001"},
        {"VRAM_LOG_LEVEL", "debug"},
        {"VRAM_CHUNK", "3M"},
        {"CUDA_VISIBLE_DEVICES", "1,0"},
        {"VRAM_CUDA_LIBRARY", "/opt/lib cuda.so"},
        {"VRAM_PORT", "9"},
        {"VRAM_BIND", "0.0.0.0"},
        {"VRAM_URL", "https://h:1/x"},
    };
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++)
        assert_int_equal(vram_config_set(&cfg, sets[i][0], sets[i][1], err, sizeof err), 0);
    vram_config copy;
    vram_config_init(&copy);
    for (size_t i = 0; i < vram__config_option_count(); i++) {
        const vram__option_desc *d = vram__config_option(i);
        char buf[512];
        assert_int_equal(vram__config_format(&cfg, d->name, buf, sizeof buf), 0);
        if (strcmp(d->name, "VRAM_TOKEN") == 0 || strcmp(d->name, "VRAM_TOKEN_FILE") == 0)
            continue; /* secrets are not shown; the file option names a file */
        assert_int_equal(vram_config_set(&copy, d->name, buf, err, sizeof err), 0);
    }
    assert_memory_equal(&cfg, &copy, sizeof cfg);
    char buf[64];
    assert_int_equal(vram__config_format(&cfg, "VRAM_HOST_BUDGET", buf, sizeof buf), 0);
    assert_string_equal(buf, "1536M");
    assert_int_equal(vram__config_format(&cfg, "VRAM_GPU_BUDGET", buf, sizeof buf), 0);
    assert_string_equal(buf, "12.5%");
    assert_int_equal(vram__config_format(&cfg, "VRAM_RELEASE_TIMEOUT", buf, sizeof buf), 0);
    assert_string_equal(buf, "3600");
    assert_int_equal(vram__config_format(&cfg, "NOPE", buf, sizeof buf), VRAM_ECONFIG);
}

/* ---- vram_parse_size ---- */

static void test_parse_size_good(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        uint64_t bytes;
    } cases[] = {
        {"0", 0},
        {"4096", 4096},
        {"4096B", 4096},
        {"64K", 64ULL << 10},
        {"64k", 64ULL << 10},
        {"64M", 64ULL << 20},
        {"64m", 64ULL << 20},
        {"64MiB", 64ULL << 20},
        {"64mib", 64ULL << 20},
        {"64MB", 64ULL << 20},
        {"64mb", 64ULL << 20},
        {"1.5G", 3ULL << 29},
        {"0.5K", 512},
        {"0.1K", 102},
        {".5M", 512ULL << 10},
        {"2T", 2ULL << 40},
        {"2TiB", 2ULL << 40},
        {"007", 7},
        {"8388607T", 8388607ULL << 40},
        {"9223372036854775807", 9223372036854775807ULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t v = 12345;
        int rc = vram_parse_size(cases[i].text, &v);
        if (rc != 0 || v != cases[i].bytes) print_error("case '%s'\n", cases[i].text);
        assert_int_equal(rc, 0);
        assert_int_equal(v, cases[i].bytes);
    }
}

static void test_parse_size_bad(void **state)
{
    (void)state;
    static const char *const cases[] = {
        "",
        "-1",
        "-1K",
        "+1",
        "1.5",
        "1.",
        ".",
        "12X",
        "K",
        "1.5.2G",
        "nan",
        "NaN",
        "inf",
        "infinity",
        "1e3",
        " 1",
        "1 ",
        "64KK",
        "64iB",
        "64Mi",
        "64MBB",
        "0x10",
        "8388608T",
        "9223372036854775808",
        "99999999999999999999999",
        "1.G",
        "1,5G",
        "64 M",
        "1P",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t v = 777;
        int rc = vram_parse_size(cases[i], &v);
        if (rc == 0) print_error("'%s' was accepted\n", cases[i]);
        assert_int_equal(rc, VRAM_EINVAL);
        assert_int_equal(v, 777);
    }
    uint64_t v;
    assert_int_equal(vram_parse_size(NULL, &v), VRAM_EINVAL);
    assert_int_equal(vram_parse_size("1", NULL), VRAM_EINVAL);
}

/* ---- each option ---- */

static void test_backend(void **state)
{
    (void)state;
    assert_int_equal(set_ok("VRAM_BACKEND", "host").backend, VRAM_BACKEND_HOST);
    assert_int_equal(set_ok("VRAM_BACKEND", "cuda").backend, VRAM_BACKEND_CUDA);
    assert_int_equal(set_ok("VRAM_BACKEND", "CUDA").backend, VRAM_BACKEND_CUDA);
    assert_int_equal(set_ok("VRAM_BACKEND", " auto ").backend, VRAM_BACKEND_AUTO);
    set_bad_quoted("VRAM_BACKEND", "gpu");
    set_bad_quoted("VRAM_BACKEND", "");
    set_bad_quoted("VRAM_BACKEND", "hostx");
    const char *err = set_bad("VRAM_BACKEND", "opencl");
    assert_string_equal(err, "VRAM_BACKEND: 'opencl' is not one of auto|host|cuda");
}

static void test_log_level(void **state)
{
    (void)state;
    assert_int_equal(set_ok("VRAM_LOG_LEVEL", "error").log_level, VRAM_LOG_ERROR);
    assert_int_equal(set_ok("VRAM_LOG_LEVEL", "warn").log_level, VRAM_LOG_WARN);
    assert_int_equal(set_ok("VRAM_LOG_LEVEL", "info").log_level, VRAM_LOG_INFO);
    assert_int_equal(set_ok("VRAM_LOG_LEVEL", "DEBUG").log_level, VRAM_LOG_DEBUG);
    set_bad_quoted("VRAM_LOG_LEVEL", "trace");
    set_bad_quoted("VRAM_LOG_LEVEL", "3");
    set_bad_quoted("VRAM_LOG_LEVEL", "");
}

static void test_seconds_good(void **state)
{
    (void)state;
    assert_true(set_ok("GPU_IDLE_TIMEOUT", "0").idle_timeout == 0.0);
    assert_true(set_ok("GPU_IDLE_TIMEOUT", "300").idle_timeout == 300.0);
    assert_true(set_ok("GPU_IDLE_TIMEOUT", "1.5").idle_timeout == 1.5);
    assert_true(set_ok("GPU_IDLE_TIMEOUT", "0.25").idle_timeout == 0.25);
    assert_true(set_ok("GPU_IDLE_TIMEOUT", "90s").idle_timeout == 90.0);
    assert_true(set_ok("GPU_IDLE_TIMEOUT", "10m").idle_timeout == 600.0);
    assert_true(set_ok("GPU_IDLE_TIMEOUT", "1h").idle_timeout == 3600.0);
    assert_true(set_ok("GPU_IDLE_TIMEOUT", "1.5h").idle_timeout == 5400.0);
    assert_true(set_ok("GPU_IDLE_TIMEOUT", "  42\t").idle_timeout == 42.0);
    assert_true(set_ok("GPU_IDLE_TIMEOUT", "315360000").idle_timeout == VRAM_SECONDS_MAX);
    assert_true(set_ok("VRAM_IDLE_TIMEOUT", "7").idle_timeout == 7.0);
    assert_true(set_ok("VRAM_RELEASE_TIMEOUT", "3600").release_timeout == 3600.0);
    assert_true(set_ok("VRAM_EVICT_WAIT", "0").evict_wait == 0.0);
    assert_true(set_ok("VRAM_EVICT_WAIT", "2.5").evict_wait == 2.5);
}

static void test_seconds_bad(void **state)
{
    (void)state;
    static const char *const names[] = {"GPU_IDLE_TIMEOUT", "VRAM_IDLE_TIMEOUT",
                                        "VRAM_RELEASE_TIMEOUT", "VRAM_EVICT_WAIT"};
    static const char *const cases[] = {
        "-1",       "-0.5",
        "nan",      "NaN",
        "inf",      "-inf",
        "infinity", "",
        "abc",      "10x",
        "1e3",      "0x10",
        "1.",       "315360001",
        "5256001m", "87601h",
        "1h30m",    "10 s",
        "10M",      "+5",
        "1,5",      "99999999999999999999999999",
    };
    for (size_t n = 0; n < sizeof names / sizeof names[0]; n++)
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
            set_bad_quoted(names[n], cases[i]);
    assert_string_equal(set_bad("GPU_IDLE_TIMEOUT", "-5"),
                        "GPU_IDLE_TIMEOUT: '-5' is negative (use seconds >= 0, e.g. 600, 90s, 10m "
                        "or 1h)");
    assert_string_equal(set_bad("GPU_IDLE_TIMEOUT", "soon"),
                        "GPU_IDLE_TIMEOUT: 'soon' is not a duration (use seconds >= 0, e.g. 600, "
                        "90s, 10m or 1h)");
    assert_non_null(strstr(set_bad("VRAM_EVICT_WAIT", "1e12"), "'1e12'"));
    assert_non_null(strstr(set_bad("VRAM_EVICT_WAIT", "400000000"), "more than 10 years"));
}

static void test_budgets(void **state)
{
    (void)state;
    static const char *const names[] = {"VRAM_GPU_BUDGET", "VRAM_HOST_BUDGET"};
    for (size_t n = 0; n < 2; n++) {
        const char *name = names[n];
        size_t off =
            n == 0 ? offsetof(vram_config, gpu_budget) : offsetof(vram_config, host_budget);
        vram_config c;
        vram_size_spec s;
#define SPEC_OF(value) (c = set_ok(name, value), memcpy(&s, (char *)&c + off, sizeof s))
        SPEC_OF("80%");
        assert_true(s.percent == 80.0 && s.bytes == 0);
        SPEC_OF("12.5%");
        assert_true(s.percent == 12.5 && s.bytes == 0);
        SPEC_OF("100%");
        assert_true(s.percent == 100.0);
        SPEC_OF("0.01%");
        assert_true(s.percent == 0.01);
        SPEC_OF("8G");
        assert_true(s.percent == 0.0 && s.bytes == 8ULL << 30);
        SPEC_OF("1.5g");
        assert_true(s.percent == 0.0 && s.bytes == 3ULL << 29);
        SPEC_OF("0");
        assert_true(s.percent == 0.0 && s.bytes == 0);
        SPEC_OF("123456789");
        assert_true(s.percent == 0.0 && s.bytes == 123456789);
#undef SPEC_OF
        static const char *const bad[] = {
            "0%",   "150%", "100.01%", "-5%", "%",   "12X", "80 %",
            "nan%", "inf%", "",        "-8G", "nan", "inf", "9999999999999999999999G",
            "80%%", "%80"};
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
            set_bad_quoted(name, bad[i]);
    }
    assert_string_equal(set_bad("VRAM_GPU_BUDGET", "12X"),
                        "VRAM_GPU_BUDGET: '12X' is not a size (use bytes with K/M/G/T, e.g. 8G, "
                        "or a percentage, e.g. 80%)");
    assert_string_equal(set_bad("VRAM_GPU_BUDGET", "150%"),
                        "VRAM_GPU_BUDGET: '150%' is out of range (a percentage must be above 0 "
                        "and at most 100)");
}

static void test_host_memory(void **state)
{
    (void)state;
    assert_int_equal(set_ok("VRAM_HOST_MEMORY", "2G").host_memory, 2ULL << 30);
    assert_int_equal(set_ok("VRAM_HOST_MEMORY", "2M").host_memory, 2ULL << 20);
    assert_int_equal(set_ok("VRAM_HOST_MEMORY", "3M").host_memory, 3ULL << 20);
    assert_int_equal(set_ok("VRAM_HOST_MEMORY", "1T").host_memory, 1ULL << 40);
    static const char *const bad[] = {"0",
                                      "1K",
                                      "2097151",
                                      "1.9M",
                                      "-1G",
                                      "nan",
                                      "inf",
                                      "",
                                      "1Q",
                                      "50%",
                                      "9999999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        set_bad_quoted("VRAM_HOST_MEMORY", bad[i]);
    assert_string_equal(set_bad("VRAM_HOST_MEMORY", "1K"),
                        "VRAM_HOST_MEMORY: '1K' is out of range (use at least 2M)");
}

static void test_chunk(void **state)
{
    (void)state;
    assert_int_equal(set_ok("VRAM_CHUNK", "64K").chunk_bytes, 64ULL << 10);
    assert_int_equal(set_ok("VRAM_CHUNK", "1G").chunk_bytes, 1ULL << 30);
    assert_int_equal(set_ok("VRAM_CHUNK", "16MiB").chunk_bytes, 16ULL << 20);
    static const char *const bad[] = {"32K", "65535", "2G", "1.5G", "0", "-64M", "", "64Q", "nan"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        set_bad_quoted("VRAM_CHUNK", bad[i]);
    assert_string_equal(set_bad("VRAM_CHUNK", "2G"),
                        "VRAM_CHUNK: '2G' is out of range (use 64K to 1G)");
}

static void test_host_devices(void **state)
{
    (void)state;
    assert_int_equal(set_ok("VRAM_HOST_DEVICES", "1").host_devices, 1);
    assert_int_equal(set_ok("VRAM_HOST_DEVICES", "16").host_devices, 16);
    assert_int_equal(set_ok("VRAM_HOST_DEVICES", "04").host_devices, 4);
    static const char *const bad[] = {"0", "17", "-1",  "1.5", "",
                                      "x", "2x", "nan", "inf", "99999999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        set_bad_quoted("VRAM_HOST_DEVICES", bad[i]);
}

static void test_port(void **state)
{
    (void)state;
    assert_int_equal(set_ok("VRAM_PORT", "0").port, 0); /* any free port */
    assert_int_equal(set_ok("VRAM_PORT", "1").port, 1);
    assert_int_equal(set_ok("VRAM_PORT", "65535").port, 65535);
    assert_int_equal(set_ok("VRAM_PORT", "8080").port, 8080);
    static const char *const bad[] = {"65536", "-1", "80a", "", "http", "80.5", "4294967297"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        set_bad_quoted("VRAM_PORT", bad[i]);
    assert_string_equal(set_bad("VRAM_PORT", "70000"),
                        "VRAM_PORT: '70000' is out of range (use 0 to 65535)");
    assert_string_equal(set_bad("VRAM_PORT", "web"),
                        "VRAM_PORT: 'web' is not a port (use 0 to 65535)");
}

static void test_visible_devices(void **state)
{
    (void)state;
    static const char *const names[] = {"CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"};
    for (size_t n = 0; n < 2; n++) {
        const char *name = names[n];
        assert_string_equal(set_ok(name, "").visible_devices, "");
        assert_string_equal(set_ok(name, "all").visible_devices, "");
        assert_string_equal(set_ok(name, "0").visible_devices, "0");
        assert_string_equal(set_ok(name, "1,0,3").visible_devices, "1,0,3");
        assert_string_equal(
            set_ok(name, "GPU-5f1c2b3a-0d4e-11ee-8c90-0242ac120002").visible_devices,
            "GPU-5f1c2b3a-0d4e-11ee-8c90-0242ac120002");
        assert_string_equal(set_ok(name, "0,GPU-5f1c").visible_devices, "0,GPU-5f1c");
        assert_string_equal(set_ok(name, "MIG-GPU-5f1c/1/0").visible_devices, "MIG-GPU-5f1c/1/0");
        assert_string_equal(set_ok(name, "none").visible_devices, "none");
        assert_string_equal(set_ok(name, "void").visible_devices, "none");
        assert_string_equal(set_ok(name, "-1").visible_devices, "none");
        static const char *const bad[] = {"0,",      ",0",      "a",  "0 1",  "0;1",      "GPU-",
                                          "GPU-x y", "1234567", "-2", "0,,1", "gpu-5f1c", "0,-1"};
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
            set_bad_quoted(name, bad[i]);
    }
}

static void test_strings(void **state)
{
    (void)state;
    assert_string_equal(set_ok("VRAM_CUDA_LIBRARY", "/usr/lib/x/libcuda.so").cuda_library,
                        "/usr/lib/x/libcuda.so");
    set_bad_quoted("VRAM_CUDA_LIBRARY", "");
    set_bad("VRAM_CUDA_LIBRARY", "lib\ncuda");
    assert_string_equal(set_ok("VRAM_BIND", "0.0.0.0").bind, "0.0.0.0");
    assert_string_equal(set_ok("VRAM_BIND", "::1").bind, "::1");
    set_bad_quoted("VRAM_BIND", "");
    set_bad_quoted("VRAM_BIND", "a b");
    assert_string_equal(set_ok("VRAM_URL", "http://gpu-box:7861").url, "http://gpu-box:7861");
    assert_string_equal(set_ok("VRAM_URL", "HTTPS://x/api").url, "HTTPS://x/api");
    static const char *const bad_urls[] = {"",        "gpu-box:7861", "ftp://x",
                                           "http://", "http:// x",    "http:///x"};
    for (size_t i = 0; i < sizeof bad_urls / sizeof bad_urls[0]; i++)
        set_bad_quoted("VRAM_URL", bad_urls[i]);
    /* a value that does not fit the field */
    char longv[400];
    memset(longv, 'a', sizeof longv - 1);
    longv[sizeof longv - 1] = '\0';
    assert_non_null(
        strstr(set_bad("VRAM_CUDA_LIBRARY", longv), "too long (399 bytes, at most 255)"));
    longv[256] = '\0';
    set_bad("VRAM_CUDA_LIBRARY", longv);
    longv[255] = '\0';
    assert_string_equal(set_ok("VRAM_CUDA_LIBRARY", longv).cuda_library, longv);
}

static void test_token_never_shown(void **state)
{
    (void)state;
    assert_string_equal(set_ok("VRAM_TOKEN", "s3cret-Token").token, "s3cret-Token");
    assert_string_equal(set_ok("VRAM_TOKEN", "").token, "");
    const char *err = set_bad("VRAM_TOKEN", "hunter2 hunter3");
    assert_null(strstr(err, "hunter"));
    err = set_bad("VRAM_TOKEN", "abc\ndef");
    assert_null(strstr(err, "abc"));
    vram_config cfg = set_ok("VRAM_TOKEN", "s3cret-Token");
    char buf[64];
    assert_int_equal(vram__config_format(&cfg, "VRAM_TOKEN", buf, sizeof buf), 0);
    assert_string_equal(buf, "(set)");
}

/* ---- vram_config_set: names, errors, no change on failure ---- */

static void test_unknown_option(void **state)
{
    (void)state;
    vram_config cfg, before;
    char err[256];
    vram_config_init(&cfg);
    before = cfg;
    assert_int_equal(vram_config_set(&cfg, "FOO", "1", err, sizeof err), VRAM_ECONFIG);
    assert_string_equal(err, "unknown option 'FOO'");
    assert_int_equal(vram_config_set(&cfg, "vram_port", "1", err, sizeof err), VRAM_ECONFIG);
    assert_int_equal(vram_config_set(&cfg, NULL, "1", err, sizeof err), VRAM_ECONFIG);
    assert_memory_equal(&cfg, &before, sizeof cfg);
    /* no err buffer is fine, and the detail goes to the thread's error too */
    assert_int_equal(vram_config_set(&cfg, "FOO", "1", NULL, 0), VRAM_ECONFIG);
    assert_int_equal(vram_config_set(&cfg, "VRAM_PORT", NULL, err, sizeof err), VRAM_ECONFIG);
    assert_non_null(strstr(err, "VRAM_PORT"));
    assert_int_equal(vram_config_set(NULL, "VRAM_PORT", "1", err, sizeof err), VRAM_EINVAL);
    /* a small err buffer is cut, not overrun */
    char tiny[8];
    memset(tiny, 'x', sizeof tiny);
    assert_int_equal(vram_config_set(&cfg, "VRAM_PORT", "-1", tiny, 5), VRAM_ECONFIG);
    assert_string_equal(tiny, "VRAM");
    assert_int_equal(tiny[5], 'x');
}

static void test_error_quotes_odd_bytes(void **state)
{
    (void)state;
    const char *err = set_bad("VRAM_PORT", "8'0\x01");
    assert_non_null(strstr(err, "'8\\x270\\x01'"));
    char longv[200];
    memset(longv, '9', sizeof longv - 1);
    longv[sizeof longv - 1] = '\0';
    err = set_bad("VRAM_PORT", longv);
    assert_non_null(strstr(err, "...'"));
    assert_true(strlen(err) < 200);
}

static void test_set_flag(void **state)
{
    (void)state;
    vram_config cfg;
    char err[512];
    vram_config_init(&cfg);
    assert_int_equal(vram__config_set_flag(&cfg, "--port", "8080", err, sizeof err), 0);
    assert_int_equal(cfg.port, 8080);
    assert_int_equal(vram__config_set_flag(&cfg, "--port=9090", NULL, err, sizeof err), 0);
    assert_int_equal(cfg.port, 9090);
    assert_int_equal(vram__config_set_flag(&cfg, "--idle-timeout", "5m", err, sizeof err), 0);
    assert_true(cfg.idle_timeout == 300.0);
    assert_int_equal(vram__config_set_flag(&cfg, "--gpu-budget", "50%", err, sizeof err), 0);
    assert_true(cfg.gpu_budget.percent == 50.0);
    assert_int_equal(vram__config_set_flag(&cfg, "--backend", "host", err, sizeof err), 0);
    assert_int_equal(cfg.backend, VRAM_BACKEND_HOST);
    assert_string_equal(vram__config_source(&cfg, "VRAM_PORT", NULL), "flag");
    vram_config before = cfg;
    assert_int_equal(vram__config_set_flag(&cfg, "--port", "65536", err, sizeof err), VRAM_ECONFIG);
    assert_string_equal(err, "--port: '65536' is out of range (use 0 to 65535)");
    assert_int_equal(vram__config_set_flag(&cfg, "--nope", "1", err, sizeof err), VRAM_ECONFIG);
    assert_string_equal(err, "unknown option '--nope'");
    assert_int_equal(vram__config_set_flag(&cfg, "--nope=1", NULL, err, sizeof err), VRAM_ECONFIG);
    assert_string_equal(err, "unknown option '--nope'");
    assert_int_equal(vram__config_set_flag(&cfg, "--port", NULL, err, sizeof err), VRAM_ECONFIG);
    assert_int_equal(vram__config_set_flag(&cfg, "VRAM_PORT", "1", err, sizeof err), VRAM_ECONFIG);
    assert_memory_equal(&cfg, &before, sizeof cfg);
}

/* ---- environment and .env ---- */

static void test_load_nothing(void **state)
{
    (void)state;
    vram_config cfg, def;
    char err[512];
    vram_config_init(&cfg);
    vram_config_init(&def);
    assert_int_equal(vram_config_load(&cfg, "/nonexistent/dir/.env", err, sizeof err), 0);
    assert_memory_equal(&cfg, &def, sizeof cfg);
    assert_int_equal(vram_config_load(&cfg, "", err, sizeof err), 0);
    assert_memory_equal(&cfg, &def, sizeof cfg);
    assert_string_equal(vram__config_source(&cfg, "VRAM_PORT", NULL), "default");
}

static void test_load_env_over_dotenv(void **state)
{
    (void)state;
    const char *path = write_env("VRAM_PORT=9000\n"
                                 "VRAM_CHUNK=128M\n"
                                 "GPU_IDLE_TIMEOUT=60\n"
                                 "NVIDIA_VISIBLE_DEVICES=1\n");
    setenv("VRAM_PORT", "8000", 1);
    setenv("VRAM_IDLE_TIMEOUT", "45", 1); /* the alias in the environment beats the .env */
    vram_config cfg;
    char err[512] = "";
    vram_config_init(&cfg);
    int rc = vram_config_load(&cfg, path, err, sizeof err);
    if (rc) print_error("%s\n", err);
    assert_int_equal(rc, 0);
    assert_int_equal(cfg.port, 8000);
    assert_int_equal(cfg.chunk_bytes, 128ULL << 20);
    assert_true(cfg.idle_timeout == 45.0);
    assert_string_equal(cfg.visible_devices, "1");
    const char *via = NULL;
    assert_string_equal(vram__config_source(&cfg, "VRAM_PORT", &via), "env");
    assert_string_equal(via, "VRAM_PORT");
    assert_string_equal(vram__config_source(&cfg, "VRAM_CHUNK", NULL), ".env");
    assert_string_equal(vram__config_source(&cfg, "GPU_IDLE_TIMEOUT", &via), "env");
    assert_string_equal(via, "VRAM_IDLE_TIMEOUT");
    assert_string_equal(vram__config_source(&cfg, "CUDA_VISIBLE_DEVICES", &via), ".env");
    assert_string_equal(via, "NVIDIA_VISIBLE_DEVICES");
    assert_string_equal(vram__config_source(&cfg, "VRAM_BIND", NULL), "default");
    assert_null(vram__config_source(&cfg, "FOO", NULL));
    /* a later change by hand shows as "set" */
    assert_int_equal(vram_config_set(&cfg, "VRAM_CHUNK", "1M", err, sizeof err), 0);
    assert_string_equal(vram__config_source(&cfg, "VRAM_CHUNK", NULL), "set");
    cfg.port = 1234;
    assert_string_equal(vram__config_source(&cfg, "VRAM_PORT", NULL), "set");
    cfg.port = 7861;
    assert_string_equal(vram__config_source(&cfg, "VRAM_PORT", NULL), "default");
    clear_env();
    remove_env();
}

static void test_load_primary_beats_alias(void **state)
{
    (void)state;
    const char *path = write_env("NVIDIA_VISIBLE_DEVICES=3\nCUDA_VISIBLE_DEVICES=2\n"
                                 "VRAM_IDLE_TIMEOUT=5\nGPU_IDLE_TIMEOUT=6\n");
    vram_config cfg;
    char err[512];
    vram_config_init(&cfg);
    assert_int_equal(vram_config_load(&cfg, path, err, sizeof err), 0);
    assert_string_equal(cfg.visible_devices, "2");
    assert_true(cfg.idle_timeout == 6.0);
    setenv("NVIDIA_VISIBLE_DEVICES", "1", 1);
    setenv("CUDA_VISIBLE_DEVICES", "0", 1);
    assert_int_equal(vram_config_load(&cfg, path, err, sizeof err), 0);
    assert_string_equal(cfg.visible_devices, "0");
    /* an empty variable in the environment is set (to every device here) */
    setenv("CUDA_VISIBLE_DEVICES", "", 1);
    assert_int_equal(vram_config_load(&cfg, path, err, sizeof err), 0);
    assert_string_equal(cfg.visible_devices, "");
    clear_env();
    remove_env();
}

static void test_load_bad_env_value(void **state)
{
    (void)state;
    vram_config cfg, before;
    char err[512];
    vram_config_init(&cfg);
    vram_config_set(&cfg, "VRAM_PORT", "1000", err, sizeof err);
    before = cfg;
    setenv("VRAM_CHUNK", "64M", 1);
    setenv("VRAM_GPU_BUDGET", "12X", 1);
    assert_int_equal(vram_config_load(&cfg, "", err, sizeof err), VRAM_ECONFIG);
    assert_string_equal(err, "VRAM_GPU_BUDGET: '12X' is not a size (use bytes with K/M/G/T, e.g. "
                             "8G, or a percentage, e.g. 80%)");
    assert_memory_equal(&cfg, &before, sizeof cfg);
    clear_env();
    setenv("VRAM_PORT", "", 1);
    assert_int_equal(vram_config_load(&cfg, "", err, sizeof err), VRAM_ECONFIG);
    assert_string_equal(err, "VRAM_PORT: '' is not a port (use 0 to 65535)");
    clear_env();
    setenv("NVIDIA_VISIBLE_DEVICES", "gpu0", 1);
    assert_int_equal(vram_config_load(&cfg, "", err, sizeof err), VRAM_ECONFIG);
    assert_non_null(strstr(err, "NVIDIA_VISIBLE_DEVICES: 'gpu0' is not a device list"));
    assert_memory_equal(&cfg, &before, sizeof cfg);
    clear_env();
}

static void test_dotenv_syntax(void **state)
{
    (void)state;
    const char *path = write_env("\xef\xbb\xbf# the seed's settings\n"
                                 "\n"
                                 "   \t\n"
                                 "  # indented comment\n"
                                 "GPU_IDLE_TIMEOUT=600   # seconds\n"
                                 "export VRAM_PORT=8123\n"
                                 "export\tVRAM_BIND = 0.0.0.0 \n"
                                 "VRAM_TOKEN=\"a\\\"b\\\\c\" # quoted\n"
                                 "VRAM_URL='http://h:1/#x'\n"
                                 "VRAM_CUDA_LIBRARY=/opt/cuda#1/libcuda.so\n"
                                 "VRAM_BACKEND=host\r\n"
                                 "VRAM_LOG_LEVEL=\"debug\"\r\n"
                                 "OTHER_KEY=anything at all $(not run)\n"
                                 "MODEL.PATH=/models\n"
                                 "VRAM_CHUNK=1M\n"
                                 "VRAM_CHUNK=2M\n" /* the last one wins */
                                 "VRAM_HOST_BUDGET=  '50%'  \n"
                                 "VRAM_RELEASE_TIMEOUT=\n"
                                 "VRAM_RELEASE_TIMEOUT=5\n"
                                 "VRAM_EVICT_WAIT=#7\n"
                                 "VRAM_EVICT_WAIT= #comment only\n"
                                 "VRAM_EVICT_WAIT=9");
    vram_config cfg;
    char err[512] = "";
    vram_config_init(&cfg);
    int rc = vram_config_load(&cfg, path, err, sizeof err);
    if (rc) print_error("%s\n", err);
    assert_int_equal(rc, 0);
    assert_true(cfg.idle_timeout == 600.0);
    assert_int_equal(cfg.port, 8123);
    assert_string_equal(cfg.bind, "0.0.0.0");
    assert_string_equal(cfg.token, "a\"b\\c");
    assert_string_equal(cfg.url, "http://h:1/#x");
    assert_string_equal(cfg.cuda_library, "/opt/cuda#1/libcuda.so");
    assert_int_equal(cfg.backend, VRAM_BACKEND_HOST);
    assert_int_equal(cfg.log_level, VRAM_LOG_DEBUG);
    assert_int_equal(cfg.chunk_bytes, 2ULL << 20);
    assert_true(cfg.host_budget.percent == 50.0);
    assert_true(cfg.release_timeout == 5.0);
    assert_true(cfg.evict_wait == 9.0);
    remove_env();
}

static void test_dotenv_escapes(void **state)
{
    (void)state;
    const char *path = write_env("VRAM_CUDA_LIBRARY=\"lib\\qcuda\"\n"
                                 "VRAM_BIND='a\\nb'\n"
                                 "VRAM_TOKEN=\"x\\ny\"\n");
    vram_config cfg;
    char err[512] = "";
    vram_config_init(&cfg);
    /* "\n" in double quotes is a newline, which the token refuses; single
     * quotes keep the backslash */
    assert_int_equal(vram_config_load(&cfg, path, err, sizeof err), VRAM_ECONFIG);
    assert_non_null(strstr(err, ":3: VRAM_TOKEN: "));
    assert_null(strstr(err, "x\\ny"));
    remove_env();
    path = write_env("VRAM_CUDA_LIBRARY=\"lib\\qcuda\"\nVRAM_URL='http://a\\b'\n");
    assert_int_equal(vram_config_load(&cfg, path, err, sizeof err), 0);
    assert_string_equal(cfg.cuda_library, "lib\\qcuda");
    assert_string_equal(cfg.url, "http://a\\b");
    remove_env();
}

/* Loads text as a .env and expects an error containing want. */
static void dotenv_bad(const char *text, size_t n, const char *want)
{
    const char *path = write_env_n(text, n);
    vram_config cfg, before;
    char err[512] = "";
    vram_config_init(&cfg);
    before = cfg;
    int rc = vram_config_load(&cfg, path, err, sizeof err);
    if (rc != VRAM_ECONFIG || !strstr(err, want) || !strstr(err, path))
        print_error("got %d '%s', want '%s'\n", rc, err, want);
    assert_int_equal(rc, VRAM_ECONFIG);
    assert_non_null(strstr(err, want));
    assert_non_null(strstr(err, path));
    assert_memory_equal(&cfg, &before, sizeof cfg);
    remove_env();
}

#define DOTENV_BAD(text, want) dotenv_bad(text, sizeof(text) - 1, want)

static void test_dotenv_errors(void **state)
{
    (void)state;
    DOTENV_BAD("VRAM_PORT=1\nJUSTAWORD\n", ":2: expected KEY=VALUE, found no '='");
    DOTENV_BAD("export VRAM_PORT\n", ":1: expected KEY=VALUE");
    DOTENV_BAD("FOO BAR=1\n", ":1: 'FOO BAR' is not a variable name");
    DOTENV_BAD("=1\n", ":1: '' is not a variable name");
    DOTENV_BAD("1X=1\n", ":1: '1X' is not a variable name");
    DOTENV_BAD("VRAM_TOKEN=\"abc\n", ":1: VRAM_TOKEN: unterminated double-quoted value");
    DOTENV_BAD("OTHER='abc\n", ":1: OTHER: unterminated single-quoted value");
    DOTENV_BAD("VRAM_PORT=\"1\" 2\n", ":1: VRAM_PORT: unexpected text after the closing quote");
    DOTENV_BAD("# ok\nVRAM_GPU_BUDGET=12X\n",
               ":2: VRAM_GPU_BUDGET: '12X' is not a size (use bytes with K/M/G/T, e.g. 8G, or a "
               "percentage, e.g. 80%)");
    DOTENV_BAD("VRAM_PORT=\n", ":1: VRAM_PORT: '' is not a port");
    DOTENV_BAD("GPU_IDLE_TIMEOUT=-5\n", ":1: GPU_IDLE_TIMEOUT: '-5' is negative");
    DOTENV_BAD("VRAM_IDLE_TIMEOUT=nan\n", ":1: VRAM_IDLE_TIMEOUT: 'nan' is not a duration");
    DOTENV_BAD("VRAM_PORT=1\0002\n", ":1: line contains a NUL byte");
    /* a value that is too long for any option */
    {
        char text[600];
        int n = snprintf(text, sizeof text, "VRAM_CUDA_LIBRARY=");
        memset(text + n, 'x', 300);
        memcpy(text + n + 300, "\n", 2);
        dotenv_bad(text, strlen(text), ":1: VRAM_CUDA_LIBRARY: value is too long (300 bytes");
    }
}

static void test_dotenv_long_lines(void **state)
{
    (void)state;
    /* a line of exactly 4096 bytes is fine, with \n or \r\n or at the end */
    static char text[3 * VRAM_ENV_LINE_MAX + 64];
    const char *tails[] = {"\n", "\r\n", ""};
    for (int t = 0; t < 3; t++) {
        memcpy(text, "# ", 2);
        memset(text + 2, 'c', VRAM_ENV_LINE_MAX - 2);
        strcpy(text + VRAM_ENV_LINE_MAX, tails[t]);
        strcat(text, t == 2 ? "" : "VRAM_PORT=99\n");
        const char *path = write_env(text);
        vram_config cfg;
        char err[512] = "";
        vram_config_init(&cfg);
        int rc = vram_config_load(&cfg, path, err, sizeof err);
        if (rc) print_error("%s\n", err);
        assert_int_equal(rc, 0);
        assert_int_equal(cfg.port, t == 2 ? 7861 : 99);
        remove_env();
    }
    /* one byte more is refused, also at the end of the file and far longer */
    size_t lens[] = {VRAM_ENV_LINE_MAX + 1, VRAM_ENV_LINE_MAX + 2, 3 * VRAM_ENV_LINE_MAX};
    for (int i = 0; i < 3; i++) {
        for (int nl = 0; nl < 2; nl++) {
            memcpy(text, "VRAM_PORT=1\n# ", 14);
            memset(text + 14, 'c', lens[i] - 2);
            text[12 + lens[i]] = '\0';
            if (nl) strcat(text, "\r\n");
            dotenv_bad(text, strlen(text), ":2: line is longer than 4096 bytes");
        }
    }
}

static void test_dotenv_unreadable(void **state)
{
    (void)state;
    vram_config cfg;
    char err[512] = "";
    vram_config_init(&cfg);
    assert_int_equal(vram_config_load(&cfg, "/tmp", err, sizeof err), VRAM_ECONFIG);
    assert_non_null(strstr(err, "/tmp: cannot read"));
}

static void test_dotenv_default_path(void **state)
{
    (void)state;
    char old[4096];
    assert_non_null(getcwd(old, sizeof old));
    char dir[] = "/tmp/vram-test-cwd-XXXXXX";
    assert_non_null(mkdtemp(dir));
    assert_int_equal(chdir(dir), 0);
    FILE *f = fopen(".env", "w");
    assert_non_null(f);
    fputs("GPU_IDLE_TIMEOUT=123\nOPENAI_API_KEY=sk-whatever\n", f);
    fclose(f);
    vram_config cfg;
    char err[512] = "";
    vram_config_init(&cfg);
    int rc = vram_config_load(&cfg, NULL, err, sizeof err);
    unlink(".env");
    assert_int_equal(chdir(old), 0);
    rmdir(dir);
    assert_int_equal(rc, 0);
    assert_true(cfg.idle_timeout == 123.0);
}

/* ---- printing ---- */

static char *print_to_string(const vram_config *cfg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    vram_options_print(cfg, f);
    fclose(f);
    return buf;
}

static void test_print(void **state)
{
    (void)state;
    const char *path = write_env("VRAM_CHUNK=2M\n");
    setenv("VRAM_TOKEN", "top-secret-value", 1);
    setenv("NVIDIA_VISIBLE_DEVICES", "0", 1);
    vram_config cfg;
    char err[512];
    vram_config_init(&cfg);
    assert_int_equal(vram_config_load(&cfg, path, err, sizeof err), 0);
    assert_int_equal(vram_config_set(&cfg, "VRAM_PORT", "9999", err, sizeof err), 0);
    char *out = print_to_string(&cfg);
    assert_null(strstr(out, "top-secret-value"));
    /* one line per option, in table order, values aligned */
    size_t lines = 0;
    int col = -1;
    for (char *line = out; *line; lines++) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        *nl = '\0';
        const vram__option_desc *d = vram__config_option(lines);
        assert_non_null(d);
        assert_true(strncmp(line, d->name, strlen(d->name)) == 0);
        assert_non_null(strstr(line, d->help));
        char *v = line + strlen(d->name);
        while (*v == ' ')
            v++;
        if (col < 0) col = (int)(v - line);
        assert_int_equal((int)(v - line), col);
        if (strcmp(d->name, "VRAM_TOKEN") == 0) {
            assert_non_null(strstr(line, "(set)"));
            assert_non_null(strstr(line, "(env)"));
        }
        if (strcmp(d->name, "VRAM_CHUNK") == 0) assert_non_null(strstr(line, "2M"));
        if (strcmp(d->name, "VRAM_CHUNK") == 0) assert_non_null(strstr(line, "(.env)"));
        if (strcmp(d->name, "VRAM_PORT") == 0) assert_non_null(strstr(line, "9999"));
        if (strcmp(d->name, "VRAM_PORT") == 0) assert_non_null(strstr(line, "(set)"));
        if (strcmp(d->name, "VRAM_BIND") == 0) assert_non_null(strstr(line, "(default)"));
        if (strcmp(d->name, "VRAM_GPU_BUDGET") == 0) assert_non_null(strstr(line, "100%"));
        if (strcmp(d->name, "CUDA_VISIBLE_DEVICES") == 0)
            assert_non_null(strstr(line, "(env: NVIDIA_VISIBLE_DEVICES)"));
        line = nl + 1;
    }
    assert_int_equal(lines, vram__config_option_count());
    free(out);
    /* a copy has no recorded sources: changed values print as "set" (static:
     * an address no earlier test used) */
    static vram_config copy;
    copy = cfg;
    out = print_to_string(&copy);
    assert_null(strstr(out, "top-secret-value"));
    assert_null(strstr(out, "(env"));
    assert_non_null(strstr(out, "(set)"));
    free(out);
    /* NULL prints the defaults; init forgets what a config address had */
    out = print_to_string(NULL);
    assert_null(strstr(out, "(set)"));
    assert_null(strstr(out, "(env"));
    free(out);
    vram_config_init(&cfg);
    out = print_to_string(&cfg);
    assert_null(strstr(out, "(env"));
    assert_null(strstr(out, "(set)"));
    free(out);
    clear_env();
    remove_env();
}

static void test_help(void **state)
{
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    vram__config_print_help(f);
    fclose(f);
    for (size_t i = 0; i < vram__config_option_count(); i++) {
        const vram__option_desc *d = vram__config_option(i);
        assert_non_null(strstr(buf, d->flag));
        assert_non_null(strstr(buf, d->name));
        if (d->alias) assert_non_null(strstr(buf, d->alias));
    }
    assert_non_null(strstr(buf, "default 100%"));
    assert_non_null(strstr(buf, "GPU_IDLE_TIMEOUT or VRAM_IDLE_TIMEOUT, default 600"));
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_defaults, setup),
        cmocka_unit_test_setup(test_table_is_consistent, setup),
        cmocka_unit_test_setup(test_token_file, setup),
        cmocka_unit_test_setup(test_format_round_trips, setup),
        cmocka_unit_test_setup(test_parse_size_good, setup),
        cmocka_unit_test_setup(test_parse_size_bad, setup),
        cmocka_unit_test_setup(test_backend, setup),
        cmocka_unit_test_setup(test_log_level, setup),
        cmocka_unit_test_setup(test_seconds_good, setup),
        cmocka_unit_test_setup(test_seconds_bad, setup),
        cmocka_unit_test_setup(test_budgets, setup),
        cmocka_unit_test_setup(test_host_memory, setup),
        cmocka_unit_test_setup(test_chunk, setup),
        cmocka_unit_test_setup(test_host_devices, setup),
        cmocka_unit_test_setup(test_port, setup),
        cmocka_unit_test_setup(test_visible_devices, setup),
        cmocka_unit_test_setup(test_strings, setup),
        cmocka_unit_test_setup(test_token_never_shown, setup),
        cmocka_unit_test_setup(test_unknown_option, setup),
        cmocka_unit_test_setup(test_error_quotes_odd_bytes, setup),
        cmocka_unit_test_setup(test_set_flag, setup),
        cmocka_unit_test_setup(test_load_nothing, setup),
        cmocka_unit_test_setup(test_load_env_over_dotenv, setup),
        cmocka_unit_test_setup(test_load_primary_beats_alias, setup),
        cmocka_unit_test_setup(test_load_bad_env_value, setup),
        cmocka_unit_test_setup(test_dotenv_syntax, setup),
        cmocka_unit_test_setup(test_dotenv_escapes, setup),
        cmocka_unit_test_setup(test_dotenv_errors, setup),
        cmocka_unit_test_setup(test_dotenv_long_lines, setup),
        cmocka_unit_test_setup(test_dotenv_unreadable, setup),
        cmocka_unit_test_setup(test_dotenv_default_path, setup),
        cmocka_unit_test_setup(test_print, setup),
        cmocka_unit_test_setup(test_help, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
