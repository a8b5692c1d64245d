/* dtype: tensor element types (from dtype.def) and their block geometry.
 * Shared by the GGUF reader and the kernels; knows nothing of either. */
#ifndef SGL_DTYPE_H
#define SGL_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum sgl_dtype {
#define X(name, id, be, bb) SGL_DTYPE_##name = id,
#include "kernels/dtype.def"
#undef X
    SGL_DTYPE_MAX_ID = 64
} sgl_dtype;

/* Returns the type's name ("Q4_1"), or NULL for an id not in dtype.def. */
const char *sgl_dtype_name(int id);
/* Returns 1 if id names a type in dtype.def, else 0. */
int sgl_dtype_known(int id);
/* Elements per block and bytes per block; 0 for unknown ids. */
int sgl_dtype_block_elems(int id);
int sgl_dtype_block_bytes(int id);
/* Bytes of a row of n elements; returns 0 if id is unknown or n is not a
 * multiple of the block size. */
uint64_t sgl_dtype_row_bytes(int id, uint64_t n);

#endif
