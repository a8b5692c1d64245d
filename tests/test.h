/* test.h: the project's minimal unit-test helper.
 *
 * A test file defines functions `static void test_x(void)` and a main that
 * calls TEST_RUN(test_x) for each, then returns TEST_DONE(). Checks record a
 * failure with file:line and carry on. TEST_DONE prints
 * "<file>: N passed, N failed" and returns the exit status.
 * TEST_SKIP_ALL(reason) exits 77, which meson reports as SKIP.
 * test_require_model() returns the real model's path for e2e tests.
 */
#ifndef SGL_TEST_H
#define SGL_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int test_n_passed, test_n_failed, test_cur_failed;
static const char *test_cur_name = "";

#define TEST_FAIL_(...)                                                          \
    do {                                                                         \
        test_cur_failed = 1;                                                     \
        fprintf(stderr, "%s:%d: %s: ", __FILE__, __LINE__, test_cur_name);       \
        fprintf(stderr, __VA_ARGS__);                                            \
        fputc('\n', stderr);                                                     \
    } while (0)

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (!(cond)) TEST_FAIL_("check failed: %s", #cond);                      \
    } while (0)
#define CHECK_MSG(cond, ...)                                                     \
    do {                                                                         \
        if (!(cond)) TEST_FAIL_(__VA_ARGS__);                                    \
    } while (0)
#define CHECK_INT(a, b)                                                          \
    do {                                                                         \
        long long a_ = (long long)(a), b_ = (long long)(b);                      \
        if (a_ != b_) TEST_FAIL_("%s == %s: %lld != %lld", #a, #b, a_, b_);      \
    } while (0)
#define CHECK_STR(a, b)                                                          \
    do {                                                                         \
        const char *a_ = (a), *b_ = (b);                                         \
        if (!a_ || !b_ || strcmp(a_, b_) != 0)                                   \
            TEST_FAIL_("%s == %s:\n  got:      \"%s\"\n  expected: \"%s\"", #a, #b, \
                       a_ ? a_ : "(null)", b_ ? b_ : "(null)");                  \
    } while (0)
#define CHECK_NEAR(a, b, tol)                                                    \
    do {                                                                         \
        double a_ = (double)(a), b_ = (double)(b);                               \
        if (!(fabs(a_ - b_) <= (tol)))                                           \
            TEST_FAIL_("%s ~= %s: %.9g vs %.9g (tol %g)", #a, #b, a_, b_, (double)(tol)); \
    } while (0)

#define TEST_RUN(fn)                                                             \
    do {                                                                         \
        test_cur_name = #fn;                                                     \
        test_cur_failed = 0;                                                     \
        fn();                                                                    \
        if (test_cur_failed) test_n_failed++;                                    \
        else test_n_passed++;                                                    \
    } while (0)

#define TEST_DONE()                                                              \
    (printf("%s: %d passed, %d failed\n", __FILE__, test_n_passed, test_n_failed), \
     test_n_failed ? 1 : 0)

#define TEST_SKIP_ALL(...)                                                       \
    do {                                                                         \
        printf("SKIP: ");                                                        \
        printf(__VA_ARGS__);                                                     \
        printf("\n");                                                            \
        exit(77);                                                                \
    } while (0)

/* Returns $SGL_TEST_MODEL when that file is readable. Otherwise exits: with
 * status 1 when CI=true (CI installs the model, so its absence is a failure),
 * else with 77 (skip). */
static inline const char *test_require_model(void) {
    const char *path = getenv("SGL_TEST_MODEL");
    if (path && access(path, R_OK) == 0) return path;
    const char *ci = getenv("CI");
    if (ci && strcmp(ci, "true") == 0) {
        printf("model %s missing (CI=true)\n", path ? path : "(SGL_TEST_MODEL unset)");
        exit(1);
    }
    TEST_SKIP_ALL("model %s not found", path ? path : "(SGL_TEST_MODEL unset)");
    return NULL;
}

#endif
