/* recorder: request-stream statistics and the best-possible hit rate (see
 * recorder.h). The inner engine's ids are mapped back to the ids the
 * wrapper handed out; each in-flight GENERATE keeps its prompt tokens so
 * that prompt + output can be remembered as cached when it finishes. */
#include "cli/bench/recorder.h"

#include <stdlib.h>
#include <string.h>

typedef struct flight {
    uint64_t inner_id, outer_id;
    sgl_req_kind kind;
    int32_t *prompt; /* GENERATE: prompt ids (owned) */
    int32_t n_prompt;
} flight;

struct bench_recorder {
    sgl_engine *inner;
    const sgl_tokenizer *tok;
    bench_ideal *ideal;
    bench_rec_stats st;
    flight *fl;
    size_t n_fl, cap_fl;
};

/* Prompt ids as the engine sees them: the local engine's encoding (special
 * tokens parsed, BOS per the model), or bytes. */
static int encode(const bench_recorder *r, const char *text, int32_t **ids, int32_t *n, sgl_error *err) {
    size_t len = strlen(text);
    if (r->tok) {
        size_t nn = 0;
        if (tok_encode_ex(r->tok, text, len, TOK_ENC_PARSE_SPECIAL | TOK_ENC_ADD_SPECIAL, ids, &nn, err) < 0)
            return -1;
        *n = (int32_t)nn;
        return 0;
    }
    *ids = malloc((len ? len : 1) * sizeof **ids);
    if (!*ids) return sgl_error_set(err, "out of memory");
    for (size_t i = 0; i < len; i++) (*ids)[i] = (unsigned char)text[i];
    *n = (int32_t)len;
    return 0;
}

/* Feeds the ideal cache with the request's prompt(s); for a GENERATE also
 * returns its prompt ids (caller owns) in *keep. */
static int feed(bench_recorder *r, const sgl_request *req, int32_t **keep, int32_t *n_keep, sgl_error *err) {
    int32_t *ids = NULL, n = 0;
    *keep = NULL;
    *n_keep = 0;
    if (req->text) {
        if (encode(r, req->text, &ids, &n, err) < 0) return -1;
    } else {
        ids = malloc(sizeof *ids * (size_t)(req->n_tokens > 0 ? req->n_tokens : 1));
        if (!ids) return sgl_error_set(err, "out of memory");
        if (req->n_tokens > 0) memcpy(ids, req->tokens, sizeof *ids * (size_t)req->n_tokens);
        n = req->n_tokens > 0 ? req->n_tokens : 0;
    }
    int rc = 0;
    if (req->kind != SGL_REQ_SCORE) {
        if (bench_ideal_prompt(r->ideal, ids, n, n - 1) < 0) rc = sgl_error_set(err, "out of memory");
        if (req->kind == SGL_REQ_GENERATE && rc == 0) {
            *keep = ids;
            *n_keep = n;
            ids = NULL;
        }
    } else {
        /* One part per choice, as the engine splits it: prompt + choice,
         * servable up to the token before the continuation. */
        for (int32_t c = 0; rc == 0 && c < req->n_choices; c++) {
            int32_t *full = NULL, n_full = 0, start = n;
            if (req->choice_tokens) {
                int32_t nc = req->choice_lens ? req->choice_lens[c] : 0;
                full = malloc(sizeof *full * (size_t)(n + nc + 1));
                if (!full) {
                    rc = sgl_error_set(err, "out of memory");
                    break;
                }
                memcpy(full, ids, sizeof *full * (size_t)n);
                if (nc) memcpy(full + n, req->choice_tokens[c], sizeof *full * (size_t)nc);
                n_full = n + nc;
            } else if (req->text && req->choices && req->choices[c]) {
                size_t a = strlen(req->text), b = strlen(req->choices[c]);
                char *joint = malloc(a + b + 1);
                if (!joint) {
                    rc = sgl_error_set(err, "out of memory");
                    break;
                }
                memcpy(joint, req->text, a);
                memcpy(joint + a, req->choices[c], b + 1);
                rc = encode(r, joint, &full, &n_full, err);
                free(joint);
                if (rc < 0) break;
                start = 0;
                while (start < n && start < n_full && full[start] == ids[start]) start++;
                if (start < 1) start = 1;
            } else {
                continue; /* the engine refuses it */
            }
            int32_t cap = start - 1 < n_full - 1 ? start - 1 : n_full - 1;
            if (bench_ideal_prompt(r->ideal, full, n_full, cap) < 0) rc = sgl_error_set(err, "out of memory");
            free(full);
        }
    }
    free(ids);
    return rc;
}

static int rec_submit(void *ctx, const sgl_request *req, uint64_t id, sgl_error *err) {
    bench_recorder *r = ctx;
    if (r->n_fl == r->cap_fl) {
        size_t cap = r->cap_fl ? 2 * r->cap_fl : 64;
        flight *f = realloc(r->fl, cap * sizeof *f);
        if (!f) return sgl_error_set(err, "out of memory");
        r->fl = f;
        r->cap_fl = cap;
    }
    uint64_t inner_id = sgl_engine_submit(r->inner, req, err);
    if (!inner_id) return -1;
    flight f = {.inner_id = inner_id, .outer_id = id, .kind = req->kind};
    if (feed(r, req, &f.prompt, &f.n_prompt, err) < 0) {
        sgl_engine_cancel(r->inner, inner_id);
        free(f.prompt);
        return -1;
    }
    if (req->kind == SGL_REQ_GENERATE) r->st.generate++;
    else if (req->kind == SGL_REQ_SCORE) r->st.score++;
    else r->st.prefill++;
    r->fl[r->n_fl++] = f;
    return 0;
}

static sgl_result *rec_wait(void *ctx, double timeout_s) {
    bench_recorder *r = ctx;
    sgl_result *res = sgl_engine_wait(r->inner, timeout_s);
    if (!res) return NULL;
    size_t i = 0;
    while (i < r->n_fl && r->fl[i].inner_id != res->id) i++;
    if (i == r->n_fl) return res; /* not submitted through us: pass it on as is */
    res->id = r->fl[i].outer_id;
    if (res->partial) return res;
    flight f = r->fl[i];
    r->fl[i] = r->fl[--r->n_fl];
    r->st.prompt_tokens += res->prompt_tokens;
    r->st.cached_tokens += res->cached_tokens;
    r->st.completion_tokens += res->completion_tokens;
    if (res->finish == SGL_FINISH_ABORT) r->st.failed++;
    if (f.kind == SGL_REQ_GENERATE && res->finish != SGL_FINISH_ABORT) {
        /* The finished sequence is cacheable: prompt + output. */
        int32_t n_out = r->tok ? res->n_tokens : (int32_t)res->text_len;
        int32_t *seq = malloc(sizeof *seq * (size_t)(f.n_prompt + n_out + 1));
        if (seq) {
            if (f.n_prompt) memcpy(seq, f.prompt, sizeof *seq * (size_t)f.n_prompt);
            for (int32_t k = 0; k < n_out; k++)
                seq[f.n_prompt + k] = r->tok ? res->tokens[k] : (unsigned char)res->text[k];
            bench_ideal_insert(r->ideal, seq, f.n_prompt + n_out);
            free(seq);
        }
    }
    free(f.prompt);
    return res;
}

static void rec_metrics(void *ctx, sgl_engine_metrics *out) {
    bench_recorder *r = ctx;
    sgl_engine_metrics_get(r->inner, out);
}

static int rec_cancel(void *ctx, uint64_t id) {
    bench_recorder *r = ctx;
    for (size_t i = 0; i < r->n_fl; i++)
        if (r->fl[i].outer_id == id) return sgl_engine_cancel(r->inner, r->fl[i].inner_id);
    return -1;
}

static void rec_caps(void *ctx, sgl_engine_caps *out) {
    bench_recorder *r = ctx;
    sgl_engine_caps_get(r->inner, out);
}

static void rec_free(void *ctx) {
    bench_recorder *r = ctx;
    sgl_engine_free(r->inner);
    for (size_t i = 0; i < r->n_fl; i++) free(r->fl[i].prompt);
    free(r->fl);
    bench_ideal_free(r->ideal);
    free(r);
}

static const sgl_engine_ops rec_ops = {
    .name = "recorder",
    .submit = rec_submit,
    .wait = rec_wait,
    .metrics = rec_metrics,
    .free = rec_free,
    .cancel = rec_cancel,
    .caps = rec_caps,
};

sgl_engine *bench_recorder_new(sgl_engine *inner, const sgl_tokenizer *tok, bench_recorder **rec) {
    bench_recorder *r = calloc(1, sizeof *r);
    if (!r || !(r->ideal = bench_ideal_new())) {
        free(r);
        sgl_engine_free(inner);
        return NULL;
    }
    r->inner = inner;
    r->tok = tok;
    sgl_engine *e = sgl_engine_new(&rec_ops, r);
    if (!e) {
        rec_free(r);
        return NULL;
    }
    if (rec) *rec = r;
    return e;
}

void bench_recorder_stats(const bench_recorder *rec, bench_rec_stats *out) {
    *out = rec->st;
    out->ideal_prompt = rec->ideal->prompt;
    out->ideal_cached = rec->ideal->cached;
}
