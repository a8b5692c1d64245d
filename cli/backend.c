/* backend: the --backend options every running subcommand shares (run,
 * batch, generate, repl, check): which remote endpoints to use
 * (runtime/remote/remote.h), how to reach them, how to route over them, and
 * the per-endpoint --stats lines. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "vm/caps.h"

void cli_backend_init(cli_backend *b) {
    memset(b, 0, sizeof *b);
#ifdef SGL_HAVE_REMOTE
    b->cfg = sgl_remote_config_default();
#endif
}

const cli_option cli_backend_options[] = {
    {0, NULL, NULL, NULL, "remote backends (instead of the local engine):"},
    {CLI_OPT_BACKEND, "--backend", NULL, "KIND:URL",
     "an endpoint: sglang:URL (SGLang /generate), openai:URL\n"
     "(/v1/completions if offered, else /v1/chat/completions;\n"
     "openai-chat:URL / openai-completions:URL choose), anthropic:URL\n"
     "(/v1/messages). Repeat it to spread requests over endpoints."},
    {CLI_OPT_BACKENDS, "--backends", NULL, "FILE", "endpoints, one KIND:URL a line (# comments)"},
    {CLI_OPT_ROUTE, "--route", NULL, "POLICY", "prefix (default: cache-aware) or round_robin"},
    {CLI_OPT_API_MODEL, "--api-model", NULL, "NAME", "model name sent to OpenAI/Anthropic APIs"},
    {CLI_OPT_API_KEY_ENV, "--api-key-env", NULL, "VAR",
     "read the API key from $VAR (default OPENAI_API_KEY /\nANTHROPIC_API_KEY)"},
    {CLI_OPT_REQUEST_TIMEOUT, "--request-timeout", NULL, "S", "seconds per HTTP attempt (default 120)"},
    {CLI_OPT_RETRIES, "--retries", NULL, "N", "re-sends after 429/5xx/connection loss/timeouts (default 3)"},
    {CLI_OPT_API_SPEC_TOKENS, "--api-spec-tokens", NULL, "N",
     "speculative execution on chat-only APIs: a run of gens that\n"
     "ends an assistant turn costs one call of up to N tokens (no\n"
     "stops); the gens are filled by matching the template text"},
    {CLI_OPT_CHAT_TEMPLATE, "--chat-template", NULL, "NAME",
     "chat template family (chatml, llama-3, llama-2, plain) when no\n"
     "--model is given (default chatml; with --model, the model file's);\n"
     "generate uses it instead of the model's and renders every\n"
     "prompt with it"},
    {0},
};

static void add_spec(const char *cmd, cli_backend *b, const char *spec) {
    if (b->n_specs >= CLI_MAX_BACKENDS) {
        fprintf(stderr, "sglc %s: error: at most %d backends\n", cmd, CLI_MAX_BACKENDS);
        exit(CLI_EXIT_USAGE);
    }
    b->specs[b->n_specs++] = spec;
}

bool cli_backend_set(const char *cmd, int id, const char *v, cli_backend *b) {
    switch (id) {
    case CLI_OPT_BACKEND:
        add_spec(cmd, b, v);
        break;
    case CLI_OPT_BACKENDS: {
        size_t len = 0;
        char *text = cli_read_input(cmd, v, 0, &len);
        if (!text) exit(CLI_EXIT_USAGE);
        if (b->n_files < CLI_MAX_BACKENDS) b->files[b->n_files++] = text;
        for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
            while (*line == ' ' || *line == '\t') line++;
            char *end = line + strlen(line);
            while (end > line && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r')) *--end = 0;
            if (*line && *line != '#') add_spec(cmd, b, line);
        }
        break;
    }
    case CLI_OPT_ROUTE:
#ifdef SGL_HAVE_REMOTE
        if (sgl_route_policy_parse(v, &b->cfg.policy) < 0) {
            fprintf(stderr, "sglc %s: error: --route: expected prefix or round_robin, got '%s'\n", cmd, v);
            exit(CLI_EXIT_USAGE);
        }
#endif
        break;
    case CLI_OPT_API_MODEL:
        b->cfg.api_model = v;
        break;
    case CLI_OPT_API_KEY_ENV:
        b->cfg.api_key_env = v;
        break;
    case CLI_OPT_REQUEST_TIMEOUT:
        b->cfg.timeout_s = cli_parse_double(cmd, "--request-timeout", v, 0.01, 86400);
        break;
    case CLI_OPT_RETRIES:
        b->cfg.max_retries = (int)cli_parse_long(cmd, "--retries", v, 0, 100);
        break;
    case CLI_OPT_API_SPEC_TOKENS:
        b->api_spec_tokens = (int)cli_parse_long(cmd, "--api-spec-tokens", v, 0, 1 << 20);
        break;
    case CLI_OPT_CHAT_TEMPLATE:
        b->chat_template = v;
        break;
    default:
        return false;
    }
    return true;
}

bool cli_backend_apply(const char *cmd, cli_backend *b, vm_session_opts *so) {
    if (!b->n_specs) return false;
#ifndef SGL_HAVE_REMOTE
    fprintf(stderr, "sglc %s: --backend needs libcurl, which this build of sglc lacks\n", cmd);
    exit(2);
#else
    for (int k = 0; k < b->n_specs; k++) {
        sgl_remote_kind kind;
        const char *url;
        sgl_error err = {{0}};
        if (sgl_remote_parse_spec(b->specs[k], &kind, &url, &err) < 0) {
            fprintf(stderr, "sglc %s: %s\n", cmd, err.msg);
            exit(2);
        }
    }
    b->cfg.specs = b->specs;
    b->cfg.n_specs = b->n_specs;
    if (so) {
        so->remote = &b->cfg;
        so->chat_template = b->chat_template;
        so->api_spec_tokens = b->api_spec_tokens;
    }
    return true;
#endif
}

sgl_engine *cli_backend_router(const char *cmd, cli_backend *b, const char *policy, sgl_error *err) {
#ifdef SGL_HAVE_REMOTE
    if (policy && sgl_route_policy_parse(policy, &b->cfg.policy) < 0) {
        fprintf(stderr, "sglc %s: --policy must be cache_aware or round_robin with --backend, not '%s'\n", cmd, policy);
        exit(2);
    }
    cli_backend_apply(cmd, b, NULL);
    return sgl_engine_remote_new(&b->cfg, err);
#else
    (void)b, (void)policy, (void)err;
    fprintf(stderr, "sglc %s: --backend needs libcurl, which this build of sglc lacks\n", cmd);
    exit(2);
#endif
}

void cli_backend_stats(const sgl_engine *e, FILE *out) {
#ifdef SGL_HAVE_REMOTE
    sgl_remote_endpoint_stats st[CLI_MAX_BACKENDS];
    int n = sgl_remote_stats(e, st, CLI_MAX_BACKENDS);
    int64_t req = 0, pt = 0, ct = 0;
    for (int i = 0; i < n && i < CLI_MAX_BACKENDS; i++) {
        fprintf(out, "endpoint %s: %lld requests, %lld failed attempts, %lld retries; prompt %lld tokens, ",
                st[i].url, (long long)st[i].requests, (long long)st[i].failures, (long long)st[i].retries,
                (long long)st[i].prompt_tokens);
        if (st[i].reports_cached)
            fprintf(out, "%lld cached (hit rate %.1f%%)", (long long)st[i].cached_tokens,
                    st[i].prompt_tokens ? 100.0 * (double)st[i].cached_tokens / (double)st[i].prompt_tokens : 0.0);
        else
            fputs("cached tokens not reported", out);
        fprintf(out, "; %s\n", st[i].up ? "up" : "out of rotation");
        req += st[i].requests;
        pt += st[i].prompt_tokens;
        ct += st[i].cached_tokens;
    }
    if (n > 1)
        fprintf(out, "endpoints: %lld requests, prompt %lld tokens, %lld cached (hit rate %.1f%%)\n", (long long)req,
                (long long)pt, (long long)ct, pt ? 100.0 * (double)ct / (double)pt : 0.0);
#else
    (void)e;
    (void)out;
#endif
}

int cli_backend_check(const vm_script *sc, const vm_session *s, FILE *out) {
    sgl_engine_caps caps;
    sgl_engine_caps_get(s->engine, &caps);
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    if (!mem) return 0;
    int n = vm_caps_check_module(sc->mod, &caps, s->backend, mem);
    fclose(mem);
    for (char *line = buf, *nl; line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        if (nl) *nl = 0;
        vm_script_print_error(sc, line, out);
    }
    free(buf);
    return n;
}

void cli_backend_free(cli_backend *b) {
    for (int i = 0; i < b->n_files; i++) free(b->files[i]);
    b->n_files = 0;
}
