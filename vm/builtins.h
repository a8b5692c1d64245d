/* builtins: SGL's plain builtins (docs/language.md §9): print, len, str,
 * int, float, range, keys, json_parse, json_dump, regex_match, time (plus the
 * text, list and math ones of builtins_ext.c), and the
 * I/O ones (read_file, write_file, http_get, http_post, shell) that work only
 * when the VM runs with allow_io. Stream primitives (gen, select, roles,
 * fork, join, run_batch, meta, text) are in vm.c.
 */
#ifndef SGL_VM_BUILTINS_H
#define SGL_VM_BUILTINS_H

#include <regex.h>
#include <stdbool.h>
#include <stdio.h>

#include "lang/ast.h"
#include "vm/value.h"

/* Calls plain builtin b with args[0..n) (borrowed). out: FILE for print;
 * allow_io gates the I/O builtins. Sets *out_val to a new reference and
 * returns 0, or -1 with err set (the message names the builtin). Returns -2
 * when b is not a plain builtin. */
int vm_builtin_plain(sgl_builtin b, const vm_value *args, uint32_t n, FILE *out, bool allow_io,
                     vm_value *out_val, sgl_error *err);

/* Whole-string match of text against pattern in SGL's regex dialect
 * (docs/language.md §10), via POSIX extended regexes. Returns 1 match,
 * 0 no match, -1 with err set for a pattern it cannot compile. */
int vm_regex_match(const char *pattern, const char *text, size_t text_len, sgl_error *err);

/* Compiles pattern (SGL's dialect) to a POSIX extended regex: anchored =
 * whole-text match, else it finds matches anywhere. Returns 0 (caller
 * regfree()s re) or -1 with err set. */
int vm_regex_compile(const char *pattern, bool anchored, regex_t *re, sgl_error *err);

/* builtins_ext.c: format, repr, slice, replace, join(sep, items), index,
 * count, upper, regex_find_all, regex_sub and the math builtins. Same
 * contract as vm_builtin_plain (no I/O, no output); -2 for other ids. */
int vm_builtin_ext(sgl_builtin b, const vm_value *args, uint32_t n, vm_value *out_val, sgl_error *err);

#endif
