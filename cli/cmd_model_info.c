/* cmd_model_info: `sglc model-info [--model PATH] [--json] [--no-tensors]`.
 * Opens a GGUF file with the validating reader and prints its metadata (the
 * llama-family hyper-parameters, tokenizer facts, chat template presence),
 * a table of every tensor and totals per dtype, as text or as JSON. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli/cli.h"
#include "runtime/gguf.h"
#include "runtime/model.h"

/* Hyper-parameters printed after "<arch>." (rope scaling only when present). */
static const char *const hparam_keys[] = {
    "block_count", "context_length", "embedding_length", "feed_forward_length",
    "attention.head_count", "attention.head_count_kv", "rope.freq_base", "rope.dimension_count",
    "attention.layer_norm_rms_epsilon",
};
static const char *const rope_scaling_keys[] = {
    "rope.scaling.type", "rope.scaling.factor", "rope.scaling.original_context_length",
    "rope.scaling.finetuned", "rope.scale_linear",
};
/* Special token ids: short name and the key suffix after "tokenizer.ggml.". */
static const char *const special_ids[][2] = {
    {"bos", "bos_token_id"}, {"eos", "eos_token_id"},
    {"unk", "unknown_token_id"}, {"pad", "padding_token_id"},
};

typedef struct type_total {
    uint64_t tensors, params, bytes;
} type_total;

enum { O_MODEL = 1, O_JSON, O_NO_TENSORS, O_VERIFY };

static const cli_option mi_options[] = {
    {O_MODEL, "--model", NULL, "PATH", "the GGUF file (default: $SGL_MODEL, then models/" SGL_DEFAULT_MODEL_FILE ")"},
    {O_JSON, "--json", NULL, NULL, "print the same information as one JSON object"},
    {O_NO_TENSORS, "--no-tensors", NULL, NULL, "leave out the per-tensor table (totals are still printed)"},
    {O_VERIFY, "--verify", NULL, NULL,
     "instead, decode every weight and report tensors holding NaN,\n"
     "Inf or values beyond +-1e4 (a corrupt scale); exit 1 if any"},
    {0},
};

static const cli_option *const mi_tables[] = {mi_options, cli_device_options, NULL};

static const cli_spec mi_spec = {
    .name = "model-info",
    .synopsis = "sglc model-info [options] [MODEL]",
    .about = "Print a GGUF model's metadata (architecture, hyper-parameters, tokenizer,\n"
             "chat template), a table of its tensors and totals per type. MODEL is the\n"
             "same as --model MODEL.\n",
    .tables = mi_tables,
    .json_id = O_JSON,
};

static uint64_t tensor_params(const gguf_tensor *t) {
    return t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]; /* bounded by the reader */
}

/* A FLOAT32 value as the shortest decimal that reads back as the same float
 * (1e-05, not 9.99999975e-06). */
static double f32_short(double v, char *buf, size_t n) {
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, n, "%.*g", prec, v);
        if ((float)strtod(buf, NULL) == (float)v) break;
    }
    return strtod(buf, NULL);
}

/* Formats a scalar or string value; arrays as "array[type] of N". */
static void value_text(const gguf_kv *kv, char *buf, size_t n) {
    switch (kv->type) {
    case GGUF_VT_INT8: case GGUF_VT_INT16: case GGUF_VT_INT32: case GGUF_VT_INT64:
        snprintf(buf, n, "%" PRId64, kv->v.i);
        break;
    case GGUF_VT_UINT8: case GGUF_VT_UINT16: case GGUF_VT_UINT32: case GGUF_VT_UINT64:
        snprintf(buf, n, "%" PRIu64, kv->v.u);
        break;
    case GGUF_VT_BOOL: snprintf(buf, n, "%s", kv->v.u ? "true" : "false"); break;
    case GGUF_VT_FLOAT32: f32_short(kv->v.f, buf, n); break;
    case GGUF_VT_FLOAT64: snprintf(buf, n, "%.17g", kv->v.f); break;
    case GGUF_VT_STRING:
        snprintf(buf, n, "%.*s", (int)SGL_MIN(kv->v.s.len, (uint64_t)200), kv->v.s.ptr);
        break;
    case GGUF_VT_ARRAY:
        snprintf(buf, n, "array[%s] of %" PRIu64, gguf_vtype_name(kv->v.arr.type), kv->v.arr.n);
        break;
    }
}

static cJSON *value_json(const gguf_kv *kv) {
    if (!kv) return cJSON_CreateNull();
    switch (kv->type) {
    case GGUF_VT_INT8: case GGUF_VT_INT16: case GGUF_VT_INT32: case GGUF_VT_INT64:
        return cJSON_CreateNumber((double)kv->v.i);
    case GGUF_VT_UINT8: case GGUF_VT_UINT16: case GGUF_VT_UINT32: case GGUF_VT_UINT64:
        return cJSON_CreateNumber((double)kv->v.u);
    case GGUF_VT_BOOL: return cJSON_CreateBool(kv->v.u != 0);
    case GGUF_VT_FLOAT32: {
        char buf[64];
        return cJSON_CreateNumber(f32_short(kv->v.f, buf, sizeof buf));
    }
    case GGUF_VT_FLOAT64: return cJSON_CreateNumber(kv->v.f);
    default: {
        char buf[256];
        value_text(kv, buf, sizeof buf);
        return cJSON_CreateString(buf);
    }
    }
}

static const gguf_kv *arch_kv(const gguf_file *f, const char *arch, const char *suffix) {
    char key[256];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return gguf_find(f, key);
}

/* Everything both output forms need, gathered once. */
typedef struct info {
    const gguf_file *f;
    const char *path;
    char *arch, *name, *tok_model, *tok_pre;
    uint64_t n_vocab, n_merges;
    const gguf_kv *tmpl;
    type_total by_type[SGL_DTYPE_MAX_ID];
    type_total all;
} info;

static void info_gather(info *in, const gguf_file *f, const char *path) {
    memset(in, 0, sizeof *in);
    in->f = f;
    in->path = path;
    in->arch = gguf_get_string(f, "general.architecture");
    in->name = gguf_get_string(f, "general.name");
    in->tok_model = gguf_get_string(f, "tokenizer.ggml.model");
    in->tok_pre = gguf_get_string(f, "tokenizer.ggml.pre");
    in->n_vocab = gguf_arr_len(f, "tokenizer.ggml.tokens");
    in->n_merges = gguf_arr_len(f, "tokenizer.ggml.merges");
    in->tmpl = gguf_find(f, "tokenizer.chat_template");
    if (in->tmpl && in->tmpl->type != GGUF_VT_STRING) in->tmpl = NULL;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        type_total *tt = &in->by_type[t->type];
        tt->tensors++;
        tt->params += tensor_params(t);
        tt->bytes += t->nbytes;
        in->all.tensors++;
        in->all.params += tensor_params(t);
        in->all.bytes += t->nbytes;
    }
}

static void info_free(info *in) {
    free(in->arch);
    free(in->name);
    free(in->tok_model);
    free(in->tok_pre);
}

static void shape_text(const gguf_tensor *t, char *buf, size_t n) {
    size_t len = 0;
    buf[0] = 0;
    for (uint32_t d = 0; d < t->n_dims && len < n; d++)
        len += (size_t)snprintf(buf + len, n - len, "%s%" PRIu64, d ? ", " : "[", t->ne[d]);
    if (len < n) snprintf(buf + len, n - len, "]");
}

static void print_text(const info *in, bool tensors) {
    const gguf_file *f = in->f;
    const char *arch = in->arch ? in->arch : "";
    char buf[512];
    printf("file:            %s (%" PRIu64 " bytes)\n", in->path, f->file_size);
    printf("GGUF version:    %" PRIu32 "\n", f->version);
    printf("architecture:    %s\n", in->arch ? in->arch : "-");
    printf("name:            %s\n", in->name ? in->name : "-");
    printf("hyper-parameters:\n");
    for (size_t i = 0; i < SGL_ARRAY_LEN(hparam_keys); i++) {
        const gguf_kv *kv = arch_kv(f, arch, hparam_keys[i]);
        if (kv) value_text(kv, buf, sizeof buf);
        printf("  %-34s %s\n", hparam_keys[i], kv ? buf : "-");
    }
    for (size_t i = 0; i < SGL_ARRAY_LEN(rope_scaling_keys); i++) {
        const gguf_kv *kv = arch_kv(f, arch, rope_scaling_keys[i]);
        if (!kv) continue;
        value_text(kv, buf, sizeof buf);
        printf("  %-34s %s\n", rope_scaling_keys[i], buf);
    }
    printf("tokenizer:       %s (pre: %s)\n", in->tok_model ? in->tok_model : "-",
           in->tok_pre ? in->tok_pre : "-");
    printf("vocabulary:      %" PRIu64 " tokens, %" PRIu64 " merges\n", in->n_vocab, in->n_merges);
    printf("special tokens: ");
    for (size_t i = 0; i < SGL_ARRAY_LEN(special_ids); i++) {
        char key[64];
        snprintf(key, sizeof key, "tokenizer.ggml.%s", special_ids[i][1]);
        int64_t id = gguf_get_int(f, key, -1);
        if (id >= 0) printf(" %s %" PRId64, special_ids[i][0], id);
        else printf(" %s -", special_ids[i][0]);
    }
    printf("\n");
    if (in->tmpl) printf("chat template:   yes (%" PRIu64 " bytes)\n", in->tmpl->v.s.len);
    else printf("chat template:   no\n");
    char dev[320];
    model_default_device_describe(dev, sizeof dev);
    printf("device:          %s\n", dev);
    if (tensors) {
        size_t w = 4;
        for (uint64_t i = 0; i < f->n_tensors; i++) w = SGL_MAX(w, strlen(f->tensors[i].name));
        printf("\ntensors:\n  %-*s  %-22s %-6s %12s\n", (int)w, "name", "shape", "type", "bytes");
        for (uint64_t i = 0; i < f->n_tensors; i++) {
            const gguf_tensor *t = &f->tensors[i];
            shape_text(t, buf, sizeof buf);
            printf("  %-*s  %-22s %-6s %12" PRIu64 "\n", (int)w, t->name, buf, sgl_dtype_name(t->type),
                   t->nbytes);
        }
    }
    printf("\ntotals: %" PRIu64 " tensors, %" PRIu64 " parameters, %" PRIu64 " bytes\n",
           in->all.tensors, in->all.params, in->all.bytes);
    for (int t = 0; t < SGL_DTYPE_MAX_ID; t++) {
        const type_total *tt = &in->by_type[t];
        if (!tt->tensors) continue;
        printf("  %-6s %6" PRIu64 " tensors %12" PRIu64 " parameters %12" PRIu64 " bytes\n",
               sgl_dtype_name(t), tt->tensors, tt->params, tt->bytes);
    }
}

static cJSON *totals_json(const type_total *t) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "tensors", (double)t->tensors);
    cJSON_AddNumberToObject(o, "parameters", (double)t->params);
    cJSON_AddNumberToObject(o, "bytes", (double)t->bytes);
    return o;
}

static cJSON *str_or_null(const char *s) {
    return s ? cJSON_CreateString(s) : cJSON_CreateNull();
}

/* Returns 0, or 1 if building or printing the JSON ran out of memory. */
static int print_json(const info *in, bool tensors) {
    const gguf_file *f = in->f;
    const char *arch = in->arch ? in->arch : "";
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "file", in->path);
    cJSON_AddNumberToObject(root, "file_size", (double)f->file_size);
    cJSON_AddNumberToObject(root, "version", f->version);
    cJSON_AddItemToObject(root, "architecture", str_or_null(in->arch));
    cJSON_AddItemToObject(root, "name", str_or_null(in->name));
    cJSON *hp = cJSON_AddObjectToObject(root, "hyperparameters");
    for (size_t i = 0; i < SGL_ARRAY_LEN(hparam_keys); i++)
        cJSON_AddItemToObject(hp, hparam_keys[i], value_json(arch_kv(f, arch, hparam_keys[i])));
    for (size_t i = 0; i < SGL_ARRAY_LEN(rope_scaling_keys); i++) {
        const gguf_kv *kv = arch_kv(f, arch, rope_scaling_keys[i]);
        if (kv) cJSON_AddItemToObject(hp, rope_scaling_keys[i], value_json(kv));
    }
    cJSON *tok = cJSON_AddObjectToObject(root, "tokenizer");
    cJSON_AddItemToObject(tok, "model", str_or_null(in->tok_model));
    cJSON_AddItemToObject(tok, "pre", str_or_null(in->tok_pre));
    cJSON_AddNumberToObject(tok, "vocab_size", (double)in->n_vocab);
    cJSON_AddNumberToObject(tok, "merges", (double)in->n_merges);
    for (size_t i = 0; i < SGL_ARRAY_LEN(special_ids); i++) {
        char key[64], jkey[32];
        snprintf(key, sizeof key, "tokenizer.ggml.%s", special_ids[i][1]);
        snprintf(jkey, sizeof jkey, "%s_token_id", special_ids[i][0]);
        cJSON_AddItemToObject(tok, jkey, value_json(gguf_find(f, key)));
    }
    cJSON *ct = cJSON_AddObjectToObject(root, "chat_template");
    cJSON_AddBoolToObject(ct, "present", in->tmpl != NULL);
    cJSON_AddNumberToObject(ct, "length", in->tmpl ? (double)in->tmpl->v.s.len : 0);
    if (tensors) {
        cJSON *arr = cJSON_AddArrayToObject(root, "tensors");
        for (uint64_t i = 0; i < f->n_tensors; i++) {
            const gguf_tensor *t = &f->tensors[i];
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "name", t->name);
            cJSON *shape = cJSON_AddArrayToObject(o, "shape");
            for (uint32_t d = 0; d < t->n_dims; d++)
                cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->ne[d]));
            cJSON_AddStringToObject(o, "type", sgl_dtype_name(t->type));
            cJSON_AddNumberToObject(o, "bytes", (double)t->nbytes);
            cJSON_AddNumberToObject(o, "offset", (double)(f->data_offset + t->offset));
            cJSON_AddItemToArray(arr, o);
        }
    }
    cJSON *tot = totals_json(&in->all);
    cJSON *bt = cJSON_AddObjectToObject(tot, "by_type");
    for (int t = 0; t < SGL_DTYPE_MAX_ID; t++)
        if (in->by_type[t].tensors) cJSON_AddItemToObject(bt, sgl_dtype_name(t), totals_json(&in->by_type[t]));
    cJSON_AddItemToObject(root, "totals", tot);
    char *s = cJSON_Print(root);
    cJSON_Delete(root);
    if (!s) return 1;
    printf("%s\n", s);
    cJSON_free(s);
    return 0;
}

/* --verify: every tensor decoded and scanned. Returns 0 (all clean), 1
 * (some bad, or out of memory). */
static int verify(const gguf_file *f, bool json) {
    cJSON *root = json ? cJSON_CreateObject() : NULL, *bad = NULL;
    if (root) bad = cJSON_AddArrayToObject(root, "bad_tensors");
    uint64_t n_checked = 0, n_bad = 0, n_skipped = 0, n_values = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        model_tensor_check c;
        sgl_error err = {{0}};
        if (model_check_tensor(t, &c, &err) < 0) {
            fprintf(stderr, "sglc model-info: error: %s: %s\n", t->name, err.msg);
            cJSON_Delete(root);
            return 1;
        }
        if (!c.checked) {
            n_skipped++;
            if (!json) printf("skipped  %s: no decoder for type %s\n", t->name, sgl_dtype_name(t->type));
            continue;
        }
        n_checked++;
        n_values += c.n_values;
        if (!(c.n_nan || c.n_inf || c.n_big)) continue;
        n_bad++;
        if (json) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "name", t->name);
            cJSON_AddStringToObject(o, "type", sgl_dtype_name(t->type));
            cJSON_AddNumberToObject(o, "nan", (double)c.n_nan);
            cJSON_AddNumberToObject(o, "inf", (double)c.n_inf);
            cJSON_AddNumberToObject(o, "out_of_range", (double)c.n_big);
            cJSON_AddNumberToObject(o, "first_bad_index", (double)c.first_bad);
            cJSON_AddItemToArray(bad, o);
        } else {
            printf("BAD      %s (%s): %" PRIu64 " NaN, %" PRIu64 " Inf, %" PRIu64
                   " beyond +-%g; first at element %" PRIu64 " (row %" PRIu64 ")\n",
                   t->name, sgl_dtype_name(t->type), c.n_nan, c.n_inf, c.n_big, MODEL_VERIFY_MAX_ABS,
                   c.first_bad, c.first_bad / t->ne[0]);
        }
    }
    if (json) {
        cJSON_AddNumberToObject(root, "tensors_checked", (double)n_checked);
        cJSON_AddNumberToObject(root, "tensors_skipped", (double)n_skipped);
        cJSON_AddNumberToObject(root, "values_checked", (double)n_values);
        cJSON_AddBoolToObject(root, "ok", n_bad == 0);
        char *txt = cJSON_PrintUnformatted(root);
        if (txt) puts(txt);
        free(txt);
        cJSON_Delete(root);
        if (!txt) return 1;
    } else {
        printf("verified %" PRIu64 " tensors (%" PRIu64 " values, %" PRIu64 " skipped): %s\n", n_checked,
               n_values, n_skipped, n_bad ? "" : "all finite and in range");
        if (n_bad) printf("%" PRIu64 " tensor%s hold NaN, Inf or out-of-range values\n", n_bad, n_bad == 1 ? "" : "s");
    }
    return n_bad ? 1 : 0;
}

int cmd_model_info(int argc, char **argv) {
    const char *model = NULL;
    bool json = false, tensors = true, do_verify = false;
    cli_args a;
    cli_args_init(&a, &mi_spec, argc, argv);
    for (int id; (id = cli_next(&a)) != CLI_DONE;) {
        switch (id) {
        case O_JSON: json = true; break;
        case O_NO_TENSORS: tensors = false; break;
        case O_VERIFY: do_verify = true; break;
        case O_MODEL:
        case CLI_OPERAND:
            if (model) cli_usage_error(&a, "one model at a time");
            model = a.value;
            break;
        default: cli_device_set("model-info", id, a.value);
        }
    }
    char *path = cli_model_path(model);
    if (!path) {
        if (json) cli_json_error("setup", "no model found (--model PATH or $SGL_MODEL)", NULL, 0, 0);
        return CLI_EXIT_USAGE;
    }
    sgl_error err = {{0}};
    gguf_file *f = gguf_open(path, &err);
    if (!f) {
        /* a missing model is a setup error, as in every command; a file
         * that is there but not a valid GGUF is this command's bad input */
        bool missing = access(path, R_OK) != 0;
        fprintf(stderr, "sglc model-info: error: %s: %s\n", path, err.msg);
        if (json) cli_json_error(missing ? "setup" : "input", err.msg, path, 0, 0);
        free(path);
        return missing ? CLI_EXIT_USAGE : CLI_EXIT_ERROR;
    }
    if (do_verify) {
        int vr = verify(f, json);
        if (fflush(stdout) != 0) vr = 1;
        gguf_close(f);
        free(path);
        return vr;
    }
    info in;
    info_gather(&in, f, path);
    int rc = 0;
    if (json) rc = print_json(&in, tensors);
    else print_text(&in, tensors);
    if (rc) fprintf(stderr, "sglc model-info: error: out of memory\n");
    if (fflush(stdout) != 0) rc = 1;
    info_free(&in);
    gguf_close(f);
    free(path);
    return rc;
}
