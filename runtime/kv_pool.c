/* kv_pool: slot free list and f16 K/V storage (see kv_pool.h). */
#include "runtime/kv_pool.h"

#include <stdlib.h>
#include <string.h>

kv_pool *kv_pool_new(int32_t n_slots, int32_t n_layers, int32_t kv_dim, sgl_error *err) {
    if (n_slots <= 0 || n_layers < 0 || kv_dim < 0) {
        sgl_error_set(err, "kv pool: invalid size (%d slots, %d layers, kv_dim %d)", n_slots,
                      n_layers, kv_dim);
        return NULL;
    }
    kv_pool *p = calloc(1, sizeof *p);
    if (!p) goto oom;
    p->n_slots = n_slots;
    p->n_layers = n_layers;
    p->kv_dim = kv_dim;
    p->free_list = malloc(sizeof(int32_t) * (size_t)n_slots);
    p->is_free = malloc((size_t)n_slots);
    if (!p->free_list || !p->is_free) goto oom;
    if (kv_dim > 0 && n_layers > 0) {
        size_t n = (size_t)n_layers * (size_t)n_slots * (size_t)kv_dim;
        p->k = calloc(n, sizeof(uint16_t));
        p->v = calloc(n, sizeof(uint16_t));
        if (!p->k || !p->v) goto oom;
    }
    /* Stack order: pop from the end, so push ids in descending order to hand
     * out 0, 1, 2, ... first. */
    for (int32_t i = 0; i < n_slots; i++) p->free_list[i] = n_slots - 1 - i;
    p->n_free = n_slots;
    memset(p->is_free, 1, (size_t)n_slots);
    return p;
oom:
    kv_pool_free(p);
    sgl_error_set(err, "kv pool: out of memory for %d token slots", n_slots);
    return NULL;
}

void kv_pool_free(kv_pool *p) {
    if (!p) return;
    if (p->dev && p->dev_free) p->dev_free(p->dev);
    free(p->k);
    free(p->v);
    free(p->free_list);
    free(p->is_free);
    free(p);
}

int kv_pool_alloc(kv_pool *p, int32_t n, int32_t *out) {
    if (n < 0 || n > p->n_free) return -1;
    for (int32_t i = 0; i < n; i++) {
        int32_t s = p->free_list[--p->n_free];
        p->is_free[s] = 0;
        out[i] = s;
    }
    return 0;
}

int kv_pool_release(kv_pool *p, const int32_t *slots, int32_t n) {
    for (int32_t i = 0; i < n; i++) {
        int32_t s = slots[i];
        if (s < 0 || s >= p->n_slots || p->is_free[s]) goto bad;
        p->is_free[s] = 1; /* mark now so a duplicate inside `slots` is caught */
        continue;
    bad:
        for (int32_t j = 0; j < i; j++) p->is_free[slots[j]] = 0;
        return -1;
    }
    for (int32_t i = 0; i < n; i++) p->free_list[p->n_free++] = slots[i];
    return 0;
}
