/* model: GGUF llama/qwen2 loader and the batched CPU forward (see model.h).
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

#include <math.h>
#include <pthread.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#endif
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* New tokens per attention work item: small enough to balance threads on a
 * single long prefill, large enough to amortise the K/V f16 -> f32 copy. */
#define ATT_TOKEN_BLOCK 64
/* Row-local stages run on the pool from this many rows up. */
#define PAR_MIN_ROWS 4

typedef struct att_scratch {
    float *k;      /* [head_dim][ld] keys of one kv head, f32, transposed (ld < cap_ctx + 16) */
    float *v;      /* [cap_ctx][head_dim] */
    float *score;  /* [3][cap_ctx + 16] scores of up to 3 query heads */
} att_scratch;

/* Run state: activation buffers sized for the largest batch seen so far. */
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
    int32_t *tok;  /* [N] token id of each row */
    int32_t *pos;  /* [N] position of each row */
    int32_t *slot; /* [N] KV slot each row writes */
    int64_t cap_ctx;
    int n_att;     /* = pool threads */
    att_scratch *att_s;
    int64_t cap_items;
    int32_t *item_seq, *item_t0, *item_t1, *item_row0; /* attention work items */
} model_state;

struct sgl_model {
    gguf_file *gguf;
    kern_pool *pool;
    model_config cfg;
    model_weights w;
    float **owned;      /* norm/bias vectors converted to f32 */
    int n_owned;
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

static void state_free(model_state *s) {
    free(s->x);
    free(s->xb);
    free(s->q);
    free(s->k);
    free(s->v);
    free(s->att);
    free(s->hb);
    free(s->hb2);
    free(s->tok);
    free(s->pos);
    free(s->slot);
    if (s->att_s) {
        for (int i = 0; i < s->n_att; i++) {
            free(s->att_s[i].k);
            free(s->att_s[i].v);
            free(s->att_s[i].score);
        }
        free(s->att_s);
    }
    free(s->item_seq);
    free(s->item_t0);
    free(s->item_t1);
    free(s->item_row0);
    memset(s, 0, sizeof *s);
}

void model_free(sgl_model *m) {
    if (!m) return;
    state_free(&m->st);
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

kv_pool *model_kv_pool_new(const sgl_model *m, int32_t n_slots, sgl_error *err) {
    return kv_pool_new(n_slots, m->cfg.n_layers, m->cfg.kv_dim, err);
}

/* ---- scratch ---------------------------------------------------------------- */

static int grow(void *pp, size_t elem, int64_t n) {
    void **p = pp;
    void *q = realloc(*p, elem * (size_t)(n > 0 ? n : 1));
    if (!q) return -1;
    *p = q;
    return 0;
}

static int state_reserve(sgl_model *m, int64_t n_tokens, int64_t n_ctx, int64_t n_items,
                         sgl_error *err) {
    model_state *s = &m->st;
    const model_config *c = &m->cfg;
    if (n_tokens > s->cap_tokens) {
        int64_t n = n_tokens;
        if (grow(&s->x, sizeof(float) * (size_t)c->dim, n) ||
            grow(&s->xb, sizeof(float) * (size_t)c->dim, n) ||
            grow(&s->q, sizeof(float) * (size_t)c->q_dim, n) ||
            grow(&s->k, sizeof(float) * (size_t)c->kv_dim, n) ||
            grow(&s->v, sizeof(float) * (size_t)c->kv_dim, n) ||
            grow(&s->att, sizeof(float) * (size_t)c->q_dim, n) ||
            grow(&s->hb, sizeof(float) * (size_t)c->ffn_dim, n) ||
            grow(&s->hb2, sizeof(float) * (size_t)c->ffn_dim, n) ||
            grow(&s->tok, sizeof(int32_t), n) || grow(&s->pos, sizeof(int32_t), n) ||
            grow(&s->slot, sizeof(int32_t), n))
            return sgl_error_set(err, "model: out of memory for a batch of %lld tokens",
                                 (long long)n_tokens);
        s->cap_tokens = n;
    }
    if (!s->att_s) {
        s->n_att = kern_pool_threads(m->pool);
        if (s->n_att < 1) s->n_att = 1;
        s->att_s = calloc((size_t)s->n_att, sizeof *s->att_s);
        if (!s->att_s) return sgl_error_set(err, "model: out of memory");
    }
    if (n_ctx > s->cap_ctx) {
        for (int i = 0; i < s->n_att; i++) {
            att_scratch *a = &s->att_s[i];
            /* k: [head_dim][ld], ld <= n_ctx + 15 */
            if (grow(&a->k, sizeof(float) * (size_t)c->head_dim, n_ctx + 16) ||
                grow(&a->v, sizeof(float) * (size_t)c->head_dim, n_ctx) ||
                grow(&a->score, sizeof(float), 3 * (n_ctx + 16)))
                return sgl_error_set(err, "model: out of memory for a context of %lld tokens",
                                     (long long)n_ctx);
        }
        s->cap_ctx = n_ctx;
    }
    if (n_items > s->cap_items) {
        if (grow(&s->item_seq, sizeof(int32_t), n_items) ||
            grow(&s->item_t0, sizeof(int32_t), n_items) ||
            grow(&s->item_t1, sizeof(int32_t), n_items) ||
            grow(&s->item_row0, sizeof(int32_t), n_items))
            return sgl_error_set(err, "model: out of memory");
        s->cap_items = n_items;
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

/* ---- forward stages ------------------------------------------------------------ */

typedef struct fwd_ctx {
    sgl_model *m;
    kv_pool *kv;
    const model_batch *b;
    int64_t n;          /* rows (new tokens) */
    int layer;
    const float *norm_w; /* stage_norm / stage_add_norm weight (NULL: add only) */
    int n_items;        /* attention work items (x n_kv_heads) */
    atomic_int next_item;
} fwd_ctx;

/* True when no x[i] is NaN or Inf (by the exponent bits, so it holds
 * under any floating-point flags). */
static bool all_finite(const float *x, int64_t n) {
    const uint32_t *u = (const uint32_t *)(const void *)x;
    uint32_t bad = 0;
    for (int64_t i = 0; i < n; i++) bad |= (u[i] & 0x7f800000u) == 0x7f800000u;
    return !bad;
}

static inline void row_range(int64_t n, int ith, int nth, int64_t *r0, int64_t *r1) {
    *r0 = n * ith / nth;
    *r1 = n * (ith + 1) / nth;
}

static void run_rows(fwd_ctx *fc, kern_task_fn fn) {
    if (fc->n >= PAR_MIN_ROWS && kern_pool_threads(fc->m->pool) > 1)
        kern_pool_run(fc->m->pool, fn, fc);
    else
        fn(fc, 0, 1);
}

/* x[t] = embedding row of tok[t]; xb[t] = rmsnorm(x[t], layer 0 attn_norm). */
static void stage_embed(void *ctx, int ith, int nth) {
    fwd_ctx *fc = ctx;
    const sgl_model *m = fc->m;
    const model_config *c = &m->cfg;
    const model_mat *e = &m->w.token_embd;
    uint64_t rb = sgl_dtype_row_bytes(e->type, (uint64_t)c->dim);
    int64_t r0, r1;
    row_range(fc->n, ith, nth, &r0, &r1);
    for (int64_t t = r0; t < r1; t++) {
        float *x = m->st.x + t * c->dim;
        kern_dequant_row(e->type, (const uint8_t *)e->data + (uint64_t)m->st.tok[t] * rb, x,
                         c->dim);
        kern_rmsnorm(m->st.xb + t * c->dim, x, m->w.layers[0].attn_norm, c->dim, c->rms_eps);
    }
}

/* x[t] += xb[t]; then xb[t] = rmsnorm(x[t], norm_w) when norm_w is set. */
static void stage_add_norm(void *ctx, int ith, int nth) {
    fwd_ctx *fc = ctx;
    const sgl_model *m = fc->m;
    int64_t dim = m->cfg.dim;
    int64_t r0, r1;
    row_range(fc->n, ith, nth, &r0, &r1);
    for (int64_t t = r0; t < r1; t++) {
        float *x = m->st.x + t * dim, *xb = m->st.xb + t * dim;
        kern_add(x, xb, dim);
        if (fc->norm_w) kern_rmsnorm(xb, x, fc->norm_w, dim, m->cfg.rms_eps);
    }
}

/* Bias, rope, and the f16 store of K/V at each row's slot. */
static void stage_qkv_post(void *ctx, int ith, int nth) {
    fwd_ctx *fc = ctx;
    const sgl_model *m = fc->m;
    const model_config *c = &m->cfg;
    const model_layer *L = &m->w.layers[fc->layer];
    int64_t r0, r1;
    row_range(fc->n, ith, nth, &r0, &r1);
    for (int64_t t = r0; t < r1; t++) {
        float *q = m->st.q + t * c->q_dim;
        float *k = m->st.k + t * c->kv_dim;
        float *v = m->st.v + t * c->kv_dim;
        if (L->bq) kern_add(q, L->bq, c->q_dim);
        if (L->bk) kern_add(k, L->bk, c->kv_dim);
        if (L->bv) kern_add(v, L->bv, c->kv_dim);
        int pos = m->st.pos[t];
        kern_rope(q, c->n_heads, c->head_dim, c->rope_dim, pos, c->rope_theta, c->rope_freq_scale,
                  c->rope_neox);
        kern_rope(k, c->n_kv_heads, c->head_dim, c->rope_dim, pos, c->rope_theta,
                  c->rope_freq_scale, c->rope_neox);
        kern_f32_to_f16(kv_pool_k(fc->kv, fc->layer, m->st.slot[t]), k, c->kv_dim);
        kern_f32_to_f16(kv_pool_v(fc->kv, fc->layer, m->st.slot[t]), v, c->kv_dim);
    }
}

/* hb[t] = silu(hb[t]) * hb2[t] */
static void stage_silu(void *ctx, int ith, int nth) {
    fwd_ctx *fc = ctx;
    const sgl_model *m = fc->m;
    int64_t f = m->cfg.ffn_dim;
    int64_t r0, r1;
    row_range(fc->n, ith, nth, &r0, &r1);
    for (int64_t t = r0; t < r1; t++) kern_silu_mul(m->st.hb + t * f, m->st.hb2 + t * f, f);
}

/* ---- attention ------------------------------------------------------------------
 *
 * The inner loops are written so the compiler vectorizes them without
 * reassociating any sum: scores run over keys j in the vector lanes with the
 * head dimension d as the (ordered) outer loop over a transposed K; the
 * weighted V sum runs over d in the lanes with keys j as the ordered outer
 * loop. So every score and every output value has one fixed summation order
 * (d ascending, resp. j ascending) whatever the vector width or the number of
 * keys, and a vector lane computes exactly what the scalar tail would.
 * target_clones picks an AVX2 build of them once per process (ifunc).
 */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define ATT_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define ATT_CLONES
#endif

/* Copies the K rows (transposed: kt[d * ld + j]) and V rows (v[j * hd + d])
 * of keys j < n_keys of one kv head to f32. kbase / vbase point at slot 0's
 * row of the head in the layer; slot s's row is at + s * stride. f16 -> f32
 * is exact, so every version gives the same values. The F16C version takes
 * v == NULL: K only. */
typedef void (*att_gather_fn)(float *restrict kt, int64_t ld, float *restrict v,
                              const uint16_t *kbase, const uint16_t *vbase, int64_t stride,
                              const int32_t *slots, int32_t n_keys, int hd);

static void att_gather_kv_ref(float *restrict kt, int64_t ld, float *restrict v,
                              const uint16_t *kbase, const uint16_t *vbase, int64_t stride,
                              const int32_t *slots, int32_t n_keys, int hd) {
    float tmp[1024]; /* head_dim <= 1024 (checked at load) */
    for (int32_t j = 0; j < n_keys; j++) {
        kern_f16_to_f32(tmp, kbase + (int64_t)slots[j] * stride, hd);
        for (int d = 0; d < hd; d++) kt[(int64_t)d * ld + j] = tmp[d];
        kern_f16_to_f32(v + (int64_t)j * hd, vbase + (int64_t)slots[j] * stride, hd);
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#define ATT_HAVE_F16C 1
/* AVX+F16C build (head_dim a multiple of 8): eight keys at a time, each row
 * converted with vcvtph2ps, the 8x8 tiles of K transposed in registers. */
__attribute__((target("avx2,f16c"))) static void
att_gather_kv_f16c(float *restrict kt, int64_t ld, float *restrict v, const uint16_t *kbase,
                   const uint16_t *vbase, int64_t stride, const int32_t *slots, int32_t n_keys,
                   int hd) {
    for (int32_t j0 = 0; j0 < n_keys; j0 += 8) {
        int nb = n_keys - j0 < 8 ? (int)(n_keys - j0) : 8;
        const uint16_t *kr[8];
        for (int b = 0; b < 8; b++) {
            kr[b] = b < nb ? kbase + (int64_t)slots[j0 + b] * stride : NULL;
            if (b < nb && v) {
                const uint16_t *vh = vbase + (int64_t)slots[j0 + b] * stride;
                float *vr = v + (int64_t)(j0 + b) * hd;
                for (int d = 0; d < hd; d += 8)
                    _mm256_storeu_ps(vr + d, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(vh + d))));
            }
        }
        for (int d = 0; d < hd; d += 8) {
            __m256 r[8];
            for (int b = 0; b < 8; b++)
                r[b] = kr[b] ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(kr[b] + d)))
                             : _mm256_setzero_ps();
            __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
            __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
            __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
            __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
            __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
            __m256 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
            __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
            __m256 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
            __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
            __m256 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
            __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
            __m256 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
            float *o = kt + (int64_t)d * ld + j0;
            _mm256_storeu_ps(o + 0 * ld, _mm256_permute2f128_ps(s0, s4, 0x20));
            _mm256_storeu_ps(o + 1 * ld, _mm256_permute2f128_ps(s1, s5, 0x20));
            _mm256_storeu_ps(o + 2 * ld, _mm256_permute2f128_ps(s2, s6, 0x20));
            _mm256_storeu_ps(o + 3 * ld, _mm256_permute2f128_ps(s3, s7, 0x20));
            _mm256_storeu_ps(o + 4 * ld, _mm256_permute2f128_ps(s0, s4, 0x31));
            _mm256_storeu_ps(o + 5 * ld, _mm256_permute2f128_ps(s1, s5, 0x31));
            _mm256_storeu_ps(o + 6 * ld, _mm256_permute2f128_ps(s2, s6, 0x31));
            _mm256_storeu_ps(o + 7 * ld, _mm256_permute2f128_ps(s3, s7, 0x31));
        }
    }
}
#endif

/* The fast version when the CPU has it (head_dim % 8 == 0), else the ref. */
static att_gather_fn att_gather_kv_fast = att_gather_kv_ref;
/* true: attend_item uses att_heads_avx2 (when head_dim % 8 == 0) */
static bool att_heads_fast = false;
static pthread_once_t att_once = PTHREAD_ONCE_INIT;

static void att_choose(void) {
#ifdef ATT_HAVE_F16C
    __builtin_cpu_init();
    /* F16C by CPUID (leaf 1, ECX bit 29): older clang has no "f16c" name
     * for __builtin_cpu_supports. */
    unsigned a, b, c, d;
    bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
    if (__builtin_cpu_supports("avx2") && f16c) {
        att_gather_kv_fast = att_gather_kv_f16c;
        att_heads_fast = true;
    }
#endif
}

#define ATT_TILE 64

/* s[j] = sum_d q[d] * kt[d * ld + j] for j < nk (q already scaled). Keys
 * go in tiles of 32 held in registers across the d loop; a tile computes
 * exactly what the plain loop (the tail) does. */
ATT_CLONES static void att_scores(float *restrict s, const float *restrict q,
                                  const float *restrict kt, int64_t ld, int32_t nk, int hd) {
    int32_t j0 = 0;
    for (; j0 + ATT_TILE <= nk; j0 += ATT_TILE) {
        float acc[ATT_TILE];
        for (int jj = 0; jj < ATT_TILE; jj++) acc[jj] = q[0] * kt[j0 + jj];
        for (int d = 1; d < hd; d++) {
            const float *row = kt + (int64_t)d * ld + j0;
            float qd = q[d];
            for (int jj = 0; jj < ATT_TILE; jj++) acc[jj] += qd * row[jj];
        }
        for (int jj = 0; jj < ATT_TILE; jj++) s[j0 + jj] = acc[jj];
    }
    for (int32_t j = j0; j < nk; j++) s[j] = q[0] * kt[j];
    for (int d = 1; d < hd; d++) {
        const float *row = kt + (int64_t)d * ld;
        float qd = q[d];
        for (int32_t j = j0; j < nk; j++) s[j] += qd * row[j];
    }
}

/* exp(x) for finite x <= 0 (scores minus their max): range reduction by
 * ln 2 and a degree-6 polynomial, relative error < 3e-7; below about -87
 * the result stays at ~1e-38 (the power of two is clamped in the integer
 * domain) instead of going to 0, which no softmax sum can notice. Plain
 * arithmetic without branches, so the loop vectorizes and every lane gives
 * the same bits as the scalar code. */
static inline float att_exp(float x) {
    float t = x * 1.44269504088896341f + 12582912.0f; /* 1.5 * 2^23: round to integer */
    float n = t - 12582912.0f;
    float r = x - n * 0.693145751953125f;
    r = r - n * 1.428606765330187e-06f;
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (0.16666667f + r * (0.041666668f +
                         r * (0.0083333338f + r * 0.0013888889f)))));
    int32_t ti;
    memcpy(&ti, &t, sizeof ti);
    int32_t k = ti - 0x4B400000; /* n as an integer */
    k = k < -126 ? -126 : k;
    int32_t eb = (k + 127) << 23; /* 2^k */
    float e;
    memcpy(&e, &eb, sizeof e);
    return p * e;
}

/* s[j] = exp(s[j] - mx); returns the sum in j order. */
ATT_CLONES static float att_softmax_exp(float *restrict s, int32_t nk, float mx) {
    for (int32_t j = 0; j < nk; j++) s[j] = att_exp(s[j] - mx);
    float sum = 0.0f;
    for (int32_t j = 0; j < nk; j++) sum += s[j];
    return sum;
}

/* out[d] = (sum_j p[j] * v[j * hd + d]) * inv for d < hd, the sum from 0
 * in j order. Columns go in tiles of ATT_TILE held in registers across
 * the j loop; a tile computes exactly what the plain loop (the tail) does. */
ATT_CLONES static void att_weighted_v(float *restrict out, const float *restrict p,
                                      const float *restrict v, int32_t nk, int hd, float inv) {
    int d0 = 0;
    for (; d0 + ATT_TILE <= hd; d0 += ATT_TILE) {
        float acc[ATT_TILE];
        for (int dd = 0; dd < ATT_TILE; dd++) acc[dd] = 0.0f;
        for (int32_t j = 0; j < nk; j++) {
            const float *row = v + (int64_t)j * hd + d0;
            float pj = p[j];
            for (int dd = 0; dd < ATT_TILE; dd++) acc[dd] += pj * row[dd];
        }
        for (int dd = 0; dd < ATT_TILE; dd++) out[d0 + dd] = acc[dd] * inv;
    }
    if (d0 == hd) return;
    for (int d = d0; d < hd; d++) out[d] = 0.0f;
    for (int32_t j = 0; j < nk; j++) {
        const float *row = v + (int64_t)j * hd;
        float pj = p[j];
        for (int d = d0; d < hd; d++) out[d] += pj * row[d];
    }
    for (int d = d0; d < hd; d++) out[d] *= inv;
}

#ifdef ATT_HAVE_F16C
/* The AVX2 path for NR (1..3) query heads of one kv group at once: the same
 * IEEE operations in the same order as att_scores, the max, att_softmax_exp
 * and att_weighted_v (mul then add, no FMA, sums in key order), so every
 * value is bit-identical to theirs. Each K^T / V vector is loaded once for the
 * NR heads instead of once per head (at long contexts these loads come from
 * L2 and bounded the one-head loops), and the NR sequential softmax sums run
 * interleaved. Scores are computed up to nk rounded up to 8 keys (the gather
 * zero-fills K^T columns up to there); entries past nk are never read. */
#define ATT_AI static inline __attribute__((always_inline, target("avx2,f16c")))

/* s[r * sld + j0 + i] for r < NR, i < 8 * NV: scores over keys j0.. */
ATT_AI void att_sc_tile(const int NR, const int NV, float *s, int64_t sld, const float *q, int hd,
                        const float *kt, int64_t ld, int32_t j0) {
    __m256 acc[3][4];
    for (int r = 0; r < NR; r++) {
        __m256 q0 = _mm256_set1_ps(q[r * hd]);
        for (int v = 0; v < NV; v++) acc[r][v] = _mm256_mul_ps(q0, _mm256_loadu_ps(kt + j0 + 8 * v));
    }
    for (int d = 1; d < hd; d++) {
        const float *row = kt + (int64_t)d * ld + j0;
        __m256 qd[3];
        for (int r = 0; r < NR; r++) qd[r] = _mm256_set1_ps(q[r * hd + d]);
        for (int v = 0; v < NV; v++) {
            __m256 k = _mm256_loadu_ps(row + 8 * v);
            for (int r = 0; r < NR; r++)
                acc[r][v] = _mm256_add_ps(acc[r][v], _mm256_mul_ps(qd[r], k));
        }
    }
    for (int r = 0; r < NR; r++)
        for (int v = 0; v < NV; v++) _mm256_storeu_ps(s + r * sld + j0 + 8 * v, acc[r][v]);
}

/* out[r * hd + d0 + i] = (sum_j p_r[j] v[j][d0 + i]) * inv[r], i < 8 * NV.
 * V rows from v (f32, gathered), or with vh straight from the f16 pool
 * (row of key j at vh + slots[j] * vstride; f16 -> f32 is exact). */
ATT_AI void att_v_tile(const int NR, const int NV, float *out, const float *p, int64_t sld,
                       const float *v, const uint16_t *vh, int64_t vstride, const int32_t *slots,
                       int32_t nk, int hd, const float *inv, int d0) {
    __m256 acc[3][4];
    for (int r = 0; r < NR; r++)
        for (int i = 0; i < NV; i++) acc[r][i] = _mm256_setzero_ps();
    for (int32_t j = 0; j < nk; j++) {
        const float *row = vh ? NULL : v + (int64_t)j * hd + d0;
        const uint16_t *rowh = vh ? vh + (int64_t)slots[j] * vstride + d0 : NULL;
        __m256 pj[3];
        for (int r = 0; r < NR; r++) pj[r] = _mm256_set1_ps(p[r * sld + j]);
        for (int i = 0; i < NV; i++) {
            __m256 x = vh ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(rowh + 8 * i)))
                          : _mm256_loadu_ps(row + 8 * i);
            for (int r = 0; r < NR; r++)
                acc[r][i] = _mm256_add_ps(acc[r][i], _mm256_mul_ps(pj[r], x));
        }
    }
    for (int r = 0; r < NR; r++)
        for (int i = 0; i < NV; i++)
            _mm256_storeu_ps(out + r * hd + d0 + 8 * i,
                             _mm256_mul_ps(acc[r][i], _mm256_set1_ps(inv[r])));
}

/* Max of s[0..n) (no NaN in scores: the result equals the ordered scalar
 * max up to the sign of a zero, which s - max and att_exp do not see). */
ATT_AI float att_max(const float *s, int32_t n) {
    int32_t j = 0;
    float mx = s[0];
    if (n >= 8) {
        __m256 m = _mm256_loadu_ps(s);
        for (j = 8; j + 8 <= n; j += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(s + j));
        float t[8];
        _mm256_storeu_ps(t, m);
        mx = t[0];
        for (int i = 1; i < 8; i++) mx = t[i] > mx ? t[i] : mx;
    }
    for (; j < n; j++) mx = s[j] > mx ? s[j] : mx;
    return mx;
}

ATT_AI void att_heads_nr(const int NR, float *out, const float *qs, float *sc, int64_t sld,
                         const float *kt, int64_t ld, const float *v, const uint16_t *vh,
                         int64_t vstride, const int32_t *slots, int32_t nk, int hd) {
    int32_t nk8 = (nk + 7) & ~7, j0 = 0;
    for (; j0 + 32 <= nk8; j0 += 32) att_sc_tile(NR, 4, sc, sld, qs, hd, kt, ld, j0);
    for (; j0 < nk8; j0 += 8) att_sc_tile(NR, 1, sc, sld, qs, hd, kt, ld, j0);
    float sum[3] = {0.0f, 0.0f, 0.0f}, inv[3];
    for (int r = 0; r < NR; r++) {
        float *s = sc + r * sld;
        float mx = att_max(s, nk);
        for (int32_t j = 0; j < nk; j++) s[j] = att_exp(s[j] - mx);
    }
    for (int32_t j = 0; j < nk; j++)
        for (int r = 0; r < NR; r++) sum[r] += sc[r * sld + j];
    for (int r = 0; r < NR; r++) inv[r] = 1.0f / sum[r];
    int d0 = 0;
    for (; d0 + 32 <= hd; d0 += 32)
        att_v_tile(NR, 4, out, sc, sld, v, vh, vstride, slots, nk, hd, inv, d0);
    for (; d0 < hd; d0 += 8)
        att_v_tile(NR, 1, out, sc, sld, v, vh, vstride, slots, nk, hd, inv, d0);
}

/* nr (1..3) heads: queries qs[r * hd..] (scaled), outputs out[r * hd..];
 * sc holds nr score rows of sld >= nk + 8 floats. hd % 8 == 0. V from v, or
 * when vh is set from the f16 pool (see att_v_tile). */
__attribute__((target("avx2,f16c"))) static void
att_heads_avx2(int nr, float *out, const float *qs, float *sc, int64_t sld, const float *kt,
               int64_t ld, const float *v, const uint16_t *vh, int64_t vstride,
               const int32_t *slots, int32_t nk, int hd) {
    if (nr == 3)
        att_heads_nr(3, out, qs, sc, sld, kt, ld, v, vh, vstride, slots, nk, hd);
    else if (nr == 2)
        att_heads_nr(2, out, qs, sc, sld, kt, ld, v, vh, vstride, slots, nk, hd);
    else
        att_heads_nr(1, out, qs, sc, sld, kt, ld, v, vh, vstride, slots, nk, hd);
}
#endif

/* One work item = (sequence, kv head, block of new tokens). Keys 0..last
 * position of the block are converted to f32 once (K transposed), then for
 * every query head of the group and every token: scores over keys 0..pos,
 * max, exp and sum in key order, then the V rows accumulated in key order.
 * The value of one output row depends only on its query and the keys, not on
 * the item boundaries or on how many keys the item converted. */
static void attend_item(fwd_ctx *fc, int item, att_scratch *sc) {
    const sgl_model *m = fc->m;
    const model_config *c = &m->cfg;
    const model_state *s = &m->st;
    int kvh = item % c->n_kv_heads;
    int it = item / c->n_kv_heads;
    const model_seq *sq = &fc->b->seqs[s->item_seq[it]];
    int32_t t0 = s->item_t0[it], t1 = s->item_t1[it];
    int64_t row0 = s->item_row0[it]; /* batch row of new token 0 of this seq */
    int hd = c->head_dim;
    int n_rep = c->n_heads / c->n_kv_heads;
    int32_t n_keys = sq->pos0 + t1; /* keys 0..pos of the block's last token */
    /* Row stride of the transposed K: just over n_keys (a multiple of 8,
     * never a multiple of 256 floats, so the hd rows do not alias in cache). */
    int64_t ld = ((int64_t)n_keys + 7) & ~(int64_t)7;
    if (ld % 256 == 0) ld += 8;
    att_gather_fn gather = hd % 8 == 0 ? att_gather_kv_fast : att_gather_kv_ref;
    const uint16_t *vbase = kv_pool_v(fc->kv, fc->layer, 0) + kvh * hd;
    /* An item of one token (decode) reads V once: straight from the f16 pool
     * in att_heads_avx2 instead of converting it first. */
    bool v_direct = att_heads_fast && hd % 8 == 0 && t1 - t0 == 1;
    gather(sc->k, ld, v_direct ? NULL : sc->v, kv_pool_k(fc->kv, fc->layer, 0) + kvh * hd, vbase,
           fc->kv->kv_dim, sq->slots, n_keys, hd);
    float scale = 1.0f / sqrtf((float)hd);
    float qs[3 * 1024]; /* head_dim <= 1024 (checked at load) */
#ifdef ATT_HAVE_F16C
    if (att_heads_fast && hd % 8 == 0) {
        /* sld = ld >= nk rounded up to 8; 3 * ld <= 3 * (cap_ctx + 16) */
        for (int32_t t = t0; t < t1; t++) {
            int32_t nk = sq->pos0 + t + 1;
            int64_t row = row0 + t;
            for (int h0 = 0; h0 < n_rep; h0 += 3) {
                int nr = n_rep - h0 < 3 ? n_rep - h0 : 3;
                int h = kvh * n_rep + h0;
                const float *q = s->q + row * c->q_dim + (int64_t)h * hd;
                for (int d = 0; d < nr * hd; d++) qs[d] = q[d] * scale;
                att_heads_avx2(nr, s->att + row * c->q_dim + (int64_t)h * hd, qs, sc->score, ld,
                               sc->k, ld, sc->v, v_direct ? vbase : NULL, fc->kv->kv_dim,
                               sq->slots, nk, hd);
            }
        }
        return;
    }
#endif
    for (int32_t t = t0; t < t1; t++) {
        int32_t nk = sq->pos0 + t + 1;
        int64_t row = row0 + t;
        for (int r = 0; r < n_rep; r++) {
            int h = kvh * n_rep + r;
            const float *q = s->q + row * c->q_dim + (int64_t)h * hd;
            float *out = s->att + row * c->q_dim + (int64_t)h * hd;
            for (int d = 0; d < hd; d++) qs[d] = q[d] * scale;
            att_scores(sc->score, qs, sc->k, ld, nk, hd);
            float mx = sc->score[0];
            for (int32_t j = 1; j < nk; j++) mx = sc->score[j] > mx ? sc->score[j] : mx;
            float sum = att_softmax_exp(sc->score, nk, mx);
            att_weighted_v(out, sc->score, sc->v, nk, hd, 1.0f / sum);
        }
    }
}

static void stage_attention(void *ctx, int ith, int nth) {
    fwd_ctx *fc = ctx;
    (void)nth;
    att_scratch *sc = &fc->m->st.att_s[ith];
    for (;;) {
        /* last items first: a sequence's later token blocks attend to more
         * keys, so the longest items start early and the tail is short */
        int item = fc->n_items - 1 -
                   atomic_fetch_add_explicit(&fc->next_item, 1, memory_order_relaxed);
        if (item < 0) break;
        attend_item(fc, item, sc);
    }
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
                       int64_t *n_tokens, int64_t *max_ctx, int64_t *n_items, sgl_error *err) {
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
        items += (s->n_new + ATT_TOKEN_BLOCK - 1) / ATT_TOKEN_BLOCK;
    }
    if (items * c->n_kv_heads > INT32_MAX)
        return sgl_error_set(err, "model_forward: batch too large");
    *n_tokens = n;
    *max_ctx = mc;
    *n_items = items;
    return 0;
}

/* Runs the layers and the output projection of a flattened batch (see
 * model_forward). Every activation a matmul reads (the normalised rows,
 * q/k/v, the attention output, the gated FFN rows) and the residual stream
 * are checked for NaN/Inf as they are made: a quantizing matmul turns a
 * NaN input into finite garbage, so the logits alone would not show it.
 * The scans cost n x width per stage against n x width x width for the
 * matmuls (well under 1%). Stops at the first block that makes a value
 * non-finite, naming it in where, and returns 1; 0 when all stayed finite. */
static int forward_layers(sgl_model *m, kv_pool *kv, const model_batch *b, float *logits, int64_t n,
                          int64_t n_items, int64_t n_logits, char *where, size_t where_cap) {
    const model_config *c = &m->cfg;
    const model_weights *w = &m->w;
    model_state *s = &m->st;
    int64_t row;
#define PROBE(buf, count, ...)                                                                     \
    do {                                                                                           \
        if (!all_finite(buf, (int64_t)(count))) {                                                  \
            snprintf(where, where_cap, __VA_ARGS__);                                               \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)
    fwd_ctx fc = {.m = m, .kv = kv, .b = b, .n = n};
    fc.n_items = (int)(n_items * c->n_kv_heads);
    run_rows(&fc, stage_embed);
    PROBE(s->x, n * c->dim, "the token embedding (token_embd.weight)");
    PROBE(s->xb, n * c->dim, "layer 0, attention (blk.0.attn_norm.weight)");
    for (int l = 0; l < c->n_layers; l++) {
        const model_layer *L = &w->layers[l];
        fc.layer = l;
        /* q, k, v read the same input: quantized once, one pool run */
        kern_mm_out qkv[3] = {{L->wq.type, L->wq.data, L->wq.rows, s->q},
                              {L->wk.type, L->wk.data, L->wk.rows, s->k},
                              {L->wv.type, L->wv.data, L->wv.rows, s->v}};
        kern_matmul_multi(m->pool, qkv, 3, c->dim, s->xb, n);
        run_rows(&fc, stage_qkv_post);
        PROBE(s->q, n * c->q_dim, "layer %d, attention (blk.%d.attn_q)", l, l);
        PROBE(s->k, n * c->kv_dim, "layer %d, attention (blk.%d.attn_k)", l, l);
        PROBE(s->v, n * c->kv_dim, "layer %d, attention (blk.%d.attn_v)", l, l);

        atomic_store(&fc.next_item, 0);
        if (fc.n_items > 1 && kern_pool_threads(m->pool) > 1)
            kern_pool_run(m->pool, stage_attention, &fc);
        else
            stage_attention(&fc, 0, 1);

        PROBE(s->att, n * c->q_dim, "layer %d, attention (blk.%d.attn_*)", l, l);
        kern_matmul(m->pool, L->wo.type, L->wo.data, L->wo.rows, c->q_dim, s->att, n, s->xb);
        fc.norm_w = L->ffn_norm;
        run_rows(&fc, stage_add_norm);
        PROBE(s->x, n * c->dim, "layer %d, attention (blk.%d.attn_output)", l, l);
        PROBE(s->xb, n * c->dim, "layer %d, feed-forward (blk.%d.ffn_norm.weight)", l, l);

        kern_mm_out gu[2] = {{L->w_gate.type, L->w_gate.data, L->w_gate.rows, s->hb},
                             {L->w_up.type, L->w_up.data, L->w_up.rows, s->hb2}};
        kern_matmul_multi(m->pool, gu, 2, c->dim, s->xb, n);
        run_rows(&fc, stage_silu);
        PROBE(s->hb, n * c->ffn_dim, "layer %d, feed-forward (blk.%d.ffn_gate, ffn_up)", l, l);
        kern_matmul(m->pool, L->w_down.type, L->w_down.data, L->w_down.rows, c->ffn_dim, s->hb, n,
                    s->xb);
        fc.norm_w = l + 1 < c->n_layers ? w->layers[l + 1].attn_norm : NULL;
        run_rows(&fc, stage_add_norm);
        PROBE(s->x, n * c->dim, "layer %d, feed-forward (blk.%d.ffn_down)", l, l);
        if (l + 1 < c->n_layers)
            PROBE(s->xb, n * c->dim, "layer %d, attention (blk.%d.attn_norm.weight)", l + 1, l + 1);
    }
    if (n_logits == 0) return 0;

    /* Gather the rows asked for, normalise, and project onto the vocabulary. */
    int64_t out_row = 0;
    row = 0;
    for (int32_t i = 0; i < b->n_seqs; i++) {
        const model_seq *sq = &b->seqs[i];
        for (int32_t t = sq->logits_from; t < sq->n_new; t++, out_row++)
            kern_rmsnorm(s->xb + out_row * c->dim, s->x + (row + t) * c->dim, w->output_norm,
                         c->dim, c->rms_eps);
        row += sq->n_new;
    }
    kern_matmul(m->pool, w->output.type, w->output.data, w->output.rows, c->dim, s->xb, n_logits,
                logits);
    if (!all_finite(s->xb, n_logits * c->dim) || !all_finite(logits, n_logits * c->vocab)) {
        snprintf(where, where_cap, "the output layer (output_norm.weight, output.weight)");
        return 1;
    }
    return 0;
#undef PROBE
}

int model_forward(sgl_model *m, kv_pool *kv, const model_batch *b, float *logits,
                  sgl_error *err) {
    int64_t n = 0, max_ctx = 0, n_items = 0;
    if (!b) return sgl_error_set(err, "model_forward: no batch");
    if (check_batch(m, kv, b, &n, &max_ctx, &n_items, err)) return -1;
    int64_t n_logits = model_batch_logit_rows(b);
    if (n_logits > 0 && !logits)
        return sgl_error_set(err, "model_forward: %lld logits rows asked but no buffer",
                             (long long)n_logits);
    if (n == 0) return 0;
    pthread_once(&att_once, att_choose);
    if (state_reserve(m, n, max_ctx, n_items, err)) return -1;
    model_state *s = &m->st;

    /* Flatten the batch: per row its token, position and written slot; per
     * attention item its sequence and token range. */
    int64_t row = 0, it = 0;
    for (int32_t i = 0; i < b->n_seqs; i++) {
        const model_seq *sq = &b->seqs[i];
        for (int32_t t = 0; t < sq->n_new; t++) {
            s->tok[row + t] = sq->tokens[t];
            s->pos[row + t] = sq->pos0 + t;
            s->slot[row + t] = sq->slots[sq->pos0 + t];
        }
        for (int32_t t0 = 0; t0 < sq->n_new; t0 += ATT_TOKEN_BLOCK, it++) {
            s->item_seq[it] = i;
            s->item_t0[it] = t0;
            s->item_t1[it] = SGL_MIN(t0 + ATT_TOKEN_BLOCK, sq->n_new);
            s->item_row0[it] = (int32_t)row;
        }
        row += sq->n_new;
    }
    /* A NaN or Inf weight (or an overflow) would become garbage text:
     * the request fails instead, naming where it first appeared. */
    char where[160];
    if (forward_layers(m, kv, b, logits, n, n_items, n_logits, where, sizeof where)) {
        return sgl_error_set(err, "the model produced NaN/Inf values (no text from this forward); they first appear in %s", where);
    }
    return 0;
}
