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

int compiler_dump_run(const sgl_program *p, const compiler_dump_request *r) {
    compiler_options o = compiler_options_default();
    compiler_graph_format fmt = r->fmt;
    const char *fn = r->fn;
    bool trace = r->trace, bytecode = r->bytecode;
    if (r->opt_level >= 0) o.opt_level = r->opt_level;
    o.verify |= r->verify;
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
