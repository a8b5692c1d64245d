/* link: the VM's binding to an engine (runtime/engine.h). Streams queue
 * their requests here; the scheduler flushes the queue when every fiber is
 * parked, so the requests of many fibers reach the engine together and
 * batch. Results come back through vm_link_wait, which routes each to the
 * stream (or fork prefill) that asked for it.
 *
 * The link also carries what streams need from the model: the chat template
 * (roles), and the wake callback through which streams make parked fibers
 * runnable again.
 */
#ifndef SGL_VM_LINK_H
#define SGL_VM_LINK_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "runtime/chat_template.h"
#include "runtime/engine.h"
#include "vm/stream.h"

typedef void (*vm_wake_fn)(void *ctx, void *fiber);

typedef struct vm_link_stats {
    int64_t generate_requests, score_requests, prefill_requests;
    int64_t prompt_tokens, completion_tokens, cached_tokens;
    int64_t flushes;        /* times queued requests were handed to the engine */
    int64_t max_batch;      /* most requests handed over in one flush */
    int64_t spec_requests;  /* speculative requests (each covering several gens) */
    int64_t spec_gens;      /* gens filled from speculative replies */
} vm_link_stats;

typedef struct vm_link vm_link;

/* engine and ct are borrowed and must outlive the link (ct may be NULL:
 * roles then use the "plain" family). Returns NULL on OOM. */
vm_link *vm_link_new(sgl_engine *engine, const chat_template *ct);
/* Drops queued requests and forgets in-flight ones (their streams are
 * released; results arriving later are freed by whoever frees the engine). */
void vm_link_free(vm_link *l);
void vm_link_set_waker(vm_link *l, vm_wake_fn fn, void *ctx);
void vm_link_wake(vm_link *l, void *fiber);
const chat_template *vm_link_template(vm_link *l);
sgl_engine *vm_link_engine(vm_link *l);
/* The prompt unconditional select scores are computed after (SGLang scores
 * the choices alone; engines that refuse an empty prompt get the model's
 * BOS text here). Copied; NULL or "" = empty prompt (the default). */
void vm_link_set_uncond_prompt(vm_link *l, const char *text);

/* The run's base seed for requests without an explicit one: fresh per link
 * (from getrandom, or the clock where it is missing) unless set. */
uint64_t vm_link_run_seed(const vm_link *l);
void vm_link_set_run_seed(vm_link *l, uint64_t seed);
/* API speculative execution (SGLang's num_api_spec_tokens): on an engine
 * that takes chat turns only, a gen that opens a run of gens and template
 * text up to the end of an assistant turn asks for `tokens` tokens with no
 * stop, and the stream fills the following gens from the reply (see
 * vm_stream_spec_*). 0: off (the default). */
void vm_link_set_api_spec(vm_link *l, int32_t tokens);
/* The token budget when speculative execution applies to this engine, else 0. */
int32_t vm_link_api_spec(const vm_link *l);

/* Writes one line per request submitted and per result routed to out
 * (NULL: off): id, kind, the variable and call site, the prompt's tail,
 * then finish reason, token counts and the text. */
void vm_link_set_trace(vm_link *l, FILE *out);

/* Benchmark ablations: at most max_inflight requests in flight (0: no
 * limit; the rest stay queued, in order, for later flushes); no_prefill:
 * queued PREFILLs count as done at once and are never sent. */
void vm_link_set_limits(vm_link *l, int max_inflight, bool no_prefill);

/* Queues the request(s) of st's head GEN op (retains st). Returns 0 or -1. */
int vm_link_queue_gen(vm_link *l, vm_stream *st);
/* Queues a PREFILL (retains pf). */
int vm_link_queue_prefill(vm_link *l, vm_prefill *pf);
/* Submits everything queued. A request the engine refuses fails its stream
 * (prefills count as done); one whose stream failed meanwhile, or whose
 * instance is dead (vm_group.dead), is dropped unsent, the stream failing
 * with the instance's error. Returns the number submitted. */
int vm_link_flush(vm_link *l);
/* Interrupts everything: queued requests are dropped (their streams fail
 * with msg; prefills count as done), those in flight are cancelled through
 * sgl_engine_cancel and their results, which the engine still delivers,
 * are awaited for at most wait_s seconds and routed as usual (a cancelled
 * GEN fails its stream). Returns the number still in flight afterwards
 * (engines that cannot cancel); their results are routed by a later wait. */
int vm_link_interrupt(vm_link *l, const char *msg, double wait_s);
/* Cancels the requests in flight for streams (and fork prefills) of group
 * g, which has just been marked dead; their results still arrive and are
 * routed as usual. What g still has queued is dropped by the next flush.
 * Returns the number cancelled. */
int vm_link_cancel_group(vm_link *l, const vm_group *g);
/* Requests queued or in flight. */
int vm_link_outstanding(const vm_link *l);
/* Waits up to timeout_s (< 0: no limit) for one result, then also takes all
 * that are ready, routing each. Returns the number routed (0 on timeout or
 * when nothing is in flight). */
int vm_link_wait(vm_link *l, double timeout_s);
void vm_link_stats_get(const vm_link *l, vm_link_stats *out);

#endif
