/* ref_ops: scalar reference versions of the matmul and the small ops. They
 * are the slow paths the AVX2 versions are tested against: plain loops, a
 * fixed sequential reduction order, no quantization of activations (the
 * reference matmul decodes each weight row to f32 and accumulates in double).
 */
#include <math.h>
#include <stdlib.h>

#include "kernels/cpu/kern_internal.h"

static void ref_mm_rows(sgl_dtype t, const void *W, int64_t k, const float *X, int64_t nb,
                        int64_t rows, float *Y, int64_t r0, int64_t r1) {
    uint64_t rb = sgl_dtype_row_bytes(t, (uint64_t)k);
    float *w = malloc((size_t)k * sizeof *w);
    if (!w) return;
    int base = r8_base_type(t);
    uint8_t *plain = NULL;
    if (base >= 0 && !(plain = malloc(sgl_dtype_row_bytes(base, (uint64_t)k)))) {
        free(w);
        return;
    }
    for (int64_t r = r0; r < r1; r++) {
        if (base >= 0) {
            /* an R8 matrix: the row back in its plain layout first */
            r8_unpack_row(base, W, r, k, plain);
            kref_dequant_row(base, plain, w, k);
        } else {
            kref_dequant_row(t, (const uint8_t *)W + (uint64_t)r * rb, w, k);
        }
        for (int64_t b = 0; b < nb; b++) {
            const float *x = X + b * k;
            double acc = 0;
            for (int64_t j = 0; j < k; j++)
                acc += (double)w[j] * (double)x[j];
            Y[b * rows + r] = (float)acc;
        }
    }
    free(w);
    free(plain);
}

#define REF_MM(T)                                                                                  \
    static void ref_mm_##T(const void *W, int64_t rows, int64_t k, const float *X, const void *xq, \
                           int64_t nb, float *Y, int64_t r0, int64_t r1) {                         \
        (void)xq;                                                                                  \
        ref_mm_rows((sgl_dtype)SGL_DTYPE_##T, W, k, X, nb, rows, Y, r0, r1);                                \
    }
REF_MM(F32)
REF_MM(F16)
REF_MM(BF16)
REF_MM(Q4_0)
REF_MM(Q4_1)
REF_MM(Q8_0)
REF_MM(Q4_0_R8)
REF_MM(Q4_1_R8)
REF_MM(Q8_0_R8)
REF_MM(Q4_K_R8)
REF_MM(Q6_K_R8)
REF_MM(Q5_K_R8)
REF_MM(Q4_K)
REF_MM(Q5_K)
REF_MM(Q6_K)

static void ref_rmsnorm(float *y, const float *x, const float *w, int64_t n, float eps) {
    float ss = 0;
    for (int64_t i = 0; i < n; i++)
        ss += x[i] * x[i];
    float s = 1.0f / sqrtf(ss / (float)n + eps);
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] * s * w[i];
}

static void ref_softmax(float *x, int64_t n) {
    if (n <= 0) return;
    float mx = x[0];
    for (int64_t i = 1; i < n; i++)
        mx = fmaxf(mx, x[i]);
    float sum = 0;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    float inv = 1.0f / sum;
    for (int64_t i = 0; i < n; i++)
        x[i] *= inv;
}

static void ref_silu_mul(float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

static void ref_add(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        y[i] += x[i];
}

static float ref_dot_f32(const float *a, const float *b, int64_t n) {
    float s = 0;
    for (int64_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

static void ref_axpy(float *y, float a, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        y[i] += a * x[i];
}

static void ref_f32_to_f16(uint16_t *d, const float *s, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        d[i] = kq_f32_to_f16(s[i]);
}
static void ref_f16_to_f32(float *d, const uint16_t *s, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        d[i] = kq_f16_to_f32(s[i]);
}

void kref_ops_fill(kern_ops *ops) {
    memset(ops, 0, sizeof *ops);
    ops->name = "scalar";
#define SET(T) ops->mm[SGL_DTYPE_##T] = (kern_mm_impl){ref_mm_##T, NULL, NULL, 1};
    SET(F32)
    SET(F16)
    SET(BF16) SET(Q4_0) SET(Q4_1) SET(Q8_0) SET(Q4_K) SET(Q5_K) SET(Q6_K)
    SET(Q4_0_R8) SET(Q4_1_R8) SET(Q8_0_R8) SET(Q4_K_R8) SET(Q5_K_R8) SET(Q6_K_R8)
#undef SET
        ops->rmsnorm = ref_rmsnorm;
    ops->softmax = ref_softmax;
    ops->silu_mul = ref_silu_mul;
    ops->add = ref_add;
    ops->dot_f32 = ref_dot_f32;
    ops->axpy = ref_axpy;
    ops->f32_to_f16 = ref_f32_to_f16;
    ops->f16_to_f32 = ref_f16_to_f32;
}

/* Per thread, the frequencies of the last (theta_base, rot_dim) and the
 * cos/sin of the last (pos, freq_scale) as well: the model rotates q and then
 * k of a row at the same position, so the second call only looks them up.
 * The cached values are the ones the formula gives, so results do not depend
 * on the cache. */
#define ROPE_CACHE_HALF 512
static _Thread_local struct {
    bool inv_ok, cs_ok;
    int rot_dim, pos;
    float theta_base, freq_scale;
    double inv[ROPE_CACHE_HALF];
    float c[ROPE_CACHE_HALF], s[ROPE_CACHE_HALF];
} rope_cache;

/* Rotation angles are computed in double from the exact formula
 * pos * freq_scale * theta_base^(-2i/rot_dim), once per call for all heads
 * (or taken from the per-thread cache above). */
void kern_rope(float *x, int n_heads, int head_dim, int rot_dim, int pos, float theta_base,
               float freq_scale, bool neox) {
    int half = rot_dim / 2;
    bool cached = half <= ROPE_CACHE_HALF;
    if (cached && !(rope_cache.inv_ok && rope_cache.rot_dim == rot_dim &&
                    rope_cache.theta_base == theta_base)) {
        for (int i = 0; i < half; i++)
            rope_cache.inv[i] = pow((double)theta_base, -2.0 * i / (double)rot_dim);
        rope_cache.inv_ok = true;
        rope_cache.cs_ok = false;
        rope_cache.rot_dim = rot_dim;
        rope_cache.theta_base = theta_base;
    }
    if (cached && !(rope_cache.cs_ok && rope_cache.pos == pos &&
                    rope_cache.freq_scale == freq_scale)) {
        for (int i = 0; i < half; i++) {
            double a = (double)pos * (double)freq_scale * rope_cache.inv[i];
            rope_cache.c[i] = (float)cos(a);
            rope_cache.s[i] = (float)sin(a);
        }
        rope_cache.cs_ok = true;
        rope_cache.pos = pos;
        rope_cache.freq_scale = freq_scale;
    }
    for (int i = 0; i < half; i++) {
        float c, s;
        if (cached) {
            c = rope_cache.c[i];
            s = rope_cache.s[i];
        } else {
            double inv = pow((double)theta_base, -2.0 * i / (double)rot_dim);
            double a = (double)pos * (double)freq_scale * inv;
            c = (float)cos(a);
            s = (float)sin(a);
        }
        int ia = neox ? i : 2 * i, ib = neox ? i + half : 2 * i + 1;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + (int64_t)h * head_dim;
            float x0 = v[ia], x1 = v[ib];
            v[ia] = x0 * c - x1 * s;
            v[ib] = x0 * s + x1 * c;
        }
    }
}
