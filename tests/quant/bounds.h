/* bounds: the error bounds docs/quantize.md documents for each type
 * `sglc quantize` writes, as the quant tests check them. */
#ifndef SGL_TEST_QUANT_BOUNDS_H
#define SGL_TEST_QUANT_BOUNDS_H

#include <math.h>

#include "kernels/dtype.h"

#define KB_Q4_K (1.0 / 8)
#define KB_Q5_K (1.0 / 12)
#define KB_Q6_K (1.0 / 32)

/* Documented bound on the relative RMS error (sqrt(sum e^2 / sum x^2)) of a
 * whole row. */
static inline double rms_bound(sgl_dtype t) {
    switch (t) {
    case SGL_DTYPE_F16: return 0.001;
    case SGL_DTYPE_BF16: return 0.004;
    case SGL_DTYPE_Q8_0: return 0.01;
    case SGL_DTYPE_Q4_0: case SGL_DTYPE_Q4_1: case SGL_DTYPE_Q4_K: return 0.08;
    case SGL_DTYPE_Q5_K: return 0.04;
    case SGL_DTYPE_Q6_K: return 0.02;
    default: return 0;
    }
}


/* The documented per-element bound for x[i] inside its block (see
 * docs/quantize.md): A = largest magnitude of the block (32 elements, or the
 * 256-element super-block for K-quants), R = max - min of the block. */
static inline double bound(sgl_dtype t, const float *blk, int n, float xi) {
    double A = 0, lo = blk[0], hi = blk[0];
    for (int i = 0; i < n; i++) {
        A = fmax(A, fabs(blk[i]));
        lo = fmin(lo, blk[i]);
        hi = fmax(hi, blk[i]);
    }
    switch (t) {
    case SGL_DTYPE_F16: return fabs(xi) * 0x1p-11 + 0x1p-24;
    case SGL_DTYPE_BF16: return fabs(xi) * 0x1p-8;
    case SGL_DTYPE_Q8_0: return A * (0.5 / 127 + 0x1p-10) + 128 * 0x1p-24;
    case SGL_DTYPE_Q4_0: return A * (1.0 / 8 + 0x1p-8) + 8 * 0x1p-24;
    case SGL_DTYPE_Q4_1: return (hi - lo) / 30 + (A + hi - lo) * 0x1p-9 + 16 * 0x1p-24;
    case SGL_DTYPE_Q4_K: return A * KB_Q4_K + 64 * 16 * 0x1p-24;
    case SGL_DTYPE_Q5_K: return A * KB_Q5_K + 64 * 32 * 0x1p-24;
    case SGL_DTYPE_Q6_K: return A * KB_Q6_K + 128 * 32 * 0x1p-24;
    default: return 0;
    }
}

#endif
