/* caps: checks gen/select calls against what the engine can do
 * (sgl_engine_caps, runtime/engine.h), so that a program using something a
 * backend lacks (select without prompt logprobs, constraints, logprobs,
 * sampling fields an API does not take) fails with a located error instead
 * of silently meaning something else. Two places use it: before a program
 * runs, over every call site whose arguments are constants (`sglc check
 * --backend`, and `sglc run|batch|generate` before any request is sent), and
 * at each call, over the final arguments (dynamic ones included).
 */
#ifndef SGL_VM_CAPS_H
#define SGL_VM_CAPS_H

#include <stddef.h>
#include <stdio.h>

#include "compiler/bytecode.h"
#include "runtime/engine.h"
#include "vm/stream.h"

/* Checks one call's arguments. backend names the engine in the message
 * (NULL: the local engine). Returns 0, or -1 with msg[0..n) saying what is
 * missing. */
int vm_caps_check_args(const vm_gen_args *a, const sgl_engine_caps *c, const char *backend, char *msg, size_t n);

/* Checks every GEN/SELECT call site of m (constant arguments only; dynamic
 * ones are checked at the call). Writes one "file:line:col: error: ..." line
 * per problem to out (may be NULL). Returns the number of problems. */
int vm_caps_check_module(const sgl_module *m, const sgl_engine_caps *c, const char *backend, FILE *out);

#endif
