/* cons_test_util.h: helpers shared by the constraint tests and the
 * benchmark: a cons_vocab from a GGUF model's tokenizer, a seeded random
 * generator, and the slow reference mask (every token's bytes probed one
 * token at a time) that the trie-walk masks are compared with. */
#ifndef SGL_CONS_TEST_UTIL_H
#define SGL_CONS_TEST_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/constrain/constrain.h"
#include "runtime/gguf.h"
#include "runtime/tokenizer.h"

/* Token types that are never text: control and added (user-defined) tokens. */
static inline bool ctu_is_special(const sgl_tokenizer *tok, int32_t id) {
    int t = tok_token_type(tok, id);
    return t == TOK_TYPE_CONTROL || t == TOK_TYPE_USER_DEFINED || t == TOK_TYPE_UNUSED;
}

/* Loads the tokenizer of the model at path and indexes its vocabulary.
 * Returns the vocab (and *tok_out, owned by the caller) or NULL. */
static inline cons_vocab *ctu_load_vocab(const char *path, sgl_tokenizer **tok_out) {
    sgl_error err = {{0}};
    gguf_file *f = gguf_open(path, &err);
    if (!f) {
        fprintf(stderr, "%s\n", err.msg);
        return NULL;
    }
    sgl_tokenizer *tok = tok_load_gguf(f, &err);
    gguf_close(f);
    if (!tok) {
        fprintf(stderr, "%s\n", err.msg);
        return NULL;
    }
    int32_t n = tok_vocab_size(tok);
    const char **pieces = malloc(sizeof *pieces * (size_t)n);
    size_t *lens = malloc(sizeof *lens * (size_t)n);
    bool *special = malloc(sizeof *special * (size_t)n);
    for (int32_t i = 0; i < n; i++) {
        pieces[i] = tok_piece(tok, i, &lens[i]);
        special[i] = ctu_is_special(tok, i);
    }
    size_t n_eog = 0;
    const int32_t *eog = tok_eog_ids(tok, &n_eog);
    cons_vocab *v = cons_vocab_new(n, pieces, lens, special, eog, (int32_t)n_eog, &err);
    free(pieces);
    free(lens);
    free(special);
    if (!v) {
        fprintf(stderr, "%s\n", err.msg);
        tok_free(tok);
        return NULL;
    }
    *tok_out = tok;
    return v;
}

static inline uint64_t ctu_rand(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* The reference mask: token t allowed iff it is not special and its bytes
 * probe alive, EOS iff accepting. Returns the number allowed. */
static inline int32_t ctu_reference_mask(cons_matcher *m, const sgl_tokenizer *tok, uint32_t *mask,
                                         size_t words) {
    memset(mask, 0, words * 4);
    int32_t n = tok_vocab_size(tok), count = 0;
    bool acc = cons_matcher_accepting(m);
    for (int32_t t = 0; t < n; t++) {
        bool ok;
        if (tok_is_eog(tok, t)) {
            ok = acc;
        } else if (ctu_is_special(tok, t)) {
            ok = false;
        } else {
            size_t len;
            const char *p = tok_piece(tok, t, &len);
            ok = len > 0 && cons_matcher_probe(m, p, len);
        }
        if (ok) {
            mask[t >> 5] |= 1u << (t & 31);
            count++;
        }
    }
    return count;
}

#endif
