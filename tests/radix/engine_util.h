/* engine_util.h: what the engine tests share: starting a local engine from a
 * config, or ending the test program with the reason when it cannot start. */
#ifndef SGL_TEST_ENGINE_UTIL_H
#define SGL_TEST_ENGINE_UTIL_H

#include <stdio.h>
#include <stdlib.h>

#include "runtime/engine.h"

/* Returns the started engine (the caller frees it with sgl_engine_free);
 * exits with status 1 and "engine: REASON" on stderr when it fails. */
static inline sgl_engine *test_engine_start(const sgl_engine_config *c) {
    sgl_error err;
    sgl_engine *e = sgl_engine_local_new(c, &err);
    if (!e) {
        fprintf(stderr, "engine: %s\n", err.msg);
        exit(1);
    }
    return e;
}

#endif
