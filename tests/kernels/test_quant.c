/* test_quant: the weight formats: f16/bf16 conversion, hand-built GGML
 * blocks decoded to known values (pins the bit layouts), and quantize ->
 * dequantize round trips of every supported type within per-type bounds.
 */
#include <stdint.h>

#include "kernels/kernels.h"
#include "tests/test.h"

static uint32_t rng_state = 12345;
static float frand(void) { /* uniform in [-1, 1) */
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)(rng_state >> 8) / 8388608.0f - 1.0f;
}

static void put16(uint8_t *p, uint16_t v) {
    memcpy(p, &v, 2);
}

static void test_f16_conversion(void) {
    /* Every finite f16 survives f16 -> f32 -> f16. */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        uint16_t in = (uint16_t)h, out;
        float f;
        kern_f16_to_f32(&f, &in, 1);
        kern_f32_to_f16(&out, &f, 1);
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) {
            if (!isnan(f) || (out & 0x7c00) != 0x7c00 || !(out & 0x3ff)) bad++;
        } else if (out != in)
            bad++;
    }
    CHECK_INT(bad, 0);
    float v[] = {1.0f,
                 -2.0f,
                 65504.0f,
                 65520.0f,
                 5.960464477539063e-8f,
                 1.0f + 1.0f / 2048,
                 1.0f + 3.0f / 2048,
                 0.0f};
    uint16_t want[] = {0x3c00, 0xc000, 0x7bff, 0x7c00, 0x0001, 0x3c00, 0x3c02, 0x0000};
    uint16_t got[8];
    kern_f32_to_f16(got, v, 8);
    for (int i = 0; i < 8; i++)
        CHECK_MSG(got[i] == want[i], "f16(%g) = %04x, want %04x", v[i], got[i], want[i]);
}

static void test_bf16(void) {
    float src[4] = {1.0f, -3.5f, 1.0f + 1.0f / 256, 1.0f + 3.0f / 256}, dst[4];
    uint16_t q[4];
    CHECK_INT(kern_quantize_row(SGL_DTYPE_BF16, src, q, 4), 0);
    CHECK_INT(q[0], 0x3f80);
    CHECK_INT(q[1], 0xc060);
    CHECK_INT(q[2], 0x3f80); /* tie rounds to even */
    CHECK_INT(q[3], 0x3f82);
    kern_dequant_row(SGL_DTYPE_BF16, q, dst, 4);
    CHECK(dst[0] == 1.0f && dst[1] == -3.5f);
}

static void test_layout_q4(void) {
    uint8_t b0[18] = {0}, b1[20] = {0};
    put16(b0, 0x3c00); /* d = 1 */
    for (int j = 0; j < 16; j++)
        b0[2 + j] = (uint8_t)(j | ((15 - j) << 4));
    float y[32];
    kern_dequant_row(SGL_DTYPE_Q4_0, b0, y, 32);
    for (int j = 0; j < 16; j++) {
        CHECK(y[j] == (float)(j - 8));
        CHECK(y[j + 16] == (float)(15 - j - 8));
    }
    put16(b1, 0x4000);     /* d = 2 */
    put16(b1 + 2, 0xbc00); /* m = -1 */
    for (int j = 0; j < 16; j++)
        b1[4 + j] = (uint8_t)(j | (3 << 4));
    kern_dequant_row(SGL_DTYPE_Q4_1, b1, y, 32);
    for (int j = 0; j < 16; j++) {
        CHECK(y[j] == 2.0f * j - 1.0f);
        CHECK(y[j + 16] == 5.0f);
    }
    uint8_t b8[34];
    put16(b8, 0x3800); /* d = 0.5 */
    for (int j = 0; j < 32; j++)
        b8[2 + j] = (uint8_t)(int8_t)(j - 16);
    kern_dequant_row(SGL_DTYPE_Q8_0, b8, y, 32);
    for (int j = 0; j < 32; j++)
        CHECK(y[j] == 0.5f * (j - 16));
}

/* Q4_K: d = 1, dmin = 1; sub-block j has scale j+1 and min j (so the
 * high-bit packing of scales 4..7 is exercised with values > 15 via 40+j). */
static void test_layout_q4_k(void) {
    uint8_t b[144] = {0};
    put16(b, 0x3c00);
    put16(b + 2, 0x3c00);
    uint8_t sc[8], mn[8];
    for (int j = 0; j < 8; j++) {
        sc[j] = (uint8_t)(j < 4 ? j + 1 : 40 + j);
        mn[j] = (uint8_t)(j < 4 ? j : 20 + j);
    }
    uint8_t *s = b + 4;
    for (int j = 0; j < 4; j++) {
        s[j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
        s[j + 4] = (uint8_t)(mn[j] | ((mn[j + 4] >> 4) << 6));
        s[j + 8] = (uint8_t)((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
    }
    uint8_t *qs = b + 16;
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++)
            qs[32 * c + l] = (uint8_t)((l & 15) | (((l + c) & 15) << 4));
    float y[256];
    kern_dequant_row(SGL_DTYPE_Q4_K, b, y, 256);
    int bad = 0;
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            int j0 = 2 * c, j1 = 2 * c + 1;
            if (y[64 * c + l] != (float)(sc[j0] * (l & 15) - mn[j0])) bad++;
            if (y[64 * c + 32 + l] != (float)(sc[j1] * ((l + c) & 15) - mn[j1])) bad++;
        }
    CHECK_INT(bad, 0);
}

/* Q6_K: d = 1, scales[g] = g - 8; element e gets q = e % 64 - 32. */
static void test_layout_q6_k(void) {
    uint8_t b[210] = {0};
    uint8_t *ql = b, *qh = b + 128;
    int8_t *sc = (int8_t *)(b + 192);
    put16(b + 208, 0x3c00);
    for (int g = 0; g < 16; g++)
        sc[g] = (int8_t)(g - 8);
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 32; l++) {
            int q[4];
            for (int i = 0; i < 4; i++)
                q[i] = (128 * h + 32 * i + l) % 64;
            ql[64 * h + l] = (uint8_t)((q[0] & 15) | ((q[2] & 15) << 4));
            ql[64 * h + l + 32] = (uint8_t)((q[1] & 15) | ((q[3] & 15) << 4));
            qh[32 * h + l] = (uint8_t)((q[0] >> 4) | ((q[1] >> 4) << 2) | ((q[2] >> 4) << 4) |
                                       ((q[3] >> 4) << 6));
        }
    float y[256];
    kern_dequant_row(SGL_DTYPE_Q6_K, b, y, 256);
    int bad = 0;
    for (int e = 0; e < 256; e++)
        if (y[e] != (float)((e / 16 - 8) * (e % 64 - 32))) bad++;
    CHECK_INT(bad, 0);
}

/* Round trip: max |x - deq(q(x))| over a block must stay below
 * tol * (block's max |x|). Inputs are uniform in [-1, 1) with a few outliers. */
static void round_trip(sgl_dtype t, int n, double tol) {
    float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n);
    uint8_t *q = malloc(sgl_dtype_row_bytes(t, (uint64_t)n));
    for (int i = 0; i < n; i++)
        x[i] = frand() * (i % 97 == 5 ? 8.0f : 1.0f);
    CHECK_INT(kern_quantize_row(t, x, q, n), 0);
    kern_dequant_row(t, q, y, n);
    int be = sgl_dtype_block_elems(t) < 32 ? 32 : sgl_dtype_block_elems(t);
    double worst = 0;
    for (int b0 = 0; b0 < n; b0 += be) {
        double amax = 0, err = 0;
        for (int i = b0; i < b0 + be; i++) {
            amax = fmax(amax, fabs(x[i]));
            err = fmax(err, fabs(x[i] - y[i]));
        }
        if (amax > 0) worst = fmax(worst, err / amax);
    }
    CHECK_MSG(worst <= tol, "%s: worst relative block error %g > %g", sgl_dtype_name(t), worst,
              tol);
    free(x);
    free(y);
    free(q);
}

static void test_round_trips(void) {
    round_trip(SGL_DTYPE_F32, 1024, 0);
    round_trip(SGL_DTYPE_F16, 1024, 1.0 / 2048);
    round_trip(SGL_DTYPE_BF16, 1024, 1.0 / 256);
    round_trip(SGL_DTYPE_Q8_0, 1024, 0.5 / 127 + 1e-3);
    round_trip(SGL_DTYPE_Q4_0, 1024, 1.0 / 8 + 1e-3);  /* -amax clamps to 7/8 of it */
    round_trip(SGL_DTYPE_Q4_1, 1024, 1.0 / 15 + 1e-3); /* range is up to 2*amax */
    round_trip(SGL_DTYPE_Q4_K, 2048, 0.09);
    round_trip(SGL_DTYPE_Q5_K, 2048, 0.05);
    round_trip(SGL_DTYPE_Q6_K, 2048, 0.03);
}

static void test_supported(void) {
    sgl_dtype yes[] = {SGL_DTYPE_F32,  SGL_DTYPE_F16,  SGL_DTYPE_BF16,
                       SGL_DTYPE_Q4_0, SGL_DTYPE_Q4_1, SGL_DTYPE_Q8_0,
                       SGL_DTYPE_Q4_K, SGL_DTYPE_Q5_K, SGL_DTYPE_Q6_K};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        CHECK(kern_type_supported(yes[i]));
    CHECK(!kern_type_supported(SGL_DTYPE_Q2_K));
    CHECK(!kern_type_supported(SGL_DTYPE_I32));
    CHECK(!kern_type_supported((sgl_dtype)63));
    float x[32] = {0};
    uint8_t buf[256];
    CHECK_INT(kern_quantize_row(SGL_DTYPE_Q2_K, x, buf, 32), -1);
    CHECK_INT(kern_quantize_row(SGL_DTYPE_Q4_0, x, buf, 31), -1);
}

int main(void) {
    TEST_RUN(test_f16_conversion);
    TEST_RUN(test_bf16);
    TEST_RUN(test_layout_q4);
    TEST_RUN(test_layout_q4_k);
    TEST_RUN(test_layout_q6_k);
    TEST_RUN(test_round_trips);
    TEST_RUN(test_supported);
    for (int pass = 0; pass < 2; pass++) {
        /* the same checks through the fast implementation's conversions */
        kern_force_reference(pass == 0);
        TEST_RUN(test_f16_conversion);
    }
    return TEST_DONE();
}
