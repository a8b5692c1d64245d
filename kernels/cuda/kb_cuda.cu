/* kb_cuda: the CUDA backend of the table in kernels/backend.h (in progress). */
extern "C" {
#include "kernels/backend.h"
}

extern "C" int kb_cuda_built(void) { return 1; }

extern "C" kb_backend *kb_cuda_new(sgl_error *err) {
    sgl_error_set(err, "cuda: the backend is not complete yet");
    return nullptr;
}
