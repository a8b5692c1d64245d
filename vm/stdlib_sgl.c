/* stdlib_sgl.c: the module provider over the embedded stdlib table. */
#include "vm/stdlib_sgl.h"

#include <stdio.h>
#include <string.h>

bool vm_stdlib_provider(void *ctx, const char *name, const char **text, size_t *len,
                        const char **display_path) {
    (void)ctx;
    static char paths[64][96];
    size_t n = strlen(name);
    if (n > 4 && !strcmp(name + n - 4, ".sgl")) n -= 4;
    for (size_t i = 0; i < vm_stdlib_count; i++) {
        const vm_stdlib_file *f = &vm_stdlib_files[i];
        if (strlen(f->name) != n || strncmp(f->name, name, n) != 0) continue;
        *text = f->text;
        *len = f->len;
        if (i < 64) {
            snprintf(paths[i], sizeof paths[i], "<stdlib>/%s.sgl", f->name);
            *display_path = paths[i];
        } else {
            *display_path = "<stdlib>";
        }
        return true;
    }
    return false;
}
