/* kb_cuda_none: the CUDA backend entry points of a build without CUDA
 * (no nvcc, or -Dcuda=disabled): they say so and never fail hard. */
#include "kernels/backend.h"

int kb_cuda_built(void) { return 0; }

kb_backend *kb_cuda_new(sgl_error *err) {
    sgl_error_set(err, "this build has no CUDA backend (built without nvcc or with -Dcuda=disabled)");
    return NULL;
}
