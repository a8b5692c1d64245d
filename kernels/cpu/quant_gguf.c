/* quant_gguf: GGUF reference rounding for the K-quants (see quant_gguf.h);
 * the other types delegate to kern_quantize_row. Written from the block
 * layouts in kern_internal.h; every loop sums in index order so results do
 * not depend on the compiler's vectorisation. */
#include "kernels/cpu/quant_gguf.h"

#include <math.h>
#include <string.h>

#include "kernels/cpu/kern_internal.h"
#include "kernels/kernels.h"

#define QG_EPS 1e-15f

/* Round half to even (the default FP rounding mode), limited to the range
 * where the reference's float trick is exact. */
static int nint(float v) {
    if (!(v < 4194303.0f)) return v != v ? 0 : 4194303;
    if (!(v > -4194303.0f)) return -4194303;
    return (int)lrintf(v);
}

static int clampi(int v, int lo, int hi) {
    return v < lo ? lo : v > hi ? hi : v;
}

/* Affine fit of x[0..n) onto 0..nmax with min <= 0: starts from the range
 * (min..max), then tries nstep+1 stretched scales (rmin + rdelta*is + nmax
 * levels over the range) and keeps the weighted least-squares scale/min whose
 * weighted squared error is lowest. Writes L, *neg_min (= -min >= 0);
 * returns the scale. */
static float fit_affine(int n, int nmax, const float *x, const float *w, uint8_t *L, float *neg_min,
                        float rmin, float rdelta, int nstep) {
    uint8_t La[32];
    float lo = x[0], hi = x[0], sw = w[0], sx = w[0] * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < lo) lo = x[i];
        if (x[i] > hi) hi = x[i];
        sw += w[i];
        sx += w[i] * x[i];
    }
    if (lo > 0) lo = 0;
    if (hi == lo) {
        memset(L, 0, (size_t)n);
        *neg_min = -lo;
        return 0.0f;
    }
    float iscale = (float)nmax / (hi - lo), scale = 1.0f / iscale, best = 0;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)clampi(nint(iscale * (x[i] - lo)), 0, nmax);
        float diff = scale * L[i] + lo - x[i];
        best += w[i] * (diff * diff);
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * (float)is + (float)nmax) / (hi - lo);
        float sl = 0, sl2 = 0, sxl = 0;
        for (int i = 0; i < n; i++) {
            int l = clampi(nint(iscale * (x[i] - lo)), 0, nmax);
            La[i] = (uint8_t)l;
            sl += w[i] * (float)l;
            sl2 += w[i] * (float)l * (float)l;
            sxl += w[i] * (float)l * x[i];
        }
        float D = sw * sl2 - sl * sl;
        if (D <= 0) continue;
        float s = (sw * sxl - sx * sl) / D, m = (sl2 * sx - sl * sxl) / D;
        if (m > 0) {
            m = 0;
            s = sxl / sl2;
        }
        float err = 0;
        for (int i = 0; i < n; i++) {
            float diff = s * La[i] + m - x[i];
            err += w[i] * (diff * diff);
        }
        if (err < best) {
            memcpy(L, La, (size_t)n);
            best = err;
            scale = s;
            lo = m;
        }
    }
    *neg_min = -lo;
    return scale;
}

/* Symmetric fit of x[0..n) onto -nmax..nmax-1 (L holds l + nmax), weights
 * x^2: the largest magnitude maps to -nmax, then 18 nearby scales are tried
 * and the one maximising (sum w x l)^2 / sum w l^2 kept. Returns the scale. */
static float fit_symmetric(int n, int nmax, const float *x, uint8_t *L) {
    float mx = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        float a = fabsf(x[i]);
        if (a > amax) {
            amax = a;
            mx = x[i];
        }
    }
    if (amax < QG_EPS) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    float iscale = -(float)nmax / mx, slx = 0, sl2 = 0;
    for (int i = 0; i < n; i++) {
        int l = clampi(nint(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (uint8_t)(l + nmax);
        float w = x[i] * x[i];
        slx += w * x[i] * (float)l;
        sl2 += w * (float)l * (float)l;
    }
    float scale = sl2 ? slx / sl2 : 0.0f, best = scale * slx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -((float)nmax + 0.1f * (float)is) / mx;
        slx = sl2 = 0;
        for (int i = 0; i < n; i++) {
            int l = clampi(nint(iscale * x[i]), -nmax, nmax - 1);
            float w = x[i] * x[i];
            slx += w * x[i] * (float)l;
            sl2 += w * (float)l * (float)l;
        }
        if (sl2 > 0 && slx * slx > best * sl2) {
            for (int i = 0; i < n; i++) L[i] = (uint8_t)(nmax + clampi(nint(iscale * x[i]), -nmax, nmax - 1));
            scale = slx / sl2;
            best = scale * slx;
        }
    }
    return scale;
}

/* The part Q4_K and Q5_K share: fills d, dmin, scales[12] and L[256]
 * (0..nmax) for one super-block. */
static void k_affine_block(const float *x, int nmax, float rmin, int nstep, uint16_t *d16, uint16_t *dmin16,
                           uint8_t scales[12], uint8_t L[256]) {
    float sc[8], mn[8], w[32], max_sc = 0, max_mn = 0;
    for (int j = 0; j < 8; j++) {
        const float *s = x + 32 * j;
        float s2 = 0;
        for (int l = 0; l < 32; l++) s2 += s[l] * s[l];
        float av = sqrtf(s2 / 32.0f);
        for (int l = 0; l < 32; l++) w[l] = av + fabsf(s[l]);
        sc[j] = fit_affine(32, nmax, s, w, L + 32 * j, &mn[j], rmin, 0.1f, nstep);
        if (sc[j] > max_sc) max_sc = sc[j];
        if (mn[j] > max_mn) max_mn = mn[j];
    }
    float isc = max_sc > 0 ? 63.0f / max_sc : 0.0f, imn = max_mn > 0 ? 63.0f / max_mn : 0.0f;
    uint8_t ls[8], lm[8];
    for (int j = 0; j < 8; j++) {
        int s = nint(isc * sc[j]), m = nint(imn * mn[j]);
        ls[j] = (uint8_t)(s < 63 ? s : 63);
        lm[j] = (uint8_t)(m < 63 ? m : 63);
    }
    kq_pack_scale_min_k4(ls, lm, scales);
    *d16 = kq_f32_to_f16(max_sc / 63.0f);
    *dmin16 = kq_f32_to_f16(max_mn / 63.0f);
    float d = kq_f16_to_f32(*d16), dmin = kq_f16_to_f32(*dmin16);
    for (int j = 0; j < 8; j++) {
        float ds = d * (float)ls[j];
        if (!ds) continue; /* keeps the fit's levels, as the reference does */
        float dm = dmin * (float)lm[j];
        for (int l = 0; l < 32; l++) L[32 * j + l] = (uint8_t)clampi(nint((x[32 * j + l] + dm) / ds), 0, nmax);
    }
}

static void q4_k(const float *x, kq_block_q4_k *b, int64_t nblk) {
    uint8_t L[256];
    for (int64_t i = 0; i < nblk; i++, b++, x += 256) {
        k_affine_block(x, 15, -1.0f, 20, &b->d, &b->dmin, b->scales, L);
        kq_pack_q4_k_codes(L, b->qs);
    }
}

static void q5_k(const float *x, kq_block_q5_k *b, int64_t nblk) {
    uint8_t L[256];
    for (int64_t i = 0; i < nblk; i++, b++, x += 256) {
        k_affine_block(x, 31, -0.5f, 15, &b->d, &b->dmin, b->scales, L);
        kq_pack_q5_k_codes(L, b->qh, b->qs);
    }
}

static void q6_k(const float *x, kq_block_q6_k *b, int64_t nblk) {
    uint8_t L[256];
    for (int64_t i = 0; i < nblk; i++, b++, x += 256) {
        float sc[16], max_sc = 0, max_abs = 0;
        for (int g = 0; g < 16; g++) {
            sc[g] = fit_symmetric(16, 32, x + 16 * g, L + 16 * g);
            if (fabsf(sc[g]) > max_abs) {
                max_abs = fabsf(sc[g]);
                max_sc = sc[g];
            }
        }
        if (max_abs < QG_EPS) {
            memset(b, 0, sizeof *b);
            continue;
        }
        float isc = -128.0f / max_sc;
        b->d = kq_f32_to_f16(1.0f / isc);
        for (int g = 0; g < 16; g++) {
            int s = nint(isc * sc[g]);
            b->scales[g] = (int8_t)(s < 127 ? s : 127);
        }
        float d0 = kq_f16_to_f32(b->d);
        for (int g = 0; g < 16; g++) {
            float d = d0 * (float)b->scales[g];
            if (!d) continue;
            for (int l = 0; l < 16; l++) L[16 * g + l] = (uint8_t)(clampi(nint(x[16 * g + l] / d), -32, 31) + 32);
        }
        kq_pack_q6_k_codes(L, b->ql, b->qh);
    }
}

int kern_quantize_row_gguf(sgl_dtype t, const float *src, void *dst, int64_t n) {
    if (!sgl_dtype_known(t) || n < 0 || n % sgl_dtype_block_elems(t)) return -1;
    switch (t) {
    case SGL_DTYPE_Q4_K:
        q4_k(src, dst, n / 256);
        return 0;
    case SGL_DTYPE_Q5_K:
        q5_k(src, dst, n / 256);
        return 0;
    case SGL_DTYPE_Q6_K:
        q6_k(src, dst, n / 256);
        return 0;
    case SGL_DTYPE_F32:
    case SGL_DTYPE_F16:
    case SGL_DTYPE_BF16:
    case SGL_DTYPE_Q4_0:
    case SGL_DTYPE_Q4_1:
    case SGL_DTYPE_Q8_0:
        return kern_quantize_row(t, src, dst, n);
    default:
        return -1;
    }
}
