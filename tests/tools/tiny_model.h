/* tiny_model: builds the project's tiny llama-layout test model (random
 * weights, real GGUF layout and SmolLM2-style byte-level BPE tokenizer
 * metadata) into a gguf_writer. Deterministic for a seed. Used by the
 * sgl-mktiny tool and by tests that want the model in memory.
 *
 * Shape: vocab 3 specials + 256 byte tokens + TINY_N_MERGES merge tokens,
 * dim 64, 2 layers, 4 heads of 16, 2 KV heads (GQA), ffn 128, context 256,
 * rope theta 10000, rms eps 1e-5; embeddings tied unless `untied`.
 */
#ifndef SGL_TINY_MODEL_H
#define SGL_TINY_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "runtime/gguf.h"

#define TINY_N_EMBD 64
#define TINY_N_LAYER 2
#define TINY_N_HEAD 4
#define TINY_N_HEAD_KV 2
#define TINY_HEAD_DIM 16
#define TINY_N_FF 128
#define TINY_N_CTX 256
#define TINY_ROPE_THETA 10000.0f
#define TINY_RMS_EPS 1e-5f
#define TINY_N_SPECIAL 3
#define TINY_N_MERGES 160
#define TINY_N_VOCAB (TINY_N_SPECIAL + 256 + TINY_N_MERGES)
#define TINY_BOS_ID 1
#define TINY_EOS_ID 2

typedef struct tiny_opts {
    uint64_t seed;  /* weights only; the tokenizer does not depend on it */
    bool untied;    /* also write output.weight */
    bool all_f32;   /* every tensor F32 (else the mixed-type table) */
    /* A corrupt model for integrity tests: this tensor's value at index
     * nan_index (GGUF order) is NaN before quantization. NULL: none. */
    const char *nan_tensor;
    uint64_t nan_index;
} tiny_opts;

/* Adds the whole model (metadata and tensors) to w. Returns 0, or -1 with
 * err set. */
int tiny_model_build(gguf_writer *w, const tiny_opts *o, sgl_error *err);

/* The tokenizer tables tiny_model_build writes. Returns malloc'd arrays of
 * malloc'd strings (free with tiny_strings_free) or -1 when out of memory:
 * tokens (TINY_N_VOCAB) and merges (TINY_N_MERGES, "Ġ t" form). */
int tiny_model_vocab(char ***tokens, char ***merges);
void tiny_strings_free(char **v, uint64_t n);

/* The float values (before quantization) of a tensor of the model, n
 * elements in GGUF order (ne[0] fastest), or NULL if the name is not one of
 * the model's tensors. Caller frees. */
float *tiny_model_values(const tiny_opts *o, const char *name, uint64_t *n);

/* The chat template string the model carries (static). */
const char *tiny_model_chat_template(void);

#endif
