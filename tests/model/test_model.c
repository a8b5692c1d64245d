/* test_model: model_load and model_forward on small in-memory models:
 * the loader's checks, agreement with a plain float reference forward, and
 * the determinism properties the radix cache and scheduler rely on
 * (batched == alone, chunked prefill == one shot, cached prefix == recompute,
 * decode step == prefill row, thread count and slot placement irrelevant),
 * all bit-identical. */
#include "tests/test.h"

#include "tests/model/test_model_common.h"

static sgl_error err;

/* Runs one sequence of tokens[0..n_new) at pos0 over slots[0..pos0+n_new),
 * asking logits for every new token; returns malloc'd [n_new][vocab]. */
static float *run1(sgl_model *m, kv_pool *kv, const int32_t *tokens, int n_new, int pos0,
                   const int32_t *slots) {
    model_seq s = {.n_new = n_new, .tokens = tokens, .pos0 = pos0, .n_ctx = pos0 + n_new,
                   .slots = slots, .logits_from = 0};
    model_batch b = {1, &s};
    float *lg = malloc(sizeof(float) * (size_t)n_new * model_get_config(m)->vocab);
    if (model_forward(m, kv, &b, lg, &err)) {
        fprintf(stderr, "forward: %s\n", err.msg);
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

static int same(const float *a, const float *b, size_t n) {
    return a && b && memcmp(a, b, n * sizeof(float)) == 0;
}

/* 1 if the K and V rows at slots a[0..n) and b[0..n) are the same bits in
 * every layer. */
static int kv_rows_same(const kv_pool *kv, const int32_t *a, const int32_t *b, int n) {
    size_t bytes = sizeof(uint16_t) * (size_t)kv->kv_dim;
    for (int t = 0; t < n; t++)
        for (int l = 0; l < kv->n_layers; l++)
            if (memcmp(kv_pool_k(kv, l, a[t]), kv_pool_k(kv, l, b[t]), bytes) ||
                memcmp(kv_pool_v(kv, l, a[t]), kv_pool_v(kv, l, b[t]), bytes))
                return 0;
    return 1;
}

/* ---- loader ------------------------------------------------------------------- */

static void test_load_config(void) {
    uint64_t len;
    uint8_t *buf = tm_build(&TM_LLAMA, &len);
    sgl_model *m = tm_load(buf, len, 1, &err);
    CHECK_MSG(m, "load: %s", err.msg);
    if (m) {
        const model_config *c = model_get_config(m);
        CHECK_INT(c->arch, MODEL_ARCH_LLAMA);
        CHECK_INT(c->n_layers, 2);
        CHECK_INT(c->dim, 64);
        CHECK_INT(c->head_dim, 16);
        CHECK_INT(c->kv_dim, 32);
        CHECK_INT(c->vocab, 80);
        CHECK_INT(c->rope_dim, 16);
        CHECK(!c->rope_neox);
        CHECK(c->tied_output);
        CHECK(model_get_weights(m)->output.data == model_get_weights(m)->token_embd.data);
        CHECK(model_get_weights(m)->layers[1].bq == NULL);
        CHECK_INT(model_get_weights(m)->layers[0].wq.type, SGL_DTYPE_Q4_1);
    }
    model_free(m);
    free(buf);
    buf = tm_build(&TM_QWEN2, &len);
    m = tm_load(buf, len, 1, &err);
    CHECK_MSG(m, "load: %s", err.msg);
    if (m) {
        const model_config *c = model_get_config(m);
        CHECK_INT(c->arch, MODEL_ARCH_QWEN2);
        CHECK(c->rope_neox);
        CHECK_INT(c->rope_dim, 16);
        CHECK_INT(c->head_dim, 32);
        CHECK_INT(c->kv_dim, 32);
        CHECK(!c->tied_output);
        CHECK(model_get_weights(m)->layers[1].bk != NULL);
    }
    model_free(m);
    free(buf);
}

static void expect_load_error(const tm_cfg *c, const char *needle) {
    uint64_t len;
    uint8_t *buf = tm_build(c, &len);
    memset(&err, 0, sizeof err);
    sgl_model *m = tm_load(buf, len, 1, &err);
    CHECK_MSG(!m, "expected a load error containing '%s'", needle);
    CHECK_MSG(strstr(err.msg, needle), "error '%s' lacks '%s'", err.msg, needle);
    model_free(m);
    free(buf);
}

static void test_load_errors(void) {
    tm_cfg c = TM_LLAMA;
    c.omit = "blk.1.ffn_up.weight";
    expect_load_error(&c, "missing tensor 'blk.1.ffn_up.weight'");
    c = TM_LLAMA;
    c.misshape = "blk.0.attn_k.weight";
    expect_load_error(&c, "tensor 'blk.0.attn_k.weight' has shape [64, 33], expected [64, 32]");
    c = TM_QWEN2;
    c.omit = "blk.0.attn_v.bias";
    expect_load_error(&c, "missing tensor 'blk.0.attn_v.bias'");
    c = TM_LLAMA;
    c.arch = "gpt2";
    expect_load_error(&c, "unsupported architecture 'gpt2'");
    c = TM_LLAMA;
    c.wtype = SGL_DTYPE_Q8_1; /* no kernels for it */
    if (!kern_type_supported(SGL_DTYPE_Q8_1)) expect_load_error(&c, "which the kernels do not support");
}

static void test_forward_errors(void) {
    uint64_t len;
    uint8_t *buf = tm_build(&TM_LLAMA, &len);
    sgl_model *m = tm_load(buf, len, 1, &err);
    if (!m) {
        CHECK_MSG(0, "load: %s", err.msg);
        free(buf);
        return;
    }
    kv_pool *kv = model_kv_pool_new(m, 16, &err);
    int32_t slots[4];
    CHECK(kv_pool_alloc(kv, 3, slots) == 0);
    int32_t toks[3] = {1, 2, 3};
    float lg[80 * 3];
    model_seq s = {.n_new = 3, .tokens = toks, .pos0 = 0, .n_ctx = 4, .slots = slots,
                   .logits_from = 2};
    model_batch b = {1, &s};
    CHECK(model_forward(m, kv, &b, lg, &err) == -1 && strstr(err.msg, "invalid descriptor"));
    s.n_ctx = 3;
    toks[1] = 80;
    CHECK(model_forward(m, kv, &b, lg, &err) == -1 && strstr(err.msg, "out of range"));
    toks[1] = 5;
    slots[3] = 7; /* not allocated */
    s.n_new = 4, s.n_ctx = 4;
    int32_t toks4[4] = {1, 2, 3, 4};
    s.tokens = toks4;
    CHECK(model_forward(m, kv, &b, lg, &err) == -1 && strstr(err.msg, "not allocated"));
    s.n_new = 3, s.n_ctx = 3, s.tokens = toks;
    CHECK(model_forward(m, kv, &b, NULL, &err) == -1 && strstr(err.msg, "no buffer"));
    kv_pool *bad = kv_pool_new(16, 2, 16, &err);
    CHECK(model_forward(m, bad, &b, lg, &err) == -1 && strstr(err.msg, "does not match"));
    kv_pool_free(bad);
    CHECK_MSG(model_forward(m, kv, &b, lg, &err) == 0, "%s", err.msg);
    CHECK_INT(model_batch_logit_rows(&b), 1);
    kv_pool_free(kv);
    model_free(m);
    free(buf);
}

/* ---- reference agreement -------------------------------------------------------------- */

static void check_reference(const tm_cfg *cfg, int n) {
    uint64_t len;
    uint8_t *buf = tm_build(cfg, &len);
    sgl_model *m = tm_load(buf, len, 2, &err);
    if (!m) {
        CHECK_MSG(0, "load: %s", err.msg);
        free(buf);
        return;
    }
    int V = model_get_config(m)->vocab;
    kv_pool *kv = model_kv_pool_new(m, n, &err);
    int32_t *slots = malloc(sizeof(int32_t) * n), *toks = malloc(sizeof(int32_t) * n);
    kv_pool_alloc(kv, n, slots);
    make_tokens(toks, n, V, 7);
    float *lg = run1(m, kv, toks, n, 0, slots);
    float *ref = ref_forward(m, toks, n);
    /* Normalised error: max |ours - ref| / max |ref| over all rows. The
     * kernels quantize activations to 8 bits for quantized weights and K/V
     * are stored as f16, so ~1e-2 is expected; 3e-2 leaves margin while still
     * catching any wrong wiring (rope pairing, GQA mapping, bias, norm),
     * which produces errors of order 1. */
    double maxd = 0, maxr = 0;
    int argmax_agree = 0;
    for (int t = 0; t < n && lg; t++) {
        int a = 0, r = 0;
        for (int i = 0; i < V; i++) {
            double d = fabs((double)lg[t * V + i] - ref[t * V + i]);
            if (d > maxd) maxd = d;
            if (fabs(ref[t * V + i]) > maxr) maxr = fabs(ref[t * V + i]);
            if (lg[t * V + i] > lg[t * V + a]) a = i;
            if (ref[t * V + i] > ref[t * V + r]) r = i;
        }
        argmax_agree += a == r;
    }
    double nerr = maxd / (maxr > 0 ? maxr : 1);
    printf("%s reference: %d positions, max |diff| %.4g, max |ref| %.4g, normalised %.4g, "
           "argmax agree %d/%d\n",
           cfg->arch, n, maxd, maxr, nerr, argmax_agree, n);
    CHECK(lg != NULL);
    CHECK_MSG(nerr <= 3e-2, "normalised error %g > 3e-2", nerr);
    CHECK_MSG(argmax_agree >= n * 9 / 10, "argmax agrees on only %d/%d rows", argmax_agree, n);
    free(lg);
    free(ref);
    free(slots);
    free(toks);
    kv_pool_free(kv);
    model_free(m);
    free(buf);
}

static void test_reference_llama(void) { check_reference(&TM_LLAMA, 40); }

/* head_dim 20: not a multiple of 8, so attention takes its plain K/V gather
 * (F16 weights: rows of 80 are no whole number of quant blocks). */
static const tm_cfg TM_ODD = {
    .arch = "llama", .dim = 80, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .ffn = 96,
    .vocab = 70, .rope_theta = 10000.0f, .wtype = SGL_DTYPE_F16, .etype = SGL_DTYPE_F16,
    .seed = 5};

static void test_reference_odd_head(void) { check_reference(&TM_ODD, 30); }

static void test_reference_rope_scaling(void) {
    tm_cfg c = TM_LLAMA;
    c.rope_scale = 4.0f;
    c.seed = 9;
    uint64_t len;
    uint8_t *buf = tm_build(&c, &len);
    sgl_model *m = tm_load(buf, len, 1, &err);
    CHECK_MSG(m, "load: %s", err.msg);
    if (m) {
        CHECK_INT(model_get_config(m)->rope_scaling, MODEL_ROPE_SCALING_LINEAR);
        CHECK_NEAR(model_get_config(m)->rope_freq_scale, 0.25, 1e-7);
    }
    model_free(m);
    free(buf);
    check_reference(&c, 40);
}
static void test_reference_qwen2(void) { check_reference(&TM_QWEN2, 40); }

static void test_reference_f32(void) {
    /* Unquantized weights: only f16 K/V and summation order separate us from
     * the reference, so the bound is much tighter. */
    tm_cfg c = TM_LLAMA;
    c.wtype = SGL_DTYPE_F32;
    c.etype = SGL_DTYPE_F32;
    uint64_t len;
    uint8_t *buf = tm_build(&c, &len);
    sgl_model *m = tm_load(buf, len, 2, &err);
    if (!m) {
        CHECK_MSG(0, "load: %s", err.msg);
        free(buf);
        return;
    }
    int n = 24, V = c.vocab;
    kv_pool *kv = model_kv_pool_new(m, n, &err);
    int32_t slots[24], toks[24];
    kv_pool_alloc(kv, n, slots);
    make_tokens(toks, n, V, 11);
    float *lg = run1(m, kv, toks, n, 0, slots);
    float *ref = ref_forward(m, toks, n);
    double maxd = 0, maxr = 0;
    for (int i = 0; i < n * V && lg; i++) {
        maxd = fmax(maxd, fabs((double)lg[i] - ref[i]));
        maxr = fmax(maxr, fabs(ref[i]));
    }
    printf("f32 reference: max |diff| %.4g, normalised %.4g\n", maxd, maxd / maxr);
    CHECK(lg != NULL);
    CHECK_MSG(maxd / maxr <= 5e-3, "normalised error %g > 5e-3", maxd / maxr);
    free(lg);
    free(ref);
    kv_pool_free(kv);
    model_free(m);
    free(buf);
}

/* ---- determinism ------------------------------------------------------------------ */

typedef struct fixture {
    uint8_t *buf;
    sgl_model *m;
    int V;
} fixture;

static int fx_open(fixture *f, const tm_cfg *c, int threads) {
    uint64_t len;
    f->buf = tm_build(c, &len);
    f->m = tm_load(f->buf, len, threads, &err);
    if (!f->m) {
        CHECK_MSG(0, "load: %s", err.msg);
        free(f->buf);
        return -1;
    }
    f->V = model_get_config(f->m)->vocab;
    return 0;
}

static void fx_close(fixture *f) {
    model_free(f->m);
    free(f->buf);
}

/* Three sequences alone vs batched together (all rows of logits). */
static void check_batch_vs_alone(const tm_cfg *c) {
    fixture f;
    if (fx_open(&f, c, 2)) return;
    enum { NS = 3 };
    int lens[NS] = {7, 1, 33};
    int total = 0;
    for (int i = 0; i < NS; i++) total += lens[i];
    kv_pool *kv = model_kv_pool_new(f.m, 2 * total, &err);
    int32_t toks[NS][40], slots_a[NS][40], slots_b[NS][40];
    float *alone[NS];
    for (int i = 0; i < NS; i++) {
        make_tokens(toks[i], lens[i], f.V, 100 + i);
        kv_pool_alloc(kv, lens[i], slots_a[i]);
        alone[i] = run1(f.m, kv, toks[i], lens[i], 0, slots_a[i]);
    }
    model_seq seqs[NS];
    for (int i = 0; i < NS; i++) {
        kv_pool_alloc(kv, lens[i], slots_b[i]);
        seqs[i] = (model_seq){.n_new = lens[i], .tokens = toks[i], .pos0 = 0, .n_ctx = lens[i],
                              .slots = slots_b[i], .logits_from = 0};
    }
    model_batch b = {NS, seqs};
    float *lg = malloc(sizeof(float) * total * f.V);
    CHECK_MSG(model_forward(f.m, kv, &b, lg, &err) == 0, "%s", err.msg);
    int row = 0;
    for (int i = 0; i < NS; i++) {
        CHECK_MSG(same(alone[i], lg + (size_t)row * f.V, (size_t)lens[i] * f.V),
                  "%s seq %d: batched logits differ from alone", c->arch, i);
        row += lens[i];
        free(alone[i]);
    }
    /* K/V written by both runs must match too (same tokens, same positions). */
    int kv_same = 1;
    for (int i = 0; i < NS; i++) kv_same &= kv_rows_same(kv, slots_a[i], slots_b[i], lens[i]);
    CHECK_MSG(kv_same, "%s: K/V of batched run differ", c->arch);
    free(lg);
    kv_pool_free(kv);
    fx_close(&f);
}

static void test_batch_vs_alone(void) {
    check_batch_vs_alone(&TM_LLAMA);
    check_batch_vs_alone(&TM_QWEN2);
}

/* 150 tokens in one shot vs chunks of 5 + 61 + 84, each chunk attending to
 * the K/V the previous chunks left in the pool; the chunked run uses
 * shuffled, non-contiguous slots. The lengths cross the attention work-item
 * boundaries (64 new tokens) at different places in the two runs. */
static void check_chunked(const tm_cfg *c) {
    fixture f;
    if (fx_open(&f, c, 2)) return;
    enum { N = 150 };
    int32_t toks[N], s1[N], s2[N], pool_ids[2 * N];
    make_tokens(toks, N, f.V, 5);
    kv_pool *kv = model_kv_pool_new(f.m, 2 * N, &err);
    kv_pool_alloc(kv, 2 * N, pool_ids);
    for (int i = 0; i < N; i++) {
        s1[i] = pool_ids[i];
        s2[i] = pool_ids[2 * N - 1 - ((i * 7) % N)]; /* permuted upper half */
    }
    float *one = run1(f.m, kv, toks, N, 0, s1);
    int chunks[3] = {5, 61, 84}, pos = 0;
    for (int k = 0; k < 3; k++) {
        float *lg = run1(f.m, kv, toks + pos, chunks[k], pos, s2);
        CHECK_MSG(same(lg, one + (size_t)pos * f.V, (size_t)chunks[k] * f.V),
                  "%s chunk %d (pos %d): logits differ from the one-shot prefill", c->arch, k, pos);
        free(lg);
        pos += chunks[k];
    }
    free(one);
    kv_pool_free(kv);
    fx_close(&f);
}

static void test_chunked_prefill(void) {
    check_chunked(&TM_LLAMA);
    check_chunked(&TM_QWEN2);
    check_chunked(&TM_ODD);
}

/* A batch of more new tokens than one forward runs (512) goes as
 * sub-batches, one sequence split across two of them: every logits row and
 * every K/V row equals the sequence run alone. Lengths 250 + 250 + 100 with
 * logits from row 240, 0 and 60: the first sub-batch ends 12 tokens into
 * the third sequence, before its logits start. */
static void check_split(const tm_cfg *c) {
    fixture f;
    if (fx_open(&f, c, 2)) return;
    enum { NS = 3 };
    const int lens[NS] = {250, 250, 100}, from[NS] = {240, 0, 60};
    int total = 0, rows = 0;
    for (int i = 0; i < NS; i++) total += lens[i], rows += lens[i] - from[i];
    kv_pool *kv = model_kv_pool_new(f.m, 2 * total, &err);
    int32_t toks[NS][250], sa[NS][250], sb[NS][250];
    float *alone[NS];
    model_seq seqs[NS];
    for (int i = 0; i < NS; i++) {
        make_tokens(toks[i], lens[i], f.V, 300 + i);
        kv_pool_alloc(kv, lens[i], sa[i]);
        kv_pool_alloc(kv, lens[i], sb[i]);
        alone[i] = run1(f.m, kv, toks[i], lens[i], 0, sa[i]);
        seqs[i] = (model_seq){.n_new = lens[i], .tokens = toks[i], .pos0 = 0, .n_ctx = lens[i],
                              .slots = sb[i], .logits_from = from[i]};
    }
    model_batch b = {NS, seqs};
    CHECK_INT(model_batch_logit_rows(&b), rows);
    float *lg = malloc(sizeof(float) * (size_t)rows * f.V);
    CHECK_MSG(model_forward(f.m, kv, &b, lg, &err) == 0, "%s", err.msg);
    int r = 0, kv_same = 1;
    for (int i = 0; i < NS; i++) {
        int k = lens[i] - from[i];
        CHECK_MSG(same(lg + (size_t)r * f.V, alone[i] + (size_t)from[i] * f.V, (size_t)k * f.V),
                  "%s seq %d: logits of the split batch differ from the sequence alone", c->arch, i);
        r += k;
        kv_same &= kv_rows_same(kv, sa[i], sb[i], lens[i]);
        free(alone[i]);
    }
    CHECK_MSG(kv_same, "%s: K/V of the split batch differ", c->arch);
    free(lg);
    kv_pool_free(kv);
    fx_close(&f);
}

static void test_split_batch(void) {
    check_split(&TM_LLAMA);
    check_split(&TM_QWEN2);
}

/* Prefix P cached by an earlier call, then two continuations sharing its
 * slots (a fork), run together in one batch with a third, unrelated prefill:
 * each equals the full recompute of its whole sequence. */
static void check_cached_prefix(const tm_cfg *c) {
    fixture f;
    if (fx_open(&f, c, 2)) return;
    enum { NP = 20, NA = 9, NB = 1, NC = 12 };
    int32_t full_a[NP + NA], full_b[NP + NB], tc[NC];
    make_tokens(full_a, NP + NA, f.V, 21);
    memcpy(full_b, full_a, sizeof(int32_t) * NP);
    make_tokens(full_b + NP, NB, f.V, 22);
    make_tokens(tc, NC, f.V, 23);
    kv_pool *kv = model_kv_pool_new(f.m, 200, &err);
    /* full recomputes */
    int32_t ra[NP + NA], rb[NP + NB], rc[NC];
    kv_pool_alloc(kv, NP + NA, ra);
    kv_pool_alloc(kv, NP + NB, rb);
    kv_pool_alloc(kv, NC, rc);
    float *fa = run1(f.m, kv, full_a, NP + NA, 0, ra);
    float *fb = run1(f.m, kv, full_b, NP + NB, 0, rb);
    float *fc = run1(f.m, kv, tc, NC, 0, rc);
    /* cached prefix */
    int32_t sa[NP + NA], sb[NP + NB], sc[NC];
    kv_pool_alloc(kv, NP, sa);
    float *fp = run1(f.m, kv, full_a, NP, 0, sa);
    CHECK(same(fp, fa, (size_t)NP * f.V));
    memcpy(sb, sa, sizeof(int32_t) * NP);
    kv_pool_alloc(kv, NA, sa + NP);
    kv_pool_alloc(kv, NB, sb + NP);
    kv_pool_alloc(kv, NC, sc);
    model_seq seqs[3] = {
        {.n_new = NB, .tokens = full_b + NP, .pos0 = NP, .n_ctx = NP + NB, .slots = sb, .logits_from = 0},
        {.n_new = NC, .tokens = tc, .pos0 = 0, .n_ctx = NC, .slots = sc, .logits_from = NC - 1},
        {.n_new = NA, .tokens = full_a + NP, .pos0 = NP, .n_ctx = NP + NA, .slots = sa, .logits_from = 3},
    };
    model_batch b = {3, seqs};
    int64_t rows = model_batch_logit_rows(&b);
    CHECK_INT(rows, NB + 1 + (NA - 3));
    float *lg = malloc(sizeof(float) * (size_t)rows * f.V);
    CHECK_MSG(model_forward(f.m, kv, &b, lg, &err) == 0, "%s", err.msg);
    CHECK_MSG(same(lg, fb + (size_t)NP * f.V, f.V), "%s: fork B differs", c->arch);
    CHECK_MSG(same(lg + f.V, fc + (size_t)(NC - 1) * f.V, f.V), "%s: prefill C differs", c->arch);
    CHECK_MSG(same(lg + 2 * f.V, fa + (size_t)(NP + 3) * f.V, (size_t)(NA - 3) * f.V),
              "%s: continuation A differs", c->arch);
    free(lg), free(fa), free(fb), free(fc), free(fp);
    kv_pool_free(kv);
    fx_close(&f);
}

static void test_cached_prefix(void) {
    check_cached_prefix(&TM_LLAMA);
    check_cached_prefix(&TM_QWEN2);
}

/* Prefill 10 tokens, then decode 8 steps one token at a time (two sequences
 * decoded together in one batch): every step equals the corresponding row of
 * a one-shot prefill of the whole sequence. */
static void test_decode_vs_prefill(void) {
    fixture f;
    if (fx_open(&f, &TM_LLAMA, 2)) return;
    enum { NP = 10, ND = 8, N = NP + ND };
    int32_t ta[N], tb[N];
    make_tokens(ta, N, f.V, 31);
    make_tokens(tb, N, f.V, 32);
    kv_pool *kv = model_kv_pool_new(f.m, 4 * N, &err);
    int32_t fa_s[N], fb_s[N], sa[N], sb[N];
    kv_pool_alloc(kv, N, fa_s);
    kv_pool_alloc(kv, N, fb_s);
    float *fa = run1(f.m, kv, ta, N, 0, fa_s);
    float *fb = run1(f.m, kv, tb, N, 0, fb_s);
    kv_pool_alloc(kv, NP, sa);
    kv_pool_alloc(kv, NP, sb);
    float *pa = run1(f.m, kv, ta, NP, 0, sa);
    float *pb = run1(f.m, kv, tb, NP, 0, sb);
    CHECK(same(pa, fa, (size_t)NP * f.V) && same(pb, fb, (size_t)NP * f.V));
    int ok = 1;
    float *lg = malloc(sizeof(float) * 2 * f.V);
    for (int p = NP; p < N; p++) {
        kv_pool_alloc(kv, 1, sa + p);
        kv_pool_alloc(kv, 1, sb + p);
        model_seq seqs[2] = {
            {.n_new = 1, .tokens = ta + p, .pos0 = p, .n_ctx = p + 1, .slots = sa, .logits_from = 0},
            {.n_new = 1, .tokens = tb + p, .pos0 = p, .n_ctx = p + 1, .slots = sb, .logits_from = 0},
        };
        model_batch b = {2, seqs};
        ok &= model_forward(f.m, kv, &b, lg, &err) == 0;
        ok &= same(lg, fa + (size_t)p * f.V, f.V) && same(lg + f.V, fb + (size_t)p * f.V, f.V);
    }
    CHECK_MSG(ok, "decode steps differ from the prefill rows");
    free(lg), free(fa), free(fb), free(pa), free(pb);
    kv_pool_free(kv);
    fx_close(&f);
}

/* 1 thread vs 3 threads: the same logits. */
static void test_threads(void) {
    fixture f1, f3;
    if (fx_open(&f1, &TM_QWEN2, 1)) return;
    if (fx_open(&f3, &TM_QWEN2, 3)) {
        fx_close(&f1);
        return;
    }
    enum { N = 37 };
    int32_t toks[N], s[N];
    make_tokens(toks, N, f1.V, 41);
    kv_pool *k1 = model_kv_pool_new(f1.m, N, &err), *k3 = model_kv_pool_new(f3.m, N, &err);
    kv_pool_alloc(k1, N, s);
    kv_pool_alloc(k3, N, s);
    float *a = run1(f1.m, k1, toks, N, 0, s), *b = run1(f3.m, k3, toks, N, 0, s);
    CHECK_MSG(same(a, b, (size_t)N * f1.V), "1 vs 3 threads differ");
    free(a), free(b);
    kv_pool_free(k1), kv_pool_free(k3);
    fx_close(&f1), fx_close(&f3);
}

int main(void) {
    TEST_RUN(test_load_config);
    TEST_RUN(test_load_errors);
    TEST_RUN(test_forward_errors);
    TEST_RUN(test_reference_llama);
    TEST_RUN(test_reference_qwen2);
    TEST_RUN(test_reference_rope_scaling);
    TEST_RUN(test_reference_odd_head);
    TEST_RUN(test_reference_f32);
    TEST_RUN(test_batch_vs_alone);
    TEST_RUN(test_chunked_prefill);
    TEST_RUN(test_split_batch);
    TEST_RUN(test_cached_prefix);
    TEST_RUN(test_decode_vs_prefill);
    TEST_RUN(test_threads);
    return TEST_DONE();
}
