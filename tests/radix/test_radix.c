/* test_radix: unit tests of the radix cache: splits on insert and on match,
 * slot ownership on insert, locks, LRU eviction order, and out-of-memory
 * leaving the tree intact. */
#include <stdlib.h>
#include <string.h>

#include "runtime/radix_cache.h"
#include "tests/test.h"

static kv_pool *pool_make(int32_t n) {
    kv_pool *p = kv_pool_new(n, 0, 0, NULL);
    if (!p) {
        fprintf(stderr, "kv_pool_new failed\n");
        exit(1);
    }
    return p;
}

/* Inserts toks with freshly allocated slots; returns insert's result. */
static int32_t put(radix_cache *rc, kv_pool *p, const int32_t *toks, int32_t n, int32_t *slots) {
    int32_t tmp[64];
    int32_t *s = slots ? slots : tmp;
    if (kv_pool_alloc(p, n, s) < 0) return -2;
    sgl_error err;
    int32_t r = radix_insert(rc, toks, s, n, &err);
    if (r < 0) fprintf(stderr, "insert: %s\n", err.msg);
    return r;
}

static void check_ok(radix_cache *rc) {
    sgl_error err;
    int r = radix_check(rc, &err);
    CHECK_MSG(r == 0, "radix_check: %s", err.msg);
}

static char *dump_str(radix_cache *rc) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    radix_dump(rc, f);
    fclose(f);
    return buf;
}

static void test_insert_split(void) {
    kv_pool *p = pool_make(32);
    radix_cache *rc = radix_new(p);
    int32_t a[] = {1, 2, 3, 4}, b[] = {1, 2, 5, 6};
    CHECK_INT(put(rc, p, a, 4, NULL), 0);
    CHECK_INT(radix_node_count(rc), 1);
    CHECK_INT(put(rc, p, b, 4, NULL), 2);
    /* "1 2" split off: [1 2] -> {[3 4], [5 6]} */
    CHECK_INT(radix_node_count(rc), 3);
    CHECK_INT(radix_cached_tokens(rc), 6);
    CHECK_INT(kv_pool_free_count(p), 32 - 6); /* b's duplicate slots for "1 2" went back */
    const radix_node *root = radix_root(rc);
    CHECK_INT(root->n_children, 1);
    const radix_node *top = root->children[0];
    CHECK_INT(top->len, 2);
    CHECK_INT(top->n_children, 2);
    CHECK_INT(top->children[0]->tokens[0], 3);
    CHECK_INT(top->children[1]->tokens[0], 5);
    check_ok(rc);
    radix_free(rc);
    CHECK_INT(kv_pool_free_count(p), 32);
    kv_pool_free(p);
}

static void test_match_mid_edge(void) {
    kv_pool *p = pool_make(16);
    radix_cache *rc = radix_new(p);
    int32_t a[] = {7, 8, 9, 10}, sa[4];
    CHECK_INT(put(rc, p, a, 4, sa), 0);
    int32_t q[] = {7, 8, 9, 11}, out[4];
    CHECK_INT(radix_peek(rc, q, 4), 3);
    CHECK_INT(radix_node_count(rc), 1); /* peek changes nothing */
    radix_match_result res;
    CHECK_INT(radix_match(rc, q, 4, out, &res), 3);
    CHECK_INT(res.len, 3);
    CHECK(memcmp(out, sa, sizeof(int32_t) * 3) == 0);
    CHECK_INT(radix_node_count(rc), 2);
    CHECK_INT(res.last_node->len, 3);
    CHECK_INT(res.last_node->n_children, 1);
    CHECK_INT(res.last_node->children[0]->tokens[0], 10);
    /* full match of a node boundary: no further split */
    CHECK_INT(radix_match(rc, a, 4, out, &res), 4);
    CHECK_INT(radix_node_count(rc), 2);
    CHECK(memcmp(out, sa, sizeof sa) == 0);
    /* no match at all */
    int32_t z[] = {1};
    CHECK_INT(radix_match(rc, z, 1, out, &res), 0);
    CHECK(res.last_node == radix_root(rc));
    CHECK_INT(radix_match(rc, z, 0, NULL, &res), 0);
    check_ok(rc);
    radix_free(rc);
    kv_pool_free(p);
}

static void test_insert_ends_mid_edge(void) {
    kv_pool *p = pool_make(16);
    radix_cache *rc = radix_new(p);
    int32_t a[] = {1, 2, 3, 4};
    CHECK_INT(put(rc, p, a, 4, NULL), 0);
    CHECK_INT(put(rc, p, a, 2, NULL), 2); /* already cached inside an edge */
    CHECK_INT(radix_node_count(rc), 1);
    CHECK_INT(kv_pool_free_count(p), 12);
    CHECK_INT(put(rc, p, a, 4, NULL), 4); /* whole sequence again */
    CHECK_INT(kv_pool_free_count(p), 12);
    CHECK_INT(put(rc, p, a, 0, NULL), 0);
    check_ok(rc);
    radix_free(rc);
    kv_pool_free(p);
}

/* A request that matched "1 2" re-inserts with the tree's own slots for it:
 * those are not released; its own duplicates of "3" are. */
static void test_insert_ownership(void) {
    kv_pool *p = pool_make(16);
    radix_cache *rc = radix_new(p);
    int32_t a[] = {1, 2, 3}, sa[3];
    CHECK_INT(put(rc, p, a, 3, sa), 0);
    int32_t req[] = {1, 2, 3, 4}, rs[4];
    radix_match_result m;
    CHECK_INT(radix_match(rc, req, 2, rs, &m), 2);
    radix_lock(rc, m.last_node);
    CHECK_INT(radix_protected_tokens(rc), 2);
    CHECK_INT(kv_pool_alloc(p, 2, rs + 2), 0); /* own slots for "3 4" */
    int32_t before = kv_pool_free_count(p);
    sgl_error err;
    CHECK_INT(radix_insert(rc, req, rs, 4, &err), 3);
    CHECK_INT(kv_pool_free_count(p), before + 1); /* only the duplicate of "3" */
    CHECK(p->is_free[rs[2]]);
    CHECK(!p->is_free[rs[0]] && !p->is_free[rs[1]] && !p->is_free[rs[3]]);
    radix_unlock(rc, m.last_node);
    CHECK_INT(radix_protected_tokens(rc), 0);
    CHECK_INT(radix_cached_tokens(rc), 4);
    check_ok(rc);
    /* a free slot is refused and nothing changes */
    int32_t bad[] = {rs[2]}, t9[] = {9};
    CHECK_INT(radix_insert(rc, t9, bad, 1, &err), -1);
    CHECK_INT(radix_cached_tokens(rc), 4);
    radix_free(rc);
    CHECK_INT(kv_pool_free_count(p), 16);
    kv_pool_free(p);
}

static void test_lock_protects(void) {
    kv_pool *p = pool_make(32);
    radix_cache *rc = radix_new(p);
    int32_t a[] = {1, 2, 3, 4}, b[] = {1, 2, 5}, c[] = {9, 9};
    put(rc, p, a, 4, NULL);
    put(rc, p, b, 3, NULL);
    put(rc, p, c, 2, NULL);
    radix_match_result m;
    radix_match(rc, a, 4, NULL, &m);
    radix_lock(rc, m.last_node);
    radix_lock(rc, m.last_node); /* twice */
    CHECK_INT(radix_protected_tokens(rc), 4);
    CHECK_INT(radix_evictable_tokens(rc), 3);
    check_ok(rc);
    CHECK_INT(radix_evict(rc, 100), 3); /* [5] and [9 9] only */
    CHECK_INT(radix_cached_tokens(rc), 4);
    CHECK_INT(radix_peek(rc, a, 4), 4);
    CHECK_INT(radix_peek(rc, b, 3), 2);
    radix_unlock(rc, m.last_node);
    CHECK_INT(radix_evict(rc, 100), 0);
    radix_unlock(rc, m.last_node);
    CHECK_INT(radix_protected_tokens(rc), 0);
    radix_unlock(rc, m.last_node); /* extra unlock: ignored */
    check_ok(rc);
    CHECK_INT(radix_evict(rc, 100), 4);
    CHECK_INT(radix_node_count(rc), 0);
    CHECK_INT(radix_evicted_tokens(rc), 7);
    CHECK_INT(kv_pool_free_count(p), 32);
    check_ok(rc);
    radix_free(rc);
    kv_pool_free(p);
}

/* A lock survives a later split of its node's edge by another match. */
static void test_split_keeps_lock(void) {
    kv_pool *p = pool_make(32);
    radix_cache *rc = radix_new(p);
    int32_t a[] = {1, 2, 3, 4, 5, 6};
    put(rc, p, a, 6, NULL);
    radix_match_result m, m2;
    radix_match(rc, a, 6, NULL, &m);
    radix_lock(rc, m.last_node);
    radix_match(rc, a, 3, NULL, &m2); /* splits [1..6] into [1 2 3] + [4 5 6] */
    CHECK_INT(radix_node_count(rc), 2);
    CHECK_INT(m.last_node->len, 3); /* the held node is the lower half */
    CHECK_INT(m2.last_node->lock_ref, 1);
    CHECK_INT(radix_protected_tokens(rc), 6);
    check_ok(rc);
    CHECK_INT(radix_evict(rc, 10), 0);
    radix_unlock(rc, m.last_node);
    CHECK_INT(m2.last_node->lock_ref, 0);
    CHECK_INT(radix_protected_tokens(rc), 0);
    check_ok(rc);
    radix_free(rc);
    kv_pool_free(p);
}

static void test_lru_order(void) {
    kv_pool *p = pool_make(64);
    radix_cache *rc = radix_new(p);
    int32_t a[] = {1, 1}, b[] = {2, 2, 2}, c[] = {3, 3, 3, 3};
    put(rc, p, a, 2, NULL);
    put(rc, p, b, 3, NULL);
    put(rc, p, c, 4, NULL);
    radix_match_result m;
    radix_match(rc, a, 2, NULL, &m); /* a is now the most recent */
    CHECK_INT(radix_evict(rc, 1), 3); /* b: the oldest, whole edge */
    CHECK_INT(radix_peek(rc, b, 3), 0);
    CHECK_INT(radix_peek(rc, a, 2), 2);
    CHECK_INT(radix_evict(rc, 1), 4); /* then c */
    CHECK_INT(radix_peek(rc, c, 4), 0);
    CHECK_INT(radix_peek(rc, a, 2), 2);
    check_ok(rc);
    radix_free(rc);
    kv_pool_free(p);
}

/* Evicting a leaf makes its parent a leaf, which is evicted in LRU turn. */
static void test_evict_cascade(void) {
    kv_pool *p = pool_make(64);
    radix_cache *rc = radix_new(p);
    int32_t a[] = {1, 2, 3}, b[] = {1, 2, 4}, c[] = {5};
    put(rc, p, a, 3, NULL);
    put(rc, p, b, 3, NULL);
    put(rc, p, c, 1, NULL);
    CHECK_INT(radix_node_count(rc), 4);
    /* LRU: [3] (tick of a's insert), then [4], then [1 2] (parent, now a leaf
     * with b's tick), then [5]. */
    CHECK_INT(radix_evict(rc, 2), 2);
    CHECK_INT(radix_peek(rc, a, 3), 2);
    CHECK_INT(radix_peek(rc, b, 3), 2);
    CHECK_INT(radix_peek(rc, c, 1), 1);
    CHECK_INT(radix_evict(rc, 1), 2); /* the parent [1 2], older than [5] */
    CHECK_INT(radix_peek(rc, c, 1), 1);
    CHECK_INT(radix_node_count(rc), 1);
    check_ok(rc);
    radix_free(rc);
    kv_pool_free(p);
}

/* Every allocation an insert/match may make fails in turn: the tree and the
 * pool are exactly as before. */
static void test_oom(void) {
    kv_pool *p = pool_make(64);
    radix_cache *rc = radix_new(p);
    int32_t a[] = {1, 2, 3, 4}, b[] = {1, 2, 7, 8}, c[] = {5, 6};
    put(rc, p, a, 4, NULL);
    const int32_t *seqs[] = {b, c};
    int32_t lens[] = {4, 2};
    for (int s = 0; s < 2; s++) {
        for (int32_t k = 1; k <= 8; k++) {
            char *before = dump_str(rc);
            int32_t free0 = kv_pool_free_count(p);
            int32_t sl[4];
            kv_pool_alloc(p, lens[s], sl);
            radix_debug_fail_alloc(rc, k);
            sgl_error err;
            int32_t r = radix_insert(rc, seqs[s], sl, lens[s], &err);
            radix_debug_fail_alloc(rc, 0);
            if (r >= 0) {
                free(before);
                break; /* k exceeds the allocations this insert makes */
            }
            kv_pool_release(p, sl, lens[s]); /* still ours after a failure */
            char *after = dump_str(rc);
            CHECK_STR(after, before);
            CHECK_INT(kv_pool_free_count(p), free0);
            check_ok(rc);
            free(before);
            free(after);
        }
    }
    CHECK_INT(radix_peek(rc, b, 4), 4);
    CHECK_INT(radix_peek(rc, c, 2), 2);
    /* match: a failed split falls back to the last node boundary */
    int32_t q[] = {1, 2, 3, 9};
    radix_match_result m;
    radix_debug_fail_alloc(rc, 1);
    CHECK_INT(radix_match(rc, q, 4, NULL, &m), 2);
    radix_debug_fail_alloc(rc, 0);
    CHECK_INT(radix_match(rc, q, 4, NULL, &m), 3);
    check_ok(rc);
    radix_free(rc);
    CHECK_INT(kv_pool_free_count(p), 64);
    kv_pool_free(p);
}

static void test_dump(void) {
    kv_pool *p = pool_make(16);
    radix_cache *rc = radix_new(p);
    int32_t a[] = {1, 2, 3}, b[] = {1, 2, 4};
    put(rc, p, a, 3, NULL);
    put(rc, p, b, 3, NULL);
    char *s = dump_str(rc);
    CHECK(strstr(s, "radix: 3 nodes, 4 cached, 0 protected") != NULL);
    CHECK(strstr(s, "\n  #2 [1 2] slots [0 1] len=2") != NULL);
    CHECK(strstr(s, "\n    #1 [3] slots [2] len=1") != NULL);
    free(s);
    radix_free(rc);
    kv_pool_free(p);
}

int main(void) {
    TEST_RUN(test_insert_split);
    TEST_RUN(test_match_mid_edge);
    TEST_RUN(test_insert_ends_mid_edge);
    TEST_RUN(test_insert_ownership);
    TEST_RUN(test_lock_protects);
    TEST_RUN(test_split_keeps_lock);
    TEST_RUN(test_lru_order);
    TEST_RUN(test_evict_cascade);
    TEST_RUN(test_oom);
    TEST_RUN(test_dump);
    return TEST_DONE();
}
