/* attention: the CPU backend's attention over the f16 KV pool (internal to
 * kernels/cpu; backend_cpu.c calls it from its kb_ops.attention entry).
 *
 * Determinism contract (kernels/backend.h): the output row of a query
 * depends only on that query and its keys, never on the batch around it,
 * on how new tokens are split into work items or chunks, or on the number
 * of threads.
 */
#ifndef SGL_KERN_CPU_ATTENTION_H
#define SGL_KERN_CPU_ATTENTION_H

#include <stdint.h>

#include "kernels/backend.h"
#include "kernels/kernels.h"

typedef struct cpu_att cpu_att;

/* Returns the attention state for a pool of n_threads threads (scratch per
 * thread, grown on demand), or NULL when out of memory. Free with
 * cpu_att_free (NULL is a no-op). */
cpu_att *cpu_att_new(int n_threads);
void cpu_att_free(cpu_att *a);

/* Takes the batch of the forward that starts (kept until the next begin;
 * the caller owns it): splits it into work items and reserves scratch.
 * Returns 0, or -1 with err set (out of memory). */
int cpu_att_begin(cpu_att *a, const kb_batch *b, sgl_error *err);

/* out[row][head] = softmax(q k^T / sqrt(head_dim)) v for every row of the
 * batch given to cpu_att_begin, keys = K/V of layer `layer` at the slots of
 * the row's sequence up to its position. q and out are [n_rows][n_heads *
 * head_dim] (caller-owned). Out of memory: out is filled with NaN, which the
 * forward's finite probes report. */
void cpu_att_run(cpu_att *a, kern_pool *pool, const kb_kv *kv, int layer,
                 const kb_att_shape *sh, const float *q, float *out);

#endif
