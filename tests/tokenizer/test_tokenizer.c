/* test_tokenizer: unit tests of the tokenizer and chat templates on small
 * vocabularies written in memory with the GGUF writer (no real model):
 * BPE merge order, special tokens, SentencePiece scores and byte fallback,
 * the pre-tokenizers against Hugging Face's splits (pretok_splits.jsonl,
 * made by gen_fixture.py), the streaming UTF-8 decoder against a reference
 * decoder, uni_utf8_repair (runtime/unicode.h) against Python's decoding and
 * the same reference, and chat template rendering for chatml, llama-3,
 * llama-2, plain.
 * Usage: test_tokenizer PRETOK_SPLITS_JSONL
 */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/chat_template.h"
#include "runtime/tokenizer.h"
#include "runtime/unicode.h"
#include "tests/test.h"

static const char *splits_path;

/* ---- building vocabularies ---------------------------------------------- */

/* GPT-2's bytes_to_unicode, written out again here so the test does not
 * share the tokenizer's table. */
static void byte_char(int b, char out[3]) {
    int cp = b, next = 256;
    if (!((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)) {
        for (int x = 0; x < b; x++)
            if (!((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE)) next++;
        cp = next;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        out[2] = 0;
    }
}

/* ids of the byte-level test vocabulary */
enum { B_EOT = 0, B_IMS = 1, B_IME = 2, B_BYTE0 = 3 };
#define B_BYTE(b) (B_BYTE0 + (b))
static const char *const bpe_merges[] = {
    "Ġ t", "h e", "Ġt he", "l l", "e ll", "h ell", "Ġ w", "o r", "Ġw or",
    "ð Ł", "ĺ Ģ", "b c", "a b", "a a",
};
enum { B_MERGED0 = B_BYTE0 + 256 }; /* then one token per merge, in order */
#define B_M(i) (B_MERGED0 + (i))
enum { B_TOOL = B_MERGED0 + (int)SGL_ARRAY_LEN(bpe_merges), B_IME2, B_N };

/* A byte-level vocabulary: 3 control tokens, the 256 byte tokens, one token
 * per merge, the user-defined "<tool>" and "<|im_end|>!!". */
/* Serialises w (and frees it), opens the result and loads a tokenizer from
 * it. Returns the tokenizer (caller frees) or NULL after printing why. */
static sgl_tokenizer *tok_from_writer(gguf_writer *w, const char *what) {
    uint8_t *buf = NULL;
    uint64_t len = 0;
    sgl_error err = {0};
    sgl_tokenizer *tok = NULL;
    if (gguf_writer_to_memory(w, &buf, &len, &err) == 0) {
        gguf_file *f = gguf_open_memory(buf, len, &err);
        if (f) tok = tok_load_gguf(f, &err);
        gguf_close(f);
    }
    if (!tok) fprintf(stderr, "%s: %s\n", what, err.msg);
    free(buf);
    gguf_writer_free(w);
    return tok;
}

static sgl_tokenizer *make_bpe(const char *pre, bool add_bos) {
    char *tokens[B_N];
    int32_t types[B_N];
    for (int i = 0; i < B_N; i++) types[i] = TOK_TYPE_NORMAL;
    tokens[B_EOT] = sgl_strdup("<|endoftext|>");
    tokens[B_IMS] = sgl_strdup("<|im_start|>");
    tokens[B_IME] = sgl_strdup("<|im_end|>");
    types[B_EOT] = types[B_IMS] = types[B_IME] = TOK_TYPE_CONTROL;
    for (int b = 0; b < 256; b++) {
        char c[3];
        byte_char(b, c);
        tokens[B_BYTE(b)] = sgl_strdup(c);
    }
    for (size_t m = 0; m < SGL_ARRAY_LEN(bpe_merges); m++) {
        char buf[32];
        size_t o = 0;
        for (const char *p = bpe_merges[m]; *p; p++)
            if (*p != ' ') buf[o++] = *p;
        buf[o] = 0;
        tokens[B_M(m)] = sgl_strdup(buf);
    }
    tokens[B_TOOL] = sgl_strdup("<tool>");
    tokens[B_IME2] = sgl_strdup("<|im_end|>!!");
    types[B_TOOL] = types[B_IME2] = TOK_TYPE_USER_DEFINED;

    gguf_writer *w = gguf_writer_new();
    gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_writer_set_str(w, "tokenizer.ggml.pre", pre);
    gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)tokens, B_N);
    gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", types, B_N);
    gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", bpe_merges, SGL_ARRAY_LEN(bpe_merges));
    gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", B_IMS);
    gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", B_IME);
    gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", add_bos);
    sgl_tokenizer *tok = tok_from_writer(w, "make_bpe");
    for (int i = 0; i < B_N; i++) free(tokens[i]);
    return tok;
}

/* Encodes and compares with the expected ids (terminated by -1). */
static bool enc_is(const sgl_tokenizer *tok, const char *text, unsigned flags, const int32_t *want) {
    int32_t *ids;
    size_t n, k = 0;
    if (tok_encode_ex(tok, text, strlen(text), flags, &ids, &n, NULL)) return false;
    bool ok = true;
    for (; want[k] >= 0; k++) ok = ok && k < n && ids[k] == want[k];
    ok = ok && k == n;
    if (!ok) {
        fprintf(stderr, "  encode \"%s\": got", text);
        for (size_t i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, "\n");
    }
    free(ids);
    return ok;
}
#define ENC_IS(tok, text, flags, ...) enc_is(tok, text, flags, (const int32_t[]){__VA_ARGS__, -1})

/* ---- byte-level BPE ----------------------------------------------------- */

static void test_bpe_merges(void) {
    sgl_tokenizer *tok = make_bpe("gpt2", false);
    CHECK(tok != NULL);
    if (!tok) return;
    CHECK_INT(tok_vocab_size(tok), B_N);
    /* "Ġ t" (0) then "h e" (1) then "Ġt he" (2). */
    CHECK(ENC_IS(tok, " the", 0, B_M(2)));
    /* "h e" (1) outranks "l l" (3); once h+e merged, "e ll" and "h ell"
     * can no longer apply: he | ll | o. */
    CHECK(ENC_IS(tok, "hello", 0, B_M(1), B_M(3), B_BYTE('o')));
    /* " world": Ġ+w (6), o+r (7), Ġw+or (8), then l, d. */
    CHECK(ENC_IS(tok, " world", 0, B_M(8), B_BYTE('l'), B_BYTE('d')));
    /* rank beats position: "b c" (11) before "a b" (12). */
    CHECK(ENC_IS(tok, "abc", 0, B_BYTE('a'), B_M(11)));
    /* equal ranks go left first. */
    CHECK(ENC_IS(tok, "aaa", 0, B_M(13), B_BYTE('a')));
    CHECK(ENC_IS(tok, "aaaa", 0, B_M(13), B_M(13)));
    /* merges never cross words: "a" "  " ... */
    CHECK(ENC_IS(tok, "the the", 0, B_BYTE('t'), B_M(1), B_M(2)));
    /* U+1F600 = F0 9F 98 80 -> "ðŁ" + "ĺĢ" */
    CHECK(ENC_IS(tok, "\xF0\x9F\x98\x80", 0, B_M(9), B_M(10)));
    /* invalid UTF-8 still encodes, byte by byte */
    CHECK(ENC_IS(tok, "\xFF\xC3(", 0, B_BYTE(0xFF), B_BYTE(0xC3), B_BYTE('(')));
    int32_t *ids;
    size_t n;
    CHECK(tok_encode(tok, "", 0, true, &ids, &n, NULL) == 0 && ids != NULL && n == 0);
    free(ids);
    tok_free(tok);
}

static void test_bpe_vocab(void) {
    sgl_tokenizer *tok = make_bpe("smollm", true);
    if (!tok) return;
    CHECK_STR(tok_model_kind(tok), "gpt2");
    CHECK_STR(tok_pre_kind(tok), "smollm");
    CHECK_INT(tok_find(tok, "Ġthe"), B_M(2));
    CHECK_INT(tok_find(tok, "<|im_end|>"), B_IME);
    CHECK_INT(tok_find(tok, "nope"), -1);
    size_t len;
    const char *p = tok_piece(tok, B_M(2), &len);
    CHECK(len == 4 && memcmp(p, " the", 4) == 0);
    p = tok_piece(tok, B_BYTE(0), &len);
    CHECK(len == 1 && p[0] == 0);
    p = tok_piece(tok, B_IME, &len);
    CHECK(len == 10 && memcmp(p, "<|im_end|>", 10) == 0);
    CHECK(tok_piece(tok, B_N, &len) == NULL && len == 0);
    CHECK_STR(tok_text(tok, B_BYTE(' ')), "Ġ");
    CHECK_INT(tok_bos(tok), B_IMS);
    CHECK_INT(tok_eos(tok), B_IME);
    CHECK(tok_add_bos(tok));
    CHECK(tok_is_eog(tok, B_IME));
    CHECK(tok_is_eog(tok, B_EOT)); /* <|endoftext|> by name */
    CHECK(!tok_is_eog(tok, B_IMS));
    size_t ne;
    const int32_t *eog = tok_eog_ids(tok, &ne);
    CHECK(ne == 2 && eog[0] == B_EOT && eog[1] == B_IME);
    CHECK_INT(tok_token_type(tok, B_IME), TOK_TYPE_CONTROL);
    CHECK_INT(tok_token_type(tok, B_TOOL), TOK_TYPE_USER_DEFINED);
    CHECK_INT(tok_token_type(tok, -1), TOK_TYPE_UNDEFINED);
    CHECK(tok_max_piece_len(tok) == strlen("<|endoftext|>"));
    /* BOS only with TOK_ENC_ADD_SPECIAL (the GGUF asks for it here). */
    CHECK(ENC_IS(tok, "a", TOK_ENC_ADD_SPECIAL, B_IMS, B_BYTE('a')));
    CHECK(ENC_IS(tok, "a", 0, B_BYTE('a')));
    /* smollm: digits one by one */
    CHECK(ENC_IS(tok, "12", 0, B_BYTE('1'), B_BYTE('2')));
    tok_free(tok);
}

static void test_special_tokens(void) {
    sgl_tokenizer *tok = make_bpe("gpt2", false);
    if (!tok) return;
    CHECK(ENC_IS(tok, "a<|im_end|>b", TOK_ENC_PARSE_SPECIAL, B_BYTE('a'), B_IME, B_BYTE('b')));
    CHECK(ENC_IS(tok, "<|im_start|><|im_end|>", TOK_ENC_PARSE_SPECIAL, B_IMS, B_IME));
    /* longest match: the user-defined "<|im_end|>!!" wins over "<|im_end|>" */
    CHECK(ENC_IS(tok, "<|im_end|>!!", TOK_ENC_PARSE_SPECIAL, B_IME2));
    CHECK(ENC_IS(tok, "<|im_end|>!", TOK_ENC_PARSE_SPECIAL, B_IME, B_BYTE('!')));
    /* a partial marker is plain text */
    CHECK(ENC_IS(tok, "<|im", TOK_ENC_PARSE_SPECIAL, B_BYTE('<'), B_BYTE('|'), B_BYTE('i'),
                 B_BYTE('m')));
    /* without parse_special, control tokens are text; user-defined ones are
     * still matched (as llama.cpp does) */
    int32_t *ids;
    size_t n;
    CHECK(tok_encode(tok, "<|im_end|>", 10, false, &ids, &n, NULL) == 0);
    CHECK_INT(n, 10);
    for (size_t i = 0; i < n; i++) CHECK(ids[i] != B_IME);
    free(ids);
    CHECK(ENC_IS(tok, "x<tool>", 0, B_BYTE('x'), B_TOOL));
    /* the text around a special token is pre-tokenized on its own */
    CHECK(ENC_IS(tok, " t<|im_end|>he", TOK_ENC_PARSE_SPECIAL, B_M(0), B_IME, B_M(1)));

    sgl_strbuf sb = {0};
    int32_t seq[] = {B_IMS, B_M(2), B_IME, B_TOOL};
    CHECK(tok_decode(tok, seq, 4, &sb, false) == 0);
    CHECK_STR(sb.data, "<|im_start|> the<|im_end|><tool>");
    sgl_strbuf_clear(&sb);
    CHECK(tok_decode(tok, seq, 4, &sb, true) == 0);
    CHECK_STR(sb.data, " the<tool>");
    int32_t bad = B_N;
    CHECK(tok_decode(tok, &bad, 1, &sb, false) == -1);
    sgl_strbuf_free(&sb);
    tok_free(tok);
}

/* ---- pre-tokenizers against HF ------------------------------------------ */

static void test_pretokenizers(void) {
    static const char *const pres[] = {"gpt2", "llama-bpe", "qwen2", "smollm"};
    sgl_tokenizer *toks[4];
    for (int i = 0; i < 4; i++) toks[i] = make_bpe(pres[i], false);
    size_t flen;
    sgl_error err = {0};
    char *data = sgl_read_file(splits_path, &flen, &err);
    CHECK_MSG(data != NULL, "%s", err.msg);
    int n_lines = 0, expected = -1, match[4] = {0}, shown = 0;
    for (char *line = data; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        cJSON *j = cJSON_Parse(line);
        CHECK(j != NULL);
        const cJSON *text = j ? cJSON_GetObjectItemCaseSensitive(j, "text") : NULL;
        if (j && !cJSON_IsString(text)) {
            const cJSON *c = cJSON_GetObjectItemCaseSensitive(j, "count");
            if (cJSON_IsNumber(c)) expected = c->valueint;
        } else if (j) {
            n_lines++;
            for (int p = 0; p < 4; p++) {
                if (!toks[p]) continue;
                const cJSON *want = cJSON_GetObjectItemCaseSensitive(j, pres[p]);
                size_t *ends, n;
                CHECK(tok_pretokenize(toks[p], text->valuestring, strlen(text->valuestring), &ends,
                                      &n, NULL) == 0);
                bool ok = (size_t)cJSON_GetArraySize(want) == n;
                size_t k = 0;
                for (const cJSON *v = want ? want->child : NULL; ok && v; v = v->next, k++)
                    ok = (size_t)v->valuedouble == ends[k];
                if (ok) match[p]++;
                else if (shown++ < 10) {
                    fprintf(stderr, "  %s split differs for \"%s\": got", pres[p], text->valuestring);
                    for (size_t i = 0; i < n; i++) fprintf(stderr, " %zu", ends[i]);
                    char *w = cJSON_PrintUnformatted(want);
                    fprintf(stderr, ", HF %s\n", w);
                    free(w);
                }
                free(ends);
            }
        }
        cJSON_Delete(j);
        line = nl ? nl + 1 : NULL;
    }
    free(data);
    CHECK_INT(n_lines, expected);
    CHECK(n_lines >= 2000);
    printf("pre-tokenizer splits identical to HF: gpt2 %d/%d, llama-bpe %d/%d, qwen2 %d/%d, "
           "smollm %d/%d\n", match[0], n_lines, match[1], n_lines, match[2], n_lines, match[3],
           n_lines);
    for (int p = 0; p < 4; p++) {
        CHECK_INT(match[p], n_lines);
        tok_free(toks[p]);
    }
}

/* A few splits derived by hand from the regexes (the fixture covers many more). */
static void test_pretokenizer_cases(void) {
    static const struct {
        const char *pre, *text, *words; /* words separated by '|' */
    } cases[] = {
        {"gpt2", "Hello world", "Hello| world"},
        {"gpt2", "I'm  here\n\n", "I|'m| | here|\n\n"},
        {"gpt2", "x   y", "x|  | y"},
        {"gpt2", "'S", "'|S"},
        {"gpt2", "a1234b", "a|1234|b"},
        {"llama-bpe", "I'M 12345", "I|'M| |123|45"},
        {"llama-bpe", "a\n\n b", "a|\n\n| b"},
        {"llama-bpe", "x ...\n\ny", "x| ...\n\n|y"},
        {"llama-bpe", "\tword", "\tword"},
        {"llama-bpe", "x'\xC5\xBF" "a", "x|'\xC5\xBF|a"}, /* (?i) folds U+017F to s (HF agrees) */
        {"qwen2", "12345", "1|2|3|4|5"},
        {"smollm", "a 12 b", "a| |1|2| b"},
    };
    for (size_t c = 0; c < SGL_ARRAY_LEN(cases); c++) {
        sgl_tokenizer *tok = make_bpe(cases[c].pre, false);
        if (!tok) continue;
        size_t *ends, n;
        const char *t = cases[c].text;
        CHECK(tok_pretokenize(tok, t, strlen(t), &ends, &n, NULL) == 0);
        sgl_strbuf got = {0};
        size_t prev = 0;
        for (size_t i = 0; i < n; i++) {
            if (i) sgl_strbuf_putc(&got, '|');
            sgl_strbuf_append(&got, t + prev, ends[i] - prev);
            prev = ends[i];
        }
        CHECK_MSG(got.data && strcmp(got.data, cases[c].words) == 0, "%s \"%s\": got \"%s\"",
                  cases[c].pre, t, got.data ? got.data : "");
        sgl_strbuf_free(&got);
        free(ends);
        tok_free(tok);
    }
}

/* ---- SentencePiece ------------------------------------------------------ */

enum { S_UNK, S_BOS, S_EOS, S_BYTE0 };
#define S_BYTE(b) (S_BYTE0 + (b))
enum { S_SP = S_BYTE0 + 256, S_H, S_E, S_L, S_O, S_W, S_SPH, S_LL, S_SPHE, S_LLO, S_N };

static sgl_tokenizer *make_spm(void) {
    static const char *const words[] = {"▁", "h", "e", "l", "o", "w", "▁h", "ll", "▁he", "llo"};
    static const float word_scores[] = {-1, -2, -2, -2, -2, -2, -3, -4, -5, -6};
    char *tokens[S_N];
    int32_t types[S_N];
    float scores[S_N];
    tokens[S_UNK] = sgl_strdup("<unk>");
    tokens[S_BOS] = sgl_strdup("<s>");
    tokens[S_EOS] = sgl_strdup("</s>");
    types[S_UNK] = TOK_TYPE_UNKNOWN;
    types[S_BOS] = types[S_EOS] = TOK_TYPE_CONTROL;
    scores[S_UNK] = scores[S_BOS] = scores[S_EOS] = 0;
    for (int b = 0; b < 256; b++) {
        char buf[8];
        snprintf(buf, sizeof buf, "<0x%02X>", b);
        tokens[S_BYTE(b)] = sgl_strdup(buf);
        types[S_BYTE(b)] = TOK_TYPE_BYTE;
        scores[S_BYTE(b)] = 0;
    }
    for (int i = 0; i < S_N - S_SP; i++) {
        tokens[S_SP + i] = sgl_strdup(words[i]);
        types[S_SP + i] = TOK_TYPE_NORMAL;
        scores[S_SP + i] = word_scores[i];
    }
    gguf_writer *w = gguf_writer_new();
    gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)tokens, S_N);
    gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", types, S_N);
    gguf_writer_set_arr_f32(w, "tokenizer.ggml.scores", scores, S_N);
    gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", S_BOS);
    gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", S_EOS);
    gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", S_UNK);
    sgl_tokenizer *tok = tok_from_writer(w, "make_spm");
    for (int i = 0; i < S_N; i++) free(tokens[i]);
    return tok;
}

static void test_spm(void) {
    sgl_tokenizer *tok = make_spm();
    CHECK(tok != NULL);
    if (!tok) return;
    CHECK_STR(tok_model_kind(tok), "llama");
    CHECK(tok_add_bos(tok)); /* SentencePiece default when the key is absent */
    /* "▁hello": ▁h (-3), then ll (-4), then ▁he (-5), then llo (-6). */
    CHECK(ENC_IS(tok, "hello", 0, S_SPHE, S_LLO));
    /* "é" is not in the vocabulary: byte fallback C3 A9. */
    CHECK(ENC_IS(tok, "hello wé", 0, S_SPHE, S_LLO, S_SP, S_W, S_BYTE(0xC3), S_BYTE(0xA9)));
    CHECK(ENC_IS(tok, "he", TOK_ENC_ADD_SPECIAL, S_BOS, S_SPHE));
    /* a special token, then text that gets its own "▁" prefix */
    CHECK(ENC_IS(tok, "he</s>he", TOK_ENC_PARSE_SPECIAL, S_SPHE, S_EOS, S_SPHE));
    size_t len;
    const char *p = tok_piece(tok, S_BYTE(0xC3), &len);
    CHECK(len == 1 && (uint8_t)p[0] == 0xC3);
    p = tok_piece(tok, S_SPHE, &len);
    CHECK(len == 3 && memcmp(p, " he", 3) == 0);
    int32_t ids[] = {S_BOS, S_SPHE, S_LLO, S_SP, S_W, S_BYTE(0xC3), S_BYTE(0xA9), S_EOS};
    sgl_strbuf sb = {0};
    CHECK(tok_decode(tok, ids, SGL_ARRAY_LEN(ids), &sb, true) == 0);
    CHECK_STR(sb.data, " hello wé");
    sgl_strbuf_free(&sb);
    CHECK(tok_is_eog(tok, S_EOS));
    tok_free(tok);
}

/* ---- streaming decoder -------------------------------------------------- */

/* Reference: replaces each maximal invalid subpart with U+FFFD (Unicode
 * 3.9 "best practice", what Python's errors="replace" does), written from
 * Table 3-7 independently of the tokenizer's code. */
static size_t ref_replace(const uint8_t *s, size_t n, char *out) {
    size_t i = 0, o = 0;
    while (i < n) {
        uint8_t b = s[i];
        if (b < 0x80) {
            out[o++] = (char)b;
            i++;
            continue;
        }
        int need = 0;
        uint8_t lo = 0x80, hi = 0xBF;
        if (b >= 0xC2 && b <= 0xDF) need = 1;
        else if (b == 0xE0) need = 2, lo = 0xA0;
        else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) need = 2;
        else if (b == 0xED) need = 2, hi = 0x9F;
        else if (b == 0xF0) need = 3, lo = 0x90;
        else if (b >= 0xF1 && b <= 0xF3) need = 3;
        else if (b == 0xF4) need = 3, hi = 0x8F;
        int k = 0;
        while (k < need && i + 1 + (size_t)k < n) {
            uint8_t c = s[i + 1 + k];
            if (c < (k == 0 ? lo : 0x80) || c > (k == 0 ? hi : 0xBF)) break;
            k++;
        }
        if (need && k == need) {
            memcpy(out + o, s + i, (size_t)need + 1);
            o += (size_t)need + 1;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
        }
        i += 1 + (size_t)(need && k == need ? need : k);
    }
    return o;
}

static bool valid_utf8(const char *s, size_t n) {
    char tmp[64 * 3];
    if (n > 64) return false;
    size_t m = ref_replace((const uint8_t *)s, n, tmp);
    return m == n && memcmp(tmp, s, n) == 0 && !memmem(s, n, "\xEF\xBF\xBD", 3);
}

/* Feeds ids one at a time; returns everything emitted (after flush) and
 * checks that each chunk is valid UTF-8 on its own. */
static size_t stream_all(const sgl_tokenizer *tok, const int32_t *ids, size_t n, char *out,
                         bool skip_special, bool *chunks_valid) {
    tok_stream st;
    tok_stream_init(&st, skip_special);
    char chunk[256];
    CHECK(tok_stream_cap(tok) <= sizeof chunk);
    size_t o = 0;
    *chunks_valid = true;
    for (size_t i = 0; i <= n; i++) {
        size_t m = i < n ? tok_stream_feed(&st, tok, ids[i], chunk, sizeof chunk)
                         : tok_stream_flush(&st, chunk, sizeof chunk);
        /* U+FFFD is fine in a chunk; broken sequences are not */
        char tmp[256 * 3];
        size_t r = ref_replace((const uint8_t *)chunk, m, tmp);
        if (r != m || memcmp(tmp, chunk, m) != 0) *chunks_valid = false;
        memcpy(out + o, chunk, m);
        o += m;
    }
    return o;
}

static void test_stream_splits(void) {
    sgl_tokenizer *tok = make_bpe("gpt2", false);
    if (!tok) return;
    /* Every multi-byte sequence split across single-byte tokens at every
     * position: nothing broken comes out, and the whole text does. */
    static const char *const texts[] = {"aé😀€b", "\xE2\x82\xAC\xF0\x9F\x98\x80", "日本語", "x\xCC\x81y",
                                        "\xF4\x8F\xBF\xBF!"};
    for (size_t t = 0; t < SGL_ARRAY_LEN(texts); t++) {
        const uint8_t *s = (const uint8_t *)texts[t];
        size_t n = strlen(texts[t]);
        tok_stream st;
        tok_stream_init(&st, false);
        char acc[128], chunk[256];
        size_t o = 0;
        for (size_t i = 0; i < n; i++) {
            size_t m = tok_stream_feed(&st, tok, B_BYTE(s[i]), chunk, sizeof chunk);
            memcpy(acc + o, chunk, m);
            o += m;
            /* the output so far is valid UTF-8 and a prefix of the text */
            CHECK(valid_utf8(acc, o));
            CHECK(o <= i + 1 && memcmp(acc, s, o) == 0);
        }
        CHECK(tok_stream_flush(&st, chunk, sizeof chunk) == 0);
        CHECK(o == n && memcmp(acc, s, n) == 0);
    }
    /* multi-byte tokens holding partial sequences: "ðŁ" (F0 9F) + "ĺĢ" (98 80) */
    int32_t emoji[] = {B_BYTE('a'), B_M(9), B_M(10)};
    char out[64];
    bool ok;
    size_t m = stream_all(tok, emoji, 3, out, false, &ok);
    CHECK(ok && m == 5 && memcmp(out, "a\xF0\x9F\x98\x80", 5) == 0);
    tok_stream st;
    tok_stream_init(&st, false);
    CHECK(tok_stream_feed(&st, tok, B_M(9), out, sizeof out) == 0); /* held back */
    CHECK_INT(tok_stream_feed(&st, tok, B_M(10), out, sizeof out), 4);
    tok_free(tok);
}

static void test_stream_invalid(void) {
    sgl_tokenizer *tok = make_bpe("gpt2", false);
    if (!tok) return;
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"\xC3(", "\xEF\xBF\xBD("},                  /* lead byte then ASCII */
        {"\xE2\x82", "\xEF\xBF\xBD"},                /* incomplete at the end: one U+FFFD */
        {"\xF0\x9F\x98" "A", "\xEF\xBF\xBD" "A"},    /* truncated 4-byte sequence */
        {"\xED\xA0\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"}, /* surrogate: 3 */
        {"\xC0\xAF", "\xEF\xBF\xBD\xEF\xBF\xBD"},    /* overlong */
        {"\x80\xBF", "\xEF\xBF\xBD\xEF\xBF\xBD"},    /* stray continuations */
        {"\xF5\x80", "\xEF\xBF\xBD\xEF\xBF\xBD"},    /* beyond U+10FFFF */
    };
    for (size_t c = 0; c < SGL_ARRAY_LEN(cases); c++) {
        int32_t ids[8];
        size_t n = strlen(cases[c].in);
        for (size_t i = 0; i < n; i++) ids[i] = B_BYTE((uint8_t)cases[c].in[i]);
        char out[64];
        bool ok;
        size_t m = stream_all(tok, ids, n, out, false, &ok);
        CHECK_MSG(ok && m == strlen(cases[c].out) && memcmp(out, cases[c].out, m) == 0,
                  "case %zu", c);
    }
    /* Random byte strings from a UTF-8-hostile alphabet, one token per byte
     * and grouped into the two-byte tokens where they occur: the stream's
     * output equals the reference decoding of the whole. */
    static const uint8_t alpha[] = {'a', ' ', 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC2, 0xC3,
                                    0xDF, 0xE0, 0xE1, 0xED, 0xEF, 0xF0, 0xF1, 0xF4, 0xF5, 0xFF};
    uint64_t rng = 12345;
    int bad = 0;
    for (int it = 0; it < 5000; it++) {
        uint8_t s[16];
        int32_t ids[16];
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        size_t n = (rng >> 33) % 16;
        for (size_t i = 0; i < n; i++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            s[i] = alpha[(rng >> 33) % sizeof alpha];
            ids[i] = B_BYTE(s[i]);
        }
        char want[64], got[64];
        size_t wn = ref_replace(s, n, want);
        bool ok;
        size_t gn = stream_all(tok, ids, n, got, false, &ok);
        if (!ok || gn != wn || memcmp(got, want, wn) != 0) bad++;
    }
    CHECK_INT(bad, 0);
    /* skip_special drops control tokens only */
    int32_t ids[] = {B_IMS, B_BYTE('h'), B_IME, B_TOOL};
    char out[64];
    bool ok;
    size_t m = stream_all(tok, ids, 4, out, true, &ok);
    CHECK(m == 7 && memcmp(out, "h<tool>", 7) == 0);
    m = stream_all(tok, ids, 4, out, false, &ok);
    CHECK(m == 29 && memcmp(out, "<|im_start|>h<|im_end|><tool>", 29) == 0);
    tok_free(tok);
}

/* ---- uni_utf8_repair ------------------------------------------------------ */

/* out = repair of s[0..n) fed in pieces cut at every position in cuts
 * (stream mode, held bytes passed again in front of the next piece), then
 * a last call without the flag. Returns the length written. */
static size_t repair_pieces(const uint8_t *s, size_t n, const size_t *cuts, size_t n_cuts, char *out) {
    char buf[64];
    size_t nb = 0, o = 0, from = 0;
    for (size_t c = 0; c <= n_cuts; c++) {
        size_t to = c < n_cuts ? cuts[c] : n;
        memcpy(buf + nb, s + from, to - from);
        nb += to - from;
        from = to;
        size_t held = 0;
        o += uni_utf8_repair(buf, nb, out + o, c < n_cuts ? UNI_REPAIR_STREAM : 0, &held);
        memmove(buf, buf + nb - held, held);
        nb = held;
    }
    return o;
}

static void test_utf8_repair(void) {
    /* Expected outputs are Python 3's bytes.decode("utf-8", "replace")
     * re-encoded, generated with .venv/bin/python and pasted here. */
    static const struct {
        const char *in;
        size_t n;
        const char *out;
        size_t out_n;
    } cases[] = {
        {"abc", 3, "abc", 3},
        {"\xC3\xA9", 2, "\xC3\xA9", 2},
        {"\xC3(", 2, "\xEF\xBF\xBD(", 4},
        {"\xE2\x82", 2, "\xEF\xBF\xBD", 3},
        {"\xE2\x82(", 3, "\xEF\xBF\xBD(", 4},
        {"\xF0\x9F\x98" "A", 4, "\xEF\xBF\xBD" "A", 4},
        {"\xF0\x9F\x98", 3, "\xEF\xBF\xBD", 3},
        {"\xED\xA0\x80", 3, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD", 9},
        {"\xC0\xAF", 2, "\xEF\xBF\xBD\xEF\xBF\xBD", 6},
        {"\x80\xBF", 2, "\xEF\xBF\xBD\xEF\xBF\xBD", 6},
        {"\xF5\x80", 2, "\xEF\xBF\xBD\xEF\xBF\xBD", 6},
        {"\xE0\x80\x80", 3, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD", 9},
        {"\xE0\xA0", 2, "\xEF\xBF\xBD", 3},
        {"\xF4\x90\x80\x80", 4, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD", 12},
        {"\xF4\x8F\xBF\xBF", 4, "\xF4\x8F\xBF\xBF", 4},
        {"\xFF", 1, "\xEF\xBF\xBD", 3},
        {"\xFE\xFF", 2, "\xEF\xBF\xBD\xEF\xBF\xBD", 6},
        {"\xC2", 1, "\xEF\xBF\xBD", 3},
        {"a\xC2", 2, "a\xEF\xBF\xBD", 4},
        {"\xE1\x80\xE1\x80\x80", 5, "\xEF\xBF\xBD\xE1\x80\x80", 6},
        {"\xF1\x80\x80\xF1\x80\x80\x80", 7, "\xEF\xBF\xBD\xF1\x80\x80\x80", 7},
        {"\xC3\xA9\xC3", 3, "\xC3\xA9\xEF\xBF\xBD", 5},
        {"\xEF\xBF\xBD", 3, "\xEF\xBF\xBD", 3},
        {"\xE2\x82\xAC\xE2", 4, "\xE2\x82\xAC\xEF\xBF\xBD", 6},
        {"\xF0\x80\x80\x80", 4, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD", 12},
        {"\xC1\xBF", 2, "\xEF\xBF\xBD\xEF\xBF\xBD", 6},
        {"\xED\x9F\xBF", 3, "\xED\x9F\xBF", 3},
        {"\xEE\x80\x80", 3, "\xEE\x80\x80", 3},
        {"x\x80y\xBFz", 5, "x\xEF\xBF\xBDy\xEF\xBF\xBDz", 9},
        {"\xF0\x9F\x98\x80\xF0\x9F", 6, "\xF0\x9F\x98\x80\xEF\xBF\xBD", 7},
        {"\xE2(\xA1", 3, "\xEF\xBF\xBD(\xEF\xBF\xBD", 7},
        {"\xF0(\x8C\xBC", 4, "\xEF\xBF\xBD(\xEF\xBF\xBD\xEF\xBF\xBD", 10},
        {"\xF8\x88\x80\x80\x80", 5, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD", 15},
        {"a\x00" "b", 3, "a\x00" "b", 3},
    };
    for (size_t c = 0; c < SGL_ARRAY_LEN(cases); c++) {
        char out[64];
        size_t m = uni_utf8_repair(cases[c].in, cases[c].n, out, 0, NULL);
        CHECK_MSG(m == cases[c].out_n && memcmp(out, cases[c].out, m) == 0, "case %zu: got %zu bytes", c, m);
        /* stream mode: each piece (cut anywhere) gives the same bytes */
        for (size_t cut = 0; cut <= cases[c].n; cut++) {
            char got[64];
            size_t g = repair_pieces((const uint8_t *)cases[c].in, cases[c].n, &cut, 1, got);
            CHECK_MSG(g == m && memcmp(got, out, m) == 0, "case %zu cut at %zu", c, cut);
        }
    }
    /* Stream mode holds back exactly an incomplete, valid-so-far tail. */
    char out[64];
    size_t held = 9;
    CHECK_INT(uni_utf8_repair("ab\xF0\x9F\x98", 5, out, UNI_REPAIR_STREAM, &held), 2);
    CHECK_INT(held, 3);
    CHECK_INT(uni_utf8_repair("ab\xF0\x28", 4, out, UNI_REPAIR_STREAM, &held), 6);
    CHECK_INT(held, 0);
    CHECK_INT(uni_utf8_repair("\xC3\xA9\xED\xA0", 4, out, UNI_REPAIR_STREAM, &held), 8); /* ED A0: no */
    CHECK_INT(held, 0);
    /* UNI_REPAIR_NUL: a NUL byte becomes U+FFFD as well. */
    size_t m = uni_utf8_repair("a\0b", 3, out, UNI_REPAIR_NUL, NULL);
    CHECK(m == 5 && memcmp(out, "a\xEF\xBF\xBD" "b", 5) == 0);
    /* Random strings from a UTF-8-hostile alphabet: whole, and in pieces cut
     * at random places, equal the reference decoding. */
    static const uint8_t alpha[] = {'a', 0, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC2, 0xC3,
                                    0xDF, 0xE0, 0xE1, 0xED, 0xEF, 0xF0, 0xF1, 0xF4, 0xF5, 0xFF};
    uint64_t rng = 777;
    int bad = 0;
    for (int it = 0; it < 20000; it++) {
        uint8_t s[16];
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        size_t n = (rng >> 33) % 16, cuts[4], n_cuts = 0;
        for (size_t i = 0; i < n; i++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            s[i] = alpha[(rng >> 33) % sizeof alpha];
        }
        for (size_t k = 0; k < 4 && n > 0; k++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            size_t at = (rng >> 33) % (n + 1);
            if (n_cuts == 0 || at >= cuts[n_cuts - 1]) cuts[n_cuts++] = at;
        }
        char want[64], got[64], pieces[64];
        size_t wn = ref_replace(s, n, want);
        size_t gn = uni_utf8_repair((const char *)s, n, got, 0, NULL);
        size_t pn = repair_pieces(s, n, cuts, n_cuts, pieces);
        if (gn != wn || memcmp(got, want, wn) != 0 || pn != wn || memcmp(pieces, want, wn) != 0) bad++;
    }
    CHECK_INT(bad, 0);
}

/* ---- chat templates ----------------------------------------------------- */

/* SmolLM2-135M-Instruct's tokenizer.chat_template, as in its GGUF. */
static const char smollm2_template[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}";

/* Qwen2-style: the newlines are written as \n escapes inside Jinja strings. */
static const char qwen2_template[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

static const char llama3_template[] =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | "
    "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

/* Llama-2-chat's template. */
static const char llama2_template[] =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages "
    "%}{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception("
    "'Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + "
    "system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = "
    "message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' "
    "+ content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + "
    "content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

static bool render_is(const chat_template *ct, const chat_msg *m, size_t n, bool gen,
                      const char *want) {
    sgl_strbuf sb = {0};
    sgl_error err = {0};
    int rc = chat_render(ct, m, n, gen, &sb, &err);
    bool ok = rc == 0 && strcmp(sb.data ? sb.data : "", want) == 0;
    if (!ok) fprintf(stderr, "  render: rc %d (%s), got:\n%s\n  want:\n%s\n", rc, err.msg,
                     sb.data ? sb.data : "", want);
    sgl_strbuf_free(&sb);
    return ok;
}

static void test_chat_chatml(void) {
    chat_template *ct = chat_template_from_text(smollm2_template, NULL, NULL);
    CHECK(ct != NULL);
    if (!ct) return;
    CHECK_STR(chat_template_family(ct), "chatml");
    CHECK_STR(chat_template_default_system(ct),
              "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
    CHECK_STR(chat_template_begin(ct), "");
    CHECK_STR(chat_role_prefix(ct, "user"), "<|im_start|>user\n");
    CHECK_STR(chat_role_suffix(ct, "assistant"), "<|im_end|>\n");
    CHECK_STR(chat_role_prefix(ct, "system"), "<|im_start|>system\n");
    chat_msg one[] = {{"user", "Hi"}};
    CHECK(render_is(ct, one, 1, true,
                    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                    "Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                    "<|im_start|>assistant\n"));
    chat_msg conv[] = {{"system", "Be brief."}, {"user", " 2+2? "}, {"assistant", "4"}};
    CHECK(render_is(ct, conv, 3, false,
                    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n 2+2? "
                    "<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"));
    CHECK(render_is(ct, NULL, 0, true, "<|im_start|>assistant\n"));
    chat_template_free(ct);

    ct = chat_template_from_text(qwen2_template, NULL, NULL);
    CHECK_STR(chat_template_default_system(ct), "You are a helpful assistant.");
    CHECK(render_is(ct, one, 1, false,
                    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                    "<|im_start|>user\nHi<|im_end|>\n"));
    chat_template_free(ct);

    ct = chat_template_from_family("chatml", NULL);
    CHECK(chat_template_default_system(ct) == NULL);
    CHECK(render_is(ct, one, 1, false, "<|im_start|>user\nHi<|im_end|>\n"));
    chat_template_free(ct);
}

static void test_chat_llama(void) {
    chat_template *ct = chat_template_from_text(llama3_template, NULL, NULL);
    CHECK_STR(chat_template_family(ct), "llama-3");
    CHECK_STR(chat_template_begin(ct), "<|begin_of_text|>");
    CHECK_STR(chat_role_prefix(ct, "user"), "<|start_header_id|>user<|end_header_id|>\n\n");
    CHECK_STR(chat_role_suffix(ct, "user"), "<|eot_id|>");
    chat_msg conv[] = {{"system", " Be brief. "}, {"user", "Hi\n"}};
    CHECK(render_is(ct, conv, 2, true,
                    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief."
                    "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\n"));
    chat_template_free(ct);

    ct = chat_template_from_text(llama2_template, NULL, NULL);
    CHECK_STR(chat_template_family(ct), "llama-2");
    chat_msg conv2[] = {{"system", "S"}, {"user", " U1 "}, {"assistant", "A1"}, {"user", "U2"}};
    CHECK(render_is(ct, conv2, 4, true,
                    "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\n U1 [/INST] A1 </s><s>[INST] U2 [/INST]"));
    chat_msg conv3[] = {{"user", "Q"}};
    CHECK(render_is(ct, conv3, 1, false, "<s>[INST] Q [/INST]"));
    chat_msg bad[] = {{"user", "a"}, {"user", "b"}};
    sgl_strbuf sb = {0};
    sgl_error err = {0};
    CHECK(chat_render(ct, bad, 2, false, &sb, &err) == -1);
    CHECK(strstr(err.msg, "alternate") != NULL);
    sgl_strbuf_free(&sb);
    chat_template_free(ct);
}

static void test_chat_plain_and_gguf(void) {
    chat_template *ct = chat_template_from_text(NULL, NULL, NULL);
    CHECK_STR(chat_template_family(ct), "plain");
    chat_msg conv[] = {{"system", "S"}, {"user", "U"}};
    CHECK(render_is(ct, conv, 2, true, "SYSTEM:S\nUSER:U\nASSISTANT:"));
    chat_template_free(ct);
    sgl_error err = {0};
    CHECK(chat_template_from_family("nope", &err) == NULL && strstr(err.msg, "nope"));

    /* an unrecognised template with <|im_start|> in the vocabulary -> chatml */
    sgl_tokenizer *tok = make_bpe("gpt2", false);
    ct = chat_template_from_text("{{ messages }}", tok, NULL);
    CHECK_STR(chat_template_family(ct), "chatml");
    chat_template_free(ct);
    ct = chat_template_from_text("{{ messages }}", NULL, NULL);
    CHECK_STR(chat_template_family(ct), "plain");
    chat_template_free(ct);

    /* from a GGUF file's tokenizer.chat_template */
    gguf_writer *w = gguf_writer_new();
    gguf_writer_set_str(w, "tokenizer.chat_template", smollm2_template);
    uint8_t *buf = NULL;
    uint64_t len = 0;
    CHECK(gguf_writer_to_memory(w, &buf, &len, &err) == 0);
    gguf_file *f = gguf_open_memory(buf, len, &err);
    CHECK(f != NULL);
    if (f) {
        ct = chat_template_from_gguf(f, tok, &err);
        CHECK_STR(chat_template_family(ct), "chatml");
        CHECK(chat_template_default_system(ct) != NULL);
        chat_template_free(ct);
        gguf_close(f);
    }
    free(buf);
    gguf_writer_free(w);
    tok_free(tok);
}

int main(int argc, char **argv) {
    splits_path = argc > 1 ? argv[1] : "tests/tokenizer/pretok_splits.jsonl";
    TEST_RUN(test_bpe_merges);
    TEST_RUN(test_bpe_vocab);
    TEST_RUN(test_special_tokens);
    TEST_RUN(test_pretokenizer_cases);
    TEST_RUN(test_pretokenizers);
    TEST_RUN(test_spm);
    TEST_RUN(test_stream_splits);
    TEST_RUN(test_stream_invalid);
    TEST_RUN(test_utf8_repair);
    TEST_RUN(test_chat_chatml);
    TEST_RUN(test_chat_llama);
    TEST_RUN(test_chat_plain_and_gguf);
    return TEST_DONE();
}
