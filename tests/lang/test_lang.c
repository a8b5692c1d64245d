/* test_lang: unit tests of the SGL front end's API: loading from a buffer,
 * bindings and frame slots, call modes, imports through a provider,
 * diagnostics, line/col mapping and the regex dialect checker. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lang/lang.h"
#include "tests/test.h"

static sgl_load_options quiet_opts(void) {
    sgl_load_options o = {0};
    o.no_filesystem = true;
    o.ignore_env = true;
    return o;
}

static sgl_program *load(const char *src, int *rc) {
    sgl_load_options o = quiet_opts();
    sgl_program *p = NULL;
    *rc = sgl_program_load_buffer(&p, "t.sgl", src, strlen(src), &o);
    return p;
}

static void test_bindings_and_slots(void) {
    int rc;
    sgl_program *p = load("const K = 1\n"
                          "fn f(s, a) {\n"
                          "    let b = a + K\n"
                          "    for i in range(b) { s += str(i) }\n"
                          "    s += gen(\"x\")\n"
                          "}\n"
                          "main { let st = f(2)\n print(st) }\n",
                          &rc);
    CHECK_INT(rc, 0);
    CHECK_INT(p->diags.n_errors, 0);
    sgl_node *f = sgl_program_find_fn(p, "f");
    CHECK(f != NULL);
    if (!f) goto out;
    CHECK_INT(f->fn.params.len, 2);
    CHECK_INT(f->fn.n_slots, 4); /* s a b i */
    sgl_node *let = f->fn.body->block.stmts.items[0];
    CHECK_INT(let->kind, SGL_AST_LET);
    CHECK_INT(let->decl.slot, 2);
    sgl_node *sum = let->decl.value;
    CHECK_INT(sum->kind, SGL_AST_BINARY);
    CHECK_INT(sum->binary.lhs->name.bind.kind, SGL_BIND_PARAM);
    CHECK_INT(sum->binary.lhs->name.bind.slot, 1);
    CHECK_INT(sum->binary.rhs->name.bind.kind, SGL_BIND_CONST);
    CHECK(sum->binary.rhs->name.bind.decl == p->modules[0]->module.items.items[0]);
    sgl_node *loop = f->fn.body->block.stmts.items[1];
    CHECK_INT(loop->for_.slot, 3);
    sgl_node *call = loop->for_.iter;
    CHECK_INT(call->call.call_kind, SGL_CALL_BUILTIN);
    CHECK_INT(call->call.builtin, SGL_BUILTIN_RANGE);
    /* main: f(2) is a fresh-stream call binding 2 to parameter 1. */
    CHECK(p->main != NULL);
    sgl_node *st = p->main->main.body->block.stmts.items[0];
    sgl_node *fc = st->decl.value;
    CHECK_INT(fc->call.call_kind, SGL_CALL_FN_FRESH);
    CHECK(fc->call.fn == f);
    CHECK(fc->call.param_args[0] == NULL);
    CHECK(fc->call.param_args[1] == fc->call.args.items[0]);
    CHECK_INT(p->main->main.n_slots, 1);
out:
    sgl_program_free(p);
}

static void test_full_call_and_kwargs(void) {
    int rc;
    sgl_program *p = load("fn f(s, a, b) { s += a + b }\n"
                          "main { let x = f(\"s\", b=\"1\", a=\"2\")\n print(x) }\n",
                          &rc);
    CHECK_INT(rc, 0);
    sgl_node *call = p->main->main.body->block.stmts.items[0]->decl.value;
    CHECK_INT(call->call.call_kind, SGL_CALL_FN);
    CHECK_INT(call->call.n_positional, 1);
    CHECK(call->call.param_args[1] == call->call.args.items[2]->kwarg.value);
    CHECK(call->call.param_args[2] == call->call.args.items[1]->kwarg.value);
    sgl_program_free(p);
}

static void test_break_targets_and_with(void) {
    int rc;
    sgl_program *p = load("fn f(s) {\n while true { with user(s) { s += \"x\" }\n break }\n}\n", &rc);
    CHECK_INT(rc, 0);
    sgl_node *w = sgl_program_find_fn(p, "f")->fn.body->block.stmts.items[0];
    CHECK_INT(w->kind, SGL_AST_WHILE);
    sgl_node *with = w->while_.body->block.stmts.items[0];
    CHECK_INT(with->with.role, SGL_BUILTIN_USER);
    CHECK_INT(with->with.stream->kind, SGL_AST_NAME);
    sgl_node *brk = w->while_.body->block.stmts.items[1];
    CHECK(brk->jump.loop == w);
    sgl_program_free(p);
}

static void test_reorder_flag(void) {
    int rc;
    sgl_program *p = load("@reorder\nfn f(s) { s += \"a\" }\n", &rc);
    CHECK_INT(rc, 0);
    CHECK(sgl_program_find_fn(p, "f")->fn.flags & SGL_FN_REORDER);
    sgl_program_free(p);
}

static bool provider(void *ctx, const char *name, const char **text, size_t *len, const char **disp) {
    (void)ctx;
    if (strcmp(name, "m")) return false;
    *text = "fn helper(x) { return x }\nfn _hidden() { }\n";
    *len = strlen(*text);
    *disp = "<mem>/m.sgl";
    return true;
}

static void test_provider_import(void) {
    sgl_load_options o = quiet_opts();
    o.provider = provider;
    sgl_program *p = NULL;
    const char *src = "import \"m\"\nmain { print(helper(1)) }\n";
    int rc = sgl_program_load_buffer(&p, "t.sgl", src, strlen(src), &o);
    CHECK_INT(rc, 0);
    CHECK_INT(p->n_modules, 2);
    CHECK_STR(p->files[1].path, "<mem>/m.sgl");
    sgl_node *call = p->main->main.body->block.stmts.items[0]->expr_stmt.expr->call.args.items[0];
    CHECK_INT(call->call.callee->name.bind.kind, SGL_BIND_FN);
    CHECK_INT(call->call.callee->name.bind.module, 1);
    sgl_program_free(p);

    src = "import \"m\"\nimport \"zz\"\nmain { _hidden() }\n";
    rc = sgl_program_load_buffer(&p, "t.sgl", src, strlen(src), &o);
    CHECK_INT(rc, -1);
    CHECK_INT(p->diags.n_errors, 1); /* zz missing; checks are skipped after load errors */
    sgl_program_free(p);
}

static void test_diagnostics(void) {
    int rc;
    sgl_program *p = load("main {\n  print(x)\n}\n", &rc);
    CHECK_INT(rc, -1);
    CHECK_INT(p->diags.n_errors, 1);
    CHECK_INT(p->diags.len, 1);
    sgl_diag *d = &p->diags.items[0];
    uint32_t line, col;
    sgl_source_line_col(&p->files[0], d->loc.start, &line, &col);
    CHECK_INT(line, 2);
    CHECK_INT(col, 9);
    CHECK_STR(d->msg, "undefined name 'x'");
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    sgl_diags_print(p, f, false);
    fclose(f);
    CHECK_STR(buf, "t.sgl:2:9: error: undefined name 'x'\n"
                   "   2 |   print(x)\n"
                   "     |         ^\n");
    free(buf);

    f = open_memstream(&buf, &n);
    sgl_diags_print(p, f, true);
    fclose(f);
    CHECK(strstr(buf, "\033[1;31merror:") != NULL);
    free(buf);
    sgl_program_free(p);

    p = load("main { let a = 1 }\n", &rc);
    CHECK_INT(rc, 0); /* warnings only */
    CHECK_INT(p->diags.n_warnings, 1);
    sgl_program_free(p);
}

static void test_max_errors(void) {
    sgl_load_options o = quiet_opts();
    o.max_errors = 3;
    sgl_program *p = NULL;
    const char *src = "main { print(a, b, c, d, e) }\n";
    int rc = sgl_program_load_buffer(&p, "t.sgl", src, strlen(src), &o);
    CHECK_INT(rc, -1);
    CHECK_INT(p->diags.len, 3);
    CHECK_INT(p->diags.n_errors, 5);
    sgl_program_free(p);
}

static void test_regex(void) {
    static const char *const ok[] = {"", "abc", "a|b|", "(a)(?:b)", "[a-z0-9_]+", "\\d{2,3}", "x{0,}",
                                     "[^\\]]", "\\.\\*", "^a$", ".*", "(a|(b|c))*"};
    for (size_t i = 0; i < SGL_ARRAY_LEN(ok); i++) {
        size_t off = 99;
        const char *msg = NULL;
        CHECK_MSG(sgl_regex_check(ok[i], strlen(ok[i]), &off, &msg) == 0, "'%s' rejected: %s", ok[i],
                  msg ? msg : "");
    }
    static const struct {
        const char *re;
        size_t off;
    } bad[] = {{"(", 0},    {")", 0},      {"a)", 1},    {"*", 0},     {"a**", 2},   {"a*?", 2},
               {"[b-a]", 1}, {"[]", 0},    {"[a", 0},    {"a{2,1}", 1}, {"a{", 1},    {"\\q", 0},
               {"a\\", 1},   {"(?=x)", 0}, {"a{1001}", 1}, {"]", 0},    {"x|{2}", 2}, {"[\\d-z]", 1}};
    for (size_t i = 0; i < SGL_ARRAY_LEN(bad); i++) {
        size_t off = 99;
        const char *msg = NULL;
        CHECK_MSG(sgl_regex_check(bad[i].re, strlen(bad[i].re), &off, &msg) == -1, "'%s' accepted", bad[i].re);
        CHECK_MSG(off == bad[i].off, "'%s': offset %zu, expected %zu", bad[i].re, off, bad[i].off);
        CHECK(msg != NULL);
    }
}

static size_t count_nodes(sgl_node *n) {
    sgl_node *kids[64];
    size_t k = sgl_ast_children(n, kids, 64), total = 1;
    for (size_t i = 0; i < k && i < 64; i++) total += count_nodes(kids[i]);
    return total;
}

static void test_children(void) {
    int rc;
    sgl_program *p = load("fn f(s, a) { s += f\"x{a}\" + gen(\"g\", max_tokens=3) }\n", &rc);
    CHECK_INT(rc, 0);
    /* module fn param param block assign name(s) binary fstr str name(a)
     * call name(gen) str kwarg int */
    CHECK_INT(count_nodes(p->modules[0]), 16);
    sgl_program_free(p);
}

static void test_tables(void) {
    CHECK_INT(sgl_builtin_lookup("gen"), SGL_BUILTIN_GEN);
    CHECK_INT(sgl_builtin_lookup("nope"), -1);
    CHECK_STR(sgl_builtin_name(SGL_BUILTIN_RUN_BATCH), "run_batch");
    CHECK(sgl_builtin_flags(SGL_BUILTIN_USER) & SGL_BI_ROLE);
    CHECK(sgl_builtin_flags(SGL_BUILTIN_SHELL) & SGL_BI_IO);
    int k = sgl_kwarg_lookup("temperature");
    CHECK(k >= 0);
    CHECK(sgl_kwarg_get((sgl_kwarg_id)k)->accepted_by & SGL_KWB_SELECT);
    CHECK_STR(sgl_op_name(SGL_OP_NOT_IN), "not in");
    CHECK_STR(sgl_ast_kind_name(SGL_AST_FSTRING), "fstr");
}

static void test_parse_only_and_dump(void) {
    sgl_load_options o = quiet_opts();
    o.parse_only = true;
    sgl_program *p = NULL;
    const char *src = "main { print(undefined) }\n";
    int rc = sgl_program_load_buffer(&p, "t.sgl", src, strlen(src), &o);
    CHECK_INT(rc, 0); /* no checks */
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    sgl_ast_dump(p, p->modules[0], f);
    fclose(f);
    CHECK_STR(buf, "(module \"t.sgl\"\n"
                   "  (main 1:1\n"
                   "    (block\n"
                   "      (expr 1:8\n"
                   "        (call\n"
                   "          (name print)\n"
                   "          (name undefined))))))\n");
    free(buf);
    sgl_program_free(p);
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static bool has_diag(const sgl_program *p, const char *needle) {
    for (size_t i = 0; i < p->diags.len; i++)
        if (strstr(p->diags.items[i].msg, needle)) return true;
    return false;
}

/* The import boundary an embedder sets (the HTTP server: its --programs
 * directory and the stdlib): a program given as text may import files
 * under import_root, not files elsewhere nor symlinks leading out; the
 * provider (embedded stdlib) stays available; allow_io lifts the rule. */
static void test_import_root(void) {
    char root[] = "/tmp/sgl-import-root-XXXXXX";
    CHECK(mkdtemp(root) != NULL);
    char progs[256], outside[256], p1[300], p2[300], link[300];
    snprintf(progs, sizeof progs, "%s/programs", root);
    snprintf(outside, sizeof outside, "%s/outside", root);
    mkdir(progs, 0700);
    mkdir(outside, 0700);
    snprintf(p1, sizeof p1, "%s/lib.sgl", progs);
    snprintf(p2, sizeof p2, "%s/secret.sgl", outside);
    snprintf(link, sizeof link, "%s/leak.sgl", progs);
    write_file(p1, "fn helper2(x) { return x }\n");
    write_file(p2, "fn secret() { return 1 }\n");
    CHECK(symlink(p2, link) == 0);
    sgl_load_options o = {0};
    o.ignore_env = true;
    o.provider = provider;
    o.import_root = progs;
    char src[1024];
    sgl_program *p = NULL;
    snprintf(src, sizeof src, "import \"m\"\nimport \"%s/lib\"\nmain { print(helper2(helper(1))) }\n", progs);
    CHECK_INT(sgl_program_load_buffer(&p, "<http>/req.sgl", src, strlen(src), &o), 0);
    sgl_program_free(p);
    const char *bad[] = {p2, link};
    for (int i = 0; i < 2; i++) {
        snprintf(src, sizeof src, "import \"%s\"\nmain { print(secret()) }\n", bad[i]);
        CHECK_INT(sgl_program_load_buffer(&p, "<http>/req.sgl", src, strlen(src), &o), -1);
        CHECK_MSG(has_diag(p, "outside the program's directory"), "%s", bad[i]);
        sgl_program_free(p);
    }
    o.allow_io = true;
    CHECK_INT(sgl_program_load_buffer(&p, "<http>/req.sgl", src, strlen(src), &o), 0);
    sgl_program_free(p);
    unlink(link), unlink(p1), unlink(p2), rmdir(progs), rmdir(outside), rmdir(root);
}

int main(void) {
    TEST_RUN(test_bindings_and_slots);
    TEST_RUN(test_full_call_and_kwargs);
    TEST_RUN(test_break_targets_and_with);
    TEST_RUN(test_reorder_flag);
    TEST_RUN(test_provider_import);
    TEST_RUN(test_import_root);
    TEST_RUN(test_diagnostics);
    TEST_RUN(test_max_errors);
    TEST_RUN(test_regex);
    TEST_RUN(test_tables);
    TEST_RUN(test_children);
    TEST_RUN(test_parse_only_and_dump);
    return TEST_DONE();
}
