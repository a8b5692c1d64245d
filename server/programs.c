/* programs: POST /v1/programs/run: an SGL program (source text, or a file
 * under --programs DIR) run server-side on a VM whose engine is a proxy
 * over the shared engine, so its gens, forks and selects batch with every
 * other request and share the radix cache. One instance (args) or a batch
 * (batch: a list of argument lists, run together); each instance's reply is
 * what `sglc run --json` prints. stream: server-sent events with each
 * instance's printed output as it appears, then its result. IO builtins
 * only when the server was started with --allow-io.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/internal.h"
#include "vm/session.h"

static const srv_field program_fields[] = {
    {"source", J_STR | J_NULL}, {"file", J_STR | J_NULL}, {"function", J_STR | J_NULL},
    {"args", J_ARR | J_NULL}, {"batch", J_ARR | J_NULL}, {"stream", J_BOOL | J_NULL},
    {"temperature", J_NUM | J_NULL}, {"max_tokens", J_INT | J_NULL}, {"seed", J_INT64 | J_NULL},
    {"max_steps", J_INT | J_NULL},
};

typedef struct prog_run prog_run;

/* One instance's printed output (and its stream events). */
typedef struct prog_out {
    prog_run *run;
    int index;
    sgl_strbuf text;
    FILE *f;
    vm_inst *in;
} prog_out;

struct prog_run {
    sgl_server *srv;
    vm_script sc;
    vm_session sess;           /* only its opts, chat template and prompt are used */
    vm_value defaults;
    int fi;
    bool fresh, stream, batch;
    int n;
    vm_value **args;           /* [n][n_args[i]] */
    uint32_t *n_args;
    prog_out *outs;            /* [n] */
    uint64_t max_steps;
    volatile bool closed;      /* client gone: the proxy engine cancels */
    /* stream channel */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    sgl_strbuf pending;
    bool finished, thread_started;
    pthread_t thread;
    sgl_strbuf results;        /* non-stream: the reply */
    int64_t prompt_tokens, completion_tokens, cached_tokens;
    double t_first;
};

/* The compiler keeps per-compile state in a global (compiler/lower.c), so
 * program loads are serialised; runs go on in parallel. */
static pthread_mutex_t compile_mu = PTHREAD_MUTEX_INITIALIZER;

static const cJSON *get(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

static void channel_put(prog_run *p, const char *event, cJSON *j) {
    pthread_mutex_lock(&p->mu);
    srv_sse_data(&p->pending, event, j);
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

static ssize_t out_write(void *cookie, const char *buf, size_t n) {
    prog_out *o = cookie;
    sgl_strbuf_append(&o->text, buf, n);
    if (o->run->stream && n) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddNumberToObject(j, "instance", o->index);
        cJSON_AddItemToObject(j, "output", srv_json_str(buf, n));
        channel_put(o->run, "output", j);
    }
    return (ssize_t)n;
}

static void run_free(prog_run *p) {
    for (int i = 0; p->outs && i < p->n; i++) {
        if (p->outs[i].f) fclose(p->outs[i].f);
        sgl_strbuf_free(&p->outs[i].text);
    }
    for (int i = 0; p->args && i < p->n; i++) {
        for (uint32_t k = 0; p->args[i] && k < p->n_args[i]; k++) vm_release(p->args[i][k]);
        free(p->args[i]);
    }
    free(p->args);
    free(p->n_args);
    free(p->outs);
    vm_release(p->defaults);
    vm_script_free(&p->sc);
    sgl_strbuf_free(&p->pending);
    sgl_strbuf_free(&p->results);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

/* The instance's `sglc run --json` object, with its index in a batch. */
static cJSON *inst_json(prog_run *p, int i) {
    prog_out *o = &p->outs[i];
    if (o->f) fflush(o->f);
    sgl_strbuf sb = {0};
    vm_inst_json(o->in, o->text.data ? o->text.data : "", &sb);
    cJSON *j = sb.data ? cJSON_Parse(sb.data) : NULL;
    sgl_strbuf_free(&sb);
    if (!j) j = cJSON_CreateObject();
    vm_inst_stats st;
    vm_inst_stats_get(o->in, &st);
    p->prompt_tokens += st.prompt_tokens;
    p->completion_tokens += st.completion_tokens;
    p->cached_tokens += st.cached_tokens;
    return j;
}

static void done_hook(void *ctx, vm_inst *in) {
    prog_run *p = ctx;
    if (!p->t_first) p->t_first = sgl_now();
    if (!p->stream) return;
    for (int i = 0; i < p->n; i++) {
        if (p->outs[i].in != in) continue;
        cJSON *j = cJSON_CreateObject();
        cJSON_AddNumberToObject(j, "instance", i);
        cJSON_AddItemToObject(j, "result", inst_json(p, i));
        channel_put(p, "result", j);
    }
}

/* Runs every instance to the end on one VM. Returns 0, or -1 with err set
 * (VM-level failure; instance failures are in their results). */
static int run_program(prog_run *p, sgl_error *err) {
    sgl_server *s = p->srv;
    sgl_engine *e = srv_proxy_engine_new(s->disp, &p->closed, &s->metrics);
    if (!e) return sgl_error_set(err, "out of memory");
    vm_config cfg = vm_config_default();
    cfg.engine = e;
    cfg.chat = s->ct;
    cfg.allow_io = s->cfg.allow_io;
    cfg.uncond_prompt = s->uncond_prompt;
    cfg.gen_defaults = p->defaults;
    cfg.max_steps = p->max_steps;
    int rc = -1;
    vm *v = vm_new(&cfg, err);
    if (!v) goto out;
    vm_set_done_hook(v, done_hook, p);
    for (int i = 0; i < p->n; i++) {
        prog_out *o = &p->outs[i];
        o->run = p;
        o->index = i;
        cookie_io_functions_t io = {.write = out_write};
        if (!(o->f = fopencookie(o, "w", io))) {
            sgl_error_set(err, "out of memory");
            goto out;
        }
        setvbuf(o->f, NULL, _IONBF, 0);
        if (!(o->in = vm_spawn(v, p->sc.mod, (uint32_t)p->fi, p->args[i], p->n_args[i], p->fresh, err))) {
            sgl_error_prefix(err, p->batch ? "batch[%d]" : "args", i);
            goto out;
        }
        vm_inst_set_output(o->in, o->f);
    }
    if (vm_run(v, err) < 0) goto out;
    if (!p->stream) {
        cJSON *res;
        if (p->batch) {
            res = cJSON_CreateObject();
            cJSON *a = cJSON_AddArrayToObject(res, "results");
            for (int i = 0; i < p->n; i++) cJSON_AddItemToArray(a, inst_json(p, i));
        } else {
            res = inst_json(p, 0);
        }
        char *t = cJSON_PrintUnformatted(res);
        cJSON_Delete(res);
        if (t) sgl_strbuf_puts(&p->results, t);
        free(t);
    }
    rc = 0;
out:
    for (int i = 0; i < p->n; i++) {
        if (p->outs[i].f) fclose(p->outs[i].f);
        p->outs[i].f = NULL;
        p->outs[i].in = NULL; /* owned by the VM */
    }
    vm_free(v);
    sgl_engine_free(e);
    return rc;
}

static void *stream_thread(void *arg) {
    prog_run *p = arg;
    sgl_error err = {{0}};
    if (run_program(p, &err) < 0) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddItemToObject(j, "error", srv_json_str(err.msg, strlen(err.msg)));
        channel_put(p, "error", j);
    }
    pthread_mutex_lock(&p->mu);
    sgl_strbuf_puts(&p->pending, "data: [DONE]\n\n");
    p->finished = true;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static int prog_produce(srv_stream *st) {
    prog_run *p = st->ctx;
    pthread_mutex_lock(&p->mu);
    if (!p->pending.len && !p->finished) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 200 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&p->cv, &p->mu, &ts);
    }
    if (p->pending.len) {
        sgl_strbuf_append(&st->out, p->pending.data, p->pending.len);
        sgl_strbuf_clear(&p->pending);
    } else if (p->finished) {
        st->done = true;
    }
    pthread_mutex_unlock(&p->mu);
    if (!st->out.len && !st->done && !srv_client_alive(st->req)) return -1;
    return 0;
}

static void prog_finish(srv_stream *st, bool gone) {
    prog_run *p = st->ctx;
    if (gone) p->closed = true;
    if (p->thread_started) pthread_join(p->thread, NULL);
    st->req->prompt_tokens = p->prompt_tokens;
    st->req->completion_tokens = p->completion_tokens;
    st->req->cached_tokens = p->cached_tokens;
    st->req->t_first = p->t_first;
    run_free(p);
}

/* A safe relative name under the programs directory. */
static bool name_ok(const char *f) {
    if (!*f || *f == '/' || strstr(f, "..")) return false;
    for (const char *c = f; *c; c++)
        if (!(('a' <= *c && *c <= 'z') || ('A' <= *c && *c <= 'Z') || ('0' <= *c && *c <= '9') ||
              strchr("_-./", *c)))
            return false;
    return true;
}

/* One argument list (JSON array) as VM values. */
static int args_from(const cJSON *a, vm_value **out, uint32_t *n, const char *path, char *bad, size_t cap,
                     sgl_error *err) {
    if (!cJSON_IsArray(a)) {
        snprintf(bad, cap, "%s", path);
        return sgl_error_set(err, "field '%s' must be a list of arguments", path);
    }
    int cnt = cJSON_GetArraySize(a);
    *out = calloc((size_t)cnt + 1, sizeof **out);
    if (!*out) return sgl_error_set(err, "out of memory");
    *n = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, a) {
        char *t = cJSON_PrintUnformatted(c);
        if (!t || vm_json_parse(t, strlen(t), &(*out)[*n], err) < 0) {
            free(t);
            snprintf(bad, cap, "%s", path);
            return sgl_error_set(err, "field '%s': an argument has no SGL value", path);
        }
        free(t);
        (*n)++;
    }
    return 0;
}

enum MHD_Result route_programs_run(srv_req *r, cJSON *b) {
    sgl_server *s = r->srv;
    char bad[160] = "";
    sgl_error err = {{0}};
    if (srv_check_fields(b, program_fields, SGL_ARRAY_LEN(program_fields), "", bad, sizeof bad, &err))
        return srv_reply_error(r, 400, bad, "%s", err.msg);
    const cJSON *src = get(b, "source"), *file = get(b, "file"), *x;
    if (!src == !file) return srv_reply_error(r, 400, "source", "give exactly one of 'source' and 'file'");
    if (get(b, "args") && get(b, "batch")) return srv_reply_error(r, 400, "batch", "give at most one of 'args' and 'batch'");
    prog_run *p = calloc(1, sizeof *p);
    if (!p) return srv_reply_error(r, 500, NULL, "out of memory");
    p->srv = s;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->defaults = vm_map_new();
    p->stream = cJSON_IsTrue(get(b, "stream"));
    p->max_steps = (x = get(b, "max_steps")) && x->valuedouble > 0 ? (uint64_t)x->valuedouble : 200000000ull;
    enum MHD_Result rc;
    if ((x = get(b, "temperature"))) vm_map_set_cstr(p->defaults, "temperature", vm_float(x->valuedouble), NULL);
    if ((x = get(b, "max_tokens"))) vm_map_set_cstr(p->defaults, "max_tokens", vm_int((int64_t)x->valuedouble), NULL);
    uint64_t seed;
    if ((x = get(b, "seed")) && srv_json_int64(x, &seed) == 0)
        vm_map_set_cstr(p->defaults, "seed", vm_int((int64_t)seed), NULL);

    /* Load, check and compile; diagnostics go back in the error. */
    char path[4096];
    const char *dirs[1] = {s->programs_dir};
    p->sess.opts = vm_session_opts_default();
    p->sess.opts.allow_io = s->cfg.allow_io;
    if (s->programs_dir) {
        p->sess.opts.search_path = dirs;
        p->sess.opts.n_search_path = 1;
    }
    /* Programs sent over HTTP import only the stdlib and --programs DIR. */
    p->sess.opts.import_root = s->programs_dir ? s->programs_dir : "";
    p->sess.opts.ignore_env = true;
    if (file) {
        if (!s->programs_dir) {
            rc = srv_reply_error(r, 400, "file", "the server was started without --programs DIR");
            goto out;
        }
        if (!name_ok(file->valuestring)) {
            rc = srv_reply_error(r, 400, "file", "'%s' is not a plain relative file name", file->valuestring);
            goto out;
        }
        snprintf(path, sizeof path, "%s/%s", s->programs_dir, file->valuestring);
        if (access(path, R_OK) != 0) {
            rc = srv_reply_error(r, 404, "file", "no program '%s' under the programs directory", file->valuestring);
            goto out;
        }
    } else {
        snprintf(path, sizeof path, "request.sgl");
    }
    char *diag = NULL;
    size_t diag_len = 0;
    FILE *df = open_memstream(&diag, &diag_len);
    pthread_mutex_lock(&compile_mu);
    int lrc = vm_script_load(&p->sess, path, src ? src->valuestring : NULL, src ? strlen(src->valuestring) : 0,
                             df, false, false, &p->sc, &err);
    pthread_mutex_unlock(&compile_mu);
    if (df) fclose(df);
    if (lrc < 0) {
        rc = srv_reply_error(r, 400, file ? "file" : "source", "%s%s%s", err.msg, diag && *diag ? ":\n" : "",
                             diag ? diag : "");
        free(diag);
        goto out;
    }
    free(diag);
    const cJSON *fn_name = get(b, "function");
    p->fi = fn_name ? sgl_module_find_fn(p->sc.mod, fn_name->valuestring) : p->sc.mod->entry;
    if (p->fi < 0) {
        rc = fn_name ? srv_reply_error(r, 400, "function", "the program has no function '%s'", fn_name->valuestring)
                     : srv_reply_error(r, 400, "function", "the program has no main block (give 'function')");
        goto out;
    }
    const cJSON *batch = get(b, "batch"), *args = get(b, "args");
    p->batch = batch != NULL;
    p->n = batch ? cJSON_GetArraySize(batch) : 1;
    if (p->n < 1 || p->n > 4096) {
        rc = srv_reply_error(r, 400, "batch", "field 'batch' must hold 1 to 4096 argument lists");
        goto out;
    }
    p->args = calloc((size_t)p->n, sizeof *p->args);
    p->n_args = calloc((size_t)p->n, sizeof *p->n_args);
    p->outs = calloc((size_t)p->n, sizeof *p->outs);
    if (!p->args || !p->n_args || !p->outs) {
        rc = srv_reply_error(r, 500, NULL, "out of memory");
        goto out;
    }
    const sgl_bc_function *fn = &p->sc.mod->fns[p->fi];
    for (int i = 0; i < p->n; i++) {
        char ap[48];
        snprintf(ap, sizeof ap, batch ? "batch[%d]" : "args", i);
        const cJSON *a = batch ? cJSON_GetArrayItem(batch, i) : args;
        if (a && args_from(a, &p->args[i], &p->n_args[i], ap, bad, sizeof bad, &err)) {
            rc = srv_reply_error(r, 400, bad, "%s", err.msg);
            goto out;
        }
        bool fresh = p->n_args[i] + 1 == fn->n_params && (fn->flags & SGL_FNF_STREAM);
        if (!fresh && p->n_args[i] != fn->n_params) {
            rc = srv_reply_error(r, 400, ap, "%s() takes %u argument%s, got %u", fn->name, fn->n_params,
                                 fn->n_params == 1 ? "" : "s", p->n_args[i]);
            goto out;
        }
        if (i > 0 && fresh != p->fresh) {
            rc = srv_reply_error(r, 400, ap, "every argument list of a batch must have the same length");
            goto out;
        }
        p->fresh = fresh;
    }
    srv_metrics_add(&s->metrics, &s->metrics.program_runs, 1);
    srv_metrics_add(&s->metrics, &s->metrics.program_instances, p->n);
    if (p->stream) {
        srv_stream *st = calloc(1, sizeof *st);
        if (!st || pthread_create(&p->thread, NULL, stream_thread, p) != 0) {
            free(st);
            rc = srv_reply_error(r, 500, NULL, "cannot start the program");
            goto out;
        }
        p->thread_started = true;
        st->ctx = p;
        st->produce = prog_produce;
        st->finish = prog_finish;
        return srv_reply_stream(r, st);
    }
    /* Not streamed: run here, noticing a client that leaves. */
    if (run_program(p, &err) < 0) {
        rc = srv_reply_error(r, 500, NULL, "%s", err.msg);
        goto out;
    }
    r->prompt_tokens = p->prompt_tokens;
    r->completion_tokens = p->completion_tokens;
    r->cached_tokens = p->cached_tokens;
    r->t_first = p->t_first;
    rc = srv_reply(r, 200, "application/json", sgl_strbuf_take(&p->results));
out:
    run_free(p);
    return rc;
}
