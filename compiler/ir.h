/* ir.h: the compiler's internal dataflow-graph IR and the state shared by
 * its phases (lowering, verifier, passes, emitter, dumps).
 *
 * One ir_fn per SGL function (and one for main). Its nodes live in one
 * array (node id = index); its control flow is a tree of regions:
 *
 *   region 0 (body) ── n1 n2 n3(IF) n4 ...        a region is a schedule:
 *                              │                  the order its EFFECT nodes
 *                  ┌───────────┴──────────┐       run in
 *             region 1 (then)       region 2 (else)
 *
 * Edges: in[] are data edges (the value a node consumes); chain is the
 * stream-state / effect edge: every EFFECT node takes the previous EFFECT
 * node of its region (IR_NONE = the region's entry state). A REGION node is
 * an EFFECT of its parent region, so a branch that appends to a stream sits
 * in the stream order of the enclosing code. PURE nodes have no chain; they
 * are listed in the schedule where they were built only so dumps read in
 * source order.
 *
 * Invariants (checked by verify.c):
 *   - an input is defined earlier in the same region, or earlier than the
 *     region's owning node in an ancestor region (dominance);
 *   - chain of each EFFECT node = the previous EFFECT node in its region;
 *   - a TERM node is its region's last node;
 *   - STREAM nodes have a stream input; counts of inputs match the kind;
 *   - LOAD of slot k: no STORE to k between the load and any of its uses
 *     in the same region, and a LOAD used in a loop's region is defined
 *     inside that loop (values don't cross a back edge).
 *
 * Everything is allocated from the compile's arena (comp.arena).
 */
#ifndef SGL_COMPILER_IR_H
#define SGL_COMPILER_IR_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "compiler/compiler.h"

enum {
    IRF_PURE = 1u << 0,
    IRF_EFFECT = 1u << 1,
    IRF_STREAM = 1u << 2,
    IRF_VALUE = 1u << 3,
    IRF_REGION = 1u << 4,
    IRF_TERM = 1u << 5,
};

typedef enum ir_op {
#define IR(kind, name, flags, doc) IR_##kind,
#include "compiler/ir.def"
#undef IR
    IR__COUNT
} ir_op;

typedef uint32_t ir_ref;
#define IR_NONE UINT32_MAX

/* Keyword arguments of a gen/select/builtin call: the site the emitter turns
 * into an sgl_bc_site. Inputs of the node, after the stream (gen/select):
 * [name if name_k == SGL_SITE_DYNAMIC] [n_pos positional] [one per kwarg
 * with k == SGL_SITE_DYNAMIC, in order]. */
typedef struct ir_site {
    sgl_builtin builtin;
    int32_t name_k; /* constant, SGL_SITE_DYNAMIC or SGL_SITE_NO_NAME */
    uint32_t n_pos;
    uint32_t n_kw;
    uint32_t *kw_id; /* sgl_kwarg_id */
    int32_t *kw_k;   /* constant index or SGL_SITE_DYNAMIC */
} ir_site;

typedef struct ir_node {
    ir_op op;
    uint32_t region; /* the region whose schedule holds it */
    ir_ref *in;
    uint32_t n_in;
    ir_ref chain;    /* EFFECT: previous effect of the region, or IR_NONE */
    uint32_t reg[2]; /* REGION nodes: sub-regions (IF: then, else; FOR: body, -; WHILE: cond, body) */
    int64_t i;       /* slot, sgl_op, builtin, role, mode, function index */
    int32_t k;       /* constant index (CONST, APPEND_TEXT), else -1 */
    ir_site *site;   /* GEN, SELECT, BUILTIN with keywords */
    sgl_loc loc;
    uint32_t stmt;   /* source statement number (reorder units, dumps) */
    bool dead;       /* removed; skipped by everything */
} ir_node;

typedef struct ir_region {
    ir_ref owner;  /* the REGION node, IR_NONE for the body */
    ir_ref *nodes; /* schedule */
    uint32_t len, cap;
    bool loop;     /* FOR body, WHILE cond/body: entered more than once */
} ir_region;

/* A text move made by the reorder pass (for dumps). */
typedef struct ir_move {
    int32_t k;         /* the moved constant text */
    uint32_t from_line, to_line; /* source lines: moved from, placed before */
} ir_move;

typedef struct ir_fn {
    const char *name;
    uint32_t index;       /* in comp.fns (= index in the module) */
    sgl_node *decl;       /* FN node, or MAIN */
    uint32_t module;
    uint32_t n_params;
    const char **param_names;
    uint32_t n_slots;     /* params + lets + temporaries added by lowering */
    uint32_t flags;       /* SGL_FNF_* */
    bool stream_param;    /* p0 is known to be a stream (inferred) */
    ir_node *nodes;
    uint32_t n_nodes, cap_nodes;
    ir_region *regions;   /* [0] = body */
    uint32_t n_regions, cap_regions;
    /* prefix hint (passes.c) */
    sgl_bc_prefix_item *prefix;
    uint32_t n_prefix;
    ir_move *moves;
    uint32_t n_moves;
} ir_fn;

/* The compile: constants pool, functions, arena. */
typedef struct comp {
    const sgl_program *prog;
    compiler_options opts;
    sgl_arena *arena;     /* owns everything below; becomes the module's */
    sgl_error *err;
    sgl_const *consts;
    uint32_t n_consts, cap_consts;
    ir_fn **fns;
    uint32_t n_fns;
    sgl_node **fn_decls;  /* parallel to fns: FN / MAIN node */
    int32_t *const_k;     /* per CONST decl: see lower.c (lookup by node) */
    sgl_node **const_decls;
    uint32_t n_const_decls;
    int failed;
    FILE *trace;          /* dump the graph after lowering and each pass that changes it */
    compiler_graph_format trace_fmt;
    const char *trace_fn; /* trace only this function (NULL: all) */
} comp;

/* ---- ir.c: building and editing ---- */
const char *ir_op_name(ir_op op);
unsigned ir_op_flags(ir_op op);
/* Adds a constant (deduplicated); returns its index or -1 on OOM. */
int32_t comp_const_add(comp *c, const sgl_const *k);
int32_t comp_const_str(comp *c, const char *s, size_t len);
int32_t comp_const_int(comp *c, int64_t v);
/* Adds a node to region r's schedule (at its end) and returns its id, or
 * IR_NONE on OOM. EFFECT nodes get chain = previous effect of r. */
ir_ref ir_add(comp *c, ir_fn *f, uint32_t r, ir_op op, const ir_ref *in, uint32_t n_in, sgl_loc loc);
/* Creates a new empty region; returns its index. */
uint32_t ir_region_new(comp *c, ir_fn *f, ir_ref owner, bool loop);
/* Inserts node n (already in f, detached) into region r at position pos. */
int ir_region_insert(comp *c, ir_fn *f, uint32_t r, uint32_t pos, ir_ref n);
/* Removes node n from its region's schedule (marks nothing dead). */
void ir_region_remove(ir_fn *f, ir_ref n);
/* Recomputes the chain edges of region r from its schedule. */
void ir_region_rechain(ir_fn *f, uint32_t r);
/* Uses: number of live nodes with n among their inputs. */
uint32_t ir_count_uses(const ir_fn *f, ir_ref n);
/* Can computing pure node n (and its pure inputs) raise a runtime error?
 * Effects' values count as computed already. */
bool ir_may_fail(const ir_fn *f, ir_ref n);
/* Is region r (transitively) inside region anc? */
bool ir_region_within(const ir_fn *f, uint32_t r, uint32_t anc);

/* ---- lower.c ---- */
/* Builds the IR of every function of the program. Returns 0 or -1. */
int comp_lower(comp *c);

/* ---- verify.c ---- */
/* Checks the invariants above. Returns 0, or -1 with err naming the first
 * broken one ("fn NAME: node N: ..."). */
int ir_verify(const comp *c, const ir_fn *f, sgl_error *err);

/* ---- passes.c ---- */
typedef struct ir_pass {
    const char *name;
    int min_level; /* runs at -O >= min_level */
    int (*run)(comp *c, ir_fn *f); /* returns 0 or -1 (OOM) */
    const char *doc;
} ir_pass;
extern const ir_pass ir_passes[];
extern const uint32_t ir_n_passes;
/* Runs the passes of c->opts.opt_level on f (verifying after each when
 * c->opts.verify). stop_after: run only passes [0, stop_after] (-1: all). */
int comp_run_passes(comp *c, ir_fn *f, int stop_after);
/* After every function went through its passes: recomputes the prefix
 * hints (they follow calls into other functions). */
int comp_link_prefixes(comp *c);
/* ---- prefix.c ---- */
/* Computes f's prefix hint (f->prefix, f->n_prefix) by partial evaluation.
 * Returns 0, or -1 on OOM. */
int comp_prefix_hint(comp *c, ir_fn *f);

/* ---- emit.c ---- */
/* Builds the module from the lowered, optimized IR. NULL on error. */
sgl_module *comp_emit(comp *c);

/* ---- dump.c ---- */
void ir_dump_fn(const comp *c, const ir_fn *f, compiler_graph_format fmt, FILE *out, bool first);
void ir_dump_begin(compiler_graph_format fmt, FILE *out);
void ir_dump_end(compiler_graph_format fmt, FILE *out);
/* bytecode.c: writes constant k of pool[0..n) in SGL literal syntax,
 * strings quoted with escapes and cut after max bytes. */
void comp_const_write(const sgl_const *pool, uint32_t n, uint32_t k, size_t max, FILE *out);
/* Writes s[0..len) quoted with escapes (JSON-compatible when json). */
void comp_write_quoted(FILE *out, const char *s, size_t len, size_t max, bool json);

/* ---- driver.c ---- */
/* Sets up c (arena, pool) and lowers + optimizes every function. */
int comp_begin(comp *c, const sgl_program *p, const compiler_options *opts, sgl_error *err);
void comp_end(comp *c);

#endif
