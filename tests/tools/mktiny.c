/* sgl-mktiny: writes the tiny llama-layout test model (tests/tools/tiny_model.h)
 * to a GGUF file: `sgl-mktiny OUT.gguf [--seed N] [--untied] [--types mixed|f32]`.
 * The same arguments always give the same bytes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/tools/tiny_model.h"

static void usage(FILE *out) {
    fprintf(out, "usage: sgl-mktiny OUT.gguf [--seed N] [--untied] [--types mixed|f32] [--nan TENSOR]\n"
                 "Writes the tiny random-weight llama model used by the tests (deterministic per seed).\n"
                 "  --seed N       weight seed (default 1)\n"
                 "  --untied       also write output.weight (default: tied to token_embd)\n"
                 "  --types T      mixed (F32/F16/Q8_0/Q4_0/Q4_1, default) or f32 (all F32)\n"
                 "  --nan TENSOR   a corrupt model: TENSOR's first weight is NaN\n");
}

int main(int argc, char **argv) {
    tiny_opts o = {.seed = 1};
    const char *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--untied")) {
            o.untied = true;
        } else if (!strcmp(a, "--nan") && i + 1 < argc) {
            o.nan_tensor = argv[++i]; /* a corrupt model: one NaN weight in TENSOR */
        } else if (!strcmp(a, "--seed") && i + 1 < argc) {
            char *end;
            errno = 0;
            o.seed = strtoull(argv[++i], &end, 10);
            if (errno || *end || end == argv[i]) {
                fprintf(stderr, "sgl-mktiny: error: invalid seed '%s'\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(a, "--types") && i + 1 < argc) {
            const char *t = argv[++i];
            if (!strcmp(t, "f32")) o.all_f32 = true;
            else if (!strcmp(t, "mixed")) o.all_f32 = false;
            else {
                fprintf(stderr, "sgl-mktiny: error: unknown --types '%s' (mixed or f32)\n", t);
                return 2;
            }
        } else if (a[0] == '-' || out) {
            fprintf(stderr, "sgl-mktiny: error: unexpected argument '%s'\n", a);
            usage(stderr);
            return 2;
        } else {
            out = a;
        }
    }
    if (!out) {
        usage(stderr);
        return 2;
    }
    sgl_error err = {{0}};
    gguf_writer *w = gguf_writer_new();
    if (!w || tiny_model_build(w, &o, &err) || gguf_writer_write_file(w, out, &err)) {
        fprintf(stderr, "sgl-mktiny: error: %s\n", w ? err.msg : "out of memory");
        gguf_writer_free(w);
        return 1;
    }
    gguf_writer_free(w);
    return 0;
}
