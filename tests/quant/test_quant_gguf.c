/* test_quant_gguf: kern_quantize_row_gguf round trips through our own
 * dequantizer (kern_dequant_row) for every type `sglc quantize` writes: each
 * element within the bound docs/quantize.md states, on the tiny model's
 * weights and on harder synthetic rows (outliers, constant and zero blocks,
 * one-signed blocks); plus the K-quant search must not lose to the plain
 * range-based encoder (kern_quantize_row) in squared error. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "kernels/cpu/quant_gguf.h"
#include "kernels/kernels.h"
#include "tests/quant/bounds.h"
#include "tests/test.h"
#include "tests/tools/tiny_model.h"

static const sgl_dtype types[] = {SGL_DTYPE_F16,  SGL_DTYPE_BF16, SGL_DTYPE_Q8_0, SGL_DTYPE_Q4_0,
                                  SGL_DTYPE_Q4_1, SGL_DTYPE_Q4_K, SGL_DTYPE_Q5_K, SGL_DTYPE_Q6_K};
#define N_TYPES ((int)(sizeof types / sizeof types[0]))

static double worst[SGL_DTYPE_MAX_ID], rms_worst[SGL_DTYPE_MAX_ID];

/* Round trip of x[0..n) as t; checks every element, returns the squared error. */
static double round_trip(sgl_dtype t, const float *x, int64_t n, const char *what) {
    int be = sgl_dtype_block_elems(t);
    uint8_t *q = malloc(sgl_dtype_row_bytes(t, (uint64_t)n));
    float *y = malloc((size_t)n * sizeof *y);
    CHECK_INT(kern_quantize_row_gguf(t, x, q, n), 0);
    kern_dequant_row(t, q, y, n);
    double se = 0, sx = 0;
    int bad = 0;
    int span = be == 1 ? 32 : be;
    for (int64_t i = 0; i < n; i++) {
        int64_t b0 = i / span * span;
        double e = fabs((double)y[i] - x[i]), lim = bound(t, x + b0, (int)(n - b0 < span ? n - b0 : span), x[i]);
        se += e * e;
        sx += (double)x[i] * x[i];
        if (lim > 0) worst[t] = fmax(worst[t], e / lim);
        if (!(e <= lim) && bad++ < 3)
            TEST_FAIL_("%s %s: element %lld: %g decoded as %g (error %g, bound %g)", sgl_dtype_name(t), what,
                       (long long)i, x[i], y[i], e, lim);
    }
    if (sx > 0) {
        double rel = sqrt(se / sx);
        rms_worst[t] = fmax(rms_worst[t], rel);
        CHECK_MSG(rel <= rms_bound(t), "%s %s: relative rms error %g above %g", sgl_dtype_name(t), what, rel,
                  rms_bound(t));
    }
    free(q);
    free(y);
    return se;
}

static const char *const tiny_tensors[] = {"token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_k.weight",
                                           "blk.1.ffn_down.weight", "blk.1.ffn_gate.weight"};

static void test_tiny_model_weights(void) {
    tiny_opts o = {.seed = 7};
    for (size_t k = 0; k < sizeof tiny_tensors / sizeof *tiny_tensors; k++) {
        uint64_t n;
        float *v = tiny_model_values(&o, tiny_tensors[k], &n);
        CHECK(v != NULL);
        if (!v) continue;
        n -= n % 256;
        for (int t = 0; t < N_TYPES; t++) round_trip(types[t], v, (int64_t)n, tiny_tensors[k]);
        free(v);
    }
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float unif(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 * 2 - 1);
}

static void test_awkward_rows(void) {
    enum { N = 256 * 12 };
    float *x = malloc(N * sizeof *x);
    for (int i = 0; i < N; i++) {
        float g = unif() + unif() + unif(); /* roughly normal */
        x[i] = g * 0.02f;
    }
    for (int i = 0; i < N; i += 97) x[i] *= 40; /* outliers */
    for (int i = 256; i < 512; i++) x[i] = 0;   /* a zero super-block */
    for (int i = 512; i < 768; i++) x[i] = 0.25f; /* a constant one */
    for (int i = 768; i < 1024; i++) x[i] = fabsf(x[i]) + 0.01f; /* all positive */
    for (int i = 1024; i < 1280; i++) x[i] = -fabsf(x[i]) - 0.01f; /* all negative */
    for (int i = 1280; i < 1536; i++) x[i] = i % 32 == 5 ? 3.0f : 1e-4f * unif(); /* one spike per block */
    for (int i = 1536; i < 1792; i++) x[i] *= 1e-6f; /* tiny values (f16 subnormal scales) */
    for (int t = 0; t < N_TYPES; t++) round_trip(types[t], x, N, "synthetic");
    free(x);
}

/* The K-quant search picks scales by least squares: on normal-like data it
 * must do at least as well overall as the plain range-based encoder. */
static void test_k_search_beats_range(void) {
    enum { N = 256 * 64 };
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    uint8_t *q = malloc(sgl_dtype_row_bytes(SGL_DTYPE_Q4_K, N) * 2);
    for (int i = 0; i < N; i++) x[i] = unif() + unif() + unif() + unif();
    const sgl_dtype kt[] = {SGL_DTYPE_Q4_K, SGL_DTYPE_Q5_K, SGL_DTYPE_Q6_K};
    for (int k = 0; k < 3; k++) {
        double se_search = round_trip(kt[k], x, N, "normal"), se_plain = 0;
        CHECK_INT(kern_quantize_row(kt[k], x, q, N), 0);
        kern_dequant_row(kt[k], q, y, N);
        for (int i = 0; i < N; i++) se_plain += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
        CHECK_MSG(se_search <= se_plain, "%s: search error %g above the range encoder's %g",
                  sgl_dtype_name(kt[k]), se_search, se_plain);
    }
    free(x);
    free(y);
    free(q);
}

static void test_rejects(void) {
    float x[300] = {0};
    uint8_t q[1024];
    CHECK_INT(kern_quantize_row_gguf(SGL_DTYPE_Q4_K, x, q, 300), -1);
    CHECK_INT(kern_quantize_row_gguf(SGL_DTYPE_Q4_0, x, q, 33), -1);
    CHECK_INT(kern_quantize_row_gguf(SGL_DTYPE_Q2_K, x, q, 256), -1);
}

int main(void) {
    TEST_RUN(test_tiny_model_weights);
    TEST_RUN(test_awkward_rows);
    TEST_RUN(test_k_search_beats_range);
    TEST_RUN(test_rejects);
    if (getenv("SGL_QUANT_PRINT"))
        for (int t = 0; t < N_TYPES; t++)
            printf("%-5s worst error / bound %.3f, worst relative rms %.4f\n", sgl_dtype_name(types[t]),
                   worst[types[t]], rms_worst[types[t]]);
    return TEST_DONE();
}
