/* test_gguf_real: the reader on the real default model (SmolLM2-135M-Instruct
 * Q4_1, path in $SGL_TEST_MODEL). Skips (77) when the file is missing unless
 * CI=true. Checks the facts llama.cpp's converter wrote into that file. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/gguf.h"
#include "tests/test.h"

static gguf_file *f;

static void test_header(void) {
    CHECK_INT(f->version, 3);
    CHECK_INT(f->alignment, 32);
    CHECK_INT(f->n_tensors, 272);
    char *arch = gguf_get_string(f, "general.architecture");
    CHECK_STR(arch, "llama");
    free(arch);
    CHECK_INT(gguf_get_int(f, "llama.block_count", 0), 30);
    CHECK_INT(gguf_get_int(f, "llama.embedding_length", 0), 576);
    CHECK_INT(gguf_get_int(f, "llama.feed_forward_length", 0), 1536);
    CHECK_INT(gguf_get_int(f, "llama.attention.head_count", 0), 9);
    CHECK_INT(gguf_get_int(f, "llama.attention.head_count_kv", 0), 3);
    CHECK_INT(gguf_get_int(f, "llama.context_length", 0), 8192);
    CHECK_NEAR(gguf_get_float(f, "llama.rope.freq_base", 0), 100000.0, 1e-3);
    CHECK_NEAR(gguf_get_float(f, "llama.attention.layer_norm_rms_epsilon", 0), 1e-5, 1e-9);
}

static void test_tokenizer(void) {
    char *model = gguf_get_string(f, "tokenizer.ggml.model");
    CHECK_STR(model, "gpt2");
    free(model);
    CHECK_INT(gguf_arr_len(f, "tokenizer.ggml.tokens"), 49152);
    CHECK_INT(gguf_arr_len(f, "tokenizer.ggml.merges"), 48900);
    CHECK_INT(gguf_arr_len(f, "tokenizer.ggml.token_type"), 49152);
    gguf_str t0 = gguf_arr_str(f, "tokenizer.ggml.tokens", 0);
    CHECK(t0.len == 13 && memcmp(t0.ptr, "<|endoftext|>", 13) == 0);
    gguf_str t1 = gguf_arr_str(f, "tokenizer.ggml.tokens", 1);
    CHECK(t1.len == 12 && memcmp(t1.ptr, "<|im_start|>", 12) == 0);
    gguf_str last = gguf_arr_str(f, "tokenizer.ggml.tokens", 49151);
    CHECK(last.ptr && last.len > 0);
    gguf_str m0 = gguf_arr_str(f, "tokenizer.ggml.merges", 0);
    CHECK(m0.ptr && memchr(m0.ptr, ' ', m0.len));
    CHECK_INT(gguf_arr_int(f, "tokenizer.ggml.token_type", 0, -1), 3);
    const gguf_kv *tmpl = gguf_find(f, "tokenizer.chat_template");
    CHECK(tmpl && tmpl->type == GGUF_VT_STRING && tmpl->v.s.len > 100);
    char *t = gguf_get_string(f, "tokenizer.chat_template");
    CHECK(t && strstr(t, "<|im_start|>"));
    free(t);
}

static void test_tensors(void) {
    const gguf_tensor *e = gguf_find_tensor(f, "token_embd.weight");
    CHECK(e);
    if (e) {
        CHECK_INT(e->type, SGL_DTYPE_Q8_0);
        CHECK_INT(e->n_dims, 2);
        CHECK_INT(e->ne[0], 576);
        CHECK_INT(e->ne[1], 49152);
        CHECK_INT(e->nbytes, 576 / 32 * 34 * 49152ull);
    }
    const gguf_tensor *q = gguf_find_tensor(f, "blk.29.attn_q.weight");
    CHECK(q && q->ne[0] == 576 && q->ne[1] == 576);
    const gguf_tensor *k = gguf_find_tensor(f, "blk.0.attn_k.weight");
    CHECK(k && k->ne[0] == 576 && k->ne[1] == 192);
    const gguf_tensor *n = gguf_find_tensor(f, "output_norm.weight");
    CHECK(n && n->type == SGL_DTYPE_F32 && n->n_dims == 1 && n->ne[0] == 576);
    CHECK(gguf_find_tensor(f, "blk.30.attn_q.weight") == NULL);
    uint64_t total = 0, params = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        total += t->nbytes;
        params += t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
        CHECK(t->offset % f->alignment == 0);
        CHECK(f->data_offset + t->offset + t->nbytes <= f->file_size);
    }
    CHECK(total <= f->file_size && total > f->file_size / 2);
    CHECK(params > 130000000 && params < 140000000);
}

int main(void) {
    const char *path = test_require_model();
    sgl_error err = {{0}};
    f = gguf_open(path, &err);
    if (!f) {
        fprintf(stderr, "%s: %s\n", path, err.msg);
        return 1;
    }
    TEST_RUN(test_header);
    TEST_RUN(test_tokenizer);
    TEST_RUN(test_tensors);
    gguf_close(f);
    return TEST_DONE();
}
