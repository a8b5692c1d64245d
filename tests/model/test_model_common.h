/* test_model_common: a small in-memory llama / qwen2 GGUF for the model
 * tests, written through gguf_writer with random weights from a fixed seed,
 * and a plain float reference forward over the dequantized weights.
 *
 * The builder exposes what the project tiny model (tests/tools) does not:
 * qwen2 (q/k/v biases, NeoX rope), partial rotary dims, chosen weight types,
 * and deliberately broken files for the loader's error paths.
 */
#ifndef SGL_TEST_MODEL_COMMON_H
#define SGL_TEST_MODEL_COMMON_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "runtime/gguf.h"
#include "runtime/model.h"

typedef struct tm_cfg {
    const char *arch;     /* "llama" / "qwen2" / anything (error tests) */
    int dim, n_layers, n_heads, n_kv_heads, ffn, vocab, rope_dim;
    float rope_theta;
    sgl_dtype wtype;      /* layer matrices */
    sgl_dtype etype;      /* token_embd */
    bool untied;          /* write output.weight (in wtype) */
    bool bias;            /* write attn_q/k/v.bias */
    float rope_scale;     /* > 0: linear rope scaling with this factor */
    uint64_t seed;
    const char *omit;     /* tensor name left out (error tests) */
    const char *misshape; /* tensor written with one row too many (error tests) */
} tm_cfg;

static uint64_t tm_rng;
static inline float tm_rand(void) { /* uniform in [-1, 1) */
    tm_rng ^= tm_rng << 13;
    tm_rng ^= tm_rng >> 7;
    tm_rng ^= tm_rng << 17;
    return (float)((tm_rng >> 11) * 0x1.0p-53) * 2.0f - 1.0f;
}

static inline int tm_add(gguf_writer *w, const tm_cfg *c, const char *name, sgl_dtype t, int64_t rows,
                  int64_t cols, float scale, float offset) {
    if (c->omit && !strcmp(name, c->omit)) {
        for (int64_t i = 0; i < rows * cols; i++) tm_rand();
        return 0;
    }
    if (c->misshape && !strcmp(name, c->misshape)) rows++;
    int64_t n = rows * cols;
    float *v = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) v[i] = offset + scale * tm_rand();
    uint64_t rb = sgl_dtype_row_bytes(t, (uint64_t)cols);
    uint8_t *q = malloc((size_t)(rb * (uint64_t)rows));
    for (int64_t r = 0; r < rows; r++) {
        if (t == SGL_DTYPE_F32) memcpy(q + r * rb, v + r * cols, rb);
        else if (t == SGL_DTYPE_F16) kern_f32_to_f16((uint16_t *)(q + r * rb), v + r * cols, cols);
        else if (kern_quantize_row(t, v + r * cols, q + r * rb, cols))
            memset(q + r * rb, 0, rb); /* no quantizer: zeros (loader error tests) */
    }
    uint64_t ne[2] = {(uint64_t)cols, (uint64_t)rows};
    int rc = gguf_writer_add_tensor(w, name, t, rows == 1 ? 1 : 2, ne, q);
    free(v);
    free(q);
    return rc;
}

/* Builds the file into a malloc'd buffer (caller frees); NULL on failure. */
static inline uint8_t *tm_build(const tm_cfg *c, uint64_t *len) {
    tm_rng = c->seed * 2654435761u + 88172645463325252ull;
    gguf_writer *w = gguf_writer_new();
    char k[128];
    int hd = c->dim / c->n_heads;
    gguf_writer_set_str(w, "general.architecture", c->arch);
#define KEY(s) (snprintf(k, sizeof k, "%s.%s", c->arch, s), k)
    gguf_writer_set_u32(w, KEY("block_count"), (uint32_t)c->n_layers);
    gguf_writer_set_u32(w, KEY("context_length"), 512);
    gguf_writer_set_u32(w, KEY("embedding_length"), (uint32_t)c->dim);
    gguf_writer_set_u32(w, KEY("feed_forward_length"), (uint32_t)c->ffn);
    gguf_writer_set_u32(w, KEY("attention.head_count"), (uint32_t)c->n_heads);
    gguf_writer_set_u32(w, KEY("attention.head_count_kv"), (uint32_t)c->n_kv_heads);
    gguf_writer_set_f32(w, KEY("rope.freq_base"), c->rope_theta);
    gguf_writer_set_f32(w, KEY("attention.layer_norm_rms_epsilon"), 1e-5f);
    if (c->rope_dim) gguf_writer_set_u32(w, KEY("rope.dimension_count"), (uint32_t)c->rope_dim);
    if (c->rope_scale > 0) {
        gguf_writer_set_str(w, KEY("rope.scaling.type"), "linear");
        gguf_writer_set_f32(w, KEY("rope.scaling.factor"), c->rope_scale);
    }
#undef KEY
    float ws = 1.0f / sqrtf((float)c->dim);
    tm_add(w, c, "token_embd.weight", c->etype, c->vocab, c->dim, 1.0f, 0.0f);
    for (int l = 0; l < c->n_layers; l++) {
        char n[96];
#define NAME(s) (snprintf(n, sizeof n, "blk.%d.%s", l, s), n)
        tm_add(w, c, NAME("attn_norm.weight"), SGL_DTYPE_F32, 1, c->dim, 0.2f, 1.0f);
        tm_add(w, c, NAME("attn_q.weight"), c->wtype, c->dim, c->dim, 2.0f * ws, 0.0f);
        tm_add(w, c, NAME("attn_k.weight"), c->wtype, c->n_kv_heads * hd, c->dim, 2.0f * ws, 0.0f);
        tm_add(w, c, NAME("attn_v.weight"), c->wtype, c->n_kv_heads * hd, c->dim, ws, 0.0f);
        if (c->bias) {
            tm_add(w, c, NAME("attn_q.bias"), SGL_DTYPE_F32, 1, c->dim, 0.5f, 0.0f);
            tm_add(w, c, NAME("attn_k.bias"), SGL_DTYPE_F32, 1, c->n_kv_heads * hd, 0.5f, 0.0f);
            tm_add(w, c, NAME("attn_v.bias"), SGL_DTYPE_F32, 1, c->n_kv_heads * hd, 0.1f, 0.0f);
        }
        tm_add(w, c, NAME("attn_output.weight"), c->wtype, c->dim, c->dim, ws, 0.0f);
        tm_add(w, c, NAME("ffn_norm.weight"), SGL_DTYPE_F32, 1, c->dim, 0.2f, 1.0f);
        tm_add(w, c, NAME("ffn_gate.weight"), c->wtype, c->ffn, c->dim, 2.0f * ws, 0.0f);
        tm_add(w, c, NAME("ffn_up.weight"), c->wtype, c->ffn, c->dim, 2.0f * ws, 0.0f);
        tm_add(w, c, NAME("ffn_down.weight"), c->wtype, c->dim, c->ffn,
               1.0f / sqrtf((float)c->ffn), 0.0f);
#undef NAME
    }
    tm_add(w, c, "output_norm.weight", SGL_DTYPE_F32, 1, c->dim, 0.2f, 1.0f);
    if (c->untied) tm_add(w, c, "output.weight", c->wtype, c->vocab, c->dim, 2.0f * ws, 0.0f);
    uint8_t *buf = NULL;
    sgl_error err;
    if (gguf_writer_to_memory(w, &buf, len, &err)) {
        fprintf(stderr, "tm_build: %s\n", err.msg);
        buf = NULL;
    }
    gguf_writer_free(w);
    return buf;
}

/* Loads a model from buf (which must outlive it). */
static inline sgl_model *tm_load(const uint8_t *buf, uint64_t len, int threads, sgl_error *err) {
    gguf_file *f = gguf_open_memory(buf, len, err);
    if (!f) return NULL;
    return model_load_gguf(f, threads, err);
}

static const tm_cfg TM_LLAMA = {
    .arch = "llama", .dim = 64, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .ffn = 96,
    .vocab = 80, .rope_theta = 10000.0f, .wtype = SGL_DTYPE_Q4_1, .etype = SGL_DTYPE_Q8_0,
    .seed = 1};
/* qwen2: biases, NeoX rope on part of the head, untied output, Q8_0 / F16. */
static const tm_cfg TM_QWEN2 = {
    .arch = "qwen2", .dim = 128, .n_layers = 2, .n_heads = 4, .n_kv_heads = 1, .ffn = 160,
    .vocab = 96, .rope_dim = 16, .rope_theta = 1000000.0f, .wtype = SGL_DTYPE_Q8_0,
    .etype = SGL_DTYPE_F16, .untied = true, .bias = true, .seed = 2};

/* ---- plain float reference ---------------------------------------------------- */

static inline float *ref_mat(const model_mat *m) {
    float *out = malloc(sizeof(float) * (size_t)(m->rows * m->cols));
    uint64_t rb = sgl_dtype_row_bytes(m->type, (uint64_t)m->cols);
    for (int64_t r = 0; r < m->rows; r++)
        kern_dequant_row(m->type, (const uint8_t *)m->data + (uint64_t)r * rb, out + r * m->cols,
                         m->cols);
    return out;
}

static inline void ref_matvec(const float *W, int64_t rows, int64_t k, const float *x, float *y) {
    for (int64_t r = 0; r < rows; r++) {
        double acc = 0;
        for (int64_t j = 0; j < k; j++) acc += (double)W[r * k + j] * x[j];
        y[r] = (float)acc;
    }
}

static inline void ref_rmsnorm(float *y, const float *x, const float *w, int n, float eps) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    double s = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++) y[i] = (float)(x[i] * s * w[i]);
}

static inline void ref_rope(float *x, int n_heads, int hd, int rot, int pos, float base, bool neox,
                     double pos_scale) {
    for (int h = 0; h < n_heads; h++) {
        float *v = x + h * hd;
        for (int i = 0; i < rot / 2; i++) {
            double ang = pos * pos_scale * pow(base, -2.0 * i / rot);
            double c = cos(ang), s = sin(ang);
            int a = neox ? i : 2 * i, b = neox ? i + rot / 2 : 2 * i + 1;
            double x0 = v[a], x1 = v[b];
            v[a] = (float)(x0 * c - x1 * s);
            v[b] = (float)(x0 * s + x1 * c);
        }
    }
}

/* Logits for every position of tokens[0..n): returns malloc'd [n][vocab]. */
static inline float *ref_forward(const sgl_model *m, const int32_t *tokens, int n) {
    const model_config *c = model_get_config(m);
    const model_weights *w = model_get_weights(m);
    int D = c->dim, F = c->ffn_dim, hd = c->head_dim, KV = c->kv_dim, QD = c->q_dim;
    float *emb = ref_mat(&w->token_embd);
    float *x = calloc((size_t)n * D, sizeof(float));
    for (int t = 0; t < n; t++) memcpy(x + t * D, emb + (int64_t)tokens[t] * D, sizeof(float) * D);
    float *xb = malloc(sizeof(float) * D), *q = malloc(sizeof(float) * (size_t)n * QD);
    float *K = malloc(sizeof(float) * (size_t)n * KV), *V = malloc(sizeof(float) * (size_t)n * KV);
    float *att = malloc(sizeof(float) * QD), *o = malloc(sizeof(float) * D);
    float *g = malloc(sizeof(float) * F), *u = malloc(sizeof(float) * F);
    double *sc = malloc(sizeof(double) * n);
    for (int l = 0; l < c->n_layers; l++) {
        const model_layer *L = &w->layers[l];
        float *Wq = ref_mat(&L->wq), *Wk = ref_mat(&L->wk), *Wv = ref_mat(&L->wv);
        float *Wo = ref_mat(&L->wo), *Wg = ref_mat(&L->w_gate), *Wu = ref_mat(&L->w_up);
        float *Wd = ref_mat(&L->w_down);
        for (int t = 0; t < n; t++) {
            ref_rmsnorm(xb, x + t * D, L->attn_norm, D, c->rms_eps);
            ref_matvec(Wq, QD, D, xb, q + t * QD);
            ref_matvec(Wk, KV, D, xb, K + t * KV);
            ref_matvec(Wv, KV, D, xb, V + t * KV);
            for (int i = 0; i < QD && L->bq; i++) q[t * QD + i] += L->bq[i];
            for (int i = 0; i < KV && L->bk; i++) K[t * KV + i] += L->bk[i];
            for (int i = 0; i < KV && L->bv; i++) V[t * KV + i] += L->bv[i];
            ref_rope(q + t * QD, c->n_heads, hd, c->rope_dim, t, c->rope_theta, c->rope_neox,
                     1.0 / c->rope_scale_factor);
            ref_rope(K + t * KV, c->n_kv_heads, hd, c->rope_dim, t, c->rope_theta, c->rope_neox,
                     1.0 / c->rope_scale_factor);
        }
        for (int t = 0; t < n; t++) {
            for (int h = 0; h < c->n_heads; h++) {
                int kh = h / (c->n_heads / c->n_kv_heads);
                double mx = -1e300, sum = 0;
                for (int j = 0; j <= t; j++) {
                    double d = 0;
                    for (int i = 0; i < hd; i++) d += (double)q[t * QD + h * hd + i] * K[j * KV + kh * hd + i];
                    sc[j] = d / sqrt((double)hd);
                    if (sc[j] > mx) mx = sc[j];
                }
                for (int j = 0; j <= t; j++) sum += sc[j] = exp(sc[j] - mx);
                for (int i = 0; i < hd; i++) {
                    double a = 0;
                    for (int j = 0; j <= t; j++) a += sc[j] * V[j * KV + kh * hd + i];
                    att[h * hd + i] = (float)(a / sum);
                }
            }
            ref_matvec(Wo, D, QD, att, o);
            for (int i = 0; i < D; i++) x[t * D + i] += o[i];
            ref_rmsnorm(xb, x + t * D, L->ffn_norm, D, c->rms_eps);
            ref_matvec(Wg, F, D, xb, g);
            ref_matvec(Wu, F, D, xb, u);
            for (int i = 0; i < F; i++) g[i] = (float)(g[i] / (1.0 + exp(-(double)g[i])) * u[i]);
            ref_matvec(Wd, D, F, g, o);
            for (int i = 0; i < D; i++) x[t * D + i] += o[i];
        }
        free(Wq), free(Wk), free(Wv), free(Wo), free(Wg), free(Wu), free(Wd);
    }
    float *Wout = ref_mat(&w->output);
    float *logits = malloc(sizeof(float) * (size_t)n * c->vocab);
    for (int t = 0; t < n; t++) {
        ref_rmsnorm(xb, x + t * D, w->output_norm, D, c->rms_eps);
        ref_matvec(Wout, c->vocab, D, xb, logits + (int64_t)t * c->vocab);
    }
    free(Wout), free(emb), free(x), free(xb), free(q), free(K), free(V), free(att), free(o);
    free(g), free(u), free(sc);
    return logits;
}

#endif
