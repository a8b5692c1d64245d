/* test_engine_e2e: the local engine on the real default model
 * (SGL_TEST_MODEL): SCORE picks the factual continuation, greedy text is
 * identical alone vs batched with a warm cache, and a few-shot prefix is
 * served from the radix cache. Suite 'e2e'; skipped (77) when the model is
 * missing unless CI=true. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/engine.h"
#include "tests/test.h"
#include "tests/radix/engine_util.h"

static const char *model_path;

static sgl_engine *engine_make(bool cache_off, int32_t max_running) {
    sgl_engine_config c = sgl_engine_config_default();
    c.model_path = model_path;
    c.n_threads = 2;
    c.kv_slots = 4096;
    c.cache_off = cache_off;
    c.max_running = max_running;
    return test_engine_start(&c);
}

static void test_score_select(void) {
    sgl_engine *e = engine_make(false, 8);
    const char *q[3][4] = {
        {"The capital of France is", " Paris", " London", " Tokyo"},
        {"Two plus two equals", " four", " eleven", " purple"},
        {"The opposite of hot is", " cold", " seven", " Tuesday"}};
    for (int i = 0; i < 3; i++) {
        sgl_request rq = {0};
        rq.kind = SGL_REQ_SCORE;
        rq.text = q[i][0];
        rq.choices = &q[i][1];
        rq.n_choices = 3;
        sgl_error err;
        CHECK(sgl_engine_submit(e, &rq, &err) != 0);
        sgl_result *r = sgl_engine_wait(e, 120);
        CHECK(r && r->n_choices == 3);
        if (r && r->n_choices == 3) {
            printf("%s: %.3f / %.3f / %.3f\n", q[i][0], r->choices[0].sum, r->choices[1].sum,
                   r->choices[2].sum);
            CHECK_MSG(r->choices[0].sum > r->choices[1].sum && r->choices[0].sum > r->choices[2].sum,
                      "'%s' did not win for '%s'", q[i][1], q[i][0]);
        }
        sgl_result_free(r);
    }
    sgl_engine_free(e);
}

enum { N = 4 };
static const char *shots =
    "Q: What color is the sky on a clear day?\nA: Blue.\n\n"
    "Q: How many legs does a spider have?\nA: Eight.\n\n"
    "Q: What do bees make?\nA: Honey.\n\n";
static const char *questions[N] = {"Q: What is frozen water called?\nA:",
                                   "Q: What animal barks?\nA:", "Q: What do cows drink?\nA:",
                                   "Q: Which planet do we live on?\nA:"};

static void run(sgl_engine *e, sgl_result **out) {
    char buf[N][512];
    for (int i = 0; i < N; i++) {
        snprintf(buf[i], sizeof buf[i], "%s%s", shots, questions[i]);
        sgl_request rq = {0};
        rq.kind = SGL_REQ_GENERATE;
        rq.text = buf[i];
        rq.params = sgl_sampling_params_default();
        rq.params.temperature = 0;
        rq.params.max_new_tokens = 8;
        const char *stop[1] = {"\n"};
        rq.params.stop = stop;
        rq.params.n_stop = 1;
        rq.user_tag = (uint64_t)i;
        sgl_error err;
        CHECK(sgl_engine_submit(e, &rq, &err) != 0);
    }
    for (int i = 0; i < N; i++) {
        sgl_result *r = sgl_engine_wait(e, 120);
        if (r && r->user_tag < N) out[r->user_tag] = r;
        else sgl_result_free(r);
    }
}

static void test_fewshot_cached_and_deterministic(void) {
    sgl_result *alone[N] = {0}, *batch[N] = {0};
    sgl_engine *e = engine_make(true, 1);
    run(e, alone);
    sgl_engine_free(e);
    e = engine_make(false, 8);
    run(e, batch);
    sgl_engine_metrics m;
    sgl_engine_metrics_get(e, &m);
    sgl_engine_free(e);
    int cached = 0;
    for (int i = 0; i < N; i++) {
        CHECK(alone[i] && batch[i]);
        if (!alone[i] || !batch[i]) continue;
        printf("%s ->%s [%s, %d cached]\n", questions[i], batch[i]->text,
               sgl_finish_name(batch[i]->finish), batch[i]->cached_tokens);
        CHECK_STR(batch[i]->text, alone[i]->text);
        CHECK(batch[i]->n_tokens >= 1);
        cached += batch[i]->cached_tokens > 20;
    }
    CHECK_MSG(cached >= N - 1, "only %d of %d requests reused the few-shot prefix", cached, N);
    printf("hit rate %.3f\n", m.hit_rate);
    for (int i = 0; i < N; i++) {
        sgl_result_free(alone[i]);
        sgl_result_free(batch[i]);
    }
}

int main(void) {
    model_path = test_require_model();
    TEST_RUN(test_score_select);
    TEST_RUN(test_fewshot_cached_and_deterministic);
    return TEST_DONE();
}
