/* recorder: an engine (runtime/engine.h) that forwards every request to an
 * inner engine and watches the stream of requests go by, for `sglc bench`:
 *   - counts requests by kind and sums the results' prompt, cached and
 *     completion tokens (the measured hit rate);
 *   - tokenizes each prompt as the local engine does (or takes bytes as
 *     tokens, as the fake engine does) and feeds a bench_ideal with it, and
 *     with prompt + output when a GENERATE finishes: the best hit rate
 *     possible for exactly this stream.
 * The recorder owns the inner engine (freed with it). Single-threaded use:
 * one caller submits and waits, as the VM does.
 */
#ifndef SGL_BENCH_RECORDER_H
#define SGL_BENCH_RECORDER_H

#include <stdint.h>

#include "cli/bench/ideal.h"
#include "runtime/engine.h"
#include "runtime/tokenizer.h"

typedef struct bench_rec_stats {
    int64_t generate, score, prefill;   /* requests submitted */
    int64_t failed;                      /* results with finish ABORT */
    int64_t prompt_tokens, cached_tokens, completion_tokens; /* from the results */
    int64_t ideal_prompt, ideal_cached;  /* the same stream through a perfect cache */
} bench_rec_stats;

typedef struct bench_recorder bench_recorder;

/* Wraps inner (owned from now on, also on failure). tok: the tokenizer the
 * inner engine uses (borrowed; must outlive the recorder), or NULL when
 * the inner engine counts bytes as tokens (the fake engine). Returns the
 * wrapping engine (caller frees with sgl_engine_free) and, in *rec, the
 * recorder to read (valid until then); NULL on OOM. */
sgl_engine *bench_recorder_new(sgl_engine *inner, const sgl_tokenizer *tok, bench_recorder **rec);
void bench_recorder_stats(const bench_recorder *rec, bench_rec_stats *out);

#endif
