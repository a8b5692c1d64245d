/* dtype: block geometry of tensor types, generated from dtype.def. */
#include "kernels/dtype.h"

typedef struct {
    const char *name;
    int block_elems, block_bytes;
} dtype_info;

static const dtype_info dtype_table[SGL_DTYPE_MAX_ID] = {
#define X(name, id, be, bb) [id] = {#name, be, bb},
#include "kernels/dtype.def"
#undef X
};

int sgl_dtype_known(int id) {
    return id >= 0 && id < SGL_DTYPE_MAX_ID && dtype_table[id].name != 0;
}
const char *sgl_dtype_name(int id) {
    return sgl_dtype_known(id) ? dtype_table[id].name : 0;
}
int sgl_dtype_block_elems(int id) {
    return sgl_dtype_known(id) ? dtype_table[id].block_elems : 0;
}
int sgl_dtype_block_bytes(int id) {
    return sgl_dtype_known(id) ? dtype_table[id].block_bytes : 0;
}
uint64_t sgl_dtype_row_bytes(int id, uint64_t n) {
    if (!sgl_dtype_known(id)) return 0;
    uint64_t be = (uint64_t)dtype_table[id].block_elems;
    if (n % be) return 0;
    return n / be * (uint64_t)dtype_table[id].block_bytes;
}
