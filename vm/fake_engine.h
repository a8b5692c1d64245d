/* fake_engine: a deterministic scripted engine behind the runtime/engine.h
 * API, so VM tests (and `sglc run --fake`) need no model.
 *
 * Tokens are characters: prompt_tokens = prompt length in bytes, a reply is
 * cut at max_new_tokens bytes (finish "length") or before the first stop
 * string (finish "stop", stop_str set); otherwise finish "stop" with
 * stop_token 0 (EOS). cached_tokens = the longest prefix this prompt shares
 * with any earlier prompt (PREFILL included), like a radix cache that never
 * evicts.
 *
 * GENERATE reply: from the rules. A rule matches when its `when` text occurs
 * in the prompt; the rule whose (last) match ends latest in the prompt wins
 * (ties: the longer `when`, then the earlier rule). No match: the default reply ("ok"). A rule with
 * abort_msg makes the request fail with that message. The reply "{sample}"
 * stands for sampled text: "s" + 16 hex digits that depend only on the
 * request's seed when temperature > 0, "greedy" otherwise.
 *
 * Constraints (regex, json_schema, grammar, choices; dtype arrives as a
 * regex) are compiled at submit with the real constraint compiler, so a bad
 * one is refused there with the compiler's message, as the local engine
 * does. The reply then follows the rule's text byte by byte while the
 * constraint allows it; where it does not (or the text runs out), the reply
 * ends if the constraint accepts, else takes the first allowed byte in the
 * order " } ] ) digits a-z A-Z, then the other bytes ascending (closing
 * first, so replies end soon). So the reply always matches the constraint
 * (or is a prefix of a match when max_new_tokens cuts it).
 *
 * SCORE: each choice is scored byte by byte, logprob -1.0 per byte, or -0.1
 * per byte when the choice equals the reply the rules give for the prompt.
 * A custom scorer can replace this.
 *
 * A streamed GENERATE (req->stream) delivers its reply first as partial
 * results of 2 bytes each, then the final result.
 *
 * Results are delivered in submission order (or reversed with
 * fake->reverse, to test out-of-order completion). The fake records every
 * request (kind + prompt) and the size of each batch (requests submitted
 * between two waits).
 */
#ifndef SGL_VM_FAKE_ENGINE_H
#define SGL_VM_FAKE_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "runtime/engine.h"

typedef struct vm_fake_rule {
    const char *when;      /* copied */
    const char *reply;     /* copied */
    const char *abort_msg; /* copied; non-NULL: fail the request */
} vm_fake_rule;

/* Fills logprobs[0..n) for choice given prompt (unconditional: prompt ""). */
typedef void (*vm_fake_scorer)(void *ctx, const char *prompt, const char *choice, float *logprobs,
                               int32_t n);

typedef struct vm_fake {
    vm_fake_rule *rules;
    uint32_t n_rules;
    const char *default_reply; /* static or caller-owned; default "ok" */
    bool reverse;
    bool refuse_prefill;       /* submit of a PREFILL fails (an engine that refuses it) */
    vm_fake_scorer scorer;
    void *scorer_ctx;
    /* log */
    char **log;                /* "G|S|P:" + prompt, one per request */
    uint32_t n_log;
    int32_t *batches;          /* requests submitted between consecutive waits */
    uint32_t n_batches;
    int32_t since_wait;
    /* internal */
    char **seen;
    uint32_t n_seen;
    sgl_result **ready;        /* [ready_head, n_ready) not yet delivered */
    uint32_t ready_head, n_ready, cap_ready;
    uint64_t next_id;
    struct cons_vocab *vocab;  /* bytes 1..255 as tokens, 0 = EOS (built on first use) */
} vm_fake;

/* Creates a fake engine. *fake_out (non-NULL) receives the fake's state,
 * owned by the engine and valid until sgl_engine_free. NULL on OOM. */
sgl_engine *vm_fake_engine_new(vm_fake **fake_out);
/* Adds a rule (strings copied). Returns 0 or -1. */
int vm_fake_add_rule(vm_fake *f, const char *when, const char *reply, const char *abort_msg);

#endif
