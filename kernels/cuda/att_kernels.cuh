/* att_kernels: the attention kernels of the CUDA backend (kb_cuda.cu
 * includes this inside its anonymous namespace; tests/cuda/test_cuda_emu.cpp
 * compiles it on the host with a small emulation of the CUDA builtins, so
 * the kernels' indexing and their bit-for-bit agreement are checked on
 * machines without a GPU). Needs cuda_fp16.h (or the emulation) and
 * <cstdint> first; defines no host code.
 *
 * The order of every sum (kb_cuda.cu's head comment): keys in chunks of
 * ATT_CHUNK at fixed positions; per chunk the max m, l = sum of exp(s - m)
 * in block_sum's order, o[d] = one fma chain over the keys; chunks folded
 * in key order by fold(). k_att_chunk + k_att_combine (decode rows) and
 * k_att_extend (tiles of new tokens) follow it to the bit.
 */
#ifndef SGL_ATT_KERNELS_CUH
#define SGL_ATT_KERNELS_CUH

/* Keys per attention chunk: fixed, so the split never depends on the batch. */
constexpr int ATT_CHUNK = 256;
constexpr int ATT_THREADS = 128;
/* The extend kernel: queries per tile, largest head_dim, accumulators per
 * thread. */
constexpr int EXT_Q = 16;
constexpr int EXT_MAX_HD = 128;
constexpr int EXT_ITEMS = EXT_Q * EXT_MAX_HD / ATT_THREADS;

/* The kernel's dynamic shared memory (the emulation defines its own). */
#ifndef ATT_DYN_SHARED
#define ATT_DYN_SHARED(T, name) extern __shared__ T name[]
#endif

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

/* Attention order (see the top): chunk c of a query holds keys c*ATT_CHUNK
 * .. up to its position; its statistics are m (max score), l (exp-sum in
 * the order of block_sum) and o[d] (sum over keys in key order of
 * p_j v_j[d], one fma chain). fold() merges a chunk into the running
 * (M, L, acc) of its query, chunks in key order; both the decode path
 * (k_att_chunk + k_att_combine) and k_att_extend use it, so a query's
 * output is the same bits whichever kernel computed it. */
__device__ __forceinline__ void fold_weights(float M, float m, float *Mn, float *a, float *b) {
    *Mn = fmaxf(M, m);
    *a = expf(M - *Mn); /* 0 for the first chunk (M = -inf) */
    *b = expf(m - *Mn);
}
__device__ __forceinline__ float fold(float acc, float a, float v, float b) {
    return __fadd_rn(__fmul_rn(acc, a), __fmul_rn(v, b));
}

/* One block per (listed row ix, head h, chunk c): keys c*ATT_CHUNK .. of
 * row rows[ix]'s sequence (up to its position). Writes the chunk's o, m, l
 * to part[((ix * n_heads + h) * n_chunks + c)] (hd + 2 floats: o..., m, l). */
__global__ void k_att_chunk(const __half *K, const __half *V, int64_t layer_off, int kv_dim,
                            const float *q, int n_heads, int n_kv_heads, int hd,
                            const int32_t *pos, const int32_t *row_seq, const int32_t *seq_slot0,
                            const int32_t *slots, const int32_t *rows, const int *nd,
                            int n_chunks, float *part) {
    ATT_DYN_SHARED(float, sh); /* qs[hd], p[ATT_CHUNK], red[ATT_THREADS] */
    float *qs = sh, *p = sh + hd, *red = p + ATT_CHUNK;
    int c = blockIdx.z, h = blockIdx.y;
    int64_t ix = blockIdx.x;
    if (nd && ix >= *nd) return; /* the whole block */
    int64_t r = rows[ix];
    int nk = pos[r] + 1;
    int j0 = c * ATT_CHUNK;
    float *out = part + ((ix * n_heads + h) * (int64_t)n_chunks + c) * (hd + 2);
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

/* One block per (listed row ix, head h): folds the row's chunks in key
 * order and writes att[rows[ix]][h]. */
__global__ void k_att_combine(const float *part, const int32_t *pos, const int32_t *rows,
                              const int *nd, int n_heads, int hd, int n_chunks, float *att) {
    int h = blockIdx.y;
    int64_t ix = blockIdx.x;
    if (nd && ix >= *nd) return;
    int64_t r = rows[ix];
    int nc = (pos[r] + 1 + ATT_CHUNK - 1) / ATT_CHUNK;
    const float *base = part + (ix * n_heads + h) * (int64_t)n_chunks * (hd + 2);
    float *o = att + r * (int64_t)n_heads * hd + (int64_t)h * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float M = -INFINITY, L = 0.0f, acc = 0.0f;
        for (int c = 0; c < nc; c++) {
            const float *pc = base + c * (int64_t)(hd + 2);
            float Mn, a, b;
            fold_weights(M, pc[hd], &Mn, &a, &b);
            L = fold(L, a, pc[hd + 1], b);
            acc = fold(acc, a, pc[d], b);
            M = Mn;
        }
        o[d] = __fmul_rn(acc, 1.0f / L);
    }
}

/* dst[i] = K or V rows sl[0..nj) of one kv head (hd halves each, hd even)
 * into shared memory rows of ks halves. */
__device__ __forceinline__ void load_kv_tile(__half *dst, const __half *src, int64_t hoff,
                                             int kv_dim, const int32_t *sl, int nj, int hd,
                                             int ks) {
    int hw = hd / 2;
    for (int e = threadIdx.x; e < nj * hw; e += blockDim.x) {
        int j = e / hw, w = e % hw;
        const __half2 *s = reinterpret_cast<const __half2 *>(src + hoff + (int64_t)sl[j] * kv_dim) + w;
        reinterpret_cast<__half2 *>(dst + (int64_t)j * ks)[w] = *s;
    }
}

/* The extend kernel: one block per (tile of up to EXT_Q consecutive new
 * tokens of one sequence, query head h). tiles[3 t .. 3 t + 2] = sequence,
 * first row, row count. The K (then V) rows of each chunk of ATT_CHUNK keys
 * are loaded into shared memory once for the tile's queries; each query's
 * chunk statistics are computed exactly as k_att_chunk computes them (the
 * scores one fma chain over d, the max, p = exp(s - m), l by block_sum's
 * tree, o by one fma chain over keys) and folded in key order as
 * k_att_combine folds them, without a partials buffer. Causal: query i sees
 * keys 0 .. pos[i] (its cached prefix, then the new tokens up to itself,
 * already in the KV store). Needs hd % 8 == 0 and hd <= EXT_MAX_HD. */
__global__ void __launch_bounds__(ATT_THREADS)
k_att_extend(const __half *K, const __half *V, int64_t layer_off, int kv_dim, const float *q,
             int n_heads, int n_kv_heads, int hd, const int32_t *pos, const int32_t *seq_slot0,
             const int32_t *slots, const int32_t *tiles, float *att) {
    ATT_DYN_SHARED(float, sh); /* qs[EXT_Q][hd], S[EXT_Q][ATT_CHUNK], KV[ATT_CHUNK][hd + 2] halves */
    float *qs = sh, *S = qs + EXT_Q * hd;
    __half *KV = reinterpret_cast<__half *>(S + EXT_Q * ATT_CHUNK);
    __shared__ int nk_s[EXT_Q], nj_s[EXT_Q];
    __shared__ float M_s[EXT_Q], L_s[EXT_Q], fa_s[EXT_Q], fb_s[EXT_Q];
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, h = blockIdx.y;
    const int32_t *tl = tiles + 3 * (int64_t)blockIdx.x;
    const int seq = tl[0], ra = tl[1], nq = tl[2];
    const int kvh = h / (n_heads / n_kv_heads);
    const int ks = hd + 2; /* shared row stride in halves: an odd number of words */
    const int64_t qstride = (int64_t)n_heads * hd;
    const float scale = 1.0f / sqrtf((float)hd);
    for (int e = tid; e < EXT_Q * hd; e += ATT_THREADS) {
        int i = e / hd, d = e % hd;
        qs[e] = i < nq ? __fmul_rn(q[(int64_t)(ra + i) * qstride + (int64_t)h * hd + d], scale)
                       : 0.0f;
    }
    if (tid < EXT_Q) {
        nk_s[tid] = tid < nq ? pos[ra + tid] + 1 : 0;
        M_s[tid] = -INFINITY;
        L_s[tid] = 0.0f;
    }
    __syncthreads();
    const int nk_max = nk_s[nq - 1]; /* positions rise along the tile */
    const int32_t *sl = slots + seq_slot0[seq];
    const int64_t hoff = layer_off + (int64_t)kvh * hd;
    float acc[EXT_ITEMS];
#pragma unroll
    for (int u = 0; u < EXT_ITEMS; u++) acc[u] = 0.0f;
    const int n_items = EXT_Q * hd / ATT_THREADS;
    for (int j0 = 0; j0 < nk_max; j0 += ATT_CHUNK) {
        const int njm = min(ATT_CHUNK, nk_max - j0);
        load_kv_tile(KV, K, hoff, kv_dim, sl + j0, njm, hd, ks);
        if (tid < EXT_Q) nj_s[tid] = max(0, min(ATT_CHUNK, nk_s[tid] - j0));
        __syncthreads();
        /* scores: thread tid takes keys tid, tid + ATT_THREADS for every query */
        for (int j = tid; j < njm; j += ATT_THREADS) {
            float s[EXT_Q];
#pragma unroll
            for (int i = 0; i < EXT_Q; i++) s[i] = 0.0f;
            const __half *kr = KV + (int64_t)j * ks;
            for (int d = 0; d < hd; d++) {
                float kd = __half2float(kr[d]);
#pragma unroll
                for (int i = 0; i < EXT_Q; i++) s[i] = __fmaf_rn(qs[i * hd + d], kd, s[i]);
            }
#pragma unroll
            for (int i = 0; i < EXT_Q; i++)
                if (j < nj_s[i]) S[i * ATT_CHUNK + j] = s[i];
        }
        __syncthreads();
        /* per query (one warp each): max, p, l in block_sum's order, fold */
        for (int i = warp; i < nq; i += ATT_THREADS / 32) {
            const int nj = nj_s[i];
            if (nj == 0) continue; /* the same for the whole warp */
            float *Si = S + i * ATT_CHUNK;
            float mx = -INFINITY;
            for (int j = lane; j < nj; j += 32) mx = fmaxf(mx, Si[j]);
            for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
            for (int j = lane; j < nj; j += 32) Si[j] = expf(Si[j] - mx);
            __syncwarp();
            /* k_att_chunk: thread t sums p[t], p[t + 128] (from 0); then the
             * tree adds t + 64, t + 32, ..., t + 1. Lane l holds the
             * partials of threads l, l + 32, l + 64, l + 96. */
            float v[4];
#pragma unroll
            for (int u = 0; u < 4; u++) {
                int t = lane + 32 * u;
                float part = 0.0f;
                if (t < nj) part += Si[t];
                if (t + ATT_THREADS < nj) part += Si[t + ATT_THREADS];
                v[u] = part;
            }
            v[0] = v[0] + v[2];
            v[1] = v[1] + v[3];
            v[0] = v[0] + v[1];
            for (int off = 16; off > 0; off >>= 1) v[0] = v[0] + __shfl_down_sync(0xffffffffu, v[0], off);
            if (lane == 0) {
                float Mn, a, b;
                fold_weights(M_s[i], mx, &Mn, &a, &b);
                L_s[i] = fold(L_s[i], a, v[0], b);
                M_s[i] = Mn;
                fa_s[i] = a;
                fb_s[i] = b;
            }
        }
        __syncthreads();
        load_kv_tile(KV, V, hoff, kv_dim, sl + j0, njm, hd, ks);
        __syncthreads();
#pragma unroll
        for (int u = 0; u < EXT_ITEMS; u++) {
            if (u >= n_items) break;
            int e = tid + u * ATT_THREADS, i = e / hd, d = e % hd;
            if (i >= nq) continue;
            int nj = nj_s[i];
            if (nj == 0) continue;
            const float *Si = S + i * ATT_CHUNK;
            float o = 0.0f;
            for (int j = 0; j < nj; j++) o = __fmaf_rn(Si[j], __half2float(KV[(int64_t)j * ks + d]), o);
            acc[u] = fold(acc[u], fa_s[i], o, fb_s[i]);
        }
        __syncthreads(); /* before the next chunk overwrites KV, S and the weights */
    }
#pragma unroll
    for (int u = 0; u < EXT_ITEMS; u++) {
        if (u >= n_items) break;
        int e = tid + u * ATT_THREADS, i = e / hd, d = e % hd;
        if (i < nq) att[(int64_t)(ra + i) * qstride + (int64_t)h * hd + d] = __fmul_rn(acc[u], 1.0f / L_s[i]);
    }
}

/* Bytes of dynamic shared memory k_att_extend needs for head_dim hd. */
inline size_t ext_shm(int hd) {
    return sizeof(float) * (size_t)(EXT_Q * hd + EXT_Q * ATT_CHUNK) +
           sizeof(__half) * (size_t)ATT_CHUNK * (size_t)(hd + 2);
}

#endif
