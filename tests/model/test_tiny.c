/* test_tiny: model_load on the project's tiny model files (tests/tools,
 * written by sgl-mktiny): config as tiny_model.h states, forward against the
 * plain float reference, and a cached-prefix continuation bit-identical to
 * the one-shot run. argv[1..]: GGUF paths. */
#include "tests/test.h"

#include "tests/model/test_model_common.h"
#include "tests/tools/tiny_model.h"

static const char *path;

static void test_tiny_file(void) {
    sgl_error err;
    sgl_model *m = model_load(path, 2, &err);
    CHECK_MSG(m, "%s", err.msg);
    if (!m) return;
    const model_config *c = model_get_config(m);
    CHECK_INT(c->n_layers, TINY_N_LAYER);
    CHECK_INT(c->dim, TINY_N_EMBD);
    CHECK_INT(c->n_heads, TINY_N_HEAD);
    CHECK_INT(c->n_kv_heads, TINY_N_HEAD_KV);
    CHECK_INT(c->head_dim, TINY_HEAD_DIM);
    CHECK_INT(c->ffn_dim, TINY_N_FF);
    CHECK_INT(c->vocab, TINY_N_VOCAB);
    enum { N = 30, NP = 12 };
    int32_t toks[N], s1[N], s2[N];
    for (int i = 0; i < N; i++) toks[i] = (int32_t)((i * 37 + 5) % TINY_N_VOCAB);
    kv_pool *kv = model_kv_pool_new(m, 2 * N, &err);
    kv_pool_alloc(kv, N, s1);
    kv_pool_alloc(kv, N, s2);
    int V = c->vocab;
    float *one = malloc(sizeof(float) * N * V), *two = malloc(sizeof(float) * N * V);
    model_seq s = {.n_new = N, .tokens = toks, .pos0 = 0, .n_ctx = N, .slots = s1, .logits_from = 0};
    model_batch b = {1, &s};
    CHECK(model_forward(m, kv, &b, one, &err) == 0);
    s = (model_seq){.n_new = NP, .tokens = toks, .pos0 = 0, .n_ctx = NP, .slots = s2, .logits_from = 0};
    CHECK(model_forward(m, kv, &b, two, &err) == 0);
    s = (model_seq){.n_new = N - NP, .tokens = toks + NP, .pos0 = NP, .n_ctx = N, .slots = s2,
                    .logits_from = 0};
    CHECK(model_forward(m, kv, &b, two + NP * V, &err) == 0);
    CHECK_MSG(memcmp(one, two, sizeof(float) * N * V) == 0, "cached prefix differs");
    float *ref = ref_forward(m, toks, N);
    double maxd = 0, maxr = 0;
    for (int i = 0; i < N * V; i++) {
        maxd = fmax(maxd, fabs((double)one[i] - ref[i]));
        maxr = fmax(maxr, fabs(ref[i]));
    }
    printf("%s: max |diff| vs reference %.4g (max |ref| %.4g)\n", path, maxd, maxr);
    CHECK_MSG(maxd <= 3e-2 * maxr, "normalised error %g", maxd / maxr);
    free(one), free(two), free(ref);
    kv_pool_free(kv);
    model_free(m);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        path = argv[i];
        TEST_RUN(test_tiny_file);
    }
    return TEST_DONE();
}
