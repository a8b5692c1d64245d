/* model: GGUF llama/qwen2 loader and the batched forward (see model.h), written
 * once against the backend table (kernels/backend.h): the CPU kernels or CUDA.
 *
 * forward(batch) with N = total new tokens, per layer l:
 *
 *   xb  = rmsnorm(x, attn_norm)                      [N][dim]
 *   q,k,v = xb Wq^T (+bq), xb Wk^T (+bk), xb Wv^T (+bv)   one matmul each, nb = N
 *   rope(q, k) at each token's position; K,V -> f16 pool rows at the token's slot
 *   att = per (seq, kv head, block of new tokens): softmax(q K^T / sqrt(hd)) V
 *         over the pool slots 0..pos of that sequence (causal)
 *   x  += att Wo^T
 *   xb  = rmsnorm(x, ffn_norm)
 *   x  += (silu(xb Wgate^T) * (xb Wup^T)) Wdown^T
 *
 * then logits = rmsnorm(x[rows asked], output_norm) Wout^T.
 * Row-local stages (norms, bias/rope/store, silu) split rows over the pool;
 * each row's result does not depend on the split.
 */
#include "runtime/model.h"
#include "runtime/model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"

/* The backend's copy of one layer's weights (for the CPU: the same memory). */
typedef struct dev_layer {
    kb_mat wq, wk, wv, wo, w_gate, w_up, w_down;
    float *attn_norm, *ffn_norm, *bq, *bk, *bv; /* backend memory; bias NULL when absent */
} dev_layer;

/* Run state: activation buffers (backend memory) sized for the largest batch
 * seen so far, and the host arrays of the flattened batch. */
typedef struct model_state {
    int64_t cap_tokens;
    float *x;      /* [N][dim] residual stream */
    float *xb;     /* [N][dim] normed input / matmul output */
    float *q;      /* [N][q_dim] */
    float *k;      /* [N][kv_dim] */
    float *v;      /* [N][kv_dim] */
    float *att;    /* [N][q_dim] attention output */
    float *hb;     /* [N][ffn_dim] gate, then silu(gate) * up */
    float *hb2;    /* [N][ffn_dim] up */
    float *lg;     /* [cap_logits][vocab] logits (device backends; the CPU writes the caller's buffer) */
    int64_t cap_logits;
    int32_t *tok;  /* host [N] token id of each row */
    int32_t *pos;  /* host [N] position of each row */
    int32_t *slot; /* host [N] KV slot each row writes */
    int32_t *row_seq;    /* host [N] */
    int32_t *logit_rows; /* host [N] */
    int64_t cap_seqs;
    kb_seq *seqs;  /* host */
    int64_t cap_slots;
    int32_t *slots; /* host: every sequence's attended slots */
} model_state;

struct sgl_model {
    gguf_file *gguf;
    kern_pool *pool;
    model_config cfg;
    model_weights w;
    float **owned;      /* norm/bias vectors converted to f32 */
    int n_owned;
    kb_backend *be;     /* runs the forward */
    bool be_is_cpu;
    kb_mat d_embd, d_output;
    float *d_output_norm;
    dev_layer *d_layers;
    uint64_t weight_bytes; /* backend memory taken by the weights (CPU: repacked copies) */
    model_state st;
};

/* ---- loading ---------------------------------------------------------------- */

static int key_int(const gguf_file *f, const char *arch, const char *suffix, int64_t dflt,
                   bool required, int64_t *out, sgl_error *err) {
    char key[256];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv) {
        if (required) return sgl_error_set(err, "model: missing metadata key '%s'", key);
        *out = dflt;
        return 0;
    }
    if (kv->type > GGUF_VT_INT32 && kv->type != GGUF_VT_UINT64 && kv->type != GGUF_VT_INT64)
        return sgl_error_set(err, "model: metadata key '%s' is %s, expected an integer", key,
                             gguf_vtype_name(kv->type));
    *out = gguf_get_int(f, key, dflt);
    return 0;
}

static double key_float(const gguf_file *f, const char *arch, const char *suffix, double dflt) {
    char key[256];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return gguf_get_float(f, key, dflt);
}

static int read_config(const gguf_file *f, model_config *c, sgl_error *err) {
    char *arch = gguf_get_string(f, "general.architecture");
    if (!arch) return sgl_error_set(err, "model: missing metadata key 'general.architecture'");
    if (!strcmp(arch, "llama")) c->arch = MODEL_ARCH_LLAMA;
    else if (!strcmp(arch, "qwen2")) c->arch = MODEL_ARCH_QWEN2;
    else {
        sgl_error_set(err, "model: unsupported architecture '%s' (supported: llama, qwen2)", arch);
        free(arch);
        return -1;
    }
    int64_t n_layers, dim, ffn, n_heads, n_kv, head_dim, rope_dim, n_ctx;
    int rc = 0;
    rc |= key_int(f, arch, "block_count", 0, true, &n_layers, err);
    if (!rc) rc |= key_int(f, arch, "embedding_length", 0, true, &dim, err);
    if (!rc) rc |= key_int(f, arch, "feed_forward_length", 0, true, &ffn, err);
    if (!rc) rc |= key_int(f, arch, "attention.head_count", 0, true, &n_heads, err);
    if (!rc) rc |= key_int(f, arch, "attention.head_count_kv", n_heads, false, &n_kv, err);
    if (!rc) rc |= key_int(f, arch, "context_length", 0, false, &n_ctx, err);
    if (rc) {
        free(arch);
        return -1;
    }
    if (n_layers < 1 || n_layers > 4096 || dim < 1 || dim > (1 << 20) || ffn < 1 ||
        ffn > (1 << 22) || n_heads < 1 || n_heads > 4096 || n_kv < 1 || n_kv > n_heads ||
        n_heads % n_kv != 0) {
        sgl_error_set(err,
                      "model: implausible hyper-parameters (%s: %lld layers, dim %lld, ffn %lld, "
                      "%lld heads, %lld kv heads)",
                      arch, (long long)n_layers, (long long)dim, (long long)ffn,
                      (long long)n_heads, (long long)n_kv);
        free(arch);
        return -1;
    }
    rc = key_int(f, arch, "attention.key_length", dim / n_heads, false, &head_dim, err);
    int64_t vlen = head_dim;
    if (!rc) rc = key_int(f, arch, "attention.value_length", head_dim, false, &vlen, err);
    if (!rc) rc = key_int(f, arch, "rope.dimension_count", head_dim, false, &rope_dim, err);
    if (rc) {
        free(arch);
        return -1;
    }
    if (head_dim < 2 || head_dim > 1024 || head_dim % 2 || vlen != head_dim ||
        (dim % n_heads && head_dim == dim / n_heads)) {
        sgl_error_set(err, "model: unsupported head size (key_length %lld, value_length %lld, "
                           "dim %lld, %lld heads)",
                      (long long)head_dim, (long long)vlen, (long long)dim, (long long)n_heads);
        free(arch);
        return -1;
    }
    if (rope_dim < 2 || rope_dim > head_dim || rope_dim % 2) {
        sgl_error_set(err, "model: rope.dimension_count %lld invalid for head size %lld",
                      (long long)rope_dim, (long long)head_dim);
        free(arch);
        return -1;
    }
    c->n_layers = (int32_t)n_layers;
    c->dim = (int32_t)dim;
    c->ffn_dim = (int32_t)ffn;
    c->n_heads = (int32_t)n_heads;
    c->n_kv_heads = (int32_t)n_kv;
    c->head_dim = (int32_t)head_dim;
    c->q_dim = (int32_t)(n_heads * head_dim);
    c->kv_dim = (int32_t)(n_kv * head_dim);
    c->n_ctx_train = (int32_t)n_ctx;
    c->rope_dim = (int32_t)rope_dim;
    c->rope_theta = (float)key_float(f, arch, "rope.freq_base", 10000.0);
    c->rms_eps = (float)key_float(f, arch, "attention.layer_norm_rms_epsilon", 1e-5);
    c->rope_neox = c->arch == MODEL_ARCH_QWEN2;
    if (!(c->rope_theta > 0) || !(c->rms_eps > 0)) {
        free(arch);
        return sgl_error_set(err, "model: rope.freq_base and layer_norm_rms_epsilon must be > 0");
    }

    /* Rope scaling: "<arch>.rope.scaling.type" (+ .factor), or the older
     * "<arch>.rope.scale_linear". Only linear scaling maps onto kern_rope. */
    c->rope_scaling = MODEL_ROPE_SCALING_NONE;
    c->rope_scale_factor = 1.0f;
    char key[256];
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    char *stype = gguf_get_string(f, key);
    double factor = key_float(f, arch, "rope.scaling.factor", 0.0);
    if (stype && strcmp(stype, "none") != 0) {
        if (strcmp(stype, "linear") != 0) {
            sgl_error_set(err, "model: rope scaling type '%s' is not supported (none, linear)",
                          stype);
            free(stype);
            free(arch);
            return -1;
        }
        c->rope_scaling = MODEL_ROPE_SCALING_LINEAR;
    } else if (!stype) {
        double lin = key_float(f, arch, "rope.scale_linear", 0.0);
        if (lin > 0 && lin != 1.0) {
            c->rope_scaling = MODEL_ROPE_SCALING_LINEAR;
            factor = lin;
        }
    }
    free(stype);
    if (c->rope_scaling == MODEL_ROPE_SCALING_LINEAR) {
        if (!(factor > 0)) {
            free(arch);
            return sgl_error_set(err, "model: linear rope scaling without a positive factor");
        }
        c->rope_scale_factor = (float)factor;
    }
    c->rope_freq_scale = 1.0f / c->rope_scale_factor;
    free(arch);
    return 0;
}

static const char *arch_name(model_arch a) { return a == MODEL_ARCH_QWEN2 ? "qwen2" : "llama"; }

/* Looks up a 2-D weight of `rows` x `cols` (cols = ne[0]); rows < 0 accepts any. */
static int get_mat(sgl_model *m, const char *name, int64_t rows, int64_t cols, model_mat *out,
                   sgl_error *err) {
    const gguf_tensor *t = gguf_find_tensor(m->gguf, name);
    if (!t) return sgl_error_set(err, "model: missing tensor '%s'", name);
    if (!kern_type_supported(t->type)) {
        const char *tn = sgl_dtype_name(t->type);
        return sgl_error_set(err, "model: tensor '%s' has type %s, which the kernels do not support",
                             name, tn ? tn : "?");
    }
    uint64_t r = t->ne[1];
    for (uint32_t d = 2; d < GGUF_MAX_DIMS; d++) r *= t->ne[d];
    if (t->ne[0] != (uint64_t)cols || (rows >= 0 && r != (uint64_t)rows) || r == 0 ||
        r > INT32_MAX) {
        return sgl_error_set(err, "model: tensor '%s' has shape [%llu, %llu], expected [%lld, %lld]",
                             name, (unsigned long long)t->ne[0], (unsigned long long)r,
                             (long long)cols, (long long)rows);
    }
    uint64_t rb = sgl_dtype_row_bytes(t->type, (uint64_t)cols);
    if (rb == 0 || rb * r != t->nbytes)
        return sgl_error_set(err, "model: tensor '%s': row of %lld is not a whole number of %s blocks",
                             name, (long long)cols, sgl_dtype_name(t->type));
    out->data = t->data;
    out->type = t->type;
    out->rows = (int64_t)r;
    out->cols = cols;
    return 0;
}

/* Looks up a 1-D vector of n values as f32: in place when the file stores
 * f32, else converted into a model-owned buffer. optional: absent -> NULL. */
static int get_vec(sgl_model *m, const char *name, int64_t n, bool optional, const float **out,
                   sgl_error *err) {
    const gguf_tensor *t = gguf_find_tensor(m->gguf, name);
    *out = NULL;
    if (!t) {
        if (optional) return 0;
        return sgl_error_set(err, "model: missing tensor '%s'", name);
    }
    uint64_t count = 1;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) count *= t->ne[d];
    if (t->ne[0] != (uint64_t)n || count != (uint64_t)n)
        return sgl_error_set(err, "model: tensor '%s' has %llu values (ne0 %llu), expected [%lld]",
                             name, (unsigned long long)count, (unsigned long long)t->ne[0],
                             (long long)n);
    if (t->type == SGL_DTYPE_F32 && ((uintptr_t)t->data % sizeof(float)) == 0) {
        *out = t->data;
        return 0;
    }
    if (!kern_type_supported(t->type) || sgl_dtype_row_bytes(t->type, (uint64_t)n) == 0) {
        const char *tn = sgl_dtype_name(t->type);
        return sgl_error_set(err, "model: tensor '%s' has type %s, not usable for a vector", name,
                             tn ? tn : "?");
    }
    float *buf = malloc(sizeof(float) * (size_t)n);
    float **list = realloc(m->owned, sizeof(float *) * (size_t)(m->n_owned + 1));
    if (!buf || !list) {
        free(buf);
        if (list) m->owned = list;
        return sgl_error_set(err, "model: out of memory");
    }
    m->owned = list;
    m->owned[m->n_owned++] = buf;
    kern_dequant_row(t->type, t->data, buf, n);
    *out = buf;
    return 0;
}

static int load_weights(sgl_model *m, sgl_error *err) {
    model_config *c = &m->cfg;
    model_weights *w = &m->w;
    if (get_mat(m, "token_embd.weight", -1, c->dim, &w->token_embd, err)) return -1;
    c->vocab = (int32_t)w->token_embd.rows;
    int64_t vocab_key = -1;
    char key[128];
    snprintf(key, sizeof key, "%s.vocab_size", arch_name(c->arch));
    vocab_key = gguf_get_int(m->gguf, key, -1);
    if (vocab_key >= 0 && vocab_key != c->vocab)
        return sgl_error_set(err, "model: %s = %lld but token_embd.weight has %d rows", key,
                             (long long)vocab_key, c->vocab);
    if (get_vec(m, "output_norm.weight", c->dim, false, &w->output_norm, err)) return -1;
    if (gguf_find_tensor(m->gguf, "output.weight")) {
        if (get_mat(m, "output.weight", c->vocab, c->dim, &w->output, err)) return -1;
        c->tied_output = false;
    } else {
        w->output = w->token_embd;
        c->tied_output = true;
    }
    w->layers = calloc((size_t)c->n_layers, sizeof *w->layers);
    if (!w->layers) return sgl_error_set(err, "model: out of memory");
    bool bias = c->arch == MODEL_ARCH_QWEN2;
    for (int l = 0; l < c->n_layers; l++) {
        model_layer *L = &w->layers[l];
        char n[96];
#define NAME(s) (snprintf(n, sizeof n, "blk.%d.%s", l, s), n)
        if (get_vec(m, NAME("attn_norm.weight"), c->dim, false, &L->attn_norm, err) ||
            get_mat(m, NAME("attn_q.weight"), c->q_dim, c->dim, &L->wq, err) ||
            get_mat(m, NAME("attn_k.weight"), c->kv_dim, c->dim, &L->wk, err) ||
            get_mat(m, NAME("attn_v.weight"), c->kv_dim, c->dim, &L->wv, err) ||
            get_mat(m, NAME("attn_output.weight"), c->dim, c->q_dim, &L->wo, err) ||
            get_vec(m, NAME("ffn_norm.weight"), c->dim, false, &L->ffn_norm, err) ||
            get_mat(m, NAME("ffn_gate.weight"), c->ffn_dim, c->dim, &L->w_gate, err) ||
            get_mat(m, NAME("ffn_up.weight"), c->ffn_dim, c->dim, &L->w_up, err) ||
            get_mat(m, NAME("ffn_down.weight"), c->dim, c->ffn_dim, &L->w_down, err))
            return -1;
        /* Qwen2 carries q/k/v biases; accept them on llama files too. */
        if (get_vec(m, NAME("attn_q.bias"), c->q_dim, !bias, &L->bq, err) ||
            get_vec(m, NAME("attn_k.bias"), c->kv_dim, !bias, &L->bk, err) ||
            get_vec(m, NAME("attn_v.bias"), c->kv_dim, !bias, &L->bv, err))
            return -1;
#undef NAME
    }
    return 0;
}

sgl_model *model_load_gguf(gguf_file *f, int n_threads, sgl_error *err) {
    sgl_model *m = calloc(1, sizeof *m);
    if (!m) {
        gguf_close(f);
        sgl_error_set(err, "model: out of memory");
        return NULL;
    }
    m->gguf = f;
    if (read_config(f, &m->cfg, err) || load_weights(m, err)) goto fail;
    m->pool = kern_pool_new(n_threads < 0 ? 0 : n_threads);
    if (!m->pool) {
        sgl_error_set(err, "model: cannot start a pool of %d threads", n_threads);
        goto fail;
    }
    if (model_set_device(m, MODEL_DEVICE_CPU, err)) goto fail;
    return m;
fail:
    model_free(m);
    return NULL;
}

sgl_model *model_load(const char *path, int n_threads, sgl_error *err) {
    gguf_file *f = gguf_open(path, err);
    if (!f) {
        if (err && !strstr(err->msg, path)) sgl_error_prefix(err, "%s", path);
        return NULL;
    }
    sgl_model *m = model_load_gguf(f, n_threads, err);
    if (!m) sgl_error_prefix(err, "%s", path);
    return m;
}

/* ---- backend ------------------------------------------------------------------- */

static void state_free(sgl_model *m) {
    model_state *s = &m->st;
    if (m->be) {
        const kb_ops *o = m->be->ops;
        o->free_mem(m->be, s->x), o->free_mem(m->be, s->xb), o->free_mem(m->be, s->q);
        o->free_mem(m->be, s->k), o->free_mem(m->be, s->v), o->free_mem(m->be, s->att);
        o->free_mem(m->be, s->hb), o->free_mem(m->be, s->hb2), o->free_mem(m->be, s->lg);
    }
    free(s->tok), free(s->pos), free(s->slot), free(s->row_seq), free(s->logit_rows);
    free(s->seqs), free(s->slots);
    memset(s, 0, sizeof *s);
}

/* Frees the backend copies of the weights and the backend itself. */
static void backend_drop(sgl_model *m) {
    if (!m->be) return;
    state_free(m);
    const kb_ops *o = m->be->ops;
    if (m->d_layers) {
        for (int l = 0; l < m->cfg.n_layers; l++) {
            dev_layer *d = &m->d_layers[l];
            kb_mat *mats[] = {&d->wq, &d->wk, &d->wv, &d->wo, &d->w_gate, &d->w_up, &d->w_down};
            for (size_t i = 0; i < SGL_ARRAY_LEN(mats); i++)
                if (mats[i]->data) o->mat_free(m->be, mats[i]);
            o->free_mem(m->be, d->attn_norm), o->free_mem(m->be, d->ffn_norm);
            o->free_mem(m->be, d->bq), o->free_mem(m->be, d->bk), o->free_mem(m->be, d->bv);
        }
        free(m->d_layers);
        m->d_layers = NULL;
    }
    /* a tied head shares the embedding's copy: freed once */
    if (m->d_output.data && m->d_output.data != m->d_embd.data) o->mat_free(m->be, &m->d_output);
    if (m->d_embd.data) o->mat_free(m->be, &m->d_embd);
    memset(&m->d_output, 0, sizeof m->d_output);
    o->free_mem(m->be, m->d_output_norm);
    m->d_output_norm = NULL;
    o->destroy(m->be);
    m->be = NULL;
    m->weight_bytes = 0;
}

/* kb_mat.release of the host matrices: a mapped file's pages go back to the
 * kernel (gguf_release_range). */
static void release_file_range(void *ctx, const void *p, size_t n) {
    gguf_release_range(ctx, p, n);
}

/* lookup: the matrix's rows are looked up (the embedding), see kb_mat. */
static int up_mat(sgl_model *m, const model_mat *h, bool lookup, kb_mat *out, sgl_error *err) {
    kb_mat hm = {h->type, h->rows, h->cols, h->data, lookup, release_file_range, m->gguf};
    if (!m->be->ops->type_supported(m->be, h->type))
        return sgl_error_set(err, "model: the %s backend has no kernels for weight type %s",
                             m->be->ops->name, sgl_dtype_name(h->type));
    if (m->be->ops->mat_upload(m->be, &hm, out, err)) return -1;
    uint64_t bytes = sgl_dtype_row_bytes(h->type, (uint64_t)h->cols) * (uint64_t)h->rows;
    /* on the CPU only a repacked copy takes memory beyond the mapped file,
     * whose pages it replaces (released as it was packed) */
    if (!m->be_is_cpu || out->data != h->data) m->weight_bytes += bytes;
    return 0;
}

static int up_vec(sgl_model *m, const float *h, int64_t n, float **out, sgl_error *err) {
    *out = NULL;
    if (!h) return 0;
    size_t bytes = sizeof(float) * (size_t)n;
    if (!(*out = m->be->ops->alloc(m->be, bytes)))
        return sgl_error_set(err, "model: out of %s memory", m->be->ops->name);
    if (!m->be_is_cpu) m->weight_bytes += bytes;
    return m->be->ops->upload(m->be, *out, h, bytes, err);
}

/* Makes be the model's backend (the model owns it from here, also on
 * failure) and gives it the weights. Returns 0 or -1 with err set. */
static int backend_attach(sgl_model *m, kb_backend *be, sgl_error *err) {
    backend_drop(m);
    m->be = be;
    m->be_is_cpu = be->ops->host;
    const model_config *c = &m->cfg;
    const model_weights *w = &m->w;
    if (c->tied_output && m->be_is_cpu) {
        /* one copy for the tied head and the embedding, in the matmul's
         * layout (repacked where the kernels have one; the embedding's row
         * lookups read that layout too), so the file's pages can all go */
        if (up_mat(m, &w->token_embd, false, &m->d_output, err)) return -1;
        m->d_embd = m->d_output;
    } else {
        if (up_mat(m, &w->token_embd, true, &m->d_embd, err)) return -1;
        /* a tied head shares the embedding's device copy */
        if (c->tied_output) m->d_output = m->d_embd;
        else if (up_mat(m, &w->output, false, &m->d_output, err)) return -1;
    }
    if (up_vec(m, w->output_norm, c->dim, &m->d_output_norm, err)) return -1;
    if (!(m->d_layers = calloc((size_t)c->n_layers, sizeof *m->d_layers)))
        return sgl_error_set(err, "model: out of memory");
    for (int l = 0; l < c->n_layers; l++) {
        const model_layer *L = &w->layers[l];
        dev_layer *d = &m->d_layers[l];
        if (up_mat(m, &L->wq, false, &d->wq, err) || up_mat(m, &L->wk, false, &d->wk, err) ||
            up_mat(m, &L->wv, false, &d->wv, err) || up_mat(m, &L->wo, false, &d->wo, err) ||
            up_mat(m, &L->w_gate, false, &d->w_gate, err) || up_mat(m, &L->w_up, false, &d->w_up, err) ||
            up_mat(m, &L->w_down, false, &d->w_down, err) ||
            up_vec(m, L->attn_norm, c->dim, &d->attn_norm, err) ||
            up_vec(m, L->ffn_norm, c->dim, &d->ffn_norm, err) ||
            up_vec(m, L->bq, c->q_dim, &d->bq, err) || up_vec(m, L->bk, c->kv_dim, &d->bk, err) ||
            up_vec(m, L->bv, c->kv_dim, &d->bv, err))
            return -1;
    }
    return 0;
}

int model_attach_backend(sgl_model *m, kb_backend *be, sgl_error *err) {
    if (backend_attach(m, be, err) == 0) return 0;
    /* keep a working model: back to the CPU */
    sgl_error e2 = {{0}};
    kb_backend *cpu = kb_cpu_new(m->pool);
    if (cpu) backend_attach(m, cpu, &e2);
    return -1;
}

int model_set_device(sgl_model *m, model_device dev, sgl_error *err) {
    kb_backend *be = NULL;
    if (dev == MODEL_DEVICE_CUDA) {
        if (!(be = kb_cuda_new(err))) return -1;
    } else if (!(be = kb_cpu_new(m->pool))) {
        return sgl_error_set(err, "model: out of memory");
    }
    return model_attach_backend(m, be, err);
}

int model_device_available(model_device dev, sgl_error *err) {
    if (dev == MODEL_DEVICE_CPU) return 1;
    kb_backend *be = kb_cuda_new(err);
    if (!be) return 0;
    be->ops->destroy(be);
    return 1;
}

static model_device default_device = MODEL_DEVICE_AUTO;
void model_set_default_device(model_device dev) { default_device = dev; }
model_device model_default_device(void) { return default_device; }

void model_default_device_describe(char *buf, size_t cap) {
    if (default_device != MODEL_DEVICE_CPU && kb_cuda_built()) {
        sgl_error err = {{0}};
        kb_backend *be = kb_cuda_new(&err);
        if (be) {
            be->ops->describe(be, buf, cap);
            be->ops->destroy(be);
            return;
        }
    }
    snprintf(buf, cap, "cpu (%s kernels)", kern_impl_name());
}

model_device model_get_device(const sgl_model *m) {
    return m->be && !m->be_is_cpu ? MODEL_DEVICE_CUDA : MODEL_DEVICE_CPU;
}

const char *model_device_name(model_device dev) {
    return dev == MODEL_DEVICE_CUDA ? "cuda" : "cpu";
}

int model_parse_device(const char *s, model_device *out) {
    if (!strcmp(s, "cpu")) *out = MODEL_DEVICE_CPU;
    else if (!strcmp(s, "cuda")) *out = MODEL_DEVICE_CUDA;
    else if (!strcmp(s, "auto")) *out = MODEL_DEVICE_AUTO;
    else return -1;
    return 0;
}

int model_use_device(sgl_model *m, model_device dev, char *note, size_t note_cap,
                     sgl_error *err) {
    if (note_cap) note[0] = 0;
    if (dev == MODEL_DEVICE_CPU) return model_get_device(m) == MODEL_DEVICE_CPU ? 0 : model_set_device(m, dev, err);
    if (dev == MODEL_DEVICE_CUDA) return model_set_device(m, dev, err);
    /* auto: CUDA when a device answers, else the CPU with a note */
    if (!kb_cuda_built()) return 0;
    sgl_error e = {{0}};
    if (model_set_device(m, MODEL_DEVICE_CUDA, &e) == 0) return 0;
    if (note_cap) snprintf(note, note_cap, "note: running on the CPU (%s)", e.msg);
    return 0;
}

void model_describe_device(sgl_model *m, char *buf, size_t cap) {
    m->be->ops->describe(m->be, buf, cap);
}

void model_device_memory(const sgl_model *m, uint64_t *weights, uint64_t *total) {
    *weights = m->weight_bytes;
    *total = m->be_is_cpu ? 0 : m->be->ops->mem_used(m->be);
}

void model_free(sgl_model *m) {
    if (!m) return;
    backend_drop(m);
    state_free(m);
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->w.layers);
    if (m->pool) kern_pool_free(m->pool);
    gguf_close(m->gguf);
    free(m);
}

const model_config *model_get_config(const sgl_model *m) { return &m->cfg; }
const model_weights *model_get_weights(const sgl_model *m) { return &m->w; }
const gguf_file *model_get_gguf(const sgl_model *m) { return m->gguf; }
kern_pool *model_get_pool(sgl_model *m) { return m->pool; }
struct kb_backend *model_get_backend(sgl_model *m) { return m->be; }

kv_pool *model_kv_pool_new(const sgl_model *m, int32_t n_slots, sgl_error *err) {
    return kv_pool_new(n_slots, m->cfg.n_layers, m->cfg.kv_dim, err);
}

/* ---- scratch ---------------------------------------------------------------- */

static int grow_host(void *pp, size_t elem, int64_t n) {
    void **p = pp;
    void *q = realloc(*p, elem * (size_t)(n > 0 ? n : 1));
    if (!q) return -1;
    *p = q;
    return 0;
}

/* Backend buffer of n rows of width floats (old contents dropped). */
static int grow_be(sgl_model *m, float **p, int64_t width, int64_t n) {
    m->be->ops->free_mem(m->be, *p);
    *p = m->be->ops->alloc(m->be, sizeof(float) * (size_t)(width * n));
    return *p ? 0 : -1;
}

static int state_reserve(sgl_model *m, const model_batch *b, int64_t n_tokens, int64_t n_slots,
                         sgl_error *err) {
    model_state *s = &m->st;
    const model_config *c = &m->cfg;
    if (n_tokens > s->cap_tokens) {
        int64_t n = n_tokens;
        s->cap_tokens = 0;
        if (grow_be(m, &s->x, c->dim, n) || grow_be(m, &s->xb, c->dim, n) ||
            grow_be(m, &s->q, c->q_dim, n) || grow_be(m, &s->k, c->kv_dim, n) ||
            grow_be(m, &s->v, c->kv_dim, n) || grow_be(m, &s->att, c->q_dim, n) ||
            grow_be(m, &s->hb, c->ffn_dim, n) || grow_be(m, &s->hb2, c->ffn_dim, n) ||
            grow_host(&s->tok, sizeof(int32_t), n) || grow_host(&s->pos, sizeof(int32_t), n) ||
            grow_host(&s->slot, sizeof(int32_t), n) ||
            grow_host(&s->row_seq, sizeof(int32_t), n) ||
            grow_host(&s->logit_rows, sizeof(int32_t), n))
            return sgl_error_set(err, "model: out of %s memory for a batch of %lld tokens",
                                 m->be->ops->name, (long long)n_tokens);
        s->cap_tokens = n;
    }
    int64_t n_logits = model_batch_logit_rows(b);
    if (!m->be_is_cpu && n_logits > s->cap_logits) {
        s->cap_logits = 0;
        if (grow_be(m, &s->lg, c->vocab, n_logits))
            return sgl_error_set(err, "model: out of %s memory for %lld logits rows",
                                 m->be->ops->name, (long long)n_logits);
        s->cap_logits = n_logits;
    }
    if (b->n_seqs > s->cap_seqs) {
        if (grow_host(&s->seqs, sizeof(kb_seq), b->n_seqs))
            return sgl_error_set(err, "model: out of memory");
        s->cap_seqs = b->n_seqs;
    }
    if (!m->be_is_cpu && n_slots > s->cap_slots) {
        if (grow_host(&s->slots, sizeof(int32_t), n_slots))
            return sgl_error_set(err, "model: out of memory");
        s->cap_slots = n_slots;
    }
    return 0;
}

int model_check_tensor(const gguf_tensor *t, model_tensor_check *out, sgl_error *err) {
    memset(out, 0, sizeof *out);
    if (!kern_type_supported(t->type) && t->type != SGL_DTYPE_F32) return 0;
    int64_t cols = (int64_t)t->ne[0];
    uint64_t rows = t->ne[1] * t->ne[2] * t->ne[3];
    uint64_t rb = sgl_dtype_row_bytes(t->type, (uint64_t)cols);
    float *buf = malloc(sizeof(float) * (size_t)cols);
    if (!buf) return sgl_error_set(err, "out of memory");
    out->checked = true;
    out->n_values = rows * (uint64_t)cols;
    bool seen = false;
    for (uint64_t r = 0; r < rows; r++) {
        const uint8_t *src = (const uint8_t *)t->data + r * rb;
        if (t->type == SGL_DTYPE_F32) memcpy(buf, src, sizeof(float) * (size_t)cols);
        else kern_dequant_row(t->type, src, buf, cols);
        for (int64_t i = 0; i < cols; i++) {
            uint32_t u;
            memcpy(&u, &buf[i], sizeof u);
            bool bad = true;
            if ((u & 0x7f800000u) == 0x7f800000u) {
                if (u & 0x007fffffu) out->n_nan++;
                else out->n_inf++;
            } else {
                double a = fabs((double)buf[i]);
                if (a > out->max_abs) out->max_abs = a;
                if (a > MODEL_VERIFY_MAX_ABS) out->n_big++;
                else bad = false;
            }
            if (bad && !seen) {
                seen = true;
                out->first_bad = r * (uint64_t)cols + (uint64_t)i;
            }
        }
    }
    free(buf);
    return 0;
}

/* ---- forward ------------------------------------------------------------------ */

int64_t model_batch_logit_rows(const model_batch *b) {
    int64_t n = 0;
    for (int32_t i = 0; i < b->n_seqs; i++) {
        int32_t k = b->seqs[i].n_new - b->seqs[i].logits_from;
        if (k > 0) n += k;
    }
    return n;
}

static int check_batch(const sgl_model *m, const kv_pool *kv, const model_batch *b,
                       int64_t *n_tokens, int64_t *max_ctx, int64_t *n_slots, sgl_error *err) {
    const model_config *c = &m->cfg;
    if (!kv || kv->n_layers != c->n_layers || kv->kv_dim != c->kv_dim || !kv->k)
        return sgl_error_set(err, "model_forward: KV pool shape (%d layers, kv_dim %d) does not "
                                  "match the model (%d layers, kv_dim %d)",
                             kv ? kv->n_layers : -1, kv ? kv->kv_dim : -1, c->n_layers, c->kv_dim);
    if (b->n_seqs < 0 || (b->n_seqs > 0 && !b->seqs))
        return sgl_error_set(err, "model_forward: invalid batch (%d sequences)", b->n_seqs);
    int64_t n = 0, mc = 0, items = 0;
    for (int32_t i = 0; i < b->n_seqs; i++) {
        const model_seq *s = &b->seqs[i];
        if (s->n_new < 1 || s->pos0 < 0 || !s->tokens || !s->slots ||
            (int64_t)s->n_ctx != (int64_t)s->pos0 + s->n_new || s->logits_from < 0 ||
            s->logits_from > s->n_new)
            return sgl_error_set(err,
                                 "model_forward: sequence %d: invalid descriptor (n_new %d, pos0 "
                                 "%d, n_ctx %d, logits_from %d)",
                                 i, s->n_new, s->pos0, s->n_ctx, s->logits_from);
        for (int32_t t = 0; t < s->n_new; t++)
            if (s->tokens[t] < 0 || s->tokens[t] >= c->vocab)
                return sgl_error_set(err, "model_forward: sequence %d: token %d = %d out of range "
                                          "(vocab %d)",
                                     i, t, s->tokens[t], c->vocab);
        for (int32_t j = 0; j < s->n_ctx; j++)
            if (s->slots[j] < 0 || s->slots[j] >= kv->n_slots || kv->is_free[s->slots[j]])
                return sgl_error_set(err, "model_forward: sequence %d: slot %d (= %d) is %s", i, j,
                                     s->slots[j],
                                     s->slots[j] < 0 || s->slots[j] >= kv->n_slots
                                         ? "out of range"
                                         : "not allocated");
        n += s->n_new;
        if (s->n_ctx > mc) mc = s->n_ctx;
        items += s->n_ctx;
    }
    if (items > INT32_MAX || n > INT32_MAX)
        return sgl_error_set(err, "model_forward: batch too large");
    *n_tokens = n;
    *max_ctx = mc;
    *n_slots = items;
    return 0;
}


/* Probe ids of the NaN/Inf checks: stage + PROBE_STAGES * layer. */
enum {
    PR_EMBED, PR_NORM_ATT, PR_Q, PR_K, PR_V, PR_ATT, PR_ATT_OUT, PR_NORM_FFN, PR_FFN_GU,
    PR_FFN_DOWN, PROBE_STAGES
};
#define PROBE_OUTPUT 0x7ffffff0

/* Writes where probe id p looks (the message names the first bad one). */
static void probe_where(int p, char *where, size_t cap) {
    if (p == PROBE_OUTPUT) {
        snprintf(where, cap, "the output layer (output_norm.weight, output.weight)");
        return;
    }
    int l = p / PROBE_STAGES, st = p % PROBE_STAGES;
    switch (st) {
    case PR_EMBED: snprintf(where, cap, "the token embedding (token_embd.weight)"); break;
    case PR_NORM_ATT: snprintf(where, cap, "layer %d, attention (blk.%d.attn_norm.weight)", l, l); break;
    case PR_Q: snprintf(where, cap, "layer %d, attention (blk.%d.attn_q)", l, l); break;
    case PR_K: snprintf(where, cap, "layer %d, attention (blk.%d.attn_k)", l, l); break;
    case PR_V: snprintf(where, cap, "layer %d, attention (blk.%d.attn_v)", l, l); break;
    case PR_ATT: snprintf(where, cap, "layer %d, attention (blk.%d.attn_*)", l, l); break;
    case PR_ATT_OUT: snprintf(where, cap, "layer %d, attention (blk.%d.attn_output)", l, l); break;
    case PR_NORM_FFN: snprintf(where, cap, "layer %d, feed-forward (blk.%d.ffn_norm.weight)", l, l); break;
    case PR_FFN_GU: snprintf(where, cap, "layer %d, feed-forward (blk.%d.ffn_gate, ffn_up)", l, l); break;
    default: snprintf(where, cap, "layer %d, feed-forward (blk.%d.ffn_down)", l, l); break;
    }
}

/* x += y; then y = rmsnorm(x) * w when w is set: fused where the backend
 * offers it. */
static void add_norm(kb_backend *be, float *x, float *y, const float *w, int64_t n, int64_t dim,
                     float eps) {
    if (be->ops->add_rmsnorm) {
        be->ops->add_rmsnorm(be, x, y, w, n, dim, eps);
        return;
    }
    be->ops->add(be, x, y, n, dim);
    if (w) be->ops->rmsnorm(be, y, x, w, n, dim, eps);
}

/* Runs the layers and the output projection of a flattened batch (see
 * model_forward) on the backend. Every activation a matmul reads (the
 * normalised rows, q/k/v, the attention output, the gated FFN rows) and the
 * residual stream are checked for NaN/Inf as they are made: a quantizing
 * matmul turns a NaN input into finite garbage, so the logits alone would
 * not show it. The scans cost n x width per stage against n x width x width
 * for the matmuls. A backend that checks synchronously (the CPU) stops at the
 * first bad block; returns 1 then, else 0. */
static int forward_layers(sgl_model *m, const kb_kv *kv, int64_t n, int64_t n_logits,
                          float *lg) {
    const model_config *c = &m->cfg;
    kb_backend *be = m->be;
    const kb_ops *o = be->ops;
    model_state *s = &m->st;
#define PROBE(buf, count, id)                                                                      \
    do {                                                                                           \
        if (o->check_finite(be, buf, (int64_t)(count), id)) return 1;                              \
    } while (0)
    kb_rope rq = {c->n_heads, c->head_dim, c->rope_dim, c->rope_theta, c->rope_freq_scale,
                  c->rope_neox};
    kb_rope rk = rq;
    rk.n_heads = c->n_kv_heads;
    kb_att_shape sh = {c->n_heads, c->n_kv_heads, c->head_dim};
    o->embed(be, &m->d_embd, s->x);
    o->rmsnorm(be, s->xb, s->x, m->d_layers[0].attn_norm, n, c->dim, c->rms_eps);
    PROBE(s->x, n * c->dim, PR_EMBED);
    PROBE(s->xb, n * c->dim, PR_NORM_ATT);
    for (int l = 0; l < c->n_layers; l++) {
        const dev_layer *L = &m->d_layers[l];
        int pb = l * PROBE_STAGES;
        /* q, k, v read the same input: quantized once, one pool run */
        const kb_mat *qkv_w[3] = {&L->wq, &L->wk, &L->wv};
        float *qkv_y[3] = {s->q, s->k, s->v};
        o->matmul_multi(be, qkv_w, qkv_y, 3, s->xb, n);
        if (o->qkv_post) {
            o->qkv_post(be, s->q, s->k, s->v, L->bq, L->bk, L->bv, &rq, &rk, kv, l);
        } else {
            if (L->bq) o->bias_add(be, s->q, L->bq, n, c->q_dim);
            if (L->bk) o->bias_add(be, s->k, L->bk, n, c->kv_dim);
            if (L->bv) o->bias_add(be, s->v, L->bv, n, c->kv_dim);
            o->rope(be, s->q, &rq);
            o->rope(be, s->k, &rk);
            o->kv_store(be, kv, l, s->k, s->v);
        }
        PROBE(s->q, n * c->q_dim, pb + PR_Q);
        PROBE(s->k, n * c->kv_dim, pb + PR_K);
        PROBE(s->v, n * c->kv_dim, pb + PR_V);

        o->attention(be, kv, l, &sh, s->q, s->att);
        PROBE(s->att, n * c->q_dim, pb + PR_ATT);
        o->matmul(be, &L->wo, s->att, n, s->xb);
        add_norm(be, s->x, s->xb, L->ffn_norm, n, c->dim, c->rms_eps);
        PROBE(s->x, n * c->dim, pb + PR_ATT_OUT);
        PROBE(s->xb, n * c->dim, pb + PR_NORM_FFN);

        const kb_mat *gu_w[2] = {&L->w_gate, &L->w_up};
        float *gu_y[2] = {s->hb, s->hb2};
        o->matmul_multi(be, gu_w, gu_y, 2, s->xb, n);
        o->silu_mul(be, s->hb, s->hb2, n, c->ffn_dim);
        PROBE(s->hb, n * c->ffn_dim, pb + PR_FFN_GU);
        o->matmul(be, &L->w_down, s->hb, n, s->xb);
        add_norm(be, s->x, s->xb, l + 1 < c->n_layers ? m->d_layers[l + 1].attn_norm : NULL, n,
                 c->dim, c->rms_eps);
        PROBE(s->x, n * c->dim, pb + PR_FFN_DOWN);
        if (l + 1 < c->n_layers) PROBE(s->xb, n * c->dim, pb + PROBE_STAGES + PR_NORM_ATT);
    }
    if (n_logits == 0) return 0;

    /* Gather the rows asked for, normalise, and project onto the vocabulary. */
    o->gather_rows(be, s->xb, s->x, c->dim);
    o->rmsnorm(be, s->xb, s->xb, m->d_output_norm, n_logits, c->dim, c->rms_eps);
    o->matmul(be, &m->d_output, s->xb, n_logits, lg);
    PROBE(s->xb, n_logits * c->dim, PROBE_OUTPUT);
    PROBE(lg, n_logits * c->vocab, PROBE_OUTPUT);
    return 0;
#undef PROBE
}

/* The backend's view of kv (for a device backend its own store, made on
 * first use and owned by the pool from then on). Returns 0 or -1. */
static int kv_view(sgl_model *m, kv_pool *kv, kb_kv *out, sgl_error *err) {
    const kb_ops *o = m->be->ops;
    if (!o->kv_new) {
        *out = (kb_kv){kv->n_slots, kv->n_layers, kv->kv_dim, kv->k, kv->v};
        return 0;
    }
    if (kv->dev && kv->dev_free != o->kv_free) {
        kv->dev_free(kv->dev);
        kv->dev = NULL;
    }
    if (!kv->dev) {
        kb_kv *d = o->kv_new(m->be, kv->n_slots, kv->n_layers, kv->kv_dim, err);
        if (!d) return -1;
        kv->dev = d;
        kv->dev_free = o->kv_free;
    }
    *out = *(kb_kv *)kv->dev;
    return 0;
}

/* New tokens one forward runs at most; a larger batch runs as consecutive
 * sub-batches of this many rows (forward_split). The activation scratch
 * grows with the rows of a forward: at the engine's default budget of 2,048
 * tokens it was about 240 MiB on a 1B-shaped model, which put sglc's peak
 * memory above llama.cpp's (whose micro-batches are 512 rows). Matmul
 * throughput is flat from a few dozen rows up, so nothing is lost. */
#define FWD_MAX_ROWS 512

/* The sizes of a checked batch: new tokens, longest context, attended
 * slots (their sum over the sequences) and logits rows. */
typedef struct fwd_shape {
    int64_t n, max_ctx, n_slots, n_logits;
} fwd_shape;

static int forward_rows(sgl_model *m, kv_pool *kv, const model_batch *b, const fwd_shape *sh,
                        float *logits, sgl_error *err);

/* Runs b as sub-batches of at most FWD_MAX_ROWS new tokens, in sequence
 * order; a sequence longer than the room left is split into consecutive
 * chunks, the later ones attending to the KV the earlier ones wrote (chunked
 * prefill, which gives the same bits as one forward). Logits rows come out
 * in b's order. b is checked already, so its pieces are too. Returns 0 or
 * -1 (err set). */
static int forward_split(sgl_model *m, kv_pool *kv, const model_batch *b, float *logits,
                         sgl_error *err) {
    model_seq *sub = malloc(sizeof *sub * (size_t)(b->n_seqs + 1));
    if (!sub) return sgl_error_set(err, "model: out of memory");
    int32_t ns = 0;
    fwd_shape sh = {0};
    float *out = logits;
    int rc = 0;
    for (int32_t i = 0; i < b->n_seqs && rc == 0; i++) {
        const model_seq *sq = &b->seqs[i];
        for (int32_t c0 = 0; c0 < sq->n_new && rc == 0;) {
            int32_t len = (int32_t)SGL_MIN(sq->n_new - c0, FWD_MAX_ROWS - sh.n);
            int32_t from = SGL_MIN(SGL_MAX(sq->logits_from - c0, 0), len);
            model_seq *p = &sub[ns++];
            *p = (model_seq){.n_new = len, .tokens = sq->tokens + c0, .pos0 = sq->pos0 + c0,
                             .n_ctx = sq->pos0 + c0 + len, .slots = sq->slots, .logits_from = from};
            sh.n += len;
            sh.max_ctx = SGL_MAX(sh.max_ctx, p->n_ctx);
            sh.n_slots += p->n_ctx;
            sh.n_logits += len - from;
            c0 += len;
            if (sh.n == FWD_MAX_ROWS || (i == b->n_seqs - 1 && c0 == sq->n_new)) {
                model_batch sb = {ns, sub};
                rc = forward_rows(m, kv, &sb, &sh, out, err);
                if (out) out += sh.n_logits * m->cfg.vocab;
                ns = 0;
                sh = (fwd_shape){0};
            }
        }
    }
    free(sub);
    return rc;
}

int model_forward(sgl_model *m, kv_pool *kv, const model_batch *b, float *logits,
                  sgl_error *err) {
    fwd_shape sh = {0};
    if (!b) return sgl_error_set(err, "model_forward: no batch");
    if (check_batch(m, kv, b, &sh.n, &sh.max_ctx, &sh.n_slots, err)) return -1;
    sh.n_logits = model_batch_logit_rows(b);
    if (sh.n_logits > 0 && !logits)
        return sgl_error_set(err, "model_forward: %lld logits rows asked but no buffer",
                             (long long)sh.n_logits);
    if (sh.n == 0) return 0;
    if (sh.n > FWD_MAX_ROWS) return forward_split(m, kv, b, logits, err);
    return forward_rows(m, kv, b, &sh, logits, err);
}

/* model_forward of a checked batch of at most FWD_MAX_ROWS new tokens whose
 * sizes are sh. */
static int forward_rows(sgl_model *m, kv_pool *kv, const model_batch *b, const fwd_shape *sh,
                        float *logits, sgl_error *err) {
    const int64_t n = sh->n, max_ctx = sh->max_ctx, n_slots = sh->n_slots, n_logits = sh->n_logits;
    if (!m->be && model_set_device(m, MODEL_DEVICE_CPU, err)) return -1;
    if (state_reserve(m, b, n, n_slots, err)) return -1;
    model_state *s = &m->st;
    kb_kv kvv;
    if (kv_view(m, kv, &kvv, err)) return -1;

    /* Flatten the batch: per row its token, position, written slot and
     * sequence; per sequence its rows and slots; the rows asked for logits. */
    int64_t row = 0, slot0 = 0, lr = 0;
    for (int32_t i = 0; i < b->n_seqs; i++) {
        const model_seq *sq = &b->seqs[i];
        s->seqs[i] = (kb_seq){(int32_t)row, sq->n_new, sq->pos0, (int32_t)slot0, sq->slots};
        if (!m->be_is_cpu) /* one array to upload */
            memcpy(s->slots + slot0, sq->slots, sizeof(int32_t) * (size_t)sq->n_ctx);
        for (int32_t t = 0; t < sq->n_new; t++) {
            s->tok[row + t] = sq->tokens[t];
            s->pos[row + t] = sq->pos0 + t;
            s->slot[row + t] = sq->slots[sq->pos0 + t];
            s->row_seq[row + t] = i;
        }
        for (int32_t t = sq->logits_from; t < sq->n_new; t++) s->logit_rows[lr++] = (int32_t)(row + t);
        row += sq->n_new;
        slot0 += sq->n_ctx;
    }
    kb_batch kb = {.n_seqs = b->n_seqs, .seqs = s->seqs, .n_rows = n, .tok = s->tok,
                   .pos = s->pos, .wslot = s->slot, .row_seq = s->row_seq,
                   .slots = m->be_is_cpu ? NULL : s->slots,
                   .n_slots = n_slots, .max_ctx = (int32_t)max_ctx, .n_logits = n_logits,
                   .logit_rows = s->logit_rows};
    kb_backend *be = m->be;
    if (be->ops->begin(be, &kb, err)) return -1;
    float *lg = m->be_is_cpu ? logits : s->lg;
    int stopped = forward_layers(m, &kvv, n, n_logits, lg);
    int first_bad = -1;
    if (be->ops->finish(be, &first_bad, err)) return -1;
    if (!m->be_is_cpu && n_logits > 0 && first_bad < 0 &&
        be->ops->download(be, logits, s->lg, sizeof(float) * (size_t)(n_logits * m->cfg.vocab), err))
        return -1;
    if (stopped || first_bad >= 0) {
        if (first_bad < 0) first_bad = PROBE_OUTPUT;
        /* A NaN or Inf weight (or an overflow) would become garbage text:
         * the request fails instead, naming where it first appeared. */
        char where[160];
        probe_where(first_bad, where, sizeof where);
        return sgl_error_set(err, "the model produced NaN/Inf values (no text from this forward); they first appear in %s", where);
    }
    return 0;
}
