/* scheduler: the local engine's batching core. Token-level and synchronous:
 * requests come in as token ids, each sched_step() builds ONE batch and makes
 * ONE forward call, and finished requests come out as sgl_result. The engine
 * (engine.c) wraps it in a thread, tokenizes and splits SCORE requests.
 *
 * Per step:
 *   1. Running requests: every decoding request contributes its last token;
 *      requests still in prefill contribute their next chunk (at most
 *      chunk_size tokens), all under the token budget max_batch_tokens.
 *      Their new KV slots are allocated from the pool, evicting radix-cache
 *      leaves when needed; when even that is not enough, the most recently
 *      admitted running request is retracted: its computed KV goes into the
 *      radix cache (or back to the pool when the cache is off) and it waits
 *      again, to resume by re-prefilling prompt + what it generated so far.
 *   2. Admission: waiting requests in policy order (LPM: longest cached
 *      prefix first, with requests older than starve_steps, or passed over by
 *      starve_overtaken later arrivals, first in arrival order; FCFS:
 *      arrival order; RANDOM: a seeded shuffle, for ablation benchmarks). A
 *      request is admitted when its uncached prompt plus a small decode
 *      reserve fits in free + evictable slots
 *      beyond what the running requests have been promised; its cached
 *      prefix is locked in the radix tree. A request whose prompt shares a
 *      long uncached prefix with a prefill in progress waits a step, so the
 *      prefix is computed once and then shared through the cache.
 *   3. One forward over prefill chunks and decode tokens together; then
 *      input logprobs, sampling, stop checks, and for finished requests the
 *      KV goes into the radix cache (prefill chunks are cached as soon as
 *      they are computed, so later requests share them at once).
 *
 * Request token layout: tok[0..n_tok) = prompt then generated tokens. KV
 * exists for tok[0..n_computed); tok[0..n_locked) are held by the radix tree
 * (locked at lock_node), tok[n_locked..n_computed) by the request itself.
 *
 * Constraints: a request with a cons_program has a cons_matcher. Before each
 * sampled token the logits row is copied and the tokens outside the mask get
 * -inf (the model's reduction order is untouched; logprobs use the raw row);
 * the sampled token advances the matcher; the request finishes (STOP) when
 * nothing can follow. Jump-forward: the bytes the matcher forces after a
 * sampled token are appended at once; the sampled token's bytes + the forced
 * bytes are re-encoded (the tokens the tokenizer gives for that text replace
 * the sampled token, whose KV was not computed yet), and the next step runs
 * them as one extend chunk. Bytes forced before the first token are appended
 * to the prompt's tail the same way at sched_add. Token healing: the
 * prompt's last token is removed and its bytes become the matcher's prefix;
 * those bytes are left out of the output text.
 *
 * Determinism: the model gives a sequence the same logits whatever it is
 * batched with and however its prefix was computed, and each request has its
 * own sampler state, so outputs do not depend on batching, caching, chunking
 * or retraction.
 */
#ifndef SGL_SCHEDULER_H
#define SGL_SCHEDULER_H

#include <stdbool.h>
#include <stdint.h>

#include "runtime/constrain/constrain.h"
#include "runtime/engine.h"
#include "runtime/kv_pool.h"
#include "runtime/model.h"
#include "runtime/radix_cache.h"
#include "util/util.h"

/* The forward pass (model_forward's contract, see model.h). */
typedef int (*sched_forward_fn)(void *ctx, kv_pool *kv, const model_batch *b, float *logits,
                                sgl_error *err);
/* Raw bytes of a token for the output text (NULL/0 to contribute none, e.g.
 * control tokens when skip_special). The bytes stay owned by the callee. */
typedef const char *(*sched_piece_fn)(void *ctx, int32_t id, bool skip_special, size_t *len);
/* Encodes text[0..len) as plain text (no special tokens, no BOS): 0 and a
 * malloc'd *ids (caller frees) of *n ids, or -1 with err set. Used to
 * retokenize at a jump-forward boundary. */
typedef int (*sched_encode_fn)(void *ctx, const char *text, size_t len, int32_t **ids, size_t *n,
                               sgl_error *err);

typedef struct sched_config {
    sgl_sched_policy policy;
    int32_t max_batch_tokens;    /* new tokens per forward (>= 1) */
    int32_t chunk_size;          /* prefill tokens per request per forward; 0: no limit */
    int32_t max_running;         /* requests in the running batch */
    bool cache_off;              /* no radix cache */
    int32_t vocab;
    const int32_t *eos_ids;      /* [n_eos] tokens that end generation (copied) */
    int32_t n_eos;
    int32_t starve_steps;        /* LPM: waiting this many steps -> admitted first (0: 256) */
    int32_t starve_overtaken;    /* LPM: passed over by this many later arrivals -> admitted
                                    first (0: max_running; < 0: never) */
    int32_t share_min;           /* defer a request that would take >= this many more
                                    tokens from the cache once a prefill in progress is
                                    in it (0: 1, any length; < 0: never) */
    int32_t decode_reserve;      /* future decode slots promised per request (0: 16) */
    int32_t max_context;         /* > 0: prompts this long are refused and generation
                                    ends (LENGTH) when prompt + output reaches it */
    sched_forward_fn forward;
    void *forward_ctx;
    sched_piece_fn piece;        /* may be NULL: no text, no stop strings */
    void *piece_ctx;
    /* Constraints: the vocabulary index the masks are computed over (borrowed,
     * outlives the scheduler) and the encoder jump-forward retokenizes with.
     * NULL vocab: requests with a constraint or token healing are refused;
     * NULL encode: no jump-forward. */
    const cons_vocab *cons_vocab;
    sched_encode_fn encode;
    void *encode_ctx;
} sched_config;

/* Defaults: LPM, budget 2048, chunk 512, 64 running, cache on. The caller
 * fills vocab, eos and the callbacks. */
sched_config sched_config_default(void);

/* A token-level request. SCORE is split by the engine into GENERATE
 * requests with max_new_tokens 0 and logprob_start_len at the continuation. */
typedef struct sched_input {
    uint64_t id;
    uint64_t user_tag;
    sgl_req_kind kind;           /* GENERATE or PREFILL */
    const int32_t *tokens;       /* [n_tokens] prompt (copied) */
    int32_t n_tokens;
    const sgl_sampling_params *params; /* copied (stop strings and ids included) */
    bool stream;                 /* GENERATE: partial results (sgl_result.partial) come
                                    out of sched_pop before the final one, as engine.h
                                    describes under "Streaming" */
    cons_program *constraint;    /* GENERATE: compiled constraint (the scheduler takes
                                    its own reference), or NULL. params->regex etc. are
                                    not looked at: the caller compiles them. */
} sched_input;

typedef struct sched sched;

/* Returns a scheduler over pool (borrowed; the scheduler owns the radix
 * cache it builds on it) or NULL with err set. */
sched *sched_new(const sched_config *cfg, kv_pool *pool, sgl_error *err);
/* Gives the scheduler its constraint vocabulary later than sched_new (the
 * engine builds it on the first request that needs it, so unconstrained use
 * never pays for it); same contract as sched_config.cons_vocab. Call between
 * steps, at most once. Returns 0, or -1 with err set. */
int sched_set_cons_vocab(sched *s, const cons_vocab *v, sgl_error *err);
/* Drops every request, returns all slots to the pool and frees. NULL ok. */
void sched_free(sched *s);

/* Queues a request. A request that can never run (empty prompt, prompt larger
 * than the pool, a constraint without a vocabulary) is queued as already
 * finished with ABORT.
 * Returns 0, or -1 with err set when memory runs out. */
int sched_add(sched *s, const sched_input *in, sgl_error *err);
/* Runs one step (one forward call when there is work). Returns the number of
 * requests in the batch (0 when idle), or -1 with err set when the forward
 * failed: the requests of that batch are then finished with ABORT and the
 * scheduler stays usable. */
int sched_step(sched *s, sgl_error *err);
/* Ends every waiting or running request whose user_tag is user_tag with
 * ABORT "cancelled" (computed KV is kept in the cache). Call between steps.
 * Returns how many were cancelled. */
int sched_cancel(sched *s, uint64_t user_tag);
/* Empties the radix cache (every unlocked node; when nothing is waiting or
 * running, that is every node) and returns its slots to the pool. Refuses
 * while any request is waiting or running. Call between steps. Returns the
 * slots freed (0 when the cache is off), or -1 with err set ("cache not
 * flushed: N requests running, M waiting"). */
int64_t sched_flush_cache(sched *s, sgl_error *err);
/* Steps until no request is waiting or running. Returns 0, or -1 on the
 * first failed forward (err set). */
int sched_run_all(sched *s, sgl_error *err);
/* Next finished request in finishing order (caller owns; sgl_result_free),
 * or NULL. Streamed requests also come out as partial results (partial true,
 * id and user_tag set), each after the previous step's and before the
 * request's final result. */
sgl_result *sched_pop(sched *s);
bool sched_busy(const sched *s);  /* anything waiting or running */
void sched_metrics(const sched *s, sgl_engine_metrics *out);
/* The radix cache (NULL when cache_off); for tests and metrics. */
const radix_cache *sched_cache(const sched *s);
/* Checks slot accounting: pool free + cache + request-owned == n_slots, and
 * radix_check. Returns 0 or -1 with err. For tests. */
int sched_check(const sched *s, sgl_error *err);

#endif
