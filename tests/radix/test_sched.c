/* test_sched: the scheduler against a fake model whose logits are a hash of
 * the K values it reads back from the pool, so a wrong slot anywhere (cached
 * prefix, chunk boundary, retraction) changes the output. Checks: policy
 * order (lpm / fcfs / starvation fallback, by age and by later arrivals
 * passing a request), outputs identical alone vs batched vs small pool
 * (eviction + retraction) vs chunked vs warm cache,
 * stop strings across token boundaries, stop tokens, min_new_tokens,
 * ignore_eos, SCORE-style input logprobs equal to generated logprobs, and a
 * failing forward aborting only its batch; streaming (partial results add up
 * to the final one, stop strings held back, UTF-8 never split) on a scripted
 * fake. Slot accounting is checked after every step. */
#include <stdlib.h>
#include <string.h>

#include "runtime/scheduler.h"
#include "runtime/unicode.h"
#include "tests/test.h"

enum { VOCAB = 48, EOS = 0 };

/* ---- fake model ---------------------------------------------------------- */

typedef struct fake {
    int fail_next;     /* forward calls to fail */
    long calls;
    int max_seqs;      /* largest batch seen */
} fake;

static uint32_t mix(uint32_t h) {
    h ^= h >> 16;
    h *= 0x7feb352dU;
    h ^= h >> 15;
    h *= 0x846ca68bU;
    h ^= h >> 16;
    return h;
}

static int fake_forward(void *ctx, kv_pool *kv, const model_batch *b, float *logits,
                        sgl_error *err) {
    fake *f = ctx;
    f->calls++;
    if (b->n_seqs > f->max_seqs) f->max_seqs = b->n_seqs;
    if (f->fail_next > 0) {
        f->fail_next--;
        return sgl_error_set(err, "fake forward failure");
    }
    float *out = logits;
    for (int32_t i = 0; i < b->n_seqs; i++) {
        const model_seq *q = &b->seqs[i];
        if (q->n_ctx != q->pos0 + q->n_new || q->n_new < 1)
            return sgl_error_set(err, "bad descriptor");
        for (int32_t j = 0; j < q->n_new; j++) {
            int32_t p = q->pos0 + j;
            kv_pool_k(kv, 0, q->slots[p])[0] = (uint16_t)mix((uint32_t)q->tokens[j] * 1000003u + (uint32_t)p);
        }
        for (int32_t j = q->logits_from; j < q->n_new; j++) {
            int32_t p = q->pos0 + j;
            uint32_t h = 17;
            for (int32_t c = 0; c <= p; c++) h = mix(h ^ kv_pool_k(kv, 0, q->slots[c])[0]);
            /* EOS (id 0) is as likely as any token: ~1 in 48 steps */
            for (int32_t v = 0; v < VOCAB; v++)
                out[v] = (float)(mix(h ^ (uint32_t)v * 0x9e3779b9u) % 1000) / 150.0f;
            out += VOCAB;
        }
    }
    return 0;
}

static char pieces[VOCAB][3];
static const char *fake_piece(void *ctx, int32_t id, bool skip_special, size_t *len) {
    (void)ctx;
    if (id == EOS && skip_special) {
        *len = 0;
        return NULL;
    }
    *len = 2;
    return pieces[id];
}

/* ---- harness ------------------------------------------------------------- */

typedef struct run_opts {
    sgl_sched_policy policy;
    int32_t n_slots, chunk, max_running, budget, starve, share, max_context;
    bool cache_off;
    sched_forward_fn forward;    /* NULL: fake_forward */
    sched_piece_fn piece;        /* NULL: fake_piece */
    int32_t overtaken;           /* starve_overtaken (0: the scheduler's default) */
} run_opts;

static run_opts opts_default(void) {
    run_opts o = {SGL_SCHED_LPM, 4096, 0, 64, 2048, 0, 0, 0, false, NULL, NULL, 0};
    return o;
}

typedef struct env {
    fake f;
    kv_pool *pool;
    sched *s;
} env;

static void env_init(env *e, const run_opts *o) {
    memset(e, 0, sizeof *e);
    e->pool = kv_pool_new(o->n_slots, 1, 1, NULL);
    sched_config c = sched_config_default();
    c.policy = o->policy;
    c.chunk_size = o->chunk;
    c.max_running = o->max_running;
    c.max_batch_tokens = o->budget;
    c.cache_off = o->cache_off;
    c.starve_steps = o->starve;
    c.starve_overtaken = o->overtaken;
    c.share_min = o->share;
    c.max_context = o->max_context;
    c.vocab = VOCAB;
    int32_t eos = EOS;
    c.eos_ids = &eos;
    c.n_eos = 1;
    c.forward = o->forward ? o->forward : fake_forward;
    c.forward_ctx = &e->f;
    c.piece = o->piece ? o->piece : fake_piece;
    sgl_error err;
    e->s = sched_new(&c, e->pool, &err);
    if (!e->s) {
        fprintf(stderr, "sched_new: %s\n", err.msg);
        exit(1);
    }
}

static void env_free(env *e) {
    sched_free(e->s);
    CHECK_INT(kv_pool_free_count(e->pool), e->pool->n_slots);
    kv_pool_free(e->pool);
}

/* Steps to the end, checking accounting after every step. Results are put
 * in out[] by id (ids are 0..n-1). */
static void run_to_end(env *e, sgl_result **out, int n) {
    sgl_error err;
    for (int guard = 0; sched_busy(e->s) && guard < 100000; guard++) {
        int k = sched_step(e->s, &err);
        CHECK_MSG(k >= 0, "step: %s", err.msg);
        CHECK_MSG(sched_check(e->s, &err) == 0, "check: %s", err.msg);
        if (k == 0 && sched_busy(e->s)) {
            CHECK_MSG(0, "no progress");
            break;
        }
    }
    sgl_result *r;
    while ((r = sched_pop(e->s))) {
        if (r->id < (uint64_t)n && !out[r->id]) out[r->id] = r;
        else sgl_result_free(r);
    }
}

static void add(env *e, uint64_t id, const int32_t *tok, int32_t n, const sgl_sampling_params *p,
                sgl_req_kind kind) {
    sched_input in = {0};
    in.id = id;
    in.kind = kind;
    in.tokens = tok;
    in.n_tokens = n;
    in.params = p;
    sgl_error err;
    CHECK_MSG(sched_add(e->s, &in, &err) == 0, "add: %s", err.msg);
}

/* ---- workload ------------------------------------------------------------ */

enum { N_REQ = 64, MAXP = 160 };
static int32_t prompts[N_REQ][MAXP], plen[N_REQ];
static sgl_sampling_params params[N_REQ];

static void make_workload(void) {
    uint32_t h = 12345;
    int32_t shared[4][100];
    for (int k = 0; k < 4; k++)
        for (int i = 0; i < 100; i++) shared[k][i] = 1 + (int32_t)((h = mix(h + 1)) % (VOCAB - 1));
    for (int r = 0; r < N_REQ; r++) {
        int k = r % 5; /* 4 shared prefixes + some unshared prompts */
        int32_t n = 0;
        if (k < 4) {
            int32_t take = 40 + (int32_t)((h = mix(h + 7)) % 60);
            for (; n < take; n++) prompts[r][n] = shared[k][n];
        }
        int32_t tail = 3 + (int32_t)((h = mix(h + 3)) % 40);
        for (int i = 0; i < tail; i++) prompts[r][n++] = 1 + (int32_t)((h = mix(h + 5)) % (VOCAB - 1));
        plen[r] = n;
        sgl_sampling_params p = sgl_sampling_params_default();
        p.max_new_tokens = 5 + (int32_t)((h = mix(h + 11)) % 30);
        p.temperature = (r % 3 == 0) ? 0.8f : 0.0f; /* some seeded sampling too */
        p.seed = (uint64_t)r * 31u;
        p.return_logprob = (r % 4 == 0);
        params[r] = p;
    }
}

static void run_workload(const run_opts *o, sgl_result **out, int passes, sgl_engine_metrics *m) {
    env e;
    env_init(&e, o);
    memset(out, 0, sizeof(sgl_result *) * N_REQ);
    for (int pass = 0; pass < passes; pass++) {
        for (int r = 0; r < N_REQ; r++)
            add(&e, (uint64_t)r, prompts[r], plen[r], &params[r], SGL_REQ_GENERATE);
        if (pass + 1 < passes) {
            sgl_result *tmp[N_REQ] = {0};
            run_to_end(&e, tmp, N_REQ);
            for (int r = 0; r < N_REQ; r++) sgl_result_free(tmp[r]);
        } else {
            run_to_end(&e, out, N_REQ);
        }
    }
    if (m) sched_metrics(e.s, m);
    env_free(&e);
}

/* Reference: every request alone in its own scheduler, cache off. */
static sgl_result *alone[N_REQ];

static void compute_alone(void) {
    run_opts o = opts_default();
    o.cache_off = true;
    for (int r = 0; r < N_REQ; r++) {
        env e;
        env_init(&e, &o);
        add(&e, 0, prompts[r], plen[r], &params[r], SGL_REQ_GENERATE);
        sgl_result *out[1] = {0};
        run_to_end(&e, out, 1);
        alone[r] = out[0];
        env_free(&e);
    }
}

static void expect_same(sgl_result **got, const char *what) {
    int bad = 0;
    for (int r = 0; r < N_REQ; r++) {
        sgl_result *a = alone[r], *g = got[r];
        if (!a || !g) {
            bad++;
            continue;
        }
        bool same = a->n_tokens == g->n_tokens && a->finish == g->finish &&
                    memcmp(a->tokens, g->tokens, sizeof(int32_t) * (size_t)a->n_tokens) == 0 &&
                    strcmp(a->text, g->text) == 0 && a->n_logprobs == g->n_logprobs;
        for (int32_t i = 0; same && i < a->n_logprobs; i++)
            same = a->logprobs[i].logprob == g->logprobs[i].logprob;
        if (!same) bad++;
    }
    CHECK_MSG(bad == 0, "%s: %d of %d requests differ from the alone run", what, bad, N_REQ);
}

static void free_all(sgl_result **v) {
    for (int r = 0; r < N_REQ; r++) {
        sgl_result_free(v[r]);
        v[r] = NULL;
    }
}

static void test_batch_equals_alone(void) {
    sgl_result *got[N_REQ];
    sgl_engine_metrics m;
    run_opts o = opts_default();
    run_workload(&o, got, 1, &m);
    expect_same(got, "batch of 64, lpm");
    CHECK(m.cached_tokens > 0);
    CHECK_INT(m.requests_done, N_REQ);
    printf("batch: %lld forward calls, %lld prompt tokens, %lld cached (hit %.3f)\n",
           (long long)m.forward_calls, (long long)m.prompt_tokens, (long long)m.cached_tokens,
           m.hit_rate);
    free_all(got);
    o.policy = SGL_SCHED_FCFS;
    run_workload(&o, got, 1, NULL);
    expect_same(got, "batch of 64, fcfs");
    free_all(got);
    o = opts_default();
    o.cache_off = true;
    run_workload(&o, got, 1, &m);
    expect_same(got, "cache off");
    CHECK_INT(m.cached_tokens, 0);
    free_all(got);
}

/* Requests sharing a short uncached prefix, submitted together: with the
 * default hold-back the shared tokens are computed once (every request but
 * one takes them from the cache) and outputs equal the alone run's; with
 * share_min < 0 every request computes them itself. */
static void test_short_shared_prefix_held(void) {
    enum { K = 6, SHARE = 5 };
    int32_t tok[K][SHARE + 4];
    for (int k = 0; k < K; k++) {
        for (int i = 0; i < SHARE; i++) tok[k][i] = 10 + i;
        for (int i = SHARE; i < SHARE + 4; i++) tok[k][i] = 16 + 5 * k + i - SHARE;
    }
    sgl_sampling_params p = sgl_sampling_params_default();
    p.max_new_tokens = 6;
    p.temperature = 0;
    sgl_result *ref[K] = {0};
    run_opts o = opts_default();
    o.cache_off = true;
    for (int k = 0; k < K; k++) {
        env e;
        env_init(&e, &o);
        add(&e, 0, tok[k], SHARE + 4, &p, SGL_REQ_GENERATE);
        sgl_result *out[1] = {0};
        run_to_end(&e, out, 1);
        ref[k] = out[0];
        env_free(&e);
    }
    for (int share = 0; share >= -1; share--) {
        o = opts_default();
        o.share = share;
        env e;
        env_init(&e, &o);
        for (int k = 0; k < K; k++) add(&e, (uint64_t)k, tok[k], SHARE + 4, &p, SGL_REQ_GENERATE);
        sgl_result *got[K] = {0};
        run_to_end(&e, got, K);
        int32_t cached = 0;
        for (int k = 0; k < K; k++) {
            CHECK_MSG(got[k] && ref[k] && got[k]->n_tokens == ref[k]->n_tokens &&
                          memcmp(got[k]->tokens, ref[k]->tokens, sizeof(int32_t) * (size_t)ref[k]->n_tokens) == 0,
                      "share %d: request %d differs from its alone run", share, k);
            if (got[k]) cached += got[k]->cached_tokens;
        }
        if (share == 0) CHECK_INT(cached, (K - 1) * SHARE);
        else CHECK_INT(cached, 0);
        for (int k = 0; k < K; k++) sgl_result_free(got[k]);
        env_free(&e);
    }
    for (int k = 0; k < K; k++) sgl_result_free(ref[k]);
}

static void test_chunked_equals_alone(void) {
    sgl_result *got[N_REQ];
    run_opts o = opts_default();
    o.chunk = 7;
    o.budget = 50;
    run_workload(&o, got, 1, NULL);
    expect_same(got, "chunk 7, budget 50");
    free_all(got);
    /* no in-batch prefix sharing: the same prefix is computed by several
     * requests at once and later ones adopt the cache's copy */
    o.share = -1;
    run_workload(&o, got, 1, NULL);
    expect_same(got, "chunk 7, budget 50, duplicate prefill");
    free_all(got);
}

static void test_warm_equals_cold(void) {
    sgl_result *got[N_REQ];
    sgl_engine_metrics m;
    run_opts o = opts_default();
    run_workload(&o, got, 2, &m);
    expect_same(got, "warm cache");
    int warm_cached = 0;
    for (int r = 0; r < N_REQ; r++) warm_cached += got[r] && got[r]->cached_tokens == plen[r] - 1;
    CHECK_MSG(warm_cached == N_REQ, "%d of %d fully cached on the second pass", warm_cached, N_REQ);
    free_all(got);
}

/* A pool far smaller than the workload: eviction and retraction, same outputs. */
static void test_small_pool(void) {
    sgl_result *got[N_REQ];
    sgl_engine_metrics m;
    run_opts o = opts_default();
    o.n_slots = 400;
    o.chunk = 32;
    run_workload(&o, got, 1, &m);
    expect_same(got, "pool of 400 slots");
    printf("small pool: %lld evicted, %lld retractions\n", (long long)m.evicted_tokens,
           (long long)m.retractions);
    CHECK(m.evicted_tokens > 0);
    free_all(got);
    o.cache_off = true;
    run_workload(&o, got, 1, &m);
    expect_same(got, "pool of 400 slots, cache off");
    free_all(got);
}

/* Long outputs beyond the admission reserve: decoding runs out of slots and
 * requests are retracted, resumed later, and still produce the same tokens
 * (seeded sampling included: the sampler state survives retraction). */
static void test_retraction(void) {
    enum { N = 6 };
    int32_t pr[N][20];
    sgl_sampling_params sp = sgl_sampling_params_default();
    sp.max_new_tokens = 60;
    sp.ignore_eos = true;
    sp.temperature = 0.7f;
    sgl_result *ref[N] = {0}, *got[N] = {0};
    run_opts o = opts_default();
    for (int r = 0; r < N; r++) {
        for (int i = 0; i < 20; i++) pr[r][i] = 1 + (r * 13 + i * 5) % 47;
        env e;
        env_init(&e, &o);
        sp.seed = (uint64_t)r;
        add(&e, 0, pr[r], 20, &sp, SGL_REQ_GENERATE);
        sgl_result *one[1] = {0};
        run_to_end(&e, one, 1);
        ref[r] = one[0];
        env_free(&e);
    }
    for (int cache_off = 0; cache_off < 2; cache_off++) {
        o.n_slots = 130;
        o.cache_off = cache_off;
        env e;
        env_init(&e, &o);
        for (int r = 0; r < N; r++) {
            sp.seed = (uint64_t)r;
            add(&e, (uint64_t)r, pr[r], 20, &sp, SGL_REQ_GENERATE);
        }
        run_to_end(&e, got, N);
        sgl_engine_metrics m;
        sched_metrics(e.s, &m);
        printf("retraction test (cache %s): %lld retractions\n", cache_off ? "off" : "on",
               (long long)m.retractions);
        CHECK(m.retractions > 0);
        for (int r = 0; r < N; r++) {
            CHECK(got[r] && ref[r] && got[r]->n_tokens == 60 &&
                  memcmp(got[r]->tokens, ref[r]->tokens, sizeof(int32_t) * 60) == 0);
            sgl_result_free(got[r]);
            got[r] = NULL;
        }
        env_free(&e);
    }
    for (int r = 0; r < N; r++) sgl_result_free(ref[r]);
}

/* Finishing order with one request at a time shows the admission order. */
static void order_run(sgl_sched_policy pol, int32_t starve, int32_t overtaken, uint64_t *order) {
    run_opts o = opts_default();
    o.policy = pol;
    o.max_running = 1;
    o.starve = starve;
    o.overtaken = overtaken;
    env e;
    env_init(&e, &o);
    int32_t p1[40], p2[40], a1[44], a2[44], b[44];
    for (int i = 0; i < 40; i++) {
        p1[i] = 1 + i % 20;
        p2[i] = 21 + i % 20;
    }
    sgl_sampling_params sp = sgl_sampling_params_default();
    sp.temperature = 0;
    sp.max_new_tokens = 2;
    sp.ignore_eos = true;
    add(&e, 9, p1, 40, &sp, SGL_REQ_PREFILL);
    sgl_result *warm[10] = {0};
    run_to_end(&e, warm, 10);
    CHECK(warm[9] && warm[9]->finish == SGL_FINISH_LENGTH && warm[9]->n_tokens == 0);
    sgl_result_free(warm[9]);
    memcpy(a1, p1, sizeof p1);
    memcpy(a2, p1, sizeof p1);
    memcpy(b, p2, sizeof p2);
    for (int i = 0; i < 4; i++) {
        a1[40 + i] = 41 + i;
        a2[40 + i] = 42 + i;
        b[40 + i] = 43 - i;
    }
    add(&e, 0, b, 44, &sp, SGL_REQ_GENERATE);
    add(&e, 1, a1, 44, &sp, SGL_REQ_GENERATE);
    add(&e, 2, a2, 44, &sp, SGL_REQ_GENERATE);
    sgl_error err;
    int k = 0;
    while (sched_busy(e.s) && k < 3) {
        CHECK(sched_step(e.s, &err) >= 0);
        sgl_result *r;
        while ((r = sched_pop(e.s))) {
            if (k < 3) order[k++] = r->id;
            sgl_result_free(r);
        }
    }
    env_free(&e);
}

static void test_policy_order(void) {
    sgl_sched_policy pol = SGL_SCHED_LPM;
    CHECK(sgl_sched_policy_parse("fcfs", &pol) == 0 && pol == SGL_SCHED_FCFS);
    CHECK(sgl_sched_policy_parse("lpm", &pol) == 0 && pol == SGL_SCHED_LPM);
    CHECK(sgl_sched_policy_parse("random", &pol) == 0 && pol == SGL_SCHED_RANDOM);
    CHECK(sgl_sched_policy_parse("bogus", &pol) == -1);
    CHECK_STR(sgl_sched_policy_name(SGL_SCHED_FCFS), "fcfs");
    CHECK_STR(sgl_sched_policy_name(SGL_SCHED_RANDOM), "random");
    uint64_t o[3] = {99, 99, 99};
    /* random order still runs every request */
    order_run(SGL_SCHED_RANDOM, 0, 0, o);
    CHECK_MSG(o[0] + o[1] + o[2] == 3 && o[0] != o[1] && o[1] != o[2] && o[0] != o[2] && o[0] < 3 &&
                  o[1] < 3 && o[2] < 3,
              "random order %llu %llu %llu", (unsigned long long)o[0], (unsigned long long)o[1],
              (unsigned long long)o[2]);
    order_run(SGL_SCHED_LPM, 0, -1, o); /* pure LPM: the uncached request last */
    CHECK_MSG(o[0] == 1 && o[1] == 2 && o[2] == 0, "lpm order %llu %llu %llu",
              (unsigned long long)o[0], (unsigned long long)o[1], (unsigned long long)o[2]);
    order_run(SGL_SCHED_FCFS, 0, 0, o);
    CHECK_MSG(o[0] == 0 && o[1] == 1 && o[2] == 2, "fcfs order %llu %llu %llu",
              (unsigned long long)o[0], (unsigned long long)o[1], (unsigned long long)o[2]);
    order_run(SGL_SCHED_LPM, 1, -1, o); /* everyone starving at once: arrival order */
    CHECK_MSG(o[0] == 0 && o[1] == 1 && o[2] == 2, "starving order %llu %llu %llu",
              (unsigned long long)o[0], (unsigned long long)o[1], (unsigned long long)o[2]);
    /* The default bound (max_running = 1 later arrival passing it): the
     * uncached request goes once a1 has overtaken it, before a2. */
    order_run(SGL_SCHED_LPM, 0, 0, o);
    CHECK_MSG(o[0] == 1 && o[1] == 0 && o[2] == 2, "overtaken order %llu %llu %llu",
              (unsigned long long)o[0], (unsigned long long)o[1], (unsigned long long)o[2]);
    order_run(SGL_SCHED_LPM, 0, 2, o); /* passed twice before it goes: last */
    CHECK_MSG(o[0] == 1 && o[1] == 2 && o[2] == 0, "overtaken twice order %llu %llu %llu",
              (unsigned long long)o[0], (unsigned long long)o[1], (unsigned long long)o[2]);
}

/* Greedy text without stops, then the same with a stop string that spans a
 * token boundary (pieces are 2 bytes): cut before its first occurrence. */
static void test_stop_strings(void) {
    run_opts o = opts_default();
    int32_t prompt[] = {5, 6, 7, 8};
    sgl_sampling_params sp = sgl_sampling_params_default();
    sp.temperature = 0;
    sp.max_new_tokens = 20;
    sp.ignore_eos = true;
    sp.skip_special_tokens = false; /* every token 2 bytes, EOS included */
    env e;
    env_init(&e, &o);
    add(&e, 0, prompt, 4, &sp, SGL_REQ_GENERATE);
    sgl_result *full[1] = {0};
    run_to_end(&e, full, 1);
    CHECK(full[0] && full[0]->text_len == 40 && full[0]->finish == SGL_FINISH_LENGTH);
    char stop[4];
    memcpy(stop, full[0]->text + 5, 3); /* bytes 5..7: crosses the 6 boundary */
    stop[3] = 0;
    const char *where = strstr(full[0]->text, stop);
    const char *stops[] = {"zzzzzzz", stop};
    sp.stop = stops;
    sp.n_stop = 2;
    add(&e, 1, prompt, 4, &sp, SGL_REQ_GENERATE);
    sgl_result *cut[2] = {0};
    run_to_end(&e, cut, 2);
    sgl_result *c = cut[1];
    CHECK(c && c->finish == SGL_FINISH_STOP);
    if (c && where) {
        CHECK_STR(c->stop_str, stop);
        CHECK_INT(c->text_len, where - full[0]->text);
        CHECK(strncmp(c->text, full[0]->text, c->text_len) == 0);
        /* generation stopped at the token completing the match */
        CHECK_INT(c->n_tokens, ((where - full[0]->text) + 3 + 1) / 2);
    }
    /* min_new_tokens: no stop before 10 tokens */
    sp.min_new_tokens = 10;
    add(&e, 0, prompt, 4, &sp, SGL_REQ_GENERATE);
    sgl_result *mn[1] = {0};
    run_to_end(&e, mn, 1);
    CHECK(mn[0] && mn[0]->n_tokens >= 10);
    sgl_result_free(mn[0]);
    sgl_result_free(full[0]);
    sgl_result_free(c);
    env_free(&e);
}

/* Stop tokens: EOS ends (and is returned as stop_token) unless ignore_eos;
 * stop_token_ids likewise; min_new_tokens masks them. */
static void test_stop_tokens(void) {
    run_opts o = opts_default();
    env e;
    env_init(&e, &o);
    int stopped = 0, masked_ok = 1;
    for (int r = 0; r < 40; r++) {
        int32_t prompt[3] = {1 + r % 40, 2 + r % 30, 3};
        sgl_sampling_params sp = sgl_sampling_params_default();
        sp.temperature = 0;
        sp.max_new_tokens = 30;
        add(&e, 0, prompt, 3, &sp, SGL_REQ_GENERATE);
        sgl_result *a[1] = {0};
        run_to_end(&e, a, 1);
        if (a[0] && a[0]->finish == SGL_FINISH_STOP) {
            stopped++;
            CHECK_INT(a[0]->stop_token, EOS);
            CHECK_INT(a[0]->tokens[a[0]->n_tokens - 1], EOS);
            CHECK_INT(a[0]->text_len, 2 * (a[0]->n_tokens - 1)); /* EOS text skipped */
            /* stop on the token before EOS instead */
            if (a[0]->n_tokens >= 2) {
                int32_t t = a[0]->tokens[a[0]->n_tokens - 2];
                bool earlier = false;
                for (int32_t i = 0; i < a[0]->n_tokens - 2; i++) earlier |= a[0]->tokens[i] == t;
                sp.stop_token_ids = &t;
                sp.n_stop_token_ids = 1;
                add(&e, 0, prompt, 3, &sp, SGL_REQ_GENERATE);
                sgl_result *b[1] = {0};
                run_to_end(&e, b, 1);
                CHECK(b[0] && b[0]->finish == SGL_FINISH_STOP && b[0]->stop_token == t);
                if (b[0] && !earlier) CHECK_INT(b[0]->n_tokens, a[0]->n_tokens - 1);
                sgl_result_free(b[0]);
                sp.stop_token_ids = NULL;
                sp.n_stop_token_ids = 0;
            }
            /* ignore_eos runs to the length limit */
            sp.ignore_eos = true;
            add(&e, 0, prompt, 3, &sp, SGL_REQ_GENERATE);
            sgl_result *c[1] = {0};
            run_to_end(&e, c, 1);
            CHECK(c[0] && c[0]->finish == SGL_FINISH_LENGTH && c[0]->n_tokens == 30);
            sgl_result_free(c[0]);
            /* min_new_tokens masks EOS */
            sp.ignore_eos = false;
            sp.min_new_tokens = a[0]->n_tokens + 2;
            add(&e, 0, prompt, 3, &sp, SGL_REQ_GENERATE);
            sgl_result *d[1] = {0};
            run_to_end(&e, d, 1);
            if (d[0])
                for (int32_t i = 0; i < sp.min_new_tokens && i < d[0]->n_tokens - 1; i++)
                    masked_ok &= d[0]->tokens[i] != EOS;
            CHECK(d[0] && d[0]->n_tokens >= SGL_MIN(sp.min_new_tokens, sp.max_new_tokens));
            sgl_result_free(d[0]);
        }
        sgl_result_free(a[0]);
    }
    CHECK_MSG(stopped >= 3, "only %d of 40 prompts hit EOS", stopped);
    CHECK(masked_ok);
    env_free(&e);
}

/* Logprobs of the prompt tokens from logprob_start_len (how SCORE works)
 * equal the logprobs of the same tokens when generated. */
static void test_score_equals_generate(void) {
    run_opts o = opts_default();
    o.chunk = 5;
    env e;
    env_init(&e, &o);
    int32_t prompt[64];
    for (int i = 0; i < 20; i++) prompt[i] = 1 + (i * 7) % 40;
    sgl_sampling_params sp = sgl_sampling_params_default();
    sp.temperature = 0;
    sp.max_new_tokens = 12;
    sp.ignore_eos = true;
    sp.return_logprob = true;
    sp.top_logprobs_num = 3;
    add(&e, 0, prompt, 20, &sp, SGL_REQ_GENERATE);
    sgl_result *g[1] = {0};
    run_to_end(&e, g, 1);
    CHECK(g[0] && g[0]->n_logprobs == 12);
    if (!g[0]) return;
    memcpy(prompt + 20, g[0]->tokens, sizeof(int32_t) * 12);
    sgl_sampling_params ss = sgl_sampling_params_default();
    ss.max_new_tokens = 0;
    ss.logprob_start_len = 20;
    ss.top_logprobs_num = 3;
    add(&e, 1, prompt, 32, &ss, SGL_REQ_GENERATE); /* prefix now cached: still scored */
    sgl_result *sc[2] = {0};
    run_to_end(&e, sc, 2);
    CHECK(sc[1] && sc[1]->n_input_logprobs == 12 && sc[1]->n_tokens == 0);
    if (sc[1] && sc[1]->n_input_logprobs == 12) {
        for (int i = 0; i < 12; i++) {
            CHECK_INT(sc[1]->input_logprobs[i].token, g[0]->tokens[i]);
            CHECK(sc[1]->input_logprobs[i].logprob == g[0]->logprobs[i].logprob);
            CHECK_INT(sc[1]->input_logprobs[i].n_top, 3);
            CHECK_INT(sc[1]->input_logprobs[i].top_ids[0], g[0]->logprobs[i].top_ids[0]);
        }
        CHECK(sc[1]->cached_tokens <= 19);
    }
    sgl_result_free(g[0]);
    sgl_result_free(sc[1]);
    env_free(&e);
}

static void test_forward_failure(void) {
    run_opts o = opts_default();
    o.share = -1; /* requests 0 and 1 share a prefix: both in the failing step */
    env e;
    env_init(&e, &o);
    sgl_sampling_params sp = sgl_sampling_params_default();
    sp.temperature = 0;
    sp.max_new_tokens = 4;
    sp.ignore_eos = true;
    int32_t p[] = {3, 4, 5, 6, 7};
    add(&e, 0, p, 5, &sp, SGL_REQ_GENERATE);
    add(&e, 1, p, 4, &sp, SGL_REQ_GENERATE);
    e.f.fail_next = 1;
    sgl_error err;
    CHECK_INT(sched_step(e.s, &err), -1);
    CHECK(sched_check(e.s, &err) == 0);
    add(&e, 2, p, 5, &sp, SGL_REQ_GENERATE);
    sgl_result *r[3] = {0};
    run_to_end(&e, r, 3);
    CHECK(r[0] && r[0]->finish == SGL_FINISH_ABORT && strstr(r[0]->error, "fake forward"));
    CHECK(r[1] && r[1]->finish == SGL_FINISH_ABORT);
    CHECK(r[2] && r[2]->finish == SGL_FINISH_LENGTH && r[2]->n_tokens == 4);
    CHECK_INT(radix_cached_tokens(sched_cache(e.s)), 5 + 3); /* only request 2's KV */
    /* refused at add: empty prompt, out-of-range token, token healing (a
     * matcher) without a constraint vocabulary */
    int32_t bad[] = {VOCAB + 5};
    add(&e, 0, p, 0, &sp, SGL_REQ_GENERATE);
    add(&e, 1, bad, 1, &sp, SGL_REQ_GENERATE);
    sgl_sampling_params rx = sp;
    rx.token_healing = true;
    add(&e, 2, p, 5, &rx, SGL_REQ_GENERATE);
    for (int i = 0; i < 3; i++) {
        sgl_result_free(r[i]);
        r[i] = NULL;
    }
    run_to_end(&e, r, 3);
    for (int i = 0; i < 3; i++) {
        CHECK(r[i] && r[i]->finish == SGL_FINISH_ABORT && r[i]->error);
        sgl_result_free(r[i]);
    }
    env_free(&e);
}

/* Cancelling by user_tag: waiting and running requests end with ABORT
 * "cancelled", others run on, and no slot is lost. */
static void test_cancel(void) {
    run_opts o = opts_default();
    o.max_running = 2;
    o.share = -1; /* requests 0 and 1 (sharing a prefix) are admitted together */
    env e;
    env_init(&e, &o);
    sgl_sampling_params sp = sgl_sampling_params_default();
    sp.temperature = 0;
    sp.max_new_tokens = 40;
    sp.ignore_eos = true;
    int32_t p[] = {3, 4, 5, 6, 7};
    for (uint64_t i = 0; i < 4; i++) {
        sched_input in = {0};
        in.id = i;
        in.user_tag = i < 2 ? 7 : 8; /* 0 running + 1 running: tag 7; 2, 3 waiting: tag 8 */
        in.tokens = p;
        in.n_tokens = 5 - (int32_t)i % 2;
        in.params = &sp;
        in.kind = SGL_REQ_GENERATE;
        sched_add(e.s, &in, NULL);
    }
    sgl_error err;
    for (int k = 0; k < 3; k++) CHECK(sched_step(e.s, &err) >= 0);
    CHECK_INT(sched_cancel(e.s, 7), 2);
    CHECK(sched_check(e.s, &err) == 0);
    CHECK_INT(sched_cancel(e.s, 99), 0);
    sgl_result *r[4] = {0};
    run_to_end(&e, r, 4);
    for (int i = 0; i < 4; i++) {
        CHECK(r[i] != NULL);
        if (!r[i]) continue;
        if (i < 2) {
            CHECK(r[i]->finish == SGL_FINISH_ABORT && !strcmp(r[i]->error, "cancelled"));
            CHECK(r[i]->n_tokens >= 1 && r[i]->n_tokens < 40);
        } else {
            CHECK(r[i]->finish == SGL_FINISH_LENGTH && r[i]->n_tokens == 40);
        }
        sgl_result_free(r[i]);
    }
    env_free(&e);
}

/* Context limit: long prompts refused, generation cut at the limit. */
static void test_max_context(void) {
    run_opts o = opts_default();
    o.max_context = 12;
    env e;
    env_init(&e, &o);
    sgl_sampling_params sp = sgl_sampling_params_default();
    sp.temperature = 0;
    sp.max_new_tokens = 30;
    sp.ignore_eos = true;
    int32_t p[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    add(&e, 0, p, 5, &sp, SGL_REQ_GENERATE);
    add(&e, 1, p, 12, &sp, SGL_REQ_GENERATE);
    sgl_result *r[2] = {0};
    run_to_end(&e, r, 2);
    CHECK(r[0] && r[0]->finish == SGL_FINISH_LENGTH && r[0]->n_tokens == 7);
    CHECK(r[1] && r[1]->finish == SGL_FINISH_ABORT);
    sgl_result_free(r[0]);
    sgl_result_free(r[1]);
    env_free(&e);
}

/* ---- streaming ----------------------------------------------------------- */

/* What the partial results of one request added up to. */
typedef struct streamed {
    sgl_strbuf text;
    int32_t *tokens;
    int32_t n_tokens, n_partials;
    char **deltas;              /* each partial's text, in order */
    bool bad_order;             /* a partial after the final result, or a bad field */
    sgl_result *final;
} streamed;

static void streamed_take(streamed *st, sgl_result *r) {
    if (!r->partial) {
        if (st->final) st->bad_order = true;
        sgl_result_free(st->final);
        st->final = r;
        return;
    }
    if (st->final || r->finish != SGL_FINISH_NONE || r->text_len != strlen(r->text))
        st->bad_order = true;
    sgl_strbuf_append(&st->text, r->text, r->text_len);
    st->tokens = realloc(st->tokens, sizeof(int32_t) * (size_t)(st->n_tokens + r->n_tokens + 1));
    memcpy(st->tokens + st->n_tokens, r->tokens, sizeof(int32_t) * (size_t)r->n_tokens);
    st->n_tokens += r->n_tokens;
    st->deltas = realloc(st->deltas, sizeof(char *) * (size_t)(st->n_partials + 1));
    st->deltas[st->n_partials++] = sgl_strdup(r->text);
    sgl_result_free(r);
}

static void streamed_free(streamed *st) {
    sgl_strbuf_free(&st->text);
    free(st->tokens);
    for (int32_t i = 0; i < st->n_partials; i++) free(st->deltas[i]);
    free(st->deltas);
    sgl_result_free(st->final);
    memset(st, 0, sizeof *st);
}

/* True when no delta boundary falls inside a valid UTF-8 sequence of the
 * final text (invalid bytes decode as 1-byte units). */
static bool utf8_unsplit(const streamed *st) {
    const uint8_t *t = (const uint8_t *)st->text.data;
    size_t n = st->text.len, at = 0, b = 0;
    for (int32_t i = 0; i + 1 < st->n_partials; i++) {
        b += strlen(st->deltas[i]);
        while (at < b) {
            uint32_t cp;
            at += uni_decode(t + at, n - at, &cp);
        }
        if (at != b) return false;
    }
    return true;
}

/* The partials of a streamed request add up to its final result. */
static bool streamed_adds_up(const streamed *st) {
    const sgl_result *f = st->final;
    return f && !st->bad_order && f->text_len == st->text.len &&
           !memcmp(f->text, st->text.data ? st->text.data : "", f->text_len) &&
           f->n_tokens == st->n_tokens &&
           !memcmp(f->tokens, st->tokens ? st->tokens : f->tokens,
                   sizeof(int32_t) * (size_t)f->n_tokens);
}

/* Scripted model: the first prompt token picks a script, which the request
 * follows greedily (then EOS). K holds each token's id. */
enum { SCRIPT_PROMPT = 3 };
static const int32_t *scripts[4];
static int32_t script_len[4];

static int script_forward(void *ctx, kv_pool *kv, const model_batch *b, float *logits,
                          sgl_error *err) {
    (void)ctx;
    (void)err;
    float *out = logits;
    for (int32_t i = 0; i < b->n_seqs; i++) {
        const model_seq *q = &b->seqs[i];
        for (int32_t j = 0; j < q->n_new; j++)
            kv_pool_k(kv, 0, q->slots[q->pos0 + j])[0] = (uint16_t)q->tokens[j];
        for (int32_t j = q->logits_from; j < q->n_new; j++) {
            int32_t sel = kv_pool_k(kv, 0, q->slots[0])[0] % 4;
            int32_t g = q->pos0 + j + 1 - SCRIPT_PROMPT;
            int32_t want = g >= 0 && g < script_len[sel] ? scripts[sel][g] : EOS;
            for (int32_t v = 0; v < VOCAB; v++) out[v] = v == want ? 10.0f : 0.0f;
            out += VOCAB;
        }
    }
    return 0;
}

static const char *const spieces[] = {
    "", "ab", "ST", "Oq", "xy", "OP", "a", "\xC3", "\xA9", "\xE2\x82", "\xAC", "\xF0",
    "\x9F\x98", "\x80" "b", "\xE2", "\x82\xAC" "c", "\xFF", "\xC3\xA9", "\xF0\x9F", "z"};
static const char *script_piece(void *ctx, int32_t id, bool skip_special, size_t *len) {
    (void)ctx;
    (void)skip_special;
    const char *p = id >= 0 && id < (int32_t)(sizeof spieces / sizeof *spieces) ? spieces[id] : "?";
    *len = strlen(p);
    return p;
}

/* Runs one scripted request with streaming; fills st. */
static void run_script(int sel, const sgl_sampling_params *sp, streamed *st) {
    run_opts o = opts_default();
    o.forward = script_forward;
    o.piece = script_piece;
    env e;
    env_init(&e, &o);
    int32_t prompt[SCRIPT_PROMPT] = {sel, 20, 21};
    sched_input in = {0};
    in.id = 7;
    in.kind = SGL_REQ_GENERATE;
    in.tokens = prompt;
    in.n_tokens = SCRIPT_PROMPT;
    in.params = sp;
    in.stream = true;
    sgl_error err;
    CHECK(sched_add(e.s, &in, &err) == 0);
    memset(st, 0, sizeof *st);
    while (sched_busy(e.s)) {
        CHECK(sched_step(e.s, &err) >= 0);
        sgl_result *r;
        while ((r = sched_pop(e.s))) {
            CHECK(r->id == 7);
            streamed_take(st, r);
        }
    }
    env_free(&e);
}

static void expect_deltas(const streamed *st, const char *const *want, int32_t n) {
    CHECK_INT(st->n_partials, n);
    for (int32_t i = 0; i < n && i < st->n_partials; i++) CHECK_STR(st->deltas[i], want[i]);
}

/* A tail that may begin a stop string waits for the next token; the stop
 * string itself never goes out; with min_new_tokens nothing goes out early. */
static void test_stream_stop_held_back(void) {
    static const int32_t sa[] = {1, 2, 3, 4, 2, 5, 19, 19};
    scripts[1] = sa;
    script_len[1] = 8;
    sgl_sampling_params sp = sgl_sampling_params_default();
    sp.temperature = 0;
    sp.max_new_tokens = 20;
    const char *stops[] = {"STOP", "xyz"};
    sp.stop = stops;
    sp.n_stop = 2;
    streamed st;
    run_script(1, &sp, &st);
    const char *want[] = {"ab", "", "STOq", "", "xy", ""};
    expect_deltas(&st, want, 6);
    CHECK(streamed_adds_up(&st));
    CHECK(st.final && st.final->finish == SGL_FINISH_STOP);
    if (st.final) {
        CHECK_STR(st.final->text, "abSTOqxy");
        CHECK_STR(st.final->stop_str, "STOP");
        CHECK_INT(st.final->n_tokens, 6);
    }
    streamed_free(&st);

    sp.min_new_tokens = 4;
    run_script(1, &sp, &st);
    const char *want_min[] = {"", "", "", "abSTOq", "xy", ""};
    expect_deltas(&st, want_min, 6);
    CHECK(streamed_adds_up(&st));
    streamed_free(&st);

    /* no stop strings: every token's text goes out at once */
    sp.min_new_tokens = 0;
    sp.n_stop = 0;
    sp.stop = NULL;
    sp.max_new_tokens = 8;
    run_script(1, &sp, &st);
    const char *want_plain[] = {"ab", "ST", "Oq", "xy", "ST", "OP", "z", "z"};
    expect_deltas(&st, want_plain, 8);
    CHECK(streamed_adds_up(&st) && st.final && st.final->finish == SGL_FINISH_LENGTH);
    streamed_free(&st);
}

/* Multi-byte sequences split over tokens go out whole; invalid bytes go out
 * as they are; an incomplete tail at the end comes in the last partial. */
static void test_stream_utf8(void) {
    static const int32_t sb[] = {6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 6, 17, 18};
    scripts[2] = sb;
    script_len[2] = 14;
    sgl_sampling_params sp = sgl_sampling_params_default();
    sp.temperature = 0;
    sp.max_new_tokens = 14;
    streamed st;
    run_script(2, &sp, &st);
    const char *want[] = {"a", "", "\xC3\xA9", "", "\xE2\x82\xAC", "", "", "\xF0\x9F\x98\x80" "b",
                          "", "\xE2\x82\xAC" "c", "\xFF", "a", "\xC3\xA9", "\xF0\x9F"};
    expect_deltas(&st, want, 14);
    CHECK(streamed_adds_up(&st));
    CHECK(utf8_unsplit(&st));
    streamed_free(&st);
    /* the same text ending in a stop string that starts inside a sequence */
    const char *stops[] = {"\xA9\xF0"};
    sp.stop = stops;
    sp.n_stop = 1;
    run_script(2, &sp, &st);
    CHECK(streamed_adds_up(&st) && utf8_unsplit(&st));
    CHECK(st.final && st.final->finish == SGL_FINISH_STOP && st.final->n_tokens == 14);
    if (st.final) CHECK_STR(st.final->text, "a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80" "b\xE2\x82\xAC" "c\xFF" "a\xC3");
    streamed_free(&st);
}

/* The random workload streamed, with stop strings on some requests, in a
 * pool small enough for retraction (both passes): the same final results as without
 * streaming, and every request's partials add up to its final result. */
static void test_stream_workload(void) {
    run_opts o = opts_default();
    o.n_slots = 180;
    o.chunk = 16;
    int64_t retractions = 0;
    const char *stops[] = {"qd", "kkk", "ab", "cf", "dz", "mo", "ui", "ew"};
    sgl_sampling_params sp[N_REQ];
    for (int r = 0; r < N_REQ; r++) {
        sp[r] = params[r];
        if (r % 3 == 1) {
            sp[r].stop = stops;
            sp[r].n_stop = 8;
            sp[r].min_new_tokens = r % 2 ? 3 : 0;
        }
    }
    sgl_result *plain[N_REQ] = {0};
    streamed st[N_REQ];
    memset(st, 0, sizeof st);
    for (int pass = 0; pass < 2; pass++) {
        env e;
        env_init(&e, &o);
        for (int r = 0; r < N_REQ; r++) {
            sched_input in = {0};
            in.id = (uint64_t)r;
            in.kind = SGL_REQ_GENERATE;
            in.tokens = prompts[r];
            in.n_tokens = plen[r];
            in.params = &sp[r];
            in.stream = pass == 1;
            sgl_error err;
            CHECK(sched_add(e.s, &in, &err) == 0);
        }
        sgl_error err;
        int guard = 0;
        while (sched_busy(e.s) && guard++ < 100000) {
            CHECK(sched_step(e.s, &err) >= 0);
            CHECK_MSG(sched_check(e.s, &err) == 0, "check: %s", err.msg);
            sgl_result *r;
            while ((r = sched_pop(e.s))) {
                if (r->id >= N_REQ) sgl_result_free(r);
                else if (pass == 0) {
                    CHECK(!r->partial);
                    plain[r->id] = r;
                } else {
                    streamed_take(&st[r->id], r);
                }
            }
        }
        sgl_engine_metrics m;
        sched_metrics(e.s, &m);
        retractions += m.retractions;
        env_free(&e);
    }
    int bad = 0, stopped = 0, partials = 0;
    for (int r = 0; r < N_REQ; r++) {
        const sgl_result *a = plain[r], *f = st[r].final;
        bool ok = a && f && streamed_adds_up(&st[r]) && a->finish == f->finish &&
                  a->text_len == f->text_len && !memcmp(a->text, f->text, a->text_len) &&
                  a->n_tokens == f->n_tokens && a->n_logprobs == f->n_logprobs;
        bad += !ok;
        stopped += f && f->stop_str != NULL;
        partials += st[r].n_partials;
        sgl_result_free(plain[r]);
        streamed_free(&st[r]);
    }
    printf("stream workload: %d partials, %d stopped by a stop string, %lld retractions\n",
           partials, stopped, (long long)retractions);
    CHECK_MSG(bad == 0, "%d of %d streamed requests differ or do not add up", bad, N_REQ);
    CHECK(stopped > 0);
    CHECK(retractions > 0);
}

int main(void) {
    for (int v = 0; v < VOCAB; v++) {
        pieces[v][0] = (char)('a' + v % 26);
        pieces[v][1] = (char)('a' + (v * 7 + 3) % 26);
    }
    make_workload();
    compute_alone();
    TEST_RUN(test_batch_equals_alone);
    TEST_RUN(test_chunked_equals_alone);
    TEST_RUN(test_short_shared_prefix_held);
    TEST_RUN(test_warm_equals_cold);
    TEST_RUN(test_small_pool);
    TEST_RUN(test_retraction);
    TEST_RUN(test_policy_order);
    TEST_RUN(test_stop_strings);
    TEST_RUN(test_stop_tokens);
    TEST_RUN(test_score_equals_generate);
    TEST_RUN(test_forward_failure);
    TEST_RUN(test_cancel);
    TEST_RUN(test_max_context);
    TEST_RUN(test_stream_stop_held_back);
    TEST_RUN(test_stream_utf8);
    TEST_RUN(test_stream_workload);
    for (int r = 0; r < N_REQ; r++) sgl_result_free(alone[r]);
    return TEST_DONE();
}
