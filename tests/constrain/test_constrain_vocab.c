/* test_constrain_vocab.c: token masks against the slow reference.
 *
 * For each constraint, seeded random walks pick allowed tokens (and now and
 * then append the forced bytes, as jump-forward does); at every step the
 * trie-walk mask must equal the reference mask, in which each token's bytes
 * are probed through the automaton one token at a time. Usage:
 *   test_constrain_vocab TINY.gguf     (unit: the tiny model's vocabulary)
 *   test_constrain_vocab --model       (e2e: $SGL_TEST_MODEL's full vocabulary)
 * Also: masks computed by several threads at once equal the serial ones. */
#include <pthread.h>

#include "tests/constrain/cons_test_util.h"
#include "tests/test.h"

static cons_vocab *V;
static sgl_tokenizer *TOK;
static size_t WORDS;

typedef struct ccase {
    cons_kind kind;
    const char *text;
} ccase;

static const ccase cases[] = {
    {CONS_REGEX, "[a-z]+( [a-z]+)*\\."},
    {CONS_REGEX, "-?(0|[1-9]\\d*)(\\.\\d+)?([eE][+-]?\\d+)?"},
    {CONS_REGEX, "\\{\"name\": \"[^\"\\\\]{0,20}\", \"tags\": \\[(\"[a-z]+\"(, \"[a-z]+\")*)?\\]\\}"},
    {CONS_REGEX, "[\\w.+-]+@[\\w-]+\\.(com|org|net)"},
    {CONS_REGEX, "(cat|dog|bird)s? (and (cat|dog|bird)s? )*"},
    {CONS_REGEX, ".{0,12}"},
    {CONS_REGEX, "[\xc3\xa0-\xc3\xbf\xce\xb1-\xcf\x89 ]{1,8}"},
    {CONS_REGEX, "(<\\|im_end\\|>|<\\|im_start\\|>|[a-z ])*"},
    {CONS_REGEX, "\\d{4}-\\d{2}-\\d{2}"},
    {CONS_REGEX, "\"[^\"\\\\]{0,60}\"( and \"[a-z ]{10,70}\")?"}, /* counters: merged mask classes */
    {CONS_CHOICES, "[\"yes\", \"no\", \"maybe\", \"not sure\", \"noted\"]"},
    {CONS_JSON_SCHEMA, "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\",\"minimum\":1},"
                       "\"name\":{\"type\":\"string\",\"maxLength\":12},\"when\":{\"type\":\"string\","
                       "\"format\":\"date\"},\"ok\":{\"type\":\"boolean\"}},\"required\":[\"id\",\"name\"]}"},
    {CONS_JSON_SCHEMA, "{\"$defs\":{\"n\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"integer\"},"
                       "\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/n\"}}},\"required\":[\"v\"]}},"
                       "\"$ref\":\"#/$defs/n\"}"},
    {CONS_GRAMMAR, "root ::= expr\nexpr ::= term ((\" + \" | \" - \") term)*\n"
                   "term ::= num | \"(\" expr \")\"\nnum ::= [1-9] [0-9]{0,3}"},
    {CONS_GRAMMAR, "root ::= \"<\" name \">\" (text | root)* \"</\" name \">\"\n"
                   "name ::= [a-z]+\ntext ::= [^<>]+"},
    /* recursion around string interiors: the recogniser's plain-byte loops */
    {CONS_JSON_SCHEMA, "{\"$defs\":{\"n\":{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},"
                       "\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/n\"}}},\"required\":[\"name\"]}},"
                       "\"$ref\":\"#/$defs/n\"}"},
    /* long length bounds: DFAs determinised lazily, state by state */
    {CONS_JSON_SCHEMA, "{\"type\":\"object\",\"properties\":{\"title\":{\"type\":\"string\",\"maxLength\":80},"
                       "\"bullets\":{\"type\":\"array\",\"items\":{\"type\":\"string\",\"maxLength\":200},"
                       "\"minItems\":1,\"maxItems\":5}},\"required\":[\"title\",\"bullets\"]}"},
    {CONS_REGEX, "([a-z]{1,400},){1,6}[0-9]{0,50}"},
    /* atoms after "(" and " ": sets the walk cannot intern that loop on their bytes */
    {CONS_GRAMMAR, "root ::= sexp\nsexp ::= atom | \"(\" sexp (\" \" sexp)* \")\"\natom ::= [a-z0-9+*-]+\n"},
    {CONS_GRAMMAR, "root ::= \"(\" (item (\" \" item)*)? \")\"\n"
                   "item ::= root | \"\\\"\" [^\"\\\\]{0,40} \"\\\"\" | [a-z]+"},
};

static uint64_t seed = 0x5eed1234;

static void walk(cons_program *p, int steps, const char *what) {
    sgl_error err;
    cons_matcher *m = cons_matcher_new(p, V, NULL, 0, &err);
    uint32_t *mask = malloc(WORDS * 4), *ref = malloc(WORDS * 4);
    for (int s = 0; s < steps; s++) {
        int32_t n = cons_matcher_mask(m, mask);
        int32_t nr = ctu_reference_mask(m, TOK, ref, WORDS);
        CHECK_MSG(n == nr && memcmp(mask, ref, WORDS * 4) == 0, "%s step %d: mask %d tokens, reference %d",
                  what, s, n, nr);
        if (n != nr || memcmp(mask, ref, WORDS * 4) != 0) {
            for (int32_t t = 0; t < tok_vocab_size(TOK); t++)
                if (((mask[t >> 5] ^ ref[t >> 5]) >> (t & 31)) & 1) {
                    fprintf(stderr, "  token %d \"%s\": mask %d\n", t, tok_text(TOK, t),
                            (mask[t >> 5] >> (t & 31)) & 1);
                    break;
                }
            break;
        }
        if (n == 0) {
            CHECK(!cons_matcher_accepting(m));
            break;
        }
        char fb[64];
        size_t nf = cons_matcher_forced(m, fb, sizeof fb);
        if (nf && ctu_rand(&seed) % 3 == 0) {
            CHECK(cons_matcher_accept_bytes(m, fb, nf) == 0);
            continue;
        }
        int32_t k = (int32_t)(ctu_rand(&seed) % (uint64_t)n), t = -1;
        for (int32_t i = 0; i < tok_vocab_size(TOK); i++)
            if ((mask[i >> 5] >> (i & 31)) & 1 && k-- == 0) {
                t = i;
                break;
            }
        /* a token outside the mask is refused and leaves the matcher as it was */
        int32_t bad = (int32_t)(ctu_rand(&seed) % (uint64_t)tok_vocab_size(TOK));
        if (!((mask[bad >> 5] >> (bad & 31)) & 1)) CHECK(cons_matcher_accept_token(m, bad) == -1);
        CHECK(cons_matcher_accept_token(m, t) == 0);
        if (tok_is_eog(TOK, t)) break;
    }
    free(mask);
    free(ref);
    cons_matcher_free(m);
}

static void test_masks(void) {
    for (size_t i = 0; i < SGL_ARRAY_LEN(cases); i++) {
        cons_diag d;
        cons_program *p = cons_compile(cases[i].kind, cases[i].text, strlen(cases[i].text), NULL, &d);
        CHECK_MSG(p != NULL, "%s: %s", cases[i].text, d.message);
        if (!p) continue;
        /* the recogniser's reference is slow on a full vocabulary: fewer steps */
        int steps = cons_program_is_dfa(p) ? 24 : 10;
        for (int w = 0; w < 4; w++) walk(p, steps, cases[i].text);
        cons_program_release(p);
    }
}

/* special tokens are never text, even where their text would match */
static void test_special(void) {
    cons_diag d;
    const char *re = "<\\|im_end\\|>";
    cons_program *p = cons_compile(CONS_REGEX, re, strlen(re), NULL, &d);
    CHECK(p != NULL);
    sgl_error err;
    cons_matcher *m = cons_matcher_new(p, V, NULL, 0, &err);
    uint32_t *mask = malloc(WORDS * 4);
    cons_matcher_mask(m, mask);
    for (int32_t t = 0; t < tok_vocab_size(TOK); t++)
        if (ctu_is_special(TOK, t)) CHECK_MSG(!((mask[t >> 5] >> (t & 31)) & 1), "special token %d allowed", t);
    free(mask);
    cons_matcher_free(m);
    cons_program_release(p);
}

typedef struct tjob {
    cons_program *p;
    uint32_t *out; /* masks of states reached by a fixed byte walk */
    const char *text;
} tjob;

static void *thread_main(void *arg) {
    tjob *j = arg;
    sgl_error err;
    cons_matcher *m = cons_matcher_new(j->p, V, NULL, 0, &err);
    for (size_t i = 0; i < strlen(j->text); i++) {
        cons_matcher_mask(m, j->out + i * WORDS);
        cons_matcher_accept_bytes(m, j->text + i, 1);
    }
    cons_matcher_free(m);
    return NULL;
}

/* Several threads walking one program (a lazy DFA: they also build its
 * states) get the masks one thread gets alone. */
static void threads_case(cons_kind kind, const char *re, const char *text) {
    cons_diag d;
    size_t n = strlen(text);
    cons_program *serial = cons_compile(kind, re, strlen(re), NULL, &d);
    cons_program *shared = cons_compile(kind, re, strlen(re), NULL, &d);
    CHECK(serial && shared);
    if (!serial || !shared) return;
    tjob ref = {serial, calloc(n * WORDS, 4), text};
    thread_main(&ref);
    tjob jobs[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (tjob){shared, calloc(n * WORDS, 4), text};
        pthread_create(&th[i], NULL, thread_main, &jobs[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK_MSG(memcmp(jobs[i].out, ref.out, n * WORDS * 4) == 0, "%s", re);
        free(jobs[i].out);
    }
    free(ref.out);
    cons_program_release(serial);
    cons_program_release(shared);
}

static void test_threads(void) {
    threads_case(CONS_REGEX, cases[2].text, "{\"name\": \"abcdefghij\", \"tags\": [\"x\", \"yz\"]}");
    threads_case(CONS_JSON_SCHEMA, cases[16].text,
                 "{\"title\":\"Q3 call \\u00e9t\xc3\xa9\",\"bullets\":[\"Revenue up 12%.\",\"Margins.\"]}");
}

int main(int argc, char **argv) {
    const char *path = argc > 1 && strcmp(argv[1], "--model") != 0 ? argv[1] : test_require_model();
    V = ctu_load_vocab(path, &TOK);
    if (!V) return 1;
    WORDS = cons_mask_words(V);
    TEST_RUN(test_masks);
    TEST_RUN(test_special);
    TEST_RUN(test_threads);
    cons_vocab_free(V);
    tok_free(TOK);
    return TEST_DONE();
}
