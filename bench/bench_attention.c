/* bench_attention: decode cost at long context and where a step's time goes
 * (not a test).
 *
 *   bench_attention [--model PATH] [--threads N] [--context N[,N...]]
 *                   [--batch B[,B...]] [--steps N] [--reps R]
 *
 * For every context N (default 512,2048,4096,8192) and batch B (default 1
 * and 8): B independent sequences, each with N - steps tokens of K/V already
 * in the pool (seeded random f16 values written straight into its own
 * slots: the cost of attention does not depend on the values, and a prefill
 * of 8 x 8192 tokens would take minutes), decode `steps` single-token steps
 * together, the last one attending to N keys. Each configuration runs
 * `reps` times (default 3) and the fastest run is printed: on a shared
 * machine the minimum is the figure least disturbed by other work.
 * Prints ms/step, attention ms/step (wall clock, and CPU time of the calling
 * thread: with --threads 1 that is the attention's own work, untouched by
 * other load on the machine), and the share of the step spent in
 * attention, in the matmuls of the layers, in the output head (the matmul
 * whose rows are the vocabulary) and in everything else, by timing the
 * backend's ops (the model's own CPU backend table with those entries
 * wrapped by a clock).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/bench_util.h"
#include "kernels/backend.h"
#include "runtime/model.h"
#include "util/util.h"

/* ---- timed backend entries ------------------------------------------------------ */

static const kb_ops *inner;   /* the CPU backend's own table */
static kb_ops timed;          /* copy with the entries below */
static int64_t head_rows;     /* vocabulary: the output head's rows */
static double t_att, t_mm, t_head, c_att;

/* CPU time of the calling thread, seconds. */
static double thread_cpu(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void timed_attention(kb_backend *be, const kb_kv *kv, int layer, const kb_att_shape *sh,
                            const float *q, float *out) {
    double t0 = sgl_now(), c0 = thread_cpu();
    inner->attention(be, kv, layer, sh, q, out);
    t_att += sgl_now() - t0;
    c_att += thread_cpu() - c0;
}
static void timed_matmul(kb_backend *be, const kb_mat *w, const float *x, int64_t nb, float *y) {
    double t0 = sgl_now();
    inner->matmul(be, w, x, nb, y);
    double dt = sgl_now() - t0;
    if (w->rows == head_rows) t_head += dt;
    else t_mm += dt;
}
static void timed_matmul_multi(kb_backend *be, const kb_mat *const *w, float *const *y, int n,
                               const float *x, int64_t nb) {
    double t0 = sgl_now();
    inner->matmul_multi(be, w, y, n, x, nb);
    t_mm += sgl_now() - t0;
}

/* ---- helpers ---------------------------------------------------------------------- */

static int parse_list(const char *s, int *out, int cap) {
    int n = 0;
    while (*s && n < cap) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v <= 0) return -1;
        out[n++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return n;
}

/* Random f16 in about [-1, 1): sign, exponent 14..15 (0.5..2 halved), mantissa. */
static uint16_t rand_f16(uint32_t *s) {
    *s = *s * 1664525u + 1013904223u;
    uint32_t r = *s >> 8;
    return (uint16_t)(((r & 1) << 15) | ((13u + ((r >> 1) & 1)) << 10) | ((r >> 2) & 1023));
}

int main(int argc, char **argv) {
    const char *path = bench_model_path();
    int threads = 2, steps = 16, reps = 3;
    int ctxs[16] = {512, 2048, 4096, 8192}, n_ctxs = 4;
    int batches[16] = {1, 8}, n_batches = 2;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) path = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--context") && i + 1 < argc) {
            if ((n_ctxs = parse_list(argv[++i], ctxs, 16)) <= 0) goto usage;
        } else if (!strcmp(argv[i], "--batch") && i + 1 < argc) {
            if ((n_batches = parse_list(argv[++i], batches, 16)) <= 0) goto usage;
        } else
            goto usage;
    }
    if (threads < 1 || steps < 1 || reps < 1) goto usage;
    sgl_error err;
    sgl_model *m = model_load(path, threads, &err);
    if (!m) {
        fprintf(stderr, "bench_attention: %s\n", err.msg);
        return 1;
    }
    const model_config *c = model_get_config(m);
    kb_backend *be = model_get_backend(m);
    inner = be->ops;
    timed = *inner;
    timed.attention = timed_attention;
    timed.matmul = timed_matmul;
    if (inner->matmul_multi) timed.matmul_multi = timed_matmul_multi;
    be->ops = &timed;
    head_rows = c->vocab;
    printf("model %s: %d layers, %d heads / %d kv x %d, vocab %d, n_ctx %d; kernels %s; %d "
           "threads\n",
           path, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab, c->n_ctx_train,
           kern_impl_name(), kern_pool_threads(model_get_pool(m)));
    printf("%7s %5s %10s %10s %10s %8s %8s %8s %8s\n", "context", "batch", "ms/step",
           "attn ms", "attn cpu", "attn", "matmul", "head", "other");
    float *logits = NULL;
    for (int ci = 0; ci < n_ctxs; ci++) {
        int N = ctxs[ci];
        if (N <= steps || (c->n_ctx_train > 0 && N > c->n_ctx_train)) {
            fprintf(stderr, "bench_attention: context %d must be over --steps %d and at most "
                            "the model's %d\n", N, steps, c->n_ctx_train);
            return 1;
        }
        for (int bi = 0; bi < n_batches; bi++) {
            int B = batches[bi];
            int span = N;
            int32_t n_slots = B * span;
            kv_pool *kv = model_kv_pool_new(m, n_slots, &err);
            int32_t *slots = malloc(sizeof(int32_t) * (size_t)n_slots);
            int32_t *toks = malloc(sizeof(int32_t) * (size_t)n_slots);
            model_seq *seqs = malloc(sizeof(model_seq) * (size_t)B);
            free(logits);
            logits = malloc(sizeof(float) * (size_t)B * (size_t)c->vocab);
            if (!kv || !slots || !toks || !seqs || !logits ||
                kv_pool_alloc(kv, n_slots, slots)) {
                fprintf(stderr, "bench_attention: out of memory (%d slots)\n", n_slots);
                return 1;
            }
            uint32_t seed = 7;
            for (int32_t i = 0; i < n_slots; i++)
                toks[i] = (int32_t)(200 + (i * 7919u) % (uint32_t)(c->vocab - 200));
            for (int l = 0; l < c->n_layers; l++)
                for (int32_t s = 0; s < n_slots; s++) {
                    uint16_t *k = kv_pool_k(kv, l, s), *v = kv_pool_v(kv, l, s);
                    for (int d = 0; d < c->kv_dim; d++) k[d] = rand_f16(&seed);
                    for (int d = 0; d < c->kv_dim; d++) v[d] = rand_f16(&seed);
                }
            model_batch b = {B, seqs};
            double best = 1e30, b_att = 0, b_mm = 0, b_head = 0, bc_att = 1e30;
            for (int rep = 0; rep < reps; rep++) {
                double tot = 0;
                for (int k = -1; k < steps; k++) { /* step -1 warms up */
                    int p = N - steps + (k < 0 ? 0 : k);
                    for (int i = 0; i < B; i++)
                        seqs[i] = (model_seq){.n_new = 1, .tokens = toks + i * span + p,
                                              .pos0 = p, .n_ctx = p + 1,
                                              .slots = slots + i * span, .logits_from = 0};
                    if (k == 0) t_att = t_mm = t_head = c_att = 0;
                    double t0 = sgl_now();
                    if (model_forward(m, kv, &b, logits, &err)) {
                        fprintf(stderr, "bench_attention: %s\n", err.msg);
                        return 1;
                    }
                    if (k >= 0) tot += sgl_now() - t0;
                }
                if (tot < best) best = tot, b_att = t_att, b_mm = t_mm, b_head = t_head;
                if (c_att < bc_att) bc_att = c_att;
            }
            double oth = best - b_att - b_mm - b_head;
            printf("%7d %5d %10.3f %10.3f %10.3f %7.1f%% %7.1f%% %7.1f%% %7.1f%%\n", N, B,
                   1e3 * best / steps, 1e3 * b_att / steps, 1e3 * bc_att / steps,
                   100 * b_att / best, 100 * b_mm / best, 100 * b_head / best, 100 * oth / best);
            fflush(stdout);
            free(slots), free(toks), free(seqs);
            kv_pool_free(kv);
        }
    }
    free(logits);
    be->ops = inner;
    model_free(m);
    return 0;
usage:
    fprintf(stderr, "usage: bench_attention [--model PATH] [--threads N] [--context N[,N...]] "
                    "[--batch B[,B...]] [--steps N] [--reps R]\n");
    return 2;
}
