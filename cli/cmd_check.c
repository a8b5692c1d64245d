/* cmd_check: `sglc check FILE...`: parse and check SGL files (- = standard
 * input), print the diagnostics (--json: also as one JSON object). Exit
 * status: 0 (warnings allowed), 1 on errors, 2 on usage. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "lang/lang.h"
#include "vm/stdlib_sgl.h"

enum { O_ALLOW_IO = 1, O_INCLUDE, O_QUIET, O_JSON };

static const cli_option check_options[] = {
    {O_ALLOW_IO, "--allow-io", NULL, NULL, "permit the file/http/shell builtins"},
    {O_INCLUDE, "-I", NULL, "DIR", "also search DIR for imports (after $SGL_PATH)"},
    {O_QUIET, "--quiet", NULL, NULL, "print only errors, not warnings"},
    {O_JSON, "--json", NULL, NULL,
     "print one JSON object: {\"ok\", \"diagnostics\": [{file, line, col,\n"
     "level, message}], \"error\": the first error or null}"},
    {0},
};

static const cli_option *const check_tables[] = {check_options, cli_source_limit_options, cli_backend_options, NULL};

static const cli_spec check_spec = {
    .name = "check",
    .synopsis = "sglc check [options] FILE...",
    .about = "Parses and checks each FILE (- reads standard input) and everything it\n"
             "imports; prints diagnostics as file:line:col: error: message. Exit status 1\n"
             "if any file has errors, 0 otherwise (warnings allowed).\n"
             "With --backend, also checks every gen/select against what that backend can do\n"
             "(select needs logprobs, constraints, sampling fields, ...); sends no generation\n"
             "request (openai:URL probes the server once).\n",
    .tables = check_tables,
    .json_id = O_JSON,
};

static bool diag_color(void) {
    const char *nc = getenv("NO_COLOR");
    return isatty(2) && !(nc && *nc);
}

int cmd_check(int argc, char **argv) {
    sgl_load_options opts = {0};
    cli_limits limits = CLI_LIMITS_INIT;
    const char *dirs[64];
    size_t n_dirs = 0;
    bool quiet = false, json = false;
    int n_files = 0;
    char **files = calloc((size_t)argc, sizeof *files);
    if (!files) return CLI_EXIT_USAGE;
    cli_backend bk;
    cli_backend_init(&bk);
    cli_args a;
    cli_args_init(&a, &check_spec, argc, argv);
    for (int id; (id = cli_next(&a)) != CLI_DONE;) {
        switch (id) {
        case O_ALLOW_IO: opts.allow_io = true; break;
        case O_QUIET: quiet = true; break;
        case O_JSON: json = true; break;
        case O_INCLUDE:
            if (n_dirs < SGL_ARRAY_LEN(dirs)) dirs[n_dirs++] = a.value;
            break;
        case CLI_OPERAND: files[n_files++] = a.argv[a.i - 1]; break;
        default:
            if (!cli_limit_set("check", id, a.value, &limits)) cli_backend_set("check", id, a.value, &bk);
        }
    }
    if (n_files == 0) cli_usage_error(&a, "FILE is required");
    cli_limits_apply_load(&limits, &opts);
    opts.provider = vm_stdlib_provider; /* the embedded standard library */
    opts.search_path = dirs;
    opts.n_search_path = n_dirs;
    bool color = diag_color();
    int status = CLI_EXIT_OK;
    /* "-": the source read once, shared by both passes. */
    char *stdin_text = NULL;
    size_t stdin_len = 0;
    cJSON *jdiags = json ? cJSON_CreateArray() : NULL;
    for (int f = 0; f < n_files; f++) {
        if (!strcmp(files[f], "-") && !stdin_text) {
            size_t cap = SGL_MIN(limits.max_file ? limits.max_file : SGL_DEFAULT_MAX_FILE,
                                 limits.max_source ? limits.max_source : SGL_DEFAULT_MAX_SOURCE);
            stdin_text = cli_read_input("check", "-", cap, &stdin_len);
        }
        sgl_program *p = NULL;
        int rc = !strcmp(files[f], "-")
                     ? sgl_program_load_buffer(&p, "<stdin>", stdin_text, stdin_len, &opts)
                     : sgl_program_load_file(&p, files[f], &opts);
        if (!p) {
            fprintf(stderr, "sglc check: error: out of memory\n");
            free(files);
            return CLI_EXIT_ERROR;
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
        for (size_t i = 0; jdiags && i < p->diags.len; i++)
            cJSON_AddItemToArray(jdiags, cli_diag_json(p, &p->diags.items[i]));
        if (rc) status = CLI_EXIT_ERROR;
        sgl_program_free(p);
    }
    vm_session_opts so = vm_session_opts_default();
    if (status == CLI_EXIT_OK && cli_backend_apply("check", &bk, &so)) {
        so.allow_io = opts.allow_io;
        so.search_path = dirs;
        so.n_search_path = n_dirs;
        vm_session s;
        sgl_error err = {{0}};
        if (vm_session_open(&s, &so, &err) < 0) {
            fprintf(stderr, "sglc check: error: %s\n", err.msg);
            status = CLI_EXIT_USAGE;
        }
        for (int f = 0; status != CLI_EXIT_USAGE && f < n_files; f++) {
            vm_script sc;
            bool in = !strcmp(files[f], "-");
            if (vm_script_load(&s, in ? "<stdin>" : files[f], in ? stdin_text : NULL, in ? stdin_len : 0, stderr,
                               color, false, &sc, &err) < 0) {
                fprintf(stderr, "sglc check: error: %s: %s\n", files[f], err.msg);
                status = CLI_EXIT_ERROR;
            } else if (cli_backend_check(&sc, &s, stderr) > 0) {
                status = CLI_EXIT_ERROR;
            }
            vm_script_free(&sc);
        }
        if (status != CLI_EXIT_USAGE) vm_session_close(&s);
    }
    if (json) {
        cJSON *root = cJSON_CreateObject();
        cJSON_AddBoolToObject(root, "ok", status == CLI_EXIT_OK);
        cJSON_AddItemToObject(root, "diagnostics", jdiags);
        cJSON *first = NULL;
        for (cJSON *d = jdiags->child; d && !first; d = d->next)
            if (!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(d, "level")), "error")) first = d;
        if (first)
            cJSON_AddItemToObject(root, "error",
                                  cli_error_object("compile", cJSON_GetStringValue(cJSON_GetObjectItem(first, "message")),
                                                   cJSON_GetStringValue(cJSON_GetObjectItem(first, "file")),
                                                   (int)cJSON_GetNumberValue(cJSON_GetObjectItem(first, "line")),
                                                   (int)cJSON_GetNumberValue(cJSON_GetObjectItem(first, "col"))));
        else if (status != CLI_EXIT_OK)
            cJSON_AddItemToObject(root, "error", cli_error_object(status == CLI_EXIT_USAGE ? "setup" : "compile",
                                                                  "the backend check failed", NULL, 0, 0));
        else
            cJSON_AddNullToObject(root, "error");
        cli_json_print(root);
    }
    cli_backend_free(&bk);
    free(stdin_text);
    free(files);
    return status;
}
