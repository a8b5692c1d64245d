/* test_vm: SGVM end to end on the fake engine: SGL source -> front end ->
 * compiler -> VM, checking what the program prints (or the located error
 * it fails with). One case per opcode family, then streams (gen, roles,
 * select, fork/join, run_batch, batching, prefix hints) and failures
 * (runtime errors with tracebacks, a failing run_batch instance that
 * leaves the others intact, constrained decoding refused, failures while
 * requests still wait leaving no value or stream alive). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compiler/compiler.h"
#include "lang/lang.h"
#include "runtime/chat_template.h"
#include "tests/test.h"
#include "vm/fake_engine.h"
#include "vm/stdlib_sgl.h"
#include "vm/vm.h"

typedef struct run_out {
    char *printed;    /* malloc'd */
    char *error;      /* malloc'd or NULL */
    vm_fake *fake;    /* valid until run_free */
    sgl_engine *engine;
    vm_link_stats stats;
} run_out;

static void run_free(run_out *r) {
    free(r->printed);
    free(r->error);
    sgl_engine_free(r->engine);
}

/* Run-level gen defaults for run_src (none unless a test sets them). */
static vm_value run_defaults = {.type = VM_NONE};

/* rules: NULL-terminated pairs when, reply (reply "!msg" = abort msg). */
static int run_src(const char *src, const char *const *rules, run_out *out) {
    memset(out, 0, sizeof *out);
    sgl_program *p = NULL;
    sgl_load_options lo = {0};
    lo.provider = vm_stdlib_provider; /* the embedded stdlib, as sessions load it */
    int rc = sgl_program_load_buffer(&p, "t.sgl", src, strlen(src), &lo);
    if (rc != 0) {
        sgl_diags_print(p, stderr, false);
        sgl_program_free(p);
        return -1;
    }
    sgl_error err = {{0}};
    sgl_module *m = compiler_compile(p, NULL, &err);
    sgl_program_free(p);
    if (!m) {
        fprintf(stderr, "compile: %s\n", err.msg);
        return -1;
    }
    out->engine = vm_fake_engine_new(&out->fake);
    for (int i = 0; rules && rules[i]; i += 2) {
        const char *reply = rules[i + 1];
        vm_fake_add_rule(out->fake, rules[i], reply[0] == '!' ? NULL : reply, reply[0] == '!' ? reply + 1 : NULL);
    }
    chat_template *ct = chat_template_from_family("chatml", NULL);
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    vm_config cfg = vm_config_default();
    cfg.engine = out->engine;
    cfg.chat = ct;
    cfg.out = mem;
    cfg.gen_defaults = run_defaults;
    vm *v = vm_new(&cfg, &err);
    vm_inst *in = vm_spawn(v, m, (uint32_t)m->entry, NULL, 0, false, &err);
    if (in) vm_run(v, &err);
    if (!in) out->error = sgl_strdup(err.msg);
    else if (vm_inst_failed(in)) out->error = sgl_strdup(vm_inst_error(in));
    vm_engine_stats(v, &out->stats);
    vm_free(v);
    fclose(mem);
    out->printed = buf;
    chat_template_free(ct);
    compiler_module_free(m);
    return 0;
}

/* Runs src and checks the printed text and the error (NULL = must succeed). */
static void expect_run(const char *src, const char *const *rules, const char *want_printed,
                       const char *want_error, int line) {
    run_out r;
    int64_t live = vm_live_objects();
    if (run_src(src, rules, &r) < 0) {
        CHECK_MSG(0, "line %d: program did not compile", line);
        return;
    }
    CHECK_MSG(r.printed && strcmp(r.printed, want_printed) == 0, "line %d: printed\n  got:      \"%s\"\n  expected: \"%s\"",
              line, r.printed ? r.printed : "(null)", want_printed);
    if (!want_error) CHECK_MSG(r.error == NULL, "line %d: unexpected error: %s", line, r.error);
    else CHECK_MSG(r.error && strstr(r.error, want_error), "line %d: error \"%s\" lacks \"%s\"", line,
                   r.error ? r.error : "(none)", want_error);
    run_free(&r);
    CHECK_MSG(vm_live_objects() == live, "line %d: %lld objects leaked", line,
              (long long)(vm_live_objects() - live));
}
#define EXPECT(...) expect_run(__VA_ARGS__, __LINE__)

static void test_arith_compare_logic(void) {
    EXPECT("fn f(a, b, x, y) {\n"
           "  print(a + b, a / b, -a % b, a * 2.5, x + y, [a] + [b], a == 7.0, y > x)\n"
           "  print(a in [1, 7], x not in \"abc\", not a, -a, a > b and b > 0, a < b or false)\n"
           "  print({\"k\": 1} + {\"k\": 2, \"z\": 3}, x * 3, a - b)\n"
           "}\n"
           "main { f(7, 2, \"a\", \"b\") }\n",
           NULL,
           "9 3 -1 17.5 ab [7, 2] true true\n"
           "true false false -7 true false\n"
           "{\"k\": 2, \"z\": 3} aaa 5\n",
           NULL);
}

static void test_control_flow(void) {
    EXPECT("fn f(n) {\n"
           "  let out = []\n"
           "  for i in range(n) {\n"
           "    if i == 1 { continue }\n"
           "    elif i == 4 { break }\n"
           "    out += [i]\n"
           "  }\n"
           "  let k = 0\n"
           "  while true { k += 1\n if k >= 3 { break } }\n"
           "  let t = \"\"\n"
           "  for ch in \"h\\u{e9}!\" { t = t + \"[\" + ch + \"]\" }\n"
           "  for key in ({\"x\": 1, \"y\": 2}) { t += key }\n"
           "  return [out, k, t]\n"
           "}\n"
           "main { print(f(10)) }\n",
           NULL, "[[0, 2, 3], 3, \"[h][\xc3\xa9][!]xy\"]\n", NULL);
}

static void test_collections(void) {
    EXPECT("main {\n"
           "  let a = [1, [2, 3]]\n"
           "  let b = a\n"
           "  b[1][0] = 9\n"
           "  let m = {\"k\": [1]}\n"
           "  m[\"k\"][0] = 5\n"
           "  m[\"n\"] = a\n"
           "  print(a, b, m, len(m), keys(m), a[-1], \"xyz\"[1])\n"
           "}\n",
           NULL, "[1, [2, 3]] [1, [9, 3]] {\"k\": [5], \"n\": [1, [2, 3]]} 2 [\"k\", \"n\"] [2, 3] y\n",
           NULL);
    /* In-place += keeps value semantics for other names. */
    EXPECT("main {\n"
           "  let a = [1]\n  let b = a\n  a += [2]\n  let s = \"x\"\n  let t = s\n  s += \"y\"\n  s = s + \"z\"\n"
           "  let big = []\n  for i in range(1000) { big += [i] }\n"
           "  let m = {\"l\": big}\n  big += [0]\n"
           "  print(a, b, s, t, len(big), len(m[\"l\"]))\n"
           "}\n",
           NULL, "[1, 2] [1] xyz x 1001 1000\n", NULL);
}

static void test_calls(void) {
    EXPECT("fn fib(n) { if n < 2 { return n }\n return fib(n - 1) + fib(n - 2) }\n"
           "fn twice(f, x) { return f(f(x)) }\n"
           "fn inc(x) { return x + 1 }\n"
           "fn noret(x) { let y = x }\n"
           "main { print(fib(15), twice(inc, 5), noret(1)) }\n",
           NULL, "610 7 null\n", NULL);
}

static void test_strings_builtins(void) {
    EXPECT("main {\n"
           "  let x = 3\n"
           "  print(f\"x={x} l={[1, \"a\"]} n={none} f={1.5}\")\n"
           "  print(int(\"42\"), int(3.9), float(\"2.5\"), str(12) + \"!\", range(1, 10, 3))\n"
           "  let j = json_parse(\"{\\\"a\\\": [1, 2.0, null]}\")\n"
           "  print(json_dump(j), j[\"a\"][1] == 2)\n"
           "  print(regex_match(r\"\\d+(\\.\\d+)?\", \"3.14\"), regex_match(\"[a-c]+\", \"abd\"))\n"
           "  print(time() > 1000000000.0)\n"
           "}\n",
           NULL,
           "x=3 l=[1, \"a\"] n=null f=1.5\n"
           "42 3 2.5 12! [1, 4, 7]\n"
           "{\"a\":[1,2.0,null]} true\n"
           "true false\n"
           "true\n",
           NULL);
}

static void test_runtime_errors(void) {
    EXPECT("fn g(x) { return 10 / x }\n"
           "fn f(x) { return g(x - 1) }\n"
           "main { print(\"before\")\n print(f(1)) }\n",
           NULL, "before\n", "t.sgl:1:18: error: division by zero\n  in g at t.sgl:1:18\n  in f at t.sgl:2:18\n  in main at t.sgl:4:8");
    EXPECT("main { let x = 2\n assert x == 3, f\"x is {x}\" }\n", NULL, "",
           "t.sgl:2:2: error: assertion failed: x is 2");
    EXPECT("main { let m = {\"a\": 1}\n print(m[\"b\"]) }\n", NULL, "",
           "t.sgl:2:8: error: key \"b\" not found in map");
    EXPECT("main { print(int(\"x1\")) }\n", NULL, "", "error: int(): invalid integer literal \"x1\"");
    EXPECT("fn r(n) { return r(n + 1) }\nmain { print(r(0)) }\n", NULL, "",
           "t.sgl:1:18: error: call stack overflow: more than 1000 nested calls (calling r)\n"
           "  in r at t.sgl:1:18\n  in r at t.sgl:1:18\n  in r at t.sgl:1:18\n  in r at t.sgl:1:18\n"
           "  in r at t.sgl:1:18\n  in r at t.sgl:1:18\n  in r at t.sgl:1:18\n  in r at t.sgl:1:18\n"
           "  ... 984 more calls ...\n");
}

static const char *const qa_rules[] = {"A:", " Paris\nmore", "Capital", "Rome", NULL};

static void test_gen_and_read(void) {
    EXPECT("fn qa(s, q) {\n"
           "  s += \"Q: \" + q + \"\\nA:\" + gen(\"a\", max_tokens=16, stop=\"\\n\") + \"\\n\"\n"
           "}\n"
           "main {\n"
           "  let st = qa(\"capital of France?\")\n"
           "  print(st[\"a\"], meta(st, \"a\")[\"finish_reason\"], json_dump(meta(st, \"a\")[\"matched_stop\"]))\n"
           "  print(json_dump(text(st)))\n"
           "}\n",
           qa_rules, " Paris stop \"\\n\"\n\"Q: capital of France?\\nA: Paris\\n\"\n", NULL);
    /* max_tokens cuts (fake: a token is a byte); dtype parses. */
    EXPECT("fn f(s) { s += \"n=\" + gen(\"n\", dtype=\"int\") + \" \" + gen(\"t\", max_tokens=2) }\n"
           "main { let st = f()\n print(st[\"n\"] + 1, st[\"t\"], meta(st, \"t\")[\"finish_reason\"]) }\n",
           (const char *const[]){"n=", "41", "41 ", "abc", NULL}, "42 ab length\n", NULL);
    EXPECT("fn f(s) { s += gen(\"x\") }\nmain { let st = f()\n print(st[\"y\"]) }\n", NULL, "",
           "t.sgl:3:8: error: stream has no variable 'y'");
}

static void test_roles_and_select(void) {
    EXPECT("fn chat(s) {\n"
           "  s += system(\"Be brief.\")\n"
           "  s += user(\"Capital of Italy?\")\n"
           "  s += assistant(gen(\"ans\", max_tokens=8))\n"
           "  with user(s) { s += \"Pick one: \" }\n"
           "  s += assistant(select(\"pick\", [\"Milan\", \"Rome\"]))\n"
           "}\n"
           "main { let st = chat()\n print(st[\"ans\"], st[\"pick\"], meta(st, \"pick\")[\"scores\"])\n"
           "  print(json_dump(text(st))) }\n",
           qa_rules,
           "Rome Rome [-1.0, -0.1]\n"
           "\"<|im_start|>system\\nBe brief.<|im_end|>\\n<|im_start|>user\\nCapital of Italy?<|im_end|>\\n"
           "<|im_start|>assistant\\nRome<|im_end|>\\n<|im_start|>user\\nPick one: <|im_end|>\\n"
           "<|im_start|>assistant\\nRome<|im_end|>\\n\"\n",
           NULL);
}

static const char *const tip_rules[] = {"Tip 1:", " eat well\n", "Tip 2:", " sleep\n", "In summary,", " rest.", NULL};

static void test_fork_join(void) {
    const char *src = "fn tips(s, topic) {\n"
                      "  s += f\"Tips for {topic}:\\n\"\n"
                      "  let b = fork(s, 2)\n"
                      "  for i in range(2) {\n"
                      "    b[i] += f\"Tip {i + 1}:\" + gen(\"detail\", max_tokens=32, stop=\"\\n\")\n"
                      "  }\n"
                      "  join(b)\n"
                      "  s += \"Tip 1:\" + b[0][\"detail\"] + \"\\nTip 2:\" + b[1][\"detail\"] + \"\\n\"\n"
                      "  s += \"In summary,\" + gen(\"summary\", max_tokens=16)\n"
                      "}\n"
                      "main { let st = tips(\"health\")\n print(st[\"detail\"], st[\"summary\"]) }\n";
    run_out r;
    if (run_src(src, tip_rules, &r) < 0) {
        CHECK(0);
        return;
    }
    CHECK_STR(r.printed, "[\" eat well\", \" sleep\"]  rest.\n");
    CHECK(r.error == NULL);
    /* prefill alone, then both branches in one batch, then the summary. */
    CHECK_INT(r.fake->n_batches, 3);
    if (r.fake->n_batches == 3) {
        CHECK_INT(r.fake->batches[0], 1);
        CHECK_INT(r.fake->batches[1], 2);
        CHECK_INT(r.fake->batches[2], 1);
    }
    CHECK(r.fake->n_log > 0 && r.fake->log[0][0] == 'P');
    CHECK_INT(r.stats.max_batch, 2);
    run_free(&r);
}

static void test_run_batch(void) {
    const char *src = "fn sentiment(s, text) {\n"
                      "  s += system(\"Classify.\")\n"
                      "  assert text != \"boom\", \"bad input\"\n"
                      "  s += f\"Text: {text}\\nSentiment:\" + select(\"label\", [\"positive\", \"negative\"])\n"
                      "}\n"
                      "main {\n"
                      "  let rs = run_batch(sentiment, [{\"text\": \"I love it\"}, {\"text\": \"boom\"},\n"
                      "                                {\"text\": \"awful\"}, {\"text\": \"great\"}], parallel=4)\n"
                      "  print(rs[0][\"label\"], rs[2][\"label\"], rs[3][\"label\"], len(rs))\n"
                      "  print(rs[1][\"label\"])\n"
                      "}\n";
    const char *const rules[] = {"love", "positive", "awful", "negative", "great", "positive", NULL};
    run_out r;
    if (run_src(src, rules, &r) < 0) {
        CHECK(0);
        return;
    }
    /* The failed instance leaves the others intact; reading it fails main
     * at the read, naming where the instance failed. */
    CHECK_STR(r.printed, "positive negative positive 4\n");
    CHECK_MSG(r.error && strstr(r.error, "t.sgl:10:9: error: the instance failed at t.sgl:3:3: assertion failed: bad input"), "error: %s",
              r.error ? r.error : "(none)");
    /* Prefix hint first (system turn), then the three scorings together. */
    CHECK(r.fake->n_log > 0 && strncmp(r.fake->log[0], "P:<|im_start|>system\nClassify.<|im_end|>\n", 40) == 0);
    CHECK_INT(r.stats.max_batch, 3);
    run_free(&r);
}

static void test_batch_defaults_and_parallel(void) {
    /* parallel=1 runs the instances one after another; run_batch kwargs are
     * gen defaults (max_tokens=1 cuts the fake's "ok" to "o"). */
    EXPECT("fn f(s, x) { s += x + gen(\"g\") }\n"
           "main { let rs = run_batch(f, [{\"x\": \"a\"}, {\"x\": \"b\"}], parallel=1, max_tokens=1)\n"
           "  print(rs[0][\"g\"], rs[1][\"g\"]) }\n",
           NULL, "o o\n", NULL);
    EXPECT("fn f(s, x) { s += x }\n"
           "main { let rs = run_batch(f, json_parse(\"[{\\\"y\\\": 1}]\"), parallel=2)\n print(len(rs))\n print(rs[0][\"q\"]) }\n",
           NULL, "1\n", "run_batch: argument 0");
}

static void test_engine_failures(void) {
    EXPECT("fn f(s) { s += \"bad\" + gen(\"x\")\n s += \"tail\" }\nmain { let st = f()\n print(\"a\")\n print(st[\"x\"]) }\n",
           (const char *const[]){"bad", "!engine exploded", NULL}, "a\n",
           "t.sgl:5:8: error: gen 'x': engine error: engine exploded (at t.sgl:1:24)");
    /* Not read: the instance still fails, located at the gen. */
    EXPECT("fn f(s) { s += \"bad\" + gen(\"x\") }\nmain { let st = f() }\n",
           (const char *const[]){"bad", "!boom", NULL}, "", "t.sgl:1:24: error: gen 'x': engine error: boom");
    /* A failure in a fork branch names the branch, read directly or at join. */
    EXPECT("fn f(s) {\n let b = fork(s, 3)\n for i in range(3) { b[i] += f\"B{i}:\" + gen(\"x\") }\n"
           " print(b[0][\"x\"])\n print(b[2][\"x\"]) }\nmain { f() }\n",
           (const char *const[]){"B2:", "!engine exploded", NULL}, "ok\n",
           "t.sgl:5:8: error: fork branch 2 of 3: gen 'x': engine error: engine exploded (at t.sgl:3:");
    EXPECT("fn f(s) {\n let b = fork(s, 2)\n for i in range(2) { b[i] += f\"B{i}:\" + gen(\"x\") }\n"
           " join(b) }\nmain { f() }\n",
           (const char *const[]){"B1:", "!boom", NULL}, "",
           "t.sgl:4:2: error: join(): fork branch 1 of 2: gen 'x': engine error: boom");
    /* An engine message with a newline stays on the error's first line. */
    EXPECT("fn f(s) { s += \"bad\" + gen(\"x\") }\nmain { let st = f() }\n",
           (const char *const[]){"bad", "!first\nsecond", NULL}, "",
           "t.sgl:1:24: error: gen 'x': engine error: first\\nsecond");
    /* Values quoted in runtime errors are escaped and cut. */
    EXPECT("main { let x = \"12\\nthirteen\"\n let y = int(x)\n print(y) }\n", NULL, "",
           "int(): invalid integer literal \"12\\nthirteen\"");
    EXPECT("main { let x = \"9\" * 500\n let y = int(x + \"z\")\n print(y) }\n", NULL, "",
           "int(): invalid integer literal \"999999999999999999999999999999999999999999999999999999999999\"...");
    EXPECT("main { assert false, \"two\\nlines\" }\n", NULL, "", "assertion failed: two\\nlines");
}

/* The fake engine follows constraints (fake_engine.h): the rule's reply
 * while allowed, else the end where complete, else the lowest allowed byte. */
static void test_constraints(void) {
    EXPECT("fn f(s) { s += gen(\"x\", regex=\"[0-9]+\") }\nmain { let st = f()\n print(st[\"x\"]) }\n", NULL,
           "0\n", NULL);
    EXPECT("fn f(s) { s += \"n:\" + gen(\"x\", regex=\"[0-9]{2}|ab\") }\nmain { print(f()[\"x\"]) }\n",
           (const char *const[]){"n:", "abc", NULL}, "ab\n", NULL);
    EXPECT("fn f(s) { s += \"q\" + gen(\"x\", dtype=\"int\") + gen(\"y\", dtype=\"bool\") }\n"
           "main { let st = f()\n print(st[\"x\"] + 1, st[\"y\"], text(st)) }\n",
           (const char *const[]){"q", "42", NULL}, "43 false q42false\n", NULL);
    EXPECT("fn f(s) { s += gen(\"x\", json_schema={\"type\": \"object\", \"properties\": {\"a\": {\"enum\": [1, 2]}},"
           " \"required\": [\"a\"], \"additionalProperties\": false}) }\n"
           "main { print(json_parse(f()[\"x\"])[\"a\"]) }\n",
           NULL, "1\n", NULL);
    EXPECT("fn f(s) { s += gen(\"x\", grammar=\"root ::= \\\"(\\\" root \\\")\\\" | \\\"x\\\"\\n\", max_tokens=5) }\n"
           "main { print(f()[\"x\"]) }\n",
           (const char *const[]){"", "((x))", NULL}, "((x))\n", NULL);
    /* built at run time, refused by the engine with the compiler's message */
    EXPECT("fn f(s, p) { s += gen(\"x\", regex=p) }\nmain { let st = f(\"[0-9\")\n print(st[\"x\"]) }\n", NULL, "",
           "regex:");
}

static void test_stream_values(void) {
    EXPECT("fn part(s, x) { s += x }\n"
           "main { let a = part(\"one \")\n let b = part(\"two\")\n a += b\n print(text(a))\n"
           "  let c = fork(a)\n c[0] += \"!\"\n join(c, mode=\"concat\")\n print(text(a)) }\n",
           NULL, "one two\none two!\n", NULL);
    EXPECT("fn part(s, x) { s += x }\nmain { let a = part(\"ab\")\n a += a\n a += a\n print(text(a)) }\n", NULL,
           "abababab\n", NULL);
}

static void test_stdlib(void) {
    EXPECT("import \"strings\"\n"
           "main { print(substr(\"hello\", 1, 3), find(\"a,b,c\", \",\", 2), split(\"a,b,,c\", \",\"),\n"
           "  json_dump(strip(\"  x y \\n\")), lower(\"MiXeD\"), starts_with(\"prefix\", \"pre\"), first_line(\"a\\nb\")) }\n",
           NULL, "el 3 [\"a\", \"b\", \"\", \"c\"] \"x y\" mixed true a\n", NULL);
    EXPECT("import \"vote\"\n"
           "main { print(majority([\"Paris\", \" paris\", \"Rome\"]), vote_count([1, 2, 2])) }\n",
           NULL, "Paris {\"answer\": 2, \"votes\": 2, \"total\": 3}\n", NULL);
    EXPECT("import \"vote\"\n"
           "fn ask(s) { s += \"Q: 2+2?\\nA:\"\n return self_consistency(s, 3, 8, [\"\\n\"]) }\n"
           "fn empty(s) {\n}\n"
           "main { let st = empty()\n print(ask(st), len(st[\"sample\"])) }\n",
           (const char *const[]){"A:", " 4", NULL}, "4 3\n", NULL);
    EXPECT("import \"fewshot\"\n"
           "const EX = [{\"input\": \"good\", \"output\": \"pos\"}, {\"input\": \"bad\", \"output\": \"neg\"}]\n"
           "fn c(s, t) { few_shot_query(s, EX, t, \"In\", \"Out\")\n s += select(\"y\", spaced(labels_of(EX))) }\n"
           "main { let st = c(\"fine\")\n print(json_dump(text(st))) }\n",
           (const char *const[]){"fine", " pos", NULL}, "\"In: good\\nOut: pos\\n\\nIn: bad\\nOut: neg\\n\\nIn: fine\\nOut: pos\"\n", NULL);
    EXPECT("import \"agent\"\n"
           "fn up(x) { return \"UP:\" + x }\n"
           "fn empty(s) {\n}\n"
           "main { print(parse_action(\" calc[1 + 2] \\nmore\"), parse_action(\"nothing\"))\n"
           "  let st = empty()\n print(react(st, \"q?\", {\"up\": up}, 3)) }\n",
           (const char *const[]){"Action:", " up[abc]", "Observation: UP:abc\nThought:", " done", "UP:abc\nThought: done\nAction:",
                                 " finish[ABC]", NULL},
           "{\"tool\": \"calc\", \"input\": \"1 + 2\"} null\nABC\n", NULL);
}

/* The embedded stdlib serves every stdlib/NAME.sgl by name, and a program
 * loaded with only the provider (no file system) can import it. */
static void test_embedded_stdlib(void) {
    const char *text = NULL, *disp = NULL;
    size_t len = 0;
    CHECK(vm_stdlib_provider(NULL, "chat", &text, &len, &disp));
    CHECK(text && len > 0 && strstr(text, "fn ask(") != NULL);
    CHECK_STR(disp, "<stdlib>/chat.sgl");
    CHECK(vm_stdlib_provider(NULL, "agent.sgl", &text, &len, &disp));
    CHECK(!vm_stdlib_provider(NULL, "nope", &text, &len, &disp));
    CHECK(vm_stdlib_count >= 5);
    const char *src = "import \"vote\"\nmain { print(majority([1, 1, 2])) }\n";
    sgl_load_options lo = {0};
    lo.no_filesystem = true;
    lo.provider = vm_stdlib_provider;
    sgl_program *p = NULL;
    CHECK_INT(sgl_program_load_buffer(&p, "e.sgl", src, strlen(src), &lo), 0);
    if (p && p->diags.n_errors) sgl_diags_print(p, stderr, false);
    sgl_program_free(p);
}

static void test_logprobs_meta(void) {
    EXPECT("fn f(s) { s += gen(\"g\", max_tokens=2, return_logprob=true, top_logprobs_num=2, stop_token_ids=[5],\n"
           "  temperature=0.5, top_p=0.9, top_k=3, min_p=0.1, seed=3, frequency_penalty=0.1, presence_penalty=0.1,\n"
           "  repetition_penalty=1.1, ignore_eos=false, min_tokens=1) }\n"
           "main { let st = f()\n let m = meta(st, \"g\")\n print(len(m[\"logprobs\"]), m[\"logprobs\"][0]) }\n",
           NULL,
           "2 {\"token\": 111, \"logprob\": -0.5, \"text\": \"o\", \"top\": [{\"token\": 111, \"logprob\": -0.5, \"text\": \"o\"}, "
           "{\"token\": 112, \"logprob\": -1.5, \"text\": \"p\"}]}\n",
           NULL);
    EXPECT("fn f(s, t) { s += gen(\"g\", temperature=t) }\nmain { let st = f(-1.0)\n print(st[\"g\"]) }\n", NULL, "",
           "gen: temperature must be >= 0, got -1");
}

/* A VM over a fresh fake engine for the C-API tests, with src compiled as
 * file `name`. Returns 0, or -1 (a failed check) when src does not compile. */
typedef struct api_vm {
    sgl_module *m;
    vm_fake *fake;
    sgl_engine *e;
    vm *v;
} api_vm;

static int api_vm_open(api_vm *a, const char *name, const char *src) {
    memset(a, 0, sizeof *a);
    sgl_program *p = NULL;
    CHECK_INT(sgl_program_load_buffer(&p, name, src, strlen(src), NULL), 0);
    sgl_error err = {{0}};
    a->m = compiler_compile(p, NULL, &err);
    sgl_program_free(p);
    if (!a->m) {
        CHECK_MSG(0, "%s does not compile: %s", name, err.msg);
        return -1;
    }
    a->e = vm_fake_engine_new(&a->fake);
    vm_config cfg = vm_config_default();
    cfg.engine = a->e;
    a->v = vm_new(&cfg, &err);
    return 0;
}

static void api_vm_close(api_vm *a) {
    vm_free(a->v);
    sgl_engine_free(a->e);
    compiler_module_free(a->m);
}

/* The C API: instances spawned side by side; one fails, the others finish. */
static void test_spawn_api(void) {
    int64_t live = vm_live_objects();
    const char *src = "fn f(s, x) { assert x != 2\n s += f\"{x}:\" + gen(\"g\") }\n";
    api_vm a;
    if (api_vm_open(&a, "api.sgl", src) < 0) return;
    sgl_module *m = a.m;
    vm_fake *fake = a.fake;
    vm *v = a.v;
    sgl_error err = {{0}};
    int fi = sgl_module_find_fn(m, "f");
    vm_inst *ins[3];
    for (int i = 0; i < 3; i++) {
        vm_value arg = vm_int(i + 1);
        ins[i] = vm_spawn(v, m, (uint32_t)fi, &arg, 1, true, &err);
    }
    CHECK_INT(vm_run(v, &err), 0);
    CHECK(vm_inst_done(ins[0]) && !vm_inst_failed(ins[0]));
    CHECK(vm_inst_failed(ins[1]));
    CHECK(vm_inst_error(ins[1]) && strstr(vm_inst_error(ins[1]), "api.sgl:1:14: error: assertion failed"));
    CHECK(!vm_inst_failed(ins[2]));
    vm_value st = vm_inst_result(ins[2]);
    CHECK(st.type == VM_STREAM && strcmp(vm_str_cstr(*vm_map_get_cstr(vm_stream_vars(st.as.st), "g")), "ok") == 0);
    CHECK_INT(fake->n_batches, 1);
    CHECK_INT(fake->batches[0], 2);
    vm_inst_stats is;
    vm_inst_stats_get(ins[0], &is);
    CHECK_INT(is.requests, 1);
    CHECK_INT(is.completion_tokens, 2);
    api_vm_close(&a);
    CHECK_INT(vm_live_objects(), live);
}

/* Prints, one line each: 4 forked samples, 5 run_batch samples (at the
 * given parallelism), two greedy calls, two calls with seed=7. */
static char *sampling_run(int parallel, long run_seed) {
    char src[2048];
    snprintf(src, sizeof src,
             "fn one(s, q) { s += q + gen(\"a\", temperature=0.8) }\n"
             "main {\n"
             "  let s = one(\"Sample:\")\n"
             "  let b = fork(s, 4)\n"
             "  for i in range(4) { b[i] += \"Sample:\" + gen(\"x\") }\n"
             "  join(b)\n"
             "  print(s[\"x\"])\n"
             "  let rs = run_batch(one, [{\"q\": \"Sample:\"}, {\"q\": \"Sample:\"}, {\"q\": \"Sample:\"},\n"
             "                           {\"q\": \"Sample:\"}, {\"q\": \"Sample:\"}], parallel=%d)\n"
             "  let out = []\n"
             "  for r in rs { out += [r[\"a\"]] }\n"
             "  print(out)\n"
             "  let g = fork(s, 2)\n"
             "  g[0] += \"Sample:\" + gen(\"y\", temperature=0)\n"
             "  g[1] += \"Sample:\" + gen(\"y\", temperature=0)\n"
             "  g[0] += \"Sample:\" + gen(\"z\", seed=7)\n"
             "  g[1] += \"Sample:\" + gen(\"z\", seed=7)\n"
             "  print(g[0][\"y\"], g[1][\"y\"], g[0][\"z\"] == g[1][\"z\"], g[0][\"z\"] != s[\"a\"])\n"
             "}\n",
             parallel);
    const char *const rules[] = {"Sample:", "{sample}", NULL};
    if (run_seed >= 0) {
        run_defaults = vm_map_new();
        vm_map_set_cstr(run_defaults, "seed", vm_int(run_seed), NULL);
    }
    run_out r;
    char *printed = NULL;
    if (run_src(src, rules, &r) == 0) {
        CHECK_MSG(r.error == NULL, "error: %s", r.error);
        printed = r.printed;
        r.printed = NULL;
        run_free(&r);
    }
    vm_release(run_defaults);
    run_defaults = vm_none();
    return printed ? printed : sgl_strdup("");
}

/* Every sampled request draws its own randomness: forks and run_batch
 * instances differ; a run seed makes the run reproducible whatever the
 * parallelism; without one two runs differ; greedy and seed= calls are
 * fixed. */
static void test_sampling_independent(void) {
    char *a = sampling_run(32, 3), *b = sampling_run(32, 3), *c = sampling_run(1, 3);
    char *d = sampling_run(5, -1), *e = sampling_run(5, -1), *f = sampling_run(5, 4);
    CHECK_STR(a, b);
    CHECK_STR(a, c);
    CHECK(strcmp(d, e) != 0);
    CHECK(strcmp(a, f) != 0);
    const char *runs[] = {a, d, f};
    for (int k = 0; k < 3; k++) {
        /* Line 1: four branch samples, line 2: five batch samples, all distinct. */
        const char *p = runs[k];
        char words[9][20];
        int n = 0;
        while (n < 9 && (p = strchr(p, 's')) && sscanf(p, "%17[0-9a-fs]", words[n]) == 1) {
            if (strlen(words[n]) == 17) n++;
            p += 1;
        }
        CHECK_INT(n, 9);
        for (int i = 0; i < n; i++)
            for (int j = i + 1; j < n; j++) CHECK_MSG(strcmp(words[i], words[j]) != 0, "run %d: samples %d and %d equal: %s", k, i, j, words[i]);
        CHECK_MSG(strstr(runs[k], "\ngreedy greedy true true\n") != NULL, "run %d: %s", k, runs[k]);
    }
    free(a), free(b), free(c), free(d), free(e), free(f);
}

/* gen(stream=true): text_iter yields the pieces as the engine streams them
 * (the fake sends 2-byte pieces), and they add up to the variable; without
 * stream the whole text comes as one piece; a second text_iter after the
 * end gives the whole text. */
static void test_streaming(void) {
    const char *const rules[] = {"Tell", "Once upon a time.", NULL};
    EXPECT("fn story(s, st) { s += \"Tell\" + gen(\"x\", stream=st) }\n"
           "main {\n"
           "  let a = story(true)\n"
           "  let ps = [p for p in text_iter(a, \"x\")]\n"
           "  print(ps, join(\"\", ps) == a[\"x\"])\n"
           "  let b = story(false)\n"
           "  print([p for p in text_iter(b, \"x\")], [p for p in text_iter(a, \"x\")])\n"
           "  let c = story(true)\n"
           "  for p in text_iter(c, \"nope\") { print(p) }\n"
           "}\n",
           rules,
           "[\"On\", \"ce\", \" u\", \"po\", \"n \", \"a \", \"ti\", \"me\", \".\"] true\n"
           "[\"Once upon a time.\"] [\"Once upon a time.\"]\n",
           "text_iter: the stream has no variable 'nope'");
}

/* A run that fails while fork branches, selects or a run_batch still wait
 * on the engine frees every value and stream it made (EXPECT counts live
 * objects): the failed instance's streams and their pending requests must
 * not keep each other alive. */
static void test_failure_frees_pending(void) {
    const char *const rules[] = {"never", "x", NULL};
    /* failure in branch 1 while branch 0's gen waits for the shared prefix */
    EXPECT("fn f(s) {\n s += \"Q:\"\n let b = fork(s, 3)\n b[0] += \"A:\" + gen(\"x\", max_tokens=8)\n"
           " b[1] += \"B:\" + str(int(\"nope\"))\n b[2] += \"C:\" }\nmain { f() }\n",
           rules, "", "t.sgl:5:21: error: int(): invalid integer literal \"nope\"");
    /* failure in branch 0 while branches 1 and 2 wait */
    EXPECT("fn f(s) {\n s += \"Q:\"\n let b = fork(s, 3)\n b[1] += gen(\"x\")\n b[2] += gen(\"y\")\n"
           " b[0] += str(int(\"nope\")) }\nmain { f() }\n",
           rules, "", "invalid integer literal");
    /* failure after join, with a gen pending on the parent */
    EXPECT("fn f(s) {\n s += \"Q:\"\n let b = fork(s, 2)\n b += gen(\"x\")\n join(b)\n s += gen(\"y\")\n"
           " let z = 1 / 0 }\nmain { f() }\n",
           rules, "", "division by zero");
    /* nested forks, an inner branch waiting */
    EXPECT("fn f(s) {\n s += \"Q:\"\n let b = fork(s, 2)\n b[0] += \"more\"\n let c = fork(b[0], 2)\n"
           " c[1] += gen(\"x\")\n b[1] += gen(\"y\")\n print(int(\"q\")) }\nmain { f() }\n",
           rules, "", "invalid integer literal");
    /* a select and a streamed gen waiting */
    EXPECT("fn f(s) {\n s += \"Q:\"\n let b = fork(s, 2)\n b[0] += select(\"c\", [\"yes\", \"no\"])\n"
           " b[1] += gen(\"x\", stream=true)\n let x = [1][5] }\nmain { f() }\n",
           rules, "", "out of range");
    /* a fork of a branch after a read, every new branch waiting */
    EXPECT("fn f(s) {\n s += \"Q:\"\n let b = fork(s, 2)\n b[0] += gen(\"x\")\n let t = b[0][\"x\"]\n"
           " let c = fork(b[1], 3)\n c += gen(\"z\")\n assert false, \"late\" }\nmain { f() }\n",
           rules, "", "assertion failed: late");
    /* run_batch: one instance fails with a fork waiting, then main fails */
    EXPECT("fn g(s, k) {\n s += \"P\" + gen(\"x\")\n let b = fork(s, 2)\n b[0] += gen(\"y\")\n assert k != 1, \"bad\" }\n"
           "main { let rs = run_batch(g, [{\"k\": 0}, {\"k\": 1}, {\"k\": 2}])\n print(len(rs))\n print(int(\"z\")) }\n",
           rules, "3\n", "invalid integer literal");
}

/* A failed instance leaves no engine work behind: the gens and the fork
 * prefill its streams still had queued are dropped, not sent with the next
 * flush (a REPL entry or server request that failed), while another
 * instance's requests go out as usual. */
static void test_failed_instance_drops_requests(void) {
    int64_t live = vm_live_objects();
    const char *src = "fn g(s) { s += \"hello\" + gen(\"x\") }\n"
                      "fn bad(s) {\n s += \"Q:\"\n let b = fork(s, 3)\n b += gen(\"y\")\n let t = g()\n"
                      " let z = [1][5] }\n"
                      "fn good(s) { s += \"A:\" + gen(\"w\") }\n";
    api_vm a;
    if (api_vm_open(&a, "drop.sgl", src) < 0) return;
    sgl_error err = {{0}};
    uint32_t fbad = (uint32_t)sgl_module_find_fn(a.m, "bad"), fgood = (uint32_t)sgl_module_find_fn(a.m, "good");
    /* alone: the next run sends only its own request */
    vm_inst *b1 = vm_spawn(a.v, a.m, fbad, NULL, 0, true, &err);
    CHECK_INT(vm_run(a.v, &err), 0);
    CHECK(b1 && vm_inst_failed(b1) && strstr(vm_inst_error(b1), "out of range"));
    vm_inst *g1 = vm_spawn(a.v, a.m, fgood, NULL, 0, true, &err);
    CHECK_INT(vm_run(a.v, &err), 0);
    CHECK(g1 && !vm_inst_failed(g1));
    CHECK_INT(a.fake->n_log, 1);
    CHECK(a.fake->n_log == 1 && strncmp(a.fake->log[0], "G:", 2) == 0 && strstr(a.fake->log[0], "A:"));
    /* beside a live instance in the same run */
    vm_inst *b2 = vm_spawn(a.v, a.m, fbad, NULL, 0, true, &err);
    vm_inst *g2 = vm_spawn(a.v, a.m, fgood, NULL, 0, true, &err);
    CHECK_INT(vm_run(a.v, &err), 0);
    CHECK(b2 && vm_inst_failed(b2) && g2 && !vm_inst_failed(g2));
    CHECK_INT(a.fake->n_log, 2);
    vm_link_stats st;
    vm_engine_stats(a.v, &st);
    CHECK_INT(st.generate_requests, 2);
    CHECK_INT(st.prefill_requests, 0);
    api_vm_close(&a);
    CHECK_INT(vm_live_objects(), live);
}

int main(void) {
    TEST_RUN(test_arith_compare_logic);
    TEST_RUN(test_control_flow);
    TEST_RUN(test_collections);
    TEST_RUN(test_calls);
    TEST_RUN(test_strings_builtins);
    TEST_RUN(test_runtime_errors);
    TEST_RUN(test_gen_and_read);
    TEST_RUN(test_roles_and_select);
    TEST_RUN(test_fork_join);
    TEST_RUN(test_run_batch);
    TEST_RUN(test_batch_defaults_and_parallel);
    TEST_RUN(test_engine_failures);
    TEST_RUN(test_constraints);
    TEST_RUN(test_stream_values);
    TEST_RUN(test_stdlib);
    TEST_RUN(test_embedded_stdlib);
    TEST_RUN(test_logprobs_meta);
    TEST_RUN(test_spawn_api);
    TEST_RUN(test_sampling_independent);
    TEST_RUN(test_streaming);
    TEST_RUN(test_failure_frees_pending);
    TEST_RUN(test_failed_instance_drops_requests);
    return TEST_DONE();
}
