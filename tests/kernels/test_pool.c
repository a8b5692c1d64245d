/* test_pool: the kernels' thread pool: every task index runs exactly once
 * per run; after a run stalled by a slow worker (a worker task that sleeps
 * stands in for one the OS preempted) the contention guard runs the next
 * runs on the caller alone, with the same task indices; with the guard off
 * it never does. */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "kernels/kernels.h"
#include "tests/test.h"

enum { NT = 3 };

typedef struct run_ctx {
    pthread_t caller;
    atomic_int count[NT];
    atomic_int off_caller; /* tasks run on another thread */
    bool slow_workers;     /* worker tasks sleep 8 ms (the caller's 1 ms, so workers get to claim) */
} run_ctx;

static void task(void *p, int ith, int nth) {
    run_ctx *c = p;
    CHECK_INT(nth, NT);
    if (ith >= 0 && ith < NT) atomic_fetch_add(&c->count[ith], 1);
    if (!pthread_equal(pthread_self(), c->caller)) {
        atomic_fetch_add(&c->off_caller, 1);
        if (c->slow_workers) nanosleep(&(struct timespec){0, 8000000}, NULL);
    } else if (c->slow_workers && ith == 0) {
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
}

static void run_once(kern_pool *p, run_ctx *c, bool slow) {
    for (int i = 0; i < NT; i++) atomic_store(&c->count[i], 0);
    atomic_store(&c->off_caller, 0);
    c->caller = pthread_self();
    c->slow_workers = slow;
    kern_pool_run(p, task, c);
    for (int i = 0; i < NT; i++) CHECK_INT(atomic_load(&c->count[i]), 1);
}

static void test_guard(void) {
    kern_pool *p = kern_pool_new(NT);
    CHECK(p != NULL);
    if (!p) return;
    kern_pool_set_guard(p, true);
    run_ctx c;
    uint64_t solo = 0, stalls = 0;
    /* Slow workers until runs have stalled four times (a worker must claim
     * a task first; solo runs in between cannot stall): the solo spell is
     * then 32 ms, long enough for the next run even on a loaded machine. */
    for (int tries = 0; tries < 2000 && stalls < 4; tries++) {
        run_once(p, &c, true);
        kern_pool_stats(p, &solo, &stalls);
    }
    CHECK(stalls >= 4);
    /* The next runs are solo: every index on the caller. */
    uint64_t solo0 = solo;
    run_once(p, &c, false);
    CHECK_INT(atomic_load(&c.off_caller), 0);
    kern_pool_stats(p, &solo, &stalls);
    CHECK_INT(solo, solo0 + 1);
    /* Without the guard the same stalls never make runs solo. */
    kern_pool_set_guard(p, false);
    for (int i = 0; i < 20; i++) run_once(p, &c, true);
    uint64_t solo1;
    kern_pool_stats(p, &solo1, &stalls);
    CHECK_INT(solo1, solo);
    kern_pool_free(p);
}

int main(void) {
    TEST_RUN(test_guard);
    return TEST_DONE();
}
