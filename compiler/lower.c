/* lower.c: checked AST -> dataflow-graph IR, one ir_fn per fn and for main.
 *
 * Three steps:
 *   1. const declarations are evaluated to constants (they are constant
 *      expressions by the checker's rules);
 *   2. stream typing: which frame slots certainly hold a stream, so that
 *      `s += ...` can become stream ops (APPEND_TEXT, GEN, ...) instead of
 *      the dynamic ADD_ASSIGN. Evidence for a fn's p0: @reorder, a
 *      fresh-stream call or run_batch of the fn, `with role(p0)`, `p0 +=`
 *      with gen/select/a role in it, fork/meta/text of p0, or a caller
 *      passing a known stream as p0 (a fixpoint over the call graph). A
 *      local is a stream when its `let` is a fresh-stream call. A slot that
 *      is ever assigned with `=` (or -=, *=, /=) is never a stream.
 *   3. statements and expressions become nodes. `s += a + b` on a stream
 *      appends the pieces of a string-typed + chain one by one (§7.2), with
 *      SGL_APPEND_STR checking that a non-literal piece is a string, which
 *      is the error `str + int` would raise anyway.
 */
#include <assert.h>
#include <string.h>

#include "compiler/fold.h"
#include "compiler/ir.h"

/* ---- helpers over the AST ---- */

static sgl_loc stmt_loc(const sgl_node *n) { return n->loc; }

static int fn_index_of(const comp *c, const sgl_node *decl) {
    for (uint32_t i = 0; i < c->n_fns; i++)
        if (c->fn_decls[i] == decl) return (int)i;
    return -1;
}

static bool is_prim_call(const sgl_node *e, unsigned flag) {
    return e->kind == SGL_AST_CALL && e->call.call_kind == SGL_CALL_BUILTIN &&
           (sgl_builtin_flags(e->call.builtin) & flag);
}

static bool is_role_call(const sgl_node *e) { return is_prim_call(e, SGL_BI_ROLE); }
static bool is_image_call(const sgl_node *e) {
    return e->kind == SGL_AST_CALL && e->call.call_kind == SGL_CALL_BUILTIN && e->call.builtin == SGL_BUILTIN_IMAGE;
}
static bool is_gen_call(const sgl_node *e) { return is_prim_call(e, SGL_BI_GEN); }

static sgl_role role_of(sgl_builtin b) {
    return b == SGL_BUILTIN_SYSTEM ? SGL_ROLE_SYSTEM : b == SGL_BUILTIN_USER ? SGL_ROLE_USER : SGL_ROLE_ASSISTANT;
}

/* Does an appended expression contain gen/select/a role (which only a
 * stream can take)? Follows the same paths the checker passes "appended"
 * along: + chains, f-string parts, role arguments. */
static bool has_prim(const sgl_node *e) {
    switch (e->kind) {
    case SGL_AST_BINARY: return e->binary.op == SGL_OP_ADD && (has_prim(e->binary.lhs) || has_prim(e->binary.rhs));
    case SGL_AST_FSTRING:
        for (uint32_t i = 0; i < e->fstr.parts.len; i++)
            if (has_prim(e->fstr.parts.items[i])) return true;
        return false;
    case SGL_AST_CALL: return is_gen_call(e) || is_role_call(e) || is_image_call(e);
    default: return false;
    }
}

/* ---- constants ---- */

static int32_t const_of_decl(comp *c, sgl_node *decl);

/* Evaluates a constant expression to a constant index, or -1 if it is not
 * one (or does not fold). */
static int32_t kval(comp *c, const sgl_node *e) {
    switch (e->kind) {
    case SGL_AST_NONE: { sgl_const k = {.kind = SGL_CONST_NONE}; return comp_const_add(c, &k); }
    case SGL_AST_BOOL: { sgl_const k = {.kind = SGL_CONST_BOOL}; k.b = e->boolean; return comp_const_add(c, &k); }
    case SGL_AST_INT: return comp_const_int(c, e->integer);
    case SGL_AST_FLOAT: { sgl_const k = {.kind = SGL_CONST_FLOAT}; k.f = e->real; return comp_const_add(c, &k); }
    case SGL_AST_STRING: return comp_const_str(c, e->str.bytes, e->str.len);
    case SGL_AST_NAME:
        if (e->name.bind.kind == SGL_BIND_CONST) return const_of_decl(c, e->name.bind.decl);
        return -1;
    case SGL_AST_LIST:
    case SGL_AST_MAP: {
        bool map = e->kind == SGL_AST_MAP;
        uint32_t n = e->list.items.len;
        uint32_t *items = sgl_arena_alloc(c->arena, (map ? 2 * n : n) * sizeof *items + 1);
        if (!items) return -1;
        for (uint32_t i = 0; i < n; i++) {
            const sgl_node *it = e->list.items.items[i];
            if (map) {
                int32_t kk = kval(c, it->pair.key), kv = kval(c, it->pair.value);
                if (kk < 0 || kv < 0 || c->consts[kk].kind != SGL_CONST_STRING) return -1;
                items[2 * i] = (uint32_t)kk;
                items[2 * i + 1] = (uint32_t)kv;
            } else {
                int32_t k = kval(c, it);
                if (k < 0) return -1;
                items[i] = (uint32_t)k;
            }
        }
        sgl_const k = {.kind = map ? SGL_CONST_MAP : SGL_CONST_LIST};
        k.agg.items = items;
        k.agg.n = n;
        return comp_const_add(c, &k);
    }
    case SGL_AST_FSTRING: {
        sgl_strbuf sb = {0};
        int32_t r = 0;
        for (uint32_t i = 0; i < e->fstr.parts.len && r >= 0; i++) {
            int32_t k = kval(c, e->fstr.parts.items[i]);
            if (k < 0 || comp_fold_format(c, k, &sb)) r = -1;
        }
        if (r >= 0) r = comp_const_str(c, sb.data ? sb.data : "", sb.len);
        sgl_strbuf_free(&sb);
        return r;
    }
    case SGL_AST_UNARY: {
        int32_t a = kval(c, e->unary.operand);
        return a < 0 ? -1 : comp_fold_unop(c, e->unary.op, a);
    }
    case SGL_AST_BINARY: {
        int32_t a = kval(c, e->binary.lhs);
        if (a < 0) return -1;
        if (e->binary.op == SGL_OP_AND || e->binary.op == SGL_OP_OR) {
            int t = comp_const_truthy(c, a);
            if ((e->binary.op == SGL_OP_AND && !t) || (e->binary.op == SGL_OP_OR && t)) {
                sgl_const k = {.kind = SGL_CONST_BOOL};
                k.b = t;
                return comp_const_add(c, &k);
            }
            int32_t b = kval(c, e->binary.rhs);
            if (b < 0) return -1;
            sgl_const k = {.kind = SGL_CONST_BOOL};
            k.b = comp_const_truthy(c, b) == 1;
            return comp_const_add(c, &k);
        }
        int32_t b = kval(c, e->binary.rhs);
        return b < 0 ? -1 : comp_fold_binop(c, e->binary.op, a, b);
    }
    case SGL_AST_INDEX: {
        int32_t o = kval(c, e->index.obj), i = kval(c, e->index.index);
        return o < 0 || i < 0 ? -1 : comp_fold_index(c, o, i);
    }
    default: return -1;
    }
}

/* The constant of a CONST declaration, evaluated once (memoized; a cycle
 * or a non-constant initializer gives -1). */
static int32_t const_of_decl(comp *c, sgl_node *decl) {
    for (uint32_t i = 0; i < c->n_const_decls; i++)
        if (c->const_decls[i] == decl) return c->const_k[i];
    /* Not seen: reserve an entry (-1 guards against cycles), evaluate. */
    sgl_node **d = sgl_arena_alloc(c->arena, (c->n_const_decls + 1) * sizeof *d);
    int32_t *k = sgl_arena_alloc(c->arena, (c->n_const_decls + 1) * sizeof *k);
    if (!d || !k) return -1;
    if (c->n_const_decls) {
        memcpy(d, c->const_decls, c->n_const_decls * sizeof *d);
        memcpy(k, c->const_k, c->n_const_decls * sizeof *k);
    }
    uint32_t me = c->n_const_decls++;
    d[me] = decl;
    k[me] = -1;
    c->const_decls = d;
    c->const_k = k;
    int32_t v = kval(c, decl->decl.value);
    c->const_k[me] = v;
    return v;
}

/* ---- stream typing ---- */

typedef struct styping {
    comp *c;
    int fi;            /* function being scanned */
    uint8_t *is_stream; /* per slot of that function */
    uint8_t *demoted;   /* per slot: plainly assigned somewhere */
    bool changed;
    /* weak evidence for p0: `p0 += ...` and p0 read nowhere but in stream
     * positions (with, fork/meta/text, s["v"], the stream argument of a call) */
    uint32_t p0_appends, p0_reads, p0_stream_reads;
} styping;

static bool *g_fn_stream; /* per fn: p0 is a stream (during inference) */

static void mark_p0(styping *t, int fi) {
    if (fi >= 0 && !g_fn_stream[fi]) {
        g_fn_stream[fi] = true;
        t->changed = true;
    }
}

static int slot_of(const sgl_node *e) {
    if (e->kind == SGL_AST_NAME && (e->name.bind.kind == SGL_BIND_LOCAL || e->name.bind.kind == SGL_BIND_PARAM))
        return e->name.bind.slot;
    return -1;
}

static void mark_slot(styping *t, const sgl_node *e) {
    int s = slot_of(e);
    if (s >= 0 && !t->is_stream[s]) {
        t->is_stream[s] = 1;
        t->changed = true;
    }
}

static void st_expr(styping *t, const sgl_node *e);

static void st_list(styping *t, const sgl_node_list *l) {
    for (uint32_t i = 0; i < l->len; i++) st_expr(t, l->items[i]);
}

static void p0_stream_use(styping *t, const sgl_node *e) {
    if (e && slot_of(e) == 0) t->p0_stream_reads++;
}

static void st_expr(styping *t, const sgl_node *e) {
    if (!e) return;
    switch (e->kind) {
    case SGL_AST_NAME:
        if (slot_of(e) == 0) t->p0_reads++;
        break;
    case SGL_AST_FSTRING: st_list(t, &e->fstr.parts); break;
    case SGL_AST_LIST: case SGL_AST_MAP: st_list(t, &e->list.items); break;
    case SGL_AST_PAIR: st_expr(t, e->pair.key); st_expr(t, e->pair.value); break;
    case SGL_AST_INDEX:
        if (e->index.index->kind == SGL_AST_STRING) p0_stream_use(t, e->index.obj);
        st_expr(t, e->index.obj);
        st_expr(t, e->index.index);
        break;
    case SGL_AST_UNARY: st_expr(t, e->unary.operand); break;
    case SGL_AST_BINARY: st_expr(t, e->binary.lhs); st_expr(t, e->binary.rhs); break;
    case SGL_AST_KWARG: st_expr(t, e->kwarg.value); break;
    case SGL_AST_COMP:
        st_expr(t, e->comp.iter);
        st_expr(t, e->comp.key);
        st_expr(t, e->comp.value);
        st_expr(t, e->comp.cond);
        break;
    case SGL_AST_CALL:
        st_list(t, &e->call.args);
        if (e->call.call_kind == SGL_CALL_BUILTIN) {
            sgl_builtin b = e->call.builtin;
            if ((b == SGL_BUILTIN_FORK || b == SGL_BUILTIN_META || b == SGL_BUILTIN_TEXT || b == SGL_BUILTIN_MESSAGES ||
                 (b >= SGL_BUILTIN_SYSTEM_BEGIN && b <= SGL_BUILTIN_ASSISTANT_END)) &&
                e->call.n_positional >= 1) {
                mark_slot(t, e->call.args.items[0]);
                p0_stream_use(t, e->call.args.items[0]);
            }
            if ((b == SGL_BUILTIN_RUN_BATCH || b == SGL_BUILTIN_RUN) && e->call.n_positional >= 1) {
                const sgl_node *f = e->call.args.items[0];
                if (f->kind == SGL_AST_NAME && f->name.bind.kind == SGL_BIND_FN)
                    mark_p0(t, fn_index_of(t->c, f->name.bind.decl));
            }
        } else if (e->call.call_kind == SGL_CALL_FN_FRESH) {
            mark_p0(t, fn_index_of(t->c, e->call.fn));
        } else if (e->call.call_kind == SGL_CALL_FN && e->call.fn->fn.params.len > 0) {
            const sgl_node *a0 = e->call.param_args[0];
            p0_stream_use(t, a0);
            int s = a0 ? slot_of(a0) : -1;
            if (s >= 0 && t->is_stream[s] && !t->demoted[s]) mark_p0(t, fn_index_of(t->c, e->call.fn));
        }
        break;
    default: break;
    }
}

static void st_block(styping *t, const sgl_node *b);

static void st_stmt(styping *t, const sgl_node *n) {
    switch (n->kind) {
    case SGL_AST_LET:
        st_expr(t, n->decl.value);
        if (n->decl.value->kind == SGL_AST_CALL && n->decl.value->call.call_kind == SGL_CALL_FN_FRESH &&
            n->decl.slot >= 0 && !t->is_stream[n->decl.slot]) {
            t->is_stream[n->decl.slot] = 1;
            t->changed = true;
        }
        break;
    case SGL_AST_ASSIGN: {
        st_expr(t, n->assign.value);
        if (n->assign.target->kind != SGL_AST_NAME) st_expr(t, n->assign.target);
        int s = slot_of(n->assign.target);
        if (n->assign.op == SGL_OP_ADD) {
            if (s >= 0 && has_prim(n->assign.value)) mark_slot(t, n->assign.target);
            if (s == 0) t->p0_appends++;
        } else if (s >= 0 && !t->demoted[s]) {
            t->demoted[s] = 1;
            t->changed = true;
        }
        break;
    }
    case SGL_AST_EXPR_STMT: st_expr(t, n->expr_stmt.expr); break;
    case SGL_AST_IF:
        st_expr(t, n->if_.cond);
        st_block(t, n->if_.then);
        if (n->if_.els) {
            if (n->if_.els->kind == SGL_AST_IF) st_stmt(t, n->if_.els);
            else st_block(t, n->if_.els);
        }
        break;
    case SGL_AST_FOR: st_expr(t, n->for_.iter); st_block(t, n->for_.body); break;
    case SGL_AST_WHILE: st_expr(t, n->while_.cond); st_block(t, n->while_.body); break;
    case SGL_AST_RETURN: st_expr(t, n->ret.value); break;
    case SGL_AST_ASSERT: st_expr(t, n->assert_.cond); st_expr(t, n->assert_.msg); break;
    case SGL_AST_WITH:
        if (n->with.stream) {
            p0_stream_use(t, n->with.stream);
            st_expr(t, n->with.stream);
            mark_slot(t, n->with.stream);
        }
        st_block(t, n->with.body);
        break;
    default: break;
    }
}

static void st_block(styping *t, const sgl_node *b) {
    if (!b || b->kind != SGL_AST_BLOCK) return;
    for (uint32_t i = 0; i < b->block.stmts.len; i++) st_stmt(t, b->block.stmts.items[i]);
}

/* Per fn, per slot: 1 if the slot certainly holds a stream. */
static int infer_streams(comp *c, uint8_t **slots) {
    bool *fs = sgl_arena_alloc(c->arena, c->n_fns + 1);
    uint8_t **dem = sgl_arena_alloc(c->arena, (c->n_fns + 1) * sizeof *dem);
    if (!fs || !dem) return -1;
    g_fn_stream = fs;
    for (uint32_t i = 0; i < c->n_fns; i++) {
        ir_fn *f = c->fns[i];
        slots[i] = sgl_arena_alloc(c->arena, f->n_slots + 1);
        dem[i] = sgl_arena_alloc(c->arena, f->n_slots + 1);
        if (!slots[i] || !dem[i]) return -1;
        if (f->flags & SGL_FNF_REORDER) fs[i] = true;
    }
    for (int round = 0; round < 64; round++) {
        bool changed = false;
        for (uint32_t i = 0; i < c->n_fns; i++) {
            ir_fn *f = c->fns[i];
            styping t = {.c = c, .fi = (int)i, .is_stream = slots[i], .demoted = dem[i]};
            if (f->n_params > 0 && fs[i] && !slots[i][0]) slots[i][0] = 1, t.changed = true;
            const sgl_node *body = f->decl->kind == SGL_AST_FN ? f->decl->fn.body : f->decl->main.body;
            st_block(&t, body);
            if (f->decl->kind == SGL_AST_FN && f->n_params > 0 && t.p0_appends && t.p0_reads == t.p0_stream_reads &&
                !slots[i][0])
                slots[i][0] = 1, t.changed = true;
            if (f->n_params > 0 && slots[i][0] && !fs[i]) fs[i] = true, t.changed = true;
            changed |= t.changed;
        }
        if (!changed) break;
    }
    for (uint32_t i = 0; i < c->n_fns; i++) {
        ir_fn *f = c->fns[i];
        for (uint32_t s = 0; s < f->n_slots; s++)
            if (dem[i][s]) slots[i][s] = 0;
        f->stream_param = f->n_params > 0 && slots[i][0];
        if (f->stream_param) f->flags |= SGL_FNF_STREAM;
    }
    g_fn_stream = NULL;
    return 0;
}

/* ---- lowering ---- */

typedef struct with_frame {
    ir_ref stream;  /* LOAD of the with's stream slot, or the temp holding it */
    int slot;       /* slot to reload the stream from */
    sgl_role role;
    uint32_t loop_depth;
    int name_slot;  /* var_scope: slot holding the variable name; -1 for a role */
} with_frame;

typedef struct lw {
    comp *c;
    ir_fn *f;
    uint32_t r;          /* current region */
    ir_ref *cache;       /* per slot: LOAD node valid here, or IR_NONE */
    uint32_t cache_len;
    const uint8_t *stream_slot;
    uint32_t stmt;
    with_frame withs[64];
    uint32_t n_withs;
    uint32_t loop_depth;
} lw;

static void cache_clear(lw *w) {
    for (uint32_t i = 0; i < w->cache_len; i++) w->cache[i] = IR_NONE;
}

static ir_ref add(lw *w, ir_op op, const ir_ref *in, uint32_t n, sgl_loc loc) {
    ir_ref id = ir_add(w->c, w->f, w->r, op, in, n, loc);
    if (id != IR_NONE) w->f->nodes[id].stmt = w->stmt;
    return id;
}

static ir_ref add_k(lw *w, int32_t k, sgl_loc loc) {
    if (k < 0) {
        w->c->failed = 1;
        return IR_NONE;
    }
    ir_ref id = add(w, IR_CONST, NULL, 0, loc);
    if (id != IR_NONE) w->f->nodes[id].k = k;
    return id;
}

static ir_ref add_i(lw *w, ir_op op, int64_t i, const ir_ref *in, uint32_t n, sgl_loc loc) {
    ir_ref id = add(w, op, in, n, loc);
    if (id != IR_NONE) w->f->nodes[id].i = i;
    return id;
}

static ir_ref load(lw *w, int slot, sgl_loc loc) {
    if (slot < 0 || (uint32_t)slot >= w->cache_len) {
        w->c->failed = 1;
        return IR_NONE;
    }
    if (w->cache[slot] != IR_NONE) return w->cache[slot];
    ir_ref id = add_i(w, IR_LOAD, slot, NULL, 0, loc);
    w->cache[slot] = id;
    return id;
}

static void store(lw *w, int slot, ir_ref v, sgl_loc loc) {
    add_i(w, IR_STORE, slot, &v, 1, loc);
    if (slot >= 0 && (uint32_t)slot < w->cache_len) w->cache[slot] = IR_NONE;
}

static uint32_t new_temp(lw *w) {
    uint32_t s = w->f->n_slots++;
    if (s >= w->cache_len) {
        uint32_t n = w->cache_len * 2 + 8;
        ir_ref *nc = sgl_arena_alloc(w->c->arena, n * sizeof *nc);
        if (!nc) {
            w->c->failed = 1;
            return s;
        }
        memcpy(nc, w->cache, w->cache_len * sizeof *nc);
        for (uint32_t i = w->cache_len; i < n; i++) nc[i] = IR_NONE;
        w->cache = nc;
        w->cache_len = n;
    }
    return s;
}

static ir_ref lower_expr(lw *w, const sgl_node *e);

/* Is an expression free of effects (so AND/OR may evaluate it lazily as a
 * PURE node)? Calls (except pure builtins) and indexing are effects. */
static bool expr_pure(const sgl_node *e) {
    switch (e->kind) {
    case SGL_AST_NONE: case SGL_AST_BOOL: case SGL_AST_INT: case SGL_AST_FLOAT: case SGL_AST_STRING:
    case SGL_AST_NAME:
        return true;
    case SGL_AST_FSTRING:
        for (uint32_t i = 0; i < e->fstr.parts.len; i++)
            if (!expr_pure(e->fstr.parts.items[i])) return false;
        return true;
    case SGL_AST_LIST: case SGL_AST_MAP:
        for (uint32_t i = 0; i < e->list.items.len; i++)
            if (!expr_pure(e->list.items.items[i])) return false;
        return true;
    case SGL_AST_PAIR: return expr_pure(e->pair.key) && expr_pure(e->pair.value);
    case SGL_AST_UNARY: return expr_pure(e->unary.operand);
    case SGL_AST_BINARY: return expr_pure(e->binary.lhs) && expr_pure(e->binary.rhs);
    default: return false;
    }
}

static bool builtin_pure(sgl_builtin b) {
    switch (b) {
    case SGL_BUILTIN_LEN: case SGL_BUILTIN_STR: case SGL_BUILTIN_INT: case SGL_BUILTIN_FLOAT:
    case SGL_BUILTIN_RANGE: case SGL_BUILTIN_KEYS: case SGL_BUILTIN_JSON_PARSE: case SGL_BUILTIN_JSON_DUMP:
    case SGL_BUILTIN_REGEX_MATCH: case SGL_BUILTIN_FORMAT: case SGL_BUILTIN_REPR: case SGL_BUILTIN_SLICE:
    case SGL_BUILTIN_REPLACE: case SGL_BUILTIN_INDEX: case SGL_BUILTIN_COUNT: case SGL_BUILTIN_UPPER:
    case SGL_BUILTIN_REGEX_FIND_ALL: case SGL_BUILTIN_REGEX_SUB: case SGL_BUILTIN_EXP: case SGL_BUILTIN_LOG:
    case SGL_BUILTIN_SQRT: case SGL_BUILTIN_ABS: case SGL_BUILTIN_MIN: case SGL_BUILTIN_MAX: case SGL_BUILTIN_ROUND:
        return true;
    default: return false;
    }
}

/* Literal trees (no names) become one constant even at -O0: writing
 * ["a", "b"] is writing a constant. */
static bool is_literal_tree(const sgl_node *e) {
    switch (e->kind) {
    case SGL_AST_NONE: case SGL_AST_BOOL: case SGL_AST_INT: case SGL_AST_FLOAT: case SGL_AST_STRING: return true;
    case SGL_AST_LIST: case SGL_AST_MAP:
        for (uint32_t i = 0; i < e->list.items.len; i++)
            if (!is_literal_tree(e->list.items.items[i])) return false;
        return true;
    case SGL_AST_PAIR: return is_literal_tree(e->pair.key) && is_literal_tree(e->pair.value);
    default: return false;
    }
}

/* Builds a gen/select/builtin site from a call: returns the site and pushes
 * the dynamic inputs onto in[*n] (after whatever is there). */
static ir_site *make_site(lw *w, const sgl_node *call, ir_ref *in, uint32_t *n, uint32_t max) {
    comp *c = w->c;
    sgl_builtin b = call->call.builtin;
    ir_site *s = sgl_arena_alloc(c->arena, sizeof *s);
    uint32_t nargs = call->call.args.len + 1;
    if (!s) goto oom;
    s->builtin = b;
    s->name_k = SGL_SITE_NO_NAME;
    s->kw_id = sgl_arena_alloc(c->arena, nargs * sizeof *s->kw_id);
    s->kw_k = sgl_arena_alloc(c->arena, nargs * sizeof *s->kw_k);
    if (!s->kw_id || !s->kw_k) goto oom;
    uint32_t np = call->call.n_positional;
    sgl_node *const *args = call->call.args.items;
    uint32_t first_kw = 0;
    if (b == SGL_BUILTIN_GEN || b == SGL_BUILTIN_SELECT) {
        if (np >= 1) {
            const sgl_node *nm = args[0];
            if (nm->kind == SGL_AST_NONE) {
                s->name_k = SGL_SITE_NO_NAME;
            } else if (nm->kind == SGL_AST_STRING) {
                s->name_k = comp_const_str(c, nm->str.bytes, nm->str.len);
            } else {
                s->name_k = SGL_SITE_DYNAMIC;
                if (*n < max) in[(*n)++] = lower_expr(w, nm);
            }
        }
        if (b == SGL_BUILTIN_SELECT && np >= 2) { /* positional choices -> kwarg */
            s->kw_id[s->n_kw] = SGL_KWARG_CHOICES;
            if (is_literal_tree(args[1])) {
                s->kw_k[s->n_kw] = kval(c, args[1]);
            } else {
                s->kw_k[s->n_kw] = SGL_SITE_DYNAMIC;
                if (*n < max) in[(*n)++] = lower_expr(w, args[1]);
            }
            s->n_kw++;
        }
        first_kw = np;
    } else {
        for (uint32_t i = 0; i < np; i++)
            if (*n < max) in[(*n)++] = lower_expr(w, args[i]);
        s->n_pos = np;
        first_kw = np;
    }
    for (uint32_t i = first_kw; i < call->call.args.len; i++) {
        const sgl_node *a = args[i];
        if (a->kind != SGL_AST_KWARG) continue;
        int id = sgl_kwarg_lookup(a->kwarg.name);
        if (id < 0) continue; /* the checker reported it */
        s->kw_id[s->n_kw] = (uint32_t)id;
        if (is_literal_tree(a->kwarg.value)) {
            s->kw_k[s->n_kw] = kval(c, a->kwarg.value);
        } else {
            s->kw_k[s->n_kw] = SGL_SITE_DYNAMIC;
            if (*n < max) in[(*n)++] = lower_expr(w, a->kwarg.value);
        }
        s->n_kw++;
    }
    return s;
oom:
    c->failed = 1;
    return NULL;
}

#define MAX_IN 256

static ir_ref lower_call(lw *w, const sgl_node *e) {
    comp *c = w->c;
    ir_ref in[MAX_IN];
    uint32_t n = 0;
    uint32_t np = e->call.n_positional;
    sgl_node *const *args = e->call.args.items;
    if (e->call.args.len > MAX_IN - 2) {
        sgl_error_set(c->err, "too many arguments in one call (at most %d)", MAX_IN - 2);
        c->failed = 1;
        return IR_NONE;
    }
    switch (e->call.call_kind) {
    case SGL_CALL_FN:
    case SGL_CALL_FN_FRESH: {
        const sgl_node *fn = e->call.fn;
        int fi = fn_index_of(c, fn);
        uint32_t npar = fn->fn.params.len;
        /* Arguments are evaluated left to right (source order), then passed
         * in parameter order; the emitter keeps effectful ones in temps
         * when the two orders differ. */
        ir_ref byarg[MAX_IN];
        for (uint32_t i = 0; i < e->call.args.len; i++) {
            const sgl_node *a = args[i];
            byarg[i] = lower_expr(w, a->kind == SGL_AST_KWARG ? a->kwarg.value : a);
        }
        uint32_t first = e->call.call_kind == SGL_CALL_FN_FRESH ? 1 : 0;
        for (uint32_t p = first; p < npar; p++) {
            const sgl_node *pa = e->call.param_args[p];
            ir_ref v = IR_NONE;
            for (uint32_t i = 0; i < e->call.args.len; i++) {
                const sgl_node *a = args[i];
                if ((a->kind == SGL_AST_KWARG ? a->kwarg.value : a) == pa) v = byarg[i];
            }
            in[n++] = v;
        }
        return add_i(w, e->call.call_kind == SGL_CALL_FN ? IR_CALL : IR_CALL_FRESH, fi, in, n, e->loc);
    }
    case SGL_CALL_BUILTIN: {
        sgl_builtin b = e->call.builtin;
        switch (b) {
        case SGL_BUILTIN_FORK:
            for (uint32_t i = 0; i < np && n < 2; i++) in[n++] = lower_expr(w, args[i]);
            return add_i(w, IR_FORK, n, in, n, e->loc);
        case SGL_BUILTIN_META:
            in[n++] = lower_expr(w, args[0]);
            in[n++] = lower_expr(w, args[1]);
            return add(w, IR_META, in, n, e->loc);
        case SGL_BUILTIN_SYSTEM_BEGIN: case SGL_BUILTIN_SYSTEM_END: case SGL_BUILTIN_USER_BEGIN:
        case SGL_BUILTIN_USER_END: case SGL_BUILTIN_ASSISTANT_BEGIN: case SGL_BUILTIN_ASSISTANT_END: {
            /* SGLang's explicit role markers: the two halves of `with ROLE(s) { }` */
            static_assert(SGL_BUILTIN_SYSTEM_END == SGL_BUILTIN_SYSTEM_BEGIN + 1 &&
                              SGL_BUILTIN_USER_BEGIN == SGL_BUILTIN_SYSTEM_BEGIN + 2 &&
                              SGL_BUILTIN_ASSISTANT_END == SGL_BUILTIN_SYSTEM_BEGIN + 5,
                          "role markers in builtins.def order");
            int k = (int)(b - SGL_BUILTIN_SYSTEM_BEGIN);
            sgl_role role = k < 2 ? SGL_ROLE_SYSTEM : k < 4 ? SGL_ROLE_USER : SGL_ROLE_ASSISTANT;
            in[n++] = lower_expr(w, args[0]);
            add_i(w, k % 2 ? IR_ROLE_END : IR_ROLE_BEGIN, role, in, 1, e->loc);
            sgl_const kn = {.kind = SGL_CONST_NONE};
            return add_k(w, comp_const_add(c, &kn), e->loc);
        }
        case SGL_BUILTIN_JOIN: {
            if (np == 2) { /* join(sep, items): the string join */
                for (uint32_t i = 0; i < np; i++) in[n++] = lower_expr(w, args[i]);
                return add_i(w, IR_PURE_CALL, b, in, n, e->loc);
            }
            in[n++] = lower_expr(w, args[0]);
            int64_t mode = SGL_JOIN_GATHER;
            for (uint32_t i = np; i < e->call.args.len; i++) {
                const sgl_node *a = args[i];
                if (a->kind != SGL_AST_KWARG || strcmp(a->kwarg.name, "mode")) continue;
                if (a->kwarg.value->kind == SGL_AST_STRING) {
                    mode = strcmp(a->kwarg.value->str.bytes, "concat") && strcmp(a->kwarg.value->str.bytes, "concate_and_append")
                               ? SGL_JOIN_GATHER
                               : SGL_JOIN_CONCAT;
                } else {
                    mode = SGL_JOIN_DYNAMIC;
                    in[n++] = lower_expr(w, a->kwarg.value);
                }
            }
            return add_i(w, IR_JOIN, mode, in, n, e->loc);
        }
        default: break;
        }
        if (np < e->call.args.len) { /* keyword arguments: a site */
            ir_site *s = make_site(w, e, in, &n, MAX_IN);
            ir_ref id = add_i(w, IR_BUILTIN, b, in, n, e->loc);
            if (id != IR_NONE) w->f->nodes[id].site = s;
            return id;
        }
        for (uint32_t i = 0; i < np; i++) in[n++] = lower_expr(w, args[i]);
        return add_i(w, builtin_pure(b) ? IR_PURE_CALL : IR_BUILTIN, b, in, n, e->loc);
    }
    default: { /* a function value */
        if (np < e->call.args.len) {
            sgl_error_set(c->err, "keyword arguments in a call of a function value are not supported");
            c->failed = 1;
            return IR_NONE;
        }
        in[n++] = lower_expr(w, e->call.callee);
        for (uint32_t i = 0; i < np; i++) in[n++] = lower_expr(w, args[i]);
        return add(w, IR_CALL_VALUE, in, n, e->loc);
    }
    }
}

/* [v for x in xs if c] / {k: v for ...}: acc = []; for x in xs { if c
 * { acc += [v] / acc[k] = v } }; the value is acc. */
static ir_ref lower_comp(lw *w, const sgl_node *e) {
    bool map = e->comp.key != NULL;
    int acc = e->comp.acc_slot;
    store(w, acc, add(w, map ? IR_MAP : IR_LIST, NULL, 0, e->loc), e->loc);
    ir_ref it = lower_expr(w, e->comp.iter);
    ir_ref fn = add_i(w, IR_FOR, e->comp.slot, &it, 1, e->loc);
    if (fn == IR_NONE) return IR_NONE;
    uint32_t parent = w->r;
    uint32_t r = ir_region_new(w->c, w->f, fn, true);
    w->f->nodes[fn].reg[0] = r;
    w->r = r;
    cache_clear(w);
    ir_ref ifn = IR_NONE;
    if (e->comp.cond) {
        ir_ref cond = lower_expr(w, e->comp.cond);
        ifn = add(w, IR_IF, &cond, 1, e->comp.cond->loc);
        if (ifn == IR_NONE) return IR_NONE;
        for (int br = 1; br >= 0; br--) { /* else (empty) first: the then region stays current */
            uint32_t rr = ir_region_new(w->c, w->f, ifn, false);
            w->f->nodes[ifn].reg[br] = rr;
            w->r = rr;
        }
        cache_clear(w);
    }
    if (map) {
        ir_ref in[3] = {load(w, acc, e->loc), lower_expr(w, e->comp.key), lower_expr(w, e->comp.value)};
        add(w, IR_SET_INDEX, in, 3, e->loc);
    } else {
        ir_ref v = lower_expr(w, e->comp.value);
        ir_ref in[2] = {load(w, acc, e->loc), add(w, IR_LIST, &v, 1, e->loc)};
        store(w, acc, add(w, IR_ADD_ASSIGN, in, 2, e->loc), e->loc);
    }
    w->r = parent;
    cache_clear(w);
    return load(w, acc, e->loc);
}

static ir_ref lower_logic(lw *w, const sgl_node *e) {
    bool is_and = e->binary.op == SGL_OP_AND;
    ir_ref a = lower_expr(w, e->binary.lhs);
    if (expr_pure(e->binary.rhs)) {
        /* rhs built in a scratch position but used lazily by AND/OR */
        ir_ref b = lower_expr(w, e->binary.rhs);
        ir_ref in[2] = {a, b};
        return add(w, is_and ? IR_AND : IR_OR, in, 2, e->loc);
    }
    /* rhs with effects: t = a ? (and: bool(rhs) | or: true) : (and: false | or: bool(rhs)) */
    uint32_t t = new_temp(w);
    ir_ref ifn = add(w, IR_IF, &a, 1, e->loc);
    uint32_t parent = w->r;
    sgl_const kt = {.kind = SGL_CONST_BOOL};
    kt.b = is_and;
    int32_t kb = comp_const_add(w->c, &kt);
    for (int br = 0; br < 2; br++) {
        uint32_t r = ir_region_new(w->c, w->f, ifn, false);
        w->f->nodes[ifn].reg[br] = r;
        w->r = r;
        cache_clear(w);
        ir_ref v;
        bool eval_rhs = is_and ? br == 0 : br == 1;
        if (eval_rhs) {
            ir_ref in[2] = {add_k(w, kb, e->loc), lower_expr(w, e->binary.rhs)};
            v = add(w, is_and ? IR_AND : IR_OR, in, 2, e->loc);
        } else {
            sgl_const kc = {.kind = SGL_CONST_BOOL};
            kc.b = !is_and;
            v = add_k(w, comp_const_add(w->c, &kc), e->loc);
        }
        store(w, (int)t, v, e->loc);
    }
    w->r = parent;
    cache_clear(w);
    return load(w, (int)t, e->loc);
}

static ir_ref lower_comp(lw *w, const sgl_node *e);

static ir_ref lower_expr(lw *w, const sgl_node *e) {
    comp *c = w->c;
    if (c->failed) return IR_NONE;
    if (is_literal_tree(e)) return add_k(w, kval(c, e), e->loc);
    switch (e->kind) {
    case SGL_AST_FSTRING: {
        ir_ref in[MAX_IN];
        uint32_t n = 0;
        for (uint32_t i = 0; i < e->fstr.parts.len && n < MAX_IN; i++) in[n++] = lower_expr(w, e->fstr.parts.items[i]);
        return add(w, IR_FSTR, in, n, e->loc);
    }
    case SGL_AST_NAME:
        switch (e->name.bind.kind) {
        case SGL_BIND_LOCAL:
        case SGL_BIND_PARAM: return load(w, e->name.bind.slot, e->loc);
        case SGL_BIND_CONST: {
            int32_t k = const_of_decl(c, e->name.bind.decl);
            if (k < 0) {
                sgl_error_set(c->err, "const '%s' could not be evaluated at compile time", e->name.name);
                c->failed = 1;
                return IR_NONE;
            }
            return add_k(w, k, e->loc);
        }
        case SGL_BIND_FN: return add_i(w, IR_FN_REF, fn_index_of(c, e->name.bind.decl), NULL, 0, e->loc);
        default:
            sgl_error_set(c->err, "'%s' cannot be used as a value here", e->name.name);
            c->failed = 1;
            return IR_NONE;
        }
    case SGL_AST_LIST:
    case SGL_AST_MAP: {
        bool map = e->kind == SGL_AST_MAP;
        ir_ref in[MAX_IN];
        uint32_t n = 0;
        if (e->list.items.len * (map ? 2u : 1u) > MAX_IN) {
            sgl_error_set(c->err, "list or map display too long for the compiler (at most %d items)", MAX_IN / 2);
            c->failed = 1;
            return IR_NONE;
        }
        for (uint32_t i = 0; i < e->list.items.len; i++) {
            const sgl_node *it = e->list.items.items[i];
            if (map) {
                in[n++] = lower_expr(w, it->pair.key);
                in[n++] = lower_expr(w, it->pair.value);
            } else {
                in[n++] = lower_expr(w, it);
            }
        }
        return add(w, map ? IR_MAP : IR_LIST, in, n, e->loc);
    }
    case SGL_AST_INDEX: {
        int s = slot_of(e->index.obj);
        ir_ref in[2] = {lower_expr(w, e->index.obj), lower_expr(w, e->index.index)};
        bool stream = s >= 0 && w->stream_slot[s];
        return add(w, stream ? IR_READ_VAR : IR_INDEX, in, 2, e->loc);
    }
    case SGL_AST_UNARY: {
        ir_ref a = lower_expr(w, e->unary.operand);
        return add_i(w, IR_UNOP, e->unary.op, &a, 1, e->loc);
    }
    case SGL_AST_BINARY: {
        if (e->binary.op == SGL_OP_AND || e->binary.op == SGL_OP_OR) return lower_logic(w, e);
        ir_ref in[2];
        in[0] = lower_expr(w, e->binary.lhs);
        in[1] = lower_expr(w, e->binary.rhs);
        return add_i(w, IR_BINOP, e->binary.op, in, 2, e->loc);
    }
    case SGL_AST_CALL: return lower_call(w, e);
    case SGL_AST_COMP: return lower_comp(w, e);
    default:
        sgl_error_set(c->err, "cannot compile a '%s' node as an expression", sgl_ast_kind_name(e->kind));
        c->failed = 1;
        return IR_NONE;
    }
}

/* Is e statically a string (so a + chain with it is a concatenation)? */
static bool stringy(comp *c, const sgl_node *e) {
    switch (e->kind) {
    case SGL_AST_STRING: case SGL_AST_FSTRING: return true;
    case SGL_AST_CALL: return is_gen_call(e) || is_role_call(e) || is_image_call(e);
    case SGL_AST_BINARY: return e->binary.op == SGL_OP_ADD && (stringy(c, e->binary.lhs) || stringy(c, e->binary.rhs));
    case SGL_AST_NAME:
        if (e->name.bind.kind == SGL_BIND_CONST) {
            int32_t k = const_of_decl(c, e->name.bind.decl);
            return k >= 0 && c->consts[k].kind == SGL_CONST_STRING;
        }
        return false;
    default: return false;
    }
}

/* Appends expression e to stream s, piece by piece. */
static void lower_append(lw *w, ir_ref s, const sgl_node *e, int mode) {
    comp *c = w->c;
    if (c->failed) return;
    if (e->kind == SGL_AST_BINARY && e->binary.op == SGL_OP_ADD && stringy(c, e)) {
        lower_append(w, s, e->binary.lhs, SGL_APPEND_STR);
        lower_append(w, s, e->binary.rhs, SGL_APPEND_STR);
        return;
    }
    if (e->kind == SGL_AST_STRING) {
        ir_ref id = add(w, IR_APPEND_TEXT, &s, 1, e->loc);
        if (id != IR_NONE) w->f->nodes[id].k = comp_const_str(c, e->str.bytes, e->str.len);
        return;
    }
    if (e->kind == SGL_AST_FSTRING) {
        for (uint32_t i = 0; i < e->fstr.parts.len; i++) lower_append(w, s, e->fstr.parts.items[i], SGL_APPEND_FMT);
        return;
    }
    if (is_role_call(e) && e->call.n_positional == 1) {
        sgl_role role = role_of(e->call.builtin);
        add_i(w, IR_ROLE_BEGIN, role, &s, 1, e->loc);
        lower_append(w, s, e->call.args.items[0], SGL_APPEND_VALUE);
        add_i(w, IR_ROLE_END, role, &s, 1, e->loc);
        return;
    }
    if (is_image_call(e) && e->call.n_positional == 1) {
        ir_ref in[2] = {s, lower_expr(w, e->call.args.items[0])};
        add_i(w, IR_APPEND, SGL_APPEND_IMAGE, in, 2, e->loc);
        return;
    }
    if (is_gen_call(e)) {
        ir_ref in[MAX_IN];
        uint32_t n = 0;
        in[n++] = s;
        ir_site *site = make_site(w, e, in, &n, MAX_IN);
        ir_ref id = add(w, e->call.builtin == SGL_BUILTIN_GEN ? IR_GEN : IR_SELECT, in, n, e->loc);
        if (id != IR_NONE) w->f->nodes[id].site = site;
        return;
    }
    ir_ref in[2] = {s, lower_expr(w, e)};
    add_i(w, IR_APPEND, mode, in, 2, e->loc);
}

static void lower_block(lw *w, const sgl_node *b);

/* Closes the roles of `with` blocks down to depth keep. */
static void close_withs(lw *w, uint32_t keep, sgl_loc loc) {
    for (uint32_t i = w->n_withs; i-- > keep;) {
        ir_ref s = w->withs[i].slot >= 0 ? load(w, w->withs[i].slot, loc) : w->withs[i].stream;
        if (w->withs[i].name_slot >= 0) {
            ir_ref in[2] = {s, load(w, w->withs[i].name_slot, loc)};
            add_i(w, IR_APPEND, SGL_APPEND_VAR_END, in, 2, loc);
        } else {
            add_i(w, IR_ROLE_END, w->withs[i].role, &s, 1, loc);
        }
    }
}

/* Does block b store slot (an assignment other than an append to a known
 * stream, or a for variable)? */
static bool block_assigns(const lw *w, const sgl_node *n, int slot) {
    if (!n) return false;
    switch (n->kind) {
    case SGL_AST_BLOCK:
        for (uint32_t i = 0; i < n->block.stmts.len; i++)
            if (block_assigns(w, n->block.stmts.items[i], slot)) return true;
        return false;
    case SGL_AST_ASSIGN:
        if (slot_of(n->assign.target) != slot) return false;
        return !(n->assign.op == SGL_OP_ADD && (w->stream_slot[slot] || has_prim(n->assign.value)));
    case SGL_AST_IF: return block_assigns(w, n->if_.then, slot) || block_assigns(w, n->if_.els, slot);
    case SGL_AST_FOR: return n->for_.slot == slot || block_assigns(w, n->for_.body, slot);
    case SGL_AST_WHILE: return block_assigns(w, n->while_.body, slot);
    case SGL_AST_WITH: return block_assigns(w, n->with.body, slot);
    default: return false;
    }
}

static void lower_stmt(lw *w, const sgl_node *n) {
    comp *c = w->c;
    if (c->failed) return;
    w->stmt++;
    sgl_loc loc = stmt_loc(n);
    switch (n->kind) {
    case SGL_AST_LET: {
        ir_ref v = lower_expr(w, n->decl.value);
        store(w, n->decl.slot, v, loc);
        return;
    }
    case SGL_AST_ASSIGN: {
        const sgl_node *t = n->assign.target;
        sgl_op op = n->assign.op;
        if (t->kind == SGL_AST_NAME) {
            int slot = slot_of(t);
            if (slot < 0) {
                sgl_error_set(c->err, "cannot assign to '%s'", t->name.name);
                c->failed = 1;
                return;
            }
            const sgl_node *fv = n->assign.value;
            if (op == SGL_OP_ADD && fv->kind == SGL_AST_NAME && fv->name.bind.kind == SGL_BIND_FN &&
                fv->name.bind.decl->fn.params.len == 1) {
                /* forks += f (SGLang's `forks += lambda i: ...`): branch i gets
                 * f(i): for i in range(len(forks)) { forks[i] += f(i) } */
                uint32_t tx = new_temp(w), ti = new_temp(w);
                store(w, (int)tx, load(w, slot, t->loc), loc);
                ir_ref x = load(w, (int)tx, loc);
                ir_ref nlen = add_i(w, IR_PURE_CALL, SGL_BUILTIN_LEN, &x, 1, loc);
                ir_ref rng = add_i(w, IR_PURE_CALL, SGL_BUILTIN_RANGE, &nlen, 1, loc);
                ir_ref fr = add_i(w, IR_FOR, ti, &rng, 1, loc);
                if (fr == IR_NONE) return;
                uint32_t parent = w->r;
                uint32_t r = ir_region_new(c, w->f, fr, true);
                w->f->nodes[fr].reg[0] = r;
                w->r = r;
                cache_clear(w);
                ir_ref iv = load(w, (int)ti, loc);
                ir_ref val = add_i(w, IR_CALL, fn_index_of(c, fv->name.bind.decl), &iv, 1, fv->loc);
                ir_ref idx[2] = {load(w, (int)tx, loc), iv};
                ir_ref br = add(w, IR_INDEX, idx, 2, loc);
                ir_ref ap[2] = {br, val};
                add_i(w, IR_APPEND, SGL_APPEND_VALUE, ap, 2, loc);
                w->r = parent;
                cache_clear(w);
                return;
            }
            if (op == SGL_OP_ADD && (has_prim(n->assign.value) || w->stream_slot[slot])) {
                lower_append(w, load(w, slot, t->loc), n->assign.value, SGL_APPEND_VALUE);
                return;
            }
            ir_ref v;
            if (op == SGL_OP_NONE) {
                v = lower_expr(w, n->assign.value);
            } else {
                ir_ref in[2] = {load(w, slot, t->loc), lower_expr(w, n->assign.value)};
                v = op == SGL_OP_ADD ? add(w, IR_ADD_ASSIGN, in, 2, loc) : add_i(w, IR_BINOP, op, in, 2, loc);
            }
            store(w, slot, v, loc);
            return;
        }
        if (t->kind == SGL_AST_INDEX) {
            ir_ref o = lower_expr(w, t->index.obj);
            ir_ref i = lower_expr(w, t->index.index);
            if (op == SGL_OP_NONE) {
                ir_ref in[3] = {o, i, lower_expr(w, n->assign.value)};
                add(w, IR_SET_INDEX, in, 3, loc);
                return;
            }
            ir_ref oi[2] = {o, i};
            ir_ref cur = add(w, IR_INDEX, oi, 2, t->loc);
            if (op == SGL_OP_ADD && has_prim(n->assign.value)) {
                lower_append(w, cur, n->assign.value, SGL_APPEND_VALUE);
                return;
            }
            ir_ref in[2] = {cur, lower_expr(w, n->assign.value)};
            ir_ref v = op == SGL_OP_ADD ? add(w, IR_ADD_ASSIGN, in, 2, loc) : add_i(w, IR_BINOP, op, in, 2, loc);
            ir_ref in3[3] = {o, i, v};
            add(w, IR_SET_INDEX, in3, 3, loc);
            return;
        }
        sgl_error_set(c->err, "cannot compile this assignment target");
        c->failed = 1;
        return;
    }
    case SGL_AST_EXPR_STMT: {
        /* a pure value nobody uses is never computed: keep its errors */
        ir_ref v = lower_expr(w, n->expr_stmt.expr);
        if (v != IR_NONE && (ir_op_flags(w->f->nodes[v].op) & IRF_PURE) && ir_may_fail(w->f, v))
            add(w, IR_DROP, &v, 1, loc);
        return;
    }
    case SGL_AST_IF: {
        ir_ref cond = lower_expr(w, n->if_.cond);
        ir_ref ifn = add(w, IR_IF, &cond, 1, loc);
        if (ifn == IR_NONE) return;
        uint32_t parent = w->r;
        ir_ref *saved = sgl_arena_alloc(c->arena, w->cache_len * sizeof *saved + 1);
        if (!saved) {
            c->failed = 1;
            return;
        }
        memcpy(saved, w->cache, w->cache_len * sizeof *saved);
        for (int br = 0; br < 2; br++) {
            uint32_t r = ir_region_new(c, w->f, ifn, false);
            w->f->nodes[ifn].reg[br] = r;
            w->r = r;
            memcpy(w->cache, saved, w->cache_len * sizeof *saved); /* loads before the if stay valid */
            const sgl_node *b = br == 0 ? n->if_.then : n->if_.els;
            if (!b) continue;
            if (b->kind == SGL_AST_IF) lower_stmt(w, b);
            else lower_block(w, b);
        }
        w->r = parent;
        cache_clear(w);
        return;
    }
    case SGL_AST_FOR: {
        ir_ref it = lower_expr(w, n->for_.iter);
        ir_ref fn = add_i(w, IR_FOR, n->for_.slot, &it, 1, loc);
        if (fn == IR_NONE) return;
        uint32_t parent = w->r;
        uint32_t r = ir_region_new(c, w->f, fn, true);
        w->f->nodes[fn].reg[0] = r;
        w->r = r;
        cache_clear(w);
        w->loop_depth++;
        lower_block(w, n->for_.body);
        w->loop_depth--;
        w->r = parent;
        cache_clear(w);
        return;
    }
    case SGL_AST_WHILE: {
        ir_ref wn = add(w, IR_WHILE, NULL, 0, loc);
        if (wn == IR_NONE) return;
        uint32_t parent = w->r;
        uint32_t rc = ir_region_new(c, w->f, wn, true);
        uint32_t rb = ir_region_new(c, w->f, wn, true);
        w->f->nodes[wn].reg[0] = rc;
        w->f->nodes[wn].reg[1] = rb;
        w->r = rc;
        cache_clear(w);
        ir_ref cond = lower_expr(w, n->while_.cond);
        add(w, IR_YIELD, &cond, 1, n->while_.cond->loc);
        w->r = rb;
        cache_clear(w);
        w->loop_depth++;
        lower_block(w, n->while_.body);
        w->loop_depth--;
        w->r = parent;
        cache_clear(w);
        return;
    }
    case SGL_AST_BREAK:
    case SGL_AST_CONTINUE: {
        uint32_t keep = w->n_withs;
        while (keep > 0 && w->withs[keep - 1].loop_depth == w->loop_depth) keep--;
        close_withs(w, keep, loc);
        add(w, n->kind == SGL_AST_BREAK ? IR_BREAK : IR_CONTINUE, NULL, 0, loc);
        return;
    }
    case SGL_AST_RETURN: {
        ir_ref v = n->ret.value ? lower_expr(w, n->ret.value) : IR_NONE;
        close_withs(w, 0, loc);
        add(w, IR_RETURN, &v, v == IR_NONE ? 0 : 1, loc);
        return;
    }
    case SGL_AST_ASSERT: {
        ir_ref in[2];
        uint32_t k = 0;
        in[k++] = lower_expr(w, n->assert_.cond);
        if (n->assert_.msg) in[k++] = lower_expr(w, n->assert_.msg);
        add(w, IR_ASSERT, in, k, loc);
        return;
    }
    case SGL_AST_WITH: {
        if (!n->with.stream || w->n_withs >= SGL_ARRAY_LEN(w->withs)) {
            sgl_error_set(c->err, "cannot compile this 'with' block");
            c->failed = 1;
            return;
        }
        int slot = slot_of(n->with.stream);
        ir_ref s = lower_expr(w, n->with.stream);
        if (slot >= 0 && block_assigns(w, n->with.body, slot)) slot = -1;
        if (slot < 0) { /* keep the stream in a temp for the closing ROLE_END */
            uint32_t t = new_temp(w);
            store(w, (int)t, s, loc);
            slot = (int)t;
            s = load(w, slot, loc);
        }
        if (n->with.role == SGL_BUILTIN_VAR_SCOPE) { /* the block's text becomes a variable */
            uint32_t ns = new_temp(w);
            store(w, (int)ns, lower_expr(w, n->with.call->call.args.items[1]), loc);
            ir_ref in[2] = {s, load(w, (int)ns, loc)};
            add_i(w, IR_APPEND, SGL_APPEND_VAR_BEGIN, in, 2, n->with.call->loc);
            w->withs[w->n_withs++] = (with_frame){s, slot, SGL_ROLE_USER, w->loop_depth, (int)ns};
            lower_block(w, n->with.body);
            w->n_withs--;
            ir_ref in2[2] = {load(w, slot, loc), load(w, (int)ns, loc)};
            add_i(w, IR_APPEND, SGL_APPEND_VAR_END, in2, 2, n->with.call->loc);
            return;
        }
        sgl_role role = role_of(n->with.role);
        add_i(w, IR_ROLE_BEGIN, role, &s, 1, n->with.call->loc);
        w->withs[w->n_withs++] = (with_frame){s, slot, role, w->loop_depth, -1};
        lower_block(w, n->with.body);
        w->n_withs--;
        ir_ref s2 = load(w, slot, loc);
        add_i(w, IR_ROLE_END, role, &s2, 1, n->with.call->loc);
        return;
    }
    default:
        sgl_error_set(c->err, "cannot compile a '%s' statement", sgl_ast_kind_name(n->kind));
        c->failed = 1;
        return;
    }
}

static void lower_block(lw *w, const sgl_node *b) {
    if (!b || b->kind != SGL_AST_BLOCK) return;
    for (uint32_t i = 0; i < b->block.stmts.len; i++) lower_stmt(w, b->block.stmts.items[i]);
}

static ir_fn *fn_new(comp *c, sgl_node *decl, uint32_t module) {
    ir_fn *f = sgl_arena_alloc(c->arena, sizeof *f);
    if (!f) return NULL;
    f->decl = decl;
    f->module = module;
    if (decl->kind == SGL_AST_FN) {
        f->name = decl->fn.name;
        f->n_params = decl->fn.params.len;
        f->n_slots = decl->fn.n_slots;
        if (decl->fn.flags & SGL_FN_REORDER) f->flags |= SGL_FNF_REORDER;
        f->param_names = sgl_arena_alloc(c->arena, (f->n_params + 1) * sizeof *f->param_names);
        if (!f->param_names) return NULL;
        for (uint32_t i = 0; i < f->n_params; i++) f->param_names[i] = decl->fn.params.items[i]->param.name;
    } else {
        f->name = "main";
        f->n_slots = decl->main.n_slots;
        f->flags |= SGL_FNF_MAIN;
    }
    if (f->n_slots < f->n_params) f->n_slots = f->n_params;
    return f;
}

int comp_lower(comp *c) {
    const sgl_program *p = c->prog;
    uint32_t cap = 1;
    for (uint32_t m = 0; m < p->n_modules; m++) cap += p->modules[m]->module.items.len;
    c->fns = sgl_arena_alloc(c->arena, cap * sizeof *c->fns);
    c->fn_decls = sgl_arena_alloc(c->arena, cap * sizeof *c->fn_decls);
    if (!c->fns || !c->fn_decls) return sgl_error_set(c->err, "out of memory");
    for (uint32_t m = 0; m < p->n_modules; m++) {
        const sgl_node *mod = p->modules[m];
        for (uint32_t i = 0; i < mod->module.items.len; i++) {
            sgl_node *it = mod->module.items.items[i];
            if (it->kind != SGL_AST_FN) continue;
            ir_fn *f = fn_new(c, it, m);
            if (!f) return sgl_error_set(c->err, "out of memory");
            f->index = c->n_fns;
            c->fn_decls[c->n_fns] = it;
            c->fns[c->n_fns++] = f;
        }
    }
    if (p->main) {
        ir_fn *f = fn_new(c, p->main, 0);
        if (!f) return sgl_error_set(c->err, "out of memory");
        f->index = c->n_fns;
        c->fn_decls[c->n_fns] = p->main;
        c->fns[c->n_fns++] = f;
    }
    uint8_t **slots = sgl_arena_alloc(c->arena, (c->n_fns + 1) * sizeof *slots);
    if (!slots || infer_streams(c, slots)) return sgl_error_set(c->err, "out of memory");

    for (uint32_t i = 0; i < c->n_fns; i++) {
        ir_fn *f = c->fns[i];
        lw w = {0};
        w.c = c;
        w.f = f;
        w.stream_slot = slots[i];
        w.cache_len = f->n_slots + 8;
        w.cache = sgl_arena_alloc(c->arena, w.cache_len * sizeof *w.cache);
        if (!w.cache) return sgl_error_set(c->err, "out of memory");
        cache_clear(&w);
        w.r = ir_region_new(c, f, IR_NONE, false);
        lower_block(&w, f->decl->kind == SGL_AST_FN ? f->decl->fn.body : f->decl->main.body);
        if (c->failed) {
            if (!c->err || !c->err->msg[0]) sgl_error_set(c->err, "out of memory");
            return sgl_error_prefix(c->err, "fn %s", f->name);
        }
    }
    return 0;
}
