/* openai: POST /v1/completions, POST /v1/chat/completions (the model's chat
 * template from its GGUF), GET /v1/models, in OpenAI's request and reply
 * shapes: n, stop, max_tokens / max_completion_tokens, temperature, top_p,
 * seed, penalties, logprobs, response_format (json_schema / json_object as
 * the engine's json_schema constraint), SSE streams ending in
 * "data: [DONE]" with stream_options.include_usage, usage with
 * prompt_tokens_details.cached_tokens. Errors in OpenAI's error shape.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/unicode.h"
#include "server/internal.h"

static const srv_field completion_fields[] = {
    {"model", J_STR}, {"prompt", J_STR | J_ARR}, {"max_tokens", J_INT | J_NULL},
    {"temperature", J_NUM | J_NULL}, {"top_p", J_NUM | J_NULL}, {"n", J_INT | J_NULL},
    {"stream", J_BOOL | J_NULL}, {"stream_options", J_OBJ | J_NULL}, {"stop", J_STR | J_ARR | J_NULL},
    {"seed", J_INT64 | J_NULL}, {"presence_penalty", J_NUM | J_NULL}, {"frequency_penalty", J_NUM | J_NULL},
    {"logprobs", J_INT | J_NULL}, {"echo", J_BOOL | J_NULL}, {"best_of", J_INT | J_NULL},
    {"logit_bias", J_OBJ | J_NULL}, {"user", J_STR | J_NULL}, {"suffix", J_STR | J_NULL},
    {"top_k", J_INT | J_NULL}, {"min_p", J_NUM | J_NULL}, {"repetition_penalty", J_NUM | J_NULL},
    {"min_tokens", J_INT | J_NULL}, {"ignore_eos", J_BOOL | J_NULL}, {"regex", J_STR | J_NULL},
    {"json_schema", J_STR | J_NULL}, {"response_format", J_OBJ | J_NULL},
};

static const srv_field chat_fields[] = {
    {"model", J_STR}, {"messages", J_ARR}, {"max_tokens", J_INT | J_NULL},
    {"max_completion_tokens", J_INT | J_NULL}, {"temperature", J_NUM | J_NULL}, {"top_p", J_NUM | J_NULL},
    {"n", J_INT | J_NULL}, {"stream", J_BOOL | J_NULL}, {"stream_options", J_OBJ | J_NULL},
    {"stop", J_STR | J_ARR | J_NULL}, {"seed", J_INT64 | J_NULL}, {"presence_penalty", J_NUM | J_NULL},
    {"frequency_penalty", J_NUM | J_NULL}, {"logprobs", J_BOOL | J_NULL}, {"top_logprobs", J_INT | J_NULL},
    {"response_format", J_OBJ | J_NULL}, {"user", J_STR | J_NULL}, {"logit_bias", J_OBJ | J_NULL},
    {"tools", J_ARR | J_NULL}, {"tool_choice", J_STR | J_OBJ | J_NULL},
    {"parallel_tool_calls", J_BOOL | J_NULL}, {"store", J_BOOL | J_NULL}, {"metadata", J_OBJ | J_NULL},
    {"top_k", J_INT | J_NULL}, {"min_p", J_NUM | J_NULL}, {"repetition_penalty", J_NUM | J_NULL},
    {"min_tokens", J_INT | J_NULL}, {"ignore_eos", J_BOOL | J_NULL}, {"regex", J_STR | J_NULL},
    {"json_schema", J_STR | J_NULL},
};

/* What a parsed request asks for. */
typedef struct oa_req {
    bool chat, stream, include_usage;
    int n;                     /* choices per prompt */
    int n_prompts;
    gen_prompt *prompts;       /* [n_prompts] */
    int logprobs;              /* -1: none, else top alternatives per token */
    sgl_sampling_params sp;
    const char **stops;
    char *schema;              /* response_format -> json_schema (owned) */
    const cJSON *seed;
} oa_req;

static void oa_free(oa_req *q) {
    for (int i = 0; i < q->n_prompts; i++) gen_prompt_free(&q->prompts[i]);
    free(q->prompts);
    free(q->stops);
    free(q->schema);
}

static const cJSON *get(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

/* Reads a number field into *out when present, checking [lo, hi]. */
static int num_field(const cJSON *o, const char *k, double lo, double hi, double *out, char *bad,
                     size_t cap, sgl_error *err) {
    const cJSON *v = get(o, k);
    if (!v) return 0;
    if (v->valuedouble < lo || v->valuedouble > hi) {
        snprintf(bad, cap, "%s", k);
        return sgl_error_set(err, "field '%s' must be between %g and %g", k, lo, hi);
    }
    *out = v->valuedouble;
    return 0;
}

/* Parses and checks body into q; prompts are tokenized. */
static int oa_parse(sgl_server *s, const cJSON *b, bool chat, oa_req *q, char *bad, size_t cap,
                    sgl_error *err) {
    memset(q, 0, sizeof *q);
    q->chat = chat;
    q->logprobs = -1;
    q->sp = sgl_sampling_params_default();
    q->sp.temperature = 1.0f;
    if (chat ? srv_check_fields(b, chat_fields, SGL_ARRAY_LEN(chat_fields), "", bad, cap, err)
             : srv_check_fields(b, completion_fields, SGL_ARRAY_LEN(completion_fields), "", bad, cap, err))
        return -1;
    const char *need = chat ? "messages" : "prompt";
    if (!get(b, need)) {
        snprintf(bad, cap, "%s", need);
        return sgl_error_set(err, "field '%s' is required", need);
    }
    double v;
    const cJSON *x;
    v = 1;
    if (num_field(b, "n", 1, 128, &v, bad, cap, err)) return -1;
    q->n = (int)v;
    if ((x = get(b, "best_of")) && x->valuedouble != q->n && x->valuedouble != 1) {
        snprintf(bad, cap, "best_of");
        return sgl_error_set(err, "field 'best_of' other than n is not supported");
    }
    if ((x = get(b, "echo")) && cJSON_IsTrue(x)) {
        snprintf(bad, cap, "echo");
        return sgl_error_set(err, "field 'echo' = true is not supported");
    }
    if ((x = get(b, "suffix")) && *x->valuestring) {
        snprintf(bad, cap, "suffix");
        return sgl_error_set(err, "field 'suffix' is not supported");
    }
    if ((x = get(b, "logit_bias")) && x->child) {
        snprintf(bad, cap, "logit_bias");
        return sgl_error_set(err, "field 'logit_bias' is not supported");
    }
    if ((x = get(b, "tools")) && cJSON_GetArraySize(x) > 0) {
        snprintf(bad, cap, "tools");
        return sgl_error_set(err, "field 'tools': tool calls are not supported");
    }
    q->stream = (x = get(b, "stream")) && cJSON_IsTrue(x);
    if ((x = get(b, "stream_options"))) {
        static const srv_field f[] = {{"include_usage", J_BOOL | J_NULL}, {"continuous_usage_stats", J_BOOL | J_NULL}};
        if (srv_check_fields(x, f, SGL_ARRAY_LEN(f), "stream_options", bad, cap, err)) return -1;
        q->include_usage = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(x, "include_usage"));
    }
    v = chat ? -1 : 16;
    if (num_field(b, "max_tokens", 0, 1 << 24, &v, bad, cap, err)) return -1;
    if (chat && num_field(b, "max_completion_tokens", 0, 1 << 24, &v, bad, cap, err)) return -1;
    int32_t max_new = (int32_t)v; /* -1: until the context ends */
    v = 1;
    if (num_field(b, "temperature", 0, 2, &v, bad, cap, err)) return -1;
    q->sp.temperature = (float)v;
    v = 1;
    if (num_field(b, "top_p", 0, 1, &v, bad, cap, err)) return -1;
    q->sp.top_p = (float)v;
    v = -1;
    if (num_field(b, "top_k", -1, 1 << 30, &v, bad, cap, err)) return -1;
    q->sp.top_k = (int32_t)v;
    v = 0;
    if (num_field(b, "min_p", 0, 1, &v, bad, cap, err)) return -1;
    q->sp.min_p = (float)v;
    v = 0;
    if (num_field(b, "presence_penalty", -2, 2, &v, bad, cap, err)) return -1;
    q->sp.presence_penalty = (float)v;
    v = 0;
    if (num_field(b, "frequency_penalty", -2, 2, &v, bad, cap, err)) return -1;
    q->sp.frequency_penalty = (float)v;
    v = 1;
    if (num_field(b, "repetition_penalty", 0.01, 100, &v, bad, cap, err)) return -1;
    q->sp.repetition_penalty = (float)v;
    v = 0;
    if (num_field(b, "min_tokens", 0, 1 << 24, &v, bad, cap, err)) return -1;
    q->sp.min_new_tokens = (int32_t)v;
    q->sp.ignore_eos = (x = get(b, "ignore_eos")) && cJSON_IsTrue(x);
    q->seed = get(b, "seed");
    if (chat) {
        if ((x = get(b, "logprobs")) && cJSON_IsTrue(x)) q->logprobs = 0;
        v = 0;
        if (num_field(b, "top_logprobs", 0, 20, &v, bad, cap, err)) return -1;
        if (get(b, "top_logprobs") && q->logprobs < 0) {
            snprintf(bad, cap, "top_logprobs");
            return sgl_error_set(err, "field 'top_logprobs' needs logprobs: true");
        }
        if (q->logprobs >= 0) q->logprobs = (int)v;
    } else if (get(b, "logprobs")) {
        v = 0;
        if (num_field(b, "logprobs", 0, 20, &v, bad, cap, err)) return -1;
        q->logprobs = (int)v;
    }
    if (q->logprobs >= 0) {
        q->sp.return_logprob = true;
        q->sp.top_logprobs_num = q->logprobs;
    }
    if (gen_stop_list(get(b, "stop"), &q->stops, &q->sp.n_stop, "stop", err)) {
        snprintf(bad, cap, "stop");
        return -1;
    }
    q->sp.stop = q->stops;
    if ((x = get(b, "regex"))) q->sp.regex = x->valuestring;
    if ((x = get(b, "json_schema"))) q->sp.json_schema = x->valuestring;
    if ((x = get(b, "response_format"))) {
        static const srv_field f[] = {{"type", J_STR}, {"json_schema", J_OBJ}, {"schema", J_OBJ}};
        if (srv_check_fields(x, f, SGL_ARRAY_LEN(f), "response_format", bad, cap, err)) return -1;
        const cJSON *t = get(x, "type");
        const char *tn = t ? t->valuestring : "";
        if (!strcmp(tn, "json_object")) {
            q->schema = sgl_strdup("{\"type\":\"object\"}");
        } else if (!strcmp(tn, "json_schema")) {
            const cJSON *js = get(x, "json_schema");
            static const srv_field jf[] = {{"name", J_STR}, {"schema", J_OBJ | J_BOOL}, {"strict", J_BOOL | J_NULL},
                                           {"description", J_STR}};
            if (!js) {
                snprintf(bad, cap, "response_format.json_schema");
                return sgl_error_set(err, "field 'response_format.json_schema' is required for type json_schema");
            }
            if (srv_check_fields(js, jf, SGL_ARRAY_LEN(jf), "response_format.json_schema", bad, cap, err)) return -1;
            const cJSON *sc = cJSON_GetObjectItemCaseSensitive(js, "schema");
            q->schema = sc ? cJSON_PrintUnformatted(sc) : sgl_strdup("{}");
        } else if (strcmp(tn, "text")) {
            snprintf(bad, cap, "response_format.type");
            return sgl_error_set(err, "field 'response_format.type' must be text, json_object or json_schema");
        }
        if (q->schema) q->sp.json_schema = q->schema;
    }
    if ((q->sp.regex || q->sp.json_schema) &&
        gen_check_constraint(&q->sp, q->schema ? "response_format" : q->sp.regex ? "regex" : "json_schema",
                             bad, cap, err))
        return -1;

    /* Prompts. */
    if (chat) {
        q->prompts = calloc(1, sizeof *q->prompts);
        if (!q->prompts) return sgl_error_set(err, "out of memory");
        q->n_prompts = 1;
        if (gen_prompt_chat(s, get(b, "messages"), NULL, &q->prompts[0], bad, cap, err)) return -1;
    } else {
        const cJSON *p = get(b, "prompt");
        /* string | [string...] | [int...] | [[int...]...] */
        bool one = cJSON_IsString(p) || (cJSON_IsArray(p) && p->child && cJSON_IsNumber(p->child));
        int np = one ? 1 : cJSON_GetArraySize(p);
        if (np == 0) {
            snprintf(bad, cap, "prompt");
            return sgl_error_set(err, "field 'prompt' is empty");
        }
        q->prompts = calloc((size_t)np, sizeof *q->prompts);
        if (!q->prompts) return sgl_error_set(err, "out of memory");
        const cJSON *it = one ? p : p->child;
        for (int i = 0; i < np; i++, it = one ? NULL : it->next) {
            char path[48];
            snprintf(path, sizeof path, one ? "prompt" : "prompt[%d]", i);
            q->n_prompts = i + 1;
            int rc;
            if (cJSON_IsString(it)) rc = gen_prompt_text(s, it->valuestring, strlen(it->valuestring), true, &q->prompts[i], path, err);
            else if (cJSON_IsArray(it)) rc = gen_prompt_ids(s, it, &q->prompts[i], path, err);
            else rc = sgl_error_set(err, "field '%s' must be a string or token ids", path);
            if (rc) {
                snprintf(bad, cap, "%s", path);
                return -1;
            }
        }
    }
    size_t longest = 0;
    for (int i = 0; i < q->n_prompts; i++) longest = SGL_MAX(longest, q->prompts[i].n);
    if (max_new < 0) max_new = s->n_ctx > 0 ? s->n_ctx : 4096;
    q->sp.max_new_tokens = gen_clamp_max(s, max_new, longest);
    return 0;
}

/* ---- replies ------------------------------------------------------------ */

static const char *finish_name(const sgl_result *r) {
    if (!r) return NULL;
    return r->finish == SGL_FINISH_LENGTH ? "length" : r->finish == SGL_FINISH_STOP ? "stop" : "abort";
}

static cJSON *bytes_array(const char *s, size_t n) {
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber((unsigned char)s[i]));
    return a;
}

static cJSON *logprob_num(float lp) { return cJSON_CreateNumber(lp < -1e30f ? -9999.0 : lp); }

/* The choice's logprobs object (chat or completions form). */
static cJSON *oa_logprobs(sgl_server *s, const sgl_result *r, bool chat) {
    const sgl_tokenizer *tok = s->tok;
    if (chat) {
        cJSON *o = cJSON_CreateObject(), *content = cJSON_CreateArray();
        for (int i = 0; i < r->n_logprobs; i++) {
            const sgl_token_logprob *lp = &r->logprobs[i];
            if (lp->token < 0) continue; /* no token (a 0-token request's alternatives) */
            size_t pl = 0;
            const char *piece = tok_piece(tok, lp->token, &pl);
            cJSON *e = cJSON_CreateObject();
            cJSON_AddItemToObject(e, "token", srv_json_str(piece, pl));
            cJSON_AddItemToObject(e, "logprob", logprob_num(lp->logprob));
            cJSON_AddItemToObject(e, "bytes", bytes_array(piece ? piece : "", pl));
            cJSON *tops = cJSON_CreateArray();
            for (int k = 0; k < lp->n_top; k++) {
                const char *tp = tok_piece(tok, lp->top_ids[k], &pl);
                cJSON *t = cJSON_CreateObject();
                cJSON_AddItemToObject(t, "token", srv_json_str(tp, pl));
                cJSON_AddItemToObject(t, "logprob", logprob_num(lp->top_logprobs[k]));
                cJSON_AddItemToObject(t, "bytes", bytes_array(tp ? tp : "", pl));
                cJSON_AddItemToArray(tops, t);
            }
            cJSON_AddItemToObject(e, "top_logprobs", tops);
            cJSON_AddItemToArray(content, e);
        }
        cJSON_AddItemToObject(o, "content", content);
        return o;
    }
    cJSON *o = cJSON_CreateObject(), *toks = cJSON_CreateArray(), *lps = cJSON_CreateArray(),
          *tops = cJSON_CreateArray(), *offs = cJSON_CreateArray();
    size_t off = 0;
    for (int i = 0; i < r->n_logprobs; i++) {
        const sgl_token_logprob *lp = &r->logprobs[i];
        if (lp->token < 0) continue;
        size_t pl = 0;
        const char *piece = tok_piece(tok, lp->token, &pl);
        cJSON_AddItemToArray(toks, srv_json_str(piece, pl));
        cJSON_AddItemToArray(lps, logprob_num(lp->logprob));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        off += pl;
        cJSON *t = cJSON_CreateObject();
        for (int k = 0; k < lp->n_top; k++) {
            const char *tp = tok_piece(tok, lp->top_ids[k], &pl);
            char *key = uni_utf8_cstr(tp ? tp : "", pl);
            if (key && !cJSON_GetObjectItemCaseSensitive(t, key)) cJSON_AddItemToObject(t, key, logprob_num(lp->top_logprobs[k]));
            free(key);
        }
        cJSON_AddItemToArray(tops, t);
    }
    cJSON_AddItemToObject(o, "tokens", toks);
    cJSON_AddItemToObject(o, "token_logprobs", lps);
    cJSON_AddItemToObject(o, "top_logprobs", tops);
    cJSON_AddItemToObject(o, "text_offset", offs);
    return o;
}

static cJSON *oa_usage(const gen_job *j, int n_per_prompt) {
    int64_t prompt = 0, cached = 0, completion = 0;
    for (int i = 0; i < j->n; i++) {
        const sgl_result *f = j->final[i];
        if (!f) continue;
        if (i % n_per_prompt == 0) {
            prompt += f->prompt_tokens;
            cached += f->cached_tokens;
        }
        completion += f->completion_tokens;
    }
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", (double)prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", (double)completion);
    cJSON_AddNumberToObject(u, "total_tokens", (double)(prompt + completion));
    cJSON *d = cJSON_CreateObject();
    cJSON_AddNumberToObject(d, "cached_tokens", (double)cached);
    cJSON_AddItemToObject(u, "prompt_tokens_details", d);
    return u;
}

static cJSON *oa_envelope(const char *id, bool chat, bool chunk, double created, const char *model) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "object", chat ? (chunk ? "chat.completion.chunk" : "chat.completion")
                                              : "text_completion");
    cJSON_AddNumberToObject(o, "created", created);
    cJSON_AddStringToObject(o, "model", model);
    cJSON_AddStringToObject(o, "system_fingerprint", "sglc-" SGL_VERSION);
    return o;
}

/* ---- streaming ---------------------------------------------------------- */

typedef struct oa_stream {
    gen_stream gs;             /* first: srv_stream.ctx is both */
    oa_req q;
    char id[48];
    double created;
    bool *role_sent;
} oa_stream;

static void oa_emit_chunk(srv_stream *st, int idx, const char *text, size_t len, const sgl_result *fin) {
    oa_stream *os = st->ctx;
    sgl_server *s = st->req->srv;
    cJSON *o = oa_envelope(os->id, os->q.chat, true, os->created, s->model_name);
    cJSON *choices = cJSON_AddArrayToObject(o, "choices"), *c = cJSON_CreateObject();
    cJSON_AddNumberToObject(c, "index", idx);
    if (os->q.chat) {
        cJSON *delta = cJSON_CreateObject();
        if (!os->role_sent[idx]) {
            cJSON_AddStringToObject(delta, "role", "assistant");
            os->role_sent[idx] = true;
        }
        if (len || !fin) cJSON_AddItemToObject(delta, "content", srv_json_str(text, len));
        cJSON_AddItemToObject(c, "delta", delta);
    } else {
        cJSON_AddItemToObject(c, "text", srv_json_str(text, len));
    }
    cJSON_AddItemToObject(c, "logprobs", fin && os->q.logprobs >= 0 ? oa_logprobs(s, fin, os->q.chat) : cJSON_CreateNull());
    const char *fn = finish_name(fin);
    cJSON_AddItemToObject(c, "finish_reason", fn ? cJSON_CreateString(fn) : cJSON_CreateNull());
    cJSON_AddItemToArray(choices, c);
    srv_sse_data(&st->out, NULL, o);
}

static void oa_handle(srv_stream *st, int idx, sgl_result *r) {
    oa_stream *os = st->ctx;
    if (r->partial) {
        if (r->text_len || (os->q.chat && !os->role_sent[idx])) oa_emit_chunk(st, idx, r->text, r->text_len, NULL);
        sgl_result_free(r);
        return;
    }
    /* Final results stay owned by the job. */
    if (r->finish == SGL_FINISH_ABORT) {
        cJSON *e = cJSON_CreateObject(), *in = cJSON_CreateObject();
        const char *msg = r->error ? r->error : "aborted";
        cJSON_AddItemToObject(in, "message", srv_json_str(msg, strlen(msg)));
        cJSON_AddStringToObject(in, "type", "api_error");
        cJSON_AddItemToObject(e, "error", in);
        srv_sse_data(&st->out, NULL, e);
    } else {
        oa_emit_chunk(st, idx, "", 0, r);
    }
    if (os->gs.job.n_done == os->gs.job.n) {
        if (os->q.include_usage) {
            cJSON *o = oa_envelope(os->id, os->q.chat, true, os->created, st->req->srv->model_name);
            cJSON_AddItemToObject(o, "choices", cJSON_CreateArray());
            cJSON_AddItemToObject(o, "usage", oa_usage(&os->gs.job, os->q.n));
            srv_sse_data(&st->out, NULL, o);
        }
        sgl_strbuf_puts(&st->out, "data: [DONE]\n\n");
        gen_job_account(&os->gs.job, st->req);
        st->done = true;
    }
}

static void oa_free_ctx(gen_stream *gs) {
    oa_stream *os = (oa_stream *)gs;
    oa_free(&os->q);
    free(os->role_sent);
    free(os);
}

/* ---- routes ------------------------------------------------------------- */

enum MHD_Result route_completions(srv_req *r, cJSON *body, bool chat) {
    sgl_server *s = r->srv;
    char bad[160] = "";
    sgl_error err = {{0}};
    oa_stream *os = calloc(1, sizeof *os);
    if (!os) return srv_reply_error(r, 500, NULL, "out of memory");
    if (oa_parse(s, body, chat, &os->q, bad, sizeof bad, &err)) {
        oa_free(&os->q);
        free(os);
        return srv_reply_error(r, 400, bad[0] ? bad : NULL, "%s", err.msg);
    }
    oa_req *q = &os->q;
    snprintf(os->id, sizeof os->id, "%s-%llx", chat ? "chatcmpl" : "cmpl", (unsigned long long)srv_next_id(s));
    os->created = (double)time(NULL);
    int total = q->n_prompts * q->n;
    gen_job *j = &os->gs.job;
    gen_job_init(j, s, total);
    for (int i = 0; i < total; i++) {
        sgl_sampling_params sp = q->sp;
        sp.seed = gen_seed(s, q->seed, i);
        if (gen_job_submit(j, i, &q->prompts[i / q->n], &sp, q->stream, &err)) {
            gen_job_free(j, false);
            oa_free(q);
            free(os);
            return srv_reply_error(r, s->stopping ? 503 : 500, NULL, "%s", err.msg);
        }
    }
    enum MHD_Result rc;
    if (q->stream) {
        if (!(os->role_sent = calloc((size_t)total, sizeof *os->role_sent))) {
            gen_job_free(j, false);
            oa_free_ctx(&os->gs);
            return srv_reply_error(r, 500, NULL, "out of memory");
        }
        os->gs.handle = oa_handle;
        os->gs.free_ctx = oa_free_ctx;
        return gen_stream_start(r, &os->gs);
    }
    if (gen_job_wait_all(j, r) < 0) {
        gen_job_free(j, true);
        oa_free(q);
        free(os);
        return MHD_NO;
    }
    gen_job_account(j, r);
    const sgl_result *failed = gen_job_failed(j);
    if (failed) {
        rc = gen_reply_engine_error(r, failed);
    } else {
        cJSON *o = oa_envelope(os->id, chat, false, os->created, s->model_name);
        cJSON *choices = cJSON_AddArrayToObject(o, "choices");
        for (int i = 0; i < total; i++) {
            const sgl_result *f = j->final[i];
            cJSON *c = cJSON_CreateObject();
            cJSON_AddNumberToObject(c, "index", i);
            if (chat) {
                cJSON *m = cJSON_CreateObject();
                cJSON_AddStringToObject(m, "role", "assistant");
                cJSON_AddItemToObject(m, "content", srv_json_str(f->text, f->text_len));
                cJSON_AddItemToObject(c, "message", m);
            } else {
                cJSON_AddItemToObject(c, "text", srv_json_str(f->text, f->text_len));
            }
            cJSON_AddItemToObject(c, "logprobs", q->logprobs >= 0 ? oa_logprobs(s, f, chat) : cJSON_CreateNull());
            cJSON_AddStringToObject(c, "finish_reason", finish_name(f));
            cJSON_AddItemToArray(choices, c);
        }
        cJSON_AddItemToObject(o, "usage", oa_usage(j, q->n));
        rc = srv_reply_json(r, 200, o);
    }
    gen_job_free(j, false);
    oa_free(q);
    free(os);
    return rc;
}

enum MHD_Result route_models(srv_req *r) {
    sgl_server *s = r->srv;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(o, "data"), *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", s->model_name);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)(time(NULL) - (time_t)(sgl_now() - s->started)));
    cJSON_AddStringToObject(m, "owned_by", "sglc");
    cJSON_AddStringToObject(m, "root", s->model_path);
    if (s->n_ctx > 0) cJSON_AddNumberToObject(m, "max_model_len", s->n_ctx);
    cJSON_AddItemToArray(data, m);
    return srv_reply_json(r, 200, o);
}
