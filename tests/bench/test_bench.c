/* test_bench: `sglc bench`'s library (cli/bench/):
 *   - the offline best-hit-rate calculator on hand-made request streams, and
 *     against a brute-force longest-common-prefix search on random ones;
 *   - every workload on the fake engine in full, no-parallel and baseline
 *     mode: the requests each program makes (gens, selects, fork prefixes),
 *     tree of thought's gens per level, latencies and hit rates;
 *   - the VM knobs the modes use: serial (one request in flight) and
 *     no_prefill, on the fake engine's request log;
 *   - repeated runs (bench_opts.min_seconds): as many runs as asked, at most
 *     BENCH_MAX_RUNS, counts and rates over all of them, each run on a
 *     fresh engine (the same cache hits every time);
 *   - every workload on the tiny model (argv[1]) in full and baseline mode:
 *     runs, request counts, measured hit rate within the best possible, and
 *     the recorder's tokenization agreeing with the engine's token counts.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/bench/ideal.h"
#include "cli/bench/suite.h"
#include "tests/test.h"
#include "vm/session.h"

static const char *tiny_model;

static void test_ideal_hand_made(void) {
    bench_ideal *c = bench_ideal_new();
    CHECK(c);
    int32_t a[] = {1, 2, 3, 4}, b[] = {1, 2, 5}, d[] = {1, 2, 5, 6}, e[] = {9};
    CHECK_INT(bench_ideal_prompt(c, a, 4, 3), 0);  /* first sight: nothing cached */
    CHECK_INT(bench_ideal_prompt(c, a, 4, 3), 3);  /* again: all but the last token */
    CHECK_INT(bench_ideal_prompt(c, b, 3, 2), 2);  /* shares [1, 2] */
    CHECK_INT(bench_ideal_prompt(c, d, 4, 3), 3);  /* [1, 2, 5] seen just before */
    CHECK_INT(bench_ideal_prompt(c, e, 1, 0), 0);
    CHECK_INT(bench_ideal_prompt(c, a, 4, 1), 1);  /* the cap wins */
    CHECK_INT(c->prompt, 4 + 4 + 3 + 4 + 1 + 4);
    CHECK_INT(c->cached, 0 + 3 + 2 + 3 + 0 + 1);
    /* a finished request's output is cached with its prompt */
    int32_t p[] = {7, 8}, po[] = {7, 8, 10, 11}, next[] = {7, 8, 10, 11, 12};
    CHECK_INT(bench_ideal_prompt(c, p, 2, 1), 0);
    CHECK_INT(bench_ideal_match(c, next, 5), 2);
    CHECK(bench_ideal_insert(c, po, 4) == 0);
    CHECK_INT(bench_ideal_prompt(c, next, 5, 4), 4);
    bench_ideal_free(c);
}

/* Random streams over a small alphabet (many shared prefixes) against the
 * definition: max over earlier sequences of the common prefix, capped. */
static void test_ideal_random(void) {
    enum { N = 300, L = 40 };
    static int32_t seqs[N][L];
    int32_t lens[N];
    uint64_t x = 12345;
    for (int round = 0; round < 3; round++) {
        bench_ideal *c = bench_ideal_new();
        int64_t want_cached = 0, want_prompt = 0;
        for (int i = 0; i < N; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            lens[i] = 1 + (int32_t)((x >> 33) % L);
            int from = i > 0 ? (int)((x >> 20) % (uint64_t)i) : 0;
            int32_t keep = i > 0 ? (int32_t)((x >> 45) % (uint64_t)(L + 1)) : 0;
            for (int32_t k = 0; k < lens[i]; k++) {
                x = x * 6364136223846793005ull + 1442695040888963407ull;
                seqs[i][k] = (k < keep && k < lens[from]) ? seqs[from][k] : (int32_t)((x >> 40) % (3 + round));
            }
            int32_t best = 0;
            for (int j = 0; j < i; j++) {
                int32_t l = 0;
                while (l < lens[i] && l < lens[j] && seqs[i][l] == seqs[j][l]) l++;
                if (l > best) best = l;
            }
            int32_t cap = lens[i] - 1;
            if (best > cap) best = cap;
            want_cached += best;
            want_prompt += lens[i];
            CHECK_INT(bench_ideal_prompt(c, seqs[i], lens[i], cap), best);
        }
        CHECK_INT(c->prompt, want_prompt);
        CHECK_INT(c->cached, want_cached);
        bench_ideal_free(c);
    }
}

/* A run_batch of programs that fork: serial keeps one request in flight
 * (every batch the fake engine sees has one request) and still runs them
 * all; no_prefill sends no PREFILL. */
static void test_vm_knobs(void) {
    static const char *SRC = "fn one(s, i) {\n"
                             "  s += f\"item {i}:\" + gen(\"a\", max_tokens=2)\n"
                             "  let b = fork(s, 3)\n"
                             "  for k in range(3) { b[k] += f\" branch {k}\" + gen(\"x\", max_tokens=2) }\n"
                             "  join(b)\n"
                             "}\n"
                             "main { let args = []\n for i in range(4) { args += [{\"i\": i}] }\n"
                             "  let rs = run_batch(one, args, parallel=4)\n print(len(rs)) }\n";
    for (int serial = 0; serial < 2; serial++)
        for (int no_prefill = 0; no_prefill < 2; no_prefill++) {
            vm_session s;
            vm_session_opts so = vm_session_opts_default();
            so.fake = true;
            sgl_error err = {{0}};
            CHECK(vm_session_open(&s, &so, &err) == 0);
            vm_script sc;
            CHECK(vm_script_load(&s, "knobs.sgl", SRC, strlen(SRC), stderr, false, false, &sc, &err) == 0);
            FILE *devnull = fopen("/dev/null", "w");
            vm_config cfg = vm_session_config(&s);
            cfg.out = devnull;
            cfg.serial = serial;
            cfg.no_prefill = no_prefill;
            vm *v = vm_new(&cfg, &err);
            vm_inst *in = v ? vm_spawn(v, sc.mod, (uint32_t)sc.mod->entry, NULL, 0, false, &err) : NULL;
            CHECK(in);
            if (in) vm_run(v, &err);
            CHECK(in && vm_inst_done(in) && !vm_inst_failed(in));
            int gens = 0, prefills = 0, max_batch = 0;
            for (uint32_t k = 0; k < s.fake->n_log; k++) {
                gens += s.fake->log[k][0] == 'G';
                prefills += s.fake->log[k][0] == 'P';
            }
            for (uint32_t k = 0; k < s.fake->n_batches; k++)
                if (s.fake->batches[k] > max_batch) max_batch = s.fake->batches[k];
            CHECK_MSG(gens == 4 * 4, "serial %d no_prefill %d: %d gens", serial, no_prefill, gens);
            /* one per fork and the run_batch prefix hint ("item ") */
            CHECK_MSG(no_prefill ? prefills == 0 : prefills == 4 + 1, "serial %d no_prefill %d: %d prefills", serial,
                      no_prefill, prefills);
            if (serial) CHECK_MSG(max_batch == 1, "serial: a batch of %d requests", max_batch);
            else CHECK_MSG(max_batch >= 4, "parallel: largest batch %d", max_batch);
            vm_free(v);
            fclose(devnull);
            vm_script_free(&sc);
            vm_session_close(&s);
        }
}

static bench_opts opts_for(const char *model, int n, FILE *trace) {
    bench_opts o;
    memset(&o, 0, sizeof o);
    o.workloads_dir = SGL_SOURCE_ROOT "/bench/workloads";
    o.fake = model == NULL;
    o.model_path = model;
    o.n_threads = 1;
    o.n_programs = n;
    o.seed = 1;
    o.trace = trace;
    o.max_context = -1; /* the tiny model states 256; its RoPE goes further */
    return o;
}

static bool run(const bench_opts *o, const bench_workload *w, const char *mode, bench_result *r) {
    sgl_error err = {{0}};
    int rc = bench_run(o, w, bench_mode_find(mode), r, &err);
    CHECK_MSG(rc == 0, "%s %s: %s", w->name, mode, err.msg);
    CHECK_MSG(rc == 0 && r->ok, "%s %s failed: %s", w->name, mode, r->error);
    return rc == 0 && r->ok;
}

/* The requests a run must make: per program counts, plus at most one
 * run_batch prefix hint when prefills are sent at all. */
static void check_counts(const bench_workload *w, const char *mode, const bench_result *r, int n) {
    CHECK_MSG(r->programs == n, "%s %s: %d programs, want %d", w->name, mode, r->programs, n);
    CHECK_MSG(r->generate == (int64_t)n * w->gens, "%s %s: %lld gens, want %d", w->name, mode,
              (long long)r->generate, n * w->gens);
    CHECK_MSG(r->score == (int64_t)n * w->selects, "%s %s: %lld selects, want %d", w->name, mode,
              (long long)r->score, n * w->selects);
    if (!strcmp(mode, "baseline")) {
        CHECK_MSG(r->prefill == 0, "%s baseline sent %lld prefills", w->name, (long long)r->prefill);
    } else {
        CHECK_MSG(r->prefill >= (int64_t)n * w->prefills && r->prefill <= (int64_t)n * w->prefills + 1,
                  "%s %s: %lld prefills, want %d (+ a hint)", w->name, mode, (long long)r->prefill,
                  n * w->prefills);
    }
    CHECK(r->hit_rate >= 0 && r->hit_rate <= 1 && r->best_hit_rate >= 0 && r->best_hit_rate <= 1);
    CHECK(r->p50 > 0 && r->p50 <= r->p99 && r->p99 <= r->seconds + 1e-6);
    CHECK(r->programs_per_s > 0);
}

static void test_workloads_fake(void) {
    const int n = 3;
    for (int i = 0; i < bench_n_workloads; i++) {
        const bench_workload *w = &bench_workloads[i];
        const char *modes[] = {"full", "no-parallel", "baseline"};
        for (int k = 0; k < 3; k++) {
            bench_opts o = opts_for(NULL, n, NULL);
            bench_result r;
            if (run(&o, w, modes[k], &r)) check_counts(w, modes[k], &r, n);
            /* the fake engine's cache never evicts: the measured hit rate is
             * the best prefix sharing too (without the cap of one token) */
            if (r.ok && w->shared_prefix) CHECK_MSG(r.best_hit_rate > 0.3, "%s: best %.3f", w->name, r.best_hit_rate);
        }
    }
}

/* Tree of thought: 3 proposal gens at each of the 3 levels, per program. */
static void test_tree_of_thought_levels(void) {
    char *buf = NULL;
    size_t len = 0;
    FILE *trace = open_memstream(&buf, &len);
    bench_opts o = opts_for(NULL, 2, trace);
    bench_result r;
    run(&o, bench_workload_find("tree_of_thought"), "full", &r);
    fclose(trace);
    for (int level = 1; level <= 3; level++) {
        int count = 0;
        char want[64];
        snprintf(want, sizeof want, "Step %d, option ", level);
        for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n"))
            if (strstr(line, "gen 'step'") && strstr(line, want)) count++;
        /* strtok cut buf: rebuild the lines for the next level */
        for (size_t k = 0; k < len; k++)
            if (!buf[k]) buf[k] = '\n';
        CHECK_MSG(count == 2 * 3, "level %d: %d proposal gens, want 6", level, count);
    }
    free(buf);
}

static void test_workloads_tiny(void) {
    if (!tiny_model) {
        fprintf(stderr, "test_bench: no tiny model given, skipping the model runs\n");
        return;
    }
    for (int i = 0; i < bench_n_workloads; i++) {
        const bench_workload *w = &bench_workloads[i];
        const char *modes[] = {"full", "baseline"};
        for (int k = 0; k < 2; k++) {
            bench_opts o = opts_for(tiny_model, 2, NULL);
            bench_result r;
            if (!run(&o, w, modes[k], &r)) continue;
            check_counts(w, modes[k], &r, 2);
            /* the recorder tokenizes as the engine does */
            CHECK_MSG(r.best_prompt_tokens == r.prompt_tokens, "%s %s: recorder %lld prompt tokens, engine %lld",
                      w->name, modes[k], (long long)r.best_prompt_tokens, (long long)r.prompt_tokens);
            CHECK_MSG(r.hit_rate <= r.best_hit_rate + 1e-9, "%s %s: hit %.4f above the best %.4f", w->name,
                      modes[k], r.hit_rate, r.best_hit_rate);
            if (k == 1) CHECK_MSG(r.cached_tokens == 0, "%s baseline: %lld cached", w->name, (long long)r.cached_tokens);
            if (k == 0 && w->shared_prefix)
                CHECK_MSG(r.hit_rate > 0.2, "%s full: hit rate %.3f", w->name, r.hit_rate);
        }
    }
}

static void test_repeat(void) {
    const bench_workload *w = bench_workload_find("chat_short");
    const int n = 2;
    bench_opts o = opts_for(NULL, n, NULL);
    bench_result one, many;
    run(&o, w, "full", &one);
    CHECK_INT(one.runs, 1);
    CHECK(one.pps_min == one.programs_per_s && one.pps_max == one.programs_per_s);
    o.min_seconds = 1e9; /* never reached: stops at the cap */
    if (!run(&o, w, "full", &many)) return;
    CHECK_INT(many.runs, BENCH_MAX_RUNS);
    CHECK_INT(many.programs, n * BENCH_MAX_RUNS);
    CHECK_INT(many.generate, one.generate * BENCH_MAX_RUNS);
    CHECK_INT(many.score, one.score * BENCH_MAX_RUNS);
    CHECK_INT(many.prefill, one.prefill * BENCH_MAX_RUNS); /* a prefix hint per run */
    CHECK(many.p50 > 0 && many.p50 <= many.p99 && many.p99 <= many.seconds);
    /* a fresh engine each run: every run hits the cache as the first did */
    CHECK_INT(many.cached_tokens, one.cached_tokens * BENCH_MAX_RUNS);
    CHECK_INT(many.prompt_tokens, one.prompt_tokens * BENCH_MAX_RUNS);
    CHECK_NEAR(many.hit_rate, one.hit_rate, 1e-12);
    CHECK_NEAR(many.best_hit_rate, one.best_hit_rate, 1e-12);
    CHECK_NEAR(many.programs_per_s, many.programs / many.seconds, 1e-9);
    CHECK(many.pps_min > 0 && many.pps_min <= many.programs_per_s && many.programs_per_s <= many.pps_max);
    /* a run already long enough is not repeated */
    o.min_seconds = 1e-9;
    bench_result once;
    if (run(&o, w, "baseline", &once)) CHECK_INT(once.runs, 1);
    /* the table shows programs per run and the runs */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    bench_print_table(f, &many, 1);
    fclose(f);
    CHECK_MSG(buf && strstr(buf, "    2    5 "), "table: %s", buf ? buf : "");
    free(buf);
}

static void test_report(void) {
    bench_opts o = opts_for(NULL, 2, NULL);
    bench_result r[2];
    const bench_workload *w = bench_workload_find("chat_short");
    run(&o, w, "full", &r[0]);
    run(&o, w, "baseline", &r[1]);
    sgl_strbuf sb = {0};
    CHECK(bench_json(&sb, r, 2, &o) == 0);
    cJSON *doc = sb.data ? cJSON_Parse(sb.data) : NULL;
    cJSON *sp = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(doc, "speedup_of_full"), "chat_short"),
                                    "baseline");
    CHECK(cJSON_IsNumber(sp) && sp->valuedouble > 0);
    CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(doc, "results")) == 2);
    cJSON_Delete(doc);
    sgl_strbuf_free(&sb);
    CHECK(bench_svg(&sb, r, 2) == 0);
    CHECK(sb.data && !strncmp(sb.data, "<?xml", 5) && strstr(sb.data, "</svg>\n"));
    CHECK(sb.data && strstr(sb.data, "chat_short baseline: 1.00x"));
    sgl_strbuf_free(&sb);
    double xs[] = {5, 1, 4, 2, 3};
    CHECK_NEAR(bench_percentile(xs, 5, 50), 3, 0);
    CHECK_NEAR(bench_percentile(xs, 5, 99), 5, 0);
    double g[] = {2, 8};
    CHECK_NEAR(bench_geomean(g, 2), 4, 1e-12);
}

int main(int argc, char **argv) {
    tiny_model = argc > 1 ? argv[1] : NULL;
    TEST_RUN(test_ideal_hand_made);
    TEST_RUN(test_ideal_random);
    TEST_RUN(test_vm_knobs);
    TEST_RUN(test_workloads_fake);
    TEST_RUN(test_tree_of_thought_levels);
    TEST_RUN(test_workloads_tiny);
    TEST_RUN(test_repeat);
    TEST_RUN(test_report);
    return TEST_DONE();
}
