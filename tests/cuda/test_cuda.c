/* test_cuda: the CUDA backend against the CPU reference kernels (suite
 * 'cuda'). Skips (exit 77) where no GPU is present. Errors are compared as
 * max |a-b| normalised by max |b|, as every backend is compared with the CPU
 * reference. */
#include <stdint.h>

#include "kernels/cuda/kcuda.h"
#include "kernels/kernels.h"
#include "tests/test.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float frand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static double norm_err(const float *a, const float *b, int64_t n) {
    double maxd = 0, maxb = 1e-12;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > maxd) maxd = d;
        if (fabs(b[i]) > maxb) maxb = fabs(b[i]);
    }
    return maxd / maxb;
}

static const sgl_dtype types[] = {SGL_DTYPE_F32, SGL_DTYPE_F16, SGL_DTYPE_Q8_0, SGL_DTYPE_Q4_0,
                                  SGL_DTYPE_Q4_1};

static void test_dequant_matches_cpu(void) {
    const int64_t n = 32 * 97;
    float *src = malloc(sizeof(float) * n), *cpu = malloc(sizeof(float) * n),
          *gpu = malloc(sizeof(float) * n);
    for (int64_t i = 0; i < n; i++) src[i] = frand();
    for (size_t t = 0; t < SGL_ARRAY_LEN(types); t++) {
        uint8_t *q = malloc(sgl_dtype_row_bytes(types[t], n));
        CHECK_INT(kern_quantize_row(types[t], src, q, n), 0);
        kern_dequant_row(types[t], q, cpu, n);
        sgl_error err = {{0}};
        CHECK_MSG(kcuda_dequant(types[t], q, gpu, n, &err) == 0, "%s", err.msg);
        /* Decoding is exact arithmetic on the same inputs. */
        CHECK_MSG(norm_err(gpu, cpu, n) < 1e-6, "%s: error %g", sgl_dtype_name(types[t]),
                  norm_err(gpu, cpu, n));
        free(q);
    }
    free(src), free(cpu), free(gpu);
}

static void test_matmul_matches_cpu(void) {
    const int64_t rows = 96, k = 256, nb = 5;
    float *w = malloc(sizeof(float) * rows * k), *x = malloc(sizeof(float) * nb * k);
    float *ycpu = malloc(sizeof(float) * nb * rows), *ygpu = malloc(sizeof(float) * nb * rows);
    for (int64_t i = 0; i < rows * k; i++) w[i] = frand();
    for (int64_t i = 0; i < nb * k; i++) x[i] = frand();
    kern_pool *pool = kern_pool_new(1);
    for (size_t t = 0; t < SGL_ARRAY_LEN(types); t++) {
        uint64_t rb = sgl_dtype_row_bytes(types[t], k);
        uint8_t *q = malloc(rb * rows);
        for (int64_t r = 0; r < rows; r++) kern_quantize_row(types[t], w + r * k, q + r * rb, k);
        kern_force_reference(true);
        kern_matmul(pool, types[t], q, rows, k, x, nb, ycpu);
        kern_force_reference(false);
        sgl_error err = {{0}};
        CHECK_MSG(kcuda_matmul(types[t], q, rows, k, x, nb, ygpu, &err) == 0, "%s", err.msg);
        /* The CPU reference may quantize activations to 8 bits. */
        CHECK_MSG(norm_err(ygpu, ycpu, nb * rows) < 2e-2, "%s: error %g", sgl_dtype_name(types[t]),
                  norm_err(ygpu, ycpu, nb * rows));
        free(q);
    }
    kern_pool_free(pool);
    free(w), free(x), free(ycpu), free(ygpu);
}

int main(void) {
    if (kcuda_device_count() <= 0) TEST_SKIP_ALL("no CUDA device on this machine");
    char desc[256];
    if (kcuda_device_describe(desc, sizeof desc) == 0) printf("device: %s\n", desc);
    TEST_RUN(test_dequant_matches_cpu);
    TEST_RUN(test_matmul_matches_cpu);
    return TEST_DONE();
}
