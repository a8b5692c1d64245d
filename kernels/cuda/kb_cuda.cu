/* kb_cuda: the CUDA implementation of the backend table (kernels/backend.h).
 *
 * Weights are uploaded once in their GGUF types and decoded inside the
 * kernels (the element decoders below follow kernels/cpu/ref_quant.c bit for
 * bit, with explicit round-to-nearest products so nvcc fuses nothing). The
 * KV store lives on the device as f16 in the slot layout of
 * runtime/kv_pool.h; the host pool chooses the slots.
 *
 * Determinism (kernels/backend.h): every output element has one reduction
 * order that does not depend on the batch:
 *  - matmul: one warp per (weight row, tile of MM_TILE or MM_TILE_BIG rows);
 *    lane l sums the products of columns l, l + 32, ... in column order and
 *    the 32 lane sums meet in a fixed butterfly. An activation row's result
 *    is the same in any tile and any batch.
 *  - attention: the keys 0..pos of a query are cut into chunks of
 *    ATT_CHUNK at fixed key positions; each chunk gives (max, sum, weighted
 *    V) with fixed-order sums; the chunks are combined in key order. Extend
 *    (prefill) rows and decode rows use the same kernels.
 *  - rmsnorm: fixed-order block reduction per row.
 * The optional cuBLAS path (kb_cuda_set_gemm_rows) decodes weights to f16
 * and runs a tensor-core GEMM for batches from a number of rows up: faster,
 * but its sums depend on the batch shape, so it is off by default.
 *
 * Not done yet: CUDA graphs for recurring decode shapes; an extend kernel
 * that shares K/V tiles between the queries of one sequence.
 */
extern "C" {
#include "kernels/backend.h"
#include "kernels/cuda/kcuda.h"
}

#include "kernels/cuda/cublas_dl.h"
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <new>
#include <unordered_map>
#include <vector>

namespace {

/* Activation rows per matmul warp (each weight element is decoded once per
 * tile): MM_TILE below MM_TILE_BIG_FROM rows, MM_TILE_BIG from there. */
constexpr int MM_TILE = 8;
constexpr int MM_TILE_BIG = 32;
constexpr int MM_TILE_BIG_FROM = 64;
/* Warps (weight rows) per matmul block. */
constexpr int MM_WARPS = 4;
/* Keys per attention chunk: fixed, so the split never depends on the batch. */
constexpr int ATT_CHUNK = 256;
constexpr int ATT_THREADS = 128;
/* Largest head_dim the attention kernels take (ATT_THREADS * 8). */
constexpr int ATT_MAX_HD = ATT_THREADS * 8;
constexpr int NORM_THREADS = 256;

/* ---- element decoders (kernels/cpu/kern_internal.h layouts) ------------------ */

__device__ __forceinline__ float ld_half(const uint8_t *p) {
    return __half2float(__ushort_as_half(*(const unsigned short *)p));
}

__device__ __forceinline__ void scale_min_k4(int j, const uint8_t *q, int *sc, int *mn) {
    if (j < 4) {
        *sc = q[j] & 63;
        *mn = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* Element j of a row of type T starting at row. */
template <int T> __device__ __forceinline__ float welem(const uint8_t *row, int64_t j);

template <> __device__ __forceinline__ float welem<SGL_DTYPE_F32>(const uint8_t *row, int64_t j) {
    return ((const float *)row)[j];
}
template <> __device__ __forceinline__ float welem<SGL_DTYPE_F16>(const uint8_t *row, int64_t j) {
    return ld_half(row + 2 * j);
}
template <> __device__ __forceinline__ float welem<SGL_DTYPE_BF16>(const uint8_t *row, int64_t j) {
    unsigned int b = (unsigned int)(*(const unsigned short *)(row + 2 * j)) << 16;
    return __uint_as_float(b);
}
template <> __device__ __forceinline__ float welem<SGL_DTYPE_Q4_0>(const uint8_t *row, int64_t j) {
    const uint8_t *b = row + (j / 32) * 18;
    int i = (int)(j % 32);
    int q = i < 16 ? (b[2 + i] & 15) : (b[2 + i - 16] >> 4);
    return __fmul_rn((float)(q - 8), ld_half(b));
}
template <> __device__ __forceinline__ float welem<SGL_DTYPE_Q4_1>(const uint8_t *row, int64_t j) {
    const uint8_t *b = row + (j / 32) * 20;
    int i = (int)(j % 32);
    int q = i < 16 ? (b[4 + i] & 15) : (b[4 + i - 16] >> 4);
    return __fadd_rn(__fmul_rn((float)q, ld_half(b)), ld_half(b + 2));
}
template <> __device__ __forceinline__ float welem<SGL_DTYPE_Q8_0>(const uint8_t *row, int64_t j) {
    const uint8_t *b = row + (j / 32) * 34;
    return __fmul_rn((float)(int8_t)b[2 + j % 32], ld_half(b));
}
/* Q4_K: | d | dmin | scales[12] | qs[128] |, x = d*sc*q - dmin*mn */
template <> __device__ __forceinline__ float welem<SGL_DTYPE_Q4_K>(const uint8_t *row, int64_t j) {
    const uint8_t *b = row + (j / 256) * 144;
    int e = (int)(j % 256), c = e / 64, l = e % 64;
    int sc, mn, q;
    if (l < 32) {
        scale_min_k4(2 * c, b + 4, &sc, &mn);
        q = b[16 + 32 * c + l] & 0xF;
    } else {
        scale_min_k4(2 * c + 1, b + 4, &sc, &mn);
        q = b[16 + 32 * c + l - 32] >> 4;
    }
    float d = __fmul_rn(ld_half(b), (float)sc), m = __fmul_rn(ld_half(b + 2), (float)mn);
    return __fsub_rn(__fmul_rn(d, (float)q), m);
}
/* Q5_K: | d | dmin | scales[12] | qh[32] | qs[128] | */
template <> __device__ __forceinline__ float welem<SGL_DTYPE_Q5_K>(const uint8_t *row, int64_t j) {
    const uint8_t *b = row + (j / 256) * 176;
    int e = (int)(j % 256), c = e / 64, l = e % 64;
    const uint8_t *qh = b + 16, *qs = b + 48;
    int sc, mn, q;
    if (l < 32) {
        scale_min_k4(2 * c, b + 4, &sc, &mn);
        q = (qs[32 * c + l] & 0xF) | (((qh[l] >> (2 * c)) & 1) << 4);
    } else {
        scale_min_k4(2 * c + 1, b + 4, &sc, &mn);
        q = (qs[32 * c + l - 32] >> 4) | (((qh[l - 32] >> (2 * c + 1)) & 1) << 4);
    }
    float d = __fmul_rn(ld_half(b), (float)sc), m = __fmul_rn(ld_half(b + 2), (float)mn);
    return __fsub_rn(__fmul_rn(d, (float)q), m);
}
/* Q6_K: | ql[128] | qh[64] | scales[16]:int8 | d | , x = d*sc*(q - 32) */
template <> __device__ __forceinline__ float welem<SGL_DTYPE_Q6_K>(const uint8_t *row, int64_t j) {
    const uint8_t *b = row + (j / 256) * 210;
    int e = (int)(j % 256), h = e / 128, r = e % 128, qq = r / 32, l = r % 32;
    const uint8_t *ql = b + 64 * h, *qh = b + 128 + 32 * h;
    int lo = (qq & 1) ? ql[l + 32] : ql[l];
    lo = (qq & 2) ? (lo >> 4) : (lo & 0xF);
    int q = (lo | (((qh[l] >> (2 * qq)) & 3) << 4)) - 32;
    float sc = (float)(int8_t)b[192 + e / 16];
    return __fmul_rn(__fmul_rn(ld_half(b + 208), sc), (float)q);
}

bool type_ok(sgl_dtype t) {
    switch (t) {
    case SGL_DTYPE_F32: case SGL_DTYPE_F16: case SGL_DTYPE_BF16: case SGL_DTYPE_Q4_0:
    case SGL_DTYPE_Q4_1: case SGL_DTYPE_Q8_0: case SGL_DTYPE_Q4_K: case SGL_DTYPE_Q5_K:
    case SGL_DTYPE_Q6_K:
        return true;
    default:
        return false;
    }
}

/* Calls F<T>::run(args...) for the runtime type t (one of type_ok's). */
#define KB_DISPATCH(t, F, ...)                                                                     \
    do {                                                                                           \
        switch (t) {                                                                               \
        case SGL_DTYPE_F32: F<SGL_DTYPE_F32>(__VA_ARGS__); break;                                  \
        case SGL_DTYPE_F16: F<SGL_DTYPE_F16>(__VA_ARGS__); break;                                  \
        case SGL_DTYPE_BF16: F<SGL_DTYPE_BF16>(__VA_ARGS__); break;                                \
        case SGL_DTYPE_Q4_0: F<SGL_DTYPE_Q4_0>(__VA_ARGS__); break;                                \
        case SGL_DTYPE_Q4_1: F<SGL_DTYPE_Q4_1>(__VA_ARGS__); break;                                \
        case SGL_DTYPE_Q8_0: F<SGL_DTYPE_Q8_0>(__VA_ARGS__); break;                                \
        case SGL_DTYPE_Q4_K: F<SGL_DTYPE_Q4_K>(__VA_ARGS__); break;                                \
        case SGL_DTYPE_Q5_K: F<SGL_DTYPE_Q5_K>(__VA_ARGS__); break;                                \
        case SGL_DTYPE_Q6_K: F<SGL_DTYPE_Q6_K>(__VA_ARGS__); break;                                \
        default: break;                                                                            \
        }                                                                                          \
    } while (0)

/* ---- kernels ------------------------------------------------------------------ */

/* Y[b][r] = sum_j W[r][j] X[b][j]; see the determinism note at the top.
 * TILE activation rows per warp share each decoded weight; a row's sum is
 * the same for any TILE (its own accumulator, the same order). */
template <int T, int TILE>
__global__ void k_matmul(const uint8_t *W, int64_t rb, int rows, int k, const float *X, int nb,
                         float *Y) {
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int r = blockIdx.x * MM_WARPS + warp;
    if (r >= rows) return;
    int b0 = blockIdx.y * TILE;
    int nt = min(TILE, nb - b0);
    const uint8_t *row = W + (int64_t)r * rb;
    float acc[TILE];
#pragma unroll
    for (int b = 0; b < TILE; b++) acc[b] = 0.0f;
    for (int j = lane; j < k; j += 32) {
        float w = welem<T>(row, j);
#pragma unroll
        for (int b = 0; b < TILE; b++)
            if (b < nt) acc[b] = __fmaf_rn(w, X[(int64_t)(b0 + b) * k + j], acc[b]);
    }
#pragma unroll
    for (int b = 0; b < TILE; b++) {
        float v = acc[b];
        for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
        if (lane == 0 && b < nt) Y[(int64_t)(b0 + b) * rows + r] = v;
    }
}

/* dst[i] = (f16) element i of W, for the cuBLAS path. */
template <int T>
__global__ void k_to_f16(const uint8_t *W, int64_t rb, int64_t k, int64_t n, __half *dst) {
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i < n) dst[i] = __float2half_rn(welem<T>(W + (i / k) * rb, i % k));
}

__global__ void k_f32_to_f16(const float *x, __half *y, int64_t n) {
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i < n) y[i] = __float2half_rn(x[i]);
}

/* x[r][j] = element j of embedding row tok[r]. */
template <int T>
__global__ void k_embed(const uint8_t *E, int64_t rb, const int32_t *tok, int dim, float *x) {
    int r = blockIdx.x;
    const uint8_t *row = E + (int64_t)tok[r] * rb;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) x[(int64_t)r * dim + j] = welem<T>(row, j);
}

/* One block per row: ss by thread-strided sums then a fixed tree. */
__global__ void k_rmsnorm(float *y, const float *x, const float *w, int dim, float eps) {
    __shared__ float part[NORM_THREADS];
    const float *xr = x + (int64_t)blockIdx.x * dim;
    float *yr = y + (int64_t)blockIdx.x * dim;
    float ss = 0.0f;
    for (int j = threadIdx.x; j < dim; j += NORM_THREADS) ss = __fmaf_rn(xr[j], xr[j], ss);
    part[threadIdx.x] = ss;
    __syncthreads();
    for (int s = NORM_THREADS / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    float sc = 1.0f / sqrtf(part[0] / (float)dim + eps);
    for (int j = threadIdx.x; j < dim; j += NORM_THREADS)
        yr[j] = __fmul_rn(__fmul_rn(xr[j], sc), w[j]);
}

/* y[i] += x[i] (bias: x[i % dim]). */
__global__ void k_add(float *y, const float *x, int64_t n, int64_t dim, int bias) {
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i < n) y[i] = __fadd_rn(y[i], bias ? x[i % dim] : x[i]);
}

/* g = silu(g) * u, as ref_silu_mul: g / (1 + e^-g) * u. */
__global__ void k_silu_mul(float *g, const float *u, int64_t n) {
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i < n) g[i] = __fmul_rn(__fdiv_rn(g[i], __fadd_rn(1.0f, expf(-g[i]))), u[i]);
}

/* One thread per (row, pair i < rot/2), all heads of the row: the angle in
 * double from pos * freq_scale * theta^(-2i/rot), as kern_rope. */
__global__ void k_rope(float *x, const int32_t *pos, int64_t n_rows, int n_heads, int head_dim,
                       int rot, float theta, float freq_scale, int neox) {
    int half = rot / 2;
    int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (t >= n_rows * half) return;
    int64_t r = t / half;
    int i = (int)(t % half);
    double inv = pow((double)theta, -2.0 * i / (double)rot);
    double a = (double)pos[r] * (double)freq_scale * inv;
    float c = (float)cos(a), s = (float)sin(a);
    int ia = neox ? i : 2 * i, ib = neox ? i + half : 2 * i + 1;
    float *xr = x + r * (int64_t)n_heads * head_dim;
    for (int h = 0; h < n_heads; h++) {
        float *v = xr + (int64_t)h * head_dim;
        float x0 = v[ia], x1 = v[ib];
        v[ia] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
        v[ib] = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
    }
}

/* K/V rows of every batch row to f16 at its slot. */
__global__ void k_kv_store(__half *K, __half *V, const float *k, const float *v,
                           const int32_t *wslot, int64_t n_rows, int kv_dim, int64_t layer_off) {
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i >= n_rows * kv_dim) return;
    int64_t r = i / kv_dim, d = i % kv_dim;
    int64_t off = layer_off + (int64_t)wslot[r] * kv_dim + d;
    K[off] = __float2half_rn(k[i]);
    V[off] = __float2half_rn(v[i]);
}

/* x[r] += y[r]; then, when w is set, y[r] = rmsnorm(x[r]) * w, as
 * k_add then k_rmsnorm (one block per row, the same fixed tree). */
__global__ void k_add_rmsnorm(float *x, float *y, const float *w, int dim, float eps) {
    __shared__ float part[NORM_THREADS];
    float *xr = x + (int64_t)blockIdx.x * dim, *yr = y + (int64_t)blockIdx.x * dim;
    float ss = 0.0f;
    for (int j = threadIdx.x; j < dim; j += NORM_THREADS) {
        float v = __fadd_rn(xr[j], yr[j]);
        xr[j] = v;
        ss = __fmaf_rn(v, v, ss);
    }
    if (!w) return; /* the same for the whole block */
    part[threadIdx.x] = ss;
    __syncthreads();
    for (int s = NORM_THREADS / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    float sc = 1.0f / sqrtf(part[0] / (float)dim + eps);
    for (int j = threadIdx.x; j < dim; j += NORM_THREADS) /* this thread's own x[j] */
        yr[j] = __fmul_rn(__fmul_rn(xr[j], sc), w[j]);
}

/* One block per row: biases (each may be NULL), rope of q (nh heads) and k
 * (nkv heads) at the row's position, then K/V to f16 at the row's slot; the
 * same arithmetic as k_add, k_rope and k_kv_store. */
__global__ void k_qkv_post(float *q, float *k, float *v, const float *bq, const float *bk,
                           const float *bv, const int32_t *pos, const int32_t *wslot, int nh,
                           int nkv, int hd, int rot, float theta, float freq_scale, int neox,
                           __half *K, __half *V, int64_t layer_off) {
    int64_t r = blockIdx.x;
    int qd = nh * hd, kd = nkv * hd;
    float *qr = q + r * qd, *kr = k + r * kd, *vr = v + r * kd;
    int64_t off = layer_off + (int64_t)wslot[r] * kd;
    if (bq)
        for (int i = threadIdx.x; i < qd; i += blockDim.x) qr[i] = __fadd_rn(qr[i], bq[i]);
    for (int i = threadIdx.x; i < kd; i += blockDim.x) {
        if (bk) kr[i] = __fadd_rn(kr[i], bk[i]);
        float vv = bv ? __fadd_rn(vr[i], bv[i]) : vr[i];
        vr[i] = vv;
        V[off + i] = __float2half_rn(vv);
    }
    __syncthreads();
    int half = rot / 2;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        double inv = pow((double)theta, -2.0 * i / (double)rot);
        double a = (double)pos[r] * (double)freq_scale * inv;
        float c = (float)cos(a), s = (float)sin(a);
        int ia = neox ? i : 2 * i, ib = neox ? i + half : 2 * i + 1;
        for (int h = 0; h < nh + nkv; h++) {
            float *vec = h < nh ? qr + (int64_t)h * hd : kr + (int64_t)(h - nh) * hd;
            float x0 = vec[ia], x1 = vec[ib];
            vec[ia] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
            vec[ib] = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < kd; i += blockDim.x) K[off + i] = __float2half_rn(kr[i]);
}

/* Up to PROBE_BATCH NaN/Inf checks in one launch (blockIdx.y = check). */
constexpr int PROBE_BATCH = 8;
struct probe_set {
    const float *x[PROBE_BATCH];
    int64_t n[PROBE_BATCH];
    int probe[PROBE_BATCH];
};
__global__ void k_check_multi(probe_set ps, int *flag) {
    int e = blockIdx.y;
    const float *x = ps.x[e];
    int64_t n = ps.n[e];
    int bad = 0;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        bad |= (__float_as_uint(x[i]) & 0x7f800000u) == 0x7f800000u;
    if (__syncthreads_or(bad) && threadIdx.x == 0) atomicMin(flag, ps.probe[e]);
}

/* Fixed-order block reductions over ATT_THREADS values in shared memory. */
__device__ float block_max(float *red, float v) {
    red[threadIdx.x] = v;
    __syncthreads();
    for (int s = ATT_THREADS / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) red[threadIdx.x] = fmaxf(red[threadIdx.x], red[threadIdx.x + s]);
        __syncthreads();
    }
    float r = red[0];
    __syncthreads();
    return r;
}
__device__ float block_sum(float *red, float v) {
    red[threadIdx.x] = v;
    __syncthreads();
    for (int s = ATT_THREADS / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
        __syncthreads();
    }
    float r = red[0];
    __syncthreads();
    return r;
}

/* One block per (row r, head h, chunk c): keys c*ATT_CHUNK .. of the row's
 * sequence (up to its position). Writes the chunk's max m, exp-sum l and
 * unnormalised weighted V sum o to part[((r * n_heads + h) * n_chunks + c)]
 * (hd + 2 floats: o..., m, l). */
__global__ void k_att_chunk(const __half *K, const __half *V, int64_t layer_off, int kv_dim,
                            const float *q, int n_heads, int n_kv_heads, int hd,
                            const int32_t *pos, const int32_t *row_seq, const int32_t *seq_slot0,
                            const int32_t *slots, int n_chunks, float *part) {
    extern __shared__ float sh[]; /* qs[hd], p[ATT_CHUNK], red[ATT_THREADS] */
    float *qs = sh, *p = sh + hd, *red = p + ATT_CHUNK;
    int c = blockIdx.z, h = blockIdx.y;
    int64_t r = blockIdx.x;
    int nk = pos[r] + 1;
    int j0 = c * ATT_CHUNK;
    float *out = part + ((r * n_heads + h) * (int64_t)n_chunks + c) * (hd + 2);
    if (j0 >= nk) return;
    int nj = min(ATT_CHUNK, nk - j0);
    int kvh = h / (n_heads / n_kv_heads);
    const int32_t *sl = slots + seq_slot0[row_seq[r]] + j0;
    const float *qr = q + r * (int64_t)n_heads * hd + (int64_t)h * hd;
    float scale = 1.0f / sqrtf((float)hd);
    for (int d = threadIdx.x; d < hd; d += ATT_THREADS) qs[d] = __fmul_rn(qr[d], scale);
    __syncthreads();
    /* scores: one key per thread, d in order */
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < nj; j += ATT_THREADS) {
        const __half *kp = K + layer_off + (int64_t)sl[j] * kv_dim + (int64_t)kvh * hd;
        float s = 0.0f;
        for (int d = 0; d < hd; d++) s = __fmaf_rn(qs[d], __half2float(kp[d]), s);
        p[j] = s;
        mx = fmaxf(mx, s);
    }
    mx = block_max(red, mx);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < nj; j += ATT_THREADS) {
        p[j] = expf(p[j] - mx);
        sum += p[j];
    }
    sum = block_sum(red, sum); /* also orders p[] writes before the reads below */
    /* weighted V: one output dim per thread, keys in order */
    for (int d = threadIdx.x; d < hd; d += ATT_THREADS) {
        float o = 0.0f;
        for (int j = 0; j < nj; j++) {
            const __half *vp = V + layer_off + (int64_t)sl[j] * kv_dim + (int64_t)kvh * hd;
            o = __fmaf_rn(p[j], __half2float(vp[d]), o);
        }
        out[d] = o;
    }
    if (threadIdx.x == 0) {
        out[hd] = mx;
        out[hd + 1] = sum;
    }
}

/* One block per (row r, head h): combines the row's chunks in key order. */
__global__ void k_att_combine(const float *part, const int32_t *pos, int n_heads, int hd,
                              int n_chunks, float *att) {
    int h = blockIdx.y;
    int64_t r = blockIdx.x;
    int nc = (pos[r] + 1 + ATT_CHUNK - 1) / ATT_CHUNK;
    const float *base = part + (r * n_heads + h) * (int64_t)n_chunks * (hd + 2);
    float M = -INFINITY;
    for (int c = 0; c < nc; c++) M = fmaxf(M, base[c * (int64_t)(hd + 2) + hd]);
    float L = 0.0f;
    for (int c = 0; c < nc; c++) {
        const float *pc = base + c * (int64_t)(hd + 2);
        L = __fmaf_rn(pc[hd + 1], expf(pc[hd] - M), L);
    }
    float inv = 1.0f / L;
    float *o = att + r * (int64_t)n_heads * hd + (int64_t)h * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float acc = 0.0f;
        for (int c = 0; c < nc; c++) {
            const float *pc = base + c * (int64_t)(hd + 2);
            acc = __fmaf_rn(pc[d], expf(pc[hd] - M), acc);
        }
        o[d] = __fmul_rn(acc, inv);
    }
}

__global__ void k_gather_rows(float *dst, const float *src, const int32_t *rows, int64_t n,
                              int64_t dim) {
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i < n * dim) dst[i] = src[(int64_t)rows[i / dim] * dim + i % dim];
}

unsigned blocks_for(int64_t n, int threads) { return (unsigned)((n + threads - 1) / threads); }

/* ---- backend state ---------------------------------------------------------------- */

struct dbuf { /* a growable device buffer */
    void *p = nullptr;
    size_t cap = 0;
};

/* The device KV store owned by a kv_pool (kernels/backend.h kv_new). */
struct cuda_kv {
    kb_kv kv; /* first: runtime/model.c reads it as a kb_kv */
    size_t bytes;
};

/* Per-op timing (kb_cuda_profile): each op synchronizes and adds its wall
 * time; for benchmarks only (it serializes host and device). */
enum prof_op { P_MATMUL, P_GEMM, P_EMBED, P_NORM, P_ADD, P_ROPE, P_SILU, P_KV, P_ATT, P_GATHER,
               P_PROBE, P_COPY, P_N };
const char *const prof_names[P_N] = {"matmul", "cublas gemm", "embed", "(add+)rmsnorm",
                                     "add/bias", "bias+rope+kv", "silu*mul", "kv store",
                                     "attention", "gather rows", "nan probes", "copies"};

struct kb_cuda {
    kb_backend base;
    bool prof = false;
    double prof_s[P_N] = {0};
    long prof_n[P_N] = {0};
    double prof_t0 = 0;
    cudaStream_t stream = nullptr;
    cublasHandle_t cublas = nullptr;
    int gemm_rows = 0; /* cuBLAS from this many rows up; 0 = never (deterministic) */
    std::unordered_map<void *, size_t> allocs;
    std::atomic<uint64_t> bytes{0}; /* read by model_device_memory from other threads */
    probe_set pending{};  /* probes not launched yet: they go out together before the next op */
    int n_pending = 0;
    int64_t pending_max = 0;
    cudaError_t first_error = cudaSuccess;
    const kb_batch *b = nullptr;
    int n_chunks = 0;
    dbuf tok, pos, wslot, row_seq, seq_slot0, slots, logit_rows, part, w16, x16, flag;
    char name[256];
};

std::atomic<uint64_t> g_kv_bytes{0}; /* device bytes of live KV stores (all backends) */

kb_cuda *cu(kb_backend *be) { return reinterpret_cast<kb_cuda *>(be); }

void note(kb_cuda *c, cudaError_t e);
void note(kb_cuda *c, cudaError_t e) {
    if (e != cudaSuccess && c->first_error == cudaSuccess) c->first_error = e;
}
void note_launch(kb_cuda *c) { note(c, cudaGetLastError()); }

double now_s() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
void note_launch(kb_cuda *c);
/* Launches the pending NaN/Inf checks (one kernel for all of them). Every
 * op calls it first (through prof_begin), so a check always runs before
 * anything can overwrite the buffer it reads. */
void flush_probes(kb_cuda *c) {
    if (!c->n_pending) return;
    unsigned bx = blocks_for(c->pending_max, 256);
    if (bx > 256) bx = 256;
    k_check_multi<<<dim3(bx, (unsigned)c->n_pending), 256, 0, c->stream>>>(c->pending,
                                                                        (int *)c->flag.p);
    note_launch(c);
    c->n_pending = 0;
    c->pending_max = 0;
}
void prof_begin(kb_cuda *c) {
    if (!c->prof) {
        flush_probes(c);
        return;
    }
    if (c->n_pending) {
        cudaStreamSynchronize(c->stream);
        double t = now_s();
        flush_probes(c);
        cudaStreamSynchronize(c->stream);
        c->prof_s[P_PROBE] += now_s() - t;
        c->prof_n[P_PROBE]++;
    }
    cudaStreamSynchronize(c->stream);
    c->prof_t0 = now_s();
}
void prof_end(kb_cuda *c, prof_op op) {
    if (!c->prof) return;
    cudaStreamSynchronize(c->stream);
    c->prof_s[op] += now_s() - c->prof_t0;
    c->prof_n[op]++;
}

int fail(sgl_error *err, const char *what, cudaError_t e) {
    return sgl_error_set(err, "cuda: %s: %s", what, cudaGetErrorString(e));
}

/* Grows b to at least bytes (contents dropped). Returns 0 or -1. */
int reserve(kb_cuda *c, dbuf *b, size_t bytes) {
    if (bytes <= b->cap) return 0;
    if (b->p) {
        c->bytes -= b->cap;
        cudaFree(b->p);
    }
    b->p = nullptr;
    b->cap = 0;
    if (cudaMalloc(&b->p, bytes) != cudaSuccess) {
        cudaGetLastError();
        b->p = nullptr;
        return -1;
    }
    b->cap = bytes;
    c->bytes += bytes;
    return 0;
}

int upload_ints(kb_cuda *c, dbuf *b, const int32_t *src, int64_t n, sgl_error *err) {
    size_t bytes = sizeof(int32_t) * (size_t)(n > 0 ? n : 1);
    if (reserve(c, b, bytes)) return sgl_error_set(err, "cuda: out of device memory");
    if (n <= 0) return 0;
    cudaError_t e = cudaMemcpyAsync(b->p, src, sizeof(int32_t) * (size_t)n, cudaMemcpyHostToDevice,
                                    c->stream);
    return e == cudaSuccess ? 0 : fail(err, "copy in", e);
}

/* ---- ops ---------------------------------------------------------------------------- */

void *op_alloc(kb_backend *be, size_t bytes) {
    kb_cuda *c = cu(be);
    void *p = nullptr;
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
        cudaGetLastError();
        return nullptr;
    }
    c->allocs[p] = bytes;
    c->bytes += bytes;
    return p;
}

void op_free_mem(kb_backend *be, void *p) {
    if (!p) return;
    kb_cuda *c = cu(be);
    auto it = c->allocs.find(p);
    if (it != c->allocs.end()) {
        c->bytes -= it->second;
        c->allocs.erase(it);
    }
    cudaFree(p);
}

int op_upload(kb_backend *be, void *dst, const void *src, size_t bytes, sgl_error *err) {
    if (!bytes) return 0;
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cu(be)->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(cu(be)->stream);
    return e == cudaSuccess ? 0 : fail(err, "copy in", e);
}

int op_download(kb_backend *be, void *dst, const void *src, size_t bytes, sgl_error *err) {
    if (!bytes) return 0;
    prof_begin(cu(be));
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cu(be)->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(cu(be)->stream);
    prof_end(c, P_COPY);
    return e == cudaSuccess ? 0 : fail(err, "copy out", e);
}

int op_type_supported(kb_backend *be, sgl_dtype t) {
    (void)be;
    return type_ok(t) ? 1 : 0;
}

int op_mat_upload(kb_backend *be, const kb_mat *host, kb_mat *out, sgl_error *err) {
    if (!type_ok(host->type))
        return sgl_error_set(err, "cuda: weight type %s is not supported", sgl_dtype_name(host->type));
    size_t bytes = (size_t)(sgl_dtype_row_bytes(host->type, (uint64_t)host->cols) * (uint64_t)host->rows);
    void *p = op_alloc(be, bytes);
    if (!p) return sgl_error_set(err, "cuda: out of device memory for the weights (%zu bytes)", bytes);
    if (op_upload(be, p, host->data, bytes, err)) {
        op_free_mem(be, p);
        return -1;
    }
    *out = *host;
    out->data = p;
    return 0;
}

void op_mat_free(kb_backend *be, kb_mat *m) {
    op_free_mem(be, const_cast<void *>(m->data));
    memset(m, 0, sizeof *m);
}

void kv_free_fn(void *p) {
    cuda_kv *k = static_cast<cuda_kv *>(p);
    if (!k) return;
    cudaFree(k->kv.k);
    cudaFree(k->kv.v);
    g_kv_bytes -= k->bytes;
    delete k;
}

kb_kv *op_kv_new(kb_backend *be, int32_t n_slots, int32_t n_layers, int32_t kv_dim,
                 sgl_error *err) {
    (void)be;
    cuda_kv *k = new (std::nothrow) cuda_kv();
    if (!k) {
        sgl_error_set(err, "cuda: out of memory");
        return nullptr;
    }
    size_t half_bytes = (size_t)n_layers * (size_t)n_slots * (size_t)kv_dim * 2;
    k->kv = kb_kv{n_slots, n_layers, kv_dim, nullptr, nullptr};
    cudaError_t e = cudaMalloc((void **)&k->kv.k, half_bytes);
    if (e == cudaSuccess) e = cudaMalloc((void **)&k->kv.v, half_bytes);
    if (e == cudaSuccess) e = cudaMemset(k->kv.k, 0, half_bytes);
    if (e == cudaSuccess) e = cudaMemset(k->kv.v, 0, half_bytes);
    /* cudaMemset runs on the legacy stream, which the backend's non-blocking
     * stream does not wait for: finish it before any kernel can write K/V */
    if (e == cudaSuccess) e = cudaDeviceSynchronize();
    if (e != cudaSuccess) {
        cudaGetLastError();
        fail(err, "KV pool on the device", e);
        cudaFree(k->kv.k);
        cudaFree(k->kv.v);
        delete k;
        return nullptr;
    }
    k->bytes = 2 * half_bytes;
    g_kv_bytes += k->bytes;
    return &k->kv;
}

int op_begin(kb_backend *be, const kb_batch *b, sgl_error *err) {
    kb_cuda *c = cu(be);
    c->b = b;
    c->first_error = cudaSuccess;
    c->n_pending = 0;
    c->pending_max = 0;
    std::vector<int32_t> slot0((size_t)(b->n_seqs > 0 ? b->n_seqs : 1));
    for (int32_t i = 0; i < b->n_seqs; i++) slot0[(size_t)i] = b->seqs[i].slot0;
    int flag = INT_MAX;
    if (upload_ints(c, &c->tok, b->tok, b->n_rows, err) ||
        upload_ints(c, &c->pos, b->pos, b->n_rows, err) ||
        upload_ints(c, &c->wslot, b->wslot, b->n_rows, err) ||
        upload_ints(c, &c->row_seq, b->row_seq, b->n_rows, err) ||
        upload_ints(c, &c->seq_slot0, slot0.data(), b->n_seqs, err) ||
        upload_ints(c, &c->slots, b->slots, b->n_slots, err) ||
        upload_ints(c, &c->logit_rows, b->logit_rows, b->n_logits, err) ||
        upload_ints(c, &c->flag, &flag, 1, err))
        return -1;
    c->n_chunks = (b->max_ctx + ATT_CHUNK - 1) / ATT_CHUNK;
    /* the uploads read host arrays that live until finish; wait so a
     * caller may reuse them right after (they are small) */
    cudaError_t e = cudaStreamSynchronize(c->stream);
    return e == cudaSuccess ? 0 : fail(err, "copy in", e);
}

int op_finish(kb_backend *be, int *first_bad, sgl_error *err) {
    kb_cuda *c = cu(be);
    flush_probes(c);
    int flag = INT_MAX;
    cudaError_t e = cudaMemcpyAsync(&flag, c->flag.p, sizeof flag, cudaMemcpyDeviceToHost, c->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
    note(c, e);
    c->b = nullptr;
    *first_bad = flag == INT_MAX ? -1 : flag;
    if (c->first_error != cudaSuccess) {
        cudaError_t fe = c->first_error;
        c->first_error = cudaSuccess;
        return fail(err, "forward", fe);
    }
    return 0;
}

/* The cuBLAS path: W decoded to f16, X to f16, Y = X W^T in f32. Returns
 * false when it cannot run (the warp kernel runs then). */
template <int T> void launch_to_f16(const kb_mat *w, __half *dst, cudaStream_t s) {
    int64_t n = w->rows * w->cols;
    k_to_f16<T><<<blocks_for(n, 256), 256, 0, s>>>((const uint8_t *)w->data,
        (int64_t)sgl_dtype_row_bytes(w->type, (uint64_t)w->cols), w->cols, n, dst);
}

bool gemm_cublas(kb_cuda *c, const kb_mat *w, const float *x, int64_t nb, float *y) {
    const kcuda_cublas *blas = kcuda_cublas_get();
    if (!blas) return false;
    if (!c->cublas) {
        if (blas->create(&c->cublas) != CUBLAS_STATUS_SUCCESS) return false;
        blas->set_stream(c->cublas, c->stream);
    }
    if (reserve(c, &c->w16, sizeof(__half) * (size_t)(w->rows * w->cols)) ||
        reserve(c, &c->x16, sizeof(__half) * (size_t)(nb * w->cols)))
        return false;
    __half *w16 = (__half *)c->w16.p, *x16 = (__half *)c->x16.p;
    KB_DISPATCH(w->type, launch_to_f16, w, w16, c->stream);
    k_f32_to_f16<<<blocks_for(nb * w->cols, 256), 256, 0, c->stream>>>(x, x16, nb * w->cols);
    note_launch(c);
    const float one = 1.0f, zero = 0.0f;
    /* row-major W [rows][k], X [nb][k], Y [nb][rows]; column-major: Y = W^T X */
    return blas->gemm_ex(c->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)w->rows, (int)nb, (int)w->cols,
                        &one, w16, CUDA_R_16F, (int)w->cols, x16, CUDA_R_16F, (int)w->cols, &zero,
                        y, CUDA_R_32F, (int)w->rows, CUBLAS_COMPUTE_32F,
                        CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS;
}

template <int T, int TILE>
void launch_matmul_tile(const kb_mat *w, const float *x, int64_t nb, float *y, cudaStream_t s) {
    dim3 grid((unsigned)((w->rows + MM_WARPS - 1) / MM_WARPS), (unsigned)((nb + TILE - 1) / TILE));
    k_matmul<T, TILE><<<grid, MM_WARPS * 32, 0, s>>>((const uint8_t *)w->data,
        (int64_t)sgl_dtype_row_bytes(w->type, (uint64_t)w->cols), (int)w->rows, (int)w->cols, x,
        (int)nb, y);
}
/* Small batches: tiles of MM_TILE rows (more warps in flight); large ones:
 * MM_TILE_BIG (each weight decoded once per 32 rows). Same results. */
template <int T>
void launch_matmul(const kb_mat *w, const float *x, int64_t nb, float *y, cudaStream_t s) {
    if (nb >= MM_TILE_BIG_FROM) launch_matmul_tile<T, MM_TILE_BIG>(w, x, nb, y, s);
    else launch_matmul_tile<T, MM_TILE>(w, x, nb, y, s);
}

void op_matmul(kb_backend *be, const kb_mat *w, const float *x, int64_t nb, float *y) {
    kb_cuda *c = cu(be);
    if (nb <= 0) return;
    prof_begin(c);
    if (c->gemm_rows > 0 && nb >= c->gemm_rows && gemm_cublas(c, w, x, nb, y)) {
        prof_end(c, P_GEMM);
        return;
    }
    KB_DISPATCH(w->type, launch_matmul, w, x, nb, y, c->stream);
    note_launch(c);
    prof_end(c, P_MATMUL);
}

void op_matmul_multi(kb_backend *be, const kb_mat *const *w, float *const *y, int n,
                     const float *x, int64_t nb) {
    for (int i = 0; i < n; i++) op_matmul(be, w[i], x, nb, y[i]);
}

template <int T> void launch_embed(const kb_mat *e, const int32_t *tok, int64_t n, float *x, cudaStream_t s) {
    k_embed<T><<<(unsigned)n, 256, 0, s>>>((const uint8_t *)e->data,
        (int64_t)sgl_dtype_row_bytes(e->type, (uint64_t)e->cols), tok, (int)e->cols, x);
}

void op_embed(kb_backend *be, const kb_mat *emb, float *x) {
    kb_cuda *c = cu(be);
    if (c->b->n_rows <= 0) return;
    prof_begin(c);
    KB_DISPATCH(emb->type, launch_embed, emb, (const int32_t *)c->tok.p, c->b->n_rows, x, c->stream);
    note_launch(c);
    prof_end(c, P_EMBED);
}

void op_rmsnorm(kb_backend *be, float *y, const float *x, const float *w, int64_t n, int64_t dim,
                float eps) {
    kb_cuda *c = cu(be);
    if (n <= 0) return;
    prof_begin(c);
    k_rmsnorm<<<(unsigned)n, NORM_THREADS, 0, c->stream>>>(y, x, w, (int)dim, eps);
    note_launch(c);
    prof_end(c, P_NORM);
}

/* y[n, dim] += x: x is [n, dim], or one [dim] row added to every row when bias. */
static void launch_add(kb_backend *be, float *y, const float *x, int64_t n, int64_t dim, int bias) {
    kb_cuda *c = cu(be);
    if (n <= 0) return;
    prof_begin(c);
    k_add<<<blocks_for(n * dim, 256), 256, 0, c->stream>>>(y, x, n * dim, dim, bias);
    note_launch(c);
    prof_end(c, P_ADD);
}

void op_add(kb_backend *be, float *y, const float *x, int64_t n, int64_t dim) {
    launch_add(be, y, x, n, dim, 0);
}

void op_bias_add(kb_backend *be, float *y, const float *bias, int64_t n, int64_t dim) {
    launch_add(be, y, bias, n, dim, 1);
}

void op_rope(kb_backend *be, float *x, const kb_rope *rp) {
    kb_cuda *c = cu(be);
    int64_t n = c->b->n_rows * (rp->rot_dim / 2);
    if (n <= 0) return;
    prof_begin(c);
    k_rope<<<blocks_for(n, 128), 128, 0, c->stream>>>(x, (const int32_t *)c->pos.p, c->b->n_rows,
        rp->n_heads, rp->head_dim, rp->rot_dim, rp->theta, rp->freq_scale, rp->neox ? 1 : 0);
    note_launch(c);
    prof_end(c, P_ROPE);
}

void op_silu_mul(kb_backend *be, float *g, const float *u, int64_t n, int64_t dim) {
    kb_cuda *c = cu(be);
    if (n <= 0) return;
    prof_begin(c);
    k_silu_mul<<<blocks_for(n * dim, 256), 256, 0, c->stream>>>(g, u, n * dim);
    note_launch(c);
    prof_end(c, P_SILU);
}

void op_kv_store(kb_backend *be, const kb_kv *kv, int layer, const float *k, const float *v) {
    kb_cuda *c = cu(be);
    int64_t n = c->b->n_rows * kv->kv_dim;
    if (n <= 0) return;
    prof_begin(c);
    k_kv_store<<<blocks_for(n, 256), 256, 0, c->stream>>>((__half *)kv->k, (__half *)kv->v, k, v,
        (const int32_t *)c->wslot.p, c->b->n_rows, kv->kv_dim,
        (int64_t)layer * kv->n_slots * kv->kv_dim);
    note_launch(c);
    prof_end(c, P_KV);
}

void op_attention(kb_backend *be, const kb_kv *kv, int layer, const kb_att_shape *sh,
                  const float *q, float *out) {
    kb_cuda *c = cu(be);
    int64_t n = c->b->n_rows;
    if (n <= 0) return;
    int hd = sh->head_dim;
    /* shapes the kernels cannot take: grid y/z limits (16M-token contexts) */
    if (hd > ATT_MAX_HD || c->n_chunks > 65535 || sh->n_heads > 65535) {
        note(c, cudaErrorInvalidValue);
        return;
    }
    size_t part_bytes = sizeof(float) * (size_t)n * (size_t)sh->n_heads * (size_t)c->n_chunks * (size_t)(hd + 2);
    if (reserve(c, &c->part, part_bytes)) {
        note(c, cudaErrorMemoryAllocation);
        return;
    }
    prof_begin(c);
    int64_t layer_off = (int64_t)layer * kv->n_slots * kv->kv_dim;
    size_t shm = sizeof(float) * (size_t)(hd + ATT_CHUNK + ATT_THREADS);
    dim3 g1((unsigned)n, (unsigned)sh->n_heads, (unsigned)c->n_chunks);
    k_att_chunk<<<g1, ATT_THREADS, shm, c->stream>>>((const __half *)kv->k, (const __half *)kv->v,
        layer_off, kv->kv_dim, q, sh->n_heads, sh->n_kv_heads, hd, (const int32_t *)c->pos.p,
        (const int32_t *)c->row_seq.p, (const int32_t *)c->seq_slot0.p,
        (const int32_t *)c->slots.p, c->n_chunks, (float *)c->part.p);
    note_launch(c);
    dim3 g2((unsigned)n, (unsigned)sh->n_heads);
    k_att_combine<<<g2, ATT_THREADS, 0, c->stream>>>((const float *)c->part.p,
        (const int32_t *)c->pos.p, sh->n_heads, hd, c->n_chunks, out);
    note_launch(c);
    prof_end(c, P_ATT);
}

void op_add_rmsnorm(kb_backend *be, float *x, float *y, const float *w, int64_t n, int64_t dim,
                    float eps) {
    kb_cuda *c = cu(be);
    if (n <= 0) return;
    prof_begin(c);
    k_add_rmsnorm<<<(unsigned)n, NORM_THREADS, 0, c->stream>>>(x, y, w, (int)dim, eps);
    note_launch(c);
    prof_end(c, P_NORM);
}

void op_qkv_post(kb_backend *be, float *q, float *k, float *v, const float *bq, const float *bk,
                 const float *bv, const kb_rope *rq, const kb_rope *rk, const kb_kv *kv,
                 int layer) {
    kb_cuda *c = cu(be);
    int64_t n = c->b->n_rows;
    if (n <= 0) return;
    prof_begin(c);
    k_qkv_post<<<(unsigned)n, 128, 0, c->stream>>>(q, k, v, bq, bk, bv, (const int32_t *)c->pos.p,
        (const int32_t *)c->wslot.p, rq->n_heads, rk->n_heads, rq->head_dim, rq->rot_dim,
        rq->theta, rq->freq_scale, rq->neox ? 1 : 0, (__half *)kv->k, (__half *)kv->v,
        (int64_t)layer * kv->n_slots * kv->kv_dim);
    note_launch(c);
    prof_end(c, P_ROPE);
}

void op_gather_rows(kb_backend *be, float *dst, const float *src, int64_t dim) {
    kb_cuda *c = cu(be);
    int64_t n = c->b->n_logits;
    if (n <= 0) return;
    prof_begin(c);
    k_gather_rows<<<blocks_for(n * dim, 256), 256, 0, c->stream>>>(dst, src,
        (const int32_t *)c->logit_rows.p, n, dim);
    note_launch(c);
    prof_end(c, P_GATHER);
}

int op_check_finite(kb_backend *be, const float *x, int64_t n, int probe) {
    kb_cuda *c = cu(be);
    if (n <= 0) return 0;
    if (c->n_pending == PROBE_BATCH) flush_probes(c);
    c->pending.x[c->n_pending] = x;
    c->pending.n[c->n_pending] = n;
    c->pending.probe[c->n_pending] = probe;
    c->n_pending++;
    if (n > c->pending_max) c->pending_max = n;
    return 0;
}

void op_describe(kb_backend *be, char *buf, size_t cap) {
    snprintf(buf, cap, "cuda (%s)", cu(be)->name);
}

uint64_t op_mem_used(kb_backend *be) { return cu(be)->bytes + g_kv_bytes; }

void op_destroy(kb_backend *be) {
    kb_cuda *c = cu(be);
    if (!c) return;
    cudaStreamSynchronize(c->stream);
    dbuf *bufs[] = {&c->tok, &c->pos, &c->wslot, &c->row_seq, &c->seq_slot0, &c->slots,
                    &c->logit_rows, &c->part, &c->w16, &c->x16, &c->flag};
    for (dbuf *b : bufs) cudaFree(b->p);
    for (auto &a : c->allocs) cudaFree(a.first);
    if (c->cublas) kcuda_cublas_get()->destroy(c->cublas);
    if (c->stream) cudaStreamDestroy(c->stream);
    delete c;
}

const kb_ops cuda_ops = [] {
    kb_ops o;
    memset(&o, 0, sizeof o);
    o.name = "cuda";
    o.host = false;
    o.alloc = op_alloc;
    o.free_mem = op_free_mem;
    o.upload = op_upload;
    o.download = op_download;
    o.mat_upload = op_mat_upload;
    o.mat_free = op_mat_free;
    o.kv_new = op_kv_new;
    o.kv_free = kv_free_fn;
    o.type_supported = op_type_supported;
    o.begin = op_begin;
    o.finish = op_finish;
    o.matmul = op_matmul;
    o.matmul_multi = op_matmul_multi;
    o.embed = op_embed;
    o.rmsnorm = op_rmsnorm;
    o.add = op_add;
    o.bias_add = op_bias_add;
    o.rope = op_rope;
    o.silu_mul = op_silu_mul;
    o.kv_store = op_kv_store;
    o.attention = op_attention;
    o.gather_rows = op_gather_rows;
    o.check_finite = op_check_finite;
    o.qkv_post = op_qkv_post;
    o.add_rmsnorm = op_add_rmsnorm;
    o.describe = op_describe;
    o.mem_used = op_mem_used;
    o.destroy = op_destroy;
    return o;
}();

} // namespace

extern "C" int kb_cuda_built(void) { return 1; }

extern "C" kb_backend *kb_cuda_new(sgl_error *err) {
    if (kcuda_device_count() <= 0) {
        sgl_error_set(err, "cuda: no usable GPU on this machine (%s)", kcuda_no_device_reason());
        return nullptr;
    }
    kb_cuda *c = new (std::nothrow) kb_cuda();
    if (!c) {
        sgl_error_set(err, "cuda: out of memory");
        return nullptr;
    }
    c->base.ops = &cuda_ops;
    cudaError_t e = cudaSetDevice(0);
    if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
        cudaGetLastError();
        fail(err, "cannot start on device 0", e);
        delete c;
        return nullptr;
    }
    if (kcuda_device_describe(c->name, sizeof c->name)) snprintf(c->name, sizeof c->name, "device 0");
    const char *env = getenv("SGL_CUDA_GEMM_ROWS");
    if (env && *env) c->gemm_rows = atoi(env);
    return &c->base;
}

extern "C" int kb_cuda_set_gemm_rows(kb_backend *be, int min_rows) {
    if (!be || strcmp(be->ops->name, "cuda") != 0) return -1;
    cu(be)->gemm_rows = min_rows > 0 ? min_rows : 0;
    return 0;
}

extern "C" int kb_cuda_profile(kb_backend *be, int on) {
    if (!be || strcmp(be->ops->name, "cuda") != 0) return -1;
    kb_cuda *c = cu(be);
    c->prof = on != 0;
    for (int i = 0; i < P_N; i++) c->prof_s[i] = 0, c->prof_n[i] = 0;
    return 0;
}

extern "C" int kb_cuda_profile_get(kb_backend *be, const char **names, double *seconds,
                                   long *calls, int cap) {
    if (!be || strcmp(be->ops->name, "cuda") != 0) return -1;
    kb_cuda *c = cu(be);
    int n = 0;
    for (int i = 0; i < P_N && n < cap; i++, n++) {
        names[n] = prof_names[i];
        seconds[n] = c->prof_s[i];
        calls[n] = c->prof_n[i];
    }
    return n;
}

extern "C" double kcuda_hbm_gbps(void) {
    int clock_khz = 0, bus_bits = 0;
    if (kcuda_device_count() <= 0 ||
        cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, 0) != cudaSuccess ||
        cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, 0) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return 2.0 * clock_khz * 1e3 * (bus_bits / 8.0) / 1e9; /* DDR: two transfers per clock */
}
