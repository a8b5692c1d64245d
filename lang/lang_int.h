/* lang_int.h: internals shared by the lexer, parser, builders, loader and
 * checker of the SGL front end. Not part of the public API (see lang.h). */
#ifndef SGL_LANG_INT_H
#define SGL_LANG_INT_H

#include "lang/lang.h"

/* A token's byte range in the file being parsed (bison's location type). */
typedef struct lang_loc {
    uint32_t start, end;
} lang_loc;

/* One open bracket, for newline handling and "to close" messages.
 * kind: '(' '[' 'm' (map brace) 'b' (block brace) 'i' (f-string {...}). */
typedef struct lang_bracket {
    char kind;
    uint32_t start;
} lang_bracket;

#define LANG_MAX_NESTING 200  /* open brackets at once */
#define LANG_MAX_DEPTH 1000   /* expression tree depth */

/* Parser + lexer state for one file. */
typedef struct lang_parser {
    sgl_program *prog;
    sgl_arena *arena;
    uint32_t file;
    const char *src; /* the file's text (NUL-terminated), len bytes */
    uint32_t len;
    void *scanner;   /* yyscan_t */
    sgl_node *module;

    /* lexer */
    uint32_t offset;    /* byte offset of the next unread input */
    uint32_t tok_start; /* start of a token spanning several rules */
    bool tok_raw;       /* the triple-quoted string being read is r"""...""" */
    lang_bracket brackets[LANG_MAX_NESTING];
    int depth;
    bool nesting_reported;
    bool expect_block; /* a block header keyword was seen at expect_depth */
    int expect_depth;
    bool closed_block; /* the token just read is a '}' closing a block */
    bool has_unclosed; /* a closer just popped an opener it didn't match */
    lang_bracket unclosed;
    bool stray_closer; /* the token just read is a closer with no opener */

    /* automatic separators (lang_lex) */
    int last_tok;
    int prev_tok; /* the token before last_tok */
    bool pending_nl;
    lang_loc nl_loc;
    bool queued;
    int q_tok;
    lang_loc q_loc;
    void *q_val; /* points to a YYSTYPE-sized buffer */
    unsigned char q_val_buf[32];

    int n_syntax_errors;
    bool depth_reported;
} lang_parser;

/* ---- diagnostics (diag.c) ---- */
sgl_loc lang_loc_make(const lang_parser *P, lang_loc l);
sgl_diag *lang_error(lang_parser *P, lang_loc l, const char *fmt, ...) SGL_PRINTF(3, 4);
sgl_diag *lang_vdiag(sgl_program *p, sgl_diag_level level, bool has_loc, sgl_loc loc,
                     const char *fmt, va_list ap);
/* Sets up line_starts for a source; returns 0 or -1 on OOM. */
int lang_source_index(sgl_source *s);

/* ---- strings (lexer helpers in ast.c) ---- */
/* Decodes escapes of body[0..n) (which starts at file offset `at`) into an
 * arena string; reports bad escapes. Returns the STRING node (never NULL
 * unless OOM). */
sgl_node *lang_string(lang_parser *P, lang_loc l, uint32_t at, const char *body, size_t n,
                      bool raw, uint8_t quote);
/* Maps a byte offset inside a STRING node's decoded value back to a file
 * offset (for regex error positions). */
uint32_t lang_string_src_offset(const sgl_program *p, const sgl_node *str, size_t value_off);
sgl_node *lang_number(lang_parser *P, lang_loc l, const char *text, size_t n, bool is_float);

/* ---- builders (ast.c): one per grammar action; all return arena nodes ---- */
sgl_node *ast_new(lang_parser *P, sgl_ast_kind kind, lang_loc l);
void ast_list_push(lang_parser *P, sgl_node_list *list, sgl_node *n);
sgl_node_list ast_list1(lang_parser *P, sgl_node *n);
const char *ast_str(lang_parser *P, const char *s, size_t n);

sgl_node *ast_fn(lang_parser *P, lang_loc l, sgl_node_list annots, const char *name, lang_loc nl,
                 sgl_node_list params, sgl_node *body);
sgl_node *ast_param(lang_parser *P, lang_loc l, const char *name);
sgl_node *ast_annot(lang_parser *P, lang_loc l, const char *name);
sgl_node *ast_const(lang_parser *P, lang_loc l, const char *name, lang_loc nl, sgl_node *value);
sgl_node *ast_import(lang_parser *P, lang_loc l, sgl_node *path);
sgl_node *ast_main(lang_parser *P, lang_loc l, sgl_node *body);
sgl_node *ast_block(lang_parser *P, lang_loc l, sgl_node_list stmts);
sgl_node *ast_let(lang_parser *P, lang_loc l, const char *name, lang_loc nl, sgl_node *value);
sgl_node *ast_assign(lang_parser *P, lang_loc l, sgl_op op, sgl_node *target, sgl_node *value);
sgl_node *ast_expr_stmt(lang_parser *P, lang_loc l, sgl_node *e);
sgl_node *ast_if(lang_parser *P, lang_loc l, sgl_node *cond, sgl_node *then, sgl_node *els);
sgl_node *ast_for(lang_parser *P, lang_loc l, const char *name, lang_loc nl, sgl_node *iter,
                  sgl_node *body);
sgl_node *ast_while(lang_parser *P, lang_loc l, sgl_node *cond, sgl_node *body);
sgl_node *ast_jump(lang_parser *P, lang_loc l, sgl_ast_kind kind);
sgl_node *ast_return(lang_parser *P, lang_loc l, sgl_node *value);
sgl_node *ast_assert(lang_parser *P, lang_loc l, sgl_node *cond, sgl_node *msg);
sgl_node *ast_with(lang_parser *P, lang_loc l, sgl_node *call, sgl_node *body);
sgl_node *ast_literal(lang_parser *P, lang_loc l, sgl_ast_kind kind, bool value);
sgl_node *ast_fstring(lang_parser *P, lang_loc l, sgl_node_list parts);
sgl_node *ast_name(lang_parser *P, lang_loc l, const char *name);
sgl_node *ast_list(lang_parser *P, lang_loc l, sgl_ast_kind kind, sgl_node_list items);
sgl_node *ast_pair(lang_parser *P, lang_loc l, sgl_node *key, sgl_node *value);
sgl_node *ast_index(lang_parser *P, lang_loc l, sgl_node *obj, sgl_node *index);
sgl_node *ast_unary(lang_parser *P, lang_loc l, sgl_op op, sgl_node *e);
sgl_node *ast_binary(lang_parser *P, lang_loc l, sgl_op op, sgl_node *a, sgl_node *b);
sgl_node *ast_call(lang_parser *P, lang_loc l, sgl_node *callee, sgl_node_list args);
sgl_node *ast_kwarg(lang_parser *P, lang_loc l, const char *name, lang_loc nl, sgl_node *value);
sgl_node *ast_error(lang_parser *P, lang_loc l);
/* f-string interpolation {e!conv:spec} as calls: repr(e) / str(e), then
 * format(e, "spec"); conv and spec may be NULL. */
sgl_node *ast_fmt(lang_parser *P, lang_loc l, sgl_node *e, const char *conv, sgl_node *spec);
/* obj[a:b] as the call slice(obj, a, b) (NULL bounds become none). */
sgl_node *ast_slice(lang_parser *P, lang_loc l, sgl_node *obj, sgl_node *a, sgl_node *b);
/* [value for name in iter if cond] (key NULL) or {key: value for ...}; cond may be NULL. */
sgl_node *ast_comp(lang_parser *P, lang_loc l, sgl_node *key, sgl_node *value, const char *name, lang_loc nl,
                   sgl_node *iter, sgl_node *cond);

/* ---- parser entry (parser.y) ---- */
/* Parses P->src into P->module (items appended). Returns 0 or -1 on syntax
 * errors (reported). */
int lang_parse(lang_parser *P);

/* ---- checker (check.c) ---- */
void lang_check_program(sgl_program *p);

#endif
