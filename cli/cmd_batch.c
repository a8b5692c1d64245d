/* cmd_batch: `sglc batch DIR`: run the main block of every DIR/NAME.sgl on one
 * VM and one engine (so the programs batch together and share the radix
 * cache), at most --parallel at a time, and write one JSON line per script
 * (in file-name order): file, status ("ok", "error", "compile_error"),
 * result, variables, output, error, seconds, requests and token counts.
 * A failing script does not stop the others. Exit status: 0 when every
 * script succeeded, 1 when any failed, 2 on usage or setup errors. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/progress.h"
#include "vm/caps.h"
#include "vm/session.h"

static void batch_usage(FILE *out) {
    fprintf(out,
            "usage: sglc batch DIR [options]\n\n"
            "Runs the main block of every .sgl file in DIR on one shared engine and\n"
            "writes one JSON line per script.\n\n"
            "  --parallel N       scripts in flight at once (default 16)\n"
            "  --out FILE.jsonl   write the lines there instead of stdout\n"
            "  --model PATH       GGUF model (default: $SGL_MODEL or models/%s)\n"
            "  --fake             use the deterministic fake engine (no model)\n"
            "  --allow-io         permit the file/http/shell builtins\n"
            "  -O LEVEL           compiler optimisation level (0, 1, 2)\n"
            "  --temperature T, --max-tokens N, --seed N   run-level gen defaults\n"
            "  --threads N        engine threads (default: all cores)\n"
            "  --no-cache         run the engine without its radix cache\n"
            "  --max-steps N      fail a script after N VM instructions (default 100000000;\n"
            "                     0: no limit), so a runaway loop cannot stall the batch\n"
            "  --progress         draw the status line (done, failed, running, tok/s, cache,\n"
            "                     ETA) even when stderr is not a terminal\n"
            "  --stats            with backends: one line per endpoint (requests, cached\n"
            "                     tokens and hit rate where the server reports them)\n"
            CLI_LIMITS_USAGE "\n%s",
            SGL_DEFAULT_MODEL_FILE, cli_backend_help);
}

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

static void json_str(sgl_strbuf *sb, const char *s) {
    vm_value v = vm_str_from(s);
    vm_json_dump(sb, v, false, NULL);
    vm_release(v);
}

static void finish_job(batch *b, job *j, vm_inst *in, const char *spawn_error) {
    if (j->line) return;
    sgl_strbuf sb = {0};
    sgl_strbuf_puts(&sb, "{\"file\": ");
    json_str(&sb, j->path);
    sgl_strbuf_puts(&sb, ", ");
    if (j->out) {
        fclose(j->out);
        j->out = NULL;
    }
    if (in) {
        sgl_strbuf one = {0};
        vm_inst_json(in, j->outbuf, &one);
        sgl_strbuf_puts(&sb, one.data + 1); /* drop the opening brace */
        sgl_strbuf_free(&one);
    } else {
        sgl_strbuf_puts(&sb, "\"status\": \"error\", \"result\": null, \"variables\": {}, \"output\": \"\", \"error\": ");
        json_str(&sb, spawn_error);
        sgl_strbuf_puts(&sb, ", \"seconds\": 0, \"requests\": 0, \"prompt_tokens\": 0, \"completion_tokens\": 0, "
                             "\"cached_tokens\": 0}");
    }
    j->line = sgl_strbuf_take(&sb);
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
    cli_backend bk;
    cli_backend_init(&bk);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            batch_usage(stdout);
            status = 0;
            goto done;
        } else if (!strcmp(argv[i], "--fake")) {
            fake = true;
        } else if (!strcmp(argv[i], "--no-cache")) {
            so.cache_off = true;
        } else if (!strcmp(argv[i], "--stats")) {
            stats = true;
        } else if (!strcmp(argv[i], "--progress")) {
            progress = true;
        } else if (cli_backend_opt("batch", argc, argv, &i, &bk)) {
            continue;
        } else if (!strcmp(argv[i], "--allow-io")) {
            so.allow_io = true;
        } else if (cli_opt(argc, argv, &i, "--parallel", &v)) {
            parallel = cli_parse_long("batch", "--parallel", v, 1, 1 << 20);
        } else if (cli_opt(argc, argv, &i, "--out", &v)) {
            out_path = v;
        } else if (cli_opt(argc, argv, &i, "--model", &v)) {
            model = v;
        } else if (cli_opt(argc, argv, &i, "-O", &v)) {
            so.opt_level = (int)cli_parse_long("batch", "-O", v, 0, 2);
        } else if (cli_opt(argc, argv, &i, "--temperature", &v)) {
            vm_map_set_cstr(defaults, "temperature", vm_float(cli_parse_double("batch", "--temperature", v, 0, 100)), NULL);
        } else if (cli_opt(argc, argv, &i, "--max-tokens", &v)) {
            vm_map_set_cstr(defaults, "max_tokens", vm_int(cli_parse_long("batch", "--max-tokens", v, 0, 1 << 20)), NULL);
        } else if (cli_opt(argc, argv, &i, "--seed", &v)) {
            vm_map_set_cstr(defaults, "seed", vm_int(cli_parse_long("batch", "--seed", v, 0, 1L << 31)), NULL);
        } else if (cli_opt(argc, argv, &i, "--threads", &v)) {
            so.n_threads = (int)cli_parse_long("batch", "--threads", v, 0, 1024);
        } else if (cli_limit_opt("batch", argc, argv, &i, &limits)) {
            continue;
        } else if (cli_opt(argc, argv, &i, "--max-steps", &v)) {
            max_steps = (uint64_t)cli_parse_double("batch", "--max-steps", v, 0, 1e18);
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "sglc batch: unknown option '%s'\n", argv[i]);
            batch_usage(stderr);
            goto done;
        } else if (!dir) {
            dir = argv[i];
        } else {
            fprintf(stderr, "sglc batch: one directory only\n");
            goto done;
        }
    }
    if (!dir) {
        batch_usage(stderr);
        goto done;
    }
    DIR *d = opendir(dir);
    if (!d) {
        perror(dir);
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
        fprintf(stderr, "sglc batch: no .sgl files in %s\n", dir);
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
            sgl_strbuf sb = {0};
            sgl_strbuf_puts(&sb, "{\"file\": ");
            json_str(&sb, j->path);
            sgl_strbuf_puts(&sb, ", \"status\": \"compile_error\", \"error\": ");
            json_str(&sb, dlen ? dbuf : err.msg);
            sgl_strbuf_puts(&sb, "}");
            j->line = sgl_strbuf_take(&sb);
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
        fprintf(stderr, "sglc batch: %s\n", err.msg);
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
                sgl_strbuf sb = {0};
                sgl_strbuf_puts(&sb, "{\"file\": ");
                json_str(&sb, j->path);
                sgl_strbuf_puts(&sb, ", \"status\": \"compile_error\", \"error\": ");
                json_str(&sb, ebuf);
                sgl_strbuf_puts(&sb, "}");
                j->line = sgl_strbuf_take(&sb);
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
            fprintf(stderr, "sglc batch: %s\n", err.msg);
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

    FILE *out = out_path ? fopen(out_path, "w") : stdout;
    if (!out) {
        perror(out_path);
        goto done;
    }
    int n_ok = 0;
    for (size_t i = 0; i < n; i++) {
        job *j = &b.jobs[i];
        if (!j->line) finish_job(&b, j, NULL, "did not run");
        fprintf(out, "%s\n", j->line);
        if (j->in && vm_inst_done(j->in) && !vm_inst_failed(j->in)) n_ok++;
    }
    if (out != stdout) fclose(out);
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
