/* fuzz_lang: libFuzzer target over the whole front end: lexer, parser,
 * import loading (through an in-memory provider, never the file system),
 * checker, diagnostics rendering and the AST dump. Any crash, hang, leak or
 * sanitizer report is a bug. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "lang/lang.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool fuzz_provider(void *ctx, const char *name, const char **text, size_t *len, const char **disp) {
    (void)ctx;
    static const char chat[] = "fn ask(s, q, name) {\n    s += user(q)\n    s += assistant(gen(name))\n}\n"
                               "const GREETING = \"hi\"\nfn _private() { }\n";
    static const char loop[] = "import \"loop\"\nfn looped(s) { }\n";
    if (!strcmp(name, "chat")) {
        *text = chat;
        *len = sizeof chat - 1;
    } else if (!strcmp(name, "loop")) {
        *text = loop;
        *len = sizeof loop - 1;
    } else {
        return false;
    }
    *disp = name;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sgl_load_options o = {0};
    o.no_filesystem = true;
    o.ignore_env = true;
    o.provider = fuzz_provider;
    /* Vary options with the first byte so both paths get covered. */
    if (size > 0) {
        o.allow_io = data[0] & 1;
        o.parse_only = (data[0] & 6) == 6;
    }
    sgl_program *p = NULL;
    sgl_program_load_buffer(&p, "fuzz.sgl", (const char *)data, size, &o);
    if (!p) return 0;
    FILE *null = fopen("/dev/null", "w");
    if (null) {
        sgl_diags_print(p, null, (size & 1) != 0);
        for (uint32_t i = 0; i < p->n_modules; i++) sgl_ast_dump(p, p->modules[i], null);
        fclose(null);
    }
    sgl_program_free(p);
    return 0;
}
