/* attention: the CPU backend's attention kernels (see attention.h), run on
 * the kernels' thread pool over the f16 KV pool slots of the batch.
 *
 * Keys go in fixed chunks of ATT_CHUNK positions ([0, 512), [512, 1024),
 * ...: absolute positions, the same for every query, batch and thread
 * count). A query's output is computed chunk by chunk: per chunk the scores,
 * their max m, p = exp(s - m), l = sum p and acc = sum p v, each in key
 * order; then the chunks are folded in chunk order (att_combine: the running
 * max, l and acc rescaled by exp of the max differences), and the result is
 * acc * (1 / l). With one chunk (up to 512 keys) that is exactly the plain
 * softmax. The work items:
 *   - a block of up to ATT_TOKEN_BLOCK new tokens of one sequence and one kv
 *     head (prefill) walks the chunks in order itself, converting each
 *     chunk's K/V to f32 once for all its tokens;
 *   - a single new token (decode) is split into one item per chunk, so one
 *     long sequence keeps every thread busy; each writes its chunk's (m, l,
 *     acc) to a partials buffer, and whichever item finishes last folds them
 *     in chunk order, with the same att_combine calls as a block item.
 * So every output value has one operation sequence fixed by its query and
 * its keys alone: alone, batched, cached or chunked, on any thread count.
 */
#include <math.h>
#include <pthread.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#endif
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/attention.h"

/* New tokens per attention work item: small enough to balance threads on a
 * single long prefill, large enough to amortise the K/V f16 -> f32 copy. */
#define ATT_TOKEN_BLOCK 64
/* Keys per chunk (a multiple of 8), and the row stride of a chunk's
 * transposed K (a multiple of 8, not of 256 floats, so the head_dim rows do
 * not alias in cache). */
#define ATT_CHUNK 512
#define ATT_LD (ATT_CHUNK + 8)

typedef struct att_scratch {
    float *k;      /* [head_dim][ATT_LD] keys of one chunk of one kv head, f32, transposed */
    float *v;      /* [ATT_CHUNK][head_dim] */
    float *score;  /* [3][ATT_LD] scores of up to 3 query heads */
    float *acc;    /* [3][head_dim] one chunk's partial outputs */
    float *ml;     /* [ATT_TOKEN_BLOCK][n_heads][2] running max and sum of a block item */
} att_scratch;

struct cpu_att {
    const kb_batch *b;
    int n_att;            /* = pool threads */
    att_scratch *att_s;
    int64_t cap_head_dim, cap_heads; /* scratch sizes */
    int64_t cap_items, n_items;
    /* work items: tokens [t0, t1) of sequence seq; chunk -1 = all chunks,
     * else that chunk of the single token of split row `split` */
    int32_t *item_seq, *item_t0, *item_t1, *item_chunk, *item_split;
    /* split rows (single new tokens): first partial (in chunks) and chunks */
    int64_t cap_split, n_split;
    int32_t *split_poff, *split_nch;
    atomic_int *split_done; /* [n_split][n_kv_heads] chunks finished (cap_split x cap_kv) */
    int64_t cap_done;
    int64_t n_part, cap_part; /* partial chunks of the batch; buffers hold cap_part */
    float *part_acc;          /* [n_part][n_heads][head_dim] */
    float *part_ml;           /* [n_part][n_heads][2] max, sum */
};

/* The inner loops are written so the compiler vectorizes them without
 * reassociating any sum: scores run over keys j in the vector lanes with the
 * head dimension d as the (ordered) outer loop over a transposed K; the
 * weighted V sum runs over d in the lanes with keys j as the ordered outer
 * loop. So every score and every output value has one fixed summation order
 * (d ascending, resp. j ascending) whatever the vector width or the number of
 * keys, and a vector lane computes exactly what the scalar tail would.
 * target_clones picks an AVX2 build of them once per process (ifunc).
 */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define ATT_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define ATT_CLONES
#endif

/* Copies the K rows (transposed: kt[d * ld + j]) and V rows (v[j * hd + d])
 * of keys j < n_keys of one kv head to f32. kbase / vbase point at slot 0's
 * row of the head in the layer; slot s's row is at + s * stride. f16 -> f32
 * is exact, so every version gives the same values. The F16C version takes
 * v == NULL: K only. */
typedef void (*att_gather_fn)(float *restrict kt, int64_t ld, float *restrict v,
                              const uint16_t *kbase, const uint16_t *vbase, int64_t stride,
                              const int32_t *slots, int32_t n_keys, int hd);

static void att_gather_kv_ref(float *restrict kt, int64_t ld, float *restrict v,
                              const uint16_t *kbase, const uint16_t *vbase, int64_t stride,
                              const int32_t *slots, int32_t n_keys, int hd) {
    float tmp[1024]; /* head_dim <= 1024 (checked at load) */
    for (int32_t j = 0; j < n_keys; j++) {
        kern_f16_to_f32(tmp, kbase + (int64_t)slots[j] * stride, hd);
        for (int d = 0; d < hd; d++) kt[(int64_t)d * ld + j] = tmp[d];
        kern_f16_to_f32(v + (int64_t)j * hd, vbase + (int64_t)slots[j] * stride, hd);
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#define ATT_HAVE_F16C 1
/* AVX+F16C build (head_dim a multiple of 8): eight keys at a time, each row
 * converted with vcvtph2ps, the 8x8 tiles of K transposed in registers. */
__attribute__((target("avx2,f16c"))) static void
att_gather_kv_f16c(float *restrict kt, int64_t ld, float *restrict v, const uint16_t *kbase,
                   const uint16_t *vbase, int64_t stride, const int32_t *slots, int32_t n_keys,
                   int hd) {
    for (int32_t j0 = 0; j0 < n_keys; j0 += 8) {
        int nb = n_keys - j0 < 8 ? (int)(n_keys - j0) : 8;
        const uint16_t *kr[8];
        for (int b = 0; b < 8; b++) {
            kr[b] = b < nb ? kbase + (int64_t)slots[j0 + b] * stride : NULL;
            if (b < nb && v) {
                const uint16_t *vh = vbase + (int64_t)slots[j0 + b] * stride;
                float *vr = v + (int64_t)(j0 + b) * hd;
                for (int d = 0; d < hd; d += 8)
                    _mm256_storeu_ps(vr + d, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(vh + d))));
            }
        }
        for (int d = 0; d < hd; d += 8) {
            __m256 r[8];
            for (int b = 0; b < 8; b++)
                r[b] = kr[b] ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(kr[b] + d)))
                             : _mm256_setzero_ps();
            __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
            __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
            __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
            __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
            __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
            __m256 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
            __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
            __m256 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
            __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
            __m256 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
            __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
            __m256 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
            float *o = kt + (int64_t)d * ld + j0;
            _mm256_storeu_ps(o + 0 * ld, _mm256_permute2f128_ps(s0, s4, 0x20));
            _mm256_storeu_ps(o + 1 * ld, _mm256_permute2f128_ps(s1, s5, 0x20));
            _mm256_storeu_ps(o + 2 * ld, _mm256_permute2f128_ps(s2, s6, 0x20));
            _mm256_storeu_ps(o + 3 * ld, _mm256_permute2f128_ps(s3, s7, 0x20));
            _mm256_storeu_ps(o + 4 * ld, _mm256_permute2f128_ps(s0, s4, 0x31));
            _mm256_storeu_ps(o + 5 * ld, _mm256_permute2f128_ps(s1, s5, 0x31));
            _mm256_storeu_ps(o + 6 * ld, _mm256_permute2f128_ps(s2, s6, 0x31));
            _mm256_storeu_ps(o + 7 * ld, _mm256_permute2f128_ps(s3, s7, 0x31));
        }
    }
}
#endif

/* The fast version when the CPU has it (head_dim % 8 == 0), else the ref. */
static att_gather_fn att_gather_kv_fast = att_gather_kv_ref;
/* true: attend_item uses att_heads_avx2 (when head_dim % 8 == 0) */
static bool att_heads_fast = false;
static pthread_once_t att_once = PTHREAD_ONCE_INIT;

static void att_choose(void) {
#ifdef ATT_HAVE_F16C
    __builtin_cpu_init();
    /* F16C by CPUID (leaf 1, ECX bit 29): older clang has no "f16c" name
     * for __builtin_cpu_supports. */
    unsigned a, b, c, d;
    bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
    /* SGL_ATT_NO_AVX2=1: the portable loops (for tests and comparisons) */
    if (__builtin_cpu_supports("avx2") && f16c && !getenv("SGL_ATT_NO_AVX2")) {
        att_gather_kv_fast = att_gather_kv_f16c;
        att_heads_fast = true;
    }
#endif
}

#define ATT_TILE 64

/* s[j] = sum_d q[d] * kt[d * ld + j] for j < nk (q already scaled). Keys
 * go in tiles of 32 held in registers across the d loop; a tile computes
 * exactly what the plain loop (the tail) does. */
ATT_CLONES static void att_scores(float *restrict s, const float *restrict q,
                                  const float *restrict kt, int64_t ld, int32_t nk, int hd) {
    int32_t j0 = 0;
    for (; j0 + ATT_TILE <= nk; j0 += ATT_TILE) {
        float acc[ATT_TILE];
        for (int jj = 0; jj < ATT_TILE; jj++) acc[jj] = q[0] * kt[j0 + jj];
        for (int d = 1; d < hd; d++) {
            const float *row = kt + (int64_t)d * ld + j0;
            float qd = q[d];
            for (int jj = 0; jj < ATT_TILE; jj++) acc[jj] += qd * row[jj];
        }
        for (int jj = 0; jj < ATT_TILE; jj++) s[j0 + jj] = acc[jj];
    }
    for (int32_t j = j0; j < nk; j++) s[j] = q[0] * kt[j];
    for (int d = 1; d < hd; d++) {
        const float *row = kt + (int64_t)d * ld;
        float qd = q[d];
        for (int32_t j = j0; j < nk; j++) s[j] += qd * row[j];
    }
}

/* exp(x) for finite x <= 0 (scores minus their max): range reduction by
 * ln 2 and a degree-6 polynomial, relative error < 3e-7; below about -87
 * the result stays at ~1e-38 (the power of two is clamped in the integer
 * domain) instead of going to 0, which no softmax sum can notice. Plain
 * arithmetic without branches, so the loop vectorizes and every lane gives
 * the same bits as the scalar code. */
static inline float att_exp(float x) {
    float t = x * 1.44269504088896341f + 12582912.0f; /* 1.5 * 2^23: round to integer */
    float n = t - 12582912.0f;
    float r = x - n * 0.693145751953125f;
    r = r - n * 1.428606765330187e-06f;
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (0.16666667f + r * (0.041666668f +
                         r * (0.0083333338f + r * 0.0013888889f)))));
    uint32_t ti;
    memcpy(&ti, &t, sizeof ti);
    int32_t k = (int32_t)(ti - 0x4B400000u); /* n as an integer */
    k = k < -126 ? -126 : k;
    /* 2^k; unsigned, so a NaN score (a forward about to fail) is no UB */
    uint32_t eb = ((uint32_t)k + 127u) << 23;
    float e;
    memcpy(&e, &eb, sizeof e);
    return p * e;
}

/* s[j] = exp(s[j] - mx); returns the sum in j order. */
ATT_CLONES static float att_softmax_exp(float *restrict s, int32_t nk, float mx) {
    for (int32_t j = 0; j < nk; j++) s[j] = att_exp(s[j] - mx);
    float sum = 0.0f;
    for (int32_t j = 0; j < nk; j++) sum += s[j];
    return sum;
}

/* out[d] = (sum_j p[j] * v[j * hd + d]) * inv for d < hd, the sum from 0
 * in j order. Columns go in tiles of ATT_TILE held in registers across
 * the j loop; a tile computes exactly what the plain loop (the tail) does. */
ATT_CLONES static void att_weighted_v(float *restrict out, const float *restrict p,
                                      const float *restrict v, int32_t nk, int hd, float inv) {
    int d0 = 0;
    for (; d0 + ATT_TILE <= hd; d0 += ATT_TILE) {
        float acc[ATT_TILE];
        for (int dd = 0; dd < ATT_TILE; dd++) acc[dd] = 0.0f;
        for (int32_t j = 0; j < nk; j++) {
            const float *row = v + (int64_t)j * hd + d0;
            float pj = p[j];
            for (int dd = 0; dd < ATT_TILE; dd++) acc[dd] += pj * row[dd];
        }
        for (int dd = 0; dd < ATT_TILE; dd++) out[d0 + dd] = acc[dd] * inv;
    }
    if (d0 == hd) return;
    for (int d = d0; d < hd; d++) out[d] = 0.0f;
    for (int32_t j = 0; j < nk; j++) {
        const float *row = v + (int64_t)j * hd;
        float pj = p[j];
        for (int d = d0; d < hd; d++) out[d] += pj * row[d];
    }
    for (int d = d0; d < hd; d++) out[d] *= inv;
}

#ifdef ATT_HAVE_F16C
/* The AVX2 path for NR (1..3) query heads of one kv group at once: the same
 * IEEE operations in the same order as att_scores, the max, att_softmax_exp
 * and att_weighted_v (mul then add, no FMA, sums in key order), so every
 * value is bit-identical to theirs. Each K^T / V vector is loaded once for the
 * NR heads instead of once per head (at long contexts these loads come from
 * L2 and bounded the one-head loops), and the NR sequential softmax sums run
 * interleaved. Scores are computed up to nk rounded up to 8 keys (the gather
 * zero-fills K^T columns up to there); entries past nk are never read. */
#define ATT_AI static inline __attribute__((always_inline, target("avx2,f16c")))

/* s[r * sld + j0 + i] for r < NR, i < 8 * NV: scores over keys j0.. */
ATT_AI void att_sc_tile(const int NR, const int NV, float *s, int64_t sld, const float *q, int hd,
                        const float *kt, int64_t ld, int32_t j0) {
    __m256 acc[3][4];
    for (int r = 0; r < NR; r++) {
        __m256 q0 = _mm256_set1_ps(q[r * hd]);
        for (int v = 0; v < NV; v++) acc[r][v] = _mm256_mul_ps(q0, _mm256_loadu_ps(kt + j0 + 8 * v));
    }
    for (int d = 1; d < hd; d++) {
        const float *row = kt + (int64_t)d * ld + j0;
        __m256 qd[3];
        for (int r = 0; r < NR; r++) qd[r] = _mm256_set1_ps(q[r * hd + d]);
        for (int v = 0; v < NV; v++) {
            __m256 k = _mm256_loadu_ps(row + 8 * v);
            for (int r = 0; r < NR; r++)
                acc[r][v] = _mm256_add_ps(acc[r][v], _mm256_mul_ps(qd[r], k));
        }
    }
    for (int r = 0; r < NR; r++)
        for (int v = 0; v < NV; v++) _mm256_storeu_ps(s + r * sld + j0 + 8 * v, acc[r][v]);
}

/* out[r * hd + d0 + i] = (sum_j p_r[j] v[j][d0 + i]) * inv[r], i < 8 * NV.
 * V rows from v (f32, gathered), or with vh straight from the f16 pool
 * (row of key j at vh + slots[j] * vstride; f16 -> f32 is exact). */
ATT_AI void att_v_tile(const int NR, const int NV, float *out, const float *p, int64_t sld,
                       const float *v, const uint16_t *vh, int64_t vstride, const int32_t *slots,
                       int32_t nk, int hd, const float *inv, int d0) {
    __m256 acc[3][4];
    for (int r = 0; r < NR; r++)
        for (int i = 0; i < NV; i++) acc[r][i] = _mm256_setzero_ps();
    for (int32_t j = 0; j < nk; j++) {
        const float *row = vh ? NULL : v + (int64_t)j * hd + d0;
        const uint16_t *rowh = vh ? vh + (int64_t)slots[j] * vstride + d0 : NULL;
        __m256 pj[3];
        for (int r = 0; r < NR; r++) pj[r] = _mm256_set1_ps(p[r * sld + j]);
        for (int i = 0; i < NV; i++) {
            __m256 x = vh ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(rowh + 8 * i)))
                          : _mm256_loadu_ps(row + 8 * i);
            for (int r = 0; r < NR; r++)
                acc[r][i] = _mm256_add_ps(acc[r][i], _mm256_mul_ps(pj[r], x));
        }
    }
    for (int r = 0; r < NR; r++)
        for (int i = 0; i < NV; i++)
            _mm256_storeu_ps(out + r * hd + d0 + 8 * i,
                             _mm256_mul_ps(acc[r][i], _mm256_set1_ps(inv[r])));
}

/* Max of s[0..n) (no NaN in scores: the result equals the ordered scalar
 * max up to the sign of a zero, which s - max and att_exp do not see). */
ATT_AI float att_max(const float *s, int32_t n) {
    int32_t j = 0;
    float mx = s[0];
    if (n >= 8) {
        __m256 m = _mm256_loadu_ps(s);
        for (j = 8; j + 8 <= n; j += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(s + j));
        float t[8];
        _mm256_storeu_ps(t, m);
        mx = t[0];
        for (int i = 1; i < 8; i++) mx = t[i] > mx ? t[i] : mx;
    }
    for (; j < n; j++) mx = s[j] > mx ? s[j] : mx;
    return mx;
}

ATT_AI void att_heads_nr(const int NR, float *out, float *m, float *l, const float *qs,
                         float *sc, int64_t sld, const float *kt, int64_t ld, const float *v,
                         const uint16_t *vh, int64_t vstride, const int32_t *slots, int32_t nk,
                         int hd) {
    int32_t nk8 = (nk + 7) & ~7, j0 = 0;
    for (; j0 + 32 <= nk8; j0 += 32) att_sc_tile(NR, 4, sc, sld, qs, hd, kt, ld, j0);
    for (; j0 < nk8; j0 += 8) att_sc_tile(NR, 1, sc, sld, qs, hd, kt, ld, j0);
    float sum[3] = {0.0f, 0.0f, 0.0f}, one[3] = {1.0f, 1.0f, 1.0f};
    for (int r = 0; r < NR; r++) {
        float *s = sc + r * sld;
        float mx = att_max(s, nk);
        m[r] = mx;
        for (int32_t j = 0; j < nk; j++) s[j] = att_exp(s[j] - mx);
    }
    for (int32_t j = 0; j < nk; j++)
        for (int r = 0; r < NR; r++) sum[r] += sc[r * sld + j];
    for (int r = 0; r < NR; r++) l[r] = sum[r];
    int d0 = 0;
    for (; d0 + 32 <= hd; d0 += 32)
        att_v_tile(NR, 4, out, sc, sld, v, vh, vstride, slots, nk, hd, one, d0);
    for (; d0 < hd; d0 += 8)
        att_v_tile(NR, 1, out, sc, sld, v, vh, vstride, slots, nk, hd, one, d0);
}

/* nr (1..3) heads: queries qs[r * hd..] (scaled); out[r * hd..] = the
 * unnormalised sum of p v, m[r] the max score, l[r] the sum of p. sc holds
 * nr score rows of sld >= nk + 8 floats. hd % 8 == 0. V from v, or when vh
 * is set from the f16 pool (see att_v_tile). */
__attribute__((target("avx2,f16c"))) static void
att_heads_avx2(int nr, float *out, float *m, float *l, const float *qs, float *sc, int64_t sld,
               const float *kt, int64_t ld, const float *v, const uint16_t *vh, int64_t vstride,
               const int32_t *slots, int32_t nk, int hd) {
    if (nr == 3)
        att_heads_nr(3, out, m, l, qs, sc, sld, kt, ld, v, vh, vstride, slots, nk, hd);
    else if (nr == 2)
        att_heads_nr(2, out, m, l, qs, sc, sld, kt, ld, v, vh, vstride, slots, nk, hd);
    else
        att_heads_nr(1, out, m, l, qs, sc, sld, kt, ld, v, vh, vstride, slots, nk, hd);
}
#endif

/* Folds one chunk's partial (acc, m, l) into the running state (o, *M, *L)
 * of one query head: the larger max wins and each side is rescaled by exp of
 * its distance to it. Element-wise (no reduction), so every caller computes
 * the same bits. */
static void att_combine(float *restrict o, float *M, float *L, const float *restrict acc, float m,
                        float l, int hd) {
    float mx = m > *M ? m : *M;
    float a = att_exp(*M - mx), b = att_exp(m - mx);
    *L = *L * a + l * b;
    *M = mx;
    for (int d = 0; d < hd; d++) o[d] = o[d] * a + acc[d] * b;
}

/* o *= 1 / L: the end of a query head's chunks. */
static void att_finish(float *restrict o, float L, int hd) {
    float inv = 1.0f / L;
    for (int d = 0; d < hd; d++) o[d] *= inv;
}

/* The partial of nr query heads (queries qs[r * hd..], scaled) over the nk
 * keys of one chunk, K^T in sc->k and V in sc->v, or V from the f16 pool
 * when vh is set (fast path only): acc[r * hd..] = sum_j p_j v_j in key
 * order, m[r] = max score, l[r] = sum_j p_j in key order, p_j = exp(s_j - m). */
static void att_chunk_part(bool fast, int nr, float *acc, float *m, float *l, const float *qs,
                           att_scratch *sc, const uint16_t *vh, int64_t vstride,
                           const int32_t *slots, int32_t nk, int hd) {
#ifdef ATT_HAVE_F16C
    if (fast) {
        att_heads_avx2(nr, acc, m, l, qs, sc->score, ATT_LD, sc->k, ATT_LD, sc->v, vh, vstride,
                       slots, nk, hd);
        return;
    }
#endif
    (void)fast, (void)vh, (void)vstride, (void)slots;
    for (int r = 0; r < nr; r++) {
        att_scores(sc->score, qs + r * hd, sc->k, ATT_LD, nk, hd);
        float mx = sc->score[0];
        for (int32_t j = 1; j < nk; j++) mx = sc->score[j] > mx ? sc->score[j] : mx;
        m[r] = mx;
        l[r] = att_softmax_exp(sc->score, nk, mx);
        att_weighted_v(acc + r * hd, sc->score, sc->v, nk, hd, 1.0f);
    }
}

typedef struct att_job {
    cpu_att *c;
    const kb_kv *kv;
    int layer;
    const kb_att_shape *sh;
    const float *q;
    float *out;
    int n_items;        /* attention work items (x n_kv_heads) */
    atomic_int next_item;
} att_job;

/* One work item: tokens [t0, t1) of one sequence, kv head kvh, and either
 * every chunk (chunk < 0) or one chunk of a single token (see the file
 * comment). For each chunk the keys' K (transposed) and V are converted to
 * f32 once, then every query head of the group and every token that
 * reaches the chunk takes its partial. */
static void attend_item(att_job *aj, int item, att_scratch *sc) {
    cpu_att *cp = aj->c;
    const kb_att_shape *c = aj->sh;
    const kb_kv *kv = aj->kv;
    int q_dim = c->n_heads * c->head_dim;
    int kvh = item % c->n_kv_heads;
    int it = item / c->n_kv_heads;
    const kb_seq *sq = &cp->b->seqs[cp->item_seq[it]];
    const int32_t *slots = sq->slots;
    int32_t t0 = cp->item_t0[it], t1 = cp->item_t1[it], chunk = cp->item_chunk[it];
    int64_t row0 = sq->row0; /* batch row of new token 0 of this seq */
    int hd = c->head_dim;
    int n_rep = c->n_heads / c->n_kv_heads;
    int32_t n_keys = sq->pos0 + t1; /* keys 0..pos of the block's last token */
    bool fast = att_heads_fast && hd % 8 == 0;
    att_gather_fn gather = hd % 8 == 0 ? att_gather_kv_fast : att_gather_kv_ref;
    uint64_t layer_off = (uint64_t)aj->layer * (uint64_t)kv->n_slots * (uint64_t)kv->kv_dim;
    const uint16_t *kbase = kv->k + layer_off + kvh * hd;
    const uint16_t *vbase = kv->v + layer_off + kvh * hd;
    float scale = 1.0f / sqrtf((float)hd);
    float qs[3 * 1024]; /* head_dim <= 1024 (checked at load) */
    float m[3], l[3];
    if (chunk >= 0) {
        /* one chunk of one token: V is read once, straight from the f16
         * pool on the fast path instead of converted first */
        int32_t k0 = chunk * ATT_CHUNK, nk = SGL_MIN(ATT_CHUNK, n_keys - k0);
        int32_t sp = cp->item_split[it], nch = cp->split_nch[sp];
        int64_t part0 = cp->split_poff[sp];
        gather(sc->k, ATT_LD, fast ? NULL : sc->v, kbase, vbase, kv->kv_dim, slots + k0, nk, hd);
        int64_t row = row0 + t0;
        for (int h0 = 0; h0 < n_rep; h0 += 3) {
            int nr = SGL_MIN(3, n_rep - h0);
            int h = kvh * n_rep + h0;
            const float *q = aj->q + row * q_dim + (int64_t)h * hd;
            for (int d = 0; d < nr * hd; d++) qs[d] = q[d] * scale;
            int64_t pi = (part0 + chunk) * c->n_heads + h;
            att_chunk_part(fast, nr, cp->part_acc + pi * hd, m, l, qs, sc, fast ? vbase : NULL,
                           kv->kv_dim, slots + k0, nk, hd);
            for (int r = 0; r < nr; r++) {
                cp->part_ml[(pi + r) * 2] = m[r];
                cp->part_ml[(pi + r) * 2 + 1] = l[r];
            }
        }
        /* the last chunk to finish folds them all, in chunk order */
        if (atomic_fetch_add_explicit(&cp->split_done[(int64_t)sp * c->n_kv_heads + kvh], 1,
                                      memory_order_acq_rel) != nch - 1)
            return;
        for (int r = 0; r < n_rep; r++) {
            int h = kvh * n_rep + r;
            float *o = aj->out + row * q_dim + (int64_t)h * hd;
            int64_t pi = part0 * c->n_heads + h;
            memcpy(o, cp->part_acc + pi * hd, sizeof(float) * (size_t)hd);
            float M = cp->part_ml[pi * 2], L = cp->part_ml[pi * 2 + 1];
            for (int32_t k = 1; k < nch; k++) {
                pi = (part0 + k) * c->n_heads + h;
                att_combine(o, &M, &L, cp->part_acc + pi * hd, cp->part_ml[pi * 2],
                            cp->part_ml[pi * 2 + 1], hd);
            }
            att_finish(o, L, hd);
        }
        return;
    }
    int32_t nch = (n_keys + ATT_CHUNK - 1) / ATT_CHUNK;
    for (int32_t k = 0; k < nch; k++) {
        int32_t k0 = k * ATT_CHUNK;
        gather(sc->k, ATT_LD, sc->v, kbase, vbase, kv->kv_dim, slots + k0,
               SGL_MIN(ATT_CHUNK, n_keys - k0), hd);
        for (int32_t t = t0; t < t1; t++) {
            int32_t nk = sq->pos0 + t + 1 - k0; /* keys of the chunk this token sees */
            if (nk <= 0) continue;
            if (nk > ATT_CHUNK) nk = ATT_CHUNK;
            int64_t row = row0 + t;
            for (int h0 = 0; h0 < n_rep; h0 += 3) {
                int nr = SGL_MIN(3, n_rep - h0);
                int h = kvh * n_rep + h0;
                const float *q = aj->q + row * q_dim + (int64_t)h * hd;
                float *o = aj->out + row * q_dim + (int64_t)h * hd;
                float *ml = sc->ml + ((int64_t)(t - t0) * n_rep + h0) * 2;
                for (int d = 0; d < nr * hd; d++) qs[d] = q[d] * scale;
                /* chunk 0 starts the state in place; later ones fold in */
                att_chunk_part(fast, nr, k == 0 ? o : sc->acc, m, l, qs, sc, NULL, 0, NULL, nk,
                               hd);
                for (int r = 0; r < nr; r++) {
                    if (k == 0) {
                        ml[2 * r] = m[r];
                        ml[2 * r + 1] = l[r];
                    } else {
                        att_combine(o + r * hd, &ml[2 * r], &ml[2 * r + 1], sc->acc + r * hd,
                                    m[r], l[r], hd);
                    }
                }
            }
        }
    }
    for (int32_t t = t0; t < t1; t++)
        for (int r = 0; r < n_rep; r++)
            att_finish(aj->out + (row0 + t) * q_dim + (int64_t)(kvh * n_rep + r) * hd,
                       sc->ml[((int64_t)(t - t0) * n_rep + r) * 2 + 1], hd);
}

static void task_attention(void *ctx, int ith, int nth) {
    att_job *aj = ctx;
    (void)nth;
    att_scratch *sc = &aj->c->att_s[ith];
    for (;;) {
        /* last items first: a sequence's later token blocks attend to more
         * keys, so the longest items start early and the tail is short */
        int item = aj->n_items - 1 -
                   atomic_fetch_add_explicit(&aj->next_item, 1, memory_order_relaxed);
        if (item < 0) break;
        attend_item(aj, item, sc);
    }
}

static void att_scratch_free(att_scratch *a) {
    free(a->k), free(a->v), free(a->score), free(a->acc), free(a->ml);
    memset(a, 0, sizeof *a);
}

/* Scratch of every attention thread for head_dim hd and n_heads query
 * heads, and the partials of the batch's split rows. Returns 0 or -1 (out
 * of memory). */
static int att_reserve(cpu_att *c, int64_t hd, int64_t n_heads, int64_t n_kv) {
    if (hd > c->cap_head_dim || n_heads > c->cap_heads) {
        hd = SGL_MAX(hd, c->cap_head_dim);
        n_heads = SGL_MAX(n_heads, c->cap_heads);
        c->cap_head_dim = c->cap_heads = 0;
        for (int i = 0; i < c->n_att; i++) {
            att_scratch *a = &c->att_s[i];
            att_scratch_free(a);
            a->k = malloc(sizeof(float) * (size_t)(hd * ATT_LD));
            a->v = malloc(sizeof(float) * (size_t)(hd * ATT_CHUNK));
            a->score = malloc(sizeof(float) * (size_t)(3 * ATT_LD));
            a->acc = malloc(sizeof(float) * (size_t)(3 * hd));
            a->ml = malloc(sizeof(float) * (size_t)(ATT_TOKEN_BLOCK * n_heads * 2));
            if (!a->k || !a->v || !a->score || !a->acc || !a->ml) return -1;
        }
        c->cap_head_dim = hd;
        c->cap_heads = n_heads;
        c->cap_part = 0; /* sized by heads and head_dim too */
    }
    if (c->n_part > c->cap_part) {
        free(c->part_acc), free(c->part_ml);
        c->part_acc = malloc(sizeof(float) * (size_t)(c->n_part * c->cap_heads * c->cap_head_dim));
        c->part_ml = malloc(sizeof(float) * (size_t)(c->n_part * c->cap_heads * 2));
        c->cap_part = c->part_acc && c->part_ml ? c->n_part : 0;
        if (!c->cap_part) return -1;
    }
    if (c->n_split * n_kv > c->cap_done) {
        free(c->split_done);
        c->split_done = malloc(sizeof(atomic_int) * (size_t)(c->n_split * n_kv));
        c->cap_done = c->split_done ? c->n_split * n_kv : 0;
        if (!c->split_done) return -1;
    }
    return 0;
}

void cpu_att_run(cpu_att *c, kern_pool *pool, const kb_kv *kv, int layer,
                 const kb_att_shape *sh, const float *q, float *out) {
    att_job aj = {.c = c, .kv = kv, .layer = layer, .sh = sh, .q = q, .out = out};
    if (att_reserve(c, sh->head_dim, sh->n_heads, sh->n_kv_heads)) {
        /* out of memory: NaN rows make the forward fail with a message */
        for (int64_t i = 0; i < c->b->n_rows * sh->n_heads * sh->head_dim; i++) out[i] = NAN;
        return;
    }
    for (int64_t i = 0; i < c->n_split * sh->n_kv_heads; i++) atomic_init(&c->split_done[i], 0);
    aj.n_items = (int)(c->n_items * sh->n_kv_heads);
    atomic_init(&aj.next_item, 0);
    if (aj.n_items > 1 && kern_pool_threads(pool) > 1)
        kern_pool_run(pool, task_attention, &aj);
    else
        task_attention(&aj, 0, 1);
}

/* Grows *p to n int32 (contents lost). Returns 0 or -1. */
static int grow_i32(int32_t **p, int64_t n) {
    free(*p);
    *p = malloc(sizeof(int32_t) * (size_t)(n > 0 ? n : 1));
    return *p ? 0 : -1;
}

int cpu_att_begin(cpu_att *c, const kb_batch *b, sgl_error *err) {
    pthread_once(&att_once, att_choose);
    c->b = b;
    int64_t items = 0, split = 0, parts = 0;
    for (int32_t i = 0; i < b->n_seqs; i++) {
        const kb_seq *s = &b->seqs[i];
        if (s->n_new == 1) {
            int32_t nch = (s->pos0 + 1 + ATT_CHUNK - 1) / ATT_CHUNK;
            items += nch, split++, parts += nch;
        } else {
            items += (s->n_new + ATT_TOKEN_BLOCK - 1) / ATT_TOKEN_BLOCK;
        }
    }
    if (items > c->cap_items) {
        c->cap_items = 0;
        if (grow_i32(&c->item_seq, items) || grow_i32(&c->item_t0, items) ||
            grow_i32(&c->item_t1, items) || grow_i32(&c->item_chunk, items) ||
            grow_i32(&c->item_split, items))
            return sgl_error_set(err, "model: out of memory");
        c->cap_items = items;
    }
    if (split > c->cap_split) {
        c->cap_split = 0;
        if (grow_i32(&c->split_poff, split) || grow_i32(&c->split_nch, split))
            return sgl_error_set(err, "model: out of memory");
        c->cap_split = split;
    }
    int64_t it = 0, sp = 0, poff = 0;
    for (int32_t i = 0; i < b->n_seqs; i++) {
        const kb_seq *s = &b->seqs[i];
        if (s->n_new == 1) {
            int32_t nch = (s->pos0 + 1 + ATT_CHUNK - 1) / ATT_CHUNK;
            c->split_poff[sp] = (int32_t)poff;
            c->split_nch[sp] = nch;
            for (int32_t k = 0; k < nch; k++, it++) {
                c->item_seq[it] = i, c->item_t0[it] = 0, c->item_t1[it] = 1;
                c->item_chunk[it] = k, c->item_split[it] = (int32_t)sp;
            }
            poff += nch, sp++;
            continue;
        }
        for (int32_t t0 = 0; t0 < s->n_new; t0 += ATT_TOKEN_BLOCK, it++) {
            c->item_seq[it] = i;
            c->item_t0[it] = t0;
            c->item_t1[it] = SGL_MIN(t0 + ATT_TOKEN_BLOCK, s->n_new);
            c->item_chunk[it] = -1, c->item_split[it] = -1;
        }
    }
    c->n_items = items;
    c->n_split = split;
    c->n_part = parts;
    return 0;
}

cpu_att *cpu_att_new(int n_threads) {
    cpu_att *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->n_att = n_threads < 1 ? 1 : n_threads;
    c->att_s = calloc((size_t)c->n_att, sizeof *c->att_s);
    if (!c->att_s) {
        free(c);
        return NULL;
    }
    return c;
}

void cpu_att_free(cpu_att *c) {
    if (!c) return;
    for (int i = 0; i < c->n_att; i++) att_scratch_free(&c->att_s[i]);
    free(c->att_s);
    free(c->item_seq), free(c->item_t0), free(c->item_t1), free(c->item_chunk);
    free(c->item_split), free(c->split_poff), free(c->split_nch), free(c->split_done);
    free(c->part_acc), free(c->part_ml);
    free(c);
}
