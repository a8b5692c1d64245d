/* fuzz_gguf: libFuzzer target over the GGUF reader, from memory: the
 * validating open (header, metadata, tensor infos, extents, overlaps, the
 * byte size of every tensor against its type and shape), then every getter
 * over what it accepted, the tokenizer loader, and the weight scan of
 * `model-info --verify` on each tensor. Any crash, hang, leak or sanitizer
 * report is a bug; a rejected file is fine. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/gguf.h"
#include "runtime/model.h"
#include "runtime/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* A private, exactly sized copy so reads past the end are caught. */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    sgl_error err;
    gguf_file *f = gguf_open_memory(buf, size, &err);
    if (f) {
        volatile uint64_t sink = 0;
        volatile double fsink = 0;
        for (uint64_t i = 0; i < f->n_kv; i++) {
            const gguf_kv *kv = &f->kv[i];
            const char *key = kv->key;
            sink += (uint64_t)gguf_get_int(f, key, 0);
            fsink += gguf_get_float(f, key, 0);
            sink += gguf_get_bool(f, key, false);
            char *s = gguf_get_string(f, key);
            free(s);
            uint64_t n = gguf_arr_len(f, key);
            for (uint64_t k = 0; k < n && k < 64; k++) {
                gguf_str st = gguf_arr_str(f, key, k);
                sink += st.len;
                sink += (uint64_t)gguf_arr_int(f, key, k, 0);
                fsink += gguf_arr_float(f, key, k, 0);
            }
        }
        for (uint64_t i = 0; i < f->n_tensors; i++) {
            const gguf_tensor *t = &f->tensors[i];
            sink += gguf_find_tensor(f, t->name) == t;
            model_tensor_check c;
            if (t->nbytes <= (1u << 20) && model_check_tensor(t, &c, &err) == 0) sink += c.n_nan;
        }
        sgl_tokenizer *tok = tok_load_gguf(f, &err);
        if (tok) {
            int32_t *ids = NULL;
            size_t n = 0;
            if (tok_encode(tok, "Hello, world! 123", 17, true, &ids, &n, &err) == 0) {
                sgl_strbuf sb = {0};
                tok_decode(tok, ids, n, &sb, false);
                sgl_strbuf_free(&sb);
            }
            free(ids);
            tok_free(tok);
        }
        (void)sink;
        (void)fsink;
        gguf_close(f);
    }
    free(buf);
    return 0;
}
