/* test_att_emu: the CUDA attention kernels (kernels/cuda/att_kernels.cuh)
 * run on the host through a small emulation of the CUDA builtins they use
 * (one OS thread per CUDA thread, real barriers for __syncthreads and
 * __syncwarp, shuffles through a per-warp exchange array), so their
 * indexing and their bit-for-bit agreement are checked on machines without
 * a GPU (suite 'unit'; built with AddressSanitizer where the compiler has
 * it, so an out-of-bounds index fails the test). Checks, for head_dim 64
 * and 128, GQA and odd lengths over scattered slots:
 *  - k_att_extend (tiles of new tokens) against a double-precision
 *    reference, and bit for bit against k_att_chunk + k_att_combine (every
 *    row as a decode row of its own);
 *  - the decode kernels sized for a graph bucket (more rows and chunks in
 *    the grid than in the batch, the row count read through a pointer) give
 *    the same bits as sized exactly.
 * What this cannot show: device timing, the device's expf (the host's is
 * used for both paths alike), warp scheduling effects.
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
using std::max;
using std::min;

enum { EMU_THREADS = 128, EMU_WARPS = EMU_THREADS / 32 };
static pthread_barrier_t emu_block_bar, emu_start, emu_end, emu_warp_bar[EMU_WARPS];
static float emu_xch[EMU_THREADS];
static std::function<void()> emu_body;
static bool emu_quit;
static emu_dim3 emu_cur;
alignas(16) static unsigned char emu_shared[160 * 1024];

static inline void __syncthreads() { pthread_barrier_wait(&emu_block_bar); }
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
        emu_body();
        pthread_barrier_wait(&emu_end);
    }
}

static pthread_t emu_threads[EMU_THREADS];
static void emu_init() {
    pthread_barrier_init(&emu_block_bar, nullptr, EMU_THREADS);
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
/* kernel<<<grid, EMU_THREADS, shm>>>: the blocks one after another. */
static void emu_launch(emu_dim3 grid, size_t shm, std::function<void()> body) {
    if (shm > sizeof emu_shared) {
        fprintf(stderr, "emulation: %zu bytes of shared memory asked\n", shm);
        abort();
    }
    gridDim = grid;
    blockDim.x = EMU_THREADS;
    emu_body = std::move(body);
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                emu_cur.x = x, emu_cur.y = y, emu_cur.z = z;
                pthread_barrier_wait(&emu_start);
                pthread_barrier_wait(&emu_end);
            }
}

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __shared__ static
#define ATT_DYN_SHARED(T, name) T *name = reinterpret_cast<T *>(emu_shared)

#include "kernels/cuda/att_kernels.cuh"

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
    auto decode = [&](int grid_rows, int grid_chunks, const int *nd, std::vector<float> &out) {
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
    decode(n, n_chunks, nullptr, dec);
    /* as in a decode graph: grid for the next power of two of rows and of
     * chunks, the row count through a pointer */
    int bucket_rows = 1, bucket_chunks = 1;
    while (bucket_rows < n) bucket_rows *= 2;
    while (bucket_chunks < n_chunks) bucket_chunks *= 2;
    int nd = n;
    decode(bucket_rows, bucket_chunks, &nd, dec_bucket);

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

int main() {
    emu_init();
    /* odd lengths; tiles crossing the 256-key chunk start; a tile of one
     * row; a context past 512; decode rows among them */
    check(4, 2, 64, {{40, 270}, {17, 250}, {33, 0}, {1, 300}, {3, 5}});
    check(2, 1, 128, {{21, 500}, {1, 0}, {16, 240}});
    check(3, 3, 80, {{18, 7}, {1, 260}});
    emu_done();
    printf("test_att_emu: %d failures\n", failures);
    return failures ? 1 : 0;
}
