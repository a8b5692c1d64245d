/* cmd_generate: `sglc generate`: one prompt through the local model, the
 * continuation streamed to stdout as it is produced. A single request, so
 * this drives model_forward directly over a KV pool sized for prompt + max
 * tokens (the engine and its scheduler serve many requests at once). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "runtime/chat_template.h"
#include "runtime/model.h"
#include "runtime/sampler.h"
#include "runtime/tokenizer.h"
#include "util/util.h"

/* Prefill is split into chunks of this many tokens (bounds scratch memory). */
#define GEN_PREFILL_CHUNK 512

static void usage(FILE *out) {
    fprintf(out,
            "usage: sglc generate [--model PATH] --prompt TEXT [options]\n\n"
            "Generates a continuation of TEXT with the local model and streams it to stdout.\n\n"
            "options:\n"
            "  --model PATH          GGUF model (default: $SGL_MODEL or models/%s)\n"
            "  --prompt TEXT         the prompt (required)\n"
            "  --chat                wrap the prompt in the model's chat template as a user turn\n"
            "  --system TEXT         system message (with --chat)\n"
            "  --max-tokens N        most tokens to generate (default 256)\n"
            "  --temperature T       0 = greedy (default 0)\n"
            "  --top-p P             nucleus sampling (default 1 = off)\n"
            "  --top-k K             keep the K most likely tokens (default 0 = off)\n"
            "  --min-p P             drop tokens below P x the top probability (default 0 = off)\n"
            "  --repeat-penalty R    repetition penalty over prompt and output (default 1 = off)\n"
            "  --seed S              sampling seed (default: from the clock)\n"
            "  --threads N           CPU threads (default: all cores)\n"
            "  --stats               print token counts and speeds to stderr\n",
            SGL_DEFAULT_MODEL_FILE);
}

typedef struct gen_opts {
    const char *model, *prompt, *system;
    bool chat, stats, seed_given;
    long max_tokens, threads;
    sampler_params sp;
} gen_opts;

static void parse_args(int argc, char **argv, gen_opts *o) {
    const char *cmd = "generate", *v;
    o->sp = sampler_params_default();
    o->max_tokens = 256;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "--chat")) {
            o->chat = true;
        } else if (!strcmp(a, "--stats")) {
            o->stats = true;
        } else if (cli_opt(argc, argv, &i, "--model", &v)) {
            o->model = v;
        } else if (cli_opt(argc, argv, &i, "--prompt", &v)) {
            o->prompt = v;
        } else if (cli_opt(argc, argv, &i, "--system", &v)) {
            o->system = v;
        } else if (cli_opt(argc, argv, &i, "--max-tokens", &v)) {
            o->max_tokens = cli_parse_long(cmd, "--max-tokens", v, 0, 1 << 20);
        } else if (cli_opt(argc, argv, &i, "--temperature", &v)) {
            o->sp.temperature = (float)cli_parse_double(cmd, "--temperature", v, 0, 100);
        } else if (cli_opt(argc, argv, &i, "--top-p", &v)) {
            o->sp.top_p = (float)cli_parse_double(cmd, "--top-p", v, 0, 1);
        } else if (cli_opt(argc, argv, &i, "--top-k", &v)) {
            o->sp.top_k = (int32_t)cli_parse_long(cmd, "--top-k", v, 0, 1 << 30);
        } else if (cli_opt(argc, argv, &i, "--min-p", &v)) {
            o->sp.min_p = (float)cli_parse_double(cmd, "--min-p", v, 0, 1);
        } else if (cli_opt(argc, argv, &i, "--repeat-penalty", &v)) {
            o->sp.repetition_penalty = (float)cli_parse_double(cmd, "--repeat-penalty", v, 0.01, 100);
        } else if (cli_opt(argc, argv, &i, "--seed", &v)) {
            o->sp.seed = (uint64_t)cli_parse_long(cmd, "--seed", v, 0, 0x7fffffffffffffffL);
            o->seed_given = true;
        } else if (cli_opt(argc, argv, &i, "--threads", &v)) {
            o->threads = cli_parse_long(cmd, "--threads", v, 0, 256);
        } else {
            fprintf(stderr, "sglc generate: error: unknown option '%s'\n", a);
            usage(stderr);
            exit(2);
        }
    }
    if (!o->prompt) {
        fprintf(stderr, "sglc generate: error: --prompt TEXT is required\n");
        usage(stderr);
        exit(2);
    }
    if (o->system && !o->chat) {
        fprintf(stderr, "sglc generate: error: --system needs --chat\n");
        exit(2);
    }
    if (!o->seed_given) o->sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);
    o->sp.penalize_prompt = true; /* --repeat-penalty: over prompt and output, as llama.cpp */
}

/* Builds the prompt's token ids (malloc'd into *ids). */
static int encode_prompt(const gen_opts *o, const sgl_model *m, const sgl_tokenizer *tok,
                         int32_t **ids, size_t *n, sgl_error *err) {
    if (!o->chat)
        return tok_encode_ex(tok, o->prompt, strlen(o->prompt),
                             TOK_ENC_PARSE_SPECIAL | TOK_ENC_ADD_SPECIAL, ids, n, err);
    chat_template *ct = chat_template_from_gguf(model_get_gguf(m), tok, err);
    if (!ct) return -1;
    chat_msg msgs[2];
    size_t nm = 0;
    if (o->system) msgs[nm++] = (chat_msg){"system", o->system};
    msgs[nm++] = (chat_msg){"user", o->prompt};
    sgl_strbuf sb = {0};
    int rc = chat_render(ct, msgs, nm, true, &sb, err);
    chat_template_free(ct);
    if (!rc) rc = tok_encode(tok, sb.data ? sb.data : "", sb.len, true, ids, n, err);
    sgl_strbuf_free(&sb);
    return rc;
}

int cmd_generate(int argc, char **argv) {
    gen_opts o = {0};
    parse_args(argc, argv, &o);
    char *path = cli_model_path(o.model);
    if (!path) return 1;

    int status = 1;
    sgl_error err = {{0}};
    sgl_model *m = NULL;
    sgl_tokenizer *tok = NULL;
    kv_pool *kv = NULL;
    sampler_state *ss = NULL;
    int32_t *ids = NULL, *slots = NULL;
    float *logits = NULL;
    char *out = NULL;

    double t_load = sgl_now();
    m = model_load(path, (int)o.threads, &err);
    if (!m) goto fail;
    tok = tok_load_gguf(model_get_gguf(m), &err);
    if (!tok) goto fail;
    const model_config *cfg = model_get_config(m);
    size_t n_prompt = 0;
    if (encode_prompt(&o, m, tok, &ids, &n_prompt, &err)) goto fail;
    if (n_prompt == 0) {
        sgl_error_set(&err, "the prompt encodes to no tokens");
        goto fail;
    }
    size_t n_total = n_prompt + (size_t)o.max_tokens;
    if (n_total > INT32_MAX / 2) {
        sgl_error_set(&err, "prompt + --max-tokens too long");
        goto fail;
    }
    int32_t *grown = realloc(ids, sizeof(int32_t) * n_total);
    slots = malloc(sizeof(int32_t) * n_total);
    logits = malloc(sizeof(float) * (size_t)cfg->vocab);
    out = malloc(tok_stream_cap(tok));
    if (!grown || !slots || !logits || !out) {
        if (grown) ids = grown;
        sgl_error_set(&err, "out of memory");
        goto fail;
    }
    ids = grown;
    kv = model_kv_pool_new(m, (int32_t)n_total, &err);
    if (!kv) goto fail;
    if (kv_pool_alloc(kv, (int32_t)n_total, slots)) {
        sgl_error_set(&err, "KV pool: cannot take %zu slots", n_total);
        goto fail;
    }
    ss = sampler_state_new(cfg->vocab, o.sp.seed, &err);
    if (!ss) goto fail;
    sampler_state_add_prompt(ss, ids, (int32_t)n_prompt);
    t_load = sgl_now() - t_load;

    /* Prefill in chunks; logits only for the last prompt token. */
    double t0 = sgl_now();
    for (size_t p = 0; p < n_prompt; p += GEN_PREFILL_CHUNK) {
        int32_t n_new = (int32_t)SGL_MIN((size_t)GEN_PREFILL_CHUNK, n_prompt - p);
        bool last = p + (size_t)n_new == n_prompt;
        model_seq s = {.n_new = n_new, .tokens = ids + p, .pos0 = (int32_t)p,
                       .n_ctx = (int32_t)p + n_new, .slots = slots,
                       .logits_from = last ? n_new - 1 : n_new};
        model_batch b = {1, &s};
        if (model_forward(m, kv, &b, logits, &err)) goto fail;
    }
    double t_prefill = sgl_now() - t0;

    tok_stream ts;
    tok_stream_init(&ts, true);
    size_t n_gen = 0, cap = tok_stream_cap(tok);
    const char *finish = "length";
    t0 = sgl_now();
    while (n_gen < (size_t)o.max_tokens) {
        int32_t next = sampler_sample(ss, &o.sp, logits);
        if (tok_is_eog(tok, next)) {
            finish = "stop";
            break;
        }
        sampler_state_accept(ss, next);
        size_t pos = n_prompt + n_gen;
        ids[pos] = next;
        n_gen++;
        size_t k = tok_stream_feed(&ts, tok, next, out, cap);
        if (k) {
            fwrite(out, 1, k, stdout);
            fflush(stdout);
        }
        if (n_gen == (size_t)o.max_tokens) break;
        model_seq s = {.n_new = 1, .tokens = ids + pos, .pos0 = (int32_t)pos,
                       .n_ctx = (int32_t)pos + 1, .slots = slots, .logits_from = 0};
        model_batch b = {1, &s};
        if (model_forward(m, kv, &b, logits, &err)) goto fail;
    }
    double t_decode = sgl_now() - t0;
    size_t k = tok_stream_flush(&ts, out, cap);
    if (k) fwrite(out, 1, k, stdout);
    fputc('\n', stdout);
    fflush(stdout);

    if (o.stats) {
        /* Decode forwards = tokens generated after the first (the first comes
         * from the prefill's logits). */
        size_t n_dec = n_gen > 0 ? n_gen - (strcmp(finish, "length") ? 0 : 1) : 0;
        fprintf(stderr,
                "model: %s (%s, %d layers, dim %d, vocab %d), %d threads, load %.2f s\n"
                "prompt tokens: %zu, prefill %.3f s = %.1f tokens/s\n"
                "generated tokens: %zu (finish: %s), decode %.3f s = %.1f tokens/s\n"
                "seed: %llu\n",
                path, cfg->arch == MODEL_ARCH_QWEN2 ? "qwen2" : "llama", cfg->n_layers, cfg->dim,
                cfg->vocab, kern_pool_threads(model_get_pool(m)), t_load, n_prompt, t_prefill,
                t_prefill > 0 ? (double)n_prompt / t_prefill : 0.0, n_gen, finish, t_decode,
                t_decode > 0 ? (double)n_dec / t_decode : 0.0, (unsigned long long)o.sp.seed);
    }
    status = 0;
    goto done;
fail:
    fflush(stdout);
    fprintf(stderr, "sglc generate: error: %s\n", err.msg);
done:
    sampler_state_free(ss);
    kv_pool_free(kv);
    tok_free(tok);
    model_free(m);
    free(ids);
    free(slots);
    free(logits);
    free(out);
    free(path);
    return status;
}
