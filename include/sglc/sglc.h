/* sglc.h: the public C API of libsglc, the library behind the sglc command.
 *
 * Two parts:
 *   engine API   open an inference engine (the local engine on a GGUF model,
 *                or the deterministic fake engine that needs no model),
 *                generate text from a prompt with JSON sampling parameters;
 *   program API  load an SGL program from a file or a text, check and
 *                compile it, run its main or one function with JSON
 *                arguments on an engine, read the result as JSON.
 *
 *   sglc_engine *e = NULL;
 *   sglc_program *p = NULL;
 *   sglc_error err;
 *   char *out = NULL;
 *   sglc_engine_options eo;
 *   sglc_engine_options_init(&eo);                  // default model lookup
 *   if (sglc_engine_open(&eo, &e, &err) == SGLC_OK &&
 *       sglc_program_load_file("quickstart.sgl", NULL, &p, &err) == SGLC_OK &&
 *       sglc_program_run(p, e, "answer", "[\"What is 2+2?\"]", NULL, &out, &err) == SGLC_OK)
 *       puts(out);                                  // {"status": "ok", "result": ...}
 *   else
 *       fprintf(stderr, "%s:%d:%d: %s\n", err.file, err.line, err.col, err.message);
 *   sglc_free(out);
 *   sglc_program_free(p);
 *   sglc_engine_close(e);
 *
 * Conventions. Every call that can fail returns an sglc_status and, when
 * given an sglc_error, fills it (structured: kind, message, file, line,
 * column); nothing in the library prints or exits. Strings returned as
 * char * are NUL-terminated, malloc'd and owned by the caller, who frees
 * them with sglc_free; const char * results are borrowed from the object
 * they came from. NULL is accepted wherever an options pointer, an error
 * pointer or a handle to free is taken. An engine may be used by one thread
 * at a time; programs are read-only once loaded and can run on any engine.
 *
 * Link with `pkg-config --cflags --libs sglc` (shared) or
 * `pkg-config --static --cflags --libs sglc` (static libsglc.a).
 */
#ifndef SGLC_SGLC_H
#define SGLC_SGLC_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SGLC_DEFAULT_MODEL_FILE "SmolLM2-135M-Instruct.Q4_1.gguf"

/* ---- errors -------------------------------------------------------------- */

typedef enum sglc_status {
    SGLC_OK = 0,
    SGLC_ERR_USAGE = 1,   /* a bad argument: NULL where a value is needed, JSON
                             that does not parse, an unknown function, wrong arity */
    SGLC_ERR_COMPILE = 2, /* the program does not load: unreadable file, syntax
                             or check errors (see sglc_program_diagnostics) */
    SGLC_ERR_RUNTIME = 3, /* the program failed while running */
    SGLC_ERR_ENGINE = 4,  /* the engine cannot start (no model, bad GGUF) or
                             refused a request */
    SGLC_ERR_MEMORY = 5   /* out of memory */
} sglc_status;

/* A failure, filled by the call that failed. kind is the status as a word:
 * "usage", "compile", "runtime", "engine" or "memory". file, line and col
 * locate it in a program's source when it has a place ("" and 0 otherwise;
 * line and col are 1-based, col counts bytes). message is one line, without
 * the location; trace holds a runtime error's traceback lines ("in f at
 * file:line:col", newline-separated), "" when none. */
typedef struct sglc_error {
    sglc_status status;
    char kind[16];
    char message[1024];
    char file[512];
    int line, col;
    char trace[1024];
} sglc_error;

/* The error as the JSON document every `sglc ... --json` prints on failure:
 *   {"error": {"message": "...", "file": "..."|null, "line": N|null,
 *              "col": N|null, "kind": "..."}}
 * Returns a malloc'd string (sglc_free), or NULL when memory runs out. */
char *sglc_error_json(const sglc_error *err);

/* "0.1.0". Static storage. */
const char *sglc_version(void);
/* Frees a string (or anything else) the library handed over. NULL ok. */
void sglc_free(void *p);

/* ---- where data lives ------------------------------------------------------ */

/* The default model: $SGL_MODEL when set, else the first readable
 * SGLC_DEFAULT_MODEL_FILE under
 *   $XDG_DATA_HOME/sglc/models (XDG_DATA_HOME defaults to ~/.local/share),
 *   the install prefix's share/sglc/models (found relative to the installed
 *     library or executable, then at the configured prefix),
 *   the source tree's models/ (only for a binary run from its build folder).
 * Returns a malloc'd path (sglc_free), or NULL with err (kind "engine")
 * naming the places searched. */
char *sglc_default_model_path(sglc_error *err);
/* The first existing path REL under $XDG_DATA_HOME/sglc, then the prefix's
 * share/sglc, then (uninstalled binaries only) the source tree, e.g.
 * "bench/workloads". Returns a malloc'd path (sglc_free), or NULL. */
char *sglc_data_path(const char *rel);

/* ---- engine API ------------------------------------------------------------ */

typedef struct sglc_engine sglc_engine;

typedef struct sglc_engine_options {
    const char *model_path; /* GGUF file; NULL: sglc_default_model_path() */
    int fake;               /* nonzero: the fake engine (no model; replies "ok",
                               tokens are bytes; for tests and examples) */
    int n_threads;          /* 0: all cores */
    int kv_mem_mb;          /* KV cache memory; 0: the engine's default */
    int no_cache;           /* nonzero: no radix (prefix) cache */
} sglc_engine_options;

/* Fills o with the defaults (all zero: local engine, default model). */
void sglc_engine_options_init(sglc_engine_options *o);
/* Opens an engine (loads the model). On SGLC_OK *out is the engine (free it
 * with sglc_engine_close); otherwise *out is NULL and err says why. o NULL:
 * the defaults. */
sglc_status sglc_engine_open(const sglc_engine_options *o, sglc_engine **out, sglc_error *err);
/* Generates a continuation of prompt (raw text: apply a chat template
 * yourself, or run a program, which does). params_json (NULL: defaults) is a
 * JSON object with any of: "max_tokens" (default 128), "temperature"
 * (default 0: greedy), "top_p", "top_k", "min_p", "seed", "stop" (array of
 * strings), "ignore_eos", "regex", "json_schema" (object or its text).
 * On SGLC_OK *result_json (sglc_free) is
 *   {"text": "...", "finish": "stop"|"length", "prompt_tokens": N,
 *    "completion_tokens": N, "cached_tokens": N}
 * Waits for the answer. */
sglc_status sglc_engine_generate(sglc_engine *e, const char *prompt, const char *params_json,
                                 char **result_json, sglc_error *err);
/* The engine's name ("local", "fake"). Borrowed from e. */
const char *sglc_engine_name(const sglc_engine *e);
/* Stops the engine and frees it. NULL ok. */
void sglc_engine_close(sglc_engine *e);

/* ---- program API ----------------------------------------------------------- */

typedef struct sglc_program sglc_program;

typedef struct sglc_program_options {
    const char *const *import_path; /* [n_import_path] extra import folders (-I) */
    size_t n_import_path;
    int allow_io;                   /* nonzero: file, HTTP and shell builtins allowed */
    int opt_level;                  /* 0..2; -1: the compiler's default */
} sglc_program_options;

/* Fills o with the defaults (no import folders, no I/O, default level). */
void sglc_program_options_init(sglc_program_options *o);

/* Loads path (and its imports; the standard library is built in), checks
 * and compiles it. Returns SGLC_OK, or SGLC_ERR_COMPILE with err located at
 * the first error. Unless memory runs out, *out is a program either way,
 * so that sglc_program_diagnostics can show every error and warning; free
 * it with sglc_program_free. A program that failed to load cannot run. */
sglc_status sglc_program_load_file(const char *path, const sglc_program_options *o,
                                   sglc_program **out, sglc_error *err);
/* The same for text[0..len) named name (imports resolve from name's folder). */
sglc_status sglc_program_load_text(const char *name, const char *text, size_t len,
                                   const sglc_program_options *o, sglc_program **out,
                                   sglc_error *err);
/* Every diagnostic, rendered as `sglc check` prints them (file:line:col,
 * source line, caret), "" when there are none. Borrowed from p. */
const char *sglc_program_diagnostics(const sglc_program *p);
/* The same as a JSON array of {"level": "error"|"warning"|"note",
 * "message", "file", "line", "col"}. Malloc'd (sglc_free), NULL on OOM. */
char *sglc_program_diagnostics_json(const sglc_program *p);
/* The functions a caller can run, as JSON:
 *   [{"name": "answer", "params": 2, "stream": true}, ...]
 * ("stream": the first parameter is a prompt stream that a call may leave
 * out to run on a fresh one); "main" is listed when the program has a main
 * block. Malloc'd (sglc_free), NULL when p did not load or on OOM. */
char *sglc_program_functions_json(const sglc_program *p);

/* Runs fn (NULL or "main": the main block) of p on engine e until it is
 * done. args_json: a JSON array of the arguments (NULL or "[]": none); a
 * stream function may be given one argument less and runs on a fresh
 * stream. options_json (NULL: none) sets run-wide defaults for every gen,
 * as `sglc run` does: {"temperature": 0, "max_tokens": 32, "seed": 1, ...}
 * (any gen keyword). On SGLC_OK and SGLC_ERR_RUNTIME *result_json
 * (sglc_free) is what `sglc run --json` prints:
 *   {"status": "ok"|"error", "result": ..., "variables": {...},
 *    "output": "what print() wrote", "error": null|"...", "seconds": s,
 *    "requests": N, "prompt_tokens": N, "completion_tokens": N,
 *    "cached_tokens": N}
 * ("result" is null for a function run on a stream: what it generated is in
 * "variables"); on other statuses it is NULL. */
sglc_status sglc_program_run(const sglc_program *p, sglc_engine *e, const char *fn,
                             const char *args_json, const char *options_json,
                             char **result_json, sglc_error *err);
/* Frees a program. NULL ok. */
void sglc_program_free(sglc_program *p);

#ifdef __cplusplus
}
#endif

#endif
