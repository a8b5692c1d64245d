/* remote: engines behind runtime/engine.h that run requests on inference
 * servers over HTTP, so SGL programs run unchanged against an SGLang or
 * vLLM fleet, a llama.cpp server, `sglc serve` or a hosted API.
 *
 * Backends (one protocol per engine, any number of endpoints):
 *   sglang:URL     SGLang's native POST /generate: every sampling field,
 *                  regex / json_schema passed through; SCORE as prefill-only
 *                  requests with return_logprob + logprob_start_len (input_ids
 *                  when the request carries token ids); PREFILL as
 *                  max_new_tokens 0.
 *   openai:URL     /v1/completions when the server offers it (probed at
 *                  start; SCORE with echo + logprobs when the probe shows
 *                  the server echoes prompt logprobs), else /v1/chat/completions; openai-completions:URL
 *                  and openai-chat:URL skip the probe. Key from
 *                  $OPENAI_API_KEY (or the variable cfg.api_key_env names).
 *   anthropic:URL  /v1/messages, key from $ANTHROPIC_API_KEY.
 * Each backend declares its capabilities (sgl_engine_caps); submit refuses a
 * request it cannot carry with a message saying why. Images (image(path) in
 * a user turn) go to the chat APIs only: OpenAI as data-URL image_url parts,
 * Anthropic as base64 image blocks, each at its place in the turn's text.
 *
 * One thread drives libcurl's multi interface, so hundreds of requests are
 * in flight at once. Each HTTP attempt has a timeout; 429, 5xx, connection
 * loss, timeouts and malformed replies are retried (at most max_retries
 * times per request, with exponential backoff; an endpoint that failed is
 * taken out of rotation for a while and its requests go to the others).
 * Other 4xx answers fail the request at once with the server's message.
 * A streamed GENERATE asks for server-sent events and hands each piece on
 * as a partial result as it arrives (no retry once text went out).
 *
 * sgl_engine_cancel stops a request: waiting parts are dropped, attempts in
 * flight are taken off the multi handle (their connections closed, so the
 * server sees the client go), and it completes as ABORT "cancelled".
 *
 * Routing over several endpoints: `prefix` (default) sends a request to the
 * endpoint whose approximate radix tree (prefix_tree.h) holds the longest
 * prefix of its prompt, unless that endpoint has more than balance_abs
 * requests in flight beyond the least loaded one, or the match covers less
 * than cache_threshold of the prompt; then to the least loaded. Or
 * `round_robin`.
 */
#ifndef SGL_REMOTE_REMOTE_H
#define SGL_REMOTE_REMOTE_H

#include <stdbool.h>
#include <stdint.h>

#include "runtime/engine.h"
#include "util/util.h"

typedef enum sgl_remote_kind {
    SGL_REMOTE_SGLANG,
    SGL_REMOTE_OPENAI,             /* probe: completions if offered, else chat */
    SGL_REMOTE_OPENAI_COMPLETIONS,
    SGL_REMOTE_OPENAI_CHAT,
    SGL_REMOTE_ANTHROPIC,
} sgl_remote_kind;

typedef enum sgl_route_policy { SGL_ROUTE_PREFIX, SGL_ROUTE_ROUND_ROBIN } sgl_route_policy;

typedef struct sgl_remote_config {
    const char *const *specs;  /* [n_specs] "sglang:URL" ...; one protocol for all */
    int n_specs;
    const char *api_model;     /* "model" of OpenAI/Anthropic requests; NULL: the first
                                  of GET /v1/models (OpenAI), required for Anthropic */
    const char *api_key_env;   /* variable holding the key; NULL: OPENAI_API_KEY or
                                  ANTHROPIC_API_KEY (no key: no auth header) */
    double timeout_s;          /* per HTTP attempt (default 120) */
    double connect_timeout_s;  /* default 5 */
    int max_retries;           /* per request after the first attempt (default 3) */
    double backoff_s;          /* first retry delay, doubled each time, capped at 5 s
                                  (default 0.1) */
    double down_s;             /* a failed endpoint stays out this long, doubled per
                                  failure in a row up to 32x (default 1) */
    sgl_route_policy policy;
    int balance_abs;           /* prefix routing: load gap that overrides the match (32) */
    double cache_threshold;    /* prefix routing: smallest useful match fraction (0.5) */
} sgl_remote_config;

sgl_remote_config sgl_remote_config_default(void);

/* Splits "kind:URL". Returns 0 with *kind and *url (pointing into spec), or
 * -1 with err set naming the accepted kinds. */
int sgl_remote_parse_spec(const char *spec, sgl_remote_kind *kind, const char **url, sgl_error *err);
const char *sgl_remote_kind_name(sgl_remote_kind k);
/* "prefix" (or "cache_aware", SGLang's router's name) / "round_robin" ->
 * policy; 0, or -1 when unknown. */
int sgl_route_policy_parse(const char *name, sgl_route_policy *out);

/* Starts a remote engine over cfg's endpoints (OpenAI without a model name
 * or with the `openai:` probe contacts the first reachable endpoint now).
 * Returns the engine (caller frees with sgl_engine_free) or NULL with err
 * set. cfg and its strings are copied. */
sgl_engine *sgl_engine_remote_new(const sgl_remote_config *cfg, sgl_error *err);

/* Per-endpoint figures since start. */
typedef struct sgl_remote_endpoint_stats {
    const char *url;           /* owned by the engine */
    int64_t requests;          /* HTTP requests answered successfully */
    int64_t failures;          /* attempts that failed (each may have been retried) */
    int64_t retries;           /* attempts re-sent after a failure here */
    int64_t prompt_tokens, cached_tokens, completion_tokens;
    bool reports_cached;       /* the server reported cached tokens at least once */
    bool up;                   /* in rotation now */
    int in_flight;
} sgl_remote_endpoint_stats;

/* Fills out[0..max) and returns the number of endpoints, or -1 when e is
 * not a remote engine. */
int sgl_remote_stats(const sgl_engine *e, sgl_remote_endpoint_stats *out, int max);
/* The protocol in use after probing (OPENAI resolves to one of its two). */
sgl_remote_kind sgl_remote_engine_kind(const sgl_engine *e);

/* ---- forwarding: `sglc serve --backend ...` as a router in front of workers ---- */

/* One HTTP request passed on as is. */
typedef struct sgl_remote_fwd sgl_remote_fwd;

/* Sends `method path` with body (body_len bytes; NULL for none) unchanged to
 * an endpoint of the remote engine e: the one the routing policy picks for
 * route_key (the request's prompt text, "" when it has none; it feeds that
 * endpoint's prefix tree), or endpoint itself when >= 0 (one attempt, no
 * failover). Until the answer is committed to the reader, failures are
 * handled as for engine requests (429 / 5xx / connection loss / timeouts
 * retried with backoff, a failing endpoint taken out and the request
 * re-sent to another). Committed: a 2xx text/event-stream answer at its
 * first bytes (passed on as they arrive, never re-sent after), any other
 * answer (4xx included) once complete. Counts in sgl_remote_stats like
 * engine requests, with the token figures the answer reports. Returns the
 * handle (free with sgl_remote_fwd_free) or NULL with err set. */
sgl_remote_fwd *sgl_remote_forward(sgl_engine *e, const char *method, const char *path, const char *body,
                                   size_t body_len, const char *route_key, int endpoint, sgl_error *err);
/* Waits up to timeout_s (< 0: no limit) for news of f. Returns 0 when none
 * came; 1 when the answer is committed and may go on: *status and *ctype
 * (borrowed, valid until free) set, the new bytes appended to out (maybe
 * none); 2 when it is over: the last bytes appended, *error (borrowed) NULL
 * on success, else why no answer came (*status 0) or why a committed
 * stream broke off. */
int sgl_remote_fwd_next(sgl_remote_fwd *f, double timeout_s, sgl_strbuf *out, int *status, const char **ctype,
                        const char **error);
/* After next returned 2: the token counts the answer reported (0 when it
 * gave none). Returns the URL of the endpoint that answered (borrowed, valid
 * until free), or NULL. */
const char *sgl_remote_fwd_usage(sgl_remote_fwd *f, int64_t *prompt_tokens, int64_t *cached_tokens,
                                 int64_t *completion_tokens);
/* Cancels f if it is still running (its connection to the worker is
 * closed) and lets go of it. NULL ok. */
void sgl_remote_fwd_free(sgl_remote_fwd *f);

#endif
