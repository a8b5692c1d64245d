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

static void usage(FILE *out) {
    fprintf(out,
            "usage: sglc serve [--model PATH] [--host 127.0.0.1] [--port 30000] [options]\n\n"
            "Serves the local engine over HTTP: OpenAI (/v1/completions, /v1/chat/completions,\n"
            "/v1/models), SGLang (/generate, /get_model_info, /get_server_info, /flush_cache,\n"
            "/health, /health_generate), Anthropic (/v1/messages), SGL programs\n"
            "(/v1/programs/run) and Prometheus metrics (/metrics). See docs/server.md.\n\n"
            "options:\n"
            "  --model PATH            GGUF model (default: $SGL_MODEL or models/%s)\n"
            "  --host ADDR             IPv4 address to bind (default 127.0.0.1: loopback only)\n"
            "  --port N                TCP port (default 30000; 0 = any free port, printed)\n"
            "  --api-key KEY           require 'Authorization: Bearer KEY' on every route but /health\n"
            "  --threads N             CPU threads (default: all cores)\n"
            "  --max-body BYTES        larger request bodies get 413 (default 8388608)\n"
            "  --allow-io              let /v1/programs/run use read_file, write_file, http_*, shell\n"
            "  --programs DIR          /v1/programs/run may name a file under DIR\n"
            "  --shutdown-timeout S    seconds in-flight requests get at shutdown (default 10)\n"
            "engine:\n"
            "  --kv-tokens N           KV pool size in tokens, cache included (default: 256 MiB)\n"
            "  --chunked-prefill N     prompt tokens per request per forward (default 512; 0 = whole)\n"
            "  --policy lpm|fcfs       waiting-queue order (default lpm: longest cached prefix first)\n"
            "  --max-running N         running requests at once (default 64)\n"
            "  --no-cache              no radix cache: every prompt computed afresh\n"
            "router (no model loaded; requests forwarded to workers):\n"
            "  --backend sglang:URL    a worker (repeat it; or --backends FILE, one a line)\n"
            "  --policy cache_aware|round_robin  how requests pick a worker (default\n"
            "                          cache_aware: longest prompt prefix sent there before)\n"
            "  --request-timeout S, --retries N  per forwarded request (defaults 120, 3)\n",
            SGL_DEFAULT_MODEL_FILE);
}

int cmd_serve(int argc, char **argv) {
    const char *cmd = "serve", *v, *model = NULL, *policy = NULL;
    cli_backend b;
    cli_backend_init(&b);
    sgl_server_config sc = sgl_server_config_default();
    sgl_engine_config ec = sgl_engine_config_default();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--allow-io")) {
            sc.allow_io = true;
        } else if (!strcmp(a, "--no-cache")) {
            ec.cache_off = true;
        } else if (cli_opt(argc, argv, &i, "--model", &v)) {
            model = v;
        } else if (cli_opt(argc, argv, &i, "--host", &v)) {
            sc.host = v;
        } else if (cli_opt(argc, argv, &i, "--port", &v)) {
            sc.port = (int)cli_parse_long(cmd, "--port", v, 0, 65535);
        } else if (cli_opt(argc, argv, &i, "--api-key", &v)) {
            if (!*v) {
                fprintf(stderr, "sglc serve: error: --api-key needs a non-empty key\n");
                return 2;
            }
            sc.api_key = v;
        } else if (cli_opt(argc, argv, &i, "--threads", &v)) {
            ec.n_threads = (int)cli_parse_long(cmd, "--threads", v, 0, 256);
        } else if (cli_opt(argc, argv, &i, "--max-body", &v)) {
            sc.max_body = (size_t)cli_parse_long(cmd, "--max-body", v, 64, 1L << 34);
        } else if (cli_opt(argc, argv, &i, "--programs", &v)) {
            struct stat stt;
            if (stat(v, &stt) != 0 || !S_ISDIR(stt.st_mode)) {
                fprintf(stderr, "sglc serve: error: --programs: '%s' is not a directory\n", v);
                return 2;
            }
            sc.programs_dir = v;
        } else if (cli_opt(argc, argv, &i, "--shutdown-timeout", &v)) {
            sc.shutdown_grace_s = cli_parse_double(cmd, "--shutdown-timeout", v, 0, 3600);
        } else if (cli_opt(argc, argv, &i, "--kv-tokens", &v)) {
            ec.kv_slots = (int32_t)cli_parse_long(cmd, "--kv-tokens", v, 16, 1L << 30);
        } else if (cli_opt(argc, argv, &i, "--chunked-prefill", &v)) {
            ec.chunk_size = (int32_t)cli_parse_long(cmd, "--chunked-prefill", v, 0, 1L << 30);
        } else if (cli_opt(argc, argv, &i, "--max-running", &v)) {
            ec.max_running = (int32_t)cli_parse_long(cmd, "--max-running", v, 1, 4096);
        } else if (cli_opt(argc, argv, &i, "--policy", &v)) {
            policy = v;
        } else if (cli_backend_opt(cmd, argc, argv, &i, &b)) {
        } else {
            fprintf(stderr, "sglc serve: error: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    bool router = b.n_specs > 0;
    if (policy && !router && sgl_sched_policy_parse(policy, &ec.policy) < 0) {
        fprintf(stderr, "sglc serve: error: --policy must be lpm or fcfs, not '%s'\n", policy);
        return 2;
    }
    char *path = router ? NULL : cli_model_path(model);
    if (!path && !router) return 2;

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
        return 1;
    }
    sc.model_path = path;
    sgl_server *s = sgl_server_start(&sc, e, &err);
    if (!s) {
        fprintf(stderr, "sglc serve: error: %s\n", err.msg);
        sgl_engine_free(e);
        free(path);
        return 1;
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
