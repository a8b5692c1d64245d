/* backend: the table of compute operations the model forward is written
 * against (runtime/model.c), so one forward runs on the CPU kernels or on a
 * device. A backend is a struct whose first member points at its kb_ops
 * table; every op takes the backend itself as first argument.
 *
 * Memory: activations, weights and the KV store live in the backend's
 * memory ("backend pointers": host memory for the CPU backend, device memory
 * for CUDA). The host reaches them only through upload / download. Ops are
 * queued in order (a device may run them asynchronously); kb_ops.finish waits
 * for all of them and reports errors.
 *
 * Batch: kb_ops.begin hands the backend the flattened batch (kb_batch) once
 * per forward; the row-indexed ops (embed, rope, kv_store, attention,
 * gather_rows) read the token ids, positions, slots and logits rows from it.
 *
 * Determinism contract (the scheduler relies on it, as for kernels.h): the
 * value an op computes for one row never depends on which other rows are in
 * the batch or on how many there are; every reduction has one fixed order
 * per output element. A backend may deviate only in a mode documented as
 * non-deterministic (kb_cuda's cuBLAS mode).
 *
 * Adding a variant: fill a kb_ops with the functions that differ and keep
 * the rest (kernels/cpu/backend_cpu.c shows the CPU table; a faster CPU
 * variant can copy it and replace entries). See kernels/README.md.
 */
#ifndef SGL_KB_BACKEND_H
#define SGL_KB_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/dtype.h"
#include "util/util.h"

/* A weight matrix as the backend holds it: `rows` rows of `cols` values of
 * `type`, row-major (kernels.h layout); data is a backend pointer. */
typedef struct kb_mat {
    sgl_dtype type;
    int64_t rows, cols;
    const void *data;
    /* set on the host matrix given to mat_upload: its rows are looked up
     * (embed), so the backend keeps the file layout (no repacking) */
    bool lookup;
    /* optional, on the host matrix given to mat_upload: called with parts
     * of data the backend has copied and will not read again */
    void (*release)(void *ctx, const void *p, size_t n);
    void *release_ctx;
} kb_mat;

/* One sequence of a flattened batch. */
typedef struct kb_seq {
    int32_t row0;   /* activation row of its first new token */
    int32_t n_new;  /* new tokens, rows row0 .. row0 + n_new - 1 */
    int32_t pos0;   /* position of its first new token; it attends to pos0 + n_new keys */
    int32_t slot0;  /* its pos0 + n_new KV slots start at kb_batch.slots[slot0] */
    const int32_t *slots; /* the same slots in the caller's array (host memory) */
} kb_seq;

/* The flattened batch (host memory, owned by the caller, valid until
 * kb_ops.finish returns). Row r belongs to seqs[row_seq[r]]. */
typedef struct kb_batch {
    int32_t n_seqs;
    const kb_seq *seqs;
    int64_t n_rows;          /* total new tokens */
    const int32_t *tok;      /* [n_rows] token id */
    const int32_t *pos;      /* [n_rows] position */
    const int32_t *wslot;    /* [n_rows] KV slot the row writes */
    const int32_t *row_seq;  /* [n_rows] sequence of the row */
    const int32_t *slots;    /* [n_slots] every sequence's attended slots, in seq order;
                                NULL for host backends (ops->host), which read kb_seq.slots */
    int64_t n_slots;
    int32_t max_ctx;         /* largest pos0 + n_new */
    int64_t n_logits;        /* rows asked for logits */
    const int32_t *logit_rows; /* [n_logits] their activation rows, ascending */
} kb_batch;

/* The KV store: f16 K and V, [n_layers][n_slots][kv_dim] each, the layout
 * of runtime/kv_pool.h; k and v are backend pointers. */
typedef struct kb_kv {
    int32_t n_slots, n_layers, kv_dim;
    uint16_t *k, *v;
} kb_kv;

/* Attention shape of a model. */
typedef struct kb_att_shape {
    int n_heads, n_kv_heads, head_dim;
} kb_att_shape;

/* RoPE parameters (kern_rope's). */
typedef struct kb_rope {
    int n_heads, head_dim, rot_dim;
    float theta, freq_scale;
    bool neox;
} kb_rope;

typedef struct kb_backend kb_backend;

typedef struct kb_ops {
    const char *name; /* "cpu", "cuda" */
    /* true: backend pointers are host memory and check_finite stops the
     * forward at once (the CPU and its variants); false: a device. */
    bool host;

    /* ---- memory ---- */
    /* Returns bytes of backend memory (NULL when out of memory); free with
     * free_mem (NULL is a no-op). */
    void *(*alloc)(kb_backend *be, size_t bytes);
    void (*free_mem)(kb_backend *be, void *p);
    /* Copies between host and backend memory. Return 0 or -1 with err set. */
    int (*upload)(kb_backend *be, void *dst, const void *src, size_t bytes, sgl_error *err);
    int (*download)(kb_backend *be, void *dst, const void *src, size_t bytes, sgl_error *err);
    /* Makes the backend's copy of a host weight matrix (*out). The CPU
     * backend uses host memory in place, or, for a type its kernels stream
     * faster in another layout (kern_repack), a repacked copy whose type is
     * then the repacked one (out->type != host->type). Returns 0 or -1 with
     * err set; release with mat_free. */
    int (*mat_upload)(kb_backend *be, const kb_mat *host, kb_mat *out, sgl_error *err);
    void (*mat_free)(kb_backend *be, kb_mat *m);
    /* Returns a zeroed KV store of the backend's own (n_layers x n_slots x
     * kv_dim f16 for K and V), or NULL with err set; NULL as the entry
     * itself: the backend works on the host pool's storage. The store is
     * freed with kv_free, which needs no backend (a pool may outlive it). */
    kb_kv *(*kv_new)(kb_backend *be, int32_t n_slots, int32_t n_layers, int32_t kv_dim,
                     sgl_error *err);
    void (*kv_free)(void *kv);
    /* 1 if weights of type t can be used by matmul / embed. */
    int (*type_supported)(kb_backend *be, sgl_dtype t);

    /* ---- one forward ---- */
    /* Takes the batch for the ops that follow (see kb_batch). Returns 0 or
     * -1 with err set. */
    int (*begin)(kb_backend *be, const kb_batch *b, sgl_error *err);
    /* Waits for every queued op. Returns 0, or -1 with err set (a device
     * error). *first_bad is the smallest probe id whose check_finite saw a
     * NaN/Inf in this forward, or -1. */
    int (*finish)(kb_backend *be, int *first_bad, sgl_error *err);

    /* ---- ops (row-major f32 activations, backend pointers) ---- */
    /* Y[b][r] = sum_j W[r][j] X[b][j] for b < nb (kern_matmul semantics). */
    void (*matmul)(kb_backend *be, const kb_mat *w, const float *x, int64_t nb, float *y);
    /* y[i] = w[i] x for i < n: the same as n matmul calls; weights sharing
     * the input may share its conversion. */
    void (*matmul_multi)(kb_backend *be, const kb_mat *const *w, float *const *y, int n,
                         const float *x, int64_t nb);
    /* x[r] = decoded row tok[r] of the embedding matrix, r < n_rows. */
    void (*embed)(kb_backend *be, const kb_mat *emb, float *x);
    /* y[r] = rmsnorm(x[r]) * w for n rows of dim (y may equal x). */
    void (*rmsnorm)(kb_backend *be, float *y, const float *x, const float *w, int64_t n,
                    int64_t dim, float eps);
    /* y[r] += x[r] for n rows of dim (residual add). */
    void (*add)(kb_backend *be, float *y, const float *x, int64_t n, int64_t dim);
    /* y[r] += bias for n rows of dim (qkv bias). */
    void (*bias_add)(kb_backend *be, float *y, const float *bias, int64_t n, int64_t dim);
    /* Rotary embedding of every batch row of x at the row's position. */
    void (*rope)(kb_backend *be, float *x, const kb_rope *rp);
    /* g[r] = silu(g[r]) * u[r] for n rows of dim. */
    void (*silu_mul)(kb_backend *be, float *g, const float *u, int64_t n, int64_t dim);
    /* Rounds k[r], v[r] (kv_dim f32 each) to f16 into the layer's rows at
     * slot wslot[r], for every batch row. */
    void (*kv_store)(kb_backend *be, const kb_kv *kv, int layer, const float *k, const float *v);
    /* out[r] (n_heads * head_dim) = causal attention of q[r] over keys
     * 0 .. pos[r] of its sequence (the slots of the batch), for every batch
     * row: softmax(q K^T / sqrt(head_dim)) V, query head h reading kv head
     * h / (n_heads / n_kv_heads). Extend and decode rows alike. */
    void (*attention)(kb_backend *be, const kb_kv *kv, int layer, const kb_att_shape *sh,
                      const float *q, float *out);
    /* dst[i] = src[logit_rows[i]] (dim values) for i < n_logits. */
    void (*gather_rows)(kb_backend *be, float *dst, const float *src, int64_t dim);
    /* Optional fused forms (NULL: model_forward calls the single ops above
     * in the same order, with the same result). qkv_post: per batch row,
     * the biases (each may be NULL), rope of q (rq) and k (rk), then the
     * K/V store. add_rmsnorm: x[r] += y[r], then, when w is set,
     * y[r] = rmsnorm(x[r]) * w. The CPU fuses them to make one pass (one
     * pool run) over the rows instead of several. */
    void (*qkv_post)(kb_backend *be, float *q, float *k, float *v, const float *bq,
                     const float *bk, const float *bv, const kb_rope *rq, const kb_rope *rk,
                     const kb_kv *kv, int layer);
    void (*add_rmsnorm)(kb_backend *be, float *x, float *y, const float *w, int64_t n,
                        int64_t dim, float eps);
    /* Checks x[0..n) for NaN/Inf under probe id `probe` (>= 0). Returns 1
     * when the forward should stop now (the CPU backend: a bad value was
     * seen); a device backend records the probe and returns 0, and finish
     * reports the smallest bad probe. */
    int (*check_finite)(kb_backend *be, const float *x, int64_t n, int probe);

    /* ---- lifetime ---- */
    /* One-line description of where it runs (device name, memory). */
    void (*describe)(kb_backend *be, char *buf, size_t cap);
    /* Bytes of backend memory in use (weights + buffers + KV stores). */
    uint64_t (*mem_used)(kb_backend *be);
    void (*destroy)(kb_backend *be);
} kb_ops;

struct kb_backend {
    const kb_ops *ops;
};

/* ---- the implementations ---------------------------------------------------- */

struct kern_pool;
/* Returns the CPU backend (kernels.h kernels on pool, which stays the
 * caller's), or NULL when out of memory. Destroy with ops->destroy. */
kb_backend *kb_cpu_new(struct kern_pool *pool);

/* Returns 1 when this build has the CUDA backend (kernels/cuda). */
int kb_cuda_built(void);
/* Returns the CUDA backend on device 0, or NULL with err set (not built, no
 * device or driver, out of memory). Never aborts. */
kb_backend *kb_cuda_new(sgl_error *err);

#endif
