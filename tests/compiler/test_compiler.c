/* test_compiler.c: compiler unit tests: the IR verifier against hand-built
 * malformed graphs, constant folding, the instruction encoding, the module
 * layout (entry, flags, prefix hints, line tables, call sites) and that
 * every golden case compiles with the verifier on at -O0, -O1 and -O2. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "compiler/fold.h"
#include "compiler/ir.h"
#include "tests/test.h"

static sgl_program *load(const char *src) {
    sgl_program *p = NULL;
    int rc = sgl_program_load_buffer(&p, "test.sgl", src, strlen(src), NULL);
    if (rc) sgl_diags_print(p, stderr, false);
    return rc ? (sgl_program_free(p), NULL) : p;
}

/* ---- hand-built IR ---- */

static sgl_program *g_prog;

typedef struct fixture {
    comp c;
    ir_fn *f;
    ir_fn *fns[1];
} fixture;

static void fx_init(fixture *x) {
    memset(x, 0, sizeof *x);
    x->c.arena = calloc(1, sizeof *x->c.arena);
    x->c.prog = g_prog;
    x->c.opts.verify = true;
    ir_fn *f = sgl_arena_alloc(x->c.arena, sizeof *f);
    static const char *names[] = {"s", "x"};
    f->name = "bad";
    f->n_params = 2;
    f->param_names = names;
    f->n_slots = 3;
    ir_region_new(&x->c, f, IR_NONE, false);
    x->f = f;
    x->fns[0] = f;
    x->c.fns = x->fns;
    x->c.n_fns = 1;
}

static void fx_free(fixture *x) {
    sgl_arena_free(x->c.arena);
    free(x->c.arena);
}

static sgl_loc L0 = {0, 0, 1};

static ir_ref add(fixture *x, uint32_t r, ir_op op, const ir_ref *in, uint32_t n) {
    return ir_add(&x->c, x->f, r, op, in, n, L0);
}

static ir_ref konst(fixture *x, uint32_t r, int64_t v) {
    ir_ref id = add(x, r, IR_CONST, NULL, 0);
    x->f->nodes[id].k = comp_const_int(&x->c, v);
    return id;
}

static ir_ref load_slot(fixture *x, uint32_t r, int64_t slot) {
    ir_ref id = add(x, r, IR_LOAD, NULL, 0);
    x->f->nodes[id].i = slot;
    return id;
}

static ir_ref store_slot(fixture *x, uint32_t r, int64_t slot, ir_ref v) {
    ir_ref id = add(x, r, IR_STORE, &v, 1);
    x->f->nodes[id].i = slot;
    return id;
}

/* Expects the verifier to reject x's function with a message containing want. */
static void expect_bad(fixture *x, const char *want) {
    sgl_error err = {{0}};
    int rc = ir_verify(&x->c, x->f, &err);
    CHECK_MSG(rc == -1, "verifier accepted IR that should fail with '%s'", want);
    CHECK_MSG(strstr(err.msg, want) != NULL, "verifier said '%s', expected '%s'", err.msg, want);
    fx_free(x);
}

static void test_verify_good_by_hand(void) {
    fixture x;
    fx_init(&x);
    ir_ref s = load_slot(&x, 0, 0);
    ir_ref a = add(&x, 0, IR_APPEND_TEXT, &s, 1);
    x.f->nodes[a].k = comp_const_str(&x.c, "hi", 2);
    ir_ref k = konst(&x, 0, 1);
    ir_ref ifn = add(&x, 0, IR_IF, &k, 1);
    uint32_t t = ir_region_new(&x.c, x.f, ifn, false), e = ir_region_new(&x.c, x.f, ifn, false);
    x.f->nodes[ifn].reg[0] = t;
    x.f->nodes[ifn].reg[1] = e;
    ir_ref a2 = add(&x, t, IR_APPEND_TEXT, &s, 1); /* s from the enclosing region: fine */
    x.f->nodes[a2].k = x.f->nodes[a].k;
    sgl_error err = {{0}};
    CHECK_INT(ir_verify(&x.c, x.f, &err), 0);
    if (err.msg[0]) fprintf(stderr, "%s\n", err.msg);
    fx_free(&x);
}

static void test_verify_use_before_def(void) {
    fixture x;
    fx_init(&x);
    ir_ref later = 1;
    ir_ref u = add(&x, 0, IR_UNOP, &later, 1);
    x.f->nodes[u].i = SGL_OP_NEG;
    konst(&x, 0, 5);
    store_slot(&x, 0, 2, u);
    expect_bad(&x, "defined after it");
}

static void test_verify_broken_chain(void) {
    fixture x;
    fixture *p = &x;
    fx_init(p);
    ir_ref k = konst(p, 0, 1);
    store_slot(p, 0, 2, k);
    ir_ref s2 = store_slot(p, 0, 2, k);
    x.f->nodes[s2].chain = IR_NONE; /* skips the first store */
    expect_bad(p, "chain");
}

static void test_verify_append_non_string(void) {
    fixture x;
    fx_init(&x);
    ir_ref s = load_slot(&x, 0, 0);
    ir_ref a = add(&x, 0, IR_APPEND_TEXT, &s, 1);
    x.f->nodes[a].k = comp_const_int(&x.c, 7);
    expect_bad(&x, "not a string");
}

static void test_verify_load_across_store(void) {
    fixture x;
    fx_init(&x);
    ir_ref l = load_slot(&x, 0, 2);
    store_slot(&x, 0, 2, konst(&x, 0, 1));
    store_slot(&x, 0, 1, l); /* reads the old value after it was overwritten */
    expect_bad(&x, "across a store");
}

static void test_verify_sibling_region(void) {
    fixture x;
    fx_init(&x);
    ir_ref k = konst(&x, 0, 1);
    ir_ref ifn = add(&x, 0, IR_IF, &k, 1);
    uint32_t t = ir_region_new(&x.c, x.f, ifn, false), e = ir_region_new(&x.c, x.f, ifn, false);
    x.f->nodes[ifn].reg[0] = t;
    x.f->nodes[ifn].reg[1] = e;
    ir_ref c = konst(&x, t, 2);
    store_slot(&x, e, 2, c); /* then-branch value used in the else branch */
    expect_bad(&x, "does not enclose");
}

static void test_verify_yield_outside_while(void) {
    fixture x;
    fx_init(&x);
    ir_ref k = konst(&x, 0, 1);
    add(&x, 0, IR_YIELD, &k, 1);
    expect_bad(&x, "outside a while");
}

static void test_verify_break_outside_loop(void) {
    fixture x;
    fx_init(&x);
    add(&x, 0, IR_BREAK, NULL, 0);
    expect_bad(&x, "outside a loop");
}

static void test_verify_detached(void) {
    fixture x;
    fx_init(&x);
    ir_ref k = konst(&x, 0, 1);
    ir_region_remove(x.f, k);
    expect_bad(&x, "in no region");
}

static void test_verify_pure_with_chain(void) {
    fixture x;
    fx_init(&x);
    ir_ref k = konst(&x, 0, 1);
    ir_ref s = store_slot(&x, 0, 2, k);
    ir_ref k2 = konst(&x, 0, 2);
    x.f->nodes[k2].chain = s;
    store_slot(&x, 0, 2, k2);
    expect_bad(&x, "pure but has a chain");
}

static void test_verify_input_count(void) {
    fixture x;
    fx_init(&x);
    ir_ref k = konst(&x, 0, 1);
    ir_ref b = add(&x, 0, IR_BINOP, &k, 1);
    x.f->nodes[b].i = SGL_OP_ADD;
    store_slot(&x, 0, 2, b);
    expect_bad(&x, "wrong number of inputs");
}

static void test_verify_slot_range(void) {
    fixture x;
    fx_init(&x);
    ir_ref l = load_slot(&x, 0, 99);
    store_slot(&x, 0, 2, l);
    expect_bad(&x, "slot outside the frame");
}

static void test_verify_stream_op_without_stream(void) {
    fixture x;
    fx_init(&x);
    ir_ref a = add(&x, 0, IR_ROLE_BEGIN, NULL, 0);
    x.f->nodes[a].i = SGL_ROLE_USER;
    expect_bad(&x, "without a stream input");
}

static void test_verify_uses_non_value(void) {
    fixture x;
    fx_init(&x);
    ir_ref s = store_slot(&x, 0, 2, konst(&x, 0, 1));
    store_slot(&x, 0, 1, s);
    expect_bad(&x, "has no value");
}

static void test_verify_loop_back_edge(void) {
    fixture x;
    fx_init(&x);
    ir_ref l = load_slot(&x, 0, 2);
    ir_ref it = konst(&x, 0, 3);
    ir_ref fn = add(&x, 0, IR_FOR, &it, 1);
    x.f->nodes[fn].i = 1;
    uint32_t b = ir_region_new(&x.c, x.f, fn, true);
    x.f->nodes[fn].reg[0] = b;
    ir_ref one = konst(&x, b, 1);
    ir_ref in[2] = {l, one};
    ir_ref sum = add(&x, b, IR_BINOP, in, 2);
    x.f->nodes[sum].i = SGL_OP_ADD;
    store_slot(&x, b, 2, sum); /* the next iteration must reload slot 2 */
    expect_bad(&x, "loop stores");
}

static void test_verify_missing_region(void) {
    fixture x;
    fx_init(&x);
    ir_ref k = konst(&x, 0, 1);
    add(&x, 0, IR_IF, &k, 1);
    expect_bad(&x, "missing a sub-region");
}

static void test_verify_while_without_yield(void) {
    fixture x;
    fx_init(&x);
    ir_ref w = add(&x, 0, IR_WHILE, NULL, 0);
    uint32_t c = ir_region_new(&x.c, x.f, w, true), b = ir_region_new(&x.c, x.f, w, true);
    x.f->nodes[w].reg[0] = c;
    x.f->nodes[w].reg[1] = b;
    konst(&x, c, 1);
    expect_bad(&x, "does not end in yield");
}

static void test_verify_site_mismatch(void) {
    fixture x;
    fx_init(&x);
    ir_ref s = load_slot(&x, 0, 0);
    ir_ref g = add(&x, 0, IR_GEN, &s, 1);
    ir_site *site = sgl_arena_alloc(x.c.arena, sizeof *site);
    site->builtin = SGL_BUILTIN_GEN;
    site->name_k = SGL_SITE_DYNAMIC; /* says a name input follows; there is none */
    x.f->nodes[g].site = site;
    expect_bad(&x, "do not match its call site");
}

/* ---- folding ---- */

static void test_fold(void) {
    fixture x;
    fx_init(&x);
    comp *c = &x.c;
    int32_t k7 = comp_const_int(c, 7), k2 = comp_const_int(c, 2), k0 = comp_const_int(c, 0);
    int32_t km7 = comp_const_int(c, -7), kmax = comp_const_int(c, INT64_MAX);
    int32_t r = comp_fold_binop(c, SGL_OP_DIV, k7, k2);
    CHECK(r >= 0 && c->consts[r].kind == SGL_CONST_INT && c->consts[r].i == 3);
    r = comp_fold_binop(c, SGL_OP_DIV, km7, k2); /* truncates toward zero */
    CHECK(r >= 0 && c->consts[r].i == -3);
    r = comp_fold_binop(c, SGL_OP_MOD, km7, k2); /* sign of the dividend */
    CHECK(r >= 0 && c->consts[r].i == -1);
    CHECK_INT(comp_fold_binop(c, SGL_OP_DIV, k7, k0), -1); /* runtime error: not folded */
    CHECK_INT(comp_fold_binop(c, SGL_OP_ADD, kmax, k7), -1); /* overflow: not folded */
    int32_t ka = comp_const_str(c, "ab", 2), kb = comp_const_str(c, "b", 1);
    r = comp_fold_binop(c, SGL_OP_ADD, ka, kb);
    CHECK(r >= 0 && c->consts[r].kind == SGL_CONST_STRING && !strcmp(c->consts[r].str.bytes, "abb"));
    CHECK_INT(comp_fold_binop(c, SGL_OP_ADD, ka, k7), -1); /* str + int is an error */
    r = comp_fold_binop(c, SGL_OP_LT, ka, kb);
    CHECK(r >= 0 && c->consts[r].kind == SGL_CONST_BOOL && c->consts[r].b);
    r = comp_fold_binop(c, SGL_OP_IN, kb, ka);
    CHECK(r >= 0 && c->consts[r].b);
    sgl_const f = {.kind = SGL_CONST_FLOAT};
    f.f = 1.0;
    int32_t kf = comp_const_add(c, &f);
    r = comp_fold_binop(c, SGL_OP_EQ, kf, comp_const_int(c, 1)); /* 1 == 1.0 */
    CHECK(r >= 0 && c->consts[r].b);
    sgl_strbuf sb = {0};
    CHECK_INT(comp_fold_format(c, kf, &sb), -1); /* float text is the VM's */
    CHECK_INT(comp_fold_format(c, km7, &sb), 0);
    CHECK_STR(sb.data, "-7");
    sgl_strbuf_free(&sb);
    CHECK_INT(comp_const_str(c, "ab", 2), ka); /* deduplicated */
    fx_free(&x);
}

/* ---- encoding ---- */

static void test_encoding(void) {
    for (int op = 0; op < SGL_BC__COUNT; op++) {
        const sgl_opcode_info *oi = sgl_opcode_get((sgl_opcode)op);
        CHECK(oi && oi->name && oi->name[0]);
        if (oi->flags & SGL_OPF_JUMP) CHECK_INT(oi->format, SGL_FMT_J);
    }
    CHECK(sgl_opcode_get(SGL_BC__COUNT) == NULL);
    sgl_instr i = SGL_INSTR_MAKE_A(SGL_BC_LOAD_CONST, 0xabcdef);
    CHECK_INT(SGL_INSTR_OP(i), SGL_BC_LOAD_CONST);
    CHECK_INT(SGL_INSTR_A(i), 0xabcdef);
    i = SGL_INSTR_MAKE_AB(SGL_BC_CALL, 4095, 7);
    CHECK_INT(SGL_INSTR_A12(i), 4095);
    CHECK_INT(SGL_INSTR_B12(i), 7);
    i = SGL_INSTR_MAKE_SJ(SGL_BC_JUMP, -5);
    CHECK_INT(SGL_INSTR_SJ(i), -5);
    CHECK_INT(SGL_INSTR_OP(i), SGL_BC_JUMP);
    i = SGL_INSTR_MAKE_SJ(SGL_BC_JUMP, SGL_INSTR_SJ_MAX);
    CHECK_INT(SGL_INSTR_SJ(i), SGL_INSTR_SJ_MAX);
}

/* ---- modules ---- */

static const char *EXAMPLE =
    "const SYSTEM = \"You are a helpful assistant.\"\n"
    "fn answer(s, question) {\n"
    "    s += system(SYSTEM)\n"
    "    s += user(question)\n"
    "    s += assistant(gen(\"answer\", max_tokens=128, stop=[\"\\n\\n\"]))\n"
    "}\n"
    "fn double(x) { return x * 2 }\n"
    "main {\n"
    "    let st = answer(\"What is the capital of France?\")\n"
    "    print(st[\"answer\"], double(21))\n"
    "}\n";

static void test_module_layout(void) {
    sgl_program *p = load(EXAMPLE);
    CHECK(p != NULL);
    if (!p) return;
    for (int lvl = 0; lvl <= 2; lvl++) {
        compiler_options o = {.opt_level = lvl, .verify = true};
        sgl_error err = {{0}};
        sgl_module *m = compiler_compile(p, &o, &err);
        CHECK_MSG(m != NULL, "-O%d: %s", lvl, err.msg);
        if (!m) continue;
        CHECK_INT(m->n_fns, 3);
        CHECK_INT(m->entry, 2);
        CHECK_STR(m->fns[m->entry].name, "main");
        int a = sgl_module_find_fn(m, "answer"), d = sgl_module_find_fn(m, "double");
        CHECK(a >= 0 && d >= 0);
        CHECK(m->fns[a].flags & SGL_FNF_STREAM);
        CHECK(!(m->fns[d].flags & SGL_FNF_STREAM));
        CHECK_INT(m->fns[a].n_params, 2);
        CHECK_STR(m->fns[a].param_names[1], "question");
        CHECK_INT(m->n_sites, 1);
        CHECK_INT(m->sites[0].builtin, SGL_BUILTIN_GEN);
        CHECK_INT(m->sites[0].line, 5);
        for (uint32_t i = 0; i < m->n_fns; i++) {
            const sgl_bc_function *f = &m->fns[i];
            CHECK(f->n_code > 0 && SGL_INSTR_OP(f->code[f->n_code - 1]) == SGL_BC_RETURN);
            CHECK(f->n_lines > 0 && f->lines[0].pc == 0);
            CHECK(f->n_locals >= f->n_params);
            CHECK(f->max_stack >= 1);
        }
        /* every GEN's line is the gen call's */
        const sgl_bc_function *fa = &m->fns[a];
        for (uint32_t pc = 0; pc < fa->n_code; pc++)
            if (SGL_INSTR_OP(fa->code[pc]) == SGL_BC_GEN) {
                const sgl_bc_line *ln = sgl_bc_line_at(fa, pc);
                CHECK(ln && ln->line == 5 && ln->col == 20);
            }
        if (lvl == 0) {
            CHECK_INT(fa->n_prefix, 0);
        } else {
            CHECK_INT(fa->n_prefix, 4); /* <system> text </system> <user> */
            CHECK_STR(fa->prefix_text, "You are a helpful assistant.");
            CHECK_INT(fa->prefix[0].kind, SGL_PREFIX_ROLE_BEGIN);
            CHECK_INT(fa->prefix[3].role, SGL_ROLE_USER);
        }
        compiler_module_free(m);
    }
    sgl_program_free(p);
}

/* The prefix hint's text for fn name in src (at -O1), "" if none. */
static char *prefix_of(const char *src, const char *name) {
    sgl_program *p = load(src);
    if (!p) return NULL;
    compiler_options o = {.opt_level = 1, .verify = true};
    sgl_error err;
    sgl_module *m = compiler_compile(p, &o, &err);
    char *r = NULL;
    if (m) {
        int f = sgl_module_find_fn(m, name);
        if (f >= 0) r = sgl_strdup(m->fns[f].prefix_text);
        compiler_module_free(m);
    }
    sgl_program_free(p);
    return r;
}

static void test_prefix_text(void) {
    struct { const char *src, *want; } cases[] = {
        {"fn f(s, q) { s += \"A\"\n s += \"B\" + q\n s += \"C\" }", "AB"},
        {"const X = \"x\"\nfn f(s, q) { s += f\"{X}{1 + 2}\"\n s += gen(\"g\") }", "x3"},
        {"fn f(s, q) { s += q\n s += \"late\" }", ""},
        {"fn f(s, b) { s += \"P \"\n if b { s += \"yes\" } else { s += \"yet\" } }", "P ye"},
        {"fn f(s, x) { s += \"a\"\n let y = 2\n s += f\"{y}\" }", "a2"},
        {"fn f(s, x) { s += \"a\"\n let y = x + 1\n s += f\"{y}\" }", "a"},
        {"fn g(s, xs) { for x in xs { s += x } }\nfn f(s, q) { g(s, [\"1\", \"2\"])\n s += q }", "12"},
        {"fn f(s, q) { let i = 0\n while i < 3 { s += str(i)\n i += 1 }\n s += q }", "012"},
        {"fn f(s, q) { f(s, q)\n }", ""},
        {"fn f(s) { s += \"é one\"\n if true { s += \"\" } }", "é one"},
    };
    for (size_t i = 0; i < SGL_ARRAY_LEN(cases); i++) {
        char *got = prefix_of(cases[i].src, "f");
        CHECK_MSG(got && !strcmp(got, cases[i].want), "case %zu: prefix '%s', expected '%s'", i, got ? got : "(null)",
                  cases[i].want);
        free(got);
    }
}

/* Every golden case compiles with the verifier on at every level. */
static void test_golden_cases_compile(void) {
    const char *root = getenv("SGL_SOURCE_ROOT");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tests/compiler/cases/graph", root ? root : SGL_SOURCE_ROOT);
    DIR *d = opendir(dir);
    CHECK_MSG(d != NULL, "cannot open %s", dir);
    if (!d) return;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (len < 5 || strcmp(de->d_name + len - 4, ".sgl")) continue;
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        sgl_program *p = NULL;
        /* Imports of the stdlib come from the source tree's stdlib/ (the
         * loader itself knows no folder of the source tree). */
        char stdlib_dir[1100];
        snprintf(stdlib_dir, sizeof stdlib_dir, "%s/stdlib", root ? root : SGL_SOURCE_ROOT);
        const char *search[] = {stdlib_dir};
        sgl_load_options lo = {0};
        lo.search_path = search;
        lo.n_search_path = 1;
        int rc = sgl_program_load_file(&p, path, &lo);
        CHECK_MSG(rc == 0, "%s does not load", de->d_name);
        for (int lvl = 0; rc == 0 && lvl <= 2; lvl++) {
            compiler_options o = {.opt_level = lvl, .verify = true};
            sgl_error err = {{0}};
            sgl_module *m = compiler_compile(p, &o, &err);
            CHECK_MSG(m != NULL, "%s -O%d: %s", de->d_name, lvl, err.msg);
            compiler_module_free(m);
        }
        sgl_program_free(p);
        n++;
    }
    closedir(d);
    CHECK(n >= 10);
}

int main(void) {
    g_prog = load("fn f(s, x) { }\n");
    if (!g_prog) return 1;
    TEST_RUN(test_verify_good_by_hand);
    TEST_RUN(test_verify_use_before_def);
    TEST_RUN(test_verify_broken_chain);
    TEST_RUN(test_verify_append_non_string);
    TEST_RUN(test_verify_load_across_store);
    TEST_RUN(test_verify_sibling_region);
    TEST_RUN(test_verify_yield_outside_while);
    TEST_RUN(test_verify_break_outside_loop);
    TEST_RUN(test_verify_detached);
    TEST_RUN(test_verify_pure_with_chain);
    TEST_RUN(test_verify_input_count);
    TEST_RUN(test_verify_slot_range);
    TEST_RUN(test_verify_stream_op_without_stream);
    TEST_RUN(test_verify_uses_non_value);
    TEST_RUN(test_verify_loop_back_edge);
    TEST_RUN(test_verify_missing_region);
    TEST_RUN(test_verify_while_without_yield);
    TEST_RUN(test_verify_site_mismatch);
    TEST_RUN(test_fold);
    TEST_RUN(test_encoding);
    TEST_RUN(test_module_layout);
    TEST_RUN(test_prefix_text);
    TEST_RUN(test_golden_cases_compile);
    sgl_program_free(g_prog);
    return TEST_DONE();
}
