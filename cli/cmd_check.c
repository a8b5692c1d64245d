/* cmd_check: `sglc check FILE...`: parse and check SGL files, print the
 * diagnostics. Exit status: 0 (warnings allowed), 1 on errors, 2 on usage. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "lang/lang.h"
#include "vm/stdlib_sgl.h"

static void check_usage(FILE *out) {
    fprintf(out,
            "usage: sglc check [--allow-io] [-I DIR]... FILE...\n\n"
            "Parses and checks each FILE and everything it imports; prints\n"
            "diagnostics as file:line:col: error: message. Exit status 1 if any\n"
            "file has errors, 0 otherwise (warnings allowed).\n\n"
            "  --allow-io    permit the file/http/shell builtins\n"
            "  -I DIR        also search DIR for imports (after $SGL_PATH)\n"
            "  --quiet       print only errors, not warnings\n"
            "  --max-file-mb N, --max-source-mb N   source size limits (default 4 and 16)\n"
            "  --backend KIND:URL  also check every gen/select against what that backend can\n"
            "                do (select needs logprobs, constraints, sampling fields, ...);\n"
            "                sends no generation request (openai:URL probes the server once)\n"
            "                (the other backend options of `sglc run --help` apply)\n");
}

static bool diag_color(void) {
    const char *nc = getenv("NO_COLOR");
    return isatty(2) && !(nc && *nc);
}

int cmd_check(int argc, char **argv) {
    sgl_load_options opts = {0};
    cli_limits limits = CLI_LIMITS_INIT;
    const char *dirs[64];
    size_t n_dirs = 0;
    bool quiet = false;
    int n_files = 0;
    char **files = calloc((size_t)argc, sizeof *files);
    if (!files) return 2;
    cli_backend bk;
    cli_backend_init(&bk);
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            check_usage(stdout);
            free(files);
            return 0;
        } else if (!strcmp(argv[i], "--allow-io")) {
            opts.allow_io = true;
        } else if (!strcmp(argv[i], "--quiet")) {
            quiet = true;
        } else if (cli_limit_opt("check", argc, argv, &i, &limits)) {
            continue;
        } else if (cli_opt(argc, argv, &i, "-I", &v)) {
            if (n_dirs < SGL_ARRAY_LEN(dirs)) dirs[n_dirs++] = v;
        } else if (cli_backend_opt("check", argc, argv, &i, &bk)) {
            continue;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "sglc check: unknown option '%s'\n", argv[i]);
            check_usage(stderr);
            free(files);
            return 2;
        } else {
            files[n_files++] = argv[i];
        }
    }
    if (n_files == 0) {
        check_usage(stderr);
        free(files);
        return 2;
    }
    cli_limits_apply_load(&limits, &opts);
    opts.provider = vm_stdlib_provider; /* the embedded standard library */
    opts.search_path = dirs;
    opts.n_search_path = n_dirs;
    bool color = diag_color();
    int status = 0;
    for (int f = 0; f < n_files; f++) {
        sgl_program *p = NULL;
        int rc = sgl_program_load_file(&p, files[f], &opts);
        if (!p) {
            fprintf(stderr, "sglc check: out of memory\n");
            free(files);
            return 1;
        }
        if (quiet) {
            /* Drop warnings (and their notes) before printing. */
            size_t k = 0;
            bool keep = true;
            for (size_t i = 0; i < p->diags.len; i++) {
                sgl_diag d = p->diags.items[i];
                if (d.level != SGL_DIAG_NOTE) keep = d.level == SGL_DIAG_ERROR;
                if (keep)
                    p->diags.items[k++] = d;
                else
                    free(d.msg);
            }
            p->diags.len = k;
        }
        sgl_diags_print(p, stderr, color);
        if (rc) status = 1;
        sgl_program_free(p);
    }
    vm_session_opts so = vm_session_opts_default();
    if (status == 0 && cli_backend_apply("check", &bk, &so)) {
        so.allow_io = opts.allow_io;
        so.search_path = dirs;
        so.n_search_path = n_dirs;
        vm_session s;
        sgl_error err = {{0}};
        if (vm_session_open(&s, &so, &err) < 0) {
            fprintf(stderr, "sglc check: %s\n", err.msg);
            status = 2;
        }
        for (int f = 0; status != 2 && f < n_files; f++) {
            vm_script sc;
            if (vm_script_load(&s, files[f], NULL, 0, stderr, color, false, &sc, &err) < 0) {
                fprintf(stderr, "sglc check: %s: %s\n", files[f], err.msg);
                status = 1;
            } else if (cli_backend_check(&sc, &s, stderr) > 0) {
                status = 1;
            }
            vm_script_free(&sc);
        }
        if (status != 2) vm_session_close(&s);
    }
    cli_backend_free(&bk);
    free(files);
    return status;
}
