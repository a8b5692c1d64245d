/* router: `sglc serve --backend KIND:URL ...`, the server in front of
 * workers (other `sglc serve` processes, SGLang or any server of the same
 * routes). Generation routes, program runs and the info routes are passed
 * on unchanged (the request body byte for byte, the answer with its status
 * and content type, streams as their events arrive) through runtime/remote's
 * forwarding: the remote engine picks the worker by the request's prompt
 * text (prefix-aware or round robin), retries and fails over until the
 * answer is committed, and counts per worker. /health and /metrics are the
 * router's own; /flush_cache goes to every worker.
 */
#include <stdlib.h>
#include <string.h>

#include "server/internal.h"

#ifdef SGL_HAVE_REMOTE
#include "runtime/remote/remote.h"

/* A message content: a string, or an array of parts whose text counts. */
static void key_content(sgl_strbuf *sb, const cJSON *c) {
    if (cJSON_IsString(c)) {
        sgl_strbuf_puts(sb, c->valuestring);
        return;
    }
    const cJSON *part;
    cJSON_ArrayForEach(part, c) {
        const char *t = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(part, "text"));
        if (t) sgl_strbuf_puts(sb, t);
    }
}

/* The first element of a batch field, or the field itself. */
static const cJSON *first_of(const cJSON *x) {
    return cJSON_IsArray(x) && cJSON_GetArraySize(x) && !cJSON_IsNumber(cJSON_GetArrayItem(x, 0))
               ? cJSON_GetArrayItem(x, 0) : x;
}

/* The text the worker's cache will be keyed by: the prompt, the chat turns
 * in order, the token ids, or a program's source (malloc'd; "" when the
 * request has none of them). A batch routes by its first prompt. */
static char *route_key(const cJSON *b) {
    sgl_strbuf sb = {0};
    const cJSON *x;
    if ((x = cJSON_GetObjectItemCaseSensitive(b, "system"))) {
        key_content(&sb, x);
        sgl_strbuf_putc(&sb, '\n');
    }
    if (cJSON_IsArray(x = cJSON_GetObjectItemCaseSensitive(b, "messages"))) {
        const cJSON *m;
        cJSON_ArrayForEach(m, x) {
            const char *role = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "role"));
            sgl_strbuf_printf(&sb, "<%s>", role ? role : "");
            key_content(&sb, cJSON_GetObjectItemCaseSensitive(m, "content"));
            sgl_strbuf_putc(&sb, '\n');
        }
    }
    if (cJSON_IsString(x = first_of(cJSON_GetObjectItemCaseSensitive(b, "text"))) ||
        cJSON_IsString(x = first_of(cJSON_GetObjectItemCaseSensitive(b, "prompt"))))
        sgl_strbuf_puts(&sb, x->valuestring);
    const cJSON *ids = first_of(cJSON_GetObjectItemCaseSensitive(b, "input_ids"));
    if (!cJSON_IsArray(ids)) ids = first_of(cJSON_GetObjectItemCaseSensitive(b, "prompt"));
    if (cJSON_IsArray(ids)) {
        cJSON_ArrayForEach(x, ids) if (cJSON_IsNumber(x)) sgl_strbuf_printf(&sb, "%.0f ", x->valuedouble);
    }
    if (cJSON_IsString(x = cJSON_GetObjectItemCaseSensitive(b, "source")) ||
        cJSON_IsString(x = cJSON_GetObjectItemCaseSensitive(b, "file")))
        sgl_strbuf_puts(&sb, x->valuestring);
    char *s = sgl_strbuf_take(&sb);
    return s ? s : sgl_strdup("");
}

static void account(srv_req *r, sgl_remote_fwd *f) {
    int64_t pt, ct, gt;
    sgl_remote_fwd_usage(f, &pt, &ct, &gt);
    r->prompt_tokens = pt;
    r->cached_tokens = ct;
    r->completion_tokens = gt;
}

/* A streamed answer: its events are passed on as they come. */
static int fwd_produce(srv_stream *st) {
    sgl_remote_fwd *f = st->ctx;
    sgl_server *s = st->req->srv;
    for (;;) {
        int status;
        const char *ct, *error;
        int rc = sgl_remote_fwd_next(f, 0.2, &st->out, &status, &ct, &error);
        if (rc == 2) {
            if (error) { /* the worker went away mid-answer: say so in the stream */
                cJSON *e = cJSON_CreateObject(), *o = cJSON_CreateObject();
                cJSON_AddItemToObject(o, "message", srv_json_str(error, strlen(error)));
                cJSON_AddStringToObject(o, "type", "api_error");
                cJSON_AddItemToObject(e, "error", o);
                srv_sse_data(&st->out, NULL, e);
                st->req->status = 502;
            }
            account(st->req, f);
            st->done = true;
            return 0;
        }
        if (st->out.len) {
            if (st->req->t_first <= 0) st->req->t_first = sgl_now();
            return 0;
        }
        if (s->aborting || !srv_client_alive(st->req)) return -1;
    }
}

static void fwd_finish(srv_stream *st, bool gone) {
    if (gone) srv_metrics_add(&st->req->srv->metrics, &st->req->srv->metrics.cancelled_disconnect, 1);
    sgl_remote_fwd_free(st->ctx);
}

enum MHD_Result router_forward(srv_req *r, const char *path, const char *method, const cJSON *body) {
    sgl_server *s = r->srv;
    char *key = body ? route_key(body) : sgl_strdup("");
    sgl_error err = {{0}};
    sgl_remote_fwd *f = sgl_remote_forward(s->engine, method, path, body ? r->body : NULL, body ? r->body_len : 0,
                                           key ? key : "", -1, &err);
    free(key);
    if (!f) return srv_reply_error(r, 500, NULL, "%s", err.msg);
    sgl_strbuf out = {0};
    int status = 0, rc;
    const char *ct = NULL, *error = NULL;
    while ((rc = sgl_remote_fwd_next(f, 0.2, &out, &status, &ct, &error)) == 0) {
        if (s->aborting) {
            sgl_remote_fwd_free(f);
            sgl_strbuf_free(&out);
            srv_metrics_add(&s->metrics, &s->metrics.cancelled_shutdown, 1);
            return srv_reply_error(r, 503, NULL, "the server is shutting down");
        }
        if (!srv_client_alive(r)) {
            sgl_remote_fwd_free(f);
            sgl_strbuf_free(&out);
            srv_metrics_add(&s->metrics, &s->metrics.cancelled_disconnect, 1);
            r->status = 499;
            return MHD_NO;
        }
    }
    enum MHD_Result res;
    if (rc == 1) { /* a stream: hand it over with what came so far */
        srv_stream *st = calloc(1, sizeof *st);
        if (!st) {
            sgl_remote_fwd_free(f);
            sgl_strbuf_free(&out);
            return srv_reply_error(r, 500, NULL, "out of memory");
        }
        r->t_first = sgl_now();
        st->out = out;
        st->produce = fwd_produce;
        st->finish = fwd_finish;
        st->ctx = f;
        return srv_reply_stream(r, st);
    }
    if (!status) {
        res = srv_reply_error(r, 502, NULL, "no worker answered: %s", error ? error : "unknown error");
    } else {
        account(r, f);
        char *text = sgl_strbuf_take(&out);
        res = srv_reply(r, status, ct ? ct : "application/json", text ? text : sgl_strdup(""));
    }
    sgl_strbuf_free(&out);
    sgl_remote_fwd_free(f);
    return res;
}

/* Asks every worker's `method path` at once (one attempt each); status[i]
 * gets its answer's status (0: none within wait_s) and body[i] (may be
 * NULL) its text (caller frees). Returns the number of workers. */
static int ask_all(sgl_server *s, const char *method, const char *path, double wait_s, int *status, char **body,
                   sgl_remote_endpoint_stats *st) {
    int n = sgl_remote_stats(s->engine, st, 64);
    if (n > 64) n = 64;
    sgl_remote_fwd *f[64];
    for (int i = 0; i < n; i++) f[i] = sgl_remote_forward(s->engine, method, path, NULL, 0, "", i, NULL);
    double until = sgl_now() + wait_s;
    for (int i = 0; i < n; i++) {
        sgl_strbuf out = {0};
        const char *ct, *error = NULL;
        status[i] = 0;
        int rc = 0;
        while (f[i] && (rc = sgl_remote_fwd_next(f[i], 0.1, &out, &status[i], &ct, &error)) != 2 &&
               sgl_now() < until) {}
        if (rc != 2 || error) status[i] = 0;
        if (body) body[i] = error ? sgl_strdup(error) : sgl_strbuf_take(&out);
        sgl_strbuf_free(&out);
        sgl_remote_fwd_free(f[i]);
    }
    return n;
}

enum MHD_Result router_health(srv_req *r) {
    sgl_remote_endpoint_stats st[64];
    int status[64];
    int n = ask_all(r->srv, "GET", "/health", 5, status, NULL, st), up = 0;
    for (int i = 0; i < n; i++) up += status[i] == 200;
    if (!up) return srv_reply_error(r, 503, NULL, "no worker answers /health (%d asked)", n);
    return srv_reply(r, 200, "text/plain", NULL);
}

enum MHD_Result router_flush(srv_req *r) {
    sgl_remote_endpoint_stats st[64];
    int status[64];
    char *body[64];
    int n = ask_all(r->srv, "POST", "/flush_cache", r->srv->cfg.shutdown_grace_s + 60, status, body, st);
    cJSON *o = cJSON_CreateObject(), *a = cJSON_AddArrayToObject(o, "workers");
    int ok = 0;
    for (int i = 0; i < n; i++) {
        cJSON *w = cJSON_CreateObject();
        cJSON_AddStringToObject(w, "url", st[i].url);
        cJSON_AddNumberToObject(w, "status", status[i]);
        cJSON_AddItemToObject(w, status[i] ? "body" : "error", srv_json_str(body[i] ? body[i] : "", body[i] ? strlen(body[i]) : 0));
        cJSON_AddItemToArray(a, w);
        ok += status[i] >= 200 && status[i] < 300;
        free(body[i]);
    }
    cJSON_AddNumberToObject(o, "flushed", ok);
    return srv_reply_json(r, ok == n ? 200 : 502, o);
}

static void worker_metric(sgl_strbuf *sb, const char *name, const char *type, const char *help,
                          const sgl_remote_endpoint_stats *st, int n, int field) {
    sgl_strbuf_printf(sb, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    for (int i = 0; i < n; i++) {
        double v = field == 0 ? (double)st[i].requests : field == 1 ? (double)st[i].failures
                 : field == 2 ? (double)st[i].retries : field == 3 ? (double)st[i].prompt_tokens
                 : field == 4 ? (double)st[i].cached_tokens : field == 5 ? (double)st[i].completion_tokens
                 : field == 6 ? (double)st[i].in_flight : (double)st[i].up;
        sgl_strbuf_printf(sb, "%s{worker=\"%s\"} %.17g\n", name, st[i].url, v);
    }
}

void router_metrics(sgl_server *s, sgl_strbuf *sb) {
    sgl_remote_endpoint_stats st[64];
    int n = sgl_remote_stats(s->engine, st, 64);
    if (n > 64) n = 64;
    worker_metric(sb, "sglc_worker_requests_total", "counter", "Requests a worker answered.", st, n, 0);
    worker_metric(sb, "sglc_worker_failed_attempts_total", "counter",
                  "Attempts that failed at a worker (connection, timeout, 429, 5xx).", st, n, 1);
    worker_metric(sb, "sglc_worker_retries_total", "counter", "Attempts re-sent after a failure at a worker.", st, n, 2);
    worker_metric(sb, "sglc_worker_prompt_tokens_total", "counter", "Prompt tokens workers reported.", st, n, 3);
    worker_metric(sb, "sglc_worker_cached_tokens_total", "counter", "Cached prompt tokens workers reported.", st, n, 4);
    worker_metric(sb, "sglc_worker_generation_tokens_total", "counter", "Generated tokens workers reported.", st, n, 5);
    worker_metric(sb, "sglc_worker_in_flight", "gauge", "Requests at a worker now.", st, n, 6);
    worker_metric(sb, "sglc_worker_up", "gauge", "1 while a worker is in rotation.", st, n, 7);
    int64_t pt = 0, ct = 0;
    for (int i = 0; i < n; i++) {
        pt += st[i].prompt_tokens;
        ct += st[i].cached_tokens;
    }
    sgl_strbuf_printf(sb, "# HELP sglc_router_cache_hit_rate Cached / prompt tokens over all workers.\n"
                          "# TYPE sglc_router_cache_hit_rate gauge\nsglc_router_cache_hit_rate %.17g\n",
                      pt ? (double)ct / (double)pt : 0.0);
}

#else /* no libcurl: sgl_server_start never makes a router */

enum MHD_Result router_forward(srv_req *r, const char *path, const char *method, const cJSON *body) {
    (void)path, (void)method, (void)body;
    return srv_reply_error(r, 500, NULL, "this build has no remote engines");
}
enum MHD_Result router_health(srv_req *r) { return srv_reply_error(r, 500, NULL, "no router"); }
enum MHD_Result router_flush(srv_req *r) { return srv_reply_error(r, 500, NULL, "no router"); }
void router_metrics(sgl_server *s, sgl_strbuf *sb) { (void)s, (void)sb; }

#endif
