/* prefix_tree.c: the router's approximate radix tree (see prefix_tree.h). */
#include "runtime/remote/prefix_tree.h"

#include <stdlib.h>
#include <string.h>

typedef struct rt_node {
    char *edge;               /* owned; NULL for the root */
    size_t len;
    struct rt_node **kids;
    size_t n_kids, cap_kids;
} rt_node;

struct remote_tree {
    rt_node root;
    size_t bytes, max_bytes;
};

remote_tree *remote_tree_new(size_t max_bytes) {
    remote_tree *t = calloc(1, sizeof *t);
    if (t) t->max_bytes = max_bytes ? max_bytes : ((size_t)64 << 20);
    return t;
}

static void node_clear(rt_node *n) {
    for (size_t i = 0; i < n->n_kids; i++) {
        node_clear(n->kids[i]);
        free(n->kids[i]);
    }
    free(n->kids);
    free(n->edge);
    memset(n, 0, sizeof *n);
}

void remote_tree_free(remote_tree *t) {
    if (!t) return;
    node_clear(&t->root);
    free(t);
}

size_t remote_tree_bytes(const remote_tree *t) { return t->bytes; }

static rt_node *kid_for(const rt_node *n, char c) {
    for (size_t i = 0; i < n->n_kids; i++)
        if (n->kids[i]->edge[0] == c) return n->kids[i];
    return NULL;
}

static size_t common(const char *a, size_t na, const char *b, size_t nb) {
    size_t k = 0;
    while (k < na && k < nb && a[k] == b[k]) k++;
    return k;
}

size_t remote_tree_match(const remote_tree *t, const char *s, size_t n) {
    const rt_node *cur = &t->root;
    size_t pos = 0;
    while (pos < n) {
        const rt_node *k = kid_for(cur, s[pos]);
        if (!k) break;
        size_t c = common(k->edge, k->len, s + pos, n - pos);
        pos += c;
        if (c < k->len) break;
        cur = k;
    }
    return pos;
}

static int add_kid(rt_node *n, rt_node *k) {
    if (n->n_kids == n->cap_kids) {
        size_t nc = n->cap_kids ? n->cap_kids * 2 : 2;
        rt_node **nk = realloc(n->kids, nc * sizeof *nk);
        if (!nk) return -1;
        n->kids = nk;
        n->cap_kids = nc;
    }
    n->kids[n->n_kids++] = k;
    return 0;
}

static rt_node *leaf_new(const char *s, size_t n) {
    rt_node *k = calloc(1, sizeof *k);
    if (!k) return NULL;
    k->edge = malloc(n);
    if (!k->edge) {
        free(k);
        return NULL;
    }
    memcpy(k->edge, s, n);
    k->len = n;
    return k;
}

int remote_tree_insert(remote_tree *t, const char *s, size_t n) {
    if (t->bytes + n > t->max_bytes) { /* relearn from scratch */
        node_clear(&t->root);
        t->bytes = 0;
        if (n > t->max_bytes) return 0;
    }
    rt_node *cur = &t->root;
    size_t pos = 0;
    while (pos < n) {
        rt_node *k = kid_for(cur, s[pos]);
        if (!k) {
            rt_node *leaf = leaf_new(s + pos, n - pos);
            if (!leaf || add_kid(cur, leaf) < 0) {
                if (leaf) free(leaf->edge);
                free(leaf);
                return -1;
            }
            t->bytes += n - pos;
            return 0;
        }
        size_t c = common(k->edge, k->len, s + pos, n - pos);
        if (c < k->len) {
            /* split k: a new node takes k's tail and children */
            rt_node *tail = leaf_new(k->edge + c, k->len - c);
            rt_node **kids = malloc(2 * sizeof *kids);
            if (!tail || !kids) {
                if (tail) free(tail->edge);
                free(tail);
                free(kids);
                return -1;
            }
            tail->kids = k->kids;
            tail->n_kids = k->n_kids;
            tail->cap_kids = k->cap_kids;
            kids[0] = tail;
            k->kids = kids;
            k->n_kids = 1;
            k->cap_kids = 2;
            k->len = c; /* edge keeps its first c bytes (buffer not shrunk) */
        }
        pos += c;
        cur = k;
    }
    return 0;
}
