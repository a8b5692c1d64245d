/* cmd_run: `sglc run FILE [ARGS...]`: load, check and compile an SGL program,
 * run its main block (or --fn NAME with ARGS) on the VM against the local
 * engine (or --fake), and print what it prints; --json prints one JSON
 * object with the result, variables, output, timings and token counts.
 * Exit status: 0 ok, 1 program error (diagnostics or runtime error),
 * 2 usage or setup error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/progress.h"
#include "vm/caps.h"
#include "vm/session.h"

static void run_usage(FILE *out) {
    fprintf(out,
            "usage: sglc run FILE [ARGS...] [options]\n\n"
            "Runs FILE's main block (FILE - reads the program from standard input), or\n"
            "the function --fn NAME with ARGS (each ARG is\n"
            "read as JSON when it parses, else as a string; a function whose first\n"
            "parameter is a stream runs on a fresh stream when that one is left out).\n\n"
            "  --model PATH       GGUF model (default: $SGL_MODEL or models/%s)\n"
            "  --fake             use the deterministic fake engine (no model; replies \"ok\")\n"
            "  --fn NAME          run function NAME instead of main\n"
            "  --json             print one JSON object: result, variables, output, error,\n"
            "                     seconds, requests and token counts\n"
            "  --allow-io         permit read_file, write_file, http_get, http_post, shell\n"
            "  -O LEVEL           compiler optimisation level (0, 1, 2)\n"
            "  -I DIR             also search DIR for imports\n"
            "  --temperature T    default sampling temperature for gen (run level)\n"
            "  --max-tokens N     default max_tokens for gen\n"
            "  --seed N           reproducible run: base of every request's seed\n"
            "  --no-jump-forward  constrained gen samples every token (default: text the\n"
            "                     constraint forces is appended without sampling)\n"
            "  --token-healing    default token_healing=true for gen\n"
            "  --threads N        engine threads (default: all cores)\n"
            "  --no-cache         run the engine without its radix cache (every prompt computed)\n"
            "  --stats            print engine batching and cache figures to stderr\n"
            "  --trace            print every engine request and result to stderr\n"
            "  --progress         status line of run_batch instances on stderr (done, failed,\n"
            "                     running, tok/s, cache, ETA), also when stderr is not a terminal\n"
            "  --max-steps N      fail the program after N VM instructions (0: no limit)\n"
            "  --stats            with backends: also one line per endpoint (requests,\n"
            "                     cached tokens and hit rate where the server reports them)\n"
            CLI_LIMITS_USAGE "\n%s",
            SGL_DEFAULT_MODEL_FILE, cli_backend_help);
}

/* The run_batch status line (cli/progress.h), fed from vm_config.poll. */
typedef struct run_progress {
    vm *v;
    cli_progress *line;
} run_progress;

static cli_progress_counts run_counts(const run_progress *rp) {
    vm_progress vp = {0};
    if (rp->v) vm_progress_get(rp->v, &vp);
    cli_progress_counts c = {vp.batch_total, vp.batch_done, vp.batch_failed, vp.batch_started - vp.batch_done};
    return c;
}

static int run_poll(void *ctx) {
    run_progress *rp = ctx;
    cli_progress_counts c = run_counts(rp);
    if (c.total > 0) cli_progress_update(rp->line, &c, false); /* only once a run_batch started */
    return 0;
}

static bool diag_color(void) {
    const char *nc = getenv("NO_COLOR");
    return isatty(2) && !(nc && *nc);
}

int cmd_run(int argc, char **argv) {
    const char *file = NULL, *model = NULL, *fn_name = NULL, *v;
    bool json = false, fake = false, stats = false, trace = false, progress = false;
    run_progress rp = {0};
    uint64_t max_steps = 0;
    vm_session_opts so = vm_session_opts_default();
    cli_limits limits = CLI_LIMITS_INIT;
    const char *dirs[64];
    size_t n_dirs = 0;
    /* Everything below is released at `out`, whichever way the run ends. */
    int status = 2;
    char **args = calloc((size_t)argc + 1, sizeof *args);
    int n_args = 0;
    vm_value defaults = vm_map_new();
    vm_session s;
    memset(&s, 0, sizeof s);
    vm_script sc;
    memset(&sc, 0, sizeof sc);
    char *model_path = NULL;
    vm *vmach = NULL;
    cli_backend bk;
    cli_backend_init(&bk);
    if (!args || defaults.type != VM_MAP) goto done;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            run_usage(stdout);
            status = 0;
            goto done;
        } else if (!strcmp(argv[i], "--json")) {
            json = true;
        } else if (!strcmp(argv[i], "--fake")) {
            fake = true;
        } else if (!strcmp(argv[i], "--stats")) {
            stats = true;
        } else if (!strcmp(argv[i], "--trace")) {
            trace = true;
        } else if (!strcmp(argv[i], "--progress")) {
            progress = true;
        } else if (!strcmp(argv[i], "--no-cache")) {
            so.cache_off = true;
        } else if (!strcmp(argv[i], "--no-jump-forward")) {
            vm_map_set_cstr(defaults, "jump_forward", vm_bool(false), NULL);
        } else if (!strcmp(argv[i], "--token-healing")) {
            vm_map_set_cstr(defaults, "token_healing", vm_bool(true), NULL);
        } else if (!strcmp(argv[i], "--allow-io")) {
            so.allow_io = true;
        } else if (cli_opt(argc, argv, &i, "--model", &v)) {
            model = v;
        } else if (cli_opt(argc, argv, &i, "--fn", &v)) {
            fn_name = v;
        } else if (cli_opt(argc, argv, &i, "-I", &v)) {
            if (n_dirs < SGL_ARRAY_LEN(dirs)) dirs[n_dirs++] = v;
        } else if (cli_opt(argc, argv, &i, "-O", &v)) {
            so.opt_level = (int)cli_parse_long("run", "-O", v, 0, 2);
        } else if (!strncmp(argv[i], "-O", 2) && argv[i][2]) {
            so.opt_level = (int)cli_parse_long("run", "-O", argv[i] + 2, 0, 2);
        } else if (cli_opt(argc, argv, &i, "--temperature", &v)) {
            vm_map_set_cstr(defaults, "temperature", vm_float(cli_parse_double("run", "--temperature", v, 0, 100)), NULL);
        } else if (cli_opt(argc, argv, &i, "--max-tokens", &v)) {
            vm_map_set_cstr(defaults, "max_tokens", vm_int(cli_parse_long("run", "--max-tokens", v, 0, 1 << 20)), NULL);
        } else if (cli_opt(argc, argv, &i, "--seed", &v)) {
            vm_map_set_cstr(defaults, "seed", vm_int(cli_parse_long("run", "--seed", v, 0, 1L << 31)), NULL);
        } else if (cli_opt(argc, argv, &i, "--threads", &v)) {
            so.n_threads = (int)cli_parse_long("run", "--threads", v, 0, 1024);
        } else if (cli_limit_opt("run", argc, argv, &i, &limits)) {
            continue;
        } else if (cli_opt(argc, argv, &i, "--max-steps", &v)) {
            max_steps = (uint64_t)cli_parse_double("run", "--max-steps", v, 0, 1e18);
        } else if (cli_backend_opt("run", argc, argv, &i, &bk)) {
            continue;
        } else if (argv[i][0] == '-' && argv[i][1] && !file) {
            fprintf(stderr, "sglc run: unknown option '%s'\n", argv[i]);
            run_usage(stderr);
            goto done;
        } else if (!file) {
            file = argv[i];
        } else {
            args[n_args++] = argv[i];
        }
    }
    if (!file) {
        run_usage(stderr);
        goto done;
    }
    so.search_path = dirs;
    so.n_search_path = n_dirs;
    so.fake = fake;
    bool remote = !fake && cli_backend_apply("run", &bk, &so);

    /* Check and compile before loading the model: errors come fast. */
    so.max_file_bytes = limits.max_file;
    so.max_source_bytes = limits.max_source;
    s.opts = so;
    sgl_error err = {{0}};
    sgl_strbuf stdin_text = {0};
    if (!strcmp(file, "-")) {
        char buf[4096];
        size_t k;
        /* Stop one buffer past the source size limit: the loader reports it. */
        size_t cap = SGL_MIN(limits.max_file ? limits.max_file : SGL_DEFAULT_MAX_FILE,
                             limits.max_source ? limits.max_source : SGL_DEFAULT_MAX_SOURCE);
        while (stdin_text.len <= cap && (k = fread(buf, 1, sizeof buf, stdin)) > 0)
            sgl_strbuf_append(&stdin_text, buf, k);
        sgl_strbuf_putc(&stdin_text, 0);
        stdin_text.len--;
        file = "<stdin>";
    }
    int load_rc = vm_script_load(&s, file, stdin_text.data, stdin_text.len, stderr, diag_color(), true, &sc, &err);
    sgl_strbuf_free(&stdin_text);
    if (load_rc < 0) {
        if (sc.prog && sc.prog->diags.n_errors == 0) fprintf(stderr, "sglc run: %s\n", err.msg);
        status = 1;
        goto done;
    }
    int fi = sc.mod->entry;
    if (fn_name) {
        fi = sgl_module_find_fn(sc.mod, fn_name);
        if (fi < 0) {
            fprintf(stderr, "sglc run: %s has no function '%s'\n", file, fn_name);
            goto done;
        }
    } else if (fi < 0) {
        fprintf(stderr, "sglc run: %s has no main block (use --fn NAME)\n", file);
        goto done;
    }
    const sgl_bc_function *fn = &sc.mod->fns[fi];
    bool fresh = false;
    if ((uint32_t)n_args + 1 == fn->n_params && (fn->flags & SGL_FNF_STREAM)) {
        fresh = true;
    } else if ((uint32_t)n_args != fn->n_params) {
        fprintf(stderr, "sglc run: %s() takes %u argument%s, got %d\n", fn->name, fn->n_params,
                fn->n_params == 1 ? "" : "s", n_args);
        goto done;
    }

    if (!fake && (!remote || model)) {
        model_path = cli_model_path(model);
        if (!model_path) goto done;
        so.model_path = model_path;
    }
    if (vm_session_open(&s, &so, &err) < 0) {
        fprintf(stderr, "sglc run: %s\n", err.msg);
        goto done;
    }
    if (remote && cli_backend_check(&sc, &s, stderr) > 0) {
        /* what the backend cannot do fails here, before any request */
        status = 1;
        goto done;
    }

    char *outbuf = NULL;
    size_t outlen = 0;
    if (cli_progress_wanted(progress)) rp.line = cli_progress_new(stderr, s.engine);
    FILE *out = json ? open_memstream(&outbuf, &outlen) : cli_progress_wrap(rp.line, stdout);
    vm_config cfg = vm_session_config(&s);
    if (rp.line) {
        cfg.poll = run_poll;
        cfg.poll_ctx = &rp;
    }
    cfg.out = out;
    cfg.gen_defaults = defaults;
    if (trace) cfg.trace = stderr;
    cfg.max_steps = max_steps;
    cli_limits_apply_vm(&limits, &cfg);
    vmach = vm_new(&cfg, &err);
    rp.v = vmach;
    vm_value *vals = calloc((size_t)n_args + 1, sizeof *vals);
    for (int i = 0; i < n_args; i++) vals[i] = vm_arg_value(args[i]);
    vm_inst *in = vmach ? vm_spawn(vmach, sc.mod, (uint32_t)fi, vals, (uint32_t)n_args, fresh, &err) : NULL;
    for (int i = 0; i < n_args; i++) vm_release(vals[i]);
    free(vals);
    status = 0;
    if (!in) {
        fprintf(stderr, "sglc run: %s\n", err.msg);
        status = 2;
        if (!json && out != stdout) fclose(out);
    } else {
        vm_run(vmach, &err);
        if (!json && out != stdout) { /* the progress wrapper: nothing more is printed through it */
            fclose(out);
            out = stdout;
        }
        cli_progress_counts last = run_counts(&rp);
        cli_progress_end(rp.line, last.total > 0 ? &last : NULL);
        rp.line = NULL;
        if (json) {
            fflush(out);
            sgl_strbuf sb = {0};
            vm_inst_json(in, outbuf, &sb);
            printf("%s\n", sb.data ? sb.data : "{}");
            sgl_strbuf_free(&sb);
        } else if (!vm_inst_failed(in) && fn_name) {
            /* --fn: show what the function produced. */
            vm_value r = vm_inst_result(in);
            sgl_strbuf sb = {0};
            if (r.type == VM_STREAM) vm_json_dump(&sb, vm_inst_vars(in).type == VM_MAP ? vm_inst_vars(in) : r, false, NULL);
            else vm_str_append(&sb, r);
            printf("%s\n", sb.data ? sb.data : "");
            sgl_strbuf_free(&sb);
        }
        if (vm_inst_failed(in)) {
            vm_script_print_error(&sc, vm_inst_error(in), stderr);
            status = 1;
        }
        if (stats) {
            vm_link_stats ls;
            vm_engine_stats(vmach, &ls);
            sgl_engine_metrics em;
            sgl_engine_metrics_get(s.engine, &em);
            fprintf(stderr,
                    "stats: %lld generate, %lld score, %lld prefill requests in %lld flushes (largest %lld); "
                    "prompt %lld tokens, %lld cached (%.1f%%), %lld generated (%lld sampled, %lld forced "
                    "by jump-forward; %lld constrained requests); %llu VM instructions; %lld speculative requests filled %lld gens\n",
                    (long long)ls.generate_requests, (long long)ls.score_requests, (long long)ls.prefill_requests,
                    (long long)ls.flushes, (long long)ls.max_batch, (long long)em.prompt_tokens,
                    (long long)em.cached_tokens, 100.0 * em.hit_rate, (long long)em.generated_tokens,
                    (long long)(em.generated_tokens - em.forced_tokens), (long long)em.forced_tokens,
                    (long long)em.constrained_requests, (unsigned long long)vm_instructions(vmach), (long long)ls.spec_requests,
                    (long long)ls.spec_gens);
            cli_backend_stats(s.engine, stderr);
        }
    }
    vm_free(vmach);
    vmach = NULL;
    if (json) {
        fclose(out);
        free(outbuf);
    }
done:
    cli_progress_end(rp.line, NULL);
    vm_free(vmach);
    vm_release(defaults);
    vm_session_close(&s);
    vm_script_free(&sc);
    free(model_path);
    free(args);
    cli_backend_free(&bk);
    return status;
}
