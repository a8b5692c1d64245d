/* ideal: the best cache hit rate a request stream allows, computed offline:
 * the prompt tokens a perfect, infinite prefix cache (one that never evicts
 * and holds every prompt and every finished sequence from the moment it is
 * submitted) would serve.
 *
 *   bench_ideal *c = bench_ideal_new();
 *   bench_ideal_prompt(c, ids, n, n - 1);   // a request arrives: its best hit
 *   bench_ideal_insert(c, ids_and_output, m); // it finished: cache the output
 *   c->cached / c->prompt                   // the best hit rate
 *
 * The cap of each prompt is the longest prefix any cache may serve it: a
 * request must still run its last token (for logits), and a SCORE part the
 * tokens whose logprobs it returns (the local engine's scheduler caps the
 * same way), so even a perfect cache never serves a whole prompt.
 * A token-id trie; memory grows with the distinct tokens of the stream.
 */
#ifndef SGL_BENCH_IDEAL_H
#define SGL_BENCH_IDEAL_H

#include <stdint.h>

typedef struct bench_ideal {
    int64_t prompt;  /* prompt tokens seen (the hit-rate denominator) */
    int64_t cached;  /* of which a perfect cache serves */
    int64_t nodes;   /* trie nodes (distinct prefixes) */
    /* internal: open-addressing map (parent node, token) -> child node */
    uint64_t *keys;
    int32_t *vals;
    uint64_t cap, used;
} bench_ideal;

/* Returns an empty calculator (caller frees with bench_ideal_free), NULL on OOM. */
bench_ideal *bench_ideal_new(void);
void bench_ideal_free(bench_ideal *c);
/* A prompt of n tokens arrives: adds n to prompt and its best hit (the
 * longest prefix of ids already seen, at most cap) to cached, then
 * remembers ids. Returns the hit, or -1 on OOM. */
int32_t bench_ideal_prompt(bench_ideal *c, const int32_t *ids, int32_t n, int32_t cap);
/* Remembers ids (e.g. prompt + generated tokens of a finished request)
 * without counting anything. Returns 0 or -1 on OOM. */
int bench_ideal_insert(bench_ideal *c, const int32_t *ids, int32_t n);
/* Longest prefix of ids already remembered (no side effects). */
int32_t bench_ideal_match(const bench_ideal *c, const int32_t *ids, int32_t n);

#endif
