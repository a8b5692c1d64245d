/* kb_cuda: the CUDA implementation of the backend table (kernels/backend.h).
 *
 * Weights are uploaded once in their GGUF types and decoded inside the
 * kernels (the element decoders below follow kernels/cpu/ref_quant.c bit for
 * bit, with explicit round-to-nearest products so nvcc fuses nothing). The
 * KV store lives on the device as f16 in the slot layout of
 * runtime/kv_pool.h; the host pool chooses the slots.
 *
 * Determinism (kernels/backend.h): every output element has one reduction
 * order that does not depend on the batch:
 *  - matmul: one warp per (weight row, tile of MM_TILE or MM_TILE_BIG rows);
 *    lane l sums the products of columns l, l + 32, ... in column order and
 *    the 32 lane sums meet in a fixed butterfly. An activation row's result
 *    is the same in any tile and any batch.
 *  - attention: the keys 0..pos of a query are cut into chunks of
 *    ATT_CHUNK keys at fixed key positions (0, 256, 512, ...). A chunk
 *    gives its max score m, l = sum of exp(s - m) (thread-strided partials
 *    meeting in a fixed tree) and o[d] = sum of exp(s - m) v[d] in key
 *    order; the chunks are folded in key order into a running (M, L, acc)
 *    (fold()). Decode rows and short extends run k_att_chunk +
 *    k_att_combine; sequences of EXT_MIN_NEW new tokens or more run
 *    k_att_extend, which computes the same chunk statistics with the same
 *    operations and folds them the same way, so a query gets the same bits
 *    whichever kernel, batch, chunked prefill or cached prefix produced it.
 *  - rmsnorm: fixed-order block reduction per row.
 * The cuBLAS path (kb_cuda_set_gemm_rows, kb_cuda_set_fast,
 * SGL_CUDA_FAST=1) decodes weights to f16 once and runs cuBLAS's default
 * tensor-core GEMM (which may split K) for batches from a number of rows up:
 * faster, but its sums depend on the batch shape, so it is off by default.
 *
 * CUDA graphs: a decode forward (one new token per sequence, logits for
 * every row, at most GRAPH_MAX_ROWS rows) is recorded instead of launched:
 * every op sizes its grid for the bucket (the row count rounded up to a
 * power of two) and passes the real row count as a device pointer, so rows
 * past it exit at once; attention's chunk count is rounded up to a power of
 * two the same way (chunks past a row's context exit). The inputs (tokens,
 * positions, slots, lengths) are copied into fixed device buffers by
 * op_begin. op_finish replays the graph of the shape (bucket, chunk
 * bucket) when the recorded launches have the same signature (kernel,
 * grid, every argument byte) as the captured ones, else captures them anew;
 * where capture fails the launches run one by one. Prefill and extend
 * batches, per-op timing and the cuBLAS path never use graphs;
 * SGL_CUDA_GRAPHS=0 or kb_cuda_set_graphs turns them off.
 *
 * None of this has run on a GPU yet: it compiles, and tests/cuda holds the
 * checks a GPU machine runs (scripts/gpu-check).
 */
extern "C" {
#include "kernels/backend.h"
#include "kernels/cuda/kcuda.h"
}

#include "kernels/cuda/cublas_dl.h"
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <map>
#include <new>
#include <unordered_map>
#include <vector>

namespace {

/* Activation rows per matmul warp (each weight element is decoded once per
 * tile): MM_TILE below MM_TILE_BIG_FROM rows, MM_TILE_BIG from there. */
constexpr int MM_TILE = 8;
constexpr int MM_TILE_BIG = 32;
constexpr int MM_TILE_BIG_FROM = 64;
/* The attention kernels and their constants (ATT_CHUNK, ATT_THREADS,
 * EXT_Q, ...): a header of their own, which tests/cuda/test_cuda_emu.cpp
 * also compiles on the host through a small CUDA emulation. */
#include "kernels/cuda/att_kernels.cuh"
/* The other kernels and the weight decoders (MM_WARPS, NORM_THREADS, the
 * probe set): the same arrangement. */
#include "kernels/cuda/kb_kernels.cuh"
/* Largest head_dim the attention kernels take (ATT_THREADS * 8). */
constexpr int ATT_MAX_HD = ATT_THREADS * 8;
/* The new tokens from which a sequence takes the extend kernel. */
constexpr int EXT_MIN_NEW = 16;
/* Decode graphs: largest batch (rows) captured; captures of one shape in a
 * row (no replay between: its launches change every step) after which the
 * shape runs launch by launch for good. */
constexpr int GRAPH_MAX_ROWS = 256;
constexpr int GRAPH_MAX_CAPTURES = 16;
/* Rows from which kb_cuda_set_fast / SGL_CUDA_FAST take cuBLAS (not yet
 * measured on a device; SGL_CUDA_GEMM_ROWS overrides it). */
constexpr int FAST_GEMM_ROWS = 16;

bool type_ok(sgl_dtype t) {
    switch (t) {
    case SGL_DTYPE_F32: case SGL_DTYPE_F16: case SGL_DTYPE_BF16: case SGL_DTYPE_Q4_0:
    case SGL_DTYPE_Q4_1: case SGL_DTYPE_Q8_0: case SGL_DTYPE_Q4_K: case SGL_DTYPE_Q5_K:
    case SGL_DTYPE_Q6_K:
        return true;
    default:
        return false;
    }
}

/* Calls F<T>::run(args...) for the runtime type t (one of type_ok's). */
#define KB_DISPATCH(t, F, ...)                                                                     \
    do {                                                                                           \
        switch (t) {                                                                               \
        case SGL_DTYPE_F32: F<SGL_DTYPE_F32>(__VA_ARGS__); break;                                  \
        case SGL_DTYPE_F16: F<SGL_DTYPE_F16>(__VA_ARGS__); break;                                  \
        case SGL_DTYPE_BF16: F<SGL_DTYPE_BF16>(__VA_ARGS__); break;                                \
        case SGL_DTYPE_Q4_0: F<SGL_DTYPE_Q4_0>(__VA_ARGS__); break;                                \
        case SGL_DTYPE_Q4_1: F<SGL_DTYPE_Q4_1>(__VA_ARGS__); break;                                \
        case SGL_DTYPE_Q8_0: F<SGL_DTYPE_Q8_0>(__VA_ARGS__); break;                                \
        case SGL_DTYPE_Q4_K: F<SGL_DTYPE_Q4_K>(__VA_ARGS__); break;                                \
        case SGL_DTYPE_Q5_K: F<SGL_DTYPE_Q5_K>(__VA_ARGS__); break;                                \
        case SGL_DTYPE_Q6_K: F<SGL_DTYPE_Q6_K>(__VA_ARGS__); break;                                \
        default: break;                                                                            \
        }                                                                                          \
    } while (0)

unsigned blocks_for(int64_t n, int threads) { return (unsigned)((n + threads - 1) / threads); }


/* ---- backend state ---------------------------------------------------------------- */

struct dbuf { /* a growable device buffer */
    void *p = nullptr;
    size_t cap = 0;
};

/* The device KV store owned by a kv_pool (kernels/backend.h kv_new). */
struct cuda_kv {
    kb_kv kv; /* first: runtime/model.c reads it as a kb_kv */
    size_t bytes;
};

/* Per-op timing (kb_cuda_profile): each op synchronizes and adds its wall
 * time; for benchmarks only (it serializes host and device). */
enum prof_op { P_MATMUL, P_GEMM, P_EMBED, P_NORM, P_ADD, P_ROPE, P_SILU, P_KV, P_ATT, P_GATHER,
               P_PROBE, P_COPY, P_N };
const char *const prof_names[P_N] = {"matmul", "cublas gemm", "embed", "(add+)rmsnorm",
                                     "add/bias", "bias+rope+kv", "silu*mul", "kv store",
                                     "attention", "gather rows", "nan probes", "copies"};

/* One captured decode forward: its executable graph and the signature of
 * the launches it holds (kernel, grid, block, shared memory, every argument
 * byte). It is replayed only for a forward whose launches have the same
 * signature. */
struct graph_ent {
    cudaGraphExec_t exec = nullptr;
    std::vector<unsigned char> sig;
    int captures = 0;
    bool broken = false; /* capture or launch failed: this shape runs eagerly */
};

struct kb_cuda {
    kb_backend base;
    bool prof = false;
    double prof_s[P_N] = {0};
    long prof_n[P_N] = {0};
    double prof_t0 = 0;
    cudaStream_t stream = nullptr;
    cublasHandle_t cublas = nullptr;
    int gemm_rows = 0; /* cuBLAS from this many rows up; 0 = never (deterministic) */
    std::unordered_map<const void *, __half *> w16; /* f16 copies of weights (cuBLAS path) */
    std::unordered_map<void *, size_t> allocs;
    std::atomic<uint64_t> bytes{0}; /* read by model_device_memory from other threads */
    probe_set pending{};  /* probes not launched yet: they go out together before the next op */
    int n_pending = 0;
    int64_t pending_max = 0;
    cudaError_t first_error = cudaSuccess;
    const kb_batch *b = nullptr;
    int n_chunks = 0;      /* chunks of the longest context of the batch */
    int n_chunks_dec = 0;  /* ... of the rows on the decode path (arows) */
    int n_arows = 0;       /* rows on the decode path when extend tiles are used */
    int n_tiles = 0;       /* extend tiles */
    int ext_ok = -1;       /* k_att_extend's shared memory granted (-1: not asked yet) */
    bool extend = true;    /* kb_cuda_set_extend: the extend kernel for long extends */
    dbuf tok, pos, wslot, row_seq, seq_slot0, slots, logit_rows, part, x16, flag, nrow, arows,
        tiles, ident;
    int64_t ident_n = 0;   /* ident holds 0 .. ident_n - 1 */
    /* CUDA graphs (decode forwards): see the top of the file */
    bool graphs = true;
    bool rec = false;      /* this forward is recorded for a graph */
    int rec_B = 0;         /* its bucket (rows the launches are sized for) */
    std::vector<std::function<void()>> rec_ops;
    std::vector<unsigned char> rec_sig;
    std::map<uint64_t, graph_ent> graph_map; /* (bucket, chunk bucket) -> graph */
    long n_graph_replays = 0, n_graph_captures = 0, n_graph_eager = 0;
    char name[256];
};

std::atomic<uint64_t> g_kv_bytes{0}; /* device bytes of live KV stores (all backends) */

kb_cuda *cu(kb_backend *be) { return reinterpret_cast<kb_cuda *>(be); }

void note(kb_cuda *c, cudaError_t e) {
    if (e != cudaSuccess && c->first_error == cudaSuccess) c->first_error = e;
}
void note_launch(kb_cuda *c) { note(c, cudaGetLastError()); }

/* Launches kernel k<<<g, bl, shm>>>(a...) on the backend's stream, or, while
 * a forward is recorded for a graph, records the launch and appends its
 * signature (k, g, bl, shm and the bytes of every argument as the kernel
 * receives it). */
template <class T> struct same_t { using type = T; };
void sig_add(kb_cuda *c, const void *p, size_t n) {
    const unsigned char *b = static_cast<const unsigned char *>(p);
    c->rec_sig.insert(c->rec_sig.end(), b, b + n);
}
template <typename... KA>
void launch(kb_cuda *c, void (*k)(KA...), dim3 g, dim3 bl, size_t shm,
            typename same_t<KA>::type... a) {
    if (!c->rec) {
        k<<<g, bl, shm, c->stream>>>(a...);
        note_launch(c);
        return;
    }
    uintptr_t kp = reinterpret_cast<uintptr_t>(k);
    unsigned dims[6] = {g.x, g.y, g.z, bl.x, bl.y, bl.z};
    sig_add(c, &kp, sizeof kp);
    sig_add(c, dims, sizeof dims);
    sig_add(c, &shm, sizeof shm);
    (sig_add(c, &a, sizeof a), ...);
    c->rec_ops.emplace_back([=]() {
        k<<<g, bl, shm, c->stream>>>(a...);
        note_launch(c);
    });
}

double now_s() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
/* Launches the pending NaN/Inf checks (one kernel for all of them). Every
 * op calls it first (through prof_begin), so a check always runs before
 * anything can overwrite the buffer it reads. */
void flush_probes(kb_cuda *c) {
    if (!c->n_pending) return;
    unsigned bx = blocks_for(c->pending_max, 256);
    if (bx > 256) bx = 256;
    for (int e = c->n_pending; e < PROBE_BATCH; e++) { /* unused entries: fixed bytes */
        c->pending.x[e] = nullptr;
        c->pending.n[e] = c->pending.w[e] = 0;
        c->pending.probe[e] = 0;
    }
    c->pending.nd = (const int *)c->nrow.p;
    launch(c, k_check_multi, dim3(bx, (unsigned)c->n_pending), dim3(256), 0, c->pending,
           (int *)c->flag.p);
    c->n_pending = 0;
    c->pending_max = 0;
}
void prof_begin(kb_cuda *c) {
    if (!c->prof) {
        flush_probes(c);
        return;
    }
    if (c->n_pending) {
        cudaStreamSynchronize(c->stream);
        double t = now_s();
        flush_probes(c);
        cudaStreamSynchronize(c->stream);
        c->prof_s[P_PROBE] += now_s() - t;
        c->prof_n[P_PROBE]++;
    }
    cudaStreamSynchronize(c->stream);
    c->prof_t0 = now_s();
}
void prof_end(kb_cuda *c, prof_op op) {
    if (!c->prof) return;
    cudaStreamSynchronize(c->stream);
    c->prof_s[op] += now_s() - c->prof_t0;
    c->prof_n[op]++;
}

int fail(sgl_error *err, const char *what, cudaError_t e) {
    return sgl_error_set(err, "cuda: %s: %s", what, cudaGetErrorString(e));
}

/* Grows b to at least bytes (contents dropped); round: to a power of two
 * (buffers refilled every forward keep their address longer, so decode
 * graphs stay valid). Returns 0 or -1. */
int reserve(kb_cuda *c, dbuf *b, size_t bytes, bool round = false) {
    if (bytes <= b->cap) return 0;
    if (round) {
        size_t r = 256;
        while (r < bytes) r *= 2;
        bytes = r;
    }
    if (b->p) {
        c->bytes -= b->cap;
        cudaFree(b->p);
    }
    b->p = nullptr;
    b->cap = 0;
    if (cudaMalloc(&b->p, bytes) != cudaSuccess) {
        cudaGetLastError();
        b->p = nullptr;
        return -1;
    }
    b->cap = bytes;
    c->bytes += bytes;
    return 0;
}

int upload_ints(kb_cuda *c, dbuf *b, const int32_t *src, int64_t n, sgl_error *err) {
    size_t bytes = sizeof(int32_t) * (size_t)(n > 0 ? n : 1);
    if (reserve(c, b, bytes, true)) return sgl_error_set(err, "cuda: out of device memory");
    if (n <= 0) return 0;
    cudaError_t e = cudaMemcpyAsync(b->p, src, sizeof(int32_t) * (size_t)n, cudaMemcpyHostToDevice,
                                    c->stream);
    return e == cudaSuccess ? 0 : fail(err, "copy in", e);
}

/* The rows an op covers: n (host) and no device count, or, in a recorded
 * decode forward where n is the batch's row count, the bucket with the
 * count on the device. */
struct rows_t {
    int64_t n;
    const int *nd;
};
rows_t rows_of(kb_cuda *c, int64_t n) {
    if (c->rec && n == c->b->n_rows) return {c->rec_B, (const int *)c->nrow.p};
    return {n, nullptr};
}

int64_t pow2_at_least(int64_t n) {
    int64_t p = 1;
    while (p < n) p *= 2;
    return p;
}

/* ---- ops ---------------------------------------------------------------------------- */

void *op_alloc(kb_backend *be, size_t bytes) {
    kb_cuda *c = cu(be);
    void *p = nullptr;
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
        cudaGetLastError();
        return nullptr;
    }
    c->allocs[p] = bytes;
    c->bytes += bytes;
    return p;
}

void op_free_mem(kb_backend *be, void *p) {
    if (!p) return;
    kb_cuda *c = cu(be);
    auto it = c->allocs.find(p);
    if (it != c->allocs.end()) {
        c->bytes -= it->second;
        c->allocs.erase(it);
    }
    cudaFree(p);
}

int op_upload(kb_backend *be, void *dst, const void *src, size_t bytes, sgl_error *err) {
    if (!bytes) return 0;
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cu(be)->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(cu(be)->stream);
    return e == cudaSuccess ? 0 : fail(err, "copy in", e);
}

int op_download(kb_backend *be, void *dst, const void *src, size_t bytes, sgl_error *err) {
    if (!bytes) return 0;
    prof_begin(cu(be));
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cu(be)->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(cu(be)->stream);
    prof_end(cu(be), P_COPY);
    return e == cudaSuccess ? 0 : fail(err, "copy out", e);
}

int op_type_supported(kb_backend *be, sgl_dtype t) {
    (void)be;
    return type_ok(t) ? 1 : 0;
}

int op_mat_upload(kb_backend *be, const kb_mat *host, kb_mat *out, sgl_error *err) {
    if (!type_ok(host->type))
        return sgl_error_set(err, "cuda: weight type %s is not supported", sgl_dtype_name(host->type));
    size_t bytes = (size_t)(sgl_dtype_row_bytes(host->type, (uint64_t)host->cols) * (uint64_t)host->rows);
    void *p = op_alloc(be, bytes);
    if (!p) return sgl_error_set(err, "cuda: out of device memory for the weights (%zu bytes)", bytes);
    if (op_upload(be, p, host->data, bytes, err)) {
        op_free_mem(be, p);
        return -1;
    }
    *out = *host;
    out->data = p;
    return 0;
}

void drop_w16(kb_cuda *c, const void *w) {
    auto it = c->w16.find(w);
    if (it == c->w16.end()) return;
    op_free_mem(&c->base, it->second);
    c->w16.erase(it);
}

void op_mat_free(kb_backend *be, kb_mat *m) {
    drop_w16(cu(be), m->data);
    op_free_mem(be, const_cast<void *>(m->data));
    memset(m, 0, sizeof *m);
}

void kv_free_fn(void *p) {
    cuda_kv *k = static_cast<cuda_kv *>(p);
    if (!k) return;
    cudaFree(k->kv.k);
    cudaFree(k->kv.v);
    g_kv_bytes -= k->bytes;
    delete k;
}

kb_kv *op_kv_new(kb_backend *be, int32_t n_slots, int32_t n_layers, int32_t kv_dim,
                 sgl_error *err) {
    (void)be;
    cuda_kv *k = new (std::nothrow) cuda_kv();
    if (!k) {
        sgl_error_set(err, "cuda: out of memory");
        return nullptr;
    }
    size_t half_bytes = (size_t)n_layers * (size_t)n_slots * (size_t)kv_dim * 2;
    k->kv = kb_kv{n_slots, n_layers, kv_dim, nullptr, nullptr};
    cudaError_t e = cudaMalloc((void **)&k->kv.k, half_bytes);
    if (e == cudaSuccess) e = cudaMalloc((void **)&k->kv.v, half_bytes);
    if (e == cudaSuccess) e = cudaMemset(k->kv.k, 0, half_bytes);
    if (e == cudaSuccess) e = cudaMemset(k->kv.v, 0, half_bytes);
    /* cudaMemset runs on the legacy stream, which the backend's non-blocking
     * stream does not wait for: finish it before any kernel can write K/V */
    if (e == cudaSuccess) e = cudaDeviceSynchronize();
    if (e != cudaSuccess) {
        cudaGetLastError();
        fail(err, "KV pool on the device", e);
        cudaFree(k->kv.k);
        cudaFree(k->kv.v);
        delete k;
        return nullptr;
    }
    k->bytes = 2 * half_bytes;
    g_kv_bytes += k->bytes;
    return &k->kv;
}

int chunks_of(int64_t ctx) { return (int)((ctx + ATT_CHUNK - 1) / ATT_CHUNK); }

int op_begin(kb_backend *be, const kb_batch *b, sgl_error *err) {
    kb_cuda *c = cu(be);
    c->b = b;
    c->first_error = cudaSuccess;
    c->n_pending = 0;
    c->pending_max = 0;
    c->rec = false;
    c->rec_ops.clear();
    c->rec_sig.clear();
    /* Sequences of EXT_MIN_NEW new tokens or more go to the extend kernel
     * in tiles of EXT_Q rows; the other rows (decode rows, short extends)
     * to the chunk kernels. Both give the same bits for a query. */
    bool decode = b->n_rows > 0 && b->n_rows == b->n_seqs && b->n_logits == b->n_rows;
    std::vector<int32_t> slot0((size_t)(b->n_seqs > 0 ? b->n_seqs : 1)), tiles, arows;
    int64_t arows_ctx = 0;
    for (int32_t i = 0; i < b->n_seqs; i++) {
        const kb_seq *s = &b->seqs[i];
        slot0[(size_t)i] = s->slot0;
        if (s->n_new != 1) decode = false;
        if (s->n_new >= EXT_MIN_NEW) {
            for (int32_t t = 0; t < s->n_new; t += EXT_Q) {
                tiles.push_back(i);
                tiles.push_back(s->row0 + t);
                tiles.push_back(SGL_MIN(EXT_Q, s->n_new - t));
            }
        } else {
            for (int32_t t = 0; t < s->n_new; t++) arows.push_back(s->row0 + t);
            if ((int64_t)s->pos0 + s->n_new > arows_ctx) arows_ctx = (int64_t)s->pos0 + s->n_new;
        }
    }
    c->n_tiles = (int)(tiles.size() / 3);
    c->n_arows = (int)arows.size();
    c->n_chunks = chunks_of(b->max_ctx);
    c->n_chunks_dec = chunks_of(arows_ctx);
    /* a decode forward is recorded for a CUDA graph of its bucket (not with
     * per-op timing, nor where a matmul would take the cuBLAS path) */
    bool graph = c->graphs && !c->prof && decode && b->n_rows <= GRAPH_MAX_ROWS &&
                 !(c->gemm_rows > 0 && b->n_rows >= c->gemm_rows);
    int64_t B = graph ? pow2_at_least(b->n_rows) : b->n_rows;
    int flag = INT_MAX, nrow = (int)b->n_rows;
    if (upload_ints(c, &c->tok, b->tok, b->n_rows, err) ||
        upload_ints(c, &c->pos, b->pos, b->n_rows, err) ||
        upload_ints(c, &c->wslot, b->wslot, b->n_rows, err) ||
        upload_ints(c, &c->row_seq, b->row_seq, b->n_rows, err) ||
        upload_ints(c, &c->seq_slot0, slot0.data(), b->n_seqs, err) ||
        upload_ints(c, &c->slots, b->slots, b->n_slots, err) ||
        upload_ints(c, &c->logit_rows, b->logit_rows, b->n_logits, err) ||
        upload_ints(c, &c->flag, &flag, 1, err) || upload_ints(c, &c->nrow, &nrow, 1, err) ||
        (c->n_tiles && upload_ints(c, &c->tiles, tiles.data(), (int64_t)tiles.size(), err)) ||
        (c->n_tiles && upload_ints(c, &c->arows, arows.data(), (int64_t)arows.size(), err)))
        return -1;
    if (c->ident_n < SGL_MAX(B, b->n_rows)) { /* the identity row list */
        int64_t n = pow2_at_least(SGL_MAX(B, b->n_rows));
        std::vector<int32_t> id((size_t)n);
        for (int64_t i = 0; i < n; i++) id[(size_t)i] = (int32_t)i;
        c->ident_n = 0;
        if (upload_ints(c, &c->ident, id.data(), n, err)) return -1;
        c->ident_n = n;
    }
    if (graph) {
        c->rec = true;
        c->rec_B = (int)B;
        c->n_chunks = c->n_chunks_dec = (int)pow2_at_least(c->n_chunks);
    }
    /* the uploads read host arrays that live until finish; wait so a
     * caller may reuse them right after (they are small) */
    cudaError_t e = cudaStreamSynchronize(c->stream);
    return e == cudaSuccess ? 0 : fail(err, "copy in", e);
}

/* Runs the recorded launches of a decode forward: replays the graph of its
 * shape when the signatures match, else captures a new one (at most
 * GRAPH_MAX_CAPTURES times in a row per shape) and launches it; runs them
 * one by one where a graph cannot be made or launched. */
void run_recorded(kb_cuda *c) {
    uint64_t key = ((uint64_t)(uint32_t)c->rec_B << 32) | (uint32_t)c->n_chunks;
    graph_ent &g = c->graph_map[key];
    c->rec = false; /* launches from here on go to the stream */
    if (g.exec && !g.broken && g.sig == c->rec_sig) {
        if (cudaGraphLaunch(g.exec, c->stream) == cudaSuccess) {
            c->n_graph_replays++;
            g.captures = 0; /* the limit counts captures in a row */
            return;
        }
        cudaGetLastError();
        g.broken = true;
    }
    if (!g.broken && g.captures < GRAPH_MAX_CAPTURES) {
        if (g.exec) cudaGraphExecDestroy(g.exec);
        g.exec = nullptr;
        g.captures++;
        cudaError_t saved = c->first_error;
        cudaGraph_t graph = nullptr;
        cudaError_t e = cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal);
        if (e == cudaSuccess) {
            for (auto &f : c->rec_ops) f();
            e = cudaStreamEndCapture(c->stream, &graph);
        }
        c->first_error = saved; /* a launch that failed in the capture fails again below */
        if (e == cudaSuccess && graph) e = cudaGraphInstantiate(&g.exec, graph, 0);
        if (graph) cudaGraphDestroy(graph);
        if (e == cudaSuccess) e = cudaGraphLaunch(g.exec, c->stream);
        if (e == cudaSuccess) {
            g.sig = c->rec_sig;
            c->n_graph_captures++;
            return;
        }
        cudaGetLastError();
        if (g.exec) cudaGraphExecDestroy(g.exec);
        g.exec = nullptr;
        g.broken = true;
    }
    c->n_graph_eager++;
    for (auto &f : c->rec_ops) f();
}

int op_finish(kb_backend *be, int *first_bad, sgl_error *err) {
    kb_cuda *c = cu(be);
    flush_probes(c);
    if (c->rec) run_recorded(c);
    c->rec_ops.clear();
    int flag = INT_MAX;
    cudaError_t e = cudaSuccess;
    if (c->flag.p) /* no flag before the first begin (ops run outside a forward) */
        e = cudaMemcpyAsync(&flag, c->flag.p, sizeof flag, cudaMemcpyDeviceToHost, c->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
    note(c, e);
    c->b = nullptr;
    *first_bad = flag == INT_MAX ? -1 : flag;
    if (c->first_error != cudaSuccess) {
        cudaError_t fe = c->first_error;
        c->first_error = cudaSuccess;
        return fail(err, "forward", fe);
    }
    return 0;
}

/* The cuBLAS path (eager forwards only): W decoded to f16 once (kept until
 * the weight is freed), X to f16, Y = X W^T in f32 by cuBLAS's default
 * algorithm (tensor cores; it may split K). Returns false when it cannot
 * run (the warp kernel runs then). */
template <int T> void launch_to_f16(const kb_mat *w, __half *dst, cudaStream_t s) {
    int64_t n = w->rows * w->cols;
    k_to_f16<T><<<blocks_for(n, 256), 256, 0, s>>>((const uint8_t *)w->data,
        (int64_t)sgl_dtype_row_bytes(w->type, (uint64_t)w->cols), w->cols, n, dst);
}

bool gemm_cublas(kb_cuda *c, const kb_mat *w, const float *x, int64_t nb, float *y) {
    const kcuda_cublas *blas = kcuda_cublas_get();
    if (!blas) return false;
    if (!c->cublas) {
        if (blas->create(&c->cublas) != CUBLAS_STATUS_SUCCESS) return false;
        blas->set_stream(c->cublas, c->stream);
    }
    __half *w16;
    auto it = c->w16.find(w->data);
    if (it != c->w16.end()) {
        w16 = it->second;
    } else {
        w16 = (__half *)op_alloc(&c->base, sizeof(__half) * (size_t)(w->rows * w->cols));
        if (!w16) return false;
        KB_DISPATCH(w->type, launch_to_f16, w, w16, c->stream);
        note_launch(c);
        c->w16[w->data] = w16;
    }
    if (reserve(c, &c->x16, sizeof(__half) * (size_t)(nb * w->cols))) return false;
    __half *x16 = (__half *)c->x16.p;
    k_f32_to_f16<<<blocks_for(nb * w->cols, 256), 256, 0, c->stream>>>(x, x16, nb * w->cols);
    note_launch(c);
    const float one = 1.0f, zero = 0.0f;
    /* row-major W [rows][k], X [nb][k], Y [nb][rows]; column-major: Y = W^T X */
    return blas->gemm_ex(c->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)w->rows, (int)nb, (int)w->cols,
                        &one, w16, CUDA_R_16F, (int)w->cols, x16, CUDA_R_16F, (int)w->cols, &zero,
                        y, CUDA_R_32F, (int)w->rows, CUBLAS_COMPUTE_32F,
                        CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS;
}

template <int T, int TILE>
void launch_matmul_tile(kb_cuda *c, const kb_mat *w, const float *x, rows_t r, float *y) {
    dim3 grid((unsigned)((w->rows + MM_WARPS - 1) / MM_WARPS), (unsigned)((r.n + TILE - 1) / TILE));
    launch(c, k_matmul<T, TILE>, grid, dim3(MM_WARPS * 32), 0, (const uint8_t *)w->data,
           (int64_t)sgl_dtype_row_bytes(w->type, (uint64_t)w->cols), (int)w->rows, (int)w->cols, x,
           (int)r.n, r.nd, y);
}
/* Small batches: tiles of MM_TILE rows (more warps in flight); large ones:
 * MM_TILE_BIG (each weight decoded once per 32 rows). Same results. */
template <int T>
void launch_matmul(kb_cuda *c, const kb_mat *w, const float *x, rows_t r, float *y) {
    if (r.n >= MM_TILE_BIG_FROM) launch_matmul_tile<T, MM_TILE_BIG>(c, w, x, r, y);
    else launch_matmul_tile<T, MM_TILE>(c, w, x, r, y);
}

void op_matmul(kb_backend *be, const kb_mat *w, const float *x, int64_t nb, float *y) {
    kb_cuda *c = cu(be);
    if (nb <= 0) return;
    prof_begin(c);
    if (!c->rec && c->gemm_rows > 0 && nb >= c->gemm_rows && gemm_cublas(c, w, x, nb, y)) {
        prof_end(c, P_GEMM);
        return;
    }
    KB_DISPATCH(w->type, launch_matmul, c, w, x, rows_of(c, nb), y);
    prof_end(c, P_MATMUL);
}

void op_matmul_multi(kb_backend *be, const kb_mat *const *w, float *const *y, int n,
                     const float *x, int64_t nb) {
    for (int i = 0; i < n; i++) op_matmul(be, w[i], x, nb, y[i]);
}

template <int T> void launch_embed(kb_cuda *c, const kb_mat *e, rows_t r, float *x) {
    launch(c, k_embed<T>, dim3((unsigned)r.n), dim3(256), 0, (const uint8_t *)e->data,
           (int64_t)sgl_dtype_row_bytes(e->type, (uint64_t)e->cols), (const int32_t *)c->tok.p,
           (int)e->cols, r.nd, x);
}

void op_embed(kb_backend *be, const kb_mat *emb, float *x) {
    kb_cuda *c = cu(be);
    if (c->b->n_rows <= 0) return;
    prof_begin(c);
    KB_DISPATCH(emb->type, launch_embed, c, emb, rows_of(c, c->b->n_rows), x);
    prof_end(c, P_EMBED);
}

void op_rmsnorm(kb_backend *be, float *y, const float *x, const float *w, int64_t n, int64_t dim,
                float eps) {
    kb_cuda *c = cu(be);
    if (n <= 0) return;
    prof_begin(c);
    rows_t r = rows_of(c, n);
    launch(c, k_rmsnorm, dim3((unsigned)r.n), dim3(NORM_THREADS), 0, y, x, w, (int)dim, eps, r.nd);
    prof_end(c, P_NORM);
}

/* y[n, dim] += x: x is [n, dim], or one [dim] row added to every row when bias. */
static void launch_add(kb_backend *be, float *y, const float *x, int64_t n, int64_t dim, int bias) {
    kb_cuda *c = cu(be);
    if (n <= 0) return;
    prof_begin(c);
    rows_t r = rows_of(c, n);
    launch(c, k_add, dim3(blocks_for(r.n * dim, 256)), dim3(256), 0, y, x, r.n, r.nd, dim, bias);
    prof_end(c, P_ADD);
}

void op_add(kb_backend *be, float *y, const float *x, int64_t n, int64_t dim) {
    launch_add(be, y, x, n, dim, 0);
}

void op_bias_add(kb_backend *be, float *y, const float *bias, int64_t n, int64_t dim) {
    launch_add(be, y, bias, n, dim, 1);
}

void op_rope(kb_backend *be, float *x, const kb_rope *rp) {
    kb_cuda *c = cu(be);
    if (c->b->n_rows * (rp->rot_dim / 2) <= 0) return;
    prof_begin(c);
    rows_t r = rows_of(c, c->b->n_rows);
    launch(c, k_rope, dim3(blocks_for(r.n * (rp->rot_dim / 2), 128)), dim3(128), 0, x,
           (const int32_t *)c->pos.p, r.n, r.nd, rp->n_heads, rp->head_dim, rp->rot_dim,
           rp->theta, rp->freq_scale, rp->neox ? 1 : 0);
    prof_end(c, P_ROPE);
}

void op_silu_mul(kb_backend *be, float *g, const float *u, int64_t n, int64_t dim) {
    kb_cuda *c = cu(be);
    if (n <= 0) return;
    prof_begin(c);
    rows_t r = rows_of(c, n);
    launch(c, k_silu_mul, dim3(blocks_for(r.n * dim, 256)), dim3(256), 0, g, u, r.n, r.nd, dim);
    prof_end(c, P_SILU);
}

void op_kv_store(kb_backend *be, const kb_kv *kv, int layer, const float *k, const float *v) {
    kb_cuda *c = cu(be);
    if (c->b->n_rows * kv->kv_dim <= 0) return;
    prof_begin(c);
    rows_t r = rows_of(c, c->b->n_rows);
    launch(c, k_kv_store, dim3(blocks_for(r.n * kv->kv_dim, 256)), dim3(256), 0, (__half *)kv->k,
           (__half *)kv->v, k, v, (const int32_t *)c->wslot.p, r.n, r.nd, kv->kv_dim,
           (int64_t)layer * kv->n_slots * kv->kv_dim);
    prof_end(c, P_KV);
}

/* 1 when k_att_extend can run for head_dim hd (its shared memory granted). */
bool extend_usable(kb_cuda *c, int hd) {
    if (hd % 8 || hd > EXT_MAX_HD) return false;
    if (c->ext_ok < 0) {
        cudaError_t e = cudaFuncSetAttribute(k_att_extend,
            cudaFuncAttributeMaxDynamicSharedMemorySize, (int)ext_shm(EXT_MAX_HD));
        if (e != cudaSuccess) cudaGetLastError();
        c->ext_ok = e == cudaSuccess;
    }
    return c->ext_ok == 1;
}

void op_attention(kb_backend *be, const kb_kv *kv, int layer, const kb_att_shape *sh,
                  const float *q, float *out) {
    kb_cuda *c = cu(be);
    int64_t n = c->b->n_rows;
    if (n <= 0) return;
    int hd = sh->head_dim;
    /* shapes the kernels cannot take: grid y/z limits (16M-token contexts) */
    if (hd > ATT_MAX_HD || c->n_chunks > 65535 || sh->n_heads > 65535) {
        note(c, cudaErrorInvalidValue);
        return;
    }
    /* the extend kernel for the tiles, the chunk kernels for the other rows;
     * every row through the chunk kernels where the extend kernel cannot run */
    bool ext = !c->rec && c->extend && c->n_tiles > 0 && extend_usable(c, hd);
    rows_t r = ext ? rows_t{c->n_arows, nullptr} : rows_of(c, n);
    const int32_t *rows = ext ? (const int32_t *)c->arows.p : (const int32_t *)c->ident.p;
    int nch = ext ? c->n_chunks_dec : c->n_chunks;
    size_t part_bytes = sizeof(float) * (size_t)r.n * (size_t)sh->n_heads * (size_t)nch * (size_t)(hd + 2);
    if (r.n > 0 && reserve(c, &c->part, part_bytes)) {
        note(c, cudaErrorMemoryAllocation);
        return;
    }
    prof_begin(c);
    int64_t layer_off = (int64_t)layer * kv->n_slots * kv->kv_dim;
    if (ext)
        launch(c, k_att_extend, dim3((unsigned)c->n_tiles, (unsigned)sh->n_heads),
               dim3(ATT_THREADS), ext_shm(hd), (const __half *)kv->k, (const __half *)kv->v,
               layer_off, kv->kv_dim, q, sh->n_heads, sh->n_kv_heads, hd,
               (const int32_t *)c->pos.p, (const int32_t *)c->seq_slot0.p,
               (const int32_t *)c->slots.p, (const int32_t *)c->tiles.p, out);
    if (r.n > 0) {
        size_t shm = sizeof(float) * (size_t)(hd + ATT_CHUNK + ATT_THREADS);
        launch(c, k_att_chunk, dim3((unsigned)r.n, (unsigned)sh->n_heads, (unsigned)nch),
               dim3(ATT_THREADS), shm, (const __half *)kv->k, (const __half *)kv->v, layer_off,
               kv->kv_dim, q, sh->n_heads, sh->n_kv_heads, hd, (const int32_t *)c->pos.p,
               (const int32_t *)c->row_seq.p, (const int32_t *)c->seq_slot0.p,
               (const int32_t *)c->slots.p, rows, r.nd, nch, (float *)c->part.p);
        launch(c, k_att_combine, dim3((unsigned)r.n, (unsigned)sh->n_heads), dim3(ATT_THREADS), 0,
               (const float *)c->part.p, (const int32_t *)c->pos.p, rows, r.nd, sh->n_heads, hd,
               nch, out);
    }
    prof_end(c, P_ATT);
}

void op_add_rmsnorm(kb_backend *be, float *x, float *y, const float *w, int64_t n, int64_t dim,
                    float eps) {
    kb_cuda *c = cu(be);
    if (n <= 0) return;
    prof_begin(c);
    rows_t r = rows_of(c, n);
    launch(c, k_add_rmsnorm, dim3((unsigned)r.n), dim3(NORM_THREADS), 0, x, y, w, (int)dim, eps,
           r.nd);
    prof_end(c, P_NORM);
}

void op_qkv_post(kb_backend *be, float *q, float *k, float *v, const float *bq, const float *bk,
                 const float *bv, const kb_rope *rq, const kb_rope *rk, const kb_kv *kv,
                 int layer) {
    kb_cuda *c = cu(be);
    if (c->b->n_rows <= 0) return;
    prof_begin(c);
    rows_t r = rows_of(c, c->b->n_rows);
    launch(c, k_qkv_post, dim3((unsigned)r.n), dim3(128), 0, q, k, v, bq, bk, bv,
           (const int32_t *)c->pos.p, (const int32_t *)c->wslot.p, rq->n_heads, rk->n_heads,
           rq->head_dim, rq->rot_dim, rq->theta, rq->freq_scale, rq->neox ? 1 : 0,
           (__half *)kv->k, (__half *)kv->v, (int64_t)layer * kv->n_slots * kv->kv_dim, r.nd);
    prof_end(c, P_ROPE);
}

void op_gather_rows(kb_backend *be, float *dst, const float *src, int64_t dim) {
    kb_cuda *c = cu(be);
    if (c->b->n_logits <= 0) return;
    prof_begin(c);
    rows_t r = rows_of(c, c->b->n_logits);
    launch(c, k_gather_rows, dim3(blocks_for(r.n * dim, 256)), dim3(256), 0, dst, src,
           (const int32_t *)c->logit_rows.p, r.n, r.nd, dim);
    prof_end(c, P_GATHER);
}

int op_check_finite(kb_backend *be, const float *x, int64_t n, int probe) {
    kb_cuda *c = cu(be);
    if (n <= 0) return 0;
    if (c->n_pending == PROBE_BATCH) flush_probes(c);
    int e = c->n_pending++;
    int64_t nr = c->b ? c->b->n_rows : 0;
    c->pending.x[e] = x;
    c->pending.n[e] = n;
    c->pending.w[e] = 0;
    c->pending.probe[e] = probe;
    if (c->rec && nr > 0 && n % nr == 0) { /* rows of the batch: counted on the device */
        c->pending.w[e] = n / nr;
        c->pending.n[e] = 0;
        n = c->pending.w[e] * c->rec_B;
    }
    if (n > c->pending_max) c->pending_max = n;
    return 0;
}

void op_describe(kb_backend *be, char *buf, size_t cap) {
    kb_cuda *c = cu(be);
    snprintf(buf, cap, "cuda (%s; %s; decode graphs %s)", c->name,
             c->gemm_rows > 0 ? "fast, not batch-invariant" : "deterministic",
             c->graphs ? "on" : "off");
}

uint64_t op_mem_used(kb_backend *be) { return cu(be)->bytes + g_kv_bytes; }

void op_destroy(kb_backend *be) {
    kb_cuda *c = cu(be);
    if (!c) return;
    cudaStreamSynchronize(c->stream);
    for (auto &g : c->graph_map)
        if (g.second.exec) cudaGraphExecDestroy(g.second.exec);
    dbuf *bufs[] = {&c->tok, &c->pos, &c->wslot, &c->row_seq, &c->seq_slot0, &c->slots,
                    &c->logit_rows, &c->part, &c->x16, &c->flag, &c->nrow, &c->arows,
                    &c->tiles, &c->ident};
    for (dbuf *b : bufs) cudaFree(b->p);
    for (auto &a : c->allocs) cudaFree(a.first);
    if (c->cublas) kcuda_cublas_get()->destroy(c->cublas);
    if (c->stream) cudaStreamDestroy(c->stream);
    delete c;
}

const kb_ops cuda_ops = [] {
    kb_ops o;
    memset(&o, 0, sizeof o);
    o.name = "cuda";
    o.host = false;
    o.alloc = op_alloc;
    o.free_mem = op_free_mem;
    o.upload = op_upload;
    o.download = op_download;
    o.mat_upload = op_mat_upload;
    o.mat_free = op_mat_free;
    o.kv_new = op_kv_new;
    o.kv_free = kv_free_fn;
    o.type_supported = op_type_supported;
    o.begin = op_begin;
    o.finish = op_finish;
    o.matmul = op_matmul;
    o.matmul_multi = op_matmul_multi;
    o.embed = op_embed;
    o.rmsnorm = op_rmsnorm;
    o.add = op_add;
    o.bias_add = op_bias_add;
    o.rope = op_rope;
    o.silu_mul = op_silu_mul;
    o.kv_store = op_kv_store;
    o.attention = op_attention;
    o.gather_rows = op_gather_rows;
    o.check_finite = op_check_finite;
    o.qkv_post = op_qkv_post;
    o.add_rmsnorm = op_add_rmsnorm;
    o.describe = op_describe;
    o.mem_used = op_mem_used;
    o.destroy = op_destroy;
    return o;
}();

bool is_cuda(kb_backend *be) { return be && strcmp(be->ops->name, "cuda") == 0; }

/* Rows from which the fast configuration takes cuBLAS: SGL_CUDA_GEMM_ROWS,
 * else FAST_GEMM_ROWS. */
int fast_rows(void) {
    const char *env = getenv("SGL_CUDA_GEMM_ROWS");
    int n = env && *env ? atoi(env) : 0;
    return n > 0 ? n : FAST_GEMM_ROWS;
}

} // namespace

extern "C" int kb_cuda_built(void) { return 1; }

extern "C" kb_backend *kb_cuda_new(sgl_error *err) {
    if (kcuda_device_count() <= 0) {
        sgl_error_set(err, "cuda: no usable GPU on this machine (%s)", kcuda_no_device_reason());
        return nullptr;
    }
    kb_cuda *c = new (std::nothrow) kb_cuda();
    if (!c) {
        sgl_error_set(err, "cuda: out of memory");
        return nullptr;
    }
    c->base.ops = &cuda_ops;
    cudaError_t e = cudaSetDevice(0);
    if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
        cudaGetLastError();
        fail(err, "cannot start on device 0", e);
        delete c;
        return nullptr;
    }
    if (kcuda_device_describe(c->name, sizeof c->name)) snprintf(c->name, sizeof c->name, "device 0");
    const char *env = getenv("SGL_CUDA_GEMM_ROWS");
    if (env && *env) c->gemm_rows = SGL_MAX(atoi(env), 0);
    env = getenv("SGL_CUDA_FAST");
    if (env && *env && strcmp(env, "0") != 0) c->gemm_rows = fast_rows();
    env = getenv("SGL_CUDA_GRAPHS");
    if (env && !strcmp(env, "0")) c->graphs = false;
    return &c->base;
}

extern "C" int kb_cuda_set_gemm_rows(kb_backend *be, int min_rows) {
    if (!is_cuda(be)) return -1;
    kb_cuda *c = cu(be);
    c->gemm_rows = min_rows > 0 ? min_rows : 0;
    if (!c->gemm_rows) { /* the f16 weight copies are no longer used */
        cudaStreamSynchronize(c->stream);
        for (auto &w : c->w16) op_free_mem(be, w.second);
        c->w16.clear();
    }
    return 0;
}

extern "C" int kb_cuda_set_fast(kb_backend *be, int on) {
    return kb_cuda_set_gemm_rows(be, on ? fast_rows() : 0);
}

extern "C" int kb_cuda_set_graphs(kb_backend *be, int on) {
    if (!is_cuda(be)) return -1;
    cu(be)->graphs = on != 0;
    return 0;
}

extern "C" int kb_cuda_set_extend(kb_backend *be, int on) {
    if (!is_cuda(be)) return -1;
    cu(be)->extend = on != 0;
    return 0;
}

extern "C" int kb_cuda_graph_stats(kb_backend *be, long *captures, long *replays, long *eager) {
    if (!is_cuda(be)) return -1;
    kb_cuda *c = cu(be);
    *captures = c->n_graph_captures;
    *replays = c->n_graph_replays;
    *eager = c->n_graph_eager;
    return 0;
}

extern "C" int kb_cuda_profile(kb_backend *be, int on) {
    if (!is_cuda(be)) return -1;
    kb_cuda *c = cu(be);
    c->prof = on != 0;
    for (int i = 0; i < P_N; i++) c->prof_s[i] = 0, c->prof_n[i] = 0;
    return 0;
}

extern "C" int kb_cuda_profile_get(kb_backend *be, const char **names, double *seconds,
                                   long *calls, int cap) {
    if (!is_cuda(be)) return -1;
    kb_cuda *c = cu(be);
    int n = 0;
    for (int i = 0; i < P_N && n < cap; i++, n++) {
        names[n] = prof_names[i];
        seconds[n] = c->prof_s[i];
        calls[n] = c->prof_n[i];
    }
    return n;
}

extern "C" double kcuda_hbm_gbps(void) {
    int clock_khz = 0, bus_bits = 0;
    if (kcuda_device_count() <= 0 ||
        cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, 0) != cudaSuccess ||
        cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, 0) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return 2.0 * clock_khz * 1e3 * (bus_bits / 8.0) / 1e9; /* DDR: two transfers per clock */
}
