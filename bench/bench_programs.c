/* bench_programs: SGVM figures. Prints, never asserts.
 *   1. interpreter speed: fib(24) on the fake engine (instructions/s);
 *   2. VM overhead per request: a run_batch of 20000 gens on the fake engine;
 *   3. on a real model (argv[1], default $SGL_TEST_MODEL or the default model
 *      path): a few-shot select batch of 16 reviews with parallel=1 vs 16 and
 *      prefix hints on vs off: wall time, requests per flush, cached tokens.
 * usage: bench_programs [MODEL.gguf] [--threads N]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vm/session.h"

static const char *FIB_SRC =
    "fn fib(n) { if n < 2 { return n }\n return fib(n - 1) + fib(n - 2) }\n"
    "main { print(fib(24)) }\n";

static const char *GENS_SRC =
    "fn one(s, i) { s += f\"item {i}:\" + gen(\"g\", max_tokens=2) }\n"
    "main { let args = []\n for i in range(20000) { args += [{\"i\": i}] }\n"
    "  let rs = run_batch(one, args, parallel=256)\n print(len(rs)) }\n";

static const char *FEWSHOT_SRC =
    "const EX = \"Review: I loved every minute of it.\\nSentiment: positive\\n\\n"
    "Review: The food was cold and bland.\\nSentiment: negative\\n\\n"
    "Review: Best purchase I made this year!\\nSentiment: positive\\n\\n"
    "Review: It broke after two days.\\nSentiment: negative\\n\\n\"\n"
    "fn classify(s, text) {\n"
    "  s += EX\n"
    "  s += f\"Review: {text}\\nSentiment:\" + select(\"label\", [\" positive\", \" negative\"])\n"
    "}\n"
    "main { let texts = [\"What a wonderful day.\", \"Terrible service.\", \"A delight.\", \"Arrived broken.\",\n"
    "  \"Great value.\", \"Never again.\", \"Loved the staff.\", \"Too noisy.\", \"Fresh and tasty.\", \"Stale bread.\",\n"
    "  \"Fast delivery.\", \"Lost my order.\", \"Friendly people.\", \"Rude waiter.\", \"Superb view.\", \"Dirty room.\"]\n"
    "  let args = []\n for t in texts { args += [{\"text\": t}] }\n"
    "  let rs = run_batch(classify, args, parallel=PAR)\n print(len(rs)) }\n";

typedef struct figures {
    double seconds;
    uint64_t instructions;
    vm_link_stats ls;
    sgl_engine_metrics em;
    bool ok;
} figures;

static figures run_once(vm_session *s, const char *src, bool prefix_hints) {
    figures f;
    memset(&f, 0, sizeof f);
    vm_script sc;
    sgl_error err = {{0}};
    if (vm_script_load(s, "bench.sgl", src, strlen(src), stderr, false, false, &sc, &err) < 0) {
        fprintf(stderr, "bench: %s\n", err.msg);
        vm_script_free(&sc);
        return f;
    }
    FILE *devnull = fopen("/dev/null", "w");
    vm_config cfg = vm_session_config(s);
    cfg.out = devnull;
    cfg.prefix_hints = prefix_hints;
    vm *v = vm_new(&cfg, &err);
    sgl_engine_metrics before;
    sgl_engine_metrics_get(s->engine, &before);
    double t0 = sgl_now();
    vm_inst *in = vm_spawn(v, sc.mod, (uint32_t)sc.mod->entry, NULL, 0, false, &err);
    if (in) vm_run(v, &err);
    f.seconds = sgl_now() - t0;
    f.ok = in && !vm_inst_failed(in);
    if (in && vm_inst_failed(in)) fprintf(stderr, "bench: %s\n", vm_inst_error(in));
    f.instructions = vm_instructions(v);
    vm_engine_stats(v, &f.ls);
    sgl_engine_metrics_get(s->engine, &f.em);
    f.em.prompt_tokens -= before.prompt_tokens;
    f.em.cached_tokens -= before.cached_tokens;
    vm_free(v);
    fclose(devnull);
    vm_script_free(&sc);
    return f;
}

static char *with_parallel(int par) {
    const char *at = strstr(FEWSHOT_SRC, "PAR");
    sgl_strbuf sb = {0};
    sgl_strbuf_append(&sb, FEWSHOT_SRC, (size_t)(at - FEWSHOT_SRC));
    sgl_strbuf_printf(&sb, "%d", par);
    sgl_strbuf_puts(&sb, at + 3);
    return sgl_strbuf_take(&sb);
}

int main(int argc, char **argv) {
    const char *model = NULL;
    int threads = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else model = argv[i];
    }
    if (!model) model = getenv("SGL_TEST_MODEL");
    if (!model) model = SGL_SOURCE_ROOT "/models/SmolLM2-135M-Instruct.Q4_1.gguf";

    vm_session fake;
    vm_session_opts fo = vm_session_opts_default();
    fo.fake = true;
    sgl_error err = {{0}};
    if (vm_session_open(&fake, &fo, &err) < 0) {
        fprintf(stderr, "bench: %s\n", err.msg);
        return 1;
    }
    figures f = run_once(&fake, FIB_SRC, true);
    printf("interpreter  fib(24): %.3f s, %llu instructions, %.1f M instructions/s\n", f.seconds,
           (unsigned long long)f.instructions, f.instructions / f.seconds / 1e6);
    f = run_once(&fake, GENS_SRC, true);
    printf("vm overhead  20000 gens (fake engine, parallel 256): %.3f s, %.1f us per request, "
           "%lld flushes, largest %lld\n",
           f.seconds, 1e6 * f.seconds / 20000, (long long)f.ls.flushes, (long long)f.ls.max_batch);
    vm_session_close(&fake);

    if (access(model, R_OK) != 0) {
        printf("model benchmarks skipped: %s not found\n", model);
        return 0;
    }
    struct {
        int par;
        bool hints;
    } cases[] = {{1, true}, {16, false}, {16, true}};
    for (size_t i = 0; i < SGL_ARRAY_LEN(cases); i++) {
        /* A fresh engine per case: the radix cache starts empty each time. */
        vm_session real;
        vm_session_opts ro = vm_session_opts_default();
        ro.model_path = model;
        ro.n_threads = threads;
        if (vm_session_open(&real, &ro, &err) < 0) {
            fprintf(stderr, "bench: %s\n", err.msg);
            return 1;
        }
        if (i == 0) printf("model        %s (loaded in %.2f s)\n", model, real.load_seconds);
        char *src = with_parallel(cases[i].par);
        f = run_once(&real, src, cases[i].hints);
        free(src);
        printf("few-shot select x16  parallel=%-2d prefix hints %-3s: %.3f s%s, %lld score requests in %lld "
               "flushes (largest %lld), prompt %lld tokens, %lld cached\n",
               cases[i].par, cases[i].hints ? "on" : "off", f.seconds, f.ok ? "" : " (FAILED)",
               (long long)f.ls.score_requests, (long long)f.ls.flushes, (long long)f.ls.max_batch,
               (long long)f.em.prompt_tokens, (long long)f.em.cached_tokens);
        vm_session_close(&real);
    }
    return 0;
}
