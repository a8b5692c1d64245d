/* cmd_repl: `sglc repl`: an interactive SGL session on one engine and VM.
 *
 * Each entry is either definitions (fn, const, import, @annotation) that are
 * kept for the rest of the session, or statements. Statements run as the
 * body of a generated function whose parameters are the variables of
 * earlier entries and which returns every top-level variable afterwards, so
 * `let` bindings (streams included) persist between entries. A lone
 * expression's value is printed unless it is none. Input continues over
 * several lines while brackets are open or a line ends with an operator or
 * a comma; Ctrl-C or two empty lines abandon such an entry.
 *
 * Definitions are kept one top-level item each, with the text they were
 * typed in (or the file :load read them from). A new definition of a kept
 * name replaces the old one. Every entry is compiled together with the kept
 * definitions into one generated source; diagnostics and runtime errors are
 * mapped back from it (see `region`), so messages show the user's own text,
 * with line numbers counted in the entry ("<repl>"), in the entry that made
 * a definition ("<repl:NAME>") or in the file it was loaded from.
 *
 * Ctrl-C while a statement runs interrupts it through vm_config.poll: its
 * engine requests are cancelled and its instance fails with "interrupted";
 * the session (definitions, variables) stays. At a terminal, with libedit,
 * lines are edited, history is kept in $XDG_STATE_HOME/sglc/history
 * (default ~/.local/state) and Tab completes names, builtins, keywords and
 * : commands.
 */
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#if defined(__has_include)
#if __has_include(<editline/readline.h>)
#include <editline/readline.h>
#define REPL_HAVE_EDIT 1
#endif
#endif

#include "cli/cli.h"
#include "vm/session.h"
#include "vm/stdlib_sgl.h"

/* The generated source's name (every location in it is mapped back). */
#define GEN_NAME "<repl>"

/* A kept definition: one top-level fn, const or import. */
typedef struct repl_def {
    char *name;        /* the fn / const name; NULL for an import */
    char *where;       /* how messages name its text: "<repl:NAME>" or a file path */
    char *text;        /* the whole entry (or file) it came from */
    uint32_t off, len; /* the definition within text */
} repl_def;

typedef struct repl {
    vm_session s;
    vm *v;
    repl_def *defs;
    size_t n_defs;
    char **names;           /* saved variables */
    vm_value *vals;
    size_t n_vars;
    vm_script *scripts;     /* every compiled entry (modules stay alive with the VM) */
    size_t n_scripts;
    bool color;             /* diagnostics in colour */
} repl;

static void repl_help(void) {
    printf("Enter SGL statements or definitions (fn, const, import). Variables persist;\n"
           "a new fn or const of a kept name replaces the old one.\n"
           "  :help          this text\n"
           "  :graph FN      the dataflow graph of function FN\n"
           "  :stats         engine batching and cache figures\n"
           "  :vars          the variables kept so far\n"
           "  :defs          the definitions kept so far\n"
           "  :reset         forget every definition and variable\n"
           "  :load FILE     add FILE's definitions and run its main block\n"
           "  :save FILE     write the kept definitions to FILE\n"
           "  :quit          leave (also Ctrl-D)\n"
           "Ctrl-C interrupts a running entry (or drops the one being typed); two empty\n"
           "lines or a : command also drop an unfinished entry.\n");
}

/* ---- input -------------------------------------------------------------------------------- */

static volatile sig_atomic_t repl_sigint;

static void on_sigint(int sig) {
    (void)sig;
    repl_sigint = 1;
}

/* vm_config.poll: Ctrl-C interrupts the running entry. */
static int repl_poll(void *ctx) {
    (void)ctx;
    return repl_sigint != 0;
}

typedef enum { READ_LINE, READ_EOF, READ_INTERRUPT } read_status;

#ifdef REPL_HAVE_EDIT
/* readline's key reader. A Ctrl-C that comes after the prompt was shown
 * but before the read began would not interrupt that read; looking at the
 * flag between short waits closes the gap. EOF (with the flag set) ends
 * the line being edited. */
static int repl_getc(FILE *f) {
    int fd = fileno(f);
    for (;;) {
        if (repl_sigint) return EOF;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int r = poll(&pfd, 1, 100);
        if (r == 0 || (r < 0 && errno == EINTR)) continue;
        unsigned char c;
        ssize_t n = read(fd, &c, 1);
        if (n == 1) return c;
        if (n < 0 && errno == EINTR) continue;
        return EOF;
    }
}
#endif

#ifdef REPL_HAVE_EDIT
/* The terminal's settings before tty_ctrl_d_plain changed them. */
static struct termios repl_tty_saved;
static bool repl_tty_changed;

/* libedit draws the prompt before it puts the terminal in raw mode for the
 * first key, and puts it back in canonical mode after each line, so the
 * terminal is canonical while an entry runs and for a moment after the
 * prompt shows. A Ctrl-D that comes then (typed ahead, or typed at once at
 * the prompt) is the terminal's end-of-file character: the kernel queues it
 * as an empty line end, which turns into a NUL byte when libedit switches
 * to raw mode, and libedit takes NUL for Ctrl-@: the Ctrl-D is lost and the
 * session does not end. With VEOF disabled in canonical mode, Ctrl-D stays
 * a plain 0x04 byte whenever it is typed, which libedit reads as its
 * end-of-file key (at an empty line) as usual. (An entry that reads the
 * terminal itself, through read_file with --allow-io, gets Ctrl-D as that
 * byte too.) tty_restore puts the settings back. */
static void tty_ctrl_d_plain(void) {
    struct termios t;
    if (tcgetattr(0, &t) != 0 || t.c_cc[VEOF] == _POSIX_VDISABLE) return;
    repl_tty_saved = t;
    t.c_cc[VEOF] = _POSIX_VDISABLE;
    if (tcsetattr(0, TCSANOW, &t) == 0) repl_tty_changed = true;
}

static void tty_restore(void) {
    if (repl_tty_changed) tcsetattr(0, TCSANOW, &repl_tty_saved);
    repl_tty_changed = false;
}
#endif

/* Reads one line (caller frees *out) with prompt at a terminal. */
static read_status read_line(const char *prompt, bool tty, char **out) {
    *out = NULL;
    repl_sigint = 0;
#ifdef REPL_HAVE_EDIT
    if (tty) {
        char *l = readline(prompt);
        if (repl_sigint) {
            free(l);
            return READ_INTERRUPT;
        }
        if (!l) return READ_EOF;
        if (*l) add_history(l);
        *out = l;
        return READ_LINE;
    }
#else
    if (tty) {
        fputs(prompt, stdout);
        fflush(stdout);
    }
#endif
    sgl_strbuf sb = {0};
    int c;
    while ((c = getchar()) != EOF && c != '\n') sgl_strbuf_putc(&sb, (char)c);
    if (c == EOF && repl_sigint) {
        clearerr(stdin);
        sgl_strbuf_free(&sb);
        return READ_INTERRUPT;
    }
    if (c == EOF && sb.len == 0) {
        sgl_strbuf_free(&sb);
        return READ_EOF;
    }
    sgl_strbuf_putc(&sb, 0); /* an empty line is "", not NULL */
    *out = sgl_strbuf_take(&sb);
    return READ_LINE;
}

/* True when text needs more lines: open brackets or strings, or a last
 * line ending in an operator, comma or backslash. *in_text (may be NULL):
 * whether text ends inside a triple-quoted string. */
static bool incomplete(const char *t, bool *in_text) {
    int depth = 0;
    bool in_str = false, triple = false;
    for (const char *p = t; *p; p++) {
        if (in_str) {
            if (*p == '\\' && p[1]) p++;
            else if (triple && !strncmp(p, "\"\"\"", 3)) {
                in_str = false;
                p += 2;
            } else if (!triple && *p == '"') in_str = false;
            continue;
        }
        if (*p == '#') {
            while (*p && *p != '\n') p++;
            if (!*p) break;
        } else if (!strncmp(p, "\"\"\"", 3)) {
            in_str = triple = true;
            p += 2;
        } else if (*p == '"') {
            in_str = true;
            triple = false;
        } else if (*p == '(' || *p == '[' || *p == '{') {
            depth++;
        } else if (*p == ')' || *p == ']' || *p == '}') {
            depth--;
        }
    }
    if (in_text) *in_text = in_str && triple;
    if (depth > 0 || (in_str && triple)) return true;
    size_t n = strlen(t);
    while (n && (t[n - 1] == ' ' || t[n - 1] == '\t')) n--;
    return n && strchr("+-*/%=,\\<>", t[n - 1]) != NULL;
}

static const char *const repl_commands[] = {":help", ":graph", ":stats", ":vars", ":defs", ":reset",
                                            ":load", ":save", ":quit", NULL};

/* True when line is one of the : commands (with or without an argument). */
static bool is_command(const char *line) {
    static const char *const aliases[] = {":q", ":exit"};
    while (*line == ' ' || *line == '\t') line++;
    for (size_t i = 0; i < SGL_ARRAY_LEN(repl_commands) + SGL_ARRAY_LEN(aliases); i++) {
        const char *c = i < SGL_ARRAY_LEN(repl_commands) ? repl_commands[i] : aliases[i - SGL_ARRAY_LEN(repl_commands)];
        size_t n = c ? strlen(c) : 0;
        if (n && !strncmp(line, c, n) && (!line[n] || isspace((unsigned char)line[n]))) return true;
    }
    return false;
}

static bool blank(const char *t) {
    while (*t == ' ' || *t == '\t' || *t == '\r') t++;
    return !*t;
}

static bool is_definition(const char *t) {
    while (*t == ' ' || *t == '\t' || *t == '\n') t++;
    return !strncmp(t, "fn ", 3) || !strncmp(t, "const ", 6) || !strncmp(t, "import ", 7) || *t == '@';
}

/* ---- history and completion ------------------------------------------------------------ */

#ifdef REPL_HAVE_EDIT
/* mkdir -p of path's directory part. */
static void make_parent_dirs(char *path) {
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        mkdir(path, 0700);
        *p = '/';
    }
}

/* $XDG_STATE_HOME/sglc/history (an absolute XDG_STATE_HOME only, as the
 * spec says), else ~/.local/state/sglc/history; NULL without a home.
 * Creates the directories. Caller frees. */
static char *history_path(void) {
    const char *st = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
    sgl_strbuf sb = {0};
    if (st && st[0] == '/') sgl_strbuf_printf(&sb, "%s/sglc/history", st);
    else if (home && *home) sgl_strbuf_printf(&sb, "%s/.local/state/sglc/history", home);
    else return NULL;
    char *p = sgl_strbuf_take(&sb);
    if (p) make_parent_dirs(p);
    return p;
}

static const char *const repl_keywords[] = {"fn", "let", "const", "if", "elif", "else", "for", "in", "while",
                                            "break", "continue", "return", "import", "main", "with",
                                            "assert", "true", "false", "none", "and", "or", "not", NULL};
static const char *const repl_builtins[] = {
#define BUILTIN(id, name, min_args, max_args, flags) name,
#include "lang/builtins.def"
#undef BUILTIN
    NULL};
static const char *const repl_kwargs[] = {
#define KWARG(id, name, type, lo, hi, by) name,
#include "lang/kwargs.def"
#undef KWARG
    NULL};

static repl *complete_repl; /* the session completion reads names from */
static bool complete_command;

/* rl_completion_matches generator: the state-th candidate starting with text. */
static char *complete_next(const char *text, int state) {
    static size_t list, idx;
    if (state == 0) list = idx = 0;
    size_t n = strlen(text);
    const repl *r = complete_repl;
    for (;; idx++) {
        const char *cand = NULL;
        bool end = false;
        if (complete_command) {
            if (list > 0) return NULL;
            cand = repl_commands[idx];
            end = !cand;
        } else if (list == 0) { /* variables */
            end = idx >= r->n_vars;
            if (!end) cand = r->names[idx];
        } else if (list == 1) { /* kept definitions */
            end = idx >= r->n_defs;
            if (!end) cand = r->defs[idx].name;
        } else if (list == 2) {
            cand = repl_builtins[idx];
            end = !cand;
        } else if (list == 3) {
            cand = repl_keywords[idx];
            end = !cand;
        } else if (list == 4) {
            cand = repl_kwargs[idx];
            end = !cand;
        } else {
            return NULL;
        }
        if (end) {
            list++;
            idx = (size_t)-1; /* the loop's idx++ makes it 0 */
            continue;
        }
        if (cand && !strncmp(cand, text, n)) {
            idx++;
            return strdup(cand);
        }
    }
}

static char **complete(const char *text, int start, int end) {
    (void)end;
    const char *line = rl_line_buffer ? rl_line_buffer : "";
    while (*line == ' ') line++;
    bool in_command = *line == ':' && start > (int)(line - (rl_line_buffer ? rl_line_buffer : line));
    if (in_command && strncmp(line, ":graph", 6) != 0) {
        /* After ":load " / ":save ": file names (readline's own completion). */
        rl_attempted_completion_over = 0;
        return NULL;
    }
    rl_attempted_completion_over = 1;
    complete_command = !in_command && text[0] == ':';
    return rl_completion_matches(text, complete_next);
}
#endif

/* ---- the generated source and mapping locations back ------------------------------------ */

/* A stretch of the generated source copied from text the user wrote:
 * generated bytes [gen_start, gen_start + len) are text[text_off..) (the
 * copy may differ from text in blanked keywords, never in length). lead
 * generated bytes just before it (on its first line) belong to it too, so
 * an error there points at its start. */
typedef struct region {
    const char *where; /* borrowed */
    const char *text;  /* borrowed */
    uint32_t text_off, gen_start, len, lead;
} region;

typedef struct gen_src {
    sgl_strbuf sb;
    region *reg;
    size_t n_reg;
    int entry; /* the region of the entry being run, or -1 */
} gen_src;

/* Appends lead, then copy[0..len) (what the user wrote at text[off..],
 * perhaps edited in place) as a region named where. */
static void gen_add(gen_src *g, const char *where, const char *text, uint32_t off, const char *copy,
                    uint32_t len, const char *lead) {
    if (lead) sgl_strbuf_puts(&g->sb, lead);
    region *nr = realloc(g->reg, (g->n_reg + 1) * sizeof *nr);
    if (!nr) return;
    g->reg = nr;
    g->reg[g->n_reg++] = (region){where, text, off, (uint32_t)g->sb.len, len, lead ? (uint32_t)strlen(lead) : 0};
    sgl_strbuf_append(&g->sb, copy, len);
}

static void gen_free(gen_src *g) {
    sgl_strbuf_free(&g->sb);
    free(g->reg);
    memset(g, 0, sizeof *g);
}

/* Appends every kept definition (but those with skip[i] set). */
static void gen_defs(gen_src *g, const repl *r, const bool *skip) {
    for (size_t i = 0; i < r->n_defs; i++) {
        const repl_def *d = &r->defs[i];
        if (skip && skip[i]) continue;
        gen_add(g, d->where, d->text, d->off, d->text + d->off, d->len, NULL);
        sgl_strbuf_putc(&g->sb, '\n');
    }
}

/* The region holding generated offset o, and o as an offset into that
 * region's text. Outside every region (generated code): the entry's region,
 * at its end when o lies after it (*past set), else at its start. */
static int gen_map(const gen_src *g, uint32_t o, uint32_t *text_off, bool *past) {
    if (past) *past = false;
    for (size_t i = 0; i < g->n_reg; i++) {
        const region *rg = &g->reg[i];
        if (o + rg->lead < rg->gen_start || o > rg->gen_start + rg->len) continue;
        *text_off = rg->text_off + (o > rg->gen_start ? o - rg->gen_start : 0);
        return (int)i;
    }
    if (!g->n_reg) return -1;
    const region *e = &g->reg[g->entry >= 0 ? g->entry : 0];
    bool after = o > e->gen_start + e->len;
    if (past) *past = after;
    *text_off = e->text_off + (after ? e->len : 0);
    return g->entry >= 0 ? g->entry : 0;
}

/* sgl_source views of the regions' texts, for printing. */
typedef struct src_view {
    sgl_source *files; /* n_reg views, then the program's other files (borrowed) */
    uint32_t n_files;
} src_view;

static void view_free(src_view *v, size_t n_reg) {
    for (size_t i = 0; i < n_reg && v->files; i++) free(v->files[i].line_starts);
    free(v->files);
}

static int view_make(src_view *v, const gen_src *g, const sgl_program *p) {
    uint32_t n_other = p && p->n_files ? p->n_files - 1 : 0;
    v->n_files = (uint32_t)g->n_reg + n_other;
    v->files = calloc(v->n_files ? v->n_files : 1, sizeof *v->files);
    if (!v->files) return -1;
    for (size_t i = 0; i < g->n_reg; i++) {
        sgl_source *s = &v->files[i];
        s->path = (char *)g->reg[i].where;
        s->text = (char *)g->reg[i].text;
        s->len = (uint32_t)strlen(s->text);
        uint32_t n = 1;
        for (uint32_t k = 0; k < s->len; k++) n += s->text[k] == '\n';
        s->line_starts = malloc(n * sizeof *s->line_starts);
        if (!s->line_starts) return -1;
        s->line_starts[0] = 0;
        s->n_lines = 1;
        for (uint32_t k = 0; k < s->len; k++)
            if (s->text[k] == '\n') s->line_starts[s->n_lines++] = k + 1;
    }
    for (uint32_t i = 0; i < n_other; i++) v->files[g->n_reg + i] = p->files[i + 1];
    return 0;
}

/* msg with the generated names replaced by what the user knows. Caller frees. */
static char *user_words(const char *msg) {
    static const char *const from[] = {"in __repl__ at", "__repl__()", "__repl__", "__value"};
    static const char *const to[] = {"in the entry at", "the entry", "the entry", "the value"};
    sgl_strbuf sb = {0};
    for (const char *p = msg; *p;) {
        size_t k;
        for (k = 0; k < SGL_ARRAY_LEN(from); k++)
            if (!strncmp(p, from[k], strlen(from[k]))) break;
        if (k < SGL_ARRAY_LEN(from)) {
            sgl_strbuf_puts(&sb, to[k]);
            p += strlen(from[k]);
        } else {
            sgl_strbuf_putc(&sb, *p++);
        }
    }
    sgl_strbuf_putc(&sb, 0);
    return sgl_strbuf_take(&sb);
}

/* Prints p's diagnostics with their locations mapped back through g. */
static void print_diags(const repl *r, const gen_src *g, const sgl_program *p) {
    if (!p) return;
    src_view v = {0};
    if (view_make(&v, g, p) < 0) {
        view_free(&v, g->n_reg);
        sgl_diags_print(p, stderr, r->color);
        return;
    }
    sgl_program view = *p;
    view.files = v.files;
    view.n_files = v.n_files;
    view.diags.items = calloc(p->diags.len ? p->diags.len : 1, sizeof *view.diags.items);
    if (!view.diags.items) {
        view_free(&v, g->n_reg);
        return;
    }
    for (size_t i = 0; i < p->diags.len; i++) {
        sgl_diag d = p->diags.items[i];
        if (d.has_loc && d.loc.file == 0) {
            uint32_t s, e;
            bool past;
            int rs = gen_map(g, d.loc.start, &s, &past);
            int re = gen_map(g, d.loc.end, &e, NULL);
            d.loc.file = rs >= 0 ? (uint32_t)rs : 0;
            d.loc.start = s;
            d.loc.end = re == rs && e >= s ? e : s;
            /* The parser stopped at the generated code after the entry:
             * the entry itself ended too soon. */
            if (past && d.level == SGL_DIAG_ERROR && !strncmp(d.msg, "unexpected '", 12)) {
                d.msg = sgl_strdup("unexpected end of the entry");
                char *w = user_words(d.msg);
                free(d.msg);
                d.msg = w;
                view.diags.items[i] = d;
                continue;
            }
        } else if (d.has_loc) {
            d.loc.file = d.loc.file - 1 + (uint32_t)g->n_reg;
        }
        d.msg = user_words(d.msg);
        view.diags.items[i] = d;
    }
    sgl_diags_print(&view, stderr, r->color);
    for (size_t i = 0; i < p->diags.len; i++) free(view.diags.items[i].msg);
    free(view.diags.items);
    view_free(&v, g->n_reg);
}

/* text with every marker followed by LINE:COL (a place in g's generated
 * source) replaced by the place in the user's text: "WHERE:LINE:COL" when
 * named, else marker + "LINE:COL" counted in that text. v: view_make of g.
 * Caller frees. */
static char *remap_places(const gen_src *g, const src_view *v, const char *text, const char *marker, bool named) {
    const char *gs = g->sb.data ? g->sb.data : "";
    size_t n_lines = 1;
    for (const char *q = gs; *q; q++) n_lines += *q == '\n';
    uint32_t *ls = malloc(n_lines * sizeof *ls);
    if (!ls) return sgl_strdup(text);
    ls[0] = 0;
    for (size_t k = 0, i = 1; gs[k]; k++)
        if (gs[k] == '\n') ls[i++] = (uint32_t)k + 1;
    sgl_strbuf sb = {0};
    const size_t ml = strlen(marker);
    for (const char *q = text; *q;) {
        unsigned line, col;
        int used = 0;
        if (!strncmp(q, marker, ml) && sscanf(q + ml, "%u:%u%n", &line, &col, &used) == 2 && line >= 1 &&
            line <= n_lines) {
            uint32_t o = ls[line - 1] + (col ? col - 1 : 0), to;
            int ri = gen_map(g, o, &to, NULL);
            if (ri >= 0) {
                uint32_t l2, c2;
                sgl_source_line_col(&v->files[ri], to, &l2, &c2);
                if (named) sgl_strbuf_printf(&sb, "%s:%u:%u", g->reg[ri].where, l2, c2);
                else sgl_strbuf_printf(&sb, "%s%u:%u", marker, l2, c2);
                q += ml + (size_t)used;
                continue;
            }
        }
        sgl_strbuf_putc(&sb, *q++);
    }
    sgl_strbuf_putc(&sb, 0);
    free(ls);
    return sgl_strbuf_take(&sb);
}

/* Prints a runtime error (vm_inst_error) with every GEN_NAME:LINE:COL in it
 * mapped back through g, and the source line under its first location. */
static void print_runtime_error(const gen_src *g, const sgl_program *p, const char *msg) {
    src_view v = {0};
    if (!p || view_make(&v, g, p) < 0) {
        view_free(&v, g->n_reg);
        fprintf(stderr, "%s\n", msg);
        return;
    }
    char *mapped = remap_places(g, &v, msg, GEN_NAME ":", true);
    char *text = user_words(mapped ? mapped : msg);
    free(mapped);
    sgl_program view = *p;
    view.files = v.files;
    view.n_files = v.n_files;
    vm_script vs = {.prog = &view, .mod = NULL};
    vm_script_print_error(&vs, text ? text : msg, stderr);
    free(text);
    view_free(&v, g->n_reg);
}

/* ---- definitions ----------------------------------------------------------------------- */

static sgl_load_options parse_options(const repl *r) {
    sgl_load_options lo;
    memset(&lo, 0, sizeof lo);
    lo.search_path = r->s.opts.search_path;
    lo.n_search_path = r->s.opts.n_search_path;
    lo.provider = vm_stdlib_provider;
    lo.allow_io = r->s.opts.allow_io;
    lo.parse_only = true;
    return lo;
}

/* One top-level item of parsed text. */
typedef struct def_item {
    const char *name, *kind; /* name: NULL for an import (borrowed from the program) */
    uint32_t off, len;
} def_item;

/* Parses text (named where in messages) as top-level items: definitions,
 * and a main block whose body's inner range goes to *main_off / *main_len
 * (*main_len stays 0 without one). Prints the errors. Returns the number of
 * items in *items (caller frees; names borrowed from *prog, which the caller
 * frees with sgl_program_free), or -1. */
static int parse_items(const repl *r, const char *where, const char *text, sgl_program **prog, def_item **items,
                       uint32_t *main_off, uint32_t *main_len) {
    sgl_load_options lo = parse_options(r);
    *items = NULL;
    *main_len = 0;
    sgl_program_load_buffer(prog, where, text, strlen(text), &lo);
    if (!*prog || (*prog)->diags.n_errors) {
        if (*prog) sgl_diags_print(*prog, stderr, r->color);
        return -1;
    }
    const sgl_node *m = (*prog)->modules[0];
    def_item *it = calloc(m->module.items.len + 1, sizeof *it);
    if (!it) return -1;
    int n = 0;
    uint32_t prev = 0;
    for (uint32_t i = 0; i < m->module.items.len; i++) {
        const sgl_node *x = m->module.items.items[i];
        uint32_t off = prev;
        while (off < x->loc.end && isspace((unsigned char)text[off])) off++;
        prev = x->loc.end;
        if (x->kind == SGL_AST_MAIN) {
            const sgl_node *b = x->main.body;
            *main_off = b->loc.start + 1;
            *main_len = b->loc.end > b->loc.start + 1 ? b->loc.end - b->loc.start - 2 : 0;
            continue;
        }
        def_item d = {NULL, "import", off, x->loc.end - off};
        if (x->kind == SGL_AST_FN) d = (def_item){x->fn.name, "fn", off, x->loc.end - off};
        else if (x->kind == SGL_AST_CONST) d = (def_item){x->decl.name, "const", off, x->loc.end - off};
        else if (x->kind != SGL_AST_IMPORT) continue;
        it[n++] = d;
    }
    *items = it;
    return n;
}

static void def_free(repl_def *d) {
    free(d->name);
    free(d->where);
    free(d->text);
}

/* Adds items of text as kept definitions, replacing kept ones of the same
 * name, when everything compiles together; else prints the errors (text
 * named where) and keeps the definitions as they were. Kept definitions are
 * named "<repl:NAME>" unless from_file (then where). Returns 0 or -1. */
static int add_defs(repl *r, const char *where, const char *text, const def_item *it, int n, bool from_file) {
    bool *skip = calloc(r->n_defs + 1, sizeof *skip), *dup = calloc((size_t)n + 1, sizeof *dup);
    if (!skip || !dup) {
        free(skip);
        free(dup);
        return -1;
    }
    for (int k = 0; k < n; k++) {
        for (size_t i = 0; i < r->n_defs; i++) {
            const repl_def *d = &r->defs[i];
            if (it[k].name && d->name && !strcmp(d->name, it[k].name)) skip[i] = true;
            /* The same import again adds nothing. */
            if (!it[k].name && !d->name && d->len == it[k].len && !memcmp(d->text + d->off, text + it[k].off, d->len))
                dup[k] = true;
        }
    }
    gen_src g = {.entry = -1};
    gen_defs(&g, r, skip);
    g.entry = (int)g.n_reg;
    for (int k = 0; k < n; k++) {
        if (dup[k]) continue;
        gen_add(&g, where, text, it[k].off, text + it[k].off, it[k].len, NULL);
        sgl_strbuf_putc(&g.sb, '\n');
    }
    vm_script sc;
    sgl_error err = {{0}};
    const char *src = g.sb.data ? g.sb.data : "";
    int rc = vm_script_load(&r->s, GEN_NAME, src, strlen(src), NULL, false, false, &sc, &err);
    if (rc < 0) {
        if (sc.prog && sc.prog->diags.n_errors) print_diags(r, &g, sc.prog);
        else fprintf(stderr, "%s\n", err.msg);
    }
    vm_script_free(&sc);
    gen_free(&g);
    if (rc == 0) {
        size_t w = 0;
        for (size_t i = 0; i < r->n_defs; i++) {
            if (!skip[i]) {
                r->defs[w++] = r->defs[i];
                continue;
            }
            for (int k = 0; k < n; k++)
                if (it[k].name && !strcmp(it[k].name, r->defs[i].name))
                    fprintf(stderr, "note: %s %s redefined; the new definition replaces the old one\n", it[k].kind,
                            it[k].name);
            def_free(&r->defs[i]);
        }
        r->n_defs = w;
        repl_def *nd = realloc(r->defs, (r->n_defs + (size_t)n + 1) * sizeof *nd);
        if (nd) {
            r->defs = nd;
            for (int k = 0; k < n; k++) {
                if (dup[k]) continue;
                repl_def *d = &r->defs[r->n_defs++];
                d->name = it[k].name ? sgl_strdup(it[k].name) : NULL;
                sgl_strbuf wb = {0};
                if (from_file) sgl_strbuf_puts(&wb, where);
                else sgl_strbuf_printf(&wb, "<repl:%s>", it[k].name ? it[k].name : "import");
                d->where = sgl_strbuf_take(&wb);
                d->text = sgl_strdup(text);
                d->off = it[k].off;
                d->len = it[k].len;
            }
        }
    }
    free(skip);
    free(dup);
    return rc;
}

static void do_definition(repl *r, const char *text) {
    sgl_program *p = NULL;
    def_item *it = NULL;
    uint32_t mo = 0, ml = 0;
    int n = parse_items(r, "<repl>", text, &p, &it, &mo, &ml);
    if (n >= 0 && ml) fprintf(stderr, "<repl>: a main block cannot be entered here; type its statements\n");
    else if (n > 0) add_defs(r, "<repl>", text, it, n, false);
    free(it);
    sgl_program_free(p);
}

/* ---- statements ------------------------------------------------------------------------ */

static int var_index(const repl *r, const char *name) {
    for (size_t i = 0; i < r->n_vars; i++)
        if (!strcmp(r->names[i], name)) return (int)i;
    return -1;
}

static void set_var(repl *r, const char *name, vm_value v) {
    int i = var_index(r, name);
    if (i >= 0) {
        vm_release(r->vals[i]);
        r->vals[i] = vm_retain(v);
        return;
    }
    char **nn = realloc(r->names, (r->n_vars + 1) * sizeof *nn);
    if (nn) r->names = nn;
    vm_value *nv = realloc(r->vals, (r->n_vars + 1) * sizeof *nv);
    if (nv) r->vals = nv;
    if (!nn || !nv) return;
    r->names[r->n_vars] = sgl_strdup(name);
    r->vals[r->n_vars] = vm_retain(v);
    r->n_vars++;
}

static vm_script *keep_script(repl *r) {
    vm_script *ns = realloc(r->scripts, (r->n_scripts + 1) * sizeof *ns);
    if (!ns) return NULL;
    r->scripts = ns;
    vm_script *sc = &r->scripts[r->n_scripts++];
    memset(sc, 0, sizeof *sc);
    return sc;
}

/* The kept definitions, then fn __repl__(kept variables) { body; return {
 * every kept and extra variable } }, with body (the user's text[off..],
 * perhaps edited in place) a region named where. */
static void gen_wrapper(gen_src *g, const repl *r, const char *where, const char *text, uint32_t off,
                        const char *body, uint32_t len, const char *lead, char *const *extra, size_t n_extra) {
    gen_defs(g, r, NULL);
    sgl_strbuf_puts(&g->sb, "fn __repl__(");
    for (size_t i = 0; i < r->n_vars; i++) sgl_strbuf_printf(&g->sb, "%s%s", i ? ", " : "", r->names[i]);
    sgl_strbuf_puts(&g->sb, ") {\n");
    g->entry = (int)g->n_reg;
    gen_add(g, where, text, off, body, len, lead);
    sgl_strbuf_puts(&g->sb, "\nreturn {");
    size_t k = 0;
    for (size_t i = 0; i < r->n_vars; i++, k++)
        sgl_strbuf_printf(&g->sb, "%s\"%s\": %s", k ? ", " : "", r->names[i], r->names[i]);
    for (size_t i = 0; i < n_extra; i++, k++)
        sgl_strbuf_printf(&g->sb, "%s\"%s\": %s", k ? ", " : "", extra[i], extra[i]);
    sgl_strbuf_puts(&g->sb, "}\n}\n");
}

/* Runs text[off..off+len) (named where) as statements of one entry. */
static void do_statements(repl *r, const char *where, const char *text, uint32_t off, uint32_t len) {
    char *body = sgl_strndup(text + off, len);
    if (!body) return;
    /* Parse once to find the new top-level lets and whether the entry is a
     * lone expression. */
    gen_src g = {.entry = -1};
    gen_wrapper(&g, r, where, text, off, body, len, NULL, NULL, 0);
    sgl_load_options lo = parse_options(r);
    sgl_program *p = NULL;
    sgl_program_load_buffer(&p, GEN_NAME, g.sb.data, g.sb.len, &lo);
    uint32_t body_at = g.n_reg ? g.reg[g.entry].gen_start : 0;
    gen_free(&g);
    char **lets = NULL;
    size_t n_lets = 0;
    bool lone_expr = false;
    if (p && p->diags.n_errors == 0) {
        const sgl_node *m = p->modules[0];
        for (uint32_t i = 0; i < m->module.items.len; i++) {
            const sgl_node *it = m->module.items.items[i];
            if (it->kind != SGL_AST_FN || strcmp(it->fn.name, "__repl__") != 0) continue;
            const sgl_node_list *st = &it->fn.body->block.stmts;
            uint32_t n_user = st->len ? st->len - 1 : 0; /* the appended return */
            lone_expr = n_user == 1 && st->items[0]->kind == SGL_AST_EXPR_STMT;
            for (uint32_t k = 0; k < n_user; k++) {
                const sgl_node *s = st->items[k];
                if (s->kind != SGL_AST_LET) continue;
                if (var_index(r, s->decl.name) >= 0) {
                    /* Re-declaring a kept variable: make it an assignment
                     * (blank the keyword; columns stay). */
                    uint32_t at = s->loc.start - body_at;
                    if (s->loc.start >= body_at && at + 3 <= len && !strncmp(body + at, "let", 3))
                        memcpy(body + at, "   ", 3);
                } else {
                    char **nl = realloc(lets, (n_lets + 1) * sizeof *nl);
                    if (!nl) continue;
                    lets = nl;
                    lets[n_lets++] = sgl_strdup(s->decl.name);
                }
            }
        }
    }
    sgl_program_free(p);
    if (lone_expr) {
        char **nl = realloc(lets, (n_lets + 1) * sizeof *nl);
        if (nl) {
            lets = nl;
            lets[n_lets++] = sgl_strdup("__value");
        } else {
            lone_expr = false;
        }
    }
    gen_wrapper(&g, r, where, text, off, body, len, lone_expr ? "let __value = " : NULL, lets, n_lets);
    vm_script *sc = keep_script(r);
    sgl_error err = {{0}};
    vm_inst *in = NULL;
    if (!sc) goto done;
    if (vm_script_load(&r->s, GEN_NAME, g.sb.data, g.sb.len, NULL, false, false, sc, &err) < 0) {
        if (sc->prog && sc->prog->diags.n_errors) print_diags(r, &g, sc->prog);
        else fprintf(stderr, "%s\n", err.msg);
        goto done;
    }
    int fi = sgl_module_find_fn(sc->mod, "__repl__");
    in = fi >= 0 ? vm_spawn(r->v, sc->mod, (uint32_t)fi, r->vals, (uint32_t)r->n_vars, false, &err) : NULL;
    if (!in) {
        fprintf(stderr, "error: %s\n", err.msg);
        goto done;
    }
    vm_run(r->v, &err);
    fflush(stdout);
    if (vm_inst_failed(in)) {
        print_runtime_error(&g, sc->prog, vm_inst_error(in));
        goto done;
    }
    vm_value res = vm_inst_result(in);
    if (res.type == VM_MAP) {
        for (uint32_t i = 0; i < vm_map_len(res); i++) {
            vm_value k = res.as.m->entries[i].key, val = res.as.m->entries[i].val;
            if (k.type != VM_STR) continue;
            if (!strcmp(vm_str_cstr(k), "__value")) {
                if (val.type != VM_NONE) {
                    sgl_strbuf sb = {0};
                    vm_repr_append(&sb, val);
                    printf("%s\n", sb.data ? sb.data : "");
                    sgl_strbuf_free(&sb);
                }
                continue;
            }
            set_var(r, vm_str_cstr(k), val);
        }
    }
done:
    gen_free(&g);
    free(body);
    for (size_t i = 0; i < n_lets; i++) free(lets[i]);
    free(lets);
}

/* ---- commands -------------------------------------------------------------------------- */

static void do_graph(repl *r, const char *fn) {
    while (*fn == ' ') fn++;
    gen_src g = {.entry = -1};
    gen_defs(&g, r, NULL);
    const char *src = g.sb.data ? g.sb.data : "";
    vm_script sc;
    sgl_error err = {{0}};
    if (vm_script_load(&r->s, GEN_NAME, src, strlen(src), NULL, false, false, &sc, &err) == 0) {
        /* A kept function's places ("@LINE:COL") are counted in the entry
         * (or file) that defined it; other functions' are their files'. */
        bool kept = false;
        for (size_t i = 0; *fn && i < r->n_defs; i++) kept |= r->defs[i].name && !strcmp(r->defs[i].name, fn);
        char *buf = NULL;
        size_t len = 0;
        FILE *mem = kept ? open_memstream(&buf, &len) : NULL;
        compiler_options co = compiler_options_default();
        if (compiler_dump_graph(sc.prog, &co, COMPILER_GRAPH_TEXT, *fn ? fn : NULL, mem ? mem : stdout, &err) < 0)
            fprintf(stderr, "error: %s\n", err.msg);
        if (mem) {
            fclose(mem);
            src_view v = {0};
            char *mapped = view_make(&v, &g, sc.prog) == 0 ? remap_places(&g, &v, buf ? buf : "", " @", false) : NULL;
            fputs(mapped ? mapped : buf ? buf : "", stdout);
            free(mapped);
            view_free(&v, g.n_reg);
            free(buf);
        }
    } else if (sc.prog && sc.prog->diags.n_errors) {
        print_diags(r, &g, sc.prog);
    }
    vm_script_free(&sc);
    gen_free(&g);
}

static void do_stats(repl *r) {
    vm_link_stats ls;
    vm_engine_stats(r->v, &ls);
    sgl_engine_metrics em;
    sgl_engine_metrics_get(r->s.engine, &em);
    printf("engine %s: %lld requests done; prompt %lld tokens, %lld cached (%.1f%%); %lld generated; "
           "%d running, %d waiting\n",
           sgl_engine_name(r->s.engine), (long long)em.requests_done, (long long)em.prompt_tokens,
           (long long)em.cached_tokens, 100.0 * em.hit_rate, (long long)em.generated_tokens, (int)em.running,
           (int)em.waiting);
    printf("vm: %lld generate, %lld score, %lld prefill requests in %lld flushes (largest %lld); %llu instructions\n",
           (long long)ls.generate_requests, (long long)ls.score_requests, (long long)ls.prefill_requests,
           (long long)ls.flushes, (long long)ls.max_batch, (unsigned long long)vm_instructions(r->v));
    cli_backend_stats(r->s.engine, stdout);
}

static void do_reset(repl *r) {
    for (size_t i = 0; i < r->n_defs; i++) def_free(&r->defs[i]);
    r->n_defs = 0;
    for (size_t i = 0; i < r->n_vars; i++) {
        free(r->names[i]);
        vm_release(r->vals[i]);
    }
    r->n_vars = 0;
    printf("definitions and variables cleared\n");
}

/* The argument of a ":cmd ARG" line (leading and trailing blanks dropped),
 * in buf; NULL when there is none. */
static const char *cmd_arg(const char *t, char *buf, size_t cap) {
    while (*t && *t != ' ' && *t != '\t') t++;
    while (*t == ' ' || *t == '\t') t++;
    size_t n = strlen(t);
    while (n && isspace((unsigned char)t[n - 1])) n--;
    if (!n || n >= cap) return NULL;
    memcpy(buf, t, n);
    buf[n] = 0;
    return buf;
}

static void do_load(repl *r, const char *path) {
    sgl_error err = {{0}};
    size_t len = 0;
    char *text = sgl_read_file(path, &len, &err);
    if (!text) {
        fprintf(stderr, ":load: %s\n", err.msg);
        return;
    }
    sgl_program *p = NULL;
    def_item *it = NULL;
    uint32_t mo = 0, ml = 0;
    int n = parse_items(r, path, text, &p, &it, &mo, &ml);
    if (n >= 0 && (n == 0 || add_defs(r, path, text, it, n, true) == 0)) {
        printf("loaded %d definition%s from %s\n", n, n == 1 ? "" : "s", path);
        if (ml) do_statements(r, path, text, mo, ml);
    }
    free(it);
    sgl_program_free(p);
    free(text);
}

static void do_save(repl *r, const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, ":save: %s: %s\n", path, strerror(errno));
        return;
    }
    fprintf(f, "# Definitions of an sglc repl session.\n\n");
    for (size_t i = 0; i < r->n_defs; i++)
        fprintf(f, "%.*s\n\n", (int)r->defs[i].len, r->defs[i].text + r->defs[i].off);
    if (fclose(f) != 0) {
        fprintf(stderr, ":save: %s: %s\n", path, strerror(errno));
        return;
    }
    printf("saved %zu definition%s to %s\n", r->n_defs, r->n_defs == 1 ? "" : "s", path);
}

/* Runs one complete entry. Returns false for :quit. */
static bool do_entry(repl *r, const char *t) {
    char arg[4096];
    while (*t == ' ' || *t == '\t') t++;
    size_t n = strlen(t);
    while (n && isspace((unsigned char)t[n - 1])) n--; /* blank lines that ended it */
    char cmd[32] = "";
    if (*t == ':') {
        size_t k = 0;
        while (t[k] && !isspace((unsigned char)t[k]) && k + 1 < sizeof cmd) {
            cmd[k] = t[k];
            k++;
        }
        cmd[k] = 0;
    }
    if (!n || *t == '#') {
        /* nothing */
    } else if (!strcmp(cmd, ":quit") || !strcmp(cmd, ":q") || !strcmp(cmd, ":exit")) {
        return false;
    } else if (!strcmp(cmd, ":help")) {
        repl_help();
    } else if (!strcmp(cmd, ":graph")) {
        do_graph(r, cmd_arg(t, arg, sizeof arg) ? arg : "");
    } else if (!strcmp(cmd, ":stats")) {
        do_stats(r);
    } else if (!strcmp(cmd, ":vars")) {
        for (size_t i = 0; i < r->n_vars; i++) {
            sgl_strbuf sb = {0};
            vm_repr_append(&sb, r->vals[i]);
            printf("%s = %s\n", r->names[i], sb.data ? sb.data : "");
            sgl_strbuf_free(&sb);
        }
    } else if (!strcmp(cmd, ":defs")) {
        for (size_t i = 0; i < r->n_defs; i++)
            printf("%.*s\n", (int)r->defs[i].len, r->defs[i].text + r->defs[i].off);
    } else if (!strcmp(cmd, ":reset")) {
        do_reset(r);
    } else if (!strcmp(cmd, ":load") || !strcmp(cmd, ":save")) {
        if (!cmd_arg(t, arg, sizeof arg)) fprintf(stderr, "usage: %s FILE\n", cmd);
        else if (cmd[1] == 'l') do_load(r, arg);
        else do_save(r, arg);
    } else if (*t == ':') {
        fprintf(stderr, "unknown command %s (:help lists them)\n", t);
    } else if (is_definition(t)) {
        do_definition(r, t);
    } else {
        do_statements(r, "<repl>", t, 0, (uint32_t)n);
    }
    fflush(stdout);
    return true;
}

enum { O_MODEL = 1, O_FAKE, O_ALLOW_IO, O_THREADS };

static const cli_option repl_options[] = {
    {O_MODEL, "--model", NULL, "PATH", CLI_MODEL_HELP},
    {O_FAKE, "--fake", NULL, NULL, "use the deterministic fake engine (no model)"},
    {O_ALLOW_IO, "--allow-io", NULL, NULL, "permit the file/http/shell builtins"},
    {O_THREADS, "--threads", NULL, "N", "engine threads (default: all cores)"},
    {0},
};

static const cli_option *const repl_tables[] = {repl_options, cli_device_options, cli_backend_options, NULL};

static void repl_help_extra(void) {
    repl_help();
#ifdef REPL_HAVE_EDIT
    printf("Line editing and history (up arrow) are on at a terminal.\n");
#else
    printf("Line editing is off (built without libedit).\n");
#endif
}

static const cli_spec repl_spec = {
    .name = "repl",
    .synopsis = "sglc repl [options]",
    .tables = repl_tables,
    .help_extra = repl_help_extra,
};

int cmd_repl(int argc, char **argv) {
    const char *model = NULL, *v;
    bool fake = false;
    vm_session_opts so = vm_session_opts_default();
    cli_backend bk;
    cli_backend_init(&bk);
    cli_args a;
    cli_args_init(&a, &repl_spec, argc, argv);
    for (int id; (id = cli_next(&a)) != CLI_DONE;) {
        v = a.value;
        switch (id) {
        case O_FAKE: fake = true; break;
        case O_ALLOW_IO: so.allow_io = true; break;
        case O_MODEL: model = v; break;
        case O_THREADS: so.n_threads = (int)cli_parse_long("repl", "--threads", v, 0, 1024); break;
        case CLI_OPERAND: cli_usage_error(&a, "unexpected argument '%s'", v);
        default:
            if (!cli_device_set("repl", id, v)) cli_backend_set("repl", id, v, &bk);
        }
    }
    char *model_path = NULL;
    bool remote = !fake && cli_backend_apply("repl", &bk, &so);
    if (!fake && (!remote || model)) {
        model_path = cli_model_path(model);
        if (!model_path) return 2;
        so.model_path = model_path;
    }
    so.fake = fake;
    repl r;
    memset(&r, 0, sizeof r);
    sgl_error err = {{0}};
    if (vm_session_open(&r.s, &so, &err) < 0) {
        fprintf(stderr, "sglc repl: %s\n", err.msg);
        free(model_path);
        cli_backend_free(&bk);
        return 2;
    }
    vm_config cfg = vm_session_config(&r.s);
    cfg.poll = repl_poll;
    r.v = vm_new(&cfg, &err);
    if (!r.v) {
        fprintf(stderr, "sglc repl: %s\n", err.msg);
        vm_session_close(&r.s);
        free(model_path);
        cli_backend_free(&bk);
        return 2;
    }
    const char *nc = getenv("NO_COLOR");
    r.color = isatty(2) && !(nc && *nc);
    bool tty = isatty(0);
    /* Ctrl-C: no SA_RESTART, so a blocked read returns and the entry is
     * dropped; a running entry sees it through repl_poll. */
    struct sigaction sa, old_sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_sa);
    char *hist = NULL;
#ifdef REPL_HAVE_EDIT
    if (tty) {
        tty_ctrl_d_plain(); /* before libedit reads the terminal's settings */
        rl_readline_name = "sglc";
        rl_getc_function = repl_getc;
        complete_repl = &r;
        rl_attempted_completion_function = complete;
        rl_basic_word_break_characters = " \t\n\"'`@$><=;|&{([,+-*/%!)]}";
        using_history();
        stifle_history(1000);
        hist = history_path();
        if (hist) read_history(hist);
    }
#endif
    if (tty)
        printf("sglc %s repl (engine: %s). :help for help, :quit or Ctrl-D to leave.\n", SGL_VERSION,
               r.s.backend ? r.s.backend : sgl_engine_name(r.s.engine));
    for (;;) {
        char *line = NULL;
        read_status st = read_line("sgl> ", tty, &line);
        if (st == READ_EOF) {
            if (tty) putchar('\n');
            break;
        }
        if (st == READ_INTERRUPT) {
            if (tty) putchar('\n');
            continue;
        }
        sgl_strbuf entry = {0};
        sgl_strbuf_puts(&entry, line);
        free(line);
        bool drop = false, eof = false;
        int blanks = 0;
        bool in_text = false;
        while (!drop && !eof && incomplete(entry.data ? entry.data : "", &in_text)) {
            char *more = NULL;
            st = read_line("...> ", tty, &more);
            if (st == READ_EOF) {
                eof = true;
                break;
            }
            if (st == READ_INTERRUPT) {
                if (tty) putchar('\n');
                drop = true;
                break;
            }
            if (!in_text && is_command(more)) {
                /* A : command (outside a string) leaves the unfinished entry. */
                fprintf(stderr, "(unfinished entry dropped)\n");
                sgl_strbuf_clear(&entry);
                sgl_strbuf_puts(&entry, more);
                free(more);
                break;
            }
            blanks = blank(more) ? blanks + 1 : 0;
            if (blanks >= 2) {
                fprintf(stderr, "(unfinished entry dropped)\n");
                drop = true;
            }
            sgl_strbuf_putc(&entry, '\n');
            sgl_strbuf_puts(&entry, more);
            free(more);
        }
        bool go_on = !(eof && tty); /* Ctrl-D in an unfinished entry leaves */
        if (!drop && go_on) go_on = do_entry(&r, entry.data ? entry.data : "");
        sgl_strbuf_free(&entry);
#ifdef REPL_HAVE_EDIT
        if (hist) write_history(hist);
#endif
        if (!go_on) break;
    }
    sigaction(SIGINT, &old_sa, NULL);
#ifdef REPL_HAVE_EDIT
    tty_restore();
#endif
    free(hist);
    for (size_t i = 0; i < r.n_vars; i++) {
        free(r.names[i]);
        vm_release(r.vals[i]);
    }
    free(r.names);
    free(r.vals);
    vm_free(r.v);
    for (size_t i = 0; i < r.n_scripts; i++) vm_script_free(&r.scripts[i]);
    free(r.scripts);
    for (size_t i = 0; i < r.n_defs; i++) def_free(&r.defs[i]);
    free(r.defs);
    vm_session_close(&r.s);
    free(model_path);
    cli_backend_free(&bk);
    return 0;
}
