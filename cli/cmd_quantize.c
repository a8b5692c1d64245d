/* cmd_quantize: `sglc quantize IN.gguf OUT.gguf TYPE` re-encodes a GGUF
 * model's weight matrices as TYPE (F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K,
 * Q6_K) with the GGUF reference rounding (kernels/cpu/quant_gguf.h), keeping
 * every metadata key and the tensor order. Which tensors change, and the
 * fallbacks for rows that do not fit a type's block, are in docs/quantize.md.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/cli.h"
#include "kernels/cpu/quant_gguf.h"
#include "kernels/kernels.h"
#include "runtime/gguf.h"
#include "util/util.h"

static const struct {
    const char *name;
    sgl_dtype type;
    uint32_t file_type; /* general.file_type (llama.cpp's numbering) */
} targets[] = {
    {"F16", SGL_DTYPE_F16, 1},   {"BF16", SGL_DTYPE_BF16, 32}, {"Q8_0", SGL_DTYPE_Q8_0, 7},
    {"Q4_0", SGL_DTYPE_Q4_0, 2}, {"Q4_1", SGL_DTYPE_Q4_1, 3},  {"Q4_K", SGL_DTYPE_Q4_K, 14},
    {"Q5_K", SGL_DTYPE_Q5_K, 16}, {"Q6_K", SGL_DTYPE_Q6_K, 18},
};
#define N_TARGETS ((int)(sizeof targets / sizeof targets[0]))

enum { O_QUIET = 1 };

static const cli_option quantize_options[] = {
    {O_QUIET, "--quiet", NULL, NULL, "print nothing on success"},
    {0},
};

static const cli_option *const quantize_tables[] = {quantize_options, NULL};

static const cli_spec quantize_spec = {
    .name = "quantize",
    .synopsis = "sglc quantize [options] IN.gguf OUT.gguf TYPE",
    .about = "Re-encodes the weight matrices of IN as TYPE and writes OUT (metadata kept).\n"
             "TYPE: F16 BF16 Q8_0 Q4_0 Q4_1 Q4_K Q5_K Q6_K\n"
             "1-D tensors (norms, biases) are stored F32; every 2-D '.weight' tensor,\n"
             "embeddings and output head included, gets TYPE. Rows whose length is not a\n"
             "multiple of TYPE's block use a fallback: Q4_K to Q4_1, Q5_K/Q6_K to Q8_0,\n"
             "32-blocks to F16. A tensor already of its target type is copied unchanged.\n",
    .tables = quantize_tables,
};

/* The type tensor t gets when the file's target is `want`. */
static sgl_dtype target_of(const gguf_tensor *t, sgl_dtype want) {
    size_t nl = strlen(t->name);
    bool weight = nl > 7 && strcmp(t->name + nl - 7, ".weight") == 0;
    if (t->n_dims < 2 || !weight) return SGL_DTYPE_F32;
    uint64_t row = t->ne[0];
    if (row % (uint64_t)sgl_dtype_block_elems(want) == 0) return want;
    sgl_dtype fb = want == SGL_DTYPE_Q4_K ? SGL_DTYPE_Q4_1 : SGL_DTYPE_Q8_0;
    if (sgl_dtype_block_elems(want) == 256 && row % 32 == 0) return fb;
    return SGL_DTYPE_F16;
}

/* Copies one metadata entry. Returns 0, 1 when its type cannot be written
 * (the caller warns), -1 when out of memory. */
static int copy_kv(gguf_writer *w, const gguf_file *f, const gguf_kv *kv) {
    switch (kv->type) {
    case GGUF_VT_UINT32:
        return gguf_writer_set_u32(w, kv->key, (uint32_t)kv->v.u) ? -1 : 0;
    case GGUF_VT_INT32:
        return gguf_writer_set_i32(w, kv->key, (int32_t)kv->v.i) ? -1 : 0;
    case GGUF_VT_FLOAT32:
        return gguf_writer_set_f32(w, kv->key, (float)kv->v.f) ? -1 : 0;
    case GGUF_VT_BOOL:
        return gguf_writer_set_bool(w, kv->key, kv->v.u != 0) ? -1 : 0;
    case GGUF_VT_STRING: {
        char *s = malloc(kv->v.s.len + 1);
        if (!s) return -1;
        memcpy(s, kv->v.s.ptr, kv->v.s.len);
        s[kv->v.s.len] = 0;
        int rc = gguf_writer_set_str(w, kv->key, s);
        free(s);
        return rc ? -1 : 0;
    }
    case GGUF_VT_ARRAY:
        break;
    default:
        return 1;
    }
    uint64_t n = kv->v.arr.n;
    int rc = 0;
    if (kv->v.arr.type == GGUF_VT_STRING) {
        char **v = calloc(n ? n : 1, sizeof *v);
        rc = v ? 0 : -1;
        for (uint64_t i = 0; i < n && !rc; i++) {
            gguf_str s = gguf_arr_str(f, kv->key, i);
            if (!(v[i] = malloc(s.len + 1))) rc = -1;
            else {
                memcpy(v[i], s.ptr, s.len);
                v[i][s.len] = 0;
            }
        }
        if (!rc && gguf_writer_set_arr_str(w, kv->key, (const char *const *)v, n)) rc = -1;
        for (uint64_t i = 0; v && i < n; i++) free(v[i]);
        free(v);
    } else if (kv->v.arr.type == GGUF_VT_INT32) {
        int32_t *v = malloc((n ? n : 1) * sizeof *v);
        if (!v) return -1;
        for (uint64_t i = 0; i < n; i++) v[i] = (int32_t)gguf_arr_int(f, kv->key, i, 0);
        rc = gguf_writer_set_arr_i32(w, kv->key, v, n) ? -1 : 0;
        free(v);
    } else if (kv->v.arr.type == GGUF_VT_FLOAT32) {
        float *v = malloc((n ? n : 1) * sizeof *v);
        if (!v) return -1;
        for (uint64_t i = 0; i < n; i++) v[i] = (float)gguf_arr_float(f, kv->key, i, 0);
        rc = gguf_writer_set_arr_f32(w, kv->key, v, n) ? -1 : 0;
        free(v);
    } else {
        rc = 1;
    }
    return rc;
}

/* Re-encodes tensor t as `to` into a malloc'd buffer (caller frees), or
 * returns NULL with err set. */
static void *convert(const gguf_tensor *t, sgl_dtype to, uint64_t *out_bytes, sgl_error *err) {
    uint64_t row = t->ne[0], rows = 1;
    for (uint32_t d = 1; d < t->n_dims; d++) rows *= t->ne[d];
    uint64_t rb = sgl_dtype_row_bytes(to, row), src_rb = sgl_dtype_row_bytes(t->type, row);
    if (!rb || !src_rb) {
        sgl_error_set(err, "tensor '%s': rows of %" PRIu64 " do not fit %s", t->name, row, sgl_dtype_name(to));
        return NULL;
    }
    uint8_t *out = malloc(rb * rows);
    float *buf = malloc(row * sizeof *buf);
    if (!out || !buf) {
        free(out);
        free(buf);
        sgl_error_set(err, "tensor '%s': out of memory", t->name);
        return NULL;
    }
    for (uint64_t r = 0; r < rows; r++) {
        kern_dequant_row(t->type, (const uint8_t *)t->data + r * src_rb, buf, (int64_t)row);
        kern_quantize_row_gguf(to, buf, out + r * rb, (int64_t)row);
    }
    free(buf);
    *out_bytes = rb * rows;
    return out;
}

int cmd_quantize(int argc, char **argv) {
    const char *pos[3];
    int npos = 0;
    bool quiet = false;
    cli_args a;
    cli_args_init(&a, &quantize_spec, argc, argv);
    for (int id; (id = cli_next(&a)) != CLI_DONE;) {
        if (id == O_QUIET) quiet = true;
        else if (id == CLI_OPERAND) {
            if (npos == 3) cli_usage_error(&a, "unexpected argument '%s'", a.value);
            pos[npos++] = a.value;
        }
    }
    if (npos != 3) cli_usage_error(&a, "give IN.gguf OUT.gguf TYPE");
    int ti = -1;
    for (int i = 0; i < N_TARGETS; i++)
        if (!strcasecmp(pos[2], targets[i].name)) ti = i;
    if (ti < 0) {
        cli_usage_error(&a, "unknown TYPE '%s' (F16 BF16 Q8_0 Q4_0 Q4_1 Q4_K Q5_K Q6_K)", pos[2]);
    }
    sgl_dtype want = targets[ti].type;
    sgl_error err = {0};
    gguf_file *f = gguf_open(pos[0], &err);
    if (!f) {
        fprintf(stderr, "sglc quantize: error: %s\n", err.msg);
        return 1;
    }
    gguf_writer *w = gguf_writer_new();
    int rc = w ? 0 : -1;
    for (uint64_t i = 0; i < f->n_kv && !rc; i++) {
        const gguf_kv *kv = &f->kv[i];
        if (!strcmp(kv->key, "general.file_type") || !strcmp(kv->key, "general.quantization_version") ||
            !strcmp(kv->key, "general.alignment"))
            continue;
        int c = copy_kv(w, f, kv);
        if (c < 0) rc = -1;
        else if (c > 0)
            fprintf(stderr, "sglc quantize: warning: %s: key '%s' (%s) not copied: the writer has no such type\n",
                    pos[0], kv->key, gguf_vtype_name(kv->type));
    }
    if (!rc) rc = gguf_writer_set_u32(w, "general.file_type", targets[ti].file_type);
    if (!rc) rc = gguf_writer_set_u32(w, "general.quantization_version", 2);
    if (rc) sgl_error_set(&err, "out of memory");
    uint64_t in_bytes = 0, out_bytes = 0, count[SGL_DTYPE_MAX_ID] = {0};
    for (uint64_t i = 0; i < f->n_tensors && !rc; i++) {
        const gguf_tensor *t = &f->tensors[i];
        sgl_dtype to = target_of(t, want);
        uint64_t nb = t->nbytes;
        void *owned = NULL;
        const void *data = t->data;
        if (to != t->type) {
            if (!kern_type_supported(t->type)) {
                if (t->n_dims >= 2 || !sgl_dtype_known(t->type)) {
                    rc = sgl_error_set(&err, "%s: tensor '%s' has type %s, which cannot be decoded", pos[0],
                                       t->name, sgl_dtype_name(t->type) ? sgl_dtype_name(t->type) : "unknown");
                    break;
                }
                to = t->type; /* a 1-D non-float tensor (ids, counts): kept */
            } else {
                if (!(owned = convert(t, to, &nb, &err))) {
                    rc = -1;
                    break;
                }
                data = owned;
            }
        }
        if (gguf_writer_add_tensor(w, t->name, to, t->n_dims, t->ne, data))
            rc = sgl_error_set(&err, "tensor '%s': cannot add to the output", t->name);
        free(owned);
        in_bytes += t->nbytes;
        out_bytes += nb;
        count[to]++;
    }
    uint64_t n_tensors = f->n_tensors;
    gguf_close(f); /* OUT may be IN: the writer holds copies of everything */
    if (!rc) rc = gguf_writer_write_file(w, pos[1], &err);
    gguf_writer_free(w);
    if (rc) {
        fprintf(stderr, "sglc quantize: error: %s\n", err.msg[0] ? err.msg : "out of memory");
        return 1;
    }
    if (!quiet) {
        printf("sglc quantize: %s -> %s (%s): %" PRIu64 " tensors,", pos[0], pos[1], targets[ti].name, n_tensors);
        for (int t = 0; t < SGL_DTYPE_MAX_ID; t++)
            if (count[t]) printf(" %s %" PRIu64, sgl_dtype_name(t), count[t]);
        printf("; tensor data %.1f MiB -> %.1f MiB\n", (double)in_bytes / 1048576.0, (double)out_bytes / 1048576.0);
    }
    return 0;
}
