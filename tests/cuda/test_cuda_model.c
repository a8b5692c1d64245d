/* test_cuda_model: model_forward on the CUDA backend against the CPU backend
 * (suite 'cuda'; exit 77 without a GPU). One model object runs on either
 * device (model_set_device), each with its own KV pool.
 *  - small in-memory models (tests/model/test_model_common.h): every weight
 *    type, qwen2 biases + NeoX rope, linear rope scaling, head_dim 64 and
 *    128 with GQA: logits within a normalised error, top-1 equal on every
 *    row (rows where the CPU's best two logits are a near tie are counted,
 *    not failed);
 *  - the project's tiny model files (argv): greedy continuations equal;
 *  - the default model (SGL_TEST_MODEL, when present): greedy continuations
 *    of 20 prompts equal, token for token;
 *  - determinism on the GPU, bit for bit: batched == alone, chunked prefill
 *    == one shot, cached prefix == recomputed, decode step == prefill row;
 *  - CUDA graphs: batched greedy decoding (batch shapes shrinking through
 *    several buckets, contexts crossing an attention chunk) gives the same
 *    logits bit for bit with decode graphs on and off, and graphs were
 *    captured and replayed (none fell back to plain launches). */
#include "tests/test.h"

#include "kernels/backend.h"
#include "kernels/cuda/kcuda.h"
#include "runtime/tokenizer.h"
#include "tests/model/test_model_common.h"

static sgl_error err;

/* Runs one sequence, logits for every new token: malloc'd [n_new][vocab]. */
static float *run1(sgl_model *m, kv_pool *kv, const int32_t *tokens, int n_new, int pos0,
                   const int32_t *slots) {
    model_seq s = {.n_new = n_new, .tokens = tokens, .pos0 = pos0, .n_ctx = pos0 + n_new,
                   .slots = slots, .logits_from = 0};
    model_batch b = {1, &s};
    float *lg = malloc(sizeof(float) * (size_t)n_new * model_get_config(m)->vocab);
    if (model_forward(m, kv, &b, lg, &err)) {
        fprintf(stderr, "forward (%s): %s\n", model_device_name(model_get_device(m)), err.msg);
        free(lg);
        return NULL;
    }
    return lg;
}

static void make_tokens(int32_t *t, int n, int vocab, uint32_t seed) {
    for (int i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        t[i] = (int32_t)((seed >> 8) % (uint32_t)vocab);
    }
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* Near tie: the CPU's logits of the two candidates differ by less than
 * 1e-3 of the row's largest |logit|. */
static int near_tie(const float *cpu_row, int V, int a, int b) {
    double mx = 0;
    for (int i = 0; i < V; i++) mx = fmax(mx, fabs(cpu_row[i]));
    return fabs((double)cpu_row[a] - cpu_row[b]) < 1e-3 * mx;
}

static int set_dev(sgl_model *m, model_device d) {
    if (model_set_device(m, d, &err)) {
        CHECK_MSG(0, "model_set_device(%s): %s", model_device_name(d), err.msg);
        return -1;
    }
    return 0;
}

/* Logits of n tokens on CPU and CUDA: normalised error <= tol, top-1 equal
 * on every row but near ties. */
static void compare_model(const char *what, const tm_cfg *c, int n, double tol) {
    uint64_t len;
    uint8_t *buf = tm_build(c, &len);
    sgl_model *m = tm_load(buf, len, 2, &err);
    if (!m) {
        CHECK_MSG(0, "%s: load: %s", what, err.msg);
        free(buf);
        return;
    }
    int V = model_get_config(m)->vocab;
    int32_t *toks = malloc(sizeof(int32_t) * n), *slots = malloc(sizeof(int32_t) * n);
    make_tokens(toks, n, V, 7);
    kv_pool *kc = model_kv_pool_new(m, n, &err), *kg = model_kv_pool_new(m, n, &err);
    kv_pool_alloc(kc, n, slots);
    kv_pool_alloc(kg, n, slots);
    float *lc = run1(m, kc, toks, n, 0, slots), *lgpu = NULL;
    if (set_dev(m, MODEL_DEVICE_CUDA) == 0) lgpu = run1(m, kg, toks, n, 0, slots);
    CHECK_MSG(lc && lgpu, "%s: forward failed", what);
    if (lc && lgpu) {
        double maxd = 0, maxr = 0;
        int ties = 0;
        for (int64_t i = 0; i < (int64_t)n * V; i++) {
            maxd = fmax(maxd, fabs((double)lgpu[i] - lc[i]));
            maxr = fmax(maxr, fabs(lc[i]));
        }
        for (int r = 0; r < n; r++) {
            int a = argmax(lc + (int64_t)r * V, V), b = argmax(lgpu + (int64_t)r * V, V);
            if (a == b) continue;
            if (near_tie(lc + (int64_t)r * V, V, a, b)) ties++;
            else CHECK_MSG(0, "%s: row %d: top-1 %d on the CPU, %d on CUDA", what, r, a, b);
        }
        printf("%-22s normalised error %.3g (bound %.0e), %d near-tie rows\n", what, maxd / maxr,
               tol, ties);
        CHECK_MSG(maxd / maxr <= tol, "%s: normalised error %g > %g", what, maxd / maxr, tol);
    }
    free(lc), free(lgpu), free(toks), free(slots);
    kv_pool_free(kc), kv_pool_free(kg);
    model_free(m);
    free(buf);
}

static void test_weight_types(void) {
    static const sgl_dtype wt[] = {SGL_DTYPE_Q4_0, SGL_DTYPE_Q4_1, SGL_DTYPE_Q8_0, SGL_DTYPE_F16,
                                   SGL_DTYPE_BF16, SGL_DTYPE_F32};
    for (size_t i = 0; i < SGL_ARRAY_LEN(wt); i++) {
        tm_cfg c = TM_LLAMA;
        c.wtype = wt[i];
        char what[64];
        snprintf(what, sizeof what, "llama %s", sgl_dtype_name(wt[i]));
        /* the CPU rounds activations to int16 per block for quantized types */
        compare_model(what, &c, 40, 2e-3);
    }
    /* K-quants need rows of 256: dim 256, 4 heads of 64, GQA 2 */
    static const sgl_dtype kt[] = {SGL_DTYPE_Q4_K, SGL_DTYPE_Q5_K, SGL_DTYPE_Q6_K};
    for (size_t i = 0; i < SGL_ARRAY_LEN(kt); i++) {
        tm_cfg c = {.arch = "llama", .dim = 256, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2,
                    .ffn = 512, .vocab = 96, .rope_theta = 10000.0f, .wtype = kt[i],
                    .etype = SGL_DTYPE_Q8_0, .seed = 3 + (uint64_t)i};
        char what[64];
        snprintf(what, sizeof what, "llama hd64 %s", sgl_dtype_name(kt[i]));
        compare_model(what, &c, 40, 2e-3);
    }
}

static void test_shapes(void) {
    compare_model("qwen2 (bias, neox)", &TM_QWEN2, 40, 2e-3);
    tm_cfg c = TM_LLAMA;
    c.rope_scale = 4.0f;
    c.seed = 9;
    compare_model("llama rope x4", &c, 40, 2e-3);
    /* head_dim 128, GQA 2:1, a context over two attention chunks */
    tm_cfg h = {.arch = "llama", .dim = 256, .n_layers = 2, .n_heads = 2, .n_kv_heads = 1,
                .ffn = 256, .vocab = 90, .rope_theta = 10000.0f, .wtype = SGL_DTYPE_Q8_0,
                .etype = SGL_DTYPE_F16, .seed = 4};
    compare_model("llama hd128 GQA", &h, 300, 2e-3);
    /* head_dim 64, 9:3 heads as the default model, odd length */
    tm_cfg s = {.arch = "llama", .dim = 576, .n_layers = 2, .n_heads = 9, .n_kv_heads = 3,
                .ffn = 160, .vocab = 70, .rope_theta = 100000.0f, .wtype = SGL_DTYPE_Q4_1,
                .etype = SGL_DTYPE_Q8_0, .seed = 5};
    compare_model("llama 9/3 heads", &s, 37, 2e-3);
}

/* ---- determinism on the GPU --------------------------------------------------- */

static int same(const float *a, const float *b, size_t n) {
    return a && b && memcmp(a, b, n * sizeof(float)) == 0;
}

static void test_gpu_determinism(void) {
    uint64_t len;
    uint8_t *buf = tm_build(&TM_QWEN2, &len);
    sgl_model *m = tm_load(buf, len, 2, &err);
    if (!m || set_dev(m, MODEL_DEVICE_CUDA)) {
        CHECK_MSG(m, "load: %s", err.msg);
        model_free(m);
        free(buf);
        return;
    }
    int V = model_get_config(m)->vocab;
    enum { NS = 3, T = 90 };
    int lens[NS] = {7, 1, 83};
    int32_t toks[NS][T], sa[NS][T], sb[NS][T];
    kv_pool *kv = model_kv_pool_new(m, 4 * NS * T, &err);
    float *alone[NS];
    for (int i = 0; i < NS; i++) {
        make_tokens(toks[i], lens[i], V, 100 + (uint32_t)i);
        kv_pool_alloc(kv, lens[i], sa[i]);
        kv_pool_alloc(kv, lens[i], sb[i]);
        alone[i] = run1(m, kv, toks[i], lens[i], 0, sa[i]);
    }
    /* batched, with scattered slots of their own */
    model_seq sq[NS];
    int total = 0;
    for (int i = 0; i < NS; i++) {
        sq[i] = (model_seq){.n_new = lens[i], .tokens = toks[i], .pos0 = 0, .n_ctx = lens[i],
                            .slots = sb[i], .logits_from = 0};
        total += lens[i];
    }
    model_batch b = {NS, sq};
    float *lg = malloc(sizeof(float) * (size_t)total * V);
    CHECK_MSG(model_forward(m, kv, &b, lg, &err) == 0, "%s", err.msg);
    for (int i = 0, off = 0; i < NS; off += lens[i], i++)
        CHECK_MSG(same(alone[i], lg + (int64_t)off * V, (size_t)lens[i] * V),
                  "sequence %d differs batched vs alone", i);
    /* chunked prefill (chunks of 16) and a cached prefix: the long sequence */
    int n = lens[2];
    int32_t sc[T];
    kv_pool_alloc(kv, n, sc);
    float *ch = malloc(sizeof(float) * (size_t)n * V);
    for (int p = 0; p < n; p += 16) {
        int k = n - p < 16 ? n - p : 16;
        float *part = run1(m, kv, toks[2] + p, k, p, sc);
        if (part) memcpy(ch + (int64_t)p * V, part, sizeof(float) * (size_t)k * V);
        free(part);
    }
    CHECK_MSG(same(ch, alone[2], (size_t)n * V), "chunked prefill differs from one shot");
    /* decode step == prefill row: token n-1 decoded over the chunked KV */
    float *dec = run1(m, kv, toks[2] + n - 1, 1, n - 1, sc);
    CHECK_MSG(same(dec, alone[2] + (int64_t)(n - 1) * V, (size_t)V), "decode step differs from the prefill row");
    free(dec), free(ch), free(lg);
    for (int i = 0; i < NS; i++) free(alone[i]);
    kv_pool_free(kv);
    model_free(m);
    free(buf);
}

/* ---- CUDA graphs ---------------------------------------------------------------- */

/* Greedy decoding of NG sequences in one batch on the CUDA device (graphs
 * on or off): a batched prefill, then decode steps; sequence i stops after
 * steps[i] tokens, so the batch shrinks through several graph buckets.
 * Every step's logits go to out (in order). Returns the floats written, or
 * -1. */
enum { NG = 5, G_STEPS = 14 };
static int64_t graph_run(sgl_model *m, int graphs, const int *plen, const int *steps, float *out) {
    kb_backend *be = model_get_backend(m);
    if (kb_cuda_set_graphs(be, graphs)) return -1;
    int V = model_get_config(m)->vocab;
    kv_pool *kv = model_kv_pool_new(m, 4096, &err);
    if (!kv) return -1;
    int32_t *slots[NG], *toks[NG];
    int64_t w = 0;
    model_seq sq[NG];
    float *lg = malloc(sizeof(float) * (size_t)NG * V);
    for (int i = 0; i < NG; i++) {
        int n = plen[i] + G_STEPS + 1;
        slots[i] = malloc(sizeof(int32_t) * n), toks[i] = malloc(sizeof(int32_t) * n);
        kv_pool_alloc(kv, n, slots[i]);
        make_tokens(toks[i], plen[i], V, 300 + (uint32_t)i);
        sq[i] = (model_seq){.n_new = plen[i], .tokens = toks[i], .pos0 = 0, .n_ctx = plen[i],
                            .slots = slots[i], .logits_from = plen[i] - 1};
    }
    model_batch b = {NG, sq};
    int rc = model_forward(m, kv, &b, lg, &err);
    for (int s = 0; rc == 0; s++) {
        int nb = 0;
        for (int i = 0; i < NG; i++) { /* the next token of every running sequence */
            if (s > steps[i]) continue;
            int p = plen[i] + s;
            toks[i][p] = argmax(lg + (int64_t)nb * V, V);
            nb++;
        }
        memcpy(out + w, lg, sizeof(float) * (size_t)nb * V);
        w += (int64_t)nb * V;
        nb = 0;
        for (int i = 0; i < NG; i++) {
            if (s >= steps[i]) continue;
            int p = plen[i] + s;
            sq[nb++] = (model_seq){.n_new = 1, .tokens = toks[i] + p, .pos0 = p, .n_ctx = p + 1,
                                   .slots = slots[i], .logits_from = 0};
        }
        if (!nb) break;
        b = (model_batch){nb, sq};
        rc = model_forward(m, kv, &b, lg, &err);
    }
    if (rc) fprintf(stderr, "graph_run: %s\n", err.msg);
    for (int i = 0; i < NG; i++) free(slots[i]), free(toks[i]);
    free(lg);
    kv_pool_free(kv);
    return rc ? -1 : w;
}

static void test_graphs(void) {
    uint64_t len;
    uint8_t *buf = tm_build(&TM_QWEN2, &len);
    sgl_model *m = tm_load(buf, len, 2, &err);
    if (!m || set_dev(m, MODEL_DEVICE_CUDA)) {
        CHECK_MSG(m, "load: %s", err.msg);
        model_free(m);
        free(buf);
        return;
    }
    int V = model_get_config(m)->vocab;
    /* prompts from 1 token to past an attention chunk (250 + 14 crosses 256) */
    static const int plen[NG] = {250, 3, 40, 1, 129};
    static const int steps[NG] = {G_STEPS, G_STEPS, 9, 5, 2};
    size_t cap = (size_t)NG * (G_STEPS + 1) * V;
    float *on = malloc(sizeof(float) * cap), *off = malloc(sizeof(float) * cap);
    long cap0, rep0, eag0, cap1, rep1, eag1;
    kb_cuda_graph_stats(model_get_backend(m), &cap0, &rep0, &eag0);
    int64_t n_on = graph_run(m, 1, plen, steps, on);
    kb_cuda_graph_stats(model_get_backend(m), &cap1, &rep1, &eag1);
    int64_t n_off = graph_run(m, 0, plen, steps, off);
    CHECK_MSG(n_on > 0 && n_on == n_off, "graph runs failed or differ in length (%lld, %lld)",
              (long long)n_on, (long long)n_off);
    if (n_on > 0 && n_on == n_off)
        CHECK_MSG(same(on, off, (size_t)n_on), "decode logits differ with CUDA graphs on and off");
    printf("graphs: %ld captured, %ld replayed, %ld ran without a graph\n", cap1 - cap0,
           rep1 - rep0, eag1 - eag0);
    CHECK_MSG(cap1 - cap0 >= 3, "expected a graph per batch bucket, %ld captured", cap1 - cap0);
    CHECK_MSG(rep1 - rep0 >= 1, "no graph was replayed");
    CHECK_MSG(eag1 == eag0, "%ld decode forwards fell back to plain launches", eag1 - eag0);
    kb_cuda_set_graphs(model_get_backend(m), 1);
    free(on), free(off);
    model_free(m);
    free(buf);
}

/* ---- greedy continuations --------------------------------------------------- */

/* Greedy decode of `steps` tokens after prompt on the model's current
 * device; out gets the generated ids, rows the logits of each step. */
static int greedy(sgl_model *m, const int32_t *prompt, int np, int steps, int32_t *out,
                  float *rows) {
    int V = model_get_config(m)->vocab;
    int n = np + steps;
    kv_pool *kv = model_kv_pool_new(m, n, &err);
    int32_t *slots = malloc(sizeof(int32_t) * n);
    kv_pool_alloc(kv, n, slots);
    int rc = 0;
    float *lg = run1(m, kv, prompt, np, 0, slots);
    for (int s = 0; s < steps && lg; s++) {
        const float *last = lg + (int64_t)(s == 0 ? np - 1 : 0) * V;
        memcpy(rows + (int64_t)s * V, last, sizeof(float) * V);
        out[s] = argmax(last, V);
        free(lg);
        lg = s + 1 < steps ? run1(m, kv, &out[s], 1, np + s, slots) : NULL;
        if (!lg && s + 1 < steps) rc = -1;
    }
    free(lg);
    free(slots);
    kv_pool_free(kv);
    return rc;
}

/* Greedy continuations of the prompts equal on both devices; a first
 * difference at a CPU near tie is reported, not failed. */
static void compare_greedy(sgl_model *m, const char *what, int32_t **prompts, const int *lens,
                           int n_prompts, int steps) {
    int V = model_get_config(m)->vocab;
    int32_t *oc = malloc(sizeof(int32_t) * steps), *og = malloc(sizeof(int32_t) * steps);
    float *rc = malloc(sizeof(float) * (size_t)steps * V), *rg = malloc(sizeof(float) * (size_t)steps * V);
    int equal = 0, ties = 0;
    for (int p = 0; p < n_prompts; p++) {
        if (set_dev(m, MODEL_DEVICE_CPU) || greedy(m, prompts[p], lens[p], steps, oc, rc) ||
            set_dev(m, MODEL_DEVICE_CUDA) || greedy(m, prompts[p], lens[p], steps, og, rg)) {
            CHECK_MSG(0, "%s: prompt %d: forward failed", what, p);
            continue;
        }
        int s = 0;
        while (s < steps && oc[s] == og[s]) s++;
        if (s == steps) equal++;
        else if (near_tie(rc + (int64_t)s * V, V, oc[s], og[s])) ties++;
        else CHECK_MSG(0, "%s: prompt %d: step %d: %d on the CPU, %d on CUDA", what, p, s, oc[s], og[s]);
    }
    printf("%s: %d of %d greedy continuations equal, %d parted at a near tie\n", what, equal,
           n_prompts, ties);
    free(oc), free(og), free(rc), free(rg);
}

static int n_tiny;
static char **tiny_paths;

static void test_tiny_greedy(void) {
    for (int f = 0; f < n_tiny; f++) {
        sgl_model *m = model_load(tiny_paths[f], 2, &err);
        if (!m) {
            CHECK_MSG(0, "%s: %s", tiny_paths[f], err.msg);
            continue;
        }
        int V = model_get_config(m)->vocab;
        enum { NP = 4 };
        int32_t p[NP][40], *pp[NP];
        int lens[NP] = {1, 5, 17, 40};
        for (int i = 0; i < NP; i++) make_tokens(p[i], lens[i], V, 31 + (uint32_t)i), pp[i] = p[i];
        compare_greedy(m, tiny_paths[f], pp, lens, NP, 20);
        model_free(m);
    }
}

static const char *real_prompts[20] = {
    "The capital of France is", "The three primary colors are", "def fibonacci(n):\n",
    "Once upon a time", "Water boils at", "The largest planet in the solar system is",
    "Translate to French: 'Good morning'\nFrench:", "1, 2, 3, 4, 5,", "import numpy as np\n",
    "The opposite of hot is", "Q: What is 2 + 2?\nA:", "My favourite fruit is",
    "The quick brown fox", "In 1969, humans", "Photosynthesis is the process",
    "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n", "SELECT * FROM",
    "The speed of light is", "A haiku about autumn:\n", "Dear Sir or Madam,",
};

static void test_default_model_greedy(void) {
    const char *path = getenv("SGL_TEST_MODEL");
    if (!path || access(path, R_OK) != 0) {
        printf("default model not found (SGL_TEST_MODEL): greedy check skipped\n");
        return;
    }
    sgl_model *m = model_load(path, 0, &err);
    if (!m) {
        CHECK_MSG(0, "%s: %s", path, err.msg);
        return;
    }
    sgl_tokenizer *tok = tok_load_gguf(model_get_gguf(m), &err);
    CHECK_MSG(tok, "tokenizer: %s", err.msg);
    int32_t *pp[20] = {0};
    int lens[20];
    for (int i = 0; i < 20 && tok; i++) {
        size_t n = 0;
        if (tok_encode(tok, real_prompts[i], strlen(real_prompts[i]), true, &pp[i], &n, &err) ||
            n < 1) {
            free(pp[i]);
            pp[i] = malloc(sizeof(int32_t));
            pp[i][0] = 1;
            n = 1;
        }
        lens[i] = (int)n;
    }
    if (tok) {
        compare_greedy(m, "default model", pp, lens, 20, 20);
        for (int i = 0; i < 20; i++) free(pp[i]);
        tok_free(tok);
    }
    model_free(m);
}

int main(int argc, char **argv) {
    if (kcuda_device_count() <= 0) TEST_SKIP_ALL("no CUDA device on this machine");
    if (!model_device_available(MODEL_DEVICE_CUDA, &err)) TEST_SKIP_ALL("%s", err.msg);
    n_tiny = argc - 1;
    tiny_paths = argv + 1;
    TEST_RUN(test_weight_types);
    TEST_RUN(test_shapes);
    TEST_RUN(test_gpu_determinism);
    TEST_RUN(test_graphs);
    TEST_RUN(test_tiny_greedy);
    TEST_RUN(test_default_model_greedy);
    return TEST_DONE();
}
