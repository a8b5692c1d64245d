/* cli: shared helpers for the sglc subcommands (only cli/ may exit). */
#ifndef SGL_CLI_H
#define SGL_CLI_H

#include <stdbool.h>

#define SGL_DEFAULT_MODEL_FILE "SmolLM2-135M-Instruct.Q4_1.gguf"

/* Handlers named in commands.def. */
#define X(name, fn, summary) int fn(int argc, char **argv);
#include "cli/commands.def"
#undef X
/* The handler of commands.def entries that are not built yet: says so,
 * returns 2. */
int cmd_not_built(int argc, char **argv);

/* Resolves the model path: `flag` (from --model) if non-NULL, else $SGL_MODEL,
 * else the default model under models/ (next to the source tree, then next to
 * the executable's parent directory, then ./models). Returns a malloc'd path
 * (caller frees) or NULL after printing an error saying how to point sglc at
 * a GGUF file. */
char *cli_model_path(const char *flag);

/* Option parsing helpers for "--name VALUE" and "--name=VALUE" forms.
 * If argv[*i] is the option, sets *value, advances *i past it and returns
 * true. Prints an error and exits 2 if the value is missing. */
bool cli_opt(int argc, char **argv, int *i, const char *name, const char **value);
/* Parse numbers or exit 2 with "sglc CMD: invalid value for --name". */
long cli_parse_long(const char *cmd, const char *name, const char *v, long lo, long hi);
double cli_parse_double(const char *cmd, const char *name, const char *v, double lo, double hi);

#endif
