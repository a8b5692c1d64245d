/* ideal: best-possible hit rate of a request stream (see ideal.h). The trie
 * is a hash map from (parent node, token) to child node; node 0 is the root. */
#include "cli/bench/ideal.h"

#include <stdlib.h>

#define EMPTY UINT64_MAX

static uint64_t key_of(int32_t node, int32_t tok) { return ((uint64_t)(uint32_t)node << 32) | (uint32_t)tok; }

static uint64_t hash64(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ull;
    return k ^ (k >> 33);
}

bench_ideal *bench_ideal_new(void) {
    bench_ideal *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->cap = 1024;
    c->keys = malloc(c->cap * sizeof *c->keys);
    c->vals = malloc(c->cap * sizeof *c->vals);
    if (!c->keys || !c->vals) {
        bench_ideal_free(c);
        return NULL;
    }
    for (uint64_t i = 0; i < c->cap; i++) c->keys[i] = EMPTY;
    c->nodes = 1;
    return c;
}

void bench_ideal_free(bench_ideal *c) {
    if (!c) return;
    free(c->keys);
    free(c->vals);
    free(c);
}

static int32_t find(const bench_ideal *c, uint64_t k) {
    for (uint64_t i = hash64(k) & (c->cap - 1);; i = (i + 1) & (c->cap - 1)) {
        if (c->keys[i] == k) return c->vals[i];
        if (c->keys[i] == EMPTY) return -1;
    }
}

static void put(bench_ideal *c, uint64_t k, int32_t v) {
    uint64_t i = hash64(k) & (c->cap - 1);
    while (c->keys[i] != EMPTY) i = (i + 1) & (c->cap - 1);
    c->keys[i] = k;
    c->vals[i] = v;
    c->used++;
}

static int grow(bench_ideal *c) {
    uint64_t *ok = c->keys, ocap = c->cap;
    int32_t *ov = c->vals;
    uint64_t *nk = malloc(2 * ocap * sizeof *nk);
    int32_t *nv = malloc(2 * ocap * sizeof *nv);
    if (!nk || !nv) {
        free(nk);
        free(nv);
        return -1;
    }
    c->keys = nk;
    c->vals = nv;
    c->cap = 2 * ocap;
    c->used = 0;
    for (uint64_t i = 0; i < c->cap; i++) c->keys[i] = EMPTY;
    for (uint64_t i = 0; i < ocap; i++)
        if (ok[i] != EMPTY) put(c, ok[i], ov[i]);
    free(ok);
    free(ov);
    return 0;
}

int32_t bench_ideal_match(const bench_ideal *c, const int32_t *ids, int32_t n) {
    int32_t node = 0, i = 0;
    for (; i < n; i++) {
        int32_t next = find(c, key_of(node, ids[i]));
        if (next < 0) break;
        node = next;
    }
    return i;
}

int bench_ideal_insert(bench_ideal *c, const int32_t *ids, int32_t n) {
    int32_t node = 0;
    for (int32_t i = 0; i < n; i++) {
        uint64_t k = key_of(node, ids[i]);
        int32_t next = find(c, k);
        if (next < 0) {
            if (c->nodes >= INT32_MAX) return -1;
            if (2 * (c->used + 1) > c->cap && grow(c) < 0) return -1;
            next = (int32_t)c->nodes++;
            put(c, k, next);
        }
        node = next;
    }
    return 0;
}

int32_t bench_ideal_prompt(bench_ideal *c, const int32_t *ids, int32_t n, int32_t cap) {
    int32_t hit = bench_ideal_match(c, ids, n);
    if (hit > cap) hit = cap;
    if (hit < 0) hit = 0;
    if (bench_ideal_insert(c, ids, n) < 0) return -1;
    c->prompt += n;
    c->cached += hit;
    return hit;
}
