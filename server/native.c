/* native: SGLang's own routes: POST /generate (text or input_ids, single or
 * batch, sampling_params with SGLang's names, return_logprob with
 * logprob_start_len / top_logprobs_num / return_text_in_logprobs, stream,
 * meta_info), GET /get_model_info, GET /get_server_info (and /server_info),
 * POST /flush_cache, GET /health_generate. The request shapes are the ones
 * SGLang's Python frontend (RuntimeEndpoint) sends: gen, select (a batch of
 * max_new_tokens 0 requests with prompt logprobs) and prefix caching
 * (max_new_tokens 0).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/internal.h"

static const srv_field generate_fields[] = {
    {"text", J_STR | J_ARR | J_NULL}, {"input_ids", J_ARR | J_NULL},
    {"sampling_params", J_OBJ | J_ARR | J_NULL}, {"return_logprob", J_BOOL | J_ARR | J_NULL},
    {"logprob_start_len", J_INT | J_ARR | J_NULL}, {"top_logprobs_num", J_INT | J_ARR | J_NULL},
    {"return_text_in_logprobs", J_BOOL | J_NULL}, {"stream", J_BOOL | J_NULL},
    {"rid", J_STR | J_ARR | J_NULL}, {"image_data", J_NULL}, {"log_metrics", J_BOOL | J_NULL},
    {"return_hidden_states", J_BOOL | J_NULL}, {"lora_path", J_NULL},
};

static const srv_field sampling_fields[] = {
    {"max_new_tokens", J_INT | J_NULL}, {"min_new_tokens", J_INT | J_NULL}, {"stop", J_STR | J_ARR | J_NULL},
    {"stop_token_ids", J_ARR | J_NULL}, {"temperature", J_NUM | J_NULL}, {"top_p", J_NUM | J_NULL},
    {"top_k", J_INT | J_NULL}, {"min_p", J_NUM | J_NULL}, {"frequency_penalty", J_NUM | J_NULL},
    {"presence_penalty", J_NUM | J_NULL}, {"repetition_penalty", J_NUM | J_NULL},
    {"ignore_eos", J_BOOL | J_NULL}, {"skip_special_tokens", J_BOOL | J_NULL},
    {"spaces_between_special_tokens", J_BOOL | J_NULL}, {"regex", J_STR | J_NULL},
    {"json_schema", J_STR | J_NULL}, {"ebnf", J_STR | J_NULL}, {"n", J_INT | J_NULL},
    {"no_stop_trim", J_BOOL | J_NULL}, {"sampling_seed", J_INT64 | J_NULL}, {"seed", J_INT64 | J_NULL},
    {"stream_interval", J_INT | J_NULL}, {"structural_tag", J_NULL}, {"custom_params", J_NULL},
    {"logit_bias", J_OBJ | J_NULL}, {"stop_regex", J_STR | J_ARR | J_NULL},
};

/* One item of a /generate batch. */
typedef struct nat_item {
    gen_prompt prompt;
    sgl_sampling_params sp;
    const char **stops;
    int32_t *stop_ids;
    bool return_logprob;
    int32_t logprob_start_len;
} nat_item;

typedef struct nat_req {
    bool batch, stream, text_in_logprobs;
    int n;
    nat_item *items;
    char rid[40];
} nat_req;

static void nat_free(nat_req *q) {
    for (int i = 0; q->items && i < q->n; i++) {
        gen_prompt_free(&q->items[i].prompt);
        free(q->items[i].stops);
        free(q->items[i].stop_ids);
    }
    free(q->items);
}

static const cJSON *get(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

/* Element i of a field that is one value for all or a list per item. */
static const cJSON *per_item(const cJSON *v, int i, bool batch) {
    if (!v || !cJSON_IsArray(v) || !batch) return v;
    return cJSON_GetArrayItem(v, i);
}

static int bad_field(char *bad, size_t cap, const char *name, sgl_error *err, const char *fmt, const char *what) {
    snprintf(bad, cap, "%s", name);
    return sgl_error_set(err, fmt, name, what);
}

static int parse_sampling(sgl_server *s, const cJSON *o, const char *path, nat_item *it, char *bad,
                          size_t cap, sgl_error *err) {
    it->sp = sgl_sampling_params_default();
    if (!o) return 0;
    if (srv_check_fields(o, sampling_fields, SGL_ARRAY_LEN(sampling_fields), path, bad, cap, err)) return -1;
    char p[160];
    const cJSON *x;
    struct { const char *k; double lo, hi; } ranges[] = {
        {"max_new_tokens", 0, 1 << 24}, {"min_new_tokens", 0, 1 << 24}, {"temperature", 0, 100},
        {"top_p", 0, 1}, {"top_k", -1, 1 << 30}, {"min_p", 0, 1}, {"frequency_penalty", -2, 2},
        {"presence_penalty", -2, 2}, {"repetition_penalty", 0.01, 100}, {"n", 1, 1},
    };
    for (size_t i = 0; i < SGL_ARRAY_LEN(ranges); i++) {
        if (!(x = get(o, ranges[i].k))) continue;
        if (x->valuedouble < ranges[i].lo || x->valuedouble > ranges[i].hi) {
            snprintf(p, sizeof p, "%s.%s", path, ranges[i].k);
            snprintf(bad, cap, "%s", p);
            return sgl_error_set(err, "field '%s' must be between %g and %g", p, ranges[i].lo, ranges[i].hi);
        }
    }
    sgl_sampling_params *sp = &it->sp;
    if ((x = get(o, "max_new_tokens"))) sp->max_new_tokens = (int32_t)x->valuedouble;
    if ((x = get(o, "min_new_tokens"))) sp->min_new_tokens = (int32_t)x->valuedouble;
    if ((x = get(o, "temperature"))) sp->temperature = (float)x->valuedouble;
    if ((x = get(o, "top_p"))) sp->top_p = (float)x->valuedouble;
    if ((x = get(o, "top_k"))) sp->top_k = (int32_t)x->valuedouble;
    if ((x = get(o, "min_p"))) sp->min_p = (float)x->valuedouble;
    if ((x = get(o, "frequency_penalty"))) sp->frequency_penalty = (float)x->valuedouble;
    if ((x = get(o, "presence_penalty"))) sp->presence_penalty = (float)x->valuedouble;
    if ((x = get(o, "repetition_penalty"))) sp->repetition_penalty = (float)x->valuedouble;
    if ((x = get(o, "ignore_eos"))) sp->ignore_eos = cJSON_IsTrue(x);
    if ((x = get(o, "skip_special_tokens"))) sp->skip_special_tokens = cJSON_IsTrue(x);
    if ((x = get(o, "regex"))) sp->regex = x->valuestring;
    if ((x = get(o, "json_schema"))) sp->json_schema = x->valuestring;
    sp->seed = srv_fresh_seed(s);
    if ((x = get(o, "sampling_seed")) || (x = get(o, "seed"))) srv_json_int64(x, &sp->seed);
    if ((x = get(o, "no_stop_trim")) && cJSON_IsTrue(x)) {
        snprintf(p, sizeof p, "%s.no_stop_trim", path);
        return bad_field(bad, cap, p, err, "field '%s' = true is %s", "not supported");
    }
    if ((x = get(o, "logit_bias")) && x->child) {
        snprintf(p, sizeof p, "%s.logit_bias", path);
        return bad_field(bad, cap, p, err, "field '%s' is %s", "not supported");
    }
    if ((x = get(o, "stop_regex")) && !(cJSON_IsArray(x) && !x->child)) {
        snprintf(p, sizeof p, "%s.stop_regex", path);
        return bad_field(bad, cap, p, err, "field '%s': %s", "stop regexes are not supported by this engine");
    }
    if ((x = get(o, "ebnf"))) sp->grammar = x->valuestring;
    if (sp->regex || sp->json_schema || sp->grammar) {
        snprintf(p, sizeof p, "%s.%s", path, sp->regex ? "regex" : sp->json_schema ? "json_schema" : "ebnf");
        if (gen_check_constraint(sp, p, bad, cap, err)) return -1;
    }
    snprintf(p, sizeof p, "%s.stop", path);
    if (gen_stop_list(get(o, "stop"), &it->stops, &sp->n_stop, p, err)) {
        snprintf(bad, cap, "%s", p);
        return -1;
    }
    sp->stop = it->stops;
    if ((x = get(o, "stop_token_ids"))) {
        int n = cJSON_GetArraySize(x);
        it->stop_ids = malloc(sizeof *it->stop_ids * (size_t)(n ? n : 1));
        if (!it->stop_ids) return sgl_error_set(err, "out of memory");
        const cJSON *c;
        cJSON_ArrayForEach(c, x) {
            if (!srv_json_is_int(c) || c->valuedouble < 0 || c->valuedouble >= tok_vocab_size(s->tok)) {
                snprintf(p, sizeof p, "%s.stop_token_ids", path);
                return bad_field(bad, cap, p, err, "field '%s' must hold %s", "token ids");
            }
            it->stop_ids[sp->n_stop_token_ids++] = (int32_t)c->valuedouble;
        }
        sp->stop_token_ids = it->stop_ids;
    }
    return 0;
}

static int nat_parse(sgl_server *s, const cJSON *b, nat_req *q, char *bad, size_t cap, sgl_error *err) {
    memset(q, 0, sizeof *q);
    if (srv_check_fields(b, generate_fields, SGL_ARRAY_LEN(generate_fields), "", bad, cap, err)) return -1;
    const cJSON *text = get(b, "text"), *ids = get(b, "input_ids");
    if (!text == !ids) {
        snprintf(bad, cap, "text");
        return sgl_error_set(err, "give exactly one of 'text' and 'input_ids'");
    }
    if (text) {
        q->batch = cJSON_IsArray(text);
        q->n = q->batch ? cJSON_GetArraySize(text) : 1;
    } else {
        q->batch = ids->child && cJSON_IsArray(ids->child);
        q->n = q->batch ? cJSON_GetArraySize(ids) : 1;
    }
    if (q->n == 0) {
        snprintf(bad, cap, "%s", text ? "text" : "input_ids");
        return sgl_error_set(err, "field '%s' is an empty batch", bad);
    }
    if (q->n > 4096) {
        snprintf(bad, cap, "%s", text ? "text" : "input_ids");
        return sgl_error_set(err, "field '%s': a batch holds at most 4096 prompts", bad);
    }
    q->stream = cJSON_IsTrue(get(b, "stream"));
    q->text_in_logprobs = cJSON_IsTrue(get(b, "return_text_in_logprobs"));
    const cJSON *rid = get(b, "rid");
    snprintf(q->rid, sizeof q->rid, "%s", rid && cJSON_IsString(rid) ? rid->valuestring : "");
    if (!q->rid[0]) snprintf(q->rid, sizeof q->rid, "%llx", (unsigned long long)srv_next_id(s));
    q->items = calloc((size_t)q->n, sizeof *q->items);
    if (!q->items) return sgl_error_set(err, "out of memory");
    const cJSON *spv = get(b, "sampling_params");
    if (spv && cJSON_IsArray(spv) && (!q->batch || cJSON_GetArraySize(spv) != q->n)) {
        snprintf(bad, cap, "sampling_params");
        return sgl_error_set(err, "field 'sampling_params' as a list needs one object per prompt of the batch");
    }
    static const char *listables[] = {"return_logprob", "logprob_start_len", "top_logprobs_num"};
    for (size_t k = 0; k < SGL_ARRAY_LEN(listables); k++) {
        const cJSON *v = get(b, listables[k]);
        if (v && cJSON_IsArray(v) && (!q->batch || cJSON_GetArraySize(v) != q->n)) {
            snprintf(bad, cap, "%s", listables[k]);
            return sgl_error_set(err, "field '%s' as a list needs one value per prompt of the batch", listables[k]);
        }
    }
    for (int i = 0; i < q->n; i++) {
        nat_item *it = &q->items[i];
        char path[64];
        const cJSON *p = text ? per_item(text, i, q->batch) : per_item(ids, i, q->batch);
        snprintf(path, sizeof path, q->batch ? "%s[%d]" : "%s", text ? "text" : "input_ids", i);
        int rc;
        if (text && !cJSON_IsString(p)) rc = sgl_error_set(err, "field '%s' must be a string", path);
        else if (text) rc = gen_prompt_text(s, p->valuestring, strlen(p->valuestring), true, &it->prompt, path, err);
        else if (!cJSON_IsArray(p)) rc = sgl_error_set(err, "field '%s' must be a list of token ids", path);
        else rc = gen_prompt_ids(s, p, &it->prompt, path, err);
        if (rc) {
            snprintf(bad, cap, "%s", path);
            return -1;
        }
        const cJSON *so = per_item(spv, i, q->batch);
        char sp_path[48];
        snprintf(sp_path, sizeof sp_path, spv && cJSON_IsArray(spv) ? "sampling_params[%d]" : "sampling_params", i);
        if (so && !cJSON_IsObject(so)) {
            snprintf(bad, cap, "%s", sp_path);
            return sgl_error_set(err, "field '%s' must be an object", sp_path);
        }
        if (parse_sampling(s, so, sp_path, it, bad, cap, err)) return -1;
        const cJSON *lp = per_item(get(b, "return_logprob"), i, q->batch);
        const cJSON *ls = per_item(get(b, "logprob_start_len"), i, q->batch);
        const cJSON *tn = per_item(get(b, "top_logprobs_num"), i, q->batch);
        if ((lp && !cJSON_IsBool(lp)) || (ls && !srv_json_is_int(ls)) || (tn && !srv_json_is_int(tn))) {
            const char *f = lp && !cJSON_IsBool(lp) ? "return_logprob" : ls && !srv_json_is_int(ls) ? "logprob_start_len" : "top_logprobs_num";
            snprintf(bad, cap, "%s", f);
            return sgl_error_set(err, "field '%s' has a wrong type", f);
        }
        it->return_logprob = lp && cJSON_IsTrue(lp);
        it->logprob_start_len = ls ? (int32_t)ls->valuedouble : -1;
        if (tn && (tn->valuedouble < 0 || tn->valuedouble > 20)) {
            snprintf(bad, cap, "top_logprobs_num");
            return sgl_error_set(err, "field 'top_logprobs_num' must be between 0 and 20");
        }
        if (it->return_logprob) {
            it->sp.return_logprob = true;
            it->sp.top_logprobs_num = tn ? (int32_t)tn->valuedouble : 0;
            it->sp.logprob_start_len = it->logprob_start_len;
        }
        it->sp.max_new_tokens = gen_clamp_max(s, it->sp.max_new_tokens, it->prompt.n);
    }
    return 0;
}

/* ---- replies ------------------------------------------------------------ */

static cJSON *lp_entry(sgl_server *s, bool has, float lp, int32_t tok, bool text) {
    cJSON *e = cJSON_CreateArray();
    cJSON_AddItemToArray(e, has ? cJSON_CreateNumber(lp < -1e30f ? -9999.0 : lp) : cJSON_CreateNull());
    cJSON_AddItemToArray(e, cJSON_CreateNumber(tok));
    if (text) {
        size_t pl = 0;
        const char *piece = tok_piece(s->tok, tok, &pl);
        cJSON_AddItemToArray(e, srv_json_str(piece, pl));
    } else {
        cJSON_AddItemToArray(e, cJSON_CreateNull());
    }
    return e;
}

static void add_logprobs(sgl_server *s, cJSON *meta, const nat_item *it, const sgl_result *r, bool text) {
    cJSON *in = cJSON_CreateArray(), *in_top = cJSON_CreateArray();
    if (it->logprob_start_len == 0 && it->prompt.n > 0) { /* the first token has no logprob */
        cJSON_AddItemToArray(in, lp_entry(s, false, 0, it->prompt.ids[0], text));
        cJSON_AddItemToArray(in_top, cJSON_CreateNull());
    }
    for (int i = 0; i < r->n_input_logprobs; i++) {
        const sgl_token_logprob *lp = &r->input_logprobs[i];
        cJSON_AddItemToArray(in, lp_entry(s, true, lp->logprob, lp->token, text));
        cJSON *tops = cJSON_CreateArray();
        for (int k = 0; k < lp->n_top; k++)
            cJSON_AddItemToArray(tops, lp_entry(s, true, lp->top_logprobs[k], lp->top_ids[k], text));
        cJSON_AddItemToArray(in_top, tops);
    }
    cJSON *out = cJSON_CreateArray(), *out_top = cJSON_CreateArray();
    for (int i = 0; i < r->n_logprobs; i++) {
        const sgl_token_logprob *lp = &r->logprobs[i];
        if (lp->token < 0) continue; /* a 0-token request's next-token alternatives: no token */
        cJSON_AddItemToArray(out, lp_entry(s, true, lp->logprob, lp->token, text));
        cJSON *tops = cJSON_CreateArray();
        for (int k = 0; k < lp->n_top; k++)
            cJSON_AddItemToArray(tops, lp_entry(s, true, lp->top_logprobs[k], lp->top_ids[k], text));
        cJSON_AddItemToArray(out_top, tops);
    }
    cJSON_AddItemToObject(meta, "input_token_logprobs", in);
    cJSON_AddItemToObject(meta, "output_token_logprobs", out);
    cJSON_AddItemToObject(meta, "input_top_logprobs", in_top);
    cJSON_AddItemToObject(meta, "output_top_logprobs", out_top);
}

static cJSON *finish_reason(const sgl_result *r) {
    if (!r || r->partial) return cJSON_CreateNull();
    cJSON *f = cJSON_CreateObject();
    switch (r->finish) {
    case SGL_FINISH_STOP:
        cJSON_AddStringToObject(f, "type", "stop");
        if (r->stop_str) cJSON_AddItemToObject(f, "matched", srv_json_str(r->stop_str, strlen(r->stop_str)));
        else cJSON_AddNumberToObject(f, "matched", r->stop_token);
        break;
    case SGL_FINISH_LENGTH:
        cJSON_AddStringToObject(f, "type", "length");
        cJSON_AddNumberToObject(f, "length", r->completion_tokens);
        break;
    default:
        cJSON_AddStringToObject(f, "type", "abort");
        cJSON_AddStringToObject(f, "message", r->error ? r->error : "aborted");
        break;
    }
    return f;
}

/* One item's reply object; text/ids: the whole output so far. */
static cJSON *nat_item_json(sgl_server *s, const nat_req *q, int i, const sgl_result *r, const char *text,
                            size_t text_len, double t0) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "text", srv_json_str(text, text_len));
    if (!r->partial) {
        cJSON *ids = cJSON_CreateArray();
        for (int k = 0; k < r->n_tokens; k++) cJSON_AddItemToArray(ids, cJSON_CreateNumber(r->tokens[k]));
        cJSON_AddItemToObject(o, "output_ids", ids);
    }
    cJSON *m = cJSON_CreateObject();
    char id[64];
    snprintf(id, sizeof id, q->batch ? "%s-%d" : "%s", q->rid, i);
    cJSON_AddStringToObject(m, "id", id);
    cJSON_AddItemToObject(m, "finish_reason", finish_reason(r));
    cJSON_AddNumberToObject(m, "prompt_tokens", r->prompt_tokens);
    cJSON_AddNumberToObject(m, "completion_tokens", r->completion_tokens);
    cJSON_AddNumberToObject(m, "cached_tokens", r->cached_tokens);
    cJSON_AddNumberToObject(m, "e2e_latency", sgl_now() - t0);
    if (q->items[i].return_logprob && !r->partial) add_logprobs(s, m, &q->items[i], r, q->text_in_logprobs);
    cJSON_AddItemToObject(o, "meta_info", m);
    if (q->batch) cJSON_AddNumberToObject(o, "index", i);
    return o;
}

typedef struct nat_stream {
    gen_stream gs;             /* first: srv_stream.ctx is both */
    nat_req q;
} nat_stream;

static void nat_handle(srv_stream *st, int idx, sgl_result *r) {
    nat_stream *ns = st->ctx;
    sgl_server *s = st->req->srv;
    if (r->partial) {
        sgl_strbuf_append(&ns->gs.job.text[idx], r->text, r->text_len);
        if (r->text_len) {
            sgl_strbuf *t = &ns->gs.job.text[idx];
            srv_sse_data(&st->out, NULL, nat_item_json(s, &ns->q, idx, r, t->data ? t->data : "", t->len, ns->gs.job.t0));
        }
        sgl_result_free(r);
        return;
    }
    srv_sse_data(&st->out, NULL, nat_item_json(s, &ns->q, idx, r, r->text, r->text_len, ns->gs.job.t0));
    if (ns->gs.job.n_done == ns->gs.job.n) {
        sgl_strbuf_puts(&st->out, "data: [DONE]\n\n");
        gen_job_account(&ns->gs.job, st->req);
        st->done = true;
    }
}

static void nat_free_ctx(gen_stream *gs) {
    nat_stream *ns = (nat_stream *)gs;
    nat_free(&ns->q);
    free(ns);
}

enum MHD_Result route_generate(srv_req *r, cJSON *body) {
    sgl_server *s = r->srv;
    char bad[160] = "";
    sgl_error err = {{0}};
    nat_stream *ns = calloc(1, sizeof *ns);
    if (!ns) return srv_reply_error(r, 500, NULL, "out of memory");
    nat_req *q = &ns->q;
    if (nat_parse(s, body, q, bad, sizeof bad, &err)) {
        nat_free(q);
        free(ns);
        return srv_reply_error(r, 400, bad[0] ? bad : NULL, "%s", err.msg);
    }
    gen_job *j = &ns->gs.job;
    gen_job_init(j, s, q->n);
    for (int i = 0; i < q->n; i++) {
        if (gen_job_submit(j, i, &q->items[i].prompt, &q->items[i].sp, q->stream, &err)) {
            gen_job_free(j, false);
            nat_free(q);
            free(ns);
            return srv_reply_error(r, s->stopping ? 503 : 500, NULL, "%s", err.msg);
        }
    }
    enum MHD_Result rc;
    if (q->stream) {
        ns->gs.handle = nat_handle;
        ns->gs.free_ctx = nat_free_ctx;
        return gen_stream_start(r, &ns->gs);
    }
    if (gen_job_wait_all(j, r) < 0) {
        gen_job_free(j, true);
        nat_free(q);
        free(ns);
        return MHD_NO;
    }
    gen_job_account(j, r);
    const sgl_result *failed = gen_job_failed(j);
    if (failed) {
        rc = gen_reply_engine_error(r, failed);
    } else if (!q->batch) {
        rc = srv_reply_json(r, 200, nat_item_json(s, q, 0, j->final[0], j->final[0]->text, j->final[0]->text_len, j->t0));
    } else {
        cJSON *a = cJSON_CreateArray();
        for (int i = 0; i < q->n; i++)
            cJSON_AddItemToArray(a, nat_item_json(s, q, i, j->final[i], j->final[i]->text, j->final[i]->text_len, j->t0));
        rc = srv_reply_json(r, 200, a);
    }
    gen_job_free(j, false);
    nat_free(q);
    free(ns);
    return rc;
}

enum MHD_Result route_model_info(srv_req *r) {
    sgl_server *s = r->srv;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model_path", s->model_path);
    cJSON_AddStringToObject(o, "tokenizer_path", s->model_path);
    cJSON_AddBoolToObject(o, "is_generation", true);
    cJSON_AddItemToObject(o, "preferred_sampling_params", cJSON_CreateNull());
    cJSON_AddStringToObject(o, "weight_version", "default");
    cJSON_AddStringToObject(o, "chat_template", chat_template_family(s->ct));
    return srv_reply_json(r, 200, o);
}

enum MHD_Result route_server_info(srv_req *r) {
    sgl_server *s = r->srv;
    sgl_engine_metrics em;
    sgl_engine_metrics_get(s->engine, &em);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model_path", s->model_path);
    cJSON_AddStringToObject(o, "host", s->host);
    cJSON_AddNumberToObject(o, "port", s->port);
    cJSON_AddStringToObject(o, "version", SGL_VERSION);
    cJSON_AddStringToObject(o, "engine", sgl_engine_name(s->engine));
    cJSON_AddNumberToObject(o, "context_length", s->n_ctx);
    cJSON_AddNumberToObject(o, "max_total_num_tokens", em.pool_slots);
    cJSON_AddNumberToObject(o, "max_body", (double)s->cfg.max_body);
    cJSON_AddBoolToObject(o, "allow_io", s->cfg.allow_io);
    cJSON_AddBoolToObject(o, "api_key_required", s->api_key != NULL);
    cJSON_AddNumberToObject(o, "uptime_s", sgl_now() - s->started);
    cJSON *st = cJSON_CreateObject();
    cJSON_AddNumberToObject(st, "num_running_reqs", em.running);
    cJSON_AddNumberToObject(st, "num_waiting_reqs", em.waiting);
    cJSON_AddNumberToObject(st, "requests_done", (double)em.requests_done);
    cJSON_AddNumberToObject(st, "prompt_tokens", (double)em.prompt_tokens);
    cJSON_AddNumberToObject(st, "cached_tokens", (double)em.cached_tokens);
    cJSON_AddNumberToObject(st, "cache_hit_rate", em.hit_rate);
    cJSON_AddNumberToObject(st, "generated_tokens", (double)em.generated_tokens);
    cJSON_AddNumberToObject(st, "kv_pool_used", em.pool_used);
    cJSON_AddNumberToObject(st, "cache_tokens", (double)em.cache_tokens);
    cJSON_AddNumberToObject(st, "evicted_tokens", (double)em.evicted_tokens);
    cJSON *arr = cJSON_AddArrayToObject(o, "internal_states");
    cJSON_AddItemToArray(arr, st);
    return srv_reply_json(r, 200, o);
}

enum MHD_Result route_flush_cache(srv_req *r) {
    /* As SGLang: 200 and a plain-text message when flushed; refused (400)
     * while requests run or wait; 501 for an engine without the operation. */
    sgl_error err = {{0}};
    int64_t n = sgl_engine_flush_cache(r->srv->engine, &err);
    if (n < 0) return srv_reply_error(r, n == -2 ? 501 : 400, NULL, "%s", err.msg);
    char *body = NULL;
    if (asprintf(&body, "Cache flushed.\n%lld cached tokens freed.\n", (long long)n) < 0) body = NULL;
    return srv_reply(r, 200, "text/plain; charset=utf-8", body);
}

enum MHD_Result route_health_generate(srv_req *r) {
    sgl_server *s = r->srv;
    sgl_error err = {{0}};
    gen_prompt p = {0};
    if (gen_prompt_text(s, "Hi", 2, true, &p, "health", &err))
        return srv_reply_error(r, 503, NULL, "%s", err.msg);
    sgl_sampling_params sp = sgl_sampling_params_default();
    sp.max_new_tokens = 1;
    sp.temperature = 0;
    gen_job j;
    gen_job_init(&j, s, 1);
    enum MHD_Result rc;
    if (gen_job_submit(&j, 0, &p, &sp, false, &err)) {
        rc = srv_reply_error(r, 503, NULL, "%s", err.msg);
    } else if (gen_job_wait_all(&j, r) < 0) {
        rc = MHD_NO;
    } else if (j.final[0]->finish == SGL_FINISH_ABORT) {
        rc = srv_reply_error(r, 503, NULL, "%s", j.final[0]->error ? j.final[0]->error : "aborted");
    } else {
        rc = srv_reply(r, 200, "text/plain", NULL);
    }
    gen_job_free(&j, false);
    gen_prompt_free(&p);
    return rc;
}
