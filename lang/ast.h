/* ast.h: the SGL abstract syntax tree.
 *
 * Every node lives in its program's arena (sgl_program.arena) and is freed
 * with the program; nothing here is malloc'd separately, so nodes are never
 * freed one by one and pointers between nodes stay valid for the program's
 * lifetime. Strings (names, literal bytes) are arena copies, NUL-terminated.
 *
 * Locations are byte ranges [start, end) in one source file (file id = index
 * into sgl_program.files); line:col is computed only when printing.
 *
 * The parser fills the syntax fields. The checker (lang/check.c, run by
 * sgl_program_load_* unless told to stop after parsing) fills the fields
 * marked "checker:" — name bindings, frame slots, call modes, loop targets —
 * which the compiler consumes. Fields are only ever added, never renamed.
 *
 *   module ─ items: fn | const | import | main
 *   fn     ─ params: param...   body: block   annots: annot...
 *   block  ─ stmts: let | assign | expr | if | for | while | break | continue
 *                   | return | assert | with
 *   expr   ─ none | bool | int | float | str | fstr | name | list | map
 *            | index | unary | binary | call (args: expr | kwarg)
 */
#ifndef SGL_LANG_AST_H
#define SGL_LANG_AST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Node kinds: SGL_AST_MODULE, SGL_AST_FN, ... (see ast.def). */
typedef enum sgl_ast_kind {
#define AST(kind, name, doc) SGL_AST_##kind,
#include "lang/ast.def"
#undef AST
    SGL_AST__COUNT
} sgl_ast_kind;

/* Operators: SGL_OP_ADD, ... (see ops.def). */
typedef enum sgl_op {
#define OP(name, spelling, prec) SGL_OP_##name,
#include "lang/ops.def"
#undef OP
    SGL_OP__COUNT
} sgl_op;

/* Builtins and primitives: SGL_BUILTIN_GEN, ... (see builtins.def). */
typedef enum sgl_builtin {
#define BUILTIN(id, name, min, max, flags) SGL_BUILTIN_##id,
#include "lang/builtins.def"
#undef BUILTIN
    SGL_BUILTIN__COUNT
} sgl_builtin;

/* A byte range [start, end) in source file `file`. */
typedef struct sgl_loc {
    uint32_t file;
    uint32_t start;
    uint32_t end;
} sgl_loc;

typedef struct sgl_node sgl_node;

/* A list of child nodes (arena-owned array). Never NULL items. */
typedef struct sgl_node_list {
    sgl_node **items;
    uint32_t len;
    uint32_t cap;
} sgl_node_list;

/* What an identifier refers to (checker: filled for every NAME). */
typedef enum sgl_bind_kind {
    SGL_BIND_UNRESOLVED = 0, /* not checked yet, or an undefined name (error reported) */
    SGL_BIND_LOCAL,          /* let or for variable: slot in the current frame */
    SGL_BIND_PARAM,          /* function parameter: slot in the current frame */
    SGL_BIND_CONST,          /* top-level const (decl = CONST node, maybe in another module) */
    SGL_BIND_FN,             /* top-level fn (decl = FN node, maybe in another module) */
    SGL_BIND_BUILTIN,        /* builtin or primitive: .builtin */
} sgl_bind_kind;

typedef struct sgl_binding {
    sgl_bind_kind kind;
    int32_t slot;        /* LOCAL/PARAM: frame slot (params first: 0..n_params-1); else -1 */
    sgl_builtin builtin; /* BUILTIN: which one */
    uint32_t module;     /* CONST/FN: index of the defining module in sgl_program.modules */
    sgl_node *decl;      /* LET/FOR/PARAM/CONST/FN node that declares it; NULL for builtins */
} sgl_binding;

/* How a call runs (checker: filled for every CALL). */
typedef enum sgl_call_kind {
    SGL_CALL_UNKNOWN = 0, /* not checked, or callee is not a known fn/builtin (e.g. a variable) */
    SGL_CALL_BUILTIN,     /* callee names a builtin/primitive (.builtin) */
    SGL_CALL_FN,          /* user fn, every parameter bound: first argument is the stream
                             to extend (or any value); value = the fn's return value */
    SGL_CALL_FN_FRESH,    /* user fn called without its first parameter: it runs on a fresh
                             stream bound to parameter 0; value = that stream */
} sgl_call_kind;

/* fn annotation flags (checker: from the ANNOT list). */
enum {
    SGL_FN_REORDER = 1u << 0, /* @reorder: the order of appends to the stream is free */
};

/* One node. `kind` says which union member is valid (see ast.def). */
struct sgl_node {
    sgl_ast_kind kind;
    sgl_loc loc; /* the whole construct */
    uint32_t depth; /* parser: expression tree height (leaves 0; statements 0) */
    union {
        struct { /* MODULE */
            const char *path; /* path as opened (display form) */
            sgl_node_list items;
            uint32_t index;   /* this module's index in sgl_program.modules */
        } module;
        struct { /* FN */
            const char *name;
            sgl_loc name_loc;
            sgl_node_list params; /* PARAM nodes */
            sgl_node_list annots; /* ANNOT nodes, source order */
            sgl_node *body;       /* BLOCK */
            uint32_t flags;       /* checker: SGL_FN_* */
            uint32_t n_slots;     /* checker: frame size (params + every let/for variable) */
        } fn;
        struct { /* PARAM */
            const char *name;
            int32_t slot; /* == position in the parameter list */
        } param;
        struct { /* ANNOT */
            const char *name; /* without the '@' */
        } annot;
        struct { /* CONST, LET */
            const char *name;
            sgl_loc name_loc;
            sgl_node *value;
            int32_t slot;     /* LET (checker): frame slot; CONST: -1 */
            uint32_t n_reads; /* checker: number of uses that read it */
        } decl;
        struct { /* IMPORT */
            const char *path;    /* the string as written, e.g. "chat" */
            sgl_loc path_loc;
            int32_t module;      /* loader: index into sgl_program.modules, -1 if not loaded */
        } import;
        struct { /* MAIN */
            sgl_node *body;   /* BLOCK */
            uint32_t n_slots; /* checker: frame size */
        } main;
        struct { /* BLOCK */
            sgl_node_list stmts;
        } block;
        struct { /* ASSIGN */
            sgl_op op;        /* SGL_OP_NONE for '=', else ADD/SUB/MUL/DIV for '+=' ... */
            sgl_node *target; /* NAME or INDEX */
            sgl_node *value;
        } assign;
        struct { /* EXPR_STMT */
            sgl_node *expr;
        } expr_stmt;
        struct { /* IF */
            sgl_node *cond;
            sgl_node *then; /* BLOCK */
            sgl_node *els;  /* BLOCK, IF (an elif), or NULL */
            bool is_elif;   /* this IF was written as `elif` */
        } if_;
        struct { /* FOR */
            const char *name; /* loop variable */
            sgl_loc name_loc;
            int32_t slot;     /* checker */
            sgl_node *iter;
            sgl_node *body;   /* BLOCK */
        } for_;
        struct { /* WHILE */
            sgl_node *cond;
            sgl_node *body; /* BLOCK */
        } while_;
        struct { /* BREAK, CONTINUE */
            sgl_node *loop; /* checker: the enclosing FOR or WHILE */
        } jump;
        struct { /* RETURN */
            sgl_node *value; /* or NULL */
        } ret;
        struct { /* ASSERT */
            sgl_node *cond;
            sgl_node *msg; /* or NULL */
        } assert_;
        struct { /* WITH */
            sgl_node *call;      /* the CALL written after `with`, e.g. user(s) */
            sgl_node *body;      /* BLOCK */
            sgl_builtin role;    /* checker: SGL_BUILTIN_SYSTEM/USER/ASSISTANT */
            sgl_node *stream;    /* checker: the call's argument (the stream expression) */
        } with;
        bool boolean;  /* BOOL */
        int64_t integer; /* INT */
        double real;     /* FLOAT */
        struct { /* STRING */
            const char *bytes; /* decoded value, NUL-terminated (may hold NULs: use len) */
            size_t len;
            uint8_t quote;     /* 1: "..."  2: r#"..."#  3: """..."""  0: a piece of an f-string */
            bool raw;          /* r"...": no escape processing */
        } str;
        struct { /* COMP */
            sgl_node *key;     /* map comprehension: the key expression; list: NULL */
            sgl_node *value;
            const char *name;  /* loop variable */
            sgl_loc name_loc;
            int32_t slot;      /* checker: the loop variable's slot */
            int32_t acc_slot;  /* checker: hidden slot holding the result being built */
            sgl_node *iter;
            sgl_node *cond;    /* or NULL */
        } comp;
        struct { /* FSTRING */
            sgl_node_list parts; /* STRING pieces and expressions, in order */
        } fstr;
        struct { /* NAME */
            const char *name;
            sgl_binding bind; /* checker */
        } name;
        struct { /* LIST, MAP */
            sgl_node_list items; /* LIST: expressions; MAP: PAIR nodes */
        } list;
        struct { /* PAIR */
            sgl_node *key;
            sgl_node *value;
        } pair;
        struct { /* INDEX */
            sgl_node *obj;
            sgl_node *index;
        } index;
        struct { /* UNARY */
            sgl_op op; /* NEG or NOT */
            sgl_node *operand;
        } unary;
        struct { /* BINARY */
            sgl_op op; /* arithmetic, comparison, IN, NOT_IN, AND, OR (short-circuit) */
            sgl_node *lhs;
            sgl_node *rhs;
        } binary;
        struct { /* CALL */
            sgl_node *callee;      /* usually a NAME */
            sgl_node_list args;    /* positional expressions, then KWARG nodes */
            uint32_t n_positional; /* args[0..n_positional) are positional */
            sgl_call_kind call_kind; /* checker */
            sgl_builtin builtin;     /* checker: for SGL_CALL_BUILTIN */
            sgl_node *fn;            /* checker: FN node for SGL_CALL_FN / FN_FRESH */
            /* checker, for FN calls: param_args[i] = argument expression bound to
             * parameter i (positional or keyword value), NULL for the fresh
             * stream parameter. Array of fn->fn.params.len entries. */
            sgl_node **param_args;
        } call;
        struct { /* KWARG */
            const char *name;
            sgl_loc name_loc;
            sgl_node *value;
        } kwarg;
    };
};

/* Returns the dump name of a kind ("fn", "let", ...), or "?" if out of range. */
const char *sgl_ast_kind_name(sgl_ast_kind kind);
/* Returns an operator's spelling ("+", "not in", ...), or "?". */
const char *sgl_op_name(sgl_op op);
/* Returns a builtin's SGL name ("gen", ...), or "?". */
const char *sgl_builtin_name(sgl_builtin b);
/* Returns the SGL_BI_* flags of a builtin (see lang.h), 0 if out of range. */
unsigned sgl_builtin_flags(sgl_builtin b);
/* Stores n's direct children (non-NULL, source order) in out[0..cap) and
 * returns how many there are (may exceed cap: then only cap are stored).
 * For generic walks; MODULE children are its items, CALL children the
 * callee then the arguments, FN children annots, params, body. */
size_t sgl_ast_children(sgl_node *n, sgl_node **out, size_t cap);

#endif
