/* gguf: reader (memory-mapped, versions 2 and 3) and writer for GGUF files.
 *
 * The reader checks every count, length and offset against the file size
 * before using it; a truncated or corrupted file yields an error message that
 * names what is wrong (which key / tensor, which offset), never a crash.
 * Strings and tensor data point into the mapping and live as long as the
 * gguf_file. Tensor names and keys are also available NUL-terminated.
 */
#ifndef SGL_GGUF_H
#define SGL_GGUF_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "kernels/dtype.h"
#include "util/util.h"

typedef enum gguf_vtype {
    GGUF_VT_UINT8 = 0, GGUF_VT_INT8 = 1, GGUF_VT_UINT16 = 2, GGUF_VT_INT16 = 3,
    GGUF_VT_UINT32 = 4, GGUF_VT_INT32 = 5, GGUF_VT_FLOAT32 = 6, GGUF_VT_BOOL = 7,
    GGUF_VT_STRING = 8, GGUF_VT_ARRAY = 9, GGUF_VT_UINT64 = 10, GGUF_VT_INT64 = 11,
    GGUF_VT_FLOAT64 = 12
} gguf_vtype;

/* A byte string inside the mapping; NOT NUL-terminated. */
typedef struct gguf_str {
    const char *ptr;
    uint64_t len;
} gguf_str;

typedef struct gguf_kv {
    const char *key;   /* NUL-terminated, owned by the gguf_file */
    gguf_vtype type;
    union {
        uint64_t u;    /* UINT8..UINT64, BOOL */
        int64_t i;     /* INT8..INT64 */
        double f;      /* FLOAT32, FLOAT64 */
        gguf_str s;    /* STRING */
        struct {
            gguf_vtype type;     /* element type (never ARRAY: nested arrays are rejected) */
            uint64_t n;          /* element count (validated against the file) */
            const uint8_t *data; /* first element in the mapping */
        } arr;
    } v;
} gguf_kv;

#define GGUF_MAX_DIMS 4

typedef struct gguf_tensor {
    const char *name;            /* NUL-terminated, owned by the gguf_file */
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS];  /* ne[0] is the fastest-varying (row length); unused dims are 1 */
    sgl_dtype type;
    uint64_t offset;             /* relative to the data section */
    uint64_t nbytes;
    const void *data;            /* in the mapping; aligned to the file's alignment */
} gguf_tensor;

typedef struct gguf_file {
    char *path;
    uint32_t version;
    uint64_t file_size;
    uint32_t alignment;         /* general.alignment or 32 */
    uint64_t n_kv;
    gguf_kv *kv;
    uint64_t n_tensors;
    gguf_tensor *tensors;
    uint64_t data_offset;       /* start of the tensor data section */
    const uint8_t *map;         /* whole file, read-only */
    void *priv;                 /* reader internals */
} gguf_file;

/* Opens and validates path. Returns a gguf_file (caller frees with
 * gguf_close) or NULL with err set to a message naming what is wrong. */
gguf_file *gguf_open(const char *path, sgl_error *err);
/* Same, over a caller-owned buffer that must outlive the result (tests). */
gguf_file *gguf_open_memory(const void *buf, uint64_t len, sgl_error *err);
void gguf_close(gguf_file *f);
/* Hands the whole pages inside [p, p + len) of a file-mapped gguf back to
 * the kernel: they leave the process's resident memory and are read again
 * from the file if touched (the data stays valid). A no-op for
 * gguf_open_memory. For weights the backend has copied (repacked). */
void gguf_release_range(const gguf_file *f, const void *p, uint64_t len);

/* Lookups return NULL / false / the default when the key is missing or has
 * another type; they never fail otherwise. */
const gguf_kv *gguf_find(const gguf_file *f, const char *key);
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name);
/* Integer value of any integer or bool type, else dflt. */
int64_t gguf_get_int(const gguf_file *f, const char *key, int64_t dflt);
double gguf_get_float(const gguf_file *f, const char *key, double dflt);
bool gguf_get_bool(const gguf_file *f, const char *key, bool dflt);
/* Returns a malloc'd NUL-terminated copy of a STRING value (caller frees), or NULL. */
char *gguf_get_string(const gguf_file *f, const char *key);
/* Array access: element count (0 when missing or not an array). */
uint64_t gguf_arr_len(const gguf_file *f, const char *key);
/* String-array element i (index built on first use); {NULL,0} when out of range. */
gguf_str gguf_arr_str(const gguf_file *f, const char *key, uint64_t i);
/* Numeric-array element i converted to int64 / double; dflt when out of range. */
int64_t gguf_arr_int(const gguf_file *f, const char *key, uint64_t i, int64_t dflt);
double gguf_arr_float(const gguf_file *f, const char *key, uint64_t i, double dflt);

/* Human-readable name of a value type ("uint32", "array[string]"...). */
const char *gguf_vtype_name(gguf_vtype t);

/* ---- writer ------------------------------------------------------------- */

/* Builds a GGUF v3 file in memory, then writes it. Tensors are added with
 * their bytes already in the target dtype (the writer copies them). */
typedef struct gguf_writer gguf_writer;

gguf_writer *gguf_writer_new(void);
void gguf_writer_free(gguf_writer *w);
int gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v);
int gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v);
int gguf_writer_set_f32(gguf_writer *w, const char *key, float v);
int gguf_writer_set_bool(gguf_writer *w, const char *key, bool v);
int gguf_writer_set_str(gguf_writer *w, const char *key, const char *v);
int gguf_writer_set_arr_str(gguf_writer *w, const char *key, const char *const *v, uint64_t n);
int gguf_writer_set_arr_i32(gguf_writer *w, const char *key, const int32_t *v, uint64_t n);
int gguf_writer_set_arr_f32(gguf_writer *w, const char *key, const float *v, uint64_t n);
/* ne as in gguf_tensor (ne[0] = row length); data holds nbytes for that shape and type. */
int gguf_writer_add_tensor(gguf_writer *w, const char *name, sgl_dtype type, uint32_t n_dims,
                           const uint64_t *ne, const void *data);
/* Serialises into a malloc'd buffer (caller frees). */
int gguf_writer_to_memory(gguf_writer *w, uint8_t **out, uint64_t *len, sgl_error *err);
int gguf_writer_write_file(gguf_writer *w, const char *path, sgl_error *err);

#endif
