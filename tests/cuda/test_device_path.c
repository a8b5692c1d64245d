/* test_device_path: the part of model_forward that only device backends use,
 * checked without a GPU (suite 'unit'). A stand-in backend runs the CPU
 * kernels but behaves as a device: weights are copied at upload, the KV
 * store is its own (made on first use, owned and freed by the kv_pool),
 * logits come back through download, and NaN/Inf probes are deferred to
 * finish instead of stopping the forward. Its results must equal the CPU
 * backend's bit for bit, and a NaN must be reported at the same place. */
#include "tests/test.h"

#include "kernels/backend.h"
#include "tests/model/test_model_common.h"
#include "tests/tools/tiny_model.h"

static sgl_error err;

typedef struct emu {
    kb_backend base;
    kb_backend *cpu;
    int first_bad;
    int n_kv_made;
} emu;

static kb_ops emu_ops;
static int live_kv; /* KV stores not yet freed */

static emu *E(kb_backend *be) { return (emu *)be; }

static int emu_mat_upload(kb_backend *be, const kb_mat *host, kb_mat *out, sgl_error *e) {
    (void)e;
    size_t bytes = (size_t)(sgl_dtype_row_bytes(host->type, (uint64_t)host->cols) * (uint64_t)host->rows);
    void *p = malloc(bytes);
    if (!p) return sgl_error_set(e, "out of memory");
    memcpy(p, host->data, bytes);
    *out = *host;
    out->data = p;
    (void)be;
    return 0;
}
static void emu_mat_free(kb_backend *be, kb_mat *m) {
    (void)be;
    free((void *)m->data);
    memset(m, 0, sizeof *m);
}
static kb_kv *emu_kv_new(kb_backend *be, int32_t n_slots, int32_t n_layers, int32_t kv_dim,
                         sgl_error *e) {
    kb_kv *kv = calloc(1, sizeof *kv);
    size_t n = (size_t)n_slots * (size_t)n_layers * (size_t)kv_dim;
    if (!kv || !(kv->k = calloc(n, 2)) || !(kv->v = calloc(n, 2))) {
        sgl_error_set(e, "out of memory");
        return NULL;
    }
    kv->n_slots = n_slots, kv->n_layers = n_layers, kv->kv_dim = kv_dim;
    E(be)->n_kv_made++;
    live_kv++;
    return kv;
}
static void emu_kv_free(void *p) {
    kb_kv *kv = p;
    free(kv->k), free(kv->v), free(kv);
    live_kv--;
}
static int emu_begin(kb_backend *be, const kb_batch *b, sgl_error *e) {
    E(be)->first_bad = -1;
    return E(be)->cpu->ops->begin(E(be)->cpu, b, e);
}
static int emu_finish(kb_backend *be, int *first_bad, sgl_error *e) {
    int ignored;
    if (E(be)->cpu->ops->finish(E(be)->cpu, &ignored, e)) return -1;
    *first_bad = E(be)->first_bad;
    return 0;
}
static int emu_check_finite(kb_backend *be, const float *x, int64_t n, int probe) {
    if (E(be)->cpu->ops->check_finite(E(be)->cpu, x, n, probe) &&
        (E(be)->first_bad < 0 || probe < E(be)->first_bad))
        E(be)->first_bad = probe;
    return 0; /* a device does not stop */
}
static void emu_destroy(kb_backend *be) {
    E(be)->cpu->ops->destroy(E(be)->cpu);
    free(be);
}

/* The CPU ops through the stand-in (the ops take the backend pointer). */
#define FWD(name, ...) E(be)->cpu->ops->name(E(be)->cpu, __VA_ARGS__)
static void *f_alloc(kb_backend *be, size_t n) { return FWD(alloc, n); }
static void f_free(kb_backend *be, void *p) { FWD(free_mem, p); }
static int f_up(kb_backend *be, void *d, const void *s, size_t n, sgl_error *e) { return FWD(upload, d, s, n, e); }
static int f_down(kb_backend *be, void *d, const void *s, size_t n, sgl_error *e) { return FWD(download, d, s, n, e); }
static int f_type(kb_backend *be, sgl_dtype t) { return FWD(type_supported, t); }
static void f_mm(kb_backend *be, const kb_mat *w, const float *x, int64_t nb, float *y) { FWD(matmul, w, x, nb, y); }
static void f_mmm(kb_backend *be, const kb_mat *const *w, float *const *y, int n, const float *x, int64_t nb) { FWD(matmul_multi, w, y, n, x, nb); }
static void f_embed(kb_backend *be, const kb_mat *e, float *x) { FWD(embed, e, x); }
static void f_norm(kb_backend *be, float *y, const float *x, const float *w, int64_t n, int64_t d, float eps) { FWD(rmsnorm, y, x, w, n, d, eps); }
static void f_add(kb_backend *be, float *y, const float *x, int64_t n, int64_t d) { FWD(add, y, x, n, d); }
static void f_bias(kb_backend *be, float *y, const float *x, int64_t n, int64_t d) { FWD(bias_add, y, x, n, d); }
static void f_rope(kb_backend *be, float *x, const kb_rope *r) { FWD(rope, x, r); }
static void f_silu(kb_backend *be, float *g, const float *u, int64_t n, int64_t d) { FWD(silu_mul, g, u, n, d); }
static void f_kvs(kb_backend *be, const kb_kv *kv, int l, const float *k, const float *v) { FWD(kv_store, kv, l, k, v); }
static void f_att(kb_backend *be, const kb_kv *kv, int l, const kb_att_shape *s, const float *q, float *o) { FWD(attention, kv, l, s, q, o); }
static void f_gather(kb_backend *be, float *d, const float *s, int64_t dim) { FWD(gather_rows, d, s, dim); }
static void f_desc(kb_backend *be, char *b, size_t c) { snprintf(b, c, "host stand-in device"); (void)be; }
static uint64_t f_mem(kb_backend *be) { (void)be; return 0; }

static kb_backend *emu_new(kern_pool *pool) {
    emu_ops = (kb_ops){.name = "host-device", .host = false, .alloc = f_alloc, .free_mem = f_free,
                       .upload = f_up, .download = f_down, .mat_upload = emu_mat_upload,
                       .mat_free = emu_mat_free, .kv_new = emu_kv_new, .kv_free = emu_kv_free,
                       .type_supported = f_type, .begin = emu_begin, .finish = emu_finish,
                       .matmul = f_mm, .matmul_multi = f_mmm, .embed = f_embed,
                       .rmsnorm = f_norm, .add = f_add, .bias_add = f_bias, .rope = f_rope,
                       .silu_mul = f_silu, .kv_store = f_kvs, .attention = f_att,
                       .gather_rows = f_gather, .check_finite = emu_check_finite,
                       .describe = f_desc, .mem_used = f_mem, .destroy = emu_destroy};
    emu *e = calloc(1, sizeof *e);
    e->base.ops = &emu_ops;
    e->cpu = kb_cpu_new(pool);
    return &e->base;
}

/* A batch of three sequences (prefill, decode over a cached prefix, extend)
 * with assorted logits rows; returns malloc'd logits. */
static float *run_batch(sgl_model *m, kv_pool *kv, int64_t *n_rows) {
    int V = model_get_config(m)->vocab;
    static int32_t toks[3][40], slots[3][60];
    for (int i = 0; i < 3; i++)
        for (int t = 0; t < 40; t++) toks[i][t] = (int32_t)((t * 31 + i * 7 + 3) % V);
    for (int i = 0; i < 3; i++) kv_pool_alloc(kv, 60, slots[i]);
    /* prefixes first (rows for nothing), then the mixed batch */
    model_seq pre[2] = {{.n_new = 20, .tokens = toks[1], .pos0 = 0, .n_ctx = 20, .slots = slots[1], .logits_from = 20},
                        {.n_new = 9, .tokens = toks[2], .pos0 = 0, .n_ctx = 9, .slots = slots[2], .logits_from = 9}};
    model_batch pb = {2, pre};
    CHECK_MSG(model_forward(m, kv, &pb, NULL, &err) == 0, "%s", err.msg);
    model_seq s[3] = {{.n_new = 33, .tokens = toks[0], .pos0 = 0, .n_ctx = 33, .slots = slots[0], .logits_from = 30},
                      {.n_new = 1, .tokens = toks[1] + 20, .pos0 = 20, .n_ctx = 21, .slots = slots[1], .logits_from = 0},
                      {.n_new = 6, .tokens = toks[2] + 9, .pos0 = 9, .n_ctx = 15, .slots = slots[2], .logits_from = 0}};
    model_batch b = {3, s};
    *n_rows = model_batch_logit_rows(&b);
    float *lg = malloc(sizeof(float) * (size_t)(*n_rows * V));
    CHECK_MSG(model_forward(m, kv, &b, lg, &err) == 0, "%s", err.msg);
    return lg;
}

static void check_same(const tm_cfg *c) {
    uint64_t len;
    uint8_t *buf = tm_build(c, &len);
    sgl_model *m = tm_load(buf, len, 2, &err);
    CHECK_MSG(m, "%s", err.msg);
    if (!m) {
        free(buf);
        return;
    }
    int V = model_get_config(m)->vocab;
    kv_pool *k1 = model_kv_pool_new(m, 200, &err), *k2 = model_kv_pool_new(m, 200, &err);
    int64_t n1, n2;
    float *a = run_batch(m, k1, &n1);
    CHECK(model_attach_backend(m, emu_new(model_get_pool(m)), &err) == 0);
    CHECK_STR(model_device_name(model_get_device(m)), "cuda"); /* any non-CPU backend */
    float *b = run_batch(m, k2, &n2);
    CHECK_INT(n1, n2);
    CHECK_MSG(!memcmp(a, b, sizeof(float) * (size_t)(n1 * V)), "%s: device path differs from the CPU", c->arch);
    CHECK(k2->dev != NULL && k1->dev == NULL);
    CHECK_INT(live_kv, 1);
    kv_pool_free(k2);
    CHECK_INT(live_kv, 0);
    /* back on the CPU: the host pool works as before */
    CHECK(model_set_device(m, MODEL_DEVICE_CPU, &err) == 0);
    CHECK_INT(model_get_device(m), MODEL_DEVICE_CPU);
    kv_pool *k3 = model_kv_pool_new(m, 200, &err);
    float *c3 = run_batch(m, k3, &n2);
    CHECK(!memcmp(a, c3, sizeof(float) * (size_t)(n1 * V)));
    free(a), free(b), free(c3);
    kv_pool_free(k1), kv_pool_free(k3);
    model_free(m);
    free(buf);
}

static void test_device_path_equals_cpu(void) {
    check_same(&TM_LLAMA);
    check_same(&TM_QWEN2);
}

/* NaN in a weight: the deferred probes name the same place as the CPU's
 * (F16/F32 tensors: the quantizers drop a NaN). */
static void check_nan(const char *tensor, bool f32, const char *where) {
    tiny_opts o = {.seed = 1, .all_f32 = f32, .nan_tensor = tensor, .nan_index = 5};
    gguf_writer *w = gguf_writer_new();
    uint8_t *buf = NULL;
    uint64_t len = 0;
    CHECK_MSG(tiny_model_build(w, &o, &err) == 0, "%s", err.msg);
    CHECK_MSG(gguf_writer_to_memory(w, &buf, &len, &err) == 0, "%s", err.msg);
    gguf_writer_free(w);
    char msg[2][1100];
    for (int dev = 0; dev < 2; dev++) {
        msg[dev][0] = 0;
        gguf_file *f = gguf_open_memory(buf, len, &err);
        sgl_model *m = f ? model_load_gguf(f, 1, &err) : NULL;
        CHECK_MSG(m, "%s", err.msg);
        if (!m) break;
        if (dev) model_attach_backend(m, emu_new(model_get_pool(m)), &err);
        kv_pool *kv = model_kv_pool_new(m, 8, &err);
        int32_t toks[6] = {1, 40, 41, 42, 43, 44}, slots[6];
        kv_pool_alloc(kv, 6, slots);
        float *lg = malloc(sizeof(float) * 6 * TINY_N_VOCAB);
        model_seq s = {.n_new = 6, .tokens = toks, .pos0 = 0, .n_ctx = 6, .slots = slots, .logits_from = 0};
        model_batch b = {1, &s};
        CHECK_MSG(model_forward(m, kv, &b, lg, &err) == -1, "%s: no error", tensor);
        snprintf(msg[dev], sizeof msg[dev], "%s", err.msg);
        free(lg);
        kv_pool_free(kv);
        model_free(m);
    }
    CHECK_MSG(strstr(msg[0], where) != NULL, "%s: %s", tensor, msg[0]);
    CHECK_STR(msg[1], msg[0]);
    free(buf);
}

static void test_deferred_nan(void) {
    check_nan("blk.1.ffn_down.weight", false, "layer 1, feed-forward (blk.1.ffn_down)");
    check_nan("blk.1.attn_norm.weight", false, "layer 1, attention (blk.1.attn_norm.weight)");
    check_nan("blk.1.attn_k.weight", true, "layer 1, attention (blk.1.attn_k)");
    check_nan("output_norm.weight", false, "the output layer");
}

int main(void) {
    TEST_RUN(test_device_path_equals_cpu);
    TEST_RUN(test_deferred_nan);
    return TEST_DONE();
}
