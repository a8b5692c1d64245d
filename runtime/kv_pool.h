/* kv_pool: the token-granular KV store shared by running requests and the
 * radix cache. A slot holds one token's K and V for every layer. Slots are
 * handed out from a free list; there are no per-request contiguous buffers.
 *
 * Storage: k and v are f16, laid out [layer][slot][kv_dim] where
 * kv_dim = n_kv_heads * head_dim. A pool made with kv_dim = 0 has no storage
 * and only does slot accounting (used by radix-cache tests).
 *
 * Accounting invariant: every slot is either free (in the free list exactly
 * once) or owned by exactly one holder (a request or a radix-tree node).
 */
#ifndef SGL_KV_POOL_H
#define SGL_KV_POOL_H

#include <stdint.h>

#include "util/util.h"

typedef struct kv_pool {
    int32_t n_slots;
    int32_t n_layers;
    int32_t kv_dim;
    uint16_t *k;         /* [n_layers][n_slots][kv_dim] f16, or NULL when kv_dim == 0 */
    uint16_t *v;
    int32_t *free_list;  /* free slot ids; the top n_free entries are valid */
    int32_t n_free;
    uint8_t *is_free;    /* [n_slots] 1 if free: catches double frees */
    void *dev;           /* a device backend's copy of the storage (runtime/model.c), or NULL */
    void (*dev_free)(void *dev); /* frees dev; called by kv_pool_free */
} kv_pool;

/* Returns a pool of n_slots token slots (caller frees with kv_pool_free), or
 * NULL with err set (e.g. not enough memory). */
kv_pool *kv_pool_new(int32_t n_slots, int32_t n_layers, int32_t kv_dim, sgl_error *err);
void kv_pool_free(kv_pool *p);
/* Takes n slots, writing their ids to out. All or nothing: returns 0, or -1
 * (nothing taken) when fewer than n are free. Slots come out in ascending id
 * order on a fresh pool, so runs are deterministic. */
int kv_pool_alloc(kv_pool *p, int32_t n, int32_t *out);
/* Gives n slots back. Returns 0, or -1 if any id is out of range or already
 * free (nothing is changed then). */
int kv_pool_release(kv_pool *p, const int32_t *slots, int32_t n);
static inline int32_t kv_pool_free_count(const kv_pool *p) { return p->n_free; }
/* Bytes of K+V storage per token slot. */
static inline uint64_t kv_pool_bytes_per_slot(const kv_pool *p) {
    return (uint64_t)p->n_layers * (uint64_t)p->kv_dim * 2u * sizeof(uint16_t);
}
/* K / V row of one slot in one layer (kv_dim f16 values). */
static inline uint16_t *kv_pool_k(const kv_pool *p, int32_t layer, int32_t slot) {
    return p->k + ((uint64_t)layer * (uint64_t)p->n_slots + (uint64_t)slot) * (uint64_t)p->kv_dim;
}
static inline uint16_t *kv_pool_v(const kv_pool *p, int32_t layer, int32_t slot) {
    return p->v + ((uint64_t)layer * (uint64_t)p->n_slots + (uint64_t)slot) * (uint64_t)p->kv_dim;
}

#endif
