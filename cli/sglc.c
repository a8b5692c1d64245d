/* sglc: the command-line driver. Dispatches to the subcommands listed in
 * commands.def; prints help and version. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

typedef struct {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
} command;

static const command commands[] = {
#define X(name, fn, summary) {name, fn, summary},
#include "cli/commands.def"
#undef X
};

int cmd_not_built(int argc, char **argv) {
    (void)argc;
    fprintf(stderr, "sglc %s: not built yet in this version of sglc.\n", argv[0]);
    return 2;
}

static void usage(FILE *out) {
    fprintf(out,
            "usage: sglc COMMAND [ARGS...]\n"
            "       sglc --help | --version\n\n"
            "SGL programs: prompts, gen/select, fork/join, run on a local RadixAttention engine.\n\n"
            "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-11s %s%s\n", commands[i].name, commands[i].summary,
                commands[i].fn == cmd_not_built ? " (not built yet)" : "");
    fprintf(out, "\nRun 'sglc COMMAND --help' for a command's options (anywhere before `--`).\n"
                 "The model comes from --model PATH, $SGL_MODEL, $XDG_DATA_HOME/sglc/models or\n"
                 "<prefix>/share/sglc/models (scripts/setup links it there). See man sglc.\n"
                 "run, repl, batch, serve, bench, generate and model-info also take\n"
                 "  --device D         cpu, cuda or auto (default auto: cuda when a GPU answers)\n"
                 "Exit status: 0 ok, 1 program or input error, 2 usage or setup error.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *c = argv[1];
    if (!strcmp(c, "--help") || !strcmp(c, "-h") || !strcmp(c, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(c, "--version") || !strcmp(c, "-V")) {
        printf("sglc %s\n", SGL_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(c, commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "sglc: error: unknown command '%s' (see 'sglc --help')\n", c);
    return 2;
}
