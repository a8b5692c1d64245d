/* test_parity: model_forward on the real default model against llama.cpp.
 *
 * tests/model/logits_fixture.json (written by gen_logits_fixture.py with
 * llama-cpp-python) holds, for 22 prompts (chat-formatted and plain), the
 * prompt's token ids, llama.cpp's greedy 16-token continuation and the top-5
 * (id, logit) at every step. We feed the same ids, so the tokenizer is not
 * involved, and check:
 *
 *  1. teacher-forced (prompt + reference continuation in one prefill): at
 *     every step our logits of the reference's top-5 tokens are within
 *     LOGIT_TOL of llama.cpp's, and our argmax is the reference's token
 *     unless the reference's own top-2 margin is below NEAR_TIE;
 *  2. free-running greedy decoding (prefill, then one decode step per token)
 *     reproduces the reference continuation, again up to a step where the
 *     reference is a near-tie (after which the texts may legitimately part);
 *  3. on the weights dequantized to F32, free-running greedy decoding gives
 *     the same 16-token continuation as llama.cpp's own greedy run on those
 *     weights ("f32_continuation") for at least 20 prompts, with the top-5
 *     logits of every step within F32_TOL;
 *  4. the fast path on the Q4_1 file itself (16-bit activations) reproduces
 *     those same F32 greedy continuations within Q16_TOL = F32_TOL: only
 *     the 16-bit rounding of activations and f16 K/V separate the two.
 *
 Two tolerances, because the two engines round differently on the way:
 *
 *  - F32_TOL = 0.05, the tight check of the forward itself: every tensor is
 *    dequantized to F32 into an in-memory GGUF and compared with llama.cpp
 *    run on the same dequantized weights ("f32_steps" of the fixture). Then
 *    only K/V (f16 in both), llama.cpp's f16 rounding of Q and of the
 *    attention weights, and summation order differ; measured max |diff| is
 *    about 0.01 on logits of magnitude ~25. A wrong rope pairing, norm, GQA
 *    mapping or attention scale moves logits by whole units.
 *  - Q_TOL = 1.5 (max) and Q_MEAN_TOL = 0.3 (mean) for the quantized model
 *    on the fast kernels against llama.cpp on the same Q4_1 file. Both
 *    quantize activations to 8 bits before the Q4_1 / Q8_0 dot products, but
 *    llama.cpp stores the block scales as f16 and rounds Q and the attention
 *    weights to f16; this 135M model is sensitive to that noise: the float
 *    forward differs from either quantized engine by ~0.5 at the same
 *    positions, and the two engines differ by 0.18 on average, 1.3 at worst
 *    (late steps of long contexts). Greedy tokens are compared exactly
 *    except where llama.cpp's own top-2 margin is below NEAR_TIE.
 * Suite 'e2e': skipped (77) when the model file is missing unless CI=true.
 * Regenerate the fixture (needs llama-cpp-python, gguf, jinja2, numpy):
 *   python3 tests/model/gen_logits_fixture.py [MODEL.gguf] [OUT.json]
 */
#include "tests/test.h"

#include <cjson/cJSON.h>
#include <unistd.h>

#include "runtime/model.h"
#include "util/util.h"

#define F32_TOL 0.05
#define Q_TOL 1.5
#define Q_MEAN_TOL 0.3
#define NEAR_TIE 0.5
#define Q16_TOL 0.05

static sgl_model *model;
static kv_pool *kv;
static cJSON *doc;
static int vocab;
/* |ours - reference| over compared logits. */
typedef struct diff_stats {
    double worst, sum;
    long n;
} diff_stats;
static diff_stats q_diff; /* the quantized teacher-forced comparison */
static int n_ties, n_cases_full, n_cases;

static int ref_margin_is_tie(const cJSON *step) {
    const cJSON *top = cJSON_GetObjectItem(step, "top");
    double l0 = cJSON_GetArrayItem(cJSON_GetArrayItem(top, 0), 1)->valuedouble;
    double l1 = cJSON_GetArrayItem(cJSON_GetArrayItem(top, 1), 1)->valuedouble;
    return l0 - l1 < NEAR_TIE;
}

static int32_t *ids_of(const cJSON *arr, int *n) {
    *n = cJSON_GetArraySize(arr);
    int32_t *v = malloc(sizeof(int32_t) * (size_t)(*n > 0 ? *n : 1));
    for (int i = 0; i < *n; i++) v[i] = (int32_t)cJSON_GetArrayItem(arr, i)->valueint;
    return v;
}

static int argmax(const float *x) {
    int b = 0;
    for (int i = 1; i < vocab; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* Compares our logits row with a reference step's top-5 (id, logit) pairs:
 * every |difference| must be within tol; all are added to st. */
static void compare_top(const cJSON *step, const float *row, double tol, diff_stats *st,
                        const char *what, int ci, int k) {
    const cJSON *top = cJSON_GetObjectItem(step, "top");
    for (int j = 0; j < cJSON_GetArraySize(top); j++) {
        const cJSON *e = cJSON_GetArrayItem(top, j);
        int id = cJSON_GetArrayItem(e, 0)->valueint;
        double ref = cJSON_GetArrayItem(e, 1)->valuedouble;
        double d = fabs(row[id] - ref);
        st->worst = fmax(st->worst, d);
        st->sum += d;
        st->n++;
        CHECK_MSG(d <= tol, "%s case %d step %d token %d: logit %.4f vs llama.cpp %.4f", what, ci,
                  k, id, row[id], ref);
    }
}

/* Free-running greedy decoding on m from case c's prompt, compared with a
 * reference greedy run stored under cont_key / steps_key: at every step our
 * logits of the reference's top-5 must be within tol, and our token must be
 * the reference's unless the reference's own top-2 margin is below tie
 * (after which the runs may legitimately part).
 * Returns 1 if all steps matched; adds the |diff| figures to *st. */
static int greedy_vs(sgl_model *m, int ci, const cJSON *c, const char *cont_key,
                     const char *steps_key, double tol, double tie, diff_stats *st) {
    int np, nc;
    int32_t *prompt = ids_of(cJSON_GetObjectItem(c, "prompt"), &np);
    int32_t *cont = ids_of(cJSON_GetObjectItem(c, cont_key), &nc);
    const cJSON *steps = cJSON_GetObjectItem(c, steps_key);
    int32_t *slots = malloc(sizeof(int32_t) * (size_t)(np + nc));
    float *lg = malloc(sizeof(float) * (size_t)vocab);
    sgl_error err;
    int full = 1;
    CHECK(kv_pool_alloc(kv, np + nc, slots) == 0);
    model_seq s = {.n_new = np, .tokens = prompt, .pos0 = 0, .n_ctx = np, .slots = slots,
                   .logits_from = np - 1};
    model_batch b = {1, &s};
    CHECK_MSG(model_forward(m, kv, &b, lg, &err) == 0, "%s", err.msg);
    for (int k = 0; k < nc; k++) {
        const cJSON *top = cJSON_GetObjectItem(cJSON_GetArrayItem(steps, k), "top");
        compare_top(cJSON_GetArrayItem(steps, k), lg, tol, st, cont_key, ci, k);
        int32_t t = argmax(lg);
        if (t != cont[k]) {
            double l0 = cJSON_GetArrayItem(cJSON_GetArrayItem(top, 0), 1)->valuedouble;
            double l1 = cJSON_GetArrayItem(cJSON_GetArrayItem(top, 1), 1)->valuedouble;
            CHECK_MSG(l0 - l1 < tie,
                      "%s case %d: greedy departs at step %d (%d vs llama.cpp %d, margin %.3f)",
                      cont_key, ci, k, t, cont[k], l0 - l1);
            full = 0;
            break;
        }
        if (k + 1 == nc) break;
        s = (model_seq){.n_new = 1, .tokens = &cont[k], .pos0 = np + k, .n_ctx = np + k + 1,
                        .slots = slots, .logits_from = 0};
        CHECK_MSG(model_forward(m, kv, &b, lg, &err) == 0, "%s", err.msg);
    }
    kv_pool_release(kv, slots, np + nc);
    free(prompt), free(cont), free(slots), free(lg);
    return full;
}

/* Teacher-forced run of case c on m: one prefill of the prompt plus the
 * reference continuation but its last token. Returns the logits of the nc
 * continuation steps ([nc][vocab], caller frees) and the continuation in
 * *cont (caller frees). */
static float *teacher_forced(sgl_model *m, const cJSON *c, int32_t **cont, int *nc) {
    int np;
    int32_t *prompt = ids_of(cJSON_GetObjectItem(c, "prompt"), &np);
    *cont = ids_of(cJSON_GetObjectItem(c, "continuation"), nc);
    int n = np + *nc - 1;
    int32_t *all = malloc(sizeof(int32_t) * (size_t)n), *slots = malloc(sizeof(int32_t) * (size_t)n);
    memcpy(all, prompt, sizeof(int32_t) * (size_t)np);
    memcpy(all + np, *cont, sizeof(int32_t) * (size_t)(*nc - 1));
    float *lg = malloc(sizeof(float) * (size_t)*nc * vocab);
    sgl_error err;
    CHECK(kv_pool_alloc(kv, n, slots) == 0);
    model_seq s = {.n_new = n, .tokens = all, .pos0 = 0, .n_ctx = n, .slots = slots,
                   .logits_from = np - 1};
    model_batch b = {1, &s};
    CHECK_MSG(model_forward(m, kv, &b, lg, &err) == 0, "%s", err.msg);
    kv_pool_release(kv, slots, n);
    free(prompt), free(all), free(slots);
    return lg;
}

static void check_case(int ci, const cJSON *c) {
    int nc;
    int32_t *cont;
    const cJSON *steps = cJSON_GetObjectItem(c, "steps");

    /* 1. teacher-forced */
    float *lg = teacher_forced(model, c, &cont, &nc);
    for (int k = 0; k < nc; k++) {
        const cJSON *step = cJSON_GetArrayItem(steps, k);
        const float *row = lg + (size_t)k * vocab;
        compare_top(step, row, Q_TOL, &q_diff, "teacher-forced", ci, k);
        int am = argmax(row);
        if (am != cont[k]) {
            if (ref_margin_is_tie(step)) n_ties++;
            else
                CHECK_MSG(0, "case %d step %d: argmax %d, llama.cpp %d", ci, k, am, cont[k]);
        }
    }

    /* 2. free-running greedy decoding reproduces llama.cpp's continuation up
     * to a near-tie of the reference. */
    diff_stats free_run = {0};
    int full = greedy_vs(model, ci, c, "continuation", "steps", Q_TOL, NEAR_TIE, &free_run);
    n_cases_full += full;
    n_cases++;
    free(cont), free(lg);
}

static void test_parity(void) {
    const cJSON *cases = cJSON_GetObjectItem(doc, "cases");
    CHECK(cJSON_GetArraySize(cases) >= 20);
    for (int i = 0; i < cJSON_GetArraySize(cases); i++) check_case(i, cJSON_GetArrayItem(cases, i));
    printf("parity vs %s: %d cases, %ld logits compared, max |diff| %.4f, mean %.4f "
           "(tolerance %.2f, mean %.2f); near-tie argmax flips %d; full greedy match %d/%d\n",
           cJSON_GetObjectItem(doc, "reference")->valuestring, n_cases, q_diff.n, q_diff.worst,
           q_diff.n ? q_diff.sum / q_diff.n : 0.0, Q_TOL, Q_MEAN_TOL, n_ties, n_cases_full, n_cases);
    CHECK_MSG(q_diff.n && q_diff.sum / q_diff.n <= Q_MEAN_TOL, "mean |diff| %.4f > %.2f",
              q_diff.sum / q_diff.n, Q_MEAN_TOL);

    /* The fast path on the Q4_1 file (16-bit activations) against llama.cpp's
     * greedy run on the same weights dequantized to F32: only the rounding of
     * activations to 16 bits and of K/V to f16 separate the two. */
    diff_stats g = {0};
    int full = 0, n = cJSON_GetArraySize(cases);
    for (int ci = 0; ci < n; ci++)
        full += greedy_vs(model, ci, cJSON_GetArrayItem(cases, ci), "f32_continuation",
                          "f32_greedy_steps", Q16_TOL, 2 * Q16_TOL, &g);
    printf("greedy on the Q4_1 file (fast kernels) vs llama.cpp's greedy on the F32-dequantized "
           "weights: %d/%d continuations identical; top-5 logits max |diff| %.4f, mean %.4f "
           "(tolerance %.2f)\n", full, n, g.worst, g.n ? g.sum / g.n : 0.0, Q16_TOL);
    CHECK_MSG(full >= 20, "only %d of %d greedy continuations identical", full, n);
}

/* ---- tight check on dequantized weights ------------------------------------------ */

/* Copies the model's metadata (the <arch>.* and general.architecture keys)
 * and every tensor dequantized to F32 into an in-memory GGUF. */
static uint8_t *f32_copy(const char *path, uint64_t *len) {
    sgl_error err;
    gguf_file *f = gguf_open(path, &err);
    if (!f) return NULL;
    gguf_writer *w = gguf_writer_new();
    char *arch = gguf_get_string(f, "general.architecture");
    size_t al = arch ? strlen(arch) : 0;
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const gguf_kv *e = &f->kv[i];
        if (strcmp(e->key, "general.architecture") != 0 &&
            !(arch && !strncmp(e->key, arch, al) && e->key[al] == '.'))
            continue;
        switch (e->type) {
        case GGUF_VT_FLOAT32:
        case GGUF_VT_FLOAT64: gguf_writer_set_f32(w, e->key, (float)e->v.f); break;
        case GGUF_VT_STRING: {
            char *v = sgl_strndup(e->v.s.ptr, e->v.s.len);
            gguf_writer_set_str(w, e->key, v);
            free(v);
            break;
        }
        case GGUF_VT_BOOL: gguf_writer_set_bool(w, e->key, e->v.u != 0); break;
        case GGUF_VT_ARRAY: break;
        default: gguf_writer_set_i32(w, e->key, (int32_t)gguf_get_int(f, e->key, 0)); break;
        }
    }
    free(arch);
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        uint64_t rows = t->ne[1] * t->ne[2] * t->ne[3];
        uint64_t rb = sgl_dtype_row_bytes(t->type, t->ne[0]);
        float *v = malloc(sizeof(float) * t->ne[0] * rows);
        for (uint64_t r = 0; r < rows; r++)
            kern_dequant_row(t->type, (const uint8_t *)t->data + r * rb, v + r * t->ne[0],
                             (int64_t)t->ne[0]);
        gguf_writer_add_tensor(w, t->name, SGL_DTYPE_F32, t->n_dims, t->ne, v);
        free(v);
    }
    uint8_t *buf = NULL;
    if (gguf_writer_to_memory(w, &buf, len, &err)) buf = NULL;
    gguf_writer_free(w);
    gguf_close(f);
    return buf;
}

static void test_parity_f32(void) {
    const char *path = getenv("SGL_TEST_MODEL");
    uint64_t len = 0;
    uint8_t *buf = f32_copy(path, &len);
    CHECK(buf != NULL);
    if (!buf) return;
    sgl_error err;
    gguf_file *f = gguf_open_memory(buf, len, &err);
    sgl_model *m = f ? model_load_gguf(f, 2, &err) : NULL;
    CHECK_MSG(m, "F32 copy: %s", err.msg);
    const cJSON *cases = cJSON_GetObjectItem(doc, "cases");
    diff_stats tf = {0};
    for (int ci = 0; m && ci < cJSON_GetArraySize(cases); ci++) {
        const cJSON *c = cJSON_GetArrayItem(cases, ci);
        const cJSON *steps = cJSON_GetObjectItem(c, "f32_steps");
        CHECK(steps != NULL);
        if (!steps) break;
        int nc;
        int32_t *cont;
        float *lg = teacher_forced(m, c, &cont, &nc);
        for (int k = 0; k < nc; k++)
            compare_top(cJSON_GetArrayItem(steps, k), lg + (size_t)k * vocab, F32_TOL, &tf, "f32",
                        ci, k);
        free(cont), free(lg);
    }
    printf("parity on F32-dequantized weights vs llama.cpp on the same: %ld logits, max |diff| "
           "%.4f, mean %.4f (tolerance %.2f)\n",
           tf.n, tf.worst, tf.n ? tf.sum / tf.n : 0.0, F32_TOL);
    /* Free-running greedy on the F32 weights against llama.cpp's own greedy
     * run there: the 16-token continuations must be identical. */
    diff_stats g = {0};
    int full = 0, n = cJSON_GetArraySize(cases);
    for (int ci = 0; m && ci < n; ci++)
        full += greedy_vs(m, ci, cJSON_GetArrayItem(cases, ci), "f32_continuation",
                          "f32_greedy_steps", F32_TOL, 2 * F32_TOL, &g);
    printf("greedy on F32-dequantized weights vs llama.cpp's greedy there: %d/%d continuations "
           "identical over 16 tokens; top-5 logits max |diff| %.4f, mean %.4f (tolerance %.2f)\n",
           full, n, g.worst, g.n ? g.sum / g.n : 0.0, F32_TOL);
    CHECK_MSG(full >= 20, "only %d of %d greedy continuations identical", full, n);
    model_free(m);
    free(buf);
}

int main(void) {
    const char *path = test_require_model();
    const char *root = getenv("SGL_SOURCE_ROOT");
    char fx[4096];
    snprintf(fx, sizeof fx, "%s/tests/model/logits_fixture.json", root ? root : SGL_SOURCE_ROOT);
    sgl_error err;
    size_t len;
    char *text = sgl_read_file(fx, &len, &err);
    if (!text) {
        printf("%s\n", err.msg);
        return 1;
    }
    doc = cJSON_Parse(text);
    free(text);
    model = model_load(path, 2, &err);
    if (!doc || !model) {
        printf("setup failed: %s\n", doc ? err.msg : "fixture is not JSON");
        return 1;
    }
    vocab = model_get_config(model)->vocab;
    kv = model_kv_pool_new(model, 1024, &err);
    TEST_RUN(test_parity_f32);
    TEST_RUN(test_parity);
    kv_pool_free(kv);
    model_free(model);
    cJSON_Delete(doc);
    return TEST_DONE();
}
