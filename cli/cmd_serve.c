/* cmd_serve: `sglc serve`: loads the model into the local engine and serves
 * it over HTTP (server/): OpenAI, SGLang-native and Anthropic routes,
 * program runs, metrics. With --backend, a router instead: the same routes
 * forwarded over worker servers (server/router.c). SIGINT / SIGTERM stop accepting, let in-flight
 * requests finish (aborting what is left after --shutdown-timeout) and
 * exit 0. Signals are blocked in every thread and taken by sigwait here.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "runtime/engine.h"
#include "server/server.h"

enum {
    O_MODEL = 1, O_HOST, O_PORT, O_API_KEY, O_THREADS, O_MAX_BODY, O_ALLOW_IO, O_PROGRAMS, O_SHUTDOWN_TIMEOUT,
    O_KV_TOKENS, O_CHUNKED_PREFILL, O_POLICY, O_MAX_RUNNING, O_NO_CACHE,
};

static const cli_option serve_options[] = {
    {O_MODEL, "--model", NULL, "PATH", CLI_MODEL_HELP},
    {O_HOST, "--host", NULL, "ADDR", "IPv4 address to bind (default 127.0.0.1: loopback only)"},
    {O_PORT, "--port", NULL, "N", "TCP port (default 30000; 0 = any free port, printed)"},
    {O_API_KEY, "--api-key", NULL, "KEY", "require 'Authorization: Bearer KEY' on every route but /health"},
    {O_THREADS, "--threads", NULL, "N", "CPU threads (default: all cores)"},
    {O_MAX_BODY, "--max-body", NULL, "BYTES", "larger request bodies get 413 (default 8388608)"},
    {O_ALLOW_IO, "--allow-io", NULL, NULL, "let /v1/programs/run use read_file, write_file, http_*, shell"},
    {O_PROGRAMS, "--programs", NULL, "DIR", "/v1/programs/run may name a file under DIR"},
    {O_SHUTDOWN_TIMEOUT, "--shutdown-timeout", NULL, "S", "seconds in-flight requests get at shutdown (default 10)"},
    {0, NULL, NULL, NULL, "engine:"},
    {O_KV_TOKENS, "--kv-tokens", NULL, "N", "KV pool size in tokens, cache included (default: 256 MiB)"},
    {O_CHUNKED_PREFILL, "--chunked-prefill", NULL, "N", "prompt tokens per request per forward (default 512; 0 = whole)"},
    {O_POLICY, "--policy", NULL, "P",
     "local engine: lpm|fcfs, the waiting-queue order (default lpm:\n"
     "longest cached prefix first); router: cache_aware|round_robin,\n"
     "how requests pick a worker (default cache_aware)"},
    {O_MAX_RUNNING, "--max-running", NULL, "N", "running requests at once (default 64)"},
    {O_NO_CACHE, "--no-cache", NULL, NULL, "no radix cache: every prompt computed afresh"},
    {0},
};

static const cli_option *const serve_tables[] = {serve_options, cli_device_options, cli_backend_options, NULL};

static const cli_spec serve_spec = {
    .name = "serve",
    .synopsis = "sglc serve [options]",
    .about = "Serves the local engine over HTTP: OpenAI (/v1/completions, /v1/chat/completions,\n"
             "/v1/models), SGLang (/generate, /get_model_info, /get_server_info, /flush_cache,\n"
             "/health, /health_generate), Anthropic (/v1/messages), SGL programs\n"
             "(/v1/programs/run) and Prometheus metrics (/metrics). See docs/server.md.\n",
    .tables = serve_tables,
    .epilog = "Router (no model loaded; requests forwarded to workers): --backend sglang:URL\n"
              "(repeat it) or --backends FILE names the workers; --policy, --request-timeout\n"
              "and --retries apply per forwarded request.\n",
};

int cmd_serve(int argc, char **argv) {
    const char *cmd = "serve", *v, *model = NULL, *policy = NULL;
    cli_backend b;
    cli_backend_init(&b);
    sgl_server_config sc = sgl_server_config_default();
    sgl_engine_config ec = sgl_engine_config_default();
    cli_args a;
    cli_args_init(&a, &serve_spec, argc, argv);
    for (int id; (id = cli_next(&a)) != CLI_DONE;) {
        v = a.value;
        switch (id) {
        case O_ALLOW_IO: sc.allow_io = true; break;
        case O_NO_CACHE: ec.cache_off = true; break;
        case O_MODEL: model = v; break;
        case O_HOST: sc.host = v; break;
        case O_PORT: sc.port = (int)cli_parse_long(cmd, "--port", v, 0, 65535); break;
        case O_API_KEY:
            if (!*v) cli_usage_error(&a, "--api-key needs a non-empty key");
            sc.api_key = v;
            break;
        case O_THREADS: ec.n_threads = (int)cli_parse_long(cmd, "--threads", v, 0, 256); break;
        case O_MAX_BODY: sc.max_body = (size_t)cli_parse_long(cmd, "--max-body", v, 64, 1L << 34); break;
        case O_PROGRAMS: {
            struct stat stt;
            if (stat(v, &stt) != 0 || !S_ISDIR(stt.st_mode)) cli_usage_error(&a, "--programs: '%s' is not a directory", v);
            sc.programs_dir = v;
            break;
        }
        case O_SHUTDOWN_TIMEOUT: sc.shutdown_grace_s = cli_parse_double(cmd, "--shutdown-timeout", v, 0, 3600); break;
        case O_KV_TOKENS: ec.kv_slots = (int32_t)cli_parse_long(cmd, "--kv-tokens", v, 16, 1L << 30); break;
        case O_CHUNKED_PREFILL: ec.chunk_size = (int32_t)cli_parse_long(cmd, "--chunked-prefill", v, 0, 1L << 30); break;
        case O_MAX_RUNNING: ec.max_running = (int32_t)cli_parse_long(cmd, "--max-running", v, 1, 4096); break;
        case O_POLICY: policy = v; break;
        case CLI_OPERAND: cli_usage_error(&a, "unexpected argument '%s'", v);
        default:
            if (!cli_device_set(cmd, id, v)) cli_backend_set(cmd, id, v, &b);
        }
    }
    bool router = b.n_specs > 0;
    if (policy && !router && sgl_sched_policy_parse(policy, &ec.policy) < 0)
        cli_usage_error(&a, "--policy must be lpm or fcfs, not '%s'", policy);
    char *path = router ? NULL : cli_model_path(model);
    if (!path && !router) return CLI_EXIT_USAGE;

    /* Block the stop signals before any thread starts, so every thread
     * inherits the mask and sigwait below is the only taker. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    sgl_error err = {{0}};
    ec.model_path = path;
    double t0 = sgl_now();
    sgl_engine *e = router ? cli_backend_router(cmd, &b, policy, &err) : sgl_engine_local_new(&ec, &err);
    if (!e) {
        fprintf(stderr, "sglc serve: error: %s\n", err.msg);
        free(path);
        return CLI_EXIT_USAGE; /* the model cannot be loaded: a setup error */
    }
    sc.model_path = path;
    sgl_server *s = sgl_server_start(&sc, e, &err);
    if (!s) {
        fprintf(stderr, "sglc serve: error: %s\n", err.msg);
        sgl_engine_free(e);
        free(path);
        return CLI_EXIT_USAGE; /* cannot listen: a setup error */
    }
    if (router)
        fprintf(stderr, "sglc serve: routing over %d worker%s (%s); listening on http://%s:%d%s\n", b.n_specs,
                b.n_specs == 1 ? "" : "s", policy ? policy : "cache_aware",
                sc.host, sgl_server_port(s), sc.api_key ? " (API key required)" : "");
    else
        fprintf(stderr, "sglc serve: %s loaded in %.2f s; listening on http://%s:%d%s\n", path, sgl_now() - t0,
                sc.host, sgl_server_port(s), sc.api_key ? " (API key required)" : "");
    fflush(stderr);
    int sig = 0;
    sigwait(&stop, &sig);
    fprintf(stderr, "sglc serve: %s: stopping (in-flight requests get %.0f s)\n",
            sig == SIGINT ? "SIGINT" : "SIGTERM", sc.shutdown_grace_s);
    sgl_server_shutdown(s);
    sgl_server_free(s);
    sgl_engine_free(e);
    free(path);
    cli_backend_free(&b);
    fprintf(stderr, "sglc serve: stopped\n");
    return 0;
}
