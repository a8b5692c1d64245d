/* vm.c: SGVM's interpreter: module constants, instances (fibers) with
 * their value stacks and frames, the dispatch loop, stream primitives
 * (gen/select arguments, roles, fork/join, run_batch, text, meta), runtime
 * errors with tracebacks, and the scheduler that batches engine requests.
 * See vm.h for the execution model.
 */
#include "vm/vm.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "lang/lang.h"
#include "vm/builtins.h"
#include "vm/caps.h"
#include "vm/stream.h"

#if defined(__GNUC__) && !defined(VM_DISPATCH_SWITCH)
#define VM_COMPUTED_GOTO 1
#endif

#define VM_MAX_FRAMES 1000
#define VM_SLICE 200000 /* instructions a fiber runs before the scheduler looks at the engine */
#define TEXT_ITER_FLAG 0x80000000u /* vm_iter.pos of a text_iter: flag | bytes given so far */

/* Per-module runtime data: constants materialised once, function values. */
typedef struct vm_mod {
    const sgl_module *m;
    vm_value *consts;  /* [m->n_consts] */
    vm_value *fnvals;  /* [m->n_fns], created on first LOAD_FN */
    struct vm_mod *next;
} vm_mod;

typedef struct vm_frame {
    const sgl_bc_function *fn;
    vm_mod *mod;
    uint32_t pc;
    uint32_t base;  /* stack index of local 0 */
    bool fresh;     /* returns its stream (local 0) instead of the value */
} vm_frame;

/* A run_batch in progress on the fiber that called it. */
typedef struct vm_batch {
    vm_mod *mod;
    uint32_t fn;
    vm_value args;      /* list (retained) */
    vm_value defaults;  /* map of gen kwargs (retained) */
    vm_inst **insts;    /* [n] */
    uint32_t n, next, n_done, running, parallel;
    vm_prefill *pf;     /* prefix hint, or NULL */
    uint64_t seed_key;  /* instance i's key: mix(seed_key, i) */
    bool progress;      /* progress_bar=true: "run_batch: k/n done" on stderr */
} vm_batch;

typedef enum { FIB_RUNNABLE, FIB_PARKED, FIB_DONE } fib_state;

struct vm_inst {
    vm *v;
    vm_group *group;
    vm_value *stack;
    uint32_t sp, cap;
    vm_frame *frames;
    uint32_t n_frames, cap_frames;
    fib_state state;
    bool queued;
    bool returned;         /* the function returned; waiting for its streams */
    vm_inst *next_run;
    vm_inst *next_all;
    vm_batch *batch;       /* run_batch at the current op */
    vm_inst *batch_parent; /* woken when this instance is done */
    vm_value defaults;     /* gen defaults from run_batch kwargs (map) or none */
    vm_prefill *prefill;   /* fresh stream waits for it (batch prefix hint) */
    vm_value result;
    vm_value stream;       /* the fresh stream of a fresh instance, or none */
    bool failed;
    char *error;
    double t0, t1;
    FILE *out;             /* print() destination, or NULL for the VM's */
    uint64_t steps;        /* instructions executed */
    uint32_t mem;          /* memory account (vm_mem_open), inside the VM's */
    bool yielded;          /* its last run ended at the time slice, not parked */
};

struct vm {
    vm_config cfg;
    vm_link *link;
    vm_mod *mods;
    vm_inst *all;
    vm_inst *run_head, *run_tail;
    uint64_t n_instr;
    int n_live; /* instances not done */
    uint32_t mem; /* the run's memory account */
    vm_done_hook done_hook;
    void *done_ctx;
    sgl_engine_caps caps;  /* what the engine can do (caps.h) */
    uint32_t n_spawned; /* top-level instances so far (their seed keys) */
    vm_progress progress; /* run_batch counts (vm_progress_get) */
    double next_poll;     /* sgl_now() at which cfg.poll is due */
};

vm_config vm_config_default(void) {
    vm_config c;
    memset(&c, 0, sizeof c);
    c.gen_defaults = vm_none();
    c.prefix_hints = true;
    c.max_mem_inst = VM_DEFAULT_MAX_MEM_INST;
    c.max_mem_run = VM_DEFAULT_MAX_MEM_RUN;
    c.max_fork = VM_DEFAULT_MAX_FORK;
    c.max_batch = VM_DEFAULT_MAX_BATCH;
    return c;
}

/* ---- scheduling -------------------------------------------------------------- */

static void make_runnable(vm *v, vm_inst *in) {
    if (in->state == FIB_DONE || in->queued) return;
    in->state = FIB_RUNNABLE;
    in->queued = true;
    in->next_run = NULL;
    if (v->run_tail) v->run_tail->next_run = in;
    else v->run_head = in;
    v->run_tail = in;
}

static void wake(void *ctx, void *fiber) {
    vm *v = ctx;
    vm_inst *in = fiber;
    if (in && in->state == FIB_PARKED) make_runnable(v, in);
}

vm *vm_new(const vm_config *cfg, sgl_error *err) {
    if (!cfg || !cfg->engine) {
        sgl_error_set(err, "vm: no engine");
        return NULL;
    }
    vm *v = calloc(1, sizeof *v);
    if (!v) {
        sgl_error_set(err, "out of memory");
        return NULL;
    }
    v->cfg = *cfg;
    v->cfg.gen_defaults = vm_retain(cfg->gen_defaults);
    sgl_engine_caps_get(cfg->engine, &v->caps);
    v->link = vm_link_new(cfg->engine, cfg->chat);
    if (!v->link) {
        free(v);
        sgl_error_set(err, "out of memory");
        return NULL;
    }
    vm_link_set_waker(v->link, wake, v);
    vm_link_set_uncond_prompt(v->link, cfg->uncond_prompt);
    vm_link_set_trace(v->link, cfg->trace);
    vm_link_set_api_spec(v->link, cfg->api_spec_tokens);
    vm_link_set_limits(v->link, cfg->serial ? 1 : 0, cfg->no_prefill);
    v->mem = vm_mem_open(0, cfg->max_mem_run);
    return v;
}

static void release_range(vm_value *a, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) vm_release(a[i]);
}

static void batch_free(vm_batch *b) {
    if (!b) return;
    vm_release(b->args);
    vm_release(b->defaults);
    free(b->insts);
    vm_prefill_release(b->pf);
    free(b);
}

static void inst_drop_stack(vm_inst *in) {
    release_range(in->stack, in->sp);
    free(in->stack);
    in->stack = NULL;
    in->sp = in->cap = 0;
    free(in->frames);
    in->frames = NULL;
    in->n_frames = in->cap_frames = 0;
}

void vm_free(vm *v) {
    if (!v) return;
    vm_link_set_waker(v->link, NULL, NULL);
    for (vm_inst *in = v->all, *next; in; in = next) {
        next = in->next_all;
        inst_drop_stack(in);
        batch_free(in->batch);
        vm_release(in->result);
        vm_release(in->stream);
        vm_release(in->defaults);
        vm_prefill_release(in->prefill);
        vm_group_release(in->group);
        vm_mem_close(in->mem);
        free(in->error);
        free(in);
    }
    vm_link_free(v->link);
    for (vm_mod *md = v->mods, *next; md; md = next) {
        next = md->next;
        release_range(md->consts, md->m->n_consts);
        if (md->fnvals) release_range(md->fnvals, md->m->n_fns);
        free(md->consts);
        free(md->fnvals);
        free(md);
    }
    vm_release(v->cfg.gen_defaults);
    vm_mem_close(v->mem);
    free(v);
}

/* ---- modules --------------------------------------------------------------------- */

static vm_mod *mod_get(vm *v, const sgl_module *m, sgl_error *err) {
    for (vm_mod *md = v->mods; md; md = md->next)
        if (md->m == m) return md;
    vm_mod *md = calloc(1, sizeof *md);
    if (!md) goto oom;
    md->m = m;
    md->consts = calloc(m->n_consts ? m->n_consts : 1, sizeof(vm_value));
    md->fnvals = calloc(m->n_fns ? m->n_fns : 1, sizeof(vm_value));
    if (!md->consts || !md->fnvals) goto oom;
    for (uint32_t i = 0; i < m->n_consts; i++) {
        const sgl_const *c = &m->consts[i];
        vm_value val = vm_none();
        switch (c->kind) {
        case SGL_CONST_NONE: break;
        case SGL_CONST_BOOL: val = vm_bool(c->b); break;
        case SGL_CONST_INT: val = vm_int(c->i); break;
        case SGL_CONST_FLOAT: val = vm_float(c->f); break;
        case SGL_CONST_STRING: val = vm_str_new(c->str.bytes, c->str.len); break;
        case SGL_CONST_LIST:
            val = vm_list_new(c->agg.n);
            for (uint32_t k = 0; k < c->agg.n; k++) {
                uint32_t ix = c->agg.items[k];
                vm_list_push(val, ix < i ? vm_retain(md->consts[ix]) : vm_none());
            }
            break;
        case SGL_CONST_MAP:
            val = vm_map_new();
            for (uint32_t k = 0; k < c->agg.n; k++) {
                uint32_t ki = c->agg.items[2 * k], vi = c->agg.items[2 * k + 1];
                if (ki < i && vi < i)
                    vm_map_set(val, vm_retain(md->consts[ki]), vm_retain(md->consts[vi]), NULL);
            }
            break;
        }
        md->consts[i] = val;
    }
    md->next = v->mods;
    v->mods = md;
    return md;
oom:
    if (md) {
        free(md->consts);
        free(md->fnvals);
        free(md);
    }
    sgl_error_set(err, "out of memory");
    return NULL;
}

/* ---- value semantics for lists and maps ------------------------------------------ */

/* Lists and maps have value semantics (docs/language.md §4): a container
 * stored somewhere new while still referenced elsewhere is copied, so a
 * later item assignment through one name is not seen through another.
 * Consumes v; returns the value to store. */
static vm_value own(vm_value v) {
    if ((v.type == VM_LIST || v.type == VM_MAP) && v.as.obj->rc > 1) {
        /* one level: nested containers stay shared until indexed
         * (vm_index_get unshares them), so this costs O(items), not O(size) */
        vm_value c = vm_copy(v);
        vm_release(v);
        return c;
    }
    return v;
}

/* ---- instances --------------------------------------------------------------------- */

static int ensure_stack(vm_inst *in, uint32_t need) {
    if (need <= in->cap) return 0;
    uint32_t nc = in->cap ? in->cap : 64;
    while (nc < need) nc *= 2;
    vm_value *ns = realloc(in->stack, nc * sizeof(vm_value));
    if (!ns) return -1;
    in->stack = ns;
    in->cap = nc;
    return 0;
}

static int push_frame(vm_inst *in, vm_mod *md, uint32_t fi, uint32_t base, bool fresh, sgl_error *err) {
    const sgl_bc_function *fn = &md->m->fns[fi];
    if (in->n_frames >= VM_MAX_FRAMES)
        return sgl_error_set(err, "call stack overflow: more than %d nested calls (calling %s)",
                             VM_MAX_FRAMES, fn->name);
    if (in->n_frames == in->cap_frames) {
        uint32_t nc = in->cap_frames ? in->cap_frames * 2 : 8;
        vm_frame *nf = realloc(in->frames, nc * sizeof *nf);
        if (!nf) return sgl_error_set(err, "out of memory");
        in->frames = nf;
        in->cap_frames = nc;
    }
    if (ensure_stack(in, base + fn->n_locals + fn->max_stack + 8) < 0)
        return sgl_error_set(err, "out of memory");
    /* Arguments already occupy base..sp; they become the first locals. */
    for (uint32_t i = base; i < in->sp; i++) in->stack[i] = own(in->stack[i]);
    while (in->sp < base + fn->n_locals) in->stack[in->sp++] = vm_none();
    vm_frame *f = &in->frames[in->n_frames++];
    f->fn = fn;
    f->mod = md;
    f->pc = 0;
    f->base = base;
    f->fresh = fresh;
    return 0;
}

static vm_inst *inst_new(vm *v) {
    vm_inst *in = calloc(1, sizeof *in);
    if (!in) return NULL;
    in->v = v;
    in->group = vm_group_new();
    if (!in->group) {
        free(in);
        return NULL;
    }
    in->result = in->stream = in->defaults = vm_none();
    in->t0 = sgl_now();
    in->mem = vm_mem_open(v->mem, v->cfg.max_mem_inst);
    in->next_all = v->all;
    v->all = in;
    v->n_live++;
    return in;
}

static void inst_finish(vm_inst *in);

/* Fails an instance that never started (bad run_batch element, ...). */
static void inst_fail_plain(vm_inst *in, const char *msg) {
    in->failed = true;
    free(in->error);
    in->error = sgl_strdup(msg);
    if (in->stream.type == VM_STREAM) vm_stream_fail(in->stream.as.st, msg);
    inst_finish(in);
}

/* Sets up in to call fi with args (borrowed). */
static int inst_start(vm_inst *in, vm_mod *md, uint32_t fi, const vm_value *args, uint32_t n_args,
                      bool fresh, sgl_error *err) {
    if (fi >= md->m->n_fns) return sgl_error_set(err, "no function #%u in the module", fi);
    const sgl_bc_function *fn = &md->m->fns[fi];
    uint32_t want = fresh ? fn->n_params - 1 : fn->n_params;
    if (fresh && fn->n_params == 0)
        return sgl_error_set(err, "%s() has no stream parameter to run on a fresh stream", fn->name);
    if (n_args != want)
        return sgl_error_set(err, "%s() takes %u argument%s, got %u", fn->name, want, want == 1 ? "" : "s",
                             n_args);
    if (ensure_stack(in, n_args + 2) < 0) return sgl_error_set(err, "out of memory");
    if (fresh) {
        vm_value s = vm_stream_new(in->v->link, in->group);
        if (s.type != VM_STREAM) return sgl_error_set(err, "out of memory");
        if (in->prefill) {
            s.as.st->prefill = in->prefill;
            in->prefill->rc++;
        }
        in->stream = vm_retain(s);
        in->stack[in->sp++] = s;
    }
    for (uint32_t i = 0; i < n_args; i++) in->stack[in->sp++] = vm_retain(args[i]);
    if (push_frame(in, md, fi, 0, fresh, err) < 0) return -1;
    make_runnable(in->v, in);
    return 0;
}

vm_inst *vm_spawn(vm *v, const sgl_module *m, uint32_t fn, const vm_value *args, uint32_t n_args,
                  bool fresh, sgl_error *err) {
    vm_mod *md = mod_get(v, m, err);
    if (!md) return NULL;
    if (fn >= m->n_fns) {
        sgl_error_set(err, "no function #%u in the module", fn);
        return NULL;
    }
    vm_inst *in = inst_new(v);
    if (!in) {
        sgl_error_set(err, "out of memory");
        return NULL;
    }
    in->group->seed_key = vm_seed_mix(0x5350 /* "SP" */, v->n_spawned++, 0);
    if (inst_start(in, md, fn, args, n_args, fresh, err) < 0) {
        inst_fail_plain(in, err->msg);
        return NULL;
    }
    return in;
}

bool vm_inst_done(const vm_inst *in) { return in->state == FIB_DONE; }
vm_value vm_inst_vars(const vm_inst *in) { return in->group->vars; }
void vm_inst_set_output(vm_inst *in, FILE *out) { in->out = out; }
void vm_set_done_hook(vm *v, vm_done_hook fn, void *ctx) {
    v->done_hook = fn;
    v->done_ctx = ctx;
}
bool vm_inst_failed(const vm_inst *in) { return in->failed; }
const char *vm_inst_error(const vm_inst *in) { return in->error; }
vm_value vm_inst_result(const vm_inst *in) { return in->result; }

void vm_inst_stats_get(const vm_inst *in, vm_inst_stats *out) {
    out->seconds = (in->state == FIB_DONE ? in->t1 : sgl_now()) - in->t0;
    out->requests = in->group->requests;
    out->prompt_tokens = in->group->prompt_tokens;
    out->completion_tokens = in->group->completion_tokens;
    out->cached_tokens = in->group->cached_tokens;
}

void vm_engine_stats(const vm *v, vm_link_stats *out) { vm_link_stats_get(v->link, out); }
void vm_progress_get(const vm *v, vm_progress *out) { *out = v->progress; }
uint64_t vm_instructions(const vm *v) { return v->n_instr; }

static void batch_child_done(vm_inst *parent, vm_inst *child);

/* A failed instance's streams: what they still have queued is dropped at
 * the next flush and what is in flight cancelled, so a failure does not
 * leave engine work behind (a REPL entry or a server request that failed
 * must not spend the next run's time on gens nobody will read). */
static void inst_kill_streams(vm_inst *in) {
    vm_group *g = in->group;
    if (g->dead) return;
    g->dead = true;
    if (!g->error && in->error) g->error = sgl_strdup(in->error);
    vm_link_cancel_group(in->v->link, g);
}

static void inst_finish(vm_inst *in) {
    if (in->state == FIB_DONE) return;
    if (in->failed) inst_kill_streams(in);
    in->state = FIB_DONE;
    in->t1 = sgl_now();
    in->v->n_live--;
    inst_drop_stack(in);
    vm_mem_close(in->mem); /* what it returns stays charged to it until freed */
    if (in->failed && in->result.type == VM_NONE && in->stream.type == VM_STREAM)
        in->result = vm_retain(in->stream);
    if (in->batch_parent && in->v->cfg.batch_done)
        in->v->cfg.batch_done(in->v->cfg.batch_done_ctx, in->t1 - in->t0,
                              in->failed ? (in->error ? in->error : "failed") : NULL);
    if (in->batch_parent) batch_child_done(in->batch_parent, in);
    else if (in->v->done_hook) in->v->done_hook(in->v->done_ctx, in);
}

/* ---- runtime errors ------------------------------------------------------------------- */

static void where_of(const vm_frame *f, uint32_t pc, char *buf, size_t cap) {
    const sgl_bc_line *ln = sgl_bc_line_at(f->fn, pc);
    const sgl_module *m = f->mod->m;
    if (!ln) {
        snprintf(buf, cap, "%s", f->fn->name);
        return;
    }
    const char *file = ln->file < m->n_files ? m->files[ln->file] : "?";
    snprintf(buf, cap, "%s:%" PRIu32 ":%" PRIu32, file, ln->line, ln->col);
}

/* Fails the running instance with "where: error: msg" and a traceback. */
static void inst_fail(vm_inst *in, const char *msg) {
    sgl_strbuf sb = {0};
    char where[512];
    for (uint32_t k = in->n_frames; k-- > 0;) {
        const vm_frame *f = &in->frames[k];
        uint32_t depth = in->n_frames - 1 - k; /* 0 = innermost */
        if (depth == 0 || in->n_frames > 1) where_of(f, f->pc ? f->pc - 1 : 0, where, sizeof where);
        if (depth == 0) sgl_strbuf_printf(&sb, "%s: error: %s", where, msg);
        if (in->n_frames < 2) continue;
        /* Deep recursion: the innermost and outermost 8 frames only. */
        if (in->n_frames > 16 && depth >= 8 && k >= 8) {
            if (depth == 8) sgl_strbuf_printf(&sb, "\n  ... %u more calls ...", in->n_frames - 16);
            continue;
        }
        sgl_strbuf_printf(&sb, "\n  in %s at %s", f->fn->name, where);
    }
    if (!in->n_frames) sgl_strbuf_printf(&sb, "error: %s", msg);
    /* A frame run on a fresh stream whose first argument is a stream: most
     * likely a call one argument short that meant to extend that stream. */
    for (uint32_t k = in->n_frames; k-- > 1;) {
        const vm_frame *f = &in->frames[k];
        if (!f->fresh || f->fn->n_params < 2 || in->stack[f->base + 1].type != VM_STREAM) continue;
        sgl_strbuf_printf(&sb,
                          "\n  note: %s() was called on a fresh stream because one argument is missing, so its "
                          "parameter '%s' got a stream; did you mean %s(s, ...) with all %u arguments?",
                          f->fn->name, f->fn->param_names[1], f->fn->name, f->fn->n_params);
        break;
    }
    in->failed = true;
    free(in->error);
    in->error = sgl_strbuf_take(&sb);
    if (in->stream.type == VM_STREAM) {
        /* What a reader of the instance's stream sees (after its own location). */
        sgl_strbuf rs = {0};
        if (in->n_frames) {
            const vm_frame *f = &in->frames[in->n_frames - 1];
            where_of(f, f->pc ? f->pc - 1 : 0, where, sizeof where);
            sgl_strbuf_printf(&rs, "the instance failed at %s: %s", where, msg);
            /* Nested calls: the instance's traceback, innermost first, on the same line. */
            for (uint32_t k = in->n_frames, shown = 0; in->n_frames > 1 && k-- > 0; shown++) {
                if (shown == 8 && k > 0) {
                    sgl_strbuf_printf(&rs, ", ... %u more calls", k);
                    k = 0; /* the outermost frame next */
                }
                f = &in->frames[k];
                where_of(f, f->pc ? f->pc - 1 : 0, where, sizeof where);
                sgl_strbuf_printf(&rs, "%s%s at %s", shown ? ", called from " : " (in ", f->fn->name, where);
                if (k == 0) sgl_strbuf_putc(&rs, ')');
            }
        } else {
            sgl_strbuf_printf(&rs, "the instance failed: %s", msg);
        }
        vm_stream_fail(in->stream.as.st, rs.data ? rs.data : msg);
        sgl_strbuf_free(&rs);
    }
    inst_finish(in);
}

/* ---- gen / select arguments --------------------------------------------------------- */

static int kw_num(const sgl_kwarg_info *ki, vm_value val, double *out, sgl_error *err) {
    if (ki->type == SGL_KWT_INT && val.type != VM_INT)
        return sgl_error_set(err, "%s must be an int, not %s", ki->name, vm_type_name(val.type));
    if (val.type != VM_INT && val.type != VM_FLOAT)
        return sgl_error_set(err, "%s must be a number, not %s", ki->name, vm_type_name(val.type));
    double x = val.type == VM_INT ? (double)val.as.i : val.as.f;
    if ((!isnan(ki->lo) && x < ki->lo) || (!isnan(ki->hi) && x > ki->hi)) {
        if (isnan(ki->hi)) return sgl_error_set(err, "%s must be >= %g, got %g", ki->name, ki->lo, x);
        return sgl_error_set(err, "%s must be in [%g, %g], got %g", ki->name, ki->lo, ki->hi, x);
    }
    *out = x;
    return 0;
}

static int str_list(const char *what, vm_value val, bool allow_single, char ***out, int32_t *n,
                    sgl_error *err) {
    uint32_t cnt = val.type == VM_LIST ? vm_list_len(val) : 1;
    if (val.type == VM_STR && !allow_single)
        return sgl_error_set(err, "%s must be a list of strings", what);
    if (val.type != VM_LIST && val.type != VM_STR)
        return sgl_error_set(err, "%s must be a string or a list of strings, not %s", what,
                             vm_type_name(val.type));
    char **arr = calloc(cnt ? cnt : 1, sizeof(char *));
    if (!arr) return sgl_error_set(err, "out of memory");
    for (uint32_t i = 0; i < cnt; i++) {
        vm_value it = val.type == VM_LIST ? vm_list_get(val, i) : val;
        if (it.type != VM_STR) {
            for (uint32_t k = 0; k < i; k++) free(arr[k]);
            free(arr);
            return sgl_error_set(err, "%s: item %u is a %s, not a string", what, i, vm_type_name(it.type));
        }
        arr[i] = sgl_strndup(vm_str_cstr(it), vm_str_len(it));
    }
    for (int32_t i = 0; i < *n; i++) free((*out)[i]);
    free(*out);
    *out = arr;
    *n = (int32_t)cnt;
    return 0;
}

/* Applies one keyword argument to a gen/select. */
static int apply_kwarg(vm_gen_args *a, uint32_t id, vm_value val, sgl_error *err) {
    const sgl_kwarg_info *ki = sgl_kwarg_get((sgl_kwarg_id)id);
    if (!ki) return sgl_error_set(err, "unknown keyword argument #%u", id);
    if (val.type == VM_NONE && id != SGL_KWARG_REGEX && id != SGL_KWARG_JSON_SCHEMA &&
        id != SGL_KWARG_GRAMMAR)
        return 0; /* unset */
    double x = 0;
    switch ((sgl_kwarg_id)id) {
    case SGL_KWARG_MAX_TOKENS:
    case SGL_KWARG_MIN_TOKENS:
    case SGL_KWARG_TOP_K:
    case SGL_KWARG_SEED:
    case SGL_KWARG_TOP_LOGPROBS_NUM:
    case SGL_KWARG_LOGPROB_START_LEN:
    case SGL_KWARG_TEMPERATURE:
    case SGL_KWARG_TOP_P:
    case SGL_KWARG_MIN_P:
    case SGL_KWARG_FREQUENCY_PENALTY:
    case SGL_KWARG_PRESENCE_PENALTY:
    case SGL_KWARG_REPETITION_PENALTY:
        if (kw_num(ki, val, &x, err) < 0) return -1;
        if (x > 2147483647.0 && id != SGL_KWARG_SEED) x = 2147483647.0;
        break;
    default: break;
    }
    switch ((sgl_kwarg_id)id) {
    case SGL_KWARG_MAX_TOKENS: a->sp.max_new_tokens = (int32_t)x; break;
    case SGL_KWARG_MIN_TOKENS: a->sp.min_new_tokens = (int32_t)x; break;
    case SGL_KWARG_TOP_K:
        if (x == 0) return sgl_error_set(err, "top_k must be -1 or >= 1, got 0");
        a->sp.top_k = (int32_t)x;
        break;
    case SGL_KWARG_SEED:
        a->sp.seed = (uint64_t)x;
        a->seed_fixed = true;
        break;
    case SGL_KWARG_TOP_LOGPROBS_NUM: a->sp.top_logprobs_num = (int32_t)x; break;
    case SGL_KWARG_LOGPROB_START_LEN: a->sp.logprob_start_len = (int32_t)x; break;
    case SGL_KWARG_RETURN_TEXT_IN_LOGPROBS: /* token texts are always included */
        if (val.type != VM_BOOL)
            return sgl_error_set(err, "%s must be a bool, not %s", ki->name, vm_type_name(val.type));
        break;
    case SGL_KWARG_TEMPERATURE: a->sp.temperature = (float)x; break;
    case SGL_KWARG_TOP_P:
        if (x <= 0) return sgl_error_set(err, "top_p must be in (0, 1], got %g", x);
        a->sp.top_p = (float)x;
        break;
    case SGL_KWARG_MIN_P: a->sp.min_p = (float)x; break;
    case SGL_KWARG_FREQUENCY_PENALTY: a->sp.frequency_penalty = (float)x; break;
    case SGL_KWARG_PRESENCE_PENALTY: a->sp.presence_penalty = (float)x; break;
    case SGL_KWARG_REPETITION_PENALTY: a->sp.repetition_penalty = (float)x; break;
    case SGL_KWARG_STREAM:
        if (val.type != VM_BOOL) return sgl_error_set(err, "stream must be a bool, not %s", vm_type_name(val.type));
        a->stream = val.as.b;
        break;
    case SGL_KWARG_IGNORE_EOS:
    case SGL_KWARG_RETURN_LOGPROB:
    case SGL_KWARG_TOKEN_HEALING:
    case SGL_KWARG_JUMP_FORWARD:
        if (val.type != VM_BOOL)
            return sgl_error_set(err, "%s must be a bool, not %s", ki->name, vm_type_name(val.type));
        if (id == SGL_KWARG_IGNORE_EOS) a->sp.ignore_eos = val.as.b;
        else if (id == SGL_KWARG_TOKEN_HEALING) a->sp.token_healing = val.as.b;
        else if (id == SGL_KWARG_JUMP_FORWARD) a->sp.jump_forward = val.as.b;
        else a->sp.return_logprob = val.as.b;
        break;
    case SGL_KWARG_STOP: return str_list("stop", val, true, &a->stop, &a->n_stop, err);
    case SGL_KWARG_STOP_TOKEN_IDS: {
        if (val.type != VM_LIST)
            return sgl_error_set(err, "stop_token_ids must be a list of ints, not %s", vm_type_name(val.type));
        uint32_t n = vm_list_len(val);
        int32_t *ids = calloc(n ? n : 1, sizeof(int32_t));
        if (!ids) return sgl_error_set(err, "out of memory");
        for (uint32_t i = 0; i < n; i++) {
            vm_value it = vm_list_get(val, i);
            if (it.type != VM_INT || it.as.i < 0 || it.as.i > INT32_MAX) {
                free(ids);
                return sgl_error_set(err, "stop_token_ids: item %u is not a token id", i);
            }
            ids[i] = (int32_t)it.as.i;
        }
        free(a->stop_ids);
        a->stop_ids = ids;
        a->n_stop_ids = (int32_t)n;
        break;
    }
    case SGL_KWARG_DTYPE: {
        const char *d = val.type == VM_STR ? vm_str_cstr(val) : "";
        if (!strcmp(d, "int")) a->dtype = VM_DTYPE_INT;
        else if (!strcmp(d, "float")) a->dtype = VM_DTYPE_FLOAT;
        else if (!strcmp(d, "bool")) a->dtype = VM_DTYPE_BOOL;
        else return sgl_error_set(err, "dtype must be \"int\", \"float\" or \"bool\"");
        break;
    }
    case SGL_KWARG_REGEX:
    case SGL_KWARG_JSON_SCHEMA:
    case SGL_KWARG_GRAMMAR: {
        char **slot = id == SGL_KWARG_REGEX         ? &a->regex
                      : id == SGL_KWARG_JSON_SCHEMA ? &a->json_schema
                                                    : &a->grammar;
        free(*slot);
        *slot = NULL;
        if (val.type == VM_NONE) break;
        if (id == SGL_KWARG_JSON_SCHEMA && val.type == VM_MAP) {
            sgl_strbuf sb = {0};
            vm_json_dump(&sb, val, true, NULL);
            *slot = sgl_strbuf_take(&sb);
        } else if (val.type == VM_STR) {
            *slot = sgl_strndup(vm_str_cstr(val), vm_str_len(val));
        } else {
            return sgl_error_set(err, "%s must be a string%s, not %s", ki->name,
                                 id == SGL_KWARG_JSON_SCHEMA ? " or a map" : "",
                                 vm_type_name(val.type));
        }
        if (!*slot) return sgl_error_set(err, "out of memory");
        break;
    }
    case SGL_KWARG_CHOICES:
        if (str_list("choices", val, false, &a->choices, &a->n_choices, err) < 0) return -1;
        if (a->n_choices == 0) return sgl_error_set(err, "choices must not be empty");
        if (!a->is_select) a->method = VM_SELECT_GREEDY_TOKEN; /* gen(choices=): §8.1 */
        a->is_select = true;
        break;
    case SGL_KWARG_METHOD: {
        const char *mname = val.type == VM_STR ? vm_str_cstr(val) : "";
        int k = -1;
        for (int i = 0; i < 3; i++)
            if (!strcmp(mname, sgl_select_methods[i])) k = i;
        char q[VM_QUOTE_CAP];
        if (k < 0) return sgl_error_set(err, "unknown select method %s", vm_quote_buf(q, sizeof q, mname, strlen(mname), 60));
        a->method = (vm_select_method)k;
        break;
    }
    default: break; /* parallel, mode: not gen arguments */
    }
    return 0;
}

static int apply_defaults(vm_gen_args *a, vm_value defaults, sgl_error *err) {
    if (defaults.type != VM_MAP) return 0;
    for (uint32_t i = 0; i < vm_map_len(defaults); i++) {
        vm_value k = defaults.as.m->entries[i].key;
        if (k.type != VM_STR) continue;
        int id = sgl_kwarg_lookup(vm_str_cstr(k));
        if (id < 0) return sgl_error_set(err, "unknown gen argument '%s'", vm_str_cstr(k));
        if (id == SGL_KWARG_PARALLEL || id == SGL_KWARG_MODE || id == SGL_KWARG_PROGRESS_BAR) continue;
        if (apply_kwarg(a, (uint32_t)id, defaults.as.m->entries[i].val, err) < 0) return -1;
    }
    return 0;
}

/* Number of kwargs of a site whose value is on the stack. */
static uint32_t site_dynamic(const sgl_bc_site *s) {
    uint32_t n = 0;
    for (uint32_t i = 0; i < s->n_kwargs; i++) n += s->kwargs[i].konst == SGL_SITE_DYNAMIC;
    return n;
}

/* ---- run_batch ---------------------------------------------------------------------------- */

static void batch_spawn_next(vm *v, vm_inst *parent) {
    vm_batch *b = parent->batch;
    while (b->next < b->n && b->running < b->parallel) {
        uint32_t i = b->next++;
        vm_inst *c = inst_new(v);
        if (!c) break;
        b->insts[i] = c;
        b->running++;
        v->progress.batch_started++;
        c->group->seed_key = vm_seed_mix(b->seed_key, 0x4249 /* "BI" */, i);
        c->batch_parent = parent;
        c->out = parent->out;
        c->defaults = vm_retain(b->defaults);
        if (b->pf) {
            c->prefill = b->pf;
            b->pf->rc++;
        }
        const sgl_bc_function *fn = &b->mod->m->fns[b->fn];
        bool fresh = (fn->flags & SGL_FNF_STREAM) != 0;
        vm_value item = vm_list_get(b->args, i);
        uint32_t first = fresh ? 1 : 0, n_args = fn->n_params - first;
        vm_value *args = calloc(n_args ? n_args : 1, sizeof(vm_value));
        char msg[1100] = "";
        if (!args) snprintf(msg, sizeof msg, "out of memory");
        else if (item.type == VM_LIST) { /* positional: the parameters in order */
            if (vm_list_len(item) != n_args)
                snprintf(msg, sizeof msg, "run_batch: argument %u has %u values for the %u parameters of %s()", i,
                         vm_list_len(item), n_args, fn->name);
            for (uint32_t k = 0; !msg[0] && k < n_args; k++) args[k] = vm_list_get(item, k);
        } else if (item.type != VM_MAP)
            snprintf(msg, sizeof msg, "run_batch: argument %u is a %s, not a map of parameters or a list of arguments", i,
                     vm_type_name(item.type));
        for (uint32_t k = 0; !msg[0] && item.type == VM_MAP && k < n_args; k++) {
            const char *pname = fn->param_names[first + k];
            vm_value *pv = vm_map_get_cstr(item, pname);
            if (!pv) snprintf(msg, sizeof msg, "run_batch: argument %u has no '%s' for %s()", i, pname, fn->name);
            else args[k] = *pv;
        }
        for (uint32_t k = 0; !msg[0] && item.type == VM_MAP && k < vm_map_len(item); k++) {
            vm_value key = item.as.m->entries[k].key;
            bool known = false;
            for (uint32_t p = first; key.type == VM_STR && p < fn->n_params; p++)
                known |= !strcmp(fn->param_names[p], vm_str_cstr(key));
            if (!known) {
                sgl_strbuf ks = {0};
                vm_str_append(&ks, key);
                snprintf(msg, sizeof msg, "run_batch: argument %u names '%s', which %s() does not take", i,
                         ks.data ? ks.data : "", fn->name);
                sgl_strbuf_free(&ks);
            }
        }
        sgl_error err = {{0}};
        if (!msg[0] && inst_start(c, b->mod, b->fn, args, n_args, fresh, &err) < 0)
            snprintf(msg, sizeof msg, "%s", err.msg);
        free(args);
        if (msg[0]) {
            /* A fresh instance's result is its stream, which records the error. */
            if (fresh && c->stream.type == VM_NONE) c->stream = vm_stream_new(v->link, c->group);
            inst_fail_plain(c, msg); /* calls batch_child_done */
        }
    }
}

static void batch_child_done(vm_inst *parent, vm_inst *child) {
    /* A script's token counts include its run_batch instances'. */
    parent->group->requests += child->group->requests;
    parent->group->prompt_tokens += child->group->prompt_tokens;
    parent->group->completion_tokens += child->group->completion_tokens;
    parent->group->cached_tokens += child->group->cached_tokens;
    vm_batch *b = parent->batch;
    if (!b) return;
    parent->v->progress.batch_done++;
    parent->v->progress.batch_failed += child->failed;
    b->n_done++;
    b->running--;
    if (b->progress) fprintf(stderr, "\rrun_batch: %u/%u done%s", b->n_done, b->n, b->n_done == b->n ? "\n" : "");
    batch_spawn_next(parent->v, parent);
    make_runnable(parent->v, parent);
}

/* Builds the fn's prefix hint on a scratch stream and queues its PREFILL.
 * Returns the prefill record (one reference) or NULL when there is none. */
static vm_prefill *prefix_prefill(vm *v, vm_mod *md, const sgl_bc_function *fn) {
    if (!fn->n_prefix || !v->cfg.prefix_hints) return NULL;
    vm_value sv = vm_stream_new(v->link, NULL);
    if (sv.type != VM_STREAM) return NULL;
    for (uint32_t i = 0; i < fn->n_prefix; i++) {
        const sgl_bc_prefix_item *it = &fn->prefix[i];
        if (it->kind == SGL_PREFIX_TEXT) {
            if (it->konst < md->m->n_consts && md->consts[it->konst].type == VM_STR)
                vm_stream_append_text(sv.as.st, vm_str_cstr(md->consts[it->konst]),
                                      vm_str_len(md->consts[it->konst]), NULL);
        } else if (it->kind == SGL_PREFIX_ROLE_BEGIN) {
            vm_stream_role_begin(sv.as.st, (vm_role)it->role, NULL);
        } else {
            vm_stream_role_end(sv.as.st, (vm_role)it->role, NULL);
        }
    }
    vm_prefill *pf = NULL;
    vm_stream *st = sv.as.st;
    if (st->text.len) {
        pf = calloc(1, sizeof *pf);
        if (pf && !(pf->text = sgl_strndup(st->text.data, st->text.len))) {
            free(pf);
            pf = NULL;
        }
        if (pf) {
            pf->rc = 1;
            if (vm_link_queue_prefill(v->link, pf) < 0) {
                vm_prefill_release(pf);
                pf = NULL;
            }
        }
    }
    vm_release(sv);
    return pf;
}

/* run_batch(fn, args, parallel=N, gen defaults...). Returns 0 (done, *out
 * set), 1 (park), -1 (error). */
static int prim_run_batch(vm_inst *in, const vm_value *args, const uint32_t *kw_ids, const vm_value *kw_vals,
                          uint32_t n_kw, vm_value *out, sgl_error *err) {
    vm *v = in->v;
    if (!in->batch) {
        if (args[0].type != VM_FN)
            return sgl_error_set(err, "run_batch: the first argument must be a function, not %s",
                                 vm_type_name(args[0].type));
        if (args[1].type != VM_LIST)
            return sgl_error_set(err, "run_batch: the second argument must be a list of maps, not %s",
                                 vm_type_name(args[1].type));
        if (v->cfg.max_batch && vm_list_len(args[1]) > v->cfg.max_batch)
            return sgl_error_set(err, "run_batch: %u instances exceed the limit of %u per call",
                                 vm_list_len(args[1]), v->cfg.max_batch);
        vm_mod *md = (vm_mod *)args[0].as.fn->code;
        uint32_t fi = args[0].as.fn->index;
        const sgl_bc_function *fn = &md->m->fns[fi];
        vm_batch *b = calloc(1, sizeof *b);
        if (!b) return sgl_error_set(err, "out of memory");
        b->mod = md;
        b->fn = fi;
        b->args = vm_retain(args[1]);
        b->n = vm_list_len(args[1]);
        b->parallel = b->n ? b->n : 1;
        b->seed_key = vm_seed_mix(in->group->seed_key, 0x4241 /* "BA" */, in->group->n_batches++);
        b->defaults = vm_map_new();
        b->insts = calloc(b->n ? b->n : 1, sizeof(vm_inst *));
        if (b->defaults.type != VM_MAP || !b->insts) {
            batch_free(b);
            return sgl_error_set(err, "out of memory");
        }
        /* Inherit the caller's defaults, then this call's keyword arguments. */
        if (in->defaults.type == VM_MAP)
            for (uint32_t i = 0; i < vm_map_len(in->defaults); i++)
                vm_map_set(b->defaults, vm_retain(in->defaults.as.m->entries[i].key),
                           vm_retain(in->defaults.as.m->entries[i].val), NULL);
        for (uint32_t i = 0; i < n_kw; i++) {
            const sgl_kwarg_info *ki = sgl_kwarg_get((sgl_kwarg_id)kw_ids[i]);
            if (!ki) continue;
            if (kw_ids[i] == SGL_KWARG_PROGRESS_BAR) {
                if (kw_vals[i].type != VM_BOOL) {
                    batch_free(b);
                    return sgl_error_set(err, "run_batch: progress_bar must be a bool");
                }
                b->progress = kw_vals[i].as.b;
                continue;
            }
            if (kw_ids[i] == SGL_KWARG_PARALLEL) {
                if (kw_vals[i].type == VM_STR && !strcmp(vm_str_cstr(kw_vals[i]), "auto")) continue;
                double p;
                if (kw_num(ki, kw_vals[i], &p, err) < 0) {
                    batch_free(b);
                    return -1;
                }
                b->parallel = (uint32_t)SGL_MIN(p, 1e9);
                continue;
            }
            /* Validate now so a bad default fails the caller, not each child. */
            vm_gen_args *probe = vm_gen_args_new();
            int rc = probe ? apply_kwarg(probe, kw_ids[i], kw_vals[i], err) : -1;
            vm_gen_args_free(probe);
            if (rc < 0) {
                batch_free(b);
                return sgl_error_prefix(err, "run_batch");
            }
            vm_map_set_cstr(b->defaults, ki->name, vm_retain(kw_vals[i]), NULL);
        }
        if (v->cfg.serial) b->parallel = 1;
        v->progress.batch_total += b->n;
        if (fn->flags & SGL_FNF_STREAM) b->pf = prefix_prefill(v, md, fn);
        in->batch = b;
        batch_spawn_next(v, in);
    }
    vm_batch *b = in->batch;
    if (b->n_done < b->n) return 1;
    vm_value l = vm_list_new(b->n);
    if (l.type != VM_LIST) return sgl_error_set(err, "out of memory");
    for (uint32_t i = 0; i < b->n; i++) vm_list_push(l, vm_retain(b->insts[i] ? b->insts[i]->result : vm_none()));
    batch_free(b);
    in->batch = NULL;
    *out = l;
    return 0;
}

/* ---- builtin calls ------------------------------------------------------------------------- */

static vm_wait_status want_stream(vm_value s, const char *fn, sgl_error *err) {
    if (s.type != VM_STREAM) {
        sgl_error_set(err, "%s(): expected a stream, got %s", fn, vm_type_name(s.type));
        return VM_FAILED;
    }
    return VM_READY;
}

/* Calls builtin b. args: positional values (borrowed); kw_*: keyword
 * arguments. Returns 0 (*out set), 1 (park), -1 (err set). */
static int call_builtin(vm_inst *in, sgl_builtin b, const vm_value *args, uint32_t n, const uint32_t *kw_ids,
                        const vm_value *kw_vals, uint32_t n_kw, vm_value *out, sgl_error *err) {
    vm *v = in->v;
    *out = vm_none();
    vm_wait_status ws;
    switch (b) {
    case SGL_BUILTIN_RUN_BATCH: return prim_run_batch(in, args, kw_ids, kw_vals, n_kw, out, err);
    case SGL_BUILTIN_RUN: { /* run(f, args, overrides...): a run_batch of one; its stream */
        vm_value one[2] = {args[0], vm_list_new(1)};
        if (one[1].type != VM_LIST) return sgl_error_set(err, "out of memory");
        vm_list_push(one[1], n > 1 ? vm_retain(args[1]) : vm_map_new());
        vm_value l = vm_none();
        int rc = prim_run_batch(in, one, kw_ids, kw_vals, n_kw, &l, err);
        vm_release(one[1]);
        if (rc == 0) {
            *out = vm_retain(vm_list_get(l, 0));
            vm_release(l);
        }
        return rc < 0 ? sgl_error_prefix(err, "run") : rc;
    }
    case SGL_BUILTIN_TEXT:
        if (want_stream(args[0], "text", err) != VM_READY) return -1;
        ws = vm_stream_want_idle(args[0].as.st, in, out, err);
        return ws == VM_WAIT ? 1 : ws == VM_FAILED ? -1 : 0;
    case SGL_BUILTIN_MESSAGES: {
        if (want_stream(args[0], "messages", err) != VM_READY) return -1;
        ws = vm_stream_want_idle(args[0].as.st, in, NULL, err);
        if (ws != VM_READY) return ws == VM_WAIT ? 1 : -1;
        vm_value src = args[0].as.st->messages, l = vm_list_new(vm_list_len(src));
        for (uint32_t i = 0; l.type == VM_LIST && i < vm_list_len(src); i++) vm_list_push(l, vm_retain(vm_list_get(src, i)));
        *out = l;
        return 0;
    }
    case SGL_BUILTIN_PRINT:
    case SGL_BUILTIN_STR:
    case SGL_BUILTIN_JSON_DUMP:
    case SGL_BUILTIN_REPR:
        /* Showing a stream waits for its generations, as SGLang's state does. */
        for (uint32_t i = 0; i < n; i++) {
            if (args[i].type != VM_STREAM) continue;
            ws = vm_stream_want_idle(args[i].as.st, in, NULL, err);
            if (ws == VM_WAIT) return 1;
            if (ws == VM_FAILED) return -1;
        }
        break;
    case SGL_BUILTIN_TEXT_ITER: {
        if (want_stream(args[0], "text_iter", err) != VM_READY) return -1;
        if (n > 1 && args[1].type != VM_STR)
            return sgl_error_set(err, "text_iter(): the variable name must be a string, not %s", vm_type_name(args[1].type));
        vm_value pair = vm_list_new(2);
        if (pair.type != VM_LIST) return sgl_error_set(err, "out of memory");
        vm_list_push(pair, vm_retain(args[0]));
        vm_list_push(pair, n > 1 ? vm_retain(args[1]) : vm_none());
        int rc = vm_iter_new(pair, out, err);
        vm_release(pair);
        if (rc < 0) return -1;
        out->as.it->pos = TEXT_ITER_FLAG; /* ITER_NEXT reads pieces, not the list */
        return 0;
    }
    case SGL_BUILTIN_RET_VALUE:
        if (want_stream(args[0], "ret_value", err) != VM_READY) return -1;
        *out = vm_retain(args[0].as.st->ret_value);
        return 0;
    case SGL_BUILTIN_META:
        if (want_stream(args[0], "meta", err) != VM_READY) return -1;
        ws = vm_stream_want_meta(args[0].as.st, args[1], in, out, err);
        return ws == VM_WAIT ? 1 : ws == VM_FAILED ? -1 : 0;
    case SGL_BUILTIN_GEN:
    case SGL_BUILTIN_SELECT:
    case SGL_BUILTIN_SYSTEM:
    case SGL_BUILTIN_USER:
    case SGL_BUILTIN_ASSISTANT:
    case SGL_BUILTIN_JOIN:
        if (n == 2) break; /* join(sep, items) */
        /* fall through */
    case SGL_BUILTIN_FORK:
        return sgl_error_set(err, "%s() is a stream primitive the compiler lowers to its own op",
                             sgl_builtin_name(b));
    default: break;
    }
    int rc = vm_builtin_plain(b, args, n, in->out ? in->out : v->cfg.out, v->cfg.allow_io, out, err);
    if (rc == -2) return sgl_error_set(err, "unknown builtin #%d", (int)b);
    return rc;
}

/* ---- the interpreter ---------------------------------------------------------------------- */

static const sgl_op binop_of[SGL_BC__COUNT] = {
    [SGL_BC_ADD] = SGL_OP_ADD, [SGL_BC_SUB] = SGL_OP_SUB, [SGL_BC_MUL] = SGL_OP_MUL,
    [SGL_BC_DIV] = SGL_OP_DIV, [SGL_BC_MOD] = SGL_OP_MOD, [SGL_BC_EQ] = SGL_OP_EQ,
    [SGL_BC_NE] = SGL_OP_NE,   [SGL_BC_LT] = SGL_OP_LT,   [SGL_BC_LE] = SGL_OP_LE,
    [SGL_BC_GT] = SGL_OP_GT,   [SGL_BC_GE] = SGL_OP_GE,
};

/* `x += b` / `x = x + b` on a list or string that only local x and the
 * operand stack hold, when the next op stores the result back into x:
 * extends x in place instead of copying (turns loops that build a list or
 * string piece by piece from quadratic into linear). Returns true when
 * done; then the stack's a is the result. */
static bool add_in_place(vm_inst *in, const vm_frame *fr, vm_value *a, vm_value b) {
    if ((a->type != VM_LIST && a->type != VM_STR) || fr->pc >= fr->fn->n_code) return false;
    sgl_instr nx = fr->fn->code[fr->pc];
    if (SGL_INSTR_OP(nx) != SGL_BC_STORE_LOCAL) return false;
    uint32_t k = SGL_INSTR_A(nx);
    if (k >= fr->fn->n_locals) return false;
    vm_value *slot = &in->stack[fr->base + k];
    if (slot->type != a->type || slot->as.obj != a->as.obj || a->as.obj->rc != 2) return false;
    if (a->type == VM_LIST && b.type == VM_LIST) {
        if (b.as.l == a->as.l) return false;
        for (uint32_t i = 0; i < vm_list_len(b); i++)
            if (vm_list_push(*a, vm_retain(vm_list_get(b, i))) < 0) return false;
        return true;
    }
    if (a->type == VM_STR && b.type == VM_STR && b.as.s != a->as.s) {
        if (vm_str_append_inplace(a, vm_str_cstr(b), vm_str_len(b)) < 0) return false;
        slot->as.s = a->as.s; /* the object may have moved */
        return true;
    }
    return false;
}

/* A fork group: a non-empty list of streams (what fork returns). `b += x`
 * on one appends x to every branch, as SGLang's `forks += x`. */
static bool is_fork_list(vm_value v) {
    if (v.type != VM_LIST || vm_list_len(v) == 0) return false;
    for (uint32_t i = 0; i < vm_list_len(v); i++)
        if (vm_list_get(v, i).type != VM_STREAM) return false;
    return true;
}

/* Appends v to stream s per APPEND mode. Returns 0, 1 (park: v is a busy
 * stream), -1. */
static int do_append(vm_inst *in, vm_value s, vm_value v, uint32_t mode, sgl_error *err) {
    if (is_fork_list(s)) {
        if (v.type == VM_STREAM || v.type == VM_FN)
            return sgl_error_set(err, "appending a %s to every branch is not supported: use a loop, "
                                      "for i in range(len(b)) { b[i] += ... }", vm_type_name(v.type));
        for (uint32_t i = 0; i < vm_list_len(s); i++)
            if (do_append(in, vm_list_get(s, i), v, mode, err) < 0) return -1;
        return 0;
    }
    if (s.type != VM_STREAM)
        return sgl_error_set(err, "cannot append to a %s: `+=` appends only to streams", vm_type_name(s.type));
    vm_stream *st = s.as.st;
    if (v.type == VM_STREAM) {
        vm_wait_status ws = vm_stream_want_idle(v.as.st, in, NULL, err);
        if (ws == VM_WAIT) return 1;
        if (ws == VM_FAILED) return -1;
        return vm_stream_append_stream(st, v.as.st, err);
    }
    if (mode == SGL_APPEND_VAR_BEGIN || mode == SGL_APPEND_VAR_END) {
        if (v.type != VM_STR)
            return sgl_error_set(err, "var_scope(): the variable name must be a string, not %s", vm_type_name(v.type));
        return vm_stream_var_scope(st, vm_str_cstr(v), mode == SGL_APPEND_VAR_END, err);
    }
    if (mode == SGL_APPEND_IMAGE) {
        if (v.type != VM_STR) return sgl_error_set(err, "image(): the path must be a string, not %s", vm_type_name(v.type));
        return vm_stream_append_image(st, vm_str_cstr(v), err);
    }
    if (v.type == VM_STR) return vm_stream_append_text(st, vm_str_cstr(v), vm_str_len(v), err);
    if (mode == SGL_APPEND_STR)
        return sgl_error_set(err, "cannot append a %s to a stream (convert it with str())",
                             vm_type_name(v.type));
    sgl_strbuf sb = {0};
    vm_str_append(&sb, v);
    int rc = vm_stream_append_text(st, sb.data ? sb.data : "", sb.len, err);
    sgl_strbuf_free(&sb);
    return rc;
}

/* Builds gen/select arguments from call site A; the name and dynamic
 * kwargs are at stack[top - n_dyn - has_name ... top). */
static vm_gen_args *site_args(vm_inst *in, vm_mod *md, const sgl_bc_site *site, const vm_value *dyn,
                              vm_value name, bool is_select, const char *where, sgl_error *err) {
    vm_gen_args *a = vm_gen_args_new();
    if (!a) {
        sgl_error_set(err, "out of memory");
        return NULL;
    }
    a->is_select = is_select;
    a->where = sgl_strdup(where);
    if (name.type == VM_STR) a->name = sgl_strndup(vm_str_cstr(name), vm_str_len(name));
    else if (name.type != VM_NONE) {
        sgl_error_set(err, "%s: the variable name must be a string, not %s", is_select ? "select" : "gen",
                      vm_type_name(name.type));
        goto fail;
    }
    if (apply_defaults(a, in->v->cfg.gen_defaults, err) < 0 || apply_defaults(a, in->defaults, err) < 0)
        goto fail;
    /* A seed from the run or run_batch is a base each request's seed is
     * derived from (so samples stay independent); only the call's own
     * seed= fixes the request's seed. */
    if (a->seed_fixed) {
        a->seed_base = a->sp.seed;
        a->seed_base_set = true;
        a->seed_fixed = false;
    }
    uint32_t d = 0;
    for (uint32_t i = 0; i < site->n_kwargs; i++) {
        const sgl_bc_kwarg *k = &site->kwargs[i];
        vm_value val = k->konst == SGL_SITE_DYNAMIC
                           ? dyn[d++]
                           : ((uint32_t)k->konst < md->m->n_consts ? md->consts[k->konst] : vm_none());
        if (apply_kwarg(a, k->id, val, err) < 0) goto fail;
    }
    if (is_select && a->n_choices == 0) {
        sgl_error_set(err, "select: no choices given");
        goto fail;
    }
    char cmsg[600];
    if (vm_caps_check_args(a, &in->v->caps, in->v->cfg.backend, cmsg, sizeof cmsg) < 0) {
        vm_gen_args_free(a);
        sgl_error_set(err, "%s", cmsg);
        return NULL;
    }
    return a;
fail:
    sgl_error_prefix(err, "%s", is_select ? "select" : "gen");
    vm_gen_args_free(a);
    return NULL;
}

/* Runs fiber in until it parks, finishes or fails. */
static void fiber_run(vm *v, vm_inst *in) {
    sgl_error err = {{0}};
    uint32_t slice = 0;
    vm_frame *fr;
    const sgl_instr *code;
    sgl_instr ins;
    uint32_t op;
    vm_value a, b, r;

#define STK (in->stack)
#define SP (in->sp)
#define TOP (STK[SP - 1])
#define PEEK(k) (STK[SP - 1 - (k)])
#define PUSH(x) (STK[SP++] = (x))
#define POP() (STK[--SP])
#define FAIL_MSG(...)                                                                              \
    do {                                                                                           \
        sgl_error_set(&err, __VA_ARGS__);                                                          \
        goto fail;                                                                                 \
    } while (0)
#define CHECK_RC(expr)                                                                             \
    do {                                                                                           \
        if ((expr) < 0) goto fail;                                                                 \
    } while (0)
#define PARK()                                                                                     \
    do {                                                                                           \
        fr->pc--;                                                                                  \
        in->state = FIB_PARKED;                                                                    \
        return;                                                                                    \
    } while (0)
#define NEXT goto next
#define JUMP_BY(sj) (fr->pc = (uint32_t)((int64_t)fr->pc + (sj)))

#ifdef VM_COMPUTED_GOTO
    static const void *const labels[SGL_BC__COUNT] = {
#define OPCODE(name, fmt, pops, pushes, flags, doc) &&op_##name,
#include "compiler/opcodes.def"
#undef OPCODE
    };
#define OP(name) op_##name:
#else
#define OP(name) case SGL_BC_##name:
#endif

    if (in->returned) goto finishing;

reload:
    fr = &in->frames[in->n_frames - 1];
    code = fr->fn->code;
next:
    if (++slice > VM_SLICE) {
        /* Long computation: let the scheduler hand other fibers' requests
         * to the engine, then continue where we are. */
        in->yielded = true;
        make_runnable(v, in);
        return;
    }
    if (vm_mem_refused_at) goto fail; /* an allocation of the previous op was refused */
    if (fr->pc >= fr->fn->n_code) FAIL_MSG("bad bytecode: ran off the end of %s", fr->fn->name);
    if (SP + 4 > in->cap && ensure_stack(in, SP + 16) < 0) FAIL_MSG("out of memory");
    ins = code[fr->pc++];
    op = SGL_INSTR_OP(ins);
    v->n_instr++;
    if (++in->steps > v->cfg.max_steps && v->cfg.max_steps)
        FAIL_MSG("step limit exceeded: more than %llu instructions", (unsigned long long)v->cfg.max_steps);
    if (op >= SGL_BC__COUNT) FAIL_MSG("bad bytecode: opcode %u", op);
#ifdef VM_COMPUTED_GOTO
    goto *labels[op];
#else
    switch ((sgl_opcode)op) {
#endif

    OP(NOP) NEXT;
    OP(LOAD_CONST) {
        uint32_t k = SGL_INSTR_A(ins);
        if (k >= fr->mod->m->n_consts) FAIL_MSG("bad bytecode: constant %u", k);
        vm_value c = fr->mod->consts[k];
        PUSH(vm_copy(c)); /* a constant list or map is copied, anything else retained */
        NEXT;
    }
    OP(LOAD_LOCAL) {
        uint32_t k = SGL_INSTR_A(ins);
        if (k >= fr->fn->n_locals) FAIL_MSG("bad bytecode: local %u", k);
        PUSH(vm_retain(STK[fr->base + k]));
        NEXT;
    }
    OP(STORE_LOCAL) {
        uint32_t k = SGL_INSTR_A(ins);
        if (k >= fr->fn->n_locals) FAIL_MSG("bad bytecode: local %u", k);
        a = POP();
        vm_value *slot = &STK[fr->base + k];
        if (vm_is_obj(a) && vm_is_obj(*slot) && a.as.obj == slot->as.obj) {
            vm_release(a); /* x = x (e.g. after an in-place +=): nothing to copy */
            NEXT;
        }
        a = own(a);
        vm_release(*slot);
        *slot = a;
        NEXT;
    }
    OP(LOAD_FN) {
        uint32_t k = SGL_INSTR_A(ins);
        if (k >= fr->mod->m->n_fns) FAIL_MSG("bad bytecode: function %u", k);
        vm_value *fv = &fr->mod->fnvals[k];
        if (fv->type == VM_NONE) *fv = vm_fn_new(fr->mod, k, fr->mod->m->fns[k].name);
        PUSH(vm_retain(*fv));
        NEXT;
    }
    OP(POP) {
        vm_release(POP());
        NEXT;
    }
    OP(DUP) {
        a = vm_retain(TOP);
        PUSH(a);
        NEXT;
    }
    OP(ADD) OP(SUB) OP(MUL) OP(DIV) OP(MOD) {
        if (op == SGL_BC_ADD && add_in_place(in, fr, &PEEK(1), TOP)) {
            vm_release(POP());
            NEXT;
        }
        b = POP();
        a = POP();
        int rc = vm_arith(binop_of[op], a, b, &r, &err);
        vm_release(a);
        vm_release(b);
        CHECK_RC(rc);
        PUSH(r);
        NEXT;
    }
    OP(EQ) OP(NE) OP(LT) OP(LE) OP(GT) OP(GE) {
        b = POP();
        a = POP();
        bool t = false;
        int rc = vm_compare(binop_of[op], a, b, &t, &err);
        vm_release(a);
        vm_release(b);
        CHECK_RC(rc);
        PUSH(vm_bool(t));
        NEXT;
    }
    OP(IN) OP(NOT_IN) {
        b = POP();
        a = POP();
        bool t = false;
        int rc = vm_contains(b, a, &t, &err);
        vm_release(a);
        vm_release(b);
        CHECK_RC(rc);
        PUSH(vm_bool(op == SGL_BC_IN ? t : !t));
        NEXT;
    }
    OP(NEG) OP(NOT) {
        a = POP();
        int rc = vm_unary(op == SGL_BC_NEG ? SGL_OP_NEG : SGL_OP_NOT, a, &r, &err);
        vm_release(a);
        CHECK_RC(rc);
        PUSH(r);
        NEXT;
    }
    OP(ADD_ASSIGN) {
        a = PEEK(1);
        b = TOP;
        if (a.type == VM_STREAM || (b.type != VM_LIST && is_fork_list(a))) {
            int rc = do_append(in, a, b, SGL_APPEND_VALUE, &err);
            if (rc == 1) PARK();
            CHECK_RC(rc);
            vm_release(POP());
            NEXT;
        }
        if (add_in_place(in, fr, &PEEK(1), b)) {
            vm_release(POP());
            NEXT;
        }
        SP -= 2;
        int rc = vm_arith(SGL_OP_ADD, a, b, &r, &err);
        vm_release(a);
        vm_release(b);
        CHECK_RC(rc);
        PUSH(r);
        NEXT;
    }
    OP(JUMP) {
        JUMP_BY(SGL_INSTR_SJ(ins));
        NEXT;
    }
    OP(JUMP_IF_FALSE) OP(JUMP_IF_TRUE) {
        a = POP();
        bool t = vm_truthy(a);
        vm_release(a);
        if (t == (op == SGL_BC_JUMP_IF_TRUE)) JUMP_BY(SGL_INSTR_SJ(ins));
        NEXT;
    }
    OP(AND_JUMP) OP(OR_JUMP) {
        a = POP();
        bool t = vm_truthy(a);
        vm_release(a);
        if (t == (op == SGL_BC_OR_JUMP)) {
            PUSH(vm_bool(t));
            JUMP_BY(SGL_INSTR_SJ(ins));
        }
        NEXT;
    }
    OP(BOOL) {
        a = POP();
        bool t = vm_truthy(a);
        vm_release(a);
        PUSH(vm_bool(t));
        NEXT;
    }
    OP(ITER_INIT) {
        if (TOP.type == VM_ITER) NEXT; /* already an iterator (text_iter) */
        a = POP();
        int rc = vm_iter_new(a, &r, &err);
        vm_release(a);
        CHECK_RC(rc);
        PUSH(r);
        NEXT;
    }
    OP(ITER_NEXT) {
        if (TOP.type != VM_ITER) FAIL_MSG("bad bytecode: ITER_NEXT without an iterator");
        if (TOP.as.it->pos & TEXT_ITER_FLAG) { /* text_iter(s, name): pieces as they arrive */
            vm_iter *ti = TOP.as.it;
            vm_value st = vm_list_get(ti->src, 0), nm = vm_list_get(ti->src, 1);
            size_t consumed = ti->pos & ~TEXT_ITER_FLAG;
            vm_wait_status ws =
                vm_stream_text_piece(st.as.st, nm.type == VM_STR ? vm_str_cstr(nm) : NULL, &consumed, in, &r, &err);
            if (ws == VM_WAIT) PARK();
            if (ws == VM_FAILED) goto fail;
            if (consumed > ~TEXT_ITER_FLAG) consumed = ~TEXT_ITER_FLAG;
            ti->pos = TEXT_ITER_FLAG | (uint32_t)consumed;
            vm_release(POP());
            if (r.type != VM_NONE) PUSH(r);
            else JUMP_BY(SGL_INSTR_SJ(ins));
            NEXT;
        }
        a = POP();
        bool more = vm_iter_next(a, &r);
        vm_release(a);
        if (more) PUSH(r);
        else JUMP_BY(SGL_INSTR_SJ(ins));
        NEXT;
    }
    OP(RETURN) {
        r = POP();
        if (fr->fresh) {
            /* The value stays readable as ret_value(stream); a stream is not
             * kept (it could hold itself). */
            vm_value sv = STK[fr->base];
            if (sv.type == VM_STREAM && r.type != VM_STREAM) {
                vm_release(sv.as.st->ret_value);
                sv.as.st->ret_value = r;
            } else {
                vm_release(r);
            }
            r = vm_retain(sv);
        }
        release_range(&STK[fr->base], SP - fr->base);
        SP = fr->base;
        in->n_frames--;
        if (in->n_frames == 0) {
            in->result = r;
            in->returned = true;
            goto finishing;
        }
        PUSH(r);
        goto reload;
    }
    OP(ASSERT) {
        vm_value msg = vm_none();
        if (SGL_INSTR_A(ins) == 1) msg = POP();
        a = POP();
        bool t = vm_truthy(a);
        vm_release(a);
        if (!t) {
            sgl_strbuf sb = {0};
            sgl_strbuf_puts(&sb, "assertion failed");
            if (msg.type != VM_NONE) {
                /* the user's message, one line (its newlines escaped) */
                sgl_strbuf_puts(&sb, ": ");
                vm_value ms = vm_to_str(msg);
                if (ms.type == VM_STR) vm_escape(&sb, vm_str_cstr(ms), vm_str_len(ms), 300, false);
                vm_release(ms);
            }
            sgl_error_set(&err, "%s", sb.data);
            sgl_strbuf_free(&sb);
            vm_release(msg);
            goto fail;
        }
        vm_release(msg);
        NEXT;
    }
    OP(CALL) OP(CALL_FRESH) {
        uint32_t fi = SGL_INSTR_A12(ins), nb = SGL_INSTR_B12(ins);
        const sgl_module *m = fr->mod->m;
        if (fi >= m->n_fns || nb > SP) FAIL_MSG("bad bytecode: call of function %u", fi);
        const sgl_bc_function *fn = &m->fns[fi];
        bool fresh = op == SGL_BC_CALL_FRESH;
        if (nb != fn->n_params - (fresh ? 1u : 0u))
            FAIL_MSG("bad bytecode: %s() called with %u arguments", fn->name, nb);
        uint32_t base = SP - nb;
        if (fresh) {
            vm_value s = vm_stream_new(v->link, in->group);
            if (s.type != VM_STREAM) FAIL_MSG("out of memory");
            memmove(&STK[base + 1], &STK[base], nb * sizeof(vm_value));
            STK[base] = s;
            SP++;
        }
        CHECK_RC(push_frame(in, fr->mod, fi, base, fresh, &err));
        goto reload;
    }
    OP(CALL_VALUE) {
        uint32_t na = SGL_INSTR_A(ins);
        if (na + 1 > SP) FAIL_MSG("bad bytecode: CALL_VALUE stack");
        vm_value fv = STK[SP - na - 1];
        if (fv.type != VM_FN) FAIL_MSG("a %s value is not callable", vm_type_name(fv.type));
        vm_mod *md = (vm_mod *)fv.as.fn->code;
        uint32_t fi = fv.as.fn->index;
        const sgl_bc_function *fn = &md->m->fns[fi];
        bool fresh;
        if (na == fn->n_params) fresh = false;
        else if (na + 1 == fn->n_params) fresh = true;
        else
            FAIL_MSG("%s() takes %u arguments (or %u on a fresh stream), got %u", fn->name, fn->n_params,
                     fn->n_params ? fn->n_params - 1 : 0, na);
        uint32_t base = SP - na - 1;
        if (fresh) {
            vm_value s = vm_stream_new(v->link, in->group);
            if (s.type != VM_STREAM) FAIL_MSG("out of memory");
            vm_release(STK[base]);
            STK[base] = s; /* the stream takes the function value's slot */
        } else {
            vm_release(STK[base]);
            memmove(&STK[base], &STK[base + 1], na * sizeof(vm_value));
            SP--;
        }
        CHECK_RC(push_frame(in, md, fi, base, fresh, &err));
        goto reload;
    }
    OP(CALL_BUILTIN) {
        uint32_t bi = SGL_INSTR_A12(ins), nb = SGL_INSTR_B12(ins);
        if (bi >= SGL_BUILTIN__COUNT || nb > SP) FAIL_MSG("bad bytecode: builtin %u", bi);
        int rc = call_builtin(in, (sgl_builtin)bi, &STK[SP - nb], nb, NULL, NULL, 0, &r, &err);
        if (rc == 1) PARK();
        CHECK_RC(rc);
        release_range(&STK[SP - nb], nb);
        SP -= nb;
        PUSH(r);
        NEXT;
    }
    OP(CALL_BUILTIN_KW) {
        uint32_t si = SGL_INSTR_A(ins);
        const sgl_module *m = fr->mod->m;
        if (si >= m->n_sites) FAIL_MSG("bad bytecode: call site %u", si);
        const sgl_bc_site *site = &m->sites[si];
        uint32_t nd = site_dynamic(site), total = site->n_pos + nd;
        if (total > SP || site->n_kwargs > 64) FAIL_MSG("bad bytecode: call site %u stack", si);
        uint32_t ids[64];
        vm_value vals[64];
        uint32_t d = 0;
        const vm_value *dyn = &STK[SP - nd];
        for (uint32_t i = 0; i < site->n_kwargs; i++) {
            ids[i] = site->kwargs[i].id;
            int32_t k = site->kwargs[i].konst;
            vals[i] = k == SGL_SITE_DYNAMIC ? dyn[d++] : ((uint32_t)k < m->n_consts ? fr->mod->consts[k] : vm_none());
        }
        int rc = call_builtin(in, (sgl_builtin)site->builtin, &STK[SP - total], site->n_pos, ids, vals,
                              site->n_kwargs, &r, &err);
        if (rc == 1) PARK();
        CHECK_RC(rc);
        release_range(&STK[SP - total], total);
        SP -= total;
        PUSH(r);
        NEXT;
    }
    OP(BUILD_LIST) {
        uint32_t n = SGL_INSTR_A(ins);
        if (n > SP) FAIL_MSG("bad bytecode: BUILD_LIST %u", n);
        r = vm_list_new(n);
        if (r.type != VM_LIST) FAIL_MSG("out of memory");
        for (uint32_t i = SP - n; i < SP; i++) vm_list_push(r, own(STK[i]));
        SP -= n;
        PUSH(r);
        NEXT;
    }
    OP(BUILD_MAP) {
        uint32_t n = SGL_INSTR_A(ins);
        if (2 * n > SP) FAIL_MSG("bad bytecode: BUILD_MAP %u", n);
        r = vm_map_new();
        if (r.type != VM_MAP) FAIL_MSG("out of memory");
        uint32_t start = SP - 2 * n;
        int rc = 0;
        for (uint32_t i = start; i < SP; i += 2) {
            if (rc == 0) rc = vm_map_set(r, STK[i], own(STK[i + 1]), &err);
            else {
                vm_release(STK[i]);
                vm_release(STK[i + 1]);
            }
        }
        SP = start;
        if (rc < 0) {
            vm_release(r);
            goto fail;
        }
        PUSH(r);
        NEXT;
    }
    OP(INDEX) OP(READ_VAR) OP(META) {
        b = TOP;
        a = PEEK(1);
        if (a.type == VM_STREAM) {
            vm_wait_status ws = op == SGL_BC_META ? vm_stream_want_meta(a.as.st, b, in, &r, &err)
                                                  : vm_stream_want_var(a.as.st, b, in, &r, &err);
            if (ws == VM_WAIT) PARK();
            if (ws == VM_FAILED) goto fail;
        } else if (op != SGL_BC_INDEX) {
            FAIL_MSG("%s: expected a stream, got %s", op == SGL_BC_META ? "meta()" : "reading a variable",
                     vm_type_name(a.type));
        } else {
            CHECK_RC(vm_index_get(a, b, &r, &err));
        }
        SP -= 2;
        vm_release(a);
        vm_release(b);
        PUSH(r);
        NEXT;
    }
    OP(SET_INDEX) {
        vm_value val = POP();
        b = POP();
        a = POP();
        int rc = a.type == VM_STREAM
                     ? (vm_release(val), sgl_error_set(&err, "stream variables are set by gen/select, not assigned"))
                     : vm_index_set(a, b, own(val), &err);
        vm_release(a);
        vm_release(b);
        CHECK_RC(rc);
        NEXT;
    }
    OP(FORMAT) {
        a = POP();
        r = vm_to_str(a);
        vm_release(a);
        if (r.type != VM_STR) FAIL_MSG("out of memory");
        PUSH(r);
        NEXT;
    }
    OP(CONCAT) {
        uint32_t n = SGL_INSTR_A(ins);
        if (n > SP) FAIL_MSG("bad bytecode: CONCAT %u", n);
        sgl_strbuf sb = {0};
        for (uint32_t i = SP - n; i < SP; i++) {
            vm_str_append(&sb, STK[i]);
            vm_release(STK[i]);
        }
        SP -= n;
        r = vm_str_take(&sb);
        if (r.type != VM_STR) FAIL_MSG("out of memory");
        PUSH(r);
        NEXT;
    }
    OP(APPEND_TEXT) {
        uint32_t k = SGL_INSTR_A(ins);
        if (k >= fr->mod->m->n_consts) FAIL_MSG("bad bytecode: constant %u", k);
        CHECK_RC(do_append(in, TOP, fr->mod->consts[k], SGL_APPEND_STR, &err));
        NEXT;
    }
    OP(APPEND) {
        int rc = do_append(in, PEEK(1), TOP, SGL_INSTR_A(ins), &err);
        if (rc == 1) PARK();
        CHECK_RC(rc);
        vm_release(POP());
        NEXT;
    }
    OP(ROLE_BEGIN) OP(ROLE_END) {
        uint32_t role = SGL_INSTR_A(ins);
        if (is_fork_list(TOP) && role < SGL_ROLE__COUNT) goto role_group;
        if (TOP.type != VM_STREAM)
            FAIL_MSG("%s(): expected a stream, got %s", sgl_role_name((sgl_role)role), vm_type_name(TOP.type));
        if (role >= SGL_ROLE__COUNT) FAIL_MSG("bad bytecode: role %u", role);
        if (op == SGL_BC_ROLE_BEGIN) CHECK_RC(vm_stream_role_begin(TOP.as.st, (vm_role)role, &err));
        else CHECK_RC(vm_stream_role_end(TOP.as.st, (vm_role)role, &err));
        NEXT;
    role_group: /* a role on every branch of a fork group */
        for (uint32_t i = 0; i < vm_list_len(TOP); i++) {
            vm_stream *bs = vm_list_get(TOP, i).as.st;
            if (op == SGL_BC_ROLE_BEGIN) CHECK_RC(vm_stream_role_begin(bs, (vm_role)role, &err));
            else CHECK_RC(vm_stream_role_end(bs, (vm_role)role, &err));
        }
        NEXT;
    }
    OP(GEN) OP(SELECT) {
        uint32_t si = SGL_INSTR_A(ins);
        const sgl_module *m = fr->mod->m;
        if (si >= m->n_sites) FAIL_MSG("bad bytecode: call site %u", si);
        const sgl_bc_site *site = &m->sites[si];
        uint32_t nd = site_dynamic(site), has_name = site->name == SGL_SITE_DYNAMIC;
        if (nd + has_name + 1 > SP) FAIL_MSG("bad bytecode: gen site %u stack", si);
        vm_value s = STK[SP - nd - has_name - 1];
        bool is_select = op == SGL_BC_SELECT;
        bool group = is_fork_list(s); /* forks += gen(...): one request per branch */
        if (s.type != VM_STREAM && !group)
            FAIL_MSG("%s(): appended to a %s, not a stream", is_select ? "select" : "gen", vm_type_name(s.type));
        vm_value name = vm_none();
        if (has_name) name = STK[SP - nd - 1];
        else if (site->name >= 0 && (uint32_t)site->name < m->n_consts) name = fr->mod->consts[site->name];
        char where[512];
        snprintf(where, sizeof where, "%s:%u:%u", site->file < m->n_files ? m->files[site->file] : "?",
                 site->line, site->col);
        for (uint32_t bi = 0; bi < (group ? vm_list_len(s) : 1); bi++) {
            vm_gen_args *ga = site_args(in, fr->mod, site, &STK[SP - nd], name, is_select, where, &err);
            if (!ga) goto fail;
            CHECK_RC(vm_stream_append_gen(group ? vm_list_get(s, bi).as.st : s.as.st, ga, &err));
        }
        release_range(&STK[SP - nd - has_name], nd + has_name);
        SP -= nd + has_name;
        NEXT;
    }
    OP(FORK) {
        uint32_t mode = SGL_INSTR_A(ins);
        uint32_t nops = mode == 2 ? 2 : 1;
        if (nops > SP) FAIL_MSG("bad bytecode: FORK stack");
        vm_value s = STK[SP - nops];
        int64_t n = 1;
        if (mode == 2) {
            if (TOP.type != VM_INT) FAIL_MSG("fork(): the branch count must be an int, not %s", vm_type_name(TOP.type));
            n = TOP.as.i;
            if (n < 1 || (v->cfg.max_fork && n > v->cfg.max_fork))
                FAIL_MSG("fork(): the branch count must be in [1, %u] (the fork width limit), got %" PRId64,
                         v->cfg.max_fork ? v->cfg.max_fork : UINT32_MAX, n);
        }
        if (s.type != VM_STREAM) FAIL_MSG("fork(): expected a stream, got %s", vm_type_name(s.type));
        vm_wait_status ws = vm_stream_want_idle(s.as.st, in, NULL, &err);
        if (ws == VM_WAIT) PARK();
        if (ws == VM_FAILED) goto fail;
        CHECK_RC(vm_stream_fork(s.as.st, (int)n, &r, &err));
        if (!v->cfg.prefix_hints) {
            /* Branches start at once; the queued prefill still warms the cache. */
            for (uint32_t i = 0; i < vm_list_len(r); i++) {
                vm_stream *c = vm_list_get(r, i).as.st;
                if (c->prefill) c->prefill->done = true;
            }
        }
        release_range(&STK[SP - nops], nops);
        SP -= nops;
        PUSH(r);
        NEXT;
    }
    OP(JOIN) {
        uint32_t mode = SGL_INSTR_A(ins);
        uint32_t nops = mode == SGL_JOIN_DYNAMIC ? 2 : 1;
        if (nops > SP) FAIL_MSG("bad bytecode: JOIN stack");
        vm_value list = STK[SP - nops];
        bool concat = mode == SGL_JOIN_CONCAT;
        if (mode == SGL_JOIN_DYNAMIC) {
            const char *ms = TOP.type == VM_STR ? vm_str_cstr(TOP) : "";
            if (!strcmp(ms, "concat") || !strcmp(ms, "concate_and_append")) concat = true;
            else if (strcmp(ms, "gather") != 0) FAIL_MSG("join(): mode must be \"gather\" or \"concat\"");
        }
        if (list.type != VM_LIST) FAIL_MSG("join(): expected the list fork returned, got %s", vm_type_name(list.type));
        for (uint32_t i = 0; i < vm_list_len(list); i++) {
            vm_value c = vm_list_get(list, i);
            if (c.type != VM_STREAM) FAIL_MSG("join(): item %u is a %s, not a stream", i, vm_type_name(c.type));
            vm_wait_status ws = vm_stream_want_idle(c.as.st, in, NULL, &err);
            if (ws == VM_WAIT) PARK();
            if (ws == VM_FAILED) {
                char why[sizeof err.msg];
                memcpy(why, err.msg, sizeof why);
                if (!strncmp(why, "fork branch ", 12)) FAIL_MSG("join(): %s", why); /* names its branch */
                FAIL_MSG("join(): branch %u failed: %s", i, why);
            }
        }
        CHECK_RC(vm_stream_join(list, concat, &err));
        release_range(&STK[SP - nops], nops);
        SP -= nops;
        PUSH(vm_none());
        NEXT;
    }

#ifndef VM_COMPUTED_GOTO
    default:
        FAIL_MSG("bad bytecode: opcode %u", op);
    }
#endif

finishing:
    /* The function returned; the instance is done when its streams drain. */
    if (in->group->n_busy > 0) {
        if (vm_group_wait(in->group, in) < 0) {
            inst_fail(in, "out of memory");
            return;
        }
        in->state = FIB_PARKED;
        return;
    }
    if (in->group->error) {
        sgl_strbuf sb = {0};
        if (in->group->error_where) sgl_strbuf_printf(&sb, "%s: error: %s", in->group->error_where, in->group->error);
        else sgl_strbuf_printf(&sb, "error: %s", in->group->error);
        in->failed = true;
        free(in->error);
        in->error = sgl_strbuf_take(&sb);
    }
    inst_finish(in);
    return;

fail:
    if (vm_mem_refused_at) {
        int64_t lim = vm_mem_refused();
        sgl_error_set(&err, "memory limit of %lld MiB reached", (long long)(lim >> 20));
    }
    inst_fail(in, err.msg);
    return;

#undef STK
#undef SP
#undef TOP
#undef PEEK
#undef PUSH
#undef POP
#undef OP
}

/* True when cfg.poll is due and asks to stop. */
static bool run_poll(vm *v) {
    if (!v->cfg.poll) return false;
    double now = sgl_now();
    if (now < v->next_poll) return false;
    v->next_poll = now + (v->cfg.poll_interval > 0 ? v->cfg.poll_interval : 0.1);
    return v->cfg.poll(v->cfg.poll_ctx) != 0;
}

/* cfg.poll asked to stop: see vm_config.poll. A failing instance may wake
 * or spawn others (run_batch parents, done hooks), hence the loop. */
static void run_interrupt(vm *v) {
    vm_link_interrupt(v->link, "interrupted", 0);
    for (vm_inst *in = v->all; in; in = in->next_all)
        if (in->state != FIB_DONE && in->batch) in->batch->next = in->batch->n; /* spawn no more */
    while (v->n_live > 0) {
        int before = v->n_live;
        /* run_batch children first, so that no parent resumes on them. */
        for (int pass = 0; pass < 2; pass++)
            for (vm_inst *in = v->all; in; in = in->next_all)
                if (in->state != FIB_DONE && (pass || in->batch_parent)) inst_fail(in, "interrupted");
        if (v->n_live >= before) break; /* cannot happen: every pass finishes instances */
    }
    for (vm_inst *in = v->run_head; in; in = in->next_run) in->queued = false;
    v->run_head = v->run_tail = NULL;
    /* Cancelled requests still come back: route them now (briefly). */
    vm_link_interrupt(v->link, "interrupted", 2.0);
}

int vm_run(vm *v, sgl_error *err) {
    (void)err;
    v->next_poll = sgl_now(); /* due at once: a progress line shows from the start */
    for (;;) {
        while (v->run_head) {
            vm_inst *in = v->run_head;
            v->run_head = in->next_run;
            if (!v->run_head) v->run_tail = NULL;
            in->queued = false;
            if (in->state == FIB_DONE) continue;
            in->state = FIB_RUNNABLE;
            in->yielded = false;
            uint32_t prev_mem = vm_mem_enter(in->mem);
            fiber_run(v, in);
            vm_mem_enter(prev_mem);
            if (in->yielded && vm_link_outstanding(v->link)) {
                /* Keep the engine busy while a fiber computes. */
                vm_link_flush(v->link);
                vm_link_wait(v->link, 0);
            }
            if (run_poll(v)) {
                run_interrupt(v);
                return 0;
            }
        }
        if (v->n_live == 0) break;
        if (vm_link_outstanding(v->link) == 0) {
            /* Everything is parked and nothing can wake it. */
            for (vm_inst *in = v->all; in; in = in->next_all)
                if (in->state == FIB_PARKED) inst_fail(in, "deadlock: waiting for a stream that will never finish");
            if (!v->run_head) break;
            continue;
        }
        vm_link_flush(v->link);
        if (v->run_head) continue; /* a refused request woke someone */
        if (!v->cfg.poll) {
            vm_link_wait(v->link, -1);
            continue;
        }
        double left = v->next_poll - sgl_now();
        if (left > 0) vm_link_wait(v->link, left);
        if (run_poll(v)) {
            run_interrupt(v);
            return 0;
        }
    }
    return 0;
}
