/* test_tokenizer_parity: our tokenizer, loaded from the real SmolLM2 GGUF,
 * against Hugging Face `tokenizers` on the corpus in smollm2_parity.jsonl
 * (made by gen_fixture.py). For every string: identical ids with special
 * tokens recognised; identical ids with them not recognised (when the
 * fixture has "ids_raw"); decode(encode(x)) == x; the streaming decoder fed
 * one id at a time reproduces x exactly.
 * Usage: test_tokenizer_parity FIXTURE   (model from $SGL_TEST_MODEL)
 */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/tokenizer.h"
#include "tests/test.h"

static sgl_tokenizer *tok;
static const char *fixture_path;
static int n_strings, n_bytes, n_id_match, n_raw, n_raw_match, n_roundtrip, n_stream;
static double encode_seconds;

static bool ids_equal(const int32_t *ids, size_t n, const cJSON *arr) {
    if ((size_t)cJSON_GetArraySize(arr) != n) return false;
    size_t i = 0;
    for (const cJSON *v = arr->child; v; v = v->next, i++)
        if (!cJSON_IsNumber(v) || (int32_t)v->valuedouble != ids[i]) return false;
    return true;
}

static void print_mismatch(const char *what, const char *text, const int32_t *ids, size_t n,
                           const cJSON *arr) {
    char *exp = cJSON_PrintUnformatted(arr);
    fprintf(stderr, "  %s mismatch for %.200s\n    got:     [", what, text);
    for (size_t i = 0; i < n; i++) fprintf(stderr, "%s%d", i ? "," : "", ids[i]);
    fprintf(stderr, "]\n    expected: %.2000s\n", exp ? exp : "?");
    free(exp);
}

/* decoded: what decoding the ids must give (the text, less bytes the
 * vocabulary cannot represent). */
static void check_one(const char *text, size_t len, const cJSON *ids_json, const cJSON *raw_json,
                      const char *decoded) {
    size_t dlen = strlen(decoded);
    int32_t *ids = NULL;
    size_t n = 0;
    sgl_error err = {0};
    double t0 = sgl_now();
    int rc = tok_encode(tok, text, len, true, &ids, &n, &err);
    encode_seconds += sgl_now() - t0;
    CHECK_MSG(rc == 0, "encode: %s", err.msg);
    if (rc) return;
    n_strings++;
    n_bytes += (int)len;
    if (ids_equal(ids, n, ids_json)) n_id_match++;
    else {
        CHECK_MSG(0, "ids differ from HF");
        print_mismatch("ids", text, ids, n, ids_json);
    }

    sgl_strbuf sb = {0};
    CHECK(tok_decode(tok, ids, n, &sb, false) == 0);
    if (sb.len == dlen && (dlen == 0 || memcmp(sb.data, decoded, dlen) == 0)) n_roundtrip++;
    else CHECK_MSG(0, "decode(encode(x)) != x for %.200s", text);
    sgl_strbuf_free(&sb);

    tok_stream st;
    tok_stream_init(&st, false);
    size_t cap = tok_stream_cap(tok);
    char *buf = malloc(cap);
    sgl_strbuf streamed = {0};
    for (size_t i = 0; i < n; i++)
        sgl_strbuf_append(&streamed, buf, tok_stream_feed(&st, tok, ids[i], buf, cap));
    sgl_strbuf_append(&streamed, buf, tok_stream_flush(&st, buf, cap));
    if (streamed.len == dlen && (dlen == 0 || memcmp(streamed.data, decoded, dlen) == 0))
        n_stream++;
    else CHECK_MSG(0, "streamed text != x for %.200s", text);
    sgl_strbuf_free(&streamed);
    free(buf);
    free(ids);

    if (raw_json) {
        n_raw++;
        CHECK(tok_encode(tok, text, len, false, &ids, &n, &err) == 0);
        if (ids_equal(ids, n, raw_json)) n_raw_match++;
        else {
            CHECK_MSG(0, "ids (special tokens as text) differ from HF");
            print_mismatch("ids_raw", text, ids, n, raw_json);
        }
        free(ids);
    }
}

static void test_corpus(void) {
    size_t flen;
    sgl_error err = {0};
    char *data = sgl_read_file(fixture_path, &flen, &err);
    CHECK_MSG(data != NULL, "%s", err.msg);
    if (!data) return;
    int expected_count = -1, line_no = 0;
    for (char *line = data; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        line_no++;
        cJSON *j = cJSON_Parse(line);
        CHECK_MSG(j != NULL, "%s:%d: bad JSON", fixture_path, line_no);
        if (j) {
            const cJSON *text = cJSON_GetObjectItemCaseSensitive(j, "text");
            const cJSON *count = cJSON_GetObjectItemCaseSensitive(j, "count");
            if (line_no == 1 && cJSON_IsNumber(count)) expected_count = count->valueint;
            else if (cJSON_IsString(text)) {
                const cJSON *dec = cJSON_GetObjectItemCaseSensitive(j, "decoded");
                check_one(text->valuestring, strlen(text->valuestring),
                          cJSON_GetObjectItemCaseSensitive(j, "ids"),
                          cJSON_GetObjectItemCaseSensitive(j, "ids_raw"),
                          cJSON_IsString(dec) ? dec->valuestring : text->valuestring);
            }
            cJSON_Delete(j);
        }
        line = nl ? nl + 1 : NULL;
    }
    free(data);
    CHECK_INT(n_strings, expected_count);
    CHECK(n_strings >= 2000);
    printf("parity: %d/%d strings identical ids (%d bytes); special tokens as text: %d/%d; "
           "decode(encode(x)) == x: %d/%d; streamed == x: %d/%d\n",
           n_id_match, n_strings, n_bytes, n_raw_match, n_raw, n_roundtrip, n_strings, n_stream,
           n_strings);
    printf("encode time: %.3f s for the corpus (%.2f MB/s)\n", encode_seconds,
           encode_seconds > 0 ? n_bytes / encode_seconds / 1e6 : 0.0);
}

static void test_metadata(void) {
    CHECK_INT(tok_vocab_size(tok), 49152);
    CHECK_STR(tok_model_kind(tok), "gpt2");
    CHECK_STR(tok_pre_kind(tok), "smollm");
    /* HF tokenizer.json: <|im_start|> = 1, <|im_end|> = 2 (= eos). */
    CHECK_INT(tok_find(tok, "<|im_start|>"), 1);
    CHECK_INT(tok_find(tok, "<|im_end|>"), 2);
    CHECK_INT(tok_eos(tok), 2);
    CHECK(tok_is_eog(tok, 2));
    CHECK(tok_is_eog(tok, 0)); /* <|endoftext|> */
    CHECK(!tok_is_eog(tok, 1));
    CHECK(!tok_add_bos(tok));
    CHECK_INT(tok_find(tok, "Ġthe"), 260);
    size_t len;
    const char *p = tok_piece(tok, 260, &len);
    CHECK(len == 4 && memcmp(p, " the", 4) == 0);
    CHECK_INT(tok_token_type(tok, 2), TOK_TYPE_CONTROL);
    CHECK(tok_is_special(tok, 2));
}

int main(int argc, char **argv) {
    const char *model = test_require_model();
    fixture_path = argc > 1 ? argv[1] : "tests/tokenizer/smollm2_parity.jsonl";
    sgl_error err = {0};
    gguf_file *f = gguf_open(model, &err);
    if (!f) {
        fprintf(stderr, "model %s: %s\n", model, err.msg);
        return 1;
    }
    tok = tok_load_gguf(f, &err);
    gguf_close(f);
    if (!tok) {
        fprintf(stderr, "tok_load_gguf: %s\n", err.msg);
        return 1;
    }
    TEST_RUN(test_metadata);
    TEST_RUN(test_corpus);
    tok_free(tok);
    return TEST_DONE();
}
