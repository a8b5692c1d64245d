/* fold.h: compile-time evaluation over constants (fold.c). Every folder
 * returns the result's constant index in the compile's pool, or -1 when it
 * does not fold (the VM would raise an error, or the result's text is the
 * VM's to decide). */
#ifndef SGL_COMPILER_FOLD_H
#define SGL_COMPILER_FOLD_H

#include "compiler/ir.h"

/* 1 / 0 for the truthiness of constant k, -1 if k is out of range. */
int comp_const_truthy(const comp *c, int32_t k);
/* Appends the f-string text of constant k (strings, ints, bools) to out.
 * Returns 0, or -1 if k is of a kind whose text is left to the VM. */
int comp_fold_format(const comp *c, int32_t k, sgl_strbuf *out);
int32_t comp_fold_binop(comp *c, sgl_op op, int32_t a, int32_t b);
int32_t comp_fold_unop(comp *c, sgl_op op, int32_t a);
int32_t comp_fold_index(comp *c, int32_t obj, int32_t idx);
/* len() and str() of constants. */
int32_t comp_fold_builtin(comp *c, sgl_builtin b, const int32_t *k, uint32_t n);

#endif
