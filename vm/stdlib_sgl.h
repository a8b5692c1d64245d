/* stdlib_sgl: the SGL standard library (stdlib/NAME.sgl) embedded in the binary at
 * build time (vm/embed_stdlib.py writes the table), and the module provider
 * that serves it to the front end (sgl_load_options.provider), so
 * `import "chat"` works wherever sglc is installed.
 */
#ifndef SGL_VM_STDLIB_SGL_H
#define SGL_VM_STDLIB_SGL_H

#include <stdbool.h>
#include <stddef.h>

typedef struct vm_stdlib_file {
    const char *name; /* import name: "chat" */
    size_t len;
    const char *text;
} vm_stdlib_file;

extern const vm_stdlib_file vm_stdlib_files[];
extern const size_t vm_stdlib_count;

/* sgl_module_provider for the embedded stdlib: accepts "chat" or
 * "chat.sgl"; sets *text, *len (static storage) and *display_path
 * ("<stdlib>/chat.sgl", static). Returns false for other names. */
bool vm_stdlib_provider(void *ctx, const char *name, const char **text, size_t *len,
                        const char **display_path);

#endif
