/* model: llama-family transformer (GGUF arch "llama" and "qwen2") on the CPU
 * kernels. Loads the hyper-parameters from GGUF metadata, uses the quantized
 * weights in place from the mapped file, and runs one batched forward pass
 * over a batch of sequences whose K/V live in a kv_pool.
 *
 * The forward entry point (model_forward) serves prefill ("extend"), decode
 * and mixed batches alike: the new tokens of every sequence are stacked into
 * one activation matrix so each weight matrix is streamed once per layer for
 * the whole batch; attention runs per (sequence, kv head) over the pool slots
 * the caller names.
 *
 * Determinism: the logits of a sequence are bit-identical whether it runs
 * alone or batched with others, whether its prefix K/V were computed in an
 * earlier call (the radix cache) or in this one, and however its prefill is
 * split into chunks. This holds because (1) the kernels compute every output
 * row with a fixed reduction order independent of the batch, (2) K/V of new
 * tokens are rounded to f16 in the pool *before* attention reads them, so a
 * key always has the same value whichever call produced it, and (3) attention
 * for a query at position p reads keys 0..p in position order with a fixed
 * method (all scores, max, exp-sum in order, weighted V sum in order).
 */
#ifndef SGL_MODEL_H
#define SGL_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/kernels.h"
#include "runtime/gguf.h"
#include "runtime/kv_pool.h"
#include "util/util.h"

struct kb_backend; /* kernels/backend.h */

typedef enum model_arch { MODEL_ARCH_LLAMA, MODEL_ARCH_QWEN2 } model_arch;

typedef enum model_rope_scaling {
    MODEL_ROPE_SCALING_NONE,
    MODEL_ROPE_SCALING_LINEAR /* positions multiplied by 1/factor */
} model_rope_scaling;

/* Hyper-parameters, from the GGUF metadata "<arch>.*" keys. */
typedef struct model_config {
    model_arch arch;
    int32_t n_layers;      /* <arch>.block_count */
    int32_t dim;           /* <arch>.embedding_length: residual stream width */
    int32_t ffn_dim;       /* <arch>.feed_forward_length */
    int32_t n_heads;       /* <arch>.attention.head_count */
    int32_t n_kv_heads;    /* <arch>.attention.head_count_kv (GQA; = n_heads when absent) */
    int32_t head_dim;      /* <arch>.attention.key_length, else dim / n_heads */
    int32_t q_dim;         /* n_heads * head_dim */
    int32_t kv_dim;        /* n_kv_heads * head_dim: width of one K (or V) pool row */
    int32_t vocab;         /* rows of token_embd (<arch>.vocab_size when present must agree) */
    int32_t n_ctx_train;   /* <arch>.context_length (informational; 0 when absent) */
    float rope_theta;      /* <arch>.rope.freq_base (10000 when absent) */
    int32_t rope_dim;      /* <arch>.rope.dimension_count (head_dim when absent) */
    model_rope_scaling rope_scaling; /* <arch>.rope.scaling.type: none / linear */
    float rope_scale_factor; /* <arch>.rope.scaling.factor (1 = none) */
    float rope_freq_scale;   /* 1 / rope_scale_factor, what kern_rope takes */
    bool rope_neox;        /* pairs (i, i + rot/2): qwen2; llama pairs (2i, 2i+1) */
    float rms_eps;         /* <arch>.attention.layer_norm_rms_epsilon */
    bool tied_output;      /* output.weight absent: logits use token_embd */
} model_config;

/* A weight matrix used in place from the mapping: `rows` rows of `cols`
 * elements in `type`, row-major (kern_matmul layout). */
typedef struct model_mat {
    const void *data;
    sgl_dtype type;
    int64_t rows, cols;
} model_mat;

typedef struct model_layer {
    const float *attn_norm;  /* [dim] */
    model_mat wq;            /* [q_dim rows][dim] */
    model_mat wk;            /* [kv_dim rows][dim] */
    model_mat wv;            /* [kv_dim rows][dim] */
    const float *bq;         /* [q_dim] qwen2 bias, NULL for llama */
    const float *bk;         /* [kv_dim] or NULL */
    const float *bv;         /* [kv_dim] or NULL */
    model_mat wo;            /* [dim rows][q_dim] */
    const float *ffn_norm;   /* [dim] */
    model_mat w_gate;        /* [ffn_dim rows][dim] */
    model_mat w_up;          /* [ffn_dim rows][dim] */
    model_mat w_down;        /* [dim rows][ffn_dim] */
} model_layer;

typedef struct model_weights {
    model_mat token_embd;     /* [vocab rows][dim]; rows dequantized per token */
    model_layer *layers;      /* [n_layers] */
    const float *output_norm; /* [dim] */
    model_mat output;         /* [vocab rows][dim]; == token_embd when tied */
} model_weights;

typedef struct sgl_model sgl_model;

/* Opens the GGUF at path, reads the config, checks every tensor the forward
 * needs (present, a kern_type_supported type, the expected shape) and starts
 * a kern_pool of n_threads (0 = all online cores). Returns the model (caller
 * frees with model_free; it owns the mapped file and the pool) or NULL with
 * err naming what is wrong. */
sgl_model *model_load(const char *path, int n_threads, sgl_error *err);
/* Same over an already opened file; the model takes ownership of f (also on
 * failure, when f is closed). */
sgl_model *model_load_gguf(gguf_file *f, int n_threads, sgl_error *err);
void model_free(sgl_model *m);

/* Borrowed views, valid while m lives. */
const model_config *model_get_config(const sgl_model *m);
const model_weights *model_get_weights(const sgl_model *m);
const gguf_file *model_get_gguf(const sgl_model *m);
kern_pool *model_get_pool(sgl_model *m);

/* ---- device ---------------------------------------------------------------- */

typedef enum model_device {
    MODEL_DEVICE_CPU,
    MODEL_DEVICE_CUDA,
    MODEL_DEVICE_AUTO /* model_use_device: CUDA when a GPU answers, else the CPU */
} model_device;

/* Moves the forward to dev (CPU or CUDA): uploads the weights once, in
 * their GGUF types. A model starts on the CPU. Returns 0, or -1 with err set
 * (no CUDA in this build, no GPU or driver, a weight type the device has no
 * kernel for, out of device memory); the model then runs on the CPU. KV
 * pools keep working: a device keeps its own copy of a pool's storage,
 * made on first use (the host copy is not kept in step). */
int model_set_device(sgl_model *m, model_device dev, sgl_error *err);
/* The --device flag: CPU and CUDA as model_set_device; AUTO takes CUDA when
 * it works and otherwise stays on the CPU, writing a one-line note into
 * note (empty when there is nothing to say). Returns 0 or -1 with err. */
int model_use_device(sgl_model *m, model_device dev, char *note, size_t note_cap,
                     sgl_error *err);
/* 1 when dev can run here (CPU: always; CUDA: built and a device answers);
 * 0 with err saying why not. */
int model_device_available(model_device dev, sgl_error *err);
/* The process-wide device the local engine puts its model on (the --device
 * flag of sglc sets it; AUTO when never set). */
void model_set_default_device(model_device dev);
model_device model_default_device(void);
/* One line naming the device the default would pick here, e.g.
 * "cuda (NVIDIA H100 80GB HBM3, 79.1 GiB, compute capability 9.0)" or
 * "cpu (avx2 kernels)". */
void model_default_device_describe(char *buf, size_t cap);
model_device model_get_device(const sgl_model *m);
/* "cpu" / "cuda" (static strings). */
const char *model_device_name(model_device dev);
/* Parses "cpu", "cuda" or "auto". Returns 0, or -1 for anything else. */
int model_parse_device(const char *s, model_device *out);
/* One line naming where the forward runs (device name, memory). */
void model_describe_device(sgl_model *m, char *buf, size_t cap);
/* Device memory in bytes taken by the weights and in all (weights,
 * activations, KV stores); both 0 on the CPU. */
void model_device_memory(const sgl_model *m, uint64_t *weights, uint64_t *total);

/* Moves the forward to a backend made by the caller (kernels/backend.h;
 * the model owns be from here, also on failure): for tests and backends
 * model_set_device does not name. Returns 0 or -1 with err set (then the
 * model runs on the CPU). */
int model_attach_backend(sgl_model *m, struct kb_backend *be, sgl_error *err);
/* The backend the forward runs on (kernels/backend.h), for benchmarks and
 * backend-specific settings; valid until the next model_set_device. */
struct kb_backend *model_get_backend(sgl_model *m);

/* Returns a KV pool sized for this model (n_layers, kv_dim) with n_slots
 * token slots (caller frees with kv_pool_free), or NULL with err set. */
kv_pool *model_kv_pool_new(const sgl_model *m, int32_t n_slots, sgl_error *err);

/* ---- weight verification (sglc model-info --verify) ----------------------- */

/* Decoded weights whose magnitude exceeds this are reported as out of
 * range (real checkpoints stay orders of magnitude below; a corrupt scale
 * does not). */
#define MODEL_VERIFY_MAX_ABS 1e4

typedef struct model_tensor_check {
    bool checked;        /* false: no decoder for the tensor's type */
    uint64_t n_values;
    uint64_t n_nan, n_inf, n_big; /* n_big: finite, |v| > MODEL_VERIFY_MAX_ABS */
    uint64_t first_bad;  /* index (GGUF order) of the first bad value */
    double max_abs;      /* over the finite values */
} model_tensor_check;

/* Decodes every value of t (with the kernels' reference decoders) and
 * counts NaN, Inf and out-of-range values; a bad block scale shows as a
 * run of them. Returns 0, or -1 with err set (out of memory). */
int model_check_tensor(const gguf_tensor *t, model_tensor_check *out, sgl_error *err);

/* ---- forward -------------------------------------------------------------- */

/* One sequence's part of a batch. The caller owns every array. */
typedef struct model_seq {
    int32_t n_new;          /* new tokens to process (>= 1) */
    const int32_t *tokens;  /* [n_new] */
    int32_t pos0;           /* position of tokens[0]; new token i is at pos0 + i */
    int32_t n_ctx;          /* tokens attended = cached prefix + n_new (== pos0 + n_new) */
    const int32_t *slots;   /* [n_ctx] KV slot of every attended token; the last n_new are written */
    int32_t logits_from;    /* new tokens with index >= logits_from get logits rows
                               (n_new-1 = last only; n_new = none) */
} model_seq;

typedef struct model_batch {
    int32_t n_seqs;
    const model_seq *seqs;  /* [n_seqs] */
} model_batch;

/* Number of logits rows b asks for (sum over seqs of n_new - logits_from). */
int64_t model_batch_logit_rows(const model_batch *b);

/* Runs the batch: writes K/V of every new token into kv at its slot (all
 * layers) and, when the batch asks for any, logits [rows][vocab] into
 * `logits` (caller-owned, model_batch_logit_rows(b) * vocab floats; may be
 * NULL when no rows are asked for), rows in seq order then token order.
 * Slots of the cached prefix are only read. Returns 0, or -1 with err set
 * (invalid descriptor, pool of another shape, out of memory: nothing is
 * written to logits; NaN/Inf in the activations, from a corrupt weight or
 * an overflow: the message names the layer and block where non-finite
 * values first appear; logits are garbage then). Not reentrant: one forward per model at a
 * time (the model keeps its scratch buffers). A batch of more than 512 new
 * tokens runs as consecutive sub-batches of at most 512 (same results; the
 * scratch stays that size); an error in a later one leaves the K/V of the
 * earlier ones written. */
int model_forward(sgl_model *m, kv_pool *kv, const model_batch *b, float *logits,
                  sgl_error *err);

#endif
