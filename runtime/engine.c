/* engine: the request API (see engine.h) and the local engine: a thread that
 * owns the model, KV pool and scheduler; callers submit through a pending
 * list and collect results from a completion queue, both under one mutex. */
#include "runtime/engine.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "runtime/constrain/constrain.h"
#include "runtime/model.h"
#include "runtime/scheduler.h"
#include "runtime/tokenizer.h"

/* ---- plain data ---------------------------------------------------------- */

sgl_sampling_params sgl_sampling_params_default(void) {
    sgl_sampling_params p = {0};
    p.max_new_tokens = 128;
    p.temperature = 1.0f;
    p.top_p = 1.0f;
    p.top_k = -1;
    p.repetition_penalty = 1.0f;
    p.skip_special_tokens = true;
    p.logprob_start_len = -1;
    p.jump_forward = true;
    return p;
}

static void token_logprobs_free(sgl_token_logprob *lp, int32_t n) {
    if (!lp) return;
    for (int32_t i = 0; i < n; i++) {
        free(lp[i].top_ids);
        free(lp[i].top_logprobs);
        free(lp[i].text);
        for (int32_t k = 0; lp[i].top_texts && k < lp[i].n_top; k++) free(lp[i].top_texts[k]);
        free(lp[i].top_texts);
    }
    free(lp);
}

static char *piece_dup(const sgl_tokenizer *tok, int32_t id) {
    size_t len = 0;
    const char *p = id >= 0 ? tok_piece(tok, id, &len) : NULL;
    return p ? sgl_strndup(p, len) : NULL;
}

/* Token texts of every logprob entry (SGLang's return_text_in_logprobs). */
static void logprob_texts(const sgl_tokenizer *tok, sgl_token_logprob *lp, int32_t n) {
    for (int32_t i = 0; lp && i < n; i++) {
        if (!lp[i].text) lp[i].text = piece_dup(tok, lp[i].token);
        if (lp[i].n_top > 0 && !lp[i].top_texts && (lp[i].top_texts = calloc((size_t)lp[i].n_top, sizeof(char *))))
            for (int32_t k = 0; k < lp[i].n_top; k++) lp[i].top_texts[k] = piece_dup(tok, lp[i].top_ids[k]);
    }
}

void sgl_result_free(sgl_result *r) {
    if (!r) return;
    free(r->stop_str);
    free(r->error);
    free(r->text);
    free(r->tokens);
    token_logprobs_free(r->logprobs, r->n_logprobs);
    token_logprobs_free(r->input_logprobs, r->n_input_logprobs);
    for (int32_t i = 0; i < r->n_choices; i++) {
        free(r->choices[i].tokens);
        free(r->choices[i].logprobs);
    }
    free(r->choices);
    free(r);
}

const char *sgl_finish_name(sgl_finish f) {
    switch (f) {
    case SGL_FINISH_STOP: return "stop";
    case SGL_FINISH_LENGTH: return "length";
    case SGL_FINISH_ABORT: return "abort";
    default: return "none";
    }
}

const char *sgl_sched_policy_name(sgl_sched_policy p) {
    return p == SGL_SCHED_FCFS ? "fcfs" : p == SGL_SCHED_RANDOM ? "random" : "lpm";
}

int sgl_sched_policy_parse(const char *name, sgl_sched_policy *out) {
    if (name && !strcmp(name, "lpm")) *out = SGL_SCHED_LPM;
    else if (name && !strcmp(name, "fcfs")) *out = SGL_SCHED_FCFS;
    else if (name && !strcmp(name, "random")) *out = SGL_SCHED_RANDOM;
    else return -1;
    return 0;
}

/* ---- engine handle ------------------------------------------------------- */

struct sgl_engine {
    const sgl_engine_ops *ops;
    void *ctx;
    pthread_mutex_t mu;
    uint64_t next_id;
};

sgl_engine *sgl_engine_new(const sgl_engine_ops *ops, void *ctx) {
    sgl_engine *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->ops = ops;
    e->ctx = ctx;
    e->next_id = 1;
    pthread_mutex_init(&e->mu, NULL);
    return e;
}

uint64_t sgl_engine_submit(sgl_engine *e, const sgl_request *req, sgl_error *err) {
    pthread_mutex_lock(&e->mu);
    uint64_t id = e->next_id++;
    pthread_mutex_unlock(&e->mu);
    return e->ops->submit(e->ctx, req, id, err) < 0 ? 0 : id;
}

sgl_result *sgl_engine_poll(sgl_engine *e) { return e->ops->wait(e->ctx, 0); }
sgl_result *sgl_engine_wait(sgl_engine *e, double timeout_s) {
    return e->ops->wait(e->ctx, timeout_s);
}
int sgl_engine_cancel(sgl_engine *e, uint64_t id) {
    return e->ops->cancel ? e->ops->cancel(e->ctx, id) : -1;
}
int64_t sgl_engine_flush_cache(sgl_engine *e, sgl_error *err) {
    sgl_error local;
    if (!err) err = &local;
    if (!e->ops->flush_cache) {
        sgl_error_set(err, "engine %s cannot flush its cache", e->ops->name);
        return -2;
    }
    return e->ops->flush_cache(e->ctx, err);
}
void sgl_engine_metrics_get(sgl_engine *e, sgl_engine_metrics *out) {
    memset(out, 0, sizeof *out);
    if (e->ops->metrics) e->ops->metrics(e->ctx, out);
}
const char *sgl_engine_name(const sgl_engine *e) { return e->ops->name; }

sgl_engine_caps sgl_engine_caps_local(void) {
    sgl_engine_caps c;
    memset(&c, 0, sizeof c);
    c.raw_prompt = c.logprobs = c.score = c.constraints = true;
    c.sampling = SGL_CAP_ALL_SAMPLING;
    return c;
}

void sgl_engine_caps_get(const sgl_engine *e, sgl_engine_caps *out) {
    *out = sgl_engine_caps_local();
    if (e->ops->caps) e->ops->caps(e->ctx, out);
}

void *sgl_engine_impl(const sgl_engine *e, const sgl_engine_ops *ops) {
    return e && e->ops == ops ? e->ctx : NULL;
}

void sgl_engine_free(sgl_engine *e) {
    if (!e) return;
    e->ops->free(e->ctx);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

sgl_engine_config sgl_engine_config_default(void) {
    sgl_engine_config c = {0};
    c.kv_mem_mb = 256;
    c.policy = SGL_SCHED_LPM;
    c.max_batch_tokens = 2048;
    c.chunk_size = 512;
    c.max_running = 64;
    return c;
}

/* ---- local engine -------------------------------------------------------- */

/* One submitted request as the engine tracks it: GENERATE/PREFILL have one
 * part, SCORE one per choice. The scheduler's user_tag points here. */
typedef struct track {
    struct track *prev, *next; /* live tracks, freed with the engine */
    uint64_t id, user_tag;
    sgl_req_kind kind;
    int32_t n_parts, n_done;
    sgl_result **parts;
    int32_t *cont_start;        /* SCORE: first continuation token of each part */
    bool cancel;                /* asked by sgl_engine_cancel; done by the engine thread */
} track;

/* A request waiting to be handed to the scheduler (deep copies). */
typedef struct pending {
    track *t;
    int32_t index;              /* part index: the scheduler request's id */
    int32_t *tokens;
    int32_t n_tokens;
    sgl_req_kind kind;
    bool stream;
    sgl_sampling_params p;      /* stop / stop_token_ids owned; constraint texts not kept */
    cons_program *prog;         /* compiled constraint (one reference), or NULL */
} pending;

typedef struct local_engine {
    sgl_model *model;
    kv_pool *pool;
    sgl_tokenizer *tok;
    cons_vocab *vocab;          /* the tokenizer's vocabulary as constraint masks see it;
                                   built by the engine thread on the first request that
                                   needs it (NULL until then) */
    int32_t n_vocab;            /* the model's vocabulary (logits per row) */
    sched *s;
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t work_cv, done_cv;
    bool stop;
    pending *pend;
    int32_t n_pend, cap_pend;
    sgl_result **done;
    int32_t n_done, cap_done;
    sgl_engine_metrics metrics;
    track *live;
    /* flush_cache: callers take a ticket (++flush_asked) and wait on done_cv
     * until the engine thread has served it (flush_served); every flush
     * asked before one serving shares its answer. */
    uint64_t flush_asked, flush_served;
    int64_t flush_rc;
    sgl_error flush_err;
    char device_desc[320];      /* a GPU's description (its mode: graphs, determinism), or "" */
} local_engine;

static void params_free(sgl_sampling_params *p) {
    for (int32_t i = 0; i < p->n_stop; i++) free((char *)p->stop[i]);
    free((void *)p->stop);
    free((void *)p->stop_token_ids);
    p->stop = NULL;
    p->stop_token_ids = NULL;
}

/* sgl_sampling_constraint: see engine.h. */
int sgl_sampling_constraint(const sgl_sampling_params *p, cons_program **out, sgl_error *err) {
    *out = NULL;
    int given = (p->regex != NULL) + (p->json_schema != NULL) + (p->grammar != NULL) +
                (p->n_choices > 0 || p->choices != NULL);
    if (given == 0) return 0;
    if (given > 1)
        return sgl_error_set(err, "constraint: give one of regex, json_schema, grammar, choices");
    cons_kind kind;
    const char *text;
    char *owned = NULL;
    if (p->regex) {
        kind = CONS_REGEX;
        text = p->regex;
    } else if (p->json_schema) {
        kind = CONS_JSON_SCHEMA;
        text = p->json_schema;
    } else if (p->grammar) {
        kind = CONS_GRAMMAR;
        text = p->grammar;
    } else {
        if (p->n_choices < 1 || !p->choices) return sgl_error_set(err, "choices: empty list");
        cJSON *arr = cJSON_CreateArray();
        for (int32_t i = 0; arr && i < p->n_choices; i++) {
            cJSON *it = cJSON_CreateString(p->choices[i] ? p->choices[i] : "");
            if (!it) {
                cJSON_Delete(arr);
                arr = NULL;
                break;
            }
            cJSON_AddItemToArray(arr, it);
        }
        owned = arr ? cJSON_PrintUnformatted(arr) : NULL;
        cJSON_Delete(arr);
        if (!owned) return sgl_error_set(err, "choices: out of memory");
        kind = CONS_CHOICES;
        text = owned;
    }
    cons_options opt = cons_options_default();
    opt.ws_flexible = p->json_ws_flexible;
    if (p->json_ws_max > 0) opt.ws_max = p->json_ws_max;
    cons_diag d;
    memset(&d, 0, sizeof d);
    *out = cons_compile_cached(kind, text, strlen(text), &opt, &d);
    free(owned);
    if (*out) return 0;
    const char *kn = cons_kind_name(kind);
    if (d.pointer[0])
        return sgl_error_set(err, "%s: %s (at %s)", kn, d.message, d.pointer);
    if (d.line > 0)
        return sgl_error_set(err, "%s: %d:%d: %s", kn, d.line, d.col, d.message);
    if (d.offset >= 0)
        return sgl_error_set(err, "%s: %s (at offset %d)", kn, d.message, d.offset);
    return sgl_error_set(err, "%s: %s", kn, d.message);
}

static int params_copy(sgl_sampling_params *dst, const sgl_sampling_params *src) {
    *dst = *src;
    dst->stop = NULL;
    dst->stop_token_ids = NULL;
    /* compiled at submit: the scheduler takes the program, not the texts */
    dst->regex = dst->json_schema = dst->grammar = NULL;
    dst->choices = NULL;
    dst->n_choices = 0;
    dst->n_stop = 0;
    if (src->n_stop > 0) {
        char **v = calloc((size_t)src->n_stop, sizeof(char *));
        if (!v) return -1;
        dst->stop = (const char *const *)v;
        for (int32_t i = 0; i < src->n_stop; i++) {
            if (!(v[i] = sgl_strdup(src->stop[i] ? src->stop[i] : ""))) return -1;
            dst->n_stop++;
        }
    }
    if (src->n_stop_token_ids > 0) {
        int32_t *ids = malloc(sizeof(int32_t) * (size_t)src->n_stop_token_ids);
        if (!ids) return -1;
        memcpy(ids, src->stop_token_ids, sizeof(int32_t) * (size_t)src->n_stop_token_ids);
        dst->stop_token_ids = ids;
    }
    return 0;
}

static void track_free(track *t) {
    if (!t) return;
    for (int32_t i = 0; i < t->n_parts; i++) sgl_result_free(t->parts[i]);
    free(t->parts);
    free(t->cont_start);
    free(t);
}

static const char *local_piece(void *ctx, int32_t id, bool skip_special, size_t *len) {
    const sgl_tokenizer *tok = ctx;
    if (skip_special && tok_is_special(tok, id)) {
        *len = 0;
        return NULL;
    }
    return tok_piece(tok, id, len);
}

static int local_encode(void *ctx, const char *text, size_t len, int32_t **ids, size_t *n,
                        sgl_error *err) {
    return tok_encode_ex(ctx, text, len, 0, ids, n, err);
}

/* The tokenizer's vocabulary as the constraint masks see it: raw bytes per
 * token, control tokens special, the end-of-generation ids as EOS. Returns
 * the index (caller frees) or NULL with err. */
static cons_vocab *vocab_index(const sgl_tokenizer *tok, int32_t n_vocab, sgl_error *err) {
    const char **pieces = calloc((size_t)n_vocab, sizeof *pieces);
    size_t *lens = calloc((size_t)n_vocab, sizeof *lens);
    bool *special = calloc((size_t)n_vocab, sizeof *special);
    cons_vocab *v = NULL;
    if (!pieces || !lens || !special) {
        sgl_error_set(err, "engine: out of memory");
        goto out;
    }
    int32_t n_tok = tok_vocab_size(tok);
    for (int32_t i = 0; i < n_vocab; i++) {
        /* model rows beyond the tokenizer's vocabulary are never text */
        pieces[i] = i < n_tok ? tok_piece(tok, i, &lens[i]) : NULL;
        if (!pieces[i]) {
            pieces[i] = "";
            lens[i] = 0;
        }
        special[i] = i >= n_tok || tok_is_special(tok, i) || lens[i] == 0;
    }
    size_t n_eos = 0;
    const int32_t *eos = tok_eog_ids(tok, &n_eos);
    v = cons_vocab_new(n_vocab, pieces, lens, special, eos, (int32_t)n_eos, err);
out:
    free(pieces);
    free(lens);
    free(special);
    return v;
}

static int local_forward(void *ctx, kv_pool *kv, const model_batch *b, float *logits,
                         sgl_error *err) {
    return model_forward(ctx, kv, b, logits, err);
}

/* Turns a finished track into the caller's result (consumes the parts). */
static sgl_result *track_result(track *t) {
    sgl_result *res;
    if (t->kind != SGL_REQ_SCORE) {
        res = t->parts[0];
        t->parts[0] = NULL;
    } else {
        res = calloc(1, sizeof *res);
        if (!res) return NULL;
        res->text = sgl_strdup("");
        res->stop_token = -1;
        res->finish = SGL_FINISH_LENGTH;
        res->choices = calloc((size_t)t->n_parts, sizeof *res->choices);
        res->n_choices = res->choices ? t->n_parts : 0;
        for (int32_t i = 0; i < t->n_parts; i++) {
            sgl_result *p = t->parts[i];
            res->prompt_tokens += p->prompt_tokens;
            res->cached_tokens += p->cached_tokens;
            if (p->finish == SGL_FINISH_ABORT && res->finish != SGL_FINISH_ABORT) {
                res->finish = SGL_FINISH_ABORT;
                res->error = p->error;
                p->error = NULL;
            }
            if (!res->choices) continue;
            sgl_choice_score *c = &res->choices[i];
            int32_t start = t->cont_start[i];
            /* input_logprobs cover prompt indices start.. (start >= 1) */
            int32_t n = p->n_input_logprobs;
            (void)start;
            c->n_tokens = n;
            c->tokens = malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
            c->logprobs = malloc(sizeof(float) * (size_t)(n ? n : 1));
            if (!c->tokens || !c->logprobs) {
                c->n_tokens = 0;
                continue;
            }
            for (int32_t k = 0; k < n; k++) {
                c->tokens[k] = p->input_logprobs[k].token;
                c->logprobs[k] = p->input_logprobs[k].logprob;
                c->sum += p->input_logprobs[k].logprob;
            }
        }
    }
    res->id = t->id;
    res->user_tag = t->user_tag;
    res->kind = t->kind;
    return res;
}

static int done_push_locked(local_engine *le, sgl_result *r) {
    if (le->n_done == le->cap_done) {
        int32_t cap = le->cap_done ? le->cap_done * 2 : 64;
        sgl_result **d = realloc(le->done, sizeof *d * (size_t)cap);
        if (!d) return -1;
        le->done = d;
        le->cap_done = cap;
    }
    le->done[le->n_done++] = r;
    return 0;
}

static void track_unlink(local_engine *le, track *t) {
    if (t->prev) t->prev->next = t->next;
    else le->live = t->next;
    if (t->next) t->next->prev = t->prev;
}

/* Records part idx of t; delivers t when it was the last. A partial result
 * (streaming; only single-part requests stream) goes straight to the caller.
 * Lock held. */
static void part_done_locked(local_engine *le, track *t, int32_t idx, sgl_result *r) {
    if (r->partial) {
        r->id = t->id;
        r->user_tag = t->user_tag;
        r->kind = t->kind;
        if (done_push_locked(le, r) < 0) sgl_result_free(r);
        return;
    }
    if (idx < 0 || idx >= t->n_parts || t->parts[idx]) {
        sgl_result_free(r);
        return;
    }
    t->parts[idx] = r;
    if (++t->n_done < t->n_parts) return;
    sgl_result *out = track_result(t);
    if (out && t->kind == SGL_REQ_GENERATE) {
        logprob_texts(le->tok, out->logprobs, out->n_logprobs);
        logprob_texts(le->tok, out->input_logprobs, out->n_input_logprobs);
    }
    track_unlink(le, t);
    track_free(t);
    if (out && done_push_locked(le, out) < 0) sgl_result_free(out);
    pthread_cond_broadcast(&le->done_cv);
}

/* Engine thread: feed pending requests to the scheduler, step, deliver. */
static void *local_main(void *arg) {
    local_engine *le = arg;
    pthread_mutex_lock(&le->mu);
    while (!le->stop) {
        for (int32_t i = 0; i < le->n_pend; i++) {
            pending *pd = &le->pend[i];
            sched_input in = {0};
            in.id = (uint64_t)pd->index;
            in.user_tag = (uint64_t)(uintptr_t)pd->t;
            in.kind = pd->kind;
            in.tokens = pd->tokens;
            in.n_tokens = pd->n_tokens;
            in.params = &pd->p;
            in.stream = pd->stream;
            in.constraint = pd->prog;
            sgl_error err;
            int rc = 0;
            if ((pd->prog || pd->p.token_healing) && !le->vocab) {
                /* first constrained request: index the vocabulary now */
                if (!(le->vocab = vocab_index(le->tok, le->n_vocab, &err)) ||
                    sched_set_cons_vocab(le->s, le->vocab, &err) < 0) {
                    cons_vocab_free(le->vocab);
                    le->vocab = NULL;
                    rc = -1;
                }
            }
            if (rc < 0 || sched_add(le->s, &in, &err) < 0) {
                /* out of memory: fail just this part */
                sgl_result *r = calloc(1, sizeof *r);
                if (r) {
                    r->finish = SGL_FINISH_ABORT;
                    r->error = sgl_strdup(err.msg);
                    r->text = sgl_strdup("");
                    r->stop_token = -1;
                    r->kind = in.kind;
                }
                if (r) part_done_locked(le, pd->t, pd->index, r);
            }
            free(pd->tokens);
            params_free(&pd->p);
            cons_program_release(pd->prog);
        }
        le->n_pend = 0;
        for (track *t = le->live, *next; t; t = next) {
            next = t->next; /* t may complete (and be freed) right here */
            if (t->cancel) {
                t->cancel = false;
                sched_cancel(le->s, (uint64_t)(uintptr_t)t);
            }
        }
        sgl_result *r;
        while ((r = sched_pop(le->s))) /* requests refused at sched_add */
            part_done_locked(le, (track *)(uintptr_t)r->user_tag, (int32_t)r->id, r);
        if (le->flush_served < le->flush_asked) {
            /* after the pending requests went in: they count as waiting */
            le->flush_rc = sched_flush_cache(le->s, &le->flush_err);
            le->flush_served = le->flush_asked;
            sched_metrics(le->s, &le->metrics);
            pthread_cond_broadcast(&le->done_cv);
        }
        if (!sched_busy(le->s)) {
            sched_metrics(le->s, &le->metrics);
            pthread_cond_wait(&le->work_cv, &le->mu);
            continue;
        }
        pthread_mutex_unlock(&le->mu);
        sgl_error err;
        sched_step(le->s, &err); /* a failed forward aborts its requests only */
        pthread_mutex_lock(&le->mu);
        while ((r = sched_pop(le->s)))
            part_done_locked(le, (track *)(uintptr_t)r->user_tag, (int32_t)r->id, r);
        sched_metrics(le->s, &le->metrics);
        pthread_cond_broadcast(&le->done_cv);
    }
    pthread_mutex_unlock(&le->mu);
    return NULL;
}

static int encode(local_engine *le, const char *text, int32_t **ids, int32_t *n,
                  sgl_error *err) {
    size_t nn = 0;
    if (tok_encode_ex(le->tok, text, strlen(text), TOK_ENC_PARSE_SPECIAL | TOK_ENC_ADD_SPECIAL,
                      ids, &nn, err) < 0)
        return -1;
    *n = (int32_t)nn;
    return 0;
}

static int pend_push_locked(local_engine *le, pending *pd) {
    if (le->n_pend == le->cap_pend) {
        int32_t cap = le->cap_pend ? le->cap_pend * 2 : 16;
        pending *p = realloc(le->pend, sizeof *p * (size_t)cap);
        if (!p) return -1;
        le->pend = p;
        le->cap_pend = cap;
    }
    le->pend[le->n_pend++] = *pd;
    return 0;
}

static int local_submit(void *ctx, const sgl_request *req, uint64_t id, sgl_error *err) {
    local_engine *le = ctx;
    int32_t *prompt = NULL, n_prompt = 0;
    int32_t n_parts = req->kind == SGL_REQ_SCORE ? req->n_choices : 1;
    if (req->n_images > 0)
        return sgl_error_set(err, "the local engine cannot take images (%s): its model has no vision encoder",
                             req->images && req->images[0] ? req->images[0] : "image");
    if (req->kind == SGL_REQ_SCORE && (n_parts < 1 || n_parts > 0xffff))
        return sgl_error_set(err, "score request: %d choices", n_parts);
    if (req->text) {
        if (encode(le, req->text, &prompt, &n_prompt, err) < 0) return -1;
    } else {
        if (req->n_tokens < 0 || (req->n_tokens > 0 && !req->tokens))
            return sgl_error_set(err, "request: no prompt");
        prompt = malloc(sizeof(int32_t) * (size_t)(req->n_tokens + 1));
        if (!prompt) return sgl_error_set(err, "request: out of memory");
        if (req->n_tokens) memcpy(prompt, req->tokens, sizeof(int32_t) * (size_t)req->n_tokens);
        n_prompt = req->n_tokens;
    }
    track *t = calloc(1, sizeof *t);
    pending *pds = calloc((size_t)n_parts, sizeof *pds);
    if (!t || !pds || !(t->parts = calloc((size_t)n_parts, sizeof *t->parts)) ||
        !(t->cont_start = calloc((size_t)n_parts, sizeof *t->cont_start))) {
        sgl_error_set(err, "request: out of memory");
        goto fail;
    }
    t->id = id;
    t->user_tag = req->user_tag;
    t->kind = req->kind;
    t->n_parts = n_parts;
    if (req->kind != SGL_REQ_SCORE) {
        pds[0].tokens = prompt;
        pds[0].n_tokens = n_prompt;
        prompt = NULL;
        pds[0].kind = req->kind;
        pds[0].stream = req->stream && req->kind == SGL_REQ_GENERATE;
        if (params_copy(&pds[0].p, &req->params) < 0) {
            sgl_error_set(err, "request: out of memory");
            goto fail;
        }
        if (req->kind == SGL_REQ_GENERATE &&
            sgl_sampling_constraint(&req->params, &pds[0].prog, err) < 0)
            goto fail;
    } else {
        if (n_prompt < 1) {
            sgl_error_set(err, "score request: empty prompt");
            goto fail;
        }
        for (int32_t i = 0; i < n_parts; i++) {
            int32_t *full = NULL, n_full = 0;
            if (req->choice_tokens) {
                int32_t nc = req->choice_lens ? req->choice_lens[i] : 0;
                full = malloc(sizeof(int32_t) * (size_t)(n_prompt + nc + 1));
                if (!full) {
                    sgl_error_set(err, "request: out of memory");
                    goto fail;
                }
                memcpy(full, prompt, sizeof(int32_t) * (size_t)n_prompt);
                if (nc) memcpy(full + n_prompt, req->choice_tokens[i], sizeof(int32_t) * (size_t)nc);
                n_full = n_prompt + nc;
                t->cont_start[i] = n_prompt;
            } else {
                if (!req->text || !req->choices || !req->choices[i]) {
                    sgl_error_set(err, "score request: choice %d has no text", i);
                    goto fail;
                }
                sgl_strbuf sb = {0};
                if (sgl_strbuf_puts(&sb, req->text) < 0 || sgl_strbuf_puts(&sb, req->choices[i]) < 0) {
                    sgl_strbuf_free(&sb);
                    sgl_error_set(err, "request: out of memory");
                    goto fail;
                }
                int rc = encode(le, sb.data, &full, &n_full, err);
                sgl_strbuf_free(&sb);
                if (rc < 0) goto fail;
                /* the continuation starts where the joint tokenization leaves
                 * the prompt's own (BPE may merge across the boundary) */
                int32_t l = 0;
                while (l < n_prompt && l < n_full && full[l] == prompt[l]) l++;
                t->cont_start[i] = SGL_MAX(l, 1);
            }
            pds[i].tokens = full;
            pds[i].n_tokens = n_full;
            pds[i].kind = SGL_REQ_GENERATE;
            sgl_sampling_params sp = sgl_sampling_params_default();
            sp.max_new_tokens = 0;
            sp.logprob_start_len = t->cont_start[i];
            sp.seed = req->params.seed;
            pds[i].p = sp;
        }
    }
    free(prompt);
    prompt = NULL;
    pthread_mutex_lock(&le->mu);
    for (int32_t i = 0; i < n_parts; i++) {
        if (pend_push_locked(le, &pds[i]) < 0) {
            /* cannot happen halfway without memory: drop what was queued */
            le->n_pend -= i;
            pthread_mutex_unlock(&le->mu);
            sgl_error_set(err, "request: out of memory");
            goto fail;
        }
    }
    for (int32_t i = 0; i < n_parts; i++) {
        le->pend[le->n_pend - n_parts + i].t = t;
        le->pend[le->n_pend - n_parts + i].index = i;
    }
    t->next = le->live;
    if (le->live) le->live->prev = t;
    le->live = t;
    pthread_cond_signal(&le->work_cv);
    pthread_mutex_unlock(&le->mu);
    free(pds);
    return 0;
fail:
    free(prompt);
    if (pds)
        for (int32_t i = 0; i < n_parts; i++) {
            free(pds[i].tokens);
            params_free(&pds[i].p);
            cons_program_release(pds[i].prog);
        }
    free(pds);
    track_free(t);
    return -1;
}

static sgl_result *local_wait(void *ctx, double timeout_s) {
    local_engine *le = ctx;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    if (timeout_s > 0) {
        double whole = (double)(long)timeout_s;
        until.tv_sec += (time_t)whole;
        until.tv_nsec += (long)((timeout_s - whole) * 1e9);
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
    }
    pthread_mutex_lock(&le->mu);
    while (le->n_done == 0 && timeout_s != 0) {
        int rc = timeout_s < 0 ? pthread_cond_wait(&le->done_cv, &le->mu)
                               : pthread_cond_timedwait(&le->done_cv, &le->mu, &until);
        if (rc == ETIMEDOUT) break;
    }
    sgl_result *r = NULL;
    if (le->n_done > 0) {
        r = le->done[0];
        memmove(le->done, le->done + 1, sizeof *le->done * (size_t)(le->n_done - 1));
        le->n_done--;
    }
    pthread_mutex_unlock(&le->mu);
    return r;
}

static int local_cancel(void *ctx, uint64_t id) {
    local_engine *le = ctx;
    int rc = -1;
    pthread_mutex_lock(&le->mu);
    for (track *t = le->live; t; t = t->next)
        if (t->id == id) {
            t->cancel = true;
            rc = 0;
            pthread_cond_signal(&le->work_cv);
            break;
        }
    pthread_mutex_unlock(&le->mu);
    return rc;
}

static int64_t local_flush_cache(void *ctx, sgl_error *err) {
    local_engine *le = ctx;
    pthread_mutex_lock(&le->mu);
    uint64_t ticket = ++le->flush_asked;
    pthread_cond_signal(&le->work_cv);
    while (le->flush_served < ticket && !le->stop) pthread_cond_wait(&le->done_cv, &le->mu);
    int64_t rc = le->flush_served >= ticket ? le->flush_rc : -1;
    if (rc < 0) {
        if (le->flush_served >= ticket) *err = le->flush_err;
        else sgl_error_set(err, "cache not flushed: the engine is stopping");
    }
    pthread_mutex_unlock(&le->mu);
    return rc;
}

static void local_metrics(void *ctx, sgl_engine_metrics *out) {
    local_engine *le = ctx;
    pthread_mutex_lock(&le->mu);
    *out = le->metrics;
    out->waiting += le->n_pend;
    pthread_mutex_unlock(&le->mu);
    out->device = le->device_desc[0] ? le->device_desc : model_device_name(model_get_device(le->model));
    model_device_memory(le->model, &out->device_weight_bytes, &out->device_bytes);
}

static void local_free(void *ctx) {
    local_engine *le = ctx;
    if (!le) return;
    if (le->thread_started) {
        pthread_mutex_lock(&le->mu);
        le->stop = true;
        pthread_cond_signal(&le->work_cv);
        pthread_mutex_unlock(&le->mu);
        pthread_join(le->thread, NULL);
    }
    for (int32_t i = 0; i < le->n_pend; i++) {
        free(le->pend[i].tokens);
        params_free(&le->pend[i].p);
        cons_program_release(le->pend[i].prog);
    }
    free(le->pend);
    for (int32_t i = 0; i < le->n_done; i++) sgl_result_free(le->done[i]);
    free(le->done);
    sched_free(le->s);
    while (le->live) {
        track *t = le->live;
        track_unlink(le, t);
        track_free(t);
    }
    kv_pool_free(le->pool);
    cons_vocab_free(le->vocab);
    tok_free(le->tok);
    model_free(le->model);
    pthread_mutex_destroy(&le->mu);
    pthread_cond_destroy(&le->work_cv);
    pthread_cond_destroy(&le->done_cv);
    free(le);
}

static const sgl_engine_ops local_ops = {.name = "local",
                                         .submit = local_submit,
                                         .wait = local_wait,
                                         .metrics = local_metrics,
                                         .free = local_free,
                                         .cancel = local_cancel,
                                         .flush_cache = local_flush_cache};

struct sgl_model *sgl_engine_local_model(const sgl_engine *e) {
    return e && e->ops == &local_ops ? ((local_engine *)e->ctx)->model : NULL;
}

const struct sgl_tokenizer *sgl_engine_local_tokenizer(const sgl_engine *e) {
    return e && e->ops == &local_ops ? ((local_engine *)e->ctx)->tok : NULL;
}

sgl_engine *sgl_engine_local_new(const sgl_engine_config *cfg, sgl_error *err) {
    local_engine *le = calloc(1, sizeof *le);
    if (!le) {
        sgl_error_set(err, "engine: out of memory");
        return NULL;
    }
    pthread_mutex_init(&le->mu, NULL);
    pthread_cond_init(&le->work_cv, NULL);
    pthread_cond_init(&le->done_cv, NULL);
    sgl_engine *e = NULL;
    if (!cfg->model_path) {
        sgl_error_set(err, "engine: no model path");
        goto fail;
    }
    if (!(le->model = model_load(cfg->model_path, cfg->n_threads, err))) goto fail;
    if (model_use_device(le->model, model_default_device(), NULL, 0, err)) goto fail;
    if (model_get_device(le->model) != MODEL_DEVICE_CPU)
        model_describe_device(le->model, le->device_desc, sizeof le->device_desc);
    const model_config *mc = model_get_config(le->model);
    if (!(le->tok = tok_load_gguf(model_get_gguf(le->model), err))) goto fail;
    int32_t slots = cfg->kv_slots;
    if (slots <= 0) {
        uint64_t per = (uint64_t)mc->n_layers * (uint64_t)mc->kv_dim * 2u * sizeof(uint16_t);
        uint64_t mb = cfg->kv_mem_mb > 0 ? (uint64_t)cfg->kv_mem_mb : 256u;
        uint64_t n = per ? mb * 1024u * 1024u / per : 0;
        slots = (int32_t)SGL_MIN(n, (uint64_t)INT32_MAX / 4);
    }
    if (!(le->pool = model_kv_pool_new(le->model, slots, err))) goto fail;
    le->n_vocab = mc->vocab;
    size_t n_eos = 0;
    const int32_t *eos = tok_eog_ids(le->tok, &n_eos);
    sched_config sc = sched_config_default();
    sc.policy = cfg->policy;
    if (cfg->max_batch_tokens > 0) sc.max_batch_tokens = cfg->max_batch_tokens;
    sc.chunk_size = cfg->chunk_size;
    if (cfg->max_running > 0) sc.max_running = cfg->max_running;
    sc.cache_off = cfg->cache_off;
    sc.max_context = cfg->max_context > 0 ? cfg->max_context
                     : cfg->max_context == 0 ? mc->n_ctx_train : 0;
    sc.vocab = mc->vocab;
    sc.eos_ids = eos;
    sc.n_eos = (int32_t)n_eos;
    sc.forward = local_forward;
    sc.forward_ctx = le->model;
    sc.piece = local_piece;
    sc.piece_ctx = le->tok;
    sc.encode = local_encode;
    sc.encode_ctx = le->tok;
    if (!(le->s = sched_new(&sc, le->pool, err))) goto fail;
    sched_metrics(le->s, &le->metrics);
    if (pthread_create(&le->thread, NULL, local_main, le) != 0) {
        sgl_error_set(err, "engine: cannot start the engine thread");
        goto fail;
    }
    le->thread_started = true;
    if (!(e = sgl_engine_new(&local_ops, le))) {
        sgl_error_set(err, "engine: out of memory");
        goto fail;
    }
    return e;
fail:
    local_free(le);
    return NULL;
}
