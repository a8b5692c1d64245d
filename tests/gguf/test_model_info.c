/* test_model_info: runs `sglc model-info` (argv[1]) on a model (argv[2]; the
 * word "real" means $SGL_TEST_MODEL, skipping when it is missing) and on
 * corrupted copies of it, and checks the text and JSON output against what
 * the GGUF reader says about the same file, plus the exit statuses. */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/gguf.h"
#include "tests/test.h"

static const char *sglc, *model;
static gguf_file *f;
static char tmpdir[] = "/tmp/sgl-model-info-XXXXXX";

typedef struct run_result {
    int status;
    char *out, *err;
} run_result;

static char *slurp(const char *path) {
    size_t len;
    char *s = sgl_read_file(path, &len, NULL);
    return s ? s : sgl_strdup("");
}

/* Runs `sglc model-info ARGS` (args already shell-quoted by the caller). */
static run_result run(const char *args) {
    char cmd[4096], out[512], err[512];
    snprintf(out, sizeof out, "%s/out", tmpdir);
    snprintf(err, sizeof err, "%s/err", tmpdir);
    snprintf(cmd, sizeof cmd, "'%s' model-info %s >'%s' 2>'%s'", sglc, args, out, err);
    int st = system(cmd);
    run_result r = {WIFEXITED(st) ? WEXITSTATUS(st) : -1, slurp(out), slurp(err)};
    return r;
}

static void run_free(run_result *r) {
    free(r->out);
    free(r->err);
}

#define CHECK_HAS(hay, needle) CHECK_MSG(strstr((hay), (needle)), "missing \"%s\" in:\n%s", (needle), (hay))

static void test_text(void) {
    char args[1024], line[512];
    snprintf(args, sizeof args, "--model '%s'", model);
    run_result r = run(args);
    CHECK_INT(r.status, 0);
    CHECK_STR(r.err, "");
    char *arch = gguf_get_string(f, "general.architecture");
    snprintf(line, sizeof line, "\narchitecture:    %s\n", arch);
    CHECK_HAS(r.out, line);
    snprintf(line, sizeof line, "\nGGUF version:    %" PRIu32 "\n", f->version);
    CHECK_HAS(r.out, line);
    char key[256];
    snprintf(key, sizeof key, "%s.block_count", arch);
    snprintf(line, sizeof line, "  block_count                        %" PRId64 "\n", gguf_get_int(f, key, -1));
    CHECK_HAS(r.out, line);
    snprintf(key, sizeof key, "%s.attention.head_count_kv", arch);
    snprintf(line, sizeof line, "  attention.head_count_kv            %" PRId64 "\n", gguf_get_int(f, key, -1));
    CHECK_HAS(r.out, line);
    CHECK_HAS(r.out, "  attention.layer_norm_rms_epsilon   1e-05\n");
    CHECK_HAS(r.out, "tokenizer:       gpt2 (pre: smollm)\n");
    snprintf(line, sizeof line, "vocabulary:      %" PRIu64 " tokens, %" PRIu64 " merges\n",
             gguf_arr_len(f, "tokenizer.ggml.tokens"), gguf_arr_len(f, "tokenizer.ggml.merges"));
    CHECK_HAS(r.out, line);
    CHECK_HAS(r.out, "special tokens:  bos 1 eos 2 unk 0 pad 2\n");
    snprintf(line, sizeof line, "chat template:   yes (%" PRIu64 " bytes)\n",
             gguf_find(f, "tokenizer.chat_template")->v.s.len);
    CHECK_HAS(r.out, line);
    /* one table row per tensor, in file order */
    uint64_t params = 0, bytes = 0;
    const char *p = r.out;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        params += t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
        bytes += t->nbytes;
        snprintf(line, sizeof line, "  %s ", t->name);
        const char *row = strstr(p, line);
        CHECK_MSG(row, "no row for tensor %s", t->name);
        if (!row) break;
        const char *eol = strchr(row, '\n');
        char shape[128], tail[64];
        if (t->n_dims == 1) snprintf(shape, sizeof shape, "[%" PRIu64 "]", t->ne[0]);
        else snprintf(shape, sizeof shape, "[%" PRIu64 ", %" PRIu64 "]", t->ne[0], t->ne[1]);
        snprintf(tail, sizeof tail, " %" PRIu64 "\n", t->nbytes);
        char *rowcopy = sgl_strndup(row, (size_t)(eol - row + 1));
        CHECK_HAS(rowcopy, shape);
        CHECK_HAS(rowcopy, sgl_dtype_name(t->type));
        CHECK_HAS(rowcopy, tail);
        free(rowcopy);
        p = eol;
    }
    snprintf(line, sizeof line, "totals: %" PRIu64 " tensors, %" PRIu64 " parameters, %" PRIu64 " bytes\n",
             f->n_tensors, params, bytes);
    CHECK_HAS(r.out, line);
    CHECK_HAS(r.out, "\n  Q8_0 ");
    free(arch);
    run_free(&r);

    snprintf(args, sizeof args, "--no-tensors --model='%s'", model);
    r = run(args);
    CHECK_INT(r.status, 0);
    CHECK(strstr(r.out, "token_embd.weight") == NULL);
    CHECK_HAS(r.out, line); /* totals stay */
    run_free(&r);
}

static void test_json(void) {
    char args[1024];
    snprintf(args, sizeof args, "--json --model '%s'", model);
    run_result r = run(args);
    CHECK_INT(r.status, 0);
    cJSON *j = cJSON_Parse(r.out);
    CHECK_MSG(j, "output is not JSON:\n%.300s", r.out);
    if (j) {
        CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(j, "architecture")), "llama");
        CHECK_INT(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "version")), f->version);
        cJSON *hp = cJSON_GetObjectItem(j, "hyperparameters");
        CHECK_INT(cJSON_GetNumberValue(cJSON_GetObjectItem(hp, "embedding_length")),
                  gguf_get_int(f, "llama.embedding_length", -1));
        CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(hp, "attention.layer_norm_rms_epsilon")) == 1e-5);
        cJSON *tok = cJSON_GetObjectItem(j, "tokenizer");
        CHECK_INT(cJSON_GetNumberValue(cJSON_GetObjectItem(tok, "vocab_size")), gguf_arr_len(f, "tokenizer.ggml.tokens"));
        CHECK_INT(cJSON_GetNumberValue(cJSON_GetObjectItem(tok, "merges")), gguf_arr_len(f, "tokenizer.ggml.merges"));
        CHECK_INT(cJSON_GetNumberValue(cJSON_GetObjectItem(tok, "bos_token_id")), 1);
        CHECK(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "chat_template"), "present")));
        cJSON *ts = cJSON_GetObjectItem(j, "tensors");
        CHECK_INT(cJSON_GetArraySize(ts), f->n_tensors);
        for (uint64_t i = 0; i < f->n_tensors && i < (uint64_t)cJSON_GetArraySize(ts); i++) {
            cJSON *t = cJSON_GetArrayItem(ts, (int)i);
            CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(t, "name")), f->tensors[i].name);
            CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(t, "type")), sgl_dtype_name(f->tensors[i].type));
            CHECK_INT(cJSON_GetNumberValue(cJSON_GetObjectItem(t, "bytes")), f->tensors[i].nbytes);
            cJSON *shape = cJSON_GetObjectItem(t, "shape");
            CHECK_INT(cJSON_GetArraySize(shape), f->tensors[i].n_dims);
            CHECK_INT(cJSON_GetNumberValue(cJSON_GetArrayItem(shape, 0)), f->tensors[i].ne[0]);
        }
        cJSON *tot = cJSON_GetObjectItem(j, "totals");
        CHECK_INT(cJSON_GetNumberValue(cJSON_GetObjectItem(tot, "tensors")), f->n_tensors);
        cJSON *bt = cJSON_GetObjectItem(tot, "by_type");
        double sum = 0;
        cJSON *e;
        cJSON_ArrayForEach(e, bt) sum += cJSON_GetNumberValue(cJSON_GetObjectItem(e, "tensors"));
        CHECK_INT(sum, f->n_tensors);
        cJSON_Delete(j);
    }
    run_free(&r);
}

/* Writes the first n bytes of the model (with byte `at` set to v if at >= 0). */
static void write_variant(const char *path, uint64_t n, int64_t at, uint8_t v) {
    FILE *fp = fopen(path, "wb");
    CHECK(fp);
    if (!fp) return;
    uint8_t *c = malloc(n);
    memcpy(c, f->map, n);
    if (at >= 0) c[at] = v;
    fwrite(c, 1, n, fp);
    fclose(fp);
    free(c);
}

static void test_errors(void) {
    char bad[512], args[1024], want[1024];
    snprintf(bad, sizeof bad, "%s/bad.gguf", tmpdir);
    snprintf(args, sizeof args, "--model '%s'", bad);

    write_variant(bad, f->file_size - 1, -1, 0); /* last tensor's data cut short */
    run_result r = run(args);
    CHECK_INT(r.status, 1);
    snprintf(want, sizeof want, "sglc model-info: error: %s: tensor '", bad);
    CHECK_HAS(r.err, want);
    CHECK_HAS(r.err, "extends past end of file");
    CHECK_STR(r.out, "");
    run_free(&r);

    write_variant(bad, f->data_offset / 2, -1, 0); /* cut in the metadata */
    r = run(args);
    CHECK_INT(r.status, 1);
    CHECK_HAS(r.err, "sglc model-info: error: ");
    run_free(&r);

    write_variant(bad, 4096 < f->file_size ? 4096 : f->file_size, 0, 'X');
    r = run(args);
    CHECK_INT(r.status, 1);
    snprintf(want, sizeof want, "sglc model-info: error: %s: not a GGUF file (bad magic", bad);
    CHECK_HAS(r.err, want);
    run_free(&r);

    write_variant(bad, 4096 < f->file_size ? 4096 : f->file_size, 4, 1); /* version 1 */
    r = run(args);
    CHECK_INT(r.status, 1);
    CHECK_HAS(r.err, "unsupported GGUF version 1");
    run_free(&r);

    unlink(bad);
    r = run(args);
    CHECK_INT(r.status, 2); /* a missing model: setup error, as in every command */
    CHECK_HAS(r.err, "cannot open");
    run_free(&r);

    r = run("--frobnicate");
    CHECK_INT(r.status, 2);
    CHECK_HAS(r.err, "unknown option '--frobnicate'");
    CHECK_HAS(r.err, "usage: sglc model-info [options] [MODEL]");
    run_free(&r);

    r = run("--help");
    CHECK_INT(r.status, 0);
    CHECK_HAS(r.out, "usage: sglc model-info [options] [MODEL]");
    CHECK_HAS(r.out, "--no-tensors");
    run_free(&r);
}

/* A sparse file made with the writer: rope scaling keys shown, missing
 * tokenizer facts shown as "-" / null, no chat template. */
static void test_sparse_file(void) {
    char path[512], args[1024];
    snprintf(path, sizeof path, "%s/sparse.gguf", tmpdir);
    gguf_writer *w = gguf_writer_new();
    gguf_writer_set_str(w, "general.architecture", "llama");
    gguf_writer_set_u32(w, "llama.block_count", 1);
    gguf_writer_set_str(w, "llama.rope.scaling.type", "linear");
    gguf_writer_set_f32(w, "llama.rope.scaling.factor", 4.0f);
    float v[32] = {0};
    uint64_t ne[1] = {32};
    gguf_writer_add_tensor(w, "x", SGL_DTYPE_F32, 1, ne, v);
    sgl_error err = {{0}};
    CHECK_MSG(gguf_writer_write_file(w, path, &err) == 0, "%s", err.msg);
    gguf_writer_free(w);
    snprintf(args, sizeof args, "--model '%s'", path);
    run_result r = run(args);
    CHECK_INT(r.status, 0);
    CHECK_HAS(r.out, "  block_count                        1\n");
    CHECK_HAS(r.out, "  context_length                     -\n");
    CHECK_HAS(r.out, "  rope.scaling.type                  linear\n");
    CHECK_HAS(r.out, "  rope.scaling.factor                4\n");
    CHECK_HAS(r.out, "name:            -\n");
    CHECK_HAS(r.out, "tokenizer:       - (pre: -)\n");
    CHECK_HAS(r.out, "vocabulary:      0 tokens, 0 merges\n");
    CHECK_HAS(r.out, "special tokens:  bos - eos - unk - pad -\n");
    CHECK_HAS(r.out, "chat template:   no\n");
    CHECK_HAS(r.out, "totals: 1 tensors, 32 parameters, 128 bytes\n");
    run_free(&r);
    snprintf(args, sizeof args, "--json --model '%s'", path);
    r = run(args);
    cJSON *j = cJSON_Parse(r.out);
    CHECK(j);
    if (j) {
        cJSON *hp = cJSON_GetObjectItem(j, "hyperparameters");
        CHECK(cJSON_IsNull(cJSON_GetObjectItem(hp, "context_length")));
        CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(hp, "rope.scaling.type")), "linear");
        CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(hp, "rope.scaling.factor")) == 4.0);
        CHECK(cJSON_IsNull(cJSON_GetObjectItem(j, "name")));
        CHECK(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "tokenizer"), "bos_token_id")));
        CHECK(cJSON_IsFalse(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "chat_template"), "present")));
        cJSON_Delete(j);
    }
    run_free(&r);
    unlink(path);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: test_model_info SGLC MODEL.gguf|real\n");
        return 1;
    }
    sglc = argv[1];
    model = argv[2];
    if (!strcmp(model, "real")) {
        const char *ci = getenv("CI");
        model = getenv("SGL_TEST_MODEL");
        if (!model || access(model, R_OK) != 0) {
            if (ci && !strcmp(ci, "true")) {
                fprintf(stderr, "real model missing and CI=true\n");
                return 1;
            }
            TEST_SKIP_ALL("real model not found (SGL_TEST_MODEL=%s)", model ? model : "");
        }
    }
    sgl_error err = {{0}};
    f = gguf_open(model, &err);
    if (!f) {
        fprintf(stderr, "%s: %s\n", model, err.msg);
        return 1;
    }
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    TEST_RUN(test_text);
    TEST_RUN(test_json);
    TEST_RUN(test_errors);
    TEST_RUN(test_sparse_file);
    char out[600];
    snprintf(out, sizeof out, "%s/out", tmpdir);
    unlink(out);
    snprintf(out, sizeof out, "%s/err", tmpdir);
    unlink(out);
    rmdir(tmpdir);
    gguf_close(f);
    return TEST_DONE();
}
