/* test_remote_cancel: sgl_engine_cancel on the remote engine, and
 * sgl_remote_fwd_free on a forward, against an in-process loopback server
 * that reads requests and never answers (so every request stays in flight
 * until cancelled). Checks that a cancel completes the request as ABORT
 * "cancelled" at once (far below the 30 s request timeout), closes its
 * connection (the server sees the close), leaves the other requests alone,
 * stops a two-phase SCORE before its second phase and every part of a
 * token-choice SCORE, and that cancelling an unknown or
 * finished id fails. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>

#include "runtime/remote/remote.h"
#include "tests/test.h"

/* ---- the silent server ----------------------------------------------------------------- */

enum { MAX_CONN = 64 };
static int lfd, port;
static int conns[MAX_CONN], n_conns;
static int n_requests;   /* connections whose request head arrived */
static int n_closed;     /* connections the client closed */
static volatile int quit;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static void *serve(void *arg) {
    (void)arg;
    bool got[MAX_CONN] = {0}, closed[MAX_CONN] = {0};
    while (!quit) {
        struct pollfd p[MAX_CONN + 1];
        p[0].fd = lfd;
        p[0].events = POLLIN;
        int n = 1;
        for (int i = 0; i < n_conns; i++) {
            p[n].fd = closed[i] ? -1 : conns[i];
            p[n++].events = POLLIN;
        }
        if (poll(p, (nfds_t)n, 50) <= 0) continue;
        if ((p[0].revents & POLLIN) && n_conns < MAX_CONN) {
            int c = accept(lfd, NULL, NULL);
            if (c >= 0) conns[n_conns++] = c;
        }
        for (int i = 0; i + 1 < n; i++) {
            if (!(p[i + 1].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            char buf[4096];
            ssize_t k = recv(conns[i], buf, sizeof buf, 0);
            pthread_mutex_lock(&mu);
            if (k <= 0) {
                closed[i] = true;
                n_closed++;
            } else if (!got[i]) {
                got[i] = true;
                n_requests++;
            }
            pthread_mutex_unlock(&mu);
        }
    }
    for (int i = 0; i < n_conns; i++) close(conns[i]);
    return NULL;
}

static int counter(const int *c) {
    pthread_mutex_lock(&mu);
    int v = *c;
    pthread_mutex_unlock(&mu);
    return v;
}

/* Waits up to 5 s for *c to reach want; returns the value seen. */
static int wait_for(const int *c, int want) {
    for (int i = 0; i < 500 && counter(c) < want; i++) usleep(10000);
    return counter(c);
}

static sgl_engine *engine(void) {
    char spec[64];
    snprintf(spec, sizeof spec, "sglang:http://127.0.0.1:%d", port);
    const char *specs[] = {spec};
    sgl_remote_config cfg = sgl_remote_config_default();
    cfg.specs = specs;
    cfg.n_specs = 1;
    cfg.timeout_s = 30;
    sgl_error err = {{0}};
    sgl_engine *e = sgl_engine_remote_new(&cfg, &err);
    CHECK_MSG(e != NULL, "remote engine: %s", err.msg);
    return e;
}

static uint64_t submit_gen(sgl_engine *e, const char *text, bool stream) {
    sgl_request r = {0};
    r.kind = SGL_REQ_GENERATE;
    r.text = text;
    r.params = sgl_sampling_params_default();
    r.stream = stream;
    sgl_error err = {{0}};
    uint64_t id = sgl_engine_submit(e, &r, &err);
    CHECK_MSG(id != 0, "submit: %s", err.msg);
    return id;
}

/* The next result that is not a partial, within 2 s. */
static sgl_result *next_final(sgl_engine *e) {
    double until = sgl_now() + 2;
    while (sgl_now() < until) {
        sgl_result *r = sgl_engine_wait(e, 0.1);
        if (r && !r->partial) return r;
        sgl_result_free(r);
    }
    return NULL;
}

static void test_cancel_generate(void) {
    int base_req = counter(&n_requests), base_closed = counter(&n_closed);
    sgl_engine *e = engine();
    if (!e) return;
    uint64_t a = submit_gen(e, "first", false), b = submit_gen(e, "second", true), c = submit_gen(e, "third", false);
    CHECK_INT(wait_for(&n_requests, base_req + 3), base_req + 3);
    double t0 = sgl_now();
    CHECK_INT(sgl_engine_cancel(e, a), 0);
    CHECK_INT(sgl_engine_cancel(e, b), 0);
    uint64_t seen[2] = {0};
    for (int k = 0; k < 2; k++) {
        sgl_result *r = next_final(e);
        CHECK(r != NULL);
        if (!r) break;
        CHECK_INT(r->finish, SGL_FINISH_ABORT);
        CHECK_STR(r->error, "cancelled");
        seen[k] = r->id;
        sgl_result_free(r);
    }
    CHECK((seen[0] == a && seen[1] == b) || (seen[0] == b && seen[1] == a));
    CHECK_MSG(sgl_now() - t0 < 2, "cancel took %.2f s", sgl_now() - t0);
    CHECK_INT(wait_for(&n_closed, base_closed + 2), base_closed + 2);
    /* the third is untouched: still in flight, its connection open */
    sgl_result *r = sgl_engine_wait(e, 0.3);
    CHECK_MSG(r == NULL, "an uncancelled request completed: %s", r ? r->error : "");
    sgl_result_free(r);
    CHECK_INT(counter(&n_closed), base_closed + 2);
    CHECK_INT(sgl_engine_cancel(e, a), -1);      /* finished */
    CHECK_INT(sgl_engine_cancel(e, 987654), -1); /* unknown */
    CHECK_INT(sgl_engine_cancel(e, c), 0);
    r = next_final(e);
    CHECK(r && r->id == c && r->finish == SGL_FINISH_ABORT);
    sgl_result_free(r);
    CHECK_INT(wait_for(&n_closed, base_closed + 3), base_closed + 3);
    sgl_engine_free(e);
}

static void test_cancel_score(void) {
    int base_req = counter(&n_requests), base_closed = counter(&n_closed);
    sgl_engine *e = engine();
    if (!e) return;
    const char *choices[] = {" yes", " no", " maybe"};
    sgl_request r = {0};
    r.kind = SGL_REQ_SCORE;
    r.text = "Is it?";
    r.choices = choices;
    r.n_choices = 3;
    sgl_error err = {{0}};
    uint64_t id = sgl_engine_submit(e, &r, &err);
    CHECK(id != 0);
    /* two phases: the prompt's prefill first (the rest would follow its answer) */
    CHECK_INT(wait_for(&n_requests, base_req + 1), base_req + 1);
    usleep(200000);
    CHECK_INT(counter(&n_requests), base_req + 1);
    CHECK_INT(sgl_engine_cancel(e, id), 0);
    sgl_result *res = next_final(e);
    CHECK(res && res->id == id && res->finish == SGL_FINISH_ABORT);
    sgl_result_free(res);
    CHECK_INT(wait_for(&n_closed, base_closed + 1), base_closed + 1);
    /* token choices: one request per choice at once, all cancelled */
    base_req = counter(&n_requests);
    base_closed = counter(&n_closed);
    const int32_t prompt[] = {1, 2, 3}, c0[] = {4}, c1[] = {5, 6}, c2[] = {7};
    const int32_t *ct[] = {c0, c1, c2};
    const int32_t cl[] = {1, 2, 1};
    sgl_request t = {0};
    t.kind = SGL_REQ_SCORE;
    t.tokens = prompt;
    t.n_tokens = 3;
    t.choice_tokens = ct;
    t.choice_lens = cl;
    t.n_choices = 3;
    uint64_t id2 = sgl_engine_submit(e, &t, &err);
    CHECK(id2 != 0);
    CHECK_INT(wait_for(&n_requests, base_req + 3), base_req + 3);
    CHECK_INT(sgl_engine_cancel(e, id2), 0);
    res = next_final(e);
    CHECK(res && res->id == id2 && res->finish == SGL_FINISH_ABORT);
    sgl_result_free(res);
    CHECK_INT(wait_for(&n_closed, base_closed + 3), base_closed + 3);
    res = sgl_engine_wait(e, 0.2);
    CHECK_MSG(res == NULL, "a cancelled SCORE completed twice");
    sgl_result_free(res);
    sgl_engine_free(e);
}

static void test_forward_free(void) {
    int base_req = counter(&n_requests), base_closed = counter(&n_closed);
    sgl_engine *e = engine();
    if (!e) return;
    sgl_error err = {{0}};
    const char *body = "{\"text\": \"hi\"}";
    sgl_remote_fwd *f = sgl_remote_forward(e, "POST", "/generate", body, strlen(body), "hi", -1, &err);
    CHECK_MSG(f != NULL, "forward: %s", err.msg);
    CHECK_INT(wait_for(&n_requests, base_req + 1), base_req + 1);
    sgl_strbuf out = {0};
    int status = -1;
    const char *ct, *error;
    CHECK_INT(sgl_remote_fwd_next(f, 0.2, &out, &status, &ct, &error), 0); /* nothing yet */
    CHECK_INT(status, 0);
    sgl_remote_fwd_free(f);
    CHECK_INT(wait_for(&n_closed, base_closed + 1), base_closed + 1);
    sgl_strbuf_free(&out);
    sgl_engine_free(e);
}

int main(void) {
    lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 64) < 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &al) < 0)
        TEST_SKIP_ALL("cannot listen on loopback");
    port = ntohs(a.sin_port);
    pthread_t th;
    pthread_create(&th, NULL, serve, NULL);
    TEST_RUN(test_cancel_generate);
    TEST_RUN(test_cancel_score);
    TEST_RUN(test_forward_free);
    quit = 1;
    pthread_join(th, NULL);
    close(lfd);
    return TEST_DONE();
}
