/* metrics: the server's counters and histograms, and GET /metrics in the
 * Prometheus text exposition format (server counters plus the engine's
 * totals from sgl_engine_metrics_get).
 */
#include <stdlib.h>
#include <string.h>

#include "server/internal.h"

/* Seconds; shared by the TTFT and end-to-end histograms. */
static const double buckets[SRV_N_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                               1,     2.5,  5,     10,   30,  60,  120};

void srv_metrics_init(srv_metrics *m) {
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
}

void srv_metrics_free(srv_metrics *m) {
    free(m->by_route);
    pthread_mutex_destroy(&m->mu);
}

static void hist_add(srv_hist *h, double v) {
    int i = 0;
    while (i < SRV_N_BUCKETS && v > buckets[i]) i++;
    h->counts[i]++;
    h->sum += v;
    h->n++;
}

void srv_metrics_request(srv_metrics *m, const char *route, int status, double e2e_s, double ttft_s) {
    pthread_mutex_lock(&m->mu);
    int i = 0;
    while (i < m->n_by_route && (m->by_route[i].status != status || strcmp(m->by_route[i].route, route)))
        i++;
    if (i == m->n_by_route && m->n_by_route == m->cap_by_route) {
        int cap = m->cap_by_route ? m->cap_by_route * 2 : 32;
        srv_status_count *v = realloc(m->by_route, sizeof *v * (size_t)cap);
        if (v) {
            m->by_route = v;
            m->cap_by_route = cap;
        }
    }
    if (i < m->cap_by_route) {
        if (i == m->n_by_route) {
            memset(&m->by_route[i], 0, sizeof m->by_route[i]);
            snprintf(m->by_route[i].route, sizeof m->by_route[i].route, "%s", route);
            m->by_route[i].status = status;
            m->n_by_route++;
        }
        m->by_route[i].n++;
    }
    if (e2e_s >= 0) hist_add(&m->e2e, e2e_s);
    if (ttft_s >= 0) hist_add(&m->ttft, ttft_s);
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_add(srv_metrics *m, int64_t *field, int64_t n) {
    pthread_mutex_lock(&m->mu);
    *field += n;
    pthread_mutex_unlock(&m->mu);
}

static void hist_print(sgl_strbuf *sb, const char *name, const char *help, const srv_hist *h) {
    sgl_strbuf_printf(sb, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    int64_t cum = 0;
    for (int i = 0; i < SRV_N_BUCKETS; i++) {
        cum += h->counts[i];
        sgl_strbuf_printf(sb, "%s_bucket{le=\"%g\"} %lld\n", name, buckets[i], (long long)cum);
    }
    cum += h->counts[SRV_N_BUCKETS];
    sgl_strbuf_printf(sb, "%s_bucket{le=\"+Inf\"} %lld\n%s_sum %.6f\n%s_count %lld\n", name,
                      (long long)cum, name, h->sum, name, (long long)h->n);
}

static void metric(sgl_strbuf *sb, const char *name, const char *type, const char *help, double v) {
    sgl_strbuf_printf(sb, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, v);
}

enum MHD_Result route_metrics(srv_req *r) {
    sgl_server *s = r->srv;
    srv_metrics *m = &s->metrics;
    sgl_engine_metrics em;
    sgl_engine_metrics_get(s->engine, &em);
    sgl_strbuf sb = {0};
    pthread_mutex_lock(&m->mu);
    sgl_strbuf_puts(&sb, "# HELP sglc_requests_total HTTP requests answered, by route and status.\n"
                         "# TYPE sglc_requests_total counter\n");
    for (int i = 0; i < m->n_by_route; i++)
        sgl_strbuf_printf(&sb, "sglc_requests_total{route=\"%s\",status=\"%d\"} %lld\n",
                          m->by_route[i].route, m->by_route[i].status, (long long)m->by_route[i].n);
    metric(&sb, "sglc_http_in_flight", "gauge", "HTTP requests being answered.", (double)m->in_flight);
    metric(&sb, "sglc_cancelled_disconnect_total", "counter",
           "Engine requests cancelled because the client disconnected.", (double)m->cancelled_disconnect);
    metric(&sb, "sglc_cancelled_shutdown_total", "counter",
           "Engine requests cancelled at shutdown.", (double)m->cancelled_shutdown);
    metric(&sb, "sglc_program_runs_total", "counter", "Program runs (/v1/programs/run).",
           (double)m->program_runs);
    metric(&sb, "sglc_program_instances_total", "counter", "Program instances run.",
           (double)m->program_instances);
    hist_print(&sb, "sglc_time_to_first_token_seconds", "Time from request to first token.", &m->ttft);
    hist_print(&sb, "sglc_e2e_request_latency_seconds", "Time from request to last byte queued.", &m->e2e);
    pthread_mutex_unlock(&m->mu);
    if (s->router) {
        router_metrics(s, &sb);
        if (!sb.data) return srv_reply_error(r, 500, NULL, "out of memory");
        return srv_reply(r, 200, "text/plain; version=0.0.4; charset=utf-8", sgl_strbuf_take(&sb));
    }
    metric(&sb, "sglc_engine_requests_total", "counter", "Engine requests finished.", (double)em.requests_done);
    metric(&sb, "sglc_prompt_tokens_total", "counter", "Prompt tokens of admitted requests.", (double)em.prompt_tokens);
    metric(&sb, "sglc_cached_tokens_total", "counter", "Prompt tokens served from the radix cache.", (double)em.cached_tokens);
    metric(&sb, "sglc_generation_tokens_total", "counter", "Generated tokens.", (double)em.generated_tokens);
    metric(&sb, "sglc_cache_hit_rate", "gauge", "Cached / prompt tokens since start.", em.hit_rate);
    metric(&sb, "sglc_num_running_reqs", "gauge", "Engine requests running.", em.running);
    metric(&sb, "sglc_num_waiting_reqs", "gauge", "Engine requests waiting.", em.waiting);
    metric(&sb, "sglc_kv_pool_slots", "gauge", "KV pool size in token slots.", em.pool_slots);
    metric(&sb, "sglc_kv_pool_used_slots", "gauge", "KV slots in use (cache included).", em.pool_used);
    metric(&sb, "sglc_kv_pool_usage", "gauge", "Fraction of the KV pool in use.",
           em.pool_slots ? (double)em.pool_used / em.pool_slots : 0.0);
    metric(&sb, "sglc_cache_tokens", "gauge", "KV slots held by the radix cache.", (double)em.cache_tokens);
    metric(&sb, "sglc_evicted_tokens_total", "counter", "KV slots evicted from the radix cache.", (double)em.evicted_tokens);
    metric(&sb, "sglc_retractions_total", "counter", "Running requests sent back to wait for memory.", (double)em.retractions);
    metric(&sb, "sglc_forward_calls_total", "counter", "Model forward calls.", (double)em.forward_calls);
    if (!sb.data) return srv_reply_error(r, 500, NULL, "out of memory");
    return srv_reply(r, 200, "text/plain; version=0.0.4; charset=utf-8", sgl_strbuf_take(&sb));
}
