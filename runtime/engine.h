/* engine: the one request API between the VM (or the HTTP server) and an
 * inference engine, local or remote.
 *
 * Requests are submitted without blocking and complete through a queue the
 * caller drains with sgl_engine_poll / sgl_engine_wait. Three kinds:
 *   GENERATE  prompt (text or token ids) + sampling params -> text, tokens
 *   SCORE     prompt + N continuations -> per-token logprobs of each
 *             continuation given the prompt (what `select` uses); the
 *             continuations share the prompt's KV through the radix cache
 *   PREFILL   cache the prompt's KV now (the frontend's prefix hint)
 * An engine error fails that request (finish ABORT + message), never the
 * process.
 *
 * Streaming: a GENERATE request with stream set also completes through the
 * queue in pieces. Before its final result come partial results (partial
 * true, finish NONE) whose text and tokens are what is new since the previous
 * partial; together the partials add up exactly to the final result's text
 * and tokens (the last partial, sent at the end, carries what was still held
 * back). A partial's text never ends inside a UTF-8 sequence and never holds
 * bytes a stop string could still cut off (the longest end of the text that
 * begins some stop string is held back until the next token decides it, as
 * SGLang does); nothing goes out before min_new_tokens when stop strings are
 * given. The final result still holds the whole text and every token.
 *
 * The local engine (sgl_engine_local_new) runs the model in its own thread:
 * tokenizer -> scheduler (cache-aware ordering, continuous batching, chunked
 * prefill, retraction) -> radix cache + KV pool -> model forward -> sampler.
 * Other engines (remote HTTP clients) plug in through sgl_engine_ops.
 */
#ifndef SGL_ENGINE_H
#define SGL_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/util.h"

typedef enum sgl_req_kind { SGL_REQ_GENERATE, SGL_REQ_SCORE, SGL_REQ_PREFILL } sgl_req_kind;

/* Mirrors SGLang's sampling params. Start from sgl_sampling_params_default().
 * Pointed-to arrays are copied at submit. */
typedef struct sgl_sampling_params {
    int32_t max_new_tokens;        /* default 128 */
    int32_t min_new_tokens;        /* stop tokens masked and stops ignored before this many */
    const char *const *stop;       /* [n_stop] stop strings: matched across token
                                      boundaries; the text is cut before the match */
    int32_t n_stop;
    const int32_t *stop_token_ids; /* [n_stop_token_ids], in addition to the model's EOS */
    int32_t n_stop_token_ids;
    float temperature;             /* default 1.0 (SGLang); <= 0: greedy */
    float top_p;                   /* default 1 */
    int32_t top_k;                 /* default -1 (off) */
    float min_p;                   /* default 0 */
    float frequency_penalty;       /* default 0 */
    float presence_penalty;        /* default 0 */
    float repetition_penalty;      /* default 1 */
    bool ignore_eos;               /* EOS and stop_token_ids do not stop (as SGLang) */
    bool skip_special_tokens;      /* default true: control tokens left out of text */
    uint64_t seed;                 /* per-request PRNG seed (default 0) */
    bool return_logprob;           /* logprob of each output token */
    int32_t top_logprobs_num;      /* and this many alternatives per token */
    int32_t logprob_start_len;     /* >= 0: also logprobs of the prompt tokens from index
                                      max(logprob_start_len, 1) on (input_logprobs;
                                      token 0 has none); -1: none */
    bool penalize_prompt;          /* repetition/frequency/presence penalties also count the
                                      prompt's tokens (default false: output only) */
    /* Constraints (runtime/constrain/): at most one of regex, json_schema,
     * grammar, choices. The output is then exactly a text of the constraint's
     * language (or a prefix of one when it ends by length or a stop string):
     * before each sampled token the tokens that would leave the language get
     * -inf, EOS is allowed exactly where the text is complete, and the
     * request finishes (STOP, stop_token -1) when nothing can follow. A
     * constraint that does not compile makes sgl_engine_submit refuse the
     * request with the compiler's message; it never runs unconstrained.
     * Logprobs stay those of the raw (unmasked) logits. */
    const char *regex;             /* docs/language.md regex dialect, whole-output match */
    const char *json_schema;       /* JSON text of a schema (docs/runtime.md: supported subset) */
    const char *grammar;           /* EBNF / GBNF text, start rule "root" */
    const char *const *choices;    /* [n_choices] strings: the output is exactly one of them */
    int32_t n_choices;
    bool json_ws_flexible;         /* json_schema: whitespace allowed between tokens
                                      (default false: compact JSON) */
    int32_t json_ws_max;           /* flexible: longest whitespace run (0: the compiler's default) */
    bool jump_forward;             /* default true: where the constraint allows one text
                                      only, append it without sampling (retokenized at the
                                      boundary, its KV computed in one extend step). Off for
                                      requests with return_logprob (every token keeps the
                                      logprob the model gave it). */
    bool token_healing;            /* back off the prompt's last (non-special) token; the
                                      first generated token must start with its bytes,
                                      which are not repeated in the output text */
} sgl_sampling_params;

sgl_sampling_params sgl_sampling_params_default(void);

/* One chat turn of a prompt (role "system", "user" or "assistant"). */
typedef struct sgl_chat_msg {
    const char *role;
    const char *content;
} sgl_chat_msg;
/* Compiles the constraint p carries (regex, json_schema, grammar or choices,
 * with its JSON whitespace options; through the process-wide compile cache).
 * Returns 0 with *out a program (one reference, see
 * runtime/constrain/constrain.h) or NULL when p has no constraint; -1 with
 * err set to the compiler's located message ("regex: ... (at offset 3)",
 * "json_schema: ... (at /properties/a)", "grammar: 2:5: ...") when it does
 * not compile or more than one is given. Engines refuse such a request. */
struct cons_program;
int sgl_sampling_constraint(const sgl_sampling_params *p, struct cons_program **out,
                            sgl_error *err);

typedef struct sgl_request {
    sgl_req_kind kind;
    const char *text;              /* prompt text, or NULL when tokens are given */
    const int32_t *tokens;         /* prompt token ids (used when text is NULL) */
    int32_t n_tokens;
    sgl_sampling_params params;    /* GENERATE; SCORE/PREFILL ignore all but seed */
    const char *const *choices;    /* SCORE: [n_choices] continuation texts; each is
                                      tokenized as part of text + choice */
    int32_t n_choices;
    const int32_t *const *choice_tokens; /* SCORE alternative: [n_choices] token-id
                                      continuations appended to the prompt's ids */
    const int32_t *choice_lens;    /* [n_choices] */
    uint64_t user_tag;             /* echoed in the result */
    bool stream;                   /* GENERATE: partial results before the final one
                                      (see "Streaming" above); ignored by SCORE/PREFILL */
    const char *const *images;     /* [n_images] image files the prompt shows (a user turn's
                                      image(path)), in prompt order; an engine without a
                                      vision model refuses such a request at submit */
    int32_t n_images;
    const int32_t *image_turns;    /* [n_images] index in messages of the turn each image
                                      sits in (-1: outside every turn), or NULL */
    const int32_t *image_offsets;  /* [n_images] byte offset of each image inside its
                                      turn's content (chat engines split the turn there) */
    /* The same prompt as chat turns, for engines that take turns rather than
     * text (chat APIs); text-prompt engines ignore it. Set by the VM when the
     * prompt was written with roles: the finished turns, then (open_turn) the
     * turn still being written, whose content the generation continues.
     * loose_text: the prompt also has text outside any turn, which a chat API
     * cannot carry (such engines refuse the request). */
    const sgl_chat_msg *messages;
    int32_t n_messages;
    bool open_turn;
    bool loose_text;
} sgl_request;

/* What an engine can do. The VM checks a program against it before sending
 * anything and fails a call that needs more (never a silent fallback). */
enum {
    SGL_CAP_TOP_K = 1u << 0,
    SGL_CAP_MIN_P = 1u << 1,
    SGL_CAP_REPETITION_PENALTY = 1u << 2,
    SGL_CAP_FREQ_PRESENCE_PENALTY = 1u << 3,
    SGL_CAP_MIN_TOKENS = 1u << 4,
    SGL_CAP_IGNORE_EOS = 1u << 5,
    SGL_CAP_SEED = 1u << 6,
    SGL_CAP_STOP_TOKEN_IDS = 1u << 7,
    SGL_CAP_ALL_SAMPLING = 0xffu,
};
typedef struct sgl_engine_caps {
    bool raw_prompt;        /* takes a text prompt as is (false: chat turns only) */
    bool logprobs;          /* return_logprob / top_logprobs_num of output tokens */
    bool score;             /* SCORE: prompt logprobs of continuations (select) */
    bool constraints;       /* regex / json_schema */
    bool assistant_prefill; /* chat only: continues a partly written assistant turn */
    uint32_t sampling;      /* SGL_CAP_* fields honoured beyond max_new_tokens,
                               temperature, top_p and stop */
    int32_t max_stop;       /* most stop strings per request (0: any number) */
} sgl_engine_caps;

typedef enum sgl_finish {
    SGL_FINISH_NONE,   /* not finished (only in partial results) */
    SGL_FINISH_STOP,   /* stop string (stop_str) or stop/EOS token (stop_token) */
    SGL_FINISH_LENGTH, /* max_new_tokens reached (or 0 asked: SCORE/PREFILL) */
    SGL_FINISH_ABORT   /* error: message in error */
} sgl_finish;

typedef struct sgl_token_logprob {
    int32_t token;
    float logprob;                 /* log-softmax of the raw logits */
    int32_t n_top;
    int32_t *top_ids;              /* [n_top] most likely tokens, descending */
    float *top_logprobs;           /* [n_top] */
    char *text;                    /* the token's text (NUL-terminated), or NULL when the
                                      engine gives none; token -1 (no token: the
                                      alternatives of a max_new_tokens=0 request) has none */
    char **top_texts;              /* [n_top] texts of top_ids, or NULL */
} sgl_token_logprob;

typedef struct sgl_choice_score {
    int32_t n_tokens;              /* continuation tokens scored */
    int32_t *tokens;               /* [n_tokens] */
    float *logprobs;               /* [n_tokens] log p(token | everything before) */
    double sum;                    /* sum of logprobs */
} sgl_choice_score;

/* A finished request, or a partial one (stream). Owned by the caller after
 * poll/wait: free with sgl_result_free (every array below belongs to it). */
typedef struct sgl_result {
    uint64_t id;                   /* from sgl_engine_submit */
    uint64_t user_tag;
    sgl_req_kind kind;
    sgl_finish finish;
    char *stop_str;                /* STOP by a stop string: the string, else NULL */
    int32_t stop_token;            /* STOP by a token: its id, else -1 */
    char *error;                   /* ABORT: the message, else NULL */
    char *text;                    /* generated text (NUL-terminated, never NULL) */
    size_t text_len;
    int32_t *tokens;               /* [n_tokens] generated ids (a stop token included) */
    int32_t n_tokens;
    int32_t prompt_tokens;         /* SCORE: summed over choices */
    int32_t completion_tokens;
    int32_t cached_tokens;         /* prompt tokens served from the radix cache */
    sgl_token_logprob *logprobs;   /* [n_logprobs] per output token (return_logprob); a
                                      request for 0 tokens with top_logprobs_num > 0 gets one
                                      entry, token -1, whose top are the next-token
                                      alternatives after the prompt */
    int32_t n_logprobs;
    sgl_token_logprob *input_logprobs; /* prompt tokens from max(logprob_start_len, 1) on */
    int32_t n_input_logprobs;
    sgl_choice_score *choices;     /* SCORE: [n_choices] */
    int32_t n_choices;
    int32_t forced_tokens;         /* of completion_tokens, appended by jump-forward
                                      without sampling */
    bool partial;                  /* stream: text/tokens are only what is new since the
                                      previous partial; finish is NONE; prompt_tokens,
                                      cached_tokens and completion_tokens are the figures
                                      so far; no logprobs. The final result follows. */
} sgl_result;

void sgl_result_free(sgl_result *r);
/* "stop" / "length" / "abort" / "none". */
const char *sgl_finish_name(sgl_finish f);

/* Totals since the engine started. */
typedef struct sgl_engine_metrics {
    int64_t requests_done;
    int64_t prompt_tokens;         /* prompt tokens of admitted requests (once each) */
    int64_t cached_tokens;         /* of which served from the radix cache at admission */
    double hit_rate;               /* cached / prompt (0 when none) */
    int64_t generated_tokens;      /* output tokens, sampled + forced */
    int64_t forced_tokens;         /* of which appended by jump-forward (constraints) */
    int64_t constrained_requests;  /* requests run under a constraint */
    int64_t forward_calls;
    int64_t forward_tokens;        /* new tokens run through the model */
    int32_t running, waiting;      /* right now */
    int64_t evicted_tokens;        /* KV slots the radix cache evicted */
    int64_t retractions;           /* running requests sent back to wait for memory */
    int32_t pool_slots, pool_used; /* KV pool size and slots in use (cache included) */
    int64_t cache_tokens;          /* slots held by the radix cache */
    const char *device;            /* local engine: "cpu", or the GPU's description
                                      ("cuda (NAME; deterministic; decode graphs on)"),
                                      valid while the engine lives; NULL otherwise */
    uint64_t device_weight_bytes;  /* GPU memory of the weights (CPU: the repacked copies) */
    uint64_t device_bytes;         /* all GPU memory in use: weights, buffers, KV pool */
} sgl_engine_metrics;

/* ---- engine handle ------------------------------------------------------ */

typedef struct sgl_engine sgl_engine;

/* An engine implementation. Every function but free may be called from any
 * thread; results are handed over through poll/wait. */
typedef struct sgl_engine_ops {
    const char *name;
    int (*submit)(void *ctx, const sgl_request *req, uint64_t id, sgl_error *err);
    sgl_result *(*wait)(void *ctx, double timeout_s); /* < 0: forever; 0: poll */
    void (*metrics)(void *ctx, sgl_engine_metrics *out);
    void (*free)(void *ctx);
    int (*cancel)(void *ctx, uint64_t id); /* optional (NULL: cannot cancel) */
    void (*caps)(void *ctx, sgl_engine_caps *out); /* optional (NULL: what the local
                                      engine offers) */
    /* optional (NULL: cannot flush). See sgl_engine_flush_cache. */
    int64_t (*flush_cache)(void *ctx, sgl_error *err);
} sgl_engine_ops;

/* Wraps an implementation (ops must outlive the engine; ctx is owned by the
 * engine and freed with ops->free). Returns NULL when memory runs out. */
sgl_engine *sgl_engine_new(const sgl_engine_ops *ops, void *ctx);

/* RANDOM: the waiting queue in a seeded random order (an ablation for
 * benchmarks: neither cache-aware nor fair). */
typedef enum sgl_sched_policy { SGL_SCHED_LPM, SGL_SCHED_FCFS, SGL_SCHED_RANDOM } sgl_sched_policy;
/* "lpm" / "fcfs" / "random" <-> policy. parse returns 0, or -1 for an unknown name. */
const char *sgl_sched_policy_name(sgl_sched_policy p);
int sgl_sched_policy_parse(const char *name, sgl_sched_policy *out);

typedef struct sgl_engine_config {
    const char *model_path;        /* GGUF */
    int n_threads;                 /* 0: all cores */
    int32_t kv_slots;              /* KV pool token slots; 0: from kv_mem_mb */
    int32_t kv_mem_mb;             /* KV pool memory when kv_slots is 0 (default 256) */
    sgl_sched_policy policy;       /* default LPM */
    int32_t max_batch_tokens;      /* new tokens per forward (default 2048) */
    int32_t chunk_size;            /* chunked prefill: prompt tokens per request per
                                      forward (default 512; 0 = whole prompt) */
    int32_t max_running;           /* running requests (default 64) */
    bool cache_off;                /* no radix cache: every prompt computed afresh */
    int32_t max_context;           /* prompt + output limit: 0 = the model's trained
                                      context (when it states one), < 0 = none */
} sgl_engine_config;

sgl_engine_config sgl_engine_config_default(void);

/* Loads the model and starts the engine thread. Returns the engine (caller
 * frees with sgl_engine_free) or NULL with err set. */
sgl_engine *sgl_engine_local_new(const sgl_engine_config *cfg, sgl_error *err);

/* Queues a request; never blocks on the model. Returns its id (>= 1), or 0
 * with err set when the request is malformed or memory runs out (nothing was
 * queued). The request and everything it points to are copied. */
uint64_t sgl_engine_submit(sgl_engine *e, const sgl_request *req, sgl_error *err);
/* The next finished request, or partial result of a streamed one (caller
 * owns it), or NULL when none is ready. */
sgl_result *sgl_engine_poll(sgl_engine *e);
/* Waits up to timeout_s seconds (< 0: no limit) for a finished request (or
 * a partial result); NULL on timeout. */
sgl_result *sgl_engine_wait(sgl_engine *e, double timeout_s);
/* Asks the engine to stop request id. It still completes through the queue:
 * with finish ABORT and error "cancelled", or normally if it finished first.
 * Returns 0, or -1 when id is unknown/already delivered or the engine cannot
 * cancel. */
int sgl_engine_cancel(sgl_engine *e, uint64_t id);
/* Empties the engine's prefix cache, as SGLang's flush_cache: every
 * unlocked radix-cache node is evicted and its KV slots go back to the pool,
 * so later prompts are computed afresh (cached_tokens 0). The local engine
 * does it on its engine thread between steps and only when it is idle: with
 * any request running or waiting (queued but not yet admitted included) it
 * refuses rather than waits, and nothing is evicted. Blocks until the engine
 * thread answered (at most one step). Returns the number of cached tokens
 * freed (>= 0; evicted_tokens in the metrics counts them too); -1 with err
 * set when refused ("cache not flushed: N requests running, M waiting") or
 * failed; -2 with err set ("engine NAME cannot flush its cache") when the
 * engine cannot (no flush_cache op; remote engines other than sglang:,
 * which POST /flush_cache to every endpoint). err may be NULL. */
int64_t sgl_engine_flush_cache(sgl_engine *e, sgl_error *err);
void sgl_engine_metrics_get(sgl_engine *e, sgl_engine_metrics *out);
/* What e can do (see sgl_engine_caps). */
void sgl_engine_caps_get(const sgl_engine *e, sgl_engine_caps *out);
/* The local engine's capabilities: text and token prompts, logprobs, SCORE,
 * constraints, every sampling field. */
sgl_engine_caps sgl_engine_caps_local(void);
/* The implementation context of e when e was made with ops, else NULL
 * (borrowed: for the implementation's own extra API). */
void *sgl_engine_impl(const sgl_engine *e, const sgl_engine_ops *ops);
const char *sgl_engine_name(const sgl_engine *e);
/* The local engine's model and tokenizer, owned by the engine and valid
 * until sgl_engine_free; NULL when e is not a local engine. Only for reading
 * while the engine runs (the tokenizer, model_get_config / model_get_gguf,
 * the thread count of model_get_pool, which needs the non-const pointer);
 * the engine thread alone runs the model. */
struct sgl_model;
struct sgl_tokenizer;
struct sgl_model *sgl_engine_local_model(const sgl_engine *e);
const struct sgl_tokenizer *sgl_engine_local_tokenizer(const sgl_engine *e);
/* Stops the engine (pending requests are dropped) and frees it. NULL ok. */
void sgl_engine_free(sgl_engine *e);

#endif
