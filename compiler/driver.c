/* driver.c: the compiler's entry points: compile a program to a module,
 * dump graphs, and the --graph/--bytecode part of `sglc dump`. */
#include <stdlib.h>
#include <string.h>

#include "compiler/ir.h"

compiler_options compiler_options_default(void) {
    compiler_options o = {.opt_level = 1};
#ifndef NDEBUG
    o.verify = true;
#endif
    return o;
}

int comp_begin(comp *c, const sgl_program *p, const compiler_options *opts, sgl_error *err) {
    FILE *trace = c->trace;
    compiler_graph_format tf = c->trace_fmt;
    const char *tfn = c->trace_fn;
    memset(c, 0, sizeof *c);
    c->trace_fmt = tf;
    c->prog = p;
    c->opts = opts ? *opts : compiler_options_default();
    if (c->opts.opt_level < 0) c->opts.opt_level = 0;
    if (c->opts.opt_level > 2) c->opts.opt_level = 2;
    c->err = err;
    if (err) err->msg[0] = 0;
    c->arena = calloc(1, sizeof *c->arena);
    if (!c->arena) return sgl_error_set(err, "out of memory");
    if (p->diags.n_errors) return sgl_error_set(err, "the program has errors; nothing to compile");
    if (comp_lower(c)) return -1;
    bool traced = false;
    for (uint32_t i = 0; i < c->n_fns; i++) {
        ir_fn *f = c->fns[i];
        c->trace = trace && (!tfn || !strcmp(tfn, f->name)) ? trace : NULL;
        if (c->opts.verify && ir_verify(c, f, err)) return sgl_error_prefix(err, "IR verifier after lowering");
        if (c->trace) {
            fprintf(c->trace, "%s== lowered ==\n", traced ? "\n" : "");
            ir_dump_fn(c, f, c->trace_fmt, c->trace, true);
            traced = true;
        }
        if (comp_run_passes(c, f, -1)) return -1;
    }
    c->trace = trace;
    if (trace && tfn && !traced) return sgl_error_set(err, "no function named '%s'", tfn);
    if (comp_link_prefixes(c)) return -1;
    return 0;
}

void comp_end(comp *c) {
    if (c->arena) {
        sgl_arena_free(c->arena);
        free(c->arena);
    }
    c->arena = NULL;
}

sgl_module *compiler_compile(const sgl_program *p, const compiler_options *opts, sgl_error *err) {
    comp c = {0};
    if (comp_begin(&c, p, opts, err)) {
        comp_end(&c);
        return NULL;
    }
    sgl_module *m = comp_emit(&c);
    if (!m) {
        comp_end(&c);
        return NULL;
    }
    m->priv = c.arena; /* the module owns the compile's arena */
    return m;
}

int compiler_dump_graph(const sgl_program *p, const compiler_options *opts, compiler_graph_format fmt,
                        const char *fn_name, FILE *out, sgl_error *err) {
    comp c = {0};
    int rc = comp_begin(&c, p, opts, err);
    if (rc == 0) {
        bool found = false;
        ir_dump_begin(fmt, out);
        for (uint32_t i = 0; i < c.n_fns; i++) {
            if (fn_name && strcmp(c.fns[i]->name, fn_name)) continue;
            ir_dump_fn(&c, c.fns[i], fmt, out, !found);
            found = true;
        }
        ir_dump_end(fmt, out);
        if (fn_name && !found) rc = sgl_error_set(err, "no function named '%s'", fn_name);
    }
    comp_end(&c);
    return rc;
}

/* ---- sglc dump --graph / --bytecode ---- */

static bool opt_eq(const char *a, const char *name, const char **val) {
    size_t n = strlen(name);
    if (strncmp(a, name, n)) return false;
    if (a[n] == '=') {
        *val = a + n + 1;
        return true;
    }
    if (a[n] == 0) {
        *val = NULL;
        return true;
    }
    return false;
}

int compiler_dump_option(int argc, char **argv, int i) {
    const char *a = argv[i], *v;
    if (!strcmp(a, "--trace") || !strcmp(a, "--verify")) return 1;
    if (a[0] == '-' && a[1] == 'O') return a[2] ? 1 : (i + 1 < argc ? 2 : 1);
    if (opt_eq(a, "--format", &v) || opt_eq(a, "--fn", &v)) return v ? 1 : (i + 1 < argc ? 2 : 1);
    return 0;
}

int compiler_dump_cmd(const sgl_program *p, bool bytecode, int argc, char **argv) {
    compiler_options o = compiler_options_default();
    compiler_graph_format fmt = COMPILER_GRAPH_TEXT;
    const char *fn = NULL;
    bool trace = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (!strcmp(a, "--trace")) {
            trace = true;
        } else if (!strcmp(a, "--verify")) {
            o.verify = true;
        } else if (a[0] == '-' && a[1] == 'O') {
            v = a[2] ? a + 2 + (a[2] == '=') : (i + 1 < argc ? argv[++i] : NULL);
            if (!v || strlen(v) != 1 || v[0] < '0' || v[0] > '2') {
                fprintf(stderr, "sglc dump: -O takes 0, 1 or 2\n");
                return 2;
            }
            o.opt_level = v[0] - '0';
        } else if (opt_eq(a, "--format", &v)) {
            if (!v) v = i + 1 < argc ? argv[++i] : "";
            if (!strcmp(v, "text")) fmt = COMPILER_GRAPH_TEXT;
            else if (!strcmp(v, "json")) fmt = COMPILER_GRAPH_JSON;
            else if (!strcmp(v, "dot")) fmt = COMPILER_GRAPH_DOT;
            else {
                fprintf(stderr, "sglc dump: --format takes text, json or dot\n");
                return 2;
            }
        } else if (opt_eq(a, "--fn", &v)) {
            fn = v ? v : (i + 1 < argc ? argv[++i] : NULL);
            if (!fn) {
                fprintf(stderr, "sglc dump: --fn needs a function name\n");
                return 2;
            }
        }
    }
    sgl_error err = {{0}};
    if (!bytecode) {
        comp c = {0};
        if (trace) {
            if (fmt != COMPILER_GRAPH_TEXT) {
                fprintf(stderr, "sglc dump: --trace needs --format text\n");
                return 2;
            }
            /* trace one function at a time so its stages read together */
            c.trace = stdout;
            c.trace_fmt = fmt;
            c.trace_fn = fn;
            int rc = comp_begin(&c, p, &o, &err);
            comp_end(&c);
            if (rc) {
                fprintf(stderr, "sglc dump: %s\n", err.msg);
                return 1;
            }
            return 0;
        }
        if (compiler_dump_graph(p, &o, fmt, fn, stdout, &err)) {
            fprintf(stderr, "sglc dump: %s\n", err.msg);
            return 1;
        }
        return 0;
    }
    sgl_module *m = compiler_compile(p, &o, &err);
    if (!m) {
        fprintf(stderr, "sglc dump: %s\n", err.msg);
        return 1;
    }
    int rc = 0;
    if (fn) {
        int fi = sgl_module_find_fn(m, fn);
        if (fi < 0) {
            fprintf(stderr, "sglc dump: no function named '%s'\n", fn);
            rc = 1;
        } else {
            compiler_disasm_fn(m, (uint32_t)fi, stdout);
        }
    } else {
        compiler_disasm(m, stdout);
    }
    compiler_module_free(m);
    return rc;
}
