/* kernels: the compute primitives the model forward is built from (CPU).
 *
 * Every op has a plain scalar reference version; faster versions (AVX2/FMA/
 * F16C) are chosen once at start-up from the CPU's features through a table
 * of function pointers, and are tested against the reference.
 *
 * Determinism contract (the scheduler relies on it): the value computed for
 * one output element never depends on the batch size, on which other rows are
 * in the batch, or on the thread count; each kernel keeps a fixed reduction
 * order per output element.
 *
 * Layouts: a weight matrix W with `rows` rows of `k` elements is stored
 * row-major in its dtype; row r starts at byte r * sgl_dtype_row_bytes(t, k).
 * Activations are f32, row-major, contiguous.
 *
 * Quantized matmul activations are int16, not int8: the fast paths quantize
 * X per block of 32 values to int16 (x ~= d q, |q| <= 32767) and use exact
 * integer dot products against the weights widened to int16. With int8
 * (Q8_0/Q8_K-style) activations the rounding noise, added up over the 30
 * layers of the default model (SmolLM2-135M Q4_1), flipped near-tied greedy
 * choices away from the float reference's (the chat answer to "What is the
 * capital of France?" began "L'Étoile" instead of "The capital of France is
 * Paris."); int16 makes it 258x smaller, for 3-5% more matmul time at one
 * activation row and 12-23% more on prefill batches (bench_kernels, AVX2 +
 * AVX512-VNNI, Q4_1 shapes; the Q8_0 output head is unchanged).
 */
#ifndef SGL_KERNELS_H
#define SGL_KERNELS_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/dtype.h"

/* ---- thread pool --------------------------------------------------------- */

typedef struct kern_pool kern_pool;
/* fn is called exactly once for each task index ith in [0, nth) (nth = the
 * pool's thread count); kern_pool_run returns when all calls have returned.
 * The caller's thread runs ith 0 and then any index no worker has claimed
 * yet, so one thread may run several indices in turn (never two at once):
 * per-ith buffers are safe, assumptions about which OS thread runs ith are
 * not. */
typedef void (*kern_task_fn)(void *ctx, int ith, int nth);

/* Returns a pool of n_threads threads counting the caller's (0 = number of
 * online cores; n_threads - 1 workers are started), or NULL. Caller owns it;
 * free with kern_pool_free. Idle workers poll for ~0.1 ms after each run
 * (so back-to-back runs cost ~1 us), then sleep on a futex. */
kern_pool *kern_pool_new(int n_threads);
void kern_pool_free(kern_pool *pool);
/* Thread count of the pool; 1 for NULL. */
int kern_pool_threads(const kern_pool *pool);
/* Runs fn on every thread of the pool and waits. A NULL pool runs fn(ctx, 0,
 * 1) on the caller. One caller thread drives a pool at a time, and fn must
 * not call kern_pool_run on the same pool (not reentrant). */
void kern_pool_run(kern_pool *pool, kern_task_fn fn, void *ctx);
/* The contention guard (pool.c): after a run stalled by a preempted worker,
 * the caller runs the tasks alone for a while. On by default (environment
 * SGL_POOL_NO_GUARD=1 turns it off at pool creation); for benchmarks. */
void kern_pool_set_guard(kern_pool *pool, bool on);
/* Runs done solo and stalls seen since the pool started. */
void kern_pool_stats(const kern_pool *pool, uint64_t *solo_runs, uint64_t *stalls);

/* ---- implementation choice ------------------------------------------------ */

/* Name of the implementation in use: "scalar", "avx2", or "avx2-vnni" (AVX2
 * plus AVX512-VNNI int16 dot products (vpdpwssd) for the quantized types,
 * bit-identical results to "avx2"; environment variable SGL_KERN_NO_VNNI=1
 * at start-up disables it). */
const char *kern_impl_name(void);
/* Force the scalar reference implementation (true) or re-detect (false).
 * For tests and benchmarks; call before using kernels from several threads. */
void kern_force_reference(bool on);

/* ---- quantized types ------------------------------------------------------ */

/* Weight layouts of the CPU fast path, made at load by kern_repack and never
 * read from or written to a file: Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K with groups of 8 rows
 * interleaved block by block (layout in kernels/cpu/kern_internal.h). Ids
 * above every file type. kern_matmul takes them like any weight type and
 * gives bit-identical results for a matrix in either layout; kern_dequant_row
 * does not take them. */
enum {
    SGL_DTYPE_Q4_0_R8 = 56,
    SGL_DTYPE_Q4_1_R8 = 57,
    SGL_DTYPE_Q8_0_R8 = 58,
    SGL_DTYPE_Q4_K_R8 = 59,
    SGL_DTYPE_Q6_K_R8 = 60,
    SGL_DTYPE_Q5_K_R8 = 61
};

/* Told that the bytes [src, src + n) of a matrix being repacked are no
 * longer read (their rows are packed). */
typedef void (*kern_repack_done)(void *ctx, const void *src, size_t n);

/* If the kernels in use stream weights of type t faster in a repacked
 * layout (and SGL_NO_REPACK is not set), returns a new 64-byte aligned
 * buffer (the caller frees it with free()) holding W (rows x k) repacked,
 * with *packed its type and *bytes its size; else NULL with *packed = t and
 * *bytes = 0 (use W as it is; NULL also when memory runs out). The work is
 * split over pool (NULL: this thread) and goes by slices of about 16 MiB of
 * W, each passed to done (if not NULL) once packed. */
void *kern_repack(kern_pool *pool, sgl_dtype t, const void *W, int64_t rows, int64_t k,
                  sgl_dtype *packed, size_t *bytes, kern_repack_done done, void *done_ctx);

/* dst[0..k) = row r of a matrix W of k columns and type t, in the file's
 * layout or a repacked one (the embedding lookup). */
void kern_matrix_row(sgl_dtype t, const void *W, int64_t r, int64_t k, float *dst);

/* 1 if t can be used as a weight type in kern_matmul / kern_dequant_row. */
int kern_type_supported(sgl_dtype t);
/* dst[0..n) = decoded src (n a multiple of the block size). */
void kern_dequant_row(sgl_dtype t, const void *src, float *dst, int64_t n);
/* Reference quantizer: encodes src[0..n) into dst (sgl_dtype_row_bytes(t, n)
 * bytes). Returns 0, or -1 if t has no quantizer. Used by tests and by the
 * tiny test model writer. */
int kern_quantize_row(sgl_dtype t, const float *src, void *dst, int64_t n);

/* ---- matmul --------------------------------------------------------------- */

/* Y[b*rows + r] = sum_j W[r][j] * X[b*k + j], for b < nb, r < rows.
 * Each weight block is loaded once for all nb rows of X. Work is split over
 * the pool by output rows (pool may be NULL: single-threaded). k must be a
 * multiple of t's block size; t must satisfy kern_type_supported (else Y is
 * left untouched). Deterministic per the contract above: Y[b][r] is
 * bit-identical for any nb, batch composition and thread count.
 * Accuracy: the fast paths quantize X to int16 per block of 32 values (for
 * every quantized type, K-quants included; Q4_0/Q4_1/Q8_0/Q4_K then take the
 * exact integer dot product of each block and row), so
 * |Y - exact| <= sum_j |W[r][j]| * amax(X block of j) / 65534 (+ f32
 * rounding of the per-block scaling and the sum, about (k/32 + 8) * 2^-24
 * relative); float weight types (F32/F16/BF16) use f32 X directly. The
 * scalar reference (kern_force_reference) uses f32 X and sums in double. */
void kern_matmul(kern_pool *pool, sgl_dtype t, const void *W, int64_t rows, int64_t k,
                 const float *X, int64_t nb, float *Y);

/* One output of kern_matmul_multi: Y = W X as in kern_matmul. */
typedef struct kern_mm_out {
    sgl_dtype t;
    const void *W;
    int64_t rows;
    float *Y;
} kern_mm_out;

/* For every i < n: kern_matmul(pool, o[i].t, o[i].W, o[i].rows, k, X, nb,
 * o[i].Y), with bit-identical results; but when the outputs' types share an
 * activation format (e.g. all Q4_0/Q4_1/Q8_0) X is quantized once for all of
 * them and the rows of all outputs are one job list for one pool run (q/k/v
 * or gate/up of a layer, which read the same input). */
void kern_matmul_multi(kern_pool *pool, const kern_mm_out *o, int n, int64_t k, const float *X,
                       int64_t nb);

/* ---- element-wise and small ops (single-threaded; callers split work) ------ */

/* y = x / rms(x) * w */
void kern_rmsnorm(float *y, const float *x, const float *w, int64_t n, float eps);
/* In place, numerically stable. */
void kern_softmax(float *x, int64_t n);
/* gate[i] = silu(gate[i]) * up[i] */
void kern_silu_mul(float *gate, const float *up, int64_t n);
/* y[i] += x[i] */
void kern_add(float *y, const float *x, int64_t n);
/* Returns sum a[i]*b[i] in a fixed order. */
float kern_dot_f32(const float *a, const float *b, int64_t n);
/* y[i] += a * x[i] */
void kern_axpy(float *y, float a, const float *x, int64_t n);
/* Rotary embedding in place on n_heads heads of head_dim values at position
 * pos; the first rot_dim dims of each head rotate. neox=false pairs (2i,2i+1)
 * (llama/GGML "normal"); neox=true pairs (i, i+rot_dim/2). freq_scale
 * multiplies the position (linear scaling; 1 = none). */
void kern_rope(float *x, int n_heads, int head_dim, int rot_dim, int pos, float theta_base,
               float freq_scale, bool neox);
/* f16 <-> f32 conversion of n values. */
void kern_f32_to_f16(uint16_t *dst, const float *src, int64_t n);
void kern_f16_to_f32(float *dst, const uint16_t *src, int64_t n);

#endif
