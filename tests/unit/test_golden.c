/* test_golden.c - vram_checksum, vram_synthetic_fill and a model's checksum against golden vectors computed from vram.h's definitions by tests/golden/make_golden.py. */
#include <inttypes.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "vram.h"

/* The values come from an implementation written from include/vram.h's
 * text (tests/golden/make_golden.py), not from the C code under test:
 * a change of the checksum or the synthetic bytes, on the host or the
 * device, fails here and in the HTTP and CLI tests that use the same file. */

static json_t *g_golden;

static int load_golden(void **state)
{
    (void)state;
    json_error_t e;
    g_golden = json_load_file(VRAM_SOURCE_DIR "/tests/golden/golden.json", 0, &e);
    if (!g_golden) fail_msg("tests/golden/golden.json: %s (line %d)", e.text, e.line);
    return 0;
}

static int free_golden(void **state)
{
    (void)state;
    json_decref(g_golden);
    return 0;
}

static uint64_t hex64(const char *s)
{
    assert_non_null(s);
    return strtoull(s, NULL, 16);
}

static void pattern(unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)((i * 7 + 3) & 0xff);
}

static void test_checksum_golden(void **state)
{
    (void)state;
    json_t *cases = json_object_get(g_golden, "checksum");
    assert_true(json_array_size(cases) >= 10);
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c) {
        size_t n = (size_t)json_integer_value(json_object_get(c, "pattern_len"));
        uint64_t want = hex64(json_string_value(json_object_get(c, "checksum")));
        unsigned char *p = malloc(n + 1);
        assert_non_null(p);
        pattern(p, n);
        uint64_t got = vram_checksum(n ? p : NULL, n);
        if (got != want)
            fail_msg("checksum of %zu pattern bytes: %016" PRIx64 ", golden %016" PRIx64, n, got,
                     want);
        /* in pieces of 8 bytes, out of order */
        uint64_t sum = 0;
        for (size_t off = (n / 8) * 8 + 8; off >= 8; off -= 8) {
            size_t at = off - 8;
            if (at >= n) continue;
            size_t k = n - at < 8 ? n - at : 8;
            sum = vram_checksum_update(sum, p + at, k, at);
        }
        assert_true(vram_checksum_finish(sum, n) == want);
        free(p);
    }
}

static void test_synthetic_golden(void **state)
{
    (void)state;
    json_t *cases = json_object_get(g_golden, "synthetic");
    assert_true(json_array_size(cases) >= 5);
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c) {
        uint64_t seed = strtoull(json_string_value(json_object_get(c, "seed")), NULL, 10);
        uint64_t off = (uint64_t)json_integer_value(json_object_get(c, "offset"));
        const char *hex = json_string_value(json_object_get(c, "hex"));
        size_t n = strlen(hex) / 2;
        unsigned char got[256];
        assert_true(n <= sizeof got);
        vram_synthetic_fill(seed, off, got, n);
        for (size_t j = 0; j < n; j++) {
            unsigned int b;
            sscanf(hex + 2 * j, "%2x", &b);
            if (got[j] != b)
                fail_msg("synthetic seed %" PRIu64 " byte %" PRIu64 ": %02x, golden %02x", seed,
                         off + j, got[j], b);
        }
    }
}

/* The checksum of whole synthetic sources, computed by the library over
 * host bytes and by a manager over a loaded (and restored) model. */
static void test_sources_golden(void **state)
{
    (void)state;
    json_t *src = json_object_get(g_golden, "sources");
    const char *want_s = json_string_value(json_object_get(src, "4M:4"));
    const char *small_s = json_string_value(json_object_get(src, "1000:9"));
    assert_non_null(want_s);
    assert_non_null(small_s);

    size_t n = 4u << 20;
    unsigned char *p = malloc(n);
    assert_non_null(p);
    vram_synthetic_fill(4, 0, p, n);
    assert_true(vram_checksum(p, n) == hex64(want_s));
    vram_synthetic_fill(9, 0, p, 1000);
    assert_true(vram_checksum(p, 1000) == hex64(small_s));
    free(p);

    vram_config cfg;
    vram_config_init(&cfg);
    cfg.backend = VRAM_BACKEND_HOST;
    cfg.host_memory = 16u << 20;
    cfg.log_level = VRAM_LOG_ERROR;
    cfg.no_monitor_thread = 1;
    vram_manager *m = NULL;
    assert_int_equal(vram_manager_create(&cfg, &m), 0);
    const char *specs[2] = {"synthetic:4M:4", "synthetic:1000:9"};
    const char *wants[2] = {want_s, small_s};
    for (int k = 0; k < 2; k++) {
        vram_model_opts o;
        vram_model_opts_init(&o);
        o.source = specs[k];
        vram_model *model = NULL;
        assert_int_equal(vram_manager_register(m, specs[k] + 10, &o, &model), 0);
        for (int cycle = 0; cycle < 2; cycle++) { /* load, then a restore */
            vram_lease *l = NULL;
            assert_int_equal(vram_model_acquire(model, &l), 0);
            uint64_t got = 0;
            assert_int_equal(vram_model_checksum(model, &got), 0);
            if (got != hex64(wants[k]))
                fail_msg("%s cycle %d: device checksum %016" PRIx64 ", golden %s", specs[k], cycle,
                         got, wants[k]);
            vram_lease_end(l);
            assert_int_equal(vram_model_offload(model, VRAM_WAIT), 0);
            assert_int_equal(vram_model_checksum(model, &got), 0); /* of the backup */
            assert_true(got == hex64(wants[k]));
        }
    }
    vram_manager_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checksum_golden),
        cmocka_unit_test(test_synthetic_golden),
        cmocka_unit_test(test_sources_golden),
    };
    return cmocka_run_group_tests_name("golden", tests, load_golden, free_golden);
}
