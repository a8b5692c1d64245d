/* bench_prefix: what the radix cache and the cache-aware scheduler buy on a
 * prefix-heavy workload, through the engine request API.
 *
 * Workload 1 (MMLU few-shot pattern): n_prefix few-shot prefixes of about
 * prefix_tokens tokens, per_prefix questions on each, 1 output token;
 * requests are submitted interleaved across prefixes (as a batch of
 * independent programs would), all at once. Runs with policy lpm, fcfs and
 * with the cache off, and prints requests/s, the cache hit rate and the best
 * possible hit rate (every prefix computed exactly once).
 * Workload 2: the same number of requests with no shared prefix, cache on
 * vs off (the cost of keeping a cache that never hits).
 *
 * usage: bench_prefix [--model PATH] [--threads N] [--prefixes 8]
 *                     [--per-prefix 32] [--prefix-tokens 1000]
 *                     [--kv-slots N] [--chunk N] [--only lpm|fcfs|off|noshare]
 *                     [--max-context N]  (-1: no limit, e.g. for the tiny model)
 *
 * The default KV pool holds about 3 prefixes, fewer than the 8 in use, so the
 * order requests are admitted in decides what stays cached. On a CPU the full
 * default run computes ~300k prompt tokens for fcfs and for cache-off each
 * (tens of minutes on 2 cores); `--prefixes 4 --per-prefix 8
 * --prefix-tokens 500 --kv-slots 1500` is the same shape in a few minutes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/engine.h"
#include "runtime/gguf.h"
#include "runtime/tokenizer.h"

static const char *words[] = {
    "river", "energy", "market", "protein", "theorem", "colony", "voltage", "treaty", "enzyme",
    "galaxy", "tariff", "neuron", "glacier", "senate", "isotope", "poem", "cell", "orbit",
    "pressure", "contract", "vector", "empire", "density", "habitat", "ledger", "syntax",
    "catalyst", "frontier", "monsoon", "equation", "migration", "harvest", "circuit", "verdict"};
static const char *subjects[] = {"astronomy",   "biology",   "economics", "law",
                                 "mathematics", "chemistry", "history",   "physics",
                                 "geography",   "medicine",  "philosophy", "statistics"};

static uint64_t rng_state = 0x243f6a8885a308d3ull;
static uint32_t rnd(uint32_t n) {
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)((rng_state >> 33) % n);
}
static const char *word(void) { return words[rnd(SGL_ARRAY_LEN(words))]; }

static void question(sgl_strbuf *sb, bool with_answer) {
    sgl_strbuf_printf(sb, "Question: Which %s best explains the %s of the %s near the %s?\n",
                      word(), word(), word(), word());
    for (int c = 0; c < 4; c++) sgl_strbuf_printf(sb, "%c. The %s %s\n", 'A' + c, word(), word());
    if (with_answer) sgl_strbuf_printf(sb, "Answer: %c\n\n", 'A' + rnd(4));
    else sgl_strbuf_puts(sb, "Answer:");
}

typedef struct prompt {
    int32_t *ids;
    int32_t n;
} prompt;

static int32_t *encode(const sgl_tokenizer *tok, const char *s, int32_t *n) {
    int32_t *ids = NULL;
    size_t nn = 0;
    sgl_error err;
    if (tok_encode(tok, s, strlen(s), false, &ids, &nn, &err) < 0) {
        fprintf(stderr, "tokenize: %s\n", err.msg);
        exit(1);
    }
    *n = (int32_t)nn;
    return ids;
}

static prompt concat(const int32_t *a, int32_t na, const int32_t *b, int32_t nb) {
    prompt p;
    p.n = na + nb;
    p.ids = malloc(sizeof(int32_t) * (size_t)(p.n + 1));
    if (!p.ids) exit(1);
    memcpy(p.ids, a, sizeof(int32_t) * (size_t)na);
    memcpy(p.ids + na, b, sizeof(int32_t) * (size_t)nb);
    return p;
}

/* Best possible hit rate: every distinct prefix computed once, i.e. the
 * tokens of the trie of all prompts over all prompt tokens (a request still
 * computes its last token). */
static const prompt *sort_base;
static int cmp_prompt(const void *a, const void *b) {
    const prompt *x = &sort_base[*(const int *)a], *y = &sort_base[*(const int *)b];
    int32_t n = x->n < y->n ? x->n : y->n;
    for (int32_t i = 0; i < n; i++)
        if (x->ids[i] != y->ids[i]) return x->ids[i] < y->ids[i] ? -1 : 1;
    return (x->n > y->n) - (x->n < y->n);
}

static double best_hit(const prompt *ps, int n) {
    int *ord = malloc(sizeof(int) * (size_t)n);
    if (!ord) return 0;
    for (int i = 0; i < n; i++) ord[i] = i;
    sort_base = ps;
    qsort(ord, (size_t)n, sizeof(int), cmp_prompt);
    int64_t total = 0, cached = 0;
    for (int i = 0; i < n; i++) {
        const prompt *p = &ps[ord[i]];
        total += p->n;
        if (i == 0) continue;
        const prompt *q = &ps[ord[i - 1]];
        int32_t l = 0;
        while (l < p->n && l < q->n && p->ids[l] == q->ids[l]) l++;
        cached += l < p->n - 1 ? l : p->n - 1;
    }
    free(ord);
    return total ? (double)cached / (double)total : 0;
}

typedef struct cfg {
    const char *model;
    int threads;
    int32_t kv_slots, chunk, max_context;
} cfg;

typedef struct outcome {
    double seconds, rps, hit;
    sgl_engine_metrics m;
    int aborted;
} outcome;

static outcome run(const cfg *c, const prompt *ps, int n, sgl_sched_policy pol, bool cache_off) {
    sgl_engine_config ec = sgl_engine_config_default();
    ec.model_path = c->model;
    ec.n_threads = c->threads;
    ec.kv_slots = c->kv_slots;
    ec.chunk_size = c->chunk;
    ec.max_context = c->max_context;
    ec.policy = pol;
    ec.cache_off = cache_off;
    sgl_error err;
    sgl_engine *e = sgl_engine_local_new(&ec, &err);
    if (!e) {
        fprintf(stderr, "engine: %s\n", err.msg);
        exit(1);
    }
    outcome o = {0};
    double t0 = sgl_now();
    for (int i = 0; i < n; i++) {
        sgl_request rq = {0};
        rq.kind = SGL_REQ_GENERATE;
        rq.tokens = ps[i].ids;
        rq.n_tokens = ps[i].n;
        rq.params = sgl_sampling_params_default();
        rq.params.temperature = 0;
        rq.params.max_new_tokens = 1;
        if (!sgl_engine_submit(e, &rq, &err)) {
            fprintf(stderr, "submit: %s\n", err.msg);
            exit(1);
        }
    }
    for (int i = 0; i < n; i++) {
        sgl_result *r = sgl_engine_wait(e, -1);
        if (r && r->finish == SGL_FINISH_ABORT) {
            if (!o.aborted) fprintf(stderr, "aborted: %s\n", r->error);
            o.aborted++;
        }
        sgl_result_free(r);
    }
    o.seconds = sgl_now() - t0;
    sgl_engine_metrics_get(e, &o.m);
    o.rps = n / o.seconds;
    o.hit = o.m.hit_rate;
    sgl_engine_free(e);
    return o;
}

static void print_row(const char *workload, const char *mode, const outcome *o, double best) {
    printf("%-18s %-9s %9.2f %8.3f %8.3f %9lld %9lld %8lld %6lld %8.2f%s\n", workload, mode, o->rps,
           o->hit, best, (long long)o->m.prompt_tokens, (long long)o->m.cached_tokens,
           (long long)o->m.evicted_tokens, (long long)o->m.retractions, o->seconds,
           o->aborted ? "  (aborts!)" : "");
    fflush(stdout);
}

int main(int argc, char **argv) {
    cfg c = {SGL_SOURCE_ROOT "/models/SmolLM2-135M-Instruct.Q4_1.gguf", 0, 0, 512, 0};
    int n_prefix = 8, per_prefix = 32, prefix_tokens = 1000;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) goto usage;
        if (!strcmp(a, "--model")) c.model = v;
        else if (!strcmp(a, "--threads")) c.threads = atoi(v);
        else if (!strcmp(a, "--prefixes")) n_prefix = atoi(v);
        else if (!strcmp(a, "--per-prefix")) per_prefix = atoi(v);
        else if (!strcmp(a, "--prefix-tokens")) prefix_tokens = atoi(v);
        else if (!strcmp(a, "--kv-slots")) c.kv_slots = atoi(v);
        else if (!strcmp(a, "--chunk")) c.chunk = atoi(v);
        else if (!strcmp(a, "--max-context")) c.max_context = atoi(v);
        else if (!strcmp(a, "--only")) only = v;
        else goto usage;
        i++;
    }
    if (n_prefix < 1 || per_prefix < 1 || prefix_tokens < 1) goto usage;

    sgl_error err;
    gguf_file *f = gguf_open(c.model, &err);
    if (!f) {
        fprintf(stderr, "bench_prefix: %s\n", err.msg);
        return 1;
    }
    sgl_tokenizer *tok = tok_load_gguf(f, &err);
    gguf_close(f);
    if (!tok) {
        fprintf(stderr, "bench_prefix: %s\n", err.msg);
        return 1;
    }

    /* Few-shot prefixes: examples appended until prefix_tokens is reached. */
    int n = n_prefix * per_prefix;
    prompt *shared = calloc((size_t)n, sizeof *shared), *unshared = calloc((size_t)n, sizeof *unshared);
    int32_t **pre = calloc((size_t)n_prefix, sizeof *pre), *pre_n = calloc((size_t)n_prefix, sizeof *pre_n);
    if (!shared || !unshared || !pre || !pre_n) return 1;
    for (int k = 0; k < n_prefix; k++) {
        sgl_strbuf sb = {0};
        sgl_strbuf_printf(&sb, "The following are multiple choice questions (with answers) about %s.\n\n",
                          subjects[k % SGL_ARRAY_LEN(subjects)]);
        for (;;) {
            pre[k] = encode(tok, sb.data, &pre_n[k]);
            if (pre_n[k] >= prefix_tokens) break;
            free(pre[k]);
            question(&sb, true);
        }
        sgl_strbuf_free(&sb);
    }
    /* Interleaved arrival: request i asks about prefix i % n_prefix. */
    for (int i = 0; i < n; i++) {
        int k = i % n_prefix;
        sgl_strbuf q = {0};
        question(&q, false);
        int32_t nq;
        int32_t *qi = encode(tok, q.data, &nq);
        shared[i] = concat(pre[k], pre_n[k], qi, nq);
        /* unshared: same length, own text first so nothing is common */
        sgl_strbuf u = {0};
        sgl_strbuf_printf(&u, "Note %d about %s: ", i, word());
        while (1) {
            int32_t nu;
            int32_t *ui = encode(tok, u.data, &nu);
            free(ui);
            if (nu >= pre_n[k]) break;
            sgl_strbuf_printf(&u, "%s %s, ", word(), word());
        }
        int32_t nu;
        int32_t *ui = encode(tok, u.data, &nu);
        unshared[i] = concat(ui, nu, qi, nq);
        free(ui);
        free(qi);
        sgl_strbuf_free(&q);
        sgl_strbuf_free(&u);
    }
    if (c.kv_slots <= 0) /* room for about 3 prefixes plus the running batch */
        c.kv_slots = 3 * prefix_tokens + 4096;
    printf("bench_prefix: model %s\n", c.model);
    printf("workload: %d requests = %d prefixes x %d questions, prefix ~%d tokens (%d..%d), "
           "1 output token; KV pool %d slots, chunk %d\n",
           n, n_prefix, per_prefix, prefix_tokens, pre_n[0], pre_n[n_prefix - 1], c.kv_slots,
           c.chunk);
    printf("%-18s %-9s %9s %8s %8s %9s %9s %8s %6s %8s\n", "workload", "mode", "req/s", "hit",
           "best_hit", "prompt", "cached", "evicted", "retr", "time_s");
    double best = best_hit(shared, n), best_unshared = best_hit(unshared, n);
    outcome o;
    if (!only || !strcmp(only, "lpm")) {
        o = run(&c, shared, n, SGL_SCHED_LPM, false);
        print_row("few-shot", "lpm", &o, best);
    }
    if (!only || !strcmp(only, "fcfs")) {
        o = run(&c, shared, n, SGL_SCHED_FCFS, false);
        print_row("few-shot", "fcfs", &o, best);
    }
    if (!only || !strcmp(only, "off")) {
        o = run(&c, shared, n, SGL_SCHED_LPM, true);
        print_row("few-shot", "cache-off", &o, best);
    }
    if (!only || !strcmp(only, "noshare")) {
        o = run(&c, unshared, n, SGL_SCHED_LPM, false);
        print_row("no-shared-prefix", "cache-on", &o, best_unshared);
        o = run(&c, unshared, n, SGL_SCHED_LPM, true);
        print_row("no-shared-prefix", "cache-off", &o, best_unshared);
    }
    for (int i = 0; i < n; i++) {
        free(shared[i].ids);
        free(unshared[i].ids);
    }
    for (int k = 0; k < n_prefix; k++) free(pre[k]);
    free(pre);
    free(pre_n);
    free(shared);
    free(unshared);
    tok_free(tok);
    return 0;
usage:
    fprintf(stderr, "usage: bench_prefix [--model PATH] [--threads N] [--prefixes N] "
                    "[--per-prefix N] [--prefix-tokens N] [--kv-slots N] [--chunk N] "
                    "[--only lpm|fcfs|off|noshare] [--max-context N]\n");
    return 2;
}
