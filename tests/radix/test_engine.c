/* test_engine: the local engine end to end on the tiny model (argv[1]):
 * text in, text out through the engine thread and completion queue.
 * Greedy outputs are identical alone (one at a time, no cache) vs a batch of
 * 64 vs a warm cache vs chunked prefill vs a pool too small for the
 * workload; SCORE logprobs equal GENERATE's for the same tokens; stop
 * strings split across tokens cut the text; wait/poll behave; streamed
 * results add up to the final ones; flush_cache empties the radix cache
 * when idle (a repeated prompt then gets no cached tokens and the same
 * output) and is refused while a request is queued or running. */
#include <stdlib.h>
#include <string.h>

#include "runtime/engine.h"
#include "runtime/unicode.h"
#include "tests/test.h"
#include "tests/radix/engine_util.h"

static const char *model_path;

enum { N = 64 };
static char prompts[N][256];
static sgl_result *ref[N];

static sgl_engine *engine_make(int32_t kv_slots, int32_t chunk, int32_t max_running, bool cache_off,
                               sgl_sched_policy pol) {
    sgl_engine_config c = sgl_engine_config_default();
    c.model_path = model_path;
    c.n_threads = 1; /* the scheduler is under test, not kernel threading */
    c.kv_slots = kv_slots;
    c.chunk_size = chunk;
    c.max_running = max_running;
    c.cache_off = cache_off;
    c.policy = pol;
    return test_engine_start(&c);
}

static sgl_sampling_params greedy(int32_t max_new) {
    sgl_sampling_params p = sgl_sampling_params_default();
    p.temperature = 0;
    p.max_new_tokens = max_new;
    return p;
}

/* Submits all N prompts (or one at a time when serial) and collects the
 * results by index. */
static void run_set(sgl_engine *e, sgl_result **out, bool serial) {
    memset(out, 0, sizeof(sgl_result *) * N);
    int got = 0;
    for (int i = 0; i < N; i++) {
        sgl_request rq = {0};
        rq.kind = SGL_REQ_GENERATE;
        rq.text = prompts[i];
        rq.params = greedy(8 + i % 9);
        rq.params.return_logprob = (i % 2 == 0);
        rq.user_tag = (uint64_t)i;
        sgl_error err;
        CHECK_MSG(sgl_engine_submit(e, &rq, &err) != 0, "submit: %s", err.msg);
        if (serial) {
            sgl_result *r = sgl_engine_wait(e, 60);
            CHECK(r && r->user_tag == (uint64_t)i);
            if (r) out[r->user_tag] = r;
            got++;
        }
    }
    while (got < N) {
        sgl_result *r = sgl_engine_wait(e, 60);
        if (!r) break;
        if (r->user_tag < N && !out[r->user_tag]) out[r->user_tag] = r;
        else sgl_result_free(r);
        got++;
    }
    CHECK_INT(got, N);
}

static int count_diff(sgl_result **got) {
    int bad = 0;
    for (int i = 0; i < N; i++) {
        sgl_result *a = ref[i], *g = got[i];
        bool same = a && g && a->finish == g->finish && a->n_tokens == g->n_tokens &&
                    memcmp(a->tokens, g->tokens, sizeof(int32_t) * (size_t)a->n_tokens) == 0 &&
                    strcmp(a->text, g->text) == 0 && a->n_logprobs == g->n_logprobs;
        for (int32_t k = 0; same && k < a->n_logprobs; k++)
            same = a->logprobs[k].logprob == g->logprobs[k].logprob;
        bad += !same;
    }
    return bad;
}

static void free_set(sgl_result **v) {
    for (int i = 0; i < N; i++) sgl_result_free(v[i]);
}

static void test_determinism(void) {
    /* reference: one request at a time, no cache */
    sgl_engine *e = engine_make(2048, 0, 1, true, SGL_SCHED_FCFS);
    run_set(e, ref, true);
    sgl_engine_free(e);
    for (int i = 0; i < N; i++)
        CHECK(ref[i] && ref[i]->finish != SGL_FINISH_ABORT && ref[i]->cached_tokens == 0);

    sgl_result *got[N];
    sgl_engine_metrics m;
    e = engine_make(8192, 512, 64, false, SGL_SCHED_LPM);
    run_set(e, got, false);
    CHECK_MSG(count_diff(got) == 0, "batch of 64: %d differ", count_diff(got));
    free_set(got);
    run_set(e, got, false); /* warm */
    CHECK_MSG(count_diff(got) == 0, "warm cache: %d differ", count_diff(got));
    int full = 0;
    for (int i = 0; i < N; i++) full += got[i] && got[i]->cached_tokens == got[i]->prompt_tokens - 1;
    CHECK_INT(full, N);
    sgl_engine_metrics_get(e, &m);
    printf("lpm: %lld requests, prompt %lld, cached %lld, hit %.3f, generated %lld, %lld forwards\n",
           (long long)m.requests_done, (long long)m.prompt_tokens, (long long)m.cached_tokens,
           m.hit_rate, (long long)m.generated_tokens, (long long)m.forward_calls);
    CHECK(m.hit_rate > 0.5);
    free_set(got);
    sgl_engine_free(e);

    e = engine_make(8192, 16, 64, false, SGL_SCHED_FCFS); /* chunked prefill */
    run_set(e, got, false);
    CHECK_MSG(count_diff(got) == 0, "chunked: %d differ", count_diff(got));
    free_set(got);
    sgl_engine_free(e);

    e = engine_make(300, 32, 16, false, SGL_SCHED_LPM); /* pool too small */
    run_set(e, got, false);
    CHECK_MSG(count_diff(got) == 0, "small pool: %d differ", count_diff(got));
    sgl_engine_metrics_get(e, &m);
    printf("small pool: evicted %lld, retractions %lld\n", (long long)m.evicted_tokens,
           (long long)m.retractions);
    CHECK(m.evicted_tokens > 0);
    free_set(got);
    sgl_engine_free(e);
}

/* Long seeded-sampling outputs in a pool that cannot hold them all: running
 * requests are retracted and resumed, with the same tokens as alone. */
static void test_retraction(void) {
    enum { M = 8 };
    sgl_result *alone[M] = {0}, *got[M] = {0};
    for (int pass = 0; pass < 2; pass++) {
        sgl_engine *e = pass == 0 ? engine_make(2048, 0, 1, true, SGL_SCHED_FCFS)
                                  : engine_make(200, 0, 8, false, SGL_SCHED_LPM);
        sgl_result **out = pass == 0 ? alone : got;
        for (int i = 0; i < M; i++) {
            sgl_request rq = {0};
            rq.kind = SGL_REQ_GENERATE;
            rq.text = prompts[i];
            rq.params = greedy(48);
            rq.params.temperature = 0.7f;
            rq.params.seed = 100u + (uint64_t)i;
            rq.params.ignore_eos = true;
            rq.user_tag = (uint64_t)i;
            sgl_error err;
            CHECK(sgl_engine_submit(e, &rq, &err) != 0);
        }
        for (int i = 0; i < M; i++) {
            sgl_result *r = sgl_engine_wait(e, 60);
            if (r && r->user_tag < M && !out[r->user_tag]) out[r->user_tag] = r;
            else sgl_result_free(r);
        }
        if (pass == 1) {
            sgl_engine_metrics m;
            sgl_engine_metrics_get(e, &m);
            printf("retraction: %lld retractions, %lld evicted\n", (long long)m.retractions,
                   (long long)m.evicted_tokens);
            CHECK(m.retractions > 0);
        }
        sgl_engine_free(e);
    }
    for (int i = 0; i < M; i++) {
        CHECK(alone[i] && got[i] && alone[i]->n_tokens == 48 && got[i]->n_tokens == 48);
        if (alone[i] && got[i] && got[i]->n_tokens == alone[i]->n_tokens) {
            CHECK(memcmp(alone[i]->tokens, got[i]->tokens, sizeof(int32_t) * 48) == 0);
            CHECK_STR(got[i]->text, alone[i]->text);
        }
        sgl_result_free(alone[i]);
        sgl_result_free(got[i]);
    }
}

static void test_score_equals_generate(void) {
    sgl_engine *e = engine_make(4096, 0, 8, false, SGL_SCHED_LPM);
    sgl_request rq = {0};
    rq.kind = SGL_REQ_GENERATE;
    rq.text = prompts[3];
    rq.params = greedy(10);
    rq.params.ignore_eos = true;
    rq.params.return_logprob = true;
    sgl_error err;
    CHECK(sgl_engine_submit(e, &rq, &err) != 0);
    sgl_result *g = sgl_engine_wait(e, 60);
    CHECK(g && g->n_logprobs == 10);
    if (!g) return;
    const int32_t *choice[2] = {g->tokens, g->tokens};
    int32_t lens[2] = {10, 4};
    sgl_request sc = {0};
    sc.kind = SGL_REQ_SCORE;
    sc.text = prompts[3];
    sc.choice_tokens = choice;
    sc.choice_lens = lens;
    sc.n_choices = 2;
    CHECK(sgl_engine_submit(e, &sc, &err) != 0);
    sgl_result *s = sgl_engine_wait(e, 60);
    CHECK(s && s->kind == SGL_REQ_SCORE && s->n_choices == 2);
    if (s && s->n_choices == 2) {
        CHECK_INT(s->choices[0].n_tokens, 10);
        CHECK_INT(s->choices[1].n_tokens, 4);
        double sum = 0;
        for (int i = 0; i < 10 && i < s->choices[0].n_tokens; i++) {
            CHECK_INT(s->choices[0].tokens[i], g->tokens[i]);
            CHECK(s->choices[0].logprobs[i] == g->logprobs[i].logprob);
            sum += g->logprobs[i].logprob;
            if (i < 4) CHECK(s->choices[1].logprobs[i] == g->logprobs[i].logprob);
        }
        CHECK_NEAR(s->choices[0].sum, sum, 1e-9);
        CHECK(s->cached_tokens > 0); /* the prompt's KV came from the cache */
    }
    /* text choices: tokenized with the prompt */
    const char *texts[3] = {" yes", " no", " maybe so"};
    sgl_request st = {0};
    st.kind = SGL_REQ_SCORE;
    st.text = prompts[3];
    st.choices = texts;
    st.n_choices = 3;
    CHECK(sgl_engine_submit(e, &st, &err) != 0);
    sgl_result *t = sgl_engine_wait(e, 60);
    CHECK(t && t->n_choices == 3 && t->finish == SGL_FINISH_LENGTH);
    for (int i = 0; t && i < t->n_choices; i++) {
        CHECK(t->choices[i].n_tokens >= 1);
        CHECK(t->choices[i].sum < 0);
    }
    sgl_result_free(t);
    sgl_result_free(s);
    sgl_result_free(g);
    sgl_engine_free(e);
}

static void test_stop_string(void) {
    sgl_engine *e = engine_make(4096, 0, 8, false, SGL_SCHED_LPM);
    sgl_request rq = {0};
    rq.kind = SGL_REQ_GENERATE;
    rq.text = prompts[5];
    rq.params = greedy(24);
    rq.params.ignore_eos = true;
    sgl_error err;
    sgl_engine_submit(e, &rq, &err);
    sgl_result *full = sgl_engine_wait(e, 60);
    CHECK(full && full->text_len >= 8);
    if (full && full->text_len >= 8) {
        /* a stop string from the middle of the text that crosses a token
         * boundary somewhere (a 6-byte window spans at least two tokens
         * unless one token covers it all; the check below holds either way) */
        char stop[7];
        size_t at = full->text_len / 2 - 3;
        memcpy(stop, full->text + at, 6);
        stop[6] = 0;
        const char *first = strstr(full->text, stop);
        const char *stops[1] = {stop};
        rq.params.stop = stops;
        rq.params.n_stop = 1;
        sgl_engine_submit(e, &rq, &err);
        sgl_result *cut = sgl_engine_wait(e, 60);
        CHECK(cut && cut->finish == SGL_FINISH_STOP);
        if (cut && first) {
            CHECK_STR(cut->stop_str, stop);
            CHECK_INT(cut->text_len, first - full->text);
            CHECK(strncmp(cut->text, full->text, cut->text_len) == 0);
            CHECK(cut->n_tokens <= full->n_tokens);
        }
        sgl_result_free(cut);
    }
    sgl_result_free(full);
    /* cancel: a long request ends early with ABORT "cancelled". On an engine
     * without the tiny model's 256-token context, so the 2000 tokens cannot
     * all be done before the cancel lands, however fast the kernels or
     * however long this thread waits for a core */
    sgl_engine_config lc = sgl_engine_config_default();
    lc.model_path = model_path;
    lc.n_threads = 1;
    lc.kv_slots = 4096;
    lc.max_context = -1;
    sgl_engine *le = sgl_engine_local_new(&lc, &err);
    CHECK_MSG(le != NULL, "engine: %s", le ? "" : err.msg);
    sgl_request lr = {0};
    lr.kind = SGL_REQ_GENERATE;
    lr.text = prompts[6];
    lr.params = greedy(2000);
    lr.params.ignore_eos = true;
    if (le) {
        uint64_t id = sgl_engine_submit(le, &lr, &err);
        CHECK(id != 0);
        CHECK_INT(sgl_engine_cancel(le, id), 0);
        sgl_result *cr = sgl_engine_wait(le, 60);
        CHECK(cr && cr->id == id && cr->finish == SGL_FINISH_ABORT && cr->n_tokens < 2000);
        if (cr) CHECK_STR(cr->error, "cancelled");
        sgl_result_free(cr);
        CHECK_INT(sgl_engine_cancel(le, id), -1); /* already delivered */
        sgl_engine_free(le);
    }
    /* the model's context (256 for the tiny model) ends generation */
    lr.params = greedy(1000);
    lr.params.ignore_eos = true;
    CHECK(sgl_engine_submit(e, &lr, &err) != 0);
    sgl_result *lim = sgl_engine_wait(e, 60);
    CHECK(lim && lim->finish == SGL_FINISH_LENGTH);
    if (lim) CHECK_INT(lim->prompt_tokens + lim->n_tokens, 256);
    sgl_result_free(lim);
    /* wait with nothing pending times out; poll returns NULL */
    CHECK(sgl_engine_wait(e, 0.01) == NULL);
    CHECK(sgl_engine_poll(e) == NULL);
    /* a bad request fails alone */
    int32_t bad[1] = {1 << 20};
    sgl_request b = {0};
    b.kind = SGL_REQ_GENERATE;
    b.tokens = bad;
    b.n_tokens = 1;
    b.params = greedy(2);
    CHECK(sgl_engine_submit(e, &b, &err) != 0);
    sgl_result *r = sgl_engine_wait(e, 60);
    CHECK(r && r->finish == SGL_FINISH_ABORT && r->error);
    sgl_result_free(r);
    sgl_engine_free(e);
}

/* Streaming through the engine thread: the 64 prompts streamed at once (a
 * quarter with a stop string taken from the middle of their reference text)
 * give the reference results, every request's partials add up to its final
 * result and never split a UTF-8 sequence (the tiny model emits raw bytes,
 * so sequences split over tokens are common), and a cancelled stream ends
 * with the rest of its text. */
typedef struct stream_acc {
    uint64_t id;
    sgl_strbuf text;
    int32_t tok[2048];
    int32_t n_tok, n_parts, held;
    size_t bounds[2048];        /* text offsets where a partial ended */
    bool bad;
    sgl_result *final;
} stream_acc;

static void acc_take(stream_acc *a, sgl_result *r) {
    if (r->id != a->id || a->final) a->bad = true;
    if (!r->partial) {
        a->final = r;
        return;
    }
    if (r->finish != SGL_FINISH_NONE || a->n_tok + r->n_tokens > 2048 || a->n_parts >= 2048) {
        a->bad = true;
    } else {
        sgl_strbuf_append(&a->text, r->text, r->text_len);
        memcpy(a->tok + a->n_tok, r->tokens, sizeof(int32_t) * (size_t)r->n_tokens);
        a->n_tok += r->n_tokens;
        a->bounds[a->n_parts++] = a->text.len;
        a->held += r->n_tokens > 0 && r->text_len == 0;
    }
    sgl_result_free(r);
}

/* Partials add up to the final result; no boundary inside a valid UTF-8
 * sequence of the final text (invalid bytes decode as 1-byte units). */
static bool acc_ok(const stream_acc *a) {
    const sgl_result *f = a->final;
    if (a->bad || !f || f->text_len != a->text.len || f->n_tokens != a->n_tok ||
        memcmp(f->text, a->text.data ? a->text.data : "", f->text_len) ||
        memcmp(f->tokens, a->tok, sizeof(int32_t) * (size_t)a->n_tok))
        return false;
    size_t at = 0;
    for (int32_t i = 0; i < a->n_parts; i++) {
        while (at < a->bounds[i]) {
            uint32_t cp;
            at += uni_decode((const uint8_t *)f->text + at, f->text_len - at, &cp);
        }
        if (at != a->bounds[i]) return false;
    }
    return true;
}

static void test_stream(void) {
    static stream_acc acc[N];
    static char stops[N][3];
    memset(acc, 0, sizeof acc);
    sgl_engine *e = engine_make(8192, 16, 64, false, SGL_SCHED_LPM);
    for (int i = 0; i < N; i++) {
        sgl_request rq = {0};
        rq.kind = SGL_REQ_GENERATE;
        rq.text = prompts[i];
        rq.params = greedy(8 + i % 9);
        rq.params.return_logprob = (i % 2 == 0);
        rq.user_tag = (uint64_t)i;
        rq.stream = true;
        const char *sp[1] = {stops[i]};
        if (i % 4 == 3 && ref[i] && ref[i]->text_len >= 4) {
            memcpy(stops[i], ref[i]->text + ref[i]->text_len / 2 - 1, 2);
            if (!memchr(stops[i], 0, 2)) {
                rq.params.stop = sp;
                rq.params.n_stop = 1;
            }
        }
        sgl_error err;
        acc[i].id = sgl_engine_submit(e, &rq, &err);
        CHECK_MSG(acc[i].id != 0, "submit: %s", err.msg);
    }
    int finals = 0, partials = 0;
    while (finals < N) {
        sgl_result *r = sgl_engine_wait(e, 60);
        if (!r) break;
        if (r->user_tag >= N) {
            sgl_result_free(r);
            continue;
        }
        finals += !r->partial;
        partials += r->partial;
        acc_take(&acc[r->user_tag], r);
    }
    CHECK_INT(finals, N);
    int bad = 0, differ = 0, stopped = 0, held = 0;
    for (int i = 0; i < N; i++) {
        stream_acc *a = &acc[i];
        bad += !acc_ok(a);
        held += a->held;
        const sgl_result *f = a->final, *g = ref[i];
        if (!f || !g) {
            differ++;
        } else if (stops[i][0] && f->stop_str) {
            /* cut at the stop string's first occurrence in the reference */
            const char *hit = memmem(g->text, g->text_len, stops[i], 2);
            stopped++;
            differ += !hit || f->text_len != (size_t)(hit - g->text) ||
                      memcmp(f->text, g->text, f->text_len) != 0;
        } else {
            differ += f->finish != g->finish || f->text_len != g->text_len ||
                      memcmp(f->text, g->text, g->text_len) != 0 || f->n_tokens != g->n_tokens ||
                      f->n_logprobs != g->n_logprobs;
        }
        sgl_strbuf_free(&a->text);
        sgl_result_free(a->final);
    }
    printf("stream: %d partials, %d held back (tokens, no text yet), %d cut by a stop string\n",
           partials, held, stopped);
    CHECK_MSG(bad == 0, "%d of %d streams do not add up (or split UTF-8)", bad, N);
    CHECK_MSG(differ == 0, "%d of %d streamed results differ from the reference", differ, N);
    CHECK(stopped > 0);
    CHECK(held > 0);

    /* cancel a long stream after its first partial: on an engine without the
     * tiny model's 256-token context limit, so that the stream cannot finish
     * on its own between the partial and the cancel however loaded the
     * machine is */
    sgl_engine_free(e);
    sgl_engine_config c = sgl_engine_config_default();
    c.model_path = model_path;
    c.n_threads = 1;
    c.kv_slots = 40000;
    c.max_context = -1;
    sgl_error err;
    e = sgl_engine_local_new(&c, &err);
    CHECK_MSG(e != NULL, "engine: %s", e ? "" : err.msg);
    if (!e) return;
    sgl_request lr = {0};
    lr.kind = SGL_REQ_GENERATE;
    lr.text = prompts[6];
    lr.params = greedy(32000);
    lr.params.ignore_eos = true;
    lr.stream = true;
    stream_acc *a = &acc[0];
    memset(a, 0, sizeof *a);
    a->id = sgl_engine_submit(e, &lr, &err);
    sgl_result *r = sgl_engine_wait(e, 60);
    CHECK(r && r->partial);
    if (r) acc_take(a, r);
    CHECK_INT(sgl_engine_cancel(e, a->id), 0);
    while (!a->final && (r = sgl_engine_wait(e, 60))) acc_take(a, r);
    CHECK(a->final && a->final->finish == SGL_FINISH_ABORT && a->final->n_tokens < 32000);
    CHECK(acc_ok(a));
    sgl_strbuf_free(&a->text);
    sgl_result_free(a->final);
    sgl_engine_free(e);
}

static sgl_result *gen_one(sgl_engine *e, const char *text, int32_t max_new) {
    sgl_request rq = {0};
    rq.kind = SGL_REQ_GENERATE;
    rq.text = text;
    rq.params = greedy(max_new);
    sgl_error err;
    CHECK_MSG(sgl_engine_submit(e, &rq, &err) != 0, "submit: %s", err.msg);
    return sgl_engine_wait(e, 60);
}

static void test_flush_cache(void) {
    sgl_engine *e = engine_make(2048, 512, 8, false, SGL_SCHED_LPM);
    sgl_error err;
    sgl_engine_metrics m;
    CHECK_INT((int)sgl_engine_flush_cache(e, &err), 0); /* empty: nothing to free */
    sgl_result *a = gen_one(e, prompts[0], 6), *b = gen_one(e, prompts[0], 6);
    CHECK(a && b && a->cached_tokens == 0 && b->cached_tokens == b->prompt_tokens - 1);
    sgl_engine_metrics_get(e, &m);
    int64_t cached = m.cache_tokens, evicted = m.evicted_tokens;
    CHECK(cached >= a->prompt_tokens + a->n_tokens - 1);
    CHECK_MSG(sgl_engine_flush_cache(e, &err) == cached, "flush: %s", err.msg);
    sgl_engine_metrics_get(e, &m);
    CHECK(m.cache_tokens == 0 && m.pool_used == 0 && m.evicted_tokens == evicted + cached);
    sgl_result *c = gen_one(e, prompts[0], 6);
    CHECK(c && c->cached_tokens == 0 && a && strcmp(c->text, a->text) == 0);

    /* Refused while a request is queued or running: the flush is served
     * between steps, before a 40-token generation can have finished. */
    sgl_request rq = {0};
    rq.kind = SGL_REQ_GENERATE;
    rq.text = prompts[1];
    rq.params = greedy(40);
    rq.params.ignore_eos = true;
    CHECK(sgl_engine_submit(e, &rq, &err) != 0);
    sgl_engine_metrics_get(e, &m);
    cached = m.cache_tokens;
    CHECK_INT((int)sgl_engine_flush_cache(e, &err), -1);
    CHECK_MSG(strstr(err.msg, "cache not flushed") && strstr(err.msg, "running"), "%s", err.msg);
    sgl_result *d = sgl_engine_wait(e, 60);
    CHECK(d && d->finish == SGL_FINISH_LENGTH && d->n_tokens == 40);
    sgl_engine_metrics_get(e, &m);
    CHECK(m.cache_tokens >= cached); /* nothing was evicted */
    CHECK(sgl_engine_flush_cache(e, &err) > 0);
    sgl_result_free(a);
    sgl_result_free(b);
    sgl_result_free(c);
    sgl_result_free(d);
    sgl_engine_free(e);
}

int main(int argc, char **argv) {
    model_path = argc > 1 ? argv[1] : getenv("SGL_TINY_MODEL");
    if (!model_path) TEST_SKIP_ALL("no tiny model given");
    const char *heads[4] = {"You are a helpful assistant. Answer the question about rivers. ",
                            "Translate the following words into French, one per line: ",
                            "The quick brown fox jumps over the lazy dog. Again: ", ""};
    for (int i = 0; i < N; i++)
        snprintf(prompts[i], sizeof prompts[i], "%sQuestion %d: what is %d plus %d?",
                 heads[i % 4], i, i * 7 % 13, i % 5);
    TEST_RUN(test_determinism);
    TEST_RUN(test_retraction);
    TEST_RUN(test_score_equals_generate);
    TEST_RUN(test_stop_string);
    TEST_RUN(test_stream);
    TEST_RUN(test_flush_cache);
    for (int i = 0; i < N; i++) sgl_result_free(ref[i]);
    return TEST_DONE();
}
