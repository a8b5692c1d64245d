/* test_cuda_emu: the CUDA backend's kernels (kernels/cuda/att_kernels.cuh,
 * kb_kernels.cuh) run on the host through a small emulation of the CUDA
 * builtins they use (one OS thread per CUDA thread, real barriers for
 * __syncthreads and __syncwarp, shuffles through a per-warp exchange
 * array), so their indexing and their bit-for-bit claims are checked on
 * machines without a GPU (suite 'unit'; built with AddressSanitizer where
 * the compiler has it, and every buffer is exactly as long as the batch,
 * so an index past the real rows fails the test). Checks:
 *  - attention, for head_dim 64, 80 and 128, GQA and odd lengths over
 *    scattered slots: k_att_extend (tiles of new tokens) against a
 *    double-precision reference, and bit for bit against k_att_chunk +
 *    k_att_combine (every row as a decode row of its own); the decode
 *    kernels sized for a graph bucket (more rows and chunks in the grid
 *    than in the batch, the row count read through a pointer) give the
 *    same bits as sized exactly;
 *  - every other kernel a decode graph launches (matmul of several weight
 *    types and both tile sizes, embedding, RMSNorm, adds, SiLU, RoPE, KV
 *    store, fused add+RMSNorm and q/k/v post-processing, NaN probes,
 *    logits rows): sized for the bucket with the count on the "device", the
 *    same bits as sized exactly, and nothing read or written past the rows;
 *    the matmul also against a double-precision reference.
 * What this cannot show: device timing, the device's own expf / cos / sin
 * (the host's serve both sides alike), scheduling effects, the CUDA graph
 * and stream calls of kb_cuda.cu (host code that needs a GPU).
 */
#include <pthread.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

/* ---- the emulation ---------------------------------------------------------------- */

struct emu_dim3 {
    unsigned x = 1, y = 1, z = 1;
};
static thread_local emu_dim3 threadIdx, blockIdx;
static emu_dim3 blockDim, gridDim;

struct __half {
    uint16_t bits;
};
struct __half2 {
    __half x, y;
};
static inline float __half2float(__half h) {
    uint32_t s = (uint32_t)(h.bits >> 15) << 31, e = (h.bits >> 10) & 31, m = h.bits & 1023, u;
    if (e == 0) {
        if (!m) {
            u = s;
        } else { /* subnormal: normalise */
            e = 113;
            while (!(m & 1024)) m <<= 1, e--;
            u = s | (e << 23) | ((m & 1023) << 13);
        }
    } else if (e == 31) {
        u = s | 0x7f800000u | (m << 13);
    } else {
        u = s | ((e + 112) << 23) | (m << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
static inline float __fmul_rn(float a, float b) { return a * b; } /* built with -ffp-contract=off */
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline unsigned __float_as_uint(float f) {
    unsigned u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float __uint_as_float(unsigned u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline __half __ushort_as_half(unsigned short b) {
    __half h;
    h.bits = b;
    return h;
}
/* f32 -> f16, round to nearest even (as __float2half_rn). */
static inline __half __float2half_rn(float f) {
    uint32_t u = __float_as_uint(f), s = (u >> 16) & 0x8000u, e = (u >> 23) & 255, m = u & 0x7fffffu;
    __half h;
    if (e == 255) { /* Inf / NaN */
        h.bits = (uint16_t)(s | 0x7c00u | (m ? 0x200u : 0));
        return h;
    }
    int ne = (int)e - 127 + 15;
    if (ne >= 31) {
        h.bits = (uint16_t)(s | 0x7c00u);
        return h;
    }
    uint32_t mant, shift;
    if (ne <= 0) { /* subnormal or zero */
        if (ne < -10) {
            h.bits = (uint16_t)s;
            return h;
        }
        mant = m | 0x800000u;
        shift = (uint32_t)(14 - ne);
    } else {
        mant = m;
        shift = 13;
    }
    uint32_t r = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) r++;
    h.bits = (uint16_t)(s | (ne <= 0 ? r : (((uint32_t)ne << 10) + r))); /* a carry moves up the exponent */
    return h;
}
using std::max;
using std::min;

enum { ATT_THREADS_EMU = 128 }; /* ATT_THREADS (att_kernels.cuh, included below) */
enum { EMU_THREADS = 256, EMU_WARPS = EMU_THREADS / 32 };
static pthread_barrier_t emu_block_bar, emu_start, emu_end, emu_warp_bar[EMU_WARPS];
static unsigned emu_block_threads; /* the count emu_block_bar was made for */
static float emu_xch[EMU_THREADS];
static std::function<void()> emu_body;
static bool emu_quit;
static emu_dim3 emu_cur;
alignas(16) static unsigned char emu_shared[160 * 1024];

static inline void __syncthreads() { pthread_barrier_wait(&emu_block_bar); }
static int emu_or;
static inline int __syncthreads_or(int v) {
    __syncthreads();
    if (threadIdx.x == 0) emu_or = 0;
    __syncthreads();
    if (v) __atomic_store_n(&emu_or, 1, __ATOMIC_SEQ_CST);
    __syncthreads();
    int r = __atomic_load_n(&emu_or, __ATOMIC_SEQ_CST);
    __syncthreads();
    return r;
}
static inline int atomicMin(int *p, int v) {
    int old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
    while (v < old && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
    }
    return old;
}
static inline void __syncwarp() { pthread_barrier_wait(&emu_warp_bar[threadIdx.x / 32]); }
static inline float emu_shfl(float v, int src_lane) {
    int w = (int)threadIdx.x / 32;
    emu_xch[threadIdx.x] = v;
    __syncwarp();
    float r = emu_xch[w * 32 + src_lane];
    __syncwarp();
    return r;
}
static inline float __shfl_xor_sync(unsigned, float v, int off) {
    return emu_shfl(v, (int)(threadIdx.x % 32) ^ off);
}
static inline float __shfl_down_sync(unsigned, float v, int off) {
    int l = (int)(threadIdx.x % 32);
    return emu_shfl(v, l + off < 32 ? l + off : l);
}

static void *emu_worker(void *arg) {
    threadIdx.x = (unsigned)(uintptr_t)arg;
    for (;;) {
        pthread_barrier_wait(&emu_start);
        if (emu_quit) return nullptr;
        blockIdx = emu_cur;
        if (threadIdx.x < blockDim.x) emu_body();
        pthread_barrier_wait(&emu_end);
    }
}

static pthread_t emu_threads[EMU_THREADS];
static void emu_init() {
    pthread_barrier_init(&emu_block_bar, nullptr, EMU_THREADS);
    emu_block_threads = EMU_THREADS;
    pthread_barrier_init(&emu_start, nullptr, EMU_THREADS + 1);
    pthread_barrier_init(&emu_end, nullptr, EMU_THREADS + 1);
    for (int w = 0; w < EMU_WARPS; w++) pthread_barrier_init(&emu_warp_bar[w], nullptr, 32);
    for (int t = 0; t < EMU_THREADS; t++)
        pthread_create(&emu_threads[t], nullptr, emu_worker, (void *)(uintptr_t)t);
}
static void emu_done() {
    emu_quit = true;
    pthread_barrier_wait(&emu_start);
    for (int t = 0; t < EMU_THREADS; t++) pthread_join(emu_threads[t], nullptr);
}
/* kernel<<<grid, threads, shm>>>: the blocks one after another (threads a
 * multiple of 32, at most EMU_THREADS). */
static void emu_launch_n(emu_dim3 grid, unsigned threads, size_t shm, std::function<void()> body) {
    if (shm > sizeof emu_shared || threads > EMU_THREADS || threads % 32) {
        fprintf(stderr, "emulation: %u threads, %zu bytes of shared memory asked\n", threads, shm);
        abort();
    }
    if (threads != emu_block_threads) { /* the workers are parked at emu_start */
        pthread_barrier_destroy(&emu_block_bar);
        pthread_barrier_init(&emu_block_bar, nullptr, threads);
        emu_block_threads = threads;
    }
    gridDim = grid;
    blockDim.x = threads;
    emu_body = std::move(body);
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                emu_cur.x = x, emu_cur.y = y, emu_cur.z = z;
                pthread_barrier_wait(&emu_start);
                pthread_barrier_wait(&emu_end);
            }
}
static void emu_launch(emu_dim3 grid, size_t shm, std::function<void()> body) {
    emu_launch_n(grid, ATT_THREADS_EMU, shm, std::move(body));
}

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __shared__ static
#define ATT_DYN_SHARED(T, name) T *name = reinterpret_cast<T *>(emu_shared)

extern "C" {
#include "kernels/dtype.h"
}
#include "kernels/cuda/att_kernels.cuh"
#include "kernels/cuda/kb_kernels.cuh"

/* ---- the test ----------------------------------------------------------------------- */

static int failures;
#define EXPECT(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            failures++;                                                                            \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                            \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
        }                                                                                          \
    } while (0)

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static uint32_t urand(uint32_t n) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 33) % n;
}
static float frand() { return (float)urand(1u << 24) / (float)(1u << 23) - 1.0f; }
/* A random f16 in about [-2, 2] (bits; sign, exponent 9..15, mantissa). */
static __half hrand() {
    __half h;
    h.bits = (uint16_t)((urand(2) << 15) | ((9 + urand(7)) << 10) | urand(1024));
    return h;
}

struct seqspec {
    int n_new, pos0;
};

static void check(int nh, int nkv, int hd, const std::vector<seqspec> &sp) {
    const int P = 1500, kvd = nkv * hd, layer = 1, layers = 2;
    /* the batch: rows in sequence order, every sequence's slots drawn
     * without repetition from a shuffled pool */
    std::vector<int32_t> perm(P);
    for (int i = 0; i < P; i++) perm[i] = i;
    for (int i = P - 1; i > 0; i--) std::swap(perm[i], perm[urand((uint32_t)i + 1)]);
    std::vector<int32_t> pos, row_seq, slot0, slots, tiles;
    int used = 0;
    for (size_t s = 0; s < sp.size(); s++) {
        int nctx = sp[s].pos0 + sp[s].n_new;
        slot0.push_back((int32_t)slots.size());
        for (int j = 0; j < nctx; j++) slots.push_back(perm[used + j]);
        used += nctx;
        int row0 = (int)pos.size();
        for (int t = 0; t < sp[s].n_new; t++) pos.push_back(sp[s].pos0 + t), row_seq.push_back((int32_t)s);
        for (int t = 0; t < sp[s].n_new; t += EXT_Q) {
            tiles.push_back((int32_t)s);
            tiles.push_back(row0 + t);
            tiles.push_back(std::min(EXT_Q, sp[s].n_new - t));
        }
    }
    if (used > P) abort();
    const int n = (int)pos.size(), qd = nh * hd;
    std::vector<__half> K((size_t)layers * P * kvd), V(K.size());
    for (auto &h : K) h = hrand();
    for (auto &h : V) h = hrand();
    std::vector<float> q((size_t)n * qd);
    for (auto &x : q) x = 2 * frand();
    const int64_t layer_off = (int64_t)layer * P * kvd;
    int max_ctx = 0;
    for (int r = 0; r < n; r++) max_ctx = std::max(max_ctx, pos[r] + 1);
    const int n_chunks = (max_ctx + ATT_CHUNK - 1) / ATT_CHUNK;

    /* the extend kernel over all tiles */
    std::vector<float> ext((size_t)n * qd, NAN);
    emu_launch(emu_dim3{(unsigned)(tiles.size() / 3), (unsigned)nh, 1}, ext_shm(hd), [&] {
        k_att_extend(K.data(), V.data(), layer_off, kvd, q.data(), nh, nkv, hd, pos.data(),
                     slot0.data(), slots.data(), tiles.data(), ext.data());
    });

    /* the decode kernels, every row listed, sized exactly */
    std::vector<int32_t> rows(256);
    for (int i = 0; i < 256; i++) rows[i] = i;
    auto decode = [&](int grid_rows, int grid_chunks, const int *nd, std::vector<float> &out,
                      const std::vector<int32_t> &rows) {
        std::vector<float> part((size_t)grid_rows * nh * grid_chunks * (hd + 2), NAN);
        size_t shm = sizeof(float) * (size_t)(hd + ATT_CHUNK + ATT_THREADS);
        emu_launch(emu_dim3{(unsigned)grid_rows, (unsigned)nh, (unsigned)grid_chunks}, shm, [&] {
            k_att_chunk(K.data(), V.data(), layer_off, kvd, q.data(), nh, nkv, hd, pos.data(),
                        row_seq.data(), slot0.data(), slots.data(), rows.data(), nd, grid_chunks,
                        part.data());
        });
        emu_launch(emu_dim3{(unsigned)grid_rows, (unsigned)nh, 1}, 0, [&] {
            k_att_combine(part.data(), pos.data(), rows.data(), nd, nh, hd, grid_chunks, out.data());
        });
    };
    std::vector<float> dec((size_t)n * qd, NAN), dec_bucket((size_t)n * qd, NAN);
    decode(n, n_chunks, nullptr, dec, rows);
    /* as in a decode graph: grid for the next power of two of rows and of
     * chunks, the row count through a pointer */
    int bucket_rows = 1, bucket_chunks = 1;
    while (bucket_rows < n) bucket_rows *= 2;
    while (bucket_chunks < n_chunks) bucket_chunks *= 2;
    int nd = n;
    decode(bucket_rows, bucket_chunks, &nd, dec_bucket, rows);
    /* as in a mixed batch: only the rows of sequences below 16 new tokens
     * listed (the others go to the extend kernel), chunks for their
     * longest context; the other rows must stay untouched */
    std::vector<int32_t> arows;
    int arows_ctx = 0;
    for (int r = 0; r < n; r++)
        if (sp[row_seq[r]].n_new < 16) arows.push_back(r), arows_ctx = std::max(arows_ctx, pos[r] + 1);
    std::vector<float> mix((size_t)n * qd, NAN);
    if (!arows.empty())
        decode((int)arows.size(), (arows_ctx + ATT_CHUNK - 1) / ATT_CHUNK, nullptr, mix, arows);
    int mix_bad = 0;
    for (int r = 0; r < n; r++) {
        bool listed = sp[row_seq[r]].n_new < 16;
        for (int e = 0; e < qd; e++) {
            float v = mix[(size_t)r * qd + e];
            if (listed ? memcmp(&v, &dec[(size_t)r * qd + e], 4) != 0 : !std::isnan(v)) {
                mix_bad++;
                break;
            }
        }
    }
    EXPECT(!mix_bad, "decode kernels over a row list: %d rows wrong or written unlisted", mix_bad);

    /* double-precision reference */
    double maxd = 0, maxr = 1e-30;
    for (int r = 0; r < n; r++)
        for (int h = 0; h < nh; h++) {
            int kvh = h / (nh / nkv), nk = pos[r] + 1;
            const int32_t *sl = slots.data() + slot0[row_seq[r]];
            std::vector<double> sc(nk);
            double mx = -1e300, sum = 0;
            for (int j = 0; j < nk; j++) {
                double s = 0;
                for (int d = 0; d < hd; d++)
                    s += (double)q[(size_t)r * qd + h * hd + d] *
                         __half2float(K[layer_off + (int64_t)sl[j] * kvd + kvh * hd + d]);
                sc[j] = s / std::sqrt((double)hd);
                mx = std::max(mx, sc[j]);
            }
            for (int j = 0; j < nk; j++) sum += sc[j] = std::exp(sc[j] - mx);
            for (int d = 0; d < hd; d++) {
                double o = 0;
                for (int j = 0; j < nk; j++)
                    o += sc[j] * __half2float(V[layer_off + (int64_t)sl[j] * kvd + kvh * hd + d]);
                o /= sum;
                double g = ext[(size_t)r * qd + h * hd + d];
                maxr = std::max(maxr, std::fabs(o));
                double diff = std::fabs(g - o);
                if (!(diff <= maxd)) maxd = diff; /* NaN (a value never written) counts */
            }
        }
    int differ = 0, differ_bucket = 0;
    for (int r = 0; r < n; r++) {
        differ += memcmp(&ext[(size_t)r * qd], &dec[(size_t)r * qd], sizeof(float) * qd) != 0;
        differ_bucket += memcmp(&dec_bucket[(size_t)r * qd], &dec[(size_t)r * qd], sizeof(float) * qd) != 0;
    }
    printf("heads %d/%d hd %d, %d rows, %zu tiles: error vs reference %.3g, "
           "extend != decode in %d rows, bucketed != exact in %d rows\n",
           nh, nkv, hd, n, tiles.size() / 3, maxd / maxr, differ, differ_bucket);
    EXPECT(maxd / maxr < 1e-5, "extend kernel vs reference: normalised error %g", maxd / maxr);
    EXPECT(!differ, "extend vs decode kernels: %d of %d rows differ", differ, n);
    EXPECT(!differ_bucket, "decode kernels sized for a bucket vs exactly: %d rows differ",
           differ_bucket);
}

/* ---- the other kernels: graph-bucket sizing ----------------------------------------- */

/* Exactly n rows of width floats of random values. */
static std::vector<float> rows_of(int n, int width) {
    std::vector<float> v((size_t)n * width);
    for (auto &x : v) x = frand();
    return v;
}
static unsigned cdiv(int64_t n, int d) { return (unsigned)((n + d - 1) / d); }
static int pow2(int n) {
    int p = 1;
    while (p < n) p *= 2;
    return p;
}
static bool same_bits(const void *a, const void *b, size_t bytes) { return !bytes || !memcmp(a, b, bytes); }

/* A weight matrix of rows x k of type T with random contents (valid scales:
 * f16 scale fields get small finite values). */
static std::vector<uint8_t> weights(sgl_dtype t, int rows, int k, int64_t *rb) {
    *rb = (int64_t)sgl_dtype_row_bytes(t, (uint64_t)k);
    std::vector<uint8_t> w((size_t)(*rb * rows));
    if (t == SGL_DTYPE_F32) {
        for (size_t i = 0; i < w.size() / 4; i++) {
            float f = frand();
            memcpy(&w[4 * i], &f, 4);
        }
    } else if (t == SGL_DTYPE_Q8_0) { /* blocks of | d f16 | 32 x int8 | */
        for (size_t b = 0; b < w.size() / 34; b++) {
            __half d = __float2half_rn(0.01f + 0.02f * (float)urand(100) / 100.0f);
            memcpy(&w[34 * b], &d.bits, 2);
            for (int j = 0; j < 32; j++) w[34 * b + 2 + j] = (uint8_t)urand(256);
        }
    } else { /* Q4_1: | d f16 | m f16 | 16 bytes | */
        for (size_t b = 0; b < w.size() / 20; b++) {
            __half d = __float2half_rn(0.05f), m = __float2half_rn(-0.3f);
            memcpy(&w[20 * b], &d.bits, 2);
            memcpy(&w[20 * b + 2], &m.bits, 2);
            for (int j = 0; j < 16; j++) w[20 * b + 4 + j] = (uint8_t)urand(256);
        }
    }
    return w;
}

template <int T, int TILE>
static std::vector<float> run_matmul(const std::vector<uint8_t> &W, int64_t rb, int rows, int k,
                                     const std::vector<float> &X, int grid_rows, const int *nd, int n) {
    std::vector<float> Y((size_t)n * rows, NAN);
    emu_launch_n(emu_dim3{cdiv(rows, MM_WARPS), cdiv(grid_rows, TILE), 1}, MM_WARPS * 32, 0, [&] {
        k_matmul<T, TILE>(W.data(), rb, rows, k, X.data(), grid_rows, nd, Y.data());
    });
    return Y;
}

template <int T> static void check_matmul(sgl_dtype t, int rows, int k, int n) {
    int64_t rb;
    std::vector<uint8_t> W = weights(t, rows, k, &rb);
    std::vector<float> X = rows_of(n, k);
    int B = pow2(n);
    /* exactly: the tile kb_cuda picks for n; bucket: for B (another tile
     * size when B crosses 64: a row's sum must not change) */
    std::vector<float> y1 = n >= 64 ? run_matmul<T, 32>(W, rb, rows, k, X, n, nullptr, n)
                                    : run_matmul<T, 8>(W, rb, rows, k, X, n, nullptr, n);
    std::vector<float> y2 = B >= 64 ? run_matmul<T, 32>(W, rb, rows, k, X, B, &n, n)
                                    : run_matmul<T, 8>(W, rb, rows, k, X, B, &n, n);
    std::vector<float> y3 = run_matmul<T, 32>(W, rb, rows, k, X, n, nullptr, n);
    EXPECT(same_bits(y1.data(), y2.data(), y1.size() * 4), "matmul %s %dx%d, %d rows: bucket != exact",
           sgl_dtype_name(t), rows, k, n);
    EXPECT(same_bits(y1.data(), y3.data(), y1.size() * 4), "matmul %s %dx%d, %d rows: tile 32 != tile of %d",
           sgl_dtype_name(t), rows, k, n, n >= 64 ? 32 : 8);
    /* against a double-precision sum of the decoded weights */
    double maxd = 0, maxr = 1e-30;
    std::vector<float> wrow(k);
    for (int r = 0; r < rows; r++) {
        for (int j = 0; j < k; j++) wrow[j] = welem<T>(W.data() + (int64_t)r * rb, j);
        for (int b = 0; b < n; b++) {
            double acc = 0;
            for (int j = 0; j < k; j++) acc += (double)wrow[j] * X[(size_t)b * k + j];
            maxr = std::max(maxr, std::fabs(acc));
            double d = std::fabs(acc - y1[(size_t)b * rows + r]);
            if (!(d <= maxd)) maxd = d;
        }
    }
    EXPECT(maxd / maxr < 1e-5, "matmul %s: normalised error %g", sgl_dtype_name(t), maxd / maxr);
}

/* Runs f(grid rows, nd) twice (exact: n and NULL; bucket: B and &n) on
 * copies of the state and compares every buffer bit for bit. */
template <class S, class F>
static void bucket(const char *what, int n, const S &init, F f) {
    int B = pow2(n) == n ? 2 * n : pow2(n), nd = n;
    S a = init, b = init;
    f(a, n, (const int *)nullptr);
    f(b, B, (const int *)&nd);
    EXPECT(a == b, "%s, %d rows: sized for %d rows != sized exactly", what, n, B);
}

struct st_norm {
    std::vector<float> x, y, w;
    bool operator==(const st_norm &o) const {
        return same_bits(x.data(), o.x.data(), x.size() * 4) && same_bits(y.data(), o.y.data(), y.size() * 4);
    }
};
struct st_kv {
    std::vector<float> q, k, v;
    std::vector<__half> K, V;
    bool operator==(const st_kv &o) const {
        return same_bits(q.data(), o.q.data(), q.size() * 4) && same_bits(k.data(), o.k.data(), k.size() * 4) &&
               same_bits(v.data(), o.v.data(), v.size() * 4) && same_bits(K.data(), o.K.data(), K.size() * 2) &&
               same_bits(V.data(), o.V.data(), V.size() * 2);
    }
};

static void check_row_kernels(int n) {
    const int dim = 72, nh = 4, nkv = 2, hd = 16, kvd = nkv * hd, slots = 300;
    std::vector<int32_t> tok(n), pos(n), wslot(n), lrows(n);
    std::vector<int32_t> perm(slots);
    for (int i = 0; i < slots; i++) perm[i] = i;
    for (int i = slots - 1; i > 0; i--) std::swap(perm[i], perm[urand((uint32_t)i + 1)]);
    for (int r = 0; r < n; r++)
        tok[r] = (int32_t)urand(50), pos[r] = (int32_t)urand(4000), wslot[r] = perm[r], lrows[r] = r;
    st_norm norm{rows_of(n, dim), rows_of(n, dim), rows_of(1, dim)};
    /* embedding (Q8_0 rows) */
    {
        int64_t rb;
        std::vector<uint8_t> E = weights(SGL_DTYPE_Q8_0, 50, 64, &rb);
        st_norm e{std::vector<float>((size_t)n * 64, NAN), {}, {}};
        bucket("embed", n, e, [&](st_norm &s, int g, const int *nd) {
            emu_launch_n(emu_dim3{(unsigned)g, 1, 1}, 256, 0, [&] {
                k_embed<SGL_DTYPE_Q8_0>(E.data(), rb, tok.data(), 64, nd, s.x.data());
            });
        });
    }
    bucket("rmsnorm", n, norm, [&](st_norm &s, int g, const int *nd) {
        emu_launch_n(emu_dim3{(unsigned)g, 1, 1}, NORM_THREADS, 0,
                     [&] { k_rmsnorm(s.y.data(), s.x.data(), s.w.data(), dim, 1e-5f, nd); });
    });
    for (int bias = 0; bias < 2; bias++)
        bucket(bias ? "bias add" : "add", n, norm, [&](st_norm &s, int g, const int *nd) {
            const float *x = bias ? s.w.data() : s.x.data();
            emu_launch_n(emu_dim3{cdiv((int64_t)g * dim, 256), 1, 1}, 256, 0,
                         [&] { k_add(s.y.data(), x, g, nd, dim, bias); });
        });
    bucket("silu*mul", n, norm, [&](st_norm &s, int g, const int *nd) {
        emu_launch_n(emu_dim3{cdiv((int64_t)g * dim, 256), 1, 1}, 256, 0,
                     [&] { k_silu_mul(s.y.data(), s.x.data(), g, nd, dim); });
    });
    for (int withw = 0; withw < 2; withw++)
        bucket(withw ? "add+rmsnorm" : "add (fused, no norm)", n, norm, [&](st_norm &s, int g, const int *nd) {
            emu_launch_n(emu_dim3{(unsigned)g, 1, 1}, NORM_THREADS, 0, [&] {
                k_add_rmsnorm(s.x.data(), s.y.data(), withw ? s.w.data() : nullptr, dim, 1e-5f, nd);
            });
        });
    bucket("gather rows", n, norm, [&](st_norm &s, int g, const int *nd) {
        emu_launch_n(emu_dim3{cdiv((int64_t)g * dim, 256), 1, 1}, 256, 0,
                     [&] { k_gather_rows(s.y.data(), s.x.data(), lrows.data(), g, nd, dim); });
    });
    /* rope (NeoX and llama pairing), K/V store, q/k/v post-processing */
    std::vector<__half> K0((size_t)2 * slots * kvd), V0(K0.size());
    for (auto &h : K0) h = hrand();
    for (auto &h : V0) h = hrand();
    st_kv kv{rows_of(n, nh * hd), rows_of(n, kvd), rows_of(n, kvd), K0, V0};
    std::vector<float> bq = rows_of(1, nh * hd), bk = rows_of(1, kvd), bv = rows_of(1, kvd);
    for (int neox = 0; neox < 2; neox++)
        bucket(neox ? "rope neox" : "rope", n, kv, [&](st_kv &s, int g, const int *nd) {
            emu_launch_n(emu_dim3{cdiv((int64_t)g * 6, 128), 1, 1}, 128, 0, [&] {
                k_rope(s.q.data(), pos.data(), g, nd, nh, hd, 12, 10000.0f, 0.5f, neox);
            });
        });
    bucket("kv store", n, kv, [&](st_kv &s, int g, const int *nd) {
        emu_launch_n(emu_dim3{cdiv((int64_t)g * kvd, 256), 1, 1}, 256, 0, [&] {
            k_kv_store(s.K.data(), s.V.data(), s.k.data(), s.v.data(), wslot.data(), g, nd, kvd,
                       (int64_t)slots * kvd);
        });
    });
    for (int biases = 0; biases < 2; biases++)
        bucket(biases ? "qkv post (biases)" : "qkv post", n, kv, [&](st_kv &s, int g, const int *nd) {
            emu_launch_n(emu_dim3{(unsigned)g, 1, 1}, 128, 0, [&] {
                k_qkv_post(s.q.data(), s.k.data(), s.v.data(), biases ? bq.data() : nullptr,
                           biases ? bk.data() : nullptr, biases ? bv.data() : nullptr, pos.data(),
                           wslot.data(), nh, nkv, hd, hd, 1e6f, 1.0f, biases, s.K.data(), s.V.data(),
                           (int64_t)slots * kvd, nd);
            });
        });
    /* NaN probes: one bad value in the last real row of the second check */
    {
        std::vector<float> a = rows_of(n, dim), b = rows_of(n, kvd);
        b[(size_t)(n - 1) * kvd + 3] = NAN;
        for (int devcount = 0; devcount < 2; devcount++) {
            int flag = 1 << 30, nd = n, g = devcount ? pow2(n) : n;
            probe_set ps{};
            ps.x[0] = a.data(), ps.x[1] = b.data();
            ps.probe[0] = 5, ps.probe[1] = 9;
            if (devcount) ps.w[0] = dim, ps.w[1] = kvd, ps.nd = &nd;
            else ps.n[0] = (int64_t)n * dim, ps.n[1] = (int64_t)n * kvd;
            emu_launch_n(emu_dim3{std::min(cdiv((int64_t)g * dim, 256), 256u), 2, 1}, 256, 0,
                         [&] { k_check_multi(ps, &flag); });
            EXPECT(flag == 9, "NaN probes (%s count), %d rows: flag %d, expected 9",
                   devcount ? "device" : "host", n, flag);
        }
    }
}

int main() {
    emu_init();
    /* odd lengths; tiles crossing the 256-key chunk start; a tile of one
     * row; a context past 512; decode rows among them */
    check(4, 2, 64, {{40, 270}, {17, 250}, {33, 0}, {1, 300}, {3, 5}});
    check(2, 1, 128, {{21, 500}, {1, 0}, {16, 240}});
    check(3, 3, 80, {{18, 7}, {1, 260}});
    check_matmul<SGL_DTYPE_F32>(SGL_DTYPE_F32, 12, 64, 5);
    check_matmul<SGL_DTYPE_Q8_0>(SGL_DTYPE_Q8_0, 9, 96, 40);
    check_matmul<SGL_DTYPE_Q4_1>(SGL_DTYPE_Q4_1, 8, 64, 70);
    check_row_kernels(5);
    check_row_kernels(33);
    emu_done();
    printf("test_cuda_emu: %d failures\n", failures);
    return failures ? 1 : 0;
}
