/* kcuda: CUDA device query, device-side weight decoders (F32, F16, Q8_0,
 * Q4_0, Q4_1) and cuBLAS-backed matmul (see kcuda.h). */
#include <dlfcn.h>

#include <mutex>

#include "kernels/cuda/cublas_dl.h"
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdio.h>

extern "C" {
#include "kernels/cuda/kcuda.h"
}

namespace {

struct block_q8_0 { __half d; int8_t qs[32]; };
struct block_q4_0 { __half d; uint8_t qs[16]; };
struct block_q4_1 { __half d, m; uint8_t qs[16]; };
static_assert(sizeof(block_q8_0) == 34, "Q8_0 block is 34 bytes");
static_assert(sizeof(block_q4_0) == 18, "Q4_0 block is 18 bytes");
static_assert(sizeof(block_q4_1) == 20, "Q4_1 block is 20 bytes");

/* One thread per output element; element i lives in block i/32. */
__global__ void dequant_f16(const __half *src, float *dst, int64_t n) {
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i < n) dst[i] = __half2float(src[i]);
}
__global__ void dequant_q8_0(const block_q8_0 *src, float *dst, int64_t n) {
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i >= n) return;
    const block_q8_0 &b = src[i / 32];
    dst[i] = __half2float(b.d) * (float)b.qs[i % 32];
}
/* Q4 blocks: low nibbles hold elements 0..15, high nibbles 16..31. */
__global__ void dequant_q4_0(const block_q4_0 *src, float *dst, int64_t n) {
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i >= n) return;
    const block_q4_0 &b = src[i / 32];
    int j = (int)(i % 32);
    int q = j < 16 ? (b.qs[j] & 15) : (b.qs[j - 16] >> 4);
    dst[i] = __half2float(b.d) * (float)(q - 8);
}
__global__ void dequant_q4_1(const block_q4_1 *src, float *dst, int64_t n) {
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i >= n) return;
    const block_q4_1 &b = src[i / 32];
    int j = (int)(i % 32);
    int q = j < 16 ? (b.qs[j] & 15) : (b.qs[j - 16] >> 4);
    dst[i] = __half2float(b.d) * (float)q + __half2float(b.m);
}

int fail(sgl_error *err, const char *what, cudaError_t e) {
    return sgl_error_set(err, "cuda: %s: %s", what, cudaGetErrorString(e));
}

/* Launches the decoder for t over device memory; returns 0 / -1. */
int launch_dequant(sgl_dtype t, const void *d_src, float *d_dst, int64_t n, sgl_error *err) {
    const int threads = 256;
    const unsigned blocks = (unsigned)((n + threads - 1) / threads);
    switch (t) {
    case SGL_DTYPE_F32:
        return cudaMemcpy(d_dst, d_src, (size_t)n * 4, cudaMemcpyDeviceToDevice) == cudaSuccess
                   ? 0 : sgl_error_set(err, "cuda: copy failed");
    case SGL_DTYPE_F16: dequant_f16<<<blocks, threads>>>((const __half *)d_src, d_dst, n); break;
    case SGL_DTYPE_Q8_0: dequant_q8_0<<<blocks, threads>>>((const block_q8_0 *)d_src, d_dst, n); break;
    case SGL_DTYPE_Q4_0: dequant_q4_0<<<blocks, threads>>>((const block_q4_0 *)d_src, d_dst, n); break;
    case SGL_DTYPE_Q4_1: dequant_q4_1<<<blocks, threads>>>((const block_q4_1 *)d_src, d_dst, n); break;
    default: return sgl_error_set(err, "cuda: type %s not supported", sgl_dtype_name(t));
    }
    cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? 0 : fail(err, "dequant kernel", e);
}

} // namespace

static const char *count_error = "no CUDA device";

extern "C" int kcuda_device_count(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        count_error = cudaGetErrorString(e);
        cudaGetLastError(); /* clear the sticky "no driver" error */
        return 0;
    }
    if (n == 0) count_error = "no CUDA device";
    return n;
}

extern "C" const char *kcuda_no_device_reason(void) { return count_error; }

extern "C" int kcuda_device_describe(char *buf, size_t cap) {
    if (kcuda_device_count() <= 0) return -1;
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) return -1;
    snprintf(buf, cap, "%s, %.1f GiB, compute capability %d.%d", p.name,
             (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0), p.major, p.minor);
    return 0;
}

extern "C" int kcuda_type_supported(sgl_dtype t) {
    return t == SGL_DTYPE_F32 || t == SGL_DTYPE_F16 || t == SGL_DTYPE_Q8_0 ||
           t == SGL_DTYPE_Q4_0 || t == SGL_DTYPE_Q4_1;
}

extern "C" int kcuda_dequant(sgl_dtype t, const void *src, float *dst, int64_t n, sgl_error *err) {
    if (!kcuda_type_supported(t)) return sgl_error_set(err, "cuda: type %s not supported", sgl_dtype_name(t));
    uint64_t nbytes = sgl_dtype_row_bytes(t, (uint64_t)n);
    if (nbytes == 0) return sgl_error_set(err, "cuda: %lld elements is not a whole number of blocks", (long long)n);
    void *d_src = nullptr;
    float *d_dst = nullptr;
    int rc = -1;
    cudaError_t e;
    if ((e = cudaMalloc(&d_src, nbytes)) != cudaSuccess) { fail(err, "alloc", e); goto out; }
    if ((e = cudaMalloc((void **)&d_dst, (size_t)n * 4)) != cudaSuccess) { fail(err, "alloc", e); goto out; }
    if ((e = cudaMemcpy(d_src, src, nbytes, cudaMemcpyHostToDevice)) != cudaSuccess) { fail(err, "copy in", e); goto out; }
    if (launch_dequant(t, d_src, d_dst, n, err)) goto out;
    if ((e = cudaMemcpy(dst, d_dst, (size_t)n * 4, cudaMemcpyDeviceToHost)) != cudaSuccess) { fail(err, "copy out", e); goto out; }
    rc = 0;
out:
    cudaFree(d_src);
    cudaFree(d_dst);
    return rc;
}

extern "C" int kcuda_matmul(sgl_dtype t, const void *W, int64_t rows, int64_t k, const float *X,
                            int64_t nb, float *Y, sgl_error *err) {
    if (!kcuda_type_supported(t)) return sgl_error_set(err, "cuda: type %s not supported", sgl_dtype_name(t));
    uint64_t wbytes = sgl_dtype_row_bytes(t, (uint64_t)k) * (uint64_t)rows;
    if (wbytes == 0) return sgl_error_set(err, "cuda: k = %lld is not a whole number of blocks", (long long)k);
    void *d_wq = nullptr;
    float *d_w = nullptr, *d_x = nullptr, *d_y = nullptr;
    cublasHandle_t h = nullptr;
    const kcuda_cublas *blas = kcuda_cublas_get();
    int rc = -1;
    cudaError_t e;
    const float one = 1.0f, zero = 0.0f;
    if ((e = cudaMalloc(&d_wq, wbytes)) != cudaSuccess ||
        (e = cudaMalloc((void **)&d_w, (size_t)(rows * k) * 4)) != cudaSuccess ||
        (e = cudaMalloc((void **)&d_x, (size_t)(nb * k) * 4)) != cudaSuccess ||
        (e = cudaMalloc((void **)&d_y, (size_t)(nb * rows) * 4)) != cudaSuccess) {
        fail(err, "alloc", e);
        goto out;
    }
    if ((e = cudaMemcpy(d_wq, W, wbytes, cudaMemcpyHostToDevice)) != cudaSuccess ||
        (e = cudaMemcpy(d_x, X, (size_t)(nb * k) * 4, cudaMemcpyHostToDevice)) != cudaSuccess) {
        fail(err, "copy in", e);
        goto out;
    }
    if (launch_dequant(t, d_wq, d_w, rows * k, err)) goto out;
    if (!blas) { sgl_error_set(err, "cuda: cannot load libcublas"); goto out; }
    if (blas->create(&h) != CUBLAS_STATUS_SUCCESS) { sgl_error_set(err, "cuda: cublasCreate failed"); goto out; }
    /* Row-major W [rows][k], X [nb][k], Y [nb][rows]. In cuBLAS's column-major
     * view W is k x rows, X is k x nb and Y is rows x nb, so Y = W^T X. */
    if (blas->sgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)rows, (int)nb, (int)k, &one, d_w, (int)k, d_x,
                    (int)k, &zero, d_y, (int)rows) != CUBLAS_STATUS_SUCCESS) {
        sgl_error_set(err, "cuda: cublasSgemm failed");
        goto out;
    }
    if ((e = cudaMemcpy(Y, d_y, (size_t)(nb * rows) * 4, cudaMemcpyDeviceToHost)) != cudaSuccess) {
        fail(err, "copy out", e);
        goto out;
    }
    rc = 0;
out:
    if (h) blas->destroy(h);
    cudaFree(d_wq);
    cudaFree(d_w);
    cudaFree(d_x);
    cudaFree(d_y);
    return rc;
}

const kcuda_cublas *kcuda_cublas_get() {
    static kcuda_cublas fns;
    static const kcuda_cublas *loaded = nullptr;
    static std::once_flag once;
    std::call_once(once, [] {
        void *h = dlopen("libcublas.so.13", RTLD_NOW | RTLD_LOCAL);
        if (!h) h = dlopen("libcublas.so", RTLD_NOW | RTLD_LOCAL);
        if (!h) return;
        fns.create = (decltype(fns.create))dlsym(h, "cublasCreate_v2");
        fns.destroy = (decltype(fns.destroy))dlsym(h, "cublasDestroy_v2");
        fns.set_stream = (decltype(fns.set_stream))dlsym(h, "cublasSetStream_v2");
        fns.sgemm = (decltype(fns.sgemm))dlsym(h, "cublasSgemm_v2");
        fns.gemm_ex = (decltype(fns.gemm_ex))dlsym(h, "cublasGemmEx");
        if (fns.create && fns.destroy && fns.set_stream && fns.sgemm && fns.gemm_ex) loaded = &fns;
    });
    return loaded;
}
