/* bench_constrain: the constraint compiler on a set of cases, with the
 * default model's vocabulary. Prints figures, asserts nothing.
 *
 *   bench_constrain [--model GGUF] [--schemas F] [--regexes F] [--grammars F]
 *                   [--reps N] [--json OUT]
 *
 * Case files are JSON lines: {"name", "schema": {...}, "instances": [text]},
 * {"name", "regex": "...", "instances": [...]}, {"name", "gbnf": "...",
 * "instances": [...]}. Per case: compile time (cons_compile, uncached, N
 * repetitions), then every instance is tokenized and teacher-forced: the
 * mask is computed before each token (timed; masks are cached per DFA state
 * within the program, so a state seen before costs a copy), the token must
 * be in it, and the text must be accepted at the end (else the instance
 * counts as rejected). A token is "forced" when, at its start, the
 * jump-forward bytes cover it whole. Baseline in the same run: the slow
 * reference mask (each token's bytes probed one by one) on every 16th step.
 * Each instance is then forced a second time: the "cached" figures are what
 * later requests with the same constraint pay.
 * Times are this thread's CPU time (the machine may be shared).
 * One row per case, then totals; --json writes both. */
#include <cjson/cJSON.h>
#include <math.h>
#include <time.h>

#include "tests/constrain/cons_test_util.h"

/* This thread's CPU time in seconds: on a shared machine, wall time would
 * count other processes' time slices. */
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct dvec {
    double *v;
    size_t n, cap;
} dvec;

static void dpush(dvec *d, double x) {
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 256;
        d->v = realloc(d->v, sizeof *d->v * d->cap);
    }
    d->v[d->n++] = x;
}

static int cmpd(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double mean(const dvec *d) {
    double s = 0;
    for (size_t i = 0; i < d->n; i++) s += d->v[i];
    return d->n ? s / (double)d->n : 0;
}

static double pct(dvec *d, double p) {
    if (!d->n) return 0;
    qsort(d->v, d->n, sizeof *d->v, cmpd);
    size_t i = (size_t)ceil(p * (double)d->n) - 1;
    return d->v[i < d->n ? i : d->n - 1];
}

typedef struct totals {
    dvec compile_us, mask_us, ref_us, warm_us;
    long tokens, forced, json_tokens, json_forced, rejected, instances, failed_compile;
} totals;

static cons_vocab *V;
static sgl_tokenizer *TOK;
static int REPS = 5;

static void run_case(cons_kind kind, const char *name, const char *text, const cJSON *instances, totals *T,
                     cJSON *rows) {
    dvec cus = {0}, mus = {0};
    cons_diag d;
    cons_program *p = NULL;
    for (int r = 0; r < REPS; r++) {
        double t0 = cpu_now();
        cons_program *q = cons_compile(kind, text, strlen(text), NULL, &d);
        double dt = (cpu_now() - t0) * 1e6;
        if (!q) break;
        dpush(&cus, dt);
        dpush(&T->compile_us, dt);
        if (p) cons_program_release(q);
        else p = q;
    }
    if (!p) {
        printf("%-22s %-7s COMPILE FAILED: %s (%s)\n", name, cons_kind_name(kind), d.message, d.pointer);
        T->failed_compile++;
        return;
    }
    size_t words = cons_mask_words(V);
    uint32_t *mask = malloc(words * 4), *ref = malloc(words * 4);
    long toks = 0, forced = 0, rejected = 0, n_inst = 0;
    for (const cJSON *it = instances ? instances->child : NULL; it; it = it->next) {
        if (!cJSON_IsString(it)) continue;
        const char *s = it->valuestring;
        size_t slen = strlen(s);
        int32_t *ids = NULL;
        size_t n = 0;
        n_inst++;
        if (tok_encode(TOK, s, slen, false, &ids, &n, NULL) != 0) {
            rejected++;
            continue;
        }
        sgl_error err;
        cons_matcher *m = cons_matcher_new(p, V, NULL, 0, &err);
        bool ok = true;
        for (size_t k = 0; k < n && ok; k++) {
            double t0 = cpu_now();
            cons_matcher_mask(m, mask);
            double dt = (cpu_now() - t0) * 1e6;
            dpush(&mus, dt);
            dpush(&T->mask_us, dt);
            if ((toks + (long)k) % 16 == 0) {
                t0 = cpu_now();
                ctu_reference_mask(m, TOK, ref, words);
                dpush(&T->ref_us, (cpu_now() - t0) * 1e6);
            }
            char fb[4096];
            size_t nf = cons_matcher_forced(m, fb, sizeof fb);
            size_t plen;
            tok_piece(TOK, ids[k], &plen);
            if (nf >= plen) forced++;
            if (!((mask[ids[k] >> 5] >> (ids[k] & 31)) & 1) || cons_matcher_accept_token(m, ids[k]) != 0) ok = false;
        }
        if (!ok || !cons_matcher_accepting(m)) {
            rejected++;
            printf("  REJECTED %s: %s\n", name, s);
        }
        toks += (long)n;
        cons_matcher_free(m);
        /* the same text again: every mask now comes from the program's cache,
         * as for later requests with the same constraint */
        m = cons_matcher_new(p, V, NULL, 0, &err);
        for (size_t k = 0; k < n && ok; k++) {
            double t0 = cpu_now();
            cons_matcher_mask(m, mask);
            dpush(&T->warm_us, (cpu_now() - t0) * 1e6);
            cons_matcher_accept_token(m, ids[k]);
        }
        cons_matcher_free(m);
        free(ids);
    }
    T->tokens += toks;
    T->forced += forced;
    T->rejected += rejected;
    T->instances += n_inst;
    if (kind == CONS_JSON_SCHEMA) {
        T->json_tokens += toks;
        T->json_forced += forced;
    }
    double cm = mean(&cus), mm = mean(&mus);
    double fr = toks ? 100.0 * (double)forced / (double)toks : 0;
    double mp99 = pct(&mus, 0.99);
    printf("%-22s %-11s %5s %6d %9.1f %6ld %8.2f %8.2f %6.1f%% %s\n", name, cons_kind_name(kind),
           cons_program_is_dfa(p) ? "dfa" : "earl", cons_program_states(p), cm, toks, mm, mp99, fr,
           rejected ? "REJECTED" : "ok");
    cJSON *row = cJSON_CreateObject();
    cJSON_AddStringToObject(row, "name", name);
    cJSON_AddStringToObject(row, "kind", cons_kind_name(kind));
    cJSON_AddBoolToObject(row, "dfa", cons_program_is_dfa(p));
    cJSON_AddNumberToObject(row, "states", cons_program_states(p));
    cJSON_AddNumberToObject(row, "compile_us_mean", cm);
    cJSON_AddNumberToObject(row, "tokens", (double)toks);
    cJSON_AddNumberToObject(row, "mask_us_mean", mm);
    cJSON_AddNumberToObject(row, "mask_us_p99", mp99);
    cJSON_AddNumberToObject(row, "forced_fraction", toks ? (double)forced / (double)toks : 0);
    cJSON_AddNumberToObject(row, "rejected", (double)rejected);
    cJSON_AddItemToArray(rows, row);
    free(mask);
    free(ref);
    free(cus.v);
    free(mus.v);
    cons_program_release(p);
}

static void run_file(const char *path, const char *key, cons_kind kind, totals *T, cJSON *rows) {
    size_t len;
    sgl_error err;
    char *buf = sgl_read_file(path, &len, &err);
    if (!buf) {
        fprintf(stderr, "bench_constrain: %s\n", err.msg);
        return;
    }
    for (char *line = buf, *nl; line && *line; line = nl) {
        nl = strchr(line, '\n');
        if (nl) *nl++ = 0;
        if (!*line) continue;
        cJSON *c = cJSON_Parse(line);
        const cJSON *name = cJSON_GetObjectItem(c, "name"), *v = cJSON_GetObjectItem(c, key);
        if (!c || !cJSON_IsString(name) || !v) {
            fprintf(stderr, "bench_constrain: %s: bad line: %.60s\n", path, line);
            cJSON_Delete(c);
            continue;
        }
        char *text = cJSON_IsString(v) ? sgl_strdup(v->valuestring) : cJSON_PrintUnformatted(v);
        run_case(kind, name->valuestring, text, cJSON_GetObjectItem(c, "instances"), T, rows);
        free(text);
        cJSON_Delete(c);
    }
    free(buf);
}

int main(int argc, char **argv) {
    const char *model = getenv("SGL_TEST_MODEL"), *schemas = NULL, *regexes = NULL, *grammars = NULL,
               *json = NULL;
    char defmodel[1024];
    snprintf(defmodel, sizeof defmodel, "%s/models/SmolLM2-135M-Instruct.Q4_1.gguf", SGL_SOURCE_ROOT);
    if (!model) model = defmodel;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--model")) model = argv[i + 1];
        else if (!strcmp(argv[i], "--schemas")) schemas = argv[i + 1];
        else if (!strcmp(argv[i], "--regexes")) regexes = argv[i + 1];
        else if (!strcmp(argv[i], "--grammars")) grammars = argv[i + 1];
        else if (!strcmp(argv[i], "--json")) json = argv[i + 1];
        else if (!strcmp(argv[i], "--reps")) REPS = atoi(argv[i + 1]) > 0 ? atoi(argv[i + 1]) : 1;
        else {
            fprintf(stderr, "usage: bench_constrain [--model GGUF] [--schemas F] [--regexes F] [--grammars F] "
                            "[--reps N] [--json OUT]\n");
            return 2;
        }
    }
    if (!schemas && !regexes && !grammars) {
        fprintf(stderr, "bench_constrain: give at least one of --schemas, --regexes, --grammars\n");
        return 2;
    }
    V = ctu_load_vocab(model, &TOK);
    if (!V) return 1;
    printf("vocabulary: %s (%d tokens)\n", model, cons_vocab_size(V));
    printf("%-22s %-11s %5s %6s %9s %6s %8s %8s %7s\n", "case", "kind", "auto", "states", "compile", "tokens",
           "mask", "mask", "forced");
    printf("%-22s %-11s %5s %6s %9s %6s %8s %8s %7s\n", "", "", "", "", "us mean", "", "us mean", "us p99", "");
    totals T = {0};
    cJSON *out = cJSON_CreateObject(), *rows = cJSON_AddArrayToObject(out, "cases");
    if (schemas) run_file(schemas, "schema", CONS_JSON_SCHEMA, &T, rows);
    if (regexes) run_file(regexes, "regex", CONS_REGEX, &T, rows);
    if (grammars) run_file(grammars, "gbnf", CONS_GRAMMAR, &T, rows);
    double cm = mean(&T.compile_us), c50 = pct(&T.compile_us, 0.5), c99 = pct(&T.compile_us, 0.99);
    double mm = mean(&T.mask_us), m50 = pct(&T.mask_us, 0.5), m99 = pct(&T.mask_us, 0.99);
    double rm = mean(&T.ref_us);
    double wm = mean(&T.warm_us), w50 = pct(&T.warm_us, 0.5), w99 = pct(&T.warm_us, 0.99);
    printf("\ntotals: %zu compiles, %ld instances, %ld tokens\n", T.compile_us.n / (size_t)REPS, T.instances,
           T.tokens);
    printf("compile:   mean %.1f us   p50 %.1f us   p99 %.1f us   (targets: mean <= 1000, p99 <= 10000)\n", cm,
           c50, c99);
    printf("mask:      mean %.2f us   p50 %.2f us   p99 %.2f us   (targets: mean <= 20, p99 <= 300)\n", mm, m50,
           m99);
    printf("mask, same texts again (cached): mean %.2f us   p50 %.2f us   p99 %.2f us\n", wm, w50, w99);
    printf("reference: mean %.1f us per mask (per-token probing, every 16th step): %.0fx slower\n", rm,
           mm > 0 ? rm / mm : 0);
    printf("forced by jump-forward: %.1f%% of all tokens, %.1f%% of JSON tokens (target >= 15%%)\n",
           T.tokens ? 100.0 * (double)T.forced / (double)T.tokens : 0,
           T.json_tokens ? 100.0 * (double)T.json_forced / (double)T.json_tokens : 0);
    printf("valid instances rejected: %ld of %ld (target 0); compile failures: %ld\n", T.rejected, T.instances,
           T.failed_compile);
    cJSON *t = cJSON_AddObjectToObject(out, "totals");
    cJSON_AddNumberToObject(t, "compile_us_mean", cm);
    cJSON_AddNumberToObject(t, "compile_us_p50", c50);
    cJSON_AddNumberToObject(t, "compile_us_p99", c99);
    cJSON_AddNumberToObject(t, "mask_us_mean", mm);
    cJSON_AddNumberToObject(t, "mask_us_p50", m50);
    cJSON_AddNumberToObject(t, "mask_us_p99", m99);
    cJSON_AddNumberToObject(t, "warm_mask_us_mean", wm);
    cJSON_AddNumberToObject(t, "warm_mask_us_p50", w50);
    cJSON_AddNumberToObject(t, "warm_mask_us_p99", w99);
    cJSON_AddNumberToObject(t, "reference_mask_us_mean", rm);
    cJSON_AddNumberToObject(t, "forced_fraction", T.tokens ? (double)T.forced / (double)T.tokens : 0);
    cJSON_AddNumberToObject(t, "json_forced_fraction",
                            T.json_tokens ? (double)T.json_forced / (double)T.json_tokens : 0);
    cJSON_AddNumberToObject(t, "rejected", (double)T.rejected);
    cJSON_AddNumberToObject(t, "instances", (double)T.instances);
    cJSON_AddNumberToObject(t, "tokens", (double)T.tokens);
    if (json) {
        char *s = cJSON_Print(out);
        FILE *f = fopen(json, "w");
        if (f) {
            fputs(s, f);
            fputc('\n', f);
            fclose(f);
        }
        free(s);
    }
    cJSON_Delete(out);
    free(T.compile_us.v);
    free(T.mask_us.v);
    free(T.ref_us.v);
    free(T.warm_us.v);
    cons_vocab_free(V);
    tok_free(TOK);
    return 0;
}
