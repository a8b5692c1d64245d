/* suite: `sglc bench`'s experiment: the workloads (SGL programs under
 * bench/workloads/), the modes (full and its ablations, and a baseline),
 * running one workload in one mode, and the report (table, ratios, JSON,
 * SVG chart).
 *
 * A workload file defines `fn bench(n, seed, parallel)`, which builds n
 * programs' synthetic inputs from seed and returns run_batch(program, ...,
 * parallel=parallel). The runner loads it, opens a fresh engine (empty
 * cache) wrapped in a recorder (recorder.h), spawns bench(...) and runs the
 * VM to the end, timing the whole run and each program (run_batch instance).
 */
#ifndef SGL_BENCH_SUITE_H
#define SGL_BENCH_SUITE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "runtime/engine.h"
#include "util/util.h"

typedef struct bench_workload {
    const char *name;     /* also the file: WORKLOADS_DIR/NAME.sgl */
    const char *what;     /* one line */
    int n_full, n_quick;  /* programs per run */
    int parallel;         /* run_batch parallel in the frontend-parallel modes */
    bool shared_prefix;   /* counts in the shared-prefix geometric mean */
    /* Requests one program makes (checked by the tests on the fake engine). */
    int gens, selects, prefills;
} bench_workload;

typedef struct bench_mode {
    const char *name;
    const char *what;
    bool cache_off;
    sgl_sched_policy policy;
    bool serial;          /* one request in flight, one program at a time */
    bool no_prefill;      /* never send PREFILL */
    bool no_hints;        /* vm_config.prefix_hints off */
    int opt_level;        /* -1: the compiler's default */
    bool remote;          /* can run against a remote server (sets nothing in its engine
                             but the cache flush before the run) */
} bench_mode;

extern const bench_workload bench_workloads[];
extern const int bench_n_workloads;
extern const bench_mode bench_modes[];
extern const int bench_n_modes;

/* Lookups by name; NULL when unknown. */
const bench_workload *bench_workload_find(const char *name);
const bench_mode *bench_mode_find(const char *name);

typedef struct bench_opts {
    const char *workloads_dir; /* where NAME.sgl are */
    const char *model_path;    /* GGUF; NULL with fake */
    bool fake;                 /* the deterministic fake engine */
    int n_threads;             /* 0: all cores */
    int32_t max_context;       /* 0: the model's; < 0: no limit (the tests' tiny model) */
    bool quick;                /* n_quick programs instead of n_full */
    double min_seconds;        /* > 0: a run shorter than this is repeated (fresh engine each time)
                                  until the runs add up to it, at most BENCH_MAX_RUNS runs */
    int n_programs;            /* > 0: overrides n_full/n_quick */
    int64_t seed;
    FILE *trace;               /* every engine request and result (vm_link_set_trace), or NULL */
    /* Remote engines (runtime/remote/remote.h) instead of the local one, or
     * NULL. model_path is then optional: its tokenizer counts the best hit
     * rate in tokens and its chat template builds the prompts (without it,
     * chatml and bytes). The server's cache is flushed before each run when
     * the backend can (sglang:); else modes after the first start warm. */
    const struct sgl_remote_config *remote;
    const char *backend;       /* how the report names the remote endpoints (or NULL) */
    const char *chat_template; /* remote without model_path: template family (NULL: chatml) */
} bench_opts;

/* The most runs bench_run makes of one workload in one mode. */
#define BENCH_MAX_RUNS 5

typedef struct bench_result {
    const bench_workload *w;
    const bench_mode *m;
    bool ok;
    bool skipped;              /* not run: the backend cannot (error says why); not a failure */
    char error[512];
    int runs;                  /* runs made (bench_opts.min_seconds); the figures below are
                                  over all of them together */
    int programs, failed;      /* programs run (all runs) / of which failed */
    double seconds;            /* wall time of the runs (model loads excluded) */
    double pps_min, pps_max;   /* programs/s of the slowest and the fastest run */
    double programs_per_s, tokens_per_s;
    double p50, p99;           /* per-program latency, seconds */
    int64_t generate, score, prefill; /* requests sent */
    int64_t prompt_tokens, cached_tokens, completion_tokens;
    double hit_rate, best_hit_rate;   /* measured; perfect-cache bound */
    int64_t best_prompt_tokens;       /* prompt tokens as the recorder counted them */
    int64_t best_cached_tokens;       /* of them, what a perfect infinite cache serves */
    int64_t forward_calls, forward_tokens; /* the engine's model_forward calls and the
                                              tokens they ran (0 on remote engines) */
} bench_result;

/* Runs workload w in mode m (once, or again while o->min_seconds asks).
 * Returns 0 (res filled; res->ok false with
 * res->error when the workload failed to load or a program failed, and
 * res->skipped too when a remote backend cannot run the mode or the
 * workload), or -1 with err set when the engine could not start. */
int bench_run(const bench_opts *o, const bench_workload *w, const bench_mode *m, bench_result *res,
              sgl_error *err);

/* Report over results[0..n) (any workloads x modes, in run order). */
void bench_print_table(FILE *out, const bench_result *r, int n);
/* Ratio table: full over each other mode per workload, and geometric
 * means. Prints nothing without a full run. */
void bench_print_ratios(FILE *out, const bench_result *r, int n);
/* JSON document of all results and ratios. Returns 0 or -1 (OOM). */
int bench_json(sgl_strbuf *sb, const bench_result *r, int n, const bench_opts *o);
/* Grouped bar chart (workloads x modes, programs/s over baseline, or over
 * the first mode run when there is no baseline) as an SVG document. */
int bench_svg(sgl_strbuf *sb, const bench_result *r, int n);

/* Percentile p (0..100) of x[0..n) (sorted in place); 0 when n is 0. */
double bench_percentile(double *x, int n, double p);
/* Geometric mean of x[0..n) (positive values only); 0 when none. */
double bench_geomean(const double *x, int n);

#endif
