/* sampler: penalties, greedy / temperature / top-k / top-p / min-p sampling
 * with a per-request PRNG, and logprobs (see sampler.h). */
#include "runtime/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct sampler_state {
    int32_t vocab;
    uint64_t rng[4];      /* xoshiro256** state */
    int32_t *gen_count;   /* [vocab] generated-token counts (lazily allocated) */
    int32_t *prompt_count;/* [vocab] prompt-token counts (lazily allocated) */
    float *work;          /* [vocab] penalised / scaled logits, then probabilities */
    int32_t *ids;         /* [vocab] candidate ids */
    float *probs;         /* [vocab] candidate probabilities, parallel to ids */
};

sampler_params sampler_params_default(void) {
    sampler_params p = {0};
    p.temperature = 0.0f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.repetition_penalty = 1.0f;
    return p;
}

/* ---- PRNG: splitmix64 seeding, xoshiro256** ----------------------------------- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(uint64_t *s) {
    uint64_t r = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

double sampler_state_uniform(sampler_state *s) {
    return (double)(rng_next(s->rng) >> 11) * 0x1.0p-53;
}

/* ---- state ------------------------------------------------------------------ */

sampler_state *sampler_state_new(int32_t vocab, uint64_t seed, sgl_error *err) {
    if (vocab < 1) {
        sgl_error_set(err, "sampler: invalid vocabulary size %d", vocab);
        return NULL;
    }
    sampler_state *s = calloc(1, sizeof *s);
    if (!s) {
        sgl_error_set(err, "sampler: out of memory");
        return NULL;
    }
    s->vocab = vocab;
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&x);
    return s;
}

void sampler_state_free(sampler_state *s) {
    if (!s) return;
    free(s->gen_count);
    free(s->prompt_count);
    free(s->work);
    free(s->ids);
    free(s->probs);
    free(s);
}

/* The scratch buffers; on allocation failure the sampler degrades to greedy
 * over the raw logits rather than failing the request. */
static bool ensure_scratch(sampler_state *s) {
    if (s->work) return true;
    s->work = malloc(sizeof(float) * (size_t)s->vocab);
    s->ids = malloc(sizeof(int32_t) * (size_t)s->vocab);
    s->probs = malloc(sizeof(float) * (size_t)s->vocab);
    if (s->work && s->ids && s->probs) return true;
    free(s->work);
    free(s->ids);
    free(s->probs);
    s->work = NULL;
    s->ids = NULL;
    s->probs = NULL;
    return false;
}

void sampler_state_add_prompt(sampler_state *s, const int32_t *tokens, int32_t n) {
    if (!s->prompt_count) s->prompt_count = calloc((size_t)s->vocab, sizeof(int32_t));
    if (!s->prompt_count) return;
    for (int32_t i = 0; i < n; i++)
        if (tokens[i] >= 0 && tokens[i] < s->vocab) s->prompt_count[tokens[i]]++;
}

void sampler_state_accept(sampler_state *s, int32_t token) {
    if (!s->gen_count) s->gen_count = calloc((size_t)s->vocab, sizeof(int32_t));
    if (!s->gen_count || token < 0 || token >= s->vocab) return;
    s->gen_count[token]++;
}

int32_t sampler_state_count(const sampler_state *s, int32_t token, bool with_prompt) {
    if (token < 0 || token >= s->vocab) return 0;
    int32_t c = s->gen_count ? s->gen_count[token] : 0;
    if (with_prompt && s->prompt_count) c += s->prompt_count[token];
    return c;
}

/* ---- penalties ------------------------------------------------------------------ */

static bool has_penalties(const sampler_params *p) {
    return p->repetition_penalty != 1.0f || p->frequency_penalty != 0.0f ||
           p->presence_penalty != 0.0f;
}

void sampler_apply_penalties(const sampler_state *s, const sampler_params *p, float *logits) {
    if (!has_penalties(p)) return;
    const int32_t *g = s->gen_count;
    const int32_t *pc = p->penalize_prompt ? s->prompt_count : NULL;
    if (!g && !pc) return;
    float rp = p->repetition_penalty > 0 ? p->repetition_penalty : 1.0f;
    for (int32_t i = 0; i < s->vocab; i++) {
        int32_t c = (g ? g[i] : 0) + (pc ? pc[i] : 0);
        if (c == 0) continue;
        float x = logits[i];
        if (rp != 1.0f) x = x > 0 ? x / rp : x * rp;
        x -= p->frequency_penalty * (float)c + p->presence_penalty;
        logits[i] = x;
    }
}

/* ---- selection ------------------------------------------------------------------ */

int32_t sampler_argmax(const float *x, int32_t n) {
    int32_t best = 0;
    float bv = -INFINITY;
    bool found = false;
    for (int32_t i = 0; i < n; i++) {
        if (isnan(x[i])) continue;
        if (!found || x[i] > bv) {
            bv = x[i];
            best = i;
            found = true;
        }
    }
    return best;
}

/* Candidate order: probability descending, then id ascending: a total order,
 * so the kept set never depends on the sort algorithm. */
static inline bool cand_before(float pa, int32_t ia, float pb, int32_t ib) {
    return pa > pb || (pa == pb && ia < ib);
}

static void cand_swap(int32_t *ids, float *pr, int64_t a, int64_t b) {
    int32_t ti = ids[a];
    ids[a] = ids[b];
    ids[b] = ti;
    float tp = pr[a];
    pr[a] = pr[b];
    pr[b] = tp;
}

/* Sorts ids/pr[lo, hi) by cand_before, only as far as needed for the first
 * `need` positions to be final (quicksort that skips the right side when the
 * left side already covers `need`). */
static void cand_sort(int32_t *ids, float *pr, int64_t lo, int64_t hi, int64_t need) {
    if (lo >= need) return;
    while (hi - lo > 16 && lo < need) {
        int64_t mid = lo + (hi - lo) / 2;
        /* median of three as pivot, moved to hi-1 */
        if (cand_before(pr[mid], ids[mid], pr[lo], ids[lo])) cand_swap(ids, pr, mid, lo);
        if (cand_before(pr[hi - 1], ids[hi - 1], pr[lo], ids[lo])) cand_swap(ids, pr, hi - 1, lo);
        if (cand_before(pr[mid], ids[mid], pr[hi - 1], ids[hi - 1])) cand_swap(ids, pr, mid, hi - 1);
        float pp = pr[hi - 1];
        int32_t pi = ids[hi - 1];
        int64_t store = lo;
        for (int64_t i = lo; i < hi - 1; i++)
            if (cand_before(pr[i], ids[i], pp, pi)) cand_swap(ids, pr, i, store++);
        cand_swap(ids, pr, store, hi - 1);
        /* [lo, store) before pivot, store = pivot, (store, hi) after */
        if (store - lo < hi - store - 1) {
            cand_sort(ids, pr, lo, store, need);
            if (store + 1 >= need) return;
            lo = store + 1;
        } else {
            if (store + 1 < need) cand_sort(ids, pr, store + 1, hi, need);
            hi = store;
        }
    }
    for (int64_t i = lo + 1; i < hi; i++) /* insertion sort */
        for (int64_t j = i; j > lo && cand_before(pr[j], ids[j], pr[j - 1], ids[j - 1]); j--)
            cand_swap(ids, pr, j, j - 1);
}

/* Fills s->ids / s->probs with the kept candidates (renormalised); returns
 * their count. Requires scratch and temperature > 0. */
static int32_t build_candidates(sampler_state *s, const sampler_params *p, const float *logits) {
    int32_t V = s->vocab;
    float *w = s->work;
    memcpy(w, logits, sizeof(float) * (size_t)V);
    sampler_apply_penalties(s, p, w);
    float inv_t = 1.0f / p->temperature;
    float mx = -INFINITY;
    for (int32_t i = 0; i < V; i++) {
        float x = isnan(w[i]) ? -INFINITY : w[i] * inv_t;
        w[i] = x;
        if (x > mx) mx = x;
    }
    if (mx == -INFINITY) { /* nothing finite: fall back to token 0 */
        s->ids[0] = 0;
        s->probs[0] = 1.0f;
        return 1;
    }
    double sum = 0.0;
    for (int32_t i = 0; i < V; i++) {
        float e = expf(w[i] - mx);
        w[i] = e;
        sum += e;
    }
    float inv_sum = (float)(1.0 / sum);
    /* Probabilities below thr can never be kept: min_p cuts at min_p * p_max
     * (p_max = 1 / sum), and when top_p < 1 the tokens under
     * (1 - top_p) / V together hold less than 1 - top_p, so the nucleus lies
     * among the rest. */
    float thr = 0.0f;
    bool use_p = p->top_p > 0.0f && p->top_p < 1.0f;
    if (p->min_p > 0.0f) thr = p->min_p * inv_sum;
    if (use_p) thr = fmaxf(thr, (1.0f - p->top_p) / (float)V * 0.5f);
    int64_t n = 0;
    for (int32_t i = 0; i < V; i++) {
        float pr = w[i] * inv_sum;
        if (pr >= thr && pr > 0.0f) {
            s->ids[n] = i;
            s->probs[n] = pr;
            n++;
        }
    }
    if (n == 0) { /* min_p rounding corner: keep the argmax */
        s->ids[0] = sampler_argmax(w, V);
        s->probs[0] = 1.0f;
        return 1;
    }
    int64_t keep = n;
    if (p->top_k > 0 && p->top_k < keep) keep = p->top_k;
    if (use_p || keep < n) {
        cand_sort(s->ids, s->probs, 0, n, keep);
        if (use_p) {
            double cum = 0.0;
            for (int64_t i = 0; i < keep; i++) {
                cum += s->probs[i];
                if (cum >= p->top_p) {
                    keep = i + 1;
                    break;
                }
            }
        }
    } else if (p->min_p > 0.0f) {
        cand_sort(s->ids, s->probs, 0, n, n);
    }
    double ks = 0.0;
    for (int64_t i = 0; i < keep; i++) ks += s->probs[i];
    float inv_ks = (float)(1.0 / ks);
    for (int64_t i = 0; i < keep; i++) s->probs[i] *= inv_ks;
    return (int32_t)keep;
}

int32_t sampler_candidates(sampler_state *s, const sampler_params *p, const float *logits,
                           const int32_t **ids, const float **probs) {
    if (!ensure_scratch(s)) {
        *ids = NULL;
        *probs = NULL;
        return 0;
    }
    if (p->temperature <= 0.0f || p->top_k == 1) {
        memcpy(s->work, logits, sizeof(float) * (size_t)s->vocab);
        sampler_apply_penalties(s, p, s->work);
        s->ids[0] = sampler_argmax(s->work, s->vocab);
        s->probs[0] = 1.0f;
        *ids = s->ids;
        *probs = s->probs;
        return 1;
    }
    int32_t n = build_candidates(s, p, logits);
    *ids = s->ids;
    *probs = s->probs;
    return n;
}

int32_t sampler_sample(sampler_state *s, const sampler_params *p, const float *logits) {
    if (!ensure_scratch(s)) return sampler_argmax(logits, s->vocab);
    if (p->temperature <= 0.0f || p->top_k == 1) {
        if (!has_penalties(p)) return sampler_argmax(logits, s->vocab);
        memcpy(s->work, logits, sizeof(float) * (size_t)s->vocab);
        sampler_apply_penalties(s, p, s->work);
        return sampler_argmax(s->work, s->vocab);
    }
    int32_t n = build_candidates(s, p, logits);
    double u = sampler_state_uniform(s);
    double cum = 0.0;
    for (int32_t i = 0; i < n; i++) {
        cum += s->probs[i];
        if (u < cum) return s->ids[i];
    }
    return s->ids[n - 1]; /* u within rounding of 1 */
}

/* ---- logprobs ------------------------------------------------------------------ */

float sampler_logprobs(const float *logits, int32_t vocab, int32_t token, int32_t top_n,
                       int32_t *top_ids, float *top_lps, int32_t *n_top) {
    float mx = -INFINITY;
    for (int32_t i = 0; i < vocab; i++)
        if (logits[i] > mx) mx = logits[i];
    double sum = 0.0;
    for (int32_t i = 0; i < vocab; i++) sum += exp((double)logits[i] - mx);
    double lse = (double)mx + log(sum);
    int32_t k = top_n < 0 ? 0 : SGL_MIN(top_n, vocab);
    /* Keep the k best by insertion into a small sorted list. */
    int32_t have = 0;
    for (int32_t i = 0; i < vocab && k > 0; i++) {
        float x = logits[i];
        if (isnan(x)) continue;
        if (have == k && !(x > top_lps[have - 1])) continue;
        int32_t j = have < k ? have++ : k - 1;
        while (j > 0 && x > top_lps[j - 1]) {
            top_lps[j] = top_lps[j - 1];
            top_ids[j] = top_ids[j - 1];
            j--;
        }
        top_lps[j] = x;
        top_ids[j] = i;
    }
    for (int32_t i = 0; i < have; i++) top_lps[i] = (float)((double)top_lps[i] - lse);
    if (n_top) *n_top = have;
    if (token < 0 || token >= vocab) return 0.0f;
    return (float)((double)logits[token] - lse);
}
