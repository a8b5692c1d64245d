/* fake_engine.c: the deterministic scripted engine described in
 * fake_engine.h (tokens are bytes; replies come from rules).
 */
#include "vm/fake_engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/constrain/constrain.h"

int vm_fake_add_rule(vm_fake *f, const char *when, const char *reply, const char *abort_msg) {
    vm_fake_rule *nr = realloc(f->rules, (f->n_rules + 1) * sizeof *nr);
    if (!nr) return -1;
    f->rules = nr;
    vm_fake_rule *r = &f->rules[f->n_rules++];
    r->when = sgl_strdup(when ? when : "");
    r->reply = sgl_strdup(reply ? reply : "");
    r->abort_msg = abort_msg ? sgl_strdup(abort_msg) : NULL;
    return 0;
}

/* The rule whose `when` match ends latest in prompt (ties: the longer
 * `when`, then the earlier rule), or NULL. */
static const vm_fake_rule *match(const vm_fake *f, const char *prompt) {
    const vm_fake_rule *best = NULL;
    size_t best_end = 0, best_len = 0;
    for (uint32_t i = 0; i < f->n_rules; i++) {
        const char *w = f->rules[i].when, *last = NULL;
        for (const char *p = strstr(prompt, w); p; p = *p ? strstr(p + 1, w) : NULL) last = p;
        if (!last) continue;
        size_t len = strlen(w), end = (size_t)(last - prompt) + len;
        if (!best || end > best_end || (end == best_end && len > best_len)) {
            best = &f->rules[i];
            best_end = end;
            best_len = len;
        }
    }
    return best;
}

static int32_t cached_prefix(vm_fake *f, const char *prompt) {
    size_t best = 0, n = strlen(prompt);
    /* Only the latest 256 prompts count: a cache that forgets, and a fake
     * that stays linear in the number of requests. */
    uint32_t from = f->n_seen > 256 ? f->n_seen - 256 : 0;
    for (uint32_t i = from; i < f->n_seen; i++) {
        size_t k = 0;
        const char *s = f->seen[i];
        while (k < n && s[k] && s[k] == prompt[k]) k++;
        if (k > best) best = k;
    }
    char **ns = realloc(f->seen, (f->n_seen + 1) * sizeof *ns);
    if (ns) {
        f->seen = ns;
        f->seen[f->n_seen] = sgl_strdup(prompt);
        if (f->seen[f->n_seen]) f->n_seen++;
    }
    return (int32_t)best;
}

static void log_req(vm_fake *f, char kind, const char *prompt) {
    char **nl = realloc(f->log, (f->n_log + 1) * sizeof *nl);
    if (!nl) return;
    f->log = nl;
    sgl_strbuf sb = {0};
    sgl_strbuf_printf(&sb, "%c:%s", kind, prompt);
    f->log[f->n_log++] = sgl_strbuf_take(&sb);
}

static void abort_result(sgl_result *r, const char *msg) {
    r->finish = SGL_FINISH_ABORT;
    r->error = sgl_strdup(msg);
}

/* Bytes in the order the fake prefers them off its rule's text: what closes
 * (a string, object, array, group) first, then digits, lower- and
 * upper-case letters, then every other byte ascending, so constrained
 * replies end soon and never nest without bound. */
static const unsigned char *fake_order_init(void) {
    static unsigned char order[255];
    static const char first[] = "\"}])0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    if (order[0]) return order;
    bool used[256] = {false};
    int n = 0;
    for (const char *p = first; *p; p++) {
        order[n++] = (unsigned char)*p;
        used[(unsigned char)*p] = true;
    }
    for (int b = 1; b < 256; b++)
        if (!used[b]) order[n++] = (unsigned char)b;
    return order;
}

/* The reply under constraint prog (see fake_engine.h): malloc'd, or NULL
 * with err. At most cap bytes. */
static char *constrained_reply(vm_fake *f, cons_program *prog, const char *want, size_t cap,
                               sgl_error *err) {
    if (!f->vocab) {
        const char *pieces[256];
        size_t lens[256];
        bool special[256];
        static char bytes[256];
        for (int i = 0; i < 256; i++) {
            bytes[i] = (char)i;
            pieces[i] = &bytes[i];
            lens[i] = 1;
            special[i] = i == 0;
        }
        int32_t eos = 0;
        if (!(f->vocab = cons_vocab_new(256, pieces, lens, special, &eos, 1, err))) return NULL;
    }
    cons_matcher *m = cons_matcher_new(prog, f->vocab, NULL, 0, err);
    if (!m) return NULL;
    const unsigned char *fake_order = fake_order_init();
    sgl_strbuf sb = {0};
    uint32_t mask[8];
    size_t k = 0, wl = strlen(want);
    while (sb.len < cap && cons_matcher_can_continue(m)) {
        if (cons_matcher_mask(m, mask) == 0) break;
        int t = -1;
        unsigned char w = k < wl ? (unsigned char)want[k] : 0;
        if (w && (mask[w / 32] >> (w % 32) & 1u)) {
            t = w;
            k++;
        } else if (mask[0] & 1u) {
            break; /* EOS allowed: the text is complete */
        } else {
            k = wl; /* off the rule's text: the first allowed byte in fake_order */
            for (int i = 0; i < 255 && t < 0; i++) {
                unsigned char b = fake_order[i];
                if (mask[b / 32] >> (b % 32) & 1u) t = b;
            }
        }
        if (t < 0 || cons_matcher_accept_token(m, t) < 0) break;
        sgl_strbuf_putc(&sb, (char)t);
    }
    cons_matcher_free(m);
    char *out = sgl_strbuf_take(&sb);
    if (!out) out = sgl_strdup("");
    if (!out) sgl_error_set(err, "out of memory");
    return out;
}

static void do_generate(vm_fake *f, const sgl_request *req, const char *prompt, sgl_result *r,
                        cons_program *prog) {
    const sgl_sampling_params *sp = &req->params;
    const vm_fake_rule *rule = match(f, prompt);
    if (rule && rule->abort_msg) {
        abort_result(r, rule->abort_msg);
        return;
    }
    const char *reply = rule ? rule->reply : (f->default_reply ? f->default_reply : "ok");
    char sample[32];
    if (!strcmp(reply, "{sample}")) {
        /* Stands for sampled text: a function of the request's seed. */
        if (sp->temperature > 0)
            snprintf(sample, sizeof sample, "s%016llx", (unsigned long long)(sp->seed * 0x9e3779b97f4a7c15ULL));
        else
            snprintf(sample, sizeof sample, "greedy");
        reply = sample;
    }
    char *owned = NULL;
    if (prog) {
        sgl_error err;
        size_t cap = sp->max_new_tokens >= 0 ? (size_t)sp->max_new_tokens : 0;
        if (!(owned = constrained_reply(f, prog, reply, SGL_MIN(cap, (size_t)65536), &err))) {
            abort_result(r, err.msg);
            return;
        }
        reply = owned;
    }
    size_t n = strlen(reply);
    r->finish = SGL_FINISH_STOP;
    r->stop_token = 0;
    /* The earliest stop string wins; matched text is left out. */
    size_t cut = n;
    int which = -1;
    for (int32_t i = 0; i < sp->n_stop; i++) {
        if (!sp->stop[i][0]) continue;
        const char *p = strstr(reply, sp->stop[i]);
        if (p && (size_t)(p - reply) < cut) {
            cut = (size_t)(p - reply);
            which = i;
        }
    }
    if (which >= 0) {
        r->stop_str = sgl_strdup(sp->stop[which]);
        r->stop_token = -1;
    }
    if (sp->max_new_tokens >= 0 && cut > (size_t)sp->max_new_tokens) {
        cut = (size_t)sp->max_new_tokens;
        r->finish = SGL_FINISH_LENGTH;
        r->stop_token = -1;
        free(r->stop_str);
        r->stop_str = NULL;
    }
    r->text = sgl_strndup(reply, cut);
    r->text_len = cut;
    r->completion_tokens = (int32_t)cut;
    r->n_tokens = (int32_t)cut;
    r->tokens = calloc(cut ? cut : 1, sizeof(int32_t));
    for (size_t i = 0; r->tokens && i < cut; i++) r->tokens[i] = (unsigned char)reply[i];

    if (sp->return_logprob) {
        /* 0 tokens with top_logprobs_num: one entry of next-token alternatives (token -1) */
        bool alts_only = cut == 0 && sp->top_logprobs_num > 0 && n > 0;
        int32_t n_entries = alts_only ? 1 : (int32_t)cut;
        r->logprobs = calloc(n_entries ? (size_t)n_entries : 1, sizeof(sgl_token_logprob));
        r->n_logprobs = r->logprobs ? n_entries : 0;
        for (int32_t i = 0; i < r->n_logprobs; i++) {
            sgl_token_logprob *lp = &r->logprobs[i];
            lp->token = alts_only ? -1 : (unsigned char)reply[i];
            lp->logprob = alts_only ? 0.0f : -0.5f;
            if (!alts_only) lp->text = sgl_strndup(reply + i, 1);
            int32_t k = sp->top_logprobs_num;
            if (k > 0) {
                lp->top_ids = calloc((size_t)k, sizeof(int32_t));
                lp->top_logprobs = calloc((size_t)k, sizeof(float));
                lp->top_texts = calloc((size_t)k, sizeof(char *));
                if (lp->top_ids && lp->top_logprobs && lp->top_texts) {
                    lp->n_top = k;
                    for (int32_t j = 0; j < k; j++) {
                        char ch = (char)((unsigned char)reply[i] + j);
                        lp->top_ids[j] = (unsigned char)reply[i] + j;
                        lp->top_logprobs[j] = -0.5f - (float)j;
                        lp->top_texts[j] = sgl_strndup(&ch, 1);
                    }
                }
            }
        }
    }
    free(owned);
}

static void do_score(vm_fake *f, const sgl_request *req, const char *prompt, sgl_result *r) {
    const vm_fake_rule *rule = prompt[0] ? match(f, prompt) : NULL;
    if (rule && rule->abort_msg) {
        abort_result(r, rule->abort_msg);
        return;
    }
    r->finish = SGL_FINISH_LENGTH;
    r->text = sgl_strdup("");
    r->choices = calloc((size_t)(req->n_choices ? req->n_choices : 1), sizeof(sgl_choice_score));
    if (!r->choices) return;
    r->n_choices = req->n_choices;
    for (int32_t i = 0; i < req->n_choices; i++) {
        const char *c = req->choices[i];
        int32_t n = (int32_t)strlen(c);
        sgl_choice_score *cs = &r->choices[i];
        cs->n_tokens = n;
        cs->tokens = calloc((size_t)(n ? n : 1), sizeof(int32_t));
        cs->logprobs = calloc((size_t)(n ? n : 1), sizeof(float));
        if (!cs->tokens || !cs->logprobs) continue;
        for (int32_t k = 0; k < n; k++) cs->tokens[k] = (unsigned char)c[k];
        if (f->scorer) {
            f->scorer(f->scorer_ctx, prompt, c, cs->logprobs, n);
        } else {
            float lp = rule && strcmp(rule->reply, c) == 0 ? -0.1f : -1.0f;
            for (int32_t k = 0; k < n; k++) cs->logprobs[k] = lp;
        }
        for (int32_t k = 0; k < n; k++) cs->sum += cs->logprobs[k];
        r->prompt_tokens += (int32_t)strlen(prompt) + n;
    }
}

/* Queues r for delivery (takes it; freed on failure). Returns 0 or -1. */
static int push_ready(vm_fake *f, sgl_result *r) {
    if (f->n_ready == f->cap_ready) {
        uint32_t nc = f->cap_ready ? f->cap_ready * 2 : 16;
        sgl_result **nr = realloc(f->ready, nc * sizeof *nr);
        if (!nr) {
            sgl_result_free(r);
            return -1;
        }
        f->ready = nr;
        f->cap_ready = nc;
    }
    f->ready[f->n_ready++] = r;
    return 0;
}

static int fake_submit(void *ctx, const sgl_request *req, uint64_t id, sgl_error *err) {
    vm_fake *f = ctx;
    const char *prompt = req->text ? req->text : "";
    if (!req->text && req->n_tokens) return sgl_error_set(err, "fake engine: token prompts not supported");
    if (req->kind == SGL_REQ_PREFILL && f->refuse_prefill) return sgl_error_set(err, "fake engine: prefill refused");
    if (req->n_images > 0) return sgl_error_set(err, "the fake engine cannot take images (%s)", req->images[0]);
    cons_program *prog = NULL;
    if (req->kind == SGL_REQ_GENERATE && sgl_sampling_constraint(&req->params, &prog, err) < 0)
        return -1;
    sgl_result *r = calloc(1, sizeof *r);
    if (!r) {
        cons_program_release(prog);
        return sgl_error_set(err, "out of memory");
    }
    r->id = id;
    r->user_tag = req->user_tag;
    r->kind = req->kind;
    r->stop_token = -1;
    f->since_wait++;
    switch (req->kind) {
    case SGL_REQ_GENERATE:
        log_req(f, 'G', prompt);
        r->prompt_tokens = (int32_t)strlen(prompt);
        r->cached_tokens = cached_prefix(f, prompt);
        do_generate(f, req, prompt, r, prog);
        cons_program_release(prog);
        break;
    case SGL_REQ_SCORE:
        log_req(f, 'S', prompt);
        r->cached_tokens = cached_prefix(f, prompt);
        do_score(f, req, prompt, r);
        break;
    default:
        log_req(f, 'P', prompt);
        r->prompt_tokens = (int32_t)strlen(prompt);
        r->cached_tokens = cached_prefix(f, prompt);
        r->finish = SGL_FINISH_LENGTH;
        break;
    }
    if (!r->text) r->text = sgl_strdup("");
    /* stream: the reply in 2-byte partial results before the final one */
    for (size_t at = 0; req->kind == SGL_REQ_GENERATE && req->stream && r->finish != SGL_FINISH_ABORT &&
                        at < r->text_len;
         at += 2) {
        sgl_result *p = calloc(1, sizeof *p);
        if (!p) break;
        p->id = id;
        p->user_tag = req->user_tag;
        p->kind = req->kind;
        p->partial = true;
        p->stop_token = -1;
        p->text_len = SGL_MIN(2, r->text_len - at);
        p->text = sgl_strndup(r->text + at, p->text_len);
        if (push_ready(f, p) < 0) break;
    }
    if (push_ready(f, r) < 0) return sgl_error_set(err, "out of memory");
    return 0;
}

static sgl_result *fake_wait(void *ctx, double timeout_s) {
    vm_fake *f = ctx;
    if (f->since_wait) {
        int32_t *nb = realloc(f->batches, (f->n_batches + 1) * sizeof *nb);
        if (nb) {
            f->batches = nb;
            f->batches[f->n_batches++] = f->since_wait;
        }
        f->since_wait = 0;
    }
    if (f->ready_head == f->n_ready) return NULL;
    sgl_result *r;
    if (f->reverse) r = f->ready[--f->n_ready];
    else r = f->ready[f->ready_head++];
    if (f->ready_head == f->n_ready) f->ready_head = f->n_ready = 0;
    return r;
}

static void fake_metrics(void *ctx, sgl_engine_metrics *out) {
    vm_fake *f = ctx;
    out->requests_done = f->n_log;
}

static void fake_free(void *ctx) {
    vm_fake *f = ctx;
    for (uint32_t i = 0; i < f->n_rules; i++) {
        free((char *)f->rules[i].when);
        free((char *)f->rules[i].reply);
        free((char *)f->rules[i].abort_msg);
    }
    free(f->rules);
    for (uint32_t i = 0; i < f->n_log; i++) free(f->log[i]);
    free(f->log);
    for (uint32_t i = 0; i < f->n_seen; i++) free(f->seen[i]);
    free(f->seen);
    for (uint32_t i = f->ready_head; i < f->n_ready; i++) sgl_result_free(f->ready[i]);
    free(f->ready);
    free(f->batches);
    cons_vocab_free(f->vocab);
    free(f);
}

static const sgl_engine_ops fake_ops = {
    .name = "fake",
    .submit = fake_submit,
    .wait = fake_wait,
    .metrics = fake_metrics,
    .free = fake_free,
};

sgl_engine *vm_fake_engine_new(vm_fake **fake_out) {
    vm_fake *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    sgl_engine *e = sgl_engine_new(&fake_ops, f);
    if (!e) {
        free(f);
        return NULL;
    }
    if (fake_out) *fake_out = f;
    return e;
}
