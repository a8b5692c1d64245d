/* kcuda: the CUDA backend's C interface (built when meson finds nvcc).
 *
 * Dense matmuls go through cuBLAS; quantized weights are decoded on the device
 * by our own kernels into f32 first. Every entry point returns 0 or -1 with
 * err set and never aborts, including on machines with no GPU or no driver.
 * Results are compared with the CPU reference (kernels.h) by the 'cuda' test
 * suite, which skips when no device is present.
 */
#ifndef SGL_KCUDA_H
#define SGL_KCUDA_H

#include <stdint.h>

#include "kernels/dtype.h"
#include "util/util.h"

/* Number of usable CUDA devices; 0 when there is no GPU or no driver. */
int kcuda_device_count(void);
/* Why the last kcuda_device_count returned 0 (the runtime's words, e.g.
 * "CUDA driver version is insufficient for CUDA runtime version"; static). */
const char *kcuda_no_device_reason(void);
/* Writes a one-line description of device 0 (name, memory, compute
 * capability) into buf. Returns 0, or -1 when there is no device. */
int kcuda_device_describe(char *buf, size_t cap);
/* 1 if weights of type t can be used by kcuda_matmul. */
int kcuda_type_supported(sgl_dtype t);
/* Host-memory convenience matmul with kernels.h semantics:
 * Y[b*rows + r] = sum_j W[r][j] * X[b*k + j]. Copies W, X to the device,
 * decodes W to f32, runs cuBLAS SGEMM, copies Y back. */
int kcuda_matmul(sgl_dtype t, const void *W, int64_t rows, int64_t k, const float *X, int64_t nb,
                 float *Y, sgl_error *err);
/* Decodes n elements of type t on the device and copies them to dst (host).
 * Used by tests to compare the device decoders with kern_dequant_row. */
int kcuda_dequant(sgl_dtype t, const void *src, float *dst, int64_t n, sgl_error *err);

/* The cuBLAS path of the CUDA backend (kernels/cuda/kb_cuda.cu): matmuls of
 * min_rows activation rows or more decode the weights to f16 and run a
 * tensor-core GEMM; 0 turns it off (the default: the batch-invariant warp
 * kernel for every size). Results then depend on the batch shape. The
 * environment variable SGL_CUDA_GEMM_ROWS sets it at start. Returns 0, or
 * -1 when be is not the CUDA backend. */
struct kb_backend;
int kb_cuda_set_gemm_rows(struct kb_backend *be, int min_rows);
/* The fastest configuration this build has, not batch-invariant (on != 0):
 * the cuBLAS path from SGL_CUDA_GEMM_ROWS rows (16 when unset) up; 0: the
 * deterministic default. SGL_CUDA_FAST=1 turns it on at start. Returns 0,
 * or -1 when be is not the CUDA backend. */
int kb_cuda_set_fast(struct kb_backend *be, int on);
/* CUDA graphs for decode forwards (on by default; SGL_CUDA_GRAPHS=0 turns
 * them off at start). Returns 0, or -1 when be is not the CUDA backend. */
int kb_cuda_set_graphs(struct kb_backend *be, int on);
/* The extend kernel for sequences of 16 new tokens or more (on by
 * default); off, every row takes the decode kernels (the same results, for
 * benchmarks). Returns 0, or -1 when be is not the CUDA backend. */
int kb_cuda_set_extend(struct kb_backend *be, int on);
/* Decode forwards so far that captured a graph, replayed one, or ran their
 * recorded launches one by one (no graph could be made). Returns 0, or -1
 * when be is not the CUDA backend. */
int kb_cuda_graph_stats(struct kb_backend *be, long *captures, long *replays, long *eager);
/* Per-op timing of the CUDA backend for benchmarks: on != 0 starts it
 * (zeroing the totals); every op then synchronizes and adds its wall time.
 * kb_cuda_profile_get fills up to cap (name, seconds, calls) entries and
 * returns how many, or -1 when be is not the CUDA backend. */
int kb_cuda_profile(struct kb_backend *be, int on);
int kb_cuda_profile_get(struct kb_backend *be, const char **names, double *seconds, long *calls,
                        int cap);
/* Peak memory bandwidth of device 0 in GB/s from its memory clock and bus
 * width (0 when unknown). */
double kcuda_hbm_gbps(void);

#endif
