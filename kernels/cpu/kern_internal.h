/* kern_internal: what the CPU kernel files share but nobody above kernels/
 * sees: the GGML block layouts, scalar f16/bf16 conversions, and the table
 * of function pointers through which the implementation (scalar or AVX2) is
 * chosen. (The fast matmul's int16 activation layout is private to
 * avx2_matmul.c.)
 */
#ifndef SGL_KERN_INTERNAL_H
#define SGL_KERN_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "kernels/kernels.h"

/* ---- block layouts (GGML, byte-exact) ------------------------------------
 *
 *   Q4_0  | d:f16 | qs[16]: byte j = elem j (low nibble), elem j+16 (high) |
 *         x = (q - 8) * d
 *   Q4_1  | d:f16 | m:f16 | qs[16] as Q4_0 |          x = q * d + m
 *   Q8_0  | d:f16 | qs[32]: int8 |                    x = q * d
 *
 * K-quants: super-blocks of 256 elements.
 *   Q4_K  | d:f16 | dmin:f16 | scales[12] | qs[128] |
 *         8 sub-blocks of 32, each a 6-bit scale sc and 6-bit min mn packed
 *         in scales[12] (see kq_scale_min_k4); x = d*sc*q - dmin*mn.
 *         qs holds 4 chunks of 64 elements: in chunk c, byte l (0..31) of
 *         qs[32c..] is elem 64c+l (low nibble) and 64c+32+l (high nibble).
 *   Q5_K  | d | dmin | scales[12] | qh[32] | qs[128] |
 *         as Q4_K plus a 5th bit: elem 64c+l takes bit 2c of qh[l],
 *         elem 64c+32+l takes bit 2c+1 of qh[l].
 *   Q6_K  | ql[128] | qh[64] | scales[16]:int8 | d:f16 |
 *         16 sub-blocks of 16 with int8 scales; x = d*sc*(q - 32), q 6 bits.
 *         Two halves of 128; in half h, for l in 0..31 (ql += 64h, qh += 32h):
 *           elem l     = ql[l] low  | (qh[l] bits 0-1) << 4
 *           elem l+32  = ql[l+32] low | (qh[l] bits 2-3) << 4
 *           elem l+64  = ql[l] high | (qh[l] bits 4-5) << 4
 *           elem l+96  = ql[l+32] high | (qh[l] bits 6-7) << 4
 *         and elem e of the super-block uses scales[e / 16].
 *   Q8_K  | d:f32 | qs[256]:int8 | bsums[16]:int16 (sums of 16 qs) |
 */
typedef struct {
    uint16_t d;
    uint8_t qs[16];
} kq_block_q4_0;
typedef struct {
    uint16_t d, m;
    uint8_t qs[16];
} kq_block_q4_1;
typedef struct {
    uint16_t d;
    int8_t qs[32];
} kq_block_q8_0;
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qs[128];
} kq_block_q4_k;
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qh[32];
    uint8_t qs[128];
} kq_block_q5_k;
typedef struct {
    uint8_t ql[128];
    uint8_t qh[64];
    int8_t scales[16];
    uint16_t d;
} kq_block_q6_k;
typedef struct {
    float d;
    int8_t qs[256];
    int16_t bsums[16];
} kq_block_q8_k;

/* The sizes above must match dtype.def. */
#define X(name, id, be, bb) enum { KQ_BB_##name = bb, KQ_BE_##name = be };
#include "kernels/dtype.def"
#undef X
_Static_assert(sizeof(kq_block_q4_0) == KQ_BB_Q4_0, "Q4_0 block size");
_Static_assert(sizeof(kq_block_q4_1) == KQ_BB_Q4_1, "Q4_1 block size");
_Static_assert(sizeof(kq_block_q8_0) == KQ_BB_Q8_0, "Q8_0 block size");
_Static_assert(sizeof(kq_block_q4_k) == KQ_BB_Q4_K, "Q4_K block size");
_Static_assert(sizeof(kq_block_q5_k) == KQ_BB_Q5_K, "Q5_K block size");
_Static_assert(sizeof(kq_block_q6_k) == KQ_BB_Q6_K, "Q6_K block size");
_Static_assert(sizeof(kq_block_q8_k) == KQ_BB_Q8_K, "Q8_K block size");

/* Unpacks the j-th (0..7) 6-bit scale and min of a Q4_K/Q5_K super-block. */
static inline void kq_scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *mn) {
    if (j < 4) {
        *sc = q[j] & 63;
        *mn = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *mn = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* Writes the 6-bit scales sc[8] and mins mn[8] of a Q4_K/Q5_K super-block
 * into its scales[12] (the layout kq_scale_min_k4 reads). */
static inline void kq_pack_scale_min_k4(const uint8_t sc[8], const uint8_t mn[8], uint8_t q[12]) {
    for (int j = 0; j < 4; j++) {
        q[j] = (uint8_t)((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
        q[j + 4] = (uint8_t)((mn[j] & 63) | ((mn[j + 4] >> 4) << 6));
        q[j + 8] = (uint8_t)((sc[j + 4] & 0xF) | ((mn[j + 4] & 0xF) << 4));
    }
}

/* The codes L[256] of a super-block (elem order) into a block's fields: */
/* Q4_K (0..15) into qs[128]. */
static inline void kq_pack_q4_k_codes(const uint8_t L[256], uint8_t qs[128]) {
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) qs[32 * c + l] = (uint8_t)(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
}
/* Q5_K (0..31) into qh[32] and qs[128]. */
static inline void kq_pack_q5_k_codes(const uint8_t L[256], uint8_t qh[32], uint8_t qs[128]) {
    memset(qh, 0, 32);
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            int a = L[64 * c + l], h = L[64 * c + 32 + l];
            qs[32 * c + l] = (uint8_t)((a & 0xF) | ((h & 0xF) << 4));
            qh[l] |= (uint8_t)(((a >> 4) << (2 * c)) | ((h >> 4) << (2 * c + 1)));
        }
}
/* Q6_K (0..63, q + 32) into ql[128] and qh[64]. */
static inline void kq_pack_q6_k_codes(const uint8_t L[256], uint8_t ql[128], uint8_t qh[64]) {
    for (int h = 0; h < 2; h++) {
        uint8_t *pl = ql + 64 * h, *ph = qh + 32 * h;
        const uint8_t *q = L + 128 * h;
        for (int l = 0; l < 32; l++) {
            pl[l] = (uint8_t)((q[l] & 0xF) | ((q[l + 64] & 0xF) << 4));
            pl[l + 32] = (uint8_t)((q[l + 32] & 0xF) | ((q[l + 96] & 0xF) << 4));
            ph[l] = (uint8_t)((q[l] >> 4) | ((q[l + 32] >> 4) << 2) | ((q[l + 64] >> 4) << 4) |
                              ((q[l + 96] >> 4) << 6));
        }
    }
}
/* Element e's code (0..63) of a Q6_K block's ql / qh. */
static inline uint8_t kq_q6_k_code(const uint8_t ql[128], const uint8_t qh[64], int e) {
    const uint8_t *pl = ql + 64 * (e / 128), *ph = qh + 32 * (e / 128);
    int r = e % 128, g = r / 32, l = r % 32;
    uint8_t lo = g == 0 ? pl[l] & 15 : g == 1 ? pl[l + 32] & 15 : g == 2 ? pl[l] >> 4 : pl[l + 32] >> 4;
    return (uint8_t)(lo | ((ph[l] >> (2 * g)) & 3) << 4);
}

/* ---- 8-row interleaved layouts (R8; repack.c) -----------------------------
 *
 * A Q4_0 / Q4_1 / Q8_0 matrix of `rows` rows as groups of 8 rows (group g:
 * rows 8g..8g+7; rows past the matrix are zero blocks), each group its k/32
 * blocks in order, a group's block (8 x the plain block size):
 *   Q4_0  | d[8]:f16 | q[128] |            144 bytes
 *   Q4_1  | d[8] | m[8] | q[128] |         160 bytes
 *   Q8_0  | d[8] | q[256]:int8 |           272 bytes
 * d[i] (m[i]) is row i's. Q4 codes: 8 chunks of 16 bytes; in chunk c, byte
 * 2i+e (row i, e = 0, 1) holds elem 4c+e in its low nibble and elem 4c+2+e
 * in its high nibble. Q8: 16 chunks of 16 bytes; chunk c byte 2i+e is row
 * i's elem 2c+e.
 *   Q4_K  (per 256-value super-block) | d[8] | dmin[8] | sc[8][8] | mn[8][8] |
 *         q[8][128] |                                    1184 bytes
 *         sc[j][i] / mn[j][i]: row i's 6-bit scale and min of sub-block j
 *         (unpacked to bytes); q[j]: sub-block j's codes as in Q4_0.
 *   Q5_K  as Q4_K, each q[j] followed by 32 bytes of 5th bits (2 chunks of
 *         16; chunk n byte 2i+e, bits 2k / 2k+1: elems 4(4n+k)+e / +2+e of
 *         the sub-block): 1440 bytes
 *   Q6_K  (per super-block) | d[8] | sc[16][8]:int8 | 8 x (lo[128] hi[64]) |
 *         1680 bytes; per 32-value block: lo = the low 4 bits as Q4_0's
 *         codes, hi = 4 chunks of 16 bytes, chunk m byte 2i+e holding the
 *         top 2 bits of elems 8m+e, 8m+2+e, 8m+4+e, 8m+6+e (bits 0-1 .. 6-7),
 *         so chunk m widened gives the top bits of code chunks 2m and 2m+1.
 * Widened to int16, a chunk (a nibble half of it for Q4) is
 * 8 rows x 2 consecutive elements: lane i of a vpmaddwd / vpdpwssd against
 * the broadcast activation pair is row i's two products. */
int r8_base_type(sgl_dtype t);   /* Q4_0_R8 -> Q4_0 ...; -1 if t is no R8 type */
int r8_packed_type(sgl_dtype t); /* Q4_0 -> Q4_0_R8 ...; -1 if t has none */
size_t r8_group_block_bytes(sgl_dtype base); /* a group's packed block (above) */
size_t r8_bytes(sgl_dtype base, int64_t rows, int64_t k); /* whole matrix */
/* Writes blocks blk0 .. blk0+nblk (blocks of the base type: super-blocks for
 * Q4_K) of group g of the plain matrix W (rows rows of wrb bytes) into dst
 * (nblk group blocks). */
void r8_pack(sgl_dtype base, const uint8_t *W, size_t wrb, int64_t rows, int64_t g, int64_t blk0,
             int64_t nblk, uint8_t *dst);
/* Writes row r of the packed matrix P (k columns) in the plain layout. */
void r8_unpack_row(sgl_dtype base, const uint8_t *P, int64_t r, int64_t k, uint8_t *row);
/* 1 if the implementation in use has its own kernel for t's R8 layout. */
int kern_mm_prefers_packed(sgl_dtype t);
/* Block size (elements) of a weight type, R8 types included; 0 if unknown. */
int kern_block_elems(sgl_dtype t);

/* ---- scalar half / bfloat16 conversion (round to nearest even) --------- */

static inline uint32_t kq_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float kq_bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t kq_f32_to_f16(float f) {
    uint32_t x = kq_f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t a = x & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00;  /* NaN stays NaN */
    if (a >= 0x477ff000u) return sign | 0x7c00; /* rounds to >= 65520: inf */
    if (a < 0x38800000u) {
        /* Below 2^-14: f16 subnormal, unit 2^-24. Adding 0.5 (whose f32 ulp is
         * 2^-24) makes the FPU round to that unit for us. */
        float t = kq_bits_f32(a) + 0.5f;
        return sign | (uint16_t)(kq_f32_bits(t) - 0x3f000000u);
    }
    uint32_t odd = (a >> 13) & 1;
    a += 0xc8000fffu + odd; /* rebias exponent by -112, round to even */
    return sign | (uint16_t)(a >> 13);
}

static inline float kq_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t e = (h >> 10) & 31, m = h & 1023;
    if (e == 0) {
        float v = (float)m * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    if (e == 31) return kq_bits_f32(sign | 0x7f800000u | (m << 13));
    return kq_bits_f32(sign | ((e + 112) << 23) | (m << 13));
}

static inline uint16_t kq_f32_to_bf16(float f) {
    uint32_t x = kq_f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40);
    x += 0x7fffu + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}
static inline float kq_bf16_to_f32(uint16_t h) {
    return kq_bits_f32((uint32_t)h << 16);
}

/* ---- scalar reference entry points (ref_*.c) ---------------------------- */

void kref_dequant_row(sgl_dtype t, const void *src, float *dst, int64_t n);
int kref_quantize_row(sgl_dtype t, const float *src, void *dst, int64_t n);

/* Returns a 64-byte aligned buffer of at least `bytes` owned by the pool
 * (reused across calls; valid until the next call or kern_pool_free), or
 * NULL when memory runs out. */
void *kern_pool_scratch(kern_pool *pool, size_t bytes);

/* ---- implementation table ---------------------------------------------- */

/* Computes rows [r0, r1) of Y for all nb rows of X (see kern_matmul); the
 * matmul driver splits rows over threads and calls this from each. `xq` is
 * the activation quantized once per call by prep (NULL when prep is NULL). */
typedef void (*kern_mm_rows_fn)(const void *W, int64_t rows, int64_t k, const float *X,
                                const void *xq, int64_t nb, float *Y, int64_t r0, int64_t r1);
/* Quantizes activation rows [b0, b1) of X (nb rows in all) into xq, whose
 * layout is private to the implementation. */
typedef void (*kern_mm_prep_fn)(const float *X, int64_t k, int64_t nb, void *xq, int64_t b0,
                                int64_t b1);

typedef struct {
    kern_mm_rows_fn rows;
    kern_mm_prep_fn prep;                      /* NULL: X is used as f32 */
    size_t (*xq_bytes)(int64_t k, int64_t nb); /* scratch size for prep */
    int row_align;                             /* thread row ranges start at multiples of this */
} kern_mm_impl;

typedef struct {
    const char *name;
    kern_mm_impl mm[SGL_DTYPE_MAX_ID]; /* rows == NULL: type unsupported */
    void (*rmsnorm)(float *y, const float *x, const float *w, int64_t n, float eps);
    void (*softmax)(float *x, int64_t n);
    void (*silu_mul)(float *gate, const float *up, int64_t n);
    void (*add)(float *y, const float *x, int64_t n);
    float (*dot_f32)(const float *a, const float *b, int64_t n);
    void (*axpy)(float *y, float a, const float *x, int64_t n);
    void (*f32_to_f16)(uint16_t *dst, const float *src, int64_t n);
    void (*f16_to_f32)(float *dst, const uint16_t *src, int64_t n);
} kern_ops;

/* Fill a table; the AVX2 one starts from the reference one and overrides. */
void kref_ops_fill(kern_ops *ops);
void kavx2_ops_fill(kern_ops *ops);
void kavx2_mm_fill(kern_ops *ops); /* the matmul part, in avx2_matmul.c */
/* avx2_matmul.c built with AVX512-VNNI/VL (vpdpwssd on 256-bit vectors):
 * replaces the quantized types' row functions of an AVX2 table. */
void kvnni_mm_fill(kern_ops *ops);
/* The same with int8 activations (vpdpbusd; SGL_KERN_INT8=1): replaces the
 * quantized types' row functions and activation prep of a VNNI table. */
void kvnni_i8_mm_fill(kern_ops *ops);

#endif
