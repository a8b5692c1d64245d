/* attention: the CPU backend's attention kernels (see attention.h), run on
 * the kernels' thread pool over the f16 KV pool slots of the batch.
 *
 * Keys go in fixed chunks of ATT_CHUNK positions ([0, 512), [512, 1024),
 * ...: absolute positions, the same for every query, batch and thread
 * count). A query's output is computed chunk by chunk: per chunk the scores,
 * their max m, p = exp(s - m), l = sum p and acc = sum p v, each in one
 * fixed order (see "one chunk of keys" below); then the chunks are folded in
 * chunk order (att_combine: the running max, l and acc rescaled by exp of
 * the max differences), and the result is acc * (1 / l). With one chunk (up
 * to 512 keys) that is the plain softmax. K and V are read straight from
 * the f16 pool: no f32 copy of the context, no scores buffer longer than a
 * chunk. The work items:
 *   - a block of up to ATT_TOKEN_BLOCK new tokens of one sequence and one kv
 *     head (prefill) walks the chunks in order itself, two tokens a pass
 *     (their query heads side by side in one register tile, so each K and V
 *     row read from the chunk serves both; the later token's extra key is
 *     its own tail);
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

/* New tokens per attention work item of a prefill: small enough to balance
 * threads on a single long prefill, large enough to reuse each chunk's K/V
 * from cache. */
#define ATT_TOKEN_BLOCK 64
/* Keys per chunk (a multiple of 8), and the row stride of the per-head
 * score rows (room for a chunk rounded up to 8). */
#define ATT_CHUNK 512
#define ATT_LD (ATT_CHUNK + 8)
/* Query heads sharing one pass over a chunk's K and V: up to 4 with
 * AVX-512's 32 vector registers (att_choose), else 3 (16 registers). GQA
 * models with 4 query heads per kv head (Llama 3) then read K and V once
 * per chunk instead of twice. */
#define ATT_MAX_NR 4
/* Rows of one pass: up to ATT_MAX_NR query heads of up to 2 tokens. */
#define ATT_MAX_ROWS (2 * ATT_MAX_NR)

/* Chunks of keys of a query that sees n_keys keys. */
static inline int32_t att_n_chunks(int32_t n_keys) { return (n_keys + ATT_CHUNK - 1) / ATT_CHUNK; }

/* Keys of a chunk that token u of a pass sees when its token 0 sees nk0
 * (each later token sees one more, up to the chunk's end). */
static inline int32_t att_nk(int32_t nk0, int u) { return nk0 + u < ATT_CHUNK ? nk0 + u : ATT_CHUNK; }

typedef struct att_scratch {
    float *k, *v;  /* [head_dim] one K / V row in f32 (portable loops) */
    float *q;      /* [ATT_MAX_ROWS][head_dim] the scaled queries of a pass */
    float *score;  /* [ATT_MAX_ROWS][ATT_LD] scores, then weights, of the rows of a pass */
    float *acc;    /* [ATT_MAX_ROWS][head_dim] one chunk's partial outputs */
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
    atomic_int *split_done; /* [n_split][n_kv_heads] chunks finished */
    int64_t cap_done;       /* entries of split_done */
    int64_t n_part, cap_part; /* partial chunks of the batch; buffers hold cap_part */
    float *part_acc;          /* [n_part][n_heads][head_dim] */
    float *part_ml;           /* [n_part][n_heads][2] max, sum */
};

/* ---- one chunk of keys ------------------------------------------------------------
 *
 * The arithmetic of a query head over one chunk of nk keys, defined once and
 * computed bit-identically by the AVX2 kernel and the portable loops:
 *   score s_j  = tree(L), L[i] = fma-chain over d = i, i + 8, ... (d < hd) of
 *                q[d] * k_j[d], from 0 in d order; q is pre-scaled by
 *                1/sqrt(head_dim); tree(L) = ((L0+L1)+(L2+L3))+((L4+L5)+(L6+L7))
 *   m          = max_j s_j
 *   p_j        = att_exp(s_j - m)
 *   l          = tree(S), S[i] = sum of p_j over j = i, i + 8, ... in j order
 *   acc[d]     = fma-chain over j of p_j * v_j[d], from 0 in j order
 * (fma = one rounding: fmaf in C, vfmadd on AVX2; the file is built as ISO
 * C, so the compiler contracts nothing on its own). K and V rows are read
 * from the f16 pool at the chunk's slots; f16 -> f32 is exact.
 */

static inline float att_tree8(const float *L) {
    return ((L[0] + L[1]) + (L[2] + L[3])) + ((L[4] + L[5]) + (L[6] + L[7]));
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

/* The portable loops are built twice on x86-64 (att_choose picks one): with
 * FMA enabled, where fmaf is one instruction and the 8-lane loops
 * vectorize, and plain, where fmaf is libm's (correctly rounded, so the same
 * bits, only slower). */
#define ATT_REF_ARGS                                                                      \
    int nr, float *acc, float *m, float *l, const float *qs, const uint16_t *kbase,          \
        const uint16_t *vbase, int64_t stride, const int32_t *slots, int32_t nk, int hd,     \
        float *kf, float *vf, float *p, int64_t sld
#define ATT_REF_PASS nr, acc, m, l, qs, kbase, vbase, stride, slots, nk, hd, kf, vf, p, sld
static inline __attribute__((always_inline)) void att_chunk_ref_body(ATT_REF_ARGS) {
    int hd8 = hd & ~7;
    for (int32_t j = 0; j < nk; j++) {
        kern_f16_to_f32(kf, kbase + (int64_t)slots[j] * stride, hd);
        for (int r = 0; r < nr; r++) {
            const float *q = qs + r * hd;
            float L[8] = {0};
            for (int d0 = 0; d0 < hd8; d0 += 8)
                for (int i = 0; i < 8; i++) L[i] = fmaf(q[d0 + i], kf[d0 + i], L[i]);
            for (int i = 0; hd8 + i < hd; i++) L[i] = fmaf(q[hd8 + i], kf[hd8 + i], L[i]);
            p[r * sld + j] = att_tree8(L);
        }
    }
    for (int r = 0; r < nr; r++) {
        float *pr = p + r * sld, mx = pr[0];
        for (int32_t j = 1; j < nk; j++) mx = pr[j] > mx ? pr[j] : mx;
        float S[8] = {0};
        for (int32_t j = 0; j < nk; j++) {
            pr[j] = att_exp(pr[j] - mx);
            S[j & 7] += pr[j];
        }
        m[r] = mx;
        l[r] = att_tree8(S);
        for (int d = 0; d < hd; d++) acc[r * hd + d] = 0.0f;
    }
    for (int32_t j = 0; j < nk; j++) {
        kern_f16_to_f32(vf, vbase + (int64_t)slots[j] * stride, hd);
        for (int r = 0; r < nr; r++) {
            float pj = p[r * sld + j], *a = acc + r * hd;
            for (int d = 0; d < hd; d++) a[d] = fmaf(pj, vf[d], a[d]);
        }
    }
}

static void att_chunk_ref_plain(ATT_REF_ARGS) { att_chunk_ref_body(ATT_REF_PASS); }
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2,fma"))) static void att_chunk_ref_fma(ATT_REF_ARGS) {
    att_chunk_ref_body(ATT_REF_PASS);
}
#endif
/* the build of the portable loops in use (att_choose) */
static void (*att_chunk_ref)(ATT_REF_ARGS) = att_chunk_ref_plain;

#if defined(__x86_64__) && defined(__GNUC__)
#define ATT_HAVE_AVX2 1
#define ATT_AI static inline __attribute__((always_inline, target("avx2,fma,f16c")))

ATT_AI __m256 att_ld_h(const uint16_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

/* Keys ahead that a cold chunk's loops prefetch (a single decode token
 * reads each K and V row once, at slots the hardware cannot guess). */
#define ATT_PF 32

/* Prefetches the hd f16 values at row. */
ATT_AI void att_prefetch_row(const uint16_t *row, int hd) {
    for (int o = 0; o < 2 * hd; o += 64) _mm_prefetch((const char *)row + o, _MM_HINT_T0);
}

/* s[r * sld + j0 + i] for r < NROWS, i < KB (2 or 4): the scores of keys
 * j0.. (rows kr[i]) for the query rows q[r * hd..]; the lane sums L of a
 * (row, key) are one vector, folded by att_tree8's order through hadds and
 * a 128-bit add. Every accumulator takes its FMAs in d order whichever
 * operand the loop keeps in registers, so the bits do not depend on NROWS
 * or KB. */
ATT_AI void att_sc(const int NROWS, const int KB, float *s, int64_t sld, const float *q, int hd,
                   const uint16_t *const *kr, int32_t j0) {
    __m256 acc[ATT_MAX_ROWS][4];
    for (int r = 0; r < NROWS; r++)
        for (int i = 0; i < KB; i++) acc[r][i] = _mm256_setzero_ps();
    for (int d = 0; d < hd; d += 8) {
        if (KB >= NROWS) { /* few rows: keep the queries, stream the keys */
            __m256 qd[ATT_MAX_ROWS];
            for (int r = 0; r < NROWS; r++) qd[r] = _mm256_loadu_ps(q + r * hd + d);
            for (int i = 0; i < KB; i++) {
                __m256 k = att_ld_h(kr[i] + d);
                for (int r = 0; r < NROWS; r++) acc[r][i] = _mm256_fmadd_ps(qd[r], k, acc[r][i]);
            }
        } else { /* many rows: keep the keys, stream the queries */
            __m256 k[4];
            for (int i = 0; i < KB; i++) k[i] = att_ld_h(kr[i] + d);
            for (int r = 0; r < NROWS; r++) {
                __m256 qd = _mm256_loadu_ps(q + r * hd + d);
                for (int i = 0; i < KB; i++) acc[r][i] = _mm256_fmadd_ps(qd, k[i], acc[r][i]);
            }
        }
    }
    for (int r = 0; r < NROWS; r++) {
        /* hadd(a, b) = [a0+a1, a2+a3, b0+b1, b2+b3 | a4+a5, a6+a7, b4+b5, b6+b7] */
        __m256 h01 = _mm256_hadd_ps(acc[r][0], acc[r][1]);
        if (KB == 4) {
            __m256 h23 = _mm256_hadd_ps(acc[r][2], acc[r][3]);
            __m256 h = _mm256_hadd_ps(h01, h23); /* [(01)+(23) of keys 0..3 | (45)+(67) ...] */
            __m128 sc = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
            _mm_storeu_ps(s + r * sld + j0, sc);
        } else {
            __m256 h = _mm256_hadd_ps(h01, h01); /* [(01)+(23) of keys 0, 1, 0, 1 | (45)+(67) ...] */
            __m128 sc = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
            _mm_storel_pi((__m64 *)(s + r * sld + j0), sc);
        }
    }
}

/* acc[r][i] += p[r * sld] * row[8 * i..] for rows r0 <= r < NROWS, i < NV:
 * one key of att_v_tile. */
ATT_AI void att_v_key(const int NROWS, const int NV, int r0, __m256 (*acc)[4], const float *p,
                      int64_t sld, const uint16_t *row) {
    if (NV >= NROWS) { /* keep the weights, stream the values */
        __m256 pj[ATT_MAX_ROWS];
        for (int r = r0; r < NROWS; r++) pj[r] = _mm256_broadcast_ss(p + r * sld);
        for (int i = 0; i < NV; i++) {
            __m256 x = att_ld_h(row + 8 * i);
            for (int r = r0; r < NROWS; r++) acc[r][i] = _mm256_fmadd_ps(pj[r], x, acc[r][i]);
        }
    } else { /* keep the values, stream the weights */
        __m256 x[4];
        for (int i = 0; i < NV; i++) x[i] = att_ld_h(row + 8 * i);
        for (int r = r0; r < NROWS; r++) {
            __m256 pj = _mm256_broadcast_ss(p + r * sld);
            for (int i = 0; i < NV; i++) acc[r][i] = _mm256_fmadd_ps(pj, x[i], acc[r][i]);
        }
    }
}

/* Output rows r = u * NRH + h (query head h of token u < NT), values d0 + i
 * for i < 8 * NV: the fma-chain over keys j of p_r[j] * v_j[d0 + i] from 0,
 * for j < att_nk(nk0, u) (stored at out[u] + h * hd). */
ATT_AI void att_v_tile(const int NT, const int NRH, const int NV, float *const *out, const float *p,
                       int64_t sld, const uint16_t *vbase, int64_t stride, const int32_t *slots,
                       int32_t nk0, int hd, int d0, bool pf) {
    const int NROWS = NT * NRH;
    const int32_t nkl = att_nk(nk0, NT - 1);
    __m256 acc[ATT_MAX_ROWS][4];
    for (int r = 0; r < NROWS; r++)
        for (int i = 0; i < NV; i++) acc[r][i] = _mm256_setzero_ps();
    /* keys every row sees, then the second token's rows alone */
    for (int32_t j = 0; j < nkl; j++) {
        const uint16_t *row = vbase + (int64_t)slots[j] * stride + d0;
        if (pf && j + ATT_PF < nkl) att_prefetch_row(vbase + (int64_t)slots[j + ATT_PF] * stride, hd);
        if (j < nk0)
            att_v_key(NROWS, NV, 0, acc, p + j, sld, row);
        else
            att_v_key(NROWS, NV, NRH, acc, p + j, sld, row);
    }
    for (int r = 0; r < NROWS; r++)
        for (int i = 0; i < NV; i++)
            _mm256_storeu_ps(out[r / NRH] + (r % NRH) * hd + d0 + 8 * i, acc[r][i]);
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

/* NRH query heads of NT (1 or 2) consecutive tokens over one chunk (rows
 * r = u * NRH + h, queries qs[r * hd..], scaled): token u sees the chunk's
 * first att_nk(nk0, u) keys and leaves its heads' partials at acc[u] +
 * h * hd, m[r], l[r] as in att_chunk_ref. Each K and V row read serves
 * every row that sees it. ACC is the accumulators a tile may use (12 of
 * AVX2's 16 registers, 24 of AVX-512's 32): it sets the keys a score tile
 * takes (4, else 2) and the V tile's width (up to 4 vectors). sc holds the
 * rows' scores, sld >= the last token's keys rounded up to 8 floats;
 * hd % 8 == 0. The scores of keys past a row's own count are computed with
 * the others' and dropped. */
ATT_AI void att_chunk_rows(const int NT, const int NRH, const int ACC, float *const *acc, float *m,
                           float *l, const float *qs, float *sc, int64_t sld, const uint16_t *kbase,
                           const uint16_t *vbase, int64_t stride, const int32_t *slots, int32_t nk0,
                           int hd, bool pf) {
    const int NROWS = NT * NRH;
    const int KB = NROWS * 4 <= ACC ? 4 : 2;
    const int NV = ACC / NROWS < 4 ? ACC / NROWS : 4;
    const int32_t nkl = att_nk(nk0, NT - 1);
    const uint16_t *kr[4];
    for (int32_t j0 = 0; j0 < nkl; j0 += KB) {
        /* past nkl (the last tile) key 0 stands in; its scores are dropped */
        for (int i = 0; i < KB; i++)
            kr[i] = kbase + (int64_t)slots[j0 + i < nkl ? j0 + i : 0] * stride;
        if (pf)
            for (int i = 0; i < KB; i++)
                if (j0 + ATT_PF + i < nkl) att_prefetch_row(kbase + (int64_t)slots[j0 + ATT_PF + i] * stride, hd);
        att_sc(NROWS, KB, sc, sld, qs, hd, kr, j0);
    }
    for (int r = 0; r < NROWS; r++) {
        float *s = sc + r * sld;
        int32_t nk = att_nk(nk0, r / NRH), nk8 = (nk + 7) & ~7;
        float mx = att_max(s, nk);
        m[r] = mx;
        for (int32_t j = 0; j < nk; j++) s[j] = att_exp(s[j] - mx);
        for (int32_t j = nk; j < nk8; j++) s[j] = 0.0f; /* + 0 leaves a lane sum as it is */
        __m256 S = _mm256_setzero_ps();
        for (int32_t j = 0; j < nk8; j += 8) S = _mm256_add_ps(S, _mm256_loadu_ps(s + j));
        float t[8];
        _mm256_storeu_ps(t, S);
        l[r] = att_tree8(t);
    }
    int d0 = 0;
    for (; d0 + 8 * NV <= hd; d0 += 8 * NV)
        att_v_tile(NT, NRH, NV, acc, sc, sld, vbase, stride, slots, nk0, hd, d0, pf && d0 == 0);
    for (; d0 < hd; d0 += 8)
        att_v_tile(NT, NRH, 1, acc, sc, sld, vbase, stride, slots, nk0, hd, d0, pf && d0 == 0);
}

/* att_chunk_rows for nr (1..4) heads of nt (1 or 2) tokens, ACC
 * accumulators a tile: the row counts made constants. */
#define ATT_ROWS_DISPATCH(ACC)                                                                     \
    switch (nt * 8 + nr) {                                                                         \
    case 9: att_chunk_rows(1, 1, ACC, ATT_FAST_PASS); break;                                       \
    case 10: att_chunk_rows(1, 2, ACC, ATT_FAST_PASS); break;                                      \
    case 11: att_chunk_rows(1, 3, ACC, ATT_FAST_PASS); break;                                      \
    case 12: att_chunk_rows(1, 4, ACC, ATT_FAST_PASS); break;                                      \
    case 17: att_chunk_rows(2, 1, ACC, ATT_FAST_PASS); break;                                      \
    case 18: att_chunk_rows(2, 2, ACC, ATT_FAST_PASS); break;                                      \
    case 19: att_chunk_rows(2, 3, ACC, ATT_FAST_PASS); break;                                      \
    default: att_chunk_rows(2, 4, ACC, ATT_FAST_PASS); break;                                      \
    }
#define ATT_FAST_ARGS                                                                              \
    int nr, int nt, float *const *acc, float *m, float *l, const float *qs, float *sc, int64_t sld, \
        const uint16_t *kbase, const uint16_t *vbase, int64_t stride, const int32_t *slots,         \
        int32_t nk0, int hd, bool pf
#define ATT_FAST_PASS acc, m, l, qs, sc, sld, kbase, vbase, stride, slots, nk0, hd, pf

/* With AVX2's 16 vector registers: 12 accumulators a tile (nr <= 3). */
__attribute__((target("avx2,fma,f16c"))) static void att_chunk_avx2(ATT_FAST_ARGS) {
    ATT_ROWS_DISPATCH(12)
}

/* The same code with AVX-512's 32 vector registers: 24 accumulators a tile
 * (4 heads of one token, or a pair of tokens). Each row's arithmetic is the
 * one above, so the bits are those of the AVX2 kernel. */
__attribute__((target("avx2,fma,f16c,avx512f,avx512vl"))) static void att_chunk_avx512(ATT_FAST_ARGS) {
    ATT_ROWS_DISPATCH(24)
}
#endif

/* true: the AVX2 kernel (for head_dim % 8 == 0) */
static bool att_fast = false;
/* query heads per pass over a chunk: 4 with att_chunk_avx512, else 3 */
static int att_nr = 3;
static pthread_once_t att_once = PTHREAD_ONCE_INIT;

static void att_choose(void) {
#ifdef ATT_HAVE_AVX2
    __builtin_cpu_init();
    /* F16C by CPUID (leaf 1, ECX bit 29): older clang has no "f16c" name
     * for __builtin_cpu_supports. */
    unsigned a, b, c, d;
    bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
    /* SGL_ATT_NO_AVX2=1: the portable loops (for tests and comparisons) */
    att_fast = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c &&
               !getenv("SGL_ATT_NO_AVX2");
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        att_chunk_ref = att_chunk_ref_fma;
    if (att_fast && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        !getenv("SGL_ATT_NO_AVX512"))
        att_nr = 4;
#endif
}

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

/* The partials of nr (1..4) query heads of nt (1 or 2) consecutive tokens
 * over one chunk whose slots are slots[0..]: qs holds token 0's nr scaled
 * queries, then token 1's; token u sees the first att_nk(nk0, u) keys and
 * leaves its heads' partials at acc[u] + r * hd, m[u * nr + r], l[u * nr +
 * r] as defined above. The fast kernels read each K and V row once for
 * both tokens; the portable loops take one token at a time; the bits are
 * the same. cold: the chunk is read from memory (prefetch ahead). */
static void att_chunk_part(int nr, int nt, float *const *acc, float *m, float *l, const float *qs,
                           att_scratch *sc, const uint16_t *kbase, const uint16_t *vbase,
                           int64_t stride, const int32_t *slots, int32_t nk0, int hd, bool cold) {
#ifdef ATT_HAVE_AVX2
    if (att_fast && hd % 8 == 0) {
        /* AVX-512's registers: 4 heads, or any pair of tokens */
        if (nr == 4 || (nt == 2 && att_nr == 4))
            att_chunk_avx512(nr, nt, acc, m, l, qs, sc->score, ATT_LD, kbase, vbase, stride, slots, nk0,
                             hd, cold);
        else
            att_chunk_avx2(nr, nt, acc, m, l, qs, sc->score, ATT_LD, kbase, vbase, stride, slots, nk0,
                           hd, cold);
        return;
    }
#endif
    (void)cold;
    for (int u = 0; u < nt; u++)
        att_chunk_ref(nr, acc[u], m + u * nr, l + u * nr, qs + u * nr * hd, kbase, vbase, stride,
                      slots, att_nk(nk0, u), hd, sc->k, sc->v, sc->score, ATT_LD);
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
 * every chunk in order (chunk < 0) or one chunk of a single token (see the
 * file comment). Every query head of the group and every token that reaches
 * a chunk takes its partial there (K and V rows read from the f16 pool; a
 * block's chunk stays in cache across its tokens). */
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
    uint64_t layer_off = (uint64_t)aj->layer * (uint64_t)kv->n_slots * (uint64_t)kv->kv_dim;
    const uint16_t *kbase = kv->k + layer_off + kvh * hd;
    const uint16_t *vbase = kv->v + layer_off + kvh * hd;
    float scale = 1.0f / sqrtf((float)hd);
    float *qs = sc->q; /* [ATT_MAX_ROWS][head_dim] scaled queries of a pass */
    float m[ATT_MAX_ROWS], l[ATT_MAX_ROWS];
    if (chunk >= 0) {
        /* one chunk of one token */
        int32_t k0 = chunk * ATT_CHUNK, nk = SGL_MIN(ATT_CHUNK, n_keys - k0);
        int32_t sp = cp->item_split[it], nch = cp->split_nch[sp];
        int64_t part0 = cp->split_poff[sp];
        int64_t row = row0 + t0;
        for (int h0 = 0; h0 < n_rep; h0 += att_nr) {
            int nr = SGL_MIN(att_nr, n_rep - h0);
            int h = kvh * n_rep + h0;
            const float *q = aj->q + row * q_dim + (int64_t)h * hd;
            for (int d = 0; d < nr * hd; d++) qs[d] = q[d] * scale;
            int64_t pi = (part0 + chunk) * c->n_heads + h;
            /* the first pass reads the chunk from memory: it prefetches */
            float *acc = cp->part_acc + pi * hd;
            att_chunk_part(nr, 1, &acc, m, l, qs, sc, kbase, vbase, kv->kv_dim, slots + k0, nk, hd,
                           h0 == 0);
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
    int32_t nch = att_n_chunks(n_keys);
    for (int32_t k = 0; k < nch; k++) {
        int32_t k0 = k * ATT_CHUNK;
        for (int32_t t = t0; t < t1;) {
            int32_t nk = sq->pos0 + t + 1 - k0; /* keys of the chunk this token sees */
            if (nk <= 0) {
                t++;
                continue;
            }
            /* two tokens a pass while two are left: each K and V row read
             * serves both */
            int nt = t + 1 < t1 ? 2 : 1;
            for (int h0 = 0; h0 < n_rep; h0 += att_nr) {
                int nr = SGL_MIN(att_nr, n_rep - h0);
                int h = kvh * n_rep + h0;
                float *o[2], *acc[2];
                for (int u = 0; u < nt; u++) {
                    int64_t row = row0 + t + u;
                    const float *q = aj->q + row * q_dim + (int64_t)h * hd;
                    for (int d = 0; d < nr * hd; d++) qs[u * nr * hd + d] = q[d] * scale;
                    o[u] = aj->out + row * q_dim + (int64_t)h * hd;
                    /* chunk 0 starts the state in place; later ones fold in */
                    acc[u] = k == 0 ? o[u] : sc->acc + u * nr * hd;
                }
                att_chunk_part(nr, nt, acc, m, l, qs, sc, kbase, vbase, kv->kv_dim, slots + k0,
                               SGL_MIN(nk, ATT_CHUNK), hd, t == t0 && h0 == 0);
                for (int u = 0; u < nt; u++) {
                    float *ml = sc->ml + ((int64_t)(t + u - t0) * n_rep + h0) * 2;
                    for (int r = 0; r < nr; r++) {
                        float mr = m[u * nr + r], lr = l[u * nr + r];
                        if (k == 0) {
                            ml[2 * r] = mr;
                            ml[2 * r + 1] = lr;
                        } else {
                            att_combine(o[u] + r * hd, &ml[2 * r], &ml[2 * r + 1], acc[u] + r * hd,
                                        mr, lr, hd);
                        }
                    }
                }
            }
            t += nt;
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
    free(a->k), free(a->v), free(a->q), free(a->score), free(a->acc), free(a->ml);
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
            a->k = malloc(sizeof(float) * (size_t)hd);
            a->v = malloc(sizeof(float) * (size_t)hd);
            a->q = malloc(sizeof(float) * (size_t)(ATT_MAX_ROWS * hd));
            a->score = malloc(sizeof(float) * (size_t)(ATT_MAX_ROWS * ATT_LD));
            a->acc = malloc(sizeof(float) * (size_t)(ATT_MAX_ROWS * hd));
            a->ml = malloc(sizeof(float) * (size_t)(ATT_TOKEN_BLOCK * n_heads * 2));
            if (!a->k || !a->v || !a->q || !a->score || !a->acc || !a->ml) return -1;
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

/* The batch's work items (see "The work items" above): counted into
 * *items, *split (single-token rows) and *parts (their chunks), and, when
 * fill, written to c's arrays, which must hold them. */
static void att_plan(cpu_att *c, const kb_batch *b, bool fill, int64_t *items, int64_t *split,
                     int64_t *parts) {
    int64_t it = 0, sp = 0, poff = 0;
    for (int32_t i = 0; i < b->n_seqs; i++) {
        const kb_seq *s = &b->seqs[i];
        if (s->n_new == 1) {
            int32_t nch = att_n_chunks(s->pos0 + 1);
            if (fill) {
                c->split_poff[sp] = (int32_t)poff;
                c->split_nch[sp] = nch;
                for (int32_t k = 0; k < nch; k++) {
                    c->item_seq[it + k] = i, c->item_t0[it + k] = 0, c->item_t1[it + k] = 1;
                    c->item_chunk[it + k] = k, c->item_split[it + k] = (int32_t)sp;
                }
            }
            it += nch, poff += nch, sp++;
            continue;
        }
        for (int32_t t0 = 0; t0 < s->n_new; t0 += ATT_TOKEN_BLOCK, it++) {
            if (!fill) continue;
            c->item_seq[it] = i;
            c->item_t0[it] = t0;
            c->item_t1[it] = SGL_MIN(t0 + ATT_TOKEN_BLOCK, s->n_new);
            c->item_chunk[it] = -1, c->item_split[it] = -1;
        }
    }
    *items = it, *split = sp, *parts = poff;
}

int cpu_att_begin(cpu_att *c, const kb_batch *b, sgl_error *err) {
    pthread_once(&att_once, att_choose);
    c->b = b;
    int64_t items, split, parts;
    att_plan(c, b, false, &items, &split, &parts);
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
    att_plan(c, b, true, &c->n_items, &c->n_split, &c->n_part);
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
