/* build.c: cons_grammar -> byte NFA -> (no recursion) minimised DFA.
 *
 * The NFA is built in continuation-passing style: build(node, cont) returns
 * the entry state of a fragment that continues at state cont. A reference to
 * a non-recursive rule is inlined, memoised per (rule, cont), so a rule used
 * in several places with the same continuation (the optional-property chains
 * of a JSON object) is built once. A rule that reaches itself stays a CALL
 * edge and the result runs on the Earley recogniser.
 *
 * The DFA: bytes are grouped into classes (bytes no set tells apart), the
 * subset construction runs over classes with closures that keep only states
 * with byte edges (plus an accept flag) as the key, states that cannot reach
 * acceptance are pruned, and Valmari's partition refinement (Hopcroft's
 * algorithm for partial DFAs) minimises. The state budget (max_states) bounds
 * the minimised DFA (and 4x that the subset construction) and is named when
 * exceeded.
 */
#include <stdlib.h>
#include <string.h>

#include "runtime/constrain/cons_internal.h"

#define MAX_INLINE_DEPTH 2000

typedef struct i32v {
    int32_t *v;
    int32_t n, cap;
} i32v;

static int v_push(i32v *x, int32_t e) {
    if (x->n == x->cap) {
        int32_t cap = x->cap ? x->cap * 2 : 64;
        int32_t *nv = realloc(x->v, sizeof *nv * (size_t)cap);
        if (!nv) return -1;
        x->v = nv;
        x->cap = cap;
    }
    x->v[x->n++] = e;
    return 0;
}

/* ---- NFA construction ---------------------------------------------------- */

typedef struct nb {
    cons_grammar *g;
    cons_nfa *a;
    int32_t cap_states, cap_edges, cap_sets;
    int32_t limit;
    int failed; /* 1: over limit, 2: out of memory, 3: nesting */
    int32_t byte_set[256];
    int32_t *set_hash; /* open addressing over set ids, size set_hcap */
    int32_t set_hcap;
    uint8_t *is_call;
    /* memo (rule, cont) -> entry for inlined rules */
    int64_t *memo_key;
    int32_t *memo_val;
    int32_t memo_cap, memo_n;
    int depth;
} nb;

/* Resizes *p to cap entries; on failure *p is left as it was. */
static int grow_i32(int32_t **p, int32_t cap) {
    int32_t *v = realloc(*p, sizeof *v * (size_t)cap);
    if (!v) return -1;
    *p = v;
    return 0;
}

static int32_t nb_state(nb *b) {
    cons_nfa *a = b->a;
    if (b->failed) return -1;
    if (a->n_states >= b->limit) {
        b->failed = 1;
        return -1;
    }
    if (a->n_states == b->cap_states) {
        int32_t cap = b->cap_states ? b->cap_states * 2 : 256;
        if (grow_i32(&a->head, cap) || grow_i32(&a->final_of, cap)) goto oom;
        b->cap_states = cap;
    }
    a->head[a->n_states] = -1;
    a->final_of[a->n_states] = -1;
    return a->n_states++;
oom:
    b->failed = 2;
    return -1;
}

static void nb_edge(nb *b, int32_t from, int32_t to, int32_t label) {
    cons_nfa *a = b->a;
    if (b->failed || from < 0 || to < 0) return;
    if (a->n_edges == b->cap_edges) {
        int32_t cap = b->cap_edges ? b->cap_edges * 2 : 512;
        if (grow_i32(&a->e_to, cap) || grow_i32(&a->e_label, cap) || grow_i32(&a->e_next, cap)) goto oom;
        b->cap_edges = cap;
    }
    int32_t e = a->n_edges++;
    a->e_to[e] = to;
    a->e_label[e] = label;
    a->e_next[e] = a->head[from];
    a->head[from] = e;
    return;
oom:
    b->failed = 2;
}

static uint32_t set_hash(const uint32_t *s) {
    uint32_t h = 2166136261u;
    for (int i = 0; i < 8; i++) h = (h ^ s[i]) * 16777619u;
    return h;
}

static int nb_set_rehash(nb *b, int32_t cap) {
    int32_t *t = malloc(sizeof *t * (size_t)cap);
    if (!t) return -1;
    for (int32_t i = 0; i < cap; i++) t[i] = -1;
    for (int32_t id = 0; id < b->a->n_sets; id++) {
        uint32_t h = set_hash(b->a->sets[id]) & (uint32_t)(cap - 1);
        while (t[h] >= 0) h = (h + 1) & (uint32_t)(cap - 1);
        t[h] = id;
    }
    free(b->set_hash);
    b->set_hash = t;
    b->set_hcap = cap;
    return 0;
}

/* Returns the id of byte set s (deduplicated) or -1. */
static int32_t nb_set(nb *b, const uint32_t *s) {
    cons_nfa *a = b->a;
    if (b->failed) return -1;
    if (a->n_sets * 2 >= b->set_hcap && nb_set_rehash(b, b->set_hcap ? b->set_hcap * 2 : 256))
        goto oom;
    uint32_t h = set_hash(s) & (uint32_t)(b->set_hcap - 1);
    while (b->set_hash[h] >= 0) {
        if (memcmp(a->sets[b->set_hash[h]], s, 32) == 0) return b->set_hash[h];
        h = (h + 1) & (uint32_t)(b->set_hcap - 1);
    }
    if (a->n_sets == b->cap_sets) {
        int32_t cap = b->cap_sets ? b->cap_sets * 2 : 64;
        uint32_t(*v)[8] = realloc(a->sets, sizeof *v * (size_t)cap);
        if (!v) goto oom;
        a->sets = v;
        b->cap_sets = cap;
    }
    memcpy(a->sets[a->n_sets], s, 32);
    b->set_hash[h] = a->n_sets;
    return a->n_sets++;
oom:
    b->failed = 2;
    return -1;
}

static int32_t nb_byte_set(nb *b, uint8_t c) {
    if (b->byte_set[c] < 0) {
        uint32_t s[8] = {0};
        s[c >> 5] = 1u << (c & 31);
        b->byte_set[c] = nb_set(b, s);
    }
    return b->byte_set[c];
}

static uint64_t memo_h(int64_t k) {
    uint64_t x = (uint64_t)k * 0x9E3779B97F4A7C15ull;
    return x ^ (x >> 29);
}

static int32_t memo_get(nb *b, int32_t rule, int32_t cont) {
    if (!b->memo_cap) return -1;
    int64_t k = ((int64_t)rule << 32) | (uint32_t)cont;
    for (uint64_t h = memo_h(k) & (uint64_t)(b->memo_cap - 1);; h = (h + 1) & (uint64_t)(b->memo_cap - 1)) {
        if (b->memo_key[h] == -1) return -1;
        if (b->memo_key[h] == k) return b->memo_val[h];
    }
}

static void memo_put(nb *b, int32_t rule, int32_t cont, int32_t entry) {
    if ((b->memo_n + 1) * 2 > b->memo_cap) {
        int32_t cap = b->memo_cap ? b->memo_cap * 2 : 64;
        int64_t *k = malloc(sizeof *k * (size_t)cap);
        int32_t *v = malloc(sizeof *v * (size_t)cap);
        if (!k || !v) {
            free(k);
            free(v);
            b->failed = 2;
            return;
        }
        for (int32_t i = 0; i < cap; i++) k[i] = -1;
        for (int32_t i = 0; i < b->memo_cap; i++) {
            if (b->memo_key[i] == -1) continue;
            uint64_t h = memo_h(b->memo_key[i]) & (uint64_t)(cap - 1);
            while (k[h] != -1) h = (h + 1) & (uint64_t)(cap - 1);
            k[h] = b->memo_key[i];
            v[h] = b->memo_val[i];
        }
        free(b->memo_key);
        free(b->memo_val);
        b->memo_key = k;
        b->memo_val = v;
        b->memo_cap = cap;
    }
    int64_t k = ((int64_t)rule << 32) | (uint32_t)cont;
    uint64_t h = memo_h(k) & (uint64_t)(b->memo_cap - 1);
    while (b->memo_key[h] != -1) h = (h + 1) & (uint64_t)(b->memo_cap - 1);
    b->memo_key[h] = k;
    b->memo_val[h] = entry;
    b->memo_n++;
}

static int32_t nb_build(nb *b, const cn *n, int32_t cont) {
    if (b->failed || cont < 0) return -1;
    switch (n->kind) {
    case CN_EMPTY: return cont;
    case CN_SET: {
        int32_t s = nb_state(b);
        nb_edge(b, s, cont, nb_set(b, n->set));
        return s;
    }
    case CN_LIT: {
        int32_t c = cont;
        for (int32_t i = n->n - 1; i >= 0; i--) {
            int32_t s = nb_state(b);
            nb_edge(b, s, c, nb_byte_set(b, n->lit[i]));
            c = s;
        }
        return c;
    }
    case CN_CAT: {
        int32_t c = cont;
        for (int32_t i = n->n - 1; i >= 0; i--) c = nb_build(b, n->kids[i], c);
        return c;
    }
    case CN_ALT: {
        int32_t s = nb_state(b);
        for (int32_t i = 0; i < n->n; i++) nb_edge(b, s, nb_build(b, n->kids[i], cont), CE_EPS);
        return s;
    }
    case CN_REP: {
        int32_t c;
        if (n->max < 0) {
            int32_t loop = nb_state(b);
            nb_edge(b, loop, nb_build(b, n->kids[0], loop), CE_EPS);
            nb_edge(b, loop, cont, CE_EPS);
            c = loop;
        } else {
            c = cont;
            for (int32_t i = 0; i < n->max - n->min; i++) {
                int32_t s = nb_state(b);
                nb_edge(b, s, nb_build(b, n->kids[0], c), CE_EPS);
                nb_edge(b, s, cont, CE_EPS);
                c = s;
            }
        }
        for (int32_t i = 0; i < n->min; i++) c = nb_build(b, n->kids[0], c);
        return c;
    }
    case CN_REF: {
        if (b->is_call[n->rule]) {
            int32_t s = nb_state(b);
            nb_edge(b, s, cont, -(n->rule + 4));
            return s;
        }
        int32_t e = memo_get(b, n->rule, cont);
        if (e >= 0) return e;
        if (++b->depth > MAX_INLINE_DEPTH) {
            b->failed = 3;
            return -1;
        }
        e = nb_build(b, b->g->rules[n->rule].body, cont);
        b->depth--;
        if (e >= 0) memo_put(b, n->rule, cont, e);
        return e;
    }
    case CN_BOL:
    case CN_EOL: {
        int32_t s = nb_state(b);
        nb_edge(b, s, cont, n->kind == CN_BOL ? CE_BOL : CE_EOL);
        return s;
    }
    }
    return -1;
}

/* Appends the rules a node references to out (deduplicated by mark). */
static int collect_refs(const cn *n, i32v *out, uint8_t *mark, int depth) {
    if (depth > 10000) return -1;
    if (n->kind == CN_REF) {
        if (!mark[n->rule]) {
            mark[n->rule] = 1;
            if (v_push(out, n->rule)) return -1;
        }
        return 0;
    }
    if (n->kind == CN_CAT || n->kind == CN_ALT || n->kind == CN_REP)
        for (int32_t i = 0; i < n->n; i++)
            if (collect_refs(n->kids[i], out, mark, depth + 1)) return -1;
    return 0;
}

/* Marks rules that reach themselves (is_call) among those reachable from
 * start; reach gets the reachable set. Returns -1 on out of memory. */
static int find_recursion(cons_grammar *g, uint8_t *is_call, uint8_t *reach) {
    int32_t R = g->n_rules;
    int32_t *adj_off = calloc((size_t)R + 1, sizeof *adj_off);
    i32v adj = {0};
    uint8_t *mark = calloc((size_t)R + 1, 1);
    int32_t *stack = malloc(sizeof *stack * ((size_t)R + 1));
    uint8_t *seen = malloc((size_t)R + 1);
    int rc = -1;
    if (!adj_off || !mark || !stack || !seen) goto out;
    for (int32_t r = 0; r < R; r++) {
        adj_off[r] = adj.n;
        int32_t from = adj.n;
        if (g->rules[r].body && collect_refs(g->rules[r].body, &adj, mark, 0)) goto out;
        for (int32_t k = from; k < adj.n; k++) mark[adj.v[k]] = 0;
    }
    adj_off[R] = adj.n;
    int32_t *av = adj.v;
    /* reachability from start */
    memset(reach, 0, (size_t)R);
    int32_t sp = 0;
    stack[sp++] = g->start;
    reach[g->start] = 1;
    while (sp) {
        int32_t r = stack[--sp];
        for (int32_t k = adj_off[r]; k < adj_off[r + 1]; k++)
            if (!reach[av[k]]) {
                reach[av[k]] = 1;
                stack[sp++] = av[k];
            }
    }
    for (int32_t r = 0; r < R; r++) {
        is_call[r] = 0;
        if (!reach[r]) continue;
        memset(seen, 0, (size_t)R);
        sp = 0;
        for (int32_t k = adj_off[r]; k < adj_off[r + 1]; k++)
            if (!seen[av[k]]) {
                seen[av[k]] = 1;
                stack[sp++] = av[k];
            }
        while (sp && !seen[r]) {
            int32_t q = stack[--sp];
            for (int32_t k = adj_off[q]; k < adj_off[q + 1]; k++)
                if (!seen[av[k]]) {
                    seen[av[k]] = 1;
                    stack[sp++] = av[k];
                }
        }
        is_call[r] = seen[r];
    }
    rc = 0;
out:
    free(adj_off);
    free(adj.v);
    free(mark);
    free(stack);
    free(seen);
    return rc;
}

/* Whether each rule can derive some text (fixpoint). */
static bool productive(const cn *n, const uint8_t *prod) {
    switch (n->kind) {
    case CN_EMPTY:
    case CN_SET:
    case CN_LIT:
    case CN_BOL:
    case CN_EOL: return true;
    case CN_CAT:
        for (int32_t i = 0; i < n->n; i++)
            if (!productive(n->kids[i], prod)) return false;
        return true;
    case CN_ALT:
        for (int32_t i = 0; i < n->n; i++)
            if (productive(n->kids[i], prod)) return true;
        return false;
    case CN_REP: return n->min == 0 || productive(n->kids[0], prod);
    case CN_REF: return prod[n->rule];
    }
    return false;
}

void cons_nfa_free(cons_nfa *a) {
    if (!a) return;
    free(a->head);
    free(a->final_of);
    free(a->e_to);
    free(a->e_label);
    free(a->e_next);
    free(a->sets);
    free(a->rule_entry);
    free(a);
}

static void lazy_free(cons_dfa_lazy *z);

void cons_dfa_free(cons_dfa *d) {
    if (!d) return;
    lazy_free(d->lz);
    free(d->delta);
    free(d->accept);
    free(d->forced);
    free(d);
}

static int build_dfa(cons_nfa *a, const cons_options *opt, cons_dfa **out, bool *took_nfa,
                     cons_diag *diag);

int cons_build(cons_grammar *g, const cons_options *opt, cons_dfa **dfa, cons_nfa **nfa,
               cons_diag *diag) {
    *dfa = NULL;
    *nfa = NULL;
    int32_t R = g->n_rules;
    if (g->oom) {
        cons_diag_set(diag, -1, "out of memory");
        return -1;
    }
    if (R == 0 || g->start < 0 || g->start >= R) {
        cons_diag_set(diag, -1, "no rules");
        return -1;
    }
    nb b = {.g = g};
    memset(b.byte_set, -1, sizeof b.byte_set);
    int64_t lim = (int64_t)(opt->max_states > 0 ? opt->max_states : 20000) * 50;
    b.limit = lim > 4000000 ? 4000000 : (int32_t)lim;
    b.a = calloc(1, sizeof *b.a);
    b.is_call = calloc((size_t)R + 1, 1);
    uint8_t *reach = calloc((size_t)R + 1, 1);
    uint8_t *prod = calloc((size_t)R + 1, 1);
    int rc = -1;
    if (!b.a || !b.is_call || !reach || !prod || find_recursion(g, b.is_call, reach)) {
        cons_diag_set(diag, -1, "out of memory");
        goto out;
    }
    for (bool changed = true; changed;) {
        changed = false;
        for (int32_t r = 0; r < R; r++)
            if (!prod[r] && g->rules[r].body && productive(g->rules[r].body, prod)) {
                prod[r] = 1;
                changed = true;
            }
    }
    for (int32_t r = 0; r < R; r++)
        if (reach[r] && !prod[r]) {
            if (g->rules[r].name)
                cons_diag_set(diag, g->rules[r].off, "rule '%s' can never match any text (it only recurses)",
                              g->rules[r].name);
            else
                cons_diag_set(diag, g->rules[r].off, "a recursive definition can never match any text");
            goto out;
        }
    cons_nfa *a = b.a;
    a->n_rules = R;
    a->accept = nb_state(&b);
    if (a->accept >= 0) a->final_of[a->accept] = R;
    cn start_ref = {.kind = CN_REF, .rule = g->start, .off = -1};
    a->start = nb_build(&b, &start_ref, a->accept);
    bool any_call = false;
    a->rule_entry = malloc(sizeof *a->rule_entry * ((size_t)R + 1));
    if (!a->rule_entry) b.failed = 2;
    for (int32_t r = 0; r < R && !b.failed; r++) {
        a->rule_entry[r] = -1;
        if (!b.is_call[r] || !reach[r]) continue;
        any_call = true;
        int32_t f = nb_state(&b);
        if (f >= 0) a->final_of[f] = r;
        a->rule_entry[r] = nb_build(&b, g->rules[r].body, f);
    }
    if (b.failed) {
        if (b.failed == 1)
            cons_diag_set(diag, -1,
                          "constraint too large: its automaton needs more than %d NFA states "
                          "(50 x the state budget max_states = %d)",
                          b.limit, opt->max_states);
        else if (b.failed == 3)
            cons_diag_set(diag, -1, "rules nested more than %d deep", MAX_INLINE_DEPTH);
        else
            cons_diag_set(diag, -1, "out of memory");
        goto out;
    }
    if (any_call) {
        *nfa = b.a;
        b.a = NULL;
        rc = 0;
    } else {
        bool took = false;
        rc = build_dfa(b.a, opt, dfa, &took, diag);
        if (took) b.a = NULL; /* a lazily built DFA keeps its NFA */
    }
out:
    cons_nfa_free(b.a);
    free(b.is_call);
    free(reach);
    free(prod);
    free(b.set_hash);
    free(b.memo_key);
    free(b.memo_val);
    return rc;
}

/* ---- subset construction --------------------------------------------------- */

typedef struct sc {
    const cons_nfa *a;
    int32_t n_cls;
    uint64_t (*cmask)[4]; /* per set: classes it contains */
    uint8_t *has_set;     /* state has a byte edge */
    int32_t *vis[2];
    int32_t gen;
    int32_t *imp_gen;
    i32v stack, imp;
    /* DFA states */
    i32v keys;    /* concatenated sorted keys */
    i32v key_off, key_len;
    i32v acc, delta;
    int32_t *tab;
    int32_t tab_cap;
    int64_t work; /* NFA states visited by closures so far */
    int64_t work_budget;
    int32_t sub_budget;   /* most DFA states (before minimisation) */
    uint8_t *live_imp;    /* NFA state kept in keys: one of its byte edges leads on to acceptance */
    i32v *bucket;         /* per byte class: NFA states reached (expand_row's scratch) */
    i32v level;           /* eager: BFS depth of each DFA state */
    cons_dfa *lz_d;       /* lazy: the DFA whose arrays new states are written into */
} sc;

static int cmp_i32(const void *x, const void *y) {
    int32_t a = *(const int32_t *)x, b = *(const int32_t *)y;
    return (a > b) - (a < b);
}

/* Closure of seeds: sorted states with byte edges into s->imp; returns accept. */
static int closure(sc *s, const int32_t *seeds, int32_t n, bool at_start, bool *acc) {
    const cons_nfa *a = s->a;
    s->gen++;
    s->imp.n = 0;
    s->stack.n = 0;
    *acc = false;
    for (int32_t i = 0; i < n; i++) {
        if (s->vis[0][seeds[i]] == s->gen) continue;
        s->vis[0][seeds[i]] = s->gen;
        if (v_push(&s->stack, seeds[i] * 2)) return -1;
    }
    while (s->stack.n) {
        s->work++;
        int32_t x = s->stack.v[--s->stack.n];
        int32_t q = x >> 1, ended = x & 1;
        if (q == a->accept) *acc = true;
        for (int32_t e = a->head[q]; e >= 0; e = a->e_next[e]) {
            int32_t l = a->e_label[e], to = a->e_to[e], m = ended;
            if (l >= 0) {
                if (!ended && s->imp_gen[q] != s->gen && s->live_imp[q]) {
                    s->imp_gen[q] = s->gen;
                    if (v_push(&s->imp, q)) return -1;
                }
                continue;
            }
            if (l == CE_BOL && !at_start) continue;
            if (l == CE_EOL) m = 1;
            if (s->vis[m][to] == s->gen) continue;
            s->vis[m][to] = s->gen;
            if (v_push(&s->stack, to * 2 + m)) return -1;
        }
    }
    if (s->imp.n > 1) qsort(s->imp.v, (size_t)s->imp.n, sizeof(int32_t), cmp_i32);
    s->work += (int64_t)s->imp.n * 8; /* the sort and the key */
    return 0;
}

static uint32_t key_hash(const int32_t *k, int32_t n, bool acc) {
    uint32_t h = acc ? 0x9747b28cu : 2166136261u;
    for (int32_t i = 0; i < n; i++) h = (h ^ (uint32_t)k[i]) * 16777619u;
    return h ^ (h >> 15);
}

/* Finds or adds the DFA state of the closure in s->imp / acc. Returns its
 * number, -1 dead, -2 out of memory, -3 over budget. */
static int32_t intern(sc *s, bool acc, int32_t budget) {
    if (s->imp.n == 0 && !acc) return -1;
    if ((s->acc.n + 1) * 2 > s->tab_cap) {
        int32_t cap = s->tab_cap ? s->tab_cap * 2 : 1024;
        int32_t *t = malloc(sizeof *t * (size_t)cap);
        if (!t) return -2;
        for (int32_t i = 0; i < cap; i++) t[i] = -1;
        for (int32_t d = 0; d < s->acc.n; d++) {
            uint32_t h = key_hash(s->keys.v + s->key_off.v[d], s->key_len.v[d], s->acc.v[d]) &
                         (uint32_t)(cap - 1);
            while (t[h] >= 0) h = (h + 1) & (uint32_t)(cap - 1);
            t[h] = d;
        }
        free(s->tab);
        s->tab = t;
        s->tab_cap = cap;
    }
    uint32_t h = key_hash(s->imp.v, s->imp.n, acc) & (uint32_t)(s->tab_cap - 1);
    for (; s->tab[h] >= 0; h = (h + 1) & (uint32_t)(s->tab_cap - 1)) {
        int32_t d = s->tab[h];
        if (s->acc.v[d] == acc && s->key_len.v[d] == s->imp.n &&
            memcmp(s->keys.v + s->key_off.v[d], s->imp.v, sizeof(int32_t) * (size_t)s->imp.n) == 0)
            return d;
    }
    if (s->acc.n >= budget) return -3;
    int32_t d = s->acc.n;
    if (v_push(&s->key_off, s->keys.n) || v_push(&s->key_len, s->imp.n) || v_push(&s->acc, acc))
        return -2;
    for (int32_t i = 0; i < s->imp.n; i++)
        if (v_push(&s->keys, s->imp.v[i])) return -2;
    s->tab[h] = d;
    return d;
}

/* ---- minimisation (Valmari & Lehtinen's partition refinement) ------------- */

typedef struct part {
    int32_t z;
    int32_t *E, *L, *S, *F, *P, *M, *W;
    int32_t w;
} part;

static int part_init(part *p, int32_t n) {
    size_t sz = sizeof(int32_t) * ((size_t)n + 1);
    p->E = malloc(sz);
    p->L = malloc(sz);
    p->S = malloc(sz);
    p->F = malloc(sz);
    p->P = malloc(sz);
    p->M = calloc((size_t)n + 1, sizeof(int32_t));
    p->W = malloc(sz);
    if (!p->E || !p->L || !p->S || !p->F || !p->P || !p->M || !p->W) return -1;
    p->z = n ? 1 : 0;
    p->w = 0;
    for (int32_t i = 0; i < n; i++) {
        p->E[i] = p->L[i] = i;
        p->S[i] = 0;
    }
    if (p->z) {
        p->F[0] = 0;
        p->P[0] = n;
    }
    return 0;
}

static void part_free(part *p) {
    free(p->E);
    free(p->L);
    free(p->S);
    free(p->F);
    free(p->P);
    free(p->M);
    free(p->W);
}

static void part_mark(part *p, int32_t e) {
    int32_t s = p->S[e], i = p->L[e], j = p->F[s] + p->M[s];
    p->E[i] = p->E[j];
    p->L[p->E[i]] = i;
    p->E[j] = e;
    p->L[e] = j;
    if (!p->M[s]++) p->W[p->w++] = s;
}

static void part_split(part *p) {
    while (p->w) {
        int32_t s = p->W[--p->w], j = p->F[s] + p->M[s];
        if (j == p->P[s]) {
            p->M[s] = 0;
            continue;
        }
        int32_t z = p->z;
        if (p->M[s] <= p->P[s] - j) {
            p->F[z] = p->F[s];
            p->P[z] = p->F[s] = j;
        } else {
            p->P[z] = p->P[s];
            p->F[z] = p->P[s] = j;
        }
        for (int32_t i = p->F[z]; i < p->P[z]; i++) p->S[p->E[i]] = z;
        p->M[s] = p->M[z] = 0;
        p->z++;
    }
}

/* Minimises the live states (n of them, delta over k classes, -1 dead).
 * Writes each state's block into blk and returns the block count, or -1. */
static int32_t minimise(int32_t n, int32_t k, const int32_t *delta, const int32_t *acc,
                        int32_t *blk) {
    int32_t m = 0;
    for (int64_t i = 0; i < (int64_t)n * k; i++) m += delta[i] >= 0;
    int32_t *tail = malloc(sizeof *tail * ((size_t)m + 1));
    int32_t *label = malloc(sizeof *label * ((size_t)m + 1));
    int32_t *head = malloc(sizeof *head * ((size_t)m + 1));
    int32_t *in_off = calloc((size_t)n + 2, sizeof *in_off);
    int32_t *in_list = malloc(sizeof *in_list * ((size_t)m + 1));
    int32_t *cnt = calloc((size_t)k + 1, sizeof *cnt);
    part B = {0}, C = {0};
    int32_t res = -1;
    if (!tail || !label || !head || !in_off || !in_list || !cnt || part_init(&B, n) ||
        part_init(&C, m))
        goto out;
    /* transitions ordered by label (counting sort) */
    for (int32_t s = 0; s < n; s++)
        for (int32_t c = 0; c < k; c++)
            if (delta[(size_t)s * k + c] >= 0) cnt[c + 1]++;
    for (int32_t c = 0; c < k; c++) cnt[c + 1] += cnt[c];
    for (int32_t s = 0; s < n; s++)
        for (int32_t c = 0; c < k; c++) {
            int32_t t = delta[(size_t)s * k + c];
            if (t < 0) continue;
            int32_t e = cnt[c]++;
            tail[e] = s;
            label[e] = c;
            head[e] = t;
        }
    for (int32_t s = 0; s < n; s++)
        if (acc[s]) part_mark(&B, s);
    part_split(&B);
    /* cords: transitions grouped by label */
    if (m) {
        C.z = 1;
        for (int32_t i = 1; i < m; i++)
            if (label[C.E[i]] != label[C.E[i - 1]]) {
                C.P[C.z - 1] = i;
                C.F[C.z] = i;
                C.z++;
            }
        C.P[C.z - 1] = m;
        for (int32_t c = 0; c < C.z; c++)
            for (int32_t i = C.F[c]; i < C.P[c]; i++) C.S[C.E[i]] = c;
    }
    for (int32_t e = 0; e < m; e++) in_off[head[e] + 1]++;
    for (int32_t s = 0; s < n; s++) in_off[s + 1] += in_off[s];
    {
        int32_t *pos = malloc(sizeof *pos * ((size_t)n + 1));
        if (!pos) goto out;
        memcpy(pos, in_off, sizeof *pos * (size_t)n);
        for (int32_t e = 0; e < m; e++) in_list[pos[head[e]]++] = e;
        free(pos);
    }
    int32_t b = 1, c = 0;
    while (c < C.z) {
        for (int32_t i = C.F[c]; i < C.P[c]; i++) part_mark(&B, tail[C.E[i]]);
        part_split(&B);
        c++;
        while (b < B.z) {
            for (int32_t i = B.F[b]; i < B.P[b]; i++)
                for (int32_t j = in_off[B.E[i]]; j < in_off[B.E[i] + 1]; j++) part_mark(&C, in_list[j]);
            part_split(&C);
            b++;
        }
    }
    for (int32_t s = 0; s < n; s++) blk[s] = B.S[s];
    res = B.z;
out:
    free(tail);
    free(label);
    free(head);
    free(in_off);
    free(in_list);
    free(cnt);
    part_free(&B);
    part_free(&C);
    return res;
}

/* ---- liveness over the NFA ------------------------------------------------ */

/* Marks in live_imp the NFA states worth keeping in a DFA state's key: those
 * with a byte edge to a state from which acceptance is reachable after at
 * least one byte (no ^ then; after $ only epsilon and $ edges). Dropping the
 * others leaves every DFA state's language unchanged, and makes every DFA
 * state that has a key or accepts able to reach acceptance. Returns -1 on
 * out of memory. */
static int nfa_live(const cons_nfa *a, uint8_t *live_imp) {
    int32_t N = a->n_states;
    int32_t *roff = calloc((size_t)N + 2, sizeof *roff);
    int32_t *redge = malloc(sizeof *redge * ((size_t)a->n_edges + 1));
    int32_t *rfrom = malloc(sizeof *rfrom * ((size_t)N + 1));
    uint8_t *live = calloc((size_t)N * 2 + 2, 1); /* [q * 2 + m]: m 1 after $ */
    int32_t *queue = malloc(sizeof *queue * ((size_t)N * 2 + 2));
    int rc = -1;
    if (!roff || !redge || !rfrom || !live || !queue) goto out;
    for (int32_t q = 0; q < N; q++) {
        rfrom[q] = q;
        for (int32_t e = a->head[q]; e >= 0; e = a->e_next[e]) roff[a->e_to[e] + 1]++;
    }
    for (int32_t q = 0; q < N; q++) roff[q + 1] += roff[q];
    {
        int32_t *pos = malloc(sizeof *pos * ((size_t)N + 1));
        if (!pos) goto out;
        memcpy(pos, roff, sizeof *pos * (size_t)N);
        for (int32_t q = 0; q < N; q++)
            for (int32_t e = a->head[q]; e >= 0; e = a->e_next[e]) redge[pos[a->e_to[e]]++] = e;
        free(pos);
    }
    /* the edge's tail: edges are stored per source state, so find it by a
     * table of each edge's source */
    int32_t *src = malloc(sizeof *src * ((size_t)a->n_edges + 1));
    if (!src) goto out;
    for (int32_t q = 0; q < N; q++)
        for (int32_t e = a->head[q]; e >= 0; e = a->e_next[e]) src[e] = q;
    int32_t qh = 0, qt = 0;
    live[a->accept * 2] = live[a->accept * 2 + 1] = 1;
    queue[qt++] = a->accept * 2;
    queue[qt++] = a->accept * 2 + 1;
    while (qh < qt) {
        int32_t x = queue[qh++], t = x >> 1, m = x & 1;
        for (int32_t k = roff[t]; k < roff[t + 1]; k++) {
            int32_t e = redge[k], p = src[e], l = a->e_label[e];
            /* forward moves: epsilon keeps the mode, $ goes to mode 1 from
             * either, a byte goes from mode 0 to mode 0, ^ is never taken */
            int32_t from[2], nf = 0;
            if (l == CE_EPS) from[nf++] = m;
            else if (l == CE_EOL && m == 1) {
                from[nf++] = 0;
                from[nf++] = 1;
            } else if (l >= 0 && m == 0) from[nf++] = 0;
            for (int32_t i = 0; i < nf; i++)
                if (!live[p * 2 + from[i]]) {
                    live[p * 2 + from[i]] = 1;
                    queue[qt++] = p * 2 + from[i];
                }
        }
    }
    for (int32_t q = 0; q < N; q++) {
        live_imp[q] = 0;
        for (int32_t e = a->head[q]; e >= 0 && !live_imp[q]; e = a->e_next[e])
            if (a->e_label[e] >= 0 && live[a->e_to[e] * 2]) live_imp[q] = 1;
    }
    free(src);
    rc = 0;
out:
    free(roff);
    free(redge);
    free(rfrom);
    free(live);
    free(queue);
    return rc;
}

/* ---- one DFA state's transitions ---------------------------------------- */

static void lazy_init_state(cons_dfa *d, int32_t t, bool acc);

/* Computes the transitions of DFA state cur into row[0..n_cls) (next state or
 * -1), adding the states they reach. Returns 0, -2 out of memory, -3 over
 * the state budget (sub_budget), -4 over the work budget. */
static int expand_row(sc *s, int32_t cur, int32_t *row) {
    const cons_nfa *a = s->a;
    int32_t K = s->n_cls;
    int32_t off = s->key_off.v[cur], len = s->key_len.v[cur];
    /* the key's byte edges; a class's successors are the targets of the
     * edges whose set holds it, so classes with the same edges (a bit
     * signature) share one closure */
    int32_t edges[64], n_e = 0;
    bool many = false;
    for (int32_t i = 0; i < len && !many; i++)
        for (int32_t e = a->head[s->keys.v[off + i]]; e >= 0; e = a->e_next[e]) {
            if (a->e_label[e] < 0) continue;
            if (n_e == 64) {
                many = true;
                break;
            }
            edges[n_e++] = e;
        }
    if (!many) {
        uint64_t sig[256] = {0};
        for (int32_t j = 0; j < n_e; j++) {
            const uint64_t *cm = s->cmask[a->e_label[edges[j]]];
            for (int w = 0; w < 4; w++)
                for (uint64_t bits = cm[w]; bits; bits &= bits - 1) sig[w * 64 + __builtin_ctzll(bits)] |= 1ull << j;
        }
        s->work += (int64_t)n_e * 4;
        uint64_t seen_sig[256];
        int32_t seen_res[256], n_seen = 0;
        i32v *seeds = &s->bucket[0];
        for (int32_t c = 0; c < K; c++) {
            if (!sig[c]) {
                row[c] = -1;
                continue;
            }
            int32_t t = -2;
            for (int32_t k = 0; k < n_seen; k++)
                if (seen_sig[k] == sig[c]) {
                    t = seen_res[k];
                    break;
                }
            if (t == -2) {
                seeds->n = 0;
                for (uint64_t bits = sig[c]; bits; bits &= bits - 1)
                    if (v_push(seeds, a->e_to[edges[__builtin_ctzll(bits)]])) return -2;
                bool acc;
                if (closure(s, seeds->v, seeds->n, false, &acc)) return -2;
                if (s->work > s->work_budget) return -4;
                int32_t before = s->acc.n;
                t = intern(s, acc, s->sub_budget);
                if (t == -2 || t == -3) return t;
                if (s->acc.n > before) {
                    if (s->lz_d) lazy_init_state(s->lz_d, t, acc);
                    else if (v_push(&s->level, s->level.v[cur] + 1)) return -2;
                }
                seen_sig[n_seen] = sig[c];
                seen_res[n_seen++] = t;
            }
            row[c] = t;
        }
        return 0;
    }
    i32v *bucket = s->bucket;
    for (int32_t c = 0; c < K; c++) bucket[c].n = 0;
    for (int32_t i = 0; i < len; i++) {
        int32_t q = s->keys.v[off + i];
        for (int32_t e = a->head[q]; e >= 0; e = a->e_next[e]) {
            int32_t l = a->e_label[e];
            if (l < 0) continue;
            for (int w = 0; w < 4; w++)
                for (uint64_t bits = s->cmask[l][w]; bits; bits &= bits - 1) {
                    int32_t c = w * 64 + __builtin_ctzll(bits);
                    if (v_push(&bucket[c], a->e_to[e])) return -2;
                    s->work++;
                }
        }
    }
    int32_t memo_from[256], memo_res[256], nmemo = 0;
    uint32_t bhash[256];
    bool acc;
    for (int32_t c = 0; c < K; c++) {
        int32_t t = -1;
        if (bucket[c].n) {
            uint32_t bh = key_hash(bucket[c].v, bucket[c].n, false);
            bhash[c] = bh;
            for (int32_t k2 = 0; k2 < nmemo; k2++) {
                i32v *o = &bucket[memo_from[k2]];
                if (bhash[memo_from[k2]] == bh && o->n == bucket[c].n &&
                    memcmp(o->v, bucket[c].v, sizeof(int32_t) * (size_t)o->n) == 0) {
                    t = memo_res[k2];
                    goto have;
                }
            }
            if (closure(s, bucket[c].v, bucket[c].n, false, &acc)) return -2;
            if (s->work > s->work_budget) return -4;
            int32_t before = s->acc.n;
            t = intern(s, acc, s->sub_budget);
            if (t == -2 || t == -3) return t;
            if (s->acc.n > before) {
                if (s->lz_d) lazy_init_state(s->lz_d, t, acc);
                else if (v_push(&s->level, s->level.v[cur] + 1)) return -2;
            }
            if (nmemo < 256) {
                memo_from[nmemo] = c;
                memo_res[nmemo++] = t;
            }
        }
    have:
        row[c] = t;
    }
    return 0;
}

/* ---- lazily built DFAs ---------------------------------------------------- */

/* A DFA too large to build whole at compile time (more than LAZY_AFTER
 * states, e.g. JSON strings with long maxLength: ~14 states per character)
 * whose breadth-first layers stay narrow (under LAZY_WIDE states each; an
 * exponential blow-up such as (a|b)*a(a|b){15} is wide and is built whole,
 * so it is still refused by the state budget) is determinised on demand:
 * a state's row is computed the first time a walk needs it, under the
 * DFA's mutex, and kept. Rows are DFA_UNKNOWN until then; readers load
 * entries with acquire, and the writer initialises a new state fully
 * before publishing its number with release. Arrays have room for the
 * whole budget up front (untouched pages cost nothing), so they never
 * move under a reader. Not minimised: mask classes (constrain.c) merge
 * states that no token tells apart. */
#define LAZY_AFTER 2048
#define LAZY_WIDE 256

struct cons_dfa_lazy {
    pthread_mutex_t mu;
    cons_nfa *nfa;
    sc s;
    int failed; /* an expansion ran out of memory or budget: refused from then on */
};

static void sc_free(sc *s) {
    free(s->vis[0]);
    free(s->vis[1]);
    free(s->imp_gen);
    free(s->has_set);
    free(s->cmask);
    free(s->stack.v);
    free(s->imp.v);
    free(s->keys.v);
    free(s->key_off.v);
    free(s->key_len.v);
    free(s->acc.v);
    free(s->delta.v);
    free(s->tab);
    free(s->live_imp);
    free(s->level.v);
    if (s->bucket)
        for (int32_t c = 0; c < s->n_cls; c++) free(s->bucket[c].v);
    free(s->bucket);
    memset(s, 0, sizeof *s);
}

static void lazy_free(cons_dfa_lazy *z) {
    if (!z) return;
    pthread_mutex_destroy(&z->mu);
    sc_free(&z->s);
    cons_nfa_free(z->nfa);
    free(z);
}

static void lazy_init_state(cons_dfa *d, int32_t t, bool acc) {
    d->accept[t] = acc;
    d->forced[t] = DFA_UNKNOWN;
    for (int32_t c = 0; c < d->n_cls; c++) d->delta[(size_t)t * d->n_cls + c] = DFA_UNKNOWN;
    __atomic_store_n(&d->n_states, t + 1, __ATOMIC_RELEASE);
}

static int16_t row_forced(const cons_dfa *d, const int32_t *row, bool acc) {
    if (acc) return -1;
    int cntb = 0, last = -1;
    for (int bb = 0; bb < 256 && cntb < 2; bb++)
        if (row[d->cls[bb]] >= 0) {
            cntb++;
            last = bb;
        }
    return (int16_t)(cntb == 1 ? last : -1);
}

int32_t cons_dfa_expand(const cons_dfa *dc, int32_t st, int32_t c) {
    cons_dfa *d = (cons_dfa *)dc; /* the lazy part is internally synchronised */
    cons_dfa_lazy *z = d->lz;
    if (!z) return -1;
    pthread_mutex_lock(&z->mu);
    if (d->forced[st] == DFA_UNKNOWN && !z->failed) {
        int32_t row[256];
        int rc = expand_row(&z->s, st, row);
        if (rc == 0) {
            for (int32_t k = 0; k < d->n_cls; k++)
                __atomic_store_n(&d->delta[(size_t)st * d->n_cls + k], row[k], __ATOMIC_RELEASE);
            __atomic_store_n(&d->forced[st], row_forced(d, row, d->accept[st]), __ATOMIC_RELEASE);
        } else {
            __atomic_store_n(&z->failed, rc, __ATOMIC_RELEASE);
        }
    }
    int32_t t = d->delta[(size_t)st * d->n_cls + c];
    pthread_mutex_unlock(&z->mu);
    return t == DFA_UNKNOWN ? -1 : t;
}

bool cons_dfa_failed(const cons_dfa *d) {
    return d->lz && __atomic_load_n(&d->lz->failed, __ATOMIC_ACQUIRE) != 0;
}

/* Turns the eager construction s (rows 0..done computed in s->delta) into a
 * lazy DFA that owns s and the NFA. Returns it, or NULL (memory). */
static cons_dfa *go_lazy(sc *s, cons_nfa *a, int32_t done, const uint8_t cls[256]) {
    int32_t K = s->n_cls, cap = s->sub_budget;
    cons_dfa *d = calloc(1, sizeof *d);
    cons_dfa_lazy *z = calloc(1, sizeof *z);
    if (!d || !z) goto fail;
    d->n_cls = K;
    d->cap_states = cap;
    memcpy(d->cls, cls, 256);
    d->delta = malloc(sizeof *d->delta * (size_t)cap * (size_t)K);
    d->accept = malloc((size_t)cap);
    d->forced = malloc(sizeof *d->forced * (size_t)cap);
    if (!d->delta || !d->accept || !d->forced || pthread_mutex_init(&z->mu, NULL)) goto fail;
    for (int32_t t = 0; t < s->acc.n; t++) {
        lazy_init_state(d, t, s->acc.v[t]);
        if (t < done) {
            memcpy(d->delta + (size_t)t * K, s->delta.v + (size_t)t * K, sizeof(int32_t) * (size_t)K);
            d->forced[t] = row_forced(d, d->delta + (size_t)t * K, d->accept[t]);
        }
    }
    free(s->delta.v);
    s->delta = (i32v){0};
    free(s->level.v);
    s->level = (i32v){0};
    s->lz_d = d;
    z->s = *s;
    z->nfa = a;
    memset(s, 0, sizeof *s);
    d->lz = z;
    return d;
fail:
    if (d) {
        free(d->delta);
        free(d->accept);
        free(d->forced);
    }
    free(d);
    free(z);
    return NULL;
}

/* Picks the NFA's largest byte sets (at least 8 bytes) into d->cats. */
static void pick_cats(const cons_nfa *a, cons_dfa *d) {
    d->n_cats = 0;
    int32_t cnt[CONS_DFA_CATS] = {0};
    for (int32_t id = 0; id < a->n_sets; id++) {
        int32_t n = 0;
        for (int w = 0; w < 8; w++) n += __builtin_popcount(a->sets[id][w]);
        if (n < 8) continue;
        uint64_t set[4];
        for (int w = 0; w < 4; w++) set[w] = a->sets[id][2 * w] | (uint64_t)a->sets[id][2 * w + 1] << 32;
        int32_t k = d->n_cats;
        while (k > 0 && cnt[k - 1] < n) k--;
        if (k >= CONS_DFA_CATS) continue;
        int32_t last = d->n_cats < CONS_DFA_CATS ? d->n_cats : CONS_DFA_CATS - 1;
        for (int32_t j = last; j > k; j--) {
            cnt[j] = cnt[j - 1];
            memcpy(d->cats[j], d->cats[j - 1], sizeof set);
        }
        cnt[k] = n;
        memcpy(d->cats[k], set, sizeof set);
        if (d->n_cats < CONS_DFA_CATS) d->n_cats++;
    }
}

static int build_dfa(cons_nfa *a, const cons_options *opt, cons_dfa **out, bool *took_nfa,
                     cons_diag *diag) {
    sc s = {.a = a};
    int rc = -1;
    *took_nfa = false;
    cons_dfa *d = calloc(1, sizeof *d);
    int32_t N = a->n_states, budget = opt->max_states > 0 ? opt->max_states : 20000;
    /* the subset construction may overshoot what minimisation removes */
    s.sub_budget = budget > INT32_MAX / 4 ? INT32_MAX : budget * 4;
    /* closures visit NFA states; nested nullable repetitions can make each
     * closure huge, so their total is bounded too */
    s.work_budget = (int64_t)budget * 2000;
    int32_t *live = NULL, *blk = NULL, *order = NULL, *pred_off = NULL, *pred = NULL;
    int32_t *width = NULL;
    bool lazy_ok = true;
    s.vis[0] = calloc((size_t)N, sizeof(int32_t));
    s.vis[1] = calloc((size_t)N, sizeof(int32_t));
    s.imp_gen = calloc((size_t)N, sizeof(int32_t));
    s.has_set = calloc((size_t)N, 1);
    s.live_imp = calloc((size_t)N + 1, 1);
    width = calloc(LAZY_AFTER + 2, sizeof *width);
    if (!d || !s.vis[0] || !s.vis[1] || !s.imp_gen || !s.has_set || !s.live_imp || !width ||
        nfa_live(a, s.live_imp))
        goto oom;
    {
        /* lazily only when the DFA of a narrow automaton stays within the
         * budget: its states are about its NFA states with byte edges */
        int32_t n_imp = 0;
        for (int32_t q = 0; q < N; q++) n_imp += s.live_imp[q];
        lazy_ok = n_imp <= s.sub_budget;
    }
    /* byte classes: bytes that no set tells apart */
    {
        int32_t map[512];
        memset(d->cls, 0, 256);
        int32_t ncls = 1;
        for (int32_t id = 0; id < a->n_sets; id++) {
            for (int32_t i = 0; i < ncls * 2; i++) map[i] = -1;
            int32_t nn = 0;
            for (int b = 0; b < 256; b++) {
                int in = (a->sets[id][b >> 5] >> (b & 31)) & 1;
                int32_t key = d->cls[b] * 2 + in;
                if (map[key] < 0) map[key] = nn++;
                d->cls[b] = (uint8_t)map[key];
            }
            ncls = nn;
        }
        s.n_cls = d->n_cls = ncls;
        s.cmask = calloc((size_t)(a->n_sets ? a->n_sets : 1), sizeof *s.cmask);
        if (!s.cmask) goto oom;
        for (int32_t id = 0; id < a->n_sets; id++)
            for (int b = 0; b < 256; b++)
                if ((a->sets[id][b >> 5] >> (b & 31)) & 1) s.cmask[id][d->cls[b] >> 6] |= 1ull << (d->cls[b] & 63);
    }
    int32_t K = s.n_cls;
    s.bucket = calloc((size_t)K, sizeof *s.bucket);
    if (!s.bucket) goto oom;
    bool acc;
    if (closure(&s, &a->start, 1, true, &acc)) goto oom;
    int32_t st = intern(&s, acc, budget);
    if (st == -1) {
        cons_diag_set(diag, -1, "the constraint matches no text at all");
        goto fail;
    }
    if (st == -2 || v_push(&s.level, 0)) goto oom;
    int32_t row[256];
    for (int32_t cur = 0; cur < s.acc.n; cur++) {
        if (lazy_ok && s.acc.n >= LAZY_AFTER) {
            int32_t wmax = 0;
            for (int32_t i = 0; i < s.acc.n; i++)
                if (s.level.v[i] <= LAZY_AFTER && ++width[s.level.v[i]] > wmax) wmax = width[s.level.v[i]];
            lazy_ok = false; /* decided once */
            if (wmax < LAZY_WIDE) {
                cons_dfa *lz = go_lazy(&s, a, cur, d->cls);
                if (!lz) goto oom;
                pick_cats(a, lz);
                *took_nfa = true;
                cons_dfa_free(d);
                *out = lz;
                rc = 0;
                d = NULL;
                goto fail;
            }
        }
        int e = expand_row(&s, cur, row);
        if (e == -2) goto oom;
        if (e == -4) {
            cons_diag_set(diag, -1,
                          "constraint too large: building its DFA takes more than the work allowed "
                          "by the state budget max_states = %d",
                          budget);
            goto fail;
        }
        if (e == -3) {
            cons_diag_set(diag, -1, "constraint too large: its DFA exceeds the state budget max_states = %d",
                          budget);
            goto fail;
        }
        for (int32_t c = 0; c < K; c++)
            if (v_push(&s.delta, row[c])) goto oom;
    }
    int32_t n = s.acc.n;
    /* prune states that cannot reach acceptance */
    live = calloc((size_t)n, sizeof *live);
    pred_off = calloc((size_t)n + 1, sizeof *pred_off);
    order = malloc(sizeof *order * ((size_t)n + 1));
    if (!live || !pred_off || !order) goto oom;
    for (int64_t i = 0; i < (int64_t)n * K; i++)
        if (s.delta.v[i] >= 0) pred_off[s.delta.v[i] + 1]++;
    for (int32_t i = 0; i < n; i++) pred_off[i + 1] += pred_off[i];
    pred = malloc(sizeof *pred * ((size_t)pred_off[n] + 1));
    if (!pred) goto oom;
    {
        int32_t *pos = malloc(sizeof *pos * ((size_t)n + 1));
        if (!pos) goto oom;
        memcpy(pos, pred_off, sizeof *pos * (size_t)n);
        for (int64_t i = 0; i < (int64_t)n * K; i++)
            if (s.delta.v[i] >= 0) pred[pos[s.delta.v[i]]++] = (int32_t)(i / K);
        free(pos);
    }
    int32_t qn = 0;
    for (int32_t i = 0; i < n; i++)
        if (s.acc.v[i]) {
            live[i] = 1;
            order[qn++] = i;
        }
    for (int32_t h = 0; h < qn; h++)
        for (int32_t j = pred_off[order[h]]; j < pred_off[order[h] + 1]; j++)
            if (!live[pred[j]]) {
                live[pred[j]] = 1;
                order[qn++] = pred[j];
            }
    if (!live[0]) {
        cons_diag_set(diag, -1, "the constraint matches no text at all");
        goto fail;
    }
    /* renumber live states densely */
    int32_t *ren = pred_off; /* reuse */
    int32_t L = 0;
    for (int32_t i = 0; i < n; i++) ren[i] = live[i] ? L++ : -1;
    int32_t *ld = malloc(sizeof *ld * (size_t)L * (size_t)K + 4);
    int32_t *lacc = malloc(sizeof *lacc * ((size_t)L + 1));
    if (!ld || !lacc) {
        free(ld);
        free(lacc);
        goto oom;
    }
    for (int32_t i = 0; i < n; i++) {
        if (ren[i] < 0) continue;
        lacc[ren[i]] = s.acc.v[i];
        for (int32_t c = 0; c < K; c++) {
            int32_t t = s.delta.v[(size_t)i * K + c];
            ld[(size_t)ren[i] * K + c] = t >= 0 ? ren[t] : -1;
        }
    }
    blk = malloc(sizeof *blk * ((size_t)L + 1));
    int32_t nb_ = blk ? minimise(L, K, ld, lacc, blk) : -1;
    if (nb_ < 0) {
        free(ld);
        free(lacc);
        goto oom;
    }
    /* BFS renumbering from the start block so the start is state 0 */
    int32_t *bnum = malloc(sizeof *bnum * ((size_t)nb_ + 1));
    int32_t *rep = malloc(sizeof *rep * ((size_t)nb_ + 1));
    int32_t *bq = malloc(sizeof *bq * ((size_t)nb_ + 1));
    d->delta = malloc(sizeof *d->delta * (size_t)nb_ * (size_t)K + 4);
    d->accept = calloc((size_t)nb_ + 1, 1);
    d->forced = malloc(sizeof *d->forced * ((size_t)nb_ + 1));
    if (!bnum || !rep || !bq || !d->delta || !d->accept || !d->forced) {
        free(bnum);
        free(rep);
        free(bq);
        free(ld);
        free(lacc);
        goto oom;
    }
    for (int32_t i = 0; i < nb_; i++) bnum[i] = -1;
    for (int32_t i = L - 1; i >= 0; i--) rep[blk[i]] = i;
    int32_t qh = 0, qt = 0;
    bnum[blk[0]] = qt;
    bq[qt++] = blk[0];
    while (qh < qt) {
        int32_t bk = bq[qh++], r = rep[bk];
        for (int32_t c = 0; c < K; c++) {
            int32_t t = ld[(size_t)r * K + c];
            if (t >= 0 && bnum[blk[t]] < 0) {
                bnum[blk[t]] = qt;
                bq[qt++] = blk[t];
            }
        }
    }
    d->n_states = d->cap_states = qt;
    if (qt > budget) {
        free(bnum);
        free(rep);
        free(bq);
        free(ld);
        free(lacc);
        cons_diag_set(diag, -1, "constraint too large: its DFA exceeds the state budget max_states = %d", budget);
        goto fail;
    }
    for (int32_t i = 0; i < qt; i++) {
        int32_t r = rep[bq[i]];
        d->accept[i] = (uint8_t)lacc[r];
        for (int32_t c = 0; c < K; c++) {
            int32_t t = ld[(size_t)r * K + c];
            d->delta[(size_t)i * K + c] = t >= 0 ? bnum[blk[t]] : -1;
        }
        d->forced[i] = -1;
        if (!d->accept[i]) {
            int cntb = 0, last = -1;
            for (int bb = 0; bb < 256 && cntb < 2; bb++)
                if (d->delta[(size_t)i * K + d->cls[bb]] >= 0) {
                    cntb++;
                    last = bb;
                }
            if (cntb == 1) d->forced[i] = (int16_t)last;
        }
    }
    free(bnum);
    free(rep);
    free(bq);
    free(ld);
    free(lacc);
    pick_cats(a, d);
    *out = d;
    d = NULL;
    rc = 0;
    goto fail;
oom:
    cons_diag_set(diag, -1, "out of memory");
fail:
    cons_dfa_free(d);
    sc_free(&s);
    free(width);
    free(live);
    free(blk);
    free(order);
    free(pred_off);
    free(pred);
    return rc;
}
