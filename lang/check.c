/* check.c: name resolution and the static checks run before anything
 * executes (docs/language.md "Checks"). Fills the "checker:" fields of the
 * AST: NAME bindings and frame slots, LET/FOR slots, fn frame sizes and
 * flags, call kinds and argument binding, loop targets of break/continue,
 * with-block roles.
 *
 * Scopes: each fn (and main) has one frame; params take slots 0..n-1 and
 * every let/for variable gets the next slot (slots are never reused, so a
 * slot names one variable for the whole frame). Lookup goes innermost block
 * scope outwards, then the module's own fn/const, then names imported from
 * other modules, then builtins. */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "lang/format.h"
#include "lang/lang_int.h"
#include "runtime/constrain/constrain.h"

typedef struct sym {
    const char *name;
    sgl_node *decl;     /* FN/CONST/LET/FOR/PARAM node */
    sgl_bind_kind kind;
    int32_t slot;
    uint32_t module;
} sym;

typedef struct symvec {
    sym *items;
    size_t len, cap;
} symvec;

static void symvec_push(symvec *v, sym s) {
    if (v->len == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 16;
        sym *items = realloc(v->items, cap * sizeof *items);
        if (!items) return;
        v->items = items;
        v->cap = cap;
    }
    v->items[v->len++] = s;
}

static sym *symvec_find(symvec *v, size_t from, const char *name) {
    for (size_t i = v->len; i > from; i--)
        if (!strcmp(v->items[i - 1].name, name)) return &v->items[i - 1];
    return NULL;
}

typedef struct checker {
    sgl_program *p;
    uint32_t mi;          /* current module */
    symvec *globals;      /* per module: own fn/const */
    symvec *imports;      /* per module: names imported */
    /* current frame */
    symvec locals;
    size_t scope_start[LANG_MAX_NESTING + 8];
    int n_scopes;
    uint32_t n_slots;
    sgl_node *fn;         /* current FN, or NULL in main / const */
    sgl_node *loops[LANG_MAX_NESTING + 8];
    int n_loops;
    sgl_node **lets;      /* LET nodes of the frame, for unused warnings */
    size_t n_lets, cap_lets;
    const sgl_node *const_decl; /* checking this CONST's initializer */
    const sgl_node **cons_seen; /* CONST nodes already compiled as a constraint */
    size_t n_cons_seen, cap_cons_seen;
} checker;

static sgl_diag *err(checker *c, sgl_loc loc, const char *fmt, ...) SGL_PRINTF(3, 4);
static sgl_diag *err(checker *c, sgl_loc loc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    sgl_diag *d = lang_vdiag(c->p, SGL_DIAG_ERROR, true, loc, fmt, ap);
    va_end(ap);
    return d;
}

static void warn(checker *c, sgl_loc loc, const char *fmt, ...) SGL_PRINTF(3, 4);
static void warn(checker *c, sgl_loc loc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    lang_vdiag(c->p, SGL_DIAG_WARNING, true, loc, fmt, ap);
    va_end(ap);
}

static void note(checker *c, sgl_diag *after, sgl_loc loc, const char *fmt, ...) SGL_PRINTF(4, 5);
static void note(checker *c, sgl_diag *after, sgl_loc loc, const char *fmt, ...) {
    if (!after) return;
    va_list ap;
    va_start(ap, fmt);
    lang_vdiag(c->p, SGL_DIAG_NOTE, true, loc, fmt, ap);
    va_end(ap);
}

static sgl_loc decl_name_loc(const sgl_node *d) {
    switch (d->kind) {
    case SGL_AST_FN: return d->fn.name_loc;
    case SGL_AST_CONST:
    case SGL_AST_LET: return d->decl.name_loc;
    case SGL_AST_FOR: return d->for_.name_loc;
    default: return d->loc;
    }
}

static const char *decl_name(const sgl_node *d) {
    switch (d->kind) {
    case SGL_AST_FN: return d->fn.name;
    case SGL_AST_CONST:
    case SGL_AST_LET: return d->decl.name;
    case SGL_AST_FOR: return d->for_.name;
    case SGL_AST_PARAM: return d->param.name;
    default: return "?";
    }
}

/* ---- did you mean ---- */

static size_t edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 32 || lb > 32) return 99;
    size_t row[33];
    for (size_t j = 0; j <= lb; j++) row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t prev = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cur = row[j];
            size_t best = prev + (a[i - 1] != b[j - 1]);
            if (row[j] + 1 < best) best = row[j] + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            prev = cur;
        }
    }
    return row[lb];
}

static void consider(const char *name, const char *cand, const char **best, size_t *bestd) {
    size_t d = edit_distance(name, cand);
    if (strlen(name) < 3) return;
    size_t limit = strlen(name) <= 4 ? 1 : 2;
    if (d > 0 && d <= limit && d < *bestd) {
        *best = cand;
        *bestd = d;
    }
}

static const char *suggest_name(checker *c, const char *name) {
    const char *best = NULL;
    size_t bestd = 99;
    for (size_t i = 0; i < c->locals.len; i++) consider(name, c->locals.items[i].name, &best, &bestd);
    for (size_t i = 0; i < c->globals[c->mi].len; i++)
        consider(name, c->globals[c->mi].items[i].name, &best, &bestd);
    for (size_t i = 0; i < c->imports[c->mi].len; i++)
        consider(name, c->imports[c->mi].items[i].name, &best, &bestd);
    for (int b = 0; b < SGL_BUILTIN__COUNT; b++) consider(name, sgl_builtin_name((sgl_builtin)b), &best, &bestd);
    return best;
}

/* ---- scopes ---- */

static void scope_open(checker *c) {
    if (c->n_scopes < (int)SGL_ARRAY_LEN(c->scope_start)) c->scope_start[c->n_scopes] = c->locals.len;
    c->n_scopes++;
}

static void scope_close(checker *c) {
    c->n_scopes--;
    if (c->n_scopes < (int)SGL_ARRAY_LEN(c->scope_start)) c->locals.len = c->scope_start[c->n_scopes];
}

static void declare_local(checker *c, const char *name, sgl_loc name_loc, sgl_node *decl, sgl_bind_kind kind,
                          int32_t *slot_out) {
    size_t from = c->n_scopes > 0 && c->n_scopes <= (int)SGL_ARRAY_LEN(c->scope_start)
                      ? c->scope_start[c->n_scopes - 1]
                      : 0;
    sym *prev = symvec_find(&c->locals, from, name);
    if (prev && strcmp(name, "_") != 0) {
        sgl_diag *d = err(c, name_loc, "'%s' is already defined in this scope", name);
        note(c, d, decl_name_loc(prev->decl), "previously defined here");
    }
    int32_t slot = (int32_t)c->n_slots++;
    if (slot_out) *slot_out = slot;
    symvec_push(&c->locals, (sym){name, decl, kind, slot, c->mi});
}

/* Resolves name; returns false if undefined. */
static bool lookup(checker *c, const char *name, sgl_binding *b) {
    memset(b, 0, sizeof *b);
    b->slot = -1;
    sym *s = symvec_find(&c->locals, 0, name);
    if (!s) s = symvec_find(&c->globals[c->mi], 0, name);
    if (!s) s = symvec_find(&c->imports[c->mi], 0, name);
    if (s) {
        b->kind = s->kind;
        b->slot = s->slot;
        b->decl = s->decl;
        b->module = s->module;
        return true;
    }
    int bi = sgl_builtin_lookup(name);
    if (bi >= 0) {
        b->kind = SGL_BIND_BUILTIN;
        b->builtin = (sgl_builtin)bi;
        return true;
    }
    return false;
}

/* ---- literals ---- */

static bool is_literal(const sgl_node *n) {
    switch (n->kind) {
    case SGL_AST_NONE: case SGL_AST_BOOL: case SGL_AST_INT: case SGL_AST_FLOAT: case SGL_AST_STRING:
    case SGL_AST_FSTRING: case SGL_AST_LIST: case SGL_AST_MAP:
        return true;
    case SGL_AST_UNARY:
        return n->unary.op == SGL_OP_NEG &&
               (n->unary.operand->kind == SGL_AST_INT || n->unary.operand->kind == SGL_AST_FLOAT);
    default:
        return false;
    }
}

static const char *literal_what(const sgl_node *n) {
    switch (n->kind) {
    case SGL_AST_NONE: return "none";
    case SGL_AST_BOOL: return "a bool";
    case SGL_AST_INT: return "an integer";
    case SGL_AST_FLOAT: return "a float";
    case SGL_AST_STRING:
    case SGL_AST_FSTRING: return "a string";
    case SGL_AST_LIST: return "a list";
    case SGL_AST_MAP: return "a map";
    case SGL_AST_UNARY: return n->unary.operand->kind == SGL_AST_INT ? "an integer" : "a float";
    default: return "an expression";
    }
}

/* Numeric literal value; returns false if n is not one. */
static bool num_value(const sgl_node *n, double *v, bool *is_int) {
    double sign = 1;
    if (n->kind == SGL_AST_UNARY && n->unary.op == SGL_OP_NEG) {
        sign = -1;
        n = n->unary.operand;
    }
    if (n->kind == SGL_AST_INT) {
        *v = sign * (double)n->integer;
        *is_int = true;
        return true;
    }
    if (n->kind == SGL_AST_FLOAT) {
        *v = sign * n->real;
        *is_int = false;
        return true;
    }
    return false;
}

static void fmt_num(char *buf, size_t n, double v) {
    snprintf(buf, n, "%.15g", v);
}

static void check_range(checker *c, const sgl_node *v, const char *fn, const sgl_kwarg_info *k, double x) {
    char a[32], b[32], g[32];
    fmt_num(g, sizeof g, x);
    bool lo_ok = isnan(k->lo) || x >= k->lo, hi_ok = isnan(k->hi) || x <= k->hi;
    if (lo_ok && hi_ok) return;
    fmt_num(a, sizeof a, k->lo);
    fmt_num(b, sizeof b, k->hi);
    if (!isnan(k->lo) && !isnan(k->hi))
        err(c, v->loc, "%s(): %s must be between %s and %s (got %s)", fn, k->name, a, b, g);
    else if (!isnan(k->lo))
        err(c, v->loc, "%s(): %s must be >= %s (got %s)", fn, k->name, a, g);
    else
        err(c, v->loc, "%s(): %s must be <= %s (got %s)", fn, k->name, b, g);
}

/* Location of byte off of string literal s's value (its last byte when the
 * offset is past the end). */
static sgl_loc string_loc(checker *c, const sgl_node *s, size_t off) {
    uint32_t at = lang_string_src_offset(c->p, s, off);
    sgl_loc loc = {s->loc.file, at, at + 1};
    if (at >= s->loc.end) loc = (sgl_loc){s->loc.file, s->loc.end > 0 ? s->loc.end - 1 : 0, s->loc.end};
    return loc;
}

/* regex_match's pattern: checked with lang/regex.c, the dialect the
 * builtin runs (through POSIX extended regexes). */
static void check_regex_literal(checker *c, const sgl_node *s) {
    if (s->kind != SGL_AST_STRING) return;
    size_t off = 0;
    const char *msg = NULL;
    if (sgl_regex_check(s->str.bytes, s->str.len, &off, &msg) == 0) return;
    err(c, string_loc(c, s, off), "invalid regex: %s (at offset %zu of the pattern)", msg, off);
}

/* ---- JSON pointers inside a schema string --------------------------------- */

static size_t js_ws(const char *t, size_t n, size_t i) {
    while (i < n && (t[i] == ' ' || t[i] == '\t' || t[i] == '\n' || t[i] == '\r')) i++;
    return i;
}

/* End of the JSON string starting at t[i] == '"' (just past its closing
 * quote), or n. */
static size_t js_string_end(const char *t, size_t n, size_t i) {
    for (i++; i < n; i++) {
        if (t[i] == '\\') i++;
        else if (t[i] == '"') return i + 1;
    }
    return n;
}

/* End of the JSON value starting at t[i] (strings and brackets balanced). */
static size_t js_value_end(const char *t, size_t n, size_t i) {
    int depth = 0;
    for (; i < n; i++) {
        char ch = t[i];
        if (ch == '"') {
            i = js_string_end(t, n, i) - 1;
            if (depth == 0) return i + 1;
        } else if (ch == '{' || ch == '[') {
            depth++;
        } else if (ch == '}' || ch == ']') {
            if (--depth <= 0) return i + 1;
        } else if (depth == 0 && (ch == ',' || ch == ' ' || ch == '\n' || ch == '\t' || ch == '\r')) {
            return i;
        }
    }
    return n;
}

/* Reads the JSON-pointer segment after the '/' at ptr into seg (unescaping
 * ~0 and ~1, cut to cap - 1 bytes) and returns where the next one starts. */
static const char *pointer_segment(const char *ptr, char *seg, size_t cap) {
    size_t k = 0;
    for (ptr++; *ptr && *ptr != '/'; ptr++) {
        char ch = *ptr;
        if (ch == '~' && (ptr[1] == '0' || ptr[1] == '1')) ch = *++ptr == '0' ? '~' : '/';
        if (k + 1 < cap) seg[k++] = ch;
    }
    seg[k] = 0;
    return ptr;
}

/* Byte offset in the JSON text t[0..n) of what pointer ("/properties/a/x")
 * names: the key of the last object member it goes through, or the array
 * item; the deepest place reached when the text does not follow the pointer
 * (keys with escapes are compared as written). */
static size_t json_pointer_offset(const char *t, size_t n, const char *ptr) {
    size_t at = js_ws(t, n, 0), here = at;
    while (*ptr == '/' && at < n) {
        char seg[256];
        ptr = pointer_segment(ptr, seg, sizeof seg);
        size_t k = strlen(seg);
        bool found = false;
        if (t[at] == '{') {
            size_t i = js_ws(t, n, at + 1);
            while (i < n && t[i] == '"' && !found) {
                size_t kend = js_string_end(t, n, i);
                size_t vstart = js_ws(t, n, js_ws(t, n, kend) + 1); /* past ':' */
                if (kend - i - 2 == k && !memcmp(t + i + 1, seg, k)) {
                    here = i;
                    at = vstart;
                    found = true;
                } else {
                    i = js_ws(t, n, js_value_end(t, n, vstart));
                    if (i < n && t[i] == ',') i = js_ws(t, n, i + 1);
                }
            }
        } else if (t[at] == '[') {
            char *end;
            unsigned long idx = strtoul(seg, &end, 10);
            size_t i = js_ws(t, n, at + 1);
            for (unsigned long j = 0; *seg && !*end && i < n && t[i] != ']'; j++) {
                if (j == idx) {
                    here = at = i;
                    found = true;
                    break;
                }
                i = js_ws(t, n, js_value_end(t, n, i));
                if (i < n && t[i] == ',') i = js_ws(t, n, i + 1);
            }
        }
        if (!found) break;
    }
    return here;
}

/* Compiles a literal constraint string with the constraint compiler (the
 * program stays in its cache, so the run does not compile it again) and
 * reports a failure at the offending character inside the string. */
static void check_constraint_string(checker *c, const sgl_node *s, cons_kind kind) {
    if (s->kind != SGL_AST_STRING) return;
    cons_diag d;
    memset(&d, 0, sizeof d);
    cons_program *prog = cons_compile_cached(kind, s->str.bytes, s->str.len, NULL, &d);
    if (prog) {
        cons_program_release(prog);
        return;
    }
    sgl_loc loc = d.offset >= 0 ? string_loc(c, s, (size_t)d.offset) : s->loc;
    if (d.offset < 0 && kind == CONS_JSON_SCHEMA && d.pointer[0])
        loc = string_loc(c, s, json_pointer_offset(s->str.bytes, s->str.len, d.pointer));
    if (kind == CONS_REGEX && d.offset >= 0)
        err(c, loc, "invalid regex: %s (at offset %d of the pattern)", d.message, d.offset);
    else if (kind == CONS_GRAMMAR && d.line > 0)
        err(c, loc, "invalid grammar: %s (line %d, column %d of the grammar)", d.message, d.line, d.col);
    else if (d.pointer[0])
        err(c, loc, "invalid %s: %s (at %s)", cons_kind_name(kind), d.message, d.pointer);
    else
        err(c, loc, "invalid %s: %s", cons_kind_name(kind), d.message);
}

static void json_string(sgl_strbuf *sb, const char *b, size_t n) {
    sgl_strbuf_putc(sb, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)b[i];
        if (ch == '"' || ch == '\\') {
            sgl_strbuf_putc(sb, '\\');
            sgl_strbuf_putc(sb, (char)ch);
        } else if (ch < 0x20) {
            sgl_strbuf_printf(sb, "\\u%04x", ch);
        } else {
            sgl_strbuf_putc(sb, (char)ch);
        }
    }
    sgl_strbuf_putc(sb, '"');
}

/* Writes a literal (map, list, string, number, bool, none) as JSON. Returns
 * false when a part of it is not a literal (an f-string, an expression). */
static bool literal_json(const sgl_node *n, sgl_strbuf *sb) {
    double x;
    bool is_int;
    switch (n->kind) {
    case SGL_AST_NONE: sgl_strbuf_puts(sb, "null"); return true;
    case SGL_AST_BOOL: sgl_strbuf_puts(sb, n->boolean ? "true" : "false"); return true;
    case SGL_AST_STRING: json_string(sb, n->str.bytes, n->str.len); return true;
    case SGL_AST_LIST:
    case SGL_AST_MAP:
        sgl_strbuf_putc(sb, n->kind == SGL_AST_LIST ? '[' : '{');
        for (uint32_t i = 0; i < n->list.items.len; i++) {
            const sgl_node *it = n->list.items.items[i];
            if (i) sgl_strbuf_putc(sb, ',');
            if (n->kind == SGL_AST_MAP) {
                if (it->kind != SGL_AST_PAIR || it->pair.key->kind != SGL_AST_STRING) return false;
                json_string(sb, it->pair.key->str.bytes, it->pair.key->str.len);
                sgl_strbuf_putc(sb, ':');
                it = it->pair.value;
            }
            if (!literal_json(it, sb)) return false;
        }
        sgl_strbuf_putc(sb, n->kind == SGL_AST_LIST ? ']' : '}');
        return true;
    default:
        if (!num_value(n, &x, &is_int)) return false;
        if (is_int) sgl_strbuf_printf(sb, "%lld", (long long)x);
        else sgl_strbuf_printf(sb, "%.17g", x);
        return true;
    }
}

/* The node a JSON pointer ("/properties/a/format") names inside a literal
 * map: the key of the last map member it goes through (so an unsupported
 * keyword is underlined), or the list item; the deepest node reached when the
 * pointer goes beyond the literal. */
static const sgl_node *pointer_node(const sgl_node *n, const char *ptr) {
    const sgl_node *at = n;
    while (*ptr == '/') {
        char seg[256];
        ptr = pointer_segment(ptr, seg, sizeof seg);
        size_t k = strlen(seg);
        const sgl_node *next = NULL, *key = NULL;
        if (n->kind == SGL_AST_MAP) {
            for (uint32_t i = 0; i < n->list.items.len && !next; i++) {
                const sgl_node *pr = n->list.items.items[i];
                if (pr->kind == SGL_AST_PAIR && pr->pair.key->kind == SGL_AST_STRING &&
                    pr->pair.key->str.len == k && !memcmp(pr->pair.key->str.bytes, seg, k)) {
                    next = pr->pair.value;
                    key = pr->pair.key;
                }
            }
        } else if (n->kind == SGL_AST_LIST) {
            char *end;
            unsigned long idx = strtoul(seg, &end, 10);
            if (*seg && !*end && idx < n->list.items.len) next = key = n->list.items.items[idx];
        }
        if (!next) return at;
        at = key;
        n = next;
    }
    return at;
}

/* json_schema=: a string literal or a literal map, compiled as a schema. */
static void check_schema_literal(checker *c, const sgl_node *v) {
    if (v->kind == SGL_AST_STRING) {
        check_constraint_string(c, v, CONS_JSON_SCHEMA);
        return;
    }
    if (v->kind != SGL_AST_MAP) return;
    sgl_strbuf sb = {0};
    if (!literal_json(v, &sb) || !sb.data) {
        sgl_strbuf_free(&sb);
        return; /* not all literal: checked when the request is made */
    }
    cons_diag d;
    memset(&d, 0, sizeof d);
    cons_program *prog = cons_compile_cached(CONS_JSON_SCHEMA, sb.data, sb.len, NULL, &d);
    sgl_strbuf_free(&sb);
    if (prog) {
        cons_program_release(prog);
        return;
    }
    const sgl_node *at = d.pointer[0] ? pointer_node(v, d.pointer) : v;
    if (d.pointer[0]) err(c, at->loc, "invalid json_schema: %s (at %s)", d.message, d.pointer);
    else err(c, at->loc, "invalid json_schema: %s", d.message);
}

static bool str_is(const sgl_node *n, const char *s) {
    return n->kind == SGL_AST_STRING && n->str.len == strlen(s) && !memcmp(n->str.bytes, s, n->str.len);
}

/* A constraint argument that names a const: the const's initializer when it
 * is a literal seen here for the first time (so each const's constraint is
 * compiled, and reported, once), else NULL. */
static const sgl_node *constraint_const(checker *c, const sgl_node *v) {
    sgl_binding b;
    if (!lookup(c, v->name.name, &b) || b.kind != SGL_BIND_CONST || !b.decl || !b.decl->decl.value)
        return NULL;
    for (size_t i = 0; i < c->n_cons_seen; i++)
        if (c->cons_seen[i] == b.decl) return NULL;
    if (c->n_cons_seen == c->cap_cons_seen) {
        size_t cap = c->cap_cons_seen ? c->cap_cons_seen * 2 : 8;
        const sgl_node **n = realloc(c->cons_seen, cap * sizeof *n);
        if (!n) return NULL;
        c->cons_seen = n;
        c->cap_cons_seen = cap;
    }
    c->cons_seen[c->n_cons_seen++] = b.decl;
    const sgl_node *init = b.decl->decl.value;
    return is_literal(init) ? init : NULL;
}

/* Checks a literal keyword argument value against its table entry. */
static void check_kwarg_value(checker *c, const char *fn, const sgl_kwarg_info *k, const sgl_node *v) {
    if (v->kind == SGL_AST_NAME &&
        (k->type == SGL_KWT_REGEX || k->type == SGL_KWT_MAP_OR_STR || k->type == SGL_KWT_GRAMMAR)) {
        v = constraint_const(c, v);
        if (!v) return;
    }
    if (!is_literal(v)) return;
    double x;
    bool is_int;
    switch (k->type) {
    case SGL_KWT_INT:
        if (!num_value(v, &x, &is_int) || !is_int) {
            err(c, v->loc, "%s(): %s must be an integer, not %s", fn, k->name, literal_what(v));
            return;
        }
        if (!strcmp(k->name, "top_k") && x == 0) {
            err(c, v->loc, "%s(): top_k must be -1 (no limit) or >= 1 (got 0)", fn);
            return;
        }
        check_range(c, v, fn, k, x);
        return;
    case SGL_KWT_FLOAT:
        if (!num_value(v, &x, &is_int)) {
            err(c, v->loc, "%s(): %s must be a number, not %s", fn, k->name, literal_what(v));
            return;
        }
        if (!strcmp(k->name, "top_p") && x == 0) {
            err(c, v->loc, "%s(): top_p must be greater than 0 and at most 1 (got 0)", fn);
            return;
        }
        check_range(c, v, fn, k, x);
        return;
    case SGL_KWT_BOOL:
        if (v->kind != SGL_AST_BOOL) err(c, v->loc, "%s(): %s must be true or false, not %s", fn, k->name, literal_what(v));
        return;
    case SGL_KWT_STR_OR_STR_LIST:
        if (v->kind == SGL_AST_STRING || v->kind == SGL_AST_FSTRING) return;
        if (v->kind == SGL_AST_LIST) {
            for (uint32_t i = 0; i < v->list.items.len; i++) {
                const sgl_node *it = v->list.items.items[i];
                if (is_literal(it) && it->kind != SGL_AST_STRING && it->kind != SGL_AST_FSTRING)
                    err(c, it->loc, "%s(): %s must hold strings, not %s", fn, k->name, literal_what(it));
            }
            return;
        }
        err(c, v->loc, "%s(): %s must be a string or a list of strings, not %s", fn, k->name, literal_what(v));
        return;
    case SGL_KWT_INT_LIST:
        if (v->kind != SGL_AST_LIST) {
            err(c, v->loc, "%s(): %s must be a list of integers, not %s", fn, k->name, literal_what(v));
            return;
        }
        for (uint32_t i = 0; i < v->list.items.len; i++) {
            const sgl_node *it = v->list.items.items[i];
            if (!is_literal(it)) continue;
            if (!num_value(it, &x, &is_int) || !is_int)
                err(c, it->loc, "%s(): %s must hold integers, not %s", fn, k->name, literal_what(it));
            else
                check_range(c, it, fn, k, x);
        }
        return;
    case SGL_KWT_STR_LIST:
        if (v->kind != SGL_AST_LIST) {
            err(c, v->loc, "%s(): %s must be a list of strings, not %s", fn, k->name, literal_what(v));
            return;
        }
        if (v->list.items.len == 0) err(c, v->loc, "%s(): %s must not be empty", fn, k->name);
        for (uint32_t i = 0; i < v->list.items.len; i++) {
            const sgl_node *it = v->list.items.items[i];
            if (is_literal(it) && it->kind != SGL_AST_STRING && it->kind != SGL_AST_FSTRING)
                err(c, it->loc, "%s(): %s must hold strings, not %s", fn, k->name, literal_what(it));
        }
        return;
    case SGL_KWT_DTYPE:
        if (!str_is(v, "int") && !str_is(v, "float") && !str_is(v, "bool")) {
            if (v->kind == SGL_AST_STRING)
                err(c, v->loc, "%s(): dtype must be \"int\", \"float\" or \"bool\" (got \"%s\")", fn, v->str.bytes);
            else if (v->kind != SGL_AST_FSTRING)
                err(c, v->loc, "%s(): dtype must be \"int\", \"float\" or \"bool\", not %s", fn, literal_what(v));
        }
        return;
    case SGL_KWT_REGEX:
        if (v->kind == SGL_AST_STRING)
            check_constraint_string(c, v, CONS_REGEX);
        else if (v->kind != SGL_AST_FSTRING)
            err(c, v->loc, "%s(): regex must be a string, not %s", fn, literal_what(v));
        return;
    case SGL_KWT_MAP_OR_STR:
        if (v->kind != SGL_AST_MAP && v->kind != SGL_AST_STRING && v->kind != SGL_AST_FSTRING)
            err(c, v->loc, "%s(): json_schema must be a map or a JSON string, not %s", fn, literal_what(v));
        else
            check_schema_literal(c, v);
        return;
    case SGL_KWT_GRAMMAR:
        if (v->kind == SGL_AST_STRING)
            check_constraint_string(c, v, CONS_GRAMMAR);
        else if (v->kind != SGL_AST_FSTRING)
            err(c, v->loc, "%s(): grammar must be a string, not %s", fn, literal_what(v));
        return;
    case SGL_KWT_METHOD:
        for (size_t i = 0; i < SGL_ARRAY_LEN(sgl_select_methods); i++)
            if (str_is(v, sgl_select_methods[i])) return;
        if (v->kind != SGL_AST_FSTRING)
            err(c, v->loc,
                "%s(): method must be \"token_length_normalized\", \"greedy_token_selection\" or "
                "\"unconditional_likelihood_normalized\"",
                fn);
        return;
    case SGL_KWT_JOIN_MODE:
        if (!str_is(v, "gather") && !str_is(v, "concat") && !str_is(v, "concate_and_append") &&
            v->kind != SGL_AST_FSTRING)
            err(c, v->loc, "%s(): mode must be \"gather\" or \"concat\" (SGLang: \"concate_and_append\")", fn);
        return;
    case SGL_KWT_STR:
        if (v->kind != SGL_AST_STRING && v->kind != SGL_AST_FSTRING)
            err(c, v->loc, "%s(): %s must be a string, not %s", fn, k->name, literal_what(v));
        return;
    }
}

/* ---- expressions ---- */

static void check_expr(checker *c, sgl_node *n, bool append);

static void check_const_expr(checker *c, sgl_node *n) {
    switch (n->kind) {
    case SGL_AST_NONE: case SGL_AST_BOOL: case SGL_AST_INT: case SGL_AST_FLOAT: case SGL_AST_STRING:
    case SGL_AST_ERROR:
        return;
    case SGL_AST_FSTRING:
    case SGL_AST_LIST:
    case SGL_AST_MAP: {
        sgl_node_list *l = n->kind == SGL_AST_FSTRING ? &n->fstr.parts : &n->list.items;
        for (uint32_t i = 0; i < l->len; i++) check_const_expr(c, l->items[i]);
        return;
    }
    case SGL_AST_PAIR:
        check_const_expr(c, n->pair.key);
        check_const_expr(c, n->pair.value);
        return;
    case SGL_AST_UNARY:
        check_const_expr(c, n->unary.operand);
        return;
    case SGL_AST_BINARY:
        check_const_expr(c, n->binary.lhs);
        check_const_expr(c, n->binary.rhs);
        return;
    case SGL_AST_INDEX:
        check_const_expr(c, n->index.obj);
        check_const_expr(c, n->index.index);
        return;
    case SGL_AST_NAME: {
        sgl_binding b;
        if (!lookup(c, n->name.name, &b)) {
            const char *s = suggest_name(c, n->name.name);
            if (s)
                err(c, n->loc, "undefined name '%s' (did you mean '%s'?)", n->name.name, s);
            else
                err(c, n->loc, "undefined name '%s'", n->name.name);
            return;
        }
        n->name.bind = b;
        if (b.kind != SGL_BIND_CONST) {
            err(c, n->loc, "a const initializer may only use literals, operators and other constants");
            return;
        }
        if (b.decl == c->const_decl ||
            (b.module == c->mi && b.decl->loc.start > c->const_decl->loc.start)) {
            sgl_diag *d = err(c, n->loc, "constant '%s' is used before its definition", n->name.name);
            note(c, d, decl_name_loc(b.decl), "'%s' is defined here", n->name.name);
        }
        b.decl->decl.n_reads++;
        return;
    }
    default:
        err(c, n->loc, "a const initializer may only use literals, operators and other constants");
        return;
    }
}

static void use_name(checker *c, sgl_node *n, bool as_callee) {
    if (n->name.bind.kind == SGL_BIND_BUILTIN && as_callee) return; /* bound by the syntax (f"{x:.2f}", s[a:b]) */
    sgl_binding b;
    if (!lookup(c, n->name.name, &b)) {
        const char *s = suggest_name(c, n->name.name);
        if (s)
            err(c, n->loc, "undefined name '%s' (did you mean '%s'?)", n->name.name, s);
        else
            err(c, n->loc, "undefined name '%s'", n->name.name);
        return;
    }
    n->name.bind = b;
    if (b.kind == SGL_BIND_LOCAL && b.decl->kind == SGL_AST_LET) b.decl->decl.n_reads++;
    if (b.kind == SGL_BIND_BUILTIN && !as_callee)
        err(c, n->loc, "builtin '%s' can only be called, not used as a value", n->name.name);
}

static const char *plural(int n) {
    return n == 1 ? "" : "s";
}

static void check_args_plain(checker *c, sgl_node *call, bool append) {
    for (uint32_t i = 0; i < call->call.args.len; i++) {
        sgl_node *a = call->call.args.items[i];
        check_expr(c, a->kind == SGL_AST_KWARG ? a->kwarg.value : a, append);
    }
}

static unsigned kwb_of(sgl_builtin b) {
    switch (b) {
    case SGL_BUILTIN_GEN: return SGL_KWB_GEN;
    case SGL_BUILTIN_SELECT: return SGL_KWB_SELECT;
    case SGL_BUILTIN_RUN_BATCH:
    case SGL_BUILTIN_RUN: return SGL_KWB_RUN_BATCH;
    case SGL_BUILTIN_JOIN: return SGL_KWB_JOIN;
    default: return 0;
    }
}

/* The keyword argument `name` (or one of its aliases) of call, or NULL. */
static sgl_node *find_kwarg(sgl_node *call, const char *name) {
    int id = sgl_kwarg_lookup(name);
    for (uint32_t i = call->call.n_positional; i < call->call.args.len; i++) {
        sgl_node *a = call->call.args.items[i];
        if (a->kind == SGL_AST_KWARG && (!strcmp(a->kwarg.name, name) || (id >= 0 && sgl_kwarg_lookup(a->kwarg.name) == id)))
            return a;
    }
    return NULL;
}

/* gen(name="v", ...) / select(name="v", ...): SGLang passes the variable
 * name by keyword; it becomes the first positional argument. */
static void name_kwarg_to_positional(checker *c, sgl_node *call) {
    sgl_node_list *args = &call->call.args;
    for (uint32_t i = call->call.n_positional; i < args->len; i++) {
        sgl_node *a = args->items[i];
        if (a->kind != SGL_AST_KWARG || strcmp(a->kwarg.name, "name") != 0) continue;
        if (call->call.n_positional > 0) {
            err(c, a->kwarg.name_loc, "the variable name is given both by position and as name=");
            return;
        }
        sgl_node *v = a->kwarg.value;
        memmove(&args->items[1], &args->items[0], i * sizeof args->items[0]);
        args->items[0] = v;
        call->call.n_positional = 1;
        return;
    }
}

static void check_builtin_call(checker *c, sgl_node *call, sgl_builtin b, bool append) {
    if (b == SGL_BUILTIN_GEN || b == SGL_BUILTIN_SELECT) name_kwarg_to_positional(c, call);
    const char *name = sgl_builtin_name(b);
    unsigned flags = sgl_builtin_flags(b);
    int mn, mx;
    sgl_builtin_arity(b, &mn, &mx);
    int np = (int)call->call.n_positional;
    call->call.call_kind = SGL_CALL_BUILTIN;
    call->call.builtin = b;

    if ((flags & SGL_BI_IO) && !c->p->opts.allow_io)
        err(c, call->loc, "%s() needs --allow-io (file, HTTP and shell access are off by default)", name);
    if (b == SGL_BUILTIN_IMAGE && !append)
        err(c, call->loc, "image() must be appended to a stream, as in s += user(image(path) + \"question\")");
    if ((flags & SGL_BI_GEN) && !append)
        err(c, call->loc, "%s() produces model output and must be appended to a stream, as in s += %s(...)", name,
            name);
    if (np < mn || (mx >= 0 && np > mx)) {
        if (mn == mx)
            err(c, call->loc, "%s() takes %d argument%s (got %d)", name, mn, plural(mn), np);
        else if (mx < 0)
            err(c, call->loc, "%s() takes at least %d argument%s (got %d)", name, mn, plural(mn), np);
        else
            err(c, call->loc, "%s() takes %d to %d arguments (got %d)", name, mn, mx, np);
    }

    /* Keyword arguments. */
    unsigned kwb = kwb_of(b);
    for (uint32_t i = call->call.n_positional; i < call->call.args.len; i++) {
        sgl_node *a = call->call.args.items[i];
        if (a->kind != SGL_AST_KWARG) continue;
        int kid = sgl_kwarg_lookup(a->kwarg.name);
        for (uint32_t j = call->call.n_positional; j < i; j++) {
            sgl_node *o = call->call.args.items[j];
            if (o->kind == SGL_AST_KWARG &&
                (!strcmp(o->kwarg.name, a->kwarg.name) || (kid >= 0 && sgl_kwarg_lookup(o->kwarg.name) == kid))) {
                sgl_diag *d = err(c, a->kwarg.name_loc, "%s(): keyword argument '%s' given twice", name, a->kwarg.name);
                note(c, d, o->kwarg.name_loc, "first given here");
                break;
            }
        }
        int k = sgl_kwarg_lookup(a->kwarg.name);
        const sgl_kwarg_info *ki = k >= 0 ? sgl_kwarg_get((sgl_kwarg_id)k) : NULL;
        if (!kwb) {
            err(c, a->kwarg.name_loc, "%s() takes no keyword arguments", name);
            continue;
        }
        if (!ki || !(ki->accepted_by & kwb)) {
            const char *best = NULL;
            size_t bestd = 99;
            for (int q = 0; q < SGL_KWARG__COUNT; q++)
                if (sgl_kwarg_get((sgl_kwarg_id)q)->accepted_by & kwb)
                    consider(a->kwarg.name, sgl_kwarg_get((sgl_kwarg_id)q)->name, &best, &bestd);
            sgl_kwarg_id aid;
            const char *alias;
            for (size_t q = 0; (alias = sgl_kwarg_alias(q, &aid)); q++)
                if (sgl_kwarg_get(aid)->accepted_by & kwb) consider(a->kwarg.name, alias, &best, &bestd);
            if (best)
                err(c, a->kwarg.name_loc, "%s() has no keyword argument '%s' (did you mean '%s'?)", name,
                    a->kwarg.name, best);
            else
                err(c, a->kwarg.name_loc, "%s() has no keyword argument '%s'", name, a->kwarg.name);
            continue;
        }
        if (k == SGL_KWARG_PARALLEL && str_is(a->kwarg.value, "auto")) continue; /* num_threads="auto" */
        check_kwarg_value(c, name, ki, a->kwarg.value);
    }

    /* Per-builtin rules on positional arguments. */
    sgl_node *const *pos = call->call.args.items;
    switch (b) {
    case SGL_BUILTIN_GEN:
    case SGL_BUILTIN_SELECT:
        if (np >= 1 && is_literal(pos[0]) && pos[0]->kind != SGL_AST_STRING && pos[0]->kind != SGL_AST_FSTRING &&
            pos[0]->kind != SGL_AST_NONE)
            err(c, pos[0]->loc, "%s(): the variable name must be a string, not %s", name, literal_what(pos[0]));
        if (b == SGL_BUILTIN_GEN) {
            static const char *const cons[] = {"regex", "json_schema", "grammar", "choices", "dtype"};
            sgl_node *first = NULL;
            for (size_t i = 0; i < SGL_ARRAY_LEN(cons); i++) {
                sgl_node *k = find_kwarg(call, cons[i]);
                if (!k) continue;
                if (first) {
                    err(c, k->loc, "gen(): '%s' and '%s' cannot be combined (one constraint per gen)",
                        first->kwarg.name, k->kwarg.name);
                    break;
                }
                first = k;
            }
        } else {
            sgl_node *kc = find_kwarg(call, "choices");
            if (np >= 2 && kc)
                err(c, kc->loc, "select(): choices given both by position and by keyword");
            else if (np < 2 && !kc && np >= 1)
                err(c, call->loc, "select() needs choices, as in select(\"name\", [\"a\", \"b\"])");
            else if (np >= 2)
                check_kwarg_value(c, name, sgl_kwarg_get(SGL_KWARG_CHOICES), pos[1]);
        }
        break;
    case SGL_BUILTIN_FORK:
        if (np >= 3)
            err(c, pos[2]->loc,
                "fork(): position_ids_offset is not supported: the engines place each branch's tokens right after "
                "the shared prefix");
        if (np >= 2 && is_literal(pos[1])) {
            double x;
            bool is_int;
            if (!num_value(pos[1], &x, &is_int) || !is_int)
                err(c, pos[1]->loc, "fork(): the branch count must be an integer, not %s", literal_what(pos[1]));
            else if (x < 1)
                err(c, pos[1]->loc, "fork(): the branch count must be >= 1 (got %.0f)", x);
        }
        break;
    case SGL_BUILTIN_RUN:
    case SGL_BUILTIN_RUN_BATCH:
        if (np >= 1) {
            sgl_node *f = pos[0];
            sgl_node *fn = NULL;
            if (f->kind == SGL_AST_NAME) {
                sgl_binding bb;
                if (lookup(c, f->name.name, &bb) && bb.kind == SGL_BIND_FN) fn = bb.decl;
                else if (lookup(c, f->name.name, &bb) && (bb.kind == SGL_BIND_CONST || bb.kind == SGL_BIND_BUILTIN))
                    err(c, f->loc, "run_batch(): the first argument must be an SGL function");
            } else if (is_literal(f)) {
                err(c, f->loc, "run_batch(): the first argument must be an SGL function, not %s", literal_what(f));
            }
            if (b == SGL_BUILTIN_RUN) {
                if (np >= 2 && is_literal(pos[1]) && pos[1]->kind != SGL_AST_LIST && pos[1]->kind != SGL_AST_MAP)
                    err(c, pos[1]->loc, "run(): the second argument must be a map of arguments or a list of them, not %s",
                        literal_what(pos[1]));
            } else if (np >= 2 && is_literal(pos[1]) && pos[1]->kind != SGL_AST_LIST)
                err(c, pos[1]->loc, "run_batch(): the second argument must be a list of argument maps, not %s",
                    literal_what(pos[1]));
            if (fn && np >= 2 && pos[1]->kind == SGL_AST_LIST) {
                sgl_node_list *items = &pos[1]->list.items;
                for (uint32_t i = 0; i < items->len; i++) {
                    sgl_node *m = items->items[i];
                    if (m->kind != SGL_AST_MAP) continue;
                    for (uint32_t j = 0; j < m->list.items.len; j++) {
                        sgl_node *key = m->list.items.items[j]->pair.key;
                        if (key->kind != SGL_AST_STRING) continue;
                        bool ok = false;
                        for (uint32_t q = 1; q < fn->fn.params.len; q++)
                            if (!strcmp(fn->fn.params.items[q]->param.name, key->str.bytes)) ok = true;
                        if (!ok) {
                            sgl_diag *d = err(c, key->loc, "run_batch(): '%s' is not a parameter of '%s'",
                                              key->str.bytes, fn->fn.name);
                            note(c, d, fn->fn.name_loc, "'%s' is defined here", fn->fn.name);
                        }
                    }
                }
            }
        }
        break;
    case SGL_BUILTIN_REGEX_MATCH:
    case SGL_BUILTIN_REGEX_FIND_ALL:
    case SGL_BUILTIN_REGEX_SUB:
        if (np >= 1) check_regex_literal(c, pos[0]);
        break;
    case SGL_BUILTIN_JOIN:
        if (np == 2 && call->call.args.len > 2)
            err(c, call->call.args.items[2]->loc, "join(sep, items) joins strings and takes no keyword arguments");
        break;
    case SGL_BUILTIN_FORMAT:
        if (np >= 2 && pos[1]->kind == SGL_AST_STRING) {
            sgl_fmt_spec f;
            size_t off = 0;
            const char *why = NULL;
            if (sgl_fmt_spec_parse(pos[1]->str.bytes, pos[1]->str.len, &f, &off, &why) < 0) {
                uint32_t at = lang_string_src_offset(c->p, pos[1], off);
                sgl_loc loc = {pos[1]->loc.file, at, at + 1};
                err(c, loc, "bad format spec \"%s\": %s", pos[1]->str.bytes, why);
            }
        } else if (np >= 2 && is_literal(pos[1]) && pos[1]->kind != SGL_AST_FSTRING) {
            err(c, pos[1]->loc, "format(): the spec must be a string, not %s", literal_what(pos[1]));
        }
        break;
    case SGL_BUILTIN_SLICE:
        if (np >= 1 && is_literal(pos[0]) && pos[0]->kind != SGL_AST_STRING && pos[0]->kind != SGL_AST_FSTRING &&
            pos[0]->kind != SGL_AST_LIST)
            err(c, pos[0]->loc, "cannot slice %s (only strings and lists have slices)", literal_what(pos[0]));
        for (int i = 1; i < np; i++) {
            double x;
            bool is_int;
            if (is_literal(pos[i]) && pos[i]->kind != SGL_AST_NONE && !(num_value(pos[i], &x, &is_int) && is_int))
                err(c, pos[i]->loc, "slice bounds must be integers, not %s", literal_what(pos[i]));
        }
        break;
    case SGL_BUILTIN_META:
        if (np >= 2 && is_literal(pos[1]) && pos[1]->kind != SGL_AST_STRING && pos[1]->kind != SGL_AST_FSTRING)
            err(c, pos[1]->loc, "meta(): the variable name must be a string, not %s", literal_what(pos[1]));
        break;
    default:
        break;
    }

    /* Arguments themselves: a role wrapper passes "appended" through to its
     * argument (s += assistant(gen(...))); gen/select arguments are plain. */
    check_args_plain(c, call, (flags & SGL_BI_ROLE) ? append : false);
}

static void check_fn_call(checker *c, sgl_node *call, sgl_node *fn) {
    uint32_t n = fn->fn.params.len;
    sgl_node **bound = n ? sgl_arena_alloc(&c->p->arena, n * sizeof *bound) : NULL;
    if (n && !bound) return;
    call->call.fn = fn;
    call->call.param_args = bound;
    uint32_t np = call->call.n_positional;
    bool bad = false;
    if (np > n) {
        sgl_diag *d;
        if (n == 0)
            d = err(c, call->loc, "'%s' takes no arguments (got %u)", fn->fn.name, np);
        else
            d = err(c, call->loc, "too many arguments to '%s': it takes %u (or %u without a stream), got %u",
                    fn->fn.name, n, n - 1, np);
        note(c, d, fn->fn.name_loc, "'%s' is defined here", fn->fn.name);
        return;
    }
    /* Fresh-stream mode: exactly one parameter short and no keyword names
     * parameter 0; then positional arguments start at parameter 1. */
    uint32_t nkw = call->call.args.len - np;
    bool names_first = false;
    for (uint32_t i = np; i < call->call.args.len; i++) {
        sgl_node *a = call->call.args.items[i];
        if (a->kind == SGL_AST_KWARG && n > 0 && !strcmp(a->kwarg.name, fn->fn.params.items[0]->param.name))
            names_first = true;
    }
    uint32_t shift = (n > 0 && np + nkw == n - 1 && !names_first) ? 1 : 0;
    for (uint32_t i = 0; i < np; i++) bound[i + shift] = call->call.args.items[i];
    for (uint32_t i = np; i < call->call.args.len; i++) {
        sgl_node *a = call->call.args.items[i];
        if (a->kind != SGL_AST_KWARG) continue;
        uint32_t q = 0;
        while (q < n && strcmp(fn->fn.params.items[q]->param.name, a->kwarg.name)) q++;
        if (q == n) {
            sgl_diag *d = err(c, a->kwarg.name_loc, "'%s' has no parameter '%s'", fn->fn.name, a->kwarg.name);
            note(c, d, fn->fn.name_loc, "'%s' is defined here", fn->fn.name);
            bad = true;
        } else if (bound[q]) {
            err(c, a->kwarg.name_loc, "parameter '%s' of '%s' is given twice", a->kwarg.name, fn->fn.name);
            bad = true;
        } else {
            bound[q] = a->kwarg.value;
        }
    }
    if (bad) return;
    uint32_t missing = 0, first_missing = 0;
    for (uint32_t i = 0; i < n; i++)
        if (!bound[i]) {
            if (!missing) first_missing = i;
            missing++;
        }
    if (missing == 0) {
        call->call.call_kind = SGL_CALL_FN;
    } else if (missing == 1 && !bound[0]) {
        call->call.call_kind = SGL_CALL_FN_FRESH;
        /* f(s) inside a function whose stream is s, f taking (s, x): the
         * arity rule runs f on a fresh stream with x = s. Likely a slip. */
        sgl_binding sb;
        sgl_node *a1 = np >= 1 ? call->call.args.items[0] : NULL;
        if (a1 && a1->kind == SGL_AST_NAME && n >= 2 && lookup(c, a1->name.name, &sb) && sb.kind == SGL_BIND_PARAM &&
            sb.slot == 0 && c->fn && c->fn->fn.params.len >= 1)
            warn(c, call->loc,
                 "%s(%s, ...) runs %s on a fresh stream with '%s' as its parameter '%s', because one argument is "
                 "missing; pass all %u arguments to extend %s (or write %s=%s if this is meant)",
                 fn->fn.name, a1->name.name, fn->fn.name, a1->name.name, fn->fn.params.items[1]->param.name, n,
                 a1->name.name, fn->fn.params.items[1]->param.name, a1->name.name);
    } else {
        uint32_t got = np + (uint32_t)(call->call.args.len - np);
        sgl_diag *d;
        if (missing == 1 || bound[0])
            d = err(c, call->loc, "missing argument for parameter '%s' of '%s' (it takes %u, or %u without a stream; got %u)",
                    fn->fn.params.items[first_missing]->param.name, fn->fn.name, n, n - 1, got);
        else
            d = err(c, call->loc, "not enough arguments to '%s': it takes %u, or %u without a stream; got %u",
                    fn->fn.name, n, n - 1, got);
        note(c, d, fn->fn.name_loc, "'%s' is defined here", fn->fn.name);
    }
}

static void check_expr(checker *c, sgl_node *n, bool append) {
    switch (n->kind) {
    case SGL_AST_NONE: case SGL_AST_BOOL: case SGL_AST_INT: case SGL_AST_FLOAT: case SGL_AST_STRING:
    case SGL_AST_ERROR:
        return;
    case SGL_AST_FSTRING:
        for (uint32_t i = 0; i < n->fstr.parts.len; i++) check_expr(c, n->fstr.parts.items[i], append);
        return;
    case SGL_AST_NAME:
        use_name(c, n, false);
        return;
    case SGL_AST_LIST:
    case SGL_AST_MAP:
        for (uint32_t i = 0; i < n->list.items.len; i++) check_expr(c, n->list.items.items[i], false);
        return;
    case SGL_AST_PAIR:
        check_expr(c, n->pair.key, false);
        check_expr(c, n->pair.value, false);
        return;
    case SGL_AST_INDEX:
        check_expr(c, n->index.obj, false);
        check_expr(c, n->index.index, false);
        return;
    case SGL_AST_UNARY:
        check_expr(c, n->unary.operand, false);
        return;
    case SGL_AST_BINARY: {
        bool pass = append && n->binary.op == SGL_OP_ADD;
        check_expr(c, n->binary.lhs, pass);
        check_expr(c, n->binary.rhs, pass);
        return;
    }
    case SGL_AST_KWARG:
        check_expr(c, n->kwarg.value, false);
        return;
    case SGL_AST_COMP: {
        check_expr(c, n->comp.iter, false);
        const sgl_node *it = n->comp.iter;
        if (is_literal(it) && it->kind != SGL_AST_LIST && it->kind != SGL_AST_MAP && it->kind != SGL_AST_STRING &&
            it->kind != SGL_AST_FSTRING)
            err(c, it->loc, "a comprehension iterates over a list (or a map's keys, or a string), not %s",
                literal_what(it));
        scope_open(c);
        declare_local(c, " comprehension", n->loc, n, SGL_BIND_LOCAL, &n->comp.acc_slot);
        declare_local(c, n->comp.name, n->comp.name_loc, n, SGL_BIND_LOCAL, &n->comp.slot);
        if (n->comp.cond) check_expr(c, n->comp.cond, false);
        if (n->comp.key) check_expr(c, n->comp.key, false);
        check_expr(c, n->comp.value, false);
        scope_close(c);
        return;
    }
    case SGL_AST_CALL: {
        sgl_node *callee = n->call.callee;
        if (callee->kind != SGL_AST_NAME) {
            check_expr(c, callee, false);
            check_args_plain(c, n, false);
            return;
        }
        use_name(c, callee, true);
        sgl_binding *b = &callee->name.bind;
        switch (b->kind) {
        case SGL_BIND_BUILTIN:
            check_builtin_call(c, n, b->builtin, append);
            return;
        case SGL_BIND_FN:
            check_fn_call(c, n, b->decl);
            check_args_plain(c, n, false);
            return;
        case SGL_BIND_CONST: {
            sgl_diag *d = err(c, callee->loc, "'%s' is a constant, not a function", callee->name.name);
            note(c, d, decl_name_loc(b->decl), "'%s' is defined here", callee->name.name);
            check_args_plain(c, n, false);
            return;
        }
        default:
            check_args_plain(c, n, false);
            return;
        }
    }
    default:
        err(c, n->loc, "this is not an expression");
        return;
    }
}

/* ---- statements ---- */

static void check_block(checker *c, sgl_node *b, bool new_scope);

static bool ends_flow(const sgl_node *s) {
    return s->kind == SGL_AST_RETURN || s->kind == SGL_AST_BREAK || s->kind == SGL_AST_CONTINUE;
}

static void check_assign(checker *c, sgl_node *n) {
    sgl_node *t = n->assign.target;
    bool append = n->assign.op == SGL_OP_ADD;
    check_expr(c, n->assign.value, append);
    if (t->kind == SGL_AST_INDEX) {
        check_expr(c, t, false);
        return;
    }
    if (t->kind != SGL_AST_NAME) return; /* reported by the parser */
    sgl_binding b;
    if (!lookup(c, t->name.name, &b)) {
        err(c, t->loc, "undefined variable '%s' (declare it first with 'let %s = ...')", t->name.name, t->name.name);
        return;
    }
    t->name.bind = b;
    switch (b.kind) {
    case SGL_BIND_LOCAL:
        if (n->assign.op != SGL_OP_NONE && b.decl->kind == SGL_AST_LET) b.decl->decl.n_reads++;
        return;
    case SGL_BIND_PARAM:
        return;
    case SGL_BIND_CONST: {
        sgl_diag *d = err(c, t->loc, "cannot assign to constant '%s'", t->name.name);
        note(c, d, decl_name_loc(b.decl), "'%s' is defined here", t->name.name);
        return;
    }
    case SGL_BIND_FN: {
        sgl_diag *d = err(c, t->loc, "cannot assign to function '%s'", t->name.name);
        note(c, d, decl_name_loc(b.decl), "'%s' is defined here", t->name.name);
        return;
    }
    case SGL_BIND_BUILTIN:
        err(c, t->loc, "cannot assign to builtin '%s'", t->name.name);
        return;
    case SGL_BIND_UNRESOLVED:
        return;
    }
}

static void check_stmt(checker *c, sgl_node *n) {
    switch (n->kind) {
    case SGL_AST_LET:
        check_expr(c, n->decl.value, false);
        if (sgl_builtin_lookup(n->decl.name) >= 0 && n->decl.name[0] != '_')
            warn(c, n->decl.name_loc, "'%s' shadows the builtin %s() in this scope (calls of it here fail)",
                 n->decl.name, n->decl.name);
        declare_local(c, n->decl.name, n->decl.name_loc, n, SGL_BIND_LOCAL, &n->decl.slot);
        if (c->n_lets == c->cap_lets) {
            size_t cap = c->cap_lets ? c->cap_lets * 2 : 16;
            sgl_node **l = realloc(c->lets, cap * sizeof *l);
            if (!l) return;
            c->lets = l;
            c->cap_lets = cap;
        }
        c->lets[c->n_lets++] = n;
        return;
    case SGL_AST_ASSIGN:
        check_assign(c, n);
        return;
    case SGL_AST_EXPR_STMT:
        check_expr(c, n->expr_stmt.expr, false);
        return;
    case SGL_AST_IF:
        check_expr(c, n->if_.cond, false);
        check_block(c, n->if_.then, true);
        if (n->if_.els) {
            if (n->if_.els->kind == SGL_AST_IF)
                check_stmt(c, n->if_.els);
            else
                check_block(c, n->if_.els, true);
        }
        return;
    case SGL_AST_FOR:
        check_expr(c, n->for_.iter, false);
        scope_open(c);
        declare_local(c, n->for_.name, n->for_.name_loc, n, SGL_BIND_LOCAL, &n->for_.slot);
        c->loops[c->n_loops < (int)SGL_ARRAY_LEN(c->loops) ? c->n_loops : 0] = n;
        c->n_loops++;
        check_block(c, n->for_.body, false);
        c->n_loops--;
        scope_close(c);
        return;
    case SGL_AST_WHILE:
        check_expr(c, n->while_.cond, false);
        c->loops[c->n_loops < (int)SGL_ARRAY_LEN(c->loops) ? c->n_loops : 0] = n;
        c->n_loops++;
        check_block(c, n->while_.body, true);
        c->n_loops--;
        return;
    case SGL_AST_BREAK:
    case SGL_AST_CONTINUE:
        if (c->n_loops == 0)
            err(c, n->loc, "'%s' outside a loop", n->kind == SGL_AST_BREAK ? "break" : "continue");
        else
            n->jump.loop = c->loops[c->n_loops - 1 < (int)SGL_ARRAY_LEN(c->loops) ? c->n_loops - 1 : 0];
        return;
    case SGL_AST_RETURN:
        if (!c->fn) err(c, n->loc, "'return' outside a function");
        if (n->ret.value) check_expr(c, n->ret.value, false);
        return;
    case SGL_AST_ASSERT:
        check_expr(c, n->assert_.cond, false);
        if (n->assert_.msg) check_expr(c, n->assert_.msg, false);
        return;
    case SGL_AST_WITH: {
        sgl_node *call = n->with.call;
        bool ok = false;
        if (call->kind == SGL_AST_CALL && call->call.callee->kind == SGL_AST_NAME) {
            sgl_binding b;
            if (lookup(c, call->call.callee->name.name, &b) && b.kind == SGL_BIND_BUILTIN &&
                (sgl_builtin_flags(b.builtin) & SGL_BI_ROLE)) {
                ok = true;
                call->call.callee->name.bind = b;
                call->call.call_kind = SGL_CALL_BUILTIN;
                call->call.builtin = b.builtin;
                n->with.role = b.builtin;
                if (call->call.args.len != 1 || call->call.n_positional != 1) {
                    err(c, call->loc, "'with %s(...)' takes exactly one argument: the stream", b.builtin == SGL_BUILTIN_SYSTEM ? "system" : sgl_builtin_name(b.builtin));
                } else {
                    n->with.stream = call->call.args.items[0];
                    check_expr(c, n->with.stream, false);
                }
            }
        }
        if (!ok && call->kind == SGL_AST_CALL && call->call.callee->kind == SGL_AST_NAME) {
            sgl_binding b;
            if (lookup(c, call->call.callee->name.name, &b) && b.kind == SGL_BIND_BUILTIN &&
                b.builtin == SGL_BUILTIN_VAR_SCOPE) {
                ok = true;
                call->call.callee->name.bind = b;
                call->call.call_kind = SGL_CALL_BUILTIN;
                call->call.builtin = b.builtin;
                n->with.role = b.builtin;
                if (call->call.args.len != 2 || call->call.n_positional != 2) {
                    err(c, call->loc, "'with var_scope(...)' takes the stream and the variable name");
                } else {
                    n->with.stream = call->call.args.items[0];
                    check_expr(c, n->with.stream, false);
                    sgl_node *nm = call->call.args.items[1];
                    check_expr(c, nm, false);
                    if (is_literal(nm) && nm->kind != SGL_AST_STRING && nm->kind != SGL_AST_FSTRING)
                        err(c, nm->loc, "var_scope(): the variable name must be a string, not %s", literal_what(nm));
                }
            }
        }
        if (!ok) {
            err(c, call->loc, "'with' needs a chat role applied to a stream, as in 'with user(s) { ... }', or var_scope(s, \"name\")");
            check_expr(c, call, false);
        }
        check_block(c, n->with.body, true);
        return;
    }
    default:
        err(c, n->loc, "this is not a statement");
        return;
    }
}

static void check_block(checker *c, sgl_node *b, bool new_scope) {
    if (b->kind != SGL_AST_BLOCK) return;
    if (new_scope) scope_open(c);
    bool dead = false, reported = false;
    for (uint32_t i = 0; i < b->block.stmts.len; i++) {
        sgl_node *s = b->block.stmts.items[i];
        if (dead && !reported) {
            warn(c, s->loc, "unreachable code");
            reported = true;
        }
        check_stmt(c, s);
        if (ends_flow(s)) dead = true;
    }
    if (new_scope) scope_close(c);
}

static void frame_begin(checker *c, sgl_node *fn) {
    c->locals.len = 0;
    c->n_scopes = 0;
    c->n_slots = 0;
    c->n_loops = 0;
    c->n_lets = 0;
    c->fn = fn;
    scope_open(c);
}

static void frame_end(checker *c) {
    for (size_t i = 0; i < c->n_lets; i++) {
        sgl_node *l = c->lets[i];
        if (l->decl.n_reads == 0 && l->decl.name[0] != '_')
            warn(c, l->decl.name_loc, "unused variable '%s' (name it '_%s' if that is intended)", l->decl.name,
                 l->decl.name);
    }
    scope_close(c);
}

static void check_fn(checker *c, sgl_node *fn) {
    frame_begin(c, fn);
    for (uint32_t i = 0; i < fn->fn.annots.len; i++) {
        sgl_node *a = fn->fn.annots.items[i];
        if (!strcmp(a->annot.name, "reorder")) {
            if (fn->fn.flags & SGL_FN_REORDER) warn(c, a->loc, "duplicate annotation '@reorder'");
            fn->fn.flags |= SGL_FN_REORDER;
            if (fn->fn.params.len == 0)
                err(c, a->loc, "@reorder needs a function whose first parameter is its stream");
        } else {
            err(c, a->loc, "unknown annotation '@%s' (known: @reorder)", a->annot.name);
        }
    }
    for (uint32_t i = 0; i < fn->fn.params.len; i++) {
        sgl_node *p = fn->fn.params.items[i];
        sym *prev = symvec_find(&c->locals, 0, p->param.name);
        if (prev && strcmp(p->param.name, "_")) {
            sgl_diag *d = err(c, p->loc, "duplicate parameter '%s'", p->param.name);
            note(c, d, prev->decl->loc, "previously defined here");
        }
        symvec_push(&c->locals, (sym){p->param.name, p, SGL_BIND_PARAM, (int32_t)i, c->mi});
        c->n_slots++;
    }
    check_block(c, fn->fn.body, false);
    frame_end(c);
    fn->fn.n_slots = c->n_slots;
}

/* ---- modules ---- */

static void collect_globals(checker *c, uint32_t mi) {
    sgl_node *m = c->p->modules[mi];
    symvec *g = &c->globals[mi];
    sgl_node *main = NULL;
    for (uint32_t i = 0; i < m->module.items.len; i++) {
        sgl_node *it = m->module.items.items[i];
        if (it->kind == SGL_AST_MAIN) {
            if (main) {
                sgl_diag *d = err(c, it->loc, "duplicate 'main' block");
                note(c, d, main->loc, "previously defined here");
            }
            main = it;
            continue;
        }
        if (it->kind != SGL_AST_FN && it->kind != SGL_AST_CONST) continue;
        const char *name = decl_name(it);
        sym *prev = symvec_find(g, 0, name);
        if (prev) {
            sgl_diag *d = err(c, decl_name_loc(it), "duplicate definition of '%s'", name);
            note(c, d, decl_name_loc(prev->decl), "previously defined here");
            continue;
        }
        int bi = sgl_builtin_lookup(name);
        if (bi >= 0 && !(sgl_builtin_flags((sgl_builtin)bi) & SGL_BI_SHADOW)) {
            err(c, decl_name_loc(it), "'%s' is a builtin; choose another name", name);
            continue;
        }
        symvec_push(g, (sym){name, it, it->kind == SGL_AST_FN ? SGL_BIND_FN : SGL_BIND_CONST, -1, mi});
    }
}

static void collect_imports(checker *c, uint32_t mi) {
    sgl_node *m = c->p->modules[mi];
    symvec *im = &c->imports[mi];
    for (uint32_t i = 0; i < m->module.items.len; i++) {
        sgl_node *it = m->module.items.items[i];
        if (it->kind != SGL_AST_IMPORT || it->import.module < 0) continue;
        uint32_t k = (uint32_t)it->import.module;
        if (k == mi) continue;
        symvec *theirs = &c->globals[k];
        for (size_t j = 0; j < theirs->len; j++) {
            sym s = theirs->items[j];
            if (s.name[0] == '_') continue;
            sym *prev = symvec_find(im, 0, s.name);
            if (prev) {
                if (prev->decl != s.decl && !symvec_find(&c->globals[mi], 0, s.name)) {
                    sgl_diag *d = err(c, it->loc, "'%s' is defined by both '%s' and '%s'", s.name,
                                      c->p->modules[prev->module]->module.path, c->p->modules[k]->module.path);
                    note(c, d, decl_name_loc(prev->decl), "one definition is here");
                    note(c, d, decl_name_loc(s.decl), "the other is here");
                }
                continue;
            }
            symvec_push(im, s);
        }
    }
}

void lang_check_program(sgl_program *p) {
    checker c;
    memset(&c, 0, sizeof c);
    c.p = p;
    c.globals = calloc(p->n_modules, sizeof *c.globals);
    c.imports = calloc(p->n_modules, sizeof *c.imports);
    if (!c.globals || !c.imports) goto out;
    for (uint32_t mi = 0; mi < p->n_modules; mi++) {
        c.mi = mi;
        collect_globals(&c, mi);
    }
    for (uint32_t mi = 0; mi < p->n_modules; mi++) {
        c.mi = mi;
        collect_imports(&c, mi);
    }
    for (uint32_t mi = 0; mi < p->n_modules; mi++) {
        c.mi = mi;
        sgl_node *m = p->modules[mi];
        for (uint32_t i = 0; i < m->module.items.len; i++) {
            sgl_node *it = m->module.items.items[i];
            switch (it->kind) {
            case SGL_AST_FN:
                check_fn(&c, it);
                break;
            case SGL_AST_CONST:
                frame_begin(&c, NULL);
                c.const_decl = it;
                check_const_expr(&c, it->decl.value);
                c.const_decl = NULL;
                frame_end(&c);
                break;
            case SGL_AST_MAIN:
                frame_begin(&c, NULL);
                check_block(&c, it->main.body, false);
                frame_end(&c);
                it->main.n_slots = c.n_slots;
                break;
            default:
                break;
            }
        }
    }
out:
    for (uint32_t mi = 0; c.globals && mi < p->n_modules; mi++) free(c.globals[mi].items);
    for (uint32_t mi = 0; c.imports && mi < p->n_modules; mi++) free(c.imports[mi].items);
    free(c.globals);
    free(c.imports);
    free(c.locals.items);
    free(c.lets);
    free(c.cons_seen);
}
