/* bench_busy: model speed on a busy machine (not a test).
 *
 *   bench_busy [--model PATH] [--threads N] [--prompt-len N] [--steps N]
 *              [--rounds R] [--competitors C]
 *
 * Measures prefill (one prompt of --prompt-len tokens) and decode (batch 1,
 * --steps tokens) with the kernels' thread pool, in four conditions run
 * interleaved for R rounds so drifting background load hits them alike:
 *   idle / busy (C CPU-bound competitor processes this bench starts and
 *   stops itself) x pool contention guard on / off (kern_pool_set_guard).
 * Prints per-condition medians and the ratios busy/idle (the target is
 * >= 0.40 with one competitor on 2 cores, fair share being 0.5) and
 * guard-on/guard-off when idle (no regression: ~1.0), plus the pool's solo
 * runs and stalls.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/bench_util.h"
#include "runtime/model.h"
#include "util/util.h"

static void fill_tokens(int32_t *t, int n, int vocab, uint32_t seed) {
    for (int i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        t[i] = (int32_t)(200 + (seed >> 8) % (uint32_t)(vocab - 200));
    }
}

/* A CPU-bound competitor: spins until killed. */
static pid_t competitor_start(void) {
    pid_t pid = fork();
    if (pid == 0) {
        volatile double x = 1.0;
        for (;;) x = x * 1.0000001 + 1e-9;
    }
    return pid;
}

static void competitor_stop(pid_t pid) {
    if (pid <= 0) return;
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

typedef struct bench {
    sgl_model *m;
    kv_pool *kv;
    int32_t *slots, *toks;
    float *logits;
    int prompt_len, steps;
} bench;

/* Returns prefill and decode tokens/s. */
static int measure(bench *b, double *prefill, double *decode) {
    sgl_error err;
    int P = b->prompt_len;
    model_seq s = {.n_new = P, .tokens = b->toks, .pos0 = 0, .n_ctx = P, .slots = b->slots, .logits_from = P - 1};
    model_batch bt = {1, &s};
    double t0 = sgl_now();
    if (model_forward(b->m, b->kv, &bt, b->logits, &err)) return fprintf(stderr, "bench_busy: %s\n", err.msg), -1;
    *prefill = P / (sgl_now() - t0);
    t0 = sgl_now();
    for (int k = 0; k < b->steps; k++) {
        s = (model_seq){.n_new = 1, .tokens = b->toks + P + k, .pos0 = P + k, .n_ctx = P + k + 1,
                        .slots = b->slots, .logits_from = 0};
        if (model_forward(b->m, b->kv, &bt, b->logits, &err)) return fprintf(stderr, "bench_busy: %s\n", err.msg), -1;
    }
    *decode = b->steps / (sgl_now() - t0);
    return 0;
}

int main(int argc, char **argv) {
    const char *path = bench_model_path();
    int threads = 2, rounds = 5, competitors = 1;
    bench b = {.prompt_len = 128, .steps = 32};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) path = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--prompt-len") && i + 1 < argc) b.prompt_len = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) b.steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--competitors") && i + 1 < argc) competitors = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_busy [--model PATH] [--threads N] [--prompt-len N] [--steps N] "
                            "[--rounds R] [--competitors C]\n");
            return 2;
        }
    }
    if (rounds < 1 || rounds > 100 || competitors < 0 || competitors > 64 || b.prompt_len < 1 || b.steps < 1) {
        fprintf(stderr, "bench_busy: bad arguments\n");
        return 2;
    }
    sgl_error err;
    b.m = model_load(path, threads, &err);
    if (!b.m) {
        fprintf(stderr, "bench_busy: %s\n", err.msg);
        return 1;
    }
    const model_config *c = model_get_config(b.m);
    int32_t n_slots = b.prompt_len + b.steps;
    b.kv = model_kv_pool_new(b.m, n_slots, &err);
    b.slots = malloc(sizeof(int32_t) * (size_t)n_slots);
    b.toks = malloc(sizeof(int32_t) * (size_t)n_slots);
    b.logits = malloc(sizeof(float) * (size_t)c->vocab);
    if (!b.kv || !b.slots || !b.toks || !b.logits) {
        fprintf(stderr, "bench_busy: out of memory\n");
        return 1;
    }
    kv_pool_alloc(b.kv, n_slots, b.slots);
    fill_tokens(b.toks, n_slots, c->vocab, 7);
    kern_pool *pool = model_get_pool(b.m);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    printf("bench_busy: %s, %d threads on %ld online cores, %d competitor%s, prefill %d tokens, "
           "decode %d steps, %d rounds\n",
           path, kern_pool_threads(pool), ncpu, competitors, competitors == 1 ? "" : "s", b.prompt_len,
           b.steps, rounds);
    double warm_p, warm_d;
    if (measure(&b, &warm_p, &warm_d)) return 1;
    /* [guard][busy] */
    double *pf[2][2], *dc[2][2];
    uint64_t solo[2] = {0}, stalls[2] = {0};
    for (int g = 0; g < 2; g++)
        for (int k = 0; k < 2; k++) {
            pf[g][k] = calloc((size_t)rounds, sizeof(double));
            dc[g][k] = calloc((size_t)rounds, sizeof(double));
        }
    for (int r = 0; r < rounds; r++) {
        for (int busy = 0; busy < 2; busy++) {
            pid_t comp[64] = {0};
            for (int k = 0; busy && k < competitors; k++) comp[k] = competitor_start();
            if (busy) usleep(20000); /* let the competitors get going */
            for (int gi = 0; gi < 2; gi++) {
                int g = (r + gi) % 2; /* alternate which guard setting goes first */
                kern_pool_set_guard(pool, g == 1);
                uint64_t s0, t0, s1, t1;
                kern_pool_stats(pool, &s0, &t0);
                if (measure(&b, &pf[g][busy][r], &dc[g][busy][r])) return 1;
                kern_pool_stats(pool, &s1, &t1);
                if (busy) solo[g] += s1 - s0, stalls[g] += t1 - t0;
            }
            for (int k = 0; busy && k < competitors; k++) competitor_stop(comp[k]);
        }
        printf("round %d: prefill tok/s idle %.0f/%.0f busy %.0f/%.0f; decode tok/s idle %.1f/%.1f busy %.1f/%.1f "
               "(guard on/off)\n",
               r + 1, pf[1][0][r], pf[0][0][r], pf[1][1][r], pf[0][1][r], dc[1][0][r], dc[0][0][r], dc[1][1][r],
               dc[0][1][r]);
        fflush(stdout);
    }
    double mp[2][2], md[2][2];
    for (int g = 0; g < 2; g++)
        for (int k = 0; k < 2; k++) mp[g][k] = median(pf[g][k], rounds), md[g][k] = median(dc[g][k], rounds);
    for (int g = 1; g >= 0; g--)
        printf("guard %-3s: prefill %.0f -> %.0f tok/s busy/idle %.2f; decode %.1f -> %.1f tok/s busy/idle %.2f; "
               "busy runs: %llu solo, %llu stalls\n",
               g ? "on" : "off", mp[g][0], mp[g][1], mp[g][1] / mp[g][0], md[g][0], md[g][1], md[g][1] / md[g][0],
               (unsigned long long)solo[g], (unsigned long long)stalls[g]);
    printf("idle, guard on / off: prefill %.2f, decode %.2f (1.00 = no cost)\n", mp[1][0] / mp[0][0],
           md[1][0] / md[0][0]);
    printf("busy, guard on / off: prefill %.2f, decode %.2f\n", mp[1][1] / mp[0][1], md[1][1] / md[0][1]);
    kv_pool_free(b.kv);
    model_free(b.m);
    free(b.slots), free(b.toks), free(b.logits);
    return 0;
}
