/* radix_cache: token-keyed radix tree over kv_pool slots, with node splits,
 * locks along root paths and LRU eviction of unlocked leaves (see
 * radix_cache.h for the drawings and the ownership rules).
 *
 * Every mutation allocates what it needs first and only then changes the
 * tree, so an allocation failure leaves the tree exactly as it was.
 */
#include "runtime/radix_cache.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

struct radix_cache {
    kv_pool *pool;          /* borrowed */
    radix_node root;        /* len 0; never evicted */
    radix_node *all_head;   /* every non-root node (for eviction scans) */
    int64_t n_nodes;        /* non-root nodes */
    int64_t cached;         /* sum of len over nodes */
    int64_t protected_;     /* sum of len over nodes with lock_ref > 0 */
    int64_t evicted;        /* slots released by radix_evict, ever */
    uint64_t tick;
    uint64_t next_id;
    radix_node **scratch;   /* eviction heap; capacity >= n_nodes at all times */
    int64_t scratch_cap;
    int32_t fail_countdown; /* tests: allocation failure injection */
};

/* ---- allocation ---------------------------------------------------------- */

static void *rc_realloc(radix_cache *rc, void *p, size_t n) {
    if (rc->fail_countdown > 0 && --rc->fail_countdown == 0) return NULL;
    return realloc(p, n);
}

/* A detached node with room for len edge tokens and cap_children children,
 * or NULL. Not yet linked anywhere and not counted. */
static radix_node *node_new(radix_cache *rc, int32_t len, int32_t cap_children) {
    radix_node *x = rc_realloc(rc, NULL, sizeof *x);
    if (!x) return NULL;
    memset(x, 0, sizeof *x);
    x->mem = rc_realloc(rc, NULL, sizeof(int32_t) * 2 * (size_t)(len > 0 ? len : 1));
    x->children = cap_children ? rc_realloc(rc, NULL, sizeof(radix_node *) * (size_t)cap_children)
                               : NULL;
    if (!x->mem || (cap_children && !x->children)) {
        free(x->mem);
        free(x->children);
        free(x);
        return NULL;
    }
    x->cap_children = cap_children;
    x->tokens = x->mem;
    x->slots = (int32_t *)x->mem + len;
    x->len = len;
    x->id = rc->next_id++;
    return x;
}

static void node_free(radix_node *x) {
    if (!x) return;
    free(x->children);
    free(x->mem);
    free(x);
}

/* Makes room for one more child of x. Returns 0 or -1 (x unchanged). */
static int children_reserve(radix_cache *rc, radix_node *x, int32_t extra) {
    if (x->n_children + extra <= x->cap_children) return 0;
    int32_t cap = x->cap_children ? x->cap_children * 2 : 2;
    while (cap < x->n_children + extra) cap *= 2;
    radix_node **c = rc_realloc(rc, x->children, sizeof(radix_node *) * (size_t)cap);
    if (!c) return -1;
    x->children = c;
    x->cap_children = cap;
    return 0;
}

/* Keeps scratch able to hold every node after extra more are created. */
static int scratch_reserve(radix_cache *rc, int64_t extra) {
    int64_t need = rc->n_nodes + extra + 1;
    if (need <= rc->scratch_cap) return 0;
    int64_t cap = rc->scratch_cap ? rc->scratch_cap * 2 : 64;
    while (cap < need) cap *= 2;
    radix_node **s = rc_realloc(rc, rc->scratch, sizeof(radix_node *) * (size_t)cap);
    if (!s) return -1;
    rc->scratch = s;
    rc->scratch_cap = cap;
    return 0;
}

/* ---- structure ----------------------------------------------------------- */

/* Index of x's child starting with tok, or -(insertion point) - 1. */
static int32_t child_find(const radix_node *x, int32_t tok) {
    int32_t lo = 0, hi = x->n_children;
    while (lo < hi) {
        int32_t mid = lo + (hi - lo) / 2;
        int32_t t = x->children[mid]->tokens[0];
        if (t == tok) return mid;
        if (t < tok) lo = mid + 1;
        else hi = mid;
    }
    return -lo - 1;
}

static int32_t common_len(const int32_t *a, int32_t na, const int32_t *b, int32_t nb) {
    int32_t n = SGL_MIN(na, nb), i = 0;
    while (i < n && a[i] == b[i]) i++;
    return i;
}

static void all_link(radix_cache *rc, radix_node *x) {
    x->all_prev = NULL;
    x->all_next = rc->all_head;
    if (rc->all_head) rc->all_head->all_prev = x;
    rc->all_head = x;
    rc->n_nodes++;
}

static void all_unlink(radix_cache *rc, radix_node *x) {
    if (x->all_prev) x->all_prev->all_next = x->all_next;
    else rc->all_head = x->all_next;
    if (x->all_next) x->all_next->all_prev = x->all_prev;
    rc->n_nodes--;
}

/* Adds leaf under x; capacity must be reserved. */
static void child_add(radix_node *x, radix_node *leaf) {
    int32_t at = -child_find(x, leaf->tokens[0]) - 1;
    memmove(x->children + at + 1, x->children + at,
            sizeof(radix_node *) * (size_t)(x->n_children - at));
    x->children[at] = leaf;
    x->n_children++;
    leaf->parent = x;
}

/* Splits c after k tokens (0 < k < c->len) using the preallocated p (room for
 * k tokens and >= 1 child): p takes the upper part and c's place in its
 * parent; c keeps the lower part. Returns p. */
static radix_node *node_split(radix_cache *rc, radix_node *c, int32_t k, radix_node *p) {
    radix_node *par = c->parent;
    int32_t at = child_find(par, c->tokens[0]);
    memcpy(p->tokens, c->tokens, sizeof(int32_t) * (size_t)k);
    memcpy(p->slots, c->slots, sizeof(int32_t) * (size_t)k);
    p->len = k;
    p->parent = par;
    p->lock_ref = c->lock_ref;
    p->last_access = c->last_access;
    par->children[at] = p;
    p->children[0] = c;
    p->n_children = 1;
    c->parent = p;
    c->tokens += k;
    c->slots += k;
    c->len -= k;
    all_link(rc, p);
    return p;
}

/* ---- public API ---------------------------------------------------------- */

radix_cache *radix_new(kv_pool *pool) {
    if (!pool) return NULL;
    radix_cache *rc = calloc(1, sizeof *rc);
    if (!rc) return NULL;
    rc->pool = pool;
    rc->root.tokens = rc->root.slots = NULL;
    rc->next_id = 1;
    if (scratch_reserve(rc, 0) < 0) {
        free(rc);
        return NULL;
    }
    return rc;
}

void radix_free(radix_cache *rc) {
    if (!rc) return;
    radix_node *x = rc->all_head;
    while (x) {
        radix_node *next = x->all_next;
        kv_pool_release(rc->pool, x->slots, x->len);
        node_free(x);
        x = next;
    }
    free(rc->root.children);
    free(rc->scratch);
    free(rc);
}

int32_t radix_match(radix_cache *rc, const int32_t *tokens, int32_t n, int32_t *slots_out,
                    radix_match_result *res) {
    uint64_t t = ++rc->tick;
    radix_node *cur = &rc->root;
    int32_t i = 0;
    while (i < n) {
        int32_t at = child_find(cur, tokens[i]);
        if (at < 0) break;
        radix_node *c = cur->children[at];
        int32_t k = common_len(c->tokens, c->len, tokens + i, n - i);
        if (k < c->len) {
            /* Ends mid-edge: split so the match ends on a node boundary. If
             * memory runs out, the match stops at cur instead. */
            radix_node *p = NULL;
            if (scratch_reserve(rc, 1) < 0 || !(p = node_new(rc, k, 2))) break;
            c = node_split(rc, c, k, p);
        }
        if (slots_out) memcpy(slots_out + i, c->slots, sizeof(int32_t) * (size_t)c->len);
        c->last_access = t;
        i += c->len;
        cur = c;
    }
    rc->root.last_access = t;
    if (res) {
        res->len = i;
        res->last_node = cur;
    }
    return i;
}

int32_t radix_peek(const radix_cache *rc, const int32_t *tokens, int32_t n) {
    const radix_node *cur = &rc->root;
    int32_t i = 0;
    while (i < n) {
        int32_t at = child_find(cur, tokens[i]);
        if (at < 0) break;
        const radix_node *c = cur->children[at];
        int32_t k = common_len(c->tokens, c->len, tokens + i, n - i);
        i += k;
        if (k < c->len) break;
        cur = c;
    }
    return i;
}

int32_t radix_insert(radix_cache *rc, const int32_t *tokens, const int32_t *slots, int32_t n,
                     sgl_error *err) {
    if (n < 0) return sgl_error_set(err, "radix insert: negative length %d", n);
    kv_pool *pool = rc->pool;
    for (int32_t j = 0; j < n; j++)
        if (slots[j] < 0 || slots[j] >= pool->n_slots || pool->is_free[slots[j]])
            return sgl_error_set(err, "radix insert: slot %d (token %d) is invalid or free",
                                 slots[j], j);

    /* Pass 1: find where the sequence leaves the tree; change nothing. */
    radix_node *cur = &rc->root, *split_child = NULL;
    int32_t i = 0, split_k = 0;
    while (i < n) {
        int32_t at = child_find(cur, tokens[i]);
        if (at < 0) break;
        radix_node *c = cur->children[at];
        int32_t k = common_len(c->tokens, c->len, tokens + i, n - i);
        if (k < c->len) {
            split_child = c;
            split_k = k;
            break;
        }
        i += k;
        cur = c;
    }
    int32_t cached = i + split_k; /* leading tokens already in the tree */
    /* A split is needed only when the new tokens branch off inside an edge;
     * a sequence that ends inside an edge adds nothing. */
    bool need_split = split_child && cached < n;
    bool need_leaf = cached < n;

    /* Allocate everything before touching the tree. */
    radix_node *p = NULL, *leaf = NULL;
    if (need_leaf) {
        if (scratch_reserve(rc, 2) < 0) goto oom;
        if (need_split) {
            if (!(p = node_new(rc, split_k, 2))) goto oom;
        } else if (children_reserve(rc, cur, 1) < 0) {
            goto oom;
        }
        if (!(leaf = node_new(rc, n - cached, 0))) goto oom;
    }

    /* Release the caller's duplicates of cached tokens (not the tree's own). */
    {
        radix_node *x = &rc->root;
        int32_t j = 0;
        while (j < cached) {
            radix_node *c = x->children[child_find(x, tokens[j])];
            int32_t m = SGL_MIN(c->len, cached - j);
            for (int32_t q = 0; q < m; q++)
                if (c->slots[q] != slots[j + q] && kv_pool_release(pool, &slots[j + q], 1) < 0) {
                    node_free(p);
                    node_free(leaf);
                    return sgl_error_set(err, "radix insert: slot %d passed twice", slots[j + q]);
                }
            j += m;
            x = c;
        }
    }

    /* Stamp every node the sequence fully covers. */
    uint64_t t = ++rc->tick;
    for (radix_node *x = cur; x; x = x->parent) x->last_access = t;
    if (need_leaf) {
        radix_node *at_node = cur;
        if (need_split) {
            at_node = node_split(rc, split_child, split_k, p);
            at_node->last_access = t;
        }
        memcpy(leaf->tokens, tokens + cached, sizeof(int32_t) * (size_t)(n - cached));
        memcpy(leaf->slots, slots + cached, sizeof(int32_t) * (size_t)(n - cached));
        leaf->last_access = t;
        child_add(at_node, leaf);
        all_link(rc, leaf);
        rc->cached += n - cached;
    }
    return cached;
oom:
    node_free(p);
    node_free(leaf);
    return sgl_error_set(err, "radix insert: out of memory for %d tokens", n - cached);
}

void radix_lock(radix_cache *rc, radix_node *node) {
    for (radix_node *x = node; x; x = x->parent)
        if (x->lock_ref++ == 0) rc->protected_ += x->len;
}

void radix_unlock(radix_cache *rc, radix_node *node) {
    if (!node || node->lock_ref <= 0) return;
    for (radix_node *x = node; x; x = x->parent)
        if (--x->lock_ref == 0) rc->protected_ -= x->len;
}

/* Min-heap on (last_access, id): least recently used first. */
static bool lru_before(const radix_node *a, const radix_node *b) {
    return a->last_access < b->last_access || (a->last_access == b->last_access && a->id < b->id);
}

static void heap_push(radix_node **h, int64_t *n, radix_node *x) {
    int64_t i = (*n)++;
    while (i > 0) {
        int64_t up = (i - 1) / 2;
        if (!lru_before(x, h[up])) break;
        h[i] = h[up];
        i = up;
    }
    h[i] = x;
}

static radix_node *heap_pop(radix_node **h, int64_t *n) {
    radix_node *top = h[0], *last = h[--*n];
    int64_t i = 0;
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && lru_before(h[c + 1], h[c])) c++;
        if (!lru_before(h[c], last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n > 0) h[i] = last;
    return top;
}

static bool evictable_leaf(const radix_cache *rc, const radix_node *x) {
    return x != &rc->root && x->n_children == 0 && x->lock_ref == 0;
}

int32_t radix_evict(radix_cache *rc, int32_t n_tokens) {
    if (n_tokens <= 0) return 0;
    radix_node **heap = rc->scratch; /* capacity >= n_nodes: every leaf fits */
    int64_t n_heap = 0;
    for (radix_node *x = rc->all_head; x; x = x->all_next)
        if (evictable_leaf(rc, x)) heap_push(heap, &n_heap, x);
    int32_t freed = 0;
    while (freed < n_tokens && n_heap > 0) {
        radix_node *x = heap_pop(heap, &n_heap);
        radix_node *par = x->parent;
        kv_pool_release(rc->pool, x->slots, x->len); /* tree-held: cannot fail */
        freed += x->len;
        rc->cached -= x->len;
        rc->evicted += x->len;
        int32_t at = child_find(par, x->tokens[0]);
        memmove(par->children + at, par->children + at + 1,
                sizeof(radix_node *) * (size_t)(par->n_children - at - 1));
        par->n_children--;
        all_unlink(rc, x);
        node_free(x);
        if (evictable_leaf(rc, par)) heap_push(heap, &n_heap, par);
    }
    return freed;
}

int64_t radix_cached_tokens(const radix_cache *rc) { return rc->cached; }
int64_t radix_protected_tokens(const radix_cache *rc) { return rc->protected_; }
int64_t radix_evictable_tokens(const radix_cache *rc) { return rc->cached - rc->protected_; }
int64_t radix_node_count(const radix_cache *rc) { return rc->n_nodes; }
int64_t radix_evicted_tokens(const radix_cache *rc) { return rc->evicted; }
const radix_node *radix_root(const radix_cache *rc) { return &rc->root; }

void radix_debug_fail_alloc(radix_cache *rc, int32_t countdown) {
    rc->fail_countdown = countdown > 0 ? countdown : 0;
}

/* ---- checking and dumping ------------------------------------------------ */

int radix_check(const radix_cache *rc, sgl_error *err) {
    const radix_node *root = &rc->root;
    const kv_pool *pool = rc->pool;
    if (root->len != 0 || root->parent) return sgl_error_set(err, "root has an edge or a parent");
    int64_t listed = 0;
    for (const radix_node *x = rc->all_head; x; x = x->all_next) {
        if (x->all_next && x->all_next->all_prev != x)
            return sgl_error_set(err, "node list broken at node %" PRIu64, x->id);
        if (++listed > rc->n_nodes) break;
    }
    if (listed != rc->n_nodes)
        return sgl_error_set(err, "node list has %" PRId64 "+ nodes, count says %" PRId64, listed,
                             rc->n_nodes);

    const radix_node **stack = malloc(sizeof *stack * (size_t)(rc->n_nodes + 1));
    uint8_t *seen = calloc((size_t)pool->n_slots, 1);
    if (!stack || !seen) {
        free(stack);
        free(seen);
        return sgl_error_set(err, "radix check: out of memory");
    }
    int rcode = 0;
    int64_t n_stack = 0, reached = 0, cached = 0, prot = 0;
    stack[n_stack++] = root;
    while (n_stack > 0 && rcode == 0) {
        const radix_node *x = stack[--n_stack];
        if (x != root) {
            reached++;
            if (x->len <= 0) {
                rcode = sgl_error_set(err, "node %" PRIu64 " has an empty edge", x->id);
                break;
            }
            cached += x->len;
            if (x->lock_ref > 0) prot += x->len;
            if (x->last_access > x->parent->last_access && x->parent != root) {
                rcode = sgl_error_set(err, "node %" PRIu64 " used more recently than its parent",
                                      x->id);
                break;
            }
            for (int32_t q = 0; q < x->len; q++) {
                int32_t s = x->slots[q];
                if (s < 0 || s >= pool->n_slots || pool->is_free[s] || seen[s]) {
                    rcode = sgl_error_set(err, "node %" PRIu64 ": slot %d invalid, free or shared",
                                          x->id, s);
                    break;
                }
                seen[s] = 1;
            }
        }
        if (x->lock_ref < 0) {
            rcode = sgl_error_set(err, "node %" PRIu64 " has lock_ref %d", x->id, x->lock_ref);
            break;
        }
        int64_t child_locks = 0;
        for (int32_t c = 0; c < x->n_children && rcode == 0; c++) {
            const radix_node *ch = x->children[c];
            if (ch->parent != x)
                rcode = sgl_error_set(err, "node %" PRIu64 ": wrong parent link", ch->id);
            else if (ch->len <= 0)
                rcode = sgl_error_set(err, "node %" PRIu64 " has an empty edge", ch->id);
            else if (c > 0 && x->children[c - 1]->tokens[0] >= ch->tokens[0])
                rcode = sgl_error_set(err, "children of node %" PRIu64 " not sorted/distinct",
                                      x->id);
            else if (reached + n_stack + 1 > rc->n_nodes)
                rcode = sgl_error_set(err, "more nodes reachable than counted (cycle?)");
            else
                stack[n_stack++] = ch;
            child_locks += ch->lock_ref;
        }
        if (rcode == 0 && child_locks > x->lock_ref)
            rcode = sgl_error_set(err, "node %" PRIu64 ": lock_ref %d < children's sum %" PRId64,
                                  x->id, x->lock_ref, child_locks);
    }
    if (rcode == 0 && reached != rc->n_nodes)
        rcode = sgl_error_set(err, "%" PRId64 " nodes reachable, %" PRId64 " counted", reached,
                              rc->n_nodes);
    if (rcode == 0 && cached != rc->cached)
        rcode = sgl_error_set(err, "edges hold %" PRId64 " tokens, cached says %" PRId64, cached,
                              rc->cached);
    if (rcode == 0 && prot != rc->protected_)
        rcode = sgl_error_set(err, "locked edges hold %" PRId64 " tokens, protected says %" PRId64,
                              prot, rc->protected_);
    free(stack);
    free(seen);
    return rcode;
}

static void dump_node(const radix_node *x, int depth, FILE *out) {
    fprintf(out, "%*s", 2 * depth, "");
    if (depth == 0) {
        fprintf(out, "(root) lock=%d\n", x->lock_ref);
    } else {
        fprintf(out, "#%" PRIu64 " [", x->id);
        int32_t show = SGL_MIN(x->len, 8);
        for (int32_t q = 0; q < show; q++) fprintf(out, q ? " %d" : "%d", x->tokens[q]);
        if (x->len > show) fprintf(out, " ...+%d", x->len - show);
        fprintf(out, "] slots [");
        for (int32_t q = 0; q < show; q++) fprintf(out, q ? " %d" : "%d", x->slots[q]);
        if (x->len > show) fprintf(out, " ...");
        fprintf(out, "] len=%d lock=%d tick=%" PRIu64 "\n", x->len, x->lock_ref, x->last_access);
    }
    for (int32_t c = 0; c < x->n_children; c++) dump_node(x->children[c], depth + 1, out);
}

void radix_dump(const radix_cache *rc, FILE *out) {
    fprintf(out, "radix: %" PRId64 " nodes, %" PRId64 " cached, %" PRId64 " protected\n",
            rc->n_nodes, rc->cached, rc->protected_);
    dump_node(&rc->root, 0, out);
}
