/* emit.c: optimized IR -> SGVM bytecode module.
 *
 * EFFECT nodes are emitted in schedule order; PURE nodes are computed where
 * they are used (rematerialized: they are cheap and have no effect). An
 * effect's value is either
 *   - "inlined": it has one use, reached through single-use pure nodes, by
 *     a later effect of the same region, and emitting that consumer's
 *     inputs in order runs the inlined effects in their schedule order —
 *     then it is pushed exactly where the consumer needs it (the common
 *     case: `print(f(x))`, `let y = g()`), or
 *   - kept in a temporary local (STORE_LOCAL after it, LOAD_LOCAL at each
 *     use), or popped when unused.
 * Stream ops leave the stream on the stack; the POP after one is dropped
 * when the next instruction would reload the same local (`s += a; s += b`
 * loads s once).
 */
#include <stdlib.h>
#include <string.h>

#include "compiler/ir.h"

typedef struct loop_ctx {
    uint32_t head;      /* pc of the loop head (continue target) */
    uint32_t *breaks;   /* pcs of JUMPs to patch to the exit */
    uint32_t n_breaks, cap_breaks;
} loop_ctx;

typedef struct em {
    comp *c;
    ir_fn *f;
    sgl_instr *code;
    uint32_t n_code, cap_code;
    sgl_bc_line *lines;
    uint32_t n_lines, cap_lines;
    int depth, max_depth;
    sgl_loc loc;         /* of the node being emitted */
    uint32_t *temp_of;   /* per node: local holding its value, or UINT32_MAX */
    uint8_t *done;       /* per node: effect emitted */
    uint8_t *inl;        /* per node: effect value inlined into its consumer */
    uint32_t *uses;
    ir_ref *user;        /* per node: its only user (when uses == 1) */
    uint32_t *pos;       /* schedule position */
    uint32_t n_locals;
    loop_ctx loops[64];
    uint32_t n_loops;
    int pending_pop;     /* slot whose reload would cancel a pending POP, -1 none, -2 plain POP */
    sgl_loc pending_loc; /* the stream op the pending POP belongs to */
    sgl_bc_site *sites;  /* module-wide */
    uint32_t *n_sites, *cap_sites;
    int failed;
} em;

static void *grow_arr(em *e, void *p, uint32_t *cap, uint32_t need, size_t sz) {
    if (need <= *cap) return p;
    uint32_t nc = *cap ? *cap * 2 : 64;
    while (nc < need) nc *= 2;
    void *q = sgl_arena_alloc(e->c->arena, (size_t)nc * sz);
    if (!q) {
        e->failed = 1;
        return NULL;
    }
    if (p) memcpy(q, p, (size_t)*cap * sz);
    *cap = nc;
    return q;
}

static void raw_emit(em *e, sgl_instr ins) {
    sgl_instr *nc = grow_arr(e, e->code, &e->cap_code, e->n_code + 1, sizeof *nc);
    if (!nc) return;
    e->code = nc;
    /* line table: a new entry when the location changes */
    uint32_t line = 0, col = 0;
    const sgl_program *p = e->c->prog;
    if (e->loc.file < p->n_files) sgl_source_line_col(&p->files[e->loc.file], e->loc.start, &line, &col);
    if (!e->n_lines || e->lines[e->n_lines - 1].line != line || e->lines[e->n_lines - 1].col != col ||
        e->lines[e->n_lines - 1].file != e->loc.file) {
        sgl_bc_line *nl = grow_arr(e, e->lines, &e->cap_lines, e->n_lines + 1, sizeof *nl);
        if (!nl) return;
        e->lines = nl;
        if (e->n_lines && e->lines[e->n_lines - 1].pc == e->n_code) e->n_lines--; /* nothing emitted under the last */
        e->lines[e->n_lines++] = (sgl_bc_line){e->n_code, e->loc.file, line, col};
    }
    e->code[e->n_code++] = ins;
}

static void flush_pop(em *e) {
    if (e->pending_pop != -1) {
        e->pending_pop = -1;
        sgl_loc save = e->loc;
        e->loc = e->pending_loc;
        raw_emit(e, SGL_INSTR_MAKE_A(SGL_BC_POP, 0));
        e->loc = save;
        e->depth--;
    }
}

/* Emits op with operand a (format per opcodes.def); pops/pushes adjust the
 * stack depth (pass the op's real effect for variable ones). */
static uint32_t emit(em *e, sgl_opcode op, uint32_t a, uint32_t b, int pops, int pushes) {
    if (op == SGL_BC_LOAD_LOCAL && e->pending_pop >= 0 && (uint32_t)e->pending_pop == a) {
        e->pending_pop = -1; /* the stream is still on the stack */
        return e->n_code;
    }
    flush_pop(e);
    const sgl_opcode_info *oi = sgl_opcode_get(op);
    sgl_instr ins;
    if (oi->format == SGL_FMT_AB) {
        if (a > SGL_INSTR_A12_MAX || b > SGL_INSTR_A12_MAX) e->failed = 2;
        ins = SGL_INSTR_MAKE_AB(op, a & 0xfff, b & 0xfff);
    } else {
        if (a > SGL_INSTR_A_MAX) e->failed = 2;
        ins = SGL_INSTR_MAKE_A(op, a);
    }
    raw_emit(e, ins);
    e->depth -= pops;
    e->depth += pushes;
    if (e->depth > e->max_depth) e->max_depth = e->depth;
    return e->n_code - 1;
}

static uint32_t emit_jump(em *e, sgl_opcode op, int pops) {
    flush_pop(e);
    raw_emit(e, SGL_INSTR_MAKE_SJ(op, 0));
    e->depth -= pops;
    return e->n_code - 1;
}

static void patch(em *e, uint32_t at, uint32_t target) {
    if (e->failed || at >= e->n_code) return;
    int64_t d = (int64_t)target - (int64_t)(at + 1);
    if (d > SGL_INSTR_SJ_MAX || d < -SGL_INSTR_SJ_MAX) e->failed = 2;
    e->code[at] = SGL_INSTR_MAKE_SJ(SGL_INSTR_OP(e->code[at]), (int32_t)d);
}

/* A jump target: pending pops must land before it. */
static uint32_t label(em *e) {
    flush_pop(e);
    return e->n_code;
}

static sgl_opcode binop_code(sgl_op op) {
    switch (op) {
    case SGL_OP_ADD: return SGL_BC_ADD;
    case SGL_OP_SUB: return SGL_BC_SUB;
    case SGL_OP_MUL: return SGL_BC_MUL;
    case SGL_OP_DIV: return SGL_BC_DIV;
    case SGL_OP_MOD: return SGL_BC_MOD;
    case SGL_OP_EQ: return SGL_BC_EQ;
    case SGL_OP_NE: return SGL_BC_NE;
    case SGL_OP_LT: return SGL_BC_LT;
    case SGL_OP_LE: return SGL_BC_LE;
    case SGL_OP_GT: return SGL_BC_GT;
    case SGL_OP_GE: return SGL_BC_GE;
    case SGL_OP_IN: return SGL_BC_IN;
    case SGL_OP_NOT_IN: return SGL_BC_NOT_IN;
    case SGL_OP_NEG: return SGL_BC_NEG;
    case SGL_OP_NOT: return SGL_BC_NOT;
    default: return SGL_BC_NOP;
    }
}

static void emit_effect(em *e, ir_ref id);
static void emit_region(em *e, uint32_t r);

/* Pushes the value of node id. */
static void emit_value(em *e, ir_ref id) {
    if (e->failed) return;
    ir_node *n = &e->f->nodes[id];
    if (e->temp_of[id] != UINT32_MAX) {
        sgl_loc save = e->loc;
        e->loc = n->loc;
        emit(e, SGL_BC_LOAD_LOCAL, e->temp_of[id], 0, 0, 1);
        e->loc = save;
        return;
    }
    if (ir_op_flags(n->op) & IRF_EFFECT) {
        if (e->inl[id] && !e->done[id]) {
            emit_effect(e, id);
            return;
        }
        e->failed = 3; /* an effect's value used before it ran: a compiler bug */
        return;
    }
    sgl_loc save = e->loc;
    /* constants and loads cannot fail: they keep their user's location, so
     * the line table follows statements rather than operands */
    if (n->op != IR_CONST && n->op != IR_LOAD && n->op != IR_FN_REF) e->loc = n->loc;
    switch (n->op) {
    case IR_CONST: emit(e, SGL_BC_LOAD_CONST, (uint32_t)n->k, 0, 0, 1); break;
    case IR_LOAD: emit(e, SGL_BC_LOAD_LOCAL, (uint32_t)n->i, 0, 0, 1); break;
    case IR_FN_REF: emit(e, SGL_BC_LOAD_FN, (uint32_t)n->i, 0, 0, 1); break;
    case IR_UNOP:
        emit_value(e, n->in[0]);
        emit(e, binop_code((sgl_op)n->i), 0, 0, 1, 1);
        break;
    case IR_BINOP:
        emit_value(e, n->in[0]);
        emit_value(e, n->in[1]);
        emit(e, binop_code((sgl_op)n->i), 0, 0, 2, 1);
        break;
    case IR_AND:
    case IR_OR: {
        emit_value(e, n->in[0]);
        uint32_t j = emit_jump(e, n->op == IR_AND ? SGL_BC_AND_JUMP : SGL_BC_OR_JUMP, 1);
        emit_value(e, n->in[1]);
        emit(e, SGL_BC_BOOL, 0, 0, 1, 1);
        patch(e, j, label(e));
        break;
    }
    case IR_LIST:
    case IR_MAP:
        for (uint32_t i = 0; i < n->n_in; i++) emit_value(e, n->in[i]);
        emit(e, n->op == IR_LIST ? SGL_BC_BUILD_LIST : SGL_BC_BUILD_MAP, n->op == IR_LIST ? n->n_in : n->n_in / 2, 0,
             (int)n->n_in, 1);
        break;
    case IR_FSTR:
        for (uint32_t i = 0; i < n->n_in; i++) {
            const ir_node *p = &e->f->nodes[n->in[i]];
            emit_value(e, n->in[i]);
            if (!(p->op == IR_CONST && e->c->consts[p->k].kind == SGL_CONST_STRING)) emit(e, SGL_BC_FORMAT, 0, 0, 1, 1);
        }
        if (n->n_in != 1) emit(e, SGL_BC_CONCAT, n->n_in, 0, (int)n->n_in, 1);
        break;
    case IR_PURE_CALL:
        for (uint32_t i = 0; i < n->n_in; i++) emit_value(e, n->in[i]);
        emit(e, SGL_BC_CALL_BUILTIN, (uint32_t)n->i, n->n_in, (int)n->n_in, 1);
        break;
    default: e->failed = 3; break;
    }
    e->loc = save;
}

/* Registers a call site; returns its index. */
static uint32_t add_site(em *e, const ir_node *n) {
    sgl_bc_site *ns = grow_arr(e, e->sites, e->cap_sites, *e->n_sites + 1, sizeof *ns);
    if (!ns) return 0;
    e->sites = ns;
    const ir_site *s = n->site;
    sgl_bc_site *o = &e->sites[*e->n_sites];
    memset(o, 0, sizeof *o);
    o->builtin = s->builtin;
    o->name = s->builtin == SGL_BUILTIN_GEN || s->builtin == SGL_BUILTIN_SELECT ? s->name_k : SGL_SITE_NO_NAME;
    o->n_pos = s->n_pos;
    o->n_kwargs = s->n_kw;
    sgl_bc_kwarg *kw = sgl_arena_alloc(e->c->arena, (s->n_kw + 1) * sizeof *kw);
    if (!kw) {
        e->failed = 1;
        return 0;
    }
    for (uint32_t i = 0; i < s->n_kw; i++) kw[i] = (sgl_bc_kwarg){s->kw_id[i], s->kw_k[i]};
    o->kwargs = kw;
    o->file = n->loc.file;
    const sgl_program *p = e->c->prog;
    if (n->loc.file < p->n_files) sgl_source_line_col(&p->files[n->loc.file], n->loc.start, &o->line, &o->col);
    return (*e->n_sites)++;
}

static void push_inputs(em *e, const ir_node *n, uint32_t from) {
    for (uint32_t i = from; i < n->n_in; i++) emit_value(e, n->in[i]);
}

static void emit_effect(em *e, ir_ref id) {
    if (e->failed) return;
    ir_node *n = &e->f->nodes[id];
    e->done[id] = 1;
    sgl_loc save = e->loc;
    int stream_slot = -1; /* stream ops: the local the stream came from */
    e->loc = n->loc;
    switch (n->op) {
    case IR_STORE:
        emit_value(e, n->in[0]);
        e->loc = n->loc;
        emit(e, SGL_BC_STORE_LOCAL, (uint32_t)n->i, 0, 1, 0);
        break;
    case IR_DROP:
        emit_value(e, n->in[0]);
        e->loc = n->loc;
        emit(e, SGL_BC_POP, 0, 0, 1, 0);
        break;
    case IR_INDEX:
    case IR_READ_VAR:
    case IR_META:
        push_inputs(e, n, 0);
        e->loc = n->loc;
        emit(e, n->op == IR_INDEX ? SGL_BC_INDEX : n->op == IR_READ_VAR ? SGL_BC_READ_VAR : SGL_BC_META, 0, 0, 2, 1);
        break;
    case IR_SET_INDEX:
        push_inputs(e, n, 0);
        e->loc = n->loc;
        emit(e, SGL_BC_SET_INDEX, 0, 0, 3, 0);
        break;
    case IR_ADD_ASSIGN:
        push_inputs(e, n, 0);
        e->loc = n->loc;
        emit(e, SGL_BC_ADD_ASSIGN, 0, 0, 2, 1);
        break;
    case IR_CALL:
    case IR_CALL_FRESH:
        push_inputs(e, n, 0);
        e->loc = n->loc;
        emit(e, n->op == IR_CALL ? SGL_BC_CALL : SGL_BC_CALL_FRESH, (uint32_t)n->i, n->n_in, (int)n->n_in, 1);
        break;
    case IR_CALL_VALUE:
        push_inputs(e, n, 0);
        e->loc = n->loc;
        emit(e, SGL_BC_CALL_VALUE, n->n_in - 1, 0, (int)n->n_in, 1);
        break;
    case IR_BUILTIN:
        push_inputs(e, n, 0);
        e->loc = n->loc;
        if (n->site) emit(e, SGL_BC_CALL_BUILTIN_KW, add_site(e, n), 0, (int)n->n_in, 1);
        else emit(e, SGL_BC_CALL_BUILTIN, (uint32_t)n->i, n->n_in, (int)n->n_in, 1);
        break;
    case IR_ASSERT:
        push_inputs(e, n, 0);
        e->loc = n->loc;
        emit(e, SGL_BC_ASSERT, n->n_in - 1, 0, (int)n->n_in, 0);
        break;
    case IR_JOIN:
        push_inputs(e, n, 0);
        e->loc = n->loc;
        emit(e, SGL_BC_JOIN, (uint32_t)n->i, 0, (int)n->n_in, 1);
        break;
    case IR_APPEND_TEXT:
    case IR_APPEND:
    case IR_ROLE_BEGIN:
    case IR_ROLE_END:
    case IR_GEN:
    case IR_SELECT: {
        const ir_node *s = &e->f->nodes[n->in[0]];
        if (s->op == IR_LOAD && e->temp_of[n->in[0]] == UINT32_MAX) stream_slot = (int)s->i;
        push_inputs(e, n, 0);
        e->loc = n->loc;
        int pops = (int)n->n_in, pushes = 1;
        switch (n->op) {
        case IR_APPEND_TEXT: emit(e, SGL_BC_APPEND_TEXT, (uint32_t)n->k, 0, pops, pushes); break;
        case IR_APPEND: emit(e, SGL_BC_APPEND, (uint32_t)n->i, 0, pops, pushes); break;
        case IR_ROLE_BEGIN: emit(e, SGL_BC_ROLE_BEGIN, (uint32_t)n->i, 0, pops, pushes); break;
        case IR_ROLE_END: emit(e, SGL_BC_ROLE_END, (uint32_t)n->i, 0, pops, pushes); break;
        default: emit(e, n->op == IR_GEN ? SGL_BC_GEN : SGL_BC_SELECT, add_site(e, n), 0, pops, pushes); break;
        }
        /* the stream stays on the stack: pop it, unless the next op reloads it */
        e->pending_pop = stream_slot >= 0 ? stream_slot : -2;
        e->pending_loc = n->loc;
        break;
    }
    case IR_FORK:
        push_inputs(e, n, 0);
        e->loc = n->loc;
        emit(e, SGL_BC_FORK, n->n_in, 0, (int)n->n_in, 1);
        break;
    case IR_IF: {
        emit_value(e, n->in[0]);
        e->loc = n->loc;
        uint32_t jf = emit_jump(e, SGL_BC_JUMP_IF_FALSE, 1);
        emit_region(e, n->reg[0]);
        const ir_region *E = &e->f->regions[n->reg[1]];
        bool has_else = false;
        for (uint32_t i = 0; i < E->len; i++)
            if (!e->f->nodes[E->nodes[i]].dead) has_else = true;
        if (has_else) {
            uint32_t je = emit_jump(e, SGL_BC_JUMP, 0);
            patch(e, jf, label(e));
            emit_region(e, n->reg[1]);
            patch(e, je, label(e));
        } else {
            patch(e, jf, label(e));
        }
        break;
    }
    case IR_FOR:
    case IR_WHILE: {
        if (e->n_loops >= SGL_ARRAY_LEN(e->loops)) {
            e->failed = 2;
            break;
        }
        uint32_t it = 0;
        if (n->op == IR_FOR) {
            emit_value(e, n->in[0]);
            e->loc = n->loc;
            emit(e, SGL_BC_ITER_INIT, 0, 0, 1, 1);
            it = e->n_locals++;
            emit(e, SGL_BC_STORE_LOCAL, it, 0, 1, 0);
        }
        loop_ctx *L = &e->loops[e->n_loops++];
        memset(L, 0, sizeof *L);
        L->head = label(e);
        uint32_t jexit;
        if (n->op == IR_FOR) {
            emit(e, SGL_BC_LOAD_LOCAL, it, 0, 0, 1);
            jexit = emit_jump(e, SGL_BC_ITER_NEXT, 1);
            e->depth++; /* the item, on the fall-through path */
            emit(e, SGL_BC_STORE_LOCAL, (uint32_t)n->i, 0, 1, 0);
            emit_region(e, n->reg[0]);
        } else {
            emit_region(e, n->reg[0]); /* ends with the YIELD value on the stack */
            e->loc = n->loc;
            jexit = emit_jump(e, SGL_BC_JUMP_IF_FALSE, 1);
            emit_region(e, n->reg[1]);
        }
        e->loc = n->loc;
        uint32_t jb = emit_jump(e, SGL_BC_JUMP, 0);
        patch(e, jb, L->head);
        uint32_t exit = label(e);
        patch(e, jexit, exit);
        L = &e->loops[e->n_loops - 1];
        for (uint32_t i = 0; i < L->n_breaks; i++) patch(e, L->breaks[i], exit);
        e->n_loops--;
        break;
    }
    case IR_YIELD: emit_value(e, n->in[0]); break;
    case IR_RETURN:
        if (n->n_in) emit_value(e, n->in[0]);
        else {
            sgl_const k = {.kind = SGL_CONST_NONE};
            emit(e, SGL_BC_LOAD_CONST, (uint32_t)comp_const_add(e->c, &k), 0, 0, 1);
        }
        e->loc = n->loc;
        emit(e, SGL_BC_RETURN, 0, 0, 1, 0);
        break;
    case IR_BREAK:
    case IR_CONTINUE: {
        if (!e->n_loops) {
            e->failed = 3;
            break;
        }
        loop_ctx *L = &e->loops[e->n_loops - 1];
        uint32_t j = emit_jump(e, SGL_BC_JUMP, 0);
        if (n->op == IR_CONTINUE) {
            patch(e, j, L->head);
        } else {
            uint32_t *nb = grow_arr(e, L->breaks, &L->cap_breaks, L->n_breaks + 1, sizeof *nb);
            if (nb) {
                L->breaks = nb;
                L->breaks[L->n_breaks++] = j;
            }
        }
        break;
    }
    default: e->failed = 3; break;
    }
    /* the value: inlined (left for the consumer), kept in a temp, or dropped */
    if ((ir_op_flags(n->op) & IRF_VALUE) && !e->inl[id]) {
        if (e->uses[id] == 0) {
            emit(e, SGL_BC_POP, 0, 0, 1, 0);
        } else {
            e->temp_of[id] = e->n_locals++;
            emit(e, SGL_BC_STORE_LOCAL, e->temp_of[id], 0, 1, 0);
        }
    }
    e->loc = save;
}

static void emit_region(em *e, uint32_t r) {
    const ir_region *R = &e->f->regions[r];
    for (uint32_t i = 0; i < R->len && !e->failed; i++) {
        ir_ref id = R->nodes[i];
        const ir_node *n = &e->f->nodes[id];
        if (n->dead || !(ir_op_flags(n->op) & IRF_EFFECT) || e->inl[id]) continue;
        emit_effect(e, id);
    }
}

/* ---- deciding which effect values are inlined ---- */

/* The effect that consumes id's value through single-use pure nodes, or
 * IR_NONE. */
static ir_ref root_user(em *e, ir_ref id) {
    ir_ref x = id;
    for (int guard = 0; guard < 100000; guard++) {
        if (e->uses[x] != 1) return IR_NONE;
        ir_ref u = e->user[x];
        const ir_node *un = &e->f->nodes[u];
        if (ir_op_flags(un->op) & IRF_EFFECT) return u;
        if (un->op == IR_AND || un->op == IR_OR) return IR_NONE; /* lazily evaluated */
        x = u;
    }
    return IR_NONE;
}

/* Appends, in emission order, the inlined effects reached from node id's
 * inputs (through pure nodes) to out. */
static void tree_effects(em *e, ir_ref id, ir_ref *out, uint32_t *n, uint32_t max) {
    const ir_node *nd = &e->f->nodes[id];
    for (uint32_t i = 0; i < nd->n_in; i++) {
        ir_ref in = nd->in[i];
        const ir_node *x = &e->f->nodes[in];
        if (ir_op_flags(x->op) & IRF_EFFECT) {
            if (e->inl[in]) {
                tree_effects(e, in, out, n, max);
                if (*n < max) out[(*n)++] = in;
            }
        } else if (e->uses[in] == 1) {
            tree_effects(e, in, out, n, max);
        }
    }
}

static void decide_inlining(em *e) {
    ir_fn *f = e->f;
    for (ir_ref id = 0; id < f->n_nodes; id++) {
        const ir_node *n = &f->nodes[id];
        if (n->dead || !(ir_op_flags(n->op) & IRF_EFFECT) || !(ir_op_flags(n->op) & IRF_VALUE)) continue;
        ir_ref u = root_user(e, id);
        if (u != IR_NONE && f->nodes[u].region == n->region && e->pos[u] > e->pos[id]) e->inl[id] = 1;
    }
    /* Check each region: the effects between two emitted effects must be
     * exactly the second one's inlined tree, in order; else undo. */
    ir_ref *buf = malloc((f->n_nodes + 1) * sizeof *buf);
    if (!buf) {
        e->failed = 1;
        return;
    }
    for (bool changed = true; changed;) {
        changed = false;
        for (uint32_t r = 0; r < f->n_regions; r++) {
            const ir_region *R = &f->regions[r];
            uint32_t win_start = 0; /* first schedule index after the last emitted effect */
            for (uint32_t i = 0; i < R->len; i++) {
                ir_ref id = R->nodes[i];
                const ir_node *n = &f->nodes[id];
                if (n->dead || !(ir_op_flags(n->op) & IRF_EFFECT) || e->inl[id]) continue;
                uint32_t k = 0;
                tree_effects(e, id, buf, &k, f->n_nodes);
                uint32_t q = 0;
                bool ok = true;
                for (uint32_t j = win_start; j < i; j++) {
                    ir_ref x = R->nodes[j];
                    const ir_node *xn = &f->nodes[x];
                    if (xn->dead || !(ir_op_flags(xn->op) & IRF_EFFECT)) continue;
                    if (q >= k || buf[q] != x) ok = false;
                    q++;
                }
                if (q != k) ok = false;
                if (!ok) {
                    for (uint32_t j = win_start; j < i; j++)
                        if (e->inl[R->nodes[j]]) {
                            e->inl[R->nodes[j]] = 0;
                            changed = true;
                        }
                }
                win_start = i + 1;
            }
            /* inlined effects after the last emitted one have no consumer here */
            for (uint32_t j = win_start; j < R->len; j++)
                if (e->inl[R->nodes[j]]) {
                    e->inl[R->nodes[j]] = 0;
                    changed = true;
                }
        }
    }
    free(buf);
}

/* Emits one function into out. Returns 0 or -1. */
static int emit_fn(comp *c, ir_fn *f, sgl_bc_function *out, sgl_bc_site **sites, uint32_t *n_sites,
                   uint32_t *cap_sites) {
    em e = {0};
    e.c = c;
    e.f = f;
    e.n_locals = f->n_slots;
    e.pending_pop = -1;
    e.sites = *sites;
    e.n_sites = n_sites;
    e.cap_sites = cap_sites;
    uint32_t nn = f->n_nodes + 1;
    e.temp_of = malloc(nn * sizeof *e.temp_of);
    e.done = calloc(nn, 1);
    e.inl = calloc(nn, 1);
    e.uses = calloc(nn, sizeof *e.uses);
    e.user = calloc(nn, sizeof *e.user);
    e.pos = calloc(nn, sizeof *e.pos);
    int rc = 0;
    if (!e.temp_of || !e.done || !e.inl || !e.uses || !e.user || !e.pos) {
        rc = sgl_error_set(c->err, "out of memory");
        goto out;
    }
    for (uint32_t i = 0; i < nn; i++) e.temp_of[i] = UINT32_MAX;
    for (ir_ref id = 0; id < f->n_nodes; id++) {
        const ir_node *n = &f->nodes[id];
        if (n->dead) continue;
        for (uint32_t j = 0; j < n->n_in; j++) {
            e.uses[n->in[j]]++;
            e.user[n->in[j]] = id;
        }
    }
    for (uint32_t r = 0; r < f->n_regions; r++)
        for (uint32_t i = 0; i < f->regions[r].len; i++) e.pos[f->regions[r].nodes[i]] = i;
    decide_inlining(&e);
    e.loc = f->decl->loc;
    emit_region(&e, 0);
    /* implicit `return none` unless the body ends in a return */
    const ir_region *B = &f->regions[0];
    ir_ref last = IR_NONE;
    for (uint32_t i = 0; i < B->len; i++)
        if (!f->nodes[B->nodes[i]].dead && (ir_op_flags(f->nodes[B->nodes[i]].op) & IRF_EFFECT)) last = B->nodes[i];
    if (last == IR_NONE || f->nodes[last].op != IR_RETURN || e.n_code == 0) {
        sgl_const k = {.kind = SGL_CONST_NONE};
        e.loc = f->decl->loc;
        e.loc.start = e.loc.end > 0 ? e.loc.end - 1 : 0; /* the closing brace */
        emit(&e, SGL_BC_LOAD_CONST, (uint32_t)comp_const_add(c, &k), 0, 0, 1);
        emit(&e, SGL_BC_RETURN, 0, 0, 1, 0);
    }
    flush_pop(&e);
    if (e.failed) {
        rc = sgl_error_set(c->err, "fn %s: %s", f->name,
                           e.failed == 1 ? "out of memory"
                           : e.failed == 2 ? "too large for the bytecode format (an operand or jump out of range)"
                                           : "internal error: the IR could not be scheduled (compiler bug)");
        goto out;
    }
    out->code = e.code;
    out->n_code = e.n_code;
    out->lines = e.lines;
    out->n_lines = e.n_lines;
    out->n_locals = e.n_locals;
    out->max_stack = (uint32_t)e.max_depth;
    *sites = e.sites;
out:
    free(e.temp_of);
    free(e.done);
    free(e.inl);
    free(e.uses);
    free(e.user);
    free(e.pos);
    for (uint32_t i = 0; i < SGL_ARRAY_LEN(e.loops); i++) (void)0;
    return rc;
}

/* Drops constants nothing refers to (intermediate results of folding) and
 * renumbers the rest in their old order, so an aggregate still refers only
 * to smaller indices. Rewrites code, sites and prefix hints. */
static int compact_consts(comp *c, sgl_bc_function *fns, uint32_t n_fns, sgl_bc_site *sites, uint32_t n_sites) {
    uint32_t n = c->n_consts;
    uint32_t *map = malloc((n + 1) * sizeof *map);
    if (!map) return -1;
    memset(map, 0, (n + 1) * sizeof *map); /* 0 = unused; else new index + 1 */
    for (uint32_t i = 0; i < n_fns; i++) {
        const sgl_bc_function *f = &fns[i];
        for (uint32_t pc = 0; pc < f->n_code; pc++) {
            sgl_opcode op = SGL_INSTR_OP(f->code[pc]);
            if ((op == SGL_BC_LOAD_CONST || op == SGL_BC_APPEND_TEXT) && SGL_INSTR_A(f->code[pc]) < n)
                map[SGL_INSTR_A(f->code[pc])] = 1;
        }
        for (uint32_t j = 0; j < f->n_prefix; j++)
            if (f->prefix[j].kind == SGL_PREFIX_TEXT) map[f->prefix[j].konst] = 1;
    }
    for (uint32_t i = 0; i < n_sites; i++) {
        if (sites[i].name >= 0) map[sites[i].name] = 1;
        for (uint32_t j = 0; j < sites[i].n_kwargs; j++)
            if (sites[i].kwargs[j].konst >= 0) map[sites[i].kwargs[j].konst] = 1;
    }
    for (uint32_t k = n; k-- > 0;) { /* items of a used aggregate are used */
        const sgl_const *x = &c->consts[k];
        if (!map[k] || (x->kind != SGL_CONST_LIST && x->kind != SGL_CONST_MAP)) continue;
        uint32_t m = x->kind == SGL_CONST_MAP ? 2 * x->agg.n : x->agg.n;
        for (uint32_t j = 0; j < m; j++) map[x->agg.items[j]] = 1;
    }
    uint32_t nn = 0;
    for (uint32_t k = 0; k < n; k++)
        if (map[k]) map[k] = ++nn;
    sgl_const *pool = sgl_arena_alloc(c->arena, (nn + 1) * sizeof *pool);
    if (!pool) {
        free(map);
        return -1;
    }
    for (uint32_t k = 0; k < n; k++) {
        if (!map[k]) continue;
        sgl_const x = c->consts[k];
        if (x.kind == SGL_CONST_LIST || x.kind == SGL_CONST_MAP) {
            uint32_t m = x.kind == SGL_CONST_MAP ? 2 * x.agg.n : x.agg.n;
            uint32_t *items = sgl_arena_alloc(c->arena, (m + 1) * sizeof *items);
            if (!items) {
                free(map);
                return -1;
            }
            for (uint32_t j = 0; j < m; j++) items[j] = map[x.agg.items[j]] - 1;
            x.agg.items = items;
        }
        pool[map[k] - 1] = x;
    }
    /* the arrays below are this compile's own (arena) memory */
    for (uint32_t i = 0; i < n_fns; i++) {
        sgl_bc_function *f = &fns[i];
        sgl_instr *code = (sgl_instr *)f->code;
        for (uint32_t pc = 0; pc < f->n_code; pc++) {
            sgl_opcode op = SGL_INSTR_OP(code[pc]);
            if ((op == SGL_BC_LOAD_CONST || op == SGL_BC_APPEND_TEXT) && SGL_INSTR_A(code[pc]) < n)
                code[pc] = SGL_INSTR_MAKE_A(op, map[SGL_INSTR_A(code[pc])] - 1);
        }
        sgl_bc_prefix_item *pre = (sgl_bc_prefix_item *)f->prefix;
        for (uint32_t j = 0; j < f->n_prefix; j++)
            if (pre[j].kind == SGL_PREFIX_TEXT) pre[j].konst = map[pre[j].konst] - 1;
    }
    for (uint32_t i = 0; i < n_sites; i++) {
        if (sites[i].name >= 0) sites[i].name = (int32_t)map[sites[i].name] - 1;
        sgl_bc_kwarg *kw = (sgl_bc_kwarg *)sites[i].kwargs;
        for (uint32_t j = 0; j < sites[i].n_kwargs; j++)
            if (kw[j].konst >= 0) kw[j].konst = (int32_t)map[kw[j].konst] - 1;
    }
    free(map);
    c->consts = pool;
    c->n_consts = nn;
    c->cap_consts = nn;
    return 0;
}

sgl_module *comp_emit(comp *c) {
    sgl_arena *A = c->arena;
    sgl_module *m = sgl_arena_alloc(A, sizeof *m);
    sgl_bc_function *fns = sgl_arena_alloc(A, (c->n_fns + 1) * sizeof *fns);
    if (!m || !fns) {
        sgl_error_set(c->err, "out of memory");
        return NULL;
    }
    sgl_bc_site *sites = NULL;
    uint32_t n_sites = 0, cap_sites = 0;
    m->entry = -1;
    for (uint32_t i = 0; i < c->n_fns; i++) {
        ir_fn *f = c->fns[i];
        sgl_bc_function *o = &fns[i];
        if (emit_fn(c, f, o, &sites, &n_sites, &cap_sites)) return NULL;
        o->name = sgl_arena_strndup(A, f->name, strlen(f->name));
        o->module = f->module;
        o->n_params = f->n_params;
        const char **pn = sgl_arena_alloc(A, (f->n_params + 1) * sizeof *pn);
        if (!o->name || !pn) {
            sgl_error_set(c->err, "out of memory");
            return NULL;
        }
        for (uint32_t j = 0; j < f->n_params; j++) pn[j] = sgl_arena_strndup(A, f->param_names[j], strlen(f->param_names[j]));
        o->param_names = pn;
        o->flags = f->flags;
        o->prefix = f->prefix;
        o->n_prefix = f->n_prefix;
        sgl_strbuf sb = {0};
        for (uint32_t j = 0; j < f->n_prefix; j++)
            if (f->prefix[j].kind == SGL_PREFIX_TEXT) {
                const sgl_const *k = &c->consts[f->prefix[j].konst];
                sgl_strbuf_append(&sb, k->str.bytes, k->str.len);
            }
        o->prefix_text = sgl_arena_strndup(A, sb.data ? sb.data : "", sb.len);
        o->prefix_len = (uint32_t)sb.len;
        sgl_strbuf_free(&sb);
        o->file = f->decl->loc.file;
        if (o->file < c->prog->n_files) {
            uint32_t col;
            sgl_source_line_col(&c->prog->files[o->file], f->decl->loc.start, &o->line, &col);
        }
        if (f->flags & SGL_FNF_MAIN) m->entry = (int32_t)i;
    }
    const char **files = sgl_arena_alloc(A, (c->prog->n_files + 1) * sizeof *files);
    if (!files) {
        sgl_error_set(c->err, "out of memory");
        return NULL;
    }
    for (uint32_t i = 0; i < c->prog->n_files; i++) {
        const char *p = c->prog->files[i].path ? c->prog->files[i].path : "?";
        files[i] = sgl_arena_strndup(A, p, strlen(p));
    }
    if (compact_consts(c, fns, c->n_fns, sites, n_sites)) {
        sgl_error_set(c->err, "out of memory");
        return NULL;
    }
    m->consts = c->consts;
    m->n_consts = c->n_consts;
    m->sites = sites;
    m->n_sites = n_sites;
    m->fns = fns;
    m->n_fns = c->n_fns;
    m->files = files;
    m->n_files = c->prog->n_files;
    m->opt_level = c->opts.opt_level;
    return m;
}
