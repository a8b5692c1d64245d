/* ref_quant: scalar reference encoders and decoders for every weight type
 * the kernels support (F32, F16, BF16, Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K).
 * (The fast matmul's int16 activation format lives in avx2_matmul.c.) The
 * decoders follow the GGML layouts drawn in kern_internal.h bit for bit; the
 * K-quant encoders are simple (no error search): they exist for tests.
 */
#include <math.h>

#include "kernels/cpu/kern_internal.h"

/* ---- decoders ---------------------------------------------------------- */

static void deq_q4_0(const kq_block_q4_0 *b, float *y, int64_t nblk) {
    for (int64_t i = 0; i < nblk; i++, b++, y += 32) {
        float d = kq_f16_to_f32(b->d);
        for (int j = 0; j < 16; j++) {
            y[j] = (float)((b->qs[j] & 0xF) - 8) * d;
            y[j + 16] = (float)((b->qs[j] >> 4) - 8) * d;
        }
    }
}

static void deq_q4_1(const kq_block_q4_1 *b, float *y, int64_t nblk) {
    for (int64_t i = 0; i < nblk; i++, b++, y += 32) {
        float d = kq_f16_to_f32(b->d), m = kq_f16_to_f32(b->m);
        for (int j = 0; j < 16; j++) {
            y[j] = (float)(b->qs[j] & 0xF) * d + m;
            y[j + 16] = (float)(b->qs[j] >> 4) * d + m;
        }
    }
}

static void deq_q8_0(const kq_block_q8_0 *b, float *y, int64_t nblk) {
    for (int64_t i = 0; i < nblk; i++, b++, y += 32) {
        float d = kq_f16_to_f32(b->d);
        for (int j = 0; j < 32; j++)
            y[j] = (float)b->qs[j] * d;
    }
}

static void deq_q4_k(const kq_block_q4_k *b, float *y, int64_t nblk) {
    for (int64_t i = 0; i < nblk; i++, b++) {
        float d = kq_f16_to_f32(b->d), dmin = kq_f16_to_f32(b->dmin);
        const uint8_t *q = b->qs;
        for (int c = 0; c < 4; c++, q += 32, y += 64) {
            uint8_t sc0, mn0, sc1, mn1;
            kq_scale_min_k4(2 * c, b->scales, &sc0, &mn0);
            kq_scale_min_k4(2 * c + 1, b->scales, &sc1, &mn1);
            float d0 = d * sc0, m0 = dmin * mn0, d1 = d * sc1, m1 = dmin * mn1;
            for (int l = 0; l < 32; l++) {
                y[l] = d0 * (float)(q[l] & 0xF) - m0;
                y[l + 32] = d1 * (float)(q[l] >> 4) - m1;
            }
        }
    }
}

static void deq_q5_k(const kq_block_q5_k *b, float *y, int64_t nblk) {
    for (int64_t i = 0; i < nblk; i++, b++) {
        float d = kq_f16_to_f32(b->d), dmin = kq_f16_to_f32(b->dmin);
        const uint8_t *q = b->qs;
        for (int c = 0; c < 4; c++, q += 32, y += 64) {
            uint8_t sc0, mn0, sc1, mn1;
            kq_scale_min_k4(2 * c, b->scales, &sc0, &mn0);
            kq_scale_min_k4(2 * c + 1, b->scales, &sc1, &mn1);
            float d0 = d * sc0, m0 = dmin * mn0, d1 = d * sc1, m1 = dmin * mn1;
            for (int l = 0; l < 32; l++) {
                int h0 = (b->qh[l] >> (2 * c)) & 1, h1 = (b->qh[l] >> (2 * c + 1)) & 1;
                y[l] = d0 * (float)((q[l] & 0xF) | (h0 << 4)) - m0;
                y[l + 32] = d1 * (float)((q[l] >> 4) | (h1 << 4)) - m1;
            }
        }
    }
}

static void deq_q6_k(const kq_block_q6_k *b, float *y, int64_t nblk) {
    for (int64_t i = 0; i < nblk; i++, b++) {
        float d = kq_f16_to_f32(b->d);
        for (int h = 0; h < 2; h++, y += 128) {
            const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
            const int8_t *sc = b->scales + 8 * h;
            for (int l = 0; l < 32; l++) {
                int g = l / 16;
                int q0 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                int q1 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                int q2 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                int q3 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * (float)sc[g] * (float)q0;
                y[l + 32] = d * (float)sc[g + 2] * (float)q1;
                y[l + 64] = d * (float)sc[g + 4] * (float)q2;
                y[l + 96] = d * (float)sc[g + 6] * (float)q3;
            }
        }
    }
}

void kref_dequant_row(sgl_dtype t, const void *src, float *dst, int64_t n) {
    switch (t) {
    case SGL_DTYPE_F32:
        memcpy(dst, src, (size_t)n * sizeof(float));
        break;
    case SGL_DTYPE_F16: {
        const uint16_t *s = src;
        for (int64_t i = 0; i < n; i++)
            dst[i] = kq_f16_to_f32(s[i]);
        break;
    }
    case SGL_DTYPE_BF16: {
        const uint16_t *s = src;
        for (int64_t i = 0; i < n; i++)
            dst[i] = kq_bf16_to_f32(s[i]);
        break;
    }
    case SGL_DTYPE_Q4_0:
        deq_q4_0(src, dst, n / 32);
        break;
    case SGL_DTYPE_Q4_1:
        deq_q4_1(src, dst, n / 32);
        break;
    case SGL_DTYPE_Q8_0:
        deq_q8_0(src, dst, n / 32);
        break;
    case SGL_DTYPE_Q4_K:
        deq_q4_k(src, dst, n / 256);
        break;
    case SGL_DTYPE_Q5_K:
        deq_q5_k(src, dst, n / 256);
        break;
    case SGL_DTYPE_Q6_K:
        deq_q6_k(src, dst, n / 256);
        break;
    default:
        memset(dst, 0, (size_t)n * sizeof(float));
        break;
    }
}

/* ---- encoders ---------------------------------------------------------- */

static float amax_of(const float *x, int n) {
    float a = 0;
    for (int i = 0; i < n; i++)
        a = fmaxf(a, fabsf(x[i]));
    return a;
}

static int clampi(int v, int lo, int hi) {
    return v < lo ? lo : v > hi ? hi : v;
}

static void quant_q4_0(const float *x, kq_block_q4_0 *b, int64_t nblk) {
    for (int64_t i = 0; i < nblk; i++, b++, x += 32) {
        /* The value of largest magnitude maps to -8 so its sign keeps the
         * full range (GGML's choice). */
        float mx = 0;
        for (int j = 0; j < 32; j++)
            if (fabsf(x[j]) > fabsf(mx)) mx = x[j];
        float d = mx / -8.0f, id = d != 0 ? 1.0f / d : 0.0f;
        b->d = kq_f32_to_f16(d);
        for (int j = 0; j < 16; j++) {
            int q0 = clampi((int)floorf(x[j] * id + 8.5f), 0, 15);
            int q1 = clampi((int)floorf(x[j + 16] * id + 8.5f), 0, 15);
            b->qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static void quant_q4_1(const float *x, kq_block_q4_1 *b, int64_t nblk) {
    for (int64_t i = 0; i < nblk; i++, b++, x += 32) {
        float lo = x[0], hi = x[0];
        for (int j = 1; j < 32; j++) {
            lo = fminf(lo, x[j]);
            hi = fmaxf(hi, x[j]);
        }
        float d = (hi - lo) / 15.0f, id = d != 0 ? 1.0f / d : 0.0f;
        b->d = kq_f32_to_f16(d);
        b->m = kq_f32_to_f16(lo);
        for (int j = 0; j < 16; j++) {
            int q0 = clampi((int)floorf((x[j] - lo) * id + 0.5f), 0, 15);
            int q1 = clampi((int)floorf((x[j + 16] - lo) * id + 0.5f), 0, 15);
            b->qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static void quant_q8_0(const float *x, kq_block_q8_0 *b, int64_t nblk) {
    for (int64_t i = 0; i < nblk; i++, b++, x += 32) {
        float d = amax_of(x, 32) / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
        b->d = kq_f32_to_f16(d);
        for (int j = 0; j < 32; j++)
            b->qs[j] = (int8_t)clampi((int)roundf(x[j] * id), -127, 127);
    }
}

/* Packs 8 six-bit scales and mins the way kq_scale_min_k4 unpacks them. */
/* Common part of Q4_K/Q5_K: per sub-block of 32, an affine map onto
 * [0, levels] with min <= 0; scales and mins quantized to 6 bits against
 * the super-block's d and dmin. Writes q[256] (0..levels). */
static void quant_k_affine(const float *x, int levels, uint16_t *d16, uint16_t *dmin16,
                           uint8_t scales[12], uint8_t q[256]) {
    float scale[8], mins[8], dmax = 0, mmax = 0;
    for (int j = 0; j < 8; j++) {
        const float *s = x + 32 * j;
        float lo = 0, hi = 0;
        for (int l = 0; l < 32; l++) {
            lo = fminf(lo, s[l]);
            hi = fmaxf(hi, s[l]);
        }
        scale[j] = (hi - lo) / (float)levels;
        mins[j] = -lo;
        dmax = fmaxf(dmax, scale[j]);
        mmax = fmaxf(mmax, mins[j]);
    }
    float d = dmax / 63.0f, dmin = mmax / 63.0f;
    *d16 = kq_f32_to_f16(d);
    *dmin16 = kq_f32_to_f16(dmin);
    d = kq_f16_to_f32(*d16);
    dmin = kq_f16_to_f32(*dmin16);
    uint8_t sc[8], mn[8];
    for (int j = 0; j < 8; j++) {
        sc[j] = (uint8_t)(d > 0 ? clampi((int)roundf(scale[j] / d), 0, 63) : 0);
        mn[j] = (uint8_t)(dmin > 0 ? clampi((int)roundf(mins[j] / dmin), 0, 63) : 0);
        float ds = d * sc[j], dm = dmin * mn[j];
        for (int l = 0; l < 32; l++) {
            int v = ds > 0 ? (int)roundf((x[32 * j + l] + dm) / ds) : 0;
            q[32 * j + l] = (uint8_t)clampi(v, 0, levels);
        }
    }
    kq_pack_scale_min_k4(sc, mn, scales);
}

static void quant_q4_k(const float *x, kq_block_q4_k *b, int64_t nblk) {
    uint8_t q[256];
    for (int64_t i = 0; i < nblk; i++, b++, x += 256) {
        quant_k_affine(x, 15, &b->d, &b->dmin, b->scales, q);
        kq_pack_q4_k_codes(q, b->qs);
    }
}

static void quant_q5_k(const float *x, kq_block_q5_k *b, int64_t nblk) {
    uint8_t q[256];
    for (int64_t i = 0; i < nblk; i++, b++, x += 256) {
        quant_k_affine(x, 31, &b->d, &b->dmin, b->scales, q);
        kq_pack_q5_k_codes(q, b->qh, b->qs);
    }
}

static void quant_q6_k(const float *x, kq_block_q6_k *b, int64_t nblk) {
    for (int64_t i = 0; i < nblk; i++, b++, x += 256) {
        float scale[16], smax = 0;
        for (int g = 0; g < 16; g++) {
            scale[g] = amax_of(x + 16 * g, 16) / 31.0f;
            smax = fmaxf(smax, scale[g]);
        }
        float d = smax / 127.0f;
        b->d = kq_f32_to_f16(d);
        d = kq_f16_to_f32(b->d);
        uint8_t q[256];
        for (int g = 0; g < 16; g++) {
            int sc = d > 0 ? clampi((int)roundf(scale[g] / d), -128, 127) : 0;
            b->scales[g] = (int8_t)sc;
            float ds = d * (float)sc;
            for (int l = 0; l < 16; l++) {
                int v = ds != 0 ? (int)roundf(x[16 * g + l] / ds) : 0;
                q[16 * g + l] = (uint8_t)(clampi(v, -32, 31) + 32);
            }
        }
        kq_pack_q6_k_codes(q, b->ql, b->qh);
    }
}

int kref_quantize_row(sgl_dtype t, const float *src, void *dst, int64_t n) {
    switch (t) {
    case SGL_DTYPE_F32:
        memcpy(dst, src, (size_t)n * sizeof(float));
        return 0;
    case SGL_DTYPE_F16: {
        uint16_t *d = dst;
        for (int64_t i = 0; i < n; i++)
            d[i] = kq_f32_to_f16(src[i]);
        return 0;
    }
    case SGL_DTYPE_BF16: {
        uint16_t *d = dst;
        for (int64_t i = 0; i < n; i++)
            d[i] = kq_f32_to_bf16(src[i]);
        return 0;
    }
    case SGL_DTYPE_Q4_0:
        quant_q4_0(src, dst, n / 32);
        return 0;
    case SGL_DTYPE_Q4_1:
        quant_q4_1(src, dst, n / 32);
        return 0;
    case SGL_DTYPE_Q8_0:
        quant_q8_0(src, dst, n / 32);
        return 0;
    case SGL_DTYPE_Q4_K:
        quant_q4_k(src, dst, n / 256);
        return 0;
    case SGL_DTYPE_Q5_K:
        quant_q5_k(src, dst, n / 256);
        return 0;
    case SGL_DTYPE_Q6_K:
        quant_q6_k(src, dst, n / 256);
        return 0;
    default:
        return -1;
    }
}
