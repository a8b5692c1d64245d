/* ast.c: AST builders used by the grammar actions, literal decoding
 * (strings with escapes, numbers), the kind/op/builtin name tables, and the
 * stable S-expression dump behind `sglc dump --ast`. */
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lang/lang_int.h"

/* ---- name tables ---- */

static const char *const kind_names[] = {
#define AST(kind, name, doc) name,
#include "lang/ast.def"
#undef AST
};
static_assert(SGL_ARRAY_LEN(kind_names) == SGL_AST__COUNT, "kind_names");

static const char *const op_names[] = {
#define OP(name, spelling, prec) spelling,
#include "lang/ops.def"
#undef OP
};
static_assert(SGL_ARRAY_LEN(op_names) == SGL_OP__COUNT, "op_names");

static const struct {
    const char *name;
    int min, max;
    unsigned flags;
} builtins[] = {
#define BUILTIN(id, name, min, max, flags) {name, min, max, flags},
#include "lang/builtins.def"
#undef BUILTIN
};
static_assert(SGL_ARRAY_LEN(builtins) == SGL_BUILTIN__COUNT, "builtins");

static const sgl_kwarg_info kwargs[] = {
#define KWARG(id, name, type, lo, hi, by) {name, type, lo, hi, by},
#include "lang/kwargs.def"
#undef KWARG
};
static_assert(SGL_ARRAY_LEN(kwargs) == SGL_KWARG__COUNT, "kwargs");

const char *const sgl_select_methods[3] = {"token_length_normalized", "greedy_token_selection",
                                           "unconditional_likelihood_normalized"};

const char *sgl_ast_kind_name(sgl_ast_kind k) {
    return (unsigned)k < SGL_AST__COUNT ? kind_names[k] : "?";
}
const char *sgl_op_name(sgl_op op) {
    return (unsigned)op < SGL_OP__COUNT ? op_names[op] : "?";
}
const char *sgl_builtin_name(sgl_builtin b) {
    return (unsigned)b < SGL_BUILTIN__COUNT ? builtins[b].name : "?";
}
unsigned sgl_builtin_flags(sgl_builtin b) {
    return (unsigned)b < SGL_BUILTIN__COUNT ? builtins[b].flags : 0;
}
void sgl_builtin_arity(sgl_builtin b, int *min_args, int *max_args) {
    if ((unsigned)b >= SGL_BUILTIN__COUNT) {
        *min_args = *max_args = 0;
        return;
    }
    *min_args = builtins[b].min;
    *max_args = builtins[b].max;
}
int sgl_builtin_lookup(const char *name) {
    for (int i = 0; i < SGL_BUILTIN__COUNT; i++)
        if (!strcmp(builtins[i].name, name)) return i;
    return -1;
}
const sgl_kwarg_info *sgl_kwarg_get(sgl_kwarg_id id) {
    return (unsigned)id < SGL_KWARG__COUNT ? &kwargs[id] : NULL;
}
/* SGLang's spellings, accepted as written so programs move without edits. */
static const struct {
    const char *name;
    sgl_kwarg_id id;
} kwarg_aliases[] = {
    {"max_new_tokens", SGL_KWARG_MAX_TOKENS},
    {"min_new_tokens", SGL_KWARG_MIN_TOKENS},
    {"choices_method", SGL_KWARG_METHOD},
    {"num_threads", SGL_KWARG_PARALLEL},
};

int sgl_kwarg_lookup(const char *name) {
    for (int i = 0; i < SGL_KWARG__COUNT; i++)
        if (!strcmp(kwargs[i].name, name)) return i;
    for (size_t i = 0; i < SGL_ARRAY_LEN(kwarg_aliases); i++)
        if (!strcmp(kwarg_aliases[i].name, name)) return (int)kwarg_aliases[i].id;
    return -1;
}

const char *sgl_kwarg_alias(size_t i, sgl_kwarg_id *id) {
    if (i >= SGL_ARRAY_LEN(kwarg_aliases)) return NULL;
    *id = kwarg_aliases[i].id;
    return kwarg_aliases[i].name;
}

/* ---- generic children ---- */

static size_t put(sgl_node **out, size_t cap, size_t k, sgl_node *c) {
    if (!c) return k;
    if (k < cap) out[k] = c;
    return k + 1;
}

static size_t put_list(sgl_node **out, size_t cap, size_t k, const sgl_node_list *l) {
    for (uint32_t i = 0; i < l->len; i++) k = put(out, cap, k, l->items[i]);
    return k;
}

size_t sgl_ast_children(sgl_node *n, sgl_node **out, size_t cap) {
    size_t k = 0;
    switch (n->kind) {
    case SGL_AST_MODULE: return put_list(out, cap, k, &n->module.items);
    case SGL_AST_FN:
        k = put_list(out, cap, k, &n->fn.annots);
        k = put_list(out, cap, k, &n->fn.params);
        return put(out, cap, k, n->fn.body);
    case SGL_AST_CONST:
    case SGL_AST_LET: return put(out, cap, k, n->decl.value);
    case SGL_AST_MAIN: return put(out, cap, k, n->main.body);
    case SGL_AST_BLOCK: return put_list(out, cap, k, &n->block.stmts);
    case SGL_AST_ASSIGN:
        k = put(out, cap, k, n->assign.target);
        return put(out, cap, k, n->assign.value);
    case SGL_AST_EXPR_STMT: return put(out, cap, k, n->expr_stmt.expr);
    case SGL_AST_IF:
        k = put(out, cap, k, n->if_.cond);
        k = put(out, cap, k, n->if_.then);
        return put(out, cap, k, n->if_.els);
    case SGL_AST_FOR:
        k = put(out, cap, k, n->for_.iter);
        return put(out, cap, k, n->for_.body);
    case SGL_AST_WHILE:
        k = put(out, cap, k, n->while_.cond);
        return put(out, cap, k, n->while_.body);
    case SGL_AST_RETURN: return put(out, cap, k, n->ret.value);
    case SGL_AST_ASSERT:
        k = put(out, cap, k, n->assert_.cond);
        return put(out, cap, k, n->assert_.msg);
    case SGL_AST_WITH:
        k = put(out, cap, k, n->with.call);
        return put(out, cap, k, n->with.body);
    case SGL_AST_FSTRING: return put_list(out, cap, k, &n->fstr.parts);
    case SGL_AST_LIST:
    case SGL_AST_MAP: return put_list(out, cap, k, &n->list.items);
    case SGL_AST_PAIR:
        k = put(out, cap, k, n->pair.key);
        return put(out, cap, k, n->pair.value);
    case SGL_AST_INDEX:
        k = put(out, cap, k, n->index.obj);
        return put(out, cap, k, n->index.index);
    case SGL_AST_UNARY: return put(out, cap, k, n->unary.operand);
    case SGL_AST_BINARY:
        k = put(out, cap, k, n->binary.lhs);
        return put(out, cap, k, n->binary.rhs);
    case SGL_AST_CALL:
        k = put(out, cap, k, n->call.callee);
        return put_list(out, cap, k, &n->call.args);
    case SGL_AST_KWARG: return put(out, cap, k, n->kwarg.value);
    case SGL_AST_COMP:
        k = put(out, cap, k, n->comp.iter);
        k = put(out, cap, k, n->comp.key);
        k = put(out, cap, k, n->comp.value);
        return put(out, cap, k, n->comp.cond);
    default: return 0;
    }
}

/* ---- builders ---- */

/* Out of memory inside the parser: there is no good way to continue, and
 * arenas only fail when malloc does. Builders return a static ERROR node so
 * the parse can unwind; the loader reports the OOM. */
static sgl_node oom_node = {.kind = SGL_AST_ERROR};

sgl_node *ast_new(lang_parser *P, sgl_ast_kind kind, lang_loc l) {
    sgl_node *n = sgl_arena_alloc(P->arena, sizeof *n);
    if (!n) return &oom_node;
    n->kind = kind;
    n->loc = lang_loc_make(P, l);
    return n;
}

void ast_list_push(lang_parser *P, sgl_node_list *list, sgl_node *n) {
    if (!n) return;
    if (list->len == list->cap) {
        uint32_t cap = list->cap ? list->cap * 2 : 4;
        sgl_node **items = sgl_arena_alloc(P->arena, cap * sizeof *items);
        if (!items) return;
        if (list->len) memcpy(items, list->items, list->len * sizeof *items);
        list->items = items;
        list->cap = cap;
    }
    list->items[list->len++] = n;
}

sgl_node_list ast_list1(lang_parser *P, sgl_node *n) {
    sgl_node_list l = {0};
    ast_list_push(P, &l, n);
    return l;
}

const char *ast_str(lang_parser *P, const char *s, size_t n) {
    const char *r = sgl_arena_strndup(P->arena, s, n);
    return r ? r : "";
}

/* Expression depth, computed bottom-up; deep trees are cut off with an error
 * so that recursive passes (checker, compiler, dump) stay within the stack. */
static uint32_t depth_of(const sgl_node *n) {
    return n ? n->depth : 0;
}

static sgl_node *depth_check(lang_parser *P, sgl_node *n, uint32_t d) {
    n->depth = d;
    if (d > LANG_MAX_DEPTH) {
        if (!P->depth_reported)
            sgl_diag_add(P->prog, SGL_DIAG_ERROR, n->loc, "expression nested too deeply (more than %d levels)",
                         LANG_MAX_DEPTH);
        P->depth_reported = true;
        sgl_node *e = sgl_arena_alloc(P->arena, sizeof *e);
        if (!e) return &oom_node;
        e->kind = SGL_AST_ERROR;
        e->loc = n->loc;
        return e;
    }
    return n;
}

static uint32_t list_depth(const sgl_node_list *l) {
    uint32_t d = 0;
    for (uint32_t i = 0; i < l->len; i++) d = SGL_MAX(d, depth_of(l->items[i]));
    return d;
}

sgl_node *ast_fn(lang_parser *P, lang_loc l, sgl_node_list annots, const char *name, lang_loc nl,
                 sgl_node_list params, sgl_node *body) {
    sgl_node *n = ast_new(P, SGL_AST_FN, l);
    if (n == &oom_node) return n;
    n->fn.name = name;
    n->fn.name_loc = lang_loc_make(P, nl);
    n->fn.annots = annots;
    n->fn.params = params;
    for (uint32_t i = 0; i < params.len; i++) params.items[i]->param.slot = (int32_t)i;
    n->fn.body = body;
    return n;
}

sgl_node *ast_param(lang_parser *P, lang_loc l, const char *name) {
    sgl_node *n = ast_new(P, SGL_AST_PARAM, l);
    n->param.name = name;
    return n;
}

sgl_node *ast_annot(lang_parser *P, lang_loc l, const char *name) {
    sgl_node *n = ast_new(P, SGL_AST_ANNOT, l);
    n->annot.name = name;
    return n;
}

/* CONST and LET share the decl payload; the slot is assigned by the checker. */
static sgl_node *ast_decl(lang_parser *P, sgl_ast_kind kind, lang_loc l, const char *name,
                          lang_loc nl, sgl_node *value) {
    sgl_node *n = ast_new(P, kind, l);
    if (n == &oom_node) return n;
    n->decl.name = name;
    n->decl.name_loc = lang_loc_make(P, nl);
    n->decl.value = value;
    n->decl.slot = -1;
    return n;
}

sgl_node *ast_const(lang_parser *P, lang_loc l, const char *name, lang_loc nl, sgl_node *value) {
    return ast_decl(P, SGL_AST_CONST, l, name, nl, value);
}

sgl_node *ast_import(lang_parser *P, lang_loc l, sgl_node *path) {
    sgl_node *n = ast_new(P, SGL_AST_IMPORT, l);
    if (n == &oom_node) return n;
    n->import.path = path->kind == SGL_AST_STRING ? path->str.bytes : "";
    n->import.path_loc = path->loc;
    n->import.module = -1;
    return n;
}

sgl_node *ast_main(lang_parser *P, lang_loc l, sgl_node *body) {
    sgl_node *n = ast_new(P, SGL_AST_MAIN, l);
    n->main.body = body;
    return n;
}

sgl_node *ast_block(lang_parser *P, lang_loc l, sgl_node_list stmts) {
    sgl_node *n = ast_new(P, SGL_AST_BLOCK, l);
    n->block.stmts = stmts;
    return n;
}

sgl_node *ast_let(lang_parser *P, lang_loc l, const char *name, lang_loc nl, sgl_node *value) {
    return ast_decl(P, SGL_AST_LET, l, name, nl, value);
}

sgl_node *ast_assign(lang_parser *P, lang_loc l, sgl_op op, sgl_node *target, sgl_node *value) {
    if (target->kind != SGL_AST_NAME && target->kind != SGL_AST_INDEX && target->kind != SGL_AST_ERROR)
        sgl_diag_add(P->prog, SGL_DIAG_ERROR, target->loc,
                     "cannot assign to this expression (only to a variable or an element x[i])");
    sgl_node *n = ast_new(P, SGL_AST_ASSIGN, l);
    n->assign.op = op;
    n->assign.target = target;
    n->assign.value = value;
    return n;
}

sgl_node *ast_expr_stmt(lang_parser *P, lang_loc l, sgl_node *e) {
    sgl_node *n = ast_new(P, SGL_AST_EXPR_STMT, l);
    n->expr_stmt.expr = e;
    return n;
}

sgl_node *ast_if(lang_parser *P, lang_loc l, sgl_node *cond, sgl_node *then, sgl_node *els) {
    sgl_node *n = ast_new(P, SGL_AST_IF, l);
    n->if_.cond = cond;
    n->if_.then = then;
    n->if_.els = els;
    return n;
}

sgl_node *ast_for(lang_parser *P, lang_loc l, const char *name, lang_loc nl, sgl_node *iter,
                  sgl_node *body) {
    sgl_node *n = ast_new(P, SGL_AST_FOR, l);
    if (n == &oom_node) return n;
    n->for_.name = name;
    n->for_.name_loc = lang_loc_make(P, nl);
    n->for_.slot = -1;
    n->for_.iter = iter;
    n->for_.body = body;
    return n;
}

sgl_node *ast_while(lang_parser *P, lang_loc l, sgl_node *cond, sgl_node *body) {
    sgl_node *n = ast_new(P, SGL_AST_WHILE, l);
    n->while_.cond = cond;
    n->while_.body = body;
    return n;
}

sgl_node *ast_jump(lang_parser *P, lang_loc l, sgl_ast_kind kind) {
    return ast_new(P, kind, l);
}

sgl_node *ast_return(lang_parser *P, lang_loc l, sgl_node *value) {
    sgl_node *n = ast_new(P, SGL_AST_RETURN, l);
    n->ret.value = value;
    return n;
}

sgl_node *ast_assert(lang_parser *P, lang_loc l, sgl_node *cond, sgl_node *msg) {
    sgl_node *n = ast_new(P, SGL_AST_ASSERT, l);
    n->assert_.cond = cond;
    n->assert_.msg = msg;
    return n;
}

sgl_node *ast_with(lang_parser *P, lang_loc l, sgl_node *call, sgl_node *body) {
    sgl_node *n = ast_new(P, SGL_AST_WITH, l);
    n->with.call = call;
    n->with.body = body;
    n->with.role = SGL_BUILTIN__COUNT;
    return n;
}

sgl_node *ast_literal(lang_parser *P, lang_loc l, sgl_ast_kind kind, bool value) {
    sgl_node *n = ast_new(P, kind, l);
    if (n == &oom_node) return n;
    if (kind == SGL_AST_BOOL) n->boolean = value;
    if (kind == SGL_AST_STRING) {
        n->str.bytes = "";
        n->str.quote = 1;
    }
    return n;
}

sgl_node *ast_fstring(lang_parser *P, lang_loc l, sgl_node_list parts) {
    sgl_node *n = ast_new(P, SGL_AST_FSTRING, l);
    if (n == &oom_node) return n;
    n->fstr.parts = parts;
    return depth_check(P, n, list_depth(&parts) + 1);
}

sgl_node *ast_name(lang_parser *P, lang_loc l, const char *name) {
    sgl_node *n = ast_new(P, SGL_AST_NAME, l);
    if (n == &oom_node) return n;
    n->name.name = name;
    n->name.bind.slot = -1;
    return n;
}

sgl_node *ast_list(lang_parser *P, lang_loc l, sgl_ast_kind kind, sgl_node_list items) {
    sgl_node *n = ast_new(P, kind, l);
    if (n == &oom_node) return n;
    n->list.items = items;
    return depth_check(P, n, list_depth(&items) + 1);
}

sgl_node *ast_pair(lang_parser *P, lang_loc l, sgl_node *key, sgl_node *value) {
    sgl_node *n = ast_new(P, SGL_AST_PAIR, l);
    if (n == &oom_node) return n;
    n->pair.key = key;
    n->pair.value = value;
    return depth_check(P, n, SGL_MAX(depth_of(key), depth_of(value)) + 1);
}

sgl_node *ast_index(lang_parser *P, lang_loc l, sgl_node *obj, sgl_node *index) {
    sgl_node *n = ast_new(P, SGL_AST_INDEX, l);
    if (n == &oom_node) return n;
    n->index.obj = obj;
    n->index.index = index;
    return depth_check(P, n, SGL_MAX(depth_of(obj), depth_of(index)) + 1);
}

sgl_node *ast_unary(lang_parser *P, lang_loc l, sgl_op op, sgl_node *e) {
    sgl_node *n = ast_new(P, SGL_AST_UNARY, l);
    if (n == &oom_node) return n;
    n->unary.op = op;
    n->unary.operand = e;
    return depth_check(P, n, depth_of(e) + 1);
}

sgl_node *ast_binary(lang_parser *P, lang_loc l, sgl_op op, sgl_node *a, sgl_node *b) {
    sgl_node *n = ast_new(P, SGL_AST_BINARY, l);
    if (n == &oom_node) return n;
    n->binary.op = op;
    n->binary.lhs = a;
    n->binary.rhs = b;
    return depth_check(P, n, SGL_MAX(depth_of(a), depth_of(b)) + 1);
}

sgl_node *ast_call(lang_parser *P, lang_loc l, sgl_node *callee, sgl_node_list args) {
    sgl_node *n = ast_new(P, SGL_AST_CALL, l);
    if (n == &oom_node) return n;
    n->call.callee = callee;
    n->call.args = args;
    uint32_t i = 0;
    while (i < args.len && args.items[i]->kind != SGL_AST_KWARG) i++;
    n->call.n_positional = i;
    for (; i < args.len; i++)
        if (args.items[i]->kind != SGL_AST_KWARG) {
            sgl_diag_add(P->prog, SGL_DIAG_ERROR, args.items[i]->loc,
                         "positional argument after a keyword argument");
            break;
        }
    n->call.builtin = SGL_BUILTIN__COUNT;
    return depth_check(P, n, SGL_MAX(depth_of(callee), list_depth(&args)) + 1);
}

sgl_node *ast_kwarg(lang_parser *P, lang_loc l, const char *name, lang_loc nl, sgl_node *value) {
    sgl_node *n = ast_new(P, SGL_AST_KWARG, l);
    if (n == &oom_node) return n;
    n->kwarg.name = name;
    n->kwarg.name_loc = lang_loc_make(P, nl);
    n->kwarg.value = value;
    return depth_check(P, n, depth_of(value) + 1);
}

sgl_node *ast_error(lang_parser *P, lang_loc l) {
    return ast_new(P, SGL_AST_ERROR, l);
}

/* A call of builtin `name` whose callee is bound already, so a local of
 * that name cannot capture what the syntax means. */
static sgl_node *builtin_call(lang_parser *P, lang_loc l, const char *name, sgl_builtin b, sgl_node_list args) {
    sgl_node *callee = ast_name(P, l, name);
    if (callee != &oom_node) {
        callee->name.bind.kind = SGL_BIND_BUILTIN;
        callee->name.bind.builtin = b;
    }
    return ast_call(P, l, callee, args);
}

sgl_node *ast_fmt(lang_parser *P, lang_loc l, sgl_node *e, const char *conv, sgl_node *spec) {
    if (conv) {
        bool str = conv[0] == 's';
        e = builtin_call(P, l, str ? "str" : "repr", str ? SGL_BUILTIN_STR : SGL_BUILTIN_REPR, ast_list1(P, e));
    }
    if (spec && spec->kind == SGL_AST_STRING && spec->str.len > 0) {
        sgl_node_list args = ast_list1(P, e);
        ast_list_push(P, &args, spec);
        e = builtin_call(P, l, "format", SGL_BUILTIN_FORMAT, args);
    }
    return e;
}

sgl_node *ast_slice(lang_parser *P, lang_loc l, sgl_node *obj, sgl_node *a, sgl_node *b) {
    sgl_node_list args = ast_list1(P, obj);
    ast_list_push(P, &args, a ? a : ast_literal(P, (lang_loc){l.end - 1, l.end - 1}, SGL_AST_NONE, false));
    ast_list_push(P, &args, b ? b : ast_literal(P, (lang_loc){l.end - 1, l.end - 1}, SGL_AST_NONE, false));
    return builtin_call(P, l, "slice", SGL_BUILTIN_SLICE, args);
}

sgl_node *ast_comp(lang_parser *P, lang_loc l, sgl_node *key, sgl_node *value, const char *name, lang_loc nl,
                   sgl_node *iter, sgl_node *cond) {
    sgl_node *n = ast_new(P, SGL_AST_COMP, l);
    if (n == &oom_node) return n;
    n->comp.key = key;
    n->comp.value = value;
    n->comp.name = name;
    n->comp.name_loc = lang_loc_make(P, nl);
    n->comp.slot = n->comp.acc_slot = -1;
    n->comp.iter = iter;
    n->comp.cond = cond;
    uint32_t d = SGL_MAX(SGL_MAX(depth_of(key), depth_of(value)), SGL_MAX(depth_of(iter), depth_of(cond)));
    return depth_check(P, n, d + 1);
}

/* ---- literals ---- */

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static void utf8_put(sgl_strbuf *sb, uint32_t cp) {
    char b[4];
    int n;
    if (cp < 0x80) {
        b[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (char)(0xC0 | (cp >> 6));
        b[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (char)(0xE0 | (cp >> 12));
        b[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        b[0] = (char)(0xF0 | (cp >> 18));
        b[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        b[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        b[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    sgl_strbuf_append(sb, b, (size_t)n);
}

/* Decodes one escape at body[i] == '\\'. Appends to sb (if non-NULL) and
 * returns the number of source bytes consumed; on a bad escape, reports it
 * (if P) and returns the bytes to skip. */
static size_t decode_escape(lang_parser *P, uint32_t at, const char *body, size_t n, size_t i,
                            sgl_strbuf *sb) {
    if (i + 1 >= n) {
        if (P) lang_error(P, (lang_loc){at + (uint32_t)i, at + (uint32_t)i + 1}, "backslash at end of string");
        return 1;
    }
    char c = body[i + 1];
    const char *simple = NULL;
    switch (c) {
    case 'n': simple = "\n"; break;
    case 't': simple = "\t"; break;
    case 'r': simple = "\r"; break;
    case '0': simple = ""; break;
    case '\\': simple = "\\"; break;
    case '"': simple = "\""; break;
    case '\'': simple = "'"; break;
    case '{': simple = "{"; break;
    case '}': simple = "}"; break;
    case '\n': simple = ""; break; /* line continuation (""" strings) */
    default: break;
    }
    if (simple) {
        if (sb) {
            if (c == '0')
                sgl_strbuf_append(sb, "\0", 1);
            else
                sgl_strbuf_puts(sb, simple);
        }
        return 2;
    }
    if (c == 'x') {
        int h1 = i + 2 < n ? hexval(body[i + 2]) : -1, h2 = i + 3 < n ? hexval(body[i + 3]) : -1;
        if (h1 < 0 || h2 < 0 || h1 * 16 + h2 > 0x7F) {
            if (P)
                lang_error(P, (lang_loc){at + (uint32_t)i, at + (uint32_t)SGL_MIN(i + 4, n)},
                           "invalid \\x escape (expected two hex digits 00-7f; use \\u{...} above 7f)");
            return SGL_MIN(n - i, (size_t)2);
        }
        if (sb) sgl_strbuf_putc(sb, (char)(h1 * 16 + h2));
        return 4;
    }
    if (c == 'u') {
        size_t j = i + 2;
        uint32_t cp = 0;
        int digits = 0;
        bool ok = j < n && body[j] == '{';
        if (ok) {
            for (j++; j < n && hexval(body[j]) >= 0 && digits < 7; j++, digits++)
                cp = cp * 16 + (uint32_t)hexval(body[j]);
            ok = j < n && body[j] == '}' && digits >= 1 && digits <= 6;
        }
        if (!ok) {
            if (P)
                lang_error(P, (lang_loc){at + (uint32_t)i, at + (uint32_t)SGL_MIN(j + 1, n)},
                           "invalid \\u escape (write \\u{XXXX} with 1 to 6 hex digits)");
            return SGL_MIN(n - i, (size_t)2);
        }
        if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
            if (P)
                lang_error(P, (lang_loc){at + (uint32_t)i, at + (uint32_t)j + 1},
                           "\\u{%X} is not a Unicode scalar value", (unsigned)cp);
        } else if (sb) {
            utf8_put(sb, cp);
        }
        return j + 1 - i;
    }
    if (P) {
        if (c >= 32 && c < 127)
            lang_error(P, (lang_loc){at + (uint32_t)i, at + (uint32_t)i + 2}, "unknown escape '\\%c'", c);
        else
            lang_error(P, (lang_loc){at + (uint32_t)i, at + (uint32_t)i + 2}, "unknown escape sequence");
    }
    return 2;
}

sgl_node *lang_string(lang_parser *P, lang_loc l, uint32_t at, const char *body, size_t n, bool raw,
                      uint8_t quote) {
    sgl_node *node = ast_new(P, SGL_AST_STRING, l);
    if (node == &oom_node) return node;
    node->str.quote = quote;
    node->str.raw = raw;
    sgl_strbuf sb = {0};
    sgl_strbuf_reserve(&sb, n + 1);
    for (size_t i = 0; i < n;) {
        if (!raw && body[i] == '\\') {
            i += decode_escape(P, at, body, n, i, &sb);
        } else {
            size_t j = i;
            while (j < n && (raw || body[j] != '\\')) j++;
            sgl_strbuf_append(&sb, body + i, j - i);
            i = j;
        }
    }
    char *s = sgl_arena_alloc(P->arena, sb.len + 1);
    if (s && sb.len) memcpy(s, sb.data, sb.len);
    node->str.bytes = s ? s : "";
    node->str.len = s ? sb.len : 0;
    sgl_strbuf_free(&sb);
    return node;
}

uint32_t lang_string_src_offset(const sgl_program *p, const sgl_node *str, size_t value_off) {
    const sgl_source *src = &p->files[str->loc.file];
    uint32_t at = str->loc.start;
    if (str->str.quote) at += (str->str.raw ? 1 : 0) + str->str.quote;
    uint32_t end = str->loc.end >= str->str.quote ? str->loc.end - str->str.quote : str->loc.end;
    if (end > src->len) end = src->len;
    if (at > end) return str->loc.start;
    const char *body = src->text + at;
    size_t n = end - at, i = 0, out = 0;
    while (i < n && out < value_off) {
        if (!str->str.raw && body[i] == '\\') {
            sgl_strbuf tmp = {0};
            size_t used = decode_escape(NULL, at, body, n, i, &tmp);
            out += tmp.len;
            sgl_strbuf_free(&tmp);
            i += used;
        } else {
            i++;
            out++;
        }
    }
    return at + (uint32_t)i;
}

sgl_node *lang_number(lang_parser *P, lang_loc l, const char *text, size_t n, bool is_float) {
    sgl_node *node = ast_new(P, is_float ? SGL_AST_FLOAT : SGL_AST_INT, l);
    if (node == &oom_node) return node;
    char buf[128];
    size_t k = 0;
    bool bad_us = text[n - 1] == '_';
    for (size_t i = 0; i < n; i++) {
        if (text[i] == '_') {
            if (i + 1 < n && text[i + 1] == '_') bad_us = true;
            continue;
        }
        if (k + 1 < sizeof buf) buf[k++] = text[i];
    }
    buf[k] = 0;
    if (bad_us) {
        lang_error(P, l, "misplaced '_' in number (use single underscores between digits)");
        return node;
    }
    if (k + 1 >= sizeof buf) {
        lang_error(P, l, "number literal too long");
        return node;
    }
    errno = 0;
    if (is_float) {
        node->real = strtod(buf, NULL);
        if (errno == ERANGE && isinf(node->real)) lang_error(P, l, "float literal out of range");
    } else {
        int base = 10;
        const char *s = buf;
        if (k > 1 && buf[0] == '0' && (buf[1] == 'x' || buf[1] == 'X')) base = 16, s += 2;
        else if (k > 1 && buf[0] == '0' && (buf[1] == 'b' || buf[1] == 'B')) base = 2, s += 2;
        if (!*s) {
            lang_error(P, l, "number has no digits");
            return node;
        }
        unsigned long long v = strtoull(s, NULL, base);
        if (errno == ERANGE || v > (unsigned long long)INT64_MAX)
            lang_error(P, l, "integer literal too large (the limit is 9223372036854775807)");
        else
            node->integer = (int64_t)v;
    }
    return node;
}

/* ---- dump ---- */

static void dump_str(FILE *out, const char *s, size_t n) {
    fputc('"', out);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': fputs("\\\"", out); break;
        case '\\': fputs("\\\\", out); break;
        case '\n': fputs("\\n", out); break;
        case '\t': fputs("\\t", out); break;
        case '\r': fputs("\\r", out); break;
        default:
            if (c < 32 || c == 127)
                fprintf(out, "\\x%02x", c);
            else
                fputc(c, out);
        }
    }
    fputc('"', out);
}

static void dump_bind(FILE *out, const sgl_binding *b) {
    switch (b->kind) {
    case SGL_BIND_UNRESOLVED: break;
    case SGL_BIND_LOCAL: fprintf(out, " @local:%d", b->slot); break;
    case SGL_BIND_PARAM: fprintf(out, " @param:%d", b->slot); break;
    case SGL_BIND_CONST: fprintf(out, " @const:m%u", b->module); break;
    case SGL_BIND_FN: fprintf(out, " @fn:m%u", b->module); break;
    case SGL_BIND_BUILTIN: fprintf(out, " @builtin"); break;
    }
}

static void dump_node(const sgl_program *p, const sgl_node *n, int ind, FILE *out);

static void dump_list(const sgl_program *p, const sgl_node_list *l, int ind, FILE *out) {
    for (uint32_t i = 0; i < l->len; i++) dump_node(p, l->items[i], ind, out);
}

static void dump_loc(const sgl_program *p, const sgl_node *n, FILE *out) {
    uint32_t line, col;
    if (n->loc.file >= p->n_files) return;
    sgl_source_line_col(&p->files[n->loc.file], n->loc.start, &line, &col);
    fprintf(out, " %u:%u", line, col);
}

/* One node per line: "(kind attrs line:col" then children indented by two,
 * then ")" closing on the last child's line. */
static void dump_node(const sgl_program *p, const sgl_node *n, int ind, FILE *out) {
    if (ind > 0) fprintf(out, "\n%*s", ind, "");
    fprintf(out, "(%s", sgl_ast_kind_name(n->kind));
    int ci = ind + 2;
    switch (n->kind) {
    case SGL_AST_MODULE:
        fputc(' ', out);
        dump_str(out, n->module.path, strlen(n->module.path));
        dump_list(p, &n->module.items, ci, out);
        break;
    case SGL_AST_FN:
        fprintf(out, " %s", n->fn.name);
        if (n->fn.flags & SGL_FN_REORDER) fputs(" reorder", out);
        if (n->fn.n_slots) fprintf(out, " slots=%u", n->fn.n_slots);
        dump_loc(p, n, out);
        dump_list(p, &n->fn.annots, ci, out);
        dump_list(p, &n->fn.params, ci, out);
        dump_node(p, n->fn.body, ci, out);
        break;
    case SGL_AST_PARAM:
        fprintf(out, " %s %d", n->param.name, n->param.slot);
        break;
    case SGL_AST_ANNOT:
        fprintf(out, " %s", n->annot.name);
        break;
    case SGL_AST_CONST:
        fprintf(out, " %s", n->decl.name);
        dump_loc(p, n, out);
        dump_node(p, n->decl.value, ci, out);
        break;
    case SGL_AST_IMPORT:
        fputc(' ', out);
        dump_str(out, n->import.path, strlen(n->import.path));
        if (n->import.module >= 0) fprintf(out, " m%d", n->import.module);
        break;
    case SGL_AST_MAIN:
        if (n->main.n_slots) fprintf(out, " slots=%u", n->main.n_slots);
        dump_loc(p, n, out);
        dump_node(p, n->main.body, ci, out);
        break;
    case SGL_AST_BLOCK:
        dump_list(p, &n->block.stmts, ci, out);
        break;
    case SGL_AST_LET:
        fprintf(out, " %s", n->decl.name);
        if (n->decl.slot >= 0) fprintf(out, " @local:%d", n->decl.slot);
        dump_loc(p, n, out);
        dump_node(p, n->decl.value, ci, out);
        break;
    case SGL_AST_ASSIGN:
        fprintf(out, " %s%s", n->assign.op == SGL_OP_NONE ? "" : sgl_op_name(n->assign.op), "=");
        dump_loc(p, n, out);
        dump_node(p, n->assign.target, ci, out);
        dump_node(p, n->assign.value, ci, out);
        break;
    case SGL_AST_EXPR_STMT:
        dump_loc(p, n, out);
        dump_node(p, n->expr_stmt.expr, ci, out);
        break;
    case SGL_AST_IF:
        if (n->if_.is_elif) fputs(" elif", out);
        dump_loc(p, n, out);
        dump_node(p, n->if_.cond, ci, out);
        dump_node(p, n->if_.then, ci, out);
        if (n->if_.els) dump_node(p, n->if_.els, ci, out);
        break;
    case SGL_AST_FOR:
        fprintf(out, " %s", n->for_.name);
        if (n->for_.slot >= 0) fprintf(out, " @local:%d", n->for_.slot);
        dump_loc(p, n, out);
        dump_node(p, n->for_.iter, ci, out);
        dump_node(p, n->for_.body, ci, out);
        break;
    case SGL_AST_WHILE:
        dump_loc(p, n, out);
        dump_node(p, n->while_.cond, ci, out);
        dump_node(p, n->while_.body, ci, out);
        break;
    case SGL_AST_BREAK:
    case SGL_AST_CONTINUE:
        dump_loc(p, n, out);
        break;
    case SGL_AST_RETURN:
        dump_loc(p, n, out);
        if (n->ret.value) dump_node(p, n->ret.value, ci, out);
        break;
    case SGL_AST_ASSERT:
        dump_loc(p, n, out);
        dump_node(p, n->assert_.cond, ci, out);
        if (n->assert_.msg) dump_node(p, n->assert_.msg, ci, out);
        break;
    case SGL_AST_WITH:
        if ((unsigned)n->with.role < SGL_BUILTIN__COUNT) fprintf(out, " %s", sgl_builtin_name(n->with.role));
        dump_loc(p, n, out);
        dump_node(p, n->with.call, ci, out);
        dump_node(p, n->with.body, ci, out);
        break;
    case SGL_AST_NONE: break;
    case SGL_AST_BOOL: fputs(n->boolean ? " true" : " false", out); break;
    case SGL_AST_INT: fprintf(out, " %lld", (long long)n->integer); break;
    case SGL_AST_FLOAT: fprintf(out, " %.17g", n->real); break;
    case SGL_AST_STRING:
        fputc(' ', out);
        dump_str(out, n->str.bytes, n->str.len);
        break;
    case SGL_AST_FSTRING:
        dump_list(p, &n->fstr.parts, ci, out);
        break;
    case SGL_AST_NAME:
        fprintf(out, " %s", n->name.name);
        dump_bind(out, &n->name.bind);
        break;
    case SGL_AST_LIST:
    case SGL_AST_MAP:
        dump_list(p, &n->list.items, ci, out);
        break;
    case SGL_AST_PAIR:
        dump_node(p, n->pair.key, ci, out);
        dump_node(p, n->pair.value, ci, out);
        break;
    case SGL_AST_INDEX:
        dump_node(p, n->index.obj, ci, out);
        dump_node(p, n->index.index, ci, out);
        break;
    case SGL_AST_UNARY:
        fprintf(out, " %s", sgl_op_name(n->unary.op));
        dump_node(p, n->unary.operand, ci, out);
        break;
    case SGL_AST_BINARY:
        fprintf(out, " %s", sgl_op_name(n->binary.op));
        dump_node(p, n->binary.lhs, ci, out);
        dump_node(p, n->binary.rhs, ci, out);
        break;
    case SGL_AST_CALL:
        if (n->call.call_kind == SGL_CALL_FN_FRESH) fputs(" fresh", out);
        dump_node(p, n->call.callee, ci, out);
        dump_list(p, &n->call.args, ci, out);
        break;
    case SGL_AST_KWARG:
        fprintf(out, " %s", n->kwarg.name);
        dump_node(p, n->kwarg.value, ci, out);
        break;
    case SGL_AST_COMP:
        fprintf(out, " %s %s", n->comp.key ? "map" : "list", n->comp.name);
        if (n->comp.slot >= 0) fprintf(out, " @local:%d acc=@local:%d", n->comp.slot, n->comp.acc_slot);
        dump_loc(p, n, out);
        dump_node(p, n->comp.iter, ci, out);
        if (n->comp.key) dump_node(p, n->comp.key, ci, out);
        dump_node(p, n->comp.value, ci, out);
        if (n->comp.cond) dump_node(p, n->comp.cond, ci, out);
        break;
    case SGL_AST_ERROR:
    case SGL_AST__COUNT:
        break;
    }
    fputc(')', out);
}

void sgl_ast_dump(const sgl_program *p, const sgl_node *m, FILE *out) {
    if (!m) return;
    dump_node(p, m, 0, out);
    fputc('\n', out);
}
