/* avx2_matmul: the AVX2/FMA/F16C matmul (compiled with -mavx2 -mfma -mf16c;
 * only reached after the runtime CPU check in kern_cpu.c).
 *
 * Quantized weights: the activations are quantized once per call (per 32
 * values to int8 for Q4_0/Q4_1/Q8_0, per 256 to Q8_K for the K-quants) and
 * multiplied with integer dot products (maddubs/madd). Float weights (F32,
 * F16, BF16) use FMA on f32 activations.
 *
 * Tiling: a microkernel computes RW weight rows x RB activation rows, so each
 * weight block is decoded once for RB activation rows and each activation
 * block loaded once for RW weight rows.
 *
 * Determinism: every (weight row, activation row) pair owns one accumulator
 * and goes through the same instruction sequence whatever the tile shape
 * (RW, RB), the batch or the thread: blocks in order, the same lane layout,
 * the same final horizontal sum. So Y[b][r] is bit-identical for any nb,
 * batch composition and thread count.
 */
#include <immintrin.h>
#include <stdlib.h>

#include "kernels/cpu/kern_internal.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* Sums of 4 adjacent u8*s8 products in each int32 lane. With AVX512-VNNI
 * (this file compiled a second time with KERN_VNNI) one vpdpbusd; else
 * maddubs + madd. Callers keep every pair sum below 2^15, so maddubs never
 * saturates and both forms give the same integers: results are
 * bit-identical between the two builds. */
ALWAYS_INLINE __m256i dot_u8s8(__m256i u, __m256i s) {
#ifdef KERN_VNNI
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}

/* Sum of the 8 lanes in a fixed order. */
ALWAYS_INLINE float hsum8(__m256 v) {
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}

ALWAYS_INLINE float f16_load(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* ==== Q4_0 / Q4_1 / Q8_0 against x8 activations ===========================
 *
 * x8 scratch layout for nb rows of k values (nblk = k / 32 blocks a row):
 *   qs: int8 [nb][nblk][32]
 *   d:  f32  [nb][nblk]        x ~= qs * d
 *   s:  f32  [nblk][nbp]       s = d * sum(qs), transposed so a tile's RB
 *                              rows are adjacent; nbp = nb rounded up + 8,
 *                              padding zeroed.
 */
typedef struct {
    int8_t *qs;
    float *d, *s;
    int64_t nbp;
} x8_layout;

static int64_t x8_nbp(int64_t nb) {
    return (nb + 7) / 8 * 8 + 8;
}

#ifndef KERN_VNNI /* the VNNI build reuses the AVX2 build's prep */
static size_t x8_bytes(int64_t k, int64_t nb) {
    int64_t nblk = k / 32;
    return (size_t)(nb * nblk * 32 + nb * nblk * 4 + nblk * x8_nbp(nb) * 4) + 64;
}

#endif

static x8_layout x8_map(void *xq, int64_t k, int64_t nb) {
    int64_t nblk = k / 32;
    x8_layout l;
    l.qs = xq;
    l.d = (float *)(l.qs + nb * nblk * 32);
    l.s = l.d + nb * nblk;
    l.nbp = x8_nbp(nb);
    return l;
}

/* Max |x| of 32 floats. */
ALWAYS_INLINE float amax32(const float *x) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x)),
                                           _mm256_andnot_ps(sign, _mm256_loadu_ps(x + 8))),
                             _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + 16)),
                                           _mm256_andnot_ps(sign, _mm256_loadu_ps(x + 24))));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    return _mm_cvtss_f32(m4);
}

/* q[0..32) = round-to-nearest-even(x * id), |x * id| <= 127; returns the
 * sum of the ints. */
ALWAYS_INLINE int pack32(const float *x, float id, int8_t *q) {
    __m256 vid = _mm256_set1_ps(id);
    __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x), vid));
    __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8), vid));
    __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 16), vid));
    __m256i i3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 24), vid));
    __m256i sum = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
    /* packs work per 128-bit lane; the permute restores element order */
    __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
    p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)q, p);
    return _mm_cvtsi128_si32(s4);
}

#ifndef KERN_VNNI
static void x8_prep(const float *X, int64_t k, int64_t nb, void *xq, int64_t b0, int64_t b1) {
    x8_layout l = x8_map(xq, k, nb);
    int64_t nblk = k / 32;
    for (int64_t b = b0; b < b1; b++)
        for (int64_t i = 0; i < nblk; i++) {
            const float *x = X + b * k + i * 32;
            float amax = amax32(x), d = amax / 127.0f, id = amax > 0 ? 127.0f / amax : 0.0f;
            int sum = pack32(x, id, l.qs + (b * nblk + i) * 32);
            l.d[b * nblk + i] = d;
            l.s[i * l.nbp + b] = d * (float)sum;
        }
    if (b1 == nb)
        for (int64_t i = 0; i < nblk; i++)
            for (int64_t b = nb; b < l.nbp; b++)
                l.s[i * l.nbp + b] = 0;
}
#endif

enum { KIND_Q4_0, KIND_Q4_1, KIND_Q8_0 };

#ifndef X8_PF
#define X8_PF 384 /* weight prefetch distance in bytes for 1-row tiles */
#endif

/* One RW x RB tile: weight rows r..r+RW, activation rows b..b+RB. */
ALWAYS_INLINE void x8_tile(const int kind, const int RW, const int RB, const uint8_t *W, size_t wrb,
                           int64_t nblk, const x8_layout *l, int64_t b, float *Y, int64_t rows,
                           int64_t r) {
    const int bb = kind == KIND_Q4_0 ? 18 : kind == KIND_Q4_1 ? 20 : 34;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256 acc[4][8];
    __m256 accm[4];
#pragma GCC unroll 4
    for (int i = 0; i < RW; i++) {
        accm[i] = _mm256_setzero_ps();
#pragma GCC unroll 8
        for (int j = 0; j < RB; j++)
            acc[i][j] = _mm256_setzero_ps();
    }
    for (int64_t blk = 0; blk < nblk; blk++) {
        __m256i w[4], wa[4];
        __m256 dwb[4], mwb[4];
#pragma GCC unroll 4
        for (int i = 0; i < RW; i++) {
            const uint8_t *p = W + (size_t)(r + i) * wrb + (size_t)blk * bb;
            /* With one activation row the weights stream from memory with
             * little work per byte; prefetching a few blocks ahead measured
             * ~1.6x faster on the 30 MB output head. Prefetches never fault. */
            if (RB == 1) _mm_prefetch((const char *)p + X8_PF, _MM_HINT_T0);
            /* d (and m for Q4_1) converted and broadcast in vector registers */
            uint32_t h = 0;
            memcpy(&h, p, kind == KIND_Q4_1 ? 4 : 2);
            __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128((int)h));
            dwb[i] = _mm256_broadcastss_ps(dm);
            if (kind == KIND_Q8_0) {
                w[i] = _mm256_loadu_si256((const __m256i *)(p + 2));
                wa[i] = _mm256_abs_epi8(w[i]);
            } else {
                mwb[i] = kind == KIND_Q4_0 ? _mm256_mul_ps(dwb[i], _mm256_set1_ps(-8.0f))
                                           : _mm256_broadcastss_ps(_mm_movehdup_ps(dm));
                __m128i t = _mm_loadu_si128((const __m128i *)(p + (kind == KIND_Q4_0 ? 2 : 4)));
                w[i] = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), m4);
            }
        }
#pragma GCC unroll 8
        for (int j = 0; j < RB; j++) {
            __m256i x = _mm256_loadu_si256((const __m256i *)(l->qs + ((b + j) * nblk + blk) * 32));
            /* a broadcast from memory costs only a load */
            __m256 dx = _mm256_broadcast_ss(l->d + (b + j) * nblk + blk);
#pragma GCC unroll 4
            for (int i = 0; i < RW; i++) {
                __m256i p32 = kind == KIND_Q8_0 ? dot_u8s8(wa[i], _mm256_sign_epi8(x, w[i]))
                                                : dot_u8s8(w[i], x);
                __m256 p = _mm256_cvtepi32_ps(p32);
                acc[i][j] = _mm256_fmadd_ps(p, _mm256_mul_ps(dwb[i], dx), acc[i][j]);
            }
        }
        if (kind != KIND_Q8_0) {
            /* min term m_w * s_x, one lane per activation row of the tile */
            __m256 s = _mm256_loadu_ps(l->s + blk * l->nbp + b);
#pragma GCC unroll 4
            for (int i = 0; i < RW; i++)
                accm[i] = _mm256_fmadd_ps(mwb[i], s, accm[i]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < RW; i++) {
        float m[8];
        _mm256_storeu_ps(m, accm[i]);
#pragma GCC unroll 8
        for (int j = 0; j < RB; j++) {
            float y = hsum8(acc[i][j]);
            if (kind != KIND_Q8_0) y += m[j];
            Y[(b + j) * rows + r + i] = y;
        }
    }
}

/* Walks rows [r0, r1) x all nb activation rows in tiles: 4x1 for a single
 * activation row (more independent accumulators), else X8_TW x X8_TB, with
 * smaller tiles at the edges. Activation rows go in chunks of 64 so a chunk of the
 * quantized activations stays in cache while the weight rows stream by. */
#ifndef X8_TW
#define X8_TW 2
#endif
#ifndef X8_TB
#define X8_TB 8
#endif
#define X8_T(K, RW, RB) x8_tile(K, RW, RB, W, wrb, nblk, l, b, Y, rows, r)
// clang-format off
#define X8_ROWS(NAME, KIND, BB)                                                                    \
    static void NAME##_tile(int rw, int rb, const uint8_t *W, size_t wrb, int64_t nblk,            \
                            const x8_layout *l, int64_t b, float *Y, int64_t rows, int64_t r) {    \
        switch (rw * 16 + rb) {                                                                    \
        case 65: X8_T(KIND, 4, 1); break;                                                          \
        case 40: X8_T(KIND, 2, 8); break;                                                          \
        case 39: X8_T(KIND, 2, 7); break;                                                          \
        case 38: X8_T(KIND, 2, 6); break;                                                          \
        case 37: X8_T(KIND, 2, 5); break;                                                          \
        case 36: X8_T(KIND, 2, 4); break;                                                          \
        case 35: X8_T(KIND, 2, 3); break;                                                          \
        case 34: X8_T(KIND, 2, 2); break;                                                          \
        case 33: X8_T(KIND, 2, 1); break;                                                          \
        case 24: X8_T(KIND, 1, 8); break;                                                          \
        case 23: X8_T(KIND, 1, 7); break;                                                          \
        case 22: X8_T(KIND, 1, 6); break;                                                          \
        case 21: X8_T(KIND, 1, 5); break;                                                          \
        case 20: X8_T(KIND, 1, 4); break;                                                          \
        case 19: X8_T(KIND, 1, 3); break;                                                          \
        case 18: X8_T(KIND, 1, 2); break;                                                          \
        default: X8_T(KIND, 1, 1); break;                                                          \
        }                                                                                          \
    }                                                                                              \
    static void NAME(const void *Wv, int64_t rows, int64_t k, const float *X, const void *xq,      \
                     int64_t nb, float *Y, int64_t r0, int64_t r1) {                               \
        (void)X;                                                                                   \
        const uint8_t *W = Wv;                                                                     \
        int64_t nblk = k / 32;                                                                     \
        size_t wrb = (size_t)nblk * BB;                                                            \
        x8_layout l = x8_map((void *)xq, k, nb);                                                   \
        int tw = nb == 1 ? 4 : X8_TW, tb = nb == 1 ? 1 : X8_TB;                                    \
        for (int64_t bc = 0; bc < nb; bc += 64) {                                                  \
            int64_t be = bc + 64 < nb ? bc + 64 : nb;                                              \
            for (int64_t r = r0; r < r1;) {                                                        \
                int rw = r + tw <= r1 ? tw : 1;                                                    \
                for (int64_t b = bc; b < be; b += tb)                                              \
                    NAME##_tile(rw, (int)(be - b < tb ? be - b : tb), W, wrb, nblk, &l, b, Y,      \
                                rows, r);                                                          \
                r += rw;                                                                           \
            }                                                                                      \
        }                                                                                          \
    }
// clang-format on

X8_ROWS(mm_q4_0, KIND_Q4_0, 18)
X8_ROWS(mm_q4_1, KIND_Q4_1, 20)
X8_ROWS(mm_q8_0, KIND_Q8_0, 34)

/* ==== K-quants against Q8_K activations ====================================
 *
 * Each weight super-block is first unpacked (once per tile) into a common
 * form: q[256] unsigned, an int16 scale per 16 values and an int16 "min" per
 * 16 values, so that x = d * sc * q - dmin * mn. Q6_K fits with
 * q' = q + 32 >= 0, mn = 32 * sc, dmin = d. The integer sums over a
 * super-block are exact in int32; one FMA per super-block and pair.
 */
typedef struct {
    __m256i q[8];  /* 8 chunks of 32 values */
    __m256i sc[8]; /* int16 scales for the 16 pair-sums of each chunk */
    __m256i mn;    /* int16 min per group of 16 */
    float d, dmin;
} kq_unpacked;

ALWAYS_INLINE void unpack_q4_k_q5_k(const int is_q5, const uint8_t *p, kq_unpacked *u) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    const uint8_t *scales = p + 4, *qh = p + 16, *qs = p + (is_q5 ? 48 : 16);
    u->d = f16_load(p);
    u->dmin = f16_load(p + 2);
    int16_t mn16[16];
    for (int j = 0; j < 8; j++) {
        uint8_t sc, mn;
        kq_scale_min_k4(j, scales, &sc, &mn);
        u->sc[j] = _mm256_set1_epi16(sc);
        mn16[2 * j] = mn16[2 * j + 1] = mn;
    }
    u->mn = _mm256_loadu_si256((const __m256i *)mn16);
    __m256i h = is_q5 ? _mm256_loadu_si256((const __m256i *)qh) : _mm256_setzero_si256();
    for (int c = 0; c < 4; c++) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
        __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
        if (is_q5) {
            __m256i h0 = _mm256_and_si256(_mm256_srli_epi16(h, 2 * c), one);
            __m256i h1 = _mm256_and_si256(_mm256_srli_epi16(h, 2 * c + 1), one);
            lo = _mm256_or_si256(lo, _mm256_slli_epi16(h0, 4));
            hi = _mm256_or_si256(hi, _mm256_slli_epi16(h1, 4));
        }
        u->q[2 * c] = lo;
        u->q[2 * c + 1] = hi;
    }
}

ALWAYS_INLINE void unpack_q6_k(const uint8_t *p, kq_unpacked *u) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(3);
    const kq_block_q6_k *b = (const kq_block_q6_k *)p;
    u->d = f16_load(p + 208);
    u->dmin = u->d;
    __m256i s16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales));
    u->mn = _mm256_slli_epi16(s16, 5);
    int16_t sc[16];
    _mm256_storeu_si256((__m256i *)sc, s16);
    for (int c = 0; c < 8; c++)
        u->sc[c] = _mm256_set_m128i(_mm_set1_epi16(sc[2 * c + 1]), _mm_set1_epi16(sc[2 * c]));
    for (int h = 0; h < 2; h++) {
        __m256i A = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h));
        __m256i B = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32));
        __m256i H = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
        u->q[4 * h + 0] =
            _mm256_or_si256(_mm256_and_si256(A, m4), _mm256_slli_epi16(_mm256_and_si256(H, m2), 4));
        u->q[4 * h + 1] =
            _mm256_or_si256(_mm256_and_si256(B, m4),
                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(H, 2), m2), 4));
        u->q[4 * h + 2] =
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(A, 4), m4),
                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(H, 4), m2), 4));
        u->q[4 * h + 3] =
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(B, 4), m4),
                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(H, 6), m2), 4));
    }
}

enum { KIND_Q4_K, KIND_Q5_K, KIND_Q6_K };

#ifndef KERN_VNNI
static size_t q8k_bytes(int64_t k, int64_t nb) {
    return (size_t)(nb * (k / 256)) * sizeof(kq_block_q8_k);
}

static void q8k_prep(const float *X, int64_t k, int64_t nb, void *xq, int64_t b0, int64_t b1) {
    (void)nb;
    int64_t nsb = k / 256;
    kq_block_q8_k *y = xq;
    for (int64_t b = b0; b < b1; b++)
        for (int64_t i = 0; i < nsb; i++) {
            kq_block_q8_k *o = y + b * nsb + i;
            const float *x = X + b * k + i * 256;
            float amax = 0;
            for (int c = 0; c < 8; c++) {
                float m = amax32(x + 32 * c);
                amax = m > amax ? m : amax;
            }
            float d = amax / 127.0f, id = amax > 0 ? 127.0f / amax : 0.0f;
            for (int c = 0; c < 8; c++)
                pack32(x + 32 * c, id, o->qs + 32 * c);
            o->d = d;
            for (int g = 0; g < 16; g++) {
                int s = 0;
                for (int e = 0; e < 16; e++)
                    s += o->qs[16 * g + e];
                o->bsums[g] = (int16_t)s;
            }
        }
}
#endif

ALWAYS_INLINE void kq_tile(const int kind, const int RW, const int RB, const uint8_t *W, size_t wrb,
                           int64_t nsb, const kq_block_q8_k *xq, int64_t b, float *Y, int64_t rows,
                           int64_t r) {
    const int bb = kind == KIND_Q4_K ? 144 : kind == KIND_Q5_K ? 176 : 210;
    __m256 acc[2][8];
#pragma GCC unroll 2
    for (int i = 0; i < RW; i++)
#pragma GCC unroll 8
        for (int j = 0; j < RB; j++)
            acc[i][j] = _mm256_setzero_ps();
    kq_unpacked u[2];
    for (int64_t sb = 0; sb < nsb; sb++) {
#pragma GCC unroll 2
        for (int i = 0; i < RW; i++) {
            const uint8_t *p = W + (size_t)(r + i) * wrb + (size_t)sb * bb;
            if (kind == KIND_Q6_K)
                unpack_q6_k(p, &u[i]);
            else
                unpack_q4_k_q5_k(kind == KIND_Q5_K, p, &u[i]);
        }
#pragma GCC unroll 8
        for (int j = 0; j < RB; j++) {
            const kq_block_q8_k *y = xq + (b + j) * nsb + sb;
            __m256i bs = _mm256_loadu_si256((const __m256i *)y->bsums);
#pragma GCC unroll 2
            for (int i = 0; i < RW; i++) {
                __m256i sumi = _mm256_setzero_si256();
#pragma GCC unroll 8
                for (int c = 0; c < 8; c++) {
                    __m256i x = _mm256_loadu_si256((const __m256i *)(y->qs + 32 * c));
                    __m256i p16 = _mm256_maddubs_epi16(u[i].q[c], x);
#ifdef KERN_VNNI
                    sumi = _mm256_dpwssd_epi32(sumi, p16, u[i].sc[c]); /* = madd + add */
#else
                    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p16, u[i].sc[c]));
#endif
                }
                __m256 mt = _mm256_cvtepi32_ps(_mm256_madd_epi16(u[i].mn, bs));
                acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(u[i].d * y->d),
                                            acc[i][j]);
                acc[i][j] = _mm256_fmadd_ps(mt, _mm256_set1_ps(-u[i].dmin * y->d), acc[i][j]);
            }
        }
    }
#pragma GCC unroll 2
    for (int i = 0; i < RW; i++)
#pragma GCC unroll 8
        for (int j = 0; j < RB; j++)
            Y[(b + j) * rows + r + i] = hsum8(acc[i][j]);
}

#define KQ_T(K, RW, RB) kq_tile(K, RW, RB, W, wrb, nsb, xq, b, Y, rows, r)
// clang-format off
#define KQ_ROWS(NAME, KIND, BB)                                                                    \
    static void NAME##_t(int rw, int rb, const uint8_t *W, size_t wrb, int64_t nsb,                \
                         const kq_block_q8_k *xq, int64_t b, float *Y, int64_t rows, int64_t r) {  \
        switch (rw * 16 + rb) {                                                                    \
        case 40: KQ_T(KIND, 2, 8); break;                                                          \
        case 39: KQ_T(KIND, 2, 7); break;                                                          \
        case 38: KQ_T(KIND, 2, 6); break;                                                          \
        case 37: KQ_T(KIND, 2, 5); break;                                                          \
        case 36: KQ_T(KIND, 2, 4); break;                                                          \
        case 35: KQ_T(KIND, 2, 3); break;                                                          \
        case 34: KQ_T(KIND, 2, 2); break;                                                          \
        case 33: KQ_T(KIND, 2, 1); break;                                                          \
        case 24: KQ_T(KIND, 1, 8); break;                                                          \
        case 23: KQ_T(KIND, 1, 7); break;                                                          \
        case 22: KQ_T(KIND, 1, 6); break;                                                          \
        case 21: KQ_T(KIND, 1, 5); break;                                                          \
        case 20: KQ_T(KIND, 1, 4); break;                                                          \
        case 19: KQ_T(KIND, 1, 3); break;                                                          \
        case 18: KQ_T(KIND, 1, 2); break;                                                          \
        default: KQ_T(KIND, 1, 1); break;                                                          \
        }                                                                                          \
    }                                                                                              \
    static void NAME(const void *Wv, int64_t rows, int64_t k, const float *X, const void *xq,      \
                     int64_t nb, float *Y, int64_t r0, int64_t r1) {                               \
        (void)X;                                                                                   \
        int64_t nsb = k / 256;                                                                     \
        size_t wrb = (size_t)nsb * BB;                                                             \
        for (int64_t bc = 0; bc < nb; bc += 64) {                                                  \
            int64_t be = bc + 64 < nb ? bc + 64 : nb;                                              \
            for (int64_t r = r0; r < r1; r += 2)                                                   \
                for (int64_t b = bc; b < be; b += 8)                                               \
                    NAME##_t(r + 2 <= r1 ? 2 : 1, (int)(be - b < 8 ? be - b : 8), Wv, wrb, nsb,    \
                             xq, b, Y, rows, r);                                                   \
        }                                                                                          \
    }
// clang-format on

KQ_ROWS(mm_q4_k, KIND_Q4_K, 144)
KQ_ROWS(mm_q5_k, KIND_Q5_K, 176)
KQ_ROWS(mm_q6_k, KIND_Q6_K, 210)

#ifndef KERN_VNNI
/* ==== F32 / F16 / BF16 weights ============================================ */

enum { KIND_F32, KIND_F16, KIND_BF16 };

ALWAYS_INLINE __m256 fw_load8(const int kind, const uint8_t *row, int64_t e) {
    if (kind == KIND_F32) return _mm256_loadu_ps((const float *)row + e);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)row + e));
    if (kind == KIND_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

ALWAYS_INLINE float fw_load1(const int kind, const uint8_t *row, int64_t e) {
    if (kind == KIND_F32) return ((const float *)row)[e];
    uint16_t h;
    memcpy(&h, row + 2 * e, 2);
    return kind == KIND_F16 ? _cvtsh_ss(h) : kq_bf16_to_f32(h);
}

ALWAYS_INLINE void fw_tile(const int kind, const int RW, const int RB, const uint8_t *W, size_t wrb,
                           int64_t k, const float *X, int64_t b, float *Y, int64_t rows,
                           int64_t r) {
    __m256 acc[4][4];
#pragma GCC unroll 4
    for (int i = 0; i < RW; i++)
#pragma GCC unroll 4
        for (int j = 0; j < RB; j++)
            acc[i][j] = _mm256_setzero_ps();
    int64_t k8 = k / 8 * 8;
    for (int64_t e = 0; e < k8; e += 8) {
        __m256 w[4];
#pragma GCC unroll 4
        for (int i = 0; i < RW; i++)
            w[i] = fw_load8(kind, W + (size_t)(r + i) * wrb, e);
#pragma GCC unroll 4
        for (int j = 0; j < RB; j++) {
            __m256 x = _mm256_loadu_ps(X + (b + j) * k + e);
#pragma GCC unroll 4
            for (int i = 0; i < RW; i++)
                acc[i][j] = _mm256_fmadd_ps(w[i], x, acc[i][j]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < RW; i++)
#pragma GCC unroll 4
        for (int j = 0; j < RB; j++) {
            float t = 0;
            for (int64_t e = k8; e < k; e++)
                t += fw_load1(kind, W + (size_t)(r + i) * wrb, e) * X[(b + j) * k + e];
            Y[(b + j) * rows + r + i] = hsum8(acc[i][j]) + t;
        }
}

// clang-format off
#define FW_ROWS(NAME, KIND, ES)                                                                    \
    static void NAME##_t(int rw, int rb, const uint8_t *W, size_t wrb, int64_t k, const float *X,  \
                         int64_t b, float *Y, int64_t rows, int64_t r) {                           \
        switch (rw * 8 + rb) {                                                                     \
        case 33: fw_tile(KIND, 4, 1, W, wrb, k, X, b, Y, rows, r); break;                          \
        case 20: fw_tile(KIND, 2, 4, W, wrb, k, X, b, Y, rows, r); break;                          \
        case 19: fw_tile(KIND, 2, 3, W, wrb, k, X, b, Y, rows, r); break;                          \
        case 18: fw_tile(KIND, 2, 2, W, wrb, k, X, b, Y, rows, r); break;                          \
        case 17: fw_tile(KIND, 2, 1, W, wrb, k, X, b, Y, rows, r); break;                          \
        case 12: fw_tile(KIND, 1, 4, W, wrb, k, X, b, Y, rows, r); break;                          \
        case 11: fw_tile(KIND, 1, 3, W, wrb, k, X, b, Y, rows, r); break;                          \
        case 10: fw_tile(KIND, 1, 2, W, wrb, k, X, b, Y, rows, r); break;                          \
        default: fw_tile(KIND, 1, 1, W, wrb, k, X, b, Y, rows, r); break;                          \
        }                                                                                          \
    }                                                                                              \
    static void NAME(const void *Wv, int64_t rows, int64_t k, const float *X, const void *xq,      \
                     int64_t nb, float *Y, int64_t r0, int64_t r1) {                               \
        (void)xq;                                                                                  \
        size_t wrb = (size_t)k * ES;                                                               \
        if (nb == 1) {                                                                             \
            int64_t r = r0;                                                                        \
            for (; r + 4 <= r1; r += 4)                                                            \
                NAME##_t(4, 1, Wv, wrb, k, X, 0, Y, rows, r);                                      \
            for (; r < r1; r++)                                                                    \
                NAME##_t(1, 1, Wv, wrb, k, X, 0, Y, rows, r);                                      \
            return;                                                                                \
        }                                                                                          \
        for (int64_t bc = 0; bc < nb; bc += 32) {                                                  \
            int64_t be = bc + 32 < nb ? bc + 32 : nb;                                              \
            for (int64_t r = r0; r < r1; r += 2)                                                   \
                for (int64_t b = bc; b < be; b += 4)                                               \
                    NAME##_t(r + 2 <= r1 ? 2 : 1, (int)(be - b < 4 ? be - b : 4), Wv, wrb, k, X,   \
                             b, Y, rows, r);                                                       \
        }                                                                                          \
    }
// clang-format on

FW_ROWS(mm_f32, KIND_F32, 4)
FW_ROWS(mm_f16, KIND_F16, 2)
FW_ROWS(mm_bf16, KIND_BF16, 2)

#endif /* KERN_VNNI */

#ifdef KERN_VNNI
/* Overrides the quantized entries with the VNNI build of the same code. */
void kvnni_mm_fill(kern_ops *ops) {
    ops->name = "avx2-vnni";
    ops->mm[SGL_DTYPE_Q4_0].rows = mm_q4_0;
    ops->mm[SGL_DTYPE_Q4_1].rows = mm_q4_1;
    ops->mm[SGL_DTYPE_Q8_0].rows = mm_q8_0;
    ops->mm[SGL_DTYPE_Q4_K].rows = mm_q4_k;
    ops->mm[SGL_DTYPE_Q5_K].rows = mm_q5_k;
    ops->mm[SGL_DTYPE_Q6_K].rows = mm_q6_k;
}
#else
void kavx2_mm_fill(kern_ops *ops) {
    ops->mm[SGL_DTYPE_Q4_0] = (kern_mm_impl){mm_q4_0, x8_prep, x8_bytes, 4};
    ops->mm[SGL_DTYPE_Q4_1] = (kern_mm_impl){mm_q4_1, x8_prep, x8_bytes, 4};
    ops->mm[SGL_DTYPE_Q8_0] = (kern_mm_impl){mm_q8_0, x8_prep, x8_bytes, 4};
    ops->mm[SGL_DTYPE_Q4_K] = (kern_mm_impl){mm_q4_k, q8k_prep, q8k_bytes, 2};
    ops->mm[SGL_DTYPE_Q5_K] = (kern_mm_impl){mm_q5_k, q8k_prep, q8k_bytes, 2};
    ops->mm[SGL_DTYPE_Q6_K] = (kern_mm_impl){mm_q6_k, q8k_prep, q8k_bytes, 2};
    ops->mm[SGL_DTYPE_F32] = (kern_mm_impl){mm_f32, NULL, NULL, 4};
    ops->mm[SGL_DTYPE_F16] = (kern_mm_impl){mm_f16, NULL, NULL, 4};
    ops->mm[SGL_DTYPE_BF16] = (kern_mm_impl){mm_bf16, NULL, NULL, 4};
}
#endif
