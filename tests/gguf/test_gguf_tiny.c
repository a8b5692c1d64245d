/* test_gguf_tiny: the tiny test model as written by sgl-mktiny at build time
 * (argv[1] tied+mixed types, argv[2] untied, argv[3] all-F32, all seed 1)
 * against the same model built in memory through the writer: identical
 * bytes, every key and every tensor read back equal to what the builder
 * meant to write (quantized tensors within their format's error). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "runtime/gguf.h"
#include "tests/test.h"
#include "tests/tools/tiny_model.h"

static const char *paths[3];

static uint8_t *build_mem(const tiny_opts *o, uint64_t *len) {
    gguf_writer *w = gguf_writer_new();
    sgl_error err = {{0}};
    uint8_t *buf = NULL;
    if (tiny_model_build(w, o, &err) || gguf_writer_to_memory(w, &buf, len, &err))
        TEST_FAIL_("building the tiny model: %s", err.msg);
    gguf_writer_free(w);
    return buf;
}

static gguf_file *open_path(const char *p) {
    sgl_error err = {{0}};
    gguf_file *f = gguf_open(p, &err);
    CHECK_MSG(f, "%s: %s", p, err.msg);
    return f;
}

/* The build tool and the in-memory builder give the same bytes. */
static void test_file_matches_memory(void) {
    static const tiny_opts opts[3] = {{.seed = 1}, {.seed = 1, .untied = true}, {.seed = 1, .all_f32 = true}};
    for (int i = 0; i < 3; i++) {
        uint64_t len;
        uint8_t *mem = build_mem(&opts[i], &len);
        gguf_file *f = open_path(paths[i]);
        if (f && mem) {
            CHECK_INT(f->file_size, len);
            CHECK_MSG(f->file_size == len && memcmp(f->map, mem, len) == 0, "%s differs from memory", paths[i]);
        }
        gguf_close(f);
        free(mem);
    }
    /* another seed: same tokenizer and shapes, different weights */
    tiny_opts o2 = {.seed = 2};
    uint64_t l1, l2;
    uint8_t *a = build_mem(&(tiny_opts){.seed = 1}, &l1), *b = build_mem(&o2, &l2);
    CHECK_INT(l1, l2);
    gguf_file *fa = gguf_open_memory(a, l1, NULL), *fb = gguf_open_memory(b, l2, NULL);
    CHECK(fa && fb);
    if (fa && fb) {
        CHECK_INT(fa->data_offset, fb->data_offset);
        CHECK(memcmp(a, b, fa->data_offset) == 0);
        const gguf_tensor *ta = gguf_find_tensor(fa, "blk.0.ffn_up.weight");
        const gguf_tensor *tb = gguf_find_tensor(fb, "blk.0.ffn_up.weight");
        CHECK(ta && tb && memcmp(ta->data, tb->data, ta->nbytes) != 0);
    }
    gguf_close(fa);
    gguf_close(fb);
    free(a);
    free(b);
}

static void check_str_kv(const gguf_file *f, const char *key, const char *want) {
    char *s = gguf_get_string(f, key);
    CHECK_MSG(s && !strcmp(s, want), "%s: got %s", key, s ? s : "(missing)");
    free(s);
}

static void test_metadata(void) {
    gguf_file *f = open_path(paths[0]);
    if (!f) return;
    CHECK_INT(f->version, 3);
    CHECK_INT(f->alignment, 32);
    check_str_kv(f, "general.architecture", "llama");
    check_str_kv(f, "tokenizer.ggml.model", "gpt2");
    check_str_kv(f, "tokenizer.ggml.pre", "smollm");
    check_str_kv(f, "tokenizer.chat_template", tiny_model_chat_template());
    CHECK_INT(gguf_get_int(f, "llama.block_count", 0), TINY_N_LAYER);
    CHECK_INT(gguf_get_int(f, "llama.context_length", 0), TINY_N_CTX);
    CHECK_INT(gguf_get_int(f, "llama.embedding_length", 0), TINY_N_EMBD);
    CHECK_INT(gguf_get_int(f, "llama.feed_forward_length", 0), TINY_N_FF);
    CHECK_INT(gguf_get_int(f, "llama.attention.head_count", 0), TINY_N_HEAD);
    CHECK_INT(gguf_get_int(f, "llama.attention.head_count_kv", 0), TINY_N_HEAD_KV);
    CHECK_INT(gguf_get_int(f, "llama.rope.dimension_count", 0), TINY_HEAD_DIM);
    CHECK_INT(gguf_get_int(f, "llama.vocab_size", 0), TINY_N_VOCAB);
    CHECK(gguf_get_float(f, "llama.rope.freq_base", 0) == TINY_ROPE_THETA);
    CHECK(gguf_get_float(f, "llama.attention.layer_norm_rms_epsilon", 0) == (double)TINY_RMS_EPS);
    CHECK_INT(gguf_get_int(f, "tokenizer.ggml.bos_token_id", -1), TINY_BOS_ID);
    CHECK_INT(gguf_get_int(f, "tokenizer.ggml.eos_token_id", -1), TINY_EOS_ID);
    CHECK(gguf_get_bool(f, "tokenizer.ggml.add_bos_token", true) == false);
    CHECK(TINY_N_VOCAB >= 300 && TINY_N_VOCAB <= 512);

    char **tokens, **merges;
    CHECK_INT(tiny_model_vocab(&tokens, &merges), 0);
    CHECK_INT(gguf_arr_len(f, "tokenizer.ggml.tokens"), TINY_N_VOCAB);
    CHECK_INT(gguf_arr_len(f, "tokenizer.ggml.token_type"), TINY_N_VOCAB);
    CHECK_INT(gguf_arr_len(f, "tokenizer.ggml.merges"), TINY_N_MERGES);
    int bad = 0;
    for (uint64_t i = 0; i < TINY_N_VOCAB; i++) {
        gguf_str s = gguf_arr_str(f, "tokenizer.ggml.tokens", i);
        bad += !(s.len == strlen(tokens[i]) && memcmp(s.ptr, tokens[i], s.len) == 0);
        bad += gguf_arr_int(f, "tokenizer.ggml.token_type", i, -1) != (i < TINY_N_SPECIAL ? 3 : 1);
    }
    for (uint64_t i = 0; i < TINY_N_MERGES; i++) {
        gguf_str s = gguf_arr_str(f, "tokenizer.ggml.merges", i);
        bad += !(s.len == strlen(merges[i]) && memcmp(s.ptr, merges[i], s.len) == 0);
        /* merge i makes token 259 + i: its two halves joined */
        const char *sp = strchr(merges[i], ' ');
        char joined[128];
        snprintf(joined, sizeof joined, "%.*s%s", (int)(sp - merges[i]), merges[i], sp + 1);
        bad += strcmp(joined, tokens[TINY_N_SPECIAL + 256 + i]) != 0;
    }
    CHECK_INT(bad, 0);
    /* specials, the byte alphabet (GPT-2 order, space = "Ġ" = U+0120), first merge */
    CHECK_STR(tokens[0], "<|endoftext|>");
    CHECK_STR(tokens[1], "<|im_start|>");
    CHECK_STR(tokens[2], "<|im_end|>");
    CHECK_STR(tokens[3], "!");
    int has_space = 0, has_nl = 0;
    for (int i = 3; i < 259; i++) {
        has_space += !strcmp(tokens[i], "\xc4\xa0");
        has_nl += !strcmp(tokens[i], "\xc4\x8a");
    }
    CHECK(has_space == 1 && has_nl == 1);
    CHECK_STR(merges[0], "\xc4\xa0 t");
    for (int i = 0; i < TINY_N_VOCAB; i++)
        for (int j = i + 1; j < TINY_N_VOCAB; j++) bad += !strcmp(tokens[i], tokens[j]);
    CHECK_MSG(bad == 0, "duplicate tokens");
    tiny_strings_free(tokens, TINY_N_VOCAB);
    tiny_strings_free(merges, TINY_N_MERGES);
    gguf_close(f);
}

/* Largest |value| of a tensor: the scale for quantization error bounds. */
static float amax(const float *v, uint64_t n) {
    float m = 0;
    for (uint64_t i = 0; i < n; i++) m = fmaxf(m, fabsf(v[i]));
    return m;
}

static double type_tol(sgl_dtype t) {
    switch (t) {
    case SGL_DTYPE_F32: return 0;
    case SGL_DTYPE_F16: return 1e-3;
    case SGL_DTYPE_Q8_0: return 0.01;
    case SGL_DTYPE_Q4_1: return 0.07; /* half a step of (max - min) / 15 */
    default: return 0.13;             /* Q4_0: one step of amax / 8 (the +8 end clamps to +7) */
    }
}

static void check_tensors(const char *path, bool untied, bool all_f32) {
    gguf_file *f = open_path(path);
    if (!f) return;
    tiny_opts o = {.seed = 1, .untied = untied, .all_f32 = all_f32};
    CHECK_INT(f->n_tensors, 2 + TINY_N_LAYER * 9 + (untied ? 1 : 0));
    CHECK((gguf_find_tensor(f, "output.weight") != NULL) == untied);
    int types_seen[SGL_DTYPE_MAX_ID] = {0};
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        types_seen[t->type] = 1;
        uint64_t n;
        float *want = tiny_model_values(&o, t->name, &n);
        CHECK_MSG(want, "unexpected tensor %s", t->name);
        if (!want) continue;
        CHECK_INT(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3], n);
        if (all_f32) CHECK_INT(t->type, SGL_DTYPE_F32);
        float *got = malloc(n * sizeof *got);
        kern_dequant_row(t->type, t->data, got, (int64_t)n);
        double tol = type_tol(t->type) * amax(want, n), worst = 0;
        for (uint64_t j = 0; j < n; j++) worst = fmax(worst, fabs((double)got[j] - want[j]));
        CHECK_MSG(worst <= tol, "%s (%s): max error %g > %g", t->name, sgl_dtype_name(t->type), worst, tol);
        if (strstr(t->name, "norm")) {
            CHECK_INT(t->type, SGL_DTYPE_F32);
            CHECK_INT(t->n_dims, 1);
            CHECK(want[0] > 0.85f && want[0] < 1.15f);
        }
        free(got);
        free(want);
    }
    const gguf_tensor *e = gguf_find_tensor(f, "token_embd.weight");
    CHECK(e && e->ne[0] == TINY_N_EMBD && e->ne[1] == TINY_N_VOCAB);
    const gguf_tensor *k = gguf_find_tensor(f, "blk.1.attn_k.weight");
    CHECK(k && k->ne[0] == TINY_N_EMBD && k->ne[1] == TINY_N_HEAD_KV * TINY_HEAD_DIM);
    const gguf_tensor *d = gguf_find_tensor(f, "blk.0.ffn_down.weight");
    CHECK(d && d->ne[0] == TINY_N_FF && d->ne[1] == TINY_N_EMBD);
    if (!all_f32) {
        CHECK(e && e->type == SGL_DTYPE_Q8_0);
        CHECK(types_seen[SGL_DTYPE_F32] && types_seen[SGL_DTYPE_F16] && types_seen[SGL_DTYPE_Q8_0] &&
              types_seen[SGL_DTYPE_Q4_0] && types_seen[SGL_DTYPE_Q4_1]);
    }
    gguf_close(f);
}

static void test_tensors_mixed(void) {
    check_tensors(paths[0], false, false);
}
static void test_tensors_untied(void) {
    check_tensors(paths[1], true, false);
}
static void test_tensors_f32(void) {
    check_tensors(paths[2], false, true);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: test_gguf_tiny TINY.gguf TINY-UNTIED.gguf TINY-F32.gguf\n");
        return 1;
    }
    for (int i = 0; i < 3; i++) paths[i] = argv[i + 1];
    TEST_RUN(test_file_matches_memory);
    TEST_RUN(test_metadata);
    TEST_RUN(test_tensors_mixed);
    TEST_RUN(test_tensors_untied);
    TEST_RUN(test_tensors_f32);
    return TEST_DONE();
}
