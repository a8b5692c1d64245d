/* test_constrain_engine: constrained decoding through the local engine on
 * the tiny model (argv[1]; random weights, so unconstrained output is noise
 * and every structure in the output comes from the mask). For each kind of
 * constraint (regex, JSON schema, choices, grammar, a dtype regex):
 *   - the output is a complete match (finish stop) or, cut by max_new_tokens,
 *     a prefix of one; the token ids spell exactly the output text;
 *   - with jump-forward on, some tokens are forced (result and metrics count
 *     them) and the output is still valid; with it off none are;
 *   - greedy outputs (text and tokens) are identical alone, in a batch, with
 *     a warm cache, with chunked prefill and in a pool small enough to evict
 *     and retract;
 *   - logprobs (raw logits) come for every token when asked;
 *   - token healing: the prompt's last token is generated again (the output
 *     tokens spell its bytes + the text) and its bytes are not in the text.
 * Bad constraints (regex syntax, unsupported schema keyword, grammar syntax,
 * state budget, two constraints at once) are refused at submit with a
 * located message; nothing runs unconstrained. */
#include <stdlib.h>
#include <string.h>

#include "runtime/constrain/constrain.h"
#include "runtime/engine.h"
#include "runtime/tokenizer.h"
#include "tests/test.h"
#include "tests/radix/engine_util.h"

static const char *model_path;

typedef struct ccase {
    const char *name;
    cons_kind kind;
    const char *text;  /* regex / schema / grammar; choices: JSON array */
    const char *const *choices;
    int32_t n_choices;
    int32_t max_new;
} ccase;

static const char *const colours[] = {"red", "green", "blue", "dark blue"};

static const ccase cases[] = {
    {"regex-date", CONS_REGEX, "(19|20)\\d\\d-(0[1-9]|1[0-2])-[0-3]\\d", NULL, 0, 24},
    {"regex-forced", CONS_REGEX, "name: (Alice|Bob|Carol), age: [1-9]\\d?\\.", NULL, 0, 32},
    {"regex-int", CONS_REGEX, "-?(0|[1-9][0-9]{0,17})", NULL, 0, 12},
    {"json", CONS_JSON_SCHEMA,
     "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":6},"
     "\"age\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":120},"
     "\"tags\":{\"type\":\"array\",\"items\":{\"enum\":[\"x\",\"y\"]},\"maxItems\":2}},"
     "\"required\":[\"name\",\"age\",\"tags\"],\"additionalProperties\":false}",
     NULL, 0, 64},
    {"choices", CONS_CHOICES, NULL, colours, 4, 16},
    {"grammar", CONS_GRAMMAR, "root ::= \"(\" expr \")\"\nexpr ::= [0-9] | \"(\" expr \")\" | [0-9] \"+\" expr\n",
     NULL, 0, 24},
};
enum { N_CASES = sizeof cases / sizeof cases[0], N_PROMPTS = 8, N = N_CASES * N_PROMPTS };

static char prompts[N_PROMPTS][128];

static sgl_engine *engine_make(int32_t kv_slots, int32_t chunk, int32_t max_running, bool cache_off) {
    sgl_engine_config c = sgl_engine_config_default();
    c.model_path = model_path;
    c.n_threads = 1;
    c.kv_slots = kv_slots;
    c.chunk_size = chunk;
    c.max_running = max_running;
    c.cache_off = cache_off;
    return test_engine_start(&c);
}

static void set_constraint(sgl_sampling_params *p, const ccase *c) {
    switch (c->kind) {
    case CONS_REGEX: p->regex = c->text; break;
    case CONS_JSON_SCHEMA: p->json_schema = c->text; break;
    case CONS_GRAMMAR: p->grammar = c->text; break;
    case CONS_CHOICES:
        p->choices = c->choices;
        p->n_choices = c->n_choices;
        break;
    }
}

static sgl_sampling_params params_for(const ccase *c, bool jf) {
    sgl_sampling_params p = sgl_sampling_params_default();
    p.temperature = 0;
    p.max_new_tokens = c->max_new;
    p.jump_forward = jf;
    set_constraint(&p, c);
    return p;
}

/* The program a case compiles to, for checking outputs. */
static cons_program *case_program(const ccase *c) {
    char buf[256];
    const char *text = c->text;
    if (c->kind == CONS_CHOICES) {
        size_t n = 0;
        buf[n++] = '[';
        for (int32_t i = 0; i < c->n_choices; i++)
            n += (size_t)snprintf(buf + n, sizeof buf - n, "%s\"%s\"", i ? "," : "", c->choices[i]);
        snprintf(buf + n, sizeof buf - n, "]");
        text = buf;
    }
    cons_diag d;
    cons_program *p = cons_compile(c->kind, text, strlen(text), NULL, &d);
    CHECK_MSG(p != NULL, "%s: %s", c->name, d.message);
    return p;
}

/* Single bytes as tokens (0: EOS), to walk a program over raw text. */
static cons_vocab *byte_vocab(void) {
    static cons_vocab *v;
    static char bytes[256];
    if (v) return v;
    const char *pieces[256];
    size_t lens[256];
    bool special[256];
    for (int i = 0; i < 256; i++) {
        bytes[i] = (char)i;
        pieces[i] = &bytes[i];
        lens[i] = 1;
        special[i] = i == 0;
    }
    int32_t eos = 0;
    sgl_error err;
    v = cons_vocab_new(256, pieces, lens, special, &eos, 1, &err);
    CHECK_MSG(v != NULL, "byte vocab: %s", err.msg);
    return v;
}

/* text is a prefix of some match of prog. */
static bool prefix_ok(cons_program *prog, const char *text, size_t n) {
    sgl_error err;
    cons_matcher *m = cons_matcher_new(prog, byte_vocab(), NULL, 0, &err);
    bool ok = m && cons_matcher_accept_bytes(m, text, n) == 0;
    cons_matcher_free(m);
    return ok;
}

/* r is a complete match (STOP) or a prefix of one (LENGTH). */
static bool output_valid(cons_program *prog, const sgl_result *r) {
    if (r->finish == SGL_FINISH_STOP) return cons_program_match(prog, r->text, r->text_len) == 1;
    return r->finish == SGL_FINISH_LENGTH && prefix_ok(prog, r->text, r->text_len);
}

/* The bytes of r's tokens (EOS left out) are prefix + r's text. */
static bool tokens_spell(const sgl_engine *e, const sgl_result *r, const char *prefix, size_t n_prefix) {
    const sgl_tokenizer *tok = sgl_engine_local_tokenizer(e);
    sgl_strbuf sb = {0};
    for (int32_t i = 0; i < r->n_tokens; i++) {
        if (tok_is_eog(tok, r->tokens[i])) continue;
        size_t len = 0;
        const char *pc = tok_piece(tok, r->tokens[i], &len);
        sgl_strbuf_append(&sb, pc, len);
    }
    bool ok = sb.len == n_prefix + r->text_len && (n_prefix == 0 || !memcmp(sb.data, prefix, n_prefix)) &&
              (r->text_len == 0 || !memcmp(sb.data + n_prefix, r->text, r->text_len));
    sgl_strbuf_free(&sb);
    return ok;
}

/* Runs every (case, prompt) pair; one at a time when serial. */
static void run_all(sgl_engine *e, sgl_result **out, bool serial, bool jf) {
    memset(out, 0, sizeof(sgl_result *) * N);
    int got = 0;
    for (int i = 0; i < N; i++) {
        sgl_request rq = {0};
        rq.kind = SGL_REQ_GENERATE;
        rq.text = prompts[i % N_PROMPTS];
        rq.params = params_for(&cases[i / N_PROMPTS], jf);
        rq.user_tag = (uint64_t)i;
        sgl_error err;
        if (!sgl_engine_submit(e, &rq, &err)) {
            CHECK_MSG(0, "submit %s: %s", cases[i / N_PROMPTS].name, err.msg);
            got++;
            continue;
        }
        if (serial) {
            sgl_result *r = sgl_engine_wait(e, 120);
            CHECK(r && r->user_tag == (uint64_t)i);
            if (r) out[i] = r;
            got++;
        }
    }
    while (got < N) {
        sgl_result *r = sgl_engine_wait(e, 120);
        if (!r) break;
        if (r->user_tag < N && !out[r->user_tag]) out[r->user_tag] = r;
        else sgl_result_free(r);
        got++;
    }
    CHECK_INT(got, N);
}

static int count_diff(sgl_result **a, sgl_result **b) {
    int bad = 0;
    for (int i = 0; i < N; i++) {
        if (!a[i] || !b[i]) {
            bad++;
            continue;
        }
        if (strcmp(a[i]->text, b[i]->text) || a[i]->n_tokens != b[i]->n_tokens ||
            memcmp(a[i]->tokens, b[i]->tokens, sizeof(int32_t) * (size_t)a[i]->n_tokens) ||
            a[i]->finish != b[i]->finish) {
            if (bad < 3)
                fprintf(stderr, "  differs: %s/%d: '%s' vs '%s'\n", cases[i / N_PROMPTS].name,
                        i % N_PROMPTS, a[i]->text, b[i]->text);
            bad++;
        }
    }
    return bad;
}

static void free_all(sgl_result **v) {
    for (int i = 0; i < N; i++) sgl_result_free(v[i]);
}

static void check_valid(const sgl_engine *e, sgl_result **res, bool jf, int64_t *forced) {
    cons_program *progs[N_CASES];
    for (int c = 0; c < N_CASES; c++) progs[c] = case_program(&cases[c]);
    int64_t n_forced = 0;
    for (int i = 0; i < N; i++) {
        const ccase *c = &cases[i / N_PROMPTS];
        sgl_result *r = res[i];
        if (!r || !progs[i / N_PROMPTS]) continue;
        CHECK_MSG(output_valid(progs[i / N_PROMPTS], r), "%s (jump-forward %s): '%s' (finish %s%s%s)",
                  c->name, jf ? "on" : "off", r->text, sgl_finish_name(r->finish),
                  r->error ? ": " : "", r->error ? r->error : "");
        CHECK_MSG(tokens_spell(e, r, "", 0), "%s: tokens do not spell '%s'", c->name, r->text);
        if (!jf) CHECK_INT(r->forced_tokens, 0);
        CHECK(r->forced_tokens <= r->completion_tokens);
        n_forced += r->forced_tokens;
    }
    for (int c = 0; c < N_CASES; c++) cons_program_release(progs[c]);
    *forced = n_forced;
}

static void test_valid_and_deterministic(void) {
    static sgl_result *ref[N], *got[N];
    for (int jf = 1; jf >= 0; jf--) {
        sgl_engine *e = engine_make(4096, 0, 1, true); /* alone, no cache */
        run_all(e, ref, true, jf);
        int64_t forced = 0;
        check_valid(e, ref, jf, &forced);
        sgl_engine_metrics m;
        sgl_engine_metrics_get(e, &m);
        printf("jump-forward %s: %lld generated, %lld forced, %lld constrained requests, %lld forwards\n",
               jf ? "on" : "off", (long long)m.generated_tokens, (long long)m.forced_tokens,
               (long long)m.constrained_requests, (long long)m.forward_calls);
        CHECK_INT(m.constrained_requests, N);
        CHECK(m.forced_tokens == forced);
        if (jf) CHECK_MSG(forced > 0, "jump-forward forced no token");
        for (int c = 0; c < N_CASES; c++) {
            const sgl_result *r = ref[c * N_PROMPTS + c % N_PROMPTS];
            if (r) printf("  %s: '%s' (%s, %d tokens, %d forced)\n", cases[c].name, r->text,
                          sgl_finish_name(r->finish), r->completion_tokens, r->forced_tokens);
        }
        sgl_engine_free(e);

        e = engine_make(8192, 512, 64, false); /* batched, then warm */
        run_all(e, got, false, jf);
        CHECK_MSG(count_diff(ref, got) == 0, "batched (jf %d): %d differ", jf, count_diff(ref, got));
        free_all(got);
        run_all(e, got, false, jf);
        CHECK_MSG(count_diff(ref, got) == 0, "warm cache (jf %d): %d differ", jf, count_diff(ref, got));
        free_all(got);
        sgl_engine_free(e);

        e = engine_make(8192, 7, 64, false); /* chunked prefill */
        run_all(e, got, false, jf);
        CHECK_MSG(count_diff(ref, got) == 0, "chunked (jf %d): %d differ", jf, count_diff(ref, got));
        free_all(got);
        sgl_engine_free(e);

        e = engine_make(400, 16, 32, false); /* small pool: eviction, retraction */
        run_all(e, got, false, jf);
        CHECK_MSG(count_diff(ref, got) == 0, "small pool (jf %d): %d differ", jf, count_diff(ref, got));
        free_all(got);
        sgl_engine_free(e);
        free_all(ref);
    }
}

static sgl_result *run_one(sgl_engine *e, const char *prompt, sgl_sampling_params p) {
    sgl_request rq = {0};
    rq.kind = SGL_REQ_GENERATE;
    rq.text = prompt;
    rq.params = p;
    sgl_error err;
    if (!sgl_engine_submit(e, &rq, &err)) {
        CHECK_MSG(0, "submit: %s", err.msg);
        return NULL;
    }
    return sgl_engine_wait(e, 120);
}

static void test_logprobs(void) {
    sgl_engine *e = engine_make(4096, 0, 8, false);
    sgl_sampling_params p = params_for(&cases[1], true);
    p.return_logprob = true;
    p.top_logprobs_num = 2;
    sgl_result *r = run_one(e, "JSON: ", p);
    CHECK(r && r->finish != SGL_FINISH_ABORT);
    if (r) {
        CHECK_INT(r->n_logprobs, r->n_tokens);
        CHECK_INT(r->forced_tokens, 0); /* jump-forward is off with logprobs */
        for (int32_t i = 0; i < r->n_logprobs; i++) {
            CHECK(r->logprobs[i].token == r->tokens[i] && r->logprobs[i].logprob <= 0);
            /* raw logits: the top alternative may be a token the mask refused,
             * never less likely than the chosen one */
            CHECK(r->logprobs[i].n_top == 2 && r->logprobs[i].top_logprobs[0] >= r->logprobs[i].logprob);
        }
    }
    sgl_result_free(r);
    sgl_engine_free(e);
}

static void test_token_healing(void) {
    sgl_engine *e = engine_make(4096, 0, 8, false);
    const sgl_tokenizer *tok = sgl_engine_local_tokenizer(e);
    const char *prompt = "The link is http:";
    int32_t *ids = NULL;
    size_t n = 0;
    sgl_error err;
    CHECK(tok_encode_ex(tok, prompt, strlen(prompt), TOK_ENC_ADD_SPECIAL | TOK_ENC_PARSE_SPECIAL, &ids,
                        &n, &err) == 0 && n >= 2);
    size_t len = 0;
    const char *last = tok_piece(tok, ids[n - 1], &len);
    char healed[64];
    memcpy(healed, last, SGL_MIN(len, sizeof healed));
    free(ids);
    for (int jf = 0; jf <= 1; jf++) {
        sgl_sampling_params p = sgl_sampling_params_default();
        p.temperature = 0;
        p.max_new_tokens = 12;
        p.token_healing = true;
        p.jump_forward = jf;
        p.regex = "//[a-z]+\\.org";
        sgl_result *r = run_one(e, prompt, p);
        CHECK(r && r->finish != SGL_FINISH_ABORT);
        if (!r) continue;
        printf("healing (jf %d): healed '%.*s', output '%s', %d tokens (%d forced)\n", jf, (int)len, healed,
               r->text, r->n_tokens, r->forced_tokens);
        /* the output tokens re-generate the healed bytes; the text leaves
         * them out and is what the constraint matches */
        CHECK_MSG(tokens_spell(e, r, healed, len), "tokens do not spell the healed bytes + '%s'", r->text);
        cons_diag d;
        cons_program *pr = cons_compile(CONS_REGEX, p.regex, strlen(p.regex), NULL, &d);
        CHECK(pr != NULL);
        if (pr) CHECK_MSG(output_valid(pr, r), "healed output '%s'", r->text);
        cons_program_release(pr);
        sgl_result_free(r);
    }
    /* healing without a constraint: the first token starts with the bytes */
    sgl_sampling_params p = sgl_sampling_params_default();
    p.temperature = 0;
    p.max_new_tokens = 4;
    p.token_healing = true;
    sgl_result *r = run_one(e, prompt, p);
    CHECK(r && r->finish != SGL_FINISH_ABORT && r->n_tokens >= 1);
    if (r && r->n_tokens >= 1) {
        size_t l0 = 0;
        const char *p0 = tok_piece(tok, r->tokens[0], &l0);
        CHECK_MSG(l0 >= len && !memcmp(p0, healed, len), "first token does not start with the healed bytes");
        CHECK(tokens_spell(e, r, healed, len));
    }
    sgl_result_free(r);
    sgl_engine_free(e);
}

static void expect_refused(sgl_engine *e, sgl_sampling_params p, const char *want1, const char *want2) {
    sgl_request rq = {0};
    rq.kind = SGL_REQ_GENERATE;
    rq.text = "x";
    rq.params = p;
    sgl_error err;
    memset(&err, 0, sizeof err);
    uint64_t id = sgl_engine_submit(e, &rq, &err);
    CHECK_MSG(id == 0, "a bad constraint was accepted (%s)", want1);
    CHECK_MSG(strstr(err.msg, want1) && (!want2 || strstr(err.msg, want2)), "message '%s' lacks '%s' / '%s'",
              err.msg, want1, want2 ? want2 : "");
    printf("refused: %s\n", err.msg);
}

static void test_refused(void) {
    sgl_engine *e = engine_make(1024, 0, 4, false);
    sgl_sampling_params p = sgl_sampling_params_default();
    p.regex = "ab(c";
    expect_refused(e, p, "regex:", "offset");
    p = sgl_sampling_params_default();
    p.json_schema = "{\"type\":\"array\",\"uniqueItems\":true}";
    expect_refused(e, p, "uniqueItems", "/uniqueItems");
    p = sgl_sampling_params_default();
    p.grammar = "root ::= \"a\" (\n";
    expect_refused(e, p, "grammar:", NULL);
    p = sgl_sampling_params_default();
    p.regex = "[ab]*a[ab]{24}";
    expect_refused(e, p, "regex:", "20000");
    p = sgl_sampling_params_default();
    p.regex = "a";
    p.json_schema = "{}";
    expect_refused(e, p, "one of", NULL);
    sgl_engine_metrics m;
    sgl_engine_metrics_get(e, &m);
    CHECK_INT(m.requests_done, 0); /* nothing ran */
    sgl_engine_free(e);
}

int main(int argc, char **argv) {
    model_path = argc > 1 ? argv[1] : getenv("SGL_TINY_MODEL");
    if (!model_path) TEST_SKIP_ALL("no tiny model given");
    const char *heads[4] = {"Answer in the format asked. ", "Data: ", "The quick brown fox. Again: ", ""};
    for (int i = 0; i < N_PROMPTS; i++)
        snprintf(prompts[i], sizeof prompts[i], "%sRecord %d of %d:", heads[i % 4], i, i * 3 % 7);
    TEST_RUN(test_valid_and_deterministic);
    TEST_RUN(test_logprobs);
    TEST_RUN(test_token_healing);
    TEST_RUN(test_refused);
    cons_vocab_free(byte_vocab());
    cons_cache_clear();
    return TEST_DONE();
}
