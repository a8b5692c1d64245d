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

/* ---- --device (every command that runs the local engine) ---- */

const cli_option cli_device_options[] = {
    {CLI_OPT_DEVICE, "--device", NULL, "D", "cpu, cuda or auto (default auto: cuda when a GPU answers)"},
    {0},
};

bool cli_device_set(const char *cmd, int id, const char *v) {
    if (id != CLI_OPT_DEVICE) return false;
    model_device dev;
    if (model_parse_device(v, &dev)) {
        fprintf(stderr, "sglc %s: error: invalid value '%s' for --device (cpu, cuda or auto)\n", cmd, v);
        exit(CLI_EXIT_USAGE);
    }
    sgl_error err = {{0}};
    if (dev == MODEL_DEVICE_CUDA && !model_device_available(dev, &err)) {
        fprintf(stderr, "sglc %s: note: %s; running on the CPU\n", cmd, err.msg);
        dev = MODEL_DEVICE_CPU;
    }
    model_set_default_device(dev);
    return true;
}
