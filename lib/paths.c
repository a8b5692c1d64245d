/* paths.c: where sglc finds its data at run time (the default model, the
 * benchmark workloads): the user's $XDG_DATA_HOME/sglc, then the install
 * prefix's share/sglc found relative to the installed executable or
 * library (so an installed tree can be moved), then the configured prefix,
 * and the source tree only for a binary run from its build folder.
 *
 * The build folder is recognised by the marker file SGLC_UNINSTALLED_MARKER
 * that meson writes next to the uninstalled executable and library (its
 * text is the source tree's path); it is never installed, so no path of the
 * source tree is compiled into, or used by, an installed binary.
 *
 * Compile-time definitions (set by meson, each optional):
 *   SGLC_BINDIR_TO_PREFIX  "..": from the executable's folder up to the prefix
 *   SGLC_LIBDIR_TO_PREFIX  "../..": from the library's folder up to the prefix
 *   SGLC_DATADIR_REL       "share": the data folder under the prefix
 *   SGLC_DATADIR           "/usr/local/share": the configured data folder
 */
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "include/sglc/sglc.h"
#include "lib/internal.h"

#ifndef SGLC_UNINSTALLED_MARKER
#define SGLC_UNINSTALLED_MARKER "sglc-uninstalled-source-root"
#endif

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static bool exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* Folder of path (resolved) into out[PATH_MAX]; false when it cannot be. */
static bool dir_of(const char *path, char *out) {
    char real[PATH_MAX];
    if (!path || !realpath(path, real)) return false;
    char *slash = strrchr(real, '/');
    if (!slash) return false;
    if (slash == real) slash[1] = 0;
    else *slash = 0;
    memcpy(out, real, strlen(real) + 1);
    return true;
}

/* The folders the running code was loaded from: [0] the object holding this
 * function (libsglc.so, or the executable it is linked into), [1] the
 * executable. Returns how many were found (duplicates dropped). */
static int anchors(char out[2][PATH_MAX]) {
    int n = 0;
    Dl_info info;
    if (dladdr((void *)sglc_data_path, &info) && info.dli_fname && dir_of(info.dli_fname, out[n]))
        n++;
    char exe[PATH_MAX];
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (k > 0) {
        exe[k] = 0;
        if (dir_of(exe, out[n]) && (n == 0 || strcmp(out[0], out[n]))) n++;
    }
    return n;
}

int sglc_source_root(char *out, size_t cap) {
    char a[2][PATH_MAX];
    int n = anchors(a);
    for (int i = 0; i < n; i++) {
        char marker[3 * PATH_MAX];
        snprintf(marker, sizeof marker, "%s/%s", a[i], SGLC_UNINSTALLED_MARKER);
        FILE *f = fopen(marker, "r");
        if (!f) continue;
        size_t len = fread(out, 1, cap - 1, f);
        fclose(f);
        while (len && (out[len - 1] == '\n' || out[len - 1] == ' ')) len--;
        out[len] = 0;
        if (len && exists(out)) return 0;
    }
    return -1;
}

/* Calls visit(dir, ctx) on each folder that may hold sglc's data, in lookup
 * order, until it returns true. Returns true when one did. */
typedef bool (*visit_fn)(const char *dir, const char *rel, void *ctx);

static bool each_data_dir(const char *rel, visit_fn visit, void *ctx) {
    char buf[3 * PATH_MAX];
    const char *xdg = getenv("XDG_DATA_HOME");
    const char *home = getenv("HOME");
    if (xdg && *xdg == '/') {
        snprintf(buf, sizeof buf, "%s/sglc", xdg);
        if (visit(buf, rel, ctx)) return true;
    } else if (home && *home) {
        snprintf(buf, sizeof buf, "%s/.local/share/sglc", home);
        if (visit(buf, rel, ctx)) return true;
    }
    char a[2][PATH_MAX];
    int n = anchors(a);
#if defined(SGLC_DATADIR_REL) && (defined(SGLC_BINDIR_TO_PREFIX) || defined(SGLC_LIBDIR_TO_PREFIX))
    static const char *const ups[] = {
#ifdef SGLC_LIBDIR_TO_PREFIX
        SGLC_LIBDIR_TO_PREFIX,
#endif
#ifdef SGLC_BINDIR_TO_PREFIX
        SGLC_BINDIR_TO_PREFIX,
#endif
    };
    for (int i = 0; i < n; i++) {
        for (size_t u = 0; u < sizeof ups / sizeof ups[0]; u++) {
            snprintf(buf, sizeof buf, "%s/%s/%s/sglc", a[i], ups[u], SGLC_DATADIR_REL);
            char real[PATH_MAX];
            if (realpath(buf, real) && visit(real, rel, ctx)) return true;
        }
    }
#endif
#ifdef SGLC_DATADIR
    snprintf(buf, sizeof buf, "%s/sglc", SGLC_DATADIR);
    if (visit(buf, rel, ctx)) return true;
#endif
    (void)n;
    char root[PATH_MAX];
    if (sglc_source_root(root, sizeof root) == 0 && visit(root, rel, ctx)) return true;
    return false;
}

typedef struct found {
    char *path;
    sglc_strlist *searched;
} found;

static bool try_dir(const char *dir, const char *rel, void *ctx) {
    found *f = ctx;
    size_t n = strlen(dir) + strlen(rel) + 2;
    char *buf = malloc(n);
    if (!buf) return false;
    snprintf(buf, n, "%s/%s", dir, rel);
    if (f->searched) sglc_strlist_add(f->searched, buf);
    if (access(buf, R_OK) != 0) {
        free(buf);
        return false;
    }
    f->path = buf;
    return true;
}

char *sglc_data_path(const char *rel) {
    if (!rel || !*rel) return NULL;
    found f = {NULL, NULL};
    each_data_dir(rel, try_dir, &f);
    return f.path;
}

char *sglc_default_model_path(sglc_error *err) {
    const char *env = getenv("SGL_MODEL");
    if (env && *env) {
        char *p = dup_str(env);
        if (!p) sglc_error_set(err, SGLC_ERR_MEMORY, "out of memory");
        return p;
    }
    sglc_strlist searched = {0};
    found f = {NULL, &searched};
    each_data_dir("models/" SGLC_DEFAULT_MODEL_FILE, try_dir, &f);
    if (!f.path) {
        char list[700] = "";
        size_t used = 0;
        for (size_t i = 0; i < searched.n && used < sizeof list - 1; i++) {
            int k = snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", searched.items[i]);
            if (k < 0) break;
            used += (size_t)k;
        }
        sglc_error_set(err, SGLC_ERR_ENGINE,
                       "no model found: $SGL_MODEL is not set and %s is not in any of: %s",
                       SGLC_DEFAULT_MODEL_FILE, list);
    }
    sglc_strlist_free(&searched);
    return f.path;
}
