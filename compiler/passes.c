/* passes.c: the optimization passes over the IR and the pass table.
 *
 *   pass       -O  what it does (in table order)
 *   fold       1   constant folding: operators, f-strings, len/str, literal
 *                  lists/maps and indexing over constants; appends of a
 *                  constant become APPEND_TEXT; constant keyword arguments
 *                  move into the call site; an if on a constant keeps the
 *                  taken branch
 *   dce        1   dead code: nodes after return/break/continue, unused pure
 *                  values, stores to locals that are never read, empty ifs
 *   reorder    2   in @reorder functions, constant append statements move
 *                  ahead of argument-dependent ones (between barriers)
 *   coalesce   1   adjacent APPEND_TEXTs to one stream become one
 *   hoist      1   common-prefix hoisting: text (or a role opening) that
 *                  every branch of an if/else appends first moves before it
 *   coalesce   1   again, for text hoisted next to text
 *   prefix     1   the function's prefix hint (argument-independent prefix
 *                  of its stream) for the VM to cache
 * Each pass returns 1 if it changed the IR, 0 if not, -1 on OOM.
 */
#include <stdlib.h>
#include <string.h>

#include "compiler/fold.h"
#include "compiler/ir.h"

static ir_node *N(ir_fn *f, ir_ref r) { return &f->nodes[r]; }
static bool live_effect(ir_fn *f, ir_ref r) {
    return !N(f, r)->dead && (ir_op_flags(N(f, r)->op) & IRF_EFFECT);
}

static void rechain_all(ir_fn *f) {
    for (uint32_t r = 0; r < f->n_regions; r++) ir_region_rechain(f, r);
}

static void kill_region(ir_fn *f, uint32_t r);
static void kill_node(ir_fn *f, ir_ref id) {
    ir_node *n = N(f, id);
    n->dead = true;
    for (int k = 0; k < 2; k++)
        if (n->reg[k] != UINT32_MAX) kill_region(f, n->reg[k]);
}
static void kill_region(ir_fn *f, uint32_t r) {
    for (uint32_t i = 0; i < f->regions[r].len; i++) kill_node(f, f->regions[r].nodes[i]);
}

/* Turns a node into a CONST (dropping its inputs, chain and sub-regions). */
static void make_const(ir_fn *f, ir_ref id, int32_t k) {
    ir_node *n = N(f, id);
    n->op = IR_CONST;
    n->k = k;
    n->n_in = 0;
    n->site = NULL;
    n->chain = IR_NONE;
}

static int32_t kof(ir_fn *f, ir_ref r) { return N(f, r)->op == IR_CONST ? N(f, r)->k : -1; }

/* ---- fold ---- */

/* Moves constant dynamic inputs of a site into the site. */
static bool fold_site(ir_fn *f, ir_node *n) {
    ir_site *s = n->site;
    uint32_t first = (ir_op_flags(n->op) & IRF_STREAM) ? 1 : 0;
    uint32_t at = first;
    bool changed = false;
    ir_ref keep[512];
    uint32_t nk = 0;
    for (uint32_t i = 0; i < first; i++) keep[nk++] = n->in[i];
    if (s->name_k == SGL_SITE_DYNAMIC) {
        int32_t k = kof(f, n->in[at]);
        if (k >= 0 && f->nodes[n->in[at]].op == IR_CONST) {
            s->name_k = k;
            changed = true;
        } else {
            keep[nk++] = n->in[at];
        }
        at++;
    }
    for (uint32_t i = 0; i < s->n_pos; i++) keep[nk++] = n->in[at++];
    for (uint32_t i = 0; i < s->n_kw; i++) {
        if (s->kw_k[i] != SGL_SITE_DYNAMIC) continue;
        int32_t k = kof(f, n->in[at]);
        if (k >= 0) {
            s->kw_k[i] = k;
            changed = true;
        } else if (nk < SGL_ARRAY_LEN(keep)) {
            keep[nk++] = n->in[at];
        }
        at++;
    }
    if (changed) {
        memcpy(n->in, keep, nk * sizeof *keep);
        n->n_in = nk;
    }
    return changed;
}

/* Moves the nodes of region from into the schedule of region to at pos. */
static void splice_region(comp *c, ir_fn *f, uint32_t from, uint32_t to, uint32_t pos) {
    ir_region *F = &f->regions[from];
    for (uint32_t i = 0; i < F->len; i++) {
        ir_ref x = F->nodes[i];
        if (N(f, x)->dead) continue;
        ir_region_insert(c, f, to, pos++, x);
    }
    F->len = 0;
}

static int pass_fold(comp *c, ir_fn *f) {
    int changed = 0;
    for (bool again = true; again;) {
        again = false;
        for (ir_ref id = 0; id < f->n_nodes; id++) {
            ir_node *n = N(f, id);
            if (n->dead) continue;
            int32_t k = -1;
            switch (n->op) {
            case IR_UNOP:
                if (kof(f, n->in[0]) >= 0) k = comp_fold_unop(c, (sgl_op)n->i, kof(f, n->in[0]));
                break;
            case IR_BINOP:
                if (kof(f, n->in[0]) >= 0 && kof(f, n->in[1]) >= 0)
                    k = comp_fold_binop(c, (sgl_op)n->i, kof(f, n->in[0]), kof(f, n->in[1]));
                break;
            case IR_AND:
            case IR_OR: {
                int t = kof(f, n->in[0]) >= 0 ? comp_const_truthy(c, kof(f, n->in[0])) : -1;
                int u = kof(f, n->in[1]) >= 0 ? comp_const_truthy(c, kof(f, n->in[1])) : -1;
                int v = -1;
                if (n->op == IR_AND) v = t == 0 ? 0 : (t == 1 && u >= 0) ? u : -1;
                else v = t == 1 ? 1 : (t == 0 && u >= 0) ? u : -1;
                if (v >= 0) {
                    sgl_const b = {.kind = SGL_CONST_BOOL};
                    b.b = v;
                    k = comp_const_add(c, &b);
                }
                break;
            }
            case IR_FSTR: {
                sgl_strbuf sb = {0};
                bool ok = true;
                for (uint32_t i = 0; i < n->n_in && ok; i++)
                    ok = kof(f, n->in[i]) >= 0 && comp_fold_format(c, kof(f, n->in[i]), &sb) == 0;
                if (ok) k = comp_const_str(c, sb.data ? sb.data : "", sb.len);
                sgl_strbuf_free(&sb);
                break;
            }
            case IR_PURE_CALL: {
                int32_t ks[4];
                bool ok = n->n_in >= 1 && n->n_in <= 4;
                for (uint32_t i = 0; i < n->n_in && ok; i++) ok = (ks[i] = kof(f, n->in[i])) >= 0;
                if (ok) k = comp_fold_builtin(c, (sgl_builtin)n->i, ks, n->n_in);
                break;
            }
            case IR_LIST:
            case IR_MAP: {
                bool ok = true;
                for (uint32_t i = 0; i < n->n_in && ok; i++) {
                    ok = kof(f, n->in[i]) >= 0;
                    if (ok && n->op == IR_MAP && i % 2 == 0) ok = c->consts[kof(f, n->in[i])].kind == SGL_CONST_STRING;
                }
                if (!ok) break;
                uint32_t *items = sgl_arena_alloc(c->arena, (n->n_in + 1) * sizeof *items);
                if (!items) return -1;
                for (uint32_t i = 0; i < n->n_in; i++) items[i] = (uint32_t)kof(f, n->in[i]);
                sgl_const L = {.kind = n->op == IR_LIST ? SGL_CONST_LIST : SGL_CONST_MAP};
                L.agg.items = items;
                L.agg.n = n->op == IR_LIST ? n->n_in : n->n_in / 2;
                k = comp_const_add(c, &L);
                break;
            }
            case IR_INDEX:
                if (kof(f, n->in[0]) >= 0 && kof(f, n->in[1]) >= 0) {
                    k = comp_fold_index(c, kof(f, n->in[0]), kof(f, n->in[1]));
                    if (k >= 0) {
                        make_const(f, id, k);
                        ir_region_rechain(f, n->region);
                        changed = again = true;
                        continue;
                    }
                }
                break;
            case IR_APPEND: {
                int32_t v = kof(f, n->in[1]);
                if (v < 0 || n->i > SGL_APPEND_FMT) break; /* image/var_scope operands are not text */
                int32_t t = -1;
                if (c->consts[v].kind == SGL_CONST_STRING) {
                    t = v;
                } else if (n->i != SGL_APPEND_STR) {
                    sgl_strbuf sb = {0};
                    if (comp_fold_format(c, v, &sb) == 0) t = comp_const_str(c, sb.data ? sb.data : "", sb.len);
                    sgl_strbuf_free(&sb);
                }
                if (t >= 0) {
                    n->op = IR_APPEND_TEXT;
                    n->k = t;
                    n->n_in = 1;
                    changed = again = true;
                }
                continue;
            }
            case IR_GEN:
            case IR_SELECT:
            case IR_BUILTIN:
                if (n->site && fold_site(f, n)) changed = again = true;
                continue;
            case IR_JOIN:
                if (n->i == SGL_JOIN_DYNAMIC && kof(f, n->in[1]) >= 0 &&
                    c->consts[kof(f, n->in[1])].kind == SGL_CONST_STRING) {
                    const sgl_const *m = &c->consts[kof(f, n->in[1])];
                    if ((m->str.len == 6 && !memcmp(m->str.bytes, "concat", 6)) ||
                        (m->str.len == 18 && !memcmp(m->str.bytes, "concate_and_append", 18)))
                        n->i = SGL_JOIN_CONCAT;
                    else if (m->str.len == 6 && !memcmp(m->str.bytes, "gather", 6)) n->i = SGL_JOIN_GATHER;
                    else continue; /* an invalid mode: the VM reports it */
                    n->n_in = 1;
                    changed = again = true;
                }
                continue;
            case IR_IF: {
                int t = kof(f, n->in[0]) >= 0 ? comp_const_truthy(c, kof(f, n->in[0])) : -1;
                if (t < 0) continue;
                uint32_t keep = n->reg[t ? 0 : 1], drop = n->reg[t ? 1 : 0];
                uint32_t r = n->region;
                uint32_t pos = 0;
                while (f->regions[r].nodes[pos] != id) pos++;
                kill_region(f, drop);
                /* the kept branch's nodes take the if's place */
                n->dead = true;
                splice_region(c, f, keep, r, pos + 1);
                f->regions[keep].owner = IR_NONE;
                n->reg[0] = n->reg[1] = UINT32_MAX;
                ir_region_rechain(f, r);
                changed = again = true;
                continue;
            }
            default: continue;
            }
            if (k >= 0) {
                make_const(f, id, k);
                changed = again = true;
            }
        }
    }
    return changed;
}

/* ---- dce ---- */

static bool slot_is_read(ir_fn *f, int64_t slot) {
    for (ir_ref i = 0; i < f->n_nodes; i++)
        if (!N(f, i)->dead && N(f, i)->op == IR_LOAD && N(f, i)->i == slot) return true;
    return false;
}

static bool region_empty(ir_fn *f, uint32_t r) {
    for (uint32_t i = 0; i < f->regions[r].len; i++)
        if (!N(f, f->regions[r].nodes[i])->dead) return false;
    return true;
}

static int pass_dce(comp *c, ir_fn *f) {
    (void)c;
    int changed = 0;
    /* code after a terminator */
    for (uint32_t r = 0; r < f->n_regions; r++) {
        ir_region *R = &f->regions[r];
        bool after = false;
        for (uint32_t i = 0; i < R->len; i++) {
            ir_ref x = R->nodes[i];
            if (N(f, x)->dead) continue;
            if (after) {
                kill_node(f, x);
                changed = 1;
            } else if (ir_op_flags(N(f, x)->op) & IRF_TERM) {
                after = true;
            }
        }
    }
    for (bool again = true; again;) {
        again = false;
        uint32_t *uses = calloc(f->n_nodes + 1, sizeof *uses);
        if (!uses) return -1;
        for (ir_ref i = 0; i < f->n_nodes; i++)
            if (!N(f, i)->dead)
                for (uint32_t j = 0; j < N(f, i)->n_in; j++) uses[N(f, i)->in[j]]++;
        for (ir_ref i = 0; i < f->n_nodes; i++) {
            ir_node *n = N(f, i);
            if (n->dead) continue;
            bool kill = false;
            if ((ir_op_flags(n->op) & IRF_PURE) && uses[i] == 0) kill = true;
            /* a store nobody reads: its value, if an effect, still runs; a
             * computation that may fail becomes a drop, to fail the same */
            else if (n->op == IR_STORE && n->i >= (int64_t)f->n_params && !slot_is_read(f, n->i)) {
                if (ir_may_fail(f, n->in[0])) {
                    n->op = IR_DROP;
                    changed = 1;
                    again = true;
                } else {
                    kill = true;
                }
            } else if (n->op == IR_DROP && !ir_may_fail(f, n->in[0])) {
                kill = true; /* folded into something that cannot fail */
            }
            else if (n->op == IR_IF && region_empty(f, n->reg[0]) && region_empty(f, n->reg[1]) &&
                     (ir_op_flags(N(f, n->in[0])->op) & IRF_PURE))
                kill = true;
            if (kill) {
                kill_node(f, i);
                changed = 1;
                again = true;
            }
        }
        free(uses);
    }
    if (changed) rechain_all(f);
    return changed;
}

/* ---- coalesce ---- */

/* Do stream inputs a and b denote the same stream (same node, or loads of
 * one slot with no store between, which the verifier guarantees for two
 * adjacent effects)? */
static bool same_stream(ir_fn *f, ir_ref a, ir_ref b) {
    if (a == b) return true;
    return N(f, a)->op == IR_LOAD && N(f, b)->op == IR_LOAD && N(f, a)->i == N(f, b)->i;
}

static int pass_coalesce(comp *c, ir_fn *f) {
    int changed = 0;
    for (uint32_t r = 0; r < f->n_regions; r++) {
        ir_region *R = &f->regions[r];
        ir_ref prev = IR_NONE;
        for (uint32_t i = 0; i < R->len; i++) {
            ir_ref x = R->nodes[i];
            if (!live_effect(f, x)) continue;
            ir_node *n = N(f, x);
            if (prev != IR_NONE && n->op == IR_APPEND_TEXT && N(f, prev)->op == IR_APPEND_TEXT &&
                same_stream(f, N(f, prev)->in[0], n->in[0])) {
                const sgl_const *a = &c->consts[N(f, prev)->k], *b = &c->consts[n->k];
                sgl_strbuf sb = {0};
                if (sgl_strbuf_append(&sb, a->str.bytes, a->str.len) || sgl_strbuf_append(&sb, b->str.bytes, b->str.len)) {
                    sgl_strbuf_free(&sb);
                    return -1;
                }
                int32_t k = comp_const_str(c, sb.data, sb.len);
                sgl_strbuf_free(&sb);
                if (k < 0) return -1;
                N(f, prev)->k = k;
                n->dead = true;
                changed = 1;
                continue;
            }
            prev = x;
        }
        if (changed) ir_region_rechain(f, r);
    }
    return changed;
}

/* ---- hoist ---- */

static ir_ref first_effect(ir_fn *f, uint32_t r) {
    for (uint32_t i = 0; i < f->regions[r].len; i++)
        if (live_effect(f, f->regions[r].nodes[i])) return f->regions[r].nodes[i];
    return IR_NONE;
}

static uint32_t pos_in(ir_fn *f, uint32_t r, ir_ref x) {
    for (uint32_t i = 0; i < f->regions[r].len; i++)
        if (f->regions[r].nodes[i] == x) return i;
    return 0;
}

/* Creates node op in region r at position pos (a copy of template t, with
 * stream input a fresh LOAD of slot). Returns it or IR_NONE. */
/* A live LOAD of slot in region r before position pos with no store to
 * the slot in between, or IR_NONE. */
static ir_ref find_load(ir_fn *f, uint32_t r, uint32_t pos, int64_t slot) {
    ir_region *R = &f->regions[r];
    for (uint32_t i = pos; i-- > 0;) {
        ir_node *x = N(f, R->nodes[i]);
        if (x->dead) continue;
        if (x->op == IR_LOAD && x->i == slot) return R->nodes[i];
        if ((x->op == IR_STORE || x->op == IR_FOR) && x->i == slot) return IR_NONE;
        if (ir_op_flags(x->op) & IRF_REGION) return IR_NONE; /* might store it */
    }
    return IR_NONE;
}

static ir_ref insert_stream_op(comp *c, ir_fn *f, uint32_t r, uint32_t pos, const ir_node *t, int64_t slot) {
    ir_node tmpl = *t; /* t may move when nodes grow */
    ir_ref ld = find_load(f, r, pos, slot);
    if (ld != IR_NONE) {
        pos--; /* the op goes at pos + 1 below: right before the if */
    } else {
        ld = ir_add(c, f, r, IR_LOAD, NULL, 0, tmpl.loc);
        if (ld == IR_NONE) return IR_NONE;
        N(f, ld)->i = slot;
        N(f, ld)->stmt = tmpl.stmt;
        ir_region_remove(f, ld);
        if (ir_region_insert(c, f, r, pos, ld)) return IR_NONE;
    }
    ir_ref x = ir_add(c, f, r, tmpl.op, &ld, 1, tmpl.loc);
    if (x == IR_NONE) return IR_NONE;
    N(f, x)->i = tmpl.i;
    N(f, x)->k = tmpl.k;
    N(f, x)->stmt = tmpl.stmt;
    ir_region_remove(f, x);
    if (ir_region_insert(c, f, r, pos + 1, x)) return IR_NONE;
    return x;
}

static int hoist_one(comp *c, ir_fn *f, ir_ref ifn) {
    ir_node *n = N(f, ifn);
    ir_ref a = first_effect(f, n->reg[0]), b = first_effect(f, n->reg[1]);
    if (a == IR_NONE || b == IR_NONE) return 0;
    ir_node *na = N(f, a), *nb = N(f, b);
    if (na->op != nb->op) return 0;
    if (N(f, na->in[0])->op != IR_LOAD || N(f, nb->in[0])->op != IR_LOAD || N(f, na->in[0])->i != N(f, nb->in[0])->i)
        return 0;
    int64_t slot = N(f, na->in[0])->i;
    uint32_t r = n->region, pos = pos_in(f, r, ifn);
    if (na->op == IR_ROLE_BEGIN && na->i == nb->i) {
        if (insert_stream_op(c, f, r, pos, N(f, a), slot) == IR_NONE) return -1;
        N(f, a)->dead = N(f, b)->dead = true;
    } else if (na->op == IR_APPEND_TEXT) {
        const sgl_const *ka = &c->consts[na->k], *kb = &c->consts[nb->k];
        uint32_t cp = 0, lim = SGL_MIN(ka->str.len, kb->str.len);
        while (cp < lim && ka->str.bytes[cp] == kb->str.bytes[cp]) cp++;
        /* don't split a UTF-8 sequence */
        while (cp > 0 && ((cp < ka->str.len && ((unsigned char)ka->str.bytes[cp] & 0xC0) == 0x80) ||
                          (cp < kb->str.len && ((unsigned char)kb->str.bytes[cp] & 0xC0) == 0x80)))
            cp--;
        if (cp == 0) return 0;
        int32_t kp = comp_const_str(c, ka->str.bytes, cp);
        if (kp < 0) return -1;
        ir_node t = *N(f, a);
        t.k = kp;
        if (insert_stream_op(c, f, r, pos, &t, slot) == IR_NONE) return -1;
        ir_ref br[2] = {a, b};
        for (int i = 0; i < 2; i++) {
            ir_node *x = N(f, br[i]);
            const sgl_const *kx = &c->consts[x->k];
            if (kx->str.len == cp) {
                x->dead = true;
            } else {
                int32_t ks = comp_const_str(c, kx->str.bytes + cp, kx->str.len - cp);
                if (ks < 0) return -1;
                N(f, br[i])->k = ks;
            }
        }
    } else {
        return 0;
    }
    ir_region_rechain(f, N(f, ifn)->reg[0]);
    ir_region_rechain(f, N(f, ifn)->reg[1]);
    return 1;
}

static int pass_hoist(comp *c, ir_fn *f) {
    int changed = 0;
    /* inner ifs have larger ids: do them first so their hoisted text can
     * move on out of an enclosing elif chain */
    for (ir_ref id = f->n_nodes; id-- > 0;) {
        if (N(f, id)->dead || N(f, id)->op != IR_IF) continue;
        for (int guard = 0; guard < 64; guard++) {
            int rc = hoist_one(c, f, id);
            if (rc < 0) return -1;
            if (rc == 0) break;
            changed = 1;
        }
    }
    if (changed) {
        /* branch loads left without users */
        pass_dce(c, f);
    }
    return changed;
}

/* ---- reorder ---- */

static bool is_p0_stream_op(ir_fn *f, ir_ref x) {
    ir_node *n = N(f, x);
    switch (n->op) {
    case IR_APPEND_TEXT: case IR_APPEND: case IR_ROLE_BEGIN: case IR_ROLE_END: case IR_GEN: case IR_SELECT:
        return N(f, n->in[0])->op == IR_LOAD && N(f, n->in[0])->i == 0;
    default: return false;
    }
}

static uint32_t line_of(comp *c, sgl_loc loc) {
    uint32_t line = 0, col = 0;
    if (loc.file < c->prog->n_files) sgl_source_line_col(&c->prog->files[loc.file], loc.start, &line, &col);
    return line;
}

static int add_move(comp *c, ir_fn *f, int32_t k, uint32_t from, uint32_t to) {
    ir_move *m = sgl_arena_alloc(c->arena, (f->n_moves + 1) * sizeof *m);
    if (!m) return -1;
    if (f->n_moves) memcpy(m, f->moves, f->n_moves * sizeof *m);
    m[f->n_moves++] = (ir_move){k, from, to};
    f->moves = m;
    return 0;
}

/* Reorders one segment: schedule indices [lo, hi) of the body region, all
 * of whose effects are stream ops on p0 (no stores, so loads stay valid). */
static int reorder_segment(comp *c, ir_fn *f, uint32_t lo, uint32_t hi) {
    ir_region *R = &f->regions[0];
    uint32_t n = hi - lo;
    ir_ref *pure = malloc((n + 1) * sizeof *pure), *eff = malloc((n + 1) * sizeof *eff);
    ir_ref *dead = malloc((n + 1) * sizeof *dead);
    uint32_t *unit_of = malloc((n + 1) * sizeof *unit_of);
    if (!pure || !eff || !unit_of || !dead) {
        free(pure), free(eff), free(unit_of), free(dead);
        return -1;
    }
    uint32_t np = 0, ne = 0, nd = 0;
    for (uint32_t i = lo; i < hi; i++) {
        ir_ref x = R->nodes[i];
        if (N(f, x)->dead) dead[nd++] = x;
        else if (ir_op_flags(N(f, x)->op) & IRF_EFFECT) eff[ne++] = x;
        else pure[np++] = x;
    }
    /* units: runs of effects from one statement; constant if text/roles only */
    int rc = 0;
    uint32_t nu = 0;
    for (uint32_t i = 0; i < ne; i++) {
        if (i == 0 || N(f, eff[i])->stmt != N(f, eff[i - 1])->stmt) nu++;
        unit_of[i] = nu - 1;
    }
    bool moved = false;
    ir_ref *out = malloc((ne + 1) * sizeof *out);
    bool *is_const = calloc(nu + 1, 1);
    if (!out || !is_const) {
        free(pure), free(eff), free(unit_of), free(out), free(is_const), free(dead);
        return -1;
    }
    for (uint32_t u = 0; u < nu; u++) is_const[u] = true;
    for (uint32_t i = 0; i < ne; i++) {
        ir_op op = N(f, eff[i])->op;
        if (op != IR_APPEND_TEXT && op != IR_ROLE_BEGIN && op != IR_ROLE_END) is_const[unit_of[i]] = false;
    }
    uint32_t no = 0;
    ir_ref first_dyn = IR_NONE;
    for (uint32_t i = 0; i < ne; i++)
        if (is_const[unit_of[i]]) {
            if (first_dyn != IR_NONE) {
                moved = true;
                if (N(f, eff[i])->op == IR_APPEND_TEXT &&
                    add_move(c, f, N(f, eff[i])->k, line_of(c, N(f, eff[i])->loc), line_of(c, N(f, first_dyn)->loc)))
                    rc = -1;
            }
            out[no++] = eff[i];
        } else if (first_dyn == IR_NONE) {
            first_dyn = eff[i];
        }
    for (uint32_t i = 0; i < ne; i++)
        if (!is_const[unit_of[i]]) out[no++] = eff[i];
    if (moved) {
        /* pure nodes first (inputs of everything here), then the effects */
        uint32_t w = lo;
        for (uint32_t i = 0; i < np; i++) R->nodes[w++] = pure[i];
        for (uint32_t i = 0; i < no; i++) R->nodes[w++] = out[i];
        for (uint32_t i = 0; i < nd; i++) R->nodes[w++] = dead[i];
        ir_region_rechain(f, 0);
    }
    free(pure), free(eff), free(unit_of), free(out), free(is_const), free(dead);
    return rc < 0 ? -1 : moved;
}

static int pass_reorder(comp *c, ir_fn *f) {
    if (!(f->flags & SGL_FNF_REORDER) || !f->stream_param) return 0;
    int changed = 0;
    ir_region *R = &f->regions[0];
    /* role openings/closings per statement: a statement whose roles do not
     * balance (a `with` block's edges) is a barrier, so that nothing moves
     * into or out of a turn */
    uint32_t max_stmt = 0;
    for (uint32_t i = 0; i < R->len; i++) max_stmt = SGL_MAX(max_stmt, N(f, R->nodes[i])->stmt);
    int *bal = calloc(max_stmt + 1, sizeof *bal);
    if (!bal) return -1;
    for (uint32_t i = 0; i < R->len; i++) {
        const ir_node *x = N(f, R->nodes[i]);
        if (x->dead) continue;
        if (x->op == IR_ROLE_BEGIN) bal[x->stmt]++;
        if (x->op == IR_ROLE_END) bal[x->stmt]--;
    }
    uint32_t seg = 0;
    for (uint32_t i = 0; i <= R->len; i++) {
        bool barrier = i == R->len;
        if (!barrier) {
            ir_ref x = R->nodes[i];
            if (live_effect(f, x) && (!is_p0_stream_op(f, x) || bal[N(f, x)->stmt] != 0)) barrier = true;
        }
        if (barrier) {
            if (i > seg) {
                int rc = reorder_segment(c, f, seg, i);
                if (rc < 0) {
                    free(bal);
                    return -1;
                }
                changed |= rc;
            }
            seg = i + 1;
        }
    }
    free(bal);
    return changed;
}

/* ---- prefix ---- */

/* The prefix hint is computed by partial evaluation (prefix.c). In the
 * table so that --trace shows it; computed again after every function went
 * through its passes, since it follows calls into other functions. */
static int pass_prefix(comp *c, ir_fn *f) { return comp_prefix_hint(c, f) < 0 ? -1 : 0; }

int comp_link_prefixes(comp *c) {
    if (c->opts.opt_level < 1) return 0;
    for (uint32_t i = 0; i < c->n_fns; i++)
        if (comp_prefix_hint(c, c->fns[i])) return sgl_error_set(c->err, "out of memory");
    return 0;
}

/* ---- table ---- */

const ir_pass ir_passes[] = {
    {"fold", 1, pass_fold, "constant folding (operators, f-strings, literal lists, constant branches)"},
    {"dce", 1, pass_dce, "dead code: after return, unused pure values, unread stores"},
    /* reorder works on statement units, so it runs before coalescing
     * merges text across statements */
    {"reorder", 2, pass_reorder, "@reorder functions: constant appends move ahead of argument-dependent ones"},
    {"coalesce", 1, pass_coalesce, "adjacent constant appends to one stream become one"},
    {"hoist", 1, pass_hoist, "text every branch of an if/else appends first moves before it"},
    {"coalesce", 1, pass_coalesce, "again, after hoisting"},
    {"prefix", 1, pass_prefix, "the function's argument-independent prefix hint"},
};
const uint32_t ir_n_passes = SGL_ARRAY_LEN(ir_passes);

int comp_run_passes(comp *c, ir_fn *f, int stop_after) {
    for (uint32_t i = 0; i < ir_n_passes; i++) {
        if (stop_after >= 0 && (int)i > stop_after) break;
        if (c->opts.opt_level < ir_passes[i].min_level) continue;
        int rc = ir_passes[i].run(c, f);
        if (rc < 0) return sgl_error_set(c->err, "fn %s: pass %s: out of memory", f->name, ir_passes[i].name);
        if (c->trace && (rc > 0 || (ir_passes[i].run == pass_prefix && f->n_prefix))) {
            fprintf(c->trace, "\n== after %s ==\n", ir_passes[i].name);
            ir_dump_fn(c, f, c->trace_fmt, c->trace, true);
        }
        if (c->opts.verify && ir_verify(c, f, c->err))
            return sgl_error_prefix(c->err, "IR verifier after pass %s", ir_passes[i].name);
    }
    return 0;
}
