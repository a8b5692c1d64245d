/* fuzz_constrain: libFuzzer target over the constraint compiler: the regex
 * parser, the JSON-schema compiler and the grammar parser (and, for inputs
 * that compile, the matcher: masks over a small vocabulary, forced bytes,
 * completion, probing and matching the input itself). The first byte picks
 * the kind (0 regex, 1 schema, 2 grammar, 3 choices; built with
 * -DFUZZ_KIND=k every input is of kind k). Any crash, hang, leak or sanitizer
 * report is a bug; an error diagnostic is a normal outcome.
 *
 * Build and run one kind for ten minutes (ASan + UBSan):
 *   clang -std=c11 -g -O1 -D_GNU_SOURCE -DFUZZ_KIND=0 -fsanitize=fuzzer,address,undefined \
 *     -I. fuzz/fuzz_constrain.c runtime/constrain/\*.c util/util.c -lcjson -lm -lpthread -o fz
 *   mkdir -p corpus && cp fuzz/corpus_constrain/regex_* corpus/ && ./fz -max_total_time=600 corpus
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/constrain/constrain.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const pieces[] = {"a", "b", "ab", "\"", "{", "}", "[", "]", ",", ":", " ", "0", "1", "12",
                                     "true", "null", "\xc3\xa9", "\xc3", "\xa9", "\n", "x\"", "\"}", "</s>"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
#ifdef FUZZ_KIND
    int kind = FUZZ_KIND;
#else
    if (size == 0) return 0;
    int kind = data[0] & 3;
    data++;
    size--;
#endif
    static const cons_kind kinds[4] = {CONS_REGEX, CONS_JSON_SCHEMA, CONS_GRAMMAR, CONS_CHOICES};
    cons_options opt = cons_options_default();
    opt.max_states = 2000; /* keeps each input fast; the budget error is a normal outcome */
    opt.ws_flexible = size & 1;
    cons_diag d;
    cons_program *p = cons_compile(kinds[kind], (const char *)data, size, &opt, &d);
    if (!p) return 0;
    enum { NV = sizeof pieces / sizeof pieces[0] };
    size_t lens[NV];
    bool special[NV] = {0};
    for (int i = 0; i < NV; i++) lens[i] = strlen(pieces[i]);
    special[NV - 1] = true;
    int32_t eos = NV - 1;
    sgl_error err;
    cons_vocab *v = cons_vocab_new(NV, pieces, lens, special, &eos, 1, &err);
    cons_matcher *m = v ? cons_matcher_new(p, v, "a", size & 2 ? 1 : 0, &err) : NULL;
    if (m) {
        uint32_t mask[1];
        char buf[64];
        for (int step = 0; step < 16; step++) {
            int32_t n = cons_matcher_mask(m, mask);
            size_t nf = cons_matcher_forced(m, buf, sizeof buf);
            if (nf && step % 2) {
                cons_matcher_accept_bytes(m, buf, nf);
                continue;
            }
            if (n <= 0) break;
            int32_t t = -1;
            for (int32_t k = (step * 7) % NV, c = 0; c < NV; c++, k = (k + 1) % NV)
                if ((mask[0] >> k) & 1) {
                    t = k;
                    break;
                }
            if (t < 0 || cons_matcher_accept_token(m, t) != 0 || t == eos) break;
        }
        cons_matcher_can_continue(m);
        cons_matcher_complete(m, buf, sizeof buf);
        cons_matcher_probe(m, (const char *)data, size < 64 ? size : 64);
        cons_matcher *c = cons_matcher_clone(m, &err);
        cons_matcher_free(c);
        cons_matcher_free(m);
    }
    cons_vocab_free(v);
    cons_program_match(p, (const char *)data, size);
    cons_program_release(p);
    return 0;
}
