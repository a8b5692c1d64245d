/* cmd_repl: `sglc repl`: an interactive SGL session on one engine and VM.
 *
 * Each entry is either a definition (fn, const, import, @annotation) that is
 * kept for the rest of the session, or statements. Statements run as the
 * body of a generated function whose parameters are the variables of
 * earlier entries and which returns every top-level variable afterwards, so
 * `let` bindings (streams included) persist between entries. A lone
 * expression's value is printed unless it is none. Input continues over
 * several lines while brackets are open or a line ends with an operator or
 * a comma. Commands: :help, :graph FN, :stats, :vars, :defs, :quit.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__has_include)
#if __has_include(<editline/readline.h>)
#include <editline/readline.h>
#define REPL_HAVE_EDIT 1
#endif
#endif

#include "cli/cli.h"
#include "vm/session.h"

typedef struct repl {
    vm_session s;
    vm *v;
    sgl_strbuf defs;        /* accumulated definitions */
    char **names;           /* saved variables */
    vm_value *vals;
    size_t n_vars;
    vm_script *scripts;     /* every compiled entry (modules stay alive with the VM) */
    size_t n_scripts;
    int n_entries;
} repl;

static void repl_help(void) {
    printf("Enter SGL statements or definitions (fn, const, import). Variables persist.\n"
           "  :help          this text\n"
           "  :graph FN      the dataflow graph of function FN\n"
           "  :stats         engine batching and cache figures\n"
           "  :vars          the variables kept so far\n"
           "  :defs          the definitions kept so far\n"
           "  :quit          leave (also end of input)\n");
}

static char *read_line(const char *prompt, bool tty) {
#ifdef REPL_HAVE_EDIT
    if (tty) {
        char *l = readline(prompt);
        if (l && *l) add_history(l);
        return l;
    }
#else
    if (tty) {
        fputs(prompt, stdout);
        fflush(stdout);
    }
#endif
    sgl_strbuf sb = {0};
    int c;
    while ((c = getchar()) != EOF && c != '\n') sgl_strbuf_putc(&sb, (char)c);
    if (c == EOF && sb.len == 0) {
        sgl_strbuf_free(&sb);
        return NULL;
    }
    return sgl_strbuf_take(&sb);
}

/* True when text needs more lines: open brackets or strings, or a last
 * line ending in an operator, comma or backslash. */
static bool incomplete(const char *t) {
    int depth = 0;
    bool in_str = false, triple = false;
    for (const char *p = t; *p; p++) {
        if (in_str) {
            if (*p == '\\' && p[1]) p++;
            else if (triple && !strncmp(p, "\"\"\"", 3)) {
                in_str = false;
                p += 2;
            } else if (!triple && *p == '"') in_str = false;
            continue;
        }
        if (*p == '#') {
            while (*p && *p != '\n') p++;
            if (!*p) break;
        } else if (!strncmp(p, "\"\"\"", 3)) {
            in_str = triple = true;
            p += 2;
        } else if (*p == '"') {
            in_str = true;
            triple = false;
        } else if (*p == '(' || *p == '[' || *p == '{') {
            depth++;
        } else if (*p == ')' || *p == ']' || *p == '}') {
            depth--;
        }
    }
    if (depth > 0 || (in_str && triple)) return true;
    size_t n = strlen(t);
    while (n && (t[n - 1] == ' ' || t[n - 1] == '\t')) n--;
    return n && strchr("+-*/%=,\\<>", t[n - 1]) != NULL;
}

static bool is_definition(const char *t) {
    while (*t == ' ' || *t == '\t' || *t == '\n') t++;
    return !strncmp(t, "fn ", 3) || !strncmp(t, "const ", 6) || !strncmp(t, "import ", 7) || *t == '@';
}

static void print_entry_error(const vm_script *sc, const char *msg, const char *entry, unsigned line0,
                              unsigned col_shift);

/* Builds the wrapper source: defs, then fn __repl__(vars) { body; return {...} }. */
static char *wrapper(const repl *r, const char *body, char *const *extra, size_t n_extra) {
    sgl_strbuf sb = {0};
    if (r->defs.len) sgl_strbuf_append(&sb, r->defs.data, r->defs.len);
    sgl_strbuf_puts(&sb, "fn __repl__(");
    for (size_t i = 0; i < r->n_vars; i++) sgl_strbuf_printf(&sb, "%s%s", i ? ", " : "", r->names[i]);
    sgl_strbuf_printf(&sb, ") {\n%s\nreturn {", body);
    size_t k = 0;
    for (size_t i = 0; i < r->n_vars; i++, k++) sgl_strbuf_printf(&sb, "%s\"%s\": %s", k ? ", " : "", r->names[i], r->names[i]);
    for (size_t i = 0; i < n_extra; i++, k++) sgl_strbuf_printf(&sb, "%s\"%s\": %s", k ? ", " : "", extra[i], extra[i]);
    sgl_strbuf_puts(&sb, "}\n}\n");
    return sgl_strbuf_take(&sb);
}

static int var_index(const repl *r, const char *name) {
    for (size_t i = 0; i < r->n_vars; i++)
        if (!strcmp(r->names[i], name)) return (int)i;
    return -1;
}

static void set_var(repl *r, const char *name, vm_value v) {
    int i = var_index(r, name);
    if (i >= 0) {
        vm_release(r->vals[i]);
        r->vals[i] = vm_retain(v);
        return;
    }
    r->names = realloc(r->names, (r->n_vars + 1) * sizeof *r->names);
    r->vals = realloc(r->vals, (r->n_vars + 1) * sizeof *r->vals);
    r->names[r->n_vars] = sgl_strdup(name);
    r->vals[r->n_vars] = vm_retain(v);
    r->n_vars++;
}

static vm_script *keep_script(repl *r) {
    r->scripts = realloc(r->scripts, (r->n_scripts + 1) * sizeof *r->scripts);
    vm_script *sc = &r->scripts[r->n_scripts++];
    memset(sc, 0, sizeof *sc);
    return sc;
}

static void do_definition(repl *r, const char *text) {
    sgl_strbuf trial = {0};
    if (r->defs.len) sgl_strbuf_append(&trial, r->defs.data, r->defs.len);
    sgl_strbuf_printf(&trial, "%s\n", text);
    vm_script sc;
    sgl_error err = {{0}};
    if (vm_script_load(&r->s, "<repl>", trial.data, trial.len, stderr, false, false, &sc, &err) == 0) {
        sgl_strbuf_printf(&r->defs, "%s\n", text);
    } else if (sc.prog && sc.prog->diags.n_errors == 0) {
        fprintf(stderr, "%s\n", err.msg);
    }
    vm_script_free(&sc);
    sgl_strbuf_free(&trial);
}

static void do_statements(repl *r, const char *text) {
    /* Parse once to find the new top-level lets and whether the entry is a
     * lone expression. */
    char *src = wrapper(r, text, NULL, 0);
    sgl_load_options lo = {0};
    lo.parse_only = true;
    lo.provider = NULL;
    sgl_program *p = NULL;
    sgl_program_load_buffer(&p, "<repl>", src, strlen(src), &lo);
    free(src);
    char **lets = NULL;
    size_t n_lets = 0;
    bool lone_expr = false;
    sgl_strbuf body = {0};
    sgl_strbuf_puts(&body, text);
    if (p && p->diags.n_errors == 0) {
        const sgl_node *m = p->modules[0];
        for (uint32_t i = 0; i < m->module.items.len; i++) {
            const sgl_node *it = m->module.items.items[i];
            if (it->kind != SGL_AST_FN || strcmp(it->fn.name, "__repl__") != 0) continue;
            const sgl_node_list *st = &it->fn.body->block.stmts;
            uint32_t n_user = st->len ? st->len - 1 : 0; /* the appended return */
            lone_expr = n_user == 1 && st->items[0]->kind == SGL_AST_EXPR_STMT;
            for (uint32_t k = 0; k < n_user; k++) {
                const sgl_node *s = st->items[k];
                if (s->kind != SGL_AST_LET) continue;
                if (var_index(r, s->decl.name) >= 0) {
                    /* Re-declaring a kept variable: make it an assignment. */
                    char *at = strstr(body.data, "let ");
                    while (at && strncmp(at + 4, s->decl.name, strlen(s->decl.name)) != 0) at = strstr(at + 4, "let ");
                    if (at) memcpy(at, "    ", 4);
                } else {
                    lets = realloc(lets, (n_lets + 1) * sizeof *lets);
                    lets[n_lets++] = sgl_strdup(s->decl.name);
                }
            }
        }
    }
    sgl_program_free(p);
    if (lone_expr) {
        sgl_strbuf e = {0};
        sgl_strbuf_printf(&e, "let __value = %s", body.data);
        sgl_strbuf_free(&body);
        body = e;
        lets = realloc(lets, (n_lets + 1) * sizeof *lets);
        lets[n_lets++] = sgl_strdup("__value");
    }
    src = wrapper(r, body.data, lets, n_lets);
    vm_script *sc = keep_script(r);
    sgl_error err = {{0}};
    if (vm_script_load(&r->s, "<repl>", src, strlen(src), stderr, false, false, sc, &err) < 0) {
        if (sc->prog && sc->prog->diags.n_errors == 0) fprintf(stderr, "%s\n", err.msg);
        goto done;
    }
    int fi = sgl_module_find_fn(sc->mod, "__repl__");
    vm_inst *in = fi >= 0 ? vm_spawn(r->v, sc->mod, (uint32_t)fi, r->vals, (uint32_t)r->n_vars, false, &err) : NULL;
    if (!in) {
        fprintf(stderr, "error: %s\n", err.msg);
        goto done;
    }
    vm_run(r->v, &err);
    fflush(stdout);
    if (vm_inst_failed(in)) {
        unsigned line0 = 1; /* the "fn __repl__(...) {" line */
        for (size_t i = 0; i < r->defs.len; i++) line0 += r->defs.data[i] == '\n';
        print_entry_error(sc, vm_inst_error(in), text, line0, lone_expr ? (unsigned)strlen("let __value = ") : 0);
        goto done;
    }
    vm_value res = vm_inst_result(in);
    if (res.type == VM_MAP) {
        for (uint32_t i = 0; i < vm_map_len(res); i++) {
            vm_value k = res.as.m->entries[i].key, val = res.as.m->entries[i].val;
            if (k.type != VM_STR) continue;
            if (!strcmp(vm_str_cstr(k), "__value")) {
                if (val.type != VM_NONE) {
                    sgl_strbuf sb = {0};
                    vm_repr_append(&sb, val);
                    printf("%s\n", sb.data ? sb.data : "");
                    sgl_strbuf_free(&sb);
                }
                continue;
            }
            set_var(r, vm_str_cstr(k), val);
        }
    }
done:
    free(src);
    sgl_strbuf_free(&body);
    for (size_t i = 0; i < n_lets; i++) free(lets[i]);
    free(lets);
}

/* Prints a runtime error of an entry with <repl>:LINE:COL relative to the
 * entry (line0 = generated lines before it; col_shift = characters the
 * wrapper added in front of its first line) and the entry's source line;
 * errors inside kept definitions keep the definitions' own numbering. */
static void print_entry_error(const vm_script *sc, const char *msg, const char *entry, unsigned line0,
                              unsigned col_shift) {
    unsigned line = 0, col = 0;
    int used = 0;
    if (sscanf(msg, "<repl>:%u:%u: %n", &line, &col, &used) == 2 && used > 0 && line > line0) {
        unsigned l = line - line0, c = (l == 1 && col > col_shift) ? col - col_shift : col;
        const char *nl = strchr(msg, '\n');
        int first_len = nl ? (int)(nl - msg) : (int)strlen(msg);
        fprintf(stderr, "<repl>:%u:%u: %.*s\n", l, c, first_len - used, msg + used);
        const char *p = entry;
        for (unsigned k = 1; k < l && p; k++) {
            p = strchr(p, '\n');
            if (p) p++;
        }
        if (p) {
            const char *e = strchr(p, '\n');
            int n = e ? (int)(e - p) : (int)strlen(p);
            fprintf(stderr, "%5u | %.*s\n      | %*s^\n", l, n, p, (int)(c > 0 ? c - 1 : 0), "");
        }
        if (nl) fprintf(stderr, "%s\n", nl + 1);
        return;
    }
    vm_script_print_error(sc, msg, stderr); /* in a kept definition: its own lines */
}

static void do_graph(repl *r, const char *fn) {
    while (*fn == ' ') fn++;
    vm_script sc;
    sgl_error err = {{0}};
    const char *text = r->defs.len ? r->defs.data : "";
    if (vm_script_load(&r->s, "<repl>", text, strlen(text), stderr, false, false, &sc, &err) == 0) {
        compiler_options co = compiler_options_default();
        if (compiler_dump_graph(sc.prog, &co, COMPILER_GRAPH_TEXT, *fn ? fn : NULL, stdout, &err) < 0)
            fprintf(stderr, "error: %s\n", err.msg);
    }
    vm_script_free(&sc);
}

static void do_stats(repl *r) {
    vm_link_stats ls;
    vm_engine_stats(r->v, &ls);
    sgl_engine_metrics em;
    sgl_engine_metrics_get(r->s.engine, &em);
    printf("engine %s: %lld requests done; prompt %lld tokens, %lld cached (%.1f%%); %lld generated\n",
           sgl_engine_name(r->s.engine), (long long)em.requests_done, (long long)em.prompt_tokens,
           (long long)em.cached_tokens, 100.0 * em.hit_rate, (long long)em.generated_tokens);
    printf("vm: %lld generate, %lld score, %lld prefill requests in %lld flushes (largest %lld); %llu instructions\n",
           (long long)ls.generate_requests, (long long)ls.score_requests, (long long)ls.prefill_requests,
           (long long)ls.flushes, (long long)ls.max_batch, (unsigned long long)vm_instructions(r->v));
    cli_backend_stats(r->s.engine, stdout);
}

enum { O_MODEL = 1, O_FAKE, O_ALLOW_IO, O_THREADS };

static const cli_option repl_options[] = {
    {O_MODEL, "--model", NULL, "PATH", "GGUF model (default: $SGL_MODEL or models/" SGL_DEFAULT_MODEL_FILE ")"},
    {O_FAKE, "--fake", NULL, NULL, "use the deterministic fake engine (no model)"},
    {O_ALLOW_IO, "--allow-io", NULL, NULL, "permit the file/http/shell builtins"},
    {O_THREADS, "--threads", NULL, "N", "engine threads (default: all cores)"},
    {0},
};

static const cli_option *const repl_tables[] = {repl_options, cli_backend_options, NULL};

static void repl_help_extra(void) {
    repl_help();
#ifdef REPL_HAVE_EDIT
    printf("Line editing and history (up arrow) are on at a terminal.\n");
#else
    printf("Line editing is off (built without libedit).\n");
#endif
}

static const cli_spec repl_spec = {
    .name = "repl",
    .synopsis = "sglc repl [options]",
    .tables = repl_tables,
    .help_extra = repl_help_extra,
};

int cmd_repl(int argc, char **argv) {
    const char *model = NULL, *v;
    bool fake = false;
    vm_session_opts so = vm_session_opts_default();
    cli_backend bk;
    cli_backend_init(&bk);
    cli_args a;
    cli_args_init(&a, &repl_spec, argc, argv);
    for (int id; (id = cli_next(&a)) != CLI_DONE;) {
        v = a.value;
        switch (id) {
        case O_FAKE: fake = true; break;
        case O_ALLOW_IO: so.allow_io = true; break;
        case O_MODEL: model = v; break;
        case O_THREADS: so.n_threads = (int)cli_parse_long("repl", "--threads", v, 0, 1024); break;
        case CLI_OPERAND: cli_usage_error(&a, "unexpected argument '%s'", v);
        default: cli_backend_set("repl", id, v, &bk);
        }
    }
    char *model_path = NULL;
    bool remote = !fake && cli_backend_apply("repl", &bk, &so);
    if (!fake && (!remote || model)) {
        model_path = cli_model_path(model);
        if (!model_path) return 2;
        so.model_path = model_path;
    }
    so.fake = fake;
    repl r;
    memset(&r, 0, sizeof r);
    sgl_error err = {{0}};
    if (vm_session_open(&r.s, &so, &err) < 0) {
        fprintf(stderr, "sglc repl: %s\n", err.msg);
        free(model_path);
        cli_backend_free(&bk);
        return 2;
    }
    vm_config cfg = vm_session_config(&r.s);
    r.v = vm_new(&cfg, &err);
    if (!r.v) {
        fprintf(stderr, "sglc repl: %s\n", err.msg);
        vm_session_close(&r.s);
        free(model_path);
        cli_backend_free(&bk);
        return 2;
    }
    bool tty = isatty(0);
    if (tty)
        printf("sglc %s repl (engine: %s). :help for help, :quit to leave.\n", SGL_VERSION,
               r.s.backend ? r.s.backend : sgl_engine_name(r.s.engine));
    for (;;) {
        char *line = read_line("sgl> ", tty);
        if (!line) break;
        sgl_strbuf entry = {0};
        sgl_strbuf_puts(&entry, line);
        free(line);
        while (incomplete(entry.data ? entry.data : "")) {
            char *more = read_line("...> ", tty);
            if (!more) break;
            sgl_strbuf_putc(&entry, '\n');
            sgl_strbuf_puts(&entry, more);
            free(more);
        }
        const char *t = entry.data ? entry.data : "";
        while (*t == ' ' || *t == '\t') t++;
        if (!*t || *t == '#') {
            /* nothing */
        } else if (!strcmp(t, ":quit") || !strcmp(t, ":q") || !strcmp(t, ":exit")) {
            sgl_strbuf_free(&entry);
            break;
        } else if (!strcmp(t, ":help")) {
            repl_help();
        } else if (!strncmp(t, ":graph", 6)) {
            do_graph(&r, t + 6);
        } else if (!strcmp(t, ":stats")) {
            do_stats(&r);
        } else if (!strcmp(t, ":vars")) {
            for (size_t i = 0; i < r.n_vars; i++) {
                sgl_strbuf sb = {0};
                vm_repr_append(&sb, r.vals[i]);
                printf("%s = %s\n", r.names[i], sb.data ? sb.data : "");
                sgl_strbuf_free(&sb);
            }
        } else if (!strcmp(t, ":defs")) {
            printf("%s", r.defs.data ? r.defs.data : "");
        } else if (*t == ':') {
            fprintf(stderr, "unknown command %s (:help lists them)\n", t);
        } else if (is_definition(t)) {
            do_definition(&r, t);
        } else {
            do_statements(&r, t);
        }
        fflush(stdout);
        sgl_strbuf_free(&entry);
    }
    for (size_t i = 0; i < r.n_vars; i++) {
        free(r.names[i]);
        vm_release(r.vals[i]);
    }
    free(r.names);
    free(r.vals);
    vm_free(r.v);
    for (size_t i = 0; i < r.n_scripts; i++) vm_script_free(&r.scripts[i]);
    free(r.scripts);
    sgl_strbuf_free(&r.defs);
    vm_session_close(&r.s);
    free(model_path);
    cli_backend_free(&bk);
    return 0;
}
