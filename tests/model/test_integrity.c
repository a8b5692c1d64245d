/* test_integrity: corrupt models built with the tiny model writer: an
 * edited tensor type field is refused at load naming the tensor; a NaN
 * weight and an out-of-range block scale are found by model_check_tensor
 * (sglc model-info --verify); a forward through a NaN weight (one case per
 * kind of block) fails with an error naming the layer and block where NaN
 * first appears, while a clean model's forward succeeds. */
#include <string.h>

#include "runtime/gguf.h"
#include "runtime/model.h"
#include "tests/test.h"
#include "tests/tools/tiny_model.h"

/* The tiny model as GGUF bytes (caller frees). */
static uint8_t *tiny_bytes(const tiny_opts *o, uint64_t *len) {
    sgl_error err = {{0}};
    gguf_writer *w = gguf_writer_new();
    uint8_t *buf = NULL;
    CHECK_MSG(tiny_model_build(w, o, &err) == 0, "%s", err.msg);
    CHECK_MSG(gguf_writer_to_memory(w, &buf, len, &err) == 0, "%s", err.msg);
    gguf_writer_free(w);
    return buf;
}

/* Offset of the u32 type field of tensor `name` in the header. */
static size_t type_field(const uint8_t *buf, uint64_t len, const char *name) {
    size_t n = strlen(name);
    for (size_t i = 8; i + n + 4 < len; i++) {
        uint64_t sl;
        memcpy(&sl, buf + i - 8, 8);
        if (sl != n || memcmp(buf + i, name, n)) continue;
        uint32_t nd;
        memcpy(&nd, buf + i + n, 4);
        return i + n + 4 + 8 * (size_t)nd;
    }
    return 0;
}

static void test_edited_type(void) {
    tiny_opts o = {.seed = 1};
    uint64_t len;
    uint8_t *buf = tiny_bytes(&o, &len);
    sgl_error err = {{0}};
    gguf_file *f = gguf_open_memory(buf, len, &err);
    CHECK_MSG(f, "%s", err.msg); /* the clean file loads */
    gguf_close(f);
    size_t at = type_field(buf, len, "blk.0.attn_q.weight");
    CHECK(at > 0);
    uint32_t ty;
    memcpy(&ty, buf + at, 4);
    CHECK_INT(ty, SGL_DTYPE_Q4_1);
    ty = SGL_DTYPE_Q4_0; /* same block count, 18 bytes a block instead of 20 */
    memcpy(buf + at, &ty, 4);
    f = gguf_open_memory(buf, len, &err);
    CHECK(f == NULL);
    CHECK_MSG(strstr(err.msg, "tensor 'blk.0.attn_q.weight': type Q4_0") != NULL, "%s", err.msg);
    gguf_close(f);
    ty = SGL_DTYPE_Q8_0; /* larger: runs into the next tensor */
    memcpy(buf + at, &ty, 4);
    f = gguf_open_memory(buf, len, &err);
    CHECK(f == NULL);
    CHECK_MSG(strstr(err.msg, "blk.0.attn_q.weight") != NULL, "%s", err.msg);
    gguf_close(f);
    free(buf);
}

static void test_verify(void) {
    tiny_opts o = {.seed = 1, .nan_tensor = "blk.1.ffn_down.weight", .nan_index = 70};
    uint64_t len;
    uint8_t *buf = tiny_bytes(&o, &len);
    sgl_error err = {{0}};
    /* An out-of-range block scale in a Q8_0 tensor: f16 0x7bff = 65504. */
    gguf_file *f = gguf_open_memory(buf, len, &err);
    CHECK_MSG(f, "%s", err.msg);
    if (!f) return;
    const gguf_tensor *v = gguf_find_tensor(f, "blk.0.attn_v.weight");
    CHECK(v && v->type == SGL_DTYPE_Q8_0);
    size_t voff = (size_t)((const uint8_t *)v->data - buf) + 34 * 3; /* fourth block */
    gguf_close(f);
    buf[voff] = 0xff;
    buf[voff + 1] = 0x7b;
    f = gguf_open_memory(buf, len, &err);
    CHECK_MSG(f, "%s", err.msg);
    if (!f) return;
    int n_bad = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        model_tensor_check c;
        CHECK_INT(model_check_tensor(&f->tensors[i], &c, &err), 0);
        CHECK(c.checked);
        const char *name = f->tensors[i].name;
        bool bad = c.n_nan || c.n_inf || c.n_big;
        n_bad += bad;
        if (!strcmp(name, "blk.1.ffn_down.weight")) {
            CHECK_INT(c.n_nan, 1);
            CHECK_INT(c.first_bad, 70);
        } else if (!strcmp(name, "blk.0.attn_v.weight")) {
            CHECK(c.n_big > 0 && c.n_nan == 0);
            CHECK_INT(c.first_bad / 32, 3);
        } else {
            CHECK_MSG(!bad, "%s", name);
        }
    }
    CHECK_INT(n_bad, 2);
    gguf_close(f);
    free(buf);
}

/* One forward over a few tokens: 0, or -1 with err. */
static int forward_once(const uint8_t *buf, uint64_t len, sgl_error *err) {
    gguf_file *f = gguf_open_memory(buf, len, err);
    if (!f) return -1;
    sgl_model *m = model_load_gguf(f, 1, err);
    if (!m) return -1;
    enum { N = 6 };
    int32_t toks[N] = {1, 40, 41, 42, 43, 44}, slots[N];
    kv_pool *kv = model_kv_pool_new(m, N, err);
    int rc = -1;
    if (kv && kv_pool_alloc(kv, N, slots) == 0) {
        float *logits = malloc(sizeof(float) * N * TINY_N_VOCAB);
        model_seq s = {.n_new = N, .tokens = toks, .pos0 = 0, .n_ctx = N, .slots = slots, .logits_from = 0};
        model_batch b = {1, &s};
        rc = model_forward(m, kv, &b, logits, err);
        free(logits);
    }
    kv_pool_free(kv);
    model_free(m);
    return rc;
}

static void test_nan_forward(void) {
    tiny_opts clean = {.seed = 1};
    uint64_t len;
    uint8_t *buf = tiny_bytes(&clean, &len);
    sgl_error err = {{0}};
    CHECK_MSG(forward_once(buf, len, &err) == 0, "%s", err.msg);
    free(buf);
    /* Quantized types cannot hold a NaN value (the quantizer drops it), so
     * the NaN goes into F16/F32 tensors, or into an all-F32 model. */
    static const struct {
        const char *tensor, *where;
        bool f32;
    } cases[] = {
        {"blk.1.ffn_down.weight", "layer 1, feed-forward (blk.1.ffn_down)", false},
        {"blk.0.attn_norm.weight", "layer 0, attention (blk.0.attn_norm.weight)", false},
        {"blk.1.attn_norm.weight", "layer 1, attention (blk.1.attn_norm.weight)", false},
        {"blk.1.attn_k.weight", "layer 1, attention (blk.1.attn_k)", true},
        {"blk.0.attn_output.weight", "layer 0, attention (blk.0.attn_output)", false},
        {"blk.0.ffn_norm.weight", "layer 0, feed-forward (blk.0.ffn_norm.weight)", false},
        {"blk.0.ffn_up.weight", "layer 0, feed-forward (blk.0.ffn_gate, ffn_up)", false},
        {"output_norm.weight", "the output layer", false},
    };
    for (size_t i = 0; i < SGL_ARRAY_LEN(cases); i++) {
        tiny_opts o = {.seed = 1, .all_f32 = cases[i].f32, .nan_tensor = cases[i].tensor, .nan_index = 5};
        buf = tiny_bytes(&o, &len);
        err.msg[0] = 0;
        CHECK_INT(forward_once(buf, len, &err), -1);
        CHECK_MSG(strstr(err.msg, "NaN/Inf values") && strstr(err.msg, cases[i].where), "%s: %s",
                  cases[i].tensor, err.msg);
        free(buf);
    }
}

int main(void) {
    TEST_RUN(test_edited_type);
    TEST_RUN(test_verify);
    TEST_RUN(test_nan_forward);
    return TEST_DONE();
}
