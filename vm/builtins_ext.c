/* builtins_ext.c: the text, list and math builtins SGLang drivers lean on
 * (docs/language.md §9): format/repr (f-string specs and !r), slice (s[a:b]),
 * replace, join(sep, items), index, count, upper, regex_find_all,
 * regex_sub, exp, log, sqrt, abs, min, max, round. Called from
 * vm_builtin_plain for the ids it does not handle itself.
 */
#include <math.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>

#include "lang/format.h"
#include "lang/lang.h"
#include "vm/builtins.h"

static int want_str(const char *fn, vm_value v, int i, sgl_error *err) {
    if (v.type == VM_STR) return 0;
    return sgl_error_set(err, "%s(): argument %d must be a string, not %s", fn, i + 1, vm_type_name(v.type));
}

static int want_num(const char *fn, vm_value v, int i, double *out, sgl_error *err) {
    if (v.type == VM_INT) *out = (double)v.as.i;
    else if (v.type == VM_FLOAT) *out = v.as.f;
    else return sgl_error_set(err, "%s(): argument %d must be a number, not %s", fn, i + 1, vm_type_name(v.type));
    return 0;
}

/* ---- format ---------------------------------------------------------------------- */

/* Inserts sep every three digits of the integer part of digits[0..n). */
static void group_digits(sgl_strbuf *out, const char *digits, size_t n, char sep) {
    size_t int_len = 0;
    while (int_len < n && digits[int_len] >= '0' && digits[int_len] <= '9') int_len++;
    for (size_t i = 0; i < int_len; i++) {
        if (i && (int_len - i) % 3 == 0) sgl_strbuf_putc(out, sep);
        sgl_strbuf_putc(out, digits[i]);
    }
    sgl_strbuf_append(out, digits + int_len, n - int_len);
}

static void pad(sgl_strbuf *sb, char fill, size_t n) {
    for (size_t i = 0; i < n; i++) sgl_strbuf_putc(sb, fill);
}

/* Writes sign + body padded per f (numbers: '=' puts the fill after the sign). */
static void emit_padded(sgl_strbuf *sb, const sgl_fmt_spec *f, const char *sign, const char *body, size_t blen,
                        char default_align) {
    size_t slen = strlen(sign), total = slen + blen;
    size_t w = f->width > 0 && (size_t)f->width > total ? (size_t)f->width - total : 0;
    char al = f->align ? f->align : default_align;
    if (al == '=') {
        sgl_strbuf_puts(sb, sign);
        pad(sb, f->fill, w);
        sgl_strbuf_append(sb, body, blen);
        return;
    }
    size_t left = al == '>' ? w : al == '^' ? w / 2 : 0;
    pad(sb, f->fill, left);
    sgl_strbuf_puts(sb, sign);
    sgl_strbuf_append(sb, body, blen);
    pad(sb, f->fill, w - left);
}

static int format_value(sgl_strbuf *sb, vm_value v, const sgl_fmt_spec *f, sgl_error *err) {
    bool num = v.type == VM_INT || v.type == VM_FLOAT || v.type == VM_BOOL;
    char t = f->type;
    if (!num || t == 's') {
        if (t && t != 's')
            return sgl_error_set(err, "format(): type '%c' needs a number, not %s", t, vm_type_name(v.type));
        if (num && t == 's') return sgl_error_set(err, "format(): type 's' needs a string, not %s", vm_type_name(v.type));
        sgl_strbuf s = {0};
        vm_str_append(&s, v);
        size_t n = s.len;
        if (f->precision >= 0 && (size_t)f->precision < n) n = (size_t)f->precision;
        if (f->align == '=') {
            sgl_strbuf_free(&s);
            return sgl_error_set(err, "format(): '=' alignment needs a number");
        }
        emit_padded(sb, f, "", s.data ? s.data : "", n, '<');
        sgl_strbuf_free(&s);
        return 0;
    }
    if (v.type == VM_BOOL) v = vm_int(v.as.b);
    char buf[512];
    const char *sign = "";
    sgl_strbuf body = {0};
    if (strchr("dxXob", t) && t) {
        if (v.type != VM_INT) return sgl_error_set(err, "format(): type '%c' needs an int, not float", t);
        int64_t x = v.as.i;
        uint64_t u = x < 0 ? (uint64_t)0 - (uint64_t)x : (uint64_t)x;
        if (x < 0) sign = "-";
        else if (f->sign == '+') sign = "+";
        else if (f->sign == ' ') sign = " ";
        if (t == 'd') snprintf(buf, sizeof buf, "%llu", (unsigned long long)u);
        else if (t == 'x') snprintf(buf, sizeof buf, "%s%llx", f->alt ? "0x" : "", (unsigned long long)u);
        else if (t == 'X') snprintf(buf, sizeof buf, "%s%llX", f->alt ? "0X" : "", (unsigned long long)u);
        else if (t == 'o') snprintf(buf, sizeof buf, "%s%llo", f->alt ? "0o" : "", (unsigned long long)u);
        else {
            char bits[80];
            int k = 0;
            do bits[k++] = (char)('0' + (u & 1)); while ((u >>= 1) && k < 70);
            size_t o = 0;
            if (f->alt) buf[o++] = '0', buf[o++] = 'b';
            while (k) buf[o++] = bits[--k];
            buf[o] = 0;
        }
        if (f->group && t == 'd') group_digits(&body, buf, strlen(buf), f->group);
        else sgl_strbuf_puts(&body, buf);
    } else if (!t && v.type == VM_INT) {
        int64_t x = v.as.i;
        uint64_t u = x < 0 ? (uint64_t)0 - (uint64_t)x : (uint64_t)x;
        sign = x < 0 ? "-" : f->sign == '+' ? "+" : f->sign == ' ' ? " " : "";
        snprintf(buf, sizeof buf, "%llu", (unsigned long long)u);
        if (f->group) group_digits(&body, buf, strlen(buf), f->group);
        else sgl_strbuf_puts(&body, buf);
    } else {
        double x = v.type == VM_INT ? (double)v.as.i : v.as.f;
        bool neg = signbit(x) && !isnan(x);
        double ax = fabs(x);
        sign = neg ? "-" : f->sign == '+' ? "+" : f->sign == ' ' ? " " : "";
        int p = f->precision;
        if (t == '%') {
            snprintf(buf, sizeof buf, "%.*f%%", p < 0 ? 6 : p, ax * 100);
        } else if (t) {
            char fmt[8] = {'%', '.', '*', t == 'F' ? 'f' : t, 0};
            snprintf(buf, sizeof buf, fmt, p < 0 ? 6 : p, ax);
        } else if (p >= 0) {
            snprintf(buf, sizeof buf, "%.*g", p ? p : 1, ax);
        } else {
            sgl_strbuf s = {0};
            vm_str_append(&s, vm_float(ax));
            snprintf(buf, sizeof buf, "%s", s.data ? s.data : "");
            sgl_strbuf_free(&s);
        }
        if (f->group) group_digits(&body, buf, strlen(buf), f->group);
        else sgl_strbuf_puts(&body, buf);
    }
    emit_padded(sb, f, sign, body.data ? body.data : "", body.len, '>');
    sgl_strbuf_free(&body);
    return 0;
}

/* ---- slices ---------------------------------------------------------------------- */

static int bound(vm_value b, int64_t len, int64_t dflt, int64_t *out, sgl_error *err) {
    if (b.type == VM_NONE) {
        *out = dflt;
        return 0;
    }
    if (b.type != VM_INT) return sgl_error_set(err, "slice bounds must be ints, not %s", vm_type_name(b.type));
    int64_t x = b.as.i;
    if (x < 0) x += len;
    *out = x < 0 ? 0 : x > len ? len : x;
    return 0;
}

static int do_slice(const vm_value *args, uint32_t n, vm_value *res, sgl_error *err) {
    vm_value x = args[0];
    if (x.type != VM_STR && x.type != VM_LIST)
        return sgl_error_set(err, "cannot slice a %s (only strings and lists)", vm_type_name(x.type));
    int64_t len = x.type == VM_STR ? (int64_t)vm_str_len(x) : (int64_t)vm_list_len(x), a = 0, b = 0;
    if (bound(args[1], len, 0, &a, err) < 0 || bound(n > 2 ? args[2] : vm_none(), len, len, &b, err) < 0) return -1;
    if (b < a) b = a;
    if (x.type == VM_STR) {
        *res = vm_str_new(vm_str_cstr(x) + a, (size_t)(b - a));
        return 0;
    }
    vm_value l = vm_list_new((uint32_t)(b - a));
    for (int64_t i = a; i < b; i++) vm_list_push(l, vm_retain(vm_list_get(x, (uint32_t)i)));
    *res = l;
    return 0;
}

/* ---- strings --------------------------------------------------------------------- */

static int do_replace(const vm_value *args, vm_value *res, sgl_error *err) {
    for (int i = 0; i < 3; i++)
        if (want_str("replace", args[i], i, err) < 0) return -1;
    const char *s = vm_str_cstr(args[0]), *old = vm_str_cstr(args[1]), *nw = vm_str_cstr(args[2]);
    size_t n = vm_str_len(args[0]), on = vm_str_len(args[1]), nn = vm_str_len(args[2]);
    if (on == 0) return sgl_error_set(err, "replace(): the text to replace must not be empty");
    sgl_strbuf sb = {0};
    size_t i = 0;
    for (const char *p; (p = memmem(s + i, n - i, old, on));) {
        sgl_strbuf_append(&sb, s + i, (size_t)(p - (s + i)));
        sgl_strbuf_append(&sb, nw, nn);
        i = (size_t)(p - s) + on;
    }
    sgl_strbuf_append(&sb, s + i, n - i);
    *res = vm_str_take(&sb);
    return 0;
}

static int do_join(const vm_value *args, vm_value *res, sgl_error *err) {
    if (want_str("join", args[0], 0, err) < 0) return -1;
    if (args[1].type != VM_LIST)
        return sgl_error_set(err, "join(): argument 2 must be a list of strings, not %s", vm_type_name(args[1].type));
    sgl_strbuf sb = {0};
    for (uint32_t i = 0; i < vm_list_len(args[1]); i++) {
        vm_value it = vm_list_get(args[1], i);
        if (it.type != VM_STR) {
            sgl_strbuf_free(&sb);
            return sgl_error_set(err, "join(): item %u is a %s, not a string", i, vm_type_name(it.type));
        }
        if (i) sgl_strbuf_append(&sb, vm_str_cstr(args[0]), vm_str_len(args[0]));
        sgl_strbuf_append(&sb, vm_str_cstr(it), vm_str_len(it));
    }
    *res = vm_str_take(&sb);
    if (res->type == VM_NONE) *res = vm_str_new("", 0);
    return 0;
}

/* index (first position, error when absent) and count (non-overlapping). */
static int do_find(bool count, const vm_value *args, vm_value *res, sgl_error *err) {
    const char *fn = count ? "count" : "index";
    vm_value c = args[0], x = args[1];
    if (c.type == VM_LIST) {
        int64_t k = 0;
        for (uint32_t i = 0; i < vm_list_len(c); i++) {
            if (!vm_equal(vm_list_get(c, i), x)) continue;
            if (!count) {
                *res = vm_int(i);
                return 0;
            }
            k++;
        }
        if (count) {
            *res = vm_int(k);
            return 0;
        }
        sgl_strbuf sb = {0};
        vm_repr_append(&sb, x);
        char q[VM_QUOTE_CAP];
        vm_quote_buf(q, sizeof q, sb.data ? sb.data : "", sb.len, 60);
        /* repr text, shown unquoted: drop the quotes vm_quote_buf added */
        size_t ql = strlen(q);
        bool cut = ql >= 5 && !strcmp(q + ql - 3, "...");
        q[ql - (cut ? 4 : 1)] = 0;
        sgl_error_set(err, "index(): %s%s is not in the list", q + 1, cut ? "..." : "");
        sgl_strbuf_free(&sb);
        return -1;
    }
    if (c.type != VM_STR)
        return sgl_error_set(err, "%s(): argument 1 must be a string or a list, not %s", fn, vm_type_name(c.type));
    if (want_str(fn, x, 1, err) < 0) return -1;
    const char *s = vm_str_cstr(c), *sub = vm_str_cstr(x);
    size_t n = vm_str_len(c), sn = vm_str_len(x);
    if (!count) {
        const char *p = memmem(s, n, sub, sn);
        char q[VM_QUOTE_CAP];
        if (!p) return sgl_error_set(err, "index(): substring %s not found", vm_quote_buf(q, sizeof q, sub, sn, 60));
        *res = vm_int(p - s);
        return 0;
    }
    if (sn == 0) {
        *res = vm_int((int64_t)n + 1);
        return 0;
    }
    int64_t k = 0;
    for (size_t i = 0; i + sn <= n;) {
        const char *p = memmem(s + i, n - i, sub, sn);
        if (!p) break;
        k++;
        i = (size_t)(p - s) + sn;
    }
    *res = vm_int(k);
    return 0;
}

/* ---- regex ----------------------------------------------------------------------- */

/* Calls fn for each non-overlapping match of pattern in text, leftmost
 * first (POSIX leftmost-longest within a position). Returns 0 or -1. */
typedef void (*match_fn)(void *ctx, const char *text, size_t so, size_t eo);
static int each_match(const char *fnname, vm_value pat, vm_value text, match_fn fn, void *ctx, sgl_error *err) {
    if (want_str(fnname, pat, 0, err) < 0) return -1;
    regex_t re;
    if (vm_regex_compile(vm_str_cstr(pat), false, &re, err) < 0) return sgl_error_prefix(err, "%s()", fnname);
    const char *s = vm_str_cstr(text);
    size_t n = vm_str_len(text), i = 0;
    while (i <= n) {
        regmatch_t m;
        int flags = i > 0 ? REG_NOTBOL : 0;
        if (regexec(&re, s + i, 1, &m, flags) != 0) break;
        size_t so = i + (size_t)m.rm_so, eo = i + (size_t)m.rm_eo;
        fn(ctx, s, so, eo);
        i = eo > so ? eo : eo + 1;
    }
    regfree(&re);
    return 0;
}

static void collect_match(void *ctx, const char *text, size_t so, size_t eo) {
    vm_list_push(*(vm_value *)ctx, vm_str_new(text + so, eo - so));
}

typedef struct sub_ctx {
    sgl_strbuf sb;
    size_t done;
    const char *repl;
    size_t repl_len;
} sub_ctx;

static void sub_match(void *ctx, const char *text, size_t so, size_t eo) {
    sub_ctx *c = ctx;
    sgl_strbuf_append(&c->sb, text + c->done, so - c->done);
    sgl_strbuf_append(&c->sb, c->repl, c->repl_len);
    c->done = eo;
}

/* ---- math ------------------------------------------------------------------------ */

static int do_math(sgl_builtin b, const vm_value *args, uint32_t n, vm_value *res, sgl_error *err) {
    const char *fn = sgl_builtin_name(b);
    double x = 0;
    switch (b) {
    case SGL_BUILTIN_ABS:
        if (args[0].type == VM_INT) {
            if (args[0].as.i == INT64_MIN) return sgl_error_set(err, "abs(): integer overflow");
            *res = vm_int(args[0].as.i < 0 ? -args[0].as.i : args[0].as.i);
            return 0;
        }
        if (want_num(fn, args[0], 0, &x, err) < 0) return -1;
        *res = vm_float(fabs(x));
        return 0;
    case SGL_BUILTIN_EXP:
    case SGL_BUILTIN_LOG:
    case SGL_BUILTIN_SQRT:
        if (want_num(fn, args[0], 0, &x, err) < 0) return -1;
        if (b == SGL_BUILTIN_LOG && x <= 0) return sgl_error_set(err, "log(): math domain error (%g)", x);
        if (b == SGL_BUILTIN_SQRT && x < 0) return sgl_error_set(err, "sqrt(): math domain error (%g)", x);
        *res = vm_float(b == SGL_BUILTIN_EXP ? exp(x) : b == SGL_BUILTIN_LOG ? log(x) : sqrt(x));
        return 0;
    case SGL_BUILTIN_ROUND: {
        if (want_num(fn, args[0], 0, &x, err) < 0) return -1;
        if (n == 2 && args[1].type != VM_NONE) {
            if (args[1].type != VM_INT) return sgl_error_set(err, "round(): ndigits must be an int");
            double scale = pow(10.0, (double)args[1].as.i);
            double r = nearbyint(x * scale) / scale; /* ties to even, as Python */
            if (args[0].type == VM_INT) /* an int stays an int, as in Python */
                *res = args[1].as.i >= 0 ? args[0] : fabs(r) < 9.2e18 ? vm_int((int64_t)r) : vm_float(r);
            else
                *res = vm_float(r);
            return 0;
        }
        if (args[0].type == VM_INT) {
            *res = args[0];
            return 0;
        }
        double r = nearbyint(x);
        if (!isfinite(r) || fabs(r) >= 9.2e18) return sgl_error_set(err, "round(): %g cannot be converted to int", x);
        *res = vm_int((int64_t)r);
        return 0;
    }
    case SGL_BUILTIN_MIN:
    case SGL_BUILTIN_MAX: {
        const vm_value *items = args;
        uint32_t cnt = n;
        if (n == 1) {
            if (args[0].type != VM_LIST)
                return sgl_error_set(err, "%s(): give a list or several values, not one %s", fn, vm_type_name(args[0].type));
            items = args[0].as.l->len ? &args[0].as.l->items[0] : NULL;
            cnt = args[0].as.l->len;
        }
        if (cnt == 0) return sgl_error_set(err, "%s(): empty list", fn);
        vm_value best = items[0];
        for (uint32_t i = 1; i < cnt; i++) {
            bool less;
            if (vm_compare(SGL_OP_LT, items[i], best, &less, err) < 0) return sgl_error_prefix(err, "%s()", fn);
            bool better = b == SGL_BUILTIN_MIN ? less : false;
            if (b == SGL_BUILTIN_MAX && vm_compare(SGL_OP_GT, items[i], best, &better, err) < 0)
                return sgl_error_prefix(err, "%s()", fn);
            if (better) best = items[i];
        }
        *res = vm_retain(best);
        return 0;
    }
    default: return -2;
    }
}

int vm_builtin_ext(sgl_builtin b, const vm_value *args, uint32_t n, vm_value *res, sgl_error *err) {
    *res = vm_none();
    switch (b) {
    case SGL_BUILTIN_FORMAT: {
        if (want_str("format", args[1], 1, err) < 0) return -1;
        sgl_fmt_spec f;
        size_t at;
        const char *why;
        char q[VM_QUOTE_CAP];
        if (sgl_fmt_spec_parse(vm_str_cstr(args[1]), vm_str_len(args[1]), &f, &at, &why) < 0)
            return sgl_error_set(err, "format(): bad format spec %s: %s",
                                 vm_quote_buf(q, sizeof q, vm_str_cstr(args[1]), vm_str_len(args[1]), 60), why);
        sgl_strbuf sb = {0};
        if (format_value(&sb, args[0], &f, err) < 0) {
            sgl_strbuf_free(&sb);
            return -1;
        }
        *res = vm_str_take(&sb);
        if (res->type == VM_NONE) *res = vm_str_new("", 0);
        return 0;
    }
    case SGL_BUILTIN_REPR: {
        sgl_strbuf sb = {0};
        vm_repr_append(&sb, args[0]);
        *res = vm_str_take(&sb);
        return 0;
    }
    case SGL_BUILTIN_SLICE: return do_slice(args, n, res, err);
    case SGL_BUILTIN_REPLACE: return do_replace(args, res, err);
    case SGL_BUILTIN_JOIN: return do_join(args, res, err);
    case SGL_BUILTIN_INDEX: return do_find(false, args, res, err);
    case SGL_BUILTIN_COUNT: return do_find(true, args, res, err);
    case SGL_BUILTIN_UPPER: {
        if (want_str("upper", args[0], 0, err) < 0) return -1;
        vm_value s = vm_str_new(vm_str_cstr(args[0]), vm_str_len(args[0]));
        if (s.type != VM_STR) return sgl_error_set(err, "out of memory");
        char *p = (char *)vm_str_cstr(s);
        for (size_t i = 0; i < vm_str_len(s); i++)
            if (p[i] >= 'a' && p[i] <= 'z') p[i] = (char)(p[i] - 32);
        *res = s;
        return 0;
    }
    case SGL_BUILTIN_REGEX_FIND_ALL: {
        if (want_str("regex_find_all", args[1], 1, err) < 0) return -1;
        vm_value l = vm_list_new(0);
        if (each_match("regex_find_all", args[0], args[1], collect_match, &l, err) < 0) {
            vm_release(l);
            return -1;
        }
        *res = l;
        return 0;
    }
    case SGL_BUILTIN_REGEX_SUB: {
        if (want_str("regex_sub", args[1], 1, err) < 0 || want_str("regex_sub", args[2], 2, err) < 0) return -1;
        sub_ctx c = {.repl = vm_str_cstr(args[1]), .repl_len = vm_str_len(args[1])};
        if (each_match("regex_sub", args[0], args[2], sub_match, &c, err) < 0) {
            sgl_strbuf_free(&c.sb);
            return -1;
        }
        sgl_strbuf_append(&c.sb, vm_str_cstr(args[2]) + c.done, vm_str_len(args[2]) - c.done);
        *res = vm_str_take(&c.sb);
        if (res->type == VM_NONE) *res = vm_str_new("", 0);
        return 0;
    }
    default: return do_math(b, args, n, res, err);
    }
}
