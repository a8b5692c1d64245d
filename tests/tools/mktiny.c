/* sgl-mktiny: writes the tiny llama-layout test model (tests/tools/tiny_model.h)
 * to a GGUF file: `sgl-mktiny OUT.gguf [--seed N] [--untied] [--types mixed|f32]`,
 * or with --shape a synthetic model of a real family's shape
 * (tests/tools/shape_model.h). The same arguments always give the same bytes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kernels/kernels.h"
#include "tests/tools/shape_model.h"
#include "tests/tools/tiny_model.h"

static void usage(FILE *out) {
    fprintf(out, "usage: sgl-mktiny OUT.gguf [--seed N] [--untied] [--types mixed|f32] [--nan TENSOR]\n"
                 "Writes the tiny random-weight llama model used by the tests (deterministic per seed).\n"
                 "  --seed N       weight seed (default 1)\n"
                 "  --untied       also write output.weight (default: tied to token_embd)\n"
                 "  --types T      mixed (F32/F16/Q8_0/Q4_0/Q4_1, default) or f32 (all F32)\n"
                 "  --nan TENSOR   a corrupt model: TENSOR's first weight is NaN\n"
                 "Synthetic models of real shapes (seeded random weights, standard llama keys):\n"
                 "  --shape S      llama-1b|llama-3b|llama-8b (Llama 3.2 1B/3B, Llama 3.1 8B shapes)\n"
                 "  --type T       F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q4_K Q5_K Q6_K for the matrices (default Q4_0)\n"
                 "  --layers N     override the layer count (tests)\n"
                 "  --vocab N      override the vocabulary size (tests)\n"
                 "  --vocab-from M take the tokenizer from GGUF M (e.g. the default model), padded\n"
                 "                 with unused tokens to the vocabulary size (default: the tiny one)\n");
}

static long parse_num(const char *flag, const char *v, long lo, long hi) {
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || *end || end == v || n < lo || n > hi) {
        fprintf(stderr, "sgl-mktiny: error: invalid value '%s' for %s\n", v, flag);
        exit(2);
    }
    return n;
}

int main(int argc, char **argv) {
    tiny_opts o = {.seed = 1};
    const char *shape = NULL, *type = "Q4_0", *vocab_from = NULL;
    long layers = 0, vocab = 0;
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
        } else if (!strcmp(a, "--shape") && i + 1 < argc) {
            shape = argv[++i];
        } else if (!strcmp(a, "--type") && i + 1 < argc) {
            type = argv[++i];
        } else if (!strcmp(a, "--vocab-from") && i + 1 < argc) {
            vocab_from = argv[++i];
        } else if (!strcmp(a, "--layers") && i + 1 < argc) {
            layers = parse_num(a, argv[++i], 1, 1000);
        } else if (!strcmp(a, "--vocab") && i + 1 < argc) {
            vocab = parse_num(a, argv[++i], 1, 10000000);
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
    if (shape) {
        const shape_def *d = shape_lookup(shape);
        if (!d) {
            fprintf(stderr, "sgl-mktiny: error: unknown --shape '%s' (%s)\n", shape, shape_names());
            return 2;
        }
        shape_opts so = {.shape = *d, .seed = o.seed, .vocab_from = vocab_from, .type = SGL_DTYPE_MAX_ID};
        for (int t = 0; t < SGL_DTYPE_MAX_ID; t++)
            if (sgl_dtype_name(t) && !strcasecmp(sgl_dtype_name(t), type)) so.type = (sgl_dtype)t;
        if (so.type == SGL_DTYPE_MAX_ID || !kern_type_supported(so.type)) {
            fprintf(stderr, "sgl-mktiny: error: unknown --type '%s'\n", type);
            return 2;
        }
        if (layers) so.shape.n_layer = (uint32_t)layers;
        if (vocab) so.shape.n_vocab = (uint32_t)vocab;
        if (shape_model_write(out, &so, &err)) {
            fprintf(stderr, "sgl-mktiny: error: %s\n", err.msg);
            return 1;
        }
        return 0;
    }
    gguf_writer *w = gguf_writer_new();
    if (!w || tiny_model_build(w, &o, &err) || gguf_writer_write_file(w, out, &err)) {
        fprintf(stderr, "sgl-mktiny: error: %s\n", w ? err.msg : "out of memory");
        gguf_writer_free(w);
        return 1;
    }
    gguf_writer_free(w);
    return 0;
}
