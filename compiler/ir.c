/* ir.c: building and editing the dataflow-graph IR: the op table, the
 * constants pool, nodes and region schedules. All storage comes from the
 * compile's arena (growable arrays are re-allocated there by doubling). */
#include <string.h>

#include "compiler/ir.h"

static const struct {
    const char *name;
    unsigned flags;
} ir_table[] = {
#define IR(kind, name, flags, doc) {name, flags},
#include "compiler/ir.def"
#undef IR
};
_Static_assert(SGL_ARRAY_LEN(ir_table) == IR__COUNT, "ir table out of step with ir.def");

const char *ir_op_name(ir_op op) { return (unsigned)op < IR__COUNT ? ir_table[op].name : "?"; }
unsigned ir_op_flags(ir_op op) { return (unsigned)op < IR__COUNT ? ir_table[op].flags : 0; }

/* Grows an arena array (*p, *cap entries of size sz) to hold need entries. */
static int grow(sgl_arena *a, void **p, uint32_t *cap, uint32_t need, size_t sz) {
    if (need <= *cap) return 0;
    uint32_t nc = *cap ? *cap * 2 : 8;
    while (nc < need) nc *= 2;
    void *q = sgl_arena_alloc(a, (size_t)nc * sz);
    if (!q) return -1;
    if (*p) memcpy(q, *p, (size_t)*cap * sz);
    *p = q;
    *cap = nc;
    return 0;
}

static bool const_eq(const comp *c, const sgl_const *a, const sgl_const *b) {
    if (a->kind != b->kind) return false;
    switch (a->kind) {
    case SGL_CONST_NONE: return true;
    case SGL_CONST_BOOL: return a->b == b->b;
    case SGL_CONST_INT: return a->i == b->i;
    case SGL_CONST_FLOAT: return memcmp(&a->f, &b->f, sizeof a->f) == 0;
    case SGL_CONST_STRING: return a->str.len == b->str.len && !memcmp(a->str.bytes, b->str.bytes, a->str.len);
    case SGL_CONST_LIST:
    case SGL_CONST_MAP: {
        if (a->agg.n != b->agg.n) return false;
        uint32_t n = a->kind == SGL_CONST_MAP ? 2 * a->agg.n : a->agg.n;
        return n == 0 || !memcmp(a->agg.items, b->agg.items, n * sizeof *a->agg.items);
    }
    }
    (void)c;
    return false;
}

int32_t comp_const_add(comp *c, const sgl_const *k) {
    for (uint32_t i = 0; i < c->n_consts; i++)
        if (const_eq(c, &c->consts[i], k)) return (int32_t)i;
    if (grow(c->arena, (void **)&c->consts, &c->cap_consts, c->n_consts + 1, sizeof *c->consts)) return -1;
    sgl_const v = *k;
    if (v.kind == SGL_CONST_STRING) {
        char *s = sgl_arena_alloc(c->arena, (size_t)v.str.len + 1);
        if (!s) return -1;
        memcpy(s, v.str.bytes, v.str.len);
        v.str.bytes = s;
    } else if (v.kind == SGL_CONST_LIST || v.kind == SGL_CONST_MAP) {
        uint32_t n = v.kind == SGL_CONST_MAP ? 2 * v.agg.n : v.agg.n;
        uint32_t *items = sgl_arena_alloc(c->arena, (n ? n : 1) * sizeof *items);
        if (!items) return -1;
        if (n) memcpy(items, v.agg.items, n * sizeof *items);
        v.agg.items = items;
    }
    c->consts[c->n_consts] = v;
    return (int32_t)c->n_consts++;
}

int32_t comp_const_str(comp *c, const char *s, size_t len) {
    sgl_const k = {.kind = SGL_CONST_STRING};
    k.str.bytes = s;
    k.str.len = (uint32_t)len;
    return comp_const_add(c, &k);
}

int32_t comp_const_int(comp *c, int64_t v) {
    sgl_const k = {.kind = SGL_CONST_INT};
    k.i = v;
    return comp_const_add(c, &k);
}

uint32_t ir_region_new(comp *c, ir_fn *f, ir_ref owner, bool loop) {
    if (grow(c->arena, (void **)&f->regions, &f->cap_regions, f->n_regions + 1, sizeof *f->regions)) {
        c->failed = 1;
        return 0;
    }
    ir_region *r = &f->regions[f->n_regions];
    memset(r, 0, sizeof *r);
    r->owner = owner;
    r->loop = loop;
    return f->n_regions++;
}

int ir_region_insert(comp *c, ir_fn *f, uint32_t r, uint32_t pos, ir_ref n) {
    ir_region *R = &f->regions[r];
    if (grow(c->arena, (void **)&R->nodes, &R->cap, R->len + 1, sizeof *R->nodes)) return -1;
    if (pos > R->len) pos = R->len;
    memmove(R->nodes + pos + 1, R->nodes + pos, (R->len - pos) * sizeof *R->nodes);
    R->nodes[pos] = n;
    R->len++;
    f->nodes[n].region = r;
    ir_region_rechain(f, r);
    return 0;
}

void ir_region_remove(ir_fn *f, ir_ref n) {
    ir_region *R = &f->regions[f->nodes[n].region];
    for (uint32_t i = 0; i < R->len; i++)
        if (R->nodes[i] == n) {
            memmove(R->nodes + i, R->nodes + i + 1, (R->len - i - 1) * sizeof *R->nodes);
            R->len--;
            break;
        }
    ir_region_rechain(f, f->nodes[n].region);
}

void ir_region_rechain(ir_fn *f, uint32_t r) {
    ir_region *R = &f->regions[r];
    ir_ref prev = IR_NONE;
    for (uint32_t i = 0; i < R->len; i++) {
        ir_node *n = &f->nodes[R->nodes[i]];
        if (n->dead || !(ir_op_flags(n->op) & IRF_EFFECT)) continue;
        n->chain = prev;
        prev = R->nodes[i];
    }
}

ir_ref ir_add(comp *c, ir_fn *f, uint32_t r, ir_op op, const ir_ref *in, uint32_t n_in, sgl_loc loc) {
    if (grow(c->arena, (void **)&f->nodes, &f->cap_nodes, f->n_nodes + 1, sizeof *f->nodes)) {
        c->failed = 1;
        return IR_NONE;
    }
    ir_ref id = f->n_nodes;
    ir_node *n = &f->nodes[id];
    memset(n, 0, sizeof *n);
    n->op = op;
    n->k = -1;
    n->chain = IR_NONE;
    n->reg[0] = n->reg[1] = UINT32_MAX;
    n->loc = loc;
    if (n_in) {
        n->in = sgl_arena_alloc(c->arena, n_in * sizeof *n->in);
        if (!n->in) {
            c->failed = 1;
            return IR_NONE;
        }
        memcpy(n->in, in, n_in * sizeof *in);
    }
    n->n_in = n_in;
    f->n_nodes++;
    ir_region *R = &f->regions[r];
    if (grow(c->arena, (void **)&R->nodes, &R->cap, R->len + 1, sizeof *R->nodes)) {
        c->failed = 1;
        return IR_NONE;
    }
    if (ir_op_flags(op) & IRF_EFFECT) {
        for (uint32_t i = R->len; i-- > 0;) {
            const ir_node *p = &f->nodes[R->nodes[i]];
            if (!p->dead && (ir_op_flags(p->op) & IRF_EFFECT)) {
                f->nodes[id].chain = R->nodes[i];
                break;
            }
        }
    }
    R->nodes[R->len++] = id;
    f->nodes[id].region = r;
    return id;
}

uint32_t ir_count_uses(const ir_fn *f, ir_ref n) {
    uint32_t u = 0;
    for (uint32_t i = 0; i < f->n_nodes; i++) {
        const ir_node *x = &f->nodes[i];
        if (x->dead) continue;
        for (uint32_t j = 0; j < x->n_in; j++)
            if (x->in[j] == n) u++;
    }
    return u;
}

bool ir_region_within(const ir_fn *f, uint32_t r, uint32_t anc) {
    for (;;) {
        if (r == anc) return true;
        ir_ref o = f->regions[r].owner;
        if (o == IR_NONE) return false;
        r = f->nodes[o].region;
    }
}

bool ir_may_fail(const ir_fn *f, ir_ref id) {
    const ir_node *n = &f->nodes[id];
    if (ir_op_flags(n->op) & IRF_EFFECT) return false;
    switch (n->op) {
    case IR_CONST: case IR_LOAD: case IR_FN_REF: return false;
    case IR_FSTR: case IR_LIST: case IR_AND: case IR_OR: break; /* fail only through their inputs */
    case IR_MAP:
        for (uint32_t i = 0; i < n->n_in; i += 2) /* keys must be strings */
            if (f->nodes[n->in[i]].op != IR_CONST) return true;
        break;
    case IR_UNOP:
        if (n->i != SGL_OP_NOT) return true;
        break;
    case IR_BINOP:
        if (n->i != SGL_OP_EQ && n->i != SGL_OP_NE) return true;
        break;
    default: return true;
    }
    for (uint32_t i = 0; i < n->n_in; i++)
        if (ir_may_fail(f, n->in[i])) return true;
    return false;
}
