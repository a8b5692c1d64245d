/* compiler.h: the SGL compiler's public API: checked program (lang/) ->
 * dataflow graph IR -> passes -> SGVM bytecode module (bytecode.h), plus the
 * dumps behind `sglc dump --graph` and `sglc dump --bytecode`.
 *
 *   compiler_options o = compiler_options_default();  // -O1, verify in debug builds
 *   sgl_error err;
 *   sgl_module *m = compiler_compile(prog, &o, &err);
 *   if (!m) fprintf(stderr, "%s\n", err.msg);
 *   ... run m on the VM ...
 *   compiler_module_free(m);
 *
 * The module does not point into the program: the program may be freed
 * first.
 */
#ifndef SGL_COMPILER_H
#define SGL_COMPILER_H

#include <stdbool.h>
#include <stdio.h>

#include "compiler/bytecode.h"
#include "lang/lang.h"
#include "util/util.h"

typedef struct compiler_options {
    int opt_level; /* 0: no passes; 1: default; 2: also @reorder code motion */
    bool verify;   /* run the IR verifier after lowering and after every pass */
} compiler_options;

/* Returns -O1 with verify on in debug builds (NDEBUG unset). */
compiler_options compiler_options_default(void);

/* Compiles every fn of every module of p (which must have loaded without
 * errors) and its main block. opts NULL = defaults. Returns a module the
 * caller frees with compiler_module_free, or NULL with err set (an internal
 * limit was exceeded, the verifier found a compiler bug, or memory ran out). */
sgl_module *compiler_compile(const sgl_program *p, const compiler_options *opts, sgl_error *err);
void compiler_module_free(sgl_module *m);

/* Writes the whole module in the disassembler's text form (constants,
 * call sites, then every function; stable: no addresses). */
void compiler_disasm(const sgl_module *m, FILE *out);
/* Writes one function (index fn) only. */
void compiler_disasm_fn(const sgl_module *m, uint32_t fn, FILE *out);

/* Graph dump formats. */
typedef enum compiler_graph_format {
    COMPILER_GRAPH_TEXT,
    COMPILER_GRAPH_JSON,
    COMPILER_GRAPH_DOT,
} compiler_graph_format;

/* Builds the IR of p, runs the passes of opts->opt_level and writes the
 * graphs of every function (or only fn_name when non-NULL) to out in fmt.
 * Returns 0, or -1 with err set (e.g. no function named fn_name). */
int compiler_dump_graph(const sgl_program *p, const compiler_options *opts, compiler_graph_format fmt,
                        const char *fn_name, FILE *out, sgl_error *err);

/* What `sglc dump --graph` / `--bytecode` asks for (cmd_dump parses it). */
typedef struct compiler_dump_request {
    bool bytecode;              /* --bytecode; else the graph */
    compiler_graph_format fmt;  /* --format (graph only) */
    int opt_level;              /* -O LEVEL (0..2); -1: the default */
    const char *fn;             /* --fn NAME or NULL: every function */
    bool trace;                 /* --trace: every pass's graph (text format) */
    bool verify;                /* --verify: check the graph after every pass */
} compiler_dump_request;

/* Compiles p and prints the requested view to stdout. Returns the exit
 * status (0 ok, 1 compile error or unknown --fn, 2 usage). */
int compiler_dump_run(const sgl_program *p, const compiler_dump_request *r);

#endif
