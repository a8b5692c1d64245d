/* shape_model: synthetic models of real llama shapes (see shape_model.h).
 * The GGUF v3 file is streamed: metadata and tensor infos into a buffer,
 * then each tensor generated, quantized and written one row at a time.
 * Weights: a splitmix64 stream per tensor seeded from the seed and the
 * tensor name; linear layers uniform with variance 1/in (so activations
 * keep their scale through the layers), embeddings uniform in [-1, 1),
 * norms 1 +- 0.1. Quantized with kern_quantize_row_gguf. */
#include "tests/tools/shape_model.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/quant_gguf.h"
#include "runtime/gguf.h"
#include "tests/tools/tiny_model.h"

static const shape_def shapes[] = {
    {"llama-1b", 2048, 16, 32, 8, 8192, 128256, 8192, 500000.0f, 1e-5f, true},
    {"llama-3b", 3072, 28, 24, 8, 8192, 128256, 8192, 500000.0f, 1e-5f, true},
    {"llama-8b", 4096, 32, 32, 8, 14336, 128256, 8192, 500000.0f, 1e-5f, false},
};

const shape_def *shape_lookup(const char *name) {
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
        if (!strcmp(shapes[i].name, name)) return &shapes[i];
    return NULL;
}

const char *shape_names(void) {
    return "llama-1b|llama-3b|llama-8b";
}

/* ---- a growable byte buffer for the header ---------------------------- */

typedef struct buf {
    uint8_t *p;
    size_t n, cap;
    bool oom;
} buf;

static void put(buf *b, const void *d, size_t n) {
    if (b->oom) return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n) cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put_u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(buf *b, const char *s, size_t n) {
    put_u64(b, n);
    put(b, s, n);
}
static void key(buf *b, uint64_t *n_kv, const char *k, gguf_vtype t) {
    put_str(b, k, strlen(k));
    put_u32(b, (uint32_t)t);
    (*n_kv)++;
}
static void kv_u32(buf *b, uint64_t *n, const char *k, uint32_t v) {
    key(b, n, k, GGUF_VT_UINT32);
    put_u32(b, v);
}
static void kv_f32(buf *b, uint64_t *n, const char *k, float v) {
    key(b, n, k, GGUF_VT_FLOAT32);
    put(b, &v, 4);
}
static void kv_bool(buf *b, uint64_t *n, const char *k, bool v) {
    key(b, n, k, GGUF_VT_BOOL);
    uint8_t x = v;
    put(b, &x, 1);
}
static void kv_str(buf *b, uint64_t *n, const char *k, const char *v) {
    key(b, n, k, GGUF_VT_STRING);
    put_str(b, v, strlen(v));
}

/* ---- tokenizer ---------------------------------------------------------- */

/* Writes the tokenizer keys, padded to n_vocab tokens. */
static int put_tokenizer(buf *b, uint64_t *n, const shape_opts *o, sgl_error *err) {
    uint32_t nv = o->shape.n_vocab;
    if (o->vocab_from) {
        gguf_file *f = gguf_open(o->vocab_from, err);
        if (!f) return -1;
        uint64_t nt = gguf_arr_len(f, "tokenizer.ggml.tokens"), nm = gguf_arr_len(f, "tokenizer.ggml.merges");
        if (!nt || nt > nv) {
            gguf_close(f);
            return sgl_error_set(err, "%s: %llu tokens do not fit a vocabulary of %u", o->vocab_from,
                                 (unsigned long long)nt, nv);
        }
        bool types = gguf_arr_len(f, "tokenizer.ggml.token_type") == nt;
        static const char *const str_keys[] = {"tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.chat_template"};
        for (int i = 0; i < 3; i++) {
            char *s = gguf_get_string(f, str_keys[i]);
            if (s) kv_str(b, n, str_keys[i], s);
            free(s);
        }
        static const char *const id_keys[] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                                              "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id"};
        for (int i = 0; i < 4; i++)
            if (gguf_find(f, id_keys[i])) kv_u32(b, n, id_keys[i], (uint32_t)gguf_get_int(f, id_keys[i], 0));
        static const char *const bool_keys[] = {"tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token",
                                                "tokenizer.ggml.add_space_prefix"};
        for (int i = 0; i < 3; i++)
            if (gguf_find(f, bool_keys[i])) kv_bool(b, n, bool_keys[i], gguf_get_bool(f, bool_keys[i], false));
        key(b, n, "tokenizer.ggml.tokens", GGUF_VT_ARRAY);
        put_u32(b, GGUF_VT_STRING);
        put_u64(b, nv);
        char pad[32];
        for (uint64_t i = 0; i < nv; i++) {
            if (i < nt) {
                gguf_str s = gguf_arr_str(f, "tokenizer.ggml.tokens", i);
                put_str(b, s.ptr, s.len);
            } else {
                int l = snprintf(pad, sizeof pad, "<|unused_%llu|>", (unsigned long long)i);
                put_str(b, pad, (size_t)l);
            }
        }
        key(b, n, "tokenizer.ggml.token_type", GGUF_VT_ARRAY);
        put_u32(b, GGUF_VT_INT32);
        put_u64(b, nv);
        for (uint64_t i = 0; i < nv; i++) {
            int32_t t = i < nt ? (types ? (int32_t)gguf_arr_int(f, "tokenizer.ggml.token_type", i, 1) : 1) : 5;
            put(b, &t, 4);
        }
        key(b, n, "tokenizer.ggml.merges", GGUF_VT_ARRAY);
        put_u32(b, GGUF_VT_STRING);
        put_u64(b, nm);
        for (uint64_t i = 0; i < nm; i++) {
            gguf_str s = gguf_arr_str(f, "tokenizer.ggml.merges", i);
            put_str(b, s.ptr, s.len);
        }
        gguf_close(f);
        return 0;
    }
    if (nv < TINY_N_VOCAB) return sgl_error_set(err, "a vocabulary of %u is below the tiny tokenizer's %d", nv, TINY_N_VOCAB);
    char **tokens, **merges;
    if (tiny_model_vocab(&tokens, &merges)) return sgl_error_set(err, "cannot build the tiny vocabulary");
    kv_str(b, n, "tokenizer.ggml.model", "gpt2");
    kv_str(b, n, "tokenizer.ggml.pre", "smollm");
    kv_str(b, n, "tokenizer.chat_template", tiny_model_chat_template());
    kv_u32(b, n, "tokenizer.ggml.bos_token_id", TINY_BOS_ID);
    kv_u32(b, n, "tokenizer.ggml.eos_token_id", TINY_EOS_ID);
    kv_bool(b, n, "tokenizer.ggml.add_bos_token", false);
    key(b, n, "tokenizer.ggml.tokens", GGUF_VT_ARRAY);
    put_u32(b, GGUF_VT_STRING);
    put_u64(b, nv);
    char pad[32];
    for (uint32_t i = 0; i < nv; i++) {
        if (i < TINY_N_VOCAB) put_str(b, tokens[i], strlen(tokens[i]));
        else put_str(b, pad, (size_t)snprintf(pad, sizeof pad, "<|unused_%u|>", i));
    }
    key(b, n, "tokenizer.ggml.token_type", GGUF_VT_ARRAY);
    put_u32(b, GGUF_VT_INT32);
    put_u64(b, nv);
    for (uint32_t i = 0; i < nv; i++) {
        int32_t t = i < TINY_N_SPECIAL ? 3 : i < TINY_N_VOCAB ? 1 : 5;
        put(b, &t, 4);
    }
    key(b, n, "tokenizer.ggml.merges", GGUF_VT_ARRAY);
    put_u32(b, GGUF_VT_STRING);
    put_u64(b, TINY_N_MERGES);
    for (int i = 0; i < TINY_N_MERGES; i++) put_str(b, merges[i], strlen(merges[i]));
    tiny_strings_free(tokens, TINY_N_VOCAB);
    tiny_strings_free(merges, TINY_N_MERGES);
    return 0;
}

/* ---- tensors -------------------------------------------------------------- */

typedef enum role { R_NORM, R_EMBD, R_LINEAR } role;

typedef struct tspec {
    char name[64];
    uint64_t ne0, ne1; /* ne1 = 1 for 1-D */
    role role;
    sgl_dtype type;
    uint64_t offset, nbytes;
} tspec;

static void add(tspec *t, int *n, const char *name, uint64_t in, uint64_t out, role r, sgl_dtype type) {
    tspec *s = &t[(*n)++];
    snprintf(s->name, sizeof s->name, "%s", name);
    s->ne0 = in;
    s->ne1 = out ? out : 1;
    s->role = r;
    s->type = r == R_NORM ? SGL_DTYPE_F32 : type;
    s->nbytes = sgl_dtype_row_bytes(s->type, in) * s->ne1;
}

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int write_tensor(FILE *fp, const tspec *s, uint64_t seed, float *row, uint8_t *q) {
    uint64_t st = seed * 0x2545F4914F6CDD1Dull;
    for (const char *p = s->name; *p; p++) st = (st ^ (uint8_t)*p) * 1099511628211ull;
    float scale = s->role == R_LINEAR ? sqrtf(3.0f / (float)s->ne0) : s->role == R_EMBD ? 1.0f : 0.1f;
    uint64_t rb = sgl_dtype_row_bytes(s->type, s->ne0);
    for (uint64_t r = 0; r < s->ne1; r++) {
        for (uint64_t i = 0; i < s->ne0; i++) {
            float u = (float)((double)(splitmix64(&st) >> 11) * (2.0 / 9007199254740992.0) - 1.0) * scale;
            row[i] = s->role == R_NORM ? 1.0f + u : u;
        }
        if (kern_quantize_row_gguf(s->type, row, q, (int64_t)s->ne0)) return -1;
        if (fwrite(q, 1, rb, fp) != rb) return -1;
    }
    return 0;
}

int shape_model_write(const char *path, const shape_opts *o, sgl_error *err) {
    const shape_def *d = &o->shape;
    if (!d->n_layer || !d->n_embd || !d->n_head || !d->n_head_kv || d->n_embd % d->n_head ||
        d->n_head % d->n_head_kv || !d->n_ff || !d->n_vocab)
        return sgl_error_set(err, "inconsistent shape (widths, heads, layers)");
    int be = sgl_dtype_block_elems(o->type);
    if (!be || d->n_embd % (uint32_t)be || d->n_ff % (uint32_t)be)
        return sgl_error_set(err, "type %s does not fit widths %u / %u", sgl_dtype_name(o->type) ? sgl_dtype_name(o->type) : "?",
                             d->n_embd, d->n_ff);
    uint32_t hd = d->n_embd / d->n_head, kvd = hd * d->n_head_kv;
    int nt = 0, cap = 3 + 9 * (int)d->n_layer;
    tspec *t = calloc((size_t)cap, sizeof *t);
    if (!t) return sgl_error_set(err, "out of memory");
    add(t, &nt, "token_embd.weight", d->n_embd, d->n_vocab, R_EMBD, o->type);
    for (uint32_t l = 0; l < d->n_layer; l++) {
        char nm[64];
#define ADD(suffix, in, out, r)                                        \
    snprintf(nm, sizeof nm, "blk.%u." suffix, l);                      \
    add(t, &nt, nm, in, out, r, o->type)
        ADD("attn_norm.weight", d->n_embd, 0, R_NORM);
        ADD("attn_q.weight", d->n_embd, d->n_embd, R_LINEAR);
        ADD("attn_k.weight", d->n_embd, kvd, R_LINEAR);
        ADD("attn_v.weight", d->n_embd, kvd, R_LINEAR);
        ADD("attn_output.weight", d->n_embd, d->n_embd, R_LINEAR);
        ADD("ffn_norm.weight", d->n_embd, 0, R_NORM);
        ADD("ffn_gate.weight", d->n_embd, d->n_ff, R_LINEAR);
        ADD("ffn_up.weight", d->n_embd, d->n_ff, R_LINEAR);
        ADD("ffn_down.weight", d->n_ff, d->n_embd, R_LINEAR);
#undef ADD
    }
    add(t, &nt, "output_norm.weight", d->n_embd, 0, R_NORM, o->type);
    if (!d->tied) add(t, &nt, "output.weight", d->n_embd, d->n_vocab, R_LINEAR, o->type);

    buf kv = {0}, hdr = {0};
    uint64_t n_kv = 0;
    char name[96];
    kv_str(&kv, &n_kv, "general.architecture", "llama");
    kv_str(&kv, &n_kv, "general.type", "model");
    snprintf(name, sizeof name, "sglc synthetic %s %s", d->name ? d->name : "llama", sgl_dtype_name(o->type));
    kv_str(&kv, &n_kv, "general.name", name);
    kv_u32(&kv, &n_kv, "llama.block_count", d->n_layer);
    kv_u32(&kv, &n_kv, "llama.context_length", d->n_ctx);
    kv_u32(&kv, &n_kv, "llama.embedding_length", d->n_embd);
    kv_u32(&kv, &n_kv, "llama.feed_forward_length", d->n_ff);
    kv_u32(&kv, &n_kv, "llama.attention.head_count", d->n_head);
    kv_u32(&kv, &n_kv, "llama.attention.head_count_kv", d->n_head_kv);
    kv_f32(&kv, &n_kv, "llama.rope.freq_base", d->rope_theta);
    kv_f32(&kv, &n_kv, "llama.attention.layer_norm_rms_epsilon", d->rms_eps);
    kv_u32(&kv, &n_kv, "llama.rope.dimension_count", hd);
    kv_u32(&kv, &n_kv, "llama.vocab_size", d->n_vocab);
    static const struct { sgl_dtype t; uint32_t ft; } ftypes[] = {
        {SGL_DTYPE_F32, 0}, {SGL_DTYPE_F16, 1}, {SGL_DTYPE_Q4_0, 2}, {SGL_DTYPE_Q4_1, 3}, {SGL_DTYPE_Q8_0, 7},
        {SGL_DTYPE_Q4_K, 14}, {SGL_DTYPE_Q5_K, 16}, {SGL_DTYPE_Q6_K, 18}, {SGL_DTYPE_BF16, 32}};
    for (size_t i = 0; i < sizeof ftypes / sizeof *ftypes; i++)
        if (ftypes[i].t == o->type) kv_u32(&kv, &n_kv, "general.file_type", ftypes[i].ft);
    kv_u32(&kv, &n_kv, "general.quantization_version", 2);
    int rc = put_tokenizer(&kv, &n_kv, o, err);

    uint64_t off = 0;
    for (int i = 0; i < nt; i++) {
        t[i].offset = off;
        off += (t[i].nbytes + 31) / 32 * 32;
    }
    put(&hdr, "GGUF", 4);
    put_u32(&hdr, 3);
    put_u64(&hdr, (uint64_t)nt);
    put_u64(&hdr, n_kv);
    put(&hdr, kv.p, kv.n);
    for (int i = 0; i < nt; i++) {
        put_str(&hdr, t[i].name, strlen(t[i].name));
        bool two = t[i].role != R_NORM;
        put_u32(&hdr, two ? 2 : 1);
        put_u64(&hdr, t[i].ne0);
        if (two) put_u64(&hdr, t[i].ne1);
        put_u32(&hdr, (uint32_t)t[i].type);
        put_u64(&hdr, t[i].offset);
    }
    static const uint8_t zeros[32];
    put(&hdr, zeros, (32 - hdr.n % 32) % 32);
    if (!rc && (kv.oom || hdr.oom)) rc = sgl_error_set(err, "out of memory");
    FILE *fp = rc ? NULL : fopen(path, "wb");
    if (!rc && !fp) rc = sgl_error_set(err, "%s: cannot create: %s", path, strerror(errno));
    uint64_t maxrow = d->n_embd > d->n_ff ? d->n_embd : d->n_ff;
    float *row = rc ? NULL : malloc(maxrow * sizeof *row);
    uint8_t *q = rc ? NULL : malloc(maxrow * 4);
    if (!rc && (!row || !q)) rc = sgl_error_set(err, "out of memory");
    if (!rc && fwrite(hdr.p, 1, hdr.n, fp) != hdr.n) rc = sgl_error_set(err, "%s: write failed", path);
    for (int i = 0; i < nt && !rc; i++) {
        if (write_tensor(fp, &t[i], o->seed, row, q) ||
            fwrite(zeros, 1, (size_t)((32 - t[i].nbytes % 32) % 32), fp) != (32 - t[i].nbytes % 32) % 32)
            rc = sgl_error_set(err, "%s: writing tensor '%s' failed: %s", path, t[i].name, strerror(errno));
    }
    if (fp && fclose(fp) && !rc) rc = sgl_error_set(err, "%s: write failed: %s", path, strerror(errno));
    free(row);
    free(q);
    free(kv.p);
    free(hdr.p);
    free(t);
    return rc ? -1 : 0;
}
