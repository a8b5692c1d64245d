/* scheduler: continuous batching over the radix cache and KV pool (see
 * scheduler.h for the step structure and the request token layout). */
#include "runtime/scheduler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/sampler.h"
#include "runtime/unicode.h"

typedef struct sreq {
    uint64_t id, user_tag;
    sgl_req_kind kind;
    int32_t *tok, *slots;       /* [cap]: prompt + generated; KV slot per token */
    int32_t n_tok, cap, n_prompt;
    int32_t n_computed, n_locked;
    radix_node *lock_node;
    bool admitted_once, input_lp_done, starving;
    bool stream;                /* partial results; text[0..sent_text) and generated
                                   tokens [0..sent_tok) have gone out in them */
    size_t sent_text;
    int32_t sent_tok;
    int32_t cached_tokens, n_gen, peek, step_chunk;
    sgl_sampling_params p;      /* pointer fields cleared: copies below */
    char **stop;
    int32_t n_stop;
    size_t max_stop_len;
    int32_t *stop_ids;
    int32_t n_stop_ids;
    sampler_params sp;
    sampler_state *ss;
    sgl_strbuf text;
    sgl_token_logprob *lps;
    int32_t n_lps, cap_lps;
    sgl_token_logprob *ilps;    /* [n_prompt - lp_first] */
    int32_t lp_first;           /* first prompt index with an input logprob, or -1 */
    uint64_t seq;               /* arrival order */
    int64_t arrival_step;
    int32_t overtaken;          /* later arrivals admitted while this one waited */
    sgl_finish finish;
    char *stop_str, *error;
    int32_t stop_token;
    cons_matcher *cm;           /* constraint and/or token healing, or NULL */
    bool constrained;           /* cm runs a program (not only a healing prefix) */
    bool jf;                    /* jump-forward */
    size_t heal_prefix;         /* bytes of the backed-off prompt token */
    size_t heal_left;           /* of them, still to be left out of the text */
    int32_t n_forced;           /* generated tokens appended by jump-forward */
} sreq;

struct sched {
    sched_config cfg;
    int32_t *eos;
    kv_pool *pool;
    radix_cache *rc;            /* NULL when cache_off */
    sreq **waiting;
    int32_t n_waiting, cap_waiting;
    sreq **running;             /* admission order; [max_running] */
    int32_t n_running;
    sgl_result **done;
    int32_t done_head, n_done, cap_done;
    int64_t step_no;
    uint64_t next_seq;
    uint64_t rng;               /* RANDOM policy: xorshift state (fixed seed) */
    model_seq *seqs;            /* [max_running] step scratch */
    sreq **batch;
    float *logits;
    int64_t cap_logits;
    float *row;                 /* [vocab] masked copy of a logits row */
    int32_t *top_ids;           /* [vocab] */
    float *top_lps;
    uint32_t *mask;             /* [cons_mask_words] when a vocab is given */
    char *fbuf;                 /* [FORCED_CAP] jump-forward bytes (token bytes first) */
    sgl_engine_metrics m;
};

/* Longest jump-forward appended at once (bytes); the rest follows after the
 * next token. */
enum { FORCED_CAP = 4096 };

sched_config sched_config_default(void) {
    sched_config c = {0};
    c.policy = SGL_SCHED_LPM;
    c.max_batch_tokens = 2048;
    c.chunk_size = 512;
    c.max_running = 64;
    return c;
}

/* ---- requests ------------------------------------------------------------ */

static void logprob_free(sgl_token_logprob *lp) {
    free(lp->top_ids);
    free(lp->top_logprobs);
}

static void req_free(sreq *r) {
    if (!r) return;
    free(r->tok);
    free(r->slots);
    for (int32_t i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r->stop);
    free(r->stop_ids);
    sampler_state_free(r->ss);
    sgl_strbuf_free(&r->text);
    for (int32_t i = 0; i < r->n_lps; i++) logprob_free(&r->lps[i]);
    free(r->lps);
    if (r->ilps)
        for (int32_t i = 0; i < r->n_prompt - r->lp_first; i++) logprob_free(&r->ilps[i]);
    free(r->ilps);
    free(r->stop_str);
    free(r->error);
    cons_matcher_free(r->cm);
    free(r);
}

static int req_reserve(sreq *r, int32_t n) {
    if (n <= r->cap) return 0;
    int32_t cap = r->cap ? r->cap : 16;
    while (cap < n) cap *= 2;
    int32_t *t = realloc(r->tok, sizeof(int32_t) * (size_t)cap);
    if (!t) return -1;
    r->tok = t;
    int32_t *sl = realloc(r->slots, sizeof(int32_t) * (size_t)cap);
    if (!sl) return -1;
    r->slots = sl;
    r->cap = cap;
    return 0;
}

/* Gives up the request's KV: into the radix cache when `keep` and the cache
 * is on (radix_insert takes every slot), else own slots back to the pool.
 * Unlocks its prefix. */
static void req_drop_kv(sched *s, sreq *r, bool keep) {
    bool released = false;
    if (keep && s->rc && r->n_computed > 0)
        released = radix_insert(s->rc, r->tok, r->slots, r->n_computed, NULL) >= 0;
    if (!released && r->n_computed > r->n_locked)
        kv_pool_release(s->pool, r->slots + r->n_locked, r->n_computed - r->n_locked);
    if (s->rc && r->lock_node) radix_unlock(s->rc, r->lock_node);
    r->lock_node = NULL;
    r->n_computed = r->n_locked = 0;
}

/* After a prefill chunk: put the computed tokens in the cache and lock them,
 * so waiting requests with the same prefix can share them right away. */
static void req_cache_progress(sched *s, sreq *r) {
    if (!s->rc || r->n_computed <= r->n_locked) return;
    if (radix_insert(s->rc, r->tok, r->slots, r->n_computed, NULL) < 0) return;
    radix_match_result res;
    radix_match(s->rc, r->tok, r->n_computed, r->slots, &res);
    radix_lock(s->rc, res.last_node);
    if (r->lock_node) radix_unlock(s->rc, r->lock_node);
    r->lock_node = res.last_node;
    /* A split that could not be allocated leaves a shorter match: the rest is
     * in the cache (unlocked) and is simply computed again. */
    r->n_locked = r->n_computed = res.len;
}

static int done_push(sched *s, sgl_result *res) {
    if (s->done_head + s->n_done == s->cap_done) {
        if (s->done_head > 0) {
            memmove(s->done, s->done + s->done_head, sizeof(sgl_result *) * (size_t)s->n_done);
            s->done_head = 0;
        } else {
            int32_t cap = s->cap_done ? s->cap_done * 2 : 64;
            sgl_result **d = realloc(s->done, sizeof(sgl_result *) * (size_t)cap);
            if (!d) return -1;
            s->done = d;
            s->cap_done = cap;
        }
    }
    s->done[s->done_head + s->n_done++] = res;
    return 0;
}

/* How much of r's text may go out in a partial result now: not a tail that
 * could still turn into a stop string (the longest end of the text that is a
 * prefix of some stop string), nor an incomplete UTF-8 sequence at the end.
 * Before min_new_tokens stop strings are not looked for yet, and a match found
 * then may start anywhere in the last max_stop_len bytes: nothing goes out.
 * Once they are, every later match ends in bytes still to come, so it can only
 * start inside the held-back tail: the text already sent is never cut. */
static size_t stream_safe_len(const sreq *r) {
    size_t n = r->text.len;
    if (n <= r->sent_text) return r->sent_text;
    if (r->n_stop > 0) {
        if (r->n_gen < r->p.min_new_tokens) return r->sent_text;
        size_t hold = 0;
        for (int32_t i = 0; i < r->n_stop; i++) {
            size_t l = strlen(r->stop[i]);
            for (size_t k = SGL_MIN(l, n - r->sent_text); k > hold; k--)
                if (!memcmp(r->text.data + n - k, r->stop[i], k)) {
                    hold = k;
                    break;
                }
        }
        n -= hold;
    }
    /* uni_valid_prefix_len: k bytes that start a valid sequence but stop short */
    for (size_t k = 1; k <= 3 && k <= n - r->sent_text; k++)
        if (uni_valid_prefix_len((const uint8_t *)r->text.data + n - k, k) == k) {
            n -= k;
            break;
        }
    return n;
}

/* Queues a partial result with r's text and tokens since the last one: the
 * safe part of the text, or (finishing) all that is left of it. Nothing is
 * queued when there is nothing new. */
static void req_stream(sched *s, sreq *r, bool finishing) {
    size_t end = finishing ? r->text.len : stream_safe_len(r);
    if (end < r->sent_text) end = r->sent_text; /* cannot happen: see stream_safe_len */
    int32_t new_tok = r->n_gen - r->sent_tok;
    if (end == r->sent_text && new_tok <= 0) return;
    sgl_result *res = calloc(1, sizeof *res);
    if (!res) return;
    res->id = r->id;
    res->user_tag = r->user_tag;
    res->kind = r->kind;
    res->partial = true;
    res->finish = SGL_FINISH_NONE;
    res->stop_token = -1;
    res->text_len = end - r->sent_text;
    res->text = malloc(res->text_len + 1);
    res->n_tokens = SGL_MAX(new_tok, 0);
    res->tokens = malloc(sizeof(int32_t) * (size_t)(res->n_tokens ? res->n_tokens : 1));
    if (!res->text || !res->tokens) {
        sgl_result_free(res); /* the next partial or the final result carries it */
        return;
    }
    memcpy(res->text, r->text.data ? r->text.data + r->sent_text : "", res->text_len);
    res->text[res->text_len] = '\0';
    if (res->n_tokens)
        memcpy(res->tokens, r->tok + r->n_prompt + r->sent_tok,
               sizeof(int32_t) * (size_t)res->n_tokens);
    res->prompt_tokens = r->n_prompt;
    res->completion_tokens = r->n_gen;
    res->cached_tokens = r->cached_tokens;
    if (done_push(s, res) < 0) {
        sgl_result_free(res);
        return;
    }
    r->sent_text = end;
    r->sent_tok = r->n_gen;
}

/* Ends r: its KV goes to the cache (unless the batch failed), a result is
 * queued (after a last partial when streaming), r is freed. The caller
 * removes r from its list. */
static void req_finish(sched *s, sreq *r, bool keep_kv) {
    req_drop_kv(s, r, keep_kv);
    if (r->stream) req_stream(s, r, true);
    sgl_result *res = calloc(1, sizeof *res);
    if (res) {
        res->id = r->id;
        res->user_tag = r->user_tag;
        res->kind = r->kind;
        res->finish = r->finish;
        res->stop_str = r->stop_str;
        r->stop_str = NULL;
        res->stop_token = r->stop_token;
        res->error = r->error;
        r->error = NULL;
        res->text_len = r->text.len;
        res->text = sgl_strbuf_take(&r->text);
        if (!res->text) res->text = sgl_strdup("");
        res->n_tokens = r->n_gen;
        res->tokens = malloc(sizeof(int32_t) * (size_t)(r->n_gen ? r->n_gen : 1));
        if (res->tokens && r->n_gen)
            memcpy(res->tokens, r->tok + r->n_prompt, sizeof(int32_t) * (size_t)r->n_gen);
        res->prompt_tokens = r->n_prompt;
        res->completion_tokens = r->n_gen;
        res->cached_tokens = r->cached_tokens;
        res->forced_tokens = r->n_forced;
        res->logprobs = r->lps;
        res->n_logprobs = r->n_lps;
        r->lps = NULL;
        r->n_lps = 0;
        if (r->lp_first >= 0) {
            res->input_logprobs = r->ilps;
            res->n_input_logprobs = r->n_prompt - r->lp_first;
            r->ilps = NULL;
        }
        if (done_push(s, res) < 0) sgl_result_free(res);
    }
    s->m.requests_done++;
    req_free(r);
}

static void req_abort(sched *s, sreq *r, const char *msg, bool keep_kv) {
    r->finish = SGL_FINISH_ABORT;
    free(r->error);
    r->error = sgl_strdup(msg);
    req_finish(s, r, keep_kv);
}

/* ---- construction -------------------------------------------------------- */

sched *sched_new(const sched_config *cfg, kv_pool *pool, sgl_error *err) {
    if (!cfg->forward || cfg->vocab < 1 || cfg->max_batch_tokens < 1 || cfg->max_running < 1) {
        sgl_error_set(err, "scheduler: invalid config (forward, vocab, budget, max_running)");
        return NULL;
    }
    sched *s = calloc(1, sizeof *s);
    if (!s) goto oom;
    s->cfg = *cfg;
    if (s->cfg.starve_steps <= 0) s->cfg.starve_steps = 256;
    if (s->cfg.starve_overtaken == 0) s->cfg.starve_overtaken = s->cfg.max_running;
    if (s->cfg.share_min == 0) s->cfg.share_min = 1;
    if (s->cfg.decode_reserve <= 0) s->cfg.decode_reserve = 16;
    if (s->cfg.chunk_size < 0) s->cfg.chunk_size = 0;
    s->pool = pool;
    s->eos = malloc(sizeof(int32_t) * (size_t)(cfg->n_eos + 1));
    if (!s->eos) goto oom;
    if (cfg->n_eos) memcpy(s->eos, cfg->eos_ids, sizeof(int32_t) * (size_t)cfg->n_eos);
    s->cfg.eos_ids = s->eos;
    if (!cfg->cache_off && !(s->rc = radix_new(pool))) goto oom;
    s->running = calloc((size_t)cfg->max_running, sizeof *s->running);
    s->seqs = calloc((size_t)cfg->max_running, sizeof *s->seqs);
    s->batch = calloc((size_t)cfg->max_running, sizeof *s->batch);
    s->row = malloc(sizeof(float) * (size_t)cfg->vocab);
    s->top_ids = malloc(sizeof(int32_t) * (size_t)cfg->vocab);
    s->top_lps = malloc(sizeof(float) * (size_t)cfg->vocab);
    if (!s->running || !s->seqs || !s->batch || !s->row || !s->top_ids || !s->top_lps) goto oom;
    s->cfg.cons_vocab = NULL;
    if (cfg->cons_vocab && sched_set_cons_vocab(s, cfg->cons_vocab, err) < 0) {
        sched_free(s);
        return NULL;
    }
    s->m.pool_slots = pool->n_slots;
    return s;
oom:
    sched_free(s);
    sgl_error_set(err, "scheduler: out of memory");
    return NULL;
}

int sched_set_cons_vocab(sched *s, const cons_vocab *v, sgl_error *err) {
    if (s->cfg.cons_vocab) return sgl_error_set(err, "scheduler: constraint vocabulary already set");
    if (cons_vocab_size(v) > s->cfg.vocab)
        return sgl_error_set(err, "scheduler: constraint vocabulary larger than the model's");
    s->mask = malloc(sizeof(uint32_t) * cons_mask_words(v));
    s->fbuf = malloc(FORCED_CAP + 64);
    if (!s->mask || !s->fbuf) {
        free(s->mask);
        free(s->fbuf);
        s->mask = NULL;
        s->fbuf = NULL;
        return sgl_error_set(err, "scheduler: out of memory");
    }
    s->cfg.cons_vocab = v;
    return 0;
}

void sched_free(sched *s) {
    if (!s) return;
    for (int32_t i = 0; i < s->n_running; i++) {
        req_drop_kv(s, s->running[i], false);
        req_free(s->running[i]);
    }
    for (int32_t i = 0; i < s->n_waiting; i++) req_free(s->waiting[i]);
    for (int32_t i = 0; i < s->n_done; i++) sgl_result_free(s->done[s->done_head + i]);
    radix_free(s->rc);
    free(s->eos);
    free(s->waiting);
    free(s->running);
    free(s->done);
    free(s->seqs);
    free(s->batch);
    free(s->logits);
    free(s->row);
    free(s->top_ids);
    free(s->top_lps);
    free(s->mask);
    free(s->fbuf);
    free(s);
}

/* ---- constraints --------------------------------------------------------- */

/* Sets up r's matcher: token healing backs off the prompt's last token (not a
 * special one) and makes its bytes the matcher's prefix. Returns 0 (*why set
 * when the request must be refused), or -1 with err when memory runs out. */
static int req_constrain(sched *s, sreq *r, cons_program *prog, bool heal, const char **why,
                         sgl_error *err) {
    if (!s->cfg.cons_vocab) {
        *why = "this engine has no vocabulary index for constrained decoding or token healing";
        return 0;
    }
    const char *prefix = NULL;
    size_t n_prefix = 0;
    if (heal && r->n_prompt >= 2 && s->cfg.piece) {
        int32_t last = r->tok[r->n_prompt - 1];
        if (last >= 0 && last < s->cfg.vocab) {
            prefix = s->cfg.piece(s->cfg.piece_ctx, last, true, &n_prefix);
            if (prefix && n_prefix) {
                r->n_prompt--;
                r->n_tok--;
            } else {
                prefix = NULL;
                n_prefix = 0;
            }
        }
    }
    if (!prog && !n_prefix) return 0; /* healing asked, nothing to heal */
    if (!(r->cm = cons_matcher_new(prog, s->cfg.cons_vocab, prefix, n_prefix, err))) return -1;
    r->constrained = prog != NULL;
    r->heal_prefix = r->heal_left = n_prefix;
    r->jf = r->p.jump_forward && !r->p.return_logprob && s->cfg.encode && s->cfg.piece;
    return 0;
}

/* Appends output bytes to r's text, leaving out what token healing re-generated. */
static void text_append(sreq *r, const char *b, size_t n) {
    size_t skip = SGL_MIN(n, r->heal_left);
    r->heal_left -= skip;
    if (n > skip) sgl_strbuf_append(&r->text, b + skip, n - skip);
}

/* Appends generated token t (KV not computed yet): sampler counts, token
 * list, text. The caller has reserved room. */
static void append_token(sched *s, sreq *r, int32_t t) {
    sampler_state_accept(r->ss, t);
    r->tok[r->n_tok++] = t;
    r->n_gen++;
    s->m.generated_tokens++;
    if (s->cfg.piece) {
        size_t len = 0;
        const char *piece = s->cfg.piece(s->cfg.piece_ctx, t, r->p.skip_special_tokens, &len);
        if (piece && len) text_append(r, piece, len);
    }
}

/* Jump-forward. The bytes r's matcher forces from here (beyond a healing
 * prefix still pending) are accepted and encoded together with the bytes of
 * `last` (the token just sampled, whose KV is not computed yet; -1: none);
 * the resulting tokens replace `last` in *out (caller-owned array of *n_out
 * ids, malloc'd). Nothing is forced, or the text does not re-encode to
 * itself (a byte the vocabulary lacks): *n_out is 0 and the matcher is
 * unchanged. room caps the tokens kept (the matcher still moves past every
 * forced byte: the request then ends by length). Returns 0, or -1 with err. */
static int req_jump(sched *s, sreq *r, int32_t last, int32_t room, int32_t **out,
                    int32_t *n_out, bool *truncated, sgl_error *err) {
    *n_out = 0;
    *out = NULL;
    *truncated = false;
    size_t head = 0;
    if (last >= 0) {
        const char *pc = s->cfg.piece(s->cfg.piece_ctx, last, false, &head);
        if (!pc || head > 64) return 0;
        memcpy(s->fbuf, pc, head);
    }
    size_t n = cons_matcher_forced(r->cm, s->fbuf + head, FORCED_CAP);
    /* A healing prefix alone is not a jump: re-encoding it would give back
     * the very token healing removed. */
    if (n == 0 || (last < 0 && cons_matcher_position(r->cm) == 0 && n <= r->heal_prefix))
        return 0;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (s->cfg.encode(s->cfg.encode_ctx, s->fbuf, head + n, &ids, &n_ids, err) < 0) return -1;
    /* the tokens must spell exactly the text (encoders may drop bytes) */
    size_t at = 0;
    bool same = n_ids > 0;
    for (size_t i = 0; same && i < n_ids; i++) {
        size_t len = 0;
        const char *pc = ids[i] >= 0 && ids[i] < s->cfg.vocab
                             ? s->cfg.piece(s->cfg.piece_ctx, ids[i], false, &len)
                             : NULL;
        if (!pc || at + len > head + n || memcmp(pc, s->fbuf + at, len)) same = false;
        at += len;
    }
    if (!same || at != head + n || cons_matcher_accept_bytes(r->cm, s->fbuf + head, n) < 0) {
        free(ids);
        return 0;
    }
    if ((int64_t)n_ids > room) {
        n_ids = (size_t)SGL_MAX(room, 0);
        *truncated = true;
    }
    *out = ids;
    *n_out = (int32_t)n_ids;
    return 0;
}

/* Appends what the constraint forces before the first token (after the
 * prompt; prefilled with it). Returns 0, or -1 with err. */
static int req_jump_start(sched *s, sreq *r, sgl_error *err) {
    int32_t *ids, n;
    bool trunc;
    int32_t room = r->p.max_new_tokens;
    if (s->cfg.max_context > 0) room = SGL_MIN(room, s->cfg.max_context - 1 - r->n_tok);
    if (room <= 0) return 0;
    if (req_jump(s, r, -1, room, &ids, &n, &trunc, err) < 0) return -1;
    if (n == 0) {
        free(ids);
        return 0;
    }
    if (req_reserve(r, r->n_tok + n + 1) < 0) {
        free(ids);
        return sgl_error_set(err, "scheduler: out of memory");
    }
    for (int32_t i = 0; i < n; i++) append_token(s, r, ids[i]);
    r->n_forced += n;
    s->m.forced_tokens += n;
    free(ids);
    return 0;
}

int sched_add(sched *s, const sched_input *in, sgl_error *err) {
    const sgl_sampling_params *p = in->params;
    sreq *r = calloc(1, sizeof *r);
    if (!r) goto oom;
    r->id = in->id;
    r->user_tag = in->user_tag;
    r->kind = in->kind;
    r->stream = in->stream && in->kind == SGL_REQ_GENERATE;
    r->p = *p;
    r->p.stop = NULL;
    r->p.stop_token_ids = NULL;
    r->p.regex = r->p.json_schema = r->p.grammar = NULL;
    r->p.choices = NULL;
    r->p.n_choices = 0;
    r->stop_token = -1;
    r->lp_first = -1;
    r->seq = s->next_seq++;
    r->arrival_step = s->step_no;
    if (in->kind == SGL_REQ_PREFILL) r->p.max_new_tokens = 0;
    if (r->p.max_new_tokens < 0) r->p.max_new_tokens = 0;
    if (req_reserve(r, in->n_tokens + 1) < 0) goto oom;
    if (in->n_tokens > 0) memcpy(r->tok, in->tokens, sizeof(int32_t) * (size_t)in->n_tokens);
    r->n_tok = r->n_prompt = in->n_tokens;
    const char *why = NULL;
    if (in->kind == SGL_REQ_GENERATE && (in->constraint || p->token_healing)) {
        if (req_constrain(s, r, in->constraint, p->token_healing, &why, err) < 0) goto fail;
    }
    if (p->n_stop > 0) {
        if (!(r->stop = calloc((size_t)p->n_stop, sizeof(char *)))) goto oom;
        for (int32_t i = 0; i < p->n_stop; i++) {
            if (!(r->stop[i] = sgl_strdup(p->stop[i] ? p->stop[i] : ""))) goto oom;
            r->n_stop++;
            size_t l = strlen(r->stop[i]);
            if (l > r->max_stop_len) r->max_stop_len = l;
        }
    }
    if (p->n_stop_token_ids > 0) {
        if (!(r->stop_ids = malloc(sizeof(int32_t) * (size_t)p->n_stop_token_ids))) goto oom;
        memcpy(r->stop_ids, p->stop_token_ids, sizeof(int32_t) * (size_t)p->n_stop_token_ids);
        r->n_stop_ids = p->n_stop_token_ids;
    }
    r->sp = sampler_params_default();
    r->sp.temperature = p->temperature;
    r->sp.top_k = p->top_k > 0 ? p->top_k : 0;
    r->sp.top_p = p->top_p;
    r->sp.min_p = p->min_p;
    r->sp.repetition_penalty = p->repetition_penalty;
    r->sp.frequency_penalty = p->frequency_penalty;
    r->sp.presence_penalty = p->presence_penalty;
    r->sp.penalize_prompt = p->penalize_prompt;
    r->sp.seed = p->seed;
    if (!(r->ss = sampler_state_new(s->cfg.vocab, p->seed, err))) goto fail;
    sampler_state_add_prompt(r->ss, r->tok, r->n_prompt);
    if (p->logprob_start_len >= 0 && SGL_MAX(p->logprob_start_len, 1) < r->n_prompt) {
        r->lp_first = SGL_MAX(p->logprob_start_len, 1);
        r->ilps = calloc((size_t)(r->n_prompt - r->lp_first), sizeof *r->ilps);
        if (!r->ilps) goto oom;
    }

    if (why) {
    } else if (in->n_tokens < 1) why = "empty prompt";
    else if (in->n_tokens >= s->pool->n_slots) why = "prompt longer than the KV pool";
    else if (s->cfg.max_context > 0 && in->n_tokens >= s->cfg.max_context)
        why = "prompt longer than the model context";
    else
        for (int32_t i = 0; i < in->n_tokens && !why; i++)
            if (in->tokens[i] < 0 || in->tokens[i] >= s->cfg.vocab) why = "token id out of range";
    if (why) {
        req_abort(s, r, why, false);
        return 0;
    }
    if (r->constrained) s->m.constrained_requests++;
    if (r->cm && r->jf && r->p.max_new_tokens > 0 && req_jump_start(s, r, err) < 0) goto fail;
    if (s->n_waiting == s->cap_waiting) {
        int32_t cap = s->cap_waiting ? s->cap_waiting * 2 : 64;
        sreq **w = realloc(s->waiting, sizeof(sreq *) * (size_t)cap);
        if (!w) goto oom;
        s->waiting = w;
        s->cap_waiting = cap;
    }
    s->waiting[s->n_waiting++] = r;
    return 0;
oom:
    sgl_error_set(err, "scheduler: out of memory");
fail:
    req_free(r);
    return -1;
}

/* ---- one step ------------------------------------------------------------ */

static bool ensure_free(sched *s, int32_t need) {
    int32_t free_now = kv_pool_free_count(s->pool);
    if (free_now < need && s->rc) radix_evict(s->rc, need - free_now);
    return kv_pool_free_count(s->pool) >= need;
}

static int waiting_push(sched *s, sreq *r) {
    if (s->n_waiting == s->cap_waiting) {
        int32_t cap = s->cap_waiting ? s->cap_waiting * 2 : 64;
        sreq **w = realloc(s->waiting, sizeof(sreq *) * (size_t)cap);
        if (!w) return -1;
        s->waiting = w;
        s->cap_waiting = cap;
    }
    s->waiting[s->n_waiting++] = r;
    return 0;
}

/* Sends the most recently admitted running request back to wait. */
static void retract_last(sched *s) {
    sreq *r = s->running[--s->n_running];
    req_drop_kv(s, r, true);
    r->step_chunk = 0;
    s->m.retractions++;
    if (waiting_push(s, r) < 0) req_abort(s, r, "out of memory while retracting", false);
}

/* Longest prefix a request may take from the cache: at least its last token
 * must run (for logits), and the rows for input logprobs must run too. */
static int32_t match_cap(const sreq *r) {
    int32_t cap = r->n_tok - 1;
    if (r->lp_first >= 1 && !r->input_lp_done) cap = SGL_MIN(cap, r->lp_first - 1);
    return cap;
}

/* Whether r should wait for a request still computing its prompt: r would
 * take at least share_min more tokens from the cache once that prompt is in
 * it (the tokens they share beyond r's cached prefix, up to what r may take
 * from the cache at all, see match_cap). Holding r back then costs it a step
 * or so and saves computing the shared tokens twice, as SGLang's cache-aware
 * scheduling does for requests that share a prefix not cached yet. Called
 * with r->peek up to date. */
static bool shares_with_prefill(const sched *s, const sreq *r) {
    if (s->cfg.share_min < 0 || !s->rc) return false; /* no cache: nothing to wait for */
    int32_t cap = match_cap(r);
    if (cap < r->peek + s->cfg.share_min) return false;
    for (int32_t i = 0; i < s->n_running; i++) {
        const sreq *q = s->running[i];
        if (q->n_computed >= q->n_prompt) continue;
        int32_t n = SGL_MIN(cap, q->n_prompt), l = r->peek;
        if (n < r->peek + s->cfg.share_min || memcmp(r->tok, q->tok, sizeof(int32_t) * (size_t)r->peek) != 0)
            continue;
        while (l < n && r->tok[l] == q->tok[l]) l++;
        if (l >= r->peek + s->cfg.share_min) return true;
    }
    return false;
}


static int cmp_fcfs(const void *a, const void *b) {
    const sreq *x = *(const sreq *const *)a, *y = *(const sreq *const *)b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int cmp_lpm(const void *a, const void *b) {
    const sreq *x = *(const sreq *const *)a, *y = *(const sreq *const *)b;
    if (x->starving != y->starving) return x->starving ? -1 : 1;
    if (!x->starving && x->peek != y->peek) return x->peek > y->peek ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Future slots a running request has been promised beyond this step: the
 * rest of its prompt and a capped share of its remaining output. */
static int64_t promised_capped(const sched *s, const sreq *r) {
    int64_t rest = r->n_tok - r->n_computed - r->step_chunk;
    if (r->kind == SGL_REQ_GENERATE)
        rest += SGL_MIN(SGL_MAX(r->p.max_new_tokens - r->n_gen, 0), s->cfg.decode_reserve);
    return rest;
}

/* Plans the chunks of the running requests (decodes first) and allocates
 * their slots, retracting requests while memory is short. Returns the
 * token budget left. */
static int32_t plan_running(sched *s) {
    for (;;) {
        int32_t budget = s->cfg.max_batch_tokens, need = 0;
        for (int pass = 0; pass < 2; pass++)
            for (int32_t i = 0; i < s->n_running; i++) {
                sreq *r = s->running[i];
                int32_t want = r->n_tok - r->n_computed;
                if ((want == 1) != (pass == 0)) continue;
                int32_t chunk = want;
                if (s->cfg.chunk_size > 0) chunk = SGL_MIN(chunk, s->cfg.chunk_size);
                chunk = SGL_MIN(chunk, budget);
                r->step_chunk = chunk;
                budget -= chunk;
                need += chunk;
            }
        if (ensure_free(s, need)) {
            for (int32_t i = 0; i < s->n_running; i++) {
                sreq *r = s->running[i];
                kv_pool_alloc(s->pool, r->step_chunk, r->slots + r->n_computed);
            }
            return budget;
        }
        if (s->n_running == 1) {
            sreq *r = s->running[--s->n_running];
            req_abort(s, r, "KV pool too small for this request", true);
        } else {
            retract_last(s);
        }
    }
}

static void admit(sched *s, int32_t budget) {
    if (s->n_waiting == 0 || s->n_running >= s->cfg.max_running || budget <= 0) return;
    for (int32_t i = 0; i < s->n_waiting; i++) {
        sreq *r = s->waiting[i];
        r->peek = s->rc ? radix_peek(s->rc, r->tok, match_cap(r)) : 0;
        r->starving = s->step_no - r->arrival_step >= s->cfg.starve_steps ||
                      (s->cfg.starve_overtaken > 0 && r->overtaken >= s->cfg.starve_overtaken);
    }
    if (s->cfg.policy == SGL_SCHED_RANDOM) {
        if (!s->rng) s->rng = 0x9e3779b97f4a7c15ull;
        for (int32_t i = s->n_waiting - 1; i > 0; i--) { /* Fisher-Yates */
            s->rng ^= s->rng << 13, s->rng ^= s->rng >> 7, s->rng ^= s->rng << 17;
            int32_t j = (int32_t)(s->rng % (uint64_t)(i + 1));
            sreq *t = s->waiting[i];
            s->waiting[i] = s->waiting[j];
            s->waiting[j] = t;
        }
    } else {
        qsort(s->waiting, (size_t)s->n_waiting, sizeof(sreq *),
              s->cfg.policy == SGL_SCHED_FCFS ? cmp_fcfs : cmp_lpm);
    }
    int64_t promise = 0;
    int32_t first_new = s->n_running;
    for (int32_t i = 0; i < s->n_running; i++) promise += promised_capped(s, s->running[i]);
    int32_t kept = 0;
    bool stop = false;
    for (int32_t i = 0; i < s->n_waiting; i++) {
        sreq *r = s->waiting[i];
        if (stop || s->n_running >= s->cfg.max_running || budget <= 0 ||
            shares_with_prefill(s, r)) {
            s->waiting[kept++] = r;
            continue;
        }
        radix_match_result res = {0, NULL};
        if (s->rc) {
            radix_match(s->rc, r->tok, match_cap(r), r->slots, &res);
            radix_lock(s->rc, res.last_node);
        }
        int32_t m = res.len, rest = r->n_tok - m;
        int64_t future = rest;
        if (r->kind == SGL_REQ_GENERATE)
            future += SGL_MIN(SGL_MAX(r->p.max_new_tokens - r->n_gen, 0), s->cfg.decode_reserve);
        if (s->n_running == 0) future = rest; /* alone it always fits eventually */
        int64_t avail = kv_pool_free_count(s->pool) + (s->rc ? radix_evictable_tokens(s->rc) : 0);
        int32_t chunk = rest;
        if (s->cfg.chunk_size > 0) chunk = SGL_MIN(chunk, s->cfg.chunk_size);
        chunk = SGL_MIN(chunk, budget);
        if (promise + future > avail || !ensure_free(s, chunk)) {
            if (s->rc) radix_unlock(s->rc, res.last_node);
            stop = true;
            s->waiting[kept++] = r;
            continue;
        }
        kv_pool_alloc(s->pool, chunk, r->slots + m);
        r->n_locked = r->n_computed = m;
        r->lock_node = res.last_node;
        r->step_chunk = chunk;
        if (!r->admitted_once) {
            r->admitted_once = true;
            r->cached_tokens = m;
            s->m.prompt_tokens += r->n_prompt;
            s->m.cached_tokens += m;
        }
        promise += future - chunk;
        budget -= chunk;
        s->running[s->n_running++] = r;
    }
    s->n_waiting = kept;
    /* LPM lets requests with a longer cached prefix go first; one that later
     * arrivals keep passing becomes starving (cmp_lpm puts it first), so its
     * wait is bounded by admissions, not only by steps, whose length varies
     * with the load. */
    for (int32_t i = 0; i < s->n_waiting; i++)
        for (int32_t j = first_new; j < s->n_running; j++)
            s->waiting[i]->overtaken += s->running[j]->seq > s->waiting[i]->seq;
}

static int logprob_fill(sched *s, sgl_token_logprob *lp, const float *row, int32_t token,
                        int32_t top_n) {
    top_n = SGL_MIN(SGL_MAX(top_n, 0), s->cfg.vocab);
    int32_t n_top = 0;
    lp->token = token;
    lp->logprob = sampler_logprobs(row, s->cfg.vocab, token, top_n, s->top_ids, s->top_lps, &n_top);
    lp->n_top = 0;
    if (n_top > 0) {
        lp->top_ids = malloc(sizeof(int32_t) * (size_t)n_top);
        lp->top_logprobs = malloc(sizeof(float) * (size_t)n_top);
        if (!lp->top_ids || !lp->top_logprobs) return -1;
        memcpy(lp->top_ids, s->top_ids, sizeof(int32_t) * (size_t)n_top);
        memcpy(lp->top_logprobs, s->top_lps, sizeof(float) * (size_t)n_top);
        lp->n_top = n_top;
    }
    return 0;
}

static bool is_stop_token(const sched *s, const sreq *r, int32_t t) {
    for (int32_t i = 0; i < s->cfg.n_eos; i++)
        if (s->eos[i] == t) return true;
    for (int32_t i = 0; i < r->n_stop_ids; i++)
        if (r->stop_ids[i] == t) return true;
    return false;
}

/* Looks for a stop string ending in the bytes appended since old_len; cuts
 * the text before the earliest one. Returns true when one matched. */
static bool match_stop_str(sreq *r, size_t old_len) {
    size_t from = old_len > r->max_stop_len ? old_len - r->max_stop_len + 1 : 0;
    const char *best = NULL;
    int32_t best_i = -1;
    for (int32_t i = 0; i < r->n_stop; i++) {
        size_t l = strlen(r->stop[i]);
        if (l == 0 || r->text.len < from + l) continue;
        const char *hit = memmem(r->text.data + from, r->text.len - from, r->stop[i], l);
        if (hit && (!best || hit < best)) {
            best = hit;
            best_i = i;
        }
    }
    if (!best) return false;
    r->text.len = (size_t)(best - r->text.data);
    r->text.data[r->text.len] = '\0';
    r->stop_str = sgl_strdup(r->stop[best_i]);
    return true;
}

/* Sets the logits of the tokens r's matcher does not allow to -inf in row
 * (a copy). Returns the number allowed. */
static int32_t mask_row(sched *s, sreq *r, float *row) {
    int32_t n_ok = cons_matcher_mask(r->cm, s->mask);
    int32_t nv = cons_vocab_size(s->cfg.cons_vocab);
    for (int32_t w = 0; w * 32 < nv; w++) {
        uint32_t bits = s->mask[w];
        if (bits == 0xffffffffu) continue;
        int32_t hi = SGL_MIN(32, nv - w * 32);
        for (int32_t b = 0; b < hi; b++)
            if (!(bits >> b & 1u)) row[w * 32 + b] = -INFINITY;
    }
    for (int32_t v = nv; v < s->cfg.vocab; v++) row[v] = -INFINITY;
    return n_ok;
}

/* The last logits row of a GENERATE request is ready: sample (under the
 * constraint's mask), record, jump forward, check for the end. Returns true
 * when r finished (r->finish set). */
static bool sample_next(sched *s, sreq *r, const float *row) {
    if (r->n_gen >= r->p.max_new_tokens) {
        /* Asked for no tokens but for alternatives: the next-token ones
         * (what CoT decoding branches on), as an entry without a token. */
        if (r->n_gen == 0 && r->p.return_logprob && r->p.top_logprobs_num > 0 && !r->lps &&
            (r->lps = calloc(1, sizeof *r->lps))) {
            r->cap_lps = 1;
            if (logprob_fill(s, &r->lps[0], row, -1, r->p.top_logprobs_num) == 0) r->n_lps = 1;
        }
        r->finish = SGL_FINISH_LENGTH;
        return true;
    }
    if (r->cm && r->constrained && !cons_matcher_can_continue(r->cm)) {
        r->finish = SGL_FINISH_STOP; /* everything was forced */
        return true;
    }
    const float *use = row;
    bool min_mask = r->n_gen < r->p.min_new_tokens && !r->p.ignore_eos;
    if (r->cm || min_mask) {
        memcpy(s->row, row, sizeof(float) * (size_t)s->cfg.vocab);
        use = s->row;
    }
    if (r->cm) {
        if (mask_row(s, r, s->row) == 0) {
            if (cons_matcher_accepting(r->cm)) {
                r->finish = SGL_FINISH_STOP;
            } else {
                r->finish = SGL_FINISH_ABORT;
                r->error = sgl_strdup("constraint: no token of the vocabulary continues the output");
            }
            return true;
        }
        /* under a constraint EOS is allowed only where the text is complete;
         * min_new_tokens then yields to the constraint */
        if (min_mask) {
            bool other = false;
            for (int32_t v = 0; v < s->cfg.vocab && !other; v++)
                if (s->row[v] != -INFINITY && !is_stop_token(s, r, v)) other = true;
            min_mask = other;
        }
    }
    if (min_mask) {
        for (int32_t i = 0; i < s->cfg.n_eos; i++)
            if (s->eos[i] >= 0 && s->eos[i] < s->cfg.vocab) s->row[s->eos[i]] = -INFINITY;
        for (int32_t i = 0; i < r->n_stop_ids; i++)
            if (r->stop_ids[i] >= 0 && r->stop_ids[i] < s->cfg.vocab)
                s->row[r->stop_ids[i]] = -INFINITY;
    }
    int32_t t = sampler_sample(r->ss, &r->sp, use);
    bool cons_end = false;
    if (r->cm) {
        if (cons_matcher_accept_token(r->cm, t) < 0) {
            r->finish = SGL_FINISH_ABORT;
            r->error = sgl_strdup("constraint: the sampled token is outside the mask");
            return true;
        }
        for (int32_t i = 0; i < s->cfg.n_eos; i++) cons_end |= s->eos[i] == t;
    }
    if (req_reserve(r, r->n_tok + 2) < 0) {
        r->finish = SGL_FINISH_ABORT;
        r->error = sgl_strdup("out of memory");
        return true;
    }
    if (r->p.return_logprob) {
        if (r->n_lps == r->cap_lps) {
            int32_t cap = r->cap_lps ? r->cap_lps * 2 : 16;
            sgl_token_logprob *l = realloc(r->lps, sizeof *l * (size_t)cap);
            if (l) {
                r->lps = l;
                r->cap_lps = cap;
            }
        }
        if (r->n_lps < r->cap_lps) {
            memset(&r->lps[r->n_lps], 0, sizeof r->lps[0]);
            logprob_fill(s, &r->lps[r->n_lps++], row, t, r->p.top_logprobs_num);
        }
    }
    bool can_stop = r->n_gen + 1 >= r->p.min_new_tokens;
    if (cons_end || (can_stop && !r->p.ignore_eos && is_stop_token(s, r, t))) {
        sampler_state_accept(r->ss, t);
        r->tok[r->n_tok++] = t;
        r->n_gen++;
        s->m.generated_tokens++;
        r->finish = SGL_FINISH_STOP;
        r->stop_token = t;
        return true;
    }
    /* jump-forward: t and the forced bytes after it, re-encoded */
    int32_t *ids = NULL, n_ids = 0;
    bool truncated = false;
    if (r->cm && r->jf) {
        int32_t room = r->p.max_new_tokens - r->n_gen;
        if (s->cfg.max_context > 0) room = SGL_MIN(room, s->cfg.max_context - r->n_tok);
        sgl_error jerr;
        if (room > 1 && (req_jump(s, r, t, room, &ids, &n_ids, &truncated, &jerr) < 0 ||
                         (n_ids > 0 && req_reserve(r, r->n_tok + n_ids + 1) < 0))) {
            free(ids);
            r->finish = SGL_FINISH_ABORT;
            r->error = sgl_strdup("out of memory");
            return true;
        }
    }
    size_t old = r->text.len;
    if (n_ids > 0) {
        for (int32_t i = 0; i < n_ids; i++) append_token(s, r, ids[i]);
        r->n_forced += n_ids - 1;
        s->m.forced_tokens += n_ids - 1;
    } else {
        append_token(s, r, t);
    }
    free(ids);
    can_stop = r->n_gen >= r->p.min_new_tokens;
    if (s->cfg.piece && can_stop && r->n_stop && match_stop_str(r, old)) {
        r->finish = SGL_FINISH_STOP;
        return true;
    }
    if (truncated || r->n_gen >= r->p.max_new_tokens ||
        (s->cfg.max_context > 0 && r->n_tok >= s->cfg.max_context)) {
        r->finish = SGL_FINISH_LENGTH;
        return true;
    }
    if (r->cm && r->constrained && !cons_matcher_can_continue(r->cm)) {
        r->finish = SGL_FINISH_STOP;
        return true;
    }
    return false;
}

int sched_step(sched *s, sgl_error *err) {
    sgl_error local;
    if (!err) err = &local;
    s->step_no++;
    for (int32_t i = 0; i < s->n_running; i++) s->running[i]->step_chunk = 0;
    for (int32_t i = 0; i < s->n_waiting; i++) s->waiting[i]->step_chunk = 0;
    int32_t budget = plan_running(s);
    admit(s, budget);

    /* Build the batch. */
    int32_t nb = 0;
    int64_t rows = 0;
    for (int32_t i = 0; i < s->n_running; i++) {
        sreq *r = s->running[i];
        if (r->step_chunk <= 0) continue;
        int32_t chunk = r->step_chunk, pos0 = r->n_computed;
        bool final = pos0 + chunk == r->n_tok;
        int32_t lf = chunk;
        if (final && r->kind == SGL_REQ_GENERATE) lf = chunk - 1;
        if (r->lp_first >= 1 && !r->input_lp_done) {
            int32_t lo = r->lp_first - 1, hi = r->n_prompt - 2; /* positions needing rows */
            if (lo < pos0 + chunk && hi >= pos0) lf = SGL_MIN(lf, SGL_MAX(lo - pos0, 0));
        }
        model_seq *q = &s->seqs[nb];
        q->n_new = chunk;
        q->tokens = r->tok + pos0;
        q->pos0 = pos0;
        q->n_ctx = pos0 + chunk;
        q->slots = r->slots;
        q->logits_from = lf;
        s->batch[nb++] = r;
        rows += chunk - lf;
    }
    if (nb == 0) return 0;
    if (rows * s->cfg.vocab > s->cap_logits) {
        float *l = realloc(s->logits, sizeof(float) * (size_t)(rows * s->cfg.vocab));
        if (!l) {
            sgl_error_set(err, "scheduler: out of memory for %lld logits rows", (long long)rows);
            goto fail;
        }
        s->logits = l;
        s->cap_logits = rows * s->cfg.vocab;
    }
    model_batch b = {nb, s->seqs};
    s->m.forward_calls++;
    for (int32_t i = 0; i < nb; i++) s->m.forward_tokens += s->seqs[i].n_new;
    if (s->cfg.forward(s->cfg.forward_ctx, s->pool, &b, rows ? s->logits : NULL, err) < 0)
        goto fail;

    const float *row = s->logits;
    for (int32_t i = 0; i < nb; i++) {
        sreq *r = s->batch[i];
        const model_seq *q = &s->seqs[i];
        for (int32_t j = q->logits_from; j < q->n_new; j++, row += s->cfg.vocab) {
            int32_t pos = q->pos0 + j;
            if (r->lp_first >= 1 && !r->input_lp_done && pos >= r->lp_first - 1 &&
                pos <= r->n_prompt - 2) {
                sgl_token_logprob *lp = &r->ilps[pos + 1 - r->lp_first];
                logprob_free(lp);
                memset(lp, 0, sizeof *lp);
                logprob_fill(s, lp, row, r->tok[pos + 1], r->p.top_logprobs_num);
            }
        }
        r->n_computed += q->n_new;
        if (r->lp_first >= 1 && r->n_computed >= r->n_prompt - 1) r->input_lp_done = true;
        bool final = r->n_computed == r->n_tok, finished = false;
        if (final && r->kind == SGL_REQ_GENERATE) {
            finished = sample_next(s, r, row - s->cfg.vocab);
        } else if (final) {
            r->finish = SGL_FINISH_LENGTH;
            finished = true;
        }
        if (finished) {
            r->step_chunk = -1; /* marks removal below */
        } else {
            if (q->n_new > 1) req_cache_progress(s, r);
            if (r->stream && final) req_stream(s, r, false);
        }
    }
    int32_t kept = 0;
    for (int32_t i = 0; i < s->n_running; i++) {
        sreq *r = s->running[i];
        if (r->step_chunk == -1) req_finish(s, r, true);
        else s->running[kept++] = r;
    }
    s->n_running = kept;
    return nb;
fail:
    /* The new KV of this batch is garbage: nothing of it goes to the cache. */
    for (int32_t i = 0; i < nb; i++) {
        s->batch[i]->n_computed += s->batch[i]->step_chunk; /* its slots, to release */
        s->batch[i]->step_chunk = -1;
    }
    kept = 0;
    for (int32_t i = 0; i < s->n_running; i++) {
        sreq *r = s->running[i];
        if (r->step_chunk == -1) {
            req_abort(s, r, err->msg, false);
        } else {
            s->running[kept++] = r;
        }
    }
    s->n_running = kept;
    return -1;
}

int sched_cancel(sched *s, uint64_t user_tag) {
    int n = 0;
    int32_t kept = 0;
    for (int32_t i = 0; i < s->n_waiting; i++) {
        sreq *r = s->waiting[i];
        if (r->user_tag == user_tag) {
            req_abort(s, r, "cancelled", false);
            n++;
        } else {
            s->waiting[kept++] = r;
        }
    }
    s->n_waiting = kept;
    kept = 0;
    for (int32_t i = 0; i < s->n_running; i++) {
        sreq *r = s->running[i];
        if (r->user_tag == user_tag) {
            req_abort(s, r, "cancelled", true);
            n++;
        } else {
            s->running[kept++] = r;
        }
    }
    s->n_running = kept;
    return n;
}

int64_t sched_flush_cache(sched *s, sgl_error *err) {
    if (sched_busy(s))
        return sgl_error_set(err, "cache not flushed: %d request%s running, %d waiting",
                             s->n_running, s->n_running == 1 ? "" : "s", s->n_waiting);
    return s->rc ? radix_evict(s->rc, INT32_MAX) : 0;
}

int sched_run_all(sched *s, sgl_error *err) {
    while (sched_busy(s)) {
        int n = sched_step(s, err);
        if (n < 0) return -1;
        if (n == 0 && sched_busy(s))
            return sgl_error_set(err, "scheduler: no progress with %d waiting", s->n_waiting);
    }
    return 0;
}

sgl_result *sched_pop(sched *s) {
    if (s->n_done == 0) return NULL;
    sgl_result *r = s->done[s->done_head++];
    if (--s->n_done == 0) s->done_head = 0;
    return r;
}

bool sched_busy(const sched *s) { return s->n_waiting > 0 || s->n_running > 0; }

void sched_metrics(const sched *s, sgl_engine_metrics *out) {
    *out = s->m;
    out->hit_rate = s->m.prompt_tokens ? (double)s->m.cached_tokens / (double)s->m.prompt_tokens : 0;
    out->running = s->n_running;
    out->waiting = s->n_waiting;
    out->evicted_tokens = s->rc ? radix_evicted_tokens(s->rc) : 0;
    out->cache_tokens = s->rc ? radix_cached_tokens(s->rc) : 0;
    out->pool_slots = s->pool->n_slots;
    out->pool_used = s->pool->n_slots - kv_pool_free_count(s->pool);
}

const radix_cache *sched_cache(const sched *s) { return s->rc; }

int sched_check(const sched *s, sgl_error *err) {
    if (s->rc && radix_check(s->rc, err) < 0) return -1;
    int64_t held = 0;
    for (int32_t i = 0; i < s->n_running; i++) {
        const sreq *r = s->running[i];
        if (r->n_locked > r->n_computed || r->n_computed > r->n_tok)
            return sgl_error_set(err, "request %llu: locked %d computed %d tokens %d",
                                 (unsigned long long)r->id, r->n_locked, r->n_computed, r->n_tok);
        held += r->n_computed - r->n_locked;
    }
    for (int32_t i = 0; i < s->n_waiting; i++)
        if (s->waiting[i]->n_computed != 0 || s->waiting[i]->lock_node)
            return sgl_error_set(err, "waiting request %llu holds KV",
                                 (unsigned long long)s->waiting[i]->id);
    int64_t cache = s->rc ? radix_cached_tokens(s->rc) : 0;
    if (kv_pool_free_count(s->pool) + cache + held != s->pool->n_slots)
        return sgl_error_set(err, "slots: free %d + cache %lld + requests %lld != %d",
                             kv_pool_free_count(s->pool), (long long)cache, (long long)held,
                             s->pool->n_slots);
    return 0;
}
