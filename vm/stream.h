/* stream: SGVM's prompt state. A stream is a text buffer plus chat messages
 * (role segments), named variables and per-variable meta, and a FIFO of
 * pending operations (SGLang's stream executor):
 *
 *   s += "text"        TEXT        applied at once when the queue is empty
 *   s += gen("v", ..)  GEN         a GENERATE request on the text so far; the
 *                                  queue waits for its result, then appends
 *                                  the text and sets v
 *   s += select(..)    SELECT      SCORE requests, then the chosen text
 *   user( ... )        ROLE_BEGIN / ROLE_END around the role's content
 *
 * Appending never waits: the op is queued and the appending fiber goes on.
 * A variable named by a queued GEN/SELECT is "pending": a reader parks
 * (vm_stream_want_var returns VM_WAIT and records the fiber as a waiter)
 * until the op completes. Every state change (an op completed, the queue
 * drained, a failure) wakes all waiters through the link's wake callback;
 * they re-check.
 *
 * fork: children copy the parent's text, messages and variables (the parent
 * must be idle); their first request waits for the PREFILL of the shared
 * prefix (vm_prefill) so the prefix is computed once. join gathers the
 * children's new variables as lists on the parent (mode gather), or appends
 * their new text (mode concat).
 *
 * A failed request fails the stream: queued ops are dropped, error holds the
 * message, and every later wait on it reports that error.
 *
 * Streams are vm values (VM_STREAM, reference-counted like other objects:
 * see value.h). A stream in flight is also referenced by the link until its
 * request completes.
 */
#ifndef SGL_VM_STREAM_H
#define SGL_VM_STREAM_H

#include <stdbool.h>
#include <stdint.h>

#include "runtime/engine.h"
#include "vm/value.h"

typedef struct vm_link vm_link;

typedef enum vm_role { VM_ROLE_SYSTEM, VM_ROLE_USER, VM_ROLE_ASSISTANT } vm_role;
const char *vm_role_name(vm_role r);

typedef enum vm_dtype { VM_DTYPE_STR, VM_DTYPE_INT, VM_DTYPE_FLOAT, VM_DTYPE_BOOL } vm_dtype;

typedef enum vm_select_method {
    VM_SELECT_TOKEN_LENGTH_NORMALIZED,
    VM_SELECT_GREEDY_TOKEN,
    VM_SELECT_UNCONDITIONAL_LIKELIHOOD,
} vm_select_method;

/* Arguments of one gen/select, all owned (freed by vm_gen_args_free).
 * sp's pointer fields are set from the owned arrays when the request is
 * built; fill stop/stop_ids/choices, not sp.stop. */
typedef struct vm_gen_args {
    char *name;               /* variable to set; NULL = anonymous */
    char *where;              /* "file:line:col" of the call, for messages; or NULL */
    sgl_sampling_params sp;
    char **stop;
    int32_t n_stop;
    int32_t *stop_ids;
    int32_t n_stop_ids;
    vm_dtype dtype;
    char *regex;              /* constraints (at most one; dtype becomes a regex when */
    char *json_schema;        /*   the request is built): owned texts, or NULL */
    char *grammar;
    bool is_select;           /* select(), or gen(..., choices=[...]) */
    char **choices;
    int32_t n_choices;
    vm_select_method method;
    /* Randomness (see "Seeds" below): seed_fixed = the call site gave seed=,
     * sp.seed is used as is; otherwise sp.seed is derived when the op is
     * queued, from seed_base (run_batch's or the run's seed=, when
     * seed_base_set) or the link's per-run seed, and the stream's place. */
    bool seed_fixed;
    bool seed_base_set;
    uint64_t seed_base;
    bool stream;              /* gen(stream=true): partial results feed text_iter */
} vm_gen_args;

/* The regex a dtype constrains the output to (static; NULL for VM_DTYPE_STR):
 * every match parses as that type (int within 64 bits, float without
 * overflow, bool as true/false). */
const char *vm_dtype_regex(vm_dtype dt);

/* Seeds. Every sampled request gets its own seed, derived from a base (the
 * run's --seed / run_batch's seed=, else a fresh per-run seed) and its place
 * in the program, never from scheduling order:
 *   instance key  top-level spawn number, or (parent instance, its run_batch
 *                 number, element index) for run_batch instances;
 *   stream key    (instance key, stream number within the instance), or
 *                 (parent stream key, fork number on the parent, branch);
 *   request       (base, stream key, gen number on that stream).
 * Counters advance in program order, so a seeded run is reproducible at any
 * parallelism. Returns a 64-bit mix of its three inputs. */
uint64_t vm_seed_mix(uint64_t a, uint64_t b, uint64_t c);

/* Returns a zeroed args record with SGLang's sampling defaults, or NULL. */
vm_gen_args *vm_gen_args_new(void);
void vm_gen_args_free(vm_gen_args *a);

typedef enum vm_sop_kind {
    VM_SOP_TEXT, VM_SOP_GEN, VM_SOP_ROLE_BEGIN, VM_SOP_ROLE_END, VM_SOP_IMAGE,
    VM_SOP_VAR_BEGIN, VM_SOP_VAR_END /* var_scope: text = the variable name */
} vm_sop_kind;

typedef struct vm_sop {
    vm_sop_kind kind;
    struct vm_sop *next;
    char *text;          /* TEXT: owned bytes */
    size_t len;
    vm_role role;        /* ROLE_* */
    vm_gen_args *gen;    /* GEN: owned */
    int n_waiting;       /* GEN: requests in flight for this op */
    sgl_result *res[2];  /* SELECT: [0] conditional, [1] unconditional scores */
    sgl_strbuf partial;  /* GEN with stream: the text streamed so far */
} vm_sop;

typedef struct vm_group vm_group;

/* A shared-prefix PREFILL the children of one fork wait for. */
typedef struct vm_prefill {
    int rc;
    bool done;
    char *text;              /* the prefix (owned) */
    vm_stream **waiting;     /* children blocked on it (each retained; a cycle with their
                                prefill field until vm_prefill_done or _abandon) */
    uint32_t n_waiting, cap_waiting;
    vm_group *group;         /* the forking instance's (retained; dropped unsent when
                                it is dead), or NULL */
} vm_prefill;

/* Program instance bookkeeping shared by all streams it creates: how many
 * are busy (non-empty queue) and the first failure. The VM waits for
 * n_busy == 0 before it reports an instance finished. */
struct vm_group {
    int rc;
    int n_busy;
    char *error;             /* first stream failure (owned), or NULL */
    char *error_where;       /* where the failing gen/select is ("file:line:col"), or NULL */
    bool dead;               /* the instance failed: requests its streams still have
                                queued are dropped at the next flush (the streams fail
                                with error), those in flight are cancelled */
    void **waiters;          /* fibers waiting for n_busy == 0 */
    uint32_t n_waiters, cap_waiters;
    int64_t prompt_tokens, completion_tokens, cached_tokens, requests;
    uint64_t seed_key;       /* the instance's place (see "Seeds") */
    uint32_t n_streams;      /* streams created so far (stream keys) */
    uint32_t n_batches;      /* run_batch calls so far (child instance keys) */
    vm_value vars;           /* map: every variable its streams produced (last
                                write wins; join's lists included), or none */
};

vm_group *vm_group_new(void);
void vm_group_release(vm_group *g);
/* Adds a waiter (fiber) woken when the group has no busy stream. */
int vm_group_wait(vm_group *g, void *fiber);

struct vm_stream {
    vm_obj hdr;              /* refcount: values + link references */
    vm_link *link;           /* borrowed; outlives the stream */
    vm_group *group;         /* retained */
    sgl_strbuf text;
    vm_value vars;           /* map: name -> value */
    vm_value meta;           /* map: name -> map of meta */
    vm_value messages;       /* list of {"role": .., "content": ..} */
    int open_role;           /* -1 or the vm_role whose content is being written */
    size_t role_start;       /* text offset where the open role's content begins */
    bool began;              /* a role was opened at least once (template begin written) */
    bool loose_text;         /* text was written outside any role (chat APIs cannot carry it) */
    vm_sop *head, *tail;     /* queued ops; head is the one in progress */
    bool in_flight;          /* head's request(s) submitted */
    int spec_gens;           /* > 0: head's request is speculative, for this many gens */
    bool busy_counted;       /* counted in group->n_busy */
    vm_prefill *prefill;     /* wait for this before the first request (retained) */
    char *error;             /* failure message (owned), or NULL */
    vm_stream *parent;       /* the stream this one was forked from (retained), or NULL */
    uint64_t seed_key;       /* the stream's place (see "Seeds") */
    uint32_t n_gens;         /* gen ops queued so far (request seeds) */
    uint32_t n_forks;        /* forks of this stream so far (branch keys) */
    vm_value images;         /* list of {"path", "offset"} maps: image(path) appended at
                                that text offset (none until the first) */
    vm_value scopes;         /* map: open var_scope name -> text offset where it began */
    vm_value ret_value;      /* what the function run on this fresh stream returned
                                (SGLang's state.ret_value; none, and never a stream) */
    size_t fork_base;        /* text length when forked (join concat) */
    uint32_t fork_nvars;     /* variables inherited from the parent */
    uint32_t fork_branch;    /* 1 + its index among the branches of its fork; 0: not a branch */
    uint32_t fork_width;     /* how many branches that fork made */
    void **waiters;
    uint32_t n_waiters, cap_waiters;
};

/* Returns a new empty stream (one reference, as a value) or none on OOM. */
vm_value vm_stream_new(vm_link *link, vm_group *group);
/* Called by vm_release when the last reference goes: frees everything. */
void vm_stream_destroy(vm_stream *st);

/* Queue an op. Text is copied. gen args are CONSUMED. Returns 0 or -1 (OOM,
 * err set; args freed). When the stream has failed the op is dropped and 0
 * returned (the error is reported to whoever waits). */
int vm_stream_append_text(vm_stream *st, const char *text, size_t len, sgl_error *err);
int vm_stream_append_gen(vm_stream *st, vm_gen_args *args, sgl_error *err);
int vm_stream_role_begin(vm_stream *st, vm_role role, sgl_error *err);
int vm_stream_role_end(vm_stream *st, vm_role role, sgl_error *err);
/* image(path): the image becomes part of the prompt at this point (queued
 * like text); requests built after it carry it (sgl_request.images).
 * Returns 0 or -1 (err: OOM). */
int vm_stream_append_image(vm_stream *st, const char *path, sgl_error *err);
/* with var_scope(s, name): begin = the text appended from here on; end =
 * store it as variable name (queued like text; readers of name wait for
 * the end). Returns 0 or -1 (err: OOM, or an end without a begin). */
int vm_stream_var_scope(vm_stream *st, const char *name, bool end, sgl_error *err);

typedef enum vm_wait_status { VM_READY = 0, VM_WAIT = 1, VM_FAILED = -1 } vm_wait_status;

/* True when the queue is empty. */
static inline bool vm_stream_idle(const vm_stream *st) { return st->head == NULL; }
/* Is a variable still to be produced by a queued op? */
bool vm_stream_var_pending(const vm_stream *st, const char *name);

/* Readers. Each returns VM_READY (result set), VM_WAIT (fiber recorded as a
 * waiter; call again when woken) or VM_FAILED (err set: the stream failed,
 * or the variable does not exist). *out is a new reference. */
vm_wait_status vm_stream_want_var(vm_stream *st, vm_value name, void *fiber, vm_value *out,
                                  sgl_error *err);
vm_wait_status vm_stream_want_meta(vm_stream *st, vm_value name, void *fiber, vm_value *out,
                                   sgl_error *err);
/* Waits for the queue to drain; then *out (if non-NULL) = the text. */
vm_wait_status vm_stream_want_idle(vm_stream *st, void *fiber, vm_value *out, sgl_error *err);

/* fork: parent must be idle (check with vm_stream_want_idle first). Creates
 * n children (list value of streams in *out) and queues one PREFILL of the
 * parent's text (when non-empty) that the children's first requests wait
 * for. Returns 0 or -1. */
int vm_stream_fork(vm_stream *parent, int n, vm_value *out, sgl_error *err);
/* join: children is the list fork returned; every child must be idle. For
 * each variable a child set after the fork, parent[name] = [child values in
 * branch order] (none where a child lacks it), meta likewise; concat=true
 * also appends each child's new text to the parent (queued like other
 * text). Returns 0 or -1 with err (a branch failed, not a fork list). */
int vm_stream_join(vm_value children, bool concat, sgl_error *err);
/* s += other: other must be idle; its text is appended (queued like other
 * text) and its messages copied. Returns 0 or -1. */
int vm_stream_append_stream(vm_stream *st, vm_stream *other, sgl_error *err);

/* Borrowed map of the stream's variables (for json_dump / results). */
vm_value vm_stream_vars(vm_stream *st);
/* "<stream: N chars, vars [..]>" */
int vm_stream_show(sgl_strbuf *sb, vm_stream *st);
/* Stores a variable directly (e.g. run_batch arguments). Consumes val. */
int vm_stream_set_var(vm_stream *st, const char *name, vm_value val, sgl_error *err);

/* ---- used by the link (vm/link.c) ------------------------------------------ */

/* Processes queued ops until one needs the engine (then asks the link to
 * submit it) or the queue drains. Wakes waiters on progress. */
void vm_stream_advance(vm_stream *st);
/* A result for the head op arrived (slot 0/1: which SELECT request). Takes
 * ownership of r. */
void vm_stream_on_result(vm_stream *st, int slot, sgl_result *r);
/* A partial (streamed) result for the head GEN op: its text is added to
 * the op's partial text and waiters are woken. r stays the caller's. */
void vm_stream_on_partial(vm_stream *st, const sgl_result *r);
/* text_iter: the next piece of variable name's text after *consumed bytes
 * (name NULL: of the stream's whole text, ending when its queue drains).
 * VM_READY with *out a string (new reference) and *consumed advanced, or
 * *out none when the variable is complete and everything was given;
 * VM_WAIT (fiber recorded) while nothing new has arrived; VM_FAILED (the
 * stream failed, or it neither has nor will produce name). */
vm_wait_status vm_stream_text_piece(vm_stream *st, const char *name, size_t *consumed, void *fiber,
                                    vm_value *out, sgl_error *err);

/* Marks the stream failed with msg, drops queued ops, wakes everyone.
 * where (or NULL) names the call that failed; readers see
 * "msg (at where)", the group keeps msg and where apart. */
void vm_stream_fail(vm_stream *st, const char *msg);
/* API speculative execution (vm_link_set_api_spec): the number of gens from
 * the head GEN to the end of the open assistant turn when every op up to
 * that ROLE_END is template text or a plain gen (at least two gens); else 0.
 * The link calls it when it builds the head's request. */
int vm_stream_spec_span(const vm_stream *st);
void vm_stream_fail_at(vm_stream *st, const char *where, const char *msg);
void vm_prefill_release(vm_prefill *pf);
/* The prefill finished (successfully or not: either way children go on). */
void vm_prefill_done(vm_prefill *pf);
/* The prefill will never finish (its link is being freed): releases the
 * streams waiting for it without advancing them. A waiting stream holds
 * the prefill and the prefill holds it, so without this the two would keep
 * each other alive once the program has dropped the stream. */
void vm_prefill_abandon(vm_prefill *pf);

#endif
