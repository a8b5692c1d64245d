/* test_cuda_engine: the local engine's tests on the tiny model
 * (tests/radix/test_engine.c: radix cache hits, retraction under a small KV
 * pool, chunked prefill, SCORE == GENERATE, streaming, cache flush) run with
 * the model on the CUDA device, so the radix cache indexes the device KV
 * pool (suite 'cuda'; exit 77 without a GPU). */
int engine_tiny_main(int argc, char **argv);
#define main engine_tiny_main
#include "tests/radix/test_engine.c"
#undef main

#include "kernels/cuda/kcuda.h"
#include "runtime/model.h"

int main(int argc, char **argv) {
    sgl_error e;
    if (kcuda_device_count() <= 0 || !model_device_available(MODEL_DEVICE_CUDA, &e))
        TEST_SKIP_ALL("no CUDA device on this machine");
    model_set_default_device(MODEL_DEVICE_CUDA);
    return engine_tiny_main(argc, argv);
}
