/* verify.c: the IR verifier. Checks the invariants listed in ir.h on one
 * function; run after lowering and after every pass when opts.verify is on
 * (debug builds and tests). A failure is a compiler bug, reported as
 * "fn NAME: node N (op): what is wrong". */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compiler/ir.h"

typedef struct vctx {
    const comp *c;
    const ir_fn *f;
    sgl_error *err;
    uint32_t *pos; /* schedule position of each node in its region */
} vctx;

static int bad(vctx *v, ir_ref n, const char *fmt, ...) SGL_PRINTF(3, 4);
static int bad(vctx *v, ir_ref n, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n == IR_NONE) return sgl_error_set(v->err, "fn %s: %s", v->f->name, buf);
    return sgl_error_set(v->err, "fn %s: node %u (%s): %s", v->f->name, n, ir_op_name(v->f->nodes[n].op), buf);
}

/* Does anything in region r (or its sub-regions) store slot? */
static bool region_stores(const ir_fn *f, uint32_t r, int64_t slot) {
    const ir_region *R = &f->regions[r];
    for (uint32_t i = 0; i < R->len; i++) {
        const ir_node *n = &f->nodes[R->nodes[i]];
        if (n->dead) continue;
        if (n->op == IR_STORE && n->i == slot) return true;
        if (n->op == IR_FOR && n->i == slot) return true;
        for (int k = 0; k < 2; k++)
            if (n->reg[k] != UINT32_MAX && region_stores(f, n->reg[k], slot)) return true;
    }
    return false;
}

static bool node_stores(const ir_fn *f, const ir_node *n, int64_t slot) {
    if ((n->op == IR_STORE || n->op == IR_FOR) && n->i == slot) return true;
    for (int k = 0; k < 2; k++)
        if (n->reg[k] != UINT32_MAX && region_stores(f, n->reg[k], slot)) return true;
    return false;
}

/* Checks that input `in` of node `user` is available: defined earlier in
 * the same region, or in an ancestor region before the node that leads to
 * the user. For LOADs also that their slot is not stored in between. */
static int check_input(vctx *v, ir_ref user, ir_ref in) {
    const ir_fn *f = v->f;
    const ir_node *d = &f->nodes[in];
    ir_ref x = user; /* walks up: x is in region X */
    for (;;) {
        uint32_t X = f->nodes[x].region;
        bool here = X == d->region;
        if (d->op == IR_LOAD) {
            /* stores between (the load or the region start) and x in X */
            uint32_t from = here ? v->pos[in] + 1 : 0;
            const ir_region *R = &f->regions[X];
            for (uint32_t i = from; i < v->pos[x] && i < R->len; i++) {
                const ir_node *s = &f->nodes[R->nodes[i]];
                if (!s->dead && node_stores(f, s, d->i))
                    return bad(v, user, "uses a load of slot %lld across a store to that slot",
                               (long long)d->i);
            }
            if (!here && f->regions[X].loop && f->regions[X].owner != IR_NONE &&
                node_stores(f, &f->nodes[f->regions[X].owner], d->i))
                return bad(v, user, "uses a load from outside a loop of a slot the loop stores");
        }
        if (here) {
            if (v->pos[in] >= v->pos[x]) return bad(v, user, "uses a value defined after it");
            return 0;
        }
        ir_ref o = f->regions[X].owner;
        if (o == IR_NONE) return bad(v, user, "uses a value from a region that does not enclose it");
        x = o;
    }
}

static int expect_in(vctx *v, ir_ref id, uint32_t lo, uint32_t hi) {
    const ir_node *n = &v->f->nodes[id];
    if (n->n_in < lo || n->n_in > hi) return bad(v, id, "has the wrong number of inputs");
    return 0;
}

static int check_node(vctx *v, ir_ref id) {
    const comp *c = v->c;
    const ir_fn *f = v->f;
    const ir_node *n = &f->nodes[id];
    unsigned fl = ir_op_flags(n->op);
    if ((unsigned)n->op >= IR__COUNT) return bad(v, id, "has an unknown op");
    for (uint32_t i = 0; i < n->n_in; i++) {
        ir_ref in = n->in[i];
        if (in >= f->n_nodes) return bad(v, id, "has an input out of range");
        if (f->nodes[in].dead) return bad(v, id, "uses a dead node");
        if (!(ir_op_flags(f->nodes[in].op) & IRF_VALUE)) return bad(v, id, "uses a node that has no value (%s)", ir_op_name(f->nodes[in].op));
        if (check_input(v, id, in)) return -1;
    }
    if (fl & IRF_STREAM && n->n_in < 1) return bad(v, id, "is a stream op without a stream input");
    if ((n->op == IR_CONST || n->op == IR_APPEND_TEXT) && (n->k < 0 || (uint32_t)n->k >= c->n_consts))
        return bad(v, id, "has no valid constant");
    if (n->op == IR_APPEND_TEXT && c->consts[n->k].kind != SGL_CONST_STRING)
        return bad(v, id, "appends a constant that is not a string");
    if ((n->op == IR_LOAD || n->op == IR_STORE || n->op == IR_FOR) && (n->i < 0 || n->i >= f->n_slots))
        return bad(v, id, "names a slot outside the frame");
    if ((n->op == IR_ROLE_BEGIN || n->op == IR_ROLE_END) && (n->i < 0 || n->i >= SGL_ROLE__COUNT))
        return bad(v, id, "has an unknown role");
    if ((n->op == IR_GEN || n->op == IR_SELECT) && !n->site) return bad(v, id, "has no call site");
    if (n->site) {
        uint32_t dyn = n->site->n_pos + (n->site->name_k == SGL_SITE_DYNAMIC);
        for (uint32_t i = 0; i < n->site->n_kw; i++) dyn += n->site->kw_k[i] == SGL_SITE_DYNAMIC;
        uint32_t first = (fl & IRF_STREAM) ? 1 : 0;
        if (n->n_in != first + dyn) return bad(v, id, "has inputs that do not match its call site");
        for (uint32_t i = 0; i < n->site->n_kw; i++)
            if (n->site->kw_k[i] != SGL_SITE_DYNAMIC && (n->site->kw_k[i] < 0 || (uint32_t)n->site->kw_k[i] >= c->n_consts))
                return bad(v, id, "has a keyword constant out of range");
    }
    int rc = 0;
    switch (n->op) {
    case IR_CONST: case IR_LOAD: case IR_FN_REF: case IR_BREAK: case IR_CONTINUE: case IR_WHILE:
        rc = expect_in(v, id, 0, 0); break;
    case IR_UNOP: case IR_STORE: case IR_DROP: case IR_YIELD: case IR_IF: case IR_FOR: case IR_APPEND_TEXT:
    case IR_ROLE_BEGIN: case IR_ROLE_END:
        rc = expect_in(v, id, 1, 1); break;
    case IR_BINOP: case IR_AND: case IR_OR: case IR_INDEX: case IR_ADD_ASSIGN: case IR_APPEND:
    case IR_READ_VAR: case IR_META:
        rc = expect_in(v, id, 2, 2); break;
    case IR_SET_INDEX: rc = expect_in(v, id, 3, 3); break;
    case IR_ASSERT: case IR_FORK: case IR_JOIN: rc = expect_in(v, id, 1, 2); break;
    case IR_RETURN: rc = expect_in(v, id, 0, 1); break;
    case IR_MAP: if (n->n_in % 2) rc = bad(v, id, "has an odd number of inputs"); break;
    case IR_CALL: case IR_CALL_FRESH:
        if (n->i < 0 || n->i >= c->n_fns) rc = bad(v, id, "calls a function out of range");
        break;
    default: break;
    }
    if (rc) return rc;
    /* regions */
    if (fl & IRF_REGION) {
        int want = n->op == IR_FOR ? 1 : 2;
        for (int k = 0; k < want; k++) {
            uint32_t r = n->reg[k];
            if (r >= f->n_regions) return bad(v, id, "is missing a sub-region");
            if (f->regions[r].owner != id) return bad(v, id, "has a sub-region owned by another node");
            bool loop = n->op != IR_IF;
            if (f->regions[r].loop != loop) return bad(v, id, "has a sub-region with the wrong loop flag");
        }
        if (n->op == IR_WHILE) {
            const ir_region *R = &f->regions[n->reg[0]];
            ir_ref last = IR_NONE;
            for (uint32_t i = 0; i < R->len; i++)
                if (!f->nodes[R->nodes[i]].dead) last = R->nodes[i];
            if (last == IR_NONE || f->nodes[last].op != IR_YIELD)
                return bad(v, id, "has a condition region that does not end in yield");
        }
    } else if (n->reg[0] != UINT32_MAX || n->reg[1] != UINT32_MAX) {
        return bad(v, id, "has sub-regions but is not a region node");
    }
    if (n->op == IR_YIELD) {
        const ir_region *R = &f->regions[n->region];
        if (R->owner == IR_NONE || f->nodes[R->owner].op != IR_WHILE || f->nodes[R->owner].reg[0] != n->region)
            return bad(v, id, "is outside a while condition");
    }
    if (n->op == IR_BREAK || n->op == IR_CONTINUE) {
        uint32_t r = n->region;
        bool in_loop = false;
        while (!in_loop) {
            if (f->regions[r].loop) in_loop = true;
            else if (f->regions[r].owner == IR_NONE) break;
            else r = f->nodes[f->regions[r].owner].region;
        }
        if (!in_loop) return bad(v, id, "is outside a loop");
    }
    return 0;
}

int ir_verify(const comp *c, const ir_fn *f, sgl_error *err) {
    vctx v = {c, f, err, NULL};
    if (f->n_regions == 0 || f->regions[0].owner != IR_NONE) return bad(&v, IR_NONE, "has no body region");
    v.pos = calloc(f->n_nodes + 1, sizeof *v.pos);
    uint8_t *seen = calloc(f->n_nodes + 1, 1);
    int rc = 0;
    if (!v.pos || !seen) {
        rc = sgl_error_set(err, "out of memory");
        goto out;
    }
    for (uint32_t r = 0; r < f->n_regions && !rc; r++) {
        const ir_region *R = &f->regions[r];
        if (r > 0 && (R->owner == IR_NONE || R->owner >= f->n_nodes || f->nodes[R->owner].dead)) {
            /* detached (its owner was folded away): must hold nothing live */
            for (uint32_t i = 0; i < R->len && !rc; i++)
                if (R->nodes[i] < f->n_nodes && !f->nodes[R->nodes[i]].dead)
                    rc = bad(&v, R->nodes[i], "is live in region %u, which has no live owner", r);
            continue;
        }
        ir_ref prev_eff = IR_NONE;
        for (uint32_t i = 0; i < R->len; i++) {
            ir_ref id = R->nodes[i];
            if (id >= f->n_nodes) {
                rc = bad(&v, IR_NONE, "has a schedule entry out of range");
                break;
            }
            const ir_node *n = &f->nodes[id];
            if (n->dead) continue;
            if (seen[id]) {
                rc = bad(&v, id, "is scheduled twice");
                break;
            }
            seen[id] = 1;
            if (n->region != r) {
                rc = bad(&v, id, "is scheduled in a region it does not belong to");
                break;
            }
            v.pos[id] = i;
            if (ir_op_flags(n->op) & IRF_EFFECT) {
                if (n->chain != prev_eff) {
                    rc = bad(&v, id, "has a stream/effect chain that skips or reorders an effect");
                    break;
                }
                prev_eff = id;
            } else if (n->chain != IR_NONE) {
                rc = bad(&v, id, "is pure but has a chain input");
                break;
            }
        }
    }
    for (uint32_t i = 0; i < f->n_nodes && !rc; i++)
        if (!f->nodes[i].dead && !seen[i]) rc = bad(&v, i, "is live but in no region's schedule");
    for (uint32_t r = 0; r < f->n_regions && !rc; r++) {
        const ir_region *R = &f->regions[r];
        for (uint32_t i = 0; i < R->len && !rc; i++)
            if (!f->nodes[R->nodes[i]].dead) rc = check_node(&v, R->nodes[i]);
    }
out:
    free(v.pos);
    free(seen);
    return rc;
}
