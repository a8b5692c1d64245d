/* cmd_bench: `sglc bench [WORKLOAD...]`: runs the benchmark workloads
 * (bench/workloads/NAME.sgl, the SGLang paper's LM-program workloads) in each
 * mode (full, its ablations, a baseline) on the local engine or, with
 * --backend, on remote servers (cli/backend.c) and prints one
 * table (programs/s, output tokens/s, latency p50/p99, cache hit rate and
 * the best hit rate the request stream allows) and the speedup of full over
 * every other mode with geometric means; --json and --plot write the same
 * as a JSON document and an SVG bar chart. The library is cli/bench/.
 * Exit status: 0 when every run succeeded, 1 when one failed, 2 on usage or
 * setup errors. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/bench/suite.h"
#include "cli/cli.h"
#include "lib/internal.h"

enum { O_MODES = 1, O_QUICK, O_PROGRAMS, O_MODEL, O_FAKE, O_THREADS, O_SEED, O_JSON, O_PLOT, O_WORKLOADS, O_LIST, O_MIN_TIME };

static const cli_option bench_options[] = {
    {O_MODES, "--modes", NULL, "M,M,...", "modes to run (default: all, in the order --list shows)"},
    {O_QUICK, "--quick", NULL, NULL, "1 or 2 programs per workload instead of 3 to 16"},
    {O_PROGRAMS, "--programs", NULL, "N", "programs per workload (overrides the default sizes)"},
    {O_MIN_TIME, "--min-time", NULL, "S", "run a workload again (fresh engine) until its runs in a mode add up\n"
                                         "to S seconds, at most 5 runs; the figures are over all runs\n"
                                         "(default 3; 0 with --quick or --fake: one run)"},
    {O_MODEL, "--model", NULL, "PATH", CLI_MODEL_HELP},
    {O_FAKE, "--fake", NULL, NULL, "the deterministic fake engine (no model; for testing)"},
    {O_THREADS, "--threads", NULL, "N", "engine threads (default: all cores)"},
    {O_SEED, "--seed", NULL, "N", "seed of the synthetic inputs (default 1)"},
    {O_JSON, "--json", NULL, "FILE", "write every figure as JSON"},
    {O_PLOT, "--plot", NULL, "FILE.svg", "write a bar chart: workloads x modes, relative to baseline"},
    {O_WORKLOADS, "--workloads", NULL, "DIR", "where the workload programs are (default: bench/workloads)"},
    {O_LIST, "--list", NULL, NULL, "list the workloads and modes, then exit"},
    {0},
};

static const cli_option *const bench_tables[] = {bench_options, cli_device_options, cli_backend_options, NULL};

static const cli_spec bench_spec = {
    .name = "bench",
    .synopsis = "sglc bench [options] [WORKLOAD...]",
    .about = "Runs each workload (default: all) in each mode and prints programs/s, output\n"
             "tokens/s, latency p50/p99, the cache hit rate, the best hit rate possible for the\n"
             "run's request stream, and the speedup of full over every other mode.\n",
    .tables = bench_tables,
    .epilog = "With --backend the workloads run against remote servers instead of the local\n"
              "engine: the modes that set only the client (full, no-parallel, no-hint, \"-O0\",\n"
              "baseline) run, the others are skipped; the server's cache is flushed before each\n"
              "run when it can be (sglang:), and stays on in baseline. --model is optional\n"
              "there: its tokenizer and chat template (default: chatml, bytes for the best hit\n"
              "rate).\n",
};

static void list(FILE *out) {
    fprintf(out, "workloads (programs: full / --quick):\n");
    for (int i = 0; i < bench_n_workloads; i++)
        fprintf(out, "  %-20s %3d / %-3d %s\n", bench_workloads[i].name, bench_workloads[i].n_full,
                bench_workloads[i].n_quick, bench_workloads[i].what);
    fprintf(out, "modes:\n");
    for (int i = 0; i < bench_n_modes; i++) fprintf(out, "  %-13s %s\n", bench_modes[i].name, bench_modes[i].what);
}

static bool dir_has(const char *dir) {
    char p[2 * PATH_MAX + 200];
    snprintf(p, sizeof p, "%s/mmlu.sgl", dir);
    return access(p, R_OK) == 0;
}

/* The workloads folder: sglc_data_path's (the install prefix's
 * share/sglc/bench/workloads, or the source tree's for the uninstalled
 * binary), then ./bench/workloads. Returns a malloc'd path or NULL. */
static char *find_workloads(void) {
    char *p = sglc_data_path("bench/workloads/mmlu.sgl");
    if (p) {
        *strrchr(p, '/') = 0;
        return p;
    }
    if (dir_has("bench/workloads")) return sgl_strdup("bench/workloads");
    return NULL;
}

static int write_file(const char *path, const sgl_strbuf *sb) {
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "sglc bench: cannot write %s: ", path);
        perror(NULL);
        return -1;
    }
    size_t len = sb->data ? sb->len : 0;
    bool ok = fwrite(sb->data ? sb->data : "", 1, len, f) == len;
    ok &= fclose(f) == 0;
    if (!ok) fprintf(stderr, "sglc bench: error writing %s\n", path);
    return ok ? 0 : -1;
}

int cmd_bench(int argc, char **argv) {
    const char *v, *model = NULL, *json_path = NULL, *plot_path = NULL, *modes_arg = NULL, *wdir = NULL;
    bench_opts o = {.seed = 1};
    double min_time = -1; /* --min-time; < 0: the default */
    const bench_workload *ws[64];
    int nw = 0;
    const bench_mode *ms[64];
    int nm = 0;
    int status = 2;
    char *model_path = NULL, *found_dir = NULL, *modes_copy = NULL;
    bench_result *res = NULL;
    cli_backend bk;
    cli_backend_init(&bk);
    cli_args a;
    cli_args_init(&a, &bench_spec, argc, argv);
    for (int id; (id = cli_next(&a)) != CLI_DONE;) {
        v = a.value;
        switch (id) {
        case O_LIST: list(stdout); return 0;
        case O_QUICK: o.quick = true; break;
        case O_FAKE: o.fake = true; break;
        case O_MODES: modes_arg = v; break;
        case O_MODEL: model = v; break;
        case O_THREADS: o.n_threads = (int)cli_parse_long("bench", "--threads", v, 0, 1024); break;
        case O_PROGRAMS: o.n_programs = (int)cli_parse_long("bench", "--programs", v, 1, 100000); break;
        case O_SEED: o.seed = cli_parse_long("bench", "--seed", v, 0, 1L << 31); break;
        case O_MIN_TIME: min_time = cli_parse_double("bench", "--min-time", v, 0, 3600); break;
        case O_JSON: json_path = v; break;
        case O_PLOT: plot_path = v; break;
        case O_WORKLOADS: wdir = v; break;
        case CLI_OPERAND: {
            const bench_workload *w = bench_workload_find(v);
            if (!w) cli_usage_error(&a, "unknown workload '%s' (see sglc bench --list)", v);
            if (nw < (int)SGL_ARRAY_LEN(ws)) ws[nw++] = w;
            break;
        }
        default:
            if (!cli_device_set("bench", id, v)) cli_backend_set("bench", id, v, &bk);
        }
    }
    if (!nw)
        for (int i = 0; i < bench_n_workloads; i++) ws[nw++] = &bench_workloads[i];
    o.min_seconds = min_time >= 0 ? min_time : o.quick || o.fake ? 0 : 3;
    if (modes_arg) {
        modes_copy = sgl_strdup(modes_arg);
        for (char *save = NULL, *t = strtok_r(modes_copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            const bench_mode *m = bench_mode_find(t);
            if (!m) {
                fprintf(stderr, "sglc bench: unknown mode '%s' (modes:", t);
                for (int k = 0; k < bench_n_modes; k++) fprintf(stderr, " %s", bench_modes[k].name);
                fprintf(stderr, ")\n");
                goto done;
            }
            if (nm < (int)SGL_ARRAY_LEN(ms)) ms[nm++] = m;
        }
        if (!nm) {
            fprintf(stderr, "sglc bench: --modes names no mode\n");
            goto done;
        }
    }
    vm_session_opts so = vm_session_opts_default();
    bool remote = !o.fake && cli_backend_apply("bench", &bk, &so);
    if (remote) {
        o.remote = so.remote;
        o.backend = bk.specs[0];
        o.chat_template = so.chat_template;
    }
    if (!modes_arg)
        for (int i = 0; i < bench_n_modes; i++)
            if (!remote || bench_modes[i].remote) ms[nm++] = &bench_modes[i];
    if (!wdir) {
        found_dir = find_workloads();
        if (!found_dir) {
            fprintf(stderr, "sglc bench: error: cannot find the workload programs (bench/workloads); "
                            "point at them with --workloads DIR\n");
            goto done;
        }
        wdir = found_dir;
    }
    o.workloads_dir = wdir;
    if (!o.fake && (!remote || model)) {
        model_path = cli_model_path(model);
        if (!model_path) goto done;
        o.model_path = model_path;
    }
    res = calloc((size_t)(nw * nm), sizeof *res);
    if (!res) goto done;
    int n = 0, n_failed = 0;
    for (int i = 0; i < nw; i++)
        for (int j = 0; j < nm; j++) {
            sgl_error err = {{0}};
            bench_result *r = &res[n];
            if (bench_run(&o, ws[i], ms[j], r, &err) < 0) {
                fprintf(stderr, "sglc bench: %s\n", err.msg);
                goto done;
            }
            n++;
            if (!r->ok && !r->skipped) n_failed++;
            fprintf(stderr, "[%d/%d] %-20s %-12s %7.2f s  %s", n, nw * nm, ws[i]->name, ms[j]->name,
                    r->seconds, r->ok ? "ok" : r->skipped ? "skipped" : r->error);
            if (r->runs > 1) fprintf(stderr, " (%d runs)", r->runs);
            fputc('\n', stderr);
        }
    char threads[32] = "all cores";
    if (o.n_threads) snprintf(threads, sizeof threads, "%d thread%s", o.n_threads, o.n_threads == 1 ? "" : "s");
    if (remote)
        printf("sglc bench: backend %s%s%s%s%s, seed %lld\n", o.backend, bk.n_specs > 1 ? " (and more)" : "",
               o.model_path ? ", tokenizer of " : "", o.model_path ? o.model_path : "", o.quick ? ", quick" : "",
               (long long)o.seed);
    else
        printf("sglc bench: %s, %s%s, seed %lld\n", o.fake ? "fake engine" : o.model_path, threads,
               o.quick ? ", quick" : "", (long long)o.seed);
    bench_print_table(stdout, res, n);
    bench_print_ratios(stdout, res, n);
    fflush(stdout);
    status = n_failed ? 1 : 0;
    if (json_path) {
        sgl_strbuf sb = {0};
        bench_json(&sb, res, n, &o);
        if (write_file(json_path, &sb) < 0) status = 2;
        sgl_strbuf_free(&sb);
    }
    if (plot_path) {
        sgl_strbuf sb = {0};
        bench_svg(&sb, res, n);
        if (write_file(plot_path, &sb) < 0) status = 2;
        sgl_strbuf_free(&sb);
    }
done:
    cli_backend_free(&bk);
    free(res);
    free(model_path);
    free(found_dir);
    free(modes_copy);
    return status;
}
