/* tiny_model: the tiny llama-layout test model (see tiny_model.h).
 *
 * Tokenizer: SmolLM2-like byte-level BPE. Tokens are the specials, then the
 * 256 bytes in GPT-2 bytes_to_unicode order (printable bytes first, each
 * written as its unicode stand-in, e.g. space = "Ġ", newline = "Ċ"), then one
 * token per merge. The merges come from a small BPE training loop over the
 * built-in English corpus below (most frequent adjacent pair first, ties to
 * the lower token ids), so they look like a real model's ("Ġ t", "h e", ...).
 *
 * Weights: a splitmix64 stream per tensor, seeded from the model seed and the
 * tensor name, so a tensor's values do not depend on the order or on which
 * other tensors exist. Types come from one table (mixed F32/F16/Q8_0/Q4_0/
 * Q4_1), quantized with the reference kern_quantize_row.
 */
#include "tests/tools/tiny_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"

static const char corpus[] =
    "The tiny model reads the text and then it writes the next word. "
    "It is not a smart model, but it is a real one: the weights are random, the "
    "tokenizer is real, and the file is a real GGUF file.\n"
    "Hello, world! Hello there. How are you today? I am fine, thank you.\n"
    "The user asks a question and the assistant gives an answer. The answer "
    "should be short, and the answer should be true.\n"
    "In the morning the sun comes up over the hills, and in the evening it goes "
    "down again. The children play in the garden while their mother reads a book "
    "on the bench under the old tree.\n"
    "A cat sat on the mat. The cat was happy, and the dog that lived in the house "
    "was happy too. They ate their dinner together in the kitchen.\n"
    "Numbers like 1, 2, 3 and 10, 20, 30 appear in the text as well as words such "
    "as one, two, three, ten, twenty and thirty.\n"
    "What is the capital of France? The capital of France is Paris. What is the "
    "largest planet? The largest planet in the solar system is Jupiter.\n"
    "Please write a short story about a robot that learns to paint. The robot "
    "started with simple shapes, then it painted the sea, the sky and the "
    "mountains, and at the end it painted a portrait of its friend.\n"
    "Thank you for reading this text. It is here so that the tokenizer has "
    "something to learn from, and the merges that come out of it are the kind "
    "of merges a real tokenizer would have: the, and, ing, tion, er, in, on.\n";

static const char *const special_tokens[TINY_N_SPECIAL] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};

static const char chat_template[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test model for sglc<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

const char *tiny_model_chat_template(void) {
    return chat_template;
}

/* ---- byte-level alphabet ----------------------------------------------------- */

/* order[k] = the byte whose token is TINY_N_SPECIAL + k; cp[b] = the unicode
 * stand-in of byte b (GPT-2 bytes_to_unicode). */
static void byte_tables(uint8_t order[256], uint32_t cp[256]) {
    int k = 0, extra = 0;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        if (printable) {
            order[k++] = (uint8_t)b;
            cp[b] = (uint32_t)b;
        }
    }
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        if (!printable) {
            order[k++] = (uint8_t)b;
            cp[b] = 256u + (uint32_t)extra++;
        }
    }
}

static size_t utf8_put(char *out, uint32_t c) {
    if (c < 0x80) {
        out[0] = (char)c;
        return 1;
    }
    out[0] = (char)(0xC0 | (c >> 6)); /* all stand-ins are < 0x800 */
    out[1] = (char)(0x80 | (c & 0x3F));
    return 2;
}

static char *str_cat(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    char *s = malloc(na + nb + 2);
    if (s) {
        memcpy(s, a, na);
        memcpy(s + na, b, nb + 1);
    }
    return s;
}

void tiny_strings_free(char **v, uint64_t n) {
    if (!v) return;
    for (uint64_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

/* ---- BPE training -------------------------------------------------------------- */

typedef struct word {
    int ids[64];
    int n;
    int count;
} word;

static bool isalpha_ascii(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* Splits the corpus GPT-2 style: an optional leading space joins the run of
 * letters, digits or punctuation after it; other whitespace runs stand alone. */
static int corpus_words(word *words, int max, const uint8_t tok_of_byte[256]) {
    int nw = 0;
    size_t n = sizeof corpus - 1, i = 0;
    while (i < n) {
        size_t start = i;
        unsigned char c = (unsigned char)corpus[i];
        if (c == ' ' && i + 1 < n && corpus[i + 1] != ' ' && corpus[i + 1] != '\n') {
            i++;
            c = (unsigned char)corpus[i];
        }
        int cls = (c == ' ' || c == '\n') ? 0 : isalpha_ascii(c) ? 1 : (c >= '0' && c <= '9') ? 2 : 3;
        while (i < n) {
            unsigned char d = (unsigned char)corpus[i];
            int dc = (d == ' ' || d == '\n') ? 0 : isalpha_ascii(d) ? 1 : (d >= '0' && d <= '9') ? 2 : 3;
            if (dc != cls) break;
            i++;
        }
        if (i == start) i++;
        size_t len = i - start;
        if (len > 64) len = 64;
        int found = -1;
        for (int w = 0; w < nw; w++) {
            if (words[w].n != (int)len) continue;
            int same = 1;
            for (size_t j = 0; j < len; j++)
                same &= words[w].ids[j] == tok_of_byte[(uint8_t)corpus[start + j]];
            if (same) {
                found = w;
                break;
            }
        }
        if (found >= 0) {
            words[found].count++;
            continue;
        }
        if (nw == max) return -1;
        words[nw].n = (int)len;
        words[nw].count = 1;
        for (size_t j = 0; j < len; j++) words[nw].ids[j] = tok_of_byte[(uint8_t)corpus[start + j]];
        nw++;
    }
    return nw;
}

#define PAIR_SLOTS 16384

typedef struct pair_count {
    uint32_t key; /* a << 16 | b, 0 = empty (pair (0,0) never occurs: id 0 is special) */
    int count;
} pair_count;

int tiny_model_vocab(char ***tokens_out, char ***merges_out) {
    uint8_t order[256], tok_of_byte[256];
    uint32_t cp[256];
    byte_tables(order, cp);
    char **tokens = calloc(TINY_N_VOCAB, sizeof *tokens);
    char **merges = calloc(TINY_N_MERGES, sizeof *merges);
    word *words = calloc(1024, sizeof *words);
    pair_count *pc = calloc(PAIR_SLOTS, sizeof *pc);
    uint32_t *banned = calloc(TINY_N_VOCAB, sizeof *banned);
    int n_tok = 0, n_banned = 0, rc = -1;
    if (!tokens || !merges || !words || !pc || !banned) goto done;
    for (int i = 0; i < TINY_N_SPECIAL; i++)
        if (!(tokens[n_tok++] = str_cat(special_tokens[i], ""))) goto done;
    for (int k = 0; k < 256; k++) {
        char buf[4] = {0};
        utf8_put(buf, cp[order[k]]);
        tok_of_byte[order[k]] = (uint8_t)k;
        if (!(tokens[n_tok++] = str_cat(buf, ""))) goto done;
    }
    int nw = corpus_words(words, 1024, tok_of_byte);
    if (nw < 0) goto done;
    for (int w = 0; w < nw; w++)
        for (int j = 0; j < words[w].n; j++) words[w].ids[j] += TINY_N_SPECIAL;
    for (int m = 0; m < TINY_N_MERGES;) {
        memset(pc, 0, PAIR_SLOTS * sizeof *pc);
        for (int w = 0; w < nw; w++)
            for (int j = 0; j + 1 < words[w].n; j++) {
                uint32_t key = (uint32_t)words[w].ids[j] << 16 | (uint32_t)words[w].ids[j + 1];
                uint32_t h = (key * 2654435761u) % PAIR_SLOTS;
                while (pc[h].key && pc[h].key != key) h = (h + 1) % PAIR_SLOTS;
                pc[h].key = key;
                pc[h].count += words[w].count;
            }
        int best = -1;
        for (int h = 0; h < PAIR_SLOTS; h++) {
            if (!pc[h].key) continue;
            bool is_banned = false;
            for (int b = 0; b < n_banned; b++) is_banned |= banned[b] == pc[h].key;
            if (is_banned) continue;
            if (best < 0 || pc[h].count > pc[best].count ||
                (pc[h].count == pc[best].count && pc[h].key < pc[best].key))
                best = h;
        }
        if (best < 0) goto done; /* corpus too small for TINY_N_MERGES */
        int a = (int)(pc[best].key >> 16), b = (int)(pc[best].key & 0xFFFF);
        char *joined = str_cat(tokens[a], tokens[b]);
        if (!joined) goto done;
        bool exists = false;
        for (int t = 0; t < n_tok; t++) exists |= strcmp(tokens[t], joined) == 0;
        if (exists) { /* the same string reached by another split: skip this pair */
            free(joined);
            banned[n_banned++] = pc[best].key;
            continue;
        }
        size_t la = strlen(tokens[a]), lb = strlen(tokens[b]);
        merges[m] = malloc(la + lb + 2);
        if (!merges[m]) {
            free(joined);
            goto done;
        }
        memcpy(merges[m], tokens[a], la);
        merges[m][la] = ' ';
        memcpy(merges[m] + la + 1, tokens[b], lb + 1);
        int id = n_tok;
        tokens[n_tok++] = joined;
        for (int w = 0; w < nw; w++) {
            int o = 0;
            for (int j = 0; j < words[w].n; j++) {
                if (j + 1 < words[w].n && words[w].ids[j] == a && words[w].ids[j + 1] == b) {
                    words[w].ids[o++] = id;
                    j++;
                } else {
                    words[w].ids[o++] = words[w].ids[j];
                }
            }
            words[w].n = o;
        }
        m++;
    }
    rc = 0;
done:
    free(words);
    free(pc);
    free(banned);
    if (rc) {
        tiny_strings_free(tokens, TINY_N_VOCAB);
        tiny_strings_free(merges, TINY_N_MERGES);
        return -1;
    }
    *tokens_out = tokens;
    *merges_out = merges;
    return 0;
}

/* ---- tensors --------------------------------------------------------------------- */

typedef enum role { ROLE_NORM, ROLE_EMBD, ROLE_LINEAR } role;

typedef struct tensor_spec {
    char name[64];
    uint32_t n_dims;
    uint64_t ne[2];
    sgl_dtype type;
    role role;
} tensor_spec;

/* Per-block tensors: GGUF shape [in, out], role, and the type in block 0 / 1
 * (each quantized type appears in several roles across the two blocks). */
static const struct {
    const char *suffix;
    uint64_t in, out;
    role role;
    sgl_dtype type[TINY_N_LAYER];
} block_tensors[] = {
    {"attn_norm.weight", TINY_N_EMBD, 0, ROLE_NORM, {SGL_DTYPE_F32, SGL_DTYPE_F32}},
    {"attn_q.weight", TINY_N_EMBD, TINY_N_HEAD * TINY_HEAD_DIM, ROLE_LINEAR, {SGL_DTYPE_Q4_1, SGL_DTYPE_Q4_0}},
    {"attn_k.weight", TINY_N_EMBD, TINY_N_HEAD_KV * TINY_HEAD_DIM, ROLE_LINEAR, {SGL_DTYPE_Q4_1, SGL_DTYPE_Q8_0}},
    {"attn_v.weight", TINY_N_EMBD, TINY_N_HEAD_KV * TINY_HEAD_DIM, ROLE_LINEAR, {SGL_DTYPE_Q8_0, SGL_DTYPE_Q4_1}},
    {"attn_output.weight", TINY_N_HEAD * TINY_HEAD_DIM, TINY_N_EMBD, ROLE_LINEAR, {SGL_DTYPE_F16, SGL_DTYPE_Q4_0}},
    {"ffn_norm.weight", TINY_N_EMBD, 0, ROLE_NORM, {SGL_DTYPE_F32, SGL_DTYPE_F32}},
    {"ffn_gate.weight", TINY_N_EMBD, TINY_N_FF, ROLE_LINEAR, {SGL_DTYPE_Q4_0, SGL_DTYPE_Q4_1}},
    {"ffn_up.weight", TINY_N_EMBD, TINY_N_FF, ROLE_LINEAR, {SGL_DTYPE_F16, SGL_DTYPE_Q8_0}},
    {"ffn_down.weight", TINY_N_FF, TINY_N_EMBD, ROLE_LINEAR, {SGL_DTYPE_Q8_0, SGL_DTYPE_F16}},
};
#define TINY_N_BLOCK_TENSORS ((int)(sizeof block_tensors / sizeof block_tensors[0]))

static void spec_set(tensor_spec *s, const char *name, uint64_t in, uint64_t out, role r, sgl_dtype t,
                     bool all_f32) {
    snprintf(s->name, sizeof s->name, "%s", name);
    s->n_dims = out ? 2 : 1;
    s->ne[0] = in;
    s->ne[1] = out ? out : 1;
    s->role = r;
    s->type = all_f32 ? SGL_DTYPE_F32 : t;
}

/* Fills specs (room for all) in file order; returns the count. */
static int tensor_specs(const tiny_opts *o, tensor_spec *specs) {
    int n = 0;
    spec_set(&specs[n++], "token_embd.weight", TINY_N_EMBD, TINY_N_VOCAB, ROLE_EMBD, SGL_DTYPE_Q8_0, o->all_f32);
    for (int l = 0; l < TINY_N_LAYER; l++)
        for (int k = 0; k < TINY_N_BLOCK_TENSORS; k++) {
            char name[64];
            snprintf(name, sizeof name, "blk.%d.%s", l, block_tensors[k].suffix);
            spec_set(&specs[n++], name, block_tensors[k].in, block_tensors[k].out, block_tensors[k].role,
                     block_tensors[k].type[l], o->all_f32);
        }
    spec_set(&specs[n++], "output_norm.weight", TINY_N_EMBD, 0, ROLE_NORM, SGL_DTYPE_F32, o->all_f32);
    if (o->untied)
        spec_set(&specs[n++], "output.weight", TINY_N_EMBD, TINY_N_VOCAB, ROLE_LINEAR, SGL_DTYPE_F16, o->all_f32);
    return n;
}
#define TINY_MAX_TENSORS (2 + TINY_N_LAYER * 9 + 1)

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [-1, 1). */
static float uniform(uint64_t *s) {
    return (float)((double)(splitmix64(s) >> 11) * (2.0 / 9007199254740992.0) - 1.0);
}

static float *spec_values(const tiny_opts *o, const tensor_spec *s, uint64_t *n) {
    uint64_t cnt = s->ne[0] * s->ne[1];
    float *v = malloc(cnt * sizeof *v);
    if (!v) return NULL;
    uint64_t st = o->seed * 0x2545F4914F6CDD1Dull;
    for (const char *p = s->name; *p; p++) st = (st ^ (uint8_t)*p) * 1099511628211ull;
    float scale = s->role == ROLE_LINEAR ? sqrtf(3.0f / (float)s->ne[0]) : s->role == ROLE_EMBD ? 1.0f : 0.1f;
    for (uint64_t i = 0; i < cnt; i++) {
        float u = uniform(&st) * scale;
        v[i] = s->role == ROLE_NORM ? 1.0f + u : u;
    }
    *n = cnt;
    return v;
}

float *tiny_model_values(const tiny_opts *o, const char *name, uint64_t *n) {
    tensor_spec specs[TINY_MAX_TENSORS];
    tiny_opts all = *o;
    all.untied = true; /* values do not depend on the type or on tying */
    int ns = tensor_specs(&all, specs);
    for (int i = 0; i < ns; i++)
        if (!strcmp(specs[i].name, name)) return spec_values(o, &specs[i], n);
    return NULL;
}

static int add_tensors(gguf_writer *w, const tiny_opts *o, sgl_error *err) {
    tensor_spec specs[TINY_MAX_TENSORS];
    int ns = tensor_specs(o, specs);
    for (int i = 0; i < ns; i++) {
        const tensor_spec *s = &specs[i];
        uint64_t n;
        float *v = spec_values(o, s, &n);
        if (v && o->nan_tensor && !strcmp(o->nan_tensor, s->name) && o->nan_index < n) v[o->nan_index] = NAN;
        uint64_t nb = sgl_dtype_row_bytes(s->type, s->ne[0]) * s->ne[1];
        void *q = malloc(nb);
        int rc = !v || !q ? sgl_error_set(err, "out of memory") : 0;
        if (!rc && kern_quantize_row(s->type, v, q, (int64_t)n) != 0)
            rc = sgl_error_set(err, "tensor '%s': no quantizer for %s", s->name, sgl_dtype_name(s->type));
        if (!rc && gguf_writer_add_tensor(w, s->name, s->type, s->n_dims, s->ne, q) != 0)
            rc = sgl_error_set(err, "tensor '%s': cannot add to the writer", s->name);
        free(v);
        free(q);
        if (rc) return -1;
    }
    return 0;
}

int tiny_model_build(gguf_writer *w, const tiny_opts *o, sgl_error *err) {
    char **tokens, **merges;
    if (tiny_model_vocab(&tokens, &merges)) return sgl_error_set(err, "cannot build the tiny vocabulary");
    int32_t types[TINY_N_VOCAB];
    for (int i = 0; i < TINY_N_VOCAB; i++) types[i] = i < TINY_N_SPECIAL ? 3 : 1;
    int rc = 0;
    rc |= gguf_writer_set_str(w, "general.architecture", "llama");
    rc |= gguf_writer_set_str(w, "general.type", "model");
    rc |= gguf_writer_set_str(w, "general.name", "sglc tiny llama");
    rc |= gguf_writer_set_u32(w, "llama.block_count", TINY_N_LAYER);
    rc |= gguf_writer_set_u32(w, "llama.context_length", TINY_N_CTX);
    rc |= gguf_writer_set_u32(w, "llama.embedding_length", TINY_N_EMBD);
    rc |= gguf_writer_set_u32(w, "llama.feed_forward_length", TINY_N_FF);
    rc |= gguf_writer_set_u32(w, "llama.attention.head_count", TINY_N_HEAD);
    rc |= gguf_writer_set_u32(w, "llama.attention.head_count_kv", TINY_N_HEAD_KV);
    rc |= gguf_writer_set_f32(w, "llama.rope.freq_base", TINY_ROPE_THETA);
    rc |= gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", TINY_RMS_EPS);
    rc |= gguf_writer_set_u32(w, "general.file_type", o->all_f32 ? 0 : 3);
    rc |= gguf_writer_set_u32(w, "llama.vocab_size", TINY_N_VOCAB);
    rc |= gguf_writer_set_u32(w, "llama.rope.dimension_count", TINY_HEAD_DIM);
    rc |= gguf_writer_set_bool(w, "tokenizer.ggml.add_space_prefix", false);
    rc |= gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", false);
    rc |= gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    rc |= gguf_writer_set_str(w, "tokenizer.ggml.pre", "smollm");
    rc |= gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)tokens, TINY_N_VOCAB);
    rc |= gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", types, TINY_N_VOCAB);
    rc |= gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)merges, TINY_N_MERGES);
    rc |= gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", TINY_BOS_ID);
    rc |= gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", TINY_EOS_ID);
    rc |= gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    rc |= gguf_writer_set_u32(w, "tokenizer.ggml.padding_token_id", TINY_EOS_ID);
    rc |= gguf_writer_set_str(w, "tokenizer.chat_template", chat_template);
    rc |= gguf_writer_set_u32(w, "general.quantization_version", 2);
    tiny_strings_free(tokens, TINY_N_VOCAB);
    tiny_strings_free(merges, TINY_N_MERGES);
    if (rc) return sgl_error_set(err, "cannot add the tiny model's metadata");
    return add_tensors(w, o, err);
}
