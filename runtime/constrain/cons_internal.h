/* cons_internal.h: the constraint compiler's private types, shared by its
 * files (not part of the interface; constrain.h is).
 *
 * Pipeline: every front end (regex, choices, JSON schema, grammar) builds a
 * cons_grammar: rules whose bodies are expression trees (cn nodes) over byte
 * sets, literals, repetition and references to rules. The back end builds a
 * byte NFA from it in continuation-passing style; a grammar without
 * recursion becomes a minimised DFA, one with recursion keeps its recursive
 * rules as CALL edges and runs on the Earley recogniser (earley.c).
 */
#ifndef SGL_CONS_INTERNAL_H
#define SGL_CONS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "runtime/constrain/constrain.h"

/* ---- expression trees ------------------------------------------------------ */

typedef enum cn_kind {
    CN_EMPTY, /* the empty string */
    CN_SET,   /* one byte of set[0..8) (256 bits) */
    CN_LIT,   /* the bytes lit[0..n) */
    CN_CAT,   /* kids[0..n) in sequence */
    CN_ALT,   /* one of kids[0..n) */
    CN_REP,   /* kids[0] repeated min..max times (max -1: unbounded) */
    CN_REF,   /* rule number `rule` */
    CN_BOL,   /* ^: only at the start of the text */
    CN_EOL    /* $: only at the end of the text */
} cn_kind;

typedef struct cn cn;
struct cn {
    cn_kind kind;
    int32_t n;        /* kids / literal length */
    int32_t min, max; /* CN_REP */
    int32_t rule;     /* CN_REF */
    int32_t off;      /* source offset (CN_REF: for "undefined rule" errors) */
    cn **kids;
    const uint8_t *lit;
    const uint32_t *set;
};

/* A rule set under construction; every node lives in `arena`. */
typedef struct cons_grammar {
    sgl_arena arena;
    struct cg_rule {
        const char *name;
        cn *body;      /* NULL while only referenced (grammar text: undefined) */
        int32_t off;   /* where it was first referenced / defined */
    } *rules;
    int32_t n_rules, cap_rules;
    int32_t start;
    int oom;          /* an allocation failed: every builder then returns NULL */
} cons_grammar;

cn *cn_empty(cons_grammar *g);
cn *cn_set(cons_grammar *g, const uint32_t set[8]);
cn *cn_byte(cons_grammar *g, uint8_t b);
cn *cn_range(cons_grammar *g, uint8_t lo, uint8_t hi);
cn *cn_lit(cons_grammar *g, const char *s, size_t n);
cn *cn_str(cons_grammar *g, const char *s); /* cn_lit of a C string */
cn *cn_cat(cons_grammar *g, cn *const *kids, int32_t n);
cn *cn_alt(cons_grammar *g, cn *const *kids, int32_t n);
cn *cn_cat2(cons_grammar *g, cn *a, cn *b);
cn *cn_cat3(cons_grammar *g, cn *a, cn *b, cn *c);
cn *cn_alt2(cons_grammar *g, cn *a, cn *b);
cn *cn_rep(cons_grammar *g, cn *kid, int32_t min, int32_t max);
cn *cn_opt(cons_grammar *g, cn *kid);
cn *cn_ref(cons_grammar *g, int32_t rule);
cn *cn_anchor(cons_grammar *g, cn_kind k);
int cn_utf8_encode(uint32_t c, uint8_t *o); /* writes 1..4 bytes, returns the count */
/* One UTF-8 encoded code point out of the sorted, disjoint ranges
 * lo[i]..hi[i] (surrogates never match). */
cn *cn_codepoints(cons_grammar *g, const uint32_t *lo, const uint32_t *hi, int32_t n);

/* Adds (or finds, by name when name is not NULL) a rule. Returns its number or -1. */
int32_t cg_rule_add(cons_grammar *g, const char *name, size_t name_len, int32_t off);
void cg_free(cons_grammar *g);

/* A growable list of code point ranges (a regex class). */
typedef struct cp_ranges {
    uint32_t *lo, *hi;
    int32_t n, cap;
} cp_ranges;
int cpr_add(cp_ranges *r, uint32_t lo, uint32_t hi);
void cpr_normalize(cp_ranges *r);  /* sort and merge */
int cpr_negate(cp_ranges *r);      /* complement over 0..0x10FFFF */
void cpr_free(cp_ranges *r);

/* ---- front ends ------------------------------------------------------------ */

/* Regex (docs/language.md §10 plus \xHH, \uHHHH): parses p[0..n) into a node
 * of g. embedded: inside a JSON string (a leading ^ and trailing $ are
 * dropped, anchors elsewhere are errors, and bytes JSON would have to escape
 * never match). Returns the node, or NULL with diag (message, offset) set. */
cn *cons_regex_parse(cons_grammar *g, const char *p, size_t n, bool embedded, cons_diag *diag);
/* GBNF/EBNF text into rules of g. Returns 0, or -1 with diag (line:col). */
int cons_gbnf_parse(cons_grammar *g, const char *text, size_t len, cons_diag *diag);
/* JSON schema text into rules of g. Returns 0, or -1 with diag (pointer). */
int cons_schema_build(cons_grammar *g, const char *text, size_t len, const cons_options *opt,
                      cons_diag *diag);

void cons_diag_set(cons_diag *d, int32_t off, const char *fmt, ...) SGL_PRINTF(3, 4);
/* Fills line/col from d->offset over text. */
void cons_diag_locate(cons_diag *d, const char *text, size_t len);

/* ---- automata -------------------------------------------------------------- */

/* DFA over byte classes. delta[s * n_cls + cls[b]]: next state or -1
 * (dead). Every state can reach an accepting one. Start is state 0.
 * Built whole and minimised (lz NULL), or, when large and narrow (build.c),
 * determinised lazily: rows and forced bytes are DFA_UNKNOWN until first
 * asked for, and n_states grows (up to cap_states). Read it only through
 * dfa_next / dfa_forced / dfa_n_states, which build what is missing. */
#define DFA_UNKNOWN (-2)
#define CONS_DFA_CATS 3
typedef struct cons_dfa_lazy cons_dfa_lazy;
typedef struct cons_dfa {
    int32_t n_states, n_cls;
    int32_t cap_states; /* room in the arrays (built whole: n_states) */
    uint8_t cls[256];
    int32_t *delta;
    uint8_t *accept;
    int16_t *forced; /* the one byte that may follow (state not accepting), or -1 */
    cons_dfa_lazy *lz;
    /* The automaton's largest byte sets (classes, repetitions: [a-z ,'] in
     * [a-z ,']{10,200}), largest first: token masks add a trie subtree whole
     * when its bytes are all in one and the state keeps every string of
     * them alive. */
    int32_t n_cats;
    uint64_t cats[CONS_DFA_CATS][4];
} cons_dfa;

/* Lazy DFAs: builds state st's row (under the DFA's lock; other threads may
 * read meanwhile) and returns delta[st][c], or -1 when building failed (out
 * of memory or over the state budget: cons_dfa_failed then says so). */
int32_t cons_dfa_expand(const cons_dfa *d, int32_t st, int32_t c);
bool cons_dfa_failed(const cons_dfa *d);

static inline int32_t dfa_next(const cons_dfa *d, int32_t s, int32_t c) {
    int32_t t = __atomic_load_n(&d->delta[(size_t)s * d->n_cls + c], __ATOMIC_ACQUIRE);
    return t != DFA_UNKNOWN ? t : cons_dfa_expand(d, s, c);
}

static inline int32_t dfa_forced(const cons_dfa *d, int32_t s) {
    int16_t f = __atomic_load_n(&d->forced[s], __ATOMIC_ACQUIRE);
    if (f == DFA_UNKNOWN) {
        cons_dfa_expand(d, s, 0);
        f = __atomic_load_n(&d->forced[s], __ATOMIC_ACQUIRE);
    }
    return f == DFA_UNKNOWN ? -1 : f;
}

static inline int32_t dfa_n_states(const cons_dfa *d) {
    return __atomic_load_n(&d->n_states, __ATOMIC_ACQUIRE);
}

/* Byte NFA with CALL edges (grammar recursion), used by the Earley recogniser. */
enum { CE_EPS = -1, CE_BOL = -2, CE_EOL = -3 }; /* labels; >= 0: byte set id; <= -4: CALL rule -(l+4) */
typedef struct cons_nfa {
    int32_t n_states;
    int32_t *head;     /* first edge of each state or -1 */
    int32_t *final_of; /* rule completed at this state (-1 none; the start rule's is n_rules) */
    int32_t n_edges;
    int32_t *e_to, *e_label, *e_next;
    int32_t n_sets;
    uint32_t (*sets)[8];
    int32_t n_rules;
    int32_t *rule_entry; /* entry state of each CALLed rule (-1: inlined) */
    int32_t start;       /* entry state of the whole grammar */
    int32_t accept;      /* the final state of the whole grammar */
} cons_nfa;

/* Builds the automaton of g. Exactly one of *dfa / *nfa is set on success
 * (DFA when g has no recursion). Returns 0 or -1 with diag. */
int cons_build(cons_grammar *g, const cons_options *opt, cons_dfa **dfa, cons_nfa **nfa,
               cons_diag *diag);
void cons_dfa_free(cons_dfa *d);
void cons_nfa_free(cons_nfa *n);

/* Earley recogniser over a cons_nfa: a chart with one item set per byte,
 * pushed and popped for rollback. */
typedef struct earley earley;
earley *earley_new(const cons_nfa *g);
void earley_free(earley *e);
earley *earley_clone(const earley *e);
/* Appends byte b. Returns 1 when the text stays viable (a set is pushed), 0
 * when not (nothing changes), -1 when memory runs out. */
int earley_push(earley *e, uint8_t b);
void earley_pop(earley *e);             /* drops the last pushed set */
int32_t earley_depth(const earley *e);  /* sets pushed after the first */
bool earley_accepting(const earley *e);
/* Bytes that some item of the last set can scan (256 bits). */
void earley_next_bytes(const earley *e, uint32_t out[8]);
/* A memo for one walk of pushes and pops that never pops below where it
 * began (a token-mask walk): a set whose items all have origins older than
 * the walk is a function of its parent set and the byte, so such sets are
 * interned and their transitions remembered, and a repeated push copies the
 * remembered set instead of scanning and closing again. */
int earley_walk_begin(earley *e);
int earley_walk_push(earley *e, uint8_t b); /* as earley_push */
void earley_walk_end(earley *e);
/* During a walk: 1 when pushing any byte of bytes[8] gives the last set
 * back, so every string of those bytes keeps the text viable (a JSON
 * string's interior, an s-expression's atom); 0 when not or unknown. For
 * an interned set the answer is remembered per set under slot (0..3: one
 * per byte set asked about); for one that is not (origins inside the walk)
 * it is found by pushing one byte per grammar byte class of bytes[8], at
 * most max_push of them, and comparing items. The chart is left as it was. */
int earley_walk_loops(earley *e, int slot, const uint32_t bytes[8], int32_t max_push);
/* Writes into *out (malloc'd, caller frees; *n ints) a key of what decides
 * the recogniser's future: the last set and every set its items' origins
 * reach, with origins renumbered in visiting order. Equal keys: equal
 * masks. Returns 0, or -1 when memory runs out. */
int earley_key(const earley *e, int32_t **out, size_t *n);

#endif
