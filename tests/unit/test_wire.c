/* test_wire.c - the node socket's line format: round trips, hostile lines, the line reader. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "base/wire.h"

static void test_round_trip(void **state)
{
    (void)state;
    vram__wire_out o;
    vram__wire_begin(&o, "model");
    vram__wire_str(&o, "name", "Llasa 8B=tts%\n\"x\"");
    vram__wire_uint(&o, "bytes", 17179869184ULL);
    vram__wire_num(&o, "idle", 1.5);
    vram__wire_str(&o, "empty", "");
    vram__wire_str(&o, "utf8", "模型");
    long len = vram__wire_end(&o);
    assert_true(len > 0);
    assert_int_equal(o.buf[len - 1], '\n');
    assert_null(memchr(o.buf, '\n', (size_t)len - 1)); /* one line, whatever the values hold */
    o.buf[len - 1] = '\0';
    vram__wire_msg m;
    assert_int_equal(vram__wire_parse(o.buf, &m), 0);
    assert_string_equal(m.verb, "model");
    assert_string_equal(vram__wire_get(&m, "name"), "Llasa 8B=tts%\n\"x\"");
    assert_string_equal(vram__wire_get(&m, "empty"), "");
    assert_string_equal(vram__wire_get(&m, "utf8"), "模型");
    uint64_t b = 0;
    assert_int_equal(vram__wire_u64(&m, "bytes", &b), 0);
    assert_true(b == 17179869184ULL);
    double d = 0;
    assert_int_equal(vram__wire_dbl(&m, "idle", &d), 0);
    assert_true(d == 1.5);
    assert_null(vram__wire_get(&m, "missing"));
}

static void test_hostile_lines(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",                 /* no verb */
        "   ",              /* no verb */
        "HELLO v=1",        /* verbs are lower case */
        "hello v",          /* a field without '=' */
        "hello =1",         /* an empty key */
        "hello v=%4",       /* a cut escape */
        "hello v=%zz",      /* not hex */
        "hello v=%00",      /* an encoded NUL */
        "hello v=1\x01",    /* a control byte */
        "hello\tv=1",       /* a tab */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char line[64];
        snprintf(line, sizeof line, "%s", bad[i]);
        vram__wire_msg m;
        assert_int_equal(vram__wire_parse(line, &m), -1);
    }
    /* too many fields */
    char many[VRAM_WIRE_LINE_MAX];
    size_t n = (size_t)snprintf(many, sizeof many, "model");
    for (int i = 0; i < VRAM_WIRE_FIELDS_MAX + 1; i++)
        n += (size_t)snprintf(many + n, sizeof many - n, " k%d=v", i);
    vram__wire_msg m;
    assert_int_equal(vram__wire_parse(many, &m), -1);
    /* numbers */
    char line[128];
    snprintf(line, sizeof line, "need id=-1 bytes=18446744073709551616 dev=1e3 x=nan y=12abc");
    assert_int_equal(vram__wire_parse(line, &m), 0);
    uint64_t u;
    long l;
    double d;
    assert_int_equal(vram__wire_u64(&m, "id", &u), -1);
    assert_int_equal(vram__wire_u64(&m, "bytes", &u), -1); /* 2^64 overflows */
    assert_int_equal(vram__wire_int(&m, "dev", 0, 16, &l), -1);
    assert_int_equal(vram__wire_dbl(&m, "x", &d), -1);
    assert_int_equal(vram__wire_dbl(&m, "y", &d), -1);
    assert_int_equal(vram__wire_int(&m, "id", 0, 16, &l), -1); /* below lo */
}

static void test_overflow(void **state)
{
    (void)state;
    vram__wire_out o;
    vram__wire_begin(&o, "model");
    char big[3000];
    memset(big, ' ', sizeof big - 1); /* every blank is 3 bytes encoded */
    big[sizeof big - 1] = '\0';
    vram__wire_str(&o, "name", big);
    assert_int_equal(vram__wire_end(&o), -1);
}

static void test_reader(void **state)
{
    (void)state;
    vram__wire_reader r;
    memset(&r, 0, sizeof r);
    size_t room;
    char *at = vram__wire_space(&r, &room);
    assert_true(room == VRAM_WIRE_LINE_MAX);
    const char *in = "one a=1\ntw";
    memcpy(at, in, strlen(in));
    vram__wire_wrote(&r, strlen(in));
    char *line = vram__wire_next(&r);
    assert_non_null(line);
    assert_string_equal(line, "one a=1");
    assert_null(vram__wire_next(&r)); /* "tw" is not a whole line yet */
    at = vram__wire_space(&r, &room);
    memcpy(at, "o\0b=2\n", 6); /* a NUL inside a line */
    vram__wire_wrote(&r, 6);
    line = vram__wire_next(&r);
    assert_non_null(line);
    vram__wire_msg m;
    assert_int_equal(vram__wire_parse(line, &m), -1); /* rejected, not cut short */
    /* a line that never ends fills the buffer: room 0 tells the caller */
    at = vram__wire_space(&r, &room);
    memset(at, 'x', room);
    vram__wire_wrote(&r, room);
    assert_null(vram__wire_next(&r));
    vram__wire_space(&r, &room);
    assert_true(room == 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_hostile_lines),
        cmocka_unit_test(test_overflow),
        cmocka_unit_test(test_reader),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
