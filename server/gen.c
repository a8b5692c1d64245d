/* gen: what the generation routes share: prompts (text, token ids, chat
 * messages through the model's template) checked against the context, a
 * job of engine requests for one HTTP request (submitted through the
 * dispatcher, gathered per index, cancelled when the client leaves), and
 * the mapping of engine failures to HTTP statuses.
 */
#include <stdlib.h>
#include <string.h>

#include "runtime/constrain/constrain.h"
#include "server/internal.h"

void gen_job_init(gen_job *j, sgl_server *s, int n) {
    memset(j, 0, sizeof *j);
    j->srv = s;
    j->n = n;
    j->t0 = sgl_now();
    srv_waiter_init(s->disp, &j->w);
    j->ids = calloc((size_t)n, sizeof *j->ids);
    j->final = calloc((size_t)n, sizeof *j->final);
    j->text = calloc((size_t)n, sizeof *j->text);
    j->n_out = calloc((size_t)n, sizeof *j->n_out);
}

int gen_job_submit(gen_job *j, int i, const gen_prompt *p, const sgl_sampling_params *sp,
                   bool stream, sgl_error *err) {
    if (!j->ids || !j->final || !j->text || !j->n_out) return sgl_error_set(err, "out of memory");
    sgl_request rq;
    memset(&rq, 0, sizeof rq);
    rq.kind = SGL_REQ_GENERATE;
    rq.tokens = p->ids;
    rq.n_tokens = (int32_t)p->n;
    rq.params = *sp;
    rq.stream = stream;
    rq.user_tag = (uint64_t)i;
    j->ids[i] = srv_submit(j->srv->disp, &j->w, &rq, (uint64_t)i, err);
    return j->ids[i] ? 0 : -1;
}

sgl_result *gen_job_next(gen_job *j, double timeout_s, int *idx) {
    uint64_t tag = 0;
    sgl_result *r = srv_wait(j->srv->disp, &j->w, timeout_s, &tag);
    if (!r) return NULL;
    *idx = (int)tag;
    if (tag >= (uint64_t)j->n) { /* cannot happen: tags are indices */
        sgl_result_free(r);
        return NULL;
    }
    if (!j->t_first && (r->n_tokens > 0 || !r->partial)) j->t_first = sgl_now();
    if (!r->partial) {
        j->final[tag] = r;
        j->n_done++;
    }
    return r;
}

int gen_job_wait_all(gen_job *j, srv_req *r) {
    while (j->n_done < j->n) {
        int idx;
        sgl_result *res = gen_job_next(j, 0.2, &idx);
        if (res && res->partial) sgl_result_free(res);
        if (!res && !srv_client_alive(r)) return -1;
    }
    return 0;
}

void gen_job_free(gen_job *j, bool gone) {
    int pending = srv_waiter_pending(j->srv->disp, &j->w);
    if (pending > 0)
        srv_metrics_add(&j->srv->metrics,
                        gone ? &j->srv->metrics.cancelled_disconnect : &j->srv->metrics.cancelled_shutdown,
                        pending);
    srv_waiter_destroy(j->srv->disp, &j->w);
    for (int i = 0; i < j->n; i++) {
        if (j->final) sgl_result_free(j->final[i]);
        if (j->text) sgl_strbuf_free(&j->text[i]);
    }
    free(j->ids);
    free(j->final);
    free(j->text);
    free(j->n_out);
    memset(j, 0, sizeof *j);
}

const sgl_result *gen_job_failed(const gen_job *j) {
    for (int i = 0; i < j->n; i++)
        if (j->final[i] && j->final[i]->finish == SGL_FINISH_ABORT) return j->final[i];
    return NULL;
}

enum MHD_Result gen_reply_engine_error(srv_req *r, const sgl_result *res) {
    const char *msg = res->error ? res->error : "the request was aborted";
    static const char *refusals[] = {"prompt longer", "constrain", "empty prompt", "token id",
                                     "regex", "json", "schema", "grammar"};
    int status = 500;
    for (size_t i = 0; i < SGL_ARRAY_LEN(refusals); i++)
        if (strstr(msg, refusals[i])) status = 400;
    if (strstr(msg, "cancelled") && r->srv->stopping) status = 503;
    return srv_reply_error(r, status, NULL, "%s", msg);
}

int gen_check_constraint(const sgl_sampling_params *sp, const char *field, char *bad, size_t cap,
                         sgl_error *err) {
    cons_program *prog = NULL;
    sgl_error e;
    if (sgl_sampling_constraint(sp, &prog, &e) == 0) {
        cons_program_release(prog);
        return 0;
    }
    snprintf(bad, cap, "%s", field);
    return sgl_error_set(err, "field '%s': %s", field, e.msg);
}

void gen_prompt_free(gen_prompt *p) {
    free(p->ids);
    p->ids = NULL;
    p->n = 0;
}

int gen_prompt_check(sgl_server *s, const gen_prompt *p, const char *field, sgl_error *err) {
    if (p->n == 0) return sgl_error_set(err, "%s: the prompt is empty (no tokens)", field);
    if (s->n_ctx > 0 && p->n >= (size_t)s->n_ctx)
        return sgl_error_set(err, "%s: the prompt has %zu tokens; the model's context is %d tokens",
                             field, p->n, s->n_ctx);
    if (s->pool_slots > 0 && p->n >= (size_t)s->pool_slots)
        return sgl_error_set(err, "%s: the prompt has %zu tokens; the KV pool holds %d (--kv-tokens)",
                             field, p->n, s->pool_slots);
    return 0;
}

int gen_prompt_text(sgl_server *s, const char *text, size_t len, bool add_special, gen_prompt *p,
                    const char *field, sgl_error *err) {
    memset(p, 0, sizeof *p);
    unsigned flags = TOK_ENC_PARSE_SPECIAL | (add_special ? TOK_ENC_ADD_SPECIAL : 0);
    if (tok_encode_ex(s->tok, text, len, flags, &p->ids, &p->n, err) < 0) return -1;
    return gen_prompt_check(s, p, field, err);
}

int gen_prompt_ids(sgl_server *s, const cJSON *arr, gen_prompt *p, const char *field, sgl_error *err) {
    memset(p, 0, sizeof *p);
    int n = cJSON_GetArraySize(arr);
    p->ids = malloc(sizeof *p->ids * (size_t)(n ? n : 1));
    if (!p->ids) return sgl_error_set(err, "out of memory");
    int32_t vocab = tok_vocab_size(s->tok);
    const cJSON *c;
    cJSON_ArrayForEach(c, arr) {
        if (!srv_json_is_int(c) || c->valuedouble < 0 || c->valuedouble >= vocab)
            return sgl_error_set(err, "%s[%zu]: token ids must be integers in [0, %d)", field, p->n, vocab);
        p->ids[p->n++] = (int32_t)c->valuedouble;
    }
    return gen_prompt_check(s, p, field, err);
}

/* Text of a message content: a string, null, or an array of text parts. */
static int content_text(const cJSON *c, sgl_strbuf *out, const char *path, char *bad, size_t bad_cap,
                        sgl_error *err) {
    if (!c || cJSON_IsNull(c)) return 0;
    if (cJSON_IsString(c)) return sgl_strbuf_puts(out, c->valuestring);
    if (!cJSON_IsArray(c)) {
        snprintf(bad, bad_cap, "%s", path);
        return sgl_error_set(err, "field '%s' must be a string or an array of text parts", path);
    }
    int k = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, c) {
        char pp[160];
        snprintf(pp, sizeof pp, "%s[%d]", path, k++);
        static const srv_field f[] = {{"type", J_STR}, {"text", J_STR}, {"cache_control", J_OBJ}};
        if (srv_check_fields(part, f, SGL_ARRAY_LEN(f), pp, bad, bad_cap, err)) return -1;
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *tx = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!t || strcmp(t->valuestring, "text") || !tx) {
            snprintf(bad, bad_cap, "%s.type", pp);
            return sgl_error_set(err, "field '%s.type': only \"text\" parts (with a text field) are supported", pp);
        }
        sgl_strbuf_puts(out, tx->valuestring);
    }
    return 0;
}

int gen_prompt_chat(sgl_server *s, const cJSON *messages, const cJSON *system, gen_prompt *p,
                    char *bad, size_t bad_cap, sgl_error *err) {
    memset(p, 0, sizeof *p);
    int n = cJSON_GetArraySize(messages);
    if (n == 0) {
        snprintf(bad, bad_cap, "messages");
        return sgl_error_set(err, "field 'messages' must hold at least one message");
    }
    chat_msg *msgs = calloc((size_t)n + 1, sizeof *msgs);
    sgl_strbuf *texts = calloc((size_t)n + 1, sizeof *texts);
    sgl_strbuf rendered = {0};
    int rc = -1, nm = 0;
    if (!msgs || !texts) {
        sgl_error_set(err, "out of memory");
        goto done;
    }
    if (system && !cJSON_IsNull(system)) {
        if (content_text(system, &texts[nm], "system", bad, bad_cap, err)) goto done;
        msgs[nm].role = "system";
        msgs[nm].content = texts[nm].data ? texts[nm].data : "";
        nm++;
    }
    int k = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, messages) {
        char path[64];
        snprintf(path, sizeof path, "messages[%d]", k++);
        static const srv_field f[] = {{"role", J_STR}, {"content", J_STR | J_ARR | J_NULL}, {"name", J_STR}};
        if (srv_check_fields(m, f, SGL_ARRAY_LEN(f), path, bad, bad_cap, err)) goto done;
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!role) {
            snprintf(bad, bad_cap, "%s.role", path);
            sgl_error_set(err, "field '%s.role' is required", path);
            goto done;
        }
        const char *rn = role->valuestring;
        if (!strcmp(rn, "developer")) rn = "system";
        if (strcmp(rn, "system") && strcmp(rn, "user") && strcmp(rn, "assistant")) {
            snprintf(bad, bad_cap, "%s.role", path);
            sgl_error_set(err, "field '%s.role' must be system, user or assistant, not '%s'", path, rn);
            goto done;
        }
        char cp[80];
        snprintf(cp, sizeof cp, "%s.content", path);
        if (content_text(cJSON_GetObjectItemCaseSensitive(m, "content"), &texts[nm], cp, bad, bad_cap, err))
            goto done;
        msgs[nm].role = rn;
        msgs[nm].content = texts[nm].data ? texts[nm].data : "";
        nm++;
    }
    if (chat_render(s->ct, msgs, (size_t)nm, true, &rendered, err)) {
        snprintf(bad, bad_cap, "messages");
        goto done;
    }
    if (tok_encode(s->tok, rendered.data ? rendered.data : "", rendered.len, true, &p->ids, &p->n, err) < 0)
        goto done;
    if (gen_prompt_check(s, p, "messages", err)) {
        snprintf(bad, bad_cap, "messages");
        goto done;
    }
    rc = 0;
done:
    for (int i = 0; texts && i <= n; i++) sgl_strbuf_free(&texts[i]);
    free(texts);
    free(msgs);
    sgl_strbuf_free(&rendered);
    return rc;
}

int gen_stop_list(const cJSON *stop, const char ***out, int32_t *n, const char *field, sgl_error *err) {
    *out = NULL;
    *n = 0;
    if (!stop || cJSON_IsNull(stop)) return 0;
    if (cJSON_IsString(stop)) {
        if (!*stop->valuestring) return 0;
        *out = malloc(sizeof **out);
        if (!*out) return sgl_error_set(err, "out of memory");
        (*out)[(*n)++] = stop->valuestring;
        return 0;
    }
    int cnt = cJSON_GetArraySize(stop);
    *out = malloc(sizeof **out * (size_t)(cnt ? cnt : 1));
    if (!*out) return sgl_error_set(err, "out of memory");
    const cJSON *c;
    cJSON_ArrayForEach(c, stop) {
        if (!cJSON_IsString(c)) return sgl_error_set(err, "field '%s' must hold strings", field);
        if (*c->valuestring) (*out)[(*n)++] = c->valuestring;
    }
    return 0;
}

uint64_t gen_seed(sgl_server *s, const cJSON *seed, int idx) {
    uint64_t v;
    if (seed && srv_json_int64(seed, &v) == 0) return v + (uint64_t)idx;
    return srv_fresh_seed(s);
}

void gen_job_account(gen_job *j, srv_req *r) {
    r->prompt_tokens = r->cached_tokens = r->completion_tokens = 0;
    for (int i = 0; i < j->n; i++) {
        const sgl_result *f = j->final[i];
        if (!f) continue;
        r->prompt_tokens += f->prompt_tokens;
        r->cached_tokens += f->cached_tokens;
        r->completion_tokens += f->completion_tokens;
    }
    if (j->t_first) r->t_first = j->t_first;
}

int32_t gen_clamp_max(sgl_server *s, int32_t max_new, size_t prompt_len) {
    if (s->n_ctx > 0 && (int64_t)prompt_len + max_new > s->n_ctx) return s->n_ctx - (int32_t)prompt_len;
    return max_new;
}

/* ---- streamed replies ----------------------------------------------------- */

static int gen_stream_produce(srv_stream *st) {
    gen_stream *gs = st->ctx;
    if (gs->first) {
        sgl_result *r = gs->first;
        gs->first = NULL;
        gs->handle(st, gs->first_idx, r);
        return 0;
    }
    int idx;
    sgl_result *r = gen_job_next(&gs->job, 0.2, &idx);
    if (r) gs->handle(st, idx, r);
    else if (!srv_client_alive(st->req)) return -1;
    return 0;
}

static void gen_stream_finish(srv_stream *st, bool gone) {
    gen_stream *gs = st->ctx;
    /* A final first result belongs to the job (final[]); a partial one is ours. */
    if (gs->first && gs->first->partial) sgl_result_free(gs->first);
    gen_job_account(&gs->job, st->req);
    gen_job_free(&gs->job, gone);
    gs->free_ctx(gs);
}

enum MHD_Result gen_stream_start(srv_req *r, gen_stream *gs) {
    gen_job *j = &gs->job;
    int idx = 0;
    sgl_result *first = NULL;
    while (!(first = gen_job_next(j, 0.2, &idx)) && srv_client_alive(r)) {}
    if (!first || (!first->partial && first->finish == SGL_FINISH_ABORT)) {
        enum MHD_Result rc = first ? gen_reply_engine_error(r, first) : MHD_NO;
        gen_job_account(j, r);
        gen_job_free(j, !first);
        gs->free_ctx(gs);
        return rc;
    }
    gs->first = first;
    gs->first_idx = idx;
    srv_stream *st = calloc(1, sizeof *st);
    if (!st) {
        srv_stream tmp = {.req = r, .ctx = gs};
        gen_stream_finish(&tmp, false);
        return srv_reply_error(r, 500, NULL, "out of memory");
    }
    st->ctx = gs;
    st->produce = gen_stream_produce;
    st->finish = gen_stream_finish;
    return srv_reply_stream(r, st);
}
