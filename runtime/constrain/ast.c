/* ast.c: expression-tree builders shared by every constraint front end (cn
 * nodes in a cons_grammar's arena), code point ranges and their UTF-8 byte
 * automata, and diagnostics helpers. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/constrain/cons_internal.h"

void cons_diag_set(cons_diag *d, int32_t off, const char *fmt, ...) {
    if (!d) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->message, sizeof d->message, fmt, ap);
    va_end(ap);
    d->offset = off;
    d->line = d->col = 0;
    d->pointer[0] = 0;
}

void cons_diag_locate(cons_diag *d, const char *text, size_t len) {
    if (!d || d->offset < 0) return;
    int32_t line = 1, col = 1;
    for (size_t i = 0; i < (size_t)d->offset && i < len; i++) {
        if (text[i] == '\n') {
            line++;
            col = 1;
        } else if (((unsigned char)text[i] & 0xC0) != 0x80) {
            col++;
        }
    }
    d->line = line;
    d->col = col;
}

static cn *node(cons_grammar *g, cn_kind k) {
    if (g->oom) return NULL;
    cn *n = sgl_arena_alloc(&g->arena, sizeof *n);
    if (!n) {
        g->oom = 1;
        return NULL;
    }
    n->kind = k;
    n->rule = -1;
    n->off = -1;
    return n;
}

cn *cn_empty(cons_grammar *g) { return node(g, CN_EMPTY); }

cn *cn_set(cons_grammar *g, const uint32_t set[8]) {
    cn *n = node(g, CN_SET);
    if (!n) return NULL;
    uint32_t *s = sgl_arena_alloc(&g->arena, 32);
    if (!s) {
        g->oom = 1;
        return NULL;
    }
    memcpy(s, set, 32);
    n->set = s;
    return n;
}

cn *cn_range(cons_grammar *g, uint8_t lo, uint8_t hi) {
    uint32_t s[8] = {0};
    for (unsigned b = lo; b <= hi; b++) s[b >> 5] |= 1u << (b & 31);
    return cn_set(g, s);
}

cn *cn_byte(cons_grammar *g, uint8_t b) { return cn_range(g, b, b); }

cn *cn_lit(cons_grammar *g, const char *s, size_t len) {
    if (len == 0) return cn_empty(g);
    cn *n = node(g, CN_LIT);
    if (!n) return NULL;
    uint8_t *c = sgl_arena_alloc(&g->arena, len);
    if (!c) {
        g->oom = 1;
        return NULL;
    }
    memcpy(c, s, len);
    n->lit = c;
    n->n = (int32_t)len;
    return n;
}

cn *cn_str(cons_grammar *g, const char *s) { return cn_lit(g, s, strlen(s)); }

static cn *multi(cons_grammar *g, cn_kind k, cn *const *kids, int32_t n) {
    for (int32_t i = 0; i < n; i++)
        if (!kids[i]) return NULL;
    if (n == 1) return kids[0];
    if (n == 0 && k == CN_CAT) return cn_empty(g);
    cn *x = node(g, k);
    if (!x) return NULL;
    x->kids = sgl_arena_alloc(&g->arena, sizeof(cn *) * (size_t)(n ? n : 1));
    if (!x->kids) {
        g->oom = 1;
        return NULL;
    }
    memcpy(x->kids, kids, sizeof(cn *) * (size_t)n);
    x->n = n;
    return x;
}

cn *cn_cat(cons_grammar *g, cn *const *kids, int32_t n) { return multi(g, CN_CAT, kids, n); }
cn *cn_alt(cons_grammar *g, cn *const *kids, int32_t n) { return multi(g, CN_ALT, kids, n); }
cn *cn_cat2(cons_grammar *g, cn *a, cn *b) {
    cn *k[2] = {a, b};
    return cn_cat(g, k, 2);
}
cn *cn_cat3(cons_grammar *g, cn *a, cn *b, cn *c) {
    cn *k[3] = {a, b, c};
    return cn_cat(g, k, 3);
}
cn *cn_alt2(cons_grammar *g, cn *a, cn *b) {
    cn *k[2] = {a, b};
    return cn_alt(g, k, 2);
}

cn *cn_rep(cons_grammar *g, cn *kid, int32_t min, int32_t max) {
    if (!kid) return NULL;
    if (min == 1 && max == 1) return kid;
    cn *n = node(g, CN_REP);
    if (!n) return NULL;
    n->kids = sgl_arena_alloc(&g->arena, sizeof(cn *));
    if (!n->kids) {
        g->oom = 1;
        return NULL;
    }
    n->kids[0] = kid;
    n->n = 1;
    n->min = min;
    n->max = max;
    return n;
}

cn *cn_opt(cons_grammar *g, cn *kid) { return cn_rep(g, kid, 0, 1); }

cn *cn_ref(cons_grammar *g, int32_t rule) {
    cn *n = node(g, CN_REF);
    if (n) n->rule = rule;
    return n;
}

cn *cn_anchor(cons_grammar *g, cn_kind k) { return node(g, k); }

/* ---- UTF-8 ------------------------------------------------------------------- */

int cn_utf8_encode(uint32_t c, uint8_t *o) {
    if (c < 0x80) {
        o[0] = (uint8_t)c;
        return 1;
    }
    if (c < 0x800) {
        o[0] = (uint8_t)(0xC0 | (c >> 6));
        o[1] = (uint8_t)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        o[0] = (uint8_t)(0xE0 | (c >> 12));
        o[1] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
        o[2] = (uint8_t)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (uint8_t)(0xF0 | (c >> 18));
    o[1] = (uint8_t)(0x80 | ((c >> 12) & 0x3F));
    o[2] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
    o[3] = (uint8_t)(0x80 | (c & 0x3F));
    return 4;
}

/* UTF-8 sequences of one length: byte ranges lo[i]..hi[i] per position. */
typedef struct useq {
    uint8_t lo[4], hi[4];
} useq;

typedef struct useqs {
    useq *v;
    int32_t n, cap;
} useqs;

static int useq_push(useqs *a, const uint8_t *lo, const uint8_t *hi, int n) {
    if (a->n == a->cap) {
        int32_t cap = a->cap ? a->cap * 2 : 16;
        useq *v = realloc(a->v, sizeof *v * (size_t)cap);
        if (!v) return -1;
        a->v = v;
        a->cap = cap;
    }
    memcpy(a->v[a->n].lo, lo, (size_t)n);
    memcpy(a->v[a->n].hi, hi, (size_t)n);
    a->n++;
    return 0;
}

/* Splits lo..hi into ranges whose UTF-8 encodings are byte-range products
 * (the classic construction), appending each to by_len[length - 1]. */
static int utf8_split(useqs *by_len, uint32_t lo, uint32_t hi, int depth) {
    if (lo > hi) return 0;
    if (depth > 64) return -1;
    if (lo <= 0xDFFF && hi >= 0xD800) {
        if (lo < 0xD800 && utf8_split(by_len, lo, 0xD7FF, depth + 1)) return -1;
        if (hi > 0xDFFF && utf8_split(by_len, 0xE000, hi, depth + 1)) return -1;
        return 0;
    }
    static const uint32_t bounds[3] = {0x7F, 0x7FF, 0xFFFF};
    for (int i = 0; i < 3; i++)
        if (lo <= bounds[i] && hi > bounds[i])
            return utf8_split(by_len, lo, bounds[i], depth + 1) ||
                   utf8_split(by_len, bounds[i] + 1, hi, depth + 1) ? -1 : 0;
    uint8_t x[4], y[4];
    int n = cn_utf8_encode(lo, x);
    for (int i = 1; i < n; i++) {
        uint32_t m = (1u << (6 * i)) - 1;
        if ((lo & ~m) != (hi & ~m)) {
            if ((lo & m) != 0)
                return utf8_split(by_len, lo, lo | m, depth + 1) ||
                       utf8_split(by_len, (lo | m) + 1, hi, depth + 1) ? -1 : 0;
            if ((hi & m) != m)
                return utf8_split(by_len, lo, (hi & ~m) - 1, depth + 1) ||
                       utf8_split(by_len, hi & ~m, hi, depth + 1) ? -1 : 0;
        }
    }
    cn_utf8_encode(hi, y);
    return useq_push(&by_len[n - 1], x, y, n);
}

/* Sequences v[0..n) of lengths len[0..n) (0: the empty string) as a tree
 * that shares common suffixes: grouped by their last byte range, each group
 * is (its prefixes, factored the same way) followed by that range, so the
 * automaton reaches one state for "one continuation byte left" whatever the
 * lead byte and the sequence's length were. */
static cn *factor(cons_grammar *g, const useq *v, const uint8_t *len, int32_t n) {
    cn **alts = malloc(sizeof *alts * ((size_t)n + 1));
    useq *grp = malloc(sizeof *grp * ((size_t)n + 1));
    uint8_t *glen = malloc((size_t)n + 1);
    uint8_t *done = calloc((size_t)n + 1, 1);
    cn *res = NULL;
    int32_t na = 0;
    bool empty = false;
    uint32_t single[8] = {0}; /* one-byte sequences: one set */
    bool any_single = false;
    if (!alts || !grp || !glen || !done) goto out;
    for (int32_t i = 0; i < n; i++) {
        if (len[i] == 0) empty = true;
        if (len[i] != 1) continue;
        done[i] = 1;
        any_single = true;
        for (unsigned c = v[i].lo[0]; c <= v[i].hi[0]; c++) single[c >> 5] |= 1u << (c & 31);
    }
    if (any_single) alts[na++] = cn_set(g, single);
    for (int32_t i = 0; i < n; i++) {
        if (done[i] || len[i] < 2) continue;
        int32_t ng = 0;
        uint8_t l = v[i].lo[len[i] - 1], h = v[i].hi[len[i] - 1];
        for (int32_t j = i; j < n; j++)
            if (!done[j] && len[j] >= 2 && v[j].lo[len[j] - 1] == l && v[j].hi[len[j] - 1] == h) {
                done[j] = 1;
                grp[ng] = v[j];
                glen[ng++] = (uint8_t)(len[j] - 1);
            }
        cn *pre = factor(g, grp, glen, ng);
        if (!pre) goto out;
        alts[na++] = cn_cat2(g, pre, cn_range(g, l, h));
    }
    if (empty) alts[na++] = cn_empty(g);
    res = na == 1 ? alts[0] : cn_alt(g, alts, na);
out:
    if (!res) g->oom = 1;
    free(alts);
    free(grp);
    free(glen);
    free(done);
    return res;
}

cn *cn_codepoints(cons_grammar *g, const uint32_t *lo, const uint32_t *hi, int32_t n) {
    useqs by_len[4] = {{0}};
    cn *r = NULL;
    useq *all = NULL;
    uint8_t *lens = NULL;
    for (int32_t i = 0; i < n; i++)
        if (utf8_split(by_len, lo[i], hi[i] > 0x10FFFF ? 0x10FFFF : hi[i], 0)) {
            g->oom = 1;
            goto out;
        }
    int32_t total = by_len[0].n + by_len[1].n + by_len[2].n + by_len[3].n, k = 0;
    if (!total) goto out;
    all = malloc(sizeof *all * (size_t)total);
    lens = malloc((size_t)total);
    if (!all || !lens) {
        g->oom = 1;
        goto out;
    }
    for (int l = 1; l <= 4; l++)
        for (int32_t i = 0; i < by_len[l - 1].n; i++) {
            all[k] = by_len[l - 1].v[i];
            lens[k++] = (uint8_t)l;
        }
    r = factor(g, all, lens, total);
out:
    for (int l = 0; l < 4; l++) free(by_len[l].v);
    free(all);
    free(lens);
    return r;
}

/* ---- code point ranges ----------------------------------------------------- */

int cpr_add(cp_ranges *r, uint32_t lo, uint32_t hi) {
    if (r->n == r->cap) {
        int32_t cap = r->cap ? r->cap * 2 : 8;
        uint32_t *l = realloc(r->lo, sizeof *l * (size_t)cap);
        if (!l) return -1;
        r->lo = l;
        uint32_t *h = realloc(r->hi, sizeof *h * (size_t)cap);
        if (!h) return -1;
        r->hi = h;
        r->cap = cap;
    }
    r->lo[r->n] = lo;
    r->hi[r->n] = hi;
    r->n++;
    return 0;
}

void cpr_normalize(cp_ranges *r) {
    /* insertion sort: classes are short */
    for (int32_t i = 1; i < r->n; i++) {
        uint32_t l = r->lo[i], h = r->hi[i];
        int32_t j = i - 1;
        while (j >= 0 && r->lo[j] > l) {
            r->lo[j + 1] = r->lo[j];
            r->hi[j + 1] = r->hi[j];
            j--;
        }
        r->lo[j + 1] = l;
        r->hi[j + 1] = h;
    }
    int32_t w = 0;
    for (int32_t i = 0; i < r->n; i++) {
        if (w > 0 && r->lo[i] <= r->hi[w - 1] + 1) {
            if (r->hi[i] > r->hi[w - 1]) r->hi[w - 1] = r->hi[i];
        } else {
            r->lo[w] = r->lo[i];
            r->hi[w] = r->hi[i];
            w++;
        }
    }
    r->n = w;
}

int cpr_negate(cp_ranges *r) {
    cpr_normalize(r);
    cp_ranges o = {0};
    uint32_t next = 0;
    for (int32_t i = 0; i < r->n; i++) {
        if (r->lo[i] > next && cpr_add(&o, next, r->lo[i] - 1)) goto oom;
        next = r->hi[i] + 1;
    }
    if (next <= 0x10FFFF && cpr_add(&o, next, 0x10FFFF)) goto oom;
    cpr_free(r);
    *r = o;
    return 0;
oom:
    cpr_free(&o);
    return -1;
}

void cpr_free(cp_ranges *r) {
    free(r->lo);
    free(r->hi);
    memset(r, 0, sizeof *r);
}

/* ---- rules ----------------------------------------------------------------- */

int32_t cg_rule_add(cons_grammar *g, const char *name, size_t name_len, int32_t off) {
    if (name) {
        for (int32_t i = 0; i < g->n_rules; i++)
            if (g->rules[i].name && strlen(g->rules[i].name) == name_len &&
                memcmp(g->rules[i].name, name, name_len) == 0)
                return i;
    }
    if (g->n_rules == g->cap_rules) {
        int32_t cap = g->cap_rules ? g->cap_rules * 2 : 16;
        struct cg_rule *r = realloc(g->rules, sizeof *r * (size_t)cap);
        if (!r) {
            g->oom = 1;
            return -1;
        }
        g->rules = r;
        g->cap_rules = cap;
    }
    struct cg_rule *r = &g->rules[g->n_rules];
    r->name = name ? sgl_arena_strndup(&g->arena, name, name_len) : NULL;
    r->body = NULL;
    r->off = off;
    return g->n_rules++;
}

void cg_free(cons_grammar *g) {
    sgl_arena_free(&g->arena);
    free(g->rules);
    memset(g, 0, sizeof *g);
}
