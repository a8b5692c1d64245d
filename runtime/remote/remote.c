/* remote.c: the remote engine (see remote.h): request building and reply
 * parsing per protocol, the libcurl multi loop, retries and routing. */
#include "runtime/remote/remote.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/remote/prefix_tree.h"

sgl_remote_config sgl_remote_config_default(void) {
    sgl_remote_config c;
    memset(&c, 0, sizeof c);
    c.timeout_s = 120;
    c.connect_timeout_s = 5;
    c.max_retries = 3;
    c.backoff_s = 0.1;
    c.down_s = 1;
    c.policy = SGL_ROUTE_PREFIX;
    c.balance_abs = 32;
    c.cache_threshold = 0.5;
    return c;
}

static const char *const kind_names[] = {"sglang", "openai", "openai-completions", "openai-chat", "anthropic"};

const char *sgl_remote_kind_name(sgl_remote_kind k) { return kind_names[k]; }

int sgl_remote_parse_spec(const char *spec, sgl_remote_kind *kind, const char **url, sgl_error *err) {
    const char *colon = strchr(spec, ':');
    for (int k = 0; colon && k < 5; k++) {
        if (strlen(kind_names[k]) == (size_t)(colon - spec) && !strncmp(spec, kind_names[k], (size_t)(colon - spec))) {
            if (strncmp(colon + 1, "http://", 7) && strncmp(colon + 1, "https://", 8))
                return sgl_error_set(err, "backend '%s': the URL must start with http:// or https://", spec);
            *kind = (sgl_remote_kind)k;
            *url = colon + 1;
            return 0;
        }
    }
    return sgl_error_set(err,
                         "backend '%s': expected KIND:URL with KIND one of sglang, openai, openai-completions, "
                         "openai-chat, anthropic",
                         spec);
}

int sgl_route_policy_parse(const char *name, sgl_route_policy *out) {
    if (!strcmp(name, "prefix") || !strcmp(name, "cache_aware")) *out = SGL_ROUTE_PREFIX;
    else if (!strcmp(name, "round_robin")) *out = SGL_ROUTE_ROUND_ROBIN;
    else return -1;
    return 0;
}

/* ---- state ------------------------------------------------------------------------------ */

typedef struct rm_endpoint {
    char *url;          /* no trailing '/' */
    remote_tree *tree;
    int in_flight;
    double down_until;  /* > now: out of rotation */
    int fail_streak;
    sgl_remote_endpoint_stats st;
} rm_endpoint;

struct rm_job;

/* One HTTP request of a job (a GENERATE is one part; a SCORE one per
 * choice, plus the prompt alone when choices are text). */
typedef struct rm_part {
    struct rm_job *job;
    char *body;            /* JSON (owned) */
    char *route;           /* prompt text for routing (owned) */
    int attempts;
    int failovers;         /* endpoint faults re-sent to another endpoint: they do not
                              use up max_retries (at most one per other endpoint) */
    double not_before;
    rm_endpoint *ep;       /* the endpoint of the attempt in flight */
    rm_endpoint *last_bad; /* avoid it on the retry when others are up */
    CURL *h;
    struct curl_slist *hdrs;
    sgl_strbuf resp;
    char errbuf[CURL_ERROR_SIZE];
    cJSON *reply;          /* the parsed answer once done */
    char *last_error;      /* why the last attempt failed (owned) */
    /* Streamed GENERATE (server-sent events), per attempt: */
    size_t sse_scan;       /* bytes of resp already split into lines */
    bool sse_seen;         /* a "data:" line arrived */
    bool sse_bad;          /* a chunk was not JSON / an error event */
    sgl_strbuf sse_text;   /* the text so far */
    size_t sse_sent;       /* of which delivered as partials (never retried after) */
    cJSON *sse_last;       /* sglang: the last chunk; others: usage so far */
    char *sse_finish, *sse_stop;
    bool fwd_commit;       /* forward: this attempt's answer went to the reader */
} rm_part;

struct remote_engine;

typedef struct rm_job {
    struct remote_engine *re;
    uint64_t id, user_tag;
    sgl_req_kind kind;
    bool stream;
    bool prompt_part;      /* SCORE with text choices: parts[pre] is the prompt alone */
    int pre;               /* 1: sglang SCORE in two phases: parts[0] prefills the prompt
                              (cached, gives its token count P); the others go out after
                              it, asking logprobs only from P - SCORE_BACK on (so the
                              server serves the rest from its cache); else 0 */
    int n_initial;         /* parts queued at submit (the others: after parts[0]) */
    int32_t score_back;    /* two-phase SCORE: logprobs from P - score_back (-1: from 0,
                              the retry when a choice parts from the prompt earlier) */
    int32_t n_prompt_ids;  /* SCORE with token choices: prompt length */
    int n_parts, n_settled;
    rm_part *parts;
    char *error;           /* first fatal error (owned) */
    bool cancelled;        /* sgl_engine_cancel: settles as ABORT "cancelled" */
    struct sgl_remote_fwd *fwd; /* a forwarded HTTP request (router), else NULL */
} rm_job;

/* A forwarded HTTP request: what the reader sees (every field under the
 * engine's mu). Owned by two: the reader (until sgl_remote_fwd_free) and
 * the engine (until its job settles); the last to let go frees it. */
struct sgl_remote_fwd {
    struct remote_engine *re;
    pthread_cond_t cv;
    int refs;
    uint64_t id;           /* the job's id (cancel) */
    char *method, *path;   /* owned */
    int endpoint;          /* >= 0: only that endpoint, one attempt */
    int status;            /* 0 until the answer is committed */
    char *ctype;           /* Content-Type of the answer (owned) */
    sgl_strbuf pending;    /* answer bytes not yet taken by the reader */
    bool committed, done;
    char *error;           /* no answer (status 0), or the answer broke off (owned) */
    char *ep_url;          /* the endpoint that answered (owned) */
    double prompt_tokens, cached_tokens, completion_tokens;
};

typedef struct remote_engine {
    sgl_remote_kind kind;  /* resolved (never OPENAI after start) */
    bool echo_logprobs;    /* OpenAI completions echo prompt logprobs (probed): SCORE */
    sgl_remote_config cfg;
    char *model, *key;
    rm_endpoint *eps;
    int n_eps, rr_next;
    CURLM *multi;
    pthread_t th;
    bool th_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    rm_part **incoming;    /* submitted, not yet seen by the thread (mu) */
    size_t n_incoming, cap_incoming;
    rm_part **ready;       /* waiting to start (thread only) */
    size_t n_ready, cap_ready;
    rm_part **active;      /* HTTP attempt in flight (thread only) */
    size_t n_active, cap_active;
    sgl_result **done;     /* completion queue (mu) */
    size_t done_head, n_done, cap_done;
    rm_job **live;         /* submitted jobs not yet finished (mu) */
    size_t n_live, cap_live;
    uint64_t *cancels;     /* ids asked to stop, for the thread (mu) */
    size_t n_cancels, cap_cancels;
    uint64_t next_fwd_id;  /* forwards take ids from the top of the range (mu) */
    sgl_engine_metrics m;  /* (mu) */
    sgl_remote_endpoint_stats *snap; /* endpoint figures for sgl_remote_stats (mu) */
} remote_engine;

static int push_ptr(void ***arr, size_t *n, size_t *cap, void *p) {
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        void **na = realloc(*arr, nc * sizeof *na);
        if (!na) return -1;
        *arr = na;
        *cap = nc;
    }
    (*arr)[(*n)++] = p;
    return 0;
}

static void fwd_destroy(struct sgl_remote_fwd *f) {
    pthread_cond_destroy(&f->cv);
    free(f->method);
    free(f->path);
    free(f->ctype);
    sgl_strbuf_free(&f->pending);
    free(f->error);
    free(f->ep_url);
    free(f);
}

/* The engine lets go of a forward: it is finished from the reader's side
 * (an error when no answer was committed). Takes mu. */
static void fwd_release(struct sgl_remote_fwd *f, const char *why) {
    remote_engine *re = f->re;
    pthread_mutex_lock(&re->mu);
    if (!f->done) {
        f->done = true;
        if (!f->error && (why || !f->status)) f->error = sgl_strdup(why ? why : "the router stopped");
    }
    pthread_cond_broadcast(&f->cv);
    bool last = --f->refs == 0;
    pthread_mutex_unlock(&re->mu);
    if (last) fwd_destroy(f);
}

static int push_u64(uint64_t **arr, size_t *n, size_t *cap, uint64_t v) {
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        uint64_t *na = realloc(*arr, nc * sizeof *na);
        if (!na) return -1;
        *arr = na;
        *cap = nc;
    }
    (*arr)[(*n)++] = v;
    return 0;
}

static void job_free(rm_job *j) {
    if (!j) return;
    if (j->fwd) fwd_release(j->fwd, j->error);
    for (int i = 0; i < j->n_parts; i++) {
        rm_part *p = &j->parts[i];
        free(p->body);
        free(p->route);
        sgl_strbuf_free(&p->resp);
        cJSON_Delete(p->reply);
        free(p->last_error);
        sgl_strbuf_free(&p->sse_text);
        cJSON_Delete(p->sse_last);
        free(p->sse_finish);
        free(p->sse_stop);
        if (p->hdrs) curl_slist_free_all(p->hdrs);
    }
    free(j->parts);
    free(j->error);
    free(j);
}

/* SCORE_BACK: how far before the prompt's end the second phase of a text
 * SCORE asks logprobs from (each position asked costs the server a row of
 * the vocabulary projection). Joining a choice changes the prompt's
 * tokenization only in its last pre-token (a word), so the tokens before
 * stay those of the prompt alone; where they part is found in the returned
 * ids. When a choice parts earlier than the window, the second phase is
 * sent again with logprobs from the prompt's start (job_finish). */
enum { SCORE_BACK = 4 };

/* ---- request bodies --------------------------------------------------------------------- */

static cJSON *str_array(const char *const *s, int32_t n) {
    cJSON *a = cJSON_CreateArray();
    for (int32_t i = 0; a && i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateString(s[i] ? s[i] : ""));
    return a;
}

static cJSON *int_array(const int32_t *v, int32_t n) {
    cJSON *a = cJSON_CreateArray();
    for (int32_t i = 0; a && i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

/* A seed as an exact JSON integer written as text (never through a
 * double, which holds integers exactly only up to 2^53): all 64 bits, as
 * the signed 64-bit integer with the same bits, the range SGLang's and
 * vLLM's samplers (torch int64) and OpenAI's API take. `sglc serve` reads
 * it back exactly, so the draw equals the local engine's. */
static void add_seed(cJSON *o, const char *key, uint64_t seed) {
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", (long long)(int64_t)seed);
    cJSON_AddRawToObject(o, key, buf);
}

static cJSON *sglang_sampling(const sgl_sampling_params *p) {
    cJSON *s = cJSON_CreateObject();
    cJSON_AddNumberToObject(s, "max_new_tokens", p->max_new_tokens);
    if (p->min_new_tokens) cJSON_AddNumberToObject(s, "min_new_tokens", p->min_new_tokens);
    cJSON_AddNumberToObject(s, "temperature", p->temperature);
    cJSON_AddNumberToObject(s, "top_p", p->top_p);
    cJSON_AddNumberToObject(s, "top_k", p->top_k);
    cJSON_AddNumberToObject(s, "min_p", p->min_p);
    cJSON_AddNumberToObject(s, "frequency_penalty", p->frequency_penalty);
    cJSON_AddNumberToObject(s, "presence_penalty", p->presence_penalty);
    cJSON_AddNumberToObject(s, "repetition_penalty", p->repetition_penalty);
    if (p->n_stop) cJSON_AddItemToObject(s, "stop", str_array(p->stop, p->n_stop));
    if (p->n_stop_token_ids) cJSON_AddItemToObject(s, "stop_token_ids", int_array(p->stop_token_ids, p->n_stop_token_ids));
    if (p->ignore_eos) cJSON_AddTrueToObject(s, "ignore_eos");
    cJSON_AddBoolToObject(s, "skip_special_tokens", p->skip_special_tokens);
    add_seed(s, "sampling_seed", p->seed); /* 0 too: the local engine's default */
    if (p->regex) cJSON_AddStringToObject(s, "regex", p->regex);
    if (p->json_schema) cJSON_AddStringToObject(s, "json_schema", p->json_schema);
    if (p->grammar) cJSON_AddStringToObject(s, "ebnf", p->grammar);
    return s;
}

/* {"text"|"input_ids", "sampling_params", logprob fields} */
static char *sglang_body(const char *text, const int32_t *ids, int32_t n_ids, const sgl_sampling_params *p,
                         bool score, int32_t logprob_start, bool stream) {
    cJSON *o = cJSON_CreateObject();
    if (text) cJSON_AddStringToObject(o, "text", text);
    else cJSON_AddItemToObject(o, "input_ids", int_array(ids, n_ids));
    if (score) {
        cJSON *s = cJSON_CreateObject();
        cJSON_AddNumberToObject(s, "max_new_tokens", 0);
        cJSON_AddNumberToObject(s, "temperature", 0);
        cJSON_AddItemToObject(o, "sampling_params", s);
        cJSON_AddTrueToObject(o, "return_logprob");
        cJSON_AddNumberToObject(o, "logprob_start_len", logprob_start);
    } else {
        cJSON_AddItemToObject(o, "sampling_params", sglang_sampling(p));
        if (p->return_logprob || p->logprob_start_len >= 0) {
            cJSON_AddTrueToObject(o, "return_logprob");
            cJSON_AddNumberToObject(o, "top_logprobs_num", p->top_logprobs_num);
            cJSON_AddNumberToObject(o, "logprob_start_len", p->logprob_start_len);
        }
    }
    cJSON_AddBoolToObject(o, "stream", stream);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static void openai_sampling(cJSON *o, const sgl_sampling_params *p, bool anthropic) {
    cJSON_AddNumberToObject(o, "max_tokens", p->max_new_tokens);
    cJSON_AddNumberToObject(o, "temperature", p->temperature);
    if (p->top_p < 1) cJSON_AddNumberToObject(o, "top_p", p->top_p);
    if (anthropic) {
        if (p->top_k > 0) cJSON_AddNumberToObject(o, "top_k", p->top_k);
        if (p->n_stop) cJSON_AddItemToObject(o, "stop_sequences", str_array(p->stop, p->n_stop));
        return;
    }
    if (p->n_stop) cJSON_AddItemToObject(o, "stop", str_array(p->stop, p->n_stop));
    if (p->frequency_penalty != 0) cJSON_AddNumberToObject(o, "frequency_penalty", p->frequency_penalty);
    if (p->presence_penalty != 0) cJSON_AddNumberToObject(o, "presence_penalty", p->presence_penalty);
    add_seed(o, "seed", p->seed);
}

/* ---- images: files -> base64 content parts ---- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* RFC 4648 base64 of data[0..n) (malloc'd, NUL-terminated), or NULL. */
static char *base64(const unsigned char *d, size_t n) {
    char *o = malloc((n + 2) / 3 * 4 + 1), *w = o;
    if (!o) return NULL;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16 | (i + 1 < n ? (uint32_t)d[i + 1] << 8 : 0) | (i + 2 < n ? d[i + 2] : 0);
        *w++ = b64[v >> 18 & 63];
        *w++ = b64[v >> 12 & 63];
        *w++ = i + 1 < n ? b64[v >> 6 & 63] : '=';
        *w++ = i + 2 < n ? b64[v & 63] : '=';
    }
    *w = 0;
    return o;
}

enum { MAX_IMAGE_BYTES = 20 << 20 };

/* Reads image file path: *mime (static) from its first bytes and *data its
 * base64 (caller frees). Returns 0, or -1 with err naming the file. */
static int image_load(const char *path, const char **mime, char **data, sgl_error *err) {
    sgl_error rerr = {{0}};
    size_t n = 0;
    char *raw = sgl_read_file(path, &n, &rerr);
    if (!raw) return sgl_error_set(err, "image '%s': %s", path, rerr.msg);
    const unsigned char *u = (const unsigned char *)raw;
    *mime = n >= 8 && !memcmp(u, "\x89PNG\r\n\x1a\n", 8)                     ? "image/png"
            : n >= 3 && u[0] == 0xff && u[1] == 0xd8 && u[2] == 0xff            ? "image/jpeg"
            : n >= 6 && (!memcmp(u, "GIF87a", 6) || !memcmp(u, "GIF89a", 6))    ? "image/gif"
            : n >= 12 && !memcmp(u, "RIFF", 4) && !memcmp(u + 8, "WEBP", 4)     ? "image/webp"
                                                                                : NULL;
    int rc = 0;
    if (n > MAX_IMAGE_BYTES)
        rc = sgl_error_set(err, "image '%s': %zu bytes, more than the %d MiB an API request may carry", path, n,
                           MAX_IMAGE_BYTES >> 20);
    else if (!*mime)
        rc = sgl_error_set(err, "image '%s': not a PNG, JPEG, GIF or WebP file", path);
    else if (!(*data = base64(u, n)))
        rc = sgl_error_set(err, "out of memory");
    free(raw);
    return rc;
}

/* The content of chat turn i with its images (images[k] where turns[k] ==
 * i, split in at offsets[k]) as content parts: OpenAI's text and image_url
 * (a data URL) parts, or Anthropic's text and image (base64 source)
 * blocks. Returns NULL with nothing added when the turn has no image, or
 * NULL with err set. *failed tells the two apart. */
static cJSON *content_parts(const sgl_request *req, int32_t i, const char *content, bool anthropic, bool *failed,
                            sgl_error *err) {
    *failed = false;
    cJSON *a = NULL;
    size_t done = 0, len = strlen(content);
    for (int32_t k = 0; k < req->n_images; k++) {
        if (req->image_turns[k] != i) continue;
        if (!a) a = cJSON_CreateArray();
        size_t at = SGL_MIN((size_t)SGL_MAX(req->image_offsets[k], 0), len);
        for (int pass = 0; pass < 2; pass++) {
            if (pass == 1) { /* the image */
                const char *mime = NULL;
                char *data = NULL;
                if (image_load(req->images[k], &mime, &data, err) < 0) {
                    cJSON_Delete(a);
                    *failed = true;
                    return NULL;
                }
                cJSON *p = cJSON_CreateObject();
                if (anthropic) {
                    cJSON_AddStringToObject(p, "type", "image");
                    cJSON *src = cJSON_AddObjectToObject(p, "source");
                    cJSON_AddStringToObject(src, "type", "base64");
                    cJSON_AddStringToObject(src, "media_type", mime);
                    cJSON_AddStringToObject(src, "data", data);
                } else {
                    cJSON_AddStringToObject(p, "type", "image_url");
                    sgl_strbuf url = {0};
                    sgl_strbuf_printf(&url, "data:%s;base64,%s", mime, data);
                    cJSON_AddStringToObject(cJSON_AddObjectToObject(p, "image_url"), "url", url.data ? url.data : "");
                    sgl_strbuf_free(&url);
                }
                free(data);
                cJSON_AddItemToArray(a, p);
            } else if (at > done) { /* the text before it */
                char *t = sgl_strndup(content + done, at - done);
                cJSON *p = cJSON_CreateObject();
                cJSON_AddStringToObject(p, "type", "text");
                cJSON_AddStringToObject(p, "text", t ? t : "");
                cJSON_AddItemToArray(a, p);
                free(t);
                done = at;
            }
        }
    }
    if (a && done < len) {
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "type", "text");
        cJSON_AddStringToObject(p, "text", content + done);
        cJSON_AddItemToArray(a, p);
    }
    return a;
}

/* Chat turns of req: the finished ones, plus an open assistant turn with
 * content when the engine may continue it. Returns the array or NULL with
 * err set (the prompt cannot be carried as turns). */
static cJSON *chat_messages(const sgl_request *req, bool anthropic, cJSON **system, sgl_error *err) {
    const char *api = anthropic ? "the Anthropic messages API" : "an OpenAI chat API";
    if (req->loose_text || req->n_messages == 0) {
        sgl_error_set(err,
                      "%s takes chat turns only: write the prompt inside system/user/assistant roles "
                      "(sglc generate: --chat)",
                      api);
        return NULL;
    }
    const sgl_chat_msg *last = &req->messages[req->n_messages - 1];
    if (!req->open_turn || strcmp(last->role, "assistant")) {
        sgl_error_set(err, "%s generates only an assistant turn: put the gen inside assistant(...)", api);
        return NULL;
    }
    if (last->content[0] && !anthropic) {
        sgl_error_set(err,
                      "%s cannot continue an assistant turn that already has text (\"%.40s\"): start the "
                      "gen right after assistant(",
                      api, last->content);
        return NULL;
    }
    cJSON *a = cJSON_CreateArray();
    sgl_strbuf sys = {0};
    for (int32_t i = 0; i < req->n_messages; i++) {
        const sgl_chat_msg *m = &req->messages[i];
        bool is_last = i == req->n_messages - 1;
        if (is_last && !m->content[0]) break; /* the turn being generated */
        bool failed = false;
        cJSON *parts = req->n_images ? content_parts(req, i, m->content, anthropic, &failed, err) : NULL;
        if (failed || (parts && (strcmp(m->role, "user") || (is_last && req->open_turn)))) {
            if (!failed)
                sgl_error_set(err, "%s takes images in user turns only (image '%s' is in a%s %s turn)", api,
                              req->images[0], is_last && req->open_turn ? "n open" : "", m->role);
            cJSON_Delete(parts);
            cJSON_Delete(a);
            sgl_strbuf_free(&sys);
            return NULL;
        }
        if (anthropic && !strcmp(m->role, "system")) {
            if (sys.len) sgl_strbuf_puts(&sys, "\n");
            sgl_strbuf_puts(&sys, m->content);
            continue;
        }
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "role", m->role);
        if (parts) cJSON_AddItemToObject(o, "content", parts);
        else cJSON_AddStringToObject(o, "content", m->content);
        cJSON_AddItemToArray(a, o);
    }
    if (sys.len && system) *system = cJSON_CreateString(sys.data);
    sgl_strbuf_free(&sys);
    return a;
}

/* OpenAI completions scoring: the prompt echoed with its logprobs (one
 * generated token, which the parser drops by usage.prompt_tokens). */
static char *echo_body(const remote_engine *re, const char *text) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", re->model ? re->model : "default");
    cJSON_AddStringToObject(o, "prompt", text);
    cJSON_AddNumberToObject(o, "max_tokens", 1);
    cJSON_AddNumberToObject(o, "temperature", 0);
    cJSON_AddTrueToObject(o, "echo");
    cJSON_AddNumberToObject(o, "logprobs", 1);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

/* Builds the parts of a job. Returns 0 or -1 with err set. */
static int build_parts(remote_engine *re, const sgl_request *req, rm_job *j, sgl_error *err) {
    const char *text = req->text;
    sgl_strbuf sb = {0};
    if (req->kind == SGL_REQ_SCORE) {
        bool echo = re->kind == SGL_REMOTE_OPENAI_COMPLETIONS && re->echo_logprobs;
        if (re->kind != SGL_REMOTE_SGLANG && !echo)
            return sgl_error_set(err, "select needs prompt logprobs, which backend %s does not offer",
                                 sgl_remote_kind_name(re->kind));
        if (echo && req->choice_tokens)
            return sgl_error_set(err, "backend %s takes text prompts, not token ids", sgl_remote_kind_name(re->kind));
        if (req->n_choices < 1) return sgl_error_set(err, "score request: %d choices", req->n_choices);
        j->prompt_part = req->choice_tokens == NULL;
        j->pre = j->prompt_part && !echo;
        j->n_parts = req->n_choices + (j->prompt_part ? 1 : 0) + j->pre;
        j->n_initial = j->pre ? 1 : j->n_parts;
        j->score_back = SCORE_BACK;
        j->parts = calloc((size_t)j->n_parts, sizeof *j->parts);
        if (!j->parts) return sgl_error_set(err, "out of memory");
        if (j->prompt_part) {
            if (!text) return sgl_error_set(err, "score request: no prompt text");
            for (int i = 0; i < j->n_parts; i++) { /* the prompt, then prompt + each choice */
                int c = i - j->pre; /* -1: the prefill, 0: the prompt alone, > 0: choice c - 1 */
                sgl_strbuf_clear(&sb);
                sgl_strbuf_puts(&sb, text);
                if (c > 0) sgl_strbuf_puts(&sb, req->choices[c - 1] ? req->choices[c - 1] : "");
                j->parts[i].route = sgl_strdup(sb.data);
                if (echo) {
                    j->parts[i].body = echo_body(re, sb.data);
                } else if (c < 0) {
                    sgl_sampling_params pf = sgl_sampling_params_default();
                    pf.max_new_tokens = 0;
                    pf.temperature = 0;
                    j->parts[i].body = sglang_body(sb.data, NULL, 0, &pf, false, 0, false);
                } else {
                    j->parts[i].body = sgl_strdup(""); /* built when the prefill answers */
                }
            }
        } else {
            if (!req->tokens && req->n_tokens) return sgl_error_set(err, "score request: no prompt");
            j->n_prompt_ids = req->n_tokens;
            j->n_initial = j->n_parts;
            for (int32_t i = 0; i < req->n_choices; i++) {
                int32_t nc = req->choice_lens ? req->choice_lens[i] : 0;
                int32_t *ids = malloc(sizeof(int32_t) * (size_t)(req->n_tokens + nc + 1));
                if (!ids) break;
                if (req->n_tokens) memcpy(ids, req->tokens, sizeof(int32_t) * (size_t)req->n_tokens);
                if (nc) memcpy(ids + req->n_tokens, req->choice_tokens[i], sizeof(int32_t) * (size_t)nc);
                j->parts[i].body = sglang_body(NULL, ids, req->n_tokens + nc, NULL, true, SGL_MAX(req->n_tokens, 1), false);
                free(ids);
                j->parts[i].route = sgl_strdup("");
            }
        }
        sgl_strbuf_free(&sb);
    } else {
        j->n_parts = j->n_initial = 1;
        j->parts = calloc(1, sizeof *j->parts);
        if (!j->parts) return sgl_error_set(err, "out of memory");
        rm_part *p = &j->parts[0];
        p->route = sgl_strdup(text ? text : "");
        if (re->kind == SGL_REMOTE_SGLANG) {
            sgl_sampling_params sp = req->params;
            if (req->kind == SGL_REQ_PREFILL) {
                sp = sgl_sampling_params_default();
                sp.max_new_tokens = 0;
            }
            p->body = sglang_body(text, req->tokens, req->n_tokens, &sp, false, 0,
                                  req->stream && req->kind == SGL_REQ_GENERATE);
        } else {
            if (!text && re->kind != SGL_REMOTE_OPENAI_CHAT && re->kind != SGL_REMOTE_ANTHROPIC)
                return sgl_error_set(err, "backend %s takes text prompts, not token ids", sgl_remote_kind_name(re->kind));
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "model", re->model ? re->model : "default");
            if (re->kind == SGL_REMOTE_OPENAI_COMPLETIONS) {
                cJSON_AddStringToObject(o, "prompt", text);
            } else {
                cJSON *sys = NULL;
                cJSON *msgs = chat_messages(req, re->kind == SGL_REMOTE_ANTHROPIC, &sys, err);
                if (!msgs) {
                    cJSON_Delete(o);
                    return -1;
                }
                if (sys) cJSON_AddItemToObject(o, "system", sys);
                cJSON_AddItemToObject(o, "messages", msgs);
            }
            openai_sampling(o, &req->params, re->kind == SGL_REMOTE_ANTHROPIC);
            if (req->stream) {
                cJSON_AddTrueToObject(o, "stream");
                if (re->kind != SGL_REMOTE_ANTHROPIC) {
                    cJSON *so = cJSON_CreateObject();
                    cJSON_AddTrueToObject(so, "include_usage");
                    cJSON_AddItemToObject(o, "stream_options", so);
                }
            }
            p->body = cJSON_PrintUnformatted(o);
            cJSON_Delete(o);
        }
    }
    for (int i = 0; i < j->n_parts; i++) {
        j->parts[i].job = j;
        if (!j->parts[i].body || !j->parts[i].route) return sgl_error_set(err, "out of memory");
    }
    return 0;
}

/* ---- reply parsing -> results ----------------------------------------------------------- */

static double num_or(const cJSON *o, const char *k, double dflt) {
    const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, k) : NULL;
    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

/* Item i of array a as a number, or dflt. */
static double item_num(const cJSON *a, int i, double dflt) {
    const cJSON *v = cJSON_GetArrayItem(a, i);
    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

/* Checks that a 2xx reply has the shape the protocol promises; returns NULL
 * or a description of what is wrong. */
static const char *reply_problem(const remote_engine *re, const rm_job *j, const cJSON *r, bool prefill) {
    if (!cJSON_IsObject(r)) return "the reply is not a JSON object";
    if (re->kind == SGL_REMOTE_SGLANG) {
        const cJSON *meta = cJSON_GetObjectItemCaseSensitive(r, "meta_info");
        if (!cJSON_IsObject(meta)) return "the reply has no meta_info object";
        if (j->kind == SGL_REQ_GENERATE && !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(r, "text")))
            return "the reply has no text";
        if (j->kind == SGL_REQ_SCORE && !prefill &&
            !cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(meta, "input_token_logprobs")))
            return "the reply has no meta_info.input_token_logprobs";
        return NULL;
    }
    if (re->kind == SGL_REMOTE_ANTHROPIC) {
        if (!cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(r, "content"))) return "the reply has no content array";
        return NULL;
    }
    const cJSON *ch = cJSON_GetObjectItemCaseSensitive(r, "choices");
    const cJSON *c0 = cJSON_IsArray(ch) ? cJSON_GetArrayItem(ch, 0) : NULL;
    if (!cJSON_IsObject(c0)) return "the reply has no choices[0]";
    if (j->kind == SGL_REQ_SCORE) {
        const cJSON *lp = cJSON_GetObjectItemCaseSensitive(c0, "logprobs");
        if (!cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(lp, "token_logprobs")) ||
            !cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(lp, "tokens")))
            return "choices[0] has no logprobs.tokens / token_logprobs";
        if (!cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(r, "usage"), "prompt_tokens")))
            return "the reply has no usage.prompt_tokens";
        return NULL;
    }
    if (re->kind == SGL_REMOTE_OPENAI_COMPLETIONS) {
        if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(c0, "text"))) return "choices[0] has no text";
    } else {
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(c0, "message");
        const cJSON *content = cJSON_IsObject(msg) ? cJSON_GetObjectItemCaseSensitive(msg, "content") : NULL;
        if (!cJSON_IsString(content)) return "choices[0] has no message.content";
    }
    return NULL;
}

/* The token counts of a reply (plain or rebuilt from a stream); returns
 * whether the server reported its cached tokens. */
static bool reply_usage(sgl_remote_kind kind, const cJSON *r, double *pt, double *ct, double *gt) {
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(r, "meta_info");
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(r, "usage");
    const cJSON *cached;
    if (kind == SGL_REMOTE_SGLANG) {
        *pt = num_or(meta, "prompt_tokens", 0);
        *gt = num_or(meta, "completion_tokens", 0);
        cached = cJSON_GetObjectItemCaseSensitive(meta, "cached_tokens");
    } else if (kind == SGL_REMOTE_ANTHROPIC) {
        *pt = num_or(u, "input_tokens", 0) + num_or(u, "cache_read_input_tokens", 0);
        *gt = num_or(u, "output_tokens", 0);
        cached = cJSON_GetObjectItemCaseSensitive(u, "cache_read_input_tokens");
    } else {
        *pt = num_or(u, "prompt_tokens", 0);
        *gt = num_or(u, "completion_tokens", 0);
        cached = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(u, "prompt_tokens_details"),
                                                  "cached_tokens");
    }
    *ct = cJSON_IsNumber(cached) ? cached->valuedouble : 0;
    return cJSON_IsNumber(cached);
}

static void set_usage(sgl_remote_kind kind, const cJSON *r, sgl_result *res) {
    double pt, ct, gt;
    reply_usage(kind, r, &pt, &ct, &gt);
    res->prompt_tokens = (int32_t)pt;
    res->cached_tokens = (int32_t)ct;
    res->completion_tokens = (int32_t)gt;
}

static void set_text(sgl_result *res, const char *s) {
    free(res->text);
    res->text = sgl_strdup(s ? s : "");
    res->text_len = res->text ? strlen(res->text) : 0;
}

static sgl_finish finish_from(const char *s) {
    if (!s) return SGL_FINISH_STOP;
    if (!strcmp(s, "length") || !strcmp(s, "max_tokens")) return SGL_FINISH_LENGTH;
    if (!strcmp(s, "abort")) return SGL_FINISH_ABORT;
    return SGL_FINISH_STOP;
}

/* [[logprob, id, text?], ...] -> tokens/logprobs arrays; returns count or -1. */
static int parse_lp_list(const cJSON *a, int32_t **ids, float **lps) {
    int n = cJSON_GetArraySize(a);
    *ids = calloc((size_t)n + 1, sizeof **ids);
    *lps = calloc((size_t)n + 1, sizeof **lps);
    if (!*ids || !*lps) return -1;
    for (int i = 0; i < n; i++) {
        const cJSON *e = cJSON_GetArrayItem(a, i);
        const cJSON *lp = cJSON_GetArrayItem(e, 0), *id = cJSON_GetArrayItem(e, 1);
        if (!cJSON_IsArray(e) || !cJSON_IsNumber(id)) return -1;
        (*ids)[i] = (int32_t)id->valuedouble;
        (*lps)[i] = cJSON_IsNumber(lp) ? (float)lp->valuedouble : 0.0f;
    }
    return n;
}

static void sglang_generate_result(const cJSON *r, sgl_result *res, bool want_lp) {
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(r, "meta_info");
    set_text(res, cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(r, "text")));
    set_usage(SGL_REMOTE_SGLANG, r, res);
    const cJSON *fr = cJSON_GetObjectItemCaseSensitive(meta, "finish_reason");
    const char *ft = cJSON_IsObject(fr) ? cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(fr, "type"))
                                        : cJSON_GetStringValue(fr);
    res->finish = finish_from(ft);
    if (cJSON_IsObject(fr)) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(fr, "matched");
        if (cJSON_IsString(m)) res->stop_str = sgl_strdup(m->valuestring);
        else if (cJSON_IsNumber(m)) res->stop_token = (int32_t)m->valuedouble;
        if (res->finish == SGL_FINISH_ABORT) {
            const char *msg = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(fr, "message"));
            res->error = sgl_strdup(msg ? msg : "the server aborted the request");
        }
    }
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(r, "output_ids");
    const cJSON *olp = cJSON_GetObjectItemCaseSensitive(meta, "output_token_logprobs");
    if (cJSON_IsArray(ids)) {
        int n = cJSON_GetArraySize(ids);
        res->tokens = calloc((size_t)n + 1, sizeof *res->tokens);
        for (int i = 0; res->tokens && i < n; i++)
            res->tokens[i] = (int32_t)cJSON_GetArrayItem(ids, i)->valuedouble;
        if (res->tokens) res->n_tokens = n;
    }
    if (want_lp && cJSON_IsArray(olp)) {
        int n = cJSON_GetArraySize(olp);
        const cJSON *top = cJSON_GetObjectItemCaseSensitive(meta, "output_top_logprobs");
        res->logprobs = calloc((size_t)n + 1, sizeof *res->logprobs);
        for (int i = 0; res->logprobs && i < n; i++) {
            const cJSON *e = cJSON_GetArrayItem(olp, i);
            sgl_token_logprob *t = &res->logprobs[i];
            t->logprob = (float)item_num(e, 0, 0);
            t->token = (int32_t)item_num(e, 1, -1);
            const cJSON *tl = cJSON_IsArray(top) ? cJSON_GetArrayItem(top, i) : NULL;
            int nt = cJSON_IsArray(tl) ? cJSON_GetArraySize(tl) : 0;
            if (nt) {
                t->top_ids = calloc((size_t)nt, sizeof *t->top_ids);
                t->top_logprobs = calloc((size_t)nt, sizeof *t->top_logprobs);
                for (int k = 0; t->top_ids && t->top_logprobs && k < nt; k++) {
                    const cJSON *x = cJSON_GetArrayItem(tl, k);
                    t->top_logprobs[k] = (float)item_num(x, 0, 0);
                    t->top_ids[k] = (int32_t)item_num(x, 1, -1);
                    t->n_top = k + 1;
                }
            }
        }
        if (res->logprobs) res->n_logprobs = n;
        if (!res->n_tokens && n) {
            res->tokens = calloc((size_t)n, sizeof *res->tokens);
            for (int i = 0; res->tokens && i < n; i++) res->tokens[i] = res->logprobs[i].token;
            if (res->tokens) res->n_tokens = n;
        }
    }
}

/* OpenAI completions with echo: the prompt's tokens come back as strings
 * (logprobs.tokens / token_logprobs, usage.prompt_tokens of them). ids get
 * a 31-bit hash of each string: enough to find where two tokenizations part. */
static int score_positions_openai(const cJSON *r, int32_t **ids, float **lps, int32_t *n_pos, int32_t *cached) {
    const cJSON *lp = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r, "choices"), 0), "logprobs");
    const cJSON *toks = cJSON_GetObjectItemCaseSensitive(lp, "tokens");
    const cJSON *tlp = cJSON_GetObjectItemCaseSensitive(lp, "token_logprobs");
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(r, "usage");
    int n = cJSON_GetArraySize(toks);
    int32_t P = (int32_t)num_or(u, "prompt_tokens", -1);
    *cached = (int32_t)num_or(cJSON_GetObjectItemCaseSensitive(u, "prompt_tokens_details"), "cached_tokens", 0);
    if (!cJSON_IsArray(toks) || !cJSON_IsArray(tlp) || P < 0 || P > n || cJSON_GetArraySize(tlp) < P) return -1;
    *ids = malloc(sizeof(int32_t) * ((size_t)P + 1));
    *lps = calloc((size_t)P + 1, sizeof(float));
    if (!*ids || !*lps) return -1;
    for (int32_t k = 0; k < P; k++) {
        const char *s = cJSON_GetStringValue(cJSON_GetArrayItem(toks, k));
        uint32_t h = 2166136261u; /* FNV-1a */
        for (const unsigned char *c = (const unsigned char *)(s ? s : ""); *c; c++) h = (h ^ *c) * 16777619u;
        (*ids)[k] = (int32_t)(h & 0x7fffffff);
        const cJSON *x = cJSON_GetArrayItem(tlp, k);
        (*lps)[k] = cJSON_IsNumber(x) ? (float)x->valuedouble : 0.0f;
    }
    *n_pos = P;
    return 0;
}

/* The ids (and logprobs) of every prompt position of a prefill-only sglang
 * reply; positions before the first returned one are -1 / 0. */
static int score_positions(const cJSON *r, int32_t **ids, float **lps, int32_t *n_pos, int32_t *cached) {
    if (!cJSON_GetObjectItemCaseSensitive(r, "meta_info")) return score_positions_openai(r, ids, lps, n_pos, cached);
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(r, "meta_info");
    const cJSON *itl = cJSON_GetObjectItemCaseSensitive(meta, "input_token_logprobs");
    int32_t *eid = NULL;
    float *elp = NULL;
    int n = parse_lp_list(itl, &eid, &elp);
    int32_t P = (int32_t)num_or(meta, "prompt_tokens", n);
    *cached = (int32_t)num_or(meta, "cached_tokens", 0);
    if (n < 0 || P < n) {
        free(eid);
        free(elp);
        return -1;
    }
    *ids = malloc(sizeof(int32_t) * ((size_t)P + 1));
    *lps = calloc((size_t)P + 1, sizeof(float));
    if (!*ids || !*lps) {
        free(eid);
        free(elp);
        return -1;
    }
    int32_t first = P - n;
    for (int32_t k = 0; k < P; k++) (*ids)[k] = k < first ? -1 : eid[k - first];
    for (int32_t k = first; k < P; k++) (*lps)[k] = elp[k - first];
    free(eid);
    free(elp);
    *n_pos = P;
    return 0;
}

static int score_result(const rm_job *j, sgl_result *res, char *why, size_t why_len) {
    int base = j->pre + (j->prompt_part ? 1 : 0); /* the first choice's part */
    int32_t n_choices = j->n_parts - base;
    int32_t *pids = NULL, np = 0, cached = 0;
    float *plps = NULL;
    if (j->prompt_part && score_positions(j->parts[j->pre].reply, &pids, &plps, &np, &cached) < 0) {
        snprintf(why, why_len, "malformed input_token_logprobs in the prompt's reply");
        return -1;
    }
    free(plps);
    res->choices = calloc((size_t)n_choices, sizeof *res->choices);
    if (!res->choices) {
        free(pids);
        snprintf(why, why_len, "out of memory");
        return -1;
    }
    res->n_choices = n_choices;
    res->finish = SGL_FINISH_LENGTH;
    for (int32_t i = 0; i < n_choices; i++) {
        int32_t *ids = NULL, n = 0, c = 0;
        float *lps = NULL;
        if (score_positions(j->parts[i + base].reply, &ids, &lps, &n, &c) < 0) {
            free(pids);
            snprintf(why, why_len, "malformed input_token_logprobs in choice %d's reply", i);
            return -1;
        }
        int32_t start;
        if (j->prompt_part) { /* where the joint tokenization leaves the prompt's own */
            int32_t l = 0;
            while (l < np && l < n && (ids[l] < 0 || pids[l] < 0)) l++; /* before the logprobs asked */
            while (l < np && l < n && ids[l] == pids[l] && ids[l] >= 0) l++;
            start = SGL_MAX(l, 1);
        } else {
            start = SGL_MAX(j->n_prompt_ids, 1);
        }
        sgl_choice_score *cs = &res->choices[i];
        bool hashed = !cJSON_GetObjectItemCaseSensitive(j->parts[i + base].reply, "meta_info");
        cs->n_tokens = n > start ? n - start : 0;
        cs->tokens = calloc((size_t)cs->n_tokens + 1, sizeof *cs->tokens);
        cs->logprobs = calloc((size_t)cs->n_tokens + 1, sizeof *cs->logprobs);
        for (int32_t k = 0; cs->tokens && cs->logprobs && k < cs->n_tokens; k++) {
            cs->tokens[k] = hashed ? -1 : ids[start + k]; /* OpenAI: no token ids */
            cs->logprobs[k] = lps[start + k];
            cs->sum += lps[start + k];
        }
        if (ids[start > 0 && start <= n ? start - 1 : 0] < 0 && cs->n_tokens) {
            free(ids);
            free(lps);
            free(pids);
            snprintf(why, why_len, "choice %d's reply lacks the logprobs of its continuation", i);
            return j->pre && j->score_back >= 0 ? -2 : -1;
        }
        res->prompt_tokens += n;
        res->cached_tokens += c;
        free(ids);
        free(lps);
    }
    free(pids);
    return 0;
}

static void api_result(const remote_engine *re, const cJSON *r, sgl_result *res) {
    if (re->kind == SGL_REMOTE_ANTHROPIC) {
        sgl_strbuf sb = {0};
        const cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(r, "content")) {
            const char *t = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c, "text"));
            if (t) sgl_strbuf_puts(&sb, t);
        }
        set_text(res, sb.data);
        sgl_strbuf_free(&sb);
        res->finish = finish_from(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(r, "stop_reason")));
        const char *ss = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(r, "stop_sequence"));
        if (ss) res->stop_str = sgl_strdup(ss);
        set_usage(re->kind, r, res);
        return;
    }
    const cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r, "choices"), 0);
    if (re->kind == SGL_REMOTE_OPENAI_COMPLETIONS)
        set_text(res, cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c0, "text")));
    else
        set_text(res, cJSON_GetStringValue(
                          cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(c0, "message"), "content")));
    res->finish = finish_from(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c0, "finish_reason")));
    const cJSON *sr = cJSON_GetObjectItemCaseSensitive(c0, "stop_reason"); /* vLLM / SGLang */
    if (cJSON_IsString(sr)) res->stop_str = sgl_strdup(sr->valuestring);
    else if (cJSON_IsNumber(sr)) res->stop_token = (int32_t)sr->valuedouble;
    set_usage(re->kind, r, res);
}

/* ---- completion queue ------------------------------------------------------------------- */

static void deliver_locked(remote_engine *re, sgl_result *r) {
    if (re->n_done == re->cap_done || re->done_head + re->n_done >= re->cap_done) {
        if (re->done_head) {
            memmove(re->done, re->done + re->done_head, re->n_done * sizeof *re->done);
            re->done_head = 0;
        }
        if (re->n_done == re->cap_done) {
            size_t nc = re->cap_done ? re->cap_done * 2 : 64;
            sgl_result **nd = realloc(re->done, nc * sizeof *nd);
            if (!nd) {
                sgl_result_free(r);
                return;
            }
            re->done = nd;
            re->cap_done = nc;
        }
    }
    re->done[re->done_head + re->n_done++] = r;
    pthread_cond_broadcast(&re->cv);
}

static sgl_result *result_new(const rm_job *j);

/* A streamed piece of text (engine thread). */
static void deliver_partial(remote_engine *re, rm_job *j, const char *text, size_t len) {
    sgl_result *p = result_new(j);
    if (!p) return;
    free(p->text);
    p->text = sgl_strndup(text, len);
    p->text_len = p->text ? len : 0;
    p->partial = true;
    p->finish = SGL_FINISH_NONE;
    pthread_mutex_lock(&re->mu);
    deliver_locked(re, p);
    pthread_mutex_unlock(&re->mu);
}

static sgl_result *result_new(const rm_job *j) {
    sgl_result *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->id = j->id;
    r->user_tag = j->user_tag;
    r->kind = j->kind;
    r->stop_token = -1;
    r->text = sgl_strdup("");
    return r;
}

static sgl_result *abort_result(const rm_job *j, const char *msg) {
    sgl_result *r = result_new(j);
    if (!r) return NULL;
    r->finish = SGL_FINISH_ABORT;
    r->error = sgl_strdup(msg);
    return r;
}

static void live_remove_locked(remote_engine *re, const rm_job *j) {
    for (size_t i = 0; i < re->n_live; i++)
        if (re->live[i] == j) {
            re->live[i] = re->live[--re->n_live];
            return;
        }
}

/* Every part has settled: turn the replies into the result and queue it
 * (a forward's reader has had its answer already: the job just goes). */
static int score_phase2(remote_engine *re, rm_job *j, char *why, size_t why_len);

static void job_finish(remote_engine *re, rm_job *j) {
    sgl_result *r = NULL;
    char why[512] = "";
    if (j->fwd) {
        pthread_mutex_lock(&re->mu);
        live_remove_locked(re, j);
        pthread_mutex_unlock(&re->mu);
        job_free(j);
        return;
    }
    if (j->error) {
        r = abort_result(j, j->error);
    } else {
        r = result_new(j);
        if (r) {
            if (j->kind == SGL_REQ_SCORE) {
                int rc = score_result(j, r, why, sizeof why);
                if (rc == -2) { /* a choice parted before the window: again, from the start */
                    sgl_result_free(r);
                    j->score_back = -1;
                    for (int i = 1; i < j->n_parts; i++) {
                        cJSON_Delete(j->parts[i].reply);
                        j->parts[i].reply = NULL;
                        j->parts[i].attempts = j->parts[i].failovers = 0;
                    }
                    j->n_settled = 1;
                    if (score_phase2(re, j, why, sizeof why) == 0 && j->n_settled < j->n_parts) return;
                    j->n_settled = j->n_parts;
                    r = abort_result(j, j->error ? j->error : why);
                } else if (rc < 0) {
                    sgl_result_free(r);
                    r = abort_result(j, why);
                }
            } else if (re->kind == SGL_REMOTE_SGLANG) {
                sglang_generate_result(j->parts[0].reply, r, true);
                if (j->kind == SGL_REQ_PREFILL) r->finish = SGL_FINISH_LENGTH;
            } else {
                api_result(re, j->parts[0].reply, r);
            }
        }
    }
    pthread_mutex_lock(&re->mu);
    live_remove_locked(re, j);
    if (r) {
        re->m.requests_done++;
        re->m.prompt_tokens += r->prompt_tokens;
        re->m.cached_tokens += r->cached_tokens;
        re->m.generated_tokens += r->completion_tokens;
        re->m.hit_rate = re->m.prompt_tokens ? (double)re->m.cached_tokens / (double)re->m.prompt_tokens : 0;
        if (j->stream && r->kind == SGL_REQ_GENERATE && r->finish != SGL_FINISH_ABORT) {
            /* What the streamed partials did not carry (all of it when the
             * server did not stream), with every token, then the final result. */
            size_t sent = SGL_MIN(j->parts[0].sse_sent, r->text_len);
            sgl_result *p = result_new(j);
            if (p) {
                set_text(p, r->text + sent);
                if (r->n_tokens && (p->tokens = malloc(sizeof(int32_t) * (size_t)r->n_tokens))) {
                    memcpy(p->tokens, r->tokens, sizeof(int32_t) * (size_t)r->n_tokens);
                    p->n_tokens = r->n_tokens;
                }
                p->partial = true;
                p->finish = SGL_FINISH_NONE;
                p->prompt_tokens = r->prompt_tokens;
                p->completion_tokens = r->completion_tokens;
                p->cached_tokens = r->cached_tokens;
                deliver_locked(re, p);
            }
        }
        deliver_locked(re, r);
    }
    pthread_mutex_unlock(&re->mu);
    job_free(j);
}

/* ---- routing ---------------------------------------------------------------------------- */

static rm_endpoint *route(remote_engine *re, rm_part *p, double now) {
    if (p->job->fwd && p->job->fwd->endpoint >= 0) return &re->eps[p->job->fwd->endpoint];
    /* Usable: in rotation, and not the endpoint this part just failed on
     * while another one is in rotation. */
    rm_endpoint *avoid = NULL;
    for (int i = 0; p->last_bad && i < re->n_eps; i++)
        if (&re->eps[i] != p->last_bad && re->eps[i].down_until <= now) avoid = p->last_bad;
#define USABLE(e) ((e)->down_until <= now && (e) != avoid)
    int n_up = 0, least = -1;
    for (int i = 0; i < re->n_eps; i++) {
        rm_endpoint *e = &re->eps[i];
        if (!USABLE(e)) continue;
        n_up++;
        if (least < 0 || e->in_flight < re->eps[least].in_flight ||
            (e->in_flight == re->eps[least].in_flight &&
             remote_tree_bytes(e->tree) < remote_tree_bytes(re->eps[least].tree)))
            least = i;
    }
    if (!n_up) return NULL;
    if (re->cfg.policy == SGL_ROUTE_ROUND_ROBIN || n_up == 1) {
        for (int k = 0; k < re->n_eps; k++) {
            int i = (re->rr_next + k) % re->n_eps;
            if (!USABLE(&re->eps[i])) continue;
            re->rr_next = i + 1;
            return &re->eps[i];
        }
        return &re->eps[least];
    }
    /* prefix: the longest match (ties: the less loaded), unless that
     * endpoint is too loaded or the match too short */
    size_t len = strlen(p->route), best_match = 0;
    int best = -1;
    for (int i = 0; i < re->n_eps; i++) {
        rm_endpoint *e = &re->eps[i];
        if (!USABLE(e)) continue;
        size_t m = remote_tree_match(e->tree, p->route, len);
        if (best < 0 || m > best_match || (m == best_match && e->in_flight < re->eps[best].in_flight)) {
            best = i;
            best_match = m;
        }
    }
#undef USABLE
    bool imbalanced = re->eps[best].in_flight > re->eps[least].in_flight + re->cfg.balance_abs;
    bool weak = len && (double)best_match < re->cfg.cache_threshold * (double)len;
    return &re->eps[imbalanced || weak ? least : best];
}

/* ---- the curl loop ---------------------------------------------------------------------- */

static void deliver_partial(remote_engine *re, rm_job *j, const char *text, size_t len);

static void sse_set(char **dst, const char *s) {
    if (!s) return;
    free(*dst);
    *dst = sgl_strdup(s);
}

/* Merges the number fields of src into the object *dst. */
static void sse_merge(cJSON **dst, const cJSON *src) {
    if (!cJSON_IsObject(src)) return;
    if (!*dst) *dst = cJSON_CreateObject();
    const cJSON *f;
    cJSON_ArrayForEach(f, src) {
        if (cJSON_IsObject(f)) {
            cJSON *sub = cJSON_GetObjectItemCaseSensitive(*dst, f->string);
            if (!sub) cJSON_AddItemToObject(*dst, f->string, sub = cJSON_CreateObject());
            sse_merge(&sub, f);
        } else if (cJSON_IsNumber(f)) {
            cJSON_DeleteItemFromObjectCaseSensitive(*dst, f->string);
            cJSON_AddNumberToObject(*dst, f->string, f->valuedouble);
        }
    }
}

/* One "data:" payload of a streamed reply: appends its new text. */
static void sse_event(rm_part *p, const char *payload) {
    remote_engine *re = p->job->re;
    if (!strcmp(payload, "[DONE]")) return;
    cJSON *c = cJSON_Parse(payload);
    if (!cJSON_IsObject(c)) {
        p->sse_bad = true;
        cJSON_Delete(c);
        return;
    }
    p->sse_seen = true;
    const char *delta = NULL;
    if (re->kind == SGL_REMOTE_SGLANG) {
        const char *t = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c, "text"));
        size_t have = p->sse_text.len;
        /* cumulative text (SGLang's default) or increments */
        if (t) delta = (strlen(t) >= have && !strncmp(t, p->sse_text.data ? p->sse_text.data : "", have)) ? t + have : t;
        cJSON_Delete(p->sse_last);
        p->sse_last = c;
        c = NULL;
    } else if (re->kind == SGL_REMOTE_ANTHROPIC) {
        const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c, "type"));
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(c, "delta");
        if (type && !strcmp(type, "message_start"))
            sse_merge(&p->sse_last, cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(c, "message"), "usage"));
        else if (type && !strcmp(type, "content_block_delta"))
            delta = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(d, "text"));
        else if (type && !strcmp(type, "message_delta")) {
            sse_set(&p->sse_finish, cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(d, "stop_reason")));
            sse_set(&p->sse_stop, cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(d, "stop_sequence")));
            sse_merge(&p->sse_last, cJSON_GetObjectItemCaseSensitive(c, "usage"));
        } else if (type && !strcmp(type, "error"))
            p->sse_bad = true;
    } else {
        const cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(c, "choices"), 0);
        if (re->kind == SGL_REMOTE_OPENAI_COMPLETIONS)
            delta = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c0, "text"));
        else
            delta = cJSON_GetStringValue(
                cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(c0, "delta"), "content"));
        sse_set(&p->sse_finish, cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c0, "finish_reason")));
        const cJSON *sr = cJSON_GetObjectItemCaseSensitive(c0, "stop_reason");
        sse_set(&p->sse_stop, cJSON_GetStringValue(sr));
        sse_merge(&p->sse_last, cJSON_GetObjectItemCaseSensitive(c, "usage"));
    }
    if (delta && *delta) {
        size_t dl = strlen(delta);
        sgl_strbuf_append(&p->sse_text, delta, dl);
        deliver_partial(re, p->job, delta, dl);
        p->sse_sent += dl;
    }
    cJSON_Delete(c);
}

/* Bytes of a forwarded answer. A 2xx event stream goes to the reader as
 * it arrives (committed: no retry from then on); anything else is held
 * until it is complete, so a failed attempt can still be re-sent. */
static size_t fwd_data(rm_part *p, const char *data, size_t n) {
    struct sgl_remote_fwd *f = p->job->fwd;
    remote_engine *re = p->job->re;
    if (sgl_strbuf_append(&p->resp, data, n) < 0) return 0;
    if (!p->fwd_commit) {
        long status = 0;
        char *ct = NULL;
        curl_easy_getinfo(p->h, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(p->h, CURLINFO_CONTENT_TYPE, &ct);
        if (status < 200 || status >= 300 || !ct || strncmp(ct, "text/event-stream", 17)) return n;
        p->fwd_commit = true;
        pthread_mutex_lock(&re->mu);
        f->status = (int)status;
        free(f->ctype);
        f->ctype = sgl_strdup(ct);
        f->committed = true;
        free(f->ep_url);
        f->ep_url = sgl_strdup(p->ep->url);
        sgl_strbuf_append(&f->pending, p->resp.data, p->resp.len);
        pthread_cond_broadcast(&f->cv);
        pthread_mutex_unlock(&re->mu);
        return n;
    }
    pthread_mutex_lock(&re->mu);
    sgl_strbuf_append(&f->pending, data, n);
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&re->mu);
    return n;
}

static size_t on_data(char *data, size_t size, size_t n, void *ud) {
    rm_part *p = ud;
    if (p->job && p->job->fwd) return fwd_data(p, data, size * n);
    if (sgl_strbuf_append(&p->resp, data, size * n) < 0) return 0;
    if (!p->job || !p->job->stream) return size * n; /* (probes have no job) */
    for (;;) {
        char *line = p->resp.data + p->sse_scan;
        char *nl = memchr(line, '\n', p->resp.len - p->sse_scan);
        if (!nl) break;
        size_t ll = (size_t)(nl - line);
        if (ll && line[ll - 1] == '\r') ll--;
        if (ll >= 5 && !strncmp(line, "data:", 5)) {
            char *payload = sgl_strndup(line + 5, ll - 5);
            if (payload) sse_event(p, payload + (payload[0] == ' '));
            free(payload);
        }
        p->sse_scan = (size_t)(nl - p->resp.data) + 1;
    }
    return size * n;
}

/* The streamed reply in the shape of a plain one (so one parser serves both). */
static cJSON *sse_reply(const remote_engine *re, rm_part *p) {
    const char *text = p->sse_text.data ? p->sse_text.data : "";
    cJSON *r;
    if (re->kind == SGL_REMOTE_SGLANG) {
        r = p->sse_last ? cJSON_Duplicate(p->sse_last, true) : cJSON_CreateObject();
        cJSON_DeleteItemFromObjectCaseSensitive(r, "text");
        cJSON_AddStringToObject(r, "text", text);
        return r;
    }
    r = cJSON_CreateObject();
    if (p->sse_last) cJSON_AddItemToObject(r, "usage", cJSON_Duplicate(p->sse_last, true));
    if (re->kind == SGL_REMOTE_ANTHROPIC) {
        cJSON *content = cJSON_AddArrayToObject(r, "content");
        cJSON *b = cJSON_CreateObject();
        cJSON_AddStringToObject(b, "type", "text");
        cJSON_AddStringToObject(b, "text", text);
        cJSON_AddItemToArray(content, b);
        if (p->sse_finish) cJSON_AddStringToObject(r, "stop_reason", p->sse_finish);
        if (p->sse_stop) cJSON_AddStringToObject(r, "stop_sequence", p->sse_stop);
        return r;
    }
    cJSON *c0 = cJSON_CreateObject();
    cJSON_AddStringToObject(c0, "text", text);
    cJSON *msg = cJSON_AddObjectToObject(c0, "message");
    cJSON_AddStringToObject(msg, "content", text);
    if (p->sse_finish) cJSON_AddStringToObject(c0, "finish_reason", p->sse_finish);
    if (p->sse_stop) cJSON_AddStringToObject(c0, "stop_reason", p->sse_stop);
    cJSON_AddItemToArray(cJSON_AddArrayToObject(r, "choices"), c0);
    return r;
}

static const char *endpoint_path(const remote_engine *re) {
    switch (re->kind) {
    case SGL_REMOTE_SGLANG: return "/generate";
    case SGL_REMOTE_OPENAI_COMPLETIONS: return "/v1/completions";
    case SGL_REMOTE_ANTHROPIC: return "/v1/messages";
    default: return "/v1/chat/completions";
    }
}

static struct curl_slist *headers(const remote_engine *re) {
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    h = curl_slist_append(h, "Expect:");
    char buf[1024];
    if (re->key && re->kind == SGL_REMOTE_ANTHROPIC) {
        snprintf(buf, sizeof buf, "x-api-key: %s", re->key);
        h = curl_slist_append(h, buf);
    } else if (re->key) {
        snprintf(buf, sizeof buf, "Authorization: Bearer %s", re->key);
        h = curl_slist_append(h, buf);
    }
    if (re->kind == SGL_REMOTE_ANTHROPIC) h = curl_slist_append(h, "anthropic-version: 2023-06-01");
    return h;
}

static void easy_common(const remote_engine *re, CURL *h) {
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(re->cfg.timeout_s * 1000));
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)(re->cfg.connect_timeout_s * 1000));
}

static int part_start(remote_engine *re, rm_part *p, rm_endpoint *ep) {
    char url[2048];
    const struct sgl_remote_fwd *f = p->job->fwd;
    snprintf(url, sizeof url, "%s%s", ep->url, f ? f->path : endpoint_path(re));
    p->h = curl_easy_init();
    if (!p->h) return -1;
    if (!p->hdrs) p->hdrs = headers(re);
    sgl_strbuf_clear(&p->resp);
    p->errbuf[0] = 0;
    p->sse_scan = 0;
    p->sse_seen = p->sse_bad = false;
    sgl_strbuf_clear(&p->sse_text);
    easy_common(re, p->h);
    curl_easy_setopt(p->h, CURLOPT_URL, url);
    curl_easy_setopt(p->h, CURLOPT_HTTPHEADER, p->hdrs);
    if (f && strcmp(f->method, "POST")) {
        curl_easy_setopt(p->h, CURLOPT_HTTPGET, 1L);
    } else {
        curl_easy_setopt(p->h, CURLOPT_POSTFIELDS, p->body);
        curl_easy_setopt(p->h, CURLOPT_POSTFIELDSIZE, (long)strlen(p->body));
    }
    p->fwd_commit = false;
    curl_easy_setopt(p->h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(p->h, CURLOPT_WRITEDATA, p);
    curl_easy_setopt(p->h, CURLOPT_PRIVATE, p);
    curl_easy_setopt(p->h, CURLOPT_ERRORBUFFER, p->errbuf);
    if (curl_multi_add_handle(re->multi, p->h) != CURLM_OK) {
        curl_easy_cleanup(p->h);
        p->h = NULL;
        return -1;
    }
    if (push_ptr((void ***)&re->active, &re->n_active, &re->cap_active, p) < 0) {
        curl_multi_remove_handle(re->multi, p->h);
        curl_easy_cleanup(p->h);
        p->h = NULL;
        return -1;
    }
    p->ep = ep;
    p->attempts++;
    ep->in_flight++;
    if (re->cfg.policy == SGL_ROUTE_PREFIX) remote_tree_insert(ep->tree, p->route, strlen(p->route));
    return 0;
}

/* Takes p's attempt off the multi handle and its endpoint (thread only). */
static void part_detach(remote_engine *re, rm_part *p) {
    curl_multi_remove_handle(re->multi, p->h);
    curl_easy_cleanup(p->h);
    p->h = NULL;
    p->ep->in_flight--;
    p->ep = NULL;
    for (size_t i = 0; i < re->n_active; i++)
        if (re->active[i] == p) {
            re->active[i] = re->active[--re->n_active];
            break;
        }
}


/* The prefill of a two-phase SCORE answered: send the prompt alone and each
 * prompt + choice with logprobs from P - SCORE_BACK (thread only). Returns 0
 * or -1 with why set. */
static int score_phase2(remote_engine *re, rm_job *j, char *why, size_t why_len) {
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(j->parts[0].reply, "meta_info");
    const cJSON *pt = cJSON_GetObjectItemCaseSensitive(meta, "prompt_tokens");
    if (!cJSON_IsNumber(pt)) {
        snprintf(why, why_len, "the prefill's reply has no meta_info.prompt_tokens");
        return -1;
    }
    int32_t start = j->score_back < 0 ? 0 : SGL_MAX((int32_t)pt->valuedouble - j->score_back, 0);
    for (int i = 1; i < j->n_parts; i++) {
        rm_part *p = &j->parts[i];
        free(p->body);
        if (!(p->body = sglang_body(p->route, NULL, 0, NULL, true, start, false))) {
            snprintf(why, why_len, "out of memory");
            return -1; /* nothing queued yet */
        }
    }
    for (int i = 1; i < j->n_parts; i++)
        if (push_ptr((void ***)&re->ready, &re->n_ready, &re->cap_ready, &j->parts[i]) < 0) {
            /* the parts queued settle on their own; the others count as settled */
            if (!j->error) j->error = sgl_strdup("out of memory");
            j->n_settled += j->n_parts - i;
            break;
        }
    return 0;
}

static void part_settle(remote_engine *re, rm_part *p, const char *fatal) {
    rm_job *j = p->job;
    if (fatal && !j->error) j->error = sgl_strdup(fatal);
    if (j->pre && p == &j->parts[0]) {
        char why[256];
        j->n_settled++;
        if (!j->error && score_phase2(re, j, why, sizeof why) == 0) {
            if (j->n_settled == j->n_parts) job_finish(re, j); /* nothing could be queued */
            return;
        }
        if (!j->error) j->error = sgl_strdup(why);
        j->n_settled = j->n_parts - 1; /* the second phase never went out */
    }
    if (++j->n_settled == j->n_parts) job_finish(re, j);
}

/* The token counts a forwarded answer reports (by its route's protocol;
 * a streamed one by its events); returns whether it gave cached tokens. */
static bool fwd_usage(const rm_part *p, double *pt, double *ct, double *gt) {
    const char *path = p->job->fwd->path;
    sgl_remote_kind kind = !strcmp(path, "/generate") ? SGL_REMOTE_SGLANG
                           : !strcmp(path, "/v1/messages") ? SGL_REMOTE_ANTHROPIC
                           : !strncmp(path, "/v1/", 4) ? SGL_REMOTE_OPENAI_COMPLETIONS : SGL_REMOTE_OPENAI;
    *pt = *ct = *gt = 0;
    if (kind == SGL_REMOTE_OPENAI || !p->resp.len) return false;
    cJSON *r = NULL;
    if (p->fwd_commit) { /* events: the last sglang chunk, or the usage merged */
        cJSON *usage = NULL;
        for (const char *line = p->resp.data, *end = p->resp.data + p->resp.len, *nl; line < end; line = nl + 1) {
            nl = memchr(line, '\n', (size_t)(end - line));
            if (!nl) nl = end;
            if (nl - line < 6 || strncmp(line, "data:", 5)) continue;
            cJSON *c = cJSON_ParseWithLength(line + 5, (size_t)(nl - line - 5));
            if (!cJSON_IsObject(c)) {
                cJSON_Delete(c);
                continue;
            }
            if (kind == SGL_REMOTE_SGLANG) {
                cJSON_Delete(r);
                r = c;
                continue;
            }
            sse_merge(&usage, cJSON_GetObjectItemCaseSensitive(c, "usage"));
            sse_merge(&usage, cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(c, "message"), "usage"));
            cJSON_Delete(c);
        }
        if (usage) {
            cJSON_Delete(r);
            r = cJSON_CreateObject();
            cJSON_AddItemToObject(r, "usage", usage);
        }
    } else {
        r = cJSON_ParseWithLength(p->resp.data, p->resp.len);
    }
    bool reported = false;
    if (cJSON_IsArray(r)) { /* a batch: one answer per prompt */
        const cJSON *x;
        cJSON_ArrayForEach(x, r) {
            double a, b, c;
            reported |= reply_usage(kind, x, &a, &b, &c);
            *pt += a;
            *ct += b;
            *gt += c;
        }
    } else if (r) {
        reported = reply_usage(kind, r, pt, ct, gt);
    }
    cJSON_Delete(r);
    return reported;
}

static void part_done(remote_engine *re, rm_part *p, CURLcode cc) {
    rm_endpoint *ep = p->ep;
    long status = 0;
    double retry_after = -1;
    curl_easy_getinfo(p->h, CURLINFO_RESPONSE_CODE, &status);
    char *ct_info = NULL, ctype[256];
    curl_easy_getinfo(p->h, CURLINFO_CONTENT_TYPE, &ct_info);
    snprintf(ctype, sizeof ctype, "%s", ct_info ? ct_info : "application/json");
#if LIBCURL_VERSION_NUM >= 0x074200
    curl_off_t ra = 0;
    if (curl_easy_getinfo(p->h, CURLINFO_RETRY_AFTER, &ra) == CURLE_OK && ra > 0) retry_after = (double)ra;
#endif
    part_detach(re, p);
    double now = sgl_now();
    char why[1024] = "";
    bool retry = false, ep_fault = false, fwd_ok = false;
    cJSON *reply = NULL;
    struct sgl_remote_fwd *f = p->job->fwd;
    if (cc != CURLE_OK) {
        snprintf(why, sizeof why, "%s: %s", ep->url, p->errbuf[0] ? p->errbuf : curl_easy_strerror(cc));
        retry = ep_fault = true;
        if (p->fwd_commit) { /* the stream broke off after bytes went out */
            snprintf(why, sizeof why, "the answer from %s broke off: %s", ep->url,
                     p->errbuf[0] ? p->errbuf : curl_easy_strerror(cc));
            retry = false;
        }
    } else if (status == 429 || status >= 500) {
        snprintf(why, sizeof why, "%s: HTTP %ld: %.200s", ep->url, status, p->resp.data ? p->resp.data : "");
        retry = true;
        ep_fault = status != 429;
    } else if (f) { /* any other answer is the client's */
        fwd_ok = true;
    } else if (status >= 400 || status < 200) {
        snprintf(why, sizeof why, "%s%s: HTTP %ld: %.300s", ep->url, endpoint_path(re), status,
                 p->resp.data ? p->resp.data : "");
    } else {
        if (p->sse_seen || p->sse_bad)
            reply = p->sse_bad ? NULL : sse_reply(re, p);
        else
            reply = cJSON_ParseWithLength(p->resp.data ? p->resp.data : "", p->resp.len);
        const char *problem = reply ? reply_problem(re, p->job, reply, p->job->pre && p == &p->job->parts[0])
                                    : p->sse_bad ? "a streamed chunk is not valid JSON or reports an error"
                                                 : "the reply is not valid JSON";
        if (problem) {
            snprintf(why, sizeof why, "%s: malformed reply: %s (%.80s)", ep->url, problem,
                     p->resp.data ? p->resp.data : "");
            cJSON_Delete(reply);
            reply = NULL;
            retry = ep_fault = true;
        }
    }
    double pt = 0, ct = 0, gt = 0;
    bool reports = reply ? reply_usage(re->kind, reply, &pt, &ct, &gt)
                         : fwd_ok && status >= 200 && status < 300 && fwd_usage(p, &pt, &ct, &gt);
    pthread_mutex_lock(&re->mu);
    if (reply || fwd_ok) {
        ep->st.requests++;
        ep->fail_streak = 0;
        if (reports) ep->st.reports_cached = true;
        ep->st.prompt_tokens += (int64_t)pt;
        ep->st.cached_tokens += (int64_t)ct;
        ep->st.completion_tokens += (int64_t)gt;
    } else {
        ep->st.failures++;
    }
    if (fwd_ok) { /* the whole answer, or the end of a committed stream */
        if (!f->committed) {
            f->status = (int)status;
            f->ctype = sgl_strdup(ctype);
            f->committed = true;
            free(f->ep_url);
            f->ep_url = sgl_strdup(ep->url);
            sgl_strbuf_append(&f->pending, p->resp.data ? p->resp.data : "", p->resp.len);
        }
        f->prompt_tokens = pt;
        f->cached_tokens = ct;
        f->completion_tokens = gt;
        f->done = true;
        pthread_cond_broadcast(&f->cv);
    }
    pthread_mutex_unlock(&re->mu);
    if (reply || fwd_ok) {
        p->reply = reply;
        part_settle(re, p, NULL);
        return;
    }
    free(p->last_error);
    p->last_error = sgl_strdup(why);
    if (ep_fault && re->n_eps > 1) { /* alone, an endpoint is only backed off from */
        ep->fail_streak++;
        int k = SGL_MIN(ep->fail_streak - 1, 5);
        ep->down_until = now + re->cfg.down_s * (double)(1 << k);
        p->last_bad = ep;
    }
    bool other_up = false;
    for (int i = 0; ep_fault && i < re->n_eps; i++) other_up |= &re->eps[i] != ep && re->eps[i].down_until <= now;
    if (retry && other_up && p->failovers < re->n_eps - 1) p->failovers++;
    else if (retry && other_up) other_up = false;
    if (p->sse_sent) retry = false; /* text already went out as partials */
    if (f && f->endpoint >= 0) retry = false; /* aimed at one endpoint: its answer */
    if (retry && p->attempts <= re->cfg.max_retries + p->failovers && !p->job->error) {
        pthread_mutex_lock(&re->mu);
        ep->st.retries++;
        pthread_mutex_unlock(&re->mu);
        double delay = re->cfg.backoff_s * (double)(1 << SGL_MIN(p->attempts - 1, 10));
        if (delay > 5) delay = 5;
        if (retry_after > 0) delay = SGL_MIN(retry_after, 30.0);
        /* an endpoint fault with another endpoint up: re-send there now */
        p->not_before = other_up ? now : now + delay;
        if (push_ptr((void ***)&re->ready, &re->n_ready, &re->cap_ready, p) == 0) return;
    }
    char msg[1200];
    if (retry)
        snprintf(msg, sizeof msg, "request failed after %d attempt%s: %s", p->attempts, p->attempts == 1 ? "" : "s",
                 why);
    else
        snprintf(msg, sizeof msg, "request failed: %s", why);
    part_settle(re, p, msg);
}

/* Stops job j (thread only): its waiting parts are dropped, its attempts in
 * flight taken off the multi handle (their connections closed), and it
 * settles as ABORT "cancelled". */
static void job_cancel(remote_engine *re, rm_job *j) {
    if (j->cancelled) return;
    j->cancelled = true;
    if (!j->error) j->error = sgl_strdup("cancelled");
    rm_part **stop = calloc((size_t)j->n_parts, sizeof *stop);
    if (!stop) return; /* the job still settles when its attempts end */
    int n = 0;
    size_t keep = 0;
    for (size_t i = 0; i < re->n_ready; i++) {
        if (re->ready[i]->job == j) stop[n++] = re->ready[i];
        else re->ready[keep++] = re->ready[i];
    }
    re->n_ready = keep;
    for (size_t i = 0; i < re->n_active;) {
        rm_part *p = re->active[i];
        if (p->job != j) {
            i++;
            continue;
        }
        part_detach(re, p); /* moves the last active part into slot i */
        stop[n++] = p;
    }
    /* the last settle frees j (and stop's parts with it) */
    for (int k = 0; k < n; k++) part_settle(re, stop[k], NULL);
    free(stop);
}

static void *loop(void *arg) {
    remote_engine *re = arg;
    for (;;) {
        pthread_mutex_lock(&re->mu);
        bool stop = re->stop;
        for (size_t i = 0; i < re->n_incoming; i++)
            push_ptr((void ***)&re->ready, &re->n_ready, &re->cap_ready, re->incoming[i]);
        re->n_incoming = 0;
        while (!stop && re->n_cancels) {
            uint64_t id = re->cancels[--re->n_cancels];
            rm_job *j = NULL;
            for (size_t i = 0; i < re->n_live && !j; i++)
                if (re->live[i]->id == id) j = re->live[i];
            /* j stays valid unlocked: only this thread finishes jobs */
            pthread_mutex_unlock(&re->mu);
            if (j) job_cancel(re, j);
            pthread_mutex_lock(&re->mu);
        }
        pthread_mutex_unlock(&re->mu);
        if (stop) break;
        double now = sgl_now(), next = now + 0.1;
        size_t keep = 0;
        for (size_t i = 0; i < re->n_ready; i++) {
            rm_part *p = re->ready[i];
            if (p->job->error) { /* a sibling failed: nothing more to send */
                part_settle(re, p, NULL);
                continue;
            }
            rm_endpoint *ep = p->not_before <= now ? route(re, p, now) : NULL;
            if (ep && part_start(re, p, ep) == 0) continue;
            if (!ep && p->not_before <= now) { /* every endpoint is out: wait for the first back */
                double back = now + 1;
                for (int k = 0; k < re->n_eps; k++) back = SGL_MIN(back, re->eps[k].down_until);
                p->not_before = back;
                p->last_bad = NULL;
            }
            if (p->not_before < next) next = p->not_before;
            re->ready[keep++] = p;
        }
        re->n_ready = keep;
        int running = 0;
        curl_multi_perform(re->multi, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(re->multi, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            rm_part *p = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&p);
            part_done(re, p, msg->data.result);
        }
        pthread_mutex_lock(&re->mu);
        re->m.running = running;
        re->m.waiting = (int32_t)re->n_ready;
        for (int i = 0; i < re->n_eps; i++) {
            re->snap[i].in_flight = re->eps[i].in_flight;
            re->snap[i].up = re->eps[i].down_until <= sgl_now();
        }
        bool more = re->n_incoming > 0;
        pthread_mutex_unlock(&re->mu);
        if (more) continue;
        int wait_ms = (int)((next - sgl_now()) * 1000);
        if (wait_ms < 0) wait_ms = 0;
        if (wait_ms > 100) wait_ms = 100;
        if (re->n_ready && keep == 0) wait_ms = 0;
        curl_multi_poll(re->multi, NULL, 0, wait_ms, NULL);
    }
    return NULL;
}

/* ---- engine ops ------------------------------------------------------------------------- */

static void remote_caps(void *ctx, sgl_engine_caps *c) {
    remote_engine *re = ctx;
    memset(c, 0, sizeof *c);
    switch (re->kind) {
    case SGL_REMOTE_SGLANG:
        c->raw_prompt = c->logprobs = c->score = c->constraints = true;
        c->sampling = SGL_CAP_ALL_SAMPLING;
        break;
    case SGL_REMOTE_OPENAI_COMPLETIONS:
        c->raw_prompt = true;
        c->score = re->echo_logprobs;
        c->sampling = SGL_CAP_FREQ_PRESENCE_PENALTY | SGL_CAP_SEED;
        c->max_stop = 4;
        break;
    case SGL_REMOTE_ANTHROPIC:
        c->assistant_prefill = true;
        c->sampling = SGL_CAP_TOP_K;
        break;
    default:
        c->sampling = SGL_CAP_FREQ_PRESENCE_PENALTY | SGL_CAP_SEED;
        c->max_stop = 4;
        break;
    }
}

static int job_queue(remote_engine *re, rm_job *j, sgl_error *err);

static int remote_submit(void *ctx, const sgl_request *req, uint64_t id, sgl_error *err) {
    remote_engine *re = ctx;
    sgl_engine_caps caps;
    remote_caps(re, &caps);
    if (req->n_images > 0) {
        if (re->kind != SGL_REMOTE_OPENAI_CHAT && re->kind != SGL_REMOTE_ANTHROPIC)
            return sgl_error_set(err,
                                 "backend %s cannot take images (%s): images go to chat APIs only "
                                 "(openai-chat:URL, or openai:URL when the server has no completions, "
                                 "and anthropic:URL)",
                                 sgl_remote_kind_name(re->kind), req->images[0]);
        if (!req->image_turns || !req->image_offsets)
            return sgl_error_set(err, "backend %s: the request does not say where its images (%s) sit",
                                 sgl_remote_kind_name(re->kind), req->images[0]);
        for (int32_t k = 0; k < req->n_images; k++)
            if (req->image_turns[k] < 0 || req->image_turns[k] >= req->n_messages)
                return sgl_error_set(err, "backend %s takes images inside chat turns only (image '%s')",
                                     sgl_remote_kind_name(re->kind), req->images[k]);
    }
    if (req->kind == SGL_REQ_GENERATE) {
        const sgl_sampling_params *p = &req->params;
        if (p->token_healing || p->n_choices > 0)
            return sgl_error_set(err, "backend %s: %s is not carried to remote engines", sgl_remote_kind_name(re->kind),
                                 p->token_healing ? "token_healing" : "a choices constraint");
        if ((p->regex || p->json_schema || p->grammar) && !caps.constraints)
            return sgl_error_set(err, "backend %s has no constrained decoding (regex / json_schema)",
                                 sgl_remote_kind_name(re->kind));
        if ((p->return_logprob || p->logprob_start_len >= 0) && !caps.logprobs)
            return sgl_error_set(err, "backend %s returns no token logprobs", sgl_remote_kind_name(re->kind));
        if (caps.max_stop && p->n_stop > caps.max_stop)
            return sgl_error_set(err, "backend %s takes at most %d stop strings, got %d",
                                 sgl_remote_kind_name(re->kind), caps.max_stop, p->n_stop);
    }
    rm_job *j = calloc(1, sizeof *j);
    if (!j) return sgl_error_set(err, "out of memory");
    j->id = id;
    j->user_tag = req->user_tag;
    j->kind = req->kind;
    j->stream = req->stream && req->kind == SGL_REQ_GENERATE;
    j->re = re;
    if (req->kind == SGL_REQ_PREFILL && re->kind != SGL_REMOTE_SGLANG) {
        /* No prefill over these APIs: it completes at once (a hint only). */
        sgl_result *r = result_new(j);
        if (r) r->finish = SGL_FINISH_LENGTH;
        pthread_mutex_lock(&re->mu);
        if (r) deliver_locked(re, r);
        pthread_mutex_unlock(&re->mu);
        job_free(j);
        return 0;
    }
    if (build_parts(re, req, j, err) < 0) {
        job_free(j);
        return -1;
    }
    return job_queue(re, j, err);
}

/* Hands j's parts to the engine thread and registers j as live. Returns 0,
 * or -1 with err set (j freed). */
static int job_queue(remote_engine *re, rm_job *j, sgl_error *err) {
    pthread_mutex_lock(&re->mu);
    size_t n_before = re->n_incoming;
    int rc = push_ptr((void ***)&re->live, &re->n_live, &re->cap_live, j);
    for (int i = 0; rc == 0 && i < j->n_initial; i++)
        rc = push_ptr((void ***)&re->incoming, &re->n_incoming, &re->cap_incoming, &j->parts[i]);
    if (rc < 0) {
        re->n_incoming = n_before;
        live_remove_locked(re, j);
        pthread_mutex_unlock(&re->mu);
        job_free(j);
        return sgl_error_set(err, "out of memory");
    }
    pthread_mutex_unlock(&re->mu);
    curl_multi_wakeup(re->multi);
    return 0;
}

static int remote_cancel(void *ctx, uint64_t id) {
    remote_engine *re = ctx;
    pthread_mutex_lock(&re->mu);
    bool live = false;
    for (size_t i = 0; i < re->n_live && !live; i++) live = re->live[i]->id == id && !re->live[i]->fwd;
    int rc = live ? push_u64(&re->cancels, &re->n_cancels, &re->cap_cancels, id) : -1;
    pthread_mutex_unlock(&re->mu);
    if (rc == 0) curl_multi_wakeup(re->multi);
    return rc;
}

static sgl_result *remote_wait(void *ctx, double timeout_s) {
    remote_engine *re = ctx;
    pthread_mutex_lock(&re->mu);
    if (!re->n_done && timeout_s != 0) {
        if (timeout_s < 0) {
            while (!re->n_done) pthread_cond_wait(&re->cv, &re->mu);
        } else {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            double t = (double)ts.tv_sec + ts.tv_nsec * 1e-9 + timeout_s;
            ts.tv_sec = (time_t)t;
            ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
            while (!re->n_done)
                if (pthread_cond_timedwait(&re->cv, &re->mu, &ts) != 0) break;
        }
    }
    sgl_result *r = NULL;
    if (re->n_done) {
        r = re->done[re->done_head++];
        re->n_done--;
        if (!re->n_done) re->done_head = 0;
    }
    pthread_mutex_unlock(&re->mu);
    return r;
}

static void remote_metrics(void *ctx, sgl_engine_metrics *out) {
    remote_engine *re = ctx;
    pthread_mutex_lock(&re->mu);
    *out = re->m;
    pthread_mutex_unlock(&re->mu);
}

static void remote_free(void *ctx) {
    remote_engine *re = ctx;
    if (!re) return;
    if (re->th_started) {
        pthread_mutex_lock(&re->mu);
        re->stop = true;
        pthread_mutex_unlock(&re->mu);
        curl_multi_wakeup(re->multi);
        pthread_join(re->th, NULL);
    }
    /* Drop what is still pending: every part belongs to a job; free each job once. */
    rm_job **jobs = NULL;
    size_t nj = 0, cj = 0;
    rm_part **lists[2] = {re->incoming, re->ready};
    size_t ns[2] = {re->n_incoming, re->n_ready};
    for (int l = 0; l < 2; l++)
        for (size_t i = 0; i < ns[l]; i++) {
            bool seen = false;
            for (size_t k = 0; k < nj; k++) seen |= jobs[k] == lists[l][i]->job;
            if (!seen) push_ptr((void ***)&jobs, &nj, &cj, lists[l][i]->job);
        }
    for (size_t i = 0; i < re->n_active; i++) {
        rm_part *p = re->active[i];
        curl_multi_remove_handle(re->multi, p->h);
        curl_easy_cleanup(p->h);
        p->h = NULL;
        bool seen = false;
        for (size_t k = 0; k < nj; k++) seen |= jobs[k] == p->job;
        if (!seen) push_ptr((void ***)&jobs, &nj, &cj, p->job);
    }
    free(re->active);
    for (size_t k = 0; k < nj; k++) job_free(jobs[k]);
    free(jobs);
    if (re->multi) curl_multi_cleanup(re->multi);
    for (size_t i = 0; i < re->n_done; i++) sgl_result_free(re->done[re->done_head + i]);
    free(re->done);
    free(re->live);
    free(re->cancels);
    free(re->incoming);
    free(re->ready);
    for (int i = 0; i < re->n_eps; i++) {
        free(re->eps[i].url);
        remote_tree_free(re->eps[i].tree);
    }
    free(re->eps);
    free(re->snap);
    free(re->model);
    free(re->key);
    pthread_mutex_destroy(&re->mu);
    pthread_cond_destroy(&re->cv);
    free(re);
}

static long probe(const remote_engine *re, const char *url, const char *body, sgl_strbuf *out);

/* POST /flush_cache on every endpoint (SGLang's and `sglc serve`'s route).
 * Returns the cached tokens freed when the servers say (else 0), -1 with
 * err set when one refused or did not answer, -2 on protocols without it. */
static int64_t remote_flush(void *ctx, sgl_error *err) {
    remote_engine *re = ctx;
    if (re->kind != SGL_REMOTE_SGLANG) {
        sgl_error_set(err, "backend %s cannot flush its cache", sgl_remote_kind_name(re->kind));
        return -2;
    }
    int64_t freed = 0;
    for (int i = 0; i < re->n_eps; i++) {
        char url[2048];
        snprintf(url, sizeof url, "%s/flush_cache", re->eps[i].url);
        sgl_strbuf body = {0};
        long status = probe(re, url, "", &body);
        const char *nl = body.data ? strchr(body.data, '\n') : NULL;
        if (status == 200 && nl) freed += strtoll(nl + 1, NULL, 10);
        if (status == 0)
            sgl_error_set(err, "%s: cache not flushed: no answer from the server", url);
        else if (status != 200)
            sgl_error_set(err, "%s: cache not flushed: HTTP %ld: %.200s", url, status, body.data ? body.data : "");
        sgl_strbuf_free(&body);
        if (status != 200) return -1;
    }
    return freed;
}

static const sgl_engine_ops remote_ops = {
    .name = "remote",
    .submit = remote_submit,
    .wait = remote_wait,
    .metrics = remote_metrics,
    .free = remote_free,
    .caps = remote_caps,
    .cancel = remote_cancel,
    .flush_cache = remote_flush,
};

/* ---- forwarding (a router in front of workers) ------------------------------------------ */

sgl_remote_fwd *sgl_remote_forward(sgl_engine *e, const char *method, const char *path, const char *body,
                                   size_t body_len, const char *route_key, int endpoint, sgl_error *err) {
    remote_engine *re = sgl_engine_impl(e, &remote_ops);
    if (!re) {
        sgl_error_set(err, "forwarding needs a remote engine");
        return NULL;
    }
    if (endpoint >= re->n_eps) {
        sgl_error_set(err, "no endpoint %d", endpoint);
        return NULL;
    }
    struct sgl_remote_fwd *f = calloc(1, sizeof *f);
    rm_job *j = calloc(1, sizeof *j);
    if (!f || !j || !(j->parts = calloc(1, sizeof *j->parts))) {
        free(f);
        if (j) free(j->parts);
        free(j);
        sgl_error_set(err, "out of memory");
        return NULL;
    }
    pthread_cond_init(&f->cv, NULL);
    f->re = re;
    f->refs = 2; /* the reader and the job */
    f->endpoint = endpoint;
    f->method = sgl_strdup(method);
    f->path = sgl_strdup(path);
    pthread_mutex_lock(&re->mu);
    f->id = j->id = UINT64_MAX - re->next_fwd_id++; /* apart from sgl_engine ids */
    pthread_mutex_unlock(&re->mu);
    j->re = re;
    j->kind = SGL_REQ_GENERATE;
    j->fwd = f;
    j->n_parts = j->n_initial = 1;
    j->parts[0].job = j;
    j->parts[0].body = body ? sgl_strndup(body, body_len) : sgl_strdup("");
    j->parts[0].route = sgl_strdup(route_key ? route_key : "");
    if (!f->method || !f->path || !j->parts[0].body || !j->parts[0].route) {
        job_free(j); /* lets go of the job's reference */
        fwd_destroy(f);
        sgl_error_set(err, "out of memory");
        return NULL;
    }
    if (job_queue(re, j, err) < 0) {
        fwd_destroy(f); /* job_queue freed the job, which let go of one reference */
        return NULL;
    }
    return f;
}

int sgl_remote_fwd_next(sgl_remote_fwd *f, double timeout_s, sgl_strbuf *out, int *status, const char **ctype,
                        const char **error) {
    remote_engine *re = f->re;
    pthread_mutex_lock(&re->mu);
    double until = sgl_now() + timeout_s;
    while (!f->done && !(f->committed && f->pending.len) && (timeout_s < 0 || sgl_now() < until)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double t = (double)ts.tv_sec + ts.tv_nsec * 1e-9 + (timeout_s < 0 ? 1.0 : SGL_MIN(until - sgl_now(), 1.0));
        ts.tv_sec = (time_t)t;
        ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
        pthread_cond_timedwait(&f->cv, &re->mu, &ts);
    }
    int rc = f->done ? 2 : f->committed ? 1 : 0;
    if (rc && f->pending.len) {
        sgl_strbuf_append(out, f->pending.data, f->pending.len);
        sgl_strbuf_clear(&f->pending);
    }
    *status = f->status;
    *ctype = f->ctype;
    *error = rc == 2 ? f->error : NULL;
    pthread_mutex_unlock(&re->mu);
    return rc;
}

const char *sgl_remote_fwd_usage(sgl_remote_fwd *f, int64_t *prompt_tokens, int64_t *cached_tokens,
                                 int64_t *completion_tokens) {
    pthread_mutex_lock(&f->re->mu);
    *prompt_tokens = (int64_t)f->prompt_tokens;
    *cached_tokens = (int64_t)f->cached_tokens;
    *completion_tokens = (int64_t)f->completion_tokens;
    const char *url = f->ep_url;
    pthread_mutex_unlock(&f->re->mu);
    return url;
}

void sgl_remote_fwd_free(sgl_remote_fwd *f) {
    if (!f) return;
    remote_engine *re = f->re;
    pthread_mutex_lock(&re->mu);
    bool running = f->refs > 1 && !f->done;
    if (running) push_u64(&re->cancels, &re->n_cancels, &re->cap_cancels, f->id);
    bool last = --f->refs == 0;
    pthread_mutex_unlock(&re->mu);
    if (running) curl_multi_wakeup(re->multi);
    if (last) fwd_destroy(f);
}

int sgl_remote_stats(const sgl_engine *e, sgl_remote_endpoint_stats *out, int max) {
    remote_engine *re = sgl_engine_impl(e, &remote_ops);
    if (!re) return -1;
    pthread_mutex_lock(&re->mu);
    for (int i = 0; i < re->n_eps && i < max; i++) {
        out[i] = re->eps[i].st; /* counters: updated under mu */
        out[i].in_flight = re->snap[i].in_flight;
        out[i].up = re->snap[i].up;
        out[i].url = re->eps[i].url;
    }
    pthread_mutex_unlock(&re->mu);
    return re->n_eps;
}

sgl_remote_kind sgl_remote_engine_kind(const sgl_engine *e) {
    remote_engine *re = sgl_engine_impl(e, &remote_ops);
    return re ? re->kind : SGL_REMOTE_SGLANG;
}

/* ---- start-up probes (synchronous) ------------------------------------------------------ */

/* GET or POST url; returns the HTTP status (0: no answer) and the body. */
static long probe(const remote_engine *re, const char *url, const char *body, sgl_strbuf *out) {
    CURL *h = curl_easy_init();
    if (!h) return 0;
    struct curl_slist *hd = headers(re);
    rm_part tmp;
    memset(&tmp, 0, sizeof tmp);
    easy_common(re, h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
    if (body) curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &tmp);
    long status = 0;
    if (curl_easy_perform(h) == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    curl_slist_free_all(hd);
    *out = tmp.resp;
    return status;
}

static int openai_probe(remote_engine *re, bool need_mode, sgl_error *err) {
    char url[2048];
    for (int i = 0; i < re->n_eps; i++) {
        sgl_strbuf b = {0};
        if (!re->model) {
            snprintf(url, sizeof url, "%s/v1/models", re->eps[i].url);
            long st = probe(re, url, NULL, &b);
            cJSON *o = st == 200 ? cJSON_ParseWithLength(b.data ? b.data : "", b.len) : NULL;
            const char *id = cJSON_GetStringValue(
                cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(o, "data"), 0), "id"));
            if (id) re->model = sgl_strdup(id);
            cJSON_Delete(o);
            sgl_strbuf_free(&b);
            if (!st) continue;
            if (!re->model)
                return sgl_error_set(err, "%s: GET /v1/models names no model: give one with --api-model NAME",
                                     re->eps[i].url);
        }
        if (!need_mode) return 0;
        snprintf(url, sizeof url, "%s/v1/completions", re->eps[i].url);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "model", re->model);
        cJSON_AddStringToObject(o, "prompt", "Hi there");
        cJSON_AddNumberToObject(o, "max_tokens", 1);
        cJSON_AddTrueToObject(o, "echo");
        cJSON_AddNumberToObject(o, "logprobs", 1);
        char *body = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        long st = probe(re, url, body, &b);
        free(body);
        if (st >= 200 && st < 300) { /* does it echo the prompt's logprobs (vLLM does)? */
            cJSON *r = cJSON_ParseWithLength(b.data ? b.data : "", b.len);
            const cJSON *lp = cJSON_GetObjectItemCaseSensitive(
                cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r, "choices"), 0), "logprobs");
            const cJSON *tlp = cJSON_GetObjectItemCaseSensitive(lp, "token_logprobs");
            const cJSON *u = cJSON_GetObjectItemCaseSensitive(r, "usage");
            re->echo_logprobs = cJSON_IsArray(tlp) && cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(lp, "tokens")) &&
                                num_or(u, "prompt_tokens", 0) >= 1 &&
                                cJSON_GetArraySize(tlp) >= (int)num_or(u, "prompt_tokens", 0);
            cJSON_Delete(r);
        }
        sgl_strbuf_free(&b);
        if (!st) continue;
        re->kind = (st == 404 || st == 405 || st == 501) ? SGL_REMOTE_OPENAI_CHAT : SGL_REMOTE_OPENAI_COMPLETIONS;
        return 0;
    }
    return sgl_error_set(err, "openai backend: no endpoint answered (first: %s)", re->eps[0].url);
}

static void global_init(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

sgl_engine *sgl_engine_remote_new(const sgl_remote_config *cfg, sgl_error *err) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, global_init);
    if (!cfg || cfg->n_specs < 1) {
        sgl_error_set(err, "no backend given");
        return NULL;
    }
    remote_engine *re = calloc(1, sizeof *re);
    if (!re) {
        sgl_error_set(err, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&re->mu, NULL);
    pthread_cond_init(&re->cv, NULL);
    re->cfg = *cfg;
    re->cfg.specs = NULL;
    re->eps = calloc((size_t)cfg->n_specs, sizeof *re->eps);
    re->snap = calloc((size_t)cfg->n_specs, sizeof *re->snap);
    if (!re->eps || !re->snap) {
        sgl_error_set(err, "out of memory");
        goto fail;
    }
    for (int i = 0; i < cfg->n_specs; i++) {
        sgl_remote_kind k;
        const char *url;
        if (sgl_remote_parse_spec(cfg->specs[i], &k, &url, err) < 0) goto fail;
        if (i && k != re->kind) {
            sgl_error_set(err, "backends %s and %s: every endpoint must speak the same protocol", cfg->specs[0],
                          cfg->specs[i]);
            goto fail;
        }
        re->kind = k;
        size_t ul = strlen(url);
        while (ul && url[ul - 1] == '/') ul--;
        re->eps[i].url = sgl_strndup(url, ul);
        re->eps[i].tree = remote_tree_new(0);
        re->n_eps = i + 1;
        if (!re->eps[i].url || !re->eps[i].tree) {
            sgl_error_set(err, "out of memory");
            goto fail;
        }
    }
    if (cfg->api_model) re->model = sgl_strdup(cfg->api_model);
    const char *kenv = cfg->api_key_env ? cfg->api_key_env
                                        : (re->kind == SGL_REMOTE_ANTHROPIC ? "ANTHROPIC_API_KEY" : "OPENAI_API_KEY");
    const char *key = getenv(kenv);
    if (key && *key && re->kind != SGL_REMOTE_SGLANG) re->key = sgl_strdup(key);
    if (cfg->api_key_env && !re->key) {
        sgl_error_set(err, "--api-key-env %s: the variable is not set", cfg->api_key_env);
        goto fail;
    }
    if (re->kind == SGL_REMOTE_ANTHROPIC && !re->model) {
        sgl_error_set(err, "anthropic backend: give the model with --api-model NAME");
        goto fail;
    }
    if ((re->kind == SGL_REMOTE_OPENAI || ((re->kind == SGL_REMOTE_OPENAI_CHAT ||
                                            re->kind == SGL_REMOTE_OPENAI_COMPLETIONS) && !re->model)) &&
        openai_probe(re, re->kind == SGL_REMOTE_OPENAI, err) < 0)
        goto fail;
    re->multi = curl_multi_init();
    if (!re->multi) {
        sgl_error_set(err, "curl_multi_init failed");
        goto fail;
    }
    curl_multi_setopt(re->multi, CURLMOPT_MAX_HOST_CONNECTIONS, 1024L);
    if (pthread_create(&re->th, NULL, loop, re) != 0) {
        sgl_error_set(err, "cannot start the remote engine thread");
        goto fail;
    }
    re->th_started = true;
    sgl_engine *e = sgl_engine_new(&remote_ops, re);
    if (!e) {
        sgl_error_set(err, "out of memory");
        goto fail;
    }
    return e;
fail:
    remote_free(re);
    return NULL;
}
