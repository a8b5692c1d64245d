/* gguf: the GGUF reader (memory-mapped, versions 2 and 3) and the v3 writer.
 *
 * File layout (all integers little-endian):
 *
 *   "GGUF" u32 version  u64 n_tensors  u64 n_kv
 *   n_kv      x  { str key, u32 vtype, value }
 *   n_tensors x  { str name, u32 n_dims, u64 ne[n_dims], u32 dtype, u64 offset }
 *   zero padding up to `alignment`                  <- data_offset
 *   tensor data, each at data_offset + offset (a multiple of `alignment`)
 *
 *   str   = u64 len, len bytes (no NUL)
 *   value = scalar | str | { u32 elem_vtype, u64 n, n elements }
 *
 * The reader never trusts a count, length or offset: every one is checked
 * against the bytes that remain before it is used, and arrays of pointers are
 * grown as entries are actually parsed, so a lying header cannot make it
 * allocate more than a small multiple of the file size. Errors name the key or
 * tensor and the offset involved.
 */
#include "runtime/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_MAGIC_LE 0x46554747u /* "GGUF" read as a little-endian u32 */
#define GGUF_DEFAULT_ALIGNMENT 32u
#define GGUF_MAX_ALIGNMENT (1u << 24)
/* Smallest possible encodings, used to reject impossible counts early. */
#define GGUF_MIN_KV_BYTES 13     /* u64 key len + u32 type + 1-byte value (keys are non-empty, so this is low) */
#define GGUF_MIN_TENSOR_BYTES 33 /* u64 name len + 1 name byte + u32 n_dims + u64 ne + u32 type + u64 offset */

typedef struct gguf_priv {
    sgl_arena names;          /* NUL-terminated keys and tensor names */
    uint64_t *kv_hash;        /* open addressing: index+1, 0 = empty; size kv_mask+1 */
    uint64_t kv_mask;
    uint64_t *t_hash;
    uint64_t t_mask;
    void *mapping;            /* mmap'd file, NULL for gguf_open_memory */
    size_t map_len;
    pthread_mutex_t idx_lock; /* serialises building string-array indexes */
    _Atomic(uint64_t *) *str_idx; /* per kv: offsets of each string of a STRING array */
} gguf_priv;

/* ---- small helpers --------------------------------------------------------- */

static uint64_t rd_le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* Size in bytes of one value of a fixed-size type; 0 for STRING/ARRAY/unknown. */
static int vtype_size(uint32_t t) {
    switch (t) {
    case GGUF_VT_UINT8: case GGUF_VT_INT8: case GGUF_VT_BOOL: return 1;
    case GGUF_VT_UINT16: case GGUF_VT_INT16: return 2;
    case GGUF_VT_UINT32: case GGUF_VT_INT32: case GGUF_VT_FLOAT32: return 4;
    case GGUF_VT_UINT64: case GGUF_VT_INT64: case GGUF_VT_FLOAT64: return 8;
    default: return 0;
    }
}

static bool vtype_valid(uint32_t t) {
    return t <= GGUF_VT_FLOAT64;
}

const char *gguf_vtype_name(gguf_vtype t) {
    switch (t) {
    case GGUF_VT_UINT8: return "uint8";
    case GGUF_VT_INT8: return "int8";
    case GGUF_VT_UINT16: return "uint16";
    case GGUF_VT_INT16: return "int16";
    case GGUF_VT_UINT32: return "uint32";
    case GGUF_VT_INT32: return "int32";
    case GGUF_VT_FLOAT32: return "float32";
    case GGUF_VT_BOOL: return "bool";
    case GGUF_VT_STRING: return "string";
    case GGUF_VT_ARRAY: return "array";
    case GGUF_VT_UINT64: return "uint64";
    case GGUF_VT_INT64: return "int64";
    case GGUF_VT_FLOAT64: return "float64";
    }
    return "unknown";
}

/* Decodes one scalar of type t at p into the kv union (t fixed-size). */
static void decode_scalar(gguf_kv *kv, uint32_t t, const uint8_t *p) {
    uint64_t raw = rd_le(p, vtype_size(t));
    switch (t) {
    case GGUF_VT_INT8: kv->v.i = (int8_t)raw; break;
    case GGUF_VT_INT16: kv->v.i = (int16_t)raw; break;
    case GGUF_VT_INT32: kv->v.i = (int32_t)raw; break;
    case GGUF_VT_INT64: kv->v.i = (int64_t)raw; break;
    case GGUF_VT_FLOAT32: {
        uint32_t b = (uint32_t)raw;
        float x;
        memcpy(&x, &b, 4);
        kv->v.f = x;
        break;
    }
    case GGUF_VT_FLOAT64: {
        double x;
        memcpy(&x, &raw, 8);
        kv->v.f = x;
        break;
    }
    default: kv->v.u = raw; break; /* unsigned types and BOOL */
    }
}

/* Printable form of a name for error messages (at most 80 bytes, non-printing
 * bytes shown as '?'). */
static const char *printable(char buf[96], const char *s, uint64_t n) {
    size_t m = n > 80 ? 80 : (size_t)n, j = 0;
    for (size_t i = 0; i < m; i++) {
        unsigned char c = (unsigned char)s[i];
        buf[j++] = (c >= 32 && c < 127) ? (char)c : '?';
    }
    if (m < n) {
        memcpy(buf + j, "...", 3);
        j += 3;
    }
    buf[j] = 0;
    return buf;
}

/* ---- reading cursor ---------------------------------------------------------- */

typedef struct cursor {
    const uint8_t *p;
    uint64_t size, pos;
    sgl_error *err;
} cursor;

static int cur_need(cursor *c, uint64_t n, const char *what) {
    if (n > c->size - c->pos)
        return sgl_error_set(c->err,
                             "unexpected end of file at offset %" PRIu64 " reading %s "
                             "(%" PRIu64 " bytes needed, %" PRIu64 " left)",
                             c->pos, what, n, c->size - c->pos);
    return 0;
}

static int cur_u32(cursor *c, uint32_t *v, const char *what) {
    if (cur_need(c, 4, what)) return -1;
    *v = (uint32_t)rd_le(c->p + c->pos, 4);
    c->pos += 4;
    return 0;
}

static int cur_u64(cursor *c, uint64_t *v, const char *what) {
    if (cur_need(c, 8, what)) return -1;
    *v = rd_le(c->p + c->pos, 8);
    c->pos += 8;
    return 0;
}

static int cur_str(cursor *c, gguf_str *s, const char *what) {
    uint64_t start = c->pos, len;
    if (cur_u64(c, &len, what)) return -1;
    if (len > c->size - c->pos)
        return sgl_error_set(c->err,
                             "%s length %" PRIu64 " at offset %" PRIu64
                             " extends past end of file (size %" PRIu64 ")",
                             what, len, start, c->size);
    s->ptr = (const char *)c->p + c->pos;
    s->len = len;
    c->pos += len;
    return 0;
}

/* ---- hash tables of names ---------------------------------------------------- */

static uint64_t *hash_new(uint64_t n, uint64_t *mask) {
    uint64_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    *mask = cap - 1;
    return calloc(cap, sizeof(uint64_t));
}

/* Inserts index idx of a name (names[idx] via getter) unless an equal name is
 * present; returns the index+1 of the existing entry, or 0 after inserting. */
static uint64_t hash_insert(uint64_t *tab, uint64_t mask, const char *name, size_t len,
                            uint64_t idx, const char *(*get)(const gguf_file *, uint64_t),
                            const gguf_file *f) {
    uint64_t h = hash_bytes(name, len) & mask;
    while (tab[h]) {
        const char *other = get(f, tab[h] - 1);
        if (strlen(other) == len && memcmp(other, name, len) == 0) return tab[h];
        h = (h + 1) & mask;
    }
    tab[h] = idx + 1;
    return 0;
}

static uint64_t hash_lookup(const uint64_t *tab, uint64_t mask, const char *name,
                            const char *(*get)(const gguf_file *, uint64_t), const gguf_file *f) {
    if (!tab) return 0;
    size_t len = strlen(name);
    uint64_t h = hash_bytes(name, len) & mask;
    while (tab[h]) {
        if (strcmp(get(f, tab[h] - 1), name) == 0) return tab[h];
        h = (h + 1) & mask;
    }
    return 0;
}

static const char *kv_key_at(const gguf_file *f, uint64_t i) {
    return f->kv[i].key;
}
static const char *tensor_name_at(const gguf_file *f, uint64_t i) {
    return f->tensors[i].name;
}

/* ---- parsing ------------------------------------------------------------------ */

/* Copies a name into the arena after checking it is non-empty and NUL-free. */
static const char *name_copy(gguf_file *f, gguf_str s, const char *what, uint64_t idx,
                             sgl_error *err) {
    gguf_priv *pv = f->priv;
    if (s.len == 0) return sgl_error_set(err, "%s #%" PRIu64 " has an empty name", what, idx), NULL;
    if (memchr(s.ptr, 0, s.len)) {
        char b[96];
        sgl_error_set(err, "%s #%" PRIu64 " ('%s') contains a NUL byte", what, idx,
                      printable(b, s.ptr, s.len));
        return NULL;
    }
    char *p = sgl_arena_strndup(&pv->names, s.ptr, s.len);
    if (!p) sgl_error_set(err, "out of memory");
    return p;
}

static int parse_value(cursor *c, gguf_kv *kv, uint32_t t) {
    if (!vtype_valid(t))
        return sgl_error_set(c->err, "unknown value type %" PRIu32 " at offset %" PRIu64, t,
                             c->pos - 4);
    kv->type = (gguf_vtype)t;
    if (t == GGUF_VT_STRING) return cur_str(c, &kv->v.s, "string");
    if (t != GGUF_VT_ARRAY) {
        if (cur_need(c, (uint64_t)vtype_size(t), gguf_vtype_name(t))) return -1;
        decode_scalar(kv, t, c->p + c->pos);
        if (t == GGUF_VT_BOOL && kv->v.u > 1)
            return sgl_error_set(c->err, "bool value %" PRIu64 " at offset %" PRIu64 " is not 0 or 1",
                                 kv->v.u, c->pos);
        c->pos += (uint64_t)vtype_size(t);
        return 0;
    }
    uint32_t et;
    uint64_t n, at;
    if (cur_u32(c, &et, "array element type")) return -1;
    if (et == GGUF_VT_ARRAY)
        return sgl_error_set(c->err, "nested arrays are not supported (offset %" PRIu64 ")",
                             c->pos - 4);
    if (!vtype_valid(et))
        return sgl_error_set(c->err, "unknown array element type %" PRIu32 " at offset %" PRIu64,
                             et, c->pos - 4);
    at = c->pos;
    if (cur_u64(c, &n, "array length")) return -1;
    kv->v.arr.type = (gguf_vtype)et;
    kv->v.arr.n = n;
    kv->v.arr.data = c->p + c->pos;
    uint64_t left = c->size - c->pos;
    if (et == GGUF_VT_STRING) {
        if (n > left / 8)
            return sgl_error_set(c->err,
                                 "array count %" PRIu64 " at offset %" PRIu64
                                 " extends past end of file (%" PRIu64 " strings need at least %"
                                 PRIu64 " bytes, %" PRIu64 " left)",
                                 n, at, n, n > UINT64_MAX / 8 ? UINT64_MAX : n * 8, left);
        for (uint64_t i = 0; i < n; i++) {
            gguf_str s;
            if (cur_str(c, &s, "string")) return sgl_error_prefix(c->err, "element %" PRIu64, i);
        }
        return 0;
    }
    uint64_t es = (uint64_t)vtype_size(et);
    if (n > left / es)
        return sgl_error_set(c->err,
                             "array count %" PRIu64 " at offset %" PRIu64
                             " extends past end of file (%" PRIu64 " x %s, %" PRIu64 " bytes left)",
                             n, at, n, gguf_vtype_name(et), left);
    c->pos += n * es;
    return 0;
}

/* Grows *arr (elements of size sz) to hold at least need entries. */
static int grow(void **arr, uint64_t *cap, uint64_t need, size_t sz) {
    if (need <= *cap) return 0;
    uint64_t nc = *cap ? *cap * 2 : 64;
    while (nc < need) nc *= 2;
    void *p = realloc(*arr, nc * sz);
    if (!p) return -1;
    memset((char *)p + *cap * sz, 0, (nc - *cap) * sz);
    *arr = p;
    *cap = nc;
    return 0;
}

static int parse_kvs(gguf_file *f, cursor *c, uint64_t n_kv) {
    gguf_priv *pv = f->priv;
    uint64_t cap = 0;
    pv->kv_hash = hash_new(n_kv, &pv->kv_mask);
    if (!pv->kv_hash) return sgl_error_set(c->err, "out of memory");
    for (uint64_t i = 0; i < n_kv; i++) {
        if (grow((void **)&f->kv, &cap, i + 1, sizeof(gguf_kv)))
            return sgl_error_set(c->err, "out of memory");
        gguf_kv *kv = &f->kv[i];
        gguf_str key;
        uint32_t t;
        if (cur_str(c, &key, "key")) return sgl_error_prefix(c->err, "key #%" PRIu64, i);
        if (!(kv->key = name_copy(f, key, "key", i, c->err))) return -1;
        f->n_kv = i + 1;
        uint64_t dup = hash_insert(pv->kv_hash, pv->kv_mask, key.ptr, key.len, i, kv_key_at, f);
        if (dup)
            return sgl_error_set(c->err, "duplicate key '%s' (entries #%" PRIu64 " and #%" PRIu64 ")",
                                 kv->key, dup - 1, i);
        if (cur_u32(c, &t, "value type") || parse_value(c, kv, t))
            return sgl_error_prefix(c->err, "key '%s'", kv->key);
    }
    pv->str_idx = calloc(n_kv ? n_kv : 1, sizeof *pv->str_idx);
    if (!pv->str_idx) return sgl_error_set(c->err, "out of memory");
    return 0;
}

static int parse_alignment(gguf_file *f, sgl_error *err) {
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gguf_kv *kv = gguf_find(f, "general.alignment");
    if (!kv) return 0;
    uint64_t a;
    switch (kv->type) {
    case GGUF_VT_UINT8: case GGUF_VT_UINT16: case GGUF_VT_UINT32: case GGUF_VT_UINT64:
        a = kv->v.u;
        break;
    case GGUF_VT_INT8: case GGUF_VT_INT16: case GGUF_VT_INT32: case GGUF_VT_INT64:
        if (kv->v.i < 0)
            return sgl_error_set(err, "general.alignment %" PRId64 " is negative", kv->v.i);
        a = (uint64_t)kv->v.i;
        break;
    default:
        return sgl_error_set(err, "general.alignment has type %s, expected an integer",
                             gguf_vtype_name(kv->type));
    }
    if (a == 0) return sgl_error_set(err, "general.alignment is 0");
    if (a & (a - 1))
        return sgl_error_set(err, "general.alignment %" PRIu64 " is not a power of two", a);
    if (a > GGUF_MAX_ALIGNMENT)
        return sgl_error_set(err, "general.alignment %" PRIu64 " is larger than %u", a,
                             GGUF_MAX_ALIGNMENT);
    f->alignment = (uint32_t)a;
    return 0;
}

static int parse_tensor_infos(gguf_file *f, cursor *c, uint64_t n_t) {
    gguf_priv *pv = f->priv;
    uint64_t cap = 0;
    pv->t_hash = hash_new(n_t, &pv->t_mask);
    if (!pv->t_hash) return sgl_error_set(c->err, "out of memory");
    for (uint64_t i = 0; i < n_t; i++) {
        if (grow((void **)&f->tensors, &cap, i + 1, sizeof(gguf_tensor)))
            return sgl_error_set(c->err, "out of memory");
        gguf_tensor *t = &f->tensors[i];
        gguf_str name;
        if (cur_str(c, &name, "tensor name")) return sgl_error_prefix(c->err, "tensor #%" PRIu64, i);
        if (!(t->name = name_copy(f, name, "tensor", i, c->err))) return -1;
        f->n_tensors = i + 1;
        uint64_t dup = hash_insert(pv->t_hash, pv->t_mask, name.ptr, name.len, i, tensor_name_at, f);
        if (dup)
            return sgl_error_set(c->err,
                                 "duplicate tensor name '%s' (tensors #%" PRIu64 " and #%" PRIu64 ")",
                                 t->name, dup - 1, i);
        uint32_t nd, ty;
        if (cur_u32(c, &nd, "n_dims")) return sgl_error_prefix(c->err, "tensor '%s'", t->name);
        if (nd < 1 || nd > GGUF_MAX_DIMS)
            return sgl_error_set(c->err, "tensor '%s': n_dims %" PRIu32 " is out of range (1..%d)",
                                 t->name, nd, GGUF_MAX_DIMS);
        t->n_dims = nd;
        uint64_t nel = 1;
        for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) {
            t->ne[d] = 1;
            if (d >= nd) continue;
            if (cur_u64(c, &t->ne[d], "dimension"))
                return sgl_error_prefix(c->err, "tensor '%s'", t->name);
            if (t->ne[d] == 0)
                return sgl_error_set(c->err, "tensor '%s': dimension %" PRIu32 " is 0", t->name, d);
            if (t->ne[d] > (uint64_t)INT64_MAX || nel > (uint64_t)INT64_MAX / t->ne[d])
                return sgl_error_set(c->err,
                                     "tensor '%s': element count overflows (dimension %" PRIu32
                                     " is %" PRIu64 ")",
                                     t->name, d, t->ne[d]);
            nel *= t->ne[d];
        }
        if (cur_u32(c, &ty, "tensor type") || cur_u64(c, &t->offset, "tensor data offset"))
            return sgl_error_prefix(c->err, "tensor '%s'", t->name);
        if (!sgl_dtype_known((int)ty) || ty >= SGL_DTYPE_MAX_ID)
            return sgl_error_set(c->err, "tensor '%s': unknown tensor type %" PRIu32, t->name, ty);
        t->type = (sgl_dtype)ty;
        uint64_t row = sgl_dtype_row_bytes((int)ty, t->ne[0]);
        if (row == 0)
            return sgl_error_set(c->err,
                                 "tensor '%s': row length %" PRIu64
                                 " is not a multiple of the %s block size %d",
                                 t->name, t->ne[0], sgl_dtype_name((int)ty),
                                 sgl_dtype_block_elems((int)ty));
        uint64_t rows = nel / t->ne[0];
        if (rows > UINT64_MAX / row)
            return sgl_error_set(c->err, "tensor '%s': byte size overflows", t->name);
        t->nbytes = row * rows;
    }
    return 0;
}

typedef struct span {
    uint64_t off, len, idx;
} span;

static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->off != y->off) return x->off < y->off ? -1 : 1;
    return x->idx < y->idx ? -1 : (x->idx > y->idx);
}

/* Called after the per-tensor extent checks. */
static int tail_check(gguf_file *f, sgl_error *err) {
    /* The tensor that ends last must end the file (up to padding). */
    uint64_t last = 0, end = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        uint64_t e = f->tensors[i].offset + f->tensors[i].nbytes;
        if (e >= end) end = e, last = i;
    }
    uint64_t data_len = f->file_size - f->data_offset; /* >= end: checked above */
    if (f->n_tensors && end + f->alignment <= data_len) {
        const gguf_tensor *a = &f->tensors[last];
        return sgl_error_set(err,
                             "tensor '%s': type %s and shape [%" PRIu64 ", %" PRIu64 ", %" PRIu64 ", %" PRIu64
                             "] make %" PRIu64 " bytes, but its data spans %" PRIu64
                             " bytes (to the end of the file): the type or shape does not match the data",
                             a->name, sgl_dtype_name(a->type), a->ne[0], a->ne[1], a->ne[2], a->ne[3],
                             a->nbytes, data_len - a->offset);
    }
    return 0;
}

static int check_tensor_data(gguf_file *f, sgl_error *err) {
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        if (t->offset % f->alignment)
            return sgl_error_set(err,
                                 "tensor '%s': data offset %" PRIu64
                                 " is not a multiple of the alignment %" PRIu32,
                                 t->name, t->offset, f->alignment);
        uint64_t avail = f->file_size > f->data_offset ? f->file_size - f->data_offset : 0;
        if (t->offset > avail || t->nbytes > avail - t->offset) {
            if (t->offset > UINT64_MAX - f->data_offset)
                return sgl_error_set(err,
                                     "tensor '%s': data offset %" PRIu64
                                     " extends past end of file (size %" PRIu64 ")",
                                     t->name, t->offset, f->file_size);
            return sgl_error_set(err,
                                 "tensor '%s': data [offset %" PRIu64 ", %" PRIu64
                                 " bytes] extends past end of file (size %" PRIu64 ")",
                                 t->name, f->data_offset + t->offset, t->nbytes, f->file_size);
        }
        t->data = f->map + f->data_offset + t->offset;
    }
    if (f->n_tensors < 2) return tail_check(f, err);
    span *s = malloc(f->n_tensors * sizeof *s);
    if (!s) return sgl_error_set(err, "out of memory");
    for (uint64_t i = 0; i < f->n_tensors; i++)
        s[i] = (span){f->tensors[i].offset, f->tensors[i].nbytes, i};
    qsort(s, f->n_tensors, sizeof *s, span_cmp);
    int rc = 0;
    for (uint64_t i = 0; i + 1 < f->n_tensors; i++) {
        if (s[i].off + s[i].len > s[i + 1].off) {
            const gguf_tensor *a = &f->tensors[s[i].idx], *b = &f->tensors[s[i + 1].idx];
            rc = sgl_error_set(err,
                               "tensor '%s': data [offset %" PRIu64 ", %" PRIu64
                               " bytes] overlaps tensor '%s' [offset %" PRIu64 ", %" PRIu64 " bytes]",
                               b->name, f->data_offset + b->offset, b->nbytes, a->name,
                               f->data_offset + a->offset, a->nbytes);
            break;
        }
    }
    for (uint64_t i = 0; rc == 0 && i + 1 < f->n_tensors; i++) {
        /* Writers pack tensors back to back, padded to the alignment: a gap
         * of a whole alignment unit or more means the type or shape claims
         * fewer bytes than the data holds (a type field edited from Q4_1 to
         * Q4_0, say). The other way round shows as an overlap (above) or as
         * data past the end of the file. */
        if (s[i].off + s[i].len + f->alignment <= s[i + 1].off) {
            const gguf_tensor *a = &f->tensors[s[i].idx];
            rc = sgl_error_set(err,
                               "tensor '%s': type %s and shape [%" PRIu64 ", %" PRIu64 ", %" PRIu64
                               ", %" PRIu64 "] make %" PRIu64 " bytes, but its data spans %" PRIu64
                               " bytes (to the next tensor): the type or shape does not match the data",
                               a->name, sgl_dtype_name(a->type), a->ne[0], a->ne[1], a->ne[2], a->ne[3],
                               a->nbytes, s[i + 1].off - s[i].off);
            break;
        }
    }
    free(s);
    return rc ? rc : tail_check(f, err);
}

static int parse_file(gguf_file *f, sgl_error *err) {
    cursor c = {f->map, f->file_size, 0, err};
    uint32_t magic;
    if (f->file_size < 4) return sgl_error_set(err, "not a GGUF file (only %" PRIu64 " bytes)", f->file_size);
    if (cur_u32(&c, &magic, "magic")) return -1;
    if (magic != GGUF_MAGIC_LE)
        return sgl_error_set(err, "not a GGUF file (bad magic %02x %02x %02x %02x, expected \"GGUF\")",
                             f->map[0], f->map[1], f->map[2], f->map[3]);
    if (cur_u32(&c, &f->version, "version")) return -1;
    if (f->version == 1)
        return sgl_error_set(err, "unsupported GGUF version 1 (only versions 2 and 3 are supported; "
                                  "convert the file with a newer llama.cpp)");
    if (f->version != 2 && f->version != 3) {
        if ((f->version & 0xffff) == 0 && (f->version >> 16) != 0)
            return sgl_error_set(err, "unsupported GGUF version 0x%08" PRIx32
                                      " (looks like a big-endian file; only little-endian "
                                      "versions 2 and 3 are supported)", f->version);
        return sgl_error_set(err, "unsupported GGUF version %" PRIu32
                                  " (only versions 2 and 3 are supported)", f->version);
    }
    uint64_t n_t, n_kv;
    if (cur_u64(&c, &n_t, "tensor count") || cur_u64(&c, &n_kv, "key/value count")) return -1;
    uint64_t left = f->file_size - c.pos;
    if (n_kv > left / GGUF_MIN_KV_BYTES)
        return sgl_error_set(err, "key/value count %" PRIu64 " is impossible for a file of %" PRIu64
                                  " bytes", n_kv, f->file_size);
    if (n_t > left / GGUF_MIN_TENSOR_BYTES)
        return sgl_error_set(err, "tensor count %" PRIu64 " is impossible for a file of %" PRIu64
                                  " bytes", n_t, f->file_size);
    if (parse_kvs(f, &c, n_kv)) return -1;
    if (parse_alignment(f, err)) return -1;
    if (parse_tensor_infos(f, &c, n_t)) return -1;
    uint64_t a = f->alignment;
    f->data_offset = (c.pos + a - 1) / a * a; /* c.pos <= file_size, no overflow */
    return check_tensor_data(f, err);
}

static gguf_file *file_new(void) {
    gguf_file *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    gguf_priv *pv = calloc(1, sizeof *pv);
    if (!pv) {
        free(f);
        return NULL;
    }
    pthread_mutex_init(&pv->idx_lock, NULL);
    f->priv = pv;
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    return f;
}

gguf_file *gguf_open_memory(const void *buf, uint64_t len, sgl_error *err) {
    gguf_file *f = file_new();
    if (!f) {
        sgl_error_set(err, "out of memory");
        return NULL;
    }
    f->map = buf;
    f->file_size = len;
    if (!buf && len) {
        sgl_error_set(err, "NULL buffer");
        gguf_close(f);
        return NULL;
    }
    if (parse_file(f, err)) {
        gguf_close(f);
        return NULL;
    }
    return f;
}

gguf_file *gguf_open(const char *path, sgl_error *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        sgl_error_set(err, "cannot open: %s", strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        sgl_error_set(err, "cannot stat: %s", strerror(errno));
        close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        sgl_error_set(err, "not a regular file");
        close(fd);
        return NULL;
    }
    if (st.st_size == 0) {
        sgl_error_set(err, "not a GGUF file (file is empty)");
        close(fd);
        return NULL;
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        sgl_error_set(err, "file too large to map");
        close(fd);
        return NULL;
    }
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);
    if (m == MAP_FAILED) {
        sgl_error_set(err, "cannot map: %s", strerror(map_errno));
        return NULL;
    }
    gguf_file *f = file_new();
    if (!f) {
        munmap(m, (size_t)st.st_size);
        sgl_error_set(err, "out of memory");
        return NULL;
    }
    gguf_priv *pv = f->priv;
    pv->mapping = m;
    pv->map_len = (size_t)st.st_size;
    f->map = m;
    f->file_size = (uint64_t)st.st_size;
    f->path = sgl_strdup(path);
    if (!f->path) {
        sgl_error_set(err, "out of memory");
        gguf_close(f);
        return NULL;
    }
    if (parse_file(f, err)) {
        gguf_close(f);
        return NULL;
    }
    return f;
}

void gguf_release_range(const gguf_file *f, const void *p, uint64_t len) {
    const gguf_priv *pv = f ? f->priv : NULL;
    if (!pv || !pv->mapping) return;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t m0 = (uintptr_t)pv->mapping, m1 = m0 + pv->map_len;
    uintptr_t a = ((uintptr_t)p + page - 1) & ~(page - 1);
    uintptr_t e = ((uintptr_t)p + len) & ~(page - 1);
    if (a < m0) a = m0;
    if (e > m1) e = m1;
    /* a private, read-only file mapping: the pages are read again from the
     * file if touched, so nothing is lost */
    if (e > a) madvise((void *)a, e - a, MADV_DONTNEED);
}

void gguf_close(gguf_file *f) {
    if (!f) return;
    gguf_priv *pv = f->priv;
    if (pv) {
        if (pv->str_idx) {
            for (uint64_t i = 0; i < f->n_kv; i++) free(atomic_load(&pv->str_idx[i]));
            free(pv->str_idx);
        }
        free(pv->kv_hash);
        free(pv->t_hash);
        sgl_arena_free(&pv->names);
        if (pv->mapping) munmap(pv->mapping, pv->map_len);
        pthread_mutex_destroy(&pv->idx_lock);
        free(pv);
    }
    free(f->kv);
    free(f->tensors);
    free(f->path);
    free(f);
}

/* ---- lookups ------------------------------------------------------------------ */

const gguf_kv *gguf_find(const gguf_file *f, const char *key) {
    if (!f || !key) return NULL;
    const gguf_priv *pv = f->priv;
    uint64_t i = hash_lookup(pv->kv_hash, pv->kv_mask, key, kv_key_at, f);
    return i ? &f->kv[i - 1] : NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name) {
    if (!f || !name) return NULL;
    const gguf_priv *pv = f->priv;
    uint64_t i = hash_lookup(pv->t_hash, pv->t_mask, name, tensor_name_at, f);
    return i ? &f->tensors[i - 1] : NULL;
}

static bool is_int_type(gguf_vtype t) {
    return t == GGUF_VT_UINT8 || t == GGUF_VT_INT8 || t == GGUF_VT_UINT16 || t == GGUF_VT_INT16 ||
           t == GGUF_VT_UINT32 || t == GGUF_VT_INT32 || t == GGUF_VT_UINT64 || t == GGUF_VT_INT64 ||
           t == GGUF_VT_BOOL;
}

static bool is_signed_type(gguf_vtype t) {
    return t == GGUF_VT_INT8 || t == GGUF_VT_INT16 || t == GGUF_VT_INT32 || t == GGUF_VT_INT64;
}

int64_t gguf_get_int(const gguf_file *f, const char *key, int64_t dflt) {
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv || !is_int_type(kv->type)) return dflt;
    return is_signed_type(kv->type) ? kv->v.i : (int64_t)kv->v.u;
}

/* Float value of FLOAT32/FLOAT64, or of an integer (converted), else dflt. */
double gguf_get_float(const gguf_file *f, const char *key, double dflt) {
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv) return dflt;
    if (kv->type == GGUF_VT_FLOAT32 || kv->type == GGUF_VT_FLOAT64) return kv->v.f;
    if (is_int_type(kv->type)) return is_signed_type(kv->type) ? (double)kv->v.i : (double)kv->v.u;
    return dflt;
}

bool gguf_get_bool(const gguf_file *f, const char *key, bool dflt) {
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv || kv->type != GGUF_VT_BOOL) return dflt;
    return kv->v.u != 0;
}

char *gguf_get_string(const gguf_file *f, const char *key) {
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv || kv->type != GGUF_VT_STRING || kv->v.s.len >= SIZE_MAX) return NULL;
    return sgl_strndup(kv->v.s.ptr, (size_t)kv->v.s.len);
}

static const gguf_kv *find_arr(const gguf_file *f, const char *key) {
    const gguf_kv *kv = gguf_find(f, key);
    return kv && kv->type == GGUF_VT_ARRAY ? kv : NULL;
}

uint64_t gguf_arr_len(const gguf_file *f, const char *key) {
    const gguf_kv *kv = find_arr(f, key);
    return kv ? kv->v.arr.n : 0;
}

/* Returns the offsets (from arr.data) of each string of a string array,
 * building them on first use; NULL on allocation failure. */
static const uint64_t *str_index(const gguf_file *f, const gguf_kv *kv) {
    gguf_priv *pv = f->priv;
    uint64_t k = (uint64_t)(kv - f->kv);
    uint64_t *idx = atomic_load_explicit(&pv->str_idx[k], memory_order_acquire);
    if (idx) return idx;
    pthread_mutex_lock(&pv->idx_lock);
    idx = atomic_load_explicit(&pv->str_idx[k], memory_order_relaxed);
    if (!idx) {
        uint64_t n = kv->v.arr.n;
        idx = malloc((n ? n : 1) * sizeof *idx); /* n <= file size / 8: validated at open */
        if (idx) {
            uint64_t off = 0;
            for (uint64_t i = 0; i < n; i++) { /* lengths were validated at open */
                idx[i] = off;
                off += 8 + rd_le(kv->v.arr.data + off, 8);
            }
            atomic_store_explicit(&pv->str_idx[k], idx, memory_order_release);
        }
    }
    pthread_mutex_unlock(&pv->idx_lock);
    return idx;
}

gguf_str gguf_arr_str(const gguf_file *f, const char *key, uint64_t i) {
    gguf_str none = {NULL, 0};
    const gguf_kv *kv = find_arr(f, key);
    if (!kv || kv->v.arr.type != GGUF_VT_STRING || i >= kv->v.arr.n) return none;
    const uint64_t *idx = str_index(f, kv);
    if (!idx) return none;
    const uint8_t *p = kv->v.arr.data + idx[i];
    return (gguf_str){(const char *)p + 8, rd_le(p, 8)};
}

/* Decodes element i of a fixed-size numeric array into a temporary kv. */
static bool arr_elem(const gguf_file *f, const char *key, uint64_t i, gguf_kv *out) {
    const gguf_kv *kv = find_arr(f, key);
    if (!kv || i >= kv->v.arr.n) return false;
    uint32_t t = kv->v.arr.type;
    int sz = vtype_size(t);
    if (!sz) return false;
    out->type = (gguf_vtype)t;
    decode_scalar(out, t, kv->v.arr.data + i * (uint64_t)sz);
    return true;
}

int64_t gguf_arr_int(const gguf_file *f, const char *key, uint64_t i, int64_t dflt) {
    gguf_kv e;
    if (!arr_elem(f, key, i, &e) || !is_int_type(e.type)) return dflt;
    return is_signed_type(e.type) ? e.v.i : (int64_t)e.v.u;
}

double gguf_arr_float(const gguf_file *f, const char *key, uint64_t i, double dflt) {
    gguf_kv e;
    if (!arr_elem(f, key, i, &e)) return dflt;
    if (e.type == GGUF_VT_FLOAT32 || e.type == GGUF_VT_FLOAT64) return e.v.f;
    return is_signed_type(e.type) ? (double)e.v.i : (double)e.v.u;
}

/* ---- writer ------------------------------------------------------------------- */

typedef struct wkv {
    char *key;
    uint32_t type;
    sgl_strbuf val; /* the encoded value (after the type field) */
} wkv;

typedef struct wtensor {
    char *name;
    sgl_dtype type;
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS];
    uint64_t nbytes;
    uint8_t *data;
} wtensor;

struct gguf_writer {
    wkv *kv;
    uint64_t n_kv, cap_kv;
    wtensor *t;
    uint64_t n_t, cap_t;
    bool failed;
    sgl_error err; /* the first failure, reported by gguf_writer_to_memory */
};

#define WRITER_ALIGNMENT 32u

gguf_writer *gguf_writer_new(void) {
    return calloc(1, sizeof(gguf_writer));
}

void gguf_writer_free(gguf_writer *w) {
    if (!w) return;
    for (uint64_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        sgl_strbuf_free(&w->kv[i].val);
    }
    for (uint64_t i = 0; i < w->n_t; i++) {
        free(w->t[i].name);
        free(w->t[i].data);
    }
    free(w->kv);
    free(w->t);
    free(w);
}

static int wfail(gguf_writer *w, const char *fmt, const char *name) {
    if (!w->failed) sgl_error_set(&w->err, fmt, name);
    w->failed = true;
    return -1;
}

static int put_le(sgl_strbuf *sb, uint64_t v, int n) {
    char b[8];
    for (int i = 0; i < n; i++) b[i] = (char)(v >> (8 * i));
    return sgl_strbuf_append(sb, b, (size_t)n);
}

static int put_str(sgl_strbuf *sb, const char *s, size_t n) {
    return put_le(sb, n, 8) || sgl_strbuf_append(sb, s, n);
}

static uint32_t f32_bits(float v) {
    uint32_t b;
    memcpy(&b, &v, 4);
    return b;
}

/* Adds a key with an empty value buffer; returns it or NULL (recorded). */
static wkv *wkv_add(gguf_writer *w, const char *key, uint32_t type) {
    if (!key || !*key) return wfail(w, "empty key%s", ""), NULL;
    for (uint64_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->kv[i].key, key)) return wfail(w, "duplicate key '%s'", key), NULL;
    if (grow((void **)&w->kv, &w->cap_kv, w->n_kv + 1, sizeof(wkv)))
        return wfail(w, "out of memory adding key '%s'", key), NULL;
    wkv *kv = &w->kv[w->n_kv];
    memset(kv, 0, sizeof *kv);
    if (!(kv->key = sgl_strdup(key))) return wfail(w, "out of memory adding key '%s'", key), NULL;
    kv->type = type;
    w->n_kv++;
    return kv;
}

static int wkv_done(gguf_writer *w, wkv *kv, int rc) {
    if (rc) return wfail(w, "out of memory setting key '%s'", kv->key);
    return 0;
}

int gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v) {
    wkv *kv = wkv_add(w, key, GGUF_VT_UINT32);
    return kv ? wkv_done(w, kv, put_le(&kv->val, v, 4)) : -1;
}

int gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v) {
    wkv *kv = wkv_add(w, key, GGUF_VT_INT32);
    return kv ? wkv_done(w, kv, put_le(&kv->val, (uint32_t)v, 4)) : -1;
}

int gguf_writer_set_f32(gguf_writer *w, const char *key, float v) {
    wkv *kv = wkv_add(w, key, GGUF_VT_FLOAT32);
    return kv ? wkv_done(w, kv, put_le(&kv->val, f32_bits(v), 4)) : -1;
}

int gguf_writer_set_bool(gguf_writer *w, const char *key, bool v) {
    wkv *kv = wkv_add(w, key, GGUF_VT_BOOL);
    return kv ? wkv_done(w, kv, put_le(&kv->val, v ? 1 : 0, 1)) : -1;
}

int gguf_writer_set_str(gguf_writer *w, const char *key, const char *v) {
    wkv *kv = wkv_add(w, key, GGUF_VT_STRING);
    return kv ? wkv_done(w, kv, put_str(&kv->val, v ? v : "", v ? strlen(v) : 0)) : -1;
}

int gguf_writer_set_arr_str(gguf_writer *w, const char *key, const char *const *v, uint64_t n) {
    wkv *kv = wkv_add(w, key, GGUF_VT_ARRAY);
    if (!kv) return -1;
    int rc = put_le(&kv->val, GGUF_VT_STRING, 4) || put_le(&kv->val, n, 8);
    for (uint64_t i = 0; i < n && !rc; i++) rc = put_str(&kv->val, v[i], strlen(v[i]));
    return wkv_done(w, kv, rc);
}

int gguf_writer_set_arr_i32(gguf_writer *w, const char *key, const int32_t *v, uint64_t n) {
    wkv *kv = wkv_add(w, key, GGUF_VT_ARRAY);
    if (!kv) return -1;
    int rc = put_le(&kv->val, GGUF_VT_INT32, 4) || put_le(&kv->val, n, 8);
    for (uint64_t i = 0; i < n && !rc; i++) rc = put_le(&kv->val, (uint32_t)v[i], 4);
    return wkv_done(w, kv, rc);
}

int gguf_writer_set_arr_f32(gguf_writer *w, const char *key, const float *v, uint64_t n) {
    wkv *kv = wkv_add(w, key, GGUF_VT_ARRAY);
    if (!kv) return -1;
    int rc = put_le(&kv->val, GGUF_VT_FLOAT32, 4) || put_le(&kv->val, n, 8);
    for (uint64_t i = 0; i < n && !rc; i++) rc = put_le(&kv->val, f32_bits(v[i]), 4);
    return wkv_done(w, kv, rc);
}

int gguf_writer_add_tensor(gguf_writer *w, const char *name, sgl_dtype type, uint32_t n_dims,
                           const uint64_t *ne, const void *data) {
    if (!name || !*name) return wfail(w, "empty tensor name%s", "");
    for (uint64_t i = 0; i < w->n_t; i++)
        if (!strcmp(w->t[i].name, name)) return wfail(w, "duplicate tensor name '%s'", name);
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS) return wfail(w, "tensor '%s': n_dims out of range", name);
    if (!sgl_dtype_known((int)type)) return wfail(w, "tensor '%s': unknown type", name);
    uint64_t rows = 1;
    for (uint32_t d = 1; d < n_dims; d++) {
        if (ne[d] == 0 || rows > UINT64_MAX / ne[d]) return wfail(w, "tensor '%s': bad shape", name);
        rows *= ne[d];
    }
    uint64_t row = ne[0] ? sgl_dtype_row_bytes((int)type, ne[0]) : 0;
    if (row == 0 || rows > SIZE_MAX / row)
        return wfail(w, "tensor '%s': row length is not a multiple of the block size (or is 0)", name);
    if (grow((void **)&w->t, &w->cap_t, w->n_t + 1, sizeof(wtensor)))
        return wfail(w, "out of memory adding tensor '%s'", name);
    wtensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    t->nbytes = row * rows;
    t->name = sgl_strdup(name);
    t->data = malloc((size_t)t->nbytes);
    if (!t->name || !t->data) {
        free(t->name);
        free(t->data);
        return wfail(w, "out of memory adding tensor '%s'", name);
    }
    memcpy(t->data, data, (size_t)t->nbytes);
    t->type = type;
    t->n_dims = n_dims;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = d < n_dims ? ne[d] : 1;
    w->n_t++;
    return 0;
}

static int put_pad(sgl_strbuf *sb) {
    static const char zeros[WRITER_ALIGNMENT];
    size_t pad = (WRITER_ALIGNMENT - sb->len % WRITER_ALIGNMENT) % WRITER_ALIGNMENT;
    return sgl_strbuf_append(sb, zeros, pad);
}

int gguf_writer_to_memory(gguf_writer *w, uint8_t **out, uint64_t *len, sgl_error *err) {
    *out = NULL;
    *len = 0;
    if (w->failed) {
        sgl_error_set(err, "%s", w->err.msg);
        return -1;
    }
    sgl_strbuf sb = {0};
    int rc = sgl_strbuf_append(&sb, "GGUF", 4) || put_le(&sb, 3, 4) || put_le(&sb, w->n_t, 8) ||
             put_le(&sb, w->n_kv, 8);
    for (uint64_t i = 0; i < w->n_kv && !rc; i++) {
        const wkv *kv = &w->kv[i];
        rc = put_str(&sb, kv->key, strlen(kv->key)) || put_le(&sb, kv->type, 4) ||
             sgl_strbuf_append(&sb, kv->val.data ? kv->val.data : "", kv->val.len);
    }
    uint64_t off = 0;
    for (uint64_t i = 0; i < w->n_t && !rc; i++) {
        const wtensor *t = &w->t[i];
        rc = put_str(&sb, t->name, strlen(t->name)) || put_le(&sb, t->n_dims, 4);
        for (uint32_t d = 0; d < t->n_dims && !rc; d++) rc = put_le(&sb, t->ne[d], 8);
        rc = rc || put_le(&sb, (uint32_t)t->type, 4) || put_le(&sb, off, 8);
        off += (t->nbytes + WRITER_ALIGNMENT - 1) / WRITER_ALIGNMENT * WRITER_ALIGNMENT;
    }
    rc = rc || put_pad(&sb);
    for (uint64_t i = 0; i < w->n_t && !rc; i++)
        rc = sgl_strbuf_append(&sb, (const char *)w->t[i].data, (size_t)w->t[i].nbytes) ||
             put_pad(&sb);
    if (rc) {
        sgl_strbuf_free(&sb);
        return sgl_error_set(err, "out of memory serialising GGUF");
    }
    *len = sb.len;
    *out = (uint8_t *)sgl_strbuf_take(&sb);
    return 0;
}

int gguf_writer_write_file(gguf_writer *w, const char *path, sgl_error *err) {
    uint8_t *buf;
    uint64_t len;
    if (gguf_writer_to_memory(w, &buf, &len, err)) return -1;
    FILE *fp = fopen(path, "wb");
    if (!fp) {
        free(buf);
        return sgl_error_set(err, "%s: cannot create: %s", path, strerror(errno));
    }
    size_t n = fwrite(buf, 1, (size_t)len, fp);
    int werr = ferror(fp);
    int cerr = fclose(fp);
    free(buf);
    if (n != len || werr || cerr) return sgl_error_set(err, "%s: write failed: %s", path, strerror(errno));
    return 0;
}
