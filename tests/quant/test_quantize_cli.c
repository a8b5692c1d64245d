/* test_quantize_cli: `sglc quantize` on the tiny model for every TYPE: the
 * output keeps every metadata key and tensor (same names and shapes), sets
 * general.file_type, stores 1-D tensors F32 and 2-D weights as TYPE (or the
 * documented fallback where rows do not fit TYPE's block), every value is
 * within the type's documented bound of the input's, and the model loads.
 * Also: bad TYPE / missing input give a non-zero exit and no crash.
 * argv: SGLC TINY.gguf */
#include <stdint.h>
#include <stdlib.h>
#include <sys/wait.h>

#include "kernels/kernels.h"
#include "runtime/gguf.h"
#include "runtime/model.h"
#include "tests/quant/bounds.h"
#include "tests/test.h"

static const char *sglc, *tiny;
static char out_path[256];

static int run(const char *args) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' quantize %s >/dev/null 2>&1", sglc, args);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static sgl_dtype expected_type(const gguf_tensor *t, sgl_dtype want) {
    if (t->n_dims < 2) return SGL_DTYPE_F32;
    if (t->ne[0] % (uint64_t)sgl_dtype_block_elems(want) == 0) return want;
    if (sgl_dtype_block_elems(want) == 256 && t->ne[0] % 32 == 0)
        return want == SGL_DTYPE_Q4_K ? SGL_DTYPE_Q4_1 : SGL_DTYPE_Q8_0;
    return SGL_DTYPE_F16;
}

static void check_type(const char *name, sgl_dtype want, int64_t file_type) {
    char args[600];
    snprintf(args, sizeof args, "'%s' '%s' %s", tiny, out_path, name);
    CHECK_MSG(run(args) == 0, "sglc quantize ... %s failed", name);
    sgl_error err = {0};
    gguf_file *in = gguf_open(tiny, &err), *out = gguf_open(out_path, &err);
    CHECK_MSG(in && out, "%s: %s", name, err.msg);
    if (!in || !out) {
        gguf_close(in);
        gguf_close(out);
        return;
    }
    CHECK_INT(out->n_kv, in->n_kv);
    CHECK_INT(gguf_get_int(out, "general.file_type", -1), file_type);
    CHECK_INT(gguf_arr_len(out, "tokenizer.ggml.tokens"), gguf_arr_len(in, "tokenizer.ggml.tokens"));
    CHECK_INT(out->n_tensors, in->n_tensors);
    for (uint64_t i = 0; i < in->n_tensors && i < out->n_tensors; i++) {
        const gguf_tensor *a = &in->tensors[i], *b = &out->tensors[i];
        CHECK(strcmp(a->name, b->name) == 0);
        CHECK_INT(a->n_dims, b->n_dims);
        for (int d = 0; d < GGUF_MAX_DIMS; d++) CHECK_INT(a->ne[d], b->ne[d]);
        sgl_dtype et = expected_type(a, want);
        CHECK_MSG(b->type == et, "%s: tensor %s is %s, expected %s", name, a->name, sgl_dtype_name(b->type),
                  sgl_dtype_name(et));
        if (a->type == b->type) {
            CHECK_MSG(a->nbytes == b->nbytes && memcmp(a->data, b->data, a->nbytes) == 0,
                      "%s: tensor %s of unchanged type not copied as is", name, a->name);
            continue;
        }
        uint64_t row = a->ne[0], rows = a->nbytes / sgl_dtype_row_bytes(a->type, row);
        float *x = malloc(row * sizeof *x), *y = malloc(row * sizeof *y);
        int span = sgl_dtype_block_elems(b->type) == 1 ? 32 : sgl_dtype_block_elems(b->type);
        int bad = 0;
        for (uint64_t r = 0; r < rows; r++) {
            kern_dequant_row(a->type, (const uint8_t *)a->data + r * sgl_dtype_row_bytes(a->type, row), x,
                             (int64_t)row);
            kern_dequant_row(b->type, (const uint8_t *)b->data + r * sgl_dtype_row_bytes(b->type, row), y,
                             (int64_t)row);
            for (uint64_t j = 0; j < row; j++) {
                uint64_t b0 = j / (uint64_t)span * (uint64_t)span;
                double lim = bound(b->type, x + b0, span, x[j]);
                if (!(fabs((double)y[j] - x[j]) <= lim) && bad++ == 0)
                    TEST_FAIL_("%s: %s[%llu][%llu]: %g became %g (bound %g)", name, a->name,
                               (unsigned long long)r, (unsigned long long)j, x[j], y[j], lim);
            }
        }
        free(x);
        free(y);
    }
    gguf_close(in);
    gguf_close(out);
    sgl_model *m = model_load(out_path, 1, &err);
    CHECK_MSG(m != NULL, "%s: the quantized model does not load: %s", name, err.msg);
    model_free(m);
}

static void test_all_types(void) {
    check_type("F16", SGL_DTYPE_F16, 1);
    check_type("BF16", SGL_DTYPE_BF16, 32);
    check_type("Q8_0", SGL_DTYPE_Q8_0, 7);
    check_type("Q4_0", SGL_DTYPE_Q4_0, 2);
    check_type("q4_1", SGL_DTYPE_Q4_1, 3);
    check_type("Q4_K", SGL_DTYPE_Q4_K, 14);
    check_type("Q5_K", SGL_DTYPE_Q5_K, 16);
    check_type("Q6_K", SGL_DTYPE_Q6_K, 18);
}

static void test_bad_input(void) {
    char args[600];
    snprintf(args, sizeof args, "'%s' '%s' Q3_K", tiny, out_path);
    CHECK_INT(run(args), 2);
    snprintf(args, sizeof args, "'%s' '%s'", tiny, out_path);
    CHECK_INT(run(args), 2);
    snprintf(args, sizeof args, "/nonexistent/in.gguf '%s' Q8_0", out_path);
    CHECK_INT(run(args), 1);
    snprintf(args, sizeof args, "'%s' /nonexistent/dir/out.gguf Q8_0", tiny);
    CHECK_INT(run(args), 1);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: test_quantize_cli SGLC TINY.gguf\n");
        return 2;
    }
    sglc = argv[1];
    tiny = argv[2];
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(out_path, sizeof out_path, "%s/sgl-quantize-test-%d.gguf", tmp, (int)getpid());
    TEST_RUN(test_all_types);
    TEST_RUN(test_bad_input);
    remove(out_path);
    return TEST_DONE();
}
