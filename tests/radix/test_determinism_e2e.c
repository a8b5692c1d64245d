/* test_determinism_e2e: greedy outputs of the local engine on the real
 * default model (SGL_TEST_MODEL) do not depend on what else runs. Eight
 * varied prompts, 20 new tokens each, must give byte-identical text and the
 * same token ids
 *   (a) each alone (one request in the engine, no cache, no chunking),
 *   (b) all together with 56 filler requests: a batch of 64 (the eight
 *       streamed, so their partials must add up to the same text too),
 *   (c) again on the same engine once the cache holds their prefixes,
 *   (d) with chunked prefill of 16 tokens (prompts are longer than that).
 * Suite 'e2e'; skipped (77) when the model is missing unless CI=true. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/engine.h"
#include "tests/test.h"
#include "tests/radix/engine_util.h"

enum { N = 8, FILL = 56, NEW = 20 };

static const char *model_path;

static const char *prompts[N] = {
    "The three primary colors are",
    "Write a short poem about the sea.\nThe sea",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Question: What is the boiling point of water at sea level in Celsius?\nAnswer:",
    "Here is a list of European capitals: Paris, Berlin, Madrid,",
    "Translate to French: 'Good morning, how are you today?'\nFrench:",
    /* two prompts sharing a long prefix: (b) and (c) serve part of one from
     * the other's KV */
    "You are a careful assistant who answers in one sentence. Explain why the sky is blue.",
    "You are a careful assistant who answers in one sentence. Explain how a rainbow forms.",
};

static sgl_engine *engine_make(int32_t chunk, bool cache_off) {
    sgl_engine_config c = sgl_engine_config_default();
    c.model_path = model_path;
    c.n_threads = 2;
    c.kv_slots = 8192;
    c.chunk_size = chunk;
    c.cache_off = cache_off;
    c.max_running = 64;
    return test_engine_start(&c);
}

static uint64_t submit(sgl_engine *e, const char *text, uint64_t tag, bool stream) {
    sgl_request rq = {0};
    rq.kind = SGL_REQ_GENERATE;
    rq.text = text;
    rq.params = sgl_sampling_params_default();
    rq.params.temperature = 0;
    rq.params.max_new_tokens = NEW;
    rq.params.ignore_eos = true; /* always NEW tokens: the whole window is compared */
    rq.user_tag = tag;
    rq.stream = stream;
    sgl_error err;
    uint64_t id = sgl_engine_submit(e, &rq, &err);
    CHECK_MSG(id != 0, "submit: %s", err.msg);
    return id;
}

/* Collects final results until `want` have arrived; results tagged < N go to
 * out[tag], partials are appended to streamed[tag]. */
static void collect(sgl_engine *e, int want, sgl_result **out, sgl_strbuf *streamed) {
    for (int got = 0; got < want;) {
        sgl_result *r = sgl_engine_wait(e, 300);
        CHECK(r != NULL);
        if (!r) return;
        if (r->partial) {
            if (streamed && r->user_tag < N) sgl_strbuf_append(&streamed[r->user_tag], r->text, r->text_len);
            sgl_result_free(r);
            continue;
        }
        got++;
        if (r->user_tag < N && !out[r->user_tag]) out[r->user_tag] = r;
        else sgl_result_free(r);
    }
}

static int count_diff(sgl_result **ref, sgl_result **got, const char *what) {
    int bad = 0;
    for (int i = 0; i < N; i++) {
        const sgl_result *a = ref[i], *g = got[i];
        bool same = a && g && g->finish == a->finish && g->n_tokens == a->n_tokens &&
                    !memcmp(g->tokens, a->tokens, sizeof(int32_t) * (size_t)a->n_tokens) &&
                    g->text_len == a->text_len && !memcmp(g->text, a->text, a->text_len);
        if (!same) {
            bad++;
            fprintf(stderr, "%s: prompt %d differs:\n  alone: %s\n  here:  %s\n", what, i,
                    a ? a->text : "(none)", g ? g->text : "(none)");
        }
    }
    return bad;
}

static void free_set(sgl_result **v) {
    for (int i = 0; i < N; i++) {
        sgl_result_free(v[i]);
        v[i] = NULL;
    }
}

static void test_greedy_independent_of_batch_cache_chunking(void) {
    sgl_result *alone[N] = {0}, *got[N] = {0};
    double t0 = sgl_now();

    /* (a) one at a time, nothing cached, whole-prompt prefill */
    sgl_engine *e = engine_make(0, true);
    for (int i = 0; i < N; i++) {
        submit(e, prompts[i], (uint64_t)i, false);
        collect(e, 1, alone, NULL);
        CHECK(alone[i] && alone[i]->n_tokens == NEW && alone[i]->cached_tokens == 0);
        if (alone[i]) printf("[%d] %s|%s\n", i, prompts[i], alone[i]->text);
    }
    sgl_engine_free(e);
    double t_a = sgl_now();

    /* (b) the eight among 56 fillers: one running batch of 64 */
    char fill[FILL][96];
    sgl_strbuf streamed[N];
    memset(streamed, 0, sizeof streamed);
    e = engine_make(512, false);
    for (int k = 0; k < FILL + N; k++) {
        if (k % 8 == 3) { /* the eight spread among the fillers */
            submit(e, prompts[k / 8], (uint64_t)(k / 8), true);
        } else {
            int f = k - (k / 8 + (k % 8 > 3));
            snprintf(fill[f], sizeof fill[f], "Filler %d: name an animal that starts with %c.", f,
                     'A' + f % 26);
            submit(e, fill[f], (uint64_t)(N + f), false);
        }
    }
    collect(e, FILL + N, got, streamed);
    CHECK_MSG(count_diff(alone, got, "batch of 64") == 0, "batch of 64 differs from alone");
    int bad_stream = 0;
    for (int i = 0; i < N; i++)
        bad_stream += !got[i] || streamed[i].len != got[i]->text_len ||
                      memcmp(streamed[i].data ? streamed[i].data : "", got[i]->text, got[i]->text_len);
    CHECK_MSG(bad_stream == 0, "%d streamed texts do not add up to the final text", bad_stream);
    for (int i = 0; i < N; i++) sgl_strbuf_free(&streamed[i]);
    free_set(got);
    double t_b = sgl_now();

    /* (c) warm: the cache now holds every prompt (and its output) */
    for (int i = 0; i < N; i++) submit(e, prompts[i], (uint64_t)i, false);
    collect(e, N, got, NULL);
    CHECK_MSG(count_diff(alone, got, "warm cache") == 0, "warm cache differs from alone");
    int warm = 0;
    for (int i = 0; i < N; i++) warm += got[i] && got[i]->cached_tokens == got[i]->prompt_tokens - 1;
    CHECK_MSG(warm == N, "only %d of %d prompts fully served from the cache", warm, N);
    sgl_engine_metrics m;
    sgl_engine_metrics_get(e, &m);
    printf("batch + warm: %lld requests, prompt %lld tokens, cached %lld (hit %.3f), generated %lld, "
           "%lld forward calls\n",
           (long long)m.requests_done, (long long)m.prompt_tokens, (long long)m.cached_tokens,
           m.hit_rate, (long long)m.generated_tokens, (long long)m.forward_calls);
    free_set(got);
    sgl_engine_free(e);
    double t_c = sgl_now();

    /* (d) chunked prefill, 16 tokens per request per forward, all eight at once */
    e = engine_make(16, true);
    for (int i = 0; i < N; i++) submit(e, prompts[i], (uint64_t)i, false);
    collect(e, N, got, NULL);
    CHECK_MSG(count_diff(alone, got, "chunked prefill 16") == 0, "chunked prefill differs from alone");
    int long_prompts = 0;
    for (int i = 0; i < N; i++) long_prompts += got[i] && got[i]->prompt_tokens > 16;
    CHECK_MSG(long_prompts >= N / 2, "only %d prompts longer than a chunk", long_prompts);
    free_set(got);
    sgl_engine_free(e);
    printf("times: alone %.1f s, batch of 64 %.1f s, warm %.1f s, chunked %.1f s\n", t_a - t0,
           t_b - t_a, t_c - t_b, sgl_now() - t_c);
    free_set(alone);
}

int main(void) {
    model_path = test_require_model();
    TEST_RUN(test_greedy_independent_of_batch_cache_chunking);
    return TEST_DONE();
}
