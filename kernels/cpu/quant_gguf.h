/* quant_gguf: encoders that round every GGUF weight type the way the GGUF
 * format's reference quantizers do (the ones model files are made with), so
 * a model quantized here has the bytes a llama.cpp-made file would have.
 *
 * F16/BF16/Q4_0/Q4_1/Q8_0 round as kern_quantize_row already does (nearest,
 * the block's largest magnitude / range sets the scale). Q4_K and Q5_K pick
 * each 32-element sub-block's scale and min by a weighted least-squares
 * search over candidate scales (weights |x| + rms of the sub-block), then
 * quantize those to 6 bits against the super-block maximum; Q6_K picks each
 * 16-element sub-block's scale by a search that maximises sum(x*l)^2/sum(l^2)
 * weighted by x^2, then quantizes scales to int8. Rounding to integers is
 * round-half-to-even throughout. See docs/quantize.md for the error bounds.
 */
#ifndef SGL_QUANT_GGUF_H
#define SGL_QUANT_GGUF_H

#include <stdint.h>

#include "kernels/dtype.h"

/* Encodes src[0..n) as type t into dst (sgl_dtype_row_bytes(t, n) bytes;
 * caller owns both). n must be a multiple of t's block size. Returns 0, or
 * -1 when t is not one of F32, F16, BF16, Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K
 * or n is not a multiple of its block. */
int kern_quantize_row_gguf(sgl_dtype t, const float *src, void *dst, int64_t n);

#endif
