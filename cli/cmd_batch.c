/* cmd_batch: `sglc batch DIR`: run the main block of every DIR/NAME.sgl on one
 * VM and one engine (so the programs batch together and share the radix
 * cache), at most --parallel at a time, and write one JSON line per script
 * (in file-name order): file, status ("ok", "error", "compile_error"),
 * result, variables, output, error, seconds, requests and token counts.
 * A failing script does not stop the others. Exit status: 0 when every
 * script succeeded, 1 when any failed, 2 on usage or setup errors. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/progress.h"
#include "vm/caps.h"
#include "vm/session.h"

enum {
    O_PARALLEL = 1, O_OUT, O_MODEL, O_FAKE, O_ALLOW_IO, O_OPT, O_TEMPERATURE, O_MAX_TOKENS, O_SEED,
    O_THREADS, O_NO_CACHE, O_MAX_STEPS, O_PROGRESS, O_STATS,
};

static const cli_option batch_options[] = {
    {O_PARALLEL, "--parallel", NULL, "N", "scripts in flight at once (default 16)"},
    {O_OUT, "--out", NULL, "FILE.jsonl", "write the lines there instead of stdout"},
    {O_MODEL, "--model", NULL, "PATH", CLI_MODEL_HELP},
    {O_FAKE, "--fake", NULL, NULL, "use the deterministic fake engine (no model)"},
    {O_ALLOW_IO, "--allow-io", NULL, NULL, "permit the file/http/shell builtins"},
    {O_OPT, "-O", NULL, "LEVEL", "compiler optimisation level (0, 1, 2)"},
    {O_TEMPERATURE, "--temperature", NULL, "T", "run-level default temperature for gen"},
    {O_MAX_TOKENS, "--max-tokens", NULL, "N", "run-level default max_tokens for gen"},
    {O_SEED, "--seed", NULL, "N", "run-level seed base"},
    {O_THREADS, "--threads", NULL, "N", "engine threads (default: all cores)"},
    {O_NO_CACHE, "--no-cache", NULL, NULL, "run the engine without its radix cache"},
    {O_MAX_STEPS, "--max-steps", NULL, "N",
     "fail a script after N VM instructions (default 100000000;\n"
     "0: no limit), so a runaway loop cannot stall the batch"},
    {O_PROGRESS, "--progress", NULL, NULL,
     "draw the status line (done, failed, running, tok/s, cache,\n"
     "ETA) even when stderr is not a terminal"},
    {O_STATS, "--stats", NULL, NULL,
     "with backends: one line per endpoint (requests, cached\n"
     "tokens and hit rate where the server reports them)"},
    {0},
};

static const cli_option *const batch_tables[] = {batch_options, cli_device_options, cli_limit_options, cli_backend_options, NULL};

static const cli_spec batch_spec = {
    .name = "batch",
    .synopsis = "sglc batch [options] DIR",
    .about = "Runs the main block of every .sgl file in DIR on one shared engine and\n"
             "writes one JSON line per script, every line with the same keys: file,\n"
             "status (ok, error, compile_error), result, variables, output, error (null\n"
             "or {message, file, line, col, kind}), seconds, requests, prompt_tokens,\n"
             "completion_tokens, cached_tokens.\n",
    .tables = batch_tables,
};

typedef struct job {
    char *path;
    vm_script sc;
    char *compile_error; /* diagnostics text when it did not compile */
    vm_inst *in;
    FILE *out;
    char *outbuf;
    size_t outlen;
    char *line;          /* the JSON line once done */
} job;

typedef struct batch {
    job *jobs;
    size_t n, next, running, parallel;
    vm *v;
    long spawning;       /* job being spawned (its instance may finish inside vm_spawn) */
    cli_progress *progress; /* the status line, or NULL */
} batch;

/* Scripts done so far (compile errors included) and how many failed. */
static cli_progress_counts batch_counts(const batch *b) {
    cli_progress_counts c = {(int64_t)b->n, 0, 0, (int64_t)b->running};
    for (size_t i = 0; i < b->n; i++) {
        const job *j = &b->jobs[i];
        if (!j->line) continue;
        c.done++;
        c.failed += !j->in || vm_inst_failed(j->in);
    }
    return c;
}

static int batch_poll(void *ctx) {
    batch *b = ctx;
    cli_progress_counts c = batch_counts(b);
    cli_progress_update(b->progress, &c, false);
    return 0;
}

/* The job's JSON line: "file" first, then the result document's keys. */
static char *job_line(const job *j, cJSON *doc) {
    cJSON *row = cJSON_CreateObject();
    cJSON_AddStringToObject(row, "file", j->path);
    while (doc->child) {
        cJSON *item = cJSON_DetachItemViaPointer(doc, doc->child);
        cJSON_AddItemToObject(row, item->string, item);
    }
    cJSON_Delete(doc);
    char *text = cJSON_PrintUnformatted(row);
    cJSON_Delete(row);
    return text;
}

static void finish_job(batch *b, job *j, vm_inst *in, const char *spawn_error) {
    if (j->line) return;
    if (j->out) {
        fclose(j->out);
        j->out = NULL;
    }
    if (in) j->line = job_line(j, cli_result_json(in, j->outbuf));
    else j->line = job_line(j, cli_result_failed("error", cli_error_object("runtime", spawn_error, j->path, 0, 0)));
    b->running--;
}

static void spawn_more(batch *b);

static void on_done(void *ctx, vm_inst *in) {
    batch *b = ctx;
    for (size_t i = 0; i < b->n; i++) {
        if (b->jobs[i].in == in || (b->spawning == (long)i && !b->jobs[i].in)) {
            finish_job(b, &b->jobs[i], in, NULL);
            break;
        }
    }
    spawn_more(b);
}

static void spawn_more(batch *b) {
    while (b->running < b->parallel && b->next < b->n) {
        size_t i = b->next++;
        job *j = &b->jobs[i];
        if (!j->sc.mod) continue; /* compile errors are reported as they are */
        if (j->sc.mod->entry < 0) {
            b->running++;
            finish_job(b, j, NULL, "no main block");
            continue;
        }
        j->out = open_memstream(&j->outbuf, &j->outlen);
        b->running++;
        b->spawning = (long)i;
        sgl_error err = {{0}};
        vm_inst *in = vm_spawn(b->v, j->sc.mod, (uint32_t)j->sc.mod->entry, NULL, 0, false, &err);
        b->spawning = -1;
        if (!in) {
            finish_job(b, j, NULL, err.msg);
            continue;
        }
        j->in = in;
        vm_inst_set_output(in, j->out);
    }
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int cmd_batch(int argc, char **argv) {
    const char *dir = NULL, *model = NULL, *out_path = NULL, *v;
    bool fake = false;
    long parallel = 16;
    uint64_t max_steps = 100000000;
    vm_session_opts so = vm_session_opts_default();
    cli_limits limits = CLI_LIMITS_INIT;
    vm_value defaults = vm_map_new();
    /* Everything below is released at `out`, whichever way the run ends. */
    int status = 2;
    char **names = NULL;
    size_t n = 0;
    vm_session s;
    memset(&s, 0, sizeof s);
    batch b = {.spawning = -1};
    char *model_path = NULL;
    bool stats = false, progress = false;
    FILE *out = NULL;
    cli_backend bk;
    cli_backend_init(&bk);
    cli_args a;
    cli_args_init(&a, &batch_spec, argc, argv);
    for (int id; (id = cli_next(&a)) != CLI_DONE;) {
        v = a.value;
        switch (id) {
        case O_FAKE: fake = true; break;
        case O_NO_CACHE: so.cache_off = true; break;
        case O_STATS: stats = true; break;
        case O_PROGRESS: progress = true; break;
        case O_ALLOW_IO: so.allow_io = true; break;
        case O_PARALLEL: parallel = cli_parse_long("batch", "--parallel", v, 1, 1 << 20); break;
        case O_OUT: out_path = v; break;
        case O_MODEL: model = v; break;
        case O_OPT: so.opt_level = (int)cli_parse_long("batch", "-O", v, 0, 2); break;
        case O_TEMPERATURE:
            vm_map_set_cstr(defaults, "temperature", vm_float(cli_parse_double("batch", "--temperature", v, 0, 100)), NULL);
            break;
        case O_MAX_TOKENS:
            vm_map_set_cstr(defaults, "max_tokens", vm_int(cli_parse_long("batch", "--max-tokens", v, 0, 1 << 20)), NULL);
            break;
        case O_SEED:
            vm_map_set_cstr(defaults, "seed", vm_int(cli_parse_long("batch", "--seed", v, 0, 1L << 31)), NULL);
            break;
        case O_THREADS: so.n_threads = (int)cli_parse_long("batch", "--threads", v, 0, 1024); break;
        case O_MAX_STEPS: max_steps = (uint64_t)cli_parse_double("batch", "--max-steps", v, 0, 1e18); break;
        case CLI_OPERAND:
            if (dir) cli_usage_error(&a, "one directory only");
            dir = v;
            break;
        default:
            if (!cli_limit_set("batch", id, v, &limits) && !cli_device_set("batch", id, v))
                cli_backend_set("batch", id, v, &bk);
        }
    }
    if (!dir) cli_usage_error(&a, "DIR is required");
    /* --out is opened first: an unwritable path fails before anything runs */
    out = out_path ? fopen(out_path, "w") : stdout;
    if (!out) {
        fprintf(stderr, "sglc batch: error: %s: %s\n", out_path, strerror(errno));
        goto done;
    }
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "sglc batch: error: %s: %s\n", dir, strerror(errno));
        status = CLI_EXIT_ERROR;
        goto done;
    }
    for (struct dirent *e; (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 4, ".sgl") != 0) continue;
        names = realloc(names, (n + 1) * sizeof *names);
        sgl_strbuf p = {0};
        sgl_strbuf_printf(&p, "%s/%s", dir, e->d_name);
        names[n++] = sgl_strbuf_take(&p);
    }
    closedir(d);
    if (n == 0) {
        fprintf(stderr, "sglc batch: error: no .sgl files in %s\n", dir);
        status = CLI_EXIT_ERROR;
        goto done;
    }
    qsort(names, n, sizeof *names, cmp_str);

    so.fake = fake;
    bool remote = !fake && cli_backend_apply("batch", &bk, &so);
    so.max_file_bytes = limits.max_file;
    so.max_source_bytes = limits.max_source;
    s.opts = so;
    b.n = n;
    b.parallel = (size_t)parallel;
    b.jobs = calloc(n, sizeof *b.jobs);
    if (!b.jobs) goto done;
    size_t n_compiled = 0;
    for (size_t i = 0; i < n; i++) {
        job *j = &b.jobs[i];
        j->path = names[i];
        names[i] = NULL; /* the job owns it now */
        char *dbuf = NULL;
        size_t dlen = 0;
        FILE *diag = open_memstream(&dbuf, &dlen);
        sgl_error err = {{0}};
        int rc = vm_script_load(&s, j->path, NULL, 0, diag, false, false, &j->sc, &err);
        fclose(diag);
        if (rc < 0) {
            cJSON *e = cli_program_error(j->sc.prog, err.msg);
            j->line = job_line(j, cli_result_failed("compile_error", e));
            vm_script_free(&j->sc);
        } else {
            n_compiled++;
        }
        free(dbuf);
    }

    if (!fake && n_compiled && (!remote || model)) {
        model_path = cli_model_path(model);
        if (!model_path) goto done;
        so.model_path = model_path;
    }
    sgl_error err = {{0}};
    if (n_compiled && vm_session_open(&s, &so, &err) < 0) {
        fprintf(stderr, "sglc batch: error: %s\n", err.msg);
        goto done;
    }
    if (remote && n_compiled) { /* what the backend cannot do fails before any request */
        sgl_engine_caps caps;
        sgl_engine_caps_get(s.engine, &caps);
        for (size_t i = 0; i < n; i++) {
            job *j = &b.jobs[i];
            if (!j->sc.mod) continue;
            char *ebuf = NULL;
            size_t elen = 0;
            FILE *ef = open_memstream(&ebuf, &elen);
            int ne = vm_caps_check_module(j->sc.mod, &caps, s.backend, ef);
            fclose(ef);
            if (ne > 0) {
                j->line = job_line(j, cli_result_failed("compile_error", cli_located_error("compile", ebuf)));
                vm_script_free(&j->sc);
                n_compiled--;
            }
            free(ebuf);
        }
    }
    double t0 = sgl_now();
    if (n_compiled) {
        vm_config cfg = vm_session_config(&s);
        cfg.gen_defaults = defaults;
        cfg.max_steps = max_steps;
        cli_limits_apply_vm(&limits, &cfg);
        if (cli_progress_wanted(progress)) {
            b.progress = cli_progress_new(stderr, s.engine);
            cfg.poll = batch_poll;
            cfg.poll_ctx = &b;
        }
        b.v = vm_new(&cfg, &err);
        if (!b.v) {
            fprintf(stderr, "sglc batch: error: %s\n", err.msg);
            goto done;
        }
        vm_set_done_hook(b.v, on_done, &b);
        spawn_more(&b);
        vm_run(b.v, &err);
    }
    double secs = sgl_now() - t0;
    cli_progress_counts last = batch_counts(&b);
    cli_progress_end(b.progress, &last);
    b.progress = NULL;

    int n_ok = 0;
    for (size_t i = 0; i < n; i++) {
        job *j = &b.jobs[i];
        if (!j->line) finish_job(&b, j, NULL, "did not run");
        fprintf(out, "%s\n", j->line);
        if (j->in && vm_inst_done(j->in) && !vm_inst_failed(j->in)) n_ok++;
    }
    if (out != stdout) fclose(out);
    out = NULL;
    sgl_engine_metrics em;
    memset(&em, 0, sizeof em);
    if (s.engine) sgl_engine_metrics_get(s.engine, &em);
    vm_link_stats ls;
    memset(&ls, 0, sizeof ls);
    if (b.v) vm_engine_stats(b.v, &ls);
    fprintf(stderr,
            "sglc batch: %d of %zu scripts ok in %.2f s; %lld requests (largest batch %lld), "
            "prompt %lld tokens, %lld cached (%.1f%%)\n",
            n_ok, n, secs, (long long)(ls.generate_requests + ls.score_requests + ls.prefill_requests),
            (long long)ls.max_batch, (long long)em.prompt_tokens, (long long)em.cached_tokens,
            100.0 * em.hit_rate);
    if (stats && s.engine) cli_backend_stats(s.engine, stderr);
    status = (size_t)n_ok == n ? 0 : 1;
done:
    if (out && out != stdout) fclose(out);
    cli_progress_end(b.progress, NULL);
    vm_free(b.v);
    for (size_t i = 0; b.jobs && i < b.n; i++) {
        if (b.jobs[i].out) fclose(b.jobs[i].out);
        free(b.jobs[i].line);
        free(b.jobs[i].outbuf);
        vm_script_free(&b.jobs[i].sc);
        free(b.jobs[i].path);
    }
    free(b.jobs);
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    vm_release(defaults);
    vm_session_close(&s);
    free(model_path);
    cli_backend_free(&bk);
    return status;
}
