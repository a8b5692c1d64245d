/* test_gguf: GGUF writer -> reader round trips, lookups, and the reader's
 * handling of corrupted files (hand-built byte images, every truncation
 * point, random byte flips). Files are built in memory; a corrupted image is
 * copied into an exactly-sized heap block so sanitizers see any over-read. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/gguf.h"
#include "tests/test.h"

/* ---- raw byte builder for hand-made (possibly invalid) files ---------------- */

typedef struct bytes {
    uint8_t *p;
    size_t len, cap;
} bytes;

static void b_put(bytes *b, const void *src, size_t n) {
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p) abort();
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}
static void b_le(bytes *b, uint64_t v, int n) {
    uint8_t t[8];
    for (int i = 0; i < n; i++) t[i] = (uint8_t)(v >> (8 * i));
    b_put(b, t, (size_t)n);
}
static void b_u32(bytes *b, uint32_t v) { b_le(b, v, 4); }
static void b_u64(bytes *b, uint64_t v) { b_le(b, v, 8); }
static void b_str(bytes *b, const char *s) {
    b_u64(b, strlen(s));
    b_put(b, s, strlen(s));
}
static void b_header(bytes *b, uint32_t version, uint64_t n_t, uint64_t n_kv) {
    b_put(b, "GGUF", 4);
    b_u32(b, version);
    b_u64(b, n_t);
    b_u64(b, n_kv);
}
static void b_kv_u32(bytes *b, const char *key, uint32_t v) {
    b_str(b, key);
    b_u32(b, GGUF_VT_UINT32);
    b_u32(b, v);
}
static void b_kv_str(bytes *b, const char *key, const char *v) {
    b_str(b, key);
    b_u32(b, GGUF_VT_STRING);
    b_str(b, v);
}
/* One tensor info of up to 4 dims. */
static void b_tensor(bytes *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                     uint64_t off) {
    b_str(b, name);
    b_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) b_u64(b, ne[d]);
    b_u32(b, type);
    b_u64(b, off);
}
static void b_pad(bytes *b, size_t align) {
    while (b->len % align) b_le(b, 0, 1);
}
static void b_zeros(bytes *b, size_t n) {
    for (size_t i = 0; i < n; i++) b_le(b, 0, 1);
}

/* Opens a copy of buf[0..len) in an exactly-sized heap block. Returns the
 * file (the block is kept alive through *keep) or NULL with err set. */
static gguf_file *open_copy(const void *buf, size_t len, void **keep, sgl_error *err) {
    *keep = malloc(len ? len : 1);
    if (len) memcpy(*keep, buf, len);
    return gguf_open_memory(*keep, len, err);
}

/* Expects opening b to fail with a message containing phrase. */
static void expect_fail_(const bytes *b, const char *phrase, int line) {
    sgl_error err = {{0}};
    void *keep;
    gguf_file *f = open_copy(b->p, b->len, &keep, &err);
    if (f) {
        TEST_FAIL_("line %d: file opened but should fail with '%s'", line, phrase);
        gguf_close(f);
    } else if (getenv("SGL_TEST_VERBOSE")) {
        printf("  line %d: %s\n", line, err.msg);
    }
    if (!f && !strstr(err.msg, phrase)) {
        TEST_FAIL_("line %d: error \"%s\" does not contain \"%s\"", line, err.msg, phrase);
    }
    free(keep);
    free(b->p);
}
#define EXPECT_FAIL(b, phrase) expect_fail_(&(b), phrase, __LINE__)

/* Touches every string, array element and tensor byte of an open file, so a
 * sanitizer build catches a pointer the reader let out of bounds. */
static uint64_t touch_all(const gguf_file *f) {
    uint64_t sum = 0;
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const gguf_kv *kv = &f->kv[i];
        sum += strlen(kv->key);
        if (kv->type == GGUF_VT_STRING)
            for (uint64_t j = 0; j < kv->v.s.len; j++) sum += (uint8_t)kv->v.s.ptr[j];
        if (kv->type == GGUF_VT_ARRAY) {
            for (uint64_t j = 0; j < kv->v.arr.n; j++) {
                if (kv->v.arr.type == GGUF_VT_STRING) {
                    gguf_str s = gguf_arr_str(f, kv->key, j);
                    for (uint64_t k = 0; k < s.len; k++) sum += (uint8_t)s.ptr[k];
                } else {
                    sum += (uint64_t)gguf_arr_int(f, kv->key, j, 0);
                    sum += (uint64_t)gguf_arr_float(f, kv->key, j, 0);
                }
            }
        }
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const uint8_t *p = f->tensors[i].data;
        for (uint64_t j = 0; j < f->tensors[i].nbytes; j++) sum += p[j];
    }
    return sum;
}

/* ---- a valid file through the writer ----------------------------------------- */

static const char *const test_strs[] = {"<|endoftext|>", "", "\xc4\xa0t", "h\xc3\xa9llo wo rld"};
static const int32_t test_i32[] = {3, -1, 0, 2147483647, -2147483647 - 1};
static const float test_f32[] = {1.5f, -0.25f, 1e-5f};

typedef struct ttensor {
    const char *name;
    sgl_dtype type;
    uint32_t n_dims;
    uint64_t ne[4];
} ttensor;

static const ttensor test_tensors[] = {
    {"token_embd.weight", SGL_DTYPE_Q8_0, 2, {64, 5, 1, 1}},
    {"blk.0.attn_norm.weight", SGL_DTYPE_F32, 1, {7, 1, 1, 1}},
    {"blk.0.ffn_up.weight", SGL_DTYPE_F16, 2, {8, 3, 1, 1}},
    {"blk.0.attn_q.weight", SGL_DTYPE_Q4_1, 3, {32, 1, 2, 1}},
    {"blk.0.ffn_gate.weight", SGL_DTYPE_Q4_0, 2, {32, 3, 1, 1}},
    {"four.d", SGL_DTYPE_BF16, 4, {2, 2, 2, 2}},
};

static uint8_t tensor_byte(size_t t, uint64_t j) {
    return (uint8_t)(t * 31 + j * 7 + (j >> 8));
}

static gguf_writer *make_writer(void) {
    gguf_writer *w = gguf_writer_new();
    CHECK(w);
    CHECK_INT(gguf_writer_set_str(w, "general.architecture", "llama"), 0);
    CHECK_INT(gguf_writer_set_str(w, "general.name", "test model"), 0);
    CHECK_INT(gguf_writer_set_str(w, "empty.string", ""), 0);
    CHECK_INT(gguf_writer_set_u32(w, "llama.block_count", 30), 0);
    CHECK_INT(gguf_writer_set_u32(w, "big.u32", 4000000000u), 0);
    CHECK_INT(gguf_writer_set_i32(w, "neg.i32", -7), 0);
    CHECK_INT(gguf_writer_set_f32(w, "llama.rope.freq_base", 10000.0f), 0);
    CHECK_INT(gguf_writer_set_f32(w, "eps", 1e-5f), 0);
    CHECK_INT(gguf_writer_set_bool(w, "flag.true", true), 0);
    CHECK_INT(gguf_writer_set_bool(w, "flag.false", false), 0);
    CHECK_INT(gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", test_strs, SGL_ARRAY_LEN(test_strs)), 0);
    CHECK_INT(gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", test_i32, SGL_ARRAY_LEN(test_i32)), 0);
    CHECK_INT(gguf_writer_set_arr_f32(w, "scores", test_f32, SGL_ARRAY_LEN(test_f32)), 0);
    CHECK_INT(gguf_writer_set_arr_str(w, "empty.array", NULL, 0), 0);
    for (size_t t = 0; t < SGL_ARRAY_LEN(test_tensors); t++) {
        const ttensor *tt = &test_tensors[t];
        uint64_t nb = sgl_dtype_row_bytes(tt->type, tt->ne[0]) * tt->ne[1] * tt->ne[2] * tt->ne[3];
        uint8_t *d = malloc(nb);
        for (uint64_t j = 0; j < nb; j++) d[j] = tensor_byte(t, j);
        CHECK_INT(gguf_writer_add_tensor(w, tt->name, tt->type, tt->n_dims, tt->ne, d), 0);
        free(d);
    }
    return w;
}

static void make_valid(uint8_t **buf, uint64_t *len) {
    gguf_writer *w = make_writer();
    sgl_error err = {{0}};
    CHECK_INT(gguf_writer_to_memory(w, buf, len, &err), 0);
    gguf_writer_free(w);
}

static void test_round_trip(void) {
    uint8_t *buf;
    uint64_t len;
    make_valid(&buf, &len);
    sgl_error err = {{0}};
    gguf_file *f = gguf_open_memory(buf, len, &err);
    CHECK_MSG(f, "open failed: %s", err.msg);
    if (!f) {
        free(buf);
        return;
    }
    CHECK_INT(f->version, 3);
    CHECK_INT(f->alignment, 32);
    CHECK_INT(f->n_kv, 14);
    CHECK_INT(f->n_tensors, SGL_ARRAY_LEN(test_tensors));
    CHECK_INT(f->data_offset % 32, 0);
    CHECK_INT(f->file_size, len);
    CHECK_INT(len % 32, 0);
    /* keys in insertion order, with types */
    CHECK_STR(f->kv[0].key, "general.architecture");
    CHECK_INT(f->kv[0].type, GGUF_VT_STRING);
    CHECK_STR(f->kv[13].key, "empty.array");
    char *s = gguf_get_string(f, "general.architecture");
    CHECK_STR(s, "llama");
    free(s);
    s = gguf_get_string(f, "general.name");
    CHECK_STR(s, "test model");
    free(s);
    s = gguf_get_string(f, "empty.string");
    CHECK_STR(s, "");
    free(s);
    CHECK(gguf_get_string(f, "llama.block_count") == NULL); /* wrong type */
    CHECK(gguf_get_string(f, "missing") == NULL);
    CHECK_INT(gguf_get_int(f, "llama.block_count", -1), 30);
    CHECK_INT(gguf_find(f, "llama.block_count")->type, GGUF_VT_UINT32);
    CHECK_INT(gguf_get_int(f, "big.u32", -1), 4000000000ll);
    CHECK_INT(gguf_get_int(f, "neg.i32", 0), -7);
    CHECK_INT(gguf_get_int(f, "flag.true", 5), 1);
    CHECK_INT(gguf_get_int(f, "general.name", 5), 5);
    CHECK_INT(gguf_get_int(f, "missing", 9), 9);
    CHECK_NEAR(gguf_get_float(f, "llama.rope.freq_base", 0), 10000.0, 0);
    CHECK(gguf_get_float(f, "eps", 0) == (double)1e-5f);
    CHECK_NEAR(gguf_get_float(f, "llama.block_count", 0), 30.0, 0); /* integers convert */
    CHECK_NEAR(gguf_get_float(f, "general.name", 2.5), 2.5, 0);
    CHECK(gguf_get_bool(f, "flag.true", false) == true);
    CHECK(gguf_get_bool(f, "flag.false", true) == false);
    CHECK(gguf_get_bool(f, "llama.block_count", true) == true); /* not a bool: default */
    /* arrays */
    CHECK_INT(gguf_arr_len(f, "tokenizer.ggml.tokens"), SGL_ARRAY_LEN(test_strs));
    for (uint64_t i = 0; i < SGL_ARRAY_LEN(test_strs); i++) {
        gguf_str e = gguf_arr_str(f, "tokenizer.ggml.tokens", i);
        CHECK_INT(e.len, strlen(test_strs[i]));
        CHECK(e.ptr && memcmp(e.ptr, test_strs[i], e.len) == 0);
    }
    CHECK(gguf_arr_str(f, "tokenizer.ggml.tokens", SGL_ARRAY_LEN(test_strs)).ptr == NULL);
    CHECK(gguf_arr_str(f, "tokenizer.ggml.token_type", 0).ptr == NULL); /* not strings */
    CHECK(gguf_arr_str(f, "general.name", 0).ptr == NULL);              /* not an array */
    CHECK_INT(gguf_arr_len(f, "tokenizer.ggml.token_type"), SGL_ARRAY_LEN(test_i32));
    for (uint64_t i = 0; i < SGL_ARRAY_LEN(test_i32); i++)
        CHECK_INT(gguf_arr_int(f, "tokenizer.ggml.token_type", i, 99), test_i32[i]);
    CHECK_INT(gguf_arr_int(f, "tokenizer.ggml.token_type", 5, 99), 99);
    CHECK_INT(gguf_arr_len(f, "scores"), 3);
    for (uint64_t i = 0; i < 3; i++) CHECK(gguf_arr_float(f, "scores", i, 0) == (double)test_f32[i]);
    CHECK_NEAR(gguf_arr_float(f, "scores", 3, -1), -1, 0);
    CHECK_INT(gguf_arr_int(f, "scores", 0, 42), 42); /* float elements are not integers */
    CHECK_INT(gguf_arr_len(f, "empty.array"), 0);
    CHECK_INT(gguf_arr_len(f, "general.name"), 0);
    CHECK_INT(gguf_arr_len(f, "missing"), 0);
    CHECK_INT(gguf_find(f, "empty.array")->v.arr.type, GGUF_VT_STRING);
    /* tensors */
    for (size_t t = 0; t < SGL_ARRAY_LEN(test_tensors); t++) {
        const ttensor *tt = &test_tensors[t];
        const gguf_tensor *g = gguf_find_tensor(f, tt->name);
        CHECK_MSG(g == &f->tensors[t], "tensor %s", tt->name);
        if (!g) continue;
        CHECK_STR(g->name, tt->name);
        CHECK_INT(g->type, tt->type);
        CHECK_INT(g->n_dims, tt->n_dims);
        for (int d = 0; d < 4; d++) CHECK_INT(g->ne[d], tt->ne[d]);
        uint64_t nb = sgl_dtype_row_bytes(tt->type, tt->ne[0]) * tt->ne[1] * tt->ne[2] * tt->ne[3];
        CHECK_INT(g->nbytes, nb);
        CHECK_INT(g->offset % 32, 0);
        CHECK((const uint8_t *)g->data == buf + f->data_offset + g->offset);
        int same = 1;
        for (uint64_t j = 0; j < nb; j++) same &= ((const uint8_t *)g->data)[j] == tensor_byte(t, j);
        CHECK_MSG(same, "tensor %s data differs", tt->name);
    }
    CHECK(gguf_find_tensor(f, "nope") == NULL);
    CHECK(gguf_find(f, "nope") == NULL);
    CHECK_STR(gguf_vtype_name(GGUF_VT_FLOAT32), "float32");
    gguf_close(f);
    free(buf);
}

static void test_write_file(void) {
    char path[] = "/tmp/sgl-gguf-test-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    close(fd);
    gguf_writer *w = make_writer();
    sgl_error err = {{0}};
    CHECK_INT(gguf_writer_write_file(w, path, &err), 0);
    uint8_t *mem;
    uint64_t len;
    CHECK_INT(gguf_writer_to_memory(w, &mem, &len, &err), 0);
    gguf_writer_free(w);
    gguf_file *f = gguf_open(path, &err);
    CHECK_MSG(f, "open failed: %s", err.msg);
    if (f) {
        CHECK_STR(f->path, path);
        CHECK_INT(f->file_size, len);
        CHECK(memcmp(f->map, mem, len) == 0);
        CHECK_INT(f->n_tensors, SGL_ARRAY_LEN(test_tensors));
        touch_all(f);
        gguf_close(f);
    }
    free(mem);
    /* empty file, missing file, directory */
    FILE *fp = fopen(path, "wb");
    if (fp) fclose(fp);
    CHECK(gguf_open(path, &err) == NULL);
    CHECK_MSG(strstr(err.msg, "empty"), "%s", err.msg);
    unlink(path);
    CHECK(gguf_open(path, &err) == NULL);
    CHECK_MSG(strstr(err.msg, "cannot open"), "%s", err.msg);
    CHECK(gguf_open("/tmp", &err) == NULL);
    CHECK_MSG(strstr(err.msg, "not a regular file"), "%s", err.msg);
}

static void test_writer_errors(void) {
    gguf_writer *w = gguf_writer_new();
    uint64_t ne[2] = {33, 2};
    float data[66] = {0};
    CHECK_INT(gguf_writer_set_u32(w, "a", 1), 0);
    CHECK_INT(gguf_writer_set_u32(w, "a", 2), -1);
    CHECK_INT(gguf_writer_add_tensor(w, "t", SGL_DTYPE_F32, 2, ne, data), 0);
    CHECK_INT(gguf_writer_add_tensor(w, "t", SGL_DTYPE_F32, 2, ne, data), -1);
    CHECK_INT(gguf_writer_add_tensor(w, "q", SGL_DTYPE_Q4_0, 2, ne, data), -1); /* 33 % 32 */
    CHECK_INT(gguf_writer_add_tensor(w, "z", SGL_DTYPE_F32, 5, ne, data), -1);
    uint8_t *buf = (uint8_t *)"x";
    uint64_t len = 5;
    sgl_error err = {{0}};
    CHECK_INT(gguf_writer_to_memory(w, &buf, &len, &err), -1);
    CHECK(buf == NULL);
    CHECK_MSG(strstr(err.msg, "duplicate key 'a'"), "%s", err.msg); /* the first error */
    gguf_writer_free(w);
    /* an empty writer makes a valid empty file */
    w = gguf_writer_new();
    CHECK_INT(gguf_writer_to_memory(w, &buf, &len, &err), 0);
    gguf_writer_free(w);
    gguf_file *f = gguf_open_memory(buf, len, &err);
    CHECK(f && f->n_kv == 0 && f->n_tensors == 0);
    gguf_close(f);
    free(buf);
}

/* ---- hand-made corrupted files ------------------------------------------------- */

static void test_bad_header(void) {
    bytes b = {0};
    b_put(&b, "GGML", 4);
    b_u32(&b, 3);
    b_u64(&b, 0);
    b_u64(&b, 0);
    EXPECT_FAIL(b, "bad magic");

    b = (bytes){0};
    b_header(&b, 1, 0, 0);
    EXPECT_FAIL(b, "unsupported GGUF version 1");
    b = (bytes){0};
    b_header(&b, 4, 0, 0);
    EXPECT_FAIL(b, "unsupported GGUF version 4");
    b = (bytes){0};
    b_header(&b, 0x03000000u, 0, 0);
    EXPECT_FAIL(b, "big-endian");

    b = (bytes){0};
    b_header(&b, 3, 1000000000000ull, 0);
    EXPECT_FAIL(b, "tensor count 1000000000000 is impossible");
    b = (bytes){0};
    b_header(&b, 3, 0, UINT64_MAX);
    EXPECT_FAIL(b, "key/value count 18446744073709551615 is impossible");
    b = (bytes){0};
    b_header(&b, 3, 0, 2); /* plausible for the size, but only one kv present */
    b_kv_u32(&b, "a.b", 1);
    b_zeros(&b, 20);
    EXPECT_FAIL(b, "key #1");

    b = (bytes){0};
    b_put(&b, "GG", 2);
    EXPECT_FAIL(b, "not a GGUF file");
    b = (bytes){0};
    b_put(&b, "GGUF", 4);
    b_u32(&b, 3);
    b_u32(&b, 0);
    EXPECT_FAIL(b, "reading tensor count");

    /* version 2 is accepted */
    b = (bytes){0};
    b_header(&b, 2, 0, 1);
    b_kv_str(&b, "general.architecture", "llama");
    sgl_error err = {{0}};
    gguf_file *f = gguf_open_memory(b.p, b.len, &err);
    CHECK_MSG(f && f->version == 2, "%s", err.msg);
    gguf_close(f);
    free(b.p);
}

static void test_bad_kv(void) {
    bytes b = {0};
    b_header(&b, 3, 0, 1);
    b_str(&b, "general.name");
    b_u32(&b, GGUF_VT_STRING);
    b_u64(&b, 1000);
    b_put(&b, "short", 5);
    EXPECT_FAIL(b, "key 'general.name': string length 1000 at offset");

    b = (bytes){0};
    b_header(&b, 3, 0, 1);
    b_u64(&b, 5000); /* key length */
    b_put(&b, "abc", 3);
    b_zeros(&b, 20);
    EXPECT_FAIL(b, "key #0: key length 5000");

    b = (bytes){0};
    b_header(&b, 3, 0, 1);
    b_str(&b, "tokenizer.ggml.tokens");
    b_u32(&b, GGUF_VT_ARRAY);
    b_u32(&b, GGUF_VT_STRING);
    b_u64(&b, 1ull << 40);
    b_str(&b, "a");
    EXPECT_FAIL(b, "key 'tokenizer.ggml.tokens': array count 1099511627776");

    b = (bytes){0};
    b_header(&b, 3, 0, 1);
    b_str(&b, "arr");
    b_u32(&b, GGUF_VT_ARRAY);
    b_u32(&b, GGUF_VT_UINT32);
    b_u64(&b, 0x4000000000000001ull); /* x4 bytes wraps a 64-bit product */
    b_u32(&b, 1);
    EXPECT_FAIL(b, "array count 4611686018427387905");

    b = (bytes){0}; /* the last string of an array runs past the end */
    b_header(&b, 3, 0, 1);
    b_str(&b, "toks");
    b_u32(&b, GGUF_VT_ARRAY);
    b_u32(&b, GGUF_VT_STRING);
    b_u64(&b, 3);
    b_str(&b, "a");
    b_str(&b, "b");
    b_u64(&b, 4);
    b_put(&b, "cc", 2);
    EXPECT_FAIL(b, "key 'toks': element 2: string length 4");

    b = (bytes){0};
    b_header(&b, 3, 0, 1);
    b_str(&b, "nest");
    b_u32(&b, GGUF_VT_ARRAY);
    b_u32(&b, GGUF_VT_ARRAY);
    b_u64(&b, 1);
    b_u32(&b, GGUF_VT_UINT8);
    b_u64(&b, 1);
    b_u32(&b, 0);
    EXPECT_FAIL(b, "key 'nest': nested arrays are not supported");

    b = (bytes){0};
    b_header(&b, 3, 0, 1);
    b_str(&b, "weird");
    b_u32(&b, 13);
    b_u64(&b, 0);
    EXPECT_FAIL(b, "key 'weird': unknown value type 13");

    b = (bytes){0};
    b_header(&b, 3, 0, 1);
    b_str(&b, "weird.arr");
    b_u32(&b, GGUF_VT_ARRAY);
    b_u32(&b, 77);
    b_u64(&b, 0);
    EXPECT_FAIL(b, "key 'weird.arr': unknown array element type 77");

    b = (bytes){0};
    b_header(&b, 3, 0, 1);
    b_str(&b, "flag");
    b_u32(&b, GGUF_VT_BOOL);
    b_le(&b, 2, 1);
    b_zeros(&b, 8);
    EXPECT_FAIL(b, "key 'flag': bool value 2");

    b = (bytes){0};
    b_header(&b, 3, 0, 2);
    b_kv_u32(&b, "llama.block_count", 1);
    b_kv_u32(&b, "llama.block_count", 2);
    EXPECT_FAIL(b, "duplicate key 'llama.block_count'");

    b = (bytes){0};
    b_header(&b, 3, 0, 1);
    b_kv_u32(&b, "", 1);
    EXPECT_FAIL(b, "key #0 has an empty name");

    b = (bytes){0};
    b_header(&b, 3, 0, 1);
    b_u64(&b, 3);
    b_put(&b, "a\0b", 3);
    b_u32(&b, GGUF_VT_UINT8);
    b_le(&b, 0, 1);
    EXPECT_FAIL(b, "contains a NUL byte");

    b = (bytes){0};
    b_header(&b, 3, 0, 1);
    b_str(&b, "x");
    b_u32(&b, GGUF_VT_UINT64);
    b_u32(&b, 0);
    EXPECT_FAIL(b, "key 'x': unexpected end of file at offset 37 reading uint64");
}

static void test_bad_alignment(void) {
    static const uint32_t bad[] = {0, 48, 3};
    static const char *const msg[] = {"general.alignment is 0", "general.alignment 48 is not a power of two",
                                      "general.alignment 3 is not a power of two"};
    for (int i = 0; i < 3; i++) {
        bytes b = {0};
        b_header(&b, 3, 0, 1);
        b_kv_u32(&b, "general.alignment", bad[i]);
        EXPECT_FAIL(b, msg[i]);
    }
    bytes b = {0};
    b_header(&b, 3, 0, 1);
    b_kv_str(&b, "general.alignment", "32");
    EXPECT_FAIL(b, "general.alignment has type string");

    /* a valid 64-byte alignment: the data section and offsets follow it */
    b = (bytes){0};
    uint64_t ne[1] = {4};
    b_header(&b, 3, 2, 1);
    b_kv_u32(&b, "general.alignment", 64);
    b_tensor(&b, "a", 1, ne, SGL_DTYPE_F32, 0);
    b_tensor(&b, "b", 1, ne, SGL_DTYPE_F32, 64);
    b_pad(&b, 64);
    size_t data_at = b.len;
    b_zeros(&b, 80);
    sgl_error err = {{0}};
    gguf_file *f = gguf_open_memory(b.p, b.len, &err);
    CHECK_MSG(f, "%s", err.msg);
    if (f) {
        CHECK_INT(f->alignment, 64);
        CHECK_INT(f->data_offset, data_at);
        CHECK((const uint8_t *)f->tensors[1].data == b.p + data_at + 64);
        gguf_close(f);
    }
    free(b.p);
    /* ...and an offset of 32 is misaligned for it */
    b = (bytes){0};
    b_header(&b, 3, 1, 1);
    b_kv_u32(&b, "general.alignment", 64);
    b_tensor(&b, "a", 1, ne, SGL_DTYPE_F32, 32);
    b_pad(&b, 64);
    b_zeros(&b, 64);
    EXPECT_FAIL(b, "tensor 'a': data offset 32 is not a multiple of the alignment 64");
}

/* Builds a file with the given tensor infos; data section of data_bytes zeros. */
static bytes tensor_file(const ttensor *t, const uint64_t *offs, int n, size_t data_bytes) {
    bytes b = {0};
    b_header(&b, 3, (uint64_t)n, 1);
    b_kv_str(&b, "general.architecture", "llama");
    for (int i = 0; i < n; i++) {
        uint64_t ne[8] = {1, 1, 1, 1, 1, 1, 1, 1}; /* n_dims may exceed 4 on purpose */
        memcpy(ne, t[i].ne, sizeof t[i].ne);
        b_tensor(&b, t[i].name, t[i].n_dims > 8 ? 8 : t[i].n_dims, ne, t[i].type, offs[i]);
    }
    b_pad(&b, 32);
    b_zeros(&b, data_bytes);
    return b;
}

static void test_bad_tensors(void) {
    ttensor t1 = {"blk.0.attn_q.weight", SGL_DTYPE_F32, 2, {8, 4, 1, 1}}; /* 128 bytes */
    uint64_t off0 = 0;
    bytes b = tensor_file(&t1, &off0, 1, 128);
    sgl_error err = {{0}};
    gguf_file *f = gguf_open_memory(b.p, b.len, &err);
    CHECK_MSG(f, "%s", err.msg); /* the base case is valid */
    gguf_close(f);
    free(b.p);

    b = tensor_file(&t1, &off0, 1, 100);
    EXPECT_FAIL(b, "tensor 'blk.0.attn_q.weight': data [offset ");
    b = tensor_file(&t1, &off0, 1, 100);
    EXPECT_FAIL(b, ", 128 bytes] extends past end of file (size ");

    uint64_t far = 1ull << 62;
    b = tensor_file(&t1, &far, 1, 128);
    EXPECT_FAIL(b, "extends past end of file");
    uint64_t huge = UINT64_MAX - 31;
    b = tensor_file(&t1, &huge, 1, 128);
    EXPECT_FAIL(b, "extends past end of file");

    uint64_t odd = 4;
    b = tensor_file(&t1, &odd, 1, 160);
    EXPECT_FAIL(b, "data offset 4 is not a multiple of the alignment 32");

    ttensor two[2] = {t1, {"blk.0.attn_k.weight", SGL_DTYPE_F32, 1, {8, 1, 1, 1}}};
    uint64_t offs_overlap[2] = {0, 96};
    b = tensor_file(two, offs_overlap, 2, 256);
    EXPECT_FAIL(b, "tensor 'blk.0.attn_k.weight': data [offset");
    b = tensor_file(two, offs_overlap, 2, 256);
    EXPECT_FAIL(b, "overlaps tensor 'blk.0.attn_q.weight'");
    uint64_t offs_same[2] = {0, 0};
    b = tensor_file(two, offs_same, 2, 256);
    EXPECT_FAIL(b, "overlaps tensor");
    uint64_t offs_ok[2] = {32, 0}; /* out of order but disjoint and packed: fine */
    b = tensor_file(two, offs_ok, 2, 160);
    f = gguf_open_memory(b.p, b.len, &err);
    CHECK_MSG(f, "%s", err.msg);
    gguf_close(f);
    free(b.p);
    /* Data longer than type x shape says (an edited type field): named. */
    uint64_t offs_gap[2] = {64, 0};
    b = tensor_file(two, offs_gap, 2, 192);
    EXPECT_FAIL(b, "tensor 'blk.0.attn_k.weight': type F32 and shape [8, 1, 1, 1] make 32 bytes, "
                   "but its data spans 64 bytes (to the next tensor)");
    b = tensor_file(two, offs_ok, 2, 192);
    EXPECT_FAIL(b, "tensor 'blk.0.attn_q.weight': type F32 and shape [8, 4, 1, 1] make 128 bytes, "
                   "but its data spans 160 bytes (to the end of the file)");

    ttensor dup[2] = {t1, t1};
    uint64_t offs_dup[2] = {0, 128};
    b = tensor_file(dup, offs_dup, 2, 256);
    EXPECT_FAIL(b, "duplicate tensor name 'blk.0.attn_q.weight'");

    ttensor bad = t1;
    bad.type = 99;
    b = tensor_file(&bad, &off0, 1, 128);
    EXPECT_FAIL(b, "tensor 'blk.0.attn_q.weight': unknown tensor type 99");
    bad.type = 4; /* a retired GGML id, not in dtype.def */
    b = tensor_file(&bad, &off0, 1, 128);
    EXPECT_FAIL(b, "unknown tensor type 4");

    bad = t1;
    bad.n_dims = 5;
    b = tensor_file(&bad, &off0, 1, 128);
    EXPECT_FAIL(b, "n_dims 5 is out of range (1..4)");
    bad.n_dims = 0;
    b = tensor_file(&bad, &off0, 1, 128);
    EXPECT_FAIL(b, "n_dims 0 is out of range");

    bad = t1;
    bad.ne[1] = 0;
    b = tensor_file(&bad, &off0, 1, 128);
    EXPECT_FAIL(b, "tensor 'blk.0.attn_q.weight': dimension 1 is 0");

    bad = (ttensor){"big", SGL_DTYPE_F32, 3, {1ull << 32, 1ull << 32, 4, 1}};
    b = tensor_file(&bad, &off0, 1, 128);
    EXPECT_FAIL(b, "tensor 'big': element count overflows");
    bad = (ttensor){"big", SGL_DTYPE_F32, 1, {UINT64_MAX, 1, 1, 1}};
    b = tensor_file(&bad, &off0, 1, 128);
    EXPECT_FAIL(b, "element count overflows");
    bad = (ttensor){"bytes", SGL_DTYPE_F64, 2, {1ull << 31, 1ull << 31, 1, 1}}; /* 2^62 el x 8 B */
    b = tensor_file(&bad, &off0, 1, 128);
    EXPECT_FAIL(b, "tensor 'bytes': byte size overflows");
    bad = (ttensor){"huge", SGL_DTYPE_F32, 2, {1ull << 20, 1ull << 20, 1, 1}};
    b = tensor_file(&bad, &off0, 1, 128);
    EXPECT_FAIL(b, "tensor 'huge': data [offset");

    bad = (ttensor){"q", SGL_DTYPE_Q4_0, 2, {48, 2, 1, 1}};
    b = tensor_file(&bad, &off0, 1, 128);
    EXPECT_FAIL(b, "tensor 'q': row length 48 is not a multiple of the Q4_0 block size 32");

    bad = (ttensor){"", SGL_DTYPE_F32, 1, {4, 1, 1, 1}};
    b = tensor_file(&bad, &off0, 1, 32);
    EXPECT_FAIL(b, "tensor #0 has an empty name");
}

/* Every prefix of a valid file: fails cleanly, or opens only when the cut is
 * past the end of all tensor data. */
static void test_truncation(void) {
    uint8_t *buf;
    uint64_t len;
    make_valid(&buf, &len);
    sgl_error err = {{0}};
    gguf_file *full = gguf_open_memory(buf, len, &err);
    CHECK(full);
    if (!full) return;
    uint64_t data_end = 0;
    for (uint64_t i = 0; i < full->n_tensors; i++)
        data_end = SGL_MAX(data_end, full->data_offset + full->tensors[i].offset + full->tensors[i].nbytes);
    uint64_t meta_end = full->data_offset;
    gguf_close(full);
    int bad = 0, n_ok = 0;
    for (uint64_t cut = 0; cut < len; cut++) {
        /* every byte of the header/metadata; a sample (every 7th) of the data */
        if (cut > meta_end && cut % 7 && cut + 1 < data_end) continue;
        void *keep;
        err.msg[0] = 0;
        gguf_file *f = open_copy(buf, cut, &keep, &err);
        if (f) {
            n_ok++;
            if (cut < data_end) {
                bad++;
                TEST_FAIL_("cut %llu (< data end %llu) opened", (unsigned long long)cut,
                           (unsigned long long)data_end);
            }
            touch_all(f);
            gguf_close(f);
        } else if (!err.msg[0] || (cut >= data_end && cut > 0)) {
            bad++;
            TEST_FAIL_("cut %llu: unexpected result \"%s\"", (unsigned long long)cut, err.msg);
        }
        free(keep);
        if (bad > 5) break;
    }
    CHECK_INT(n_ok, len - data_end); /* only cuts inside the final padding open */
    free(buf);
}

/* Random byte changes: every result is either a clean error or a file whose
 * every pointer stays inside the buffer (checked by touching all of it). */
static void test_random_corruption(void) {
    uint8_t *buf;
    uint64_t len;
    make_valid(&buf, &len);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    int n_open = 0, n_fail = 0;
    for (int iter = 0; iter < 3000; iter++) {
        uint8_t *c = malloc(len);
        memcpy(c, buf, len);
        int flips = 1 + iter % 4;
        for (int k = 0; k < flips; k++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            uint64_t pos = (x >> 8) % (iter % 2 ? len : SGL_MIN(len, 600)); /* favour metadata */
            c[pos] = (uint8_t)(iter % 3 == 0 ? x : c[pos] ^ (1u << (x & 7)));
        }
        sgl_error err = {{0}};
        gguf_file *f = gguf_open_memory(c, len, &err);
        if (f) {
            n_open++;
            touch_all(f);
            gguf_close(f);
        } else {
            n_fail++;
            CHECK_MSG(err.msg[0], "iteration %d: empty error", iter);
        }
        free(c);
    }
    CHECK(n_fail > 100); /* the corruptions were actually noticed */
    CHECK(n_open > 10);  /* and flips inside data/strings still open */
    free(buf);
}

/* The string-array index is built on first use; several threads asking at
 * once must all get correct strings (and build it only once, without leaks). */
typedef struct idx_job {
    const gguf_file *f;
    int bad;
} idx_job;

static void *idx_worker(void *arg) {
    idx_job *j = arg;
    for (int rep = 0; rep < 50; rep++)
        for (uint64_t i = SGL_ARRAY_LEN(test_strs); i-- > 0;) {
            gguf_str s = gguf_arr_str(j->f, "tokenizer.ggml.tokens", i);
            j->bad += !(s.ptr && s.len == strlen(test_strs[i]) && !memcmp(s.ptr, test_strs[i], s.len));
            j->bad += gguf_arr_str(j->f, "empty.array", i).ptr != NULL;
        }
    return NULL;
}

static void test_arr_index_threads(void) {
    uint8_t *buf;
    uint64_t len;
    make_valid(&buf, &len);
    for (int round = 0; round < 20; round++) {
        gguf_file *f = gguf_open_memory(buf, len, NULL);
        CHECK(f);
        if (!f) break;
        pthread_t th[4];
        idx_job jobs[4];
        for (int t = 0; t < 4; t++) {
            jobs[t] = (idx_job){f, 0};
            CHECK_INT(pthread_create(&th[t], NULL, idx_worker, &jobs[t]), 0);
        }
        for (int t = 0; t < 4; t++) {
            pthread_join(th[t], NULL);
            CHECK_INT(jobs[t].bad, 0);
        }
        gguf_close(f);
    }
    free(buf);
}

int main(void) {
    TEST_RUN(test_round_trip);
    TEST_RUN(test_write_file);
    TEST_RUN(test_writer_errors);
    TEST_RUN(test_bad_header);
    TEST_RUN(test_bad_kv);
    TEST_RUN(test_bad_alignment);
    TEST_RUN(test_bad_tensors);
    TEST_RUN(test_truncation);
    TEST_RUN(test_random_corruption);
    TEST_RUN(test_arr_index_threads);
    return TEST_DONE();
}
