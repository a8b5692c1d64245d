/* prefix.c: prefix hints by partial evaluation.
 *
 * A function's prefix hint is what it certainly appends to its stream
 * parameter p0 before anything that depends on its other arguments or on
 * the model. It is found by running the function's IR at compile time with
 * p0 bound to a symbolic stream and every other parameter unknown:
 * constants fold, locals hold known or unknown values, ifs on known
 * conditions take their branch, loops over known lists/ranges unroll, and
 * calls that are handed the stream are run the same way with their known
 * arguments (so `few_shot(s, EXAMPLES, ...)` over a constant list
 * contributes its text). The walk stops at the first append of an unknown
 * value, a gen/select/fork/read of the stream, control flow on an unknown
 * value, or anything else that could touch the stream in an unknown way —
 * or when its step budget runs out. It never changes the program: the hint
 * is only what the VM may compute and cache ahead.
 *
 * Values: a constant index (>= 0), or one of the markers below.
 */
#include <stdlib.h>
#include <string.h>

#include "compiler/fold.h"
#include "compiler/ir.h"

enum {
    PV_UNKNOWN = -1, /* some value the walk does not know */
    PV_STREAM = -2,  /* the stream the hint is for */
    PV_TAINTED = -3, /* a value that may contain that stream (a list holding it, ...) */
};

/* How evaluating a region ended. */
typedef enum { PE_NEXT, PE_STOP, PE_RETURN, PE_BREAK, PE_CONTINUE } pe_flow;

typedef struct pe {
    comp *c;
    sgl_bc_prefix_item *items;
    uint32_t n, cap;
    int64_t budget; /* nodes left to evaluate */
    int depth;      /* call depth */
    bool oom;
} pe;

typedef struct frame {
    ir_fn *f;
    int32_t *val;  /* per node */
    int32_t *slot; /* per local */
} frame;

static bool known(int32_t v) { return v >= 0; }

static int add_item(pe *p, sgl_bc_prefix_item it) {
    if (p->n == p->cap) {
        uint32_t nc = p->cap ? p->cap * 2 : 16;
        sgl_bc_prefix_item *ni = sgl_arena_alloc(p->c->arena, nc * sizeof *ni);
        if (!ni) return -1;
        if (p->n) memcpy(ni, p->items, p->n * sizeof *ni);
        p->items = ni;
        p->cap = nc;
    }
    p->items[p->n++] = it;
    return 0;
}

static int add_text(pe *p, int32_t k) {
    comp *c = p->c;
    if (c->consts[k].str.len == 0) return 0;
    if (p->n && p->items[p->n - 1].kind == SGL_PREFIX_TEXT) {
        const sgl_const *a = &c->consts[p->items[p->n - 1].konst], *b = &c->consts[k];
        sgl_strbuf sb = {0};
        int32_t m = -1;
        if (!sgl_strbuf_append(&sb, a->str.bytes, a->str.len) && !sgl_strbuf_append(&sb, b->str.bytes, b->str.len))
            m = comp_const_str(c, sb.data, sb.len);
        sgl_strbuf_free(&sb);
        if (m < 0) return -1;
        p->items[p->n - 1].konst = (uint32_t)m;
        return 0;
    }
    return add_item(p, (sgl_bc_prefix_item){SGL_PREFIX_TEXT, 0, (uint32_t)k});
}

/* range(a[, b[, c]]) over known ints, as a list constant (at most 4096
 * items), or -1. */
static int32_t fold_range(comp *c, const int32_t *k, uint32_t n) {
    int64_t a[3];
    for (uint32_t i = 0; i < n; i++) {
        if (!known(k[i]) || c->consts[k[i]].kind != SGL_CONST_INT) return -1;
        a[i] = c->consts[k[i]].i;
    }
    int64_t start = n >= 2 ? a[0] : 0, stop = n >= 2 ? a[1] : a[0], step = n == 3 ? a[2] : 1;
    if (n < 1 || n > 3 || step == 0) return -1;
    uint32_t cnt = 0;
    uint32_t items[4096];
    for (int64_t x = start; step > 0 ? x < stop : x > stop; x += step) {
        if (cnt == SGL_ARRAY_LEN(items)) return -1;
        int32_t ki = comp_const_int(c, x);
        if (ki < 0) return -1;
        items[cnt++] = (uint32_t)ki;
    }
    sgl_const L = {.kind = SGL_CONST_LIST};
    L.agg.items = items;
    L.agg.n = cnt;
    return comp_const_add(c, &L);
}

/* The value of pure node n from its inputs' values. */
static int32_t eval_pure(pe *p, frame *fr, const ir_node *n) {
    comp *c = p->c;
    int32_t in[8];
    bool all = true, taint = false;
    for (uint32_t i = 0; i < n->n_in; i++) {
        int32_t v = fr->val[n->in[i]];
        if (i < SGL_ARRAY_LEN(in)) in[i] = v;
        if (!known(v)) all = false;
        if (v == PV_STREAM || v == PV_TAINTED) taint = true;
    }
    if (taint) return PV_TAINTED;
    switch (n->op) {
    case IR_CONST: return n->k;
    case IR_LOAD: return fr->slot[n->i];
    case IR_FN_REF: return PV_UNKNOWN;
    default: break;
    }
    if (!all) return PV_UNKNOWN;
    switch (n->op) {
    case IR_UNOP: return comp_fold_unop(c, (sgl_op)n->i, in[0]);
    case IR_BINOP: return comp_fold_binop(c, (sgl_op)n->i, in[0], in[1]);
    case IR_AND:
    case IR_OR: {
        int t = comp_const_truthy(c, in[0]), u = comp_const_truthy(c, in[1]);
        sgl_const b = {.kind = SGL_CONST_BOOL};
        b.b = n->op == IR_AND ? (t && u) : (t || u);
        return comp_const_add(c, &b);
    }
    case IR_FSTR: {
        sgl_strbuf sb = {0};
        bool ok = true;
        for (uint32_t i = 0; i < n->n_in && ok; i++) ok = comp_fold_format(c, fr->val[n->in[i]], &sb) == 0;
        int32_t r = ok ? comp_const_str(c, sb.data ? sb.data : "", sb.len) : PV_UNKNOWN;
        sgl_strbuf_free(&sb);
        return r;
    }
    case IR_LIST:
    case IR_MAP: {
        uint32_t *items = sgl_arena_alloc(c->arena, (n->n_in + 1) * sizeof *items);
        if (!items) return PV_UNKNOWN;
        for (uint32_t i = 0; i < n->n_in; i++) {
            items[i] = (uint32_t)fr->val[n->in[i]];
            if (n->op == IR_MAP && i % 2 == 0 && c->consts[items[i]].kind != SGL_CONST_STRING) return PV_UNKNOWN;
        }
        sgl_const L = {.kind = n->op == IR_LIST ? SGL_CONST_LIST : SGL_CONST_MAP};
        L.agg.items = items;
        L.agg.n = n->op == IR_LIST ? n->n_in : n->n_in / 2;
        return comp_const_add(c, &L);
    }
    case IR_PURE_CALL:
        if (n->i == SGL_BUILTIN_RANGE) return fold_range(c, in, n->n_in);
        if (n->n_in <= SGL_ARRAY_LEN(in)) return comp_fold_builtin(c, (sgl_builtin)n->i, in, n->n_in);
        return PV_UNKNOWN;
    default: return PV_UNKNOWN;
    }
}

static pe_flow eval_region(pe *p, frame *fr, uint32_t r, int32_t *yield);
static pe_flow eval_call(pe *p, ir_fn *g, const int32_t *args, uint32_t n_args, bool fresh);

/* The text an APPEND of known value v adds, or -1. */
static int32_t append_text_of(comp *c, int32_t v, int64_t mode) {
    if (c->consts[v].kind == SGL_CONST_STRING) return v;
    if (mode == SGL_APPEND_STR) return -1; /* an error at run time */
    sgl_strbuf sb = {0};
    int32_t r = comp_fold_format(c, v, &sb) == 0 ? comp_const_str(c, sb.data ? sb.data : "", sb.len) : -1;
    sgl_strbuf_free(&sb);
    return r;
}

static pe_flow eval_node(pe *p, frame *fr, ir_ref id) {
    comp *c = p->c;
    ir_fn *f = fr->f;
    const ir_node *n = &f->nodes[id];
    if (--p->budget < 0) return PE_STOP;
    unsigned fl = ir_op_flags(n->op);
    if (fl & IRF_PURE) {
        int32_t v = eval_pure(p, fr, n);
        fr->val[id] = v < 0 && v != PV_TAINTED ? PV_UNKNOWN : v;
        if (n->op == IR_LOAD) fr->val[id] = fr->slot[n->i];
        return PE_NEXT;
    }
    int32_t s = n->n_in ? fr->val[n->in[0]] : PV_UNKNOWN;
    bool any_taint = false;
    for (uint32_t i = 0; i < n->n_in; i++)
        if (fr->val[n->in[i]] == PV_STREAM || fr->val[n->in[i]] == PV_TAINTED) any_taint = true;
    fr->val[id] = PV_UNKNOWN;
    switch (n->op) {
    case IR_STORE: fr->slot[n->i] = fr->val[n->in[0]]; return PE_NEXT;
    case IR_DROP: return PE_NEXT;
    case IR_APPEND_TEXT:
        if (s != PV_STREAM) return any_taint ? PE_STOP : PE_NEXT;
        return add_text(p, n->k) ? (p->oom = true, PE_STOP) : PE_NEXT;
    case IR_APPEND:
    case IR_ADD_ASSIGN: {
        int32_t v = fr->val[n->in[1]];
        if (s != PV_STREAM) {
            if (n->op == IR_ADD_ASSIGN && !any_taint && known(s) && known(v))
                fr->val[id] = comp_fold_binop(c, SGL_OP_ADD, s, v) >= 0 ? comp_fold_binop(c, SGL_OP_ADD, s, v)
                                                                        : PV_UNKNOWN;
            return any_taint ? PE_STOP : PE_NEXT;
        }
        if (n->op == IR_ADD_ASSIGN) fr->val[id] = PV_STREAM;
        if (n->op == IR_APPEND && n->i > SGL_APPEND_FMT) return PE_STOP; /* image / var_scope marker */
        if (!known(v)) return PE_STOP;
        int32_t t = append_text_of(c, v, n->op == IR_APPEND ? n->i : SGL_APPEND_VALUE);
        if (t < 0) return PE_STOP;
        return add_text(p, t) ? (p->oom = true, PE_STOP) : PE_NEXT;
    }
    case IR_ROLE_BEGIN:
    case IR_ROLE_END:
        if (s != PV_STREAM) return any_taint ? PE_STOP : PE_NEXT;
        if (add_item(p, (sgl_bc_prefix_item){n->op == IR_ROLE_BEGIN ? SGL_PREFIX_ROLE_BEGIN : SGL_PREFIX_ROLE_END,
                                             (uint8_t)n->i, 0})) {
            p->oom = true;
            return PE_STOP;
        }
        return PE_NEXT;
    case IR_INDEX:
        if (any_taint) return PE_STOP; /* reads the stream: waits for the model */
        if (known(s) && known(fr->val[n->in[1]])) {
            int32_t v = comp_fold_index(c, s, fr->val[n->in[1]]);
            fr->val[id] = v >= 0 ? v : PV_UNKNOWN;
        }
        return PE_NEXT;
    case IR_SET_INDEX:
        if (any_taint) return PE_STOP;
        if (f->nodes[n->in[0]].op == IR_LOAD) fr->slot[f->nodes[n->in[0]].i] = PV_UNKNOWN;
        return PE_NEXT;
    case IR_ASSERT: {
        int32_t v = fr->val[n->in[0]];
        return known(v) && comp_const_truthy(c, v) == 1 ? PE_NEXT : PE_STOP;
    }
    case IR_CALL:
    case IR_CALL_FRESH: {
        ir_fn *g = n->i >= 0 && (uint32_t)n->i < c->n_fns ? c->fns[n->i] : NULL;
        if (!g) return PE_STOP;
        bool passes_stream = n->op == IR_CALL && n->n_in > 0 && s == PV_STREAM;
        for (uint32_t i = passes_stream ? 1 : 0; i < n->n_in; i++)
            if (fr->val[n->in[i]] == PV_STREAM || fr->val[n->in[i]] == PV_TAINTED) return PE_STOP;
        if (!passes_stream) return PE_NEXT; /* cannot reach the stream; value unknown */
        int32_t args[256];
        uint32_t na = SGL_MIN(n->n_in, (uint32_t)SGL_ARRAY_LEN(args));
        for (uint32_t i = 0; i < na; i++) args[i] = fr->val[n->in[i]];
        pe_flow fl2 = eval_call(p, g, args, na, false);
        return fl2 == PE_STOP ? PE_STOP : PE_NEXT;
    }
    case IR_CALL_VALUE:
    case IR_BUILTIN:
        return any_taint ? PE_STOP : PE_NEXT;
    case IR_IF: {
        int32_t v = fr->val[n->in[0]];
        if (!known(v)) return PE_STOP;
        return eval_region(p, fr, n->reg[comp_const_truthy(c, v) == 1 ? 0 : 1], NULL);
    }
    case IR_FOR: {
        int32_t v = fr->val[n->in[0]];
        if (!known(v)) return PE_STOP;
        const sgl_const *it = &c->consts[v];
        uint32_t cnt = it->kind == SGL_CONST_LIST || it->kind == SGL_CONST_MAP ? it->agg.n
                       : it->kind == SGL_CONST_STRING                          ? it->str.len
                                                                              : UINT32_MAX;
        if (cnt == UINT32_MAX) return PE_STOP;
        if (it->kind == SGL_CONST_STRING) /* characters: leave non-ASCII to the VM */
            for (uint32_t i = 0; i < cnt; i++)
                if ((unsigned char)it->str.bytes[i] >= 0x80) return PE_STOP;
        for (uint32_t i = 0; i < cnt; i++) {
            int32_t item;
            if (it->kind == SGL_CONST_LIST) item = (int32_t)c->consts[v].agg.items[i];
            else if (it->kind == SGL_CONST_MAP) item = (int32_t)c->consts[v].agg.items[2 * i];
            else {
                item = comp_const_str(c, c->consts[v].str.bytes + i, 1);
                if (item < 0) return PE_STOP;
            }
            fr->slot[n->i] = item;
            pe_flow r = eval_region(p, fr, n->reg[0], NULL);
            if (r == PE_BREAK) break;
            if (r == PE_STOP || r == PE_RETURN) return r;
        }
        return PE_NEXT;
    }
    case IR_WHILE:
        for (;;) {
            int32_t y = PV_UNKNOWN;
            pe_flow r = eval_region(p, fr, n->reg[0], &y);
            if (r != PE_NEXT || !known(y)) return PE_STOP;
            if (comp_const_truthy(c, y) != 1) return PE_NEXT;
            r = eval_region(p, fr, n->reg[1], NULL);
            if (r == PE_BREAK) return PE_NEXT;
            if (r == PE_STOP || r == PE_RETURN) return r;
        }
    case IR_YIELD: return PE_NEXT; /* handled by eval_region */
    case IR_RETURN: return PE_RETURN;
    case IR_BREAK: return PE_BREAK;
    case IR_CONTINUE: return PE_CONTINUE;
    default: return PE_STOP; /* gen, select, fork, join, read_var, meta: the model's part */
    }
}

static pe_flow eval_region(pe *p, frame *fr, uint32_t r, int32_t *yield) {
    const ir_region *R = &fr->f->regions[r];
    for (uint32_t i = 0; i < R->len; i++) {
        ir_ref id = R->nodes[i];
        const ir_node *n = &fr->f->nodes[id];
        if (n->dead) continue;
        if (n->op == IR_YIELD && yield) *yield = fr->val[n->in[0]];
        pe_flow fl = eval_node(p, fr, id);
        if (fl != PE_NEXT) return fl;
    }
    return PE_NEXT;
}

/* Runs g with argument values args (parameter order; for a plain call
 * args[0] is the stream). Returns PE_STOP if the hint ended inside. */
static pe_flow eval_call(pe *p, ir_fn *g, const int32_t *args, uint32_t n_args, bool fresh) {
    (void)fresh;
    if (p->depth >= 16) return PE_STOP;
    frame fr = {g, calloc(g->n_nodes + 1, sizeof *fr.val), calloc(g->n_slots + 1, sizeof *fr.slot)};
    if (!fr.val || !fr.slot) {
        free(fr.val);
        free(fr.slot);
        p->oom = true;
        return PE_STOP;
    }
    for (uint32_t i = 0; i < g->n_nodes; i++) fr.val[i] = PV_UNKNOWN;
    for (uint32_t i = 0; i < g->n_slots; i++) fr.slot[i] = i < n_args && i < g->n_params ? args[i] : PV_UNKNOWN;
    p->depth++;
    pe_flow r = eval_region(p, &fr, 0, NULL);
    p->depth--;
    free(fr.val);
    free(fr.slot);
    return r == PE_STOP ? PE_STOP : PE_NEXT;
}

int comp_prefix_hint(comp *c, ir_fn *f) {
    f->n_prefix = 0;
    f->prefix = NULL;
    if (!f->stream_param) return 0;
    pe p = {.c = c, .budget = 200000};
    int32_t args[1] = {PV_STREAM}; /* every other parameter is unknown */
    eval_call(&p, f, args, 1, false);
    if (p.oom) return -1;
    f->prefix = p.items;
    f->n_prefix = p.n;
    return 0;
}
