/* cmd_dump: `sglc dump --ast|--graph|--bytecode FILE`: print a program's
 * AST (lang), dataflow graph or bytecode (compiler). Diagnostics go to
 * stderr; exit 1 if the program has errors, 2 on usage or for a view that is
 * not built yet. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "compiler/compiler.h"
#include "lang/lang.h"
#include "vm/stdlib_sgl.h"

typedef enum { DUMP_AST, DUMP_GRAPH, DUMP_BYTECODE } dump_view;

static void dump_usage(FILE *out) {
    fprintf(out,
            "usage: sglc dump (--ast | --graph | --bytecode) [--parse-only] [--all] [--allow-io] FILE\n\n"
            "  --ast         the syntax tree as an S-expression, with the checker's name\n"
            "                bindings (@local:N, @param:N, @fn:mK, @const:mK, @builtin)\n"
            "  --parse-only  (--ast) skip the checks; show the tree as parsed\n"
            "  --all         (--ast) also dump imported modules\n"
            "  --graph       the dataflow graph IR (compiler)\n"
            "  --bytecode    the SGVM bytecode (compiler)\n");
}

static bool diag_color(void) {
    const char *nc = getenv("NO_COLOR");
    return isatty(2) && !(nc && *nc);
}

int cmd_dump(int argc, char **argv) {
    int view = -1;
    bool all = false;
    sgl_load_options opts = {0};
    const char *file = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            dump_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--ast")) {
            view = DUMP_AST;
        } else if (!strcmp(a, "--graph")) {
            view = DUMP_GRAPH;
        } else if (!strcmp(a, "--bytecode")) {
            view = DUMP_BYTECODE;
        } else if (!strcmp(a, "--parse-only")) {
            opts.parse_only = true;
        } else if (!strcmp(a, "--all")) {
            all = true;
        } else if (!strcmp(a, "--allow-io")) {
            opts.allow_io = true;
        } else if (compiler_dump_option(argc, argv, i)) {
            i += compiler_dump_option(argc, argv, i) - 1; /* compiler_dump_cmd reads it */
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "sglc dump: unknown option '%s'\n", a);
            dump_usage(stderr);
            return 2;
        } else if (!file) {
            file = a;
        } else {
            fprintf(stderr, "sglc dump: one FILE at a time\n");
            return 2;
        }
    }
    if (view < 0 || !file) {
        dump_usage(stderr);
        return 2;
    }

    opts.provider = vm_stdlib_provider; /* the embedded standard library */
    sgl_program *p = NULL;
    int rc = sgl_program_load_file(&p, file, &opts);
    if (!p) {
        fprintf(stderr, "sglc dump: out of memory\n");
        return 1;
    }
    sgl_diags_print(p, stderr, diag_color());
    int status = rc ? 1 : 0;
    switch ((dump_view)view) {
    case DUMP_AST:
        /* Printed even with errors (a syntax error leaves a partial tree with
         * (error) nodes) so that it can be inspected; the status says 1. */
        for (uint32_t i = 0; i < (all ? p->n_modules : SGL_MIN(p->n_modules, 1u)); i++)
            sgl_ast_dump(p, p->modules[i], stdout);
        break;
    case DUMP_GRAPH:
        /* ---- compiler: dataflow graph view goes here ---- */
        if (status == 0) status = compiler_dump_cmd(p, false, argc, argv);
        break;
    case DUMP_BYTECODE:
        /* ---- compiler: bytecode view goes here ---- */
        if (status == 0) status = compiler_dump_cmd(p, true, argc, argv);
        break;
    }
    sgl_program_free(p);
    return status;
}
