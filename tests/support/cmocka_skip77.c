/* cmocka_skip77.c - linked into every unit test (-Wl,--wrap): a run in which a case called skip() exits 77, so CTest reports it Skipped, not Passed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

/* cmocka's skip() marks the case skipped and returns 0 from the run, so a
 * test binary whose every GPU case skipped looked like a pass. These wrap
 * the two entry points: skips are counted and printed where they happen,
 * and a run with no failure but a skip exits with 77 (SKIP_RETURN_CODE). */

void __real__skip(const char *const file, const int line);
int __real__cmocka_run_group_tests(const char *group_name, const struct CMUnitTest *const tests,
                                   const size_t num_tests, CMFixtureFunction group_setup,
                                   CMFixtureFunction group_teardown);

static int skipped;

void __wrap__skip(const char *const file, const int line);
void __wrap__skip(const char *const file, const int line)
{
    skipped++;
    fprintf(stderr, "SKIP %s:%d\n", file, line);
    __real__skip(file, line);
}

int __wrap__cmocka_run_group_tests(const char *group_name, const struct CMUnitTest *const tests,
                                   const size_t num_tests, CMFixtureFunction group_setup,
                                   CMFixtureFunction group_teardown);
int __wrap__cmocka_run_group_tests(const char *group_name, const struct CMUnitTest *const tests,
                                   const size_t num_tests, CMFixtureFunction group_setup,
                                   CMFixtureFunction group_teardown)
{
    int failed = __real__cmocka_run_group_tests(group_name, tests, num_tests, group_setup,
                                                group_teardown);
    if (failed == 0 && skipped > 0) {
        printf("%s: %d case(s) skipped: exit 77 (CTest: Skipped)\n", group_name, skipped);
        fflush(stdout);
        return 77;
    }
    return failed;
}
