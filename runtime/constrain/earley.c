/* earley.c: an Earley recogniser over bytes for grammars that recurse.
 *
 * The grammar is a cons_nfa whose recursive rules are CALL edges: an item is
 * (NFA state, origin set). Predicting a CALL adds the rule's entry at the
 * current set; reaching a rule's final state completes it, advancing every
 * item of the origin set that called it. A nullable rule completed in the
 * current set before a later caller arrives is caught at prediction time
 * (the caller checks whether the rule's final item is already there).
 *
 * The chart is a stack of item sets, one per byte: push scans a byte and
 * closes the new set, pop drops it, so the token-mask walk over the
 * vocabulary trie can try a byte and roll back. Because every rule can derive
 * text (checked at build) and every NFA state can reach its rule's end, a
 * non-empty set means the bytes so far are a viable prefix.
 */
#include <stdlib.h>
#include <string.h>

#include "runtime/constrain/cons_internal.h"

typedef struct item {
    int32_t q, origin;
} item;

typedef struct wmemo {
    int32_t base;        /* sets at or above this index were pushed by the walk */
    item *items;         /* interned sets, concatenated */
    int32_t n_items, cap_items;
    int32_t *off, *len;  /* per interned set */
    uint8_t *acc;
    uint32_t *hash;
    int32_t n_ids, cap_ids;
    int32_t *trans;      /* n_ids x 256: next id, W_DEAD, or W_UNKNOWN */
    int32_t *tab;        /* open addressing over ids */
    int32_t tab_cap;
    int32_t *set_id;     /* per chart set: id, W_NONE (not internable) or W_UNKNOWN */
    int32_t cap_sets;
    uint8_t loops[4][4096]; /* per slot and id: 1 loops on the slot's bytes, 0 not, 2 unknown */
} wmemo;

enum { W_UNKNOWN = -2, W_DEAD = -1, W_NONE = -3, W_MAX_IDS = 4096 };

/* Item steps one push may take: pathologically ambiguous grammars make
 * Earley sets cubic; a push over this fails (as if memory ran out), so a
 * matcher refuses the byte instead of stalling. Real grammars stay far below. */
#define EARLEY_MAX_WORK 200000

struct earley {
    const cons_nfa *g;
    wmemo *w;
    int64_t work;
    int32_t *rule_final; /* final state of each rule (-1: inlined) */
    uint8_t *keep;       /* state is stored in sets (scans, calls or completes) */
    item *stack;         /* epsilon-only states being closed (never stored) */
    int32_t n_stack, cap_stack;
    item *items;
    int32_t n_items, cap_items;
    int32_t *set_start; /* set k: items[set_start[k] .. set_start[k+1]) */
    uint8_t *set_acc;
    int32_t n_sets, cap_sets;
    /* dedup for the set being built: the first origin of each state is in
     * sgen/sorig, further ones in the hash table; an entry is live when its
     * generation is the current one, so a reset is one increment */
    uint32_t *sgen;
    int32_t *sorig;
    int64_t *hkey;
    uint32_t *hgen, gen;
    int32_t hcap, hcount;
    /* byte classes (bytes no set of the grammar tells apart), computed the
     * first time earley_walk_loops needs them; per slot, one byte of each
     * class the slot's bytes meet */
    bool cls_ready;
    uint8_t cls[256];
    int16_t n_rep[4];
    uint8_t rep[4][256];
};

static void wmemo_free(wmemo *w);

static int grow_items(earley *e) {
    int32_t cap = e->cap_items ? e->cap_items * 2 : 256;
    item *v = realloc(e->items, sizeof *v * (size_t)cap);
    if (!v) return -1;
    e->items = v;
    e->cap_items = cap;
    return 0;
}

static int grow_sets(earley *e) {
    int32_t cap = e->cap_sets ? e->cap_sets * 2 : 64;
    int32_t *s = realloc(e->set_start, sizeof *s * ((size_t)cap + 1));
    if (!s) return -1;
    e->set_start = s;
    uint8_t *a = realloc(e->set_acc, (size_t)cap + 1);
    if (!a) return -1;
    e->set_acc = a;
    e->cap_sets = cap;
    return 0;
}

static uint64_t ih(int64_t k) {
    uint64_t x = (uint64_t)k * 0x9E3779B97F4A7C15ull;
    return x ^ (x >> 31);
}

static int h_reset(earley *e) {
    if (!e->sgen) {
        e->sgen = calloc((size_t)e->g->n_states + 1, sizeof *e->sgen);
        e->sorig = malloc(sizeof *e->sorig * ((size_t)e->g->n_states + 1));
        if (!e->sgen || !e->sorig) return -1;
    }
    if (!e->hkey) {
        e->hcap = 64;
        e->hkey = malloc(sizeof *e->hkey * (size_t)e->hcap);
        e->hgen = calloc((size_t)e->hcap, sizeof *e->hgen);
        if (!e->hkey || !e->hgen) return -1;
    }
    if (++e->gen == 0) {
        memset(e->hgen, 0, sizeof *e->hgen * (size_t)e->hcap);
        memset(e->sgen, 0, sizeof *e->sgen * (size_t)e->g->n_states);
        e->gen = 1;
    }
    e->hcount = 0;
    return 0;
}

static bool h_has(const earley *e, int32_t q, int32_t o) {
    if (e->sgen[q] != e->gen) return false;
    if (e->sorig[q] == o) return true;
    int64_t k = ((int64_t)q << 32) | (uint32_t)o;
    for (uint64_t h = ih(k) & (uint64_t)(e->hcap - 1);; h = (h + 1) & (uint64_t)(e->hcap - 1)) {
        if (e->hgen[h] != e->gen) return false;
        if (e->hkey[h] == k) return true;
    }
}

/* Inserts; returns 1 when new, 0 when present, -1 out of memory. */
static int h_add(earley *e, int32_t q, int32_t o) {
    if (e->sgen[q] != e->gen) {
        e->sgen[q] = e->gen;
        e->sorig[q] = o;
        return 1;
    }
    if (e->sorig[q] == o) return 0;
    if ((e->hcount + 1) * 2 > e->hcap) {
        int32_t cap = e->hcap * 2;
        int64_t *t = malloc(sizeof *t * (size_t)cap);
        uint32_t *g = calloc((size_t)cap, sizeof *g);
        if (!t || !g) {
            free(t);
            free(g);
            return -1;
        }
        for (int32_t i = 0; i < e->hcap; i++) {
            if (e->hgen[i] != e->gen) continue;
            uint64_t h = ih(e->hkey[i]) & (uint64_t)(cap - 1);
            while (g[h] == e->gen) h = (h + 1) & (uint64_t)(cap - 1);
            t[h] = e->hkey[i];
            g[h] = e->gen;
        }
        free(e->hkey);
        free(e->hgen);
        e->hkey = t;
        e->hgen = g;
        e->hcap = cap;
    }
    int64_t k = ((int64_t)q << 32) | (uint32_t)o;
    uint64_t h = ih(k) & (uint64_t)(e->hcap - 1);
    for (; e->hgen[h] == e->gen; h = (h + 1) & (uint64_t)(e->hcap - 1))
        if (e->hkey[h] == k) return 0;
    e->hkey[h] = k;
    e->hgen[h] = e->gen;
    e->hcount++;
    return 1;
}

static int add_item(earley *e, int32_t q, int32_t o) {
    int r = h_add(e, q, o);
    if (r <= 0) return r;
    if (!e->keep[q]) {
        if (e->n_stack == e->cap_stack) {
            int32_t cap = e->cap_stack ? e->cap_stack * 2 : 64;
            item *v = realloc(e->stack, sizeof *v * (size_t)cap);
            if (!v) return -1;
            e->stack = v;
            e->cap_stack = cap;
        }
        e->stack[e->n_stack++] = (item){q, o};
        return 0;
    }
    if (e->n_items == e->cap_items && grow_items(e)) return -1;
    e->items[e->n_items++] = (item){q, o};
    return 0;
}

/* Epsilon (and start-anchor) edges of q. */
static int follow_eps(earley *e, int32_t q, int32_t o, int32_t k) {
    const cons_nfa *g = e->g;
    for (int32_t ed = g->head[q]; ed >= 0; ed = g->e_next[ed]) {
        int32_t l = g->e_label[ed];
        if ((l == CE_EPS || (l == CE_BOL && k == 0)) && add_item(e, g->e_to[ed], o)) return -1;
    }
    return 0;
}

/* Closes the set being built (it starts at set_start[k]). States with only
 * epsilon edges are deduplicated but not stored: they are expanded from a
 * stack, so sets hold just the states that scan, call or complete. */
static int close_set(earley *e, int32_t k) {
    const cons_nfa *g = e->g;
    int32_t i = e->set_start[k];
    for (;;) {
        while (e->n_stack) {
            item it = e->stack[--e->n_stack];
            if (follow_eps(e, it.q, it.origin, k)) return -1;
        }
        if (i >= e->n_items) break;
        item it = e->items[i++];
        int32_t r = g->final_of[it.q];
        if (++e->work > EARLEY_MAX_WORK) return -1;
        if (r >= 0 && r < g->n_rules) {
            /* completion: advance the callers of r in the origin set */
            int32_t lo = e->set_start[it.origin];
            int32_t hi = it.origin == k ? e->n_items : e->set_start[it.origin + 1];
            e->work += hi - lo;
            for (int32_t j = lo; j < hi; j++) {
                item c = e->items[j];
                for (int32_t ed = g->head[c.q]; ed >= 0; ed = g->e_next[ed])
                    if (g->e_label[ed] == -(r + 4) && add_item(e, g->e_to[ed], c.origin)) return -1;
            }
        }
        for (int32_t ed = g->head[it.q]; ed >= 0; ed = g->e_next[ed]) {
            int32_t l = g->e_label[ed];
            if (l >= 0 || l == CE_EOL) continue;
            if (l == CE_EPS || (l == CE_BOL && k == 0)) {
                if (add_item(e, g->e_to[ed], it.origin)) return -1;
            } else if (l <= -4) {
                int32_t callee = -(l + 4);
                if (add_item(e, g->rule_entry[callee], k)) return -1;
                if (h_has(e, e->rule_final[callee], k) && add_item(e, g->e_to[ed], it.origin))
                    return -1;
            }
        }
    }
    e->set_acc[k] = h_has(e, g->accept, 0);
    return 0;
}

earley *earley_new(const cons_nfa *g) {
    earley *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->g = g;
    e->rule_final = malloc(sizeof *e->rule_final * ((size_t)g->n_rules + 1));
    e->keep = calloc((size_t)g->n_states + 1, 1);
    if (!e->rule_final || !e->keep || grow_sets(e) || grow_items(e) || h_reset(e)) goto fail;
    for (int32_t q = 0; q < g->n_states; q++) {
        bool keep = g->final_of[q] >= 0;
        for (int32_t ed = g->head[q]; ed >= 0 && !keep; ed = g->e_next[ed])
            keep = g->e_label[ed] >= 0 || g->e_label[ed] <= -4;
        e->keep[q] = keep;
    }
    for (int32_t r = 0; r <= g->n_rules; r++) e->rule_final[r] = -1;
    for (int32_t q = 0; q < g->n_states; q++)
        if (g->final_of[q] >= 0 && g->final_of[q] < g->n_rules) e->rule_final[g->final_of[q]] = q;
    e->set_start[0] = 0;
    e->n_sets = 1;
    if (add_item(e, g->start, 0) || close_set(e, 0)) goto fail;
    e->set_start[1] = e->n_items;
    return e;
fail:
    earley_free(e);
    return NULL;
}

void earley_free(earley *e) {
    if (!e) return;
    wmemo_free(e->w);
    free(e->rule_final);
    free(e->keep);
    free(e->stack);
    free(e->items);
    free(e->set_start);
    free(e->set_acc);
    free(e->hkey);
    free(e->hgen);
    free(e->sgen);
    free(e->sorig);
    free(e);
}

earley *earley_clone(const earley *e) {
    earley *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->g = e->g;
    c->rule_final = malloc(sizeof *c->rule_final * ((size_t)e->g->n_rules + 1));
    c->keep = malloc((size_t)e->g->n_states + 1);
    c->items = malloc(sizeof *c->items * (size_t)e->cap_items);
    c->set_start = malloc(sizeof *c->set_start * ((size_t)e->cap_sets + 1));
    c->set_acc = malloc((size_t)e->cap_sets + 1);
    if (!c->rule_final || !c->keep || !c->items || !c->set_start || !c->set_acc || h_reset(c)) {
        earley_free(c);
        return NULL;
    }
    memcpy(c->rule_final, e->rule_final, sizeof *c->rule_final * ((size_t)e->g->n_rules + 1));
    memcpy(c->keep, e->keep, (size_t)e->g->n_states + 1);
    memcpy(c->items, e->items, sizeof *c->items * (size_t)e->n_items);
    memcpy(c->set_start, e->set_start, sizeof *c->set_start * ((size_t)e->n_sets + 1));
    memcpy(c->set_acc, e->set_acc, (size_t)e->n_sets);
    c->n_items = e->n_items;
    c->cap_items = e->cap_items;
    c->n_sets = e->n_sets;
    c->cls_ready = false;
    c->cap_sets = e->cap_sets;
    return c;
}

int earley_push(earley *e, uint8_t b) {
    const cons_nfa *g = e->g;
    e->work = 0;
    int32_t k = e->n_sets - 1;
    if (e->n_sets + 1 >= e->cap_sets && grow_sets(e)) return -1;
    if (h_reset(e)) return -1;
    int32_t lo = e->set_start[k], hi = e->set_start[k + 1];
    for (int32_t i = lo; i < hi; i++) {
        item it = e->items[i];
        for (int32_t ed = g->head[it.q]; ed >= 0; ed = g->e_next[ed]) {
            int32_t l = g->e_label[ed];
            if (l >= 0 && ((g->sets[l][b >> 5] >> (b & 31)) & 1) && add_item(e, g->e_to[ed], it.origin)) {
                e->n_items = hi;
                e->n_stack = 0;
                return -1;
            }
        }
    }
    if (e->n_items == hi && e->n_stack == 0) return 0;
    e->n_sets++;
    if (close_set(e, k + 1)) {
        e->n_sets--;
        e->n_items = hi;
        e->n_stack = 0;
        return -1;
    }
    e->set_start[k + 2] = e->n_items;
    return 1;
}

void earley_pop(earley *e) {
    if (e->n_sets <= 1) return;
    e->n_sets--;
    e->n_items = e->set_start[e->n_sets];
}

int32_t earley_depth(const earley *e) { return e->n_sets - 1; }

bool earley_accepting(const earley *e) { return e->set_acc[e->n_sets - 1]; }

void earley_next_bytes(const earley *e, uint32_t out[8]) {
    const cons_nfa *g = e->g;
    memset(out, 0, 32);
    int32_t k = e->n_sets - 1;
    for (int32_t i = e->set_start[k]; i < e->set_start[k + 1]; i++)
        for (int32_t ed = g->head[e->items[i].q]; ed >= 0; ed = g->e_next[ed]) {
            int32_t l = g->e_label[ed];
            if (l >= 0)
                for (int w = 0; w < 8; w++) out[w] |= g->sets[l][w];
        }
}

int earley_key(const earley *e, int32_t **out, size_t *n) {
    int32_t k = e->n_sets - 1;
    /* canonical numbers of the sets reached, found in visiting order */
    int32_t *num = malloc(sizeof *num * (size_t)e->n_sets), *queue = malloc(sizeof *queue * (size_t)e->n_sets);
    size_t cap = 64, len = 0;
    int32_t *key = malloc(sizeof *key * cap);
    if (!num || !queue || !key) goto oom;
    for (int32_t i = 0; i < e->n_sets; i++) num[i] = -1;
    int32_t qh = 0, qt = 0;
    num[k] = qt;
    queue[qt++] = k;
    while (qh < qt) {
        int32_t set = queue[qh++];
        int32_t lo = e->set_start[set], hi = e->set_start[set + 1];
        if (len + 2 * (size_t)(hi - lo) + 1 > cap) {
            while (len + 2 * (size_t)(hi - lo) + 1 > cap) cap *= 2;
            int32_t *nk = realloc(key, sizeof *nk * cap);
            if (!nk) goto oom;
            key = nk;
        }
        key[len++] = hi - lo;
        for (int32_t i = lo; i < hi; i++) {
            int32_t o = e->items[i].origin;
            if (num[o] < 0) {
                num[o] = qt;
                queue[qt++] = o;
            }
            key[len++] = e->items[i].q;
            key[len++] = num[o];
        }
    }
    free(num);
    free(queue);
    *out = key;
    *n = len;
    return 0;
oom:
    free(num);
    free(queue);
    free(key);
    return -1;
}

/* ---- walk memo ------------------------------------------------------------- */

static void wmemo_free(wmemo *w) {
    if (!w) return;
    free(w->items);
    free(w->off);
    free(w->len);
    free(w->acc);
    free(w->hash);
    free(w->trans);
    free(w->tab);
    free(w->set_id);
    free(w);
}

int earley_walk_begin(earley *e) {
    wmemo *w = calloc(1, sizeof *w);
    if (!w) return -1;
    w->base = e->n_sets;
    w->tab_cap = 256;
    w->tab = malloc(sizeof *w->tab * (size_t)w->tab_cap);
    w->cap_sets = e->n_sets + 64;
    w->set_id = malloc(sizeof *w->set_id * (size_t)w->cap_sets);
    if (!w->tab || !w->set_id) {
        wmemo_free(w);
        return -1;
    }
    for (int32_t i = 0; i < w->tab_cap; i++) w->tab[i] = -1;
    for (int32_t i = 0; i < w->cap_sets; i++) w->set_id[i] = W_UNKNOWN;
    memset(w->loops, 2, sizeof w->loops);
    e->w = w;
    return 0;
}

void earley_walk_end(earley *e) {
    wmemo_free(e->w);
    e->w = NULL;
}

/* The id of chart set k (interned now if it can be), or W_NONE. */
static int32_t w_intern(earley *e, int32_t k) {
    wmemo *w = e->w;
    int32_t lo = e->set_start[k], hi = e->set_start[k + 1], n = hi - lo;
    uint32_t h = 2166136261u ^ (uint32_t)e->set_acc[k];
    for (int32_t i = lo; i < hi; i++) {
        if (e->items[i].origin >= w->base) return W_NONE;
        h = (h ^ (uint32_t)e->items[i].q) * 16777619u;
        h = (h ^ (uint32_t)e->items[i].origin) * 16777619u;
    }
    for (uint32_t slot = h & (uint32_t)(w->tab_cap - 1);; slot = (slot + 1) & (uint32_t)(w->tab_cap - 1)) {
        int32_t id = w->tab[slot];
        if (id < 0) break;
        if (w->hash[id] == h && w->len[id] == n && w->acc[id] == e->set_acc[k] &&
            memcmp(w->items + w->off[id], e->items + lo, sizeof(item) * (size_t)n) == 0)
            return id;
    }
    if (w->n_ids >= W_MAX_IDS) return W_NONE;
    if (w->n_ids == w->cap_ids) {
        int32_t cap = w->cap_ids ? w->cap_ids * 2 : 64;
        int32_t *off = realloc(w->off, sizeof *off * (size_t)cap);
        if (off) w->off = off;
        int32_t *len = realloc(w->len, sizeof *len * (size_t)cap);
        if (len) w->len = len;
        uint8_t *acc = realloc(w->acc, (size_t)cap);
        if (acc) w->acc = acc;
        uint32_t *hs = realloc(w->hash, sizeof *hs * (size_t)cap);
        if (hs) w->hash = hs;
        int32_t *tr = realloc(w->trans, sizeof *tr * (size_t)cap * 256);
        if (tr) w->trans = tr;
        if (!off || !len || !acc || !hs || !tr) return W_NONE;
        w->cap_ids = cap;
    }
    if (w->n_items + n > w->cap_items) {
        int32_t cap = w->cap_items ? w->cap_items : 256;
        while (w->n_items + n > cap) cap *= 2;
        item *v = realloc(w->items, sizeof *v * (size_t)cap);
        if (!v) return W_NONE;
        w->items = v;
        w->cap_items = cap;
    }
    if ((w->n_ids + 1) * 2 > w->tab_cap) {
        int32_t cap = w->tab_cap * 2;
        int32_t *t = malloc(sizeof *t * (size_t)cap);
        if (!t) return W_NONE;
        for (int32_t i = 0; i < cap; i++) t[i] = -1;
        for (int32_t id = 0; id < w->n_ids; id++) {
            uint32_t slot = w->hash[id] & (uint32_t)(cap - 1);
            while (t[slot] >= 0) slot = (slot + 1) & (uint32_t)(cap - 1);
            t[slot] = id;
        }
        free(w->tab);
        w->tab = t;
        w->tab_cap = cap;
    }
    int32_t id = w->n_ids++;
    w->off[id] = w->n_items;
    w->len[id] = n;
    w->acc[id] = e->set_acc[k];
    w->hash[id] = h;
    memcpy(w->items + w->n_items, e->items + lo, sizeof(item) * (size_t)n);
    w->n_items += n;
    for (int b = 0; b < 256; b++) w->trans[(size_t)id * 256 + (size_t)b] = W_UNKNOWN;
    uint32_t slot = h & (uint32_t)(w->tab_cap - 1);
    while (w->tab[slot] >= 0) slot = (slot + 1) & (uint32_t)(w->tab_cap - 1);
    w->tab[slot] = id;
    return id;
}

int earley_walk_push(earley *e, uint8_t b) {
    wmemo *w = e->w;
    int32_t k = e->n_sets - 1;
    if (!w) return earley_push(e, b);
    if (e->n_sets + 1 >= w->cap_sets) {
        int32_t cap = w->cap_sets * 2;
        int32_t *v = realloc(w->set_id, sizeof *v * (size_t)cap);
        if (!v) return earley_push(e, b);
        for (int32_t i = w->cap_sets; i < cap; i++) v[i] = W_UNKNOWN;
        w->set_id = v;
        w->cap_sets = cap;
    }
    int32_t id = w->set_id[k];
    if (id == W_UNKNOWN) id = w->set_id[k] = w_intern(e, k);
    if (id >= 0) {
        int32_t t = w->trans[(size_t)id * 256 + b];
        if (t == W_DEAD) return 0;
        if (t >= 0) {
            /* the remembered set, copied in */
            int32_t n = w->len[t];
            if (e->n_sets + 1 >= e->cap_sets && grow_sets(e)) return -1;
            while (e->n_items + n > e->cap_items)
                if (grow_items(e)) return -1;
            memcpy(e->items + e->n_items, w->items + w->off[t], sizeof(item) * (size_t)n);
            e->n_items += n;
            e->set_acc[k + 1] = w->acc[t];
            e->n_sets++;
            e->set_start[k + 2] = e->n_items;
            w->set_id[k + 1] = t;
            return 1;
        }
    }
    int r = earley_push(e, b);
    if (r < 0) return r;
    if (r == 0) {
        if (id >= 0) w->trans[(size_t)id * 256 + b] = W_DEAD;
        return 0;
    }
    int32_t nid = w_intern(e, k + 1);
    w->set_id[k + 1] = nid;
    /* id may have moved the trans table: index again */
    if (id >= 0 && nid >= 0) w->trans[(size_t)id * 256 + b] = nid;
    return 1;
}

/* One byte per grammar byte class among bytes[8], for slot (computed once). */
static int32_t loop_reps(earley *e, int slot, const uint32_t bytes[8]) {
    const cons_nfa *g = e->g;
    if (!e->cls_ready) {
        int32_t map[512], ncls = 1;
        memset(e->cls, 0, 256);
        for (int32_t id = 0; id < g->n_sets; id++) {
            for (int32_t i = 0; i < ncls * 2; i++) map[i] = -1;
            int32_t nn = 0;
            for (int b = 0; b < 256; b++) {
                int32_t key = e->cls[b] * 2 + (int32_t)((g->sets[id][b >> 5] >> (b & 31)) & 1);
                if (map[key] < 0) map[key] = nn++;
                e->cls[b] = (uint8_t)map[key];
            }
            ncls = nn;
        }
        for (int k = 0; k < 4; k++) e->n_rep[k] = -1;
        e->cls_ready = true;
    }
    if (e->n_rep[slot] < 0) {
        uint8_t seen[256] = {0};
        e->n_rep[slot] = 0;
        for (int b = 0; b < 256; b++)
            if (((bytes[b >> 5] >> (b & 31)) & 1) && !seen[e->cls[b]]) {
                seen[e->cls[b]] = 1;
                e->rep[slot][e->n_rep[slot]++] = (uint8_t)b;
            }
    }
    return e->n_rep[slot];
}

/* For a set the walk memo cannot intern (items whose origins lie inside the
 * walk: an s-expression's atom after "(" or " "): 1 when pushing one byte
 * of each class of bytes[8] gives back the very same items (states and
 * origins) and acceptance. The next set then depends only on those items
 * and on sets below, which do not change, so every string of those bytes
 * keeps giving this set: all viable. Pushes at most max_push bytes (else
 * 0). */
static int self_loops(earley *e, int slot, const uint32_t bytes[8], int32_t max_push) {
    int32_t n = loop_reps(e, slot, bytes);
    if (n == 0 || n > max_push) return 0;
    int32_t k = e->n_sets - 1, lo = e->set_start[k], len = e->set_start[k + 1] - lo;
    for (int32_t r = 0; r < n; r++) {
        int res = earley_push(e, e->rep[slot][r]);
        if (res != 1) return 0;
        int32_t lo2 = e->set_start[k + 1], len2 = e->set_start[k + 2] - lo2;
        bool same = len2 == len && e->set_acc[k + 1] == e->set_acc[k];
        for (int32_t i = 0; same && i < len2; i++) {
            item it = e->items[lo2 + i];
            bool found = false;
            for (int32_t j = 0; j < len && !found; j++)
                found = e->items[lo + j].q == it.q && e->items[lo + j].origin == it.origin;
            same = found;
        }
        earley_pop(e);
        if (!same) return 0;
    }
    return 1;
}

int earley_walk_loops(earley *e, int slot, const uint32_t bytes[8], int32_t max_push) {
    wmemo *w = e->w;
    if (!w || slot < 0 || slot >= 4) return 0;
    int32_t k = e->n_sets - 1;
    if (k >= w->cap_sets) return 0;
    int32_t id = w->set_id[k];
    if (id == W_UNKNOWN) id = w->set_id[k] = w_intern(e, k);
    if (id < 0) return self_loops(e, slot, bytes, max_push);
    if (id >= (int32_t)sizeof w->loops[0]) return 0;
    if (w->loops[slot][id] != 2) return w->loops[slot][id];
    int res = 1;
    for (int b = 0; b < 256 && res; b++) {
        if (!((bytes[b >> 5] >> (b & 31)) & 1)) continue;
        int32_t t = w->trans[(size_t)id * 256 + (size_t)b];
        if (t == W_UNKNOWN) {
            int r = earley_walk_push(e, (uint8_t)b);
            if (r < 0) return 0; /* not remembered: memory may come back */
            if (r == 0) {
                res = 0;
                break;
            }
            t = w->set_id[k + 1];
            earley_pop(e);
        }
        res = t == id;
    }
    w->loops[slot][id] = (uint8_t)res;
    return res;
}
