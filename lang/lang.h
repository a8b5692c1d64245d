/* lang.h: the SGL front end's public API: load a program (a root file plus
 * everything it imports), parse and check it, and report diagnostics.
 *
 *   sgl_program *p;
 *   int rc = sgl_program_load_file(&p, "app.sgl", NULL);   // NULL = default options
 *   sgl_diags_print(p, stderr, isatty(2) && !getenv("NO_COLOR"));
 *   if (rc == 0) { ... p->modules[0] is the root module's AST ... }
 *   sgl_program_free(p);
 *
 * A program owns everything reachable from it: its arena (all AST nodes and
 * strings), source texts, modules and diagnostics. Nothing returned by this
 * API outlives sgl_program_free.
 */
#ifndef SGL_LANG_H
#define SGL_LANG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "lang/ast.h"
#include "util/util.h"

/* ---- builtin metadata (builtins.def / kwargs.def) ------------------------ */

enum {
    SGL_BI_PRIM = 1u << 0, /* stream primitive */
    SGL_BI_ROLE = 1u << 1, /* chat role wrapper: system/user/assistant */
    SGL_BI_GEN = 1u << 2,  /* produces model output (gen, select) */
    SGL_BI_IO = 1u << 3,   /* needs --allow-io */
    SGL_BI_SHADOW = 1u << 4, /* a module's own fn/const of this name takes precedence
                                (builtins added after programs could use the name) */
};

/* What a literal keyword argument must look like. */
typedef enum sgl_kwarg_type {
    SGL_KWT_INT,             /* integer in [lo, hi] */
    SGL_KWT_FLOAT,           /* int or float in [lo, hi] */
    SGL_KWT_BOOL,
    SGL_KWT_STR_OR_STR_LIST, /* "x" or ["x", "y"] */
    SGL_KWT_INT_LIST,        /* [1, 2], each in [lo, hi] */
    SGL_KWT_STR_LIST,        /* non-empty ["a", "b"] */
    SGL_KWT_DTYPE,           /* "int" | "float" | "bool" */
    SGL_KWT_REGEX,           /* string in the regex dialect (sgl_regex_check) */
    SGL_KWT_MAP_OR_STR,      /* JSON schema: a map, or a string holding JSON */
    SGL_KWT_GRAMMAR,         /* string: an EBNF / GBNF grammar */
    SGL_KWT_METHOD,          /* select method name */
    SGL_KWT_JOIN_MODE,       /* "gather" | "concat" | "concate_and_append" */
    SGL_KWT_STR,             /* a string */
} sgl_kwarg_type;

/* Which builtins accept a keyword argument (mask bits). */
enum {
    SGL_KWB_GEN = 1u << 0,
    SGL_KWB_SELECT = 1u << 1,
    SGL_KWB_RUN_BATCH = 1u << 2,
    SGL_KWB_JOIN = 1u << 3,
};

typedef enum sgl_kwarg_id {
#define KWARG(id, name, type, lo, hi, by) SGL_KWARG_##id,
#include "lang/kwargs.def"
#undef KWARG
    SGL_KWARG__COUNT
} sgl_kwarg_id;

typedef struct sgl_kwarg_info {
    const char *name;
    sgl_kwarg_type type;
    double lo, hi; /* inclusive bounds; NAN = unbounded */
    unsigned accepted_by; /* SGL_KWB_* */
} sgl_kwarg_info;

/* Returns the table entry for id (static storage), or NULL if out of range. */
const sgl_kwarg_info *sgl_kwarg_get(sgl_kwarg_id id);
/* Returns the id of a keyword argument name or of one of its aliases
 * (SGLang's spellings: max_new_tokens, min_new_tokens, choices_method,
 * num_threads), or -1. */
int sgl_kwarg_lookup(const char *name);
/* The i-th alias name (static) with its id in *id, or NULL past the end. */
const char *sgl_kwarg_alias(size_t i, sgl_kwarg_id *id);
/* Returns the builtin with this name, or -1. */
int sgl_builtin_lookup(const char *name);
/* Returns min/max positional argument counts (max -1 = unbounded). */
void sgl_builtin_arity(sgl_builtin b, int *min_args, int *max_args);
/* Select methods, in the order of this table; the first is the default. */
extern const char *const sgl_select_methods[3];

/* ---- sources and diagnostics -------------------------------------------- */

/* A source file (or in-memory buffer). text is NUL-terminated, owned by the
 * program. line_starts[i] is the byte offset where line i+1 begins. */
typedef struct sgl_source {
    char *path;       /* display path, as the user or import wrote it resolved */
    char *real_path;  /* canonical path (for cycle/duplicate detection), or NULL */
    char *text;
    uint32_t len;
    uint32_t *line_starts;
    uint32_t n_lines;
} sgl_source;

typedef enum sgl_diag_level {
    SGL_DIAG_ERROR,
    SGL_DIAG_WARNING,
    SGL_DIAG_NOTE, /* attached to the error/warning before it */
} sgl_diag_level;

typedef struct sgl_diag {
    sgl_diag_level level;
    bool has_loc;   /* false: a message about no particular place (e.g. a missing root file) */
    sgl_loc loc;
    char *msg;      /* program-owned, no trailing newline or period */
} sgl_diag;

typedef struct sgl_diags {
    sgl_diag *items; /* malloc'd, program-owned */
    size_t len, cap;
    int n_errors;
    int n_warnings;
} sgl_diags;

/* Converts a byte offset in file to 1-based line and column (bytes). */
void sgl_source_line_col(const sgl_source *src, uint32_t offset, uint32_t *line, uint32_t *col);

/* ---- programs ------------------------------------------------------------ */

/* Supplies a module source the file system doesn't have (e.g. an embedded
 * stdlib). Called with the import string ("chat"); returns true and sets
 * text and len (static storage or storage outliving the program; it is copied)
 * and *display_path (copied, e.g. "<stdlib>/chat.sgl") if it has it. */
typedef bool (*sgl_module_provider)(void *ctx, const char *name, const char **text,
                                    size_t *len, const char **display_path);

typedef struct sgl_load_options {
    /* Extra directories searched for imports after the importing file's own
     * directory and $SGL_PATH, before <source root>/stdlib. */
    const char *const *search_path;
    size_t n_search_path;
    bool ignore_env;     /* don't read $SGL_PATH */
    bool no_filesystem;  /* never open files for imports (fuzzing, sandboxes) */
    sgl_module_provider provider; /* consulted last; NULL = none */
    void *provider_ctx;
    bool allow_io;       /* file/http/shell builtins allowed (--allow-io) */
    bool parse_only;     /* stop after parsing + loading imports (no checks) */
    int max_errors;      /* stop adding errors after this many (0 = 100) */
    /* Resource limits (docs/language.md "Limits"); 0 = the default. */
    size_t max_file_bytes;   /* one source file (SGL_DEFAULT_MAX_FILE) */
    size_t max_total_bytes;  /* all files of a program (SGL_DEFAULT_MAX_SOURCE) */
    /* Import boundary. Unless allow_io or imports_anywhere, an import must
     * resolve (symlinks followed) under import_root (NULL: the root file's
     * directory), an -I / $SGL_PATH directory or the standard library;
     * providers (the embedded stdlib) are always allowed. */
    const char *import_root;
    bool imports_anywhere;
} sgl_load_options;

#define SGL_DEFAULT_MAX_FILE ((size_t)4 << 20)
#define SGL_DEFAULT_MAX_SOURCE ((size_t)16 << 20)

typedef struct sgl_program {
    sgl_arena arena;      /* owns every AST node and string */
    sgl_source *files;    /* malloc'd; file id = index */
    uint32_t n_files;
    sgl_node **modules;   /* malloc'd; MODULE nodes; [0] = root; imports in load order */
    uint32_t n_modules;
    sgl_node *main;       /* the root module's MAIN node, or NULL */
    sgl_diags diags;
    sgl_load_options opts;
    char *root_dir;       /* malloc'd: where imports may resolve (opts.import_root or the root file's dir) */
} sgl_program;

/* Loads path and its imports, parses and (unless opts->parse_only) checks
 * them. opts may be NULL for defaults. Always sets *out to a program the
 * caller must sgl_program_free (NULL only when memory runs out). Returns 0
 * when there are no errors (warnings allowed), -1 otherwise; the reasons are
 * in (*out)->diags. */
int sgl_program_load_file(sgl_program **out, const char *path, const sgl_load_options *opts);
/* Same for an in-memory root file; name is its display path (imports
 * resolve relative to name's directory). text[0..len) is copied. */
int sgl_program_load_buffer(sgl_program **out, const char *name, const char *text, size_t len,
                            const sgl_load_options *opts);
void sgl_program_free(sgl_program *p);

/* Finds a top-level fn by name in the root module (or, failing that, exported
 * by an import). Returns the FN node or NULL. */
sgl_node *sgl_program_find_fn(const sgl_program *p, const char *name);

/* Renders every diagnostic as
 *   file:line:col: error: message
 *    12 |     s += gen("x", max_tokens="many")
 *       |                              ^~~~~~
 * (notes follow their diagnostic). color: ANSI colours. */
void sgl_diags_print(const sgl_program *p, FILE *out, bool color);

/* Adds a diagnostic (printf-style). Returns the new entry or NULL on OOM.
 * For the compiler's own checks: same format, same counters. */
sgl_diag *sgl_diag_add(sgl_program *p, sgl_diag_level level, sgl_loc loc, const char *fmt, ...)
    SGL_PRINTF(4, 5);

/* Writes the AST of module m as an indented S-expression (stable: no
 * addresses; bindings shown as @local:3, @fn, ...). */
void sgl_ast_dump(const sgl_program *p, const sgl_node *m, FILE *out);

/* ---- regex dialect --------------------------------------------------------- */

/* Checks pattern[0..len) against the regex dialect constrained decoding
 * supports (docs/language.md "Regular expressions"). Returns 0 if valid, else
 * -1 with *err_offset = byte offset of the problem in the pattern and msg
 * (static string) describing it. */
int sgl_regex_check(const char *pattern, size_t len, size_t *err_offset, const char **msg);

#endif
