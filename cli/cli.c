/* cli: model path resolution and option parsing shared by the subcommands. */
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

bool cli_opt(int argc, char **argv, int *i, const char *name, const char **value) {
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0) return false;
    if (a[n] == '=') {
        *value = a + n + 1;
        return true;
    }
    if (a[n] != 0) return false;
    if (*i + 1 >= argc) {
        fprintf(stderr, "sglc %s: error: option %s needs a value\n", argv[0], name);
        exit(2);
    }
    *value = argv[++*i];
    return true;
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

bool cli_limit_opt(const char *cmd, int argc, char **argv, int *i, cli_limits *l) {
    for (const cli_option *o = cli_limit_options; o->name; o++) {
        const char *v;
        if (cli_opt(argc, argv, i, o->name, &v)) return cli_limit_set(cmd, o->id, v, l);
    }
    return false;
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
