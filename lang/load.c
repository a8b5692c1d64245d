/* load.c: building a program: reading the root file, parsing it, finding
 * and loading its imports (depth-first, detecting cycles), then running the
 * checker. Import search order: the importing file's directory, $SGL_PATH
 * entries, opts->search_path, <source root>/stdlib, then opts->provider. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lang/lang_int.h"

#ifndef SGL_SOURCE_ROOT
#define SGL_SOURCE_ROOT "."
#endif

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
    if (lang_parse(&P) && !P.n_syntax_errors && !p->diags.n_errors)
        sgl_diag_add(p, SGL_DIAG_ERROR, m->loc, "parser ran out of memory");
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
    if (!strcmp(dir, ".") && name[0] != '/')
        sgl_strbuf_puts(&sb, name);
    else
        sgl_strbuf_printf(&sb, "%s/%s", dir, name);
    return sgl_strbuf_take(&sb);
}

typedef struct found_module {
    char *display, *real, *text;
    size_t len;
} found_module;

/* Tries dir/file. Returns 1 found, 0 not there, -1 exists but unreadable
 * (reported at loc). */
static int try_file(sgl_program *p, const char *dir, const char *file, found_module *f, sgl_loc loc) {
    char *path = join_path(dir, file);
    if (!path) return 0;
    if (access(path, F_OK) != 0) {
        free(path);
        return 0;
    }
    sgl_error err;
    size_t len;
    char *text = sgl_read_file(path, &len, &err);
    if (!text) {
        sgl_diag_add(p, SGL_DIAG_ERROR, loc, "cannot read module '%s': %s", path, err.msg);
        free(path);
        return -1;
    }
    if (len > LANG_MAX_FILE) {
        sgl_diag_add(p, SGL_DIAG_ERROR, loc, "module '%s' is too large (the limit is %d MiB)", path,
                     LANG_MAX_FILE >> 20);
        free(path);
        free(text);
        return -1;
    }
    char rbuf[PATH_MAX];
    f->real = sgl_strdup(realpath(path, rbuf) ? rbuf : path);
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
            if (!rc && !local_only) {
                rc = try_file(p, SGL_SOURCE_ROOT "/stdlib", file.data, f, loc);
                sgl_strbuf_printf(&searched, ", the standard library");
            }
        }
    }
    if (!rc && !local_only && p->opts.provider) {
        const char *text = NULL, *disp = NULL;
        size_t len = 0;
        if (p->opts.provider(p->opts.provider_ctx, name, &text, &len, &disp)) {
            f->text = malloc(len + 1);
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
        sgl_strbuf_printf(&searched, "%s<built-in modules>", searched.len ? ", " : "");
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

static sgl_program *program_new(const sgl_load_options *opts) {
    sgl_program *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    if (opts) p->opts = *opts;
    return p;
}

int sgl_program_load_buffer(sgl_program **out, const char *name, const char *text, size_t len,
                            const sgl_load_options *opts) {
    sgl_program *p = *out = program_new(opts);
    if (!p) return -1;
    if (len > LANG_MAX_FILE) {
        sgl_diag *d = sgl_diag_add(p, SGL_DIAG_ERROR, (sgl_loc){0, 0, 0}, "%s: input too large (the limit is %d MiB)",
                                   name ? name : "<input>", LANG_MAX_FILE >> 20);
        if (d) d->has_loc = false;
        return -1;
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
    sgl_program *p = *out = program_new(opts);
    if (!p) return -1;
    sgl_error err;
    size_t len;
    char *text = sgl_read_file(path, &len, &err);
    if (!text) {
        sgl_diag *d = sgl_diag_add(p, SGL_DIAG_ERROR, (sgl_loc){0, 0, 0}, "%s", err.msg);
        if (d) d->has_loc = false;
        return -1;
    }
    if (len > LANG_MAX_FILE) {
        free(text);
        sgl_diag *d = sgl_diag_add(p, SGL_DIAG_ERROR, (sgl_loc){0, 0, 0}, "%s: file too large (the limit is %d MiB)",
                                   path, LANG_MAX_FILE >> 20);
        if (d) d->has_loc = false;
        return -1;
    }
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
