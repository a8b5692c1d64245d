/* bench_jump_forward: end-to-end JSON decoding through the local engine on
 * the default model, jump-forward on vs off, in the same run (not a test).
 *
 *   bench_jump_forward [--model PATH] [--threads N] [--requests N] [--max-tokens N]
 *                      [--batch N] [--reps N] [--json]
 *
 * Each mode submits the same requests at once (greedy, one of eight JSON
 * schemas each, a fresh engine with the cache off so neither mode reuses the
 * other's prompts) and waits for all: wall time, completion tokens/s,
 * requests/s, the share of output tokens appended by jump-forward, forward
 * calls, and how many outputs validate (a complete match of the schema).
 * Also the process CPU time of each mode (all threads; on a machine shared
 * with other work the wall time swings, the CPU time much less) and
 * requests per CPU second. "Tokens run" counts every token the model
 * computed (prompts included): jump-forward saves forward calls and the
 * output layer of forced tokens, not their KV, so where a batch is
 * compute-bound (a large batch on a CPU) the gain follows tokens run, not
 * forward calls. Modes alternate off/on for --reps rounds; the
 * best round of each (by wall time, and by CPU time) is reported with the
 * on/off ratios. A third mode runs the same prompts
 * unconstrained (ignore_eos, as many tokens as the constrained run made) to
 * show the plain decode speed next to it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/bench_util.h"
#include "runtime/constrain/constrain.h"
#include "runtime/engine.h"
#include "util/util.h"

static const char *const schemas[] = {
    "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":20},"
    "\"age\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":120},\"email\":{\"type\":\"string\","
    "\"format\":\"email\"}},\"required\":[\"name\",\"age\",\"email\"],\"additionalProperties\":false}",
    "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\",\"maxLength\":20},"
    "\"country\":{\"type\":\"string\",\"maxLength\":20},\"population\":{\"type\":\"integer\"},"
    "\"is_capital\":{\"type\":\"boolean\"}},\"required\":[\"city\",\"country\",\"population\","
    "\"is_capital\"],\"additionalProperties\":false}",
    "{\"type\":\"object\",\"properties\":{\"title\":{\"type\":\"string\",\"maxLength\":30},"
    "\"author\":{\"type\":\"string\",\"maxLength\":20},\"year\":{\"type\":\"integer\",\"minimum\":1000,"
    "\"maximum\":2100},\"genre\":{\"enum\":[\"fiction\",\"non-fiction\",\"poetry\",\"drama\"]}},"
    "\"required\":[\"title\",\"author\",\"year\",\"genre\"],\"additionalProperties\":false}",
    "{\"type\":\"object\",\"properties\":{\"product\":{\"type\":\"string\",\"maxLength\":20},"
    "\"price\":{\"type\":\"number\",\"minimum\":0},\"currency\":{\"enum\":[\"USD\",\"EUR\",\"GBP\"]},"
    "\"in_stock\":{\"type\":\"boolean\"}},\"required\":[\"product\",\"price\",\"currency\","
    "\"in_stock\"],\"additionalProperties\":false}",
    "{\"type\":\"object\",\"properties\":{\"event\":{\"type\":\"string\",\"maxLength\":24},"
    "\"date\":{\"type\":\"string\",\"format\":\"date\"},\"location\":{\"type\":\"object\","
    "\"properties\":{\"city\":{\"type\":\"string\",\"maxLength\":16},\"venue\":{\"type\":\"string\","
    "\"maxLength\":16}},\"required\":[\"city\",\"venue\"],\"additionalProperties\":false}},"
    "\"required\":[\"event\",\"date\",\"location\"],\"additionalProperties\":false}",
    "{\"type\":\"object\",\"properties\":{\"username\":{\"type\":\"string\",\"maxLength\":16},"
    "\"roles\":{\"type\":\"array\",\"items\":{\"enum\":[\"admin\",\"editor\",\"viewer\"]},"
    "\"minItems\":1,\"maxItems\":3},\"active\":{\"type\":\"boolean\"}},\"required\":[\"username\","
    "\"roles\",\"active\"],\"additionalProperties\":false}",
    "{\"type\":\"object\",\"properties\":{\"recipe\":{\"type\":\"string\",\"maxLength\":24},"
    "\"servings\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":12},\"vegetarian\":{\"type\":"
    "\"boolean\"},\"difficulty\":{\"enum\":[\"easy\",\"medium\",\"hard\"]}},\"required\":[\"recipe\","
    "\"servings\",\"vegetarian\",\"difficulty\"],\"additionalProperties\":false}",
    "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\",\"format\":\"uuid\"},"
    "\"status\":{\"enum\":[\"pending\",\"shipped\",\"delivered\"]},\"items\":{\"type\":\"integer\","
    "\"minimum\":1,\"maximum\":99}},\"required\":[\"id\",\"status\",\"items\"],"
    "\"additionalProperties\":false}",
};
static const char *const topics[] = {"a person", "a city", "a book", "a product",
                                     "a concert", "a user account", "a recipe", "an order"};
enum { N_SCHEMAS = sizeof schemas / sizeof schemas[0] };

typedef struct mode_res {
    double wall, tok_s, req_s, forced_frac;
    double cpu, req_cpu_s;             /* process CPU seconds, requests per CPU second */
    int64_t tokens, forced, forwards, fwd_tokens;
    int valid, n;
} mode_res;

typedef struct bench {
    const char *model;
    int threads, n_req, max_tokens, batch;
    char (*prompts)[512];
} bench;

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* kind: 0 JSON jump-forward off, 1 on, 2 unconstrained (tokens_each new tokens). */
static int run_mode(const bench *b, int kind, int tokens_each, mode_res *out) {
    sgl_engine_config c = sgl_engine_config_default();
    c.model_path = b->model;
    c.n_threads = b->threads;
    c.max_running = b->batch;
    c.cache_off = true;
    sgl_error err;
    sgl_engine *e = sgl_engine_local_new(&c, &err);
    if (!e) {
        fprintf(stderr, "bench_jump_forward: %s\n", err.msg);
        return -1;
    }
    cons_program *progs[N_SCHEMAS];
    for (int i = 0; i < N_SCHEMAS; i++) {
        cons_diag d;
        progs[i] = cons_compile(CONS_JSON_SCHEMA, schemas[i], strlen(schemas[i]), NULL, &d);
        if (!progs[i]) {
            fprintf(stderr, "bench_jump_forward: schema %d: %s (at %s)\n", i, d.message, d.pointer);
            return -1;
        }
    }
    memset(out, 0, sizeof *out);
    double c0 = cpu_now(), t0 = sgl_now();
    for (int i = 0; i < b->n_req; i++) {
        sgl_request rq = {0};
        rq.kind = SGL_REQ_GENERATE;
        rq.text = b->prompts[i];
        rq.user_tag = (uint64_t)i;
        rq.params = sgl_sampling_params_default();
        rq.params.temperature = 0;
        rq.params.max_new_tokens = b->max_tokens;
        if (kind < 2) {
            rq.params.json_schema = schemas[i % N_SCHEMAS];
            rq.params.jump_forward = kind == 1;
        } else {
            rq.params.max_new_tokens = tokens_each;
            rq.params.ignore_eos = true;
        }
        if (!sgl_engine_submit(e, &rq, &err)) {
            fprintf(stderr, "bench_jump_forward: submit: %s\n", err.msg);
            return -1;
        }
    }
    for (int got = 0; got < b->n_req;) {
        sgl_result *r = sgl_engine_wait(e, -1);
        if (!r) continue;
        got++;
        out->n++;
        out->tokens += r->completion_tokens;
        out->forced += r->forced_tokens;
        if (kind < 2 && r->finish == SGL_FINISH_STOP &&
            cons_program_match(progs[r->user_tag % N_SCHEMAS], r->text, r->text_len) == 1)
            out->valid++;
        if (r->finish == SGL_FINISH_ABORT) fprintf(stderr, "  request failed: %s\n", r->error);
        sgl_result_free(r);
    }
    out->wall = sgl_now() - t0;
    out->cpu = cpu_now() - c0;
    out->req_cpu_s = out->cpu > 0 ? out->n / out->cpu : 0;
    sgl_engine_metrics m;
    sgl_engine_metrics_get(e, &m);
    out->forwards = m.forward_calls;
    out->fwd_tokens = m.forward_tokens;
    out->tok_s = (double)out->tokens / out->wall;
    out->req_s = (double)out->n / out->wall;
    out->forced_frac = out->tokens ? (double)out->forced / (double)out->tokens : 0;
    for (int i = 0; i < N_SCHEMAS; i++) cons_program_release(progs[i]);
    sgl_engine_free(e);
    return 0;
}

static void print_mode(const char *name, const mode_res *r) {
    printf("%-22s %3d req  %5lld tokens (%5.1f%% forced)  %6.2f s  %7.1f tokens/s  %6.2f req/s  "
           "%4lld forwards (%5lld tokens run)  CPU %6.2f s (%.3f req/CPU-s)",
           name, r->n, (long long)r->tokens, 100.0 * r->forced_frac, r->wall, r->tok_s, r->req_s,
           (long long)r->forwards, (long long)r->fwd_tokens, r->cpu, r->req_cpu_s);
    if (strncmp(name, "unconstrained", 13)) printf("  %d/%d valid", r->valid, r->n);
    printf("\n");
}

int main(int argc, char **argv) {
    const char *path = bench_model_path();
    bench b = {path, 2, 16, 128, 16, NULL};
    int reps = 2;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) b.model = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) b.threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--requests") && i + 1 < argc) b.n_req = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--max-tokens") && i + 1 < argc) b.max_tokens = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) b.batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--json")) json = true;
        else {
            fprintf(stderr,
                    "usage: bench_jump_forward [--model PATH] [--threads N] [--requests N] "
                    "[--max-tokens N] [--batch N] [--reps N] [--json]\n");
            return 2;
        }
    }
    if (b.n_req < 1 || b.max_tokens < 1 || b.batch < 1 || reps < 1) {
        fprintf(stderr, "bench_jump_forward: counts must be >= 1\n");
        return 2;
    }
    b.prompts = calloc((size_t)b.n_req, sizeof *b.prompts);
    if (!b.prompts) return 1;
    for (int i = 0; i < b.n_req; i++)
        snprintf(b.prompts[i], sizeof b.prompts[i],
                 "<|im_start|>user\nDescribe %s (example %d) as a JSON object.<|im_end|>\n"
                 "<|im_start|>assistant\n",
                 topics[i % N_SCHEMAS], i / N_SCHEMAS + 1);
    printf("bench_jump_forward: %s, %d threads, %d requests (%d schemas), max %d tokens, batch %d\n",
           b.model, b.threads, b.n_req, N_SCHEMAS, b.max_tokens, b.batch);
    mode_res best[3], best_cpu[2];
    memset(best, 0, sizeof best);
    memset(best_cpu, 0, sizeof best_cpu);
    for (int r = 0; r < reps; r++)
        for (int kind = 0; kind < 2; kind++) {
            mode_res m;
            if (run_mode(&b, kind, 0, &m) < 0) return 1;
            print_mode(kind ? "json jump-forward on" : "json jump-forward off", &m);
            if (best[kind].n == 0 || m.wall < best[kind].wall) best[kind] = m;
            if (best_cpu[kind].n == 0 || m.cpu < best_cpu[kind].cpu) best_cpu[kind] = m;
        }
    int each = (int)(best[0].tokens / b.n_req);
    if (each < 1) each = 1;
    if (run_mode(&b, 2, each, &best[2]) < 0) return 1;
    print_mode("unconstrained", &best[2]);
    double rq = best[0].req_s > 0 ? best[1].req_s / best[0].req_s : 0;
    double tk = best[0].tok_s > 0 ? best[1].tok_s / best[0].tok_s : 0;
    double rc = best_cpu[0].req_cpu_s > 0 ? best_cpu[1].req_cpu_s / best_cpu[0].req_cpu_s : 0;
    double fw = best[1].forwards > 0 ? (double)best[0].forwards / (double)best[1].forwards : 0;
    double ft = best[1].fwd_tokens > 0 ? (double)best[0].fwd_tokens / (double)best[1].fwd_tokens : 0;
    printf("best of %d: jump-forward on/off: requests/s x%.2f, tokens/s x%.2f (wall); requests per "
           "CPU second x%.2f; forwards x%.2f fewer, tokens run x%.2f fewer; %.1f%% of JSON tokens "
           "forced; unconstrained %.1f tokens/s vs constrained (off) %.1f\n",
           reps, rq, tk, rc, fw, ft, 100.0 * best[1].forced_frac, best[2].tok_s, best[0].tok_s);
    if (json)
        printf("{\"off\":{\"tokens_s\":%.2f,\"requests_s\":%.3f,\"valid\":%d},"
               "\"on\":{\"tokens_s\":%.2f,\"requests_s\":%.3f,\"forced_frac\":%.4f,\"valid\":%d},"
               "\"unconstrained\":{\"tokens_s\":%.2f},\"ratio_requests_s\":%.3f,\"ratio_tokens_s\":%.3f,"
               "\"ratio_requests_cpu_s\":%.3f}\n",
               best[0].tok_s, best[0].req_s, best[0].valid, best[1].tok_s, best[1].req_s,
               best[1].forced_frac, best[1].valid, best[2].tok_s, rq, tk, rc);
    free(b.prompts);
    cons_cache_clear();
    return 0;
}
