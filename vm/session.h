/* session: what `sglc run`, `sglc batch` and `sglc repl` share: an engine
 * (the local engine on a GGUF model, or the fake engine), the model's chat
 * template, and scripts (an SGL program loaded with the embedded stdlib,
 * checked and compiled), plus helpers to report runtime errors with the
 * source line and to turn results into JSON.
 */
#ifndef SGL_VM_SESSION_H
#define SGL_VM_SESSION_H

#include <stdbool.h>
#include <stdio.h>

#include "compiler/compiler.h"
#include "lang/lang.h"
#include "runtime/chat_template.h"
#include "runtime/engine.h"
#include "runtime/tokenizer.h"
#include "vm/fake_engine.h"
#include "vm/value.h"
#include "vm/vm.h"

typedef struct vm_session_opts {
    const char *model_path;    /* GGUF for the local engine (unless fake) */
    bool fake;                 /* the deterministic fake engine (no model) */
    bool allow_io;
    int opt_level;             /* -1: the compiler's default */
    int n_threads;             /* 0: all cores */
    int kv_mem_mb;             /* 0: engine default */
    bool cache_off;            /* local engine without the radix cache (the fake one ignores it) */
    sgl_sched_policy policy;   /* local engine's waiting-queue order (default LPM) */
    int32_t max_context;       /* 0: the engine's default (the model's context); < 0: none */
    const char *const *search_path;
    size_t n_search_path;
    /* Remote engines (runtime/remote/remote.h) instead of the local one.
     * The chat template then comes from model_path's GGUF when given (only
     * its metadata and vocabulary are read), else from the family named by
     * chat_template ("chatml" when NULL). Borrowed. */
    const struct sgl_remote_config *remote;
    const char *chat_template;
    int api_spec_tokens;       /* vm_config.api_spec_tokens */
    size_t max_file_bytes, max_source_bytes; /* sgl_load_options limits; 0 = default */
    /* sgl_load_options import boundary: the directory imports must stay in
     * (NULL: the script's own directory; "": none, only -I dirs and the
     * standard library) and whether $SGL_PATH is ignored. */
    const char *import_root;
    bool ignore_env;
} vm_session_opts;

vm_session_opts vm_session_opts_default(void);

typedef struct vm_session {
    vm_session_opts opts;
    sgl_engine *engine;
    vm_fake *fake;             /* when opts.fake */
    const sgl_tokenizer *tok;  /* local engine: the engine's own (borrowed) */
    chat_template *ct;
    char *uncond_prompt;       /* BOS text (or "\n") for unconditional select scores */
    double load_seconds;
    char *backend;             /* remote: how capability errors name it (owned) */
    struct gguf_file *gguf;    /* remote with model_path: the template's source (owned) */
    sgl_tokenizer *own_tok;    /* (owned) */
} vm_session;

/* Starts the engine. Returns 0, or -1 with err set (model not loadable). */
int vm_session_open(vm_session *s, const vm_session_opts *o, sgl_error *err);
void vm_session_close(vm_session *s);
/* A VM config for this session (engine, chat template, allow_io). */
vm_config vm_session_config(const vm_session *s);

typedef struct vm_script {
    sgl_program *prog;
    sgl_module *mod;
} vm_script;

/* Loads path (or, when text is non-NULL, text[0..len) named path), with
 * the embedded stdlib as import fallback, checks and compiles it.
 * Diagnostics go to diag (NULL: nowhere; warnings only when
 * show_warnings). Returns 0, or -1 with err set ("N errors" or the
 * compiler's message); *out is always safe to vm_script_free. */
int vm_script_load(const vm_session *s, const char *path, const char *text, size_t len, FILE *diag,
                   bool color, bool show_warnings, vm_script *out, sgl_error *err);
void vm_script_free(vm_script *sc);

/* Writes msg (a VM error: "file:line:col: error: ...\n  in f at ...") to
 * out, with the source line and a caret under the column after the first
 * line when the file is one of the script's. */
void vm_script_print_error(const vm_script *sc, const char *msg, FILE *out);

/* One JSON object describing a finished instance (built with cJSON; caller
 * owns it):
 *   {"status": "ok"|"error", "result": ..., "variables": {...},
 *    "output": "...", "error": null|"...", "seconds": s, "requests": n,
 *    "prompt_tokens": n, "completion_tokens": n, "cached_tokens": n}
 * output (may be NULL) is what the instance printed. Values without a JSON
 * form are written as their str(). NULL on OOM. */
struct cJSON *vm_inst_json_object(const vm_inst *in, const char *output);
/* The same object appended to sb as one line of text. Returns 0 or -1. */
int vm_inst_json(const vm_inst *in, const char *output, sgl_strbuf *sb);
/* A value as a cJSON item: its JSON text exactly as json() writes it (kept
 * raw: exact 64-bit ints), or str(v) as a string when it has no JSON form. */
struct cJSON *vm_value_cjson(vm_value v);

/* A command-line argument as a value: its JSON value when it parses as
 * JSON, else the string itself. New reference. */
vm_value vm_arg_value(const char *arg);

#endif
