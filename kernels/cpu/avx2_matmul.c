/* avx2_matmul: the AVX2/FMA/F16C matmul (compiled with -mavx2 -mfma -mf16c;
 * only reached after the runtime CPU check in kern_cpu.c; built a second
 * time with AVX512-VNNI/VL for vpdpwssd on 256-bit vectors).
 *
 * Quantized weights (Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K): the activations
 * are quantized once per call to int16 per block of 32 values ("x16", below)
 * and multiplied with exact integer dot products (vpdpwssd, or vpmaddwd +
 * vpaddd), the weights in the 8-row interleaved "R8" layout (repacked at
 * load by kern_repack, or a few blocks at a time here for a plain matrix),
 * widened to int16. int16 rather than int8 activations: 8-bit rounding
 * noise (amax/254 per value) added up over the 30 layers of the default
 * model and flipped near-tied greedy choices against the float reference;
 * int16 cuts it 258x, at half the products per instruction. Float weights
 * (F32, F16, BF16) use FMA on f32 activations.
 *
 * Determinism: every (weight row, activation row) pair owns one f32 lane
 * and goes through the same instruction sequence whatever the tile, the
 * batch, the thread or the weight layout: blocks in order, one exact
 * integer dot product per block, then the same scaling steps. So Y[b][r] is
 * bit-identical for any nb, batch composition and thread count.
 */
#include <float.h>
#include <immintrin.h>
#include <stdlib.h>

#include "kernels/cpu/kern_internal.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* Integer dot product of 32 int16 pairs (w0.x0 and w1.x1, 16 pairs each) as
 * 8 int32 lanes, each the sum of 4 products. With AVX512-VNNI (this file
 * compiled a second time with KERN_VNNI) vpmaddwd + vpdpwssd, else two
 * vpmaddwd + add. vpmaddwd is exact unless both products of a pair are
 * (-32768)^2, impossible here as |x| <= 32767; every lane sum stays below
 * 2^31 (see "overflow" below), so vpdpwssd never wraps and both forms give
 * the same integers: results are bit-identical between the two builds. */
ALWAYS_INLINE __m256i dot_i16(__m256i w0, __m256i x0, __m256i w1, __m256i x1) {
#ifdef KERN_VNNI
    return _mm256_dpwssd_epi32(_mm256_madd_epi16(w0, x0), w1, x1);
#else
    return _mm256_add_epi32(_mm256_madd_epi16(w0, x0), _mm256_madd_epi16(w1, x1));
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

/* ==== x16 activations =======================================================
 *
 * Per block of 32 values (a quantized block; a K-quant super-block is 8 of
 * them, aligned with its 32-value sub-blocks): x ~= d * q, q int16,
 * d = amax / 32767, q = round-to-nearest-even(x * 32767 / amax), so
 * |x - d q| <= amax / 65534 (+ f32 rounding of d and x * id).
 *
 * Overflow: an exact block dot product sums 32 products w * q (Q6_K: 16)
 * with |q| <= 32767:
 *   Q4_0/Q4_1/Q4_K  w = 0..15          32 * 15  * 32767 =  15.7e6
 *   Q5_K            w = 0..31          32 * 31  * 32767 =  32.5e6
 *   Q8_0            w = int8           32 * 128 * 32767 = 134.2e6
 *   Q6_K            w = q - 32, -32..31  16 * 32  * 32767 =  16.8e6
 * all below 2^31 (scales are applied in f32 afterwards). The conversion to
 * f32 is exact up to 2^24 and rounds by at most 2^-24 relative above, covered
 * by the f32 term of the accuracy bound in kernels.h.
 *
 * Scratch layout for nb rows of k values (nblk = k / 32 blocks a row):
 *   qs: int16 [nblk][nb][32]   block-major: a tile's rows of one block are
 *                              adjacent; bs = nb * 32 is the block stride
 *   dt: f32   [nblk][nbp]  d; nbp = nb rounded up + 8 so 8-lane loads
 *                          from any row stay inside, padding zeroed
 *   st: f32   [nblk][nbp]  s = d * sum(q) (min terms)
 */
typedef struct {
    int16_t *qs;
    float *dt, *st;
    int64_t nbp, bs;
} x16_layout;

static int64_t x16_nbp(int64_t nb) {
    return (nb + 7) / 8 * 8 + 8;
}

static x16_layout x16_map(void *xq, int64_t k, int64_t nb) {
    int64_t nblk = k / 32;
    x16_layout l;
    l.qs = xq;
    l.bs = nb * 32;
    l.nbp = x16_nbp(nb);
    l.dt = (float *)(l.qs + nblk * nb * 32);
    l.st = l.dt + nblk * l.nbp;
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

#ifndef KERN_VNNI /* the VNNI build reuses the AVX2 build's prep */
static size_t x16_bytes(int64_t k, int64_t nb) {
    int64_t nblk = k / 32;
    return (size_t)(nblk * nb * 64 + 2 * nblk * x16_nbp(nb) * 4) + 64;
}

/* q[0..32) = round-to-nearest-even(x * id) as int16, in element order;
 * returns the sum of the ints. |x * id| <= 32767 * (1 + 2^-22), which rounds
 * to at most 32767 (packs would saturate anyway). */
ALWAYS_INLINE int pack32_i16(const float *x, float id, int16_t *q) {
    __m256 vid = _mm256_set1_ps(id);
    __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x), vid));
    __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8), vid));
    __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 16), vid));
    __m256i i3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 24), vid));
    __m256i sum = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
    /* packs works per 128-bit lane; the 64-bit permute restores the order */
    __m256i p0 = _mm256_permute4x64_epi64(_mm256_packs_epi32(i0, i1), 0xd8);
    __m256i p1 = _mm256_permute4x64_epi64(_mm256_packs_epi32(i2, i3), 0xd8);
    _mm256_storeu_si256((__m256i *)q, p0);
    _mm256_storeu_si256((__m256i *)(q + 16), p1);
    return _mm_cvtsi128_si32(s4);
}

/* Quantizes rows [b0, b1) of X (the layout above). Writes block by block
 * within chunks of 16 rows: a row's blocks are nb * 64 bytes apart, for
 * nb = 512 a multiple of 4 KiB, so walking them row by row hit one L1 set
 * and made the quantization ~5% of prefill time; whole blocks over all rows
 * read X from far in memory when it exceeds L2. */
static void x16_prep(const float *X, int64_t k, int64_t nb, void *xq, int64_t b0, int64_t b1) {
    x16_layout l = x16_map(xq, k, nb);
    int64_t nblk = k / 32;
    const int64_t chunk = 16;
    for (int64_t bc = b0; bc < b1; bc += chunk)
        for (int64_t i = 0; i < nblk; i++)
            for (int64_t b = bc; b < b1 && b < bc + chunk; b++) {
                const float *x = X + b * k + i * 32;
                float amax = amax32(x);
                /* a block below 1e-30 (where 32767 / amax could overflow) is
                 * taken as zeros */
                float d = amax >= 1e-30f ? amax / 32767.0f : 0.0f;
                float id = amax >= 1e-30f ? 32767.0f / amax : 0.0f;
                int sum = pack32_i16(x, id, l.qs + i * l.bs + b * 32);
                l.dt[i * l.nbp + b] = d;
                l.st[i * l.nbp + b] = d * (float)sum; /* |sum| <= 32 * 32767 < 2^24: exact */
            }
    if (b1 == nb)
        for (int64_t i = 0; i < nblk; i++)
            for (int64_t b = nb; b < l.nbp; b++)
                l.st[i * l.nbp + b] = l.dt[i * l.nbp + b] = 0;
}
#endif

/* ==== Q4_0 / Q4_1 / Q8_0: the R8 layout ====================================
 *
 * These types are multiplied in the 8-row interleaved layout of
 * kern_internal.h: weights repacked at load (kern_repack: types *_R8) are
 * used as they are; a matrix in the plain GGUF layout is repacked here a few
 * blocks at a time into a stack buffer (r8_pack) and goes through the same
 * microkernel, so both layouts give the same bits.
 *
 * Arithmetic, for weight row r, activation row b, block k (in order, from
 * acc = 0): P = the exact int32 dot product of the block's 32 int16 pairs
 * (|P| <= 32 * 128 * 32767 < 2^31), then
 *   acc = fma((float)P, d_w * d_x, acc)
 *   acc = fma(m_w, s_x, acc)          (Q4_0: m_w = -8 d_w; Q4_1: m_w = m)
 * with s_x = d_x * sum(q_x) from the activation prep; Y = acc. Lane i of a
 * vector is weight row 8g + i, so the 8 rows of a group take the same
 * instruction sequence side by side, and every (row, activation row) pair
 * goes through the same operations whatever the tile, the batch or the
 * thread: Y[b][r] is bit-identical for any nb, batch composition, thread
 * count and weight layout.
 *
 * Per block and activation row: 16 vpdpwssd (8 rows x 32 products) against
 * the activation pairs broadcast from memory, then one convert, one multiply
 * and two FMAs for all 8 rows; the weights are widened once per tile of RB
 * activation rows. */

enum { KIND_Q4_0, KIND_Q4_1, KIND_Q8_0, KIND_Q4_K_R8, KIND_Q5_K_R8, KIND_Q6_K_R8 };

/* Bytes of a group's packed block (kern_internal.h: one 32-value block, or
 * a K-quant super-block of 8), the same as r8_group_block_bytes. */
ALWAYS_INLINE size_t r8_pbb(const int kind) {
    return kind == KIND_Q4_0 ? 144 : kind == KIND_Q4_1 ? 160 : kind == KIND_Q8_0 ? 272
         : kind == KIND_Q4_K_R8 ? 1184 : kind == KIND_Q5_K_R8 ? 1440 : 1680;
}

/* The packed block holding 32-value block t of a group (G: its first). */
ALWAYS_INLINE const uint8_t *r8_packed(const int kind, const uint8_t *G, int64_t t) {
    return kind >= KIND_Q4_K_R8 ? G + (size_t)(t / 8) * r8_pbb(kind) : G + (size_t)t * r8_pbb(kind);
}

/* The 8 rows' codes of block t (chunks of 16 bytes; for Q5_K the 5th bits
 * follow at +128, for Q6_K the top bits). */
ALWAYS_INLINE const uint8_t *r8_codes(const int kind, const uint8_t *G, int64_t t) {
    const uint8_t *p = r8_packed(kind, G, t);
    const int sub = (int)(t % 8);
    return kind == KIND_Q4_1 ? p + 32 : kind == KIND_Q4_K_R8 ? p + 160 + 128 * sub
         : kind == KIND_Q5_K_R8 ? p + 160 + 160 * sub : kind == KIND_Q6_K_R8 ? p + 144 + 192 * sub
                                : p + 16;
}

/* Software prefetch distance along a group's packed blocks (bytes). A
 * group's blocks are contiguous and groups follow each other, so a thread
 * streams its rows front to back, yet the hardware prefetcher alone left
 * batch-1 decode well short of the machine's read bandwidth. 2 KiB ahead:
 * batch-1 decode of a 1B-shaped Q4_0 model about 20% faster; on weights far
 * larger than the caches (bench_kernels --cold) Q4_0 / Q4_K 5-30% faster at
 * batch 1 and about 15% at batch 8; 4 KiB did no better than 2 KiB. */
#define R8_PF_BYTES 2048

/* Prefetches the bytes R8_PF_BYTES past 32-value block t of a group (G: its
 * first packed block); a K-quant super-block is taken as 8 equal parts. A
 * prefetch never faults, so reading past the matrix is harmless. Only the
 * first tile of r8_drive's 64 activation rows (b % 64 == 0) prefetches:
 * the other tiles find the group in cache. */
ALWAYS_INLINE void r8_prefetch(const int kind, const uint8_t *G, int64_t t, int64_t b) {
    if (b % 64) return;
    const size_t per = r8_pbb(kind) / (kind >= KIND_Q4_K_R8 ? 8 : 1);
    const char *p = (const char *)G + (size_t)t * per + R8_PF_BYTES;
    for (size_t o = 0; o < per; o += 64) _mm_prefetch(p + o, _MM_HINT_T0);
}

/* Q5_K's 5th bit of a code chunk: bit `bit` of each widened byte of h, moved
 * to bit 4 */
ALWAYS_INLINE __m256i r8_bit4(__m256i h, const int bit) {
    __m256i v = bit < 4 ? _mm256_slli_epi16(h, 4 - bit) : bit > 4 ? _mm256_srli_epi16(h, bit - 4) : h;
    return _mm256_and_si256(v, _mm256_set1_epi16(0x10));
}

/* int32 lanes += the products of int16 pairs (vpdpwssd, or vpmaddwd + add) */
ALWAYS_INLINE __m256i dp_i16(__m256i acc, __m256i w, __m256i x) {
#ifdef KERN_VNNI
    return _mm256_dpwssd_epi32(acc, w, x);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(w, x));
#endif
}

/* acc += w times the int16 pair at p broadcast to every lane. The VNNI
 * build takes the pair as vpdpwssd's embedded-broadcast memory operand
 * ({1to8}): compilers emit a separate vpbroadcastd per pair instead, one
 * more instruction per product instruction, and the kernels ran 5-12%
 * slower that way (bench_kernels --peak). Same integers either way. */
ALWAYS_INLINE __m256i dp_pair(__m256i acc, __m256i w, const int16_t *p) {
#ifdef KERN_VNNI
    __asm__("vpdpwssd %2%{1to8%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*(const int32_t *)p));
    return acc;
#else
    int32_t v;
    memcpy(&v, p, 4);
    return dp_i16(acc, w, _mm256_set1_epi32(v));
#endif
}

/* acc += w (bytes) times the 4 int8 at p broadcast (vpdpbusd; VNNI build
 * only), as dp_pair. */
#ifdef KERN_VNNI
ALWAYS_INLINE __m256i dp_quad(__m256i acc, __m256i w, const int8_t *p) {
    __asm__("vpdpbusd %2%{1to8%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*(const int32_t *)p));
    return acc;
}
#endif

/* Sub-block scale (or min) of 8 rows, exact in f32: d[i] * v[i] with d an
 * f16 vector and v 8 bytes (6-bit values: 11 x 6 bits fit 24). */
ALWAYS_INLINE __m256 r8_scaled(const uint8_t *d, const uint8_t *v) {
    __m256 f = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)v)));
    return _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)d)), f);
}

/* Folds each activation row's NC integer chains into ia[j][0] (exact). */
ALWAYS_INLINE void r8_fold(const int RB, const int NC, __m256i ia[8][4]) {
#pragma GCC unroll 8
    for (int j = 0; j < RB; j++) {
        if (NC >= 4) {
            ia[j][0] = _mm256_add_epi32(ia[j][0], ia[j][2 % NC]);
            ia[j][1 % NC] = _mm256_add_epi32(ia[j][1 % NC], ia[j][3 % NC]);
        }
        if (NC >= 2) ia[j][0] = _mm256_add_epi32(ia[j][0], ia[j][1 % NC]);
    }
}

/* The 8 rows' scale dw and min factor mw of block t of a group (G: its
 * first packed block); q8min: the min factor of a Q8_0 block relative to d
 * (0, or -128 for offset codes). */
ALWAYS_INLINE void r8_wscale(const int kind, const uint8_t *G, int64_t t, float q8min, __m256 *dw,
                             __m256 *mw) {
    const uint8_t *p = r8_packed(kind, G, t);
    if (kind == KIND_Q4_K_R8 || kind == KIND_Q5_K_R8) {
        *dw = r8_scaled(p, p + 32 + 8 * (t % 8));
        *mw = _mm256_mul_ps(r8_scaled(p + 16, p + 96 + 8 * (t % 8)), _mm256_set1_ps(-1.0f));
    } else {
        *dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
        *mw = kind == KIND_Q4_1 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 16)))
                                : _mm256_mul_ps(*dw, _mm256_set1_ps(kind == KIND_Q8_0 ? q8min : -8.0f));
    }
}

/* a[j] += P_j * (dw * dx_j) (+ mw * sx_j when min): a block's scaling. */
ALWAYS_INLINE void r8_scale_add(const int RB, const bool min, __m256 *a, __m256i ia[8][4], __m256 dw,
                                __m256 mw, const float *dx, const float *sx) {
#pragma GCC unroll 8
    for (int j = 0; j < RB; j++) {
        __m256 s = _mm256_mul_ps(dw, _mm256_broadcast_ss(dx + j));
        a[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ia[j][0]), s, a[j]);
        if (min) a[j] = _mm256_fmadd_ps(mw, _mm256_broadcast_ss(sx + j), a[j]);
    }
}

/* Q6_K: d * sc of the block's two 16-value sub-blocks (exact in f32). */
ALWAYS_INLINE void q6_scales(const uint8_t *sb, int sub, __m256 *sa, __m256 *sbv) {
    __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)sb));
    const int8_t *sc = (const int8_t *)sb + 16 + 16 * sub;
    *sa = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)sc))));
    *sbv = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(sc + 8)))));
}

/* Q6_K in the R8 layout (kern_internal.h): per 32-value block, the codes
 * (q - 32, signed) from the low nibbles and the 2-bit top chunks; the exact
 * integer dot products of the two 16-value sub-blocks apart (their int8
 * scales differ; folding them in could pass 2^31), then for each
 * acc = fma((float)P, (d * sc) * d_x, acc), first half first. */
ALWAYS_INLINE void r8_tile_q6k(const int RB, const uint8_t *G, int64_t blk0, int64_t n,
                               const x16_layout *l, int64_t b, __m256 *acc) {
    const __m256i m4 = _mm256_set1_epi16(0x0F), m30 = _mm256_set1_epi16(0x30),
                  c32 = _mm256_set1_epi16(32);
    const int NH = RB >= 4 ? 1 : 2; /* chains per half (see r8_tile) */
    __m256 a[8];
#pragma GCC unroll 8
    for (int j = 0; j < RB; j++) a[j] = acc[j];
    for (int64_t t = 0; t < n; t++) {
        const uint8_t *sb = r8_packed(KIND_Q6_K_R8, G, t), *lo = r8_codes(KIND_Q6_K_R8, G, t),
                      *hi = lo + 128;
        r8_prefetch(KIND_Q6_K_R8, G, t, b);
        const int64_t blk = blk0 + t;
        const int16_t *xb = l->qs + blk * l->bs + b * 32;
        __m256i pa[8][2], pb[8][2];
#pragma GCC unroll 8
        for (int j = 0; j < RB; j++)
#pragma GCC unroll 2
            for (int h = 0; h < NH; h++) pa[j][h] = pb[j][h] = _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int m = 0; m < 4; m++) {
            __m256i hv = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(hi + 16 * m)));
#pragma GCC unroll 2
            for (int cc = 0; cc < 2; cc++) {
                const int c = 2 * m + cc;
                __m256i t16 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(lo + 16 * c)));
                __m256i ha = cc ? _mm256_and_si256(hv, m30) : _mm256_and_si256(_mm256_slli_epi16(hv, 4), m30);
                __m256i hb = cc ? _mm256_and_si256(_mm256_srli_epi16(hv, 2), m30)
                                : _mm256_and_si256(_mm256_slli_epi16(hv, 2), m30);
                __m256i wa = _mm256_sub_epi16(_mm256_or_si256(_mm256_and_si256(t16, m4), ha), c32);
                __m256i wb = _mm256_sub_epi16(_mm256_or_si256(_mm256_srli_epi16(t16, 4), hb), c32);
#pragma GCC unroll 8
                for (int j = 0; j < RB; j++) {
                    __m256i(*P)[2] = c < 4 ? pa : pb;
                    const int h0 = (2 * c) % NH, h1 = (2 * c + 1) % NH;
                    P[j][h0] = dp_pair(P[j][h0], wa, xb + j * 32 + 4 * c);
                    P[j][h1] = dp_pair(P[j][h1], wb, xb + j * 32 + 4 * c + 2);
                }
            }
        }
        __m256 sa, sbv;
        q6_scales(sb, (int)(t % 8), &sa, &sbv);
        const float *dx = l->dt + blk * l->nbp + b;
#pragma GCC unroll 8
        for (int j = 0; j < RB; j++) {
            __m256i A = NH > 1 ? _mm256_add_epi32(pa[j][0], pa[j][1 % NH]) : pa[j][0];
            __m256i B = NH > 1 ? _mm256_add_epi32(pb[j][0], pb[j][1 % NH]) : pb[j][0];
            __m256 x = _mm256_broadcast_ss(dx + j);
            a[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(A), _mm256_mul_ps(sa, x), a[j]);
            a[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(B), _mm256_mul_ps(sbv, x), a[j]);
        }
    }
#pragma GCC unroll 8
    for (int j = 0; j < RB; j++) acc[j] = a[j];
}

/* Blocks [blk0, blk0 + n) of one group (G: its block blk0; for Q4_K, 32-value
 * sub-blocks, blk0 a multiple of 8 and G its super-block) times activation
 * rows b .. b + RB; acc[j] (8 rows) in and out. */
ALWAYS_INLINE void r8_tile(const int kind, const int RB, const uint8_t *G, int64_t blk0,
                           int64_t n, const x16_layout *l, int64_t b, __m256 *acc) {
    if (kind == KIND_Q6_K_R8) {
        r8_tile_q6k(RB, G, blk0, n, l, b, acc);
        return;
    }
    const __m256i m4 = _mm256_set1_epi16(0x0F);
    __m256 a[8];
#pragma GCC unroll 8
    for (int j = 0; j < RB; j++) a[j] = acc[j];
    for (int64_t t = 0; t < n; t++) {
        const uint8_t *q = r8_codes(kind, G, t);
        const int64_t blk = blk0 + t;
        r8_prefetch(kind, G, t, b);
        const int16_t *xb = l->qs + blk * l->bs + b * 32;
        /* NC independent integer chains per activation row (with few rows
         * the dependent vpdpwssd latency, not throughput, would set the
         * pace: two pipes of 5-cycle vpdpwssd want about 10 chains in
         * flight); integer sums are exact, so the split changes no bit.
         * The VNNI build's 32 registers hold 2 chains a row up to 8 rows
         * (4 to 7 rows: 3-8% faster than one chain). */
#ifdef KERN_VNNI
        const int NC = RB >= 4 ? 2 : 4;
#else
        const int NC = RB >= 4 ? 1 : RB >= 2 ? 2 : 4;
#endif
        __m256i ia[8][4];
#pragma GCC unroll 8
        for (int j = 0; j < RB; j++)
#pragma GCC unroll 4
            for (int h = 0; h < NC; h++) ia[j][h] = _mm256_setzero_si256();
        if (kind == KIND_Q8_0) {
#pragma GCC unroll 16
            for (int c = 0; c < 16; c++) {
                __m256i w = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(q + 16 * c)));
#pragma GCC unroll 8
                for (int j = 0; j < RB; j++)
                    ia[j][c % NC] = dp_pair(ia[j][c % NC], w, xb + j * 32 + 2 * c);
            }
        } else {
#pragma GCC unroll 8
            for (int c = 0; c < 8; c++) {
                __m256i t16 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(q + 16 * c)));
                __m256i wa = _mm256_and_si256(t16, m4), wb = _mm256_srli_epi16(t16, 4);
                if (kind == KIND_Q5_K_R8) {
                    /* the 5th bits: chunk c / 4 of 16 bytes after the codes,
                     * bits 2k, 2k+1 (k = c % 4) for wa, wb */
                    __m256i hv = _mm256_cvtepu8_epi16(
                        _mm_loadu_si128((const __m128i *)(q + 128 + 16 * (c / 4))));
                    wa = _mm256_or_si256(wa, r8_bit4(hv, 2 * (c % 4)));
                    wb = _mm256_or_si256(wb, r8_bit4(hv, 2 * (c % 4) + 1));
                }
#pragma GCC unroll 8
                for (int j = 0; j < RB; j++) {
                    const int h0 = (2 * c) % NC, h1 = (2 * c + 1) % NC;
                    ia[j][h0] = dp_pair(ia[j][h0], wa, xb + j * 32 + 4 * c);
                    ia[j][h1] = dp_pair(ia[j][h1], wb, xb + j * 32 + 4 * c + 2);
                }
            }
        }
        r8_fold(RB, NC, ia);
        __m256 dw, mw;
        r8_wscale(kind, G, t, 0.0f, &dw, &mw);
        r8_scale_add(RB, kind != KIND_Q8_0, a, ia, dw, mw, l->dt + blk * l->nbp + b,
                     l->st + blk * l->nbp + b);
    }
#pragma GCC unroll 8
    for (int j = 0; j < RB; j++) acc[j] = a[j];
}

/* Activation rows per tile: 8 with the VNNI build's 32 vector registers
 * (16 accumulators), else 4. */
#ifndef R8_TB
#ifdef KERN_VNNI
#define R8_TB 8
#else
#define R8_TB 4
#endif
#endif
/* Blocks repacked at a time for a plain-layout matrix (at most 4.3 KiB). */
#define R8_PLAIN_BLOCKS 16

/* A tile function: r8_tile for one kind, rb activation rows (<= R8_TB);
 * lay: the activation layout its prep made. */
typedef void (*r8_tile_fn)(int rb, const uint8_t *G, int64_t blk0, int64_t n, const void *lay,
                           int64_t b, __m256 *acc);

/* One weight type's shape in the R8 layout: spb 32-value blocks per packed
 * block (8 for the K-quants' super-blocks), pbb bytes of a group's packed
 * block. */
typedef struct {
    sgl_dtype base;
    int spb;
    size_t pbb;
} r8_shape;

/* Rows [r0, r1) (r0 a multiple of 8) of Y for all nb activation rows:
 * packed, W in the R8 layout; else W in the file layout, repacked
 * R8_PLAIN_BLOCKS blocks at a time into a stack buffer. */
static void r8_drive(r8_tile_fn tile, const void *lay, const r8_shape *sh, bool packed,
                     const void *Wv, int64_t rows, int64_t k, int64_t nb, float *Y, int64_t r0,
                     int64_t r1) {
    const uint8_t *W = Wv;
    const int64_t nblk = k / 32, npb = nblk / sh->spb; /* 32-blocks, packed blocks a row */
    const size_t wrb = (size_t)npb * (size_t)sgl_dtype_block_bytes(sh->base);
    uint8_t buf[R8_PLAIN_BLOCKS * 272] __attribute__((aligned(64)));
    __m256 acc[64];
    for (int64_t bc = 0; bc < nb; bc += 64) {
        int64_t be = bc + 64 < nb ? bc + 64 : nb;
        for (int64_t g = r0 / 8; g * 8 < r1; g++) {
            for (int64_t j = 0; j < be - bc; j++) acc[j] = _mm256_setzero_ps();
            const int64_t step = packed ? nblk : R8_PLAIN_BLOCKS;
            for (int64_t k0 = 0; k0 < nblk; k0 += step) {
                int64_t n = nblk - k0 < step ? nblk - k0 : step;
                const uint8_t *G = W + (size_t)g * (size_t)npb * sh->pbb;
                if (!packed) {
                    r8_pack(sh->base, W, wrb, rows, g, k0 / sh->spb, n / sh->spb, buf);
                    G = buf;
                }
                for (int64_t b = bc; b < be; b += R8_TB)
                    tile((int)(be - b < R8_TB ? be - b : R8_TB), G, k0, n, lay, b, acc + (b - bc));
            }
            int64_t nr = rows - g * 8 < 8 ? rows - g * 8 : 8;
            for (int64_t b = bc; b < be; b++) {
                float *y = Y + b * rows + g * 8;
                if (nr == 8) {
                    _mm256_storeu_ps(y, acc[b - bc]);
                } else {
                    float t[8];
                    _mm256_storeu_ps(t, acc[b - bc]);
                    memcpy(y, t, (size_t)nr * sizeof(float));
                }
            }
        }
    }
}

// clang-format off
/* The tile switch (constant RB for r8_tile) and the two row functions of a
 * kind: NAME for the file layout, NAME##_r8 for the R8 layout. TILE is the
 * tile template (r8_tile or r8_tile_i8), LAYOUT / MAP its activations. */
#define R8_ROWS(NAME, TILE, LAYOUT, MAP, KIND, BASE, SPB, PBB)                                     \
    static void NAME##_tile(int rb, const uint8_t *G, int64_t blk0, int64_t n, const void *lay,    \
                            int64_t b, __m256 *acc) {                                              \
        const LAYOUT *l = lay;                                                                     \
        switch (rb) {                                                                              \
        case 8: TILE(KIND, 8 <= R8_TB ? 8 : 1, G, blk0, n, l, b, acc); break;                      \
        case 7: TILE(KIND, 7 <= R8_TB ? 7 : 1, G, blk0, n, l, b, acc); break;                      \
        case 6: TILE(KIND, 6 <= R8_TB ? 6 : 1, G, blk0, n, l, b, acc); break;                      \
        case 5: TILE(KIND, 5 <= R8_TB ? 5 : 1, G, blk0, n, l, b, acc); break;                      \
        case 4: TILE(KIND, 4, G, blk0, n, l, b, acc); break;                                       \
        case 3: TILE(KIND, 3, G, blk0, n, l, b, acc); break;                                       \
        case 2: TILE(KIND, 2, G, blk0, n, l, b, acc); break;                                       \
        default: TILE(KIND, 1, G, blk0, n, l, b, acc); break;                                      \
        }                                                                                          \
    }                                                                                              \
    static void NAME(const void *W, int64_t rows, int64_t k, const float *X, const void *xq,       \
                     int64_t nb, float *Y, int64_t r0, int64_t r1) {                               \
        (void)X;                                                                                   \
        const r8_shape sh = {BASE, SPB, PBB};                                                      \
        LAYOUT l = MAP((void *)xq, k, nb);                                                         \
        r8_drive(NAME##_tile, &l, &sh, false, W, rows, k, nb, Y, r0, r1);                          \
    }                                                                                              \
    static void NAME##_r8(const void *W, int64_t rows, int64_t k, const float *X, const void *xq,  \
                          int64_t nb, float *Y, int64_t r0, int64_t r1) {                          \
        (void)X;                                                                                   \
        const r8_shape sh = {BASE, SPB, PBB};                                                      \
        LAYOUT l = MAP((void *)xq, k, nb);                                                         \
        r8_drive(NAME##_tile, &l, &sh, true, W, rows, k, nb, Y, r0, r1);                           \
    }
#define R8_X16(NAME, KIND, BASE, SPB, PBB) R8_ROWS(NAME, r8_tile, x16_layout, x16_map, KIND, BASE, SPB, PBB)
// clang-format on

_Static_assert(R8_PLAIN_BLOCKS % 8 == 0 && R8_PLAIN_BLOCKS / 8 * 1680 <= R8_PLAIN_BLOCKS * 272,
               "the plain-layout buffer holds R8_PLAIN_BLOCKS blocks of every type");

/* Every R8 type: X(name, kind, file type, 32-blocks per packed block) */
#define R8_TYPES(X)                                                                                \
    X(q4_0, KIND_Q4_0, SGL_DTYPE_Q4_0, 1)                                                          \
    X(q4_1, KIND_Q4_1, SGL_DTYPE_Q4_1, 1)                                                          \
    X(q8_0, KIND_Q8_0, SGL_DTYPE_Q8_0, 1)                                                          \
    X(q4_k, KIND_Q4_K_R8, SGL_DTYPE_Q4_K, 8)                                                       \
    X(q5_k, KIND_Q5_K_R8, SGL_DTYPE_Q5_K, 8)                                                       \
    X(q6_k, KIND_Q6_K_R8, SGL_DTYPE_Q6_K, 8)
#define R8_X16_TYPE(N, KIND, BASE, SPB) R8_X16(mm_##N, KIND, BASE, SPB, r8_pbb(KIND))
R8_TYPES(R8_X16_TYPE)
#ifdef KERN_VNNI
/* ==== int8 activations (opt-in) ============================================
 *
 * SGL_KERN_INT8=1 at start-up (VNNI build only): the activations are
 * quantized to int8 per block of 32 (d = amax / 127) and multiplied with
 * vpdpbusd, 32 products per instruction against vpdpwssd's 16, on the same
 * R8 weights: the codes are taken as unsigned bytes (Q8_0 offset by +128,
 * Q6_K unshifted) and the offsets come back through min terms, so every
 * block still has one exact integer dot product per row. About twice the
 * throughput where the matmul is compute-bound (prefill, batches), with
 * llama.cpp's activation precision: greedy output is no longer equal to the
 * float reference (docs/runtime.md), so it is off by default.
 *
 * Scratch: qs int8 [nblk][nb][32]; dt, st as x16's; sh f32 [2][nblk][nbp]
 * d * (sum of the block's first / second 16 q), for Q6_K's two sub-blocks. */
typedef struct {
    int8_t *qs;
    float *dt, *st, *sh0, *sh1;
    int64_t nbp, bs;
} x8_layout;

/* Bytes of x8's qs, rounded up to 64 (dt follows). */
static int64_t x8_qs_bytes(int64_t nblk, int64_t nb) {
    return (nblk * nb * 32 + 63) & ~(int64_t)63;
}

static x8_layout x8_map(void *xq, int64_t k, int64_t nb) {
    int64_t nblk = k / 32;
    x8_layout l;
    l.qs = xq;
    l.bs = nb * 32;
    l.nbp = x16_nbp(nb);
    l.dt = (float *)(l.qs + x8_qs_bytes(nblk, nb));
    l.st = l.dt + nblk * l.nbp;
    l.sh0 = l.st + nblk * l.nbp;
    l.sh1 = l.sh0 + nblk * l.nbp;
    return l;
}

static size_t x8_bytes(int64_t k, int64_t nb) {
    int64_t nblk = k / 32;
    return (size_t)(x8_qs_bytes(nblk, nb) + 4 * nblk * x16_nbp(nb) * 4) + 64;
}

static void x8_prep(const float *X, int64_t k, int64_t nb, void *xq, int64_t b0, int64_t b1) {
    x8_layout l = x8_map(xq, k, nb);
    int64_t nblk = k / 32;
    for (int64_t bc = b0; bc < b1; bc += 16)
        for (int64_t i = 0; i < nblk; i++)
            for (int64_t b = bc; b < b1 && b < bc + 16; b++) {
                const float *x = X + b * k + i * 32;
                float amax = amax32(x);
                float d = amax >= 1e-30f ? amax / 127.0f : 0.0f;
                __m256 vid = _mm256_set1_ps(amax >= 1e-30f ? 127.0f / amax : 0.0f);
                __m256i q0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x), vid));
                __m256i q1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8), vid));
                __m256i q2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 16), vid));
                __m256i q3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 24), vid));
                int32_t h[2][8];
                _mm256_storeu_si256((__m256i *)h[0], _mm256_add_epi32(q0, q1));
                _mm256_storeu_si256((__m256i *)h[1], _mm256_add_epi32(q2, q3));
                int s0 = 0, s1 = 0;
                for (int e = 0; e < 8; e++) s0 += h[0][e], s1 += h[1][e];
                /* packs per 128-bit lane, then the dwords back in order */
                __m256i p16a = _mm256_packs_epi32(q0, q1), p16b = _mm256_packs_epi32(q2, q3);
                __m256i p8 = _mm256_packs_epi16(p16a, p16b);
                p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
                _mm256_storeu_si256((__m256i *)(l.qs + i * l.bs + b * 32), p8);
                int64_t o = i * l.nbp + b;
                l.dt[o] = d;
                l.st[o] = d * (float)(s0 + s1); /* |sum| <= 32 * 127: exact */
                l.sh0[o] = d * (float)s0;
                l.sh1[o] = d * (float)s1;
            }
    if (b1 == nb)
        for (int64_t i = 0; i < nblk; i++)
            for (int64_t b = nb; b < l.nbp; b++)
                l.st[i * l.nbp + b] = l.dt[i * l.nbp + b] = l.sh0[i * l.nbp + b] =
                    l.sh1[i * l.nbp + b] = 0;
}

/* 8 rows x 4 consecutive codes as unsigned bytes (lane i = row i) from the
 * two 16-byte halves lo / hi of a code chunk (byte 2i+e: elems 0+e / 2+e). */
ALWAYS_INLINE __m256i i8_lanes(__m128i lo, __m128i hi) {
    return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_unpacklo_epi16(lo, hi)),
                                   _mm_unpackhi_epi16(lo, hi), 1);
}

/* r8_tile with int8 activations: per block, the 8 vectors of 8 rows x 4
 * codes, 8 vpdpbusd per activation row, then the scale and min terms. */
ALWAYS_INLINE void r8_tile_i8(const int kind, const int RB, const uint8_t *G, int64_t blk0,
                              int64_t n, const x8_layout *l, int64_t b, __m256 *acc) {
    const __m128i m4 = _mm_set1_epi8(0x0F), m10 = _mm_set1_epi8(0x10), m30 = _mm_set1_epi8(0x30);
    const int NC = RB >= 4 ? 1 : RB >= 2 ? 2 : 4;
    __m256 a[8];
#pragma GCC unroll 8
    for (int j = 0; j < RB; j++) a[j] = acc[j];
    for (int64_t t = 0; t < n; t++) {
        const int64_t blk = blk0 + t;
        const int sub = (int)(t % 8);
        const uint8_t *sb = r8_packed(kind, G, t), *q = r8_codes(kind, G, t);
        r8_prefetch(kind, G, t, b);
        __m256i w[8];
#pragma GCC unroll 8
        for (int c = 0; c < 8; c++) {
            if (kind == KIND_Q8_0) {
                __m128i A = _mm_loadu_si128((const __m128i *)(q + 32 * c));
                __m128i B = _mm_loadu_si128((const __m128i *)(q + 32 * c + 16));
                w[c] = _mm256_xor_si256(i8_lanes(A, B), _mm256_set1_epi8((char)0x80));
                continue;
            }
            __m128i tv = _mm_loadu_si128((const __m128i *)(q + 16 * c));
            __m128i lo = _mm_and_si128(tv, m4), hi = _mm_and_si128(_mm_srli_epi16(tv, 4), m4);
            if (kind == KIND_Q5_K_R8) {
                __m128i hv = _mm_loadu_si128((const __m128i *)(q + 128 + 16 * (c / 4)));
                const int k2 = 2 * (c % 4);
                __m128i ha = k2 < 4 ? _mm_slli_epi16(hv, 4 - k2) : k2 > 4 ? _mm_srli_epi16(hv, k2 - 4) : hv;
                __m128i hb = k2 + 1 < 4 ? _mm_slli_epi16(hv, 3 - k2) : _mm_srli_epi16(hv, k2 - 3);
                lo = _mm_or_si128(lo, _mm_and_si128(ha, m10));
                hi = _mm_or_si128(hi, _mm_and_si128(hb, m10));
            } else if (kind == KIND_Q6_K_R8) {
                __m128i hv = _mm_loadu_si128((const __m128i *)(q + 128 + 16 * (c / 2)));
                __m128i ha = c % 2 ? hv : _mm_slli_epi16(hv, 4);
                __m128i hb = c % 2 ? _mm_srli_epi16(hv, 2) : _mm_slli_epi16(hv, 2);
                lo = _mm_or_si128(lo, _mm_and_si128(ha, m30));
                hi = _mm_or_si128(hi, _mm_and_si128(hb, m30));
            }
            w[c] = i8_lanes(lo, hi);
        }
        const int8_t *xb = l->qs + blk * l->bs + b * 32;
        /* Q6_K: the two 16-value halves apart (chains 0 / 1 hold c < 4 / c >= 4) */
        const int NQ = kind == KIND_Q6_K_R8 ? 2 : NC;
        __m256i ia[8][4];
#pragma GCC unroll 8
        for (int j = 0; j < RB; j++)
#pragma GCC unroll 4
            for (int h = 0; h < NQ; h++) ia[j][h] = _mm256_setzero_si256();
#pragma GCC unroll 8
        for (int c = 0; c < 8; c++)
#pragma GCC unroll 8
            for (int j = 0; j < RB; j++) {
                const int h = kind == KIND_Q6_K_R8 ? c / 4 : c % NQ;
                ia[j][h] = dp_quad(ia[j][h], w[c], xb + j * 32 + 4 * c);
            }
        const float *dx = l->dt + blk * l->nbp + b;
        if (kind == KIND_Q6_K_R8) {
            __m256 sa, sbv;
            q6_scales(sb, sub, &sa, &sbv);
            __m256 ma = _mm256_mul_ps(sa, _mm256_set1_ps(-32.0f)), mb = _mm256_mul_ps(sbv, _mm256_set1_ps(-32.0f));
            const float *s0 = l->sh0 + blk * l->nbp + b, *s1 = l->sh1 + blk * l->nbp + b;
#pragma GCC unroll 8
            for (int j = 0; j < RB; j++) {
                __m256 x = _mm256_broadcast_ss(dx + j);
                a[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ia[j][0]), _mm256_mul_ps(sa, x), a[j]);
                a[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ia[j][1]), _mm256_mul_ps(sbv, x), a[j]);
                a[j] = _mm256_fmadd_ps(ma, _mm256_broadcast_ss(s0 + j), a[j]);
                a[j] = _mm256_fmadd_ps(mb, _mm256_broadcast_ss(s1 + j), a[j]);
            }
            continue;
        }
        r8_fold(RB, NC, ia);
        __m256 dw, mw;
        r8_wscale(kind, G, t, -128.0f, &dw, &mw);
        r8_scale_add(RB, true, a, ia, dw, mw, dx, l->st + blk * l->nbp + b);
    }
#pragma GCC unroll 8
    for (int j = 0; j < RB; j++) acc[j] = a[j];
}

// clang-format off
#define R8_X8(NAME, KIND, BASE, SPB, PBB) R8_ROWS(NAME, r8_tile_i8, x8_layout, x8_map, KIND, BASE, SPB, PBB)
// clang-format on
#define R8_X8_TYPE(N, KIND, BASE, SPB) R8_X8(mm_##N##_i8, KIND, BASE, SPB, r8_pbb(KIND))
R8_TYPES(R8_X8_TYPE)
#endif /* KERN_VNNI: int8 activations */




/* ==== F32 / F16 / BF16 weights ============================================
 *
 * Built in both builds: the VNNI build's 32 vector registers hold a 4 x 6
 * tile (24 accumulators), the AVX2 build's 16 a 2 x 4 one. Batch 1 streams
 * the weights: row by row over short rows (FW_SHORT_ROW), else in 8 x 1
 * tiles (eight independent chains); either prefetches the next rows a line
 * at a time. Every (weight row, activation row) pair takes the same
 * instruction sequence whatever the tile, so all give the same bits. */

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
    __m256 acc[8][6];
#pragma GCC unroll 8
    for (int i = 0; i < RW; i++)
#pragma GCC unroll 6
        for (int j = 0; j < RB; j++)
            acc[i][j] = _mm256_setzero_ps();
    int64_t k8 = k / 8 * 8;
    const int es = kind == KIND_F32 ? 4 : 2;
    for (int64_t e = 0; e < k8; e += 8) {
        __m256 w[8];
        /* batch 1 streams the weights: the next tile's rows, a line at a time */
        if (RB == 1 && (e * es) % 64 == 0 && r + 2 * RW <= rows)
#pragma GCC unroll 8
            for (int i = 0; i < RW; i++)
                _mm_prefetch((const char *)(W + (size_t)(r + RW + i) * wrb + (size_t)e * es), _MM_HINT_T0);
#pragma GCC unroll 8
        for (int i = 0; i < RW; i++)
            w[i] = fw_load8(kind, W + (size_t)(r + i) * wrb, e);
#pragma GCC unroll 6
        for (int j = 0; j < RB; j++) {
            __m256 x = _mm256_loadu_ps(X + (b + j) * k + e);
#pragma GCC unroll 8
            for (int i = 0; i < RW; i++)
                acc[i][j] = _mm256_fmadd_ps(w[i], x, acc[i][j]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < RW; i++)
#pragma GCC unroll 6
        for (int j = 0; j < RB; j++) {
            float t = 0;
            for (int64_t e = k8; e < k; e++)
                t += fw_load1(kind, W + (size_t)(r + i) * wrb, e) * X[(b + j) * k + e];
            Y[(b + j) * rows + r + i] = hsum8(acc[i][j]) + t;
        }
}

/* Batch 1 over rows of at most this many bytes goes row by row: one
 * stream through memory. Eight rows at a time are eight short streams,
 * which the hardware prefetcher follows badly: on 576-wide F16 matrices
 * far larger than the caches, 2 threads read 16.5 GB/s in 8-row tiles and
 * 29.4 GB/s row by row. Longer rows keep the 8-row tiles: one row's single
 * FMA chain then sets the pace (8192 x 2048: 29.4 against 27.1 GB/s). The
 * arithmetic of each output is the same either way. */
#define FW_SHORT_ROW 3072

#ifdef KERN_VNNI
#define FW_TW 4
#define FW_TB 6
#else
#define FW_TW 2
#define FW_TB 4
#endif

// clang-format off
#define FW_CASE(KIND, RW, RB)                                                                      \
    case RW * 8 + RB: fw_tile(KIND, RW, RB, W, wrb, k, X, b, Y, rows, r); break;
#define FW_CASES(KIND, RW)                                                                         \
    FW_CASE(KIND, RW, 6) FW_CASE(KIND, RW, 5) FW_CASE(KIND, RW, 4) FW_CASE(KIND, RW, 3)            \
    FW_CASE(KIND, RW, 2) FW_CASE(KIND, RW, 1)
#define FW_ROWS(NAME, KIND, ES)                                                                    \
    static void NAME##_t(int rw, int rb, const uint8_t *W, size_t wrb, int64_t k, const float *X,  \
                         int64_t b, float *Y, int64_t rows, int64_t r) {                           \
        switch (rw * 8 + rb) {                                                                     \
        FW_CASE(KIND, 8, 1)                                                                        \
        FW_CASES(KIND, 4) FW_CASES(KIND, 3) FW_CASES(KIND, 2) FW_CASES(KIND, 1)                    \
        default: break;                                                                            \
        }                                                                                          \
    }                                                                                              \
    static void NAME(const void *Wv, int64_t rows, int64_t k, const float *X, const void *xq,      \
                     int64_t nb, float *Y, int64_t r0, int64_t r1) {                               \
        (void)xq;                                                                                  \
        size_t wrb = (size_t)k * ES;                                                               \
        if (nb == 1) {                                                                             \
            int64_t r = r0;                                                                        \
            if (wrb > FW_SHORT_ROW) { /* long rows: 8-row tiles, then 4 */                         \
                for (; r + 8 <= r1; r += 8)                                                        \
                    NAME##_t(8, 1, Wv, wrb, k, X, 0, Y, rows, r);                                  \
                for (; r + 4 <= r1; r += 4)                                                        \
                    NAME##_t(4, 1, Wv, wrb, k, X, 0, Y, rows, r);                                  \
            }                                                                                      \
            for (; r < r1; r++)                                                                    \
                NAME##_t(1, 1, Wv, wrb, k, X, 0, Y, rows, r);                                      \
            return;                                                                                \
        }                                                                                          \
        for (int64_t bc = 0; bc < nb; bc += 32) {                                                  \
            int64_t be = bc + 32 < nb ? bc + 32 : nb;                                              \
            for (int64_t r = r0; r < r1;) {                                                        \
                int rw = r + FW_TW <= r1 ? FW_TW : 1;                                              \
                for (int64_t b = bc; b < be; b += FW_TB)                                           \
                    NAME##_t(rw, (int)(be - b < FW_TB ? be - b : FW_TB), Wv, wrb, k, X, b, Y,      \
                             rows, r);                                                             \
                r += rw;                                                                           \
            }                                                                                      \
        }                                                                                          \
    }
// clang-format on

FW_ROWS(mm_f32, KIND_F32, 4)
FW_ROWS(mm_f16, KIND_F16, 2)
FW_ROWS(mm_bf16, KIND_BF16, 2)

#ifdef KERN_VNNI
/* Overrides the quantized entries with the VNNI build of the same code. */
void kvnni_mm_fill(kern_ops *ops) {
    ops->name = "avx2-vnni";
    ops->mm[SGL_DTYPE_Q4_0].rows = mm_q4_0;
    ops->mm[SGL_DTYPE_Q4_1].rows = mm_q4_1;
    ops->mm[SGL_DTYPE_Q8_0].rows = mm_q8_0;
    ops->mm[SGL_DTYPE_Q4_0_R8].rows = mm_q4_0_r8;
    ops->mm[SGL_DTYPE_Q4_1_R8].rows = mm_q4_1_r8;
    ops->mm[SGL_DTYPE_Q8_0_R8].rows = mm_q8_0_r8;
    ops->mm[SGL_DTYPE_Q4_K].rows = mm_q4_k;
    ops->mm[SGL_DTYPE_Q4_K_R8].rows = mm_q4_k_r8;
    ops->mm[SGL_DTYPE_Q5_K_R8].rows = mm_q5_k_r8;
    ops->mm[SGL_DTYPE_F32].rows = mm_f32;
    ops->mm[SGL_DTYPE_F16].rows = mm_f16;
    ops->mm[SGL_DTYPE_BF16].rows = mm_bf16;
    ops->mm[SGL_DTYPE_Q6_K_R8].rows = mm_q6_k_r8;
    ops->mm[SGL_DTYPE_Q5_K].rows = mm_q5_k;
    ops->mm[SGL_DTYPE_Q6_K].rows = mm_q6_k;
}

/* The int8-activation variant (SGL_KERN_INT8=1): the quantized types' row
 * functions and prep of a VNNI table. */
void kvnni_i8_mm_fill(kern_ops *ops) {
    ops->name = "avx2-vnni-int8";
#define I8(T, F)                                                                                   \
    ops->mm[SGL_DTYPE_##T] = (kern_mm_impl){F, x8_prep, x8_bytes, 8};                              \
    ops->mm[SGL_DTYPE_##T##_R8] = (kern_mm_impl){F##_r8, x8_prep, x8_bytes, 8};
    I8(Q4_0, mm_q4_0_i8)
    I8(Q4_1, mm_q4_1_i8)
    I8(Q8_0, mm_q8_0_i8)
    I8(Q4_K, mm_q4_k_i8)
    I8(Q5_K, mm_q5_k_i8)
    I8(Q6_K, mm_q6_k_i8)
#undef I8
}
#else
void kavx2_mm_fill(kern_ops *ops) {
    /* R8 kernels work on groups of 8 rows: thread ranges start at multiples of 8 */
    ops->mm[SGL_DTYPE_Q4_0] = (kern_mm_impl){mm_q4_0, x16_prep, x16_bytes, 8};
    ops->mm[SGL_DTYPE_Q4_1] = (kern_mm_impl){mm_q4_1, x16_prep, x16_bytes, 8};
    ops->mm[SGL_DTYPE_Q8_0] = (kern_mm_impl){mm_q8_0, x16_prep, x16_bytes, 8};
    ops->mm[SGL_DTYPE_Q4_0_R8] = (kern_mm_impl){mm_q4_0_r8, x16_prep, x16_bytes, 8};
    ops->mm[SGL_DTYPE_Q4_1_R8] = (kern_mm_impl){mm_q4_1_r8, x16_prep, x16_bytes, 8};
    ops->mm[SGL_DTYPE_Q8_0_R8] = (kern_mm_impl){mm_q8_0_r8, x16_prep, x16_bytes, 8};
    ops->mm[SGL_DTYPE_Q4_K] = (kern_mm_impl){mm_q4_k, x16_prep, x16_bytes, 8};
    ops->mm[SGL_DTYPE_Q4_K_R8] = (kern_mm_impl){mm_q4_k_r8, x16_prep, x16_bytes, 8};
    ops->mm[SGL_DTYPE_Q5_K] = (kern_mm_impl){mm_q5_k, x16_prep, x16_bytes, 8};
    ops->mm[SGL_DTYPE_Q5_K_R8] = (kern_mm_impl){mm_q5_k_r8, x16_prep, x16_bytes, 8};
    ops->mm[SGL_DTYPE_Q6_K] = (kern_mm_impl){mm_q6_k, x16_prep, x16_bytes, 8};
    ops->mm[SGL_DTYPE_Q6_K_R8] = (kern_mm_impl){mm_q6_k_r8, x16_prep, x16_bytes, 8};
    ops->mm[SGL_DTYPE_F32] = (kern_mm_impl){mm_f32, NULL, NULL, 4};
    ops->mm[SGL_DTYPE_F16] = (kern_mm_impl){mm_f16, NULL, NULL, 4};
    ops->mm[SGL_DTYPE_BF16] = (kern_mm_impl){mm_bf16, NULL, NULL, 4};
}
#endif
