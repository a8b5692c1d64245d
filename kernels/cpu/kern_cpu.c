/* kern_cpu: the public kernel API (kernels.h) on the CPU. Chooses the
 * implementation table once (AVX2 when the CPU has AVX2+FMA+F16C and the
 * AVX2 files were built, else scalar), and drives kern_matmul: quantize the
 * activations once per call, then split output rows over the pool.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "kernels/cpu/kern_internal.h"
#include "util/util.h"

static kern_ops ops_ref, ops_fast;
static _Atomic(const kern_ops *) ops_cur;
static pthread_once_t ops_once = PTHREAD_ONCE_INIT;

#ifdef KERN_HAVE_AVX2
#include <cpuid.h>

static bool cpu_has_avx2(void) {
    __builtin_cpu_init();
    /* F16C by CPUID (leaf 1, ECX bit 29): older clang has no "f16c" name
     * for __builtin_cpu_supports. */
    unsigned a, b, c, d;
    bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
}
#endif

static void ops_init(void) {
    kref_ops_fill(&ops_ref);
    ops_fast = ops_ref;
#ifdef KERN_HAVE_AVX2
    if (cpu_has_avx2()) kavx2_ops_fill(&ops_fast);
#endif
#ifdef KERN_HAVE_VNNI
    if (cpu_has_avx2() && getenv("SGL_KERN_NO_VNNI") == NULL &&
        __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl")) {
        kvnni_mm_fill(&ops_fast);
        const char *i8 = getenv("SGL_KERN_INT8");
        if (i8 && *i8 && strcmp(i8, "0") != 0) kvnni_i8_mm_fill(&ops_fast);
    }
#endif
    atomic_store(&ops_cur, &ops_fast);
}

static const kern_ops *ops_get(void) {
    pthread_once(&ops_once, ops_init);
    return atomic_load_explicit(&ops_cur, memory_order_acquire);
}

const char *kern_impl_name(void) {
    return ops_get()->name;
}

void kern_force_reference(bool on) {
    pthread_once(&ops_once, ops_init);
    atomic_store(&ops_cur, on ? &ops_ref : &ops_fast);
}

int kern_type_supported(sgl_dtype t) {
    if (t < 0 || t >= SGL_DTYPE_MAX_ID) return 0;
    pthread_once(&ops_once, ops_init);
    return ops_ref.mm[t].rows != NULL;
}

int kern_mm_prefers_packed(sgl_dtype t) {
    int pt = r8_packed_type(t);
    const kern_ops *ops = ops_get();
    return pt >= 0 && ops->mm[pt].rows && ops->mm[pt].rows != ops_ref.mm[pt].rows;
}

int kern_block_elems(sgl_dtype t) {
    int base = r8_base_type(t);
    return sgl_dtype_block_elems(base >= 0 ? base : (int)t);
}

void kern_matrix_row(sgl_dtype t, const void *W, int64_t r, int64_t k, float *dst) {
    int base = r8_base_type(t);
    if (base < 0) {
        uint64_t rb = sgl_dtype_row_bytes(t, (uint64_t)k);
        kref_dequant_row(t, (const uint8_t *)W + (uint64_t)r * rb, dst, k);
        return;
    }
    uint8_t buf[4096]; /* the row in its plain layout; larger rows on the heap */
    size_t rb = sgl_dtype_row_bytes(base, (uint64_t)k);
    uint8_t *row = rb <= sizeof buf ? buf : malloc(rb);
    if (!row) {
        memset(dst, 0, (size_t)k * sizeof *dst);
        return;
    }
    r8_unpack_row(base, W, r, k, row);
    kref_dequant_row(base, row, dst, k);
    if (row != buf) free(row);
}

void kern_dequant_row(sgl_dtype t, const void *src, float *dst, int64_t n) {
    kref_dequant_row(t, src, dst, n);
}

int kern_quantize_row(sgl_dtype t, const float *src, void *dst, int64_t n) {
    if (!sgl_dtype_known(t) || n % sgl_dtype_block_elems(t)) return -1;
    return kref_quantize_row(t, src, dst, n);
}

/* ---- matmul driver ------------------------------------------------------ */

typedef struct {
    const kern_mm_impl *impl;
    const void *W;
    int64_t rows, k, nb;
    const float *X;
    void *xq;
    float *Y;
    int64_t chunk;        /* rows per work item (a multiple of row_align) */
    _Atomic int64_t next; /* next unclaimed work item */
} mm_task;

static void range_split(int64_t n, int64_t align, int ith, int nth, int64_t *a, int64_t *b) {
    int64_t units = (n + align - 1) / align;
    int64_t per = units / nth, extra = units % nth;
    int64_t u0 = ith * per + (ith < extra ? ith : extra);
    int64_t u1 = u0 + per + (ith < extra ? 1 : 0);
    *a = SGL_MIN(u0 * align, n);
    *b = SGL_MIN(u1 * align, n);
}

static void mm_prep_task(void *ctx, int ith, int nth) {
    mm_task *t = ctx;
    int64_t b0, b1;
    range_split(t->nb, 1, ith, nth, &b0, &b1);
    if (b0 < b1) t->impl->prep(t->X, t->k, t->nb, t->xq, b0, b1);
}

/* Rows are handed out in chunks from a shared counter, so a thread that
 * starts late (or is descheduled) just takes fewer chunks. Which thread
 * computes a row never changes its value. */
static void mm_rows_task(void *ctx, int ith, int nth) {
    (void)ith;
    (void)nth;
    mm_task *t = ctx;
    for (;;) {
        int64_t r0 = atomic_fetch_add(&t->next, 1) * t->chunk;
        if (r0 >= t->rows) return;
        int64_t r1 = SGL_MIN(r0 + t->chunk, t->rows);
        t->impl->rows(t->W, t->rows, t->k, t->X, t->xq, t->nb, t->Y, r0, r1);
    }
}

void kern_matmul(kern_pool *pool, sgl_dtype t, const void *W, int64_t rows, int64_t k,
                 const float *X, int64_t nb, float *Y) {
    const kern_ops *ops = ops_get();
    if (t < 0 || t >= SGL_DTYPE_MAX_ID || !ops->mm[t].rows || rows <= 0 || nb <= 0 || k <= 0 ||
        k % kern_block_elems(t) != 0)
        return;
    mm_task task = {&ops->mm[t], W, rows, k, nb, X, NULL, Y, 0, 0};
    /* about 4 chunks per thread, at least 16 rows */
    int64_t align = task.impl->row_align, nth = kern_pool_threads(pool);
    int64_t chunk = SGL_MAX(rows / (4 * nth), 16);
    task.chunk = (chunk + align - 1) / align * align;
    void *owned = NULL;
    if (task.impl->prep) {
        size_t bytes = task.impl->xq_bytes(k, nb);
        task.xq = pool ? kern_pool_scratch(pool, bytes)
                       : (owned = aligned_alloc(64, (bytes + 63) & ~(size_t)63));
        if (!task.xq) return;
        /* Small batches are quantized on the caller's thread: waking the
         * pool costs more than the work. */
        if (nb * k < 16384)
            task.impl->prep(X, k, nb, task.xq, 0, nb);
        else
            kern_pool_run(pool, mm_prep_task, &task);
    }
    kern_pool_run(pool, mm_rows_task, &task);
    free(owned);
}

/* Outputs of one kern_matmul_multi call as one job list: job j belongs to
 * output i when first[i] <= j < first[i + 1]. */
#define MM_MULTI_MAX 8
typedef struct {
    mm_task t[MM_MULTI_MAX];
    int n;
    int64_t first[MM_MULTI_MAX + 1];
    _Atomic int64_t next;
} mm_multi_task;

static void mm_multi_rows_task(void *ctx, int ith, int nth) {
    (void)ith;
    (void)nth;
    mm_multi_task *mt = ctx;
    int i = 0;
    for (;;) {
        int64_t j = atomic_fetch_add(&mt->next, 1);
        if (j >= mt->first[mt->n]) return;
        while (j >= mt->first[i + 1]) i++; /* j only grows */
        const mm_task *t = &mt->t[i];
        int64_t r0 = (j - mt->first[i]) * t->chunk;
        int64_t r1 = SGL_MIN(r0 + t->chunk, t->rows);
        t->impl->rows(t->W, t->rows, t->k, t->X, t->xq, t->nb, t->Y, r0, r1);
    }
}

void kern_matmul_multi(kern_pool *pool, const kern_mm_out *o, int n, int64_t k, const float *X,
                       int64_t nb) {
    const kern_ops *ops = ops_get();
    bool fused = n >= 1 && n <= MM_MULTI_MAX && nb > 0 && k > 0;
    for (int i = 0; fused && i < n; i++) {
        sgl_dtype t = o[i].t;
        fused = t >= 0 && t < SGL_DTYPE_MAX_ID && ops->mm[t].rows && o[i].rows > 0 &&
                k % kern_block_elems(t) == 0 && ops->mm[t].prep == ops->mm[o[0].t].prep &&
                ops->mm[t].xq_bytes == ops->mm[o[0].t].xq_bytes;
    }
    if (!fused) {
        for (int i = 0; i < n; i++) kern_matmul(pool, o[i].t, o[i].W, o[i].rows, k, X, nb, o[i].Y);
        return;
    }
    mm_multi_task mt;
    mt.n = n;
    mt.first[0] = 0;
    atomic_init(&mt.next, 0);
    int64_t nth = kern_pool_threads(pool);
    const kern_mm_impl *impl0 = &ops->mm[o[0].t];
    void *xq = NULL, *owned = NULL;
    if (impl0->prep) {
        size_t bytes = impl0->xq_bytes(k, nb);
        xq = pool ? kern_pool_scratch(pool, bytes)
                  : (owned = aligned_alloc(64, (bytes + 63) & ~(size_t)63));
        if (!xq) return;
    }
    for (int i = 0; i < n; i++) {
        mm_task *t = &mt.t[i];
        *t = (mm_task){&ops->mm[o[i].t], o[i].W, o[i].rows, k, nb, X, xq, o[i].Y, 0, 0};
        /* the chunking kern_matmul uses (any split gives the same values) */
        int64_t align = t->impl->row_align, chunk = SGL_MAX(t->rows / (4 * nth), 16);
        t->chunk = (chunk + align - 1) / align * align;
        mt.first[i + 1] = mt.first[i] + (t->rows + t->chunk - 1) / t->chunk;
    }
    if (impl0->prep) {
        if (nb * k < 16384)
            impl0->prep(X, k, nb, xq, 0, nb);
        else
            kern_pool_run(pool, mm_prep_task, &mt.t[0]);
    }
    kern_pool_run(pool, mm_multi_rows_task, &mt);
    free(owned);
}

/* ---- small ops ---------------------------------------------------------- */

void kern_rmsnorm(float *y, const float *x, const float *w, int64_t n, float eps) {
    ops_get()->rmsnorm(y, x, w, n, eps);
}
void kern_softmax(float *x, int64_t n) {
    ops_get()->softmax(x, n);
}
void kern_silu_mul(float *gate, const float *up, int64_t n) {
    ops_get()->silu_mul(gate, up, n);
}
void kern_add(float *y, const float *x, int64_t n) {
    ops_get()->add(y, x, n);
}
float kern_dot_f32(const float *a, const float *b, int64_t n) {
    return ops_get()->dot_f32(a, b, n);
}
void kern_axpy(float *y, float a, const float *x, int64_t n) {
    ops_get()->axpy(y, a, x, n);
}
void kern_f32_to_f16(uint16_t *dst, const float *src, int64_t n) {
    ops_get()->f32_to_f16(dst, src, n);
}
void kern_f16_to_f32(float *dst, const uint16_t *src, int64_t n) {
    ops_get()->f16_to_f32(dst, src, n);
}
