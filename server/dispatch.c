/* dispatch: one thread drains the shared engine's result queue and hands
 * each result to the waiter (HTTP request or program proxy engine) that
 * submitted it, matched by engine id. Submission and registration happen
 * under the same lock the router takes, so a result can never arrive before
 * its id is known. Results for ids nobody waits for any more (cancelled
 * after the client left) are freed here.
 *
 * The proxy engine (srv_proxy_engine_new) is an sgl_engine_ops
 * implementation over a waiter: a VM running a program submits through it
 * to the shared engine, so a program's requests batch with HTTP traffic and
 * share the radix cache.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/internal.h"

struct srv_dispatch {
    sgl_engine *engine;
    pthread_t thread;
    pthread_mutex_t mu;
    srv_waiter *head;          /* registered waiters */
    volatile bool stop;
    bool refusing;             /* after srv_cancel_all: no new submissions */
    bool started;
};

static void *dispatch_main(void *arg);

srv_dispatch *srv_dispatch_start(sgl_engine *e, sgl_error *err) {
    srv_dispatch *d = calloc(1, sizeof *d);
    if (!d) {
        sgl_error_set(err, "out of memory");
        return NULL;
    }
    d->engine = e;
    pthread_mutex_init(&d->mu, NULL);
    if (pthread_create(&d->thread, NULL, dispatch_main, d) != 0) {
        pthread_mutex_destroy(&d->mu);
        free(d);
        sgl_error_set(err, "cannot start the dispatcher thread");
        return NULL;
    }
    d->started = true;
    return d;
}

void srv_dispatch_stop(srv_dispatch *d) {
    if (!d) return;
    d->stop = true;
    if (d->started) pthread_join(d->thread, NULL);
    pthread_mutex_destroy(&d->mu);
    free(d);
}

/* Index of id among w's unfinished requests, or -1. Caller holds mu. */
static int waiter_find(const srv_waiter *w, uint64_t id) {
    for (int i = 0; i < w->n_ids; i++)
        if (w->ids[i] == id) return i;
    return -1;
}

static void *dispatch_main(void *arg) {
    srv_dispatch *d = arg;
    while (!d->stop) {
        sgl_result *r = sgl_engine_wait(d->engine, 0.1);
        if (!r) continue;
        pthread_mutex_lock(&d->mu);
        srv_waiter *w = d->head;
        while (w && waiter_find(w, r->id) < 0) w = w->next;
        if (w && w->q_len == w->q_cap) {
            int cap = w->q_cap ? w->q_cap * 2 : 16;
            sgl_result **q = malloc(sizeof *q * (size_t)cap);
            if (q) {
                for (int i = 0; i < w->q_len; i++) q[i] = w->q[(w->q_head + i) % w->q_cap];
                free(w->q);
                w->q = q;
                w->q_cap = cap;
                w->q_head = 0;
            } else {
                w = NULL; /* out of memory: the result is lost (its request fails by timeout) */
            }
        }
        if (w) {
            w->q[(w->q_head + w->q_len) % w->q_cap] = r;
            w->q_len++;
            pthread_cond_signal(&w->cv);
            r = NULL;
        }
        pthread_mutex_unlock(&d->mu);
        sgl_result_free(r);
    }
    return NULL;
}

void srv_waiter_init(srv_dispatch *d, srv_waiter *w) {
    memset(w, 0, sizeof *w);
    pthread_cond_init(&w->cv, NULL);
    pthread_mutex_lock(&d->mu);
    w->next = d->head;
    if (d->head) d->head->prev = w;
    d->head = w;
    w->linked = true;
    pthread_mutex_unlock(&d->mu);
}

void srv_waiter_destroy(srv_dispatch *d, srv_waiter *w) {
    pthread_mutex_lock(&d->mu);
    for (int i = 0; i < w->n_ids; i++) sgl_engine_cancel(d->engine, w->ids[i]);
    if (w->linked) {
        if (w->prev) w->prev->next = w->next;
        else d->head = w->next;
        if (w->next) w->next->prev = w->prev;
        w->linked = false;
    }
    pthread_mutex_unlock(&d->mu);
    for (int i = 0; i < w->q_len; i++) sgl_result_free(w->q[(w->q_head + i) % w->q_cap]);
    free(w->q);
    free(w->ids);
    free(w->tags);
    pthread_cond_destroy(&w->cv);
    memset(w, 0, sizeof *w);
}

uint64_t srv_submit(srv_dispatch *d, srv_waiter *w, const sgl_request *req, uint64_t tag,
                    sgl_error *err) {
    pthread_mutex_lock(&d->mu);
    if (w->n_ids == w->cap_ids) {
        int cap = w->cap_ids ? w->cap_ids * 2 : 4;
        uint64_t *ids = realloc(w->ids, sizeof *ids * (size_t)cap);
        if (ids) w->ids = ids;
        uint64_t *tags = ids ? realloc(w->tags, sizeof *tags * (size_t)cap) : NULL;
        if (tags) w->tags = tags;
        if (!ids || !tags) {
            pthread_mutex_unlock(&d->mu);
            sgl_error_set(err, "out of memory");
            return 0;
        }
        w->cap_ids = cap;
    }
    uint64_t id = d->refusing ? (sgl_error_set(err, "the server is shutting down"), 0)
                              : sgl_engine_submit(d->engine, req, err);
    if (id) {
        w->ids[w->n_ids] = id;
        w->tags[w->n_ids] = tag;
        w->n_ids++;
    }
    pthread_mutex_unlock(&d->mu);
    return id;
}

sgl_result *srv_wait(srv_dispatch *d, srv_waiter *w, double timeout_s, uint64_t *tag) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    if (timeout_s > 0) {
        double s = (double)until.tv_sec + until.tv_nsec * 1e-9 + timeout_s;
        until.tv_sec = (time_t)s;
        until.tv_nsec = (long)((s - (double)until.tv_sec) * 1e9);
    }
    pthread_mutex_lock(&d->mu);
    while (w->q_len == 0) {
        if (timeout_s == 0) break;
        if (timeout_s < 0) pthread_cond_wait(&w->cv, &d->mu);
        else if (pthread_cond_timedwait(&w->cv, &d->mu, &until) == ETIMEDOUT) break;
    }
    sgl_result *r = NULL;
    if (w->q_len > 0) {
        r = w->q[w->q_head];
        w->q_head = (w->q_head + 1) % w->q_cap;
        w->q_len--;
        int k = waiter_find(w, r->id);
        if (tag) *tag = k >= 0 ? w->tags[k] : 0;
        if (k >= 0 && !r->partial) {
            w->ids[k] = w->ids[w->n_ids - 1];
            w->tags[k] = w->tags[w->n_ids - 1];
            w->n_ids--;
        }
    }
    pthread_mutex_unlock(&d->mu);
    return r;
}

int srv_waiter_pending(srv_dispatch *d, srv_waiter *w) {
    pthread_mutex_lock(&d->mu);
    int n = w->n_ids;
    pthread_mutex_unlock(&d->mu);
    return n;
}

int srv_cancel_waiter(srv_dispatch *d, srv_waiter *w) {
    pthread_mutex_lock(&d->mu);
    int n = 0;
    for (int i = 0; i < w->n_ids; i++) n += sgl_engine_cancel(d->engine, w->ids[i]) == 0;
    pthread_mutex_unlock(&d->mu);
    return n;
}

void srv_cancel_all(srv_dispatch *d) {
    pthread_mutex_lock(&d->mu);
    d->refusing = true;
    for (srv_waiter *w = d->head; w; w = w->next)
        for (int i = 0; i < w->n_ids; i++) sgl_engine_cancel(d->engine, w->ids[i]);
    pthread_mutex_unlock(&d->mu);
}

/* ---- proxy engine ------------------------------------------------------- */

typedef struct proxy {
    srv_dispatch *d;
    srv_waiter w;
    const volatile bool *closed;
    struct srv_metrics *metrics;
    bool cancelled;
} proxy;

static int proxy_submit(void *ctx, const sgl_request *req, uint64_t id, sgl_error *err) {
    proxy *p = ctx;
    if (p->closed && *p->closed) {
        /* Counted with the cancelled ones: the client's leaving stopped it. */
        if (p->metrics) srv_metrics_add(p->metrics, &p->metrics->cancelled_disconnect, 1);
        return sgl_error_set(err, "client disconnected");
    }
    return srv_submit(p->d, &p->w, req, id, err) ? 0 : -1;
}

static sgl_result *proxy_wait(void *ctx, double timeout_s) {
    proxy *p = ctx;
    /* Wait in slices so a closed client is noticed. */
    double until = timeout_s < 0 ? -1 : sgl_now() + timeout_s;
    for (;;) {
        if (p->closed && *p->closed && !p->cancelled) {
            int n = srv_cancel_waiter(p->d, &p->w);
            if (p->metrics) srv_metrics_add(p->metrics, &p->metrics->cancelled_disconnect, n);
            p->cancelled = true;
        }
        double left = until < 0 ? 0.1 : SGL_MIN(0.1, until - sgl_now());
        if (left < 0) left = 0;
        uint64_t tag = 0;
        sgl_result *r = srv_wait(p->d, &p->w, left, &tag);
        if (r) {
            r->id = tag;
            return r;
        }
        if (until >= 0 && sgl_now() >= until) return NULL;
    }
}

static void proxy_metrics(void *ctx, sgl_engine_metrics *out) {
    proxy *p = ctx;
    sgl_engine_metrics_get(p->d->engine, out);
}

static int proxy_cancel(void *ctx, uint64_t id) {
    proxy *p = ctx;
    int rc = -1;
    pthread_mutex_lock(&p->d->mu);
    for (int i = 0; i < p->w.n_ids; i++)
        if (p->w.tags[i] == id) rc = sgl_engine_cancel(p->d->engine, p->w.ids[i]);
    pthread_mutex_unlock(&p->d->mu);
    return rc;
}

static void proxy_free(void *ctx) {
    proxy *p = ctx;
    srv_waiter_destroy(p->d, &p->w);
    free(p);
}

static const sgl_engine_ops proxy_ops = {
    .name = "server-proxy",
    .submit = proxy_submit,
    .wait = proxy_wait,
    .metrics = proxy_metrics,
    .free = proxy_free,
    .cancel = proxy_cancel,
};

sgl_engine *srv_proxy_engine_new(srv_dispatch *d, const volatile bool *closed, struct srv_metrics *m) {
    proxy *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->d = d;
    p->closed = closed;
    p->metrics = m;
    srv_waiter_init(d, &p->w);
    sgl_engine *e = sgl_engine_new(&proxy_ops, p);
    if (!e) proxy_free(p);
    return e;
}
