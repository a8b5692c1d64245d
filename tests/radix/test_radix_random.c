/* test_radix_random: 100,000+ random operations on the radix cache (start a
 * request = match + lock + allocate, finish = insert + unlock, chunked
 * partial insert + re-lock, abort, plain match, evict) checked after every
 * step against a naive reference: a flat list of every cached prefix with
 * the slot of its last token, searched by brute force.
 *
 * Checked each step: match lengths and slots equal the reference's,
 * radix_check passes, cached/protected counts equal the reference's, and
 * pool free + tree + running requests == n_slots (kv_pool_release refuses
 * double frees, so a double free shows up as a leak). Evictions are checked
 * for LRU order on the tree's own ticks, for sparing locked prefixes and for
 * freeing exactly the slots of the prefixes that disappeared.
 */
#include <stdlib.h>
#include <string.h>

#include "runtime/radix_cache.h"
#include "tests/test.h"

enum { MAXL = 14, N_SLOTS = 200, MAX_REQ = 8, N_BASES = 6, N_OPS = 120000, ALPHA = 4 };

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(uint32_t n) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

/* ---- reference: every cached prefix, brute force ----------------------- */

typedef struct ref_entry {
    int32_t len;
    int32_t tok[MAXL];
    int32_t slot;  /* slot of tok[len-1] */
    int32_t locks; /* running requests whose locked prefix covers this one */
} ref_entry;

static ref_entry ref[N_SLOTS];
static int32_t n_ref;

static int32_t ref_find(const int32_t *tok, int32_t len) {
    for (int32_t i = 0; i < n_ref; i++)
        if (ref[i].len == len && memcmp(ref[i].tok, tok, sizeof(int32_t) * (size_t)len) == 0)
            return i;
    return -1;
}

/* Longest cached prefix; its slots to slots (may be NULL). */
static int32_t ref_match(const int32_t *tok, int32_t n, int32_t *slots) {
    int32_t l = 0;
    while (l < n) {
        int32_t e = ref_find(tok, l + 1);
        if (e < 0) break;
        if (slots) slots[l] = ref[e].slot;
        l++;
    }
    return l;
}

static void ref_add(const int32_t *tok, int32_t len, int32_t slot) {
    ref_entry *e = &ref[n_ref++];
    e->len = len;
    memcpy(e->tok, tok, sizeof(int32_t) * (size_t)len);
    e->slot = slot;
    e->locks = 0;
}

static void ref_lock(const int32_t *tok, int32_t m, int32_t delta) {
    for (int32_t l = 1; l <= m; l++) ref[ref_find(tok, l)].locks += delta;
}

/* ---- simulated running requests ---------------------------------------- */

typedef struct req {
    int32_t n, m;          /* tokens; leading tokens owned by the tree (locked) */
    int32_t tok[MAXL];
    int32_t slots[MAXL];   /* [0,m) tree's, [m,n) the request's own */
    radix_node *node;      /* lock point, depth m */
} req;

static req running[MAX_REQ];
static int32_t n_running;
static int32_t bases[N_BASES][MAXL], base_len[N_BASES];

static int32_t gen_seq(int32_t *tok) {
    int b = (int)rnd(N_BASES);
    int32_t n = 0;
    int32_t take = rnd(4) ? base_len[b] : (int32_t)rnd((uint32_t)base_len[b] + 1);
    for (; n < take; n++) tok[n] = bases[b][n];
    int32_t tail = (int32_t)rnd(7);
    while (tail-- > 0 && n < MAXL) tok[n++] = 1 + (int32_t)rnd(ALPHA);
    if (n == 0) tok[n++] = 1 + (int32_t)rnd(ALPHA);
    return n;
}

static kv_pool *pool;
static radix_cache *rc;
static long n_checks_failed;

#define STEP_CHECK(cond, ...)                                                    \
    do {                                                                         \
        if (!(cond)) {                                                           \
            TEST_FAIL_(__VA_ARGS__);                                             \
            n_checks_failed++;                                                   \
        }                                                                        \
    } while (0)

/* ---- eviction with checks ---------------------------------------------- */

typedef struct snap {
    uint64_t id, tick;
    int evictable_leaf;
} snap;

static int32_t collect(const radix_node *x, snap *out, int32_t n) {
    for (int32_t c = 0; c < x->n_children; c++) {
        const radix_node *ch = x->children[c];
        out[n].id = ch->id;
        out[n].tick = ch->last_access;
        out[n].evictable_leaf = ch->n_children == 0 && ch->lock_ref == 0;
        n = collect(ch, out, n + 1);
    }
    return n;
}

/* Ticks only: nodes stamped by the same operation are equally recent. */
static int later(const snap *a, const snap *b) { return a->tick > b->tick; }

static snap before_s[N_SLOTS + 1], after_s[N_SLOTS + 1];

static void evict_checked(int32_t want) {
    int32_t nb = collect(radix_root(rc), before_s, 0);
    int32_t free0 = kv_pool_free_count(pool);
    int32_t freed = radix_evict(rc, want);
    STEP_CHECK(kv_pool_free_count(pool) == free0 + freed, "evict: pool gained %d, said %d",
               kv_pool_free_count(pool) - free0, freed);
    STEP_CHECK(freed >= want || radix_evictable_tokens(rc) == 0,
               "evict stopped at %d < %d with %lld evictable", freed, want,
               (long long)radix_evictable_tokens(rc));
    int32_t na = collect(radix_root(rc), after_s, 0);
    /* LRU: everything evicted is older than every leaf still evictable. */
    const snap *newest_evicted = NULL;
    for (int32_t i = 0; i < nb; i++) {
        int kept = 0;
        for (int32_t j = 0; j < na && !kept; j++) kept = after_s[j].id == before_s[i].id;
        if (!kept && (!newest_evicted || later(&before_s[i], newest_evicted)))
            newest_evicted = &before_s[i];
    }
    for (int32_t j = 0; j < na && newest_evicted; j++)
        STEP_CHECK(!(after_s[j].evictable_leaf && later(newest_evicted, &after_s[j])),
                   "evicted node %llu is newer than kept leaf %llu",
                   (unsigned long long)newest_evicted->id, (unsigned long long)after_s[j].id);
    /* Reference: drop the prefixes the tree no longer has. */
    int32_t removed = 0;
    for (int32_t i = 0; i < n_ref;) {
        if (radix_peek(rc, ref[i].tok, ref[i].len) == ref[i].len) {
            i++;
            continue;
        }
        STEP_CHECK(ref[i].locks == 0, "evicted a locked prefix of length %d", ref[i].len);
        STEP_CHECK(pool->is_free[ref[i].slot], "evicted prefix's slot %d not free", ref[i].slot);
        ref[i] = ref[--n_ref];
        removed++;
    }
    STEP_CHECK(removed == freed, "evict freed %d slots but %d prefixes disappeared", freed,
               removed);
}

/* ---- operations -------------------------------------------------------- */

static void check_match(const int32_t *tok, int32_t n, radix_match_result *res, int32_t *slots) {
    int32_t want_slots[MAXL];
    int32_t want = ref_match(tok, n, want_slots);
    STEP_CHECK(radix_peek(rc, tok, n) == want, "peek %d != reference %d",
               radix_peek(rc, tok, n), want);
    int32_t got = radix_match(rc, tok, n, slots, res);
    STEP_CHECK(got == want, "match %d != reference %d", got, want);
    STEP_CHECK(res->len == got, "res.len");
    STEP_CHECK(memcmp(slots, want_slots, sizeof(int32_t) * (size_t)SGL_MIN(got, want)) == 0,
               "matched slots differ from reference");
    int32_t depth = 0;
    for (const radix_node *x = res->last_node; x; x = x->parent) depth += x->len;
    STEP_CHECK(depth == got, "last node ends at depth %d, match %d", depth, got);
}

static void op_start(void) {
    if (n_running == MAX_REQ) return;
    req *r = &running[n_running];
    r->n = gen_seq(r->tok);
    radix_match_result res;
    check_match(r->tok, r->n, &res, r->slots);
    r->m = res.len;
    r->node = res.last_node;
    radix_lock(rc, r->node);
    ref_lock(r->tok, r->m, +1);
    int32_t need = r->n - r->m;
    if (kv_pool_free_count(pool) < need) evict_checked(need - kv_pool_free_count(pool));
    if (kv_pool_alloc(pool, need, r->slots + r->m) < 0) {
        radix_unlock(rc, r->node);
        ref_lock(r->tok, r->m, -1);
        return;
    }
    n_running++;
}

static void req_remove(int32_t i) { running[i] = running[--n_running]; }

/* Insert the first len tokens of request r; returns the cached prefix. */
static int32_t insert_checked(req *r, int32_t len) {
    int32_t want = ref_match(r->tok, len, NULL);
    int32_t free0 = kv_pool_free_count(pool);
    sgl_error err;
    int32_t got = radix_insert(rc, r->tok, r->slots, len, &err);
    STEP_CHECK(got == want, "insert returned %d, reference %d (%s)", got, want,
               got < 0 ? err.msg : "");
    if (got < 0) return got;
    /* [m, got) were the request's duplicates: released. [0, m) are the
     * tree's own: untouched. */
    STEP_CHECK(kv_pool_free_count(pool) == free0 + (got - r->m), "insert released %d, want %d",
               kv_pool_free_count(pool) - free0, got - r->m);
    for (int32_t j = got; j < len; j++) ref_add(r->tok, j + 1, r->slots[j]);
    return got;
}

static void op_finish(void) {
    if (!n_running) return;
    int32_t i = (int32_t)rnd((uint32_t)n_running);
    req *r = &running[i];
    insert_checked(r, r->n);
    radix_unlock(rc, r->node);
    ref_lock(r->tok, r->m, -1);
    req_remove(i);
}

/* Chunked prefill: cache the first j tokens of a running request, then lock
 * the longer prefix and adopt the tree's slots for it. */
static void op_partial(void) {
    if (!n_running) return;
    req *r = &running[rnd((uint32_t)n_running)];
    if (r->n == r->m) return;
    int32_t j = r->m + 1 + (int32_t)rnd((uint32_t)(r->n - r->m));
    if (insert_checked(r, j) < 0) return;
    radix_match_result res;
    int32_t slots[MAXL];
    check_match(r->tok, j, &res, slots);
    STEP_CHECK(res.len == j, "re-match after partial insert: %d != %d", res.len, j);
    radix_lock(rc, res.last_node);
    ref_lock(r->tok, j, +1);
    radix_unlock(rc, r->node);
    ref_lock(r->tok, r->m, -1);
    memcpy(r->slots, slots, sizeof(int32_t) * (size_t)j);
    r->node = res.last_node;
    r->m = j;
}

static void op_abort(void) {
    if (!n_running) return;
    int32_t i = (int32_t)rnd((uint32_t)n_running);
    req *r = &running[i];
    STEP_CHECK(kv_pool_release(pool, r->slots + r->m, r->n - r->m) == 0, "abort release failed");
    radix_unlock(rc, r->node);
    ref_lock(r->tok, r->m, -1);
    req_remove(i);
}

static void op_match(void) {
    int32_t tok[MAXL], slots[MAXL];
    int32_t n = gen_seq(tok);
    radix_match_result res;
    check_match(tok, n, &res, slots);
}

static void check_all(long step) {
    sgl_error err;
    STEP_CHECK(radix_check(rc, &err) == 0, "step %ld: radix_check: %s", step, err.msg);
    STEP_CHECK(radix_cached_tokens(rc) == n_ref, "step %ld: cached %lld, reference %d", step,
               (long long)radix_cached_tokens(rc), n_ref);
    int32_t prot = 0, held = 0;
    for (int32_t i = 0; i < n_ref; i++) prot += ref[i].locks > 0;
    STEP_CHECK(radix_protected_tokens(rc) == prot, "step %ld: protected %lld, reference %d", step,
               (long long)radix_protected_tokens(rc), prot);
    for (int32_t i = 0; i < n_running; i++) held += running[i].n - running[i].m;
    STEP_CHECK(kv_pool_free_count(pool) + radix_cached_tokens(rc) + held == N_SLOTS,
               "step %ld: free %d + tree %lld + requests %d != %d", step,
               kv_pool_free_count(pool), (long long)radix_cached_tokens(rc), held, N_SLOTS);
}

static void test_random_ops(void) {
    pool = kv_pool_new(N_SLOTS, 0, 0, NULL);
    rc = radix_new(pool);
    CHECK(pool && rc);
    for (int b = 0; b < N_BASES; b++) {
        base_len[b] = 2 + (int32_t)rnd(7);
        for (int32_t i = 0; i < base_len[b]; i++) bases[b][i] = 1 + (int32_t)rnd(ALPHA);
    }
    long counts[6] = {0};
    int64_t max_nodes = 0;
    for (long step = 0; step < N_OPS && n_checks_failed < 20; step++) {
        uint32_t k = rnd(100);
        int op = k < 30 ? 0 : k < 55 ? 1 : k < 65 ? 2 : k < 70 ? 3 : k < 85 ? 4 : 5;
        counts[op]++;
        switch (op) {
        case 0: op_start(); break;
        case 1: op_finish(); break;
        case 2: op_partial(); break;
        case 3: op_abort(); break;
        case 4: op_match(); break;
        default: evict_checked(1 + (int32_t)rnd(60)); break;
        }
        check_all(step);
        if (radix_node_count(rc) > max_nodes) max_nodes = radix_node_count(rc);
    }
    while (n_running) op_finish();
    check_all(-1);
    printf("ops: start %ld finish %ld partial %ld abort %ld match %ld evict %ld; max nodes %lld, "
           "evicted %lld\n",
           counts[0], counts[1], counts[2], counts[3], counts[4], counts[5], (long long)max_nodes,
           (long long)radix_evicted_tokens(rc));
    CHECK(radix_evicted_tokens(rc) > 0);
    radix_free(rc);
    CHECK_INT(kv_pool_free_count(pool), N_SLOTS);
    kv_pool_free(pool);
}

int main(void) {
    TEST_RUN(test_random_ops);
    return TEST_DONE();
}
