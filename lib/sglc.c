/* sglc.c: the engine and program API of include/sglc/sglc.h over the
 * project's own layers: vm/session (engine + chat template, script loading
 * with the embedded stdlib), the compiler, SGVM and runtime/engine.h. It
 * turns their sgl_error messages and diagnostics into structured
 * sglc_error values; nothing here prints or exits. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "include/sglc/sglc.h"
#include "lib/internal.h"
#include "vm/session.h"
#include "vm/vm.h"

struct sglc_engine {
    vm_session s;
    char *model_path;
    char name[32];
};

struct sglc_program {
    vm_script sc;
    bool ok;
    bool allow_io;
    char *diag_text;
    char *load_error; /* a failure that is not a diagnostic (compiler message) */
};

/* ---- engine ----------------------------------------------------------------- */

void sglc_engine_options_init(sglc_engine_options *o) {
    if (o) memset(o, 0, sizeof *o);
}

sglc_status sglc_engine_open(const sglc_engine_options *o, sglc_engine **out, sglc_error *err) {
    sglc_error_clear(err);
    if (!out) return sglc_error_set(err, SGLC_ERR_USAGE, "sglc_engine_open: out is NULL");
    *out = NULL;
    sglc_engine_options def;
    sglc_engine_options_init(&def);
    if (!o) o = &def;
    sglc_engine *e = calloc(1, sizeof *e);
    if (!e) return sglc_error_set(err, SGLC_ERR_MEMORY, "out of memory");
    vm_session_opts so = vm_session_opts_default();
    so.fake = o->fake != 0;
    so.n_threads = o->n_threads;
    so.kv_mem_mb = o->kv_mem_mb;
    so.cache_off = o->no_cache != 0;
    if (!so.fake) {
        e->model_path = o->model_path ? strdup(o->model_path) : sglc_default_model_path(err);
        if (!e->model_path) {
            free(e);
            return o->model_path ? sglc_error_set(err, SGLC_ERR_MEMORY, "out of memory") : err ? err->status : SGLC_ERR_ENGINE;
        }
        so.model_path = e->model_path;
    }
    sgl_error se = {{0}};
    if (vm_session_open(&e->s, &so, &se) < 0) {
        sglc_error_set(err, SGLC_ERR_ENGINE, "%s", se.msg);
        free(e->model_path);
        free(e);
        return SGLC_ERR_ENGINE;
    }
    snprintf(e->name, sizeof e->name, "%s", so.fake ? "fake" : "local");
    *out = e;
    return SGLC_OK;
}

const char *sglc_engine_name(const sglc_engine *e) {
    return e ? e->name : "";
}

void sglc_engine_close(sglc_engine *e) {
    if (!e) return;
    vm_session_close(&e->s);
    free(e->model_path);
    free(e);
}

/* Reads the sampling fields of params (a JSON object) into p. The strings
 * p points at are borrowed from params. Returns 0, or -1 with err set. */
static int read_params(const cJSON *params, sgl_sampling_params *p, const char **stops, int max_stop,
                       char **schema_text, sglc_error *err) {
    p->temperature = 0;
    if (!params) return 0;
    if (!cJSON_IsObject(params)) {
        sglc_error_set(err, SGLC_ERR_USAGE, "params: expected a JSON object");
        return -1;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, params) {
        const char *k = it->string;
        bool num = cJSON_IsNumber(it);
        if (!strcmp(k, "max_tokens") && num) p->max_new_tokens = (int32_t)it->valuedouble;
        else if (!strcmp(k, "temperature") && num) p->temperature = (float)it->valuedouble;
        else if (!strcmp(k, "top_p") && num) p->top_p = (float)it->valuedouble;
        else if (!strcmp(k, "top_k") && num) p->top_k = (int32_t)it->valuedouble;
        else if (!strcmp(k, "min_p") && num) p->min_p = (float)it->valuedouble;
        else if (!strcmp(k, "seed") && num) p->seed = (uint64_t)it->valuedouble;
        else if (!strcmp(k, "ignore_eos") && cJSON_IsBool(it)) p->ignore_eos = cJSON_IsTrue(it);
        else if (!strcmp(k, "regex") && cJSON_IsString(it)) p->regex = it->valuestring;
        else if (!strcmp(k, "json_schema") && cJSON_IsString(it)) p->json_schema = it->valuestring;
        else if (!strcmp(k, "json_schema") && cJSON_IsObject(it)) {
            *schema_text = cJSON_PrintUnformatted(it);
            if (!*schema_text) {
                sglc_error_set(err, SGLC_ERR_MEMORY, "out of memory");
                return -1;
            }
            p->json_schema = *schema_text;
        } else if (!strcmp(k, "stop") && cJSON_IsArray(it)) {
            const cJSON *s;
            int n = 0;
            cJSON_ArrayForEach(s, it) {
                if (!cJSON_IsString(s) || n == max_stop) {
                    sglc_error_set(err, SGLC_ERR_USAGE, "params: \"stop\" takes at most %d strings", max_stop);
                    return -1;
                }
                stops[n++] = s->valuestring;
            }
            p->stop = stops;
            p->n_stop = n;
        } else {
            sglc_error_set(err, SGLC_ERR_USAGE, "params: unknown key or wrong type: \"%s\"", k);
            return -1;
        }
    }
    return 0;
}

sglc_status sglc_engine_generate(sglc_engine *e, const char *prompt, const char *params_json,
                                 char **result_json, sglc_error *err) {
    sglc_error_clear(err);
    if (result_json) *result_json = NULL;
    if (!e || !prompt || !result_json)
        return sglc_error_set(err, SGLC_ERR_USAGE, "sglc_engine_generate: engine, prompt and result_json are required");
    cJSON *params = NULL;
    if (params_json && !(params = cJSON_Parse(params_json)))
        return sglc_error_set(err, SGLC_ERR_USAGE, "params: not valid JSON");
    sgl_request req;
    memset(&req, 0, sizeof req);
    req.kind = SGL_REQ_GENERATE;
    req.text = prompt;
    req.params = sgl_sampling_params_default();
    const char *stops[64];
    char *schema_text = NULL;
    sglc_status st = SGLC_OK;
    if (read_params(params, &req.params, stops, 64, &schema_text, err) < 0) {
        st = err ? err->status : SGLC_ERR_USAGE;
        goto done;
    }
    sgl_error se = {{0}};
    uint64_t id = sgl_engine_submit(e->s.engine, &req, &se);
    if (!id) {
        st = sglc_error_set(err, SGLC_ERR_ENGINE, "%s", se.msg);
        goto done;
    }
    sgl_result *r = NULL;
    while ((r = sgl_engine_wait(e->s.engine, -1)) && (r->id != id || r->partial)) sgl_result_free(r);
    if (!r) {
        st = sglc_error_set(err, SGLC_ERR_ENGINE, "the engine stopped before answering");
        goto done;
    }
    if (r->finish == SGL_FINISH_ABORT) {
        st = sglc_error_set(err, SGLC_ERR_ENGINE, "%s", r->error ? r->error : "request failed");
    } else {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "text", r->text);
        cJSON_AddStringToObject(o, "finish", sgl_finish_name(r->finish));
        cJSON_AddNumberToObject(o, "prompt_tokens", r->prompt_tokens);
        cJSON_AddNumberToObject(o, "completion_tokens", r->completion_tokens);
        cJSON_AddNumberToObject(o, "cached_tokens", r->cached_tokens);
        *result_json = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        if (!*result_json) st = sglc_error_set(err, SGLC_ERR_MEMORY, "out of memory");
    }
    sgl_result_free(r);
done:
    free(schema_text);
    cJSON_Delete(params);
    return st;
}

/* ---- programs ---------------------------------------------------------------- */

void sglc_program_options_init(sglc_program_options *o) {
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->opt_level = -1;
}

/* Locates err at the program's first error diagnostic, when it has one. */
static void locate_first_error(const sgl_program *prog, sglc_error *err) {
    if (!prog || !err) return;
    for (size_t i = 0; i < prog->diags.len; i++) {
        const sgl_diag *d = &prog->diags.items[i];
        if (d->level != SGL_DIAG_ERROR) continue;
        snprintf(err->message, sizeof err->message, "%s", d->msg);
        if (d->has_loc && d->loc.file < prog->n_files) {
            const sgl_source *src = &prog->files[d->loc.file];
            uint32_t line = 0, col = 0;
            sgl_source_line_col(src, d->loc.start, &line, &col);
            snprintf(err->file, sizeof err->file, "%s", src->path);
            err->line = (int)line;
            err->col = (int)col;
        }
        return;
    }
}

static sglc_status load(const char *path, const char *text, size_t len, const sglc_program_options *o,
                        sglc_program **out, sglc_error *err) {
    sglc_error_clear(err);
    if (!out || !path) return sglc_error_set(err, SGLC_ERR_USAGE, "sglc_program_load: path and out are required");
    *out = NULL;
    sglc_program_options def;
    sglc_program_options_init(&def);
    if (!o) o = &def;
    sglc_program *p = calloc(1, sizeof *p);
    if (!p) return sglc_error_set(err, SGLC_ERR_MEMORY, "out of memory");
    p->allow_io = o->allow_io != 0;
    /* Only the session's options matter for loading: no engine is opened. */
    vm_session s;
    memset(&s, 0, sizeof s);
    s.opts = vm_session_opts_default();
    s.opts.search_path = o->import_path;
    s.opts.n_search_path = o->n_import_path;
    s.opts.allow_io = p->allow_io;
    s.opts.opt_level = o->opt_level;
    char *dbuf = NULL;
    size_t dlen = 0;
    FILE *diag = open_memstream(&dbuf, &dlen);
    if (!diag) {
        free(p);
        return sglc_error_set(err, SGLC_ERR_MEMORY, "out of memory");
    }
    sgl_error se = {{0}};
    int rc = vm_script_load(&s, path, text, len, diag, false, true, &p->sc, &se);
    fclose(diag);
    p->diag_text = dbuf ? dbuf : strdup("");
    if (!p->sc.prog) {
        sglc_program_free(p);
        return sglc_error_set(err, SGLC_ERR_MEMORY, "out of memory");
    }
    *out = p;
    if (rc == 0) {
        p->ok = true;
        return SGLC_OK;
    }
    sglc_error_set(err, SGLC_ERR_COMPILE, "%s", se.msg);
    if (p->sc.prog->diags.n_errors > 0) locate_first_error(p->sc.prog, err);
    else p->load_error = strdup(se.msg);
    return SGLC_ERR_COMPILE;
}

sglc_status sglc_program_load_file(const char *path, const sglc_program_options *o, sglc_program **out,
                                   sglc_error *err) {
    return load(path, NULL, 0, o, out, err);
}

sglc_status sglc_program_load_text(const char *name, const char *text, size_t len,
                                   const sglc_program_options *o, sglc_program **out, sglc_error *err) {
    if (!text) {
        if (out) *out = NULL;
        return sglc_error_set(err, SGLC_ERR_USAGE, "sglc_program_load_text: text is NULL");
    }
    return load(name ? name : "<text>", text, len, o, out, err);
}

const char *sglc_program_diagnostics(const sglc_program *p) {
    return p && p->diag_text ? p->diag_text : "";
}

char *sglc_program_diagnostics_json(const sglc_program *p) {
    cJSON *arr = cJSON_CreateArray();
    if (!arr) return NULL;
    static const char *const levels[] = {"error", "warning", "note"};
    const sgl_program *prog = p ? p->sc.prog : NULL;
    for (size_t i = 0; prog && i < prog->diags.len; i++) {
        const sgl_diag *d = &prog->diags.items[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(arr, o);
        cJSON_AddStringToObject(o, "level", d->level <= SGL_DIAG_NOTE ? levels[d->level] : "error");
        cJSON_AddStringToObject(o, "message", d->msg);
        if (d->has_loc && d->loc.file < prog->n_files) {
            const sgl_source *src = &prog->files[d->loc.file];
            uint32_t line = 0, col = 0;
            sgl_source_line_col(src, d->loc.start, &line, &col);
            cJSON_AddStringToObject(o, "file", src->path);
            cJSON_AddNumberToObject(o, "line", line);
            cJSON_AddNumberToObject(o, "col", col);
        } else {
            cJSON_AddNullToObject(o, "file");
            cJSON_AddNullToObject(o, "line");
            cJSON_AddNullToObject(o, "col");
        }
    }
    if (p && p->load_error) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(arr, o);
        cJSON_AddStringToObject(o, "level", "error");
        cJSON_AddStringToObject(o, "message", p->load_error);
        cJSON_AddNullToObject(o, "file");
        cJSON_AddNullToObject(o, "line");
        cJSON_AddNullToObject(o, "col");
    }
    char *s = cJSON_PrintUnformatted(arr);
    cJSON_Delete(arr);
    return s;
}

char *sglc_program_functions_json(const sglc_program *p) {
    if (!p || !p->ok || !p->sc.mod) return NULL;
    const sgl_module *m = p->sc.mod;
    cJSON *arr = cJSON_CreateArray();
    for (uint32_t i = 0; arr && i < m->n_fns; i++) {
        const sgl_bc_function *f = &m->fns[i];
        /* The root module's functions (module 0) and main; imports' stay out. */
        if (f->module != 0 && !(f->flags & SGL_FNF_MAIN)) continue;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(arr, o);
        cJSON_AddStringToObject(o, "name", f->name);
        cJSON_AddNumberToObject(o, "params", f->n_params);
        cJSON_AddBoolToObject(o, "stream", (f->flags & SGL_FNF_STREAM) != 0);
    }
    char *s = arr ? cJSON_PrintUnformatted(arr) : NULL;
    cJSON_Delete(arr);
    return s;
}

/* Fills err from a VM error message "file:line:col: error: msg\n  in ...". */
static void runtime_error(const char *msg, sglc_error *err) {
    sglc_error_set(err, SGLC_ERR_RUNTIME, "%s", msg ? msg : "the program failed");
    if (!err || !msg) return;
    const char *nl = strchr(msg, '\n');
    size_t first = nl ? (size_t)(nl - msg) : strlen(msg);
    const char *tag = strstr(msg, ": error: ");
    if (tag && (size_t)(tag - msg) < first) {
        /* file:line:col before the tag; the file may itself hold colons. */
        const char *c2 = tag;
        const char *c1 = NULL, *c0 = NULL;
        for (const char *q = msg; q < c2; q++)
            if (*q == ':') c0 = c1, c1 = q;
        if (c0 && c1) {
            int line = atoi(c0 + 1), col = atoi(c1 + 1);
            if (line > 0 && col > 0) {
                snprintf(err->file, sizeof err->file, "%.*s", (int)(c0 - msg), msg);
                err->line = line;
                err->col = col;
            }
        }
        const char *m = tag + strlen(": error: ");
        snprintf(err->message, sizeof err->message, "%.*s", (int)(msg + first - m), m);
    } else {
        snprintf(err->message, sizeof err->message, "%.*s", (int)first, msg);
    }
    if (nl) {
        const char *t = nl + 1;
        while (*t == ' ') t++;
        snprintf(err->trace, sizeof err->trace, "%s", t);
        size_t n = strlen(err->trace);
        while (n && err->trace[n - 1] == '\n') err->trace[--n] = 0;
    }
}

/* Parses json (NULL: leaves *out as it is) into *out, which must come out
 * as want (a list or a map); what names the argument in the error. */
static sglc_status parse_json_arg(const char *what, const char *json, vm_type want, vm_value *out,
                                  sglc_error *err) {
    sgl_error se = {{0}};
    if (!json) return SGLC_OK;
    if (vm_json_parse(json, strlen(json), out, &se) < 0)
        return sglc_error_set(err, SGLC_ERR_USAGE, "%s: %s", what, se.msg);
    if (out->type != want)
        return sglc_error_set(err, SGLC_ERR_USAGE, "%s: expected a JSON %s", what,
                              want == VM_LIST ? "array" : "object");
    return SGLC_OK;
}

sglc_status sglc_program_run(const sglc_program *p, sglc_engine *e, const char *fn,
                             const char *args_json, const char *options_json, char **result_json,
                             sglc_error *err) {
    sglc_error_clear(err);
    if (result_json) *result_json = NULL;
    if (!p || !e || !result_json)
        return sglc_error_set(err, SGLC_ERR_USAGE, "sglc_program_run: program, engine and result_json are required");
    if (!p->ok) return sglc_error_set(err, SGLC_ERR_COMPILE, "the program did not load; it cannot run");
    const sgl_module *m = p->sc.mod;
    int fi = m->entry;
    if (fn && strcmp(fn, "main")) {
        fi = sgl_module_find_fn(m, fn);
        if (fi < 0) return sglc_error_set(err, SGLC_ERR_USAGE, "the program has no function '%s'", fn);
    } else if (fi < 0) {
        return sglc_error_set(err, SGLC_ERR_USAGE, "the program has no main block");
    }
    sgl_error se = {{0}};
    vm_value args = vm_none(), defaults = vm_none();
    sglc_status st = SGLC_OK;
    vm *v = NULL;
    char *outbuf = NULL;
    size_t outlen = 0;
    FILE *out = NULL;
    if ((st = parse_json_arg("arguments", args_json, VM_LIST, &args, err)) ||
        (st = parse_json_arg("options", options_json, VM_MAP, &defaults, err)))
        goto done;
    uint32_t n_args = args.type == VM_LIST ? vm_list_len(args) : 0;
    const sgl_bc_function *f = &m->fns[fi];
    bool fresh = false;
    if (n_args + 1 == f->n_params && (f->flags & SGL_FNF_STREAM)) {
        fresh = true;
    } else if (n_args != f->n_params) {
        st = sglc_error_set(err, SGLC_ERR_USAGE, "%s() takes %u argument%s, got %u", f->name, f->n_params,
                            f->n_params == 1 ? "" : "s", n_args);
        goto done;
    }
    out = open_memstream(&outbuf, &outlen);
    if (!out) {
        st = sglc_error_set(err, SGLC_ERR_MEMORY, "out of memory");
        goto done;
    }
    vm_config cfg = vm_session_config(&e->s);
    cfg.allow_io = p->allow_io;
    cfg.out = out;
    if (defaults.type == VM_MAP) cfg.gen_defaults = defaults;
    if (!(v = vm_new(&cfg, &se))) {
        st = sglc_error_set(err, SGLC_ERR_MEMORY, "%s", se.msg);
        goto done;
    }
    vm_value *vals = calloc(n_args + 1, sizeof *vals);
    if (!vals) {
        st = sglc_error_set(err, SGLC_ERR_MEMORY, "out of memory");
        goto done;
    }
    for (uint32_t i = 0; i < n_args; i++) vals[i] = vm_list_get(args, i);
    vm_inst *in = vm_spawn(v, m, (uint32_t)fi, vals, n_args, fresh, &se);
    free(vals);
    if (!in) {
        st = sglc_error_set(err, SGLC_ERR_USAGE, "%s", se.msg);
        goto done;
    }
    if (vm_run(v, &se) < 0) {
        st = sglc_error_set(err, SGLC_ERR_MEMORY, "%s", se.msg);
        goto done;
    }
    fflush(out);
    sgl_strbuf sb = {0};
    if (vm_inst_json(in, outbuf, &sb) < 0 || !sb.data) {
        sgl_strbuf_free(&sb);
        st = sglc_error_set(err, SGLC_ERR_MEMORY, "out of memory");
        goto done;
    }
    *result_json = sgl_strbuf_take(&sb);
    if (vm_inst_failed(in)) {
        runtime_error(vm_inst_error(in), err);
        st = SGLC_ERR_RUNTIME;
    }
done:
    vm_free(v);
    if (out) fclose(out);
    free(outbuf);
    vm_release(args);
    vm_release(defaults);
    return st;
}

void sglc_program_free(sglc_program *p) {
    if (!p) return;
    vm_script_free(&p->sc);
    free(p->diag_text);
    free(p->load_error);
    free(p);
}
