/* sampler: turns one logits row into the next token, and computes logprobs.
 *
 * Functions over a logits row + a sampler_params (per request, constant) +
 * a sampler_state (per request: token counts for the penalties, an own PRNG,
 * scratch). Nothing is shared between requests, so a request's draws depend
 * only on its seed and its own tokens, never on what else runs.
 *
 * Sampling order (as SGLang): penalties on the raw logits, then greedy argmax
 * when temperature <= 0; otherwise logits / temperature, softmax, and the
 * candidates are the tokens sorted by probability (ties: lower id first) cut
 * to the shortest of three prefixes: top_k tokens, the top_p nucleus
 * (cumulative probability of the full distribution reaching top_p), and the
 * tokens with p >= min_p * p_max. One uniform draw picks from the kept
 * tokens renormalised.
 */
#ifndef SGL_SAMPLER_H
#define SGL_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>

#include "util/util.h"

typedef struct sampler_params {
    float temperature;        /* <= 0: greedy (argmax, lowest id on ties) */
    int32_t top_k;            /* <= 0: off */
    float top_p;              /* >= 1: off */
    float min_p;              /* <= 0: off */
    float repetition_penalty; /* 1: off. Positive logits of seen tokens are divided by it,
                                 negative ones multiplied (CTRL / HF / SGLang) */
    float frequency_penalty;  /* 0: off. logit -= frequency_penalty * count */
    float presence_penalty;   /* 0: off. logit -= presence_penalty if count > 0 */
    bool penalize_prompt;     /* counts include the prompt tokens (else generated only) */
    uint64_t seed;            /* seeds the request's PRNG (sampler_state_new) */
} sampler_params;

/* Greedy, no filters, no penalties, seed 0. */
sampler_params sampler_params_default(void);

typedef struct sampler_state sampler_state;

/* Returns a fresh state for a vocabulary of `vocab` tokens whose PRNG starts
 * from `seed` (caller frees with sampler_state_free), or NULL with err set. */
sampler_state *sampler_state_new(int32_t vocab, uint64_t seed, sgl_error *err);
void sampler_state_free(sampler_state *s);
/* Records prompt tokens (used by the penalties when penalize_prompt) and a
 * generated token (always counted). Ids out of range are ignored. */
void sampler_state_add_prompt(sampler_state *s, const int32_t *tokens, int32_t n);
void sampler_state_accept(sampler_state *s, int32_t token);
/* Count of `token` among the generated (and prompt, when with_prompt) tokens. */
int32_t sampler_state_count(const sampler_state *s, int32_t token, bool with_prompt);

/* Picks the next token from logits [vocab] (not modified). Greedy draws
 * consume no randomness. Does not record the token: call
 * sampler_state_accept with the token actually appended. */
int32_t sampler_sample(sampler_state *s, const sampler_params *p, const float *logits);

/* The candidate set sampler_sample would draw from (non-greedy path):
 * returns the number kept and sets *ids / *probs to arrays (owned by s, valid
 * until the next call on s) of the kept tokens (in descending probability when
 * top_k, top_p or min_p is active, else in id order) and their renormalised
 * probabilities. With temperature <= 0 the set is the
 * argmax alone. */
int32_t sampler_candidates(sampler_state *s, const sampler_params *p, const float *logits,
                           const int32_t **ids, const float **probs);

/* Applies the penalties of p to logits[vocab] in place. */
void sampler_apply_penalties(const sampler_state *s, const sampler_params *p, float *logits);

/* Returns the index of the largest value (lowest index on ties; NaN never wins). */
int32_t sampler_argmax(const float *x, int32_t n);

/* Next uniform double in [0, 1) from the state's PRNG (xoshiro256**). */
double sampler_state_uniform(sampler_state *s);

/* Log-softmax of the raw logits [vocab]: returns log p(token) (token may be
 * -1 when only the alternatives are wanted; then returns 0), and writes the
 * top_n most likely tokens (descending, lower id first on ties) and their
 * log-probabilities into top_ids / top_lps (caller-owned, top_n entries; may
 * be NULL when top_n is 0). Returns how many alternatives were written in
 * *n_top (min(top_n, vocab)) when n_top is non-NULL. */
float sampler_logprobs(const float *logits, int32_t vocab, int32_t token, int32_t top_n,
                       int32_t *top_ids, float *top_lps, int32_t *n_top);

#endif
