/* cublas_dl: cuBLAS loaded with dlopen on first use (kcuda.cu, kb_cuda.cu).
 * Linking libcublas/libcublasLt into every sglc binary costs about 0.1 s at
 * each start, paid by every command even on machines without a GPU; only
 * the optional GEMM paths need cuBLAS, so they load it when they run. */
#ifndef SGL_CUBLAS_DL_H
#define SGL_CUBLAS_DL_H

#include <cublas_v2.h>

struct kcuda_cublas {
    decltype(&cublasCreate) create;
    decltype(&cublasDestroy) destroy;
    decltype(&cublasSetStream) set_stream;
    decltype(&cublasSgemm) sgemm;
    cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                              const void *, const void *, cudaDataType, int, const void *,
                              cudaDataType, int, const void *, void *, cudaDataType, int,
                              cublasComputeType_t, cublasGemmAlgo_t);
};

/* Returns the loaded functions (process lifetime), or nullptr when the
 * library or a symbol is missing. Thread-safe. */
const kcuda_cublas *kcuda_cublas_get();

#endif
