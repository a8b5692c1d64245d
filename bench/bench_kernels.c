/* bench_kernels: times kern_matmul on the default model's shapes
 * (SmolLM2-135M: hidden 576, kv 192, ffn 1536, vocab 49152; Q4_1 weights
 * and a Q8_0 output head) for nb = 1, 8, 32, 512, scalar vs AVX2, 1 and 2
 * threads, and prints time per call, GFLOP/s and effective weight GB/s,
 * then the per-token totals the engine's targets are stated in. Also times
 * an empty pool run. Not a test: it only prints figures.
 *
 * usage: bench_kernels [--quick]   (--quick: fewer repetitions, nb <= 32)
 *        bench_kernels --cold      (weights far larger than the caches, below)
 *        bench_kernels --peak      (the core's multiply peak, below)
 *
 * --cold: batch-1 and batch-8 decode's case on a 1B-shaped model, where the
 * weights stream from memory: one 8192 x 2048 matrix (ffn gate/up) per
 * type, repacked, in enough copies (>= 512 MiB) that each call finds its
 * copy out of every cache. Prints us/call and weight GB/s next to the
 * machine's read bandwidth over the same bytes (a plain 2-thread streaming
 * sum, the roofline), best and median of 15 passes over the copies.
 *
 * --peak: the core's own ceiling. Times long runs of one multiply
 * instruction on 12 independent accumulators (so throughput, not latency,
 * sets the pace) on 256- and 512-bit vectors: vfmadd231ps (8 / 16 products
 * per instruction), vpdpwssd (int16 pairs: 16 / 32), vpdpbusd (int8
 * quads: 32 / 64) and vdpbf16ps (bf16 pairs: 16 / 32), where the CPU has
 * them, and prints instructions and products per ns. Then the fast matmul
 * on one thread (ffn 1536 x 576 at 32 and 512 rows, Q4_0 / Q4_1 / Q8_0
 * against the integer instruction, F16 against FMA) as products per ns and
 * as a fraction of its instruction's peak: how much
 * a kernel could still gain, and whether wider vectors would add products
 * (on a CPU that splits a 512-bit op in two 256-bit halves they do not).
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/kernels.h"


/* Prints the load average (wall-clock figures on a busy machine mostly
 * measure the scheduler). */
static void print_load(void) {
    char load[64] = "?\n";
    FILE *la = fopen("/proc/loadavg", "r");
    if (la) {
        if (!fgets(load, sizeof load, la)) strcpy(load, "?\n");
        fclose(la);
    }
    printf("load average: %s", load);
}

static int cold_main(void);
static int peak_main(void);

typedef struct {
    const char *name;
    sgl_dtype t;
    int64_t rows, k;
    int per_layer; /* how many of these a layer runs (0: once per token) */
} shape;

static const shape shapes[] = {
    {"attn q/o 576x576", SGL_DTYPE_Q4_1, 576, 576, 2},
    {"attn k/v 192x576", SGL_DTYPE_Q4_1, 192, 576, 2},
    {"ffn gate/up 1536x576", SGL_DTYPE_Q4_1, 1536, 576, 2},
    {"ffn down 576x1536", SGL_DTYPE_Q4_1, 576, 1536, 1},
    {"head 49152x576", SGL_DTYPE_Q8_0, 49152, 576, 0},
};
#define N_SHAPES (int)(sizeof shapes / sizeof shapes[0])
#define N_LAYERS 30

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint32_t rng = 1;
static float frand(void) {
    rng = rng * 1664525u + 1013904223u;
    return (float)(rng >> 8) / 8388608.0f - 1.0f;
}

static void nop_task(void *ctx, int ith, int nth) {
    (void)ctx;
    (void)ith;
    (void)nth;
}

/* Every task waits (up to 1 ms) until all nth tasks have started: the run
 * time is then the time for all threads to join a run. */
static _Atomic int meet_arrived;
static void meet_task(void *ctx, int ith, int nth) {
    (void)ctx;
    (void)ith;
    atomic_fetch_add(&meet_arrived, 1);
    double t0 = now_s();
    while (atomic_load(&meet_arrived) < nth && now_s() - t0 < 1e-3) {
    }
}

/* A rows x k matrix of type t in the file layout: values frand() * 0.1
 * quantized row by row. Returns it (malloc'd) or NULL when out of memory. */
static uint8_t *random_weights(sgl_dtype t, int64_t rows, int64_t k) {
    size_t rb = sgl_dtype_row_bytes(t, (uint64_t)k);
    uint8_t *W = malloc(rb * (size_t)rows);
    float *row = malloc(sizeof(float) * (size_t)k);
    if (!W || !row) {
        free(W), free(row);
        return NULL;
    }
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t j = 0; j < k; j++) row[j] = frand() * 0.1f;
        kern_quantize_row(t, row, W + rb * (size_t)r, k);
    }
    free(row);
    return W;
}

/* Seconds per call: the best of a few timed batches (least disturbed by
 * other load), each batch long enough to time. */
static double time_matmul(kern_pool *pool, const shape *s, sgl_dtype t, const void *W,
                          const float *X, int64_t nb, float *Y, double budget) {
    double t0 = now_s();
    kern_matmul(pool, t, W, s->rows, s->k, X, nb, Y);
    double one = now_s() - t0;
    if (one > budget) return one;
    int reps = (int)(budget / 4 / (one + 1e-9));
    if (reps < 1) reps = 1;
    double best = one;
    for (int batch = 0; batch < 4; batch++) {
        t0 = now_s();
        for (int i = 0; i < reps; i++)
            kern_matmul(pool, t, W, s->rows, s->k, X, nb, Y);
        double per = (now_s() - t0) / reps;
        if (per < best) best = per;
    }
    return best;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--cold") == 0) return cold_main();
    if (argc > 1 && strcmp(argv[1], "--peak") == 0) return peak_main();
    int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    static const int64_t nbs[] = {1, 8, 32, 512};
    int n_nb = quick ? 3 : 4;
    double budget = quick ? 0.05 : 0.3;
    kern_pool *pools[2] = {kern_pool_new(1), kern_pool_new(2)};
    if (!pools[0] || !pools[1]) {
        fprintf(stderr, "bench_kernels: cannot start threads\n");
        return 1;
    }
    kern_force_reference(false);
    const char *fast = kern_impl_name();
    printf("kernels: fast implementation \"%s\"\n", fast);
    /* Wall-clock figures: on a busy machine (load above the core count) the
     * 2-thread figures mostly measure the scheduler. */
    print_load();

    /* pool round trip */
    for (int p = 0; p < 2; p++) {
        for (int i = 0; i < 1000; i++)
            kern_pool_run(pools[p], nop_task, NULL);
        double t0 = now_s();
        for (int i = 0; i < 20000; i++)
            kern_pool_run(pools[p], nop_task, NULL);
        double empty = (now_s() - t0) / 20000 * 1e6;
        for (int i = 0; i < 4000; i++) { /* the first 2000 warm up */
            if (i == 2000) t0 = now_s();
            atomic_store(&meet_arrived, 0);
            kern_pool_run(pools[p], meet_task, NULL);
        }
        printf("pool: %d thread(s): empty run %.2f us, all threads joining a run %.2f us\n",
               kern_pool_threads(pools[p]), empty, (now_s() - t0) / 2000 * 1e6);
    }

    int64_t max_nb = nbs[n_nb - 1], max_k = 1536;
    float *X = malloc(sizeof(float) * (size_t)(max_nb * max_k));
    float *Y = malloc(sizeof(float) * (size_t)(max_nb * 49152));
    for (int64_t i = 0; i < max_nb * max_k; i++)
        X[i] = frand();
    /* W: the file layout (the scalar reference's); Wp / tp: the layout the
     * fast path uses in a loaded model (kern_repack; W itself if none) */
    void *W[N_SHAPES], *Wp[N_SHAPES];
    sgl_dtype tp[N_SHAPES];
    size_t packed_bytes = 0;
    for (int si = 0; si < N_SHAPES; si++) {
        const shape *s = &shapes[si];
        if (!(W[si] = random_weights(s->t, s->rows, s->k))) return 1;
        size_t pb;
        Wp[si] = kern_repack(pools[1], s->t, W[si], s->rows, s->k, &tp[si], &pb, NULL, NULL);
        packed_bytes += pb;
        if (!Wp[si]) Wp[si] = W[si];
    }
    printf("weights repacked for the fast path: %.1f MiB\n", packed_bytes / 1048576.0);

    /* t[impl][threads][nb][shape] */
    static double t[2][2][4][N_SHAPES];
    printf("\n%-22s %-6s %4s %3s %12s %10s %9s\n", "shape", "impl", "nb", "thr", "us/call",
           "GFLOP/s", "W GB/s");
    for (int si = 0; si < N_SHAPES; si++) {
        const shape *s = &shapes[si];
        double wbytes = (double)sgl_dtype_row_bytes(s->t, (uint64_t)s->k) * (double)s->rows;
        for (int ni = 0; ni < n_nb; ni++)
            for (int impl = 0; impl < 2; impl++)
                for (int p = 0; p < 2; p++) {
                    int64_t nb = nbs[ni];
                    double flop = 2.0 * (double)s->rows * (double)s->k * (double)nb;
                    t[impl][p][ni][si] = 0;
                    /* the scalar reference is slow: skip its biggest cases */
                    if (impl == 0 && flop > 4e9) continue;
                    kern_force_reference(impl == 0);
                    double sec = impl ? time_matmul(pools[p], s, tp[si], Wp[si], X, nb, Y, budget)
                                      : time_matmul(pools[p], s, s->t, W[si], X, nb, Y, budget);
                    t[impl][p][ni][si] = sec;
                    printf("%-22s %-6s %4lld %3d %12.1f %10.2f %9.2f\n", s->name,
                           impl ? fast : "scalar", (long long)nb, p + 1, sec * 1e6,
                           flop / sec * 1e-9, wbytes / sec * 1e-9);
                }
    }
    kern_force_reference(false);

    printf("\nper token, whole model (%d layers + head), fast implementation:\n", N_LAYERS);
    for (int ni = 0; ni < n_nb; ni++)
        for (int p = 0; p < 2; p++) {
            double total = 0;
            for (int si = 0; si < N_SHAPES; si++) {
                int per = shapes[si].per_layer;
                total += t[1][p][ni][si] * (per ? per * N_LAYERS : 1);
            }
            double per_tok = total / (double)nbs[ni];
            printf("  nb=%-4lld threads=%d: %8.3f ms per call set, %8.3f ms per token, %8.1f "
                   "tokens/s\n",
                   (long long)nbs[ni], p + 1, total * 1e3, per_tok * 1e3, 1.0 / per_tok);
        }
    for (int si = 0; si < N_SHAPES; si++) {
        if (Wp[si] != W[si]) free(Wp[si]);
        free(W[si]);
    }
    free(X);
    free(Y);
    kern_pool_free(pools[0]);
    kern_pool_free(pools[1]);
    return 0;
}

/* ---- --cold -------------------------------------------------------------- */

typedef struct {
    const uint8_t *const *bufs;
    int n;
    size_t bytes;
    _Atomic uint64_t sink;
} stream_ctx;

/* Sums 8-byte words of every buffer's ith share (a streaming read). */
static void stream_task(void *ctx, int ith, int nth) {
    stream_ctx *c = ctx;
    size_t words = c->bytes / 8, w0 = words * (size_t)ith / (size_t)nth,
           w1 = words * (size_t)(ith + 1) / (size_t)nth;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (int b = 0; b < c->n; b++) {
        const uint64_t *p = (const uint64_t *)c->bufs[b];
        size_t i = w0;
        for (; i + 4 <= w1; i += 4) s0 += p[i], s1 += p[i + 1], s2 += p[i + 2], s3 += p[i + 3];
    }
    atomic_fetch_add(&c->sink, s0 + s1 + s2 + s3);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int cold_main(void) {
    const sgl_dtype types[] = {SGL_DTYPE_Q4_0, SGL_DTYPE_Q4_K, SGL_DTYPE_Q8_0};
    const char *tnames[] = {"Q4_0", "Q4_K", "Q8_0"};
    const int64_t rows = 8192, k = 2048, nbs[] = {1, 8};
    enum { PASSES = 15 };
    kern_pool *pools[2] = {kern_pool_new(1), kern_pool_new(2)};
    if (!pools[0] || !pools[1]) {
        fprintf(stderr, "bench_kernels: cannot start threads\n");
        return 1;
    }
    printf("kernels: fast implementation \"%s\"; cold weights, %lld x %lld\n", kern_impl_name(),
           (long long)rows, (long long)k);
    print_load();
    float *X = malloc(sizeof(float) * (size_t)(8 * k)), *Y = malloc(sizeof(float) * (size_t)(8 * rows));
    if (!X || !Y) return 1;
    for (int64_t i = 0; i < 8 * k; i++) X[i] = frand();
    printf("\n%-5s %3s %3s %10s %10s %9s %9s %9s\n", "type", "nb", "thr", "best us", "median us",
           "W GB/s", "read GB/s", "W / read");
    for (int ti = 0; ti < 3; ti++) {
        sgl_dtype t = types[ti], tp = t;
        size_t plain = sgl_dtype_row_bytes(t, (uint64_t)k) * (size_t)rows, bytes = plain;
        uint8_t *W = random_weights(t, rows, k);
        if (!W) return 1;
        int n = (int)((512u << 20) / plain) + 1;
        const uint8_t **copies = malloc(sizeof *copies * (size_t)n);
        if (!copies) return 1;
        for (int c = 0; c < n; c++) {
            size_t pb = 0;
            void *P = kern_repack(pools[1], t, W, rows, k, &tp, &pb, NULL, NULL);
            if (!P) {
                P = malloc(plain);
                if (!P) return 1;
                memcpy(P, W, plain);
            } else {
                bytes = pb;
            }
            copies[c] = P;
        }
        for (int ni = 0; ni < 2; ni++)
            for (int p = 0; p < 2; p++) {
                double tm[PASSES], rd[PASSES];
                stream_ctx sc = {copies, n, bytes, 0};
                for (int pass = 0; pass < PASSES; pass++) {
                    double t0 = now_s();
                    for (int c = 0; c < n; c++)
                        kern_matmul(pools[p], tp, copies[c], rows, k, X, nbs[ni], Y);
                    tm[pass] = (now_s() - t0) / n;
                    t0 = now_s();
                    kern_pool_run(pools[p], stream_task, &sc);
                    rd[pass] = (now_s() - t0) / n;
                }
                qsort(tm, PASSES, sizeof tm[0], cmp_double);
                qsort(rd, PASSES, sizeof rd[0], cmp_double);
                printf("%-5s %3lld %3d %10.1f %10.1f %9.2f %9.2f %9.2f\n", tnames[ti],
                       (long long)nbs[ni], p + 1, tm[0] * 1e6, tm[PASSES / 2] * 1e6,
                       (double)bytes / tm[0] * 1e-9, (double)bytes / rd[0] * 1e-9, rd[0] / tm[0]);
            }
        for (int c = 0; c < n; c++) free((void *)copies[c]);
        free(copies);
        free(W);
    }
    free(X);
    free(Y);
    kern_pool_free(pools[0]);
    kern_pool_free(pools[1]);
    return 0;
}

/* ---- --peak -------------------------------------------------------------- */

#if defined(__x86_64__) && defined(__GNUC__)
/* 12 independent accumulators (x0..x11) of one instruction, 48 in a row per
 * loop turn; the sources x14, x15 never change. ENC "%{evex%} " asks for the
 * AVX-512 form (VNNI on 256-bit vectors without AVX-VNNI's VEX form), ""
 * for the plain AVX2 one. */
#define PK_1(ENC, OP, R, i) ENC OP " %%" R "14, %%" R "15, %%" R #i "\n\t"
#define PK_12(ENC, OP, R)                                                                          \
    PK_1(ENC, OP, R, 0) PK_1(ENC, OP, R, 1) PK_1(ENC, OP, R, 2) PK_1(ENC, OP, R, 3)                \
    PK_1(ENC, OP, R, 4) PK_1(ENC, OP, R, 5) PK_1(ENC, OP, R, 6) PK_1(ENC, OP, R, 7)                \
    PK_1(ENC, OP, R, 8) PK_1(ENC, OP, R, 9) PK_1(ENC, OP, R, 10) PK_1(ENC, OP, R, 11)
#define PK_FN(NAME, ENC, OP, R, TARGET)                                                            \
    __attribute__((target(TARGET), noinline)) static void NAME(long n) {                           \
        __asm__ volatile("1:\n\t" PK_12(ENC, OP, R) PK_12(ENC, OP, R) PK_12(ENC, OP, R)             \
                             PK_12(ENC, OP, R) "dec %0\n\tjnz 1b\n\t"                                \
                         : "+r"(n)                                                                 \
                         :                                                                         \
                         : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", \
                           "xmm9", "xmm10", "xmm11", "cc");                                        \
    }
#define PK_EVEX "%{evex%} "
PK_FN(pk_fma_avx2, "", "vfmadd231ps", "ymm", "avx2,fma") /* for CPUs without AVX-512 */
PK_FN(pk_fma_y, PK_EVEX, "vfmadd231ps", "ymm", "avx512f,avx512vl")
PK_FN(pk_fma_z, PK_EVEX, "vfmadd231ps", "zmm", "avx512f")
PK_FN(pk_wssd_y, PK_EVEX, "vpdpwssd", "ymm", "avx512vl,avx512vnni")
PK_FN(pk_wssd_z, PK_EVEX, "vpdpwssd", "zmm", "avx512f,avx512vnni")
PK_FN(pk_busd_y, PK_EVEX, "vpdpbusd", "ymm", "avx512vl,avx512vnni")
PK_FN(pk_busd_z, PK_EVEX, "vpdpbusd", "zmm", "avx512f,avx512vnni")
PK_FN(pk_bf16_y, PK_EVEX, "vdpbf16ps", "ymm", "avx512vl,avx512bf16")
PK_FN(pk_bf16_z, PK_EVEX, "vdpbf16ps", "zmm", "avx512f,avx512bf16")
#define PK_X86 1
#endif

/* Instructions per ns of fn (ipl instructions a loop turn): the best of 5
 * runs of about 50 ms each. */
static double pk_rate(void (*fn)(long), int ipl) {
    long n = 20000;
    double t0 = now_s();
    fn(n);
    double one = now_s() - t0;
    n = (long)(n * 0.05 / (one + 1e-9));
    if (n < 1000) n = 1000;
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        t0 = now_s();
        fn(n);
        double t = now_s() - t0;
        if (t < best) best = t;
    }
    return (double)n * ipl / best * 1e-9;
}

static int peak_main(void) {
#ifdef PK_X86
    __builtin_cpu_init();
    printf("kernels: fast implementation \"%s\"\n", kern_impl_name());
    print_load();
    bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
    bool vnni = avx512 && __builtin_cpu_supports("avx512vnni");
    bool bf16 = avx512 && __builtin_cpu_supports("avx512bf16");
    double wssd_peak = 0, busd_peak = 0, fma_peak = 0;
    typedef struct {
        const char *name;
        void (*fn)(long);
        int ipl, macs; /* instructions a loop turn, products an instruction */
        bool ok;
        double *peak;  /* the peak this instruction counts towards, or NULL */
    } pk;
    const pk rows[] = {
        {"vfmadd231ps ymm (AVX2)", pk_fma_avx2, 48, 8, __builtin_cpu_supports("fma"), &fma_peak},
        {"vfmadd231ps ymm", pk_fma_y, 48, 8, avx512, &fma_peak},
        {"vfmadd231ps zmm", pk_fma_z, 48, 16, avx512, &fma_peak},
        {"vpdpwssd ymm (int16)", pk_wssd_y, 48, 16, vnni, &wssd_peak},
        {"vpdpwssd zmm (int16)", pk_wssd_z, 48, 32, vnni, &wssd_peak},
        {"vpdpbusd ymm (int8)", pk_busd_y, 48, 32, vnni, &busd_peak},
        {"vpdpbusd zmm (int8)", pk_busd_z, 48, 64, vnni, &busd_peak},
        {"vdpbf16ps ymm (bf16)", pk_bf16_y, 48, 16, bf16, NULL},
        {"vdpbf16ps zmm (bf16)", pk_bf16_z, 48, 32, bf16, NULL},
    };
    printf("\none core, 12 independent accumulators:\n%-24s %10s %12s\n", "instruction", "instr/ns",
           "products/ns");
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        if (!rows[i].ok) {
            printf("%-24s %10s %12s\n", rows[i].name, "-", "(no CPU support)");
            continue;
        }
        double r = pk_rate(rows[i].fn, rows[i].ipl), products = r * rows[i].macs;
        printf("%-24s %10.2f %12.1f\n", rows[i].name, r, products);
        if (rows[i].peak && products > *rows[i].peak) *rows[i].peak = products;
    }
    /* the fast matmul on one thread: int16 activations by default, int8
     * with SGL_KERN_INT8=1 (the peak it is held against follows) */
    bool i8 = strstr(kern_impl_name(), "int8") != NULL;
    double qpeak = i8 ? busd_peak : wssd_peak;
    kern_pool *pool = kern_pool_new(1);
    const int64_t rows_w = 1536, k = 576;
    /* quantized types against the integer instruction, float ones against FMA */
    static const sgl_dtype types[] = {SGL_DTYPE_Q4_0, SGL_DTYPE_Q4_1, SGL_DTYPE_Q8_0, SGL_DTYPE_F16};
    static const int64_t nbs[] = {32, 512};
    float *X = malloc(sizeof(float) * (size_t)(512 * k)), *Y = malloc(sizeof(float) * (size_t)(512 * rows_w));
    for (int64_t i = 0; i < 512 * k; i++) X[i] = frand();
    printf("\nfast matmul, %lld x %lld, one thread (products/ns; share of the %s peak, %.1f, and for "
           "F16 of the FMA peak, %.1f):\n",
           (long long)rows_w, (long long)k, i8 ? "vpdpbusd" : "vpdpwssd", qpeak, fma_peak);
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        sgl_dtype t = types[ti];
        double peak = t == SGL_DTYPE_F16 ? fma_peak : qpeak;
        uint8_t *W = random_weights(t, rows_w, k);
        if (!W) return 1;
        sgl_dtype tp;
        size_t pb;
        void *P = kern_repack(pool, t, W, rows_w, k, &tp, &pb, NULL, NULL);
        const shape s = {"", t, rows_w, k, 0};
        for (int ni = 0; ni < 2; ni++) {
            double sec = time_matmul(pool, &s, P ? tp : t, P ? P : W, X, nbs[ni], Y, 0.3);
            double macs = (double)rows_w * (double)k * (double)nbs[ni] / sec * 1e-9;
            printf("  %-5s nb=%-4lld %8.1f products/ns  %5.1f%%\n", sgl_dtype_name(t), (long long)nbs[ni],
                   macs, peak > 0 ? 100.0 * macs / peak : 0.0);
        }
        free(P);
        free(W);
    }
    free(X);
    free(Y);
    kern_pool_free(pool);
    return 0;
#else
    printf("bench_kernels --peak: x86-64 only\n");
    return 0;
#endif
}
