/* internal: what the server's source files share: the server object, the
 * per-request record, the engine dispatcher (results routed to waiters by
 * request id), JSON field checking, replies and streams, metrics. Not a
 * public header: only the server sources include it.
 */
#ifndef SGL_SERVER_INTERNAL_H
#define SGL_SERVER_INTERNAL_H

#include <cjson/cJSON.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "runtime/chat_template.h"
#include "runtime/engine.h"
#include "runtime/tokenizer.h"
#include "server/server.h"

/* ---- dispatcher (dispatch.c) -------------------------------------------- */

/* A consumer of engine results: an HTTP request (one or more engine
 * requests) or a program run's proxy engine. The dispatcher thread drains
 * sgl_engine_wait and appends each result to the waiter that submitted it. */
typedef struct srv_waiter {
    pthread_cond_t cv;
    sgl_result **q;            /* FIFO of results not yet taken */
    int q_head, q_len, q_cap;
    uint64_t *ids;             /* [n_ids] engine ids submitted and not finished */
    uint64_t *tags;            /* [n_ids] the submitter's own id for each (proxy engines) */
    int n_ids, cap_ids;
    struct srv_waiter *next, *prev; /* registry list */
    bool linked;
} srv_waiter;

typedef struct srv_dispatch srv_dispatch;

srv_dispatch *srv_dispatch_start(sgl_engine *e, sgl_error *err);
/* Stops the thread; results still arriving are dropped. NULL ok. */
void srv_dispatch_stop(srv_dispatch *d);
void srv_waiter_init(srv_dispatch *d, srv_waiter *w);
/* Cancels the waiter's unfinished engine requests (their results are then
 * dropped by the dispatcher) and frees what it still holds. */
void srv_waiter_destroy(srv_dispatch *d, srv_waiter *w);
/* Submits req for w; tag is stored for srv_wait's *tag. Returns the engine
 * id, or 0 with err set. */
uint64_t srv_submit(srv_dispatch *d, srv_waiter *w, const sgl_request *req, uint64_t tag,
                    sgl_error *err);
/* The next result for w (caller owns it) within timeout_s (< 0: forever), or
 * NULL. *tag (may be NULL) gets the tag given at submit. */
sgl_result *srv_wait(srv_dispatch *d, srv_waiter *w, double timeout_s, uint64_t *tag);
/* Unfinished engine requests of w. */
int srv_waiter_pending(srv_dispatch *d, srv_waiter *w);
/* Cancels w's unfinished requests (their aborts still arrive). Returns how many. */
int srv_cancel_waiter(srv_dispatch *d, srv_waiter *w);
/* Cancels every unfinished request of every waiter and refuses new
 * submissions from then on (shutdown). */
void srv_cancel_all(srv_dispatch *d);
/* An engine whose requests go through d to the shared engine: what a
 * program run's VM uses, so programs batch and share the cache with HTTP
 * requests. *closed (may be NULL) is polled: once true, the proxy cancels
 * what it has in flight (counted in m's cancelled_disconnect) and refuses
 * new work. Free with sgl_engine_free. */
struct srv_metrics;
sgl_engine *srv_proxy_engine_new(srv_dispatch *d, const volatile bool *closed, struct srv_metrics *m);

/* ---- metrics (metrics.c) ------------------------------------------------ */

#define SRV_N_BUCKETS 14
typedef struct srv_hist {
    int64_t counts[SRV_N_BUCKETS + 1]; /* last: +Inf */
    double sum;
    int64_t n;
} srv_hist;

typedef struct srv_status_count {
    char route[48];
    int status;
    int64_t n;
} srv_status_count;

typedef struct srv_metrics {
    pthread_mutex_t mu;
    srv_status_count *by_route;
    int n_by_route, cap_by_route;
    int64_t cancelled_disconnect; /* engine requests cancelled because the client left */
    int64_t cancelled_shutdown;
    int64_t in_flight;            /* HTTP requests being answered */
    int64_t program_runs, program_instances;
    srv_hist ttft, e2e;
} srv_metrics;

void srv_metrics_init(srv_metrics *m);
void srv_metrics_free(srv_metrics *m);
void srv_metrics_request(srv_metrics *m, const char *route, int status, double e2e_s, double ttft_s);
void srv_metrics_add(srv_metrics *m, int64_t *field, int64_t n);

/* ---- server and requests (server.c) ------------------------------------- */

struct sgl_server {
    sgl_server_config cfg;
    char *host, *api_key, *programs_dir, *model_path, *model_name;
    sgl_engine *engine;
    const sgl_tokenizer *tok;
    chat_template *ct;
    char *uncond_prompt;
    int32_t n_ctx;             /* prompt + output limit (0: none known) */
    int32_t pool_slots;
    int port;
    struct MHD_Daemon *mhd;
    srv_dispatch *disp;
    srv_metrics metrics;
    pthread_mutex_t mu;
    pthread_cond_t idle_cv;
    int active;                /* requests with a handler or stream running */
    volatile bool stopping;
    volatile bool aborting;    /* shutdown's grace is over: forwards give up */
    bool router;               /* the engine is remote: routes are forwarded (router.c) */
    bool shut;
    double started;
    uint64_t seed_state;       /* fresh seeds for requests without one */
    uint64_t next_rid;
};

typedef enum srv_err_style { SRV_ERR_OPENAI, SRV_ERR_ANTHROPIC } srv_err_style;

typedef struct srv_stream srv_stream;

/* One HTTP request. Freed when both the connection (completed callback)
 * and its stream (if any) are done with it. */
typedef struct srv_req {
    sgl_server *srv;
    struct MHD_Connection *conn;
    char route[48];            /* path, or "other" for unknown routes (metrics labels) */
    const char *method;
    srv_err_style err_style;
    char *body;                /* NUL-terminated upload */
    size_t body_len, body_cap;
    bool too_big, handled;
    double t0, t_first;
    int status;
    int64_t prompt_tokens, completion_tokens, cached_tokens;
    int refs;
    bool active;               /* counted in srv->active */
} srv_req;

/* Queues a JSON reply (takes body: freed here). Returns MHD_YES/NO. */
enum MHD_Result srv_reply(srv_req *r, int status, const char *content_type, char *body);
enum MHD_Result srv_reply_json(srv_req *r, int status, cJSON *j);
/* The protocol's error shape with message; param: the field named, or NULL. */
enum MHD_Result srv_reply_error(srv_req *r, int status, const char *param, const char *fmt, ...)
    SGL_PRINTF(4, 5);
/* False once the client has closed its end of the connection. */
bool srv_client_alive(srv_req *r);
uint64_t srv_fresh_seed(sgl_server *s);
uint64_t srv_next_id(sgl_server *s);

/* Streams: produce() is called (on the connection's thread) whenever the
 * bytes queued in out are all sent; it appends more (blocking is fine),
 * sets done after the last bytes, or returns -1 when the client is gone.
 * finish() runs once when the stream ends either way (gone: the client
 * left first) and frees ctx. */
struct srv_stream {
    srv_req *req;
    sgl_strbuf out;
    size_t pos;
    bool done, gone;
    int (*produce)(srv_stream *st);
    void (*finish)(srv_stream *st, bool gone);
    void *ctx;
};
/* Starts a 200 text/event-stream reply driven by st (takes st; initial
 * bytes may already be in st->out). */
enum MHD_Result srv_reply_stream(srv_req *r, srv_stream *st);
void srv_sse_data(sgl_strbuf *out, const char *event, cJSON *j); /* frees j */

/* ---- JSON input checks (json.c) ------------------------------------------ */

enum {
    J_NULL = 1, J_BOOL = 2, J_INT = 4, J_NUM = 8, J_STR = 16, J_ARR = 32, J_OBJ = 64,
    J_INT64 = 128, /* an integer in [-2^63, 2^64), read exactly (seeds) */
};
typedef struct srv_field {
    const char *name;
    unsigned types;
} srv_field;
/* Checks every member of obj against fields[0..n): unknown names and wrong
 * types fail with err naming "prefix.name". Returns 0 or -1; *bad gets the
 * field's path (static buffer in err's tail is not used; bad is caller's). */
int srv_check_fields(const cJSON *obj, const srv_field *fields, size_t n, const char *prefix,
                     char *bad, size_t bad_cap, sgl_error *err);
bool srv_json_is_int(const cJSON *j);
/* Records on the number nodes of root (parsed from text) the exact text of
 * integers beyond 2^53, which doubles cannot hold; srv_json_int64 reads it. */
void srv_json_keep_exact(cJSON *root, const char *text, size_t len);
/* A J_INT64 value as its 64-bit pattern (negatives two's complement).
 * Returns 0, or -1 when j is not such an integer. */
int srv_json_int64(const cJSON *j, uint64_t *out);
/* A cJSON string from bytes that may hold invalid UTF-8 (each maximal
 * invalid part, and each NUL byte, becomes U+FFFD: uni_utf8_repair), so the
 * reply is always valid JSON text. */
cJSON *srv_json_str(const char *s, size_t n);

/* ---- generation jobs (gen.c) --------------------------------------------- */

/* One HTTP request's engine requests: n prompts (token ids) with their
 * params; results gathered per index. */
typedef struct gen_job {
    sgl_server *srv;
    srv_waiter w;
    int n;
    uint64_t *ids;             /* [n] engine ids (index = position) */
    sgl_result **final;        /* [n] final results, when in */
    sgl_strbuf *text;          /* [n] streamed text so far */
    int32_t *n_out;            /* [n] tokens streamed so far */
    int n_done;
    double t0, t_first;
    bool started;
} gen_job;

/* A prompt as token ids (malloc'd). */
typedef struct gen_prompt {
    int32_t *ids;
    size_t n;
} gen_prompt;

void gen_job_init(gen_job *j, sgl_server *s, int n);
/* Submits prompt i (stream: partial results). Returns 0 or -1 with err. */
int gen_job_submit(gen_job *j, int i, const gen_prompt *p, const sgl_sampling_params *sp,
                   bool stream, sgl_error *err);
/* Next result (partial or final); *idx its index. Final results are also
 * kept in final[] (owned by the job: do not free them); partials are the
 * caller's. NULL on timeout. */
sgl_result *gen_job_next(gen_job *j, double timeout_s, int *idx);
/* Waits for every final result, checking the client; returns 0, or -1 when
 * the client left (requests cancelled). */
int gen_job_wait_all(gen_job *j, srv_req *r);
/* Cancels what is left (counted as client-gone when gone) and frees. */
void gen_job_free(gen_job *j, bool gone);
/* First failed result (ABORT), or NULL. */
const sgl_result *gen_job_failed(const gen_job *j);
/* Replies with an engine failure: 400 for refusals of the request itself
 * (constraints, context), 503 when cancelled by shutdown, 500 otherwise. */
enum MHD_Result gen_reply_engine_error(srv_req *r, const sgl_result *res);
/* Tokenizes text (special tokens parsed, BOS as the model adds it) or
 * checks ids; fails (400-worthy message naming field) on an empty prompt,
 * a bad id or a prompt that leaves no room in the context. */
int gen_prompt_text(sgl_server *s, const char *text, size_t len, bool add_special, gen_prompt *p,
                    const char *field, sgl_error *err);
int gen_prompt_ids(sgl_server *s, const cJSON *arr, gen_prompt *p, const char *field, sgl_error *err);
int gen_prompt_check(sgl_server *s, const gen_prompt *p, const char *field, sgl_error *err);
/* Chat messages ([{role, content}], content a string or text parts) through
 * the model's chat template. field: "messages"; system (may be NULL) first. */
int gen_prompt_chat(sgl_server *s, const cJSON *messages, const cJSON *system, gen_prompt *p,
                    char *bad, size_t bad_cap, sgl_error *err);
void gen_prompt_free(gen_prompt *p);
/* Compiles the constraint sp carries (through the engine's compile cache, so
 * the submit that follows does not compile again). Returns 0, or -1 with
 * bad = field (the request field the constraint came from) and err = the
 * compiler's located message (a 400). */
int gen_check_constraint(const sgl_sampling_params *sp, const char *field, char *bad, size_t cap,
                         sgl_error *err);
/* stop: a string or an array of strings -> borrowed pointers into the JSON
 * (malloc'd array in *out). */
int gen_stop_list(const cJSON *stop, const char ***out, int32_t *n, const char *field,
                  sgl_error *err);
/* Per-request seed: the given one (exact to 64 bits, + index), or a fresh one. */
uint64_t gen_seed(sgl_server *s, const cJSON *seed, int idx);
/* Records tokens of finished results on the request (for the log line). */
void gen_job_account(gen_job *j, srv_req *r);

/* A job streamed as the reply (server-sent events). A route's stream context
 * starts with a gen_stream, so srv_stream.ctx points at both; the route
 * fills handle (turns one result into events on st->out and takes r; the
 * first result comes with its own index) and free_ctx (frees the route's
 * part of the context and the context itself). */
typedef struct gen_stream {
    gen_job job;
    sgl_result *first;         /* first result, taken before the reply started */
    int first_idx;
    void (*handle)(srv_stream *st, int idx, sgl_result *r);
    void (*free_ctx)(struct gen_stream *gs);
} gen_stream;
/* Waits for the job's first result so that a refusal is an HTTP error
 * rather than an event, then starts the streamed reply. On every path the
 * context is handed over: to the stream, or freed (free_ctx) after the
 * error reply. Returns what MHD should get. */
enum MHD_Result gen_stream_start(srv_req *r, gen_stream *gs);
/* Returns max_new_tokens clamped to what the context leaves after prompt. */
int32_t gen_clamp_max(sgl_server *s, int32_t max_new, size_t prompt_len);

/* ---- routes --------------------------------------------------------------- */

enum MHD_Result route_completions(srv_req *r, cJSON *body, bool chat);
enum MHD_Result route_models(srv_req *r);
enum MHD_Result route_generate(srv_req *r, cJSON *body);
enum MHD_Result route_model_info(srv_req *r);
enum MHD_Result route_server_info(srv_req *r);
enum MHD_Result route_flush_cache(srv_req *r);
enum MHD_Result route_health_generate(srv_req *r);
enum MHD_Result route_messages(srv_req *r, cJSON *body);
enum MHD_Result route_programs_run(srv_req *r, cJSON *body);
enum MHD_Result route_metrics(srv_req *r);

/* router.c: routes of a server in front of workers (s->router). */
enum MHD_Result router_forward(srv_req *r, const char *path, const char *method, const cJSON *body);
enum MHD_Result router_health(srv_req *r);
enum MHD_Result router_flush(srv_req *r);
/* Appends the per-worker Prometheus lines. */
void router_metrics(sgl_server *s, sgl_strbuf *sb);

#endif
