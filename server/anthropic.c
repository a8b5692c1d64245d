/* anthropic: POST /v1/messages in Anthropic's shapes (system, messages,
 * max_tokens, stop_sequences, temperature, top_p, top_k, stream with the
 * message_start / content_block_start / ping / content_block_delta /
 * content_block_stop / message_delta / message_stop events) and its error
 * shape {"type":"error","error":{...}}.
 */
#include <stdlib.h>
#include <string.h>

#include "server/internal.h"

static const srv_field message_fields[] = {
    {"model", J_STR}, {"messages", J_ARR}, {"system", J_STR | J_ARR | J_NULL}, {"max_tokens", J_INT},
    {"stop_sequences", J_ARR | J_NULL}, {"temperature", J_NUM | J_NULL}, {"top_p", J_NUM | J_NULL},
    {"top_k", J_INT | J_NULL}, {"stream", J_BOOL | J_NULL}, {"metadata", J_OBJ | J_NULL},
};

typedef struct an_req {
    gen_prompt prompt;
    sgl_sampling_params sp;
    const char **stops;
    bool stream;
    char id[48];
} an_req;

static const cJSON *get(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

static int an_parse(sgl_server *s, const cJSON *b, an_req *q, char *bad, size_t cap, sgl_error *err) {
    memset(q, 0, sizeof *q);
    q->sp = sgl_sampling_params_default();
    if (srv_check_fields(b, message_fields, SGL_ARRAY_LEN(message_fields), "", bad, cap, err)) return -1;
    static const char *required[] = {"messages", "max_tokens"};
    for (size_t i = 0; i < SGL_ARRAY_LEN(required); i++)
        if (!get(b, required[i])) {
            snprintf(bad, cap, "%s", required[i]);
            return sgl_error_set(err, "field '%s' is required", required[i]);
        }
    const cJSON *x;
    struct { const char *k; double lo, hi; } ranges[] = {
        {"max_tokens", 1, 1 << 24}, {"temperature", 0, 1}, {"top_p", 0, 1}, {"top_k", 0, 1 << 30}};
    for (size_t i = 0; i < SGL_ARRAY_LEN(ranges); i++)
        if ((x = get(b, ranges[i].k)) && (x->valuedouble < ranges[i].lo || x->valuedouble > ranges[i].hi)) {
            snprintf(bad, cap, "%s", ranges[i].k);
            return sgl_error_set(err, "field '%s' must be between %g and %g", ranges[i].k, ranges[i].lo, ranges[i].hi);
        }
    q->sp.max_new_tokens = (int32_t)get(b, "max_tokens")->valuedouble;
    q->sp.temperature = (x = get(b, "temperature")) ? (float)x->valuedouble : 1.0f;
    if ((x = get(b, "top_p"))) q->sp.top_p = (float)x->valuedouble;
    if ((x = get(b, "top_k"))) q->sp.top_k = (int32_t)x->valuedouble;
    q->sp.seed = srv_fresh_seed(s);
    q->stream = cJSON_IsTrue(get(b, "stream"));
    if (gen_stop_list(get(b, "stop_sequences"), &q->stops, &q->sp.n_stop, "stop_sequences", err)) {
        snprintf(bad, cap, "stop_sequences");
        return -1;
    }
    q->sp.stop = q->stops;
    if (gen_prompt_chat(s, get(b, "messages"), get(b, "system"), &q->prompt, bad, cap, err)) return -1;
    q->sp.max_new_tokens = gen_clamp_max(s, q->sp.max_new_tokens, q->prompt.n);
    snprintf(q->id, sizeof q->id, "msg_%016llx", (unsigned long long)srv_next_id(s));
    return 0;
}

static void an_free(an_req *q) {
    gen_prompt_free(&q->prompt);
    free(q->stops);
}

static const char *stop_reason(const sgl_result *r) {
    if (r->finish == SGL_FINISH_LENGTH) return "max_tokens";
    return r->stop_str ? "stop_sequence" : "end_turn";
}

static cJSON *usage(const sgl_result *r, int32_t prompt, int32_t cached, int32_t out) {
    cJSON *u = cJSON_CreateObject();
    (void)r;
    cJSON_AddNumberToObject(u, "input_tokens", prompt - cached);
    cJSON_AddNumberToObject(u, "cache_read_input_tokens", cached);
    cJSON_AddNumberToObject(u, "cache_creation_input_tokens", 0);
    cJSON_AddNumberToObject(u, "output_tokens", out);
    return u;
}

static cJSON *message_obj(sgl_server *s, const an_req *q, const sgl_result *r, bool start) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", q->id);
    cJSON_AddStringToObject(m, "type", "message");
    cJSON_AddStringToObject(m, "role", "assistant");
    cJSON_AddStringToObject(m, "model", s->model_name);
    cJSON *content = cJSON_AddArrayToObject(m, "content");
    if (!start) {
        cJSON *blk = cJSON_CreateObject();
        cJSON_AddStringToObject(blk, "type", "text");
        cJSON_AddItemToObject(blk, "text", srv_json_str(r->text, r->text_len));
        cJSON_AddItemToArray(content, blk);
    }
    cJSON_AddItemToObject(m, "stop_reason", start ? cJSON_CreateNull() : cJSON_CreateString(stop_reason(r)));
    cJSON_AddItemToObject(m, "stop_sequence", !start && r->stop_str ? srv_json_str(r->stop_str, strlen(r->stop_str)) : cJSON_CreateNull());
    cJSON_AddItemToObject(m, "usage", usage(r, r->prompt_tokens, r->cached_tokens, start ? 0 : r->completion_tokens));
    return m;
}

typedef struct an_stream {
    gen_stream gs;             /* first: srv_stream.ctx is both */
    an_req q;
    bool started;
} an_stream;

static cJSON *typed(const char *type) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", type);
    return o;
}

static void an_handle(srv_stream *st, int idx, sgl_result *r) {
    (void)idx; /* one message per request */
    an_stream *as = st->ctx;
    sgl_server *s = st->req->srv;
    if (!as->started) {
        as->started = true;
        cJSON *o = typed("message_start");
        cJSON_AddItemToObject(o, "message", message_obj(s, &as->q, r, true));
        srv_sse_data(&st->out, "message_start", o);
        o = typed("content_block_start");
        cJSON_AddNumberToObject(o, "index", 0);
        cJSON *blk = typed("text");
        cJSON_AddStringToObject(blk, "text", "");
        cJSON_AddItemToObject(o, "content_block", blk);
        srv_sse_data(&st->out, "content_block_start", o);
        srv_sse_data(&st->out, "ping", typed("ping"));
    }
    if (r->partial) {
        if (r->text_len) {
            cJSON *o = typed("content_block_delta");
            cJSON_AddNumberToObject(o, "index", 0);
            cJSON *d = typed("text_delta");
            cJSON_AddItemToObject(d, "text", srv_json_str(r->text, r->text_len));
            cJSON_AddItemToObject(o, "delta", d);
            srv_sse_data(&st->out, "content_block_delta", o);
        }
        sgl_result_free(r);
        return;
    }
    if (r->finish == SGL_FINISH_ABORT) {
        cJSON *o = typed("error"), *e = typed("api_error");
        const char *msg = r->error ? r->error : "aborted";
        cJSON_AddItemToObject(e, "message", srv_json_str(msg, strlen(msg)));
        cJSON_AddItemToObject(o, "error", e);
        srv_sse_data(&st->out, "error", o);
    } else {
        cJSON *o = typed("content_block_stop");
        cJSON_AddNumberToObject(o, "index", 0);
        srv_sse_data(&st->out, "content_block_stop", o);
        o = typed("message_delta");
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "stop_reason", stop_reason(r));
        cJSON_AddItemToObject(d, "stop_sequence", r->stop_str ? srv_json_str(r->stop_str, strlen(r->stop_str)) : cJSON_CreateNull());
        cJSON_AddItemToObject(o, "delta", d);
        cJSON *u = cJSON_CreateObject();
        cJSON_AddNumberToObject(u, "output_tokens", r->completion_tokens);
        cJSON_AddItemToObject(o, "usage", u);
        srv_sse_data(&st->out, "message_delta", o);
        srv_sse_data(&st->out, "message_stop", typed("message_stop"));
    }
    gen_job_account(&as->gs.job, st->req);
    st->done = true;
}

static void an_free_ctx(gen_stream *gs) {
    an_stream *as = (an_stream *)gs;
    an_free(&as->q);
    free(as);
}

enum MHD_Result route_messages(srv_req *r, cJSON *body) {
    sgl_server *s = r->srv;
    char bad[160] = "";
    sgl_error err = {{0}};
    an_stream *as = calloc(1, sizeof *as);
    if (!as) return srv_reply_error(r, 500, NULL, "out of memory");
    an_req *q = &as->q;
    if (an_parse(s, body, q, bad, sizeof bad, &err)) {
        an_free(q);
        free(as);
        return srv_reply_error(r, 400, bad[0] ? bad : NULL, "%s", err.msg);
    }
    gen_job *j = &as->gs.job;
    gen_job_init(j, s, 1);
    enum MHD_Result rc;
    if (gen_job_submit(j, 0, &q->prompt, &q->sp, q->stream, &err)) {
        rc = srv_reply_error(r, s->stopping ? 503 : 500, NULL, "%s", err.msg);
        goto out;
    }
    if (q->stream) {
        as->gs.handle = an_handle;
        as->gs.free_ctx = an_free_ctx;
        return gen_stream_start(r, &as->gs);
    }
    if (gen_job_wait_all(j, r) < 0) {
        gen_job_free(j, true);
        an_free(q);
        free(as);
        return MHD_NO;
    }
    gen_job_account(j, r);
    if (j->final[0]->finish == SGL_FINISH_ABORT) rc = gen_reply_engine_error(r, j->final[0]);
    else rc = srv_reply_json(r, 200, message_obj(s, q, j->final[0], false));
out:
    gen_job_free(j, false);
    an_free(q);
    free(as);
    return rc;
}
