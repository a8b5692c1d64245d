/* shape_model: synthetic llama-family models of real shapes (Llama 3.2 1B /
 * 3B, Llama 3.1 8B: layer count, widths, GQA, vocabulary size) with seeded
 * random weights, for speed measurements on the sizes people run. Written
 * straight to a file, one tensor row at a time, so memory stays small
 * whatever the size. Standard GGUF llama keys: llama.cpp loads them too.
 *
 * The tokenizer comes from another GGUF (vocab_from, e.g. the default
 * model, so real prompts tokenize) or else is the tiny model's; either is
 * padded with UNUSED tokens "<|unused_N|>" up to the family's vocabulary.
 */
#ifndef SGL_SHAPE_MODEL_H
#define SGL_SHAPE_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/dtype.h"
#include "util/util.h"

typedef struct shape_def {
    const char *name; /* "llama-1b" */
    uint32_t n_embd, n_layer, n_head, n_head_kv, n_ff, n_vocab, n_ctx;
    float rope_theta, rms_eps;
    bool tied; /* output head shares token_embd */
} shape_def;

/* The family named `name`, or NULL. shape_names() lists them ("a|b|c"). */
const shape_def *shape_lookup(const char *name);
const char *shape_names(void);

typedef struct shape_opts {
    shape_def shape;        /* from shape_lookup, fields may be overridden */
    sgl_dtype type;         /* 2-D weights; norms are F32 */
    uint64_t seed;
    const char *vocab_from; /* GGUF to take the tokenizer from, or NULL */
} shape_opts;

/* Writes the model to path. Returns 0, or -1 with err set (bad options,
 * unreadable vocab_from, write failure). */
int shape_model_write(const char *path, const shape_opts *o, sgl_error *err);

#endif
