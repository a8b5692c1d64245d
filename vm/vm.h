/* vm: SGVM, the interpreter for compiler/bytecode.h modules.
 *
 *   vm_config cfg = vm_config_default();
 *   cfg.engine = engine;                 // runtime/engine.h, borrowed
 *   cfg.chat = tmpl;                     // chat template for roles (or NULL)
 *   vm *v = vm_new(&cfg, &err);
 *   vm_inst *main = vm_spawn(v, module, module->entry, NULL, 0, false, &err);
 *   vm_run(v);                           // until every instance is done
 *   if (vm_inst_failed(main)) fputs(vm_inst_error(main), stderr);
 *   vm_free(v);
 *
 * Fibers: every program instance (a spawned call, each element of a
 * run_batch) runs on its own fiber, with its own value stack and call
 * frames (SGL calls never recurse in C). A fiber runs until an op needs
 * something that is not there yet: a variable still being generated, a
 * stream that must drain (fork, join, text), a run_batch whose instances
 * are still running. It then parks at that op (pc unchanged, operands still
 * on the stack) and is woken by whatever it waits for; the op re-executes.
 * Appends (gen included) never park: they queue on the stream (stream.h).
 *
 * Scheduler (vm_run): run every runnable fiber until all are parked or
 * done; hand every request the streams queued to the engine in one go (so
 * they batch); wait for completions; resume the fibers they wake; repeat.
 * If everything is parked and nothing is in flight the parked instances
 * fail with a "deadlock" error.
 *
 * Runtime errors fail the instance with a located message:
 *   file:line:col: error: message
 *     in fn_name at file:line:col
 *     in main at file:line:col
 * Other instances (the rest of a run_batch) go on. An instance is done when
 * its function has returned and every stream it created has drained; a
 * stream failure (engine error) fails the instance too.
 *
 * Dispatch is a switch, or computed goto where the compiler has it (the
 * VM_DISPATCH_SWITCH macro forces the switch).
 */
#ifndef SGL_VM_VM_H
#define SGL_VM_VM_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "compiler/bytecode.h"
#include "runtime/chat_template.h"
#include "runtime/engine.h"
#include "vm/link.h"
#include "vm/value.h"

typedef struct vm_config {
    sgl_engine *engine;        /* required; borrowed */
    const chat_template *chat; /* roles; NULL = the "plain" family */
    bool allow_io;             /* read_file, write_file, http_get, http_post, shell */
    FILE *out;                 /* print(); NULL = stdout */
    /* Run-level gen defaults (command-line flags): a map from kwargs.def
     * names to values, applied before run_batch's and the call site's own
     * arguments. Borrowed; none = engine defaults only. */
    vm_value gen_defaults;
    /* Prefill a function's prefix hint before a run_batch of it (and a
     * fork's shared prefix before its branches). Default true. */
    bool prefix_hints;
    /* Prompt for unconditional select scoring (see vm_link_set_uncond_prompt);
     * NULL = empty. Borrowed. */
    const char *uncond_prompt;
    /* Request trace (vm_link_set_trace), or NULL. */
    FILE *trace;
    /* Fail an instance after this many instructions (0: no limit), so a
     * runaway loop cannot stall a whole batch. */
    uint64_t max_steps;
    /* The engine as capability errors name it ("sglang:http://..."); NULL:
     * the local engine. Borrowed. */
    const char *backend;
    /* API speculative execution on chat-only engines (vm_link_set_api_spec):
     * the token budget of one speculative request; 0: off. */
    int32_t api_spec_tokens;
    /* Benchmark ablations (sglc bench). serial: at most one engine request
     * in flight and run_batch runs one instance at a time (no frontend
     * parallelism). no_prefill: PREFILL requests (fork prefixes, prefix
     * hints) are never sent. */
    bool serial;
    bool no_prefill;
    /* Called when a run_batch instance is done, with its spawn-to-done
     * seconds (per-program latency for benchmarks) and its error message
     * (borrowed) or NULL when it succeeded; NULL: none. */
    void (*batch_done)(void *ctx, double seconds, const char *error);
    void *batch_done_ctx;
    /* Called from vm_run about every poll_interval seconds (0: 0.1 s)
     * while instances run, also while it waits for the engine: a progress
     * display reads vm_progress_get here, a front end checks for Ctrl-C. A
     * non-zero return interrupts the run: queued requests are dropped,
     * those in flight are cancelled (sgl_engine_cancel), every instance not
     * done fails with "interrupted" and vm_run returns. The VM stays
     * usable: later vm_spawn / vm_run calls work as before. NULL: none. */
    int (*poll)(void *ctx);
    void *poll_ctx;
    double poll_interval;
    /* Resource limits (docs/language.md "Limits"); vm_config_default sets
     * the documented defaults, 0 means no limit. Bytes of strings, lists
     * and maps live at once, per instance and for the whole VM: an instance
     * past either fails with "memory limit of N MiB reached". */
    int64_t max_mem_inst, max_mem_run;
    uint32_t max_fork;  /* fork(s, n): most branches */
    uint32_t max_batch; /* run_batch: most instances in one call */
} vm_config;

#define VM_DEFAULT_MAX_MEM_INST ((int64_t)256 << 20)
#define VM_DEFAULT_MAX_MEM_RUN ((int64_t)1024 << 20)
#define VM_DEFAULT_MAX_FORK 1024
#define VM_DEFAULT_MAX_BATCH 100000

vm_config vm_config_default(void);

typedef struct vm vm;
typedef struct vm_inst vm_inst;

/* Returns a VM (caller frees with vm_free) or NULL with err set. */
vm *vm_new(const vm_config *cfg, sgl_error *err);
/* Frees every instance and value the VM holds. Modules are not freed. */
void vm_free(vm *v);

/* Starts an instance of function fn of module m (the module is borrowed and
 * must outlive the VM). args[0..n_args) are borrowed (retained). fresh: run
 * on a new stream bound to parameter 0 and make that stream the result
 * (args then fill parameters 1..); otherwise args fill parameters 0.. and
 * the result is the return value. The instance is owned by the VM; it runs
 * at the next vm_run. Returns NULL with err set (bad fn index, arity). */
vm_inst *vm_spawn(vm *v, const sgl_module *m, uint32_t fn, const vm_value *args, uint32_t n_args,
                  bool fresh, sgl_error *err);
/* Runs until no instance can make progress (normally: all done). Returns 0,
 * or -1 with err set on a VM-level failure (out of memory). Instance
 * failures are reported per instance. */
int vm_run(vm *v, sgl_error *err);

bool vm_inst_done(const vm_inst *in);
bool vm_inst_failed(const vm_inst *in);
/* The located error message (with traceback), or NULL. Owned by the VM. */
const char *vm_inst_error(const vm_inst *in);
/* Borrowed: the return value, or the fresh stream. none until done. */
vm_value vm_inst_result(const vm_inst *in);

/* Borrowed map of every variable the instance's streams produced (last
 * write wins), or none when there were none. */
vm_value vm_inst_vars(const vm_inst *in);
/* Where this instance's (and its run_batch children's) print() goes; NULL:
 * the VM's output. The FILE is borrowed. */
void vm_inst_set_output(vm_inst *in, FILE *out);

/* Called when a top-level instance (one from vm_spawn) is done, from inside
 * vm_run; the hook may vm_spawn more instances. */
typedef void (*vm_done_hook)(void *ctx, vm_inst *in);
void vm_set_done_hook(vm *v, vm_done_hook fn, void *ctx);

typedef struct vm_inst_stats {
    double seconds;            /* spawn to done */
    /* Engine requests of the instance's streams, run_batch instances it
     * started included (counted when they finish). */
    int64_t requests, prompt_tokens, completion_tokens, cached_tokens;
} vm_inst_stats;
void vm_inst_stats_get(const vm_inst *in, vm_inst_stats *out);

/* run_batch instances of this VM so far, all calls together: asked for
 * (the sizes of the run_batch calls made), started, done (failed ones
 * included) and failed. running = started - done. */
typedef struct vm_progress {
    int64_t batch_total, batch_started, batch_done, batch_failed;
} vm_progress;
void vm_progress_get(const vm *v, vm_progress *out);

/* Engine-side totals for this VM's requests (batching, tokens). */
void vm_engine_stats(const vm *v, vm_link_stats *out);

/* Instruction counter (all fibers), for benchmarks. */
uint64_t vm_instructions(const vm *v);

#endif
