/* repack: the 8-row interleaved ("R8") weight layouts of Q4_0, Q4_1, Q8_0,
 * Q4_K, Q5_K and Q6_K, in which the fast matmul streams those types (see kern_internal.h
 * for the byte layout and avx2_matmul.c for the arithmetic). Plain C: the
 * AVX2 matmul calls r8_pack to repack plain weights a few blocks at a time,
 * the reference table calls r8_unpack_row to get a row back in its GGUF
 * layout, and kern_repack (kernels.h) repacks whole matrices at load.
 */
#include <stdlib.h>
#include <sys/mman.h>

#include "kernels/cpu/kern_internal.h"
#include "util/util.h"

int r8_base_type(sgl_dtype t) {
    switch ((int)t) {
    case SGL_DTYPE_Q4_0_R8: return SGL_DTYPE_Q4_0;
    case SGL_DTYPE_Q4_1_R8: return SGL_DTYPE_Q4_1;
    case SGL_DTYPE_Q8_0_R8: return SGL_DTYPE_Q8_0;
    case SGL_DTYPE_Q4_K_R8: return SGL_DTYPE_Q4_K;
    case SGL_DTYPE_Q5_K_R8: return SGL_DTYPE_Q5_K;
    case SGL_DTYPE_Q6_K_R8: return SGL_DTYPE_Q6_K;
    default: return -1;
    }
}

int r8_packed_type(sgl_dtype t) {
    switch ((int)t) {
    case SGL_DTYPE_Q4_0: return SGL_DTYPE_Q4_0_R8;
    case SGL_DTYPE_Q4_1: return SGL_DTYPE_Q4_1_R8;
    case SGL_DTYPE_Q8_0: return SGL_DTYPE_Q8_0_R8;
    case SGL_DTYPE_Q4_K: return SGL_DTYPE_Q4_K_R8;
    case SGL_DTYPE_Q5_K: return SGL_DTYPE_Q5_K_R8;
    case SGL_DTYPE_Q6_K: return SGL_DTYPE_Q6_K_R8;
    default: return -1;
    }
}

size_t r8_group_block_bytes(sgl_dtype base) {
    return base == SGL_DTYPE_Q4_K   ? 1184
           : base == SGL_DTYPE_Q5_K ? 1440
                                    : (size_t)sgl_dtype_block_bytes(base) * 8; /* Q6_K: 1680 */
}

/* Q6_K R8 super-block of 8 rows: | d[8] | sc[16][8]:int8 | then per 32-value
 * block j: lo[128] (the low 4 bits, chunks as Q4_0) | hi[64] (4 chunks of
 * 16 bytes; chunk m byte 2i+e: bits 0-1, 2-3, 4-5, 6-7 = the top 2 bits of
 * elems 8m+e, 8m+2+e, 8m+4+e, 8m+6+e of the block) |: 1680 bytes. */
static void pack_q6_k(const uint8_t *const src[8], uint8_t *o) {
    for (int i = 0; i < 8; i++) {
        const uint8_t *p = src[i];
        memcpy(o + 2 * i, p + 208, 2);
        for (int s = 0; s < 16; s++) o[16 + 8 * s + i] = p[192 + s];
        for (int j = 0; j < 8; j++) {
            uint8_t *lo = o + 144 + 192 * j, *hi = lo + 128;
            uint8_t q[32];
            for (int e = 0; e < 32; e++) q[e] = kq_q6_k_code(p, p + 128, 32 * j + e);
            for (int c = 0; c < 8; c++)
                for (int e = 0; e < 2; e++)
                    lo[16 * c + 2 * i + e] = (uint8_t)((q[4 * c + e] & 15) | (q[4 * c + 2 + e] & 15) << 4);
            for (int m = 0; m < 4; m++)
                for (int e = 0; e < 2; e++)
                    hi[16 * m + 2 * i + e] =
                        (uint8_t)((q[8 * m + e] >> 4) | (q[8 * m + 2 + e] >> 4) << 2 |
                                  (q[8 * m + 4 + e] >> 4) << 4 | (q[8 * m + 6 + e] >> 4) << 6);
        }
    }
}

static void unpack_q6_k(const uint8_t *o, int i, uint8_t *p) {
    memcpy(p + 208, o + 2 * i, 2);
    for (int s = 0; s < 16; s++) p[192 + s] = o[16 + 8 * s + i];
    uint8_t L[256]; /* the codes in element order, then packed as the file has them */
    for (int j = 0; j < 8; j++) {
        const uint8_t *lo = o + 144 + 192 * j, *hi = lo + 128;
        for (int e = 0; e < 32; e++) {
            int c = e / 4, half = (e % 4) / 2, ee = e % 2;
            uint8_t l4 = lo[16 * c + 2 * i + ee];
            l4 = half ? l4 >> 4 : l4 & 15;
            int m = e / 8, slot = (e % 8) / 2; /* e = 8m + 2 slot + ee */
            uint8_t h2 = (hi[16 * m + 2 * i + ee] >> (2 * slot)) & 3;
            L[32 * j + e] = (uint8_t)(l4 | h2 << 4);
        }
    }
    kq_pack_q6_k_codes(L, p, p + 128);
}

/* Q4_K / Q5_K: one super-block of 8 rows (src[i]: row i's plain block)
 * into o (kern_internal.h; Q5_K's sub-block j is its 128 code bytes then 32
 * bytes of 5th bits: chunk n (16 bytes) byte 2i+e, bits 2k and 2k+1 = the
 * 5th bits of elems 4(4n+k)+e and 4(4n+k)+2+e). */
static void pack_q4_k(int q5, const uint8_t *const src[8], uint8_t *o) {
    const int stride = q5 ? 160 : 128;
    for (int i = 0; i < 8; i++) {
        const uint8_t *p = src[i], *qs = p + (q5 ? 48 : 16), *qh = p + 16;
        memcpy(o + 2 * i, p, 2);          /* d */
        memcpy(o + 16 + 2 * i, p + 2, 2); /* dmin */
        for (int j = 0; j < 8; j++) {
            uint8_t sc, mn;
            kq_scale_min_k4(j, p + 4, &sc, &mn);
            o[32 + 8 * j + i] = sc;
            o[96 + 8 * j + i] = mn;
            /* sub-block j: elems 32j..32j+31 = chunk j/2 of qs, low nibbles
             * for even j, high for odd */
            uint8_t el[32], hb[32];
            for (int e = 0; e < 32; e++) {
                uint8_t v = qs[32 * (j / 2) + e];
                el[e] = j % 2 ? v >> 4 : v & 15;
                hb[e] = q5 ? (qh[e] >> j) & 1 : 0;
            }
            uint8_t *q = o + 160 + stride * j;
            for (int c = 0; c < 8; c++)
                for (int e = 0; e < 2; e++)
                    q[16 * c + 2 * i + e] = (uint8_t)(el[4 * c + e] | el[4 * c + 2 + e] << 4);
            if (q5)
                for (int n = 0; n < 2; n++)
                    for (int e = 0; e < 2; e++) {
                        uint8_t v = 0;
                        for (int k = 0; k < 4; k++)
                            v |= (uint8_t)(hb[4 * (4 * n + k) + e] << (2 * k) |
                                           hb[4 * (4 * n + k) + 2 + e] << (2 * k + 1));
                        q[128 + 16 * n + 2 * i + e] = v;
                    }
        }
    }
}

/* The inverse of pack_q4_k for row i. */
static void unpack_q4_k(int q5, const uint8_t *o, int i, uint8_t *p) {
    const int stride = q5 ? 160 : 128;
    memcpy(p, o + 2 * i, 2);
    memcpy(p + 2, o + 16 + 2 * i, 2);
    uint8_t sc[8], mn[8], L[256]; /* scales, mins and codes, packed as the file has them */
    for (int j = 0; j < 8; j++) {
        sc[j] = o[32 + 8 * j + i];
        mn[j] = o[96 + 8 * j + i];
        const uint8_t *q = o + 160 + stride * j;
        for (int c = 0; c < 8; c++)
            for (int e = 0; e < 2; e++) {
                uint8_t v = q[16 * c + 2 * i + e];
                L[32 * j + 4 * c + e] = v & 15;
                L[32 * j + 4 * c + 2 + e] = v >> 4;
                if (q5) {
                    uint8_t h = q[128 + 16 * (c / 4) + 2 * i + e];
                    int k = c % 4;
                    L[32 * j + 4 * c + e] |= (uint8_t)(((h >> (2 * k)) & 1) << 4);
                    L[32 * j + 4 * c + 2 + e] |= (uint8_t)(((h >> (2 * k + 1)) & 1) << 4);
                }
            }
    }
    kq_pack_scale_min_k4(sc, mn, p + 4);
    if (q5) kq_pack_q5_k_codes(L, p + 16, p + 48);
    else kq_pack_q4_k_codes(L, p + 16);
}

/* Element e (0..31) of a Q4_0/Q4_1 block's qs as its 4-bit code. */
static inline uint8_t q4_elem(const uint8_t *qs, int e) {
    return e < 16 ? (uint8_t)(qs[e] & 15) : (uint8_t)(qs[e - 16] >> 4);
}

void r8_pack(sgl_dtype base, const uint8_t *W, size_t wrb, int64_t rows, int64_t g, int64_t blk0,
             int64_t nblk, uint8_t *dst) {
    const int bb = sgl_dtype_block_bytes(base);
    const size_t gbb = r8_group_block_bytes(base);
    const int qoff = base == SGL_DTYPE_Q4_1 ? 32 : 16; /* start of the codes */
    static const uint8_t zero_block[210]; /* the largest plain block */
    for (int64_t blk = 0; blk < nblk; blk++) {
        uint8_t *o = dst + (size_t)blk * gbb;
        if (base == SGL_DTYPE_Q4_K || base == SGL_DTYPE_Q5_K || base == SGL_DTYPE_Q6_K) {
            const uint8_t *src[8];
            for (int i = 0; i < 8; i++) {
                int64_t r = g * 8 + i;
                src[i] = r < rows ? W + (size_t)r * wrb + (size_t)(blk0 + blk) * bb : zero_block;
            }
            if (base == SGL_DTYPE_Q6_K) pack_q6_k(src, o);
            else pack_q4_k(base == SGL_DTYPE_Q5_K, src, o);
            continue;
        }
        for (int i = 0; i < 8; i++) {
            int64_t r = g * 8 + i;
            const uint8_t *p =
                r < rows ? W + (size_t)r * wrb + (size_t)(blk0 + blk) * bb : zero_block;
            memcpy(o + 2 * i, p, 2); /* d */
            if (base == SGL_DTYPE_Q4_1) memcpy(o + 16 + 2 * i, p + 2, 2); /* m */
            if (base == SGL_DTYPE_Q8_0) {
                for (int c = 0; c < 16; c++) {
                    o[qoff + 16 * c + 2 * i] = p[2 + 2 * c];
                    o[qoff + 16 * c + 2 * i + 1] = p[2 + 2 * c + 1];
                }
            } else {
                const uint8_t *qs = p + (base == SGL_DTYPE_Q4_1 ? 4 : 2);
                for (int c = 0; c < 8; c++)
                    for (int e = 0; e < 2; e++)
                        o[qoff + 16 * c + 2 * i + e] =
                            (uint8_t)(q4_elem(qs, 4 * c + e) | q4_elem(qs, 4 * c + 2 + e) << 4);
            }
        }
    }
}

void r8_unpack_row(sgl_dtype base, const uint8_t *P, int64_t r, int64_t k, uint8_t *row) {
    const int bb = sgl_dtype_block_bytes(base);
    const size_t gbb = r8_group_block_bytes(base);
    const int qoff = base == SGL_DTYPE_Q4_1 ? 32 : 16;
    const int64_t nblk = k / sgl_dtype_block_elems(base), i = r % 8;
    const uint8_t *G = P + (size_t)(r / 8) * (size_t)nblk * gbb;
    for (int64_t blk = 0; blk < nblk; blk++) {
        const uint8_t *o = G + (size_t)blk * gbb;
        uint8_t *p = row + (size_t)blk * bb;
        if (base == SGL_DTYPE_Q4_K || base == SGL_DTYPE_Q5_K || base == SGL_DTYPE_Q6_K) {
            if (base == SGL_DTYPE_Q6_K) unpack_q6_k(o, (int)i, p);
            else unpack_q4_k(base == SGL_DTYPE_Q5_K, o, (int)i, p);
            continue;
        }
        memcpy(p, o + 2 * i, 2);
        if (base == SGL_DTYPE_Q8_0) {
            for (int c = 0; c < 16; c++) {
                p[2 + 2 * c] = o[qoff + 16 * c + 2 * i];
                p[2 + 2 * c + 1] = o[qoff + 16 * c + 2 * i + 1];
            }
            continue;
        }
        if (base == SGL_DTYPE_Q4_1) memcpy(p + 2, o + 16 + 2 * i, 2);
        uint8_t *qs = p + (base == SGL_DTYPE_Q4_1 ? 4 : 2);
        uint8_t el[32];
        for (int c = 0; c < 8; c++)
            for (int e = 0; e < 2; e++) {
                uint8_t v = o[qoff + 16 * c + 2 * i + e];
                el[4 * c + e] = v & 15;
                el[4 * c + 2 + e] = v >> 4;
            }
        for (int j = 0; j < 16; j++) qs[j] = (uint8_t)(el[j] | el[j + 16] << 4);
    }
}

size_t r8_bytes(sgl_dtype base, int64_t rows, int64_t k) {
    return (size_t)((rows + 7) / 8) * (size_t)(k / sgl_dtype_block_elems(base)) *
           r8_group_block_bytes(base);
}

/* Rows [r0, r1) of W (r0 a multiple of 8) into P (their first group). */
typedef struct {
    sgl_dtype t;
    const uint8_t *W;
    uint8_t *P;
    int64_t rows, r0, r1, npb;
    size_t wrb, gbytes;
} repack_job;

static void repack_task(void *ctx, int ith, int nth) {
    const repack_job *j = ctx;
    int64_t ga = j->r0 / 8, ng = (j->r1 - j->r0 + 7) / 8;
    int64_t g0 = ng * ith / nth, g1 = ng * (ith + 1) / nth;
    for (int64_t g = g0; g < g1; g++)
        r8_pack(j->t, j->W, j->wrb, j->rows, ga + g, 0, j->npb, j->P + (size_t)g * j->gbytes);
}

/* A buffer of n bytes for a packed matrix (free() it). From 2 MiB up it is
 * 2 MiB aligned and asks for transparent huge pages over its whole 2 MiB
 * pages (the tail stays in small pages, so the request costs no memory):
 * a matmul streams the matrix from end to end, and with 4 KiB pages batch-1
 * decode of a 1B-shaped model spent a share of its time on TLB misses
 * (matrices of several MiB: a new page every 28 Q4_0 blocks). Where the
 * kernel does not give huge pages (transparent_hugepage "never"), madvise
 * is a no-op or fails and the buffer works the same. */
static uint8_t *repack_alloc(size_t n) {
    const size_t huge = (size_t)2 << 20;
    void *P = NULL;
    if (n < huge) return aligned_alloc(64, (n + 63) & ~(size_t)63);
    if (posix_memalign(&P, huge, n)) return NULL;
#ifdef MADV_HUGEPAGE
    (void)madvise(P, n & ~(huge - 1), MADV_HUGEPAGE);
#endif
    return P;
}

void *kern_repack(kern_pool *pool, sgl_dtype t, const void *W, int64_t rows, int64_t k,
                  sgl_dtype *packed, size_t *bytes, kern_repack_done done, void *done_ctx) {
    *packed = t;
    *bytes = 0;
    int pt = r8_packed_type(t);
    if (pt < 0 || rows <= 0 || k <= 0 || k % sgl_dtype_block_elems(t) ||
        !kern_mm_prefers_packed(t))
        return NULL;
    if (getenv("SGL_NO_REPACK")) return NULL;
    const int64_t npb = k / sgl_dtype_block_elems(t);
    size_t n = r8_bytes(t, rows, k), gbytes = (size_t)npb * r8_group_block_bytes(t);
    size_t wrb = sgl_dtype_row_bytes(t, (uint64_t)k);
    uint8_t *P = repack_alloc(n);
    if (!P) return NULL;
    /* slices of about 16 MiB of source rows (a multiple of 8), each handed
     * to done once packed, so a caller can let the source go as it goes */
    int64_t slice = (int64_t)((16u << 20) / wrb) / 8 * 8;
    if (slice < 8) slice = 8;
    for (int64_t r0 = 0; r0 < rows; r0 += slice) {
        int64_t r1 = r0 + slice < rows ? r0 + slice : rows;
        repack_job job = {t, W, P + (size_t)(r0 / 8) * gbytes, rows, r0, r1, npb, wrb, gbytes};
        if (pool) kern_pool_run(pool, repack_task, &job);
        else repack_task(&job, 0, 1);
        if (done) done(done_ctx, (const uint8_t *)W + (size_t)r0 * wrb, (size_t)(r1 - r0) * wrb);
    }
    *packed = (sgl_dtype)pt;
    *bytes = n;
    return P;
}
