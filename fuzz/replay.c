/* replay: runs LLVMFuzzerTestOneInput over files and directories given on
 * the command line, without libFuzzer, so the committed corpus is exercised
 * by ordinary builds (meson suite 'fuzz'). Prints "N passed, N failed". */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int n_run, n_failed;

static void run_file(const char *path) {
    size_t len;
    sgl_error err;
    char *buf = sgl_read_file(path, &len, &err);
    if (!buf) {
        fprintf(stderr, "replay: %s\n", err.msg);
        n_failed++;
        return;
    }
    LLVMFuzzerTestOneInput((const uint8_t *)buf, len);
    free(buf);
    n_run++;
}

static void run_path(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "replay: cannot stat %s\n", path);
        n_failed++;
        return;
    }
    if (!S_ISDIR(st.st_mode)) {
        run_file(path);
        return;
    }
    DIR *d = opendir(path);
    if (!d) {
        n_failed++;
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char sub[4096];
        snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
        run_path(sub);
    }
    closedir(d);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) run_path(argv[i]);
    printf("replay: %d passed, %d failed\n", n_run, n_failed);
    return n_failed || n_run == 0 ? 1 : 0;
}
