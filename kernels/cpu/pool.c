/* pool: the kernels' persistent thread pool.
 *
 * A run has n_threads task indices. The caller publishes the run (fn, ctx
 * and a claim word holding the run number and the next unclaimed index),
 * runs index 0 itself, then claims and runs whatever indices no worker has
 * claimed yet, and waits until all are done. Workers claim indices with a
 * compare-and-swap on the same word. So a worker that is slow to wake (a
 * busy or oversubscribed machine) costs nothing: the caller does its share.
 * Each index runs exactly once per run, on some thread.
 *
 * Idle workers poll the run number (pause, then yield) for a short time
 * after each run, so back-to-back per-token kernels find them awake, then
 * sleep on a futex. The caller waits for stragglers the same way. A pool is
 * driven by one caller thread at a time.
 *
 * Busy machines: a worker the OS preempts after claiming a task holds the
 * whole run until it is scheduled again (a time slice, milliseconds), and a
 * forward makes hundreds of runs. So the caller times each run: when it
 * waited for stragglers much longer than it worked itself (POOL_STALL_NS),
 * the pool goes solo for a while: the caller runs every task index itself
 * and the workers, finding no run, spin out and sleep, leaving the other
 * cores to whoever is competing. Solo spells start at POOL_SOLO_MIN_NS and
 * double while stalls repeat (up to POOL_SOLO_MAX_NS); a parallel run
 * without a stall halves them again. On an idle machine no run stalls and
 * nothing changes.
 */
#include <limits.h>
#include <stdbool.h>
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
/* A run whose stragglers kept the caller waiting this long (and more than
 * twice its own share of work) was stalled by preemption. */
#define POOL_STALL_NS 300000LL
#define POOL_SOLO_MIN_NS 4000000LL
#define POOL_SOLO_MAX_NS 256000000LL

struct kern_pool {
    int n_threads;
    pthread_t *threads;
    _Atomic uint64_t claim; /* (run << 32) | next unclaimed task index */
    _Atomic unsigned gen;   /* the current run number; futex word for workers */
    _Atomic int done;       /* tasks of the current run finished */
    _Atomic int n_sleeping; /* workers in futex_wait on gen */
    _Atomic int caller_sleeping;
    _Atomic int stop;
    unsigned run;    /* caller side: last run number used */
    kern_task_fn fn; /* valid while the current run has tasks left */
    void *ctx;
    /* matmul scratch (quantized activations), owned by the pool */
    void *scratch;
    size_t scratch_cap;
    /* contention guard (caller side) */
    bool guard;            /* on unless SGL_POOL_NO_GUARD=1 or kern_pool_set_guard */
    long long solo_until;  /* run solo until this time (now_ns) */
    long long solo_ns;     /* length of the next solo spell; 0 = none yet */
    uint64_t n_solo_runs, n_stalls;
};

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

/* Claims and runs task indices of run `run` until none is left (or a newer
 * run was published). Returns the number of tasks run. */
static int claim_and_run(kern_pool *p, unsigned run) {
    int ran = 0;
    for (;;) {
        uint64_t w = atomic_load(&p->claim);
        uint32_t idx = (uint32_t)w;
        if ((unsigned)(w >> 32) != run || idx >= (uint32_t)p->n_threads) return ran;
        if (!atomic_compare_exchange_weak(&p->claim, &w, w + 1)) continue;
        /* The run cannot finish (nor fn/ctx change) before this task is done. */
        kern_task_fn fn = p->fn;
        void *ctx = p->ctx;
        fn(ctx, (int)idx, p->n_threads);
        ran++;
        if (atomic_fetch_add(&p->done, 1) + 1 == p->n_threads && atomic_load(&p->caller_sleeping))
            futex_wake((void *)&p->done);
    }
}

static void *worker_main(void *arg) {
    kern_pool *p = arg;
    unsigned seen = 0; /* runs are numbered from 1 */
    for (;;) {
        /* Wait for a new run: poll first, then sleep. */
        long long t0 = 0;
        for (int spins = 0; atomic_load_explicit(&p->gen, memory_order_acquire) == seen; spins++) {
            if (spins < POOL_PAUSE_SPINS) {
                cpu_relax();
                continue;
            }
            sched_yield();
            if (!t0)
                t0 = now_ns();
            else if (now_ns() - t0 > POOL_SPIN_NS) {
                atomic_fetch_add(&p->n_sleeping, 1);
                if (atomic_load(&p->gen) == seen) futex_wait((void *)&p->gen, (int)seen);
                atomic_fetch_sub(&p->n_sleeping, 1);
                t0 = 0;
            }
        }
        if (atomic_load(&p->stop)) return NULL;
        seen = atomic_load(&p->gen);
        claim_and_run(p, seen);
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
    const char *ng = getenv("SGL_POOL_NO_GUARD");
    p->guard = !(ng && *ng && *ng != '0');
    p->threads = calloc((size_t)n_threads, sizeof *p->threads);
    if (!p->threads) {
        free(p);
        return NULL;
    }
    for (int i = 1; i < n_threads; i++) {
        if (pthread_create(&p->threads[i], NULL, worker_main, p) != 0) {
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
    for (int i = 1; i < p->n_threads; i++)
        pthread_join(p->threads[i], NULL);
    free(p->threads);
    free(p->scratch);
    free(p);
}

int kern_pool_threads(const kern_pool *p) {
    return p ? p->n_threads : 1;
}

void kern_pool_set_guard(kern_pool *p, bool on) {
    if (!p) return;
    p->guard = on;
    p->solo_until = p->solo_ns = 0;
}

void kern_pool_stats(const kern_pool *p, uint64_t *solo_runs, uint64_t *stalls) {
    *solo_runs = p ? p->n_solo_runs : 0;
    *stalls = p ? p->n_stalls : 0;
}

void kern_pool_run(kern_pool *p, kern_task_fn fn, void *ctx) {
    if (!p || p->n_threads == 1) {
        fn(ctx, 0, 1);
        return;
    }
    int n = p->n_threads;
    long long t_start = p->guard ? now_ns() : 0;
    if (p->guard && t_start < p->solo_until) {
        /* Same task indices, same results: only who runs them differs. */
        for (int i = 0; i < n; i++) fn(ctx, i, n);
        p->n_solo_runs++;
        return;
    }
    unsigned run = ++p->run;
    if (run == 0) run = ++p->run; /* 0 means "no run yet" to the workers */
    p->fn = fn;
    p->ctx = ctx;
    atomic_store(&p->done, 0);
    atomic_store(&p->claim, ((uint64_t)run << 32) | 1); /* index 0 is ours */
    atomic_store(&p->gen, run);
    if (atomic_load(&p->n_sleeping) > 0) futex_wake((void *)&p->gen);
    fn(ctx, 0, n);
    atomic_fetch_add(&p->done, 1);
    claim_and_run(p, run);
    long long t_mine = p->guard ? now_ns() : 0;
    long long t0 = 0;
    for (int spins = 0;; spins++) {
        int d = atomic_load_explicit(&p->done, memory_order_acquire);
        if (d == n) break;
        if (spins < POOL_PAUSE_SPINS) {
            cpu_relax();
            continue;
        }
        sched_yield();
        if (!t0)
            t0 = now_ns();
        else if (now_ns() - t0 > POOL_SPIN_NS) {
            atomic_store(&p->caller_sleeping, 1);
            d = atomic_load(&p->done);
            if (d != n) futex_wait((void *)&p->done, d);
            atomic_store(&p->caller_sleeping, 0);
        }
    }
    if (p->guard) {
        long long t_end = now_ns(), waited = t_end - t_mine, own = t_mine - t_start;
        if (waited > POOL_STALL_NS && waited > 2 * own) {
            p->n_stalls++;
            p->solo_ns = !p->solo_ns ? POOL_SOLO_MIN_NS : p->solo_ns * 2 < POOL_SOLO_MAX_NS ? p->solo_ns * 2 : POOL_SOLO_MAX_NS;
            p->solo_until = t_end + p->solo_ns;
        } else if (p->solo_ns && waited < own) {
            p->solo_ns = p->solo_ns / 2 >= POOL_SOLO_MIN_NS ? p->solo_ns / 2 : 0;
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
