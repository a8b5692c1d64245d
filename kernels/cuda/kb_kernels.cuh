/* kb_kernels: the CUDA backend's kernels other than attention, and the
 * element decoders of the GGUF weight types (kb_cuda.cu includes this
 * inside its anonymous namespace; tests/cuda/test_cuda_emu.cpp compiles it
 * on the host with an emulation of the CUDA builtins, as att_kernels.cuh).
 * Needs cuda_fp16.h (or the emulation), kernels/dtype.h and <cstdint>
 * first; defines no host code.
 *
 * Row counts: a kernel launched for a decode graph is sized for its bucket
 * and reads the real row count from device memory (nd); everywhere else nd
 * is NULL and the host count is used. Rows from the count up exit before
 * they read anything.
 */
#ifndef SGL_KB_KERNELS_CUH
#define SGL_KB_KERNELS_CUH

/* Warps (weight rows) per matmul block. */
constexpr int MM_WARPS = 4;
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

/* ---- kernels ------------------------------------------------------------------ */

__device__ __forceinline__ int64_t row_count(int64_t n, const int *nd) {
    return nd ? (int64_t)*nd : n;
}

/* Y[b][r] = sum_j W[r][j] X[b][j]; see the determinism note at the top.
 * TILE activation rows per warp share each decoded weight; a row's sum is
 * the same for any TILE (its own accumulator, the same order). */
template <int T, int TILE>
__global__ void k_matmul(const uint8_t *W, int64_t rb, int rows, int k, const float *X, int nb,
                         const int *nd, float *Y) {
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int r = blockIdx.x * MM_WARPS + warp;
    int b0 = blockIdx.y * TILE;
    int nt = min(TILE, (int)row_count(nb, nd) - b0);
    if (r >= rows || nt <= 0) return;
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
__global__ void k_embed(const uint8_t *E, int64_t rb, const int32_t *tok, int dim, const int *nd,
                        float *x) {
    int r = blockIdx.x;
    if (nd && r >= *nd) return;
    const uint8_t *row = E + (int64_t)tok[r] * rb;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) x[(int64_t)r * dim + j] = welem<T>(row, j);
}

/* One block per row: ss by thread-strided sums then a fixed tree. */
__global__ void k_rmsnorm(float *y, const float *x, const float *w, int dim, float eps,
                          const int *nd) {
    __shared__ float part[NORM_THREADS];
    if (nd && (int)blockIdx.x >= *nd) return; /* the whole block */
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

/* y[i] += x[i] over rows x dim values (bias: x[i % dim]). */
__global__ void k_add(float *y, const float *x, int64_t rows, const int *nd, int64_t dim,
                      int bias) {
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i < row_count(rows, nd) * dim) y[i] = __fadd_rn(y[i], bias ? x[i % dim] : x[i]);
}

/* g = silu(g) * u, as ref_silu_mul: g / (1 + e^-g) * u. */
__global__ void k_silu_mul(float *g, const float *u, int64_t rows, const int *nd, int64_t dim) {
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i < row_count(rows, nd) * dim)
        g[i] = __fmul_rn(__fdiv_rn(g[i], __fadd_rn(1.0f, expf(-g[i]))), u[i]);
}

/* One thread per (row, pair i < rot/2), all heads of the row: the angle in
 * double from pos * freq_scale * theta^(-2i/rot), as kern_rope. */
__global__ void k_rope(float *x, const int32_t *pos, int64_t n_rows, const int *nd, int n_heads,
                       int head_dim, int rot, float theta, float freq_scale, int neox) {
    int half = rot / 2;
    int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (t >= row_count(n_rows, nd) * half) return;
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
                           const int32_t *wslot, int64_t n_rows, const int *nd, int kv_dim,
                           int64_t layer_off) {
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i >= row_count(n_rows, nd) * kv_dim) return;
    int64_t r = i / kv_dim, d = i % kv_dim;
    int64_t off = layer_off + (int64_t)wslot[r] * kv_dim + d;
    K[off] = __float2half_rn(k[i]);
    V[off] = __float2half_rn(v[i]);
}

/* x[r] += y[r]; then, when w is set, y[r] = rmsnorm(x[r]) * w, as
 * k_add then k_rmsnorm (one block per row, the same fixed tree). */
__global__ void k_add_rmsnorm(float *x, float *y, const float *w, int dim, float eps,
                              const int *nd) {
    __shared__ float part[NORM_THREADS];
    if (nd && (int)blockIdx.x >= *nd) return; /* the whole block */
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
                           __half *K, __half *V, int64_t layer_off, const int *nd) {
    int64_t r = blockIdx.x;
    if (nd && r >= *nd) return; /* the whole block */
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

/* Up to PROBE_BATCH NaN/Inf checks in one launch (blockIdx.y = check).
 * Check e covers n[e] values, or w[e] values per row of *nd rows when w[e]
 * is set (a decode graph). */
constexpr int PROBE_BATCH = 8;
struct probe_set {
    const float *x[PROBE_BATCH];
    int64_t n[PROBE_BATCH];
    int64_t w[PROBE_BATCH];
    int probe[PROBE_BATCH];
    const int *nd;
};
__global__ void k_check_multi(probe_set ps, int *flag) {
    int e = blockIdx.y;
    const float *x = ps.x[e];
    int64_t n = ps.w[e] ? ps.w[e] * (int64_t)*ps.nd : ps.n[e];
    int bad = 0;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        bad |= (__float_as_uint(x[i]) & 0x7f800000u) == 0x7f800000u;
    if (__syncthreads_or(bad) && threadIdx.x == 0) atomicMin(flag, ps.probe[e]);
}

__global__ void k_gather_rows(float *dst, const float *src, const int32_t *rows, int64_t n,
                              const int *nd, int64_t dim) {
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i < row_count(n, nd) * dim) dst[i] = src[(int64_t)rows[i / dim] * dim + i % dim];
}

#endif
