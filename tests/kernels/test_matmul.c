/* test_matmul: kern_matmul for every supported weight type.
 *
 * 1. The fast implementation against the scalar reference (f32 weights
 *    decoded from the same blocks, double accumulation) on random shapes
 *    (odd row counts, nb = 1..37, k = block multiples up to 4096). The fast
 *    path quantizes activations to int16 per block of 32 values (x ~= d q,
 *    d = amax / 32767), whose rounding error is at most amax/65534 per value,
 *    and then sums exactly in integers per block; so the bound per output is
 *        Q = sum_j |w_j| * amax(32-block of x_j) / 65534 * 1.02
 *    plus the f32 rounding of the per-block scaling and accumulation:
 *        F = (k/32 + 8) * 2^-24 * 3 * sum_j amax(32-block of w_j) * |x_j|
 *    (each product passes through at most k/32 + 8 roundings; the factor 3
 *    covers Q4_1/K-quant min terms, which are summed apart from the main
 *    term: |q d| + |m| <= 3 amax(w) in a block). The worst case Q is loose,
 *    so a statistical bound is checked too: rounding errors are at most
 *    uniform on [-d/2, d/2], so the error's deviation is
 *    sigma = sqrt(sum_j w_j^2 d_j^2 / 12) and we require
 *    |err| <= min(Q, 6 sigma) + F; the data are fixed by the seed, so this
 *    cannot flake. (With int8 activations the same bounds held with 254 and
 *    127 in place of 65534 and 32767: 258x looser; that is the bound checked
 *    when the int8 variant is in use, SGL_KERN_INT8=1.) Float weight types use
 *    only an f32 term, 2e-5 * sum_j |w_j x_j|.
 * 2. Determinism: Y[b][r] bit-identical whatever nb, the other rows in the
 *    batch, their order and the thread count.
 */
#include <stdint.h>

#include "kernels/kernels.h"
#include "tests/test.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}
static float frand(void) {
    return (float)(rnd() & 0xffffff) / 8388608.0f - 1.0f;
}

static const sgl_dtype types[] = {SGL_DTYPE_F32,  SGL_DTYPE_F16,  SGL_DTYPE_BF16,
                                  SGL_DTYPE_Q4_0, SGL_DTYPE_Q4_1, SGL_DTYPE_Q8_0,
                                  SGL_DTYPE_Q4_K, SGL_DTYPE_Q5_K, SGL_DTYPE_Q6_K};
#define N_TYPES (int)(sizeof types / sizeof types[0])

static int is_quant(sgl_dtype t) {
    return sgl_dtype_block_elems(t) > 1;
}

/* Random weight matrix in type t; returns malloc'd bytes, and its decoded
 * values in *wf (malloc'd). */
static uint8_t *make_weights(sgl_dtype t, int64_t rows, int64_t k, float **wf) {
    size_t rb = sgl_dtype_row_bytes(t, (uint64_t)k);
    uint8_t *w = malloc(rb * (size_t)rows);
    float *src = malloc(sizeof(float) * (size_t)k);
    *wf = malloc(sizeof(float) * (size_t)(rows * k));
    for (int64_t r = 0; r < rows; r++) {
        float scale = 0.05f + (float)(rnd() % 100) / 50.0f;
        for (int64_t j = 0; j < k; j++)
            src[j] = frand() * scale;
        kern_quantize_row(t, src, w + (size_t)r * rb, k);
        kern_dequant_row(t, w + (size_t)r * rb, *wf + r * k, k);
    }
    free(src);
    return w;
}

static void fill_x(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        x[i] = frand() * (i % 13 == 0 ? 4.0f : 1.0f);
}

static void test_fast_vs_reference(void) {
    /* the activations' integer range: int16, or int8 for the opt-in variant */
    const double qmax = strstr(kern_impl_name(), "int8") ? 127.0 : 32767.0;
    kern_pool *pool = kern_pool_new(2);
    CHECK(pool != NULL);
    if (strcmp(kern_impl_name(), "scalar") == 0)
        printf("note: no AVX2 here; comparing scalar with itself\n");
    double worst_t[N_TYPES] = {0};
    for (int ti = 0; ti < N_TYPES; ti++) {
        sgl_dtype t = types[ti];
        int be = sgl_dtype_block_elems(t) > 32 ? sgl_dtype_block_elems(t) : 32;
        for (int iter = 0; iter < 6; iter++) {
            int64_t rows = 1 + rnd() % 67;
            int64_t k = be * (1 + (int64_t)(rnd() % (uint32_t)(4096 / be)));
            if (iter == 0) k = be;
            if (iter == 1) k = 4096;
            if (t == SGL_DTYPE_F32 && iter == 2) k = 37; /* float types need no blocks */
            int64_t nb = iter == 3 ? 1 : 1 + rnd() % 37;
            float *wf, *x = malloc(sizeof(float) * (size_t)(nb * k));
            uint8_t *w = make_weights(t, rows, k, &wf);
            fill_x(x, nb * k);
            float *yr = malloc(sizeof(float) * (size_t)(nb * rows)),
                  *yf = malloc(sizeof(float) * (size_t)(nb * rows));
            kern_force_reference(true);
            kern_matmul(pool, t, w, rows, k, x, nb, yr);
            kern_force_reference(false);
            kern_matmul(pool, t, w, rows, k, x, nb, yf);
            int bad = 0;
            double worst = 0;
            for (int64_t b = 0; b < nb; b++)
                for (int64_t r = 0; r < rows; r++) {
                    const float *wr = wf + r * k, *xb = x + b * k;
                    double sabs = 0, sq = 0, var = 0, smag = 0;
                    for (int64_t j0 = 0; j0 < k; j0 += 32) {
                        double amax = 0, wmax = 0, sw = 0, sw2 = 0, sx = 0;
                        int64_t j1 = j0 + 32 < k ? j0 + 32 : k;
                        for (int64_t j = j0; j < j1; j++) {
                            amax = fmax(amax, fabs(xb[j]));
                            wmax = fmax(wmax, fabs(wr[j]));
                            sw += fabs(wr[j]);
                            sw2 += (double)wr[j] * wr[j];
                            sx += fabs(xb[j]);
                            sabs += fabs(wr[j] * xb[j]);
                        }
                        sq += sw * amax / (2.0 * qmax);
                        var += sw2 * (amax / qmax) * (amax / qmax) / 12.0;
                        smag += wmax * sx;
                    }
                    double tol = is_quant(t) ? fmin(1.02 * sq, 6.0 * sqrt(var)) +
                                                   (double)(k / 32 + 8) * 0x1p-24 * 3 * smag
                                             : 2e-5 * sabs;
                    tol += 1e-9;
                    double err = fabs((double)yf[b * rows + r] - (double)yr[b * rows + r]);
                    worst = fmax(worst, err / tol);
                    worst_t[ti] = fmax(worst_t[ti], err / tol);
                    if (!(err <= tol)) bad++;
                }
            CHECK_MSG(bad == 0,
                      "%s rows=%lld k=%lld nb=%lld: %d outputs out of bound (worst err/tol %.3g)",
                      sgl_dtype_name(t), (long long)rows, (long long)k, (long long)nb, bad, worst);
            free(w);
            free(wf);
            free(x);
            free(yr);
            free(yf);
        }
        printf("%-5s worst |fast - reference| / bound: %.3f\n", sgl_dtype_name(t), worst_t[ti]);
    }
    kern_pool_free(pool);
}

/* The reference itself must match a direct double-precision product. */
static void test_reference_exact(void) {
    kern_force_reference(true);
    int64_t rows = 5, k = 64, nb = 3;
    float *wf, x[192], y[15];
    uint8_t *w = make_weights(SGL_DTYPE_Q4_1, rows, k, &wf);
    fill_x(x, nb * k);
    kern_matmul(NULL, SGL_DTYPE_Q4_1, w, rows, k, x, nb, y);
    for (int64_t b = 0; b < nb; b++)
        for (int64_t r = 0; r < rows; r++) {
            double s = 0;
            for (int64_t j = 0; j < k; j++)
                s += (double)wf[r * k + j] * x[b * k + j];
            CHECK_NEAR(y[b * rows + r], s, 1e-5 * (1 + fabs(s)));
        }
    kern_force_reference(false);
    free(w);
    free(wf);
}

/* Y rows computed inside batches of different sizes and orders, with
 * different thread counts, must be bit-identical to the nb = 1 result. */
static void test_determinism(void) {
    kern_force_reference(false);
    kern_pool *pools[3] = {kern_pool_new(1), kern_pool_new(2), kern_pool_new(3)};
    /* float types twice: batch 1 goes row by row over short rows and in
     * 8-row tiles over long ones (3,200 bytes and more) */
    for (int tk = 0; tk < 2 * N_TYPES; tk++) {
        sgl_dtype t = types[tk / 2];
        bool is_float = t == SGL_DTYPE_F32 || t == SGL_DTYPE_F16 || t == SGL_DTYPE_BF16;
        if (tk % 2 && !is_float) continue;
        int be = sgl_dtype_block_elems(t) > 32 ? sgl_dtype_block_elems(t) : 32;
        int64_t rows = 37, k = tk % 2 ? 1600 : be * (be == 256 ? 3 : 9), NB = 37;
        float *wf, *x = malloc(sizeof(float) * (size_t)(NB * k));
        uint8_t *w = make_weights(t, rows, k, &wf);
        fill_x(x, NB * k);
        /* the single-row answers */
        float *ref = malloc(sizeof(float) * (size_t)(NB * rows));
        for (int64_t b = 0; b < NB; b++)
            kern_matmul(pools[0], t, w, rows, k, x + b * k, 1, ref + b * rows);
        float *xb = malloc(sizeof(float) * (size_t)(NB * k)),
              *yb = malloc(sizeof(float) * (size_t)(NB * rows));
        int64_t perm[37];
        int bad = 0;
        for (int trial = 0; trial < 12; trial++) {
            int64_t nb = trial == 0 ? NB : 1 + rnd() % NB;
            /* a random selection of rows, in random order */
            for (int64_t i = 0; i < NB; i++)
                perm[i] = i;
            for (int64_t i = NB - 1; i > 0; i--) {
                int64_t j = rnd() % (uint32_t)(i + 1), tmp = perm[i];
                perm[i] = perm[j];
                perm[j] = tmp;
            }
            for (int64_t i = 0; i < nb; i++)
                memcpy(xb + i * k, x + perm[i] * k, sizeof(float) * (size_t)k);
            kern_matmul(pools[trial % 3], t, w, rows, k, xb, nb, yb);
            for (int64_t i = 0; i < nb; i++)
                if (memcmp(yb + i * rows, ref + perm[i] * rows, sizeof(float) * (size_t)rows) != 0)
                    bad++;
        }
        /* a pool-less call too */
        kern_matmul(NULL, t, w, rows, k, x, NB, yb);
        if (memcmp(yb, ref, sizeof(float) * (size_t)(NB * rows)) != 0) bad++;
        CHECK_MSG(bad == 0, "%s (k %lld): %d batch rows differ from the nb=1 result", sgl_dtype_name(t),
                  (long long)k, bad);
        free(w);
        free(wf);
        free(x);
        free(xb);
        free(yb);
        free(ref);
    }
    for (int i = 0; i < 3; i++)
        kern_pool_free(pools[i]);
}

/* kern_matmul_multi gives exactly what separate kern_matmul calls give, for
 * outputs of one activation format (shared quantization) and of mixed ones,
 * at several batch sizes and thread counts. */
static void test_multi(void) {
    kern_force_reference(false);
    kern_pool *pools[2] = {kern_pool_new(1), kern_pool_new(2)};
    const sgl_dtype sets[][3] = {
        {SGL_DTYPE_Q4_1, SGL_DTYPE_Q4_1, SGL_DTYPE_Q4_1}, /* q/k/v of the default model */
        {SGL_DTYPE_Q4_0, SGL_DTYPE_Q8_0, SGL_DTYPE_Q4_1}, /* one format, mixed types */
        {SGL_DTYPE_Q4_1, SGL_DTYPE_F16, SGL_DTYPE_Q6_K},  /* formats that cannot share */
    };
    const int64_t rows[3] = {96, 32, 51}, k = 512;
    for (size_t si = 0; si < sizeof sets / sizeof sets[0]; si++) {
        for (int64_t nb = 1; nb <= 33; nb += 16) {
            float *x = malloc(sizeof(float) * (size_t)(nb * k));
            fill_x(x, nb * k);
            uint8_t *w[3];
            float *wf[3], *sep[3], *mul[3];
            kern_mm_out o[3];
            for (int i = 0; i < 3; i++) {
                w[i] = make_weights(sets[si][i], rows[i], k, &wf[i]);
                sep[i] = malloc(sizeof(float) * (size_t)(nb * rows[i]));
                mul[i] = malloc(sizeof(float) * (size_t)(nb * rows[i]));
                o[i] = (kern_mm_out){sets[si][i], w[i], rows[i], mul[i]};
            }
            for (int pi = 0; pi < 2; pi++) {
                for (int i = 0; i < 3; i++)
                    kern_matmul(pools[pi], sets[si][i], w[i], rows[i], k, x, nb, sep[i]);
                kern_matmul_multi(pools[pi], o, 3, k, x, nb);
                for (int i = 0; i < 3; i++)
                    CHECK_MSG(memcmp(sep[i], mul[i], sizeof(float) * (size_t)(nb * rows[i])) == 0,
                              "set %zu output %d (%s), nb %lld, %d thread(s): multi differs",
                              si, i, sgl_dtype_name(sets[si][i]), (long long)nb, pi + 1);
            }
            for (int i = 0; i < 3; i++) {
                free(w[i]);
                free(wf[i]);
                free(sep[i]);
                free(mul[i]);
            }
            free(x);
        }
    }
    for (int i = 0; i < 2; i++)
        kern_pool_free(pools[i]);
}

/* Q4_0 / Q4_1 / Q8_0 repacked by kern_repack (8-row interleaved layout)
 * give the same bits as the plain layout, for row counts that are and are
 * not multiples of 8, any nb and thread count; and the scalar reference
 * reads the packed layout back to the same rows. */
static void test_repacked(void) {
    kern_force_reference(false);
    kern_pool *pools[3] = {kern_pool_new(1), kern_pool_new(2), kern_pool_new(3)};
    const sgl_dtype base[] = {SGL_DTYPE_Q4_0, SGL_DTYPE_Q4_1, SGL_DTYPE_Q8_0,
                              SGL_DTYPE_Q4_K, SGL_DTYPE_Q5_K, SGL_DTYPE_Q6_K};
    const int64_t rows_set[] = {1, 8, 13, 37, 64};
    int packed_any = 0;
    for (size_t ti = 0; ti < sizeof base / sizeof base[0]; ti++)
        for (size_t ri = 0; ri < sizeof rows_set / sizeof rows_set[0]; ri++) {
            sgl_dtype t = base[ti], pt;
            /* K-quants: 5 super-blocks (2 repacked on the fly at a time, then 1) */
            const int64_t k = sgl_dtype_block_elems(t) == 256 ? 1280 : 320;
            int64_t rows = rows_set[ri];
            size_t bytes;
            float *wf;
            uint8_t *w = make_weights(t, rows, k, &wf);
            void *P = kern_repack(pools[ri % 3], t, w, rows, k, &pt, &bytes, NULL, NULL);
            if (!P) {
                CHECK(pt == t && bytes == 0);
                free(w), free(wf);
                continue;
            }
            packed_any = 1;
            /* the size of the rows rounded up to 8, Q4_K's unpacked scales aside */
            size_t plain = (size_t)((rows + 7) / 8 * 8) * sgl_dtype_row_bytes(t, (uint64_t)k);
            CHECK_MSG(t == SGL_DTYPE_Q4_K   ? bytes == plain / 1152 * 1184
                      : t == SGL_DTYPE_Q5_K ? bytes == plain / 1408 * 1440
                                            : bytes == plain,
                      "%s rows %lld: packed size %zu", sgl_dtype_name(t), (long long)rows, bytes);
            /* row lookups (the embedding) read the packed layout back */
            float *r0 = malloc(sizeof(float) * (size_t)k), *r1 = malloc(sizeof(float) * (size_t)k);
            size_t rb = sgl_dtype_row_bytes(t, (uint64_t)k);
            int row_bad = 0;
            for (int64_t r = 0; r < rows; r++) {
                kern_dequant_row(t, w + (size_t)r * rb, r0, k);
                kern_matrix_row(pt, P, r, k, r1);
                row_bad += memcmp(r0, r1, sizeof(float) * (size_t)k) != 0;
            }
            CHECK_MSG(row_bad == 0, "%s rows %lld: %d rows read back from the packed layout differ",
                      sgl_dtype_name(t), (long long)rows, row_bad);
            free(r0), free(r1);
            for (int64_t nb = 1; nb <= 37; nb += 9) {
                float *x = malloc(sizeof(float) * (size_t)(nb * k));
                float *y0 = malloc(sizeof(float) * (size_t)(nb * rows));
                float *y1 = malloc(sizeof(float) * (size_t)(nb * rows));
                fill_x(x, nb * k);
                for (int pi = 0; pi < 3; pi++) {
                    kern_matmul(pools[pi], t, w, rows, k, x, nb, y0);
                    kern_matmul(pools[pi], pt, P, rows, k, x, nb, y1);
                    CHECK_MSG(memcmp(y0, y1, sizeof(float) * (size_t)(nb * rows)) == 0,
                              "%s rows %lld nb %lld threads %d: packed differs from plain",
                              sgl_dtype_name(t), (long long)rows, (long long)nb, pi + 1);
                }
                kern_force_reference(true);
                kern_matmul(NULL, t, w, rows, k, x, nb, y0);
                kern_matmul(NULL, pt, P, rows, k, x, nb, y1);
                kern_force_reference(false);
                CHECK_MSG(memcmp(y0, y1, sizeof(float) * (size_t)(nb * rows)) == 0,
                          "%s rows %lld: reference on packed differs", sgl_dtype_name(t),
                          (long long)rows);
                free(x), free(y0), free(y1);
            }
            free(P), free(w), free(wf);
        }
    if (!packed_any) printf("  (the %s kernels do not repack: nothing compared)\n", kern_impl_name());
    for (int i = 0; i < 3; i++) kern_pool_free(pools[i]);
}

/* A packed matrix past 2 MiB (kern_repack puts it in huge pages; the
 * matmul prefetches ahead of its end on the last group): the same bits as
 * the plain layout for batch 1 and 3 on 1-3 threads. */
static void test_repacked_large(void) {
    kern_force_reference(false);
    const sgl_dtype t = SGL_DTYPE_Q4_0;
    const int64_t rows = 1029, k = 4096; /* 2.3 MiB, a partial last group */
    float *wf;
    uint8_t *w = make_weights(t, rows, k, &wf);
    sgl_dtype pt;
    size_t bytes;
    kern_pool *pools[3] = {kern_pool_new(1), kern_pool_new(2), kern_pool_new(3)};
    void *P = kern_repack(pools[1], t, w, rows, k, &pt, &bytes, NULL, NULL);
    if (P) {
        CHECK(bytes >= (size_t)2 << 20);
        float *x = malloc(sizeof(float) * (size_t)(3 * k));
        float *y0 = malloc(sizeof(float) * (size_t)(3 * rows)), *y1 = malloc(sizeof(float) * (size_t)(3 * rows));
        fill_x(x, 3 * k);
        for (int64_t nb = 1; nb <= 3; nb += 2)
            for (int pi = 0; pi < 3; pi++) {
                kern_matmul(pools[pi], t, w, rows, k, x, nb, y0);
                kern_matmul(pools[pi], pt, P, rows, k, x, nb, y1);
                CHECK_MSG(memcmp(y0, y1, sizeof(float) * (size_t)(nb * rows)) == 0,
                          "large Q4_0 nb %lld threads %d: packed differs from plain", (long long)nb,
                          pi + 1);
            }
        free(x), free(y0), free(y1), free(P);
    }
    free(w), free(wf);
    for (int i = 0; i < 3; i++) kern_pool_free(pools[i]);
}

int main(void) {
    printf("implementation: %s\n", kern_impl_name());
    TEST_RUN(test_reference_exact);
    TEST_RUN(test_fast_vs_reference);
    TEST_RUN(test_determinism);
    TEST_RUN(test_multi);
    TEST_RUN(test_repacked);
    TEST_RUN(test_repacked_large);
    return TEST_DONE();
}
