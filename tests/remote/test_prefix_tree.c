/* test_prefix_tree: the router's approximate radix tree (runtime/remote/
 * prefix_tree.h) against a brute-force model (the longest common prefix with
 * any inserted string) under random inserts and matches over a small
 * alphabet, so edges split often; and the byte budget that clears it. */
#include "runtime/remote/prefix_tree.h"

#include "tests/test.h"

static size_t lcp(const char *a, size_t na, const char *b, size_t nb) {
    size_t k = 0;
    while (k < na && k < nb && a[k] == b[k]) k++;
    return k;
}

static void rand_str(char *s, size_t *n, unsigned *seed) {
    *n = (size_t)(rand_r(seed) % 24);
    for (size_t i = 0; i < *n; i++) s[i] = (char)('a' + rand_r(seed) % 3);
}

static void test_against_brute_force(void) {
    enum { N = 3000 };
    static char strs[N][32];
    static size_t lens[N];
    size_t n = 0;
    unsigned seed = 12345;
    remote_tree *t = remote_tree_new(0);
    CHECK(t != NULL);
    for (int step = 0; step < 20000; step++) {
        char q[32];
        size_t ql;
        rand_str(q, &ql, &seed);
        if (rand_r(&seed) % 3 == 0 && n < N) {
            CHECK_INT(remote_tree_insert(t, q, ql), 0);
            memcpy(strs[n], q, ql);
            lens[n++] = ql;
        } else {
            size_t want = 0;
            for (size_t i = 0; i < n; i++) {
                size_t k = lcp(strs[i], lens[i], q, ql);
                if (k > want) want = k;
            }
            CHECK_INT(remote_tree_match(t, q, ql), want);
        }
    }
    remote_tree_free(t);
}

static void test_budget(void) {
    remote_tree *t = remote_tree_new(10);
    CHECK_INT(remote_tree_insert(t, "abcdefgh", 8), 0);
    CHECK_INT(remote_tree_match(t, "abcdxx", 6), 4);
    CHECK_INT(remote_tree_insert(t, "zzzzz", 5), 0); /* over budget: relearn */
    CHECK_INT(remote_tree_match(t, "abcdxx", 6), 0);
    CHECK_INT(remote_tree_match(t, "zzz", 3), 3);
    CHECK(remote_tree_bytes(t) <= 10);
    remote_tree_free(t);
}

int main(void) {
    TEST_RUN(test_against_brute_force);
    TEST_RUN(test_budget);
    return TEST_DONE();
}
