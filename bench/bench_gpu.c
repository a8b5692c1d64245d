/* bench_gpu: model_forward on the CUDA backend (not a test; needs a GPU).
 *
 *   bench_gpu [--model PATH] [--steps N] [--ctx N] [--gemm-rows N] [--quick]
 *
 * On the default model, for the deterministic configuration (the
 * batch-invariant kernels, the default) and the fastest one this build has
 * (kb_cuda_set_fast: cuBLAS's default tensor-core GEMM, which may split K,
 * from --gemm-rows activation rows up; not batch-invariant), prints:
 *   - prefill tokens/s for one 512- and one 4096-token prompt;
 *   - decode tokens/s at batch 1, 8, 64 and 256 (each sequence over a
 *     --ctx-token context), with the memory-bandwidth bound of the card
 *     (weights + KV read per step / peak HBM bandwidth) and the ratio;
 *   - the decode figures again with CUDA graphs off, and the graphs' gain;
 *   - the prefill figures again with the extend kernel off (every query
 *     through the decode kernels: the same results), and its gain;
 *   - the cost of determinism (deterministic vs fastest, per figure);
 *   - how many decode forwards captured, replayed or ran without a graph
 *     (any of the last is reported: graphs should always be made);
 *   - the matmul switch-over: time of the warp kernel vs cuBLAS on the
 *     model's FFN matrix for 1..512 rows, and the first row count where
 *     cuBLAS wins (the value to give --gemm-rows / SGL_CUDA_GEMM_ROWS);
 *   - one decode step at batch 1 and 64 split into ops (synchronised
 *     per-op timing, so the split, not the total, is what it tells).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench_util.h"
#include "kernels/backend.h"
#include "kernels/cuda/kcuda.h"
#include "runtime/model.h"
#include "util/util.h"

static sgl_error err;

static void fill_tokens(int32_t *t, int64_t n, int vocab, uint32_t seed) {
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        t[i] = (int32_t)(200 + (seed >> 8) % (uint32_t)(vocab - 200));
    }
}

static int fwd(sgl_model *m, kv_pool *kv, model_seq *s, int n, float *logits) {
    model_batch b = {n, s};
    if (model_forward(m, kv, &b, logits, &err)) {
        fprintf(stderr, "bench_gpu: %s\n", err.msg);
        return -1;
    }
    return 0;
}

typedef struct figures {
    double prefill[2];  /* tokens/s */
    double decode[4];   /* tokens/s aggregate */
} figures;

static const int prefill_lens[2] = {512, 4096};
static const int batches[4] = {1, 8, 64, 256};

/* Prefill figures of the current configuration: one 512- and one
 * 4096-token prompt, the best of the runs after the first. */
static int run_prefill(sgl_model *m, kv_pool *kv, int32_t *slots, int32_t *toks, float *logits,
                       bool quick, figures *f) {
    for (int pi = 0; pi < 2; pi++) {
        int n = prefill_lens[pi];
        double best = 1e30;
        for (int rep = 0; rep < (quick ? 2 : 3); rep++) {
            model_seq s = {.n_new = n, .tokens = toks, .pos0 = 0, .n_ctx = n, .slots = slots,
                           .logits_from = n - 1};
            double t0 = sgl_now();
            if (fwd(m, kv, &s, 1, logits)) return -1;
            double dt = sgl_now() - t0;
            if (rep > 0 && dt < best) best = dt; /* the first run warms up */
        }
        f->prefill[pi] = n / best;
        printf("  prefill %4d tokens: %8.1f ms = %9.0f tokens/s\n", n, 1e3 * best, n / best);
    }
    return 0;
}

/* Prefill (unless decode_only) and decode figures of the current
 * configuration. */
static int run_figures(sgl_model *m, kv_pool *kv, int32_t *slots, int32_t *toks, float *logits,
                       int ctx, int steps, bool quick, double weight_bytes, double hbm,
                       bool decode_only, figures *f) {
    const model_config *c = model_get_config(m);
    if (!decode_only && run_prefill(m, kv, slots, toks, logits, quick, f)) return -1;
    static model_seq seqs[256];
    for (int bi = 0; bi < 4; bi++) {
        int B = batches[bi];
        int span = ctx + steps;
        for (int i = 0; i < B; i++)
            seqs[i] = (model_seq){.n_new = ctx, .tokens = toks + (int64_t)i * span, .pos0 = 0,
                                  .n_ctx = ctx, .slots = slots + (int64_t)i * span,
                                  .logits_from = ctx - 1};
        if (fwd(m, kv, seqs, B, logits)) return -1;
        double t0 = 0;
        for (int k = -1; k < steps; k++) { /* step -1 warms up (same shapes) */
            int p = ctx + (k < 0 ? 0 : k);
            for (int i = 0; i < B; i++) {
                seqs[i].n_new = 1;
                seqs[i].pos0 = p;
                seqs[i].n_ctx = p + 1;
                seqs[i].tokens = toks + (int64_t)i * span + p;
                seqs[i].logits_from = 0;
            }
            if (k == 0) t0 = sgl_now();
            if (fwd(m, kv, seqs, B, logits)) return -1;
        }
        double dt = (sgl_now() - t0) / steps;
        f->decode[bi] = B / dt;
        /* bytes a step must read: the weights once, every sequence's K and V */
        double kv_bytes = (double)B * (ctx + steps / 2.0) * c->n_layers * c->kv_dim * 2.0 * 2.0;
        double bound = (weight_bytes + kv_bytes) / (hbm * 1e9);
        printf("  decode batch %3d: %7.3f ms/step = %9.0f tokens/s; bandwidth bound %.3f ms/step "
               "(%.0f tokens/s), %.0f%% of it\n",
               B, 1e3 * dt, B / dt, 1e3 * bound, B / bound, 100.0 * bound / dt);
    }
    return 0;
}

/* One decode step at batch B split into ops. */
static int op_split(sgl_model *m, kv_pool *kv, int32_t *slots, int32_t *toks, float *logits,
                    int ctx, int steps, int B) {
    static model_seq seqs[256];
    int span = ctx + steps;
    for (int i = 0; i < B; i++)
        seqs[i] = (model_seq){.n_new = 1, .tokens = toks + (int64_t)i * span + ctx, .pos0 = ctx,
                              .n_ctx = ctx + 1, .slots = slots + (int64_t)i * span,
                              .logits_from = 0};
    kb_backend *be = model_get_backend(m);
    kb_cuda_profile(be, 1);
    enum { REPS = 5 };
    for (int r = 0; r < REPS; r++)
        if (fwd(m, kv, seqs, B, logits)) return -1;
    const char *names[32];
    double secs[32], total = 0;
    long calls[32];
    int n = kb_cuda_profile_get(be, names, secs, calls, 32);
    kb_cuda_profile(be, 0);
    for (int i = 0; i < n; i++) total += secs[i];
    printf("  decode step at batch %d, per op (synchronised; total %.3f ms):\n", B, 1e3 * total / REPS);
    for (int i = 0; i < n; i++)
        if (calls[i])
            printf("    %-12s %8.3f ms %5.1f%%  (%ld calls)\n", names[i], 1e3 * secs[i] / REPS,
                   100.0 * secs[i] / total, calls[i] / REPS);
    return 0;
}

/* Warp kernel vs cuBLAS on one weight matrix for growing row counts. */
static void switch_over(const model_mat *w) {
    kb_backend *be = kb_cuda_new(&err);
    if (!be) return;
    kb_mat host = {.type = w->type, .rows = w->rows, .cols = w->cols, .data = w->data}, dm;
    if (be->ops->mat_upload(be, &host, &dm, &err)) {
        be->ops->destroy(be);
        return;
    }
    int64_t maxnb = 512;
    float *x = be->ops->alloc(be, sizeof(float) * (size_t)(maxnb * w->cols));
    float *y = be->ops->alloc(be, sizeof(float) * (size_t)(maxnb * w->rows));
    float *hx = calloc((size_t)(maxnb * w->cols), sizeof(float));
    for (int64_t i = 0; i < maxnb * w->cols; i++) hx[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
    be->ops->upload(be, x, hx, sizeof(float) * (size_t)(maxnb * w->cols), &err);
    int first = 0, bad;
    printf("  matmul %s [%lld x %lld]:   rows   warp kernel   cuBLAS f16\n", sgl_dtype_name(w->type),
           (long long)w->rows, (long long)w->cols);
    for (int64_t nb = 1; nb <= maxnb; nb *= 2) {
        double t[2];
        for (int mode = 0; mode < 2; mode++) {
            kb_cuda_set_gemm_rows(be, mode ? 1 : 0);
            be->ops->matmul(be, &dm, x, nb, y); /* warm-up */
            be->ops->finish(be, &bad, &err);
            enum { REPS = 20 };
            double t0 = sgl_now();
            for (int r = 0; r < REPS; r++) be->ops->matmul(be, &dm, x, nb, y);
            be->ops->finish(be, &bad, &err);
            t[mode] = (sgl_now() - t0) / REPS;
        }
        printf("  %41lld %10.1f us %10.1f us\n", (long long)nb, 1e6 * t[0], 1e6 * t[1]);
        if (!first && t[1] < t[0]) first = (int)nb;
    }
    if (first) printf("  switch-over: cuBLAS is faster from %d rows (--gemm-rows %d)\n", first, first);
    else printf("  switch-over: the warp kernel is faster up to %lld rows\n", (long long)maxnb);
    be->ops->free_mem(be, x), be->ops->free_mem(be, y);
    be->ops->mat_free(be, &dm);
    be->ops->destroy(be);
    free(hx);
}

int main(int argc, char **argv) {
    const char *path = bench_model_path();
    int steps = 32, ctx = 128, gemm_rows = 16;
    bool quick = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) path = argv[++i];
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ctx") && i + 1 < argc) ctx = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--gemm-rows") && i + 1 < argc) gemm_rows = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--quick")) quick = true, steps = 8;
        else {
            fprintf(stderr, "usage: bench_gpu [--model PATH] [--steps N] [--ctx N] "
                            "[--gemm-rows N] [--quick]\n");
            return 2;
        }
    }
    if (steps < 1 || ctx < 1 || gemm_rows < 1) {
        fprintf(stderr, "bench_gpu: --steps, --ctx and --gemm-rows must be >= 1\n");
        return 2;
    }
    sgl_model *m = model_load(path, 0, &err);
    if (!m) {
        fprintf(stderr, "bench_gpu: %s\n", err.msg);
        return 1;
    }
    if (model_set_device(m, MODEL_DEVICE_CUDA, &err)) {
        fprintf(stderr, "bench_gpu: %s\n", err.msg);
        model_free(m);
        return 1;
    }
    const model_config *c = model_get_config(m);
    char desc[320];
    model_describe_device(m, desc, sizeof desc);
    uint64_t wbytes, total;
    model_device_memory(m, &wbytes, &total);
    double hbm = kcuda_hbm_gbps();
    int span = ctx + steps;
    int64_t n_slots = SGL_MAX((int64_t)256 * span, (int64_t)4096);
    kv_pool *kv = model_kv_pool_new(m, (int32_t)n_slots, &err);
    if (!kv) {
        fprintf(stderr, "bench_gpu: %s\n", err.msg);
        return 1;
    }
    int32_t *slots = malloc(sizeof(int32_t) * (size_t)n_slots);
    int32_t *toks = malloc(sizeof(int32_t) * (size_t)n_slots);
    float *logits = malloc(sizeof(float) * (size_t)256 * c->vocab);
    kv_pool_alloc(kv, (int32_t)n_slots, slots);
    fill_tokens(toks, n_slots, c->vocab, 1);
    printf("bench_gpu: %s on %s\n", path, desc);
    printf("  %d layers, dim %d, %d/%d heads, vocab %d; weights %.1f MiB on the device, "
           "peak HBM %.0f GB/s; decode over %d-token contexts, %d steps\n",
           c->n_layers, c->dim, c->n_heads, c->n_kv_heads, c->vocab, wbytes / 1048576.0, hbm,
           ctx, steps);
    if (hbm <= 0) hbm = 1000; /* unknown: the bound column is then only indicative */
    figures det, nograph, fast;
    kb_backend *be = model_get_backend(m);
    long cap0, rep0, eag0, cap1, rep1, eag1;
    kb_cuda_graph_stats(be, &cap0, &rep0, &eag0);
    printf("deterministic (batch-invariant kernels, decode graphs on):\n");
    if (run_figures(m, kv, slots, toks, logits, ctx, steps, quick, (double)wbytes, hbm, false, &det))
        return 1;
    kb_cuda_graph_stats(be, &cap1, &rep1, &eag1);
    printf("  decode graphs: %ld captured, %ld replayed, %ld forwards without a graph%s\n",
           cap1 - cap0, rep1 - rep0, eag1 - eag0,
           eag1 > eag0 ? " (WARNING: a capture failed; those shapes ran launch by launch)" : "");
    kb_cuda_set_graphs(be, 0);
    printf("deterministic, decode graphs off:\n");
    if (run_figures(m, kv, slots, toks, logits, ctx, steps, quick, (double)wbytes, hbm, true,
                    &nograph))
        return 1;
    kb_cuda_set_graphs(be, 1);
    printf("gain of decode graphs (graphs on / off throughput - 1):\n");
    for (int i = 0; i < 4; i++)
        printf("  graphs decode %4d: %+.1f%%\n", batches[i], 100.0 * (det.decode[i] / nograph.decode[i] - 1));
    figures noext;
    kb_cuda_set_extend(be, 0);
    printf("deterministic, extend kernel off (prefill through the decode kernels):\n");
    if (run_prefill(m, kv, slots, toks, logits, quick, &noext)) return 1;
    kb_cuda_set_extend(be, 1);
    printf("gain of the extend kernel (on / off prefill throughput - 1):\n");
    for (int i = 0; i < 2; i++)
        printf("  extend prefill %4d: %+.1f%%\n", prefill_lens[i], 100.0 * (det.prefill[i] / noext.prefill[i] - 1));
    kb_cuda_set_gemm_rows(be, gemm_rows);
    printf("fastest (cuBLAS default GEMM from %d rows, may split K; not batch-invariant):\n", gemm_rows);
    if (run_figures(m, kv, slots, toks, logits, ctx, steps, quick, (double)wbytes, hbm, false, &fast))
        return 1;
    kb_cuda_set_gemm_rows(be, 0);
    printf("cost of determinism (deterministic / fastest throughput - 1):\n");
    for (int i = 0; i < 2; i++)
        printf("  determinism prefill %4d: %+.1f%%\n", prefill_lens[i], 100.0 * (det.prefill[i] / fast.prefill[i] - 1));
    for (int i = 0; i < 4; i++)
        printf("  determinism decode %4d: %+.1f%%\n", batches[i], 100.0 * (det.decode[i] / fast.decode[i] - 1));
    model_device_memory(m, &wbytes, &total);
    printf("device memory: weights %.1f MiB, all %.1f MiB (KV pool %lld slots)\n",
           wbytes / 1048576.0, total / 1048576.0, (long long)n_slots);
    printf("matmul switch-over:\n");
    switch_over(&model_get_weights(m)->layers[0].w_up);
    if (op_split(m, kv, slots, toks, logits, ctx, steps, 1) ||
        op_split(m, kv, slots, toks, logits, ctx, steps, 64))
        return 1;
    free(slots), free(toks), free(logits);
    kv_pool_free(kv);
    model_free(m);
    return 0;
}
