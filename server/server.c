/* server: the libmicrohttpd daemon (one thread per connection, so handlers
 * may block on the engine), routing, authentication, body limits, replies,
 * server-sent-event streams, the per-request log line and shutdown.
 *
 * Request life: MHD calls access_cb with the headers, then with each piece
 * of the body, then once more with none; the route's handler runs then, on
 * the connection's thread, and queues a reply (or a stream whose producer
 * runs on the same thread while MHD sends). The srv_req record lives until
 * both the connection and its stream are done with it; its release writes
 * the log line and the metrics.
 */
#include <errno.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "runtime/model.h"
#include "server/internal.h"
#ifdef SGL_HAVE_REMOTE
#include "runtime/remote/remote.h"
#endif

sgl_server_config sgl_server_config_default(void) {
    sgl_server_config c;
    memset(&c, 0, sizeof c);
    c.host = "127.0.0.1";
    c.port = 30000;
    c.max_body = 8u << 20;
    c.shutdown_grace_s = 10;
    return c;
}

uint64_t srv_fresh_seed(sgl_server *s) {
    pthread_mutex_lock(&s->mu);
    uint64_t x = (s->seed_state += 0x9E3779B97F4A7C15ull);
    pthread_mutex_unlock(&s->mu);
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return (x ^ (x >> 31)) & 0x7fffffffffffffffull;
}

uint64_t srv_next_id(sgl_server *s) {
    pthread_mutex_lock(&s->mu);
    uint64_t id = ++s->next_rid;
    pthread_mutex_unlock(&s->mu);
    return id;
}

/* ---- request records ---------------------------------------------------- */

static void req_release(srv_req *r) {
    sgl_server *s = r->srv;
    pthread_mutex_lock(&s->mu);
    bool last = --r->refs == 0;
    pthread_mutex_unlock(&s->mu);
    if (!last) return;
    double ms = (sgl_now() - r->t0) * 1e3;
    if (r->status) {
        FILE *log = s->cfg.log ? s->cfg.log : stderr;
        fprintf(log, "%s %s %d prompt=%lld cached=%lld completion=%lld ms=%.1f\n", r->method,
                r->route, r->status, (long long)r->prompt_tokens, (long long)r->cached_tokens,
                (long long)r->completion_tokens, ms);
        fflush(log);
        srv_metrics_request(&s->metrics, r->route, r->status, ms / 1e3,
                            r->t_first > 0 && r->status == 200 ? r->t_first - r->t0 : -1);
    }
    if (r->active) {
        srv_metrics_add(&s->metrics, &s->metrics.in_flight, -1);
        pthread_mutex_lock(&s->mu);
        s->active--;
        pthread_cond_broadcast(&s->idle_cv);
        pthread_mutex_unlock(&s->mu);
    }
    free(r->body);
    free(r);
}

/* ---- replies ------------------------------------------------------------ */

enum MHD_Result srv_reply(srv_req *r, int status, const char *content_type, char *body) {
    size_t len = body ? strlen(body) : 0;
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, body ? body : "", body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", content_type);
    if (status == 401) MHD_add_response_header(resp, "WWW-Authenticate", "Bearer");
    r->status = status;
    r->handled = true;
    enum MHD_Result rc = MHD_queue_response(r->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return rc;
}

enum MHD_Result srv_reply_json(srv_req *r, int status, cJSON *j) {
    char *text = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (!text) return srv_reply(r, 500, "application/json", sgl_strdup("{\"error\":{\"message\":\"out of memory\"}}"));
    return srv_reply(r, status, "application/json", text);
}

static const char *error_type(int status) {
    switch (status) {
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 503: return "overloaded_error";
    default: return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

enum MHD_Result srv_reply_error(srv_req *r, int status, const char *param, const char *fmt, ...) {
    char msg[1100];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cJSON *root = cJSON_CreateObject(), *e = cJSON_CreateObject();
    cJSON_AddItemToObject(e, "type", cJSON_CreateString(
        r->err_style == SRV_ERR_ANTHROPIC || status >= 500 || status == 401 || status == 404 || status == 413
            ? error_type(status) : "invalid_request_error"));
    cJSON_AddItemToObject(e, "message", srv_json_str(msg, strlen(msg)));
    if (r->err_style == SRV_ERR_ANTHROPIC) {
        cJSON_AddStringToObject(root, "type", "error");
    } else {
        cJSON_AddItemToObject(e, "param", param ? cJSON_CreateString(param) : cJSON_CreateNull());
        cJSON_AddItemToObject(e, "code", cJSON_CreateNumber(status));
    }
    cJSON_AddItemToObject(root, "error", e);
    return srv_reply_json(r, status, root);
}

bool srv_client_alive(srv_req *r) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return true;
    char c;
    ssize_t k = recv(ci->connect_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (k == 0) return false;
    if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return false;
    return true;
}

/* ---- streams ------------------------------------------------------------ */

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    srv_stream *st = cls;
    (void)pos;
    while (st->pos >= st->out.len) {
        if (st->done) return MHD_CONTENT_READER_END_OF_STREAM;
        sgl_strbuf_clear(&st->out);
        st->pos = 0;
        if (st->produce(st) < 0) {
            st->gone = true;
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
    size_t n = SGL_MIN(max, st->out.len - st->pos);
    memcpy(buf, st->out.data + st->pos, n);
    st->pos += n;
    return (ssize_t)n;
}

static void stream_free(void *cls) {
    srv_stream *st = cls;
    bool gone = st->gone || !st->done;
    if (gone && st->req->status == 200) st->req->status = 499; /* client closed the stream */
    if (st->finish) st->finish(st, gone);
    sgl_strbuf_free(&st->out);
    srv_req *r = st->req;
    free(st);
    req_release(r);
}

enum MHD_Result srv_reply_stream(srv_req *r, srv_stream *st) {
    st->req = r;
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_read, st, stream_free);
    if (!resp) {
        if (st->finish) st->finish(st, true);
        sgl_strbuf_free(&st->out);
        free(st);
        return srv_reply_error(r, 500, NULL, "out of memory");
    }
    MHD_add_response_header(resp, "Content-Type", "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    pthread_mutex_lock(&r->srv->mu);
    r->refs++;
    pthread_mutex_unlock(&r->srv->mu);
    r->status = 200;
    r->handled = true;
    enum MHD_Result rc = MHD_queue_response(r->conn, 200, resp);
    MHD_destroy_response(resp);
    return rc;
}

void srv_sse_data(sgl_strbuf *out, const char *event, cJSON *j) {
    char *text = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (event) sgl_strbuf_printf(out, "event: %s\n", event);
    sgl_strbuf_printf(out, "data: %s\n\n", text ? text : "{}");
    free(text);
}

/* ---- routing ------------------------------------------------------------ */

typedef enum {
    R_COMPLETIONS, R_CHAT, R_MODELS, R_GENERATE, R_MODEL_INFO, R_SERVER_INFO, R_FLUSH,
    R_HEALTH, R_HEALTH_GEN, R_MESSAGES, R_PROGRAMS, R_METRICS,
} route_id;

static const struct route {
    const char *path;
    const char *method;
    route_id id;
    bool has_body;
} routes[] = {
    {"/v1/completions", "POST", R_COMPLETIONS, true},
    {"/v1/chat/completions", "POST", R_CHAT, true},
    {"/v1/models", "GET", R_MODELS, false},
    {"/generate", "POST", R_GENERATE, true},
    {"/get_model_info", "GET", R_MODEL_INFO, false},
    {"/get_server_info", "GET", R_SERVER_INFO, false},
    {"/server_info", "GET", R_SERVER_INFO, false},
    {"/flush_cache", "POST", R_FLUSH, false},
    {"/flush_cache", "GET", R_FLUSH, false},
    {"/health", "GET", R_HEALTH, false},
    {"/health_generate", "GET", R_HEALTH_GEN, false},
    {"/v1/messages", "POST", R_MESSAGES, true},
    {"/v1/programs/run", "POST", R_PROGRAMS, true},
    {"/metrics", "GET", R_METRICS, false},
};

static bool auth_ok(srv_req *r) {
    const char *key = r->srv->api_key;
    if (!key) return true;
    const char *h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Authorization");
    if (h && !strncasecmp(h, "Bearer ", 7) && !strcmp(h + 7, key)) return true;
    /* Anthropic clients send x-api-key. */
    h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "x-api-key");
    return h && !strcmp(h, key);
}

static enum MHD_Result dispatch_route(srv_req *r, const struct route *rt) {
    cJSON *body = NULL;
    if (rt->has_body) {
        if (!r->body_len) return srv_reply_error(r, 400, NULL, "the request body is empty (a JSON object is expected)");
        const char *end = NULL;
        /* The length counts the NUL: cJSON then rejects trailing bytes. */
        body = cJSON_ParseWithLengthOpts(r->body, r->body_len + 1, &end, true);
        if (!body) {
            size_t at = end && end >= r->body ? (size_t)(end - r->body) : 0;
            return srv_reply_error(r, 400, NULL, "malformed JSON in the request body at byte %zu", at);
        }
        srv_json_keep_exact(body, r->body, r->body_len);
    }
    enum MHD_Result rc;
    if (r->srv->router) {
        switch (rt->id) {
        case R_HEALTH: rc = router_health(r); break;
        case R_METRICS: rc = route_metrics(r); break;
        case R_FLUSH: rc = router_flush(r); break;
        default: rc = router_forward(r, rt->path, rt->method, body); break;
        }
        cJSON_Delete(body);
        if (!r->handled && rc != MHD_NO) rc = srv_reply_error(r, 500, NULL, "the handler queued no reply");
        return rc;
    }
    switch (rt->id) {
    case R_COMPLETIONS: rc = route_completions(r, body, false); break;
    case R_CHAT: rc = route_completions(r, body, true); break;
    case R_MODELS: rc = route_models(r); break;
    case R_GENERATE: rc = route_generate(r, body); break;
    case R_MODEL_INFO: rc = route_model_info(r); break;
    case R_SERVER_INFO: rc = route_server_info(r); break;
    case R_FLUSH: rc = route_flush_cache(r); break;
    case R_HEALTH: rc = srv_reply(r, 200, "text/plain", NULL); break;
    case R_HEALTH_GEN: rc = route_health_generate(r); break;
    case R_MESSAGES: rc = route_messages(r, body); break;
    case R_PROGRAMS: rc = route_programs_run(r, body); break;
    case R_METRICS: rc = route_metrics(r); break;
    default: rc = srv_reply_error(r, 404, NULL, "no such route"); break;
    }
    cJSON_Delete(body);
    if (!r->handled) rc = srv_reply_error(r, 500, NULL, "the handler queued no reply");
    return rc;
}

static enum MHD_Result access_cb(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload,
                                 size_t *upload_size, void **con_cls) {
    sgl_server *s = cls;
    (void)version;
    srv_req *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r) return MHD_NO;
        r->srv = s;
        r->conn = conn;
        r->method = !strcmp(method, "POST") ? "POST" : !strcmp(method, "GET") ? "GET" : "OTHER";
        r->t0 = sgl_now();
        r->refs = 1;
        const struct route *known = NULL;
        for (size_t i = 0; i < SGL_ARRAY_LEN(routes); i++)
            if (!strcmp(url, routes[i].path)) known = &routes[i];
        snprintf(r->route, sizeof r->route, "%s", known ? known->path : "other");
        r->err_style = !strcmp(url, "/v1/messages") ? SRV_ERR_ANTHROPIC : SRV_ERR_OPENAI;
        *con_cls = r;
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > s->cfg.max_body) r->too_big = true;
        return MHD_YES;
    }
    if (*upload_size) {
        if (!r->too_big && r->body_len + *upload_size > s->cfg.max_body) r->too_big = true;
        if (!r->too_big) {
            if (r->body_len + *upload_size + 1 > r->body_cap) {
                size_t cap = SGL_MAX(r->body_cap * 2, r->body_len + *upload_size + 1);
                char *b = realloc(r->body, cap);
                if (!b) return MHD_NO;
                r->body = b;
                r->body_cap = cap;
            }
            memcpy(r->body + r->body_len, upload, *upload_size);
            r->body_len += *upload_size;
            r->body[r->body_len] = 0;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (r->handled) return MHD_YES;
    pthread_mutex_lock(&s->mu);
    s->active++;
    pthread_mutex_unlock(&s->mu);
    r->active = true;
    srv_metrics_add(&s->metrics, &s->metrics.in_flight, 1);
    if (r->too_big)
        return srv_reply_error(r, 413, NULL, "the request body is larger than %zu bytes (--max-body)", s->cfg.max_body);
    if (s->stopping) return srv_reply_error(r, 503, NULL, "the server is shutting down");
    const struct route *rt = NULL;
    bool path_known = false;
    for (size_t i = 0; i < SGL_ARRAY_LEN(routes); i++) {
        if (strcmp(url, routes[i].path)) continue;
        path_known = true;
        if (!strcmp(method, routes[i].method)) rt = &routes[i];
    }
    if (!rt && !path_known) return srv_reply_error(r, 404, NULL, "no route %s %s", method, url);
    if (!rt) return srv_reply_error(r, 405, NULL, "%s does not take %s", url, method);
    if (rt->id != R_HEALTH && !auth_ok(r))
        return srv_reply_error(r, 401, NULL, "missing or wrong API key (Authorization: Bearer KEY)");
    return dispatch_route(r, rt);
}

static void completed_cb(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode code) {
    (void)cls;
    (void)conn;
    srv_req *r = *con_cls;
    *con_cls = NULL;
    if (!r) return;
    if (!r->handled) r->status = code == MHD_REQUEST_TERMINATED_COMPLETED_OK ? 0 : 499;
    req_release(r);
}

/* ---- start / stop ------------------------------------------------------- */

sgl_server *sgl_server_start(const sgl_server_config *cfg, sgl_engine *e, sgl_error *err) {
    sgl_model *m = sgl_engine_local_model(e);
    const sgl_tokenizer *tok = sgl_engine_local_tokenizer(e);
    bool router = false;
#ifdef SGL_HAVE_REMOTE
    router = sgl_remote_stats(e, NULL, 0) >= 0;
#endif
    if (!router && (!m || !tok)) {
        sgl_error_set(err, "the server needs the local engine or a remote one");
        return NULL;
    }
    sgl_server *s = calloc(1, sizeof *s);
    if (!s) {
        sgl_error_set(err, "out of memory");
        return NULL;
    }
    s->cfg = *cfg;
    s->engine = e;
    s->tok = tok;
    s->started = sgl_now();
    s->seed_state = (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->idle_cv, NULL);
    srv_metrics_init(&s->metrics);
    s->host = sgl_strdup(cfg->host ? cfg->host : "127.0.0.1");
    s->api_key = cfg->api_key ? sgl_strdup(cfg->api_key) : NULL;
    s->programs_dir = cfg->programs_dir ? sgl_strdup(cfg->programs_dir) : NULL;
    s->model_path = sgl_strdup(cfg->model_path ? cfg->model_path : "model");
    const char *base = strrchr(s->model_path, '/');
    s->model_name = sgl_strdup(base ? base + 1 : s->model_path);
    s->router = router;
    if (!router) {
        s->n_ctx = model_get_config(m)->n_ctx_train;
        sgl_engine_metrics em;
        sgl_engine_metrics_get(e, &em);
        s->pool_slots = em.pool_slots;
        if (!(s->ct = chat_template_from_gguf(model_get_gguf(m), tok, err))) goto fail;
        size_t bl = 0;
        int32_t bos = tok_bos(tok);
        const char *piece = bos >= 0 ? tok_piece(tok, bos, &bl) : NULL;
        s->uncond_prompt = piece && bl ? sgl_strndup(piece, bl) : sgl_strdup("\n");
    }
    if (!(s->disp = srv_dispatch_start(e, err))) goto fail;

    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)cfg->port);
    const char *host = !strcmp(s->host, "localhost") ? "127.0.0.1" : s->host;
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        sgl_error_set(err, "--host must be an IPv4 address, not '%s'", s->host);
        goto fail;
    }
    s->mhd = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                                  MHD_USE_POLL | MHD_USE_ITC,
                              (uint16_t)cfg->port, NULL, NULL, access_cb, s,
                              MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                              MHD_OPTION_NOTIFY_COMPLETED, completed_cb, s,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned)1000,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)600,
                              MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)1024,
                              MHD_OPTION_END);
    if (!s->mhd) {
        sgl_error_set(err, "cannot listen on %s:%d: %s", s->host, cfg->port,
                      errno ? strerror(errno) : "libmicrohttpd refused to start");
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : cfg->port;
    return s;
fail:
    s->shut = true;
    sgl_server_free(s);
    return NULL;
}

int sgl_server_port(const sgl_server *s) { return s->port; }

/* Waits until no request is active or `until` passes. Returns the count left. */
static int wait_idle(sgl_server *s, double until) {
    pthread_mutex_lock(&s->mu);
    while (s->active > 0 && sgl_now() < until) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s->idle_cv, &s->mu, &ts);
    }
    int left = s->active;
    pthread_mutex_unlock(&s->mu);
    return left;
}

void sgl_server_shutdown(sgl_server *s) {
    if (!s || s->shut) return;
    s->shut = true;
    s->stopping = true;
    /* Stop accepting; the listening socket is ours to close after the stop. */
    MHD_socket lfd = s->mhd ? MHD_quiesce_daemon(s->mhd) : MHD_INVALID_SOCKET;
    int left = wait_idle(s, sgl_now() + s->cfg.shutdown_grace_s);
    if (left > 0) {
        FILE *log = s->cfg.log ? s->cfg.log : stderr;
        fprintf(log, "sglc serve: aborting %d request%s still running after %.0f s\n", left,
                left == 1 ? "" : "s", s->cfg.shutdown_grace_s);
        s->aborting = true;
        srv_cancel_all(s->disp);
        wait_idle(s, sgl_now() + 5);
    }
    if (s->mhd) MHD_stop_daemon(s->mhd);
    s->mhd = NULL;
    if (lfd != MHD_INVALID_SOCKET) close(lfd);
}

void sgl_server_free(sgl_server *s) {
    if (!s) return;
    sgl_server_shutdown(s);
    if (s->mhd) MHD_stop_daemon(s->mhd);
    srv_dispatch_stop(s->disp);
    chat_template_free(s->ct);
    srv_metrics_free(&s->metrics);
    pthread_cond_destroy(&s->idle_cv);
    pthread_mutex_destroy(&s->mu);
    free(s->uncond_prompt);
    free(s->host);
    free(s->api_key);
    free(s->programs_dir);
    free(s->model_path);
    free(s->model_name);
    free(s);
}
