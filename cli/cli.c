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
    const char *v;
    if (cli_opt(argc, argv, i, "--max-file-mb", &v)) {
        double mb = cli_parse_double(cmd, "--max-file-mb", v, 0, 1 << 20);
        l->max_file = mb > 0 ? (size_t)(mb * (1 << 20)) : SIZE_MAX;
    } else if (cli_opt(argc, argv, i, "--max-source-mb", &v)) {
        double mb = cli_parse_double(cmd, "--max-source-mb", v, 0, 1 << 20);
        l->max_source = mb > 0 ? (size_t)(mb * (1 << 20)) : SIZE_MAX;
    } else if (cli_opt(argc, argv, i, "--max-mem-mb", &v)) {
        l->mem_inst = (int64_t)(cli_parse_double(cmd, "--max-mem-mb", v, 0, 1 << 30) * (1 << 20));
    } else if (cli_opt(argc, argv, i, "--max-run-mem-mb", &v)) {
        l->mem_run = (int64_t)(cli_parse_double(cmd, "--max-run-mem-mb", v, 0, 1 << 30) * (1 << 20));
    } else if (cli_opt(argc, argv, i, "--max-fork", &v)) {
        l->fork = cli_parse_long(cmd, "--max-fork", v, 0, 1L << 30);
    } else if (cli_opt(argc, argv, i, "--max-batch", &v)) {
        l->batch = cli_parse_long(cmd, "--max-batch", v, 0, 1L << 30);
    } else {
        return false;
    }
    return true;
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

const char *cli_device_help =
    "  --device D         cpu, cuda or auto (default auto: cuda when a GPU answers)\n";

int cli_take_device(int *argc, char **argv) {
    static const char *const cmds[] = {"run", "repl", "batch", "serve", "bench", "generate",
                                       "model-info"};
    const char *cmd = *argc > 1 ? argv[1] : "";
    bool applies = false;
    for (size_t k = 0; k < SGL_ARRAY_LEN(cmds); k++) applies |= !strcmp(cmd, cmds[k]);
    if (!applies) return 0;
    const char *v = NULL;
    for (int i = 2; i < *argc && strcmp(argv[i], "--") != 0;) {
        int take = 0;
        if (!strcmp(argv[i], "--device")) {
            if (i + 1 >= *argc) {
                fprintf(stderr, "sglc %s: --device needs a value (cpu, cuda or auto)\n", cmd);
                return 2;
            }
            v = argv[i + 1];
            take = 2;
        } else if (!strncmp(argv[i], "--device=", 9)) {
            v = argv[i] + 9;
            take = 1;
        }
        if (!take) {
            i++;
            continue;
        }
        memmove(argv + i, argv + i + take, sizeof(char *) * (size_t)(*argc - i - take + 1));
        *argc -= take;
    }
    if (!v) return 0;
    model_device dev;
    if (model_parse_device(v, &dev)) {
        fprintf(stderr, "sglc %s: invalid value for --device: '%s' (cpu, cuda or auto)\n", cmd, v);
        return 2;
    }
    sgl_error err = {{0}};
    if (dev == MODEL_DEVICE_CUDA && !model_device_available(dev, &err)) {
        fprintf(stderr, "sglc %s: note: %s; running on the CPU\n", cmd, err.msg);
        dev = MODEL_DEVICE_CPU;
    }
    model_set_default_device(dev);
    return 0;
}
