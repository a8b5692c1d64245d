/* fuzz_tokenizer: libFuzzer target over the tokenizer: a byte-level BPE
 * vocabulary (all 256 bytes, some merges, control and user-defined special
 * tokens) built in memory with the GGUF writer, one per pre-tokenizer; the
 * input's first byte picks the pre-tokenizer and the special-token flag,
 * the rest is arbitrary bytes. Encoding then decoding must give the input
 * back exactly (every byte has a token), every id must be in the vocabulary,
 * and the pre-tokenizer's word ends must be increasing and end at the
 * input's length. A mismatch aborts (reported as a crash). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/gguf.h"
#include "runtime/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const merges[] = {"Ġ t", "Ġ a", "h e", "i n", "r e", "o n", "Ġt he", "e r", "Ġ s",
                                     "a t", "Ġ w", "Ġ o", "e n", "Ġ c", "i t", "i s", "a n", "o r",
                                     "e s", "Ġ b", "e d", "Ġ f", "in g", "Ġ p", "o u", "Ġa n", "a l",
                                     "a r", "Ġt o", "Ġ m", "Ġo f", "Ġ in", "Ġ d", "Ġ h", "Ġan d"};
static const char *const pres[] = {"smollm", "llama3", "qwen2", "gpt2"};
static sgl_tokenizer *toks[4];

/* GPT-2's byte -> printable code point table, as UTF-8. */
static void byte_char(int b, char out[3]) {
    int n = 0, cp = b;
    if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) {
        for (int k = 0; k < b; k++)
            if (!((k >= 33 && k <= 126) || (k >= 161 && k <= 172) || (k >= 174 && k <= 255))) n++;
        cp = 256 + n;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        out[2] = 0;
    }
}

static sgl_tokenizer *make(const char *pre) {
    enum { NM = sizeof merges / sizeof merges[0], N = 3 + 256 + NM + 2 };
    char *tokens[N];
    int32_t types[N];
    char c[3];
    tokens[0] = "<|endoftext|>", tokens[1] = "<|im_start|>", tokens[2] = "<|im_end|>";
    for (int i = 0; i < N; i++) types[i] = i < 3 ? 3 : 1;
    static char bytes[256][3], merged[NM][40];
    for (int b = 0; b < 256; b++) {
        byte_char(b, c);
        memcpy(bytes[b], c, 3);
        tokens[3 + b] = bytes[b];
    }
    for (int m = 0; m < NM; m++) {
        size_t o = 0;
        for (const char *p = merges[m]; *p; p++)
            if (*p != ' ') merged[m][o++] = *p;
        merged[m][o] = 0;
        tokens[3 + 256 + m] = merged[m];
    }
    tokens[N - 2] = "<tool>", tokens[N - 1] = "<|im_end|>!!";
    types[N - 2] = types[N - 1] = 4;
    gguf_writer *w = gguf_writer_new();
    gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_writer_set_str(w, "tokenizer.ggml.pre", pre);
    gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)tokens, N);
    gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", types, N);
    gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", merges, NM);
    gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1);
    gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2);
    uint8_t *buf = NULL;
    uint64_t len = 0;
    sgl_error err;
    sgl_tokenizer *tok = NULL;
    if (gguf_writer_to_memory(w, &buf, &len, &err) == 0) {
        gguf_file *f = gguf_open_memory(buf, len, &err);
        if (f) tok = tok_load_gguf(f, &err);
        gguf_close(f);
    }
    if (!tok) fprintf(stderr, "fuzz_tokenizer: %s\n", err.msg);
    free(buf);
    gguf_writer_free(w);
    return tok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int which = data[0] & 3;
    bool special = data[0] & 4;
    if (!toks[which] && !(toks[which] = make(pres[which]))) abort();
    const sgl_tokenizer *tok = toks[which];
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    sgl_error err;
    int32_t *ids = NULL;
    size_t n = 0;
    if (tok_encode(tok, text, len, special, &ids, &n, &err) != 0) abort();
    sgl_strbuf sb = {0};
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= tok_vocab_size(tok)) abort();
    if (tok_decode(tok, ids, n, &sb, false) != 0) abort();
    if (sb.len != len || (len && memcmp(sb.data, text, len) != 0)) {
        fprintf(stderr, "fuzz_tokenizer: round trip differs (%zu bytes in, %zu out, pre %s)\n", len, sb.len,
                pres[which]);
        abort();
    }
    sgl_strbuf_free(&sb);
    free(ids);
    size_t *ends = NULL, nw = 0;
    if (tok_pretokenize(tok, text, len, &ends, &nw, &err) != 0) abort();
    for (size_t i = 0; i < nw; i++)
        if (ends[i] > len || (i && ends[i] <= ends[i - 1])) abort();
    if (len && (nw == 0 || ends[nw - 1] != len)) abort();
    free(ends);
    return 0;
}
