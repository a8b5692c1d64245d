/* backend_cpu: the CPU implementation of the backend table (kernels/backend.h)
 * over the kernels.h kernels and a kern_pool.
 *
 * Memory is host memory: weights are used in place from the mapped GGUF,
 * upload/download are memcpy. Row-local ops split rows over the pool; each
 * row's result does not depend on the split. Attention is in attention.c.
 * A faster CPU variant can copy cpu_ops and replace single entries.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/kern_internal.h"
#include "kernels/kernels.h"

/* Row-local ops run on the pool from this many rows up. */
#define PAR_MIN_ROWS 4

typedef struct kb_cpu {
    kb_backend base;
    kern_pool *pool;
    const kb_batch *b;
    cpu_att *att;
    int first_bad;        /* smallest probe that saw NaN/Inf in this forward, or -1 */
} kb_cpu;

static kb_cpu *cpu_of(kb_backend *be) { return (kb_cpu *)be; }

/* ---- memory and weights ------------------------------------------------------- */

static void *cpu_alloc(kb_backend *be, size_t bytes) {
    (void)be;
    return malloc(bytes ? bytes : 1);
}
static void cpu_free_mem(kb_backend *be, void *p) {
    (void)be;
    free(p);
}
static int cpu_copy(kb_backend *be, void *dst, const void *src, size_t bytes, sgl_error *err) {
    (void)be, (void)err;
    if (bytes) memcpy(dst, src, bytes);
    return 0;
}
/* Matmul weights of the types the kernels stream faster repacked (the
 * quantized types with AVX2: 8 rows interleaved) get a repacked copy; the
 * rest, and matrices whose rows are looked up, are used in place. Each
 * packed slice of the source is passed to host->release, so the model can
 * hand a mapped file's pages back as it goes: the weights are never
 * resident twice, not even one whole matrix. */
static int cpu_mat_upload(kb_backend *be, const kb_mat *host, kb_mat *out, sgl_error *err) {
    (void)err;
    *out = *host;
    out->lookup = false;
    out->release = NULL;
    out->release_ctx = NULL;
    if (host->lookup) return 0;
    sgl_dtype pt;
    size_t bytes;
    void *P = kern_repack(cpu_of(be)->pool, host->type, host->data, host->rows, host->cols, &pt,
                          &bytes, host->release, host->release_ctx);
    if (!P) return 0; /* no faster layout (or no memory for one): in place */
    out->type = pt;
    out->data = P;
    return 0;
}
static void cpu_mat_free(kb_backend *be, kb_mat *m) {
    (void)be;
    if (r8_base_type(m->type) >= 0) free((void *)m->data); /* a repacked copy */
    memset(m, 0, sizeof *m);
}
static int cpu_type_supported(kb_backend *be, sgl_dtype t) {
    (void)be;
    return kern_type_supported(t);
}

/* ---- row-local ops ------------------------------------------------------------- */

typedef struct row_job {
    kb_cpu *c;
    int64_t n, dim;
    float *y;
    const float *x, *w;
    float eps;
    const kb_mat *mat;
    const kb_rope *rope;
    const kb_kv *kv;
    int layer;
    const float *k, *v;
    float *q, *kw, *vw;
    const float *bq, *bk, *bv;
    const kb_rope *rk;
} row_job;

static inline void row_range(int64_t n, int ith, int nth, int64_t *r0, int64_t *r1) {
    *r0 = n * ith / nth;
    *r1 = n * (ith + 1) / nth;
}

static void run_rows(row_job *j, kern_task_fn fn) {
    if (j->n >= PAR_MIN_ROWS && kern_pool_threads(j->c->pool) > 1)
        kern_pool_run(j->c->pool, fn, j);
    else
        fn(j, 0, 1);
}

static void task_embed(void *ctx, int ith, int nth) {
    row_job *j = ctx;
    int64_t r0, r1;
    row_range(j->n, ith, nth, &r0, &r1);
    for (int64_t t = r0; t < r1; t++)
        kern_matrix_row(j->mat->type, j->mat->data, j->c->b->tok[t], j->dim, j->y + t * j->dim);
}
static void cpu_embed(kb_backend *be, const kb_mat *emb, float *x) {
    row_job j = {.c = cpu_of(be), .n = cpu_of(be)->b->n_rows, .dim = emb->cols, .y = x, .mat = emb};
    run_rows(&j, task_embed);
}

static void task_rmsnorm(void *ctx, int ith, int nth) {
    row_job *j = ctx;
    int64_t r0, r1;
    row_range(j->n, ith, nth, &r0, &r1);
    for (int64_t t = r0; t < r1; t++)
        kern_rmsnorm(j->y + t * j->dim, j->x + t * j->dim, j->w, j->dim, j->eps);
}
static void cpu_rmsnorm(kb_backend *be, float *y, const float *x, const float *w, int64_t n,
                        int64_t dim, float eps) {
    row_job j = {.c = cpu_of(be), .n = n, .dim = dim, .y = y, .x = x, .w = w, .eps = eps};
    run_rows(&j, task_rmsnorm);
}

static void task_add(void *ctx, int ith, int nth) {
    row_job *j = ctx;
    int64_t r0, r1;
    row_range(j->n, ith, nth, &r0, &r1);
    for (int64_t t = r0; t < r1; t++)
        kern_add(j->y + t * j->dim, j->w ? j->w : j->x + t * j->dim, j->dim);
}
static void cpu_add(kb_backend *be, float *y, const float *x, int64_t n, int64_t dim) {
    row_job j = {.c = cpu_of(be), .n = n, .dim = dim, .y = y, .x = x};
    run_rows(&j, task_add);
}
static void cpu_bias_add(kb_backend *be, float *y, const float *bias, int64_t n, int64_t dim) {
    row_job j = {.c = cpu_of(be), .n = n, .dim = dim, .y = y, .w = bias};
    run_rows(&j, task_add);
}

static void task_rope(void *ctx, int ith, int nth) {
    row_job *j = ctx;
    const kb_rope *r = j->rope;
    int64_t r0, r1;
    row_range(j->n, ith, nth, &r0, &r1);
    for (int64_t t = r0; t < r1; t++)
        kern_rope(j->y + t * j->dim, r->n_heads, r->head_dim, r->rot_dim, j->c->b->pos[t],
                  r->theta, r->freq_scale, r->neox);
}
static void cpu_rope(kb_backend *be, float *x, const kb_rope *rp) {
    row_job j = {.c = cpu_of(be), .n = cpu_of(be)->b->n_rows,
                 .dim = (int64_t)rp->n_heads * rp->head_dim, .y = x, .rope = rp};
    run_rows(&j, task_rope);
}

static void task_silu(void *ctx, int ith, int nth) {
    row_job *j = ctx;
    int64_t r0, r1;
    row_range(j->n, ith, nth, &r0, &r1);
    for (int64_t t = r0; t < r1; t++) kern_silu_mul(j->y + t * j->dim, j->x + t * j->dim, j->dim);
}
static void cpu_silu_mul(kb_backend *be, float *g, const float *u, int64_t n, int64_t dim) {
    row_job j = {.c = cpu_of(be), .n = n, .dim = dim, .y = g, .x = u};
    run_rows(&j, task_silu);
}

static void task_kv_store(void *ctx, int ith, int nth) {
    row_job *j = ctx;
    const kb_kv *kv = j->kv;
    int64_t r0, r1;
    row_range(j->n, ith, nth, &r0, &r1);
    for (int64_t t = r0; t < r1; t++) {
        uint64_t off = ((uint64_t)j->layer * (uint64_t)kv->n_slots + (uint64_t)j->c->b->wslot[t]) *
                       (uint64_t)kv->kv_dim;
        kern_f32_to_f16(kv->k + off, j->k + t * kv->kv_dim, kv->kv_dim);
        kern_f32_to_f16(kv->v + off, j->v + t * kv->kv_dim, kv->kv_dim);
    }
}
static void cpu_kv_store(kb_backend *be, const kb_kv *kv, int layer, const float *k,
                         const float *v) {
    row_job j = {.c = cpu_of(be), .n = cpu_of(be)->b->n_rows, .kv = kv, .layer = layer, .k = k,
                 .v = v};
    run_rows(&j, task_kv_store);
}

/* Bias, rope, and the f16 store of K/V at each row's slot (one pass). */
static void task_qkv_post(void *ctx, int ith, int nth) {
    row_job *j = ctx;
    const kb_rope *rq = j->rope, *rk = j->rk;
    const kb_kv *kv = j->kv;
    int64_t qd = (int64_t)rq->n_heads * rq->head_dim, kd = kv->kv_dim;
    int64_t r0, r1;
    row_range(j->n, ith, nth, &r0, &r1);
    for (int64_t t = r0; t < r1; t++) {
        float *q = j->q + t * qd, *k = j->kw + t * kd, *v = j->vw + t * kd;
        if (j->bq) kern_add(q, j->bq, qd);
        if (j->bk) kern_add(k, j->bk, kd);
        if (j->bv) kern_add(v, j->bv, kd);
        int pos = j->c->b->pos[t];
        kern_rope(q, rq->n_heads, rq->head_dim, rq->rot_dim, pos, rq->theta, rq->freq_scale,
                  rq->neox);
        kern_rope(k, rk->n_heads, rk->head_dim, rk->rot_dim, pos, rk->theta, rk->freq_scale,
                  rk->neox);
        uint64_t off = ((uint64_t)j->layer * (uint64_t)kv->n_slots + (uint64_t)j->c->b->wslot[t]) *
                       (uint64_t)kd;
        kern_f32_to_f16(kv->k + off, k, kd);
        kern_f32_to_f16(kv->v + off, v, kd);
    }
}
static void cpu_qkv_post(kb_backend *be, float *q, float *k, float *v, const float *bq,
                         const float *bk, const float *bv, const kb_rope *rq, const kb_rope *rk,
                         const kb_kv *kv, int layer) {
    row_job j = {.c = cpu_of(be), .n = cpu_of(be)->b->n_rows, .q = q, .kw = k, .vw = v,
                 .bq = bq, .bk = bk, .bv = bv, .rope = rq, .rk = rk, .kv = kv, .layer = layer};
    run_rows(&j, task_qkv_post);
}

/* x[t] += y[t]; then y[t] = rmsnorm(x[t]) * w when w is set (one pass). */
static void task_add_norm(void *ctx, int ith, int nth) {
    row_job *j = ctx;
    int64_t r0, r1;
    row_range(j->n, ith, nth, &r0, &r1);
    for (int64_t t = r0; t < r1; t++) {
        float *x = j->q + t * j->dim, *y = j->y + t * j->dim;
        kern_add(x, y, j->dim);
        if (j->w) kern_rmsnorm(y, x, j->w, j->dim, j->eps);
    }
}
static void cpu_add_rmsnorm(kb_backend *be, float *x, float *y, const float *w, int64_t n,
                            int64_t dim, float eps) {
    row_job j = {.c = cpu_of(be), .n = n, .dim = dim, .q = x, .y = y, .w = w, .eps = eps};
    run_rows(&j, task_add_norm);
}

static void cpu_gather_rows(kb_backend *be, float *dst, const float *src, int64_t dim) {
    const kb_batch *b = cpu_of(be)->b;
    for (int64_t i = 0; i < b->n_logits; i++)
        memcpy(dst + i * dim, src + (int64_t)b->logit_rows[i] * dim, sizeof(float) * (size_t)dim);
}

/* True when no x[i] is NaN or Inf (by the exponent bits, so it holds
 * under any floating-point flags). */
static int cpu_check_finite(kb_backend *be, const float *x, int64_t n, int probe) {
    const uint32_t *u = (const uint32_t *)(const void *)x;
    uint32_t bad = 0;
    for (int64_t i = 0; i < n; i++) bad |= (u[i] & 0x7f800000u) == 0x7f800000u;
    if (!bad) return 0;
    if (cpu_of(be)->first_bad < 0 || probe < cpu_of(be)->first_bad) cpu_of(be)->first_bad = probe;
    return 1;
}

/* ---- matmul -------------------------------------------------------------------- */

static void cpu_matmul(kb_backend *be, const kb_mat *w, const float *x, int64_t nb, float *y) {
    kern_matmul(cpu_of(be)->pool, w->type, w->data, w->rows, w->cols, x, nb, y);
}
static void cpu_matmul_multi(kb_backend *be, const kb_mat *const *w, float *const *y, int n,
                             const float *x, int64_t nb) {
    kern_mm_out o[8];
    if (n > 8) {
        for (int i = 0; i < n; i++) cpu_matmul(be, w[i], x, nb, y[i]);
        return;
    }
    for (int i = 0; i < n; i++) o[i] = (kern_mm_out){w[i]->type, w[i]->data, w[i]->rows, y[i]};
    kern_matmul_multi(cpu_of(be)->pool, o, n, w[0]->cols, x, nb);
}

static void cpu_attention(kb_backend *be, const kb_kv *kv, int layer, const kb_att_shape *sh,
                          const float *q, float *out) {
    cpu_att_run(cpu_of(be)->att, cpu_of(be)->pool, kv, layer, sh, q, out);
}

/* ---- forward bracket and lifetime ----------------------------------------------- */

static int cpu_begin(kb_backend *be, const kb_batch *b, sgl_error *err) {
    kb_cpu *c = cpu_of(be);
    c->b = b;
    c->first_bad = -1;
    return cpu_att_begin(c->att, b, err);
}

static int cpu_finish(kb_backend *be, int *first_bad, sgl_error *err) {
    (void)err;
    cpu_of(be)->b = NULL;
    *first_bad = cpu_of(be)->first_bad;
    return 0;
}

static void cpu_describe(kb_backend *be, char *buf, size_t cap) {
    snprintf(buf, cap, "cpu (%s kernels, %d threads)", kern_impl_name(),
             kern_pool_threads(cpu_of(be)->pool));
}

static uint64_t cpu_mem_used(kb_backend *be) {
    (void)be;
    return 0; /* host memory: weights are the mapped file */
}

static void cpu_destroy(kb_backend *be) {
    kb_cpu *c = cpu_of(be);
    if (!c) return;
    cpu_att_free(c->att);
    free(c);
}

static const kb_ops cpu_ops = {
    .name = "cpu",
    .host = true,
    .alloc = cpu_alloc,
    .free_mem = cpu_free_mem,
    .upload = cpu_copy,
    .download = cpu_copy,
    .mat_upload = cpu_mat_upload,
    .mat_free = cpu_mat_free,
    .kv_new = NULL, /* the host pool's storage */
    .kv_free = NULL,
    .type_supported = cpu_type_supported,
    .begin = cpu_begin,
    .finish = cpu_finish,
    .matmul = cpu_matmul,
    .matmul_multi = cpu_matmul_multi,
    .embed = cpu_embed,
    .rmsnorm = cpu_rmsnorm,
    .add = cpu_add,
    .bias_add = cpu_bias_add,
    .rope = cpu_rope,
    .silu_mul = cpu_silu_mul,
    .kv_store = cpu_kv_store,
    .attention = cpu_attention,
    .gather_rows = cpu_gather_rows,
    .qkv_post = cpu_qkv_post,
    .add_rmsnorm = cpu_add_rmsnorm,
    .check_finite = cpu_check_finite,
    .describe = cpu_describe,
    .mem_used = cpu_mem_used,
    .destroy = cpu_destroy,
};

kb_backend *kb_cpu_new(struct kern_pool *pool) {
    kb_cpu *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->base.ops = &cpu_ops;
    c->pool = pool;
    c->att = cpu_att_new(kern_pool_threads(pool));
    if (!c->att) {
        free(c);
        return NULL;
    }
    return &c->base;
}
