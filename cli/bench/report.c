/* report: `sglc bench`'s outputs from a list of results: the table, the
 * ratio table (full over every other mode, per workload and as geometric
 * means), a JSON document and an SVG grouped bar chart written directly. */
#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>

#include "cli/bench/suite.h"

static const bench_result *find(const bench_result *r, int n, const bench_workload *w, const char *mode) {
    for (int i = 0; i < n; i++)
        if (r[i].w == w && r[i].ok && !strcmp(r[i].m->name, mode)) return &r[i];
    return NULL;
}

/* Workloads and modes in first-run order. */
static int distinct_w(const bench_result *r, int n, const bench_workload **out) {
    int k = 0;
    for (int i = 0; i < n; i++) {
        int j = 0;
        while (j < k && out[j] != r[i].w) j++;
        if (j == k) out[k++] = r[i].w;
    }
    return k;
}

static int distinct_m(const bench_result *r, int n, const bench_mode **out) {
    int k = 0;
    for (int i = 0; i < n; i++) {
        int j = 0;
        while (j < k && out[j] != r[i].m) j++;
        if (j == k) out[k++] = r[i].m;
    }
    return k;
}

/* full's programs/s over mode's for w; 0 when either is missing. */
static double ratio(const bench_result *r, int n, const bench_workload *w, const char *mode) {
    const bench_result *f = find(r, n, w, "full"), *x = find(r, n, w, mode);
    if (!f || !x || x->programs_per_s <= 0) return 0;
    return f->programs_per_s / x->programs_per_s;
}

void bench_print_table(FILE *out, const bench_result *r, int n) {
    fprintf(out, "%-20s %-12s %5s %4s %9s %7s %9s %8s %8s %6s %6s %8s\n", "workload", "mode", "progs", "runs",
            "progs/s", "spread", "out tok/s", "p50 s", "p99 s", "hit%", "best%", "hit/best");
    for (int i = 0; i < n; i++) {
        const bench_result *x = &r[i];
        if (!x->ok) {
            fprintf(out, "%-20s %-12s %s: %s\n", x->w->name, x->m->name, x->skipped ? "skipped" : "FAILED",
                    x->error);
            continue;
        }
        int runs = x->runs > 0 ? x->runs : 1;
        /* spread: the fastest run's programs/s over the slowest's */
        fprintf(out, "%-20s %-12s %5d %4d %9.3f %6.2fx %9.1f %8.2f %8.2f %6.1f %6.1f %8.3f\n", x->w->name,
                x->m->name, x->programs / runs, runs, x->programs_per_s,
                x->pps_min > 0 ? x->pps_max / x->pps_min : 1.0, x->tokens_per_s, x->p50, x->p99,
                100 * x->hit_rate, 100 * x->best_hit_rate,
                x->best_hit_rate > 0 ? x->hit_rate / x->best_hit_rate : 0);
    }
}

void bench_print_ratios(FILE *out, const bench_result *r, int n) {
    const bench_workload *ws[64];
    const bench_mode *ms[64];
    int nw = distinct_w(r, n, ws), nm = distinct_m(r, n, ms);
    bool any_full = false;
    for (int i = 0; i < n; i++) any_full |= r[i].ok && !strcmp(r[i].m->name, "full");
    if (!any_full || nm < 2) return;
    fprintf(out, "\nspeedup of full (programs/s of full / programs/s of the mode)\n%-20s", "workload");
    for (int j = 0; j < nm; j++)
        if (strcmp(ms[j]->name, "full")) fprintf(out, " %12s", ms[j]->name);
    fputc('\n', out);
    bool all_shared = true;
    for (int i = 0; i < nw; i++) {
        all_shared &= ws[i]->shared_prefix;
        fprintf(out, "%-20s", ws[i]->name);
        for (int j = 0; j < nm; j++) {
            if (!strcmp(ms[j]->name, "full")) continue;
            double q = ratio(r, n, ws[i], ms[j]->name);
            if (q > 0) fprintf(out, " %11.2fx", q);
            else fprintf(out, " %12s", "-");
        }
        fputc('\n', out);
    }
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1 && all_shared) break;
        fprintf(out, "%-20s", pass == 0 ? (all_shared ? "geomean" : "geomean (all)") : "geomean (shared)");
        for (int j = 0; j < nm; j++) {
            if (!strcmp(ms[j]->name, "full")) continue;
            double q[64];
            int k = 0;
            for (int i = 0; i < nw; i++)
                if (pass == 0 || ws[i]->shared_prefix) q[k++] = ratio(r, n, ws[i], ms[j]->name);
            double g = bench_geomean(q, k);
            if (g > 0) fprintf(out, " %11.2fx", g);
            else fprintf(out, " %12s", "-");
        }
        fputc('\n', out);
    }
}

/* A figure rounded to `digits` decimals (the report's precision). */
static cJSON *num(double x, int digits) {
    double f = pow(10, digits);
    return cJSON_CreateNumber(isfinite(x) ? round(x * f) / f : 0);
}

int bench_json(sgl_strbuf *sb, const bench_result *r, int n, const bench_opts *o) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "model", o->fake ? "fake" : o->model_path ? o->model_path : "");
    if (o->backend) cJSON_AddStringToObject(root, "backend", o->backend);
    cJSON_AddNumberToObject(root, "threads", o->n_threads);
    cJSON_AddBoolToObject(root, "quick", o->quick);
    cJSON_AddNumberToObject(root, "seed", (double)o->seed);
    cJSON *results = cJSON_AddArrayToObject(root, "results");
    for (int i = 0; i < n; i++) {
        const bench_result *x = &r[i];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "workload", x->w->name);
        cJSON_AddStringToObject(e, "mode", x->m->name);
        cJSON_AddBoolToObject(e, "ok", x->ok);
        cJSON_AddBoolToObject(e, "skipped", x->skipped);
        if (x->ok) cJSON_AddNullToObject(e, "error");
        else cJSON_AddStringToObject(e, "error", x->error);
        cJSON_AddNumberToObject(e, "runs", x->runs);
        cJSON_AddNumberToObject(e, "programs", x->programs);
        cJSON_AddNumberToObject(e, "failed", x->failed);
        cJSON_AddItemToObject(e, "seconds", num(x->seconds, 4));
        cJSON_AddItemToObject(e, "programs_per_s", num(x->programs_per_s, 4));
        cJSON_AddItemToObject(e, "programs_per_s_slowest_run", num(x->pps_min, 4));
        cJSON_AddItemToObject(e, "programs_per_s_fastest_run", num(x->pps_max, 4));
        cJSON_AddItemToObject(e, "tokens_per_s", num(x->tokens_per_s, 3));
        cJSON_AddItemToObject(e, "latency_p50", num(x->p50, 4));
        cJSON_AddItemToObject(e, "latency_p99", num(x->p99, 4));
        cJSON *rq = cJSON_AddObjectToObject(e, "requests");
        cJSON_AddNumberToObject(rq, "generate", (double)x->generate);
        cJSON_AddNumberToObject(rq, "score", (double)x->score);
        cJSON_AddNumberToObject(rq, "prefill", (double)x->prefill);
        cJSON_AddNumberToObject(e, "prompt_tokens", (double)x->prompt_tokens);
        cJSON_AddNumberToObject(e, "cached_tokens", (double)x->cached_tokens);
        cJSON_AddNumberToObject(e, "completion_tokens", (double)x->completion_tokens);
        cJSON_AddItemToObject(e, "hit_rate", num(x->hit_rate, 5));
        cJSON_AddItemToObject(e, "best_hit_rate", num(x->best_hit_rate, 5));
        cJSON_AddNumberToObject(e, "forward_calls", (double)x->forward_calls);
        cJSON_AddNumberToObject(e, "forward_tokens", (double)x->forward_tokens);
        cJSON_AddItemToArray(results, e);
    }
    const bench_workload *ws[64];
    const bench_mode *ms[64];
    int nw = distinct_w(r, n, ws), nm = distinct_m(r, n, ms);
    cJSON *sp = cJSON_AddObjectToObject(root, "speedup_of_full");
    for (int i = 0; i < nw; i++) {
        cJSON *w = cJSON_AddObjectToObject(sp, ws[i]->name);
        for (int j = 0; j < nm; j++) {
            double q = ratio(r, n, ws[i], ms[j]->name);
            if (!strcmp(ms[j]->name, "full") || q <= 0) continue;
            cJSON_AddItemToObject(w, ms[j]->name, num(q, 4));
        }
    }
    cJSON *gm = cJSON_AddObjectToObject(root, "geomean_speedup_of_full");
    for (int j = 0; j < nm; j++) {
        if (!strcmp(ms[j]->name, "full")) continue;
        double q[64];
        int nq = 0;
        for (int i = 0; i < nw; i++)
            if (ws[i]->shared_prefix) q[nq++] = ratio(r, n, ws[i], ms[j]->name);
        double g = bench_geomean(q, nq);
        if (g > 0) cJSON_AddItemToObject(gm, ms[j]->name, num(g, 4));
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) return -1;
    int rc = sgl_strbuf_puts(sb, text) | sgl_strbuf_putc(sb, '\n');
    cJSON_free(text);
    return rc;
}

static const char *const COLORS[] = {"#1b9e77", "#d95f02", "#7570b3", "#e7298a",
                                     "#66a61e", "#e6ab02", "#a6761d", "#666666"};

int bench_svg(sgl_strbuf *sb, const bench_result *r, int n) {
    const bench_workload *ws[64];
    const bench_mode *ms[64];
    int nw = distinct_w(r, n, ws), nm = distinct_m(r, n, ms);
    const char *ref = "baseline";
    bool have_ref = false;
    for (int j = 0; j < nm; j++) have_ref |= !strcmp(ms[j]->name, ref);
    if (!have_ref && nm) ref = ms[0]->name;
    /* log2 scale from 1/4 to the next power of two above the largest ratio */
    double hi = 2;
    for (int i = 0; i < nw; i++)
        for (int j = 0; j < nm; j++) {
            const bench_result *x = find(r, n, ws[i], ms[j]->name), *b = find(r, n, ws[i], ref);
            if (x && b && b->programs_per_s > 0) {
                double q = x->programs_per_s / b->programs_per_s;
                while (hi < q) hi *= 2;
            }
        }
    double lo = 0.25;
    int bw = 12, gap = 28, left = 60, top = 50, plot_h = 320;
    int group_w = nm * bw + gap;
    int width = left + nw * group_w + 170, height = top + plot_h + 110;
    double span = log2(hi) - log2(lo);
#define YPOS(q) (top + plot_h - (log2(q) - log2(lo)) / span * plot_h)
    sgl_strbuf_printf(sb,
                      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                      "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"11\">\n"
                      "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
                      "<text x=\"%d\" y=\"24\" font-size=\"14\">sglc bench: programs/s relative to %s "
                      "(log scale)</text>\n",
                      width, height, width, height, left, ref);
    for (double t = lo; t <= hi * 1.0001; t *= 2) {
        double y = YPOS(t);
        sgl_strbuf_printf(sb,
                          "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"%s\"/>\n"
                          "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%gx</text>\n",
                          left, y, left + nw * group_w, y, t == 1 ? "#000" : "#ddd", left - 6, y + 4, t);
    }
    double y1 = YPOS(1.0);
    for (int i = 0; i < nw; i++) {
        int gx = left + i * group_w + gap / 2;
        const bench_result *b = find(r, n, ws[i], ref);
        for (int j = 0; j < nm && b && b->programs_per_s > 0; j++) {
            const bench_result *x = find(r, n, ws[i], ms[j]->name);
            if (!x) continue;
            double q = x->programs_per_s / b->programs_per_s;
            if (q < lo) q = lo;
            double y = YPOS(q);
            sgl_strbuf_printf(sb,
                              "<rect x=\"%d\" y=\"%.1f\" width=\"%d\" height=\"%.1f\" fill=\"%s\">"
                              "<title>%s %s: %.2fx</title></rect>\n",
                              gx + j * bw, y < y1 ? y : y1, bw - 1, fabs(y1 - y), COLORS[j % 8], ws[i]->name,
                              ms[j]->name, q);
        }
        sgl_strbuf_printf(sb,
                          "<text transform=\"translate(%d,%d) rotate(-35)\" text-anchor=\"end\">%s</text>\n",
                          gx + nm * bw / 2, top + plot_h + 14, ws[i]->name);
    }
    for (int j = 0; j < nm; j++) {
        int lx = left + nw * group_w + 16, ly = top + j * 18;
        sgl_strbuf_printf(sb,
                          "<rect x=\"%d\" y=\"%d\" width=\"12\" height=\"12\" fill=\"%s\"/>"
                          "<text x=\"%d\" y=\"%d\">%s</text>\n",
                          lx, ly, COLORS[j % 8], lx + 18, ly + 10, ms[j]->name);
    }
#undef YPOS
    return sgl_strbuf_puts(sb, "</svg>\n");
}
