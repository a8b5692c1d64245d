/* bench_util: what the benchmark programs under bench/ share (header only;
 * benchmarks are built from the source tree, so SGL_SOURCE_ROOT is set). */
#ifndef SGL_BENCH_UTIL_H
#define SGL_BENCH_UTIL_H

#include <stdio.h>
#include <stdlib.h>

/* The model a benchmark loads unless told otherwise: $SGL_MODEL when set
 * and not empty, else the default model in the source tree's models/.
 * Returns the environment's string or a static buffer (valid for the
 * program's life; not thread-safe on first call). */
static inline const char *bench_model_path(void) {
    static char def[4096];
    const char *path = getenv("SGL_MODEL");
    if (path && *path) return path;
    snprintf(def, sizeof def, "%s/models/SmolLM2-135M-Instruct.Q4_1.gguf", SGL_SOURCE_ROOT);
    return def;
}

#endif
