/* caps.c: gen/select calls against engine capabilities (see caps.h). */
#include "vm/caps.h"

#include <string.h>

#include "lang/lang.h"

/* What one call needs beyond plain text generation. */
typedef struct need {
    bool select;           /* select() or gen(choices=) */
    int method;            /* select method, -1 unknown */
    bool gen_choices;
    const char *constraint; /* "regex" / "json_schema" or NULL */
    bool logprobs;
    uint32_t sampling;     /* SGL_CAP_* fields set away from their defaults */
    int32_t n_stop;
} need;

static const char *const sampling_names[] = {"top_k",      "min_p",      "repetition_penalty", "frequency_penalty",
                                              "min_tokens", "ignore_eos", "seed",               "stop_token_ids"};

static int check(const need *nd, const sgl_engine_caps *c, const char *backend, char *msg, size_t n) {
    const char *b = backend ? backend : "local";
    if (nd->select && !c->score) {
        snprintf(msg, n,
                 "%s%s%s needs the prompt logprobs of each choice, which backend %s does not offer "
                 "(use a backend with logprobs, e.g. sglang:URL)",
                 nd->gen_choices ? "gen(choices=...)" : "select", nd->method >= 0 ? " with method " : "",
                 nd->method >= 0 ? sgl_select_methods[nd->method] : "", b);
        return -1;
    }
    if (nd->constraint && !c->constraints) {
        if (!backend)
            snprintf(msg, n,
                     "constrained decoding is not supported yet: gen(%s=...) needs an engine with regex/JSON-schema "
                     "constraints",
                     nd->constraint);
        else
            snprintf(msg, n, "gen(%s=...) needs constrained decoding, which backend %s does not offer",
                     nd->constraint, b);
        return -1;
    }
    if (nd->logprobs && !c->logprobs) {
        snprintf(msg, n, "gen(return_logprob/top_logprobs_num) needs token logprobs, which backend %s does not offer",
                 b);
        return -1;
    }
    uint32_t miss = nd->sampling & ~c->sampling;
    for (int i = 0; miss && i < 8; i++)
        if (miss & (1u << i)) {
            snprintf(msg, n, "gen(%s=...): backend %s does not take this sampling field", sampling_names[i], b);
            return -1;
        }
    if (c->max_stop && nd->n_stop > c->max_stop) {
        snprintf(msg, n, "gen(stop=...) gives %d stop strings; backend %s takes at most %d", nd->n_stop, b,
                 c->max_stop);
        return -1;
    }
    return 0;
}

int vm_caps_check_args(const vm_gen_args *a, const sgl_engine_caps *c, const char *backend, char *msg, size_t n) {
    need nd;
    memset(&nd, 0, sizeof nd);
    const sgl_sampling_params *p = &a->sp, d = sgl_sampling_params_default();
    nd.select = a->is_select;
    nd.method = a->is_select ? (int)a->method : -1;
    nd.constraint = a->regex ? "regex" : a->json_schema ? "json_schema" : a->grammar ? "grammar" : NULL;
    nd.logprobs = p->return_logprob || p->top_logprobs_num > 0;
    if (p->top_k != d.top_k) nd.sampling |= SGL_CAP_TOP_K;
    if (p->min_p != d.min_p) nd.sampling |= SGL_CAP_MIN_P;
    if (p->repetition_penalty != d.repetition_penalty) nd.sampling |= SGL_CAP_REPETITION_PENALTY;
    if (p->frequency_penalty != 0 || p->presence_penalty != 0) nd.sampling |= SGL_CAP_FREQ_PRESENCE_PENALTY;
    if (p->min_new_tokens > 0) nd.sampling |= SGL_CAP_MIN_TOKENS;
    if (p->ignore_eos) nd.sampling |= SGL_CAP_IGNORE_EOS;
    if (a->seed_fixed) nd.sampling |= SGL_CAP_SEED; /* the call's own seed= (run seeds are the VM's) */
    if (a->n_stop_ids > 0) nd.sampling |= SGL_CAP_STOP_TOKEN_IDS;
    nd.n_stop = a->is_select ? 0 : a->n_stop;
    if (a->is_select) nd.sampling = 0, nd.logprobs = false;
    return check(&nd, c, backend, msg, n);
}

static double const_num(const sgl_const *k) {
    return k->kind == SGL_CONST_INT ? (double)k->i : k->kind == SGL_CONST_FLOAT ? k->f : 0;
}

int vm_caps_check_module(const sgl_module *m, const sgl_engine_caps *c, const char *backend, FILE *out) {
    int errors = 0;
    for (uint32_t s = 0; s < m->n_sites; s++) {
        const sgl_bc_site *site = &m->sites[s];
        if (site->builtin != SGL_BUILTIN_GEN && site->builtin != SGL_BUILTIN_SELECT) continue;
        need nd;
        memset(&nd, 0, sizeof nd);
        nd.method = -1;
        nd.select = site->builtin == SGL_BUILTIN_SELECT;
        if (nd.select) nd.method = 0; /* token_length_normalized unless said otherwise */
        for (uint32_t i = 0; i < site->n_kwargs; i++) {
            const sgl_bc_kwarg *kw = &site->kwargs[i];
            if (kw->id == SGL_KWARG_CHOICES && !nd.select) {
                nd.select = nd.gen_choices = true;
                nd.method = 1; /* greedy_token_selection */
            }
            if (kw->konst == SGL_SITE_DYNAMIC || (uint32_t)kw->konst >= m->n_consts) continue;
            const sgl_const *k = &m->consts[kw->konst];
            switch ((sgl_kwarg_id)kw->id) {
            case SGL_KWARG_METHOD:
                for (int q = 0; q < 3 && k->kind == SGL_CONST_STRING; q++)
                    if (!strcmp(k->str.bytes, sgl_select_methods[q])) nd.method = q;
                break;
            case SGL_KWARG_REGEX:
            case SGL_KWARG_JSON_SCHEMA:
            case SGL_KWARG_GRAMMAR:
                if (k->kind != SGL_CONST_NONE)
                    nd.constraint = kw->id == SGL_KWARG_REGEX         ? "regex"
                                    : kw->id == SGL_KWARG_JSON_SCHEMA ? "json_schema"
                                                                      : "grammar";
                break;
            case SGL_KWARG_RETURN_LOGPROB: nd.logprobs |= k->kind == SGL_CONST_BOOL && k->b; break;
            case SGL_KWARG_TOP_LOGPROBS_NUM: nd.logprobs |= const_num(k) > 0; break;
            case SGL_KWARG_TOP_K: if (const_num(k) != -1) nd.sampling |= SGL_CAP_TOP_K; break;
            case SGL_KWARG_MIN_P: if (const_num(k) != 0) nd.sampling |= SGL_CAP_MIN_P; break;
            case SGL_KWARG_REPETITION_PENALTY: if (const_num(k) != 1) nd.sampling |= SGL_CAP_REPETITION_PENALTY; break;
            case SGL_KWARG_FREQUENCY_PENALTY:
            case SGL_KWARG_PRESENCE_PENALTY:
                if (const_num(k) != 0) nd.sampling |= SGL_CAP_FREQ_PRESENCE_PENALTY;
                break;
            case SGL_KWARG_MIN_TOKENS: if (const_num(k) > 0) nd.sampling |= SGL_CAP_MIN_TOKENS; break;
            case SGL_KWARG_IGNORE_EOS: if (k->kind == SGL_CONST_BOOL && k->b) nd.sampling |= SGL_CAP_IGNORE_EOS; break;
            case SGL_KWARG_SEED: if (const_num(k) != 0) nd.sampling |= SGL_CAP_SEED; break;
            case SGL_KWARG_STOP_TOKEN_IDS:
                if (k->kind == SGL_CONST_LIST && k->agg.n) nd.sampling |= SGL_CAP_STOP_TOKEN_IDS;
                break;
            case SGL_KWARG_STOP: nd.n_stop = k->kind == SGL_CONST_LIST ? (int32_t)k->agg.n : 1; break;
            default: break;
            }
        }
        if (nd.select) nd.sampling = 0, nd.logprobs = false, nd.n_stop = 0;
        char msg[512];
        if (check(&nd, c, backend, msg, sizeof msg) < 0) {
            errors++;
            if (out)
                fprintf(out, "%s:%u:%u: error: %s\n", site->file < m->n_files ? m->files[site->file] : "?",
                        site->line, site->col, msg);
        }
    }
    return errors;
}
