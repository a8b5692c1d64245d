/* cmd_run: `sglc run FILE [ARGS...]`: load, check and compile an SGL program,
 * run its main block (or --fn NAME with ARGS) on the VM against the local
 * engine (or --fake), and print what it prints; --json prints one JSON
 * object with the result, variables, output, timings and token counts.
 * Exit status: 0 ok, 1 program error (diagnostics or runtime error),
 * 2 usage or setup error. */
#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/progress.h"
#include "vm/caps.h"
#include "vm/session.h"

enum {
    O_MODEL = 1, O_FAKE, O_FN, O_JSON, O_ALLOW_IO, O_OPT, O_INCLUDE, O_TEMPERATURE, O_MAX_TOKENS,
    O_SEED, O_NO_JUMP_FORWARD, O_TOKEN_HEALING, O_THREADS, O_NO_CACHE, O_STATS, O_TRACE, O_PROGRESS,
    O_MAX_STEPS,
};

static const cli_option run_options[] = {
    {O_MODEL, "--model", NULL, "PATH", CLI_MODEL_HELP},
    {O_FAKE, "--fake", NULL, NULL, "use the deterministic fake engine (no model; replies \"ok\")"},
    {O_FN, "--fn", NULL, "NAME", "run function NAME instead of main"},
    {O_JSON, "--json", NULL, NULL,
     "print one JSON object: status, result, variables, output, error,\n"
     "seconds, requests and token counts; on a compile or usage error\n"
     "{\"error\": {message, file, line, col, kind}}"},
    {O_ALLOW_IO, "--allow-io", NULL, NULL, "permit read_file, write_file, http_get, http_post, shell"},
    {O_OPT, "-O", NULL, "LEVEL", "compiler optimisation level (0, 1, 2)"},
    {O_INCLUDE, "-I", NULL, "DIR", "also search DIR for imports"},
    {O_TEMPERATURE, "--temperature", NULL, "T", "default sampling temperature for gen (run level)"},
    {O_MAX_TOKENS, "--max-tokens", NULL, "N", "default max_tokens for gen"},
    {O_SEED, "--seed", NULL, "N", "reproducible run: base of every request's seed"},
    {O_NO_JUMP_FORWARD, "--no-jump-forward", NULL, NULL,
     "constrained gen samples every token (default: text the\n"
     "constraint forces is appended without sampling)"},
    {O_TOKEN_HEALING, "--token-healing", NULL, NULL, "default token_healing=true for gen"},
    {O_THREADS, "--threads", NULL, "N", "engine threads (default: all cores)"},
    {O_NO_CACHE, "--no-cache", NULL, NULL, "run the engine without its radix cache (every prompt computed)"},
    {O_STATS, "--stats", NULL, NULL,
     "print engine batching and cache figures to stderr (with\n"
     "backends: also one line per endpoint)"},
    {O_TRACE, "--trace", NULL, NULL, "print every engine request and result to stderr"},
    {O_PROGRESS, "--progress", NULL, NULL,
     "status line of run_batch instances on stderr (done, failed,\n"
     "running, tok/s, cache, ETA), also when stderr is not a terminal"},
    {O_MAX_STEPS, "--max-steps", NULL, "N", "fail the program after N VM instructions (0: no limit)"},
    {0},
};

static const cli_option *const run_tables[] = {run_options, cli_device_options, cli_limit_options, cli_backend_options, NULL};

static const cli_spec run_spec = {
    .name = "run",
    .synopsis = "sglc run [options] FILE [ARGS...] [-- ARGS...]",
    .about = "Runs FILE's main block (FILE - reads the program from standard input), or\n"
             "the function --fn NAME with ARGS (each ARG is read as JSON when it parses,\n"
             "else as a string; a function whose first parameter is a stream runs on a\n"
             "fresh stream when that one is left out). Options may come anywhere before\n"
             "`--`; an ARG that starts with '-' goes after `--`.\n",
    .tables = run_tables,
    .json_id = O_JSON,
};

/* Prints "sglc run: error: MSG" (and under --json the error document);
 * returns status. */
static int fail(bool json, int status, const char *kind, const char *fmt, ...) SGL_PRINTF(4, 5);
static int fail(bool json, int status, const char *kind, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "sglc run: error: %s\n", msg);
    if (json) cli_json_error(kind, msg, NULL, 0, 0);
    return status;
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
    cli_args p;
    cli_args_init(&p, &run_spec, argc, argv);
    json = p.json;
    for (int id; (id = cli_next(&p)) != CLI_DONE;) {
        v = p.value;
        switch (id) {
        case O_JSON: json = true; break;
        case O_FAKE: fake = true; break;
        case O_STATS: stats = true; break;
        case O_TRACE: trace = true; break;
        case O_PROGRESS: progress = true; break;
        case O_NO_CACHE: so.cache_off = true; break;
        case O_NO_JUMP_FORWARD: vm_map_set_cstr(defaults, "jump_forward", vm_bool(false), NULL); break;
        case O_TOKEN_HEALING: vm_map_set_cstr(defaults, "token_healing", vm_bool(true), NULL); break;
        case O_ALLOW_IO: so.allow_io = true; break;
        case O_MODEL: model = v; break;
        case O_FN: fn_name = v; break;
        case O_INCLUDE:
            if (n_dirs < SGL_ARRAY_LEN(dirs)) dirs[n_dirs++] = v;
            break;
        case O_OPT: so.opt_level = (int)cli_parse_long("run", "-O", v, 0, 2); break;
        case O_TEMPERATURE:
            vm_map_set_cstr(defaults, "temperature", vm_float(cli_parse_double("run", "--temperature", v, 0, 100)), NULL);
            break;
        case O_MAX_TOKENS:
            vm_map_set_cstr(defaults, "max_tokens", vm_int(cli_parse_long("run", "--max-tokens", v, 0, 1 << 20)), NULL);
            break;
        case O_SEED:
            vm_map_set_cstr(defaults, "seed", vm_int(cli_parse_long("run", "--seed", v, 0, 1L << 31)), NULL);
            break;
        case O_THREADS: so.n_threads = (int)cli_parse_long("run", "--threads", v, 0, 1024); break;
        case O_MAX_STEPS: max_steps = (uint64_t)cli_parse_double("run", "--max-steps", v, 0, 1e18); break;
        case CLI_OPERAND:
            if (!file) file = v;
            else args[n_args++] = p.argv[p.i - 1];
            break;
        default:
            if (!cli_limit_set("run", id, v, &limits) && !cli_device_set("run", id, v)) cli_backend_set("run", id, v, &bk);
        }
    }
    if (!file) cli_usage_error(&p, "FILE is required");
    so.search_path = dirs;
    so.n_search_path = n_dirs;
    so.fake = fake;
    bool remote = !fake && cli_backend_apply("run", &bk, &so);

    /* Check and compile before loading the model: errors come fast. */
    so.max_file_bytes = limits.max_file;
    so.max_source_bytes = limits.max_source;
    s.opts = so;
    sgl_error err = {{0}};
    char *stdin_text = NULL;
    size_t stdin_len = 0;
    if (!strcmp(file, "-")) {
        /* Stop one buffer past the source size limit: the loader reports it. */
        size_t cap = SGL_MIN(limits.max_file ? limits.max_file : SGL_DEFAULT_MAX_FILE,
                             limits.max_source ? limits.max_source : SGL_DEFAULT_MAX_SOURCE);
        stdin_text = cli_read_input("run", "-", cap, &stdin_len);
        file = "<stdin>";
    }
    int load_rc = vm_script_load(&s, file, stdin_text, stdin_len, stderr, diag_color(), true, &sc, &err);
    free(stdin_text);
    if (load_rc < 0) {
        if (!sc.prog || sc.prog->diags.n_errors == 0) fprintf(stderr, "sglc run: error: %s\n", err.msg);
        if (json) {
            cJSON *root = cJSON_CreateObject();
            cJSON_AddItemToObject(root, "error", cli_program_error(sc.prog, err.msg));
            cli_json_print(root);
        }
        status = CLI_EXIT_ERROR;
        goto done;
    }
    int fi = sc.mod->entry;
    if (fn_name) {
        fi = sgl_module_find_fn(sc.mod, fn_name);
        if (fi < 0) {
            status = fail(json, CLI_EXIT_USAGE, "usage", "%s has no function '%s'", file, fn_name);
            goto done;
        }
    } else if (fi < 0) {
        status = fail(json, CLI_EXIT_USAGE, "usage", "%s has no main block (use --fn NAME)", file);
        goto done;
    }
    const sgl_bc_function *fn = &sc.mod->fns[fi];
    bool fresh = false;
    if ((uint32_t)n_args + 1 == fn->n_params && (fn->flags & SGL_FNF_STREAM)) {
        fresh = true;
    } else if ((uint32_t)n_args != fn->n_params) {
        status = fail(json, CLI_EXIT_USAGE, "usage", "%s() takes %u argument%s, got %d", fn->name, fn->n_params,
                      fn->n_params == 1 ? "" : "s", n_args);
        goto done;
    }

    if (!fake && (!remote || model)) {
        model_path = cli_model_path(model);
        if (!model_path) {
            if (json) cli_json_error("setup", "no model found (--model PATH or $SGL_MODEL)", NULL, 0, 0);
            goto done;
        }
        so.model_path = model_path;
    }
    if (vm_session_open(&s, &so, &err) < 0) {
        status = fail(json, CLI_EXIT_USAGE, "setup", "%s", err.msg);
        goto done;
    }
    if (remote && cli_backend_check(&sc, &s, stderr) > 0) {
        /* what the backend cannot do fails here, before any request */
        if (json) cli_json_error("compile", "the backend cannot run this program (see stderr)", file, 0, 0);
        status = CLI_EXIT_ERROR;
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
        status = fail(json, CLI_EXIT_USAGE, "setup", "%s", err.msg);
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
            cli_json_print(cli_result_json(in, outbuf));
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
                    "by jump-forward; %lld constrained requests); %lld forward calls over %lld tokens; %llu VM instructions; "
                    "%lld speculative requests filled %lld gens\n",
                    (long long)ls.generate_requests, (long long)ls.score_requests, (long long)ls.prefill_requests,
                    (long long)ls.flushes, (long long)ls.max_batch, (long long)em.prompt_tokens,
                    (long long)em.cached_tokens, 100.0 * em.hit_rate, (long long)em.generated_tokens,
                    (long long)(em.generated_tokens - em.forced_tokens), (long long)em.forced_tokens,
                    (long long)em.constrained_requests, (long long)em.forward_calls, (long long)em.forward_tokens,
                    (unsigned long long)vm_instructions(vmach), (long long)ls.spec_requests,
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
