/* test_tools_api.c - unit tests of vram.h's "For tools" section (flags, GPU pick, checksum). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "vram.h"

static void test_set_flag_sets_the_option(void **state)
{
    (void)state;
    vram_config cfg;
    vram_config_init(&cfg);
    char err[256] = "";
    assert_int_equal(vram_config_set_flag(&cfg, "--port", "7000", err, sizeof err), 0);
    assert_int_equal(cfg.port, 7000);
    assert_int_equal(vram_config_set_flag(&cfg, "--url=http://h:1", NULL, err, sizeof err), 0);
    assert_string_equal(cfg.url, "http://h:1");
}

static void test_set_flag_bad_value_names_the_flag(void **state)
{
    (void)state;
    vram_config cfg;
    vram_config_init(&cfg);
    char err[256] = "";
    assert_int_equal(vram_config_set_flag(&cfg, "--port", "nope", err, sizeof err), VRAM_ECONFIG);
    assert_non_null(strstr(err, "--port"));
    assert_int_equal(cfg.port, 7861); /* unchanged */
    assert_int_equal(vram_config_set_flag(&cfg, "--no-such-flag", "1", err, sizeof err),
                     VRAM_ECONFIG);
}

static void test_print_help_lists_flags_and_variables(void **state)
{
    (void)state;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    vram_config_print_help(f);
    fclose(f);
    assert_non_null(strstr(text, "--gpu-budget"));
    assert_non_null(strstr(text, "VRAM_GPU_BUDGET"));
    free(text);
}

static void test_gpu_pick_without_nvml_is_enodev(void **state)
{
    (void)state;
    setenv("VRAM_NVML_LIBRARY", "/nonexistent/libnvidia-ml.so.1", 1);
    char uuid[128] = "", why[1024] = "";
    int index = -7;
    assert_int_equal(vram_gpu_pick(uuid, sizeof uuid, &index, why, sizeof why), VRAM_ENODEV);
    assert_non_null(strstr(why, "/nonexistent/libnvidia-ml.so.1"));
    unsetenv("VRAM_NVML_LIBRARY");
}

static void test_checksum_in_pieces_equals_whole(void **state)
{
    (void)state;
    size_t n = 100003; /* a tail that is not a whole word */
    unsigned char *b = malloc(n);
    assert_non_null(b);
    vram_synthetic_fill(5, 0, b, n);
    uint64_t whole = vram_checksum(b, n);
    assert_int_equal(vram_checksum_finish(vram_checksum_update(0, b, n, 0), n), whole);
    /* pieces of 8 KiB, added last to first */
    uint64_t sum = 0;
    size_t piece = 8192;
    for (size_t off = (n - 1) / piece * piece;; off -= piece) {
        size_t k = n - off < piece ? n - off : piece;
        sum = vram_checksum_update(sum, b + off, k, off);
        if (off == 0) break;
    }
    assert_int_equal(vram_checksum_finish(sum, n), whole);
    free(b);
}

static void test_checksum_of_nothing(void **state)
{
    (void)state;
    assert_int_equal(vram_checksum_finish(vram_checksum_update(0, NULL, 0, 0), 0),
                     vram_checksum(NULL, 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_flag_sets_the_option),
        cmocka_unit_test(test_set_flag_bad_value_names_the_flag),
        cmocka_unit_test(test_print_help_lists_flags_and_variables),
        cmocka_unit_test(test_gpu_pick_without_nvml_is_enodev),
        cmocka_unit_test(test_checksum_in_pieces_equals_whole),
        cmocka_unit_test(test_checksum_of_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
