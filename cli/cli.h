/* cli: shared helpers for the sglc subcommands (only cli/ may exit). */
#ifndef SGL_CLI_H
#define SGL_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "runtime/engine.h"
#include "runtime/model.h"
#include "vm/session.h"
#ifdef SGL_HAVE_REMOTE
#include "runtime/remote/remote.h"
#else
typedef struct sgl_remote_config {
    const char *api_model, *api_key_env;
    double timeout_s;
    int max_retries;
} sgl_remote_config;
#endif
#include <stddef.h>
#include <stdint.h>

#include "lang/lang.h"
#include "vm/vm.h"

#define SGL_DEFAULT_MODEL_FILE "SmolLM2-135M-Instruct.Q4_1.gguf"

/* Handlers named in commands.def. */
#define X(name, fn, summary) int fn(int argc, char **argv);
#include "cli/commands.def"
#undef X
/* The handler of commands.def entries that are not built yet: says so,
 * returns 2. */
int cmd_not_built(int argc, char **argv);

/* Resolves the model path: `flag` (from --model) if non-NULL, else
 * sglc_default_model_path() ($SGL_MODEL, $XDG_DATA_HOME/sglc/models, the
 * install prefix's share/sglc/models, the source tree's models/ for the
 * uninstalled binary). Returns a malloc'd path (caller frees) or NULL after
 * printing an error naming the places searched and how to point sglc at a
 * GGUF file. */
char *cli_model_path(const char *flag);

/* Option parsing helpers for "--name VALUE" and "--name=VALUE" forms.
 * If argv[*i] is the option, sets *value, advances *i past it and returns
 * true. Prints an error and exits 2 if the value is missing. */
bool cli_opt(int argc, char **argv, int *i, const char *name, const char **value);
/* Parse numbers or exit 2 with "sglc CMD: invalid value for --name". */
long cli_parse_long(const char *cmd, const char *name, const char *v, long lo, long hi);
double cli_parse_double(const char *cmd, const char *name, const char *v, double lo, double hi);

/* Takes "--device D" / "--device=D" out of argv (the whole command line,
 * before "--") for the commands that run the local engine, and makes D the
 * process default (model_set_default_device). "cuda" where no GPU answers
 * prints a one-line note and runs on the CPU. Returns 0, or 2 after an
 * error message (bad value). */
int cli_take_device(int *argc, char **argv);
/* The usage line for --device. */
extern const char *cli_device_help;

/* ---- remote backends (cli/backend.c) ---- */
#define CLI_MAX_BACKENDS 64
typedef struct cli_backend {
    const char *specs[CLI_MAX_BACKENDS]; /* borrowed from argv or files[] */
    int n_specs;
    char *files[CLI_MAX_BACKENDS];       /* --backends texts (owned) */
    int n_files;
    sgl_remote_config cfg;
    const char *chat_template;
    int api_spec_tokens;
} cli_backend;
extern const char *cli_backend_help;
void cli_backend_init(cli_backend *b);
/* Consumes argv[*i] (and its value) when it is a backend option: returns 1,
 * else 0. Exits 2 on a bad value. */
int cli_backend_opt(const char *cmd, int argc, char **argv, int *i, cli_backend *b);
/* When backends were given: checks the specs (exits 2 on a bad one), points
 * so (may be NULL) at them and returns true. */
bool cli_backend_apply(const char *cmd, cli_backend *b, vm_session_opts *so);
/* One line per endpoint (requests, failures, retries, cached tokens and hit
 * rate where reported) and a total line; nothing for a local engine. */
void cli_backend_stats(const sgl_engine *e, FILE *out);
/* `sglc serve` as a router: policy (cache_aware / prefix / round_robin;
 * NULL: cache_aware) and the remote engine over b's endpoints. Exits 2 on a
 * bad policy or spec; returns the engine (caller frees) or NULL with err. */
sgl_engine *cli_backend_router(const char *cmd, cli_backend *b, const char *policy, sgl_error *err);
void cli_backend_free(cli_backend *b);
/* Checks sc's gen/select calls against the session engine's capabilities;
 * prints each problem with its source line to out. Returns the count. */
int cli_backend_check(const vm_script *sc, const vm_session *s, FILE *out);
/* Resource limits set on the command line (docs/language.md "Limits"):
 * --max-file-mb, --max-source-mb (sources), --max-mem-mb (per instance),
 * --max-run-mem-mb (whole run), --max-fork, --max-batch. Unset fields keep
 * the library defaults. */
typedef struct cli_limits {
    size_t max_file, max_source; /* bytes; 0 = default */
    int64_t mem_inst, mem_run;   /* bytes; -1 = default, 0 = none */
    long fork, batch;            /* -1 = default, 0 = none */
} cli_limits;

#define CLI_LIMITS_INIT {0, 0, -1, -1, -1, -1}
/* The option lines for usage texts. */
#define CLI_LIMITS_USAGE                                                                           \
    "  --max-file-mb N    largest source file (default 4)\n"                                       \
    "  --max-source-mb N  all sources of a program together (default 16)\n"                        \
    "  --max-mem-mb N     values one program instance may hold (default 256; 0: no limit)\n"       \
    "  --max-run-mem-mb N values the whole run may hold (default 1024; 0: no limit)\n"             \
    "  --max-fork N       most branches of one fork (default 1024)\n"                              \
    "  --max-batch N      most instances of one run_batch call (default 100000)\n"

/* If argv[*i] is a limit option, records it, advances *i and returns true
 * (exits 2 on a bad value). */
bool cli_limit_opt(const char *cmd, int argc, char **argv, int *i, cli_limits *l);
void cli_limits_apply_load(const cli_limits *l, sgl_load_options *o);
void cli_limits_apply_vm(const cli_limits *l, vm_config *c);

#endif
