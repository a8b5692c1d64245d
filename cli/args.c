/* args: the one option parser every sglc subcommand uses (cli.h, "option
 * parsing"). GNU conventions: options anywhere before `--`, `--` ends them,
 * `--name=VALUE` or `--name VALUE`, `-XVALUE` or `-X VALUE`, `-` is an
 * operand (standard input). Unknown options, missing values and values given
 * to flags are usage errors: a message, the synopsis and exit status 2 (with
 * a JSON error document on stdout when --json was given). --help prints the
 * help made from the same option tables the parser accepts; --list-options
 * prints those options one a line. */
#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "util/util.h"

const cli_option cli_common_options[] = {
    {CLI_OPT_HELP, "--help", "-h", NULL, "print this help and exit"},
    {CLI_OPT_LIST, "--list-options", NULL, NULL, "print the options this command accepts, one a line"},
    {0},
};

static bool is_end(const cli_option *o) { return !o->name && !o->help; }

/* The tables of spec, then the common ones. Calls f(o, ctx) on each option
 * (headings included); stops and returns the option when f returns true. */
static const cli_option *each_option(const cli_spec *spec, bool (*f)(const cli_option *, void *), void *ctx) {
    for (int t = 0; spec->tables && spec->tables[t]; t++)
        for (const cli_option *o = spec->tables[t]; !is_end(o); o++)
            if (f(o, ctx)) return o;
    for (const cli_option *o = cli_common_options; !is_end(o); o++)
        if (f(o, ctx)) return o;
    return NULL;
}

/* Prints "  -h, --help ARG" padded to the help column, then the help text
 * with its continuation lines indented to the same column. */
static bool print_option(const cli_option *o, void *ctx) {
    FILE *out = ctx;
    if (!o->name) {
        fprintf(out, "\n%s\n", o->help);
        return false;
    }
    char head[128];
    int n = snprintf(head, sizeof head, "  %s%s%s%s%s", o->alias ? o->alias : "", o->alias ? ", " : "",
                     o->name, o->arg ? " " : "", o->arg ? o->arg : "");
    const int col = 24;
    fputs(head, out);
    const char *h = o->help ? o->help : "";
    bool first = true;
    while (*h || first) {
        const char *nl = strchr(h, '\n');
        size_t len = nl ? (size_t)(nl - h) : strlen(h);
        if (first && n < col - 1) fprintf(out, "%*s", col - n, "");
        else if (first) fprintf(out, "\n%*s", col, "");
        else fprintf(out, "%*s", col, "");
        fprintf(out, "%.*s\n", (int)len, h);
        first = false;
        h = nl ? nl + 1 : h + len;
        if (!nl) break;
    }
    return false;
}

void cli_print_help(const cli_spec *spec, FILE *out) {
    fprintf(out, "usage: %s\n", spec->synopsis);
    if (spec->about) fprintf(out, "\n%s", spec->about);
    fprintf(out, "\noptions:\n");
    each_option(spec, print_option, out);
    if (spec->epilog) fprintf(out, "\n%s", spec->epilog);
}

static bool list_option(const cli_option *o, void *ctx) {
    FILE *out = ctx;
    if (o->name) fprintf(out, "%s%s%s\n", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
    if (o->alias) fprintf(out, "%s%s%s\n", o->alias, o->arg ? " " : "", o->arg ? o->arg : "");
    return false;
}

void cli_args_init(cli_args *p, const cli_spec *spec, int argc, char **argv) {
    memset(p, 0, sizeof *p);
    p->spec = spec;
    p->argc = argc;
    p->argv = argv;
    p->i = 1;
    /* --json before `--` asks for a JSON document even for usage errors. */
    for (int i = 1; spec->json_id && i < argc && strcmp(argv[i], "--"); i++)
        if (!strcmp(argv[i], "--json")) p->json = true;
}

cJSON *cli_error_object(const char *kind, const char *message, const char *file, int line, int col) {
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "message", message ? message : "");
    if (file) cJSON_AddStringToObject(e, "file", file);
    else cJSON_AddNullToObject(e, "file");
    if (line > 0) cJSON_AddNumberToObject(e, "line", line);
    else cJSON_AddNullToObject(e, "line");
    if (col > 0) cJSON_AddNumberToObject(e, "col", col);
    else cJSON_AddNullToObject(e, "col");
    cJSON_AddStringToObject(e, "kind", kind);
    return e;
}

void cli_json_print(cJSON *root) {
    char *s = cJSON_PrintUnformatted(root);
    if (s) printf("%s\n", s);
    fflush(stdout);
    cJSON_free(s);
    cJSON_Delete(root);
}

void cli_json_error(const char *kind, const char *message, const char *file, int line, int col) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddItemToObject(root, "error", cli_error_object(kind, message, file, line, col));
    cli_json_print(root);
}

cJSON *cli_diag_json(const sgl_program *p, const sgl_diag *d) {
    static const char *const levels[] = {"error", "warning", "note"};
    const sgl_source *src = d->has_loc && d->loc.file < p->n_files ? &p->files[d->loc.file] : NULL;
    uint32_t line = 0, col = 0;
    if (src) sgl_source_line_col(src, d->loc.start, &line, &col);
    cJSON *o = cJSON_CreateObject();
    if (src) cJSON_AddStringToObject(o, "file", src->path);
    else cJSON_AddNullToObject(o, "file");
    if (src) cJSON_AddNumberToObject(o, "line", line);
    else cJSON_AddNullToObject(o, "line");
    if (src) cJSON_AddNumberToObject(o, "col", col);
    else cJSON_AddNullToObject(o, "col");
    cJSON_AddStringToObject(o, "level", levels[d->level]);
    cJSON_AddStringToObject(o, "message", d->msg ? d->msg : "");
    return o;
}

cJSON *cli_program_error(const sgl_program *p, const char *fallback) {
    for (size_t i = 0; p && i < p->diags.len; i++) {
        const sgl_diag *d = &p->diags.items[i];
        if (d->level != SGL_DIAG_ERROR) continue;
        const sgl_source *src = d->has_loc && d->loc.file < p->n_files ? &p->files[d->loc.file] : NULL;
        uint32_t line = 0, col = 0;
        if (src) sgl_source_line_col(src, d->loc.start, &line, &col);
        return cli_error_object("compile", d->msg, src ? src->path : NULL, (int)line, (int)col);
    }
    return cli_error_object("compile", fallback, NULL, 0, 0);
}

cJSON *cli_located_error(const char *kind, const char *msg) {
    /* "path:line:col: error: text" -> the parts; anything else as it is. */
    const char *nl = strchr(msg, '\n');
    size_t head = nl ? (size_t)(nl - msg) : strlen(msg);
    const char *tag = strstr(msg, ": error: ");
    if (tag && (size_t)(tag - msg) < head) {
        const char *c2 = tag, *c1 = NULL;
        while (c2 > msg && c2[-1] >= '0' && c2[-1] <= '9') c2--;
        if (c2 > msg && c2[-1] == ':') {
            c1 = c2 - 1;
            while (c1 > msg && c1[-1] >= '0' && c1[-1] <= '9') c1--;
        }
        if (c1 && c1 > msg && c1[-1] == ':' && c1 < c2 - 1 && c2 < tag) {
            char *file = sgl_strndup(msg, (size_t)(c1 - 1 - msg));
            int line = atoi(c1), col = atoi(c2);
            cJSON *e = cli_error_object(kind, tag + 9, file, line, col);
            free(file);
            return e;
        }
    }
    return cli_error_object(kind, msg, NULL, 0, 0);
}

void cli_usage_error(const cli_args *p, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "sglc %s: error: %s\nusage: %s\n(see 'sglc %s --help')\n", p->spec->name, msg,
            p->spec->synopsis, p->spec->name);
    if (p->json) cli_json_error("usage", msg, NULL, 0, 0);
    exit(CLI_EXIT_USAGE);
}

typedef struct match_ctx {
    const char *arg;  /* the argument after its dashes were matched */
    bool is_long;
    size_t len;       /* long: length of the name before any '=' */
} match_ctx;

static bool match_option(const cli_option *o, void *ctx) {
    match_ctx *m = ctx;
    const char *names[2] = {o->name, o->alias};
    for (int k = 0; k < 2; k++) {
        const char *n = names[k];
        if (!n) continue;
        bool is_long = n[1] == '-';
        if (is_long != m->is_long) continue;
        if (is_long && strlen(n) == m->len && !strncmp(n, m->arg, m->len)) return true;
        /* short: "-X" matches "-X", and "-XVALUE" when it takes a value */
        if (!is_long && !strncmp(n, m->arg, 2) && (m->arg[2] == 0 || o->arg)) return true;
    }
    return false;
}

int cli_next(cli_args *p) {
    p->value = NULL;
    p->opt = NULL;
    if (p->i >= p->argc) return CLI_DONE;
    char *a = p->argv[p->i++];
    if (p->no_more_options || a[0] != '-' || a[1] == 0) {
        p->value = a;
        return CLI_OPERAND;
    }
    if (!strcmp(a, "--")) {
        p->no_more_options = true;
        return cli_next(p);
    }
    match_ctx m = {a, a[1] == '-', 0};
    const char *eq = m.is_long ? strchr(a, '=') : NULL;
    m.len = eq ? (size_t)(eq - a) : strlen(a);
    const cli_option *o = each_option(p->spec, match_option, &m);
    if (!o) {
        if (m.is_long) cli_usage_error(p, "unknown option '%.*s'", (int)m.len, a);
        cli_usage_error(p, "unknown option '%s'", a);
    }
    p->opt = o->name;
    if (!o->arg) {
        if (eq) cli_usage_error(p, "option %s takes no value", o->name);
    } else if (eq) {
        p->value = eq + 1;
    } else if (!m.is_long && a[2]) {
        p->value = a + 2;
    } else if (p->i < p->argc) {
        p->value = p->argv[p->i++];
    } else {
        cli_usage_error(p, "option %s needs a value (%s)", o->name, o->arg);
    }
    if (o->id == CLI_OPT_HELP) {
        cli_print_help(p->spec, stdout);
        if (p->spec->help_extra) {
            putchar('\n');
            p->spec->help_extra();
        }
        exit(0);
    }
    if (o->id == CLI_OPT_LIST) {
        each_option(p->spec, list_option, stdout);
        exit(0);
    }
    return o->id;
}

/* ---- shared option tables ---------------------------------------------- */

const cli_option cli_limit_options[] = {
    {CLI_OPT_MAX_FILE, "--max-file-mb", NULL, "N", "largest source file (default 4)"},
    {CLI_OPT_MAX_SOURCE, "--max-source-mb", NULL, "N", "all sources of a program together (default 16)"},
    {CLI_OPT_MAX_MEM, "--max-mem-mb", NULL, "N", "values one program instance may hold (default 256;\n0: no limit)"},
    {CLI_OPT_MAX_RUN_MEM, "--max-run-mem-mb", NULL, "N", "values the whole run may hold (default 1024;\n0: no limit)"},
    {CLI_OPT_MAX_FORK, "--max-fork", NULL, "N", "most branches of one fork (default 1024)"},
    {CLI_OPT_MAX_BATCH, "--max-batch", NULL, "N", "most instances of one run_batch call (default 100000)"},
    {0},
};

/* The source-size limits alone (check, dump). */
const cli_option cli_source_limit_options[] = {
    {CLI_OPT_MAX_FILE, "--max-file-mb", NULL, "N", "largest source file (default 4)"},
    {CLI_OPT_MAX_SOURCE, "--max-source-mb", NULL, "N", "all sources of a program together (default 16)"},
    {0},
};

bool cli_limit_set(const char *cmd, int id, const char *v, cli_limits *l) {
    switch (id) {
    case CLI_OPT_MAX_FILE: {
        double mb = cli_parse_double(cmd, "--max-file-mb", v, 0, 1 << 20);
        l->max_file = mb > 0 ? (size_t)(mb * (1 << 20)) : SIZE_MAX;
        return true;
    }
    case CLI_OPT_MAX_SOURCE: {
        double mb = cli_parse_double(cmd, "--max-source-mb", v, 0, 1 << 20);
        l->max_source = mb > 0 ? (size_t)(mb * (1 << 20)) : SIZE_MAX;
        return true;
    }
    case CLI_OPT_MAX_MEM:
        l->mem_inst = (int64_t)(cli_parse_double(cmd, "--max-mem-mb", v, 0, 1 << 30) * (1 << 20));
        return true;
    case CLI_OPT_MAX_RUN_MEM:
        l->mem_run = (int64_t)(cli_parse_double(cmd, "--max-run-mem-mb", v, 0, 1 << 30) * (1 << 20));
        return true;
    case CLI_OPT_MAX_FORK:
        l->fork = cli_parse_long(cmd, "--max-fork", v, 0, 1L << 30);
        return true;
    case CLI_OPT_MAX_BATCH:
        l->batch = cli_parse_long(cmd, "--max-batch", v, 0, 1L << 30);
        return true;
    default:
        return false;
    }
}

char *cli_read_input(const char *cmd, const char *path, size_t limit, size_t *len) {
    sgl_strbuf sb = {0};
    if (strcmp(path, "-") != 0) {
        sgl_error err = {{0}};
        char *text = sgl_read_file(path, len, &err);
        if (!text) fprintf(stderr, "sglc %s: error: %s\n", cmd, err.msg);
        return text;
    }
    char buf[4096];
    size_t k;
    /* Stops one buffer past limit: the caller reports the size. */
    while ((!limit || sb.len <= limit) && (k = fread(buf, 1, sizeof buf, stdin)) > 0)
        sgl_strbuf_append(&sb, buf, k);
    sgl_strbuf_putc(&sb, 0);
    sb.len--;
    *len = sb.len;
    return sgl_strbuf_take(&sb);
}

/* ---- result documents -------------------------------------------------- */

static void add_counts(cJSON *o) {
    static const char *const keys[] = {"seconds", "requests", "prompt_tokens", "completion_tokens", "cached_tokens"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) cJSON_AddNumberToObject(o, keys[i], 0);
}

cJSON *cli_result_json(const vm_inst *in, const char *output) {
    cJSON *o = vm_inst_json_object(in, output);
    if (o && vm_inst_failed(in)) /* the message as an error object with its place */
        cJSON_ReplaceItemInObject(o, "error", cli_located_error("runtime", vm_inst_error(in) ? vm_inst_error(in) : "error"));
    return o ? o : cJSON_CreateObject();
}

cJSON *cli_result_failed(const char *status, cJSON *err) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", status);
    cJSON_AddNullToObject(o, "result");
    cJSON_AddItemToObject(o, "variables", cJSON_CreateObject());
    cJSON_AddStringToObject(o, "output", "");
    cJSON_AddItemToObject(o, "error", err);
    add_counts(o);
    return o;
}
