/* cli: model path resolution, option values (numbers) and resource limits
 * shared by the subcommands; the option parser itself is args.c. */
#include "cli/cli.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/internal.h"
#include "util/util.h"

char *cli_model_path(const char *flag) {
    if (flag) return sgl_strdup(flag);
    sglc_error err;
    char *path = sglc_default_model_path(&err);
    if (path) return path;
    fprintf(stderr,
            "sglc: error: %s.\n"
            "  scripts/setup fetches the default model and links it into $XDG_DATA_HOME/sglc/models;\n"
            "  or point sglc at any llama-family GGUF file with --model PATH or $SGL_MODEL.\n",
            err.message);
    return NULL;
}

long cli_parse_long(const char *cmd, const char *name, const char *v, long lo, long hi) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "sglc %s: error: invalid value '%s' for %s (expected an integer in [%ld, %ld])\n",
                cmd, v, name, lo, hi);
        exit(2);
    }
    return x;
}

double cli_parse_double(const char *cmd, const char *name, const char *v, double lo, double hi) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || isnan(x) || x < lo || x > hi) {
        fprintf(stderr, "sglc %s: error: invalid value '%s' for %s (expected a number in [%g, %g])\n",
                cmd, v, name, lo, hi);
        exit(2);
    }
    return x;
}

void cli_limits_apply_load(const cli_limits *l, sgl_load_options *o) {
    if (l->max_file) o->max_file_bytes = l->max_file;
    if (l->max_source) o->max_total_bytes = l->max_source;
}

void cli_limits_apply_vm(const cli_limits *l, vm_config *c) {
    if (l->mem_inst >= 0) c->max_mem_inst = l->mem_inst;
    if (l->mem_run >= 0) c->max_mem_run = l->mem_run;
    if (l->fork >= 0) c->max_fork = (uint32_t)l->fork;
    if (l->batch >= 0) c->max_batch = (uint32_t)l->batch;
}
