/* test_ops: the thread pool (many tiny tasks, several sizes) and the small
 * ops: each fast version against the scalar reference on odd lengths, and
 * rope against its defining formula in both pairings.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>

#include "kernels/kernels.h"
#include "tests/test.h"

static uint32_t rng = 777;
static float frand(void) {
    rng = rng * 1664525u + 1013904223u;
    return (float)(rng >> 8) / 8388608.0f - 1.0f;
}

typedef struct {
    _Atomic long counts[8];
    _Atomic unsigned mask; /* indices run in the current run */
    _Atomic int dup;       /* an index ran twice in one run */
    _Atomic int nth_seen;
    int work; /* busy-loop length per task */
} pool_ctx;

static void count_task(void *ctx, int ith, int nth) {
    pool_ctx *c = ctx;
    atomic_fetch_add(&c->counts[ith], 1);
    if (atomic_fetch_or(&c->mask, 1u << ith) & (1u << ith)) atomic_store(&c->dup, 1);
    atomic_store(&c->nth_seen, nth);
    volatile int sink = 0;
    for (int i = 0; i < c->work; i++)
        sink += i;
}

/* Every index runs exactly once per run, whoever runs it (the caller takes
 * over indices that no worker has claimed yet). */
static void test_pool(void) {
    int ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
    for (int n = 1; n <= 4; n++)
        for (int work = 0; work <= 2000; work += 2000) {
            kern_pool *p = kern_pool_new(n);
            CHECK(p != NULL);
            if (!p) continue;
            CHECK_INT(kern_pool_threads(p), n);
            pool_ctx c = {.work = work};
            const int runs = work == 0 ? 20000 : n <= ncpu ? 2000 : 200;
            int bad_mask = 0;
            for (int i = 0; i < runs; i++) {
                atomic_store(&c.mask, 0);
                kern_pool_run(p, count_task, &c);
                if (atomic_load(&c.mask) != (1u << n) - 1) bad_mask++;
            }
            CHECK_INT(bad_mask, 0);
            CHECK_INT(atomic_load(&c.dup), 0);
            for (int t = 0; t < n; t++)
                CHECK_INT(atomic_load(&c.counts[t]), runs);
            CHECK_INT(c.nth_seen, n);
            kern_pool_free(p);
        }
    kern_pool *p = kern_pool_new(0);
    CHECK(p != NULL && kern_pool_threads(p) >= 1);
    kern_pool_free(p);
    pool_ctx c = {0};
    kern_pool_run(NULL, count_task, &c);
    CHECK_INT(atomic_load(&c.counts[0]), 1);
    CHECK_INT(c.nth_seen, 1);
    CHECK_INT(kern_pool_threads(NULL), 1);
    /* a pool created and freed at once, never run */
    kern_pool_free(kern_pool_new(3));
}

static const int64_t lens[] = {1, 7, 8, 9, 16, 31, 576, 1000, 1536};
#define N_LENS (int)(sizeof lens / sizeof lens[0])

static void fill(float *x, int64_t n, float scale) {
    for (int64_t i = 0; i < n; i++)
        x[i] = frand() * scale;
}

static void test_ops_vs_reference(void) {
    float a[1536], b[1536], w[1536], r1[1536], r2[1536];
    for (int li = 0; li < N_LENS; li++) {
        int64_t n = lens[li];
        fill(a, n, 3);
        fill(b, n, 2);
        fill(w, n, 1);
        /* rmsnorm */
        kern_force_reference(true);
        kern_rmsnorm(r1, a, w, n, 1e-5f);
        kern_force_reference(false);
        kern_rmsnorm(r2, a, w, n, 1e-5f);
        for (int64_t i = 0; i < n; i++)
            CHECK_NEAR(r2[i], r1[i], 1e-5 * (1 + fabs(r1[i])));
        /* softmax (wide range of logits) */
        fill(r1, n, 30);
        memcpy(r2, r1, sizeof(float) * (size_t)n);
        kern_force_reference(true);
        kern_softmax(r1, n);
        kern_force_reference(false);
        kern_softmax(r2, n);
        double sum = 0;
        for (int64_t i = 0; i < n; i++) {
            CHECK_NEAR(r2[i], r1[i], 1e-6 + 1e-5 * r1[i]);
            sum += r2[i];
        }
        CHECK_NEAR(sum, 1.0, 1e-5);
        /* silu_mul */
        fill(r1, n, 12);
        memcpy(r2, r1, sizeof(float) * (size_t)n);
        kern_force_reference(true);
        kern_silu_mul(r1, b, n);
        kern_force_reference(false);
        kern_silu_mul(r2, b, n);
        for (int64_t i = 0; i < n; i++)
            CHECK_NEAR(r2[i], r1[i], 1e-6 + 1e-5 * fabs(r1[i]));
        /* add, axpy */
        memcpy(r1, a, sizeof(float) * (size_t)n);
        memcpy(r2, a, sizeof(float) * (size_t)n);
        kern_force_reference(true);
        kern_add(r1, b, n);
        kern_axpy(r1, 0.37f, w, n);
        kern_force_reference(false);
        kern_add(r2, b, n);
        kern_axpy(r2, 0.37f, w, n);
        for (int64_t i = 0; i < n; i++)
            CHECK_NEAR(r2[i], r1[i], 1e-6 * (1 + fabs(r1[i])));
        /* dot */
        double sabs = 0;
        for (int64_t i = 0; i < n; i++)
            sabs += fabs(a[i] * b[i]);
        kern_force_reference(true);
        float d1 = kern_dot_f32(a, b, n);
        kern_force_reference(false);
        float d2 = kern_dot_f32(a, b, n);
        CHECK_NEAR(d2, d1, 1e-6 * sabs + 1e-7);
        CHECK(kern_dot_f32(a, b, n) == d2); /* same inputs, same bits */
    }
}

static void test_softmax_extremes(void) {
    float x[9] = {-INFINITY, 0, 1000, -1000, 1000, 5, -INFINITY, 3, 2};
    kern_softmax(x, 9);
    CHECK_NEAR(x[2], 0.5, 1e-6);
    CHECK_NEAR(x[4], 0.5, 1e-6);
    CHECK(x[0] == 0 && x[3] == 0 && x[6] == 0);
}

static void test_rope(void) {
    enum { H = 3, D = 16 };
    float x[H * D], y[H * D];
    fill(x, H * D, 1);
    for (int neox = 0; neox < 2; neox++) {
        int rot = 12, half = rot / 2;
        float base = 10000.0f;
        memcpy(y, x, sizeof x);
        kern_rope(y, H, D, rot, 7, base, 1.0f, neox);
        int bad = 0;
        for (int h = 0; h < H; h++) {
            const float *v = x + h * D, *o = y + h * D;
            for (int i = 0; i < half; i++) {
                int p = neox ? i : 2 * i, q = neox ? i + half : 2 * i + 1;
                double ang = 7.0 * pow(base, -2.0 * i / rot);
                double e0 = v[p] * cos(ang) - v[q] * sin(ang),
                       e1 = v[p] * sin(ang) + v[q] * cos(ang);
                if (fabs(o[p] - e0) > 1e-5 || fabs(o[q] - e1) > 1e-5) bad++;
            }
            for (int i = rot; i < D; i++)
                if (o[i] != v[i]) bad++;
        }
        CHECK_MSG(bad == 0, "neox=%d: %d values differ from the formula", neox, bad);
        /* linear scaling: position 10 at scale 0.5 is position 5 */
        float z[H * D];
        memcpy(y, x, sizeof x);
        memcpy(z, x, sizeof x);
        kern_rope(y, H, D, D, 10, base, 0.5f, neox);
        kern_rope(z, H, D, D, 5, base, 1.0f, neox);
        for (int i = 0; i < H * D; i++)
            CHECK_NEAR(y[i], z[i], 1e-6);
        /* position 0 is the identity */
        memcpy(y, x, sizeof x);
        kern_rope(y, H, D, D, 0, base, 1.0f, neox);
        CHECK(memcmp(x, y, sizeof x) == 0);
    }
}

int main(void) {
    printf("implementation: %s\n", kern_impl_name());
    TEST_RUN(test_pool);
    TEST_RUN(test_ops_vs_reference);
    TEST_RUN(test_softmax_extremes);
    TEST_RUN(test_rope);
    return TEST_DONE();
}
