/* pool: the kernels' persistent thread pool.
 *
 * Workers wait for a generation counter to change: they spin (with pause)
 * for a short time after each task, so back-to-back per-token kernels find
 * them awake, then sleep on a futex. The caller's thread runs task index 0
 * and waits for the others the same way (spin, then futex). A pool is driven
 * by one caller thread at a time.
 */
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "kernels/cpu/kern_internal.h"

/* How long an idle worker (or the waiting caller) polls before sleeping.
 * The first POOL_PAUSE_SPINS polls only pause (lowest latency); later ones
 * also yield the CPU, so an oversubscribed machine still runs the thread we
 * are waiting for. */
#define POOL_SPIN_NS 100000LL
#define POOL_PAUSE_SPINS 2048

struct kern_pool {
    int n_threads;
    pthread_t *threads;
    _Atomic unsigned gen; /* bumped once per kern_pool_run */
    _Atomic int pending;  /* workers still running the current task */
    _Atomic int n_sleeping; /* workers in futex_wait on gen */
    _Atomic int caller_sleeping;
    _Atomic int stop;
    kern_task_fn fn;
    void *ctx;
    /* matmul scratch (quantized activations), owned by the pool */
    void *scratch;
    size_t scratch_cap;
};

typedef struct {
    kern_pool *pool;
    int ith;
} worker_arg;

static void futex_wait(void *addr, int val) {
    syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}
static void futex_wake(void *addr) {
    syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void *worker_main(void *arg) {
    worker_arg *wa = arg;
    kern_pool *p = wa->pool;
    int ith = wa->ith;
    free(wa);
    /* gen starts at 0; a run may bump it before this thread gets here, so
     * start from 0 rather than from what gen reads now. A run cannot finish
     * (nor gen move again) before every worker has run it. */
    unsigned seen = 0;
    for (;;) {
        /* Wait for a new generation: spin first, then sleep. */
        long long t0 = 0;
        for (int spins = 0; atomic_load_explicit(&p->gen, memory_order_acquire) == seen; spins++) {
            if (spins < POOL_PAUSE_SPINS) {
                cpu_relax();
                continue;
            }
            sched_yield();
            if (!t0) t0 = now_ns();
            else if (now_ns() - t0 > POOL_SPIN_NS) {
                atomic_fetch_add(&p->n_sleeping, 1);
                if (atomic_load(&p->gen) == seen) futex_wait((void *)&p->gen, (int)seen);
                atomic_fetch_sub(&p->n_sleeping, 1);
                t0 = 0;
            }
        }
        seen++;
        if (atomic_load(&p->stop)) return NULL;
        p->fn(p->ctx, ith, p->n_threads);
        if (atomic_fetch_sub(&p->pending, 1) == 1 && atomic_load(&p->caller_sleeping))
            futex_wake((void *)&p->pending);
    }
}

kern_pool *kern_pool_new(int n_threads) {
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    if (n_threads > 256) n_threads = 256;
    kern_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n_threads = n_threads;
    p->threads = calloc((size_t)n_threads, sizeof *p->threads);
    if (!p->threads) {
        free(p);
        return NULL;
    }
    for (int i = 1; i < n_threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (wa) *wa = (worker_arg){p, i};
        if (!wa || pthread_create(&p->threads[i], NULL, worker_main, wa) != 0) {
            free(wa);
            p->n_threads = i; /* stop the ones already started */
            kern_pool_free(p);
            return NULL;
        }
    }
    return p;
}

void kern_pool_free(kern_pool *p) {
    if (!p) return;
    atomic_store(&p->stop, 1);
    atomic_fetch_add(&p->gen, 1);
    futex_wake((void *)&p->gen);
    for (int i = 1; i < p->n_threads; i++) pthread_join(p->threads[i], NULL);
    free(p->threads);
    free(p->scratch);
    free(p);
}

int kern_pool_threads(const kern_pool *p) {
    return p ? p->n_threads : 1;
}

void kern_pool_run(kern_pool *p, kern_task_fn fn, void *ctx) {
    if (!p || p->n_threads == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store(&p->pending, p->n_threads - 1);
    atomic_fetch_add(&p->gen, 1);
    if (atomic_load(&p->n_sleeping) > 0) futex_wake((void *)&p->gen);
    fn(ctx, 0, p->n_threads);
    long long t0 = 0;
    for (int spins = 0;; spins++) {
        int left = atomic_load_explicit(&p->pending, memory_order_acquire);
        if (left == 0) break;
        if (spins < POOL_PAUSE_SPINS) {
            cpu_relax();
            continue;
        }
        sched_yield();
        if (!t0) t0 = now_ns();
        else if (now_ns() - t0 > POOL_SPIN_NS) {
            atomic_store(&p->caller_sleeping, 1);
            left = atomic_load(&p->pending);
            if (left != 0) futex_wait((void *)&p->pending, left);
            atomic_store(&p->caller_sleeping, 0);
        }
    }
}

void *kern_pool_scratch(kern_pool *p, size_t bytes) {
    if (p->scratch_cap < bytes) {
        size_t sz = (bytes + 63) & ~(size_t)63;
        void *s = aligned_alloc(64, sz);
        if (!s) return NULL;
        free(p->scratch);
        p->scratch = s;
        p->scratch_cap = sz;
    }
    return p->scratch;
}
