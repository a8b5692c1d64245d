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
/* The help text of every command's --model option: the lookup order of
 * cli_model_path. */
#define CLI_MODEL_HELP                                                                         \
    "GGUF model (default: $SGL_MODEL, else " SGL_DEFAULT_MODEL_FILE "\nin $XDG_DATA_HOME/sglc/models, " \
    "then PREFIX/share/sglc/models)"

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

/* Parse numbers or exit 2 with "sglc CMD: invalid value for --name". */
long cli_parse_long(const char *cmd, const char *name, const char *v, long lo, long hi);
double cli_parse_double(const char *cmd, const char *name, const char *v, double lo, double hi);

/* ---- option parsing (cli/args.c) ----
 * Every subcommand parses its argv with cli_next over option tables: GNU
 * conventions (options anywhere before `--`, `--` ends them, --name=VALUE or
 * --name VALUE, -XVALUE or -X VALUE, `-` is an operand meaning standard
 * input). --help and --list-options are accepted by every command (the
 * common table); --help is printed from the tables, so it lists every option
 * the parser accepts. */

/* Exit statuses, the same for every subcommand (docs/cli.md). */
enum { CLI_EXIT_OK = 0, CLI_EXIT_ERROR = 1, CLI_EXIT_USAGE = 2 };

typedef struct cli_option {
    int id;            /* > 0, returned by cli_next */
    const char *name;  /* "--model" or "-O"; NULL with help set: a heading line */
    const char *alias; /* another spelling ("-h") or NULL */
    const char *arg;   /* the value's name ("PATH"), or NULL for a flag */
    const char *help;  /* one or more lines (\n between them) */
} cli_option;          /* a table ends with {0} */

typedef struct cli_spec {
    const char *name;                /* "run" */
    const char *synopsis;            /* "sglc run [options] FILE [ARGS...]" */
    const char *about;               /* prose after the synopsis in --help, or NULL */
    const cli_option *const *tables; /* NULL-terminated list of tables */
    const char *epilog;              /* text after the options, or NULL */
    int json_id;                     /* nonzero: the command takes --json */
    void (*help_extra)(void);        /* prints more --help text to stdout, or NULL */
} cli_spec;

typedef struct cli_args {
    const cli_spec *spec;
    int argc, i;
    char **argv;
    bool no_more_options; /* `--` seen */
    bool json;            /* --json given (usage errors print JSON too) */
    const char *value;    /* the option's value, or the operand */
    const char *opt;      /* the option's name as the table spells it */
} cli_args;

enum {
    CLI_DONE = 0, CLI_OPERAND = -1,
    CLI_OPT_HELP = 1000, CLI_OPT_LIST,
    CLI_OPT_MAX_FILE = 1010, CLI_OPT_MAX_SOURCE, CLI_OPT_MAX_MEM, CLI_OPT_MAX_RUN_MEM,
    CLI_OPT_MAX_FORK, CLI_OPT_MAX_BATCH,
    CLI_OPT_BACKEND = 1100, CLI_OPT_BACKENDS, CLI_OPT_ROUTE, CLI_OPT_API_MODEL,
    CLI_OPT_API_KEY_ENV, CLI_OPT_REQUEST_TIMEOUT, CLI_OPT_RETRIES, CLI_OPT_API_SPEC_TOKENS,
    CLI_OPT_CHAT_TEMPLATE,
    CLI_OPT_DEVICE = 1200,
};

extern const cli_option cli_common_options[];       /* --help, --list-options */
extern const cli_option cli_limit_options[];        /* every resource limit */
extern const cli_option cli_source_limit_options[]; /* --max-file-mb, --max-source-mb */
extern const cli_option cli_backend_options[];      /* --backend ... --chat-template */
extern const cli_option cli_device_options[];       /* --device (the local engine's device) */

void cli_args_init(cli_args *p, const cli_spec *spec, int argc, char **argv);
/* The next option's id (value in p->value), CLI_OPERAND (operand in
 * p->value) or CLI_DONE. Handles --help / --list-options (prints, exits 0)
 * and usage errors (exits 2). */
int cli_next(cli_args *p);
/* Prints "sglc CMD: error: MSG", the synopsis and a --help hint to stderr
 * (and the JSON error document to stdout under --json); exits 2. */
void cli_usage_error(const cli_args *p, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
/* The full --help text of spec. */
void cli_print_help(const cli_spec *spec, FILE *out);
/* Prints {"error": {"message", "file", "line", "col", "kind"}} as one line
 * on stdout (file NULL and line/col <= 0 print null). */
void cli_json_error(const char *kind, const char *message, const char *file, int line, int col);
/* {"message", "file", "line", "col", "kind"} (file NULL, line/col <= 0:
 * null). Returns a new cJSON object (caller owns). */
struct cJSON *cli_error_object(const char *kind, const char *message, const char *file, int line, int col);
/* {"file", "line", "col", "level", "message"} of one diagnostic of p. */
struct cJSON *cli_diag_json(const sgl_program *p, const sgl_diag *d);
/* The error object of p's first error diagnostic (kind "compile"), or of
 * fallback (no location) when p has none. */
struct cJSON *cli_program_error(const sgl_program *p, const char *fallback);
/* Prints root as one line on stdout, frees it. */
void cli_json_print(struct cJSON *root);
/* The error object of a message "path:line:col: error: msg\n..." (the
 * location parsed from its head when it has one; message: what follows
 * "error: "). */
struct cJSON *cli_located_error(const char *kind, const char *msg);
/* The result document of a finished instance: {"status": "ok"|"error",
 * "result", "variables", "output", "error": null|{error object, kind
 * "runtime"}, "seconds", "requests", "prompt_tokens", "completion_tokens",
 * "cached_tokens"}. output (may be NULL): what it printed. Values come from
 * the VM's JSON form (str() where they have none). Caller owns the object. */
struct cJSON *cli_result_json(const vm_inst *in, const char *output);
/* The same keys for a script that did not run (status "compile_error" or
 * "error"): result null, variables {}, output "", counts 0, error err
 * (taken over). */
struct cJSON *cli_result_failed(const char *status, struct cJSON *err);
/* The contents of path, or of standard input for "-" (reading stops a
 * buffer past limit when limit > 0). Returns a malloc'd NUL-terminated text
 * (caller frees) with its length in *len, or NULL after printing an error. */
char *cli_read_input(const char *cmd, const char *path, size_t limit, size_t *len);
/* --device D (cli_device_options): makes D the process default
 * (model_set_default_device); "cuda" where no GPU answers prints a one-line
 * note and runs on the CPU. Returns false for another id; exits 2 on a bad
 * value. */
bool cli_device_set(const char *cmd, int id, const char *v);

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
void cli_backend_init(cli_backend *b);
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
/* Records limit option id (from cli_limit_options) with value v; returns
 * false for another id (exits 2 on a bad value). */
bool cli_limit_set(const char *cmd, int id, const char *v, cli_limits *l);
/* Records backend option id (from cli_backend_options); returns false for
 * another id (exits 2 on a bad value). */
bool cli_backend_set(const char *cmd, int id, const char *v, cli_backend *b);
void cli_limits_apply_load(const cli_limits *l, sgl_load_options *o);
void cli_limits_apply_vm(const cli_limits *l, vm_config *c);

#endif
