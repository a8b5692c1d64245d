/* suite: the workload and mode tables and the runner of `sglc bench` (see
 * suite.h); the report is in report.c. */
#include "cli/bench/suite.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli/bench/recorder.h"
#include "vm/caps.h"
#include "vm/session.h"

/* Sizes: each workload's n_full is chosen so that its `baseline` run takes
 * about the same time (~10 s with the default model on 2 threads), so every
 * workload weighs alike in the run time and none rests on a couple of
 * programs: cheap programs (short chats, agent steps) run more instances
 * than long ones (ReAct, the LLM judge). MMLU is the exception: its sharing
 * grows with the questions asked after one subject's prefix, so it runs one
 * subject's 16 (~20 s). The full suite (every workload in every mode) then
 * takes about 8 minutes on two idle cores; --quick runs 1 or 2 programs
 * per workload (under 2 minutes). The no-cache and baseline runs dominate. */
const bench_workload bench_workloads[] = {
    /* name, what, n_full, n_quick, parallel, shared_prefix, gens, selects, prefills */
    {"mmlu", "5-shot multiple choice, ~1,000-token prefix per subject (16 questions each), 1-token answer", 16, 2, 64,
     true, 1, 0, 0},
    {"hellaswag", "20-shot completion, 4-way select", 5, 2, 64, true, 0, 1, 0},
    {"react", "ReAct traces: 4 thought/action/observation steps with a tool", 3, 1, 64, true, 8, 0, 0},
    {"agents", "generative-agents step: importance, react?, plan", 10, 2, 64, true, 2, 1, 0},
    {"tree_of_thought", "tree of thought: 3 levels x 3 branches, each judged", 4, 1, 64, true, 10, 9, 3},
    {"skeleton_of_thought", "skeleton, then 5 points expanded in parallel (fork 5), the method's long instructions", 6,
     1, 64, true, 6, 0, 1},
    {"llm_judge", "branch-solve-merge judge of a ~300-token answer: 6 criteria in parallel (fork 6), merge", 3, 1, 64,
     true, 7, 0, 1},
    {"chat_short", "multi-turn chat: 4 turns, short answers", 12, 2, 64, true, 4, 0, 0},
    {"chat_long", "multi-turn chat: 4 turns, long messages and answers", 5, 1, 64, true, 4, 0, 0},
    {"json_decoding", "JSON record from a ~300-token page: 5 field gens, each regex-constrained (jump-forward)", 5, 1, 64, true, 5, 0, 0},
};
const int bench_n_workloads = (int)SGL_ARRAY_LEN(bench_workloads);

const bench_mode bench_modes[] = {
    /* name, what, cache_off, policy, serial, no_prefill, no_hints, opt_level, remote */
    {"full", "everything on", false, SGL_SCHED_LPM, false, false, false, -1, true},
    {"no-cache", "engine without its radix cache", true, SGL_SCHED_LPM, false, false, false, -1, false},
    {"fcfs", "first-come first-served instead of longest-prefix-match order", false, SGL_SCHED_FCFS, false,
     false, false, -1, false},
    {"random-order", "waiting queue in random order", false, SGL_SCHED_RANDOM, false, false, false, -1, false},
    {"no-parallel", "programs and fork branches one request at a time", false, SGL_SCHED_LPM, true, false, false,
     -1, true},
    {"no-hint", "no prefix hints: fork branches do not wait for the shared prefix", false, SGL_SCHED_LPM, false,
     false, true, -1, true},
    {"-O0", "no compiler passes", false, SGL_SCHED_LPM, false, false, false, 0, true},
    {"baseline", "every gen/select an independent request, in program order, cache off (remote: the server's cache stays on)",
     true, SGL_SCHED_LPM, true, true, true, -1, true},
};
const int bench_n_modes = (int)SGL_ARRAY_LEN(bench_modes);

const bench_workload *bench_workload_find(const char *name) {
    for (int i = 0; i < bench_n_workloads; i++)
        if (!strcmp(bench_workloads[i].name, name)) return &bench_workloads[i];
    return NULL;
}

const bench_mode *bench_mode_find(const char *name) {
    for (int i = 0; i < bench_n_modes; i++)
        if (!strcmp(bench_modes[i].name, name)) return &bench_modes[i];
    return NULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double bench_percentile(double *x, int n, double p) {
    if (n <= 0) return 0;
    qsort(x, (size_t)n, sizeof *x, cmp_double);
    /* nearest rank */
    int k = (int)(p / 100.0 * n + 0.999999) - 1;
    if (k < 0) k = 0;
    if (k >= n) k = n - 1;
    return x[k];
}

double bench_geomean(const double *x, int n) {
    double s = 0;
    int k = 0;
    for (int i = 0; i < n; i++)
        if (x[i] > 0) {
            s += log(x[i]);
            k++;
        }
    return k ? exp(s / k) : 0;
}

/* Copies msg (truncated) into res->error. */
static void set_error(bench_result *res, const char *msg) {
    size_t n = strlen(msg);
    if (n >= sizeof res->error) n = sizeof res->error - 1;
    memcpy(res->error, msg, n);
    res->error[n] = 0;
}

typedef struct lat {
    double *x;
    int n, cap, failed;
    char *first_error;
} lat;

static void on_program_done(void *ctx, double seconds, const char *error) {
    lat *l = ctx;
    if (error && !l->failed++) l->first_error = sgl_strdup(error);
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        double *x = realloc(l->x, sizeof *x * (size_t)cap);
        if (!x) return;
        l->x = x;
        l->cap = cap;
    }
    l->x[l->n++] = seconds;
}

/* res's rates from its counts: hit rates, programs/s, tokens/s. */
static void set_rates(bench_result *res) {
    res->hit_rate = res->prompt_tokens ? (double)res->cached_tokens / (double)res->prompt_tokens : 0;
    res->best_hit_rate =
        res->best_prompt_tokens ? (double)res->best_cached_tokens / (double)res->best_prompt_tokens : 0;
    res->programs_per_s = res->seconds > 0 ? res->programs / res->seconds : 0;
    res->tokens_per_s = res->seconds > 0 ? (double)res->completion_tokens / res->seconds : 0;
}

/* One run of w in m on a fresh engine: res filled as bench_run says, except
 * p50 / p99 and the run counts; each program's latency is appended to *l
 * (shared by the runs of one bench_run). Returns 0 or -1 (engine failed to
 * start, err set). */
static int run_once(const bench_opts *o, const bench_workload *w, const bench_mode *m, bench_result *res,
                    lat *l, sgl_error *err) {
    memset(res, 0, sizeof *res);
    res->w = w;
    res->m = m;
    if (o->remote && !m->remote) {
        res->skipped = true;
        set_error(res, "sets the local engine (cache, order), not a remote server's");
        return 0;
    }
    int n = o->n_programs > 0 ? o->n_programs : o->quick ? w->n_quick : w->n_full;
    vm_session_opts so = vm_session_opts_default();
    so.fake = o->fake;
    so.model_path = o->model_path;
    so.n_threads = o->n_threads;
    so.max_context = o->max_context;
    so.cache_off = m->cache_off;
    so.policy = m->policy;
    so.opt_level = m->opt_level;
    so.remote = o->remote;
    so.chat_template = o->chat_template;
    vm_session s;
    memset(&s, 0, sizeof s);
    s.opts = so;
    vm_script sc;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.sgl", o->workloads_dir, w->name);
    char *dbuf = NULL;
    size_t dlen = 0;
    FILE *diag = open_memstream(&dbuf, &dlen);
    int rc = vm_script_load(&s, path, NULL, 0, diag, false, false, &sc, err);
    if (diag) fclose(diag);
    if (rc < 0) {
        set_error(res, dlen ? dbuf : err->msg);
        free(dbuf);
        vm_script_free(&sc);
        return 0;
    }
    free(dbuf);
    int fi = sgl_module_find_fn(sc.mod, "bench");
    if (fi < 0 || sc.mod->fns[fi].n_params != 3) {
        set_error(res, "the workload has no function bench(n, seed, parallel)");
        vm_script_free(&sc);
        return 0;
    }
    if (vm_session_open(&s, &so, err) < 0) {
        vm_script_free(&sc);
        return -1;
    }
    if (o->remote) {
        /* What the backend cannot carry (constraints, scores) skips the
         * workload; a cold cache when the server can flush it. */
        sgl_engine_caps caps;
        sgl_engine_caps_get(s.engine, &caps);
        char *cbuf = NULL;
        size_t clen = 0;
        FILE *mem = open_memstream(&cbuf, &clen);
        int bad = mem ? vm_caps_check_module(sc.mod, &caps, s.backend, mem) : 0;
        if (mem) fclose(mem);
        if (bad > 0) {
            char *nl = cbuf ? strchr(cbuf, '\n') : NULL;
            if (nl) *nl = 0;
            res->skipped = true;
            set_error(res, cbuf ? cbuf : "the backend cannot run this workload");
        }
        free(cbuf);
        sgl_error ferr = {{0}};
        if (!bad && sgl_engine_flush_cache(s.engine, &ferr) == -1) {
            set_error(res, ferr.msg);
            bad = 1;
        }
        if (bad) {
            vm_session_close(&s);
            vm_script_free(&sc);
            return 0;
        }
    }
    const sgl_tokenizer *tok = s.tok ? s.tok : s.own_tok;
    bench_recorder *rec = NULL;
    s.engine = bench_recorder_new(s.engine, s.fake ? NULL : tok, &rec);
    if (!s.engine) {
        vm_session_close(&s);
        vm_script_free(&sc);
        return sgl_error_set(err, "out of memory");
    }
    FILE *devnull = fopen("/dev/null", "w");
    const int n0 = l->n, failed0 = l->failed; /* this run's programs are those past these */
    vm_config cfg = vm_session_config(&s);
    cfg.out = devnull;
    cfg.prefix_hints = !m->no_hints;
    cfg.serial = m->serial;
    cfg.no_prefill = m->no_prefill;
    cfg.batch_done = on_program_done;
    cfg.batch_done_ctx = l;
    cfg.trace = o->trace;
    vm *v = vm_new(&cfg, err);
    if (!v) {
        if (devnull) fclose(devnull);
        vm_session_close(&s);
        vm_script_free(&sc);
        return -1;
    }
    vm_value args[3] = {vm_int(n), vm_int(o->seed), vm_int(m->serial ? 1 : w->parallel)};
    double t0 = sgl_now();
    vm_inst *in = vm_spawn(v, sc.mod, (uint32_t)fi, args, 3, false, err);
    if (in) vm_run(v, err);
    res->seconds = sgl_now() - t0;
    bench_rec_stats st;
    bench_recorder_stats(rec, &st);
    sgl_engine_metrics em;
    sgl_engine_metrics_get(s.engine, &em);
    res->forward_calls = em.forward_calls;
    res->forward_tokens = em.forward_tokens;
    res->programs = l->n - n0;
    res->failed = l->failed - failed0;
    res->generate = st.generate;
    res->score = st.score;
    res->prefill = st.prefill;
    res->prompt_tokens = st.prompt_tokens;
    res->cached_tokens = st.cached_tokens;
    res->completion_tokens = st.completion_tokens;
    res->best_prompt_tokens = st.ideal_prompt;
    res->best_cached_tokens = st.ideal_cached;
    set_rates(res);
    if (!in) {
        set_error(res, err->msg);
    } else if (vm_inst_failed(in)) {
        set_error(res, vm_inst_error(in));
    } else if (res->failed || res->programs != n) {
        char msg[sizeof res->error];
        snprintf(msg, sizeof msg, "%d of %d programs failed; the first: %.400s", res->failed + (n - res->programs),
                 n, l->first_error ? l->first_error : "(did not finish)");
        set_error(res, msg);
    } else {
        res->ok = true;
    }
    vm_free(v);
    if (devnull) fclose(devnull);
    vm_session_close(&s);
    vm_script_free(&sc);
    return 0;
}

/* Adds run b's counts to a (runs of one workload in one mode) and
 * recomputes the rates over all of them. */
static void merge_run(bench_result *a, const bench_result *b) {
    a->runs++;
    a->programs += b->programs;
    a->failed += b->failed;
    a->seconds += b->seconds;
    a->generate += b->generate;
    a->score += b->score;
    a->prefill += b->prefill;
    a->prompt_tokens += b->prompt_tokens;
    a->cached_tokens += b->cached_tokens;
    a->completion_tokens += b->completion_tokens;
    a->best_prompt_tokens += b->best_prompt_tokens;
    a->best_cached_tokens += b->best_cached_tokens;
    a->forward_calls += b->forward_calls;
    a->forward_tokens += b->forward_tokens;
    set_rates(a);
    a->pps_min = SGL_MIN(a->pps_min, b->programs_per_s);
    a->pps_max = SGL_MAX(a->pps_max, b->programs_per_s);
}

int bench_run(const bench_opts *o, const bench_workload *w, const bench_mode *m, bench_result *res,
              sgl_error *err) {
    lat l = {0};
    int rc = run_once(o, w, m, res, &l, err);
    res->runs = 1;
    res->pps_min = res->pps_max = res->programs_per_s;
    /* Short runs again, each on a fresh engine, until the runs add up to
     * min_seconds: one run of a second swings with whatever else the
     * machine does; the figures are over all runs together. */
    while (rc == 0 && res->ok && o->min_seconds > 0 && res->seconds < o->min_seconds &&
           res->runs < BENCH_MAX_RUNS) {
        bench_result more;
        rc = run_once(o, w, m, &more, &l, err);
        if (rc < 0) break;
        if (!more.ok) { /* a later run failed: the whole measurement did */
            res->ok = false;
            res->skipped = more.skipped;
            memcpy(res->error, more.error, sizeof res->error);
            break;
        }
        merge_run(res, &more);
    }
    res->p50 = bench_percentile(l.x, l.n, 50);
    res->p99 = bench_percentile(l.x, l.n, 99);
    free(l.x);
    free(l.first_error);
    return rc;
}
