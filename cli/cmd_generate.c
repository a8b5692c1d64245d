/* cmd_generate: `sglc generate`: prompts through the local engine
 * (sgl_engine_local_new: scheduler, radix cache, continuous batching). One
 * prompt is streamed to stdout as it is produced; several (--prompt given
 * more than once, or --prompts-file) are submitted together so they batch,
 * and their outputs are printed in order under "### prompt N" headers.
 * Prompts are tokenized here (with the engine's tokenizer) so --chat can
 * render the chat template without adding BOS twice. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "runtime/chat_template.h"
#include "runtime/engine.h"
#include "runtime/gguf.h"
#include "runtime/model.h"
#include "runtime/tokenizer.h"
#include "runtime/unicode.h"
#include "util/util.h"

enum {
    O_MODEL = 1, O_PROMPT, O_PROMPTS_FILE, O_CHAT, O_SYSTEM, O_MAX_TOKENS, O_STOP, O_TEMPERATURE,
    O_TOP_P, O_TOP_K, O_MIN_P, O_REPEAT_PENALTY, O_SEED, O_THREADS, O_STATS, O_IGNORE_EOS, O_LOGPROBS,
    O_REGEX, O_JSON_SCHEMA, O_GRAMMAR, O_CHOICE, O_JSON_WS, O_NO_JUMP_FORWARD, O_TOKEN_HEALING,
    O_KV_TOKENS, O_CHUNKED_PREFILL, O_POLICY, O_NO_CACHE,
};

static const cli_option gen_options[] = {
    {O_MODEL, "--model", NULL, "PATH", CLI_MODEL_HELP},
    {O_PROMPT, "--prompt", NULL, "TEXT", "a prompt (repeat for several)"},
    {O_PROMPTS_FILE, "--prompts-file", NULL, "FILE",
     "prompts one per line, after any --prompt (empty lines skipped;\n- reads standard input)"},
    {O_CHAT, "--chat", NULL, NULL,
     "wrap each prompt in the chat template as a user turn (the\n"
     "model's, or --chat-template NAME's)"},
    {O_SYSTEM, "--system", NULL, "TEXT", "system message (with --chat)"},
    {O_MAX_TOKENS, "--max-tokens", NULL, "N", "most tokens to generate per prompt (default 256)"},
    {O_STOP, "--stop", NULL, "TEXT", "stop before this text (repeatable; not printed)"},
    {O_IGNORE_EOS, "--ignore-eos", NULL, NULL, "do not stop at the end-of-sequence token (runs to --max-tokens)"},
    {O_TEMPERATURE, "--temperature", NULL, "T", "0 = greedy (default 0)"},
    {O_TOP_P, "--top-p", NULL, "P", "nucleus sampling (default 1 = off)"},
    {O_TOP_K, "--top-k", NULL, "K", "keep the K most likely tokens (default 0 = off)"},
    {O_MIN_P, "--min-p", NULL, "P", "drop tokens below P x the top probability (default 0 = off)"},
    {O_REPEAT_PENALTY, "--repeat-penalty", NULL, "R", "repetition penalty over prompt and output (default 1 = off)"},
    {O_SEED, "--seed", NULL, "S", "sampling seed, the same for every prompt (default: clock)"},
    {O_LOGPROBS, "--logprobs", NULL, "N",
     "after each output, one line per generated token: its logprob\n"
     "and the N most likely alternatives (0: the token's alone)"},
    {O_THREADS, "--threads", NULL, "N", "CPU threads (default: all cores)"},
    {O_STATS, "--stats", NULL, NULL,
     "print per-prompt figures and engine totals to stderr (with\n--backend: also one line per endpoint)"},
    {0, NULL, NULL, NULL, "constraints (docs/runtime.md; at most one):"},
    {O_REGEX, "--regex", NULL, "RE", "the output matches RE (docs/language.md regex dialect)"},
    {O_JSON_SCHEMA, "--json-schema", NULL, "S", "the output is JSON valid for schema S (JSON text, @FILE, or\n@- for standard input)"},
    {O_GRAMMAR, "--grammar", NULL, "G", "the output matches the EBNF/GBNF grammar G (text, @FILE, or\n@- for standard input)"},
    {O_CHOICE, "--choice", NULL, "TEXT", "the output is one of the --choice texts (repeatable)"},
    {O_JSON_WS, "--json-ws", NULL, "N", "JSON: allow whitespace runs of up to N bytes (default 0:\ncompact)"},
    {O_NO_JUMP_FORWARD, "--no-jump-forward", NULL, NULL,
     "sample every token, even where the constraint allows one\ntext only"},
    {O_TOKEN_HEALING, "--token-healing", NULL, NULL,
     "back off the prompt's last token and let the first\ngenerated token start with its bytes"},
    {0, NULL, NULL, NULL, "engine:"},
    {O_KV_TOKENS, "--kv-tokens", NULL, "N", "KV pool size in tokens, cache included (default: 256 MiB)"},
    {O_CHUNKED_PREFILL, "--chunked-prefill", NULL, "N",
     "prompt tokens per request per forward (default 512;\n0 = whole prompts)"},
    {O_POLICY, "--policy", NULL, "lpm|fcfs|random",
     "waiting-queue order: longest cached prefix first (default)\n"
     "or arrival order (random: a seeded shuffle)"},
    {O_NO_CACHE, "--no-cache", NULL, NULL, "no radix cache: every prompt computed afresh"},
    {0},
};

static const cli_option *const gen_tables[] = {gen_options, cli_device_options, cli_backend_options, NULL};

static const cli_spec gen_spec = {
    .name = "generate",
    .synopsis = "sglc generate [options] (--prompt TEXT... | --prompts-file FILE | -- TEXT)",
    .about = "Generates a continuation of each prompt with the local engine. One prompt is\n"
             "streamed to stdout as it is produced; several are submitted at once (they batch\n"
             "and share cached prefixes) and printed in order, each after a '### prompt N' line.\n"
             "An operand is one more prompt (after `--` when it starts with '-').\n",
    .tables = gen_tables,
    .epilog = "With --backend, --model only supplies the chat template for --chat.\n",
};

typedef struct gen_opts {
    const char *model, *system, *prompts_file;
    const char **prompts;        /* [n_prompts] borrowed from argv or file_text */
    int n_prompts, cap_prompts;
    const char **stops;          /* [n_stops] borrowed from argv */
    int n_stops;
    char *file_text;             /* --prompts-file contents (owned) */
    char *cons_file;             /* @FILE contents of --json-schema / --grammar (owned) */
    const char **choices;        /* [n_choices] --choice texts, borrowed from argv */
    int n_choices, cap_choices;
    bool chat, stats, seed_given, no_cache;
    long max_tokens, threads, kv_tokens, chunk;
    sgl_sched_policy policy;
    sgl_sampling_params sp;
    cli_backend bk;
} gen_opts;

static void opts_free(gen_opts *o) {
    cli_backend_free(&o->bk);
    free(o->prompts);
    free(o->stops);
    free(o->file_text);
    free(o->cons_file);
    free(o->choices);
}

static void push_str(const char ***v, int *n, int *cap, const char *s) {
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 8;
        const char **nv = realloc(*v, sizeof(char *) * (size_t)*cap);
        if (!nv) {
            fprintf(stderr, "sglc generate: error: out of memory\n");
            exit(1);
        }
        *v = nv;
    }
    (*v)[(*n)++] = s;
}

/* Appends the non-empty lines of --prompts-file (a trailing \r dropped). */
static void read_prompts_file(gen_opts *o) {
    size_t len = 0;
    o->file_text = cli_read_input("generate", o->prompts_file, 0, &len);
    if (!o->file_text) exit(CLI_EXIT_ERROR);
    char *p = o->file_text, *end = o->file_text + len;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *e = nl ? nl : end;
        if (e > p && e[-1] == '\r') e--;
        *e = '\0';
        if (e > p) push_str(&o->prompts, &o->n_prompts, &o->cap_prompts, p);
        p = nl ? nl + 1 : end;
    }
}

/* A constraint option's text: v itself, or the contents of FILE for @FILE. */
static const char *cons_text(gen_opts *o, const char *v) {
    if (v[0] != '@') return v;
    if (o->cons_file) {
        fprintf(stderr, "sglc generate: error: only one constraint may come from a file\n");
        exit(2);
    }
    size_t len = 0;
    if (!(o->cons_file = cli_read_input("generate", v + 1, 0, &len))) /* @-: standard input */
        exit(CLI_EXIT_ERROR);
    return o->cons_file;
}

static void parse_args(int argc, char **argv, gen_opts *o) {
    const char *cmd = "generate", *v;
    int cap_stops = 0;
    o->sp = sgl_sampling_params_default();
    o->sp.temperature = 0;
    o->sp.top_k = 0;
    o->max_tokens = 256;
    o->chunk = -1;
    o->policy = SGL_SCHED_LPM;
    cli_backend_init(&o->bk);
    cli_args a;
    cli_args_init(&a, &gen_spec, argc, argv);
    for (int id; (id = cli_next(&a)) != CLI_DONE;) {
        v = a.value;
        switch (id) {
        case O_CHAT: o->chat = true; break;
        case O_STATS: o->stats = true; break;
        case O_NO_CACHE: o->no_cache = true; break;
        case O_NO_JUMP_FORWARD: o->sp.jump_forward = false; break;
        case O_TOKEN_HEALING: o->sp.token_healing = true; break;
        case O_IGNORE_EOS: o->sp.ignore_eos = true; break;
        case O_LOGPROBS:
            o->sp.return_logprob = true;
            o->sp.top_logprobs_num = (int32_t)cli_parse_long(cmd, "--logprobs", v, 0, 20);
            break;
        case O_REGEX: o->sp.regex = v; break;
        case O_JSON_SCHEMA: o->sp.json_schema = cons_text(o, v); break;
        case O_GRAMMAR: o->sp.grammar = cons_text(o, v); break;
        case O_CHOICE: push_str(&o->choices, &o->n_choices, &o->cap_choices, v); break;
        case O_JSON_WS:
            o->sp.json_ws_max = (int32_t)cli_parse_long(cmd, "--json-ws", v, 0, 64);
            o->sp.json_ws_flexible = o->sp.json_ws_max > 0;
            break;
        case O_MODEL: o->model = v; break;
        case O_PROMPT:
        case CLI_OPERAND: push_str(&o->prompts, &o->n_prompts, &o->cap_prompts, v); break;
        case O_PROMPTS_FILE: o->prompts_file = v; break;
        case O_SYSTEM: o->system = v; break;
        case O_STOP:
            if (!*v) cli_usage_error(&a, "--stop needs a non-empty text");
            push_str(&o->stops, &o->n_stops, &cap_stops, v);
            break;
        case O_MAX_TOKENS: o->max_tokens = cli_parse_long(cmd, "--max-tokens", v, 0, 1 << 20); break;
        case O_TEMPERATURE: o->sp.temperature = (float)cli_parse_double(cmd, "--temperature", v, 0, 100); break;
        case O_TOP_P: o->sp.top_p = (float)cli_parse_double(cmd, "--top-p", v, 0, 1); break;
        case O_TOP_K: o->sp.top_k = (int32_t)cli_parse_long(cmd, "--top-k", v, 0, 1 << 30); break;
        case O_MIN_P: o->sp.min_p = (float)cli_parse_double(cmd, "--min-p", v, 0, 1); break;
        case O_REPEAT_PENALTY:
            o->sp.repetition_penalty = (float)cli_parse_double(cmd, "--repeat-penalty", v, 0.01, 100);
            break;
        case O_SEED:
            o->sp.seed = (uint64_t)cli_parse_long(cmd, "--seed", v, 0, 0x7fffffffffffffffL);
            o->seed_given = true;
            break;
        case O_THREADS: o->threads = cli_parse_long(cmd, "--threads", v, 0, 256); break;
        case O_KV_TOKENS: o->kv_tokens = cli_parse_long(cmd, "--kv-tokens", v, 16, 1L << 30); break;
        case O_CHUNKED_PREFILL: o->chunk = cli_parse_long(cmd, "--chunked-prefill", v, 0, 1L << 30); break;
        case O_POLICY:
            if (sgl_sched_policy_parse(v, &o->policy) < 0)
                cli_usage_error(&a, "--policy must be lpm, fcfs or random, not '%s'", v);
            break;
        default:
            if (!cli_device_set(cmd, id, v)) cli_backend_set(cmd, id, v, &o->bk);
        }
    }
    if (o->bk.chat_template) {
        /* --chat-template NAME: a known family, and it implies --chat */
        sgl_error e = {{0}};
        chat_template *ct = chat_template_from_family(o->bk.chat_template, &e);
        if (!ct) cli_usage_error(&a, "--chat-template: %s", e.msg);
        chat_template_free(ct);
        o->chat = true;
    }
    if (o->prompts_file) read_prompts_file(o);
    if (o->n_prompts == 0 && o->prompts_file) cli_usage_error(&a, "%s holds no prompt", o->prompts_file);
    if (o->n_prompts == 0) cli_usage_error(&a, "--prompt TEXT is required");
    if (o->system && !o->chat) cli_usage_error(&a, "--system needs --chat");
    if (!o->seed_given) o->sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);
    o->sp.max_new_tokens = (int32_t)o->max_tokens;
    o->sp.penalize_prompt = true; /* --repeat-penalty: over prompt and output, as llama.cpp */
    o->sp.stop = o->stops;
    o->sp.n_stop = o->n_stops;
    o->sp.choices = o->choices;
    o->sp.n_choices = o->n_choices;
    if ((o->sp.regex != NULL) + (o->sp.json_schema != NULL) + (o->sp.grammar != NULL) +
            (o->n_choices > 0) > 1)
        cli_usage_error(&a, "give one of --regex, --json-schema, --grammar, --choice");
}

/* Builds one prompt's token ids (malloc'd into *ids). ct: the chat template
 * with --chat, else NULL. */
static int encode_prompt(const gen_opts *o, const char *prompt, const chat_template *ct,
                         const sgl_tokenizer *tok, int32_t **ids, size_t *n, sgl_error *err) {
    if (!ct)
        return tok_encode_ex(tok, prompt, strlen(prompt),
                             TOK_ENC_PARSE_SPECIAL | TOK_ENC_ADD_SPECIAL, ids, n, err);
    chat_msg msgs[2];
    size_t nm = 0;
    if (o->system) msgs[nm++] = (chat_msg){"system", o->system};
    msgs[nm++] = (chat_msg){"user", prompt};
    sgl_strbuf sb = {0};
    int rc = chat_render(ct, msgs, nm, true, &sb, err);
    if (!rc) rc = tok_encode(tok, sb.data ? sb.data : "", sb.len, true, ids, n, err);
    sgl_strbuf_free(&sb);
    return rc;
}

/* The start of a character cut between two streamed pieces (at most 3
 * bytes), written in front of the next piece. */
static char utf8_held[4];
static size_t utf8_n_held;

/* Writes s[0..n) to stdout as valid UTF-8: each maximal invalid part
 * becomes U+FFFD (uni_utf8_repair, as the tokenizer's stream decoder prints
 * it). more: the text goes on in a later call (a streamed partial result),
 * so an incomplete character at its end is held back for that call; a call
 * with more = false ends the text and replaces whatever is still held.
 * Written piece by piece, a text gives the same bytes as written whole. */
static void write_utf8(const char *s, size_t n, bool more) {
    size_t len = utf8_n_held + n;
    char *in = malloc(len ? len : 1), *out = malloc(len * 3 + 1);
    if (!in || !out) {
        free(in);
        free(out);
        return;
    }
    memcpy(in, utf8_held, utf8_n_held);
    if (n) memcpy(in + utf8_n_held, s, n);
    size_t held = 0;
    size_t m = uni_utf8_repair(in, len, out, more ? UNI_REPAIR_STREAM : 0, &held);
    fwrite(out, 1, m, stdout);
    memcpy(utf8_held, in + len - held, held);
    utf8_n_held = held;
    free(in);
    free(out);
}

/* What --stats reports per prompt. */
typedef struct gen_req {
    uint64_t id;
    double t_submit, t_first, t_done; /* t_first: first token (0 until then) */
    sgl_result *res;                  /* final result */
} gen_req;

static void print_request_stats(int idx, const gen_req *g) {
    const sgl_result *r = g->res;
    double t_first = g->t_first > 0 ? g->t_first : g->t_done;
    double prefill = t_first - g->t_submit, decode = g->t_done - t_first;
    int32_t computed = r->prompt_tokens - r->cached_tokens;
    int32_t n_dec = r->completion_tokens > 1 ? r->completion_tokens - 1 : 0;
    fprintf(stderr,
            "prompt %d: prompt tokens %d, cached tokens %d, completion tokens %d, "
            "forced tokens %d, prefill %.1f tokens/s (%d in %.3f s), decode %.1f tokens/s "
            "(%d in %.3f s), finish %s",
            idx + 1, r->prompt_tokens, r->cached_tokens, r->completion_tokens, r->forced_tokens,
            prefill > 0 ? (double)computed / prefill : 0.0, computed, prefill,
            decode > 0 ? (double)n_dec / decode : 0.0, n_dec, decode, sgl_finish_name(r->finish));
    if (r->stop_str) fprintf(stderr, " (stop string \"%s\")", r->stop_str);
    else if (r->finish == SGL_FINISH_STOP && r->stop_token >= 0)
        fprintf(stderr, " (token %d)", r->stop_token);
    fputc('\n', stderr);
}

static void print_engine_stats(sgl_engine *e) {
    sgl_engine_metrics m;
    sgl_engine_metrics_get(e, &m);
    fprintf(stderr,
            "engine: requests %lld, prompt tokens %lld, cached tokens %lld, hit rate %.1f%%, "
            "generated tokens %lld (%lld sampled, %lld forced), constrained requests %lld, "
            "forward calls %lld (%lld tokens)\n"
            "engine: running %d, waiting %d, evicted tokens %lld, retractions %lld, "
            "pool %d/%d slots used (%lld held by the cache)\n",
            (long long)m.requests_done, (long long)m.prompt_tokens, (long long)m.cached_tokens,
            100.0 * m.hit_rate, (long long)m.generated_tokens,
            (long long)(m.generated_tokens - m.forced_tokens), (long long)m.forced_tokens,
            (long long)m.constrained_requests, (long long)m.forward_calls,
            (long long)m.forward_tokens, m.running, m.waiting, (long long)m.evicted_tokens,
            (long long)m.retractions, m.pool_used, m.pool_slots, (long long)m.cache_tokens);
    if (m.device && strcmp(m.device, "cpu") != 0)
        fprintf(stderr, "engine: device %s, weights %.1f MiB, device memory %.1f MiB in all\n",
                m.device, m.device_weight_bytes / 1048576.0, m.device_bytes / 1048576.0);
    else if (m.device_weight_bytes)
        fprintf(stderr, "engine: device cpu, weights repacked at load %.1f MiB (the rest read "
                        "from the mapped file)\n", m.device_weight_bytes / 1048576.0);
}

/* --logprobs: one line per generated token, "logprob TOKEN: L  top: T1 L1, ..."
 * with the texts quoted as C strings. */
static void print_logprobs(const sgl_result *r) {
    for (int32_t i = 0; i < r->n_logprobs; i++) {
        const sgl_token_logprob *lp = &r->logprobs[i];
        if (lp->token < 0) continue;
        sgl_strbuf sb = {0};
        sgl_strbuf_printf(&sb, "logprob %d ", lp->token);
        vm_quote(&sb, lp->text ? lp->text : "", lp->text ? strlen(lp->text) : 0, 40);
        sgl_strbuf_printf(&sb, " %.4f", lp->logprob);
        for (int32_t k = 0; k < lp->n_top; k++) {
            sgl_strbuf_puts(&sb, k ? ", " : "  top: ");
            sgl_strbuf_printf(&sb, "%d ", lp->top_ids[k]);
            const char *tt = lp->top_texts && lp->top_texts[k] ? lp->top_texts[k] : "";
            vm_quote(&sb, tt, strlen(tt), 40);
            sgl_strbuf_printf(&sb, " %.4f", lp->top_logprobs[k]);
        }
        printf("%s\n", sb.data ? sb.data : "");
        sgl_strbuf_free(&sb);
    }
}

/* Prints result idx (one of several): header, text, its error if any.
 * Returns 0, or 1 when the request failed. */
static int print_one(int idx, const sgl_result *r) {
    printf("### prompt %d\n", idx + 1);
    write_utf8(r->text, r->text_len, false);
    fputc('\n', stdout);
    print_logprobs(r);
    fflush(stdout);
    if (r->finish != SGL_FINISH_ABORT) return 0;
    fprintf(stderr, "sglc generate: error: prompt %d: %s\n", idx + 1, r->error ? r->error : "aborted");
    return 1;
}

/* Waits for the n submitted prompts (user_tag = index; streamed), writes a
 * lone prompt's text as it comes, and prints several prompts' results in
 * order as each becomes next. Final results go to reqs[i].res (the caller
 * frees them). Returns 0, 1 when some prompt failed, or -1 with err set when
 * a lone prompt was aborted. */
static int collect_results(sgl_engine *e, gen_req *reqs, int n, sgl_error *err) {
    int done = 0, printed = 0, failed = 0;
    while (done < n) {
        sgl_result *r = sgl_engine_wait(e, -1);
        if (!r) continue;
        if (r->user_tag >= (uint64_t)n) {
            sgl_result_free(r);
            continue;
        }
        gen_req *g = &reqs[r->user_tag];
        if (r->partial) {
            if ((r->n_tokens > 0 || r->text_len > 0) && g->t_first == 0) g->t_first = sgl_now();
            if (n == 1 && r->text_len) {
                write_utf8(r->text, r->text_len, true);
                fflush(stdout);
            }
            sgl_result_free(r);
            continue;
        }
        g->t_done = sgl_now();
        g->res = r;
        done++;
        if (n == 1) {
            write_utf8("", 0, false); /* what a cut character left held */
            fputc('\n', stdout);
            print_logprobs(r);
            fflush(stdout);
            if (r->finish == SGL_FINISH_ABORT) return sgl_error_set(err, "%s", r->error ? r->error : "aborted");
        }
        while (n > 1 && printed < n && reqs[printed].res) {
            failed |= print_one(printed, reqs[printed].res);
            printed++;
        }
    }
    return failed;
}

#ifdef SGL_HAVE_REMOTE
/* --backend: the prompts go to remote endpoints as text (with --chat, also
 * as chat turns for chat APIs; the text then uses --model's template, or
 * --chat-template's family). */
static int generate_remote(gen_opts *o) {
    int n = o->n_prompts, status = 1;
    sgl_error err = {{0}};
    char *path = NULL;
    gguf_file *gf = NULL;
    sgl_tokenizer *tok = NULL;
    chat_template *ct = NULL;
    sgl_engine *e = NULL;
    gen_req *reqs = calloc((size_t)n, sizeof *reqs);
    char **texts = calloc((size_t)n, sizeof *texts);
    if (!reqs || !texts) {
        sgl_error_set(&err, "out of memory");
        goto fail;
    }
    cli_backend_apply("generate", &o->bk, NULL);
    if (o->chat && o->model) {
        if (!(path = cli_model_path(o->model))) {
            status = CLI_EXIT_USAGE;
            goto done;
        }
        if (!(gf = gguf_open(path, &err)) || !(tok = tok_load_gguf(gf, &err)) ||
            !(ct = chat_template_from_gguf(gf, tok, &err))) {
            status = CLI_EXIT_USAGE;
            goto fail;
        }
    } else if (o->chat && !(ct = chat_template_from_family(o->bk.chat_template ? o->bk.chat_template : "chatml", &err))) {
        goto fail;
    }
    if (!(e = sgl_engine_remote_new(&o->bk.cfg, &err))) goto fail;
    if (o->sp.top_k <= 0) o->sp.top_k = -1;
    for (int i = 0; i < n; i++) {
        sgl_request rq = {0};
        sgl_chat_msg msgs[3];
        int32_t nm = 0;
        rq.kind = SGL_REQ_GENERATE;
        rq.text = o->prompts[i];
        if (ct) {
            chat_msg cm[2];
            size_t k = 0;
            if (o->system) cm[k++] = (chat_msg){"system", o->system};
            cm[k++] = (chat_msg){"user", o->prompts[i]};
            sgl_strbuf sb = {0};
            if (chat_render(ct, cm, k, true, &sb, &err) < 0) goto fail;
            texts[i] = sgl_strbuf_take(&sb);
            rq.text = texts[i] ? texts[i] : "";
            if (o->system) msgs[nm++] = (sgl_chat_msg){"system", o->system};
            msgs[nm++] = (sgl_chat_msg){"user", o->prompts[i]};
            msgs[nm++] = (sgl_chat_msg){"assistant", ""};
            rq.messages = msgs;
            rq.n_messages = nm;
            rq.open_turn = true;
        } else {
            rq.loose_text = true;
        }
        rq.params = o->sp;
        rq.user_tag = (uint64_t)i;
        rq.stream = true;
        reqs[i].t_submit = sgl_now();
        if (!(reqs[i].id = sgl_engine_submit(e, &rq, &err))) goto fail;
    }
    int failed = collect_results(e, reqs, n, &err);
    if (failed < 0) goto fail;
    if (o->stats) {
        for (int i = 0; i < n; i++) {
            const sgl_result *r = reqs[i].res;
            fprintf(stderr, "prompt %d: prompt tokens %d, cached tokens %d, completion tokens %d, %.3f s, finish %s\n",
                    i + 1, r->prompt_tokens, r->cached_tokens, r->completion_tokens,
                    reqs[i].t_done - reqs[i].t_submit, sgl_finish_name(r->finish));
        }
        cli_backend_stats(e, stderr);
    }
    status = failed;
    goto done;
fail:
    fflush(stdout);
    fprintf(stderr, "sglc generate: error: %s\n", err.msg);
done:
    sgl_engine_free(e);
    chat_template_free(ct);
    if (tok) tok_free(tok);
    if (gf) gguf_close(gf);
    for (int i = 0; reqs && i < n; i++) sgl_result_free(reqs[i].res);
    for (int i = 0; texts && i < n; i++) free(texts[i]);
    free(texts);
    free(reqs);
    free(path);
    opts_free(o);
    return status;
}
#endif

int cmd_generate(int argc, char **argv) {
    gen_opts o = {0};
    parse_args(argc, argv, &o);
    if (o.bk.n_specs) {
#ifdef SGL_HAVE_REMOTE
        return generate_remote(&o);
#else
        cli_backend_apply("generate", &o.bk, NULL);
#endif
    }
    char *path = cli_model_path(o.model);
    if (!path) {
        opts_free(&o);
        return CLI_EXIT_USAGE;
    }

    int status = 1, n = o.n_prompts;
    sgl_error err = {{0}};
    sgl_engine *e = NULL;
    chat_template *ct = NULL;
    gen_req *reqs = calloc((size_t)n, sizeof *reqs);
    int32_t **ids = calloc((size_t)n, sizeof *ids);
    size_t *n_ids = calloc((size_t)n, sizeof *n_ids);
    if (!reqs || !ids || !n_ids) {
        sgl_error_set(&err, "out of memory");
        goto fail;
    }

    sgl_engine_config cfg = sgl_engine_config_default();
    cfg.model_path = path;
    cfg.n_threads = (int)o.threads;
    cfg.kv_slots = (int32_t)o.kv_tokens;
    cfg.policy = o.policy;
    if (o.chunk >= 0) cfg.chunk_size = (int32_t)o.chunk;
    cfg.cache_off = o.no_cache;
    double t_load = sgl_now();
    if (!(e = sgl_engine_local_new(&cfg, &err))) {
        status = CLI_EXIT_USAGE; /* the model cannot be loaded: a setup error */
        goto fail;
    }
    t_load = sgl_now() - t_load;
    sgl_model *m = sgl_engine_local_model(e);
    const sgl_tokenizer *tok = sgl_engine_local_tokenizer(e);
    if (o.chat && !(ct = o.bk.chat_template ? chat_template_from_family(o.bk.chat_template, &err)
                                             : chat_template_from_gguf(model_get_gguf(m), tok, &err)))
        goto fail;
    for (int i = 0; i < n; i++) {
        if (encode_prompt(&o, o.prompts[i], ct, tok, &ids[i], &n_ids[i], &err)) goto fail;
        if (n_ids[i] == 0) {
            sgl_error_set(&err, n > 1 ? "prompt %d encodes to no tokens"
                                      : "the prompt encodes to no tokens", i + 1);
            goto fail;
        }
    }

    /* Always streamed: the first partial dates the first token (--stats);
     * only a single prompt prints its partials. */
    for (int i = 0; i < n; i++) {
        sgl_request rq = {0};
        rq.kind = SGL_REQ_GENERATE;
        rq.tokens = ids[i];
        rq.n_tokens = (int32_t)n_ids[i];
        rq.params = o.sp;
        rq.user_tag = (uint64_t)i;
        rq.stream = true;
        reqs[i].t_submit = sgl_now();
        if (!(reqs[i].id = sgl_engine_submit(e, &rq, &err))) goto fail;
    }
    int failed = collect_results(e, reqs, n, &err);
    if (failed < 0) goto fail;
    if (o.stats) {
        const model_config *mc = model_get_config(m);
        fprintf(stderr, "model: %s (%s, %d layers, dim %d, vocab %d), %d threads, load %.2f s\n",
                path, mc->arch == MODEL_ARCH_QWEN2 ? "qwen2" : "llama", mc->n_layers, mc->dim,
                mc->vocab, kern_pool_threads(model_get_pool(m)), t_load);
        for (int i = 0; i < n; i++) print_request_stats(i, &reqs[i]);
        print_engine_stats(e);
        fprintf(stderr, "seed: %llu\n", (unsigned long long)o.sp.seed);
    }
    status = failed;
    goto done;
fail:
    fflush(stdout);
    fprintf(stderr, "sglc generate: error: %s\n", err.msg);
done:
    sgl_engine_free(e);
    chat_template_free(ct);
    for (int i = 0; reqs && i < n; i++) sgl_result_free(reqs[i].res);
    for (int i = 0; ids && i < n; i++) free(ids[i]);
    free(reqs);
    free(ids);
    free(n_ids);
    free(path);
    opts_free(&o);
    return status;
}
