/* session.c: engine + chat template setup, script loading with the
 * embedded stdlib, error rendering with source lines. See session.h.
 */
#include "vm/session.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/gguf.h"
#include "runtime/model.h"
#include "runtime/remote/remote.h"
#include "vm/stdlib_sgl.h"

vm_session_opts vm_session_opts_default(void) {
    vm_session_opts o;
    memset(&o, 0, sizeof o);
    o.opt_level = -1;
    return o;
}

/* BOS text (or a newline) for unconditional select scores. */
static char *uncond_for(const sgl_tokenizer *tok) {
    size_t bl = 0;
    int32_t bos = tok ? tok_bos(tok) : -1;
    const char *piece = bos >= 0 ? tok_piece(tok, bos, &bl) : NULL;
    return piece && bl ? sgl_strndup(piece, bl) : sgl_strdup("\n");
}

static int open_remote(vm_session *s, const vm_session_opts *o, sgl_error *err) {
#ifdef SGL_HAVE_REMOTE
    const sgl_remote_config *rc = o->remote;
    s->engine = sgl_engine_remote_new(rc, err);
    if (!s->engine) return -1;
    sgl_strbuf sb = {0};
    sgl_remote_kind k = sgl_remote_engine_kind(s->engine);
    const char *url = strchr(rc->specs[0], ':') + 1;
    sgl_strbuf_printf(&sb, "%s:%s", sgl_remote_kind_name(k), url);
    if (rc->n_specs > 1) sgl_strbuf_printf(&sb, " (and %d more)", rc->n_specs - 1);
    s->backend = sgl_strbuf_take(&sb);
    if (o->model_path) {
        s->gguf = gguf_open(o->model_path, err);
        if (s->gguf) s->own_tok = tok_load_gguf(s->gguf, err);
        if (s->own_tok) s->ct = chat_template_from_gguf(s->gguf, s->own_tok, err);
        if (!s->ct) {
            vm_session_close(s);
            return sgl_error_prefix(err, "%s", o->model_path);
        }
        s->uncond_prompt = uncond_for(s->own_tok);
    } else {
        s->ct = chat_template_from_family(o->chat_template ? o->chat_template : "chatml", err);
        if (!s->ct) {
            vm_session_close(s);
            return -1;
        }
        s->uncond_prompt = sgl_strdup("\n");
    }
    return 0;
#else
    (void)s;
    (void)o;
    return sgl_error_set(err, "remote backends need libcurl, which this build of sglc lacks");
#endif
}

int vm_session_open(vm_session *s, const vm_session_opts *o, sgl_error *err) {
    memset(s, 0, sizeof *s);
    s->opts = *o;
    double t0 = sgl_now();
    if (o->fake) {
        s->engine = vm_fake_engine_new(&s->fake);
        s->ct = chat_template_from_family("chatml", err);
        if (!s->engine || !s->ct) {
            vm_session_close(s);
            return sgl_error_set(err, "out of memory");
        }
        return 0;
    }
    if (o->remote) return open_remote(s, o, err);
    if (!o->model_path) return sgl_error_set(err, "no model given");
    sgl_engine_config cfg = sgl_engine_config_default();
    cfg.model_path = o->model_path;
    cfg.n_threads = o->n_threads;
    if (o->kv_mem_mb > 0) cfg.kv_mem_mb = o->kv_mem_mb;
    cfg.cache_off = o->cache_off;
    cfg.policy = o->policy;
    if (o->max_context) cfg.max_context = o->max_context;
    s->engine = sgl_engine_local_new(&cfg, err);
    if (!s->engine) {
        vm_session_close(s);
        return -1;
    }
    /* The chat template comes from the engine's own GGUF and tokenizer (read
     * once, by the engine), which live as long as the engine. */
    s->tok = sgl_engine_local_tokenizer(s->engine);
    const gguf_file *f = model_get_gguf(sgl_engine_local_model(s->engine));
    s->ct = chat_template_from_gguf(f, s->tok, err);
    if (!s->ct) {
        vm_session_close(s);
        return sgl_error_prefix(err, "%s", o->model_path);
    }
    /* The local engine refuses an empty SCORE prompt: unconditional select
     * scores are taken after BOS (or a newline without one). */
    size_t bl = 0;
    int32_t bos = tok_bos(s->tok);
    const char *piece = bos >= 0 ? tok_piece(s->tok, bos, &bl) : NULL;
    s->uncond_prompt = piece && bl ? sgl_strndup(piece, bl) : sgl_strdup("\n");
    s->load_seconds = sgl_now() - t0;
    return 0;
}

void vm_session_close(vm_session *s) {
    sgl_engine_free(s->engine);
    chat_template_free(s->ct);
    free(s->uncond_prompt);
    free(s->backend);
    if (s->own_tok) tok_free(s->own_tok);
    if (s->gguf) gguf_close(s->gguf);
    memset(s, 0, sizeof *s);
}

vm_config vm_session_config(const vm_session *s) {
    vm_config c = vm_config_default();
    c.engine = s->engine;
    c.chat = s->ct;
    c.allow_io = s->opts.allow_io;
    c.uncond_prompt = s->uncond_prompt;
    c.backend = s->backend;
    c.api_spec_tokens = s->opts.api_spec_tokens;
    return c;
}

int vm_script_load(const vm_session *s, const char *path, const char *text, size_t len, FILE *diag,
                   bool color, bool show_warnings, vm_script *out, sgl_error *err) {
    memset(out, 0, sizeof *out);
    sgl_load_options lo;
    memset(&lo, 0, sizeof lo);
    lo.search_path = s->opts.search_path;
    lo.n_search_path = s->opts.n_search_path;
    lo.provider = vm_stdlib_provider;
    lo.allow_io = s->opts.allow_io;
    lo.max_file_bytes = s->opts.max_file_bytes;
    lo.max_total_bytes = s->opts.max_source_bytes;
    lo.import_root = s->opts.import_root;
    lo.ignore_env = s->opts.ignore_env;
    int rc = text ? sgl_program_load_buffer(&out->prog, path, text, len, &lo)
                  : sgl_program_load_file(&out->prog, path, &lo);
    if (!out->prog) return sgl_error_set(err, "out of memory");
    if (diag && (rc != 0 || (show_warnings && out->prog->diags.n_warnings)))
        sgl_diags_print(out->prog, diag, color);
    if (rc != 0)
        return sgl_error_set(err, "%d error%s", out->prog->diags.n_errors,
                             out->prog->diags.n_errors == 1 ? "" : "s");
    compiler_options co = compiler_options_default();
    if (s->opts.opt_level >= 0) co.opt_level = s->opts.opt_level;
    out->mod = compiler_compile(out->prog, &co, err);
    if (!out->mod) return sgl_error_prefix(err, "compile");
    return 0;
}

void vm_script_free(vm_script *sc) {
    compiler_module_free(sc->mod);
    sgl_program_free(sc->prog);
    memset(sc, 0, sizeof *sc);
}

void vm_script_print_error(const vm_script *sc, const char *msg, FILE *out) {
    const char *nl = strchr(msg, '\n');
    size_t first_len = nl ? (size_t)(nl - msg) : strlen(msg);
    fwrite(msg, 1, first_len, out);
    fputc('\n', out);
    /* "path:line:col: error: ..." -> the source line with a caret. */
    const sgl_program *p = sc ? sc->prog : NULL;
    for (uint32_t i = 0; p && i < p->n_files; i++) {
        const sgl_source *src = &p->files[i];
        size_t pl = strlen(src->path);
        unsigned line = 0, col = 0;
        if (strncmp(msg, src->path, pl) != 0 || msg[pl] != ':') continue;
        if (sscanf(msg + pl, ":%u:%u:", &line, &col) != 2 || line == 0 || line > src->n_lines) continue;
        uint32_t a = src->line_starts[line - 1];
        uint32_t b = line < src->n_lines ? src->line_starts[line] : src->len;
        while (b > a && (src->text[b - 1] == '\n' || src->text[b - 1] == '\r')) b--;
        if (b - a > 200) break;
        fprintf(out, "%5u | %.*s\n      | ", line, (int)(b - a), src->text + a);
        for (unsigned k = 1; k < col && a + k - 1 < b; k++) fputc(src->text[a + k - 1] == '\t' ? '\t' : ' ', out);
        fputs("^\n", out);
        break;
    }
    if (nl) fprintf(out, "%s\n", nl + 1);
}

vm_value vm_arg_value(const char *arg) {
    vm_value v;
    if (vm_json_parse(arg, strlen(arg), &v, NULL) == 0) return v;
    return vm_str_from(arg);
}

cJSON *vm_value_cjson(vm_value v) {
    sgl_strbuf sb = {0};
    if (vm_json_dump(&sb, v, true, NULL) == 0 && sb.data) {
        /* the VM's own JSON text keeps exact 64-bit ints and NUL bytes */
        cJSON *raw = cJSON_CreateRaw(sb.data);
        sgl_strbuf_free(&sb);
        return raw;
    }
    sgl_strbuf_free(&sb);
    vm_value s = vm_to_str(v);
    cJSON *out = NULL;
    if (s.type == VM_STR && vm_json_dump(&sb, s, true, NULL) == 0 && sb.data) out = cJSON_CreateRaw(sb.data);
    sgl_strbuf_free(&sb);
    vm_release(s);
    return out ? out : cJSON_CreateNull();
}

cJSON *vm_inst_json_object(const vm_inst *in, const char *output) {
    vm_inst_stats st;
    vm_inst_stats_get(in, &st);
    bool failed = vm_inst_failed(in);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", failed ? "error" : "ok");
    vm_value r = vm_inst_result(in);
    if (failed || r.type == VM_STREAM) cJSON_AddNullToObject(o, "result");
    else cJSON_AddItemToObject(o, "result", vm_value_cjson(r));
    vm_value vars = vm_inst_vars(in);
    cJSON_AddItemToObject(o, "variables", vars.type == VM_MAP ? vm_value_cjson(vars) : cJSON_CreateObject());
    vm_value ov = vm_str_from(output ? output : "");
    cJSON_AddItemToObject(o, "output", vm_value_cjson(ov));
    vm_release(ov);
    if (failed) {
        vm_value e = vm_str_from(vm_inst_error(in) ? vm_inst_error(in) : "error");
        cJSON_AddItemToObject(o, "error", vm_value_cjson(e));
        vm_release(e);
    } else {
        cJSON_AddNullToObject(o, "error");
    }
    cJSON_AddNumberToObject(o, "seconds", (double)(int64_t)(st.seconds * 1000 + 0.5) / 1000);
    cJSON_AddNumberToObject(o, "requests", (double)st.requests);
    cJSON_AddNumberToObject(o, "prompt_tokens", (double)st.prompt_tokens);
    cJSON_AddNumberToObject(o, "completion_tokens", (double)st.completion_tokens);
    cJSON_AddNumberToObject(o, "cached_tokens", (double)st.cached_tokens);
    return o;
}

int vm_inst_json(const vm_inst *in, const char *output, sgl_strbuf *sb) {
    cJSON *o = vm_inst_json_object(in, output);
    char *text = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!text) return -1;
    int rc = sgl_strbuf_puts(sb, text);
    cJSON_free(text);
    return rc;
}
