/* fold.c: compile-time evaluation over constants, shared by const
 * declarations (lower.c) and the constant-folding pass (passes.c). Each
 * folder returns the result's constant index, or -1 when the operation is
 * not folded: it would be a runtime error (division by zero, overflow, a
 * type error), or its result depends on the VM's formatting (floats as
 * text). Folding never changes what a program prints or fails with. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "compiler/fold.h"

static const sgl_const *K(const comp *c, int32_t k) { return k >= 0 && (uint32_t)k < c->n_consts ? &c->consts[k] : NULL; }

int comp_const_truthy(const comp *c, int32_t k) {
    const sgl_const *a = K(c, k);
    if (!a) return -1;
    switch (a->kind) {
    case SGL_CONST_NONE: return 0;
    case SGL_CONST_BOOL: return a->b;
    case SGL_CONST_INT: return a->i != 0;
    case SGL_CONST_FLOAT: return a->f != 0.0;
    case SGL_CONST_STRING: return a->str.len != 0;
    case SGL_CONST_LIST:
    case SGL_CONST_MAP: return a->agg.n != 0;
    }
    return -1;
}

int comp_fold_format(const comp *c, int32_t k, sgl_strbuf *out) {
    const sgl_const *a = K(c, k);
    if (!a) return -1;
    switch (a->kind) {
    case SGL_CONST_STRING: return sgl_strbuf_append(out, a->str.bytes, a->str.len);
    case SGL_CONST_INT: return sgl_strbuf_printf(out, "%" PRId64, a->i);
    case SGL_CONST_BOOL: return sgl_strbuf_puts(out, a->b ? "true" : "false");
    default: return -1; /* none/float/list/map text is the VM's JSON writer's business */
    }
}

static int32_t mk_bool(comp *c, bool b) {
    sgl_const k = {.kind = SGL_CONST_BOOL};
    k.b = b;
    return comp_const_add(c, &k);
}

static int32_t mk_float(comp *c, double f) {
    sgl_const k = {.kind = SGL_CONST_FLOAT};
    k.f = f;
    return comp_const_add(c, &k);
}

static bool is_num(const sgl_const *a) { return a->kind == SGL_CONST_INT || a->kind == SGL_CONST_FLOAT; }
static double num(const sgl_const *a) { return a->kind == SGL_CONST_INT ? (double)a->i : a->f; }

/* Structural equality: 1, 0, or -1 when not decided here. */
static int const_equal(const comp *c, const sgl_const *a, const sgl_const *b) {
    if (is_num(a) && is_num(b)) {
        if (a->kind == SGL_CONST_INT && b->kind == SGL_CONST_INT) return a->i == b->i;
        return num(a) == num(b);
    }
    if (a->kind != b->kind) return 0;
    switch (a->kind) {
    case SGL_CONST_NONE: return 1;
    case SGL_CONST_BOOL: return a->b == b->b;
    case SGL_CONST_STRING: return a->str.len == b->str.len && !memcmp(a->str.bytes, b->str.bytes, a->str.len);
    case SGL_CONST_LIST:
        if (a->agg.n != b->agg.n) return 0;
        for (uint32_t i = 0; i < a->agg.n; i++) {
            int e = const_equal(c, K(c, (int32_t)a->agg.items[i]), K(c, (int32_t)b->agg.items[i]));
            if (e != 1) return e;
        }
        return 1;
    default: return -1;
    }
}

static int str_cmp(const sgl_const *a, const sgl_const *b) {
    size_t n = a->str.len < b->str.len ? a->str.len : b->str.len;
    int r = memcmp(a->str.bytes, b->str.bytes, n);
    if (r) return r;
    return a->str.len < b->str.len ? -1 : a->str.len > b->str.len;
}

int32_t comp_fold_binop(comp *c, sgl_op op, int32_t ka, int32_t kb) {
    const sgl_const *a = K(c, ka), *b = K(c, kb);
    if (!a || !b) return -1;
    bool ints = a->kind == SGL_CONST_INT && b->kind == SGL_CONST_INT;
    bool nums = is_num(a) && is_num(b);
    int64_t r;
    switch (op) {
    case SGL_OP_ADD:
        if (ints) return __builtin_add_overflow(a->i, b->i, &r) ? -1 : comp_const_int(c, r);
        if (nums) return mk_float(c, num(a) + num(b));
        if (a->kind == SGL_CONST_STRING && b->kind == SGL_CONST_STRING) {
            sgl_strbuf sb = {0};
            int32_t k = -1;
            if (!sgl_strbuf_append(&sb, a->str.bytes, a->str.len) && !sgl_strbuf_append(&sb, b->str.bytes, b->str.len))
                k = comp_const_str(c, sb.data ? sb.data : "", sb.len);
            sgl_strbuf_free(&sb);
            return k;
        }
        return -1;
    case SGL_OP_SUB:
        if (ints) return __builtin_sub_overflow(a->i, b->i, &r) ? -1 : comp_const_int(c, r);
        return nums ? mk_float(c, num(a) - num(b)) : -1;
    case SGL_OP_MUL:
        if (ints) return __builtin_mul_overflow(a->i, b->i, &r) ? -1 : comp_const_int(c, r);
        return nums ? mk_float(c, num(a) * num(b)) : -1;
    case SGL_OP_DIV:
        if (ints) return (b->i == 0 || (a->i == INT64_MIN && b->i == -1)) ? -1 : comp_const_int(c, a->i / b->i);
        return nums && num(b) != 0.0 ? mk_float(c, num(a) / num(b)) : -1;
    case SGL_OP_MOD:
        return ints && b->i != 0 && !(a->i == INT64_MIN && b->i == -1) ? comp_const_int(c, a->i % b->i) : -1;
    case SGL_OP_EQ:
    case SGL_OP_NE: {
        int e = const_equal(c, a, b);
        if (e < 0) return -1;
        return mk_bool(c, op == SGL_OP_EQ ? e : !e);
    }
    case SGL_OP_LT: case SGL_OP_LE: case SGL_OP_GT: case SGL_OP_GE: {
        int cmp;
        if (nums) {
            double x = num(a), y = num(b);
            if (ints) cmp = (a->i > b->i) - (a->i < b->i);
            else if (x != x || y != y) return -1;
            else cmp = (x > y) - (x < y);
        } else if (a->kind == SGL_CONST_STRING && b->kind == SGL_CONST_STRING) {
            cmp = str_cmp(a, b);
        } else {
            return -1;
        }
        bool v = op == SGL_OP_LT ? cmp < 0 : op == SGL_OP_LE ? cmp <= 0 : op == SGL_OP_GT ? cmp > 0 : cmp >= 0;
        return mk_bool(c, v);
    }
    case SGL_OP_IN:
    case SGL_OP_NOT_IN: {
        int found = -1;
        if (a->kind == SGL_CONST_STRING && b->kind == SGL_CONST_STRING) {
            found = a->str.len == 0 || memmem(b->str.bytes, b->str.len, a->str.bytes, a->str.len) != NULL;
        } else if (b->kind == SGL_CONST_LIST) {
            found = 0;
            for (uint32_t i = 0; i < b->agg.n && found == 0; i++) {
                int e = const_equal(c, a, K(c, (int32_t)b->agg.items[i]));
                if (e < 0) return -1;
                found = e;
            }
        } else if (b->kind == SGL_CONST_MAP && a->kind == SGL_CONST_STRING) {
            found = 0;
            for (uint32_t i = 0; i < b->agg.n && !found; i++)
                found = const_equal(c, a, K(c, (int32_t)b->agg.items[2 * i])) == 1;
        }
        if (found < 0) return -1;
        return mk_bool(c, op == SGL_OP_IN ? found : !found);
    }
    default: return -1;
    }
}

int32_t comp_fold_unop(comp *c, sgl_op op, int32_t ka) {
    const sgl_const *a = K(c, ka);
    if (!a) return -1;
    if (op == SGL_OP_NOT) {
        int t = comp_const_truthy(c, ka);
        return t < 0 ? -1 : mk_bool(c, !t);
    }
    if (op == SGL_OP_NEG) {
        if (a->kind == SGL_CONST_INT) return a->i == INT64_MIN ? -1 : comp_const_int(c, -a->i);
        if (a->kind == SGL_CONST_FLOAT) return mk_float(c, -a->f);
    }
    return -1;
}

int32_t comp_fold_index(comp *c, int32_t ko, int32_t ki) {
    const sgl_const *o = K(c, ko), *i = K(c, ki);
    if (!o || !i) return -1;
    if ((o->kind == SGL_CONST_LIST || o->kind == SGL_CONST_STRING) && i->kind == SGL_CONST_INT) {
        int64_t n = o->kind == SGL_CONST_LIST ? o->agg.n : o->str.len;
        int64_t x = i->i < 0 ? i->i + n : i->i;
        if (x < 0 || x >= n) return -1;
        if (o->kind == SGL_CONST_LIST) return (int32_t)o->agg.items[x];
        return comp_const_str(c, o->str.bytes + x, 1);
    }
    if (o->kind == SGL_CONST_MAP && i->kind == SGL_CONST_STRING) {
        for (uint32_t q = o->agg.n; q-- > 0;) /* last duplicate key wins */
            if (const_equal(c, i, K(c, (int32_t)o->agg.items[2 * q])) == 1) return (int32_t)o->agg.items[2 * q + 1];
    }
    return -1;
}

int32_t comp_fold_builtin(comp *c, sgl_builtin b, const int32_t *k, uint32_t n) {
    const sgl_const *a = n >= 1 ? K(c, k[0]) : NULL;
    if (!a) return -1;
    switch (b) {
    case SGL_BUILTIN_LEN:
        if (n != 1) return -1;
        if (a->kind == SGL_CONST_STRING) return comp_const_int(c, a->str.len);
        if (a->kind == SGL_CONST_LIST || a->kind == SGL_CONST_MAP) return comp_const_int(c, a->agg.n);
        return -1;
    case SGL_BUILTIN_STR: {
        if (n != 1) return -1;
        sgl_strbuf sb = {0};
        int32_t r = -1;
        if (comp_fold_format(c, k[0], &sb) == 0) r = comp_const_str(c, sb.data ? sb.data : "", sb.len);
        sgl_strbuf_free(&sb);
        return r;
    }
    default: return -1;
    }
}
