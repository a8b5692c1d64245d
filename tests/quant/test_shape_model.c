/* test_shape_model: the synthetic real-shape writer (tests/tools/shape_model.h)
 * on the llama-1b shape cut to one layer and a small vocabulary: the file
 * opens, carries the family's widths / heads / GQA as standard llama keys,
 * holds every tensor with the right shape and type, loads as a model, and is
 * the same for the same seed and different for another. With a tokenizer
 * source the vocabulary is that tokenizer's, padded with UNUSED tokens.
 * argv: TINY.gguf (a tokenizer source) */
#include <stdint.h>
#include <stdlib.h>

#include "runtime/gguf.h"
#include "runtime/model.h"
#include "tests/test.h"
#include "tests/tools/shape_model.h"
#include "tests/tools/tiny_model.h"

static const char *tiny;
static char path_a[256], path_b[256];

static shape_opts small_1b(sgl_dtype t, uint64_t seed) {
    shape_opts o = {.shape = *shape_lookup("llama-1b"), .type = t, .seed = seed};
    o.shape.n_layer = 1;
    o.shape.n_vocab = 1024;
    return o;
}

static void test_families(void) {
    const shape_def *a = shape_lookup("llama-1b"), *b = shape_lookup("llama-3b"), *c = shape_lookup("llama-8b");
    CHECK(a && b && c && !shape_lookup("llama-2b"));
    if (!a || !b || !c) return;
    CHECK(a->n_embd == 2048 && a->n_layer == 16 && a->n_head == 32 && a->n_head_kv == 8 && a->n_ff == 8192);
    CHECK(b->n_embd == 3072 && b->n_layer == 28 && b->n_head == 24 && b->n_head_kv == 8 && b->n_ff == 8192);
    CHECK(c->n_embd == 4096 && c->n_layer == 32 && c->n_head == 32 && c->n_head_kv == 8 && c->n_ff == 14336);
    CHECK(a->n_vocab == 128256 && c->n_vocab == 128256 && a->tied && !c->tied);
}

static void test_writes_loadable_model(void) {
    sgl_error err = {0};
    shape_opts o = small_1b(SGL_DTYPE_Q4_0, 3);
    CHECK_MSG(shape_model_write(path_a, &o, &err) == 0, "%s", err.msg);
    gguf_file *f = gguf_open(path_a, &err);
    CHECK_MSG(f != NULL, "%s", err.msg);
    if (!f) return;
    CHECK_INT(gguf_get_int(f, "llama.block_count", 0), 1);
    CHECK_INT(gguf_get_int(f, "llama.embedding_length", 0), 2048);
    CHECK_INT(gguf_get_int(f, "llama.attention.head_count", 0), 32);
    CHECK_INT(gguf_get_int(f, "llama.attention.head_count_kv", 0), 8);
    CHECK_INT(gguf_get_int(f, "llama.feed_forward_length", 0), 8192);
    CHECK_INT(gguf_get_int(f, "general.file_type", -1), 2);
    CHECK_INT(gguf_arr_len(f, "tokenizer.ggml.tokens"), 1024);
    CHECK_INT(f->n_tensors, 11);
    const gguf_tensor *k = gguf_find_tensor(f, "blk.0.attn_k.weight"), *n = gguf_find_tensor(f, "blk.0.attn_norm.weight");
    const gguf_tensor *e = gguf_find_tensor(f, "token_embd.weight"), *dn = gguf_find_tensor(f, "blk.0.ffn_down.weight");
    CHECK(k && k->ne[0] == 2048 && k->ne[1] == 512 && k->type == SGL_DTYPE_Q4_0);
    CHECK(n && n->n_dims == 1 && n->type == SGL_DTYPE_F32);
    CHECK(e && e->ne[0] == 2048 && e->ne[1] == 1024);
    CHECK(dn && dn->ne[0] == 8192 && dn->ne[1] == 2048);
    CHECK(gguf_find_tensor(f, "output.weight") == NULL); /* tied */
    gguf_close(f);
    sgl_model *m = model_load(path_a, 1, &err);
    CHECK_MSG(m != NULL, "does not load: %s", err.msg);
    model_free(m);
}

static int same_file(const char *a, const char *b) {
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int same = fa && fb;
    while (same) {
        int ca = fgetc(fa), cb = fgetc(fb);
        if (ca != cb) same = 0;
        if (ca == EOF || cb == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return same;
}

static void test_seeded(void) {
    sgl_error err = {0};
    shape_opts o = small_1b(SGL_DTYPE_Q8_0, 5);
    o.shape.n_ff = 512; /* small: only the bytes matter here */
    CHECK(shape_model_write(path_a, &o, &err) == 0);
    CHECK(shape_model_write(path_b, &o, &err) == 0);
    CHECK(same_file(path_a, path_b));
    o.seed = 6;
    CHECK(shape_model_write(path_b, &o, &err) == 0);
    CHECK(!same_file(path_a, path_b));
}

static void test_vocab_from(void) {
    sgl_error err = {0};
    shape_opts o = small_1b(SGL_DTYPE_Q4_K, 1);
    o.shape.n_ff = 512;
    o.vocab_from = tiny;
    CHECK_MSG(shape_model_write(path_a, &o, &err) == 0, "%s", err.msg);
    gguf_file *f = gguf_open(path_a, &err);
    CHECK(f != NULL);
    if (!f) return;
    CHECK_INT(gguf_arr_len(f, "tokenizer.ggml.tokens"), 1024);
    CHECK_INT(gguf_arr_len(f, "tokenizer.ggml.merges"), TINY_N_MERGES);
    gguf_str s = gguf_arr_str(f, "tokenizer.ggml.tokens", 1000);
    CHECK(s.len == 15 && memcmp(s.ptr, "<|unused_1000|>", 15) == 0);
    CHECK_INT(gguf_arr_int(f, "tokenizer.ggml.token_type", 1000, 0), 5);
    CHECK_INT(gguf_arr_int(f, "tokenizer.ggml.token_type", 0, 0), 3);
    const gguf_tensor *q = gguf_find_tensor(f, "blk.0.attn_q.weight");
    CHECK(q && q->type == SGL_DTYPE_Q4_K);
    gguf_close(f);
    o.shape.n_vocab = 100; /* below the source's token count */
    CHECK(shape_model_write(path_a, &o, &err) == -1);
    o = small_1b(SGL_DTYPE_Q4_K, 1);
    o.shape.n_embd = 2000; /* not a multiple of 256 */
    CHECK(shape_model_write(path_a, &o, &err) == -1);
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    tiny = argv[1];
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(path_a, sizeof path_a, "%s/sgl-shape-a-%d.gguf", tmp, (int)getpid());
    snprintf(path_b, sizeof path_b, "%s/sgl-shape-b-%d.gguf", tmp, (int)getpid());
    TEST_RUN(test_families);
    TEST_RUN(test_writes_loadable_model);
    TEST_RUN(test_seeded);
    TEST_RUN(test_vocab_from);
    remove(path_a);
    remove(path_b);
    return TEST_DONE();
}
