/* radix_cache: the prefix cache of RadixAttention. A radix tree keyed by
 * token ids whose every token carries the kv_pool slot holding its K/V, so a
 * new request reuses the KV of the longest prefix any earlier request left
 * behind. Cached tokens and running requests share one kv_pool.
 *
 * Shape. Each node owns one edge: a run of tokens and the slot of each.
 * Children of a node start with distinct tokens (kept sorted, so a lookup is
 * a binary search on the first token).
 *
 *   Insert "a b c d" into an empty tree, then "a b x y":
 *   the second insert shares "a b" and diverges inside the edge "a b c d",
 *   so that edge is split at the divergence point:
 *
 *       (root)                    (root)
 *         |                         |
 *      [a b c d]      ==>         [a b]          <- new node P: upper part,
 *                                 /    \            takes c's place under root
 *                           [c d]      [x y]     <- old node c keeps the lower
 *                                                   part; [x y] is a new leaf
 *
 *   A match that ends inside an edge splits it the same way, so the matched
 *   prefix always ends on a node boundary (the node you lock):
 *
 *       match "a b c" against        result: len 3, last node = [c]
 *         (root)                         (root)
 *           |                              |
 *         [a b]                          [a b]
 *         /    \                         /    \
 *    [c d]    [x y]        ==>         [c]    [x y]
 *                                       |
 *                                      [d]
 *
 *   The split always creates the UPPER half as the new node; the old node
 *   object keeps the lower half. So a node pointer a request holds (its lock
 *   point) stays valid and still ends at the same depth after any split.
 *
 * Locks. radix_lock(node) adds 1 to lock_ref on every node from node up to
 * the root; a node with lock_ref > 0 is protected and never evicted. Since a
 * lock covers the whole path, every descendant of an unlocked node is
 * unlocked: all unlocked tokens are evictable, leaf first.
 *
 * Eviction is LRU over unlocked leaves. Every match/insert stamps the nodes it
 * fully covers with a new tick, so a parent's tick is never older than its
 * children's; evicting a leaf may turn its parent into an evictable leaf.
 *
 * Slot ownership (exact accounting with kv_pool): every slot is free in the
 * pool or held by exactly one holder. The tree holds the slots of its edges.
 * radix_match hands out the tree's slots to read, not to own. radix_insert
 * takes ownership of every slot passed to it: new tokens keep theirs in the
 * tree, and where the tokens were already cached with a different slot the
 * passed slot is released to the pool (a slot equal to the cached one is the
 * tree's own and is left alone). radix_evict and radix_free release to the
 * pool.
 *
 * Out of memory: radix_insert returns -1 and leaves the tree (and the
 * caller's ownership of its slots) unchanged; radix_match never fails, it
 * falls back to the last node boundary when a split cannot be allocated.
 *
 * Not thread safe: one owner (the scheduler thread) calls everything.
 */
#ifndef SGL_RADIX_CACHE_H
#define SGL_RADIX_CACHE_H

#include <stdint.h>
#include <stdio.h>

#include "runtime/kv_pool.h"
#include "util/util.h"

/* A tree node. Read-only outside radix_cache.c (tests and dumps walk it). */
typedef struct radix_node radix_node;
struct radix_node {
    radix_node *parent;      /* NULL for the root */
    radix_node **children;   /* [n_children], sorted by children[i]->tokens[0] */
    int32_t n_children, cap_children;
    int32_t *tokens;         /* [len] edge tokens (root: len 0) */
    int32_t *slots;          /* [len] kv_pool slot of each edge token */
    int32_t len;
    int32_t lock_ref;        /* locks passing through this node */
    uint64_t last_access;    /* tick of the last match/insert that covered it */
    uint64_t id;             /* creation order: LRU tie-break, dumps */
    void *mem;               /* allocation behind tokens/slots */
    radix_node *all_prev, *all_next; /* list of every non-root node */
};

typedef struct radix_cache radix_cache;

typedef struct radix_match_result {
    int32_t len;             /* matched tokens: a prefix of the query */
    radix_node *last_node;   /* node ending at depth len (the root when len is 0);
                                lock it to keep the prefix while it is used */
} radix_match_result;

/* Returns an empty cache accounting against pool (borrowed; it must outlive
 * the cache), or NULL when memory runs out. */
radix_cache *radix_new(kv_pool *pool);
/* Releases every slot the tree holds to the pool, then frees the tree.
 * Locks still held are ignored. NULL is fine. */
void radix_free(radix_cache *rc);

/* Longest cached prefix of tokens[0..n). Splits the node where the match ends
 * mid-edge, so res->last_node ends exactly at res->len. Stamps the path as
 * recently used. If slots_out is non-NULL (caller-owned, room for n), the
 * slots of the matched prefix are copied there; they stay owned by the tree
 * (lock res->last_node before relying on them across other radix calls).
 * Returns res->len. Never fails (see Out of memory above). */
int32_t radix_match(radix_cache *rc, const int32_t *tokens, int32_t n, int32_t *slots_out,
                    radix_match_result *res);
/* Length of the longest cached prefix of tokens[0..n), counting a partially
 * matched edge. Changes nothing (no split, no stamp): for priority queries. */
int32_t radix_peek(const radix_cache *rc, const int32_t *tokens, int32_t n);

/* Caches tokens[0..n) with slots[0..n) and takes ownership of all n slots
 * (see Slot ownership above: duplicates of already-cached tokens are
 * released to the pool unless they are the tree's own slot). Returns the
 * number of leading tokens that were already cached (0..n), or -1 with err
 * set when memory runs out or a slot to release is invalid/free (then
 * nothing changed and the caller still owns its slots). */
int32_t radix_insert(radix_cache *rc, const int32_t *tokens, const int32_t *slots, int32_t n,
                     sgl_error *err);

/* lock_ref += 1 / -= 1 on node and all its ancestors. node must come from a
 * radix_match on this cache (or be the root). Unlock of an unlocked node is a
 * caller bug: it is ignored (radix_check still passes). */
void radix_lock(radix_cache *rc, radix_node *node);
void radix_unlock(radix_cache *rc, radix_node *node);

/* Evicts least-recently-used unlocked leaves (whole edges) until at least
 * n_tokens slots went back to the pool or nothing is evictable. Returns the
 * number of slots freed (may exceed n_tokens by the tail of the last edge). */
int32_t radix_evict(radix_cache *rc, int32_t n_tokens);

/* Stats. cached = slots held by the tree; protected = in locked nodes;
 * evictable = cached - protected. node_count excludes the root. */
int64_t radix_cached_tokens(const radix_cache *rc);
int64_t radix_protected_tokens(const radix_cache *rc);
int64_t radix_evictable_tokens(const radix_cache *rc);
int64_t radix_node_count(const radix_cache *rc);
/* Total slots released by radix_evict since radix_new. */
int64_t radix_evicted_tokens(const radix_cache *rc);
const radix_node *radix_root(const radix_cache *rc);

/* Checks every invariant (edge sizes add up to the stats, lock_refs are
 * consistent along paths, no empty non-root node, children sorted by
 * distinct first tokens, parent links, ticks non-increasing downwards, slots
 * distinct, in range and not free in the pool). Returns 0, or -1 with the
 * first violation in err. */
int radix_check(const radix_cache *rc, sgl_error *err);
/* Prints the tree, one node per line, indented by depth. */
void radix_dump(const radix_cache *rc, FILE *out);

/* Tests only: the countdown-th node allocation from now on fails (1 = the
 * next one); 0 turns failure injection off. */
void radix_debug_fail_alloc(radix_cache *rc, int32_t countdown);

#endif
