/* repack: the 8-row interleaved ("R8") weight layouts of Q4_0, Q4_1 and
 * Q8_0, in which the fast matmul streams those types (see kern_internal.h
 * for the byte layout and avx2_matmul.c for the arithmetic). Plain C: the
 * AVX2 matmul calls r8_pack to repack plain weights a few blocks at a time,
 * the reference table calls r8_unpack_row to get a row back in its GGUF
 * layout, and kern_repack (kernels.h) repacks whole matrices at load.
 */
#include <stdlib.h>

#include "kernels/cpu/kern_internal.h"
#include "util/util.h"

int r8_base_type(sgl_dtype t) {
    switch ((int)t) {
    case SGL_DTYPE_Q4_0_R8: return SGL_DTYPE_Q4_0;
    case SGL_DTYPE_Q4_1_R8: return SGL_DTYPE_Q4_1;
    case SGL_DTYPE_Q8_0_R8: return SGL_DTYPE_Q8_0;
    default: return -1;
    }
}

int r8_packed_type(sgl_dtype t) {
    switch ((int)t) {
    case SGL_DTYPE_Q4_0: return SGL_DTYPE_Q4_0_R8;
    case SGL_DTYPE_Q4_1: return SGL_DTYPE_Q4_1_R8;
    case SGL_DTYPE_Q8_0: return SGL_DTYPE_Q8_0_R8;
    default: return -1;
    }
}

size_t r8_group_block_bytes(sgl_dtype base) {
    return (size_t)sgl_dtype_block_bytes(base) * 8;
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
    static const uint8_t zero_block[34];
    for (int64_t blk = 0; blk < nblk; blk++) {
        uint8_t *o = dst + (size_t)blk * gbb;
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
    const int64_t nblk = k / 32, i = r % 8;
    const uint8_t *G = P + (size_t)(r / 8) * (size_t)nblk * gbb;
    for (int64_t blk = 0; blk < nblk; blk++) {
        const uint8_t *o = G + (size_t)blk * gbb;
        uint8_t *p = row + (size_t)blk * bb;
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
    return (size_t)((rows + 7) / 8) * (size_t)(k / 32) * r8_group_block_bytes(base);
}

void *kern_repack(sgl_dtype t, const void *W, int64_t rows, int64_t k, sgl_dtype *packed,
                  size_t *bytes) {
    *packed = t;
    *bytes = 0;
    int pt = r8_packed_type(t);
    if (pt < 0 || rows <= 0 || k <= 0 || k % 32 || !kern_mm_prefers_packed(t)) return NULL;
    if (getenv("SGL_NO_REPACK")) return NULL;
    size_t n = r8_bytes(t, rows, k), gbytes = (size_t)(k / 32) * r8_group_block_bytes(t);
    uint8_t *P = aligned_alloc(64, (n + 63) & ~(size_t)63);
    if (!P) return NULL;
    size_t wrb = sgl_dtype_row_bytes(t, (uint64_t)k);
    for (int64_t g = 0; g < (rows + 7) / 8; g++)
        r8_pack(t, W, wrb, rows, g, 0, k / 32, P + (size_t)g * gbytes);
    *packed = (sgl_dtype)pt;
    *bytes = n;
    return P;
}
