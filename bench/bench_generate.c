/* bench_generate: model_forward speed on the default model (not a test).
 *
 *   bench_generate [--model PATH] [--threads N] [--prompt-len N] [--steps N] [--batch B]
 *
 * Prints prefill tokens/s for one prompt (512 tokens by default), decode
 * tokens/s at batch 1, 8 and 32 (independent sequences decoded together
 * through one model_forward per step, each over a 64-token context), and
 * peak resident memory against model file + KV pool size.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bench/bench_util.h"
#include "runtime/model.h"
#include "util/util.h"

static long vm_hwm_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) v = strtol(line + 6, NULL, 10);
    if (f) fclose(f);
    return v;
}

static void fill_tokens(int32_t *t, int n, int vocab, uint32_t seed) {
    for (int i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        t[i] = (int32_t)(200 + (seed >> 8) % (uint32_t)(vocab - 200));
    }
}

int main(int argc, char **argv) {
    const char *path = bench_model_path();
    int threads = 2, prompt_len = 512, steps = 32, ctx0 = 64, only_batch = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) path = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--prompt-len") && i + 1 < argc) prompt_len = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) only_batch = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_generate [--model PATH] [--threads N] [--prompt-len N] "
                            "[--steps N] [--batch 1|8|32]\n");
            return 2;
        }
    }
    sgl_error err;
    sgl_model *m = model_load(path, threads, &err);
    if (!m) {
        fprintf(stderr, "bench_generate: %s\n", err.msg);
        return 1;
    }
    const model_config *c = model_get_config(m);
    enum { MAXB = 32 };
    int batches[3] = {1, 8, 32};
    int32_t n_slots = prompt_len + MAXB * (ctx0 + steps);
    kv_pool *kv = model_kv_pool_new(m, n_slots, &err);
    if (!kv) {
        fprintf(stderr, "bench_generate: %s\n", err.msg);
        return 1;
    }
    int32_t *slots = malloc(sizeof(int32_t) * (size_t)n_slots);
    int32_t *toks = malloc(sizeof(int32_t) * (size_t)n_slots);
    float *logits = malloc(sizeof(float) * (size_t)MAXB * c->vocab);
    kv_pool_alloc(kv, n_slots, slots);
    fill_tokens(toks, n_slots, c->vocab, 1);
    struct stat st;
    double file_mb = stat(path, &st) == 0 ? (double)st.st_size / 1048576.0 : 0;
    double kv_mb = (double)kv_pool_bytes_per_slot(kv) * n_slots / 1048576.0;
    printf("model %s: %d layers, dim %d, %d heads / %d kv, vocab %d; kernels %s; %d threads\n",
           path, c->n_layers, c->dim, c->n_heads, c->n_kv_heads, c->vocab, kern_impl_name(),
           kern_pool_threads(model_get_pool(m)));

    /* prefill: warm up with a short run, then the best of 2 */
    double best = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        int n = rep == 0 ? 16 : prompt_len;
        model_seq s = {.n_new = n, .tokens = toks, .pos0 = 0, .n_ctx = n, .slots = slots,
                       .logits_from = n - 1};
        model_batch b = {1, &s};
        double t0 = sgl_now();
        if (model_forward(m, kv, &b, logits, &err)) {
            fprintf(stderr, "bench_generate: %s\n", err.msg);
            return 1;
        }
        double dt = sgl_now() - t0;
        if (rep > 0 && dt < best) best = dt;
    }
    printf("prefill %d tokens: %.3f s = %.1f tokens/s\n", prompt_len, best, prompt_len / best);

    /* decode: B sequences, each prefilled with ctx0 tokens, then `steps`
     * batched single-token steps. */
    model_seq seqs[MAXB];
    for (int bi = 0; bi < 3; bi++) {
        int B = batches[bi];
        if (only_batch && B != only_batch) continue;
        for (int i = 0; i < B; i++) {
            int32_t *sl = slots + prompt_len + i * (ctx0 + steps);
            int32_t *tk = toks + prompt_len + i * (ctx0 + steps);
            seqs[i] = (model_seq){.n_new = ctx0, .tokens = tk, .pos0 = 0, .n_ctx = ctx0,
                                  .slots = sl, .logits_from = ctx0 - 1};
        }
        model_batch b = {B, seqs};
        if (model_forward(m, kv, &b, logits, &err)) {
            fprintf(stderr, "bench_generate: %s\n", err.msg);
            return 1;
        }
        double t0 = sgl_now();
        for (int k = 0; k < steps; k++) {
            for (int i = 0; i < B; i++) {
                int p = ctx0 + k;
                seqs[i].n_new = 1;
                seqs[i].pos0 = p;
                seqs[i].n_ctx = p + 1;
                seqs[i].tokens = toks + prompt_len + i * (ctx0 + steps) + p;
                seqs[i].logits_from = 0;
            }
            if (model_forward(m, kv, &b, logits, &err)) {
                fprintf(stderr, "bench_generate: %s\n", err.msg);
                return 1;
            }
        }
        double dt = sgl_now() - t0;
        printf("decode batch %2d: %d steps in %.3f s = %.1f tokens/s aggregate (%.1f ms/step)\n", B,
               steps, dt, B * steps / dt, 1000 * dt / steps);
    }
    long hwm = vm_hwm_kib();
    printf("peak RSS (VmHWM) %.1f MiB; model file %.1f MiB + KV pool %.1f MiB (%d slots) = %.1f MiB\n",
           hwm / 1024.0, file_mb, kv_mb, n_slots, file_mb + kv_mb);
    free(slots);
    free(toks);
    free(logits);
    kv_pool_free(kv);
    model_free(m);
    return 0;
}
