/* test_cuda_determinism: tests/radix/test_determinism_e2e.c with the
 * default model on the CUDA device: greedy outputs byte-identical alone, in
 * a batch of 64, with prefixes from the device radix cache, and with chunked
 * prefill (suite 'cuda'; exit 77 without a GPU or without the model). */
int determinism_main(void);
#define main determinism_main
#include "tests/radix/test_determinism_e2e.c"
#undef main

#include "kernels/cuda/kcuda.h"
#include "runtime/model.h"

int main(void) {
    sgl_error e;
    if (kcuda_device_count() <= 0 || !model_device_available(MODEL_DEVICE_CUDA, &e))
        TEST_SKIP_ALL("no CUDA device on this machine");
    model_set_default_device(MODEL_DEVICE_CUDA);
    return determinism_main();
}
