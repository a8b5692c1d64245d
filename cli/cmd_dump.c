/* cmd_dump: `sglc dump --ast|--graph|--bytecode FILE`: print a program's
 * AST (lang), dataflow graph or bytecode (compiler). FILE - reads standard
 * input. Diagnostics go to stderr; exit 1 if the program has errors, 2 on
 * usage. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "compiler/compiler.h"
#include "lang/lang.h"
#include "vm/stdlib_sgl.h"

typedef enum { DUMP_AST, DUMP_GRAPH, DUMP_BYTECODE } dump_view;

enum { O_AST = 1, O_GRAPH, O_BYTECODE, O_PARSE_ONLY, O_ALL, O_ALLOW_IO, O_FORMAT, O_OPT, O_FN, O_TRACE, O_VERIFY };

static const cli_option dump_options[] = {
    {O_AST, "--ast", NULL, NULL,
     "the syntax tree as an S-expression, with the checker's name\n"
     "bindings (@local:N, @param:N, @fn:mK, @const:mK, @builtin)"},
    {O_PARSE_ONLY, "--parse-only", NULL, NULL, "(--ast) skip the checks; show the tree as parsed"},
    {O_ALL, "--all", NULL, NULL, "(--ast) also dump imported modules"},
    {O_GRAPH, "--graph", NULL, NULL, "the dataflow graph IR (compiler)"},
    {O_BYTECODE, "--bytecode", NULL, NULL, "the SGVM bytecode (compiler)"},
    {O_FORMAT, "--format", NULL, "FMT", "(--graph) text (default), json or dot (Graphviz)"},
    {O_OPT, "-O", NULL, "LEVEL", "(--graph, --bytecode) optimisation level 0, 1 (default) or 2"},
    {O_FN, "--fn", NULL, "NAME", "(--graph, --bytecode) only function NAME"},
    {O_TRACE, "--trace", NULL, NULL, "(--graph) the graph after every compiler pass (text format)"},
    {O_VERIFY, "--verify", NULL, NULL, "(--graph, --bytecode) check the graph after every pass"},
    {O_ALLOW_IO, "--allow-io", NULL, NULL, "permit the file/http/shell builtins"},
    {0},
};

static const cli_option *const dump_tables[] = {dump_options, cli_source_limit_options, NULL};

static const cli_spec dump_spec = {
    .name = "dump",
    .synopsis = "sglc dump (--ast | --graph | --bytecode) [options] FILE",
    .about = "Prints one view of FILE (- reads standard input).\n",
    .tables = dump_tables,
};

static bool diag_color(void) {
    const char *nc = getenv("NO_COLOR");
    return isatty(2) && !(nc && *nc);
}

int cmd_dump(int argc, char **argv) {
    int view = -1;
    bool all = false;
    sgl_load_options opts = {0};
    cli_limits limits = CLI_LIMITS_INIT;
    compiler_dump_request req = {.fmt = COMPILER_GRAPH_TEXT, .opt_level = -1};
    const char *file = NULL;
    cli_args a;
    cli_args_init(&a, &dump_spec, argc, argv);
    for (int id; (id = cli_next(&a)) != CLI_DONE;) {
        const char *v = a.value;
        switch (id) {
        case O_AST: view = DUMP_AST; break;
        case O_GRAPH: view = DUMP_GRAPH; break;
        case O_BYTECODE: view = DUMP_BYTECODE; break;
        case O_PARSE_ONLY: opts.parse_only = true; break;
        case O_ALL: all = true; break;
        case O_ALLOW_IO: opts.allow_io = true; break;
        case O_TRACE: req.trace = true; break;
        case O_VERIFY: req.verify = true; break;
        case O_FN: req.fn = v; break;
        case O_OPT: req.opt_level = (int)cli_parse_long("dump", "-O", v, 0, 2); break;
        case O_FORMAT:
            if (!strcmp(v, "text")) req.fmt = COMPILER_GRAPH_TEXT;
            else if (!strcmp(v, "json")) req.fmt = COMPILER_GRAPH_JSON;
            else if (!strcmp(v, "dot")) req.fmt = COMPILER_GRAPH_DOT;
            else cli_usage_error(&a, "--format takes text, json or dot, not '%s'", v);
            break;
        case CLI_OPERAND:
            if (file) cli_usage_error(&a, "one FILE at a time");
            file = v;
            break;
        default:
            cli_limit_set("dump", id, v, &limits);
        }
    }
    if (view < 0) cli_usage_error(&a, "give one of --ast, --graph, --bytecode");
    if (!file) cli_usage_error(&a, "FILE is required");
    if (req.trace && req.fmt != COMPILER_GRAPH_TEXT) cli_usage_error(&a, "--trace needs --format text");
    cli_limits_apply_load(&limits, &opts);

    opts.provider = vm_stdlib_provider; /* the embedded standard library */
    sgl_program *p = NULL;
    int rc;
    if (!strcmp(file, "-")) {
        size_t len = 0;
        size_t cap = SGL_MIN(limits.max_file ? limits.max_file : SGL_DEFAULT_MAX_FILE,
                             limits.max_source ? limits.max_source : SGL_DEFAULT_MAX_SOURCE);
        char *text = cli_read_input("dump", "-", cap, &len);
        rc = sgl_program_load_buffer(&p, "<stdin>", text ? text : "", text ? len : 0, &opts);
        free(text);
    } else {
        rc = sgl_program_load_file(&p, file, &opts);
    }
    if (!p) {
        fprintf(stderr, "sglc dump: error: out of memory\n");
        return CLI_EXIT_ERROR;
    }
    sgl_diags_print(p, stderr, diag_color());
    int status = rc ? CLI_EXIT_ERROR : CLI_EXIT_OK;
    switch ((dump_view)view) {
    case DUMP_AST:
        /* Printed even with errors (a syntax error leaves a partial tree with
         * (error) nodes) so that it can be inspected; the status says 1. */
        for (uint32_t i = 0; i < (all ? p->n_modules : SGL_MIN(p->n_modules, 1u)); i++)
            sgl_ast_dump(p, p->modules[i], stdout);
        break;
    case DUMP_GRAPH:
    case DUMP_BYTECODE:
        req.bytecode = view == DUMP_BYTECODE;
        if (status == CLI_EXIT_OK) status = compiler_dump_run(p, &req);
        break;
    }
    sgl_program_free(p);
    return status;
}
