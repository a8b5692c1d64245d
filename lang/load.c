/* load.c: building a program: reading the root file, parsing it, finding
 * and loading its imports (depth-first, detecting cycles), then running the
 * checker. Import search order: the importing file's directory, $SGL_PATH
 * entries, opts->search_path, then opts->provider (the embedded standard
 * library; no folder of the source tree is read, so an installed sglc
 * behaves as the one in the build folder).
 *
 * Sources are untrusted input: only regular files are read (a device, FIFO
 * or directory is refused by name before any byte is read), each file and
 * the program's total are size-limited, imports must resolve inside the
 * allowed roots (unless allow_io), and an imported file that does not parse
 * contributes one diagnostic (one quoted line) however many errors it has. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lang/lang_int.h"

/* Adds a source (taking ownership of path, real_path and text). Returns its
 * file id or -1 on OOM (ownership still taken: freed). */
static int add_source(sgl_program *p, char *path, char *real, char *text, size_t len) {
    sgl_source *files = realloc(p->files, (p->n_files + 1) * sizeof *files);
    if (!files || len > UINT32_MAX - 1) {
        if (files) p->files = files;
        free(path), free(real), free(text);
        return -1;
    }
    p->files = files;
    sgl_source *s = &files[p->n_files];
    memset(s, 0, sizeof *s);
    s->path = path;
    s->real_path = real;
    s->text = text;
    s->len = (uint32_t)len;
    if (lang_source_index(s)) {
        free(path), free(real), free(text);
        return -1;
    }
    return (int)p->n_files++;
}

/* An imported file with several errors may not be SGL at all (a symlink to
 * some other file): keeps only its first error (and that error's notes),
 * so no more than one of its lines is ever quoted, and says so. */
static void keep_first_error(sgl_program *p, size_t first, int errors_before) {
    size_t k = first, w = first;
    int kept = 0, dropped = 0;
    sgl_loc where = {0};
    for (; k < p->diags.len; k++) {
        sgl_diag *d = &p->diags.items[k];
        bool keep;
        if (d->level == SGL_DIAG_NOTE) {
            keep = kept == 1 && dropped == 0;
        } else if (d->level == SGL_DIAG_ERROR && kept == 0) {
            keep = true;
            kept = 1;
            where = d->loc;
        } else {
            keep = false;
            if (d->level == SGL_DIAG_ERROR) dropped++;
            else p->diags.n_warnings--;
        }
        if (keep) p->diags.items[w++] = *d;
        else free(d->msg);
    }
    p->diags.len = w;
    p->diags.n_errors = errors_before + 1;
    sgl_diag *n = sgl_diag_add(p, SGL_DIAG_NOTE, where,
                               "%d more error%s in this imported file not shown (is it an SGL file?)",
                               dropped, dropped == 1 ? "" : "s");
    if (n) n->has_loc = false;
}

/* Parses file `file` into a new MODULE appended to p->modules. Returns the
 * module node or NULL on OOM. */
static sgl_node *parse_module(sgl_program *p, uint32_t file) {
    sgl_node **mods = realloc(p->modules, (p->n_modules + 1) * sizeof *mods);
    if (!mods) return NULL;
    p->modules = mods;
    sgl_node *m = sgl_arena_alloc(&p->arena, sizeof *m);
    if (!m) return NULL;
    m->kind = SGL_AST_MODULE;
    m->loc = (sgl_loc){file, 0, p->files[file].len};
    m->module.path = sgl_arena_strndup(&p->arena, p->files[file].path, strlen(p->files[file].path));
    if (!m->module.path) return NULL;
    m->module.index = p->n_modules;
    p->modules[p->n_modules++] = m;

    lang_parser P;
    memset(&P, 0, sizeof P);
    P.prog = p;
    P.arena = &p->arena;
    P.file = file;
    P.src = p->files[file].text;
    P.len = p->files[file].len;
    P.module = m;
    size_t first_diag = p->diags.len;
    int errors_before = p->diags.n_errors;
    if (lang_parse(&P) && !P.n_syntax_errors && !p->diags.n_errors)
        sgl_diag_add(p, SGL_DIAG_ERROR, m->loc, "parser ran out of memory");
    if (file > 0 && p->diags.n_errors - errors_before > 1) keep_first_error(p, first_diag, errors_before);
    return m;
}

static char *dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return sgl_strdup(".");
    if (slash == path) return sgl_strdup("/");
    return sgl_strndup(path, (size_t)(slash - path));
}

static char *join_path(const char *dir, const char *name) {
    sgl_strbuf sb = {0};
    if ((!strcmp(dir, ".") && name[0] != '/') || name[0] == '/')
        sgl_strbuf_puts(&sb, name);
    else
        sgl_strbuf_printf(&sb, "%s/%s", dir, name);
    return sgl_strbuf_take(&sb);
}

typedef struct found_module {
    char *display, *real, *text;
    size_t len;
} found_module;

static size_t max_file(const sgl_program *p) {
    return p->opts.max_file_bytes ? p->opts.max_file_bytes : SGL_DEFAULT_MAX_FILE;
}
static size_t max_total(const sgl_program *p) {
    return p->opts.max_total_bytes ? p->opts.max_total_bytes : SGL_DEFAULT_MAX_SOURCE;
}
static size_t total_loaded(const sgl_program *p) {
    size_t t = 0;
    for (uint32_t i = 0; i < p->n_files; i++) t += p->files[i].len;
    return t;
}

/* "4 MiB" or "1500 bytes" for limit messages. */
static void size_text(char *buf, size_t n, size_t bytes) {
    if (bytes >= (1u << 20) && bytes % (1u << 20) == 0) snprintf(buf, n, "%zu MiB", bytes >> 20);
    else snprintf(buf, n, "%zu bytes", bytes);
}

static const char *file_kind(mode_t m) {
    if (S_ISDIR(m)) return "a directory";
    if (S_ISCHR(m)) return "a character device";
    if (S_ISBLK(m)) return "a block device";
    if (S_ISFIFO(m)) return "a FIFO";
    if (S_ISSOCK(m)) return "a socket";
    return "not a regular file";
}

/* Reads a source file: a regular file of at most max bytes (checked
 * before reading, and again while reading, so a file growing under us
 * cannot exceed it). Returns the malloc'd NUL-terminated text, or NULL
 * with err set ("'/dev/zero' is a character device, not a source file",
 * "... is too large"). */
static char *read_source(const char *path, size_t max, size_t *len, sgl_error *err) {
    /* O_NONBLOCK: opening a FIFO must not wait for a writer. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        sgl_error_set(err, "cannot open '%s': %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    char lim[32];
    size_text(lim, sizeof lim, max);
    if (fstat(fd, &st) != 0) {
        sgl_error_set(err, "cannot stat '%s': %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        sgl_error_set(err, "'%s' is %s, not a source file", path, file_kind(st.st_mode));
        close(fd);
        return NULL;
    }
    if ((uint64_t)st.st_size > max) {
        sgl_error_set(err, "'%s' is too large (%lld bytes; the limit is %s)", path, (long long)st.st_size, lim);
        close(fd);
        return NULL;
    }
    size_t cap = (size_t)st.st_size + 1, n = 0;
    char *text = malloc(cap + 1);
    while (text) {
        if (n == cap) {
            if (n > max) break;
            char *nt = realloc(text, cap * 2 + 1);
            if (!nt) {
                free(text);
                text = NULL;
                break;
            }
            text = nt;
            cap *= 2;
        }
        ssize_t k = read(fd, text + n, cap - n);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            sgl_error_set(err, "error reading '%s': %s", path, strerror(errno));
            free(text);
            close(fd);
            return NULL;
        }
        if (k == 0) break;
        n += (size_t)k;
        if (n > max) break;
    }
    close(fd);
    if (!text) {
        sgl_error_set(err, "out of memory reading '%s'", path);
        return NULL;
    }
    if (n > max) {
        free(text);
        sgl_error_set(err, "'%s' is too large (the limit is %s)", path, lim);
        return NULL;
    }
    text[n] = 0;
    *len = n;
    return text;
}

/* Whether real (an absolute, resolved path) is dir or lies under it. */
static bool path_under(const char *real, const char *dir) {
    char rbuf[PATH_MAX];
    if (!dir || !realpath(dir, rbuf)) return false;
    size_t n = strlen(rbuf);
    while (n > 1 && rbuf[n - 1] == '/') n--;
    if (n == 1 && rbuf[0] == '/') return true;
    return !strncmp(real, rbuf, n) && (real[n] == '/' || real[n] == 0);
}

/* Whether an import that resolved to real is inside the allowed roots. */
static bool import_allowed(const sgl_program *p, const char *real) {
    if (p->opts.allow_io || p->opts.imports_anywhere) return true;
    if (path_under(real, p->root_dir)) return true;
    for (size_t i = 0; i < p->opts.n_search_path; i++)
        if (path_under(real, p->opts.search_path[i])) return true;
    if (!p->opts.ignore_env && !p->opts.import_root) {
        const char *env = getenv("SGL_PATH");
        char *copy = env ? sgl_strdup(env) : NULL;
        char *save = NULL;
        bool ok = false;
        for (char *d = copy ? strtok_r(copy, ":", &save) : NULL; d && !ok; d = strtok_r(NULL, ":", &save))
            ok = path_under(real, d);
        free(copy);
        if (ok) return true;
    }
    return false;
}

/* Tries dir/file. Returns 1 found, 0 not there, -1 exists but refused or
 * unreadable (reported at loc). */
static int try_file(sgl_program *p, const char *dir, const char *file, found_module *f, sgl_loc loc) {
    char *path = join_path(dir, file);
    if (!path) return 0;
    struct stat st;
    if (lstat(path, &st) != 0) {
        free(path);
        return 0;
    }
    char rbuf[PATH_MAX];
    if (!realpath(path, rbuf)) {
        sgl_diag_add(p, SGL_DIAG_ERROR, loc, "cannot read module '%s': %s", path, strerror(errno));
        free(path);
        return -1;
    }
    if (!import_allowed(p, rbuf)) {
        sgl_diag_add(p, SGL_DIAG_ERROR, loc,
                     "module '%s' resolves to '%s', outside the program's directory, the -I "
                     "directories and the standard library (--allow-io lifts this)",
                     path, rbuf);
        free(path);
        return -1;
    }
    size_t used = total_loaded(p), room = max_total(p) > used ? max_total(p) - used : 0;
    size_t max = SGL_MIN(max_file(p), room);
    sgl_error err;
    size_t len = 0;
    char *text = read_source(path, max, &len, &err);
    if (!text) {
        if (max < max_file(p) && strstr(err.msg, "too large")) {
            char lim[32];
            size_text(lim, sizeof lim, max_total(p));
            sgl_diag_add(p, SGL_DIAG_ERROR, loc,
                         "cannot load module '%s': the program's sources would exceed %s in total", path, lim);
        } else {
            sgl_diag_add(p, SGL_DIAG_ERROR, loc, "cannot load module: %s", err.msg);
        }
        free(path);
        return -1;
    }
    f->real = sgl_strdup(rbuf);
    f->display = path;
    f->text = text;
    f->len = len;
    return 1;
}

/* Resolves an import string. Returns 1 found, 0 not found (reported), -1
 * other error (reported). */
static int resolve_import(sgl_program *p, const char *importer, const sgl_node *imp, found_module *f) {
    const char *name = imp->import.path;
    sgl_loc loc = imp->import.path_loc;
    size_t nlen = strlen(name);
    if (nlen == 0) {
        sgl_diag_add(p, SGL_DIAG_ERROR, loc, "empty import path");
        return -1;
    }
    sgl_strbuf file = {0};
    sgl_strbuf_puts(&file, name);
    if (nlen < 4 || strcmp(name + nlen - 4, ".sgl")) sgl_strbuf_puts(&file, ".sgl");
    if (!file.data) return -1;
    sgl_strbuf searched = {0};
    int rc = 0;
    char *idir = dir_of(importer);
    bool local_only = !strncmp(name, "./", 2) || !strncmp(name, "../", 3);
    if (!p->opts.no_filesystem && idir) {
        if (name[0] == '/') {
            rc = try_file(p, ".", file.data, f, loc);
            sgl_strbuf_printf(&searched, "%s", file.data);
        } else {
            rc = try_file(p, idir, file.data, f, loc);
            sgl_strbuf_printf(&searched, "%s", idir);
            if (!rc && !local_only && !p->opts.ignore_env) {
                const char *env = getenv("SGL_PATH");
                char *copy = env ? sgl_strdup(env) : NULL;
                char *save = NULL;
                for (char *d = copy ? strtok_r(copy, ":", &save) : NULL; d && !rc;
                     d = strtok_r(NULL, ":", &save)) {
                    rc = try_file(p, d, file.data, f, loc);
                    sgl_strbuf_printf(&searched, ", %s", d);
                }
                free(copy);
            }
            for (size_t i = 0; !rc && !local_only && i < p->opts.n_search_path; i++) {
                rc = try_file(p, p->opts.search_path[i], file.data, f, loc);
                sgl_strbuf_printf(&searched, ", %s", p->opts.search_path[i]);
            }
        }
    }
    if (!rc && !local_only && p->opts.provider) {
        const char *text = NULL, *disp = NULL;
        size_t len = 0;
        if (p->opts.provider(p->opts.provider_ctx, name, &text, &len, &disp)) {
            f->text = len <= max_file(p) && total_loaded(p) + len <= max_total(p) ? malloc(len + 1) : NULL;
            if (f->text) {
                memcpy(f->text, text, len);
                f->text[len] = 0;
                f->len = len;
                f->display = sgl_strdup(disp ? disp : file.data);
                sgl_strbuf r = {0};
                sgl_strbuf_printf(&r, "<provider>:%s", name);
                f->real = sgl_strbuf_take(&r);
                rc = 1;
            } else {
                rc = -1;
            }
        }
        sgl_strbuf_printf(&searched, "%sthe standard library", searched.len ? ", " : "");
    }
    if (rc == 0) {
        if (searched.len)
            sgl_diag_add(p, SGL_DIAG_ERROR, loc, "cannot find module '%s' (looked for %s in: %s)", name,
                         file.data, searched.data);
        else
            sgl_diag_add(p, SGL_DIAG_ERROR, loc, "cannot find module '%s' (imports are disabled here)", name);
    }
    free(idir);
    sgl_strbuf_free(&file);
    sgl_strbuf_free(&searched);
    return rc;
}

/* Loads the imports of module index mi depth-first. stack[0..depth) holds
 * the module indices being loaded (for cycle reports). */
static void load_imports(sgl_program *p, uint32_t mi, uint32_t *stack, uint32_t depth) {
    sgl_node *m = p->modules[mi];
    const char *importer = p->files[m->loc.file].path;
    for (uint32_t i = 0; i < m->module.items.len; i++) {
        sgl_node *imp = m->module.items.items[i];
        if (imp->kind != SGL_AST_IMPORT) continue;
        found_module f = {0};
        if (resolve_import(p, importer, imp, &f) != 1) continue;
        /* Already loaded (or being loaded)? */
        int found = -1;
        for (uint32_t k = 0; k < p->n_modules; k++) {
            const sgl_source *s = &p->files[p->modules[k]->loc.file];
            if (s->real_path && !strcmp(s->real_path, f.real)) found = (int)k;
        }
        if (found >= 0) {
            free(f.display), free(f.real), free(f.text);
            imp->import.module = found;
            for (uint32_t d = 0; d < depth; d++) {
                if (stack[d] != (uint32_t)found) continue;
                sgl_strbuf chain = {0};
                for (uint32_t e = d; e < depth; e++)
                    sgl_strbuf_printf(&chain, "%s -> ", p->files[p->modules[stack[e]]->loc.file].path);
                sgl_strbuf_puts(&chain, p->files[p->modules[found]->loc.file].path);
                sgl_diag_add(p, SGL_DIAG_ERROR, imp->loc, "import cycle: %s", chain.data ? chain.data : "");
                sgl_strbuf_free(&chain);
                imp->import.module = -1;
                break;
            }
            continue;
        }
        int file = add_source(p, f.display, f.real, f.text, f.len);
        if (file < 0) continue;
        sgl_node *sub = parse_module(p, (uint32_t)file);
        if (!sub) continue;
        imp->import.module = (int32_t)sub->module.index;
        uint32_t *st = malloc((depth + 2) * sizeof *st);
        if (!st) continue;
        memcpy(st, stack, depth * sizeof *st);
        st[depth] = sub->module.index;
        load_imports(p, sub->module.index, st, depth + 1);
        free(st);
    }
}

static int finish(sgl_program *p) {
    uint32_t root = 0;
    load_imports(p, 0, &root, 1);
    sgl_node *m = p->modules[0];
    for (uint32_t i = 0; i < m->module.items.len; i++)
        if (m->module.items.items[i]->kind == SGL_AST_MAIN && !p->main) p->main = m->module.items.items[i];
    if (!p->opts.parse_only && p->diags.n_errors == 0) lang_check_program(p);
    return p->diags.n_errors ? -1 : 0;
}

static sgl_program *program_new(const sgl_load_options *opts, const char *root_name) {
    sgl_program *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    if (opts) p->opts = *opts;
    char *d = p->opts.import_root ? sgl_strdup(p->opts.import_root) : dir_of(root_name ? root_name : "./x");
    p->root_dir = d;
    return p;
}

static int root_error(sgl_program *p, const char *fmt, const char *a, const char *b) {
    sgl_diag *d = sgl_diag_add(p, SGL_DIAG_ERROR, (sgl_loc){0, 0, 0}, fmt, a, b);
    if (d) d->has_loc = false;
    return -1;
}

int sgl_program_load_buffer(sgl_program **out, const char *name, const char *text, size_t len,
                            const sgl_load_options *opts) {
    sgl_program *p = *out = program_new(opts, name);
    if (!p) return -1;
    size_t max = SGL_MIN(max_file(p), max_total(p));
    if (len > max) {
        char lim[32];
        size_text(lim, sizeof lim, max);
        return root_error(p, "%s: input too large (the limit is %s)", name ? name : "<input>", lim);
    }
    char *copy = malloc(len + 1);
    if (!copy) return -1;
    if (len) memcpy(copy, text, len);
    copy[len] = 0;
    char *disp = sgl_strdup(name ? name : "<input>");
    int file = add_source(p, disp, NULL, copy, len);
    if (file < 0 || !parse_module(p, (uint32_t)file)) return -1;
    return finish(p);
}

int sgl_program_load_file(sgl_program **out, const char *path, const sgl_load_options *opts) {
    sgl_program *p = *out = program_new(opts, path);
    if (!p) return -1;
    sgl_error err;
    size_t len = 0;
    char *text = read_source(path, SGL_MIN(max_file(p), max_total(p)), &len, &err);
    if (!text) return root_error(p, "%s%s", err.msg, "");
    char rbuf[PATH_MAX];
    char *real = sgl_strdup(realpath(path, rbuf) ? rbuf : path);
    int file = add_source(p, sgl_strdup(path), real, text, len);
    if (file < 0 || !parse_module(p, (uint32_t)file)) return -1;
    return finish(p);
}

void sgl_program_free(sgl_program *p) {
    if (!p) return;
    for (uint32_t i = 0; i < p->n_files; i++) {
        free(p->files[i].path);
        free(p->files[i].real_path);
        free(p->files[i].text);
        free(p->files[i].line_starts);
    }
    free(p->files);
    free(p->modules);
    free(p->root_dir);
    for (size_t i = 0; i < p->diags.len; i++) free(p->diags.items[i].msg);
    free(p->diags.items);
    sgl_arena_free(&p->arena);
    free(p);
}

sgl_node *sgl_program_find_fn(const sgl_program *p, const char *name) {
    for (uint32_t mi = 0; mi < p->n_modules; mi++) {
        sgl_node *m = p->modules[mi];
        for (uint32_t i = 0; i < m->module.items.len; i++) {
            sgl_node *it = m->module.items.items[i];
            if (it->kind == SGL_AST_FN && !strcmp(it->fn.name, name) && (mi == 0 || name[0] != '_'))
                return it;
        }
    }
    return NULL;
}
