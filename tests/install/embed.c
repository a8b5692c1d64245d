/* embed.c: a small program built against an installed libsglc through
 * pkg-config (tests/install/install_test.py compiles it): it opens an
 * engine (the fake one, or the model named by argv[1]), loads a program from
 * text, lists its functions, runs two of them with JSON arguments, shows a
 * compile error and a runtime error as structured values, and generates
 * from a raw prompt. One "label: JSON" line per step on stdout.
 *
 * Usage: embed fake|MODEL.gguf */
#include <stdio.h>
#include <string.h>

#include <sglc/sglc.h>

static const char *prog =
    "fn greet(name, n) {\n"
    "    return \"hello \" + name + \" x\" + str(n * 2)\n"
    "}\n"
    "fn ask(s, q) {\n"
    "    s += user(q) + assistant(gen(\"a\", max_tokens=8))\n"
    "}\n"
    "fn boom(xs) {\n"
    "    return xs[5]\n"
    "}\n"
    "main { print(greet(\"main\", 1)) }\n";

/* Prints "label: JSON" for an error. */
static void show_error(const char *label, const sglc_error *err) {
    char *j = sglc_error_json(err);
    printf("%s: %s\n", label, j ? j : "null");
    sglc_free(j);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: embed fake|MODEL.gguf\n");
        return 2;
    }
    printf("version: \"%s\"\n", sglc_version());
    sglc_engine_options eo;
    sglc_engine_options_init(&eo);
    if (!strcmp(argv[1], "fake")) eo.fake = 1;
    else eo.model_path = argv[1];
    eo.n_threads = 1;
    sglc_engine *e = NULL;
    sglc_error err;
    if (sglc_engine_open(&eo, &e, &err) != SGLC_OK) {
        show_error("open", &err);
        return 1;
    }
    printf("engine: \"%s\"\n", sglc_engine_name(e));

    sglc_program *p = NULL;
    if (sglc_program_load_text("embedded.sgl", prog, strlen(prog), NULL, &p, &err) != SGLC_OK) {
        show_error("load", &err);
        fputs(sglc_program_diagnostics(p), stderr);
        sglc_program_free(p);
        sglc_engine_close(e);
        return 1;
    }
    char *fns = sglc_program_functions_json(p);
    printf("functions: %s\n", fns ? fns : "null");
    sglc_free(fns);

    struct { const char *label, *fn, *args; } runs[] = {
        {"greet", "greet", "[\"Ada\", 21]"},
        {"ask", "ask", "[\"Name a color.\"]"},
        {"main", NULL, NULL},
        {"boom", "boom", "[[1, 2]]"},
    };
    int status = 0;
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        char *out = NULL;
        sglc_status st = sglc_program_run(p, e, runs[i].fn, runs[i].args, "{\"temperature\": 0}", &out, &err);
        printf("%s: %s\n", runs[i].label, out ? out : "null");
        if (st != SGLC_OK) show_error("error", &err);
        if (st != SGLC_OK && st != SGLC_ERR_RUNTIME) status = 1;
        sglc_free(out);
    }
    char *out = NULL;
    if (sglc_program_run(p, e, "nope", "[]", NULL, &out, &err) != SGLC_OK) show_error("unknown-fn", &err);
    sglc_program_free(p);

    /* A program with a compile error: located, and the program still
     * answers for its diagnostics. */
    const char *bad = "main {\n    let x = 1\n    print(y)\n}\n";
    if (sglc_program_load_text("bad.sgl", bad, strlen(bad), NULL, &p, &err) != SGLC_ERR_COMPILE) status = 1;
    show_error("compile", &err);
    char *diags = sglc_program_diagnostics_json(p);
    printf("diagnostics: %s\n", diags ? diags : "null");
    sglc_free(diags);
    sglc_program_free(p);

    if (sglc_engine_generate(e, "The sky is", "{\"max_tokens\": 4, \"stop\": [\"\\n\"]}", &out, &err) == SGLC_OK)
        printf("generate: %s\n", out);
    else
        show_error("generate", &err), status = 1;
    sglc_free(out);
    sglc_engine_close(e);
    return status;
}
